// opsprobe: a fixture plugin whose lifecycle the operations tests steer
// through files, to observe the health endpoints in each daemon state.
//   gate            create() waits (up to 120 s) until this file exists:
//                   the daemon is "starting" for as long as the test wants
//   unhealthy_file  status() says unhealthy while this file exists
//   fail_create     create() fails: the module is "failed"
//   secret_key      any value; status() echoes the config back, so tests can
//                   check the host redacts it everywhere it shows statuses
#include <trellis/plugin.hpp>

#include <chrono>
#include <filesystem>
#include <thread>

namespace {

using trellis::sdk::Error;
using trellis::sdk::Json;

class Probe {
 public:
  static constexpr const char* kName = "opsprobe";
  static constexpr const char* kVersion = "1.0.0";

  static void Validate(const Json& config) {
    if (!config.is_object()) throw Error(TRELLIS_E_INVALID, "expected a map");
    for (const auto& [k, v] : config.items()) {
      if (k == "gate" || k == "unhealthy_file" || k == "secret_key") {
        if (!v.is_string()) throw Error(TRELLIS_E_INVALID, k + ": expected a string");
      } else if (k == "fail_create") {
        if (!v.is_boolean()) throw Error(TRELLIS_E_INVALID, k + ": expected a boolean");
      } else {
        throw Error(TRELLIS_E_INVALID,
                    k + ": unknown key (known: gate, unhealthy_file, fail_create, secret_key)");
      }
    }
  }

  Probe(trellis::sdk::Host, const Json& config) : config_(config) {
    if (config.value("fail_create", false)) {
      throw Error(TRELLIS_E_UNAVAILABLE, "opsprobe: create refused as configured (fail_create)");
    }
    if (std::string gate = config.value("gate", ""); !gate.empty()) {
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
      while (!std::filesystem::exists(gate)) {
        if (std::chrono::steady_clock::now() > deadline) {
          throw Error(TRELLIS_E_UNAVAILABLE, "opsprobe: gate " + gate + " never opened");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
  }

  void Reconfigure(const Json& config) { config_ = config; }

  Json Status() {
    std::string bad = config_.value("unhealthy_file", "");
    bool healthy = bad.empty() || !std::filesystem::exists(bad);
    return {{"healthy", healthy},
            {"message", healthy ? "" : "opsprobe: " + bad + " exists"},
            {"config", config_}};
  }

 private:
  Json config_;
};

}  // namespace

TRELLIS_PLUGIN(Probe);
