// deploy/: both overlays render offline with the kubectl on this machine and
// every object is what it should be; the node config they ship passes
// `trellisctl config validate` against the built plugins; the alert rules
// pass `promtool check rules` and their unit tests (`promtool test rules`).
#include <gtest/gtest.h>

#include <fstream>
#include <regex>

#include "harness.h"
#include "ops_util.h"

namespace trellis::test::ops {
namespace {

std::vector<Json> Render(const std::string& overlay, std::string* error) {
  auto r =
      test::Run({"kubectl", "kustomize", (SourceDir() / "deploy/overlays" / overlay).string()});
  if (r.exit_code != 0) {
    *error =
        "kubectl kustomize " + overlay + " failed (" + std::to_string(r.exit_code) + "): " + r.err;
    return {};
  }
  return YamlStreamToJson(r.out);
}

const Json* Find(const std::vector<Json>& objs, const std::string& kind, const std::string& name) {
  for (const auto& o : objs) {
    if (o.value("kind", "") == kind && o["metadata"].value("name", "") == name) return &o;
  }
  return nullptr;
}

const Json* Named(const Json& list, const std::string& name) {
  for (const auto& x : list) {
    if (x.value("name", "") == name) return &x;
  }
  return nullptr;
}

std::string Arg(const Json& container, const std::string& flag) {
  for (const auto& a : container.value("args", Json::array())) {
    std::string s = a;
    if (s.rfind(flag + "=", 0) == 0) return s.substr(flag.size() + 1);
  }
  return "";
}

class Overlay : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::string error;
    objs_ = Render(GetParam(), &error);
    ASSERT_FALSE(objs_.empty()) << error;
    ds_ = Find(objs_, "DaemonSet", "trellis");
    ASSERT_NE(ds_, nullptr);
    pod_ = (*ds_)["spec"]["template"]["spec"];
    const Json* c = Named(pod_["containers"], "trellisd");
    ASSERT_NE(c, nullptr);
    daemon_ = *c;
    ASSERT_TRUE(pod_.contains("initContainers"));
    const Json* i = Named(pod_["initContainers"], "install-cni");
    ASSERT_NE(i, nullptr) << "no install-cni init container";
    init_ = *i;
  }
  std::vector<Json> objs_;
  const Json* ds_ = nullptr;
  Json pod_, daemon_, init_;
};

TEST_P(Overlay, EveryObjectParsesAndIsInItsPlace) {
  std::set<std::string> kinds;
  for (const auto& o : objs_) {
    ASSERT_TRUE(o.is_object());
    EXPECT_FALSE(o.value("apiVersion", "").empty()) << o;
    EXPECT_FALSE(o["metadata"].value("name", "").empty()) << o;
    std::string kind = o.value("kind", "");
    kinds.insert(kind);
    if (kind != "ClusterRole" && kind != "ClusterRoleBinding") {
      EXPECT_EQ(o["metadata"].value("namespace", ""), "kube-system") << kind;
    }
    // Credentials come from a Secret the operator creates, never from here.
    EXPECT_NE(kind, "Secret");
  }
  for (const char* k : {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                        "RoleBinding", "ConfigMap", "DaemonSet", "Service"}) {
    EXPECT_TRUE(kinds.contains(k)) << k;
  }
  bool monitoring = GetParam() == "production";
  EXPECT_EQ(kinds.contains("ServiceMonitor"), monitoring);
  EXPECT_EQ(kinds.contains("PrometheusRule"), monitoring);
}

