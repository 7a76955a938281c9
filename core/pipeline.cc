#include "core/pipeline.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <chrono>
#include <condition_variable>
#include <set>

namespace trellis {

// ------------------------------------------------------------ records --

namespace {

Json AddressToJson(const sdk::Address& a) {
  Json j = {{"cidr", a.Cidr()}};
  if (a.HasGateway()) j["gateway"] = a.GatewayString();
  if (a.route_table != 0) j["route_table"] = a.route_table;
  if (!a.source_ref.empty()) j["source_ref"] = a.source_ref;
  if (a.flags != 0) j["flags"] = a.flags;
  return j;
}

sdk::Address AddressFromJson(const Json& j) {
  sdk::Address a = sdk::Address::Parse(j.at("cidr").get<std::string>());
  if (j.contains("gateway")) a.SetGateway(j["gateway"].get<std::string>());
  a.route_table = j.value("route_table", 0u);
  a.source_ref = j.value("source_ref", "");
  a.flags = j.value("flags", 0);
  return a;
}

int64_t NowUnix() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool PathExists(const std::string& p) {
  struct stat st {};
  return !p.empty() && stat(p.c_str(), &st) == 0;
}

}  // namespace

Json PodRecord::ToJson() const {
  Json addrs = Json::array();
  for (const auto& a : addresses) addrs.push_back(AddressToJson(a));
  return {{"container_id", container_id}, {"ifname", ifname},
          {"netns", netns},               {"network", network},
          {"host_ifname", host_ifname},   {"mac", mac},
          {"host_mac", host_mac},         {"k8s_namespace", k8s_namespace},
          {"k8s_name", k8s_name},         {"k8s_uid", k8s_uid},
          {"labels", labels},             {"annotations", annotations},
          {"cni_labels", cni_labels},     {"cni_annotations", cni_annotations},
          {"metadata_source", metadata_source},
          {"runtime_config", runtime_config}, {"cni_args", cni_args},
          {"mtu", mtu},                   {"addresses", addrs},
          {"applied", applied},           {"result", result},
          {"created_unix", created_unix}};
}

StatusOr<PodRecord> PodRecord::FromJson(const Json& j) {
  try {
    PodRecord r;
    r.container_id = j.at("container_id");
    r.ifname = j.at("ifname");
    r.netns = j.value("netns", "");
    r.network = j.value("network", "");
    r.host_ifname = j.value("host_ifname", "");
    r.mac = j.value("mac", "");
    r.host_mac = j.value("host_mac", "");
    r.k8s_namespace = j.value("k8s_namespace", "");
    r.k8s_name = j.value("k8s_name", "");
    r.k8s_uid = j.value("k8s_uid", "");
    r.labels = j.value("labels", sdk::Labels{});
    r.annotations = j.value("annotations", sdk::Labels{});
    // Records written before the cluster source existed hold CNI metadata only.
    r.cni_labels = j.value("cni_labels", r.labels);
    r.cni_annotations = j.value("cni_annotations", r.annotations);
    r.metadata_source = j.value("metadata_source", "cni-args");
    r.runtime_config = j.value("runtime_config", Json::object());
    r.cni_args = j.value("cni_args", Json::object());
    r.mtu = j.value("mtu", 1500u);
    for (const auto& a : j.value("addresses", Json::array())) r.addresses.push_back(AddressFromJson(a));
    r.applied = j.value("applied", std::vector<std::string>{});
    r.result = j.value("result", Json());
    r.created_unix = j.value("created_unix", int64_t{0});
    return r;
  } catch (const std::exception& e) {
    return absl::DataLossError(std::string("pod record is corrupt: ") + e.what());
  }
}

sdk::Pod PodRecord::ToSdk() const {
  sdk::Pod p;
  p.container_id = container_id;
  p.ifname = ifname;
  p.netns = PathExists(netns) ? netns : "";
  p.network_name = network;
  p.k8s_namespace = k8s_namespace;
  p.k8s_name = k8s_name;
  p.k8s_uid = k8s_uid;
  p.labels = labels;
  p.annotations = annotations;
  p.runtime_config = runtime_config.dump();
  p.cni_args = cni_args.dump();
  p.host_ifname = host_ifname;
  p.mtu = mtu;
  p.addresses = addresses;
  return p;
}

bool PodRecord::Applied(const std::string& step) const {
  return std::find(applied.begin(), applied.end(), step) != applied.end();
}

cni::Error ToCniError(const Status& s, uint32_t default_code) {
  uint32_t code = default_code;
  switch (s.code()) {
    case absl::StatusCode::kResourceExhausted: code = cni::kPoolExhausted; break;
    case absl::StatusCode::kInvalidArgument: code = cni::kInvalidConfig; break;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded: code = cni::kTryAgainLater; break;
    case absl::StatusCode::kDataLoss: code = cni::kCheckFailed; break;
    default: break;
  }
  return cni::Error{code, std::string(s.message()), ""};
}

// ----------------------------------------------------------- locking --

// One mutex per (container id, ifname), created on demand and dropped when
// nobody holds or waits for it.
class PodPipeline::LockTable {
 public:
  class Guard {
   public:
    Guard(LockTable* t, std::string key) : t_(t), key_(std::move(key)) {
      std::unique_lock lock(t_->mu_);
      auto& e = t_->entries_[key_];
      e.waiters++;
      t_->cv_.wait(lock, [&] { return !e.held; });
      e.held = true;
      e.waiters--;
    }
    ~Guard() {
      std::lock_guard lock(t_->mu_);
      auto it = t_->entries_.find(key_);
      it->second.held = false;
      if (it->second.waiters == 0) t_->entries_.erase(it);
      t_->cv_.notify_all();
    }

