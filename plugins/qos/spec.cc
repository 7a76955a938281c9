#include "spec.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <set>

namespace trellis::qos {
namespace {

using sdk::Error;
using sdk::Json;

[[noreturn]] void Invalid(const std::string& field, const std::string& why) {
  throw Error(TRELLIS_E_INVALID, field + ": " + why);
}

std::string Quote(const Json& v) {
  return v.is_string() ? "'" + v.get<std::string>() + "'" : v.dump();
}

const char* const kBandwidthExamples = "(examples: 100Mbps, 1Gbps, 500M, 10mbit)";

// Parses a decimal number at the start of `s` ("1.5" of "1.5Gbps"); returns
// the number of characters used, 0 when there is none.
size_t ParseNumber(const std::string& s, double* out) {
  size_t i = 0;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
  size_t digits = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i, ++digits;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i, ++digits;
  }
  if (digits == 0) return 0;
  *out = std::strtod(s.substr(0, i).c_str(), nullptr);
  return i;
}

uint64_t CheckRange(double bits, const std::string& field, const Json& shown) {
  if (!(bits > 0)) Invalid(field, Quote(shown) + " is not a positive bandwidth");
  if (bits > double(kMaxRate)) {
    Invalid(field, Quote(shown) + " is above the maximum of 4Tbps");
  }
  if (bits < double(kMinRate)) {
    Invalid(field, Quote(shown) + " is below the minimum of 1kbit/s");
  }
  return static_cast<uint64_t>(std::llround(bits));
}

std::string Lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

uint64_t ParseBandwidth(const Json& v, const std::string& field) {
  if (v.is_number()) return CheckRange(v.get<double>(), field, v);
  if (!v.is_string())
    Invalid(field, "expected a bandwidth string " + std::string(kBandwidthExamples));
  std::string s = v.get<std::string>();
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.erase(0, 1);
  double number = 0;
  size_t used = ParseNumber(s, &number);
  if (used == 0) Invalid(field, Quote(v) + " is not a bandwidth " + kBandwidthExamples);
  std::string rest = s.substr(used);
  while (!rest.empty() && rest.front() == ' ') rest.erase(0, 1);
  // Prefix: decimal k/K, M, G, T; binary Ki, Mi, Gi, Ti. A lone lower-case
  // "m" is milli in a Kubernetes quantity and mega in tc: refused as
  // ambiguous; "mbit"/"mbps" are tc's mega.
  double mult = 1;
  size_t p = 0;
  if (!rest.empty()) {
    char c = rest[0];
    bool binary = rest.size() > 1 && rest[1] == 'i';
    switch (c) {
      case 'k':
      case 'K':
        mult = binary ? 1024.0 : 1e3;
        p = binary ? 2 : 1;
        break;
      case 'M':
        mult = binary ? 1048576.0 : 1e6;
        p = binary ? 2 : 1;
        break;
      case 'G':
      case 'g':
        mult = binary ? 1073741824.0 : 1e9;
        p = binary ? 2 : 1;
        break;
      case 'T':
      case 't':
        mult = binary ? 1099511627776.0 : 1e12;
        p = binary ? 2 : 1;
        break;
      case 'm': {
        std::string unit = Lower(rest.substr(1));
        if (unit != "bit" && unit != "bps" && unit != "bit/s") {
          Invalid(field, Quote(v) + " is ambiguous: 'm' is milli in Kubernetes quantities; write " +
                             s.substr(0, used) + "M or " + s.substr(0, used) + "Mbps");
        }
        mult = 1e6;
        p = 1;
        break;
      }
      default:
        break;
    }
  }
  std::string unit = rest.substr(p);
  // "bps" is bits per second here, as in Terway's qos_conf (tc's "bps" means
  // bytes: refused with upper-case "B" so that nobody is surprised).
  if (!unit.empty() && unit != "bps" && unit != "bit" && unit != "bit/s" && unit != "b/s") {
    if (unit == "Bps" || unit == "B/s" || unit == "B") {
      Invalid(field, Quote(v) + ": bytes per second are not accepted, give bits per second " +
                         kBandwidthExamples);
    }
    Invalid(field, Quote(v) + " is not a bandwidth " + kBandwidthExamples);
  }
  if (number < 0 || s[0] == '-') Invalid(field, Quote(v) + " is negative");
  return CheckRange(number * mult, field, v);
}

uint64_t ParseDuration(const Json& v, const std::string& field) {
  if (v.is_number()) {
    if (v.get<double>() < 0) Invalid(field, v.dump() + " is negative");
    return static_cast<uint64_t>(std::llround(v.get<double>() * 1000));
  }
  if (!v.is_string()) Invalid(field, "expected a duration like \"5ms\" or \"10s\"");
  std::string s = v.get<std::string>();
  double number = 0;
  size_t used = ParseNumber(s, &number);
  std::string unit = used == 0 ? "" : s.substr(used);
  double mult = unit == "us" ? 1 : unit == "ms" ? 1e3 : unit == "s" ? 1e6 : unit == "m" ? 6e7 : -1;
  if (used == 0 || mult < 0)
    Invalid(field, Quote(v) + " is not a duration like \"5ms\" or \"10s\"");
  if (number < 0) Invalid(field, Quote(v) + " is negative");
  return static_cast<uint64_t>(std::llround(number * mult));
}

std::string FormatRate(uint64_t bits) {
  const char* units[] = {"bit", "kbit", "Mbit", "Gbit", "Tbit"};
  double v = double(bits);
  int u = 0;
  while (v >= 1000 && u < 4) v /= 1000, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, v == std::floor(v) ? "%.0f%s" : "%.3g%s", v, units[u]);
  return buf;
}

