// secgroup: keeps ECS security-group rules in line with the node config
// (Terway's security_conf.security_group_sync). Provides the secgroup
// interface: Reconcile (trellisctl secgroup diff / sync) and SetLeader (the
// host's election). The planning and applying is in reconciler.cc, the cloud
// client in plugins/common/aliyun.
//
// One writer per cluster: only the leader changes the cloud. Until the host
// elects one (SetLeader), the config decides: `leader: true|false`, or
// `leader_node: <name>` matched against this node's name (NODE_NAME, else
// the host name) so one ConfigMap serves every node. A standby makes no
// cloud call on its own and reports "standby" in its status; `trellisctl
// secgroup diff` still reads and plans on it, `sync` is refused there.
//
// The loop (one thread): a sync at start, every sync_interval, at once after
// Reconfigure or a change of leadership; after a failed sync sooner (5 s,
// doubling, at most sync_interval). destroy() cancels the cloud client's
// waits and joins it.
//
// Module disabled (Deactivate): the rules stay by default. They are cloud
// state shared by every node of the cluster, and disabling the module on
// one node (or in a config being rolled out) must not open or close traffic
// for the others. With revoke_on_disable: true the leader revokes the rules
// it owns (the revoke guard does not apply: it is an explicit request).
#include <unistd.h>
#include <trellis/plugin.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include "aliyun/clock.h"
#include "aliyun/cloud.h"
#include "aliyun/errors.h"
#include "config.h"
#include "reconciler.h"

namespace trellis::secgroup {
namespace {

using aliyun::CloudError;
using sdk::Error;

std::string NodeName() {
  if (const char* n = std::getenv("NODE_NAME"); n != nullptr && *n != '\0') return n;
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) == 0) return buf;
  return "";
}

double UnixSeconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// The module's metrics, registered with the host; also the cloud client's
// observer (every attempt of every call).
class Metrics : public aliyun::RpcObserver {
 public:
  explicit Metrics(sdk::Host host) : host_(host) {
    latency_ = host_.RegisterMetric(
        TRELLIS_METRIC_HISTOGRAM, "trellis_secgroup_openapi_request_duration_seconds",
        "ECS OpenAPI requests of the security-group sync (every attempt), by action and result "
        "code (OK when it succeeded).",
        {"action", "code"}, {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10});
    api_errors_ = host_.RegisterMetric(
        TRELLIS_METRIC_COUNTER, "trellis_secgroup_openapi_errors_total",
        "ECS OpenAPI attempts of the security-group sync that failed (retried ones included), by "
        "action and error code.",
        {"action", "code"});
    syncs_ = host_.RegisterMetric(TRELLIS_METRIC_COUNTER, "trellis_secgroup_syncs_total",
                                  "Security-group syncs, by result (in_sync, applied, dry_run, "
                                  "refused, failed, stopped).",
                                  {"result"});
    last_time_ =
        host_.RegisterMetric(TRELLIS_METRIC_GAUGE, "trellis_secgroup_last_sync_timestamp_seconds",
                             "When the last security-group sync ended (Unix time).");
    last_ok_ = host_.RegisterMetric(
        TRELLIS_METRIC_GAUGE, "trellis_secgroup_last_sync_success",
        "1 when the last sync left the groups as the config wants them (in_sync or applied).");
    added_ =
        host_.RegisterMetric(TRELLIS_METRIC_COUNTER, "trellis_secgroup_rules_added_total",
                             "Rules added to a security group by the sync.", {"security_group"});
    removed_ = host_.RegisterMetric(TRELLIS_METRIC_COUNTER, "trellis_secgroup_rules_removed_total",
                                    "Rules of ours revoked from a security group by the sync.",
                                    {"security_group"});
    drift_ = host_.RegisterMetric(
        TRELLIS_METRIC_COUNTER, "trellis_secgroup_drift_detected_total",
        "Syncs that found a security group differing from the config (rules missing or ours "
        "unexpected).",
        {"security_group"});
    drift_rules_ = host_.RegisterMetric(
        TRELLIS_METRIC_GAUGE, "trellis_secgroup_drift_rules",
        "Rules still differing after the last sync: missing (desired, not in the group) or "
        "unexpected (ours, no longer desired).",
        {"security_group", "kind"});
    managed_ = host_.RegisterMetric(TRELLIS_METRIC_GAUGE, "trellis_secgroup_managed_rules",
                                    "Rules of this cluster (owner mark) in a security group.",
                                    {"security_group"});
    refused_ = host_.RegisterMetric(
        TRELLIS_METRIC_GAUGE, "trellis_secgroup_refused_rules",
        "Configured rules not applied because they open to every address without "
        "allow_world_open.");
    leader_ = host_.RegisterMetric(TRELLIS_METRIC_GAUGE, "trellis_secgroup_leader",
                                   "1 when this node is the one that changes security groups.");
    for (const char* r : {"in_sync", "applied", "dry_run", "refused", "failed", "stopped"}) {
      host_.AddMetric(syncs_, {r}, 0);
    }
  }

