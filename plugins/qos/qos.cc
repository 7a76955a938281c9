// qos: per-pod bandwidth limits and priority classes, in tc through libnl.
//
// Kernel layout (in the node namespace; docs/qos.md has the picture):
//
//   host veth of a pod (created by the host datapath)
//     clsact
//       ingress hook (packets FROM the pod) ─┐  cls_bpf at pref kFilterPref,
//       egress hook  (packets TO the pod)  ─┐│  named "trellis-qos:<cid>/<if>@<class>":
//                                           ││  skb->priority = ffe0:<pod minor>,
//                                           ││  then mirred egress redirect
//   tqos-ingress (IFB) <────────────────────┘│
//   tqos-egress  (IFB) <─────────────────────┘
//     htb ffe0: default ffe0:f002
//       ffe0:f000 node class      rate = ceil = node_<dir>_bandwidth (or 4Tbit)
//         ffe0:<tc_class_id>      a priority class: rate = its bandwidth,
//                                 ceil = the node limit (or its own rate)
//           ffe0:<pod minor>      pod leaf: ceil = the pod's limit; bfifo
//         ffe0:f001 default class pods without a class: rate = what the
//                                 classes leave, ceil = the node limit
//           ffe0:<pod minor>
//           ffe0:f002             catch-all leaf (nothing should land here)
//
// A pod's leaf has the same minor on both IFBs. The IFB returns each packet
// to the veth it came from (mirred records it), so the pod cannot see or
// undo any of this. Pods that need no shaping in a direction are not
// redirected in that direction at all.
//
// Per-pod records live in the host's key/value store under
// "pod/<container id>/<ifname>": the minor, the inputs the limits were
// computed from (so a config change recomputes them), and what is applied.
#include <trellis/plugin.hpp>

#include <linux/pkt_sched.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>

#include "bpf.h"
#include "spec.h"
#include "tc.h"

namespace {

using trellis::sdk::Error;
using trellis::sdk::Json;
using trellis::sdk::Pod;
using trellis::sdk::PodRef;
namespace qos = trellis::qos;
namespace tc = trellis::qos::tc;
using qos::Direction;
using qos::kDirections;
using qos::kEgress;
using qos::kIngress;

constexpr uint32_t kMajor = 0xffe0;
constexpr uint32_t kLeafFirst = 0x100, kLeafLast = 0xefff;
constexpr uint32_t kNodeMinor = 0xf000, kDefaultMinor = 0xf001, kCatchAllMinor = 0xf002;
constexpr uint32_t kFilterPref = 0x7e11, kFilterHandle = 1;
constexpr uint64_t kUnlimited = qos::kMaxRate;  // bits/s of a class nothing limits
constexpr uint64_t kLeafAssuredBytes = 1000;    // 8 kbit/s: see Sync()
constexpr uint32_t kLeafQuantum = 16384;
constexpr uint32_t kMaxQueueBytes = 4u << 20;
const char* const kIfbName[2] = {"tqos-egress", "tqos-ingress"};
const char* const kIfbAlias[2] = {"trellis-qos:egress", "trellis-qos:ingress"};
const char* const kTagPrefix = "trellis-qos:";

// The veth hook that sees a direction's packets: a pod's egress is the host
// end's ingress.
tc::Hook HookOf(Direction d) { return d == kEgress ? tc::Hook::kIngress : tc::Hook::kEgress; }

std::string Key(const std::string& cid, const std::string& ifname) {
  return "pod/" + cid + "/" + ifname;
}

// HTB quantum of an inner class: 1 ms at its rate, bounded. (HTB's DRR runs
// on leaves; inner quanta only matter for classes turned leaves.)
uint32_t InnerQuantum(uint64_t bits) {
  return static_cast<uint32_t>(std::clamp<uint64_t>(bits / 8 / 1000, 1514, 1u << 20));
}

struct Record {
  std::string container_id, ifname, host_ifname;
  std::string k8s_namespace, k8s_name;
  uint32_t minor = 0;
  qos::PodInputs inputs;
  bool own_clsact = false;           // we added the clsact qdisc
  std::array<uint32_t, 2> parent{};  // applied leaf parent minor; 0: no leaf
  std::array<bool, 2> filter{};      // our filter is on the hook of the direction
  // Not persisted: metric state.
  std::array<std::string, 2> class_label;  // class of the leaf, for metrics
  std::array<std::optional<uint64_t>, 2> last_drops;

