#include "tc.h"

#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <linux/tc_act/tc_mirred.h>
#include <net/if.h>
#include <netlink/attr.h>
#include <netlink/errno.h>
#include <netlink/msg.h>
#include <netlink/route/class.h>
#include <netlink/route/link.h>
#include <netlink/route/link/inet6.h>
#include <netlink/route/qdisc.h>
#include <netlink/route/qdisc/fifo.h>
#include <netlink/route/qdisc/htb.h>
#include <netlink/route/tc.h>

#include <cstdio>
#include <cstring>
#include <functional>

namespace trellis::qos::tc {
namespace {

using sdk::Error;

[[noreturn]] void Fail(int nl_err, const std::string& what) {
  int e = nl_err < 0 ? -nl_err : nl_err;
  trellis_status code = TRELLIS_E_INTERNAL;
  switch (e) {
    case NLE_OBJ_NOTFOUND:
    case NLE_NODEV:
      code = TRELLIS_E_NOT_FOUND;
      break;
    case NLE_EXIST:
      code = TRELLIS_E_EXISTS;
      break;
    case NLE_BUSY:
    case NLE_AGAIN:
    case NLE_DUMP_INTR:
      code = TRELLIS_E_UNAVAILABLE;
      break;
    default:
      break;
  }
  throw Error(code, what + ": " + nl_geterror(e));
}

bool Gone(int nl_err) {
  int e = nl_err < 0 ? -nl_err : nl_err;
  return e == NLE_OBJ_NOTFOUND || e == NLE_NODEV;
}

std::string On(int ifindex) {
  char name[IF_NAMESIZE] = {};
  if (if_indextoname(ifindex, name) != nullptr) return std::string(" on ") + name;
  return " on ifindex " + std::to_string(ifindex);
}

template <class T, void (*Put)(T*)>
struct Deleter {
  void operator()(T* p) const { Put(p); }
};
void PutLink(rtnl_link* l) { rtnl_link_put(l); }
void PutQdisc(rtnl_qdisc* q) { rtnl_qdisc_put(q); }
void PutClass(rtnl_class* c) { rtnl_class_put(c); }
void PutCache(nl_cache* c) { nl_cache_free(c); }
void PutMsg(nl_msg* m) { nlmsg_free(m); }
using LinkPtr = std::unique_ptr<rtnl_link, Deleter<rtnl_link, PutLink>>;
using QdiscPtr = std::unique_ptr<rtnl_qdisc, Deleter<rtnl_qdisc, PutQdisc>>;
using ClassPtr = std::unique_ptr<rtnl_class, Deleter<rtnl_class, PutClass>>;
using CachePtr = std::unique_ptr<nl_cache, Deleter<nl_cache, PutCache>>;
using MsgPtr = std::unique_ptr<nl_msg, Deleter<nl_msg, PutMsg>>;

// Runs a dump, retrying while the kernel reports it interrupted by a
// concurrent change (NLM_F_DUMP_INTR): a partial dump must never be taken
// for the whole truth (a missing class would be "re-created" or "collected").
template <class Fn>
void RetryDump(const std::string& what, Fn&& fn) {
  int err = 0;
  for (int attempt = 0; attempt < 5; ++attempt) {
    err = fn();
    if (err >= 0) return;
    if (-err != NLE_DUMP_INTR) break;
  }
  Fail(err, what);
}

uint32_t HookParent(Hook h) {
  return TC_H_MAKE(TC_H_CLSACT, h == Hook::kIngress ? TC_H_MIN_INGRESS : TC_H_MIN_EGRESS);
}
const char* HookName(Hook h) { return h == Hook::kIngress ? "ingress" : "egress"; }

void SendAndAck(const Socket& sk, nl_msg* msg, const std::string& what) {
  int err = nl_send_auto(sk.get(), msg);
  if (err >= 0) err = nl_wait_for_ack(sk.get());
  if (err < 0) Fail(err, what);
}

tcmsg MakeTcmsg(int ifindex, uint32_t handle, uint32_t parent, uint32_t info) {
  tcmsg t{};
  t.tcm_family = AF_UNSPEC;
  t.tcm_ifindex = ifindex;
  t.tcm_handle = handle;
  t.tcm_parent = parent;
  t.tcm_info = info;
  return t;
}

}  // namespace

std::string HandleString(uint32_t h) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%x:%x", h >> 16, h & 0xffff);
  return buf;
}

