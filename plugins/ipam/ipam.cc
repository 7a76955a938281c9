// ipam: pod addresses from local ranges, or from another module's address
// source (source: eni). Allocations persist in the host's key/value store:
//   a/<ip>        {"c": container, "i": ifname, "f": family, "addr": {...}}
//   r/<ip>        release time (unix s), for reuse_delay across restarts
//   cur/<subnet>  next-fit cursor
#include <trellis/plugin.hpp>

#include <algorithm>
#include <chrono>
#include <mutex>

#include "allocator.h"

namespace {

using trellis::sdk::Address;
using trellis::sdk::Error;
using trellis::sdk::Json;
using trellis::sdk::Pod;
using trellis::sdk::PodRef;
namespace ipam = trellis::ipam;

int64_t Now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// "30", 30, "30s", "5m", "1h" -> seconds.
int64_t ParseSeconds(const Json& v, const std::string& field) {
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return v.get<int64_t>();
  if (v.is_string()) {
    std::string s = v.get<std::string>();
    int64_t mult = 1;
    if (!s.empty() && (s.back() == 's' || s.back() == 'm' || s.back() == 'h')) {
      mult = s.back() == 's' ? 1 : s.back() == 'm' ? 60 : 3600;
      s.pop_back();
    }
    char* end = nullptr;
    long long n = std::strtoll(s.c_str(), &end, 10);
    if (!s.empty() && *end == '\0' && n >= 0) return n * mult;
  }
  throw Error(TRELLIS_E_INVALID, field + ": expected a duration like 30, \"30s\" or \"5m\"");
}

Json AddressJson(const Address& a) {
  return {{"cidr", a.Cidr()}, {"gateway", a.GatewayString()}, {"route_table", a.route_table},
          {"source_ref", a.source_ref}, {"flags", a.flags}};
}
Address AddressFromJson(const Json& j) {
  Address a = Address::Parse(j.at("cidr").get<std::string>());
  a.SetGateway(j.value("gateway", ""));
  a.route_table = j.value("route_table", 0u);
  a.source_ref = j.value("source_ref", "");
  a.flags = j.value("flags", 0);
  return a;
}

struct Config {
  bool external = false;  // addresses come from the host's address-source service
  std::vector<ipam::Range> ranges;
  std::vector<int> families;
  int64_t reuse_delay_s = 30;

  static Config Parse(const Json& j) {
    Config c;
    for (const auto& [k, v] : j.items()) {
      if (k != "source" && k != "ranges" && k != "reuse_delay" && k != "families") {
        throw Error(TRELLIS_E_INVALID, k + ": unknown key (known: source, ranges, reuse_delay, families)");
      }
    }
    std::string source = j.value("source", "local");
    if (source == "eni" || source == "external") {
      c.external = true;
    } else if (source != "local") {
      throw Error(TRELLIS_E_INVALID, "source: expected local, eni or external, got '" + source + "'");
    }
    if (j.contains("reuse_delay")) c.reuse_delay_s = ParseSeconds(j["reuse_delay"], "reuse_delay");
    if (j.contains("ranges")) {
      if (!j["ranges"].is_array()) throw Error(TRELLIS_E_INVALID, "ranges: expected a list");
      for (size_t i = 0; i < j["ranges"].size(); ++i) c.ranges.push_back(ipam::ParseRange(j["ranges"][i], i));
    }
    for (size_t i = 0; i < c.ranges.size(); ++i) {
      for (size_t k = 0; k < i; ++k) {
        const auto& a = c.ranges[i];
        const auto& b = c.ranges[k];
        if (a.family == b.family && a.first <= b.last && b.first <= a.last) {
          throw Error(TRELLIS_E_INVALID, "ranges[" + std::to_string(i) + "]: overlaps ranges[" +
                                             std::to_string(k) + "] (" + b.subnet + ")");
        }
      }
    }
    if (j.contains("families")) {
      if (!j["families"].is_array()) throw Error(TRELLIS_E_INVALID, "families: expected a list of 4 and/or 6");
      for (const auto& f : j["families"]) {
        if (!f.is_number_integer() || (f.get<int>() != 4 && f.get<int>() != 6)) {
          throw Error(TRELLIS_E_INVALID, "families: expected 4 and/or 6");
        }
        c.families.push_back(f.get<int>());
      }
    }
    if (!c.external) {
      if (c.ranges.empty()) throw Error(TRELLIS_E_INVALID, "ranges: at least one range is required with source local");
      c.families.clear();
      for (const auto& r : c.ranges) {
        if (std::find(c.families.begin(), c.families.end(), r.family) == c.families.end()) {
          c.families.push_back(r.family);
        }
      }
    } else if (c.families.empty()) {
      c.families = {4};
    }
    return c;
  }
};

class Ipam {
 public:
  static constexpr const char* kName = "ipam";
  static constexpr const char* kVersion = "1.0.0";
  static constexpr const char* kDescription =
      "Pod addresses from local ranges or from an address source (eni)";