uint32_t DefaultBurst(uint64_t rate) {
  uint64_t one_ms = rate / 8 / 1000;
  return static_cast<uint32_t>(
      std::max<uint64_t>(65536 + kEthernetHeader, std::min<uint64_t>(one_ms, 1u << 30)));
}

const PriorityClass* Config::FindClass(const std::string& name) const {
  auto it = classes.find(name);
  return it == classes.end() ? nullptr : &it->second;
}

std::optional<uint64_t> Config::DefaultClassRate(Direction d) const {
  if (!node_rate[d]) return std::nullopt;
  uint64_t used = 0;
  for (const auto& [n, c] : classes) used += c.rate[d].value_or(0);
  uint64_t floor = std::max<uint64_t>(*node_rate[d] / 100, kMinRate);
  return used + floor > *node_rate[d] ? floor : *node_rate[d] - used;
}

Config Config::Parse(const Json& j) {
  if (!j.is_object()) throw Error(TRELLIS_E_INVALID, "qos config: expected a map");
  static const std::set<std::string> known = {"default_egress_bandwidth",
                                              "default_ingress_bandwidth",
                                              "node_egress_bandwidth",
                                              "node_ingress_bandwidth",
                                              "priority_classes",
                                              "class_annotation",
                                              "queue_latency",
                                              "stats_interval"};
  for (const auto& [k, v] : j.items()) {
    if (!known.contains(k)) {
      std::string list;
      for (const auto& n : known) list += (list.empty() ? "" : ", ") + n;
      Invalid(k, "unknown key (known: " + list + ")");
    }
  }
  Config c;
  for (Direction d : kDirections) {
    std::string dir = DirectionName(d);
    if (auto it = j.find("default_" + dir + "_bandwidth"); it != j.end() && !it->is_null()) {
      c.default_rate[d] = ParseBandwidth(*it, "default_" + dir + "_bandwidth");
    }
    if (auto it = j.find("node_" + dir + "_bandwidth"); it != j.end() && !it->is_null()) {
      c.node_rate[d] = ParseBandwidth(*it, "node_" + dir + "_bandwidth");
    }
  }
  if (auto it = j.find("class_annotation"); it != j.end()) {
    if (!it->is_string() || it->get<std::string>().empty()) {
      Invalid("class_annotation", "expected a non-empty annotation key");
    }
    c.class_key = it->get<std::string>();
  }
  if (auto it = j.find("queue_latency"); it != j.end()) {
    c.queue_latency_us = ParseDuration(*it, "queue_latency");
    if (c.queue_latency_us < 1000 || c.queue_latency_us > 1'000'000) {
      Invalid("queue_latency", Quote(*it) + " is outside 1ms..1s");
    }
  }
  if (auto it = j.find("stats_interval"); it != j.end()) {
    c.stats_interval_us = ParseDuration(*it, "stats_interval");
    if (c.stats_interval_us < 100'000 || c.stats_interval_us > 3'600'000'000ULL) {
      Invalid("stats_interval", Quote(*it) + " is outside 100ms..1h");
    }
  }
  if (auto it = j.find("priority_classes"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) {
      Invalid("priority_classes",
              "expected a map of class name to "
              "{egress_bandwidth, ingress_bandwidth, tc_class_id}");
    }
    std::map<uint32_t, std::string> ids;
    for (const auto& [name, cj] : it->items()) {
      const std::string f = "priority_classes." + name;
      bool name_ok = !name.empty() && name.size() <= 63;
      for (char ch : name) {
        if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '_' && ch != '.') {
          name_ok = false;
        }
      }
      if (!name_ok) {
        Invalid(f, "a class name is 1-63 letters, digits, '-', '_' or '.'");
      }
      if (!cj.is_object())
        Invalid(f, "expected {egress_bandwidth, ingress_bandwidth, tc_class_id}");
      for (const auto& [k, v] : cj.items()) {
        if (k != "egress_bandwidth" && k != "ingress_bandwidth" && k != "tc_class_id" &&
            k != "priority") {
          Invalid(
              f + "." + k,
              "unknown key (known: egress_bandwidth, ingress_bandwidth, tc_class_id, priority)");
        }
      }
      PriorityClass pc;
      pc.name = name;
      auto id = cj.find("tc_class_id");
      if (id == cj.end()) Invalid(f + ".tc_class_id", "required (an integer from 1 to 255)");
      if (!id->is_number_integer() || id->get<int64_t>() < 1 || id->get<int64_t>() > 255) {
        Invalid(f + ".tc_class_id", id->dump() + " is not an integer from 1 to 255");
      }
      pc.tc_class_id = id->get<uint32_t>();
      if (auto [at, fresh] = ids.emplace(pc.tc_class_id, name); !fresh) {
        Invalid(f + ".tc_class_id",
                std::to_string(pc.tc_class_id) + " is already used by class " + at->second);
      }
      if (auto p = cj.find("priority"); p != cj.end()) {
        if (!p->is_number_integer() || p->get<int64_t>() < 0 || p->get<int64_t>() > 7) {
          Invalid(f + ".priority", p->dump() + " is not an integer from 0 (first) to 7");
        }
        pc.priority = p->get<uint32_t>();
      }
      for (Direction d : kDirections) {
        std::string key = std::string(DirectionName(d)) + "_bandwidth";
        if (auto b = cj.find(key); b != cj.end() && !b->is_null()) {
          pc.rate[d] = ParseBandwidth(*b, f + "." + key);
        }
      }
      if (!pc.rate[kEgress] && !pc.rate[kIngress]) {
        Invalid(f, "needs egress_bandwidth, ingress_bandwidth or both");
      }
      c.classes.emplace(name, std::move(pc));
    }
  }
  for (Direction d : kDirections) {
    if (!c.node_rate[d]) continue;
    uint64_t sum = 0;
    for (const auto& [n, pc] : c.classes) sum += pc.rate[d].value_or(0);
    if (sum > *c.node_rate[d]) {
      Invalid("priority_classes", std::string("the ") + DirectionName(d) +
                                      " rates of the classes add up to " + FormatRate(sum) +
                                      ", more than node_" + DirectionName(d) + "_bandwidth (" +
                                      FormatRate(*c.node_rate[d]) + ")");
    }
  }
  return c;
}

