#include "bench_util.h"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <sstream>
#include <thread>

#include "harness.h"

namespace trellis::bench {

using trellis::test::Attachment;
using trellis::test::ChainResult;
using trellis::test::ConflistRunner;
using trellis::test::Netns;
using Clock = std::chrono::steady_clock;

Stats Summarize(std::vector<double> v) {
  Stats s;
  s.n = v.size();
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  auto at = [&](double q) { return v[std::min(v.size() - 1, static_cast<size_t>(v.size() * q))]; };
  s.p50 = at(0.5);
  s.p90 = at(0.9);
  s.p99 = at(0.99);
  s.max = v.back();
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / v.size();
  return s;
}

nlohmann::json ToJson(const Stats& s) {
  return {{"p50", s.p50}, {"p90", s.p90},   {"p99", s.p99},
          {"max", s.max}, {"mean", s.mean}, {"n", s.n}};
}

std::vector<std::string> SplitList(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string x; std::getline(ss, x, ',');) out.push_back(x);
  return out;
}

void EnterNetns(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
    std::cerr << "cannot enter " << path << "\n";
    std::exit(1);
  }
  close(fd);
}

void WaitForQuietCpu(std::chrono::seconds limit) {
  auto sample = [] {
    std::ifstream in("/proc/stat");
    std::string cpu;
    unsigned long long v[8] = {};
    in >> cpu;
    for (auto& x : v) in >> x;
    unsigned long long idle = v[3] + v[4], total = 0;
    for (auto x : v) total += x;
    return std::make_pair(idle, total);
  };
  auto deadline = Clock::now() + limit;
  while (Clock::now() < deadline) {
    auto [i0, t0] = sample();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    auto [i1, t1] = sample();
    if (t1 > t0 && double(i1 - i0) / double(t1 - t0) >= 0.85) return;
  }
}

ChurnResult AddThenDel(ConflistRunner& runner, int n, int c, const std::string& tag,
                       const nlohmann::json& capability_args) {
  std::vector<std::unique_ptr<Netns>> ns;
  std::vector<Attachment> atts(n);
  for (int i = 0; i < n; ++i) {
    ns.push_back(std::make_unique<Netns>("bp"));
    atts[i].container_id = "bench-" + tag + "-" + std::to_string(i);
    atts[i].netns = ns[i]->path();
    atts[i].cni_args =
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=" + atts[i].container_id;
    if (!capability_args.is_null()) atts[i].capability_args = capability_args;
  }
  ChurnResult r;
  r.add_ms.resize(n);
  r.del_ms.resize(n);
  std::atomic<int> next{0}, failures{0};
  std::mutex err_mu;
  auto phase = [&](bool is_add) {
    WaitForQuietCpu();
    next = 0;
    auto t0 = Clock::now();
    std::vector<std::thread> workers;
    for (int w = 0; w < c; ++w) {
      workers.emplace_back([&] {
        for (int i; (i = next++) < n;) {
          auto s = Clock::now();
          ChainResult cr = is_add ? runner.Add(atts[i]) : runner.Del(atts[i]);
          (is_add ? r.add_ms : r.del_ms)[i] =
              std::chrono::duration<double, std::milli>(Clock::now() - s).count();
          if (cr.code != 0 && failures++ < 3) {
            std::lock_guard lock(err_mu);
            std::cerr << (is_add ? "ADD " : "DEL ") << atts[i].container_id
                      << " failed: " << cr.plugin << ": " << cr.message << "\n";
          }
        }
      });
    }
    for (auto& w : workers) w.join();
    return std::chrono::duration<double>(Clock::now() - t0).count();
  };
  double add_wall = phase(true);
  phase(false);
  r.add = Summarize(r.add_ms);
  r.del = Summarize(r.del_ms);
  r.pods_per_s = n / add_wall;
  r.failures = failures;
  return r;
}

}  // namespace trellis::bench