Socket Socket::Open() {
  Socket s;
  s.sk_.reset(nl_socket_alloc());
  if (!s.sk_) throw Error(TRELLIS_E_INTERNAL, "netlink: out of memory");
  int err = nl_connect(s.sk_.get(), NETLINK_ROUTE);
  if (err < 0) Fail(err, "netlink connect");
  return s;
}

// ---------------------------------------------------------------- links --

std::optional<LinkInfo> GetLink(const Socket& sk, const std::string& name) {
  rtnl_link* raw = nullptr;
  int err = rtnl_link_get_kernel(sk.get(), 0, name.c_str(), &raw);
  if (err < 0) {
    if (Gone(err)) return std::nullopt;
    Fail(err, "link " + name);
  }
  LinkPtr l(raw);
  LinkInfo info;
  info.ifindex = rtnl_link_get_ifindex(l.get());
  info.name = name;
  if (const char* k = rtnl_link_get_type(l.get())) info.kind = k;
  if (const char* a = rtnl_link_get_ifalias(l.get())) info.alias = a;
  info.up = (rtnl_link_get_flags(l.get()) & IFF_UP) != 0;
  return info;
}

int CreateIfb(const Socket& sk, const std::string& name, const std::string& alias) {
  LinkPtr l(rtnl_link_alloc());
  if (!l) throw Error(TRELLIS_E_INTERNAL, "netlink: out of memory");
  rtnl_link_set_name(l.get(), name.c_str());
  int err = rtnl_link_set_type(l.get(), "ifb");
  if (err < 0) Fail(err, "link " + name + ": type ifb");
  err = rtnl_link_add(sk.get(), l.get(), NLM_F_CREATE | NLM_F_EXCL);
  if (err < 0) Fail(err, "creating IFB device " + name);
  auto info = GetLink(sk, name);
  if (!info) throw Error(TRELLIS_E_UNAVAILABLE, "IFB device " + name + " vanished after creation");
  // The kernel ignores IFLA_IFALIAS in the request that creates a link.
  {
    LinkPtr cur(rtnl_link_alloc()), change(rtnl_link_alloc());
    rtnl_link_set_ifindex(cur.get(), info->ifindex);
    rtnl_link_set_ifalias(change.get(), alias.c_str());
    err = rtnl_link_change(sk.get(), cur.get(), change.get(), 0);
    if (err < 0) {
      DeleteLink(sk, info->ifindex);
      Fail(err, "setting the alias of " + name);
    }
  }
  // No IPv6 link-local address on the IFB: the host would otherwise send
  // router and multicast-listener solicitations through the shaping tree.
  // Best effort (the kernel may run without IPv6).
  {
    LinkPtr cur(rtnl_link_alloc()), change(rtnl_link_alloc());
    rtnl_link_set_ifindex(cur.get(), info->ifindex);
    uint8_t none = rtnl_link_inet6_str2addrgenmode("none");
    if (rtnl_link_inet6_set_addr_gen_mode(change.get(), none) >= 0) {
      rtnl_link_change(sk.get(), cur.get(), change.get(), 0);
    }
  }
  SetLinkUp(sk, info->ifindex);
  return info->ifindex;
}

void SetLinkUp(const Socket& sk, int ifindex) {
  LinkPtr l(rtnl_link_alloc()), change(rtnl_link_alloc());
  rtnl_link_set_ifindex(l.get(), ifindex);
  rtnl_link_set_flags(change.get(), IFF_UP);
  int err = rtnl_link_change(sk.get(), l.get(), change.get(), 0);
  if (err < 0) Fail(err, "setting up ifindex " + std::to_string(ifindex));
}

