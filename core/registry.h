// The module registry: turns a node config into running modules, and a new
// node config into the smallest set of transitions (start, stop, reconfigure,
// replace), validated in full before anything changes.
#ifndef TRELLIS_CORE_REGISTRY_H_
#define TRELLIS_CORE_REGISTRY_H_

#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/metrics.h"
#include "core/module.h"
#include "core/status.h"

namespace trellis {

class Store;

// The running modules at one moment, by the interface they provide. Immutable;
// a transition publishes a new one.
struct ModuleSet {
  std::vector<std::shared_ptr<Module>> all;  // in pipeline order
  std::shared_ptr<Module> ipam, address_source, qos, policy, eni, secgroup;
  std::shared_ptr<Module> Find(const std::string& name) const;
};

// Told about transitions so that a module's effects on existing pods follow
// it: the pod pipeline implements this.
class ModuleObserver {
 public:
  virtual ~ModuleObserver() = default;
  // After `m` started: bring its piece onto every existing pod.
  virtual void ModuleStarted(Module& m) = 0;
  // Before `m` is disabled (then deactivated and destroyed): remove its piece
  // from every existing pod.
  virtual void ModuleStopping(Module& m) = 0;
  // How many pods the node holds (disabling ipam under them is refused).
  virtual size_t PodCount() = 0;
};

struct ModuleInfo {
  std::string name;
  bool enabled = false;
  std::string state;  // running | failed | disabled
  std::string plugin_path;
  std::string plugin_name, plugin_version, abi_version;
  std::vector<std::string> interfaces;
  bool healthy = false;
  bool degraded = false;
  std::string message;
  uint64_t reload_count = 0;
  std::string last_error;
  Json status;  // the plugin's status document
};

// A module's plugin, loaded and with its config validated, not yet created.
struct PreparedModule {
  ModuleConfig config;
  std::shared_ptr<LoadedPlugin> plugin;
};
// Loads <plugin_dir>/<config.plugin>.so (or reuses `loaded` if it is the same
// file) and runs its validate(). Errors name the config key.
StatusOr<PreparedModule> PrepareModule(const ModuleConfig& config,
                                       const std::filesystem::path& plugin_dir,
                                       std::shared_ptr<LoadedPlugin> loaded = nullptr);

class ModuleRegistry : public HostServices {
 public:
  ModuleRegistry(std::filesystem::path plugin_dir, Store* store, MetricsRegistry* metrics);
  ~ModuleRegistry() override;

  void SetObserver(ModuleObserver* observer) { observer_ = observer; }

  // Validates `next` completely, then applies it. An invalid config changes
  // nothing and returns InvalidArgument naming the key; a refused transition
  // returns FailedPrecondition. A module whose create() or reconfigure() fails
  // is reported in the returned status; the others are applied.
  Status Apply(const NodeConfig& next);

  // The running modules now. Pod operations hold `ReaderLock()` for their
  // duration, so that no module is reconfigured or stopped under them.
  std::shared_ptr<const ModuleSet> Current() const;
  std::shared_lock<std::shared_mutex> ReaderLock() const { return std::shared_lock(transition_mu_); }

  // Never waits for a transition: while one holds the registry (a module's
  // create() may wait on a cloud API for minutes), it answers the snapshot
  // taken when the last transition ended, so that scrapes, probes and
  // trellisctl keep answering. Otherwise it asks every running module's
  // status() (which the ABI forbids during that module's reconfigure()).
  std::vector<ModuleInfo> Describe() const;
  // True when every enabled module runs and says it is healthy.
  bool AllHealthy(std::string* why) const;
  // Like ReaderLock(), but does not wait: check owns_lock().
  std::shared_lock<std::shared_mutex> TryReaderLock() const {
    return std::shared_lock(transition_mu_, std::try_to_lock);
  }
  const std::filesystem::path& plugin_dir() const { return plugin_dir_; }

  // Stops every module without removing its effects (daemon exit).
  void Shutdown();

  // HostServices
  Status AcquireAddresses(const trellis_pod* pod, uint8_t family, uint32_t count,
                          trellis_address* out, uint32_t capacity, uint32_t* n_out) override;
  Status ReleaseAddresses(const trellis_address* addresses, uint32_t count) override;
  void HealthChanged(const std::string& module, const std::string& reason) override;

 private:
  struct Entry {
    ModuleConfig config;  // the config last asked for
    std::shared_ptr<Module> module;
    std::string plugin_path;
    std::string last_error;
    uint64_t reload_count = 0;
  };
  void Publish();
  // Requires transition_mu_ held, shared or exclusive.
  std::vector<ModuleInfo> DescribeLocked() const;
  void RefreshSnapshot() const;  // DescribeLocked() into snapshot_

  const std::filesystem::path plugin_dir_;
  Store* store_;
  MetricsRegistry* metrics_;
  ModuleObserver* observer_ = nullptr;

  mutable std::shared_mutex transition_mu_;  // exclusive during transitions
  mutable std::mutex entries_mu_;            // guards entries_ and current_
  std::map<std::string, Entry> entries_;
  std::shared_ptr<const ModuleSet> current_;

  mutable std::mutex snapshot_mu_;
  mutable std::vector<ModuleInfo> snapshot_;  // the last complete Describe()

  Metric m_load_failures_, m_reloads_, m_enabled_, m_healthy_, m_reload_failed_;
};

}  // namespace trellis

#endif  // TRELLIS_CORE_REGISTRY_H_