  static void Validate(const Json& config) { Config::Parse(config); }

  Ipam(trellis::sdk::Host host, const Json& config) : host_(host), cfg_(Config::Parse(config)) {
    alloc_.SetRanges(cfg_.ranges);
    for (const auto& [key, value] : host_.Scan("a/")) {
      Json j = Json::parse(value, nullptr, false);
      if (j.is_discarded()) continue;
      std::string ip = key.substr(2);
      alloc_.Restore(ip, j.value("f", 4), {j.value("c", ""), j.value("i", "")});
      if (j.contains("addr")) full_[ip] = AddressFromJson(j["addr"]);
    }
    for (const auto& [key, value] : host_.Scan("r/")) {
      alloc_.RestoreReleased(key.substr(2), std::strtoll(value.c_str(), nullptr, 10));
    }
    for (const auto& [key, value] : host_.Scan("cur/")) alloc_.RestoreCursor(key.substr(4), value);
    m_allocated_ = host_.RegisterMetric(TRELLIS_METRIC_GAUGE, "trellis_ipam_addresses",
                                        "Addresses of a range, by state (in_use, cooling, size).",
                                        {"range", "state"});
    m_exhausted_ = host_.RegisterMetric(TRELLIS_METRIC_COUNTER, "trellis_ipam_exhausted_total",
                                        "Allocations refused because no address was free.", {"family"});
    UpdateMetrics();
    host_.Info("restored " + std::to_string(alloc_.allocated().size()) + " allocations");
  }

  void Reconfigure(const Json& config) {
    Config next = Config::Parse(config);
    std::lock_guard lock(mu_);
    cfg_ = std::move(next);
    alloc_.SetRanges(cfg_.ranges);
    for (const auto& [ip, v] : alloc_.allocated()) {
      if (!full_.contains(ip) && alloc_.RangeOf(ip) == nullptr) {
        host_.Warn(ip + " is held by " + v.second.container_id +
                   " but lies outside the new ranges; it stays until that pod is deleted");
      }
    }
    UpdateMetrics();
  }

