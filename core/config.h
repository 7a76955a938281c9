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
#include <optional>
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

// The `kubernetes:` section: the Kubernetes API as a source of pod metadata,
// namespace labels, NetworkPolicies, the Node (podCIDRs, the per-node config
// label) and the Lease of the secgroup writer. Absent: the API is not used and
// file sources work alone. Durations are in milliseconds here; the YAML takes
// "500ms", "10s", "5m" or a number of seconds. See docs/kubernetes.md.
struct KubernetesConfig {
  bool enabled = false;
  std::string kubeconfig;  // empty: in-cluster (service account, KUBERNETES_SERVICE_HOST/PORT)
  std::string context;     // kubeconfig context; empty: its current-context
  std::string service_account_dir = "/var/run/secrets/kubernetes.io/serviceaccount";
  std::string node_name;  // empty: $NODE_NAME
  std::string config_namespace;  // leases, per-node ConfigMaps; empty: $POD_NAMESPACE,
                                 // the service account's namespace, else kube-system
  double qps = 20;               // client-side limit (Terway: kube_client_qps)
  uint32_t burst = 30;           // (Terway: kube_client_burst)
  int64_t resync_period_ms = 300000;
  int64_t request_timeout_ms = 10000;
  int64_t pod_get_timeout_ms = 1000;  // the direct GET on the ADD path
  int64_t sync_timeout_ms = 10000;    // start-up wait for the first lists
  std::string node_config_label = "terway-config";  // "": no per-node ConfigMap
  bool events = true;
  struct LeaderElection {
    bool enabled = true;
    std::string lease_name = "trellis-secgroup";
    std::string identity;  // empty: the node name
    int64_t lease_duration_ms = 15000;
    int64_t renew_deadline_ms = 10000;
    int64_t retry_period_ms = 2000;
    bool operator==(const LeaderElection&) const = default;
  } leader_election;
  bool operator==(const KubernetesConfig&) const = default;
};

struct NodeConfig {
  std::string log_level = "info";
  std::string log_file;
  DatapathConfig datapath;
  KubernetesConfig kubernetes;
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

// A node config document before validation: what the file or ConfigMap
// directory says, for the host to merge further sources over (the per-node
// ConfigMap, the Node's podCIDRs) before NodeConfigFromJson().
struct NodeConfigDocument {
  Json doc = Json::object();
  std::string origin;
  std::vector<std::string> warnings;
};
StatusOr<NodeConfigDocument> LoadNodeConfigDocument(const std::filesystem::path& path);
NodeConfigDocument EmbeddedDefaultDocument();

// The keys of a ConfigMap (name -> text) as a node config document: its
// `trellis.yaml` merged (RFC 7396) over what its Terway keys map to. NotFound
// when it has neither. Errors name `origin` and the key. With `as_patch` the
// result is itself a merge patch for another document: the nulls of
// `trellis.yaml` (deletions) are kept instead of applied.
StatusOr<Json> ConfigMapDataToDocument(const std::map<std::string, std::string>& data,
                                       std::string_view origin,
                                       std::vector<std::string>* warnings, bool as_patch = false);

// Expands every `{subnet: node}` entry of a module's `config.ranges` into one
// entry per podCIDR of the Node (`{subnet: node, family: 4}` keeps one
// family). `pod_cidrs` is nullopt when the Node is unknown (no kubernetes
// section, or not seen yet): an entry that needs it is then an error naming
// the key. Entries with a literal subnet are left alone.
Status ResolveNodeRanges(Json* doc, const std::optional<std::vector<std::string>>& pod_cidrs,
                         std::string_view why_unknown);
// True when some module's `config.ranges` has a `{subnet: node}` entry.
bool UsesNodeRanges(const Json& doc);

// "500ms", "10s", "5m", "1h" or a number of seconds -> milliseconds.
StatusOr<int64_t> ParseDurationMs(const Json& v, const std::string& key);

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
