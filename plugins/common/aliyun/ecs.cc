#include "aliyun/ecs.h"

#include <algorithm>
#include <cctype>
#include <set>

namespace trellis::aliyun {
namespace {

using Json = nlohmann::json;

// ECS is not consistent about numbers: some arrive as strings.
std::string Str(const Json& j, const char* key) {
  if (!j.is_object() || !j.contains(key)) return "";
  const Json& v = j[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  return "";
}

int64_t Int(const Json& j, const char* key) {
  if (!j.is_object() || !j.contains(key)) return 0;
  const Json& v = j[key];
  if (v.is_number()) return v.get<int64_t>();
  if (v.is_string()) return std::strtoll(v.get<std::string>().c_str(), nullptr, 10);
  return 0;
}

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

void AddList(Params& p, const std::string& name, const std::vector<std::string>& values) {
  for (size_t i = 0; i < values.size(); ++i) p[name + "." + std::to_string(i + 1)] = values[i];
}

void AddTags(Params& p, const std::map<std::string, std::string>& tags) {
  int n = 1;
  for (const auto& [k, v] : tags) {
    p["Tag." + std::to_string(n) + ".Key"] = k;
    p["Tag." + std::to_string(n) + ".Value"] = v;
    n++;
  }
}

CloudError BadAnswer(const std::string& action, const std::string& what) {
  return CloudError(CloudError::Kind::kTransport, action, "InvalidResponse", 200, "",
                    "ECS " + action + ": the answer " + what);
}

Params RuleParams(const std::string& sg, const SecurityGroupRule& r) {
  Params p = {{"SecurityGroupId", sg},
              {"IpProtocol", Lower(r.ip_protocol)},
              {"PortRange", r.port_range},
              {"Policy", Lower(r.policy)},
              {"Priority", std::to_string(r.priority)},
              {"NicType", r.nic_type.empty() ? "intranet" : r.nic_type}};
  const bool v6 = r.cidr.find(':') != std::string::npos;
  const bool egress = r.direction == "egress";
  p[v6 ? (egress ? "Ipv6DestCidrIp" : "Ipv6SourceCidrIp")
       : (egress ? "DestCidrIp" : "SourceCidrIp")] = r.cidr;
  if (!r.description.empty()) p["Description"] = r.description;
  return p;
}

}  // namespace

std::vector<Json> EcsClient::Items(const Json& j, const char* outer, const char* inner) {
  std::vector<Json> out;
  if (!j.is_object() || !j.contains(outer)) return out;
  const Json& o = j[outer];
  const Json* list = &o;
  if (o.is_object() && o.contains(inner)) list = &o[inner];
  if (list->is_array()) {
    for (const auto& v : *list) out.push_back(v);
  } else if (list->is_object() && list != &o) {
    out.push_back(*list);
  }
  return out;
}

NetworkInterfaceInfo EcsClient::ParseNetworkInterface(const Json& j) {
  NetworkInterfaceInfo n;
  n.id = Str(j, "NetworkInterfaceId");
  n.status = Str(j, "Status");
  n.type = Str(j, "Type");
  n.instance_id = Str(j, "InstanceId");
  n.vswitch_id = Str(j, "VSwitchId");
  n.vpc_id = Str(j, "VpcId");
  n.zone = Str(j, "ZoneId");
  n.mac = Lower(Str(j, "MacAddress"));
  n.primary_ip = Str(j, "PrivateIpAddress");
  n.description = Str(j, "Description");
  n.creation_time = Str(j, "CreationTime");
  std::set<std::string> seen;
  if (!n.primary_ip.empty()) {
    n.private_ips.push_back(n.primary_ip);
    seen.insert(n.primary_ip);
  }
  for (const auto& ip : Items(j, "PrivateIpSets", "PrivateIpSet")) {
    std::string a = Str(ip, "PrivateIpAddress");
    bool primary = ip.value("Primary", false);
    if (primary && n.primary_ip.empty()) {
      n.primary_ip = a;
      n.private_ips.insert(n.private_ips.begin(), a);
      seen.insert(a);
      continue;
    }
    if (!a.empty() && seen.insert(a).second) n.private_ips.push_back(a);
  }
  for (const auto& t : Items(j, "Tags", "Tag")) {
    std::string k = Str(t, "TagKey");
    if (k.empty()) k = Str(t, "Key");
    std::string v = t.contains("TagValue") ? Str(t, "TagValue") : Str(t, "Value");
    if (!k.empty()) n.tags[k] = v;
  }
  for (const auto& s : Items(j, "SecurityGroupIds", "SecurityGroupId")) {
    if (s.is_string()) n.security_groups.push_back(s.get<std::string>());
  }
  return n;
}

SecurityGroupRule EcsClient::ParsePermission(const Json& j) {
  SecurityGroupRule r;
  r.direction = Lower(Str(j, "Direction"));
  if (r.direction.empty()) r.direction = "ingress";
  r.ip_protocol = Lower(Str(j, "IpProtocol"));
  r.port_range = Str(j, "PortRange");
  const bool egress = r.direction == "egress";
  r.cidr = egress ? Str(j, "DestCidrIp") : Str(j, "SourceCidrIp");
  if (r.cidr.empty()) r.cidr = egress ? Str(j, "Ipv6DestCidrIp") : Str(j, "Ipv6SourceCidrIp");
  r.peer_group = egress ? Str(j, "DestGroupId") : Str(j, "SourceGroupId");
  r.peer_prefix_list = egress ? Str(j, "DestPrefixListId") : Str(j, "SourcePrefixListId");
  r.create_time = Str(j, "CreateTime");
  r.policy = Lower(Str(j, "Policy"));
  if (r.policy.empty()) r.policy = "accept";
  r.priority = static_cast<int>(Int(j, "Priority"));
  if (r.priority == 0) r.priority = 1;
  r.description = Str(j, "Description");
  r.nic_type = Str(j, "NicType");
  r.rule_id = Str(j, "SecurityGroupRuleId");
  return r;
}

InstanceTypeInfo EcsClient::DescribeInstanceType(const std::string& instance_type) {
  Json r = rpc_->Call("DescribeInstanceTypes", {{"InstanceTypes.1", instance_type}},
                      Idempotency::kRead);
  for (const auto& t : Items(r, "InstanceTypes", "InstanceType")) {
    if (Str(t, "InstanceTypeId") != instance_type) continue;
    InstanceTypeInfo info;
    info.id = instance_type;
    info.eni_quantity = static_cast<int>(Int(t, "EniQuantity"));
    info.ipv4_per_eni = static_cast<int>(Int(t, "EniPrivateIpAddressQuantity"));
    info.ipv6_per_eni = static_cast<int>(Int(t, "EniIpv6AddressQuantity"));
    if (info.eni_quantity <= 0 || info.ipv4_per_eni <= 0) {
      throw BadAnswer("DescribeInstanceTypes",
                      "gives no EniQuantity / EniPrivateIpAddressQuantity for " + instance_type);
    }
    return info;
  }
  throw CloudError(CloudError::Kind::kApi, "DescribeInstanceTypes", "InvalidInstanceType.NotFound",
                   200, Str(r, "RequestId"),
                   "ECS DescribeInstanceTypes: instance type " + instance_type + " is not listed");
}

std::vector<VSwitchInfo> EcsClient::DescribeVSwitches(const std::string& vpc_id,
                                                      const std::vector<std::string>& ids) {
  std::vector<VSwitchInfo> out;
  std::set<std::string> want(ids.begin(), ids.end());
  const int page_size = 50;
  for (int page = 1; page <= 200; ++page) {
    Params p = {{"PageSize", std::to_string(page_size)}, {"PageNumber", std::to_string(page)}};
    if (!vpc_id.empty()) p["VpcId"] = vpc_id;
    if (ids.size() == 1) p["VSwitchId"] = ids.front();
    Json r = rpc_->Call("DescribeVSwitches", p, Idempotency::kRead);
    auto items = Items(r, "VSwitches", "VSwitch");
    for (const auto& v : items) {
      VSwitchInfo s;
      s.id = Str(v, "VSwitchId");
      s.zone = Str(v, "ZoneId");
      s.cidr = Str(v, "CidrBlock");
      s.vpc_id = Str(v, "VpcId");
      s.status = Str(v, "Status");
      s.available_ips = Int(v, "AvailableIpAddressCount");
      if (want.empty() || want.contains(s.id)) out.push_back(s);
    }
    int64_t total = Int(r, "TotalCount");
    if (static_cast<int>(items.size()) < page_size || page * page_size >= total) break;
  }
  return out;
}

NetworkInterfaceInfo EcsClient::CreateNetworkInterface(const CreateEniRequest& req) {
  Params p = {{"VSwitchId", req.vswitch_id}, {"ClientToken", req.client_token}};
  if (req.security_groups.size() == 1) {
    p["SecurityGroupId"] = req.security_groups.front();
  } else {
    AddList(p, "SecurityGroupIds", req.security_groups);
  }
  AddTags(p, req.tags);
  if (!req.description.empty()) p["Description"] = req.description;
  Json r = rpc_->Call("CreateNetworkInterface", p, Idempotency::kWrite);
  NetworkInterfaceInfo n = ParseNetworkInterface(r);
  if (n.id.empty()) throw BadAnswer("CreateNetworkInterface", "carries no NetworkInterfaceId");
  if (n.vswitch_id.empty()) n.vswitch_id = req.vswitch_id;
  if (n.tags.empty()) n.tags = req.tags;
  return n;
}

void EcsClient::AttachNetworkInterface(const std::string& eni_id, const std::string& instance_id,
                                       const std::string& client_token) {
  rpc_->Call("AttachNetworkInterface",
             {{"NetworkInterfaceId", eni_id}, {"InstanceId", instance_id},
              {"ClientToken", client_token}},
             Idempotency::kWrite);
}

std::vector<NetworkInterfaceInfo> EcsClient::DescribeNetworkInterfaces(const EniQuery& q) {
  Params base;
  AddList(base, "NetworkInterfaceId", q.ids);
  if (!q.instance_id.empty()) base["InstanceId"] = q.instance_id;
  if (!q.status.empty()) base["Status"] = q.status;
  if (!q.vswitch_id.empty()) base["VSwitchId"] = q.vswitch_id;
  if (!q.vpc_id.empty()) base["VpcId"] = q.vpc_id;
  AddTags(base, q.tags);
  std::vector<NetworkInterfaceInfo> out;
  std::set<std::string> seen;
  const int page_size = 100;
  std::string next_token;
  for (int page = 1; page <= 1000; ++page) {
    Params p = base;
    // ECS pages by PageNumber/PageSize, newer answers also by NextToken; a
    // NextToken, once given, is followed.
    if (!next_token.empty()) {
      p["NextToken"] = next_token;
      p["MaxResults"] = std::to_string(page_size);
    } else {
      p["PageNumber"] = std::to_string(page);
      p["PageSize"] = std::to_string(page_size);
    }
    Json r = rpc_->Call("DescribeNetworkInterfaces", p, Idempotency::kRead);
    auto items = Items(r, "NetworkInterfaceSets", "NetworkInterfaceSet");
    size_t added = 0;
    for (const auto& j : items) {
      NetworkInterfaceInfo n = ParseNetworkInterface(j);
      if (!n.id.empty() && seen.insert(n.id).second) {
        out.push_back(std::move(n));
        added++;
      }
    }
    std::string token = Str(r, "NextToken");
    int64_t total = Int(r, "TotalCount");
    if (!token.empty() && token != next_token && !items.empty()) {
      next_token = token;
      continue;
    }
    if (!next_token.empty()) break;  // the token chain ended
    if (items.empty() || added == 0 || static_cast<int>(items.size()) < page_size ||
        (total > 0 && static_cast<int64_t>(out.size()) >= total)) {
      break;
    }
  }
  return out;
}

std::vector<std::string> EcsClient::AssignPrivateIpAddresses(const std::string& eni_id, int count,
                                                             const std::string& client_token) {
  if (count < 1 || count > 10) {
    throw CloudError(CloudError::Kind::kInvalid, "AssignPrivateIpAddresses", "Invalid", 0, "",
                     "AssignPrivateIpAddresses: count must be 1..10, got " + std::to_string(count));
  }
  Json r = rpc_->Call("AssignPrivateIpAddresses",
                      {{"NetworkInterfaceId", eni_id},
                       {"SecondaryPrivateIpAddressCount", std::to_string(count)},
                       {"ClientToken", client_token}},
                      Idempotency::kWrite);
  std::vector<std::string> ips;
  if (r.contains("AssignedPrivateIpAddressesSet")) {
    const Json& set = r["AssignedPrivateIpAddressesSet"];
    for (const auto& v : Items(set, "PrivateIpSet", "PrivateIpAddress")) {
      if (v.is_string()) ips.push_back(v.get<std::string>());
      else if (v.is_object()) ips.push_back(Str(v, "PrivateIpAddress"));
    }
  }
  return ips;  // empty: the caller reads them back with DescribeNetworkInterfaces
}

void EcsClient::UnassignPrivateIpAddresses(const std::string& eni_id,
                                           const std::vector<std::string>& ips,
                                           const std::string& client_token) {
  Params p = {{"NetworkInterfaceId", eni_id}, {"ClientToken", client_token}};
  AddList(p, "PrivateIpAddress", ips);
  rpc_->Call("UnassignPrivateIpAddresses", p, Idempotency::kWrite);
}

void EcsClient::DetachNetworkInterface(const std::string& eni_id, const std::string& instance_id,
                                       const std::string& client_token) {
  rpc_->Call("DetachNetworkInterface",
             {{"NetworkInterfaceId", eni_id}, {"InstanceId", instance_id},
              {"ClientToken", client_token}},
             Idempotency::kWrite);
}

void EcsClient::DeleteNetworkInterface(const std::string& eni_id, const std::string& client_token) {
  rpc_->Call("DeleteNetworkInterface",
             {{"NetworkInterfaceId", eni_id}, {"ClientToken", client_token}}, Idempotency::kWrite);
}

std::vector<SecurityGroupRule> EcsClient::DescribeSecurityGroupRules(const std::string& sg,
                                                                     const std::string& direction) {
  Params base = {{"SecurityGroupId", sg}};
  if (!direction.empty()) base["Direction"] = direction;
  std::vector<SecurityGroupRule> out;
  std::set<std::string> seen;
  std::string next_token;
  // Without MaxResults ECS answers every rule at once; a NextToken in the
  // answer (newer API versions page) is followed all the same.
  for (int page = 0; page < 1000; ++page) {
    Params p = base;
    if (!next_token.empty()) p["NextToken"] = next_token;
    Json r = rpc_->Call("DescribeSecurityGroupAttribute", p, Idempotency::kRead);
    for (const auto& j : Items(r, "Permissions", "Permission")) {
      SecurityGroupRule rule = ParsePermission(j);
      if (!rule.rule_id.empty() && !seen.insert(rule.rule_id).second) continue;
      out.push_back(std::move(rule));
    }
    std::string token = Str(r, "NextToken");
    if (token.empty() || token == next_token) break;
    next_token = token;
  }
  return out;
}

bool EcsClient::IsRuleGone(const CloudError& e) {
  return e.kind() == CloudError::Kind::kApi &&
         (e.Is("InvalidParam.SecurityGroupRuleId") ||
          e.Is("InvalidSecurityGroupRule.RuleNotExist"));
}

void EcsClient::AuthorizeSecurityGroupRule(const std::string& sg, const SecurityGroupRule& rule,
                                           const std::string& client_token) {
  Params p = RuleParams(sg, rule);
  p["ClientToken"] = client_token;
  rpc_->Call(rule.direction == "egress" ? "AuthorizeSecurityGroupEgress" : "AuthorizeSecurityGroup",
             p, Idempotency::kWrite);
}

void EcsClient::RevokeSecurityGroupRule(const std::string& sg, const SecurityGroupRule& rule,
                                        const std::string& client_token) {
  // ECS refuses a rule id together with the rule's parameters.
  Params p = rule.rule_id.empty()
                 ? RuleParams(sg, rule)
                 : Params{{"SecurityGroupId", sg}, {"SecurityGroupRuleId.1", rule.rule_id}};
  p["ClientToken"] = client_token;
  rpc_->Call(rule.direction == "egress" ? "RevokeSecurityGroupEgress" : "RevokeSecurityGroup", p,
             Idempotency::kWrite);
}

}  // namespace trellis::aliyun
