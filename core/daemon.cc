#include "core/daemon.h"

#include <google/protobuf/util/json_util.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "core/rpc/server.h"
#include "core/config_watcher.h"
#include "core/datapath/datapath.h"
#include "core/http_server.h"
#include "core/kube/connection.h"
#include "core/kube/source.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/pipeline.h"
#include "core/registry.h"
#include "core/store.h"

#ifndef TRELLIS_VERSION
#define TRELLIS_VERSION "dev"
#endif

namespace trellis {

namespace {
int64_t NowUnix() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}
// absl::StatusCode and gRPC share their numbering.
rpc::RpcStatus ToRpc(const Status& s) {
  if (s.ok()) return {};
  return {static_cast<rpc::Code>(s.code()), std::string(s.message())};
}

// The standard process_* families (as Prometheus client libraries export
// them), read from /proc/self at scrape time.
struct ProcessStats {
  double cpu_seconds = 0, start_time = 0, rss_bytes = 0, vsize_bytes = 0, open_fds = 0, max_fds = 0;
};
ProcessStats ReadProcessStats() {
  ProcessStats p;
  const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  std::ifstream stat("/proc/self/stat");
  std::string line;
  std::getline(stat, line);
  // Field 2 (comm) may hold spaces and parentheses: parse after the last ')'.
  if (auto rp = line.rfind(')'); rp != std::string::npos) {
    std::istringstream in(line.substr(rp + 2));
    std::vector<std::string> f;  // f[0] is field 3 (state)
    for (std::string x; in >> x;) f.push_back(x);
    if (f.size() > 21) {
      p.cpu_seconds = (std::stod(f[11]) + std::stod(f[12])) / tick;  // utime + stime
      double boot = 0;
      std::ifstream ps("/proc/stat");
      for (std::string l; std::getline(ps, l);) {
        if (l.rfind("btime ", 0) == 0) boot = std::stod(l.substr(6));
      }
      p.start_time = boot + std::stod(f[19]) / tick;
      p.vsize_bytes = std::stod(f[20]);
      p.rss_bytes = std::stod(f[21]) * static_cast<double>(sysconf(_SC_PAGESIZE));
    }
  }
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    p.open_fds++;
  }
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) p.max_fds = static_cast<double>(rl.rlim_cur);
  return p;
}
}  // namespace

class ApiService;

// Module transitions reach the pipeline (pods) and the Kubernetes source
// (namespaces, policies, the secgroup leader). The source goes first on a
// start, so that existing pods are enforced with the API's policies loaded.
class ModuleFanout : public ModuleObserver {
 public:
  explicit ModuleFanout(Daemon::Impl* d) : d_(d) {}
  void ModuleStarted(Module& m) override;
  void ModuleStopping(Module& m) override;
  size_t PodCount() override;

 private:
  Daemon::Impl* d_;
};

struct Daemon::Impl {
  DaemonOptions opts;
  MetricsRegistry metrics;
  std::unique_ptr<Store> store;
  std::unique_ptr<Datapath> datapath;
  std::unique_ptr<ModuleRegistry> registry;
  std::unique_ptr<PodPipeline> pipeline;
  std::unique_ptr<ApiService> service;
  std::unique_ptr<rpc::Server> api;
  std::unique_ptr<HttpServer> http;
  std::unique_ptr<ConfigWatcher> watcher;
  std::unique_ptr<ModuleFanout> fanout;

  // The Kubernetes API source, when the config has a kubernetes section.
  // Swapped by the reload thread when that section changes.
  mutable std::mutex kube_mu;
  std::shared_ptr<KubeSource> kube;
  KubernetesConfig kube_config;

  // Reloads run on one thread, requested by the config watcher and by the
  // Kubernetes source (the Node's podCIDRs, its config label, the per-node
  // ConfigMap changed).
  std::mutex reload_mu;
  std::condition_variable reload_cv;
  bool reload_pending = false, reload_stop = false;
  std::thread reload_thread;