void DeleteLink(const Socket& sk, int ifindex) {
  LinkPtr l(rtnl_link_alloc());
  rtnl_link_set_ifindex(l.get(), ifindex);
  int err = rtnl_link_delete(sk.get(), l.get());
  if (err < 0 && !Gone(err)) Fail(err, "deleting ifindex " + std::to_string(ifindex));
}

// -------------------------------------------------------------- qdiscs --

std::vector<Qdisc> Qdiscs(const Socket& sk, int ifindex) {
  std::vector<Qdisc> out;
  RetryDump("listing qdiscs" + On(ifindex), [&] {
    nl_cache* raw = nullptr;
    int err = rtnl_qdisc_alloc_cache(sk.get(), &raw);
    if (err < 0) return err;
    CachePtr cache(raw);
    out.clear();
    for (nl_object* o = nl_cache_get_first(cache.get()); o; o = nl_cache_get_next(o)) {
      auto* q = reinterpret_cast<rtnl_qdisc*>(o);
      rtnl_tc* t = TC_CAST(q);
      if (rtnl_tc_get_ifindex(t) != ifindex) continue;
      Qdisc d;
      d.handle = rtnl_tc_get_handle(t);
      d.parent = rtnl_tc_get_parent(t);
      if (const char* k = rtnl_tc_get_kind(t)) d.kind = k;
      if (d.kind == "bfifo" || d.kind == "pfifo") {
        int lim = rtnl_qdisc_fifo_get_limit(q);
        d.limit = lim > 0 ? static_cast<uint32_t>(lim) : 0;
      } else if (d.kind == "htb") {
        d.defcls = rtnl_htb_get_defcls(q);
      }
      d.bytes = rtnl_tc_get_stat(t, RTNL_TC_BYTES);
      d.packets = rtnl_tc_get_stat(t, RTNL_TC_PACKETS);
      d.drops = rtnl_tc_get_stat(t, RTNL_TC_DROPS);
      d.overlimits = rtnl_tc_get_stat(t, RTNL_TC_OVERLIMITS);
      out.push_back(std::move(d));
    }
    return 0;
  });
  return out;
}

void SetHtbRoot(const Socket& sk, int ifindex, uint32_t handle, uint32_t default_minor) {
  QdiscPtr q(rtnl_qdisc_alloc());
  rtnl_tc_set_ifindex(TC_CAST(q.get()), ifindex);
  rtnl_tc_set_parent(TC_CAST(q.get()), TC_H_ROOT);
  rtnl_tc_set_handle(TC_CAST(q.get()), handle);
  int err = rtnl_tc_set_kind(TC_CAST(q.get()), "htb");
  if (err >= 0) err = rtnl_htb_set_defcls(q.get(), default_minor);
  if (err >= 0) err = rtnl_qdisc_add(sk.get(), q.get(), NLM_F_CREATE | NLM_F_REPLACE);
  if (err < 0) Fail(err, "htb root qdisc " + HandleString(handle) + On(ifindex));
}

void SetBfifo(const Socket& sk, int ifindex, uint32_t parent, uint32_t handle, uint32_t limit) {
  QdiscPtr q(rtnl_qdisc_alloc());
  rtnl_tc_set_ifindex(TC_CAST(q.get()), ifindex);
  rtnl_tc_set_parent(TC_CAST(q.get()), parent);
  rtnl_tc_set_handle(TC_CAST(q.get()), handle);
  int err = rtnl_tc_set_kind(TC_CAST(q.get()), "bfifo");
  if (err >= 0) err = rtnl_qdisc_fifo_set_limit(q.get(), static_cast<int>(limit));
  if (err >= 0) err = rtnl_qdisc_add(sk.get(), q.get(), NLM_F_CREATE | NLM_F_REPLACE);
  if (err < 0) {
    Fail(err, "bfifo qdisc " + HandleString(handle) + " under class " + HandleString(parent) +
                  On(ifindex));
  }
}

