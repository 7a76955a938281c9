// eni: Alibaba Cloud ENI provisioning for pod addresses (Terway's ENIMultiIP
// mode). Provides the address-source interface (the ipam module with
// `source: eni` takes its addresses from here) and the eni interface
// (trellisctl pool, ensure, gc). The pool logic is in pool.cc, the node
// datapath in datapath.cc, the cloud clients in plugins/common/aliyun.
#include <trellis/plugin.hpp>

#include <memory>
#include <mutex>

#include "aliyun/credentials.h"
#include "aliyun/ecs.h"
#include "aliyun/metadata.h"
#include "config.h"
#include "datapath.h"
#include "pool.h"

namespace trellis::eni {
namespace {

using aliyun::CloudError;
using aliyun::Endpoint;
using sdk::Error;

constexpr const char* kDefaultMetadataEndpoint = "http://100.100.100.200";

// Endpoints as the config names them, or the defaults. Throws sdk::Error.
Endpoint EcsEndpoint(const EniConfig& c, const std::string& region) {
  std::string text = !c.ecs_endpoint.empty() ? c.ecs_endpoint
                                             : "https://ecs-vpc." + region + ".aliyuncs.com";
  try {
    return Endpoint::Parse(text, "ecs_endpoint", Endpoint::PlainHttp::kLoopbackOnly);
  } catch (const CloudError& e) {
    throw Error(TRELLIS_E_INVALID, e.what());
  }
}

Endpoint MetadataEndpoint(const EniConfig& c) {
  std::string text = c.metadata_endpoint.empty() ? kDefaultMetadataEndpoint : c.metadata_endpoint;
  try {
    return Endpoint::Parse(text, "metadata_endpoint", Endpoint::PlainHttp::kLoopbackOrMetadata);
  } catch (const CloudError& e) {
    throw Error(TRELLIS_E_INVALID, e.what());
  }
}

class HostStore : public StateStore {
 public:
  explicit HostStore(sdk::Host host) : host_(host) {}
  std::optional<std::string> Get(const std::string& key) override { return host_.Get(key); }
  void Put(const std::string& key, const std::string& value) override { host_.Put(key, value); }
  void Delete(const std::string& key) override { host_.Delete(key); }
  std::vector<std::pair<std::string, std::string>> Scan(const std::string& prefix) override {
    return host_.Scan(prefix);
  }

 private:
  sdk::Host host_;
};

// Metrics of the module, registered with the host.
class Metrics : public PoolObserver, public aliyun::RpcObserver {
 public:
  explicit Metrics(sdk::Host host) : host_(host) {
    latency_ = host_.RegisterMetric(
        TRELLIS_METRIC_HISTOGRAM, "trellis_eni_openapi_request_duration_seconds",
        "ECS OpenAPI requests (every attempt), by action and result code (OK when it succeeded).",
        {"action", "code"}, {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10});
    throttled_ = host_.RegisterMetric(TRELLIS_METRIC_COUNTER, "trellis_eni_openapi_throttled_total",
                                      "ECS OpenAPI requests refused with Throttling*, by action.",
                                      {"action"});
    failures_ = host_.RegisterMetric(TRELLIS_METRIC_COUNTER, "trellis_eni_creation_failures_total",
                                     "ENIs that could not be created and attached, by error code.",
                                     {"code"});
    addresses_ = host_.RegisterMetric(
        TRELLIS_METRIC_GAUGE, "trellis_eni_pool_addresses",
        "Pod addresses of the ENI pool, by state (total, idle, in_use, cooling).", {"state"});
    attached_ = host_.RegisterMetric(TRELLIS_METRIC_GAUGE, "trellis_eni_attached_enis",
                                     "Secondary ENIs attached and ready for pod addresses.");
    limit_ = host_.RegisterMetric(
        TRELLIS_METRIC_GAUGE, "trellis_eni_max_enis",
        "Secondary ENIs this node may attach (instance type quota, eni_count_max).");
    host_.AddMetric(failures_, {"none"}, 0);
  }

  void OnAttempt(const std::string& action, const std::string& code, double seconds) override {
    host_.ObserveMetric(latency_, {action, code}, seconds);
    if (code.rfind("Throttling", 0) == 0) host_.AddMetric(throttled_, {action}, 1);
  }
  void Log(int level, const std::string& message) override { host_.Log(level, message); }
  void EniCreationFailed(const std::string& code) override {
    host_.AddMetric(failures_, {code}, 1);
  }
  void Counts(const PoolCounts& c) override {
    host_.SetMetric(addresses_, {"total"}, c.total);
    host_.SetMetric(addresses_, {"idle"}, c.idle);
    host_.SetMetric(addresses_, {"in_use"}, c.in_use);
    host_.SetMetric(addresses_, {"cooling"}, c.cooling);
    host_.SetMetric(attached_, {}, c.enis);
    host_.SetMetric(limit_, {}, c.eni_limit);
  }

