#include "allocator.h"

#include <functional>

namespace trellis::ipam {
namespace {

sdk::Error Invalid(const std::string& field, const std::string& what) {
  return sdk::Error(TRELLIS_E_INVALID, field + ": " + what);
}

u128 HostMask(int family, int prefix) {
  int bits = family == 4 ? 32 : 128;
  int host = bits - prefix;
  return host >= 128 ? ~u128(0) : (u128(1) << host) - 1;
}

std::pair<u128, int> ParseIp(const std::string& text, const std::string& field) {
  try {
    auto a = sdk::Address::Parse(text);
    return {ToInt(a.ip, a.family), a.family};
  } catch (const sdk::Error& e) {
    throw Invalid(field, e.what());
  }
}

}  // namespace

u128 ToInt(const std::array<uint8_t, 16>& b, int family) {
  u128 v = 0;
  int n = family == 4 ? 4 : 16;
  for (int i = 0; i < n; ++i) v = (v << 8) | b[i];
  return v;
}

std::array<uint8_t, 16> FromInt(u128 v, int family) {
  std::array<uint8_t, 16> b{};
  int n = family == 4 ? 4 : 16;
  for (int i = n - 1; i >= 0; --i) {
    b[i] = static_cast<uint8_t>(v & 0xff);
    v >>= 8;
  }
  return b;
}

std::string Format(u128 v, int family) { return sdk::Address::Format(family, FromInt(v, family)); }

bool Range::Excluded(u128 ip) const {
  if (gateway && *gateway == ip) return true;
  for (const auto& [a, b] : excluded) {
    if (ip >= a && ip <= b) return true;
  }
  return false;
}

Range ParseRange(const sdk::Json& j, size_t index) {
  const std::string at = "ranges[" + std::to_string(index) + "]";
  if (!j.is_object()) throw Invalid(at, "expected a map with at least a subnet");
  for (const auto& [k, v] : j.items()) {
    if (k != "subnet" && k != "gateway" && k != "range_start" && k != "range_end" &&
        k != "exclude") {
      throw Invalid(at + "." + k, "unknown key (known: subnet, gateway, range_start, range_end, exclude)");
    }
    if (k != "exclude" && !v.is_string()) throw Invalid(at + "." + k, "expected a string");
  }
  if (!j.contains("subnet")) throw Invalid(at + ".subnet", "is required");
  Range r;
  sdk::Address net;
  try {
    net = sdk::Address::Parse(j["subnet"].get<std::string>());
  } catch (const sdk::Error& e) {
    throw Invalid(at + ".subnet", e.what());
  }
  if (j["subnet"].get<std::string>().find('/') == std::string::npos) {
    throw Invalid(at + ".subnet", "expected a CIDR like 10.244.0.0/24");
  }
  r.family = net.family;
  r.prefix_len = net.prefix_len;
  int bits = r.family == 4 ? 32 : 128;
  if (r.prefix_len > bits - 2) {
    throw Invalid(at + ".subnet", "a /" + std::to_string(r.prefix_len) + " has no room for pods");
  }
  u128 mask = HostMask(r.family, r.prefix_len);
  u128 ip = ToInt(net.ip, r.family);
  u128 network = ip & ~mask;
  if (ip != network) {
    throw Invalid(at + ".subnet", j["subnet"].get<std::string>() + " has host bits set; did you mean " +
                                      Format(network, r.family) + "/" + std::to_string(r.prefix_len) + "?");
  }
  u128 top = network | mask;
  r.subnet = Format(network, r.family) + "/" + std::to_string(r.prefix_len);
  r.first = network + 1;
  r.last = r.family == 4 ? top - 1 : top;
  auto inside = [&](const std::string& key) {
    auto [v, fam] = ParseIp(j[key].get<std::string>(), at + "." + key);
    if (fam != r.family || v < network || v > top) {
      throw Invalid(at + "." + key, j[key].get<std::string>() + " is outside " + r.subnet);
    }
    return v;
  };
  r.gateway = j.contains("gateway") ? inside("gateway") : network + 1;
  if (j.contains("range_start")) r.first = inside("range_start");
  if (j.contains("range_end")) r.last = inside("range_end");
  if (r.first > r.last) throw Invalid(at + ".range_start", "is after range_end");
  if (j.contains("exclude")) {
    if (!j["exclude"].is_array()) throw Invalid(at + ".exclude", "expected a list of IPs or CIDRs");
    for (size_t i = 0; i < j["exclude"].size(); ++i) {
      const auto& e = j["exclude"][i];
      std::string field = at + ".exclude[" + std::to_string(i) + "]";
      if (!e.is_string()) throw Invalid(field, "expected an IP or a CIDR");
      sdk::Address a;
      try {
        a = sdk::Address::Parse(e.get<std::string>());
      } catch (const sdk::Error& err) {
        throw Invalid(field, err.what());
      }
      if (a.family != r.family) throw Invalid(field, "is not of the subnet's family");
      u128 m = HostMask(a.family, a.prefix_len);
      u128 base = ToInt(a.ip, a.family) & ~m;
      r.excluded.emplace_back(base, base | m);
    }
  }
  return r;
}

void Allocator::SetRanges(std::vector<Range> ranges) {
  ranges_ = std::move(ranges);
  in_use_n_.assign(ranges_.size(), 0);
  cooling_n_.assign(ranges_.size(), 0);
  for (const auto& [ip, v] : allocated_) {
    if (int i = RangeIndex(ip); i >= 0) ++in_use_n_[i];
  }
  for (const auto& [ip, t] : cooling_) {
    if (int i = RangeIndex(ip); i >= 0) ++cooling_n_[i];
  }
}

void Allocator::SetAllocated(const std::string& ip, int family, const Owner& owner) {
  auto [it, added] = allocated_.insert_or_assign(ip, std::make_pair(family, owner));
  if (int i = RangeIndex(ip); added && i >= 0) ++in_use_n_[i];
}

void Allocator::EraseAllocated(const std::string& ip) {
  if (allocated_.erase(ip) == 0) return;
  if (int i = RangeIndex(ip); i >= 0) --in_use_n_[i];
}

void Allocator::SetCooling(const std::string& ip, int64_t released_unix) {
  auto [it, added] = cooling_.insert_or_assign(ip, released_unix);
  if (int i = RangeIndex(ip); added && i >= 0) ++cooling_n_[i];
}

bool Allocator::EraseCooling(const std::string& ip) {
  if (cooling_.erase(ip) == 0) return false;
  if (int i = RangeIndex(ip); i >= 0) --cooling_n_[i];
  return true;
}

void Allocator::Restore(const std::string& ip, int family, const Owner& owner) {
  SetAllocated(ip, family, owner);
  EraseCooling(ip);
}

void Allocator::RestoreReleased(const std::string& ip, int64_t released_unix) {
  if (!allocated_.contains(ip)) SetCooling(ip, released_unix);
}

void Allocator::RestoreCursor(const std::string& subnet, const std::string& ip) {
  for (const auto& r : ranges_) {
    if (r.subnet != subnet) continue;
    try {
      auto a = sdk::Address::Parse(ip);
      if (a.family == r.family) cursor_[subnet] = ToInt(a.ip, a.family);
    } catch (const sdk::Error&) {
    }
  }
}

std::optional<std::pair<std::string, const Range*>> Allocator::Pick(int family, int64_t now,
                                                                    int64_t reuse_delay_s,
                                                                    std::string* why) {
  std::string reasons;
  for (const auto& r : ranges_) {
    if (r.family != family) continue;
    u128 size = r.Size();
    u128 cur = cursor_.contains(r.subnet) ? cursor_[r.subnet] : r.last;
    u128 cand = cur;
    const u128 limit = size < (u128(1) << 24) ? size : (u128(1) << 24);
    for (u128 step = 0; step < limit; ++step) {
      cand = (cand >= r.last || cand < r.first) ? r.first : cand + 1;
      if (r.Excluded(cand)) continue;
      std::string text = Format(cand, family);
      if (allocated_.contains(text)) continue;
      if (auto it = cooling_.find(text); it != cooling_.end() && now - it->second < reuse_delay_s) {
        continue;
      }
      return std::make_pair(text, &r);
    }
    if (!reasons.empty()) reasons += "; ";
    reasons += "range " + r.subnet + ": " + std::to_string(InUse(r)) + " addresses in use";
    if (size_t c = Cooling(r); c > 0) {
      reasons += ", " + std::to_string(c) + " released less than " + std::to_string(reuse_delay_s) +
                 "s ago (reuse_delay)";
    }
  }
  if (why != nullptr) {
    *why = reasons.empty() ? "no IPv" + std::to_string(family) + " range is configured" : reasons;
  }
  return std::nullopt;
}

void Allocator::Take(const std::string& ip, int family, const Owner& owner, const Range* range) {
  SetAllocated(ip, family, owner);
  EraseCooling(ip);
  if (range != nullptr) {
    auto a = sdk::Address::Parse(ip);
    cursor_[range->subnet] = ToInt(a.ip, a.family);
  }
}

std::vector<std::string> Allocator::AddressesOf(const Owner& owner) const {
  std::vector<std::string> out;
  for (const auto& [ip, v] : allocated_) {
    if (v.second == owner) out.push_back(ip);
  }
  return out;
}

std::vector<std::string> Allocator::Release(const Owner& owner, int64_t now) {
  std::vector<std::string> out = AddressesOf(owner);
  for (const auto& ip : out) {
    EraseAllocated(ip);
    SetCooling(ip, now);
  }
  return out;
}

std::string Allocator::Cursor(const std::string& subnet) const {
  for (const auto& r : ranges_) {
    if (r.subnet == subnet && cursor_.contains(subnet)) return Format(cursor_.at(subnet), r.family);
  }
  return "";
}

std::vector<std::string> Allocator::Expire(int64_t now, int64_t reuse_delay_s) {
  std::vector<std::string> out;
  for (const auto& [ip, t] : cooling_) {
    if (now - t >= reuse_delay_s) out.push_back(ip);
  }
  for (const auto& ip : out) EraseCooling(ip);
  return out;
}

int Allocator::RangeIndex(const std::string& ip) const {
  try {
    auto a = sdk::Address::Parse(ip);
    u128 v = ToInt(a.ip, a.family);
    for (size_t i = 0; i < ranges_.size(); ++i) {
      if (ranges_[i].family == a.family && ranges_[i].Contains(v)) return static_cast<int>(i);
    }
  } catch (const sdk::Error&) {
  }
  return -1;
}

const Range* Allocator::RangeOf(const std::string& ip) const {
  int i = RangeIndex(ip);
  return i < 0 ? nullptr : &ranges_[i];
}

namespace {
// Index of `r` in `v`, or -1 when it is not one of v's elements.
int IndexIn(const std::vector<Range>& v, const Range& r) {
  std::less<const Range*> lt;
  if (v.empty() || lt(&r, v.data()) || !lt(&r, v.data() + v.size())) return -1;
  return static_cast<int>(&r - v.data());
}
}  // namespace

size_t Allocator::InUse(const Range& r) const {
  int i = IndexIn(ranges_, r);
  return i < 0 ? 0 : in_use_n_[i];
}

size_t Allocator::Cooling(const Range& r) const {
  int i = IndexIn(ranges_, r);
  return i < 0 ? 0 : cooling_n_[i];
}

}  // namespace trellis::ipam
