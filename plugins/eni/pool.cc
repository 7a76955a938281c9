#include "pool.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cmath>

#include "aliyun/errors.h"
#include "aliyun/rpc_client.h"

namespace trellis::eni {
namespace {

using aliyun::CloudError;
using aliyun::SteadyTime;
using sdk::Error;
using std::chrono::milliseconds;

constexpr int kMaxAssignPerCall = 10;  // ECS's limit per AssignPrivateIpAddresses
constexpr int kMaxSlots = 64;
constexpr size_t kErrorHistory = 20;

const char* IpStateName(int s) {
  static const char* kNames[] = {"idle", "in_use", "cooling", "releasing"};
  return kNames[s];
}

std::string CodeOf(const std::exception& e) {
  if (auto* c = dynamic_cast<const CloudError*>(&e)) return c->code();
  if (auto* s = dynamic_cast<const sdk::Error*>(&e)) {
    return s->code() == TRELLIS_E_TIMEOUT ? "Timeout" : "Error";
  }
  return "Error";
}

bool IsNotFound(const CloudError& e) {
  const std::string& c = e.code();
  return c.size() > 9 && c.ends_with(".NotFound") &&
         (c.find("Eni") != std::string::npos || c.find("NetworkInterface") != std::string::npos ||
          c.find("Ip") != std::string::npos);
}

// The vSwitch gateway when the metadata service cannot tell: Alibaba Cloud
// puts it on the last usable address but one (.253 in a /24).
std::string GatewayOf(const std::string& cidr) {
  auto slash = cidr.find('/');
  in_addr a{};
  if (slash == std::string::npos || inet_pton(AF_INET, cidr.substr(0, slash).c_str(), &a) != 1) {
    return "";
  }
  int prefix = std::atoi(cidr.c_str() + slash + 1);
  if (prefix < 1 || prefix > 29) return "";
  uint32_t net = ntohl(a.s_addr) & (prefix == 0 ? 0 : ~uint32_t(0) << (32 - prefix));
  uint32_t size = uint32_t(1) << (32 - prefix);
  in_addr gw{htonl(net + size - 3)};
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &gw, buf, sizeof buf);
  return buf;
}

int PrefixOf(const std::string& cidr) {
  auto slash = cidr.find('/');
  return slash == std::string::npos ? 0 : std::atoi(cidr.c_str() + slash + 1);
}

}  // namespace

Pool::Pool(EniConfig config, std::shared_ptr<aliyun::EcsApi> ecs, StateStore* store,
           EniDatapath* datapath, NodeDiscovery* discovery, aliyun::Clock* clock,
           PoolObserver* observer)
    : cfg_(std::move(config)),
      ecs_(std::move(ecs)),
      store_(store),
      datapath_(datapath),
      discovery_(discovery),
      clock_(clock),
      observer_(observer) {}

Pool::~Pool() { Stop(); }

std::shared_ptr<aliyun::EcsApi> Pool::Api() {
  std::lock_guard lock(mu_);
  return ecs_;
}

int64_t Pool::WallMs() {
  return std::chrono::duration_cast<milliseconds>(clock_->WallNow().time_since_epoch()).count();
}

// ------------------------------------------------------------ lifecycle --

void Pool::Start(bool worker) {
  Restore();
  // Datapath of the ENIs we know, before any address is handed out: after a
  // node reboot the links are down and the tables empty; after a daemon
  // restart this rewrites what is there already.
  std::vector<std::string> ready;
  {
    std::lock_guard lock(mu_);
    for (auto& [id, e] : enis_) {
      if (e.phase == Phase::kReady) ready.push_back(id);
    }
  }
  for (const auto& id : ready) {
    try {
      SetupLink(id, clock_->Now());
    } catch (const std::exception& e) {
      Log(TRELLIS_LOG_WARN, "ENI " + id + ": its link is not ready yet (" + e.what() +
                                "); its addresses wait until it is");
    }
  }
  if (worker) {
    worker_ = std::thread([this] { Run(); });
    return;
  }
  NodeInfo n = discovery_->Discover();
  std::unique_lock lock(mu_);
  node_ = n;
  RecoverLocked(lock);
}

void Pool::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  worker_cv_.notify_all();
  acquire_cv_.notify_all();
  clock_->Cancel();
  if (worker_.joinable()) worker_.join();
  ReapTasks(true);
}

void Pool::Restore() {
  std::lock_guard lock(mu_);
  for (const auto& [key, value] : store_->Scan("eni/")) {
    auto j = Json::parse(value, nullptr, false);
    if (!j.is_object()) {
      Log(TRELLIS_LOG_ERROR, "dropping a corrupt record " + key);
      store_->Delete(key);
      continue;
    }
    EniEntry e;
    e.id = key.substr(4);
    e.mac = j.value("mac", "");
    e.vswitch = j.value("vswitch", "");
    e.cidr = j.value("cidr", "");
    e.gateway = j.value("gateway", "");
    e.primary_ip = j.value("primary_ip", "");
    e.token = j.value("token", "");
    e.slot = j.value("slot", 0);
    e.prefix = PrefixOf(e.cidr);
    e.created_ms = j.value("created", int64_t{0});
    std::string phase = j.value("phase", "attaching");
    e.phase = phase == "ready" ? Phase::kReady
              : phase == "detaching" ? Phase::kDetaching : Phase::kAttaching;
    enis_[e.id] = e;
  }
  for (const auto& [key, value] : store_->Scan("ip/")) {
    auto j = Json::parse(value, nullptr, false);
    std::string ip = key.substr(3);
    if (!j.is_object() || !enis_.contains(j.value("e", ""))) {
      Log(TRELLIS_LOG_WARN, "dropping the record of " + ip + ": its ENI is unknown");
      store_->Delete(key);
      continue;
    }
    IpEntry e;
    e.eni = j.value("e", "");
    std::string s = j.value("s", "idle");
    e.state = s == "in_use" ? IpState::kInUse : s == "cooling" ? IpState::kCooling : IpState::kIdle;
    e.cid = j.value("c", "");
    e.ifname = j.value("i", "");
    e.pod = j.value("p", "");
    e.released_ms = j.value("r", int64_t{0});
    ips_[ip] = e;
  }
  for (const auto& [key, value] : store_->Scan("op/")) {
    auto j = Json::parse(value, nullptr, false);
    ops_[key.substr(3)] = PendingOp{j.is_object() ? j.value("v", "") : ""};
  }
  restored_ = true;
  size_t in_use = 0;
  for (const auto& [ip, e] : ips_) in_use += e.state == IpState::kInUse;
  if (!enis_.empty() || !ops_.empty()) {
    Log(TRELLIS_LOG_INFO, "restored " + std::to_string(enis_.size()) + " ENIs, " +
                              std::to_string(ips_.size()) + " addresses (" +
                              std::to_string(in_use) + " in use), " +
                              std::to_string(ops_.size()) + " unfinished ENI creations");
  }
}

// --------------------------------------------------------------- worker --

void Pool::Run() {
  if (!Discover()) return;
  {
    std::unique_lock lock(mu_);
    RecoverLocked(lock);
  }
  RunGc();
  while (true) {
    ReconcileOnce();
    ReapTasks(false);
    Duration wait;
    {
      std::unique_lock lock(mu_);
      if (stopping_) break;
      bool gc_due = cfg_.eni_gc_interval.count() > 0 && clock_->Now() >= next_gc_;
      if (gc_due) {
        lock.unlock();
        RunGc();
        continue;
      }
      wait = cfg_.pool_check_interval;
      if (cfg_.eni_gc_interval.count() > 0) {
        wait = std::min<Duration>(wait, std::max<Duration>(next_gc_ - clock_->Now(), milliseconds(10)));
      }
      worker_cv_.wait_for(lock, wait, [&] { return stopping_ || wake_; });
      wake_ = false;
      if (stopping_) break;
    }
  }
}

bool Pool::Discover() {
  Duration backoff = milliseconds(500);
  while (true) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return false;
    }
    try {
      NodeInfo n = discovery_->Discover();
      std::lock_guard lock(mu_);
      Log(TRELLIS_LOG_INFO, "instance " + n.instance_id + " (" + n.instance_type + ", zone " +
                                n.zone + "): " + std::to_string(n.eni_quota) + " ENIs x " +
                                std::to_string(n.ips_per_eni) + " IPv4 addresses");
      node_ = n;
      discovery_error_.clear();
      next_gc_ = clock_->Now();
      return true;
    } catch (const std::exception& e) {
      {
        std::lock_guard lock(mu_);
        discovery_error_ = e.what();
      }
      NoteError("discover the instance", e);
      if (!clock_->SleepFor(backoff)) return false;
      backoff = std::min<Duration>(backoff * 2, std::chrono::seconds(30));
    }
  }
}

void Pool::RecoverLocked(std::unique_lock<std::mutex>& lock) {
  for (auto& [token, op] : ops_) {
    op.in_flight = true;
    Spawn([this, t = token] { RecoverOpTask(t); });
  }
  for (auto& [id, e] : enis_) {
    if (e.phase == Phase::kAttaching) {
      e.busy = true;
      Spawn([this, id = id] { ResumeTask(id); });
    } else if (e.phase == Phase::kDetaching) {
      e.busy = true;
      Spawn([this, id = id] { DrainTask(id); });
    }
  }
  recovered_ = true;
}

