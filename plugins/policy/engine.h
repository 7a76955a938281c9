// The policy engine: pods, namespaces and policies in; the nftables picture
// and explanations out. Pure computation, no kernel access: the plugin applies
// what it produces, and the unit tests check it directly.
//
// Shape of the table (family inet, in the node's network namespace):
//
//   forward (hook)   ct established,related accept
//                    iifname "tr*" jump pod_out          traffic a pod sends
//                    oifname vmap @ingress               traffic to a pod
//   input (hook)     ct established,related accept; NDP/MLD accept
//                    iifname "tr*" jump pod_out          pod -> node
//   pod_out          iifname != @pods iifname @grace return   pods predating the module
//                    iifname != @pods drop               not upserted yet (ADD window)
//                    iifname . saddr != @src4/@src6 drop  spoofed source
//                    iifname vmap @egress
//   i_<hash>/e_<hash>   one chain per distinct compiled program: a lookup in
//                    <g>_a4/_a6 (peers on every port) and <g>_p4/_p6
//                    (peer . proto . port), then a per-pod counter and drop.
//
// Pods with the same program (same policies, same resolved named ports) share
// a chain, so a packet costs a fixed number of hash/interval lookups whatever
// the number of policies or pods. Pod churn only changes elements: the
// verdict maps, the per-pod counters and the peer sets of the chains whose
// rules select the pod as a peer. New rules appear only when a pod brings a
// program no other pod has.
#ifndef TRELLIS_PLUGINS_POLICY_ENGINE_H_
#define TRELLIS_PLUGINS_POLICY_ENGINE_H_

#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "model.h"
#include "nft.h"

namespace trellis::policy {

struct NamedPort {
  std::string name;
  uint8_t proto = kTcp;
  uint16_t port = 0;
  bool operator==(const NamedPort&) const = default;
};

struct PodIdentity {
  std::string key;  // container_id + "/" + ifname
  std::string ns, name;
  std::string host_ifname;
  Labels labels;
  std::vector<IpRange> addresses;  // one-address ranges
  std::vector<NamedPort> ports;    // container ports with names
  bool operator==(const PodIdentity&) const = default;

  std::string DisplayName() const { return ns + "/" + name; }
  Json ToJson() const;
  static PodIdentity FromJson(const Json& j);
};

// An endpoint of a connection to explain: a known pod, or an address.
struct Endpoint {
  const PodIdentity* pod = nullptr;
  std::optional<IpRange> ip;  // the address used (pod: chosen by family)
  std::string Display() const;
};

class Engine {
 public:
  Engine();

  // Inputs. Each call updates the picture incrementally.
  void UpsertPod(const PodIdentity& pod);
  void RemovePod(const std::string& key);
  // Replaces every policy (keyed by Policy::key). Unchanged ones cost nothing.
  void SetPolicies(std::vector<Policy> policies);
  // Replaces the namespace labels (kubernetes.io/metadata.name is implied).
  void SetNamespaces(const std::map<std::string, Labels>& namespaces);

  // Brings `desired()` up to date and returns what changed since the last
  // call to Commit().
  Touched Commit();
  const NftTable& desired() const { return desired_; }

  const std::map<std::string, PodIdentity>& pods() const { return pods_; }
  const PodIdentity* FindPod(const std::string& key) const;
  const PodIdentity* FindPodByName(const std::string& ns, const std::string& name) const;
  size_t PolicyCount() const { return policies_.size(); }
  size_t RuleCount() const;
  size_t GroupCount() const { return groups_.size(); }
  // The group chain a pod is sent to, "" when not isolated in that direction.
  std::string GroupOf(const std::string& pod_key, bool egress) const;
  Labels NamespaceLabels(const std::string& ns) const;
  // The same, cached: selectors run against it for every peer check.
  const Labels& EffectiveNamespaceLabels(const std::string& ns) const;

  // Would a new connection from `src` to `dst` on proto/port be allowed?
  // Uses the same policies and matching as the compiled table.
  Json Explain(const Endpoint& src, const Endpoint& dst, uint8_t proto, uint16_t port) const;

