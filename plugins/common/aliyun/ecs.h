// The ECS actions trellis uses, typed. EcsApi is the interface the eni and
// secgroup plugins program against (their tests fake it); EcsClient is the
// real one on RpcClient.
//
// Field names follow ECS's API reference (Version 2014-05-26): requests use
// its parameter names (Tag.N.Key, PrivateIpAddress.N, SecurityGroupIds.N...),
// answers are read from its nesting (NetworkInterfaceSets.NetworkInterfaceSet[],
// PrivateIpSets.PrivateIpSet[], Tags.Tag[], Permissions.Permission[]).
#ifndef TRELLIS_PLUGINS_COMMON_ALIYUN_ECS_H_
#define TRELLIS_PLUGINS_COMMON_ALIYUN_ECS_H_

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "aliyun/rpc_client.h"

namespace trellis::aliyun {

struct InstanceTypeInfo {
  std::string id;
  int eni_quantity = 0;  // network interfaces, the primary one included
  int ipv4_per_eni = 0;  // private IPv4 addresses per interface, its primary included
  int ipv6_per_eni = 0;
};

struct VSwitchInfo {
  std::string id, zone, cidr, vpc_id, status;
  int64_t available_ips = 0;
};

struct NetworkInterfaceInfo {
  std::string id;
  std::string status;  // Available, Attaching, InUse, Detaching, Deleting...
  std::string type;    // Primary, Secondary
  std::string instance_id, vswitch_id, vpc_id, zone;
  std::string mac;  // lower case
  std::string primary_ip;
  std::vector<std::string> private_ips;  // the primary one first
  std::vector<std::string> security_groups;
  std::map<std::string, std::string> tags;
  std::string description;
  std::string creation_time;  // ISO 8601, as ECS reports it; may be empty
};

struct EniQuery {
  std::vector<std::string> ids;
  std::string instance_id, status, vswitch_id, vpc_id;
  std::map<std::string, std::string> tags;  // every tag must match

  static EniQuery ByIds(std::vector<std::string> ids) {
    EniQuery q;
    q.ids = std::move(ids);
    return q;
  }
  static EniQuery ByTags(std::map<std::string, std::string> tags) {
    EniQuery q;
    q.tags = std::move(tags);
    return q;
  }
};

struct CreateEniRequest {
  std::string vswitch_id;
  std::vector<std::string> security_groups;
  std::map<std::string, std::string> tags;
  std::string description;
  std::string client_token;  // required: the same token returns the same ENI
};

struct SecurityGroupRule {
  std::string direction = "ingress";  // ingress | egress
  std::string ip_protocol;            // tcp, udp, icmp, gre, all (lower case)
  std::string port_range;             // "80/80", "1/65535", "-1/-1"
  // The peer: SourceCidrIp (ingress) / DestCidrIp (egress); an IPv6 CIDR
  // travels as Ipv6SourceCidrIp / Ipv6DestCidrIp.
  std::string cidr;
  std::string policy = "accept";  // accept | drop (lower case)
  int priority = 1;               // 1 (highest) .. 100
  std::string description;
  std::string nic_type = "intranet";
  std::string rule_id;  // SecurityGroupRuleId when ECS reports one
  // Read only (what Describe reports of rules made elsewhere): a peer given
  // as a security group (SourceGroupId / DestGroupId) or a prefix list
  // instead of a CIDR, and when the rule was made.
  std::string peer_group;
  std::string peer_prefix_list;
  std::string create_time;
};

// THREADING: every method may be called concurrently. Every method throws
// CloudError.
class EcsApi {
 public:
  virtual ~EcsApi() = default;

  virtual InstanceTypeInfo DescribeInstanceType(const std::string& instance_type) = 0;
  // Every vSwitch of `vpc_id` (all pages); `ids` non-empty narrows to those.
  virtual std::vector<VSwitchInfo> DescribeVSwitches(const std::string& vpc_id,
                                                     const std::vector<std::string>& ids) = 0;
  virtual NetworkInterfaceInfo CreateNetworkInterface(const CreateEniRequest& request) = 0;
  virtual void AttachNetworkInterface(const std::string& eni_id, const std::string& instance_id,
                                      const std::string& client_token) = 0;
  // Every match, all pages.
  virtual std::vector<NetworkInterfaceInfo> DescribeNetworkInterfaces(const EniQuery& query) = 0;
  // Assigns `count` (1..10) secondary IPs; returns them.
  virtual std::vector<std::string> AssignPrivateIpAddresses(const std::string& eni_id, int count,
                                                            const std::string& client_token) = 0;
  virtual void UnassignPrivateIpAddresses(const std::string& eni_id,
                                          const std::vector<std::string>& ips,
                                          const std::string& client_token) = 0;
  virtual void DetachNetworkInterface(const std::string& eni_id, const std::string& instance_id,
                                      const std::string& client_token) = 0;
  virtual void DeleteNetworkInterface(const std::string& eni_id,
                                      const std::string& client_token) = 0;

