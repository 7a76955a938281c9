// The daemon's API socket: root only (mode 0600 and SO_PEERCRED), the CNI
// binary's request timeout when the daemon does not answer, and the wire
// protocol: a stock gRPC client (grpc++) gets the same answers as ours.
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/stat.h>

#include "core/proto/trellis.grpc.pb.h"
#include "core/rpc/client.h"
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

TEST(Api, AStockGrpcClientGetsTheSameAnswers) {
  Daemon d({.config_yaml = "modules: {ipam: {config: {ranges: [{subnet: 10.239.2.0/24}]}}}\n"});
  std::string why;
  ASSERT_TRUE(d.Start(&why)) << why;
  auto stub = v1::Trellis::NewStub(
      grpc::CreateChannel("unix://" + d.socket().string(), grpc::InsecureChannelCredentials()));
  auto ctx = [] {
    auto c = std::make_unique<grpc::ClientContext>();
    c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return c;
  };

  v1::DaemonStatus status;
  grpc::Status st = stub->GetStatus(ctx().get(), v1::StatusRequest(), &status);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_TRUE(status.live());
  EXPECT_TRUE(status.ready());

  // A CNI call as the CNI binary makes it.
  v1::CniRequest req;
  req.set_command("STATUS");
  req.set_config(d.NetConf().dump());
  v1::CniResponse resp;
  st = stub->Cni(ctx().get(), req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(resp.code(), 0u) << resp.msg();

  // An error: code and message (quotes, a non-ASCII byte) arrive intact.
  v1::ModuleCallRequest mc;
  mc.set_module("nö-such");
  v1::ModuleCallResponse mr;
  st = stub->ModuleCall(ctx().get(), mc, &mr);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(st.error_message(), "no running module named or providing 'nö-such'");

  // A request far larger than one HTTP/2 frame or default window (1 MiB).
  mc.set_module("none");
  mc.set_request_json(std::string(1 << 20, ' '));
  st = stub->ModuleCall(ctx().get(), mc, &mr);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND) << st.error_message();

  // Ours sees the same, and a method the daemon does not have is UNIMPLEMENTED.
  auto ours = rpc::Client::Connect(d.socket().string(), std::chrono::seconds(2), &why);
  ASSERT_TRUE(ours) << why;
  mc.set_module("nö-such");
  mc.clear_request_json();
  auto rs = ours->Call("ModuleCall", mc, &mr, std::chrono::seconds(10));
  EXPECT_EQ(rs.code, rpc::Code::kNotFound);
  EXPECT_EQ(rs.message, "no running module named or providing 'nö-such'");
  rs = ours->Call("NoSuchMethod", mc, &mr, std::chrono::seconds(10));
  EXPECT_EQ(rs.code, rpc::Code::kUnimplemented) << rs.message;
  // The connection carries further calls after an error.
  rs = ours->Call("GetStatus", v1::StatusRequest(), &status, std::chrono::seconds(10));
  EXPECT_TRUE(rs.ok()) << rs.message;
}

// Connections that stay open (idle clients, a client in the middle of a call)
// neither stop other callers nor keep the daemon from stopping.
TEST(Api, IdleConnectionsDoNotBlockOthersOrShutdown) {
  Daemon d({.config_yaml = "modules: {ipam: {config: {ranges: [{subnet: 10.239.3.0/24}]}}}\n"});
  std::string why;
  ASSERT_TRUE(d.Start(&why)) << why;
  std::vector<std::unique_ptr<rpc::Client>> idle;
  for (int i = 0; i < 20; ++i) {
    idle.push_back(rpc::Client::Connect(d.socket().string(), std::chrono::seconds(2), &why));
    ASSERT_TRUE(idle.back()) << why;
  }
  EXPECT_EQ(d.Ctl({"status"}).exit_code, 0);
  EXPECT_EQ(Cni({.command = "STATUS", .config = d.NetConf()}).exit_code, 0);
  v1::DaemonStatus status;
  for (auto& c : idle) {
    auto rs = c->Call("GetStatus", v1::StatusRequest(), &status, std::chrono::seconds(10));
    EXPECT_TRUE(rs.ok()) << rs.message;
  }
  // SIGTERM: a clean stop logs its end; the harness would SIGKILL a daemon
  // still waiting for its clients after 10 s, and the line would be missing.
  d.Stop();
  EXPECT_NE(d.Log().find("trellisd stopped"), std::string::npos) << d.Log();
}

}  // namespace
}  // namespace trellis::test
