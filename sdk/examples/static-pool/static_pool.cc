// static-pool: an address source handing out addresses from a configured
// list, for nodes whose pod addresses are assigned from outside (a block
// routed to the node, addresses reserved in an external IPAM). With it,
// the ipam module's `source: external` takes pod addresses from the list.
//
//   modules:
//     ipam: {config: {source: external, families: [4, 6]}}
//     pool:
//       plugin: static-pool
//       config:
//         addresses:
//           - 192.0.2.10/24
//           - {address: 192.0.2.11/24, gateway: 192.0.2.1}
//           - {address: 2001:db8::10/64, route_table: 100}
//
// Who holds which address is kept in the host's key/value store
// ("held/<ip>" -> {"c": container id, "i": ifname}), so a restart of
// trellisd hands out no held address twice. Acquiring for a pod that holds
// addresses already returns those (a retried ADD leaks nothing).
#include <trellis/plugin.hpp>

#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#ifndef STATIC_POOL_VERSION
#define STATIC_POOL_VERSION "0.0.0"
#endif

namespace {

using trellis::sdk::Address;
using trellis::sdk::Error;
using trellis::sdk::Json;
using trellis::sdk::Pod;
using trellis::sdk::PodRef;

// Route tables the kernel reserves (unspec, default, main, local).
bool ReservedTable(uint32_t t) { return t == 253 || t == 254 || t == 255; }

// "network" or "broadcast" when `a` is that address of its subnet (neither
// can be a pod's), else "".
std::string SubnetEdge(const Address& a) {
  const int bits = a.family == 4 ? 32 : 128;
  if (a.prefix_len >= bits - 1) return "";  // /31, /32, /127, /128: every address is usable
  bool all_zero = true, all_one = true;
  for (int i = a.prefix_len; i < bits; ++i) {
    bool bit = (a.ip[i / 8] >> (7 - i % 8)) & 1;
    all_zero &= !bit;
    all_one &= bit;
  }
  if (all_zero) return "network";
  if (all_one && a.family == 4) return "broadcast";
  return "";
}

bool SameSubnet(const Address& a, const std::array<uint8_t, 16>& other) {
  for (int i = 0; i < a.prefix_len; ++i) {
    if (((a.ip[i / 8] ^ other[i / 8]) >> (7 - i % 8)) & 1) return false;
  }
  return true;
}

std::vector<Address> ParseAddresses(const Json& config) {
  for (const auto& [k, v] : config.items()) {
    if (k != "addresses") throw Error(TRELLIS_E_INVALID, k + ": unknown key (known: addresses)");
  }
  if (!config.contains("addresses") || !config["addresses"].is_array() ||
      config["addresses"].empty()) {
    throw Error(TRELLIS_E_INVALID, "addresses: expected a non-empty list of addresses");
  }
  std::vector<Address> out;
  std::map<std::string, size_t> seen;
  const Json& list = config["addresses"];
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string at = "addresses[" + std::to_string(i) + "]";
    const Json& e = list[i];
    Json entry = e.is_string() ? Json{{"address", e}} : e;
    if (!entry.is_object()) {
      throw Error(TRELLIS_E_INVALID, at + ": expected \"ip/prefix\" or {address, gateway, route_table}");
    }
    for (const auto& [k, v] : entry.items()) {
      if (k != "address" && k != "gateway" && k != "route_table") {
        throw Error(TRELLIS_E_INVALID, at + "." + k + ": unknown key (known: address, gateway, route_table)");
      }
    }
    if (!entry.contains("address") || !entry["address"].is_string()) {
      throw Error(TRELLIS_E_INVALID, at + ".address: expected \"ip/prefix\"");
    }
    const std::string text = entry["address"].get<std::string>();
    if (text.find('/') == std::string::npos) {
      throw Error(TRELLIS_E_INVALID, at + ".address: '" + text + "' lacks its /prefix (e.g. " +
                                         text + (text.find(':') == std::string::npos ? "/24" : "/64") + ")");
    }
    Address a;
    try {
      a = Address::Parse(text);
    } catch (const Error& err) {
      throw Error(TRELLIS_E_INVALID, at + ".address: " + err.what());
    }
    if (std::string edge = SubnetEdge(a); !edge.empty()) {
      throw Error(TRELLIS_E_INVALID, at + ".address: " + text + " is the " + edge +
                                         " address of its subnet");
    }
    if (entry.contains("gateway")) {
      if (!entry["gateway"].is_string()) throw Error(TRELLIS_E_INVALID, at + ".gateway: expected an IP address");
      Address gw;
      try {
        gw = Address::Parse(entry["gateway"].get<std::string>());
      } catch (const Error& err) {
        throw Error(TRELLIS_E_INVALID, at + ".gateway: " + err.what());
      }
      if (gw.family != a.family) throw Error(TRELLIS_E_INVALID, at + ".gateway: not of the address's family");
      if (gw.ip == a.ip) throw Error(TRELLIS_E_INVALID, at + ".gateway: is the address itself");
      if (!SameSubnet(a, gw.ip)) {
        throw Error(TRELLIS_E_INVALID, at + ".gateway: " + gw.IpString() + " is outside " + text);
      }
      a.gateway = gw.ip;
    }
    if (entry.contains("route_table")) {
      const Json& t = entry["route_table"];
      if (!t.is_number_unsigned() || t.get<uint64_t>() > UINT32_MAX || ReservedTable(t.get<uint32_t>())) {
        throw Error(TRELLIS_E_INVALID, at + ".route_table: expected 0 (main) or a table id from 1 "
                                            "to 4294967295 other than 253-255");
      }
      a.route_table = t.get<uint32_t>();
    }
    a.source_ref = "static-pool";
    if (auto [it, fresh] = seen.emplace(a.IpString(), i); !fresh) {
      throw Error(TRELLIS_E_INVALID, at + ".address: " + a.IpString() + " is listed already at addresses[" +
                                         std::to_string(it->second) + "]");
    }
    out.push_back(a);
  }
  return out;
}

