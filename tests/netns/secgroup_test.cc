// The secgroup module end to end: trellisd in its node namespace with the
// secgroup plugin, against the ECS emulator serving that node's ECS API and
// metadata on its loopback. The security group's rules are read from the
// emulator's admin API: what the cloud really holds.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "aliyun/clock.h"
#include "aliyun/credentials.h"
#include "aliyun/ecs.h"
#include "aliyun/http.h"
#include "aliyun/rpc_client.h"
#include "ecs_emulator.h"
#include "harness.h"

namespace trellis::test {
namespace {

using namespace std::chrono_literals;

constexpr const char* kSg = "sg-test";

// A rule as the emulator's /state shows it (ECS's names): "DIRECTION PROTO
// PORTS PEER POLICY PRIORITY | DESCRIPTION".
std::string Show(const Json& r) {
  std::string peer = r["Direction"] == "ingress" ? r["SourceCidrIp"].get<std::string>()
                                                 : r["DestCidrIp"].get<std::string>();
  if (peer.empty()) {
    peer = r["Direction"] == "ingress" ? r["Ipv6SourceCidrIp"].get<std::string>()
                                       : r["Ipv6DestCidrIp"].get<std::string>();
  }
  return r["Direction"].get<std::string>() + " " + r["IpProtocol"].get<std::string>() + " " +
         r["PortRange"].get<std::string>() + " " + peer + " " + r["Policy"].get<std::string>() +
         " " + r["Priority"].get<std::string>() + " | " + r["Description"].get<std::string>();
}

// The secgroup module's YAML config for a node of the emulator.
std::string NodeConfig(const std::string& extra_yaml, const std::string& rules_yaml) {
  return R"(log_level: debug
modules:
  secgroup:
    enabled: true
    config:
      security_groups: [sg-test]
      region: cn-hangzhou
      ecs_endpoint: http://127.0.0.1:18080
      metadata_endpoint: http://127.0.0.1:18081
)" + extra_yaml +
         "      rules:\n" + rules_yaml;
}

constexpr const char* kThreeRules =
    R"(        - {direction: ingress, protocol: tcp, port_range: 80/80, source_cidr: 10.0.0.0/8, description: web}
        - {direction: egress, protocol: udp, port_range: 53/53, dest_cidr: 192.168.0.2/32, policy: accept, priority: 5}
        - {direction: ingress, protocol: icmp, source_cidr: 172.16.0.0/12, policy: drop, priority: 100}
)";

std::string PortRules(const std::vector<int>& ports) {
  std::string out;
  for (int p : ports) {
    out += "        - {direction: ingress, protocol: tcp, port_range: " + std::to_string(p) + "/" +
           std::to_string(p) + ", source_cidr: 10.0.0.0/8, description: svc" + std::to_string(p) +
           "}\n";
  }
  return out;
}

class SecgroupTest : public ::testing::Test {
 protected:
  struct Node {
    std::unique_ptr<Daemon> daemon;
    std::string instance;
  };

  void TearDown() override {
    for (auto& n : nodes_) {
      if (HasFailure() && n.daemon) std::cerr << "--- trellisd log:\n" << n.daemon->Log() << "\n";
    }
    nodes_.clear();
    if (HasFailure() && emu_)
      std::cerr << "--- emulator log (tail):\n" << Tail(emu_->Log()) << "\n";
    emu_.reset();
  }

  static std::string Tail(const std::string& s) {
    return s.size() > 6000 ? s.substr(s.size() - 6000) : s;
  }

  // Makes the daemons (their node namespaces exist from here on), starts the
  // emulator with one instance per daemon, then the daemons.
  void StartNodes(const std::vector<std::string>& configs,
                  const std::vector<std::map<std::string, std::string>>& envs = {},
                  const Json& foreign_rules = Json::array()) {
    std::vector<EcsNode> instances;
    for (size_t i = 0; i < configs.size(); ++i) {
      DaemonOptions o;
      o.config_yaml = configs[i];
      o.metrics_addr = "auto";
      o.env = {{"ACCESS_KEY_ID", kEcsAccessKeyId}, {"ACCESS_KEY_SECRET", kEcsAccessKeySecret}};
      if (i < envs.size()) {
        for (const auto& [k, v] : envs[i]) o.env[k] = v;
      }
      Node n{std::make_unique<Daemon>(o), "i-node" + std::to_string(i + 1)};
      instances.push_back({.id = n.instance, .netns = n.daemon->node()->name()});
      nodes_.push_back(std::move(n));
    }
    Json scenario = DefaultEcsScenario(instances);
    scenario["security_groups"][0]["rules"] = foreign_rules;
    emu_ = std::make_unique<EcsEmulator>(scenario);
    std::string why;
    ASSERT_TRUE(emu_->Start(&why)) << why;
    for (auto& n : nodes_) ASSERT_TRUE(n.daemon->Start(&why)) << why;
  }
  Daemon& D(size_t i = 0) { return *nodes_.at(i).daemon; }

