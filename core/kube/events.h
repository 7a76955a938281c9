// Kubernetes Events (core/v1) about pods, as `kubectl describe pod` shows
// them: posted from a queue by a worker thread, so that the caller (the CNI
// ADD path) never waits for the API server. Identical events for the same pod
// within `dedupe_window` are posted once (the RBAC grants create, not patch,
// so a count cannot be bumped). A full queue drops the oldest event.
// THREADING: Post() may be called from any thread.
#ifndef TRELLIS_CORE_KUBE_EVENTS_H_
#define TRELLIS_CORE_KUBE_EVENTS_H_

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "core/kube/client.h"

namespace trellis::kube {

struct PodRef {
  std::string ns, name, uid;
};

struct EventRecord {
  PodRef pod;
  std::string type;  // Normal | Warning
  std::string reason;
  std::string message;
};

class EventRecorder {
 public:
  EventRecorder(Client* client, std::string component, std::string host,
                std::chrono::seconds dedupe_window = std::chrono::minutes(5),
                size_t max_queue = 256);
  ~EventRecorder();  // Stop()

  void Start();
  // Posts what is queued (bounded by the client's timeouts), then joins.
  void Stop();
  void Post(EventRecord e);

  uint64_t posted() const { return posted_; }
  uint64_t dropped() const { return dropped_; }
  uint64_t failed() const { return failed_; }

  // The Event object Post() would create (exposed for tests).
  Json Build(const EventRecord& e) const;

 private:
  void Loop();

  Client* client_;
  const std::string component_, host_;
  const std::chrono::seconds window_;
  const size_t max_queue_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<EventRecord> queue_;
  std::map<std::string, std::chrono::steady_clock::time_point> recent_;
  bool stop_ = false;
  std::atomic<uint64_t> posted_{0}, dropped_{0}, failed_{0};
  std::thread thread_;
};

}  // namespace trellis::kube

#endif  // TRELLIS_CORE_KUBE_EVENTS_H_
