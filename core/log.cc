#include "core/log.h"

#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <algorithm>
#include <cctype>
#include <mutex>

namespace trellis {
namespace {
std::mutex g_mu;
std::string g_file;
}  // namespace

std::optional<spdlog::level::level_enum> ParseLogLevel(std::string_view text) {
  std::string t(text);
  std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return std::tolower(c); });
  if (t == "trace") return spdlog::level::trace;
  if (t == "debug") return spdlog::level::debug;
  if (t == "info") return spdlog::level::info;
  if (t == "warn" || t == "warning") return spdlog::level::warn;
  if (t == "error") return spdlog::level::err;
  return std::nullopt;
}

Status SetupLogging(std::string_view level, const std::string& file) {
  auto lvl = ParseLogLevel(level);
  if (!lvl) return absl::InvalidArgumentError("log level '" + std::string(level) + "' is not one of trace, debug, info, warn, error");
  std::lock_guard lock(g_mu);
  auto current = spdlog::default_logger();
  if (current == nullptr || current->name() != "trellis" || file != g_file) {
    std::vector<spdlog::sink_ptr> sinks{std::make_shared<spdlog::sinks::stderr_sink_mt>()};
    if (!file.empty()) {
      try {
        sinks.push_back(std::make_shared<spdlog::sinks::rotating_file_sink_mt>(file, 10 << 20, 3));
      } catch (const spdlog::spdlog_ex& e) {
        return absl::InvalidArgumentError("log_file " + file + ": " + e.what());
      }
    }
    auto logger = std::make_shared<spdlog::logger>("trellis", sinks.begin(), sinks.end());
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %^%-5l%$ %v");
    logger->flush_on(spdlog::level::warn);
    spdlog::set_default_logger(logger);
    // The file sink buffers: without a periodic flush, info lines (one per
    // CNI request) would reach log_file only once a buffer fills.
    static std::once_flag flusher;
    std::call_once(flusher, [] { spdlog::flush_every(std::chrono::seconds(1)); });
    g_file = file;
  }
  spdlog::set_level(*lvl);
  return absl::OkStatus();
}

Status SetLogLevel(std::string_view level) {
  auto lvl = ParseLogLevel(level);
  if (!lvl) return absl::InvalidArgumentError("log level '" + std::string(level) + "' is not one of trace, debug, info, warn, error");
  spdlog::set_level(*lvl);
  return absl::OkStatus();
}

std::string CurrentLogLevel() {
  auto sv = spdlog::level::to_string_view(spdlog::get_level());
  std::string s(sv.data(), sv.size());
  return s == "warning" ? "warn" : s;
}

}  // namespace trellis
