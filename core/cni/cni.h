// The CNI protocol (spec 1.1.0 and the older versions trellis speaks): the
// environment, the network config, CNI_ARGS, results per version, errors.
// Shared by the `trellis` binary and the daemon; no I/O here.
#ifndef TRELLIS_CORE_CNI_CNI_H_
#define TRELLIS_CORE_CNI_CNI_H_

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace trellis::cni {

using Json = nlohmann::json;

inline constexpr const char* kSupportedVersions[] = {"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"};
inline constexpr const char* kLatestVersion = "1.1.0";
inline constexpr const char* kDefaultSocket = "/run/trellis/trellis.sock";

// Error codes: 1-99 are the spec's, 100+ are trellis's own.
enum Code : uint32_t {
  kOk = 0,
  kIncompatibleVersion = 1,
  kUnsupportedField = 2,
  kUnknownContainer = 3,
  kInvalidEnvironment = 4,
  kIoFailure = 5,
  kDecodeFailure = 6,
  kInvalidConfig = 7,
  kTryAgainLater = 11,
  kNotAvailable = 50,
  kLimitedConnectivity = 51,
  kInternal = 100,          // an unexpected failure in trellisd
  kPoolExhausted = 101,     // no free address
  kModuleFailure = 102,     // a module refused or failed the operation
  kDatapathFailure = 103,   // the kernel refused a change
  kNotConfigured = 104,     // the node config lacks what the request needs (e.g. ipam)
  kCheckFailed = 105,       // CHECK found the pod's state differs
};

struct Error {
  uint32_t code = kInternal;
  std::string msg;
  std::string details;
};

// The output of a failed command, in the request's version.
Json ErrorJson(const Error& e, std::string_view cni_version);

bool IsSupportedVersion(std::string_view v);
// Compares dotted versions: <0, 0, >0.
int CompareVersions(std::string_view a, std::string_view b);

struct Environment {
  std::string command, container_id, netns, ifname, args, path;
};
// Reads CNI_* variables through `getenv` and checks what `command` needs.
std::optional<Error> ReadEnvironment(const std::function<const char*(const char*)>& getenv,
                                     Environment* env);

struct Attachment {
  std::string container_id;
  std::string ifname;
  bool operator<(const Attachment& o) const {
    return container_id != o.container_id ? container_id < o.container_id : ifname < o.ifname;
  }
};

// The network config from stdin (a single plugin's config; for a conflist the
// runtime hands each plugin its own, with name and cniVersion injected).
struct NetConf {
  std::string cni_version;
  std::string name;
  std::string type;
  std::string socket = kDefaultSocket;
  uint32_t timeout_ms = 0;  // 0: the binary's default for the command
  Json raw;                 // the whole document
  Json prev_result;         // null when absent
  Json runtime_config = Json::object();
  Json args = Json::object();
  std::map<std::string, std::string> labels;  // args.cni.labels
  std::optional<std::vector<Attachment>> valid_attachments;  // GC
};
// Decode failures give kDecodeFailure, missing/ill-typed keys kInvalidConfig,
// an unsupported cniVersion kIncompatibleVersion.
std::optional<Error> ParseNetConf(std::string_view text, NetConf* out);

// CNI_ARGS: "K=V;K=V". Known keys: K8S_POD_NAMESPACE, K8S_POD_NAME,
// K8S_POD_UID, K8S_POD_INFRA_CONTAINER_ID, IgnoreUnknown. Other keys are an
// error unless IgnoreUnknown is 1/true.
struct PodArgs {
  std::string k8s_namespace, k8s_name, k8s_uid, infra_container_id;
  std::map<std::string, std::string> extra;
};
std::optional<Error> ParseCniArgs(std::string_view text, PodArgs* out);

// Converts a result held in 1.1.0 form into `version`'s form: up to 0.4.0
// every ips[] entry carries "version" ("4"/"6"); from 1.0.0 it does not.
Json ConvertResult(const Json& result_1_1_0, std::string_view version);

// The output of VERSION.
Json VersionJson(std::string_view requested_version);

// Host-side interface name for a pod attachment: "tr" + 12 hex digits of a
// hash of (container id, ifname). Stable across restarts, 14 characters.
std::string HostIfname(std::string_view container_id, std::string_view ifname);

}  // namespace trellis::cni

#endif  // TRELLIS_CORE_CNI_CNI_H_
