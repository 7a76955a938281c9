#include "core/rpc/h2.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <string>

namespace trellis::rpc::h2 {

FlushResult Flush(nghttp2_session* session, int fd, std::chrono::steady_clock::time_point deadline) {
  std::string out;
  while (true) {
    const uint8_t* data;
    ssize_t n = nghttp2_session_mem_send(session, &data);
    if (n < 0) {
      errno = 0;
      return FlushResult::kFailed;
    }
    if (n == 0) break;
    out.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
  }
  for (size_t off = 0; off < out.size();) {
    ssize_t n = send(fd, out.data() + off, out.size() - off, MSG_NOSIGNAL);
    if (n >= 0) {
      off += static_cast<size_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return FlushResult::kFailed;
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd p{fd, POLLOUT, 0};
    if (left.count() <= 0 || poll(&p, 1, static_cast<int>(left.count())) == 0) {
      return FlushResult::kTimedOut;
    }
  }
  return FlushResult::kOk;
}

}  // namespace trellis::rpc::h2
