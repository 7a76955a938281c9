// The plugin loader against every fixture: the load handshake, negotiation
// and trust checks, each refusal asserted word for word (an operator reads
// these messages in `trellisctl modules` and `trellisctl plugin inspect`).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "core/plugin_loader.h"
#include "harness.h"

namespace trellis {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

fs::path Fixture(const std::string& name) {
  return fs::path(TRELLIS_TEST_FIXTURE_DIR) / ("fx_" + name + ".so");
}

// A root-owned 0755 plugin directory inside a fresh 0700 temp dir.
class Loader : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = tmp_ / "plugins";
    fs::create_directory(dir_);
    chmod(dir_.c_str(), 0755);
  }
  // Copies fixture `name` into `dir` (default: the plugin dir) as <as>.so.
  fs::path Stage(const std::string& name, fs::path dir = {}, std::string as = "") {
    if (dir.empty()) dir = dir_;
    fs::path dst = dir / ((as.empty() ? name : as) + ".so");
    fs::copy_file(Fixture(name), dst, fs::copy_options::overwrite_existing);
    chmod(dst.c_str(), 0644);
    return dst;
  }
  fs::path MakeDir(const std::string& name, mode_t mode) {
    fs::path d = tmp_ / name;
    fs::create_directory(d);
    chmod(d.c_str(), mode);
    return d;
  }
  static std::string Refusal(const fs::path& file, const std::string& why) {
    return "plugin " + file.string() + " refused: " + why;
  }
  static std::string LoadError(const fs::path& file) {
    auto p = LoadedPlugin::Load(file);
    if (p.ok()) return "(loaded)";
    return std::string(p.status().message());
  }

  TempDir tmp_;
  fs::path dir_;
};

bool Mapped(const fs::path& file) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    if (line.find(file.string()) != std::string::npos) return true;
  }
  return false;
}

TEST_F(Loader, GoodPluginLoadsWithItsDescriptor) {
  fs::path f = Stage("good");
  auto p = LoadedPlugin::Load(f);
  ASSERT_TRUE(p.ok()) << p.status();
  const PluginDescriptor& d = (*p)->descriptor();
  EXPECT_EQ(d.name, "good");
  EXPECT_EQ(d.version, "1.0.0");
  EXPECT_EQ(d.description, "ABI test fixture: loads and runs");
  EXPECT_EQ(d.AbiVersion(), std::to_string(TRELLIS_ABI_MAJOR) + "." +
                                std::to_string(TRELLIS_ABI_MINOR));
  EXPECT_TRUE(d.Interfaces().empty());
  EXPECT_EQ((*p)->path(), f);
  EXPECT_TRUE((*p)->SameFile(f));
}

// The library stays mapped while anything holds the LoadedPlugin (a Module
// holds it until after destroy()), and goes when the last holder lets go.
TEST_F(Loader, LibraryStaysLoadedExactlyAsLongAsItIsHeld) {
  std::vector<fs::path> plugins = {Stage("good"), Stage("echo"), Stage("throws"),
                                   Stage("older_ops")};
  for (const auto& e : fs::directory_iterator(test::PluginBuildDir())) {
    fs::path f = dir_ / e.path().filename();
    fs::copy_file(e.path(), f);
    chmod(f.c_str(), 0644);
    plugins.push_back(f);
  }
  for (const fs::path& f : plugins) {
    SCOPED_TRACE(f.filename().string());
    auto p = LoadedPlugin::Load(f);
    ASSERT_TRUE(p.ok()) << p.status();
    std::shared_ptr<LoadedPlugin> held = *p;
    p = absl::CancelledError("dropped");
    ASSERT_TRUE(Mapped(f));
    held.reset();
    EXPECT_FALSE(Mapped(f)) << "the library is still mapped after its last holder let go";
  }
}

// trellis_add_plugin() leaves one dynamic symbol: nothing of a plugin can be
// interposed on by another, or pin it in memory (STB_GNU_UNIQUE).
TEST_F(Loader, EveryPluginExportsOnlyItsEntrySymbol) {
  std::vector<fs::path> files;
  for (const auto& dir : {test::PluginBuildDir(), fs::path(TRELLIS_TEST_FIXTURE_DIR)}) {
    for (const auto& e : fs::directory_iterator(dir)) {
      if (e.path().extension() == ".so" && e.path().filename() != "fx_no_entry.so") {
        files.push_back(e.path());
      }
    }
  }
  ASSERT_GE(files.size(), 10u);
  for (const auto& f : files) {
    auto nm = test::Run({"nm", "-D", "--defined-only", f.string()});
    ASSERT_EQ(nm.exit_code, 0) << nm.err;
    std::istringstream lines(nm.out);
    std::vector<std::string> symbols;
    for (std::string line; std::getline(lines, line);) symbols.push_back(line.substr(line.rfind(' ') + 1));
    EXPECT_EQ(symbols, std::vector<std::string>{TRELLIS_PLUGIN_ENTRY_SYMBOL}) << f << "\n" << nm.out;
  }
}

