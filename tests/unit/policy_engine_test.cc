// The policy plugin's engine without a kernel: parsing and its error
// messages, range normalisation, selector semantics, the compiled nft picture
// (incremental updates equal a fresh build) and explain.
#include <gtest/gtest.h>

#include <random>

#include "engine.h"
#include "model.h"
#include "nft.h"
#include "ranges.h"

namespace trellis::policy {
namespace {

Json Yaml(const std::string& s) { return YamlToJson(s); }

Policy Parse(const std::string& yaml, const std::string& key = "k") {
  Json j = Yaml(yaml);
  Policy p = ParseNetworkPolicy(j);
  Stamp(&p, key, "test", j);
  return p;
}

std::string ParseError(const std::string& yaml) {
  try {
    ParseNetworkPolicy(Yaml(yaml));
  } catch (const trellis::policy::ParseError& e) {
    return e.what();
  }
  return "";
}

const char* kHead =
    "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\n";

TEST(PolicyRanges, CidrsExceptAndMerge) {
  std::string why;
  auto r = ParseCidr("10.1.2.3/24", &why);
  ASSERT_TRUE(r);
  EXPECT_EQ(FormatRange(*r), "10.1.2.0-10.1.2.255");
  EXPECT_FALSE(ParseCidr("10.0.0.0/33", &why));
  EXPECT_NE(why.find("prefix must be 0-32"), std::string::npos) << why;
  EXPECT_FALSE(ParseCidr("10.0.0.0", &why));
  EXPECT_FALSE(ParseCidr("nope/8", &why));
  auto v6 = ParseCidr("::/0", &why);
  ASSERT_TRUE(v6);
  EXPECT_EQ(FormatRange(*v6), "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
  auto rest = Subtract(*ParseCidr("10.0.0.0/24", nullptr),
                       {*ParseCidr("10.0.0.0/26", nullptr), *ParseCidr("10.0.0.128/25", nullptr)});
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(FormatRange(rest[0]), "10.0.0.64-10.0.0.127");
  EXPECT_TRUE(
      Subtract(*ParseCidr("10.0.0.0/24", nullptr), {*ParseCidr("10.0.0.0/16", nullptr)}).empty());
  auto merged = MergeRanges(
      {*ParseIp("10.0.0.2"), *ParseIp("10.0.0.1"), *ParseIp("10.0.0.4"), *ParseIp("fd00::1")});
  ASSERT_EQ(merged.size(), 3u);
  EXPECT_EQ(FormatRange(merged[0]), "10.0.0.1-10.0.0.2");
  EXPECT_EQ(FormatRange(merged[1]), "10.0.0.4");
  // The full IPv6 range survives the arithmetic (hi + 1 would overflow).
  auto full6 = Subtract(FullRange(6), {*ParseCidr("fd00::/8", nullptr)});
  ASSERT_EQ(full6.size(), 2u);
  EXPECT_EQ(full6[1].hi, FullRange(6).hi);
}

// Property: the normalised boxes are disjoint and cover exactly the points of
// the input.
TEST(PolicyRanges, NormalizedBoxesAreDisjointAndExact) {
  std::mt19937 rng(7);
  for (int round = 0; round < 200; ++round) {
    std::vector<Box> in;
    int n = 1 + rng() % 8;
    for (int i = 0; i < n; ++i) {
      u128 lo = rng() % 40, hi = lo + rng() % 10;
      uint16_t plo = rng() % 20, phi = plo + rng() % 6;
      in.push_back({IpRange{4, lo, hi}, uint8_t(rng() % 2 ? kTcp : kUdp), {plo, phi}});
    }
    auto out = NormalizeBoxes(in);
    for (size_t i = 0; i < out.size(); ++i) {
      for (size_t k = i + 1; k < out.size(); ++k) {
        const Box &a = out[i], &b = out[k];
        bool overlap = a.proto == b.proto && a.addr.lo <= b.addr.hi && b.addr.lo <= a.addr.hi &&
                       a.ports.lo <= b.ports.hi && b.ports.lo <= a.ports.hi;
        ASSERT_FALSE(overlap) << "round " << round;
      }
    }
    for (u128 ip = 0; ip < 52; ++ip) {
      for (uint8_t proto : {kTcp, kUdp}) {
        for (uint16_t port = 0; port < 28; ++port) {
          auto covers = [&](const std::vector<Box>& v) {
            for (const auto& b : v) {
              if (b.proto == proto && b.addr.lo <= ip && ip <= b.addr.hi && b.ports.lo <= port &&
                  port <= b.ports.hi)
                return true;
            }
            return false;
          };
          ASSERT_EQ(covers(in), covers(out)) << "round " << round;
        }
      }
    }
  }
}

TEST(PolicyModel, DefaultsAndSemantics) {
  Policy p = Parse(std::string(kHead) + "spec:\n  podSelector: {}\n  egress:\n  - {}\n");
  EXPECT_TRUE(p.ingress);
  EXPECT_TRUE(p.egress);  // an egress section turns Egress on
  EXPECT_TRUE(p.ingress_rules.empty());
  Policy q = Parse(std::string(kHead) + "spec:\n  podSelector: {}\n  egress: []\n");
  EXPECT_FALSE(q.egress);
  Policy r = Parse(std::string(kHead) + "spec:\n  podSelector: {}\n  policyTypes: [Egress]\n");
  EXPECT_FALSE(r.ingress);
  EXPECT_TRUE(r.egress);
  LabelSelector s = ParseSelector(
      Yaml("{matchLabels: {a: '1'}, matchExpressions: [{key: b, operator: NotIn, values: [x]}, "
           "{key: c, operator: Exists}, {key: d, operator: DoesNotExist}]}"),
      "s");
  EXPECT_TRUE(s.Matches({{"a", "1"}, {"c", ""}}));
  EXPECT_TRUE(s.Matches({{"a", "1"}, {"b", "y"}, {"c", "z"}}));
  EXPECT_FALSE(s.Matches({{"a", "1"}, {"b", "x"}, {"c", "z"}}));
  EXPECT_FALSE(s.Matches({{"a", "1"}, {"c", "z"}, {"d", "z"}}));
  EXPECT_FALSE(s.Matches({{"a", "2"}, {"c", "z"}}));
  EXPECT_TRUE(LabelSelector().Matches({}));
  // Plain YAML scalars: 80 is a number, "80" stays a string, yes is a string.
  Json j = Yaml("a: 80\nb: '80'\nc: yes\nd: true\ne: ~\n");
  EXPECT_TRUE(j["a"].is_number_integer());
  EXPECT_TRUE(j["b"].is_string());
  EXPECT_EQ(j["c"], "yes");
  EXPECT_EQ(j["d"], true);
  EXPECT_TRUE(j["e"].is_null());
}

TEST(PolicyModel, ErrorsNameTheField) {
  auto spec = [](const std::string& s) {
    return std::string(kHead) + "spec:\n  podSelector: {}\n" + s;
  };
  EXPECT_EQ(ParseError(spec("  ingress:\n  - ports: [{port: 70000}]\n")),
            "spec.ingress[0].ports[0].port: 70000 is out of range 1-65535");
  EXPECT_EQ(
      ParseError(spec("  ingress:\n  - ports: [{protocol: ICMP}]\n")),
      "spec.ingress[0].ports[0].protocol: unknown protocol 'ICMP' (expected TCP, UDP or SCTP)");
  EXPECT_NE(ParseError(spec("  egress:\n  - to: [{ipBlock: {cidr: 10.0.0.0/33}}]\n"))
                .find("spec.egress[0].to[0].ipBlock.cidr: '10.0.0.0/33' is not a CIDR"),
            std::string::npos);
  EXPECT_NE(
      ParseError(
          spec("  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}}]\n"))
          .find("spec.ingress[0].from[0].ipBlock.except[0]: '11.0.0.0/16' must be a strict subset"),
      std::string::npos);
  EXPECT_NE(
      ParseError(spec("  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]\n"))
          .find("may not be combined"),
      std::string::npos);
  EXPECT_EQ(ParseError(spec("  ingress:\n  - ports: [{endPort: 90}]\n")),
            "spec.ingress[0].ports[0].endPort: needs a numeric port");
  EXPECT_EQ(ParseError(spec("  ingress:\n  - ports: [{port: 90, endPort: 80}]\n")),
            "spec.ingress[0].ports[0].endPort: 80 is below port 90");
  EXPECT_EQ(
      ParseError(spec("  ingress:\n  - ports: [{port: Not_A_Name}]\n")),
      "spec.ingress[0].ports[0].port: 'Not_A_Name' is neither a port number nor a valid port name");
  EXPECT_EQ(
      ParseError(spec(
          "  ingress:\n  - from: [{podSelector: {matchExpressions: [{key: a, operator: In}]}}]\n")),
      "spec.ingress[0].from[0].podSelector.matchExpressions[0].values: must not be empty for "
      "operator In");
  EXPECT_EQ(ParseError(spec("  policyTypes: [Sideways]\n")),
            "spec.policyTypes[0]: 'Sideways' is not Ingress or Egress");
  EXPECT_EQ(ParseError("apiVersion: v1\nkind: NetworkPolicy\n"),
            "apiVersion: 'v1' is not networking.k8s.io/v1");
}

TEST(PolicyModel, FilesKeepTheValidRest) {
  std::string good = std::string(kHead) + "spec: {podSelector: {}}\n";
  std::string file = "# comment\n" + good + "---\n" + good + "  bogus: [\n" +
                     "---\n\n--- # empty\n" + "apiVersion: v1\nkind: List\nitems:\n- " +
                     "{apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {name: "
                     "l1}, spec: {podSelector: {}}}\n" +
                     "- {apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {name: "
                     "l2}, spec: {podSelector: {}, ingress: [{ports: [{port: 0}]}]}}\n";
  auto docs = ParsePolicyFile("/etc/p/a.yaml", file);
  ASSERT_EQ(docs.size(), 4u);
  EXPECT_TRUE(docs[0].policy);
  EXPECT_EQ(docs[0].policy->key, "file:/etc/p/a.yaml#1");
  EXPECT_FALSE(docs[1].policy);
  EXPECT_NE(docs[1].error.find("/etc/p/a.yaml: document 2 (line 7): malformed YAML: line 11:"),
            std::string::npos)
      << docs[1].error;
  EXPECT_TRUE(docs[2].policy);
  EXPECT_EQ(docs[2].policy->ns, "default");
  EXPECT_FALSE(docs[3].policy);
  EXPECT_NE(docs[3].error.find("document 3 (line 15) items[1] (default/l2): "
                               "spec.ingress[0].ports[0].port: 0 is out of range"),
            std::string::npos)
      << docs[3].error;
}

TEST(PolicyModel, TerwayFormats) {
  Json np = Json::parse(R"({"default_policy": "drop", "policies": [{"name": "allow-internal",
      "selector": {"namespace": "production"}, "ingress": [{"from": [{"namespaceSelector":
      {"matchLabels": {"name": "frontend"}}}], "ports": [{"protocol": "TCP", "port": 80}]}]}]})");
  auto ps = ParseTerwayNetworkPolicy(np);
  ASSERT_EQ(ps.size(), 2u);
  EXPECT_TRUE(ps[0].cluster_wide);
  EXPECT_TRUE(ps[0].ingress_rules.empty());
  EXPECT_EQ(ps[1].DisplayName(), "production/allow-internal");
  EXPECT_EQ(ps[1].ingress_rules[0].ports[0].ToString(), "80/TCP");
  try {
    np["policies"][0]["ingress"][0]["ports"][0]["port"] = 70000;
    ParseTerwayNetworkPolicy(np);
    ADD_FAILURE();
  } catch (const trellis::policy::ParseError& e) {
    EXPECT_STREQ(e.what(),
                 "terway_network_policy.policies[0].ingress[0].ports[0].port: 70000 is out of "
                 "range 1-65535");
  }
  auto iso = ParseNetworkIsolation(Json::parse(
      R"({"enable": true, "default_policy": "drop", "allowed_cidrs": ["10.0.0.0/8", "172.16.0.0/12"]})"));
  ASSERT_EQ(iso.size(), 1u);
  EXPECT_TRUE(iso[0].ingress && iso[0].egress);
  EXPECT_EQ(iso[0].egress_rules[0].peers.size(), 2u);
  EXPECT_TRUE(ParseNetworkIsolation(Json::parse(R"({"enable": false})")).empty());
  EXPECT_THROW(ParseNetworkIsolation(Json::parse(R"({"enable": true, "allowed_cidrs": ["10/8"]})")),
               trellis::policy::ParseError);
}

