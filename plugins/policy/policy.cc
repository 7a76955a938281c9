// policy: Kubernetes NetworkPolicy and Terway node isolation on nftables.
//
// Sources, merged into one policy set:
//   files     NetworkPolicy manifests in `policy_dir` (a mounted ConfigMap),
//             watched with inotify and rescanned every `rescan_interval`
//   api       UpsertPolicy() (the Kubernetes API source), persisted
//   terway    `terway_network_policy` and `network_isolation` from the config
// Pod identities come from UpsertPod() and namespace labels from the config
// (`namespaces`) and UpsertNamespace(). Everything that is not in a file or
// the config is persisted in the host's store:
//   pod/<container>/<ifname>   PodIdentity JSON
//   ns/<name>                  labels JSON
//   api/<key>                  manifest JSON
// so a restarted daemon rebuilds the same table and swaps it in atomically.
#include <net/if.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <trellis/plugin.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "engine.h"
#include "model.h"
#include "nft.h"

namespace {

namespace fs = std::filesystem;
namespace pol = trellis::policy;
using trellis::sdk::Error;
using trellis::sdk::Json;
using trellis::sdk::Pod;
using trellis::sdk::PodRef;

int64_t Seconds(const Json& v, const std::string& field) {
  if (v.is_number_integer() && v.get<int64_t>() > 0) return v.get<int64_t>();
  if (v.is_string()) {
    std::string s = v.get<std::string>();
    int64_t mult = 1;
    if (!s.empty() && (s.back() == 's' || s.back() == 'm')) {
      mult = s.back() == 'm' ? 60 : 1;
      s.pop_back();
    }
    char* end = nullptr;
    long long n = std::strtoll(s.c_str(), &end, 10);
    if (!s.empty() && *end == '\0' && n > 0) return n * mult;
  }
  throw Error(TRELLIS_E_INVALID,
              field + ": expected a positive duration like 30, \"30s\" or \"2m\"");
}

struct Config {
  std::string policy_dir;
  std::map<std::string, pol::Labels> namespaces;
  std::vector<pol::Policy> terway;  // both Terway keys, mapped
  int64_t rescan_s = 30;
  int64_t counters_s = 10;
  int64_t grace_s = 120;

