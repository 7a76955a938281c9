// The ipam plugin's allocator and range parsing (no I/O).
#include <gtest/gtest.h>

#include "allocator.h"

namespace trellis::ipam {
namespace {

using sdk::Json;

Range R(const std::string& json) { return ParseRange(Json::parse(json), 0); }

std::string Err(const std::string& json) {
  try {
    ParseRange(Json::parse(json), 2);
  } catch (const sdk::Error& e) {
    EXPECT_EQ(e.code(), TRELLIS_E_INVALID);
    return e.what();
  }
  return "";
}

TEST(IpamRange, Defaults) {
  Range r = R(R"({"subnet": "10.1.2.0/24"})");
  EXPECT_EQ(r.family, 4);
  EXPECT_EQ(r.subnet, "10.1.2.0/24");
  EXPECT_EQ(Format(r.first, 4), "10.1.2.1");
  EXPECT_EQ(Format(r.last, 4), "10.1.2.254");  // no broadcast
  ASSERT_TRUE(r.gateway.has_value());
  EXPECT_EQ(Format(*r.gateway, 4), "10.1.2.1");  // reserved
  Range v6 = R(R"({"subnet": "fd00::/120"})");
  EXPECT_EQ(v6.family, 6);
  EXPECT_EQ(Format(v6.last, 6), "fd00::ff");
}

TEST(IpamRange, ErrorsNameTheField) {
  EXPECT_EQ(Err(R"({"subnet": "10.1.2.5/24"})"),
            "ranges[2].subnet: 10.1.2.5/24 has host bits set; did you mean 10.1.2.0/24?");
  EXPECT_EQ(Err(R"({"subnet": "10.1.2.0/31"})"), "ranges[2].subnet: a /31 has no room for pods");
  EXPECT_EQ(Err(R"({"subnet": "10.1.2.0"})"), "ranges[2].subnet: expected a CIDR like 10.244.0.0/24");
  EXPECT_NE(Err(R"({"subnet": "banana/24"})").find("ranges[2].subnet: not an IP address"), std::string::npos);
  EXPECT_EQ(Err(R"({"subnet": "10.1.2.0/24", "gateway": "10.9.9.9"})"),
            "ranges[2].gateway: 10.9.9.9 is outside 10.1.2.0/24");
  EXPECT_EQ(Err(R"({"subnet": "10.1.2.0/24", "range_start": "10.1.2.100", "range_end": "10.1.2.50"})"),
            "ranges[2].range_start: is after range_end");
  EXPECT_EQ(Err(R"({"subnet": "10.1.2.0/24", "exclude": ["fd00::1"]})"),
            "ranges[2].exclude[0]: is not of the subnet's family");
  EXPECT_EQ(Err(R"({"subnet": "10.1.2.0/24", "colour": "blue"})"),
            "ranges[2].colour: unknown key (known: subnet, gateway, range_start, range_end, exclude)");
  EXPECT_EQ(Err(R"({"gateway": "10.1.2.1"})"), "ranges[2].subnet: is required");
}

TEST(IpamAllocator, NextFitSkipsGatewayExcludedAndHeld) {
  Allocator a;
  a.SetRanges({R(R"({"subnet": "10.0.0.0/29", "exclude": ["10.0.0.3", "10.0.0.4/31"]})")});
  // .1 gateway, .3 .4 .5 excluded, .7 broadcast: .2 and .6 remain.
  std::string why;
  auto p1 = a.Pick(4, 1000, 0, &why);
  ASSERT_TRUE(p1);
  EXPECT_EQ(p1->first, "10.0.0.2");
  a.Take(p1->first, 4, {"c1", "eth0"}, p1->second);
  auto p2 = a.Pick(4, 1000, 0, &why);
  ASSERT_TRUE(p2);
  EXPECT_EQ(p2->first, "10.0.0.6");
  a.Take(p2->first, 4, {"c2", "eth0"}, p2->second);
  EXPECT_FALSE(a.Pick(4, 1000, 0, &why));
  EXPECT_EQ(why, "range 10.0.0.0/29: 2 addresses in use");
  EXPECT_FALSE(a.Pick(6, 1000, 0, &why));
  EXPECT_EQ(why, "no IPv6 range is configured");
}

TEST(IpamAllocator, ReuseDelayHoldsReleasedAddresses) {
  Allocator a;
  a.SetRanges({R(R"({"subnet": "10.0.0.0/30"})")});  // only .2
  auto p = a.Pick(4, 100, 30, nullptr);
  ASSERT_TRUE(p);
  a.Take(p->first, 4, {"c1", "eth0"}, p->second);
  EXPECT_EQ(a.Release({"c1", "eth0"}, 100), std::vector<std::string>{"10.0.0.2"});
  std::string why;
  EXPECT_FALSE(a.Pick(4, 110, 30, &why));
  EXPECT_EQ(why, "range 10.0.0.0/30: 0 addresses in use, 1 released less than 30s ago (reuse_delay)");
  auto later = a.Pick(4, 130, 30, nullptr);
  ASSERT_TRUE(later);
  EXPECT_EQ(later->first, "10.0.0.2");
  EXPECT_EQ(a.Expire(130, 30), std::vector<std::string>{"10.0.0.2"});
}

TEST(IpamAllocator, CursorSpreadsAllocationsAndWraps) {
  Allocator a;
  a.SetRanges({R(R"({"subnet": "10.0.0.0/28"})")});
  std::vector<std::string> got;
  for (int i = 0; i < 3; ++i) {
    auto p = a.Pick(4, 0, 0, nullptr);
    a.Take(p->first, 4, {"c" + std::to_string(i), "eth0"}, p->second);
    got.push_back(p->first);
  }
  EXPECT_EQ(got, (std::vector<std::string>{"10.0.0.2", "10.0.0.3", "10.0.0.4"}));
  a.Release({"c0", "eth0"}, 0);
  // Next-fit: the freed .2 is not taken next, .5 is.
  EXPECT_EQ(a.Pick(4, 0, 0, nullptr)->first, "10.0.0.5");
  // Restored cursor continues where it was.
  Allocator b;
  b.SetRanges({R(R"({"subnet": "10.0.0.0/28"})")});
  b.RestoreCursor("10.0.0.0/28", "10.0.0.14");
  EXPECT_EQ(b.Pick(4, 0, 0, nullptr)->first, "10.0.0.2");  // wrapped past .14, skipping .1
}

// What the status and the trellis_ipam_addresses gauge report per range.
TEST(IpamAllocator, CountsInUseAndCoolingPerRange) {
  Allocator a;
  a.SetRanges({R(R"({"subnet": "10.0.0.0/28"})"), R(R"({"subnet": "10.0.1.0/28"})")});
  const auto& r0 = a.ranges()[0];
  const auto& r1 = a.ranges()[1];
  a.Take("10.0.0.2", 4, {"c0", "eth0"}, &r0);
  a.Take("10.0.0.3", 4, {"c1", "eth0"}, &r0);
  a.Take("10.0.1.2", 4, {"c2", "eth0"}, &r1);
  a.Take("10.0.1.2", 4, {"c2", "eth0"}, &r1);  // again: still one
  EXPECT_EQ(a.InUse(r0), 2u);
  EXPECT_EQ(a.InUse(r1), 1u);
  a.Release({"c0", "eth0"}, 100);
  EXPECT_EQ(a.InUse(r0), 1u);
  EXPECT_EQ(a.Cooling(r0), 1u);
  a.Take("10.0.0.2", 4, {"c3", "eth0"}, &r0);  // a cooling address taken again
  EXPECT_EQ(a.InUse(r0), 2u);
  EXPECT_EQ(a.Cooling(r0), 0u);
  a.Release({"c1", "eth0"}, 100);
  a.Forget("10.0.1.2");
  EXPECT_EQ(a.InUse(r1), 0u);
  EXPECT_EQ(a.Expire(130, 30), std::vector<std::string>{"10.0.0.3"});
  EXPECT_EQ(a.Cooling(r0), 0u);
  EXPECT_EQ(a.InUse(r0), 1u);
  // A new set of ranges recounts: 10.0.0.2 now falls in the second one.
  a.SetRanges({R(R"({"subnet": "10.0.2.0/28"})"), R(R"({"subnet": "10.0.0.0/24"})")});
  EXPECT_EQ(a.InUse(a.ranges()[0]), 0u);
  EXPECT_EQ(a.InUse(a.ranges()[1]), 1u);
  // A range that is not one of the allocator's counts nothing.
  Range other = a.ranges()[1];
  EXPECT_EQ(a.InUse(other), 0u);
}

TEST(IpamAllocator, LargeIpv6RangeIsCheap) {
  Allocator a;
  a.SetRanges({R(R"({"subnet": "fd00:1::/64"})")});
  for (int i = 0; i < 1000; ++i) {
    auto p = a.Pick(6, 0, 0, nullptr);
    ASSERT_TRUE(p);
    a.Take(p->first, 6, {"c" + std::to_string(i), "eth0"}, p->second);
  }
  EXPECT_EQ(a.allocated().size(), 1000u);
  EXPECT_EQ(a.InUse(a.ranges()[0]), 1000u);
}

}  // namespace
}  // namespace trellis::ipam
