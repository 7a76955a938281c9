#include "core/config_watcher.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <cstring>

namespace trellis {

ConfigWatcher::ConfigWatcher(std::filesystem::path path, std::function<void()> on_change,
                             std::chrono::milliseconds debounce)
    : path_(std::move(path)), on_change_(std::move(on_change)), debounce_(debounce) {}

ConfigWatcher::~ConfigWatcher() { Stop(); }

Status ConfigWatcher::Start() {
  inotify_fd_ = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  if (inotify_fd_ < 0) return absl::InternalError(std::string("inotify_init1: ") + std::strerror(errno));
  stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  std::error_code ec;
  std::filesystem::path dir = path_;
  if (!std::filesystem::is_directory(path_, ec)) {
    dir = path_.parent_path().empty() ? "." : path_.parent_path();
    file_filter_ = path_.filename().string();
  }
  constexpr uint32_t kMask = IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM | IN_CLOSE_WRITE |
                             IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF;
  if (inotify_add_watch(inotify_fd_, dir.c_str(), kMask) < 0) {
    return absl::InternalError("watch " + dir.string() + ": " + std::strerror(errno));
  }
  thread_ = std::thread([this] { Loop(); });
  return absl::OkStatus();
}

void ConfigWatcher::Stop() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    (void)!write(stop_fd_, &one, sizeof one);
    thread_.join();
  }
  if (inotify_fd_ >= 0) close(inotify_fd_);
  if (stop_fd_ >= 0) close(stop_fd_);
  inotify_fd_ = stop_fd_ = -1;
}

void ConfigWatcher::Loop() {
  alignas(struct inotify_event) char buf[8192];
  bool pending = false;
  while (true) {
    pollfd fds[2] = {{inotify_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    int timeout = pending ? static_cast<int>(debounce_.count()) : -1;
    int n = poll(fds, 2, timeout);
    if (n < 0 && errno == EINTR) continue;
    if (fds[1].revents & POLLIN) return;
    if (n == 0) {  // quiet for `debounce_` after a burst
      pending = false;
      on_change_();
      continue;
    }
    if (fds[0].revents & POLLIN) {
      ssize_t len;
      while ((len = read(inotify_fd_, buf, sizeof buf)) > 0) {
        for (char* p = buf; p < buf + len;) {
          auto* ev = reinterpret_cast<struct inotify_event*>(p);
          bool relevant = file_filter_.empty() || (ev->len > 0 && file_filter_ == ev->name) ||
                          (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_Q_OVERFLOW));
          if (relevant) pending = true;
          p += sizeof(struct inotify_event) + ev->len;
        }
      }
    }
  }
}

}  // namespace trellis
