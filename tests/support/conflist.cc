#include "conflist.h"

#include <algorithm>

#include "harness.h"

namespace trellis::test {

ConflistRunner::ConflistRunner(nlohmann::json conflist, std::vector<std::filesystem::path> dirs)
    : conflist_(std::move(conflist)) {
  for (const auto& d : dirs) cni_path_ += (cni_path_.empty() ? "" : ":") + d.string();
}

nlohmann::json ConflistRunner::PluginConfig(const nlohmann::json& plugin, const Attachment& a,
                                            const nlohmann::json& prev) const {
  nlohmann::json c = plugin;
  c["name"] = conflist_.at("name");
  c["cniVersion"] = conflist_.at("cniVersion");
  if (!prev.is_null()) c["prevResult"] = prev;
  if (plugin.contains("capabilities")) {
    nlohmann::json rc = nlohmann::json::object();
    for (const auto& [cap, on] : plugin["capabilities"].items()) {
      if (on.is_boolean() && on.get<bool>() && a.capability_args.contains(cap)) {
        rc[cap] = a.capability_args[cap];
      }
    }
    if (!rc.empty()) c["runtimeConfig"] = rc;
  }
  return c;
}

ChainResult ConflistRunner::Invoke(const std::string& command, const nlohmann::json& plugin,
                                   const Attachment& a, const nlohmann::json& prev) {
  std::string type = plugin.value("type", "");
  std::string bin;
  size_t i = 0;
  while (i <= cni_path_.size()) {
    size_t j = cni_path_.find(':', i);
    if (j == std::string::npos) j = cni_path_.size();
    auto cand = std::filesystem::path(cni_path_.substr(i, j - i)) / type;
    if (std::filesystem::exists(cand)) {
      bin = cand.string();
      break;
    }
    i = j + 1;
  }
  ChainResult r;
  if (bin.empty()) {
    r.code = 100;
    r.plugin = type;
    r.message = "plugin " + type + " not found in " + cni_path_;
    return r;
  }
  std::vector<std::string> argv = {bin};
  if (!netns_.empty()) argv = {"ip", "netns", "exec", netns_, bin};
  auto rr = Run(argv,
                {{"CNI_COMMAND", command}, {"CNI_CONTAINERID", a.container_id},
                 {"CNI_NETNS", a.netns}, {"CNI_IFNAME", a.ifname}, {"CNI_ARGS", a.cni_args},
                 {"CNI_PATH", cni_path_}},
                PluginConfig(plugin, a, prev).dump());
  if (rr.exit_code != 0) {
    auto j = rr.json();
    r.code = j.is_object() ? j.value("code", 999) : 999;
    r.plugin = type;
    r.message = j.is_object() ? j.value("msg", "") + " " + j.value("details", "") : rr.out + rr.err;
    return r;
  }
  if (command == "ADD") r.result = rr.json();
  return r;
}

ChainResult ConflistRunner::Add(const Attachment& a) {
  auto t0 = std::chrono::steady_clock::now();
  nlohmann::json prev;
  ChainResult out;
  for (const auto& p : conflist_.at("plugins")) {
    auto r = Invoke("ADD", p, a, prev);
    if (r.code != 0) {
      r.elapsed = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
      return r;
    }
    prev = r.result;
  }
  out.result = prev;
  {
    std::lock_guard lock(cache_mu_);
    cache_[a.container_id + "/" + a.ifname] = prev;
  }
  out.elapsed = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
  return out;
}

ChainResult ConflistRunner::Check(const Attachment& a, const std::vector<std::string>& skip) {
  auto t0 = std::chrono::steady_clock::now();
  nlohmann::json prev;
  {
    std::lock_guard lock(cache_mu_);
    prev = cache_[a.container_id + "/" + a.ifname];
  }
  for (const auto& p : conflist_.at("plugins")) {
    if (std::find(skip.begin(), skip.end(), p.value("type", "")) != skip.end()) continue;
    auto r = Invoke("CHECK", p, a, prev);
    if (r.code != 0) return r;
  }
  ChainResult out;
  out.elapsed = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
  return out;
}

ChainResult ConflistRunner::Del(const Attachment& a) {
  auto t0 = std::chrono::steady_clock::now();
  std::string key = a.container_id + "/" + a.ifname;
  nlohmann::json prev;
  {
    std::lock_guard lock(cache_mu_);
    if (auto it = cache_.find(key); it != cache_.end()) prev = it->second;
  }
  const auto& plugins = conflist_.at("plugins");
  ChainResult out;
  for (auto it = plugins.rbegin(); it != plugins.rend(); ++it) {
    auto r = Invoke("DEL", *it, a, prev);
    if (r.code != 0 && out.code == 0) out = r;  // libcni goes on and reports the first error
  }
  {
    std::lock_guard lock(cache_mu_);
    cache_.erase(key);
  }
  out.elapsed = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
  return out;
}

ChainResult ConflistRunner::Gc(const std::vector<Attachment>& valid) {
  nlohmann::json atts = nlohmann::json::array();
  for (const auto& a : valid) atts.push_back({{"containerID", a.container_id}, {"ifname", a.ifname}});
  for (const auto& p : conflist_["plugins"]) {
    nlohmann::json plugin = p;
    plugin["cni.dev/valid-attachments"] = atts;
    auto r = Invoke("GC", plugin, Attachment{}, nullptr);
    if (r.code != 0) return r;
  }
  return {};
}

}  // namespace trellis::test
