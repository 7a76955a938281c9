// Live reload through a ConfigMap volume written exactly as the kubelet
// writes it (timestamped directory, `..data` swapped by rename, keys as
// symlinks through `..data`): modules flip on and off within 2 s without a
// restart, a changed module config reaches reconfigure(), an invalid change
// leaves the running modules untouched and is reported, a transition that
// would strand a pod is refused, and the Terway keys are read and mapped.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "configmap.h"
#include "harness.h"

namespace trellis::test {
namespace {

using namespace std::chrono_literals;

fs::path Fixture(const std::string& name) {
  return fs::path(TRELLIS_TEST_FIXTURE_DIR) / ("fx_" + name + ".so");
}

std::map<std::string, Json> Modules(const Daemon& d) {
  std::map<std::string, Json> out;
  const Json j = d.Ctl({"modules", "-o", "json"}).json();
  if (!j.is_object()) return out;
  for (const auto& m : j.value("modules", Json::array())) {
    Json copy = m;
    // The plugin's status document (empty when the module does not run), and
    // the reload count as a number (proto3 JSON prints 64-bit integers as text).
    const std::string status = m.value("status_json", "");
    copy["status"] = status.empty() ? Json::object() : Json::parse(status, nullptr, false);
    copy["reload_count"] = std::stoull(m.value("reload_count", "0"));
    out[m["name"]] = copy;
  }
  return out;
}

std::string State(const Daemon& d, const std::string& module) {
  auto mods = Modules(d);
  return mods.contains(module) ? mods[module]["state"].get<std::string>() : "absent";
}

Json DaemonStatus(const Daemon& d) { return d.Ctl({"status", "-o", "json"}).json(); }

std::string ConfigError(const Daemon& d) {
  return DaemonStatus(d).value("last_config_error", std::string("<no answer>"));
}

// What an operator would compare before and after a refused change.
Json Snapshot(const Daemon& d) {
  Json s = Json::object();
  for (auto& [name, m] : Modules(d)) {
    s[name] = {{"state", m["state"]}, {"reload_count", m["reload_count"]},
               {"plugin_path", m["plugin_path"]}, {"config", m["status"].value("config", Json())}};
  }
  return s;
}

std::vector<std::string> Lines(const fs::path& file) {
  std::ifstream in(file);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

class LiveReload : public ::testing::Test {
 protected:
  LiveReload() : cm_(tmp_ / "config"), plugins_({Fixture("echo")}) {}

  std::string Yaml(const std::string& modules) const {
    return "modules:\n  ipam: {config: {ranges: [{subnet: 10.247.0.0/24}], reuse_delay: 0}}\n" +
           modules;
  }
  void Write(const std::string& trellis_yaml) { cm_.Write({{"trellis.yaml", trellis_yaml}}); }
  std::unique_ptr<Daemon> StartDaemon() {
    auto d = std::make_unique<Daemon>(DaemonOptions{.config_path = cm_.path(),
                                                    .plugin_dir = plugins_.path()});
    std::string why;
    EXPECT_TRUE(d->Start(&why)) << why;
    return d;
  }

  TempDir tmp_;
  ConfigMapDir cm_;
  PluginDir plugins_;
};

TEST_F(LiveReload, ModulesFlipOnAndOffWithoutARestart) {
  Write(Yaml("  qos: false\n  policy: false\n  echo: {plugin: fx_echo, enabled: false}\n"));
  auto d = StartDaemon();
  const pid_t pid = d->pid();
  const auto started = DaemonStatus(*d)["started_unix"];
  ASSERT_EQ(State(*d, "qos"), "disabled");

  struct Step {
    std::string yaml;
    std::map<std::string, std::string> want;
  };
  const std::vector<Step> steps = {
      {Yaml("  qos: true\n  policy: true\n  echo: {plugin: fx_echo, enabled: false}\n"),
       {{"qos", "running"}, {"policy", "running"}, {"echo", "disabled"}}},
      {Yaml("  qos: false\n  policy: true\n  echo: {plugin: fx_echo, enabled: true}\n"),
       {{"qos", "disabled"}, {"policy", "running"}, {"echo", "running"}}},
      {Yaml("  qos: true\n  policy: false\n  echo: {plugin: fx_echo, enabled: false}\n"),
       {{"qos", "running"}, {"policy", "disabled"}, {"echo", "disabled"}}},
      // A module that disappears from the config is stopped too.
      {Yaml("  policy: false\n"), {{"qos", "absent"}, {"policy", "disabled"}, {"echo", "absent"}}},
  };
  for (size_t i = 0; i < steps.size(); ++i) {
    SCOPED_TRACE("step " + std::to_string(i));
    Write(steps[i].yaml);
    auto swapped = std::chrono::steady_clock::now();
    bool seen = WaitFor(
        [&] {
          auto mods = Modules(*d);
          for (const auto& [m, state] : steps[i].want) {
            std::string now = mods.contains(m) ? mods[m]["state"].get<std::string>() : "absent";
            if (now != state) return false;
          }
          return true;
        });
    auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - swapped);
    // The issue's 2 s goal is a figure, not an assertion: each step prints
    // its latency; a shared CI machine must not turn a slow step into a
    // failure.
    EXPECT_TRUE(seen) << "not applied; modules: " << Snapshot(*d).dump()
                      << "\nlog:\n" << d->Log();
    std::cerr << "[ step " << i << " seen in trellisctl modules after " << took.count() << " ms ]\n";
    EXPECT_EQ(ConfigError(*d), "");
  }
  EXPECT_EQ(d->pid(), pid);
  EXPECT_TRUE(d->Running());
  EXPECT_EQ(DaemonStatus(*d)["started_unix"], started);
}

// reconfigure() on a config change; deactivate() then destroy() when the
// module is disabled; destroy() alone when the daemon stops.
TEST_F(LiveReload, ConfigChangeReconfiguresAndLifecycleFollowsTheAbi) {
  const fs::path journal = tmp_ / "journal";
  auto echo = [&](int level, bool enabled = true) {
    return Yaml("  qos: false\n  policy: false\n  echo:\n    plugin: fx_echo\n    enabled: " +
                std::string(enabled ? "true" : "false") + "\n    config: {journal: " +
                journal.string() + ", level: " + std::to_string(level) + "}\n");
  };
  Write(echo(1));
  auto d = StartDaemon();
  auto before = Modules(*d)["echo"];
  ASSERT_EQ(before["state"], "running");
  EXPECT_EQ(before["status"]["config"]["level"], 1);
  EXPECT_EQ(before["plugin_version"], "1.2.3");

  Write(echo(2));
  ASSERT_TRUE(WaitFor([&] { return Modules(*d)["echo"]["status"]["config"]["level"] == 2; }))
      << Snapshot(*d).dump();
  auto after = Modules(*d)["echo"];
  EXPECT_EQ(after["status"]["reconfigures"], 1);
  EXPECT_EQ(after["reload_count"], before["reload_count"].get<int>() + 1);
  EXPECT_EQ(after["status"]["module"], "echo");

  Write(echo(2, false));
  ASSERT_TRUE(WaitFor([&] { return State(*d, "echo") == "disabled"; }));
  Write(echo(3));
  ASSERT_TRUE(WaitFor([&] { return State(*d, "echo") == "running"; }));
  EXPECT_EQ(Modules(*d)["echo"]["status"]["reconfigures"], 0);  // a new instance
  d->Stop();
  EXPECT_EQ(Lines(journal), (std::vector<std::string>{"echo create", "echo reconfigure",
                                                      "echo deactivate", "echo destroy",
                                                      "echo create", "echo destroy"}));
}

TEST_F(LiveReload, InvalidChangesLeaveTheRunningModulesUntouchedAndAreReported) {
  const std::string good =
      Yaml("  qos: false\n  policy: true\n  echo: {plugin: fx_echo, config: {level: 1}}\n");
  Write(good);
  auto d = StartDaemon();
  const Json running = Snapshot(*d);
  ASSERT_EQ(running["echo"]["state"], "running");
  ASSERT_EQ(running["policy"]["state"], "running");

  struct Bad {
    std::string what, yaml, error;
  };
  const std::string origin = cm_.path().string();
  const std::vector<Bad> bad = {
      {"bad YAML", "modules: {ipam: {\n", origin + "/trellis.yaml: invalid YAML at line 2"},
      {"unknown key", Yaml("  qos: false\n  policy: true\n  echo: {plugin: fx_echo, enable: true}\n"),
       origin + ": modules.echo.enable: unknown key (known: enabled, plugin, config)"},
      {"validate refuses",
       Yaml("  qos: false\n  policy: true\n  echo: {plugin: fx_echo, config: {reject: please}}\n"),
       "config refused, running modules unchanged: modules.echo.config: reject: refused on "
       "request (\"please\")"},
      // All or nothing: the valid half (policy off, the log level) is not
      // applied either.
      {"valid and invalid together",
       "log_level: debug\n" +
           Yaml("  qos: false\n  policy: false\n  echo: {plugin: fx_echo, config: {reject: 1}}\n"),
       "config refused, running modules unchanged: modules.echo.config: reject: refused on "
       "request (1)"},
      {"missing plugin",
       Yaml("  qos: false\n  policy: true\n  echo: {plugin: fx_echo}\n  extra: {plugin: nowhere}\n"),
       "config refused, running modules unchanged: modules.extra.plugin: plugin " +
           (plugins_.path() / "nowhere.so").string() + " refused: " +
           (plugins_.path() / "nowhere.so").string() + ": No such file or directory"},
  };
  for (const auto& b : bad) {
    SCOPED_TRACE(b.what);
    Write(b.yaml);
    ASSERT_TRUE(WaitFor([&] { return ConfigError(*d).rfind(b.error, 0) == 0; }))
        << "last_config_error: " << ConfigError(*d);
    EXPECT_EQ(Snapshot(*d), running);
    EXPECT_EQ(DaemonStatus(*d)["log_level"], "info");
    EXPECT_TRUE(d->Running());
  }
  // Back to what runs: the error goes, nothing restarts.
  Write(good);
  ASSERT_TRUE(WaitFor([&] { return ConfigError(*d).empty(); })) << ConfigError(*d);
  EXPECT_EQ(Snapshot(*d), running);
  EXPECT_NE(d->Log().find("new node config refused, the running config stays in force"),
            std::string::npos);
}

// A module that failed at startup (here: its plugin file is world-writable)
// stays failed without making every later change invalid, and starts once
// the file is fixed and the config changes.
TEST_F(LiveReload, AFailingModuleDoesNotBlockChangesToTheOthers) {
  plugins_.Add(Fixture("echo"), "echo-ww.so");
  const fs::path ww = plugins_.path() / "echo-ww.so";
  chmod(ww.c_str(), 0666);
  auto yaml = [&](int level) {
    return Yaml("  qos: false\n  policy: false\n  broken: {plugin: echo-ww}\n"
                "  echo: {plugin: fx_echo, config: {level: " + std::to_string(level) + "}}\n");
  };
  Write(yaml(1));
  auto d = std::make_unique<Daemon>(DaemonOptions{
      .config_path = cm_.path(), .plugin_dir = plugins_.path(), .wait_ready = false});
  std::string why;
  ASSERT_TRUE(d->Start(&why)) << why;
  auto mods = Modules(*d);
  ASSERT_EQ(mods["broken"]["state"], "failed");
  EXPECT_NE(mods["broken"]["message"].get<std::string>().find("is writable by group or others (mode 0666)"),
            std::string::npos);
  ASSERT_EQ(mods["echo"]["state"], "running");

  Write(yaml(2));
  ASSERT_TRUE(WaitFor([&] { return Modules(*d)["echo"]["status"]["config"]["level"] == 2; }))
      << ConfigError(*d);
  EXPECT_EQ(State(*d, "broken"), "failed");
  EXPECT_NE(ConfigError(*d).find("mode 0666"), std::string::npos) << ConfigError(*d);

  chmod(ww.c_str(), 0644);
  Write(yaml(3));
  ASSERT_TRUE(WaitFor([&] { return State(*d, "broken") == "running"; })) << ConfigError(*d);
  EXPECT_EQ(ConfigError(*d), "");
  EXPECT_EQ(DaemonStatus(*d)["ready"], true);
}

TEST_F(LiveReload, DisablingIpamWhileAPodHoldsAnAddressIsRefused) {
  Write(Yaml("  qos: false\n  policy: false\n"));
  auto d = StartDaemon();
  Netns pod("lr");
  auto cni = [&](const std::string& cmd) {
    return Cni({.command = cmd, .container_id = "lr-pod", .netns = pod.path(),
                .config = d->NetConf()});
  };
  auto add = cni("ADD");
  ASSERT_EQ(add.exit_code, 0) << add.out << add.err;

  const std::string without_ipam = "modules:\n  ipam: false\n  qos: false\n  policy: false\n";
  Write(without_ipam);
  const std::string refusal =
      "config refused, running modules unchanged: disabling module ipam (ipam) while 1 pods "
      "hold its addresses would strand them; delete those pods first";
  ASSERT_TRUE(WaitFor([&] { return ConfigError(*d) == refusal; })) << ConfigError(*d);
  EXPECT_EQ(State(*d, "ipam"), "running");
  auto check = cni("CHECK");
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;

  // Once the pod is gone the same change goes through.
  ASSERT_EQ(cni("DEL").exit_code, 0);
  Write(without_ipam);
  ASSERT_TRUE(WaitFor([&] { return State(*d, "ipam") == "disabled"; })) << ConfigError(*d);
  EXPECT_EQ(ConfigError(*d), "");
  auto refused_add = cni("ADD");
  EXPECT_EQ(refused_add.json()["code"], 104) << refused_add.out;
}

// A ConfigMap in Terway's format (the production guide's keys, verbatim in
// tests/unit/config_test.cc) plus a trellis.yaml overlay. The echo fixture
// stands in for qos, policy and secgroup, so their status shows the config
// each received.
TEST_F(LiveReload, TerwayKeysAreReadMappedAndFollowedLive) {
  const Json qos_conf = Json::parse(R"({
    "bandwidth_limit": {"default_egress_bandwidth": "100Mbps", "default_ingress_bandwidth": "100Mbps"},
    "priority_classes": {
      "high_priority": {"egress_bandwidth": "1Gbps", "ingress_bandwidth": "1Gbps", "tc_class_id": 1},
      "medium_priority": {"egress_bandwidth": "500Mbps", "ingress_bandwidth": "500Mbps", "tc_class_id": 2},
      "low_priority": {"egress_bandwidth": "100Mbps", "ingress_bandwidth": "100Mbps", "tc_class_id": 3}}})");
  const Json security_conf = Json::parse(R"({
    "network_isolation": {"enable": true, "default_policy": "drop",
                          "allowed_cidrs": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]},
    "security_group_sync": {"enable": true, "sync_interval": 300, "rules": [
      {"direction": "ingress", "protocol": "tcp", "port_range": "80/80", "source_cidr": "0.0.0.0/0"},
      {"direction": "ingress", "protocol": "tcp", "port_range": "443/443", "source_cidr": "0.0.0.0/0"}]}})");
  const Json network_policy = Json::parse(R"({"default_policy": "accept", "policies": [
    {"name": "allow-internal", "selector": {"namespace": "production"},
     "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"name": "frontend"}}}],
                  "ports": [{"protocol": "TCP", "port": 80}]}]}]})");
  Json eni_conf = Json::parse(R"({"version": "1", "access_key": "LTAI-live-reload-key",
    "secret_key": "live-reload-secret-value", "region": "cn-hangzhou",
    "vswitches": ["vsw-xxxxxxxxx", "vsw-yyyyyyyyy"], "security_group": "sg-xxxxxxxxx",
    "eni_count_max": 5, "eni_count_min": 1})");
  const Json cni_conf = Json::parse(R"({"cniVersion": "0.3.1", "name": "terway", "type": "terway",
    "log_level": "debug", "log_file": "/var/log/terway/cni.log"})");
  // The overlay: no cloud here (eni off, ipam on a local range), no log file
  // on the real host, and the echo fixture in place of three modules.
  const std::string overlay = R"(