TEST_P(Overlay, DaemonSetIsDoneProperly) {
  const Json& spec = (*ds_)["spec"];
  EXPECT_EQ(spec["updateStrategy"]["type"], "RollingUpdate");
  EXPECT_TRUE(spec["updateStrategy"]["rollingUpdate"].contains("maxUnavailable"));
  EXPECT_EQ(spec["selector"]["matchLabels"], Json({{"app.kubernetes.io/name", "trellis"}}));
  EXPECT_EQ(pod_["hostNetwork"], true);
  EXPECT_EQ(pod_["dnsPolicy"], "ClusterFirstWithHostNet");
  EXPECT_EQ(pod_["priorityClassName"], "system-node-critical");
  std::set<std::string> effects;
  for (const auto& t : pod_["tolerations"]) {
    if (t.value("operator", "") == "Exists" && !t.contains("key")) effects.insert(t["effect"]);
  }
  EXPECT_TRUE(effects.contains("NoSchedule") && effects.contains("NoExecute"))
      << pod_["tolerations"];

  // NODE_NAME from the downward API; credentials only through secretKeyRef.
  const Json* node = Named(daemon_["env"], "NODE_NAME");
  ASSERT_NE(node, nullptr);
  EXPECT_EQ((*node)["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
  for (const char* name : {"ACCESS_KEY_ID", "ACCESS_KEY_SECRET"}) {
    const Json* e = Named(daemon_["env"], name);
    ASSERT_NE(e, nullptr) << name;
    EXPECT_EQ((*e)["valueFrom"]["secretKeyRef"]["name"], "trellis-credentials");
  }
  for (const auto& e : daemon_["env"]) {
    if (std::regex_search(e["name"].get<std::string>(), std::regex("KEY|SECRET|TOKEN|PASSWORD"))) {
      EXPECT_FALSE(e.contains("value")) << "literal credential in env: " << e;
    }
  }

  // Requests and limits on every container.
  for (const Json* c : {&daemon_, &init_}) {
    for (const char* kind : {"requests", "limits"}) {
      for (const char* res : {"cpu", "memory"}) {
        EXPECT_TRUE((*c)["resources"][kind].contains(res))
            << (*c)["name"] << " " << kind << " " << res;
      }
    }
  }

  // Probes on the real health endpoints, on the port trellisd serves.
  std::string addr = Arg(daemon_, "--metrics-addr");
  ASSERT_FALSE(addr.empty());
  int port = std::stoi(addr.substr(addr.rfind(':') + 1));
  const Json* metrics_port = Named(daemon_["ports"], "metrics");
  ASSERT_NE(metrics_port, nullptr);
  EXPECT_EQ((*metrics_port)["containerPort"], port);
  auto probe_port = [&](const Json& probe) {
    const Json& p = probe["httpGet"]["port"];
    return p.is_string()
               ? (*Named(daemon_["ports"], p.get<std::string>()))["containerPort"].get<int>()
               : p.get<int>();
  };
  ASSERT_TRUE(daemon_["livenessProbe"].contains("httpGet")) << "liveness must ask trellisd itself";
  ASSERT_TRUE(daemon_["readinessProbe"].contains("httpGet"));
  EXPECT_EQ(daemon_["livenessProbe"]["httpGet"]["path"], "/healthz");
  EXPECT_EQ(daemon_["readinessProbe"]["httpGet"]["path"], "/readyz");
  EXPECT_EQ(probe_port(daemon_["livenessProbe"]), port);
  EXPECT_EQ(probe_port(daemon_["readinessProbe"]), port);

  // Narrow host paths: exactly what trellis uses.
  const std::set<std::string> allowed = {"/run/trellis", "/var/lib/trellis", "/var/run/netns",
                                         "/opt/cni/bin", "/etc/cni/net.d",   "/var/log/trellis"};
  std::map<std::string, std::string> host_paths;  // volume -> path
  for (const auto& v : pod_["volumes"]) {
    if (!v.contains("hostPath")) continue;
    std::string path = v["hostPath"]["path"];
    EXPECT_TRUE(allowed.contains(path)) << "hostPath " << path << " is not one trellis needs";
    host_paths[v["name"]] = path;
  }
  EXPECT_EQ(host_paths.size(), allowed.size());
  auto mounts = [&](const Json& c) {
    std::map<std::string, std::string> m;  // host path -> mount path
    for (const auto& vm : c["volumeMounts"]) {
      if (host_paths.contains(vm["name"])) m[host_paths[vm["name"]]] = vm["mountPath"];
    }
    return m;
  };
  auto dm = mounts(daemon_);
  EXPECT_EQ(dm["/run/trellis"], fs::path(Arg(daemon_, "--socket")).parent_path().string());
  EXPECT_EQ(dm["/var/lib/trellis"], Arg(daemon_, "--state-dir"));
  EXPECT_EQ(dm["/var/run/netns"], "/var/run/netns");
  EXPECT_FALSE(dm.contains("/opt/cni/bin")) << "only the init container writes the host's CNI dirs";
  for (const auto& vm : daemon_["volumeMounts"]) {
    if (vm["mountPath"] == "/var/run/netns") EXPECT_EQ(vm["mountPropagation"], "HostToContainer");
  }

  // The init container installs the binary and the conflist on the host.
  auto im = mounts(init_);
  ASSERT_TRUE(im.contains("/opt/cni/bin") && im.contains("/etc/cni/net.d"));
  std::string script;
  for (const auto& s : init_["command"]) script += s.get<std::string>() + " ";
  EXPECT_NE(script.find(im["/opt/cni/bin"] + "/trellis"), std::string::npos) << script;
  EXPECT_NE(script.find(im["/etc/cni/net.d"] + "/10-trellis.conflist"), std::string::npos)
      << script;
  EXPECT_EQ(init_["image"], daemon_["image"]);
}

TEST_P(Overlay, ConfigMapsHoldAValidNodeConfigAndConflist) {
  // The node config, mounted whole (no subPath: the kubelet only updates a
  // ConfigMap volume mounted as a directory), at --config.
  std::string cm_name, cni_name;
  for (const auto& v : pod_["volumes"]) {
    if (!v.contains("configMap")) continue;
    if (v["name"] == "config") cm_name = v["configMap"]["name"];
    if (v["name"] == "cni-config") cni_name = v["configMap"]["name"];
  }
  const Json* cm = Find(objs_, "ConfigMap", cm_name);
  ASSERT_NE(cm, nullptr) << cm_name;
  for (const auto& vm : daemon_["volumeMounts"]) {
    if (vm["name"] == "config") {
      EXPECT_EQ(vm["mountPath"], Arg(daemon_, "--config"));
      EXPECT_FALSE(vm.contains("subPath"));
    }
  }
  ASSERT_TRUE((*cm)["data"].contains("trellis.yaml"));
  // A deployed daemon uses the Kubernetes API (in-cluster: no kubeconfig).
  Json node_cfg = YamlToJson((*cm)["data"]["trellis.yaml"].get<std::string>());
  EXPECT_EQ(node_cfg["kubernetes"].value("enabled", false), true) << node_cfg["kubernetes"];
  EXPECT_FALSE(node_cfg["kubernetes"].contains("kubeconfig"));
  TempDir dir;
  for (const auto& [k, v] : (*cm)["data"].items()) std::ofstream(dir / k) << v.get<std::string>();
  PluginDir plugins;
  auto valid =
      test::Run({(BinDir() / "trellisctl").string(), "--plugin-dir", plugins.path().string(), "-o",
                 "json", "config", "validate", dir.path().string()});
  EXPECT_EQ(valid.exit_code, 0) << valid.out << valid.err;
  std::set<std::string> switches;
  Json report = valid.json();
  for (const auto& m : report["modules"]) switches.insert(m["name"]);
  EXPECT_EQ(switches, (std::set<std::string>{"ipam", "qos", "policy", "eni", "secgroup"}));

  // The conflist: the trellis plugin on the daemon's socket.
  const Json* cni = Find(objs_, "ConfigMap", cni_name);
  ASSERT_NE(cni, nullptr) << cni_name;
  Json conflist = Json::parse((*cni)["data"].value("10-trellis.conflist", ""), nullptr, false);
  ASSERT_TRUE(conflist.is_object());
  EXPECT_FALSE(conflist.value("name", "").empty());
  EXPECT_FALSE(conflist.value("cniVersion", "").empty());
  ASSERT_FALSE(conflist["plugins"].empty());
  EXPECT_EQ(conflist["plugins"][0]["type"], "trellis");
  EXPECT_EQ(conflist["plugins"][0]["socket"], Arg(daemon_, "--socket"));
}

TEST_P(Overlay, RbacGrantsOnlyWhatTheDaemonUses) {
  EXPECT_EQ(pod_["serviceAccountName"], "trellis");
  // The Kubernetes API source authenticates with the service account token.
  EXPECT_EQ(pod_.value("automountServiceAccountToken", false), true);
  const Json* ns_env = Named(daemon_["env"], "POD_NAMESPACE");
  ASSERT_NE(ns_env, nullptr);
  EXPECT_EQ((*ns_env)["valueFrom"]["fieldRef"]["fieldPath"], "metadata.namespace");
  const Json* role = Find(objs_, "ClusterRole", "trellis");
  const Json* binding = Find(objs_, "ClusterRoleBinding", "trellis");
  const Json* nsrole = Find(objs_, "Role", "trellis");
  const Json* nsbinding = Find(objs_, "RoleBinding", "trellis");
  ASSERT_TRUE(role && binding && nsrole && nsbinding);
  for (const Json* b : {binding, nsbinding}) {
    EXPECT_EQ((*b)["roleRef"]["name"], "trellis");
    EXPECT_EQ((*b)["subjects"][0]["name"], "trellis");
    EXPECT_EQ((*b)["subjects"][0]["namespace"], "kube-system");
  }
  EXPECT_EQ((*binding)["roleRef"]["kind"], "ClusterRole");
  EXPECT_EQ((*nsbinding)["roleRef"]["kind"], "Role");
  // Reads, plus two writes: Events anywhere (on the pods that failed), the
  // Lease only in the daemon's namespace. That the rules are exactly what
  // the daemon requests is checked against its requests by the kube tests
  // (tests/netns/kube/kube_rbac.h).
  const std::set<std::string> read = {"get", "list", "watch"};
  for (const Json* r : {role, nsrole}) {
    for (const auto& rule : (*r).value("rules", Json::array())) {
      EXPECT_FALSE(rule.contains("nonResourceURLs")) << rule;
      for (const auto& g : rule["apiGroups"]) EXPECT_NE(g, "*");
      for (const auto& res : rule["resources"]) {
        EXPECT_NE(res, "*");
        EXPECT_NE(res, "secrets");
        for (const auto& v : rule["verbs"]) {
          bool write_ok = (res == "events" && v == "create") ||
                          (r == nsrole && res == "leases" && (v == "create" || v == "update"));
          EXPECT_TRUE(read.contains(v) || write_ok) << res << ": " << v;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Deploy, Overlay, ::testing::Values("dev", "production"));

TEST(Monitoring, ServiceMonitorScrapesTheDaemonsMetricsPort) {
  std::string error;
  auto objs = Render("production", &error);
  ASSERT_FALSE(objs.empty()) << error;
  const Json* svc = Find(objs, "Service", "trellisd");
  const Json* sm = Find(objs, "ServiceMonitor", "trellisd");
  const Json* ds = Find(objs, "DaemonSet", "trellis");
  ASSERT_TRUE(svc && sm && ds);
  EXPECT_EQ((*svc)["spec"]["clusterIP"], "None");
  for (const auto& [k, v] : (*svc)["spec"]["selector"].items()) {
    EXPECT_EQ((*ds)["spec"]["template"]["metadata"]["labels"][k], v) << k;
  }
  for (const auto& [k, v] : (*sm)["spec"]["selector"]["matchLabels"].items()) {
    EXPECT_EQ((*svc)["metadata"]["labels"][k], v) << k;
  }
  EXPECT_EQ((*sm)["spec"]["namespaceSelector"]["matchNames"][0], "kube-system");
  const Json& ep = (*sm)["spec"]["endpoints"][0];
  EXPECT_EQ(ep["path"], "/metrics");
  EXPECT_EQ(ep["port"], (*svc)["spec"]["ports"][0]["name"]);
  EXPECT_EQ((*svc)["spec"]["ports"][0]["targetPort"], "metrics");

  // The operator names the job after the Service: the rules select it.
  const Json* rule = Find(objs, "PrometheusRule", "trellis");
  ASSERT_NE(rule, nullptr);
  EXPECT_EQ((*rule)["spec"], YamlToJson(RulesFile()));
  std::string down;
  for (const auto& r : (*rule)["spec"]["groups"][0]["rules"]) {
    if (r["alert"] == "TrellisDown") down = r["expr"];
  }
  EXPECT_NE(down.find("job=\"" + (*svc)["metadata"]["name"].get<std::string>() + "\""),
            std::string::npos)
      << down;

  // The dashboard for Grafana's sidecar.
  bool dashboard = false;
  for (const auto& o : objs) {
    if (o["kind"] != "ConfigMap" || !o["metadata"].contains("labels") ||
        o["metadata"]["labels"].value("grafana_dashboard", "") != "1") {
      continue;
    }
    dashboard = true;
    for (const auto& [k, v] : o["data"].items()) {
      Json d = Json::parse(v.get<std::string>(), nullptr, false);
      ASSERT_TRUE(d.is_object()) << k;
      EXPECT_GT(d["panels"].size(), 10u);
    }
  }
  EXPECT_TRUE(dashboard);
}

TEST(Monitoring, AlertRulesPassPromtoolAndTheirUnitTests) {
  TempDir dir;
  std::ofstream(dir / "rules.yaml") << RulesFile();
  auto check = test::Run({"promtool", "check", "rules", (dir / "rules.yaml").string()});
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
  EXPECT_NE(check.out.find("SUCCESS"), std::string::npos) << check.out;

  fs::copy_file(SourceDir() / "deploy/monitoring/rules_test.yaml", dir / "rules_test.yaml");
  auto test = test::Run({"promtool", "test", "rules", (dir / "rules_test.yaml").string()});
  EXPECT_EQ(test.exit_code, 0) << test.out << test.err;

  // The guide's three alerts, on our metric names; every alert has a unit
  // test in which it fires.
  Json spec = YamlToJson(RulesFile());
  std::map<std::string, std::string> exprs;
  for (const auto& g : spec["groups"]) {
    for (const auto& r : g["rules"]) exprs[r["alert"]] = r["expr"];
  }
  EXPECT_NE(exprs["TrellisDown"].find("up{job=\"trellisd\"} == 0"), std::string::npos);
  EXPECT_NE(exprs["TrellisCniHighLatency"].find("histogram_quantile(0.99"), std::string::npos);
  EXPECT_NE(exprs["TrellisCniHighLatency"].find("trellis_cni_request_duration_seconds_bucket"),
            std::string::npos);
  EXPECT_NE(exprs["TrellisCniHighLatency"].find("> 0.1"), std::string::npos);
  EXPECT_NE(exprs["TrellisEniCreationFailures"].find("trellis_eni_creation_failures_total"),
            std::string::npos);
  Json tests = YamlToJson(ReadFile(SourceDir() / "deploy/monitoring/rules_test.yaml"));
  std::set<std::string> fired;
  for (const auto& t : tests["tests"]) {
    for (const auto& a : t.value("alert_rule_test", Json::array())) {
      if (!a["exp_alerts"].empty()) fired.insert(a["alertname"]);
    }
  }
  for (const auto& [name, expr] : exprs)
    EXPECT_TRUE(fired.contains(name)) << name << " has no test";
}

}  // namespace
}  // namespace trellis::test::ops
