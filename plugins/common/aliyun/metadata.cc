#include "aliyun/metadata.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <sstream>

#include "aliyun/errors.h"

namespace trellis::aliyun {

MetadataClient::MetadataClient(Endpoint endpoint, std::shared_ptr<HttpTransport> transport,
                               Clock* clock, MetadataOptions options)
    : endpoint_(std::move(endpoint)),
      transport_(std::move(transport)),
      clock_(clock),
      options_(options) {}

std::string MetadataClient::Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string MetadataClient::Get(const std::string& path) {
  HttpRequest req;
  req.scheme = endpoint_.scheme;
  req.host = endpoint_.host;
  req.port = endpoint_.port;
  req.target = "/latest/meta-data/" + path;
  req.timeout = options_.timeout;
  std::string last;
  bool timed_out = false;
  auto backoff = options_.backoff;
  for (int attempt = 0; attempt < std::max(1, options_.attempts); ++attempt) {
    if (attempt > 0) {
      if (!clock_->SleepFor(backoff)) break;
      backoff *= 2;
    }
    if (clock_->Cancelled()) break;
    HttpResponse res = transport_->Send(req);
    if (res.status == 200) {
      std::string v = res.body;
      while (!v.empty() && std::isspace(static_cast<unsigned char>(v.back()))) v.pop_back();
      return v;
    }
    if (res.status == 404) {
      throw CloudError(CloudError::Kind::kApi, path, "NotFound", 404, "",
                       "instance metadata " + path + ": not found (HTTP 404)");
    }
    if (res.status != 0 && res.status < 500 && res.status != 429) {
      throw CloudError(CloudError::Kind::kApi, path, "Http" + std::to_string(res.status),
                       res.status, "",
                       "instance metadata " + path + ": HTTP " + std::to_string(res.status));
    }
    timed_out = res.timed_out;
    last = res.status != 0 ? "HTTP " + std::to_string(res.status) : res.error;
  }
  if (clock_->Cancelled()) {
    throw CloudError(CloudError::Kind::kCancelled, path, "Cancelled", 0, "",
                     "instance metadata " + path + ": cancelled");
  }
  throw CloudError(timed_out ? CloudError::Kind::kTimeout : CloudError::Kind::kTransport, path,
                   timed_out ? "Timeout" : "Transport", 0, "",
                   "instance metadata " + path + " at " + endpoint_.ToString() + ": " + last +
                       " (after " + std::to_string(std::max(1, options_.attempts)) + " attempts)");
}

std::string MetadataClient::Static(const std::string& path) {
  {
    std::lock_guard lock(mu_);
    if (auto it = static_.find(path); it != static_.end()) return it->second;
  }
  std::string v = Get(path);
  std::lock_guard lock(mu_);
  static_[path] = v;
  return v;
}

std::vector<std::string> MetadataClient::ParseList(const std::string& body) {
  std::vector<std::string> out;
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_array()) {
    for (const auto& v : j) {
      if (v.is_string()) out.push_back(v.get<std::string>());
    }
    return out;
  }
  std::istringstream in(body);
  std::string line;
  while (std::getline(in, line)) {
    while (!line.empty() && (std::isspace(static_cast<unsigned char>(line.back())) || line.back() == '/')) {
      line.pop_back();
    }
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

std::vector<std::string> MetadataClient::Macs() {
  const std::string path = "network/interfaces/macs/";
  {
    std::lock_guard lock(mu_);
    if (auto it = lists_.find(path);
        it != lists_.end() && clock_->Now() - it->second.at < options_.list_ttl) {
      auto v = ParseList(it->second.value);
      for (auto& m : v) m = Lower(m);
      return v;
    }
  }
  std::string body = Get(path);
  {
    std::lock_guard lock(mu_);
    lists_[path] = {body, clock_->Now()};
  }
  auto v = ParseList(body);
  for (auto& m : v) m = Lower(m);
  return v;
}

InterfaceMetadata MetadataClient::Interface(const std::string& mac_in) {
  InterfaceMetadata m;
  m.mac = Lower(mac_in);
  const std::string base = "network/interfaces/macs/" + m.mac + "/";
  m.eni_id = Static(base + "network-interface-id");
  m.gateway = Static(base + "gateway");
  m.vswitch_id = Static(base + "vswitch-id");
  m.vswitch_cidr = Static(base + "vswitch-cidr-block");
  m.primary_ip = Static(base + "primary-ip-address");
  // Optional on some instance generations.
  try {
    m.netmask = Static(base + "netmask");
  } catch (const CloudError& e) {
    if (e.code() != "NotFound") throw;
  }
  try {
    m.vpc_cidr = Static(base + "vpc-cidr-block");
  } catch (const CloudError& e) {
    if (e.code() != "NotFound") throw;
  }
  m.private_ips = ParseList(Get(base + "private-ipv4s"));
  return m;
}

std::string MetadataClient::RamRole() {
  try {
    auto roles = ParseList(Get("ram/security-credentials/"));
    return roles.empty() ? "" : roles.front();
  } catch (const CloudError& e) {
    if (e.code() == "NotFound") return "";
    throw;
  }
}

}  // namespace trellis::aliyun