log_file: ""
modules:
  ipam: {config: {source: local, ranges: [{subnet: 10.246.0.0/24}]}}
  eni: {enabled: false}
  qos: {plugin: fx_echo}
  policy: {plugin: fx_echo}
  secgroup: {plugin: fx_echo}
)";
  auto write = [&](const Json& qos) {
    cm_.Write({{"eni_conf", eni_conf.dump(2)},
               {"qos_conf", qos.dump(2)},
               {"security_conf", security_conf.dump(2)},
               {"network_policy", network_policy.dump(2)},
               {"cni_conf", cni_conf.dump(2)},
               {"trellis.yaml", overlay}});
  };
  write(qos_conf);
  auto d = StartDaemon();
  auto mods = Modules(*d);
  EXPECT_EQ(mods["ipam"]["state"], "running");
  EXPECT_EQ(mods["eni"]["state"], "disabled");
  EXPECT_EQ(mods["qos"]["status"]["config"],
            Json({{"default_egress_bandwidth", "100Mbps"},
                  {"default_ingress_bandwidth", "100Mbps"},
                  {"priority_classes", qos_conf["priority_classes"]}}));
  EXPECT_EQ(mods["policy"]["status"]["config"],
            Json({{"terway_network_policy", network_policy},
                  {"network_isolation", security_conf["network_isolation"]}}));
  EXPECT_EQ(mods["secgroup"]["state"], "running");
  EXPECT_EQ(mods["secgroup"]["status"]["config"],
            Json({{"sync_interval", 300}, {"rules", security_conf["security_group_sync"]["rules"]}}));
  Json status = DaemonStatus(*d);
  EXPECT_EQ(status["config_origin"], cm_.path().string());
  EXPECT_EQ(status["log_level"], "debug");  // from cni_conf

  // Editing a Terway key reconfigures the module it maps to.
  Json faster = qos_conf;
  faster["bandwidth_limit"]["default_egress_bandwidth"] = "200Mbps";
  write(faster);
  ASSERT_TRUE(WaitFor([&] {
    return Modules(*d)["qos"]["status"]["config"]["default_egress_bandwidth"] == "200Mbps";
  })) << Snapshot(*d).dump();
  EXPECT_EQ(Modules(*d)["qos"]["status"]["reconfigures"], 1);

  // `config validate` shows what the directory resolves to.
  Json resolved = d->Ctl({"config", "validate", cm_.path().string(), "-o", "json"}).json();
  EXPECT_EQ(resolved["valid"], true) << resolved.dump();
  EXPECT_EQ(resolved["config"]["modules"]["ipam"]["config"]["source"], "local");
  EXPECT_EQ(resolved["config"]["modules"]["eni"]["enabled"], false);
  EXPECT_EQ(resolved["config"]["modules"]["eni"]["config"]["vswitches"], eni_conf["vswitches"]);
  EXPECT_EQ(resolved["config"]["modules"]["eni"]["config"]["secret_key"], "<redacted>");

  // The inline keys are accepted with a warning, and shown nowhere.
  const std::string log = d->Log();
  EXPECT_NE(log.find("eni_conf carries inline access_key/secret_key"), std::string::npos);
  for (const std::string& out :
       {log, d->Ctl({"modules", "-o", "json"}).out, d->Ctl({"status", "-o", "json"}).out,
        d->Ctl({"config", "validate", cm_.path().string(), "-o", "json"}).out}) {
    EXPECT_EQ(out.find("live-reload-secret-value"), std::string::npos);
    EXPECT_EQ(out.find("LTAI-live-reload-key"), std::string::npos);
  }
}

}  // namespace
}  // namespace trellis::test
