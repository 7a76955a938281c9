// Fuzz target: what a container runtime hands the CNI binary — the network
// config on stdin (ParseNetConf) and CNI_ARGS (ParseCniArgs), both from the
// same bytes.
//
// Invariants: nothing throws; an accepted config has a supported version, a
// name and a socket; an accepted CNI_ARGS survives being written back and
// parsed again; every error (its message quotes the input) can be printed as
// the CNI error JSON the runtime reads.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/cni/cni.h"
#include "fuzz_check.h"

namespace cni = trellis::cni;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);

  cni::NetConf conf;
  if (auto e = cni::ParseNetConf(text, &conf)) {
    FUZZ_CHECK(e->code != 0);
    (void)cni::ErrorJson(*e, conf.cni_version).dump();
  } else {
    FUZZ_CHECK(cni::IsSupportedVersion(conf.cni_version));
    FUZZ_CHECK(conf.raw.contains("name") && conf.raw["name"].is_string());
    FUZZ_CHECK(!conf.socket.empty());
    FUZZ_CHECK(conf.runtime_config.is_object() && conf.args.is_object());
    if (conf.prev_result.is_object()) {
      (void)cni::ConvertResult(conf.prev_result, conf.cni_version).dump();
    }
  }

  cni::PodArgs args;
  if (auto e = cni::ParseCniArgs(text, &args)) {
    FUZZ_CHECK(e->code == cni::kInvalidEnvironment);
    (void)cni::ErrorJson(*e, "1.1.0").dump();
  } else {
    // Values cannot hold ';' and keys cannot hold '=' (that is how they were
    // split), so writing them back is lossless.
    std::string back = "IgnoreUnknown=1";
    auto add = [&](const std::string& k, const std::string& v) { back += ";" + k + "=" + v; };
    add("K8S_POD_NAMESPACE", args.k8s_namespace);
    add("K8S_POD_NAME", args.k8s_name);
    add("K8S_POD_UID", args.k8s_uid);
    add("K8S_POD_INFRA_CONTAINER_ID", args.infra_container_id);
    for (const auto& [k, v] : args.extra) add(k, v);
    cni::PodArgs again;
    FUZZ_CHECK(!cni::ParseCniArgs(back, &again).has_value());
    FUZZ_CHECK(again.k8s_namespace == args.k8s_namespace && again.k8s_name == args.k8s_name &&
               again.k8s_uid == args.k8s_uid &&
               again.infra_container_id == args.infra_container_id && again.extra == args.extra);
  }
  return 0;
}
