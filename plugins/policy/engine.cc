#include "engine.h"

#include <algorithm>

namespace trellis::policy {
namespace {

std::string Quote(const std::string& s) { return "\"" + s + "\""; }

std::string ProtoToken(uint8_t proto) {
  switch (proto) {
    case kTcp:
      return "tcp";
    case kUdp:
      return "udp";
    case kSctp:
      return "sctp";
  }
  return std::to_string(proto);
}

std::string BoxElement(const Box& b) {
  std::string ports = b.ports.lo == b.ports.hi
                          ? std::to_string(b.ports.lo)
                          : std::to_string(b.ports.lo) + "-" + std::to_string(b.ports.hi);
  return FormatRange(b.addr) + " . " + ProtoToken(b.proto) + " . " + ports;
}

const char* kSpecIfnames = "type ifname;";
const char* kSpecVerdicts = "type ifname : verdict;";
const char* kSpecCounters = "type ifname : counter;";

}  // namespace

// ------------------------------------------------------------ PodIdentity --

Json PodIdentity::ToJson() const {
  Json addrs = Json::array(), ps = Json::array();
  for (const auto& a : addresses) addrs.push_back(FormatIp(a.family, a.lo));
  for (const auto& p : ports) {
    ps.push_back(
        {{"name", p.name}, {"protocol", ProtocolName(p.proto)}, {"containerPort", p.port}});
  }
  return {{"key", key},       {"namespace", ns},    {"name", name}, {"host_ifname", host_ifname},
          {"labels", labels}, {"addresses", addrs}, {"ports", ps}};
}

PodIdentity PodIdentity::FromJson(const Json& j) {
  PodIdentity p;
  p.key = j.value("key", "");
  p.ns = j.value("namespace", "");
  p.name = j.value("name", "");
  p.host_ifname = j.value("host_ifname", "");
  p.labels = j.value("labels", Labels{});
  for (const auto& a : j.value("addresses", Json::array())) {
    if (auto r = ParseIp(a.get<std::string>())) p.addresses.push_back(*r);
  }
  for (const auto& np : j.value("ports", Json::array())) {
    p.ports.push_back({np.value("name", ""),
                       ParseProtocol(np.value("protocol", "TCP")).value_or(kTcp),
                       np.value("containerPort", uint16_t{0})});
  }
  return p;
}

std::string Endpoint::Display() const {
  if (pod != nullptr)
    return pod->DisplayName() + (ip ? " (" + FormatIp(ip->family, ip->lo) + ")" : "");
  return ip ? FormatIp(ip->family, ip->lo) : "?";
}

// ----------------------------------------------------------------- Engine --

Engine::Engine() {
  auto& s = desired_.sets;
  s["pods"] = {kSpecIfnames, {}};
  s["grace"] = {"type ifname; flags timeout;", {}};
  s["src4"] = {"type ifname . ipv4_addr;", {}};
  s["src6"] = {"type ifname . ipv6_addr;", {}};
  s["ingress"] = {kSpecVerdicts, {}};
  s["egress"] = {kSpecVerdicts, {}};
  s["in_ctr"] = {kSpecCounters, {}};
  s["out_ctr"] = {kSpecCounters, {}};
  desired_.counters = {"pending", "spoofed"};
  auto& c = desired_.chains;
  c["pod_out"] = {
      "",
      {"iifname != @pods iifname @grace return", "iifname != @pods counter name \"pending\" drop",
       "iifname . ip saddr != @src4 counter name \"spoofed\" drop",
       // Link-local sources are never forwarded; they reach only the node.
       "iifname . ip6 saddr != @src6 ip6 saddr != fe80::/10 counter name \"spoofed\" drop",
       "iifname vmap @egress"}};
  c["forward"] = {"type filter hook forward priority filter; policy accept;",
                  {"ct state established,related accept", "iifname \"tr*\" jump pod_out",
                   "oifname vmap @ingress"}};
  c["input"] = {"type filter hook input priority filter; policy accept;",
                {"ct state established,related accept",
                 "iifname \"tr*\" icmpv6 type { nd-router-solicit, nd-neighbor-solicit, "
                 "nd-neighbor-advert, mld-listener-report, mld2-listener-report } accept",
                 "iifname \"tr*\" jump pod_out"}};
  for (const auto& [n, v] : s) touched_.sets.insert(n);
  for (const auto& [n, v] : c) touched_.chains.insert(n);
  touched_.counters = desired_.counters;
}

const PodIdentity* Engine::FindPod(const std::string& key) const {
  auto it = pods_.find(key);
  return it == pods_.end() ? nullptr : &it->second;
}

const PodIdentity* Engine::FindPodByName(const std::string& ns, const std::string& name) const {
  for (const auto& [k, p] : pods_) {
    if (p.ns == ns && p.name == name) return &p;
  }
  return nullptr;
}

size_t Engine::RuleCount() const {
  size_t n = 0;
  for (const auto& [uid, p] : policies_) n += p.ingress_rules.size() + p.egress_rules.size();
  return n;
}

std::string Engine::GroupOf(const std::string& pod_key, bool egress) const {
  auto it = pod_group_[egress].find(pod_key);
  return it == pod_group_[egress].end() ? "" : it->second;
}

Labels Engine::NamespaceLabels(const std::string& ns) const {
  Labels l;
  if (auto it = namespaces_.find(ns); it != namespaces_.end()) l = it->second;
  l[kNamespaceNameLabel] = ns;
  return l;
}

const Labels& Engine::EffectiveNamespaceLabels(const std::string& ns) const {
  auto it = ns_cache_.find(ns);
  if (it == ns_cache_.end()) it = ns_cache_.emplace(ns, NamespaceLabels(ns)).first;
  return it->second;
}

const Policy* Engine::PolicyOf(const std::string& uid) const {
  auto it = policies_.find(uid);
  return it == policies_.end() ? nullptr : &it->second;
}

bool Engine::Selects(const Policy& p, const PodIdentity& pod) const {
  return (p.cluster_wide || p.ns == pod.ns) && p.selector.Matches(pod.labels);
}

bool Engine::PeerMatchesPod(const Policy& p, const Peer& peer, const PodIdentity& pod) const {
  if (peer.IsIpBlock()) return false;
  if (peer.namespaces) {
    if (!peer.namespaces->Matches(EffectiveNamespaceLabels(pod.ns))) return false;
  } else if (!p.cluster_wide && pod.ns != p.ns) {
    return false;  // a podSelector alone means the policy's own namespace
  }
  return !peer.pods || peer.pods->Matches(pod.labels);
}

bool Engine::RuleWantsPod(const Policy& p, const Rule& r, bool egress,
                          const PodIdentity& pod) const {
  if (r.all_peers) {
    // Every address matches already; the pod is needed only to resolve
    // named ports of an egress rule against it.
    if (!egress) return false;
    for (const auto& port : r.ports) {
      if (!port.named.empty()) return true;
    }
    return false;
  }
  for (const auto& peer : r.peers) {
    if (PeerMatchesPod(p, peer, pod)) return true;
  }
  return false;
}

std::vector<const Policy*> Engine::PoliciesFor(const std::string& ns) const {
  std::vector<const Policy*> out;
  for (const std::string& key : {ns, std::string()}) {
    auto it = by_namespace_.find(key);
    if (it == by_namespace_.end()) continue;
    for (const auto& uid : it->second) out.push_back(&policies_.at(uid));
  }
  return out;
}

std::optional<std::vector<Engine::Entry>> Engine::Program(const PodIdentity& pod,
                                                          bool egress) const {
  bool isolated = false;
  std::vector<Entry> entries;
  for (const Policy* p : PoliciesFor(pod.ns)) {
    if (!(egress ? p->egress : p->ingress) || !Selects(*p, pod)) continue;
    isolated = true;
    const auto& rules = p->Rules(egress);
    for (size_t i = 0; i < rules.size(); ++i) {
      const Rule& r = rules[i];
      Entry e{{p->uid, egress, static_cast<int>(i)}, r.all_ports, {}};
      if (!r.all_ports && !egress) {
        for (const auto& pp : r.ports) {
          if (!pp.named.empty()) {
            for (const auto& np : pod.ports) {
              if (np.name == pp.named && np.proto == pp.proto)
                e.ports.push_back({pp.proto, {np.port, np.port}});
            }
          } else if (!pp.port) {
            e.ports.push_back({pp.proto, {0, 65535}});
          } else {
            e.ports.push_back({pp.proto, {*pp.port, pp.end_port.value_or(*pp.port)}});
          }
        }
        if (e.ports.empty()) continue;  // only named ports this pod does not have
        std::sort(e.ports.begin(), e.ports.end());
        e.ports.erase(std::unique(e.ports.begin(), e.ports.end()), e.ports.end());
      }
      entries.push_back(std::move(e));
    }
  }
  if (!isolated) return std::nullopt;
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.rule < b.rule; });
  return entries;
}