PodInputs PodInputs::FromPod(const sdk::Pod& pod, const Config& cfg) {
  PodInputs in;
  Json rc = pod.RuntimeConfig();
  if (rc.is_object() && rc.contains("bandwidth")) in.bandwidth = rc["bandwidth"];
  for (const std::string& key : {std::string("kubernetes.io/ingress-bandwidth"),
                                 std::string("kubernetes.io/egress-bandwidth"), cfg.class_key}) {
    if (auto it = pod.annotations.find(key); it != pod.annotations.end()) {
      in.annotations[key] = it->second;
    }
  }
  Json args = pod.CniArgs();
  if (args.is_object()) {
    const Json* v = nullptr;
    if (auto it = args.find(cfg.class_key); it != args.end()) {
      v = &*it;
    } else if (auto cni = args.find("cni"); cni != args.end() && cni->is_object()) {
      if (auto it2 = cni->find(cfg.class_key); it2 != cni->end()) v = &*it2;
    }
    if (v != nullptr) {
      if (!v->is_string()) Invalid("args." + cfg.class_key, "expected a class name (string)");
      in.args_class = v->get<std::string>();
    }
  }
  in.mtu = pod.mtu == 0 ? 1500 : pod.mtu;
  return in;
}

Json PodInputs::ToJson() const {
  return {{"bandwidth", bandwidth},
          {"annotations", annotations},
          {"args_class", args_class},
          {"mtu", mtu}};
}

PodInputs PodInputs::FromJson(const Json& j) {
  PodInputs in;
  in.bandwidth = j.value("bandwidth", Json());
  in.annotations = j.value("annotations", std::map<std::string, std::string>{});
  in.args_class = j.value("args_class", "");
  in.mtu = j.value("mtu", 1500u);
  return in;
}