  void OnAttempt(const std::string& action, const std::string& code, double seconds) override {
    host_.ObserveMetric(latency_, {action, code}, seconds);
    if (code != "OK") host_.AddMetric(api_errors_, {action, code}, 1);
  }

  void Leader(bool leader) { host_.SetMetric(leader_, {}, leader ? 1 : 0); }

  void Record(const SyncReport& rep, const std::set<std::string>& groups_before) {
    host_.AddMetric(syncs_, {rep.result}, 1);
    host_.SetMetric(last_time_, {}, UnixSeconds());
    host_.SetMetric(last_ok_, {}, rep.Ok() ? 1 : 0);
    host_.SetMetric(refused_, {}, static_cast<double>(rep.refused.size()));
    std::set<std::string> now;
    for (const GroupDiff& g : rep.groups) {
      now.insert(g.id);
      if (!g.error.empty()) continue;
      host_.AddMetric(added_, {g.id}, g.added);
      host_.AddMetric(removed_, {g.id}, g.removed);
      if (!g.to_add.empty() || !g.to_remove.empty()) host_.AddMetric(drift_, {g.id}, 1);
      host_.SetMetric(drift_rules_, {g.id, "missing"},
                      static_cast<double>(g.to_add.size()) - g.added);
      host_.SetMetric(drift_rules_, {g.id, "unexpected"},
                      static_cast<double>(g.to_remove.size()) - g.removed);
      host_.SetMetric(managed_, {g.id}, g.Managed() + g.added - g.removed);
    }
    // Groups no longer configured: their gauges go.
    for (const auto& id : groups_before) {
      if (now.contains(id)) continue;
      host_.ForgetMetric(drift_rules_, {id, "missing"});
      host_.ForgetMetric(drift_rules_, {id, "unexpected"});
      host_.ForgetMetric(managed_, {id});
    }
  }

 private:
  sdk::Host host_;
  uint32_t latency_, api_errors_, syncs_, last_time_, last_ok_, added_, removed_, drift_,
      drift_rules_, managed_, refused_, leader_;
};

class Secgroup {
 public:
  static constexpr const char* kName = "secgroup";
  static constexpr const char* kVersion = "1.0.0";
  static constexpr const char* kDescription =
      "Alibaba Cloud security-group sync: keeps ECS rules in line with the config (one writer "
      "per cluster, owner-marked rules, revoke guard)";

  static void Validate(const Json& config) { SecgroupConfig::Parse(config); }

  Secgroup(sdk::Host host, const Json& config)
      : host_(host),
        cfg_(std::make_shared<const SecgroupConfig>(SecgroupConfig::Parse(config))),
        metrics_(host),
        node_name_(NodeName()) {
    for (const auto& w : cfg_->warnings) host_.Warn(w);
    cloud_ = NewSession(*cfg_);
    host_.Info("ECS credentials from " + cloud_->CredentialSource() + "; " + RoleLine());
    metrics_.Leader(CurrentRole().leader);
    worker_ = std::thread([this] { Run(); });
  }

