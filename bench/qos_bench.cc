// QoS benchmarks, trellis against the reference `bandwidth` plugin, in the
// same run (docs/BENCHMARKS.md, "QoS"):
//
//   1. ADD/DEL latency that shaping adds: trellis ipam-only vs trellis with a
//      per-pod bandwidth limit, ptp + host-local vs ptp + host-local +
//      bandwidth. Sequential calls, p50/p99 over --pods pods.
//   2. Latency under load: a client pod saturates its limit with one TCP
//      flow (iperf3) while it pings a server pod; ping RTT percentiles with
//      the pod's egress saturated (upload) and its ingress saturated
//      (download, iperf3 -R: the echo replies queue behind the data).
//
//   qos_bench [--pods N] [--rates 10,100] [--seconds S] [--burst BITS]
//             [--cc cubic,bbr] [--parts add,load] [--json FILE]
//
// Every setup runs in a fresh "node" network namespace that this process
// enters first, so trellisd and the reference plugins act there as on a
// node; pods are namespaces of their own.
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <fstream>
#include <functional>
#include <future>
#include <iostream>
#include <regex>
#include <sstream>

#include "bench_util.h"
#include "conflist.h"
#include "harness.h"

using namespace trellis::test;
using namespace trellis::bench;

namespace {

struct Options {
  int pods = 50;
  std::vector<int> rates = {10, 100};  // Mbit/s
  int seconds = 8;
  uint64_t burst_bits = 1'000'000;
  std::vector<std::string> parts = {"add", "load"};
  std::vector<std::string> ccs = {"cubic", "bbr"};  // the flow's congestion control
  std::string json_out;
};

// One configuration under test, set up inside a node namespace the calling
// thread has entered.
class Setup {
 public:
  Setup(const std::string& name, const fs::path& tmp) : name_(name) {
    const std::string hl_dir = (tmp / "host-local").string();
    if (name == "ptp" || name == "ptp-bw") {
      Json plugins = Json::array();
      plugins.push_back({{"type", "ptp"},
                         {"ipMasq", false},
                         {"ipam",
                          {{"type", "host-local"},
                           {"ranges", {{{{"subnet", "10.201.0.0/16"}}}}},
                           {"dataDir", hl_dir}}}});
      if (name == "ptp-bw") {
        plugins.push_back({{"type", "bandwidth"}, {"capabilities", {{"bandwidth", true}}}});
        shaped_ = true;
      }
      conflist_ = {{"cniVersion", "1.0.0"}, {"name", "qbench"}, {"plugins", plugins}};
    } else {
      std::string yaml =
          "modules:\n  ipam: {config: {ranges: [{subnet: 10.201.0.0/16}], reuse_delay: 0}}\n"
          "  policy: false\n";
      yaml += name == "trellis" ? "  qos: false\n" : "  qos: {enabled: true}\n";
      DaemonOptions opts;
      opts.config_yaml = yaml;
      opts.host_netns = true;  // this thread already is in the node namespace
      daemon_ = std::make_unique<Daemon>(std::move(opts));
      std::string why;
      if (!daemon_->Start(&why)) {
        std::cerr << why << "\n";
        std::exit(1);
      }
      Json trellis = {{"type", "trellis"}, {"socket", daemon_->socket().string()}};
      if (name == "trellis-qos") {
        trellis["capabilities"] = {{"bandwidth", true}};
        shaped_ = true;
      }
      conflist_ = {{"cniVersion", "1.0.0"}, {"name", "qbench"}, {"plugins", {trellis}}};
    }
    fs::create_symlink(BinDir() / "trellis", bin_.path() / "trellis");
    runner_ = std::make_unique<ConflistRunner>(conflist_,
                                               std::vector<fs::path>{bin_.path(), "/usr/lib/cni"});
  }
  ConflistRunner& runner() { return *runner_; }
  // trellisd's own account of its work per CNI command (its log), for the
  // measured attachments: ms.
  std::vector<double> DaemonMs(const std::string& command, const std::string& id_prefix) const {
    std::vector<double> v;
    if (!daemon_) return v;
    static const std::regex re(R"(CNI (\w+) container=(\S+) .*result=ok duration=([0-9.]+)ms)");
    std::istringstream in(daemon_->Log());
    for (std::string line; std::getline(in, line);) {
      std::smatch m;
      if (std::regex_search(line, m, re) && m[1] == command &&
          m[2].str().rfind(id_prefix, 0) == 0) {
        v.push_back(std::stod(m[3]));
      }
    }
    return v;
  }
  bool shaped() const { return shaped_; }

