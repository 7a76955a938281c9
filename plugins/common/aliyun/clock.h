// Time for the cloud clients: a monotonic clock, the wall clock (signatures,
// credential expiry) and cancellable sleeps. Tests substitute a fake clock so
// back-off, rate limits and expiry run without real waiting.
#ifndef TRELLIS_PLUGINS_COMMON_ALIYUN_CLOCK_H_
#define TRELLIS_PLUGINS_COMMON_ALIYUN_CLOCK_H_

#include <chrono>
#include <condition_variable>
#include <mutex>

namespace trellis::aliyun {

using SteadyTime = std::chrono::steady_clock::time_point;
using WallTime = std::chrono::system_clock::time_point;
using Duration = std::chrono::steady_clock::duration;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual SteadyTime Now() = 0;
  virtual WallTime WallNow() = 0;
  // Waits for `d`. Returns false at once, or as soon as Cancel() is called,
  // when the clock is cancelled: every retry loop then gives up.
  virtual bool SleepFor(Duration d) = 0;
  // Wakes every sleeper; later sleeps return false at once. Used on shutdown
  // so that destroy() never waits out a back-off.
  virtual void Cancel() = 0;
  virtual bool Cancelled() = 0;
  // Undoes Cancel(): sleeps wait again.
  virtual void Reset() = 0;
};

// The real clocks. One instance per owner, so cancelling one plugin instance
// does not cancel another.
class RealClock : public Clock {
 public:
  SteadyTime Now() override { return std::chrono::steady_clock::now(); }
  WallTime WallNow() override { return std::chrono::system_clock::now(); }
  bool SleepFor(Duration d) override;
  void Cancel() override;
  bool Cancelled() override;
  void Reset() override;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool cancelled_ = false;
};

// "2024-01-02T03:04:05Z" (ISO 8601, UTC, seconds), as ECS wants Timestamp.
std::string FormatIso8601(WallTime t);
// Parses "2024-01-02T03:04:05Z" (also with fractional seconds); false when
// the text is not such a time.
bool ParseIso8601(const std::string& text, WallTime* out);

}  // namespace trellis::aliyun

#endif  // TRELLIS_PLUGINS_COMMON_ALIYUN_CLOCK_H_
