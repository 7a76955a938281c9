// The metrics and health HTTP endpoint (--metrics-addr).
//   /metrics       Prometheus text format 0.0.4
//   /healthz       200 when the process serves and the state store takes writes
//   /readyz        200 once startup reconcile is done and required modules are healthy
//   /debug/state   JSON dump of modules, pods and pool (secrets redacted);
//                  /debug/* answers loopback peers only (403 otherwise)
#ifndef TRELLIS_CORE_HTTP_SERVER_H_
#define TRELLIS_CORE_HTTP_SERVER_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "core/status.h"

namespace httplib {
class Server;
}

namespace trellis {

struct HttpHandlers {
  std::function<std::string()> metrics;
  std::function<Status()> healthz;
  std::function<Status()> readyz;
  std::function<std::string()> debug_state;
};

class HttpServer {
 public:
  explicit HttpServer(HttpHandlers handlers);
  ~HttpServer();
  // `addr` is "host:port", ":port" (all addresses) or "port".
  Status Start(const std::string& addr);
  void Stop();
  int port() const { return port_; }

 private:
  HttpHandlers handlers_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace trellis

#endif  // TRELLIS_CORE_HTTP_SERVER_H_
