// Thin RAII layer over libnl-route, shared by the datapath and its tests.
//
// Network namespaces: a netlink socket belongs to the namespace of the thread
// that created it, for its whole life. OpenRouteSocketIn() creates the socket
// on one dedicated thread that enters the target namespace and does nothing
// else, so no worker thread ever changes namespace (a thread left in the wrong
// netns would silently configure the wrong pod), and no thread is started on a
// pod's ADD path.
#ifndef TRELLIS_CORE_DATAPATH_NETLINK_H_
#define TRELLIS_CORE_DATAPATH_NETLINK_H_

#include <netlink/addr.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/neighbour.h>
#include <netlink/route/route.h>
#include <netlink/route/rule.h>

#include <memory>
#include <string>

#include "core/status.h"

namespace trellis::nl {

struct SockFree { void operator()(nl_sock* s) const { nl_socket_free(s); } };
struct LinkPut { void operator()(rtnl_link* l) const { rtnl_link_put(l); } };
struct AddrPut { void operator()(nl_addr* a) const { nl_addr_put(a); } };
struct RtAddrPut { void operator()(rtnl_addr* a) const { rtnl_addr_put(a); } };
struct RoutePut { void operator()(rtnl_route* r) const { rtnl_route_put(r); } };
struct NeighPut { void operator()(rtnl_neigh* n) const { rtnl_neigh_put(n); } };
struct RulePut { void operator()(rtnl_rule* r) const { rtnl_rule_put(r); } };
struct CachePut { void operator()(nl_cache* c) const { nl_cache_free(c); } };

using Socket = std::unique_ptr<nl_sock, SockFree>;
using Link = std::unique_ptr<rtnl_link, LinkPut>;
using Addr = std::unique_ptr<nl_addr, AddrPut>;
using RtAddr = std::unique_ptr<rtnl_addr, RtAddrPut>;
using Route = std::unique_ptr<rtnl_route, RoutePut>;
using Neigh = std::unique_ptr<rtnl_neigh, NeighPut>;
using Rule = std::unique_ptr<rtnl_rule, RulePut>;
using Cache = std::unique_ptr<nl_cache, CachePut>;

// A NETLINK_ROUTE socket in the caller's namespace.
StatusOr<Socket> OpenRouteSocket();
// A NETLINK_ROUTE socket in the namespace at `netns_path` (see above).
// NotFound when the namespace does not exist.
StatusOr<Socket> OpenRouteSocketIn(const std::string& netns_path);

// A libnl error as a Status: "what: message".
Status Error(int nl_err, const std::string& what);

// Parses "10.0.0.1", "10.0.0.0/24", "fe80::1", "default" (with family).
StatusOr<Addr> ParseAddr(const std::string& text, int family = AF_UNSPEC);
std::string FormatAddr(nl_addr* a);

// Looks a link up by name. NotFound when absent.
StatusOr<Link> GetLink(nl_sock* sk, const std::string& name);
// Allocates a cache, retrying dumps interrupted by concurrent changes
// (NLM_F_DUMP_INTR).
StatusOr<Cache> LinkCache(nl_sock* sk);
StatusOr<Cache> AddrCache(nl_sock* sk);
StatusOr<Cache> RouteCache(nl_sock* sk);
StatusOr<Cache> NeighCache(nl_sock* sk);
StatusOr<Cache> RuleCache(nl_sock* sk, int family);

// Sets IFF_UP on a link.
Status SetUp(nl_sock* sk, rtnl_link* link);

}  // namespace trellis::nl

#endif  // TRELLIS_CORE_DATAPATH_NETLINK_H_
