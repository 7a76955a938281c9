// The ENI warm pool (Terway's ENIMultiIP mode): secondary private IPs of
// secondary ENIs attached to this instance, handed to pods through the
// host's address-source service.
//
// Life of an address:  (assigned) idle -> in use -> cooling -> idle ...
//                                                \-> (reclaimed) unassigned
//   - Acquire takes an idle address of a ready ENI: no cloud call. When none
//     is idle it wakes the worker and waits (acquire_timeout) for one.
//   - Release makes it cooling; it is handed out again only after
//     reuse_delay (other nodes' conntrack, ARP caches and Service endpoints
//     may still point at the old pod).
//   - The worker keeps at least min_pool_size addresses idle and usable,
//     and at most max_pool_size idle or cooling (never giving back below the
//     floor, and only addresses unused for idle_reclaim_after); below
//     min_pool_size it refills half-way to max_pool_size. It
//     assigns IPs in batches of up to 10 per call on ENIs with room, creates
//     and attaches ENIs (vSwitch
//     with the most free addresses first, failing over when one is
//     exhausted) within the instance type's quota and eni_count_max, and
//     unassigns, or detaches and deletes whole ENIs, above max_pool_size.
//
// Life of an ENI: op/<token> written -> CreateNetworkInterface(ClientToken
// token) -> eni/<id> (attaching) -> AttachNetworkInterface -> InUse -> link
// with its MAC up, its route table filled -> ready -> ... -> detaching ->
// DetachNetworkInterface -> Available -> DeleteNetworkInterface -> gone.
// Every step is recorded before the next one starts, so a restart resumes
// (adopts) or deletes what a crash left, and repeating a create with the
// same ClientToken returns the same ENI instead of a second one.
//
// Leak GC (eni_gc_interval): ENIs tagged with our cluster and this instance
// as creator that stay Available past eni_gc_threshold are deleted; our ENIs
// attached here but unknown are adopted; secondary IPs the cloud lists on
// our ENIs but the pool does not know are unassigned after the same grace
// period. ENIs without our tags are never touched, nor are their links.
//
// Persistent state (StateStore keys):
//   op/<client token>  {"v": vswitch, "t": wall ms}         create in flight
//   eni/<id>           the ENI (see EniRecord)
//   ip/<ip>            {"e": eni, "s": idle|in_use|cooling, "c","i","p",
//                       "r": last assigned or released, wall ms}
//
// THREADING: every public method may be called concurrently.
#ifndef TRELLIS_PLUGINS_ENI_POOL_H_
#define TRELLIS_PLUGINS_ENI_POOL_H_

#include <trellis/types.hpp>

#include <condition_variable>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "aliyun/clock.h"
#include "aliyun/ecs.h"
#include "config.h"

namespace trellis::eni {

inline constexpr const char* kTagCluster = "trellis.io/cluster";
inline constexpr const char* kTagCreator = "trellis.io/creator";

// The host's per-module key/value store. Throws on failure.
class StateStore {
 public:
  virtual ~StateStore() = default;
  virtual std::optional<std::string> Get(const std::string& key) = 0;
  virtual void Put(const std::string& key, const std::string& value) = 0;
  virtual void Delete(const std::string& key) = 0;
  virtual std::vector<std::pair<std::string, std::string>> Scan(const std::string& prefix) = 0;
};

// What the node datapath needs to plumb one ENI.
struct EniLink {
  std::string eni_id;
  std::string mac;         // lower case
  std::string primary_ip;  // put on the link as /32: the source of its ARP
  uint32_t table = 0;      // route_table_base + device index
  struct Route {
    std::string destination;  // "0.0.0.0/0" or a CIDR
    std::string gateway;
    std::string mac;  // the link the route leaves by
    bool operator==(const Route&) const = default;
  };
  std::vector<Route> routes;  // exactly what `table` holds
};

// THREADING: methods may run concurrently for different ENIs.
class EniDatapath {
 public:
  virtual ~EniDatapath() = default;
  // Waits (until `deadline`) for a link with `link.mac`, brings it up, puts
  // primary_ip/32 on it and makes `link.table` hold exactly `link.routes`.
  // Idempotent. Returns the link's name. Throws sdk::Error (TRELLIS_E_TIMEOUT
  // when the link does not appear in time).
  virtual std::string Setup(const EniLink& link, aliyun::SteadyTime deadline) = 0;
  // Empties the table, removes the address and sets the link down when it is
  // still there. Tolerates everything being gone.
  virtual void Teardown(const EniLink& link) = 0;
  virtual bool LinkPresent(const std::string& mac) = 0;
};

struct NodeInfo {
  std::string instance_id, instance_type, region, zone, vpc_id, vpc_cidr;
  std::string primary_mac, primary_eni_id, primary_ip, primary_gateway;
  std::string vswitch_id;  // the instance's own vSwitch
  int eni_quota = 0;       // interfaces, the primary one included
  int ips_per_eni = 0;     // private IPv4 per interface, its primary included
};

struct InterfaceNetwork {
  std::string gateway;
  std::string cidr;  // the vSwitch's
};

// Where the pool learns who it runs on. Throws on failure; the pool retries.
class NodeDiscovery {
 public:
  virtual ~NodeDiscovery() = default;
  virtual NodeInfo Discover() = 0;
  // Gateway and vSwitch CIDR of an attached interface, by MAC (metadata).
  virtual InterfaceNetwork Interface(const std::string& mac) = 0;
};

struct PoolCounts {
  int total = 0, idle = 0, in_use = 0, cooling = 0;
  int enis = 0;       // secondary ENIs attached and ready
  int eni_limit = 0;  // how many secondary ENIs may exist
};

// Logging and metrics of the pool. THREADING: called concurrently.
class PoolObserver {
 public:
  virtual ~PoolObserver() = default;
  virtual void Log(int level, const std::string& message) = 0;
  virtual void EniCreationFailed(const std::string& code) = 0;
  virtual void Counts(const PoolCounts& counts) = 0;
};

class Pool {
 public:
  Pool(EniConfig config, std::shared_ptr<aliyun::EcsApi> ecs, StateStore* store,
       EniDatapath* datapath, NodeDiscovery* discovery, aliyun::Clock* clock,
       PoolObserver* observer);
  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  // Restores the recorded state (and the datapath of ready ENIs whose links
  // are present) and starts the worker: discovery, recovery, GC, filling.
  // Without the worker (tests drive EnsureNow/GcNow themselves) discovery
  // runs once, synchronously, and throws when it fails.
  void Start(bool worker = true);
  // Joins every thread. Cloud and kernel state stay as they are.
  void Stop();

