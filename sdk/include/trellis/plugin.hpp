// trellis C++ plugin SDK (header-only).
//
// A plugin author writes one class and one export macro:
//
//   class Hello {
//    public:
//     static constexpr const char* kName = "hello";
//     static constexpr const char* kVersion = "1.0.0";
//     static void Validate(const trellis::sdk::Json& config);      // throw to refuse
//     Hello(trellis::sdk::Host host, const trellis::sdk::Json& config);
//     void Reconfigure(const trellis::sdk::Json& config);          // optional
//     trellis::sdk::Json Status();                                 // optional
//     void Deactivate();  // optional: disabled by config, remove node-level effects
//     // ...then the methods of the interfaces it implements, e.g. qos:
//     void ApplyQos(const trellis::sdk::Pod& pod);
//     void RemoveQos(const trellis::sdk::Pod& pod);
//   };
//   TRELLIS_PLUGIN(Hello)
//
// The SDK detects which interfaces the class implements from the methods it
// has (see the concepts below), fills the C ops tables, and wraps every call in
// try/catch: an exception never crosses the ABI. Throw trellis::sdk::Error to
// choose the status code; any other exception becomes TRELLIS_E_INTERNAL.
#ifndef TRELLIS_PLUGIN_HPP_
#define TRELLIS_PLUGIN_HPP_

#include <trellis/abi.h>
#include <trellis/types.hpp>

#include <concepts>
#include <cstring>
#include <exception>
#include <new>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace trellis::sdk {

// The host, as a module sees it. Cheap to copy; valid until the instance is
// destroyed.
class Host {
 public:
  Host() = default;
  explicit Host(const trellis_host_api* api) : api_(api) {}

  const char* module_name() const { return api_->module_name; }

  void Log(int32_t level, const std::string& message) const {
    if (api_->log != nullptr && level >= api_->log_level(api_->ctx)) {
      api_->log(api_->ctx, level, message.c_str());
    }
  }
  void Debug(const std::string& m) const { Log(TRELLIS_LOG_DEBUG, m); }
  void Info(const std::string& m) const { Log(TRELLIS_LOG_INFO, m); }
  void Warn(const std::string& m) const { Log(TRELLIS_LOG_WARN, m); }
  void Error(const std::string& m) const { Log(TRELLIS_LOG_ERROR, m); }

  // Persistent key/value store private to this module.
  std::optional<std::string> Get(const std::string& key) const {
    std::string value;
    trellis_sink sink = StringSink(&value);
    ErrorBuffer err;
    trellis_status st = api_->kv_get(api_->ctx, key.c_str(), &sink, err.get());
    if (st == TRELLIS_E_NOT_FOUND) return std::nullopt;
    err.ThrowIfFailed(st);
    return value;
  }
  void Put(const std::string& key, const std::string& value) const {
    ErrorBuffer err;
    err.ThrowIfFailed(api_->kv_put(api_->ctx, key.c_str(), value.data(), value.size(), err.get()));
  }
  void Delete(const std::string& key) const {
    ErrorBuffer err;
    err.ThrowIfFailed(api_->kv_delete(api_->ctx, key.c_str(), err.get()));
  }
  // Returns every (key, value) whose key starts with `prefix`, in key order.
  std::vector<std::pair<std::string, std::string>> Scan(const std::string& prefix) const {
    std::vector<std::pair<std::string, std::string>> out;
    ErrorBuffer err;
    auto visit = [](void* user, const char* k, const char* v, size_t n) -> int32_t {
      static_cast<decltype(out)*>(user)->emplace_back(k, std::string(v, n));
      return 0;
    };
    err.ThrowIfFailed(api_->kv_scan(api_->ctx, prefix.c_str(), visit, &out, err.get()));
    return out;
  }

