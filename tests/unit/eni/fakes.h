// Fakes for the ENI unit tests: a clock that moves only when told (or when
// someone sleeps on it), an HTTP transport answering from a function, and an
// in-memory ECS with ECS's rules (statuses, quotas, ClientToken, tags).
#ifndef TRELLIS_TESTS_UNIT_ENI_FAKES_H_
#define TRELLIS_TESTS_UNIT_ENI_FAKES_H_

#include <atomic>
#include <ostream>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "aliyun/clock.h"
#include "aliyun/ecs.h"
#include "aliyun/http.h"
#include "aliyun/signer.h"
#include "pool.h"

namespace trellis::eni {
inline void PrintTo(const EniLink::Route& r, std::ostream* os) {
  *os << r.destination << " via " << r.gateway << " dev(" << r.mac << ")";
}
}  // namespace trellis::eni

namespace trellis::eni::testing {

class FakeClock : public aliyun::Clock {
 public:
  aliyun::SteadyTime Now() override {
    std::lock_guard l(mu_);
    return now_;
  }
  aliyun::WallTime WallNow() override {
    std::lock_guard l(mu_);
    return wall_;
  }
  bool SleepFor(aliyun::Duration d) override {
    std::lock_guard l(mu_);
    if (cancelled_) return false;
    sleeps_.push_back(d);
    now_ += d;
    wall_ += std::chrono::duration_cast<aliyun::WallTime::duration>(d);
    return true;
  }
  void Cancel() override {
    std::lock_guard l(mu_);
    cancelled_ = true;
  }
  bool Cancelled() override {
    std::lock_guard l(mu_);
    return cancelled_;
  }
  void Reset() override {
    std::lock_guard l(mu_);
    cancelled_ = false;
  }
  void Advance(aliyun::Duration d) {
    std::lock_guard l(mu_);
    now_ += d;
    wall_ += std::chrono::duration_cast<aliyun::WallTime::duration>(d);
  }
  std::vector<aliyun::Duration> sleeps() {
    std::lock_guard l(mu_);
    return sleeps_;
  }

 private:
  std::mutex mu_;
  aliyun::SteadyTime now_ = aliyun::SteadyTime{} + std::chrono::hours(1000);
  aliyun::WallTime wall_ = std::chrono::system_clock::from_time_t(1700000000);
  std::vector<aliyun::Duration> sleeps_;
  bool cancelled_ = false;
};

// Parses "a=1&b=%20" into a map, decoding percent escapes.
inline aliyun::Params ParseQuery(const std::string& q) {
  aliyun::Params out;
  size_t start = 0;
  auto decode = [](const std::string& s) {
    std::string o;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '%' && i + 2 < s.size()) {
        o.push_back(static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16)));
        i += 2;
      } else {
        o.push_back(s[i]);
      }
    }
    return o;
  };
  while (start <= q.size()) {
    size_t amp = q.find('&', start);
    std::string kv = q.substr(start, amp == std::string::npos ? std::string::npos : amp - start);
    if (!kv.empty()) {
      size_t eq = kv.find('=');
      out[decode(kv.substr(0, eq))] = eq == std::string::npos ? "" : decode(kv.substr(eq + 1));
    }
    if (amp == std::string::npos) break;
    start = amp + 1;
  }
  return out;
}

class FakeTransport : public aliyun::HttpTransport {
 public:
  using Handler = std::function<aliyun::HttpResponse(const aliyun::HttpRequest&)>;
  explicit FakeTransport(Handler h) : handler_(std::move(h)) {}
  aliyun::HttpResponse Send(const aliyun::HttpRequest& r) override {
    {
      std::lock_guard l(mu_);
      requests_.push_back(r);
    }
    return handler_(r);
  }
  std::vector<aliyun::HttpRequest> requests() {
    std::lock_guard l(mu_);
    return requests_;
  }
  // The query parameters of request `i`.
  aliyun::Params Query(size_t i) {
    auto r = requests().at(i);
    return ParseQuery(r.target.substr(r.target.find('?') + 1));
  }

 private:
  Handler handler_;
  std::mutex mu_;
  std::vector<aliyun::HttpRequest> requests_;
};

// An in-memory ECS for the pool tests.
class FakeEcs : public aliyun::EcsApi {
 public:
  struct Eni {
    aliyun::NetworkInterfaceInfo info;
    std::string token;
  };
  std::string instance_id = "i-node1";
  int eni_quota = 3;      // the primary included
  int ips_per_eni = 10;   // its primary included
  std::map<std::string, std::pair<std::string, int64_t>> vswitches = {
      {"vsw-a", {"192.168.10.0/24", 250}}};  // id -> (cidr, free)

