// The kubernetes: section, {subnet: node} ranges, per-node ConfigMap merging,
// kubeconfig / in-cluster parsing and the client-side rate limit.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/config.h"
#include "core/kube/client.h"
#include "core/kube/connection.h"
#include "core/kube/rate_limiter.h"

namespace trellis {
namespace {

namespace fs = std::filesystem;

class TmpDir {
 public:
  TmpDir() {
    char t[] = "/tmp/trellis-kube-unit.XXXXXX";
    path_ = mkdtemp(t);
  }
  ~TmpDir() { fs::remove_all(path_); }
  fs::path Write(const std::string& name, const std::string& text) const {
    fs::path p = path_ / name;
    std::ofstream(p) << text;
    return p;
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

TEST(KubernetesSection, AbsentMeansOff) {
  auto cfg = ParseNodeConfig("modules: {}\n", "t");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_FALSE(cfg->kubernetes.enabled);
}

TEST(KubernetesSection, ParsesEveryKey) {
  auto cfg = ParseNodeConfig(R"(
kubernetes:
  kubeconfig: /etc/k.yaml
  context: ctx
  node_name: n1
  namespace: trellis-system
  kube_client_qps: 50
  kube_client_burst: 80
  resync_period: 2m
  request_timeout: 5s
  pod_get_timeout: 250ms
  sync_timeout: 3s
  node_config_label: trellis-config
  events: false
  leader_election:
    lease_name: sg-writer
    lease_duration: 6s
    renew_deadline: 4s
    retry_period: 1s
)", "t");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  const auto& k = cfg->kubernetes;
  EXPECT_TRUE(k.enabled);
  EXPECT_EQ(k.kubeconfig, "/etc/k.yaml");
  EXPECT_EQ(k.context, "ctx");
  EXPECT_EQ(k.node_name, "n1");
  EXPECT_EQ(k.config_namespace, "trellis-system");
  EXPECT_EQ(k.qps, 50);
  EXPECT_EQ(k.burst, 80u);
  EXPECT_EQ(k.resync_period_ms, 120000);
  EXPECT_EQ(k.request_timeout_ms, 5000);
  EXPECT_EQ(k.pod_get_timeout_ms, 250);
  EXPECT_EQ(k.sync_timeout_ms, 3000);
  EXPECT_EQ(k.node_config_label, "trellis-config");
  EXPECT_FALSE(k.events);
  EXPECT_EQ(k.leader_election.lease_name, "sg-writer");
  EXPECT_EQ(k.leader_election.lease_duration_ms, 6000);
  EXPECT_EQ(k.leader_election.renew_deadline_ms, 4000);
  EXPECT_EQ(k.leader_election.retry_period_ms, 1000);
}

TEST(KubernetesSection, ErrorsNameTheKey) {
  struct Case {
    const char* yaml;
    const char* key;
  } cases[] = {
      {"kubernetes: {qps: -1}", "kubernetes.qps"},
      {"kubernetes: {burst: 0}", "kubernetes.burst"},
      {"kubernetes: {qps: 5, kube_client_qps: 6}", "kubernetes.qps"},
      {"kubernetes: {resync_period: soon}", "kubernetes.resync_period"},
      {"kubernetes: {pod_get_timeout: 1ms}", "kubernetes.pod_get_timeout"},
      {"kubernetes: {leader_election: {lease_duration: 1500ms}}",
       "kubernetes.leader_election.lease_duration"},
      {"kubernetes: {leader_election: {lease_duration: 5s, renew_deadline: 5s}}",
       "kubernetes.leader_election.renew_deadline"},
      {"kubernetes: {leader_election: {lease_name: Not_A_Name}}",
       "kubernetes.leader_election.lease_name"},
      {"kubernetes: {wat: 1}", "kubernetes.wat"},
      {"kubernetes: [1]", "kubernetes"},
  };
  for (const auto& c : cases) {
    auto cfg = ParseNodeConfig(c.yaml, "t");
    ASSERT_FALSE(cfg.ok()) << c.yaml;
    EXPECT_NE(cfg.status().message().find(c.key), std::string::npos)
        << c.yaml << " -> " << cfg.status().message();
  }
}

TEST(KubernetesSection, TerwayClientLimitsMoveToTheHost) {
  std::vector<std::string> warnings;
  auto doc = TerwayToNodeConfig(
      {{"eni_conf", R"({"version":"1","region":"cn-hangzhou","kube_client_qps":40,"kube_client_burst":60})"}},
      &warnings);
  ASSERT_TRUE(doc.ok()) << doc.status();
  EXPECT_EQ((*doc)["kubernetes"]["qps"], 40);
  EXPECT_EQ((*doc)["kubernetes"]["burst"], 60);
  EXPECT_FALSE((*doc)["modules"]["eni"]["config"].contains("kube_client_qps"));
  auto cfg = NodeConfigFromJson(*doc, "t");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->kubernetes.qps, 40);
  EXPECT_EQ(cfg->kubernetes.burst, 60u);
}

TEST(NodeRanges, ExpandToThePodCidrs) {
  Json doc = {{"modules",
               {{"ipam",
                 {{"config",
                   {{"ranges", Json::array({{{"subnet", "node"}}, {{"subnet", "10.9.0.0/24"}}})}}}}}}}};
  ASSERT_TRUE(UsesNodeRanges(doc));
  ASSERT_TRUE(ResolveNodeRanges(&doc, std::vector<std::string>{"10.244.7.0/24", "fd00:7::/64"}, "")
                  .ok());
  EXPECT_EQ(doc["modules"]["ipam"]["config"]["ranges"],
            Json::parse(R"([{"subnet":"10.244.7.0/24"},{"subnet":"fd00:7::/64"},{"subnet":"10.9.0.0/24"}])"));
  EXPECT_FALSE(UsesNodeRanges(doc));
}

TEST(NodeRanges, FamilyPicksOne) {
  Json doc = Json::parse(R"({"modules":{"ipam":{"config":{"ranges":[{"subnet":"node","family":6}]}}}})");
  ASSERT_TRUE(ResolveNodeRanges(&doc, std::vector<std::string>{"10.244.7.0/24", "fd00:7::/64"}, "")
                  .ok());
  EXPECT_EQ(doc["modules"]["ipam"]["config"]["ranges"], Json::parse(R"([{"subnet":"fd00:7::/64"}])"));
}

TEST(NodeRanges, ErrorsSayWhatIsMissing) {
  Json doc = Json::parse(R"({"modules":{"ipam":{"config":{"ranges":[{"subnet":"node"}]}}}})");
  Json copy = doc;
  Status s = ResolveNodeRanges(&copy, std::nullopt, "the node config has no kubernetes section");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("modules.ipam.config.ranges[0].subnet"), std::string::npos) << s;
  EXPECT_NE(s.message().find("no kubernetes section"), std::string::npos) << s;

