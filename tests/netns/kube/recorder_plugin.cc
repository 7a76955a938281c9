// kube_recorder: a test plugin providing the qos, policy and secgroup
// interfaces that records every call the host makes, one JSON object per
// line, in the file its config names. The Kubernetes source tests assert on
// what the host told the modules (labels on pod_upsert, annotations on
// qos apply, policy keys and manifests, namespace labels, set_leader).
//
// config: {"log": "/path", "tag": "any", "fail_pod": "name"}
//   tag       echoed in the create/reconfigure records (per-node config tests)
//   fail_pod  pod_upsert of a pod with this name fails (Event tests)
#include <trellis/plugin.hpp>

#include <fstream>
#include <mutex>

namespace {

using trellis::sdk::Error;
using trellis::sdk::Json;
using trellis::sdk::Pod;

class Recorder {
 public:
  static constexpr const char* kName = "kube_recorder";
  static constexpr const char* kVersion = "1.0.0";

  static void Validate(const Json& config) {
    if (!config.is_object() || !config.contains("log") || !config["log"].is_string()) {
      throw Error(TRELLIS_E_INVALID, "log: a file path is required");
    }
  }

  Recorder(trellis::sdk::Host host, const Json& config) : host_(host), config_(config) {
    Write({{"op", "create"}, {"tag", config_.value("tag", "")}, {"config", config_}});
  }
  void Reconfigure(const Json& config) {
    Validate(config);
    std::lock_guard lock(mu_);
    config_ = config;
    WriteLocked({{"op", "reconfigure"}, {"tag", config_.value("tag", "")}, {"config", config_}});
  }

  // qos
  void ApplyQos(const Pod& pod) { Write(PodRecord("qos_apply", pod)); }
  void RemoveQos(const Pod& pod) { Write(PodRecord("qos_remove", pod)); }

  // policy
  void UpsertPod(const Pod& pod) {
    std::string fail;
    {
      std::lock_guard lock(mu_);
      fail = config_.value("fail_pod", "");
    }
    if (!fail.empty() && pod.k8s_name == fail) {
      Write(PodRecord("pod_upsert_refused", pod));
      throw Error(TRELLIS_E_INVALID, "pod " + pod.k8s_namespace + "/" + pod.k8s_name +
                                         " refused by the test (fail_pod)");
    }
    Write(PodRecord("pod_upsert", pod));
  }
  void RemovePod(const Pod& pod) { Write(PodRecord("pod_remove", pod)); }
  void UpsertNamespace(const std::string& name, const trellis::sdk::Labels& labels) {
    Write({{"op", "namespace_upsert"}, {"name", name}, {"labels", labels}});
  }
  void UpsertPolicy(const std::string& key, const std::optional<Json>& manifest) {
    Write({{"op", "policy_upsert"}, {"key", key}, {"manifest", manifest ? *manifest : Json()}});
  }

  // secgroup
  Json Reconcile(bool dry_run) {
    Write({{"op", "reconcile"}, {"dry_run", dry_run}});
    return Json::object();
  }
  void SetLeader(bool leader) { Write({{"op", "set_leader"}, {"leader", leader}}); }

 private:
  static Json PodRecord(const char* op, const Pod& pod) {
    return {{"op", op},
            {"pod", pod.k8s_namespace + "/" + pod.k8s_name},
            {"uid", pod.k8s_uid},
            {"container_id", pod.container_id},
            {"host_ifname", pod.host_ifname},
            {"labels", pod.labels},
            {"annotations", pod.annotations}};
  }
  void Write(const Json& j) {
    std::lock_guard lock(mu_);
    WriteLocked(j);
  }
  void WriteLocked(const Json& j) {
    std::ofstream out(config_.value("log", ""), std::ios::app);
    out << j.dump() << "\n";
  }

  trellis::sdk::Host host_;
  std::mutex mu_;
  Json config_;
};

}  // namespace

TRELLIS_PLUGIN(Recorder);
