// The client side of trellisd's gRPC API: unary calls over the daemon's unix
// socket. The CNI binary runs once per pod start, so this client is built for
// start-up cost, not generality: one blocking HTTP/2 connection driven by
// nghttp2 on the calling thread, no threads, no resolver, no channel state.
// It speaks the gRPC wire protocol (HTTP/2, content-type application/grpc,
// length-prefixed messages, grpc-status trailers) to the daemon's grpc++
// server; trellisctl uses it too, so there is one client.
//
// The socket is connected here, so that a missing or dead daemon is known at
// once (no reconnect back-off) and a full listen backlog reads as "busy".
#ifndef TRELLIS_CORE_CNI_CLIENT_H_
#define TRELLIS_CORE_CNI_CLIENT_H_

#include <google/protobuf/message_lite.h>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

namespace trellis {

enum class ConnectError { kNone, kUnreachable, kBusy, kPermission };

// gRPC status codes (the numbering of grpc/status.h), as the daemon sends them
// in grpc-status, or as this client concludes them from the connection.
enum class RpcCode {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
  kUnauthenticated = 16,
};

struct RpcStatus {
  RpcCode code = RpcCode::kOk;
  std::string message;
  bool ok() const { return code == RpcCode::kOk; }
};

class ApiClient {
 public:
  // Connects to `socket_path`; nullptr with `error` (and `kind`) set when the
  // daemon is not there, refuses us, or its backlog stays full for `timeout`.
  static std::unique_ptr<ApiClient> Connect(const std::string& socket_path,
                                            std::chrono::milliseconds timeout,
                                            std::string* error, ConnectError* kind = nullptr);
  ~ApiClient();
  ApiClient(const ApiClient&) = delete;
  ApiClient& operator=(const ApiClient&) = delete;

  // One unary call of trellis.v1.Trellis/`method`; calls on one client run
  // one after the other on its connection. The daemon is told the deadline
  // (grpc-timeout) and the client stops waiting at it (kDeadlineExceeded). A
  // connection lost mid-call is kUnavailable, and so is every later call.
  RpcStatus Call(std::string_view method, const google::protobuf::MessageLite& request,
                 google::protobuf::MessageLite* response, std::chrono::milliseconds timeout);

 private:
  struct Session;
  explicit ApiClient(int fd);
  std::unique_ptr<Session> s_;
};

}  // namespace trellis

#endif  // TRELLIS_CORE_CNI_CLIENT_H_
