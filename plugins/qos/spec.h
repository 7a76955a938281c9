// The qos module's configuration and what it asks of one pod; no I/O.
//
// Units: rates are bits per second on the wire (Ethernet header included, as
// tc counts them), bursts are bytes. Every parse error names the field it is
// about: "default_egress_bandwidth: 'fast' is not a bandwidth ...".
#ifndef TRELLIS_PLUGINS_QOS_SPEC_H_
#define TRELLIS_PLUGINS_QOS_SPEC_H_

#include <trellis/types.hpp>

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace trellis::qos {

inline constexpr uint64_t kMinRate = 1000;                  // 1 kbit/s (kubelet's floor)
inline constexpr uint64_t kMaxRate = 4'000'000'000'000ULL;  // 4 Tbit/s
// tc expresses a bucket as a u32 count of 64 ns ticks (/proc/net/psched):
// a burst may hold at most this much time at its rate.
inline constexpr double kMaxBurstSeconds = 270.0;
// kubelet and containerd send this many bits (MaxInt32, MaxUint32) or more as
// the burst when the pod only sets a rate annotation: "no burst configured".
inline constexpr uint64_t kUnsetBurstBits = 2147483647ULL;
inline constexpr uint32_t kEthernetHeader = 14;

enum Direction { kEgress = 0, kIngress = 1 };
inline constexpr std::array<Direction, 2> kDirections = {kEgress, kIngress};
inline const char* DirectionName(Direction d) { return d == kEgress ? "egress" : "ingress"; }

// "100Mbps", "1Gbps", "500M", "10mbit", "1.5Gi", 25000000 (a JSON number is
// bits/s). SI prefixes are decimal, Ki/Mi/Gi/Ti binary; the unit is bits/s
// ("", "bps", "bit", "bit/s"). Throws sdk::Error(TRELLIS_E_INVALID) naming
// `field` for anything else, a value <= 0, below kMinRate or above kMaxRate.
uint64_t ParseBandwidth(const sdk::Json& value, const std::string& field);
// "5ms", "2s", "100us" -> microseconds; a JSON number is milliseconds.
uint64_t ParseDuration(const sdk::Json& value, const std::string& field);
// 100000000 -> "100Mbit" (for messages).
std::string FormatRate(uint64_t bits_per_second);

struct PriorityClass {
  std::string name;
  uint32_t tc_class_id = 0;                     // 1..255: the HTB class minor on the node's IFBs
  uint32_t priority = 0;                        // HTB prio of its pods' leaves: 0 first .. 7 last
  std::array<std::optional<uint64_t>, 2> rate;  // per Direction; nullopt: not in this class
};

struct Config {
  std::array<std::optional<uint64_t>, 2> default_rate;  // per-pod default, by Direction
  std::array<std::optional<uint64_t>, 2> node_rate;     // shared node limit, by Direction
  std::map<std::string, PriorityClass> classes;
  std::string class_key = "trellis.io/qos-class";
  uint64_t queue_latency_us = 5000;  // per-pod queue, as time at the pod's rate
  uint64_t stats_interval_us = 10'000'000;

  // Throws sdk::Error(TRELLIS_E_INVALID) naming the offending key.
  static Config Parse(const sdk::Json& j);
  const PriorityClass* FindClass(const std::string& name) const;
  // The guaranteed rate of the implicit class of pods that pick none, when
  // a node limit is set: what the priority classes leave, at least 1%.
  std::optional<uint64_t> DefaultClassRate(Direction d) const;
};

struct Limit {
  uint64_t rate = 0;   // bits/s
  uint32_t burst = 0;  // bytes
  std::string source;  // "runtimeConfig.bandwidth", "annotation", "default"
  bool operator==(const Limit& o) const { return rate == o.rate && burst == o.burst; }
};

// What one pod attachment asks for.
struct PodSpec {
  std::string class_name;  // "" : none
  std::string class_source;
  std::array<std::optional<Limit>, 2> limit;  // per Direction
};

// The inputs PodSpec depends on, small enough to keep per pod and to
// recompute the spec from when the config changes.
struct PodInputs {
  sdk::Json bandwidth = nullptr;                   // runtimeConfig.bandwidth, or null
  std::map<std::string, std::string> annotations;  // the relevant ones only
  std::string args_class;                          // from the netconf args
  uint32_t mtu = 1500;

  static PodInputs FromPod(const sdk::Pod& pod, const Config& cfg);
  sdk::Json ToJson() const;
  static PodInputs FromJson(const sdk::Json& j);
};

// Precedence, highest first: runtimeConfig.bandwidth, the
// kubernetes.io/{ingress,egress}-bandwidth annotations, the module default
// (only for pods without a priority class: a class bounds its pods itself).
// The class comes from the netconf args (`args.<class_key>` or
// `args.cni.<class_key>`), else from the pod annotation <class_key>.
// Throws sdk::Error(TRELLIS_E_INVALID) naming the field for invalid values
// and unknown classes.
PodSpec Resolve(const PodInputs& in, const Config& cfg);

// The default burst for a rate: room for one full-size GSO packet (64 KiB)
// or 1 ms at the rate, whichever is larger.
uint32_t DefaultBurst(uint64_t rate);

}  // namespace trellis::qos

#endif  // TRELLIS_PLUGINS_QOS_SPEC_H_