  std::mutex config_mu;
  Json applied_config;  // what the registry runs
  std::string config_origin;
  std::string last_config_error;
  std::string applied_config_error;  // failures left when `applied_config` was applied
  std::string current_log_file;
  int64_t started_unix = NowUnix();
  Metric m_reloads, m_reload_ok, m_store_errors, m_build_info, m_refused, m_ready;
  Metric m_cpu, m_start_time, m_rss, m_vsize, m_fds, m_max_fds;

  Status Start();
  Status Live();
  Status Ready();
  void Reload();
  void RequestReload();
  void ReloadLoop();
  Status ApplyConfig(const NodeConfig& cfg, bool startup);
  StatusOr<NodeConfigDocument> LoadBase();
  // Starts, restarts or stops the Kubernetes source to match `k`.
  Status EnsureKube(const KubernetesConfig& k, bool startup);
  std::shared_ptr<KubeSource> Kube() const {
    std::lock_guard lock(kube_mu);
    return kube;
  }
  // The config to run: the base document, the per-node ConfigMap merged over
  // it (RFC 7396), `{subnet: node}` ranges resolved from the Node.
  StatusOr<NodeConfig> Effective(const NodeConfigDocument& base, const NodeConfig& parsed);
  v1::DaemonStatus StatusProto();
  Json DebugState();
  std::string Metrics();
};

void ModuleFanout::ModuleStarted(Module& m) {
  if (auto k = d_->Kube()) k->ModuleStarted(m);
  d_->pipeline->ModuleStarted(m);
}
void ModuleFanout::ModuleStopping(Module& m) {
  d_->pipeline->ModuleStopping(m);
  if (auto k = d_->Kube()) k->ModuleStopping(m);
}
size_t ModuleFanout::PodCount() { return d_->pipeline->PodCount(); }

// ------------------------------------------------------------------ API --

class ApiService {
 public:
  explicit ApiService(Daemon::Impl* d) : d_(d) {}

  void RegisterOn(rpc::Server& s) {
    auto bind = [this](auto method) {
      return [this, method](const auto& req, auto* resp) { return (this->*method)(req, resp); };
    };
    s.Register<v1::CniRequest, v1::CniResponse>("Cni", bind(&ApiService::Cni));
    s.Register<v1::StatusRequest, v1::DaemonStatus>("GetStatus", bind(&ApiService::GetStatus));
    s.Register<v1::ListModulesRequest, v1::ListModulesResponse>("ListModules",
                                                                bind(&ApiService::ListModules));
    s.Register<v1::ListPodsRequest, v1::ListPodsResponse>("ListPods", bind(&ApiService::ListPods));
    s.Register<v1::SetLogLevelRequest, v1::SetLogLevelResponse>("SetLogLevel",
                                                                bind(&ApiService::SetLogLevel));
    s.Register<v1::ModuleCallRequest, v1::ModuleCallResponse>("ModuleCall",
                                                              bind(&ApiService::ModuleCall));
  }

  rpc::RpcStatus Cni(const v1::CniRequest& req, v1::CniResponse* resp) {
    *resp = d_->pipeline->Handle(req);
    return {};
  }

  rpc::RpcStatus GetStatus(const v1::StatusRequest& , v1::DaemonStatus* resp) {
    *resp = d_->StatusProto();
    return {};
  }

  rpc::RpcStatus ListModules(const v1::ListModulesRequest& , v1::ListModulesResponse* resp) {
    for (const auto& i : d_->registry->Describe()) {
      auto* m = resp->add_modules();
      m->set_name(i.name);
      m->set_enabled(i.enabled);
      m->set_state(i.state);
      m->set_plugin_path(i.plugin_path);
      m->set_plugin_name(i.plugin_name);
      m->set_plugin_version(i.plugin_version);
      m->set_abi_version(i.abi_version);
      for (const auto& f : i.interfaces) m->add_interfaces(f);
      m->set_healthy(i.healthy);
      m->set_degraded(i.degraded);
      m->set_message(i.message);
      m->set_reload_count(i.reload_count);
      m->set_last_error(i.last_error);
      if (!i.status.is_null()) m->set_status_json(Redact(i.status).dump());
    }
    return {};
  }

