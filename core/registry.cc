#include "core/registry.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

#include "core/store.h"

namespace trellis {
namespace {

// Position in the pod pipeline: providers first, consumers after.
int Rank(const PluginDescriptor& d) {
  if (d.has_address_source || d.has_eni) return 0;
  if (d.has_ipam) return 1;
  if (d.has_qos) return 2;
  if (d.has_policy) return 3;
  if (d.has_secgroup) return 4;
  return 5;
}

std::string Join(const std::vector<std::string>& v, const std::string& sep) {
  std::string o;
  for (const auto& s : v) o += (o.empty() ? "" : sep) + s;
  return o;
}

}  // namespace

std::shared_ptr<Module> ModuleSet::Find(const std::string& name) const {
  for (const auto& m : all) {
    if (m->name() == name) return m;
  }
  return nullptr;
}

StatusOr<PreparedModule> PrepareModule(const ModuleConfig& config,
                                       const std::filesystem::path& plugin_dir,
                                       std::shared_ptr<LoadedPlugin> loaded) {
  const std::string key = "modules." + config.name;
  std::shared_ptr<LoadedPlugin> plugin = std::move(loaded);
  if (!plugin) {
    auto r = LoadedPlugin::Load(PluginPath(plugin_dir, config.plugin));
    if (!r.ok()) {
      return Status(r.status().code(), key + ".plugin: " + std::string(r.status().message()));
    }
    plugin = *std::move(r);
  }
  const std::string cfg = config.config.dump();
  char buf[1024] = {};
  trellis_error err{buf, sizeof buf};
  trellis_status st = plugin->descriptor().d.validate(cfg.c_str(), &err);
  if (st != TRELLIS_OK) {
    return absl::InvalidArgumentError(key + ".config: " +
                                      (buf[0] ? std::string(buf) : "refused by the plugin"));
  }
  return PreparedModule{config, std::move(plugin)};
}

ModuleRegistry::ModuleRegistry(std::filesystem::path plugin_dir, Store* store,
                               MetricsRegistry* metrics)
    : plugin_dir_(std::move(plugin_dir)), store_(store), metrics_(metrics) {
  current_ = std::make_shared<ModuleSet>();
  auto reg = [&](MetricType t, const char* name, const char* help,
                 std::vector<std::string> labels = {"module"}) {
    auto id = metrics_->Register(t, name, help, labels);
    return id.ok() ? Metric(metrics_, *id) : Metric();
  };
  m_load_failures_ = reg(MetricType::kCounter, "trellis_plugin_load_failures_total",
                         "Plugins refused or failed at load, validate or create.");
  m_reloads_ = reg(MetricType::kCounter, "trellis_module_reloads_total",
                   "Config transitions applied to a module (start, reconfigure, stop), by result "
                   "(ok, failed).",
                   {"module", "result"});
  m_reload_failed_ = reg(MetricType::kGauge, "trellis_module_last_reload_failed",
                         "1 while the module's last config change failed (refused by its "
                         "validate(), or its create() or reconfigure() failed); the error is in "
                         "`trellisctl modules`.");
  m_enabled_ = reg(MetricType::kGauge, "trellis_module_enabled",
                   "1 when the node config enables the module.");
  m_healthy_ = reg(MetricType::kGauge, "trellis_module_healthy",
                   "1 when the module runs and reports itself healthy.");
}

ModuleRegistry::~ModuleRegistry() { Shutdown(); }

void ModuleRegistry::Publish() {
  auto set = std::make_shared<ModuleSet>();
  for (auto& [name, e] : entries_) {
    if (e.module) set->all.push_back(e.module);
  }
  std::stable_sort(set->all.begin(), set->all.end(), [](const auto& a, const auto& b) {
    return Rank(a->descriptor()) < Rank(b->descriptor());
  });
  for (const auto& m : set->all) {
    if (m->has_ipam()) set->ipam = m;
    if (m->has_address_source()) set->address_source = m;
    if (m->has_qos()) set->qos = m;
    if (m->has_policy()) set->policy = m;
    if (m->has_eni()) set->eni = m;
    if (m->has_secgroup()) set->secgroup = m;
  }
  current_ = std::move(set);
}

std::shared_ptr<const ModuleSet> ModuleRegistry::Current() const {
  std::lock_guard lock(entries_mu_);
  return current_;
}

Status ModuleRegistry::Apply(const NodeConfig& next) {
  std::unique_lock transition(transition_mu_);

  enum class Kind { kKeep, kStart, kStop, kReconfigure, kReplace, kDisabled };
  struct Plan {
    Kind kind;
    std::string name;
    ModuleConfig config;
    std::shared_ptr<LoadedPlugin> plugin;  // for kStart / kReplace
  };
  std::vector<Plan> plans;
  std::vector<std::string> errors;

  std::set<std::string> names;
  {
    std::lock_guard lock(entries_mu_);
    for (const auto& [n, e] : entries_) names.insert(n);
  }
  for (const auto& [n, m] : next.modules) names.insert(n);

  // Phase 1: load and validate everything; nothing changes yet.
  for (const auto& name : names) {
    std::shared_ptr<Module> running;
    ModuleConfig current_config;
    {
      std::lock_guard lock(entries_mu_);
      if (auto it = entries_.find(name); it != entries_.end()) {
        running = it->second.module;
        current_config = it->second.config;
      }
    }
    auto want = next.modules.find(name);
    bool enable = want != next.modules.end() && want->second.enabled;
    if (!enable) {
      ModuleConfig cfg = want != next.modules.end() ? want->second : ModuleConfig{name};
      plans.push_back({running ? Kind::kStop : Kind::kDisabled, name, cfg, nullptr});
      continue;
    }
    const ModuleConfig& cfg = want->second;
    auto path = PluginPath(plugin_dir_, cfg.plugin);
    std::shared_ptr<LoadedPlugin> reuse;
    if (running && running->plugin()->path() == path && running->plugin()->SameFile(path)) {
      reuse = running->plugin();
    }
    auto prepared = PrepareModule(cfg, plugin_dir_, reuse);
    if (!prepared.ok()) {
      if (prepared.status().code() != absl::StatusCode::kInvalidArgument) {
        m_load_failures_.Add({name});
      }
      errors.emplace_back(prepared.status().message());
      // The module keeps running its previous config; it carries the refusal
      // as its last reload error until a config for it is accepted.
      std::lock_guard lock(entries_mu_);
      if (auto it = entries_.find(name); it != entries_.end()) {
        it->second.last_error = std::string(prepared.status().message());
      }
      continue;
    }
    Kind kind;
    if (!running) kind = Kind::kStart;
    else if (prepared->plugin != running->plugin()) kind = Kind::kReplace;
    else if (cfg.config != running->config().config) kind = Kind::kReconfigure;
    else kind = Kind::kKeep;
    plans.push_back({kind, name, cfg, prepared->plugin});
  }
  if (!errors.empty()) {
    RefreshSnapshot();
    return absl::InvalidArgumentError("config refused, running modules unchanged: " +
                                      Join(errors, "; "));
  }

  // One provider per interface in the resulting set.
  std::map<std::string, std::vector<std::string>> providers;
  for (const auto& p : plans) {
    if (p.kind == Kind::kStop || p.kind == Kind::kDisabled) continue;
    for (const auto& iface : p.plugin->descriptor().Interfaces()) providers[iface].push_back(p.name);
  }
  for (const auto& [iface, mods] : providers) {
    if (mods.size() > 1) {
      return absl::FailedPreconditionError("config refused, running modules unchanged: modules " +
                                           Join(mods, " and ") + " both provide the " + iface +
                                           " interface; enable only one");
    }
  }

  // Transitions that would strand running pods are refused.
  size_t pods = observer_ != nullptr ? observer_->PodCount() : 0;
  if (pods > 0) {
    auto current = Current();
    bool ipam_after = providers.contains("ipam");
    for (const auto& p : plans) {
      if (p.kind != Kind::kStop && p.kind != Kind::kReplace) continue;
      auto m = current->Find(p.name);
      if (!m) continue;
      if (m->has_ipam()) {
        return absl::FailedPreconditionError(
            "config refused, running modules unchanged: " +
            std::string(p.kind == Kind::kStop ? "disabling" : "replacing the plugin of") +
            " module " + p.name + " (ipam) while " + std::to_string(pods) +
            " pods hold its addresses would strand them; delete those pods first");
      }
      if (m->has_address_source() && ipam_after) {
        return absl::FailedPreconditionError(
            "config refused, running modules unchanged: " +
            std::string(p.kind == Kind::kStop ? "disabling" : "replacing the plugin of") +
            " module " + p.name + " (address source) while " + std::to_string(pods) +
            " pods may hold its addresses; delete those pods first");
      }
    }
  }

  // Phase 2: transitions. Stops last-to-first in pipeline order, then
  // reconfigures, then starts first-to-last.
  auto rank_of = [&](const Plan& p) {
    if (p.plugin) return Rank(p.plugin->descriptor());
    auto m = Current()->Find(p.name);
    return m ? Rank(m->descriptor()) : 5;
  };
  std::stable_sort(plans.begin(), plans.end(),
                   [&](const Plan& a, const Plan& b) { return rank_of(a) < rank_of(b); });

  auto stop = [&](const std::string& name) {
    std::shared_ptr<Module> m;
    {
      std::lock_guard lock(entries_mu_);
      m = entries_[name].module;
    }
    if (!m) return;
    if (observer_ != nullptr) observer_->ModuleStopping(*m);
    if (Status s = m->Deactivate(); !s.ok()) {
      spdlog::error("module {}: removing its node-level effects failed: {}", name, s.message());
    }
    {
      std::lock_guard lock(entries_mu_);
      entries_[name].module.reset();
      Publish();
    }
    m.reset();  // destroy() runs when the last holder lets go
    spdlog::info("module {} stopped", name);
  };

  std::vector<std::string> failures;
  for (auto it = plans.rbegin(); it != plans.rend(); ++it) {
    if (it->kind == Kind::kStop || it->kind == Kind::kReplace) {
      stop(it->name);
      m_reloads_.Add({it->name, "ok"});
    }
  }
  for (auto& p : plans) {
    Entry* e;
    {
      std::lock_guard lock(entries_mu_);
      e = &entries_[p.name];
      e->config = p.config;
    }
    switch (p.kind) {
      case Kind::kDisabled:
      case Kind::kStop:
        e->plugin_path.clear();
        e->last_error.clear();
        if (p.kind == Kind::kStop) e->reload_count++;
        break;
      case Kind::kKeep:
        e->last_error.clear();  // what runs is what the config asks for
        break;
      case Kind::kReconfigure: {
        std::shared_ptr<Module> m = e->module;
        Status s = m->Reconfigure(p.config);
        e->reload_count++;
        m_reloads_.Add({p.name, s.ok() ? "ok" : "failed"});
        if (!s.ok()) {
          e->last_error = std::string(s.message());
          failures.push_back(e->last_error);
          spdlog::error("module {}: reconfigure failed, it keeps its previous config: {}", p.name,
                        s.message());
        } else {
          e->last_error.clear();
          spdlog::info("module {} reconfigured", p.name);
        }
        break;
      }
      case Kind::kStart:
      case Kind::kReplace: {
        auto m = Module::Create(p.config, p.plugin, store_, metrics_, this);
        e->reload_count++;
        e->plugin_path = p.plugin->path().string();
        m_reloads_.Add({p.name, m.ok() ? "ok" : "failed"});
        if (!m.ok()) {
          e->last_error = std::string(m.status().message());
          failures.push_back(e->last_error);
          m_load_failures_.Add({p.name});
          spdlog::error("module {} failed to start: {}", p.name, m.status().message());
          break;
        }
        std::shared_ptr<Module> module = *std::move(m);
        {
          std::lock_guard lock(entries_mu_);
          e->module = module;
          e->last_error.clear();
          Publish();
        }
        spdlog::info("module {} started: plugin {} {} (ABI {}) from {}", p.name,
                     p.plugin->descriptor().name, p.plugin->descriptor().version,
                     p.plugin->descriptor().AbiVersion(), p.plugin->path().string());
        if (observer_ != nullptr) observer_->ModuleStarted(*module);
        break;
      }
    }
  }
  {
    std::lock_guard lock(entries_mu_);
    for (auto it = entries_.begin(); it != entries_.end();) {
      bool in_config = next.modules.contains(it->first);
      m_enabled_.Set({it->first}, in_config && it->second.config.enabled ? 1 : 0);
      if (!in_config && !it->second.module) {
        m_enabled_.Forget({it->first});
        m_healthy_.Forget({it->first});
        m_reload_failed_.Forget({it->first});
        it = entries_.erase(it);
      } else {
        ++it;
      }
    }
  }
  RefreshSnapshot();
  if (!failures.empty()) return absl::UnavailableError(Join(failures, "; "));
  return absl::OkStatus();
}

std::vector<ModuleInfo> ModuleRegistry::Describe() const {
  auto reader = TryReaderLock();
  if (!reader.owns_lock()) {
    std::lock_guard lock(snapshot_mu_);
    return snapshot_;
  }
  auto out = DescribeLocked();
  std::lock_guard lock(snapshot_mu_);
  snapshot_ = out;
  return out;
}

void ModuleRegistry::RefreshSnapshot() const {
  auto out = DescribeLocked();
  std::lock_guard lock(snapshot_mu_);
  snapshot_ = std::move(out);
}

std::vector<ModuleInfo> ModuleRegistry::DescribeLocked() const {
  std::vector<std::pair<Entry, std::shared_ptr<Module>>> snapshot;
  {
    std::lock_guard lock(entries_mu_);
    for (const auto& [n, e] : entries_) snapshot.emplace_back(e, e.module);
  }
  std::vector<ModuleInfo> out;
  for (const auto& [e, m] : snapshot) {
    ModuleInfo i;
    i.name = e.config.name;
    i.enabled = e.config.enabled;
    i.reload_count = e.reload_count;
    i.last_error = e.last_error;
    i.plugin_path = e.plugin_path;
    if (m) {
      const auto& d = m->descriptor();
      i.state = "running";
      i.plugin_name = d.name;
      i.plugin_version = d.version;
      i.abi_version = d.AbiVersion();
      i.interfaces = d.Interfaces();
      auto st = m->QueryStatus();
      if (st.ok() && st->is_object()) {
        i.status = *st;
        i.healthy = st->value("healthy", true);
        i.degraded = st->value("degraded", false);
        i.message = st->value("message", "");
      } else {
        i.healthy = false;
        i.message = st.ok() ? "status is not a JSON object" : std::string(st.status().message());
      }
    } else {
      i.state = e.config.enabled ? "failed" : "disabled";
      i.message = e.last_error;
    }
    m_healthy_.Set({i.name}, i.healthy ? 1 : 0);
    m_reload_failed_.Set({i.name}, i.last_error.empty() ? 0 : 1);
    out.push_back(std::move(i));
  }
  return out;
}

bool ModuleRegistry::AllHealthy(std::string* why) const {
  for (const auto& i : Describe()) {
    if (!i.enabled) continue;
    if (i.state != "running" || !i.healthy) {
      if (why != nullptr) *why = "module " + i.name + " is " + i.state + ": " + i.message;
      return false;
    }
  }
  return true;
}

void ModuleRegistry::Shutdown() {
  std::unique_lock transition(transition_mu_);
  std::vector<std::shared_ptr<Module>> order;
  {
    std::lock_guard lock(entries_mu_);
    order = current_->all;
    for (auto& [n, e] : entries_) e.module.reset();
    current_ = std::make_shared<ModuleSet>();
  }
  while (!order.empty()) order.pop_back();  // last in pipeline order first
}

Status ModuleRegistry::AcquireAddresses(const trellis_pod* pod, uint8_t family, uint32_t count,
                                        trellis_address* out, uint32_t capacity,
                                        uint32_t* n_out) {
  auto set = Current();
  if (!set->address_source) {
    return absl::UnavailableError(
        "no enabled module provides an address source (enable eni, or give ipam local ranges)");
  }
  return set->address_source->SourceAcquire(pod, family, count, out, capacity, n_out);
}

Status ModuleRegistry::ReleaseAddresses(const trellis_address* addresses, uint32_t count) {
  auto set = Current();
  if (!set->address_source) {
    return absl::UnavailableError("no enabled module provides an address source");
  }
  return set->address_source->SourceRelease(addresses, count);
}

void ModuleRegistry::HealthChanged(const std::string& module, const std::string& reason) {
  spdlog::info("module {} reports a health change: {}", module, reason);
}

}  // namespace trellis