PodIdentity Pod(const std::string& ns, const std::string& name, const std::string& ip,
                Labels labels, std::vector<NamedPort> ports = {}) {
  PodIdentity p;
  p.key = ns + "-" + name + "/eth0";
  p.ns = ns;
  p.name = name;
  p.host_ifname = "tr" + Hex(Fnv64(p.key), 12);
  p.labels = std::move(labels);
  p.addresses = {*ParseIp(ip)};
  p.ports = std::move(ports);
  return p;
}

std::vector<Policy> SamplePolicies() {
  return {
      Parse(std::string(kHead) + "spec:\n  podSelector: {matchLabels: {app: web}}\n  ingress:\n"
                                 "  - from: [{podSelector: {matchLabels: {app: client}}}, "
                                 "{ipBlock: {cidr: 10.9.0.0/16, except: [10.9.1.0/24]}}]\n"
                                 "    ports: [{port: http}, {port: 9000, endPort: 9010}]\n",
            "p1"),
      Parse("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: e, namespace: "
            "y}\n"
            "spec:\n  podSelector: {}\n  egress:\n  - to: [{namespaceSelector: {matchLabels: "
            "{team: a}}}]\n"
            "    ports: [{port: http}]\n  - to: [{ipBlock: {cidr: 0.0.0.0/0}}]\n    ports: "
            "[{protocol: UDP, port: 53}]\n",
            "p2"),
  };
}

