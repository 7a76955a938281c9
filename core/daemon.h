// trellisd: wires the store, the module registry, the pod pipeline, the API
// and the HTTP endpoint, and follows the node config live.
#ifndef TRELLIS_CORE_DAEMON_H_
#define TRELLIS_CORE_DAEMON_H_

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include "core/config.h"
#include "core/status.h"

namespace trellis {

struct DaemonOptions {
  std::string config_path;  // file or ConfigMap dir; empty: the embedded default
  std::string socket_path = "/run/trellis/trellis.sock";
  std::string state_dir = "/var/lib/trellis";
  std::string plugin_dir;
  std::string metrics_addr;  // empty: no HTTP endpoint
  std::string log_level;     // empty: the config's
};

class Daemon {
 public:
  explicit Daemon(DaemonOptions options);
  ~Daemon();

  // Starts everything; returns once the daemon is ready (or failed to start).
  Status Start();
  void Stop();

  // The plugin directory next to the executable: <exe>/../lib/trellis/plugins.
  static std::string DefaultPluginDir();

  struct Impl;  // defined in daemon.cc

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace trellis

#endif  // TRELLIS_CORE_DAEMON_H_
