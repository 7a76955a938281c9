// What the benchmarks share: percentile summaries, option lists, entering a
// node's network namespace, and the libcni-style ADD-then-DEL churn.
#ifndef TRELLIS_BENCH_BENCH_UTIL_H_
#define TRELLIS_BENCH_BENCH_UTIL_H_

#include <cstddef>
#include <nlohmann/json.hpp>
#include <chrono>
#include <string>
#include <vector>

#include "conflist.h"

namespace trellis::bench {

// Percentiles of a sample: the element at index min(n - 1, n * q) of the
// sorted sample. All zero for an empty sample.
struct Stats {
  double p50 = 0, p90 = 0, p99 = 0, max = 0, mean = 0;
  size_t n = 0;
};
Stats Summarize(std::vector<double> v);
// {"p50", "p90", "p99", "max", "mean", "n"}.
nlohmann::json ToJson(const Stats& s);

// "a,b,c" -> {"a", "b", "c"}; "" -> {}.
std::vector<std::string> SplitList(const std::string& s);

// Moves the calling thread into the network namespace at `path`; threads and
// processes it starts afterwards inherit it. Exits the process on failure.
void EnterNetns(const std::string& path);

// Waits, up to `limit`, until at least 85% of the CPU time over 200 ms is
// idle. The kernel destroys network namespaces asynchronously (a workqueue),
// for seconds after hundreds of pods went away: a phase that starts while it
// runs measures that too, whichever setup it is.
void WaitForQuietCpu(std::chrono::seconds limit = std::chrono::seconds(20));

struct ChurnResult {
  Stats add, del;         // ms per call
  double pods_per_s = 0;  // of the ADD phase, wall clock
  int failures = 0;
  // Every call's latency in ms, by attachment: for pooling several runs.
  std::vector<double> add_ms, del_ms;
};
// Adds `n` pods, each in a fresh network namespace, with `c` workers, then
// deletes them with `c` workers, timing each call; each phase starts on a
// quiet machine (WaitForQuietCpu). Container ids are
// "bench-<tag>-<i>"; `capability_args`, unless null, goes with every pod.
// Prints the first three failures to stderr.
ChurnResult AddThenDel(trellis::test::ConflistRunner& runner, int n, int c, const std::string& tag,
                       const nlohmann::json& capability_args = nullptr);

}  // namespace trellis::bench

#endif  // TRELLIS_BENCH_BENCH_UTIL_H_
