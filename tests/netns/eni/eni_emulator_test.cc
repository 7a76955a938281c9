// The eni module end to end: trellisd in node namespaces, the ECS emulator
// as their cloud (ECS API and metadata on each node's loopback, a VPC bridge
// between the nodes), pods added with the real `trellis` CNI binary.
//
// Pods get VPC addresses and reach each other across nodes; the pool fills
// and drains; throttling and quota errors; vSwitch exhaustion fail-over;
// kill -9 of the daemon in the middle of an ENI creation leaves no leaked
// ENI; the leak GC deletes only our ENIs; a restart restores the ENI
// datapath; trellisctl pool shows the pool and no secret; disabling the
// module removes its ENIs and routes.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "ecs_emulator.h"
#include "harness.h"

namespace trellis::test {
namespace {

using std::chrono::seconds;

constexpr const char* kCluster = "eni-test";

Json EniConfig(const Json& overrides) {
  Json c = {{"ecs_endpoint", "http://127.0.0.1:18080"},
            {"metadata_endpoint", "http://127.0.0.1:18081"},
            {"security_group", "sg-test"},
            {"vswitches", {"vsw-a"}},
            {"cluster_id", kCluster},
            {"min_pool_size", 2},
            {"max_pool_size", 6},
            {"reuse_delay", "0s"},
            {"idle_reclaim_after", "0s"},
            {"eni_gc_interval", "2s"},
            {"eni_gc_threshold", "2s"},
            {"pool_check_interval", "200ms"},
            {"eni_create_timeout", "60s"},
            {"acquire_timeout", "30s"}};
  c.merge_patch(overrides);
  return c;
}

Json NodeConfig(const Json& eni, bool eni_enabled = true) {
  Json ipam = eni_enabled ? Json{{"source", "eni"}, {"reuse_delay", 0}}
                          : Json{{"ranges", {{{"subnet", "10.251.0.0/24"}}}}};
  return {{"log_level", "debug"},
          {"modules",
           {{"ipam", {{"enabled", true}, {"config", ipam}}},
            {"eni", {{"enabled", eni_enabled}, {"config", eni}}},
            {"qos", {{"enabled", false}}},
            {"policy", {{"enabled", false}}},
            {"secgroup", {{"enabled", false}}}}}};
}

std::string FirstIp(const Json& result) {
  std::string a = result["ips"][0]["address"].get<std::string>();
  return a.substr(0, a.find('/'));
}

class EniEmulatorTest : public ::testing::Test {
 protected:
  struct Options {
    int nodes = 1;
    Json eni = Json::object();
    std::function<void(Json&)> scenario = nullptr;
    bool env_credentials = true;  // else: the RAM role's STS credentials
  };

  void Up(const Options& o) {
    for (int i = 0; i < o.nodes; ++i) {
      DaemonOptions d;
      d.config_yaml = NodeConfig(EniConfig(o.eni)).dump(2);
      d.metrics_addr = "auto";
      if (o.env_credentials) {
        d.env = {{"ACCESS_KEY_ID", kEcsAccessKeyId}, {"ACCESS_KEY_SECRET", kEcsAccessKeySecret}};
      } else {
        d.env = {{"ACCESS_KEY_ID", ""}, {"ACCESS_KEY_SECRET", ""}};  // "" removes them
      }
      daemons_.push_back(std::make_unique<Daemon>(d));
    }
    std::vector<EcsNode> nodes;
    for (int i = 0; i < o.nodes; ++i) {
      EcsNode n;
      n.id = "i-node" + std::to_string(i + 1);
      n.netns = daemons_[i]->node()->name();
      nodes.push_back(n);
    }
    Json scenario = DefaultEcsScenario(nodes);
    if (o.scenario) o.scenario(scenario);
    emu_ = std::make_unique<EcsEmulator>(scenario);
    std::string why;
    ASSERT_TRUE(emu_->Start(&why)) << why;
    for (auto& d : daemons_) ASSERT_TRUE(d->Start(&why)) << why;
  }

