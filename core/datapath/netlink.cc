#include "core/datapath/netlink.h"

#include <fcntl.h>
#include <net/if.h>
#include <netlink/errno.h>
#include <sched.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace trellis::nl {

Status Error(int nl_err, const std::string& what) {
  int e = nl_err < 0 ? -nl_err : nl_err;
  std::string msg = what + ": " + nl_geterror(e);
  switch (e) {
    case NLE_OBJ_NOTFOUND:
    case NLE_NODEV:
      return absl::NotFoundError(msg);
    case NLE_EXIST:
      return absl::AlreadyExistsError(msg);
    case NLE_PERM:
      return absl::PermissionDeniedError(msg);
    case NLE_INVAL:
    case NLE_RANGE:
      return absl::InvalidArgumentError(msg);
    case NLE_BUSY:
    case NLE_AGAIN:
    case NLE_DUMP_INTR:
      return absl::UnavailableError(msg);
    default:
      return absl::InternalError(msg);
  }
}

StatusOr<Socket> OpenRouteSocket() {
  Socket sk(nl_socket_alloc());
  if (!sk) return absl::ResourceExhaustedError("nl_socket_alloc failed");
  int err = nl_connect(sk.get(), NETLINK_ROUTE);
  if (err < 0) return Error(err, "netlink connect");
  return sk;
}

StatusOr<Socket> OpenRouteSocketIn(const std::string& netns_path) {
  int target = open(netns_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (target < 0) {
    int e = errno;
    std::string msg = "network namespace " + netns_path + ": " + std::strerror(e);
    return e == ENOENT ? absl::NotFoundError(msg) : absl::UnavailableError(msg);
  }
  int own = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (own < 0) {
    close(target);
    return absl::UnavailableError(std::string("/proc/thread-self/ns/net: ") + std::strerror(errno));
  }
  StatusOr<Socket> result = absl::InternalError("unset");
  if (setns(target, CLONE_NEWNET) != 0) {
    result = absl::UnavailableError("setns " + netns_path + ": " + std::strerror(errno));
  } else {
    result = OpenRouteSocket();
    if (setns(own, CLONE_NEWNET) != 0) {
      // This thread would configure the wrong namespace from now on; a restart
      // reconciles from the state store instead.
      std::fprintf(stderr, "trellisd: cannot return from network namespace %s: %s\n",
                   netns_path.c_str(), std::strerror(errno));
      std::abort();
    }
  }
  close(own);
  close(target);
  return result;
}

StatusOr<Addr> ParseAddr(const std::string& text, int family) {
  nl_addr* a = nullptr;
  int err = nl_addr_parse(text.c_str(), family, &a);
  if (err < 0) return Error(err, "address " + text);
  return Addr(a);
}

std::string FormatAddr(nl_addr* a) {
  char buf[128];
  return nl_addr2str(a, buf, sizeof buf);
}

StatusOr<Link> GetLink(nl_sock* sk, const std::string& name) {
  rtnl_link* l = nullptr;
  int err = rtnl_link_get_kernel(sk, 0, name.c_str(), &l);
  if (err < 0) {
    if (err == -NLE_OBJ_NOTFOUND || err == -NLE_NODEV) {
      return absl::NotFoundError("interface " + name + " not found");
    }
    return Error(err, "get link " + name);
  }
  return Link(l);
}

namespace {
template <class Alloc>
StatusOr<Cache> Dump(Alloc&& alloc, const char* what) {
  for (int attempt = 0; attempt < 10; ++attempt) {
    nl_cache* c = nullptr;
    int err = alloc(&c);
    if (err == 0) return Cache(c);
    if (err != -NLE_DUMP_INTR) return Error(err, what);
  }
  return absl::UnavailableError(std::string(what) + ": dump interrupted 10 times in a row");
}
}  // namespace

StatusOr<Cache> LinkCache(nl_sock* sk) {
  return Dump([&](nl_cache** c) { return rtnl_link_alloc_cache(sk, AF_UNSPEC, c); }, "link dump");
}
StatusOr<Cache> AddrCache(nl_sock* sk) {
  return Dump([&](nl_cache** c) { return rtnl_addr_alloc_cache(sk, c); }, "address dump");
}
StatusOr<Cache> RouteCache(nl_sock* sk) {
  return Dump([&](nl_cache** c) { return rtnl_route_alloc_cache(sk, AF_UNSPEC, 0, c); },
              "route dump");
}
StatusOr<Cache> NeighCache(nl_sock* sk) {
  return Dump([&](nl_cache** c) { return rtnl_neigh_alloc_cache(sk, c); }, "neighbour dump");
}
StatusOr<Cache> RuleCache(nl_sock* sk, int family) {
  return Dump([&](nl_cache** c) { return rtnl_rule_alloc_cache(sk, family, c); }, "rule dump");
}

Status SetUp(nl_sock* sk, rtnl_link* link) {
  Link change(rtnl_link_alloc());
  rtnl_link_set_flags(change.get(), IFF_UP);
  int err = rtnl_link_change(sk, link, change.get(), 0);
  if (err < 0) return Error(err, std::string("set ") + rtnl_link_get_name(link) + " up");
  return absl::OkStatus();
}

}  // namespace trellis::nl
