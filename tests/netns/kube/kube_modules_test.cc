// The Kubernetes API source end to end with the real modules: live trellisd
// nodes against the fake API server, with the real policy and qos plugins
// (the kernel's nftables table, tc classes, TCP probes between pods) and the
// real secgroup plugin against the ECS emulator. Watch events drive
// everything here; no CNI args carry labels or annotations.
//
// Enforcement is awaited with WaitFor and generous deadlines, never timed:
// bench/kube_bench.cc measures the watch-event -> kernel latency.
#include <gtest/gtest.h>

#include <regex>
#include <set>
#include <sstream>

#include "ecs_emulator.h"
#include "kube_node.h"
#include "kube_rbac.h"
#include "policy_probe.h"

namespace trellis::test {
namespace {

using namespace std::chrono_literals;

constexpr const char* kModules =
    "  ipam: {config: {ranges: [{subnet: 10.62.0.0/24}], reuse_delay: 0}}\n"
    "  qos: {enabled: true}\n"
    "  policy: {enabled: true}\n";
constexpr auto kEnforced = 20s;  // generous: the goal is 1 s (bench/kube_bench.cc)

// A pod of the node: its network namespace, the CNI ADD done, its address,
// its host-side veth, an echo server on TCP 80 and 81.
struct Pod {
  std::string ns, name, id;
  std::unique_ptr<Netns> netns;
  std::string ip, host_if;
  std::unique_ptr<EchoServer> server;
  std::string path() const { return netns->path(); }
};

// A TCP handshake from `from` to `to` completes (generous timeout) / does
// not complete (a dropped SYN shows as the timeout).
bool Reaches(const Pod& from, const Pod& to, int port = 80) {
  return Probe(from.path(), "", to.ip, port, L4::kTcp, 3000);
}
bool Blocked(const Pod& from, const Pod& to, int port = 80) {
  return !Probe(from.path(), "", to.ip, port, L4::kTcp, 700);
}

// The names of the sets and maps of trellis's nftables table whose elements
// mention `value` (an address or an interface name), as the kernel holds
// them (`nft -j list table inet trellis`).
std::set<std::string> SetsHolding(const Daemon& d, const std::string& value) {
  std::set<std::string> out;
  Json j = Json::parse(d.NodeExec("nft -j list table inet trellis").out, nullptr, false);
  if (!j.is_object()) return out;
  for (const auto& item : j.value("nftables", Json::array())) {
    for (const char* kind : {"set", "map"}) {
      if (!item.contains(kind) || !item[kind].contains("elem")) continue;
      if (item[kind]["elem"].dump().find("\"" + value + "\"") != std::string::npos) {
        out.insert(item[kind].value("name", ""));
      }
    }
  }
  return out;
}
// The peer sets that name `ip`: every set holding it but the anti-spoofing
// sets, which hold every pod address whatever the policies.
std::set<std::string> PeerSets(const Daemon& d, const std::string& ip) {
  auto s = SetsHolding(d, ip);
  s.erase("src4");
  s.erase("src6");
  return s;
}
// The pod's host interface is in the `ingress` verdict map: a policy selects
// it for ingress.
bool IngressSelected(const Daemon& d, const Pod& p) {
  return SetsHolding(d, p.host_if).contains("ingress");
}

// An HTB class as `tc class show` prints it (iproute2 has no JSON for htb).
struct TcClass {
  std::string rate, ceil;
};
std::map<std::string, TcClass> Classes(const Daemon& d, const std::string& dev) {
  std::map<std::string, TcClass> out;
  std::istringstream in(d.NodeExec("tc class show dev " + dev).out);
  static const std::regex re(R"(class htb (\S+) .* rate (\S+) ceil (\S+))");
  std::string line;
  std::smatch m;
  while (std::getline(in, line)) {
    if (std::regex_search(line, m, re)) out[m[1]] = {m[2], m[3]};
  }
  return out;
}
// The qos leaf class of a pod: the tag of its filter on the host veth
// ("ingress" hook: what the pod sends, shaped on tqos-egress; "egress":
// what it receives, on tqos-ingress) ends in "@<class id>".
std::string Leaf(const Daemon& d, const Pod& p, const std::string& hook) {
  Json j = Json::parse(d.NodeExec("tc -j filter show dev " + p.host_if + " " + hook).out, nullptr,
                       false);
  if (!j.is_array()) return "";
  for (const auto& f : j) {
    if (f.value("kind", "") != "bpf" || !f.contains("options")) continue;
    std::string tag = f["options"].value("bpf_name", "");
    if (auto at = tag.find('@'); at != std::string::npos) return tag.substr(at + 1);
  }
  return "";
}

// Everything about a pod's network that a metadata update must leave alone.
struct PodState {
  std::string host_ifindex, pod_ifindex, addresses, routes, qdiscs, filters;
  bool operator==(const PodState&) const = default;
};
PodState Snapshot(const Daemon& d, const Pod& p) {
  PodState s;
  s.host_ifindex = d.NodeExec("cat /sys/class/net/" + p.host_if + "/ifindex").out;
  s.pod_ifindex = p.netns->Exec("cat /sys/class/net/eth0/ifindex").out;
  // Global scope only: a link-local address's flags change by themselves
  // (tentative until DAD completes).
  s.addresses = p.netns->Exec("ip -o addr show dev eth0 scope global").out;
  s.routes = d.NodeExec("ip route show dev " + p.host_if).out;
  s.qdiscs = d.NodeExec("tc qdisc show dev " + p.host_if).out;
  s.filters = d.NodeExec("tc filter show dev " + p.host_if + " ingress; tc filter show dev " +
                         p.host_if + " egress")
                  .out;
  return s;
}
// The same without the numbers the kernel hands out per attachment: the
// qos module re-attaches its classifier (same handle, same program, same
// redirect, same class) when it applies a pod's new limits, and every
// attachment gets a new program id and action index.
PodState WithoutKernelIds(PodState s) {
  static const std::regex id(R"((\s(?:id|index) )\d+)");
  s.filters = std::regex_replace(s.filters, id, "$1-");
  return s;
}
std::ostream& operator<<(std::ostream& o, const PodState& s) {
  return o << "ifindex host " << s.host_ifindex << " pod " << s.pod_ifindex << "\naddresses "
           << s.addresses << "routes " << s.routes << "qdiscs " << s.qdiscs << "filters "
           << s.filters;
}

class KubeModules : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string error;
    ASSERT_TRUE(EnforceShippedRbac(api_, &error)) << error;
    api_.Apply(FakeApiServer::Namespace("shop", {{"team", "a"}}));
  }
  void TearDown() override {
    for (auto& p : pods_) {
      p->server.reset();
      if (!p->ip.empty()) node_->Cni("DEL", p->id, *p->netns, p->ns, p->name);
    }
    pods_.clear();
    if (HasFailure() && node_) std::cerr << "--- trellisd log:\n" << node_->daemon().Log() << "\n";
    node_.reset();
    EXPECT_EQ(Forbidden(api_), "") << "requests the RBAC in deploy/ does not grant";
  }

