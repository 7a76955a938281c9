// An in-memory ECS security-group service with ECS's rule semantics, for the
// secgroup unit tests: an equal rule (description aside) is not added twice,
// a revoke by SecurityGroupRuleId of a rule that is not there fails with
// ECS's codes, a revoke by parameters of such a rule succeeds. Faults are
// injected per action. Only the security-group part of EcsApi is served.
#ifndef TRELLIS_TESTS_UNIT_SECGROUP_FAKE_ECS_H_
#define TRELLIS_TESTS_UNIT_SECGROUP_FAKE_ECS_H_

#include <algorithm>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "aliyun/ecs.h"
#include "aliyun/errors.h"

namespace trellis::secgroup::testing {

using aliyun::CloudError;
using aliyun::SecurityGroupRule;

class FakeEcs : public aliyun::EcsApi {
 public:
  struct Call {
    std::string action, sg;
    SecurityGroupRule rule;
  };

  explicit FakeEcs(std::vector<std::string> groups) {
    for (auto& g : groups) groups_[g];
  }

  // A rule someone else made (or ours, with our mark in its description).
  std::string AddOutOfBand(const std::string& sg, SecurityGroupRule r) {
    std::lock_guard l(mu_);
    r.rule_id = "sgr-" + std::to_string(++next_id_);
    groups_.at(sg).push_back(r);
    return r.rule_id;
  }
  void DeleteOutOfBand(const std::string& sg, const std::string& id) {
    std::lock_guard l(mu_);
    auto& v = groups_.at(sg);
    v.erase(std::remove_if(v.begin(), v.end(), [&](const auto& r) { return r.rule_id == id; }),
            v.end());
  }
  std::vector<SecurityGroupRule> Rules(const std::string& sg) {
    std::lock_guard l(mu_);
    return groups_.at(sg);
  }
  // The next `count` calls of `action` fail with `code`.
  void Fail(const std::string& action, const std::string& code, int count = 1,
            CloudError::Kind kind = CloudError::Kind::kApi) {
    std::lock_guard l(mu_);
    faults_[action] = {code, count, kind};
  }
  std::vector<Call> calls() {
    std::lock_guard l(mu_);
    return calls_;
  }
  int Mutations() {
    std::lock_guard l(mu_);
    int n = 0;
    for (const auto& c : calls_) n += c.action != "DescribeSecurityGroupAttribute";
    return n;
  }

  std::vector<SecurityGroupRule> DescribeSecurityGroupRules(const std::string& sg,
                                                            const std::string&) override {
    std::lock_guard l(mu_);
    Enter("DescribeSecurityGroupAttribute", sg, {});
    auto it = groups_.find(sg);
    if (it == groups_.end()) {
      throw CloudError(CloudError::Kind::kApi, "DescribeSecurityGroupAttribute",
                       "InvalidSecurityGroupId.NotFound", 404, "req-1",
                       "ECS DescribeSecurityGroupAttribute: InvalidSecurityGroupId.NotFound");
    }
    return it->second;
  }
  void AuthorizeSecurityGroupRule(const std::string& sg, const SecurityGroupRule& r,
                                  const std::string&) override {
    std::lock_guard l(mu_);
    Enter(r.direction == "egress" ? "AuthorizeSecurityGroupEgress" : "AuthorizeSecurityGroup", sg,
          r);
    auto& v = groups_.at(sg);
    for (const auto& x : v) {
      if (Same(x, r)) return;  // ECS: succeeds, creates nothing
    }
    SecurityGroupRule n = r;
    n.rule_id = "sgr-" + std::to_string(++next_id_);
    v.push_back(n);
  }
  void RevokeSecurityGroupRule(const std::string& sg, const SecurityGroupRule& r,
                               const std::string&) override {
    std::lock_guard l(mu_);
    const bool egress = r.direction == "egress";
    const std::string action = egress ? "RevokeSecurityGroupEgress" : "RevokeSecurityGroup";
    Enter(action, sg, r);
    auto& v = groups_.at(sg);
    if (!r.rule_id.empty()) {
      auto it = std::find_if(v.begin(), v.end(), [&](const auto& x) {
        return x.rule_id == r.rule_id && x.direction == r.direction;
      });
      if (it == v.end()) {
        const char* code =
            egress ? "InvalidSecurityGroupRule.RuleNotExist" : "InvalidParam.SecurityGroupRuleId";
        throw CloudError(CloudError::Kind::kApi, action, code, 400, "req-2",
                         "ECS " + action + ": " + code);
      }
      v.erase(it);
      return;
    }
    v.erase(std::remove_if(v.begin(), v.end(), [&](const auto& x) { return Same(x, r); }), v.end());
  }

  // Not used by the secgroup module.
  aliyun::InstanceTypeInfo DescribeInstanceType(const std::string&) override { Unused(); }
  std::vector<aliyun::VSwitchInfo> DescribeVSwitches(const std::string&,
                                                     const std::vector<std::string>&) override {
    Unused();
  }
  aliyun::NetworkInterfaceInfo CreateNetworkInterface(const aliyun::CreateEniRequest&) override {
    Unused();
  }
  void AttachNetworkInterface(const std::string&, const std::string&, const std::string&) override {
    Unused();
  }
  std::vector<aliyun::NetworkInterfaceInfo> DescribeNetworkInterfaces(
      const aliyun::EniQuery&) override {
    Unused();
  }
  std::vector<std::string> AssignPrivateIpAddresses(const std::string&, int,
                                                    const std::string&) override {
    Unused();
  }
  void UnassignPrivateIpAddresses(const std::string&, const std::vector<std::string>&,
                                  const std::string&) override {
    Unused();
  }
  void DetachNetworkInterface(const std::string&, const std::string&, const std::string&) override {
    Unused();
  }
  void DeleteNetworkInterface(const std::string&, const std::string&) override { Unused(); }

 private:
  struct Fault {
    std::string code;
    int count = 0;
    CloudError::Kind kind = CloudError::Kind::kApi;
  };
  [[noreturn]] static void Unused() {
    throw CloudError(CloudError::Kind::kInvalid, "unused", "Invalid", 0, "", "not in the fake");
  }

  static bool Same(const SecurityGroupRule& a, const SecurityGroupRule& b) {
    return a.direction == b.direction && a.ip_protocol == b.ip_protocol &&
           a.port_range == b.port_range && a.cidr == b.cidr && a.policy == b.policy &&
           a.priority == b.priority;
  }
  void Enter(const std::string& action, const std::string& sg, const SecurityGroupRule& r) {
    calls_.push_back({action, sg, r});
    auto it = faults_.find(action);
    if (it != faults_.end() && it->second.count > 0) {
      it->second.count--;
      throw CloudError(it->second.kind, action, it->second.code, 400, "req-f",
                       "ECS " + action + ": " + it->second.code + " (injected)");
    }
  }

  std::mutex mu_;
  std::map<std::string, std::vector<SecurityGroupRule>> groups_;
  std::map<std::string, Fault> faults_;
  std::vector<Call> calls_;
  int next_id_ = 0;
};

}  // namespace trellis::secgroup::testing

#endif  // TRELLIS_TESTS_UNIT_SECGROUP_FAKE_ECS_H_
