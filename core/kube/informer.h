// An informer: a local cache of one kind of object kept in step with the API
// server by list + watch, calling handlers on every change.
//
// The protocol (as client-go's reflector):
//   - list (paginated, limit/continue) -> replace the cache, dispatch the
//     difference (adds, updates, deletes of what vanished while not watching);
//   - watch from the list's resourceVersion with allowWatchBookmarks; every
//     event and bookmark advances the resourceVersion;
//   - the server ending the stream (timeoutSeconds) -> watch again at once;
//   - 410 Gone (HTTP status or an ERROR event) -> relist;
//   - a broken stream or an error -> exponential back-off with jitter, then
//     watch again from the last resourceVersion;
//   - Resync() re-dispatches every cached object as an update of itself, so
//     consumers that drifted converge (the host calls it periodically).
//
// THREADING: handlers run on the informer's thread, one at a time, never with
// an informer lock held, so they may call Get()/List() and block on other
// locks. Resync() runs the handlers on the caller's thread, serialised with
// the watch. Every other method may be called from any thread.
#ifndef TRELLIS_CORE_KUBE_INFORMER_H_
#define TRELLIS_CORE_KUBE_INFORMER_H_

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/kube/client.h"

namespace trellis::kube {

struct InformerOptions {
  std::string name;            // for logs and metrics, e.g. "pods"
  std::string path;            // the collection, e.g. "/api/v1/pods"
  std::string field_selector;  // e.g. "spec.nodeName=node-1"
  Millis watch_timeout{300000};  // timeoutSeconds asked for: this, times 1 to 2
  Millis backoff_initial{250};
  Millis backoff_max{30000};
  int page_size = 500;
};

struct InformerHandlers {
  std::function<void(const Json& obj)> on_add = nullptr;
  std::function<void(const Json& old_obj, const Json& obj)> on_update = nullptr;
  std::function<void(const Json& obj)> on_delete = nullptr;
  // After each complete list has been dispatched (the first one: synced).
  std::function<void()> on_list = nullptr;
  // A list or watch failed (after which the informer backs off), or 410.
  std::function<void(const std::string& what, const Status& s)> on_error = nullptr;
};

class Informer {
 public:
  Informer(Client* client, InformerOptions options, InformerHandlers handlers);
  ~Informer();  // Stop()
  Informer(const Informer&) = delete;
  Informer& operator=(const Informer&) = delete;

  void Start();
  // Ends the watch and joins the thread. No handler runs after it returns.
  void Stop();

  bool synced() const { return synced_.load(); }
  // Waits until the first list has been dispatched; false at the deadline.
  bool WaitForSync(std::chrono::steady_clock::time_point deadline) const;

  std::optional<Json> Get(const std::string& key) const;
  std::vector<Json> List() const;
  void Resync();

  struct Stats {
    uint64_t lists = 0;      // complete lists (the first and every relist)
    uint64_t gone = 0;       // 410 Gone seen (each followed by a relist)
    uint64_t watches = 0;    // watch requests made
    uint64_t failures = 0;   // lists/watches that failed (then backed off)
    uint64_t events = 0;     // ADDED/MODIFIED/DELETED received
    uint64_t bookmarks = 0;  // BOOKMARK received
    std::string resource_version;
    std::string last_error;
    size_t objects = 0;
    bool synced = false;
  };
  Stats stats() const;
  const InformerOptions& options() const { return opts_; }

  // "namespace/name", or "name" for cluster-scoped objects.
  static std::string Key(const Json& obj);
  // The object as cached: metadata.managedFields dropped.
  static Json Trim(Json obj);

 private:
  void Loop();
  Status ListAll();
  Status WatchOnce(bool* gone);
  void Apply(const std::string& type, Json obj);
  void Fail(const std::string& what, const Status& s);
  // Sleeps for the current back-off (interrupted by Stop) and doubles it.
  void BackOff();

  Client* client_;
  const InformerOptions opts_;
  const InformerHandlers handlers_;

  mutable std::mutex mu_;  // cache_, stats_, rv_
  mutable std::condition_variable cv_;
  std::map<std::string, Json> cache_;
  std::string rv_;
  Stats stats_;
  std::atomic<bool> synced_{false};

  std::mutex dispatch_mu_;  // one handler at a time
  std::atomic<bool> stop_{false};
  Cancellation cancel_;
  Millis backoff_;
  std::thread thread_;
};

}  // namespace trellis::kube

#endif  // TRELLIS_CORE_KUBE_INFORMER_H_
