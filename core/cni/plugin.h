// The CNI plugin invocation: reads the network config from `in` and the CNI_*
// environment, makes one gRPC call to trellisd and writes the result (or the
// CNI error JSON) to `out` in the requested CNI version. No plugin code.
#ifndef TRELLIS_CORE_CNI_PLUGIN_H_
#define TRELLIS_CORE_CNI_PLUGIN_H_

#include <istream>
#include <ostream>

namespace trellis::cni {

// Returns the process exit code (0 or 1).
int RunPlugin(std::istream& in, std::ostream& out);

}  // namespace trellis::cni

#endif  // TRELLIS_CORE_CNI_PLUGIN_H_
