// A ConfigMap volume written exactly as the kubelet writes it (its
// AtomicWriter): the keys' contents live in a timestamped hidden directory,
// `..data` is a symlink to it, and each key is a symlink through `..data`.
// An update writes a new timestamped directory, points `..data_tmp` at it,
// renames `..data_tmp` over `..data` (the one atomic step a watcher sees),
// fixes the key symlinks and removes the old directory.
#ifndef TRELLIS_TESTS_SUPPORT_CONFIGMAP_H_
#define TRELLIS_TESTS_SUPPORT_CONFIGMAP_H_

#include <filesystem>
#include <map>
#include <string>

namespace trellis::test {

class ConfigMapDir {
 public:
  // `dir` is created if needed (mode 0755).
  explicit ConfigMapDir(std::filesystem::path dir);
  const std::filesystem::path& path() const { return dir_; }

  // Replaces the whole ConfigMap with `keys` (name -> content).
  void Write(const std::map<std::string, std::string>& keys);
  // The timestamped directory `..data` points at now ("" before any Write).
  std::string current() const { return current_; }

 private:
  std::filesystem::path dir_;
  std::string current_;
};

}  // namespace trellis::test

#endif  // TRELLIS_TESTS_SUPPORT_CONFIGMAP_H_
