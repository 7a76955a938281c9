#include "core/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>

#include "core/log.h"
#include "core/utf8.h"

namespace trellis {
namespace {

const std::regex kModuleName("^[a-z0-9][a-z0-9_-]{0,62}$");
const std::regex kPluginName("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$");
const std::regex kInt("^[-+]?[0-9]+$");
const std::regex kHex("^0x[0-9a-fA-F]+$");
const std::regex kOct("^0o[0-7]+$");
const std::regex kFloat(R"(^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$)");

// An integer that does not fit 64 bits stays the text it was: a validator
// then names the key, rather than the value being rounded silently.
Json Integer(const std::string& digits, int base) {
  errno = 0;
  char* end = nullptr;
  if (digits[0] == '-') {
    long long v = std::strtoll(digits.c_str(), &end, base);
    if (errno == 0 && *end == '\0') return v;
  } else {
    unsigned long long v = std::strtoull(digits.c_str(), &end, base);
    if (errno == 0 && *end == '\0') {
      if (v <= static_cast<unsigned long long>(INT64_MAX)) return static_cast<int64_t>(v);
      return static_cast<uint64_t>(v);
    }
  }
  return nullptr;
}

// Plain (untagged, unquoted) scalars by the YAML 1.2 core schema. `.inf` and
// `.nan` stay text: JSON cannot hold them.
Json PlainScalar(const std::string& s) {
  if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL") return nullptr;
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  Json n;
  if (std::regex_match(s, kInt)) n = Integer(s[0] == '+' ? s.substr(1) : s, 10);
  else if (std::regex_match(s, kHex)) n = Integer(s.substr(2), 16);
  else if (std::regex_match(s, kOct)) n = Integer(s.substr(2), 8);
  else if (std::regex_match(s, kFloat)) n = std::strtod(s.c_str(), nullptr);
  return n.is_null() ? Json(s) : n;
}

std::string TypeName(const Json& j) {
  if (j.is_null()) return "null";
  if (j.is_boolean()) return "a boolean";
  if (j.is_number()) return "a number";
  if (j.is_string()) return "a string";
  if (j.is_array()) return "a list";
  return "a map";
}

Status KeyError(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(path + ": " + what);
}

StatusOr<std::string> ReadFile(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return absl::NotFoundError("cannot read " + p.string() + ": " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

StatusOr<ModuleConfig> ParseModule(const std::string& name, const Json& j) {
  const std::string path = "modules." + name;
  if (!std::regex_match(name, kModuleName)) {
    return KeyError(path, "module names are lower-case letters, digits, '-' and '_'");
  }
  ModuleConfig m;
  m.name = name;
  m.plugin = name;
  m.enabled = true;
  if (j.is_null()) return m;
  if (j.is_boolean()) {  // shorthand: `qos: false`
    m.enabled = j.get<bool>();
    return m;
  }
  if (!j.is_object()) return KeyError(path, "expected a map, got " + TypeName(j));
  for (const auto& [k, v] : j.items()) {
    if (k == "enabled") {
      if (!v.is_boolean()) return KeyError(path + ".enabled", "expected a boolean, got " + TypeName(v));
      m.enabled = v.get<bool>();
    } else if (k == "plugin") {
      if (!v.is_string() || !std::regex_match(v.get<std::string>(), kPluginName) ||
          v.get<std::string>().find("..") != std::string::npos) {
        return KeyError(path + ".plugin",
                        "expected a plugin file name inside the plugin directory (no '/', no '..')");
      }
      m.plugin = v.get<std::string>();
      if (m.plugin.size() > 3 && m.plugin.ends_with(".so")) m.plugin.resize(m.plugin.size() - 3);
    } else if (k == "config") {
      if (v.is_null()) continue;
      if (!v.is_object()) return KeyError(path + ".config", "expected a map, got " + TypeName(v));
      m.config = v;
    } else {
      return KeyError(path + "." + k, "unknown key (known: enabled, plugin, config)");
    }
  }
  return m;
}

// The secgroup module keeps the security groups the eni module puts its ENIs
// in, and calls ECS with the eni module's cloud access, unless its own config
// says otherwise: Terway's ConfigMap names the group and the account once, in
// eni_conf, and security_conf.security_group_sync only lists rules. Modules
// are found by plugin; an enabled eni module wins over a disabled one.
void InheritEniCloudSettings(NodeConfig* cfg) {
  const ModuleConfig* eni = nullptr;
  for (const auto& [name, m] : cfg->modules) {
    if (m.plugin == "eni" && (eni == nullptr || (m.enabled && !eni->enabled))) eni = &m;
  }
  if (eni == nullptr || !eni->config.is_object()) return;
  const Json& from = eni->config;
  for (auto& [name, m] : cfg->modules) {
    if (m.plugin != "secgroup") continue;
    if (!m.config.is_object()) m.config = Json::object();
    Json& to = m.config;
    if (!to.contains("security_group") && !to.contains("security_groups")) {
      Json groups = Json::array();
      auto add = [&](const Json& v) {
        if (v.is_string() && !v.get<std::string>().empty() &&
            std::find(groups.begin(), groups.end(), v) == groups.end()) {
          groups.push_back(v);
        }
      };
      if (from.contains("security_group")) add(from["security_group"]);
      if (from.contains("security_groups") && from["security_groups"].is_array()) {
        for (const auto& v : from["security_groups"]) add(v);
      }
      if (!groups.empty()) to["security_groups"] = groups;
    }
    for (const char* k : {"region", "ecs_endpoint", "metadata_endpoint", "ca_file"}) {
      if (!to.contains(k) && from.contains(k)) to[k] = from[k];
    }
    // Credential sources go together: a secgroup config naming any of its
    // own takes none of the eni module's.
    static const char* const kCredentialKeys[] = {"access_key", "secret_key", "credential_path",
                                                  "ram_role"};
    bool own = false;
    for (const char* k : kCredentialKeys) own |= to.contains(k);
    if (own) continue;
    for (const char* k : kCredentialKeys) {
      if (from.contains(k)) to[k] = from[k];
    }
  }
}

StatusOr<KubernetesConfig> ParseKubernetes(const Json& v) {
  KubernetesConfig k;
  if (v.is_null()) {
    k.enabled = true;
    return k;
  }
  if (v.is_boolean()) {
    k.enabled = v.get<bool>();
    return k;
  }
  if (!v.is_object()) return KeyError("kubernetes", "expected a map, got " + TypeName(v));
  k.enabled = true;
  auto str = [&](const std::string& key, const Json& x, std::string* out) -> Status {
    if (!x.is_string()) return KeyError("kubernetes." + key, "expected a string, got " + TypeName(x));
    *out = x.get<std::string>();
    return absl::OkStatus();
  };
  auto dur = [&](const std::string& key, const Json& x, int64_t* out, int64_t min_ms) -> Status {
    TRELLIS_ASSIGN_OR_RETURN(*out, ParseDurationMs(x, key));
    if (*out < min_ms) {
      return KeyError(key, "must be at least " + std::to_string(min_ms) + "ms");
    }
    return absl::OkStatus();
  };
  std::optional<double> qps, qps_alias;
  std::optional<uint32_t> burst, burst_alias;
  for (const auto& [key, x] : v.items()) {
    const std::string path = "kubernetes." + key;
    if (key == "enabled") {
      if (!x.is_boolean()) return KeyError(path, "expected a boolean, got " + TypeName(x));
      k.enabled = x.get<bool>();
    } else if (key == "kubeconfig") {
      TRELLIS_RETURN_IF_ERROR(str(key, x, &k.kubeconfig));
    } else if (key == "context") {
      TRELLIS_RETURN_IF_ERROR(str(key, x, &k.context));
    } else if (key == "service_account_dir") {
      TRELLIS_RETURN_IF_ERROR(str(key, x, &k.service_account_dir));
    } else if (key == "node_name") {
      TRELLIS_RETURN_IF_ERROR(str(key, x, &k.node_name));
    } else if (key == "namespace") {
      TRELLIS_RETURN_IF_ERROR(str(key, x, &k.config_namespace));
    } else if (key == "node_config_label") {
      TRELLIS_RETURN_IF_ERROR(str(key, x, &k.node_config_label));
    } else if (key == "qps" || key == "kube_client_qps") {
      if (!x.is_number() || x.get<double>() <= 0 || x.get<double>() > 10000) {
        return KeyError(path, "expected a number of requests per second above 0 and up to 10000");
      }
      (key == "qps" ? qps : qps_alias) = x.get<double>();
    } else if (key == "burst" || key == "kube_client_burst") {
      if (!x.is_number_integer() || x.get<int64_t>() < 1 || x.get<int64_t>() > 100000) {
        return KeyError(path, "expected an integer from 1 to 100000");
      }
      (key == "burst" ? burst : burst_alias) = x.get<uint32_t>();
    } else if (key == "resync_period") {
      TRELLIS_RETURN_IF_ERROR(dur(path, x, &k.resync_period_ms, 1000));
    } else if (key == "request_timeout") {
      TRELLIS_RETURN_IF_ERROR(dur(path, x, &k.request_timeout_ms, 100));
    } else if (key == "pod_get_timeout") {
      TRELLIS_RETURN_IF_ERROR(dur(path, x, &k.pod_get_timeout_ms, 10));
    } else if (key == "sync_timeout") {
      TRELLIS_RETURN_IF_ERROR(dur(path, x, &k.sync_timeout_ms, 0));
    } else if (key == "events") {
      if (!x.is_boolean()) return KeyError(path, "expected a boolean, got " + TypeName(x));
      k.events = x.get<bool>();
    } else if (key == "leader_election") {
      auto& le = k.leader_election;
      if (x.is_boolean()) {
        le.enabled = x.get<bool>();
        continue;
      }
      if (!x.is_object()) return KeyError(path, "expected a map or a boolean, got " + TypeName(x));
      for (const auto& [lk, lv] : x.items()) {
        const std::string lpath = path + "." + lk;
        if (lk == "enabled") {
          if (!lv.is_boolean()) return KeyError(lpath, "expected a boolean, got " + TypeName(lv));
          le.enabled = lv.get<bool>();
        } else if (lk == "lease_name") {
          TRELLIS_RETURN_IF_ERROR(str("leader_election." + lk, lv, &le.lease_name));
          static const std::regex kDns1123("^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$");
          if (!std::regex_match(le.lease_name, kDns1123)) {
            return KeyError(lpath, "'" + le.lease_name + "' is not a valid object name (RFC 1123)");
          }
        } else if (lk == "identity") {
          TRELLIS_RETURN_IF_ERROR(str("leader_election." + lk, lv, &le.identity));
        } else if (lk == "lease_duration") {
          TRELLIS_RETURN_IF_ERROR(dur(lpath, lv, &le.lease_duration_ms, 1000));
          if (le.lease_duration_ms % 1000 != 0) {
            return KeyError(lpath, "a Lease counts whole seconds");
          }
        } else if (lk == "renew_deadline") {
          TRELLIS_RETURN_IF_ERROR(dur(lpath, lv, &le.renew_deadline_ms, 100));
        } else if (lk == "retry_period") {
          TRELLIS_RETURN_IF_ERROR(dur(lpath, lv, &le.retry_period_ms, 50));
        } else {
          return KeyError(lpath, "unknown key (known: enabled, lease_name, identity, "
                                 "lease_duration, renew_deadline, retry_period)");
        }
      }
      if (le.renew_deadline_ms >= le.lease_duration_ms) {
        return KeyError(path + ".renew_deadline", "must be shorter than lease_duration (" +
                                                     std::to_string(le.lease_duration_ms) + "ms)");
      }
      if (le.retry_period_ms >= le.renew_deadline_ms) {
        return KeyError(path + ".retry_period", "must be shorter than renew_deadline (" +
                                                   std::to_string(le.renew_deadline_ms) + "ms)");
      }
    } else {
      return KeyError(path,
                      "unknown key (known: enabled, kubeconfig, context, service_account_dir, "
                      "node_name, namespace, qps, burst, kube_client_qps, kube_client_burst, "
                      "resync_period, request_timeout, pod_get_timeout, sync_timeout, "
                      "node_config_label, events, leader_election)");
    }
  }
  if (qps && qps_alias && *qps != *qps_alias) {
    return KeyError("kubernetes.qps", "and kubernetes.kube_client_qps disagree; give one");
  }
  if (burst && burst_alias && *burst != *burst_alias) {
    return KeyError("kubernetes.burst", "and kubernetes.kube_client_burst disagree; give one");
  }
  if (qps || qps_alias) k.qps = qps ? *qps : *qps_alias;
  if (burst || burst_alias) k.burst = burst ? *burst : *burst_alias;
  return k;
}

bool IsTerwayKey(const std::string& k) {
  return k == "eni_conf" || k == "qos_conf" || k == "security_conf" || k == "network_policy" ||
         k == "cni_conf";
}

}  // namespace

Json YamlToJson(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return nullptr;
    case YAML::NodeType::Scalar: {
      // yaml-cpp passes undecodable bytes through; every string the config
      // holds is later serialised as JSON (to plugins, logs, the API).
      if (!ValidUtf8(node.Scalar())) throw YAML::ParserException(node.Mark(), "invalid UTF-8");
      const std::string& tag = node.Tag();
      if (tag == "!" || tag == "tag:yaml.org,2002:str") return node.Scalar();
      return PlainScalar(node.Scalar());
    }
    case YAML::NodeType::Sequence: {
      Json arr = Json::array();
      for (const auto& item : node) arr.push_back(YamlToJson(item));
      return arr;
    }
    case YAML::NodeType::Map: {
      Json obj = Json::object();
      for (const auto& kv : node) {
        const std::string key = kv.first.as<std::string>();
        if (!ValidUtf8(key)) throw YAML::ParserException(kv.first.Mark(), "invalid UTF-8");
        // YAML forbids duplicate keys; yaml-cpp keeps both and the last one
        // would silently win.
        if (obj.contains(key)) throw YAML::ParserException(kv.first.Mark(), "duplicate key '" + key + "'");
        obj[key] = YamlToJson(kv.second);
      }
      return obj;
    }
  }
  return nullptr;
}

StatusOr<NodeConfig> NodeConfigFromJson(const Json& doc, std::string_view origin) {
  NodeConfig cfg;
  cfg.origin = origin;
  // Errors name the key; the caller adds where the document came from.
  if (doc.is_null()) return absl::InvalidArgumentError("the config is empty");
  if (!doc.is_object()) {
    return absl::InvalidArgumentError("expected a map at the top, got " + TypeName(doc));
  }
  for (const auto& [k, v] : doc.items()) {
    if (k == "modules") {
      if (v.is_null()) continue;
      if (!v.is_object()) return KeyError("modules", "expected a map of module name to settings");
      for (const auto& [name, mv] : v.items()) {
        auto m = ParseModule(name, mv);
        if (!m.ok()) return m.status();
        cfg.modules[name] = *std::move(m);
      }
    } else if (k == "log_level") {
      if (!v.is_string() || !ParseLogLevel(v.get<std::string>())) {
        return KeyError("log_level", "expected one of trace, debug, info, warn, error");
      }
      cfg.log_level = v.get<std::string>();
    } else if (k == "log_file") {
      if (!v.is_string()) return KeyError("log_file", "expected a path, got " + TypeName(v));
      cfg.log_file = v.get<std::string>();
    } else if (k == "datapath") {
      if (!v.is_object()) return KeyError("datapath", "expected a map, got " + TypeName(v));
      for (const auto& [dk, dv] : v.items()) {
        if (dk == "mtu") {
          if (!dv.is_number_integer() || dv.get<int64_t>() < 576 || dv.get<int64_t>() > 65535) {
            return KeyError("datapath.mtu", "expected an integer from 576 to 65535");
          }
          cfg.datapath.mtu = dv.get<uint32_t>();
        } else {
          return KeyError("datapath." + dk, "unknown key (known: mtu)");
        }
      }
    } else if (k == "kubernetes") {
      TRELLIS_ASSIGN_OR_RETURN(cfg.kubernetes, ParseKubernetes(v));
    } else {
      return KeyError(k, "unknown key (known: modules, log_level, log_file, datapath, kubernetes)");
    }
  }
  InheritEniCloudSettings(&cfg);
  return cfg;
}

StatusOr<NodeConfig> ParseNodeConfig(std::string_view yaml_text, std::string_view origin) {
  Json doc;
  try {
    doc = YamlToJson(YAML::Load(std::string(yaml_text)));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(std::string(origin) + ": invalid YAML at line " +
                                      std::to_string(e.mark.line + 1) + ", column " +
                                      std::to_string(e.mark.column + 1) + ": " + e.msg);
  }
  auto cfg = NodeConfigFromJson(doc, origin);
  if (!cfg.ok()) return Annotate(cfg.status(), origin);
  return cfg;
}

namespace {
// Composes two RFC 7396 patches: applying the result equals applying `a`
// then `b` (b's nulls stay, to delete from the target).
void ComposePatch(Json& a, const Json& b) {
  if (!b.is_object()) {
    a = b;
    return;
  }
  if (!a.is_object()) a = Json::object();
  for (const auto& [k, v] : b.items()) {
    if (v.is_object() && a.contains(k) && a[k].is_object()) {
      ComposePatch(a[k], v);
    } else {
      a[k] = v;
    }
  }
}
}  // namespace

StatusOr<Json> ConfigMapDataToDocument(const std::map<std::string, std::string>& data,
                                       std::string_view origin,
                                       std::vector<std::string>* warnings, bool as_patch) {
  std::map<std::string, std::string> terway;
  const std::string* own = nullptr;
  for (const auto& [name, text] : data) {
    if (name == kConfigMapKey) own = &text;
    else if (IsTerwayKey(name)) terway[name] = text;
  }
  if (own == nullptr && terway.empty()) {
    return absl::NotFoundError(std::string(origin) + ": no " + std::string(kConfigMapKey) +
                               " and no Terway keys (eni_conf, qos_conf, security_conf, "
                               "network_policy, cni_conf)");
  }
  Json doc = Json::object();
  if (!terway.empty()) {
    auto mapped = TerwayToNodeConfig(terway, warnings);
    if (!mapped.ok()) return Annotate(mapped.status(), origin);
    doc = *std::move(mapped);
  }
  if (own != nullptr) {
    Json patch;
    const std::string key = std::string(origin) + "/" + std::string(kConfigMapKey);
    try {
      patch = YamlToJson(YAML::Load(*own));
    } catch (const YAML::Exception& e) {
      return absl::InvalidArgumentError(key + ": invalid YAML at line " +
                                        std::to_string(e.mark.line + 1) + ": " + e.msg);
    }
    if (!patch.is_null() && !patch.is_object()) {
      return absl::InvalidArgumentError(key + ": expected a map at the top");
    }
    if (patch.is_object()) {
      if (as_patch) ComposePatch(doc, patch);
      else doc.merge_patch(patch);
    }
  }
  return doc;
}

StatusOr<NodeConfigDocument> LoadNodeConfigDocument(const std::filesystem::path& path) {
  NodeConfigDocument out;
  out.origin = path.string();
  std::error_code ec;
  if (!std::filesystem::is_directory(path, ec)) {
    TRELLIS_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
    try {
      out.doc = YamlToJson(YAML::Load(text));
    } catch (const YAML::Exception& e) {
      return absl::InvalidArgumentError(path.string() + ": invalid YAML at line " +
                                        std::to_string(e.mark.line + 1) + ", column " +
                                        std::to_string(e.mark.column + 1) + ": " + e.msg);
    }
    return out;
  }
  // A ConfigMap directory: every key is a file (through the ..data symlink).
  std::map<std::string, std::string> keys;
  for (const auto& entry : std::filesystem::directory_iterator(path, ec)) {
    std::string name = entry.path().filename().string();
    if (name.starts_with(".")) continue;
    if (name == kConfigMapKey || IsTerwayKey(name)) {
      TRELLIS_ASSIGN_OR_RETURN(keys[name], ReadFile(entry.path()));
    }
  }
  if (ec) return absl::NotFoundError("cannot list " + path.string() + ": " + ec.message());
  TRELLIS_ASSIGN_OR_RETURN(out.doc, ConfigMapDataToDocument(keys, path.string(), &out.warnings));
  return out;
}

StatusOr<NodeConfig> LoadNodeConfig(const std::filesystem::path& path) {
  TRELLIS_ASSIGN_OR_RETURN(NodeConfigDocument d, LoadNodeConfigDocument(path));
  auto cfg = NodeConfigFromJson(d.doc, d.origin);
  if (!cfg.ok()) return Annotate(cfg.status(), d.origin);
  cfg->warnings = std::move(d.warnings);
  return cfg;
}

NodeConfigDocument EmbeddedDefaultDocument() {
  NodeConfigDocument d;
  d.origin = "embedded default";
  d.doc = YamlToJson(YAML::Load(std::string(EmbeddedDefaultConfigYaml())));
  return d;
}

StatusOr<int64_t> ParseDurationMs(const Json& v, const std::string& key) {
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return v.get<int64_t>() * 1000;
  if (v.is_number_float() && v.get<double>() >= 0) {
    return static_cast<int64_t>(v.get<double>() * 1000);
  }
  if (v.is_string()) {
    static const std::regex kDuration(R"(^([0-9]+(\.[0-9]+)?)(ms|s|m|h)?$)");
    std::smatch m;
    const std::string s = v.get<std::string>();
    if (std::regex_match(s, m, kDuration)) {
      double n = std::stod(m[1].str());
      const std::string unit = m[3].str();
      double mult = unit == "ms" ? 1 : unit == "m" ? 60000 : unit == "h" ? 3600000 : 1000;
      return static_cast<int64_t>(n * mult);
    }
  }
  return KeyError(key, "expected a duration like 500ms, 10s, 5m or a number of seconds");
}

namespace {
// Visits every module's `config.ranges` array: fn(path, ranges).
template <class Fn>
Status ForEachRanges(Json* doc, Fn&& fn) {
  if (!doc->is_object() || !doc->contains("modules") || !(*doc)["modules"].is_object()) {
    return absl::OkStatus();
  }
  for (auto& [name, m] : (*doc)["modules"].items()) {
    if (!m.is_object() || !m.contains("config") || !m["config"].is_object()) continue;
    Json& cfg = m["config"];
    if (!cfg.contains("ranges") || !cfg["ranges"].is_array()) continue;
    TRELLIS_RETURN_IF_ERROR(fn("modules." + name + ".config.ranges", cfg["ranges"]));
  }
  return absl::OkStatus();
}
bool IsNodeRange(const Json& r) {
  return r.is_object() && r.contains("subnet") && r["subnet"] == "node";
}
}  // namespace

bool UsesNodeRanges(const Json& doc) {
  Json copy = doc;
  bool found = false;
  ForEachRanges(&copy, [&](const std::string&, Json& ranges) {
    for (const auto& r : ranges) found = found || IsNodeRange(r);
    return absl::OkStatus();
  }).IgnoreError();
  return found;
}

Status ResolveNodeRanges(Json* doc, const std::optional<std::vector<std::string>>& pod_cidrs,
                         std::string_view why_unknown) {
  return ForEachRanges(doc, [&](const std::string& path, Json& ranges) -> Status {
    Json out = Json::array();
    for (size_t i = 0; i < ranges.size(); ++i) {
      const Json& r = ranges[i];
      if (!IsNodeRange(r)) {
        out.push_back(r);
        continue;
      }
      const std::string at = path + "[" + std::to_string(i) + "]";
      int family = 0;
      for (const auto& [k, v] : r.items()) {
        if (k == "subnet") continue;
        if (k == "family" && v.is_number_integer() && (v == 4 || v == 6)) {
          family = v.get<int>();
          continue;
        }
        if (k == "family") return KeyError(at + ".family", "expected 4 or 6");
        return KeyError(at + "." + k,
                        "not allowed with subnet: node (known: subnet, family); the Node's "
                        "podCIDRs are used whole");
      }
      if (!pod_cidrs) {
        return KeyError(at + ".subnet", "node: the Node's podCIDRs are not known (" +
                                            std::string(why_unknown) + ")");
      }
      size_t added = 0;
      for (const auto& cidr : *pod_cidrs) {
        bool v6 = cidr.find(':') != std::string::npos;
        if (family == 0 || (family == 6) == v6) {
          out.push_back({{"subnet", cidr}});
          added++;
        }
      }
      if (added == 0) {
        std::string have;
        for (const auto& c : *pod_cidrs) have += (have.empty() ? "" : ", ") + c;
        return KeyError(at + ".subnet",
                        "node: the Node has no " +
                            std::string(family == 0 ? "" : family == 4 ? "IPv4 " : "IPv6 ") +
                            "podCIDR (spec.podCIDRs: [" + have + "])");
      }
    }
    ranges = std::move(out);
    return absl::OkStatus();
  });
}

std::string_view EmbeddedDefaultConfigYaml() {
  return R"(# trellis embedded default: one node, local address range, no cloud.
log_level: info
datapath:
  mtu: 1500
modules:
  ipam:
    enabled: true
    config:
      ranges:
        - subnet: 10.244.0.0/24
        - subnet: fd00:10:244::/64
  qos:
    enabled: true
  policy:
    enabled: true
  eni:
    enabled: false
  secgroup:
    enabled: false
)";
}

NodeConfig EmbeddedDefaultConfig() {
  auto cfg = ParseNodeConfig(EmbeddedDefaultConfigYaml(), "embedded default");
  if (!cfg.ok()) std::abort();  // a unit test pins this
  return *std::move(cfg);
}

StatusOr<Json> TerwayToNodeConfig(const std::map<std::string, std::string>& keys,
                                  std::vector<std::string>* warnings) {
  auto parse = [&](const std::string& key) -> StatusOr<Json> {
    try {
      Json j = Json::parse(keys.at(key));
      if (!j.is_object()) return KeyError(key, "expected a JSON object");
      return j;
    } catch (const Json::parse_error& e) {
      return KeyError(key, std::string("invalid JSON: ") + e.what());
    }
  };
  Json doc = {{"modules", Json::object()}};
  Json& modules = doc["modules"];
  auto module = [&](const std::string& name) -> Json& {
    if (!modules.contains(name)) modules[name] = {{"enabled", true}, {"config", Json::object()}};
    return modules[name];
  };

  if (keys.contains("eni_conf")) {
    TRELLIS_ASSIGN_OR_RETURN(Json eni, parse("eni_conf"));
    eni.erase("version");
    // Terway keeps its API client limits in eni_conf; they belong to the host.
    for (const auto& [from, to] : {std::pair{"kube_client_qps", "qps"},
                                   std::pair{"kube_client_burst", "burst"}}) {
      if (eni.contains(from)) {
        doc["kubernetes"][to] = eni[from];
        eni.erase(from);
      }
    }
    for (const char* k : {"access_key", "secret_key"}) {
      if (eni.contains(k) && eni[k].is_string() && eni[k].get<std::string>().empty()) eni.erase(k);
    }
    if (eni.contains("access_key") || eni.contains("secret_key")) {
      warnings->push_back(
          "eni_conf carries inline access_key/secret_key; prefer ACCESS_KEY_ID/ACCESS_KEY_SECRET "
          "from a Secret");
    }
    module("eni")["config"] = eni;
    // Terway's ENIMultiIP mode: pod addresses come from the ENI warm pool.
    module("ipam")["config"]["source"] = "eni";
  }
  if (keys.contains("qos_conf")) {
    TRELLIS_ASSIGN_OR_RETURN(Json qos, parse("qos_conf"));
    Json& cfg = module("qos")["config"];
    for (const auto& [k, v] : qos.items()) {
      if (k == "bandwidth_limit") {
        if (!v.is_object()) return KeyError("qos_conf.bandwidth_limit", "expected an object");
        for (const auto& [bk, bv] : v.items()) cfg[bk] = bv;
      } else {
        cfg[k] = v;
      }
    }
  }
  if (keys.contains("security_conf")) {
    TRELLIS_ASSIGN_OR_RETURN(Json sec, parse("security_conf"));
    for (const auto& [k, v] : sec.items()) {
      if (k == "network_isolation") {
        if (!v.is_object()) return KeyError("security_conf.network_isolation", "expected an object");
        module("policy")["config"]["network_isolation"] = v;
      } else if (k == "security_group_sync") {
        if (!v.is_object()) return KeyError("security_conf.security_group_sync", "expected an object");
        Json sgs = v;
        bool enable = true;
        if (sgs.contains("enable")) {
          if (!sgs["enable"].is_boolean()) {
            return KeyError("security_conf.security_group_sync.enable", "expected a boolean");
          }
          enable = sgs["enable"].get<bool>();
          sgs.erase("enable");
        }
        module("secgroup") = {{"enabled", enable}, {"config", sgs}};
      } else {
        return KeyError("security_conf." + k,
                        "unknown key (known: network_isolation, security_group_sync)");
      }
    }
  }
  if (keys.contains("network_policy")) {
    TRELLIS_ASSIGN_OR_RETURN(Json np, parse("network_policy"));
    module("policy")["config"]["terway_network_policy"] = np;
  }
  if (keys.contains("cni_conf")) {
    TRELLIS_ASSIGN_OR_RETURN(Json cni, parse("cni_conf"));
    if (cni.contains("log_level") && cni["log_level"].is_string()) doc["log_level"] = cni["log_level"];
    if (cni.contains("log_file") && cni["log_file"].is_string()) doc["log_file"] = cni["log_file"];
  }
  return doc;
}

Json NodeConfigToJson(const NodeConfig& cfg) {
  Json modules = Json::object();
  for (const auto& [name, m] : cfg.modules) {
    modules[name] = {{"enabled", m.enabled}, {"plugin", m.plugin}, {"config", m.config}};
  }
  const KubernetesConfig& k = cfg.kubernetes;
  // Durations as the parser reads them: the document parses back to `cfg`.
  auto Ms = [](int64_t ms) { return std::to_string(ms) + "ms"; };
  const auto& le = k.leader_election;
  Json kube = {{"enabled", k.enabled},
               {"kubeconfig", k.kubeconfig},
               {"context", k.context},
               {"service_account_dir", k.service_account_dir},
               {"node_name", k.node_name},
               {"namespace", k.config_namespace},
               {"qps", k.qps},
               {"burst", k.burst},
               {"resync_period", Ms(k.resync_period_ms)},
               {"request_timeout", Ms(k.request_timeout_ms)},
               {"pod_get_timeout", Ms(k.pod_get_timeout_ms)},
               {"sync_timeout", Ms(k.sync_timeout_ms)},
               {"node_config_label", k.node_config_label},
               {"events", k.events},
               {"leader_election",
                {{"enabled", le.enabled},
                 {"lease_name", le.lease_name},
                 {"identity", le.identity},
                 {"lease_duration", Ms(le.lease_duration_ms)},
                 {"renew_deadline", Ms(le.renew_deadline_ms)},
                 {"retry_period", Ms(le.retry_period_ms)}}}};
  return {{"log_level", cfg.log_level},
          {"log_file", cfg.log_file},
          {"datapath", {{"mtu", cfg.datapath.mtu}}},
          {"kubernetes", kube},
          {"modules", modules}};
}

Json Redact(const Json& j) {
  static const std::regex kSecret("(secret|password|passwd|token|access_?key|credential|private_?key)",
                                  std::regex::icase);
  if (j.is_object()) {
    Json out = Json::object();
    for (const auto& [k, v] : j.items()) {
      bool names_a_location = k.ends_with("_path") || k.ends_with("_file") || k.ends_with("_dir");
      out[k] = std::regex_search(k, kSecret) && !names_a_location && !v.is_null() && !v.is_boolean() &&
                       !(v.is_string() && v.get<std::string>().empty())
                   ? Json("<redacted>")
                   : Redact(v);
    }
    return out;
  }
  if (j.is_array()) {
    Json out = Json::array();
    for (const auto& v : j) out.push_back(Redact(v));
    return out;
  }
  return j;
}

}  // namespace trellis
