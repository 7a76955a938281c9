// Conformance of the `trellis` CNI binary against a live trellisd: every CNI
// version's result shape, every error code, ADD/DEL/CHECK/GC/STATUS semantics.
#include <gtest/gtest.h>

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
  RunResult Add(const Netns& ns, const std::string& id, const std::string& version = "1.1.0") {
    return Cni({.command = "ADD", .container_id = id, .netns = ns.path(),
                .args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=" + id,
                .config = daemon_->NetConf(version)});
  }
  RunResult Del(const Netns& ns, const std::string& id) {
    return Cni({.command = "DEL", .container_id = id, .netns = ns.path(),
                .config = daemon_->NetConf()});
  }
  static Daemon* daemon_;
};
Daemon* Conformance::daemon_ = nullptr;

TEST_F(Conformance, AddReturnsResultAndPodReachesPeer) {
  Netns a("a"), b("b");
  auto ra = Add(a, "conf-a");
  ASSERT_EQ(ra.exit_code, 0) << ra.out << ra.err;
  auto rb = Add(b, "conf-b");
  ASSERT_EQ(rb.exit_code, 0) << rb.out << rb.err;
  Json j = rb.json();
  std::string ip = j["ips"][0]["address"].get<std::string>();
  ip = ip.substr(0, ip.find('/'));
  auto ping = a.Exec("ping -c1 -W2 " + ip);
  EXPECT_EQ(ping.exit_code, 0) << ping.out << ping.err;
  EXPECT_EQ(Del(a, "conf-a").exit_code, 0);
  EXPECT_EQ(Del(b, "conf-b").exit_code, 0);
}

}  // namespace
}  // namespace trellis::test
