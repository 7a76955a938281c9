#include "core/rpc/server.h"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <filesystem>

#include "core/rpc/h2.h"

namespace trellis::rpc {

namespace {

using h2::Header;

// One connection: its HTTP/2 session and the streams (calls) on it.
struct Connection {
  struct Stream {
    std::string path, method, content_type, encoding;
    std::string body;  // the request, framed
    bool too_big = false;
    // The answer, kept until the stream closes.
    std::string response;  // framed
    size_t sent = 0;
  };

  using Handlers = std::map<std::string, Server::Handler, std::less<>>;
  Connection(int fd, int stop_fd, const Handlers* handlers)
      : fd(fd), stop_fd(stop_fd), handlers(handlers) {}

  int fd;
  int stop_fd;
  const Handlers* handlers;
  nghttp2_session* h2 = nullptr;
  std::map<int32_t, Stream> streams;
  std::deque<int32_t> ready;  // streams whose request is complete

  ~Connection() {
    if (h2 != nullptr) nghttp2_session_del(h2);
  }

  static int OnBeginHeaders(nghttp2_session*, const nghttp2_frame* f, void* user) {
    auto* c = static_cast<Connection*>(user);
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
      c->streams[f->hd.stream_id];
    }
    return 0;
  }

  static int OnHeader(nghttp2_session*, const nghttp2_frame* f, const uint8_t* name, size_t namelen,
                      const uint8_t* value, size_t valuelen, uint8_t, void* user) {
    auto* c = static_cast<Connection*>(user);
    auto it = c->streams.find(f->hd.stream_id);
    if (it == c->streams.end()) return 0;
    std::string_view n(reinterpret_cast<const char*>(name), namelen);
    std::string v(reinterpret_cast<const char*>(value), valuelen);
    if (n == ":path") it->second.path = std::move(v);
    else if (n == ":method") it->second.method = std::move(v);
    else if (n == "content-type") it->second.content_type = std::move(v);
    else if (n == "grpc-encoding") it->second.encoding = std::move(v);
    return 0;
  }

  static int OnData(nghttp2_session*, uint8_t, int32_t id, const uint8_t* data, size_t len,
                    void* user) {
    auto* c = static_cast<Connection*>(user);
    auto it = c->streams.find(id);
    if (it == c->streams.end()) return 0;
    Stream& s = it->second;
    if (s.body.size() + len > kMaxMessageBytes + 5) {
      s.too_big = true;  // answered once the request ends; nothing more is kept
    } else {
      s.body.append(reinterpret_cast<const char*>(data), len);
    }
    return 0;
  }

  static int OnFrame(nghttp2_session*, const nghttp2_frame* f, void* user) {
    auto* c = static_cast<Connection*>(user);
    if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
        (f->hd.flags & NGHTTP2_FLAG_END_STREAM) && c->streams.contains(f->hd.stream_id)) {
      c->ready.push_back(f->hd.stream_id);
    }
    return 0;
  }

  static int OnClose(nghttp2_session*, int32_t id, uint32_t, void* user) {
    static_cast<Connection*>(user)->streams.erase(id);
    return 0;
  }

  static ssize_t ReadResponse(nghttp2_session* h2, int32_t id, uint8_t* buf, size_t length,
                              uint32_t* flags, nghttp2_data_source*, void* user) {
    auto* c = static_cast<Connection*>(user);
    auto it = c->streams.find(id);
    if (it == c->streams.end()) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    Stream& s = it->second;
    size_t n = std::min(length, s.response.size() - s.sent);
    std::memcpy(buf, s.response.data() + s.sent, n);
    s.sent += n;
    if (s.sent == s.response.size()) {
      // The trailers end the stream, not the data.
      *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
      nghttp2_nv trailers[] = {Header("grpc-status", "0")};
      if (nghttp2_submit_trailer(h2, id, trailers, 1) != 0) {
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
      }
    }
    return static_cast<ssize_t>(n);
  }

