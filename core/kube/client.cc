#include "core/kube/client.h"

#include <httplib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <sstream>

namespace trellis::kube {

using SteadyClock = std::chrono::steady_clock;

namespace {

std::string OpenSslError() {
  unsigned long e = ERR_get_error();
  if (e == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return buf;
}

std::string Trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t i = 0;
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  return s.substr(i);
}

Millis Remaining(SteadyClock::time_point deadline) {
  return std::max(Millis(1),
                  std::chrono::duration_cast<Millis>(deadline - SteadyClock::now()));
}

// The path without its query, for messages (selectors can be long).
std::string Where(const std::string& method, const std::string& path) {
  return method + " " + path.substr(0, path.find('?'));
}

std::string FormatTime(bool micro) {
  auto now = std::chrono::system_clock::now();
  auto secs = std::chrono::time_point_cast<std::chrono::seconds>(now);
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(now - secs).count();
  std::time_t t = std::chrono::system_clock::to_time_t(secs);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::string out = buf;
  if (micro) {
    char frac[16];
    std::snprintf(frac, sizeof frac, ".%06lld", static_cast<long long>(us));
    out += frac;
  }
  return out + "Z";
}

}  // namespace

std::string MicroTimeNow() { return FormatTime(true); }
std::string TimeNow() { return FormatTime(false); }

std::string UrlEncode(const std::string& s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

std::string WithQuery(const std::string& path,
                      const std::vector<std::pair<std::string, std::string>>& query) {
  std::string out = path;
  char sep = path.find('?') == std::string::npos ? '?' : '&';
  for (const auto& [k, v] : query) {
    if (v.empty()) continue;
    out += sep + k + "=" + UrlEncode(v);
    sep = '&';
  }
  return out;
}

Status HttpStatus(int code, const std::string& what, const std::string& body) {
  std::string message, reason;
  Json j = Json::parse(body, nullptr, false);
  if (j.is_object() && j.value("kind", "") == "Status") {
    message = j.value("message", "");
    reason = j.value("reason", "");
  } else {
    message = body.substr(0, 256);
  }
  std::string msg = what + ": HTTP " + std::to_string(code) + (reason.empty() ? "" : " " + reason) +
                    (message.empty() ? "" : ": " + message);
  switch (code) {
    case 400:
    case 422: return absl::InvalidArgumentError(msg);
    case 401: return absl::UnauthenticatedError(msg);
    case 403: return absl::PermissionDeniedError(msg);
    case 404: return absl::NotFoundError(msg);
    case 409:
      return reason == "AlreadyExists" ? absl::AlreadyExistsError(msg) : absl::AbortedError(msg);
    case 410: return absl::OutOfRangeError(msg);
    case 429: return absl::UnavailableError(msg);
    default:
      if (code >= 500) return absl::UnavailableError(msg);
      return absl::UnknownError(msg);
  }
}

void Cancellation::Cancel() {
  std::lock_guard lock(mu_);
  cancelled_ = true;
  // ClientImpl::stop() shuts the socket of a request in flight down (the only
  // thread-safe thing to do to it); a request still connecting notices at its
  // first response byte, where the handlers check `cancelled_`.
  if (active_ != nullptr) active_->stop();
}

// ------------------------------------------------------------------ TLS --

struct Client::Tls {
  std::vector<X509*> ca;  // the trusted CAs; empty: the system's
  X509* cert = nullptr;
  EVP_PKEY* key = nullptr;
  ~Tls() {
    for (X509* x : ca) X509_free(x);
    if (cert) X509_free(cert);
    if (key) EVP_PKEY_free(key);
  }
};

struct Client::Deadline {
  SteadyClock::time_point at;
  Cancellation cancel;
  std::atomic<bool> expired{false};
};

StatusOr<std::unique_ptr<Client>> Client::Create(ClientOptions options) {
  if (options.connection.host.empty()) return absl::InvalidArgumentError("Kubernetes API: no server");
  std::unique_ptr<Client> client(new Client(std::move(options)));
  const Connection& c = client->opts_.connection;
  auto& tls = *client->tls_;
  if (!c.ca_pem.empty()) {
    BIO* bio = BIO_new_mem_buf(c.ca_pem.data(), static_cast<int>(c.ca_pem.size()));
    while (X509* x = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) tls.ca.push_back(x);
    BIO_free(bio);
    ERR_clear_error();
    if (tls.ca.empty()) {
      return absl::InvalidArgumentError(c.origin + ": the CA bundle holds no PEM certificate");
    }
  }
  if (!c.client_cert_pem.empty()) {
    BIO* bio = BIO_new_mem_buf(c.client_cert_pem.data(), static_cast<int>(c.client_cert_pem.size()));
    tls.cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
    BIO_free(bio);
    if (tls.cert == nullptr) {
      return absl::InvalidArgumentError(c.origin + ": the client certificate is not PEM: " +
                                        OpenSslError());
    }
    bio = BIO_new_mem_buf(c.client_key_pem.data(), static_cast<int>(c.client_key_pem.size()));
    tls.key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
    BIO_free(bio);
    if (tls.key == nullptr) {
      // The OpenSSL message never quotes key material.
      return absl::InvalidArgumentError(c.origin + ": the client key is not a PEM private key: " +
                                        OpenSslError());
    }
  }
  if (!c.token_file.empty()) {
    std::string t = client->Token(true);
    if (t.empty()) {
      return absl::FailedPreconditionError(c.origin + ": token file " + c.token_file +
                                           " is missing or empty");
    }
  }
  client->watchdog_ = std::thread([p = client.get()] { p->WatchdogLoop(); });
  return client;
}

Client::Client(ClientOptions options)
    : opts_(std::move(options)),
      tls_(new Tls()),
      limiter_(opts_.qps, opts_.burst) {}

Client::~Client() {
  Shutdown();
  {
    std::lock_guard lock(wd_mu_);
    wd_stop_ = true;
  }
  wd_cv_.notify_all();
  if (watchdog_.joinable()) watchdog_.join();
}

void Client::Shutdown() {
  shutdown_ = true;
  std::lock_guard lock(wd_mu_);
  for (auto& [at, d] : deadlines_) d->cancel.Cancel();
  for (Cancellation* c : watches_) c->Cancel();
}

void Client::WatchdogLoop() {
  std::unique_lock lock(wd_mu_);
  while (!wd_stop_) {
    if (deadlines_.empty()) {
      wd_cv_.wait(lock);
      continue;
    }
    auto first = deadlines_.begin();
    if (SteadyClock::now() < first->first) {
      wd_cv_.wait_until(lock, first->first);
      continue;
    }
    Deadline* d = first->second;
    deadlines_.erase(first);
    d->expired = true;
    d->cancel.Cancel();
  }
}

void Client::Arm(Deadline* d) {
  std::lock_guard lock(wd_mu_);
  deadlines_.emplace(d->at, d);
  wd_cv_.notify_all();
}

void Client::Disarm(Deadline* d) {
  std::lock_guard lock(wd_mu_);
  for (auto it = deadlines_.lower_bound(d->at); it != deadlines_.end() && it->first == d->at; ++it) {
    if (it->second == d) {
      deadlines_.erase(it);
      break;
    }
  }
}

std::string Client::Token(bool force) {
  const Connection& c = opts_.connection;
  if (c.token_file.empty()) return c.token;
  std::lock_guard lock(token_mu_);
  struct stat st {};
  bool have = stat(c.token_file.c_str(), &st) == 0;
  int64_t mtime = have ? int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec : -2;
  int64_t size = have ? st.st_size : -2;
  // Kubelet rewrites a projected token through a ..data symlink swap: the
  // stat of the path changes. A minute-old read is redone regardless, as
  // client-go does, in case a rewrite kept size and mtime.
  bool stale = SteadyClock::now() - token_read_ > std::chrono::minutes(1);
  if (force || stale || mtime != token_mtime_ns_ || size != token_size_) {
    std::ifstream in(c.token_file, std::ios::binary);
    if (in) {
      std::ostringstream ss;
      ss << in.rdbuf();
      std::string t = Trim(ss.str());
      if (!t.empty()) token_ = t;
    }
    token_mtime_ns_ = mtime;
    token_size_ = size;
    token_read_ = SteadyClock::now();
  }
  return token_;
}

bool Client::Admit(SteadyClock::time_point deadline) { return limiter_.Acquire(deadline); }

std::unique_ptr<httplib::ClientImpl> Client::NewHttp(Millis connect, Millis read) const {
  const Connection& c = opts_.connection;
  std::unique_ptr<httplib::ClientImpl> http;
  if (c.scheme == "https") {
    std::unique_ptr<httplib::SSLClient> ssl;
    if (tls_->cert != nullptr) {
      ssl = std::make_unique<httplib::SSLClient>(c.host, c.port, tls_->cert, tls_->key);
    } else {
      ssl = std::make_unique<httplib::SSLClient>(c.host, c.port);
    }
    // OpenSSL verifies the chain and the name during the handshake, against
    // a store of this client's own: cpp-httplib's verification would add the
    // system's CAs to the trusted set (client-go trusts the configured CA
    // only) and mutate a store shared between threads without a lock.
    ssl->enable_server_certificate_verification(false);
    if (!c.insecure_skip_verify) {
      SSL_CTX* ctx = ssl->ssl_context();
      X509_STORE* store = X509_STORE_new();
      if (tls_->ca.empty()) {
        X509_STORE_set_default_paths(store);
      } else {
        for (X509* x : tls_->ca) X509_STORE_add_cert(store, x);
      }
      SSL_CTX_set_cert_store(ctx, store);  // takes ownership
      SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
      X509_VERIFY_PARAM* param = SSL_CTX_get0_param(ctx);
      if (c.host.find_first_not_of("0123456789.") == std::string::npos ||
          c.host.find(':') != std::string::npos) {
        X509_VERIFY_PARAM_set1_ip_asc(param, c.host.c_str());
      } else {
        X509_VERIFY_PARAM_set1_host(param, c.host.c_str(), c.host.size());
      }
    }
    http = std::move(ssl);
  } else {
    http = std::make_unique<httplib::ClientImpl>(c.host, c.port);
  }
  http->set_keep_alive(false);
  http->set_connection_timeout(connect);
  http->set_read_timeout(read);
  http->set_write_timeout(read);
  // Keepalive probes find a peer that vanished without a FIN (node or
  // apiserver crash) in about a minute instead of the kernel's two hours.
  http->set_socket_options([](int sock) {
    int on = 1, idle = 30, intvl = 10, cnt = 3;
    setsockopt(sock, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
    setsockopt(sock, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(sock, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(sock, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
    setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
  });
  return http;
}

StatusOr<Json> Client::Get(const std::string& path, Millis timeout) {
  return Do("GET", "GET", path, nullptr, timeout);
}
StatusOr<Json> Client::List(const std::string& path) {
  return Do("GET", "LIST", path, nullptr, Millis(0));
}
StatusOr<Json> Client::Create(const std::string& path, const Json& body) {
  return Do("POST", "POST", path, &body, Millis(0));
}
StatusOr<Json> Client::Update(const std::string& path, const Json& body) {
  return Do("PUT", "PUT", path, &body, Millis(0));
}

StatusOr<Json> Client::Do(const std::string& method, const std::string& verb,
                          const std::string& path, const Json* body, Millis timeout) {
  const std::string what = Where(method, path);
  if (shutdown_) return absl::CancelledError(what + ": the client is shutting down");
  if (timeout.count() <= 0) timeout = opts_.request_timeout;
  auto start = SteadyClock::now();
  Deadline d;
  d.at = start + timeout;
  if (!Admit(d.at)) {
    return absl::DeadlineExceededError(what + ": the client-side rate limit (qps " +
                                       fmt::format("{:g}", opts_.qps) + ", burst " +
                                       std::to_string(opts_.burst) +
                                       ") would delay it past its " +
                                       std::to_string(timeout.count()) + "ms deadline");
  }
  const std::string full = opts_.connection.base_path + path;
  const std::string payload = body != nullptr ? body->dump() : "";
  for (int attempt = 0;; ++attempt) {
    auto http = NewHttp(Remaining(d.at), Remaining(d.at));
    httplib::Headers headers = {{"Accept", "application/json"}, {"User-Agent", opts_.user_agent}};
    std::string token = Token(attempt > 0);
    if (!token.empty()) headers.emplace("Authorization", "Bearer " + token);
    {
      std::lock_guard lock(d.cancel.mu_);
      d.cancel.active_ = http.get();
    }
    Arm(&d);
    httplib::Result res = method == "GET"    ? http->Get(full.c_str(), headers)
                          : method == "POST" ? http->Post(full.c_str(), headers, payload,
                                                          "application/json")
                                             : http->Put(full.c_str(), headers, payload,
                                                         "application/json");
    Disarm(&d);
    {
      std::lock_guard lock(d.cancel.mu_);
      d.cancel.active_ = nullptr;
    }
    double secs = std::chrono::duration<double>(SteadyClock::now() - start).count();
    int code = res ? res->status : 0;
    if (opts_.on_request) opts_.on_request(verb, code, secs);
    if (!res) {
      if (d.expired) {
        return absl::DeadlineExceededError(what + ": no answer within " +
                                           std::to_string(timeout.count()) + "ms");
      }
      if (shutdown_) return absl::CancelledError(what + ": the client is shutting down");
      std::string why = httplib::to_string(res.error());
      if (res.error() == httplib::Error::SSLConnection) {
        why += " (TLS handshake failed: is the server's certificate signed by the configured CA "
               "and valid for " + opts_.connection.host + "?)";
      }
      return absl::UnavailableError(what + " on " + opts_.connection.ServerUrl() + ": " + why);
    }
    // A rotated token: the server refuses the old one before we re-read it.
    if (code == 401 && attempt == 0 && !opts_.connection.token_file.empty() &&
        Token(true) != token) {
      continue;
    }
    if (code < 200 || code > 299) return HttpStatus(code, what, res->body);
    Json j = Json::parse(res->body, nullptr, false);
    if (j.is_discarded()) {
      return absl::InternalError(what + ": the answer is not JSON (" +
                                 std::to_string(res->body.size()) + " bytes)");
    }
    return j;
  }
}

Status Client::Watch(const std::string& path, const std::function<bool(WatchEvent)>& on_event,
                     Cancellation* cancel, Millis idle_timeout) {
  const std::string what = Where("WATCH", path);
  if (shutdown_) return absl::CancelledError(what + ": the client is shutting down");
  {
    std::lock_guard lock(wd_mu_);
    watches_.push_back(cancel);
  }
  struct Unregister {
    Client* c;
    Cancellation* x;
    ~Unregister() {
      std::lock_guard lock(c->wd_mu_);
      std::erase(c->watches_, x);
    }
  } unregister{this, cancel};
  if (cancel->cancelled() || shutdown_) return absl::CancelledError(what + ": cancelled");
  auto start = SteadyClock::now();
  if (!Admit(start + opts_.request_timeout)) {
    return absl::DeadlineExceededError(what + ": the client-side rate limit would delay it past " +
                                       std::to_string(opts_.request_timeout.count()) + "ms");
  }
  auto http = NewHttp(opts_.request_timeout, idle_timeout);
  httplib::Headers headers = {{"Accept", "application/json"}, {"User-Agent", opts_.user_agent}};
  std::string token = Token(false);
  if (!token.empty()) headers.emplace("Authorization", "Bearer " + token);
  {
    std::lock_guard lock(cancel->mu_);
    if (cancel->cancelled()) return absl::CancelledError(what + ": cancelled");
    cancel->active_ = http.get();
  }
  int code = 0;
  std::string error_body, buffer;
  bool stopped_by_caller = false;
  Status event_error = absl::OkStatus();
  auto on_response = [&](const httplib::Response& r) {
    code = r.status;
    if (opts_.on_request) {
      opts_.on_request("WATCH", code,
                       std::chrono::duration<double>(SteadyClock::now() - start).count());
    }
    return !cancel->cancelled();
  };
  auto on_data = [&](const char* data, size_t len) {
    if (cancel->cancelled()) return false;
    if (code != 200) {
      if (error_body.size() < 65536) error_body.append(data, len);
      return true;
    }
    buffer.append(data, len);
    // The server writes one JSON object per event, each followed by "\n";
    // chunk boundaries fall anywhere.
    size_t pos;
    while ((pos = buffer.find('\n')) != std::string::npos) {
      std::string line = buffer.substr(0, pos);
      buffer.erase(0, pos + 1);
      if (Trim(line).empty()) continue;
      Json j = Json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object() || !j.contains("type")) {
        event_error = absl::DataLossError(what + ": an event is not a JSON watch event");
        return false;
      }
      WatchEvent ev{j["type"].get<std::string>(), j.value("object", Json::object())};
      if (!on_event(std::move(ev))) {
        stopped_by_caller = true;
        return false;
      }
    }
    return true;
  };
  httplib::Result res = http->Get((opts_.connection.base_path + path).c_str(), headers,
                                  on_response, on_data);
  {
    std::lock_guard lock(cancel->mu_);
    cancel->active_ = nullptr;
  }
  if (!event_error.ok()) return event_error;
  if (stopped_by_caller) return absl::CancelledError(what + ": stopped by the caller");
  if (cancel->cancelled() || shutdown_) return absl::CancelledError(what + ": cancelled");
  if (!res) {
    if (code != 0 && code != 200) return HttpStatus(code, what, error_body);
    return absl::UnavailableError(what + ": the stream broke: " + httplib::to_string(res.error()));
  }
  if (res->status != 200) return HttpStatus(res->status, what, error_body);
  return absl::OkStatus();
}

}  // namespace trellis::kube