  Json ToJson() const {
    return {{"container_id", container_id},
            {"ifname", ifname},
            {"host_ifname", host_ifname},
            {"ns", k8s_namespace},
            {"name", k8s_name},
            {"minor", minor},
            {"inputs", inputs.ToJson()},
            {"own_clsact", own_clsact},
            {"parent", parent},
            {"filter", filter}};
  }
  static Record FromJson(const Json& j) {
    Record r;
    r.container_id = j.at("container_id");
    r.ifname = j.at("ifname");
    r.host_ifname = j.value("host_ifname", "");
    r.k8s_namespace = j.value("ns", "");
    r.k8s_name = j.value("name", "");
    r.minor = j.at("minor");
    r.inputs = qos::PodInputs::FromJson(j.value("inputs", Json::object()));
    r.own_clsact = j.value("own_clsact", false);
    r.parent = j.value("parent", std::array<uint32_t, 2>{});
    r.filter = j.value("filter", std::array<bool, 2>{});
    return r;
  }
  PodRef ref() const { return {container_id, ifname}; }
  std::string Tag() const { return kTagPrefix + container_id + "/" + ifname; }
  std::vector<std::string> MetricLabels(Direction d) const {
    std::string pod = k8s_name.empty() ? container_id.substr(0, 12) : k8s_name;
    return {k8s_namespace, pod, ifname, qos::DirectionName(d)};
  }
};

// What one direction of one pod should look like in the kernel.
struct Leaf {
  uint32_t parent = 0;  // class minor
  std::string class_label;
  std::optional<qos::Limit> limit;  // the pod's own limit
  uint64_t ceil = 0;                // bits/s
  uint32_t cburst = 0;              // bytes
  uint32_t prio = 0;
  uint32_t queue = 0;  // bfifo bytes
};

class Qos {
 public:
  static constexpr const char* kName = "qos";
  static constexpr const char* kVersion = "1.0.0";
  static constexpr const char* kDescription =
      "Per-pod bandwidth limits and priority classes (HTB on IFB, tc via libnl)";

  static void Validate(const Json& config) { qos::Config::Parse(config); }

  Qos(trellis::sdk::Host host, const Json& config)
      : host_(host),
        cfg_(qos::Config::Parse(config)),
        sk_(tc::Socket::Open()),
        stats_sk_(tc::Socket::Open()) {
    m_pod_rate_ =
        host_.RegisterMetric(TRELLIS_METRIC_GAUGE, "trellis_qos_pod_limit_bits_per_second",
                             "Configured bandwidth limit of a pod attachment, bits/s.",
                             {"namespace", "pod", "interface", "direction"});
    m_pod_drops_ =
        host_.RegisterMetric(TRELLIS_METRIC_COUNTER, "trellis_qos_pod_drops_total",
                             "Packets of a pod attachment dropped by its shaper (tc stats).",
                             {"namespace", "pod", "interface", "direction"});
    m_class_rate_ = host_.RegisterMetric(
        TRELLIS_METRIC_GAUGE, "trellis_qos_class_guaranteed_bits_per_second",
        "Guaranteed bandwidth of a priority class on this node, bits/s (class \"default\": "
        "pods without a class).",
        {"class", "direction"});
    m_class_drops_ = host_.RegisterMetric(
        TRELLIS_METRIC_COUNTER, "trellis_qos_class_drops_total",
        "Packets dropped by the shapers of a priority class's pods (tc stats).",
        {"class", "direction"});
    for (const auto& [key, value] : host_.Scan("pod/")) {
      Json j = Json::parse(value, nullptr, false);
      try {
        Record r = Record::FromJson(j);
        used_.insert(r.minor);
        records_.emplace(r.ref(), std::move(r));
      } catch (const std::exception& e) {
        host_.Warn("dropping unreadable record " + key + ": " + e.what());
        host_.Delete(key);
      }
    }
    // Leaves in the kernel that no record owns (a crash between creating
    // one and recording it) keep their minor until GC removes them.
    for (Direction d : kDirections) {
      auto link = tc::GetLink(sk_, kIfbName[d]);
      if (!link || link->alias != kIfbAlias[d]) continue;
      ifb_[d] = link->ifindex;
      for (const auto& c : tc::HtbClasses(sk_, ifb_[d])) {
        uint32_t minor = TC_H_MIN(c.handle);
        if (TC_H_MAJ(c.handle) == tc::Handle(kMajor, 0) && minor >= kLeafFirst &&
            minor <= kLeafLast) {
          used_.insert(minor);
        }
      }
    }
    interval_us_ = cfg_.stats_interval_us;
    PublishClassRates();
    host_.Info("restored " + std::to_string(records_.size()) + " shaped pod attachments");
    stats_ = std::thread([this] { StatsLoop(); });
  }

  ~Qos() {
    {
      std::lock_guard lock(stats_mu_);
      stop_ = true;
    }
    stats_cv_.notify_all();
    if (stats_.joinable()) stats_.join();
  }

  void Reconfigure(const Json& config) {
    qos::Config next = qos::Config::Parse(config);
    std::lock_guard lock(mu_);
    qos::Config prev = std::move(cfg_);
    cfg_ = std::move(next);
    tree_ok_ = {false, false};
    interval_us_ = cfg_.stats_interval_us;
    // Trees first (new classes exist before pods move into them), then the
    // pods, then classes nobody uses any more.
    for (Direction d : kDirections) {
      if (ifb_[d] != 0) Note(TreeKey(d), [&] { EnsureTree(d); });
    }
    for (auto& [ref, rec] : records_) {
      Note(PodKey(rec.ref()), [&] {
        qos::PodSpec spec;
        try {
          spec = qos::Resolve(rec.inputs, cfg_);
        } catch (const Error& e) {
          // The pod was admitted under the old config; it keeps running
          // unclassified rather than unshaped. CHECK reports it.
          host_.Warn("pod " + rec.container_id + " (" + rec.ifname + "): " + e.what() +
                     "; shaping it without a priority class");
          qos::PodInputs in = rec.inputs;
          in.args_class.clear();
          in.annotations.erase(cfg_.class_key);
          in.annotations.erase(prev.class_key);
          spec = qos::Resolve(in, cfg_);
        }
        Sync(rec, spec);
      });
    }
    for (Direction d : kDirections) {
      if (ifb_[d] != 0) Note(TreeKey(d), [&] { PruneTree(d); });
    }
    Note("idle devices", [&] { DropIdleIfbs(); });
    PublishClassRates(&prev);
    if (!failures_.empty()) {
      host_.Error("reconfigure left " + std::to_string(failures_.size()) +
                  " pods or trees out of date (retried on their next apply): " +
                  failures_.begin()->first + ": " + failures_.begin()->second);
      host_.NotifyHealth("qos: " + std::to_string(failures_.size()) + " updates failed");
    }
  }