  rpc::RpcStatus ListPods(const v1::ListPodsRequest& , v1::ListPodsResponse* resp) {
    auto pods = d_->pipeline->Pods();
    if (!pods.ok()) return ToRpc(pods.status());
    for (const auto& r : *pods) {
      auto* p = resp->add_pods();
      p->set_container_id(r.container_id);
      p->set_ifname(r.ifname);
      p->set_k8s_namespace(r.k8s_namespace);
      p->set_k8s_name(r.k8s_name);
      p->set_netns(r.netns);
      p->set_host_ifname(r.host_ifname);
      for (const auto& a : r.addresses) p->add_addresses(a.Cidr());
      for (const auto& s : r.applied) p->add_modules(s);
      p->set_state(r.state);
      p->set_created(std::to_string(r.created_unix));
    }
    return {};
  }

  rpc::RpcStatus SetLogLevel(const v1::SetLogLevelRequest& req, v1::SetLogLevelResponse* resp) {
    resp->set_previous(CurrentLogLevel());
    if (Status s = trellis::SetLogLevel(req.level()); !s.ok()) return ToRpc(s);
    resp->set_level(CurrentLogLevel());
    spdlog::info("log level set to {} through the API", resp->level());
    return {};
  }

  rpc::RpcStatus ModuleCall(const v1::ModuleCallRequest& req, v1::ModuleCallResponse* resp) {
    auto reader = d_->registry->ReaderLock();
    auto set = d_->registry->Current();
    std::shared_ptr<Module> m = set->Find(req.module());
    if (!m) {
      const std::string& k = req.module();
      m = k == "ipam" ? set->ipam : k == "qos" ? set->qos : k == "policy" ? set->policy
          : k == "eni" ? set->eni : k == "secgroup" ? set->secgroup : nullptr;
    }
    if (!m) {
      return {rpc::Code::kNotFound, "no running module named or providing '" + req.module() + "'"};
    }
    Json request = req.request_json().empty() ? Json::object()
                                               : Json::parse(req.request_json(), nullptr, false);
    if (request.is_discarded()) {
      return {rpc::Code::kInvalidArgument, "request_json is not valid JSON"};
    }
    const std::string& op = req.operation();
    StatusOr<Json> result = absl::UnimplementedError("module " + m->name() + " has no operation '" + op + "'");
    if (op == "status") result = m->QueryStatus();
    else if (op == "list" && m->has_ipam()) result = m->IpamList();
    else if (op == "explain" && m->has_policy()) result = m->PolicyExplain(request);
    else if (op == "pool_status" && m->has_eni()) result = m->EniPoolStatus();
    else if ((op == "ensure_pool" || op == "gc") && m->has_eni()) {
      Status s = op == "gc" ? m->EniGc() : m->EniEnsurePool();
      result = s.ok() ? StatusOr<Json>(Json{{"ok", true}}) : StatusOr<Json>(s);
    } else if ((op == "diff" || op == "sync") && m->has_secgroup()) {
      result = m->SecgroupReconcile(op == "diff");
    }
    if (!result.ok()) return ToRpc(result.status());
    resp->set_module(m->name());
    resp->set_result_json(Redact(*result).dump());
    return {};
  }

 private:
  Daemon::Impl* d_;
};

// --------------------------------------------------------------- daemon --

Daemon::Daemon(DaemonOptions options) : impl_(new Impl()) { impl_->opts = std::move(options); }

Daemon::~Daemon() { Stop(); }

std::string Daemon::DefaultPluginDir() {
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return "/usr/lib/trellis/plugins";
  return (exe.parent_path().parent_path() / "lib" / "trellis" / "plugins").string();
}

Status Daemon::Start() { return impl_->Start(); }

