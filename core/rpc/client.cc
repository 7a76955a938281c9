#include "core/rpc/client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/rpc/h2.h"

namespace trellis::rpc {

using Clock = std::chrono::steady_clock;

namespace {

// gRPC's HTTP status mapping for a response that carries no grpc-status
// (doc/http-grpc-status-mapping.md).
Code FromHttpStatus(int http) {
  switch (http) {
    case 400: return Code::kInternal;
    case 401: return Code::kUnauthenticated;
    case 403: return Code::kPermissionDenied;
    case 404: return Code::kUnimplemented;
    case 429: case 502: case 503: case 504: return Code::kUnavailable;
    default: return Code::kUnknown;
  }
}

}  // namespace

// One HTTP/2 connection and the call in flight on it.
struct Client::Session {
  int fd = -1;
  nghttp2_session* h2 = nullptr;
  bool broken = false;  // the connection failed: no further calls

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

  RpcStatus Flush(Clock::time_point deadline) {
    switch (rpc::h2::Flush(h2, fd, deadline)) {
      case rpc::h2::FlushResult::kOk:
        return {};
      case rpc::h2::FlushResult::kTimedOut:
        broken = true;
        return {Code::kDeadlineExceeded, "deadline exceeded"};
      case rpc::h2::FlushResult::kFailed:
        break;
    }
    broken = true;
    return {Code::kUnavailable, errno != 0 ? std::string("write to trellisd: ") + std::strerror(errno)
                                           : std::string("HTTP/2 session failed")};
  }

  // Sends what nghttp2 has queued and reads until the stream closes, the
  // deadline passes or the connection fails.
  RpcStatus Run(Clock::time_point deadline) {
    uint8_t buf[16384];
    while (!closed) {
      if (RpcStatus st = Flush(deadline); !st.ok()) return st;
      if (closed) break;
      auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return {Code::kDeadlineExceeded, "deadline exceeded"};
      pollfd p{fd, POLLIN, 0};
      int n = poll(&p, 1, static_cast<int>(std::min<long long>(left.count(), 1 << 30)));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        broken = true;
        return {Code::kUnavailable, std::string("poll: ") + std::strerror(errno)};
      }
      if (n == 0) return {Code::kDeadlineExceeded, "deadline exceeded"};
      ssize_t r = recv(fd, buf, sizeof buf, 0);
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (r <= 0) {
        broken = true;
        return {Code::kUnavailable, r == 0 ? "trellisd closed the connection"
                                           : std::string("read from trellisd: ") +
                                                 std::strerror(errno)};
      }
      if (nghttp2_session_mem_recv(h2, buf, static_cast<size_t>(r)) < 0) {
        broken = true;
        return {Code::kInternal, "trellisd sent an invalid HTTP/2 stream"};
      }
    }
    return {};
  }
};

Client::Client(int fd) : s_(std::make_unique<Session>()) { s_->fd = fd; }
Client::~Client() = default;

std::unique_ptr<Client> Client::Connect(const std::string& socket_path,
                                        std::chrono::milliseconds timeout, std::string* error) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof addr.sun_path) {
    *error = "socket path " + socket_path + " is too long";
    return nullptr;
  }
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    *error = std::string("socket: ") + std::strerror(errno);
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
        return nullptr;
      }
    } else {
      close(fd);
      *error = "trellisd is not reachable at " + socket_path + ": " + std::strerror(e);
      return nullptr;
    }
  }
  std::unique_ptr<Client> c(new Client(fd));
  if (!c->s_->Start()) {
    *error = "cannot start an HTTP/2 session";
    return nullptr;
  }
  return c;
}

RpcStatus Client::Call(std::string_view method, const google::protobuf::MessageLite& request,
                       google::protobuf::MessageLite* response, std::chrono::milliseconds timeout) {
  Session& s = *s_;
  if (s.broken) return {Code::kUnavailable, "the connection to trellisd failed earlier"};
  const auto deadline = Clock::now() + timeout;

  std::string payload;
  if (!request.SerializeToString(&payload)) {
    return {Code::kInternal, "cannot encode the request"};
  }
  s.request = Frame(payload);
  s.request_sent = 0;
  s.body.clear();
  s.http_status = 0;
  s.grpc_status = -1;
  s.grpc_message.clear();
  s.closed = false;
  s.reset_code = 0;

  const std::string path = std::string(kServicePath) + std::string(method);
  const std::string grpc_timeout = FormatTimeout(timeout);
  using rpc::h2::Header;
  nghttp2_nv headers[] = {
      Header(":method", "POST"),          Header(":scheme", "http"),
      Header(":path", path),              Header(":authority", "trellisd"),
      Header("content-type", "application/grpc"), Header("te", "trailers"),
      Header("grpc-timeout", grpc_timeout),       Header("user-agent", "trellis"),
  };
  nghttp2_data_provider body{};
  body.read_callback = Session::ReadRequest;
  s.stream = nghttp2_submit_request(s.h2, nullptr, headers, std::size(headers), &body, nullptr);
  if (s.stream < 0) return {Code::kInternal, nghttp2_strerror(s.stream)};

  if (RpcStatus st = s.Run(deadline); !st.ok()) {
    if (st.code == Code::kDeadlineExceeded && !s.broken) {
      nghttp2_submit_rst_stream(s.h2, NGHTTP2_FLAG_NONE, s.stream, NGHTTP2_CANCEL);
      s.Flush(Clock::now() + std::chrono::milliseconds(100));
    }
    return st;
  }
  if (s.grpc_status < 0) {
    if (s.reset_code == NGHTTP2_REFUSED_STREAM) {
      return {Code::kUnavailable, "trellisd refused the call"};
    }
    if (s.http_status != 200) {
      return {FromHttpStatus(s.http_status),
              "trellisd answered HTTP " + std::to_string(s.http_status)};
    }
    return {Code::kInternal, "trellisd's answer has no grpc-status"};
  }
  if (s.grpc_status != 0) {
    Code code = s.grpc_status <= 16 ? static_cast<Code>(s.grpc_status) : Code::kUnknown;
    return {code, s.grpc_message};
  }
  std::string why;
  auto message = Unframe(s.body, &why);
  if (!message) return {Code::kInternal, "trellisd's answer: " + why};
  if (!response->ParseFromArray(message->data(), static_cast<int>(message->size()))) {
    return {Code::kInternal, "cannot decode trellisd's answer"};
  }
  return {};
}

}  // namespace trellis::rpc
