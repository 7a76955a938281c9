// The ENI warm pool against an in-memory ECS: filling in batches within the
// quotas, pool hits without cloud calls, reuse delay, reclaiming and
// draining, vSwitch failover, throttling back-off, crash recovery by
// ClientToken, leak GC that touches only our ENIs, deactivation, restarts.
#include <gtest/gtest.h>

#include "fakes.h"
#include "harness.h"
#include "pool.h"

namespace trellis::eni::testing {
namespace {

using std::chrono::milliseconds;
using trellis::test::WaitFor;

sdk::Pod PodNamed(const std::string& id) {
  sdk::Pod p;
  p.container_id = id;
  p.ifname = "eth0";
  p.k8s_namespace = "default";
  p.k8s_name = id;
  return p;
}

const std::map<std::string, std::string> kOurTags = {{kTagCluster, "c1"},
                                                     {kTagCreator, "i-node1"}};

struct Rig {
  explicit Rig(bool fake_clock = false) : fake(fake_clock) {
    ecs = std::make_shared<FakeEcs>();
    disc = std::make_unique<FakeDiscovery>(ecs.get());
    cfg.security_groups = {"sg-test"};
    cfg.cluster_id = "c1";
    cfg.reuse_delay = Millis(0);
    cfg.idle_reclaim_after = Millis(0);
    cfg.eni_gc_threshold = Millis(0);
    cfg.eni_gc_interval = Millis(0);
    cfg.acquire_timeout = Millis(3000);
    cfg.pool_check_interval = Millis(100);
    cfg.min_pool_size = 0;
    cfg.max_pool_size = 5;
  }
  ~Rig() {
    if (pool) pool->Stop();
  }
  aliyun::Clock* clock() { return fake ? static_cast<aliyun::Clock*>(&fake_clock) : &real_clock; }
  Pool& Start(bool worker = false) {
    pool = std::make_unique<Pool>(cfg, ecs, &store, &dp, disc.get(), clock(), &obs);
    pool->Start(worker);
    return *pool;
  }
  void Restart(bool worker = false) {
    pool->Stop();
    pool.reset();
    real_clock.Reset();
    fake_clock.Reset();
    Start(worker);
  }
  std::vector<aliyun::NetworkInterfaceInfo> Ours() {
    std::vector<aliyun::NetworkInterfaceInfo> out;
    for (const auto& e : ecs->All()) {
      if (e.tags.count(kTagCreator)) out.push_back(e);
    }
    return out;
  }

