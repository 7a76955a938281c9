// The secgroup module's config: Terway's security_group_sync keys, rule
// normalisation, and refusals that name the key and the reason.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <trellis/types.hpp>

#include <string>

#include "config.h"

namespace trellis::secgroup {
namespace {

Json Base() {
  return Json::parse(R"({
    "security_groups": ["sg-test"],
    "sync_interval": 300,
    "rules": [
      {"direction": "ingress", "protocol": "TCP", "port_range": "80/80", "source_cidr": "10.1.2.3/8",
       "description": "web"},
      {"direction": "egress", "protocol": "udp", "port_range": "53/53", "dest_cidr": "192.168.0.0/16",
       "policy": "drop", "priority": 10},
      {"protocol": "icmp", "source_cidr": "10.0.0.0/8"}
    ]
  })");
}

// The message of the sdk::Error Parse throws, or "" when it accepts.
std::string Refusal(const Json& j) {
  try {
    SecgroupConfig::Parse(j);
    return "";
  } catch (const sdk::Error& e) {
    EXPECT_EQ(e.code(), TRELLIS_E_INVALID);
    return e.what();
  }
}

TEST(SecgroupConfig, ParsesTerwaysRulesAndNormalisesThem) {
  SecgroupConfig c = SecgroupConfig::Parse(Base());
  EXPECT_EQ(c.security_groups, std::vector<std::string>{"sg-test"});
  EXPECT_EQ(c.sync_interval, Millis(300000));
  ASSERT_EQ(c.rules.size(), 3u);
  const Rule& web = c.rules[0];
  EXPECT_EQ(web.direction, "ingress");
  EXPECT_EQ(web.protocol, "tcp");     // lower case, as ECS compares
  EXPECT_EQ(web.cidr, "10.0.0.0/8");  // host bits cleared
  EXPECT_EQ(web.policy, "accept");    // default
  EXPECT_EQ(web.priority, 1);         // default
  EXPECT_EQ(web.description, "web");
  EXPECT_EQ(web.index, 0);
  EXPECT_EQ(web.Summary(), "ingress tcp 80/80 from 10.0.0.0/8 accept priority 1");
  EXPECT_EQ(c.rules[1].direction, "egress");
  EXPECT_EQ(c.rules[1].policy, "drop");
  EXPECT_EQ(c.rules[1].priority, 10);
  EXPECT_EQ(c.rules[2].direction, "ingress");  // default
  EXPECT_EQ(c.rules[2].port_range, "-1/-1");   // icmp has no ports
  EXPECT_FALSE(c.dry_run);
  EXPECT_FALSE(c.leader.has_value());
  EXPECT_DOUBLE_EQ(c.max_revoke_fraction, 0.5);
  EXPECT_EQ(c.Owner(), "trellis/default");
  EXPECT_FALSE(c.revoke_on_disable);
  EXPECT_TRUE(c.warnings.empty());
  Json j = web.ToJson();
  EXPECT_EQ(j["source_cidr"], "10.0.0.0/8");
  EXPECT_FALSE(j.contains("dest_cidr"));
  EXPECT_EQ(c.rules[1].ToJson()["dest_cidr"], "192.168.0.0/16");
}

TEST(SecgroupConfig, OwnKeysAndCloudAccess) {
  Json j = Base();
  j["security_group"] = "sg-two";
  j["dry_run"] = true;
  j["leader"] = true;
  j["max_revoke_fraction"] = 0.25;
  j["cluster_id"] = "prod-1";
  j["revoke_on_disable"] = true;
  j["sync_interval"] = "2m";
  j["ecs_endpoint"] = "http://127.0.0.1:18080";
  j["metadata_endpoint"] = "http://127.0.0.1:18081";
  j["rate_limit"] = {{"AuthorizeSecurityGroup", {{"qps", 2}, {"burst", 1}}}};
  SecgroupConfig c = SecgroupConfig::Parse(j);
  EXPECT_EQ(c.security_groups, (std::vector<std::string>{"sg-two", "sg-test"}));
  EXPECT_TRUE(c.dry_run);
  EXPECT_EQ(c.leader, true);
  EXPECT_DOUBLE_EQ(c.max_revoke_fraction, 0.25);
  EXPECT_EQ(c.Owner(), "trellis/prod-1");
  EXPECT_TRUE(c.revoke_on_disable);
  EXPECT_EQ(c.sync_interval, Millis(120000));
  EXPECT_EQ(c.cloud.ecs_endpoint, "http://127.0.0.1:18080");
  EXPECT_EQ(c.cloud.rate_limits.at("AuthorizeSecurityGroup").qps, 2);
  EXPECT_EQ(c.cloud.rate_limits.at("AuthorizeSecurityGroup").burst, 1);
}

TEST(SecgroupConfig, ClusterIdComesFromTheEnvironmentUnlessConfigured) {
  setenv("CLUSTER_ID", "c-from-env", 1);
  EXPECT_EQ(SecgroupConfig::Parse(Base()).Owner(), "trellis/c-from-env");
  Json j = Base();
  j["cluster_id"] = "mine";
  EXPECT_EQ(SecgroupConfig::Parse(j).Owner(), "trellis/mine");
  setenv("CLUSTER_ID", "bad id!", 1);
  EXPECT_NE(Refusal(Base()).find("CLUSTER_ID (environment)"), std::string::npos);
  unsetenv("CLUSTER_ID");
}

TEST(SecgroupConfig, RefusalsNameTheKey) {
  auto with = [](const std::string& path, const Json& v) {
    Json j = Base();
    j[Json::json_pointer(path)] = v;
    return Refusal(j);
  };
  auto starts = [](const std::string& msg, const std::string& prefix) {
    return msg.rfind(prefix, 0) == 0;
  };
  EXPECT_TRUE(starts(with("/frobnicate", 1), "frobnicate: unknown key")) << with("/frobnicate", 1);
  EXPECT_TRUE(
      starts(with("/enable", true), "enable: the module switch is modules.secgroup.enabled"));
  EXPECT_TRUE(starts(with("/rules/0/direction", "inbound"),
                     "rules[0].direction: expected ingress or egress"));
  EXPECT_TRUE(starts(with("/rules/0/protocol", "sctp"), "rules[0].protocol: expected tcp"));
  EXPECT_TRUE(starts(with("/rules/0/port_range", "80"), "rules[0].port_range: expected FROM/TO"));
  EXPECT_TRUE(starts(with("/rules/0/port_range", "90/80"),
                     "rules[0].port_range: tcp takes ports 1 to 65535"));
  EXPECT_TRUE(starts(with("/rules/0/port_range", "-1/-1"), "rules[0].port_range: tcp takes ports"));
  EXPECT_TRUE(starts(with("/rules/2/port_range", "1/2"), "rules[2].port_range: icmp has no ports"));
  EXPECT_TRUE(starts(with("/rules/0/source_cidr", "10.0.0.0/33"),
                     "rules[0].source_cidr: expected an IPv4 or IPv6 CIDR"));
  EXPECT_TRUE(starts(with("/rules/0/dest_cidr", "10.0.0.0/8"),
                     "rules[0].dest_cidr: not taken on an ingress rule"));
  EXPECT_TRUE(starts(with("/rules/1/source_cidr", "10.0.0.0/8"),
                     "rules[1].source_cidr: not taken on an egress rule"));
  EXPECT_TRUE(starts(with("/rules/0/policy", "allow"), "rules[0].policy: expected accept or drop"));
  EXPECT_TRUE(
      starts(with("/rules/0/priority", 101), "rules[0].priority: must be between 1 and 100"));
  EXPECT_TRUE(starts(with("/rules/0/allow_world_open", "yes"),
                     "rules[0].allow_world_open: expected true or false"));
  EXPECT_TRUE(starts(with("/rules/0/bogus", 1), "rules[0].bogus: unknown key"));
  EXPECT_TRUE(starts(with("/rules/2/source_cidr", "fd00::/8"), "rules[2].protocol: icmp is IPv4"));
  EXPECT_TRUE(starts(with("/rules/0/description", std::string(600, 'x')),
                     "rules[0].description: too long"));
  EXPECT_TRUE(starts(with("/security_groups", Json::array({"default"})),
                     "security_groups[0]: expected a security group id"));
  EXPECT_TRUE(starts(with("/security_groups", Json::array()), "security_groups: required"));
  EXPECT_TRUE(starts(with("/sync_interval", "soon"), "sync_interval: expected a duration"));
  EXPECT_TRUE(starts(with("/sync_interval", "500ms"), "sync_interval: must be at least 1s"));
  EXPECT_TRUE(
      starts(with("/max_revoke_fraction", 1.5), "max_revoke_fraction: expected a number from 0"));
  EXPECT_TRUE(starts(with("/leader", "yes"), "leader: expected true or false"));
  EXPECT_TRUE(starts(with("/cluster_id", "a b"), "cluster_id: expected 1 to 64"));
  EXPECT_TRUE(starts(with("/ecs_endpoint", "http://ecs.example.com"), "ecs_endpoint"));
  EXPECT_TRUE(starts(with("/access_key", "LTAI-x"),
                     "secret_key: access_key and secret_key must be given together"));
  Json both = Base();
  both["leader"] = true;
  both["leader_node"] = "n1";
  EXPECT_TRUE(starts(Refusal(both), "leader_node: give either leader"));
  // A rule twice (after normalisation) is a mistake worth naming.
  Json dup = Base();
  dup["rules"].push_back(
      {{"protocol", "tcp"}, {"port_range", "80/80"}, {"source_cidr", "10.9.9.9/8"}});
  EXPECT_EQ(
      Refusal(dup),
      "rules[3]: the same rule as rules[0] (ingress tcp 80/80 from 10.0.0.0/8 accept priority 1)");
  Json many = Base();
  many["rules"] = Json::array();
  for (int p = 1; p <= 201; ++p) {
    many["rules"].push_back({{"protocol", "tcp"},
                             {"port_range", std::to_string(p) + "/" + std::to_string(p)},
                             {"source_cidr", "10.0.0.0/8"}});
  }
  EXPECT_TRUE(starts(Refusal(many), "rules: ECS keeps at most 200 rules"));
  EXPECT_EQ(Refusal(Json::array()), "secgroup config: expected a map");
}

TEST(SecgroupConfig, SecretsNeverAppearInRefusals) {
  Json j = Base();
  j["access_key"] = "LTAI-visible-id";
  j["secret_key"] = 42;  // wrong type: the message names the key, not the value
  std::string msg = Refusal(j);
  EXPECT_EQ(msg, "secret_key: expected a string");
  j["secret_key"] = "very-secret-value";
  j["api_timeout"] = "1ms";
  msg = Refusal(j);
  EXPECT_EQ(msg.find("very-secret-value"), std::string::npos);
  EXPECT_EQ(msg, "api_timeout: must be at least 100ms");
  j["api_timeout"] = "1s";
  SecgroupConfig c = SecgroupConfig::Parse(j);
  ASSERT_EQ(c.warnings.size(), 1u);  // an inline secret deserves a warning
  EXPECT_NE(c.warnings[0].find("inline access_key"), std::string::npos);
  EXPECT_EQ(c.warnings[0].find("very-secret-value"), std::string::npos);
}

TEST(SecgroupConfig, WorldOpenRulesNeedConsentAndAreWarnedAbout) {
  Json j = Base();
  j["rules"] = Json::parse(R"([
    {"protocol": "tcp", "port_range": "443/443", "source_cidr": "0.0.0.0/0"},
    {"protocol": "tcp", "port_range": "80/80", "source_cidr": "0.0.0.0/0", "allow_world_open": true},
    {"protocol": "tcp", "port_range": "22/22", "source_cidr": "0.0.0.0/0", "policy": "drop"},
    {"protocol": "tcp", "port_range": "8080/8080", "source_cidr": "::/0"},
    {"direction": "egress", "protocol": "all", "dest_cidr": "0.0.0.0/0"}
  ])");
  SecgroupConfig c = SecgroupConfig::Parse(j);
  EXPECT_TRUE(c.rules[0].WorldOpen());
  EXPECT_TRUE(c.rules[1].WorldOpen());
  EXPECT_FALSE(c.rules[2].WorldOpen());  // a drop rule opens nothing
  EXPECT_TRUE(c.rules[3].WorldOpen());
  EXPECT_TRUE(c.rules[4].WorldOpen());
  ASSERT_EQ(c.warnings.size(), 3u);  // rules 0, 3 and 4: no consent
  EXPECT_NE(c.warnings[0].find("rules[0]"), std::string::npos);
  EXPECT_NE(c.warnings[0].find("allow_world_open"), std::string::npos);
  EXPECT_NE(c.warnings[1].find("rules[3]"), std::string::npos);
  EXPECT_NE(c.warnings[2].find("rules[4]"), std::string::npos);
}