namespace {

// One direction of runtimeConfig.bandwidth: {ingressRate, ingressBurst}.
std::optional<Limit> FromCapability(const Json& bw, Direction d, uint32_t mtu) {
  const std::string dir = d == kEgress ? "egress" : "ingress";
  const std::string rate_key = dir + "Rate", burst_key = dir + "Burst";
  const std::string base = "runtimeConfig.bandwidth.";
  auto number = [&](const std::string& key) -> std::optional<double> {
    auto it = bw.find(key);
    if (it == bw.end() || it->is_null()) return std::nullopt;
    if (!it->is_number()) Invalid(base + key, it->dump() + " is not a number");
    if (it->get<double>() < 0) Invalid(base + key, it->dump() + " is negative");
    return it->get<double>();
  };
  auto rate = number(rate_key);
  auto burst = number(burst_key);
  bool burst_set = burst && *burst > 0 && *burst < double(kUnsetBurstBits);
  if (!rate || *rate == 0) {
    if (burst_set) Invalid(base + burst_key, "is set but " + rate_key + " is not");
    return std::nullopt;
  }
  Limit l;
  l.source = "runtimeConfig.bandwidth";
  l.rate = CheckRange(*rate, base + rate_key, bw[rate_key]);
  if (!burst_set) {
    l.burst = DefaultBurst(l.rate);
    return l;
  }
  double bytes = *burst / 8;
  double frame = double(mtu) + kEthernetHeader;
  if (bytes < frame) {
    char msg[160];
    std::snprintf(msg, sizeof msg,
                  "%.0f bits (%.0f bytes) is smaller than one full-size packet (MTU %u + %u bytes "
                  "of Ethernet header = %.0f bits)",
                  *burst, bytes, mtu, kEthernetHeader, frame * 8);
    Invalid(base + burst_key, msg);
  }
  if (bytes / (double(l.rate) / 8) > kMaxBurstSeconds) {
    Invalid(base + burst_key, bw[burst_key].dump() + " bits is more than " +
                                  std::to_string(int(kMaxBurstSeconds)) + " s of traffic at " +
                                  FormatRate(l.rate) + ", more than tc can express");
  }
  l.burst = static_cast<uint32_t>(bytes);
  return l;
}

}  // namespace

PodSpec Resolve(const PodInputs& in, const Config& cfg) {
  PodSpec spec;
  if (!in.args_class.empty()) {
    spec.class_name = in.args_class;
    spec.class_source = "args." + cfg.class_key;
  } else if (auto it = in.annotations.find(cfg.class_key); it != in.annotations.end()) {
    spec.class_name = it->second;
    spec.class_source = "annotation " + cfg.class_key;
  }
  const PriorityClass* pc = nullptr;
  if (!spec.class_name.empty()) {
    pc = cfg.FindClass(spec.class_name);
    if (pc == nullptr) {
      std::string known;
      for (const auto& [n, c] : cfg.classes) known += (known.empty() ? "" : ", ") + n;
      Invalid(spec.class_source, "unknown priority class '" + spec.class_name + "' (known: " +
                                     (known.empty() ? "none configured" : known) + ")");
    }
  }
  if (!in.bandwidth.is_null() && !in.bandwidth.is_object()) {
    Invalid("runtimeConfig.bandwidth",
            "expected an object {ingressRate, ingressBurst, "
            "egressRate, egressBurst}");
  }
  for (Direction d : kDirections) {
    if (in.bandwidth.is_object()) {
      if (auto l = FromCapability(in.bandwidth, d, in.mtu)) {
        spec.limit[d] = *l;
        continue;
      }
    }
    const std::string key = std::string("kubernetes.io/") + DirectionName(d) + "-bandwidth";
    if (auto it = in.annotations.find(key); it != in.annotations.end()) {
      Limit l;
      l.rate = ParseBandwidth(Json(it->second), "annotation " + key);
      l.burst = DefaultBurst(l.rate);
      l.source = "annotation";
      spec.limit[d] = l;
      continue;
    }
    bool in_class = pc != nullptr && pc->rate[d].has_value();
    if (!in_class && cfg.default_rate[d]) {
      Limit l;
      l.rate = *cfg.default_rate[d];
      l.burst = DefaultBurst(l.rate);
      l.source = "default";
      spec.limit[d] = l;
    }
  }
  return spec;
}

}  // namespace trellis::qos
