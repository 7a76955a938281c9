#include "core/cni/client.h"

#include <fcntl.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace trellis {

using Clock = std::chrono::steady_clock;

namespace {

// gRPC's HTTP status mapping for a response that carries no grpc-status
// (doc/http-grpc-status-mapping.md).
RpcCode FromHttpStatus(int http) {
  switch (http) {
    case 400: return RpcCode::kInternal;
    case 401: return RpcCode::kUnauthenticated;
    case 403: return RpcCode::kPermissionDenied;
    case 404: return RpcCode::kUnimplemented;
    case 429: case 502: case 503: case 504: return RpcCode::kUnavailable;
    default: return RpcCode::kUnknown;
  }
}

// grpc-message is percent-encoded (gRPC's PROTOCOL-HTTP2.md).
std::string PercentDecode(std::string_view v) {
  std::string o;
  o.reserve(v.size());
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < v.size(); ++i) {
    int hi, lo;
    if (v[i] == '%' && i + 2 < v.size() && (hi = hex(v[i + 1])) >= 0 &&
        (lo = hex(v[i + 2])) >= 0) {
      o += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      o += v[i];
    }
  }
  return o;
}

// grpc-timeout: at most eight digits and a unit.
std::string GrpcTimeout(std::chrono::milliseconds t) {
  long long ms = std::max<long long>(t.count(), 1);
  if (ms <= 99999999) return std::to_string(ms) + "m";
  return std::to_string(std::min<long long>((ms + 999) / 1000, 99999999)) + "S";
}

}  // namespace

// One HTTP/2 connection and the call in flight on it.
struct ApiClient::Session {
  int fd = -1;
  nghttp2_session* h2 = nullptr;
  bool broken = false;  // the connection failed: no further calls
  std::string broken_why;

  // The call in flight.
  int32_t stream = -1;
  std::string request;  // length-prefixed message
  size_t request_sent = 0;
  std::string body;  // length-prefixed response message(s)
  int http_status = 0;
  int grpc_status = -1;
  std::string grpc_message;
  bool closed = false;
  uint32_t reset_code = 0;

  ~Session() {
    if (h2 != nullptr) nghttp2_session_del(h2);
    if (fd >= 0) close(fd);
  }

  static ssize_t Send(nghttp2_session*, const uint8_t* data, size_t len, int, void* user) {
    auto* s = static_cast<Session*>(user);
    ssize_t n = send(s->fd, data, len, MSG_NOSIGNAL);
    if (n >= 0) return n;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return NGHTTP2_ERR_WOULDBLOCK;
    if (errno == EINTR) return NGHTTP2_ERR_WOULDBLOCK;
    s->broken_why = std::string("write to trellisd: ") + std::strerror(errno);
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  }

