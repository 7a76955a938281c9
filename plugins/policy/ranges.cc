#include "ranges.h"

#include <arpa/inet.h>

#include <algorithm>
#include <map>
#include <set>
#include <tuple>

namespace trellis::policy {
namespace {

u128 MaxOf(int family) { return family == 4 ? u128(0xffffffffu) : ~u128(0); }

// A position on the address line, one past the top included: an IPv6 range
// ending at ffff:...:ffff ends "at infinity" because hi + 1 overflows.
struct Pos {
  bool inf = false;
  u128 v = 0;
  bool operator<(const Pos& o) const { return inf != o.inf ? !inf : (!inf && v < o.v); }
  bool operator==(const Pos& o) const { return inf == o.inf && (inf || v == o.v); }
};
Pos After(int family, u128 hi) {
  return hi == MaxOf(family) && family == 6 ? Pos{true, 0} : Pos{false, hi + 1};
}

}  // namespace

std::vector<PortRange> UnionPorts(std::vector<PortRange> v) {
  std::sort(v.begin(), v.end());
  std::vector<PortRange> out;
  for (const auto& r : v) {
    if (!out.empty() && uint32_t(r.lo) <= uint32_t(out.back().hi) + 1) {
      out.back().hi = std::max(out.back().hi, r.hi);
    } else {
      out.push_back(r);
    }
  }
  return out;
}

std::optional<IpRange> ParseIp(std::string_view text) {
  std::string s(text);
  uint8_t buf[16] = {};
  IpRange r;
  if (inet_pton(AF_INET, s.c_str(), buf) == 1) {
    r.family = 4;
    r.lo = (u128(buf[0]) << 24) | (u128(buf[1]) << 16) | (u128(buf[2]) << 8) | buf[3];
  } else if (inet_pton(AF_INET6, s.c_str(), buf) == 1) {
    r.family = 6;
    for (int i = 0; i < 16; ++i) r.lo = (r.lo << 8) | buf[i];
  } else {
    return std::nullopt;
  }
  r.hi = r.lo;
  return r;
}

std::optional<IpRange> ParseCidr(std::string_view text, std::string* why) {
  auto slash = text.find('/');
  if (slash == std::string_view::npos) {
    if (why) *why = "'" + std::string(text) + "' is not a CIDR (expected address/prefix)";
    return std::nullopt;
  }
  auto ip = ParseIp(text.substr(0, slash));
  if (!ip) {
    if (why) *why = "'" + std::string(text) + "' is not a CIDR (bad address)";
    return std::nullopt;
  }
  std::string p(text.substr(slash + 1));
  int bits = ip->family == 4 ? 32 : 128;
  char* end = nullptr;
  long prefix = std::strtol(p.c_str(), &end, 10);
  if (p.empty() || *end != '\0' || prefix < 0 || prefix > bits || p.size() > 3) {
    if (why)
      *why = "'" + std::string(text) + "' is not a CIDR (prefix must be 0-" + std::to_string(bits) +
             ")";
    return std::nullopt;
  }
  u128 host =
      prefix == bits ? 0 : (prefix == 0 ? MaxOf(ip->family) : ((u128(1) << (bits - prefix)) - 1));
  ip->lo &= ~host & MaxOf(ip->family);
  ip->hi = ip->lo | host;
  return ip;
}

IpRange FullRange(int family) { return IpRange{family, 0, MaxOf(family)}; }

std::string FormatIp(int family, u128 v) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (family == 4) {
    uint8_t b[4] = {uint8_t(v >> 24), uint8_t(v >> 16), uint8_t(v >> 8), uint8_t(v)};
    inet_ntop(AF_INET, b, buf, sizeof buf);
  } else {
    uint8_t b[16];
    for (int i = 15; i >= 0; --i) {
      b[i] = uint8_t(v);
      v >>= 8;
    }
    inet_ntop(AF_INET6, b, buf, sizeof buf);
  }
  return buf;
}

std::string FormatRange(const IpRange& r) {
  if (r.lo == r.hi) return FormatIp(r.family, r.lo);
  return FormatIp(r.family, r.lo) + "-" + FormatIp(r.family, r.hi);
}

std::vector<IpRange> Subtract(const IpRange& base, const std::vector<IpRange>& except) {
  std::vector<IpRange> cuts;
  for (const auto& e : except) {
    if (e.family != base.family || e.hi < base.lo || e.lo > base.hi) continue;
    cuts.push_back({base.family, std::max(e.lo, base.lo), std::min(e.hi, base.hi)});
  }
  cuts = MergeRanges(std::move(cuts));
  std::vector<IpRange> out;
  u128 next = base.lo;
  bool done = false;
  for (const auto& c : cuts) {
    if (c.lo > next) out.push_back({base.family, next, c.lo - 1});
    if (c.hi == base.hi) {
      done = true;
      break;
    }
    next = c.hi + 1;
  }
  if (!done && (cuts.empty() || next <= base.hi)) out.push_back({base.family, next, base.hi});
  return out;
}

std::vector<IpRange> MergeRanges(std::vector<IpRange> ranges) {
  std::sort(ranges.begin(), ranges.end(), [](const IpRange& a, const IpRange& b) {
    return std::tie(a.family, a.lo, a.hi) < std::tie(b.family, b.lo, b.hi);
  });
  std::vector<IpRange> out;
  for (const auto& r : ranges) {
    if (!out.empty() && out.back().family == r.family &&
        (out.back().hi == MaxOf(r.family) || r.lo <= out.back().hi + 1)) {
      out.back().hi = std::max(out.back().hi, r.hi);
    } else {
      out.push_back(r);
    }
  }
  return out;
}

std::vector<Box> NormalizeBoxes(std::vector<Box> boxes) {
  std::map<std::pair<int, uint8_t>, std::vector<const Box*>> groups;
  for (const auto& b : boxes) groups[{b.addr.family, b.proto}].push_back(&b);
  std::vector<Box> out;
  for (const auto& [key, list] : groups) {
    const int family = key.first;
    // Events at each boundary: ranges starting there and ranges ending
    // (exclusive) there.
    std::map<Pos, std::pair<std::vector<PortRange>, std::vector<PortRange>>> events;
    for (const Box* b : list) {
      events[Pos{false, b->addr.lo}].first.push_back(b->ports);
      events[After(family, b->addr.hi)].second.push_back(b->ports);
    }
    struct Piece {
      u128 lo, hi;
      std::vector<PortRange> ports;
    };
    std::vector<Piece> pieces;
    std::multiset<PortRange> active;
    for (auto it = events.begin(); it != events.end(); ++it) {
      for (const auto& r : it->second.second) active.erase(active.find(r));
      for (const auto& r : it->second.first) active.insert(r);
      auto next = std::next(it);
      if (active.empty() || next == events.end() || it->first.inf) continue;
      u128 lo = it->first.v;
      u128 hi = next->first.inf ? MaxOf(family) : next->first.v - 1;
      auto ports = UnionPorts(std::vector<PortRange>(active.begin(), active.end()));
      if (!pieces.empty() && pieces.back().hi + 1 == lo && pieces.back().ports == ports) {
        pieces.back().hi = hi;
      } else {
        pieces.push_back({lo, hi, std::move(ports)});
      }
    }
    for (const auto& p : pieces) {
      for (const auto& r : p.ports) out.push_back({IpRange{family, p.lo, p.hi}, key.second, r});
    }
  }
  return out;
}

}  // namespace trellis::policy
