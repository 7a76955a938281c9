#include "config.h"

#include <arpa/inet.h>
#include <trellis/types.hpp>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdlib>
#include <map>
#include <set>
#include <stdexcept>

namespace trellis::secgroup {
namespace {

using sdk::Error;
using aliyun::Bool;
using aliyun::Int;
using aliyun::String;

Error Bad(const std::string& key, const std::string& why) {
  return Error(TRELLIS_E_INVALID, key + ": " + why);
}

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string KnownList(const std::set<std::string>& known) {
  std::string out;
  for (const auto& k : known) out += (out.empty() ? "" : ", ") + k;
  return out;
}

bool ValidClusterId(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '-' || c == '_' || c == '.';
  });
}

// "a/b" -> {a, b}; false when the text is not two integers around a '/'.
bool SplitPorts(const std::string& s, long* a, long* b) {
  auto slash = s.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 >= s.size()) return false;
  std::string x = s.substr(0, slash), y = s.substr(slash + 1);
  char* end = nullptr;
  *a = std::strtol(x.c_str(), &end, 10);
  if (*end != '\0') return false;
  *b = std::strtol(y.c_str(), &end, 10);
  return *end == '\0';
}

Rule ParseRule(const Json& j, int index, const std::string& owner) {
  const std::string at = "rules[" + std::to_string(index) + "]";
  if (!j.is_object()) throw Bad(at, "expected a map with direction, protocol, port_range...");
  static const std::set<std::string> kKnown = {"direction",   "protocol",    "port_range",
                                               "source_cidr", "dest_cidr",   "priority",
                                               "policy",      "description", "allow_world_open"};
  for (const auto& [k, v] : j.items()) {
    if (!kKnown.contains(k)) {
      throw Bad(at + "." + k, "unknown key (known: " + KnownList(kKnown) + ")");
    }
  }
  Rule r;
  r.index = index;
  if (j.contains("direction")) r.direction = Lower(String(j["direction"], at + ".direction"));
  if (r.direction != "ingress" && r.direction != "egress") {
    throw Bad(at + ".direction", "expected ingress or egress, got '" + r.direction + "'");
  }
  if (!j.contains("protocol"))
    throw Bad(at + ".protocol", "required: tcp, udp, icmp, icmpv6, gre or all");
  r.protocol = Lower(String(j["protocol"], at + ".protocol"));
  static const std::set<std::string> kProtocols = {"tcp", "udp", "icmp", "icmpv6", "gre", "all"};
  if (!kProtocols.contains(r.protocol)) {
    throw Bad(at + ".protocol",
              "expected tcp, udp, icmp, icmpv6, gre or all, got '" + r.protocol + "'");
  }
  const bool ported = r.protocol == "tcp" || r.protocol == "udp";
  if (j.contains("port_range")) {
    r.port_range = String(j["port_range"], at + ".port_range");
  } else if (ported) {
    throw Bad(at + ".port_range", "required for " + r.protocol + ": \"80/80\" or \"1/65535\"");
  } else {
    r.port_range = "-1/-1";
  }
  long lo = 0, hi = 0;
  if (!SplitPorts(r.port_range, &lo, &hi)) {
    throw Bad(
        at + ".port_range",
        "expected FROM/TO, e.g. \"80/80\", \"1/65535\" or \"-1/-1\", got '" + r.port_range + "'");
  }
  if (ported && !(1 <= lo && lo <= hi && hi <= 65535)) {
    throw Bad(at + ".port_range",
              r.protocol + " takes ports 1 to 65535 with FROM <= TO, got '" + r.port_range + "'");
  }
  if (!ported && !(lo == -1 && hi == -1)) {
    throw Bad(
        at + ".port_range",
        r.protocol + " has no ports: use \"-1/-1\" or leave it out, got '" + r.port_range + "'");
  }
  r.port_range = std::to_string(lo) + "/" + std::to_string(hi);

  const char* peer_key = r.direction == "ingress" ? "source_cidr" : "dest_cidr";
  const char* other_key = r.direction == "ingress" ? "dest_cidr" : "source_cidr";
  if (j.contains(other_key)) {
    throw Bad(at + "." + other_key, std::string("not taken on an ") + r.direction +
                                        " rule (its peer is " + peer_key + ")");
  }
  if (!j.contains(peer_key)) {
    throw Bad(at + "." + peer_key, std::string("required on an ") + r.direction +
                                       " rule: the CIDR the traffic comes from or goes to");
  }
  std::string raw = String(j[peer_key], at + "." + peer_key);
  auto cidr = CanonicalCidr(raw);
  if (!cidr) throw Bad(at + "." + peer_key, "expected an IPv4 or IPv6 CIDR, got '" + raw + "'");
  r.cidr = *cidr;
  const bool v6 = r.cidr.find(':') != std::string::npos;
  if (r.protocol == "icmp" && v6) {
    throw Bad(at + ".protocol", "icmp is IPv4; use icmpv6 with the IPv6 peer " + r.cidr);
  }
  if (r.protocol == "icmpv6" && !v6) {
    throw Bad(at + ".protocol", "icmpv6 is IPv6; use icmp with the IPv4 peer " + r.cidr);
  }
  if (j.contains("priority")) r.priority = Int(j["priority"], at + ".priority", 1, 100);
  if (j.contains("policy")) r.policy = Lower(String(j["policy"], at + ".policy"));
  if (r.policy != "accept" && r.policy != "drop") {
    throw Bad(at + ".policy", "expected accept or drop, got '" + r.policy + "'");
  }
  if (j.contains("description")) r.description = String(j["description"], at + ".description");
  if (owner.size() + 1 + r.description.size() > kMaxDescription) {
    throw Bad(at + ".description", "too long: with the owner mark '" + owner +
                                       " ' it must fit in " + std::to_string(kMaxDescription) +
                                       " characters");
  }
  if (j.contains("allow_world_open")) {
    r.allow_world_open = Bool(j["allow_world_open"], at + ".allow_world_open");
  }
  return r;
}

}  // namespace