  static int OnHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                      size_t namelen, const uint8_t* value, size_t valuelen, uint8_t,
                      void* user) {
    auto* s = static_cast<Session*>(user);
    if (frame->hd.stream_id != s->stream) return 0;
    std::string_view n(reinterpret_cast<const char*>(name), namelen);
    std::string_view v(reinterpret_cast<const char*>(value), valuelen);
    if (n == ":status") {
      s->http_status = std::atoi(std::string(v).c_str());
    } else if (n == "grpc-status") {
      s->grpc_status = std::atoi(std::string(v).c_str());
    } else if (n == "grpc-message") {
      s->grpc_message = PercentDecode(v);
    }
    return 0;
  }

  static int OnData(nghttp2_session*, uint8_t, int32_t stream_id, const uint8_t* data,
                    size_t len, void* user) {
    auto* s = static_cast<Session*>(user);
    if (stream_id == s->stream) s->body.append(reinterpret_cast<const char*>(data), len);
    return 0;
  }

  static int OnClose(nghttp2_session*, int32_t stream_id, uint32_t error_code, void* user) {
    auto* s = static_cast<Session*>(user);
    if (stream_id == s->stream) {
      s->closed = true;
      s->reset_code = error_code;
    }
    return 0;
  }

  static ssize_t ReadRequest(nghttp2_session*, int32_t, uint8_t* buf, size_t length,
                             uint32_t* flags, nghttp2_data_source*, void* user) {
    auto* s = static_cast<Session*>(user);
    size_t n = std::min(length, s->request.size() - s->request_sent);
    std::memcpy(buf, s->request.data() + s->request_sent, n);
    s->request_sent += n;
    if (s->request_sent == s->request.size()) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return static_cast<ssize_t>(n);
  }

  bool Start() {
    nghttp2_session_callbacks* cb;
    if (nghttp2_session_callbacks_new(&cb) != 0) return false;
    nghttp2_session_callbacks_set_send_callback(cb, Send);
    nghttp2_session_callbacks_set_on_header_callback(cb, OnHeader);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, OnData);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, OnClose);
    int rv = nghttp2_session_client_new(&h2, cb, this);
    nghttp2_session_callbacks_del(cb);
    if (rv != 0) return false;
    // Large windows: a big answer (trellisctl pods) needs no WINDOW_UPDATE
    // round trips.
    constexpr int32_t kWindow = 1 << 24;
    nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                         {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, kWindow}};
    if (nghttp2_submit_settings(h2, NGHTTP2_FLAG_NONE, settings, 2) != 0) return false;
    return nghttp2_session_set_local_window_size(h2, NGHTTP2_FLAG_NONE, 0, kWindow) == 0;
  }

  // Sends what nghttp2 has queued and reads until the stream closes, the
  // deadline passes or the connection fails.
  RpcStatus Run(Clock::time_point deadline) {
    uint8_t buf[16384];
    while (!closed) {
      if (nghttp2_session_send(h2) != 0) {
        broken = true;
        return {RpcCode::kUnavailable,
                broken_why.empty() ? "trellisd connection failed" : broken_why};
      }
      if (closed) break;
      auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return {RpcCode::kDeadlineExceeded, "deadline exceeded"};
      pollfd p{fd, static_cast<short>(POLLIN | (nghttp2_session_want_write(h2) ? POLLOUT : 0)), 0};
      int n = poll(&p, 1, static_cast<int>(std::min<long long>(left.count(), 1 << 30)));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        broken = true;
        return {RpcCode::kUnavailable, std::string("poll: ") + std::strerror(errno)};
      }
      if (n == 0) return {RpcCode::kDeadlineExceeded, "deadline exceeded"};
      if (!(p.revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t r = recv(fd, buf, sizeof buf, 0);
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (r <= 0) {
        broken = true;
        return {RpcCode::kUnavailable, r == 0 ? "trellisd closed the connection"
                                              : std::string("read from trellisd: ") +
                                                    std::strerror(errno)};
      }
      if (nghttp2_session_mem_recv(h2, buf, static_cast<size_t>(r)) < 0) {
        broken = true;
        return {RpcCode::kInternal, "trellisd sent an invalid HTTP/2 stream"};
      }
    }
    return {};
  }
};

ApiClient::ApiClient(int fd) : s_(std::make_unique<Session>()) { s_->fd = fd; }
ApiClient::~ApiClient() = default;

std::unique_ptr<ApiClient> ApiClient::Connect(const std::string& socket_path,
                                              std::chrono::milliseconds timeout,
                                              std::string* error, ConnectError* kind) {
  ConnectError dummy;
  if (kind == nullptr) kind = &dummy;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof addr.sun_path) {
    *error = "socket path " + socket_path + " is too long";
    *kind = ConnectError::kUnreachable;
    return nullptr;
  }
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    *error = std::string("socket: ") + std::strerror(errno);
    *kind = ConnectError::kUnreachable;
    return nullptr;
  }
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int e = errno;
    if (e == EINPROGRESS || e == EAGAIN) {
      // A unix socket's connect only waits when the listen backlog is full.
      pollfd p{fd, POLLOUT, 0};
      int n = poll(&p, 1, static_cast<int>(timeout.count()));
      int so_error = 0;
      socklen_t len = sizeof so_error;
      if (n == 1) getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len);
      if (n != 1 || so_error != 0) {
        close(fd);
        *error = "trellisd at " + socket_path + " is busy (connection backlog full)";
        *kind = ConnectError::kBusy;
        return nullptr;
      }
    } else {
      close(fd);
      *error = "trellisd is not reachable at " + socket_path + ": " + std::strerror(e);
      *kind = e == EACCES || e == EPERM ? ConnectError::kPermission : ConnectError::kUnreachable;
      return nullptr;
    }
  }
  std::unique_ptr<ApiClient> c(new ApiClient(fd));
  if (!c->s_->Start()) {
    *error = "cannot start an HTTP/2 session";
    *kind = ConnectError::kUnreachable;
    return nullptr;
  }
  *kind = ConnectError::kNone;
  return c;
}