void Engine::PeerChanged(const RuleRef& ref, const PodIdentity& pod, int delta) {
  auto it = rule_groups_.find(ref);
  if (it == rule_groups_.end()) return;
  for (const auto& name : it->second) {
    Group& g = groups_.at(name);
    for (const auto& e : g.entries) {
      if (e.rule != ref) continue;
      const Rule& r = PolicyOf(ref.uid)->Rules(g.egress)[ref.index];
      std::vector<std::pair<std::string, std::string>> hashed;
      std::vector<Box> boxes;
      Contribute(g, e, r, pod, &hashed, &boxes);
      Apply(name, g, hashed, boxes, delta);
    }
  }
}

void Engine::Apply(const std::string& group, Group& g,
                   const std::vector<std::pair<std::string, std::string>>& hashed,
                   const std::vector<Box>& boxes, int delta) {
  for (const auto& [suffix, element] : hashed) Ref(group, g, suffix, element, delta);
  for (const auto& b : boxes) RangeRef(group, g, b, delta);
}

// Port ranges of one pod address: the union per protocol is what the set
// holds, so elements of one address never overlap (pipapo refuses that).
void Engine::RangeRef(const std::string& group, Group& g, const Box& b, int delta) {
  const std::string addr = FormatIp(b.addr.family, b.addr.lo);
  auto& refs = g.range_refs[addr];
  auto key = std::make_tuple(b.proto, b.ports.lo, b.ports.hi);
  if ((refs[key] += delta) <= 0) refs.erase(key);
  std::map<uint8_t, std::vector<PortRange>> per_proto;
  for (const auto& [k, n] : refs)
    per_proto[std::get<0>(k)].push_back({std::get<1>(k), std::get<2>(k)});
  std::set<std::string> now;
  for (auto& [proto, ranges] : per_proto) {
    for (const auto& r : UnionPorts(std::move(ranges))) {
      now.insert(BoxElement({b.addr, proto, r}));
    }
  }
  const std::string set_name = group + (b.addr.family == 4 ? "_ipr4" : "_ipr6");
  auto& elements = desired_.sets[set_name].elements;
  auto& had = g.range_elements[addr];
  for (const auto& e : had) {
    if (!now.contains(e) && elements.erase(e) > 0) touched_.sets.insert(set_name);
  }
  for (const auto& e : now) {
    if (elements.emplace(e, "").second) touched_.sets.insert(set_name);
  }
  had = std::move(now);
  if (refs.empty()) {
    g.range_refs.erase(addr);
    g.range_elements.erase(addr);
  }
}