  Json Status() {
    std::lock_guard lock(mu_);
    Json classes = Json::object();
    for (const auto& [name, pc] : cfg_.classes) {
      Json c = {{"tc_class_id", pc.tc_class_id}, {"priority", pc.priority}};
      for (Direction d : kDirections) {
        if (pc.rate[d]) c[std::string(qos::DirectionName(d)) + "_bits"] = *pc.rate[d];
      }
      classes[name] = c;
    }
    std::string message;
    if (!failures_.empty()) {
      message = std::to_string(failures_.size()) +
                " out of date, first: " + failures_.begin()->first + ": " +
                failures_.begin()->second;
    }
    return {{"healthy", true},
            {"degraded", !failures_.empty()},
            {"message", message},
            {"shaped_attachments", records_.size()},
            {"ifb",
             {{"egress", ifb_[kEgress] != 0 ? kIfbName[kEgress] : ""},
              {"ingress", ifb_[kIngress] != 0 ? kIfbName[kIngress] : ""}}},
            {"classes", classes}};
  }

  void Deactivate() {
    std::lock_guard lock(mu_);
    // A redirect whose IFB is gone drops every packet: filters go first.
    for (auto& [ref, rec] : records_) {
      Note(PodKey(ref), [&] { RemoveFilters(rec); });
      host_.Delete(Key(rec.container_id, rec.ifname));
      ForgetPodMetrics(rec);
    }
    records_.clear();
    used_.clear();
    failures_.clear();
    for (Direction d : kDirections) {
      auto link = tc::GetLink(sk_, kIfbName[d]);
      if (link && link->alias == kIfbAlias[d]) tc::DeleteLink(sk_, link->ifindex);
      ifb_[d] = 0;
      tree_ok_[d] = false;
    }
    for (const auto& [name, pc] : cfg_.classes) {
      for (Direction d : kDirections)
        host_.ForgetMetric(m_class_rate_, {name, qos::DirectionName(d)});
    }
    for (Direction d : kDirections)
      host_.ForgetMetric(m_class_rate_, {"default", qos::DirectionName(d)});
    host_.Info("removed the node's QoS devices");
  }

  // ------------------------------------------------------------- qos ops --

  void ApplyQos(const Pod& pod) {
    if (pod.host_ifname.empty()) {
      throw Error(TRELLIS_E_PRECONDITION, "the pod has no host interface yet");
    }
    std::lock_guard lock(mu_);
    qos::PodInputs inputs = qos::PodInputs::FromPod(pod, cfg_);
    qos::PodSpec spec = qos::Resolve(inputs, cfg_);  // refuses invalid values first
    PodRef ref = pod.ref();
    auto it = records_.find(ref);
    bool fresh = it == records_.end();
    if (fresh) {
      if (!NeedsShaping(spec)) return;  // nothing to do, nothing to record
      Record r;
      r.container_id = pod.container_id;
      r.ifname = pod.ifname;
      r.minor = AllocateMinor();
      it = records_.emplace(ref, std::move(r)).first;
    }
    Record& rec = it->second;
    if (!NeedsShaping(spec)) {
      Remove(rec);  // shaped before, not any more (annotations or config changed)
      return;
    }
    rec.host_ifname = pod.host_ifname;
    rec.k8s_namespace = pod.k8s_namespace;
    rec.k8s_name = pod.k8s_name;
    rec.inputs = inputs;
    try {
      Sync(rec, spec);
    } catch (...) {
      if (fresh) {
        // Undo what this call did; the host rolls the pod back anyway.
        try {
          Remove(rec);
        } catch (const std::exception& e) {
          host_.Warn("undoing a failed apply for " + pod.container_id + ": " + e.what());
        }
      }
      throw;
    }
    failures_.erase(PodKey(ref));
    Note("idle devices", [&] { DropIdleIfbs(); });  // the pod may have left a direction
  }

  void RemoveQos(const Pod& pod) {
    std::lock_guard lock(mu_);
    auto it = records_.find(pod.ref());
    if (it != records_.end()) {
      Remove(it->second);
      return;
    }
    // No record: only a filter tagged for this pod can be ours.
    if (pod.host_ifname.empty()) return;
    auto link = tc::GetLink(sk_, pod.host_ifname);
    if (!link) return;
    Record probe;
    probe.container_id = pod.container_id;
    probe.ifname = pod.ifname;
    probe.host_ifname = pod.host_ifname;
    for (Direction d : kDirections) {
      for (const auto& f : tc::Filters(sk_, link->ifindex, HookOf(d))) {
        if (f.pref == kFilterPref && f.name.rfind(probe.Tag() + "@", 0) == 0) {
          tc::DeleteFilter(sk_, link->ifindex, HookOf(d), kFilterPref, 0);
        }
      }
    }
  }