TEST_F(Loader, ReplacedFileIsANewPlugin) {
  fs::path f = Stage("good");
  auto p = LoadedPlugin::Load(f);
  ASSERT_TRUE(p.ok()) << p.status();
  fs::path tmp = Stage("echo", dir_, "incoming");
  fs::rename(tmp, f);  // how an upgrade lands: a new inode under the old name
  EXPECT_FALSE((*p)->SameFile(f));
}

TEST_F(Loader, NoEntrySymbol) {
  fs::path f = Stage("no_entry");
  EXPECT_EQ(LoadError(f), Refusal(f, "it exports no trellis_plugin_entry_v1 symbol (is it a "
                                     "trellis plugin? was it built with TRELLIS_PLUGIN()?)"));
}

TEST_F(Loader, EntryReturnsNull) {
  fs::path f = Stage("null_entry");
  EXPECT_EQ(LoadError(f), Refusal(f, "its entry point returned NULL"));
}

TEST_F(Loader, AbiMajorMismatch) {
  fs::path f = Stage("major");
  EXPECT_EQ(LoadError(f),
            Refusal(f, "it was built for plugin ABI 2.0, this host speaks ABI 1.0 (the major "
                       "versions must match); rebuild it against this SDK"));
}

TEST_F(Loader, NewerMinor) {
  fs::path f = Stage("minor");
  EXPECT_EQ(LoadError(f),
            Refusal(f, "it was built for plugin ABI 1.1, newer than this host's 1.0; upgrade "
                       "trellisd or rebuild the plugin against SDK 1.0"));
}

TEST_F(Loader, OversizeDescriptorWithNonZeroTailIsRefused) {
  fs::path f = Stage("oversize_tail");
  const size_t size = sizeof(trellis_plugin_descriptor);
  EXPECT_EQ(LoadError(f),
            Refusal(f, "its descriptor is " + std::to_string(size + 16) +
                           " bytes, larger than the " + std::to_string(size) +
                           " this host knows, and its unknown tail is not zero: the plugin uses "
                           "features this host lacks; upgrade trellisd"));
}

TEST_F(Loader, OversizeDescriptorWithZeroTailIsAccepted) {
  auto p = LoadedPlugin::Load(Stage("oversize_zero"));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ((*p)->descriptor().name, "oversize_zero");
  // The host's copy is its own size: nothing of the tail was kept.
  EXPECT_EQ((*p)->descriptor().d.struct_size, sizeof(trellis_plugin_descriptor) + 16);
}

TEST_F(Loader, OlderSmallerOpsTableIsAcceptedAndMissingOpsReadAsAbsent) {
  auto p = LoadedPlugin::Load(Stage("older_ops"));
  ASSERT_TRUE(p.ok()) << p.status();
  const PluginDescriptor& d = (*p)->descriptor();
  ASSERT_TRUE(d.has_qos);
  EXPECT_EQ(d.Interfaces(), std::vector<std::string>{"qos"});
  EXPECT_NE(d.qos.apply, nullptr);
  EXPECT_NE(d.qos.remove, nullptr);
  // Past the plugin's struct_size its memory holds poison ops: not read.
  EXPECT_EQ(d.qos.check, nullptr);
  EXPECT_EQ(d.qos.gc, nullptr);
}

TEST_F(Loader, MandatoryInterfaceOpMissing) {
  fs::path f = Stage("no_release");
  EXPECT_EQ(LoadError(f),
            Refusal(f, "its ipam interface has no release op (allocate and release are "
                       "mandatory)"));
}

TEST_F(Loader, MandatoryLifecycleOpMissing) {
  fs::path f = Stage("no_create");
  EXPECT_EQ(LoadError(f),
            Refusal(f, "its descriptor has no create op (validate, create and destroy are "
                       "mandatory)"));
}

TEST_F(Loader, UnknownInterfaceVersion) {
  fs::path f = Stage("iface_version");
  EXPECT_EQ(LoadError(f),
            Refusal(f, "its qos interface is version 2, this host knows versions 1 to 1"));
}

TEST_F(Loader, NotASharedObject) {
  fs::path f = dir_ / "text.so";
  std::ofstream(f) << std::string(4096, '#') << "\nnot an ELF file, but as long as one\n";
  chmod(f.c_str(), 0644);
  std::string err = LoadError(f);
  EXPECT_EQ(err.rfind(Refusal(f, "cannot load it: "), 0), 0u) << err;
  EXPECT_NE(err.find("invalid ELF header"), std::string::npos) << err;
}

