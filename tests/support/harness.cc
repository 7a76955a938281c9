#include "harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <sstream>
#include <mutex>
#include <thread>

extern char** environ;

namespace trellis::test {

fs::path BinDir() { return TRELLIS_TEST_BIN_DIR; }
fs::path PluginBuildDir() { return TRELLIS_TEST_PLUGIN_DIR; }
fs::path SourceDir() { return TRELLIS_TEST_SOURCE_DIR; }
fs::path BuildDir() { return TRELLIS_TEST_BUILD_DIR; }

namespace {

std::vector<std::string> MergeEnv(const std::map<std::string, std::string>& extra) {
  std::map<std::string, std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string kv = *e;
    auto eq = kv.find('=');
    if (eq != std::string::npos) env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  for (const auto& [k, v] : extra) {
    if (v.empty()) env.erase(k);
    else env[k] = v;
  }
  std::vector<std::string> out;
  for (const auto& [k, v] : env) out.push_back(k + "=" + v);
  return out;
}

pid_t Spawn(const std::vector<std::string>& argv, const std::vector<std::string>& env, int in_fd,
            int out_fd, int err_fd) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (in_fd >= 0) posix_spawn_file_actions_adddup2(&fa, in_fd, 0);
  if (out_fd >= 0) posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
  if (err_fd >= 0) posix_spawn_file_actions_adddup2(&fa, err_fd, 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  sigset_t def;
  sigemptyset(&def);
  sigaddset(&def, SIGPIPE);
  posix_spawnattr_setsigdefault(&attr, &def);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::vector<char*> a, e;
  for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
  a.push_back(nullptr);
  for (const auto& s : env) e.push_back(const_cast<char*>(s.c_str()));
  e.push_back(nullptr);
  pid_t pid = -1;
  if (posix_spawnp(&pid, a[0], &fa, &attr, a.data(), e.data()) != 0) pid = -1;
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  return pid;
}

int WaitExit(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return -1;
}

}  // namespace

RunResult Run(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
              const std::string& input, std::chrono::milliseconds timeout) {
  RunResult r;
  // A child that exits without reading its input must fail the writer's
  // write (EPIPE), not kill the test or benchmark with SIGPIPE.
  static std::once_flag ignore_sigpipe;
  std::call_once(ignore_sigpipe, [] { signal(SIGPIPE, SIG_IGN); });
  int in[2], out[2], err[2];
  if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)) return r;
  pid_t pid = Spawn(argv, MergeEnv(env), in[0], out[1], err[1]);
  close(in[0]);
  close(out[1]);
  close(err[1]);
  if (pid < 0) {
    close(in[1]);
    close(out[0]);
    close(err[0]);
    r.err = "cannot start " + argv[0];
    return r;
  }
  std::thread writer([fd = in[1], input] {
    size_t off = 0;
    while (off < input.size()) {
      ssize_t n = write(fd, input.data() + off, input.size() - off);
      if (n <= 0) break;
      off += n;
    }
    close(fd);
  });
  auto deadline = std::chrono::steady_clock::now() + timeout;
  pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  int open_fds = 2;
  char buf[65536];
  bool timed_out = false;
  while (open_fds > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    int n = poll(fds, 2, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd >= 0 && (fds[i].revents & (POLLIN | POLLHUP | POLLERR))) {
        ssize_t k = read(fds[i].fd, buf, sizeof buf);
        if (k <= 0) {
          close(fds[i].fd);
          fds[i].fd = -1;
          open_fds--;
        } else {
          (i == 0 ? r.out : r.err).append(buf, k);
        }
      }
    }
  }
  if (timed_out) kill(pid, SIGKILL);
  for (auto& f : fds) {
    if (f.fd >= 0) close(f.fd);
  }
  writer.join();
  r.exit_code = WaitExit(pid);
  if (timed_out) r.err += "\n[harness: timed out]";
  return r;
}

RunResult Sh(const std::string& command, std::chrono::milliseconds timeout) {
  return Run({"/bin/sh", "-c", command}, {}, "", timeout);
}

bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