void Engine::Ref(const std::string& group, Group& g, const std::string& suffix,
                 const std::string& element, int delta) {
  auto& refs = g.refs[suffix];
  int& count = refs[element];
  count += delta;
  auto& elements = desired_.sets[group + suffix].elements;
  if (count > 0) {
    if (elements.emplace(element, "").second) touched_.sets.insert(group + suffix);
    return;
  }
  refs.erase(element);
  if (elements.erase(element) > 0) touched_.sets.insert(group + suffix);
}

void Engine::RecomputeRulePeers(const RuleRef& ref, const Policy& p, const Rule& r) {
  std::set<std::string> peers;
  for (const auto& [cls, keys] : classes_) {
    if (RuleWantsPod(p, r, ref.egress, pods_.at(*keys.begin())))
      peers.insert(keys.begin(), keys.end());
  }
  std::set<std::string>& cur = rule_peers_[ref];
  for (const auto& k : cur) {
    if (!peers.contains(k)) PeerChanged(ref, pods_.at(k), -1);
  }
  for (const auto& k : peers) {
    if (!cur.contains(k)) PeerChanged(ref, pods_.at(k), +1);
  }
  if (peers.empty()) {
    rule_peers_.erase(ref);
  } else {
    cur = std::move(peers);
  }
}

