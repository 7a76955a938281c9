#include "aliyun/http.h"

#include <arpa/inet.h>
#include <httplib.h>

#include <cstdlib>
#include <memory>

#include "aliyun/errors.h"

namespace trellis::aliyun {

HttplibTransport::HttplibTransport(std::string ca_file) : ca_file_(std::move(ca_file)) {}

HttpResponse HttplibTransport::Send(const HttpRequest& req) {
  HttpResponse out;
  std::unique_ptr<httplib::ClientImpl> cli;
  if (req.scheme == "https") {
    auto ssl = std::make_unique<httplib::SSLClient>(req.host, req.port);
    // Certificate and host name are verified; a CA file replaces the system
    // bundle only when configured.
    ssl->enable_server_certificate_verification(true);
    if (!ca_file_.empty()) ssl->set_ca_cert_path(ca_file_.c_str());
    cli = std::move(ssl);
  } else {
    cli = std::make_unique<httplib::ClientImpl>(req.host, req.port);
  }
  auto secs = std::chrono::duration_cast<std::chrono::seconds>(req.timeout);
  auto usecs = std::chrono::duration_cast<std::chrono::microseconds>(req.timeout - secs);
  cli->set_connection_timeout(secs.count(), usecs.count());
  cli->set_read_timeout(secs.count(), usecs.count());
  cli->set_write_timeout(secs.count(), usecs.count());
  cli->set_keep_alive(false);
  httplib::Headers headers;
  for (const auto& [k, v] : req.headers) headers.emplace(k, v);
  auto start = std::chrono::steady_clock::now();
  httplib::Result res = req.method == "POST"
                            ? cli->Post(req.target.c_str(), headers, req.body,
                                        req.content_type.empty() ? "application/x-www-form-urlencoded"
                                                                 : req.content_type.c_str())
                            : cli->Get(req.target.c_str(), headers);
  if (res) {
    out.status = res->status;
    out.body = res->body;
    return out;
  }
  httplib::Error err = res.error();
  out.timed_out = err == httplib::Error::ConnectionTimeout ||
                  (err == httplib::Error::Read &&
                   std::chrono::steady_clock::now() - start >= req.timeout);
  out.error = out.timed_out ? "no answer within " + std::to_string(req.timeout.count()) + " ms"
                            : httplib::to_string(err);
  if (err == httplib::Error::SSLServerVerification) {
    out.error = "the server certificate of " + req.host + " did not verify";
  }
  return out;
}

namespace {

bool IsLoopbackHost(const std::string& host) {
  if (host == "localhost") return true;
  in_addr a4{};
  if (inet_pton(AF_INET, host.c_str(), &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
  std::string h = host;
  if (h.size() > 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  in6_addr a6{};
  return inet_pton(AF_INET6, h.c_str(), &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

}  // namespace

Endpoint Endpoint::Parse(const std::string& text, const std::string& field, PlainHttp plain) {
  auto bad = [&](const std::string& why) {
    return CloudError(CloudError::Kind::kInvalid, field, "Invalid", 0, "",
                      field + ": " + why + " (got '" + text + "')");
  };
  Endpoint e;
  std::string rest = text;
  if (auto p = rest.find("://"); p != std::string::npos) {
    e.scheme = rest.substr(0, p);
    rest = rest.substr(p + 3);
    if (e.scheme != "https" && e.scheme != "http") throw bad("the scheme must be https or http");
  }
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  if (rest.find('/') != std::string::npos || rest.find('?') != std::string::npos) {
    throw bad("expected scheme://host[:port] without a path");
  }
  e.port = e.scheme == "https" ? 443 : 80;
  std::string host = rest;
  size_t colon = rest.rfind(':');
  bool bracketed = !rest.empty() && rest.front() == '[';
  if (colon != std::string::npos && (!bracketed || colon > rest.find(']'))) {
    std::string port = rest.substr(colon + 1);
    host = rest.substr(0, colon);
    char* end = nullptr;
    long p = std::strtol(port.c_str(), &end, 10);
    if (port.empty() || *end != '\0' || p < 1 || p > 65535) throw bad("bad port");
    e.port = static_cast<int>(p);
  }
  if (host.empty()) throw bad("no host");
  e.host = host;
  if (e.scheme == "http") {
    bool ok = e.IsLoopback() ||
              (plain == PlainHttp::kLoopbackOrMetadata && e.host == "100.100.100.200");
    if (!ok) {
      throw bad(plain == PlainHttp::kLoopbackOnly
                    ? "plain http is allowed only for a loopback address; use https"
                    : "plain http is allowed only for loopback and 100.100.100.200; use https");
    }
  }
  return e;
}

bool Endpoint::IsLoopback() const { return IsLoopbackHost(host); }

std::string Endpoint::ToString() const {
  bool default_port = (scheme == "https" && port == 443) || (scheme == "http" && port == 80);
  return scheme + "://" + host + (default_port ? "" : ":" + std::to_string(port));
}

}  // namespace trellis::aliyun