  void StartNode(const std::string& name = "kmod-node") {
    api_.Apply(FakeApiServer::Node(name, {"10.62.0.0/24"}));
    node_ = std::make_unique<KubeNode>(&api_, name,
                                       KubeNodeSetup{.modules = kModules, .recorder = false});
    std::string why;
    ASSERT_TRUE(node_->daemon().Start(&why)) << why;
  }
  Daemon& D() { return node_->daemon(); }

  // Creates the pod in the API (labels, annotations), then the CNI ADD: the
  // ADD takes its metadata from the watch cache, as kubelet's order has it.
  Pod& AddPod(const std::string& name, const Json& labels, const Json& annotations = {}) {
    api_.Apply(FakeApiServer::Pod("shop", name, node_->name(), labels,
                                  annotations.is_null() ? Json::object() : annotations));
    auto p = std::make_unique<Pod>();
    p->ns = "shop";
    p->name = name;
    p->id = "km-" + name;
    p->netns = std::make_unique<Netns>("km");
    auto r = node_->Cni("ADD", p->id, *p->netns, "shop", name);
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err << D().Log();
    if (r.exit_code == 0) {
      Json res = r.json();
      p->host_if = res["interfaces"][0]["name"];
      std::string a = res["ips"][0]["address"];
      p->ip = a.substr(0, a.find('/'));
      p->server =
          std::make_unique<EchoServer>(p->path(), std::vector<int>{80, 81}, std::vector<int>{});
      EXPECT_TRUE(p->server->ok());
    }
    pods_.push_back(std::move(p));
    return *pods_.back();
  }
  // Replaces the pod's labels/annotations in the API (a watch MODIFIED).
  void Relabel(const Pod& p, const Json& labels, const Json& annotations = Json::object()) {
    Json obj = *api_.Get("Pod", p.ns, p.name);
    obj["metadata"]["labels"] = labels;
    obj["metadata"]["annotations"] = annotations;
    api_.Apply(obj);
  }