  void CheckQos(const Pod& pod) {
    std::lock_guard lock(mu_);
    qos::PodSpec spec;
    try {
      spec = qos::Resolve(qos::PodInputs::FromPod(pod, cfg_), cfg_);
    } catch (const Error& e) {
      throw Error(TRELLIS_E_MISMATCH,
                  std::string("the pod's QoS settings are no longer valid: ") + e.what());
    }
    auto it = records_.find(pod.ref());
    if (!NeedsShaping(spec)) {
      if (it != records_.end()) {
        throw Error(TRELLIS_E_MISMATCH, "the pod is shaped but its settings ask for no shaping");
      }
      return;
    }
    if (it == records_.end()) {
      throw Error(TRELLIS_E_MISMATCH, "the pod should be shaped but qos holds no record of it");
    }
    Verify(it->second, spec);
  }

  void GcQos(const std::vector<PodRef>& live) {
    std::lock_guard lock(mu_);
    std::set<PodRef> keep(live.begin(), live.end());
    std::vector<std::string> errors;
    for (auto it = records_.begin(); it != records_.end();) {
      auto next = std::next(it);
      if (!keep.contains(it->first)) {
        host_.Info("gc: removing the shaping of " + it->second.container_id + " (" +
                   it->second.ifname + ")");
        try {
          Remove(it->second);
        } catch (const std::exception& e) {
          errors.emplace_back(e.what());
        }
      }
      it = next;
    }
    // Leaves no record owns.
    std::set<uint32_t> owned;
    for (const auto& [ref, rec] : records_) owned.insert(rec.minor);
    for (Direction d : kDirections) {
      if (ifb_[d] == 0) continue;
      try {
        for (const auto& c : tc::HtbClasses(sk_, ifb_[d])) {
          uint32_t minor = TC_H_MIN(c.handle);
          if (TC_H_MAJ(c.handle) != tc::Handle(kMajor, 0) || minor < kLeafFirst ||
              minor > kLeafLast || owned.contains(minor)) {
            continue;
          }
          host_.Info("gc: removing orphan leaf " + tc::HandleString(c.handle) + " on " +
                     kIfbName[d]);
          try {
            tc::DeleteClass(sk_, ifb_[d], c.handle);
          } catch (const std::exception& e) {
            owned.insert(minor);  // still there: its minor stays taken
            errors.emplace_back(e.what());
          }
        }
      } catch (const std::exception& e) {
        errors.emplace_back(e.what());
      }
    }
    used_ = owned;
    // Priority classes a config change while the daemon was down left.
    for (Direction d : kDirections) {
      try {
        PruneTree(d);
      } catch (const std::exception& e) {
        errors.emplace_back(e.what());
      }
    }
    try {
      DropIdleIfbs();
    } catch (const std::exception& e) {
      errors.emplace_back(e.what());
    }
    if (!errors.empty()) throw Error(TRELLIS_E_UNAVAILABLE, "qos gc: " + errors.front());
  }

 private:
  // --------------------------------------------------------- desired state --

  bool NeedsShaping(const qos::PodSpec& spec) const {
    for (Direction d : kDirections) {
      if (DesiredLeaf(spec, d, 1500)) return true;
    }
    return false;
  }

  // The leaf of one direction, or nullopt when that direction is not shaped:
  // no limit of its own, no class bounding it, no node limit to share.
  std::optional<Leaf> DesiredLeaf(const qos::PodSpec& spec, Direction d, uint32_t mtu) const {
    const qos::PriorityClass* pc =
        spec.class_name.empty() ? nullptr : cfg_.FindClass(spec.class_name);
    bool in_class = pc != nullptr && pc->rate[d].has_value();
    if (!spec.limit[d] && !in_class && !cfg_.node_rate[d]) return std::nullopt;
    Leaf l;
    l.limit = spec.limit[d];
    if (in_class) {
      l.parent = pc->tc_class_id;
      l.class_label = pc->name;
      l.prio = pc->priority;
    } else {
      l.parent = kDefaultMinor;
      l.class_label = "default";
    }
    uint64_t parent_ceil = ClassCeil(d, in_class ? pc : nullptr);
    l.ceil = l.limit ? std::min(l.limit->rate, parent_ceil) : parent_ceil;
    l.cburst = l.limit ? l.limit->burst : qos::DefaultBurst(l.ceil);
    uint64_t bytes = l.ceil / 8 * cfg_.queue_latency_us / 1'000'000;
    // At least one full-size GSO packet and two frames: bfifo drops a
    // packet larger than its room even into an empty queue, and between pods
    // of one node (RTT ~0.1 ms) TCP's TSO autosizing sends 64 KiB packets at
    // any rate. Measured: a 62.5 KiB queue holds a 100 Mbit/s flow to
    // 70-77 Mbit/s, 66 KiB to 95. At low rates this floor, not
    // queue_latency, bounds the queue (10 Mbit/s: ~55 ms).
    uint64_t floor = 65536 + 2 * (uint64_t(mtu) + qos::kEthernetHeader);
    l.queue = static_cast<uint32_t>(std::clamp<uint64_t>(bytes, floor, kMaxQueueBytes));
    return l;
  }

