// The node config: which modules run, with which plugin and config.
//
// Sources (see docs/config.md):
//   - a YAML file;
//   - a mounted ConfigMap directory: its `trellis.yaml` key, merged (RFC 7396)
//     over what its Terway keys (eni_conf, qos_conf, security_conf,
//     network_policy, cni_conf) map to;
//   - the embedded default, when no --config is given.
#ifndef TRELLIS_CORE_CONFIG_H_
#define TRELLIS_CORE_CONFIG_H_

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace YAML {
class Node;
}

namespace trellis {

using Json = nlohmann::json;

struct ModuleConfig {
  std::string name;
  bool enabled = false;
  std::string plugin;        // plugin file stem under the plugin dir; defaults to `name`
  Json config = Json::object();
  bool operator==(const ModuleConfig&) const = default;
};

struct DatapathConfig {
  uint32_t mtu = 1500;
  bool operator==(const DatapathConfig&) const = default;
};

struct NodeConfig {
  std::string log_level = "info";
  std::string log_file;
  DatapathConfig datapath;
  std::map<std::string, ModuleConfig> modules;  // by module name
  std::string origin;                           // where it was read from
  std::vector<std::string> warnings;            // accepted, but worth a log line

  bool Enabled(const std::string& module) const {
    auto it = modules.find(module);
    return it != modules.end() && it->second.enabled;
  }
};

// The name of the key holding the node config in a ConfigMap directory.
inline constexpr std::string_view kConfigMapKey = "trellis.yaml";

// Converts YAML to JSON. Plain scalars follow the YAML 1.2 core schema
// (true/false, null, decimal/0x/0o integers, floats; `yes`/`on` are text);
// quoted and !!str scalars stay strings, as do integers beyond 64 bits.
// Throws YAML::Exception (with the position) on a duplicate key.
Json YamlToJson(const YAML::Node& node);

// Validates a JSON node config. Errors name the key path, e.g.
// "modules.qos.enabled: expected a boolean".
StatusOr<NodeConfig> NodeConfigFromJson(const Json& doc, std::string_view origin);
StatusOr<NodeConfig> ParseNodeConfig(std::string_view yaml_text, std::string_view origin);
// `path` is a YAML file or a ConfigMap directory.
StatusOr<NodeConfig> LoadNodeConfig(const std::filesystem::path& path);

// The config trellisd runs when no --config is given: ipam on a local range,
// qos and policy on (and idle until asked), eni and secgroup off.
std::string_view EmbeddedDefaultConfigYaml();
NodeConfig EmbeddedDefaultConfig();

// Maps a Terway ConfigMap's keys (name -> raw text) onto a node config
// document. Unknown keys are ignored; malformed JSON is an error naming the key.
StatusOr<Json> TerwayToNodeConfig(const std::map<std::string, std::string>& keys,
                                  std::vector<std::string>* warnings);

// The node config as a JSON document (what was applied; for comparison).
Json NodeConfigToJson(const NodeConfig& cfg);

// A copy of `j` with the values of secret-looking keys (secret, password,
// token, access_key, credential...) replaced by "<redacted>". Everything
// that leaves the daemon (logs, API, debug endpoints) goes through this.
Json Redact(const Json& j);

}  // namespace trellis

#endif  // TRELLIS_CORE_CONFIG_H_
