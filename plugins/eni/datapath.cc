#include "datapath.h"

#include <arpa/inet.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netlink/cache.h>
#include <netlink/errno.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/route.h>

#include <cstring>
#include <memory>
#include <set>
#include <tuple>

namespace trellis::eni {
namespace {

using sdk::Error;

struct SockDel {
  void operator()(nl_sock* s) const { nl_socket_free(s); }
};
struct CacheDel {
  void operator()(nl_cache* c) const { nl_cache_free(c); }
};
struct AddrDel {
  void operator()(nl_addr* a) const { nl_addr_put(a); }
};
struct LinkDel {
  void operator()(rtnl_link* l) const { rtnl_link_put(l); }
};
struct RouteDel {
  void operator()(rtnl_route* r) const { rtnl_route_put(r); }
};
struct RtAddrDel {
  void operator()(rtnl_addr* a) const { rtnl_addr_put(a); }
};
using Sock = std::unique_ptr<nl_sock, SockDel>;
using Cache = std::unique_ptr<nl_cache, CacheDel>;
using Addr = std::unique_ptr<nl_addr, AddrDel>;

Error NlError(int err, const std::string& what) {
  return Error(TRELLIS_E_UNAVAILABLE, what + ": " + nl_geterror(err < 0 ? -err : err));
}

Sock Open() {
  Sock sk(nl_socket_alloc());
  if (!sk) throw Error(TRELLIS_E_INTERNAL, "nl_socket_alloc failed");
  if (int err = nl_connect(sk.get(), NETLINK_ROUTE); err < 0) throw NlError(err, "netlink connect");
  return sk;
}

// Dumps retried while the kernel reports them interrupted (NLE_DUMP_INTR).
template <class Fn>
Cache Dump(Fn&& alloc, const std::string& what) {
  for (int attempt = 0;; ++attempt) {
    nl_cache* c = nullptr;
    int err = alloc(&c);
    if (err == 0) return Cache(c);
    if (err != -NLE_DUMP_INTR || attempt >= 5) throw NlError(err, what);
  }
}

Addr Parse(const std::string& text) {
  nl_addr* a = nullptr;
  if (int err = nl_addr_parse(text.c_str(), AF_INET, &a); err < 0) {
    throw NlError(err, "address " + text);
  }
  return Addr(a);
}

std::string Mac(rtnl_link* l) {
  nl_addr* a = rtnl_link_get_addr(l);
  if (a == nullptr || nl_addr_get_len(a) != 6) return "";
  auto* b = static_cast<const unsigned char*>(nl_addr_get_binary_addr(a));
  char buf[18];
  std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4],
                b[5]);
  return buf;
}

std::string Prefix(nl_addr* a) {
  if (a == nullptr) return "0.0.0.0/0";
  char buf[INET_ADDRSTRLEN] = "0.0.0.0";
  if (nl_addr_get_len(a) == 4) inet_ntop(AF_INET, nl_addr_get_binary_addr(a), buf, sizeof buf);
  return std::string(buf) + "/" + std::to_string(nl_addr_get_prefixlen(a));
}

std::string Ip(nl_addr* a) {
  if (a == nullptr || nl_addr_get_len(a) != 4) return "";
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, nl_addr_get_binary_addr(a), buf, sizeof buf);
  return buf;
}

// ifindex and name of the link with `mac`; 0 when there is none.
std::pair<int, std::string> FindByMac(nl_sock* sk, const std::string& mac) {
  Cache links = Dump([&](nl_cache** c) { return rtnl_link_alloc_cache(sk, AF_UNSPEC, c); },
                     "list links");
  for (nl_object* o = nl_cache_get_first(links.get()); o; o = nl_cache_get_next(o)) {
    auto* l = reinterpret_cast<rtnl_link*>(o);
    if (Mac(l) == mac) return {rtnl_link_get_ifindex(l), rtnl_link_get_name(l)};
  }
  return {0, ""};
}