void Pool::Spawn(std::function<void()> fn) {
  std::lock_guard lock(tasks_mu_);
  auto done = std::make_shared<bool>(false);
  tasks_running_++;
  tasks_.push_back(Task{std::thread([this, fn = std::move(fn), done] {
                          try {
                            fn();
                          } catch (const std::exception& e) {
                            NoteError("background task", e);
                          }
                          {
                            std::lock_guard l(tasks_mu_);
                            *done = true;
                            tasks_running_--;
                          }
                          tasks_cv_.notify_all();
                          {
                            std::lock_guard l(mu_);
                            wake_ = true;
                          }
                          worker_cv_.notify_all();
                        }),
                        done});
}

void Pool::ReapTasks(bool all) {
  std::list<Task> finished;
  {
    std::unique_lock lock(tasks_mu_);
    if (all) tasks_cv_.wait(lock, [&] { return tasks_running_ == 0; });
    for (auto it = tasks_.begin(); it != tasks_.end();) {
      if (*it->done) {
        finished.splice(finished.end(), tasks_, it++);
      } else {
        ++it;
      }
    }
  }
  for (auto& t : finished) t.thread.join();
}

bool Pool::WaitTasksIdle(SteadyTime deadline) {
  std::unique_lock lock(tasks_mu_);
  while (tasks_running_ > 0) {
    if (clock_->Now() >= deadline) return false;
    tasks_cv_.wait_for(lock, milliseconds(50));
  }
  return true;
}

// ------------------------------------------------------------ state helpers --

int Pool::CapacityLocked() const {
  return node_ ? std::max(0, node_->ips_per_eni - 1) : 0;
}

int Pool::EniLimitLocked() const {
  if (!node_) return 0;
  int limit = std::max(0, node_->eni_quota - 1);
  if (cfg_.eni_count_max > 0) limit = std::min(limit, cfg_.eni_count_max);
  return std::min(limit, kMaxSlots - 1);
}

int Pool::SecondaryCountLocked(const std::string& eni_id) const {
  int n = 0;
  for (const auto& [ip, e] : ips_) n += e.eni == eni_id;
  return n;
}

int Pool::FreeSlotLocked() const {
  std::set<int> used;
  for (const auto& [id, e] : enis_) used.insert(e.slot);
  for (int s = 1; s < kMaxSlots; ++s) {
    if (!used.contains(s)) return s;
  }
  return 0;
}

std::map<std::string, std::string> Pool::OurTagsLocked() const {
  return {{kTagCluster, cfg_.cluster_id}, {kTagCreator, node_ ? node_->instance_id : ""}};
}

void Pool::PersistIpLocked(const std::string& ip, const IpEntry& e) {
  Json j = {{"e", e.eni}, {"s", IpStateName(static_cast<int>(e.state))}};
  if (e.state == IpState::kInUse) {
    j["c"] = e.cid;
    j["i"] = e.ifname;
    if (!e.pod.empty()) j["p"] = e.pod;
  }
  if (e.released_ms != 0) j["r"] = e.released_ms;
  store_->Put("ip/" + ip, j.dump());
}

void Pool::PersistEniLocked(const EniEntry& e) {
  const char* phase = e.phase == Phase::kReady       ? "ready"
                      : e.phase == Phase::kDetaching ? "detaching"
                                                     : "attaching";
  Json j = {{"mac", e.mac},         {"vswitch", e.vswitch}, {"cidr", e.cidr},
            {"gateway", e.gateway}, {"primary_ip", e.primary_ip}, {"token", e.token},
            {"slot", e.slot},       {"phase", phase},       {"created", e.created_ms}};
  store_->Put("eni/" + e.id, j.dump());
}

void Pool::ForgetEniLocked(const std::string& eni_id) {
  for (auto it = ips_.begin(); it != ips_.end();) {
    if (it->second.eni == eni_id) {
      if (it->second.state == IpState::kInUse) {
        Log(TRELLIS_LOG_ERROR, "ENI " + eni_id + " is gone while " + it->first + " is in use by " +
                                   it->second.cid + " (" + it->second.pod + ")");
      }
      try {
        store_->Delete("ip/" + it->first);
      } catch (const std::exception& e) {
        Log(TRELLIS_LOG_WARN, std::string("forgetting ") + it->first + ": " + e.what());
      }
      it = ips_.erase(it);
    } else {
      ++it;
    }
  }
  enis_.erase(eni_id);
  try {
    store_->Delete("eni/" + eni_id);
  } catch (const std::exception& e) {
    Log(TRELLIS_LOG_WARN, "forgetting ENI " + eni_id + ": " + e.what());
  }
  // Tables of other ENIs may route through this one.
  for (auto& [id, e] : enis_) e.routes_stale = true;
}

// Whether the address can be handed out now; a cooling one whose delay
// passed becomes idle.
bool Pool::UsableLocked(const std::string& ip, IpEntry& e, int64_t now_ms) {
  if (e.state == IpState::kCooling && now_ms - e.released_ms >= cfg_.reuse_delay.count()) {
    e.state = IpState::kIdle;
  }
  if (e.state != IpState::kIdle) return false;
  auto it = enis_.find(e.eni);
  return it != enis_.end() && it->second.phase == Phase::kReady && it->second.link_ok;
}

sdk::Address Pool::AddressLocked(const std::string& ip, const EniEntry& e) const {
  sdk::Address a = sdk::Address::Parse(ip + "/" + std::to_string(e.prefix > 0 ? e.prefix : 32));
  a.SetGateway(e.gateway);
  a.route_table = cfg_.route_table_base + static_cast<uint32_t>(e.slot);
  a.source_ref = e.id;
  return a;
}

EniLink Pool::LinkOfLocked(const EniEntry& e) const {
  EniLink l;
  l.eni_id = e.id;
  l.mac = e.mac;
  l.primary_ip = e.primary_ip;
  l.table = cfg_.route_table_base + static_cast<uint32_t>(e.slot);
  auto via = [&](const EniRef& ref) -> std::optional<std::pair<std::string, std::string>> {
    if (ref.ref == "self") return std::make_pair(e.gateway, e.mac);
    if (ref.ref == "primary" || (node_ && ref.ref == node_->primary_eni_id)) {
      if (!node_ || node_->primary_gateway.empty()) return std::nullopt;
      return std::make_pair(node_->primary_gateway, node_->primary_mac);
    }
    auto it = enis_.find(ref.ref);
    if (it == enis_.end() || it->second.phase != Phase::kReady || it->second.gateway.empty()) {
      return std::nullopt;
    }
    return std::make_pair(it->second.gateway, it->second.mac);
  };
  auto def = via(cfg_.default_route);
  if (!def) def = via(EniRef{"self"});
  if (!def->first.empty()) l.routes.push_back({"0.0.0.0/0", def->first, def->second});
  for (const auto& pr : cfg_.policy_routes) {
    if (auto v = via(pr.via); v && !v->first.empty()) {
      l.routes.push_back({pr.destination, v->first, v->second});
    }
  }
  return l;
}

std::vector<std::string> Pool::VSwitchOrderLocked() {
  if (!node_) return {};
  std::vector<std::string> ids = cfg_.VSwitchesFor(node_->zone);
  if (ids.empty()) ids = {node_->vswitch_id};
  SteadyTime now = clock_->Now();
  std::vector<std::string> usable;
  for (const auto& id : ids) {
    auto it = vswitches_.find(id);
    if (it != vswitches_.end() && now < it->second.backoff_until) continue;
    if (it != vswitches_.end() && it->second.available == 0) continue;
    usable.push_back(id);
  }
  if (cfg_.vswitch_selection == "most") {
    std::stable_sort(usable.begin(), usable.end(), [&](const auto& a, const auto& b) {
      auto fa = vswitches_.contains(a) ? vswitches_[a].available : -1;
      auto fb = vswitches_.contains(b) ? vswitches_[b].available : -1;
      return fa > fb;
    });
  }
  return usable;
}

void Pool::BackoffVSwitchLocked(const std::string& id) {
  VSwitchState& v = vswitches_[id];
  v.backoff = std::min<Duration>(std::max<Duration>(v.backoff * 2, std::chrono::seconds(30)),
                                 std::chrono::minutes(10));
  v.backoff_until = clock_->Now() + v.backoff;
  v.available = 0;
  Log(TRELLIS_LOG_WARN, "vSwitch " + id + " has no free address; not used for " +
                            std::to_string(std::chrono::duration_cast<std::chrono::seconds>(v.backoff).count()) +
                            "s");
}

void Pool::NoteError(const std::string& op, const std::exception& e) {
  std::string code = CodeOf(e);
  if (clock_->Cancelled()) return;  // shutting down: every call fails now
  Log(TRELLIS_LOG_WARN, op + ": " + e.what());
  std::lock_guard lock(errors_mu_);
  errors_.push_back({WallMs(), op, code, e.what()});
  while (errors_.size() > kErrorHistory) errors_.pop_front();
}