  bool fake;
  FakeClock fake_clock;
  aliyun::RealClock real_clock;
  std::shared_ptr<FakeEcs> ecs;
  MemStore store;
  FakeDatapath dp;
  std::unique_ptr<FakeDiscovery> disc;
  FakeObserver obs;
  EniConfig cfg;
  std::unique_ptr<Pool> pool;
};

TEST(EniPool, FillsInBatchesOfTenWithinTheQuotas) {
  Rig rig;
  rig.ecs->eni_quota = 4;  // 3 secondary ENIs
  rig.ecs->ips_per_eni = 10;  // 9 pod addresses each
  rig.cfg.min_pool_size = 25;
  rig.cfg.max_pool_size = 30;
  Pool& pool = rig.Start();
  pool.EnsureNow();
  PoolCounts c = pool.Counts();
  EXPECT_EQ(c.idle, 27);  // below min_pool_size: refilled half-way to max_pool_size
  EXPECT_EQ(c.enis, 3);
  EXPECT_EQ(c.eni_limit, 3);
  EXPECT_EQ(rig.ecs->Calls("CreateNetworkInterface"), 3);
  EXPECT_EQ(rig.ecs->Calls("AttachNetworkInterface"), 3);
  for (int n : rig.ecs->assign_sizes) EXPECT_LE(n, 10);
  EXPECT_EQ(rig.ecs->Calls("AssignPrivateIpAddresses"), 3);  // 9 + 9 + 9
  // Every ENI: tagged ours, its own table, default route via the gateway.
  std::set<uint32_t> tables;
  for (const auto& e : rig.Ours()) {
    EXPECT_EQ(e.status, "InUse");
    EXPECT_EQ(e.tags.at(kTagCluster), "c1");
    EXPECT_EQ(e.tags.at(kTagCreator), "i-node1");
    auto setups = rig.dp.Setups();
    ASSERT_TRUE(setups.contains(e.id));
    const EniLink l = setups.at(e.id);
    tables.insert(l.table);
    EXPECT_EQ(l.mac, e.mac);
    EXPECT_EQ(l.primary_ip, e.primary_ip);
    ASSERT_EQ(l.routes.size(), 1u);
    EXPECT_EQ(l.routes[0], (EniLink::Route{"0.0.0.0/0", "192.168.10.253", e.mac}));
  }
  EXPECT_EQ(tables, (std::set<uint32_t>{101, 102, 103}));
  EXPECT_EQ(rig.obs.last.idle, 27);  // the gauges follow
}

TEST(EniPool, APoolHitMakesNoCloudCallAndIsIdempotent) {
  Rig rig;
  rig.cfg.min_pool_size = 3;
  Pool& pool = rig.Start();
  pool.EnsureNow();
  int calls = rig.ecs->TotalCalls();
  auto a = pool.Acquire(PodNamed("p1"), 4, 1);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(rig.ecs->TotalCalls(), calls);
  std::string eni = rig.Ours().at(0).id;
  EXPECT_EQ(a[0].source_ref, eni);
  EXPECT_EQ(a[0].route_table, 101u);
  EXPECT_EQ(a[0].prefix_len, 24);
  EXPECT_EQ(a[0].GatewayString(), "192.168.10.253");
  auto again = pool.Acquire(PodNamed("p1"), 4, 1);
  EXPECT_EQ(again[0].IpString(), a[0].IpString());
  // The primary address of the ENI stays on its link, never on a pod.
  EXPECT_NE(a[0].IpString(), rig.Ours().at(0).primary_ip);
  Json st = pool.Status();
  EXPECT_EQ(st["counts"]["in_use"], 1);
  bool found = false;
  for (const auto& ip : st["enis"][0]["addresses"]) {
    if (ip["ip"] == a[0].IpString()) {
      found = true;
      EXPECT_EQ(ip["state"], "in_use");
      EXPECT_EQ(ip["pod"], "default/p1");
    }
  }
  EXPECT_TRUE(found);
  pool.Release(a);
  EXPECT_EQ(pool.Counts().in_use, 0);
  EXPECT_EQ(rig.ecs->TotalCalls(), calls);
  EXPECT_THROW(pool.Acquire(PodNamed("p6"), 6, 1), sdk::Error);
}

TEST(EniPool, AMissWaitsForTheWorkerAndAReleasedAddressCoolsDown) {
  Rig rig;
  rig.cfg.min_pool_size = 0;
  rig.cfg.max_pool_size = 2;
  rig.cfg.reuse_delay = Millis(400);
  Pool& pool = rig.Start(/*worker=*/true);
  auto a = pool.Acquire(PodNamed("p1"), 4, 1);  // empty pool: an ENI is made for it
  ASSERT_EQ(a.size(), 1u);
  pool.Release(a);
  auto b = pool.Acquire(PodNamed("p2"), 4, 1);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_NE(b[0].IpString(), a[0].IpString()) << "reused within reuse_delay";
  ASSERT_TRUE(WaitFor([&] { return pool.Counts().cooling == 0; }, std::chrono::seconds(5)));
  pool.Release(b);
  // After the delay the first one is usable again.
  bool seen_idle = false;
  Json st = pool.Status();
  for (const auto& ip : st["enis"][0]["addresses"]) {
    if (ip["ip"] == a[0].IpString()) seen_idle = ip["state"] == "idle";
  }
  EXPECT_TRUE(seen_idle) << a[0].IpString() << " " << pool.Status().dump();
}

TEST(EniPool, ReclaimsAboveMaxPoolSizeAndDrainsEmptyEnis) {
  Rig rig;
  rig.cfg.min_pool_size = 6;
  rig.cfg.max_pool_size = 10;
  Pool& pool = rig.Start();
  pool.EnsureNow();
  ASSERT_EQ(pool.Counts().idle, 8);
  EniConfig shrink = rig.cfg;
  shrink.min_pool_size = 0;
  shrink.max_pool_size = 2;
  pool.Reconfigure(shrink, nullptr);
  pool.EnsureNow();
  EXPECT_EQ(pool.Counts().idle, 2);
  EXPECT_EQ(rig.ecs->Calls("UnassignPrivateIpAddresses"), 1);  // 6 in one call
  ASSERT_EQ(rig.Ours().size(), 1u);
  EXPECT_EQ(rig.Ours()[0].private_ips.size(), 3u);  // primary + 2
  // With nothing to keep, the ENI itself goes: detached, deleted, its table
  // emptied, its records gone.
  shrink.max_pool_size = 0;
  pool.Reconfigure(shrink, nullptr);
  pool.EnsureNow();
  EXPECT_TRUE(rig.Ours().empty());
  EXPECT_EQ(rig.dp.teardowns.size(), 1u);
  EXPECT_TRUE(rig.store.Scan("eni/").empty());
  EXPECT_TRUE(rig.store.Scan("ip/").empty());
  EXPECT_EQ(pool.Counts().enis, 0);
}

TEST(EniPool, KeepsEniCountMinEvenWhenIdle) {
  Rig rig;
  rig.cfg.eni_count_min = 2;
  rig.cfg.max_pool_size = 0;
  Pool& pool = rig.Start();
  pool.EnsureNow();
  EXPECT_EQ(rig.Ours().size(), 2u);
  pool.EnsureNow();
  EXPECT_EQ(rig.Ours().size(), 2u);
}

TEST(EniPool, QuotaExhaustionFailsFastAndNamesTheQuota) {
  Rig rig;
  rig.ecs->eni_quota = 2;   // one secondary ENI
  rig.ecs->ips_per_eni = 4; // three pod addresses
  Pool& pool = rig.Start(/*worker=*/true);
  for (int i = 0; i < 3; ++i) pool.Acquire(PodNamed("p" + std::to_string(i)), 4, 1);
  auto start = std::chrono::steady_clock::now();
  try {
    pool.Acquire(PodNamed("p3"), 4, 1);
    FAIL() << "a fourth address";
  } catch (const sdk::Error& e) {
    EXPECT_EQ(e.code(), TRELLIS_E_EXHAUSTED);
    EXPECT_NE(std::string(e.what()).find("quota 2"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3)) << "did not fail fast";
  EXPECT_EQ(rig.ecs->Calls("CreateNetworkInterface"), 1);
}

TEST(EniPool, FailsOverToAnotherVSwitchWhenOneIsExhausted) {
  Rig rig;
  rig.ecs->vswitches = {{"vsw-small", {"192.168.20.0/28", 1}}, {"vsw-big", {"192.168.30.0/24", 200}}};
  rig.cfg.vswitches = {"vsw-small", "vsw-big"};
  rig.cfg.vswitch_selection = "ordered";
  rig.cfg.min_pool_size = 5;
  Pool& pool = rig.Start();
  // The first ENI lands in vsw-small and takes its last address; assigning
  // more fails with InvalidVSwitchId.IpNotEnough; the pool backs off from
  // vsw-small and the next ENI goes to vsw-big.
  pool.EnsureNow();
  EXPECT_GE(pool.Counts().idle, 5);
  std::set<std::string> used;
  for (const auto& e : rig.Ours()) used.insert(e.vswitch_id);
  EXPECT_TRUE(used.contains("vsw-big"));
  Json st = pool.Status();
  bool backed_off = false;
  for (const auto& v : st["vswitches"]) {
    if (v["id"] == "vsw-small") backed_off = v.contains("exhausted_for_ms");
  }
  EXPECT_TRUE(backed_off) << st.dump();
  bool logged = false;
  for (const auto& e : st["last_errors"]) {
    logged = logged || e["code"] == "InvalidVSwitchId.IpNotEnough";
  }
  EXPECT_TRUE(logged);
}

TEST(EniPool, CreationFailsOverWithinOneAttemptAndPrefersTheFreestVSwitch) {
  Rig rig;
  rig.ecs->vswitches = {{"vsw-empty", {"192.168.20.0/28", 0}}, {"vsw-big", {"192.168.30.0/24", 200}}};
  rig.cfg.vswitches = {"vsw-empty", "vsw-big"};
  rig.cfg.min_pool_size = 2;
  Pool& pool = rig.Start();
  pool.EnsureNow();
  // "most" free first: vsw-big straight away, no failed call.
  EXPECT_EQ(rig.ecs->Calls("CreateNetworkInterface"), 1);
  EXPECT_EQ(rig.Ours().at(0).vswitch_id, "vsw-big");
}

TEST(EniPool, ThrottledCallsBackOffAndAreRetried) {
  Rig rig(/*fake_clock=*/true);
  rig.cfg.min_pool_size = 4;
  rig.ecs->Fail("AssignPrivateIpAddresses", "Throttling.User", 1);
  Pool& pool = rig.Start();
  try {
    pool.EnsureNow();
    FAIL() << "filled through a throttled call";
  } catch (const sdk::Error& e) {
    EXPECT_EQ(e.code(), TRELLIS_E_UNAVAILABLE);
    EXPECT_NE(std::string(e.what()).find("Throttling.User"), std::string::npos) << e.what();
  }
  EXPECT_EQ(pool.Counts().idle, 0);
  // Not again before the back-off passed...
  EXPECT_THROW(pool.EnsureNow(), sdk::Error);
  EXPECT_EQ(rig.ecs->Calls("AssignPrivateIpAddresses"), 1);
  // ...then it is.
  rig.fake_clock.Advance(std::chrono::seconds(6));
  pool.EnsureNow();
  EXPECT_EQ(pool.Counts().idle, 4);
  EXPECT_EQ(rig.ecs->Calls("AssignPrivateIpAddresses"), 2);
  EXPECT_EQ(rig.ecs->Calls("CreateNetworkInterface"), 1);
}

TEST(EniPool, AFailedCreationCountsAndBacksOff) {
  Rig rig(/*fake_clock=*/true);
  rig.cfg.min_pool_size = 1;
  rig.ecs->Fail("AttachNetworkInterface", "InvalidOperation.Conflict", 1);
  Pool& pool = rig.Start();
  EXPECT_THROW(pool.EnsureNow(), sdk::Error);
  // The ENI that could not be attached was deleted again; the failure counted.
  EXPECT_TRUE(rig.Ours().empty());
  ASSERT_EQ(rig.obs.creation_failures.size(), 1u);
  EXPECT_EQ(rig.obs.creation_failures[0], "InvalidOperation.Conflict");
  EXPECT_THROW(pool.EnsureNow(), sdk::Error);  // backing off: no second create yet
  EXPECT_EQ(rig.ecs->Calls("CreateNetworkInterface"), 1);
  rig.fake_clock.Advance(std::chrono::seconds(3));
  pool.EnsureNow();
  EXPECT_EQ(rig.Ours().size(), 1u);
}

TEST(EniPool, AnInterruptedCreationIsRecoveredByItsClientToken) {
  Rig rig;
  // The previous process wrote its intent, ECS created the ENI, the process
  // died before it learnt the ENI's id.
  aliyun::CreateEniRequest req;
  req.vswitch_id = "vsw-a";
  req.security_groups = {"sg-test"};
  req.tags = kOurTags;
  req.client_token = "tok-crash";
  std::string id = rig.ecs->CreateNetworkInterface(req).id;
  rig.store.Put("op/tok-crash", R"({"v":"vsw-a","t":1})");
  // And one whose create never reached ECS.
  rig.store.Put("op/tok-lost", R"({"v":"vsw-a","t":1})");
  Pool& pool = rig.Start();
  pool.EnsureNow();
  auto ours = rig.Ours();
  ASSERT_EQ(ours.size(), 2u) << "a duplicate or a leak";
  for (const auto& e : ours) {
    EXPECT_EQ(e.status, "InUse");
    EXPECT_EQ(e.instance_id, "i-node1");
  }
  EXPECT_TRUE(rig.store.Scan("op/").empty());
  EXPECT_EQ(pool.Counts().enis, 2);
  bool adopted = false;
  Json st = pool.Status();
  for (const auto& e : st["enis"]) adopted = adopted || e["id"] == id;
  EXPECT_TRUE(adopted) << id << " " << pool.Status().dump();
}

TEST(EniPool, AnEniLeftAttachingIsResumed) {
  Rig rig;
  std::string id = rig.ecs->AddEni(kOurTags, "", 0);  // created, never attached
  auto info = *rig.ecs->Get(id);
  rig.store.Put("eni/" + id, Json({{"mac", info.mac}, {"vswitch", "vsw-a"},
                                   {"primary_ip", info.primary_ip}, {"slot", 1},
                                   {"phase", "attaching"}, {"token", "tok-1"}})
                                 .dump());
  Pool& pool = rig.Start();
  pool.EnsureNow();
  EXPECT_EQ(rig.ecs->Get(id)->status, "InUse");
  EXPECT_EQ(pool.Counts().enis, 1);
  EXPECT_TRUE(rig.dp.Setups().contains(id));
}

TEST(EniPool, LeakGcTouchesOnlyOurEnis) {
  Rig rig;
  rig.cfg.min_pool_size = 2;
  rig.cfg.max_pool_size = 2;
  Pool& pool = rig.Start();
  pool.EnsureNow();
  std::string known = rig.Ours().at(0).id;
  std::string leaked = rig.ecs->AddEni(kOurTags, "", 0);
  std::string foreign = rig.ecs->AddEni({{"team", "db"}}, "", 0);
  std::string foreign_attached = rig.ecs->AddEni({}, "i-node1", 1);
  std::string other_node = rig.ecs->AddEni({{kTagCluster, "c1"}, {kTagCreator, "i-node2"}}, "", 0);
  std::string other_cluster = rig.ecs->AddEni({{kTagCluster, "c2"}, {kTagCreator, "i-node1"}}, "", 0);
  std::string unknown_attached = rig.ecs->AddEni(kOurTags, "i-node1", 2);
  rig.ecs->AddIp(known);  // assigned in the cloud, unknown to the pool
  pool.GcNow();
  EXPECT_FALSE(rig.ecs->Get(leaked)) << "our leaked ENI survived";
  for (const auto& id : {foreign, foreign_attached, other_node, other_cluster}) {
    EXPECT_TRUE(rig.ecs->Get(id)) << id << " is not ours and was deleted";
  }
  EXPECT_EQ(rig.ecs->Get(foreign_attached)->private_ips.size(), 2u);
  EXPECT_EQ(rig.ecs->Get(known)->private_ips.size(), 3u) << "the stray address stayed";
  // Ours, attached here, unknown: adopted with its addresses.
  EXPECT_EQ(pool.Counts().enis, 2);
  EXPECT_TRUE(rig.dp.Setups().contains(unknown_attached));
  EXPECT_FALSE(rig.dp.Setups().contains(foreign_attached));
  EXPECT_EQ(pool.Counts().idle, 4);
}

TEST(EniPool, LeakGcWaitsForTheThreshold) {
  Rig rig(/*fake_clock=*/true);
  rig.cfg.eni_gc_threshold = Millis(60000);
  Pool& pool = rig.Start();
  std::string leaked = rig.ecs->AddEni(kOurTags, "", 0);
  pool.GcNow();
  EXPECT_TRUE(rig.ecs->Get(leaked)) << "deleted before eni_gc_threshold";
  rig.fake_clock.Advance(std::chrono::seconds(61));
  pool.GcNow();
  EXPECT_FALSE(rig.ecs->Get(leaked));
}

TEST(EniPool, AStrayAddressIsUnassignedAfterTheThreshold) {
  Rig rig(/*fake_clock=*/true);
  rig.cfg.eni_gc_threshold = Millis(60000);
  rig.cfg.min_pool_size = 2;
  rig.cfg.max_pool_size = 2;
  Pool& pool = rig.Start();
  pool.EnsureNow();
  const std::string eni = rig.Ours().at(0).id;
  const size_t before = rig.ecs->Get(eni)->private_ips.size();
  rig.ecs->AddIp(eni);  // assigned in the cloud, unknown to the pool
  pool.GcNow();
  EXPECT_EQ(rig.ecs->Get(eni)->private_ips.size(), before + 1) << "unassigned before the threshold";
  rig.fake_clock.Advance(std::chrono::seconds(61));
  pool.GcNow();
  EXPECT_EQ(rig.ecs->Get(eni)->private_ips.size(), before) << "the stray address stayed";
  EXPECT_EQ(pool.Counts().idle, 2) << "the pool's own addresses were touched";
}

TEST(EniPool, DeactivateDeletesOurEnisAndForgetsEverything) {
  Rig rig;
  rig.cfg.min_pool_size = 12;
  rig.cfg.max_pool_size = 12;
  Pool& pool = rig.Start();
  pool.EnsureNow();
  ASSERT_EQ(rig.Ours().size(), 2u);
  std::string foreign = rig.ecs->AddEni({}, "i-node1", 0);
  rig.store.Put("op/tok-x", R"({"v":"vsw-a"})");
  pool.Deactivate();
  EXPECT_TRUE(rig.Ours().empty());
  EXPECT_TRUE(rig.ecs->Get(foreign));
  EXPECT_EQ(rig.store.Size(), 0u);
  EXPECT_TRUE(rig.dp.Setups().empty());
  EXPECT_EQ(rig.dp.teardowns.size(), 2u);
}

TEST(EniPool, ARestartKeepsOwnersAndServesFromTheRecord) {
  Rig rig;
  rig.cfg.min_pool_size = 3;
  Pool& pool = rig.Start();
  pool.EnsureNow();
  auto a = pool.Acquire(PodNamed("p1"), 4, 1);
  int writes = rig.ecs->WriteCalls();
  rig.Restart();
  EXPECT_EQ(rig.pool->Counts().in_use, 1);
  auto again = rig.pool->Acquire(PodNamed("p1"), 4, 1);
  EXPECT_EQ(again[0].IpString(), a[0].IpString());
  EXPECT_EQ(again[0].route_table, a[0].route_table);
  auto b = rig.pool->Acquire(PodNamed("p2"), 4, 1);
  EXPECT_NE(b[0].IpString(), a[0].IpString());
  EXPECT_EQ(rig.ecs->WriteCalls(), writes);
  EXPECT_TRUE(rig.dp.Setups().contains(a[0].source_ref));  // the datapath was restored
}

TEST(EniPool, RefillsBelowMinPoolSizeInOneBatch) {
  Rig rig;
  rig.cfg.min_pool_size = 5;
  rig.cfg.max_pool_size = 15;
  Pool& pool = rig.Start();
  pool.EnsureNow();
  ASSERT_EQ(pool.Counts().idle, 10);
  int assigns = rig.ecs->Calls("AssignPrivateIpAddresses");
  // Down to min_pool_size: nothing to do yet.
  for (int i = 0; i < 5; ++i) pool.Acquire(PodNamed("r" + std::to_string(i)), 4, 1);
  pool.EnsureNow();
  EXPECT_EQ(rig.ecs->Calls("AssignPrivateIpAddresses"), assigns);
  // Below it: one call brings the pool back half-way to max_pool_size.
  pool.Acquire(PodNamed("r5"), 4, 1);
  pool.EnsureNow();
  EXPECT_EQ(rig.ecs->Calls("AssignPrivateIpAddresses"), assigns + 1);
  EXPECT_EQ(pool.Counts().idle, 10);
}

TEST(EniPool, SteadyChurnMakesNoCloudCalls) {
  Rig rig;
  rig.cfg.min_pool_size = 3;
  rig.cfg.max_pool_size = 10;
  Pool& pool = rig.Start();
  pool.EnsureNow();
  int writes = rig.ecs->WriteCalls();
  for (int i = 0; i < 60; ++i) {
    auto a = pool.Acquire(PodNamed("churn-" + std::to_string(i)), 4, 1);
    pool.Release(a);
    if (i % 10 == 0) pool.EnsureNow();
  }
  EXPECT_EQ(rig.ecs->WriteCalls(), writes);
}

TEST(EniPool, RoutingPolicyShapesEveryEniTable) {
  Rig rig;
  rig.cfg.min_pool_size = 1;
  rig.cfg.default_route = {"primary"};
  rig.cfg.policy_routes = {{"10.0.0.0/8", {"self"}}, {"172.16.0.0/12", {"primary"}}};
  Pool& pool = rig.Start();
  pool.EnsureNow();
  auto e = rig.Ours().at(0);
  const EniLink l = rig.dp.Setups().at(e.id);
  ASSERT_EQ(l.routes.size(), 3u);
  EXPECT_EQ(l.routes[0], (EniLink::Route{"0.0.0.0/0", "192.168.10.253", "02:00:00:00:ff:01"}));
  EXPECT_EQ(l.routes[1], (EniLink::Route{"10.0.0.0/8", "192.168.10.253", e.mac}));
  EXPECT_EQ(l.routes[2], (EniLink::Route{"172.16.0.0/12", "192.168.10.253", "02:00:00:00:ff:01"}));
}

}  // namespace
}  // namespace trellis::eni::testing