RpcStatus ApiClient::Call(std::string_view method, const google::protobuf::MessageLite& request,
                          google::protobuf::MessageLite* response,
                          std::chrono::milliseconds timeout) {
  Session& s = *s_;
  if (s.broken) return {RpcCode::kUnavailable, s.broken_why};
  const auto deadline = Clock::now() + timeout;

  // A gRPC message: compressed flag (0), 4-byte big-endian length, the bytes.
  std::string payload;
  if (!request.SerializeToString(&payload)) {
    return {RpcCode::kInternal, "cannot encode the request"};
  }
  uint32_t len = static_cast<uint32_t>(payload.size());
  s.request.assign(5, '\0');
  s.request[1] = static_cast<char>(len >> 24);
  s.request[2] = static_cast<char>(len >> 16);
  s.request[3] = static_cast<char>(len >> 8);
  s.request[4] = static_cast<char>(len);
  s.request += payload;
  s.request_sent = 0;
  s.body.clear();
  s.http_status = 0;
  s.grpc_status = -1;
  s.grpc_message.clear();
  s.closed = false;
  s.reset_code = 0;

  const std::string path = "/trellis.v1.Trellis/" + std::string(method);
  const std::string grpc_timeout = GrpcTimeout(timeout);
  auto nv = [](std::string_view n, std::string_view v) {
    return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(n.data())),
                      reinterpret_cast<uint8_t*>(const_cast<char*>(v.data())), n.size(), v.size(),
                      NGHTTP2_NV_FLAG_NONE};
  };
  nghttp2_nv headers[] = {
      nv(":method", "POST"),      nv(":scheme", "http"),
      nv(":path", path),          nv(":authority", "trellisd"),
      nv("content-type", "application/grpc"), nv("te", "trailers"),
      nv("grpc-timeout", grpc_timeout),       nv("user-agent", "trellis"),
  };
  nghttp2_data_provider body{};
  body.read_callback = Session::ReadRequest;
  s.stream = nghttp2_submit_request(s.h2, nullptr, headers, std::size(headers), &body, nullptr);
  if (s.stream < 0) return {RpcCode::kInternal, nghttp2_strerror(s.stream)};

  if (RpcStatus st = s.Run(deadline); !st.ok()) {
    if (st.code == RpcCode::kDeadlineExceeded) {
      nghttp2_submit_rst_stream(s.h2, NGHTTP2_FLAG_NONE, s.stream, NGHTTP2_CANCEL);
      nghttp2_session_send(s.h2);
    }
    return st;
  }
  if (s.grpc_status < 0) {
    if (s.reset_code == NGHTTP2_REFUSED_STREAM) {
      return {RpcCode::kUnavailable, "trellisd refused the call"};
    }
    if (s.http_status != 200) {
      return {FromHttpStatus(s.http_status),
              "trellisd answered HTTP " + std::to_string(s.http_status)};
    }
    return {RpcCode::kInternal, "trellisd's answer has no grpc-status"};
  }
  if (s.grpc_status != 0) {
    RpcCode code = s.grpc_status <= 16 ? static_cast<RpcCode>(s.grpc_status) : RpcCode::kUnknown;
    return {code, s.grpc_message};
  }
  // Exactly one uncompressed message.
  if (s.body.size() < 5 || s.body[0] != 0) {
    return {RpcCode::kInternal, "trellisd's answer is not one uncompressed gRPC message"};
  }
  auto b = reinterpret_cast<const unsigned char*>(s.body.data());
  uint32_t n = (uint32_t{b[1]} << 24) | (uint32_t{b[2]} << 16) | (uint32_t{b[3]} << 8) | b[4];
  if (n != s.body.size() - 5) {
    return {RpcCode::kInternal, "trellisd's answer is not one uncompressed gRPC message"};
  }
  if (!response->ParseFromArray(s.body.data() + 5, static_cast<int>(n))) {
    return {RpcCode::kInternal, "cannot decode trellisd's answer"};
  }
  return {};
}

}  // namespace trellis