  uint64_t NodeCeil(Direction d) const { return cfg_.node_rate[d].value_or(kUnlimited); }
  // The guaranteed rate of the class with `minor`: a priority class's own,
  // the default class's what the others leave.
  uint64_t ClassRate(Direction d, uint32_t minor) const {
    for (const auto& [name, pc] : cfg_.classes) {
      if (pc.tc_class_id == minor && pc.rate[d]) return *pc.rate[d];
    }
    return cfg_.DefaultClassRate(d).value_or(NodeCeil(d));
  }
  uint64_t ClassCeil(Direction d, const qos::PriorityClass* pc) const {
    if (pc == nullptr) return NodeCeil(d);
    return cfg_.node_rate[d] ? *cfg_.node_rate[d] : *pc->rate[d];
  }

  // ------------------------------------------------------------ node tree --

  void EnsureIfb(Direction d) {
    if (ifb_[d] != 0) return;
    auto link = tc::GetLink(sk_, kIfbName[d]);
    if (link) {
      if (link->alias != kIfbAlias[d]) {
        throw Error(TRELLIS_E_PRECONDITION,
                    std::string("device ") + kIfbName[d] + " exists but is not trellis's (alias '" +
                        link->alias + "', expected '" + kIfbAlias[d] + "')");
      }
      if (!link->up) tc::SetLinkUp(sk_, link->ifindex);
      ifb_[d] = link->ifindex;
      return;
    }
    ifb_[d] = tc::CreateIfb(sk_, kIfbName[d], kIfbAlias[d]);
    host_.Info(std::string("created ") + kIfbName[d]);
  }

  // Creates or updates the node tree of a direction in place.
  void EnsureTree(Direction d) {
    if (tree_ok_[d] && ifb_[d] != 0) return;
    EnsureIfb(d);
    int ifb = ifb_[d];
    bool have_root = false;
    for (const auto& q : tc::Qdiscs(sk_, ifb)) {
      if (q.parent == TC_H_ROOT && q.kind == "htb" && q.handle == tc::Handle(kMajor, 0)) {
        have_root = true;
      }
    }
    if (!have_root) tc::SetHtbRoot(sk_, ifb, tc::Handle(kMajor, 0), kCatchAllMinor);
    const uint64_t node = NodeCeil(d);
    auto inner = [&](uint32_t minor, uint32_t parent, uint64_t rate, uint64_t ceil, uint32_t prio) {
      tc::HtbClass c;
      c.handle = tc::Handle(kMajor, minor);
      c.parent = parent;
      c.rate = rate / 8;
      c.ceil = ceil / 8;
      c.burst = qos::DefaultBurst(rate);
      c.cburst = qos::DefaultBurst(ceil);
      c.quantum = InnerQuantum(rate);
      c.prio = prio;
      tc::SetHtbClass(sk_, ifb, c);
    };
    inner(kNodeMinor, tc::Handle(kMajor, 0), node, node, 0);
    inner(kDefaultMinor, tc::Handle(kMajor, kNodeMinor), ClassRate(d, kDefaultMinor), node, 0);
    for (const auto& [name, pc] : cfg_.classes) {
      if (!pc.rate[d]) continue;
      inner(pc.tc_class_id, tc::Handle(kMajor, kNodeMinor), *pc.rate[d], ClassCeil(d, &pc),
            pc.priority);
    }
    tc::HtbClass catch_all;
    catch_all.handle = tc::Handle(kMajor, kCatchAllMinor);
    catch_all.parent = tc::Handle(kMajor, kDefaultMinor);
    catch_all.rate = kLeafAssuredBytes;
    catch_all.ceil = node / 8;
    catch_all.burst = 2048;
    catch_all.cburst = qos::DefaultBurst(node);
    catch_all.quantum = kLeafQuantum;
    catch_all.prio = 7;
    tc::SetHtbClass(sk_, ifb, catch_all);
    tc::SetBfifo(sk_, ifb, catch_all.handle, tc::Handle(kCatchAllMinor, 0), 256 * 1024);
    tree_ok_[d] = true;
    failures_.erase(TreeKey(d));
  }

  // Deletes priority classes the config no longer has (after their pods
  // moved: HTB refuses to delete a class with children).
  void PruneTree(Direction d) {
    if (ifb_[d] == 0) return;
    std::set<uint32_t> want;
    for (const auto& [name, pc] : cfg_.classes) {
      if (pc.rate[d]) want.insert(pc.tc_class_id);
    }
    for (const auto& c : tc::HtbClasses(sk_, ifb_[d])) {
      uint32_t minor = TC_H_MIN(c.handle);
      if (TC_H_MAJ(c.handle) == tc::Handle(kMajor, 0) && minor >= 1 && minor < kLeafFirst &&
          !want.contains(minor)) {
        tc::DeleteClass(sk_, ifb_[d], c.handle);
      }
    }
  }

  // ----------------------------------------------------------- pod state --

  uint32_t AllocateMinor() {
    for (uint32_t m = kLeafFirst; m <= kLeafLast; ++m) {
      if (!used_.contains(m)) {
        used_.insert(m);
        return m;
      }
    }
    throw Error(TRELLIS_E_EXHAUSTED, "qos: every leaf class id of the node is in use (" +
                                         std::to_string(kLeafLast - kLeafFirst + 1) + ")");
  }