class StaticPool {
 public:
  static constexpr const char* kName = "static-pool";
  static constexpr const char* kVersion = STATIC_POOL_VERSION;
  static constexpr const char* kDescription =
      "Address source: pod addresses from a configured list (sdk/examples/static-pool)";

  static void Validate(const Json& config) { ParseAddresses(config); }

  StaticPool(trellis::sdk::Host host, const Json& config)
      : host_(host), pool_(ParseAddresses(config)) {
    for (const auto& [key, value] : host_.Scan("held/")) {
      Json j = Json::parse(value, nullptr, false);
      if (j.is_discarded() || !j.is_object()) {
        host_.Warn("dropping an unreadable record " + key);
        host_.Delete(key);
        continue;
      }
      held_[key.substr(5)] = PodRef{j.value("c", ""), j.value("i", "")};
    }
    m_addresses_ = host_.RegisterMetric(TRELLIS_METRIC_GAUGE, "trellis_static_pool_addresses",
                                        "Addresses of the static pool, by family and state "
                                        "(free, held).",
                                        {"family", "state"});
    std::lock_guard lock(mu_);
    UpdateMetricsLocked();
    host_.Info(std::to_string(pool_.size()) + " addresses configured, " +
               std::to_string(held_.size()) + " held");
  }

  void Reconfigure(const Json& config) {
    std::vector<Address> next = ParseAddresses(config);
    std::lock_guard lock(mu_);
    pool_ = std::move(next);
    for (const auto& [ip, ref] : held_) {
      if (Find(ip) == nullptr) {
        host_.Warn(ip + " is held by " + ref.container_id +
                   " but is no longer configured; it is not handed out again once released");
      }
    }
    UpdateMetricsLocked();
  }

