#include "core/ctl.h"

#include <google/protobuf/util/json_util.h>

#include <chrono>
#include <ctime>
#include <iomanip>

#include "core/rpc/client.h"
#include "core/config.h"
#include "core/daemon.h"
#include "core/log.h"
#include "core/plugin_loader.h"
#include "core/proto/trellis.pb.h"
#include "core/registry.h"

namespace trellis {
namespace {

std::string ProtoJson(const google::protobuf::Message& m) {
  std::string s;
  google::protobuf::util::JsonPrintOptions opts;
  opts.add_whitespace = true;
  opts.always_print_primitive_fields = true;
  opts.preserve_proto_field_names = true;
  google::protobuf::util::MessageToJsonString(m, &s, opts);
  if (s.empty() || s.back() != '\n') s += '\n';
  return s;
}

std::string RpcCodeName(rpc::Code c) {
  switch (c) {
    case rpc::Code::kInvalidArgument:
      return "invalid_argument";
    case rpc::Code::kNotFound:
      return "not_found";
    case rpc::Code::kFailedPrecondition:
      return "failed_precondition";
    case rpc::Code::kUnavailable:
      return "unavailable";
    case rpc::Code::kDeadlineExceeded:
      return "deadline_exceeded";
    case rpc::Code::kUnimplemented:
      return "unimplemented";
    case rpc::Code::kPermissionDenied:
      return "permission_denied";
    default:
      return "error";
  }
}

std::string Join(const google::protobuf::RepeatedPtrField<std::string>& v) {
  std::string o;
  for (const auto& s : v) o += (o.empty() ? "" : ",") + s;
  return o.empty() ? "-" : o;
}

class Ctl {
 public:
  Ctl(const CtlOptions& o, std::ostream& out, std::ostream& err) : o_(o), out_(out), err_(err) {}

  // Connects; on failure prints why and returns false.
  bool Connect() {
    std::string error;
    client_ = rpc::Client::Connect(o_.socket, Timeout(), &error);
    if (!client_) {
      Error("unavailable", error);
      return false;
    }
    return true;
  }
  // Every failure goes to stderr; with -o json stdout also gets one JSON
  // object {"error": {"code", "message"}}, so that a script parsing stdout
  // always parses something.
  void Error(const std::string& code, const std::string& message) {
    err_ << "trellisctl: " << message << "\n";
    if (json()) out_ << Json{{"error", {{"code", code}, {"message", message}}}}.dump(2) << "\n";
  }
  std::chrono::milliseconds Timeout() const { return std::chrono::milliseconds(o_.timeout_ms); }
  rpc::RpcStatus Call(std::string_view method, const google::protobuf::MessageLite& req,
                 google::protobuf::MessageLite* resp) {
    return client_->Call(method, req, resp, Timeout());
  }
  // Exit code of a failed call: the daemon did not answer (3), refused the
  // arguments (2), or answered no (1).
  int RpcFailed(const rpc::RpcStatus& s) {
    Error(RpcCodeName(s.code), s.message);
    switch (s.code) {
      case rpc::Code::kUnavailable:
      case rpc::Code::kDeadlineExceeded:
        return kCtlUnreachable;
      case rpc::Code::kInvalidArgument:
        return kCtlUsage;
      default:
        return kCtlNegative;
    }
  }
  bool json() const { return o_.output == "json"; }

  int Status() {
    if (!Connect()) return kCtlUnreachable;
    v1::DaemonStatus s;
    auto st = Call("GetStatus", v1::StatusRequest(), &s);
    if (!st.ok()) return RpcFailed(st);
    if (json()) {
      out_ << ProtoJson(s);
    } else {
      char started[32] = "-";
      std::time_t t = static_cast<std::time_t>(s.started_unix());
      std::tm tm{};
      if (gmtime_r(&t, &tm) != nullptr)
        std::strftime(started, sizeof started, "%Y-%m-%dT%H:%M:%SZ", &tm);
      out_ << "version:        " << s.version() << "\n"
           << "started:        " << started << "\n"
           << "live:           " << (s.live() ? "yes" : "no")
           << (s.live_reason().empty() ? "" : " (" + s.live_reason() + ")") << "\n"
           << "ready:          " << (s.ready() ? "yes" : "no")
           << (s.ready_reason().empty() ? "" : " (" + s.ready_reason() + ")") << "\n"
           << "pods:           " << s.pods() << " (" << s.degraded_pods() << " not ready)\n"
           << "config:         " << s.config_origin() << "\n"
           << "config error:   " << (s.last_config_error().empty() ? "-" : s.last_config_error())
           << "\n"
           << "log level:      " << s.log_level() << "\n"
           << "state dir:      " << s.state_dir() << "\n"
           << "plugin dir:     " << s.plugin_dir() << "\n";
    }
    return kCtlOk;
  }