  // Address source. Throws sdk::Error: TRELLIS_E_INVALID (IPv6),
  // TRELLIS_E_EXHAUSTED (no capacity anywhere), TRELLIS_E_UNAVAILABLE (none
  // became idle within acquire_timeout).
  std::vector<sdk::Address> Acquire(const sdk::Pod& pod, int family, uint32_t count);
  void Release(const std::vector<sdk::Address>& addresses);

  // One synchronous pass towards the configured pool size; waits for the
  // cloud operations it starts. Throws sdk::Error when the pool is still
  // short and the cloud said why.
  void EnsureNow();
  // One synchronous leak-GC pass.
  void GcNow();
  nlohmann::json Status();
  nlohmann::json Health();
  // Applies a new config; `ecs` replaces the client when cloud access changed.
  void Reconfigure(EniConfig config, std::shared_ptr<aliyun::EcsApi> ecs);
  // Module disabled: removes the datapath of every ENI, detaches and deletes
  // every ENI of ours, and forgets the state. Pods must be gone already.
  // Cloud operations in flight are cancelled first (the clock is cancelled
  // and reset).
  void Deactivate();

  PoolCounts Counts();

 private:
  using Duration = aliyun::Duration;
  enum class IpState { kIdle, kInUse, kCooling, kReleasing };
  struct IpEntry {
    std::string eni;
    IpState state = IpState::kIdle;
    std::string cid, ifname, pod;
    int64_t released_ms = 0;  // last activity: assigned, released (wall ms)
  };
  enum class Phase { kAttaching, kReady, kDetaching };
  struct EniEntry {
    std::string id, mac, vswitch, cidr, gateway, primary_ip, token;
    int prefix = 0;
    int slot = 0;
    Phase phase = Phase::kAttaching;
    bool link_ok = false;  // datapath set up
    std::string link;
    bool busy = false;     // a cloud operation on it is in flight
    int assigning = 0;     // IPs being assigned to it
    int64_t created_ms = 0;
    aliyun::SteadyTime retry_after{};  // after a failed operation on it
    std::optional<aliyun::SteadyTime> missing_since;
    bool full = false;  // the cloud refused more IPs on it (until the next GC)
    bool routes_stale = false;  // its table must be rewritten (config, other ENIs)
    bool vanished_logged = false;
  };
  struct VSwitchState {
    int64_t available = -1;  // -1: unknown
    std::string cidr, zone;
    aliyun::SteadyTime backoff_until{};
    Duration backoff{};
  };
  // Worker.
  void Run();
  bool Discover();
  void Restore();
  void RecoverLocked(std::unique_lock<std::mutex>& lock);
  // Plans and starts the cloud operations the pool needs; false when it
  // started none.
  bool ReconcileOnce();
  void RunGc();
  // Starts `fn` on a task thread (tasks_mu_ only: callable with mu_ held).
  void Spawn(std::function<void()> fn);
  void ReapTasks(bool all);
  bool WaitTasksIdle(aliyun::SteadyTime deadline);