TempDir::TempDir() {
  char tmpl[] = "/tmp/trellis-test.XXXXXX";
  char* p = mkdtemp(tmpl);
  path_ = p != nullptr ? p : "/tmp/trellis-test.failed";
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

namespace {
std::atomic<int> g_netns_counter{0};
}

Netns::Netns(const std::string& hint) {
  name_ = hint.substr(0, 6) + "-" + std::to_string(getpid()) + "-" + std::to_string(g_netns_counter++);
  Run({"ip", "netns", "add", name_});
  Run({"ip", "-n", name_, "link", "set", "lo", "up"});
}

Netns::~Netns() { Run({"ip", "netns", "delete", name_}); }

RunResult Netns::Exec(const std::string& command, std::chrono::milliseconds timeout) const {
  return Run({"ip", "netns", "exec", name_, "/bin/sh", "-c", command}, {}, "", timeout);
}

PluginDir::PluginDir(const std::vector<fs::path>& extra) {
  for (const auto& e : fs::directory_iterator(PluginBuildDir())) {
    if (e.path().extension() == ".so") Add(e.path());
  }
  for (const auto& e : extra) Add(e);
}

void PluginDir::Add(const fs::path& so, const std::string& name) {
  fs::path dst = dir_.path() / (name.empty() ? so.filename().string() : name);
  fs::copy_file(so, dst, fs::copy_options::overwrite_existing);
  chmod(dst.c_str(), 0644);
}

Daemon::Daemon(DaemonOptions opts) : opts_(std::move(opts)) {
  socket_ = tmp_.path() / "trellis.sock";
  state_dir_ = tmp_.path() / "state";
  log_ = tmp_.path() / "trellisd.log";
  if (!opts_.config_path.empty()) {
    config_ = opts_.config_path;
  } else if (!opts_.config_yaml.empty()) {
    config_ = tmp_.path() / "trellis.yaml";
    std::ofstream(config_) << opts_.config_yaml;
  }
  if (opts_.plugin_dir.empty()) {
    staged_.emplace();
    opts_.plugin_dir = staged_->path();
  }
  if (!opts_.host_netns) node_.emplace("node");
  if (opts_.metrics_addr == "auto") {
    metrics_port_ = node_ ? 9190 : FreePort();
    opts_.metrics_addr = "127.0.0.1:" + std::to_string(metrics_port_);
  }
}

Daemon::~Daemon() { Stop(); }

bool Daemon::Start(std::string* why) {
  std::vector<std::string> argv;
  if (node_) argv = {"ip", "netns", "exec", node_->name()};
  const fs::path bin = opts_.bin_dir.empty() ? BinDir() : opts_.bin_dir;
  std::vector<std::string> daemon = {(bin / "trellisd").string(), "--socket", socket_.string(),
                                   "--state-dir", state_dir_.string(), "--plugin-dir",
                                   opts_.plugin_dir.string(), "--metrics-addr", opts_.metrics_addr};
  argv.insert(argv.end(), daemon.begin(), daemon.end());
  if (!config_.empty()) {
    argv.push_back("--config");
    argv.push_back(config_.string());
  }
  for (const auto& a : opts_.extra_args) argv.push_back(a);
  int logfd = open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  pid_ = Spawn(argv, MergeEnv(opts_.env), devnull, logfd, logfd);
  close(logfd);
  close(devnull);
  if (pid_ < 0) {
    if (why) *why = "cannot spawn trellisd";
    return false;
  }
  if (!opts_.wait) return true;
  bool ready = WaitFor(
      [&] {
        if (!Running()) return true;
        auto r = opts_.wait_ready ? Ctl({"health", "--ready"}) : Ctl({"health"});
        return r.exit_code == 0;
      },
      std::chrono::seconds(30));
  if (!ready || !Running()) {
    if (why) *why = "trellisd did not become ready; log:\n" + Log();
    return false;
  }
  return true;
}

bool Daemon::Running() const {
  if (pid_ <= 0) return false;
  int status;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    const_cast<Daemon*>(this)->pid_ = -1;
    return false;
  }
  return r == 0;
}

void Daemon::Stop() {
  if (pid_ <= 0) return;
  kill(pid_, SIGTERM);
  if (!WaitFor([&] { return !Running(); }, std::chrono::seconds(10))) Kill();
  pid_ = -1;
}

void Daemon::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  WaitExit(pid_);
  pid_ = -1;
}

RunResult Daemon::NodeExec(const std::string& command) const {
  if (node_) return node_->Exec(command);
  return Sh(command);
}

std::string Daemon::Log() const {
  std::ifstream in(log_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

RunResult Daemon::Ctl(const std::vector<std::string>& args) const {
  const fs::path bin = opts_.bin_dir.empty() ? BinDir() : opts_.bin_dir;
  std::vector<std::string> argv = {(bin / "trellisctl").string(), "--socket", socket_.string(),
                                   "--plugin-dir", opts_.plugin_dir.string(), "--timeout", "5000"};
  argv.insert(argv.end(), args.begin(), args.end());
  return Run(argv);
}

Json Daemon::NetConf(const std::string& version, const Json& extra) const {
  Json j = {{"cniVersion", version}, {"name", "trellis-test"}, {"type", "trellis"},
            {"socket", socket_.string()}};
  j.merge_patch(extra);
  return j;
}

RunResult Cni(const CniCall& c, const fs::path& binary) {
  std::map<std::string, std::string> env = {{"CNI_COMMAND", c.command},
                                            {"CNI_CONTAINERID", c.container_id},
                                            {"CNI_NETNS", c.netns},
                                            {"CNI_IFNAME", c.ifname},
                                            {"CNI_ARGS", c.args},
                                            {"CNI_PATH", "/usr/lib/cni"}};
  for (const auto& [k, v] : c.env) env[k] = v;
  fs::path bin = binary.empty() ? BinDir() / "trellis" : binary;
  return Run({bin.string()}, env, c.config.is_null() ? "" : c.config.dump());
}

long RssKiB(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  int port = ntohs(a.sin_port);
  close(fd);
  return port;
}

std::pair<int, std::string> HttpGet(int port, const std::string& path, const std::string& netns) {
  std::pair<int, std::string> out{0, ""};
  // The client's socket is created on a thread that entered the namespace.
  std::thread t([&] {
    if (!netns.empty()) {
      int fd = open(("/var/run/netns/" + netns).c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) return;
      close(fd);
    }
    httplib::Client cli("127.0.0.1", port);
    cli.set_connection_timeout(2);
    cli.set_read_timeout(5);
    auto res = cli.Get(path.c_str());
    if (res) out = {res->status, res->body};
  });
  t.join();
  return out;
}

}  // namespace trellis::test
