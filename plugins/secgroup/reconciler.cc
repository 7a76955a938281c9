#include "reconciler.h"

#include <trellis/abi.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <map>
#include <set>
#include <sstream>

#include "aliyun/errors.h"

namespace trellis::secgroup {
namespace {

using aliyun::CloudError;

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string Iso(int64_t unix_ms) {
  std::time_t t = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string Percent(double f) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%.0f%%", f * 100);
  return buf;
}

std::string Quoted(const std::string& s) { return s.empty() ? "" : "  \"" + s + "\""; }

}  // namespace

Json CloudRule::ToJson() const {
  Json j = rule.ToJson();
  j["rule_id"] = id;
  j["owner"] = ours ? "ours" : "foreign";
  j["description"] = description;
  if (!created.empty()) j["created"] = created;
  return j;
}

int GroupDiff::Managed() const {
  int n = 0;
  for (const auto& c : actual) n += c.ours ? 1 : 0;
  return n;
}

int GroupDiff::Foreign() const { return static_cast<int>(actual.size()) - Managed(); }

int SyncReport::ToAdd() const {
  int n = 0;
  for (const auto& g : groups) n += static_cast<int>(g.to_add.size());
  return n;
}
int SyncReport::ToRemove() const {
  int n = 0;
  for (const auto& g : groups) n += static_cast<int>(g.to_remove.size());
  return n;
}
int SyncReport::Added() const {
  int n = 0;
  for (const auto& g : groups) n += g.added;
  return n;
}
int SyncReport::Removed() const {
  int n = 0;
  for (const auto& g : groups) n += g.removed;
  return n;
}

void SyncReport::Finish() {
  bool read_failed = false;
  for (const auto& g : groups) read_failed |= !g.error.empty();
  if (guard.tripped) {
    result = "refused";
  } else if (read_failed || !failures.empty()) {
    result = "failed";
    if (!failures.empty()) {
      reasons.push_back(std::to_string(failures.size()) +
                        " change(s) failed (see failures); the next sync tries again");
    }
  } else if (!Drift()) {
    result = "in_sync";
  } else if (dry_run) {
    result = "dry_run";
  } else if (stopped) {
    result = "stopped";
  } else {
    result = "applied";
  }
  if (dry_run && (result == "dry_run" || result == "refused")) {
    reasons.push_back((dry_run_reason.empty() ? std::string("dry run") : dry_run_reason) +
                      ": nothing was changed");
  }
}

Json SyncReport::ToJson() const {
  Json j;
  j["owner"] = owner;
  j["role"] = leader ? "leader" : "standby";
  j["role_reason"] = role_reason;
  j["dry_run"] = dry_run;
  if (dry_run) j["dry_run_reason"] = dry_run_reason;
  j["result"] = result;
  j["reasons"] = reasons;
  j["started_at"] = Iso(started_unix_ms);
  j["duration_ms"] = duration_ms;
  Json desired_j = Json::array();
  for (const auto& r : desired) {
    Json x = r.ToJson();
    x["index"] = r.index;
    desired_j.push_back(x);
  }
  j["desired"] = desired_j;
  Json refused_j = Json::array();
  for (const auto& r : refused) {
    refused_j.push_back({{"index", r.rule.index}, {"rule", r.rule.ToJson()}, {"reason", r.reason}});
  }
  j["refused"] = refused_j;
  Json groups_j = Json::array();
  int managed = 0, foreign = 0;
  for (const auto& g : groups) {
    Json gj = {{"id", g.id}};
    if (!g.error.empty()) gj["error"] = g.error;
    Json actual = Json::array(), add = Json::array(), remove = Json::array(),
         provided = Json::array(), differs = Json::array();
    for (const auto& c : g.actual) actual.push_back(c.ToJson());
    for (const auto& r : g.to_add) add.push_back(r.ToJson());
    for (const auto& c : g.to_remove) remove.push_back(c.ToJson());
    for (const auto& [r, c] : g.provided_by_foreign) {
      provided.push_back({{"rule", r.ToJson()}, {"by_rule_id", c.id}});
    }
    for (const auto& [r, c] : g.description_differs) {
      differs.push_back(
          {{"rule", r.ToJson()}, {"rule_id", c.id}, {"cloud_description", c.description}});
    }
    gj["actual"] = actual;
    gj["to_add"] = add;
    gj["to_remove"] = remove;
    gj["in_sync"] = g.in_sync.size();
    gj["provided_by_foreign"] = provided;
    gj["description_differs"] = differs;
    gj["managed"] = g.Managed();
    gj["foreign"] = g.Foreign();
    gj["added"] = g.added;
    gj["removed"] = g.removed;
    managed += g.Managed();
    foreign += g.Foreign();
    groups_j.push_back(gj);
  }
  j["security_groups"] = groups_j;
  j["summary"] = {{"desired", desired.size()}, {"refused", refused.size()},
                  {"managed", managed},        {"foreign", foreign},
                  {"to_add", ToAdd()},         {"to_remove", ToRemove()},
                  {"added", Added()},          {"removed", Removed()}};
  j["guard"] = {{"max_revoke_fraction", guard.max_fraction},
                {"managed", guard.managed},
                {"to_remove", guard.to_remove},
                {"tripped", guard.tripped}};
  Json failures_j = Json::array();
  for (const auto& f : failures) {
    failures_j.push_back({{"security_group", f.security_group},
                          {"operation", f.operation},
                          {"rule", f.rule},
                          {"code", f.code},
                          {"message", f.message}});
  }
  j["failures"] = failures_j;
  return j;
}

std::string SyncReport::ToText() const {
  std::ostringstream o;
  o << "security-group sync: " << result;
  if (result == "applied") o << " (" << Added() << " added, " << Removed() << " removed)";
  o << "\n";
  o << "role:    " << (leader ? "leader" : "standby") << " (" << role_reason << ")\n";
  if (dry_run) o << "mode:    dry run (" << dry_run_reason << ")\n";
  o << "owner:   rules whose description starts with \"" << owner << "\"\n";
  o << "guard:   revoke at most " << Percent(guard.max_fraction) << " of the " << guard.managed
    << " managed rules at once; this plan revokes " << guard.to_remove
    << (guard.tripped ? " -> REFUSED" : "") << "\n";
  for (const auto& g : groups) {
    o << "\n" << g.id << ": ";
    if (!g.error.empty()) {
      o << "could not be read: " << g.error << "\n";
      continue;
    }
    o << desired.size() << " desired, " << g.in_sync.size() << " in sync, " << g.to_add.size()
      << " to add, " << g.to_remove.size() << " to remove, " << g.Foreign()
      << " foreign left alone\n";
    for (const auto& r : g.to_add) o << "  + " << r.Summary() << Quoted(r.description) << "\n";
    for (const auto& c : g.to_remove) {
      o << "  - " << c.rule.Summary() << "  (" << c.id << ")" << Quoted(c.rule.description) << "\n";
    }
    for (const auto& c : g.in_sync) {
      o << "  = " << c.rule.Summary() << "  (" << c.id << ")" << Quoted(c.rule.description) << "\n";
    }
    for (const auto& [r, c] : g.provided_by_foreign) {
      o << "  ~ " << r.Summary() << ": a foreign rule (" << c.id
        << ") provides it; not added, never revoked\n";
    }
    for (const auto& [r, c] : g.description_differs) {
      o << "  ~ " << r.Summary() << " (" << c.id << "): description in the cloud is \""
        << c.description << "\" (left as is)\n";
    }
    for (const auto& c : g.actual) {
      if (!c.ours) {
        o << "  . foreign: " << c.rule.Summary() << "  (" << c.id << ")" << Quoted(c.description)
          << "\n";
      }
    }
  }
  if (!refused.empty()) {
    o << "\nrefused rules:\n";
    for (const auto& r : refused) o << "  ! rules[" << r.rule.index << "]: " << r.reason << "\n";
  }
  if (!failures.empty()) {
    o << "\nfailures:\n";
    for (const auto& f : failures) {
      o << "  ! " << f.security_group << " " << f.operation << " " << f.rule << ": " << f.message
        << "\n";
    }
  }
  if (!reasons.empty()) {
    o << "\n";
    for (const auto& r : reasons) o << r << "\n";
  }
  return o.str();
}

Reconciler::Reconciler(aliyun::EcsApi* ecs, const SecgroupConfig& config, LogFn log)
    : ecs_(ecs), cfg_(config), log_(std::move(log)) {}

GroupDiff Reconciler::PlanGroup(const std::string& sg, const std::vector<Rule>& desired) const {
  GroupDiff g;
  g.id = sg;
  std::vector<aliyun::SecurityGroupRule> raw;
  try {
    raw = ecs_->DescribeSecurityGroupRules(sg, "");
  } catch (const CloudError& e) {
    g.error = e.what();
    return g;
  }
  const std::string owner = cfg_.Owner();
  std::multimap<std::string, size_t> ours, foreign;
  for (const auto& c : raw) {
    CloudRule cr;
    cr.rule = FromCloud(c, owner, &cr.ours);
    cr.id = c.rule_id;
    cr.description = c.description;
    cr.created = c.create_time;
    (cr.ours ? ours : foreign).emplace(cr.rule.Key(), g.actual.size());
    g.actual.push_back(std::move(cr));
  }
  std::set<size_t> kept;
  for (const Rule& d : desired) {
    const std::string key = d.Key();
    if (auto it = ours.find(key); it != ours.end()) {
      const CloudRule& c = g.actual[it->second];
      kept.insert(it->second);
      g.in_sync.push_back(c);
      if (c.rule.description != d.description) g.description_differs.emplace_back(d, c);
      continue;
    }
    if (auto it = foreign.find(key); it != foreign.end()) {
      g.provided_by_foreign.emplace_back(d, g.actual[it->second]);
      continue;
    }
    g.to_add.push_back(d);
  }
  for (const auto& [key, i] : ours) {
    if (!kept.contains(i)) g.to_remove.push_back(g.actual[i]);
  }
  return g;
}

SyncReport Reconciler::Plan() const {
  SyncReport rep;
  rep.started_unix_ms = NowUnixMs();
  rep.owner = cfg_.Owner();
  rep.guard.max_fraction = cfg_.max_revoke_fraction;
  for (const Rule& r : cfg_.rules) {
    if (r.WorldOpen() && !r.allow_world_open) {
      rep.refused.push_back(
          {r, r.Summary() + " accepts traffic " + (r.direction == "ingress" ? "from" : "to") +
                  " every address; set allow_world_open: true on this rule to apply it"});
      continue;
    }
    rep.desired.push_back(r);
  }
  for (const auto& sg : cfg_.security_groups) {
    rep.groups.push_back(PlanGroup(sg, rep.desired));
    const GroupDiff& g = rep.groups.back();
    if (!g.error.empty()) {
      rep.reasons.push_back(sg + " could not be read, so nothing is planned for it: " + g.error);
      continue;
    }
    rep.guard.managed += g.Managed();
    rep.guard.to_remove += static_cast<int>(g.to_remove.size());
  }
  for (const auto& r : rep.refused)
    rep.reasons.push_back("refused rules[" + std::to_string(r.rule.index) + "]: " + r.reason);
  const auto& gd = rep.guard;
  if (gd.to_remove > 0 &&
      static_cast<double>(gd.to_remove) > gd.max_fraction * static_cast<double>(gd.managed)) {
    rep.guard.tripped = true;
    rep.reasons.push_back(
        "refused: this sync would revoke " + std::to_string(gd.to_remove) + " of the " +
        std::to_string(gd.managed) + " rules this cluster manages (" +
        Percent(static_cast<double>(gd.to_remove) / std::max(1, gd.managed)) +
        "), more than max_revoke_fraction " + Percent(gd.max_fraction) +
        " allows at once; nothing was added or revoked. Check the rules for a mistake, or raise "
        "max_revoke_fraction to apply this config");
  }
  return rep;
}

void Reconciler::Apply(SyncReport* rep, const std::function<bool()>& go_on) const {
  if (rep->guard.tripped) return;
  const std::string owner = cfg_.Owner();
  auto stop = [&]() {
    if (go_on()) return false;
    rep->stopped = true;
    rep->reasons.push_back(
        "stopped before every change was made: this node is no longer the "
        "leader, or the module is stopping");
    return true;
  };
  for (GroupDiff& g : rep->groups) {
    if (!g.error.empty()) continue;
    for (const Rule& r : g.to_add) {
      if (stop()) return;
      rep->attempted = true;
      if (r.WorldOpen()) {
        log_(TRELLIS_LOG_WARN, "opening " + g.id + " to every address: " + r.Summary() +
                                   " (allow_world_open is set on rules[" + std::to_string(r.index) +
                                   "])");
      }
      try {
        ecs_->AuthorizeSecurityGroupRule(g.id, ToCloud(r, owner), "");
        g.added++;
        log_(TRELLIS_LOG_INFO, "added to " + g.id + ": " + r.Summary());
      } catch (const CloudError& e) {
        rep->failures.push_back({g.id, "add", r.Summary(), e.code(), e.what()});
        log_(TRELLIS_LOG_WARN, "could not add to " + g.id + " " + r.Summary() + ": " + e.what());
        if (e.kind() == CloudError::Kind::kCancelled) {
          rep->stopped = true;
          return;
        }
      }
    }
    for (const CloudRule& c : g.to_remove) {
      if (stop()) return;
      rep->attempted = true;
      aliyun::SecurityGroupRule x = ToCloud(c.rule, owner);
      x.description = c.description;
      x.rule_id = c.id;
      try {
        ecs_->RevokeSecurityGroupRule(g.id, x, "");
        g.removed++;
        log_(TRELLIS_LOG_INFO, "revoked from " + g.id + " (no longer in the config): " +
                                   c.rule.Summary() + " (" + c.id + ")");
      } catch (const CloudError& e) {
        if (aliyun::EcsClient::IsRuleGone(e)) {
          g.removed++;
          log_(TRELLIS_LOG_INFO, c.id + " was gone from " + g.id + " already");
          continue;
        }
        rep->failures.push_back(
            {g.id, "revoke", c.rule.Summary() + " (" + c.id + ")", e.code(), e.what()});
        log_(TRELLIS_LOG_WARN, "could not revoke " + c.id + " from " + g.id + ": " + e.what());
        if (e.kind() == CloudError::Kind::kCancelled) {
          rep->stopped = true;
          return;
        }
      }
    }
  }
}

}  // namespace trellis::secgroup