bool AddClsact(const Socket& sk, int ifindex) {
  QdiscPtr q(rtnl_qdisc_alloc());
  rtnl_tc_set_ifindex(TC_CAST(q.get()), ifindex);
  rtnl_tc_set_parent(TC_CAST(q.get()), TC_H_CLSACT);
  rtnl_tc_set_handle(TC_CAST(q.get()), TC_H_MAKE(TC_H_CLSACT, 0));
  int err = rtnl_tc_set_kind(TC_CAST(q.get()), "clsact");
  if (err >= 0) err = rtnl_qdisc_add(sk.get(), q.get(), NLM_F_CREATE | NLM_F_EXCL);
  if (err == -NLE_EXIST) return false;
  if (err < 0) Fail(err, "clsact qdisc" + On(ifindex));
  return true;
}

void DeleteClsact(const Socket& sk, int ifindex) {
  QdiscPtr q(rtnl_qdisc_alloc());
  rtnl_tc_set_ifindex(TC_CAST(q.get()), ifindex);
  rtnl_tc_set_parent(TC_CAST(q.get()), TC_H_CLSACT);
  rtnl_tc_set_handle(TC_CAST(q.get()), TC_H_MAKE(TC_H_CLSACT, 0));
  rtnl_tc_set_kind(TC_CAST(q.get()), "clsact");
  int err = rtnl_qdisc_delete(sk.get(), q.get());
  // EINVAL: the link has no clsact (the kernel's answer for "no such qdisc").
  if (err < 0 && !Gone(err) && -err != NLE_INVAL) Fail(err, "deleting clsact" + On(ifindex));
}

// ---------------------------------------------------------------- HTB --

std::vector<HtbClass> HtbClasses(const Socket& sk, int ifindex) {
  std::vector<HtbClass> out;
  RetryDump("listing classes" + On(ifindex), [&] {
    nl_cache* raw = nullptr;
    int err = rtnl_class_alloc_cache(sk.get(), ifindex, &raw);
    if (err < 0) return err;
    CachePtr cache(raw);
    out.clear();
    for (nl_object* o = nl_cache_get_first(cache.get()); o; o = nl_cache_get_next(o)) {
      auto* c = reinterpret_cast<rtnl_class*>(o);
      rtnl_tc* t = TC_CAST(c);
      const char* kind = rtnl_tc_get_kind(t);
      if (kind == nullptr || std::string(kind) != "htb") continue;
      HtbClass h;
      h.handle = rtnl_tc_get_handle(t);
      h.parent = rtnl_tc_get_parent(t);
      rtnl_htb_get_rate64(c, &h.rate);
      rtnl_htb_get_ceil64(c, &h.ceil);
      h.burst = rtnl_htb_get_rbuffer(c);
      h.cburst = rtnl_htb_get_cbuffer(c);
      h.quantum = rtnl_htb_get_quantum(c);
      h.prio = rtnl_htb_get_prio(c);
      h.bytes = rtnl_tc_get_stat(t, RTNL_TC_BYTES);
      h.packets = rtnl_tc_get_stat(t, RTNL_TC_PACKETS);
      h.drops = rtnl_tc_get_stat(t, RTNL_TC_DROPS);
      out.push_back(h);
    }
    return 0;
  });
  return out;
}

void SetHtbClass(const Socket& sk, int ifindex, const HtbClass& c) {
  ClassPtr cls(rtnl_class_alloc());
  rtnl_tc* t = TC_CAST(cls.get());
  rtnl_tc_set_ifindex(t, ifindex);
  rtnl_tc_set_parent(t, c.parent);
  rtnl_tc_set_handle(t, c.handle);
  int err = rtnl_tc_set_kind(t, "htb");
  if (err >= 0) err = rtnl_htb_set_rate64(cls.get(), c.rate);
  if (err >= 0) err = rtnl_htb_set_ceil64(cls.get(), c.ceil);
  if (err >= 0) err = rtnl_htb_set_rbuffer(cls.get(), c.burst);
  if (err >= 0) err = rtnl_htb_set_cbuffer(cls.get(), c.cburst);
  if (err >= 0 && c.quantum > 0) err = rtnl_htb_set_quantum(cls.get(), c.quantum);
  if (err >= 0) err = rtnl_htb_set_prio(cls.get(), c.prio);
  if (err >= 0) err = rtnl_class_add(sk.get(), cls.get(), NLM_F_CREATE);
  if (err < 0) Fail(err, "htb class " + HandleString(c.handle) + On(ifindex));
}

