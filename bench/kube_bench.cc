// Watch event -> kernel enforcement latency of the Kubernetes API source
// with the real policy module (issue 9: "a NetworkPolicy create/update/delete
// is enforced within 1 s of the watch event").
//
// A live trellisd in a node network namespace of its own, against the fake
// API server (tests/fixtures/kube_apiserver, HTTPS, real list/watch), one
// pod on the node. Each round creates a NetworkPolicy selecting the pod and
// then deletes it. The clock starts when the fake server emits the watch
// event (Apply/Delete return once it is queued to the open watches) and
// stops when the kernel holds the result: the pod's host interface is in
// (create) / gone from (delete) trellis's `ingress` verdict map, read with
// libnftables from inside the node namespace every `--poll-us`. The
// figures include the poll interval (at most one interval late).
//
//   kube_bench [--events 200] [--background 0] [--poll-us 500]
//
// --background N first creates N other policies (other namespace, selecting
// no pod of this node): what every create/delete recompiles beside them.
#include <nftables/libnftables.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "fake_apiserver.h"
#include "harness.h"

using namespace trellis::test;
using Clock = std::chrono::steady_clock;

namespace {

void Print(const char* what, const std::vector<double>& ms) {
  trellis::bench::Stats s = trellis::bench::Summarize(ms);
  std::printf("  %-22s n=%zu  p50 %7.1f ms  p90 %7.1f ms  p99 %7.1f ms  max %7.1f ms\n", what, s.n,
              s.p50, s.p90, s.p99, s.max);
}

// Reads trellis's `ingress` map in the namespace the calling thread is in.
class IngressMap {
 public:
  IngressMap() : ctx_(nft_ctx_new(NFT_CTX_DEFAULT)) {
    nft_ctx_buffer_output(ctx_);
    nft_ctx_buffer_error(ctx_);
  }
  ~IngressMap() { nft_ctx_free(ctx_); }
  bool Holds(const std::string& ifname) {
    if (nft_run_cmd_from_buffer(ctx_, "list map inet trellis ingress") != 0) return false;
    const char* out = nft_ctx_get_output_buffer(ctx_);
    return out != nullptr && std::strstr(out, ("\"" + ifname + "\"").c_str()) != nullptr;
  }

 private:
  nft_ctx* ctx_;
};

}  // namespace

int main(int argc, char** argv) {
  int events = 200, background = 0, poll_us = 500;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--events")
      events = std::atoi(argv[i + 1]);
    else if (a == "--background")
      background = std::atoi(argv[i + 1]);
    else if (a == "--poll-us")
      poll_us = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "usage: kube_bench [--events N] [--background N] [--poll-us N]\n");
      return 2;
    }
  }
  if (events < 1 || background < 0 || poll_us < 50) {
    std::fprintf(stderr, "kube_bench: --events >= 1, --background >= 0, --poll-us >= 50\n");
    return 2;
  }

  const std::string node_name = "bench-node";
  FakeApiServer api;
  TempDir dir;
  DaemonOptions o;
  o.config_path = dir / "trellis.yaml";
  o.env = {{"NODE_NAME", node_name}, {"POD_NAMESPACE", "kube-system"}};
  Daemon d(o);
  int port = api.Listen(d.node()->name());
  if (port <= 0) {
    std::fprintf(stderr, "kube_bench: the fake API server could not listen\n");
    return 1;
  }
  api.AddToken("bench-token");
  std::ofstream(dir / "token") << "bench-token\n";
  std::ofstream(dir / "kubeconfig") << api.Kubeconfig(port, (dir / "token").string());
  std::ofstream(dir / "trellis.yaml")
      << "modules:\n"
         "  ipam: {config: {ranges: [{subnet: 10.65.0.0/24}], reuse_delay: 0}}\n"
         "  qos: {enabled: false}\n"
         "  policy: {enabled: true}\n"
         "kubernetes:\n"
         "  kubeconfig: "
      << (dir / "kubeconfig").string()
      << "\n  resync_period: 1h\n  events: false\n  leader_election: false\n";

  api.Apply(FakeApiServer::Node(node_name, {"10.65.0.0/24"}));
  api.Apply(FakeApiServer::Namespace("bench"));
  api.Apply(FakeApiServer::Namespace("elsewhere"));
  api.Apply(FakeApiServer::Pod("bench", "web", node_name, {{"app", "web"}}));
  for (int i = 0; i < background; ++i) {
    std::string n = std::to_string(i);
    api.Apply(FakeApiServer::NetworkPolicy(
        "elsewhere", "bg-" + n,
        {{"podSelector", {{"matchLabels", {{"app", "bg-" + n}}}}},
         {"policyTypes", {"Ingress"}},
         {"ingress", {{{"from", {{{"podSelector", {{"matchLabels", {{"role", "c" + n}}}}}}}}}}}}));
  }
  std::string why;
  if (!d.Start(&why)) {
    std::fprintf(stderr, "kube_bench: trellisd did not start: %s\n", why.c_str());
    return 1;
  }
  Netns pod("kb");
  CniCall call;
  call.container_id = "kb-web";
  call.netns = pod.path();
  call.args = "K8S_POD_NAMESPACE=bench;K8S_POD_NAME=web";
  call.config = d.NetConf();
  auto r = Cni(call);
  if (r.exit_code != 0) {
    std::fprintf(stderr, "kube_bench: ADD failed: %s %s\n", r.out.c_str(), r.err.c_str());
    return 1;
  }
  const std::string host_if = r.json()["interfaces"][0]["name"];

  std::vector<double> created, deleted;
  bool ok = true;
  std::string failure;
  std::thread t([&] {
    trellis::bench::EnterNetns(d.node()->path());
    IngressMap map;
    auto wait = [&](bool held, Clock::time_point t0, std::vector<double>* ms) {
      while (map.Holds(host_if) != held) {
        if (Clock::now() - t0 > std::chrono::seconds(30)) return false;
        std::this_thread::sleep_for(std::chrono::microseconds(poll_us));
      }
      ms->push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
      return true;
    };
    if (map.Holds(host_if)) {
      ok = false;
      failure = "the pod is selected before the first policy";
      return;
    }
    for (int i = 0; i < events && ok; ++i) {
      const std::string name = "deny-" + std::to_string(i);
      auto t0 = Clock::now();
      api.Apply(FakeApiServer::NetworkPolicy(
          "bench", name,
          {{"podSelector", {{"matchLabels", {{"app", "web"}}}}}, {"policyTypes", {"Ingress"}}}));
      if (!wait(true, t0, &created)) {
        ok = false;
        failure = name + ": not enforced 30 s after its creation";
        break;
      }
      t0 = Clock::now();
      api.Delete("NetworkPolicy", "bench", name);
      if (!wait(false, t0, &deleted)) {
        ok = false;
        failure = name + ": still enforced 30 s after its deletion";
      }
    }
  });
  t.join();
  call.command = "DEL";
  Cni(call);
  if (!ok) {
    std::fprintf(stderr, "kube_bench: %s\n%s\n", failure.c_str(), d.Log().c_str());
    return 1;
  }
  std::printf("kube_bench: %d create+delete rounds, %d background policies, poll %d us\n", events,
              background, poll_us);
  Print("create -> enforced", created);
  Print("delete -> unenforced", deleted);
  return 0;
}