void Daemon::Stop() {
  if (!impl_) return;
  if (impl_->watcher) impl_->watcher->Stop();
  {
    std::lock_guard lock(impl_->reload_mu);
    impl_->reload_stop = true;
  }
  impl_->reload_cv.notify_all();
  if (impl_->reload_thread.joinable()) impl_->reload_thread.join();
  if (impl_->api) impl_->api->Stop();
  if (impl_->http) impl_->http->Stop();
  // Before the modules: a graceful stop hands the secgroup Lease over.
  if (auto k = impl_->Kube()) {
    if (impl_->pipeline) impl_->pipeline->SetMetadataSource(nullptr);
    k->Stop();
    std::lock_guard lock(impl_->kube_mu);
    impl_->kube.reset();
  }
  if (impl_->registry) impl_->registry->Shutdown();
  impl_->watcher.reset();
  impl_->api.reset();
  impl_->http.reset();
  impl_->service.reset();
  impl_->pipeline.reset();
  impl_->registry.reset();
  impl_->datapath.reset();
  impl_->store.reset();
  spdlog::info("trellisd stopped");
}

StatusOr<NodeConfigDocument> Daemon::Impl::LoadBase() {
  if (opts.config_path.empty()) return EmbeddedDefaultDocument();
  return LoadNodeConfigDocument(opts.config_path);
}

Status Daemon::Impl::EnsureKube(const KubernetesConfig& k, bool startup) {
  std::shared_ptr<KubeSource> old;
  {
    std::lock_guard lock(kube_mu);
    if (k == kube_config && (kube != nullptr) == k.enabled) return absl::OkStatus();
    old = kube;
  }
  if (old) {
    spdlog::info("kubernetes: section changed, stopping the API source");
    pipeline->SetMetadataSource(nullptr);
    old->Stop();
    std::lock_guard lock(kube_mu);
    kube.reset();
    kube_config = KubernetesConfig{};
  }
  if (!k.enabled) return absl::OkStatus();
  auto next = std::make_shared<KubeSource>(k, kube::ProcessEnv(), store.get(), &metrics,
                                           registry.get(), pipeline.get());
  next->SetConfigInputsChanged([this] { RequestReload(); });
  if (Status s = next->Start(); !s.ok()) {
    next->Stop();
    return s;
  }
  {
    std::lock_guard lock(kube_mu);
    kube = next;
    kube_config = k;
  }
  pipeline->SetMetadataSource(next);
  // The node config may depend on the Node (podCIDRs, its config label):
  // wait for it, boundedly, before the config is computed.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(k.sync_timeout_ms);
  if (!next->WaitForNode(deadline)) {
    std::string why;
    next->Node(&why);
    spdlog::warn("kubernetes: the Node {} was not listed within {}ms{}{}; going on with what the "
                 "state store remembers of it",
                 next->node_name(), k.sync_timeout_ms, why.empty() ? "" : ": ", why);
  }
  if (!startup) {
    // Modules running already get the API's objects now (on a start they
    // get them when they start).
    auto reader = registry->ReaderLock();
    for (const auto& m : registry->Current()->all) {
      if (m->has_policy() || m->has_secgroup()) {
        // Outside a transition: feed through the module directly, holding the
        // reader lock so it is not stopped meanwhile.
        next->ModuleStarted(*m);
      }
    }
  }
  return absl::OkStatus();
}

