// Conformance of the `trellis` CNI binary against a live trellisd: every CNI
// version's result shape, every error code, ADD/DEL/CHECK/GC/STATUS semantics.
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <set>

#include "harness.h"

namespace trellis::test {
namespace {

const char* kConfig = R"(
modules:
  ipam:
    config:
      ranges:
        - subnet: 10.250.0.0/24
        - subnet: fd00:250::/64
      reuse_delay: 0
  qos: {enabled: false}
  policy: {enabled: false}
)";

std::string Ip(const Json& result, size_t i = 0) {
  std::string a = result["ips"][i]["address"].get<std::string>();
  return a.substr(0, a.find('/'));
}

class Conformance : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    daemon_ = new Daemon({.config_yaml = kConfig});
    std::string why;
    ASSERT_TRUE(daemon_->Start(&why)) << why;
  }
  static void TearDownTestSuite() {
    delete daemon_;
    daemon_ = nullptr;
  }
  static RunResult Call(const std::string& cmd, const std::string& id, const std::string& netns,
                        const std::string& version = "1.1.0", const Json& extra = Json::object(),
                        const std::string& args = "") {
    return Cni({.command = cmd, .container_id = id, .netns = netns,
                .args = args.empty() ? "K8S_POD_NAMESPACE=default;K8S_POD_NAME=" + id : args,
                .config = daemon_->NetConf(version, extra)});
  }
  static RunResult Add(const Netns& ns, const std::string& id, const std::string& version = "1.1.0") {
    return Call("ADD", id, ns.path(), version);
  }
  static RunResult Del(const std::string& netns, const std::string& id,
                       const std::string& version = "1.1.0") {
    return Call("DEL", id, netns, version);
  }
  static int Code(const RunResult& r) {
    auto j = r.json();
    return j.is_object() && j.contains("code") ? j["code"].get<int>() : (r.exit_code == 0 ? 0 : -1);
  }
  static Daemon* daemon_;
};
Daemon* Conformance::daemon_ = nullptr;

TEST_F(Conformance, AddGivesDualStackResultAndPodsReachEachOther) {
  Netns a("a"), b("b");
  auto ra = Add(a, "conf-a");
  ASSERT_EQ(ra.exit_code, 0) << ra.out << ra.err;
  auto rb = Add(b, "conf-b");
  ASSERT_EQ(rb.exit_code, 0) << rb.out << rb.err;
  Json j = rb.json();
  ASSERT_EQ(j["ips"].size(), 2u);
  EXPECT_EQ(j["interfaces"].size(), 2u);
  EXPECT_EQ(j["interfaces"][1]["name"], "eth0");
  EXPECT_EQ(j["interfaces"][1]["sandbox"], b.path());
  EXPECT_EQ(j["ips"][0]["interface"], 1);
  EXPECT_EQ(j["routes"][0]["dst"], "0.0.0.0/0");
  auto ping4 = a.Exec("ping -c1 -W2 " + Ip(j, 0));
  EXPECT_EQ(ping4.exit_code, 0) << ping4.out << ping4.err;
  auto ping6 = a.Exec("ping -6 -c1 -W2 " + Ip(j, 1));
  EXPECT_EQ(ping6.exit_code, 0) << ping6.out << ping6.err;
  // Inside the pod: the address, the link-local gateway, nothing else.
  auto route = a.Exec("ip -4 route show default");
  EXPECT_NE(route.out.find("via 169.254.1.1 dev eth0"), std::string::npos) << route.out;
  EXPECT_EQ(Del(a.path(), "conf-a").exit_code, 0);
  EXPECT_EQ(Del(b.path(), "conf-b").exit_code, 0);
}

