#include "core/api_server.h"

#include <grpcpp/server_builder.h>
#include <grpcpp/server_posix.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

namespace trellis {

ApiServer::ApiServer(std::string socket_path, v1::Trellis::Service* service)
    : path_(std::move(socket_path)), service_(service) {}

ApiServer::~ApiServer() { Stop(); }

Status ApiServer::Start() {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path_.size() >= sizeof addr.sun_path) {
    return absl::InvalidArgumentError("socket path " + path_ + " is too long");
  }
  std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
  std::error_code ec;
  auto dir = std::filesystem::path(path_).parent_path();
  if (!dir.empty()) {
    std::filesystem::create_directories(dir, ec);
    if (ec) return absl::UnavailableError("cannot create " + dir.string() + ": " + ec.message());
  }
  // A socket file with a live listener behind it belongs to another daemon.
  if (std::filesystem::exists(path_, ec)) {
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool live = connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    close(probe);
    if (live) return absl::AlreadyExistsError("another trellisd is serving " + path_);
    std::filesystem::remove(path_, ec);
  }
  listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (listen_fd_ < 0) return absl::InternalError(std::string("socket: ") + std::strerror(errno));
  mode_t old = umask(0177);  // the socket is born 0600: no window where others may connect
  int rc = bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  umask(old);
  if (rc != 0) return absl::UnavailableError("bind " + path_ + ": " + std::strerror(errno));
  chmod(path_.c_str(), 0600);
  if (listen(listen_fd_, 512) != 0) {
    return absl::UnavailableError("listen " + path_ + ": " + std::strerror(errno));
  }
  grpc::ServerBuilder builder;
  builder.RegisterService(service_);
  builder.SetMaxReceiveMessageSize(16 << 20);
  server_ = builder.BuildAndStart();
  if (!server_) return absl::InternalError("cannot start the gRPC server");
  stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  accept_thread_ = std::thread([this] { AcceptLoop(); });
  return absl::OkStatus();
}

void ApiServer::AcceptLoop() {
  while (true) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      spdlog::error("API accept loop: poll: {}", std::strerror(errno));
      return;
    }
    if (fds[1].revents & POLLIN) return;
    while (true) {
      int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) break;
      ucred cred{};
      socklen_t len = sizeof cred;
      if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.uid != 0) {
        refused_.fetch_add(1);
        spdlog::warn("API: refused a connection from uid {} pid {}: only root may use {}",
                     cred.uid, cred.pid, path_);
        close(fd);
        continue;
      }
      grpc::AddInsecureChannelFromFd(server_.get(), fd);
    }
  }
}

void ApiServer::Stop() {
  if (accept_thread_.joinable()) {
    uint64_t one = 1;
    (void)!write(stop_fd_, &one, sizeof one);
    accept_thread_.join();
  }
  if (server_) {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    server_.reset();
  }
  if (listen_fd_ >= 0) {
    close(listen_fd_);
    listen_fd_ = -1;
    unlink(path_.c_str());
  }
  if (stop_fd_ >= 0) {
    close(stop_fd_);
    stop_fd_ = -1;
  }
}

}  // namespace trellis