  aliyun::InstanceTypeInfo DescribeInstanceType(const std::string& t) override {
    Count("DescribeInstanceTypes");
    return {t, eni_quota, ips_per_eni, 0};
  }
  std::vector<aliyun::VSwitchInfo> DescribeVSwitches(const std::string& vpc,
                                                     const std::vector<std::string>& ids) override {
    std::lock_guard l(mu_);
    CountLocked("DescribeVSwitches");
    std::vector<aliyun::VSwitchInfo> out;
    for (const auto& [id, v] : vswitches) {
      if (!ids.empty() && std::find(ids.begin(), ids.end(), id) == ids.end()) continue;
      aliyun::VSwitchInfo s;
      s.id = id;
      s.cidr = v.first;
      s.zone = "cn-hangzhou-a";
      s.available_ips = v.second;
      out.push_back(s);
    }
    return out;
  }
  aliyun::NetworkInterfaceInfo CreateNetworkInterface(const aliyun::CreateEniRequest& r) override {
    std::lock_guard l(mu_);
    CountLocked("CreateNetworkInterface");
    FaultLocked("CreateNetworkInterface");
    for (const auto& [id, e] : enis_) {
      if (!r.client_token.empty() && e.token == r.client_token) return e.info;  // idempotent
    }
    auto& vs = vswitches.at(r.vswitch_id);
    if (vs.second <= 0) throw IpNotEnough("CreateNetworkInterface");
    Eni e;
    e.token = r.client_token;
    e.info.id = "eni-" + std::to_string(next_++);
    e.info.status = "Available";
    e.info.vswitch_id = r.vswitch_id;
    e.info.mac = Mac(next_);
    e.info.primary_ip = NextIpLocked(r.vswitch_id);
    e.info.private_ips = {e.info.primary_ip};
    e.info.tags = r.tags;
    e.info.security_groups = r.security_groups;
    enis_[e.info.id] = e;
    return e.info;
  }
  void AttachNetworkInterface(const std::string& eni, const std::string& instance,
                              const std::string&) override {
    std::lock_guard l(mu_);
    CountLocked("AttachNetworkInterface");
    FaultLocked("AttachNetworkInterface");
    auto& e = enis_.at(eni);
    if (e.info.status != "Available") return;  // ECS: the same attach again is harmless here
    int attached = 1;
    for (const auto& [id, x] : enis_) attached += x.info.instance_id == instance;
    if (attached >= eni_quota) {
      throw aliyun::CloudError(aliyun::CloudError::Kind::kApi, "AttachNetworkInterface",
                               "InvalidOperation.MaxEniCountExceeded", 403, "r",
                               "ECS AttachNetworkInterface: too many ENIs");
    }
    e.info.status = "InUse";
    e.info.instance_id = instance;
  }
  std::vector<aliyun::NetworkInterfaceInfo> DescribeNetworkInterfaces(
      const aliyun::EniQuery& q) override {
    std::lock_guard l(mu_);
    CountLocked("DescribeNetworkInterfaces");
    FaultLocked("DescribeNetworkInterfaces");
    std::vector<aliyun::NetworkInterfaceInfo> out;
    for (const auto& [id, e] : enis_) {
      if (!q.ids.empty() && std::find(q.ids.begin(), q.ids.end(), id) == q.ids.end()) continue;
      bool tags_match = true;
      for (const auto& [k, v] : q.tags) {
        auto it = e.info.tags.find(k);
        tags_match = tags_match && it != e.info.tags.end() && it->second == v;
      }
      if (!tags_match) continue;
      if (!q.instance_id.empty() && e.info.instance_id != q.instance_id) continue;
      out.push_back(e.info);
    }
    return out;
  }
  std::vector<std::string> AssignPrivateIpAddresses(const std::string& eni, int count,
                                                    const std::string&) override {
    std::lock_guard l(mu_);
    CountLocked("AssignPrivateIpAddresses");
    assign_sizes.push_back(count);
    FaultLocked("AssignPrivateIpAddresses");
    auto& e = enis_.at(eni);
    if (count > 10) throw Invalid("AssignPrivateIpAddresses", "more than 10");
    if (static_cast<int>(e.info.private_ips.size()) + count > ips_per_eni) {
      throw aliyun::CloudError(aliyun::CloudError::Kind::kApi, "AssignPrivateIpAddresses",
                               "QuotaExceed.PrivateIpAddress", 403, "r", "per-ENI quota");
    }
    // All or nothing, as ECS does.
    if (vswitches.at(e.info.vswitch_id).second < count) throw IpNotEnough("AssignPrivateIpAddresses");
    std::vector<std::string> got;
    for (int i = 0; i < count; ++i) {
      got.push_back(NextIpLocked(e.info.vswitch_id));
      e.info.private_ips.push_back(got.back());
    }
    return got;
  }
  void UnassignPrivateIpAddresses(const std::string& eni, const std::vector<std::string>& ips,
                                  const std::string&) override {
    std::lock_guard l(mu_);
    CountLocked("UnassignPrivateIpAddresses");
    FaultLocked("UnassignPrivateIpAddresses");
    auto& e = enis_.at(eni);
    for (const auto& ip : ips) {
      auto it = std::find(e.info.private_ips.begin(), e.info.private_ips.end(), ip);
      if (it != e.info.private_ips.end() && ip != e.info.primary_ip) {
        e.info.private_ips.erase(it);
        vswitches.at(e.info.vswitch_id).second++;
      }
    }
  }
  void DetachNetworkInterface(const std::string& eni, const std::string&,
                              const std::string&) override {
    std::lock_guard l(mu_);
    CountLocked("DetachNetworkInterface");
    FaultLocked("DetachNetworkInterface");
    auto& e = enis_.at(eni);
    e.info.status = "Available";
    e.info.instance_id.clear();
  }
  void DeleteNetworkInterface(const std::string& eni, const std::string&) override {
    std::lock_guard l(mu_);
    CountLocked("DeleteNetworkInterface");
    FaultLocked("DeleteNetworkInterface");
    auto it = enis_.find(eni);
    if (it == enis_.end()) {
      throw aliyun::CloudError(aliyun::CloudError::Kind::kApi, "DeleteNetworkInterface",
                               "InvalidEniId.NotFound", 404, "r", "no such ENI");
    }
    if (it->second.info.status != "Available") {
      throw aliyun::CloudError(aliyun::CloudError::Kind::kApi, "DeleteNetworkInterface",
                               "IncorrectStatus", 403, "r", "not Available");
    }
    vswitches.at(it->second.info.vswitch_id).second += it->second.info.private_ips.size();
    enis_.erase(it);
  }
  std::vector<aliyun::SecurityGroupRule> DescribeSecurityGroupRules(const std::string&,
                                                                    const std::string&) override {
    return {};
  }
  void AuthorizeSecurityGroupRule(const std::string&, const aliyun::SecurityGroupRule&,
                                  const std::string&) override {}
  void RevokeSecurityGroupRule(const std::string&, const aliyun::SecurityGroupRule&,
                               const std::string&) override {}