std::optional<std::string> CanonicalCidr(const std::string& text) {
  auto slash = text.find('/');
  std::string host = text.substr(0, slash);
  const bool v6 = host.find(':') != std::string::npos;
  std::array<unsigned char, 16> bytes{};
  if (inet_pton(v6 ? AF_INET6 : AF_INET, host.c_str(), bytes.data()) != 1) return std::nullopt;
  const int max = v6 ? 128 : 32;
  int prefix = max;
  if (slash != std::string::npos) {
    std::string p = text.substr(slash + 1);
    char* end = nullptr;
    long v = std::strtol(p.c_str(), &end, 10);
    if (p.empty() || *end != '\0' || v < 0 || v > max) return std::nullopt;
    prefix = static_cast<int>(v);
  }
  for (int bit = prefix; bit < max; ++bit)
    bytes[bit / 8] &= static_cast<unsigned char>(~(0x80 >> (bit % 8)));
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(v6 ? AF_INET6 : AF_INET, bytes.data(), buf, sizeof buf);
  return std::string(buf) + "/" + std::to_string(prefix);
}

std::string Rule::Key() const {
  return direction + "|" + protocol + "|" + port_range + "|" + cidr + "|" + policy + "|" +
         std::to_string(priority);
}

bool Rule::WorldOpen() const {
  return policy == "accept" && (cidr == "0.0.0.0/0" || cidr == "::/0");
}

std::string Rule::Summary() const {
  return direction + " " + protocol + " " + port_range +
         (direction == "ingress" ? " from " : " to ") + cidr + " " + policy + " priority " +
         std::to_string(priority);
}

