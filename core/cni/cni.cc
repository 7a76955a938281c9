#include "core/cni/cni.h"

#include <charconv>
#include <cstdio>
#include <regex>

#include "core/utf8.h"

namespace trellis::cni {
namespace {

const std::regex kContainerId("^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$");

bool ValidIfname(std::string_view n) {
  if (n.empty() || n.size() > 15 || n == "." || n == "..") return false;
  for (char c : n) {
    if (c == '/' || c == ':' || c == ' ' || c == '\t' || c == '\n' || c == '\0') return false;
  }
  return true;
}

Error Err(uint32_t code, std::string msg, std::string details = "") {
  return Error{code, std::move(msg), std::move(details)};
}

std::string Join(const char* const* v, size_t n) {
  std::string o;
  for (size_t i = 0; i < n; ++i) o += (i ? ", " : "") + std::string(v[i]);
  return o;
}

}  // namespace

Json ErrorJson(const Error& e, std::string_view cni_version) {
  // Messages quote what the runtime passed, which may be any bytes.
  Json j = {{"cniVersion", IsSupportedVersion(cni_version) ? std::string(cni_version) : kLatestVersion},
            {"code", e.code},
            {"msg", SanitizeUtf8(e.msg)}};
  if (!e.details.empty()) j["details"] = SanitizeUtf8(e.details);
  return j;
}

bool IsSupportedVersion(std::string_view v) {
  for (const char* s : kSupportedVersions) {
    if (v == s) return true;
  }
  return false;
}

int CompareVersions(std::string_view a, std::string_view b) {
  auto parts = [](std::string_view s) {
    std::vector<int> out;
    size_t i = 0;
    while (i <= s.size()) {
      size_t j = s.find('.', i);
      if (j == std::string_view::npos) j = s.size();
      int v = 0;
      std::from_chars(s.data() + i, s.data() + j, v);
      out.push_back(v);
      i = j + 1;
    }
    out.resize(3, 0);
    return out;
  };
  auto pa = parts(a), pb = parts(b);
  for (int i = 0; i < 3; ++i) {
    if (pa[i] != pb[i]) return pa[i] < pb[i] ? -1 : 1;
  }
  return 0;
}

std::optional<Error> ReadEnvironment(const std::function<const char*(const char*)>& getenv,
                                     Environment* env) {
  auto get = [&](const char* k) {
    const char* v = getenv(k);
    return v == nullptr ? std::string() : std::string(v);
  };
  env->command = get("CNI_COMMAND");
  env->container_id = get("CNI_CONTAINERID");
  env->netns = get("CNI_NETNS");
  env->ifname = get("CNI_IFNAME");
  env->args = get("CNI_ARGS");
  env->path = get("CNI_PATH");
  // Everything here travels to trellisd in protobuf strings, which must be
  // UTF-8.
  for (const auto& [name, value] : {std::pair<const char*, const std::string*>{"CNI_COMMAND", &env->command},
                                    {"CNI_CONTAINERID", &env->container_id},
                                    {"CNI_NETNS", &env->netns},
                                    {"CNI_IFNAME", &env->ifname},
                                    {"CNI_ARGS", &env->args},
                                    {"CNI_PATH", &env->path}}) {
    if (!ValidUtf8(*value)) return Err(kInvalidEnvironment, std::string(name) + " is not valid UTF-8");
  }
  const std::string& c = env->command;
  if (c.empty()) return Err(kInvalidEnvironment, "CNI_COMMAND is not set");
  if (c != "ADD" && c != "DEL" && c != "CHECK" && c != "GC" && c != "STATUS" && c != "VERSION") {
    return Err(kInvalidEnvironment, "unknown CNI_COMMAND " + c,
               "expected ADD, DEL, CHECK, GC, STATUS or VERSION");
  }
  if (c == "ADD" || c == "DEL" || c == "CHECK") {
    if (env->container_id.empty()) return Err(kInvalidEnvironment, "CNI_CONTAINERID is not set");
    if (!std::regex_match(env->container_id, kContainerId)) {
      return Err(kInvalidEnvironment, "CNI_CONTAINERID has invalid characters",
                 "expected letters, digits, '_', '.' and '-', starting with a letter or digit");
    }
    if (env->ifname.empty()) return Err(kInvalidEnvironment, "CNI_IFNAME is not set");
    if (!ValidIfname(env->ifname)) {
      return Err(kInvalidEnvironment, "CNI_IFNAME '" + env->ifname + "' is not a valid interface name",
                 "at most 15 characters, none of '/', ':' or whitespace");
    }
    if (c != "DEL" && env->netns.empty()) return Err(kInvalidEnvironment, "CNI_NETNS is not set");
  }
  return std::nullopt;
}

std::optional<Error> ParseNetConf(std::string_view text, NetConf* out) {
  Json j = Json::parse(text, nullptr, false);
  if (j.is_discarded()) {
    return Err(kDecodeFailure, "the network config on stdin is not valid JSON");
  }
  if (!j.is_object()) return Err(kDecodeFailure, "the network config on stdin is not a JSON object");
  out->raw = j;
  auto str = [&](const char* key, std::string* dst, bool required) -> std::optional<Error> {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) {
      if (required) return Err(kInvalidConfig, std::string("network config: ") + key + " is required");
      return std::nullopt;
    }
    if (!it->is_string()) {
      return Err(kInvalidConfig, std::string("network config: ") + key + " must be a string");
    }
    *dst = it->get<std::string>();
    return std::nullopt;
  };
  if (auto e = str("cniVersion", &out->cni_version, true)) return e;
  if (!IsSupportedVersion(out->cni_version)) {
    return Err(kIncompatibleVersion, "cniVersion " + out->cni_version + " is not supported",
               "supported versions: " + Join(kSupportedVersions, std::size(kSupportedVersions)));
  }
  if (auto e = str("name", &out->name, true)) return e;
  if (auto e = str("type", &out->type, false)) return e;
  if (auto e = str("socket", &out->socket, false)) return e;
  if (out->socket.empty()) return Err(kInvalidConfig, "network config: socket must not be empty");
  if (auto it = j.find("timeout"); it != j.end()) {
    if (!it->is_number() || it->get<double>() <= 0 || it->get<double>() > 3600) {
      return Err(kInvalidConfig, "network config: timeout must be a number of seconds in (0, 3600]");
    }
    out->timeout_ms = static_cast<uint32_t>(it->get<double>() * 1000);
  }
  if (auto it = j.find("prevResult"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) return Err(kInvalidConfig, "network config: prevResult must be an object");
    out->prev_result = *it;
  }
  if (auto it = j.find("runtimeConfig"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) return Err(kInvalidConfig, "network config: runtimeConfig must be an object");
    out->runtime_config = *it;
  }
  if (auto it = j.find("args"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) return Err(kInvalidConfig, "network config: args must be an object");
    out->args = *it;
    if (auto cni = it->find("cni"); cni != it->end() && cni->is_object()) {
      if (auto labels = cni->find("labels"); labels != cni->end() && !labels->is_null()) {
        if (!labels->is_array()) {
          return Err(kInvalidConfig, "network config: args.cni.labels must be a list of {key, value}");
        }
        for (const auto& l : *labels) {
          if (!l.is_object() || !l.contains("key") || !l["key"].is_string() ||
              !l.contains("value") || !l["value"].is_string()) {
            return Err(kInvalidConfig,
                       "network config: args.cni.labels entries need string key and value");
          }
          out->labels[l["key"].get<std::string>()] = l["value"].get<std::string>();
        }
      }
    }
  }
  for (const char* key : {"cni.dev/valid-attachments", "cni.dev/attachments"}) {
    auto it = j.find(key);
    if (it == j.end() || out->valid_attachments) continue;
    if (!it->is_array()) return Err(kInvalidConfig, std::string("network config: ") + key + " must be a list");
    std::vector<Attachment> atts;
    for (const auto& a : *it) {
      if (!a.is_object() || !a.contains("containerID") || !a["containerID"].is_string() ||
          !a.contains("ifname") || !a["ifname"].is_string()) {
        return Err(kInvalidConfig, std::string("network config: ") + key +
                                       " entries need string containerID and ifname");
      }
      atts.push_back({a["containerID"].get<std::string>(), a["ifname"].get<std::string>()});
    }
    out->valid_attachments = std::move(atts);
  }
  return std::nullopt;
}