void Engine::UpsertPod(const PodIdentity& pod) {
  if (auto it = pods_.find(pod.key); it != pods_.end()) {
    if (it->second == pod) return;
    RemovePod(pod.key);
  }
  pods_[pod.key] = pod;
  const PodIdentity& added = pods_[pod.key];
  classes_[{added.ns, added.labels}].insert(added.key);
  for (const auto& [uid, p] : policies_) {
    for (int dir = 0; dir < 2; ++dir) {
      const auto& rules = p.Rules(dir == 1);
      for (size_t i = 0; i < rules.size(); ++i) {
        if (!RuleWantsPod(p, rules[i], dir == 1, added)) continue;
        RuleRef ref{uid, dir == 1, static_cast<int>(i)};
        rule_peers_[ref].insert(pod.key);
        PeerChanged(ref, added, +1);
      }
    }
  }
  Assign(pod.key);
  globals_dirty_ = true;
}

void Engine::RemovePod(const std::string& key) {
  if (!pods_.contains(key)) return;
  for (auto it = rule_peers_.begin(); it != rule_peers_.end();) {
    if (it->second.erase(key) > 0) PeerChanged(it->first, pods_.at(key), -1);
    it = it->second.empty() ? rule_peers_.erase(it) : std::next(it);
  }
  Unassign(key, 0);
  Unassign(key, 1);
  const PodIdentity& gone = pods_.at(key);
  auto cls = classes_.find({gone.ns, gone.labels});
  cls->second.erase(key);
  if (cls->second.empty()) classes_.erase(cls);
  pods_.erase(key);
  globals_dirty_ = true;
}

void Engine::SetPolicies(std::vector<Policy> policies) {
  std::map<std::string, Policy> next;
  for (auto& p : policies) next.emplace(p.uid, std::move(p));
  std::set<std::string> affected;
  for (auto it = policies_.begin(); it != policies_.end();) {
    if (next.contains(it->first)) {
      ++it;
      continue;
    }
    const Policy& p = it->second;
    for (const auto& [cls, keys] : classes_) {
      if (Selects(p, pods_.at(*keys.begin()))) affected.insert(keys.begin(), keys.end());
    }
    for (int dir = 0; dir < 2; ++dir) {
      for (size_t i = 0; i < p.Rules(dir == 1).size(); ++i) {
        // The groups using these rules lose all their members below and go.
        rule_peers_.erase(RuleRef{p.uid, dir == 1, static_cast<int>(i)});
      }
    }
    auto& idx = by_namespace_[p.cluster_wide ? "" : p.ns];
    idx.erase(p.uid);
    if (idx.empty()) by_namespace_.erase(p.cluster_wide ? "" : p.ns);
    it = policies_.erase(it);
  }
  for (auto& [uid, p] : next) {
    if (policies_.contains(uid)) continue;
    const Policy& added = policies_.emplace(uid, std::move(p)).first->second;
    by_namespace_[added.cluster_wide ? "" : added.ns].insert(uid);
    for (int dir = 0; dir < 2; ++dir) {
      const auto& rules = added.Rules(dir == 1);
      for (size_t i = 0; i < rules.size(); ++i) {
        RecomputeRulePeers({uid, dir == 1, static_cast<int>(i)}, added, rules[i]);
      }
    }
    for (const auto& [cls, keys] : classes_) {
      if (Selects(added, pods_.at(*keys.begin()))) affected.insert(keys.begin(), keys.end());
    }
  }
  for (const auto& k : affected) Assign(k);
}

void Engine::SetNamespaces(const std::map<std::string, Labels>& namespaces) {
  if (namespaces == namespaces_) return;
  namespaces_ = namespaces;
  ns_cache_.clear();
  for (const auto& [uid, p] : policies_) {
    for (int dir = 0; dir < 2; ++dir) {
      const auto& rules = p.Rules(dir == 1);
      for (size_t i = 0; i < rules.size(); ++i) {
        bool uses_ns = std::any_of(rules[i].peers.begin(), rules[i].peers.end(),
                                   [](const Peer& peer) { return peer.namespaces.has_value(); });
        if (uses_ns) RecomputeRulePeers({uid, dir == 1, static_cast<int>(i)}, p, rules[i]);
      }
    }
  }
}