  // Metrics. Returns an id for the Set/Add/Observe calls.
  uint32_t RegisterMetric(int32_t type, const std::string& name, const std::string& help,
                          const std::vector<std::string>& labels = {},
                          const std::vector<double>& buckets = {}) const {
    std::vector<const char*> names;
    for (const auto& l : labels) names.push_back(l.c_str());
    trellis_metric_desc d{};
    d.struct_size = sizeof d;
    d.type = type;
    d.name = name.c_str();
    d.help = help.c_str();
    d.label_names = names.data();
    d.n_labels = static_cast<uint32_t>(names.size());
    d.buckets = buckets.data();
    d.n_buckets = static_cast<uint32_t>(buckets.size());
    uint32_t id = 0;
    ErrorBuffer err;
    err.ThrowIfFailed(api_->metric_register(api_->ctx, &d, &id, err.get()));
    return id;
  }
  void SetMetric(uint32_t id, const std::vector<std::string>& labels, double v) const {
    auto p = Pointers(labels);
    api_->metric_set(api_->ctx, id, p.data(), v);
  }
  void AddMetric(uint32_t id, const std::vector<std::string>& labels, double v) const {
    auto p = Pointers(labels);
    api_->metric_add(api_->ctx, id, p.data(), v);
  }
  void ObserveMetric(uint32_t id, const std::vector<std::string>& labels, double v) const {
    auto p = Pointers(labels);
    api_->metric_observe(api_->ctx, id, p.data(), v);
  }
  void ForgetMetric(uint32_t id, const std::vector<std::string>& labels) const {
    auto p = Pointers(labels);
    api_->metric_forget(api_->ctx, id, p.data());
  }

  // The address-source service of another module (e.g. eni).
  std::vector<Address> AcquireAddresses(const Pod& pod, int family, uint32_t count) const {
    PodView view(pod);
    std::vector<trellis_address> out(count);
    uint32_t n = 0;
    ErrorBuffer err;
    err.ThrowIfFailed(api_->addresses_acquire(api_->ctx, view.get(), static_cast<uint8_t>(family),
                                              count, out.data(), count, &n, err.get()));
    std::vector<Address> result;
    for (uint32_t i = 0; i < n && i < count; ++i) result.push_back(Address::FromC(out[i]));
    return result;
  }
  void ReleaseAddresses(const std::vector<Address>& addresses) const {
    std::vector<trellis_address> c;
    for (const auto& a : addresses) c.push_back(a.ToC());
    ErrorBuffer err;
    err.ThrowIfFailed(api_->addresses_release(api_->ctx, c.data(),
                                              static_cast<uint32_t>(c.size()), err.get()));
  }

  void NotifyHealth(const std::string& reason) const {
    if (api_->notify_health != nullptr) api_->notify_health(api_->ctx, reason.c_str());
  }

 private:
  class ErrorBuffer {
   public:
    trellis_error* get() { return &err_; }
    void ThrowIfFailed(trellis_status st) const {
      if (st != TRELLIS_OK) throw sdk::Error(st, buf_);
    }

   private:
    char buf_[512] = {};
    trellis_error err_{buf_, sizeof buf_};
  };
  static std::vector<const char*> Pointers(const std::vector<std::string>& v) {
    std::vector<const char*> p;
    for (const auto& s : v) p.push_back(s.c_str());
    return p;
  }
  const trellis_host_api* api_ = nullptr;
};

// ---------------------------------------------------------------- concepts --
// An interface is detected when the class has all of its required methods.

template <class T>
concept ImplementsIpam = requires(T& t, const Pod& p) {
  { t.Allocate(p) } -> std::convertible_to<std::vector<Address>>;
  t.Release(p);
};
template <class T>
concept ImplementsAddressSource = requires(T& t, const Pod& p, const std::vector<Address>& a) {
  { t.AcquireAddresses(p, 4, 1u) } -> std::convertible_to<std::vector<Address>>;
  t.ReleaseAddresses(a);
};
template <class T>
concept ImplementsQos = requires(T& t, const Pod& p) {
  t.ApplyQos(p);
  t.RemoveQos(p);
};
template <class T>
concept ImplementsPolicy = requires(T& t, const Pod& p) {
  t.UpsertPod(p);
  t.RemovePod(p);
};
template <class T>
concept ImplementsEni = requires(T& t) {
  { t.PoolStatus() } -> std::convertible_to<Json>;
};
template <class T>
concept ImplementsSecgroup = requires(T& t) {
  { t.Reconcile(true) } -> std::convertible_to<Json>;
};

