#include "aliyun/rate_limiter.h"

#include <algorithm>

namespace trellis::aliyun {

RateLimiter::RateLimiter(Clock* clock, RateLimit default_limit,
                         std::map<std::string, RateLimit> per_action)
    : clock_(clock), default_(default_limit), per_action_(std::move(per_action)) {}

RateLimit RateLimiter::LimitOf(const std::string& action) {
  std::lock_guard lock(mu_);
  auto it = per_action_.find(action);
  return it != per_action_.end() ? it->second : default_;
}

RateLimiter::Bucket& RateLimiter::BucketFor(const std::string& action) {
  auto it = buckets_.find(action);
  if (it != buckets_.end()) return it->second;
  Bucket b;
  auto l = per_action_.find(action);
  b.limit = l != per_action_.end() ? l->second : default_;
  b.tokens = std::max(1, b.limit.burst);
  b.last = clock_->Now();
  return buckets_.emplace(action, b).first->second;
}

bool RateLimiter::Acquire(const std::string& action, SteadyTime deadline) {
  Duration wait{};
  {
    std::lock_guard lock(mu_);
    Bucket& b = BucketFor(action);
    if (b.limit.qps <= 0) return !clock_->Cancelled();
    SteadyTime now = clock_->Now();
    double burst = std::max(1, b.limit.burst);
    double elapsed = std::chrono::duration<double>(now - b.last).count();
    b.tokens = std::min(burst, b.tokens + elapsed * b.limit.qps);
    b.last = now;
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return !clock_->Cancelled();
    }
    // Reserve the next token: the bucket goes negative, so concurrent callers
    // queue behind each other instead of all waking for the same token.
    wait = std::chrono::duration_cast<Duration>(
        std::chrono::duration<double>((1 - b.tokens) / b.limit.qps));
    if (now + wait > deadline) return false;
    b.tokens -= 1;
  }
  return clock_->SleepFor(wait);
}

void RateLimiter::Update(RateLimit default_limit, std::map<std::string, RateLimit> per_action) {
  std::lock_guard lock(mu_);
  default_ = default_limit;
  per_action_ = std::move(per_action);
  for (auto& [action, b] : buckets_) {
    auto l = per_action_.find(action);
    b.limit = l != per_action_.end() ? l->second : default_;
    b.tokens = std::min<double>(b.tokens, std::max(1, b.limit.burst));
  }
}

CallGate::CallGate(Clock* clock, int limit) : clock_(clock), limit_(std::max(1, limit)) {}

bool CallGate::Enter(SteadyTime deadline) {
  std::unique_lock lock(mu_);
  while (in_flight_ >= limit_) {
    if (clock_->Cancelled() || clock_->Now() >= deadline) return false;
    // Short waits: the deadline is on the (possibly fake) clock, and
    // cancellation does not signal this condition variable.
    cv_.wait_for(lock, std::chrono::milliseconds(50));
  }
  if (clock_->Cancelled()) return false;
  in_flight_++;
  return true;
}

void CallGate::Leave() {
  {
    std::lock_guard lock(mu_);
    in_flight_--;
  }
  cv_.notify_one();
}

void CallGate::SetLimit(int limit) {
  {
    std::lock_guard lock(mu_);
    limit_ = std::max(1, limit);
  }
  cv_.notify_all();
}

int CallGate::in_flight() {
  std::lock_guard lock(mu_);
  return in_flight_;
}

}  // namespace trellis::aliyun
