// Client of the ECS instance metadata service (http://100.100.100.200 on a
// real instance): who this instance is, its network interfaces by MAC, and
// the STS credentials of its RAM role.
//
// Every GET has a timeout and is retried (transport errors, timeouts, 5xx,
// 429) with back-off. Values that cannot change while the instance lives
// (instance id, region, zone, VPC, an interface's ENI id, gateway and vSwitch)
// are cached after the first answer; lists (MACs, private IPs) are cached for
// `list_ttl`; credentials are never cached here.
#ifndef TRELLIS_PLUGINS_COMMON_ALIYUN_METADATA_H_
#define TRELLIS_PLUGINS_COMMON_ALIYUN_METADATA_H_

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "aliyun/clock.h"
#include "aliyun/http.h"

namespace trellis::aliyun {

struct MetadataOptions {
  std::chrono::milliseconds timeout{2000};  // per attempt
  int attempts = 3;
  std::chrono::milliseconds backoff{200};  // doubles per attempt
  std::chrono::milliseconds list_ttl{5000};
};

struct InterfaceMetadata {
  std::string mac;  // lower case
  std::string eni_id;
  std::string gateway;
  std::string netmask;
  std::string vswitch_id;
  std::string vswitch_cidr;
  std::string vpc_cidr;
  std::string primary_ip;
  std::vector<std::string> private_ips;
};

// THREADING: all methods may be called concurrently.
class MetadataClient {
 public:
  MetadataClient(Endpoint endpoint, std::shared_ptr<HttpTransport> transport, Clock* clock,
                 MetadataOptions options = {});

  // GET /latest/meta-data/<path>, trimmed. Throws CloudError: kApi with code
  // "NotFound" (HTTP 404) or "HttpNNN", kTimeout, kTransport, kCancelled.
  std::string Get(const std::string& path);

  std::string InstanceId() { return Static("instance-id"); }
  std::string RegionId() { return Static("region-id"); }
  std::string ZoneId() { return Static("zone-id"); }
  std::string VpcId() { return Static("vpc-id"); }
  std::string VSwitchId() { return Static("vswitch-id"); }
  std::string VpcCidr() { return Static("vpc-cidr-block"); }
  std::string PrimaryMac() { return Lower(Static("mac")); }
  std::string InstanceType() { return Static("instance/instance-type"); }
  // MACs of the attached interfaces, lower case.
  std::vector<std::string> Macs();
  InterfaceMetadata Interface(const std::string& mac);
  // The RAM role attached to the instance; "" when none.
  std::string RamRole();

  const Endpoint& endpoint() const { return endpoint_; }

  // Parses a list answer: a JSON array, or one item per line (a trailing '/'
  // of directory entries removed).
  static std::vector<std::string> ParseList(const std::string& body);

 private:
  std::string Static(const std::string& path);
  static std::string Lower(std::string s);

  Endpoint endpoint_;
  std::shared_ptr<HttpTransport> transport_;
  Clock* clock_;
  MetadataOptions options_;
  std::mutex mu_;
  std::map<std::string, std::string> static_;
  struct Cached {
    std::string value;
    SteadyTime at;
  };
  std::map<std::string, Cached> lists_;
};

}  // namespace trellis::aliyun

#endif  // TRELLIS_PLUGINS_COMMON_ALIYUN_METADATA_H_
