// trellisctl's commands, kept out of main() so tests can drive them.
#ifndef TRELLIS_CORE_CTL_H_
#define TRELLIS_CORE_CTL_H_

#include <ostream>
#include <string>
#include <vector>

namespace trellis {

struct CtlOptions {
  std::string output = "text";
  std::string socket = "/run/trellis/trellis.sock";
  std::string plugin_dir;
  int timeout_ms = 10000;
  bool ready = false;
  std::string from, to, port;
};

// Exit codes scripts rely on:
//   0  success (health: live, and ready with --ready)
//   1  the answer is negative: invalid config, refused plugin, not live/ready,
//      a module operation failed
//   2  usage: unknown command, bad arguments (also when the daemon refuses an
//      argument, e.g. an unknown log level)
//   3  trellisd did not answer: socket missing, refused, or the call timed out
// With -o json, stdout always carries one JSON document, also on failure
// ({"error": {"code", "message"}}; `health` keeps its own shape).
enum CtlExit { kCtlOk = 0, kCtlNegative = 1, kCtlUsage = 2, kCtlUnreachable = 3 };

int RunCtl(const CtlOptions& o, const std::vector<std::string>& args, std::ostream& out,
           std::ostream& err);
std::string DefaultCtlPluginDir();

}  // namespace trellis

#endif  // TRELLIS_CORE_CTL_H_