StatusOr<NodeConfig> Daemon::Impl::Effective(const NodeConfigDocument& base,
                                             const NodeConfig& parsed) {
  Json doc = base.doc;
  std::string origin = base.origin;
  std::vector<std::string> warnings = base.warnings;
  std::optional<std::vector<std::string>> cidrs;
  std::string why = "the node config has no kubernetes section";
  if (auto k = Kube()) {
    std::string w;
    if (auto ov = k->Override(&w)) {
      const std::string where = "ConfigMap " + ov->ns + "/" + ov->name;
      auto patch = ConfigMapDataToDocument(ov->data, where, &warnings, /*as_patch=*/true);
      if (patch.ok()) {
        if (patch->contains("kubernetes")) {
          patch->erase("kubernetes");
          warnings.push_back(where + ": a per-node ConfigMap cannot change the kubernetes "
                             "section; that part is ignored");
        }
        doc.merge_patch(*patch);
        origin += " + " + where + " (node label " + parsed.kubernetes.node_config_label + ")";
      } else if (patch.status().code() == absl::StatusCode::kNotFound) {
        warnings.push_back(std::string(patch.status().message()));
      } else {
        return patch.status();
      }
    }
    if (!w.empty()) warnings.push_back(w);
    if (auto n = k->Node(&w)) {
      cidrs = n->pod_cidrs;
    } else {
      why = w;
    }
  }
  if (Status s = ResolveNodeRanges(&doc, cidrs, why); !s.ok()) return Annotate(s, origin);
  auto cfg = NodeConfigFromJson(doc, origin);
  if (!cfg.ok()) return Annotate(cfg.status(), origin);
  cfg->kubernetes = parsed.kubernetes;
  cfg->warnings = std::move(warnings);
  return cfg;
}

void Daemon::Impl::RequestReload() {
  {
    std::lock_guard lock(reload_mu);
    reload_pending = true;
  }
  reload_cv.notify_all();
}

void Daemon::Impl::ReloadLoop() {
  std::unique_lock lock(reload_mu);
  while (true) {
    reload_cv.wait(lock, [&] { return reload_stop || reload_pending; });
    if (reload_stop) return;
    reload_pending = false;
    lock.unlock();
    Reload();
    lock.lock();
  }
}