TEST_F(Loader, MissingFile) {
  fs::path f = dir_ / "absent.so";
  EXPECT_EQ(LoadError(f), Refusal(f, f.string() + ": No such file or directory"));
}

// ---------------------------------------------------------------- trust --

TEST_F(Loader, WorldWritableFileIsRefused) {
  fs::path f = Stage("good");
  chmod(f.c_str(), 0646);
  EXPECT_EQ(LoadError(f), Refusal(f, f.string() + " is writable by group or others (mode "
                                                   "0646); fix with chmod go-w"));
}

TEST_F(Loader, GroupWritableFileIsRefused) {
  fs::path f = Stage("good");
  chmod(f.c_str(), 0664);
  EXPECT_EQ(LoadError(f), Refusal(f, f.string() + " is writable by group or others (mode "
                                                   "0664); fix with chmod go-w"));
}

TEST_F(Loader, FileNotOwnedByRootIsRefused) {
  fs::path f = Stage("good");
  ASSERT_EQ(chown(f.c_str(), 65534, 65534), 0);
  EXPECT_EQ(LoadError(f), Refusal(f, f.string() + " is owned by uid 65534, not root"));
}

TEST_F(Loader, GroupWritablePluginDirectoryIsRefused) {
  fs::path f = Stage("good");
  chmod(dir_.c_str(), 0775);
  EXPECT_EQ(LoadError(f), Refusal(f, "directory " + dir_.string() +
                                         " is writable by group or others (mode 0775); fix "
                                         "with chmod go-w"));
}

TEST_F(Loader, PluginDirectoryNotOwnedByRootIsRefused) {
  fs::path f = Stage("good");
  ASSERT_EQ(chown(dir_.c_str(), 65534, 65534), 0);
  EXPECT_EQ(LoadError(f),
            Refusal(f, "directory " + dir_.string() + " is owned by uid 65534, not root"));
}

// /tmp-like sticky directories are fine above the plugin's directory (others
// cannot rename our directory away), never as the plugin's own directory.
TEST_F(Loader, StickyDirectoryOnlyAboveThePluginDirectory) {
  fs::path sticky = MakeDir("sticky", 01777);
  fs::path own = sticky / "plugins";
  fs::create_directory(own);
  chmod(own.c_str(), 0755);
  auto ok = LoadedPlugin::Load(Stage("good", own));
  EXPECT_TRUE(ok.ok()) << ok.status();
  fs::path f = Stage("good", sticky);
  EXPECT_EQ(LoadError(f), Refusal(f, "directory " + sticky.string() +
                                         " is writable by group or others (mode 01777); fix "
                                         "with chmod go-w"));
}

TEST_F(Loader, SymlinkIntoAnUntrustedDirectoryIsRefused) {
  fs::path untrusted = MakeDir("untrusted", 0777);
  fs::path target = Stage("good", untrusted);
  fs::path link = dir_ / "good.so";
  fs::create_symlink(target, link);
  EXPECT_EQ(LoadError(link),
            Refusal(link, "directory " + untrusted.string() +
                              " is writable by group or others (mode 0777); fix with chmod go-w "
                              "(reached through the symlink " +
                              link.string() + " -> " + target.string() + ")"));
}

// Whoever can write the directory holding the link can point it anywhere
// between the check and the load: the link's own directory counts too.
TEST_F(Loader, SymlinkInAnUntrustedDirectoryIsRefused) {
  fs::path untrusted = MakeDir("untrusted", 0777);
  fs::path target = Stage("good");
  fs::path link = untrusted / "good.so";
  fs::create_symlink(target, link);
  EXPECT_EQ(LoadError(link), Refusal(link, "directory " + untrusted.string() +
                                               " is writable by group or others (mode 0777); "
                                               "fix with chmod go-w"));
}

TEST_F(Loader, SymlinkToATrustedFileIsFollowed) {
  fs::path lib = MakeDir("lib", 0755);
  fs::path target = Stage("good", lib);
  fs::path link = dir_ / "renamed.so";
  fs::create_symlink(target, link);
  auto p = LoadedPlugin::Load(link);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ((*p)->descriptor().name, "good");
  // What was checked is what was mapped: the link's target.
  EXPECT_TRUE(Mapped(target));
}

TEST_F(Loader, DanglingSymlink) {
  fs::path link = dir_ / "dangling.so";
  fs::create_symlink(dir_ / "nowhere.so", link);
  EXPECT_EQ(LoadError(link), Refusal(link, link.string() + ": No such file or directory"));
}

}  // namespace
}  // namespace trellis
