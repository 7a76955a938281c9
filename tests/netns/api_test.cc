// The daemon's API socket: root only (mode 0600 and SO_PEERCRED), and the CNI
// binary's request timeout when the daemon does not answer.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/stat.h>

#include "harness.h"

namespace trellis::test {
namespace {

TEST(Api, SocketIsRootOnly) {
  Daemon d({.config_yaml = "modules: {ipam: {config: {ranges: [{subnet: 10.239.0.0/24}]}}}\n",
            .metrics_addr = "auto"});
  std::string why;
  ASSERT_TRUE(d.Start(&why)) << why;
  struct stat st {};
  ASSERT_EQ(stat(d.socket().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(st.st_uid, 0u);
  auto as_nobody = [&](const std::string& path) {
    return test::Run({"setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                (BinDir() / "trellisctl").string(), "--socket", path, "status"});
  };
  // The file mode stops others...
  EXPECT_EQ(as_nobody(d.socket().string()).exit_code, 3);
  // ...and so does the peer check on its own, when someone loosens the mode:
  // a hard link in a 0755 directory (the daemon's dir is 0700), mode 0666.
  TempDir open_dir;
  chmod(open_dir.path().c_str(), 0755);
  fs::create_hard_link(d.socket(), open_dir / "s.sock");
  chmod((open_dir / "s.sock").c_str(), 0666);
  auto r = as_nobody((open_dir / "s.sock").string());
  EXPECT_NE(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(WaitFor([&] { return d.Log().find("refused a connection from uid 65534") != std::string::npos; }))
      << d.Log();
  auto metrics = HttpGet(d.metrics_port(), "/metrics", d.node()->name());
  EXPECT_NE(metrics.second.find("trellis_api_refused_connections_total 1"), std::string::npos)
      << metrics.second;
  // Root still gets in.
  EXPECT_EQ(d.Ctl({"status"}).exit_code, 0);
}

TEST(Api, CniCallTimesOutWhenTheDaemonHangs) {
  Daemon d({.config_yaml = "modules: {ipam: {config: {ranges: [{subnet: 10.239.1.0/24}]}}}\n"});
  std::string why;
  ASSERT_TRUE(d.Start(&why)) << why;
  Netns ns("h");
  kill(d.pid(), SIGSTOP);
  auto r = Cni({.command = "ADD", .container_id = "hung", .netns = ns.path(),
                .config = d.NetConf("1.1.0", {{"timeout", 1}})});
  kill(d.pid(), SIGCONT);
  EXPECT_EQ(r.json()["code"], 11) << r.out;
  EXPECT_NE(r.json()["msg"].get<std::string>().find("did not answer within 1000 ms"), std::string::npos)
      << r.out;
  // The runtime retries; the ADD that was pending completed or not, the retry
  // converges to one pod with one address.
  auto again = Cni({.command = "ADD", .container_id = "hung", .netns = ns.path(), .config = d.NetConf()});
  ASSERT_EQ(again.exit_code, 0) << again.out;
  EXPECT_EQ(d.Ctl({"addresses", "-o", "json"}).json()["addresses"].size(), 1u);
  EXPECT_EQ(Cni({.command = "DEL", .container_id = "hung", .netns = ns.path(), .config = d.NetConf()}).exit_code, 0);
}

}  // namespace
}  // namespace trellis::test
