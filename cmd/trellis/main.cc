// trellis: the CNI binary. Parses the invocation, makes one gRPC call to
// trellisd, prints the result in the requested CNI version. No plugin code.
#include <grpcpp/client_context.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <iterator>

#include "core/cni/cni.h"
#include "core/cni/client.h"
#include "core/proto/trellis.grpc.pb.h"

namespace cni = trellis::cni;
using namespace std::chrono_literals;

namespace {

int Fail(const cni::Error& e, const std::string& version) {
  std::cout << cni::ErrorJson(e, version).dump() << std::endl;
  return 1;
}

std::chrono::milliseconds DefaultTimeout(const std::string& command) {
  if (command == "STATUS") return 10s;
  if (command == "GC") return 300s;
  return 120s;  // ADD may wait for an ENI to attach
}

}  // namespace

int Run() {
  std::string input((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  // The version to answer in, as far as the input tells it.
  std::string version = cni::kLatestVersion;
  {
    auto j = cni::Json::parse(input, nullptr, false);
    if (j.is_object() && j.contains("cniVersion") && j["cniVersion"].is_string()) {
      version = j["cniVersion"].get<std::string>();
    }
  }
  cni::Environment env;
  if (auto e = cni::ReadEnvironment([](const char* k) { return std::getenv(k); }, &env)) {
    return Fail(*e, version);
  }
  if (env.command == "VERSION") {
    std::cout << cni::VersionJson(version).dump() << std::endl;
    return 0;
  }
  cni::NetConf conf;
  if (auto e = cni::ParseNetConf(input, &conf)) return Fail(*e, version);
  const std::string& cmd = env.command;
  if (cmd == "CHECK" && cni::CompareVersions(conf.cni_version, "0.4.0") < 0) {
    return Fail({cni::kIncompatibleVersion, "config version does not allow CHECK", ""},
                conf.cni_version);
  }
  if ((cmd == "GC" || cmd == "STATUS") && cni::CompareVersions(conf.cni_version, "1.1.0") < 0) {
    return Fail({cni::kIncompatibleVersion, "config version does not allow " + cmd, ""},
                conf.cni_version);
  }
  const uint32_t unreachable = cmd == "STATUS" ? cni::kNotAvailable : cni::kTryAgainLater;

  std::string error;
  // Static: main() leaves with _Exit, so neither the channel nor gRPC's
  // threads are torn down (that took longer than the call itself).
  static std::shared_ptr<grpc::Channel> channel;
  channel = trellis::ConnectUnix(conf.socket, 2s, &error);
  if (!channel) return Fail({unreachable, error, ""}, conf.cni_version);

  trellis::v1::CniRequest req;
  req.set_command(cmd);
  req.set_container_id(env.container_id);
  req.set_netns(env.netns);
  req.set_ifname(env.ifname);
  req.set_args(env.args);
  req.set_path(env.path);
  req.set_config(input);
  grpc::ClientContext ctx;
  auto timeout = conf.timeout_ms > 0 ? std::chrono::milliseconds(conf.timeout_ms) : DefaultTimeout(cmd);
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
  trellis::v1::CniResponse resp;
  grpc::Status st = trellis::v1::Trellis::NewStub(channel)->Cni(&ctx, req, &resp);
  if (!st.ok()) {
    switch (st.error_code()) {
      case grpc::StatusCode::UNAVAILABLE:
      case grpc::StatusCode::RESOURCE_EXHAUSTED:
        return Fail({unreachable, "trellisd is unavailable: " + st.error_message(), ""},
                    conf.cni_version);
      case grpc::StatusCode::DEADLINE_EXCEEDED:
        return Fail({unreachable,
                     "trellisd did not answer within " + std::to_string(timeout.count()) + " ms",
                     ""},
                    conf.cni_version);
      default:
        return Fail({cni::kInternal, "trellisd call failed: " + st.error_message(), ""},
                    conf.cni_version);
    }
  }
  if (resp.code() != 0) {
    return Fail({resp.code(), resp.msg(), resp.details()}, conf.cni_version);
  }
  if (cmd == "ADD") {
    auto result = cni::Json::parse(resp.result(), nullptr, false);
    if (result.is_discarded()) {
      return Fail({cni::kInternal, "trellisd returned a result that is not JSON", ""}, conf.cni_version);
    }
    std::cout << cni::ConvertResult(result, conf.cni_version).dump() << std::endl;
  }
  return 0;
}

int main() {
  int rc = Run();
  std::cout.flush();
  std::fflush(stdout);
  // Everything the process holds goes with it; the daemon sees the socket
  // close. Only stdout carries the result, and it is flushed.
  std::_Exit(rc);
}
