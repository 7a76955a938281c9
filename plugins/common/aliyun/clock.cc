#include "aliyun/clock.h"

#include <cstdio>
#include <ctime>
#include <string>

namespace trellis::aliyun {

bool RealClock::SleepFor(Duration d) {
  std::unique_lock lock(mu_);
  return !cv_.wait_for(lock, d, [&] { return cancelled_; });
}

void RealClock::Cancel() {
  {
    std::lock_guard lock(mu_);
    cancelled_ = true;
  }
  cv_.notify_all();
}

bool RealClock::Cancelled() {
  std::lock_guard lock(mu_);
  return cancelled_;
}

void RealClock::Reset() {
  std::lock_guard lock(mu_);
  cancelled_ = false;
}

std::string FormatIso8601(WallTime t) {
  std::time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

bool ParseIso8601(const std::string& text, WallTime* out) {
  int y, mo, d, h, mi;
  double s;
  char z = 0;
  // Accepts "...:05Z" and "...:05.123Z".
  if (std::sscanf(text.c_str(), "%d-%d-%dT%d:%d:%lf%c", &y, &mo, &d, &h, &mi, &s, &z) != 7 ||
      z != 'Z' || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s < 0 || s >= 61) {
    return false;
  }
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = static_cast<int>(s);
  std::time_t secs = timegm(&tm);
  if (secs == static_cast<std::time_t>(-1)) return false;
  *out = std::chrono::system_clock::from_time_t(secs);
  return true;
}

}  // namespace trellis::aliyun
