// The Kubernetes API source through live daemons and the fake API server:
// pod metadata on ADD (watch cache, direct GET, CNI-args fallback), live
// label/annotation updates, namespaces and NetworkPolicies, the Node's
// podCIDRs as ipam ranges, the per-node ConfigMap, the secgroup writer
// election across two daemons, token rotation, relist after 410, Events.
//
// Modules are the kube_recorder test plugin (it records what the host calls);
// kube_modules_test.cc does the same against the real policy, qos and
// secgroup plugins and the kernel. The fake API server enforces the RBAC of
// deploy/ (kube_rbac.h): a request it does not grant fails the test.
#include <gtest/gtest.h>

#include <set>

#include "kube_node.h"
#include "kube_rbac.h"

namespace trellis::test {
namespace {

constexpr const char* kModules =
    "  ipam: {config: {ranges: [{subnet: 10.61.0.0/24}], reuse_delay: 0}}\n"
    "  qos: {enabled: false}\n"
    "  policy: {enabled: false}\n";

// The last record of `op` for `pod`, or null.
Json Last(const fs::path& log, const std::string& op, const std::string& pod) {
  Json last;
  for (const auto& r : Records(log, op)) {
    if (r.value("pod", "") == pod) last = r;
  }
  return last;
}
// A string at a JSON pointer, "" when absent (records are read while the
// daemon writes them; a missing key is not an error).
std::string At(const Json& j, const std::string& pointer) {
  if (!j.is_object()) return "";
  Json::json_pointer p(pointer);
  return j.contains(p) && j[p].is_string() ? j[p].get<std::string>() : "";
}
size_t CountOf(const fs::path& log, const std::string& op, const std::string& pod = "") {
  size_t n = 0;
  for (const auto& r : Records(log, op)) n += pod.empty() || r.value("pod", "") == pod;
  return n;
}

class KubeSource : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string error;
    ASSERT_TRUE(EnforceShippedRbac(api_, &error)) << error;
  }
  void TearDown() override {
    EXPECT_EQ(Forbidden(api_), "") << "requests the RBAC in deploy/ does not grant";
  }
  std::unique_ptr<KubeNode> Node(const std::string& name, KubeNodeSetup setup = {}) {
    if (setup.modules.empty()) setup.modules = kModules;
    if (!api_.Get("Node", "", name)) api_.Apply(FakeApiServer::Node(name, {"10.61.0.0/24"}));
    return std::make_unique<KubeNode>(&api_, name, setup);
  }
  static void Start(KubeNode& n) {
    std::string why;
    ASSERT_TRUE(n.daemon().Start(&why)) << why;
  }
  FakeApiServer api_;
};

TEST_F(KubeSource, AddTakesLabelsAndAnnotationsFromTheWatchCache) {
  auto node = Node("node-1");
  api_.Apply(FakeApiServer::Pod("shop", "cart", "node-1", {{"app", "cart"}, {"tier", "web"}},
                                {{"kubernetes.io/ingress-bandwidth", "10M"},
                                 {"kubectl.kubernetes.io/last-applied-configuration", "{...}"}},
                                "uid-cart"));
  ASSERT_NO_FATAL_FAILURE(Start(*node));
  Netns ns("pod");
  // CNI args carry labels too (args.cni.labels): both sources merge, the
  // cluster wins where they disagree.
  Json extra = {{"args", {{"cni", {{"labels", Json::array({{{"key", "app"}, {"value", "stale"}},
                                                           {{"key", "from-cni"}, {"value", "yes"}}})}}}}}};
  auto r = node->Cni("ADD", "c-cart", ns, "shop", "cart", "uid-cart", extra);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << node->daemon().Log();
  Json up = Last(node->log(), "pod_upsert", "shop/cart");
  ASSERT_FALSE(up.is_null()) << node->daemon().Log();
  EXPECT_EQ(up["labels"], Json({{"app", "cart"}, {"tier", "web"}, {"from-cni", "yes"}}));
  EXPECT_EQ(up["uid"], "uid-cart");
  Json qos = Last(node->log(), "qos_apply", "shop/cart");
  EXPECT_EQ(qos["annotations"], Json({{"kubernetes.io/ingress-bandwidth", "10M"}}))
      << "kubectl's last-applied-configuration is not passed on";
  EXPECT_EQ(api_.Count("GET", "/api/v1/namespaces/shop/pods/cart"), 0) << "a cache hit needs no GET";
  EXPECT_EQ(node->Cni("DEL", "c-cart", ns, "shop", "cart").exit_code, 0);
}

