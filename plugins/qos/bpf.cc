#include "bpf.h"

#include <linux/bpf.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <trellis/types.hpp>

namespace trellis::qos {

Fd& Fd::operator=(Fd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) close(fd_);
    fd_ = o.release();
  }
  return *this;
}

Fd::~Fd() {
  if (fd_ >= 0) close(fd_);
}

namespace {

bpf_insn Insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
  bpf_insn i{};
  i.code = code;
  i.dst_reg = dst & 0xf;
  i.src_reg = src & 0xf;
  i.off = off;
  i.imm = imm;
  return i;
}

}  // namespace

Fd LoadClassifier(uint32_t priority) {
  // r2 = priority; skb->priority = r2; return -1.
  // The store goes through a register: the verifier refuses immediate
  // stores (BPF_ST) into the context. In classic (not direct-action) mode a
  // return of -1 is "match, use the filter's own result": the actions run.
  const bpf_insn prog[] = {
      Insn(BPF_ALU | BPF_MOV | BPF_K, BPF_REG_2, 0, 0, static_cast<int32_t>(priority)),
      Insn(BPF_STX | BPF_MEM | BPF_W, BPF_REG_1, BPF_REG_2,
           static_cast<int16_t>(offsetof(__sk_buff, priority)), 0),
      Insn(BPF_ALU | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, -1),
      Insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
  };
  static const char kLicense[] = "Dual BSD/GPL";  // no GPL-only helper is used
  char log[1024] = {};
  bpf_attr attr;
  std::memset(&attr, 0, sizeof attr);
  attr.prog_type = BPF_PROG_TYPE_SCHED_CLS;
  attr.insn_cnt = sizeof prog / sizeof prog[0];
  attr.insns = reinterpret_cast<uint64_t>(prog);
  attr.license = reinterpret_cast<uint64_t>(kLicense);
  std::strncpy(attr.prog_name, "trellis_qos", sizeof attr.prog_name - 1);
  int fd = static_cast<int>(syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof attr));
  if (fd < 0) {
    // Load again with the verifier log only to explain the refusal.
    int first = errno;
    attr.log_level = 1;
    attr.log_buf = reinterpret_cast<uint64_t>(log);
    attr.log_size = sizeof log;
    int again = static_cast<int>(syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof attr));
    if (again >= 0) return Fd(again);
    std::string msg = std::string("loading the qos classifier (BPF_PROG_TYPE_SCHED_CLS): ") +
                      std::strerror(first);
    if (log[0] != '\0') msg += "; verifier: " + std::string(log);
    throw sdk::Error(first == EPERM ? TRELLIS_E_PRECONDITION : TRELLIS_E_INTERNAL, msg);
  }
  return Fd(fd);
}

}  // namespace trellis::qos
