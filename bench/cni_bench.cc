// CNI benchmark: drives conflists the way libcni does and reports ADD and DEL
// latency (p50/p99) and pods/s at several concurrencies, for trellis and the
// reference plugin chains, in the same run. Every configuration gets a fresh
// "node" network namespace that this process enters, so the plugins and
// trellisd run there exactly as on a node.
//
//   cni_bench [--pods N] [--concurrency 1,8] [--configs a,b,...] [--rss-pods N] [--json FILE]
//
// Configurations: trellis (ipam only), trellis-qos (ipam + qos, a bandwidth
// limit per pod), trellis-default (the embedded default modules),
// ptp (ptp + host-local), ptp-bw (ptp + host-local + bandwidth).
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <thread>

#include "bench_util.h"
#include "conflist.h"
#include "harness.h"

using namespace trellis::test;
using namespace trellis::bench;
using Clock = std::chrono::steady_clock;

namespace {

struct Options {
  int pods = 100;
  std::vector<int> concurrency = {1, 8};
  std::vector<std::string> configs = {"trellis", "trellis-qos", "ptp", "ptp-bw"};
  int rss_pods = 500;
  int startup_runs = 0;  // >0: time the CNI binary's start-up and one round trip
  std::string json_out;
};

const Json kBandwidth = {{"ingressRate", 100000000}, {"ingressBurst", 2000000},
                         {"egressRate", 100000000}, {"egressBurst", 2000000}};

struct Setup {
  Json conflist;
  bool bandwidth = false;
  std::string daemon_yaml;  // empty: no trellisd
};

Setup MakeSetup(const std::string& name, const fs::path& tmp) {
  Setup s;
  const std::string hl_dir = (tmp / "host-local").string();
  if (name == "ptp" || name == "ptp-bw") {
    Json plugins = Json::array();
    plugins.push_back({{"type", "ptp"},
                       {"ipMasq", false},
                       {"ipam", {{"type", "host-local"},
                                 {"ranges", {{{{"subnet", "10.200.0.0/16"}}}}},
                                 {"dataDir", hl_dir}}}});
    if (name == "ptp-bw") {
      plugins.push_back({{"type", "bandwidth"}, {"capabilities", {{"bandwidth", true}}}});
      s.bandwidth = true;
    }
    s.conflist = {{"cniVersion", "1.0.0"}, {"name", "bench"}, {"plugins", plugins}};
    return s;
  }
  Json trellis = {{"type", "trellis"}, {"socket", (tmp / "trellis.sock").string()}};
  if (name == "trellis") {
    s.daemon_yaml = "modules:\n  ipam: {config: {ranges: [{subnet: 10.200.0.0/16}]}}\n  qos: false\n  policy: false\n";
  } else if (name == "trellis-qos") {
    s.daemon_yaml = "modules:\n  ipam: {config: {ranges: [{subnet: 10.200.0.0/16}]}}\n  qos: {enabled: true}\n  policy: false\n";
    trellis["capabilities"] = {{"bandwidth", true}};
    s.bandwidth = true;
  } else if (name == "trellis-default") {
    s.daemon_yaml = "modules:\n  ipam: {config: {ranges: [{subnet: 10.200.0.0/16}]}}\n  qos: {enabled: true}\n  policy: {enabled: true}\n";
  } else {
    std::cerr << "unknown config " << name << "\n";
    std::exit(2);
  }
  s.conflist = {{"cniVersion", "1.0.0"}, {"name", "bench"}, {"plugins", {trellis}}};
  return s;
}

struct BenchResult {
  std::string config;
  int concurrency = 1;
  int pods = 0;
  ChurnResult churn;
};

// The runtime's capability arguments for every pod of `setup`; null: none.
Json CapabilityArgs(const Setup& setup) {
  return setup.bandwidth ? Json{{"bandwidth", kBandwidth}} : Json(nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--pods") o.pods = std::stoi(next());
    else if (a == "--startup") o.startup_runs = std::stoi(next());
    else if (a == "--rss-pods") o.rss_pods = std::stoi(next());
    else if (a == "--json") o.json_out = next();
    else if (a == "--configs") o.configs = SplitList(next());
    else if (a == "--concurrency") {
      o.concurrency.clear();
      for (const auto& c : SplitList(next())) o.concurrency.push_back(std::stoi(c));
    } else {
      std::cerr << "usage: cni_bench [--pods N] [--concurrency 1,8] [--configs a,b] [--rss-pods N] [--json FILE]\n";
      return 2;
    }
  }
  // Threads spawned by the harness must inherit the node namespace, so the
  // main thread enters it before any is started.
  const std::string host_ns = "/proc/self/ns/net";
  int host_fd = open(host_ns.c_str(), O_RDONLY | O_CLOEXEC);

  std::vector<BenchResult> results;
  Json rss = Json::object();
  Json startup = Json::object();
  if (o.startup_runs > 0) {
    // One full CNI invocation (STATUS: connect, one RPC, exit) per run, so the
    // figure is the binary's start-up and gRPC set-up plus one round trip.
    Netns node("bn");
    EnterNetns(node.path());
    Daemon daemon(DaemonOptions{.config_yaml = "modules:\n  ipam: {config: {ranges: [{subnet: 10.200.0.0/16}]}}\n",
                                .host_netns = true});
    std::string why;
    if (!daemon.Start(&why)) {
      std::cerr << why << "\n";
      return 1;
    }
    // Against the floor: the same harness starting /bin/cat (a process that
    // reads its input and answers it), and the CNI binary answering VERSION
    // (no daemon call).
    struct Probe {
      const char* name;
      fs::path binary;
      std::string command;
    };
    for (const Probe& p : {Probe{"trellis STATUS", BinDir() / "trellis", "STATUS"},
                           Probe{"trellis VERSION", BinDir() / "trellis", "VERSION"},
                           Probe{"/bin/cat", "/bin/cat", "STATUS"}}) {
      std::vector<double> ms;
      for (int i = 0; i < o.startup_runs; ++i) {
        auto t0 = Clock::now();
        auto r = Cni({.command = p.command, .config = daemon.NetConf()}, p.binary);
        ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
        if (r.exit_code != 0) std::cerr << p.name << " failed: " << r.out << "\n";
      }
      Stats s = Summarize(ms);
      startup[p.name] = {{"p50_ms", s.p50}, {"p99_ms", s.p99}};
      std::printf("%-16s whole process p50 %6.2f ms p99 %6.2f ms\n", p.name, s.p50, s.p99);
    }
    std::printf("a STATUS round trip costs %.2f ms more than starting /bin/cat (p50)\n",
                startup["trellis STATUS"]["p50_ms"].get<double>() -
                    startup["/bin/cat"]["p50_ms"].get<double>());
    setns(host_fd, CLONE_NEWNET);
  }
  for (const auto& config : o.configs) {
    TempDir tmp;
    Netns node("bn");
    EnterNetns(node.path());
    Setup setup = MakeSetup(config, tmp.path());
    std::unique_ptr<Daemon> daemon;
    if (!setup.daemon_yaml.empty()) {
      daemon = std::make_unique<Daemon>(DaemonOptions{.config_yaml = setup.daemon_yaml,
                                                      .host_netns = true});
      std::string why;
      if (!daemon->Start(&why)) {
        std::cerr << why << "\n";
        return 1;
      }
      setup.conflist["plugins"][0]["socket"] = daemon->socket().string();
    }
    TempDir bin;
    fs::create_symlink(BinDir() / "trellis", bin.path() / "trellis");
    ConflistRunner runner(setup.conflist, {bin.path(), "/usr/lib/cni"});
    // Warm-up: page cache, first netns, lazy kernel init.
    AddThenDel(runner, 5, 1, "warm", CapabilityArgs(setup));
    for (int c : o.concurrency) {
      BenchResult r{config, c, o.pods,
                    AddThenDel(runner, o.pods, c, "c" + std::to_string(c), CapabilityArgs(setup))};
      results.push_back(r);
      const ChurnResult& ch = r.churn;
      std::printf("%-16s c=%d pods=%d  ADD p50 %7.2f ms p99 %7.2f ms | DEL p50 %7.2f ms p99 %7.2f ms | %7.1f pods/s%s\n",
                  config.c_str(), c, r.pods, ch.add.p50, ch.add.p99, ch.del.p50, ch.del.p99,
                  ch.pods_per_s, ch.failures ? "  FAILURES" : "");
      std::fflush(stdout);
    }
    if (daemon && o.rss_pods > 0 && config.rfind("trellis", 0) == 0) {
      // Daemon memory with many pods: add them, read VmRSS, delete them.
      std::vector<std::unique_ptr<Netns>> ns;
      std::vector<Attachment> atts;
      for (int i = 0; i < o.rss_pods; ++i) {
        ns.push_back(std::make_unique<Netns>("rp"));
        atts.push_back({.container_id = "rss-" + std::to_string(i), .netns = ns.back()->path()});
        if (setup.bandwidth) atts.back().capability_args = {{"bandwidth", kBandwidth}};
      }
      std::atomic<int> next{0};
      std::vector<std::thread> w;
      for (int t = 0; t < 8; ++t) {
        w.emplace_back([&] {
          for (int i; (i = next++) < o.rss_pods;) runner.Add(atts[i]);
        });
      }
      for (auto& t : w) t.join();
      long kib = RssKiB(daemon->pid());
      rss[config] = {{"pods", o.rss_pods}, {"rss_mib", kib / 1024.0}};
      std::printf("%-16s daemon RSS with %d pods: %.1f MiB\n", config.c_str(), o.rss_pods, kib / 1024.0);
      next = 0;
      w.clear();
      for (int t = 0; t < 8; ++t) {
        w.emplace_back([&] {
          for (int i; (i = next++) < o.rss_pods;) runner.Del(atts[i]);
        });
      }
      for (auto& t : w) t.join();
    }
    daemon.reset();
    setns(host_fd, CLONE_NEWNET);
  }

  // Ratios against the matching reference chain, same run.
  auto find = [&](const std::string& cfg, int c) -> const BenchResult* {
    for (const auto& r : results) {
      if (r.config == cfg && r.concurrency == c) return &r;
    }
    return nullptr;
  };
  std::printf("\nratios (reference / trellis; >1 means trellis is faster)\n");
  for (auto [ours, ref] : std::vector<std::pair<std::string, std::string>>{
           {"trellis", "ptp"}, {"trellis-qos", "ptp-bw"}, {"trellis-default", "ptp"}}) {
    for (int c : o.concurrency) {
      auto* a = find(ours, c);
      auto* b = find(ref, c);
      if (!a || !b) continue;
      std::printf("%-16s vs %-7s c=%d  ADD p50 x%.1f  DEL p50 x%.1f  pods/s x%.1f\n", ours.c_str(),
                  ref.c_str(), c, b->churn.add.p50 / a->churn.add.p50,
                  b->churn.del.p50 / a->churn.del.p50, a->churn.pods_per_s / b->churn.pods_per_s);
    }
  }
  if (!o.json_out.empty()) {
    Json j = {{"results", Json::array()}, {"rss", rss}, {"startup", startup}};
    for (const auto& r : results) {
      j["results"].push_back({{"config", r.config}, {"concurrency", r.concurrency}, {"pods", r.pods},
                              {"add_p50_ms", r.churn.add.p50}, {"add_p99_ms", r.churn.add.p99},
                              {"del_p50_ms", r.churn.del.p50}, {"del_p99_ms", r.churn.del.p99},
                              {"pods_per_s", r.churn.pods_per_s}, {"failures", r.churn.failures}});
    }
    std::ofstream(o.json_out) << j.dump(2) << "\n";
  }
  return 0;
}