TEST_F(KubeSource, AddGetsThePodDirectlyWhenTheWatchLags) {
  auto node = Node("node-1");
  ASSERT_NO_FATAL_FAILURE(Start(*node));
  api_.PauseWatches(true);  // kubelet may call CNI before the watch delivers the pod
  api_.Apply(FakeApiServer::Pod("shop", "fresh", "node-1", {{"app", "fresh"}}, {}, "uid-fresh"));
  Netns ns("pod");
  auto r = node->Cni("ADD", "c-fresh", ns, "shop", "fresh", "uid-fresh");
  ASSERT_EQ(r.exit_code, 0) << r.out << node->daemon().Log();
  EXPECT_EQ(Last(node->log(), "pod_upsert", "shop/fresh")["labels"], Json({{"app", "fresh"}}))
      << node->daemon().Log();
  EXPECT_EQ(api_.Count("GET", "/api/v1/namespaces/shop/pods/fresh"), 1);
  api_.PauseWatches(false);
  EXPECT_EQ(node->Cni("DEL", "c-fresh", ns, "shop", "fresh").exit_code, 0);
}

TEST_F(KubeSource, AddFallsBackToCniArgsWhenTheApiDoesNotAnswer) {
  auto node = Node("node-1");
  ASSERT_NO_FATAL_FAILURE(Start(*node));
  api_.PauseWatches(true);
  api_.Apply(FakeApiServer::Pod("shop", "stuck", "node-1", {{"app", "from-api"}}));
  api_.SetLatency("/pods/stuck", std::chrono::seconds(60));  // an API server that hangs
  Netns ns("pod");
  Json extra = {{"args", {{"cni", {{"labels", Json::array({{{"key", "app"}, {"value", "from-cni"}}})}}}}}};
  auto r = node->Cni("ADD", "c-stuck", ns, "shop", "stuck", "", extra);
  ASSERT_EQ(r.exit_code, 0) << r.out << node->daemon().Log();
  EXPECT_EQ(Last(node->log(), "pod_upsert", "shop/stuck")["labels"], Json({{"app", "from-cni"}}));
  std::string log = node->daemon().Log();
  EXPECT_NE(log.find("pod shop/stuck: no metadata from the cluster"), std::string::npos) << log;
  EXPECT_NE(log.find("using the labels and annotations of the CNI args"), std::string::npos);
  // Once the watch delivers the pod, its labels follow.
  api_.SetLatency("/pods/stuck", std::chrono::milliseconds(0));
  api_.PauseWatches(false);
  EXPECT_TRUE(WaitFor([&] {
    return Last(node->log(), "pod_upsert", "shop/stuck")["labels"] == Json({{"app", "from-api"}});
  })) << node->daemon().Log();
  EXPECT_EQ(node->Cni("DEL", "c-stuck", ns, "shop", "stuck").exit_code, 0);
}

TEST_F(KubeSource, LabelAndAnnotationChangesUpdateRunningPodsInPlace) {
  auto node = Node("node-1");
  Json pod = FakeApiServer::Pod("shop", "web", "node-1", {{"app", "web"}, {"role", "other"}},
                                {{"kubernetes.io/egress-bandwidth", "10M"}});
  pod = api_.Apply(pod);
  ASSERT_NO_FATAL_FAILURE(Start(*node));
  Netns ns("pod");
  ASSERT_EQ(node->Cni("ADD", "c-web", ns, "shop", "web").exit_code, 0) << node->daemon().Log();
  std::string host_if = Last(node->log(), "pod_upsert", "shop/web")["host_ifname"];

  // A label change: policy.pod_upsert again, with the new labels, same pod.
  pod["metadata"]["labels"]["role"] = "client";
  pod = api_.Apply(pod);
  ASSERT_TRUE(WaitFor([&] {
    return At(Last(node->log(), "pod_upsert", "shop/web"), "/labels/role") == "client";
  })) << node->daemon().Log();
  Json up = Last(node->log(), "pod_upsert", "shop/web");
  EXPECT_EQ(up["container_id"], "c-web");
  EXPECT_EQ(up["host_ifname"], host_if);

  // An annotation change: qos.apply again.
  pod["metadata"]["annotations"]["kubernetes.io/egress-bandwidth"] = "20M";
  pod = api_.Apply(pod);
  ASSERT_TRUE(WaitFor([&] {
    return At(Last(node->log(), "qos_apply", "shop/web"),
              "/annotations/kubernetes.io~1egress-bandwidth") == "20M";
  })) << node->daemon().Log();

  // A status-only change (most pod updates) calls nobody; the next label
  // change is the marker that the informer went past it.
  pod["status"]["phase"] = "Running";
  pod = api_.Apply(pod);
  pod["metadata"]["labels"]["role"] = "server";
  pod = api_.Apply(pod);
  ASSERT_TRUE(WaitFor([&] {
    return At(Last(node->log(), "pod_upsert", "shop/web"), "/labels/role") == "server";
  }));
  EXPECT_EQ(CountOf(node->log(), "pod_upsert", "shop/web"), 3u) << "ADD + two label changes";
  EXPECT_EQ(CountOf(node->log(), "qos_apply", "shop/web"), 2u) << "ADD + one annotation change";
  EXPECT_EQ(CountOf(node->log(), "pod_remove", "shop/web"), 0u) << "updates never tear down";
  EXPECT_EQ(node->Cni("DEL", "c-web", ns, "shop", "web").exit_code, 0);
}