   private:
    LockTable* t_;
    std::string key_;
  };
  Guard Lock(const std::string& cid, const std::string& ifname) {
    return Guard(this, cid + '\0' + ifname);
  }

 private:
  struct Entry {
    bool held = false;
    int waiters = 0;
  };
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Entry> entries_;
};

// ---------------------------------------------------------- pipeline --

PodPipeline::PodPipeline(Store* store, ModuleRegistry* registry, Datapath* datapath,
                         MetricsRegistry* metrics)
    : store_(store), registry_(registry), datapath_(datapath), locks_(new LockTable()) {
  if (auto id = metrics->Register(MetricType::kCounter, "trellis_cni_requests_total",
                                  "CNI requests handled, by command and result.",
                                  {"command", "result"});
      id.ok()) {
    m_requests_ = Metric(metrics, *id);
  }
  if (auto id = metrics->Register(MetricType::kHistogram, "trellis_cni_request_duration_seconds",
                                  "Time trellisd spent on a CNI request, by command and result.",
                                  {"command", "result"});
      id.ok()) {
    m_duration_ = Metric(metrics, *id);
  }
  if (auto id = metrics->Register(MetricType::kCounter, "trellis_pod_metadata_lookups_total",
                                  "Where ADD took pod labels and annotations from: api-cache, "
                                  "api-get, cni-args (no cluster source or it could not answer).",
                                  {"source"});
      id.ok()) {
    m_metadata_ = Metric(metrics, *id);
  }
  if (auto id = metrics->Register(MetricType::kGauge, "trellis_pods",
                                  "Pod attachments the node holds, by state.", {"state"});
      id.ok()) {
    m_pods_ = Metric(metrics, *id);
  }
}

PodPipeline::~PodPipeline() = default;

Status PodPipeline::Save(const PodRecord& rec) {
  return store_->PutPod({rec.container_id, rec.ifname, rec.state, rec.ToJson().dump()});
}

PodInterfaceSpec PodPipeline::Spec(const PodRecord& rec) const {
  return PodInterfaceSpec{rec.container_id, rec.netns, rec.ifname, rec.host_ifname, rec.mtu,
                          rec.addresses};
}

v1::CniResponse PodPipeline::Handle(const v1::CniRequest& req) {
  auto start = std::chrono::steady_clock::now();
  cni::NetConf conf;
  cni::PodArgs args;
  Outcome out;
  if (auto e = cni::ParseNetConf(req.config(), &conf)) {
    out.error = *e;
  } else if (auto e = cni::ParseCniArgs(req.args(), &args)) {
    out.error = *e;
  } else if (req.command() == "ADD") {
    out = Add(req, conf, args);
  } else if (req.command() == "DEL") {
    out = Del(req, conf);
  } else if (req.command() == "CHECK") {
    out = Check(req, conf);
  } else if (req.command() == "GC") {
    out = Gc(conf);
  } else if (req.command() == "STATUS") {
    out = StatusCmd();
  } else {
    out.error = {cni::kInvalidEnvironment, "unknown CNI command " + req.command(), ""};
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::string result = out.error.code == 0 ? "ok" : "error";
  m_requests_.Add({req.command(), result});
  m_duration_.Observe({req.command(), result}, secs);
  std::string pod = args.k8s_name.empty() ? "-" : args.k8s_namespace + "/" + args.k8s_name;
  if (out.error.code == 0) {
    spdlog::info("CNI {} container={} ifname={} pod={} result=ok duration={:.2f}ms",
                 req.command(), req.container_id(), req.ifname(), pod, secs * 1000);
  } else {
    spdlog::warn("CNI {} container={} ifname={} pod={} result=error code={} duration={:.2f}ms: {}",
                 req.command(), req.container_id(), req.ifname(), pod, out.error.code,
                 secs * 1000, out.error.msg);
  }
  v1::CniResponse resp;
  resp.set_code(out.error.code);
  resp.set_msg(out.error.msg);
  resp.set_details(out.error.details);
  if (out.error.code == 0 && !out.result.is_null()) resp.set_result(out.result.dump());
  return resp;
}

namespace {
Json BuildResult(const PodRecord& rec, const cni::NetConf& conf) {
  Json ips = Json::array(), routes = Json::array();
  bool v4 = false, v6 = false;
  for (const auto& a : rec.addresses) {
    std::string gw = a.family == 4 ? kPodGatewayV4 : kPodGatewayV6;
    ips.push_back({{"address", a.IpString() + (a.family == 4 ? "/32" : "/128")},
                   {"gateway", gw},
                   {"interface", 1}});
    (a.family == 4 ? v4 : v6) = true;
  }
  if (v4) routes.push_back({{"dst", "0.0.0.0/0"}, {"gw", kPodGatewayV4}});
  if (v6) routes.push_back({{"dst", "::/0"}, {"gw", kPodGatewayV6}});
  Json r = {{"cniVersion", cni::kLatestVersion},
            {"interfaces",
             Json::array({{{"name", rec.host_ifname}, {"mac", rec.host_mac}},
                          {{"name", rec.ifname}, {"mac", rec.mac}, {"sandbox", rec.netns}}})},
            {"ips", ips},
            {"routes", routes},
            {"dns", conf.raw.value("dns", Json::object())}};
  return r;
}

sdk::Labels KvList(const Json& j) {
  sdk::Labels out;
  if (j.is_object()) {
    for (const auto& [k, v] : j.items()) {
      if (v.is_string()) out[k] = v.get<std::string>();
    }
  }
  return out;
}

sdk::Labels Merge(const sdk::Labels& base, const sdk::Labels& over) {
  sdk::Labels out = base;
  for (const auto& [k, v] : over) out[k] = v;
  return out;
}

// Why a step failed, as the reason of a Kubernetes Event.
const char* FailureReason(const std::string& step) {
  if (step == "ipam") return "IPAllocationFailed";
  if (step == "datapath") return "DatapathSetupFailed";
  if (step == "qos") return "QoSSetupFailed";
  if (step == "policy") return "NetworkPolicySetupFailed";
  return "NetworkSetupFailed";
}
}  // namespace

void PodPipeline::SetMetadataSource(std::shared_ptr<PodMetadataSource> source) {
  std::lock_guard lock(source_mu_);
  source_ = std::move(source);
}

std::shared_ptr<PodMetadataSource> PodPipeline::MetadataSource() const {
  std::lock_guard lock(source_mu_);
  return source_;
}

PodPipeline::Outcome PodPipeline::Add(const v1::CniRequest& req, const cni::NetConf& conf,
                                      const cni::PodArgs& args) {
  Outcome out;
  std::string step = "setup";
  auto source = MetadataSource();
  auto fail = [&](uint32_t code, const std::string& msg) {
    out.error = {code, msg, ""};
    if (source && code != cni::kTryAgainLater) {
      source->SetupFailed(args.k8s_namespace, args.k8s_name, args.k8s_uid, FailureReason(step), msg);
    }
    return out;
  };
  // The cluster's view of the pod, fetched before any lock is taken: a cache
  // hit costs nothing, a miss one GET bounded by the source's timeout.
  std::optional<ClusterPodMetadata> cluster;
  std::string cluster_error;
  if (source && !args.k8s_name.empty()) {
    auto md = source->Lookup(args.k8s_namespace, args.k8s_name, args.k8s_uid);
    if (md.ok()) {
      cluster = *std::move(md);
    } else {
      cluster_error = std::string(md.status().message());
    }
  }
  // Lock order: registry reader lock, then the pod's lock (transitions hold
  // the registry exclusively and never wait for a pod lock).
  auto reader = registry_->ReaderLock();
  auto guard = locks_->Lock(req.container_id(), req.ifname());
  auto set = registry_->Current();
  if (!ready_) return fail(cni::kTryAgainLater, "trellisd is starting (reconciling its records)");

  auto existing = store_->GetPod(req.container_id(), req.ifname());
  if (!existing.ok()) return fail(cni::kTryAgainLater, std::string(existing.status().message()));
  if (existing->has_value()) {
    auto prev = PodRecord::FromJson(Json::parse((*existing)->record, nullptr, false));
    if (prev.ok()) {
      prev->state = (*existing)->state;
      if (prev->state == "ready" && prev->netns == req.netns() && datapath_->Verify(Spec(*prev)).ok()) {
        out.result = prev->result;  // ADD is idempotent: same answer, nothing redone
        return out;
      }
      if (Status s = Teardown(*set, *prev); !s.ok()) {
        return fail(cni::kTryAgainLater, "cleaning up an earlier attempt: " + std::string(s.message()));
      }
    } else {
      store_->DeletePod(req.container_id(), req.ifname()).IgnoreError();
    }
  }
  if (!set->ipam) {
    return fail(cni::kNotConfigured, "no ipam module is enabled in the node config");
  }

  PodRecord rec;
  rec.state = "intent";
  rec.container_id = req.container_id();
  rec.ifname = req.ifname();
  rec.netns = req.netns();
  rec.network = conf.name;
  rec.host_ifname = cni::HostIfname(rec.container_id, rec.ifname);
  rec.k8s_namespace = args.k8s_namespace;
  rec.k8s_name = args.k8s_name;
  rec.k8s_uid = args.k8s_uid;
  rec.cni_labels = conf.labels;
  rec.cni_annotations = KvList(conf.runtime_config.value("io.kubernetes.cri.pod-annotations", Json()));
  rec.labels = rec.cni_labels;
  rec.annotations = rec.cni_annotations;
  if (cluster) {
    // Both sources merge; the cluster wins where they disagree.
    rec.labels = Merge(rec.cni_labels, cluster->labels);
    rec.annotations = Merge(rec.cni_annotations, cluster->annotations);
    rec.metadata_source = cluster->source;
  } else if (source && !args.k8s_name.empty()) {
    spdlog::warn("pod {}/{}: no metadata from the cluster ({}); using the labels and annotations "
                 "of the CNI args",
                 args.k8s_namespace, args.k8s_name, cluster_error);
  }
  m_metadata_.Add({rec.metadata_source});
  rec.runtime_config = conf.runtime_config;
  rec.cni_args = conf.args;
  rec.mtu = default_mtu_;
  if (auto it = conf.raw.find("mtu"); it != conf.raw.end()) {
    if (!it->is_number_unsigned() || it->get<uint32_t>() < 576 || it->get<uint32_t>() > 65535) {
      return fail(cni::kInvalidConfig, "network config: mtu must be an integer from 576 to 65535");
    }
    rec.mtu = it->get<uint32_t>();
  }
  rec.created_unix = NowUnix();
  if (!PathExists(rec.netns)) {
    return fail(cni::kInvalidEnvironment, "network namespace " + rec.netns + " does not exist");
  }
  // The intent is durable before the first side effect: a crash from here on
  // is rolled back at the next start.
  if (Status s = Save(rec); !s.ok()) return fail(cni::kTryAgainLater, std::string(s.message()));

  auto undo = [&](const Status& cause, uint32_t code) {
    Status t = Teardown(*set, rec);
    std::string msg(cause.message());
    if (!t.ok()) msg += " (cleanup incomplete, will be retried: " + std::string(t.message()) + ")";
    cni::Error e = ToCniError(cause, code);
    e.msg = msg;
    out.error = e;
    if (source && e.code != cni::kTryAgainLater) {
      source->SetupFailed(rec.k8s_namespace, rec.k8s_name, rec.k8s_uid, FailureReason(step), msg);
    }
    return out;
  };

  step = "ipam";
  {
    sdk::Pod pod = rec.ToSdk();
    sdk::PodView view(pod);
    auto addrs = set->ipam->IpamAllocate(*view.get());
    if (!addrs.ok()) return undo(addrs.status(), cni::kModuleFailure);
    if (addrs->empty()) {
      return undo(absl::InternalError("module " + set->ipam->name() + " allocated no address"),
                  cni::kModuleFailure);
    }
    rec.addresses = *std::move(addrs);
    rec.applied.push_back("ipam");
  }
  step = "datapath";
  {
    auto st = datapath_->Setup(Spec(rec));
    if (!st.ok()) return undo(st.status(), cni::kDatapathFailure);
    rec.mac = st->mac;
    rec.host_mac = st->host_mac;
    rec.applied.push_back("datapath");
  }
  sdk::Pod pod = rec.ToSdk();
  sdk::PodView view(pod);
  step = "qos";
  if (set->qos) {
    if (Status s = set->qos->QosApply(*view.get()); !s.ok()) return undo(s, cni::kModuleFailure);
    rec.applied.push_back("qos");
  }
  step = "policy";
  if (set->policy) {
    if (Status s = set->policy->PolicyUpsertPod(*view.get()); !s.ok()) {
      return undo(s, cni::kModuleFailure);
    }
    rec.applied.push_back("policy");
  }
  step = "commit";
  rec.result = BuildResult(rec, conf);
  rec.state = "ready";
  if (Status s = Save(rec); !s.ok()) return undo(s, cni::kTryAgainLater);
  out.result = rec.result;
  return out;
}

Status PodPipeline::Teardown(const ModuleSet& set, PodRecord& rec) {
  std::vector<std::string> errors;
  sdk::Pod pod = rec.ToSdk();
  sdk::PodView view(pod);
  auto note = [&](const Status& s) {
    if (!s.ok()) errors.emplace_back(s.message());
    return s.ok();
  };
  // Module steps run whether or not the record says they were applied: a
  // crash may have cut between the side effect and the record update, and
  // every step tolerates "nothing there".
  if (set.policy && note(set.policy->PolicyRemovePod(*view.get()))) std::erase(rec.applied, "policy");
  if (set.qos && note(set.qos->QosRemove(*view.get()))) std::erase(rec.applied, "qos");
  if (note(datapath_->Teardown(rec.host_ifname, rec.addresses))) std::erase(rec.applied, "datapath");
  if (set.ipam && note(set.ipam->IpamRelease(*view.get()))) std::erase(rec.applied, "ipam");
  if (!errors.empty()) {
    rec.state = "intent";
    Save(rec).IgnoreError();
    std::string msg;
    for (const auto& e : errors) msg += (msg.empty() ? "" : "; ") + e;
    return absl::UnavailableError(msg);
  }
  return store_->DeletePod(rec.container_id, rec.ifname);
}

PodPipeline::Outcome PodPipeline::Del(const v1::CniRequest& req, const cni::NetConf& conf) {
  Outcome out;
  // Lock order: registry reader lock, then the pod's lock (transitions hold
  // the registry exclusively and never wait for a pod lock).
  auto reader = registry_->ReaderLock();
  auto guard = locks_->Lock(req.container_id(), req.ifname());
  auto set = registry_->Current();
  auto row = store_->GetPod(req.container_id(), req.ifname());
  if (!row.ok()) {
    out.error = {cni::kTryAgainLater, std::string(row.status().message()), ""};
    return out;
  }
  PodRecord rec;
  if (row->has_value()) {
    auto parsed = PodRecord::FromJson(Json::parse((*row)->record, nullptr, false));
    if (parsed.ok()) rec = *std::move(parsed);
  }
  if (rec.container_id.empty()) {
    // Unknown to us (never added, or deleted already): clean up by name only.
    rec.container_id = req.container_id();
    rec.ifname = req.ifname();
    rec.netns = req.netns();
    rec.host_ifname = cni::HostIfname(rec.container_id, rec.ifname);
  }
  if (Status s = Teardown(*set, rec); !s.ok()) out.error = ToCniError(s, cni::kModuleFailure);
  return out;
}

PodPipeline::Outcome PodPipeline::Check(const v1::CniRequest& req, const cni::NetConf& conf) {
  Outcome out;
  auto fail = [&](uint32_t code, const std::string& msg) {
    out.error = {code, msg, ""};
    return out;
  };
  // Lock order: registry reader lock, then the pod's lock (transitions hold
  // the registry exclusively and never wait for a pod lock).
  auto reader = registry_->ReaderLock();
  auto guard = locks_->Lock(req.container_id(), req.ifname());
  auto set = registry_->Current();
  auto row = store_->GetPod(req.container_id(), req.ifname());
  if (!row.ok()) return fail(cni::kTryAgainLater, std::string(row.status().message()));
  if (!row->has_value() || (*row)->state != "ready") {
    return fail(cni::kUnknownContainer, "container " + req.container_id() + " (" + req.ifname() +
                                            ") has no network set up by trellis");
  }
  auto rec = PodRecord::FromJson(Json::parse((*row)->record, nullptr, false));
  if (!rec.ok()) return fail(cni::kInternal, std::string(rec.status().message()));
  // The runtime's prevResult must still carry our addresses.
  if (conf.prev_result.is_object()) {
    std::set<std::string> listed;
    for (const auto& ip : conf.prev_result.value("ips", Json::array())) {
      std::string a = ip.value("address", "");
      listed.insert(a.substr(0, a.find('/')));
    }
    for (const auto& a : rec->addresses) {
      if (!listed.contains(a.IpString())) {
        return fail(cni::kCheckFailed, "prevResult does not list address " + a.IpString());
      }
    }
  }
  if (Status s = datapath_->Verify(Spec(*rec)); !s.ok()) {
    return fail(cni::kCheckFailed, std::string(s.message()));
  }
  sdk::Pod pod = rec->ToSdk();
  sdk::PodView view(pod);
  for (const auto& [m, fn] :
       std::vector<std::pair<std::shared_ptr<Module>, Status (Module::*)(const trellis_pod&)>>{
           {set->ipam, &Module::IpamCheck},
           {set->qos, &Module::QosCheck},
           {set->policy, &Module::PolicyCheck}}) {
    if (!m) continue;
    if (Status s = ((*m).*fn)(*view.get()); !s.ok()) {
      return fail(cni::kCheckFailed, std::string(s.message()));
    }
  }
  return out;
}

Status PodPipeline::RunModuleGc(const ModuleSet& set) {
  auto rows = store_->ListPods();
  if (!rows.ok()) return rows.status();
  std::vector<sdk::PodRef> live;
  for (const auto& r : *rows) live.push_back({r.container_id, r.ifname});
  std::vector<std::string> errors;
  for (const auto& [m, fn] :
       std::vector<std::pair<std::shared_ptr<Module>,
                             Status (Module::*)(const std::vector<sdk::PodRef>&)>>{
           {set.policy, &Module::PolicyGc}, {set.qos, &Module::QosGc}, {set.ipam, &Module::IpamGc}}) {
    if (!m) continue;
    if (Status s = ((*m).*fn)(live); !s.ok()) errors.emplace_back(s.message());
  }
  // Host interfaces of ours that no record knows.
  std::set<std::string> known;
  for (const auto& r : *rows) known.insert(cni::HostIfname(r.container_id, r.ifname));
  if (auto owned = datapath_->ListOwned(); owned.ok()) {
    for (const auto& [name, alias] : *owned) {
      if (known.contains(name)) continue;
      spdlog::info("removing orphan pod interface {} ({})", name, alias);
      if (Status s = datapath_->Teardown(name, {}); !s.ok()) errors.emplace_back(s.message());
    }
  } else {
    errors.emplace_back(owned.status().message());
  }
  if (!errors.empty()) {
    std::string msg;
    for (const auto& e : errors) msg += (msg.empty() ? "" : "; ") + e;
    return absl::UnavailableError(msg);
  }
  return absl::OkStatus();
}

PodPipeline::Outcome PodPipeline::Gc(const cni::NetConf& conf) {
  Outcome out;
  if (!conf.valid_attachments) {
    out.error = {cni::kInvalidConfig, "GC needs cni.dev/valid-attachments in the network config", ""};
    return out;
  }
  std::set<cni::Attachment> valid(conf.valid_attachments->begin(), conf.valid_attachments->end());
  auto rows = store_->ListPods();
  if (!rows.ok()) {
    out.error = {cni::kTryAgainLater, std::string(rows.status().message()), ""};
    return out;
  }
  std::vector<std::string> errors;
  for (const auto& row : *rows) {
    if (valid.contains({row.container_id, row.ifname})) continue;
    auto rec = PodRecord::FromJson(Json::parse(row.record, nullptr, false));
    if (!rec.ok() || rec->network != conf.name) continue;  // another network's attachment
    auto reader = registry_->ReaderLock();
    auto guard = locks_->Lock(row.container_id, row.ifname);
    auto set = registry_->Current();
    spdlog::info("GC: removing {} ({}), not in the runtime's valid attachments", row.container_id,
                 row.ifname);
    if (Status s = Teardown(*set, *rec); !s.ok()) errors.emplace_back(s.message());
  }
  {
    auto reader = registry_->ReaderLock();
    if (Status s = RunModuleGc(*registry_->Current()); !s.ok()) errors.emplace_back(s.message());
  }
  if (!errors.empty()) {
    std::string msg;
    for (const auto& e : errors) msg += (msg.empty() ? "" : "; ") + e;
    out.error = {cni::kModuleFailure, msg, ""};
  }
  return out;
}

PodPipeline::Outcome PodPipeline::StatusCmd() {
  Outcome out;
  if (!ready_) {
    out.error = {cni::kNotAvailable, "trellisd is not ready (reconciling its records)", ""};
    return out;
  }
  auto set = registry_->Current();
  if (!set->ipam) {
    out.error = {cni::kNotAvailable, "no ipam module is enabled in the node config", ""};
    return out;
  }
  auto st = set->ipam->QueryStatus();
  if (!st.ok()) {
    out.error = {cni::kNotAvailable, std::string(st.status().message()), ""};
    return out;
  }
  if (!st->value("healthy", true)) {
    out.error = {cni::kNotAvailable, "module " + set->ipam->name() + ": " + st->value("message", ""), ""};
  } else if (st->value("degraded", false)) {
    out.error = {cni::kLimitedConnectivity,
                 "module " + set->ipam->name() + ": " + st->value("message", "degraded"), ""};
  }
  return out;
}

Status PodPipeline::Reconcile() {
  auto reader = registry_->ReaderLock();
  auto set = registry_->Current();
  TRELLIS_ASSIGN_OR_RETURN(auto rows, store_->ListPods());
  size_t rolled_back = 0, released = 0;
  std::vector<std::string> errors;
  for (const auto& row : rows) {
    auto rec = PodRecord::FromJson(Json::parse(row.record, nullptr, false));
    if (!rec.ok()) {
      spdlog::error("dropping corrupt pod record {} ({}): {}", row.container_id, row.ifname,
                    rec.status().message());
      store_->DeletePod(row.container_id, row.ifname).IgnoreError();
      continue;
    }
    rec->state = row.state;
    bool gone = !PathExists(rec->netns);
    if (row.state == "ready" && !gone) continue;
    auto guard = locks_->Lock(row.container_id, row.ifname);
    Status s = Teardown(*set, *rec);
    if (!s.ok()) {
      errors.emplace_back(s.message());
      continue;
    }
    (row.state == "ready" ? released : rolled_back)++;
  }
  if (Status s = RunModuleGc(*set); !s.ok()) errors.emplace_back(s.message());
  spdlog::info("reconciled {} pod records: {} interrupted ADDs rolled back, {} pods with a gone "
               "netns released",
               rows.size(), rolled_back, released);
  if (!errors.empty()) {
    std::string msg;
    for (const auto& e : errors) msg += (msg.empty() ? "" : "; ") + e;
    return absl::UnavailableError("reconcile incomplete: " + msg);
  }
  return absl::OkStatus();
}

StatusOr<size_t> PodPipeline::UpdatePodMetadata(const std::string& ns, const std::string& name,
                                                const std::string& uid, const sdk::Labels& labels,
                                                const sdk::Labels& annotations) {
  TRELLIS_ASSIGN_OR_RETURN(auto rows, store_->ListPods());
  size_t changed = 0;
  std::vector<std::string> errors;
  for (const auto& row : rows) {
    if (row.state != "ready") continue;
    auto listed = PodRecord::FromJson(Json::parse(row.record, nullptr, false));
    if (!listed.ok() || listed->k8s_namespace != ns || listed->k8s_name != name) continue;
    if (!uid.empty() && !listed->k8s_uid.empty() && listed->k8s_uid != uid) continue;
    // Lock order as for CNI requests; the record is read again under the
    // pod's lock, since a DEL or ADD may have run since the listing.
    auto reader = registry_->ReaderLock();
    auto guard = locks_->Lock(row.container_id, row.ifname);
    auto set = registry_->Current();
    auto fresh = store_->GetPod(row.container_id, row.ifname);
    if (!fresh.ok()) {
      errors.emplace_back(fresh.status().message());
      continue;
    }
    if (!fresh->has_value() || (*fresh)->state != "ready") continue;
    auto rec = PodRecord::FromJson(Json::parse((*fresh)->record, nullptr, false));
    if (!rec.ok()) continue;
    rec->state = "ready";
    sdk::Labels next_labels = Merge(rec->cni_labels, labels);
    sdk::Labels next_annotations = Merge(rec->cni_annotations, annotations);
    bool labels_changed = next_labels != rec->labels;
    bool annotations_changed = next_annotations != rec->annotations;
    if (!labels_changed && !annotations_changed) {
      if (rec->metadata_source == "cni-args") {
        rec->metadata_source = "api-watch";
        Save(*rec).IgnoreError();
      }
      continue;
    }
    PodRecord next = *rec;
    next.labels = std::move(next_labels);
    next.annotations = std::move(next_annotations);
    next.metadata_source = "api-watch";
    sdk::Pod pod = next.ToSdk();
    sdk::PodView view(pod);
    std::string who = ns + "/" + name + " (" + row.container_id.substr(0, 12) + ")";
    Status s = absl::OkStatus();
    if (labels_changed && set->policy) {
      s = set->policy->PolicyUpsertPod(*view.get());
      if (s.ok() && !next.Applied("policy")) next.applied.push_back("policy");
    }
    if (s.ok() && annotations_changed && set->qos) {
      s = set->qos->QosApply(*view.get());
      if (s.ok() && !next.Applied("qos")) next.applied.push_back("qos");
    }
    if (!s.ok()) {
      errors.push_back("pod " + who + ": " + std::string(s.message()));
      continue;
    }
    if (Status saved = Save(next); !saved.ok()) {
      errors.push_back("pod " + who + ": " + std::string(saved.message()));
      continue;
    }
    spdlog::info("pod {}: {}{}{} updated from the cluster", who, labels_changed ? "labels" : "",
                 labels_changed && annotations_changed ? " and " : "",
                 annotations_changed ? "annotations" : "");
    changed++;
  }
  if (!errors.empty()) {
    std::string msg;
    for (const auto& e : errors) msg += (msg.empty() ? "" : "; ") + e;
    return absl::UnavailableError(msg);
  }
  return changed;
}

StatusOr<std::vector<PodRecord>> PodPipeline::Pods() {
  TRELLIS_ASSIGN_OR_RETURN(auto rows, store_->ListPods());
  std::vector<PodRecord> out;
  size_t ready = 0, intent = 0;
  for (const auto& row : rows) {
    auto rec = PodRecord::FromJson(Json::parse(row.record, nullptr, false));
    if (!rec.ok()) continue;
    rec->state = row.state;
    (row.state == "ready" ? ready : intent)++;
    out.push_back(*std::move(rec));
  }
  m_pods_.Set({"ready"}, ready);
  m_pods_.Set({"intent"}, intent);
  return out;
}

// Runs inside a registry transition, which holds the registry exclusively: no
// pod operation is in flight, so no pod lock is needed.
void PodPipeline::ModuleStarted(Module& m) {
  if (!m.has_qos() && !m.has_policy()) return;
  auto pods = Pods();
  if (!pods.ok()) return;
  size_t applied = 0;
  for (auto& rec : *pods) {
    if (rec.state != "ready") continue;
    sdk::Pod pod = rec.ToSdk();
    sdk::PodView view(pod);
    Status s = m.has_qos() ? m.QosApply(*view.get()) : m.PolicyUpsertPod(*view.get());
    if (!s.ok()) {
      spdlog::error("module {} could not be applied to pod {} ({}): {}", m.name(),
                    rec.container_id, rec.ifname, s.message());
      continue;
    }
    const char* step = m.has_qos() ? "qos" : "policy";
    if (!rec.Applied(step)) {
      rec.applied.push_back(step);
      Save(rec).IgnoreError();
    }
    applied++;
  }
  if (applied > 0) spdlog::info("module {} applied to {} existing pods", m.name(), applied);
}

void PodPipeline::ModuleStopping(Module& m) {
  if (!m.has_qos() && !m.has_policy()) return;
  auto pods = Pods();
  if (!pods.ok()) return;
  for (auto& rec : *pods) {
    sdk::Pod pod = rec.ToSdk();
    sdk::PodView view(pod);
    Status s = m.has_qos() ? m.QosRemove(*view.get()) : m.PolicyRemovePod(*view.get());
    if (!s.ok()) {
      spdlog::error("module {} could not be removed from pod {} ({}): {}", m.name(),
                    rec.container_id, rec.ifname, s.message());
      continue;
    }
    std::erase(rec.applied, m.has_qos() ? "qos" : "policy");
    Save(rec).IgnoreError();
  }
}

size_t PodPipeline::PodCount() {
  auto rows = store_->ListPods();
  return rows.ok() ? rows->size() : 0;
}

}  // namespace trellis
