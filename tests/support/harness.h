// Test harness: processes, temp dirs, network namespaces, a trellisd under
// test and the `trellis` CNI binary. Shared by every test tier.
#ifndef TRELLIS_TESTS_SUPPORT_HARNESS_H_
#define TRELLIS_TESTS_SUPPORT_HARNESS_H_

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace trellis::test {

using Json = nlohmann::json;
namespace fs = std::filesystem;

// Locations baked in at build time.
fs::path BinDir();     // build/bin
fs::path PluginBuildDir();  // build/lib/trellis/plugins
fs::path SourceDir();
fs::path BuildDir();

struct RunResult {
  int exit_code = -1;  // -signal when killed by a signal
  std::string out, err;
  Json json() const { return Json::parse(out, nullptr, false); }
};

// Runs argv[0] with `env` added to (or replacing entries of) the environment,
// feeding `input` on stdin. Waits at most `timeout`.
RunResult Run(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env = {},
              const std::string& input = "", std::chrono::milliseconds timeout = std::chrono::seconds(60));
// Runs a shell command line (sh -c).
RunResult Sh(const std::string& command, std::chrono::milliseconds timeout = std::chrono::seconds(60));

// Polls `pred` every few milliseconds until it is true or `timeout` passes.
bool WaitFor(const std::function<bool()>& pred,
             std::chrono::milliseconds timeout = std::chrono::seconds(10));

class TempDir {
 public:
  TempDir();  // mkdtemp under /tmp: mode 0700, owned by root
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& p) const { return path_ / p; }

 private:
  fs::path path_;
};

// A named network namespace (ip netns add), deleted on destruction. Names are
// unique per process so tests can run in parallel.
class Netns {
 public:
  explicit Netns(const std::string& hint = "t");
  ~Netns();
  Netns(const Netns&) = delete;
  Netns& operator=(const Netns&) = delete;
  const std::string& name() const { return name_; }
  std::string path() const { return "/var/run/netns/" + name_; }
  // Runs a command inside the namespace (ip netns exec).
  RunResult Exec(const std::string& command,
                 std::chrono::milliseconds timeout = std::chrono::seconds(30)) const;

 private:
  std::string name_;
};

// Copies the built plugins (and any extra .so files) into a fresh root-owned
// 0700 directory: the trust check then holds wherever the checkout lives.
class PluginDir {
 public:
  explicit PluginDir(const std::vector<fs::path>& extra = {});
  const fs::path& path() const { return dir_.path(); }
  void Add(const fs::path& so, const std::string& name = "");

 private:
  TempDir dir_;
};

struct DaemonOptions {
  std::string config_yaml;       // written to <tmp>/trellis.yaml unless config_path is set
  fs::path config_path;          // a file or a ConfigMap-style directory
  fs::path plugin_dir;           // default: a staged copy of the built plugins
  std::string metrics_addr;      // "" : none; "auto": a free loopback port
  std::vector<std::string> extra_args;
  bool wait_ready = true;        // false: Start() returns once the API answers
  bool wait = true;              // false: Start() returns once the process is spawned
  // By default the daemon runs in a fresh "node" network namespace of its
  // own: its host routes, host veth ends and sysctls never touch the real
  // host or another test. host_netns runs it in the caller's namespace.
  bool host_netns = false;
  std::map<std::string, std::string> env;
};

// A trellisd under test, in its own temp state dir and socket.
class Daemon {
 public:
  explicit Daemon(DaemonOptions opts);
  ~Daemon();  // SIGTERM, then SIGKILL after a grace period

  // Starts and waits until the API answers and the daemon reports ready.
  // Returns false (with the log in `why`) when it exits or times out.
  bool Start(std::string* why = nullptr);
  void Stop();   // SIGTERM and wait
  void Kill();   // SIGKILL and wait
  bool Running() const;
  pid_t pid() const { return pid_; }

  const fs::path& socket() const { return socket_; }
  // The node namespace the daemon runs in (nullptr with host_netns).
  const Netns* node() const { return node_ ? &*node_ : nullptr; }
  // Runs a shell command in the daemon's network namespace.
  RunResult NodeExec(const std::string& command) const;
  const fs::path& state_dir() const { return state_dir_; }
  const fs::path& dir() const { return tmp_.path(); }
  int metrics_port() const { return metrics_port_; }
  std::string Log() const;

  // trellisctl against this daemon.
  RunResult Ctl(const std::vector<std::string>& args) const;
  // The network config for this daemon's socket, merged with `extra`.
  Json NetConf(const std::string& version = "1.1.0", const Json& extra = Json::object()) const;

 private:
  DaemonOptions opts_;
  TempDir tmp_;
  std::optional<Netns> node_;
  std::optional<PluginDir> staged_;
  fs::path socket_, state_dir_, config_, log_;
  int metrics_port_ = 0;
  pid_t pid_ = -1;
};

struct CniCall {
  std::string command = "ADD";
  std::string container_id;
  std::string netns;
  std::string ifname = "eth0";
  std::string args;  // CNI_ARGS
  Json config;
  std::map<std::string, std::string> env;  // overrides, "" value removes
};
// Runs the built `trellis` binary (or `binary`).
RunResult Cni(const CniCall& call, const fs::path& binary = {});

// Reads /proc/<pid>/status VmRSS in KiB.
long RssKiB(pid_t pid);
// A free TCP port on 127.0.0.1.
int FreePort();
// GET http://127.0.0.1:port/path, from inside network namespace `netns`
// (a name under /var/run/netns) when given; returns {status, body}.
std::pair<int, std::string> HttpGet(int port, const std::string& path,
                                    const std::string& netns = "");

}  // namespace trellis::test

#endif  // TRELLIS_TESTS_SUPPORT_HARNESS_H_
