// The eni module's config: Terway's eni_conf keys plus trellis's own.
// Parse() refuses anything it does not understand with sdk::Error
// (TRELLIS_E_INVALID) naming the key and the reason.
#ifndef TRELLIS_PLUGINS_ENI_CONFIG_H_
#define TRELLIS_PLUGINS_ENI_CONFIG_H_

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "aliyun/rate_limiter.h"

namespace trellis::eni {

using Json = nlohmann::json;
using Millis = std::chrono::milliseconds;

// Which ENI a route leaves through: the pod's own ENI ("self"), the node's
// primary ENI ("primary", eth0) or a named one ("eni-...").
struct EniRef {
  std::string ref = "self";
  bool operator==(const EniRef&) const = default;
};

struct PolicyRoute {
  std::string destination;  // CIDR
  EniRef via;
  bool operator==(const PolicyRoute&) const = default;
};

struct EniConfig {
  std::string region;  // "" : the metadata service's region-id
  std::vector<std::string> vswitches;                              // any zone
  std::map<std::string, std::vector<std::string>> zone_vswitches;  // zone -> ids
  std::string vswitch_selection = "most";  // "most" free addresses first, or "ordered"
  std::vector<std::string> security_groups;
  std::map<std::string, std::string> eni_tags;
  std::string cluster_id;

  int eni_count_min = 0;
  int eni_count_max = 0;  // 0: as many as the instance type allows
  int min_pool_size = 0;
  int max_pool_size = 5;
  int eni_create_retry = 3;
  Millis eni_create_timeout{300000};
  Millis eni_gc_interval{300000};  // 0: no periodic GC
  Millis eni_gc_threshold{300000};
  Millis reuse_delay{30000};
  Millis idle_reclaim_after{60000};  // an address idle this long may be given back
  Millis acquire_timeout{60000};
  Millis pool_check_interval{10000};
  int max_concurrent = 10;
  uint32_t route_table_base = 100;

  std::string ecs_endpoint;       // "" : https://ecs-vpc.<region>.aliyuncs.com
  std::string metadata_endpoint;  // "" : http://100.100.100.200
  std::string ca_file;
  std::string credential_path;
  std::string access_key, secret_key;  // inline; accepted with a warning
  std::string ram_role;
  Millis api_timeout{10000};
  Millis api_call_timeout{60000};
  aliyun::RateLimit default_rate{10, 20};
  std::map<std::string, aliyun::RateLimit> rate_limits;

  EniRef default_route{"self"};
  std::vector<PolicyRoute> policy_routes;

  std::vector<std::string> warnings;  // for the plugin to log once

  // Environment: TERWAY_ENI_MAX_CONCURRENT, TERWAY_ROUTE_TABLE_ID_BASE,
  // CLUSTER_ID, REGION fill what the config leaves unset.
  static EniConfig Parse(const Json& config);

  // The vSwitches to use in `zone`, in configured order.
  std::vector<std::string> VSwitchesFor(const std::string& zone) const;
  // Whether `next` can be applied to a running instance as is.
  bool SameCloudAccess(const EniConfig& next) const;
};

}  // namespace trellis::eni

#endif  // TRELLIS_PLUGINS_ENI_CONFIG_H_