  int Modules() {
    if (!Connect()) return kCtlUnreachable;
    v1::ListModulesResponse r;
    auto st = Call("ListModules", v1::ListModulesRequest(), &r);
    if (!st.ok()) return RpcFailed(st);
    if (json()) {
      out_ << ProtoJson(r);
      return kCtlOk;
    }
    out_ << std::left << std::setw(12) << "MODULE" << std::setw(10) << "STATE" << std::setw(9)
         << "HEALTHY" << std::setw(10) << "VERSION" << std::setw(6) << "ABI" << std::setw(24)
         << "INTERFACES" << std::setw(8) << "RELOADS" << "PLUGIN / MESSAGE\n";
    for (const auto& m : r.modules()) {
      out_ << std::left << std::setw(12) << m.name() << std::setw(10) << m.state() << std::setw(9)
           << (m.state() == "running" ? (m.healthy() ? (m.degraded() ? "degraded" : "yes") : "no")
                                      : "-")
           << std::setw(10) << (m.plugin_version().empty() ? "-" : m.plugin_version())
           << std::setw(6) << (m.abi_version().empty() ? "-" : m.abi_version()) << std::setw(24)
           << Join(m.interfaces()) << std::setw(8) << m.reload_count()
           << (m.plugin_path().empty() ? "-" : m.plugin_path())
           << (m.message().empty() ? "" : "  " + m.message());
      // A running module whose last change failed keeps its previous config.
      if (!m.last_error().empty() && m.last_error() != m.message()) {
        out_ << "  (last reload failed: " << m.last_error() << ")";
      }
      out_ << "\n";
    }
    return kCtlOk;
  }

  int Pods() {
    if (!Connect()) return kCtlUnreachable;
    v1::ListPodsResponse r;
    auto st = Call("ListPods", v1::ListPodsRequest(), &r);
    if (!st.ok()) return RpcFailed(st);
    if (json()) {
      out_ << ProtoJson(r);
      return kCtlOk;
    }
    out_ << std::left << std::setw(28) << "POD" << std::setw(16) << "CONTAINER" << std::setw(8)
         << "IFNAME" << std::setw(16) << "HOST-IF" << std::setw(8) << "STATE" << std::setw(40)
         << "ADDRESSES" << "MODULES\n";
    for (const auto& p : r.pods()) {
      std::string pod = p.k8s_name().empty()        ? "-"
                        : p.k8s_namespace().empty() ? p.k8s_name()
                                                    : p.k8s_namespace() + "/" + p.k8s_name();
      out_ << std::left << std::setw(28) << pod << std::setw(16) << p.container_id().substr(0, 12)
           << std::setw(8) << p.ifname() << std::setw(16) << p.host_ifname() << std::setw(8)
           << p.state() << std::setw(40) << Join(p.addresses()) << Join(p.modules()) << "\n";
    }
    return kCtlOk;
  }

  // For exec probes: 0 live (and with --ready, ready); 1 not; 3 no answer.
  // With -o json the document is the same whatever the outcome.
  int Health() {
    auto report = [&](bool live, bool ready, const std::string& reason, int rc) {
      if (json()) {
        out_ << Json{{"live", live}, {"ready", ready}, {"reason", reason}}.dump(2) << "\n";
      } else if (rc == kCtlOk) {
        out_ << "ok" << (o_.ready ? " (ready)" : " (live)") << "\n";
      } else {
        (rc == kCtlUnreachable ? err_ : out_)
            << (rc == kCtlUnreachable ? "trellisctl: unreachable: "
                : !live               ? "not live: "
                                      : "not ready: ")
            << reason << "\n";
      }
      return rc;
    };
    std::string error;
    client_ = rpc::Client::Connect(o_.socket, Timeout(), &error);
    if (!client_) return report(false, false, error, kCtlUnreachable);
    v1::DaemonStatus s;
    auto st = Call("GetStatus", v1::StatusRequest(), &s);
    if (!st.ok()) {
      bool gone = st.code == rpc::Code::kUnavailable || st.code == rpc::Code::kDeadlineExceeded;
      return report(false, false, st.message, gone ? kCtlUnreachable : kCtlNegative);
    }
    bool ok = s.live() && (!o_.ready || s.ready());
    return report(s.live(), s.ready(), !s.live() ? s.live_reason() : s.ready_reason(),
                  ok ? kCtlOk : kCtlNegative);
  }