  // Makes the kernel match `spec` for the pod, changing only what differs in
  // meaning; every operation is a create-or-change in place, so a re-apply
  // never drops the pod's packets. The record is saved at the end.
  void Sync(Record& rec, const qos::PodSpec& spec) {
    std::array<std::optional<Leaf>, 2> want = {DesiredLeaf(spec, kEgress, rec.inputs.mtu),
                                               DesiredLeaf(spec, kIngress, rec.inputs.mtu)};
    auto veth = tc::GetLink(sk_, rec.host_ifname);
    if (!veth && (want[kEgress] || want[kIngress])) {
      throw Error(TRELLIS_E_NOT_FOUND, "host interface " + rec.host_ifname + " does not exist");
    }
    // Leaves before filters: a redirect never points at a missing leaf.
    for (Direction d : kDirections) {
      if (!want[d]) continue;
      EnsureTree(d);
      const Leaf& l = *want[d];
      const uint32_t handle = tc::Handle(kMajor, rec.minor);
      if (rec.parent[d] != 0 && rec.parent[d] != l.parent) {
        // HTB cannot re-parent a class: delete and re-create. Packets in
        // flight meanwhile fall into the catch-all leaf, none is lost to a
        // missing class; what was queued in the old leaf is dropped.
        tc::DeleteClass(sk_, ifb_[d], handle);
        rec.parent[d] = 0;
      }
      tc::HtbClass c;
      c.handle = handle;
      c.parent = tc::Handle(kMajor, l.parent);
      // Assured rate 8 kbit/s: the class's own rate is what pods of a class
      // share (the leaves borrow it fairly by equal quanta); a larger
      // assured rate per leaf would eat into every class's guarantee.
      c.rate = std::min<uint64_t>(kLeafAssuredBytes, l.ceil / 8);
      c.ceil = l.ceil / 8;
      c.burst = 2048;
      c.cburst = l.cburst;
      c.quantum = kLeafQuantum;
      c.prio = l.prio;
      bool created = rec.parent[d] == 0;
      tc::SetHtbClass(sk_, ifb_[d], c);
      rec.parent[d] = l.parent;
      tc::SetBfifo(sk_, ifb_[d], handle, tc::Handle(rec.minor, 0), l.queue);
      if (created) rec.last_drops[d] = 0;
      rec.class_label[d] = l.class_label;
    }
    if (veth) {
      if (want[kEgress] || want[kIngress]) {
        if (tc::AddClsact(sk_, veth->ifindex)) rec.own_clsact = true;
        qos::Fd prog = qos::LoadClassifier(tc::Handle(kMajor, rec.minor));
        const std::string tag = rec.Tag() + "@" + tc::HandleString(tc::Handle(kMajor, rec.minor));
        for (Direction d : kDirections) {
          if (!want[d]) continue;
          tc::SetBpfRedirect(sk_, veth->ifindex, HookOf(d), kFilterPref, kFilterHandle, prog.get(),
                             tag, ifb_[d]);
          rec.filter[d] = true;
        }
      }
      for (Direction d : kDirections) {
        if (want[d] || !rec.filter[d]) continue;
        tc::DeleteFilter(sk_, veth->ifindex, HookOf(d), kFilterPref, 0);
        rec.filter[d] = false;
      }
    } else {
      rec.filter = {false, false};
    }
    for (Direction d : kDirections) {
      if (want[d] || rec.parent[d] == 0) continue;
      if (ifb_[d] != 0) tc::DeleteClass(sk_, ifb_[d], tc::Handle(kMajor, rec.minor));
      rec.parent[d] = 0;
    }
    if (veth && rec.own_clsact && !rec.filter[kEgress] && !rec.filter[kIngress]) {
      DropClsactIfEmpty(rec, veth->ifindex);
    }
    for (Direction d : kDirections) {
      if (want[d] && want[d]->limit) {
        host_.SetMetric(m_pod_rate_, rec.MetricLabels(d), double(want[d]->limit->rate));
      } else {
        host_.ForgetMetric(m_pod_rate_, rec.MetricLabels(d));
      }
    }
    host_.Put(Key(rec.container_id, rec.ifname), rec.ToJson().dump());
  }

  void DropClsactIfEmpty(Record& rec, int ifindex) {
    for (Direction d : kDirections) {
      for (const auto& f : tc::Filters(sk_, ifindex, HookOf(d))) {
        if (f.pref != kFilterPref) return;  // someone else's filter: keep clsact
      }
    }
    tc::DeleteClsact(sk_, ifindex);
    rec.own_clsact = false;
  }

  void RemoveFilters(Record& rec) {
    if (rec.host_ifname.empty()) return;
    auto veth = tc::GetLink(sk_, rec.host_ifname);
    if (!veth) return;
    for (Direction d : kDirections) {
      tc::DeleteFilter(sk_, veth->ifindex, HookOf(d), kFilterPref, 0);
      rec.filter[d] = false;
    }
    if (rec.own_clsact) DropClsactIfEmpty(rec, veth->ifindex);
  }

