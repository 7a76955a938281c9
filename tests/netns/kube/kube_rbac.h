// The RBAC that deploy/ ships, enforced by the fake API server.
//
// Every kube test that runs a daemon against the fake API server has the
// server refuse (403) what the rendered `kubectl kustomize deploy/base`
// does not grant to the DaemonSet's service account, and fails if the daemon
// asked for anything refused: the code never requests a (verb, resource)
// the manifests do not grant. KubeRbac.TheShippedRbacIsExactlyWhatTheDaemonUses
// drives every request the daemon makes (watches, the direct pod GET, the
// Lease, the per-node ConfigMap, Events) and fails on any grant nobody used:
// the manifests grant nothing the code does not request.
#ifndef TRELLIS_TESTS_NETNS_KUBE_KUBE_RBAC_H_
#define TRELLIS_TESTS_NETNS_KUBE_KUBE_RBAC_H_

#include <set>
#include <string>
#include <vector>

#include "fake_apiserver.h"
#include "harness.h"
#include "ops_util.h"

namespace trellis::test {

// One granted (verb, group, resource); ns "" for a grant at the cluster
// scope (a ClusterRole through a ClusterRoleBinding), else the namespace
// the grant holds in (a Role, or a ClusterRole through a RoleBinding).
struct RbacGrant {
  std::string ns, api_group, resource, verb;
  auto operator<=>(const RbacGrant&) const = default;
  std::string str() const {
    return verb + " " + (api_group.empty() ? "" : api_group + "/") + resource +
           (ns.empty() ? " (cluster)" : " in " + ns);
  }
};

// What `kubectl kustomize deploy/base` grants the trellis DaemonSet's service
// account. Empty with `error` set when it does not render, or when a rule
// uses what this check does not model (wildcards, resourceNames,
// nonResourceURLs: the deploy tests refuse those anyway).
inline std::set<RbacGrant> ShippedRbac(std::string* error) {
  auto r = Run({"kubectl", "kustomize", (SourceDir() / "deploy/base").string()});
  if (r.exit_code != 0) {
    *error = "kubectl kustomize deploy/base: " + r.err;
    return {};
  }
  std::vector<Json> objs = ops::YamlStreamToJson(r.out);
  std::string sa, sa_ns;
  for (const auto& o : objs) {
    if (o.value("kind", "") == "DaemonSet" && o["metadata"].value("name", "") == "trellis") {
      sa = o["spec"]["template"]["spec"].value("serviceAccountName", "default");
      sa_ns = o["metadata"].value("namespace", "default");
    }
  }
  if (sa.empty()) {
    *error = "deploy/base renders no DaemonSet named trellis";
    return {};
  }
  auto role = [&](const std::string& kind, const std::string& name,
                  const std::string& ns) -> const Json* {
    for (const auto& o : objs) {
      if (o.value("kind", "") == kind && o["metadata"].value("name", "") == name &&
          (kind == "ClusterRole" || o["metadata"].value("namespace", "") == ns)) {
        return &o;
      }
    }
    return nullptr;
  };
  std::set<RbacGrant> out;
  for (const auto& b : objs) {
    std::string kind = b.value("kind", "");
    if (kind != "ClusterRoleBinding" && kind != "RoleBinding") continue;
    bool ours = false;
    for (const auto& s : b.value("subjects", Json::array())) {
      ours = ours || (s.value("kind", "") == "ServiceAccount" && s.value("name", "") == sa &&
                      s.value("namespace", "") == sa_ns);
    }
    if (!ours) continue;
    std::string scope = kind == "RoleBinding" ? b["metadata"].value("namespace", "") : "";
    std::string ref_kind = b["roleRef"].value("kind", "");
    const Json* ref = role(ref_kind, b["roleRef"].value("name", ""), scope);
    if (ref == nullptr) {
      *error = kind + " " + b["metadata"].value("name", "") + " refers to a missing " + ref_kind;
      return {};
    }
    for (const auto& rule : ref->value("rules", Json::array())) {
      if (rule.contains("resourceNames") || rule.contains("nonResourceURLs")) {
        *error = "a rule with resourceNames or nonResourceURLs: " + rule.dump();
        return {};
      }
      for (const auto& g : rule.value("apiGroups", Json::array())) {
        for (const auto& res : rule.value("resources", Json::array())) {
          for (const auto& v : rule.value("verbs", Json::array())) {
            if (g == "*" || res == "*" || v == "*") {
              *error = "a wildcard rule: " + rule.dump();
              return {};
            }
            out.insert({scope, g, res, v});
          }
        }
      }
    }
  }
  return out;
}

// The grant that allows `a`, or nullptr.
inline const RbacGrant* Allowing(const std::set<RbacGrant>& grants,
                                 const FakeApiServer::Access& a) {
  for (const auto& g : grants) {
    if (g.verb == a.verb && g.api_group == a.api_group && g.resource == a.resource &&
        (g.ns.empty() || g.ns == a.ns)) {
      return &g;
    }
  }
  return nullptr;
}

// Makes `api` answer as a cluster with the shipped RBAC. False with `error`
// when the manifests do not render.
inline bool EnforceShippedRbac(FakeApiServer& api, std::string* error) {
  struct Rendered {
    std::set<RbacGrant> grants;
    std::string error;
  };
  static const Rendered* rendered = [] {
    auto* r = new Rendered();
    r->grants = ShippedRbac(&r->error);
    return r;
  }();
  if (rendered->grants.empty()) {
    *error = rendered->error.empty() ? "deploy/base grants the daemon nothing" : rendered->error;
    return false;
  }
  api.SetAuthorizer(
      [](const FakeApiServer::Access& a) { return Allowing(rendered->grants, a) != nullptr; });
  return true;
}

// Requests the shipped RBAC refused, one line each ("" when none).
inline std::string Forbidden(const FakeApiServer& api) {
  std::string out;
  for (const auto& r : api.Requests()) {
    if (!r.forbidden) continue;
    const auto& a = *r.access;
    out += "  " + a.verb + " " + (a.api_group.empty() ? "" : a.api_group + "/") + a.resource +
           (a.ns.empty() ? "" : " in " + a.ns) + " (" + r.method + " " + r.path + ")\n";
  }
  return out;
}

}  // namespace trellis::test

#endif  // TRELLIS_TESTS_NETNS_KUBE_KUBE_RBAC_H_
