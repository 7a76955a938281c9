// Where the Kubernetes API is and how to authenticate: in-cluster (the pod's
// service account) or a kubeconfig file.
#ifndef TRELLIS_CORE_KUBE_CONNECTION_H_
#define TRELLIS_CORE_KUBE_CONNECTION_H_

#include <filesystem>
#include <map>
#include <string>

#include "core/status.h"

namespace trellis::kube {

struct Connection {
  std::string scheme = "https";  // https, or http (e.g. kubectl proxy)
  std::string host;              // name or address, IPv6 without brackets
  int port = 443;
  std::string base_path;         // a server URL's path prefix, "" or "/prefix"
  std::string ca_pem;            // trusted CA bundle (PEM); empty: the system's
  bool insecure_skip_verify = false;
  std::string client_cert_pem, client_key_pem;  // client certificate auth
  // Bearer token: `token_file` when set (re-read when it changes: bound
  // service-account tokens rotate), else the fixed `token`.
  std::string token_file;
  std::string token;
  std::string default_namespace;  // the service account's or the context's
  std::string origin;             // for messages: "in-cluster" or the kubeconfig path

  std::string ServerUrl() const;
};

// In-cluster: KUBERNETES_SERVICE_HOST / KUBERNETES_SERVICE_PORT from `env`,
// token, ca.crt and namespace from `sa_dir`. Errors name the missing piece.
StatusOr<Connection> InClusterConnection(const std::filesystem::path& sa_dir,
                                         const std::map<std::string, std::string>& env);
// The process environment as a map (for InClusterConnection).
std::map<std::string, std::string> ProcessEnv();

// A kubeconfig file (clusters, users, contexts; `context` empty: its
// current-context). Supports server, certificate-authority(-data),
// insecure-skip-tls-verify, token, tokenFile, client-certificate(-data),
// client-key(-data). exec and auth-provider plugins are refused with a
// message. Relative paths are relative to the file's directory.
StatusOr<Connection> LoadKubeconfig(const std::filesystem::path& path, const std::string& context);

// Parses "https://host:port/prefix" into `c` (scheme, host, port, base_path).
Status ParseServerUrl(const std::string& url, Connection* c);

}  // namespace trellis::kube

#endif  // TRELLIS_CORE_KUBE_CONNECTION_H_