void SetLinkFlags(nl_sock* sk, int ifindex, bool up, const std::string& name) {
  std::unique_ptr<rtnl_link, LinkDel> orig(rtnl_link_alloc()), change(rtnl_link_alloc());
  rtnl_link_set_ifindex(orig.get(), ifindex);
  if (up) {
    rtnl_link_set_flags(change.get(), IFF_UP);
  } else {
    rtnl_link_unset_flags(change.get(), IFF_UP);
  }
  int err = rtnl_link_change(sk, orig.get(), change.get(), 0);
  if (err < 0 && err != -NLE_NODEV && err != -NLE_OBJ_NOTFOUND) {
    throw NlError(err, std::string("set ") + name + (up ? " up" : " down"));
  }
}

void HostAddress(nl_sock* sk, int ifindex, const std::string& ip, bool add,
                 const std::string& name) {
  std::unique_ptr<rtnl_addr, RtAddrDel> a(rtnl_addr_alloc());
  Addr local = Parse(ip + "/32");
  rtnl_addr_set_ifindex(a.get(), ifindex);
  rtnl_addr_set_local(a.get(), local.get());
  int err = add ? rtnl_addr_add(sk, a.get(), NLM_F_CREATE | NLM_F_REPLACE)
                : rtnl_addr_delete(sk, a.get(), 0);
  if (err < 0 && (add || (err != -NLE_NOADDR && err != -NLE_OBJ_NOTFOUND && err != -NLE_NODEV))) {
    throw NlError(err, std::string(add ? "add " : "remove ") + ip + "/32 on " + name);
  }
}

struct WantRoute {
  std::string dst;
  std::string gateway;  // "" : on-link
  int ifindex;
  bool operator<(const WantRoute& o) const {
    return std::tie(dst, gateway, ifindex) < std::tie(o.dst, o.gateway, o.ifindex);
  }
};

void AddRoute(nl_sock* sk, uint32_t table, const WantRoute& w) {
  std::unique_ptr<rtnl_route, RouteDel> r(rtnl_route_alloc());
  Addr dst = Parse(w.dst);
  rtnl_route_set_family(r.get(), AF_INET);
  rtnl_route_set_dst(r.get(), dst.get());
  rtnl_route_set_table(r.get(), table);
  rtnl_route_set_protocol(r.get(), RTPROT_STATIC);
  rtnl_route_set_scope(r.get(), w.gateway.empty() ? RT_SCOPE_LINK : RT_SCOPE_UNIVERSE);
  rtnl_nexthop* nh = rtnl_route_nh_alloc();
  rtnl_route_nh_set_ifindex(nh, w.ifindex);
  if (!w.gateway.empty()) {
    Addr gw = Parse(w.gateway);
    rtnl_route_nh_set_gateway(nh, gw.get());
  }
  rtnl_route_add_nexthop(r.get(), nh);  // the route owns nh now
  if (int err = rtnl_route_add(sk, r.get(), NLM_F_CREATE | NLM_F_REPLACE); err < 0) {
    throw NlError(err, "route " + w.dst + (w.gateway.empty() ? "" : " via " + w.gateway) +
                           " table " + std::to_string(table));
  }
}