  // The group's rules as the cloud holds them, by Show().
  std::set<std::string> Cloud() {
    std::set<std::string> out;
    Json st = emu_->State();
    for (const auto& g : st["security_groups"]) {
      if (g["id"] != kSg) continue;
      for (const auto& r : g["rules"]) out.insert(Show(r));
    }
    return out;
  }
  Json CloudRules() {
    Json st = emu_->State();
    for (const auto& g : st["security_groups"]) {
      if (g["id"] == kSg) return g["rules"];
    }
    return Json::array();
  }
  int Calls(const std::string& action) {
    Json st = emu_->State();
    return st["calls"].value(action, 0);
  }
  int Mutations() {
    int n = 0;
    for (const char* a : {"AuthorizeSecurityGroup", "AuthorizeSecurityGroupEgress",
                          "RevokeSecurityGroup", "RevokeSecurityGroupEgress"}) {
      n += Calls(a);
    }
    return n;
  }

  // Replaces the daemon's config file (atomically, as a ConfigMap update).
  void Rewrite(Daemon& d, const std::string& yaml) {
    fs::path tmp = d.dir() / "trellis.yaml.new";
    std::ofstream(tmp) << yaml;
    fs::rename(tmp, d.dir() / "trellis.yaml");
  }

  // The secgroup entry of `trellisctl modules` (state, healthy, degraded,
  // message, status_json).
  Json Module(Daemon& d) {
    Json j = d.Ctl({"-o", "json", "modules"}).json();
    for (const auto& m : j["modules"]) {
      if (m["name"] == "secgroup") return m;
    }
    return Json::object();
  }

  std::string Metrics(Daemon& d) {
    return HttpGet(d.metrics_port(), "/metrics", d.node()->name()).second;
  }
  // The value of one series ("name{labels}") in the exposition, or -1.
  double Metric(Daemon& d, const std::string& series) {
    std::string text = Metrics(d);
    size_t pos = 0;
    while ((pos = text.find(series, pos)) != std::string::npos) {
      bool line_start = pos == 0 || text[pos - 1] == '\n';
      size_t after = pos + series.size();
      if (line_start && after < text.size() && text[after] == ' ') {
        return std::stod(text.substr(after + 1, text.find('\n', after) - after - 1));
      }
      pos = after;
    }
    return -1;
  }
  double Syncs(Daemon& d, const std::string& result) {
    return Metric(d, "trellis_secgroup_syncs_total{result=\"" + result + "\"}");
  }

  std::vector<Node> nodes_;
  std::unique_ptr<EcsEmulator> emu_;
};

const std::set<std::string> kThreeInCloud = {
    "ingress TCP 80/80 10.0.0.0/8 Accept 1 | trellis/default web",
    "egress UDP 53/53 192.168.0.2/32 Accept 5 | trellis/default",
    "ingress ICMP -1/-1 172.16.0.0/12 Drop 100 | trellis/default",
};

