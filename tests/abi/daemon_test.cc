// The daemon against the fixtures: a trellisd whose config enables every bad
// fixture starts anyway; each such module is `failed` with its own message
// in `trellisctl modules`, the other modules run, the daemon answers, and
// `trellisctl plugin inspect` says why each file would be refused. A plugin
// whose methods throw fails the pod operation cleanly; an older ops table
// runs without the ops it lacks.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <trellis/abi.h>

#include <algorithm>

#include "harness.h"

namespace trellis::test {
namespace {

fs::path Fixture(const std::string& name) {
  return fs::path(TRELLIS_TEST_FIXTURE_DIR) / ("fx_" + name + ".so");
}

std::map<std::string, Json> Modules(const Daemon& d) {
  auto r = d.Ctl({"modules", "-o", "json"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  std::map<std::string, Json> out;
  Json j = r.json();
  for (const auto& m : j.value("modules", Json::array())) out[m["name"]] = m;
  return out;
}

Json DaemonStatus(const Daemon& d) {
  auto r = d.Ctl({"status", "-o", "json"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  return r.json();
}

const std::string kHostAbi =
    std::to_string(TRELLIS_ABI_MAJOR) + "." + std::to_string(TRELLIS_ABI_MINOR);

struct Bad {
  std::string module;  // module name in the node config
  std::string file;    // plugin file in the plugin dir (without .so)
  std::string why;     // what the loader says after "plugin FILE refused: "
};

TEST(AbiDaemon, EachBadPluginFailsOnItsOwnAndTheRestRuns) {
  TempDir untrusted_parent;
  fs::path untrusted = untrusted_parent / "open";
  fs::create_directory(untrusted);
  chmod(untrusted.c_str(), 0777);

  PluginDir plugins;
  const std::vector<Bad> refused = {
      {"noentry", "fx_no_entry",
       "it exports no trellis_plugin_entry_v1 symbol (is it a trellis plugin? was it built with "
       "TRELLIS_PLUGIN()?)"},
      {"nullentry", "fx_null_entry", "its entry point returned NULL"},
      {"major", "fx_major",
       "it was built for plugin ABI 2.0, this host speaks ABI " + kHostAbi +
           " (the major versions must match); rebuild it against this SDK"},
      {"minor", "fx_minor",
       "it was built for plugin ABI 1.1, newer than this host's " + kHostAbi +
           "; upgrade trellisd or rebuild the plugin against SDK " + kHostAbi},
      {"oversize", "fx_oversize_tail",
       "its descriptor is " + std::to_string(sizeof(trellis_plugin_descriptor) + 16) +
           " bytes, larger than the " + std::to_string(sizeof(trellis_plugin_descriptor)) +
           " this host knows, and its unknown tail is not zero: the plugin uses features this "
           "host lacks; upgrade trellisd"},
      {"norelease", "fx_no_release",
       "its ipam interface has no release op (allocate and release are mandatory)"},
      {"nocreate", "fx_no_create",
       "its descriptor has no create op (validate, create and destroy are mandatory)"},
      {"ifaceversion", "fx_iface_version",
       "its qos interface is version 2, this host knows versions 1 to 1"},
  };
  for (const auto& b : refused) {
    plugins.Add(Fixture(b.file.substr(3)), b.file + ".so");
  }
  for (const char* f : {"validate_fails", "create_fails", "oversize_zero", "older_ops"}) {
    plugins.Add(Fixture(f), std::string("fx_") + f + ".so");
  }
  // Trust: a world-writable copy of a good plugin, and a link into a
  // world-writable directory.
  plugins.Add(Fixture("good"), "ww.so");
  const fs::path ww = plugins.path() / "ww.so";
  chmod(ww.c_str(), 0646);
  fs::copy_file(Fixture("good"), untrusted / "good.so");
  chmod((untrusted / "good.so").c_str(), 0644);
  const fs::path link = plugins.path() / "link.so";
  fs::create_symlink(untrusted / "good.so", link);

  std::string yaml = R"(
modules:
  ipam: {config: {ranges: [{subnet: 10.251.0.0/24}]}}
  qos: false
  policy: false
  validate: {plugin: fx_validate_fails}
  create: {plugin: fx_create_fails}
  zerotail: {plugin: fx_oversize_zero}
  older: {plugin: fx_older_ops}
  worldwritable: {plugin: ww}
  symlink: {plugin: link}
)";
  for (const auto& b : refused) yaml += "  " + b.module + ": {plugin: " + b.file + "}\n";

  Daemon d({.config_yaml = yaml, .plugin_dir = plugins.path(), .wait_ready = false});
  std::string why;
  ASSERT_TRUE(d.Start(&why)) << why;

  auto mods = Modules(d);
  std::map<std::string, std::string> expected;
  for (const auto& b : refused) {
    fs::path file = plugins.path() / (b.file + ".so");
    expected[b.module] =
        "modules." + b.module + ".plugin: plugin " + file.string() + " refused: " + b.why;
  }
  expected["validate"] = "modules.validate.config: mode: expected one of fast, safe; got ''";
  expected["create"] =
      "module create: create: cannot reach the backend at 192.0.2.1:1: connection refused";
  expected["worldwritable"] = "modules.worldwritable.plugin: plugin " + ww.string() +
                              " refused: " + ww.string() +
                              " is writable by group or others (mode 0646); fix with chmod go-w";
  expected["symlink"] = "modules.symlink.plugin: plugin " + link.string() +
                        " refused: directory " + untrusted.string() +
                        " is writable by group or others (mode 0777); fix with chmod go-w "
                        "(reached through the symlink " +
                        link.string() + " -> " + (untrusted / "good.so").string() + ")";
  for (const auto& [module, message] : expected) {
    SCOPED_TRACE(module);
    ASSERT_TRUE(mods.contains(module));
    EXPECT_EQ(mods[module]["state"], "failed");
    EXPECT_EQ(mods[module]["enabled"], true);
    EXPECT_EQ(mods[module]["healthy"], false);
    EXPECT_EQ(mods[module]["message"], message);
  }
  // The unusual-but-legal fixtures and the product module run.
  for (const char* module : {"ipam", "zerotail", "older"}) {
    SCOPED_TRACE(module);
    EXPECT_EQ(mods[module]["state"], "running") << mods[module].dump();
    EXPECT_EQ(mods[module]["healthy"], true);
  }
  EXPECT_EQ(mods["older"]["interfaces"], Json::array({"qos"}));
  EXPECT_EQ(mods["qos"]["state"], "disabled");

  // The table an operator reads carries the same messages.
  auto text = d.Ctl({"modules"});
  EXPECT_EQ(text.exit_code, 0);
  for (const auto& [module, message] : expected) {
    EXPECT_NE(text.out.find(message), std::string::npos) << module << "\n" << text.out;
  }

  // The daemon answers, and says why it is not ready.
  Json st = DaemonStatus(d);
  EXPECT_EQ(st["ready"], false);
  EXPECT_NE(st["ready_reason"].get<std::string>().find(" is failed: "), std::string::npos)
      << st.dump();
  for (const auto& [module, message] : expected) {
    EXPECT_NE(st["last_config_error"].get<std::string>().find(message), std::string::npos)
        << module;
  }
  EXPECT_TRUE(d.Running());

  // Offline: `plugin inspect` explains each file without a daemon.
  for (const auto& b : refused) {
    fs::path file = plugins.path() / (b.file + ".so");
    auto r = d.Ctl({"plugin", "inspect", file.string()});
    EXPECT_EQ(r.exit_code, 1) << b.file;
    EXPECT_EQ(r.out, "plugin " + file.string() + " refused: " + b.why + "\n");
    auto j = d.Ctl({"plugin", "inspect", file.string(), "-o", "json"}).json();
    EXPECT_EQ(j["loadable"], false);
    EXPECT_EQ(j["reason"], "plugin " + file.string() + " refused: " + b.why);
  }
  auto inspect_ww = d.Ctl({"plugin", "inspect", ww.string()});
  EXPECT_EQ(inspect_ww.exit_code, 1);
  EXPECT_NE(inspect_ww.out.find("is writable by group or others (mode 0646)"), std::string::npos);
  auto inspect_link = d.Ctl({"plugin", "inspect", link.string()});
  EXPECT_EQ(inspect_link.exit_code, 1);
  EXPECT_NE(inspect_link.out.find("(reached through the symlink " + link.string()), std::string::npos);
  auto inspect_ok = d.Ctl({"plugin", "inspect", (plugins.path() / "fx_older_ops.so").string(), "-o", "json"});
  EXPECT_EQ(inspect_ok.exit_code, 0);
  EXPECT_EQ(inspect_ok.json()["name"], "older_ops");
  EXPECT_EQ(inspect_ok.json()["interfaces"], Json::array({"qos"}));
}

TEST(AbiDaemon, GroupWritablePluginDirectoryFailsEveryModuleButTheDaemonAnswers) {
  PluginDir plugins;
  chmod(plugins.path().c_str(), 0775);
  Daemon d({.config_yaml = "modules: {ipam: {config: {ranges: [{subnet: 10.252.0.0/24}]}}, "
                           "qos: true, policy: false}\n",
            .plugin_dir = plugins.path(),
            .wait_ready = false});
  std::string why;
  ASSERT_TRUE(d.Start(&why)) << why;
  auto mods = Modules(d);
  for (const char* module : {"ipam", "qos"}) {
    SCOPED_TRACE(module);
    fs::path file = plugins.path() / (std::string(module) + ".so");
    EXPECT_EQ(mods[module]["state"], "failed");
    EXPECT_EQ(mods[module]["message"],
              "modules." + std::string(module) + ".plugin: plugin " + file.string() +
                  " refused: directory " + plugins.path().string() +
                  " is writable by group or others (mode 0775); fix with chmod go-w");
  }
  EXPECT_EQ(DaemonStatus(d)["ready"], false);
  // Pods are refused with the reason, not left hanging.
  Netns pod("gw");
  auto add = Cni({.command = "ADD", .container_id = "gw-pod", .netns = pod.path(),
                  .config = d.NetConf()});
  EXPECT_NE(add.exit_code, 0);
  EXPECT_EQ(add.json()["code"], 104) << add.out;
  EXPECT_EQ(add.json()["msg"], "no ipam module is enabled in the node config");
  EXPECT_TRUE(d.Running());
}

// The SDK turns every exception into a status: the pod operation fails with
// the plugin's message, what was done is undone, the daemon stays up.
TEST(AbiDaemon, ThrowingPluginFailsThePodCleanly) {
  PluginDir plugins({Fixture("throws")});
  Daemon d({.config_yaml = R"(
modules:
  ipam: {config: {ranges: [{subnet: 10.253.0.0/24}], reuse_delay: 0}}
  qos: {plugin: fx_throws}
  policy: false
)",
            .plugin_dir = plugins.path(),
            .wait_ready = false});
  std::string why;
  ASSERT_TRUE(d.Start(&why)) << why;

  auto mods = Modules(d);
  EXPECT_EQ(mods["qos"]["state"], "running");
  EXPECT_EQ(mods["qos"]["healthy"], false);
  EXPECT_EQ(mods["qos"]["message"], "module qos: status: unexpected exception: status exploded");

  Netns boom("boom");
  auto add = Cni({.command = "ADD", .container_id = "boom-1", .netns = boom.path(),
                  .config = d.NetConf()});
  ASSERT_NE(add.exit_code, 0);
  EXPECT_EQ(add.json()["code"], 102) << add.out;
  EXPECT_EQ(add.json()["msg"], "module qos: qos apply: unexpected exception: apply exploded for boom-1");
  // Rolled back: no record, no host interface, no address held.
  EXPECT_EQ(d.Ctl({"pods", "-o", "json"}).json().value("pods", Json::array()).size(), 0u);
  auto links = d.NodeExec("ip -o link show");
  EXPECT_EQ(links.out.find("trellis:boom-1"), std::string::npos) << links.out;
  auto ipam = Json::parse(Modules(d)["ipam"]["status_json"].get<std::string>());
  EXPECT_EQ(ipam["allocated"], 0);
  auto inside = boom.Exec("ip -o link show eth0");
  EXPECT_NE(inside.exit_code, 0) << "the pod's interface was left behind: " << inside.out;

  // A non-std exception (`throw 42`) becomes a status too.
  auto check = Cni({.command = "CHECK", .container_id = "boom-1", .netns = boom.path(),
                    .config = d.NetConf()});
  EXPECT_NE(check.exit_code, 0);
  EXPECT_TRUE(d.Running());
  auto del = Cni({.command = "DEL", .container_id = "boom-1", .netns = boom.path(),
                  .config = d.NetConf()});
  EXPECT_EQ(del.exit_code, 0) << del.out << del.err;
  EXPECT_EQ(DaemonStatus(d)["version"].is_string(), true);
}

TEST(AbiDaemon, UnknownExceptionTypeBecomesAStatus) {
  PluginDir plugins({Fixture("throws")});
  Daemon d({.config_yaml = R"(
modules:
  ipam: {config: {ranges: [{subnet: 10.254.0.0/24}]}}
  qos: {plugin: fx_throws, config: {apply_throws: false}}
  policy: false
)",
            .plugin_dir = plugins.path(),
            .wait_ready = false});
  std::string why;
  ASSERT_TRUE(d.Start(&why)) << why;
  Netns pod("calm");
  auto add = Cni({.command = "ADD", .container_id = "calm-1", .netns = pod.path(),
                  .config = d.NetConf()});
  ASSERT_EQ(add.exit_code, 0) << add.out << add.err;
  auto check = Cni({.command = "CHECK", .container_id = "calm-1", .netns = pod.path(),
                    .config = d.NetConf()});
  ASSERT_NE(check.exit_code, 0);
  EXPECT_EQ(check.json()["code"], 105) << check.out;
  EXPECT_EQ(check.json()["msg"], "module qos: qos check: unexpected exception of unknown type");
  EXPECT_TRUE(d.Running());
  auto del = Cni({.command = "DEL", .container_id = "calm-1", .netns = pod.path(),
                  .config = d.NetConf()});
  EXPECT_EQ(del.exit_code, 0) << del.out << del.err;
}

// A qos table from an older SDK (ending before check and gc) runs: the host
// never calls the ops past its size (the fixture keeps poison there).
TEST(AbiDaemon, OlderOpsTableRunsWithoutTheOpsItLacks) {
  PluginDir plugins({Fixture("older_ops"), Fixture("oversize_zero")});
  Daemon d({.config_yaml = R"(
modules:
  ipam: {config: {ranges: [{subnet: 10.249.0.0/24}]}}
  qos: false
  policy: false
  older: {plugin: fx_older_ops}
  zerotail: {plugin: fx_oversize_zero}
)",
            .plugin_dir = plugins.path()});
  std::string why;
  ASSERT_TRUE(d.Start(&why)) << why;
  Netns pod("older");
  auto add = Cni({.command = "ADD", .container_id = "older-1", .netns = pod.path(),
                  .config = d.NetConf()});
  ASSERT_EQ(add.exit_code, 0) << add.out << add.err;
  auto pods = d.Ctl({"pods", "-o", "json"}).json()["pods"];
  ASSERT_EQ(pods.size(), 1u);
  EXPECT_NE(std::find(pods[0]["modules"].begin(), pods[0]["modules"].end(), "qos"),
            pods[0]["modules"].end())
      << pods.dump();
  auto check = Cni({.command = "CHECK", .container_id = "older-1", .netns = pod.path(),
                    .config = d.NetConf()});
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
  auto gc = Cni({.command = "GC", .container_id = "", .netns = "",
                 .config = d.NetConf("1.1.0", {{"cni.dev/valid-attachments",
                                                Json::array({{{"containerID", "older-1"},
                                                              {"ifname", "eth0"}}})}})});
  EXPECT_EQ(gc.exit_code, 0) << gc.out << gc.err;
  auto del = Cni({.command = "DEL", .container_id = "older-1", .netns = pod.path(),
                  .config = d.NetConf()});
  EXPECT_EQ(del.exit_code, 0) << del.out << del.err;
}

}  // namespace
}  // namespace trellis::test
