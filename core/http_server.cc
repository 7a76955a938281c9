#include "core/http_server.h"

#include <httplib.h>

namespace trellis {
namespace {
bool IsLoopback(const std::string& addr) {
  return addr.rfind("127.", 0) == 0 || addr == "::1" || addr.rfind("::ffff:127.", 0) == 0;
}
}  // namespace

HttpServer::HttpServer(HttpHandlers handlers) : handlers_(std::move(handlers)) {}

HttpServer::~HttpServer() { Stop(); }

Status HttpServer::Start(const std::string& addr) {
  std::string host = "0.0.0.0";
  std::string port_text = addr;
  if (auto colon = addr.rfind(':'); colon != std::string::npos) {
    host = addr.substr(0, colon);
    port_text = addr.substr(colon + 1);
    if (host.empty()) host = "0.0.0.0";
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  }
  int port = 0;
  try {
    port = std::stoi(port_text);
  } catch (const std::exception&) {
    return absl::InvalidArgumentError("--metrics-addr " + addr + ": expected host:port");
  }
  if (port < 0 || port > 65535) return absl::InvalidArgumentError("--metrics-addr " + addr + ": bad port");
  server_ = std::make_unique<httplib::Server>();
  server_->new_task_queue = [] { return new httplib::ThreadPool(2); };
  auto status_reply = [](const Status& s, httplib::Response& res) {
    res.status = s.ok() ? 200 : 503;
    res.set_content(s.ok() ? "ok\n" : std::string(s.message()) + "\n", "text/plain");
  };
  server_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(handlers_.metrics(), "text/plain; version=0.0.4; charset=utf-8");
  });
  server_->Get("/healthz", [this, status_reply](const httplib::Request&, httplib::Response& res) {
    status_reply(handlers_.healthz(), res);
  });
  server_->Get("/readyz", [this, status_reply](const httplib::Request&, httplib::Response& res) {
    status_reply(handlers_.readyz(), res);
  });
  // /debug/* lays out pods, addresses and module internals: it answers only
  // on loopback (`kubectl exec ... curl localhost:9190/debug/state`), while
  // /metrics and the probes answer on every address the endpoint binds.
  server_->Get(R"(/debug/.*)", [this](const httplib::Request& req, httplib::Response& res) {
    if (!IsLoopback(req.remote_addr)) {
      res.status = 403;
      res.set_content("/debug/ answers on loopback only\n", "text/plain");
      return;
    }
    if (req.path != "/debug/state") {
      res.status = 404;
      res.set_content("not found: " + req.path + "\n", "text/plain");
      return;
    }
    res.set_content(handlers_.debug_state(), "application/json");
  });
  if (port == 0) {
    port_ = server_->bind_to_any_port(host);
    if (port_ < 0) return absl::UnavailableError("cannot bind " + addr);
  } else {
    if (!server_->bind_to_port(host, port)) {
      return absl::UnavailableError("cannot bind the metrics endpoint to " + addr);
    }
    port_ = port;
  }
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  return absl::OkStatus();
}

void HttpServer::Stop() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
  server_.reset();
}

}  // namespace trellis
