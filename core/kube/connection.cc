#include "core/kube/connection.h"

#include <yaml-cpp/yaml.h>

#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>

extern char** environ;

namespace trellis::kube {
namespace {

StatusOr<std::string> ReadFile(const std::filesystem::path& p, const std::string& what) {
  std::ifstream in(p, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(what + ": cannot read " + p.string() + ": " + std::strerror(errno));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

StatusOr<std::string> Base64Decode(const std::string& in, const std::string& what) {
  static const std::string kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=' || c == '\n' || c == '\r' || c == ' ') continue;
    auto pos = kAlphabet.find(c);
    if (pos == std::string::npos) return absl::InvalidArgumentError(what + ": not base64");
    acc = (acc << 6) | static_cast<uint32_t>(pos);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return out;
}

std::string Trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t i = 0;
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  return s.substr(i);
}

}  // namespace

std::string Connection::ServerUrl() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return scheme + "://" + h + ":" + std::to_string(port) + base_path;
}

Status ParseServerUrl(const std::string& url, Connection* c) {
  auto sep = url.find("://");
  if (sep == std::string::npos) {
    return absl::InvalidArgumentError("server " + url + ": expected https://host[:port]");
  }
  c->scheme = url.substr(0, sep);
  if (c->scheme != "https" && c->scheme != "http") {
    return absl::InvalidArgumentError("server " + url + ": the scheme must be https or http");
  }
  std::string rest = url.substr(sep + 3);
  auto slash = rest.find('/');
  std::string hostport = rest.substr(0, slash);
  c->base_path = slash == std::string::npos ? "" : rest.substr(slash);
  while (!c->base_path.empty() && c->base_path.back() == '/') c->base_path.pop_back();
  c->port = c->scheme == "https" ? 443 : 80;
  std::string port_text;
  if (!hostport.empty() && hostport[0] == '[') {
    auto close = hostport.find(']');
    if (close == std::string::npos) return absl::InvalidArgumentError("server " + url + ": unclosed [");
    c->host = hostport.substr(1, close - 1);
    if (close + 1 < hostport.size()) {
      if (hostport[close + 1] != ':') return absl::InvalidArgumentError("server " + url + ": bad port");
      port_text = hostport.substr(close + 2);
    }
  } else {
    auto colon = hostport.rfind(':');
    c->host = hostport.substr(0, colon);
    if (colon != std::string::npos) port_text = hostport.substr(colon + 1);
  }
  if (c->host.empty()) return absl::InvalidArgumentError("server " + url + ": no host");
  if (!port_text.empty()) {
    char* end = nullptr;
    long p = std::strtol(port_text.c_str(), &end, 10);
    if (*end != '\0' || p < 1 || p > 65535) {
      return absl::InvalidArgumentError("server " + url + ": bad port '" + port_text + "'");
    }
    c->port = static_cast<int>(p);
  }
  return absl::OkStatus();
}

std::map<std::string, std::string> ProcessEnv() {
  std::map<std::string, std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string kv = *e;
    auto eq = kv.find('=');
    if (eq != std::string::npos) env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return env;
}

StatusOr<Connection> InClusterConnection(const std::filesystem::path& sa_dir,
                                         const std::map<std::string, std::string>& env) {
  auto get = [&](const char* k) {
    auto it = env.find(k);
    return it == env.end() ? std::string() : it->second;
  };
  std::string host = get("KUBERNETES_SERVICE_HOST");
  std::string port = get("KUBERNETES_SERVICE_PORT");
  if (host.empty() || port.empty()) {
    return absl::FailedPreconditionError(
        "in-cluster Kubernetes config: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are "
        "not set (not running in a pod?); set kubernetes.kubeconfig to run outside a cluster");
  }
  Connection c;
  c.origin = "in-cluster (" + sa_dir.string() + ")";
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  TRELLIS_RETURN_IF_ERROR(ParseServerUrl("https://" + h + ":" + port, &c));
  c.token_file = (sa_dir / "token").string();
  TRELLIS_ASSIGN_OR_RETURN(std::string token, ReadFile(c.token_file, "in-cluster Kubernetes config"));
  if (Trim(token).empty()) {
    return absl::FailedPreconditionError("in-cluster Kubernetes config: " + c.token_file +
                                         " is empty");
  }
  TRELLIS_ASSIGN_OR_RETURN(c.ca_pem, ReadFile(sa_dir / "ca.crt", "in-cluster Kubernetes config"));
  if (auto ns = ReadFile(sa_dir / "namespace", "namespace"); ns.ok()) {
    c.default_namespace = Trim(*ns);
  }
  return c;
}

StatusOr<Connection> LoadKubeconfig(const std::filesystem::path& path, const std::string& context) {
  const std::string where = "kubeconfig " + path.string();
  TRELLIS_ASSIGN_OR_RETURN(std::string text, ReadFile(path, "kubeconfig"));
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(where + ": invalid YAML at line " +
                                      std::to_string(e.mark.line + 1) + ": " + e.msg);
  }
  if (!root.IsMap()) return absl::InvalidArgumentError(where + ": expected a map at the top");
  auto find = [&](const char* list, const std::string& name) -> std::optional<YAML::Node> {
    YAML::Node l = root[list];
    if (!l || !l.IsSequence()) return std::nullopt;
    for (const auto& item : l) {
      if (item.IsMap() && item["name"] && item["name"].as<std::string>() == name) return item;
    }
    return std::nullopt;
  };
  auto sub = [](const std::optional<YAML::Node>& n, const char* key) -> std::optional<YAML::Node> {
    if (!n || !n->IsMap() || !(*n)[key] || !(*n)[key].IsMap()) return std::nullopt;
    return (*n)[key];
  };
  auto scalar = [](const YAML::Node& n, const char* key) -> std::string {
    return n && n.IsMap() && n[key] && n[key].IsScalar() ? n[key].as<std::string>() : "";
  };
  const std::filesystem::path dir = path.parent_path();
  auto resolve = [&](const std::string& p) {
    std::filesystem::path fp(p);
    return fp.is_absolute() ? fp : dir / fp;
  };
  try {
    std::string ctx_name = context.empty() ? scalar(root, "current-context") : context;
    if (ctx_name.empty()) {
      return absl::InvalidArgumentError(where + ": no current-context and no kubernetes.context");
    }
    auto ctx = sub(find("contexts", ctx_name), "context");
    if (!ctx) return absl::InvalidArgumentError(where + ": no context named '" + ctx_name + "'");
    YAML::Node cc = *ctx;
    std::string cluster_name = scalar(cc, "cluster");
    std::string user_name = scalar(cc, "user");
    auto cluster_node = sub(find("clusters", cluster_name), "cluster");
    if (!cluster_node) {
      return absl::InvalidArgumentError(where + ": context '" + ctx_name +
                                        "' names cluster '" + cluster_name + "', which is absent");
    }
    YAML::Node cluster = *cluster_node;
    Connection c;
    c.origin = where;
    c.default_namespace = scalar(cc, "namespace");
    std::string server = scalar(cluster, "server");
    if (server.empty()) {
      return absl::InvalidArgumentError(where + ": clusters[" + cluster_name + "].server is empty");
    }
    TRELLIS_RETURN_IF_ERROR(Annotate(ParseServerUrl(server, &c), where));
    if (auto v = scalar(cluster, "certificate-authority-data"); !v.empty()) {
      TRELLIS_ASSIGN_OR_RETURN(c.ca_pem, Base64Decode(v, where + ": certificate-authority-data"));
    } else if (auto f = scalar(cluster, "certificate-authority"); !f.empty()) {
      TRELLIS_ASSIGN_OR_RETURN(c.ca_pem, ReadFile(resolve(f), where + ": certificate-authority"));
    }
    c.insecure_skip_verify = scalar(cluster, "insecure-skip-tls-verify") == "true";
    if (!user_name.empty()) {
      auto user_node = sub(find("users", user_name), "user");
      if (!user_node) {
        return absl::InvalidArgumentError(where + ": context '" + ctx_name + "' names user '" +
                                          user_name + "', which is absent");
      }
      YAML::Node user = *user_node;
      if (user["exec"] || user["auth-provider"]) {
        return absl::UnimplementedError(where + ": user '" + user_name +
                                        "' uses an exec/auth-provider plugin, which trellisd "
                                        "does not run; use a token, tokenFile or client "
                                        "certificate");
      }
      if (user["username"] || user["password"]) {
        return absl::UnimplementedError(where + ": user '" + user_name +
                                        "' uses basic auth, which Kubernetes removed; use a "
                                        "token, tokenFile or client certificate");
      }
      c.token = scalar(user, "token");
      if (auto f = scalar(user, "tokenFile"); !f.empty()) c.token_file = resolve(f).string();
      if (auto v = scalar(user, "client-certificate-data"); !v.empty()) {
        TRELLIS_ASSIGN_OR_RETURN(c.client_cert_pem, Base64Decode(v, where + ": client-certificate-data"));
      } else if (auto f = scalar(user, "client-certificate"); !f.empty()) {
        TRELLIS_ASSIGN_OR_RETURN(c.client_cert_pem, ReadFile(resolve(f), where + ": client-certificate"));
      }
      if (auto v = scalar(user, "client-key-data"); !v.empty()) {
        TRELLIS_ASSIGN_OR_RETURN(c.client_key_pem, Base64Decode(v, where + ": client-key-data"));
      } else if (auto f = scalar(user, "client-key"); !f.empty()) {
        TRELLIS_ASSIGN_OR_RETURN(c.client_key_pem, ReadFile(resolve(f), where + ": client-key"));
      }
      if (c.client_cert_pem.empty() != c.client_key_pem.empty()) {
        return absl::InvalidArgumentError(where + ": user '" + user_name +
                                          "' has a client certificate without its key, or the "
                                          "reverse");
      }
    }
    if (c.scheme == "http" && (!c.token.empty() || !c.token_file.empty())) {
      return absl::InvalidArgumentError(where + ": refusing to send a bearer token over plain "
                                        "http to " + server);
    }
    return c;
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(where + ": " + e.msg);
  }
}

}  // namespace trellis::kube
