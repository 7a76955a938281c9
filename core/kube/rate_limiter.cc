#include "core/kube/rate_limiter.h"

#include <algorithm>
#include <thread>

namespace trellis::kube {

TokenBucket::TokenBucket(double qps, double burst, std::function<Clock::time_point()> now)
    : qps_(qps), burst_(std::max(1.0, burst)), now_(std::move(now)), tokens_(burst_),
      last_(now_()) {}

void TokenBucket::RefillLocked(Clock::time_point now) const {
  if (now <= last_) return;
  double secs = std::chrono::duration<double>(now - last_).count();
  tokens_ = std::min(burst_, tokens_ + secs * qps_);
  last_ = now;
}

bool TokenBucket::TryAcquire() {
  std::lock_guard lock(mu_);
  RefillLocked(now_());
  if (tokens_ < 1) return false;
  tokens_ -= 1;
  return true;
}

TokenBucket::Clock::duration TokenBucket::Wait() const {
  std::lock_guard lock(mu_);
  RefillLocked(now_());
  if (tokens_ >= 1) return Clock::duration::zero();
  return std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>((1 - tokens_) / qps_));
}

bool TokenBucket::Acquire(Clock::time_point deadline) {
  Clock::time_point ready;
  {
    std::lock_guard lock(mu_);
    Clock::time_point now = now_();
    RefillLocked(now);
    if (tokens_ >= 1) {
      tokens_ -= 1;
      return true;
    }
    // The token this caller will get is the one that refills after every
    // earlier reservation: reserve it now, sleep until it exists.
    ready = now + std::chrono::duration_cast<Clock::duration>(
                      std::chrono::duration<double>((1 - tokens_) / qps_));
    if (ready > deadline) return false;
    tokens_ -= 1;
  }
  std::this_thread::sleep_until(ready);
  return true;
}

}  // namespace trellis::kube