PoolCounts Pool::Counts() {
  std::lock_guard lock(mu_);
  return CountsLocked();
}

PoolCounts Pool::CountsLocked() {
  PoolCounts c;
  int64_t now_ms = WallMs();
  for (auto& [ip, e] : ips_) {
    c.total++;
    if (UsableLocked(ip, e, now_ms)) c.idle++;
    else if (e.state == IpState::kInUse) c.in_use++;
    else if (e.state == IpState::kCooling) c.cooling++;
  }
  for (const auto& [id, e] : enis_) c.enis += e.phase == Phase::kReady;
  c.eni_limit = EniLimitLocked();
  return c;
}

void Pool::PublishCountsLocked() { observer_->Counts(CountsLocked()); }

// ------------------------------------------------------------- planning --

bool Pool::ReconcileOnce() {
  std::unique_lock lock(mu_);
  if (!node_ || stopping_ || !recovered_) return false;
  const SteadyTime now = clock_->Now();
  const int64_t now_ms = WallMs();
  const int cap = CapacityLocked();
  bool launched = false;
  auto launch = [&](std::function<void()> fn) {
    launched = true;
    Spawn(std::move(fn));
  };

  // Unfinished work on single ENIs first.
  for (auto& [token, op] : ops_) {
    if (!op.in_flight && now >= op.retry_after) {
      op.in_flight = true;
      launch([this, t = token] { RecoverOpTask(t); });
    }
  }
  for (auto& [id, e] : enis_) {
    if (e.busy || now < e.retry_after) continue;
    if (e.phase == Phase::kAttaching) {
      e.busy = true;
      launch([this, id = id] { ResumeTask(id); });
    } else if (e.phase == Phase::kDetaching) {
      e.busy = true;
      launch([this, id = id] { DrainTask(id); });
    } else if (!e.link_ok || e.routes_stale) {
      e.busy = true;
      launch([this, id = id] { LinkTask(id); });
    }
  }

  // Supply and demand.
  int avail = 0, cooling = 0, inflight = creating_ips_;
  int64_t next_cool = INT64_MAX;
  std::map<std::string, int> in_use_on, pinned_on;  // per ENI: in use / in use+cooling+releasing
  for (auto& [ip, e] : ips_) {
    if (UsableLocked(ip, e, now_ms)) {
      avail++;
      continue;
    }
    if (e.state == IpState::kCooling) {
      cooling++;
      next_cool = std::min(next_cool, e.released_ms + cfg_.reuse_delay.count());
    }
    if (e.state == IpState::kInUse) in_use_on[e.eni]++;
    if (e.state != IpState::kIdle) pinned_on[e.eni]++;
  }
  for (const auto& [id, e] : enis_) inflight += e.assigning;
  // min_pool_size is a floor of addresses usable now (pool hits);
  // max_pool_size a ceiling of idle plus cooling ones. Below the floor the
  // pool refills half-way to the ceiling in one go, so that a pod or two
  // started do not cost a call each; above the ceiling it gives back, but
  // never below the floor (when cooling addresses outnumber the room between
  // the two, the floor wins and the pool grows until they come back).
  const int urgent = std::max(0, waiters_ - avail - inflight);
  const int usable_after = std::max(0, avail + inflight - waiters_);
  int warm = 0;
  if (usable_after < cfg_.min_pool_size) {
    warm = cfg_.min_pool_size + (cfg_.max_pool_size - cfg_.min_pool_size) / 2 - usable_after;
  }
  int deficit = urgent + warm;

  // Assign on ENIs with room: up to 10 per call, one call per ENI at a time.
  // Room on ENIs that cannot take an assignment right now, and on those an
  // interrupted creation is about to recover.
  int recovering = 0;  // interrupted creations (a CreateTask's own op is in creating_)
  for (const auto& [token, op] : ops_) recovering += !op.creating;
  int future_room = recovering * cap;
  for (auto& [id, e] : enis_) {
    if (e.phase == Phase::kDetaching) continue;
    int room = e.full ? 0 : cap - SecondaryCountLocked(id) - e.assigning;
    if (room <= 0) continue;
    if (e.phase != Phase::kReady || !e.link_ok) {
      future_room += room;  // being attached (a resumed creation) or its link set up
      continue;
    }
    auto vs = vswitches_.find(e.vswitch);
    bool vswitch_out = vs != vswitches_.end() && now < vs->second.backoff_until;
    if (vswitch_out) continue;
    if (e.busy || now < e.retry_after) {
      future_room += room;
      continue;
    }
    int n = std::min({room, deficit, kMaxAssignPerCall});
    if (n <= 0) continue;
    e.busy = true;
    e.assigning = n;
    deficit -= n;
    launch([this, id = id, n] { AssignTask(id, n); });
  }
  int remaining = std::max(0, deficit - future_room);

  // New ENIs: for eni_count_min, and for what the existing ones cannot hold.
  int existing = creating_ + recovering;
  for (const auto& [id, e] : enis_) existing += e.phase != Phase::kDetaching;
  const int limit = EniLimitLocked();
  int want = std::max(0, cfg_.eni_count_min - existing);
  if (remaining > 0 && cap > 0) want = std::max(want, (remaining + cap - 1) / cap);
  want = std::min(want, limit - existing);
  std::string why_not;
  if (want > 0 && now < create_retry_after_) {
    why_not = "ENI creation backs off after a failure";
    want = 0;
  }
  if (want > 0 && VSwitchOrderLocked().empty()) {
    why_not = "every configured vSwitch is out of addresses";
    want = 0;
  }
  for (int i = 0; i < want; ++i) {
    int share = std::min({cap, kMaxAssignPerCall, std::max(0, remaining)});
    remaining -= share;
    creating_++;
    creating_ips_ += share;
    launch([this, share] { CreateTask(share); });
  }

  // Nothing can produce an address for a waiting pod: say why, at once.
  bool busy_any = creating_ > 0;
  for (const auto& [id, e] : enis_) busy_any = busy_any || e.busy;
  if (urgent > 0 && !launched && !busy_any && inflight == 0) {
    std::string reason;
    if (next_cool != INT64_MAX) {
      reason.clear();  // cooling addresses come back; waiters wait for them
    } else if (!why_not.empty()) {
      reason = why_not;
    } else if (existing >= limit) {
      reason = std::to_string(existing) + " secondary ENIs (the limit: quota " +
               std::to_string(node_->eni_quota) + " minus the primary" +
               (cfg_.eni_count_max > 0 ? ", eni_count_max " + std::to_string(cfg_.eni_count_max)
                                       : std::string()) +
               ") with " + std::to_string(cap) + " addresses each are all in use";
    } else {
      reason = "no ENI can take more addresses";
    }
    if (!reason.empty()) {
      starved_ = "no pod address available: " + reason;
      acquire_cv_.notify_all();
    }
  } else if (launched || avail > 0) {
    starved_.reset();
  }

  // Reclaim above max_pool_size, when nobody waits and nothing is created.
  if (waiters_ == 0 && !launched && creating_ == 0) {
    int excess = std::min(avail - cfg_.min_pool_size, avail + cooling - cfg_.max_pool_size);
    int ready = 0;
    for (const auto& [id, e] : enis_) ready += e.phase == Phase::kReady;
    // Whole ENIs first: that frees quota too.
    // Only addresses nobody used for idle_reclaim_after go back: under
    // churn with a reuse delay, addresses cycle through cooling, and giving
    // them back only to assign them again soon would cost two calls each.
    auto settled = [&](const IpEntry& ie) {
      return ie.state == IpState::kIdle &&
             now_ms - ie.released_ms >= cfg_.idle_reclaim_after.count();
    };
    std::map<std::string, int> unsettled_on;
    for (const auto& [ip, ie] : ips_) {
      if (!settled(ie)) unsettled_on[ie.eni]++;
    }
    std::vector<std::pair<int, std::string>> empty;  // (idle count, id)
    for (const auto& [id, e] : enis_) {
      if (e.phase != Phase::kReady || e.busy || pinned_on[id] > 0 || unsettled_on[id] > 0) {
        continue;
      }
      empty.push_back({SecondaryCountLocked(id), id});
    }
    std::sort(empty.begin(), empty.end());
    for (const auto& [s, id] : empty) {
      if (ready <= cfg_.eni_count_min) break;
      bool drain = (excess > 0 && s <= excess) || (s == 0 && avail + cooling >= cfg_.max_pool_size);
      if (!drain) continue;
      EniEntry& e = enis_[id];
      e.phase = Phase::kDetaching;
      e.busy = true;
      try {
        PersistEniLocked(e);
      } catch (const std::exception& ex) {
        Log(TRELLIS_LOG_WARN, std::string("recording the drain of ") + id + ": " + ex.what());
      }
      Log(TRELLIS_LOG_INFO, "draining ENI " + id + " (" + std::to_string(s) +
                                " idle addresses) to keep at most " +
                                std::to_string(cfg_.max_pool_size) + " idle");
      excess -= s;
      avail -= s;
      ready--;
      launch([this, id = id] { DrainTask(id); });
    }
    if (excess > 0) {
      // Then single addresses, from the ENIs fewest pods use.
      std::vector<std::pair<int, std::string>> order;
      for (const auto& [id, e] : enis_) {
        if (e.phase == Phase::kReady && !e.busy) order.push_back({in_use_on[id], id});
      }
      std::sort(order.begin(), order.end());
      for (const auto& [used, id] : order) {
        if (excess <= 0) break;
        std::vector<std::string> batch;
        for (auto& [ip, ie] : ips_) {
          if (ie.eni != id || !settled(ie)) continue;
          if (static_cast<int>(batch.size()) >= std::min(excess, kMaxAssignPerCall)) break;
          batch.push_back(ip);
        }
        if (batch.empty()) continue;
        for (const auto& ip : batch) ips_[ip].state = IpState::kReleasing;
        enis_[id].busy = true;
        excess -= static_cast<int>(batch.size());
        launch([this, id = id, batch] { UnassignTask(id, batch); });
      }
    }
  }
  PublishCountsLocked();
  return launched;
}

