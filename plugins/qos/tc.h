// Traffic-control objects through libnl-route: links (IFB), HTB qdiscs and
// classes, bfifo leaves, clsact, and the per-pod classifier filter. Library
// code: it throws sdk::Error and never logs.
//
// Namespaces: a netlink socket acts in the namespace of the thread that
// opened it, for its whole life. The plugin opens its sockets on the daemon's
// own threads (the node namespace) and never changes a thread's namespace.
//
// Errors: sdk::Error with TRELLIS_E_NOT_FOUND when the object or link is gone,
// TRELLIS_E_UNAVAILABLE for transient kernel states (EBUSY, an interrupted
// dump), TRELLIS_E_INTERNAL otherwise. The message names the object.
#ifndef TRELLIS_PLUGINS_QOS_TC_H_
#define TRELLIS_PLUGINS_QOS_TC_H_

#include <netlink/netlink.h>
#include <trellis/types.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace trellis::qos::tc {

inline uint32_t Handle(uint32_t major, uint32_t minor) { return (major << 16) | (minor & 0xffff); }
std::string HandleString(uint32_t handle);  // "ffe0:12"

class Socket {
 public:
  // A NETLINK_ROUTE socket in the calling thread's namespace.
  static Socket Open();
  nl_sock* get() const { return sk_.get(); }

 private:
  struct Free {
    void operator()(nl_sock* s) const { nl_socket_free(s); }
  };
  std::unique_ptr<nl_sock, Free> sk_;
};

// ---------------------------------------------------------------- links --

struct LinkInfo {
  int ifindex = 0;
  std::string name, kind, alias;
  bool up = false;
};
// nullopt when no link has that name.
std::optional<LinkInfo> GetLink(const Socket& sk, const std::string& name);
// Creates an IFB device, sets its alias and brings it up; returns its index.
// TRELLIS_E_EXISTS when the name is taken.
int CreateIfb(const Socket& sk, const std::string& name, const std::string& alias);
void SetLinkUp(const Socket& sk, int ifindex);
// OK when the link is gone already.
void DeleteLink(const Socket& sk, int ifindex);

// -------------------------------------------------------------- qdiscs --

struct Qdisc {
  uint32_t handle = 0, parent = 0;
  std::string kind;
  uint32_t limit = 0;   // bfifo: bytes
  uint32_t defcls = 0;  // htb: default class minor
  uint64_t bytes = 0, packets = 0, drops = 0, overlimits = 0;
};
// Every qdisc of the link (one dump).
std::vector<Qdisc> Qdiscs(const Socket& sk, int ifindex);
// Creates the HTB root qdisc `handle`, or updates its default class.
void SetHtbRoot(const Socket& sk, int ifindex, uint32_t handle, uint32_t default_minor);
// Creates or replaces a bfifo qdisc (in place when it exists: no packet lost).
void SetBfifo(const Socket& sk, int ifindex, uint32_t parent, uint32_t handle, uint32_t limit);
// Adds a clsact qdisc; false when the link had one already.
bool AddClsact(const Socket& sk, int ifindex);
// OK when it is gone already.
void DeleteClsact(const Socket& sk, int ifindex);

// ---------------------------------------------------------------- HTB --

struct HtbClass {
  uint32_t handle = 0, parent = 0;
  uint64_t rate = 0, ceil = 0;     // bytes per second
  uint32_t burst = 0, cburst = 0;  // bytes
  uint32_t quantum = 0, prio = 0;
  uint64_t bytes = 0, packets = 0, drops = 0;
};
std::vector<HtbClass> HtbClasses(const Socket& sk, int ifindex);
// Creates the class under c.parent, or changes rate/ceil/burst/quantum/prio
// of an existing one in place. The kernel keeps an existing class's parent
// whatever the request says: moving a class means deleting it first.
void SetHtbClass(const Socket& sk, int ifindex, const HtbClass& c);
// Deletes the class (and its leaf qdisc). OK when it is gone already.
void DeleteClass(const Socket& sk, int ifindex, uint32_t handle);

// ------------------------------------------------- classifier filters --

enum class Hook { kIngress, kEgress };  // the clsact hook of a link

struct Filter {
  uint32_t pref = 0, handle = 0;
  std::string kind;
  std::string name;          // cls_bpf: the filter's name (our owner tag)
  uint32_t bpf_id = 0;       // cls_bpf: the program id
  int redirect_ifindex = 0;  // a mirred egress redirect action's target
};
std::vector<Filter> Filters(const Socket& sk, int ifindex, Hook hook);
// Creates or replaces, at `pref`/`handle` of `hook`, a cls_bpf filter running
// `prog_fd` (classic mode: a match runs the actions) followed by a mirred
// egress redirect to `target_ifindex`. `name` tags the filter.
void SetBpfRedirect(const Socket& sk, int ifindex, Hook hook, uint32_t pref, uint32_t handle,
                    int prog_fd, const std::string& name, int target_ifindex);
// OK when the filter or the link is gone.
void DeleteFilter(const Socket& sk, int ifindex, Hook hook, uint32_t pref, uint32_t handle);

}  // namespace trellis::qos::tc

#endif  // TRELLIS_PLUGINS_QOS_TC_H_