  bool Start() {
    nghttp2_session_callbacks* cb;
    if (nghttp2_session_callbacks_new(&cb) != 0) return false;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, OnBeginHeaders);
    nghttp2_session_callbacks_set_on_header_callback(cb, OnHeader);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, OnData);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, OnFrame);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, OnClose);
    int rv = nghttp2_session_server_new(&h2, cb, this);
    nghttp2_session_callbacks_del(cb);
    if (rv != 0) return false;
    // Windows large enough for the largest message: no WINDOW_UPDATE round
    // trips within a call.
    constexpr int32_t kWindow = kMaxMessageBytes + 5;
    nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100},
                                         {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, kWindow}};
    if (nghttp2_submit_settings(h2, NGHTTP2_FLAG_NONE, settings, 2) != 0) return false;
    return nghttp2_session_set_local_window_size(h2, NGHTTP2_FLAG_NONE, 0, kWindow) == 0;
  }

  // Runs the call of stream `id` and queues its answer.
  void Answer(int32_t id) {
    auto it = streams.find(id);
    if (it == streams.end()) return;  // reset by the client meanwhile
    Stream& s = it->second;
    if (s.method != "POST" || !s.content_type.starts_with("application/grpc")) {
      nghttp2_nv h[] = {Header(":status", "415")};
      nghttp2_submit_response(h2, id, h, 1, nullptr);
      return;
    }
    RpcStatus st;
    std::string out;
    std::string_view path = s.path;
    if (!path.starts_with(kServicePath)) {
      st = {Code::kUnimplemented, "unknown service in " + s.path};
    } else if (auto h = handlers->find(path.substr(kServicePath.size())); h == handlers->end()) {
      st = {Code::kUnimplemented, "unknown method " + s.path};
    } else if (s.too_big) {
      st = {Code::kResourceExhausted,
            "request larger than " + std::to_string(kMaxMessageBytes) + " bytes"};
    } else if (!s.encoding.empty() && s.encoding != "identity" && s.body.size() > 0 &&
               s.body[0] != 0) {
      st = {Code::kUnimplemented, "compression " + s.encoding + " is not supported"};
    } else {
      std::string why;
      auto message = Unframe(s.body, &why);
      st = message ? h->second(*message, &out)
                   : RpcStatus{Code::kInvalidArgument, "request: " + why};
    }
    std::string().swap(s.body);
    static constexpr std::string_view kType = "application/grpc";
    if (st.ok()) {
      s.response = Frame(out);
      nghttp2_nv h[] = {Header(":status", "200"), Header("content-type", kType)};
      nghttp2_data_provider p{};
      p.read_callback = ReadResponse;
      nghttp2_submit_response(h2, id, h, 2, &p);
    } else {
      // Trailers-only: the status in the one HEADERS frame that ends the stream.
      // nghttp2 copies the header values.
      const std::string status = std::to_string(static_cast<int>(st.code));
      const std::string message = PercentEncode(st.message);
      nghttp2_nv h[] = {Header(":status", "200"), Header("content-type", kType),
                        Header("grpc-status", status), Header("grpc-message", message)};
      nghttp2_submit_response(h2, id, h, 4, nullptr);
    }
  }

  // Writes everything queued; false when the peer is gone or stopped
  // reading for 10 s.
  bool Flush() {
    return rpc::h2::Flush(h2, fd, std::chrono::steady_clock::now() + std::chrono::seconds(10)) ==
           rpc::h2::FlushResult::kOk;
  }

  void Run(std::chrono::milliseconds idle_timeout) {
    uint8_t buf[16384];
    while (true) {
      while (!ready.empty()) {
        int32_t id = ready.front();
        ready.pop_front();
        Answer(id);
      }
      if (!Flush()) return;
      if (!nghttp2_session_want_read(h2) && !nghttp2_session_want_write(h2)) return;
      pollfd p[2] = {{fd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
      int n = poll(p, 2, static_cast<int>(idle_timeout.count()));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0 || (p[1].revents & POLLIN)) return;  // idle, or the server stops
      ssize_t r = recv(fd, buf, sizeof buf, 0);
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (r <= 0) return;
      if (nghttp2_session_mem_recv(h2, buf, static_cast<size_t>(r)) < 0) {
        Flush();  // GOAWAY, where nghttp2 queued one
        return;
      }
    }
  }
};

}  // namespace