TEST_F(KubeSource, NamespacesAndNetworkPoliciesReachThePolicyModule) {
  auto node = Node("node-1");
  api_.Apply(FakeApiServer::Namespace("shop", {{"team", "a"}}));
  api_.Apply(FakeApiServer::NetworkPolicy("shop", "deny-all", {{"podSelector", Json::object()}}));
  ASSERT_NO_FATAL_FAILURE(Start(*node));
  auto has = [&](const std::string& op, const std::function<bool(const Json&)>& pred) {
    for (const auto& r : Records(node->log(), op)) {
      if (pred(r)) return true;
    }
    return false;
  };
  EXPECT_TRUE(has("namespace_upsert",
                  [](const Json& r) { return r["name"] == "shop" && At(r, "/labels/team") == "a"; }));
  EXPECT_TRUE(has("policy_upsert", [](const Json& r) {
    return r["key"] == "shop/deny-all" && r["manifest"].is_object() &&
           r["manifest"]["spec"]["podSelector"] == Json::object();
  })) << "listed before the daemon reports ready";

  api_.Apply(FakeApiServer::Namespace("shop", {{"team", "b"}}));
  EXPECT_TRUE(WaitFor([&] {
    return has("namespace_upsert", [](const Json& r) { return At(r, "/labels/team") == "b"; });
  }));
  Json spec = {{"podSelector", {{"matchLabels", {{"app", "db"}}}}}, {"policyTypes", {"Ingress"}}};
  api_.Apply(FakeApiServer::NetworkPolicy("shop", "deny-all", spec));
  EXPECT_TRUE(WaitFor([&] {
    return has("policy_upsert", [](const Json& r) {
      return r["key"] == "shop/deny-all" &&
             At(r, "/manifest/spec/podSelector/matchLabels/app") == "db";
    });
  }));
  api_.Delete("NetworkPolicy", "shop", "deny-all");
  EXPECT_TRUE(WaitFor([&] {
    return has("policy_upsert",
               [](const Json& r) { return r["key"] == "shop/deny-all" && r["manifest"].is_null(); });
  }));
}

TEST_F(KubeSource, APolicyDeletedWhileTheDaemonWasDownIsRemoved) {
  auto node = Node("node-1");
  api_.Apply(FakeApiServer::NetworkPolicy("shop", "old", {{"podSelector", Json::object()}}));
  api_.Apply(FakeApiServer::NetworkPolicy("shop", "kept", {{"podSelector", Json::object()}}));
  ASSERT_NO_FATAL_FAILURE(Start(*node));
  node->daemon().Stop();
  api_.Delete("NetworkPolicy", "shop", "old");
  ASSERT_NO_FATAL_FAILURE(Start(*node));
  auto deleted = [&](const std::string& key) {
    for (const auto& r : Records(node->log(), "policy_upsert")) {
      if (r["key"] == key && r["manifest"].is_null()) return true;
    }
    return false;
  };
  EXPECT_TRUE(WaitFor([&] { return deleted("shop/old"); })) << node->daemon().Log();
  EXPECT_FALSE(deleted("shop/kept"));
}

