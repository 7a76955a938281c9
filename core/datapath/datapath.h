// The pod datapath every pod needs, owned by the host: a routed veth pair.
//
//   pod netns:  <ifname>  address/32 (/128), NODAD
//               169.254.1.1 dev <ifname> scope link; default via 169.254.1.1
//               default via fe80::1 (IPv6)
//               static neighbours 169.254.1.1 / fe80::1 -> host veth MAC
//   host:       <host_ifname> (tr + hash), ifalias "trellis:<cid>:<ifname>"
//               <pod ip>/32 (/128) dev <host_ifname> scope link
//               static neighbour <pod ip> -> pod MAC
//               ENI addresses (route_table != 0): rule "from <pod ip> lookup
//               <table>" at kEniRulePriority, and once per node
//               "lookup main suppress_prefixlength 0" before it, so that
//               node-local routes still win over the ENI table's default.
//
// Static neighbours on both ends: no ARP/NDP and no proxy_arp on the first
// packet.
//
// Teardown sets the host end down at once (traffic stops both ways) and hands
// the deletion to a reaper thread: unregistering a netdev waits for RCU grace
// periods (10-30 ms), which must not sit on the DEL path. The reaper deletes
// by ifindex, which the kernel does not reuse, so a pod re-created under the
// same name is never hit. Forwarding (net.ipv4.ip_forward, net.ipv6.conf.all.forwarding) is
// switched on by Create().
// THREADING: all methods may run concurrently for different pods.
#ifndef TRELLIS_CORE_DATAPATH_DATAPATH_H_
#define TRELLIS_CORE_DATAPATH_DATAPATH_H_

#include <trellis/types.hpp>

#include <condition_variable>
#include <deque>
#include <memory>
#include <set>
#include <thread>
#include <mutex>
#include <string>
#include <vector>

#include "core/datapath/netlink.h"
#include "core/status.h"

namespace trellis {

inline constexpr const char* kPodGatewayV4 = "169.254.1.1";
inline constexpr const char* kPodGatewayV6 = "fe80::1";
inline constexpr const char* kOwnerAliasPrefix = "trellis:";
inline constexpr uint32_t kSuppressRulePriority = 1000;
inline constexpr uint32_t kEniRulePriority = 1100;

struct PodInterfaceSpec {
  std::string container_id;
  std::string netns;        // path
  std::string ifname;       // inside the pod
  std::string host_ifname;  // host end
  uint32_t mtu = 1500;
  std::vector<sdk::Address> addresses;
};

struct PodInterfaceState {
  std::string mac;       // pod end
  std::string host_mac;  // host end
  int host_ifindex = 0;
};

class Datapath {
 public:
  // Enables forwarding and opens the host netlink socket.
  static StatusOr<std::unique_ptr<Datapath>> Create();
  // Finishes pending deletions (bounded) and stops the reaper.
  ~Datapath();

  // Creates the pair and everything above. A stale host end of the same name
  // is replaced. Fails without leaving a link behind.
  StatusOr<PodInterfaceState> Setup(const PodInterfaceSpec& spec);
  // Removes the host end (the pod end goes with it) and the pod's rules.
  // Tolerates everything being gone already.
  Status Teardown(const std::string& host_ifname, const std::vector<sdk::Address>& addresses);
  // Verifies the kernel state against `spec`; DataLoss names what differs.
  Status Verify(const PodInterfaceSpec& spec);
  // Waits until every queued deletion is done (tests, shutdown).
  void DrainReaper();
  // Host ends carrying our ifalias: (host_ifname, alias); links waiting for
  // the reaper are left out.
  StatusOr<std::vector<std::pair<std::string, std::string>>> ListOwned();
  // The owner alias for a pod attachment.
  static std::string OwnerAlias(const std::string& container_id, const std::string& ifname);

 private:
  Datapath() = default;
  StatusOr<nl::Socket> HostSocket();
  Status EnsureSuppressRule(int family);

  void ReaperLoop();

  // Held across Setup's netlink work. The kernel serialises it anyway (RTNL);
  // waiting here sleeps, while waiting for RTNL spins on a CPU for as long
  // as the holder runs (a veth creation), which on a small node takes the
  // CPU from the pods' own CNI processes.
  std::mutex setup_mu_;

  std::mutex rule_mu_;
  bool suppress_rule_v4_ = false, suppress_rule_v6_ = false;

  std::mutex reap_mu_;
  std::condition_variable reap_cv_;
  std::deque<int> reap_queue_;  // ifindexes
  std::set<int> reaping_;       // queued or being deleted
  bool reap_stop_ = false;
  std::thread reaper_;
};

}  // namespace trellis

#endif  // TRELLIS_CORE_DATAPATH_DATAPATH_H_