Json Rule::ToJson() const {
  Json j = {{"direction", direction}, {"protocol", protocol}, {"port_range", port_range}};
  j[direction == "ingress" ? "source_cidr" : "dest_cidr"] = cidr;
  j["policy"] = policy;
  j["priority"] = priority;
  j["description"] = description;
  if (allow_world_open) j["allow_world_open"] = true;
  return j;
}

bool OwnedBy(const std::string& description, const std::string& owner) {
  return description == owner ||
         (description.size() > owner.size() && description.compare(0, owner.size(), owner) == 0 &&
          description[owner.size()] == ' ');
}

Rule FromCloud(const aliyun::SecurityGroupRule& c, const std::string& owner, bool* owned) {
  Rule r;
  r.direction = Lower(c.direction.empty() ? "ingress" : c.direction);
  r.protocol = Lower(c.ip_protocol);
  r.port_range = c.port_range;
  long lo = 0, hi = 0;
  if (SplitPorts(c.port_range, &lo, &hi))
    r.port_range = std::to_string(lo) + "/" + std::to_string(hi);
  if (!c.cidr.empty()) {
    r.cidr = CanonicalCidr(c.cidr).value_or(c.cidr);
  } else if (!c.peer_group.empty()) {
    r.cidr = c.peer_group;
  } else {
    r.cidr = c.peer_prefix_list;
  }
  r.policy = Lower(c.policy.empty() ? "accept" : c.policy);
  r.priority = c.priority;
  *owned = OwnedBy(c.description, owner);
  r.description = c.description;
  if (*owned) {
    r.description =
        c.description.size() > owner.size() ? c.description.substr(owner.size() + 1) : "";
  }
  return r;
}

aliyun::SecurityGroupRule ToCloud(const Rule& r, const std::string& owner) {
  aliyun::SecurityGroupRule c;
  c.direction = r.direction;
  c.ip_protocol = r.protocol;
  c.port_range = r.port_range;
  c.cidr = r.cidr;
  c.policy = r.policy;
  c.priority = r.priority;
  c.description = r.description.empty() ? owner : owner + " " + r.description;
  return c;
}

