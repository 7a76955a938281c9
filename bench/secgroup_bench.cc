// Security-group sync benchmark: trellisd with the secgroup module against the
// ECS emulator (tests/fixtures/ecs_emulator), as in the netns tests.
//
//   secgroup_bench [--rules 50,200] [--qps 10,100] [--syncs 20]
//
// For each rule count and client rate limit (calls per second of
// AuthorizeSecurityGroup, the client-side limit the module applies; ECS's own
// flow control is off in the emulator): the time of the first sync that adds
// every rule (the module's own measure, duration_ms of its report) and the ECS
// calls it made; then `trellisctl secgroup sync` on the in-sync groups: the
// latency trellisctl sees (process start, gRPC, the sync, the report), p50
// and p99, the module's own duration of it, and the ECS calls it costs.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "bench_util.h"
#include "ecs_emulator.h"
#include "harness.h"

using namespace trellis::test;
using namespace trellis::bench;
using Clock = std::chrono::steady_clock;

namespace {

std::string Config(int rules, double qps, bool dry_run) {
  std::ostringstream o;
  o << "log_level: warn\nmodules:\n  secgroup:\n    enabled: true\n    config:\n"
    << "      security_groups: [sg-test]\n      region: cn-hangzhou\n"
    << "      ecs_endpoint: http://127.0.0.1:18080\n      metadata_endpoint: "
       "http://127.0.0.1:18081\n"
    << "      leader: true\n      sync_interval: 3600\n      dry_run: "
    << (dry_run ? "true" : "false") << "\n      rate_limit: {default: {qps: " << qps
    << ", burst: " << std::max(1, static_cast<int>(qps)) << "}}\n      rules:\n";
  for (int i = 0; i < rules; ++i) {
    int port = 10000 + i;
    o << "        - {direction: ingress, protocol: tcp, port_range: " << port << "/" << port
      << ", source_cidr: 10.0.0.0/8, description: svc" << i << "}\n";
  }
  return o.str();
}

Json SecgroupStatus(Daemon& d) {
  Json j = d.Ctl({"-o", "json", "modules"}).json();
  for (const auto& m : j["modules"]) {
    if (m["name"] == "secgroup") return Json::parse(m.value("status_json", "{}"), nullptr, false);
  }
  return Json::object();
}

int TotalCalls(const Json& state) {
  int n = 0;
  for (const auto& [action, count] : state["calls"].items()) n += count.get<int>();
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> rule_counts = {50, 200};
  std::vector<double> qps_list = {10, 100};
  int syncs = 20;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--rules") {
      rule_counts.clear();
      for (const auto& x : SplitList(next())) rule_counts.push_back(std::stoi(x));
    } else if (a == "--qps") {
      qps_list.clear();
      for (const auto& x : SplitList(next())) qps_list.push_back(std::stod(x));
    } else if (a == "--syncs") {
      syncs = std::stoi(next());
    } else {
      std::cerr << "usage: secgroup_bench [--rules 50,200] [--qps 10,100] [--syncs 20]\n";
      return 2;
    }
  }
  std::printf("%-6s %-5s %-16s %-14s %-18s %-18s %-18s %s\n", "rules", "qps", "first sync (ms)",
              "calls (first)", "ctl sync p50 (ms)", "ctl sync p99 (ms)", "module p50 (ms)",
              "calls per in-sync sync");
  for (int rules : rule_counts) {
    for (double qps : qps_list) {
      DaemonOptions o;
      o.config_yaml = Config(rules, qps, /*dry_run=*/true);
      o.env = {{"ACCESS_KEY_ID", kEcsAccessKeyId}, {"ACCESS_KEY_SECRET", kEcsAccessKeySecret}};
      Daemon d(o);
      EcsEmulator emu(DefaultEcsScenario({{.id = "i-node1", .netns = d.node()->name()}}));
      std::string why;
      if (!emu.Start(&why) || !d.Start(&why)) {
        std::cerr << why << "\n";
        return 1;
      }
      // The dry-run sync at start has read the group; now the real one.
      WaitFor([&] { return SecgroupStatus(d).contains("last_sync"); }, std::chrono::seconds(30));
      emu.ResetCounts();
      {
        std::ofstream(d.dir() / "trellis.yaml.new") << Config(rules, qps, /*dry_run=*/false);
        fs::rename(d.dir() / "trellis.yaml.new", d.dir() / "trellis.yaml");
      }
      bool done = WaitFor(
          [&] {
            Json s = SecgroupStatus(d);
            return s.contains("last_sync") && s["last_sync"]["result"] == "applied" &&
                   s["last_sync"]["summary"]["added"] == rules;
          },
          std::chrono::seconds(600));
      if (!done) {
        std::cerr << "the first sync did not finish:\n" << d.Log() << "\n";
        return 1;
      }
      double first_ms = SecgroupStatus(d)["last_sync"]["duration_ms"].get<double>();
      int first_calls = TotalCalls(emu.State());
      emu.ResetCounts();
      std::vector<double> lat, module_ms;
      for (int i = 0; i < syncs; ++i) {
        auto t0 = Clock::now();
        RunResult r = d.Ctl({"-o", "json", "secgroup", "sync"});
        lat.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
        if (r.exit_code != 0 || r.json()["result"] != "in_sync") {
          std::cerr << "in-sync sync failed: " << r.out << r.err << "\n";
          return 1;
        }
        module_ms.push_back(r.json()["duration_ms"].get<double>());
      }
      double per_sync = static_cast<double>(TotalCalls(emu.State())) / syncs;
      Stats ctl = Summarize(lat), module = Summarize(module_ms);
      std::printf("%-6d %-5.0f %-16.0f %-14d %-18.1f %-18.1f %-18.0f %.1f\n", rules, qps, first_ms,
                  first_calls, ctl.p50, ctl.p99, module.p50, per_sync);
      std::fflush(stdout);
    }
  }
  return 0;
}
