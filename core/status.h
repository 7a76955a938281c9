// One status type inside the host: absl::Status / absl::StatusOr.
// Conversions to and from the plugin ABI's status codes live here.
#ifndef TRELLIS_CORE_STATUS_H_
#define TRELLIS_CORE_STATUS_H_

#include <trellis/abi.h>

#include <absl/status/status.h>
#include <absl/status/statusor.h>
#include <absl/strings/string_view.h>
#include <fmt/format.h>

#include <string>
#include <string_view>

namespace trellis {

using absl::Status;
using absl::StatusOr;

// Maps a plugin status code and its message onto an absl::Status.
Status FromAbi(trellis_status code, std::string_view message);
// Maps an absl::Status onto a plugin status code (for the host API).
trellis_status ToAbi(const Status& s);
// Writes a message into a caller-owned ABI error buffer.
void WriteAbiError(trellis_error* err, std::string_view message);
inline void WriteAbiError(trellis_error* err, absl::string_view message) {
  WriteAbiError(err, std::string_view(message.data(), message.size()));
}
inline void WriteAbiError(trellis_error* err, const char* message) {
  WriteAbiError(err, std::string_view(message));
}

// Prefixes the message of a non-OK status with `context: `.
Status Annotate(const Status& s, std::string_view context);

#define TRELLIS_RETURN_IF_ERROR(expr)      \
  do {                                     \
    ::absl::Status _st = (expr);           \
    if (!_st.ok()) return _st;             \
  } while (0)

#define TRELLIS_CONCAT_INNER(a, b) a##b
#define TRELLIS_CONCAT(a, b) TRELLIS_CONCAT_INNER(a, b)
#define TRELLIS_ASSIGN_OR_RETURN(lhs, expr) \
  TRELLIS_ASSIGN_OR_RETURN_IMPL(TRELLIS_CONCAT(_so_, __LINE__), lhs, expr)
#define TRELLIS_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return tmp.status();                 \
  lhs = std::move(tmp).value()

}  // namespace trellis

// Debian's abseil has its own string_view (not std's): let fmt print it.
template <>
struct fmt::formatter<absl::string_view> : fmt::formatter<fmt::string_view> {
  template <class Ctx>
  auto format(absl::string_view s, Ctx& ctx) const {
    return fmt::formatter<fmt::string_view>::format(fmt::string_view(s.data(), s.size()), ctx);
  }
};

#endif  // TRELLIS_CORE_STATUS_H_