void Engine::Assign(const std::string& pod_key) {
  const PodIdentity& pod = pods_.at(pod_key);
  for (int dir = 0; dir < 2; ++dir) {
    auto program = Program(pod, dir == 1);
    if (!program) {
      Unassign(pod_key, dir);
      continue;
    }
    std::string key = dir == 1 ? "E|" : "I|";
    bool has_all = false, has_ports = false;
    for (const auto& e : *program) {
      key += e.rule.uid + ":" + std::to_string(e.rule.index);
      const Policy* p = PolicyOf(e.rule.uid);
      bool all = dir == 1 ? p->Rules(true)[e.rule.index].all_ports : e.all_ports;
      (all ? has_all : has_ports) = true;
      if (all) key += "*";
      for (const auto& rp : e.ports) {
        key += "," + std::to_string(rp.proto) + "/" + std::to_string(rp.range.lo) + "-" +
               std::to_string(rp.range.hi);
      }
      key += ";";
    }
    std::string name = (dir == 1 ? "e_" : "i_") + Hex(Fnv64(key), 12);
    auto cur = pod_group_[dir].find(pod_key);
    if (cur != pod_group_[dir].end() && cur->second == name) continue;
    Unassign(pod_key, dir);
    auto [it, created] = groups_.try_emplace(name);
    if (created) {
      it->second.egress = dir == 1;
      it->second.entries = std::move(*program);
      it->second.has_all = has_all;
      it->second.has_ports = has_ports;
      for (const auto& e : it->second.entries) rule_groups_[e.rule].insert(name);
      BuildGroup(name);
    }
    it->second.members.insert(pod_key);
    pod_group_[dir][pod_key] = name;
    globals_dirty_ = true;
  }
}

void Engine::Unassign(const std::string& pod_key, int dir) {
  auto cur = pod_group_[dir].find(pod_key);
  if (cur == pod_group_[dir].end()) return;
  auto g = groups_.find(cur->second);
  if (g != groups_.end()) {
    g->second.members.erase(pod_key);
    if (g->second.members.empty()) DropGroup(cur->second);
  }
  pod_group_[dir].erase(cur);
  globals_dirty_ = true;
}

void Engine::DropGroup(const std::string& name) {
  auto g = groups_.find(name);
  if (g == groups_.end()) return;
  for (const auto& e : g->second.entries) {
    auto it = rule_groups_.find(e.rule);
    if (it == rule_groups_.end()) continue;
    it->second.erase(name);
    if (it->second.empty()) rule_groups_.erase(it);
  }
  if (desired_.chains.erase(name) > 0) touched_.chains.insert(name);
  for (const char* suffix :
       {"_ip4", "_ip6", "_net4", "_net6", "_ipp4", "_ipp6", "_ipr4", "_ipr6", "_netp4", "_netp6"}) {
    EraseSet(name + suffix);
  }
  groups_.erase(g);
  dirty_groups_.erase(name);
}

void Engine::TouchSet(const std::string& name, NftSet set) {
  auto it = desired_.sets.find(name);
  if (it != desired_.sets.end() && it->second == set) return;
  desired_.sets[name] = std::move(set);
  touched_.sets.insert(name);
}

void Engine::EraseSet(const std::string& name) {
  if (desired_.sets.erase(name) > 0) touched_.sets.insert(name);
}

void Engine::Contribute(const Group& g, const Entry& e, const Rule& r, const PodIdentity& pod,
                        std::vector<std::pair<std::string, std::string>>* hashed,
                        std::vector<Box>* boxes) const {
  auto add = [&](const char* kind, const IpRange& a, const std::string& tail) {
    hashed->emplace_back(std::string(kind) + (a.family == 4 ? "4" : "6"),
                         FormatIp(a.family, a.lo) + tail);
  };
  auto port_tail = [](uint8_t proto, uint16_t port) {
    return " . " + ProtoToken(proto) + " . " + std::to_string(port);
  };
  if (r.all_peers) {
    // Every address is in the interval sets already; a pod matters only for
    // the egress named ports it resolves.
    if (!g.egress || r.all_ports) return;
    for (const auto& pp : r.ports) {
      if (pp.named.empty()) continue;
      for (const auto& np : pod.ports) {
        if (np.name != pp.named || np.proto != pp.proto) continue;
        for (const auto& a : pod.addresses) add("_ipp", a, port_tail(np.proto, np.port));
      }
    }
    return;
  }
  if (!g.egress) {
    if (e.all_ports) {
      for (const auto& a : pod.addresses) add("_ip", a, "");
      return;
    }
    for (const auto& rp : e.ports) {
      for (const auto& a : pod.addresses) {
        if (rp.range.lo == rp.range.hi)
          add("_ipp", a, port_tail(rp.proto, rp.range.lo));
        else
          boxes->push_back({a, rp.proto, rp.range});
      }
    }
    return;
  }
  if (r.all_ports) {
    for (const auto& a : pod.addresses) add("_ip", a, "");
    return;
  }
  for (const auto& pp : r.ports) {
    if (!pp.named.empty()) {
      // Egress named ports resolve against each destination pod.
      for (const auto& np : pod.ports) {
        if (np.name != pp.named || np.proto != pp.proto) continue;
        for (const auto& a : pod.addresses) add("_ipp", a, port_tail(np.proto, np.port));
      }
    } else if (pp.port && !pp.end_port) {
      for (const auto& a : pod.addresses) add("_ipp", a, port_tail(pp.proto, *pp.port));
    } else {
      PortRange range = pp.port ? PortRange{*pp.port, *pp.end_port} : PortRange{0, 65535};
      for (const auto& a : pod.addresses) boxes->push_back({a, pp.proto, range});
    }
  }
}