TEST_F(KubeSource, RelistsAfterGoneAndResumesAfterADrop) {
  auto node = Node("node-1");
  api_.Apply(FakeApiServer::Namespace("alpha", {{"v", "1"}}));
  ASSERT_NO_FATAL_FAILURE(Start(*node));
  auto labelled = [&](const std::string& ns, const std::string& v) {
    for (const auto& r : Records(node->log(), "namespace_upsert")) {
      if (r["name"] == ns && At(r, "/labels/v") == v) return true;
    }
    return false;
  };
  ASSERT_TRUE(labelled("alpha", "1"));
  // Changes the watch never delivers, then compaction: 410, relist.
  api_.PauseWatches(true);
  api_.Apply(FakeApiServer::Namespace("alpha", {{"v", "2"}}));
  api_.Compact();
  api_.PauseWatches(false);
  EXPECT_TRUE(WaitFor([&] { return labelled("alpha", "2"); })) << node->daemon().Log();
  EXPECT_NE(node->daemon().Log().find("410 Gone"), std::string::npos);
  // A dropped connection: the watch resumes from its resourceVersion.
  int lists = api_.Count("GET", "/api/v1/namespaces", false);
  api_.DropWatches();
  api_.Apply(FakeApiServer::Namespace("alpha", {{"v", "3"}}));
  EXPECT_TRUE(WaitFor([&] { return labelled("alpha", "3"); }));
  EXPECT_EQ(api_.Count("GET", "/api/v1/namespaces", false), lists) << "no relist after a drop";
}

TEST_F(KubeSource, NodePodCidrsAreTheIpamRanges) {
  api_.Apply(FakeApiServer::Node("node-7", {"10.77.3.0/24", "fd00:77:3::/64"}));
  auto node = Node("node-7", {.modules = "  ipam: {config: {ranges: [{subnet: node}], reuse_delay: 0}}\n"
                                        "  qos: {enabled: false}\n  policy: {enabled: false}\n"});
  ASSERT_NO_FATAL_FAILURE(Start(*node));
  Netns ns("pod");
  auto r = node->Cni("ADD", "c-cidr", ns, "default", "p");
  ASSERT_EQ(r.exit_code, 0) << r.out << node->daemon().Log();
  Json ips = r.json()["ips"];
  ASSERT_EQ(ips.size(), 2u) << r.out;
  EXPECT_EQ(ips[0]["address"].get<std::string>().rfind("10.77.3.", 0), 0u) << r.out;
  EXPECT_EQ(ips[1]["address"].get<std::string>().rfind("fd00:77:3::", 0), 0u) << r.out;
  EXPECT_EQ(node->Cni("DEL", "c-cidr", ns, "default", "p").exit_code, 0);

  // The podCIDRs are remembered: a restart while the API is down keeps them.
  node->daemon().Stop();
  api_.RevokeToken("node-token");
  ASSERT_NO_FATAL_FAILURE(Start(*node));
  Netns ns2("pod");
  auto r2 = node->Cni("ADD", "c-cidr2", ns2, "default", "p2");
  ASSERT_EQ(r2.exit_code, 0) << r2.out << node->daemon().Log();
  EXPECT_EQ(r2.json()["ips"][0]["address"].get<std::string>().rfind("10.77.3.", 0), 0u) << r2.out;
  EXPECT_EQ(node->Cni("DEL", "c-cidr2", ns2, "default", "p2").exit_code, 0);
}

TEST_F(KubeSource, ANodeWithoutPodCidrRefusesTheConfigAndSaysWhy) {
  api_.Apply(FakeApiServer::Node("node-8", {}));
  auto node = Node("node-8", {.modules = "  ipam: {config: {ranges: [{subnet: node}]}}\n"
                                        "  qos: {enabled: false}\n  policy: {enabled: false}\n",
                              .kube = "  sync_timeout: 2s\n"});
  std::string why;
  EXPECT_FALSE(node->daemon().Start(&why));
  EXPECT_NE(why.find("modules.ipam.config.ranges[0].subnet"), std::string::npos) << why;
  EXPECT_NE(why.find("no podCIDR"), std::string::npos) << why;
}

