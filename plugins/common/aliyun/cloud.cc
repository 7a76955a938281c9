#include "aliyun/cloud.h"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>

#include "aliyun/http.h"

namespace trellis::aliyun {
namespace {

using Json = nlohmann::json;

constexpr const char* kDefaultMetadataEndpoint = "http://100.100.100.200";

std::invalid_argument Bad(const std::string& key, const std::string& why) {
  return std::invalid_argument(key + ": " + why);
}

const char* Env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : nullptr;
}

Endpoint EcsEndpointOf(const CloudAccess& a, const std::string& region) {
  std::string text =
      !a.ecs_endpoint.empty() ? a.ecs_endpoint : "https://ecs-vpc." + region + ".aliyuncs.com";
  return Endpoint::Parse(text, "ecs_endpoint", Endpoint::PlainHttp::kLoopbackOnly);
}

Endpoint MetadataEndpointOf(const CloudAccess& a) {
  return Endpoint::Parse(
      a.metadata_endpoint.empty() ? kDefaultMetadataEndpoint : a.metadata_endpoint,
      "metadata_endpoint", Endpoint::PlainHttp::kLoopbackOrMetadata);
}

}  // namespace

std::string String(const Json& v, const std::string& key) {
  if (!v.is_string()) throw Bad(key, "expected a string");
  return v.get<std::string>();
}

int Int(const Json& v, const std::string& key, int min, int max) {
  int64_t n;
  if (v.is_number_integer()) {
    n = v.get<int64_t>();
  } else if (v.is_string()) {
    const std::string s = v.get<std::string>();
    char* end = nullptr;
    n = std::strtoll(s.c_str(), &end, 10);
    if (s.empty() || *end != '\0') throw Bad(key, "expected an integer, got '" + s + "'");
  } else {
    throw Bad(key, "expected an integer");
  }
  if (n < min || n > max) {
    throw Bad(key, "must be between " + std::to_string(min) + " and " + std::to_string(max) +
                       ", got " + std::to_string(n));
  }
  return static_cast<int>(n);
}

bool Bool(const Json& v, const std::string& key) {
  if (!v.is_boolean()) throw Bad(key, "expected true or false");
  return v.get<bool>();
}

std::vector<std::string> StringList(const Json& v, const std::string& key) {
  if (v.is_string()) return {v.get<std::string>()};
  if (!v.is_array()) throw Bad(key, "expected a list of strings");
  std::vector<std::string> out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (!v[i].is_string() || v[i].get<std::string>().empty()) {
      throw Bad(key + "[" + std::to_string(i) + "]", "expected a non-empty string");
    }
    out.push_back(v[i].get<std::string>());
  }
  return out;
}

Millis ParseDuration(const Json& v, const std::string& field) {
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return Millis(v.get<int64_t>() * 1000);
  if (v.is_number_float() && v.get<double>() >= 0) {
    return Millis(static_cast<int64_t>(v.get<double>() * 1000));
  }
  if (v.is_string()) {
    std::string s = v.get<std::string>();
    int64_t mult = 1000;
    if (s.size() > 2 && s.ends_with("ms")) {
      mult = 1;
      s.resize(s.size() - 2);
    } else if (!s.empty() && (s.back() == 's' || s.back() == 'm' || s.back() == 'h')) {
      mult = s.back() == 's' ? 1000 : s.back() == 'm' ? 60000 : 3600000;
      s.pop_back();
    }
    char* end = nullptr;
    long long n = std::strtoll(s.c_str(), &end, 10);
    if (!s.empty() && *end == '\0' && n >= 0) return Millis(n * mult);
  }
  throw Bad(field, "expected a duration like 30, \"30s\", \"500ms\" or \"5m\"");
}

RateLimit ParseRateLimit(const Json& v, const std::string& key) {
  RateLimit r;
  if (v.is_number()) {
    r.qps = v.get<double>();
    r.burst = std::max(1, static_cast<int>(r.qps));
  } else if (v.is_object()) {
    for (const auto& [k, x] : v.items()) {
      if (k != "qps" && k != "burst") throw Bad(key + "." + k, "unknown key (known: qps, burst)");
    }
    if (!v.contains("qps") || !v["qps"].is_number()) throw Bad(key + ".qps", "expected a number");
    r.qps = v["qps"].get<double>();
    r.burst = v.contains("burst") ? Int(v["burst"], key + ".burst", 1, 10000)
                                  : std::max(1, static_cast<int>(r.qps));
  } else {
    throw Bad(key, "expected a number (calls per second) or {qps, burst}");
  }
  if (r.qps < 0) throw Bad(key, "qps must not be negative");
  return r;
}