void Engine::BuildGroup(const std::string& name) {
  Group& g = groups_.at(name);
  if (g.has_all) {
    TouchSet(name + "_ip4", {"type ipv4_addr;", {}});
    TouchSet(name + "_ip6", {"type ipv6_addr;", {}});
  }
  if (g.has_ports) {
    TouchSet(name + "_ipp4", {"type ipv4_addr . inet_proto . inet_service;", {}});
    TouchSet(name + "_ipp6", {"type ipv6_addr . inet_proto . inet_service;", {}});
    TouchSet(name + "_ipr4", {"type ipv4_addr . inet_proto . inet_service; flags interval;", {}});
    TouchSet(name + "_ipr6", {"type ipv6_addr . inet_proto . inet_service; flags interval;", {}});
  }
  for (const auto& e : g.entries) {
    auto it = rule_peers_.find(e.rule);
    if (it == rule_peers_.end()) continue;
    const Rule& r = PolicyOf(e.rule.uid)->Rules(g.egress)[e.rule.index];
    std::vector<std::pair<std::string, std::string>> hashed;
    std::vector<Box> boxes;
    for (const auto& k : it->second) Contribute(g, e, r, pods_.at(k), &hashed, &boxes);
    Apply(name, g, hashed, boxes, +1);
  }
  dirty_groups_.insert(name);
}

void Engine::RenderIntervals(const std::string& name) {
  const Group& g = groups_.at(name);
  std::vector<IpRange> all;
  std::vector<Box> boxes;
  for (const auto& e : g.entries) {
    const Policy* p = PolicyOf(e.rule.uid);
    const Rule& r = p->Rules(g.egress)[e.rule.index];
    std::vector<IpRange> cidrs;
    if (r.all_peers) {
      cidrs = {FullRange(4), FullRange(6)};
    } else {
      for (const auto& peer : r.peers) {
        if (!peer.IsIpBlock()) continue;
        auto rest = Subtract(*peer.cidr, peer.except);
        cidrs.insert(cidrs.end(), rest.begin(), rest.end());
      }
    }
    bool all_ports = g.egress ? r.all_ports : e.all_ports;
    if (all_ports) {
      all.insert(all.end(), cidrs.begin(), cidrs.end());
    } else if (!g.egress) {
      for (const auto& rp : e.ports) {
        for (const auto& c : cidrs) boxes.push_back({c, rp.proto, rp.range});
      }
    } else {
      for (const auto& pp : r.ports) {
        if (!pp.named.empty()) continue;  // named ports resolve only against pods
        PortRange range =
            pp.port ? PortRange{*pp.port, pp.end_port.value_or(*pp.port)} : PortRange{0, 65535};
        for (const auto& c : cidrs) boxes.push_back({c, pp.proto, range});
      }
    }
  }
  const std::string dir_addr = g.egress ? "daddr" : "saddr";
  const std::string verdict = g.egress ? "return" : "accept";
  NftChain chain;
  if (g.has_all) {
    NftSet n4{"type ipv4_addr; flags interval;", {}}, n6{"type ipv6_addr; flags interval;", {}};
    for (const auto& r : MergeRanges(all)) (r.family == 4 ? n4 : n6).elements[FormatRange(r)] = "";
    TouchSet(name + "_net4", std::move(n4));
    TouchSet(name + "_net6", std::move(n6));
    for (const char* f : {"4", "6"}) {
      std::string l3 = std::string(f) == "4" ? "ip " : "ip6 ";
      chain.rules.push_back(l3 + dir_addr + " @" + name + "_ip" + f + " " + verdict);
      chain.rules.push_back(l3 + dir_addr + " @" + name + "_net" + f + " " + verdict);
    }
  }
  if (g.has_ports) {
    NftSet p4{"type ipv4_addr . inet_proto . inet_service; flags interval;", {}};
    NftSet p6{"type ipv6_addr . inet_proto . inet_service; flags interval;", {}};
    for (const auto& b : NormalizeBoxes(std::move(boxes))) {
      (b.addr.family == 4 ? p4 : p6).elements[BoxElement(b)] = "";
    }
    TouchSet(name + "_netp4", std::move(p4));
    TouchSet(name + "_netp6", std::move(p6));
    for (const char* f : {"4", "6"}) {
      std::string l3 = std::string(f) == "4" ? "ip " : "ip6 ";
      chain.rules.push_back(l3 + dir_addr + " . meta l4proto . th dport @" + name + "_ipp" + f +
                            " " + verdict);
      chain.rules.push_back(l3 + dir_addr + " . meta l4proto . th dport @" + name + "_ipr" + f +
                            " " + verdict);
      chain.rules.push_back(l3 + dir_addr + " . meta l4proto . th dport @" + name + "_netp" + f +
                            " " + verdict);
    }
  }
  // The counter lookup and the drop are separate rules: a failed map lookup
  // ends its rule, and must not skip the drop.
  chain.rules.push_back(g.egress ? "counter name iifname map @out_ctr"
                                 : "counter name oifname map @in_ctr");
  chain.rules.push_back("drop");
  auto it = desired_.chains.find(name);
  if (it == desired_.chains.end() || it->second != chain) {
    desired_.chains[name] = std::move(chain);
    touched_.chains.insert(name);
  }
}

