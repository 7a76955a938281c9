// Fuzz target: the node config as it arrives from a ConfigMap — YAML text for
// trellis.yaml, and the same bytes as each Terway key's JSON.
//
// Invariants: nothing throws out of the parsers; an accepted config survives
// NodeConfigToJson -> NodeConfigFromJson unchanged; everything an accepted
// config holds can be serialised (the daemon dumps module configs to hand
// them to plugins, and Redact()s them for logs and the API).
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/config.h"
#include "fuzz_check.h"

namespace {

void CheckAccepted(const trellis::NodeConfig& cfg) {
  trellis::Json doc = trellis::NodeConfigToJson(cfg);
  auto again = trellis::NodeConfigFromJson(doc, "round trip");
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(trellis::NodeConfigToJson(*again) == doc);
  for (const auto& [name, m] : cfg.modules) {
    FUZZ_CHECK(name == m.name);
    FUZZ_CHECK(!m.plugin.empty() && m.plugin.find('/') == std::string::npos);
    FUZZ_CHECK(m.config.is_object());
    (void)m.config.dump();  // throws on invalid UTF-8: that would kill the daemon
  }
  (void)trellis::Redact(doc).dump();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto cfg = trellis::ParseNodeConfig(text, "fuzz");
  if (cfg.ok()) CheckAccepted(*cfg);

  for (const char* key : {"eni_conf", "qos_conf", "security_conf", "network_policy", "cni_conf"}) {
    std::vector<std::string> warnings;
    auto doc = trellis::TerwayToNodeConfig({{key, text}}, &warnings);
    if (!doc.ok()) continue;
    FUZZ_CHECK(doc->is_object() && (*doc)["modules"].is_object());
    auto mapped = trellis::NodeConfigFromJson(*doc, "terway");
    if (mapped.ok()) CheckAccepted(*mapped);
  }
  return 0;
}