  FakeApiServer api_;
  std::unique_ptr<KubeNode> node_;
  std::vector<std::unique_ptr<Pod>> pods_;
};

// A NetworkPolicy in namespace shop: `app: web` pods take TCP 80 from
// `role: client` pods only.
Json WebFromClients() {
  return FakeApiServer::NetworkPolicy(
      "shop", "web-from-clients",
      {{"podSelector", {{"matchLabels", {{"app", "web"}}}}},
       {"policyTypes", {"Ingress"}},
       {"ingress",
        {{{"from", {{{"podSelector", {{"matchLabels", {{"role", "client"}}}}}}}},
          {"ports", {{{"protocol", "TCP"}, {"port", 80}}}}}}}});
}

TEST_F(KubeModules, LabelChangesMovePodsInAndOutOfAPolicyWithoutTouchingTheirNetwork) {
  api_.Apply(WebFromClients());
  ASSERT_NO_FATAL_FAILURE(StartNode());
  // web is shaped too, so that its qdiscs and filters are part of what a
  // label change must leave alone.
  Pod& web = AddPod("web", {{"app", "web"}}, {{"kubernetes.io/egress-bandwidth", "50M"}});
  Pod& client = AddPod("client", {{"role", "client"}});
  Pod& other = AddPod("other", {{"role", "visitor"}});
  ASSERT_FALSE(web.ip.empty() || client.ip.empty() || other.ip.empty());

  EXPECT_TRUE(IngressSelected(D(), web));
  EXPECT_FALSE(PeerSets(D(), client.ip).empty()) << "client is a peer of the policy";
  EXPECT_TRUE(PeerSets(D(), other.ip).empty());
  EXPECT_TRUE(Reaches(client, web));
  EXPECT_TRUE(Blocked(other, web));
  EXPECT_TRUE(Blocked(client, web, 81)) << "port 81 is not allowed";
  const PodState web_before = Snapshot(D(), web), client_before = Snapshot(D(), client);
  ASSERT_FALSE(web_before.qdiscs.empty());

  // The client stops being a client: it leaves the policy's peer set, and
  // its connections to web are dropped.
  Relabel(client, {{"role", "visitor"}});
  EXPECT_TRUE(WaitFor([&] { return PeerSets(D(), client.ip).empty(); }, kEnforced))
      << ::testing::PrintToString(PeerSets(D(), client.ip));
  EXPECT_TRUE(WaitFor([&] { return Blocked(client, web); }, kEnforced));
  // ... and back.
  Relabel(client, {{"role", "client"}});
  EXPECT_TRUE(WaitFor([&] { return !PeerSets(D(), client.ip).empty(); }, kEnforced));
  EXPECT_TRUE(WaitFor([&] { return Reaches(client, web); }, kEnforced));

  // web leaves the policy's podSelector: no policy isolates it any more,
  // anyone reaches it.
  Relabel(web, {{"app", "web-canary"}}, {{"kubernetes.io/egress-bandwidth", "50M"}});
  EXPECT_TRUE(WaitFor([&] { return !IngressSelected(D(), web); }, kEnforced));
  EXPECT_TRUE(WaitFor([&] { return Reaches(other, web); }, kEnforced));
  EXPECT_TRUE(Reaches(other, web, 81));
  // ... and back: isolated again, the client still allowed on 80 only.
  Relabel(web, {{"app", "web"}}, {{"kubernetes.io/egress-bandwidth", "50M"}});
  EXPECT_TRUE(WaitFor([&] { return IngressSelected(D(), web); }, kEnforced));
  EXPECT_TRUE(WaitFor([&] { return Blocked(other, web); }, kEnforced));
  EXPECT_TRUE(Reaches(client, web));
  EXPECT_TRUE(Blocked(client, web, 81));

  // Nothing else moved: same veths, addresses, routes, qdiscs, filters.
  EXPECT_EQ(Snapshot(D(), web), web_before);
  EXPECT_EQ(Snapshot(D(), client), client_before);
}

