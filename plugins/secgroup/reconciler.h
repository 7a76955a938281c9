// Security-group reconciliation: compares the desired rules of the config
// with what each security group holds, and brings the groups in line.
//
// Ownership: a rule is ours when its description carries the owner mark
// ("trellis/<cluster_id>", alone or followed by a space and the operator's
// text). The mark is the only ownership record: it lives with the rule in
// the cloud, so whichever node leads next knows what it may revoke. A rule
// without the mark is never revoked, whatever it says; a desired rule that
// a foreign rule already provides (same direction, protocol, ports, peer,
// policy and priority: ECS keeps no two such rules) is not added, since
// AuthorizeSecurityGroup would succeed without creating anything.
//
// Safety:
//   - A desired rule that accepts traffic from or to every address (a /0
//     peer) is applied only with allow_world_open on that rule; without it
//     it is refused, reported and warned about, never sent.
//   - A plan that would revoke more than max_revoke_fraction of the rules we
//     manage (across the groups) is refused whole: nothing is added or
//     revoked, the report says why. A typo must not drop production traffic.
//   - Additions run before revocations, so a changed rule (a new CIDR) is in
//     place before the old one goes.
//   - Revocations name the rule by SecurityGroupRuleId: a rule re-created by
//     someone else between the read and the revoke is never hit.
#ifndef TRELLIS_PLUGINS_SECGROUP_RECONCILER_H_
#define TRELLIS_PLUGINS_SECGROUP_RECONCILER_H_

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "aliyun/ecs.h"
#include "config.h"

namespace trellis::secgroup {

// A rule as found in a security group.
struct CloudRule {
  Rule rule;                // normalised; its description without our mark when ours
  std::string id;           // SecurityGroupRuleId
  std::string description;  // as ECS keeps it
  bool ours = false;
  std::string created;
  Json ToJson() const;
};

struct Refusal {
  Rule rule;
  std::string reason;
};

struct Failure {
  std::string security_group, operation, rule, code, message;
};

struct GroupDiff {
  std::string id;
  std::string error;  // the group could not be read: nothing planned for it
  std::vector<CloudRule> actual;
  std::vector<Rule> to_add;
  std::vector<CloudRule> to_remove;
  std::vector<CloudRule> in_sync;  // ours and desired
  std::vector<std::pair<Rule, CloudRule>> provided_by_foreign;
  // Ours and desired, but with another description (ECS cannot change it in
  // place: reported, not acted on).
  std::vector<std::pair<Rule, CloudRule>> description_differs;
  int added = 0, removed = 0;

  int Managed() const;  // our rules in the group
  int Foreign() const;
};

struct SyncReport {
  std::string owner;
  bool leader = false;
  std::string role_reason;
  bool dry_run = false;
  std::string dry_run_reason;
  std::vector<Rule> desired;  // the rules that may be applied
  std::vector<Refusal> refused;
  std::vector<GroupDiff> groups;
  struct Guard {
    double max_fraction = 0.5;
    int managed = 0;
    int to_remove = 0;
    bool tripped = false;
  } guard;
  bool attempted = false;  // mutating calls were made
  bool stopped = false;    // Apply stopped early (leadership lost, shutting down)
  std::vector<Failure> failures;
  // in_sync: nothing to do; applied: every change made; dry_run: changes
  // pending, none made; refused: the guard tripped, nothing made; failed: a
  // group could not be read or a change failed; stopped: leadership was
  // lost (or the module stopped) part way.
  std::string result;
  std::vector<std::string> reasons;
  int64_t started_unix_ms = 0;
  int64_t duration_ms = 0;

  int ToAdd() const;
  int ToRemove() const;
  int Added() const;
  int Removed() const;
  bool Drift() const { return ToAdd() + ToRemove() > 0; }
  bool Ok() const { return result == "in_sync" || result == "applied"; }
  // Sets `result` and the closing reasons from what happened.
  void Finish();
  Json ToJson() const;
  // For people (trellisctl without -o json).
  std::string ToText() const;
};

class Reconciler {
 public:
  using LogFn = std::function<void(int level, const std::string& message)>;

  Reconciler(aliyun::EcsApi* ecs, const SecgroupConfig& config, LogFn log);

  // Reads every group and plans. Makes no mutating call.
  SyncReport Plan() const;
  // Carries out `report`'s plan (unless its guard tripped): per group,
  // additions, then revocations. `go_on` is asked before every mutating
  // call; false stops (leadership lost, shutting down). Never throws for a
  // cloud error: it lands in report->failures.
  void Apply(SyncReport* report, const std::function<bool()>& go_on) const;

 private:
  GroupDiff PlanGroup(const std::string& sg, const std::vector<Rule>& desired) const;

  aliyun::EcsApi* ecs_;
  const SecgroupConfig& cfg_;
  LogFn log_;
};

}  // namespace trellis::secgroup

#endif  // TRELLIS_PLUGINS_SECGROUP_RECONCILER_H_