  // Daemon stop (and after Deactivate): the thread ends, the cloud stays.
  ~Secgroup() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    clock_.Cancel();
    cv_.notify_all();
    if (worker_.joinable()) worker_.join();
  }

  void Reconfigure(const Json& config) {
    auto next = std::make_shared<const SecgroupConfig>(SecgroupConfig::Parse(config));
    std::shared_ptr<aliyun::CloudSession> fresh;
    {
      std::lock_guard lock(mu_);
      if (!cfg_->cloud.SameAccess(next->cloud)) fresh = NewSession(*next);
    }
    for (const auto& w : next->warnings) host_.Warn(w);
    bool was_leader, is_leader;
    {
      std::lock_guard lock(mu_);
      was_leader = RoleLocked().leader;
      if (fresh) {
        cloud_ = fresh;
        host_.Info("cloud access changed; ECS credentials from " + fresh->CredentialSource());
      } else {
        cloud_->UpdateLimits(next->cloud);
      }
      cfg_ = next;
      is_leader = RoleLocked().leader;
      wake_ = true;
    }
    cv_.notify_all();
    if (was_leader != is_leader) RoleChanged();
  }

  void SetLeader(bool leader) {
    bool changed;
    {
      std::lock_guard lock(mu_);
      bool before = RoleLocked().leader;
      elected_ = leader;
      changed = before != leader;
      wake_ = true;
    }
    cv_.notify_all();
    if (changed) RoleChanged();
  }

  Json Status() {
    std::lock_guard lock(mu_);
    Role role = RoleLocked();
    Json s = {{"healthy", true},
              {"role", role.leader ? "leader" : "standby"},
              {"role_reason", role.reason},
              {"node", node_name_},
              {"dry_run", cfg_->dry_run},
              {"security_groups", cfg_->security_groups},
              {"rules", cfg_->rules.size()},
              {"owner", cfg_->Owner()},
              {"sync_interval_seconds", cfg_->sync_interval.count() / 1000.0},
              {"signing_with", cloud_->CredentialSource()}};
    bool degraded = false;
    std::string message;
    if (deactivated_) {
      message = "disabled";
    } else if (!role.leader) {
      message = "standby: " + role.reason;
    } else if (last_.is_null()) {
      message = "leader: first sync pending";
    } else {
      const std::string result = last_.value("result", "");
      degraded = result != "in_sync" && result != "applied" && result != "dry_run";
      message = "leader: last sync " + result + " at " + last_.value("started_at", "");
      const Json& reasons = last_["reasons"];
      if (degraded && reasons.is_array() && !reasons.empty()) {
        message += ": " + reasons.back().get<std::string>();
      }
    }
    s["degraded"] = degraded;
    s["message"] = message;
    if (!last_.is_null()) s["last_sync"] = last_;
    return s;
  }

  Json Reconcile(bool dry_run) {
    if (!dry_run) {
      std::lock_guard lock(mu_);
      if (deactivated_) throw Error(TRELLIS_E_PRECONDITION, "the module is being disabled");
      Role role = RoleLocked();
      if (!role.leader) {
        throw Error(TRELLIS_E_PRECONDITION,
                    "this node is standby (" + role.reason +
                        "): only the leader changes security groups; run the sync there, or "
                        "`trellisctl secgroup diff` here to see what it would do");
      }
    }
    SyncReport rep = Sync(dry_run ? "trellisctl secgroup diff" : "", !dry_run);
    Json j = rep.ToJson();
    j["text"] = rep.ToText();
    return j;
  }

  void Deactivate() {
    {
      std::lock_guard lock(mu_);
      deactivated_ = true;
    }
    std::lock_guard sync(sync_mu_);  // waits for a sync in flight
    std::shared_ptr<const SecgroupConfig> cfg;
    std::shared_ptr<aliyun::CloudSession> cloud;
    Role role;
    {
      std::lock_guard lock(mu_);
      cfg = cfg_;
      cloud = cloud_;
      role = RoleLocked();
    }
    if (!cfg->revoke_on_disable) {
      host_.Info("module disabled: the rules it manages (\"" + cfg->Owner() +
                 "\") stay in the security groups; set revoke_on_disable: true to have the "
                 "leader revoke them when the module is disabled");
      return;
    }
    if (!role.leader || cfg->dry_run) {
      host_.Info(std::string("module disabled: revoke_on_disable is set, but this node ") +
                 (cfg->dry_run ? "runs with dry_run" : "is standby") + "; nothing revoked here");
      return;
    }
    SecgroupConfig none = *cfg;
    none.rules.clear();
    none.max_revoke_fraction = 1.0;
    Reconciler rec(cloud.get(), none,
                   [this](int level, const std::string& m) { host_.Log(level, m); });
    SyncReport rep = rec.Plan();
    rep.leader = true;
    rec.Apply(&rep, [] { return true; });
    rep.Finish();
    host_.Info("module disabled (revoke_on_disable): revoked " + std::to_string(rep.Removed()) +
               " rule(s) of \"" + cfg->Owner() + "\"");
    if (!rep.Ok()) {
      throw Error(TRELLIS_E_UNAVAILABLE,
                  "revoking this cluster's rules on disable: " +
                      (rep.reasons.empty() ? rep.result : rep.reasons.front()));
    }
  }

 private:
  struct Role {
    bool leader = false;
    std::string reason;
  };

  std::shared_ptr<aliyun::CloudSession> NewSession(const SecgroupConfig& cfg) {
    try {
      return std::make_shared<aliyun::CloudSession>(cfg.cloud, &clock_, &metrics_,
                                                    "trellis-secgroup/1.0");
    } catch (const CloudError& e) {
      throw Error(
          e.kind() == CloudError::Kind::kInvalid ? TRELLIS_E_INVALID : TRELLIS_E_UNAVAILABLE,
          e.what());
    }
  }

  Role RoleLocked() const {
    if (elected_.has_value()) {
      return {*elected_,
              *elected_ ? "elected by the host" : "another node was elected by the host"};
    }
    if (cfg_->leader.has_value()) {
      return {*cfg_->leader,
              std::string("leader: ") + (*cfg_->leader ? "true" : "false") + " in the config"};
    }
    if (!cfg_->leader_node.empty()) {
      bool me = cfg_->leader_node == node_name_;
      return {me, "leader_node is " + cfg_->leader_node + ", this node is " +
                      (node_name_.empty() ? "unnamed" : node_name_)};
    }
    return {false,
            "no leader configured: set leader: true on exactly one node, or leader_node: <node "
            "name> in the shared config"};
  }
  Role CurrentRole() {
    std::lock_guard lock(mu_);
    return RoleLocked();
  }
  std::string RoleLine() {
    Role r = CurrentRole();
    return std::string(r.leader ? "leader" : "standby") + " (" + r.reason + ")";
  }
  void RoleChanged() {
    Role r = CurrentRole();
    metrics_.Leader(r.leader);
    host_.Info("now " + RoleLine());
    host_.NotifyHealth(r.leader ? "became the security-group sync leader" : "became standby");
  }

  // One sync: plan, and apply unless `dry_reason` is set, the config says
  // dry_run, or this node is standby. `record`: metrics, logs and status
  // (a diff asked for by trellisctl records nothing).
  SyncReport Sync(const std::string& dry_reason, bool record) {
    std::lock_guard sync(sync_mu_);
    std::shared_ptr<const SecgroupConfig> cfg;
    std::shared_ptr<aliyun::CloudSession> cloud;
    Role role;
    {
      std::lock_guard lock(mu_);
      cfg = cfg_;
      cloud = cloud_;
      role = RoleLocked();
    }
    auto start = std::chrono::steady_clock::now();
    Reconciler rec(cloud.get(), *cfg,
                   [this](int level, const std::string& m) { host_.Log(level, m); });
    SyncReport rep = rec.Plan();
    rep.leader = role.leader;
    rep.role_reason = role.reason;
    if (!dry_reason.empty()) {
      rep.dry_run = true;
      rep.dry_run_reason = dry_reason;
    } else if (cfg->dry_run) {
      rep.dry_run = true;
      rep.dry_run_reason = "dry_run: true in the config";
    } else if (!role.leader) {
      rep.dry_run = true;
      rep.dry_run_reason = "standby";
    }
    if (!rep.dry_run) {
      rec.Apply(&rep, [this, cfg] {
        std::lock_guard lock(mu_);
        // A new config or a lost election ends this sync: the next one
        // plans afresh.
        return !stopping_ && !deactivated_ && cfg_ == cfg && RoleLocked().leader;
      });
    }
    rep.duration_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::steady_clock::now() - start)
                          .count();
    rep.Finish();
    bool superseded;
    {
      std::lock_guard lock(mu_);
      superseded = stopping_ || (rep.stopped && cfg_ != cfg);
    }
    // A sync cut short by shutdown, or by a new config (whose sync follows at
    // once), says nothing about the cloud.
    if (record && !superseded) Record(rep);
    return rep;
  }

  void Record(const SyncReport& rep) {
    std::set<std::string> before;
    bool was_degraded, degraded = !rep.Ok() && rep.result != "dry_run";
    {
      std::lock_guard lock(mu_);
      for (const auto& id : recorded_groups_) before.insert(id);
      recorded_groups_.clear();
      for (const auto& g : rep.groups) recorded_groups_.push_back(g.id);
      was_degraded = last_degraded_;
      last_degraded_ = degraded;
      Json summary = rep.ToJson();
      // The status keeps the outcome, not every rule of every group.
      Json brief = {{"result", summary["result"]},
                    {"started_at", summary["started_at"]},
                    {"duration_ms", summary["duration_ms"]},
                    {"summary", summary["summary"]},
                    {"guard", summary["guard"]},
                    {"reasons", summary["reasons"]},
                    {"failures", summary["failures"]},
                    {"dry_run", rep.dry_run}};
      last_ = brief;
    }
    metrics_.Record(rep, before);
    // Logs: a repeated outcome (the same refused or pending plan every
    // interval) is logged once at its level, then at debug.
    std::string fingerprint = rep.result;
    for (const auto& g : rep.groups) {
      for (const auto& r : g.to_add) fingerprint += "+" + g.id + r.Key();
      for (const auto& c : g.to_remove) fingerprint += "-" + g.id + c.id;
    }
    bool repeated = fingerprint == last_fingerprint_;
    last_fingerprint_ = fingerprint;
    std::string line = "sync " + rep.result + ": " + std::to_string(rep.Added()) + " added, " +
                       std::to_string(rep.Removed()) + " revoked, " + std::to_string(rep.ToAdd()) +
                       " to add, " + std::to_string(rep.ToRemove()) + " to revoke";
    for (const auto& r : rep.reasons) line += "; " + r;
    int level = rep.result == "in_sync"                              ? TRELLIS_LOG_DEBUG
                : rep.result == "applied" || rep.result == "dry_run" ? TRELLIS_LOG_INFO
                                                                     : TRELLIS_LOG_WARN;
    host_.Log(repeated && rep.result != "applied" ? TRELLIS_LOG_DEBUG : level, line);
    if (was_degraded != degraded) {
      host_.NotifyHealth(degraded ? "security-group sync " + rep.result : "security-group sync ok");
    }
  }

  void Run() {
    std::unique_lock lock(mu_);
    int failures = 0;
    while (!stopping_) {
      const bool lead = !deactivated_ && RoleLocked().leader;
      if (lead) {
        wake_ = false;
        lock.unlock();
        std::string result;
        try {
          result = Sync("", true).result;
        } catch (const std::exception& e) {
          result = "failed";
          host_.Warn(std::string("sync failed: ") + e.what());
        }
        lock.lock();
        failures = result == "failed" || result == "stopped" ? failures + 1 : 0;
      }
      if (stopping_) break;
      auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(cfg_->sync_interval);
      if (lead && failures > 0) {
        wait = std::min(wait, std::chrono::milliseconds(5000LL << std::min(failures - 1, 6)));
      }
      cv_.wait_for(lock, wait, [this] { return stopping_ || wake_; });
      wake_ = false;
    }
  }

  sdk::Host host_;
  aliyun::RealClock clock_;
  mutable std::mutex mu_;  // everything below but the worker and the sync lock
  std::condition_variable cv_;
  std::shared_ptr<const SecgroupConfig> cfg_;
  Metrics metrics_;
  std::string node_name_;
  std::shared_ptr<aliyun::CloudSession> cloud_;
  std::optional<bool> elected_;
  bool stopping_ = false;
  bool wake_ = false;
  bool deactivated_ = false;
  Json last_;
  bool last_degraded_ = false;
  std::vector<std::string> recorded_groups_;
  std::string last_fingerprint_;  // the worker's and sync callers' (under sync_mu_)
  std::mutex sync_mu_;            // one sync at a time; taken before mu_
  std::thread worker_;
};

}  // namespace
}  // namespace trellis::secgroup

TRELLIS_PLUGIN(trellis::secgroup::Secgroup);
