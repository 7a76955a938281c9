// The policy model: Kubernetes NetworkPolicy (networking.k8s.io/v1) and the
// Terway formats mapped onto it, with the parsers that build it.
//
// Parsers throw ParseError naming the field ("spec.ingress[0].ports[1].port")
// and the reason; callers add where the document came from (file, document
// number, source).
#ifndef TRELLIS_PLUGINS_POLICY_MODEL_H_
#define TRELLIS_PLUGINS_POLICY_MODEL_H_

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "ranges.h"

namespace trellis::policy {

using Json = nlohmann::json;
using Labels = std::map<std::string, std::string>;

class ParseError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The label every namespace carries in Kubernetes (immutable since 1.21).
inline constexpr const char* kNamespaceNameLabel = "kubernetes.io/metadata.name";

inline constexpr uint8_t kTcp = 6;
inline constexpr uint8_t kUdp = 17;
inline constexpr uint8_t kSctp = 132;
// "TCP", "UDP", "SCTP" (any case) -> protocol number; nullopt otherwise.
std::optional<uint8_t> ParseProtocol(const std::string& name);
std::string ProtocolName(uint8_t proto);

struct Requirement {
  enum class Op { kIn, kNotIn, kExists, kDoesNotExist };
  std::string key;
  Op op = Op::kIn;
  std::vector<std::string> values;
};

// metav1.LabelSelector. The empty selector matches everything.
struct LabelSelector {
  Labels match_labels;
  std::vector<Requirement> expressions;
  bool Matches(const Labels& labels) const;
  bool Empty() const { return match_labels.empty() && expressions.empty(); }
  std::string ToString() const;  // "app=web,tier in (a,b)" or "<all>"
};

struct PolicyPort {
  uint8_t proto = kTcp;
  std::optional<uint16_t> port;  // absent: every port of `proto`
  std::string named;             // a container port name instead of a number
  std::optional<uint16_t> end_port;
  std::string ToString() const;  // "80/TCP", "8000-8080/TCP", "http/TCP", "all/UDP"
};

struct Peer {
  std::optional<LabelSelector> pods;        // podSelector
  std::optional<LabelSelector> namespaces;  // namespaceSelector
  std::optional<IpRange> cidr;              // ipBlock.cidr
  std::vector<IpRange> except;              // ipBlock.except
  std::string text;                         // for messages
  bool IsIpBlock() const { return cidr.has_value(); }
};

struct Rule {
  bool all_peers = true;  // `from`/`to` absent or empty: every source/destination
  std::vector<Peer> peers;
  bool all_ports = true;  // `ports` absent or empty: every port and protocol
  std::vector<PolicyPort> ports;
};

struct Policy {
  std::string key;   // unique across sources: "file:<path>#<doc>", "api:<key>", "terway:<name>"
  std::string name;  // metadata.name
  std::string ns;    // metadata.namespace; "" with cluster_wide
  bool cluster_wide = false;            // Terway policies without a namespace
  std::string origin;                   // where it came from, for messages
  LabelSelector selector;               // spec.podSelector
  bool ingress = true, egress = false;  // effective policyTypes
  std::vector<Rule> ingress_rules, egress_rules;
  std::string uid;  // content hash: changes whenever the policy does

  std::string DisplayName() const { return cluster_wide ? "*/" + name : ns + "/" + name; }
  const std::vector<Rule>& Rules(bool egress_dir) const {
    return egress_dir ? egress_rules : ingress_rules;
  }
};

// A networking.k8s.io/v1 NetworkPolicy object (parsed YAML or JSON).
Policy ParseNetworkPolicy(const Json& manifest);
// Fills key/origin/uid. `uid_salt` distinguishes equal content from distinct keys.
void Stamp(Policy* p, const std::string& key, const std::string& origin, const Json& canonical);

LabelSelector ParseSelector(const Json& j, const std::string& field);

// One YAML/JSON file as `kubectl apply -f` takes it: documents separated by
// "---" lines, each a NetworkPolicy or a List of them.
struct LoadedDocument {
  int index = 0;  // 1-based position in the file
  std::optional<Policy> policy;
  std::string error;  // set when the document was refused
};
std::vector<LoadedDocument> ParsePolicyFile(const std::string& path, const std::string& content);

// Terway's `network_policy` ConfigMap key (as module config
// `terway_network_policy`) and `security_conf.network_isolation`
// (`network_isolation`), mapped onto policies. Throw ParseError naming the key.
std::vector<Policy> ParseTerwayNetworkPolicy(const Json& j);
std::vector<Policy> ParseNetworkIsolation(const Json& j);

// Converts one YAML document to JSON: plain scalars become numbers, booleans
// or null when they read as such (YAML 1.2 core schema), quoted ones stay
// strings. Throws ParseError with the line on malformed YAML.
// `first_line` numbers the document's lines as in its file.
Json YamlToJson(const std::string& document, int first_line = 1);

uint64_t Fnv64(const std::string& s);
std::string Hex(uint64_t v, int digits = 16);

}  // namespace trellis::policy

#endif  // TRELLIS_PLUGINS_POLICY_MODEL_H_