namespace {

SecgroupConfig ParseConfig(const Json& j) {
  if (!j.is_object()) throw Error(TRELLIS_E_INVALID, "secgroup config: expected a map");
  std::set<std::string> known = {
      "sync_interval", "security_groups", "security_group",      "rules",      "dry_run",
      "leader",        "leader_node",     "max_revoke_fraction", "cluster_id", "revoke_on_disable"};
  known.insert(aliyun::CloudAccess::Keys().begin(), aliyun::CloudAccess::Keys().end());
  for (const auto& [k, v] : j.items()) {
    if (k == "enable" || k == "enabled") {
      throw Bad(k,
                "the module switch is modules.secgroup.enabled (security_conf."
                "security_group_sync.enable in a Terway ConfigMap); remove the key here");
    }
    if (!known.contains(k)) throw Bad(k, "unknown key (known: " + KnownList(known) + ")");
  }
  SecgroupConfig c;
  c.cloud = aliyun::CloudAccess::Parse(j, &c.warnings);
  c.cloud.CheckEndpoints();

  if (const char* env = std::getenv("CLUSTER_ID"); env != nullptr && *env != '\0') {
    if (!ValidClusterId(env)) {
      throw Bad(
          "CLUSTER_ID (environment)",
          "expected 1 to 64 letters, digits, '-', '_' or '.', got '" + std::string(env) + "'");
    }
    c.cluster_id = env;
  }
  if (j.contains("cluster_id")) {
    c.cluster_id = String(j["cluster_id"], "cluster_id");
    if (!ValidClusterId(c.cluster_id)) {
      throw Bad("cluster_id",
                "expected 1 to 64 letters, digits, '-', '_' or '.', got '" + c.cluster_id + "'");
    }
  }

  auto add_group = [&](const std::string& id, const std::string& key) {
    if (id.rfind("sg-", 0) != 0 || id.size() < 4) {
      throw Bad(key, "expected a security group id (sg-...), got '" + id + "'");
    }
    if (std::find(c.security_groups.begin(), c.security_groups.end(), id) ==
        c.security_groups.end()) {
      c.security_groups.push_back(id);
    }
  };
  if (j.contains("security_group"))
    add_group(String(j["security_group"], "security_group"), "security_group");
  if (j.contains("security_groups")) {
    const Json& v = j["security_groups"];
    if (v.is_string()) {
      add_group(v.get<std::string>(), "security_groups");
    } else if (v.is_array()) {
      for (size_t i = 0; i < v.size(); ++i) {
        const std::string at = "security_groups[" + std::to_string(i) + "]";
        add_group(String(v[i], at), at);
      }
    } else {
      throw Bad("security_groups", "expected a list of security group ids");
    }
  }
  if (c.security_groups.empty()) {
    throw Bad("security_groups",
              "required: the security group(s) to keep in line (the host fills in the eni "
              "module's security_group when the eni module has one)");
  }

  if (j.contains("rules")) {
    const Json& v = j["rules"];
    if (!v.is_array()) throw Bad("rules", "expected a list of rules");
    std::map<std::string, int> seen;
    for (size_t i = 0; i < v.size(); ++i) {
      Rule r = ParseRule(v[i], static_cast<int>(i), c.Owner());
      auto [it, fresh] = seen.emplace(r.Key(), static_cast<int>(i));
      if (!fresh) {
        throw Bad(
            "rules[" + std::to_string(i) + "]",
            "the same rule as rules[" + std::to_string(it->second) + "] (" + r.Summary() + ")");
      }
      c.rules.push_back(std::move(r));
    }
    if (c.rules.size() > static_cast<size_t>(kMaxRulesPerGroup)) {
      throw Bad("rules", "ECS keeps at most " + std::to_string(kMaxRulesPerGroup) +
                             " rules in a security group, got " + std::to_string(c.rules.size()));
    }
  }

  if (j.contains("sync_interval")) {
    c.sync_interval = aliyun::ParseDuration(j["sync_interval"], "sync_interval");
    if (c.sync_interval < Millis(1000)) throw Bad("sync_interval", "must be at least 1s");
  }
  if (j.contains("dry_run")) c.dry_run = Bool(j["dry_run"], "dry_run");
  if (j.contains("leader")) c.leader = Bool(j["leader"], "leader");
  if (j.contains("leader_node")) {
    c.leader_node = String(j["leader_node"], "leader_node");
    if (c.leader_node.empty()) throw Bad("leader_node", "expected a node name");
    if (c.leader.has_value()) {
      throw Bad("leader_node", "give either leader (this node's switch) or leader_node, not both");
    }
  }
  if (j.contains("max_revoke_fraction")) {
    const Json& v = j["max_revoke_fraction"];
    if (!v.is_number() || v.get<double>() < 0 || v.get<double>() > 1) {
      throw Bad("max_revoke_fraction", "expected a number from 0 (never revoke) to 1 (no limit)");
    }
    c.max_revoke_fraction = v.get<double>();
  }
  if (j.contains("revoke_on_disable")) {
    c.revoke_on_disable = Bool(j["revoke_on_disable"], "revoke_on_disable");
  }
  for (const Rule& r : c.rules) {
    if (r.WorldOpen() && !r.allow_world_open) {
      c.warnings.push_back("rules[" + std::to_string(r.index) + "] (" + r.Summary() +
                           ") opens to every address and will not be applied: set "
                           "allow_world_open: true on it if that is meant");
    }
  }
  return c;
}

}  // namespace

SecgroupConfig SecgroupConfig::Parse(const Json& j) {
  try {
    return ParseConfig(j);
  } catch (const std::invalid_argument& e) {
    throw Error(TRELLIS_E_INVALID, e.what());
  }
}

}  // namespace trellis::secgroup