  copy = doc;
  s = ResolveNodeRanges(&copy, std::vector<std::string>{}, "");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("no podCIDR"), std::string::npos) << s;

  copy = Json::parse(R"({"modules":{"ipam":{"config":{"ranges":[{"subnet":"node","family":6}]}}}})");
  s = ResolveNodeRanges(&copy, std::vector<std::string>{"10.1.0.0/24"}, "");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("IPv6"), std::string::npos) << s;

  copy = Json::parse(R"({"modules":{"ipam":{"config":{"ranges":[{"subnet":"node","gateway":"10.1.0.1"}]}}}})");
  s = ResolveNodeRanges(&copy, std::vector<std::string>{"10.1.0.0/24"}, "");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("ranges[0].gateway"), std::string::npos) << s;
}

TEST(PerNodeConfigMap, MergesOverTheDefault) {
  std::vector<std::string> warnings;
  auto base = ConfigMapDataToDocument(
      {{"eni_conf", R"({"region":"cn-hangzhou","vswitches":["vsw-a"],"eni_count_max":5})"},
       {"trellis.yaml", "log_level: info\nmodules: {qos: {enabled: true}}\n"}},
      "kube-system/trellis", &warnings);
  ASSERT_TRUE(base.ok()) << base.status();
  auto over = ConfigMapDataToDocument({{"eni_conf", R"({"vswitches":["vsw-zone-b"]})"},
                                       {"trellis.yaml", "modules: {qos: null}\n"}},
                                      "kube-system/node-b", &warnings, /*as_patch=*/true);
  ASSERT_TRUE(over.ok()) << over.status();
  Json doc = *base;
  doc.merge_patch(*over);
  // RFC 7396: objects merge key by key, arrays are replaced, null deletes.
  EXPECT_EQ(doc["modules"]["eni"]["config"]["vswitches"], Json::array({"vsw-zone-b"}));
  EXPECT_EQ(doc["modules"]["eni"]["config"]["region"], "cn-hangzhou");
  EXPECT_EQ(doc["modules"]["eni"]["config"]["eni_count_max"], 5);
  EXPECT_FALSE(doc["modules"].contains("qos"));
  EXPECT_EQ(doc["log_level"], "info");

  auto none = ConfigMapDataToDocument({{"other", "x"}}, "kube-system/empty", &warnings);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  auto bad = ConfigMapDataToDocument({{"eni_conf", "{nope"}}, "kube-system/bad", &warnings);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("kube-system/bad"), std::string::npos) << bad.status();
  EXPECT_NE(bad.status().message().find("eni_conf"), std::string::npos) << bad.status();
}

