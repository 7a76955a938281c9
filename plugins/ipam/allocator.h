// Address allocation over configured ranges; no I/O (the plugin persists).
#ifndef TRELLIS_PLUGINS_IPAM_ALLOCATOR_H_
#define TRELLIS_PLUGINS_IPAM_ALLOCATOR_H_

#include <trellis/types.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace trellis::ipam {

using u128 = unsigned __int128;

struct Range {
  int family = 4;
  int prefix_len = 24;
  std::string subnet;  // as configured, normalised
  u128 first = 0;      // first allocatable
  u128 last = 0;       // last allocatable
  std::optional<u128> gateway;
  std::vector<std::pair<u128, u128>> excluded;  // inclusive intervals
  u128 Size() const { return last - first + 1; }
  bool Contains(u128 ip) const { return ip >= first && ip <= last; }
  bool Excluded(u128 ip) const;
};

u128 ToInt(const std::array<uint8_t, 16>& bytes, int family);
std::array<uint8_t, 16> FromInt(u128 v, int family);
std::string Format(u128 v, int family);

// Parses one `ranges[i]` entry; errors name the field ("ranges[0].subnet: ...").
Range ParseRange(const sdk::Json& j, size_t index);

struct Owner {
  std::string container_id;
  std::string ifname;
  bool operator==(const Owner&) const = default;
};

// Allocation state over a set of ranges. Not thread-safe: the plugin locks.
class Allocator {
 public:
  // Recounts every range (O(allocations)); all other calls keep the counts
  // in step at O(ranges) each.
  void SetRanges(std::vector<Range> ranges);
  const std::vector<Range>& ranges() const { return ranges_; }

  // Restores state (at start-up, from the store).
  void Restore(const std::string& ip, int family, const Owner& owner);
  void RestoreReleased(const std::string& ip, int64_t released_unix);
  void RestoreCursor(const std::string& subnet, const std::string& ip);

  // Picks a free address of `family`: not allocated, not excluded, not the
  // gateway, not released less than `reuse_delay_s` ago. Next-fit from the
  // range's cursor. nullopt when none; `why` then says how the range is used.
  std::optional<std::pair<std::string, const Range*>> Pick(int family, int64_t now,
                                                            int64_t reuse_delay_s,
                                                            std::string* why);
  void Take(const std::string& ip, int family, const Owner& owner, const Range* range);
  // Drops an allocation without a reuse delay (an allocation undone).
  void Forget(const std::string& ip) { EraseAllocated(ip); }
  // Returns the addresses `owner` held (now cooling down).
  std::vector<std::string> Release(const Owner& owner, int64_t now);
  std::vector<std::string> AddressesOf(const Owner& owner) const;
  const std::map<std::string, std::pair<int, Owner>>& allocated() const { return allocated_; }
  std::string Cursor(const std::string& subnet) const;
  // Drops cooling entries older than the delay; returns their addresses.
  std::vector<std::string> Expire(int64_t now, int64_t reuse_delay_s);
  // Addresses of `r`, an element of ranges(), allocated / cooling down.
  size_t InUse(const Range& r) const;
  size_t Cooling(const Range& r) const;
  // The range holding `ip`, or nullptr.
  const Range* RangeOf(const std::string& ip) const;

 private:
  // Index into ranges_ of the range holding `ip`, or -1.
  int RangeIndex(const std::string& ip) const;
  void SetAllocated(const std::string& ip, int family, const Owner& owner);
  void EraseAllocated(const std::string& ip);
  void SetCooling(const std::string& ip, int64_t released_unix);
  bool EraseCooling(const std::string& ip);

  std::vector<Range> ranges_;
  std::vector<size_t> in_use_n_, cooling_n_;  // per range, as InUse()/Cooling() answer
  std::map<std::string, std::pair<int, Owner>> allocated_;  // ip -> (family, owner)
  std::map<std::string, int64_t> cooling_;                  // ip -> released at
  std::map<std::string, u128> cursor_;                      // subnet -> last picked
};

}  // namespace trellis::ipam

#endif  // TRELLIS_PLUGINS_IPAM_ALLOCATOR_H_
