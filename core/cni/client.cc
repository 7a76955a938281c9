#include "core/cni/client.h"

#include <fcntl.h>
#include <grpcpp/create_channel_posix.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace trellis {

std::shared_ptr<grpc::Channel> ConnectUnix(const std::string& socket_path,
                                           std::chrono::milliseconds timeout, std::string* error,
                                           ConnectError* kind) {
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
  *kind = ConnectError::kNone;
  return grpc::CreateInsecureChannelFromFd("trellisd", fd);
}

}  // namespace trellis
