#include "core/plugin_loader.h"

#define BOOST_DLL_USE_STD_FS
#include <boost/dll/shared_library.hpp>
#include <dlfcn.h>
#include <sys/stat.h>

#include <cstring>
#include <sstream>

namespace trellis {
namespace {

std::string Octal(mode_t m) {
  std::ostringstream s;
  s << "0" << std::oct << (m & 07777);
  return s.str();
}

// Copies a versioned struct written by the plugin into the host's layout.
// `raw_size` is the plugin's struct_size.
template <class T>
Status CopyVersioned(const void* raw, uint32_t raw_size, size_t min_size, T* out,
                     const std::string& what) {
  if (raw_size < min_size) {
    return absl::FailedPreconditionError(what + " is " + std::to_string(raw_size) +
                                         " bytes, smaller than the " + std::to_string(min_size) +
                                         " bytes of ABI 1.0");
  }
  // A size this far beyond any layout is garbage (not a trellis structure,
  // or a corrupt one): reading its "tail" could walk off the plugin's memory.
  constexpr size_t kMaxPlausible = 4096;
  if (raw_size > kMaxPlausible) {
    return absl::FailedPreconditionError(what + " claims to be " + std::to_string(raw_size) +
                                         " bytes, more than any trellis structure (" +
                                         std::to_string(kMaxPlausible) + "): it is corrupt");
  }
  if (raw_size > sizeof(T)) {
    const auto* tail = static_cast<const unsigned char*>(raw) + sizeof(T);
    for (size_t i = 0; i < raw_size - sizeof(T); ++i) {
      if (tail[i] != 0) {
        return absl::FailedPreconditionError(
            what + " is " + std::to_string(raw_size) + " bytes, larger than the " +
            std::to_string(sizeof(T)) + " this host knows, and its unknown tail is not zero: " +
            "the plugin uses features this host lacks; upgrade trellisd");
      }
    }
  }
  std::memset(out, 0, sizeof(T));
  std::memcpy(out, raw, std::min<size_t>(raw_size, sizeof(T)));
  return absl::OkStatus();
}

template <class Ops>
Status CopyOps(const Ops* raw, uint32_t host_version, Ops* out, bool* has, const char* iface) {
  *has = false;
  if (raw == nullptr) return absl::OkStatus();
  const std::string what = std::string("its ") + iface + " ops table";
  TRELLIS_RETURN_IF_ERROR(
      CopyVersioned(raw, raw->struct_size, offsetof(Ops, version) + sizeof(uint32_t), out, what));
  if (out->version == 0 || out->version > host_version) {
    return absl::FailedPreconditionError(std::string("its ") + iface + " interface is version " +
                                         std::to_string(out->version) +
                                         ", this host knows versions 1 to " +
                                         std::to_string(host_version));
  }
  *has = true;
  return absl::OkStatus();
}

}  // namespace

std::vector<std::string> PluginDescriptor::Interfaces() const {
  std::vector<std::string> out;
  if (has_ipam) out.push_back("ipam");
  if (has_address_source) out.push_back("address_source");
  if (has_qos) out.push_back("qos");
  if (has_policy) out.push_back("policy");
  if (has_eni) out.push_back("eni");
  if (has_secgroup) out.push_back("secgroup");
  return out;
}

std::string PluginDescriptor::AbiVersion() const {
  return std::to_string(d.abi_major) + "." + std::to_string(d.abi_minor);
}

StatusOr<PluginDescriptor> Negotiate(const trellis_plugin_descriptor* raw) {
  if (raw == nullptr) return absl::FailedPreconditionError("its entry point returned NULL");
  const std::string host_abi =
      std::to_string(TRELLIS_ABI_MAJOR) + "." + std::to_string(TRELLIS_ABI_MINOR);
  if (raw->struct_size < offsetof(trellis_plugin_descriptor, abi_minor) + sizeof(uint16_t)) {
    return absl::FailedPreconditionError("its descriptor is " + std::to_string(raw->struct_size) +
                                         " bytes: not a trellis plugin descriptor");
  }
  if (raw->abi_major != TRELLIS_ABI_MAJOR) {
    return absl::FailedPreconditionError(
        "it was built for plugin ABI " + std::to_string(raw->abi_major) + "." +
        std::to_string(raw->abi_minor) + ", this host speaks ABI " + host_abi +
        " (the major versions must match); rebuild it against this SDK");
  }
  if (raw->abi_minor > TRELLIS_ABI_MINOR) {
    return absl::FailedPreconditionError(
        "it was built for plugin ABI " + std::to_string(raw->abi_major) + "." +
        std::to_string(raw->abi_minor) + ", newer than this host's " + host_abi +
        "; upgrade trellisd or rebuild the plugin against SDK " + host_abi);
  }
  PluginDescriptor out;
  TRELLIS_RETURN_IF_ERROR(CopyVersioned(raw, raw->struct_size,
                                        offsetof(trellis_plugin_descriptor, reserved), &out.d,
                                        "its descriptor"));
  const auto& d = out.d;
  if (d.name == nullptr || *d.name == '\0') {
    return absl::FailedPreconditionError("its descriptor has no name");
  }
  for (const auto& [op, present] : {std::pair<const char*, bool>{"validate", d.validate != nullptr},
                                    {"create", d.create != nullptr},
                                    {"destroy", d.destroy != nullptr}}) {
    if (!present) {
      return absl::FailedPreconditionError(std::string("its descriptor has no ") + op +
                                           " op (validate, create and destroy are mandatory)");
    }
  }
  out.name = d.name;
  out.version = d.version != nullptr ? d.version : "";
  out.description = d.description != nullptr ? d.description : "";
  TRELLIS_RETURN_IF_ERROR(CopyOps(d.ipam, TRELLIS_IPAM_VERSION, &out.ipam, &out.has_ipam, "ipam"));
  TRELLIS_RETURN_IF_ERROR(CopyOps(d.address_source, TRELLIS_ADDRESS_SOURCE_VERSION,
                                  &out.address_source, &out.has_address_source, "address_source"));
  TRELLIS_RETURN_IF_ERROR(CopyOps(d.qos, TRELLIS_QOS_VERSION, &out.qos, &out.has_qos, "qos"));
  TRELLIS_RETURN_IF_ERROR(
      CopyOps(d.policy, TRELLIS_POLICY_VERSION, &out.policy, &out.has_policy, "policy"));
  TRELLIS_RETURN_IF_ERROR(CopyOps(d.eni, TRELLIS_ENI_VERSION, &out.eni, &out.has_eni, "eni"));
  TRELLIS_RETURN_IF_ERROR(CopyOps(d.secgroup, TRELLIS_SECGROUP_VERSION, &out.secgroup,
                                  &out.has_secgroup, "secgroup"));
  // An interface is provided only if its mandatory ops are.
  auto mandatory = [](bool has, const char* iface, const char* mandatory,
                      std::initializer_list<std::pair<const char*, const void*>> ops) -> Status {
    if (!has) return absl::OkStatus();
    for (const auto& [op, fn] : ops) {
      if (fn == nullptr) {
        return absl::FailedPreconditionError(std::string("its ") + iface + " interface has no " +
                                             op + " op (" + mandatory + ")");
      }
    }
    return absl::OkStatus();
  };
  TRELLIS_RETURN_IF_ERROR(mandatory(out.has_ipam, "ipam", "allocate and release are mandatory",
                                    {{"allocate", reinterpret_cast<const void*>(out.ipam.allocate)},
                                     {"release", reinterpret_cast<const void*>(out.ipam.release)}}));
  TRELLIS_RETURN_IF_ERROR(mandatory(
      out.has_address_source, "address_source", "acquire and release are mandatory",
      {{"acquire", reinterpret_cast<const void*>(out.address_source.acquire)},
       {"release", reinterpret_cast<const void*>(out.address_source.release)}}));
  TRELLIS_RETURN_IF_ERROR(mandatory(out.has_qos, "qos", "apply and remove are mandatory",
                                    {{"apply", reinterpret_cast<const void*>(out.qos.apply)},
                                     {"remove", reinterpret_cast<const void*>(out.qos.remove)}}));
  TRELLIS_RETURN_IF_ERROR(
      mandatory(out.has_policy, "policy", "pod_upsert and pod_remove are mandatory",
                {{"pod_upsert", reinterpret_cast<const void*>(out.policy.pod_upsert)},
                 {"pod_remove", reinterpret_cast<const void*>(out.policy.pod_remove)}}));
  TRELLIS_RETURN_IF_ERROR(
      mandatory(out.has_eni, "eni", "pool_status is mandatory",
                {{"pool_status", reinterpret_cast<const void*>(out.eni.pool_status)}}));
  TRELLIS_RETURN_IF_ERROR(
      mandatory(out.has_secgroup, "secgroup", "reconcile is mandatory",
                {{"reconcile", reinterpret_cast<const void*>(out.secgroup.reconcile)}}));
  return out;
}

namespace {

// Checks `dir` and every directory above it: owned by root and not writable
// by group or others. A root-owned sticky directory (/tmp) is accepted above
// the first one: others may create entries there but cannot rename or remove
// ours. `suffix` is appended to every refusal.
Status CheckDirectoryChain(const std::filesystem::path& first, const std::string& suffix) {
  struct stat st {};
  bool own_dir = true;
  for (auto dir = first;; dir = dir.parent_path()) {
    if (stat(dir.c_str(), &st) != 0) {
      return absl::NotFoundError(dir.string() + ": " + std::strerror(errno) + suffix);
    }
    if (st.st_uid != 0) {
      return absl::PermissionDeniedError("directory " + dir.string() + " is owned by uid " +
                                         std::to_string(st.st_uid) + ", not root" + suffix);
    }
    bool sticky_ok = !own_dir && (st.st_mode & S_ISVTX) != 0;
    if ((st.st_mode & 022) != 0 && !sticky_ok) {
      return absl::PermissionDeniedError("directory " + dir.string() +
                                         " is writable by group or others (mode " +
                                         Octal(st.st_mode) + "); fix with chmod go-w" + suffix);
    }
    own_dir = false;
    if (dir == dir.root_path() || dir.empty()) break;
  }
  return absl::OkStatus();
}

}  // namespace

Status CheckPluginTrust(const std::filesystem::path& file) {
  namespace fs = std::filesystem;
  std::error_code ec;
  // The name as given: whoever can write the directory holding it can swap
  // the file (or the symlink) between this check and the load.
  const fs::path named = fs::absolute(file, ec).lexically_normal();
  struct stat st {};
  if (ec || lstat(named.c_str(), &st) != 0) {
    return absl::NotFoundError(file.string() + ": " + std::strerror(errno));
  }
  TRELLIS_RETURN_IF_ERROR(CheckDirectoryChain(named.parent_path(), ""));
  // What it resolves to: the file that is actually mapped.
  const fs::path real = fs::canonical(named, ec);
  if (ec) return absl::NotFoundError(file.string() + ": " + ec.message());
  const std::string suffix =
      real == named ? "" : " (reached through the symlink " + named.string() + " -> " +
                               real.string() + ")";
  if (stat(real.c_str(), &st) != 0) {
    return absl::NotFoundError(real.string() + ": " + std::strerror(errno) + suffix);
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::PermissionDeniedError(real.string() + " is not a regular file" + suffix);
  }
  if (st.st_uid != 0) {
    return absl::PermissionDeniedError(real.string() + " is owned by uid " +
                                       std::to_string(st.st_uid) + ", not root" + suffix);
  }
  if ((st.st_mode & 022) != 0) {
    return absl::PermissionDeniedError(real.string() + " is writable by group or others (mode " +
                                       Octal(st.st_mode) + "); fix with chmod go-w" + suffix);
  }
  if (real != named) TRELLIS_RETURN_IF_ERROR(CheckDirectoryChain(real.parent_path(), suffix));
  return absl::OkStatus();
}

struct LoadedPlugin::Library {
  boost::dll::shared_library lib;
};

StatusOr<std::shared_ptr<LoadedPlugin>> LoadedPlugin::Load(const std::filesystem::path& file) {
  const std::string where = "plugin " + file.string();
  Status trust = CheckPluginTrust(file);
  if (!trust.ok()) return Status(trust.code(), where + " refused: " + std::string(trust.message()));
  // Map the file that was checked, not whatever the name points to by now.
  std::error_code fs_ec;
  const std::filesystem::path real = std::filesystem::canonical(file, fs_ec);
  struct stat st {};
  if (fs_ec || stat(real.c_str(), &st) != 0) {
    return absl::NotFoundError(where + ": it vanished while being loaded");
  }
  std::shared_ptr<LoadedPlugin> p(new LoadedPlugin());
  p->path_ = file;
  p->dev_ = st.st_dev;
  p->ino_ = st.st_ino;
  p->mtime_ns_ = int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  p->lib_ = std::make_unique<Library>();
  boost::dll::fs::error_code ec;
  p->lib_->lib.load(real, boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local, ec);
  if (ec) {
    const char* why = dlerror();
    return absl::FailedPreconditionError(where + " refused: cannot load it: " +
                                         (why != nullptr ? std::string(why) : ec.message()));
  }
  if (!p->lib_->lib.has(TRELLIS_PLUGIN_ENTRY_SYMBOL)) {
    return absl::FailedPreconditionError(where + " refused: it exports no " +
                                         std::string(TRELLIS_PLUGIN_ENTRY_SYMBOL) +
                                         " symbol (is it a trellis plugin? was it built with "
                                         "TRELLIS_PLUGIN()?)");
  }
  auto& entry = p->lib_->lib.get<const trellis_plugin_descriptor*()>(TRELLIS_PLUGIN_ENTRY_SYMBOL);
  auto desc = Negotiate(entry());
  if (!desc.ok()) {
    return Status(desc.status().code(), where + " refused: " + std::string(desc.status().message()));
  }
  p->desc_ = *std::move(desc);
  return p;
}

LoadedPlugin::~LoadedPlugin() = default;

bool LoadedPlugin::SameFile(const std::filesystem::path& file) const {
  struct stat st {};
  if (stat(file.c_str(), &st) != 0) return false;
  return st.st_dev == dev_ && st.st_ino == ino_ &&
         int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec == mtime_ns_;
}

std::filesystem::path PluginPath(const std::filesystem::path& plugin_dir, const std::string& name) {
  return plugin_dir / (name + ".so");
}

}  // namespace trellis
