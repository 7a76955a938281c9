// A small Kubernetes API client: JSON over HTTPS (cpp-httplib + OpenSSL),
// bearer-token or client-certificate auth, list/get/create/update and
// streaming watches, a client-side QPS/burst limit and hard deadlines.
//
// Errors are absl::Status with codes a caller can act on:
//   NotFound (404), AlreadyExists (409 AlreadyExists), Aborted (409 Conflict:
//   the object changed, re-read and retry), OutOfRange (410 Gone: the
//   resourceVersion is too old, relist), Unauthenticated (401),
//   PermissionDenied (403), InvalidArgument (400/422), Unavailable (network,
//   429, 5xx), DeadlineExceeded (the deadline passed, or the rate limit would
//   make it pass), Cancelled (Cancel()).
// Messages name the verb and the path and carry the server's Status message;
// the bearer token never appears in them.
//
// THREADING: every method may be called from any thread, concurrently. Each
// request uses its own connection.
#ifndef TRELLIS_CORE_KUBE_CLIENT_H_
#define TRELLIS_CORE_KUBE_CLIENT_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "core/kube/connection.h"
#include "core/kube/rate_limiter.h"
#include "core/status.h"

namespace httplib {
class ClientImpl;
}

namespace trellis::kube {

using Json = nlohmann::json;
using Millis = std::chrono::milliseconds;

struct ClientOptions {
  Connection connection;
  double qps = 20;
  uint32_t burst = 30;
  Millis request_timeout{10000};
  std::string user_agent = "trellisd";
  // Called after every request: verb (GET, LIST, WATCH, POST, PUT), the HTTP
  // status (0: no response) and the duration. Must not block.
  std::function<void(const std::string& verb, int code, double seconds)> on_request;
};

// Interrupts one request (typically a watch) from another thread.
class Cancellation {
 public:
  void Cancel();
  bool cancelled() const { return cancelled_.load(); }
  // Makes the object usable again for the next request.
  void Reset() { cancelled_ = false; }

 private:
  friend class Client;
  std::mutex mu_;
  std::atomic<bool> cancelled_{false};
  httplib::ClientImpl* active_ = nullptr;
};

struct WatchEvent {
  std::string type;  // ADDED, MODIFIED, DELETED, BOOKMARK, ERROR
  Json object;
};

class Client {
 public:
  static StatusOr<std::unique_ptr<Client>> Create(ClientOptions options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // `path` is an API path with its query, e.g. "/api/v1/pods?limit=500".
  // `timeout` zero: the client's request_timeout.
  StatusOr<Json> Get(const std::string& path, Millis timeout = Millis(0));
  // A GET of a collection (counted as LIST in the metrics).
  StatusOr<Json> List(const std::string& path);
  StatusOr<Json> Create(const std::string& path, const Json& body);
  StatusOr<Json> Update(const std::string& path, const Json& body);

  // Opens a watch (the caller adds watch=1 and the resourceVersion) and calls
  // `on_event` for each event, in order, until the server ends the stream
  // (OK), the stream breaks (Unavailable), `on_event` returns false or
  // `cancel` is cancelled (Cancelled). `idle_timeout` bounds the wait for the
  // next byte: a silent peer counts as a broken stream.
  Status Watch(const std::string& path, const std::function<bool(WatchEvent)>& on_event,
               Cancellation* cancel, Millis idle_timeout);

  // Cancels every request in flight and refuses new ones (shutdown).
  void Shutdown();

  const Connection& connection() const { return opts_.connection; }
  const ClientOptions& options() const { return opts_; }

 private:
  struct Tls;
  struct Deadline;
  explicit Client(ClientOptions options);

  StatusOr<Json> Do(const std::string& method, const std::string& verb, const std::string& path,
                    const Json* body, Millis timeout);
  std::unique_ptr<httplib::ClientImpl> NewHttp(Millis connect, Millis read) const;
  // The bearer token now: the token file is re-read when it changed (bound
  // service-account tokens are rotated by the kubelet) or when `force`.
  std::string Token(bool force);
  bool Admit(std::chrono::steady_clock::time_point deadline);
  void WatchdogLoop();
  void Arm(Deadline* d);
  void Disarm(Deadline* d);

  ClientOptions opts_;
  std::unique_ptr<Tls> tls_;
  TokenBucket limiter_;
  std::atomic<bool> shutdown_{false};

  std::mutex token_mu_;
  std::string token_;
  std::chrono::steady_clock::time_point token_read_{};
  int64_t token_mtime_ns_ = -1;
  int64_t token_size_ = -1;

  // Deadlines of requests in flight; the watchdog cancels expired ones, and
  // Shutdown() cancels them all.
  std::mutex wd_mu_;
  std::condition_variable wd_cv_;
  std::multimap<std::chrono::steady_clock::time_point, Deadline*> deadlines_;
  std::vector<Cancellation*> watches_;
  bool wd_stop_ = false;
  std::thread watchdog_;
};

// Percent-encodes a query value.
std::string UrlEncode(const std::string& s);
// "path?k=v&k=v" with the values encoded; empty values are skipped.
std::string WithQuery(const std::string& path,
                      const std::vector<std::pair<std::string, std::string>>& query);
// True when `s` is the 410 Gone of a too-old resourceVersion.
inline bool IsGone(const Status& s) { return s.code() == absl::StatusCode::kOutOfRange; }
// Maps an HTTP status and a Kubernetes Status body onto an absl::Status.
Status HttpStatus(int code, const std::string& what, const std::string& body);
// "2024-01-02T03:04:05.123456Z" (metav1.MicroTime) and "...:05Z" (metav1.Time).
std::string MicroTimeNow();
std::string TimeNow();

}  // namespace trellis::kube

#endif  // TRELLIS_CORE_KUBE_CLIENT_H_
