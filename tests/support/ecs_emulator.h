// The ECS emulator (tests/fixtures/ecs_emulator/emulator.py) as a gtest
// fixture: writes a scenario, starts the emulator, waits for READY, drives
// its admin API and stops it. See tests/fixtures/ecs_emulator/README.md for
// the protocol it speaks and the admin API.
#ifndef TRELLIS_TESTS_SUPPORT_ECS_EMULATOR_H_
#define TRELLIS_TESTS_SUPPORT_ECS_EMULATOR_H_

#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

#include "harness.h"

namespace trellis::test {

// One ECS instance ("node") of a scenario. Its network namespace must exist
// before the emulator starts (a Netns, or a Daemon's node()); the emulator
// puts the primary ENI there as eth0 and listens on its loopback.
struct EcsNode {
  std::string id = "i-node1";
  std::string netns;
  std::string vswitch = "vsw-a";
  std::string type = "ecs.g6.large";
  std::string zone = "cn-hangzhou-a";
  int ecs_port = 18080;
  int metadata_port = 18081;
};

// Credentials and names of DefaultEcsScenario().
inline constexpr const char* kEcsRegion = "cn-hangzhou";
inline constexpr const char* kEcsAccessKeyId = "LTAI-test-key";
inline constexpr const char* kEcsAccessKeySecret = "test-secret";
inline constexpr const char* kEcsRamRole = "trellis-node";

// The contract's example scenario with `nodes` as its instances: VPC
// 192.168.0.0/16, vsw-a 192.168.10.0/24 and vsw-b 192.168.20.0/28 (12 free
// addresses) in cn-hangzhou-a, security group sg-test, instance type
// ecs.g6.large (3 ENIs, 10 IPv4 per ENI), key LTAI-test-key/test-secret and
// RAM role trellis-node (STS.test/sts-secret/sts-token, 3600 s).
Json DefaultEcsScenario(const std::vector<EcsNode>& nodes);

struct AdminReply {
  int status = 0;
  Json body;
  bool ok() const { return status == 200; }
};

class EcsEmulator {
 public:
  explicit EcsEmulator(Json scenario);
  ~EcsEmulator();  // Stop()
  EcsEmulator(const EcsEmulator&) = delete;
  EcsEmulator& operator=(const EcsEmulator&) = delete;

  // Starts the emulator and waits until it prints READY. Returns false,
  // with its output and log in `why`, when it exits or times out.
  bool Start(std::string* why = nullptr);
  // SIGTERM and wait: the emulator removes its namespace and links. If it
  // does not exit in time (or died earlier): SIGKILL, then the VPC namespace
  // and every link it put into the nodes are removed here. The emulator also
  // gets SIGTERM when the thread that called Start() exits (PDEATHSIG), so a
  // crashed test leaves nothing behind: call Start() from the thread that
  // owns the fixture.
  void Stop();
  bool Running() const;
  pid_t pid() const { return pid_; }
  int admin_port() const { return admin_port_; }
  // The VPC namespace: "ecsvpc-<pid>".
  std::string vpc_netns() const;
  const Json& scenario() const { return scenario_; }
  std::string Log() const;

  // Admin API: the reply's HTTP status and JSON body ({"error": "..."} when
  // the status is not 200; status 0 when the API is unreachable).
  AdminReply Admin(const std::string& method, const std::string& path,
                   const Json& body = Json()) const;
  Json State() const;  // GET /state; {"error": ...} when unreachable
  // {"action": "CreateNetworkInterface"|"*"|"metadata", "error": "Throttling.User",
  //  "http_status": 400, "count": N} or {"action": ..., "latency_ms": N, "count": N};
  // count -1 = until cleared; "phase": "after" runs the action, then fails.
  AdminReply AddFault(const Json& fault);
  bool ClearFaults();
  bool SetConsistencyDelay(int ms);  // Describe* lag behind writes by `ms`
  bool SetAttachDelay(int ms);       // Attaching -> InUse, Detaching -> Available
  // ECS flow control: calls of `action` ("*": all together) beyond a token
  // bucket of `per_second` and `burst` get Throttling.User; 0 removes it.
  bool SetRateLimit(const std::string& action, double per_second, int burst);
  // {"vswitch": "vsw-a", "tags": {...}, "security_groups": [...],
  //  "secondary_ip_count": N, "instance": "i-node1" (attach at once)}.
  AdminReply AddEni(const Json& spec);
  // An out-of-band rule, with ECS parameter names plus "Direction".
  AdminReply AddRule(const std::string& security_group, const Json& rule);
  bool ResetCounts();

 private:
  bool StartOnce(std::string* why);

  Json scenario_;
  TempDir dir_;
  int admin_port_ = 0;
  pid_t pid_ = -1;
  mutable bool reaped_ = false;  // pid_ exited and was waited for
};

}  // namespace trellis::test

#endif  // TRELLIS_TESTS_SUPPORT_ECS_EMULATOR_H_