  std::vector<Address> AcquireAddresses(const Pod& pod, int family, uint32_t count) {
    std::lock_guard lock(mu_);
    const PodRef owner = pod.ref();
    std::vector<Address> out, taken;
    for (const auto& [ip, ref] : held_) {  // a retried acquire returns what the pod has
      const Address* a = Find(ip);
      if (ref == owner && a != nullptr && a->family == family && out.size() < count) out.push_back(*a);
    }
    for (const auto& a : pool_) {
      if (out.size() >= count) break;
      if (a.family != family || held_.contains(a.IpString())) continue;
      // Durable before it is handed out: a crash never hands it out twice.
      host_.Put("held/" + a.IpString(),
                Json{{"c", owner.container_id}, {"i", owner.ifname}}.dump());
      held_[a.IpString()] = owner;
      out.push_back(a);
      taken.push_back(a);
    }
    if (out.size() < count) {
      size_t size = 0;
      for (const auto& a : pool_) size += a.family == family;
      // What this call took goes back: all or nothing.
      ReleaseLocked(taken, &owner);
      UpdateMetricsLocked();
      throw Error(TRELLIS_E_EXHAUSTED, "no free IPv" + std::to_string(family) +
                                           " address in the static pool (" + std::to_string(size) +
                                           " configured, all held)");
    }
    UpdateMetricsLocked();
    return out;
  }

  void ReleaseAddresses(const std::vector<Address>& addresses) {
    std::lock_guard lock(mu_);
    ReleaseLocked(addresses, nullptr);
    UpdateMetricsLocked();
  }

  Json Status() {
    std::lock_guard lock(mu_);
    Json families = Json::object();
    std::string message;
    bool degraded = false;
    for (int family : {4, 6}) {
      size_t size = 0, held = 0;
      for (const auto& a : pool_) {
        if (a.family != family) continue;
        size++;
        held += held_.contains(a.IpString());
      }
      if (size == 0) continue;
      families[std::to_string(family)] = {{"size", size}, {"held", held}, {"free", size - held}};
      if (held == size) {
        degraded = true;
        message += (message.empty() ? "" : "; ") + ("every IPv" + std::to_string(family) + " address is held");
      }
    }
    Json held = Json::array();
    for (const auto& [ip, ref] : held_) {
      held.push_back({{"ip", ip},
                      {"container_id", ref.container_id},
                      {"ifname", ref.ifname},
                      {"configured", Find(ip) != nullptr}});
    }
    return {{"healthy", true}, {"degraded", degraded}, {"message", message},
            {"families", families}, {"held", held}};
  }

 private:
  const Address* Find(const std::string& ip) const {
    for (const auto& a : pool_) {
      if (a.IpString() == ip) return &a;
    }
    return nullptr;
  }

  // Frees `addresses` (those held by `owner`, when given). Unknown ones are
  // ignored, as the ABI asks.
  void ReleaseLocked(const std::vector<Address>& addresses, const PodRef* owner) {
    for (const auto& a : addresses) {
      auto it = held_.find(a.IpString());
      if (it == held_.end() || (owner != nullptr && it->second != *owner)) continue;
      host_.Delete("held/" + it->first);
      held_.erase(it);
    }
  }

  void UpdateMetricsLocked() {
    for (int family : {4, 6}) {
      double size = 0, held = 0;
      for (const auto& a : pool_) {
        if (a.family != family) continue;
        size++;
        held += held_.contains(a.IpString());
      }
      host_.SetMetric(m_addresses_, {std::to_string(family), "held"}, held);
      host_.SetMetric(m_addresses_, {std::to_string(family), "free"}, size - held);
    }
  }

  trellis::sdk::Host host_;
  std::mutex mu_;
  std::vector<Address> pool_;
  std::map<std::string, PodRef> held_;  // by IP text
  uint32_t m_addresses_ = 0;
};

}  // namespace

TRELLIS_PLUGIN(StaticPool);