  int LogLevel(const std::string& level) {
    if (!ParseLogLevel(level)) {
      Error("invalid_argument",
            "log level '" + level + "' is not one of trace, debug, info, warn, error");
      return kCtlUsage;
    }
    if (!Connect()) return kCtlUnreachable;
    v1::SetLogLevelRequest req;
    req.set_level(level);
    v1::SetLogLevelResponse r;
    auto st = Call("SetLogLevel", req, &r);
    if (!st.ok()) return RpcFailed(st);
    if (json()) out_ << ProtoJson(r);
    else out_ << "log level: " << r.previous() << " -> " << r.level() << "\n";
    return kCtlOk;
  }

  // A module operation; prints the JSON the module answered.
  int Call(const std::string& module, const std::string& op, const Json& request,
           Json* result = nullptr) {
    if (!Connect()) return kCtlUnreachable;
    v1::ModuleCallRequest req;
    req.set_module(module);
    req.set_operation(op);
    req.set_request_json(request.dump());
    v1::ModuleCallResponse r;
    auto st = Call("ModuleCall", req, &r);
    if (!st.ok()) return RpcFailed(st);
    Json j = Json::parse(r.result_json(), nullptr, false);
    if (result != nullptr) *result = j;
    else out_ << j.dump(2) << "\n";
    return kCtlOk;
  }

  int Addresses() {
    Json list;
    int rc = Call("ipam", "list", Json::object(), &list);
    if (rc != kCtlOk) return rc;
    if (json()) {
      out_ << Json{{"addresses", list}}.dump(2) << "\n";
      return kCtlOk;
    }
    out_ << std::left << std::setw(40) << "ADDRESS" << std::setw(20) << "CONTAINER" << "IFNAME\n";
    for (const auto& a : list) {
      out_ << std::left << std::setw(40) << a.value("ip", "") << std::setw(20)
           << a.value("container_id", "").substr(0, 16) << a.value("ifname", "") << "\n";
    }
    return kCtlOk;
  }

  int PolicyExplain() {
    if (o_.from.empty() || o_.to.empty() || o_.port.empty()) {
      Error("invalid_argument", "policy explain needs --from, --to and --port");
      return kCtlUsage;
    }
    std::string port = o_.port, proto = "TCP";
    if (auto slash = port.find('/'); slash != std::string::npos) {
      proto = port.substr(slash + 1);
      port = port.substr(0, slash);
    }
    Json verdict;
    int rc = Call("policy", "explain",
                  {{"from", o_.from}, {"to", o_.to}, {"port", port}, {"protocol", proto}}, &verdict);
    if (rc != kCtlOk) return rc;
    if (json()) {
      out_ << verdict.dump(2) << "\n";
    } else {
      out_ << (verdict.value("allowed", false) ? "ALLOWED" : "DENIED") << ": "
           << verdict.value("reason", "") << "\n";
    }
    return kCtlOk;
  }

  // secgroup diff | sync: the module's report; as text, the form the module
  // wrote for people. A sync that was refused or failed answers 1.
  int Secgroup(const std::string& op) {
    Json r;
    int rc = Call("secgroup", op, Json::object(), &r);
    if (rc != kCtlOk) return rc;
    if (!json() && r.contains("text") && r["text"].is_string()) {
      out_ << r["text"].get<std::string>();
    } else {
      if (r.is_object()) r.erase("text");
      out_ << r.dump(2) << "\n";
    }
    const std::string result = r.is_object() ? r.value("result", "") : "";
    bool failed = result == "refused" || result == "failed" || result == "stopped";
    return op == "sync" && failed ? kCtlNegative : kCtlOk;
  }

  int PluginInspect(const std::string& file) {
    Json j = {{"file", file}};
    auto p = LoadedPlugin::Load(file);
    if (!p.ok()) {
      j["loadable"] = false;
      j["reason"] = std::string(p.status().message());
    } else {
      const auto& d = (*p)->descriptor();
      j["loadable"] = true;
      j["name"] = d.name;
      j["version"] = d.version;
      j["description"] = d.description;
      j["abi_version"] = d.AbiVersion();
      j["interfaces"] = d.Interfaces();
    }
    if (json()) {
      out_ << j.dump(2) << "\n";
    } else if (j["loadable"]) {
      out_ << "file:        " << file << "\n"
           << "name:        " << j["name"].get<std::string>() << "\n"
           << "version:     " << j["version"].get<std::string>() << "\n"
           << "abi:         " << j["abi_version"].get<std::string>() << " (host "
           << TRELLIS_ABI_MAJOR << "." << TRELLIS_ABI_MINOR << ")\n"
           << "interfaces:  ";
      std::string ifs;
      for (const auto& i : j["interfaces"]) ifs += (ifs.empty() ? "" : ", ") + i.get<std::string>();
      out_ << (ifs.empty() ? "(none)" : ifs) << "\n";
      if (!j["description"].get<std::string>().empty()) {
        out_ << "description: " << j["description"].get<std::string>() << "\n";
      }
    } else {
      out_ << j["reason"].get<std::string>() << "\n";  // "plugin FILE refused: why"
    }
    return j["loadable"] ? kCtlOk : kCtlNegative;
  }

