// qos: placeholder until its issue lands; validates that its config is a map.
#include <trellis/plugin.hpp>

namespace {
class Plugin {
 public:
  static constexpr const char* kName = "qos";
  static constexpr const char* kVersion = "0.1.0";
  static void Validate(const trellis::sdk::Json& config) {
    if (!config.is_object()) throw trellis::sdk::Error(TRELLIS_E_INVALID, "expected a map");
  }
  Plugin(trellis::sdk::Host, const trellis::sdk::Json&) {}
  void Reconfigure(const trellis::sdk::Json&) {}
};
}  // namespace

TRELLIS_PLUGIN(Plugin);
