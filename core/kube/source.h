// The Kubernetes API as a source for the host (issue 9):
//   pods of this node (fieldSelector spec.nodeName)  -> pod metadata on ADD
//        (PodMetadataSource) and live label/annotation updates of running
//        pods (PodPipeline::UpdatePodMetadata)
//   namespaces                -> policy.namespace_upsert(name, labels)
//   networkpolicies           -> policy.policy_upsert("ns/name", manifest|null)
//   this Node                 -> podCIDRs for `{subnet: node}` ipam ranges;
//        its `node_config_label` selects a per-node ConfigMap merged over the
//        node config (Terway's terway-config label)
//   a Lease                   -> the secgroup writer election (set_leader)
//   pods whose network failed -> core/v1 Events
// Modules only ever hear of the API through their existing ops; file sources
// keep working beside it (the policy module merges both).
//
// What the API said last about the node (podCIDRs, labels, the per-node
// ConfigMap) is kept in the state store, so that a daemon restarting while
// the API is down keeps the config it had. Which policy keys were fed is kept
// too: a policy deleted while the daemon was down is removed after the next
// list.
#ifndef TRELLIS_CORE_KUBE_SOURCE_H_
#define TRELLIS_CORE_KUBE_SOURCE_H_

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/config.h"
#include "core/kube/client.h"
#include "core/kube/events.h"
#include "core/kube/informer.h"
#include "core/kube/leader.h"
#include "core/metrics.h"
#include "core/pod_source.h"

namespace trellis {

class Module;
class ModuleRegistry;
class PodPipeline;
class Store;

class KubeSource : public PodMetadataSource {
 public:
  struct NodeInfo {
    std::string name;
    std::map<std::string, std::string> labels;
    std::vector<std::string> pod_cidrs;
    bool from_api = false;  // false: as persisted by an earlier run
  };
  struct NodeOverride {
    std::string ns, name;  // the ConfigMap the node label names
    std::map<std::string, std::string> data;
  };

  // `env` supplies NODE_NAME, POD_NAMESPACE and, in-cluster,
  // KUBERNETES_SERVICE_HOST/PORT.
  KubeSource(KubernetesConfig config, std::map<std::string, std::string> env, Store* store,
             MetricsRegistry* metrics, ModuleRegistry* registry, PodPipeline* pipeline);
  ~KubeSource() override;  // Stop()

  // Resolves the connection, the node name and the namespace (errors name
  // the config key or the missing environment), then starts the watches,
  // the event recorder and the elector. Does not wait for them.
  Status Start();
  void Stop();

  // Waits until the Node (and the ConfigMap its label names) have been
  // listed, or the deadline: what the node config needs.
  bool WaitForNode(std::chrono::steady_clock::time_point deadline);
  // Waits until pods, namespaces and NetworkPolicies have been listed.
  bool WaitForSync(std::chrono::steady_clock::time_point deadline);

  // The Node as last seen (from the API, else as persisted); nullopt and
  // `why` when neither.
  std::optional<NodeInfo> Node(std::string* why) const;
  // The per-node ConfigMap the node's label selects; nullopt when the label
  // is unset (why empty) or the ConfigMap is not known (why says so).
  std::optional<NodeOverride> Override(std::string* why) const;
  // Called (on a watch thread; must not block) when the node's podCIDRs, its
  // config label or the selected ConfigMap changed.
  void SetConfigInputsChanged(std::function<void()> callback);

  // Module transitions (run inside a registry transition: the module is
  // passed in, the registry is not locked again).
  void ModuleStarted(Module& m);
  void ModuleStopping(Module& m);

  // Re-feeds every cached object (periodic resync; also for tests).
  void Resync();
  void RefreshMetrics();
  Json Describe() const;
  const std::string& node_name() const { return node_name_; }
  bool leader() const { return elector_ && elector_->leader(); }

  // PodMetadataSource
  StatusOr<ClusterPodMetadata> Lookup(const std::string& ns, const std::string& name,
                                      const std::string& uid) override;
  void SetupFailed(const std::string& ns, const std::string& name, const std::string& uid,
                   const std::string& reason, const std::string& message) override;

 private:
  void OnPod(const Json* old_obj, const Json& obj);
  void OnNamespace(const Json& obj, bool deleted);
  void OnPolicy(const Json& obj, bool deleted);
  void OnPoliciesListed();
  void OnNode(const Json& obj);
  void OnOverride();
  void StartOverrideInformer(const std::string& name);
  void FeedPolicyModule(Module& m);
  void Notify();
  void Housekeeping();
  std::unique_ptr<kube::Informer> MakeInformer(const std::string& name, const std::string& path,
                                               const std::string& field_selector,
                                               kube::InformerHandlers handlers);

  const KubernetesConfig cfg_;
  const std::map<std::string, std::string> env_;
  Store* store_;
  MetricsRegistry* metrics_;
  ModuleRegistry* registry_;
  PodPipeline* pipeline_;

  std::string node_name_, namespace_, identity_;
  std::unique_ptr<kube::Client> client_;
  std::unique_ptr<kube::Informer> pods_, namespaces_, policies_, node_;
  mutable std::mutex override_mu_;
  std::unique_ptr<kube::Informer> override_;
  std::string override_name_;
  std::unique_ptr<kube::EventRecorder> recorder_;
  std::unique_ptr<kube::LeaderElector> elector_;
  std::mutex leader_mu_;  // orders set_leader calls: after the registry lock

  mutable std::mutex mu_;
  std::optional<NodeInfo> node_info_;
  std::function<void()> on_config_inputs_;
  uint64_t feed_errors_ = 0;
  std::string last_feed_error_;

  std::mutex hk_mu_;
  std::condition_variable hk_cv_;
  bool hk_stop_ = false;
  std::thread housekeeping_;

  Metric m_requests_, m_request_seconds_, m_synced_, m_objects_, m_events_, m_failures_,
      m_lists_, m_leader_, m_k8s_events_, m_feed_errors_;
};

}  // namespace trellis

#endif  // TRELLIS_CORE_KUBE_SOURCE_H_