TEST(SecgroupConfig, CanonicalCidrs) {
  EXPECT_EQ(CanonicalCidr("10.1.2.3/8"), "10.0.0.0/8");
  EXPECT_EQ(CanonicalCidr("10.1.2.3"), "10.1.2.3/32");
  EXPECT_EQ(CanonicalCidr("0.0.0.0/0"), "0.0.0.0/0");
  EXPECT_EQ(CanonicalCidr("10.1.2.255/31"), "10.1.2.254/31");
  EXPECT_EQ(CanonicalCidr("fd00:1:2::5/48"), "fd00:1:2::/48");
  EXPECT_EQ(CanonicalCidr("::/0"), "::/0");
  EXPECT_EQ(CanonicalCidr("10.0.0.0/33"), std::nullopt);
  EXPECT_EQ(CanonicalCidr("10.0.0/8"), std::nullopt);
  EXPECT_EQ(CanonicalCidr("10.0.0.0/"), std::nullopt);
  EXPECT_EQ(CanonicalCidr("sg-123"), std::nullopt);
}

TEST(SecgroupConfig, OwnerMarkRoundTripsThroughTheCloudForm) {
  SecgroupConfig c = SecgroupConfig::Parse(Base());
  aliyun::SecurityGroupRule cloud = ToCloud(c.rules[0], c.Owner());
  EXPECT_EQ(cloud.description, "trellis/default web");
  EXPECT_EQ(cloud.ip_protocol, "tcp");
  EXPECT_EQ(cloud.cidr, "10.0.0.0/8");
  bool owned = false;
  // ECS reports upper-case protocols and capitalised policies.
  cloud.ip_protocol = "TCP";
  cloud.policy = "Accept";
  Rule back = FromCloud(cloud, c.Owner(), &owned);
  EXPECT_TRUE(owned);
  EXPECT_EQ(back.Key(), c.rules[0].Key());
  EXPECT_EQ(back.description, "web");
  EXPECT_EQ(ToCloud(c.rules[2], c.Owner()).description, "trellis/default");

  EXPECT_TRUE(OwnedBy("trellis/default", "trellis/default"));
  EXPECT_TRUE(OwnedBy("trellis/default anything", "trellis/default"));
  EXPECT_FALSE(OwnedBy("trellis/default2", "trellis/default"));  // another cluster
  EXPECT_FALSE(OwnedBy("trellis/defaul", "trellis/default"));
  EXPECT_FALSE(OwnedBy("ops: trellis/default", "trellis/default"));
  EXPECT_FALSE(OwnedBy("", "trellis/default"));
  aliyun::SecurityGroupRule foreign;
  foreign.direction = "ingress";
  foreign.ip_protocol = "TCP";
  foreign.port_range = "22/22";
  foreign.peer_group = "sg-other";  // a group, not a CIDR
  foreign.description = "ops";
  Rule f = FromCloud(foreign, c.Owner(), &owned);
  EXPECT_FALSE(owned);
  EXPECT_EQ(f.cidr, "sg-other");
  EXPECT_EQ(f.description, "ops");
}

}  // namespace
}  // namespace trellis::secgroup
