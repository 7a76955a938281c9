// The out-of-tree plugin example (sdk/examples/static-pool), the way a third
// party builds one: install trellis with `cmake --install` into a fresh
// prefix, configure and build the example against that prefix only, load it
// into the installed trellisd, and ADD pods through the installed `trellis`
// binary: they get their addresses from the plugin's list.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <trellis/abi.h>

#include <fstream>
#include <set>
#include <sstream>

#include "harness.h"

namespace trellis::test {
namespace {

using namespace std::chrono_literals;

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// One test (ctest runs each test in its own process, and installing and
// building is the slow part): the steps below run in order on one prefix.
class SdkExample : public ::testing::Test {
 protected:
  void SetUp() override {
    prefix_ = tmp_.path() / "prefix";
    auto r = test::Run({"cmake", "--install", BuildDir().string(), "--prefix", prefix_.string()},
                       {}, "", 5min);
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    fs::path src = tmp_.path() / "src";  // out of the tree: nothing relative reaches back
    fs::copy(SourceDir() / "sdk" / "examples" / "static-pool", src, fs::copy_options::recursive);
    example_build_ = tmp_.path() / "build";
    auto configure = test::Run({"cmake", "-S", src.string(), "-B", example_build_.string(),
                                "-DCMAKE_PREFIX_PATH=" + prefix_.string(),
                                "-DCMAKE_BUILD_TYPE=Release", "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON"},
                               {}, "", 5min);
    ASSERT_EQ(configure.exit_code, 0) << configure.out << configure.err;
    auto build = test::Run({"cmake", "--build", example_build_.string()}, {}, "", 10min);
    ASSERT_EQ(build.exit_code, 0) << build.out << build.err;
  }
  fs::path Plugin() const { return example_build_ / "static-pool.so"; }

  void InstallLaysOutBinariesPluginsHeadersAndThePackage();
  void BuiltAgainstThePrefixOnly();
  void ExportsOnlyTheEntrySymbol();
  void PackageRefusesAnotherMajor();
  void InstalledDaemonLoadsItAndPodsGetAddressesFromItsList();