 private:
  struct RuleRef {
    std::string uid;
    bool egress = false;
    int index = 0;
    auto operator<=>(const RuleRef&) const = default;
  };
  struct ResolvedPort {
    uint8_t proto;
    PortRange range;
    auto operator<=>(const ResolvedPort&) const = default;
  };
  struct Entry {
    RuleRef rule;
    bool all_ports = true;
    std::vector<ResolvedPort> ports;  // ingress: resolved against the member pods
  };
  // A compiled program shared by its member pods. Per family it owns up to
  // five sets: _ip (peer pod addresses, every port; hash), _net (CIDRs, every
  // port; interval), _ipp (pod address . proto . port; hash), _ipr (pod
  // address . proto . port range; interval) and _netp (CIDR . proto . ports;
  // interval). Pod-derived elements are refcounted and follow peer churn one
  // pod at a time; the CIDR sets change only with the policies.
  struct Group {
    bool egress = false;
    std::vector<Entry> entries;
    std::set<std::string> members;
    bool has_all = false, has_ports = false;
    std::map<std::string, std::map<std::string, int>> refs;  // set suffix -> element -> count
    // pod address -> (proto, lo, hi) -> count, and the _ipr elements it has now
    std::map<std::string, std::map<std::tuple<uint8_t, uint16_t, uint16_t>, int>> range_refs;
    std::map<std::string, std::set<std::string>> range_elements;
  };

  const Policy* PolicyOf(const std::string& uid) const;
  bool Selects(const Policy& p, const PodIdentity& pod) const;
  bool PeerMatchesPod(const Policy& p, const Peer& peer, const PodIdentity& pod) const;
  bool RuleWantsPod(const Policy& p, const Rule& r, bool egress, const PodIdentity& pod) const;
  std::vector<const Policy*> PoliciesFor(const std::string& ns) const;
  // The program of `pod` in one direction; nullopt when not isolated.
  std::optional<std::vector<Entry>> Program(const PodIdentity& pod, bool egress) const;
  void Assign(const std::string& pod_key);
  void Unassign(const std::string& pod_key, int dir);
  void DropGroup(const std::string& name);
  void BuildGroup(const std::string& name);
  void RenderIntervals(const std::string& name);
  // What one peer pod adds to a group through one entry: hash elements
  // (suffix, element) and port-range boxes of its addresses.
  void Contribute(const Group& g, const Entry& e, const Rule& r, const PodIdentity& pod,
                  std::vector<std::pair<std::string, std::string>>* hashed,
                  std::vector<Box>* boxes) const;
  void Apply(const std::string& group, Group& g,
             const std::vector<std::pair<std::string, std::string>>& hashed,
             const std::vector<Box>& boxes, int delta);
  void RangeRef(const std::string& group, Group& g, const Box& b, int delta);
  void Ref(const std::string& group, Group& g, const std::string& suffix,
           const std::string& element, int delta);
  void RenderGlobals();
  void TouchSet(const std::string& name, NftSet set);
  void EraseSet(const std::string& name);
  void RecomputeRulePeers(const RuleRef& ref, const Policy& p, const Rule& r);
  // `pod` joined (+1) or left (-1) the peers of `ref`.
  void PeerChanged(const RuleRef& ref, const PodIdentity& pod, int delta);

  // Inputs.
  std::map<std::string, PodIdentity> pods_;
  // Pods by (namespace, labels): selectors and peers depend on nothing else,
  // so a policy is matched once per class, not once per pod.
  std::map<std::pair<std::string, Labels>, std::set<std::string>> classes_;
  std::map<std::string, Labels> namespaces_;
  mutable std::map<std::string, Labels> ns_cache_;
  std::map<std::string, Policy> policies_;                     // by uid
  std::map<std::string, std::set<std::string>> by_namespace_;  // ns -> uids ("" cluster-wide)

  // Derived.
  std::map<RuleRef, std::set<std::string>> rule_peers_;  // pod keys a rule's selectors match
  std::map<std::string, std::string> pod_group_[2];      // pod key -> group, [ingress, egress]
  std::map<std::string, Group> groups_;
  std::map<RuleRef, std::set<std::string>> rule_groups_;
  std::set<std::string> dirty_groups_;  // interval sets and chain to re-render
  bool globals_dirty_ = true;

  NftTable desired_;
  Touched touched_;
};

}  // namespace trellis::policy

#endif  // TRELLIS_PLUGINS_POLICY_ENGINE_H_
