#include "configmap.h"

#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>

namespace trellis::test {

namespace fs = std::filesystem;

ConfigMapDir::ConfigMapDir(fs::path dir) : dir_(std::move(dir)) {
  fs::create_directories(dir_);
  chmod(dir_.c_str(), 0755);
}

void ConfigMapDir::Write(const std::map<std::string, std::string>& keys) {
  // The kubelet names it ..<UTC time as 2006_01_02_15_04_05.NNNNNNNNN>.
  auto now = std::chrono::system_clock::now();
  std::time_t secs = std::chrono::system_clock::to_time_t(now);
  long long nanos =
      std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count() %
      1000000000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char name[64];
  fs::path ts;
  do {  // two writes within one clock tick still get distinct directories
    std::snprintf(name, sizeof name, "..%04d_%02d_%02d_%02d_%02d_%02d.%09lld", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, nanos++ % 1000000000);
    ts = dir_ / name;
  } while (fs::exists(ts));
  fs::create_directory(ts);
  chmod(ts.c_str(), 0755);
  for (const auto& [key, content] : keys) {
    fs::path f = ts / key;
    std::ofstream(f, std::ios::binary) << content;
    chmod(f.c_str(), 0644);
  }
  fs::path tmp = dir_ / "..data_tmp";
  std::error_code ec;
  fs::remove(tmp, ec);
  fs::create_symlink(name, tmp);
  fs::rename(tmp, dir_ / "..data");  // rename(2): the atomic swap
  for (const auto& [key, content] : keys) {
    fs::path link = dir_ / key;
    if (!fs::is_symlink(fs::symlink_status(link))) fs::create_symlink(fs::path("..data") / key, link);
  }
  for (const auto& entry : fs::directory_iterator(dir_)) {
    std::string n = entry.path().filename().string();
    if (n.starts_with(".")) continue;
    if (!keys.contains(n)) fs::remove(entry.path());
  }
  if (!current_.empty()) fs::remove_all(dir_ / current_);
  current_ = name;
}

}  // namespace trellis::test