Status Daemon::Impl::Start() {
  // Config first: its log settings apply from the first line on.
  auto base = LoadBase();
  if (!base.ok()) return base.status();
  StatusOr<NodeConfig> cfg = NodeConfigFromJson(base->doc, base->origin);
  if (!cfg.ok()) return Annotate(cfg.status(), base->origin);
  cfg->warnings = base->warnings;
  std::string level = opts.log_level.empty() ? cfg->log_level : opts.log_level;
  TRELLIS_RETURN_IF_ERROR(SetupLogging(level, cfg->log_file));
  current_log_file = cfg->log_file;
  spdlog::info("trellisd {} starting: config {}, state {}, plugins {}, socket {}", TRELLIS_VERSION,
               cfg->origin, opts.state_dir, opts.plugin_dir, opts.socket_path);
  for (const auto& w : cfg->warnings) spdlog::warn("config: {}", w);

  auto reg = [&](MetricType t, const char* name, const char* help,
                 std::vector<std::string> labels = {}) {
    auto id = metrics.Register(t, name, help, labels);
    return id.ok() ? Metric(&metrics, *id) : Metric();
  };
  m_reloads = reg(MetricType::kCounter, "trellis_config_reloads_total",
                  "Node config changes seen, by result (applied, refused, invalid, partial).",
                  {"result"});
  m_store_errors = reg(MetricType::kCounter, "trellis_store_errors_total",
                       "Errors of the state store (SQLite).");
  m_build_info = reg(MetricType::kGauge, "trellis_build_info", "trellisd build.", {"version"});
  m_refused = reg(MetricType::kCounter, "trellis_api_refused_connections_total",
                  "API connections closed because the peer was not root.");
  m_reload_ok = reg(MetricType::kGauge, "trellis_config_last_reload_successful",
                    "0 while the last node config seen was refused or applied with failures "
                    "(the error: trellisctl status).");
  m_ready = reg(MetricType::kGauge, "trellis_ready",
                "1 when /readyz passes: startup reconcile done, every enabled module healthy.");
  m_cpu = reg(MetricType::kCounter, "process_cpu_seconds_total",
              "Total user and system CPU time spent in seconds.");
  m_start_time = reg(MetricType::kGauge, "process_start_time_seconds",
                     "Start time of the process since unix epoch in seconds.");
  m_rss =
      reg(MetricType::kGauge, "process_resident_memory_bytes", "Resident memory size in bytes.");
  m_vsize =
      reg(MetricType::kGauge, "process_virtual_memory_bytes", "Virtual memory size in bytes.");
  m_fds = reg(MetricType::kGauge, "process_open_fds", "Number of open file descriptors.");
  m_max_fds =
      reg(MetricType::kGauge, "process_max_fds", "Maximum number of open file descriptors.");
  m_build_info.Set({TRELLIS_VERSION}, 1);
  m_ready.Set({}, 0);

  TRELLIS_ASSIGN_OR_RETURN(store, Store::Open(std::filesystem::path(opts.state_dir) / "trellis.db"));
  TRELLIS_ASSIGN_OR_RETURN(datapath, Datapath::Create());
  registry = std::make_unique<ModuleRegistry>(opts.plugin_dir, store.get(), &metrics);
  pipeline = std::make_unique<PodPipeline>(store.get(), registry.get(), datapath.get(), &metrics);
  pipeline->SetDefaultMtu(cfg->datapath.mtu);
  fanout = std::make_unique<ModuleFanout>(this);
  registry->SetObserver(fanout.get());
  service = std::make_unique<ApiService>(this);
  api = std::make_unique<rpc::Server>(rpc::Server::Options{.socket_path = opts.socket_path});
  service->RegisterOn(*api);

  // The HTTP endpoint answers from here on, before the modules start (a
  // module's create() may wait on a cloud API): /healthz passes as soon as the
  // store takes writes, /readyz fails until startup reconcile is done, so a
  // kubelet liveness probe never kills a daemon that is still starting.
  if (!opts.metrics_addr.empty()) {
    http = std::make_unique<HttpServer>(
        HttpHandlers{[this] { return Metrics(); }, [this] { return Live(); },
                     [this] { return Ready(); }, [this] { return DebugState().dump(2); }});
    TRELLIS_RETURN_IF_ERROR(http->Start(opts.metrics_addr));
    spdlog::info("metrics and health endpoint on {} (port {})", opts.metrics_addr, http->port());
  }

  auto kube_started = std::chrono::steady_clock::now();
  TRELLIS_RETURN_IF_ERROR(EnsureKube(cfg->kubernetes, /*startup=*/true));
  auto effective = Effective(*base, *cfg);
  if (!effective.ok()) return effective.status();
  if (effective->origin != cfg->origin) spdlog::info("node config: {}", effective->origin);
  for (const auto& w : effective->warnings) {
    if (std::find(cfg->warnings.begin(), cfg->warnings.end(), w) == cfg->warnings.end()) {
      spdlog::warn("config: {}", w);
    }
  }
  pipeline->SetDefaultMtu(effective->datapath.mtu);
  TRELLIS_RETURN_IF_ERROR(ApplyConfig(*effective, /*startup=*/true));

  // The API (and with it CNI DEL/CHECK) starts only once the modules run:
  // a DEL answered without them would drop a pod's record and leak its
  // address. Until then the `trellis` binary answers "try again later".
  TRELLIS_RETURN_IF_ERROR(api->Start());

  if (auto k = Kube()) {
    // Policies and namespaces before the first pod: a pod selected by an
    // API policy is enforced from its first packet. Bounded: a dead API
    // server must not keep the node from starting pods.
    auto deadline = kube_started + std::chrono::milliseconds(cfg->kubernetes.sync_timeout_ms);
    if (!k->WaitForSync(deadline)) {
      spdlog::warn("kubernetes: not every resource was listed within {}ms; ADDs fall back to the "
                   "CNI args until they are",
                   cfg->kubernetes.sync_timeout_ms);
    }
  }
  if (Status s = pipeline->Reconcile(); !s.ok()) spdlog::error("{}", s.message());
  pipeline->SetReady(true);

  reload_thread = std::thread([this] { ReloadLoop(); });
  if (!opts.config_path.empty()) {
    watcher = std::make_unique<ConfigWatcher>(opts.config_path, [this] { RequestReload(); });
    TRELLIS_RETURN_IF_ERROR(watcher->Start());
  }
  spdlog::info("trellisd ready");
  return absl::OkStatus();
}