// ---------------------------------------------------------------- tasks --

std::vector<std::string> Pool::AssignIps(const std::string& eni_id, int count) {
  auto api = Api();
  std::vector<std::string> got =
      api->AssignPrivateIpAddresses(eni_id, count, aliyun::RpcClient::NewUuid());
  if (got.empty()) {
    // The answer did not list them: read them back.
    auto listed = api->DescribeNetworkInterfaces(aliyun::EniQuery::ByIds({eni_id}));
    std::lock_guard lock(mu_);
    for (const auto& n : listed) {
      for (const auto& ip : n.private_ips) {
        if (ip != n.primary_ip && !ips_.contains(ip) &&
            static_cast<int>(got.size()) < count) {
          got.push_back(ip);
        }
      }
    }
  }
  std::lock_guard lock(mu_);
  for (const auto& ip : got) {
    IpEntry e;
    e.eni = eni_id;
    e.released_ms = WallMs();  // last activity: reclaimed only after idle_reclaim_after
    ips_[ip] = e;
    unknown_ip_since_.erase(ip);
    try {
      PersistIpLocked(ip, e);
    } catch (const std::exception& ex) {
      // Handed out it would be lost on a restart; the leak GC finds it.
      ips_.erase(ip);
      Log(TRELLIS_LOG_ERROR, "recording " + ip + ": " + ex.what());
    }
  }
  starved_.reset();
  acquire_cv_.notify_all();
  return got;
}

void Pool::AssignTask(std::string eni_id, int count) {
  std::optional<CloudError> failed;
  try {
    AssignIps(eni_id, count);
  } catch (const CloudError& e) {
    failed = e;
    NoteError("assign " + std::to_string(count) + " addresses to " + eni_id, e);
  }
  std::lock_guard lock(mu_);
  auto it = enis_.find(eni_id);
  if (it == enis_.end()) return;
  EniEntry& e = it->second;
  e.busy = false;
  e.assigning = 0;
  if (failed) {
    if (failed->Is("InvalidVSwitchId.IpNotEnough")) {
      BackoffVSwitchLocked(e.vswitch);
    } else if (failed->Is("QuotaExceed") || failed->Is("InvalidOperation.Ip") ||
               failed->Is("InvalidParam.SecondaryPrivateIpAddressCount")) {
      e.full = true;  // until the next GC pass re-reads it
    } else {
      e.retry_after = clock_->Now() + std::chrono::seconds(5);
    }
  }
  wake_ = true;
  worker_cv_.notify_all();
}

void Pool::CreateTask(int assign) {
  std::string eni_id;
  try {
    NodeInfo node;
    std::vector<std::string> candidates;
    bool refresh;
    {
      std::lock_guard lock(mu_);
      node = *node_;
      candidates = cfg_.VSwitchesFor(node.zone);
      if (candidates.empty()) candidates = {node.vswitch_id};
      refresh = clock_->Now() >= vswitch_refresh_;
    }
    auto api = Api();
    if (refresh) {
      try {
        auto infos = api->DescribeVSwitches(node.vpc_id, candidates);
        std::lock_guard lock(mu_);
        for (const auto& v : infos) {
          VSwitchState& s = vswitches_[v.id];
          s.available = v.available_ips;
          s.cidr = v.cidr;
          s.zone = v.zone;
        }
        vswitch_refresh_ = clock_->Now() + std::chrono::seconds(30);
      } catch (const CloudError& e) {
        if (e.kind() == CloudError::Kind::kCancelled) throw;
        NoteError("describe vSwitches", e);  // choose without free counts
      }
    }
    aliyun::NetworkInterfaceInfo info;
    std::string token;
    int retries;
    {
      std::lock_guard lock(mu_);
      retries = cfg_.eni_create_retry;
    }
    for (int attempt = 0;; ++attempt) {
      aliyun::CreateEniRequest req;
      {
        std::lock_guard lock(mu_);
        auto order = VSwitchOrderLocked();
        if (order.empty()) {
          throw Error(TRELLIS_E_EXHAUSTED, "no configured vSwitch has free addresses");
        }
        token = aliyun::RpcClient::NewUuid();
        req.vswitch_id = order.front();
        req.security_groups = cfg_.security_groups;
        req.tags = cfg_.eni_tags;
        for (const auto& [k, v] : OurTagsLocked()) req.tags[k] = v;
        req.description = "trellis pod addresses of " + node.instance_id;
        req.client_token = token;
        // Durable before the call: a crash from here on is recovered with
        // the same token.
        store_->Put("op/" + token, Json({{"v", req.vswitch_id}, {"t", WallMs()}}).dump());
        ops_[token] = PendingOp{req.vswitch_id, true, true};
      }
      try {
        info = api->CreateNetworkInterface(req);
        break;
      } catch (const CloudError& e) {
        std::lock_guard lock(mu_);
        bool definite = e.kind() == CloudError::Kind::kApi;
        if (definite) {
          // ECS refused: no ENI exists for this token.
          ops_.erase(token);
          store_->Delete("op/" + token);
        } else {
          // It may exist: the recovery repeats the call with this token.
          ops_[token].in_flight = false;
          ops_[token].creating = false;
          ops_[token].retry_after = clock_->Now() + std::chrono::seconds(5);
        }
        if (e.Is("InvalidVSwitchId.IpNotEnough") && attempt < retries) {
          BackoffVSwitchLocked(req.vswitch_id);
          continue;  // fail over to the next vSwitch
        }
        if (e.Is("InvalidVSwitchId.IpNotEnough")) BackoffVSwitchLocked(req.vswitch_id);
        throw;
      }
    }
    eni_id = info.id;
    {
      std::lock_guard lock(mu_);
      EniEntry e;
      e.id = info.id;
      e.mac = info.mac;
      e.vswitch = info.vswitch_id;
      e.primary_ip = info.primary_ip;
      e.token = token;
      e.slot = FreeSlotLocked();
      e.phase = Phase::kAttaching;
      e.busy = true;
      e.created_ms = WallMs();
      if (auto v = vswitches_.find(e.vswitch); v != vswitches_.end()) {
        e.cidr = v->second.cidr;
        if (v->second.available > 0) v->second.available--;
      }
      e.prefix = PrefixOf(e.cidr);
      enis_[e.id] = e;
      PersistEniLocked(e);
      ops_.erase(token);
      store_->Delete("op/" + token);
    }
    Log(TRELLIS_LOG_INFO, "created ENI " + info.id + " in vSwitch " + info.vswitch_id);
    SteadyTime deadline;
    {
      std::lock_guard lock(mu_);
      deadline = clock_->Now() + cfg_.eni_create_timeout;
    }
    BringUp(eni_id, deadline);
    {
      std::lock_guard lock(mu_);
      create_backoff_ = Duration{};
      create_retry_after_ = SteadyTime{};
    }
  } catch (const std::exception& e) {
    if (!clock_->Cancelled()) observer_->EniCreationFailed(CodeOf(e));
    NoteError("create an ENI", e);
    std::lock_guard lock(mu_);
    create_backoff_ = std::min<Duration>(std::max<Duration>(create_backoff_ * 2, std::chrono::seconds(2)),
                                         std::chrono::minutes(5));
    create_retry_after_ = clock_->Now() + create_backoff_;
    creating_--;
    creating_ips_ -= assign;
    wake_ = true;
    worker_cv_.notify_all();
    acquire_cv_.notify_all();
    return;
  }
  {
    std::lock_guard lock(mu_);
    creating_--;
    creating_ips_ -= assign;
    if (auto it = enis_.find(eni_id); it != enis_.end()) {
      it->second.busy = true;
      it->second.assigning = std::min(assign, CapacityLocked());
    }
  }
  if (assign > 0) AssignTask(eni_id, assign);
  std::lock_guard lock(mu_);
  if (auto it = enis_.find(eni_id); it != enis_.end()) it->second.busy = false;
  wake_ = true;
  worker_cv_.notify_all();
}

