#include "ecs_emulator.h"

#include <fcntl.h>
#include <httplib.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>

extern char** environ;

namespace trellis::test {

namespace {

constexpr auto kReadyTimeout = std::chrono::seconds(30);

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

Json DefaultEcsScenario(const std::vector<EcsNode>& nodes) {
  Json instances = Json::array();
  for (const auto& n : nodes) {
    instances.push_back({{"id", n.id},
                         {"type", n.type},
                         {"zone", n.zone},
                         {"vswitch", n.vswitch},
                         {"netns", n.netns},
                         {"ecs_port", n.ecs_port},
                         {"metadata_port", n.metadata_port}});
  }
  return {
      {"region", kEcsRegion},
      {"access_keys", {{kEcsAccessKeyId, kEcsAccessKeySecret}}},
      {"ram_role",
       {{"name", kEcsRamRole},
        {"access_key_id", "STS.test"},
        {"access_key_secret", "sts-secret"},
        {"security_token", "sts-token"},
        {"expiry_seconds", 3600}}},
      {"vpc", {{"id", "vpc-test"}, {"cidr", "192.168.0.0/16"}}},
      {"vswitches",
       {{{"id", "vsw-a"}, {"zone", "cn-hangzhou-a"}, {"cidr", "192.168.10.0/24"}},
        {{"id", "vsw-b"}, {"zone", "cn-hangzhou-a"}, {"cidr", "192.168.20.0/28"}}}},
      {"security_groups", {{{"id", "sg-test"}, {"rules", Json::array()}}}},
      {"instance_types", {{"ecs.g6.large", {{"eni_quota", 3}, {"ipv4_per_eni", 10}}}}},
      {"instances", instances},
  };
}

EcsEmulator::EcsEmulator(Json scenario) : scenario_(std::move(scenario)) {}

EcsEmulator::~EcsEmulator() { Stop(); }

std::string EcsEmulator::vpc_netns() const {
  return pid_ > 0 ? "ecsvpc-" + std::to_string(pid_) : "";
}

std::string EcsEmulator::Log() const {
  return ReadFile(dir_ / "stderr.txt") + ReadFile(dir_ / "emulator.log");
}

bool EcsEmulator::Start(std::string* why) {
  Stop();  // a second Start() restarts
  // The admin port is picked free, then bound by the emulator: another
  // process may take it in between. Try again with another one then.
  for (int attempt = 0;; ++attempt) {
    std::string reason;
    if (StartOnce(&reason)) return true;
    if (attempt == 2 || reason.find("Address already in use") == std::string::npos) {
      if (why) *why = reason;
      return false;
    }
  }
}

bool EcsEmulator::StartOnce(std::string* why) {
  std::ofstream(dir_ / "scenario.json") << scenario_.dump(1);
  admin_port_ = FreePort();
  std::vector<std::string> argv = {
      "python3",
      (SourceDir() / "tests/fixtures/ecs_emulator/emulator.py").string(),
      "--scenario",
      (dir_ / "scenario.json").string(),
      "--admin-port",
      std::to_string(admin_port_),
      "--log",
      (dir_ / "emulator.log").string(),
      "--die-with-parent"};
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) {
    if (why) *why = "pipe2 failed";
    return false;
  }
  int err = open((dir_ / "stderr.txt").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, devnull, 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err, 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, def;
  sigemptyset(&none);
  sigemptyset(&def);
  sigaddset(&def, SIGPIPE);
  sigaddset(&def, SIGTERM);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &def);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::vector<char*> a;
  for (auto& s : argv) a.push_back(s.data());
  a.push_back(nullptr);
  if (posix_spawnp(&pid_, a[0], &fa, &attr, a.data(), environ) != 0) pid_ = -1;
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  close(out[1]);
  close(err);
  close(devnull);
  if (pid_ < 0) {
    close(out[0]);
    if (why) *why = "cannot spawn python3";
    return false;
  }
  // READY on stdout, or EOF when it exits (the reason is on stderr).
  std::string seen;
  bool ready = false;
  auto deadline = std::chrono::steady_clock::now() + kReadyTimeout;
  while (!ready) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p = {out[0], POLLIN, 0};
    int n = poll(&p, 1, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    char buf[256];
    ssize_t k = read(out[0], buf, sizeof buf);
    if (k <= 0) break;
    seen.append(buf, k);
    ready = seen.find("READY\n") != std::string::npos;
  }
  close(out[0]);
  if (!ready) {
    if (why) *why = "the ECS emulator did not become ready; output:\n" + seen + Log();
    Stop();
    return false;
  }
  return true;
}

bool EcsEmulator::Running() const {
  if (pid_ <= 0 || reaped_) return false;
  int status;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) reaped_ = true;
  return r == 0;
}