const std::set<std::string>& CloudAccess::Keys() {
  static const std::set<std::string> keys = {
      "region",          "ecs_endpoint",     "metadata_endpoint", "ca_file",
      "credential_path", "access_key",       "secret_key",        "ram_role",
      "api_timeout",     "api_call_timeout", "rate_limit",        "max_concurrent"};
  return keys;
}

CloudAccess CloudAccess::Parse(const Json& j, std::vector<std::string>* warnings) {
  CloudAccess c;
  if (const char* v = Env("REGION")) c.region = v;
  if (!j.is_object()) return c;
  if (j.contains("region")) c.region = String(j["region"], "region");
  if (j.contains("ecs_endpoint")) c.ecs_endpoint = String(j["ecs_endpoint"], "ecs_endpoint");
  if (j.contains("metadata_endpoint")) {
    c.metadata_endpoint = String(j["metadata_endpoint"], "metadata_endpoint");
  }
  if (j.contains("ca_file")) c.ca_file = String(j["ca_file"], "ca_file");
  if (j.contains("credential_path")) {
    c.credential_path = String(j["credential_path"], "credential_path");
  }
  if (j.contains("access_key")) c.access_key = String(j["access_key"], "access_key");
  if (j.contains("secret_key")) c.secret_key = String(j["secret_key"], "secret_key");
  if (c.access_key.empty() != c.secret_key.empty()) {
    throw Bad(c.access_key.empty() ? "access_key" : "secret_key",
              "access_key and secret_key must be given together");
  }
  if (!c.access_key.empty() && warnings != nullptr) {
    warnings->push_back(
        "the module config carries an inline access_key/secret_key; prefer ACCESS_KEY_ID / "
        "ACCESS_KEY_SECRET from a Secret, or credential_path");
  }
  if (j.contains("ram_role")) c.ram_role = String(j["ram_role"], "ram_role");
  if (j.contains("api_timeout")) c.api_timeout = ParseDuration(j["api_timeout"], "api_timeout");
  if (j.contains("api_call_timeout")) {
    c.api_call_timeout = ParseDuration(j["api_call_timeout"], "api_call_timeout");
  }
  if (c.api_timeout < Millis(100)) throw Bad("api_timeout", "must be at least 100ms");
  if (c.api_call_timeout < c.api_timeout) {
    throw Bad("api_call_timeout", "must not be shorter than api_timeout");
  }
  if (j.contains("rate_limit")) {
    const Json& r = j["rate_limit"];
    if (!r.is_object()) throw Bad("rate_limit", "expected a map of API action -> {qps, burst}");
    for (const auto& [action, v] : r.items()) {
      if (action == "default") {
        c.default_rate = ParseRateLimit(v, "rate_limit.default");
      } else {
        c.rate_limits[action] = ParseRateLimit(v, "rate_limit." + action);
      }
    }
  }
  if (j.contains("max_concurrent")) {
    c.max_concurrent = Int(j["max_concurrent"], "max_concurrent", 1, 1000);
  }
  return c;
}

void CloudAccess::CheckEndpoints() const {
  try {
    MetadataEndpointOf(*this);
    // Without an explicit endpoint and region the default is known only once
    // the metadata service named the region: nothing to check yet.
    if (!ecs_endpoint.empty() || !region.empty()) EcsEndpointOf(*this, region);
  } catch (const CloudError& e) {
    throw std::invalid_argument(e.what());
  }
}

bool CloudAccess::SameAccess(const CloudAccess& n) const {
  return region == n.region && ecs_endpoint == n.ecs_endpoint &&
         metadata_endpoint == n.metadata_endpoint && ca_file == n.ca_file &&
         credential_path == n.credential_path && access_key == n.access_key &&
         secret_key == n.secret_key && ram_role == n.ram_role && api_timeout == n.api_timeout &&
         api_call_timeout == n.api_call_timeout;
}

