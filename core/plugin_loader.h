// Loading plugins: trust checks, the load handshake and ABI negotiation.
#ifndef TRELLIS_CORE_PLUGIN_LOADER_H_
#define TRELLIS_CORE_PLUGIN_LOADER_H_

#include <trellis/abi.h>

#include <sys/types.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"

namespace trellis {

// The host's own copy of a plugin's descriptor and ops tables: zero-extended to
// the host's layout, so fields a plugin built against an older minor lacks read
// as NULL. The copies point into the library; keep the LoadedPlugin alive.
struct PluginDescriptor {
  trellis_plugin_descriptor d{};
  trellis_ipam_ops ipam{};
  trellis_address_source_ops address_source{};
  trellis_qos_ops qos{};
  trellis_policy_ops policy{};
  trellis_eni_ops eni{};
  trellis_secgroup_ops secgroup{};
  bool has_ipam = false, has_address_source = false, has_qos = false, has_policy = false,
       has_eni = false, has_secgroup = false;

  std::string name, version, description;
  std::vector<std::string> Interfaces() const;
  std::string AbiVersion() const;
};

// Checks a descriptor a plugin returned, by the rules of docs/plugin-abi.md:
// same major, minor <= the host's, sizes sane, unknown tails zero, every
// interface version known. Never calls into the plugin.
StatusOr<PluginDescriptor> Negotiate(const trellis_plugin_descriptor* raw);

// Refuses a plugin file unless it, and every directory above it, is owned by
// root and not writable by group or others (a root-owned sticky directory such
// as /tmp is accepted above the plugin's own directory). Both the path as named
// (the directory holding the name decides who can swap it) and, for a symlink,
// the file it resolves to are checked. The error names the offending path and
// the reason.
Status CheckPluginTrust(const std::filesystem::path& file);

// The shared object of a plugin, kept loaded as long as this object lives.
class LoadedPlugin {
 public:
  // Loads with RTLD_NOW | RTLD_LOCAL after the trust check (mapping the
  // resolved file that was checked), finds the entry symbol and negotiates. Runs no plugin code but its static initialisers and
  // the entry function.
  static StatusOr<std::shared_ptr<LoadedPlugin>> Load(const std::filesystem::path& file);
  ~LoadedPlugin();

  const PluginDescriptor& descriptor() const { return desc_; }
  const std::filesystem::path& path() const { return path_; }
  // Identity of the file when it was loaded: a replaced file is a new plugin.
  bool SameFile(const std::filesystem::path& file) const;

 private:
  LoadedPlugin() = default;
  struct Library;
  std::unique_ptr<Library> lib_;
  std::filesystem::path path_;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
  int64_t mtime_ns_ = 0;
  PluginDescriptor desc_;
};

// <plugin_dir>/<name>.so
std::filesystem::path PluginPath(const std::filesystem::path& plugin_dir, const std::string& name);

}  // namespace trellis

#endif  // TRELLIS_CORE_PLUGIN_LOADER_H_
