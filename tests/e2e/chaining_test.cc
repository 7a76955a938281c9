// trellis chained with Debian's reference plugins: trellis -> portmap ->
// tuning -> bandwidth, driven the way libcni drives a conflist, inside the
// node namespace where trellisd runs. The Go plugins parse trellis's result
// strictly as their prevResult.
#include <gtest/gtest.h>

#include <future>

#include "conflist.h"
#include "harness.h"

namespace trellis::test {
namespace {

// Dual-stack: portmap 1.1.1 (Debian 12) CHECK looks for IPv6 rules even for an
// IPv4-only attachment (containernetworking/plugins#819).
const char* kConfig = R"(
modules:
  ipam: {config: {ranges: [{subnet: 10.252.0.0/24}, {subnet: "fd00:252::/64"}], reuse_delay: 0}}
  qos: false
  policy: false
)";

class Chaining : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists("/usr/lib/cni/portmap")) GTEST_SKIP() << "containernetworking-plugins missing";
    std::string why;
    ASSERT_TRUE(daemon_.Start(&why)) << why;
    fs::create_symlink(BinDir() / "trellis", bin_.path() / "trellis");
  }
  Json Conflist() const {
    return {{"cniVersion", "1.0.0"},
            {"name", "trellis-chain"},
            {"plugins",
             {{{"type", "trellis"}, {"socket", daemon_.socket().string()}},
              {{"type", "portmap"}, {"capabilities", {{"portMappings", true}}}, {"snat", true}},
              {{"type", "tuning"}, {"sysctl", {{"net.ipv4.conf.eth0.rp_filter", "2"}}}},
              {{"type", "bandwidth"}, {"capabilities", {{"bandwidth", true}}}}}}};
  }
  Daemon daemon_{{.config_yaml = kConfig}};
  TempDir bin_;
};

TEST_F(Chaining, AddCheckDelWithPortmapTuningBandwidth) {
  ConflistRunner runner(Conflist(), {bin_.path(), "/usr/lib/cni"});
  runner.RunIn(daemon_.node()->name());
  Netns server("srv"), client("cli");
  Attachment srv{.container_id = "chain-srv", .netns = server.path(),
                 .cni_args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=srv"};
  srv.capability_args = {
      {"portMappings", {{{"hostPort", 18080}, {"containerPort", 80}, {"protocol", "tcp"}}}},
      {"bandwidth", {{"ingressRate", 50000000}, {"ingressBurst", 1000000},
                     {"egressRate", 50000000}, {"egressBurst", 1000000}}}};
  auto add = runner.Add(srv);
  ASSERT_EQ(add.code, 0) << add.plugin << ": " << add.message;
  Json res = add.result;
  ASSERT_EQ(res["cniVersion"], "1.0.0");
  std::string host_if = res["interfaces"][0]["name"];
  std::string srv_ip = res["ips"][0]["address"].get<std::string>();
  srv_ip = srv_ip.substr(0, srv_ip.find('/'));

  // tuning set the sysctl inside the pod.
  EXPECT_EQ(server.Exec("cat /proc/sys/net/ipv4/conf/eth0/rp_filter").out, "2\n");
  // bandwidth shaped the host end and made an IFB for egress.
  auto tc = daemon_.NodeExec("tc qdisc show dev " + host_if);
  EXPECT_NE(tc.out.find("tbf"), std::string::npos) << tc.out;
  EXPECT_NE(daemon_.NodeExec("ip -br link").out.find("bwp"), std::string::npos);
  // portmap's DNAT works: a second pod reaches the server through the node's host port.
  ASSERT_EQ(daemon_.NodeExec("ip addr add 10.99.0.1/32 dev lo").exit_code, 0);
  // The client gets a limit too: bandwidth 1.1.1's CHECK crashes without one.
  Attachment cli{.container_id = "chain-cli", .netns = client.path()};
  cli.capability_args = {{"bandwidth", srv.capability_args["bandwidth"]}};
  ASSERT_EQ(runner.Add(cli).code, 0);
  auto listener = std::async(std::launch::async, [&] {
    return server.Exec("busybox nc -l -p 80 -w 5 -e echo hello-from-pod", std::chrono::seconds(10));
  });
  bool reached = WaitFor(
      [&] {
        auto r = client.Exec("echo | busybox nc -w 1 10.99.0.1 18080");
        return r.out.find("hello-from-pod") != std::string::npos;
      },
      std::chrono::seconds(8));
  EXPECT_TRUE(reached);
  listener.wait();

  // CHECK through the whole chain for the client. The server is checked
  // without portmap: portmap 1.1.1's CHECK cannot pass for an attachment with
  // port mappings (it looks for the IPv4 rules in ip6tables; fixed upstream in
  // 1.2.0, containernetworking/plugins#819).
  auto check = runner.Check(cli);
  EXPECT_EQ(check.code, 0) << check.plugin << ": " << check.message;
  auto check_srv = runner.Check(srv, {"portmap"});
  EXPECT_EQ(check_srv.code, 0) << check_srv.plugin << ": " << check_srv.message;

  // DEL through the whole chain leaves nothing: no host end, no IFB, no DNAT rule.
  EXPECT_EQ(runner.Del(srv).code, 0);
  EXPECT_EQ(runner.Del(cli).code, 0);
  EXPECT_TRUE(WaitFor([&] { return daemon_.NodeExec("ip -br link | grep -c -E '^(tr|bwp)'").out == "0\n"; }))
      << daemon_.NodeExec("ip -br link").out;
  auto nat = daemon_.NodeExec("iptables -t nat -S | grep -c 18080");
  EXPECT_EQ(nat.out, "0\n") << daemon_.NodeExec("iptables -t nat -S").out;
  EXPECT_EQ(daemon_.Ctl({"pods", "-o", "json"}).json()["pods"].size(), 0u);
}

}  // namespace
}  // namespace trellis::test