TEST_F(KubeSource, ThePerNodeConfigMapIsMergedOverTheDefault) {
  api_.Apply(FakeApiServer::Node("node-2", {"10.61.0.0/24"}, {{"terway-config", "special"}}));
  api_.Apply(FakeApiServer::ConfigMap(
      "kube-system", "special",
      {{"trellis.yaml", "modules:\n  recorder:\n    config: {tag: special}\n"}}));
  auto node = Node("node-2", {.recorder_config = "tag: base, "});
  ASSERT_NO_FATAL_FAILURE(Start(*node));
  auto creates = Records(node->log(), "create");
  ASSERT_FALSE(creates.empty());
  EXPECT_EQ(creates.back()["tag"], "special") << node->daemon().Log();
  EXPECT_FALSE(creates.back()["config"]["log"].get<std::string>().empty()) << "merged, not replaced";
  // The ConfigMap changes: the module is reconfigured.
  api_.Apply(FakeApiServer::ConfigMap(
      "kube-system", "special",
      {{"trellis.yaml", "modules:\n  recorder:\n    config: {tag: special-2}\n"}}));
  EXPECT_TRUE(WaitFor([&] {
    auto r = Records(node->log(), "reconfigure");
    return !r.empty() && r.back()["tag"] == "special-2";
  })) << node->daemon().Log();
  // The label goes away: back to the default.
  api_.Apply(FakeApiServer::Node("node-2", {"10.61.0.0/24"}));
  EXPECT_TRUE(WaitFor([&] {
    auto r = Records(node->log(), "reconfigure");
    return !r.empty() && r.back()["tag"] == "base";
  })) << node->daemon().Log();
}

TEST_F(KubeSource, TwoDaemonsElectOneSecgroupWriterAndTheSurvivorTakesOver) {
  auto a = Node("node-a");
  auto b = Node("node-b");
  ASSERT_NO_FATAL_FAILURE(Start(*a));
  ASSERT_NO_FATAL_FAILURE(Start(*b));
  auto leader_now = [](KubeNode& n) {
    auto r = Records(n.log(), "set_leader");
    return !r.empty() && r.back()["leader"] == true;
  };
  ASSERT_TRUE(WaitFor([&] { return leader_now(*a) || leader_now(*b); }));
  KubeNode& first = leader_now(*a) ? *a : *b;
  KubeNode& second = &first == a.get() ? *b : *a;
  EXPECT_FALSE(leader_now(second));
  auto lease = api_.Get("Lease", "kube-system", "trellis-secgroup");
  ASSERT_TRUE(lease.has_value());
  EXPECT_EQ((*lease)["spec"]["holderIdentity"], first.name());
  int64_t transitions = (*lease)["spec"].value("leaseTransitions", 0);

  // The leader dies without releasing: the survivor waits for the Lease to
  // expire (3 s without renewal), then takes it.
  first.daemon().Kill();
  EXPECT_TRUE(WaitFor([&] { return leader_now(second); }, std::chrono::seconds(20)))
      << second.daemon().Log();
  lease = api_.Get("Lease", "kube-system", "trellis-secgroup");
  EXPECT_EQ((*lease)["spec"]["holderIdentity"], second.name());
  EXPECT_EQ((*lease)["spec"].value("leaseTransitions", 0), transitions + 1);
}

TEST_F(KubeSource, TokenRotationKeepsTheWatchesGoing) {
  auto node = Node("node-1");
  ASSERT_NO_FATAL_FAILURE(Start(*node));
  node->WriteToken("rotated-token");
  api_.AddToken("rotated-token");
  api_.RevokeToken("node-token");
  api_.DropWatches();  // every watch reconnects, with the new token
  api_.Apply(FakeApiServer::Namespace("after", {{"seen", "yes"}}));
  EXPECT_TRUE(WaitFor([&] {
    for (const auto& r : Records(node->log(), "namespace_upsert")) {
      if (r["name"] == "after") return true;
    }
    return false;
  })) << node->daemon().Log();
  auto reqs = api_.Requests();
  bool rotated = false;
  for (const auto& r : reqs) rotated = rotated || (r.watch && r.authenticated && r.status == 200);
  EXPECT_TRUE(rotated);
  EXPECT_EQ(node->daemon().Log().find("rotated-token"), std::string::npos) << "a token in the log";
}

