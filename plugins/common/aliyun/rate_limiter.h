// Client-side limits on cloud calls: a token bucket per API action (ECS
// throttles per action and per account, so one noisy action must not starve
// the others) and a bound on calls in flight (TERWAY_ENI_MAX_CONCURRENT).
#ifndef TRELLIS_PLUGINS_COMMON_ALIYUN_RATE_LIMITER_H_
#define TRELLIS_PLUGINS_COMMON_ALIYUN_RATE_LIMITER_H_

#include <condition_variable>
#include <map>
#include <mutex>
#include <string>

#include "aliyun/clock.h"

namespace trellis::aliyun {

struct RateLimit {
  double qps = 0;  // tokens per second; <= 0: unlimited
  int burst = 1;   // bucket size
  bool operator==(const RateLimit&) const = default;
};

// THREADING: all methods may be called concurrently.
class RateLimiter {
 public:
  RateLimiter(Clock* clock, RateLimit default_limit, std::map<std::string, RateLimit> per_action);
  // Takes a token for `action`, waiting for one when the bucket is empty.
  // Returns false without taking one when the wait would end after
  // `deadline`, or when the clock is cancelled.
  bool Acquire(const std::string& action, SteadyTime deadline);
  // New limits; buckets keep their current fill, clipped to the new burst.
  void Update(RateLimit default_limit, std::map<std::string, RateLimit> per_action);
  RateLimit LimitOf(const std::string& action);

 private:
  struct Bucket {
    RateLimit limit;
    double tokens = 0;
    SteadyTime last{};
  };
  Bucket& BucketFor(const std::string& action);

  Clock* clock_;
  std::mutex mu_;
  RateLimit default_;
  std::map<std::string, RateLimit> per_action_;
  std::map<std::string, Bucket> buckets_;
};

// A counting semaphore whose waits end at a deadline or on cancellation.
class CallGate {
 public:
  CallGate(Clock* clock, int limit);
  bool Enter(SteadyTime deadline);  // false: deadline passed or cancelled
  void Leave();
  void SetLimit(int limit);
  int in_flight();

 private:
  Clock* clock_;
  std::mutex mu_;
  std::condition_variable cv_;
  int limit_;
  int in_flight_ = 0;
};

}  // namespace trellis::aliyun

#endif  // TRELLIS_PLUGINS_COMMON_ALIYUN_RATE_LIMITER_H_