  int ConfigValidate(const std::string& path) {
    auto cfg = LoadNodeConfig(path);
    std::vector<std::string> errors;
    Json modules = Json::array();
    if (!cfg.ok()) {
      errors.emplace_back(cfg.status().message());
    } else {
      for (const auto& [name, m] : cfg->modules) {
        Json mj = {{"name", name}, {"enabled", m.enabled}, {"plugin", m.plugin}};
        if (m.enabled) {
          auto prepared = PrepareModule(m, o_.plugin_dir);
          mj["valid"] = prepared.ok();
          if (!prepared.ok()) errors.emplace_back(prepared.status().message());
        }
        modules.push_back(mj);
      }
    }
    Json j = {{"path", path}, {"valid", errors.empty()}, {"errors", errors}, {"modules", modules}};
    if (cfg.ok()) {
      j["warnings"] = cfg->warnings;
      // What the file or directory resolves to (Terway keys mapped, the
      // trellis.yaml patch merged), secrets redacted.
      j["config"] = Redact(NodeConfigToJson(*cfg));
    }
    if (json()) {
      out_ << j.dump(2) << "\n";
    } else if (errors.empty()) {
      out_ << path << ": valid (" << modules.size() << " modules)\n";
      if (cfg.ok()) {
        for (const auto& w : cfg->warnings) out_ << "warning: " << w << "\n";
      }
    } else {
      for (const auto& e : errors) out_ << "invalid: " << e << "\n";
    }
    return errors.empty() ? kCtlOk : kCtlNegative;
  }

 private:
  const CtlOptions& o_;
  std::ostream& out_;
  std::ostream& err_;
  std::unique_ptr<rpc::Client> client_;
};

}  // namespace

std::string DefaultCtlPluginDir() { return Daemon::DefaultPluginDir(); }

int RunCtl(const CtlOptions& o, const std::vector<std::string>& args, std::ostream& out,
           std::ostream& err) {
  Ctl ctl(o, out, err);
  auto usage = [&](const std::string& what) {
    err << "trellisctl: " << what << " (see trellisctl --help)\n";
    if (o.output == "json") {
      out << Json{{"error", {{"code", "invalid_argument"}, {"message", what}}}}.dump(2) << "\n";
    }
    return kCtlUsage;
  };
  if (args.empty()) return usage("missing command");
  const std::string& cmd = args[0];
  auto nargs = args.size();
  if (cmd == "status" && nargs == 1) return ctl.Status();
  if (cmd == "modules" && nargs == 1) return ctl.Modules();
  if (cmd == "pods" && nargs == 1) return ctl.Pods();
  if (cmd == "health" && nargs == 1) return ctl.Health();
  if (cmd == "log-level" && nargs == 2) return ctl.LogLevel(args[1]);
  if (cmd == "pool" && nargs == 1) return ctl.Call("eni", "pool_status", Json::object());
  if (cmd == "pool" && nargs == 2 && (args[1] == "ensure" || args[1] == "gc")) {
    return ctl.Call("eni", args[1] == "gc" ? "gc" : "ensure_pool", Json::object());
  }
  if (cmd == "addresses" && nargs == 1) return ctl.Addresses();
  if (cmd == "policy" && nargs == 2 && args[1] == "explain") return ctl.PolicyExplain();
  if (cmd == "secgroup" && nargs == 2 && (args[1] == "diff" || args[1] == "sync")) {
    return ctl.Secgroup(args[1]);
  }
  if (cmd == "plugin" && nargs == 3 && args[1] == "inspect") return ctl.PluginInspect(args[2]);
  if (cmd == "config" && nargs == 3 && args[1] == "validate") return ctl.ConfigValidate(args[2]);
  return usage("unknown command or wrong arguments: " + cmd);
}

}  // namespace trellis
