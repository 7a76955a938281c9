#include "config.h"

#include <arpa/inet.h>
#include <trellis/types.hpp>

#include <cstdlib>
#include <set>
#include <stdexcept>

#include "aliyun/cloud.h"

namespace trellis::eni {
namespace {

using sdk::Error;
using aliyun::Int;
using aliyun::String;
using aliyun::StringList;

Error Bad(const std::string& key, const std::string& why) {
  return Error(TRELLIS_E_INVALID, key + ": " + why);
}

bool ValidCidr4(const std::string& cidr) {
  auto slash = cidr.find('/');
  if (slash == std::string::npos) return false;
  in_addr a{};
  if (inet_pton(AF_INET, cidr.substr(0, slash).c_str(), &a) != 1) return false;
  char* end = nullptr;
  long p = std::strtol(cidr.c_str() + slash + 1, &end, 10);
  return *end == '\0' && slash + 1 < cidr.size() && p >= 0 && p <= 32;
}

EniRef ParseRef(const Json& v, const std::string& key) {
  std::string s = String(v, key);
  if (s == "self" || s == "primary" || s.rfind("eni-", 0) == 0) return {s};
  throw Bad(key, "expected self, primary or an ENI id (eni-...), got '" + s + "'");
}

const char* Env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : nullptr;
}

EniConfig ParseConfig(const Json& j) {
  if (!j.is_object()) throw Error(TRELLIS_E_INVALID, "eni config: expected a map");
  static const std::set<std::string> kKnown = {
      "region", "vswitches", "vswitch_selection_policy", "security_group", "security_groups",
      "eni_tags", "cluster_id", "eni_count_min", "eni_count_max", "min_pool_size",
      "max_pool_size", "eni_create_retry", "eni_create_timeout", "eni_gc_interval",
      "eni_gc_threshold", "reuse_delay", "idle_reclaim_after", "acquire_timeout", "pool_check_interval",
      "max_concurrent", "route_table_base", "ecs_endpoint", "metadata_endpoint", "ca_file",
      "credential_path", "access_key", "secret_key", "ram_role", "api_timeout",
      "api_call_timeout", "rate_limit", "routing_policy", "routingPolicy", "ip_stack",
      "service_cidr", "enable_eni_trunking"};
  for (const auto& [k, v] : j.items()) {
    if (!kKnown.contains(k)) {
      std::string known;
      for (const auto& n : kKnown) known += (known.empty() ? "" : ", ") + n;
      throw Bad(k, "unknown key (known: " + known + ")");
    }
  }
  EniConfig c;
  if (const char* v = Env("TERWAY_ENI_MAX_CONCURRENT")) {
    c.max_concurrent = Int(Json(v), "TERWAY_ENI_MAX_CONCURRENT (environment)", 1, 1000);
  }
  if (const char* v = Env("TERWAY_ROUTE_TABLE_ID_BASE")) {
    c.route_table_base = Int(Json(v), "TERWAY_ROUTE_TABLE_ID_BASE (environment)", 1, 2000000000);
  }
  if (const char* v = Env("CLUSTER_ID")) c.cluster_id = v;
  if (const char* v = Env("REGION")) c.region = v;

  if (j.contains("region")) c.region = String(j["region"], "region");
  if (j.contains("vswitches")) {
    const Json& v = j["vswitches"];
    if (v.is_object()) {
      for (const auto& [zone, ids] : v.items()) {
        c.zone_vswitches[zone] = StringList(ids, "vswitches." + zone);
      }
    } else {
      c.vswitches = StringList(v, "vswitches");
    }
  }
  if (j.contains("vswitch_selection_policy")) {
    c.vswitch_selection = String(j["vswitch_selection_policy"], "vswitch_selection_policy");
    if (c.vswitch_selection != "most" && c.vswitch_selection != "ordered") {
      throw Bad("vswitch_selection_policy",
                "expected most (most free addresses first) or ordered, got '" +
                    c.vswitch_selection + "'");
    }
  }
  if (j.contains("security_group") && !String(j["security_group"], "security_group").empty()) {
    c.security_groups.push_back(j["security_group"].get<std::string>());
  }
  if (j.contains("security_groups")) {
    for (const auto& s : StringList(j["security_groups"], "security_groups")) {
      if (std::find(c.security_groups.begin(), c.security_groups.end(), s) ==
          c.security_groups.end()) {
        c.security_groups.push_back(s);
      }
    }
  }
  if (c.security_groups.size() > 5) {
    throw Bad("security_groups", "an ENI joins at most 5 security groups, got " +
                                     std::to_string(c.security_groups.size()));
  }
  if (j.contains("eni_tags")) {
    if (!j["eni_tags"].is_object()) throw Bad("eni_tags", "expected a map of tag -> value");
    for (const auto& [k, v] : j["eni_tags"].items()) {
      if (k.rfind("trellis.io/", 0) == 0) {
        throw Bad("eni_tags." + k, "the trellis.io/ prefix is reserved for the tags trellis sets");
      }
      c.eni_tags[k] = String(v, "eni_tags." + k);
    }
  }
  if (j.contains("cluster_id")) c.cluster_id = String(j["cluster_id"], "cluster_id");
  if (c.cluster_id.empty()) c.cluster_id = "default";

  if (j.contains("eni_count_min")) c.eni_count_min = Int(j["eni_count_min"], "eni_count_min", 0, 64);
  if (j.contains("eni_count_max")) c.eni_count_max = Int(j["eni_count_max"], "eni_count_max", 0, 64);
  if (c.eni_count_max > 0 && c.eni_count_min > c.eni_count_max) {
    throw Bad("eni_count_min", "is larger than eni_count_max (" + std::to_string(c.eni_count_min) +
                                   " > " + std::to_string(c.eni_count_max) + ")");
  }
  if (j.contains("min_pool_size")) c.min_pool_size = Int(j["min_pool_size"], "min_pool_size", 0, 10000);
  if (j.contains("max_pool_size")) c.max_pool_size = Int(j["max_pool_size"], "max_pool_size", 0, 10000);
  if (c.min_pool_size > c.max_pool_size) {
    if (!j.contains("max_pool_size")) {
      c.max_pool_size = c.min_pool_size;
    } else {
      throw Bad("min_pool_size", "is larger than max_pool_size (" +
                                     std::to_string(c.min_pool_size) + " > " +
                                     std::to_string(c.max_pool_size) + ")");
    }
  }
  if (j.contains("eni_create_retry")) {
    c.eni_create_retry = Int(j["eni_create_retry"], "eni_create_retry", 0, 100);
  }
  auto dur = [&](const char* key, Millis* out) {
    if (j.contains(key)) *out = aliyun::ParseDuration(j[key], key);
  };
  dur("eni_create_timeout", &c.eni_create_timeout);
  dur("eni_gc_interval", &c.eni_gc_interval);
  dur("eni_gc_threshold", &c.eni_gc_threshold);
  dur("reuse_delay", &c.reuse_delay);
  dur("idle_reclaim_after", &c.idle_reclaim_after);
  dur("acquire_timeout", &c.acquire_timeout);
  dur("pool_check_interval", &c.pool_check_interval);
  dur("api_timeout", &c.api_timeout);
  dur("api_call_timeout", &c.api_call_timeout);
  if (c.eni_create_timeout < Millis(1000)) throw Bad("eni_create_timeout", "must be at least 1s");
  if (c.acquire_timeout < Millis(100)) throw Bad("acquire_timeout", "must be at least 100ms");
  if (c.pool_check_interval < Millis(100)) {
    throw Bad("pool_check_interval", "must be at least 100ms");
  }
  if (c.api_timeout < Millis(100)) throw Bad("api_timeout", "must be at least 100ms");
  if (c.api_call_timeout < c.api_timeout) {
    throw Bad("api_call_timeout", "must not be shorter than api_timeout");
  }
  if (j.contains("max_concurrent")) c.max_concurrent = Int(j["max_concurrent"], "max_concurrent", 1, 1000);
  if (j.contains("route_table_base")) {
    c.route_table_base = Int(j["route_table_base"], "route_table_base", 1, 2000000000);
  }
  // Tables 253..255 are the kernel's default, main and local; a slot of ours
  // (base + 1 .. base + 64) must never land on them.
  if (c.route_table_base >= 189 && c.route_table_base <= 254) {
    throw Bad("route_table_base",
              "base + device index (up to +64) would reach the kernel's tables 253-255; use a "
              "base of at most 188 or at least 255 (got " + std::to_string(c.route_table_base) + ")");
  }
  if (j.contains("ecs_endpoint")) c.ecs_endpoint = String(j["ecs_endpoint"], "ecs_endpoint");
  if (j.contains("metadata_endpoint")) {
    c.metadata_endpoint = String(j["metadata_endpoint"], "metadata_endpoint");
  }
  if (j.contains("ca_file")) c.ca_file = String(j["ca_file"], "ca_file");
  if (j.contains("credential_path")) c.credential_path = String(j["credential_path"], "credential_path");
  if (j.contains("access_key")) c.access_key = String(j["access_key"], "access_key");
  if (j.contains("secret_key")) c.secret_key = String(j["secret_key"], "secret_key");
  if (c.access_key.empty() != c.secret_key.empty()) {
    throw Bad(c.access_key.empty() ? "access_key" : "secret_key",
              "access_key and secret_key must be given together");
  }
  if (!c.access_key.empty()) {
    c.warnings.push_back(
        "the module config carries an inline access_key/secret_key; prefer ACCESS_KEY_ID / "
        "ACCESS_KEY_SECRET from a Secret, or credential_path");
  }
  if (j.contains("ram_role")) c.ram_role = String(j["ram_role"], "ram_role");
  if (j.contains("rate_limit")) {
    const Json& r = j["rate_limit"];
    if (!r.is_object()) throw Bad("rate_limit", "expected a map of API action -> {qps, burst}");
    for (const auto& [action, v] : r.items()) {
      if (action == "default") {
        c.default_rate = aliyun::ParseRateLimit(v, "rate_limit.default");
      } else {
        c.rate_limits[action] = aliyun::ParseRateLimit(v, "rate_limit." + action);
      }
    }
  }
  for (const char* key : {"routing_policy", "routingPolicy"}) {
    if (!j.contains(key)) continue;
    const Json& r = j[key];
    const std::string k = key;
    if (!r.is_object()) throw Bad(k, "expected a map with default_eni and policy_routes");
    for (const auto& [name, v] : r.items()) {
      if (name == "default_eni" || name == "defaultENI") {
        c.default_route = ParseRef(v, k + "." + name);
      } else if (name == "policy_routes" || name == "policyRoutes") {
        if (!v.is_array()) throw Bad(k + "." + name, "expected a list of {destination, eni}");
        for (size_t i = 0; i < v.size(); ++i) {
          const std::string at = k + "." + name + "[" + std::to_string(i) + "]";
          if (!v[i].is_object() || !v[i].contains("destination") || !v[i].contains("eni")) {
            throw Bad(at, "expected {destination: CIDR, eni: self|primary|eni-...}");
          }
          PolicyRoute pr{String(v[i]["destination"], at + ".destination"),
                         ParseRef(v[i]["eni"], at + ".eni")};
          if (!ValidCidr4(pr.destination)) {
            throw Bad(at + ".destination", "expected an IPv4 CIDR, got '" + pr.destination + "'");
          }
          c.policy_routes.push_back(pr);
        }
      } else {
        throw Bad(k + "." + name, "unknown key (known: default_eni, policy_routes)");
      }
    }
  }
  if (j.contains("ip_stack")) {
    std::string s = String(j["ip_stack"], "ip_stack");
    if (s != "ipv4") {
      throw Bad("ip_stack", "only ipv4 is supported in ENI mode, got '" + s + "'");
    }
  }
  if (j.contains("enable_eni_trunking") && j["enable_eni_trunking"] != false) {
    throw Bad("enable_eni_trunking", "ENI trunking is not supported; remove the key or set false");
  }
  if (j.contains("service_cidr")) {
    c.warnings.push_back("service_cidr is ignored: trellis does not route services itself");
  }
  if (c.security_groups.empty()) {
    throw Bad("security_group", "required: the security group new ENIs join (or security_groups)");
  }
  return c;
}

}  // namespace

EniConfig EniConfig::Parse(const Json& j) {
  try {
    return ParseConfig(j);
  } catch (const std::invalid_argument& e) {
    throw Error(TRELLIS_E_INVALID, e.what());
  }
}

std::vector<std::string> EniConfig::VSwitchesFor(const std::string& zone) const {
  if (auto it = zone_vswitches.find(zone); it != zone_vswitches.end()) return it->second;
  return vswitches;
}

bool EniConfig::SameCloudAccess(const EniConfig& n) const {
  return region == n.region && ecs_endpoint == n.ecs_endpoint &&
         metadata_endpoint == n.metadata_endpoint && ca_file == n.ca_file &&
         credential_path == n.credential_path && access_key == n.access_key &&
         secret_key == n.secret_key && ram_role == n.ram_role && cluster_id == n.cluster_id &&
         route_table_base == n.route_table_base && api_timeout == n.api_timeout &&
         api_call_timeout == n.api_call_timeout;
}

}  // namespace trellis::eni