  Daemon& D(int i = 0) { return *daemons_.at(i); }

  static Json Pool(const Daemon& d) {
    auto r = d.Ctl({"pool"});
    Json j = r.json();
    return j.is_object() ? j : Json::object();
  }
  static int Idle(const Daemon& d) {
    Json p = Pool(d);
    return p.contains("counts") ? p["counts"].value("idle", 0) : 0;
  }
  // trellisctl with a timeout long enough for ENI work.
  static RunResult SlowCtl(const Daemon& d, const std::vector<std::string>& args) {
    std::vector<std::string> argv = {(BinDir() / "trellisctl").string(), "--socket",
                                     d.socket().string(), "--timeout", "120000"};
    argv.insert(argv.end(), args.begin(), args.end());
    return trellis::test::Run(argv, {}, "", std::chrono::seconds(150));
  }

  // ENIs in the emulator carrying our tags for `instance`.
  std::vector<Json> OurEnis(const std::string& instance = "i-node1") {
    std::vector<Json> out;
    Json st = emu_->State();
    for (const auto& e : st.value("enis", Json::array())) {
      Json tags = e.value("tags", Json::object());
      if (tags.value("trellis.io/creator", "") == instance &&
          tags.value("trellis.io/cluster", "") == kCluster) {
        out.push_back(e);
      }
    }
    return out;
  }
  std::set<std::string> PoolEniIds(const Daemon& d) {
    std::set<std::string> ids;
    Json p = Pool(d);
    for (const auto& e : p.value("enis", Json::array())) ids.insert(e["id"].get<std::string>());
    return ids;
  }

  static RunResult Call(const std::string& command, Daemon& d, const std::string& id,
                        const Netns& ns) {
    CniCall c;
    c.command = command;
    c.container_id = id;
    c.netns = ns.path();
    c.args = "K8S_POD_NAMESPACE=default;K8S_POD_NAME=" + id;
    c.config = d.NetConf("1.0.0");
    return Cni(c);
  }
  static RunResult Add(Daemon& d, const std::string& id, const Netns& ns) {
    return Call("ADD", d, id, ns);
  }
  static RunResult Del(Daemon& d, const std::string& id, const Netns& ns) {
    return Call("DEL", d, id, ns);
  }

  // Rewrites the daemon's config file; its watcher applies it.
  void Reconfigure(Daemon& d, const Json& node_config) {
    auto path = d.dir() / "trellis.yaml";
    auto tmp = d.dir() / "trellis.yaml.new";
    std::ofstream(tmp) << node_config.dump(2);
    std::filesystem::rename(tmp, path);
  }