void Pool::BringUp(const std::string& eni_id, SteadyTime deadline) {
  std::string instance, token;
  {
    std::lock_guard lock(mu_);
    instance = node_->instance_id;
    token = enis_.at(eni_id).token;
  }
  auto api = Api();
  try {
    // Where is it now? (Describe may lag behind the create: retry briefly.)
    std::optional<aliyun::NetworkInterfaceInfo> info;
    for (Duration wait = milliseconds(100);; wait = std::min<Duration>(wait * 2, std::chrono::seconds(2))) {
      auto listed = api->DescribeNetworkInterfaces(aliyun::EniQuery::ByIds({eni_id}));
      if (!listed.empty()) {
        info = listed.front();
        break;
      }
      if (clock_->Now() + wait >= deadline) {
        throw Error(TRELLIS_E_NOT_FOUND, "ENI " + eni_id + " is not listed by the cloud");
      }
      if (!clock_->SleepFor(wait)) {
        throw CloudError(CloudError::Kind::kCancelled, "", "Cancelled", 0, "", "cancelled");
      }
    }
    if (!info->instance_id.empty() && info->instance_id != instance) {
      throw Error(TRELLIS_E_PRECONDITION, "ENI " + eni_id + " is attached to " +
                                              info->instance_id + ", not to this instance");
    }
    {
      std::lock_guard lock(mu_);
      EniEntry& e = enis_.at(eni_id);
      if (e.mac.empty()) e.mac = info->mac;
      if (e.primary_ip.empty()) e.primary_ip = info->primary_ip;
      if (e.vswitch.empty()) e.vswitch = info->vswitch_id;
    }
    if (info->status == "Available") {
      api->AttachNetworkInterface(eni_id, instance,
                                  (token.empty() ? aliyun::RpcClient::NewUuid() : token) + "-attach");
    }
    WaitStatus(eni_id, "InUse", deadline);
    SetupLink(eni_id, deadline);
    Log(TRELLIS_LOG_INFO, "ENI " + eni_id + " is attached and ready");
  } catch (const std::exception& e) {
    // Shutting down is no reason to give the ENI up: the next start resumes.
    if (!clock_->Cancelled()) FailEni(eni_id, e);
    throw;
  }
}

// An ENI that could not be brought up is detached and deleted now; what
// cannot be deleted now stays recorded as detaching and is retried.
void Pool::FailEni(const std::string& eni_id, const std::exception& why) {
  EniLink link;
  SteadyTime deadline;
  {
    std::lock_guard lock(mu_);
    auto it = enis_.find(eni_id);
    if (it == enis_.end()) return;
    it->second.phase = Phase::kDetaching;
    it->second.busy = true;
    try {
      PersistEniLocked(it->second);
    } catch (...) {
    }
    link = LinkOfLocked(it->second);
    deadline = clock_->Now() + cfg_.eni_create_timeout;
  }
  Log(TRELLIS_LOG_WARN, "giving up ENI " + eni_id + " (" + why.what() + "); deleting it");
  RemoveEni(eni_id, link, deadline, "delete the failed ENI " + eni_id);
}

void Pool::WaitStatus(const std::string& eni_id, const std::string& status, SteadyTime deadline) {
  auto api = Api();
  std::string last = "unknown";
  for (Duration wait = milliseconds(100);; wait = std::min<Duration>(wait * 2, std::chrono::seconds(2))) {
    auto listed = api->DescribeNetworkInterfaces(aliyun::EniQuery::ByIds({eni_id}));
    if (listed.empty() && status == "Available") return;  // deleted already
    if (!listed.empty()) {
      last = listed.front().status;
      if (last == status) return;
    }
    if (clock_->Now() + wait >= deadline) {
      throw Error(TRELLIS_E_TIMEOUT, "ENI " + eni_id + " stayed " + last + " (waiting for " +
                                         status + ") until the timeout");
    }
    if (!clock_->SleepFor(wait)) {
      throw CloudError(CloudError::Kind::kCancelled, "", "Cancelled", 0, "", "cancelled");
    }
  }
}

void Pool::SetupLink(const std::string& eni_id, SteadyTime deadline) {
  std::string mac, cidr, gateway;
  {
    std::lock_guard lock(mu_);
    const EniEntry& e = enis_.at(eni_id);
    mac = e.mac;
    cidr = e.cidr;
    gateway = e.gateway;
  }
  if (gateway.empty() || cidr.empty()) {
    // The metadata service knows an attached interface's network; the
    // vSwitch CIDR (from DescribeVSwitches) is the fallback.
    try {
      InterfaceNetwork n = discovery_->Interface(mac);
      if (!n.gateway.empty()) gateway = n.gateway;
      if (!n.cidr.empty()) cidr = n.cidr;
    } catch (const std::exception& e) {
      if (cidr.empty()) throw;
      Log(TRELLIS_LOG_DEBUG, "metadata of " + mac + ": " + e.what() + "; computing the gateway");
    }
    if (gateway.empty()) gateway = GatewayOf(cidr);
    if (gateway.empty()) {
      throw Error(TRELLIS_E_INTERNAL, "ENI " + eni_id + ": cannot tell its vSwitch gateway");
    }
  }
  EniLink link;
  {
    std::lock_guard lock(mu_);
    EniEntry& e = enis_.at(eni_id);
    e.gateway = gateway;
    e.cidr = cidr;
    e.prefix = PrefixOf(cidr);
    link = LinkOfLocked(e);
  }
  std::string name = datapath_->Setup(link, deadline);
  std::lock_guard lock(mu_);
  auto it = enis_.find(eni_id);
  if (it == enis_.end()) return;
  EniEntry& e = it->second;
  bool became_ready = e.phase != Phase::kReady;
  e.link = name;
  e.link_ok = true;
  e.routes_stale = false;
  e.phase = Phase::kReady;
  PersistEniLocked(e);
  if (became_ready) {
    // Tables of other ENIs may route through this one.
    for (auto& [id, other] : enis_) {
      if (id != eni_id) other.routes_stale = true;
    }
  }
  acquire_cv_.notify_all();
}

void Pool::ResumeTask(std::string eni_id) {
  SteadyTime deadline;
  {
    std::lock_guard lock(mu_);
    deadline = clock_->Now() + cfg_.eni_create_timeout;
  }
  try {
    BringUp(eni_id, deadline);
  } catch (const std::exception& e) {
    NoteError("resume ENI " + eni_id, e);
  }
  std::lock_guard lock(mu_);
  if (auto it = enis_.find(eni_id); it != enis_.end()) {
    it->second.busy = false;
    if (it->second.phase != Phase::kReady) {
      it->second.retry_after = clock_->Now() + std::chrono::seconds(10);
    }
  }
}

void Pool::LinkTask(std::string eni_id) {
  try {
    SetupLink(eni_id, clock_->Now() + std::chrono::seconds(2));
  } catch (const std::exception& e) {
    NoteError("set up the link of ENI " + eni_id, e);
    std::lock_guard lock(mu_);
    if (auto it = enis_.find(eni_id); it != enis_.end()) {
      it->second.retry_after = clock_->Now() + std::chrono::seconds(15);
    }
  }
  std::lock_guard lock(mu_);
  if (auto it = enis_.find(eni_id); it != enis_.end()) it->second.busy = false;
}

void Pool::DeleteEniInCloud(const std::string& eni_id, bool attached, SteadyTime deadline) {
  auto api = Api();
  std::string instance;
  {
    std::lock_guard lock(mu_);
    instance = node_ ? node_->instance_id : "";
  }
  auto listed = api->DescribeNetworkInterfaces(aliyun::EniQuery::ByIds({eni_id}));
  if (listed.empty()) return;  // gone
  const auto& info = listed.front();
  if (info.status != "Available") {
    if (!info.instance_id.empty() && info.instance_id != instance) {
      throw Error(TRELLIS_E_PRECONDITION, "ENI " + eni_id + " is attached to " +
                                              info.instance_id + "; not deleting it");
    }
    if (info.status == "InUse" || info.status == "Attaching") {
      try {
        api->DetachNetworkInterface(eni_id, info.instance_id.empty() ? instance : info.instance_id,
                                    aliyun::RpcClient::NewUuid());
      } catch (const CloudError& e) {
        if (IsNotFound(e)) return;
        throw;
      }
    }
    WaitStatus(eni_id, "Available", deadline);
  }
  try {
    api->DeleteNetworkInterface(eni_id, aliyun::RpcClient::NewUuid());
  } catch (const CloudError& e) {
    if (!IsNotFound(e)) throw;
  }
  Log(TRELLIS_LOG_INFO, "deleted ENI " + eni_id);
}

void Pool::DrainTask(std::string eni_id) {
  EniLink link;
  SteadyTime deadline;
  {
    std::lock_guard lock(mu_);
    auto it = enis_.find(eni_id);
    if (it == enis_.end()) return;
    link = LinkOfLocked(it->second);
    deadline = clock_->Now() + cfg_.eni_create_timeout;
    // Its addresses go with it.
    for (auto ip = ips_.begin(); ip != ips_.end();) {
      if (ip->second.eni == eni_id && ip->second.state != IpState::kInUse) {
        store_->Delete("ip/" + ip->first);
        ip = ips_.erase(ip);
      } else {
        ++ip;
      }
    }
  }
  RemoveEni(eni_id, link, deadline, "drain ENI " + eni_id);
}