TEST(Durations, Forms) {
  EXPECT_EQ(*ParseDurationMs(Json(3), "k"), 3000);
  EXPECT_EQ(*ParseDurationMs(Json("250ms"), "k"), 250);
  EXPECT_EQ(*ParseDurationMs(Json("1.5s"), "k"), 1500);
  EXPECT_EQ(*ParseDurationMs(Json("2m"), "k"), 120000);
  EXPECT_EQ(*ParseDurationMs(Json("1h"), "k"), 3600000);
  EXPECT_FALSE(ParseDurationMs(Json("-1s"), "k").ok());
  EXPECT_FALSE(ParseDurationMs(Json("5 s"), "k").ok());
}

// ------------------------------------------------------------ connection --

TEST(Kubeconfig, TokenFileAndInlineCa) {
  TmpDir d;
  d.Write("token", "abc\n");
  // "-----BEGIN..." base64: the client only decodes it here.
  auto path = d.Write("kubeconfig", R"(
apiVersion: v1
kind: Config
current-context: b
clusters:
- name: one
  cluster: {server: "https://10.0.0.1:6443", certificate-authority-data: aGVsbG8=}
- name: two
  cluster: {server: "https://[fd00::1]:8443/prefix/", insecure-skip-tls-verify: true}
users:
- name: u
  user: {tokenFile: token}
contexts:
- name: a
  context: {cluster: one, user: u, namespace: ns-a}
- name: b
  context: {cluster: two, user: u}
)");
  auto c = kube::LoadKubeconfig(path, "");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->host, "fd00::1");
  EXPECT_EQ(c->port, 8443);
  EXPECT_EQ(c->base_path, "/prefix");
  EXPECT_TRUE(c->insecure_skip_verify);
  EXPECT_EQ(c->token_file, (d.path() / "token").string());
  EXPECT_EQ(c->ServerUrl(), "https://[fd00::1]:8443/prefix");

  auto a = kube::LoadKubeconfig(path, "a");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->host, "10.0.0.1");
  EXPECT_EQ(a->ca_pem, "hello");
  EXPECT_EQ(a->default_namespace, "ns-a");

  auto missing = kube::LoadKubeconfig(path, "nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("no context named 'nope'"), std::string::npos);
}

TEST(Kubeconfig, RefusesWhatItCannotDo) {
  TmpDir d;
  auto exec = d.Write("k1", R"(
current-context: c
clusters: [{name: x, cluster: {server: "https://1.2.3.4"}}]
users: [{name: u, user: {exec: {command: aws}}}]
contexts: [{name: c, context: {cluster: x, user: u}}]
)");
  auto r = kube::LoadKubeconfig(exec, "");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("exec"), std::string::npos) << r.status();

  auto http = d.Write("k2", R"(
current-context: c
clusters: [{name: x, cluster: {server: "http://1.2.3.4:8080"}}]
users: [{name: u, user: {token: secret-value}}]
contexts: [{name: c, context: {cluster: x, user: u}}]
)");
  r = kube::LoadKubeconfig(http, "");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("plain http"), std::string::npos) << r.status();
  EXPECT_EQ(r.status().message().find("secret-value"), std::string::npos) << "token leaked";
}

