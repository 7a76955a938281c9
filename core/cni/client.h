// Connecting to trellisd's unix socket. The socket is connected here (not by
// gRPC's resolver) so that a missing or dead daemon is known at once, without
// gRPC's reconnect back-off, and the connected fd is handed to gRPC.
#ifndef TRELLIS_CORE_CNI_CLIENT_H_
#define TRELLIS_CORE_CNI_CLIENT_H_

#include <grpcpp/channel.h>

#include <chrono>
#include <memory>
#include <string>

namespace trellis {

enum class ConnectError { kNone, kUnreachable, kBusy, kPermission };

// Returns a channel over a connected socket, or nullptr with `error` set.
std::shared_ptr<grpc::Channel> ConnectUnix(const std::string& socket_path,
                                           std::chrono::milliseconds timeout, std::string* error,
                                           ConnectError* kind = nullptr);

}  // namespace trellis

#endif  // TRELLIS_CORE_CNI_CLIENT_H_
