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
    } else {
      return KeyError(k, "unknown key (known: modules, log_level, log_file, datapath)");
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

StatusOr<NodeConfig> LoadNodeConfig(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::is_directory(path, ec)) {
    TRELLIS_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
    return ParseNodeConfig(text, path.string());
  }
  // A ConfigMap directory: every key is a file (through the ..data symlink).
  std::map<std::string, std::string> terway;
  std::optional<std::string> own;
  for (const auto& entry : std::filesystem::directory_iterator(path, ec)) {
    std::string name = entry.path().filename().string();
    if (name.starts_with(".")) continue;
    if (name == kConfigMapKey) {
      TRELLIS_ASSIGN_OR_RETURN(own, ReadFile(entry.path()));
    } else if (IsTerwayKey(name)) {
      TRELLIS_ASSIGN_OR_RETURN(terway[name], ReadFile(entry.path()));
    }
  }
  if (ec) return absl::NotFoundError("cannot list " + path.string() + ": " + ec.message());
  if (!own && terway.empty()) {
    return absl::NotFoundError(path.string() + ": no " + std::string(kConfigMapKey) +
                               " and no Terway keys (eni_conf, qos_conf, security_conf, "
                               "network_policy, cni_conf)");
  }
  std::vector<std::string> warnings;
  Json doc = Json::object();
  if (!terway.empty()) {
    auto mapped = TerwayToNodeConfig(terway, &warnings);
    if (!mapped.ok()) return Annotate(mapped.status(), path.string());
    doc = *std::move(mapped);
  }
  if (own) {
    Json patch;
    const std::string origin = (path / kConfigMapKey).string();
    try {
      patch = YamlToJson(YAML::Load(*own));
    } catch (const YAML::Exception& e) {
      return absl::InvalidArgumentError(origin + ": invalid YAML at line " +
                                        std::to_string(e.mark.line + 1) + ": " + e.msg);
    }
    if (!patch.is_null() && !patch.is_object()) {
      return absl::InvalidArgumentError(origin + ": expected a map at the top");
    }
    if (patch.is_object()) doc.merge_patch(patch);
  }
  auto cfg = NodeConfigFromJson(doc, path.string());
  if (!cfg.ok()) return Annotate(cfg.status(), path.string());
  cfg->warnings = std::move(warnings);
  return cfg;
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
  return {{"log_level", cfg.log_level},
          {"log_file", cfg.log_file},
          {"datapath", {{"mtu", cfg.datapath.mtu}}},
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
