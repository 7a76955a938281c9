// Runs a CNI network configuration list the way libcni does: each plugin of
// the list in order on ADD (its config with `name`, `cniVersion` and the
// previous plugin's result as `prevResult` injected, `runtimeConfig` built from
// the plugin's `capabilities` and the runtime's capability arguments), in
// reverse order on DEL, with the cached ADD result as `prevResult` on CHECK
// and DEL. Used by the chaining tests and by the benchmarks.
#ifndef TRELLIS_TESTS_SUPPORT_CONFLIST_H_
#define TRELLIS_TESTS_SUPPORT_CONFLIST_H_

#include <chrono>
#include <filesystem>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace trellis::test {

struct Attachment {
  std::string container_id;
  std::string netns;
  std::string ifname = "eth0";
  std::string cni_args;                     // CNI_ARGS
  nlohmann::json capability_args = nlohmann::json::object();  // e.g. {"bandwidth": {...}}
};

struct ChainResult {
  int code = 0;            // 0, or the CNI error code of the failing plugin
  std::string plugin;      // the failing plugin's type
  std::string message;     // its error message or stderr
  nlohmann::json result;   // the chain's final result (ADD)
  std::chrono::microseconds elapsed{0};
};

class ConflistRunner {
 public:
  // `plugin_dirs`: where plugin binaries are looked up by type (CNI_PATH).
  ConflistRunner(nlohmann::json conflist, std::vector<std::filesystem::path> plugin_dirs);
  // Runs every plugin inside network namespace `netns` (the node's: where the
  // runtime and trellisd live), as a runtime on that node would.
  void RunIn(const std::string& netns) { netns_ = netns; }

  ChainResult Add(const Attachment& a);
  // Needs a cached ADD result. Plugins whose type is in `skip` are left out
  // (to step around a known bug of a reference plugin).
  ChainResult Check(const Attachment& a, const std::vector<std::string>& skip = {});
  ChainResult Del(const Attachment& a);
  // GC with the given valid attachments (CNI 1.1.0 plugins only).
  ChainResult Gc(const std::vector<Attachment>& valid);
  const nlohmann::json& conflist() const { return conflist_; }

 private:
  ChainResult Invoke(const std::string& command, const nlohmann::json& plugin,
                     const Attachment& a, const nlohmann::json& prev);
  nlohmann::json PluginConfig(const nlohmann::json& plugin, const Attachment& a,
                              const nlohmann::json& prev) const;

  nlohmann::json conflist_;
  std::string cni_path_;
  std::string netns_;
  // container/ifname -> ADD result. Callers run ADD/DEL from several threads.
  std::mutex cache_mu_;
  std::map<std::string, nlohmann::json> cache_;
};

}  // namespace trellis::test

#endif  // TRELLIS_TESTS_SUPPORT_CONFLIST_H_
