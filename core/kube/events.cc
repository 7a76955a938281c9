#include "core/kube/events.h"

#include <spdlog/spdlog.h>

#include <random>

namespace trellis::kube {

EventRecorder::EventRecorder(Client* client, std::string component, std::string host,
                             std::chrono::seconds dedupe_window, size_t max_queue)
    : client_(client),
      component_(std::move(component)),
      host_(std::move(host)),
      window_(dedupe_window),
      max_queue_(max_queue) {}

EventRecorder::~EventRecorder() { Stop(); }

void EventRecorder::Start() {
  std::lock_guard lock(mu_);
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread([this] { Loop(); });
}

void EventRecorder::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void EventRecorder::Post(EventRecord e) {
  if (e.pod.ns.empty() || e.pod.name.empty()) return;
  const std::string key = e.pod.ns + "/" + e.pod.name + "/" + e.pod.uid + "\n" + e.reason + "\n" +
                          e.message;
  auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(mu_);
  for (auto it = recent_.begin(); it != recent_.end();) {
    it = now - it->second > window_ ? recent_.erase(it) : std::next(it);
  }
  if (recent_.contains(key)) return;  // kubelet retries a failed ADD every few seconds
  recent_[key] = now;
  if (queue_.size() >= max_queue_) {
    queue_.pop_front();
    dropped_++;
  }
  queue_.push_back(std::move(e));
  cv_.notify_all();
}

Json EventRecorder::Build(const EventRecord& e) const {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  char suffix[17];
  std::snprintf(suffix, sizeof suffix, "%016llx", static_cast<unsigned long long>(rng()));
  const std::string now = TimeNow();
  std::string message = e.message.size() > 1024 ? e.message.substr(0, 1021) + "..." : e.message;
  Json involved = {{"apiVersion", "v1"},
                   {"kind", "Pod"},
                   {"namespace", e.pod.ns},
                   {"name", e.pod.name}};
  if (!e.pod.uid.empty()) involved["uid"] = e.pod.uid;
  return {{"apiVersion", "v1"},
          {"kind", "Event"},
          {"metadata", {{"name", e.pod.name + "." + suffix}, {"namespace", e.pod.ns}}},
          {"involvedObject", involved},
          {"reason", e.reason},
          {"message", message},
          {"type", e.type.empty() ? "Warning" : e.type},
          {"source", {{"component", component_}, {"host", host_}}},
          {"reportingComponent", component_},
          {"reportingInstance", host_},
          {"firstTimestamp", now},
          {"lastTimestamp", now},
          {"count", 1}};
}

void EventRecorder::Loop() {
  while (true) {
    EventRecord e;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, nothing left
      e = std::move(queue_.front());
      queue_.pop_front();
    }
    auto r = client_->Create("/api/v1/namespaces/" + e.pod.ns + "/events", Build(e));
    if (r.ok()) {
      posted_++;
    } else {
      failed_++;
      spdlog::warn("event {} for pod {}/{} not posted: {}", e.reason, e.pod.ns, e.pod.name,
                   r.status().message());
    }
  }
}

}  // namespace trellis::kube