Status Daemon::Impl::Live() { return store->CheckWritable(); }

Status Daemon::Impl::Ready() {
  if (!pipeline->ready()) return absl::UnavailableError("startup reconcile is not done");
  std::string why;
  if (!registry->AllHealthy(&why)) return absl::UnavailableError(why);
  return Live();
}

Status Daemon::Impl::ApplyConfig(const NodeConfig& cfg, bool startup) {
  // At startup nothing runs yet: start what can run, mark the rest failed.
  Status s = registry->Apply(cfg, startup ? ModuleRegistry::Mode::kBestEffort
                                          : ModuleRegistry::Mode::kAllOrNothing);
  std::lock_guard lock(config_mu);
  if (s.code() == absl::StatusCode::kInvalidArgument ||
      s.code() == absl::StatusCode::kFailedPrecondition) {
    last_config_error = std::string(s.message());
    m_reloads.Add({startup ? "invalid" : "refused"});
    m_reload_ok.Set({}, 0);
    return s;
  }
  applied_config = NodeConfigToJson(cfg);
  config_origin = cfg.origin;
  if (!s.ok()) {
    last_config_error = std::string(s.message());
    m_reloads.Add({"partial"});
    m_reload_ok.Set({}, 0);
    spdlog::error("config applied with failures: {}", s.message());
  } else {
    last_config_error.clear();
    m_reloads.Add({"applied"});
    m_reload_ok.Set({}, 1);
  }
  applied_config_error = last_config_error;
  return absl::OkStatus();
}

void Daemon::Impl::Reload() {
  auto refuse = [&](const Status& s) {
    std::lock_guard lock(config_mu);
    last_config_error = std::string(s.message());
    m_reloads.Add({"invalid"});
    m_reload_ok.Set({}, 0);
    spdlog::error("new node config refused, the running config stays in force: {}", s.message());
  };
  auto base = LoadBase();
  if (!base.ok()) return refuse(base.status());
  auto parsed = NodeConfigFromJson(base->doc, base->origin);
  if (!parsed.ok()) return refuse(Annotate(parsed.status(), base->origin));
  if (Status s = EnsureKube(parsed->kubernetes, /*startup=*/false); !s.ok()) {
    // The API source is off now (its section is wrong); the rest applies.
    spdlog::error("kubernetes: {}", s.message());
    std::lock_guard lock(config_mu);
    last_config_error = std::string(s.message());
  }
  auto cfg = Effective(*base, *parsed);
  if (!cfg.ok()) return refuse(cfg.status());
  {
    std::lock_guard lock(config_mu);
    // Nothing new. But when a refused edit was reverted, apply again (every
    // module is kept) so that the refusal's traces clear everywhere.
    if (NodeConfigToJson(*cfg) == applied_config && last_config_error == applied_config_error) {
      return;
    }
  }
  for (const auto& w : cfg->warnings) spdlog::warn("config: {}", w);
  spdlog::info("node config changed ({}), applying", cfg->origin);
  std::string previous_level;
  {
    std::lock_guard lock(config_mu);
    previous_level = applied_config.value("log_level", "");
  }
  if (Status s = ApplyConfig(*cfg, false); !s.ok()) {
    spdlog::error("new node config refused, the running config stays in force: {}", s.message());
    return;
  }
  pipeline->SetDefaultMtu(cfg->datapath.mtu);
  // The config's log settings follow only an accepted config. A level set
  // with `trellisctl log-level` holds until the config's own level changes.
  if (cfg->log_file != current_log_file || cfg->log_level != previous_level) {
    if (Status s = SetupLogging(cfg->log_level, cfg->log_file); !s.ok()) {
      spdlog::error("log settings refused: {}", s.message());
    } else {
      spdlog::info("log settings from the node config: level {}, file {}", cfg->log_level,
                   cfg->log_file.empty() ? "(none)" : cfg->log_file);
    }
    current_log_file = cfg->log_file;
  }
  spdlog::info("node config applied");
}

