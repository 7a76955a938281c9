#include "core/kube/source.h"

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <set>

#include "core/module.h"
#include "core/pipeline.h"
#include "core/registry.h"
#include "core/store.h"

#ifndef TRELLIS_VERSION
#define TRELLIS_VERSION "dev"
#endif

namespace trellis {
namespace {

// The host's own key/value namespace in the store: module names cannot start
// with '_', so no module can read or clobber it.
constexpr std::string_view kStoreNs = "_kube";
constexpr const char* kOwner = "kubernetes";
// Annotations nobody on the node needs and that can be large.
constexpr const char* kLastApplied = "kubectl.kubernetes.io/last-applied-configuration";

using SteadyClock = std::chrono::steady_clock;

sdk::Labels StringMap(const Json& obj, const char* field) {
  sdk::Labels out;
  if (!obj.contains("metadata")) return out;
  const Json& m = obj["metadata"];
  if (!m.is_object() || !m.contains(field) || !m[field].is_object()) return out;
  for (const auto& [k, v] : m[field].items()) {
    if (v.is_string()) out[k] = v.get<std::string>();
  }
  return out;
}

std::string Meta(const Json& obj, const char* field) {
  if (!obj.contains("metadata") || !obj["metadata"].is_object()) return "";
  return obj["metadata"].value(field, "");
}

sdk::Labels Annotations(const Json& obj) {
  sdk::Labels a = StringMap(obj, "annotations");
  a.erase(kLastApplied);
  return a;
}

std::string Env(const std::map<std::string, std::string>& env, const char* key) {
  auto it = env.find(key);
  return it == env.end() ? "" : it->second;
}

Json NodeInfoJson(const KubeSource::NodeInfo& n) {
  return {{"name", n.name}, {"labels", n.labels}, {"pod_cidrs", n.pod_cidrs}};
}

}  // namespace

KubeSource::KubeSource(KubernetesConfig config, std::map<std::string, std::string> env,
                       Store* store, MetricsRegistry* metrics, ModuleRegistry* registry,
                       PodPipeline* pipeline)
    : cfg_(std::move(config)),
      env_(std::move(env)),
      store_(store),
      metrics_(metrics),
      registry_(registry),
      pipeline_(pipeline) {}

KubeSource::~KubeSource() { Stop(); }

std::unique_ptr<kube::Informer> KubeSource::MakeInformer(const std::string& name,
                                                         const std::string& path,
                                                         const std::string& field_selector,
                                                         kube::InformerHandlers handlers) {
  handlers.on_error = [name](const std::string& what, const Status& s) {
    if (kube::IsGone(s)) {
      spdlog::info("kubernetes: {}: the resourceVersion expired (410 Gone), listing again", what);
    } else {
      spdlog::warn("kubernetes: {} failed, retrying with back-off: {}", what, s.message());
    }
  };
  kube::InformerOptions o;
  o.name = name;
  o.path = path;
  o.field_selector = field_selector;
  return std::make_unique<kube::Informer>(client_.get(), o, std::move(handlers));
}

Status KubeSource::Start() {
  node_name_ = !cfg_.node_name.empty() ? cfg_.node_name : Env(env_, "NODE_NAME");
  if (node_name_.empty()) {
    return absl::FailedPreconditionError(
        "kubernetes.node_name is not set and NODE_NAME is empty: give the DaemonSet "
        "env NODE_NAME from fieldRef spec.nodeName");
  }
  StatusOr<kube::Connection> conn =
      cfg_.kubeconfig.empty() ? kube::InClusterConnection(cfg_.service_account_dir, env_)
                              : kube::LoadKubeconfig(cfg_.kubeconfig, cfg_.context);
  if (!conn.ok()) return Annotate(conn.status(), "kubernetes");
  namespace_ = cfg_.config_namespace;
  if (namespace_.empty()) namespace_ = Env(env_, "POD_NAMESPACE");
  if (namespace_.empty()) namespace_ = conn->default_namespace;
  if (namespace_.empty()) namespace_ = "kube-system";
  identity_ = cfg_.leader_election.identity.empty() ? node_name_ : cfg_.leader_election.identity;

  auto reg = [&](MetricType t, const char* name, const char* help,
                 std::vector<std::string> labels, std::vector<double> buckets = {}) {
    auto id = metrics_->Register(t, name, help, labels, buckets, kOwner);
    return id.ok() ? Metric(metrics_, *id) : Metric();
  };
  m_requests_ = reg(MetricType::kCounter, "trellis_kube_requests_total",
                    "Kubernetes API requests, by verb and HTTP status (0: no answer).",
                    {"verb", "code"});
  m_request_seconds_ = reg(MetricType::kHistogram, "trellis_kube_request_duration_seconds",
                           "Kubernetes API request latency (WATCH: until the headers), by verb.",
                           {"verb"}, MetricsRegistry::LatencyBuckets());
  m_synced_ = reg(MetricType::kGauge, "trellis_kube_informer_synced",
                  "1 once the resource has been listed.", {"resource"});
  m_objects_ = reg(MetricType::kGauge, "trellis_kube_informer_objects",
                   "Objects in the watch cache.", {"resource"});
  m_events_ = reg(MetricType::kCounter, "trellis_kube_watch_events_total",
                  "Watch events received (ADDED, MODIFIED, DELETED).", {"resource"});
  m_failures_ = reg(MetricType::kCounter, "trellis_kube_watch_failures_total",
                    "Lists and watches that failed and were retried after a back-off.",
                    {"resource"});
  m_lists_ = reg(MetricType::kCounter, "trellis_kube_lists_total",
                 "Complete lists (the first, and relists after 410 Gone).", {"resource"});
  m_leader_ = reg(MetricType::kGauge, "trellis_kube_leader",
                  "1 while this node holds the Lease.", {"lease"});
  m_k8s_events_ = reg(MetricType::kCounter, "trellis_kube_events_total",
                      "Kubernetes Events about pods, by result (posted, failed, dropped).",
                      {"result"});
  m_feed_errors_ = reg(MetricType::kCounter, "trellis_kube_feed_errors_total",
                       "Objects from the API a module or the pipeline refused.", {"kind"});

  kube::ClientOptions co;
  co.connection = *conn;
  co.qps = cfg_.qps;
  co.burst = cfg_.burst;
  co.request_timeout = kube::Millis(cfg_.request_timeout_ms);
  co.user_agent = std::string("trellisd/") + TRELLIS_VERSION + " (" + node_name_ + ")";
  co.on_request = [req = m_requests_, secs = m_request_seconds_](const std::string& verb, int code,
                                                                  double s) {
    req.Add({verb, std::to_string(code)});
    secs.Observe({verb}, s);
  };
  auto client = kube::Client::Create(co);
  if (!client.ok()) return Annotate(client.status(), "kubernetes");
  client_ = *std::move(client);

  // The node as an earlier run saw it, until the API answers.
  if (auto v = store_->KvGet(kStoreNs, "node"); v.ok() && v->has_value()) {
    Json j = Json::parse(**v, nullptr, false);
    if (j.is_object() && j.value("name", "") == node_name_) {
      NodeInfo n;
      n.name = node_name_;
      n.labels = j.value("labels", std::map<std::string, std::string>{});
      n.pod_cidrs = j.value("pod_cidrs", std::vector<std::string>{});
      std::lock_guard lock(mu_);
      node_info_ = n;
    }
  }

  node_ = MakeInformer("nodes", "/api/v1/nodes", "metadata.name=" + node_name_,
                       {.on_add = [this](const Json& o) { OnNode(o); },
                        .on_update = [this](const Json&, const Json& o) { OnNode(o); }});
  pods_ = MakeInformer(
      "pods", "/api/v1/pods", "spec.nodeName=" + node_name_,
      {.on_add = [this](const Json& o) { OnPod(nullptr, o); },
       .on_update = [this](const Json& old, const Json& o) { OnPod(&old, o); }});
  namespaces_ = MakeInformer(
      "namespaces", "/api/v1/namespaces", "",
      {.on_add = [this](const Json& o) { OnNamespace(o, false); },
       .on_update =
           [this](const Json& old, const Json& o) {
             if (old == o || StringMap(old, "labels") != StringMap(o, "labels")) {
               OnNamespace(o, false);
             }
           },
       .on_delete = [this](const Json& o) { OnNamespace(o, true); }});
  policies_ = MakeInformer(
      "networkpolicies", "/apis/networking.k8s.io/v1/networkpolicies", "",
      {.on_add = [this](const Json& o) { OnPolicy(o, false); },
       .on_update =
           [this](const Json& old, const Json& o) {
             if (old == o || old.value("spec", Json()) != o.value("spec", Json())) {
               OnPolicy(o, false);
             }
           },
       .on_delete = [this](const Json& o) { OnPolicy(o, true); },
       .on_list = [this] { OnPoliciesListed(); }});

  if (cfg_.events) {
    recorder_ = std::make_unique<kube::EventRecorder>(client_.get(), "trellis", node_name_);
    recorder_->Start();
  }
  if (cfg_.leader_election.enabled) {
    const auto& le = cfg_.leader_election;
    kube::LeaderElectionOptions lo{namespace_, le.lease_name, identity_,
                                   kube::Millis(le.lease_duration_ms),
                                   kube::Millis(le.renew_deadline_ms),
                                   kube::Millis(le.retry_period_ms)};
    elector_ = std::make_unique<kube::LeaderElector>(client_.get(), lo, [this](bool leader) {
      m_leader_.Set({cfg_.leader_election.lease_name}, leader ? 1 : 0);
      auto reader = registry_->ReaderLock();
      std::lock_guard order(leader_mu_);
      if (auto m = registry_->Current()->secgroup) {
        if (Status s = m->SecgroupSetLeader(leader); !s.ok()) {
          spdlog::error("kubernetes: telling module {} it {} the leader failed: {}", m->name(),
                        leader ? "is" : "is no longer", s.message());
        }
      }
    });
    {
      auto reader = registry_->ReaderLock();
      elector_->SetCampaigning(registry_->Current()->secgroup != nullptr);
    }
    elector_->Start();
  }

  node_->Start();
  {
    std::string label;
    {
      std::lock_guard lock(mu_);
      if (node_info_ && !cfg_.node_config_label.empty()) {
        auto it = node_info_->labels.find(cfg_.node_config_label);
        if (it != node_info_->labels.end()) label = it->second;
      }
    }
    if (!label.empty()) StartOverrideInformer(label);
  }
  namespaces_->Start();
  policies_->Start();
  pods_->Start();
  housekeeping_ = std::thread([this] { Housekeeping(); });
  spdlog::info("kubernetes: watching {} as node {} (config namespace {}, {}, qps {}, burst {})",
               client_->connection().ServerUrl(), node_name_, namespace_,
               client_->connection().origin, cfg_.qps, cfg_.burst);
  return absl::OkStatus();
}

void KubeSource::Stop() {
  {
    std::lock_guard lock(hk_mu_);
    hk_stop_ = true;
  }
  hk_cv_.notify_all();
  if (housekeeping_.joinable()) housekeeping_.join();
  // The elector first: a graceful stop hands the Lease over at once.
  if (elector_) elector_->Stop();
  std::unique_ptr<kube::Informer> override;
  {
    std::lock_guard lock(override_mu_);
    override = std::move(override_);
  }
  if (override) override->Stop();
  for (auto* i : {pods_.get(), namespaces_.get(), policies_.get(), node_.get()}) {
    if (i) i->Stop();
  }
  if (recorder_) recorder_->Stop();
  if (client_) client_->Shutdown();
  if (metrics_ && client_) metrics_->UnregisterOwner(kOwner);
}

bool KubeSource::WaitForNode(SteadyClock::time_point deadline) {
  if (!node_ || !node_->WaitForSync(deadline)) return false;
  std::string label;
  {
    std::lock_guard lock(mu_);
    if (!node_info_ || !node_info_->from_api || cfg_.node_config_label.empty()) return node_info_.has_value();
    auto it = node_info_->labels.find(cfg_.node_config_label);
    if (it == node_info_->labels.end()) return true;
    label = it->second;
  }
  // The per-node ConfigMap is part of the node config: wait for it too.
  while (SteadyClock::now() < deadline) {
    {
      std::lock_guard lock(override_mu_);
      if (override_ && override_name_ == label) {
        return override_->WaitForSync(deadline);
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

bool KubeSource::WaitForSync(SteadyClock::time_point deadline) {
  bool ok = true;
  for (auto* i : {node_.get(), namespaces_.get(), policies_.get(), pods_.get()}) {
    ok = i != nullptr && i->WaitForSync(deadline) && ok;
  }
  return ok;
}

std::optional<KubeSource::NodeInfo> KubeSource::Node(std::string* why) const {
  std::lock_guard lock(mu_);
  if (!node_info_) {
    if (why) {
      *why = node_ && node_->synced()
                 ? "the API has no Node named " + node_name_
                 : "the Node " + node_name_ + " has not been listed yet (" +
                       (node_ ? node_->stats().last_error : std::string("not started")) + ")";
    }
    return std::nullopt;
  }
  return node_info_;
}

std::optional<KubeSource::NodeOverride> KubeSource::Override(std::string* why) const {
  std::string label;
  {
    std::lock_guard lock(mu_);
    if (node_info_ && !cfg_.node_config_label.empty()) {
      auto it = node_info_->labels.find(cfg_.node_config_label);
      if (it != node_info_->labels.end()) label = it->second;
    }
  }
  if (why) why->clear();
  if (label.empty()) return std::nullopt;
  const std::string what = "ConfigMap " + namespace_ + "/" + label + " (named by node label " +
                           cfg_.node_config_label + ")";
  {
    std::lock_guard lock(override_mu_);
    if (override_ && override_name_ == label && override_->synced()) {
      auto obj = override_->Get(namespace_ + "/" + label);
      if (!obj) {
        if (why) *why = what + " does not exist";
        return std::nullopt;
      }
      NodeOverride o{namespace_, label, {}};
      if (obj->contains("data") && (*obj)["data"].is_object()) {
        for (const auto& [k, v] : (*obj)["data"].items()) {
          if (v.is_string()) o.data[k] = v.get<std::string>();
        }
      }
      Json persisted = {{"ns", o.ns}, {"name", o.name}, {"data", o.data}};
      store_->KvPut(kStoreNs, "override", persisted.dump()).IgnoreError();
      return o;
    }
  }
  if (auto v = store_->KvGet(kStoreNs, "override"); v.ok() && v->has_value()) {
    Json j = Json::parse(**v, nullptr, false);
    if (j.is_object() && j.value("name", "") == label && j.value("ns", "") == namespace_) {
      if (why) *why = what + " as last seen (the API has not listed it yet)";
      return NodeOverride{namespace_, label, j.value("data", std::map<std::string, std::string>{})};
    }
  }
  if (why) *why = what + " has not been listed yet";
  return std::nullopt;
}

void KubeSource::SetConfigInputsChanged(std::function<void()> callback) {
  std::lock_guard lock(mu_);
  on_config_inputs_ = std::move(callback);
}

void KubeSource::Notify() {
  std::function<void()> cb;
  {
    std::lock_guard lock(mu_);
    cb = on_config_inputs_;
  }
  if (cb) cb();
}

void KubeSource::OnNode(const Json& obj) {
  if (Meta(obj, "name") != node_name_) return;
  NodeInfo n;
  n.name = node_name_;
  n.from_api = true;
  n.labels = StringMap(obj, "labels");
  const Json spec = obj.value("spec", Json::object());
  for (const auto& c : spec.value("podCIDRs", Json::array())) {
    if (c.is_string()) n.pod_cidrs.push_back(c.get<std::string>());
  }
  if (n.pod_cidrs.empty() && spec.value("podCIDR", "") != "") {
    n.pod_cidrs.push_back(spec["podCIDR"].get<std::string>());
  }
  auto label_of = [&](const std::optional<NodeInfo>& i) -> std::string {
    if (!i || cfg_.node_config_label.empty()) return "";
    auto it = i->labels.find(cfg_.node_config_label);
    return it == i->labels.end() ? "" : it->second;
  };
  bool cidrs_changed, label_changed, first;
  std::string label = label_of(n);
  {
    std::lock_guard lock(mu_);
    first = !node_info_ || !node_info_->from_api;
    cidrs_changed = !node_info_ || node_info_->pod_cidrs != n.pod_cidrs;
    label_changed = label_of(node_info_) != label;
    bool persist = first || cidrs_changed || node_info_->labels != n.labels;
    node_info_ = n;
    if (persist) store_->KvPut(kStoreNs, "node", NodeInfoJson(n).dump()).IgnoreError();
  }
  if (first || label_changed) StartOverrideInformer(label);
  if (cidrs_changed || label_changed) {
    spdlog::info("kubernetes: node {}: podCIDRs [{}], {} {}", node_name_,
                 fmt::join(n.pod_cidrs, ", "),
                 cfg_.node_config_label.empty() ? "per-node config off" : cfg_.node_config_label,
                 label.empty() ? "unset" : "= " + label);
    Notify();
  }
}

void KubeSource::StartOverrideInformer(const std::string& name) {
  std::unique_ptr<kube::Informer> next;
  if (!name.empty()) {
    next = MakeInformer("configmaps", "/api/v1/namespaces/" + namespace_ + "/configmaps",
                        "metadata.name=" + name,
                        {.on_add = [this](const Json&) { OnOverride(); },
                         .on_update =
                             [this](const Json& old, const Json& o) {
                               if (old != o && old.value("data", Json()) != o.value("data", Json())) {
                                 OnOverride();
                               }
                             },
                         .on_delete = [this](const Json&) { OnOverride(); },
                         .on_list = [this] { OnOverride(); }});
  }
  std::unique_ptr<kube::Informer> old;
  {
    std::lock_guard lock(override_mu_);
    if (override_name_ == name && (override_ || name.empty())) return;
    old = std::move(override_);
    override_ = std::move(next);
    override_name_ = name;
    if (override_) override_->Start();
  }
  if (old) old->Stop();
}

void KubeSource::OnOverride() { Notify(); }

void KubeSource::OnPod(const Json* old_obj, const Json& obj) {
  sdk::Labels labels = StringMap(obj, "labels");
  sdk::Labels annotations = Annotations(obj);
  // Status-only updates (most pod updates) change nothing a module sees.
  if (old_obj != nullptr && *old_obj != obj && StringMap(*old_obj, "labels") == labels &&
      Annotations(*old_obj) == annotations) {
    return;
  }
  const std::string ns = Meta(obj, "namespace"), name = Meta(obj, "name");
  auto r = pipeline_->UpdatePodMetadata(ns, name, Meta(obj, "uid"), labels, annotations);
  if (!r.ok()) {
    m_feed_errors_.Add({"pod"});
    std::lock_guard lock(mu_);
    feed_errors_++;
    last_feed_error_ = std::string(r.status().message());
    spdlog::warn("kubernetes: pod {}/{}: applying its new labels/annotations failed (retried at "
                 "the next resync): {}",
                 ns, name, r.status().message());
  }
}

void KubeSource::OnNamespace(const Json& obj, bool deleted) {
  const std::string name = Meta(obj, "name");
  sdk::Labels labels = deleted ? sdk::Labels{} : StringMap(obj, "labels");
  auto reader = registry_->ReaderLock();
  auto m = registry_->Current()->policy;
  if (!m) return;
  if (Status s = m->PolicyUpsertNamespace(name, labels); !s.ok()) {
    m_feed_errors_.Add({"namespace"});
    std::lock_guard lock(mu_);
    feed_errors_++;
    last_feed_error_ = std::string(s.message());
    spdlog::error("kubernetes: namespace {}: {}", name, s.message());
  }
}

void KubeSource::OnPolicy(const Json& obj, bool deleted) {
  const std::string key = kube::Informer::Key(obj);
  auto reader = registry_->ReaderLock();
  auto m = registry_->Current()->policy;
  if (!m) return;
  Status s = m->PolicyUpsertObject(key, deleted ? std::nullopt : std::optional<Json>(obj));
  if (!s.ok()) {
    m_feed_errors_.Add({"networkpolicy"});
    std::lock_guard lock(mu_);
    feed_errors_++;
    last_feed_error_ = std::string(s.message());
    spdlog::error("kubernetes: NetworkPolicy {} {}: {}", key, deleted ? "deletion" : "refused",
                  s.message());
    return;
  }
  if (deleted) store_->KvDelete(kStoreNs, "np/" + key).IgnoreError();
  else store_->KvPut(kStoreNs, "np/" + key, Meta(obj, "uid")).IgnoreError();
}

void KubeSource::OnPoliciesListed() {
  auto reader = registry_->ReaderLock();
  auto m = registry_->Current()->policy;
  if (!m) return;
  std::vector<std::string> stale;
  store_
      ->KvScan(kStoreNs, "np/",
               [&](std::string_view k, std::string_view) {
                 std::string key(k.substr(3));
                 if (!policies_->Get(key)) stale.push_back(key);
                 return true;
               })
      .IgnoreError();
  for (const auto& key : stale) {
    if (Status s = m->PolicyUpsertObject(key, std::nullopt); !s.ok()) {
      spdlog::error("kubernetes: removing NetworkPolicy {} (gone from the API): {}", key,
                    s.message());
      continue;
    }
    spdlog::info("kubernetes: NetworkPolicy {} is gone from the API, removed", key);
    store_->KvDelete(kStoreNs, "np/" + key).IgnoreError();
  }
}

void KubeSource::FeedPolicyModule(Module& m) {
  size_t namespaces = 0, policies = 0;
  for (const auto& ns : namespaces_->List()) {
    if (m.PolicyUpsertNamespace(Meta(ns, "name"), StringMap(ns, "labels")).ok()) namespaces++;
  }
  std::set<std::string> listed;
  for (const auto& p : policies_->List()) {
    const std::string key = kube::Informer::Key(p);
    listed.insert(key);
    Status s = m.PolicyUpsertObject(key, p);
    if (!s.ok()) {
      spdlog::error("kubernetes: NetworkPolicy {} refused: {}", key, s.message());
      continue;
    }
    store_->KvPut(kStoreNs, "np/" + key, Meta(p, "uid")).IgnoreError();
    policies++;
  }
  if (policies_->synced()) {
    std::vector<std::string> stale;
    store_
        ->KvScan(kStoreNs, "np/",
                 [&](std::string_view k, std::string_view) {
                   if (!listed.contains(std::string(k.substr(3)))) stale.emplace_back(k.substr(3));
                   return true;
                 })
        .IgnoreError();
    for (const auto& key : stale) {
      if (m.PolicyUpsertObject(key, std::nullopt).ok()) {
        store_->KvDelete(kStoreNs, "np/" + key).IgnoreError();
      }
    }
  }
  spdlog::info("kubernetes: module {} given {} namespaces and {} NetworkPolicies from the API",
               m.name(), namespaces, policies);
}

void KubeSource::ModuleStarted(Module& m) {
  if (m.has_policy() && namespaces_ && policies_) FeedPolicyModule(m);
  if (m.has_secgroup() && elector_) {
    {
      std::lock_guard order(leader_mu_);
      if (Status s = m.SecgroupSetLeader(elector_->leader()); !s.ok()) {
        spdlog::error("kubernetes: set_leader on module {}: {}", m.name(), s.message());
      }
    }
    elector_->SetCampaigning(true);
  }
}

void KubeSource::ModuleStopping(Module& m) {
  if (m.has_secgroup() && elector_) elector_->SetCampaigning(false);
}

void KubeSource::Resync() {
  for (auto* i : {namespaces_.get(), policies_.get(), pods_.get()}) {
    if (i) i->Resync();
  }
}

void KubeSource::Housekeeping() {
  auto next = SteadyClock::now() + std::chrono::milliseconds(cfg_.resync_period_ms);
  std::unique_lock lock(hk_mu_);
  while (!hk_stop_) {
    if (hk_cv_.wait_until(lock, next, [&] { return hk_stop_; })) break;
    lock.unlock();
    Resync();
    lock.lock();
    next = SteadyClock::now() + std::chrono::milliseconds(cfg_.resync_period_ms);
  }
}

void KubeSource::RefreshMetrics() {
  std::vector<kube::Informer*> all = {pods_.get(), namespaces_.get(), policies_.get(), node_.get()};
  std::unique_lock lock(override_mu_);
  if (override_) all.push_back(override_.get());
  for (auto* i : all) {
    if (!i) continue;
    auto s = i->stats();
    const std::string& r = i->options().name;
    m_synced_.Set({r}, s.synced ? 1 : 0);
    m_objects_.Set({r}, static_cast<double>(s.objects));
    m_events_.Set({r}, static_cast<double>(s.events));
    m_failures_.Set({r}, static_cast<double>(s.failures));
    m_lists_.Set({r}, static_cast<double>(s.lists));
  }
  lock.unlock();
  if (elector_) m_leader_.Set({cfg_.leader_election.lease_name}, elector_->leader() ? 1 : 0);
  if (recorder_) {
    m_k8s_events_.Set({"posted"}, static_cast<double>(recorder_->posted()));
    m_k8s_events_.Set({"failed"}, static_cast<double>(recorder_->failed()));
    m_k8s_events_.Set({"dropped"}, static_cast<double>(recorder_->dropped()));
  }
}

Json KubeSource::Describe() const {
  Json informers = Json::object();
  std::vector<kube::Informer*> all = {pods_.get(), namespaces_.get(), policies_.get(), node_.get()};
  {
    std::lock_guard lock(override_mu_);
    if (override_) all.push_back(override_.get());
  }
  for (auto* i : all) {
    if (!i) continue;
    auto s = i->stats();
    informers[i->options().name] = {{"synced", s.synced},
                                    {"objects", s.objects},
                                    {"resource_version", s.resource_version},
                                    {"lists", s.lists},
                                    {"gone", s.gone},
                                    {"watches", s.watches},
                                    {"failures", s.failures},
                                    {"events", s.events},
                                    {"bookmarks", s.bookmarks},
                                    {"last_error", s.last_error}};
  }
  Json out = {{"server", client_ ? client_->connection().ServerUrl() : ""},
              {"auth", client_ ? client_->connection().origin : ""},
              {"node", node_name_},
              {"namespace", namespace_},
              {"informers", informers}};
  {
    std::lock_guard lock(mu_);
    if (node_info_) {
      out["node_info"] = NodeInfoJson(*node_info_);
      out["node_info"]["from_api"] = node_info_->from_api;
    }
    out["feed_errors"] = feed_errors_;
    out["last_feed_error"] = last_feed_error_;
  }
  if (elector_) {
    auto o = elector_->observed();
    out["leader_election"] = {{"lease", namespace_ + "/" + cfg_.leader_election.lease_name},
                              {"identity", identity_},
                              {"leader", elector_->leader()},
                              {"holder", o.holder},
                              {"renew_time", o.renew_time},
                              {"transitions", o.transitions},
                              {"last_error", o.last_error}};
  }
  if (recorder_) {
    out["events"] = {{"posted", recorder_->posted()},
                     {"failed", recorder_->failed()},
                     {"dropped", recorder_->dropped()}};
  }
  return out;
}

StatusOr<ClusterPodMetadata> KubeSource::Lookup(const std::string& ns, const std::string& name,
                                                const std::string& uid) {
  const std::string pod = ns + "/" + name;
  if (pods_) {
    if (auto obj = pods_->Get(pod); obj && (uid.empty() || Meta(*obj, "uid") == uid)) {
      return ClusterPodMetadata{Meta(*obj, "uid"), StringMap(*obj, "labels"), Annotations(*obj),
                                "api-cache"};
    }
  }
  auto got = client_->Get("/api/v1/namespaces/" + ns + "/pods/" + name,
                          kube::Millis(cfg_.pod_get_timeout_ms));
  if (!got.ok()) {
    return Status(got.status().code(),
                  "pod " + pod + " is not in the watch cache and " + std::string(got.status().message()));
  }
  if (!uid.empty() && Meta(*got, "uid") != uid) {
    return absl::NotFoundError("pod " + pod + " in the API has uid " + Meta(*got, "uid") +
                               ", the runtime asked for " + uid);
  }
  return ClusterPodMetadata{Meta(*got, "uid"), StringMap(*got, "labels"), Annotations(*got),
                            "api-get"};
}

void KubeSource::SetupFailed(const std::string& ns, const std::string& name,
                             const std::string& uid, const std::string& reason,
                             const std::string& message) {
  if (!recorder_) return;
  recorder_->Post({{ns, name, uid}, "Warning", reason, message});
}

}  // namespace trellis
