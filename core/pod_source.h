// The seam between the pod pipeline and the cluster: where a pod's labels and
// annotations come from besides the CNI args, and where the pipeline reports
// a pod whose network could not be set up. The Kubernetes API source
// (core/kube/source.h) implements it; without one, CNI args alone are used.
#ifndef TRELLIS_CORE_POD_SOURCE_H_
#define TRELLIS_CORE_POD_SOURCE_H_

#include <trellis/types.hpp>

#include <string>

#include "core/status.h"

namespace trellis {

struct ClusterPodMetadata {
  std::string uid;
  sdk::Labels labels;
  sdk::Labels annotations;
  std::string source;  // "api-cache" or "api-get"
};

class PodMetadataSource {
 public:
  virtual ~PodMetadataSource() = default;
  // The pod's metadata as the cluster knows it: from the watch cache, else by
  // one direct GET bounded by the source's short timeout (kubelet may call
  // CNI before the watch delivers the pod). `uid` (may be empty) guards
  // against a recreated pod of the same name. An error says why the cluster
  // could not answer; the caller then uses the CNI args and logs that.
  // THREADING: any thread, concurrently. Never blocks beyond its timeout.
  virtual StatusOr<ClusterPodMetadata> Lookup(const std::string& ns, const std::string& name,
                                              const std::string& uid) = 0;
  // The network of a pod could not be set up: `reason` is a CamelCase word
  // (e.g. IPAllocationFailed), `message` what went wrong. Never blocks.
  virtual void SetupFailed(const std::string& ns, const std::string& name, const std::string& uid,
                           const std::string& reason, const std::string& message) = 0;
};

}  // namespace trellis

#endif  // TRELLIS_CORE_POD_SOURCE_H_
