// Programming cost of the policy plugin's engine as the policy set grows:
// compute time, nftables transaction time and table size for N policies over
// M pods, then the incremental costs the issue cares about (one pod added,
// one policy added). Runs in a private network namespace of its own, so the
// table it programs touches nothing else.
//
//   policy_bench [--policies 10,100,1000,10000] [--pods 100,1000]
#include <sched.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "engine.h"
#include "model.h"
#include "nft.h"

using namespace trellis::policy;

namespace {

double Ms(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - since)
      .count();
}

std::vector<int> List(const char* s) {
  std::vector<int> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(std::stoi(item));
  return out;
}

PodIdentity MakePod(int i) {
  PodIdentity p;
  p.key = "bench-" + std::to_string(i) + "/eth0";
  p.ns = "ns" + std::to_string(i % 10);
  p.name = "pod" + std::to_string(i);
  p.host_ifname = "tr" + Hex(Fnv64(p.key), 12);
  static const char* tiers[] = {"web", "api", "db"};
  p.labels = {{"app", "app" + std::to_string(i % 50)}, {"tier", tiers[i % 3]}};
  p.addresses = {
      IpRange{4, (u128(10) << 24) | (u128(1) << 16) | u128(i / 250) << 8 | u128(i % 250 + 1),
              (u128(10) << 24) | (u128(1) << 16) | u128(i / 250) << 8 | u128(i % 250 + 1)}};
  p.ports = {{"http", kTcp, 8080}};
  return p;
}

// A mix shaped like real clusters: per-app ingress from a tier of the same
// namespace or from labelled namespaces, some ipBlocks, named and numeric
// ports, a quarter with egress rules.
Policy MakePolicy(int i) {
  std::string ns = "ns" + std::to_string(i % 10);
  std::ostringstream y;
  y << "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p" << i
    << ", namespace: " << ns << "}\nspec:\n  podSelector: {matchLabels: {app: app" << (i % 50)
    << "}}\n"
    << "  ingress:\n  - from:\n    - podSelector: {matchLabels: {tier: "
    << (i % 3 == 0   ? "web"
        : i % 3 == 1 ? "api"
                     : "db")
    << "}}\n"
    << "    - namespaceSelector: {matchLabels: {team: t" << (i % 7) << "}}\n"
    << "      podSelector: {matchExpressions: [{key: tier, operator: In, values: [web, api]}]}\n";
  if (i % 5 == 0) {
    y << "    - ipBlock: {cidr: 172." << (16 + i % 16) << "." << (i / 16 % 256)
      << ".0/24, except: [172." << (16 + i % 16) << "." << (i / 16 % 256) << ".128/25]}\n";
  }
  y << "    ports: [{port: " << (8000 + i % 100)
    << "}, {port: http}, {protocol: UDP, port: 9000, endPort: 9010}]\n";
  if (i % 4 == 0) {
    y << "  egress:\n  - to: [{namespaceSelector: {matchLabels: {team: t" << (i % 7)
      << "}}}]\n    ports: [{port: 5432}]\n  - to: [{ipBlock: {cidr: 10.96.0.0/12}}]\n";
  }
  Json j = YamlToJson(y.str());
  Policy p = ParseNetworkPolicy(j);
  Stamp(&p, "bench:" + std::to_string(i), "bench", j);
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> policies = {10, 100, 1000, 10000}, pods = {100, 1000};
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--policies") == 0) policies = List(argv[i + 1]);
    if (std::strcmp(argv[i], "--pods") == 0) pods = List(argv[i + 1]);
  }
  if (unshare(CLONE_NEWNET) != 0) {
    std::perror("unshare(CLONE_NEWNET) (run as root)");
    return 1;
  }
  std::map<std::string, Labels> nss;
  for (int n = 0; n < 10; ++n)
    nss["ns" + std::to_string(n)] = {{"team", "t" + std::to_string(n % 7)}};
  std::printf(
      "| policies | pods | compute ms | nft apply ms | chains | sets | elements | rules | "
      "+1 pod ms | +1 policy ms |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (int m : pods) {
    for (int n : policies) {
      Nft nft;
      Engine e;
      e.SetNamespaces(nss);
      for (int i = 0; i < m; ++i) e.UpsertPod(MakePod(i));
      std::vector<Policy> set;
      for (int i = 0; i < n; ++i) set.push_back(MakePolicy(i));
      auto t0 = std::chrono::steady_clock::now();
      e.SetPolicies(set);
      e.Commit();
      double compute = Ms(t0);
      NftTable applied = e.desired();
      auto t1 = std::chrono::steady_clock::now();
      std::string script = RenderReplace(applied, {});
      if (const char* dump = std::getenv("POLICY_BENCH_DUMP")) {
        FILE* f = std::fopen(dump, "w");
        std::fwrite(script.data(), 1, script.size(), f);
        std::fclose(f);
      }
      std::string err = nft.Run(script);
      double apply = Ms(t1);
      if (!err.empty()) {
        std::fprintf(stderr, "nft: %s\n", err.substr(0, 2000).c_str());
        return 1;
      }
      // One pod at a time (CNI ADD path): engine + diff transaction.
      const int kAdds = 20;
      auto t2 = std::chrono::steady_clock::now();
      double engine_ms = 0;
      for (int i = 0; i < kAdds; ++i) {
        auto te = std::chrono::steady_clock::now();
        e.UpsertPod(MakePod(m + i));
        Touched t = e.Commit();
        engine_ms += Ms(te);
        if (std::string err2 = nft.Run(RenderDiff(applied, e.desired(), t)); !err2.empty()) {
          std::fprintf(stderr, "nft (pod add): %s\n", err2.substr(0, 2000).c_str());
          return 1;
        }
        CopyTouched(e.desired(), t, &applied);
      }
      double pod_add = Ms(t2) / kAdds;
      std::fprintf(stderr, "engine part of +1 pod: %.2f ms\n", engine_ms / kAdds);
      // One policy more (a file or API update).
      auto t3 = std::chrono::steady_clock::now();
      set.push_back(MakePolicy(n + 1));
      e.SetPolicies(set);
      Touched t = e.Commit();
      if (std::string err3 = nft.Run(RenderDiff(applied, e.desired(), t)); !err3.empty()) {
        std::fprintf(stderr, "nft (policy add): %s\n", err3.substr(0, 2000).c_str());
        return 1;
      }
      double policy_add = Ms(t3);
      const NftTable& d = e.desired();
      std::printf("| %d | %d | %.1f | %.1f | %zu | %zu | %zu | %zu | %.2f | %.1f |\n", n, m,
                  compute, apply, d.chains.size(), d.sets.size(), d.ElementCount(), d.RuleCount(),
                  pod_add, policy_add);
      std::fflush(stdout);
    }
  }
  return 0;
}
