#include "core/datapath/datapath.h"

#include <fcntl.h>
#include <net/if.h>
#include <linux/fib_rules.h>
#include <linux/if_addr.h>
#include <linux/neighbour.h>
#include <linux/rtnetlink.h>
#include <netlink/route/link/veth.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>

namespace trellis {
namespace {

int Family(const sdk::Address& a) { return a.family == 4 ? AF_INET : AF_INET6; }
std::string HostPrefix(const sdk::Address& a) {
  return a.IpString() + (a.family == 4 ? "/32" : "/128");
}

std::string Mac(rtnl_link* l) {
  nl_addr* a = rtnl_link_get_addr(l);
  return a == nullptr ? "" : nl::FormatAddr(a);
}

Status WriteSysctl(const char* path, const char* value) {
  std::ofstream f(path);
  if (!f || !(f << value) || !f.flush()) {
    return absl::UnavailableError(std::string("cannot write ") + path);
  }
  return absl::OkStatus();
}

Status AddHostScopedRoute(nl_sock* sk, const std::string& dst, int ifindex, uint32_t table,
                          const std::string& gateway = "") {
  TRELLIS_ASSIGN_OR_RETURN(nl::Addr d, nl::ParseAddr(dst));
  nl::Route r(rtnl_route_alloc());
  rtnl_route_set_family(r.get(), nl_addr_get_family(d.get()));
  rtnl_route_set_dst(r.get(), d.get());
  rtnl_route_set_table(r.get(), table);
  rtnl_route_set_protocol(r.get(), RTPROT_STATIC);
  rtnl_route_set_scope(r.get(), gateway.empty() ? RT_SCOPE_LINK : RT_SCOPE_UNIVERSE);
  rtnl_nexthop* nh = rtnl_route_nh_alloc();
  rtnl_route_nh_set_ifindex(nh, ifindex);
  if (!gateway.empty()) {
    auto gw = nl::ParseAddr(gateway);
    if (!gw.ok()) {
      rtnl_route_nh_free(nh);
      return gw.status();
    }
    rtnl_route_nh_set_gateway(nh, gw->get());
  }
  rtnl_route_add_nexthop(r.get(), nh);  // the route owns nh now
  int err = rtnl_route_add(sk, r.get(), NLM_F_CREATE | NLM_F_REPLACE);
  if (err < 0) {
    return nl::Error(err, "route " + dst + (gateway.empty() ? "" : " via " + gateway));
  }
  return absl::OkStatus();
}

Status AddPermanentNeighbour(nl_sock* sk, int ifindex, const std::string& ip,
                             const std::string& mac) {
  TRELLIS_ASSIGN_OR_RETURN(nl::Addr dst, nl::ParseAddr(ip));
  TRELLIS_ASSIGN_OR_RETURN(nl::Addr ll, nl::ParseAddr(mac, AF_LLC));
  nl::Neigh n(rtnl_neigh_alloc());
  rtnl_neigh_set_ifindex(n.get(), ifindex);
  rtnl_neigh_set_dst(n.get(), dst.get());
  rtnl_neigh_set_lladdr(n.get(), ll.get());
  rtnl_neigh_set_state(n.get(), NUD_PERMANENT);
  int err = rtnl_neigh_add(sk, n.get(), NLM_F_CREATE | NLM_F_REPLACE);
  if (err < 0) return nl::Error(err, "neighbour " + ip);
  return absl::OkStatus();
}

nl::Rule SourceRule(const sdk::Address& a, uint32_t table) {
  nl::Rule r(rtnl_rule_alloc());
  rtnl_rule_set_family(r.get(), Family(a));
  auto src = nl::ParseAddr(HostPrefix(a));
  if (src.ok()) rtnl_rule_set_src(r.get(), src->get());
  rtnl_rule_set_table(r.get(), table);
  rtnl_rule_set_prio(r.get(), kEniRulePriority);
  rtnl_rule_set_action(r.get(), FR_ACT_TO_TBL);
  return r;
}

}  // namespace

std::string Datapath::OwnerAlias(const std::string& container_id, const std::string& ifname) {
  return std::string(kOwnerAliasPrefix) + container_id + ":" + ifname;
}

StatusOr<std::unique_ptr<Datapath>> Datapath::Create() {
  TRELLIS_RETURN_IF_ERROR(WriteSysctl("/proc/sys/net/ipv4/ip_forward", "1"));
  // IPv6 may be disabled on the node; IPv4 pods still work then.
  (void)WriteSysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1");
  std::unique_ptr<Datapath> d(new Datapath());
  TRELLIS_RETURN_IF_ERROR(d->HostSocket().status());
  d->reaper_ = std::thread([p = d.get()] { p->ReaperLoop(); });
  return d;
}

Datapath::~Datapath() {
  {
    std::lock_guard lock(reap_mu_);
    reap_stop_ = true;
  }
  reap_cv_.notify_all();
  if (reaper_.joinable()) reaper_.join();
}

void Datapath::ReaperLoop() {
  auto sk = HostSocket();
  while (true) {
    int ifindex;
    {
      std::unique_lock lock(reap_mu_);
      reap_cv_.wait(lock, [&] { return reap_stop_ || !reap_queue_.empty(); });
      if (reap_queue_.empty()) return;  // stopping, nothing left
      ifindex = reap_queue_.front();
      reap_queue_.pop_front();
    }
    if (sk.ok()) {
      nl::Link l(rtnl_link_alloc());
      rtnl_link_set_ifindex(l.get(), ifindex);
      rtnl_link_delete(sk->get(), l.get());  // ENODEV: gone with its netns
    }
    {
      std::lock_guard lock(reap_mu_);
      reaping_.erase(ifindex);
    }
    reap_cv_.notify_all();
  }
}

void Datapath::DrainReaper() {
  std::unique_lock lock(reap_mu_);
  reap_cv_.wait(lock, [&] { return reaping_.empty(); });
}

StatusOr<nl::Socket> Datapath::HostSocket() { return nl::OpenRouteSocket(); }

Status Datapath::EnsureSuppressRule(int family) {
  std::lock_guard lock(rule_mu_);
  bool& done = family == AF_INET ? suppress_rule_v4_ : suppress_rule_v6_;
  if (done) return absl::OkStatus();
  TRELLIS_ASSIGN_OR_RETURN(nl::Socket sk, HostSocket());
  nl::Rule r(rtnl_rule_alloc());
  rtnl_rule_set_family(r.get(), family);
  rtnl_rule_set_table(r.get(), RT_TABLE_MAIN);
  rtnl_rule_set_prio(r.get(), kSuppressRulePriority);
  rtnl_rule_set_action(r.get(), FR_ACT_TO_TBL);
  // libnl 3.7 has no setter for FRA_SUPPRESS_PREFIXLEN; a rule without it
  // would shadow the ENI tables. Build the message by hand.
  nl_msg* msg = nullptr;
  int err = rtnl_rule_build_add_request(r.get(), NLM_F_CREATE | NLM_F_EXCL, &msg);
  if (err < 0) return nl::Error(err, "build suppress rule");
  nla_put_u32(msg, FRA_SUPPRESS_PREFIXLEN, 0);
  err = nl_send_sync(sk.get(), msg);  // frees msg
  if (err < 0 && err != -NLE_EXIST) return nl::Error(err, "rule lookup main suppress_prefixlength 0");
  done = true;
  return absl::OkStatus();
}

StatusOr<PodInterfaceState> Datapath::Setup(const PodInterfaceSpec& spec) {
  std::lock_guard serial(setup_mu_);
  TRELLIS_ASSIGN_OR_RETURN(nl::Socket host, HostSocket());
  int nsfd = open(spec.netns.c_str(), O_RDONLY | O_CLOEXEC);
  if (nsfd < 0) {
    return absl::NotFoundError("network namespace " + spec.netns + ": " + std::strerror(errno));
  }
  // The pod's end is created directly in its namespace. A host end left by
  // an attempt that never finished is removed on EEXIST, not looked for
  // first: that would cost a round trip on every ADD.
  auto create = [&] {
    nl::Link veth(rtnl_link_veth_alloc());
    rtnl_link_set_name(veth.get(), spec.host_ifname.c_str());
    rtnl_link_set_mtu(veth.get(), spec.mtu);
    nl::Link peer(rtnl_link_veth_get_peer(veth.get()));
    rtnl_link_set_name(peer.get(), spec.ifname.c_str());
    rtnl_link_set_mtu(peer.get(), spec.mtu);
    rtnl_link_set_ns_fd(peer.get(), nsfd);
    return rtnl_link_add(host.get(), veth.get(), NLM_F_CREATE | NLM_F_EXCL);
  };
  int err = create();
  if (err == -NLE_EXIST) {
    if (auto stale = nl::GetLink(host.get(), spec.host_ifname); stale.ok()) {
      rtnl_link_delete(host.get(), stale->get());
      err = create();
    }
  }
  close(nsfd);
  if (err == -NLE_EXIST) {
    return absl::AlreadyExistsError("interface " + spec.ifname + " already exists in " + spec.netns);
  }
  if (err < 0) {
    return nl::Error(err, "create veth " + spec.host_ifname + " <-> " + spec.ifname);
  }
  // From here on, a failure removes the pair again.
  auto fail = [&](const Status& s) -> Status {
    if (auto l = nl::GetLink(host.get(), spec.host_ifname); l.ok()) {
      rtnl_link_delete(host.get(), l->get());
    }
    return s;
  };
  PodInterfaceState state;
  auto host_link = nl::GetLink(host.get(), spec.host_ifname);
  if (!host_link.ok()) return fail(host_link.status());
  state.host_ifindex = rtnl_link_get_ifindex(host_link->get());
  state.host_mac = Mac(host_link->get());
  // An IPv4-only pod's host end needs no IPv6: without it the host keeps no
  // link-local address, routes, DAD or MLD per pod, and every IPv6 FIB walk
  // (the kernel walks the whole FIB on each link state change) stays short.
  // Set while the link is down, before addrconf acts on it.
  if (std::none_of(spec.addresses.begin(), spec.addresses.end(),
                   [](const sdk::Address& a) { return a.family == 6; })) {
    std::string path = "/proc/sys/net/ipv6/conf/" + spec.host_ifname + "/disable_ipv6";
    (void)WriteSysctl(path.c_str(), "1");  // absent when the node has no IPv6
  }
  {
    // Up, and the owner: the kernel ignores IFLA_IFALIAS when it creates a link.
    nl::Link change(rtnl_link_alloc());
    rtnl_link_set_flags(change.get(), IFF_UP);
    rtnl_link_set_ifalias(change.get(), OwnerAlias(spec.container_id, spec.ifname).c_str());
    int err = rtnl_link_change(host.get(), host_link->get(), change.get(), 0);
    if (err < 0) return fail(nl::Error(err, "set " + spec.host_ifname + " up"));
  }

  auto pod = nl::OpenRouteSocketIn(spec.netns);
  if (!pod.ok()) return fail(pod.status());
  auto pod_link = nl::GetLink(pod->get(), spec.ifname);
  if (!pod_link.ok()) return fail(pod_link.status());
  int pod_ifindex = rtnl_link_get_ifindex(pod_link->get());
  state.mac = Mac(pod_link->get());
  // Not at creation: the kernel refuses IFF_UP in the peer's ifinfomsg.
  if (Status s = nl::SetUp(pod->get(), pod_link->get()); !s.ok()) return fail(s);

  bool v4 = false, v6 = false;
  for (const auto& a : spec.addresses) {
    auto local = nl::ParseAddr(HostPrefix(a));
    if (!local.ok()) return fail(local.status());
    nl::RtAddr ra(rtnl_addr_alloc());
    rtnl_addr_set_ifindex(ra.get(), pod_ifindex);
    rtnl_addr_set_local(ra.get(), local->get());
    if (a.family == 6) rtnl_addr_set_flags(ra.get(), IFA_F_NODAD);
    int err = rtnl_addr_add(pod->get(), ra.get(), NLM_F_CREATE | NLM_F_REPLACE);
    if (err < 0) return fail(nl::Error(err, "address " + HostPrefix(a) + " on " + spec.ifname));
    (a.family == 4 ? v4 : v6) = true;
  }
  if (v4) {
    Status s = AddHostScopedRoute(pod->get(), std::string(kPodGatewayV4) + "/32", pod_ifindex,
                                  RT_TABLE_MAIN);
    if (s.ok()) s = AddPermanentNeighbour(pod->get(), pod_ifindex, kPodGatewayV4, state.host_mac);
    if (s.ok()) {
      s = AddHostScopedRoute(pod->get(), "0.0.0.0/0", pod_ifindex, RT_TABLE_MAIN, kPodGatewayV4);
    }
    if (!s.ok()) return fail(Annotate(s, "pod " + spec.netns));
  }
  if (v6) {
    Status s = AddPermanentNeighbour(pod->get(), pod_ifindex, kPodGatewayV6, state.host_mac);
    if (s.ok()) s = AddHostScopedRoute(pod->get(), "::/0", pod_ifindex, RT_TABLE_MAIN, kPodGatewayV6);
    if (!s.ok()) return fail(Annotate(s, "pod " + spec.netns));
  }
  for (const auto& a : spec.addresses) {
    Status s = AddHostScopedRoute(host.get(), HostPrefix(a), state.host_ifindex, RT_TABLE_MAIN);
    if (s.ok()) s = AddPermanentNeighbour(host.get(), state.host_ifindex, a.IpString(), state.mac);
    if (s.ok() && a.route_table != 0) {
      s = EnsureSuppressRule(Family(a));
      if (s.ok()) {
        nl::Rule r = SourceRule(a, a.route_table);
        int err = rtnl_rule_add(host.get(), r.get(), NLM_F_CREATE);
        if (err < 0 && err != -NLE_EXIST) s = nl::Error(err, "rule from " + a.IpString());
      }
    }
    if (!s.ok()) return fail(Annotate(s, "host"));
  }
  return state;
}

Status Datapath::Teardown(const std::string& host_ifname,
                          const std::vector<sdk::Address>& addresses) {
  TRELLIS_ASSIGN_OR_RETURN(nl::Socket host, HostSocket());
  if (!host_ifname.empty()) {
    auto l = nl::GetLink(host.get(), host_ifname);
    if (l.ok()) {
      int ifindex = rtnl_link_get_ifindex(l->get());
      nl::Link change(rtnl_link_alloc());
      rtnl_link_unset_flags(change.get(), IFF_UP);
      int err = rtnl_link_change(host.get(), l->get(), change.get(), 0);
      if (err < 0 && err != -NLE_OBJ_NOTFOUND && err != -NLE_NODEV) {
        return nl::Error(err, "set " + host_ifname + " down");
      }
      {
        std::lock_guard lock(reap_mu_);
        if (reaping_.insert(ifindex).second) reap_queue_.push_back(ifindex);
      }
      reap_cv_.notify_all();
    } else if (l.status().code() != absl::StatusCode::kNotFound) {
      return l.status();
    }
  }
  for (const auto& a : addresses) {
    if (a.route_table == 0) continue;
    nl::Rule r = SourceRule(a, a.route_table);
    int err = rtnl_rule_delete(host.get(), r.get(), 0);
    if (err < 0 && err != -NLE_OBJ_NOTFOUND && err != -NLE_NOADDR && err != -NLE_FAILURE) {
      return nl::Error(err, "delete rule from " + a.IpString());
    }
  }
  return absl::OkStatus();
}

Status Datapath::Verify(const PodInterfaceSpec& spec) {
  auto missing = [](const std::string& what) { return absl::DataLossError(what); };
  TRELLIS_ASSIGN_OR_RETURN(nl::Socket host, HostSocket());
  auto host_link = nl::GetLink(host.get(), spec.host_ifname);
  if (!host_link.ok()) return missing("host interface " + spec.host_ifname + " is missing");
  const char* alias = rtnl_link_get_ifalias(host_link->get());
  if (alias == nullptr || OwnerAlias(spec.container_id, spec.ifname) != alias) {
    return missing("host interface " + spec.host_ifname + " belongs to another pod");
  }
  if (!(rtnl_link_get_flags(host_link->get()) & IFF_UP)) {
    return missing("host interface " + spec.host_ifname + " is down");
  }
  int host_ifindex = rtnl_link_get_ifindex(host_link->get());

  auto pod = nl::OpenRouteSocketIn(spec.netns);
  if (!pod.ok()) return missing(std::string(pod.status().message()));
  auto pod_link = nl::GetLink(pod->get(), spec.ifname);
  if (!pod_link.ok()) return missing("interface " + spec.ifname + " is missing in " + spec.netns);
  if (!(rtnl_link_get_flags(pod_link->get()) & IFF_UP)) {
    return missing("interface " + spec.ifname + " in " + spec.netns + " is down");
  }
  int pod_ifindex = rtnl_link_get_ifindex(pod_link->get());

  TRELLIS_ASSIGN_OR_RETURN(nl::Cache addrs, nl::AddrCache(pod->get()));
  TRELLIS_ASSIGN_OR_RETURN(nl::Cache pod_routes, nl::RouteCache(pod->get()));
  TRELLIS_ASSIGN_OR_RETURN(nl::Cache host_routes, nl::RouteCache(host.get()));

  auto has_addr = [&](const sdk::Address& a) {
    for (nl_object* o = nl_cache_get_first(addrs.get()); o; o = nl_cache_get_next(o)) {
      auto* ra = reinterpret_cast<rtnl_addr*>(o);
      if (rtnl_addr_get_ifindex(ra) != pod_ifindex) continue;
      nl_addr* local = rtnl_addr_get_local(ra);
      char buf[INET6_ADDRSTRLEN];
      if (local && a.IpString() == nl_addr2str(local, buf, sizeof buf)) return true;
      // nl_addr2str prints the prefix when it is not a host prefix
      if (local && nl::FormatAddr(local) == HostPrefix(a)) return true;
    }
    return false;
  };
  auto has_route = [](nl_cache* routes, int family, const std::string& dst, int ifindex) {
    for (nl_object* o = nl_cache_get_first(routes); o; o = nl_cache_get_next(o)) {
      auto* r = reinterpret_cast<rtnl_route*>(o);
      if (rtnl_route_get_family(r) != family || rtnl_route_get_table(r) != RT_TABLE_MAIN) continue;
      nl_addr* d = rtnl_route_get_dst(r);
      std::string ds = d == nullptr ? "none" : nl::FormatAddr(d);
      bool match = ds == dst || (dst == "default" && (ds == "none" || ds == "0.0.0.0/0" ||
                                                      ds == "::/0" || nl_addr_get_prefixlen(d) == 0));
      if (!match) continue;
      for (int i = 0; i < rtnl_route_get_nnexthops(r); ++i) {
        if (rtnl_route_nh_get_ifindex(rtnl_route_nexthop_n(r, i)) == ifindex) return true;
      }
    }
    return false;
  };
  for (const auto& a : spec.addresses) {
    if (!has_addr(a)) {
      return missing("address " + HostPrefix(a) + " is missing on " + spec.ifname + " in " +
                     spec.netns);
    }
    if (!has_route(pod_routes.get(), Family(a), "default", pod_ifindex)) {
      return missing(std::string("default route (IPv") + std::to_string(a.family) +
                     ") is missing in " + spec.netns);
    }
    if (!has_route(host_routes.get(), Family(a), HostPrefix(a), host_ifindex) &&
        !has_route(host_routes.get(), Family(a), a.IpString(), host_ifindex)) {
      return missing("host route " + HostPrefix(a) + " dev " + spec.host_ifname + " is missing");
    }
  }
  return absl::OkStatus();
}

StatusOr<std::vector<std::pair<std::string, std::string>>> Datapath::ListOwned() {
  TRELLIS_ASSIGN_OR_RETURN(nl::Socket host, HostSocket());
  TRELLIS_ASSIGN_OR_RETURN(nl::Cache links, nl::LinkCache(host.get()));
  std::vector<std::pair<std::string, std::string>> out;
  for (nl_object* o = nl_cache_get_first(links.get()); o; o = nl_cache_get_next(o)) {
    auto* l = reinterpret_cast<rtnl_link*>(o);
    const char* alias = rtnl_link_get_ifalias(l);
    {
      std::lock_guard lock(reap_mu_);
      if (reaping_.contains(rtnl_link_get_ifindex(l))) continue;
    }
    if (alias != nullptr && std::string_view(alias).starts_with(kOwnerAliasPrefix)) {
      out.emplace_back(rtnl_link_get_name(l), alias);
    }
  }
  return out;
}

}  // namespace trellis