  std::vector<Address> Allocate(const Pod& pod) {
    ipam::Owner owner{pod.container_id, pod.ifname};
    // An address source may wait for the cloud (an ENI being created and
    // attached: seconds, up to its acquire timeout). Ask it without holding
    // mu_, so that every other ADD and DEL on the node goes on meanwhile;
    // the host serialises calls for one (container, ifname), so nobody else
    // allocates for this owner in between.
    std::vector<Address> acquired;
    bool external;
    {
      std::unique_lock lock(mu_);
      if (auto held = alloc_.AddressesOf(owner); !held.empty()) return ToAddresses(held);
      external = cfg_.external;
      if (external) {
        const std::vector<int> families = cfg_.families;
        lock.unlock();
        try {
          for (int family : families) {
            auto got = host_.AcquireAddresses(pod, family, 1);
            if (got.empty()) throw Error(TRELLIS_E_EXHAUSTED, "the address source gave no address");
            acquired.push_back(got.front());
          }
        } catch (...) {
          ReturnToSource(acquired);
          throw;
        }
      }
    }
    std::lock_guard lock(mu_);
    if (cfg_.external != external) {
      ReturnToSource(acquired);
      throw Error(TRELLIS_E_UNAVAILABLE, "the ipam address source changed during the allocation");
    }
    int64_t now = Now();
    for (const auto& ip : alloc_.Expire(now, cfg_.reuse_delay_s)) host_.Delete("r/" + ip);

    std::vector<Address> out;
    auto undo = [&] {
      for (const auto& a : out) {
        alloc_.Forget(a.IpString());
        full_.erase(a.IpString());
        try {
          host_.Delete("a/" + a.IpString());
        } catch (const Error& e) {
          host_.Warn(std::string("undoing an allocation: ") + e.what());
        }
      }
      if (cfg_.external) ReturnToSource(out);
    };
    try {
      for (int family : cfg_.families) {
        Address a;
        const ipam::Range* range = nullptr;
        if (cfg_.external) {
          auto it = std::find_if(acquired.begin(), acquired.end(),
                                 [&](const Address& x) { return x.family == family; });
          if (it == acquired.end()) {
            throw Error(TRELLIS_E_UNAVAILABLE, "the ipam families changed during the allocation");
          }
          a = *it;
          acquired.erase(it);
          a.flags |= TRELLIS_ADDR_F_FROM_SOURCE;
          if (alloc_.allocated().contains(a.IpString())) {
            throw Error(TRELLIS_E_INTERNAL, "the address source handed out " + a.IpString() +
                                                ", which is held by another pod");
          }
        } else {
          std::string why;
          auto pick = alloc_.Pick(family, now, cfg_.reuse_delay_s, &why);
          if (!pick) {
            host_.AddMetric(m_exhausted_, {std::to_string(family)}, 1);
            throw Error(TRELLIS_E_EXHAUSTED, "no free IPv" + std::to_string(family) + " address: " + why);
          }
          range = pick->second;
          a = Address::Parse(pick->first + "/" + std::to_string(range->prefix_len));
          if (range->gateway) a.gateway = ipam::FromInt(*range->gateway, family);
        }
        const std::string ip = a.IpString();
        Json rec = {{"c", pod.container_id}, {"i", pod.ifname}, {"f", family}, {"t", now}};
        if (cfg_.external) rec["addr"] = AddressJson(a);
        alloc_.Take(ip, family, owner, range);
        out.push_back(a);
        if (cfg_.external) full_[ip] = a;
        host_.Put("a/" + ip, rec.dump());  // durable before the address is handed out
        if (range != nullptr) host_.Put("cur/" + range->subnet, ip);
      }
    } catch (...) {
      undo();
      ReturnToSource(acquired);
      UpdateMetrics();
      throw;
    }
    ReturnToSource(acquired);  // families dropped from the config meanwhile
    UpdateMetrics();
    return out;
  }

  // Gives addresses back to the address source; failures are logged (the
  // source's own GC reclaims what it handed out to nobody).
  void ReturnToSource(const std::vector<Address>& addresses) {
    if (addresses.empty()) return;
    try {
      host_.ReleaseAddresses(addresses);
    } catch (const Error& e) {
      host_.Warn(std::string("returning addresses to the address source: ") + e.what());
    }
  }

  void Release(const Pod& pod) {
    std::lock_guard lock(mu_);
    ReleaseLocked({pod.container_id, pod.ifname});
    UpdateMetrics();
  }

  void CheckAllocation(const Pod& pod) {
    std::lock_guard lock(mu_);
    auto held = alloc_.AddressesOf({pod.container_id, pod.ifname});
    if (held.empty()) throw Error(TRELLIS_E_MISMATCH, "ipam holds no address for this pod");
    for (const auto& a : pod.addresses) {
      if (std::find(held.begin(), held.end(), a.IpString()) == held.end()) {
        throw Error(TRELLIS_E_MISMATCH, "the pod has " + a.IpString() + ", which ipam does not hold for it");
      }
    }
    if (held.size() != pod.addresses.size()) {
      throw Error(TRELLIS_E_MISMATCH, "ipam holds " + std::to_string(held.size()) +
                                          " addresses for the pod, the pod has " +
                                          std::to_string(pod.addresses.size()));
    }
  }

