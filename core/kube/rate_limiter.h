// Client-side request rate limit: a token bucket of `burst` tokens refilled at
// `qps` per second (client-go's flowcontrol, Terway's kube_client_qps /
// kube_client_burst). THREADING: every method may be called from any thread.
#ifndef TRELLIS_CORE_KUBE_RATE_LIMITER_H_
#define TRELLIS_CORE_KUBE_RATE_LIMITER_H_

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>

namespace trellis::kube {

class TokenBucket {
 public:
  using Clock = std::chrono::steady_clock;
  // `now` is injectable for tests; it must be monotonic.
  TokenBucket(double qps, double burst, std::function<Clock::time_point()> now = Clock::now);

  // Takes a token now if one is there.
  bool TryAcquire();
  // How long a caller would wait for a token now (zero when one is there).
  Clock::duration Wait() const;
  // Takes a token, waiting until `deadline` at most; false when the deadline
  // would pass first (nothing is taken then). A waiter reserves its token, so
  // waiters are served in the order they asked.
  bool Acquire(Clock::time_point deadline);

 private:
  void RefillLocked(Clock::time_point now) const;

  const double qps_, burst_;
  std::function<Clock::time_point()> now_;
  mutable std::mutex mu_;
  mutable double tokens_;  // may go negative: reserved by waiters
  mutable Clock::time_point last_;
};

}  // namespace trellis::kube

#endif  // TRELLIS_CORE_KUBE_RATE_LIMITER_H_
