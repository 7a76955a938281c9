// trellis: the CNI binary. Everything it does is trellis::cni::RunPlugin.
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "core/cni/plugin.h"

int main() {
  int rc = trellis::cni::RunPlugin(std::cin, std::cout);
  std::cout.flush();
  std::fflush(stdout);
  // Everything the process holds goes with it; the daemon sees the socket
  // close. Only stdout carries the result, and it is flushed.
  std::_Exit(rc);
}