// Deletes every IPv4 route of `table` that `keep` does not list.
void PruneTable(nl_sock* sk, uint32_t table, const std::set<WantRoute>& keep) {
  Cache routes = Dump([&](nl_cache** c) { return rtnl_route_alloc_cache(sk, AF_INET, 0, c); },
                      "list routes");
  std::vector<rtnl_route*> doomed;
  for (nl_object* o = nl_cache_get_first(routes.get()); o; o = nl_cache_get_next(o)) {
    auto* r = reinterpret_cast<rtnl_route*>(o);
    if (rtnl_route_get_table(r) != table) continue;
    WantRoute have{Prefix(rtnl_route_get_dst(r)), "", 0};
    if (rtnl_route_get_nnexthops(r) == 1) {
      rtnl_nexthop* nh = rtnl_route_nexthop_n(r, 0);
      have.gateway = Ip(rtnl_route_nh_get_gateway(nh));
      have.ifindex = rtnl_route_nh_get_ifindex(nh);
    }
    if (!keep.contains(have)) doomed.push_back(r);
  }
  for (rtnl_route* r : doomed) {
    int err = rtnl_route_delete(sk, r, 0);
    if (err < 0 && err != -NLE_OBJ_NOTFOUND && err != -NLE_NOADDR) {
      throw NlError(err, "delete route " + Prefix(rtnl_route_get_dst(r)) + " table " +
                             std::to_string(table));
    }
  }
}

}  // namespace

bool NetlinkEniDatapath::LinkPresent(const std::string& mac) {
  Sock sk = Open();
  return FindByMac(sk.get(), mac).first != 0;
}

std::string NetlinkEniDatapath::Setup(const EniLink& link, aliyun::SteadyTime deadline) {
  if (link.mac.empty()) throw Error(TRELLIS_E_INVALID, "ENI " + link.eni_id + " has no MAC");
  Sock sk = Open();
  // The link appears some time after ECS reports the ENI InUse (the
  // hypervisor hot-plugs it, udev may rename it): wait for it by MAC.
  auto [ifindex, name] = FindByMac(sk.get(), link.mac);
  for (auto wait = std::chrono::milliseconds(20); ifindex == 0;
       wait = std::min(wait * 2, std::chrono::milliseconds(500))) {
    if (clock_->Now() + wait > deadline) {
      throw Error(TRELLIS_E_TIMEOUT, "ENI " + link.eni_id + ": no link with MAC " + link.mac +
                                         " appeared in this network namespace");
    }
    if (!clock_->SleepFor(wait)) throw Error(TRELLIS_E_UNAVAILABLE, "cancelled");
    std::tie(ifindex, name) = FindByMac(sk.get(), link.mac);
  }
  SetLinkFlags(sk.get(), ifindex, true, name);
  if (!link.primary_ip.empty()) HostAddress(sk.get(), ifindex, link.primary_ip, true, name);

  std::set<WantRoute> want;
  std::vector<WantRoute> order;  // on-link gateway routes before the routes via them
  std::map<std::string, int> ifindex_of{{link.mac, ifindex}};
  for (const auto& r : link.routes) {
    int oif;
    if (auto it = ifindex_of.find(r.mac); it != ifindex_of.end()) {
      oif = it->second;
    } else {
      oif = FindByMac(sk.get(), r.mac).first;
      if (oif == 0) {
        throw Error(TRELLIS_E_NOT_FOUND, "ENI " + link.eni_id + ": route " + r.destination +
                                             " leaves by the link with MAC " + r.mac +
                                             ", which is not there");
      }
      ifindex_of[r.mac] = oif;
    }
    WantRoute gw{r.gateway + "/32", "", oif};
    if (want.insert(gw).second) order.insert(order.begin(), gw);
    WantRoute via{r.destination, r.gateway, oif};
    if (want.insert(via).second) order.push_back(via);
  }
  PruneTable(sk.get(), link.table, want);
  for (const auto& w : order) AddRoute(sk.get(), link.table, w);
  return name;
}

void NetlinkEniDatapath::Teardown(const EniLink& link) {
  Sock sk = Open();
  if (link.table != 0) PruneTable(sk.get(), link.table, {});
  if (link.mac.empty()) return;
  auto [ifindex, name] = FindByMac(sk.get(), link.mac);
  if (ifindex == 0) return;
  if (!link.primary_ip.empty()) HostAddress(sk.get(), ifindex, link.primary_ip, false, name);
  SetLinkFlags(sk.get(), ifindex, false, name);
}

}  // namespace trellis::eni