CloudSession::CloudSession(CloudAccess access, Clock* clock, RpcObserver* observer,
                           std::string user_agent)
    : access_(std::move(access)),
      clock_(clock),
      observer_(observer),
      user_agent_(std::move(user_agent)) {
  transport_ = std::make_shared<HttplibTransport>(access_.ca_file);
  metadata_ = std::make_shared<MetadataClient>(MetadataEndpointOf(access_), transport_, clock_);
  CredentialSources src;
  src.inline_access_key = access_.access_key;
  src.inline_secret_key = access_.secret_key;
  src.credential_path = access_.credential_path;
  src.ram_role = access_.ram_role;
  credentials_ = MakeCredentialProvider(src, metadata_, clock_);
}

void CloudSession::UpdateLimits(const CloudAccess& a) {
  std::lock_guard lock(mu_);
  access_.default_rate = a.default_rate;
  access_.rate_limits = a.rate_limits;
  access_.max_concurrent = a.max_concurrent;
  if (client_) client_->rpc().UpdateLimits(a.default_rate, a.rate_limits, a.max_concurrent);
}

EcsClient& CloudSession::Client() {
  std::lock_guard lock(mu_);
  if (client_) return *client_;
  std::string region = access_.region.empty() ? metadata_->RegionId() : access_.region;
  RpcOptions o;
  o.endpoint = EcsEndpointOf(access_, region);
  o.region = region;
  o.attempt_timeout = access_.api_timeout;
  o.call_timeout = access_.api_call_timeout;
  o.default_limit = access_.default_rate;
  o.limits = access_.rate_limits;
  o.max_concurrent = access_.max_concurrent;
  o.user_agent = user_agent_;
  client_ = std::make_unique<EcsClient>(
      std::make_shared<RpcClient>(o, transport_, credentials_, clock_, observer_));
  return *client_;
}

InstanceTypeInfo CloudSession::DescribeInstanceType(const std::string& t) {
  return Client().DescribeInstanceType(t);
}
std::vector<VSwitchInfo> CloudSession::DescribeVSwitches(const std::string& vpc,
                                                         const std::vector<std::string>& ids) {
  return Client().DescribeVSwitches(vpc, ids);
}
NetworkInterfaceInfo CloudSession::CreateNetworkInterface(const CreateEniRequest& r) {
  return Client().CreateNetworkInterface(r);
}
void CloudSession::AttachNetworkInterface(const std::string& eni, const std::string& instance,
                                          const std::string& token) {
  Client().AttachNetworkInterface(eni, instance, token);
}
std::vector<NetworkInterfaceInfo> CloudSession::DescribeNetworkInterfaces(const EniQuery& q) {
  return Client().DescribeNetworkInterfaces(q);
}
std::vector<std::string> CloudSession::AssignPrivateIpAddresses(const std::string& eni, int count,
                                                                const std::string& token) {
  return Client().AssignPrivateIpAddresses(eni, count, token);
}
void CloudSession::UnassignPrivateIpAddresses(const std::string& eni,
                                              const std::vector<std::string>& ips,
                                              const std::string& token) {
  Client().UnassignPrivateIpAddresses(eni, ips, token);
}
void CloudSession::DetachNetworkInterface(const std::string& eni, const std::string& instance,
                                          const std::string& token) {
  Client().DetachNetworkInterface(eni, instance, token);
}
void CloudSession::DeleteNetworkInterface(const std::string& eni, const std::string& token) {
  Client().DeleteNetworkInterface(eni, token);
}
std::vector<SecurityGroupRule> CloudSession::DescribeSecurityGroupRules(
    const std::string& sg, const std::string& direction) {
  return Client().DescribeSecurityGroupRules(sg, direction);
}
void CloudSession::AuthorizeSecurityGroupRule(const std::string& sg, const SecurityGroupRule& r,
                                              const std::string& token) {
  Client().AuthorizeSecurityGroupRule(sg, r, token);
}
void CloudSession::RevokeSecurityGroupRule(const std::string& sg, const SecurityGroupRule& r,
                                           const std::string& token) {
  Client().RevokeSecurityGroupRule(sg, r, token);
}

}  // namespace trellis::aliyun