namespace detail {

inline void WriteError(trellis_error* err, const char* msg) {
  if (err == nullptr || err->message == nullptr || err->capacity == 0) return;
  size_t n = std::strlen(msg);
  if (n >= err->capacity) n = err->capacity - 1;
  std::memcpy(err->message, msg, n);
  err->message[n] = '\0';
}

// Runs `fn`, turning every exception into a status and a message.
template <class Fn>
trellis_status Guard(trellis_error* err, Fn&& fn) noexcept {
  try {
    fn();
    return TRELLIS_OK;
  } catch (const sdk::Error& e) {
    WriteError(err, e.what());
    return e.code() == TRELLIS_OK ? TRELLIS_E_INTERNAL : e.code();
  } catch (const Json::exception& e) {
    WriteError(err, (std::string("invalid JSON: ") + e.what()).c_str());
    return TRELLIS_E_INVALID;
  } catch (const std::bad_alloc&) {
    WriteError(err, "out of memory");
    return TRELLIS_E_INTERNAL;
  } catch (const std::exception& e) {
    WriteError(err, (std::string("unexpected exception: ") + e.what()).c_str());
    return TRELLIS_E_INTERNAL;
  } catch (...) {
    WriteError(err, "unexpected exception of unknown type");
    return TRELLIS_E_INTERNAL;
  }
}

inline void WriteJson(trellis_sink* sink, const Json& j) {
  std::string s = j.dump();
  sink->write(sink->ctx, s.data(), s.size());
}

inline std::vector<PodRef> Refs(const trellis_pod_ref* live, uint32_t n) {
  std::vector<PodRef> out;
  out.reserve(n);
  for (uint32_t i = 0; i < n; ++i) out.push_back({live[i].container_id, live[i].ifname});
  return out;
}

inline void CopyOut(const std::vector<Address>& in, trellis_address* out, uint32_t cap,
                    uint32_t* n_out) {
  if (in.size() > cap) {
    throw sdk::Error(TRELLIS_E_BUFFER, "more addresses than the caller has room for");
  }
  for (size_t i = 0; i < in.size(); ++i) out[i] = in[i].ToC();
  *n_out = static_cast<uint32_t>(in.size());
}

template <class T>
struct Thunks {
  static T* Self(void* instance) { return static_cast<T*>(instance); }

  static trellis_status Validate(const char* config, trellis_error* err) noexcept {
    return Guard(err, [&] { T::Validate(Json::parse(config)); });
  }
  static trellis_status Create(const trellis_host_api* host, const char* config, void** instance,
                               trellis_error* err) noexcept {
    *instance = nullptr;
    return Guard(err, [&] { *instance = new T(Host(host), Json::parse(config)); });
  }
  static trellis_status Reconfigure(void* inst, const char* config, trellis_error* err) noexcept {
    return Guard(err, [&] {
      if constexpr (requires(T& t, const Json& j) { t.Reconfigure(j); }) {
        Self(inst)->Reconfigure(Json::parse(config));
      } else {
        throw sdk::Error(TRELLIS_E_UNIMPLEMENTED, "this plugin cannot be reconfigured live");
      }
    });
  }
  static trellis_status Status(void* inst, trellis_sink* out, trellis_error* err) noexcept {
    return Guard(err, [&] {
      if constexpr (requires(T& t) { { t.Status() } -> std::convertible_to<Json>; }) {
        WriteJson(out, Self(inst)->Status());
      } else {
        WriteJson(out, Json{{"healthy", true}, {"degraded", false}, {"message", ""}});
      }
    });
  }
  static trellis_status Deactivate(void* inst, trellis_error* err) noexcept {
    return Guard(err, [&] {
      if constexpr (requires(T& t) { t.Deactivate(); }) Self(inst)->Deactivate();
    });
  }
  static void Destroy(void* inst) noexcept {
    try {
      delete Self(inst);
    } catch (...) {
      // A destructor that throws has already lost; never let it cross.
    }
  }

