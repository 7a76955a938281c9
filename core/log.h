// Logging: spdlog to stderr, optionally also to a rotating file.
// Library code returns errors; the caller that knows the context logs once.
#ifndef TRELLIS_CORE_LOG_H_
#define TRELLIS_CORE_LOG_H_

#include <spdlog/spdlog.h>

#include <optional>
#include <string>
#include <string_view>

#include "core/status.h"

namespace trellis {

// "trace", "debug", "info", "warn"/"warning", "error"; case-insensitive.
std::optional<spdlog::level::level_enum> ParseLogLevel(std::string_view text);

// Sets up the default logger: stderr, plus `file` (rotating, 10 MiB x 3) when
// not empty. May be called again to change the file; the level is kept.
Status SetupLogging(std::string_view level, const std::string& file);
Status SetLogLevel(std::string_view level);
std::string CurrentLogLevel();

}  // namespace trellis

#endif  // TRELLIS_CORE_LOG_H_