  // Declared first: destroyed last, after the daemons.
  std::unique_ptr<EcsEmulator> emu_;
  std::vector<std::unique_ptr<Daemon>> daemons_;
};

TEST_F(EniEmulatorTest, PodsGetVpcAddressesAndReachEachOtherAcrossNodes) {
  Up({.nodes = 2, .eni = {{"min_pool_size", 1}}});
  Netns pa("ea"), pb("eb");
  auto ra = Add(D(0), "pod-a", pa);
  ASSERT_EQ(ra.exit_code, 0) << ra.out << ra.err << D(0).Log();
  auto rb = Add(D(1), "pod-b", pb);
  ASSERT_EQ(rb.exit_code, 0) << rb.out << rb.err << D(1).Log();
  std::string a = FirstIp(ra.json()), b = FirstIp(rb.json());
  EXPECT_EQ(a.rfind("192.168.10.", 0), 0u) << a;
  EXPECT_EQ(b.rfind("192.168.10.", 0), 0u) << b;

  // The host's rule sends the pod's traffic to its ENI's table, which this
  // module filled: default via the vSwitch gateway, out of the ENI's link.
  Json pool = Pool(D(0));
  ASSERT_EQ(pool["enis"].size(), 1u) << pool.dump();
  Json eni = pool["enis"][0];
  int table = eni["route_table"];
  EXPECT_EQ(table, 101);
  std::string link = eni["link"];
  auto rules = D(0).NodeExec("ip rule").out;
  EXPECT_NE(rules.find("from " + a + " lookup " + std::to_string(table)), std::string::npos) << rules;
  auto routes = D(0).NodeExec("ip route show table " + std::to_string(table)).out;
  EXPECT_NE(routes.find("default via 192.168.10.253 dev " + link), std::string::npos) << routes;
  EXPECT_NE(D(0).NodeExec("ip -o link show " + link).out.find("UP"), std::string::npos);
  // The pool says who holds the address.
  bool owner = false;
  for (const auto& ip : eni["addresses"]) owner = owner || (ip["ip"] == a && ip["pod"] == "default/pod-a");
  EXPECT_TRUE(owner) << pool.dump();

  // Across nodes, through the VPC, both ways.
  auto ping = pa.Exec("ping -c2 -W2 " + b);
  EXPECT_EQ(ping.exit_code, 0) << ping.out << ping.err;
  ping = pb.Exec("ping -c2 -W2 " + a);
  EXPECT_EQ(ping.exit_code, 0) << ping.out << ping.err;

  // In the cloud: each node's ENI is attached to it, tagged ours.
  for (int i = 0; i < 2; ++i) {
    auto enis = OurEnis("i-node" + std::to_string(i + 1));
    ASSERT_EQ(enis.size(), 1u);
    EXPECT_EQ(enis[0]["status"], "InUse");
    EXPECT_EQ(enis[0]["instance"], "i-node" + std::to_string(i + 1));
  }

  EXPECT_EQ(Del(D(0), "pod-a", pa).exit_code, 0);
  EXPECT_EQ(Del(D(1), "pod-b", pb).exit_code, 0);
  rules = D(0).NodeExec("ip rule").out;
  EXPECT_EQ(rules.find("from " + a + " "), std::string::npos) << rules;
}

TEST_F(EniEmulatorTest, PoolFillsInBatchesAndDrains) {
  Up({.eni = {{"min_pool_size", 14}, {"max_pool_size", 20}}});
  ASSERT_TRUE(WaitFor([&] { return Idle(D()) >= 14; }, seconds(60))) << Pool(D()).dump(2);
  Json st = emu_->State();
  // 2 secondary ENIs (quota 3) with 9 pod addresses each; assignments come
  // in batches of at most 10, so at most 2 calls here.
  EXPECT_EQ(OurEnis().size(), 2u);
  EXPECT_LE(st["calls"].value("AssignPrivateIpAddresses", 0), 3);
  EXPECT_EQ(st["calls"].value("CreateNetworkInterface", 0), 2);
  size_t cloud_ips = 0;
  for (const auto& e : OurEnis()) cloud_ips += e["ips"].size() - 1;  // the primary is the link's
  EXPECT_EQ(cloud_ips, static_cast<size_t>(Pool(D())["counts"]["total"].get<int>()));

  // Drain: nothing kept, ENIs detached and deleted, their tables emptied.
  Reconfigure(D(), NodeConfig(EniConfig({{"min_pool_size", 0}, {"max_pool_size", 0}})));
  ASSERT_TRUE(WaitFor([&] { return OurEnis().empty(); }, seconds(60))) << Pool(D()).dump(2);
  EXPECT_EQ(D().NodeExec("ip route show table 101").out, "");
  EXPECT_EQ(D().NodeExec("ip route show table 102").out, "");
}

// A pod waiting for the cloud (a pool miss) must not hold up the node's other
// ADDs and DELs: ipam asks the address source without its lock.
TEST_F(EniEmulatorTest, APodWaitingForTheCloudDoesNotHoldUpTheOthers) {
  // reuse_delay: pod-a's address, once freed, cannot serve pod-b's wait.
  // api_timeout well above the injected latency: one slow attempt, not a
  // timed-out attempt retried until acquire_timeout runs out.
  Up({.eni = {{"min_pool_size", 0},
              {"max_pool_size", 1},
              {"reuse_delay", "60s"},
              {"api_timeout", "40s"},
              {"api_call_timeout", "60s"},
              {"acquire_timeout", "60s"}}});
  Netns a("pa"), b("pb");
  auto ra = Add(D(), "pod-a", a);  // a miss served at once: nothing slows the cloud yet
  ASSERT_EQ(ra.exit_code, 0) << ra.out << ra.err;
  // 10 s: the margin for the steps below on a loaded CI machine.
  ASSERT_TRUE(emu_->AddFault({{"action", "AssignPrivateIpAddresses"}, {"latency_ms", 10000},
                              {"count", -1}})
                  .ok());
  std::atomic<bool> add_b_done{false};
  RunResult rb;
  std::thread add_b([&] {
    rb = Add(D(), "pod-b", b);  // a miss: waits for the slow assignment
    add_b_done = true;
  });
  // Wait until pod-b's ADD is inside the pool, waiting for the cloud.
  ASSERT_TRUE(WaitFor(
      [&] { return Pool(D()).value("pool", Json::object()).value("waiting_pods", 0) > 0; },
      seconds(10)))
      << Pool(D()).dump(2);
  auto da = Del(D(), "pod-a", a);
  EXPECT_EQ(da.exit_code, 0) << da.out << da.err;
  // pod-b is still waiting for the cloud (10 s): the DEL did not wait for it.
  EXPECT_GT(Pool(D()).value("pool", Json::object()).value("waiting_pods", 0), 0)
      << "pod-a's DEL waited for pod-b's cloud call";
  EXPECT_FALSE(add_b_done);
  add_b.join();
  EXPECT_EQ(rb.exit_code, 0) << rb.out << rb.err;
  EXPECT_TRUE(emu_->ClearFaults());
  EXPECT_EQ(Del(D(), "pod-b", b).exit_code, 0);
}

TEST_F(EniEmulatorTest, ThrottlingIsRetriedAndTheEniQuotaIsRespected) {
  Up({.eni = {{"min_pool_size", 0}, {"max_pool_size", 3}},
      .scenario = [](Json& s) {
        s["instance_types"]["ecs.g6.large"] = {{"eni_quota", 2}, {"ipv4_per_eni", 4}};
      }});
  ASSERT_TRUE(emu_->AddFault({{"action", "AssignPrivateIpAddresses"},
                              {"error", "Throttling.User"},
                              {"http_status", 400},
                              {"count", 2}})
                  .ok());
  std::vector<std::unique_ptr<Netns>> pods;
  for (int i = 0; i < 3; ++i) {
    pods.push_back(std::make_unique<Netns>("eq"));
    auto r = Add(D(), "quota-" + std::to_string(i), *pods.back());
    ASSERT_EQ(r.exit_code, 0) << i << ": " << r.out << D().Log();
  }
  // One secondary ENI with three pod addresses is all the quota allows.
  Netns extra("eq");
  auto r = Add(D(), "quota-3", extra);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(r.json()["code"], 101) << r.out;  // no free address
  EXPECT_NE(r.json()["msg"].get<std::string>().find("quota"), std::string::npos) << r.out;
  Json st = emu_->State();
  EXPECT_EQ(st["errors"]["AssignPrivateIpAddresses"].value("Throttling.User", 0), 2);
  EXPECT_EQ(st["calls"].value("CreateNetworkInterface", 0), 1);
  EXPECT_EQ(st["errors"].value("AttachNetworkInterface", Json::object()).size(), 0u)
      << "tried to attach past the quota";
  auto [status, metrics] = HttpGet(D().metrics_port(), "/metrics", D().node()->name());
  ASSERT_EQ(status, 200);
  EXPECT_NE(metrics.find("trellis_eni_openapi_throttled_total{action=\"AssignPrivateIpAddresses\"} 2"),
            std::string::npos);
  EXPECT_NE(metrics.find("trellis_eni_max_enis 1"), std::string::npos);
  EXPECT_NE(metrics.find("trellis_eni_pool_addresses{state=\"in_use\"} 3"), std::string::npos);
  for (int i = 0; i < 3; ++i) Del(D(), "quota-" + std::to_string(i), *pods[i]);
  Del(D(), "quota-3", extra);
}

TEST_F(EniEmulatorTest, AnExhaustedVSwitchFailsOverToTheNext) {
  // vsw-b (a /28) holds 12 addresses: not enough for 12 pod addresses plus
  // the ENIs' own.
  Up({.eni = {{"vswitches", {"vsw-b", "vsw-a"}},
              {"vswitch_selection_policy", "ordered"},
              {"min_pool_size", 12},
              {"max_pool_size", 20}},
      .scenario = [](Json& s) {
        s["instance_types"]["ecs.g6.large"] = {{"eni_quota", 4}, {"ipv4_per_eni", 10}};
      }});
  ASSERT_TRUE(WaitFor([&] { return Idle(D()) >= 12; }, seconds(90))) << Pool(D()).dump(2);
  std::set<std::string> vswitches;
  for (const auto& e : OurEnis()) vswitches.insert(e["vswitch"].get<std::string>());
  EXPECT_TRUE(vswitches.contains("vsw-a")) << "no fail-over";
  EXPECT_TRUE(vswitches.contains("vsw-b"));
  bool noted = false;
  Json pool = Pool(D());
  for (const auto& e : pool["last_errors"]) {
    noted = noted || e["code"] == "InvalidVSwitchId.IpNotEnough";
  }
  EXPECT_TRUE(noted) << pool.dump(2);
}

TEST_F(EniEmulatorTest, KillDuringEniAttachLeavesNoLeakedEni) {
  Up({.eni = {{"min_pool_size", 2}}, .scenario = [](Json& s) { s["attach_delay_ms"] = 4000; }});
  // The ENI exists and is attaching when the daemon dies.
  ASSERT_TRUE(WaitFor(
      [&] {
        for (const auto& e : OurEnis()) {
          if (e["status"] == "Attaching") return true;
        }
        return false;
      },
      seconds(30)));
  D().Kill();
  ASSERT_TRUE(emu_->SetAttachDelay(0));
  std::string why;
  ASSERT_TRUE(D().Start(&why)) << why;
  ASSERT_TRUE(WaitFor([&] { return Idle(D()) >= 2; }, seconds(60))) << Pool(D()).dump(2);
  EXPECT_EQ(SlowCtl(D(), {"pool", "gc"}).exit_code, 0);
  auto ours = OurEnis();
  ASSERT_EQ(ours.size(), 1u) << emu_->State().dump(2);
  EXPECT_EQ(ours[0]["status"], "InUse");
  EXPECT_EQ(PoolEniIds(D()), std::set<std::string>{ours[0]["id"].get<std::string>()});
  EXPECT_EQ(emu_->State()["calls"].value("CreateNetworkInterface", 0), 1) << "created twice";
}

TEST_F(EniEmulatorTest, KillDuringEniCreateCallLeavesNoLeakedEni) {
  Up({.eni = {{"min_pool_size", 0}}});
  // The create call hangs (ECS creates the ENI, the answer is late); the
  // daemon dies while it waits for it.
  ASSERT_TRUE(emu_->AddFault({{"action", "CreateNetworkInterface"}, {"latency_ms", 3000}}).ok());
  Reconfigure(D(), NodeConfig(EniConfig({{"min_pool_size", 2}})));
  ASSERT_TRUE(WaitFor([&] { return emu_->State()["calls"].value("CreateNetworkInterface", 0) >= 1; },
                      seconds(30)));
  D().Kill();
  ASSERT_TRUE(emu_->ClearFaults());
  std::string why;
  ASSERT_TRUE(D().Start(&why)) << why;
  ASSERT_TRUE(WaitFor([&] { return Idle(D()) >= 2; }, seconds(60))) << Pool(D()).dump(2);
  EXPECT_EQ(SlowCtl(D(), {"pool", "gc"}).exit_code, 0);
  // Whatever the interrupted call created was adopted (same ClientToken) or
  // deleted: every ENI of ours is attached and in the pool.
  std::set<std::string> cloud;
  for (const auto& e : OurEnis()) {
    EXPECT_EQ(e["status"], "InUse") << e.dump();
    cloud.insert(e["id"].get<std::string>());
  }
  EXPECT_EQ(cloud, PoolEniIds(D())) << emu_->State().dump(2);
  // The repeated create (same ClientToken) made no second ENI.
  EXPECT_EQ(cloud.size(), 1u) << emu_->State().dump(2);
  EXPECT_NE(D().Log().find("interrupted creation"), std::string::npos) << D().Log();
}

TEST_F(EniEmulatorTest, LeakGcDeletesOnlyOurEnis) {
  Up({.eni = {{"min_pool_size", 1}}});
  ASSERT_TRUE(WaitFor([&] { return Idle(D()) >= 1; }, seconds(30)));
  auto add = [&](const Json& spec) {
    auto r = emu_->AddEni(spec);
    EXPECT_TRUE(r.ok()) << r.body.dump();
    return r.body["id"].get<std::string>();
  };
  Json ours = {{"trellis.io/cluster", kCluster}, {"trellis.io/creator", "i-node1"}};
  std::string leaked = add({{"vswitch", "vsw-a"}, {"tags", ours}});
  std::string foreign = add({{"vswitch", "vsw-a"}, {"tags", {{"team", "db"}}}});
  std::string foreign_attached =
      add({{"vswitch", "vsw-a"}, {"instance", "i-node1"}, {"secondary_ip_count", 1}});
  std::string other_node = add({{"vswitch", "vsw-a"},
                                {"tags", {{"trellis.io/cluster", kCluster},
                                          {"trellis.io/creator", "i-node9"}}}});
  std::string other_cluster = add({{"vswitch", "vsw-a"},
                                   {"tags", {{"trellis.io/cluster", "another"},
                                             {"trellis.io/creator", "i-node1"}}}});
  auto exists = [&](const std::string& id) {
    Json st = emu_->State();
    for (const auto& e : st["enis"]) {
      if (e["id"] == id) return true;
    }
    return false;
  };
  ASSERT_TRUE(WaitFor([&] { return !exists(leaked); }, seconds(30))) << D().Log();
  for (const auto& id : {foreign, foreign_attached, other_node, other_cluster}) {
    EXPECT_TRUE(exists(id)) << id << " is not ours, yet it is gone";
  }
  // The foreign ENI attached to this node: its link is left alone.
  std::string mac;
  Json st = emu_->State();
  for (const auto& e : st["enis"]) {
    if (e["id"] == foreign_attached) mac = e["mac"];
  }
  auto links = D().NodeExec("ip -o link show").out;
  auto at = links.find(mac);
  ASSERT_NE(at, std::string::npos) << links;
  std::string line = links.substr(links.rfind('\n', at) + 1, at - links.rfind('\n', at));
  EXPECT_EQ(line.find(",UP"), std::string::npos) << line;
  EXPECT_FALSE(PoolEniIds(D()).contains(foreign_attached));
}

TEST_F(EniEmulatorTest, ARestartRestoresTheEniDatapathAndKeepsPods) {
  Up({.eni = {{"min_pool_size", 1}}});
  Netns pod("er");
  auto r = Add(D(), "keep", pod);
  ASSERT_EQ(r.exit_code, 0) << r.out << D().Log();
  Json eni = Pool(D())["enis"][0];
  std::string link = eni["link"];
  // As after a reboot of the node's networking: table empty, link down.
  ASSERT_EQ(D().NodeExec("ip route flush table 101 && ip link set " + link + " down").exit_code, 0);
  D().Stop();
  std::string why;
  ASSERT_TRUE(D().Start(&why)) << why;
  ASSERT_TRUE(WaitFor([&] {
    return D().NodeExec("ip route show table 101").out.find("default via 192.168.10.253") !=
           std::string::npos;
  }, seconds(20))) << D().Log();
  EXPECT_NE(D().NodeExec("ip -o link show " + link).out.find("UP"), std::string::npos);
  auto ping = pod.Exec("ping -c1 -W2 192.168.10.253");
  EXPECT_EQ(ping.exit_code, 0) << ping.out;
  auto again = Add(D(), "keep", pod);
  ASSERT_EQ(again.exit_code, 0) << again.out;
  EXPECT_EQ(FirstIp(again.json()), FirstIp(r.json()));
  EXPECT_EQ(Del(D(), "keep", pod).exit_code, 0);
}

TEST_F(EniEmulatorTest, TrellisctlPoolShowsThePoolAndNoSecret) {
  // No keys in the environment: the RAM role's STS credentials sign.
  Up({.eni = {{"min_pool_size", 2}}, .env_credentials = false});
  ASSERT_TRUE(WaitFor([&] { return Idle(D()) >= 2; }, seconds(30))) << D().Log();
  Netns pod("es");
  ASSERT_EQ(Add(D(), "shown", pod).exit_code, 0);
  auto out = D().Ctl({"pool"}).out;
  Json p = Json::parse(out);
  EXPECT_EQ(p["mode"], "ENIMultiIP");
  EXPECT_EQ(p["instance"]["id"], "i-node1");
  EXPECT_EQ(p["quota"]["enis"], 3);
  EXPECT_EQ(p["quota"]["pod_addresses_per_eni"], 9);
  EXPECT_EQ(p["counts"]["in_use"], 1);
  EXPECT_NE(out.find("default/shown"), std::string::npos);
  EXPECT_NE(p["cloud"]["signing_with"].get<std::string>().find("RAM role trellis-node"),
            std::string::npos);
  auto [status, metrics] = HttpGet(D().metrics_port(), "/metrics", D().node()->name());
  std::string log = D().Log();
  for (const char* secret : {"sts-secret", "sts-token", kEcsAccessKeySecret}) {
    EXPECT_EQ(out.find(secret), std::string::npos) << secret;
    EXPECT_EQ(metrics.find(secret), std::string::npos) << secret;
    EXPECT_EQ(log.find(secret), std::string::npos) << secret;
  }
  EXPECT_EQ(Del(D(), "shown", pod).exit_code, 0);
}

TEST_F(EniEmulatorTest, DisablingTheModuleRemovesItsEnisAndRoutes) {
  Up({.eni = {{"min_pool_size", 2}}});
  ASSERT_TRUE(WaitFor([&] { return Idle(D()) >= 2; }, seconds(30)));
  ASSERT_EQ(OurEnis().size(), 1u);
  std::string link = Pool(D())["enis"][0]["link"];
  Reconfigure(D(), NodeConfig(EniConfig({}), /*eni_enabled=*/false));
  ASSERT_TRUE(WaitFor([&] { return OurEnis().empty(); }, seconds(60))) << D().Log();
  EXPECT_EQ(D().NodeExec("ip route show table 101").out, "");
  EXPECT_NE(D().NodeExec("ip link show " + link).exit_code, 0) << "the ENI's link is still there";
  // And ipam serves its local range now.
  Netns pod("ed");
  auto r = Add(D(), "local", pod);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(FirstIp(r.json()).rfind("10.251.0.", 0), 0u);
  Del(D(), "local", pod);
}

}  // namespace
}  // namespace trellis::test
