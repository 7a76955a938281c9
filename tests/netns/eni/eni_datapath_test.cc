// The eni plugin's node datapath on a real kernel, in a fresh network
// namespace: the ENI link found by MAC (also when it appears late), brought
// up with its primary address, its route table rewritten to exactly what is
// asked, routes through another link, and teardown.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <unistd.h>

#include <thread>

#include "datapath.h"
#include "harness.h"

namespace trellis::eni {
namespace {

using trellis::test::Netns;

// Runs `fn` on a thread inside `ns`: netlink sockets it opens live there.
void InNetns(const Netns& ns, const std::function<void()>& fn) {
  std::exception_ptr err;
  std::thread t([&] {
    int fd = open(ns.path().c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
      err = std::make_exception_ptr(std::runtime_error("setns " + ns.path()));
      return;
    }
    close(fd);
    try {
      fn();
    } catch (...) {
      err = std::current_exception();
    }
  });
  t.join();
  if (err) std::rethrow_exception(err);
}

class EniDatapathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // eth0: the primary ENI; eniX: a secondary ENI (the peers stand in for
    // the VPC side).
    ASSERT_EQ(node_.Exec("ip link add eth0 address 02:00:00:00:ff:01 type veth peer name vpc0 && "
                         "ip addr add 192.168.10.250/24 dev eth0 && ip link set eth0 up && "
                         "ip link set vpc0 up")
                  .exit_code,
              0);
  }
  void AddEniLink() {
    ASSERT_EQ(node_.Exec("ip link add eniab12 address 02:00:00:00:00:0a type veth peer name vpc1")
                  .exit_code,
              0);
  }
  std::string Table(uint32_t t) {
    return node_.Exec("ip -4 route show table " + std::to_string(t)).out;
  }
  EniLink Link() {
    EniLink l;
    l.eni_id = "eni-test";
    l.mac = "02:00:00:00:00:0a";
    l.primary_ip = "192.168.10.7";
    l.table = 101;
    l.routes = {{"0.0.0.0/0", "192.168.10.253", "02:00:00:00:00:0a"},
                {"100.64.0.0/10", "192.168.10.1", "02:00:00:00:ff:01"}};
    return l;
  }

  Netns node_{"enidp"};
  aliyun::RealClock clock_;
  NetlinkEniDatapath dp_{&clock_};
};

TEST_F(EniDatapathTest, SetsUpTheLinkAndItsTable) {
  AddEniLink();
  std::string name;
  InNetns(node_, [&] { name = dp_.Setup(Link(), clock_.Now() + std::chrono::seconds(2)); });
  EXPECT_EQ(name, "eniab12");
  auto link = node_.Exec("ip -o link show eniab12").out;
  EXPECT_NE(link.find("UP"), std::string::npos) << link;
  auto addr = node_.Exec("ip -o -4 addr show dev eniab12").out;
  EXPECT_NE(addr.find("192.168.10.7/32"), std::string::npos) << addr;
  std::string t = Table(101);
  EXPECT_NE(t.find("default via 192.168.10.253 dev eniab12"), std::string::npos) << t;
  EXPECT_NE(t.find("192.168.10.253 dev eniab12"), std::string::npos) << t;
  EXPECT_NE(t.find("100.64.0.0/10 via 192.168.10.1 dev eth0"), std::string::npos) << t;
  EXPECT_NE(t.find("192.168.10.1 dev eth0"), std::string::npos) << t;
  // The main table is not touched.
  EXPECT_EQ(node_.Exec("ip -4 route show table main").out.find("eniab12"), std::string::npos);
  // Idempotent, and a changed policy replaces the table's content wholesale.
  InNetns(node_, [&] { dp_.Setup(Link(), clock_.Now()); });
  EniLink l = Link();
  l.routes.pop_back();
  InNetns(node_, [&] { dp_.Setup(l, clock_.Now()); });
  t = Table(101);
  EXPECT_EQ(t.find("100.64.0.0/10"), std::string::npos) << t;
  EXPECT_EQ(t.find("dev eth0"), std::string::npos) << t;
  EXPECT_NE(t.find("default via 192.168.10.253 dev eniab12"), std::string::npos) << t;
  bool present = false;
  InNetns(node_, [&] { present = dp_.LinkPresent("02:00:00:00:00:0a"); });
  EXPECT_TRUE(present);
}

TEST_F(EniDatapathTest, WaitsForALinkThatAppearsLate) {
  std::exception_ptr err;
  std::thread setup([&] {
    try {
      InNetns(node_, [&] { dp_.Setup(Link(), clock_.Now() + std::chrono::seconds(10)); });
    } catch (...) {
      err = std::current_exception();
    }
  });
  AddEniLink();  // while Setup polls for it
  setup.join();
  ASSERT_FALSE(err);
  EXPECT_NE(Table(101).find("default via 192.168.10.253 dev eniab12"), std::string::npos);
}

TEST_F(EniDatapathTest, ALinkThatNeverAppearsTimesOut) {
  try {
    InNetns(node_, [&] { dp_.Setup(Link(), clock_.Now() + std::chrono::milliseconds(300)); });
    FAIL() << "no link, no error";
  } catch (const sdk::Error& e) {
    EXPECT_EQ(e.code(), TRELLIS_E_TIMEOUT);
    EXPECT_NE(std::string(e.what()).find("02:00:00:00:00:0a"), std::string::npos) << e.what();
  }
  EXPECT_EQ(Table(101), "");
}

TEST_F(EniDatapathTest, TeardownEmptiesTheTableAndToleratesAGoneLink) {
  AddEniLink();
  InNetns(node_, [&] { dp_.Setup(Link(), clock_.Now()); });
  ASSERT_NE(Table(101), "");
  InNetns(node_, [&] { dp_.Teardown(Link()); });
  EXPECT_EQ(Table(101), "");
  EXPECT_EQ(node_.Exec("ip -o -4 addr show dev eniab12").out, "");
  EXPECT_EQ(node_.Exec("ip -o link show eniab12").out.find(",UP"), std::string::npos);
  ASSERT_EQ(node_.Exec("ip link del eniab12").exit_code, 0);  // detached
  EXPECT_NO_THROW(InNetns(node_, [&] { dp_.Teardown(Link()); }));
}

}  // namespace
}  // namespace trellis::eni
