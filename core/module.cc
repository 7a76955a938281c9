#include "core/module.h"

#include <spdlog/spdlog.h>

#include "core/metrics.h"
#include "core/store.h"

namespace trellis {

struct Module::Context {
  std::string name;
  Store* store;
  MetricsRegistry* metrics;
  HostServices* services;
  std::vector<uint32_t> metric_label_counts;  // by registry id, to bound label arrays
  std::mutex metrics_mu;

  static Context* Of(void* ctx) { return static_cast<Context*>(ctx); }

  static void Log(void* ctx, int32_t level, const char* message) {
    auto lvl = level <= TRELLIS_LOG_TRACE ? spdlog::level::trace
               : level == TRELLIS_LOG_DEBUG ? spdlog::level::debug
               : level == TRELLIS_LOG_INFO  ? spdlog::level::info
               : level == TRELLIS_LOG_WARN  ? spdlog::level::warn
                                            : spdlog::level::err;
    spdlog::log(lvl, "[{}] {}", Of(ctx)->name, message != nullptr ? message : "");
  }
  static int32_t LogLevel(void*) {
    switch (spdlog::get_level()) {
      case spdlog::level::trace: return TRELLIS_LOG_TRACE;
      case spdlog::level::debug: return TRELLIS_LOG_DEBUG;
      case spdlog::level::info: return TRELLIS_LOG_INFO;
      case spdlog::level::warn: return TRELLIS_LOG_WARN;
      default: return TRELLIS_LOG_ERROR;
    }
  }
  static trellis_status KvGet(void* ctx, const char* key, trellis_sink* value, trellis_error* err) {
    auto v = Of(ctx)->store->KvGet(Of(ctx)->name, key);
    if (!v.ok()) {
      WriteAbiError(err, v.status().message());
      return ToAbi(v.status());
    }
    if (!v->has_value()) return TRELLIS_E_NOT_FOUND;
    value->write(value->ctx, (*v)->data(), (*v)->size());
    return TRELLIS_OK;
  }
  static trellis_status KvPut(void* ctx, const char* key, const char* value, size_t len,
                              trellis_error* err) {
    Status s = Of(ctx)->store->KvPut(Of(ctx)->name, key, std::string_view(value, len));
    WriteAbiError(err, s.message());
    return ToAbi(s);
  }
  static trellis_status KvDelete(void* ctx, const char* key, trellis_error* err) {
    Status s = Of(ctx)->store->KvDelete(Of(ctx)->name, key);
    WriteAbiError(err, s.message());
    return ToAbi(s);
  }
  static trellis_status KvScan(void* ctx, const char* prefix, trellis_kv_visit_fn visit, void* user,
                               trellis_error* err) {
    Status s = Of(ctx)->store->KvScan(Of(ctx)->name, prefix == nullptr ? "" : prefix,
                                      [&](std::string_view k, std::string_view v) {
                                        std::string key(k);
                                        return visit(user, key.c_str(), v.data(), v.size()) == 0;
                                      });
    WriteAbiError(err, s.message());
    return ToAbi(s);
  }
  static trellis_status MetricRegister(void* ctx, const trellis_metric_desc* d, uint32_t* id,
                                       trellis_error* err) {
    if (d == nullptr || d->name == nullptr || id == nullptr) {
      WriteAbiError(err, "metric_register: NULL descriptor, name or id");
      return TRELLIS_E_INVALID;
    }
    MetricType type;
    switch (d->type) {
      case TRELLIS_METRIC_COUNTER: type = MetricType::kCounter; break;
      case TRELLIS_METRIC_GAUGE: type = MetricType::kGauge; break;
      case TRELLIS_METRIC_HISTOGRAM: type = MetricType::kHistogram; break;
      default:
        WriteAbiError(err, "metric_register: unknown metric type");
        return TRELLIS_E_INVALID;
    }
    std::vector<std::string> labels;
    for (uint32_t i = 0; i < d->n_labels; ++i) labels.emplace_back(d->label_names[i]);
    std::vector<double> buckets(d->buckets, d->buckets + (d->buckets ? d->n_buckets : 0));
    auto r = Of(ctx)->metrics->Register(type, d->name, d->help ? d->help : "", labels, buckets,
                                        Of(ctx)->name);
    if (!r.ok()) {
      WriteAbiError(err, r.status().message());
      return ToAbi(r.status());
    }
    std::lock_guard lock(Of(ctx)->metrics_mu);
    auto& counts = Of(ctx)->metric_label_counts;
    if (counts.size() <= *r) counts.resize(*r + 1, UINT32_MAX);
    counts[*r] = d->n_labels;
    *id = *r;
    return TRELLIS_OK;
  }
  // Copies label values, bounded by the registered count (never reads past
  // what the plugin promised).
  static bool Labels(void* ctx, uint32_t id, const char* const* values,
                     std::vector<std::string>* out) {
    uint32_t n;
    {
      std::lock_guard lock(Of(ctx)->metrics_mu);
      auto& counts = Of(ctx)->metric_label_counts;
      if (id >= counts.size() || counts[id] == UINT32_MAX) return false;
      n = counts[id];
    }
    for (uint32_t i = 0; i < n; ++i) out->emplace_back(values && values[i] ? values[i] : "");
    return true;
  }
  static void MetricSet(void* ctx, uint32_t id, const char* const* l, double v) {
    std::vector<std::string> labels;
    if (Labels(ctx, id, l, &labels)) Of(ctx)->metrics->Set(id, labels, v);
  }
  static void MetricAdd(void* ctx, uint32_t id, const char* const* l, double v) {
    std::vector<std::string> labels;
    if (Labels(ctx, id, l, &labels)) Of(ctx)->metrics->Add(id, labels, v);
  }
  static void MetricObserve(void* ctx, uint32_t id, const char* const* l, double v) {
    std::vector<std::string> labels;
    if (Labels(ctx, id, l, &labels)) Of(ctx)->metrics->Observe(id, labels, v);
  }
  static void MetricForget(void* ctx, uint32_t id, const char* const* l) {
    std::vector<std::string> labels;
    if (Labels(ctx, id, l, &labels)) Of(ctx)->metrics->Forget(id, labels);
  }
  static trellis_status Acquire(void* ctx, const trellis_pod* pod, uint8_t family, uint32_t count,
                                trellis_address* out, uint32_t cap, uint32_t* n_out,
                                trellis_error* err) {
    Status s = Of(ctx)->services->AcquireAddresses(pod, family, count, out, cap, n_out);
    WriteAbiError(err, s.message());
    return ToAbi(s);
  }
  static trellis_status Release(void* ctx, const trellis_address* a, uint32_t n,
                                trellis_error* err) {
    Status s = Of(ctx)->services->ReleaseAddresses(a, n);
    WriteAbiError(err, s.message());
    return ToAbi(s);
  }
  static void NotifyHealth(void* ctx, const char* reason) {
    Of(ctx)->services->HealthChanged(Of(ctx)->name, reason != nullptr ? reason : "");
  }
};

StatusOr<std::unique_ptr<Module>> Module::Create(const ModuleConfig& config,
                                                 std::shared_ptr<LoadedPlugin> plugin, Store* store,
                                                 MetricsRegistry* metrics,
                                                 HostServices* services) {
  std::unique_ptr<Module> m(new Module());
  m->config_ = config;
  m->plugin_ = std::move(plugin);
  m->ctx_.reset(new Context{config.name, store, metrics, services, {}, {}});
  auto& a = m->api_;
  a.struct_size = sizeof a;
  a.abi_major = TRELLIS_ABI_MAJOR;
  a.abi_minor = TRELLIS_ABI_MINOR;
  a.ctx = m->ctx_.get();
  a.module_name = m->ctx_->name.c_str();
  a.log = &Context::Log;
  a.log_level = &Context::LogLevel;
  a.kv_get = &Context::KvGet;
  a.kv_put = &Context::KvPut;
  a.kv_delete = &Context::KvDelete;
  a.kv_scan = &Context::KvScan;
  a.metric_register = &Context::MetricRegister;
  a.metric_set = &Context::MetricSet;
  a.metric_add = &Context::MetricAdd;
  a.metric_observe = &Context::MetricObserve;
  a.metric_forget = &Context::MetricForget;
  a.addresses_acquire = &Context::Acquire;
  a.addresses_release = &Context::Release;
  a.notify_health = &Context::NotifyHealth;

  const std::string cfg = config.config.dump();
  void* instance = nullptr;
  Status s = CallPlugin(config.name, "create", [&](trellis_error* err) {
    return m->descriptor().d.create(&m->api_, cfg.c_str(), &instance, err);
  });
  if (!s.ok()) {
    metrics->UnregisterOwner(config.name);
    return s;
  }
  if (instance == nullptr) {
    metrics->UnregisterOwner(config.name);
    return absl::InternalError("module " + config.name + ": create returned OK but no instance");
  }
  m->instance_ = instance;
  return m;
}

Module::~Module() {
  if (instance_ != nullptr) descriptor().d.destroy(instance_);
  if (ctx_) ctx_->metrics->UnregisterOwner(ctx_->name);
  // plugin_ (the library) is released after the instance is gone.
}

Status Module::Reconfigure(const ModuleConfig& config) {
  if (descriptor().d.reconfigure == nullptr) {
    return absl::UnimplementedError("module " + name() + " cannot be reconfigured live");
  }
  const std::string cfg = config.config.dump();
  TRELLIS_RETURN_IF_ERROR(CallPlugin(name(), "reconfigure", [&](trellis_error* err) {
    return descriptor().d.reconfigure(instance_, cfg.c_str(), err);
  }));
  config_ = config;
  return absl::OkStatus();
}

Status Module::Deactivate() {
  if (descriptor().d.deactivate == nullptr) return absl::OkStatus();
  return CallPlugin(name(), "deactivate",
                    [&](trellis_error* err) { return descriptor().d.deactivate(instance_, err); });
}

StatusOr<Json> ParsePluginJson(const std::string& module, const char* op, const std::string& text) {
  Json j = Json::parse(text, nullptr, false);
  if (j.is_discarded()) {
    return absl::InternalError("module " + module + ": " + op + " wrote invalid JSON");
  }
  return j;
}

namespace {
template <class F>
StatusOr<Json> JsonCall(const std::string& module, const char* op, F&& fn) {
  std::string out;
  trellis_sink sink = sdk::StringSink(&out);
  TRELLIS_RETURN_IF_ERROR(CallPlugin(module, op, [&](trellis_error* err) { return fn(&sink, err); }));
  return ParsePluginJson(module, op, out);
}
std::vector<trellis_pod_ref> Refs(const std::vector<sdk::PodRef>& live) {
  std::vector<trellis_pod_ref> r;
  r.reserve(live.size());
  for (const auto& p : live) r.push_back({p.container_id.c_str(), p.ifname.c_str()});
  return r;
}
}  // namespace

StatusOr<Json> Module::QueryStatus() {
  if (descriptor().d.status == nullptr) {
    return Json{{"healthy", true}, {"degraded", false}, {"message", ""}};
  }
  return JsonCall(name(), "status", [&](trellis_sink* s, trellis_error* e) {
    return descriptor().d.status(instance_, s, e);
  });
}

StatusOr<std::vector<sdk::Address>> Module::IpamAllocate(const trellis_pod& pod) {
  trellis_address out[8] = {};
  uint32_t n = 0;
  TRELLIS_RETURN_IF_ERROR(CallPlugin(name(), "allocate", [&](trellis_error* err) {
    return descriptor().ipam.allocate(instance_, &pod, out, 8, &n, err);
  }));
  std::vector<sdk::Address> r;
  for (uint32_t i = 0; i < n && i < 8; ++i) r.push_back(sdk::Address::FromC(out[i]));
  return r;
}

#define TRELLIS_POD_OP(Method, table, op, label)                                    \
  Status Module::Method(const trellis_pod& pod) {                                   \
    if (descriptor().table.op == nullptr) return absl::OkStatus();                  \
    return CallPlugin(name(), label, [&](trellis_error* err) {                      \
      return descriptor().table.op(instance_, &pod, err);                           \
    });                                                                             \
  }
#define TRELLIS_GC_OP(Method, table, label)                                         \
  Status Module::Method(const std::vector<sdk::PodRef>& live) {                     \
    if (descriptor().table.gc == nullptr) return absl::OkStatus();                  \
    auto refs = Refs(live);                                                         \
    return CallPlugin(name(), label, [&](trellis_error* err) {                      \
      return descriptor().table.gc(instance_, refs.data(),                          \
                                   static_cast<uint32_t>(refs.size()), err);        \
    });                                                                             \
  }

TRELLIS_POD_OP(IpamRelease, ipam, release, "release")
TRELLIS_POD_OP(IpamCheck, ipam, check, "check")
TRELLIS_GC_OP(IpamGc, ipam, "gc")
TRELLIS_POD_OP(QosApply, qos, apply, "qos apply")
TRELLIS_POD_OP(QosRemove, qos, remove, "qos remove")
TRELLIS_POD_OP(QosCheck, qos, check, "qos check")
TRELLIS_GC_OP(QosGc, qos, "qos gc")
TRELLIS_POD_OP(PolicyUpsertPod, policy, pod_upsert, "policy pod_upsert")
TRELLIS_POD_OP(PolicyRemovePod, policy, pod_remove, "policy pod_remove")
TRELLIS_POD_OP(PolicyCheck, policy, check, "policy check")
TRELLIS_GC_OP(PolicyGc, policy, "policy gc")
#undef TRELLIS_POD_OP
#undef TRELLIS_GC_OP

StatusOr<Json> Module::IpamList() {
  if (descriptor().ipam.list == nullptr) return Json::array();
  return JsonCall(name(), "list", [&](trellis_sink* s, trellis_error* e) {
    return descriptor().ipam.list(instance_, s, e);
  });
}

Status Module::SourceAcquire(const trellis_pod* pod, uint8_t family, uint32_t count,
                             trellis_address* out, uint32_t capacity, uint32_t* n_out) {
  return CallPlugin(name(), "acquire", [&](trellis_error* err) {
    return descriptor().address_source.acquire(instance_, pod, family, count, out, capacity, n_out,
                                               err);
  });
}

Status Module::SourceRelease(const trellis_address* addresses, uint32_t count) {
  return CallPlugin(name(), "release addresses", [&](trellis_error* err) {
    return descriptor().address_source.release(instance_, addresses, count, err);
  });
}

Status Module::PolicyUpsertNamespace(const std::string& ns, const sdk::Labels& labels) {
  if (descriptor().policy.namespace_upsert == nullptr) return absl::OkStatus();
  std::vector<trellis_kv> kv;
  for (const auto& [k, v] : labels) kv.push_back({k.c_str(), v.c_str()});
  return CallPlugin(name(), "namespace_upsert", [&](trellis_error* err) {
    return descriptor().policy.namespace_upsert(instance_, ns.c_str(), kv.data(),
                                                static_cast<uint32_t>(kv.size()), err);
  });
}

Status Module::PolicyUpsertObject(const std::string& key, const std::optional<Json>& manifest) {
  if (descriptor().policy.policy_upsert == nullptr) {
    return absl::UnimplementedError("module " + name() + " takes no policy objects");
  }
  std::string text = manifest ? manifest->dump() : "";
  return CallPlugin(name(), "policy_upsert", [&](trellis_error* err) {
    return descriptor().policy.policy_upsert(instance_, key.c_str(),
                                             manifest ? text.c_str() : nullptr, err);
  });
}

StatusOr<Json> Module::PolicyExplain(const Json& request) {
  if (descriptor().policy.explain == nullptr) {
    return absl::UnimplementedError("module " + name() + " cannot explain");
  }
  std::string req = request.dump();
  return JsonCall(name(), "explain", [&](trellis_sink* s, trellis_error* e) {
    return descriptor().policy.explain(instance_, req.c_str(), s, e);
  });
}

StatusOr<Json> Module::EniPoolStatus() {
  return JsonCall(name(), "pool_status", [&](trellis_sink* s, trellis_error* e) {
    return descriptor().eni.pool_status(instance_, s, e);
  });
}

Status Module::EniEnsurePool() {
  if (descriptor().eni.ensure_pool == nullptr) return absl::OkStatus();
  return CallPlugin(name(), "ensure_pool", [&](trellis_error* err) {
    return descriptor().eni.ensure_pool(instance_, err);
  });
}

Status Module::EniGc() {
  if (descriptor().eni.gc == nullptr) return absl::OkStatus();
  return CallPlugin(name(), "eni gc",
                    [&](trellis_error* err) { return descriptor().eni.gc(instance_, err); });
}

StatusOr<Json> Module::SecgroupReconcile(bool dry_run) {
  return JsonCall(name(), "reconcile", [&](trellis_sink* s, trellis_error* e) {
    return descriptor().secgroup.reconcile(instance_, dry_run ? TRELLIS_SECGROUP_SYNC_DRY_RUN : 0,
                                           s, e);
  });
}

Status Module::SecgroupSetLeader(bool leader) {
  if (descriptor().secgroup.set_leader == nullptr) return absl::OkStatus();
  return CallPlugin(name(), "set_leader", [&](trellis_error* err) {
    return descriptor().secgroup.set_leader(instance_, leader ? 1 : 0, err);
  });
}

}  // namespace trellis