TEST(InCluster, ReadsTheServiceAccount) {
  TmpDir d;
  d.Write("token", "tok\n");
  d.Write("ca.crt", "CA");
  d.Write("namespace", "kube-system\n");
  auto c = kube::InClusterConnection(d.path(), {{"KUBERNETES_SERVICE_HOST", "10.96.0.1"},
                                                {"KUBERNETES_SERVICE_PORT", "443"}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->ServerUrl(), "https://10.96.0.1:443");
  EXPECT_EQ(c->token_file, (d.path() / "token").string());
  EXPECT_EQ(c->ca_pem, "CA");
  EXPECT_EQ(c->default_namespace, "kube-system");

  auto v6 = kube::InClusterConnection(d.path(), {{"KUBERNETES_SERVICE_HOST", "fd00::1"},
                                                 {"KUBERNETES_SERVICE_PORT", "6443"}});
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ(v6->host, "fd00::1");

  auto no_env = kube::InClusterConnection(d.path(), {});
  ASSERT_FALSE(no_env.ok());
  EXPECT_NE(no_env.status().message().find("KUBERNETES_SERVICE_HOST"), std::string::npos);
  fs::remove(d.path() / "token");
  auto no_token = kube::InClusterConnection(d.path(), {{"KUBERNETES_SERVICE_HOST", "10.96.0.1"},
                                                       {"KUBERNETES_SERVICE_PORT", "443"}});
  ASSERT_FALSE(no_token.ok());
  EXPECT_NE(no_token.status().message().find("token"), std::string::npos);
}

// ------------------------------------------------------------ rate limit --

TEST(TokenBucket, BurstThenQps) {
  using Clock = kube::TokenBucket::Clock;
  Clock::time_point now{};
  kube::TokenBucket b(10, 3, [&] { return now; });
  EXPECT_TRUE(b.TryAcquire());
  EXPECT_TRUE(b.TryAcquire());
  EXPECT_TRUE(b.TryAcquire());
  EXPECT_FALSE(b.TryAcquire());  // the burst is spent
  EXPECT_EQ(std::chrono::duration_cast<std::chrono::milliseconds>(b.Wait()).count(), 100);
  now += std::chrono::milliseconds(99);
  EXPECT_FALSE(b.TryAcquire());
  now += std::chrono::milliseconds(1);
  EXPECT_TRUE(b.TryAcquire());   // 10 qps: one token per 100 ms
  now += std::chrono::seconds(10);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(b.TryAcquire()) << i;  // never more than the burst
  EXPECT_FALSE(b.TryAcquire());
  // A caller whose deadline comes before the next token is refused at once,
  // and takes nothing.
  EXPECT_FALSE(b.Acquire(now + std::chrono::milliseconds(50)));
  now += std::chrono::milliseconds(100);
  EXPECT_TRUE(b.TryAcquire());
}

TEST(Http, StatusMapping) {
  auto body = [](const char* reason, const char* msg) {
    return Json{{"kind", "Status"}, {"reason", reason}, {"message", msg}}.dump();
  };
  EXPECT_EQ(kube::HttpStatus(404, "GET x", body("NotFound", "gone")).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(kube::HttpStatus(409, "PUT x", body("Conflict", "modified")).code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ(kube::HttpStatus(409, "POST x", body("AlreadyExists", "exists")).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(kube::IsGone(kube::HttpStatus(410, "WATCH x", body("Expired", "too old"))));
  EXPECT_EQ(kube::HttpStatus(503, "GET x", "").code(), absl::StatusCode::kUnavailable);
  Status s = kube::HttpStatus(403, "LIST /api/v1/pods", body("Forbidden", "pods is forbidden"));
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(s.message().find("LIST /api/v1/pods: HTTP 403 Forbidden: pods is forbidden"),
            std::string::npos)
      << s;
  EXPECT_EQ(kube::WithQuery("/api/v1/pods", {{"fieldSelector", "spec.nodeName=n-1"}, {"x", ""}}),
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dn-1");
}

}  // namespace
}  // namespace trellis