  // ipam
  static trellis_status Allocate(void* inst, const trellis_pod* pod, trellis_address* out,
                                 uint32_t cap, uint32_t* n_out, trellis_error* err) noexcept {
    return Guard(err, [&] { CopyOut(Self(inst)->Allocate(Pod::FromC(pod)), out, cap, n_out); });
  }
  static trellis_status Release(void* inst, const trellis_pod* pod, trellis_error* err) noexcept {
    return Guard(err, [&] { Self(inst)->Release(Pod::FromC(pod)); });
  }
  static trellis_status CheckAllocation(void* inst, const trellis_pod* pod,
                                        trellis_error* err) noexcept {
    return Guard(err, [&] { Self(inst)->CheckAllocation(Pod::FromC(pod)); });
  }
  static trellis_status GcAllocations(void* inst, const trellis_pod_ref* live, uint32_t n,
                                      trellis_error* err) noexcept {
    return Guard(err, [&] { Self(inst)->GcAllocations(Refs(live, n)); });
  }
  static trellis_status ListAllocations(void* inst, trellis_sink* out,
                                        trellis_error* err) noexcept {
    return Guard(err, [&] { WriteJson(out, Self(inst)->ListAllocations()); });
  }

  // address source
  static trellis_status Acquire(void* inst, const trellis_pod* pod, uint8_t family, uint32_t count,
                                trellis_address* out, uint32_t cap, uint32_t* n_out,
                                trellis_error* err) noexcept {
    return Guard(err, [&] {
      CopyOut(Self(inst)->AcquireAddresses(Pod::FromC(pod), family, count), out, cap, n_out);
    });
  }
  static trellis_status ReleaseAddrs(void* inst, const trellis_address* a, uint32_t n,
                                     trellis_error* err) noexcept {
    return Guard(err, [&] {
      std::vector<Address> v;
      for (uint32_t i = 0; i < n; ++i) v.push_back(Address::FromC(a[i]));
      Self(inst)->ReleaseAddresses(v);
    });
  }

  // qos
  static trellis_status ApplyQos(void* inst, const trellis_pod* pod, trellis_error* err) noexcept {
    return Guard(err, [&] { Self(inst)->ApplyQos(Pod::FromC(pod)); });
  }
  static trellis_status RemoveQos(void* inst, const trellis_pod* pod, trellis_error* err) noexcept {
    return Guard(err, [&] { Self(inst)->RemoveQos(Pod::FromC(pod)); });
  }
  static trellis_status CheckQos(void* inst, const trellis_pod* pod, trellis_error* err) noexcept {
    return Guard(err, [&] { Self(inst)->CheckQos(Pod::FromC(pod)); });
  }
  static trellis_status GcQos(void* inst, const trellis_pod_ref* live, uint32_t n,
                              trellis_error* err) noexcept {
    return Guard(err, [&] { Self(inst)->GcQos(Refs(live, n)); });
  }

