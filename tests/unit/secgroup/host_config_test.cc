// The host's side of the secgroup module's config: Terway's
// security_conf.security_group_sync becomes the module, and the module
// defaults to the eni module's security group(s) and cloud access.
#include <gtest/gtest.h>

#include <fstream>

#include "core/config.h"
#include "harness.h"

namespace trellis {
namespace {

TEST(SecgroupHostConfig, TerwayConfigMapGivesTheEniModulesGroupAndCloudAccess) {
  test::TempDir tmp;
  std::ofstream(tmp / "eni_conf") << R"({"version": "1", "region": "cn-hangzhou",
    "security_group": "sg-eni", "vswitches": ["vsw-a"], "access_key": "LTAI-k",
    "secret_key": "s3cret", "ecs_endpoint": "http://127.0.0.1:18080"})";
  std::ofstream(tmp / "security_conf") << R"({"security_group_sync": {"enable": true,
    "sync_interval": 300, "rules": [{"direction": "ingress", "protocol": "tcp",
    "port_range": "80/80", "source_cidr": "10.0.0.0/8"}]}})";
  auto cfg = LoadNodeConfig(tmp.path());
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  ASSERT_TRUE(cfg->Enabled("secgroup"));
  const Json& sg = cfg->modules.at("secgroup").config;
  EXPECT_EQ(sg["security_groups"], Json::array({"sg-eni"}));
  EXPECT_EQ(sg["region"], "cn-hangzhou");
  EXPECT_EQ(sg["ecs_endpoint"], "http://127.0.0.1:18080");
  EXPECT_EQ(sg["access_key"], "LTAI-k");
  EXPECT_EQ(sg["secret_key"], "s3cret");
  EXPECT_EQ(sg["sync_interval"], 300);
  EXPECT_FALSE(sg.contains("enable"));     // the module switch
  EXPECT_FALSE(sg.contains("vswitches"));  // only what the sync needs
  // Printed configs never show the secret.
  EXPECT_EQ(Redact(NodeConfigToJson(*cfg))["modules"]["secgroup"]["config"]["secret_key"],
            "<redacted>");
}

TEST(SecgroupHostConfig, OwnSettingsWin) {
  auto cfg = ParseNodeConfig(R"(
modules:
  eni:
    enabled: false
    config: {security_groups: [sg-1, sg-2], region: cn-a, credential_path: /etc/eni-creds,
             metadata_endpoint: "http://127.0.0.1:1"}
  secgroup:
    enabled: true
    config: {security_group: sg-own, region: cn-b, ram_role: sync-role}
)",
                             "test");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  const Json& sg = cfg->modules.at("secgroup").config;
  EXPECT_EQ(sg["security_group"], "sg-own");
  EXPECT_FALSE(sg.contains("security_groups"));
  EXPECT_EQ(sg["region"], "cn-b");
  EXPECT_EQ(sg["metadata_endpoint"], "http://127.0.0.1:1");  // not given: inherited
  // A credential source of its own: none of the eni module's.
  EXPECT_EQ(sg["ram_role"], "sync-role");
  EXPECT_FALSE(sg.contains("credential_path"));
}

TEST(SecgroupHostConfig, NothingToInheritWithoutAnEniModule) {
  auto cfg = ParseNodeConfig("modules: {secgroup: {enabled: true, config: {leader: true}}}", "t");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->modules.at("secgroup").config, Json({{"leader", true}}));
  // Both groups of an eni module with a list, once each.
  cfg = ParseNodeConfig(
      "modules: {eni: {config: {security_group: sg-1, security_groups: [sg-1, sg-2]}}, "
      "secgroup: {config: {}}}",
      "t");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->modules.at("secgroup").config["security_groups"], Json::array({"sg-1", "sg-2"}));
}

}  // namespace
}  // namespace trellis
