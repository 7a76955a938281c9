// The eni module's config: the guide's eni_conf as is, trellis's keys, and
// refusals that name the key.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <trellis/types.hpp>

#include "config.h"

namespace trellis::eni {
namespace {

std::string ErrorOf(const Json& j) {
  try {
    EniConfig::Parse(j);
  } catch (const sdk::Error& e) {
    EXPECT_EQ(e.code(), TRELLIS_E_INVALID);
    return e.what();
  }
  return "";
}

TEST(EniConfig, TheGuidesEniConfParses) {
  // The production guide's eni_conf, "version" removed by the Terway mapping.
  Json j = Json::parse(R"({
      "access_key": "", "secret_key": "",
      "region": "cn-hangzhou",
      "vswitches": ["vsw-xxxxxxxxx", "vsw-yyyyyyyyy"],
      "security_group": "sg-xxxxxxxxx",
      "eni_tags": {"KubernetesCluster": "prod-cluster", "Environment": "production"},
      "eni_count_max": 5, "eni_count_min": 1,
      "eni_gc_threshold": 3, "eni_gc_interval": 300,
      "eni_create_retry": 3, "eni_create_timeout": 300})");
  EniConfig c = EniConfig::Parse(j);
  EXPECT_EQ(c.region, "cn-hangzhou");
  EXPECT_EQ(c.vswitches, (std::vector<std::string>{"vsw-xxxxxxxxx", "vsw-yyyyyyyyy"}));
  EXPECT_EQ(c.security_groups, (std::vector<std::string>{"sg-xxxxxxxxx"}));
  EXPECT_EQ(c.eni_tags.at("KubernetesCluster"), "prod-cluster");
  EXPECT_EQ(c.eni_count_max, 5);
  EXPECT_EQ(c.eni_count_min, 1);
  EXPECT_EQ(c.eni_gc_threshold, Millis(3000));  // bare numbers are seconds
  EXPECT_EQ(c.eni_gc_interval, Millis(300000));
  EXPECT_EQ(c.eni_create_timeout, Millis(300000));
  EXPECT_EQ(c.eni_create_retry, 3);
  EXPECT_TRUE(c.warnings.empty());  // empty inline keys are not inline keys
  EXPECT_EQ(c.VSwitchesFor("cn-hangzhou-a"), c.vswitches);
}

TEST(EniConfig, TrellisKeysZonesAndRoutingPolicy) {
  setenv("TERWAY_ENI_MAX_CONCURRENT", "7", 1);
  setenv("TERWAY_ROUTE_TABLE_ID_BASE", "1000", 1);
  Json j = Json::parse(R"({
      "vswitches": {"cn-hangzhou-a": ["vsw-a1"], "cn-hangzhou-b": ["vsw-b1", "vsw-b2"]},
      "security_groups": ["sg-1", "sg-2"], "security_group": "sg-1",
      "min_pool_size": 2, "max_pool_size": 8, "reuse_delay": "500ms",
      "rate_limit": {"CreateNetworkInterface": {"qps": 1, "burst": 3}, "default": 20},
      "ecs_endpoint": "http://127.0.0.1:18080", "access_key": "LTAI-x", "secret_key": "s",
      "routingPolicy": {"defaultENI": "primary",
                        "policyRoutes": [{"destination": "10.0.0.0/8", "eni": "self"},
                                         {"destination": "172.16.0.0/12", "eni": "eni-2"}]}})");
  EniConfig c = EniConfig::Parse(j);
  unsetenv("TERWAY_ENI_MAX_CONCURRENT");
  unsetenv("TERWAY_ROUTE_TABLE_ID_BASE");
  EXPECT_EQ(c.max_concurrent, 7);
  EXPECT_EQ(c.route_table_base, 1000u);
  EXPECT_EQ(c.VSwitchesFor("cn-hangzhou-b"), (std::vector<std::string>{"vsw-b1", "vsw-b2"}));
  EXPECT_TRUE(c.VSwitchesFor("cn-hangzhou-c").empty());
  EXPECT_EQ(c.security_groups, (std::vector<std::string>{"sg-1", "sg-2"}));
  EXPECT_EQ(c.reuse_delay, Millis(500));
  EXPECT_EQ(c.rate_limits.at("CreateNetworkInterface").burst, 3);
  EXPECT_EQ(c.default_rate.qps, 20);
  EXPECT_EQ(c.default_route.ref, "primary");
  ASSERT_EQ(c.policy_routes.size(), 2u);
  EXPECT_EQ(c.policy_routes[1].via.ref, "eni-2");
  ASSERT_EQ(c.warnings.size(), 1u);  // inline keys: accepted, with a warning
  EXPECT_EQ(c.warnings[0].find("LTAI-x"), std::string::npos);
  EXPECT_EQ(c.warnings[0].find("\"s\""), std::string::npos);
}

TEST(EniConfig, RefusalsNameTheKey) {
  Json base = {{"security_group", "sg-1"}};
  auto with = [&](Json patch) {
    Json j = base;
    j.merge_patch(patch);
    return ErrorOf(j);
  };
  EXPECT_NE(ErrorOf(Json::object()).find("security_group: required"), std::string::npos);
  EXPECT_NE(with({{"vswitchs", Json::array()}}).find("vswitchs: unknown key"), std::string::npos);
  EXPECT_NE(with({{"min_pool_size", 9}, {"max_pool_size", 3}}).find("min_pool_size"),
            std::string::npos);
  EXPECT_NE(with({{"reuse_delay", "soon"}}).find("reuse_delay: expected a duration"),
            std::string::npos);
  // Slots base+1..base+64 must miss the kernel's tables 253-255.
  for (int base : {189, 200, 252, 253, 254}) {
    EXPECT_NE(with({{"route_table_base", base}}).find("route_table_base"), std::string::npos)
        << base;
  }
  for (int base : {100, 188, 255, 1000}) {
    EXPECT_EQ(with({{"route_table_base", base}}), "") << base;
  }
  EXPECT_NE(with({{"ip_stack", "dual"}}).find("ip_stack"), std::string::npos);
  EXPECT_NE(with({{"access_key", "LTAI-only"}}).find("secret_key"), std::string::npos);
  EXPECT_NE(with({{"eni_tags", {{"trellis.io/cluster", "x"}}}}).find("reserved"),
            std::string::npos);
  EXPECT_NE(with({{"routing_policy", {{"policy_routes", {{{"destination", "10.0.0.0/33"},
                                                          {"eni", "self"}}}}}}})
                .find("routing_policy.policy_routes[0].destination"),
            std::string::npos);
  EXPECT_NE(with({{"routing_policy", {{"default_eni", "eth1"}}}}).find("default_eni"),
            std::string::npos);
  EXPECT_NE(with({{"eni_count_min", 4}, {"eni_count_max", 2}}).find("eni_count_min"),
            std::string::npos);
  EXPECT_NE(with({{"rate_limit", {{"CreateNetworkInterface", {{"qsp", 1}}}}}})
                .find("rate_limit.CreateNetworkInterface.qsp"),
            std::string::npos);
  // max_pool_size follows a larger min_pool_size when it is not given.
  Json j = base;
  j["min_pool_size"] = 12;
  EXPECT_EQ(EniConfig::Parse(j).max_pool_size, 12);
}

}  // namespace
}  // namespace trellis::eni
