// Cloud access for a plugin that calls ECS: the config keys every such plugin
// takes (region, endpoints, credential sources, client limits), parsed the
// same way everywhere, and an EcsApi built from them.
//
// Keys (all optional):
//   region             "" : REGION from the environment, else the metadata
//                      service's region-id
//   ecs_endpoint       "" : https://ecs-vpc.<region>.aliyuncs.com; plain
//                      http only to loopback
//   metadata_endpoint  "" : http://100.100.100.200
//   ca_file            a CA bundle replacing the system one
//   credential_path    a mounted Secret directory or JSON file
//   access_key, secret_key   inline (accepted with a warning)
//   ram_role           "" : the instance's role, discovered
//   api_timeout        per attempt (default 10s)
//   api_call_timeout   all attempts and back-off of one call (default 60s)
//   rate_limit         {default | <Action>: qps | {qps, burst}}
//   max_concurrent     cloud calls in flight (default 10)
#ifndef TRELLIS_PLUGINS_COMMON_ALIYUN_CLOUD_H_
#define TRELLIS_PLUGINS_COMMON_ALIYUN_CLOUD_H_

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "aliyun/credentials.h"
#include "aliyun/ecs.h"
#include "aliyun/metadata.h"
#include "aliyun/rate_limiter.h"
#include "aliyun/rpc_client.h"

namespace trellis::aliyun {

using Millis = std::chrono::milliseconds;

struct CloudAccess {
  std::string region;
  std::string ecs_endpoint;
  std::string metadata_endpoint;
  std::string ca_file;
  std::string credential_path;
  std::string access_key, secret_key;
  std::string ram_role;
  Millis api_timeout{10000};
  Millis api_call_timeout{60000};
  RateLimit default_rate{10, 20};
  std::map<std::string, RateLimit> rate_limits;
  int max_concurrent = 10;

  // The keys Parse reads.
  static const std::set<std::string>& Keys();
  // Reads the keys above from the config object `j` and ignores all others
  // (the caller checks for unknown keys). Appends what deserves a warning
  // (an inline secret) to `warnings`. Throws std::invalid_argument with
  // "<key>: <why>" (never a secret's value).
  static CloudAccess Parse(const nlohmann::json& j, std::vector<std::string>* warnings);
  // Checks that the endpoints parse (`region` stands in when the ECS
  // endpoint is derived from it). Throws std::invalid_argument.
  void CheckEndpoints() const;
  // Same region, endpoints, credential sources and timeouts: a session built
  // for `o` would be the same as one built for this (limits aside).
  bool SameAccess(const CloudAccess& o) const;
};

// "30", 30, "30s", "500ms", "5m", "1h" -> milliseconds (a bare number is
// seconds). Throws std::invalid_argument naming `field`.
// Config values, shared by the plugins that link this library: each throws
// std::invalid_argument("<key>: <why>"); callers turn that into their
// TRELLIS_E_INVALID error.
std::string String(const nlohmann::json& v, const std::string& key);
bool Bool(const nlohmann::json& v, const std::string& key);
int Int(const nlohmann::json& v, const std::string& key, int min, int max);
// A string or a list of non-empty strings.
std::vector<std::string> StringList(const nlohmann::json& v, const std::string& key);
Millis ParseDuration(const nlohmann::json& v, const std::string& field);
// 5 or {"qps": 5, "burst": 10}. Throws std::invalid_argument naming `field`.
RateLimit ParseRateLimit(const nlohmann::json& v, const std::string& field);

// An EcsApi on one CloudAccess: the metadata client and the credential
// provider are made at once; the ECS client on first use, because its
// default endpoint and the RegionId it sends need the region, which may come
// from the metadata service.
//
// THREADING: every method may be called concurrently.
class CloudSession : public EcsApi {
 public:
  // Throws CloudError (kInvalid: an endpoint; kCredentials: no source).
  CloudSession(CloudAccess access, Clock* clock, RpcObserver* observer, std::string user_agent);

  MetadataClient& metadata() { return *metadata_; }
  // Where the credentials come from ("environment (ACCESS_KEY_ID)"); never
  // a secret.
  std::string CredentialSource() const { return credentials_->Source(); }
  // New rate limits and concurrency for the running client.
  void UpdateLimits(const CloudAccess& access);

  InstanceTypeInfo DescribeInstanceType(const std::string& t) override;
  std::vector<VSwitchInfo> DescribeVSwitches(const std::string& vpc,
                                             const std::vector<std::string>& ids) override;
  NetworkInterfaceInfo CreateNetworkInterface(const CreateEniRequest& r) override;
  void AttachNetworkInterface(const std::string& eni, const std::string& instance,
                              const std::string& token) override;
  std::vector<NetworkInterfaceInfo> DescribeNetworkInterfaces(const EniQuery& q) override;
  std::vector<std::string> AssignPrivateIpAddresses(const std::string& eni, int count,
                                                    const std::string& token) override;
  void UnassignPrivateIpAddresses(const std::string& eni, const std::vector<std::string>& ips,
                                  const std::string& token) override;
  void DetachNetworkInterface(const std::string& eni, const std::string& instance,
                              const std::string& token) override;
  void DeleteNetworkInterface(const std::string& eni, const std::string& token) override;
  std::vector<SecurityGroupRule> DescribeSecurityGroupRules(const std::string& sg,
                                                            const std::string& direction) override;
  void AuthorizeSecurityGroupRule(const std::string& sg, const SecurityGroupRule& r,
                                  const std::string& token) override;
  void RevokeSecurityGroupRule(const std::string& sg, const SecurityGroupRule& r,
                               const std::string& token) override;

 private:
  EcsClient& Client();

  std::mutex mu_;
  CloudAccess access_;
  Clock* clock_;
  RpcObserver* observer_;
  std::string user_agent_;
  std::shared_ptr<HttpTransport> transport_;
  std::shared_ptr<MetadataClient> metadata_;
  std::shared_ptr<CredentialProvider> credentials_;
  std::unique_ptr<EcsClient> client_;
};

}  // namespace trellis::aliyun

#endif  // TRELLIS_PLUGINS_COMMON_ALIYUN_CLOUD_H_
