// A real container runtime: podman with its CNI backend runs two containers
// on a trellis network; they reach each other; removing them leaves nothing.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "harness.h"

namespace trellis::test {
namespace {

class PodmanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (Sh("command -v podman && command -v runc").exit_code != 0) GTEST_SKIP() << "podman/runc missing";
    std::string why;
    ASSERT_TRUE(daemon_.Start(&why)) << why;
    // A busybox root filesystem: images cannot be pulled here.
    fs::path rootfs = dir_ / "rootfs";
    for (const char* d : {"bin", "etc", "proc", "sys", "dev", "tmp"}) fs::create_directories(rootfs / d);
    fs::copy_file("/bin/busybox", rootfs / "bin/busybox");
    auto applets = test::Run({"/bin/busybox", "--list"}).out;
    std::istringstream in(applets);
    for (std::string a; std::getline(in, a);) {
      if (!a.empty() && a != "busybox") fs::create_symlink("busybox", rootfs / "bin" / a);
    }
    std::ofstream(rootfs / "etc/passwd") << "root:x:0:0:root:/:/bin/sh\n";
    std::ofstream(rootfs / "etc/group") << "root:x:0:\n";
    fs::create_directories(dir_ / "cni-bin");
    fs::create_symlink(BinDir() / "trellis", dir_ / "cni-bin/trellis");
    fs::create_directories(dir_ / "net.d");
    std::ofstream(dir_ / "net.d/trellis-e2e.conflist")
        << Json{{"cniVersion", "1.0.0"},
                {"name", network_},
                {"plugins", {{{"type", "trellis"}, {"socket", daemon_.socket().string()}}}}}
               .dump();
    std::ofstream(dir_ / "containers.conf")
        << "[containers]\ndefault_ulimits = []\n"
        << "[network]\nnetwork_backend = \"cni\"\n"
        << "cni_plugin_dirs = [\"" << (dir_ / "cni-bin").string() << "\", \"/usr/lib/cni\"]\n"
        << "network_config_dir = \"" << (dir_ / "net.d").string() << "\"\n"
        << "[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\n";
  }
  void TearDown() override {
    if (!dir_.path().empty()) Pm({"rm", "-f", "-a", "-t", "0"});
  }
  RunResult Pm(std::vector<std::string> args) {
    std::vector<std::string> argv = {"podman", "--root", (dir_ / "root").string(), "--runroot",
                                     (dir_ / "runroot").string()};
    argv.insert(argv.end(), args.begin(), args.end());
    return test::Run(argv, {{"CONTAINERS_CONF", (dir_ / "containers.conf").string()}}, "",
               std::chrono::seconds(120));
  }
  RunResult Start(const std::string& name) {
    return Pm({"run", "-d", "--name", name, "--network", network_, "--runtime", "runc",
                   "--cgroup-manager", "cgroupfs", "--ulimit", "host", "--rootfs",
                   (dir_ / "rootfs").string(), "/bin/sleep", "600"});
  }
  std::string IpOf(const std::string& name) {
    auto r = Pm({"inspect", name, "-f",
                     "{{(index .NetworkSettings.Networks \"" + network_ + "\").IPAddress}}"});
    std::string ip = r.out;
    while (!ip.empty() && (ip.back() == '\n' || ip.back() == ' ')) ip.pop_back();
    return ip;
  }

  Daemon daemon_{{.config_yaml = "modules:\n  ipam: {config: {ranges: [{subnet: 10.253.0.0/24}]}}\n"}};
  TempDir dir_;
  std::string network_ = "trellis-e2e";
};

TEST_F(PodmanTest, TwoContainersPingEachOtherAndLeaveNothingBehind) {
  auto c1 = Start("c1");
  ASSERT_EQ(c1.exit_code, 0) << c1.out << c1.err << daemon_.Log();
  auto c2 = Start("c2");
  ASSERT_EQ(c2.exit_code, 0) << c2.out << c2.err;
  std::string ip1 = IpOf("c1"), ip2 = IpOf("c2");
  ASSERT_FALSE(ip1.empty());
  ASSERT_FALSE(ip2.empty());
  EXPECT_NE(ip1, ip2);
  auto p12 = Pm({"exec", "c1", "ping", "-c", "2", "-W", "2", ip2});
  EXPECT_EQ(p12.exit_code, 0) << p12.out << p12.err;
  auto p21 = Pm({"exec", "c2", "ping", "-c", "2", "-W", "2", ip1});
  EXPECT_EQ(p21.exit_code, 0) << p21.out << p21.err;
  // trellis knows both, by the names podman passed in CNI_ARGS.
  auto pods = daemon_.Ctl({"pods", "-o", "json"}).json();
  ASSERT_EQ(pods["pods"].size(), 2u) << pods.dump();

  auto rm = Pm({"rm", "-f", "-t", "0", "c1", "c2"});
  ASSERT_EQ(rm.exit_code, 0) << rm.out << rm.err;
  EXPECT_EQ(daemon_.Ctl({"pods", "-o", "json"}).json()["pods"].size(), 0u);
  EXPECT_TRUE(WaitFor([&] { return daemon_.NodeExec("ip -br link | grep -c '^tr'").out == "0\n"; }))
      << daemon_.NodeExec("ip -br link").out;
  EXPECT_EQ(daemon_.NodeExec("ip route | grep -c 10.253.0").out, "0\n");
}

}  // namespace
}  // namespace trellis::test