void DeleteClass(const Socket& sk, int ifindex, uint32_t handle) {
  ClassPtr cls(rtnl_class_alloc());
  rtnl_tc_set_ifindex(TC_CAST(cls.get()), ifindex);
  rtnl_tc_set_handle(TC_CAST(cls.get()), handle);
  int err = rtnl_class_delete(sk.get(), cls.get());
  if (err < 0 && !Gone(err)) Fail(err, "deleting htb class " + HandleString(handle) + On(ifindex));
}

// ------------------------------------------------- classifier filters --

namespace {

// Parses one RTM_NEWTFILTER message of a dump.
int ParseFilter(nl_msg* msg, void* arg) {
  auto* out = static_cast<std::vector<Filter>*>(arg);
  nlmsghdr* h = nlmsg_hdr(msg);
  if (h->nlmsg_type != RTM_NEWTFILTER) return NL_OK;
  auto* t = static_cast<tcmsg*>(nlmsg_data(h));
  nlattr* tb[TCA_MAX + 1] = {};
  if (nlmsg_parse(h, sizeof(tcmsg), tb, TCA_MAX, nullptr) < 0) return NL_OK;
  Filter f;
  f.pref = TC_H_MAJ(t->tcm_info) >> 16;
  f.handle = t->tcm_handle;
  if (tb[TCA_KIND]) f.kind = nla_get_string(tb[TCA_KIND]);
  if (f.kind == "bpf" && tb[TCA_OPTIONS]) {
    nlattr* ob[TCA_BPF_MAX + 1] = {};
    if (nla_parse_nested(ob, TCA_BPF_MAX, tb[TCA_OPTIONS], nullptr) >= 0) {
      if (ob[TCA_BPF_NAME]) f.name = nla_get_string(ob[TCA_BPF_NAME]);
      if (ob[TCA_BPF_ID]) f.bpf_id = nla_get_u32(ob[TCA_BPF_ID]);
      if (ob[TCA_BPF_ACT]) {
        nlattr* act;
        int rem;
        nla_for_each_nested(act, ob[TCA_BPF_ACT], rem) {
          nlattr* ab[TCA_ACT_MAX + 1] = {};
          if (nla_parse_nested(ab, TCA_ACT_MAX, act, nullptr) < 0) continue;
          if (!ab[TCA_ACT_KIND] || std::string(nla_get_string(ab[TCA_ACT_KIND])) != "mirred") {
            continue;
          }
          if (!ab[TCA_ACT_OPTIONS]) continue;
          nlattr* mb[TCA_MIRRED_MAX + 1] = {};
          if (nla_parse_nested(mb, TCA_MIRRED_MAX, ab[TCA_ACT_OPTIONS], nullptr) < 0) continue;
          if (!mb[TCA_MIRRED_PARMS] || nla_len(mb[TCA_MIRRED_PARMS]) < int(sizeof(tc_mirred))) {
            continue;
          }
          tc_mirred p;
          std::memcpy(&p, nla_data(mb[TCA_MIRRED_PARMS]), sizeof p);
          if (p.eaction == TCA_EGRESS_REDIR) f.redirect_ifindex = static_cast<int>(p.ifindex);
        }
      }
    }
  }
  out->push_back(std::move(f));
  return NL_OK;
}

}  // namespace