 private:
  std::string name_;
  Json conflist_;
  bool shaped_ = false;
  std::unique_ptr<Daemon> daemon_;
  TempDir bin_;
  std::unique_ptr<ConflistRunner> runner_;
};

Json Bandwidth(uint64_t rate, uint64_t burst) {
  return {
      {"ingressRate", rate}, {"ingressBurst", burst}, {"egressRate", rate}, {"egressBurst", burst}};
}

// -------------------------------------------------------------- part 1 --

// A thread that lives in a network namespace and runs what it is given
// there: processes it forks (plugins, trellisd) inherit the namespace.
class NsWorker {
 public:
  explicit NsWorker(const std::string& netns_path)
      : thread_([this, netns_path] {
          EnterNetns(netns_path);
          Loop();
        }) {}
  ~NsWorker() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void Run(const std::function<void()>& fn) {
    std::promise<void> done;
    {
      std::lock_guard lock(mu_);
      queue_.push_back([&] {
        fn();
        done.set_value();
      });
    }
    cv_.notify_all();
    done.get_future().get();
  }

 private:
  void Loop() {
    std::unique_lock lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      auto fn = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      fn();
      lock.lock();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
  std::thread thread_;
};

// The four setups side by side, each in its own node namespace, measured in
// interleaved rounds so that a change of machine load in the middle of the
// run weighs on all of them alike.
Json AddLatency(const Options& o) {
  Json out = Json::object();
  const std::vector<std::string> names = {"trellis", "trellis-qos", "ptp", "ptp-bw"};
  const int rounds = std::max(1, o.pods / 10), per_round = std::max(1, o.pods / rounds);
  std::printf("ADD/DEL latency, %d pods per setup in %d interleaved rounds, sequential (ms)\n",
              rounds * per_round, rounds);
  struct Slot {
    TempDir tmp;
    std::unique_ptr<Netns> node;
    std::unique_ptr<NsWorker> worker;
    std::unique_ptr<Setup> setup;
    std::vector<double> add, del;
  };
  std::vector<std::unique_ptr<Slot>> slots;
  for (const auto& name : names) {
    auto slot = std::make_unique<Slot>();
    slot->node = std::make_unique<Netns>("qbn");
    slot->worker = std::make_unique<NsWorker>(slot->node->path());
    slot->worker->Run([&] { slot->setup = std::make_unique<Setup>(name, slot->tmp.path()); });
    slots.push_back(std::move(slot));
  }
  // `n` pods added, then deleted, one call at a time in the slot's node
  // namespace; with `keep`, their latencies join the slot's sample.
  auto churn = [&](Slot& slot, int n, const std::string& tag, bool keep) {
    Json caps = slot.setup->shaped() ? Json{{"bandwidth", Bandwidth(100'000'000, o.burst_bits)}}
                                     : Json(nullptr);
    ChurnResult r;
    slot.worker->Run([&] { r = AddThenDel(slot.setup->runner(), n, 1, tag, caps); });
    if (keep) {
      slot.add.insert(slot.add.end(), r.add_ms.begin(), r.add_ms.end());
      slot.del.insert(slot.del.end(), r.del_ms.begin(), r.del_ms.end());
    }
  };
  for (auto& slot : slots) churn(*slot, 3, "warm", false);
  for (int r = 0; r < rounds; ++r) {
    for (auto& slot : slots) churn(*slot, per_round, "r" + std::to_string(r), true);
  }
  std::map<std::string, Stats> add;
  for (size_t i = 0; i < slots.size(); ++i) {
    Stats pa = Summarize(slots[i]->add), pd = Summarize(slots[i]->del);
    add[names[i]] = pa;
    out[names[i]] = {{"add_ms", ToJson(pa)}, {"del_ms", ToJson(pd)}};
    std::printf("  %-12s ADD p50 %7.2f p99 %7.2f | DEL p50 %7.2f p99 %7.2f", names[i].c_str(),
                pa.p50, pa.p99, pd.p50, pd.p99);
    auto da = slots[i]->setup->DaemonMs("ADD", "bench-r"),
         dd = slots[i]->setup->DaemonMs("DEL", "bench-r");
    if (!da.empty()) {
      Stats a = Summarize(da), d = Summarize(dd);
      out[names[i]]["daemon_add_ms"] = ToJson(a);
      out[names[i]]["daemon_del_ms"] = ToJson(d);
      std::printf(" | in trellisd: ADD p50 %6.2f p99 %7.2f, DEL p50 %6.2f", a.p50, a.p99, d.p50);
    }
    std::printf("\n");
  }
  for (auto& slot : slots) slot->worker->Run([&] { slot->setup.reset(); });
  double added_trellis = add["trellis-qos"].p50 - add["trellis"].p50;
  double added_ref = add["ptp-bw"].p50 - add["ptp"].p50;
  double ratio = add["ptp-bw"].p50 / add["trellis-qos"].p50;
  std::printf("  shaping adds to ADD p50: trellis %+.2f ms, bandwidth plugin %+.2f ms\n",
              added_trellis, added_ref);
  std::printf("  ptp+host-local+bandwidth / trellis with qos, ADD p50: x%.1f\n", ratio);
  std::fflush(stdout);
  out["added_p50_ms"] = {{"trellis", added_trellis}, {"bandwidth", added_ref}};
  out["ratio_add_p50"] = ratio;
  return out;
}

// -------------------------------------------------------------- part 2 --

// RTTs of `ping -D` output, leaving out replies to requests sent in the
// first `skip_s` seconds (the flow's slow start).
std::vector<double> PingTimes(const std::string& text, double skip_s = 0) {
  std::vector<double> v;
  static const std::regex re(R"((?:\[([0-9.]+)\] )?.*time=([0-9.]+) ms)");
  double first = -1;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (!std::regex_search(line, m, re)) continue;
    double ts = m[1].matched ? std::stod(m[1]) : 0;
    if (first < 0) first = ts;
    if (ts - first < skip_s) continue;
    v.push_back(std::stod(m[2]));
  }
  return v;
}

void Serve(const Netns& ns, int port) {
  Sh("ip netns exec " + ns.name() + " timeout 120 iperf3 -s -1 -p " + std::to_string(port) +
     " >/dev/null 2>&1 &");
  WaitFor([&] {
    return ns.Exec("ss -ltn 'sport = :" + std::to_string(port) + "'").out.find("LISTEN") !=
           std::string::npos;
  });
}

Json LoadLatency(const Options& o) {
  Json out = Json::object();
  std::printf(
      "\nping RTT through a pod saturating its limit (one TCP flow, %d s; burst %llu bits)\n",
      o.seconds, static_cast<unsigned long long>(o.burst_bits));
  for (int mbit : o.rates) {
    for (const std::string name : {"trellis-qos", "ptp-bw"}) {
      TempDir tmp;
      Netns node("qln");
      int home = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
      EnterNetns(node.path());
      {
        Setup s(name, tmp.path());
        Netns client_ns("qlc"), server_ns("qls");
        Attachment client, server;
        client.container_id = "ql-client";
        client.netns = client_ns.path();
        server.container_id = "ql-server";
        server.netns = server_ns.path();
        client.capability_args = {
            {"bandwidth", Bandwidth(uint64_t(mbit) * 1'000'000, o.burst_bits)}};
        // The reference plugin shapes only attachments that ask; the server
        // gets a limit far above the client's so that it never queues.
        server.capability_args = {{"bandwidth", Bandwidth(10'000'000'000ULL, o.burst_bits)}};
        auto ca = s.runner().Add(client);
        auto sa = s.runner().Add(server);
        if (ca.code != 0 || sa.code != 0) {
          std::cerr << name << ": ADD failed: " << ca.message << sa.message << "\n";
          std::exit(1);
        }
        std::string sip = sa.result["ips"][0]["address"];
        sip = sip.substr(0, sip.find('/'));
        Json row = Json::object();
        auto idle = PingTimes(client_ns.Exec("ping -c 50 -i 0.02 " + sip).out);
        row["idle_ms"] = ToJson(Summarize(idle));
        int port = 5601;
        for (const auto& cc : o.ccs) {
          for (bool download : {false, true}) {
            Serve(server_ns, port);
            auto flow = std::async(std::launch::async, [&, port] {
              return client_ns.Exec("iperf3 -J -C " + cc + " -c " + sip + " -p " +
                                        std::to_string(port) + " -t " + std::to_string(o.seconds) +
                                        (download ? " -R" : ""),
                                    std::chrono::seconds(o.seconds + 60));
            });
            // Pings for the flow's life but its last second; the first second
            // (slow start) is left out of the figures.
            auto rtt = PingTimes(
                client_ns
                    .Exec("ping -D -i 0.02 -w " + std::to_string(o.seconds - 1) + " " + sip,
                          std::chrono::seconds(o.seconds + 30))
                    .out,
                1.0);
            auto r = flow.get();
            Json j = Json::parse(r.out, nullptr, false);
            double goodput = j.is_discarded() || !j.contains("end")
                                 ? -1
                                 : j["end"]["sum_received"]["bits_per_second"].get<double>() / 1e6;
            Stats p = Summarize(rtt);
            const char* dir = download ? "download" : "upload";
            row[cc][dir] = {{"rtt_ms", ToJson(p)}, {"goodput_mbit", goodput}};
            std::printf(
                "  %4d Mbit/s %-11s %-5s %-8s RTT p50 %7.2f p90 %7.2f p99 %7.2f ms (idle p50 %.3f) "
                "| %6.1f Mbit/s\n",
                mbit, name.c_str(), cc.c_str(), dir, p.p50, p.p90, p.p99, Summarize(idle).p50,
                goodput);
            std::fflush(stdout);
            ++port;
          }
        }
        out[std::to_string(mbit)][name] = row;
        s.runner().Del(client);
        s.runner().Del(server);
      }
      setns(home, CLONE_NEWNET);
      close(home);
    }
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--pods") {
      o.pods = std::stoi(next());
    } else if (a == "--rates") {
      o.rates.clear();
      for (const auto& r : SplitList(next())) o.rates.push_back(std::stoi(r));
    } else if (a == "--seconds") {
      o.seconds = std::stoi(next());
    } else if (a == "--burst") {
      o.burst_bits = std::stoull(next());
    } else if (a == "--cc") {
      o.ccs = SplitList(next());
    } else if (a == "--parts") {
      o.parts = SplitList(next());
    } else if (a == "--json") {
      o.json_out = next();
    } else {
      std::cerr << "usage: qos_bench [--pods N] [--rates 10,100] [--seconds S] [--burst BITS] "
                   "[--cc cubic,bbr] [--parts add,load] [--json FILE]\n";
      return 2;
    }
  }
  if (!fs::exists("/usr/lib/cni/bandwidth")) {
    std::cerr << "the reference plugins (containernetworking-plugins) are missing\n";
    return 1;
  }
  Json out = Json::object();
  auto want = [&](const std::string& p) {
    return std::find(o.parts.begin(), o.parts.end(), p) != o.parts.end();
  };
  if (want("add")) out["add"] = AddLatency(o);
  if (want("load")) out["load"] = LoadLatency(o);
  if (!o.json_out.empty()) std::ofstream(o.json_out) << out.dump(2) << "\n";
  return 0;
}