TEST_F(SecgroupTest, InitialSyncCreatesExactlyTheDesiredRules) {
  Json foreign = Json::array({{{"Direction", "ingress"},
                               {"IpProtocol", "tcp"},
                               {"PortRange", "22/22"},
                               {"SourceCidrIp", "10.1.0.0/16"},
                               {"Description", "ops ssh"}}});
  ASSERT_NO_FATAL_FAILURE(
      StartNodes({NodeConfig("      leader: true\n", kThreeRules)}, {}, foreign));
  std::set<std::string> want = kThreeInCloud;
  want.insert("ingress TCP 22/22 10.1.0.0/16 Accept 1 | ops ssh");
  ASSERT_TRUE(WaitFor([&] { return Cloud() == want; }, 20s)) << ::testing::PrintToString(Cloud());
  ASSERT_TRUE(WaitFor([&] { return Syncs(D(), "applied") == 1; }, 10s)) << Metrics(D());
  EXPECT_EQ(Calls("AuthorizeSecurityGroup"), 2);
  EXPECT_EQ(Calls("AuthorizeSecurityGroupEgress"), 1);
  EXPECT_EQ(Mutations(), 3);

  // What the next sync would do: nothing. As JSON and for people.
  RunResult diff = D().Ctl({"-o", "json", "secgroup", "diff"});
  ASSERT_EQ(diff.exit_code, 0) << diff.err;
  Json j = diff.json();
  EXPECT_EQ(j["result"], "in_sync") << diff.out;
  EXPECT_EQ(j["role"], "leader");
  EXPECT_EQ(j["owner"], "trellis/default");
  EXPECT_EQ(j["summary"]["managed"], 3);
  EXPECT_EQ(j["summary"]["foreign"], 1);
  EXPECT_EQ(j["summary"]["to_add"], 0);
  EXPECT_EQ(j["desired"].size(), 3u);
  EXPECT_EQ(j["security_groups"][0]["actual"].size(), 4u);
  EXPECT_FALSE(j.contains("text"));
  RunResult text = D().Ctl({"secgroup", "diff"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("security-group sync: in_sync"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("  = ingress tcp 80/80 from 10.0.0.0/8 accept priority 1"),
            std::string::npos)
      << text.out;
  EXPECT_NE(text.out.find("  . foreign: ingress tcp 22/22 from 10.1.0.0/16"), std::string::npos)
      << text.out;
  RunResult sync = D().Ctl({"secgroup", "sync"});
  EXPECT_EQ(sync.exit_code, 0) << sync.out << sync.err;
  EXPECT_EQ(Mutations(), 3);

  // Metrics of the sync.
  EXPECT_EQ(Metric(D(), "trellis_secgroup_rules_added_total{security_group=\"sg-test\"}"), 3);
  EXPECT_EQ(Metric(D(), "trellis_secgroup_managed_rules{security_group=\"sg-test\"}"), 3);
  EXPECT_EQ(Metric(D(), "trellis_secgroup_last_sync_success"), 1);
  EXPECT_GT(Metric(D(), "trellis_secgroup_last_sync_timestamp_seconds"), 1.7e9);
  EXPECT_EQ(Metric(D(), "trellis_secgroup_leader"), 1);
  EXPECT_EQ(
      Metric(D(), "trellis_secgroup_drift_rules{security_group=\"sg-test\",kind=\"missing\"}"), 0);

  // The module's status names its role; no secret anywhere we print.
  Json mod = Module(D());
  EXPECT_EQ(mod["message"].get<std::string>().rfind("leader: last sync in_sync", 0), 0u)
      << mod.dump();
  Json status = Json::parse(mod.value("status_json", "{}"), nullptr, false);
  EXPECT_EQ(status["role"], "leader") << mod.dump();
  EXPECT_EQ(status["signing_with"], "environment (ACCESS_KEY_ID)");
  for (const std::string& out :
       {diff.out, text.out, sync.out, mod.dump(), Metrics(D()), D().Log()}) {
    EXPECT_EQ(out.find(kEcsAccessKeySecret), std::string::npos);
  }
}

TEST_F(SecgroupTest, OutOfBandChangesAreRepairedAndForeignRulesSurviveEverySync) {
  ASSERT_NO_FATAL_FAILURE(StartNodes(
      {NodeConfig("      leader: true\n      sync_interval: 1\n", PortRules({8080, 8081, 8082}))}));
  ASSERT_TRUE(WaitFor([&] { return Cloud().size() == 3; }, 20s));
  // Someone deletes one of ours in the console and adds one of their own,
  // next to ours on the same port.
  std::string victim;
  for (const auto& r : CloudRules()) {
    if (r["PortRange"] == "8081/8081") victim = r["SecurityGroupRuleId"];
  }
  ASSERT_FALSE(victim.empty());
  ASSERT_TRUE(
      emu_->Admin("DELETE", std::string("/security_groups/") + kSg + "/rules/" + victim).ok());
  ASSERT_TRUE(emu_->AddRule(kSg, {{"Direction", "ingress"},
                                  {"IpProtocol", "tcp"},
                                  {"PortRange", "8081/8081"},
                                  {"SourceCidrIp", "192.168.0.0/16"},
                                  {"Description", "partner"}})
                  .ok());
  ASSERT_TRUE(WaitFor([&] { return Cloud().size() == 4; }, 15s))
      << ::testing::PrintToString(Cloud());
  EXPECT_TRUE(
      Cloud().contains("ingress TCP 8081/8081 10.0.0.0/8 Accept 1 | trellis/default svc8081"));
  EXPECT_GE(Metric(D(), "trellis_secgroup_drift_detected_total{security_group=\"sg-test\"}"), 1);
  // Several more syncs: the partner's rule stays.
  double before = Syncs(D(), "in_sync");
  ASSERT_TRUE(WaitFor([&] { return Syncs(D(), "in_sync") >= before + 2; }, 15s)) << Metrics(D());
  EXPECT_TRUE(Cloud().contains("ingress TCP 8081/8081 192.168.0.0/16 Accept 1 | partner"));
  EXPECT_EQ(Calls("RevokeSecurityGroup"), 0);
}

TEST_F(SecgroupTest, RemovingARuleFromTheConfigRevokesOnlyOurs) {
  Json foreign = Json::array({{{"Direction", "ingress"},
                               {"IpProtocol", "tcp"},
                               {"PortRange", "8082/8082"},
                               {"SourceCidrIp", "10.99.0.0/16"},
                               {"Description", "not ours"}},
                              {{"Direction", "ingress"},
                               {"IpProtocol", "tcp"},
                               {"PortRange", "9000/9000"},
                               {"SourceCidrIp", "10.0.0.0/8"},
                               {"Description", "trellis/other-cluster svc9000"}}});
  ASSERT_NO_FATAL_FAILURE(StartNodes(
      {NodeConfig("      leader: true\n", PortRules({8080, 8081, 8082, 8083}))}, {}, foreign));
  ASSERT_TRUE(WaitFor([&] { return Cloud().size() == 6; }, 20s));
  Rewrite(D(), NodeConfig("      leader: true\n", PortRules({8080, 8081, 8083})));
  ASSERT_TRUE(WaitFor([&] { return Cloud().size() == 5; }, 15s))
      << ::testing::PrintToString(Cloud());
  std::set<std::string> cloud = Cloud();
  EXPECT_FALSE(
      cloud.contains("ingress TCP 8082/8082 10.0.0.0/8 Accept 1 | trellis/default svc8082"));
  EXPECT_TRUE(cloud.contains("ingress TCP 8082/8082 10.99.0.0/16 Accept 1 | not ours"));
  EXPECT_TRUE(
      cloud.contains("ingress TCP 9000/9000 10.0.0.0/8 Accept 1 | trellis/other-cluster svc9000"));
  EXPECT_EQ(Calls("RevokeSecurityGroup"), 1);
  EXPECT_EQ(Metric(D(), "trellis_secgroup_rules_removed_total{security_group=\"sg-test\"}"), 1);
}

TEST_F(SecgroupTest, DryRunChangesNothing) {
  Json foreign = Json::array({{{"Direction", "ingress"},
                               {"IpProtocol", "tcp"},
                               {"PortRange", "1/1"},
                               {"SourceCidrIp", "10.0.0.0/8"},
                               {"Description", "trellis/default left over"}}});
  ASSERT_NO_FATAL_FAILURE(StartNodes(
      {NodeConfig("      leader: true\n      dry_run: true\n      max_revoke_fraction: 1\n",
                  kThreeRules)},
      {}, foreign));
  ASSERT_TRUE(WaitFor([&] { return Syncs(D(), "dry_run") >= 1; }, 20s)) << Metrics(D());
  RunResult sync = D().Ctl({"-o", "json", "secgroup", "sync"});
  Json j = sync.json();
  EXPECT_EQ(j["result"], "dry_run") << sync.out;
  EXPECT_EQ(j["dry_run_reason"], "dry_run: true in the config");
  EXPECT_EQ(j["summary"]["to_add"], 3);
  EXPECT_EQ(j["summary"]["to_remove"], 1);
  EXPECT_EQ(j["security_groups"][0]["to_remove"][0]["description"], "trellis/default left over");
  EXPECT_EQ(Mutations(), 0);
  EXPECT_EQ(Cloud().size(), 1u);
  EXPECT_EQ(
      Metric(D(), "trellis_secgroup_drift_rules{security_group=\"sg-test\",kind=\"missing\"}"), 3);
  EXPECT_EQ(
      Metric(D(), "trellis_secgroup_drift_rules{security_group=\"sg-test\",kind=\"unexpected\"}"),
      1);
  // Off dry run, the same plan is carried out.
  Rewrite(D(), NodeConfig("      leader: true\n      max_revoke_fraction: 1\n", kThreeRules));
  ASSERT_TRUE(WaitFor([&] { return Cloud() == kThreeInCloud; }, 15s))
      << ::testing::PrintToString(Cloud());
}

TEST_F(SecgroupTest, MassRevokeGuardTrips) {
  ASSERT_NO_FATAL_FAILURE(
      StartNodes({NodeConfig("      leader: true\n", PortRules({8080, 8081, 8082, 8083}))}));
  ASSERT_TRUE(WaitFor([&] { return Cloud().size() == 4; }, 20s));
  const std::set<std::string> four = Cloud();
  // A bad edit keeps one rule of four and adds one.
  Rewrite(D(), NodeConfig("      leader: true\n", PortRules({8080, 443})));
  ASSERT_TRUE(WaitFor([&] { return Syncs(D(), "refused") >= 1; }, 15s)) << D().Log();
  EXPECT_EQ(Cloud(), four);  // nothing revoked, nothing added
  RunResult sync = D().Ctl({"secgroup", "sync"});
  EXPECT_EQ(sync.exit_code, 1);
  EXPECT_NE(sync.out.find("-> REFUSED"), std::string::npos) << sync.out;
  EXPECT_NE(sync.out.find("would revoke 3 of the 4 rules"), std::string::npos) << sync.out;
  Json mod = Module(D());
  EXPECT_NE(mod["message"].get<std::string>().find("refused"), std::string::npos) << mod.dump();
  EXPECT_EQ(mod["healthy"], true);
  EXPECT_EQ(mod["degraded"], true);
  EXPECT_EQ(Metric(D(), "trellis_secgroup_last_sync_success"), 0);
  EXPECT_EQ(Cloud(), four);
  // The operator means it.
  Rewrite(D(), NodeConfig("      leader: true\n      max_revoke_fraction: 1.0\n",
                          PortRules({8080, 443})));
  ASSERT_TRUE(WaitFor([&] { return Cloud().size() == 2; }, 15s))
      << ::testing::PrintToString(Cloud());
  EXPECT_TRUE(Cloud().contains("ingress TCP 443/443 10.0.0.0/8 Accept 1 | trellis/default svc443"));
}

TEST_F(SecgroupTest, ThrottlingIsSurvived) {
  ASSERT_NO_FATAL_FAILURE(
      StartNodes({NodeConfig("      leader: false\n", PortRules({1, 2, 3, 4, 5}))}));
  // ECS's flow control lets one AuthorizeSecurityGroup a second through,
  // and the first two reads are throttled outright.
  ASSERT_TRUE(emu_->SetRateLimit("AuthorizeSecurityGroup", 1, 1));
  ASSERT_TRUE(emu_->AddFault({{"action", "DescribeSecurityGroupAttribute"},
                              {"error", "Throttling.User"},
                              {"http_status", 400},
                              {"count", 2}})
                  .ok());
  Rewrite(D(), NodeConfig("      leader: true\n", PortRules({1, 2, 3, 4, 5})));
  ASSERT_TRUE(WaitFor([&] { return Cloud().size() == 5; }, 60s))
      << ::testing::PrintToString(Cloud());
  ASSERT_TRUE(WaitFor([&] { return Metric(D(), "trellis_secgroup_last_sync_success") == 1; }, 20s));
  Json st = emu_->State();
  EXPECT_GE(st["errors"]["AuthorizeSecurityGroup"].value("Throttling.User", 0), 1)
      << st["errors"].dump();
  EXPECT_EQ(st["errors"]["DescribeSecurityGroupAttribute"].value("Throttling.User", 0), 2);
  EXPECT_GE(Metric(D(),
                   "trellis_secgroup_openapi_errors_total{action=\"AuthorizeSecurityGroup\","
                   "code=\"Throttling.User\"}"),
            1);
  EXPECT_EQ(
      Metric(D(),
             "trellis_secgroup_openapi_errors_total{action=\"DescribeSecurityGroupAttribute\","
             "code=\"Throttling.User\"}"),
      2);
}

TEST_F(SecgroupTest, TwoNodesDoNotFightOneActiveOneStandby) {
  // One ConfigMap for both nodes; the node name decides.
  std::string cfg = NodeConfig("      leader_node: node-a\n      sync_interval: 1\n", kThreeRules);
  ASSERT_NO_FATAL_FAILURE(
      StartNodes({cfg, cfg}, {{{"NODE_NAME", "node-a"}}, {{"NODE_NAME", "node-b"}}}));
  ASSERT_TRUE(WaitFor([&] { return Cloud() == kThreeInCloud; }, 20s))
      << ::testing::PrintToString(Cloud());
  // A few syncs of the leader later, the standby has not called ECS at all.
  double before = Syncs(D(0), "in_sync");
  ASSERT_TRUE(WaitFor([&] { return Syncs(D(0), "in_sync") >= before + 2; }, 15s));
  Json st = emu_->State();
  EXPECT_FALSE(st["calls_by_instance"].contains("i-node2")) << st["calls_by_instance"].dump();
  EXPECT_EQ(Mutations(), 3);
  EXPECT_EQ(Metric(D(0), "trellis_secgroup_leader"), 1);
  EXPECT_EQ(Metric(D(1), "trellis_secgroup_leader"), 0);
  EXPECT_EQ(Syncs(D(1), "applied") + Syncs(D(1), "in_sync"), 0);
  EXPECT_EQ(Module(D(1))["message"], "standby: leader_node is node-a, this node is node-b");
  // On the standby: sync is refused, diff reads and shows.
  RunResult sync = D(1).Ctl({"secgroup", "sync"});
  EXPECT_EQ(sync.exit_code, 1);
  EXPECT_NE(sync.err.find("standby"), std::string::npos) << sync.err;
  RunResult diff = D(1).Ctl({"-o", "json", "secgroup", "diff"});
  ASSERT_EQ(diff.exit_code, 0) << diff.err;
  EXPECT_EQ(diff.json()["role"], "standby");
  EXPECT_EQ(diff.json()["result"], "in_sync");
  EXPECT_EQ(Mutations(), 3);

  // Leadership moves to node-b with a new rule: node-b adds it, node-a
  // makes no further change.
  int leader_writes = 0;
  st = emu_->State();
  leader_writes = st["calls_by_instance"]["i-node1"].value("AuthorizeSecurityGroup", 0);
  std::string moved = NodeConfig("      leader_node: node-b\n      sync_interval: 1\n",
                                 std::string(kThreeRules) + PortRules({8443}));
  Rewrite(D(0), moved);
  Rewrite(D(1), moved);
  ASSERT_TRUE(WaitFor([&] { return Cloud().size() == 4; }, 20s))
      << ::testing::PrintToString(Cloud());
  ASSERT_TRUE(WaitFor([&] { return Metric(D(1), "trellis_secgroup_leader") == 1; }, 10s));
  st = emu_->State();
  EXPECT_EQ(st["calls_by_instance"]["i-node1"].value("AuthorizeSecurityGroup", 0), leader_writes);
  EXPECT_EQ(st["calls_by_instance"]["i-node2"].value("AuthorizeSecurityGroup", 0), 1);
  EXPECT_EQ(Metric(D(0), "trellis_secgroup_leader"), 0);
}

TEST_F(SecgroupTest, WorldOpenRulesNeedConsentPerRule) {
  std::string rules =
      R"(        - {direction: ingress, protocol: tcp, port_range: 443/443, source_cidr: 0.0.0.0/0}
        - {direction: ingress, protocol: tcp, port_range: 80/80, source_cidr: 0.0.0.0/0, allow_world_open: true}
)";
  ASSERT_NO_FATAL_FAILURE(StartNodes({NodeConfig("      leader: true\n", rules)}));
  ASSERT_TRUE(WaitFor([&] { return Syncs(D(), "applied") == 1; }, 20s)) << Metrics(D());
  EXPECT_EQ(Cloud(),
            (std::set<std::string>{"ingress TCP 80/80 0.0.0.0/0 Accept 1 | trellis/default"}));
  EXPECT_EQ(Metric(D(), "trellis_secgroup_refused_rules"), 1);
  std::string log = D().Log();
  EXPECT_NE(log.find("opening sg-test to every address: ingress tcp 80/80 from 0.0.0.0/0"),
            std::string::npos)
      << log;
  EXPECT_NE(
      log.find(
          "rules[0] (ingress tcp 443/443 from 0.0.0.0/0 accept priority 1) opens to every address"),
      std::string::npos)
      << log;
  Json diff = D().Ctl({"-o", "json", "secgroup", "diff"}).json();
  ASSERT_EQ(diff["refused"].size(), 1u) << diff.dump();
  EXPECT_EQ(diff["refused"][0]["index"], 0);
  EXPECT_NE(diff["refused"][0]["reason"].get<std::string>().find("allow_world_open"),
            std::string::npos);
}

TEST_F(SecgroupTest, DisablingTheModuleLeavesTheRulesUnlessAskedToRevoke) {
  Json foreign = Json::array({{{"Direction", "ingress"},
                               {"IpProtocol", "tcp"},
                               {"PortRange", "22/22"},
                               {"SourceCidrIp", "10.1.0.0/16"},
                               {"Description", "ops ssh"}}});
  ASSERT_NO_FATAL_FAILURE(
      StartNodes({NodeConfig("      leader: true\n", kThreeRules)}, {}, foreign));
  ASSERT_TRUE(WaitFor([&] { return Cloud().size() == 4; }, 20s));
  auto disabled = [](std::string yaml) {
    return yaml.replace(yaml.find("enabled: true"), 13, "enabled: false");
  };
  auto secgroup_state = [&] { return Module(D()).value("state", ""); };
  Rewrite(D(), disabled(NodeConfig("      leader: true\n", kThreeRules)));
  ASSERT_TRUE(WaitFor([&] { return secgroup_state() != "running"; }, 10s));
  EXPECT_EQ(Cloud().size(), 4u);
  EXPECT_NE(D().Log().find("stay in the security groups"), std::string::npos);
  // Back on, asked to revoke on disable: ours go, the foreign one stays.
  Rewrite(D(), NodeConfig("      leader: true\n      revoke_on_disable: true\n", kThreeRules));
  ASSERT_TRUE(WaitFor([&] { return secgroup_state() == "running"; }, 10s));
  Rewrite(D(),
          disabled(NodeConfig("      leader: true\n      revoke_on_disable: true\n", kThreeRules)));
  ASSERT_TRUE(WaitFor([&] { return Cloud().size() == 1; }, 15s))
      << ::testing::PrintToString(Cloud());
  EXPECT_TRUE(Cloud().contains("ingress TCP 22/22 10.1.0.0/16 Accept 1 | ops ssh"));
  EXPECT_EQ(Mutations(), 6);  // three added, three revoked, nothing else
}

TEST_F(SecgroupTest, ReadsThatLagBehindWritesNeitherDuplicateNorFail) {
  ASSERT_NO_FATAL_FAILURE(StartNodes({NodeConfig("      leader: false\n", "        []\n")}));
  // ECS's Describe* answers lag behind its writes: the syncs right after a
  // change see the group as it was.
  ASSERT_TRUE(emu_->SetConsistencyDelay(1500));
  std::string cfg = "      leader: true\n      sync_interval: 1\n      max_revoke_fraction: 1\n";
  Rewrite(D(), NodeConfig(cfg, PortRules({8080, 8081, 8082})));
  ASSERT_TRUE(WaitFor([&] { return Cloud().size() == 3; }, 20s));
  // Re-adding what a lagging read missed changes nothing (ECS keeps one of
  // equal rules); revoking by id what a lagging read still shows is "gone".
  Rewrite(D(), NodeConfig(cfg, PortRules({8080, 8081})));
  ASSERT_TRUE(WaitFor([&] { return Cloud().size() == 2; }, 20s));
  double before = Syncs(D(), "in_sync");
  ASSERT_TRUE(WaitFor([&] { return Syncs(D(), "in_sync") >= before + 2; }, 20s));
  EXPECT_EQ(Cloud().size(), 2u);
  EXPECT_EQ(Syncs(D(), "failed"), 0) << D().Log();
  Json st = emu_->State();
  EXPECT_GE(st["calls"].value("RevokeSecurityGroup", 0), 1);
}

// The shared ECS client (plugins/common/aliyun) against the emulator, for the
// security-group actions the module relies on: the contract both are written
// to, checked from the node's namespace as the module calls it.
TEST_F(SecgroupTest, TheSharedClientAndTheEmulatorAgreeOnSecurityGroupRules) {
  ASSERT_NO_FATAL_FAILURE(StartNodes({NodeConfig("      leader: false\n", "        []\n")}));
  std::string failure;
  std::thread t([&] {
    int fd = open(D().node()->path().c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
      failure = "cannot enter the node namespace";
      return;
    }
    close(fd);
    namespace al = trellis::aliyun;
    al::RealClock clock;
    al::RpcOptions o;
    o.endpoint = al::Endpoint::Parse("http://127.0.0.1:18080", "ecs_endpoint",
                                     al::Endpoint::PlainHttp::kLoopbackOnly);
    o.region = kEcsRegion;
    std::shared_ptr<al::CredentialProvider> creds =
        al::MakeStaticCredentials({kEcsAccessKeyId, kEcsAccessKeySecret, "", std::nullopt}, "test");
    al::EcsClient ecs(std::make_shared<al::RpcClient>(o, std::make_shared<al::HttplibTransport>(),
                                                      creds, &clock));
    try {
      al::SecurityGroupRule v6;
      v6.direction = "ingress";
      v6.ip_protocol = "tcp";
      v6.port_range = "443/443";
      v6.cidr = "fd00:10::/64";
      v6.priority = 7;
      v6.description = "trellis/default v6";
      ecs.AuthorizeSecurityGroupRule(kSg, v6, "");
      al::SecurityGroupRule egress = v6;
      egress.direction = "egress";
      egress.ip_protocol = "udp";
      egress.port_range = "53/53";
      egress.cidr = "10.0.0.53/32";
      egress.policy = "drop";
      ecs.AuthorizeSecurityGroupRule(kSg, egress, "");
      auto rules = ecs.DescribeSecurityGroupRules(kSg, "");
      if (rules.size() != 2)
        throw std::runtime_error("expected 2 rules, got " + std::to_string(rules.size()));
      for (const auto& r : rules) {
        bool in = r.direction == "ingress";
        if (r.rule_id.rfind("sgr-", 0) != 0 || r.create_time.empty() ||
            r.ip_protocol != (in ? "tcp" : "udp") ||
            r.cidr != (in ? "fd00:10::/64" : "10.0.0.53/32") ||
            r.policy != (in ? "accept" : "drop") || r.priority != 7 ||
            r.description != "trellis/default v6") {
          throw std::runtime_error("rule read back differs: " + r.direction + " " + r.ip_protocol +
                                   " " + r.cidr + " " + r.policy);
        }
      }
      // By id: exactly that rule; once gone, ECS's "does not exist" codes.
      for (auto r : rules) {
        ecs.RevokeSecurityGroupRule(kSg, r, "");
        try {
          ecs.RevokeSecurityGroupRule(kSg, r, "");
          throw std::runtime_error("a second revoke of " + r.rule_id + " succeeded");
        } catch (const al::CloudError& e) {
          if (!al::EcsClient::IsRuleGone(e)) throw;
        }
      }
      // By parameters, a rule that is not there is no error.
      ecs.RevokeSecurityGroupRule(kSg, v6, "");
      if (!ecs.DescribeSecurityGroupRules(kSg, "").empty()) throw std::runtime_error("rules left");
    } catch (const std::exception& e) {
      failure = e.what();
    }
  });
  t.join();
  EXPECT_EQ(failure, "");
  Json st = emu_->State();
  EXPECT_EQ(st["errors"]["RevokeSecurityGroup"].value("InvalidParam.SecurityGroupRuleId", 0), 1);
  EXPECT_EQ(
      st["errors"]["RevokeSecurityGroupEgress"].value("InvalidSecurityGroupRule.RuleNotExist", 0),
      1);
}

}  // namespace
}  // namespace trellis::test