  // policy
  static trellis_status UpsertPod(void* inst, const trellis_pod* pod, trellis_error* err) noexcept {
    return Guard(err, [&] { Self(inst)->UpsertPod(Pod::FromC(pod)); });
  }
  static trellis_status RemovePod(void* inst, const trellis_pod* pod, trellis_error* err) noexcept {
    return Guard(err, [&] { Self(inst)->RemovePod(Pod::FromC(pod)); });
  }
  static trellis_status CheckPolicy(void* inst, const trellis_pod* pod,
                                    trellis_error* err) noexcept {
    return Guard(err, [&] { Self(inst)->CheckPolicy(Pod::FromC(pod)); });
  }
  static trellis_status GcPolicy(void* inst, const trellis_pod_ref* live, uint32_t n,
                                 trellis_error* err) noexcept {
    return Guard(err, [&] { Self(inst)->GcPolicy(Refs(live, n)); });
  }
  static trellis_status UpsertNamespace(void* inst, const char* name, const trellis_kv* labels,
                                        uint32_t n, trellis_error* err) noexcept {
    return Guard(err, [&] {
      Labels l;
      for (uint32_t i = 0; i < n; ++i) l[labels[i].key] = labels[i].value;
      Self(inst)->UpsertNamespace(name, l);
    });
  }
  static trellis_status UpsertPolicy(void* inst, const char* key, const char* manifest,
                                     trellis_error* err) noexcept {
    return Guard(err, [&] {
      Self(inst)->UpsertPolicy(key, manifest == nullptr ? std::optional<Json>()
                                                        : std::optional<Json>(Json::parse(manifest)));
    });
  }
  static trellis_status Explain(void* inst, const char* req, trellis_sink* out,
                                trellis_error* err) noexcept {
    return Guard(err, [&] { WriteJson(out, Self(inst)->Explain(Json::parse(req))); });
  }

  // eni
  static trellis_status PoolStatus(void* inst, trellis_sink* out, trellis_error* err) noexcept {
    return Guard(err, [&] { WriteJson(out, Self(inst)->PoolStatus()); });
  }
  static trellis_status EnsurePool(void* inst, trellis_error* err) noexcept {
    return Guard(err, [&] { Self(inst)->EnsurePool(); });
  }
  static trellis_status GcEnis(void* inst, trellis_error* err) noexcept {
    return Guard(err, [&] { Self(inst)->GcEnis(); });
  }

