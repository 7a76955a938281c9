// Value types of the C++ plugin SDK: owning C++ views of the C ABI structures.
#ifndef TRELLIS_TYPES_HPP_
#define TRELLIS_TYPES_HPP_

#include <trellis/abi.h>

#include <arpa/inet.h>
#include <sys/socket.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace trellis::sdk {

using Json = nlohmann::json;
using Labels = std::map<std::string, std::string>;

// Thrown by plugin code to fail a call with a chosen status code.
class Error : public std::runtime_error {
 public:
  Error(trellis_status code, const std::string& message)
      : std::runtime_error(message), code_(code) {}
  trellis_status code() const { return code_; }

 private:
  trellis_status code_;
};

// Reads the field `member` of a C struct written by a peer that may be older
// (smaller struct_size): absent fields read as value-initialised.
#define TRELLIS_SDK_FIELD(ptr, member)                                        \
  ((ptr)->struct_size >= offsetof(std::remove_pointer_t<decltype(ptr)>, member) + \
                             sizeof((ptr)->member)                            \
       ? (ptr)->member                                                        \
       : decltype((ptr)->member){})

struct Address {
  int family = 4;
  int prefix_len = 32;
  std::array<uint8_t, 16> ip{};
  std::array<uint8_t, 16> gateway{};  // all-zero: none
  uint32_t route_table = 0;
  std::string source_ref;
  uint8_t flags = 0;

  // "10.0.0.5/24" or "fd00::5/64"; throws Error(TRELLIS_E_INVALID) otherwise.
  static Address Parse(std::string_view cidr) {
    Address a;
    auto slash = cidr.find('/');
    std::string host(cidr.substr(0, slash));
    a.family = host.find(':') == std::string::npos ? 4 : 6;
    if (inet_pton(a.family == 4 ? AF_INET : AF_INET6, host.c_str(), a.ip.data()) != 1) {
      throw Error(TRELLIS_E_INVALID, "not an IP address: " + host);
    }
    a.prefix_len = a.family == 4 ? 32 : 128;
    if (slash != std::string_view::npos) {
      std::string p(cidr.substr(slash + 1));
      char* end = nullptr;
      long v = std::strtol(p.c_str(), &end, 10);
      if (p.empty() || *end != '\0' || v < 0 || v > a.prefix_len) {
        throw Error(TRELLIS_E_INVALID, "bad prefix length in " + std::string(cidr));
      }
      a.prefix_len = static_cast<int>(v);
    }
    return a;
  }
  static std::string Format(int family, const std::array<uint8_t, 16>& bytes) {
    char buf[INET6_ADDRSTRLEN] = {};
    inet_ntop(family == 4 ? AF_INET : AF_INET6, bytes.data(), buf, sizeof buf);
    return buf;
  }
  std::string IpString() const { return Format(family, ip); }
  std::string Cidr() const { return IpString() + "/" + std::to_string(prefix_len); }
  bool HasGateway() const { return gateway != std::array<uint8_t, 16>{}; }
  std::string GatewayString() const { return HasGateway() ? Format(family, gateway) : ""; }
  void SetGateway(std::string_view ip_text) {
    gateway = {};
    if (!ip_text.empty()) gateway = Parse(ip_text).ip;
  }

  static Address FromC(const trellis_address& c) {
    Address a;
    a.family = c.family;
    a.prefix_len = c.prefix_len;
    std::memcpy(a.ip.data(), c.ip, 16);
    std::memcpy(a.gateway.data(), c.gateway, 16);
    a.route_table = c.route_table;
    a.source_ref.assign(c.source_ref, strnlen(c.source_ref, sizeof c.source_ref));
    a.flags = c.flags;
    return a;
  }
  trellis_address ToC() const {
    trellis_address c{};
    c.family = static_cast<uint8_t>(family);
    c.prefix_len = static_cast<uint8_t>(prefix_len);
    c.flags = flags;
    c.route_table = route_table;
    std::memcpy(c.ip, ip.data(), 16);
    std::memcpy(c.gateway, gateway.data(), 16);
    std::strncpy(c.source_ref, source_ref.c_str(), sizeof c.source_ref - 1);
    return c;
  }
  bool operator==(const Address& o) const {
    return family == o.family && ip == o.ip && prefix_len == o.prefix_len;
  }
};

struct PodRef {
  std::string container_id;
  std::string ifname;
  bool operator<(const PodRef& o) const {
    return container_id != o.container_id ? container_id < o.container_id : ifname < o.ifname;
  }
  bool operator==(const PodRef& o) const = default;
};