  void GcAllocations(const std::vector<PodRef>& live) {
    std::lock_guard lock(mu_);
    std::set<PodRef> keep(live.begin(), live.end());
    std::set<PodRef> stale;
    for (const auto& [ip, v] : alloc_.allocated()) {
      PodRef ref{v.second.container_id, v.second.ifname};
      if (!keep.contains(ref)) stale.insert(ref);
    }
    for (const auto& ref : stale) {
      host_.Info("gc: releasing the addresses of " + ref.container_id + " (" + ref.ifname + ")");
      ReleaseLocked({ref.container_id, ref.ifname});
    }
    UpdateMetrics();
  }

  Json ListAllocations() {
    std::lock_guard lock(mu_);
    Json out = Json::array();
    for (const auto& [ip, v] : alloc_.allocated()) {
      out.push_back({{"ip", ip}, {"family", v.first}, {"container_id", v.second.container_id},
                     {"ifname", v.second.ifname}});
    }
    return out;
  }

  Json Status() {
    std::lock_guard lock(mu_);
    Json ranges = Json::array();
    std::string message;
    bool degraded = false;
    int64_t now = Now();
    if (!cfg_.external) {
      for (int family : cfg_.families) {
        std::string why;
        if (!alloc_.Pick(family, now, cfg_.reuse_delay_s, &why)) {
          degraded = true;
          message += (message.empty() ? "" : "; ") + ("address pool exhausted: " + why);
        }
      }
      for (const auto& r : alloc_.ranges()) {
        ranges.push_back({{"subnet", r.subnet},
                          {"in_use", alloc_.InUse(r)},
                          {"cooling", alloc_.Cooling(r)},
                          {"size", r.Size() > (ipam::u128(1) << 62) ? double(r.Size()) : double(uint64_t(r.Size()))}});
      }
    }
    return {{"healthy", true},
            {"degraded", degraded},
            {"message", message},
            {"source", cfg_.external ? "external" : "local"},
            {"allocated", alloc_.allocated().size()},
            {"reuse_delay_seconds", cfg_.reuse_delay_s},
            {"ranges", ranges}};
  }

 private:
  std::vector<Address> ToAddresses(const std::vector<std::string>& ips) {
    std::vector<Address> out;
    for (const auto& ip : ips) {
      if (auto it = full_.find(ip); it != full_.end()) {
        out.push_back(it->second);
        continue;
      }
      const ipam::Range* r = alloc_.RangeOf(ip);
      Address a = Address::Parse(ip);
      if (r != nullptr) {
        a.prefix_len = r->prefix_len;
        if (r->gateway) a.gateway = ipam::FromInt(*r->gateway, r->family);
      }
      out.push_back(a);
    }
    return out;
  }

  void ReleaseLocked(const ipam::Owner& owner) {
    auto ips = alloc_.AddressesOf(owner);
    if (ips.empty()) return;
    // Addresses of the source go back first: if that fails, nothing changed
    // here and the caller retries.
    std::vector<Address> external;
    for (const auto& ip : ips) {
      if (auto it = full_.find(ip); it != full_.end()) external.push_back(it->second);
    }
    if (!external.empty()) host_.ReleaseAddresses(external);
    int64_t now = Now();
    for (const auto& ip : ips) {
      host_.Put("r/" + ip, std::to_string(now));
      host_.Delete("a/" + ip);
      full_.erase(ip);
    }
    alloc_.Release(owner, now);
  }

  void UpdateMetrics() {
    for (const auto& r : alloc_.ranges()) {
      host_.SetMetric(m_allocated_, {r.subnet, "in_use"}, double(alloc_.InUse(r)));
      host_.SetMetric(m_allocated_, {r.subnet, "cooling"}, double(alloc_.Cooling(r)));
      host_.SetMetric(m_allocated_, {r.subnet, "size"}, double(r.Size()));
    }
  }

  trellis::sdk::Host host_;
  Config cfg_;
  std::mutex mu_;
  ipam::Allocator alloc_;
  std::map<std::string, Address> full_;  // addresses from the source, as it gave them
  uint32_t m_allocated_ = 0, m_exhausted_ = 0;
};

}  // namespace

TRELLIS_PLUGIN(Ipam);