TEST(PolicyEngine, IncrementalUpdatesEqualAFreshBuild) {
  std::vector<PodIdentity> pods;
  std::mt19937 rng(11);
  const char* apps[] = {"web", "client", "db"};
  for (int i = 0; i < 30; ++i) {
    std::string ns = i % 3 == 0 ? "x" : i % 3 == 1 ? "y" : "z";
    pods.push_back(Pod(ns, "p" + std::to_string(i), "10.0.0." + std::to_string(i + 1),
                       {{"app", apps[rng() % 3]}}, {{"http", kTcp, uint16_t(8000 + rng() % 3)}}));
  }
  std::map<std::string, Labels> nss = {{"x", {{"team", "a"}}}, {"y", {{"team", "b"}}}};
  Engine inc;
  inc.SetNamespaces(nss);
  inc.SetPolicies(SamplePolicies());
  std::set<std::string> present;
  for (int step = 0; step < 300; ++step) {
    const auto& p = pods[rng() % pods.size()];
    if (rng() % 3 == 0) {
      inc.RemovePod(p.key);
      present.erase(p.key);
    } else {
      PodIdentity q = p;
      q.labels["app"] = apps[rng() % 3];
      inc.UpsertPod(q);
      pods[&p - pods.data()] = q;
      present.insert(q.key);
    }
    if (step == 150) inc.SetNamespaces({{"x", {{"team", "b"}}}, {"z", {{"team", "a"}}}});
    if (step % 10 == 0) inc.Commit();
  }
  inc.Commit();
  Engine fresh;
  fresh.SetNamespaces({{"x", {{"team", "b"}}}, {"z", {{"team", "a"}}}});
  for (const auto& p : pods) {
    if (present.contains(p.key)) fresh.UpsertPod(p);
  }
  fresh.SetPolicies(SamplePolicies());
  fresh.Commit();
  EXPECT_EQ(inc.desired().sets, fresh.desired().sets);
  EXPECT_EQ(inc.desired().chains, fresh.desired().chains);
  EXPECT_EQ(inc.desired().counters, fresh.desired().counters);
}