  TempDir tmp_;
  fs::path prefix_, example_build_;
};

TEST_F(SdkExample, InstallBuildOutOfTreeAndServePodAddresses) {
  {
    SCOPED_TRACE("install layout");
    InstallLaysOutBinariesPluginsHeadersAndThePackage();
  }
  {
    SCOPED_TRACE("built against the prefix only");
    BuiltAgainstThePrefixOnly();
  }
  {
    SCOPED_TRACE("exports");
    ExportsOnlyTheEntrySymbol();
  }
  {
    SCOPED_TRACE("package version");
    PackageRefusesAnotherMajor();
  }
  {
    SCOPED_TRACE("installed daemon");
    InstalledDaemonLoadsItAndPodsGetAddressesFromItsList();
  }
}

void SdkExample::InstallLaysOutBinariesPluginsHeadersAndThePackage() {
  for (const char* rel :
       {"bin/trellisd", "bin/trellis", "bin/trellisctl", "lib/trellis/plugins/ipam.so",
        "lib/trellis/plugins/qos.so", "lib/trellis/plugins/policy.so", "lib/trellis/plugins/eni.so",
        "lib/trellis/plugins/secgroup.so", "include/trellis/abi.h", "include/trellis/plugin.hpp",
        "include/trellis/types.hpp", "lib/cmake/TrellisSDK/TrellisSDKConfig.cmake",
        "lib/cmake/TrellisSDK/TrellisSDKConfigVersion.cmake",
        "lib/cmake/TrellisSDK/TrellisSDKTargets.cmake", "lib/cmake/TrellisSDK/TrellisPlugin.cmake"}) {
    EXPECT_TRUE(fs::is_regular_file(prefix_ / rel)) << rel;
  }
}

void SdkExample::BuiltAgainstThePrefixOnly() {
  std::string cache = ReadAll(example_build_ / "CMakeCache.txt");
  EXPECT_NE(cache.find("TrellisSDK_DIR:PATH=" + (prefix_ / "lib/cmake/TrellisSDK").string()),
            std::string::npos);
  // No include path, define or flag of the example reaches the trellis
  // source or build tree.
  std::string commands = ReadAll(example_build_ / "compile_commands.json");
  ASSERT_FALSE(commands.empty());
  EXPECT_EQ(commands.find(SourceDir().string() + "/"), std::string::npos) << commands;
  EXPECT_EQ(commands.find(BuildDir().string() + "/"), std::string::npos) << commands;
  EXPECT_NE(commands.find("-isystem " + (prefix_ / "include").string()), std::string::npos)
      << commands;
}

// trellis_add_plugin() hides everything but the entry point.
void SdkExample::ExportsOnlyTheEntrySymbol() {
  auto nm = test::Run({"nm", "-D", "--defined-only", Plugin().string()});
  ASSERT_EQ(nm.exit_code, 0) << nm.err;
  std::set<std::string> symbols;
  std::istringstream lines(nm.out);
  for (std::string line; std::getline(lines, line);) {
    symbols.insert(line.substr(line.rfind(' ') + 1));
  }
  EXPECT_EQ(symbols, std::set<std::string>{TRELLIS_PLUGIN_ENTRY_SYMBOL}) << nm.out;
}

// The package's version file: SameMajorVersion.
void SdkExample::PackageRefusesAnotherMajor() {
  fs::path dir = tmp_.path() / "wants-v2";
  fs::create_directories(dir);
  std::ofstream(dir / "CMakeLists.txt") << "cmake_minimum_required(VERSION 3.20)\n"
                                           "project(wants_v2 LANGUAGES NONE)\n"
                                           "find_package(TrellisSDK 2 REQUIRED)\n";
  auto r = test::Run({"cmake", "-S", dir.string(), "-B", (dir / "b").string(),
                "-DCMAKE_PREFIX_PATH=" + prefix_.string()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("compatible with requested version \"2\""), std::string::npos) << r.err;
}

void SdkExample::InstalledDaemonLoadsItAndPodsGetAddressesFromItsList() {
  // The installed plugins plus the example, in a root-owned 0755 directory.
  fs::path plugins = tmp_.path() / "plugins";
  fs::create_directory(plugins);
  chmod(plugins.c_str(), 0755);
  for (const auto& e : fs::directory_iterator(prefix_ / "lib/trellis/plugins")) {
    fs::copy_file(e.path(), plugins / e.path().filename());
  }
  fs::copy_file(Plugin(), plugins / "static-pool.so");
  for (const auto& e : fs::directory_iterator(plugins)) chmod(e.path().c_str(), 0644);

  const fs::path bin = prefix_ / "bin";
  auto inspect =
      test::Run({(bin / "trellisctl").string(), "plugin", "inspect", (plugins / "static-pool.so").string(),
           "-o", "json"});
  ASSERT_EQ(inspect.exit_code, 0) << inspect.out << inspect.err;
  EXPECT_EQ(inspect.json()["name"], "static-pool");
  EXPECT_EQ(inspect.json()["version"], "1.0.0");
  EXPECT_EQ(inspect.json()["interfaces"], Json::array({"address_source"}));

  Daemon d({.config_yaml = R"(
modules:
  ipam: {config: {source: external, families: [4], reuse_delay: 0}}
  qos: false
  policy: false
  pool:
    plugin: static-pool
    config:
      addresses:
        - 192.0.2.10/24
        - {address: 192.0.2.11/24, gateway: 192.0.2.1}
)",
            .plugin_dir = plugins,
            .bin_dir = bin});
  std::string why;
  ASSERT_TRUE(d.Start(&why)) << why;

  const Json modules = d.Ctl({"modules", "-o", "json"}).json()["modules"];
  Json pool;
  for (const auto& m : modules) {
    if (m["name"] == "pool") pool = m;
  }
  ASSERT_TRUE(pool.is_object()) << modules.dump();
  EXPECT_EQ(pool["state"], "running");
  EXPECT_EQ(pool["plugin_version"], "1.0.0");
  EXPECT_EQ(pool["interfaces"], Json::array({"address_source"}));

  const fs::path cni = bin / "trellis";
  auto add = [&](const Netns& ns, const std::string& id) {
    return Cni({.command = "ADD", .container_id = id, .netns = ns.path(),
                .args = "K8S_POD_NAMESPACE=default;K8S_POD_NAME=" + id,
                .config = d.NetConf()},
               cni);
  };
  auto del = [&](const Netns& ns, const std::string& id) {
    return Cni({.command = "DEL", .container_id = id, .netns = ns.path(), .config = d.NetConf()}, cni);
  };
  auto pool_status = [&] {
    const Json all = d.Ctl({"modules", "-o", "json"}).json();
    for (const auto& m : all["modules"]) {
      if (m["name"] == "pool") return Json::parse(m["status_json"].get<std::string>());
    }
    return Json();
  };

  Netns a("spa"), b("spb"), c("spc");
  auto ra = add(a, "sp-a");
  ASSERT_EQ(ra.exit_code, 0) << ra.out << ra.err;
  EXPECT_EQ(ra.json()["ips"][0]["address"], "192.0.2.10/32");
  auto rb = add(b, "sp-b");
  ASSERT_EQ(rb.exit_code, 0) << rb.out << rb.err;
  EXPECT_EQ(rb.json()["ips"][0]["address"], "192.0.2.11/32");
  EXPECT_EQ(b.Exec("ip -4 -o addr show eth0").out.find("192.0.2.11/32") != std::string::npos, true);
  auto ping = a.Exec("ping -c1 -W2 192.0.2.11");
  EXPECT_EQ(ping.exit_code, 0) << ping.out << ping.err;

  auto rc = add(c, "sp-c");
  ASSERT_NE(rc.exit_code, 0);
  EXPECT_EQ(rc.json()["code"], 101) << rc.out;
  EXPECT_EQ(rc.json()["msg"],
            "module ipam: allocate: module pool: acquire: no free IPv4 address in the static pool "
            "(2 configured, all held)");
  Json st = pool_status();
  EXPECT_EQ(st["families"]["4"], Json({{"size", 2}, {"held", 2}, {"free", 0}}));
  EXPECT_EQ(st["degraded"], true);

  ASSERT_EQ(del(a, "sp-a").exit_code, 0);
  auto rc2 = add(c, "sp-c");
  ASSERT_EQ(rc2.exit_code, 0) << rc2.out << rc2.err;
  EXPECT_EQ(rc2.json()["ips"][0]["address"], "192.0.2.10/32");

  // Held addresses survive a restart of the daemon.
  d.Stop();
  ASSERT_TRUE(d.Start(&why)) << why;
  st = pool_status();
  EXPECT_EQ(st["families"]["4"]["held"], 2) << st.dump();
  std::set<std::string> holders;
  for (const auto& h : st["held"]) holders.insert(h["container_id"].get<std::string>());
  EXPECT_EQ(holders, (std::set<std::string>{"sp-b", "sp-c"}));

  ASSERT_EQ(del(b, "sp-b").exit_code, 0);
  ASSERT_EQ(del(c, "sp-c").exit_code, 0);
  EXPECT_EQ(pool_status()["families"]["4"]["held"], 0);
}

}  // namespace
}  // namespace trellis::test
