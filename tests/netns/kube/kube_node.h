// A trellisd node wired to the fake Kubernetes API server: the daemon in its
// own network namespace, the API server listening inside that namespace, a
// kubeconfig with a rotating token file, and (unless turned off) the
// kube_recorder test plugin recording what the host tells the modules.
#ifndef TRELLIS_TESTS_NETNS_KUBE_KUBE_NODE_H_
#define TRELLIS_TESTS_NETNS_KUBE_KUBE_NODE_H_

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "fake_apiserver.h"
#include "harness.h"

namespace trellis::test {

// Reads the recorder's log: every record, or those of one op.
inline std::vector<Json> Records(const fs::path& log, const std::string& op = "") {
  std::vector<Json> out;
  std::ifstream in(log);
  std::string line;
  while (std::getline(in, line)) {
    Json j = Json::parse(line, nullptr, false);
    if (j.is_object() && (op.empty() || j.value("op", "") == op)) out.push_back(j);
  }
  return out;
}

struct KubeNodeSetup {
  // The body of the `modules:` section (lines indented by two spaces).
  std::string modules = "";
  // Extra lines of the `kubernetes:` section (indented by two spaces).
  std::string kube = "";
  // The kube_recorder module is added unless false; `recorder_config` is
  // put into its config map (e.g. "tag: base, ").
  bool recorder = true;
  std::string recorder_config = "";
  std::string token = "node-token";
  // Added to the daemon's environment (NODE_NAME, POD_NAMESPACE are set).
  std::map<std::string, std::string> env = {};
};

class KubeNode {
 public:
  KubeNode(FakeApiServer* api, const std::string& node_name, const KubeNodeSetup& setup)
      : api_(api), name_(node_name), token_(setup.token) {
    plugins_.Add(KUBE_RECORDER_PLUGIN, "kube_recorder.so");
    log_ = dir_ / "recorder.log";
    DaemonOptions o;
    o.config_path = dir_ / "trellis.yaml";
    o.plugin_dir = plugins_.path();
    o.env = {{"NODE_NAME", node_name}, {"POD_NAMESPACE", "kube-system"}};
    for (const auto& [k, v] : setup.env) o.env[k] = v;
    daemon_ = std::make_unique<Daemon>(o);
    port_ = api_->Listen(daemon_->node()->name());
    api_->AddToken(token_);
    WriteToken(token_);
    std::ofstream(dir_ / "kubeconfig") << api_->Kubeconfig(port_, (dir_ / "token").string());
    std::string yaml = "modules:\n" + setup.modules;
    if (setup.recorder) {
      yaml += "  recorder: {plugin: kube_recorder, config: {" + setup.recorder_config +
              "log: " + log_.string() + "}}\n";
    }
    yaml += "kubernetes:\n  kubeconfig: " + (dir_ / "kubeconfig").string() + "\n";
    // Duplicate keys are refused: a test's own sync_timeout replaces ours.
    if (setup.kube.find("sync_timeout:") == std::string::npos) yaml += "  sync_timeout: 10s\n";
    yaml += "  resync_period: 1h\n  pod_get_timeout: 500ms\n"
            "  leader_election: {lease_duration: 3s, renew_deadline: 2s, retry_period: 200ms}\n" +
            setup.kube;
    std::ofstream(dir_ / "trellis.yaml") << yaml;
  }

  Daemon& daemon() { return *daemon_; }
  const fs::path& log() const { return log_; }
  const std::string& name() const { return name_; }
  const fs::path& dir() const { return dir_.path(); }

  // As the kubelet rotates a projected token: a new file renamed over.
  void WriteToken(const std::string& t) {
    std::ofstream(dir_ / "token.tmp") << t << "\n";
    fs::rename(dir_ / "token.tmp", dir_ / "token");
  }

  RunResult Cni(const std::string& command, const std::string& id, const Netns& ns,
                const std::string& pod_ns, const std::string& pod, const std::string& uid = "",
                const Json& extra = Json::object()) {
    std::string args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=" + pod_ns + ";K8S_POD_NAME=" + pod;
    if (!uid.empty()) args += ";K8S_POD_UID=" + uid;
    CniCall call;
    call.command = command;
    call.container_id = id;
    call.netns = ns.path();
    call.args = args;
    call.config = daemon_->NetConf("1.1.0", extra);
    return test::Cni(call);
  }

 private:
  FakeApiServer* api_;
  std::string name_, token_;
  TempDir dir_;
  PluginDir plugins_;
  fs::path log_;
  std::unique_ptr<Daemon> daemon_;
  int port_ = 0;
};

}  // namespace trellis::test

#endif  // TRELLIS_TESTS_NETNS_KUBE_KUBE_NODE_H_
