#include "core/cni/plugin.h"

#include <chrono>
#include <cstdlib>
#include <iterator>

#include "core/cni/cni.h"
#include "core/rpc/client.h"
#include "core/proto/trellis.pb.h"

namespace trellis::cni {

using namespace std::chrono_literals;

namespace {

int Fail(std::ostream& out, const Error& e, const std::string& version) {
  out << ErrorJson(e, version).dump() << std::endl;
  return 1;
}

std::chrono::milliseconds DefaultTimeout(const std::string& command) {
  if (command == "STATUS") return 10s;
  if (command == "GC") return 300s;
  return 120s;  // ADD may wait for an ENI to attach
}

}  // namespace

int RunPlugin(std::istream& in, std::ostream& out) {
  std::string input((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // The version to answer in, as far as the input tells it.
  std::string version = kLatestVersion;
  {
    auto j = Json::parse(input, nullptr, false);
    if (j.is_object() && j.contains("cniVersion") && j["cniVersion"].is_string()) {
      version = j["cniVersion"].get<std::string>();
    }
  }
  Environment env;
  if (auto e = ReadEnvironment([](const char* k) { return std::getenv(k); }, &env)) {
    return Fail(out, *e, version);
  }
  if (env.command == "VERSION") {
    out << VersionJson(version).dump() << std::endl;
    return 0;
  }
  NetConf conf;
  if (auto e = ParseNetConf(input, &conf)) return Fail(out, *e, version);
  const std::string& cmd = env.command;
  if (cmd == "CHECK" && CompareVersions(conf.cni_version, "0.4.0") < 0) {
    return Fail(out, {kIncompatibleVersion, "config version does not allow CHECK", ""},
                conf.cni_version);
  }
  if ((cmd == "GC" || cmd == "STATUS") && CompareVersions(conf.cni_version, "1.1.0") < 0) {
    return Fail(out, {kIncompatibleVersion, "config version does not allow " + cmd, ""},
                conf.cni_version);
  }
  const uint32_t unreachable = cmd == "STATUS" ? kNotAvailable : kTryAgainLater;

  std::string error;
  auto client = rpc::Client::Connect(conf.socket, 2s, &error);
  if (!client) return Fail(out, {unreachable, error, ""}, conf.cni_version);

  v1::CniRequest req;
  req.set_command(cmd);
  req.set_container_id(env.container_id);
  req.set_netns(env.netns);
  req.set_ifname(env.ifname);
  req.set_args(env.args);
  req.set_path(env.path);
  req.set_config(input);
  auto timeout = conf.timeout_ms > 0 ? std::chrono::milliseconds(conf.timeout_ms) : DefaultTimeout(cmd);
  v1::CniResponse resp;
  rpc::RpcStatus st = client->Call("Cni", req, &resp, timeout);
  if (!st.ok()) {
    switch (st.code) {
      case rpc::Code::kUnavailable:
      case rpc::Code::kResourceExhausted:
        return Fail(out, {unreachable, "trellisd is unavailable: " + st.message, ""},
                    conf.cni_version);
      case rpc::Code::kDeadlineExceeded:
        return Fail(out, {unreachable,
                     "trellisd did not answer within " + std::to_string(timeout.count()) + " ms",
                     ""},
                    conf.cni_version);
      default:
        return Fail(out, {kInternal, "trellisd call failed: " + st.message, ""},
                    conf.cni_version);
    }
  }
  if (resp.code() != 0) {
    return Fail(out, {resp.code(), resp.msg(), resp.details()}, conf.cni_version);
  }
  if (cmd == "ADD") {
    auto result = Json::parse(resp.result(), nullptr, false);
    if (result.is_discarded()) {
      return Fail(out, {kInternal, "trellisd returned a result that is not JSON", ""}, conf.cni_version);
    }
    out << ConvertResult(result, conf.cni_version).dump() << std::endl;
  }
  return 0;
}

}  // namespace trellis::cni