TEST_F(KubeModules, BandwidthAnnotationChangesUpdateTheClassesInPlace) {
  ASSERT_NO_FATAL_FAILURE(StartNode());
  Pod& p = AddPod(
      "shaped", {{"app", "shaped"}},
      {{"kubernetes.io/ingress-bandwidth", "10M"}, {"kubernetes.io/egress-bandwidth", "20M"}});
  ASSERT_FALSE(p.ip.empty());
  const std::string eg_leaf = Leaf(D(), p, "ingress"), in_leaf = Leaf(D(), p, "egress");
  ASSERT_FALSE(eg_leaf.empty() || in_leaf.empty())
      << D().NodeExec("tc filter show dev " + p.host_if + " ingress").out;
  EXPECT_EQ(Classes(D(), "tqos-egress")[eg_leaf].ceil, "20Mbit");
  EXPECT_EQ(Classes(D(), "tqos-ingress")[in_leaf].ceil, "10Mbit");
  const std::string eg_rate = Classes(D(), "tqos-egress")[eg_leaf].rate;
  const std::string in_rate = Classes(D(), "tqos-ingress")[in_leaf].rate;
  const PodState before = Snapshot(D(), p);
  const std::string ifb_eg = D().NodeExec("cat /sys/class/net/tqos-egress/ifindex").out;
  const std::string ifb_in = D().NodeExec("cat /sys/class/net/tqos-ingress/ifindex").out;

  Relabel(p, {{"app", "shaped"}},
          {{"kubernetes.io/ingress-bandwidth", "30M"}, {"kubernetes.io/egress-bandwidth", "40M"}});
  EXPECT_TRUE(WaitFor(
      [&] {
        return Classes(D(), "tqos-egress")[eg_leaf].ceil == "40Mbit" &&
               Classes(D(), "tqos-ingress")[in_leaf].ceil == "30Mbit";
      },
      kEnforced))
      << D().NodeExec("tc class show dev tqos-egress; tc class show dev tqos-ingress").out;
  // ceil is the pod's limit; rate, its guaranteed floor, is not the
  // annotation's business.
  EXPECT_EQ(Classes(D(), "tqos-egress")[eg_leaf].rate, eg_rate);
  EXPECT_EQ(Classes(D(), "tqos-ingress")[in_leaf].rate, in_rate);
  // In place: the same leaf classes, filters, veth and IFBs.
  EXPECT_EQ(Leaf(D(), p, "ingress"), eg_leaf);
  EXPECT_EQ(Leaf(D(), p, "egress"), in_leaf);
  EXPECT_EQ(WithoutKernelIds(Snapshot(D(), p)), WithoutKernelIds(before));
  EXPECT_EQ(D().NodeExec("cat /sys/class/net/tqos-egress/ifindex").out, ifb_eg);
  EXPECT_EQ(D().NodeExec("cat /sys/class/net/tqos-ingress/ifindex").out, ifb_in);
  EXPECT_EQ(D().NodeExec("cat /sys/class/net/" + p.host_if + "/ifindex").out, before.host_ifindex);

  // One direction changes, the other stays.
  Relabel(p, {{"app", "shaped"}},
          {{"kubernetes.io/ingress-bandwidth", "30M"}, {"kubernetes.io/egress-bandwidth", "5M"}});
  EXPECT_TRUE(
      WaitFor([&] { return Classes(D(), "tqos-egress")[eg_leaf].ceil == "5Mbit"; }, kEnforced));
  EXPECT_EQ(Classes(D(), "tqos-ingress")[in_leaf].ceil, "30Mbit");
  EXPECT_EQ(WithoutKernelIds(Snapshot(D(), p)), WithoutKernelIds(before));
}

