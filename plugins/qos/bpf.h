// The per-pod classifier: a four-instruction eBPF program (no maps, no
// helpers) that stamps skb->priority with the pod's HTB leaf class and
// matches every packet. It runs as a cls_bpf filter in classic mode on the
// clsact hooks of the pod's host veth, followed by a mirred redirect to the
// node's IFB; the HTB qdisc there picks the leaf straight from skb->priority
// without a filter of its own, so classification is O(1) in the number of
// pods and independent of addresses.
//
// Why not skbedit/matchall: the kernels we target (e.g. this CI's) do not
// always build them, cls_bpf and mirred are everywhere BPF is. Why not match
// the pod's source address on the IFB: a pod could then escape its limit by
// spoofing an address nobody shapes. Here the hook is the pod's own veth.
#ifndef TRELLIS_PLUGINS_QOS_BPF_H_
#define TRELLIS_PLUGINS_QOS_BPF_H_

#include <cstdint>
#include <string>

namespace trellis::qos {

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd();
  int get() const { return fd_; }
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }

 private:
  int fd_ = -1;
};

// Loads the classifier for `priority` (a tc handle, major:minor). Throws
// sdk::Error naming the verifier's complaint when the kernel refuses it.
Fd LoadClassifier(uint32_t priority);

}  // namespace trellis::qos

#endif  // TRELLIS_PLUGINS_QOS_BPF_H_
