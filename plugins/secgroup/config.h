// The secgroup module's config: Terway's security_conf.security_group_sync
// (the host maps its `enable` to the module switch) plus trellis's own keys
// and the cloud-access keys shared with the eni module (aliyun/cloud.h).
//
//   sync_interval        seconds or a duration ("5m"); default 300
//   security_groups      the groups to keep in line (also `security_group`);
//                        default, filled in by the host: the eni module's
//   rules                [{direction, protocol, port_range, source_cidr |
//                          dest_cidr, priority, policy, description,
//                          allow_world_open}]
//   dry_run              compute and report, never change the cloud
//   leader               true: this node writes; false: standby
//   leader_node          this node writes when its name (NODE_NAME, else the
//                        host name) is this one: one ConfigMap for all nodes
//   max_revoke_fraction  a sync that would revoke more than this share of
//                        the rules we manage is refused (default 0.5)
//   cluster_id           names the rules we own: their description starts
//                        with "trellis/<cluster_id>" (default CLUSTER_ID from
//                        the environment, else "default")
//   revoke_on_disable    revoke our rules when the module is disabled
//                        (default false: they stay)
//
// Parse() refuses anything it does not understand with sdk::Error
// (TRELLIS_E_INVALID) naming the key and the reason.
#ifndef TRELLIS_PLUGINS_SECGROUP_CONFIG_H_
#define TRELLIS_PLUGINS_SECGROUP_CONFIG_H_

#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "aliyun/cloud.h"
#include "aliyun/ecs.h"

namespace trellis::secgroup {

using Json = nlohmann::json;
using Millis = std::chrono::milliseconds;

// ECS keeps at most this many rules in one security group.
inline constexpr int kMaxRulesPerGroup = 200;
// ECS's limit on a rule's description.
inline constexpr size_t kMaxDescription = 512;

// One security-group rule, normalised so that two rules ECS treats as the
// same compare equal: lower-case words, canonical CIDR (host bits cleared),
// "a/b" port ranges.
struct Rule {
  std::string direction = "ingress";  // ingress | egress
  std::string protocol;               // tcp, udp, icmp, icmpv6, gre, all
  std::string port_range;             // "80/80", "1/65535", "-1/-1"
  std::string cidr;                   // the peer: source (ingress) or destination (egress)
  std::string policy = "accept";      // accept | drop
  int priority = 1;                   // 1 (first) .. 100
  std::string description;            // the operator's text, without our mark
  bool allow_world_open = false;      // the operator's consent for WorldOpen()
  int index = -1;                     // position in `rules`

  // What identifies a rule in ECS (description aside): direction, protocol,
  // ports, peer, policy, priority.
  std::string Key() const;
  // Accepts traffic from (ingress) or to (egress) every address: the peer is
  // a /0. A drop rule never opens anything.
  bool WorldOpen() const;
  // "ingress tcp 80/80 from 10.0.0.0/8 accept priority 1".
  std::string Summary() const;
  // {"direction", "protocol", "port_range", "source_cidr"|"dest_cidr",
  //  "policy", "priority", "description"}.
  Json ToJson() const;
  bool operator==(const Rule&) const = default;
};

struct SecgroupConfig {
  aliyun::CloudAccess cloud;
  std::vector<std::string> security_groups;
  std::vector<Rule> rules;
  Millis sync_interval{300000};
  bool dry_run = false;
  std::optional<bool> leader;
  std::string leader_node;
  double max_revoke_fraction = 0.5;
  std::string cluster_id = "default";
  bool revoke_on_disable = false;
  std::vector<std::string> warnings;  // for the plugin to log once

  // The description mark of the rules this cluster's module owns.
  std::string Owner() const { return "trellis/" + cluster_id; }

  static SecgroupConfig Parse(const Json& config);
};

// "10.1.2.3/8" -> "10.0.0.0/8"; "10.1.2.3" -> "10.1.2.3/32"; IPv6 alike.
// std::nullopt when `text` is not a CIDR.
std::optional<std::string> CanonicalCidr(const std::string& text);

// A cloud rule as a Rule (the description with our mark removed when
// `owned`). Peers ECS names by group or prefix list keep their id as cidr.
Rule FromCloud(const aliyun::SecurityGroupRule& r, const std::string& owner, bool* owned);
// What ECS gets for `r`, its description marked with `owner`.
aliyun::SecurityGroupRule ToCloud(const Rule& r, const std::string& owner);
// Whether a cloud rule's description carries `owner`'s mark: exactly the mark,
// or the mark followed by a space.
bool OwnedBy(const std::string& description, const std::string& owner);

}  // namespace trellis::secgroup

#endif  // TRELLIS_PLUGINS_SECGROUP_CONFIG_H_