  // Out-of-band changes, as the emulator's admin API makes them.
  std::string AddEni(std::map<std::string, std::string> tags, const std::string& instance,
                     int secondary) {
    std::string id;
    {
      aliyun::CreateEniRequest r;
      r.vswitch_id = vswitches.begin()->first;
      r.tags = std::move(tags);
      id = CreateNetworkInterface(r).id;
    }
    std::lock_guard l(mu_);
    auto& e = enis_.at(id);
    for (int i = 0; i < secondary; ++i) e.info.private_ips.push_back(NextIpLocked(e.info.vswitch_id));
    if (!instance.empty()) {
      e.info.status = "InUse";
      e.info.instance_id = instance;
    }
    return id;
  }
  void AddIp(const std::string& eni) {
    std::lock_guard l(mu_);
    auto& e = enis_.at(eni);
    e.info.private_ips.push_back(NextIpLocked(e.info.vswitch_id));
  }
  // The next `n` calls of `action` fail with `code` (an API error).
  void Fail(const std::string& action, const std::string& code, int n) {
    std::lock_guard l(mu_);
    faults_[action] = {code, n};
  }
  int Calls(const std::string& action) {
    std::lock_guard l(mu_);
    return calls_[action];
  }
  int TotalCalls() {
    std::lock_guard l(mu_);
    int n = 0;
    for (const auto& [a, c] : calls_) n += c;
    return n;
  }
  int WriteCalls() {
    std::lock_guard l(mu_);
    int n = 0;
    for (const auto& [a, c] : calls_) n += a.rfind("Describe", 0) == 0 ? 0 : c;
    return n;
  }
  std::vector<aliyun::NetworkInterfaceInfo> All() {
    std::lock_guard l(mu_);
    std::vector<aliyun::NetworkInterfaceInfo> out;
    for (const auto& [id, e] : enis_) out.push_back(e.info);
    return out;
  }
  std::optional<aliyun::NetworkInterfaceInfo> Get(const std::string& id) {
    std::lock_guard l(mu_);
    auto it = enis_.find(id);
    if (it == enis_.end()) return std::nullopt;
    return it->second.info;
  }
  std::vector<int> assign_sizes;

