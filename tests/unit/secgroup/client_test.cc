// The shared ECS client's security-group actions, as the secgroup module
// uses them: parameter names (IPv4 and IPv6 peers, revoke by rule id), the
// answer's nesting and paging, and the codes of a rule that is gone. Also the
// cloud-access keys of aliyun/cloud.h.
#include <gtest/gtest.h>

#include <deque>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "aliyun/clock.h"
#include "aliyun/cloud.h"
#include "aliyun/credentials.h"
#include "aliyun/ecs.h"
#include "aliyun/http.h"
#include "aliyun/rpc_client.h"

namespace trellis::aliyun {
namespace {

using Json = nlohmann::json;

// Answers from a queue, records every request's query.
class ScriptedTransport : public HttpTransport {
 public:
  void Answer(int status, const Json& body) {
    std::lock_guard l(mu_);
    answers_.push_back({status, body.dump(), "", false});
  }
  HttpResponse Send(const HttpRequest& req) override {
    std::lock_guard l(mu_);
    queries_.push_back(Decode(req.target.substr(req.target.find('?') + 1)));
    if (answers_.empty()) return {500, "{}", "", false};
    HttpResponse r = answers_.front();
    answers_.pop_front();
    return r;
  }
  Params Query(size_t i) {
    std::lock_guard l(mu_);
    return queries_.at(i);
  }
  size_t Count() {
    std::lock_guard l(mu_);
    return queries_.size();
  }

