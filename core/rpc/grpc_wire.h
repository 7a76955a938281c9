// The gRPC wire protocol as trellisd's API uses it: unary calls over HTTP/2
// (nghttp2) on a unix socket, shared by the server (core/rpc/server.cc) and
// the client (core/rpc/client.cc). Only what unary calls need: status codes,
// the 5-byte message framing, grpc-timeout and grpc-message encoding
// (gRPC's doc/PROTOCOL-HTTP2.md).
#ifndef TRELLIS_CORE_RPC_GRPC_WIRE_H_
#define TRELLIS_CORE_RPC_GRPC_WIRE_H_

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace trellis::rpc {

// gRPC status codes, numbered as in grpc/status.h (and absl::StatusCode).
enum class Code {
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
  Code code = Code::kOk;
  std::string message;
  bool ok() const { return code == Code::kOk; }
};

// The service every method lives in; paths are kServicePath + method name.
inline constexpr std::string_view kServicePath = "/trellis.v1.Trellis/";
// Largest message either side accepts.
inline constexpr size_t kMaxMessageBytes = 16 << 20;

// One length-prefixed message: flag 0 (uncompressed), 4-byte big-endian length.
std::string Frame(std::string_view message);
// The single uncompressed message of a request or response body; nullopt
// when the body is not exactly one (`why` says what is wrong).
std::optional<std::string_view> Unframe(std::string_view body, std::string* why);

// grpc-timeout: at most eight digits and a unit.
std::string FormatTimeout(std::chrono::milliseconds t);

// grpc-message is percent-encoded.
std::string PercentEncode(std::string_view v);
std::string PercentDecode(std::string_view v);

}  // namespace trellis::rpc

#endif  // TRELLIS_CORE_RPC_GRPC_WIRE_H_