std::optional<Error> ParseCniArgs(std::string_view text, PodArgs* out) {
  if (!ValidUtf8(text)) return Err(kInvalidEnvironment, "CNI_ARGS is not valid UTF-8");
  bool ignore_unknown = false;
  std::vector<std::pair<std::string, std::string>> unknown;
  size_t i = 0;
  while (i < text.size()) {
    size_t j = text.find(';', i);
    if (j == std::string_view::npos) j = text.size();
    std::string_view kv = text.substr(i, j - i);
    i = j + 1;
    if (kv.empty()) continue;
    size_t eq = kv.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      return Err(kInvalidEnvironment, "CNI_ARGS: '" + std::string(kv) + "' is not KEY=VALUE");
    }
    std::string k(kv.substr(0, eq)), v(kv.substr(eq + 1));
    if (k == "K8S_POD_NAMESPACE") out->k8s_namespace = v;
    else if (k == "K8S_POD_NAME") out->k8s_name = v;
    else if (k == "K8S_POD_UID") out->k8s_uid = v;
    else if (k == "K8S_POD_INFRA_CONTAINER_ID") out->infra_container_id = v;
    else if (k == "IgnoreUnknown") ignore_unknown = (v == "1" || v == "true" || v == "True");
    else unknown.emplace_back(k, v);
  }
  if (!unknown.empty() && !ignore_unknown) {
    return Err(kInvalidEnvironment, "CNI_ARGS: unknown key " + unknown.front().first,
               "set IgnoreUnknown=1 to pass keys trellis does not know");
  }
  for (auto& [k, v] : unknown) out->extra[k] = v;
  return std::nullopt;
}

Json ConvertResult(const Json& result, std::string_view version) {
  Json out = result;
  out["cniVersion"] = std::string(version);
  if (CompareVersions(version, "1.0.0") < 0 && out.contains("ips")) {
    for (auto& ip : out["ips"]) {
      std::string addr = ip.value("address", "");
      ip["version"] = addr.find(':') == std::string::npos ? "4" : "6";
    }
  }
  return out;
}

Json VersionJson(std::string_view requested) {
  Json versions = Json::array();
  for (const char* v : kSupportedVersions) versions.push_back(v);
  return {{"cniVersion", IsSupportedVersion(requested) ? std::string(requested) : kLatestVersion},
          {"supportedVersions", versions}};
}

std::string HostIfname(std::string_view container_id, std::string_view ifname) {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a 64
  auto mix = [&](std::string_view s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 1099511628211ULL;
    }
  };
  mix(container_id);
  mix(std::string_view("\0", 1));
  mix(ifname);
  char buf[16];
  std::snprintf(buf, sizeof buf, "tr%012llx", static_cast<unsigned long long>(h & 0xffffffffffffULL));
  return buf;
}

}  // namespace trellis::cni