// Tears the ENI's link down, detaches and deletes it in the cloud, and
// forgets it; on failure it stays recorded as detaching, retried in 10 s.
void Pool::RemoveEni(const std::string& eni_id, const EniLink& link, SteadyTime deadline,
                     const std::string& what) {
  try {
    datapath_->Teardown(link);
    DeleteEniInCloud(eni_id, true, deadline);
    std::lock_guard lock(mu_);
    ForgetEniLocked(eni_id);
  } catch (const std::exception& e) {
    NoteError(what, e);
    std::lock_guard lock(mu_);
    if (auto it = enis_.find(eni_id); it != enis_.end()) {
      it->second.busy = false;
      it->second.retry_after = clock_->Now() + std::chrono::seconds(10);
    }
  }
}

void Pool::UnassignTask(std::string eni_id, std::vector<std::string> ips) {
  bool gone = false;
  std::set<std::string> still;  // assigned in the cloud after a refused call
  try {
    Api()->UnassignPrivateIpAddresses(eni_id, ips, aliyun::RpcClient::NewUuid());
    gone = true;
  } catch (const CloudError& e) {
    gone = IsNotFound(e);
    if (!gone) NoteError("unassign " + std::to_string(ips.size()) + " addresses of " + eni_id, e);
    if (e.Is("InvalidIp.IpUnassigned")) {
      // ECS refuses the whole call when one address is not assigned (any
      // more): forget those, keep the rest for the next round.
      try {
        for (const auto& n : Api()->DescribeNetworkInterfaces(aliyun::EniQuery::ByIds({eni_id}))) {
          still.insert(n.private_ips.begin(), n.private_ips.end());
        }
        for (const auto& ip : ips) {
          if (!still.contains(ip)) Log(TRELLIS_LOG_INFO, ip + " is not assigned any more");
        }
      } catch (const CloudError& d) {
        still.insert(ips.begin(), ips.end());
      }
    }
  }
  std::lock_guard lock(mu_);
  for (const auto& ip : ips) {
    auto it = ips_.find(ip);
    if (it == ips_.end() || it->second.state != IpState::kReleasing) continue;
    if (gone || (!still.empty() && !still.contains(ip))) {
      ips_.erase(it);
      store_->Delete("ip/" + ip);
    } else {
      it->second.state = IpState::kIdle;
    }
  }
  if (auto it = enis_.find(eni_id); it != enis_.end()) {
    it->second.busy = false;
    if (!gone) it->second.retry_after = clock_->Now() + std::chrono::seconds(5);
  }
  acquire_cv_.notify_all();
}

void Pool::RecoverOpTask(std::string token) {
  std::string vswitch;
  aliyun::CreateEniRequest req;
  {
    std::lock_guard lock(mu_);
    auto it = ops_.find(token);
    if (it == ops_.end()) return;
    vswitch = it->second.vswitch;
    req.vswitch_id = vswitch;
    req.security_groups = cfg_.security_groups;
    req.tags = cfg_.eni_tags;
    for (const auto& [k, v] : OurTagsLocked()) req.tags[k] = v;
    req.description = "trellis pod addresses of " + node_->instance_id;
    req.client_token = token;
  }
  try {
    // The same token returns the ENI the interrupted call created (or
    // creates it now, if that call never arrived).
    aliyun::NetworkInterfaceInfo info = Api()->CreateNetworkInterface(req);
    bool adopt;
    {
      std::lock_guard lock(mu_);
      int existing = creating_;
      for (const auto& [id, e] : enis_) existing += e.phase != Phase::kDetaching;
      adopt = existing < EniLimitLocked() && !enis_.contains(info.id);
      if (!enis_.contains(info.id)) {
        EniEntry e;
        e.id = info.id;
        e.mac = info.mac;
        e.vswitch = info.vswitch_id;
        e.primary_ip = info.primary_ip;
        e.token = token;
        e.slot = FreeSlotLocked();
        e.phase = adopt ? Phase::kAttaching : Phase::kDetaching;
        e.busy = true;
        e.created_ms = WallMs();
        if (auto v = vswitches_.find(e.vswitch); v != vswitches_.end()) e.cidr = v->second.cidr;
        e.prefix = PrefixOf(e.cidr);
        enis_[e.id] = e;
        PersistEniLocked(e);
      }
      ops_.erase(token);
      store_->Delete("op/" + token);
    }
    Log(TRELLIS_LOG_INFO, "recovered ENI " + info.id + " of an interrupted creation; " +
                              (adopt ? "adopting it" : "deleting it"));
    if (adopt) {
      ResumeTask(info.id);
    } else {
      DrainTask(info.id);
    }
  } catch (const CloudError& e) {
    NoteError("recover the interrupted ENI creation " + token, e);
    std::lock_guard lock(mu_);
    auto it = ops_.find(token);
    if (it == ops_.end()) return;
    if (e.kind() == CloudError::Kind::kApi &&
        (e.Is("InvalidVSwitchId") || e.Is("IdempotentParameterMismatch") ||
         e.Is("InvalidSecurityGroupId") || e.Is("QuotaExceed"))) {
      // The creation can never succeed with these parameters: nothing was
      // created under this token. Anything else tagged ours is GC's.
      ops_.erase(it);
      store_->Delete("op/" + token);
      return;
    }
    it->second.in_flight = false;
    it->second.retry_after = clock_->Now() + std::chrono::seconds(10);
  }
}

void Pool::AdoptTask(aliyun::NetworkInterfaceInfo info) {
  {
    std::lock_guard lock(mu_);
    if (enis_.contains(info.id)) return;
    EniEntry e;
    e.id = info.id;
    e.mac = info.mac;
    e.vswitch = info.vswitch_id;
    e.primary_ip = info.primary_ip;
    e.slot = FreeSlotLocked();
    e.phase = Phase::kAttaching;
    e.busy = true;
    e.created_ms = WallMs();
    if (auto v = vswitches_.find(e.vswitch); v != vswitches_.end()) e.cidr = v->second.cidr;
    e.prefix = PrefixOf(e.cidr);
    enis_[e.id] = e;
    PersistEniLocked(e);
    // Its addresses are ours too: the ENI was.
    for (const auto& ip : info.private_ips) {
      if (ip == info.primary_ip || ips_.contains(ip)) continue;
      IpEntry ie;
      ie.eni = info.id;
      ips_[ip] = ie;
      PersistIpLocked(ip, ie);
    }
  }
  Log(TRELLIS_LOG_INFO, "adopting ENI " + info.id + " (ours by its tags, attached here, unknown)");
  ResumeTask(info.id);
}

// ------------------------------------------------------------------- GC --