// An owning copy of trellis_pod.
struct Pod {
  std::string container_id;
  std::string ifname;
  std::string netns;
  std::string network_name;
  std::string k8s_namespace;
  std::string k8s_name;
  std::string k8s_uid;
  Labels labels;
  Labels annotations;
  std::string runtime_config = "{}";  // JSON
  std::string cni_args = "{}";        // JSON
  std::string host_ifname;
  int32_t host_ifindex = 0;
  uint32_t mtu = 0;
  std::vector<Address> addresses;

  PodRef ref() const { return {container_id, ifname}; }
  Json RuntimeConfig() const { return Json::parse(runtime_config, nullptr, false); }
  Json CniArgs() const { return Json::parse(cni_args, nullptr, false); }

  static Pod FromC(const trellis_pod* c) {
    auto str = [](const char* s) { return s == nullptr ? std::string() : std::string(s); };
    auto kvs = [](const trellis_kv* kv, uint32_t n) {
      Labels out;
      for (uint32_t i = 0; kv != nullptr && i < n; ++i) out[kv[i].key] = kv[i].value;
      return out;
    };
    Pod p;
    p.container_id = str(TRELLIS_SDK_FIELD(c, container_id));
    p.ifname = str(TRELLIS_SDK_FIELD(c, ifname));
    p.netns = str(TRELLIS_SDK_FIELD(c, netns));
    p.network_name = str(TRELLIS_SDK_FIELD(c, network_name));
    p.k8s_namespace = str(TRELLIS_SDK_FIELD(c, k8s_namespace));
    p.k8s_name = str(TRELLIS_SDK_FIELD(c, k8s_name));
    p.k8s_uid = str(TRELLIS_SDK_FIELD(c, k8s_uid));
    p.labels = kvs(TRELLIS_SDK_FIELD(c, labels), TRELLIS_SDK_FIELD(c, n_labels));
    p.annotations = kvs(TRELLIS_SDK_FIELD(c, annotations), TRELLIS_SDK_FIELD(c, n_annotations));
    if (const char* rc = TRELLIS_SDK_FIELD(c, runtime_config); rc != nullptr && *rc) {
      p.runtime_config = rc;
    }
    if (const char* a = TRELLIS_SDK_FIELD(c, cni_args); a != nullptr && *a) p.cni_args = a;
    p.host_ifname = str(TRELLIS_SDK_FIELD(c, host_ifname));
    p.host_ifindex = TRELLIS_SDK_FIELD(c, host_ifindex);
    p.mtu = TRELLIS_SDK_FIELD(c, mtu);
    const trellis_address* addrs = TRELLIS_SDK_FIELD(c, addresses);
    for (uint32_t i = 0; addrs != nullptr && i < TRELLIS_SDK_FIELD(c, n_addresses); ++i) {
      p.addresses.push_back(Address::FromC(addrs[i]));
    }
    return p;
  }
};

// A trellis_pod borrowing from a Pod; lives as long as the Pod is unchanged.
class PodView {
 public:
  explicit PodView(const Pod& p) {
    auto fill = [](const Labels& m, std::vector<trellis_kv>& out) {
      for (const auto& [k, v] : m) out.push_back({k.c_str(), v.c_str()});
    };
    fill(p.labels, labels_);
    fill(p.annotations, annotations_);
    for (const auto& a : p.addresses) addresses_.push_back(a.ToC());
    c_.struct_size = sizeof c_;
    c_.mtu = p.mtu;
    c_.container_id = p.container_id.c_str();
    c_.ifname = p.ifname.c_str();
    c_.netns = p.netns.c_str();
    c_.network_name = p.network_name.c_str();
    c_.k8s_namespace = p.k8s_namespace.c_str();
    c_.k8s_name = p.k8s_name.c_str();
    c_.k8s_uid = p.k8s_uid.c_str();
    c_.labels = labels_.data();
    c_.n_labels = static_cast<uint32_t>(labels_.size());
    c_.annotations = annotations_.data();
    c_.n_annotations = static_cast<uint32_t>(annotations_.size());
    c_.runtime_config = p.runtime_config.c_str();
    c_.cni_args = p.cni_args.c_str();
    c_.host_ifname = p.host_ifname.c_str();
    c_.host_ifindex = p.host_ifindex;
    c_.addresses = addresses_.data();
    c_.n_addresses = static_cast<uint32_t>(addresses_.size());
  }
  PodView(const PodView&) = delete;
  PodView& operator=(const PodView&) = delete;
  const trellis_pod* get() const { return &c_; }

 private:
  std::vector<trellis_kv> labels_, annotations_;
  std::vector<trellis_address> addresses_;
  trellis_pod c_{};
};

inline trellis_sink StringSink(std::string* out) {
  return trellis_sink{out, [](void* ctx, const char* d, size_t n) {
                        static_cast<std::string*>(ctx)->append(d, n);
                      }};
}

}  // namespace trellis::sdk

#endif  // TRELLIS_TYPES_HPP_
