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

enum CtlExit { kCtlOk = 0, kCtlNegative = 1, kCtlUsage = 2, kCtlUnreachable = 3 };

int RunCtl(const CtlOptions& o, const std::vector<std::string>& args, std::ostream& out,
           std::ostream& err);
std::string DefaultCtlPluginDir();

}  // namespace trellis

#endif  // TRELLIS_CORE_CTL_H_