void EcsEmulator::Stop() {
  if (pid_ <= 0) return;
  pid_t pid = pid_;
  bool clean = true;
  if (Running()) {
    kill(pid, SIGTERM);
    if (!WaitFor([&] { return !Running(); }, std::chrono::seconds(15))) {
      kill(pid, SIGKILL);
      int status;
      waitpid(pid, &status, 0);
      clean = false;
    }
  }
  pid_ = -1;
  reaped_ = false;
  // The emulator removes its namespace on SIGTERM; after a crash or SIGKILL
  // it is left behind. Deleting each veth first removes the node-side peers
  // (eth0, eni*) synchronously; a deleted namespace takes its links along
  // only later, from a kernel work queue.
  std::string ns = "ecsvpc-" + std::to_string(pid);
  if (!clean || fs::exists("/var/run/netns/" + ns)) {
    Sh("for l in $(ip -n " + ns +
       " -o link show type veth | cut -d: -f2 | cut -d@ -f1); do ip -n " + ns +
       " link del $l; done; ip netns delete " + ns + " 2>/dev/null");
  }
}

AdminReply EcsEmulator::Admin(const std::string& method, const std::string& path,
                              const Json& body) const {
  httplib::Client cli("127.0.0.1", admin_port_);
  cli.set_connection_timeout(2);
  cli.set_read_timeout(10);
  std::string data = body.is_null() ? "" : body.dump();
  auto res = method == "GET"    ? cli.Get(path)
             : method == "POST" ? cli.Post(path, data, "application/json")
                                : cli.Delete(path, data, "application/json");
  if (!res) {
    return {0, {{"error", "admin API unreachable: " + httplib::to_string(res.error())}}};
  }
  Json j = Json::parse(res->body, nullptr, false);
  if (j.is_discarded()) j = {{"error", "not JSON: " + res->body}};
  return {res->status, j};
}

Json EcsEmulator::State() const {
  AdminReply r = Admin("GET", "/state");
  return r.ok() ? r.body
                : Json{{"error", r.body.value("error", "HTTP " + std::to_string(r.status))}};
}

AdminReply EcsEmulator::AddFault(const Json& fault) { return Admin("POST", "/faults", fault); }

bool EcsEmulator::ClearFaults() { return Admin("DELETE", "/faults").ok(); }

bool EcsEmulator::SetConsistencyDelay(int ms) {
  return Admin("POST", "/consistency", {{"delay_ms", ms}}).ok();
}

bool EcsEmulator::SetRateLimit(const std::string& action, double per_second, int burst) {
  return Admin("POST", "/rate_limit",
               {{"action", action}, {"per_second", per_second}, {"burst", burst}})
      .ok();
}

bool EcsEmulator::SetAttachDelay(int ms) {
  return Admin("POST", "/attach_delay", {{"ms", ms}}).ok();
}

AdminReply EcsEmulator::AddEni(const Json& spec) { return Admin("POST", "/enis", spec); }

AdminReply EcsEmulator::AddRule(const std::string& security_group, const Json& rule) {
  return Admin("POST", "/security_groups/" + security_group + "/rules", rule);
}

bool EcsEmulator::ResetCounts() { return Admin("POST", "/reset_counts", Json::object()).ok(); }

}  // namespace trellis::test
