// trellisctl: inspect and steer trellisd; validate configs and plugins offline.
//
// Exit codes (core/ctl.h): 0 success; 1 the answer is negative (invalid
// config, refused plugin, not live/ready, operation failed); 2 usage error
// (also an argument the daemon refuses); 3 trellisd did not answer.
#include <boost/program_options.hpp>
#include <iostream>

#include "core/ctl.h"

namespace po = boost::program_options;

int main(int argc, char** argv) {
  trellis::CtlOptions o;
  std::vector<std::string> args;
  po::options_description desc(
      "trellisctl [options] COMMAND [ARGS]\n\n"
      "Commands:\n"
      "  status                      daemon status\n"
      "  modules                     modules: state, plugin, version, health\n"
      "  pods                        pods: addresses, interfaces, modules applied\n"
      "  addresses                   addresses ipam holds, and for whom\n"
      "  health [--ready]            exit 0 when trellisd is live (and ready); for exec probes\n"
      "  log-level LEVEL             change the daemon's log level now\n"
      "  pool                        ENI pool: ENIs, IPs, owners, quota, errors\n"
      "  policy explain --from NS/POD --to NS/POD --port PORT/PROTO\n"
      "  secgroup diff | sync        security-group sync: what would change / sync now\n"
      "  plugin inspect FILE         what a plugin is, or why it would be refused (offline)\n"
      "  config validate PATH        check a node config and its modules (offline)\n\n"
      "Exit codes: 0 ok; 1 negative answer (not ready, invalid, failed); 2 usage;\n"
      "3 trellisd did not answer. With -o json stdout always holds one JSON document.\n\n"
      "Options");
  desc.add_options()
      ("help,h", "show this help")
      ("output,o", po::value(&o.output)->default_value("text"), "text or json")
      ("socket", po::value(&o.socket)->default_value(o.socket), "trellisd API socket")
      ("plugin-dir", po::value(&o.plugin_dir), "plugin directory for config validate")
      ("timeout", po::value(&o.timeout_ms)->default_value(o.timeout_ms), "call timeout, ms")
      ("ready", po::bool_switch(&o.ready), "health: also require readiness")
      ("from", po::value(&o.from), "policy explain: source NS/POD or IP")
      ("to", po::value(&o.to), "policy explain: destination NS/POD or IP")
      ("port", po::value(&o.port), "policy explain: PORT/PROTO, e.g. 80/TCP")
      ("args", po::value(&args), "command and arguments");
  po::positional_options_description pos;
  pos.add("args", -1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(desc).positional(pos).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "trellisctl: " << e.what() << "\n";
    return 2;
  }
  if (vm.count("help") || args.empty()) {
    std::cout << desc << "\n";
    return args.empty() && !vm.count("help") ? 2 : 0;
  }
  if (o.output != "text" && o.output != "json") {
    std::cerr << "trellisctl: -o must be text or json\n";
    return 2;
  }
  if (o.plugin_dir.empty()) o.plugin_dir = trellis::DefaultCtlPluginDir();
  return trellis::RunCtl(o, args, std::cout, std::cerr);
}