void Engine::RenderGlobals() {
  NftSet pods{kSpecIfnames, {}}, src4{"type ifname . ipv4_addr;", {}},
      src6{"type ifname . ipv6_addr;", {}};
  NftSet in{kSpecVerdicts, {}}, out{kSpecVerdicts, {}};
  NftSet in_ctr{kSpecCounters, {}}, out_ctr{kSpecCounters, {}};
  std::set<std::string> counters = {"pending", "spoofed"};
  for (const auto& [k, p] : pods_) {
    if (p.host_ifname.empty()) continue;
    const std::string ifn = Quote(p.host_ifname);
    pods.elements[ifn] = "";
    for (const auto& a : p.addresses) {
      (a.family == 4 ? src4 : src6).elements[ifn + " . " + FormatIp(a.family, a.lo)] = "";
    }
    counters.insert("in_" + p.host_ifname);
    counters.insert("out_" + p.host_ifname);
    in_ctr.elements[ifn] = Quote("in_" + p.host_ifname);
    out_ctr.elements[ifn] = Quote("out_" + p.host_ifname);
    if (auto g = GroupOf(k, false); !g.empty()) in.elements[ifn] = "jump " + g;
    if (auto g = GroupOf(k, true); !g.empty()) out.elements[ifn] = "jump " + g;
  }
  TouchSet("pods", std::move(pods));
  TouchSet("src4", std::move(src4));
  TouchSet("src6", std::move(src6));
  TouchSet("ingress", std::move(in));
  TouchSet("egress", std::move(out));
  TouchSet("in_ctr", std::move(in_ctr));
  TouchSet("out_ctr", std::move(out_ctr));
  for (const auto& c : counters) {
    if (!desired_.counters.contains(c)) touched_.counters.insert(c);
  }
  for (const auto& c : desired_.counters) {
    if (!counters.contains(c)) touched_.counters.insert(c);
  }
  desired_.counters = std::move(counters);
}

Touched Engine::Commit() {
  for (const auto& name : dirty_groups_) {
    if (groups_.contains(name)) RenderIntervals(name);
  }
  dirty_groups_.clear();
  if (globals_dirty_) RenderGlobals();
  globals_dirty_ = false;
  Touched out = std::move(touched_);
  touched_ = Touched();
  return out;
}

// ---------------------------------------------------------------- explain --