  // secgroup
  static trellis_status Reconcile(void* inst, uint32_t flags, trellis_sink* out,
                                  trellis_error* err) noexcept {
    return Guard(err, [&] {
      WriteJson(out, Self(inst)->Reconcile((flags & TRELLIS_SECGROUP_SYNC_DRY_RUN) != 0));
    });
  }
  static trellis_status SetLeader(void* inst, int32_t leader, trellis_error* err) noexcept {
    return Guard(err, [&] { Self(inst)->SetLeader(leader != 0); });
  }
};

// Builds the static descriptor for T once, on first use.
template <class T>
const trellis_plugin_descriptor* Describe() {
  using K = Thunks<T>;
  static const trellis_ipam_ops ipam = [] {
    trellis_ipam_ops o{};
    o.struct_size = sizeof o;
    o.version = TRELLIS_IPAM_VERSION;
    if constexpr (ImplementsIpam<T>) {
      o.allocate = &K::Allocate;
      o.release = &K::Release;
      if constexpr (requires(T& t, const Pod& p) { t.CheckAllocation(p); })
        o.check = &K::CheckAllocation;
      if constexpr (requires(T& t, const std::vector<PodRef>& l) { t.GcAllocations(l); })
        o.gc = &K::GcAllocations;
      if constexpr (requires(T& t) { { t.ListAllocations() } -> std::convertible_to<Json>; })
        o.list = &K::ListAllocations;
    }
    return o;
  }();
  static const trellis_address_source_ops source = [] {
    trellis_address_source_ops o{};
    o.struct_size = sizeof o;
    o.version = TRELLIS_ADDRESS_SOURCE_VERSION;
    if constexpr (ImplementsAddressSource<T>) {
      o.acquire = &K::Acquire;
      o.release = &K::ReleaseAddrs;
    }
    return o;
  }();
  static const trellis_qos_ops qos = [] {
    trellis_qos_ops o{};
    o.struct_size = sizeof o;
    o.version = TRELLIS_QOS_VERSION;
    if constexpr (ImplementsQos<T>) {
      o.apply = &K::ApplyQos;
      o.remove = &K::RemoveQos;
      if constexpr (requires(T& t, const Pod& p) { t.CheckQos(p); }) o.check = &K::CheckQos;
      if constexpr (requires(T& t, const std::vector<PodRef>& l) { t.GcQos(l); }) o.gc = &K::GcQos;
    }
    return o;
  }();
  static const trellis_policy_ops policy = [] {
    trellis_policy_ops o{};
    o.struct_size = sizeof o;
    o.version = TRELLIS_POLICY_VERSION;
    if constexpr (ImplementsPolicy<T>) {
      o.pod_upsert = &K::UpsertPod;
      o.pod_remove = &K::RemovePod;
      if constexpr (requires(T& t, const Pod& p) { t.CheckPolicy(p); }) o.check = &K::CheckPolicy;
      if constexpr (requires(T& t, const std::vector<PodRef>& l) { t.GcPolicy(l); })
        o.gc = &K::GcPolicy;
      if constexpr (requires(T& t, const std::string& n, const Labels& l) {
                      t.UpsertNamespace(n, l);
                    })
        o.namespace_upsert = &K::UpsertNamespace;
      if constexpr (requires(T& t, const std::string& k, const std::optional<Json>& m) {
                      t.UpsertPolicy(k, m);
                    })
        o.policy_upsert = &K::UpsertPolicy;
      if constexpr (requires(T& t, const Json& r) { { t.Explain(r) } -> std::convertible_to<Json>; })
        o.explain = &K::Explain;
    }
    return o;
  }();
  static const trellis_eni_ops eni = [] {
    trellis_eni_ops o{};
    o.struct_size = sizeof o;
    o.version = TRELLIS_ENI_VERSION;
    if constexpr (ImplementsEni<T>) {
      o.pool_status = &K::PoolStatus;
      if constexpr (requires(T& t) { t.EnsurePool(); }) o.ensure_pool = &K::EnsurePool;
      if constexpr (requires(T& t) { t.GcEnis(); }) o.gc = &K::GcEnis;
    }
    return o;
  }();
  static const trellis_secgroup_ops secgroup = [] {
    trellis_secgroup_ops o{};
    o.struct_size = sizeof o;
    o.version = TRELLIS_SECGROUP_VERSION;
    if constexpr (ImplementsSecgroup<T>) {
      o.reconcile = &K::Reconcile;
      if constexpr (requires(T& t) { t.SetLeader(true); }) o.set_leader = &K::SetLeader;
    }
    return o;
  }();
  static const trellis_plugin_descriptor d = [] {
    trellis_plugin_descriptor o{};
    o.struct_size = sizeof o;
    o.abi_major = TRELLIS_ABI_MAJOR;
    o.abi_minor = TRELLIS_ABI_MINOR;
    o.name = T::kName;
    o.version = T::kVersion;
    if constexpr (requires { T::kDescription; }) {
      o.description = T::kDescription;
    } else {
      o.description = "";
    }
    o.validate = &K::Validate;
    o.create = &K::Create;
    o.reconfigure = &K::Reconfigure;
    o.status = &K::Status;
    o.deactivate = &K::Deactivate;
    o.destroy = &K::Destroy;
    o.ipam = ImplementsIpam<T> ? &ipam : nullptr;
    o.address_source = ImplementsAddressSource<T> ? &source : nullptr;
    o.qos = ImplementsQos<T> ? &qos : nullptr;
    o.policy = ImplementsPolicy<T> ? &policy : nullptr;
    o.eni = ImplementsEni<T> ? &eni : nullptr;
    o.secgroup = ImplementsSecgroup<T> ? &secgroup : nullptr;
    return o;
  }();
  return &d;
}

}  // namespace detail
}  // namespace trellis::sdk

// Exports the plugin's single entry symbol for class T. Use once per plugin.
#define TRELLIS_PLUGIN(T)                                                                   \
  extern "C" __attribute__((visibility("default"))) const trellis_plugin_descriptor*       \
  trellis_plugin_entry_v1(void) {                                                          \
    return ::trellis::sdk::detail::Describe<T>();                                          \
  }                                                                                        \
  static_assert(sizeof(T) > 0, "TRELLIS_PLUGIN needs a complete class")

#endif  // TRELLIS_PLUGIN_HPP_