 private:
  static aliyun::CloudError IpNotEnough(const std::string& action) {
    return aliyun::CloudError(aliyun::CloudError::Kind::kApi, action, "InvalidVSwitchId.IpNotEnough",
                              400, "r", "ECS " + action + ": the vSwitch has no free address");
  }
  static aliyun::CloudError Invalid(const std::string& action, const std::string& m) {
    return aliyun::CloudError(aliyun::CloudError::Kind::kApi, action, "InvalidParameter", 400, "r",
                              m);
  }
  static std::string Mac(int n) {
    char buf[18];
    std::snprintf(buf, sizeof buf, "02:00:00:00:%02x:%02x", (n >> 8) & 0xff, n & 0xff);
    return buf;
  }
  std::string NextIpLocked(const std::string& vswitch) {
    auto& vs = vswitches.at(vswitch);
    vs.second--;
    int n = ip_next_[vswitch]++ + 1;
    std::string base = vs.first.substr(0, vs.first.rfind('.'));
    return base + "." + std::to_string(n);
  }
  void Count(const std::string& a) {
    std::lock_guard l(mu_);
    CountLocked(a);
  }
  void CountLocked(const std::string& a) { calls_[a]++; }
  void FaultLocked(const std::string& a) {
    auto it = faults_.find(a);
    if (it == faults_.end() || it->second.second <= 0) return;
    it->second.second--;
    throw aliyun::CloudError(aliyun::CloudError::Kind::kApi, a, it->second.first, 400, "r-fault",
                             "ECS " + a + ": " + it->second.first + " (injected)");
  }

  std::mutex mu_;
  int next_ = 1;
  std::map<std::string, Eni> enis_;
  std::map<std::string, int> ip_next_;
  std::map<std::string, int> calls_;
  std::map<std::string, std::pair<std::string, int>> faults_;
};

class MemStore : public StateStore {
 public:
  std::optional<std::string> Get(const std::string& k) override {
    std::lock_guard l(mu_);
    auto it = kv_.find(k);
    if (it == kv_.end()) return std::nullopt;
    return it->second;
  }
  void Put(const std::string& k, const std::string& v) override {
    std::lock_guard l(mu_);
    kv_[k] = v;
  }
  void Delete(const std::string& k) override {
    std::lock_guard l(mu_);
    kv_.erase(k);
  }
  std::vector<std::pair<std::string, std::string>> Scan(const std::string& prefix) override {
    std::lock_guard l(mu_);
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& [k, v] : kv_) {
      if (k.rfind(prefix, 0) == 0) out.push_back({k, v});
    }
    return out;
  }
  size_t Size() {
    std::lock_guard l(mu_);
    return kv_.size();
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::string> kv_;
};

class FakeDatapath : public EniDatapath {
 public:
  std::string Setup(const EniLink& link, aliyun::SteadyTime) override {
    std::lock_guard l(mu_);
    setups[link.eni_id] = link;
    return "eni" + link.eni_id.substr(4);
  }
  void Teardown(const EniLink& link) override {
    std::lock_guard l(mu_);
    setups.erase(link.eni_id);
    teardowns.push_back(link.eni_id);
  }
  bool LinkPresent(const std::string&) override { return true; }
  std::map<std::string, EniLink> Setups() {
    std::lock_guard l(mu_);
    return setups;
  }
  std::map<std::string, EniLink> setups;
  std::vector<std::string> teardowns;

 private:
  std::mutex mu_;
};

class FakeDiscovery : public NodeDiscovery {
 public:
  explicit FakeDiscovery(FakeEcs* ecs) : ecs_(ecs) {}
  NodeInfo Discover() override {
    NodeInfo n;
    n.instance_id = ecs_->instance_id;
    n.instance_type = "ecs.g6.large";
    n.region = "cn-hangzhou";
    n.zone = "cn-hangzhou-a";
    n.vpc_id = "vpc-test";
    n.primary_mac = "02:00:00:00:ff:01";
    n.primary_eni_id = "eni-primary";
    n.primary_ip = "192.168.10.250";
    n.primary_gateway = "192.168.10.253";
    n.vswitch_id = "vsw-a";
    auto t = ecs_->DescribeInstanceType("ecs.g6.large");
    n.eni_quota = t.eni_quantity;
    n.ips_per_eni = t.ipv4_per_eni;
    return n;
  }
  // As the metadata service answers for an attached interface.
  InterfaceNetwork Interface(const std::string&) override {
    return {"192.168.10.253", "192.168.10.0/24"};
  }

 private:
  FakeEcs* ecs_;
};

class FakeObserver : public PoolObserver {
 public:
  void Log(int, const std::string& m) override {
    std::lock_guard l(mu_);
    logs.push_back(m);
  }
  void EniCreationFailed(const std::string& code) override {
    std::lock_guard l(mu_);
    creation_failures.push_back(code);
  }
  void Counts(const PoolCounts& c) override {
    std::lock_guard l(mu_);
    last = c;
  }
  std::mutex mu_;
  std::vector<std::string> logs, creation_failures;
  PoolCounts last;
};

}  // namespace trellis::eni::testing

#endif  // TRELLIS_TESTS_UNIT_ENI_FAKES_H_
