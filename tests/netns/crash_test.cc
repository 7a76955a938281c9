// kill -9 of trellisd at arbitrary moments while pods churn, then restart:
// the daemon reconciles before it reports ready; no address leaks or is
// handed out twice, no orphan veth stays, running pods keep connectivity, and
// while the daemon is down the CNI binary answers ADD with code 11 at once.
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "harness.h"

namespace trellis::test {
namespace {

const char* kConfig = R"(
modules:
  ipam: {config: {ranges: [{subnet: 10.254.0.0/22}], reuse_delay: 0}}
  qos: false
  policy: false
)";

std::string FirstIp(const Json& r) {
  std::string a = r["ips"][0]["address"];
  return a.substr(0, a.find('/'));
}

TEST(Crash, Kill9DuringChurnLosesNothing) {
  Daemon d({.config_yaml = kConfig});
  std::string why;
  ASSERT_TRUE(d.Start(&why)) << why;
  auto add = [&](const std::string& id, const Netns& ns) {
    return Cni({.command = "ADD", .container_id = id, .netns = ns.path(),
                .args = "K8S_POD_NAMESPACE=crash;K8S_POD_NAME=" + id, .config = d.NetConf()});
  };
  auto del = [&](const std::string& id, const std::string& netns) {
    return Cni({.command = "DEL", .container_id = id, .netns = netns, .config = d.NetConf()});
  };

  // Two long-lived pods pinging each other throughout.
  Netns sa("sa"), sb("sb");
  auto ra = add("stable-a", sa), rb = add("stable-b", sb);
  ASSERT_EQ(ra.exit_code, 0) << ra.out;
  ASSERT_EQ(rb.exit_code, 0) << rb.out;
  auto pinger = std::async(std::launch::async, [&] {
    return sa.Exec("ping -i 0.05 -w 12 -W 1 " + FirstIp(rb.json()) + " | tail -2",
                   std::chrono::seconds(30));
  });

  // Churn: every worker adds pods and deletes some, as a kubelet would; an
  // ADD that failed (the daemon died under it) is followed by a DEL.
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::map<std::string, std::unique_ptr<Netns>> alive;  // ADD succeeded, no DEL yet
  std::atomic<int> adds{0}, failed_adds{0};
  auto worker = [&](int w) {
    std::mt19937 rng(w);
    for (int i = 0; !stop; ++i) {
      std::string id = "churn-" + std::to_string(w) + "-" + std::to_string(i);
      auto ns = std::make_unique<Netns>("c");
      auto r = add(id, *ns);
      if (r.exit_code == 0) {
        adds++;
        if (rng() % 3 == 0) {
          // Removed again; retried until the daemon takes it.
          while (del(id, ns->path()).exit_code != 0 && !stop) {
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
          }
        } else {
          std::lock_guard lock(mu);
          alive[id] = std::move(ns);
        }
      } else {
        failed_adds++;
        while (del(id, ns->path()).exit_code != 0 && !stop) {
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
      }
    }
  };
  std::vector<std::thread> workers;
  for (int w = 0; w < 4; ++w) workers.emplace_back(worker, w);

  std::mt19937 rng(42);
  int kills = 0;
  for (; kills < 5; ++kills) {
    std::this_thread::sleep_for(std::chrono::milliseconds(300 + rng() % 500));
    d.Kill();
    // While it is down: ADD answers 11, promptly.
    Netns probe("pr");
    auto t0 = std::chrono::steady_clock::now();
    auto down = add("while-down", probe);
    EXPECT_EQ(down.json()["code"], 11) << down.out;
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3));
    ASSERT_TRUE(d.Start(&why)) << why;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  stop = true;
  for (auto& t : workers) t.join();
  auto ping = pinger.get();
  std::cout << "churn: " << adds << " ADDs succeeded, " << failed_adds
            << " failed under a kill, " << kills << " kills\n";
  EXPECT_GT(adds.load(), 20) << "the churn did too little to mean anything";

  // 1. Records are exactly the pods the runtime believes alive (+ the two stable ones).
  auto pods = d.Ctl({"pods", "-o", "json"}).json()["pods"];
  std::set<std::string> recorded;
  for (const auto& p : pods) {
    EXPECT_EQ(p["state"], "ready") << p.dump();
    recorded.insert(p["container_id"]);
  }
  std::set<std::string> expected = {"stable-a", "stable-b"};
  {
    std::lock_guard lock(mu);
    for (const auto& [id, ns] : alive) expected.insert(id);
  }
  // A worker interrupted by `stop` between a failed ADD and its DEL may leave
  // one extra record per worker; delete those explicitly, then compare.
  for (const auto& id : recorded) {
    if (!expected.contains(id)) {
      EXPECT_EQ(del(id, "").exit_code, 0);
    }
  }
  pods = d.Ctl({"pods", "-o", "json"}).json()["pods"];
  recorded.clear();
  for (const auto& p : pods) recorded.insert(p["container_id"]);
  EXPECT_EQ(recorded, expected);

  // 2. ipam holds exactly the records' addresses: nothing leaked, nothing twice.
  auto addrs = d.Ctl({"addresses", "-o", "json"}).json()["addresses"];
  std::set<std::string> held_by;
  std::set<std::string> ips;
  for (const auto& a : addrs) {
    EXPECT_TRUE(ips.insert(a["ip"]).second) << "address held twice: " << a.dump();
    held_by.insert(a["container_id"]);
  }
  EXPECT_EQ(held_by, expected);
  std::set<std::string> pod_ips;
  for (const auto& p : pods) {
    for (const auto& a : p["addresses"]) {
      std::string ip = a.get<std::string>();
      EXPECT_TRUE(pod_ips.insert(ip.substr(0, ip.find('/'))).second) << "two pods share " << ip;
    }
  }
  EXPECT_EQ(pod_ips, ips);

  // 3. No orphan interface in the node: one host end per record.
  EXPECT_TRUE(WaitFor([&] {
    return d.NodeExec("ip -br link | grep -c '^tr'").out == std::to_string(expected.size()) + "\n";
  })) << d.NodeExec("ip -br link").out;

  // 4. Every surviving pod passes CHECK (kernel state intact).
  {
    std::lock_guard lock(mu);
    for (const auto& [id, ns] : alive) {
      auto chk = Cni({.command = "CHECK", .container_id = id, .netns = ns->path(), .config = d.NetConf()});
      EXPECT_EQ(chk.exit_code, 0) << id << ": " << chk.out;
    }
  }

  // 5. The stable pods never lost connectivity across five restarts.
  EXPECT_NE(ping.out.find(" 0% packet loss"), std::string::npos) << ping.out;

  // Clean up through the daemon: nothing left afterwards.
  {
    std::lock_guard lock(mu);
    for (const auto& [id, ns] : alive) EXPECT_EQ(del(id, ns->path()).exit_code, 0);
    alive.clear();
  }
  EXPECT_EQ(del("stable-a", sa.path()).exit_code, 0);
  EXPECT_EQ(del("stable-b", sb.path()).exit_code, 0);
  EXPECT_EQ(d.Ctl({"addresses", "-o", "json"}).json()["addresses"].size(), 0u);
  EXPECT_GE(kills, 5);
}

}  // namespace
}  // namespace trellis::test
