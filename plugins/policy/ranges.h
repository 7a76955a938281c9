// Address and port ranges, and their normalisation into the disjoint elements
// nftables interval sets demand.
//
// Kernel subtlety: an interval set (rbtree for one field, pipapo for a
// concatenation) refuses an element that overlaps one already in the set
// ("File exists"), and with auto-merge it would merge elements so that a later
// delete of one of them no longer finds it. So the plugin never relies on the
// kernel to merge: every element list it hands over is disjoint and canonical
// (the same input always gives the same strings), which also makes the
// element-level diff between two states exact.
#ifndef TRELLIS_PLUGINS_POLICY_RANGES_H_
#define TRELLIS_PLUGINS_POLICY_RANGES_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace trellis::policy {

using u128 = unsigned __int128;

// An inclusive range of addresses of one family. IPv4 values are < 2^32.
struct IpRange {
  int family = 4;
  u128 lo = 0, hi = 0;
  bool operator==(const IpRange&) const = default;
  bool Contains(int f, u128 v) const { return f == family && lo <= v && v <= hi; }
  bool Covers(const IpRange& o) const { return o.family == family && lo <= o.lo && o.hi <= hi; }
};

// "10.0.0.0/8", "fd00::/64". Host bits past the prefix are ignored, as the
// Kubernetes API does. nullopt (and `why`) when the text is not a CIDR.
std::optional<IpRange> ParseCidr(std::string_view text, std::string* why);
// "10.0.0.1" or "fd00::1" as a one-address range.
std::optional<IpRange> ParseIp(std::string_view text);
IpRange FullRange(int family);

std::string FormatIp(int family, u128 v);
// "a" when lo == hi, else "a-b".
std::string FormatRange(const IpRange& r);

// `base` minus every range of `except`; disjoint, ascending.
std::vector<IpRange> Subtract(const IpRange& base, const std::vector<IpRange>& except);
// Sorted, disjoint, adjacent ranges merged. Mixed families are kept apart.
std::vector<IpRange> MergeRanges(std::vector<IpRange> ranges);

struct PortRange {
  uint16_t lo = 0, hi = 0;
  auto operator<=>(const PortRange&) const = default;
};

// Sorted, with overlapping and adjacent ranges merged.
std::vector<PortRange> UnionPorts(std::vector<PortRange> ranges);

// An element of an `addr . inet_proto . inet_service` interval set.
struct Box {
  IpRange addr;
  uint8_t proto = 6;
  PortRange ports;
  bool operator==(const Box&) const = default;
};

// Turns overlapping boxes into a canonical disjoint cover of the same points:
// addresses are cut at every box boundary, each piece gets the union of the
// port ranges covering it, and neighbouring pieces with equal port sets are
// joined again. Output order: family, proto, address, port.
std::vector<Box> NormalizeBoxes(std::vector<Box> boxes);

}  // namespace trellis::policy

#endif  // TRELLIS_PLUGINS_POLICY_RANGES_H_