  // Undoes everything of the pod: filters first, then its leaves, the
  // record, its metrics. Tolerates every piece being gone.
  void Remove(Record& rec) {
    RemoveFilters(rec);
    for (Direction d : kDirections) {
      if (ifb_[d] != 0) tc::DeleteClass(sk_, ifb_[d], tc::Handle(kMajor, rec.minor));
      rec.parent[d] = 0;
    }
    host_.Delete(Key(rec.container_id, rec.ifname));
    ForgetPodMetrics(rec);
    failures_.erase(PodKey(rec.ref()));
    used_.erase(rec.minor);
    records_.erase(rec.ref());  // `rec` dies here
    DropIdleIfbs();
  }

  // An IFB no pod is redirected to goes: nothing of ours stays in the kernel
  // when nothing is shaped. (A redirect to a deleted IFB would drop every
  // packet; leaves and filters of a direction always go together.)
  void DropIdleIfbs() {
    for (Direction d : kDirections) {
      if (ifb_[d] == 0) continue;
      bool used = false;
      for (const auto& [ref, rec] : records_) used = used || rec.parent[d] != 0 || rec.filter[d];
      if (used) continue;
      tc::DeleteLink(sk_, ifb_[d]);
      host_.Info(std::string("removed ") + kIfbName[d] + ": no pod is shaped in this direction");
      ifb_[d] = 0;
      tree_ok_[d] = false;
    }
  }

  void ForgetPodMetrics(const Record& rec) {
    for (Direction d : kDirections) {
      host_.ForgetMetric(m_pod_rate_, rec.MetricLabels(d));
      host_.ForgetMetric(m_pod_drops_, rec.MetricLabels(d));
    }
  }

  // CHECK: the kernel objects of the pod exist with the parameters `spec`
  // implies. Throws TRELLIS_E_MISMATCH naming the first difference.
  void Verify(const Record& rec, const qos::PodSpec& spec) {
    auto mismatch = [](const std::string& m) { throw Error(TRELLIS_E_MISMATCH, m); };
    auto veth = tc::GetLink(sk_, rec.host_ifname);
    if (!veth) mismatch("host interface " + rec.host_ifname + " does not exist");
    const uint32_t handle = tc::Handle(kMajor, rec.minor);
    for (Direction d : kDirections) {
      const std::string dir = qos::DirectionName(d);
      auto want = DesiredLeaf(spec, d, rec.inputs.mtu);
      auto filters = tc::Filters(sk_, veth->ifindex, HookOf(d));
      const tc::Filter* ours = nullptr;
      for (const auto& f : filters) {
        if (f.pref == kFilterPref && f.handle == kFilterHandle) ours = &f;
      }
      if (!want) {
        if (ours != nullptr)
          mismatch(dir + ": a qos filter is on " + rec.host_ifname +
                   " but the pod is not shaped in this direction");
        continue;
      }
      auto ifb = tc::GetLink(sk_, kIfbName[d]);
      if (!ifb) mismatch(dir + ": device " + kIfbName[d] + " is missing");
      // mirred drops what it cannot hand to a device that is down.
      if (!ifb->up) mismatch(dir + ": device " + kIfbName[d] + " is down");
      const std::string tag = rec.Tag() + "@" + tc::HandleString(handle);
      if (ours == nullptr) {
        mismatch(dir + ": no qos filter on " + rec.host_ifname + " (" +
                 (d == kEgress ? "ingress" : "egress") + " hook)");
      }
      if (ours->kind != "bpf" || ours->name != tag) {
        mismatch(dir + ": the filter on " + rec.host_ifname + " is '" + ours->name +
                 "', expected '" + tag + "'");
      }
      if (ours->redirect_ifindex != ifb->ifindex) {
        mismatch(dir + ": the filter on " + rec.host_ifname + " does not redirect to " +
                 kIfbName[d]);
      }
      const tc::HtbClass* leaf = nullptr;
      const tc::HtbClass* parent = nullptr;
      auto classes = tc::HtbClasses(sk_, ifb->ifindex);
      for (const auto& c : classes) {
        if (c.handle == handle) leaf = &c;
        if (c.handle == tc::Handle(kMajor, want->parent)) parent = &c;
      }
      if (leaf == nullptr)
        mismatch(dir + ": leaf class " + tc::HandleString(handle) + " is missing");
      if (leaf->parent != tc::Handle(kMajor, want->parent)) {
        mismatch(dir + ": leaf " + tc::HandleString(handle) + " hangs under " +
                 tc::HandleString(leaf->parent) + ", expected " +
                 tc::HandleString(tc::Handle(kMajor, want->parent)) + " (" + want->class_label +
                 ")");
      }
      if (leaf->ceil != want->ceil / 8) {
        mismatch(dir + ": leaf " + tc::HandleString(handle) + " is limited to " +
                 qos::FormatRate(leaf->ceil * 8) + ", expected " + qos::FormatRate(want->ceil));
      }
      if (!Near(leaf->cburst, want->cburst)) {
        mismatch(dir + ": leaf " + tc::HandleString(handle) + " has a burst of " +
                 std::to_string(leaf->cburst) + " bytes, expected " + std::to_string(want->cburst));
      }
      if (parent == nullptr) {
        mismatch(dir + ": class " + tc::HandleString(tc::Handle(kMajor, want->parent)) + " (" +
                 want->class_label + ") is missing");
      }
      if (uint64_t rate = ClassRate(d, want->parent); parent->rate != rate / 8) {
        mismatch(dir + ": class " + tc::HandleString(parent->handle) + " (" + want->class_label +
                 ") guarantees " + qos::FormatRate(parent->rate * 8) + ", expected " +
                 qos::FormatRate(rate));
      }
      bool have_queue = false;
      for (const auto& q : tc::Qdiscs(sk_, ifb->ifindex)) {
        if (q.parent == handle && q.kind == "bfifo" && q.limit == want->queue) have_queue = true;
      }
      if (!have_queue) {
        mismatch(dir + ": leaf " + tc::HandleString(handle) + " lacks its bfifo queue of " +
                 std::to_string(want->queue) + " bytes");
      }
    }
  }

