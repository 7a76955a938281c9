// A running module: one plugin instance, the host API handed to it, and typed
// wrappers around its ops that turn ABI status codes into absl::Status.
#ifndef TRELLIS_CORE_MODULE_H_
#define TRELLIS_CORE_MODULE_H_

#include <trellis/types.hpp>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/plugin_loader.h"
#include "core/status.h"

namespace trellis {

class Store;
class MetricsRegistry;

// What the host offers modules beyond storage and metrics; the registry
// implements it by routing to whichever module provides the service.
class HostServices {
 public:
  virtual ~HostServices() = default;
  virtual Status AcquireAddresses(const trellis_pod* pod, uint8_t family, uint32_t count,
                                  trellis_address* out, uint32_t capacity, uint32_t* n_out) = 0;
  virtual Status ReleaseAddresses(const trellis_address* addresses, uint32_t count) = 0;
  virtual void HealthChanged(const std::string& module, const std::string& reason) = 0;
};

class Module {
 public:
  // Calls the plugin's create(). The plugin has validated `config` before.
  static StatusOr<std::unique_ptr<Module>> Create(const ModuleConfig& config,
                                                  std::shared_ptr<LoadedPlugin> plugin,
                                                  Store* store, MetricsRegistry* metrics,
                                                  HostServices* services);
  // Calls destroy(), drops the module's metrics, then releases the library.
  ~Module();
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  const std::string& name() const { return config_.name; }
  const ModuleConfig& config() const { return config_; }
  const PluginDescriptor& descriptor() const { return plugin_->descriptor(); }
  const std::shared_ptr<LoadedPlugin>& plugin() const { return plugin_; }

  Status Reconfigure(const ModuleConfig& config);
  // The module is being disabled (not the daemon stopping): see abi.h.
  Status Deactivate();
  // The plugin's status() document: {"healthy","degraded","message",...}.
  StatusOr<Json> QueryStatus();

  bool has_ipam() const { return descriptor().has_ipam; }
  bool has_address_source() const { return descriptor().has_address_source; }
  bool has_qos() const { return descriptor().has_qos; }
  bool has_policy() const { return descriptor().has_policy; }
  bool has_eni() const { return descriptor().has_eni; }
  bool has_secgroup() const { return descriptor().has_secgroup; }

  // Ops. Optional ops the plugin lacks answer OK (check, gc) or Unimplemented.
  StatusOr<std::vector<sdk::Address>> IpamAllocate(const trellis_pod& pod);
  Status IpamRelease(const trellis_pod& pod);
  Status IpamCheck(const trellis_pod& pod);
  Status IpamGc(const std::vector<sdk::PodRef>& live);
  StatusOr<Json> IpamList();

  Status SourceAcquire(const trellis_pod* pod, uint8_t family, uint32_t count,
                       trellis_address* out, uint32_t capacity, uint32_t* n_out);
  Status SourceRelease(const trellis_address* addresses, uint32_t count);

  Status QosApply(const trellis_pod& pod);
  Status QosRemove(const trellis_pod& pod);
  Status QosCheck(const trellis_pod& pod);
  Status QosGc(const std::vector<sdk::PodRef>& live);

  Status PolicyUpsertPod(const trellis_pod& pod);
  Status PolicyRemovePod(const trellis_pod& pod);
  Status PolicyCheck(const trellis_pod& pod);
  Status PolicyGc(const std::vector<sdk::PodRef>& live);
  Status PolicyUpsertNamespace(const std::string& name, const sdk::Labels& labels);
  Status PolicyUpsertObject(const std::string& key, const std::optional<Json>& manifest);
  StatusOr<Json> PolicyExplain(const Json& request);

  StatusOr<Json> EniPoolStatus();
  Status EniEnsurePool();
  Status EniGc();

  StatusOr<Json> SecgroupReconcile(bool dry_run);
  Status SecgroupSetLeader(bool leader);

 private:
  struct Context;
  Module() = default;

  ModuleConfig config_;
  std::shared_ptr<LoadedPlugin> plugin_;
  std::unique_ptr<Context> ctx_;
  trellis_host_api api_{};
  void* instance_ = nullptr;
};

// Runs an ABI call with an error buffer and maps the result.
// `fn` receives a trellis_error* and returns a trellis_status.
template <class Fn>
Status CallPlugin(const std::string& module, const char* op, Fn&& fn) {
  char buf[1024] = {};
  trellis_error err{buf, sizeof buf};
  trellis_status st = fn(&err);
  if (st == TRELLIS_OK) return absl::OkStatus();
  std::string msg = buf[0] ? buf : "failed without a message";
  return FromAbi(st, "module " + module + ": " + op + ": " + msg);
}

// Parses a JSON document a plugin wrote; an unparsable one is the plugin's bug.
StatusOr<Json> ParsePluginJson(const std::string& module, const char* op, const std::string& text);

}  // namespace trellis

#endif  // TRELLIS_CORE_MODULE_H_