TEST_F(KubeModules, NetworkPolicyCreateUpdateDeleteIsEnforced) {
  ASSERT_NO_FATAL_FAILURE(StartNode());
  Pod& web = AddPod("web", {{"app", "web"}});
  Pod& client = AddPod("client", {{"role", "client"}});
  ASSERT_FALSE(web.ip.empty() || client.ip.empty());
  EXPECT_TRUE(Reaches(client, web, 80));
  EXPECT_TRUE(Reaches(client, web, 81));
  EXPECT_FALSE(IngressSelected(D(), web));

  // Create: web takes nothing.
  api_.Apply(FakeApiServer::NetworkPolicy(
      "shop", "web",
      {{"podSelector", {{"matchLabels", {{"app", "web"}}}}}, {"policyTypes", {"Ingress"}}}));
  EXPECT_TRUE(WaitFor([&] { return Blocked(client, web, 80); }, kEnforced));
  EXPECT_TRUE(Blocked(client, web, 81));
  EXPECT_TRUE(IngressSelected(D(), web));

  // Update: clients on 80.
  Json allow = WebFromClients();
  allow["metadata"]["name"] = "web";
  api_.Apply(allow);
  EXPECT_TRUE(WaitFor([&] { return Reaches(client, web, 80); }, kEnforced));
  EXPECT_TRUE(Blocked(client, web, 81));

  // Delete: open again.
  ASSERT_TRUE(api_.Delete("NetworkPolicy", "shop", "web"));
  EXPECT_TRUE(WaitFor([&] { return Reaches(client, web, 81); }, kEnforced));
  EXPECT_TRUE(Reaches(client, web, 80));
  EXPECT_FALSE(IngressSelected(D(), web));
}

// Two daemons with the real secgroup module against the ECS emulator and
// one Lease: only the holder writes security-group rules; kill -9 it, the
// survivor takes the Lease once it expires, and syncs.
class KubeSecgroup : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string error;
    ASSERT_TRUE(EnforceShippedRbac(api_, &error)) << error;
  }
  void TearDown() override {
    for (auto& n : nodes_) {
      if (HasFailure()) std::cerr << "--- trellisd " << n->name() << ":\n" << n->daemon().Log();
    }
    nodes_.clear();
    if (HasFailure() && emu_) {
      std::string log = emu_->Log();
      std::cerr << "--- emulator log (tail):\n"
                << (log.size() > 6000 ? log.substr(log.size() - 6000) : log) << "\n";
    }
    emu_.reset();
    EXPECT_EQ(Forbidden(api_), "") << "requests the RBAC in deploy/ does not grant";
  }

  std::set<std::string> CloudDescriptions() {
    std::set<std::string> out;
    Json st = emu_->State();
    for (const auto& g : st.value("security_groups", Json::array())) {
      if (g["id"] != "sg-test") continue;
      // "<owner> <description>": the module marks the rules it owns.
      for (const auto& r : g["rules"]) {
        std::string d = r.value("Description", "");
        out.insert(d.substr(d.rfind(' ') + 1));
      }
    }
    return out;
  }
  std::string RuleId(const std::string& description) {
    Json st = emu_->State();
    for (const auto& g : st.value("security_groups", Json::array())) {
      if (g["id"] != "sg-test") continue;
      for (const auto& r : g["rules"]) {
        if (r.value("Description", "").ends_with(" " + description)) {
          return r.value("SecurityGroupRuleId", "");
        }
      }
    }
    return "";
  }
  // Security-group writes (Authorize*/Revoke*) the emulator took from an
  // instance since the last ResetCounts.
  int Writes(const std::string& instance) {
    Json st = emu_->State();
    int n = 0;
    if (!st["calls_by_instance"].contains(instance)) return 0;
    for (const auto& [action, count] : st["calls_by_instance"][instance].items()) {
      if (action.rfind("AuthorizeSecurityGroup", 0) == 0 ||
          action.rfind("RevokeSecurityGroup", 0) == 0) {
        n += count.get<int>();
      }
    }
    return n;
  }
  std::string Holder() {
    auto lease = api_.Get("Lease", "kube-system", "trellis-secgroup");
    return lease ? (*lease)["spec"].value("holderIdentity", "") : "";
  }

  FakeApiServer api_;
  std::vector<std::unique_ptr<KubeNode>> nodes_;
  std::unique_ptr<EcsEmulator> emu_;
};