  static bool Near(uint64_t got, uint64_t want) {
    // Bursts travel as time at the rate (64 ns ticks) and come back rounded.
    uint64_t diff = got > want ? got - want : want - got;
    return diff <= std::max<uint64_t>(want / 100, 64);
  }

  // Runs fn, recording a failure instead of throwing.
  // Runs fn; a failure is kept under `key` (and reported by Status) until
  // the same key succeeds or the pod goes.
  template <class Fn>
  void Note(const std::string& key, Fn&& fn) {
    try {
      fn();
      failures_.erase(key);
    } catch (const std::exception& e) {
      failures_[key] = e.what();
    }
  }
  static std::string PodKey(const PodRef& r) {
    return "pod " + r.container_id + " (" + r.ifname + ")";
  }
  static std::string TreeKey(Direction d) { return std::string(qos::DirectionName(d)) + " tree"; }

  void PublishClassRates(const qos::Config* prev = nullptr) {
    if (prev != nullptr) {
      for (const auto& [name, pc] : prev->classes) {
        for (Direction d : kDirections) {
          if (cfg_.FindClass(name) == nullptr || !cfg_.FindClass(name)->rate[d]) {
            host_.ForgetMetric(m_class_rate_, {name, qos::DirectionName(d)});
          }
        }
      }
    }
    for (Direction d : kDirections) {
      for (const auto& [name, pc] : cfg_.classes) {
        if (pc.rate[d])
          host_.SetMetric(m_class_rate_, {name, qos::DirectionName(d)}, double(*pc.rate[d]));
      }
      if (auto r = cfg_.DefaultClassRate(d)) {
        host_.SetMetric(m_class_rate_, {"default", qos::DirectionName(d)}, double(*r));
      } else {
        host_.ForgetMetric(m_class_rate_, {"default", qos::DirectionName(d)});
      }
    }
  }

  // ---------------------------------------------------------------- stats --

  void StatsLoop() {
    std::unique_lock lock(stats_mu_);
    while (!stop_) {
      auto interval = std::chrono::microseconds(interval_us_.load());
      stats_cv_.wait_for(lock, interval, [&] { return stop_; });
      if (stop_) break;
      lock.unlock();
      try {
        CollectStats();
      } catch (const std::exception& e) {
        host_.Debug(std::string("collecting tc stats: ") + e.what());
      }
      lock.lock();
    }
  }

  // Reads the drop counters of every leaf and adds what is new to the
  // counters. Dumps run on the stats socket without holding the main lock.
  void CollectStats() {
    std::array<int, 2> ifb;
    {
      std::lock_guard lock(mu_);
      ifb = ifb_;
    }
    std::array<std::map<uint32_t, uint64_t>, 2> drops;
    for (Direction d : kDirections) {
      if (ifb[d] == 0) continue;
      for (const auto& c : tc::HtbClasses(stats_sk_, ifb[d])) {
        if (TC_H_MAJ(c.handle) == tc::Handle(kMajor, 0)) drops[d][TC_H_MIN(c.handle)] = c.drops;
      }
    }
    std::lock_guard lock(mu_);
    for (auto& [ref, rec] : records_) {
      for (Direction d : kDirections) {
        if (rec.parent[d] == 0) continue;
        auto it = drops[d].find(rec.minor);
        if (it == drops[d].end()) continue;
        uint64_t now = it->second;
        if (!rec.last_drops[d]) {
          rec.last_drops[d] = now;  // first sight after a restart: the baseline
          continue;
        }
        uint64_t delta = now >= *rec.last_drops[d] ? now - *rec.last_drops[d] : now;
        rec.last_drops[d] = now;
        if (delta == 0) continue;
        host_.AddMetric(m_pod_drops_, rec.MetricLabels(d), double(delta));
        host_.AddMetric(
            m_class_drops_,
            {rec.class_label[d].empty() ? "default" : rec.class_label[d], qos::DirectionName(d)},
            double(delta));
      }
    }
  }

 private:
  trellis::sdk::Host host_;
  std::mutex mu_;  // everything below, and every kernel change
  qos::Config cfg_;
  tc::Socket sk_;
  tc::Socket stats_sk_;
  std::map<PodRef, Record> records_;
  std::set<uint32_t> used_;
  std::array<int, 2> ifb_{};
  std::array<bool, 2> tree_ok_{};
  std::map<std::string, std::string> failures_;  // what is out of date -> why
  uint32_t m_pod_rate_ = 0, m_pod_drops_ = 0, m_class_rate_ = 0, m_class_drops_ = 0;

  std::mutex stats_mu_;
  std::condition_variable stats_cv_;
  bool stop_ = false;
  std::atomic<uint64_t> interval_us_{10'000'000};
  std::thread stats_;
};

}  // namespace

TRELLIS_PLUGIN(Qos);