  // Tasks (outside the lock).
  void AssignTask(std::string eni_id, int count);
  void CreateTask(int assign);
  void ResumeTask(std::string eni_id);   // attaching ENI: attach, wait, set up
  void LinkTask(std::string eni_id);     // ready ENI whose link or table needs work
  void DrainTask(std::string eni_id);
  void UnassignTask(std::string eni_id, std::vector<std::string> ips);
  void RecoverOpTask(std::string token);
  void AdoptTask(aliyun::NetworkInterfaceInfo info);

  // Steps shared by tasks.
  void WaitStatus(const std::string& eni_id, const std::string& status,
                  aliyun::SteadyTime deadline);
  void SetupLink(const std::string& eni_id, aliyun::SteadyTime deadline);
  // Attaches (if needed) an ENI known in state, waits for InUse and its
  // link; on failure deletes it again. `token` keys the attach.
  void BringUp(const std::string& eni_id, aliyun::SteadyTime deadline);
  void FailEni(const std::string& eni_id, const std::exception& why);
  void RemoveEni(const std::string& eni_id, const EniLink& link, aliyun::SteadyTime deadline,
                 const std::string& what);
  std::vector<std::string> AssignIps(const std::string& eni_id, int count);
  void DeleteEniInCloud(const std::string& eni_id, bool attached, aliyun::SteadyTime deadline);

  // State helpers (mu_ held).
  EniLink LinkOfLocked(const EniEntry& e) const;
  int FreeSlotLocked() const;
  int CapacityLocked() const;  // secondary IPs per ENI
  int EniLimitLocked() const;  // secondary ENIs
  int SecondaryCountLocked(const std::string& eni_id) const;
  void PersistIpLocked(const std::string& ip, const IpEntry& e);
  void PersistEniLocked(const EniEntry& e);
  void ForgetEniLocked(const std::string& eni_id);
  bool UsableLocked(const std::string& ip, IpEntry& e, int64_t now_ms);
  sdk::Address AddressLocked(const std::string& ip, const EniEntry& e) const;
  std::vector<std::string> VSwitchOrderLocked();
  void NoteError(const std::string& op, const std::exception& e);
  PoolCounts CountsLocked();
  void PublishCountsLocked();
  std::map<std::string, std::string> OurTagsLocked() const;
  std::shared_ptr<aliyun::EcsApi> Api();
  int64_t WallMs();
  void BackoffVSwitchLocked(const std::string& id);
  void Log(int level, const std::string& m) { observer_->Log(level, m); }

  mutable std::mutex mu_;
  std::condition_variable acquire_cv_;  // an address may have become idle
  std::condition_variable worker_cv_;   // work may be needed
  std::condition_variable tasks_cv_;    // a task finished
  EniConfig cfg_;
  std::shared_ptr<aliyun::EcsApi> ecs_;
  StateStore* store_;
  EniDatapath* datapath_;
  NodeDiscovery* discovery_;
  aliyun::Clock* clock_;
  PoolObserver* observer_;

  std::optional<NodeInfo> node_;
  bool restored_ = false;
  bool recovered_ = false;
  bool stopping_ = false;
  bool wake_ = false;
  int waiters_ = 0;
  std::map<std::string, EniEntry> enis_;
  std::map<std::string, IpEntry> ips_;
  struct PendingOp {
    std::string vswitch;
    bool in_flight = false;
    bool creating = false;  // its CreateTask still owns it (counted in creating_)
    aliyun::SteadyTime retry_after{};
  };
  std::map<std::string, PendingOp> ops_;  // creates not yet known to have an ENI, by token
  int creating_ = 0;                      // create tasks in flight
  int creating_ips_ = 0;                  // addresses those tasks will assign
  std::map<std::string, VSwitchState> vswitches_;
  aliyun::SteadyTime vswitch_refresh_{};
  aliyun::SteadyTime create_retry_after_{};
  Duration create_backoff_{};
  std::optional<std::string> starved_;  // why no address can be had, when so
  aliyun::SteadyTime next_gc_{};
  std::map<std::string, aliyun::SteadyTime> available_since_;  // unknown Available ENIs
  std::map<std::string, aliyun::SteadyTime> unknown_ip_since_;
  struct CloudErrorNote {
    int64_t wall_ms;
    std::string op, code, message;
  };
  std::mutex errors_mu_;  // after mu_ when both are held
  std::deque<CloudErrorNote> errors_;
  std::string discovery_error_;

  std::mutex gc_mu_;  // one GC pass at a time
  std::thread worker_;
  std::mutex tasks_mu_;
  struct Task {
    std::thread thread;
    std::shared_ptr<bool> done;
  };
  std::list<Task> tasks_;
  int tasks_running_ = 0;
};

}  // namespace trellis::eni

#endif  // TRELLIS_PLUGINS_ENI_POOL_H_