 private:
  static Params Decode(const std::string& q) {
    Params out;
    size_t pos = 0;
    while (pos <= q.size()) {
      size_t amp = q.find('&', pos);
      std::string kv = q.substr(pos, amp == std::string::npos ? std::string::npos : amp - pos);
      size_t eq = kv.find('=');
      auto dec = [](const std::string& s) {
        std::string o;
        for (size_t i = 0; i < s.size(); ++i) {
          if (s[i] == '%' && i + 2 < s.size()) {
            o += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
            i += 2;
          } else {
            o += s[i];
          }
        }
        return o;
      };
      if (eq != std::string::npos) out[dec(kv.substr(0, eq))] = dec(kv.substr(eq + 1));
      if (amp == std::string::npos) break;
      pos = amp + 1;
    }
    return out;
  }
  std::mutex mu_;
  std::deque<HttpResponse> answers_;
  std::vector<Params> queries_;
};

struct Rig {
  Rig() {
    RpcOptions o;
    o.endpoint = Endpoint::Parse("http://127.0.0.1:18080", "ecs_endpoint",
                                 Endpoint::PlainHttp::kLoopbackOnly);
    o.region = "cn-hangzhou";
    o.max_attempts = 1;
    transport = std::make_shared<ScriptedTransport>();
    std::shared_ptr<CredentialProvider> creds =
        MakeStaticCredentials({"LTAI-test", "secret-value", "", std::nullopt}, "test");
    ecs = std::make_unique<EcsClient>(std::make_shared<RpcClient>(o, transport, creds, &clock));
  }
  RealClock clock;
  std::shared_ptr<ScriptedTransport> transport;
  std::unique_ptr<EcsClient> ecs;
};

TEST(SecgroupEcsClient, RulesTravelWithEcsParameterNames) {
  Rig rig;
  for (int i = 0; i < 4; ++i) rig.transport->Answer(200, {{"RequestId", "r"}});
  SecurityGroupRule r;
  r.direction = "ingress";
  r.ip_protocol = "tcp";
  r.port_range = "80/80";
  r.cidr = "10.0.0.0/8";
  r.priority = 5;
  r.description = "trellis/default web";
  rig.ecs->AuthorizeSecurityGroupRule("sg-1", r, "");
  Params q = rig.transport->Query(0);
  EXPECT_EQ(q["Action"], "AuthorizeSecurityGroup");
  EXPECT_EQ(q["SourceCidrIp"], "10.0.0.0/8");
  EXPECT_EQ(q["Priority"], "5");
  EXPECT_EQ(q["Description"], "trellis/default web");
  EXPECT_EQ(q["ClientToken"].size(), 36u);  // made for the call when none is given

  r.direction = "egress";
  r.cidr = "fd00::/8";
  rig.ecs->AuthorizeSecurityGroupRule("sg-1", r, "tok");
  q = rig.transport->Query(1);
  EXPECT_EQ(q["Action"], "AuthorizeSecurityGroupEgress");
  EXPECT_EQ(q["Ipv6DestCidrIp"], "fd00::/8");
  EXPECT_FALSE(q.contains("DestCidrIp"));

  // Revoke by id: the id alone (ECS refuses it together with the rule).
  r.rule_id = "sgr-123";
  rig.ecs->RevokeSecurityGroupRule("sg-1", r, "");
  q = rig.transport->Query(2);
  EXPECT_EQ(q["Action"], "RevokeSecurityGroupEgress");
  EXPECT_EQ(q["SecurityGroupRuleId.1"], "sgr-123");
  EXPECT_FALSE(q.contains("IpProtocol"));
  EXPECT_FALSE(q.contains("Ipv6DestCidrIp"));
  // Without an id: by the rule's parameters.
  r.rule_id.clear();
  r.direction = "ingress";
  r.cidr = "fd00::/8";
  rig.ecs->RevokeSecurityGroupRule("sg-1", r, "");
  q = rig.transport->Query(3);
  EXPECT_EQ(q["Action"], "RevokeSecurityGroup");
  EXPECT_EQ(q["Ipv6SourceCidrIp"], "fd00::/8");
  EXPECT_FALSE(q.contains("SecurityGroupRuleId.1"));
}

TEST(SecgroupEcsClient, DescribeReadsEcsNestingAndFollowsNextToken) {
  Rig rig;
  rig.transport->Answer(200, Json::parse(R"({
    "RequestId": "r1", "SecurityGroupId": "sg-1", "NextToken": "page2",
    "Permissions": {"Permission": [
      {"SecurityGroupRuleId": "sgr-1", "Direction": "ingress", "IpProtocol": "TCP",
       "PortRange": "80/80", "SourceCidrIp": "10.0.0.0/8", "Policy": "Accept", "Priority": "5",
       "Description": "trellis/default web", "NicType": "intranet", "CreateTime": "2024-01-01T00:00:00Z"},
      {"SecurityGroupRuleId": "sgr-2", "Direction": "egress", "IpProtocol": "ALL",
       "PortRange": "-1/-1", "DestCidrIp": "", "Ipv6DestCidrIp": "::/0", "Policy": "Drop",
       "Priority": "100"}
    ]}})"));
  rig.transport->Answer(200, Json::parse(R"({
    "RequestId": "r2", "NextToken": "",
    "Permissions": {"Permission": {"SecurityGroupRuleId": "sgr-3", "Direction": "ingress",
       "IpProtocol": "TCP", "PortRange": "22/22", "SourceGroupId": "sg-ops", "Policy": "Accept",
       "Priority": 1}}})"));
  auto rules = rig.ecs->DescribeSecurityGroupRules("sg-1", "");
  ASSERT_EQ(rig.transport->Count(), 2u);
  EXPECT_EQ(rig.transport->Query(1)["NextToken"], "page2");
  EXPECT_FALSE(rig.transport->Query(0).contains("Direction"));
  ASSERT_EQ(rules.size(), 3u);
  EXPECT_EQ(rules[0].rule_id, "sgr-1");
  EXPECT_EQ(rules[0].ip_protocol, "tcp");
  EXPECT_EQ(rules[0].policy, "accept");
  EXPECT_EQ(rules[0].priority, 5);
  EXPECT_EQ(rules[0].cidr, "10.0.0.0/8");
  EXPECT_EQ(rules[0].create_time, "2024-01-01T00:00:00Z");
  EXPECT_EQ(rules[1].direction, "egress");
  EXPECT_EQ(rules[1].cidr, "::/0");  // the IPv6 peer when the IPv4 one is empty
  EXPECT_EQ(rules[1].policy, "drop");
  EXPECT_EQ(rules[2].cidr, "");
  EXPECT_EQ(rules[2].peer_group, "sg-ops");
}

TEST(SecgroupEcsClient, ARevokedRuleThatIsGoneIsRecognised) {
  Rig rig;
  rig.transport->Answer(400, {{"RequestId", "r"},
                              {"Code", "InvalidParam.SecurityGroupRuleId"},
                              {"Message", "The specified SecurityGroupRuleId does not exist."}});
  rig.transport->Answer(
      400,
      {{"RequestId", "r"}, {"Code", "InvalidSecurityGroupRule.RuleNotExist"}, {"Message", "gone"}});
  rig.transport->Answer(
      400, {{"RequestId", "r"}, {"Code", "InvalidPriority.Malformed"}, {"Message", "bad"}});
  SecurityGroupRule r;
  r.rule_id = "sgr-gone";
  for (int i = 0; i < 3; ++i) {
    r.direction = i == 1 ? "egress" : "ingress";
    try {
      rig.ecs->RevokeSecurityGroupRule("sg-1", r, "");
      ADD_FAILURE() << "no error";
    } catch (const CloudError& e) {
      EXPECT_EQ(EcsClient::IsRuleGone(e), i < 2) << e.code();
    }
  }
}

TEST(SecgroupCloudAccess, ParsesTheSharedKeys) {
  std::vector<std::string> warnings;
  CloudAccess a = CloudAccess::Parse(
      {{"region", "cn-beijing"},
       {"ecs_endpoint", "http://127.0.0.1:1"},
       {"api_timeout", "2s"},
       {"api_call_timeout", 30},
       {"rate_limit", {{"default", 5}, {"RevokeSecurityGroup", {{"qps", 1}, {"burst", 2}}}}},
       {"max_concurrent", 3},
       {"other_key", "ignored: the caller checks"}},
      &warnings);
  EXPECT_EQ(a.region, "cn-beijing");
  EXPECT_EQ(a.api_timeout, Millis(2000));
  EXPECT_EQ(a.api_call_timeout, Millis(30000));
  EXPECT_EQ(a.default_rate.qps, 5);
  EXPECT_EQ(a.rate_limits.at("RevokeSecurityGroup").burst, 2);
  EXPECT_EQ(a.max_concurrent, 3);
  EXPECT_TRUE(warnings.empty());
  EXPECT_NO_THROW(a.CheckEndpoints());
  CloudAccess b = a;
  b.rate_limits.clear();
  EXPECT_TRUE(a.SameAccess(b));  // limits change live
  b.ecs_endpoint = "http://127.0.0.1:2";
  EXPECT_FALSE(a.SameAccess(b));
  a.ecs_endpoint = "http://ecs.example.com";  // plain HTTP off loopback
  try {
    a.CheckEndpoints();
    ADD_FAILURE();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("ecs_endpoint"), std::string::npos);
  }
  EXPECT_THROW(CloudAccess::Parse({{"rate_limit", {{"x", "fast"}}}}, &warnings),
               std::invalid_argument);
  EXPECT_THROW(CloudAccess::Parse({{"max_concurrent", 0}}, &warnings), std::invalid_argument);
  EXPECT_EQ(ParseDuration(Json("500ms"), "f"), Millis(500));
  EXPECT_EQ(ParseDuration(Json("5m"), "f"), Millis(300000));
  EXPECT_EQ(ParseDuration(Json(1.5), "f"), Millis(1500));
  EXPECT_THROW(ParseDuration(Json("-1s"), "f"), std::invalid_argument);
}

}  // namespace
}  // namespace trellis::aliyun