  static Config Parse(const Json& j) {
    if (!j.is_object()) throw Error(TRELLIS_E_INVALID, "expected a map");
    Config c;
    for (const auto& [k, v] : j.items()) {
      if (k == "policy_dir") {
        if (!v.is_string()) throw Error(TRELLIS_E_INVALID, "policy_dir: expected a path");
        c.policy_dir = v.get<std::string>();
      } else if (k == "namespaces") {
        if (!v.is_object())
          throw Error(TRELLIS_E_INVALID, "namespaces: expected {name: {labels: {...}}}");
        for (const auto& [ns, spec] : v.items()) {
          const std::string f = "namespaces." + ns;
          if (!spec.is_object()) throw Error(TRELLIS_E_INVALID, f + ": expected {labels: {...}}");
          pol::Labels labels;
          for (const auto& [sk, sv] : spec.items()) {
            if (sk != "labels")
              throw Error(TRELLIS_E_INVALID, f + "." + sk + ": unknown key (known: labels)");
            if (!sv.is_object()) throw Error(TRELLIS_E_INVALID, f + ".labels: expected a map");
            for (const auto& [lk, lv] : sv.items()) {
              if (!lv.is_string())
                throw Error(TRELLIS_E_INVALID, f + ".labels." + lk + ": expected a string");
              labels[lk] = lv.get<std::string>();
            }
          }
          c.namespaces[ns] = labels;
        }
      } else if (k == "terway_network_policy" || k == "network_isolation") {
        try {
          auto ps = k == "terway_network_policy" ? pol::ParseTerwayNetworkPolicy(v)
                                                 : pol::ParseNetworkIsolation(v);
          c.terway.insert(c.terway.end(), ps.begin(), ps.end());
        } catch (const pol::ParseError& e) {
          throw Error(TRELLIS_E_INVALID, e.what());
        }
      } else if (k == "rescan_interval") {
        c.rescan_s = Seconds(v, k);
      } else if (k == "counters_interval") {
        c.counters_s = Seconds(v, k);
      } else if (k == "grace_period") {
        c.grace_s = Seconds(v, k);
      } else {
        throw Error(TRELLIS_E_INVALID,
                    k + ": unknown key (known: policy_dir, namespaces, terway_network_policy, "
                        "network_isolation, rescan_interval, counters_interval, grace_period)");
      }
    }
    return c;
  }
};

// Named container ports of a pod: `args.cni.ports` in the network config, or
// the pod annotation trellis.io/ports, both [{name, containerPort, protocol}].
std::vector<pol::NamedPort> NamedPorts(const Pod& pod) {
  std::vector<pol::NamedPort> out;
  auto read = [&](const Json& list, const std::string& field) {
    if (list.is_null()) return;
    if (!list.is_array())
      throw Error(TRELLIS_E_INVALID,
                  field + ": expected a list of {name, containerPort, protocol}");
    for (size_t i = 0; i < list.size(); ++i) {
      const Json& p = list[i];
      const std::string f = field + "[" + std::to_string(i) + "]";
      if (!p.is_object() || !p.contains("containerPort") ||
          !p["containerPort"].is_number_integer()) {
        throw Error(TRELLIS_E_INVALID, f + ".containerPort: required, a port number");
      }
      int64_t port = p["containerPort"].get<int64_t>();
      if (port < 1 || port > 65535) {
        throw Error(TRELLIS_E_INVALID,
                    f + ".containerPort: " + std::to_string(port) + " is out of range 1-65535");
      }
      auto proto = pol::ParseProtocol(p.value("protocol", "TCP"));
      if (!proto) throw Error(TRELLIS_E_INVALID, f + ".protocol: expected TCP, UDP or SCTP");
      std::string name = p.value("name", "");
      if (!name.empty()) out.push_back({name, *proto, static_cast<uint16_t>(port)});
    }
  };
  Json args = pod.CniArgs();
  if (args.is_object() && args.contains("cni") && args["cni"].is_object()) {
    read(args["cni"].value("ports", Json()), "args.cni.ports");
  }
  if (auto it = pod.annotations.find("trellis.io/ports"); it != pod.annotations.end()) {
    Json j = Json::parse(it->second, nullptr, false);
    if (j.is_discarded()) throw Error(TRELLIS_E_INVALID, "annotation trellis.io/ports: not JSON");
    read(j, "annotation trellis.io/ports");
  }
  return out;
}

pol::PodIdentity Identity(const Pod& pod) {
  pol::PodIdentity id;
  id.key = pod.container_id + "/" + pod.ifname;
  id.ns = pod.k8s_namespace.empty() ? "default" : pod.k8s_namespace;
  id.name = pod.k8s_name.empty() ? pod.container_id : pod.k8s_name;
  id.host_ifname = pod.host_ifname;
  id.labels = pod.labels;
  for (const auto& a : pod.addresses) {
    if (auto r = pol::ParseIp(a.IpString())) id.addresses.push_back(*r);
  }
  id.ports = NamedPorts(pod);
  return id;
}

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class PolicyModule {
 public:
  static constexpr const char* kName = "policy";
  static constexpr const char* kVersion = "1.0.0";
  static constexpr const char* kDescription =
      "Kubernetes NetworkPolicy and Terway node isolation on nftables";

  static void Validate(const Json& config) { Config::Parse(config); }

  PolicyModule(trellis::sdk::Host host, const Json& config)
      : host_(host), cfg_(Config::Parse(config)) {
    RegisterMetrics();
    for (const auto& [key, value] : host_.Scan("pod/")) {
      Json j = Json::parse(value, nullptr, false);
      if (j.is_object()) engine_.UpsertPod(pol::PodIdentity::FromJson(j));
    }
    for (const auto& [key, value] : host_.Scan("ns/")) {
      Json j = Json::parse(value, nullptr, false);
      if (j.is_object()) api_namespaces_[key.substr(3)] = j.get<pol::Labels>();
    }
    for (const auto& [key, value] : host_.Scan("api/")) {
      std::string k = key.substr(4);
      Json j = Json::parse(value, nullptr, false);
      try {
        api_policies_[k] = ParseApiPolicy(k, j);
      } catch (const Error& e) {
        host_.Warn("stored policy " + k + " no longer parses, dropped: " + e.what());
      }
    }
    std::lock_guard lock(mu_);
    ScanDirLocked();
    engine_.SetNamespaces(MergedNamespaces());
    engine_.SetPolicies(AllPolicies());
    engine_.Commit();
    // Pod interfaces that exist already but are not known yet (the module is
    // being enabled on a node with running pods) stay open until the host
    // upserts them right after create(); the timeout bounds that grace.
    std::string grace;
    if (struct if_nameindex* ifs = if_nameindex()) {
      for (auto* i = ifs; i->if_index != 0 && i->if_name != nullptr; ++i) {
        std::string n = i->if_name;
        if (n.rfind("tr", 0) != 0 ||
            engine_.desired().sets.at("pods").elements.contains("\"" + n + "\""))
          continue;
        grace += (grace.empty() ? "" : ", ") +
                 ("\"" + n + "\" timeout " + std::to_string(cfg_.grace_s) + "s");
      }
      if_freenameindex(ifs);
    }
    std::string extra = grace.empty() ? "" : "add element inet trellis grace { " + grace + " }\n";
    ReplaceTableLocked(extra);
    host_.Info("enforcing " + std::to_string(engine_.PolicyCount()) + " policies on " +
               std::to_string(engine_.pods().size()) + " pods (" + Summary() + ")");
    stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    thread_ = std::thread([this] { Loop(); });
  }

  ~PolicyModule() { StopThread(); }

  void Reconfigure(const Json& config) {
    Config next = Config::Parse(config);
    StopThread();
    auto restart = [this] {
      stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      thread_ = std::thread([this] { Loop(); });
    };
    try {
      std::lock_guard lock(mu_);
      bool dir_changed = next.policy_dir != cfg_.policy_dir;
      cfg_ = std::move(next);
      if (dir_changed) files_.clear();
      ScanDirLocked();
      engine_.SetNamespaces(MergedNamespaces());
      engine_.SetPolicies(AllPolicies());
      ApplyLocked();
    } catch (...) {
      restart();
      throw;
    }
    restart();
  }

  void Deactivate() {
    StopThread();
    std::lock_guard lock(mu_);
    std::string err = nft_.Run(std::string("add table inet ") + pol::kTable +
                               "\ndelete table inet " + pol::kTable + "\n");
    if (!err.empty()) throw Error(TRELLIS_E_UNAVAILABLE, "removing nft table inet trellis: " + err);
    applied_ = pol::NftTable();
    host_.Info("nft table inet trellis removed");
  }

  // ---------------------------------------------------------------- pods --

  void UpsertPod(const Pod& pod) {
    pol::PodIdentity id = Identity(pod);
    if (id.host_ifname.empty()) {
      throw Error(TRELLIS_E_INVALID, "pod " + id.DisplayName() + " has no host interface yet");
    }
    std::lock_guard lock(mu_);
    if (const auto* known = engine_.FindPod(id.key); known != nullptr && *known == id) return;
    host_.Put("pod/" + id.key, id.ToJson().dump());
    engine_.UpsertPod(id);
    ApplyLocked();
  }

  void RemovePod(const Pod& pod) {
    std::lock_guard lock(mu_);
    RemoveLocked(pod.container_id + "/" + pod.ifname);
  }

  void CheckPolicy(const Pod& pod) {
    std::lock_guard lock(mu_);
    const std::string key = pod.container_id + "/" + pod.ifname;
    const pol::PodIdentity* id = engine_.FindPod(key);
    if (id == nullptr) throw Error(TRELLIS_E_MISMATCH, "the policy module does not know this pod");
    std::string q = "get element inet trellis pods { \"" + id->host_ifname + "\" }\n";
    for (bool egress : {false, true}) {
      if (!engine_.GroupOf(key, egress).empty()) {
        q += std::string("get element inet trellis ") + (egress ? "egress" : "ingress") + " { \"" +
             id->host_ifname + "\" }\n";
      }
    }
    std::string out;
    if (std::string err = nft_.Run(q, &out); !err.empty()) {
      throw Error(TRELLIS_E_MISMATCH, "nft table inet trellis lacks the enforcement of pod " +
                                          id->DisplayName() + ": " + err);
    }
  }

  void GcPolicy(const std::vector<PodRef>& live) {
    std::lock_guard lock(mu_);
    std::set<std::string> keep;
    for (const auto& r : live) keep.insert(r.container_id + "/" + r.ifname);
    std::vector<std::string> stale;
    for (const auto& [k, p] : engine_.pods()) {
      if (!keep.contains(k)) stale.push_back(k);
    }
    for (const auto& k : stale) {
      host_.Info("gc: forgetting pod " + k);
      RemoveLocked(k);
    }
  }

  // ------------------------------------------------------ external source --

  void UpsertNamespace(const std::string& name, const pol::Labels& labels) {
    std::lock_guard lock(mu_);
    host_.Put("ns/" + name, Json(labels).dump());
    api_namespaces_[name] = labels;
    engine_.SetNamespaces(MergedNamespaces());
    ApplyLocked();
  }

  void UpsertPolicy(const std::string& key, const std::optional<Json>& manifest) {
    if (key.empty()) throw Error(TRELLIS_E_INVALID, "policy key: must not be empty");
    std::lock_guard lock(mu_);
    if (!manifest) {
      host_.Delete("api/" + key);
      api_policies_.erase(key);
    } else {
      pol::Policy p = ParseApiPolicy(key, *manifest);
      host_.Put("api/" + key, manifest->dump());
      api_policies_[key] = std::move(p);
    }
    engine_.SetPolicies(AllPolicies());
    ApplyLocked();
  }

  Json Explain(const Json& req) {
    std::lock_guard lock(mu_);
    auto endpoint = [&](const char* field) -> pol::Endpoint {
      if (!req.contains(field) || !req[field].is_string()) {
        throw Error(TRELLIS_E_INVALID,
                    std::string(field) + ": expected NAMESPACE/POD or an IP address");
      }
      std::string v = req[field].get<std::string>();
      pol::Endpoint e;
      if (auto ip = pol::ParseIp(v)) {
        e.ip = ip;
        for (const auto& [k, p] : engine_.pods()) {
          for (const auto& a : p.addresses) {
            if (a == *ip) e.pod = &p;
          }
        }
        return e;
      }
      auto slash = v.find('/');
      std::string ns = slash == std::string::npos ? "default" : v.substr(0, slash);
      std::string name = slash == std::string::npos ? v : v.substr(slash + 1);
      e.pod = engine_.FindPodByName(ns, name);
      if (e.pod == nullptr) {
        throw Error(TRELLIS_E_NOT_FOUND,
                    std::string(field) + ": no pod " + ns + "/" + name +
                        " on this node (give an IP address for a remote endpoint)");
      }
      return e;
    };
    pol::Endpoint from = endpoint("from"), to = endpoint("to");
    std::string proto_name = req.value("protocol", "TCP");
    auto proto = pol::ParseProtocol(proto_name);
    if (!proto)
      throw Error(TRELLIS_E_INVALID, "protocol: '" + proto_name + "' is not TCP, UDP or SCTP");
    int64_t port = -1;
    if (req.contains("port") && req["port"].is_number_integer()) port = req["port"].get<int64_t>();
    if (req.contains("port") && req["port"].is_string()) {
      const std::string s = req["port"].get<std::string>();
      char* end = nullptr;
      port = std::strtol(s.c_str(), &end, 10);
      if (s.empty() || *end != '\0') port = -1;
    }
    if (port < 1 || port > 65535)
      throw Error(TRELLIS_E_INVALID, "port: expected a number from 1 to 65535");
    // Both ends in one family: the one an IP endpoint names, else IPv4 when
    // both pods have it.
    int family = from.ip ? from.ip->family : to.ip ? to.ip->family : 4;
    auto pick = [&](pol::Endpoint& e) {
      if (e.ip || e.pod == nullptr) return;
      for (const auto& a : e.pod->addresses) {
        if (a.family == family) {
          e.ip = a;
          return;
        }
      }
      if (!e.pod->addresses.empty()) e.ip = e.pod->addresses.front();
    };
    pick(from);
    if (!from.ip) family = 6;
    pick(to);
    return engine_.Explain(from, to, *proto, static_cast<uint16_t>(port));
  }

  Json Status() {
    std::lock_guard lock(mu_);
    Json errors = Json::array();
    for (const auto& e : FileErrors()) errors.push_back(e);
    Json loaded = Json::array();
    for (const auto& p : AllPolicies()) loaded.push_back(p.DisplayName());
    std::string message = apply_error_;
    if (message.empty() && !errors.empty()) {
      message = std::to_string(errors.size()) +
                " policy document(s) refused; first: " + errors[0].get<std::string>();
    }
    const auto& t = engine_.desired();
    return {{"healthy", apply_error_.empty()},
            {"degraded", !errors.empty()},
            {"message", message},
            {"policy_dir", cfg_.policy_dir},
            {"policies", engine_.PolicyCount()},
            {"rules", engine_.RuleCount()},
            {"loaded", loaded},
            {"errors", errors},
            {"pods", engine_.pods().size()},
            {"groups", engine_.GroupCount()},
            {"generation", generation_},
            {"nft",
             {{"chains", t.chains.size()},
              {"sets", t.sets.size()},
              {"elements", t.ElementCount()},
              {"rules", t.RuleCount()},
              {"counters", t.counters.size()}}},
            {"last_apply_ms", last_apply_ms_}};
  }

 private:
  pol::Policy ParseApiPolicy(const std::string& key, const Json& manifest) {
    try {
      pol::Policy p = pol::ParseNetworkPolicy(manifest);
      pol::Stamp(&p, "api:" + key, "policy object " + key, manifest);
      return p;
    } catch (const pol::ParseError& e) {
      throw Error(TRELLIS_E_INVALID, "policy object " + key + ": " + e.what());
    }
  }

  std::map<std::string, pol::Labels> MergedNamespaces() const {
    auto out = cfg_.namespaces;
    for (const auto& [k, v] : api_namespaces_) out[k] = v;  // the live source wins
    return out;
  }

  std::vector<pol::Policy> AllPolicies() const {
    std::vector<pol::Policy> out = cfg_.terway;
    for (const auto& [path, docs] : files_) {
      for (const auto& d : docs.documents) {
        if (d.policy) out.push_back(*d.policy);
      }
    }
    for (const auto& [k, p] : api_policies_) out.push_back(p);
    return out;
  }

  std::vector<std::string> FileErrors() const {
    std::vector<std::string> out;
    for (const auto& [path, docs] : files_) {
      for (const auto& d : docs.documents) {
        if (!d.error.empty()) out.push_back(d.error);
      }
    }
    return out;
  }

  std::string Summary() const {
    size_t files = 0, api = api_policies_.size();
    for (const auto& [path, docs] : files_) {
      for (const auto& d : docs.documents) files += d.policy ? 1 : 0;
    }
    return std::to_string(files) + " from files, " + std::to_string(api) + " from the API, " +
           std::to_string(cfg_.terway.size()) + " from Terway config";
  }

  // Re-reads policy_dir; true when anything changed. Hidden entries (the
  // ConfigMap's ..data machinery) are skipped; symlinks are followed.
  bool ScanDirLocked() {
    std::map<std::string, std::string> contents;
    if (!cfg_.policy_dir.empty()) {
      std::error_code ec;
      for (const auto& e : fs::directory_iterator(cfg_.policy_dir, ec)) {
        std::string name = e.path().filename().string();
        if (name.empty() || name[0] == '.') continue;
        std::error_code ec2;
        if (!fs::is_regular_file(e.path(), ec2)) continue;
        contents[e.path().string()] = ReadFile(e.path());
      }
      if (ec && !dir_missing_logged_) {
        host_.Warn("policy_dir " + cfg_.policy_dir + ": " + ec.message() + " (watching for it)");
        dir_missing_logged_ = true;
      } else if (!ec) {
        dir_missing_logged_ = false;
      }
    }
    bool changed = false;
    for (auto it = files_.begin(); it != files_.end();) {
      if (!contents.contains(it->first)) {
        host_.Info("policy file " + it->first + " removed");
        it = files_.erase(it);
        changed = true;
      } else {
        ++it;
      }
    }
    for (auto& [path, text] : contents) {
      auto it = files_.find(path);
      if (it != files_.end() && it->second.content == text) continue;
      FileState st{text, pol::ParsePolicyFile(path, text)};
      size_t ok = 0;
      for (const auto& d : st.documents) {
        if (d.policy)
          ok++;
        else
          host_.Warn("refused: " + d.error);
      }
      host_.Info("policy file " + path + ": " + std::to_string(ok) + " policies, " +
                 std::to_string(st.documents.size() - ok) + " refused");
      files_[path] = std::move(st);
      changed = true;
    }
    return changed;
  }

  void RemoveLocked(const std::string& key) {
    if (engine_.FindPod(key) != nullptr) {
      const auto* id = engine_.FindPod(key);
      for (const char* dir : {"ingress", "egress"})
        host_.ForgetMetric(m_drops_, {id->ns, id->name, dir});
      engine_.RemovePod(key);
      ApplyLocked();
    }
    host_.Delete("pod/" + key);
  }

  void ReplaceTableLocked(const std::string& extra) {
    auto start = std::chrono::steady_clock::now();
    std::string err = nft_.Run(pol::RenderReplace(engine_.desired(), nft_.Counters(), extra));
    if (!err.empty()) {
      apply_error_ = "nftables refused the table: " + err;
      host_.Error(apply_error_);
      throw Error(TRELLIS_E_UNAVAILABLE, apply_error_);
    }
    applied_ = engine_.desired();
    apply_error_.clear();
    Applied(start);
  }

  // Brings the kernel to the engine's picture in one transaction. On failure
  // the whole table is replaced (the applied picture may be off); if that
  // fails too the call fails and the pod operation with it.
  void ApplyLocked() {
    pol::Touched touched = engine_.Commit();
    if (touched.empty()) return;
    auto start = std::chrono::steady_clock::now();
    const pol::NftTable& want = engine_.desired();
    std::string err = nft_.Run(pol::RenderDiff(applied_, want, touched));
    if (!err.empty()) {
      host_.Warn("nft transaction refused, replacing the whole table: " + err);
      ReplaceTableLocked("");
      return;
    }
    pol::CopyTouched(want, touched, &applied_);
    apply_error_.clear();
    Applied(start);
  }

  void Applied(std::chrono::steady_clock::time_point start) {
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    last_apply_ms_ = secs * 1000;
    generation_++;
    host_.ObserveMetric(m_apply_, {}, secs);
    size_t files = 0, api = api_policies_.size();
    for (const auto& [path, docs] : files_) {
      for (const auto& d : docs.documents) files += d.policy ? 1 : 0;
    }
    host_.SetMetric(m_policies_, {"file"}, double(files));
    host_.SetMetric(m_policies_, {"api"}, double(api));
    host_.SetMetric(m_policies_, {"terway"}, double(cfg_.terway.size()));
    host_.SetMetric(m_rules_, {}, double(engine_.RuleCount()));
    host_.SetMetric(m_invalid_, {}, double(FileErrors().size()));
    const auto& t = engine_.desired();
    host_.SetMetric(m_objects_, {"chains"}, double(t.chains.size()));
    host_.SetMetric(m_objects_, {"sets"}, double(t.sets.size()));
    host_.SetMetric(m_objects_, {"elements"}, double(t.ElementCount()));
    host_.SetMetric(m_objects_, {"rules"}, double(t.RuleCount()));
  }

  void RegisterMetrics() {
    m_policies_ = host_.RegisterMetric(TRELLIS_METRIC_GAUGE, "trellis_policy_policies",
                                       "NetworkPolicies enforced, by source.", {"source"});
    m_rules_ = host_.RegisterMetric(TRELLIS_METRIC_GAUGE, "trellis_policy_rules",
                                    "Ingress and egress rules of the enforced policies.");
    m_invalid_ = host_.RegisterMetric(TRELLIS_METRIC_GAUGE, "trellis_policy_invalid_documents",
                                      "Policy documents in policy_dir that were refused.");
    m_objects_ = host_.RegisterMetric(TRELLIS_METRIC_GAUGE, "trellis_policy_nft_objects",
                                      "Objects of the nft table inet trellis, by kind.", {"kind"});
    m_apply_ = host_.RegisterMetric(TRELLIS_METRIC_HISTOGRAM, "trellis_policy_apply_seconds",
                                    "Time to program one nftables transaction.", {},
                                    {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30});
    m_drops_ =
        host_.RegisterMetric(TRELLIS_METRIC_COUNTER, "trellis_policy_drops_total",
                             "Packets dropped by policy, per pod and direction (nft counters).",
                             {"namespace", "pod", "direction"});
    m_blocked_ =
        host_.RegisterMetric(TRELLIS_METRIC_COUNTER, "trellis_policy_blocked_total",
                             "Packets dropped from pod interfaces not yet enforced (pending) "
                             "or with a source address not their own (spoofed).",
                             {"reason"});
  }

  void UpdateCounters() {
    std::map<std::string, std::pair<std::string, std::string>> names;  // host ifname -> (ns, pod)
    {
      std::lock_guard lock(mu_);
      for (const auto& [k, p] : engine_.pods()) names[p.host_ifname] = {p.ns, p.name};
    }
    auto counters = nft_.Counters();
    std::lock_guard lock(mu_);
    for (const auto& [name, v] : counters) {
      auto last = counter_last_.find(name);
      uint64_t prev = last == counter_last_.end() ? 0 : last->second;
      uint64_t delta = v.packets >= prev ? v.packets - prev : v.packets;
      counter_last_[name] = v.packets;
      if (delta == 0) continue;
      if (name == "pending" || name == "spoofed") {
        host_.AddMetric(m_blocked_, {name}, double(delta));
        continue;
      }
      bool in = name.rfind("in_", 0) == 0, out = name.rfind("out_", 0) == 0;
      if (!in && !out) continue;
      auto it = names.find(name.substr(in ? 3 : 4));
      if (it == names.end()) continue;
      host_.AddMetric(m_drops_, {it->second.first, it->second.second, in ? "ingress" : "egress"},
                      double(delta));
    }
  }

  void Loop() {
    int ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    int wd = -1;
    auto watch = [&] {
      if (wd >= 0 || ino < 0 || cfg_.policy_dir.empty()) return;
      wd = inotify_add_watch(ino, cfg_.policy_dir.c_str(),
                             IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM | IN_CLOSE_WRITE |
                                 IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF);
    };
    watch();
    auto now = [] { return std::chrono::steady_clock::now(); };
    auto next_scan = now() + std::chrono::seconds(cfg_.rescan_s);
    auto next_counters = now() + std::chrono::seconds(cfg_.counters_s);
    bool pending = false;
    while (true) {
      auto deadline = std::min(next_scan, next_counters);
      int timeout =
          pending ? 50
                  : int(std::max<int64_t>(
                        0, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now())
                               .count()));
      pollfd fds[2] = {{stop_fd_, POLLIN, 0}, {ino, POLLIN, 0}};
      int n = poll(fds, ino >= 0 ? 2 : 1, timeout);
      if (n < 0 && errno != EINTR) break;
      if (fds[0].revents & POLLIN) break;
      if (ino >= 0 && (fds[1].revents & POLLIN)) {
        alignas(inotify_event) char buf[4096];
        ssize_t len;
        while ((len = read(ino, buf, sizeof buf)) > 0) {
          for (char* p = buf; p < buf + len;) {
            auto* ev = reinterpret_cast<inotify_event*>(p);
            if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) wd = -1;
            p += sizeof(inotify_event) + ev->len;
          }
        }
        pending = true;  // coalesce a burst (a ConfigMap swap is several events)
        continue;
      }
      if (pending || now() >= next_scan) {
        pending = false;
        next_scan = now() + std::chrono::seconds(cfg_.rescan_s);
        watch();
        try {
          std::lock_guard lock(mu_);
          if (ScanDirLocked()) {
            engine_.SetPolicies(AllPolicies());
            ApplyLocked();
            host_.Info("policy set reloaded: " + std::to_string(engine_.PolicyCount()) +
                       " policies (" + Summary() + "), applied in " +
                       std::to_string(last_apply_ms_) + " ms");
          }
        } catch (const std::exception& e) {
          host_.Error(std::string("applying the policy files failed: ") + e.what());
        }
      }
      if (now() >= next_counters) {
        next_counters = now() + std::chrono::seconds(cfg_.counters_s);
        UpdateCounters();
      }
    }
    if (ino >= 0) close(ino);
  }

  void StopThread() {
    if (thread_.joinable()) {
      uint64_t one = 1;
      (void)!write(stop_fd_, &one, sizeof one);
      thread_.join();
    }
    if (stop_fd_ >= 0) {
      close(stop_fd_);
      stop_fd_ = -1;
    }
  }

  struct FileState {
    std::string content;
    std::vector<pol::LoadedDocument> documents;
  };

  trellis::sdk::Host host_;
  Config cfg_;
  std::mutex mu_;
  pol::Engine engine_;
  pol::Nft nft_;
  pol::NftTable applied_;  // what the kernel holds, as far as we know
  std::map<std::string, FileState> files_;
  std::map<std::string, pol::Policy> api_policies_;
  std::map<std::string, pol::Labels> api_namespaces_;
  std::map<std::string, uint64_t> counter_last_;
  std::string apply_error_;
  bool dir_missing_logged_ = false;
  uint64_t generation_ = 0;
  double last_apply_ms_ = 0;
  uint32_t m_policies_ = 0, m_rules_ = 0, m_invalid_ = 0, m_objects_ = 0, m_apply_ = 0,
           m_drops_ = 0, m_blocked_ = 0;
  int stop_fd_ = -1;
  std::thread thread_;
};

}  // namespace

TRELLIS_PLUGIN(PolicyModule);
