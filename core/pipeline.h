// The pod pipeline (docs/architecture: ADD = lock -> intent -> ipam ->
// datapath -> qos -> policy -> commit; DEL in reverse; CHECK asks every step;
// GC removes what the runtime no longer lists; startup reconciles records with
// the kernel). Every step tolerates "already done" and "already gone".
#ifndef TRELLIS_CORE_PIPELINE_H_
#define TRELLIS_CORE_PIPELINE_H_

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/cni/cni.h"
#include "core/config.h"
#include "core/datapath/datapath.h"
#include "core/metrics.h"
#include "core/pod_source.h"
#include "core/proto/trellis.pb.h"
#include "core/registry.h"
#include "core/status.h"
#include "core/store.h"

namespace trellis {

// What the host keeps of a pod attachment (the JSON in the pods table).
struct PodRecord {
  std::string state;  // intent | ready
  std::string container_id, ifname, netns, network, host_ifname, mac, host_mac;
  std::string k8s_namespace, k8s_name, k8s_uid;
  sdk::Labels labels, annotations;  // what modules see: CNI args merged with the cluster's
  // What the CNI args said (args.cni.labels, containerd's pod-annotations):
  // kept apart so that a live update from the cluster merges over them again.
  sdk::Labels cni_labels, cni_annotations;
  std::string metadata_source = "cni-args";  // cni-args | api-cache | api-get | api-watch
  Json runtime_config = Json::object();
  Json cni_args = Json::object();
  uint32_t mtu = 1500;
  std::vector<sdk::Address> addresses;
  std::vector<std::string> applied;  // steps done: ipam, datapath, qos, policy
  Json result;                       // the ADD result, CNI 1.1.0 form
  int64_t created_unix = 0;

  Json ToJson() const;
  static StatusOr<PodRecord> FromJson(const Json& j);
  sdk::Pod ToSdk() const;
  bool Applied(const std::string& step) const;
};

class PodPipeline : public ModuleObserver {
 public:
  PodPipeline(Store* store, ModuleRegistry* registry, Datapath* datapath,
              MetricsRegistry* metrics);
  ~PodPipeline() override;

  void SetDefaultMtu(uint32_t mtu) { default_mtu_ = mtu; }
  void SetReady(bool ready) { ready_ = ready; }
  bool ready() const { return ready_; }

  // One CNI invocation, as the binary forwarded it.
  v1::CniResponse Handle(const v1::CniRequest& request);

  // Startup: rolls back intents left by a crash, releases pods whose netns
  // is gone, removes orphan host interfaces, runs every module's gc.
  Status Reconcile();

  StatusOr<std::vector<PodRecord>> Pods();

  // Where pod metadata comes from besides the CNI args (the Kubernetes API
  // source), or nullptr. May be swapped at any time.
  void SetMetadataSource(std::shared_ptr<PodMetadataSource> source);

  // A running pod's labels or annotations changed in the cluster: merges them
  // over its CNI-args metadata in every attachment of the pod (namespace/name,
  // and uid when both sides know it) and, in place, re-runs policy.pod_upsert
  // when the labels changed and qos.apply when the annotations did. The
  // record is saved only when the modules took the change, so a later call
  // with the same metadata (a resync) retries. Nothing else of the pod is
  // touched. Returns how many attachments changed.
  StatusOr<size_t> UpdatePodMetadata(const std::string& ns, const std::string& name,
                                     const std::string& uid, const sdk::Labels& labels,
                                     const sdk::Labels& annotations);

  // ModuleObserver
  void ModuleStarted(Module& m) override;
  void ModuleStopping(Module& m) override;
  size_t PodCount() override;

 private:
  class LockTable;
  struct Outcome {
    cni::Error error{cni::kOk, "", ""};  // code 0: success
    Json result;
  };
  Outcome Add(const v1::CniRequest& req, const cni::NetConf& conf, const cni::PodArgs& args);
  Outcome Del(const v1::CniRequest& req, const cni::NetConf& conf);
  Outcome Check(const v1::CniRequest& req, const cni::NetConf& conf);
  Outcome Gc(const cni::NetConf& conf);
  Outcome StatusCmd();

  // Undoes every applied step in reverse; on success the record is gone,
  // otherwise it stays (state intent) for the next GC/reconcile.
  Status Teardown(const ModuleSet& set, PodRecord& rec);
  Status RunModuleGc(const ModuleSet& set);
  PodInterfaceSpec Spec(const PodRecord& rec) const;
  Status Save(const PodRecord& rec);

  std::shared_ptr<PodMetadataSource> MetadataSource() const;

  Store* store_;
  ModuleRegistry* registry_;
  mutable std::mutex source_mu_;
  std::shared_ptr<PodMetadataSource> source_;
  Datapath* datapath_;
  std::unique_ptr<LockTable> locks_;
  std::atomic<uint32_t> default_mtu_{1500};
  std::atomic<bool> ready_{false};
  Metric m_requests_, m_duration_, m_pods_, m_metadata_;
};

// A failed Status as a CNI error with a code the runtime can act on.
cni::Error ToCniError(const Status& s, uint32_t default_code);

}  // namespace trellis

#endif  // TRELLIS_CORE_PIPELINE_H_