  // Security groups. `direction` "" : both. Every rule of the group (a
  // NextToken, when ECS pages the answer, is followed).
  virtual std::vector<SecurityGroupRule> DescribeSecurityGroupRules(
      const std::string& security_group_id, const std::string& direction) = 0;
  // Adds (Authorize*) or removes (Revoke*) one rule; the direction picks the
  // ingress or egress action. ECS answers success, and changes nothing, when
  // an equal rule exists already. `client_token` "" : one is made for the
  // call (a token must not be reused for a later, separate change: ECS would
  // answer the first call's result again and do nothing).
  virtual void AuthorizeSecurityGroupRule(const std::string& security_group_id,
                                          const SecurityGroupRule& rule,
                                          const std::string& client_token) = 0;
  // With rule.rule_id set, revokes exactly that rule (SecurityGroupRuleId.1,
  // ECS's recommended way; a rule that is gone is an error since July 2024:
  // see IsRuleGone). Without it, revokes the rule equal to `rule`'s
  // parameters (no error when there is none).
  virtual void RevokeSecurityGroupRule(const std::string& security_group_id,
                                       const SecurityGroupRule& rule,
                                       const std::string& client_token) = 0;
};

class EcsClient : public EcsApi {
 public:
  explicit EcsClient(std::shared_ptr<RpcClient> rpc) : rpc_(std::move(rpc)) {}

  InstanceTypeInfo DescribeInstanceType(const std::string& instance_type) override;
  std::vector<VSwitchInfo> DescribeVSwitches(const std::string& vpc_id,
                                             const std::vector<std::string>& ids) override;
  NetworkInterfaceInfo CreateNetworkInterface(const CreateEniRequest& request) override;
  void AttachNetworkInterface(const std::string& eni_id, const std::string& instance_id,
                              const std::string& client_token) override;
  std::vector<NetworkInterfaceInfo> DescribeNetworkInterfaces(const EniQuery& query) override;
  std::vector<std::string> AssignPrivateIpAddresses(const std::string& eni_id, int count,
                                                    const std::string& client_token) override;
  void UnassignPrivateIpAddresses(const std::string& eni_id, const std::vector<std::string>& ips,
                                  const std::string& client_token) override;
  void DetachNetworkInterface(const std::string& eni_id, const std::string& instance_id,
                              const std::string& client_token) override;
  void DeleteNetworkInterface(const std::string& eni_id, const std::string& client_token) override;
  std::vector<SecurityGroupRule> DescribeSecurityGroupRules(const std::string& security_group_id,
                                                            const std::string& direction) override;
  void AuthorizeSecurityGroupRule(const std::string& security_group_id,
                                  const SecurityGroupRule& rule,
                                  const std::string& client_token) override;
  void RevokeSecurityGroupRule(const std::string& security_group_id, const SecurityGroupRule& rule,
                               const std::string& client_token) override;

  RpcClient& rpc() { return *rpc_; }

  // True when `e` says the rule a revoke by SecurityGroupRuleId named does not
  // exist (InvalidParam.SecurityGroupRuleId for ingress,
  // InvalidSecurityGroupRule.RuleNotExist for egress): it is gone already.
  static bool IsRuleGone(const CloudError& e);

  // Parsers, public for tests.
  static NetworkInterfaceInfo ParseNetworkInterface(const nlohmann::json& j);
  static SecurityGroupRule ParsePermission(const nlohmann::json& j);
  // The array at j[outer][inner] (ECS's list nesting); a lone object counts
  // as a list of one; absent: empty.
  static std::vector<nlohmann::json> Items(const nlohmann::json& j, const char* outer,
                                           const char* inner);

 private:
  std::shared_ptr<RpcClient> rpc_;
};

}  // namespace trellis::aliyun

#endif  // TRELLIS_PLUGINS_COMMON_ALIYUN_ECS_H_