void Pool::RunGc() {
  std::lock_guard gc(gc_mu_);
  std::map<std::string, std::string> tags;
  std::string instance;
  {
    std::lock_guard lock(mu_);
    if (!node_ || stopping_) return;
    tags = OurTagsLocked();
    instance = node_->instance_id;
    next_gc_ = clock_->Now() + (cfg_.eni_gc_interval.count() > 0 ? cfg_.eni_gc_interval
                                                                  : std::chrono::hours(24 * 365));
  }
  auto api = Api();
  std::vector<aliyun::NetworkInterfaceInfo> listed;
  try {
    listed = api->DescribeNetworkInterfaces(aliyun::EniQuery::ByTags(tags));
  } catch (const CloudError& e) {
    NoteError("list our ENIs for GC", e);
    return;
  }
  std::vector<std::string> to_delete;
  std::vector<aliyun::NetworkInterfaceInfo> to_adopt;
  std::map<std::string, std::vector<std::string>> stray;  // ENI -> unknown secondary IPs
  std::vector<EniLink> teardown;
  {
    std::lock_guard lock(mu_);
    const SteadyTime now = clock_->Now();
    const Duration threshold = cfg_.eni_gc_threshold;
    std::set<std::string> listed_ids, cloud_ips;
    for (const auto& info : listed) {
      // Defence in depth: the filter asked for our tags; check them anyway.
      if (info.tags.count(kTagCluster) == 0 || info.tags.at(kTagCluster) != tags[kTagCluster] ||
          info.tags.count(kTagCreator) == 0 || info.tags.at(kTagCreator) != instance) {
        continue;
      }
      listed_ids.insert(info.id);
      auto it = enis_.find(info.id);
      if (it != enis_.end()) {
        EniEntry& e = it->second;
        e.missing_since.reset();
        if (e.phase != Phase::kReady || e.busy) continue;
        e.full = false;
        std::set<std::string> cloud(info.private_ips.begin(), info.private_ips.end());
        cloud.erase(info.primary_ip);
        for (const auto& ip : cloud) {
          cloud_ips.insert(ip);
          if (ips_.contains(ip)) continue;
          auto since = unknown_ip_since_.try_emplace(ip, now).first->second;
          if (now - since >= threshold) stray[e.id].push_back(ip);
        }
        // Ours in the pool but no longer in the cloud (after the same grace,
        // as a listing may lag behind an assignment).
        for (auto ip = ips_.begin(); ip != ips_.end();) {
          if (ip->second.eni != e.id || cloud.contains(ip->first)) {
            ++ip;
            continue;
          }
          std::string key = "gone:" + ip->first;
          cloud_ips.insert(key);
          auto since = unknown_ip_since_.try_emplace(key, now).first->second;
          if (now - since < threshold) {
            ++ip;
          } else if (ip->second.state == IpState::kInUse) {
            if (!e.vanished_logged) {
              Log(TRELLIS_LOG_ERROR, ip->first + " (in use by " + ip->second.cid +
                                         ") is no longer assigned to " + e.id + " in the cloud");
              e.vanished_logged = true;
            }
            ++ip;
          } else {
            Log(TRELLIS_LOG_WARN, ip->first + " is no longer assigned to " + e.id +
                                      " in the cloud; forgetting it");
            store_->Delete("ip/" + ip->first);
            ip = ips_.erase(ip);
          }
        }
        if (info.status == "Available") {
          Log(TRELLIS_LOG_WARN, "ENI " + e.id + " was detached out of band; forgetting it");
          teardown.push_back(LinkOfLocked(e));
          ForgetEniLocked(e.id);
        }
        continue;
      }
      if (info.status == "Available") {
        auto since = available_since_.try_emplace(info.id, now).first->second;
        if (now - since >= threshold) to_delete.push_back(info.id);
      } else if (info.status == "InUse" && info.instance_id == instance) {
        to_adopt.push_back(info);
      }
    }
    for (auto& [id, e] : enis_) {
      if (e.phase != Phase::kReady || listed_ids.contains(id) || e.busy) continue;
      if (!e.missing_since) e.missing_since = now;
      if (now - *e.missing_since < threshold) continue;
      bool used = false;
      for (const auto& [ip, ie] : ips_) used = used || (ie.eni == id && ie.state == IpState::kInUse);
      if (!used) {
        Log(TRELLIS_LOG_WARN, "ENI " + id + " is not listed by the cloud any more; forgetting it");
        teardown.push_back(LinkOfLocked(e));
      } else if (!e.vanished_logged) {
        Log(TRELLIS_LOG_ERROR, "ENI " + id + " is not listed by the cloud any more, but pods use it");
        e.vanished_logged = true;
      }
    }
    for (const auto& l : teardown) {
      if (enis_.contains(l.eni_id)) ForgetEniLocked(l.eni_id);
    }
    std::erase_if(available_since_, [&](const auto& kv) { return !listed_ids.contains(kv.first); });
    std::erase_if(unknown_ip_since_, [&](const auto& kv) { return !cloud_ips.contains(kv.first); });
    for (auto& [id, ips] : stray) enis_[id].busy = true;
  }
  for (const auto& l : teardown) {
    try {
      datapath_->Teardown(l);
    } catch (const std::exception& e) {
      NoteError("remove the datapath of ENI " + l.eni_id, e);
    }
  }
  SteadyTime deadline;
  {
    std::lock_guard lock(mu_);
    deadline = clock_->Now() + cfg_.eni_create_timeout;
  }
  for (const auto& id : to_delete) {
    try {
      Log(TRELLIS_LOG_INFO, "GC: deleting leaked ENI " + id + " (ours, Available past the threshold)");
      DeleteEniInCloud(id, false, deadline);
      std::lock_guard lock(mu_);
      available_since_.erase(id);
    } catch (const std::exception& e) {
      NoteError("GC: delete leaked ENI " + id, e);
    }
  }
  for (auto& [id, ips] : stray) {
    for (size_t i = 0; i < ips.size(); i += kMaxAssignPerCall) {
      std::vector<std::string> batch(ips.begin() + i,
                                     ips.begin() + std::min(ips.size(), i + kMaxAssignPerCall));
      try {
        Log(TRELLIS_LOG_INFO, "GC: unassigning " + std::to_string(batch.size()) +
                                  " addresses of " + id + " the pool does not know");
        api->UnassignPrivateIpAddresses(id, batch, aliyun::RpcClient::NewUuid());
      } catch (const CloudError& e) {
        // IpUnassigned: a listing that lagged behind an unassignment.
        if (!IsNotFound(e) && !e.Is("InvalidIp.IpUnassigned")) {
          NoteError("GC: unassign stray addresses of " + id, e);
        }
      }
    }
    std::lock_guard lock(mu_);
    if (auto it = enis_.find(id); it != enis_.end()) it->second.busy = false;
    for (const auto& ip : ips) unknown_ip_since_.erase(ip);
  }
  for (auto& info : to_adopt) {
    try {
      AdoptTask(info);
    } catch (const std::exception& e) {
      NoteError("adopt ENI " + info.id, e);
    }
  }
  std::lock_guard lock(mu_);
  wake_ = true;
  worker_cv_.notify_all();
}

// ------------------------------------------------------ address source --

std::vector<sdk::Address> Pool::Acquire(const sdk::Pod& pod, int family, uint32_t count) {
  if (family != 4) {
    throw Error(TRELLIS_E_INVALID,
                "eni: IPv" + std::to_string(family) + " pod addresses are not supported in ENI "
                "mode (ipam families must be [4])");
  }
  std::unique_lock lock(mu_);
  std::vector<sdk::Address> out;
  // Idempotent: a repeated call for the same attachment gets what it holds.
  for (const auto& [ip, e] : ips_) {
    if (e.state == IpState::kInUse && e.cid == pod.container_id && e.ifname == pod.ifname) {
      out.push_back(AddressLocked(ip, enis_.at(e.eni)));
    }
  }
  if (out.size() >= count) {
    out.resize(count);
    return out;
  }
  const SteadyTime deadline = clock_->Now() + cfg_.acquire_timeout;
  bool waited = false;
  while (out.size() < count) {
    if (stopping_) throw Error(TRELLIS_E_UNAVAILABLE, "eni: the module is stopping");
    const int64_t now_ms = WallMs();
    std::string pick;
    // Fill the ENI with the lowest slot first: the others can drain.
    int best_slot = INT32_MAX;
    int64_t next_cool = INT64_MAX;
    for (auto& [ip, e] : ips_) {
      if (UsableLocked(ip, e, now_ms)) {
        int slot = enis_.at(e.eni).slot;
        if (slot < best_slot) {
          best_slot = slot;
          pick = ip;
        }
      } else if (e.state == IpState::kCooling) {
        next_cool = std::min(next_cool, e.released_ms + cfg_.reuse_delay.count());
      }
    }
    if (!pick.empty()) {
      IpEntry& e = ips_[pick];
      IpEntry before = e;
      e.state = IpState::kInUse;
      e.cid = pod.container_id;
      e.ifname = pod.ifname;
      e.pod = pod.k8s_name.empty() ? "" : pod.k8s_namespace + "/" + pod.k8s_name;
      try {
        PersistIpLocked(pick, e);  // durable before it is handed out
      } catch (...) {
        e = before;
        throw;
      }
      out.push_back(AddressLocked(pick, enis_.at(e.eni)));
      continue;
    }
    auto give_back = [&] {  // what this call took already
      for (const auto& a : out) {
        auto& e = ips_[a.IpString()];
        e.state = IpState::kIdle;
        e.cid.clear();
        e.ifname.clear();
        e.pod.clear();
        PersistIpLocked(a.IpString(), e);
      }
    };
    if (starved_ && next_cool == INT64_MAX) {
      give_back();
      throw Error(TRELLIS_E_EXHAUSTED, "eni: " + *starved_);
    }
    SteadyTime now = clock_->Now();
    if (now >= deadline) {
      give_back();
      std::string why = !node_ ? "the instance is not discovered yet" +
                                     (discovery_error_.empty() ? "" : " (" + discovery_error_ + ")")
                               : "no address became idle";
      std::string last;
      {
        std::lock_guard el(errors_mu_);
        if (!errors_.empty()) last = "; last cloud error: " + errors_.back().message;
      }
      throw Error(TRELLIS_E_UNAVAILABLE, "eni: " + why + " within " +
                                             std::to_string(cfg_.acquire_timeout.count()) + " ms" +
                                             last);
    }
    SteadyTime until = deadline;
    if (next_cool != INT64_MAX) {
      until = std::min(until, now + milliseconds(std::max<int64_t>(1, next_cool - now_ms)));
    }
    if (!waited) {
      waited = true;
      Log(TRELLIS_LOG_DEBUG, "no idle address for " + pod.container_id + "; waiting for the pool");
    }
    waiters_++;
    wake_ = true;
    worker_cv_.notify_all();
    // Woken when an address may have become idle; re-checks at least every
    // 500 ms (cooling ends, the deadline).
    acquire_cv_.wait_for(lock, std::min<Duration>(until - now, std::chrono::milliseconds(500)));
    waiters_--;
  }
  if (waited) {
    wake_ = true;
    worker_cv_.notify_all();
  }
  // Running low: refill in the background, never on this path.
  int idle = 0;
  int64_t now_ms = WallMs();
  for (auto& [ip, e] : ips_) idle += UsableLocked(ip, e, now_ms);
  if (idle < cfg_.min_pool_size) {
    wake_ = true;
    worker_cv_.notify_all();
  }
  PublishCountsLocked();
  return out;
}