Server::Server(Options o) : o_(std::move(o)) {}

Server::~Server() { Stop(); }

Status Server::Start() {
  const std::string& path = o_.socket_path;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    return absl::InvalidArgumentError("socket path " + path + " is too long");
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  std::error_code ec;
  auto dir = std::filesystem::path(path).parent_path();
  if (!dir.empty()) {
    std::filesystem::create_directories(dir, ec);
    if (ec) return absl::UnavailableError("cannot create " + dir.string() + ": " + ec.message());
  }
  // A socket file with a live listener behind it belongs to another daemon.
  if (std::filesystem::exists(path, ec)) {
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool live = connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    close(probe);
    if (live) return absl::AlreadyExistsError("another trellisd is serving " + path);
    std::filesystem::remove(path, ec);
  }
  listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (listen_fd_ < 0) return absl::InternalError(std::string("socket: ") + std::strerror(errno));
  mode_t old = umask(0177);  // the socket is born 0600: no window where others may connect
  int rc = bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  umask(old);
  if (rc != 0) return absl::UnavailableError("bind " + path + ": " + std::strerror(errno));
  chmod(path.c_str(), 0600);
  if (listen(listen_fd_, 512) != 0) {
    return absl::UnavailableError("listen " + path + ": " + std::strerror(errno));
  }
  stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stop_fd_ < 0) return absl::InternalError(std::string("eventfd: ") + std::strerror(errno));
  std::lock_guard lock(mu_);
  threads_.emplace_back([this] { Loop(); });
  return absl::OkStatus();
}

void Server::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_ || threads_.empty()) {
      stopping_ = true;
    } else {
      stopping_ = true;
      uint64_t one = 1;
      (void)!write(stop_fd_, &one, sizeof one);
    }
  }
  cv_.notify_all();
  // No thread starts once stopping_ is set, so the list is final.
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  if (listen_fd_ >= 0) {
    close(listen_fd_);
    listen_fd_ = -1;
    unlink(o_.socket_path.c_str());
  }
  if (stop_fd_ >= 0) {
    close(stop_fd_);
    stop_fd_ = -1;
  }
}

int Server::Accept() {
  while (true) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      spdlog::error("API accept: poll: {}", std::strerror(errno));
      return -1;
    }
    if (fds[1].revents & POLLIN) return -1;
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) continue;  // EAGAIN: the peer gave up; ECONNABORTED and the like
    ucred cred{};
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.uid != 0) {
      refused_.fetch_add(1);
      spdlog::warn("API: refused a connection from uid {} pid {}: only root may use {}", cred.uid,
                   cred.pid, o_.socket_path);
      close(fd);
      continue;
    }
    return fd;
  }
}

void Server::Loop() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    if (leader_) {
      ++idle_;
      cv_.wait(lock, [&] { return stopping_ || !leader_; });
      --idle_;
      continue;
    }
    leader_ = true;
    lock.unlock();
    int fd = Accept();
    lock.lock();
    leader_ = false;
    if (fd < 0) break;
    if (!stopping_) {
      // Someone else waits for the next connection while this one is served.
      if (idle_ > 0) {
        cv_.notify_one();
      } else if (static_cast<int>(threads_.size()) < o_.max_threads) {
        threads_.emplace_back([this] { Loop(); });
      }
    }
    lock.unlock();
    {
      Connection c(fd, stop_fd_, &handlers_);
      if (c.Start()) c.Run(o_.idle_timeout);
    }
    close(fd);
    lock.lock();
  }
}

}  // namespace trellis::rpc