TEST_F(KubeSecgroup, OnlyTheLeaseHolderWritesAndTheSurvivorTakesOver) {
  // One config for both nodes, as one ConfigMap; no leader in it: the Lease
  // decides. No periodic sync within the test: every write is the doing of
  // a start or of a change of leadership.
  const std::string modules =
      "  ipam: {config: {ranges: [{subnet: 10.64.0.0/24}]}}\n"
      "  qos: {enabled: false}\n"
      "  policy: {enabled: false}\n"
      "  secgroup:\n"
      "    enabled: true\n"
      "    config:\n"
      "      security_groups: [sg-test]\n"
      "      region: cn-hangzhou\n"
      "      ecs_endpoint: http://127.0.0.1:18080\n"
      "      metadata_endpoint: http://127.0.0.1:18081\n"
      "      sync_interval: 3600\n"
      "      rules:\n"
      "        - {direction: ingress, protocol: tcp, port_range: 80/80, source_cidr: "
      "10.0.0.0/8, description: web}\n"
      "        - {direction: ingress, protocol: tcp, port_range: 443/443, source_cidr: "
      "10.0.0.0/8, description: tls}\n";
  std::vector<EcsNode> instances;
  std::map<std::string, std::string> instance_of;
  for (std::string name : {"kmod-a", "kmod-b"}) {
    api_.Apply(FakeApiServer::Node(name, {"10.64.0.0/24"}));
    nodes_.push_back(std::make_unique<KubeNode>(
        &api_, name,
        KubeNodeSetup{.modules = modules,
                      .recorder = false,
                      .env = {{"ACCESS_KEY_ID", kEcsAccessKeyId},
                              {"ACCESS_KEY_SECRET", kEcsAccessKeySecret}}}));
    instance_of[name] = "i-node" + std::to_string(nodes_.size());
    instances.push_back({.id = instance_of[name], .netns = nodes_.back()->daemon().node()->name()});
  }
  Json scenario = DefaultEcsScenario(instances);
  scenario["security_groups"][0]["rules"] = Json::array();
  emu_ = std::make_unique<EcsEmulator>(scenario);
  std::string why;
  ASSERT_TRUE(emu_->Start(&why)) << why;
  for (auto& n : nodes_) ASSERT_TRUE(n->daemon().Start(&why)) << why;

  ASSERT_TRUE(WaitFor([&] { return !Holder().empty(); }, 20s));
  KubeNode& leader = Holder() == nodes_[0]->name() ? *nodes_[0] : *nodes_[1];
  KubeNode& survivor = &leader == nodes_[0].get() ? *nodes_[1] : *nodes_[0];
  ASSERT_EQ(Holder(), leader.name());
  ASSERT_TRUE(WaitFor(
      [&] {
        return CloudDescriptions() == std::set<std::string>{"web", "tls"};
      },
      30s))
      << ::testing::PrintToString(CloudDescriptions());
  EXPECT_EQ(Writes(instance_of[leader.name()]), 2);
  EXPECT_EQ(Writes(instance_of[survivor.name()]), 0) << emu_->State()["calls_by_instance"].dump();
  Json st = emu_->State();
  EXPECT_FALSE(st["calls_by_instance"].contains(instance_of[survivor.name()]))
      << "a standby makes no cloud call at all: " << st["calls_by_instance"].dump();

  // The leader dies without releasing the Lease; meanwhile someone deletes
  // a rule in the console.
  leader.daemon().Kill();
  ASSERT_TRUE(emu_->ResetCounts());
  std::string tls = RuleId("tls");
  ASSERT_FALSE(tls.empty());
  ASSERT_TRUE(emu_->Admin("DELETE", "/security_groups/sg-test/rules/" + tls).ok());
  // The survivor waits out the Lease (3 s without renewal), takes it, and
  // its first sync as the leader puts the rule back.
  EXPECT_TRUE(WaitFor([&] { return Holder() == survivor.name(); }, 30s)) << survivor.daemon().Log();
  EXPECT_TRUE(WaitFor(
      [&] {
        return CloudDescriptions() == std::set<std::string>{"web", "tls"};
      },
      30s))
      << ::testing::PrintToString(CloudDescriptions());
  EXPECT_EQ(Writes(instance_of[survivor.name()]), 1);
  EXPECT_EQ(Writes(instance_of[leader.name()]), 0);
  auto lease = api_.Get("Lease", "kube-system", "trellis-secgroup");
  ASSERT_TRUE(lease.has_value());
  EXPECT_GE((*lease)["spec"].value("leaseTransitions", 0), 1);
}

}  // namespace
}  // namespace trellis::test
