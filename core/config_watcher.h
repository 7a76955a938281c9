// Watches the node config path and calls back when it may have changed.
//
// Kubernetes updates a mounted ConfigMap by writing a new timestamped
// directory and swapping the `..data` symlink with rename(2): the files the
// keys point to never change in place. So the watch is on the directory
// (IN_MOVED_TO / IN_CREATE / IN_DELETE of `..data` and keys), never on a file.
// For a plain file the parent directory is watched, filtered by name, which
// also catches editors that replace the file by rename.
#ifndef TRELLIS_CORE_CONFIG_WATCHER_H_
#define TRELLIS_CORE_CONFIG_WATCHER_H_

#include <chrono>
#include <filesystem>
#include <functional>
#include <thread>

#include "core/status.h"

namespace trellis {

class ConfigWatcher {
 public:
  // `on_change` runs on the watcher's thread, once per burst of events
  // (events closer than `debounce` are merged).
  ConfigWatcher(std::filesystem::path path, std::function<void()> on_change,
                std::chrono::milliseconds debounce = std::chrono::milliseconds(100));
  ~ConfigWatcher();

  Status Start();
  void Stop();

 private:
  void Loop();

  std::filesystem::path path_;
  std::function<void()> on_change_;
  std::chrono::milliseconds debounce_;
  int inotify_fd_ = -1;
  int stop_fd_ = -1;
  std::string file_filter_;  // for a file: its name in the watched parent
  std::thread thread_;
};

}  // namespace trellis

#endif  // TRELLIS_CORE_CONFIG_WATCHER_H_
