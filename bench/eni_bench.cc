// ENI benchmark, against the ECS emulator (tests/fixtures/ecs_emulator):
//
//   1. ADD/DEL latency of a pod whose address is a pool hit (ipam source:
//      eni, the pool pre-filled) against the ipam-only local-range path, in
//      the same run, driven like libcni (ConflistRunner).
//   2. ECS OpenAPI calls per pod under steady churn with the warm pool: a
//      working set of pods where one pod is replaced at a time; every call
//      the emulator counts (Describe* included) divided by the pods created.
//   3. Time until the first pod on a fresh node is ready: from starting
//      trellisd (empty pool, cold metadata) to the first ADD's answer, with
//      the emulator's attach delay 0 and as configured.
//
//   eni_bench [--pods N] [--concurrency 1,8] [--churn-pods N] [--working-set N]
//             [--attach-delay-ms N] [--json FILE]
#include <algorithm>
#include <cstdio>
#include <deque>
#include <fstream>
#include <iostream>
#include <thread>

#include "bench_util.h"
#include "conflist.h"
#include "ecs_emulator.h"
#include "harness.h"

using namespace trellis::test;
using namespace trellis::bench;
using SteadyClock = std::chrono::steady_clock;

namespace {

struct Options {
  int pods = 100;
  std::vector<int> concurrency = {1, 8};
  int churn_pods = 300;
  int working_set = 20;
  int attach_delay_ms = 2000;
  std::string json_out;
};

Json EniModule(const Json& overrides) {
  Json c = {{"ecs_endpoint", "http://127.0.0.1:18080"},
            {"metadata_endpoint", "http://127.0.0.1:18081"},
            {"security_group", "sg-test"},
            {"vswitches", {"vsw-a"}},
            {"cluster_id", "bench"},
            {"min_pool_size", 5},
            {"max_pool_size", 15},
            {"reuse_delay", "0s"}};
  c.merge_patch(overrides);
  return c;
}

std::string NodeConfig(const Json& eni) {
  Json modules = {{"qos", {{"enabled", false}}}, {"policy", {{"enabled", false}}}};
  if (eni.is_null()) {
    modules["ipam"] = {{"enabled", true}, {"config", {{"ranges", {{{"subnet", "10.200.0.0/16"}}}}}}};
  } else {
    modules["ipam"] = {{"enabled", true}, {"config", {{"source", "eni"}, {"reuse_delay", 0}}}};
    modules["eni"] = {{"enabled", true}, {"config", eni}};
  }
  return Json{{"modules", modules}}.dump(2);
}

const std::map<std::string, std::string> kCreds = {{"ACCESS_KEY_ID", kEcsAccessKeyId},
                                                   {"ACCESS_KEY_SECRET", kEcsAccessKeySecret}};

// A node: trellisd in its own namespace, and (eni) the emulator as its cloud.
struct Node {
  explicit Node(const Json& eni, std::function<void(Json&)> scenario = nullptr) {
    DaemonOptions o;
    o.config_yaml = NodeConfig(eni);
    o.env = kCreds;
    daemon = std::make_unique<Daemon>(o);
    if (!eni.is_null()) {
      EcsNode n;
      n.netns = daemon->node()->name();
      Json s = DefaultEcsScenario({n});
      // A large instance type: the churn's working set and reuse delay need
      // room (7 secondary ENIs x 19 pod addresses).
      s["instance_types"]["ecs.g6.large"] = {{"eni_quota", 8}, {"ipv4_per_eni", 20}};
      if (scenario) scenario(s);
      emu = std::make_unique<EcsEmulator>(s);
      std::string why;
      if (!emu->Start(&why)) {
        std::cerr << why << "\n";
        std::exit(1);
      }
    }
  }
  bool Start() {
    std::string why;
    if (!daemon->Start(&why)) {
      std::cerr << why << "\n";
      return false;
    }
    return true;
  }
  int Idle() {
    Json j = daemon->Ctl({"pool"}).json();
    return j.is_object() && j.contains("counts") ? j["counts"].value("idle", 0) : 0;
  }
  // A new node config: the daemon's watcher applies it.
  void Rewrite(const Json& eni) {
    auto tmp = daemon->dir() / "trellis.yaml.new";
    std::ofstream(tmp) << NodeConfig(eni);
    fs::rename(tmp, daemon->dir() / "trellis.yaml");
  }
  Json Conflist() {
    Json trellis = {{"type", "trellis"}, {"socket", daemon->socket().string()}};
    return {{"cniVersion", "1.0.0"}, {"name", "bench"}, {"plugins", {trellis}}};
  }
  int CloudCalls(int* writes = nullptr) {
    Json st = emu->State();
    int n = 0, w = 0;
    Json calls = st.value("calls", Json::object());
    for (const auto& [action, count] : calls.items()) {
      n += count.get<int>();
      if (action.rfind("Describe", 0) != 0) w += count.get<int>();
    }
    if (writes) *writes = w;
    return n;
  }
  std::unique_ptr<EcsEmulator> emu;  // destroyed after the daemon
  std::unique_ptr<Daemon> daemon;
};

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--pods") o.pods = std::stoi(next());
    else if (a == "--churn-pods") o.churn_pods = std::stoi(next());
    else if (a == "--working-set") o.working_set = std::stoi(next());
    else if (a == "--attach-delay-ms") o.attach_delay_ms = std::stoi(next());
    else if (a == "--json") o.json_out = next();
    else if (a == "--concurrency") {
      o.concurrency.clear();
      for (const auto& x : SplitList(next())) o.concurrency.push_back(std::stoi(x));
    } else {
      std::cerr << "usage: eni_bench [--pods N] [--concurrency 1,8] [--churn-pods N] "
                   "[--working-set N] [--attach-delay-ms N] [--json FILE]\n";
      return 2;
    }
  }
  Json out = {{"latency", Json::array()}, {"churn", Json::array()}, {"first_pod", Json::array()}};

  // 1. ADD latency: pool hit vs local range.
  std::map<std::pair<std::string, int>, ChurnResult> lat;
  for (const std::string config : {"local", "eni-pool-hit"}) {
    int pool = *std::max_element(o.concurrency.begin(), o.concurrency.end()) + o.pods + 5;
    Node node(config == "local" ? Json() : EniModule({{"min_pool_size", o.pods + 5},
                                                      {"max_pool_size", pool}}));
    if (!node.Start()) return 1;
    if (node.emu) {
      auto deadline = SteadyClock::now() + std::chrono::seconds(120);
      while (node.Idle() < o.pods + 5 && SteadyClock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      // Filled: now keep it as it is (no refill, no reclaim while measuring).
      node.Rewrite(EniModule({{"min_pool_size", 0}, {"max_pool_size", pool}}));
      while (SteadyClock::now() < deadline) {
        Json j = node.daemon->Ctl({"pool"}).json();
        if (j.is_object() && j["pool"].value("min_pool_size", -1) == 0) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
    TempDir bin;
    fs::create_symlink(BinDir() / "trellis", bin.path() / "trellis");
    ConflistRunner runner(node.Conflist(), {bin.path()});
    AddThenDel(runner, 5, 1, "warm");
    int calls_before = node.emu ? node.CloudCalls() : 0;
    for (int c : o.concurrency) {
      ChurnResult l = AddThenDel(runner, o.pods, c, "c" + std::to_string(c));
      lat[{config, c}] = l;
      std::printf("%-14s c=%d pods=%d  ADD p50 %7.2f ms p99 %7.2f ms | DEL p50 %7.2f ms p99 %7.2f ms"
                  " | %6.1f pods/s%s\n",
                  config.c_str(), c, o.pods, l.add.p50, l.add.p99, l.del.p50, l.del.p99,
                  l.pods_per_s, l.failures ? "  FAILURES" : "");
      out["latency"].push_back({{"config", config}, {"concurrency", c}, {"pods", o.pods},
                                {"add_p50_ms", l.add.p50}, {"add_p99_ms", l.add.p99},
                                {"del_p50_ms", l.del.p50}, {"del_p99_ms", l.del.p99},
                                {"pods_per_s", l.pods_per_s}, {"failures", l.failures}});
    }
    if (node.emu) {
      int writes = 0;
      int calls = node.CloudCalls(&writes) - calls_before;
      std::printf("%-14s cloud calls during the pool-hit runs: %d\n", config.c_str(), calls);
    }
  }
  for (int c : o.concurrency) {
    const auto& a = lat[{"eni-pool-hit", c}];
    const auto& b = lat[{"local", c}];
    std::printf("pool hit / local range  c=%d  ADD p50 x%.2f  p99 x%.2f\n", c, a.add.p50 / b.add.p50,
                a.add.p99 / b.add.p99);
  }

  // 2. Cloud calls per pod under steady churn: the working set is started
  // (the ramp), then pods are replaced one at a time (the steady churn,
  // counted), then all are deleted (the drain).
  struct ChurnCase {
    std::string reuse;
    int min_pool, max_pool;
  };
  for (const ChurnCase& cc : {ChurnCase{"0s", 5, 15}, ChurnCase{"5s", 5, 15},
                              ChurnCase{"5s", 10, 120}}) {
    Node node(EniModule({{"min_pool_size", cc.min_pool},
                         {"max_pool_size", cc.max_pool},
                         {"reuse_delay", cc.reuse}}));
    if (!node.Start()) return 1;
    auto deadline = SteadyClock::now() + std::chrono::seconds(60);
    while (node.Idle() < cc.min_pool && SteadyClock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    int fill_calls = node.CloudCalls();
    TempDir bin;
    fs::create_symlink(BinDir() / "trellis", bin.path() / "trellis");
    ConflistRunner runner(node.Conflist(), {bin.path()});
    std::deque<std::pair<Attachment, std::unique_ptr<Netns>>> alive;
    int failures = 0, seq = 0;
    auto add = [&] {
      auto ns = std::make_unique<Netns>("bc");
      Attachment a;
      a.container_id = "churn-" + std::to_string(seq++);
      a.netns = ns->path();
      if (runner.Add(a).code != 0) failures++;
      alive.emplace_back(a, std::move(ns));
    };
    auto del = [&] {
      if (runner.Del(alive.front().first).code != 0) failures++;
      alive.pop_front();
    };
    while (static_cast<int>(alive.size()) < o.working_set) add();
    int ramp_calls = node.CloudCalls() - fill_calls;
    int before_writes = 0;
    int before = node.CloudCalls(&before_writes);
    auto t0 = SteadyClock::now();
    for (int i = 0; i < o.churn_pods; ++i) {
      add();
      del();
    }
    double secs = std::chrono::duration<double>(SteadyClock::now() - t0).count();
    int writes = 0;
    int calls = node.CloudCalls(&writes) - before;
    writes -= before_writes;
    while (!alive.empty()) del();
    double per_pod = static_cast<double>(calls) / o.churn_pods;
    std::printf("churn reuse_delay=%s min/max %d/%d: %d pods replaced (working set %d) in %.1f s"
                " (%.0f pods/s): %d cloud calls (%d writes), %.3f per pod; ramp-up of the working set"
                " %d calls, initial fill %d%s\n",
                cc.reuse.c_str(), cc.min_pool, cc.max_pool, o.churn_pods, o.working_set, secs,
                o.churn_pods / secs, calls, writes, per_pod, ramp_calls, fill_calls,
                failures ? "  FAILURES" : "");
    out["churn"].push_back({{"reuse_delay", cc.reuse}, {"min_pool_size", cc.min_pool},
                            {"max_pool_size", cc.max_pool}, {"pods", o.churn_pods},
                            {"working_set", o.working_set}, {"seconds", secs},
                            {"cloud_calls", calls}, {"cloud_writes", writes},
                            {"calls_per_pod", per_pod}, {"ramp_calls", ramp_calls},
                            {"initial_fill_calls", fill_calls}, {"failures", failures}});
  }

  // 3. First pod on a fresh node.
  for (int delay : {0, o.attach_delay_ms}) {
    for (bool warm : {false, true}) {
      Node node(EniModule({{"min_pool_size", warm ? 1 : 0}, {"max_pool_size", 5}}),
                [&](Json& s) { s["attach_delay_ms"] = delay; });
      Netns pod("bf");
      auto t0 = SteadyClock::now();
      if (!node.Start()) return 1;
      double started = std::chrono::duration<double, std::milli>(SteadyClock::now() - t0).count();
      CniCall c;
      c.command = "ADD";
      c.container_id = "first";
      c.netns = pod.path();
      c.config = node.daemon->NetConf("1.0.0");
      auto r = Cni(c);
      double ready = std::chrono::duration<double, std::milli>(SteadyClock::now() - t0).count();
      std::printf("first pod, attach delay %5d ms, %s: trellisd ready %.0f ms, pod ready %.0f ms%s\n",
                  delay, warm ? "min_pool_size 1 (fills at start)" : "empty pool            ",
                  started, ready, r.exit_code == 0 ? "" : "  FAILED");
      out["first_pod"].push_back({{"attach_delay_ms", delay}, {"min_pool_size", warm ? 1 : 0},
                                  {"daemon_ready_ms", started}, {"pod_ready_ms", ready},
                                  {"ok", r.exit_code == 0}});
    }
  }
  if (!o.json_out.empty()) std::ofstream(o.json_out) << out.dump(2) << "\n";
  return 0;
}