TEST(PolicyEngine, PodChurnChangesElementsNotRules) {
  Engine e;
  e.SetPolicies(SamplePolicies());
  e.UpsertPod(Pod("x", "web1", "10.0.0.1", {{"app", "web"}}, {{"http", kTcp, 8080}}));
  e.UpsertPod(Pod("x", "client1", "10.0.0.2", {{"app", "client"}}));
  e.Commit();
  // Another replica of each: same programs, so only set elements move.
  e.UpsertPod(Pod("x", "web2", "10.0.0.3", {{"app", "web"}}, {{"http", kTcp, 8080}}));
  e.UpsertPod(Pod("x", "client2", "10.0.0.5", {{"app", "client"}}));
  Touched t = e.Commit();
  EXPECT_TRUE(t.chains.empty()) << *t.chains.begin();
  EXPECT_FALSE(t.sets.empty());
  std::string group = e.GroupOf("x-web1/eth0", false);
  ASSERT_FALSE(group.empty());
  EXPECT_EQ(group, e.GroupOf("x-web2/eth0", false));
  // Pod peers on single ports: a hash set; CIDRs and ranges: an interval set.
  const auto& ipp4 = e.desired().sets.at(group + "_ipp4").elements;
  EXPECT_TRUE(ipp4.contains("10.0.0.2 . tcp . 8080")) << Json(ipp4).dump();
  EXPECT_TRUE(ipp4.contains("10.0.0.5 . tcp . 8080"));
  const auto& netp4 = e.desired().sets.at(group + "_netp4").elements;
  EXPECT_TRUE(netp4.contains("10.9.0.0-10.9.0.255 . tcp . 8080")) << Json(netp4).dump();
  EXPECT_TRUE(netp4.contains("10.9.2.0-10.9.255.255 . tcp . 9000-9010"));
  EXPECT_TRUE(e.desired().sets.at(group + "_ipr4").elements.contains("10.0.0.2 . tcp . 9000-9010"));
  EXPECT_FALSE(e.desired().sets.at("ingress").elements.empty());
  // A diff of a removed group deletes its vmap element before its chain.
  NftTable before = e.desired();
  e.RemovePod("x-web1/eth0");
  e.RemovePod("x-web2/eth0");
  Touched gone = e.Commit();
  std::string script = RenderDiff(before, e.desired(), gone);
  auto elem = script.find("delete element inet trellis ingress");
  auto chain = script.find("delete chain inet trellis " + group);
  auto set = script.find("delete set inet trellis " + group + "_ipp4");
  ASSERT_NE(elem, std::string::npos) << script;
  ASSERT_NE(chain, std::string::npos) << script;
  EXPECT_LT(elem, chain);
  EXPECT_LT(chain, set);
}

