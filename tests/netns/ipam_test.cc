// The ipam plugin through a live daemon: persistence across restarts, reuse
// delay, live reconfiguration, refused configs.
#include <gtest/gtest.h>

#include <fstream>

#include "harness.h"

namespace trellis::test {
namespace {

std::string Ip(const RunResult& r) {
  std::string a = r.json()["ips"][0]["address"];
  return a.substr(0, a.find('/'));
}

RunResult Add(const Daemon& d, const std::string& id, const Netns& ns) {
  return Cni({.command = "ADD", .container_id = id, .netns = ns.path(), .config = d.NetConf()});
}
RunResult Del(const Daemon& d, const std::string& id, const Netns& ns) {
  return Cni({.command = "DEL", .container_id = id, .netns = ns.path(), .config = d.NetConf()});
}

TEST(Ipam, AllocationsSurviveRestartAndAreNeverHandedOutTwice) {
  Daemon d({.config_yaml = "modules:\n  ipam: {config: {ranges: [{subnet: 10.240.0.0/29}], reuse_delay: 0}}\n"});
  std::string why;
  ASSERT_TRUE(d.Start(&why)) << why;
  Netns a("a"), b("b"), c("c");
  auto ra = Add(d, "ip-a", a);
  ASSERT_EQ(ra.exit_code, 0) << ra.out;
  d.Stop();
  ASSERT_TRUE(d.Start(&why)) << why;
  auto rb = Add(d, "ip-b", b);
  ASSERT_EQ(rb.exit_code, 0) << rb.out;
  EXPECT_NE(Ip(ra), Ip(rb));
  // An ADD repeated after the restart returns the same address.
  auto ra2 = Add(d, "ip-a", a);
  ASSERT_EQ(ra2.exit_code, 0) << ra2.out;
  EXPECT_EQ(Ip(ra), Ip(ra2));
  d.Kill();  // no clean shutdown
  ASSERT_TRUE(d.Start(&why)) << why;
  auto rc = Add(d, "ip-c", c);
  ASSERT_EQ(rc.exit_code, 0) << rc.out;
  EXPECT_NE(Ip(rc), Ip(ra));
  EXPECT_NE(Ip(rc), Ip(rb));
  for (auto [id, ns] : {std::pair{"ip-a", &a}, {"ip-b", &b}, {"ip-c", &c}}) {
    EXPECT_EQ(Del(d, id, *ns).exit_code, 0);
  }
}

TEST(Ipam, ReuseDelayKeepsAFreedAddressAway) {
  Daemon d({.config_yaml = "modules:\n  ipam: {config: {ranges: [{subnet: 10.241.0.0/29}], reuse_delay: 300s}}\n"});
  std::string why;
  ASSERT_TRUE(d.Start(&why)) << why;
  Netns a("a"), b("b");
  auto ra = Add(d, "ru-a", a);
  ASSERT_EQ(ra.exit_code, 0) << ra.out;
  ASSERT_EQ(Del(d, "ru-a", a).exit_code, 0);
  auto rb = Add(d, "ru-b", b);
  ASSERT_EQ(rb.exit_code, 0) << rb.out;
  EXPECT_NE(Ip(ra), Ip(rb)) << "a freed address was handed out again at once";
  // ...also across a restart (the release time is persisted).
  ASSERT_EQ(Del(d, "ru-b", b).exit_code, 0);
  d.Stop();
  ASSERT_TRUE(d.Start(&why)) << why;
  Netns c("c");
  auto rc = Add(d, "ru-c", c);
  ASSERT_EQ(rc.exit_code, 0) << rc.out;
  EXPECT_NE(Ip(rc), Ip(ra));
  EXPECT_NE(Ip(rc), Ip(rb));
  EXPECT_EQ(Del(d, "ru-c", c).exit_code, 0);
}

TEST(Ipam, LiveReconfigureAndRefusedConfigs) {
  TempDir dir;
  auto write = [&](const std::string& yaml) {
    std::ofstream(dir / "trellis.yaml.tmp") << yaml;
    fs::rename(dir / "trellis.yaml.tmp", dir / "trellis.yaml");
  };
  write("modules:\n  ipam: {config: {ranges: [{subnet: 10.242.0.0/24}]}}\n");
  Daemon d({.config_path = dir / "trellis.yaml"});
  std::string why;
  ASSERT_TRUE(d.Start(&why)) << why;
  Netns a("a"), b("b");
  auto ra = Add(d, "rc-a", a);
  ASSERT_EQ(ra.exit_code, 0) << ra.out;
  EXPECT_EQ(Ip(ra).rfind("10.242.0.", 0), 0u);
  // Overlapping ranges are refused; the running config stays.
  write("modules:\n  ipam: {config: {ranges: [{subnet: 10.243.0.0/24}, {subnet: 10.243.0.128/25}]}}\n");
  EXPECT_TRUE(WaitFor([&] {
    return d.Ctl({"status", "-o", "json"}).json().value("last_config_error", "").find("overlaps") !=
           std::string::npos;
  })) << d.Log();
  auto rb = Add(d, "rc-b", b);
  ASSERT_EQ(rb.exit_code, 0) << rb.out;
  EXPECT_EQ(Ip(rb).rfind("10.242.0.", 0), 0u);
  ASSERT_EQ(Del(d, "rc-b", b).exit_code, 0);
  // A valid change applies live: new pods come from the new range; the old
  // pod keeps its address and releases it normally.
  write("modules:\n  ipam: {config: {ranges: [{subnet: 10.243.0.0/24}]}}\n");
  EXPECT_TRUE(WaitFor([&] {
    auto m = d.Ctl({"modules", "-o", "json"}).json();
    for (const auto& x : m["modules"]) {
      if (x["name"] == "ipam") return x["status_json"].get<std::string>().find("10.243.0.0/24") != std::string::npos;
    }
    return false;
  })) << d.Log();
  auto rb2 = Add(d, "rc-b", b);
  ASSERT_EQ(rb2.exit_code, 0) << rb2.out;
  EXPECT_EQ(Ip(rb2).rfind("10.243.0.", 0), 0u);
  EXPECT_EQ(Del(d, "rc-a", a).exit_code, 0);
  EXPECT_EQ(Del(d, "rc-b", b).exit_code, 0);
  EXPECT_EQ(d.Ctl({"addresses", "-o", "json"}).json()["addresses"].size(), 0u);
}

}  // namespace
}  // namespace trellis::test