 private:
  sdk::Host host_;
  uint32_t latency_, throttled_, failures_, addresses_, attached_, limit_;
};

// The cloud side: metadata, credentials and the ECS client, built from one
// config. The ECS client is made on first use: its default endpoint and the
// RegionId it sends need the region, which may come from the metadata
// service.
class Cloud : public aliyun::EcsApi {
 public:
  Cloud(const EniConfig& cfg, aliyun::Clock* clock, aliyun::RpcObserver* observer)
      : cfg_(cfg), clock_(clock), observer_(observer) {
    transport_ = std::make_shared<aliyun::HttplibTransport>(cfg.ca_file);
    metadata_ = std::make_shared<aliyun::MetadataClient>(MetadataEndpoint(cfg), transport_, clock);
    aliyun::CredentialSources src;
    src.inline_access_key = cfg.access_key;
    src.inline_secret_key = cfg.secret_key;
    src.credential_path = cfg.credential_path;
    src.ram_role = cfg.ram_role;
    credentials_ = aliyun::MakeCredentialProvider(src, metadata_, clock);
  }

  aliyun::MetadataClient& metadata() { return *metadata_; }
  std::string CredentialSource() const { return credentials_->Source(); }
  void UpdateLimits(const EniConfig& cfg) {
    std::lock_guard lock(mu_);
    cfg_ = cfg;
    if (client_) client_->rpc().UpdateLimits(cfg.default_rate, cfg.rate_limits, cfg.max_concurrent);
  }

  aliyun::InstanceTypeInfo DescribeInstanceType(const std::string& t) override {
    return Client().DescribeInstanceType(t);
  }
  std::vector<aliyun::VSwitchInfo> DescribeVSwitches(const std::string& vpc,
                                                     const std::vector<std::string>& ids) override {
    return Client().DescribeVSwitches(vpc, ids);
  }
  aliyun::NetworkInterfaceInfo CreateNetworkInterface(const aliyun::CreateEniRequest& r) override {
    return Client().CreateNetworkInterface(r);
  }
  void AttachNetworkInterface(const std::string& eni, const std::string& instance,
                              const std::string& token) override {
    Client().AttachNetworkInterface(eni, instance, token);
  }
  std::vector<aliyun::NetworkInterfaceInfo> DescribeNetworkInterfaces(
      const aliyun::EniQuery& q) override {
    return Client().DescribeNetworkInterfaces(q);
  }
  std::vector<std::string> AssignPrivateIpAddresses(const std::string& eni, int count,
                                                    const std::string& token) override {
    return Client().AssignPrivateIpAddresses(eni, count, token);
  }
  void UnassignPrivateIpAddresses(const std::string& eni, const std::vector<std::string>& ips,
                                  const std::string& token) override {
    Client().UnassignPrivateIpAddresses(eni, ips, token);
  }
  void DetachNetworkInterface(const std::string& eni, const std::string& instance,
                              const std::string& token) override {
    Client().DetachNetworkInterface(eni, instance, token);
  }
  void DeleteNetworkInterface(const std::string& eni, const std::string& token) override {
    Client().DeleteNetworkInterface(eni, token);
  }
  std::vector<aliyun::SecurityGroupRule> DescribeSecurityGroupRules(
      const std::string& sg, const std::string& direction) override {
    return Client().DescribeSecurityGroupRules(sg, direction);
  }
  void AuthorizeSecurityGroupRule(const std::string& sg, const aliyun::SecurityGroupRule& r,
                                  const std::string& token) override {
    Client().AuthorizeSecurityGroupRule(sg, r, token);
  }
  void RevokeSecurityGroupRule(const std::string& sg, const aliyun::SecurityGroupRule& r,
                               const std::string& token) override {
    Client().RevokeSecurityGroupRule(sg, r, token);
  }

 private:
  aliyun::EcsClient& Client() {
    std::lock_guard lock(mu_);
    if (client_) return *client_;
    std::string region = cfg_.region.empty() ? metadata_->RegionId() : cfg_.region;
    aliyun::RpcOptions o;
    o.endpoint = EcsEndpoint(cfg_, region);
    o.region = region;
    o.attempt_timeout = cfg_.api_timeout;
    o.call_timeout = cfg_.api_call_timeout;
    o.default_limit = cfg_.default_rate;
    o.limits = cfg_.rate_limits;
    o.max_concurrent = cfg_.max_concurrent;
    o.user_agent = "trellis-eni/1.0";
    client_ = std::make_unique<aliyun::EcsClient>(std::make_shared<aliyun::RpcClient>(
        o, transport_, credentials_, clock_, observer_));
    return *client_;
  }

  std::mutex mu_;
  EniConfig cfg_;
  aliyun::Clock* clock_;
  aliyun::RpcObserver* observer_;
  std::shared_ptr<aliyun::HttpTransport> transport_;
  std::shared_ptr<aliyun::MetadataClient> metadata_;
  std::shared_ptr<aliyun::CredentialProvider> credentials_;
  std::unique_ptr<aliyun::EcsClient> client_;
};

class Discovery : public NodeDiscovery {
 public:
  explicit Discovery(std::function<std::shared_ptr<Cloud>()> cloud) : cloud_(std::move(cloud)) {}