TEST(PolicyEngine, ExplainFollowsTheSameRules) {
  Engine e;
  e.SetNamespaces({{"x", {{"team", "a"}}}, {"y", {{"team", "b"}}}});
  e.SetPolicies(SamplePolicies());
  e.UpsertPod(Pod("x", "web", "10.0.0.1", {{"app", "web"}}, {{"http", kTcp, 8080}}));
  e.UpsertPod(Pod("x", "client", "10.0.0.2", {{"app", "client"}}));
  e.UpsertPod(Pod("y", "other", "10.0.0.3", {{"app", "client"}}));
  const auto* web = e.FindPodByName("x", "web");
  const auto* client = e.FindPodByName("x", "client");
  const auto* other = e.FindPodByName("y", "other");
  auto ep = [](const PodIdentity* p) { return Endpoint{p, p->addresses[0]}; };
  Json v = e.Explain(ep(client), ep(web), kTcp, 8080);
  EXPECT_TRUE(v["allowed"].get<bool>()) << v.dump();
  EXPECT_EQ(v["policy"], "x/p");
  EXPECT_EQ(v["rule"]["index"], 0);
  EXPECT_FALSE(e.Explain(ep(client), ep(web), kTcp, 8081)["allowed"].get<bool>());
  EXPECT_TRUE(e.Explain(ep(client), ep(web), kTcp, 9005)["allowed"].get<bool>());
  // y/other is in namespace y: a podSelector peer means the policy's namespace.
  Json d = e.Explain(ep(other), ep(web), kTcp, 8080);
  EXPECT_FALSE(d["allowed"].get<bool>());
  EXPECT_EQ(d["policy"], Json::array({"x/p"}));
  // y is egress-isolated: to team=a namespaces on the destination's named port.
  EXPECT_TRUE(e.Explain(ep(other), ep(client), kTcp, 80)["egress"]["allowed"] == false);
  Endpoint ext{nullptr, *ParseIp("10.9.3.3")}, excluded{nullptr, *ParseIp("10.9.1.7")};
  EXPECT_TRUE(e.Explain(ext, ep(web), kTcp, 8080)["allowed"].get<bool>());
  EXPECT_FALSE(e.Explain(excluded, ep(web), kTcp, 8080)["allowed"].get<bool>());
  EXPECT_TRUE(e.Explain(ep(other), Endpoint{nullptr, *ParseIp("8.8.8.8")}, kUdp, 53)["allowed"]
                  .get<bool>());
}

}  // namespace
}  // namespace trellis::policy
