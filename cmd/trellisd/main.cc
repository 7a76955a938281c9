// trellisd: the trellis host daemon.
#include <malloc.h>
#include <signal.h>

#include <boost/program_options.hpp>
#include <iostream>

#include "core/daemon.h"

namespace po = boost::program_options;

int main(int argc, char** argv) {
  // glibc gives each thread that contends for the heap an arena of its own,
  // up to 8 per core; gRPC serves concurrent CNI calls on many threads, and
  // with 500 pods the arenas' free space doubled the daemon's RSS. Two
  // arenas keep that bounded; allocation is not on a hot path here.
  mallopt(M_ARENA_MAX, 2);
  trellis::DaemonOptions o;
  po::options_description desc("trellisd: the trellis node networking daemon\n\nOptions");
  desc.add_options()
      ("help,h", "show this help")
      ("config", po::value(&o.config_path),
       "node config: a YAML file, or a mounted ConfigMap directory (key trellis.yaml and/or "
       "Terway's keys); watched and applied live. Default: the embedded default config")
      ("socket", po::value(&o.socket_path)->default_value(o.socket_path), "API unix socket (0600)")
      ("state-dir", po::value(&o.state_dir)->default_value(o.state_dir), "state directory")
      ("plugin-dir", po::value(&o.plugin_dir)->default_value(trellis::Daemon::DefaultPluginDir()),
       "plugin directory (root-owned, not group/other-writable)")
      ("metrics-addr", po::value(&o.metrics_addr)->default_value(":9190"),
       "metrics and health HTTP endpoint, host:port; empty to disable")
      ("log-level", po::value(&o.log_level), "trace, debug, info, warn, error (overrides the config)");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "trellisd: " << e.what() << "\n" << desc << "\n";
    return 2;
  }
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  // Signals are taken synchronously by this thread; every other thread
  // inherits the blocked mask.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);

  trellis::Daemon daemon(o);
  if (auto s = daemon.Start(); !s.ok()) {
    std::cerr << "trellisd: " << s.message() << "\n";
    return 1;
  }
  int sig = 0;
  sigwait(&sigs, &sig);
  daemon.Stop();
  return 0;
}