v1::DaemonStatus Daemon::Impl::StatusProto() {
  v1::DaemonStatus s;
  s.set_version(TRELLIS_VERSION);
  std::string why;
  bool ready = pipeline->ready() && registry->AllHealthy(&why);
  Status live = Live();
  s.set_live(live.ok());
  s.set_live_reason(std::string(live.message()));
  s.set_ready(ready && live.ok());
  s.set_ready_reason(!pipeline->ready() ? "startup reconcile is not done"
                     : !ready           ? why
                                        : std::string(live.message()));
  if (auto pods = pipeline->Pods(); pods.ok()) {
    s.set_pods(pods->size());
    uint32_t degraded = 0;
    for (const auto& p : *pods) degraded += p.state != "ready";
    s.set_degraded_pods(degraded);
  }
  {
    std::lock_guard lock(config_mu);
    s.set_config_origin(config_origin);
    s.set_last_config_error(last_config_error);
  }
  s.set_started_unix(started_unix);
  s.set_log_level(CurrentLogLevel());
  s.set_state_dir(opts.state_dir);
  s.set_plugin_dir(opts.plugin_dir);
  return s;
}

Json Daemon::Impl::DebugState() {
  std::string status_json;
  google::protobuf::util::MessageToJsonString(StatusProto(), &status_json);
  Json modules = Json::array();
  for (const auto& i : registry->Describe()) {
    modules.push_back({{"name", i.name},
                       {"enabled", i.enabled},
                       {"state", i.state},
                       {"plugin", i.plugin_path},
                       {"version", i.plugin_version},
                       {"interfaces", i.interfaces},
                       {"healthy", i.healthy},
                       {"message", i.message},
                       {"reload_count", i.reload_count},
                       {"last_error", i.last_error},
                       {"status", i.status}});
  }
  Json pods = Json::array();
  if (auto p = pipeline->Pods(); p.ok()) {
    for (const auto& r : *p) {
      Json j = r.ToJson();
      j["state"] = r.state;
      pods.push_back(j);
    }
  }
  Json pool = nullptr;
  {
    // Never waits behind a transition (see ModuleRegistry::Describe()).
    auto reader = registry->TryReaderLock();
    if (!reader.owns_lock()) {
      pool = Json{{"unavailable", "a module transition is in progress"}};
    } else if (auto eni = registry->Current()->eni) {
      if (auto st = eni->EniPoolStatus(); st.ok()) pool = *st;
    }
  }
  Json kubernetes = nullptr;
  if (auto k = Kube()) kubernetes = k->Describe();
  return Redact(Json{{"daemon", Json::parse(status_json, nullptr, false)},
                     {"modules", modules},
                     {"pods", pods},
                     {"pool", pool},
                     {"kubernetes", kubernetes}});
}

std::string Daemon::Impl::Metrics() {
  m_store_errors.Set({}, static_cast<double>(store->error_count()));
  m_refused.Set({}, static_cast<double>(api ? api->refused_peers() : 0));
  m_ready.Set({}, Ready().ok() ? 1 : 0);  // also refreshes the module health gauges
  (void)pipeline->Pods();                 // refreshes the pod gauges
  if (auto k = Kube()) k->RefreshMetrics();
  ProcessStats p = ReadProcessStats();
  m_cpu.Set({}, p.cpu_seconds);
  m_start_time.Set({}, p.start_time);
  m_rss.Set({}, p.rss_bytes);
  m_vsize.Set({}, p.vsize_bytes);
  m_fds.Set({}, p.open_fds);
  m_max_fds.Set({}, p.max_fds);
  return metrics.Render();
}

}  // namespace trellis