TEST_F(Conformance, ResultShapePerVersion) {
  for (std::string v : {"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}) {
    Netns ns("v");
    std::string id = "ver-" + v;
    auto r = Add(ns, id, v);
    ASSERT_EQ(r.exit_code, 0) << v << ": " << r.out << r.err;
    Json j = r.json();
    EXPECT_EQ(j["cniVersion"], v);
    for (const auto& ip : j["ips"]) {
      if (v < std::string("1.0.0")) {
        ASSERT_TRUE(ip.contains("version")) << v;
        EXPECT_EQ(ip["version"], ip["address"].get<std::string>().find(':') == std::string::npos ? "4" : "6");
      } else {
        EXPECT_FALSE(ip.contains("version")) << v << " must not carry ips[].version";
      }
    }
    EXPECT_EQ(Del(ns.path(), id, v).exit_code, 0);
  }
}

TEST_F(Conformance, VersionListsSupportedVersions) {
  auto r = Cni({.command = "VERSION", .config = Json{{"cniVersion", "0.4.0"}}});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  Json j = r.json();
  EXPECT_EQ(j["cniVersion"], "0.4.0");
  EXPECT_EQ(j["supportedVersions"], Json({"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}));
  auto empty = Cni({.command = "VERSION"});
  EXPECT_EQ(empty.exit_code, 0);
  EXPECT_EQ(empty.json()["cniVersion"], "1.1.0");
}

TEST_F(Conformance, ErrorCodes) {
  Netns ns("e");
  // 1: incompatible version
  EXPECT_EQ(Code(Call("ADD", "e1", ns.path(), "0.2.0")), 1);
  EXPECT_EQ(Code(Call("CHECK", "e1", ns.path(), "0.3.1")), 1);
  EXPECT_EQ(Code(Call("GC", "", "", "1.0.0")), 1);
  EXPECT_EQ(Code(Call("STATUS", "", "", "0.4.0")), 1);
  // 4: environment
  auto conf = daemon_->NetConf();
  EXPECT_EQ(Code(Cni({.command = "", .container_id = "e4", .netns = ns.path(), .config = conf})), 4);
  EXPECT_EQ(Code(Cni({.command = "FROB", .container_id = "e4", .netns = ns.path(), .config = conf})), 4);
  EXPECT_EQ(Code(Cni({.command = "ADD", .container_id = "", .netns = ns.path(), .config = conf})), 4);
  EXPECT_EQ(Code(Cni({.command = "ADD", .container_id = "bad/id", .netns = ns.path(), .config = conf})), 4);
  EXPECT_EQ(Code(Cni({.command = "ADD", .container_id = "e4", .netns = "", .config = conf})), 4);
  EXPECT_EQ(Code(Cni({.command = "ADD", .container_id = "e4", .netns = ns.path(),
                      .ifname = "way-too-long-ifname", .config = conf})), 4);
  EXPECT_EQ(Code(Cni({.command = "ADD", .container_id = "e4", .netns = ns.path(),
                      .args = "K8S_POD_NAME=x;FOO=bar", .config = conf})), 4);
  auto ignored = Cni({.command = "ADD", .container_id = "e4", .netns = ns.path(),
                      .args = "IgnoreUnknown=1;K8S_POD_NAME=x;FOO=bar", .config = conf});
  EXPECT_EQ(ignored.exit_code, 0) << ignored.out;
  EXPECT_EQ(Del(ns.path(), "e4").exit_code, 0);
  EXPECT_EQ(Code(Cni({.command = "ADD", .container_id = "e4", .netns = "/var/run/netns/does-not-exist",
                      .config = conf})), 4);
  // 6: undecodable
  auto bad = test::Run({(BinDir() / "trellis").string()},
                 {{"CNI_COMMAND", "ADD"}, {"CNI_CONTAINERID", "e6"}, {"CNI_NETNS", ns.path()},
                  {"CNI_IFNAME", "eth0"}, {"CNI_PATH", "/usr/lib/cni"}},
                 "{not json");
  EXPECT_EQ(Code(bad), 6) << bad.out;
  EXPECT_EQ(bad.exit_code, 1);
  // 7: invalid config
  Json noname = conf;
  noname.erase("name");
  EXPECT_EQ(Code(Cni({.command = "ADD", .container_id = "e7", .netns = ns.path(), .config = noname})), 7);
  EXPECT_EQ(Code(Call("ADD", "e7", ns.path(), "1.1.0", {{"prevResult", "x"}})), 7);
  EXPECT_EQ(Code(Call("ADD", "e7", ns.path(), "1.1.0", {{"mtu", 70000}})), 7);
  EXPECT_EQ(Code(Call("GC", "", "", "1.1.0", {{"cni.dev/valid-attachments", "all"}})), 7);
  // The error output names the version and carries a message.
  auto err = Call("ADD", "e7", ns.path(), "1.0.0", {{"prevResult", "x"}});
  EXPECT_EQ(err.json()["cniVersion"], "1.0.0");
  EXPECT_FALSE(err.json()["msg"].get<std::string>().empty());
  // 3: CHECK on an unknown container
  EXPECT_EQ(Code(Call("CHECK", "never-added", ns.path())), 3);
}

TEST_F(Conformance, DaemonUnreachable) {
  Netns ns("u");
  Json conf = daemon_->NetConf();
  conf["socket"] = "/tmp/trellis-no-such-daemon.sock";
  auto t0 = std::chrono::steady_clock::now();
  auto add = Cni({.command = "ADD", .container_id = "u1", .netns = ns.path(), .config = conf});
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(Code(add), 11) << add.out;
  // "promptly": far below any runtime timeout (a functional bound, not a benchmark).
  EXPECT_LT(took, std::chrono::seconds(5));
  EXPECT_EQ(Code(Cni({.command = "STATUS", .config = conf})), 50);
  EXPECT_EQ(Code(Cni({.command = "DEL", .container_id = "u1", .netns = ns.path(), .config = conf})), 11);
}

TEST_F(Conformance, DelIsIdempotent) {
  Netns ns("d");
  ASSERT_EQ(Add(ns, "del-1").exit_code, 0);
  EXPECT_EQ(Del(ns.path(), "del-1").exit_code, 0);
  EXPECT_EQ(Del(ns.path(), "del-1").exit_code, 0);               // twice
  EXPECT_EQ(Del(ns.path(), "never-seen").exit_code, 0);          // unknown container
  EXPECT_EQ(Del("", "never-seen-2").exit_code, 0);               // no netns at all
  // netns already gone
  std::string path;
  {
    Netns gone("g");
    path = gone.path();
    ASSERT_EQ(Add(gone, "del-gone").exit_code, 0);
  }
  EXPECT_EQ(Del(path, "del-gone").exit_code, 0);
  // no prevResult (1.1.0 DEL without it)
  Netns ns2("d");
  ASSERT_EQ(Add(ns2, "del-noprev").exit_code, 0);
  EXPECT_EQ(Call("DEL", "del-noprev", ns2.path(), "1.1.0").exit_code, 0);
  auto pods = daemon_->Ctl({"pods", "-o", "json"});
  EXPECT_EQ(pods.out.find("del-"), std::string::npos) << pods.out;
  // Nothing left in the node but what other tests hold.
  EXPECT_TRUE(WaitFor([&] { return daemon_->NodeExec("ip -br link | grep -c '^tr'").out == "0\n"; }))
      << daemon_->NodeExec("ip -br link").out;
}

TEST_F(Conformance, AddIsIdempotent) {
  Netns ns("i");
  auto first = Add(ns, "idem");
  ASSERT_EQ(first.exit_code, 0);
  auto second = Add(ns, "idem");
  ASSERT_EQ(second.exit_code, 0);
  EXPECT_EQ(first.json()["ips"], second.json()["ips"]);
  EXPECT_EQ(Del(ns.path(), "idem").exit_code, 0);
}

TEST_F(Conformance, CheckDetectsTampering) {
  Netns ns("c");
  auto add = Add(ns, "chk");
  ASSERT_EQ(add.exit_code, 0);
  Json prev = add.json();
  EXPECT_EQ(Call("CHECK", "chk", ns.path(), "1.1.0", {{"prevResult", prev}}).exit_code, 0);
  // A prevResult that lacks our address fails.
  Json wrong = prev;
  wrong["ips"] = Json::array();
  EXPECT_EQ(Code(Call("CHECK", "chk", ns.path(), "1.1.0", {{"prevResult", wrong}})), 105);
  // Remove the pod's IPv4 address behind trellis's back.
  ASSERT_EQ(ns.Exec("ip addr del " + Ip(prev, 0) + "/32 dev eth0").exit_code, 0);
  auto chk = Call("CHECK", "chk", ns.path(), "1.1.0", {{"prevResult", prev}});
  EXPECT_EQ(Code(chk), 105) << chk.out;
  EXPECT_NE(chk.json()["msg"].get<std::string>().find(Ip(prev, 0)), std::string::npos) << chk.out;
  EXPECT_EQ(Del(ns.path(), "chk").exit_code, 0);
  // The default route gone is caught too.
  Netns ns2("c");
  ASSERT_EQ(Add(ns2, "chk-route").exit_code, 0);
  ASSERT_EQ(ns2.Exec("ip route del default").exit_code, 0);
  auto chk2 = Call("CHECK", "chk-route", ns2.path());
  EXPECT_EQ(Code(chk2), 105) << chk2.out;
  EXPECT_NE(chk2.out.find("default route"), std::string::npos) << chk2.out;
  EXPECT_EQ(Del(ns2.path(), "chk-route").exit_code, 0);
}

TEST_F(Conformance, GcRemovesWhatTheRuntimeNoLongerLists) {
  Netns a("ga"), b("gb"), c("gc");
  ASSERT_EQ(Add(a, "gc-keep").exit_code, 0);
  ASSERT_EQ(Add(b, "gc-drop").exit_code, 0);
  // Another network's attachment is not ours to collect.
  auto other = Call("ADD", "gc-other", c.path(), "1.1.0", {{"name", "other-net"}}, "K8S_POD_NAME=o");
  ASSERT_EQ(other.exit_code, 0) << other.out;
  Json valid = {{"cni.dev/valid-attachments", {{{"containerID", "gc-keep"}, {"ifname", "eth0"}}}}};
  auto gc = Call("GC", "", "", "1.1.0", valid);
  ASSERT_EQ(gc.exit_code, 0) << gc.out;
  auto pods = daemon_->Ctl({"pods", "-o", "json"}).json();
  std::set<std::string> ids;
  for (const auto& p : pods["pods"]) ids.insert(p["container_id"]);
  EXPECT_TRUE(ids.contains("gc-keep"));
  EXPECT_FALSE(ids.contains("gc-drop"));
  EXPECT_TRUE(ids.contains("gc-other"));
  // cni.dev/attachments is accepted too.
  Json legacy = {{"cni.dev/attachments", {{{"containerID", "gc-keep"}, {"ifname", "eth0"}}}}};
  EXPECT_EQ(Call("GC", "", "", "1.1.0", legacy).exit_code, 0);
  EXPECT_EQ(Del(a.path(), "gc-keep").exit_code, 0);
  EXPECT_EQ(Call("DEL", "gc-other", c.path(), "1.1.0", {{"name", "other-net"}}).exit_code, 0);
}

TEST_F(Conformance, MtuFromTheNetworkConfig) {
  Netns ns("m");
  auto r = Call("ADD", "mtu-9000", ns.path(), "1.1.0", {{"mtu", 9000}});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(ns.Exec("ip link show eth0").out.find("mtu 9000"), std::string::npos);
  std::string host_if = r.json()["interfaces"][0]["name"];
  EXPECT_NE(daemon_->NodeExec("ip link show " + host_if).out.find("mtu 9000"), std::string::npos);
  EXPECT_EQ(Del(ns.path(), "mtu-9000").exit_code, 0);
}

TEST_F(Conformance, StatusIsOk) {
  auto r = Cni({.command = "STATUS", .config = daemon_->NetConf()});
  EXPECT_EQ(r.exit_code, 0) << r.out;
}

TEST_F(Conformance, FiftyConcurrentAddsGetDistinctAddresses) {
  std::vector<std::unique_ptr<Netns>> ns;
  for (int i = 0; i < 50; ++i) ns.push_back(std::make_unique<Netns>("p"));
  std::vector<std::future<RunResult>> futs;
  for (int i = 0; i < 50; ++i) {
    futs.push_back(std::async(std::launch::async, [&, i] { return Add(*ns[i], "par-" + std::to_string(i)); }));
  }
  std::set<std::string> v4, v6;
  for (auto& f : futs) {
    auto r = f.get();
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    v4.insert(Ip(r.json(), 0));
    v6.insert(Ip(r.json(), 1));
  }
  EXPECT_EQ(v4.size(), 50u);
  EXPECT_EQ(v6.size(), 50u);
  std::vector<std::future<RunResult>> dels;
  for (int i = 0; i < 50; ++i) {
    dels.push_back(std::async(std::launch::async, [&, i] { return Del(ns[i]->path(), "par-" + std::to_string(i)); }));
  }
  for (auto& f : dels) EXPECT_EQ(f.get().exit_code, 0);
}

// A small range: exhaustion is a clear error (101) and STATUS says 51.
TEST(ConformanceExhaustion, PoolExhaustedGives101AndStatus51) {
  Daemon d({.config_yaml = R"(
modules:
  ipam: {config: {ranges: [{subnet: 10.251.0.0/30}], reuse_delay: 0}}
  qos: false
  policy: false
)"});
  std::string why;
  ASSERT_TRUE(d.Start(&why)) << why;
  Netns a("x"), b("y");
  // A /30 has .1 (gateway, reserved) and .2 usable.
  auto r1 = Cni({.command = "ADD", .container_id = "ex-1", .netns = a.path(), .config = d.NetConf()});
  ASSERT_EQ(r1.exit_code, 0) << r1.out;
  auto r2 = Cni({.command = "ADD", .container_id = "ex-2", .netns = b.path(), .config = d.NetConf()});
  EXPECT_EQ(r2.json()["code"], 101) << r2.out;
  EXPECT_NE(r2.json()["msg"].get<std::string>().find("10.251.0.0/30"), std::string::npos) << r2.out;
  auto st = Cni({.command = "STATUS", .config = d.NetConf()});
  EXPECT_EQ(st.json()["code"], 51) << st.out;
  // The failed ADD left nothing behind.
  EXPECT_EQ(d.NodeExec("ip -br link | grep -c '^tr'").out, "1\n");
  ASSERT_EQ(Cni({.command = "DEL", .container_id = "ex-1", .netns = a.path(), .config = d.NetConf()}).exit_code, 0);
  EXPECT_EQ(Cni({.command = "STATUS", .config = d.NetConf()}).exit_code, 0);
}

TEST(ConformanceStatus, NoIpamModuleGives50) {
  Daemon d({.config_yaml = "modules: {ipam: false, qos: false, policy: false}\n"});
  std::string why;
  ASSERT_TRUE(d.Start(&why)) << why;
  auto st = Cni({.command = "STATUS", .config = d.NetConf()});
  EXPECT_EQ(st.json()["code"], 50) << st.out;
  Netns ns("n");
  auto add = Cni({.command = "ADD", .container_id = "noipam", .netns = ns.path(), .config = d.NetConf()});
  EXPECT_EQ(add.json()["code"], 104) << add.out;
}

}  // namespace
}  // namespace trellis::test