std::vector<Filter> Filters(const Socket& sk, int ifindex, Hook hook) {
  std::vector<Filter> out;
  const std::string what = std::string("listing ") + HookName(hook) + " filters" + On(ifindex);
  RetryDump(what, [&] {
    out.clear();
    MsgPtr msg(nlmsg_alloc_simple(RTM_GETTFILTER, NLM_F_DUMP));
    if (!msg) return -NLE_NOMEM;
    tcmsg t = MakeTcmsg(ifindex, 0, HookParent(hook), 0);
    int err = nlmsg_append(msg.get(), &t, sizeof t, NLMSG_ALIGNTO);
    if (err < 0) return err;
    err = nl_send_auto(sk.get(), msg.get());
    if (err < 0) return err;
    std::unique_ptr<nl_cb, void (*)(nl_cb*)> cb(nl_cb_clone(nl_socket_get_cb(sk.get())), nl_cb_put);
    if (!cb) return -NLE_NOMEM;
    nl_cb_set(cb.get(), NL_CB_VALID, NL_CB_CUSTOM, ParseFilter, &out);
    err = nl_recvmsgs(sk.get(), cb.get());
    return err < 0 ? err : 0;
  });
  return out;
}

void SetBpfRedirect(const Socket& sk, int ifindex, Hook hook, uint32_t pref, uint32_t handle,
                    int prog_fd, const std::string& name, int target_ifindex) {
  const std::string what =
      std::string(HookName(hook)) + " filter " + std::to_string(pref) + On(ifindex);
  MsgPtr msg(nlmsg_alloc_simple(RTM_NEWTFILTER, NLM_F_CREATE));
  if (!msg) throw Error(TRELLIS_E_INTERNAL, "netlink: out of memory");
  tcmsg t = MakeTcmsg(ifindex, handle, HookParent(hook), TC_H_MAKE(pref << 16, htons(ETH_P_ALL)));
  nl_msg* m = msg.get();
  if (nlmsg_append(m, &t, sizeof t, NLMSG_ALIGNTO) < 0) Fail(NLE_NOMEM, what);
  tc_mirred mirred{};
  mirred.action = TC_ACT_STOLEN;
  mirred.eaction = TCA_EGRESS_REDIR;
  mirred.ifindex = static_cast<uint32_t>(target_ifindex);
  bool ok = nla_put_string(m, TCA_KIND, "bpf") >= 0;
  nlattr* opts = nla_nest_start(m, TCA_OPTIONS);
  ok = ok && opts != nullptr && nla_put_u32(m, TCA_BPF_FD, static_cast<uint32_t>(prog_fd)) >= 0 &&
       nla_put_string(m, TCA_BPF_NAME, name.c_str()) >= 0;
  nlattr* acts = ok ? nla_nest_start(m, TCA_BPF_ACT) : nullptr;
  nlattr* first = acts != nullptr ? nla_nest_start(m, 1) : nullptr;
  ok = ok && first != nullptr && nla_put_string(m, TCA_ACT_KIND, "mirred") >= 0;
  nlattr* aopts = ok ? nla_nest_start(m, TCA_ACT_OPTIONS) : nullptr;
  ok = ok && aopts != nullptr && nla_put(m, TCA_MIRRED_PARMS, sizeof mirred, &mirred) >= 0;
  if (!ok) Fail(NLE_NOMEM, what);
  nla_nest_end(m, aopts);
  nla_nest_end(m, first);
  nla_nest_end(m, acts);
  nla_nest_end(m, opts);
  SendAndAck(sk, m, what);
}

void DeleteFilter(const Socket& sk, int ifindex, Hook hook, uint32_t pref, uint32_t handle) {
  const std::string what =
      std::string("deleting ") + HookName(hook) + " filter " + std::to_string(pref) + On(ifindex);
  MsgPtr msg(nlmsg_alloc_simple(RTM_DELTFILTER, 0));
  if (!msg) throw Error(TRELLIS_E_INTERNAL, "netlink: out of memory");
  tcmsg t = MakeTcmsg(ifindex, handle, HookParent(hook), TC_H_MAKE(pref << 16, htons(ETH_P_ALL)));
  if (nlmsg_append(msg.get(), &t, sizeof t, NLMSG_ALIGNTO) < 0) Fail(NLE_NOMEM, what);
  int err = nl_send_auto(sk.get(), msg.get());
  if (err >= 0) err = nl_wait_for_ack(sk.get());
  // ENOENT: no such filter or chain; EINVAL: the link has no clsact.
  if (err < 0 && !Gone(err) && -err != NLE_INVAL) Fail(err, what);
}

}  // namespace trellis::qos::tc