TEST_F(KubeSource, AFailedAddIsAnEventOnThePod) {
  auto node = Node("node-1", {.recorder_config = "fail_pod: broken, "});
  api_.Apply(FakeApiServer::Pod("shop", "broken", "node-1", {}, {}, "uid-broken"));
  ASSERT_NO_FATAL_FAILURE(Start(*node));
  Netns ns("pod");
  auto r = node->Cni("ADD", "c-broken", ns, "shop", "broken", "uid-broken");
  EXPECT_NE(r.exit_code, 0);
  ASSERT_TRUE(WaitFor([&] { return !api_.List("Event", "shop").empty(); })) << node->daemon().Log();
  auto events = api_.List("Event", "shop");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0]["reason"], "NetworkPolicySetupFailed");
  EXPECT_EQ(events[0]["type"], "Warning");
  EXPECT_EQ(events[0]["involvedObject"]["name"], "broken");
  EXPECT_EQ(events[0]["involvedObject"]["uid"], "uid-broken");
  EXPECT_EQ(events[0]["source"]["host"], "node-1");
  EXPECT_NE(events[0]["message"].get<std::string>().find("refused by the test"), std::string::npos)
      << events[0].dump();
  // The runtime retries: the same failure is not posted again.
  EXPECT_NE(node->Cni("ADD", "c-broken", ns, "shop", "broken", "uid-broken").exit_code, 0);
  EXPECT_EQ(node->Cni("DEL", "c-broken", ns, "shop", "broken").exit_code, 0);
  EXPECT_EQ(api_.List("Event", "shop").size(), 1u);
}

// The RBAC of deploy/ is exactly what the daemon requests. Every test here
// runs under it (a request it does not grant fails that test); this one
// drives every kind of request the daemon makes (the watches, the direct
// pod GET, the per-node ConfigMap, the Lease from creation to release, an
// Event) and fails on any grant that none of them used.
TEST_F(KubeSource, TheShippedRbacIsExactlyWhatTheDaemonUses) {
  std::string error;
  const std::set<RbacGrant> granted = ShippedRbac(&error);
  ASSERT_FALSE(granted.empty()) << error;
  api_.Apply(FakeApiServer::Node("node-r", {"10.61.0.0/24"}, {{"terway-config", "special"}}));
  api_.Apply(FakeApiServer::ConfigMap(
      "kube-system", "special",
      {{"trellis.yaml", "modules:\n  recorder:\n    config: {tag: special}\n"}}));
  api_.Apply(FakeApiServer::Pod("shop", "broken", "node-r", {}, {}, "uid-broken"));
  auto node = Node("node-r", {.recorder_config = "fail_pod: broken, "});
  ASSERT_NO_FATAL_FAILURE(Start(*node));
  auto creates = Records(node->log(), "create");
  ASSERT_FALSE(creates.empty());
  EXPECT_EQ(creates.back()["tag"], "special") << "the per-node ConfigMap was read";
  // The Lease (kube_recorder is a secgroup module, so the daemon campaigns):
  // read, created, renewed.
  const std::string leases = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases";
  EXPECT_TRUE(WaitFor([&] { return api_.Count("PUT", leases + "/trellis-secgroup") > 0; }))
      << node->daemon().Log();
  // A pod the watch has not delivered yet: one direct GET.
  api_.PauseWatches(true);
  api_.Apply(FakeApiServer::Pod("shop", "fresh", "node-r", {{"app", "fresh"}}));
  Netns ns("pod");
  auto r = node->Cni("ADD", "c-fresh", ns, "shop", "fresh");
  EXPECT_EQ(r.exit_code, 0) << r.out << node->daemon().Log();
  api_.PauseWatches(false);
  EXPECT_EQ(node->Cni("DEL", "c-fresh", ns, "shop", "fresh").exit_code, 0);
  // A failed ADD: an Event on the pod.
  Netns ns2("pod");
  EXPECT_NE(node->Cni("ADD", "c-broken", ns2, "shop", "broken", "uid-broken").exit_code, 0);
  EXPECT_TRUE(WaitFor([&] { return !api_.List("Event", "shop").empty(); }));
  EXPECT_EQ(node->Cni("DEL", "c-broken", ns2, "shop", "broken").exit_code, 0);
  // A graceful stop hands the Lease over.
  node->daemon().Stop();

  std::set<RbacGrant> used;
  for (const auto& req : api_.Requests()) {
    if (!req.authenticated || !req.access) continue;
    if (const RbacGrant* g = Allowing(granted, *req.access)) used.insert(*g);
  }
  std::string unused;
  for (const auto& g : granted) {
    if (!used.contains(g)) unused += "  " + g.str() + "\n";
  }
  EXPECT_EQ(unused, "") << "deploy/ grants what the daemon never requests";
  // TearDown() checks the other direction: nothing was refused.
}

}  // namespace
}  // namespace trellis::test