  NodeInfo Discover() override {
    auto cloud = cloud_();
    aliyun::MetadataClient& md = cloud->metadata();
    NodeInfo n;
    n.instance_id = md.InstanceId();
    n.region = md.RegionId();
    n.zone = md.ZoneId();
    n.vpc_id = md.VpcId();
    n.vswitch_id = md.VSwitchId();
    n.instance_type = md.InstanceType();
    n.primary_mac = md.PrimaryMac();
    aliyun::InterfaceMetadata primary = md.Interface(n.primary_mac);
    n.primary_eni_id = primary.eni_id;
    n.primary_ip = primary.primary_ip;
    n.primary_gateway = primary.gateway;
    n.vpc_cidr = primary.vpc_cidr;
    aliyun::InstanceTypeInfo t = cloud->DescribeInstanceType(n.instance_type);
    n.eni_quota = t.eni_quantity;
    n.ips_per_eni = t.ipv4_per_eni;
    return n;
  }

  InterfaceNetwork Interface(const std::string& mac) override {
    aliyun::InterfaceMetadata m = cloud_()->metadata().Interface(mac);
    return {m.gateway, m.vswitch_cidr};
  }

 private:
  std::function<std::shared_ptr<Cloud>()> cloud_;
};

class Eni {
 public:
  static constexpr const char* kName = "eni";
  static constexpr const char* kVersion = "1.0.0";
  static constexpr const char* kDescription =
      "Alibaba Cloud ENI warm pool (ENIMultiIP): pod addresses from secondary ENIs, per-ENI "
      "policy routing";

  static void Validate(const Json& config) {
    EniConfig c = EniConfig::Parse(config);
    MetadataEndpoint(c);
    if (!c.ecs_endpoint.empty()) EcsEndpoint(c, c.region);
  }

  Eni(sdk::Host host, const Json& config)
      : host_(host), cfg_(EniConfig::Parse(config)), metrics_(host), store_(host) {
    for (const auto& w : cfg_.warnings) host_.Warn(w);
    cloud_ = std::make_shared<Cloud>(cfg_, &clock_, &metrics_);
    host_.Info("ECS credentials from " + cloud_->CredentialSource());
    datapath_ = std::make_unique<NetlinkEniDatapath>(&clock_);
    discovery_ = std::make_unique<Discovery>([this] { return CurrentCloud(); });
    pool_ = std::make_unique<Pool>(cfg_, cloud_, &store_, datapath_.get(), discovery_.get(),
                                   &clock_, &metrics_);
    pool_->Start();
  }

  // Daemon stop: threads end, ENIs, addresses and routes stay.
  ~Eni() { pool_->Stop(); }

  void Reconfigure(const Json& config) {
    EniConfig next = EniConfig::Parse(config);
    for (const auto& w : next.warnings) host_.Warn(w);
    std::shared_ptr<Cloud> fresh;
    {
      std::lock_guard lock(mu_);
      if (!cfg_.SameCloudAccess(next)) {
        fresh = std::make_shared<Cloud>(next, &clock_, &metrics_);
        cloud_ = fresh;
        host_.Info("cloud access changed; ECS credentials from " + fresh->CredentialSource());
      } else {
        cloud_->UpdateLimits(next);
      }
      cfg_ = next;
    }
    pool_->Reconfigure(next, fresh);
  }

  Json Status() {
    Json s = pool_->Health();
    Json counts = pool_->Status()["counts"];
    s["addresses"] = counts;
    return s;
  }

  void Deactivate() {
    host_.Info("module disabled: removing the ENI datapath and deleting this node's ENIs");
    pool_->Deactivate();
  }

  std::vector<sdk::Address> AcquireAddresses(const sdk::Pod& pod, int family, uint32_t count) {
    return pool_->Acquire(pod, family, count);
  }
  void ReleaseAddresses(const std::vector<sdk::Address>& addresses) { pool_->Release(addresses); }

  Json PoolStatus() {
    Json s = pool_->Status();
    s["cloud"] = {{"signing_with", CurrentCloud()->CredentialSource()}};
    return s;
  }
  void EnsurePool() { pool_->EnsureNow(); }
  void GcEnis() { pool_->GcNow(); }

 private:
  std::shared_ptr<Cloud> CurrentCloud() {
    std::lock_guard lock(mu_);
    return cloud_;
  }

  sdk::Host host_;
  std::mutex mu_;
  EniConfig cfg_;
  aliyun::RealClock clock_;
  Metrics metrics_;
  HostStore store_;
  std::shared_ptr<Cloud> cloud_;
  std::unique_ptr<NetlinkEniDatapath> datapath_;
  std::unique_ptr<Discovery> discovery_;
  std::unique_ptr<Pool> pool_;
};

}  // namespace
}  // namespace trellis::eni

TRELLIS_PLUGIN(trellis::eni::Eni);