void Pool::Release(const std::vector<sdk::Address>& addresses) {
  std::lock_guard lock(mu_);
  int64_t now_ms = WallMs();
  for (const auto& a : addresses) {
    auto it = ips_.find(a.IpString());
    if (it == ips_.end() || it->second.state != IpState::kInUse) continue;  // not ours / not held
    IpEntry& e = it->second;
    IpEntry before = e;
    e.state = cfg_.reuse_delay.count() > 0 ? IpState::kCooling : IpState::kIdle;
    e.released_ms = now_ms;
    e.cid.clear();
    e.ifname.clear();
    e.pod.clear();
    try {
      PersistIpLocked(it->first, e);
    } catch (...) {
      e = before;
      throw;
    }
  }
  acquire_cv_.notify_all();
  wake_ = true;
  worker_cv_.notify_all();
  PublishCountsLocked();
}

// ------------------------------------------------------------ operations --

void Pool::EnsureNow() {
  SteadyTime deadline;
  {
    std::lock_guard lock(mu_);
    if (!node_) {
      throw Error(TRELLIS_E_UNAVAILABLE,
                  "eni: the instance is not discovered yet" +
                      (discovery_error_.empty() ? std::string() : ": " + discovery_error_));
    }
    deadline = clock_->Now() + cfg_.eni_create_timeout + cfg_.api_call_timeout;
  }
  for (int round = 0; round < 100; ++round) {
    bool launched = ReconcileOnce();
    if (!WaitTasksIdle(deadline)) break;
    if (!launched) break;
  }
  ReapTasks(false);
  PoolCounts c = Counts();
  std::lock_guard lock(mu_);
  int want = std::min(cfg_.min_pool_size, CapacityLocked() * EniLimitLocked());
  if (c.idle + c.cooling < want) {
    std::string last;
    {
      std::lock_guard el(errors_mu_);
      if (!errors_.empty()) last = ": last cloud error: " + errors_.back().message;
    }
    throw Error(TRELLIS_E_UNAVAILABLE, "eni: the pool holds " + std::to_string(c.idle) +
                                           " idle addresses, min_pool_size is " +
                                           std::to_string(cfg_.min_pool_size) + last);
  }
}

void Pool::GcNow() {
  {
    std::lock_guard lock(mu_);
    if (!node_) throw Error(TRELLIS_E_UNAVAILABLE, "eni: the instance is not discovered yet");
  }
  RunGc();
}

Json Pool::Health() {
  std::lock_guard lock(mu_);
  std::string message;
  bool degraded = false;
  if (!node_) {
    degraded = true;
    message = "discovering the instance" +
              (discovery_error_.empty() ? std::string() : ": " + discovery_error_);
  } else if (starved_) {
    degraded = true;
    message = *starved_;
  } else {
    std::lock_guard el(errors_mu_);
    if (!errors_.empty() && WallMs() - errors_.back().wall_ms < 60000) {
      message = "recent cloud error: " + errors_.back().message;
    }
  }
  return {{"healthy", true}, {"degraded", degraded}, {"message", message}};
}

Json Pool::Status() {
  std::lock_guard lock(mu_);
  const int64_t now_ms = WallMs();
  const SteadyTime now = clock_->Now();
  Json enis = Json::array();
  std::vector<const EniEntry*> order;
  for (const auto& [id, e] : enis_) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->slot < b->slot; });
  for (const EniEntry* e : order) {
    Json ips = Json::array();
    for (auto& [ip, ie] : ips_) {
      if (ie.eni != e->id) continue;
      bool usable = UsableLocked(ip, ie, now_ms);
      Json j = {{"ip", ip}, {"state", usable ? "idle" : IpStateName(static_cast<int>(ie.state))}};
      if (ie.state == IpState::kInUse) {
        j["container_id"] = ie.cid;
        j["ifname"] = ie.ifname;
        if (!ie.pod.empty()) j["pod"] = ie.pod;
      }
      if (ie.state == IpState::kCooling) {
        j["reusable_in_ms"] = std::max<int64_t>(0, ie.released_ms + cfg_.reuse_delay.count() - now_ms);
      }
      ips.push_back(j);
    }
    const char* phase = e->phase == Phase::kReady       ? "ready"
                        : e->phase == Phase::kDetaching ? "detaching"
                                                        : "attaching";
    enis.push_back({{"id", e->id},
                    {"mac", e->mac},
                    {"link", e->link},
                    {"link_ready", e->link_ok},
                    {"vswitch", e->vswitch},
                    {"cidr", e->cidr},
                    {"gateway", e->gateway},
                    {"primary_ip", e->primary_ip},
                    {"route_table", cfg_.route_table_base + static_cast<uint32_t>(e->slot)},
                    {"state", phase},
                    {"addresses", ips}});
  }
  PoolCounts c = CountsLocked();
  Json vsw = Json::array();
  for (const auto& [id, v] : vswitches_) {
    Json j = {{"id", id}, {"zone", v.zone}, {"cidr", v.cidr}};
    if (v.available >= 0) j["available_addresses"] = v.available;
    if (now < v.backoff_until) {
      j["exhausted_for_ms"] =
          std::chrono::duration_cast<milliseconds>(v.backoff_until - now).count();
    }
    vsw.push_back(j);
  }
  Json errors = Json::array();
  {
    std::lock_guard el(errors_mu_);
    for (const auto& n : errors_) {
      errors.push_back({{"time", aliyun::FormatIso8601(aliyun::WallTime(milliseconds(n.wall_ms)))},
                        {"operation", n.op},
                        {"code", n.code},
                        {"message", n.message}});
    }
  }
  Json out = {{"mode", "ENIMultiIP"},
              {"ready", node_.has_value()},
              {"counts",
               {{"total", c.total}, {"idle", c.idle}, {"in_use", c.in_use}, {"cooling", c.cooling}}},
              {"enis", enis},
              {"vswitches", vsw},
              {"pool",
               {{"min_pool_size", cfg_.min_pool_size},
                {"max_pool_size", cfg_.max_pool_size},
                {"reuse_delay_ms", cfg_.reuse_delay.count()},
                {"eni_count_min", cfg_.eni_count_min},
                {"eni_count_max", cfg_.eni_count_max},
                {"waiting_pods", waiters_},
                {"creating_enis", creating_ + static_cast<int>(std::count_if(
                                                   ops_.begin(), ops_.end(),
                                                   [](const auto& o) { return !o.second.creating; }))}}},
              {"last_errors", errors}};
  if (node_) {
    out["instance"] = {{"id", node_->instance_id},     {"type", node_->instance_type},
                       {"zone", node_->zone},          {"vpc", node_->vpc_id},
                       {"primary_eni", node_->primary_eni_id}};
    out["quota"] = {{"enis", node_->eni_quota},
                    {"addresses_per_eni", node_->ips_per_eni},
                    {"secondary_eni_limit", EniLimitLocked()},
                    {"pod_addresses_per_eni", CapacityLocked()},
                    {"attached_secondary_enis", c.enis}};
  } else {
    out["discovery_error"] = discovery_error_;
  }
  if (starved_) out["starved"] = *starved_;
  return out;
}

void Pool::Reconfigure(EniConfig config, std::shared_ptr<aliyun::EcsApi> ecs) {
  std::lock_guard lock(mu_);
  bool routes_changed =
      config.default_route != cfg_.default_route || config.policy_routes != cfg_.policy_routes;
  cfg_ = std::move(config);
  if (ecs) ecs_ = std::move(ecs);
  if (routes_changed) {
    for (auto& [id, e] : enis_) e.routes_stale = true;
  }
  starved_.reset();
  create_retry_after_ = SteadyTime{};
  wake_ = true;
  worker_cv_.notify_all();
  acquire_cv_.notify_all();
}

void Pool::Deactivate() {
  // Stop what is in flight, then undo everything.
  Stop();
  clock_->Reset();
  std::vector<EniLink> links;
  std::vector<std::string> ids;
  std::map<std::string, std::string> tags;
  std::string instance;
  SteadyTime deadline;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, e] : enis_) {
      links.push_back(LinkOfLocked(e));
      ids.push_back(id);
    }
    tags = OurTagsLocked();
    instance = node_ ? node_->instance_id : "";
    deadline = clock_->Now() + cfg_.eni_create_timeout;
  }
  for (const auto& l : links) {
    try {
      datapath_->Teardown(l);
    } catch (const std::exception& e) {
      NoteError("remove the datapath of ENI " + l.eni_id, e);
    }
  }
  // Ours by record, then ours by tags (interrupted creations included).
  if (!instance.empty()) {
    try {
      for (const auto& info : Api()->DescribeNetworkInterfaces(aliyun::EniQuery::ByTags(tags))) {
        if (std::find(ids.begin(), ids.end(), info.id) == ids.end() &&
            (info.instance_id.empty() || info.instance_id == instance)) {
          ids.push_back(info.id);
        }
      }
    } catch (const std::exception& e) {
      NoteError("list our ENIs", e);
    }
  }
  for (const auto& id : ids) {
    try {
      DeleteEniInCloud(id, true, deadline);
    } catch (const std::exception& e) {
      NoteError("delete ENI " + id, e);
    }
  }
  std::lock_guard lock(mu_);
  for (const char* prefix : {"ip/", "eni/", "op/"}) {
    for (const auto& [key, value] : store_->Scan(prefix)) store_->Delete(key);
  }
  ips_.clear();
  enis_.clear();
  ops_.clear();
}

}  // namespace trellis::eni
