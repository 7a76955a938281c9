// secgroup.so through the host's own module wrapper (the ABI path trellisd
// takes): leadership from the host's election overrides the config switch,
// a standby refuses to sync, a cloud that does not answer fails the sync
// with a report (never a secret), and destroy() ends the loop while it is
// backing off.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "core/metrics.h"
#include "core/module.h"
#include "core/plugin_loader.h"
#include "core/store.h"
#include "harness.h"

namespace trellis {
namespace {

class NoServices : public HostServices {
 public:
  Status AcquireAddresses(const trellis_pod*, uint8_t, uint32_t, trellis_address*, uint32_t,
                          uint32_t*) override {
    return absl::UnavailableError("none");
  }
  Status ReleaseAddresses(const trellis_address*, uint32_t) override { return absl::OkStatus(); }
  void HealthChanged(const std::string& module, const std::string& reason) override {
    health_changes++;
  }
  int health_changes = 0;
};

class SecgroupPlugin : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = Store::Open(tmp_ / "state.db");
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    auto plugin = LoadedPlugin::Load(plugins_.path() / "secgroup.so");
    ASSERT_TRUE(plugin.ok()) << plugin.status();
    plugin_ = *plugin;
  }
  std::unique_ptr<Module> Create(const Json& config) {
    ModuleConfig mc;
    mc.name = "secgroup";
    mc.plugin = "secgroup";
    mc.enabled = true;
    mc.config = config;
    auto m = Module::Create(mc, plugin_, store_.get(), &metrics_, &services_);
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? *std::move(m) : nullptr;
  }
  // Nothing listens on port 1 of loopback: every call is refused at once.
  static Json Unreachable() {
    return {
        {"security_groups", {"sg-x"}},
        {"region", "cn-hangzhou"},
        {"ecs_endpoint", "http://127.0.0.1:1"},
        {"metadata_endpoint", "http://127.0.0.1:1"},
        {"access_key", "LTAI-plugin-test"},
        {"secret_key", "plugin-test-secret"},
        {"api_timeout", "200ms"},
        {"api_call_timeout", "1s"},
        {"sync_interval", "1h"},
        {"rules", {{{"protocol", "tcp"}, {"port_range", "80/80"}, {"source_cidr", "10.0.0.0/8"}}}}};
  }

  test::TempDir tmp_;
  test::PluginDir plugins_;
  std::unique_ptr<Store> store_;
  MetricsRegistry metrics_;
  NoServices services_;
  std::shared_ptr<LoadedPlugin> plugin_;
};

TEST_F(SecgroupPlugin, TheHostsElectionDecidesOverTheConfig) {
  auto m = Create(Unreachable());
  ASSERT_TRUE(m);
  EXPECT_TRUE(m->has_secgroup());
  auto st = m->QueryStatus();
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ((*st)["role"], "standby");
  EXPECT_EQ((*st)["message"].get<std::string>().rfind("standby: no leader configured", 0), 0u)
      << st->dump();
  EXPECT_EQ((*st)["healthy"], true);

  auto sync = m->SecgroupReconcile(false);
  ASSERT_FALSE(sync.ok());
  EXPECT_EQ(sync.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(sync.status().message().find("standby"), std::string::npos);

  ASSERT_TRUE(m->SecgroupSetLeader(true).ok());
  st = m->QueryStatus();
  EXPECT_EQ((*st)["role"], "leader");
  EXPECT_EQ((*st)["role_reason"], "elected by the host");
  EXPECT_NE(metrics_.Render().find("trellis_secgroup_leader 1"), std::string::npos);
  EXPECT_GE(services_.health_changes, 1);

  // The election wins over `leader: true` in a new config too.
  ASSERT_TRUE(m->SecgroupSetLeader(false).ok());
  ModuleConfig mc;
  mc.name = "secgroup";
  mc.plugin = "secgroup";
  mc.enabled = true;
  mc.config = Unreachable();
  mc.config["leader"] = true;
  ASSERT_TRUE(m->Reconfigure(mc).ok());
  st = m->QueryStatus();
  EXPECT_EQ((*st)["role"], "standby");
  EXPECT_EQ((*st)["message"], "standby: another node was elected by the host");
  EXPECT_NE(metrics_.Render().find("trellis_secgroup_leader 0"), std::string::npos);
}

TEST_F(SecgroupPlugin, AnUnreachableCloudFailsTheSyncWithAReport) {
  Json cfg = Unreachable();
  cfg["leader"] = true;
  auto m = Create(cfg);
  ASSERT_TRUE(m);
  auto diff = m->SecgroupReconcile(true);
  ASSERT_TRUE(diff.ok()) << diff.status();
  EXPECT_EQ((*diff)["result"], "failed") << diff->dump();
  const Json& group = (*diff)["security_groups"][0];
  EXPECT_EQ(group["id"], "sg-x");
  EXPECT_NE(group["error"].get<std::string>().find("DescribeSecurityGroupAttribute"),
            std::string::npos);
  EXPECT_EQ(diff->dump().find("plugin-test-secret"), std::string::npos);
  EXPECT_NE((*diff)["text"].get<std::string>().find("sg-x: could not be read"), std::string::npos);
  auto sync = m->SecgroupReconcile(false);
  ASSERT_TRUE(sync.ok()) << sync.status();
  EXPECT_EQ((*sync)["result"], "failed");
  std::string rendered = metrics_.Render();
  EXPECT_EQ(rendered.find("trellis_secgroup_syncs_total{result=\"failed\"} 0\n"),
            std::string::npos);
  EXPECT_NE(rendered.find("trellis_secgroup_syncs_total{result=\"failed\"}"), std::string::npos);
  EXPECT_NE(rendered.find(
                "trellis_secgroup_openapi_errors_total{action=\"DescribeSecurityGroupAttribute\""),
            std::string::npos)
      << rendered;
  EXPECT_EQ(rendered.find("plugin-test-secret"), std::string::npos);
  auto st = m->QueryStatus();
  EXPECT_EQ((*st)["degraded"], true);
  EXPECT_EQ((*st)["message"].get<std::string>().rfind("leader: last sync failed", 0), 0u)
      << st->dump();
  // destroy() cancels the loop's back-off and joins it.
  m.reset();
  EXPECT_EQ(metrics_.Render().find("trellis_secgroup_"), std::string::npos);
}

TEST_F(SecgroupPlugin, ConfigsAreValidatedBeforeCreate) {
  char buf[512] = {};
  trellis_error err{buf, sizeof buf};
  Json bad = Unreachable();
  bad["rules"][0]["port_range"] = "80";
  EXPECT_EQ(plugin_->descriptor().d.validate(bad.dump().c_str(), &err), TRELLIS_E_INVALID);
  EXPECT_EQ(std::string(buf).rfind("rules[0].port_range:", 0), 0u) << buf;
  EXPECT_EQ(plugin_->descriptor().d.validate(Unreachable().dump().c_str(), &err), TRELLIS_OK);
}

}  // namespace
}  // namespace trellis