Json Engine::Explain(const Endpoint& src, const Endpoint& dst, uint8_t proto, uint16_t port) const {
  auto side = [&](bool egress) -> Json {
    const PodIdentity* subject = egress ? src.pod : dst.pod;
    const Endpoint& other = egress ? dst : src;
    const char* dir = egress ? "egress" : "ingress";
    Json out = {{"direction", dir}};
    if (subject == nullptr) {
      out["isolated"] = false;
      out["allowed"] = true;
      out["reason"] = std::string(dir) + " of " + (egress ? src : dst).Display() +
                      " is not enforced on this node (not a local pod)";
      return out;
    }
    std::vector<const Policy*> isolating;
    for (const Policy* p : PoliciesFor(subject->ns)) {
      if ((egress ? p->egress : p->ingress) && Selects(*p, *subject)) isolating.push_back(p);
    }
    Json names = Json::array();
    for (const Policy* p : isolating) names.push_back(p->DisplayName());
    out["policies"] = names;
    if (isolating.empty()) {
      out["isolated"] = false;
      out["allowed"] = true;
      out["reason"] = std::string(dir) + " of " + subject->DisplayName() +
                      " is not isolated (no policy selects it for " + dir + ")";
      return out;
    }
    out["isolated"] = true;
    for (const Policy* p : isolating) {
      const auto& rules = p->Rules(egress);
      for (size_t i = 0; i < rules.size(); ++i) {
        const Rule& r = rules[i];
        std::string peer_text;
        bool peer_ok = r.all_peers;
        if (peer_ok) peer_text = egress ? "any destination" : "any source";
        for (const auto& peer : r.peers) {
          if (peer_ok) break;
          if (peer.IsIpBlock()) {
            if (!other.ip || !peer.cidr->Contains(other.ip->family, other.ip->lo)) continue;
            bool excluded = std::any_of(
                peer.except.begin(), peer.except.end(),
                [&](const IpRange& e) { return e.Contains(other.ip->family, other.ip->lo); });
            if (excluded) continue;
          } else if (other.pod == nullptr || !PeerMatchesPod(*p, peer, *other.pod)) {
            continue;
          }
          peer_ok = true;
          peer_text = peer.text;
        }
        if (!peer_ok) continue;
        std::string port_text;
        bool port_ok = r.all_ports;
        if (port_ok) port_text = "all ports";
        for (const auto& pp : r.ports) {
          if (port_ok) break;
          if (pp.proto != proto) continue;
          if (!pp.named.empty()) {
            if (dst.pod == nullptr) continue;
            for (const auto& np : dst.pod->ports) {
              if (np.name == pp.named && np.proto == pp.proto && np.port == port) port_ok = true;
            }
          } else {
            port_ok = !pp.port || (port >= *pp.port && port <= pp.end_port.value_or(*pp.port));
          }
          if (port_ok) port_text = pp.ToString();
        }
        if (!port_ok) continue;
        out["allowed"] = true;
        out["policy"] = p->DisplayName();
        out["origin"] = p->origin;
        out["rule"] = i;
        out["peer"] = peer_text;
        out["port"] = port_text;
        out["reason"] = std::string(dir) + " allowed by " + p->DisplayName() + " " + dir + "[" +
                        std::to_string(i) + "] (" + peer_text + ", " + port_text + ")";
        return out;
      }
    }
    std::string list;
    for (const auto& n : names) list += (list.empty() ? "" : ", ") + n.get<std::string>();
    out["allowed"] = false;
    out["reason"] = std::string(dir) + " of " + subject->DisplayName() + " is isolated by " + list +
                    " and no " + dir + " rule allows " + other.Display() + " on " +
                    std::to_string(port) + "/" + ProtocolName(proto);
    return out;
  };
  Json eg = side(true), in = side(false);
  bool allowed = eg["allowed"].get<bool>() && in["allowed"].get<bool>();
  Json v = {{"allowed", allowed}, {"from", src.Display()},           {"to", dst.Display()},
            {"port", port},       {"protocol", ProtocolName(proto)}, {"egress", eg},
            {"ingress", in}};
  const Json& decider = !eg["allowed"].get<bool>()    ? eg
                        : !in["allowed"].get<bool>()  ? in
                        : in.value("isolated", false) ? in
                                                      : eg;
  v["reason"] = allowed ? eg["reason"].get<std::string>() + "; " + in["reason"].get<std::string>()
                        : decider["reason"].get<std::string>();
  v["policy"] = decider.contains("policy")     ? decider["policy"]
                : decider.contains("policies") ? decider["policies"]
                                               : Json();
  v["rule"] = decider.contains("rule") ? Json{{"direction", decider["direction"]},
                                              {"index", decider["rule"]},
                                              {"peer", decider["peer"]},
                                              {"port", decider["port"]}}
                                       : Json();
  return v;
}

}  // namespace trellis::policy
