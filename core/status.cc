#include "core/status.h"

#include <cstring>

namespace trellis {

Status FromAbi(trellis_status code, std::string_view message) {
  std::string m(message);
  switch (code) {
    case TRELLIS_OK: return absl::OkStatus();
    case TRELLIS_E_INVALID: return absl::InvalidArgumentError(m);
    case TRELLIS_E_NOT_FOUND: return absl::NotFoundError(m);
    case TRELLIS_E_EXISTS: return absl::AlreadyExistsError(m);
    case TRELLIS_E_EXHAUSTED: return absl::ResourceExhaustedError(m);
    case TRELLIS_E_UNAVAILABLE: return absl::UnavailableError(m);
    case TRELLIS_E_PRECONDITION: return absl::FailedPreconditionError(m);
    case TRELLIS_E_UNIMPLEMENTED: return absl::UnimplementedError(m);
    case TRELLIS_E_TIMEOUT: return absl::DeadlineExceededError(m);
    case TRELLIS_E_MISMATCH: return absl::DataLossError(m);
    case TRELLIS_E_BUFFER: return absl::OutOfRangeError(m);
    default: return absl::InternalError(m);
  }
}

trellis_status ToAbi(const Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kOk: return TRELLIS_OK;
    case absl::StatusCode::kInvalidArgument: return TRELLIS_E_INVALID;
    case absl::StatusCode::kNotFound: return TRELLIS_E_NOT_FOUND;
    case absl::StatusCode::kAlreadyExists: return TRELLIS_E_EXISTS;
    case absl::StatusCode::kResourceExhausted: return TRELLIS_E_EXHAUSTED;
    case absl::StatusCode::kUnavailable: return TRELLIS_E_UNAVAILABLE;
    case absl::StatusCode::kFailedPrecondition: return TRELLIS_E_PRECONDITION;
    case absl::StatusCode::kUnimplemented: return TRELLIS_E_UNIMPLEMENTED;
    case absl::StatusCode::kDeadlineExceeded: return TRELLIS_E_TIMEOUT;
    case absl::StatusCode::kDataLoss: return TRELLIS_E_MISMATCH;
    case absl::StatusCode::kOutOfRange: return TRELLIS_E_BUFFER;
    default: return TRELLIS_E_INTERNAL;
  }
}

void WriteAbiError(trellis_error* err, std::string_view message) {
  if (err == nullptr || err->message == nullptr || err->capacity == 0) return;
  size_t n = std::min(message.size(), err->capacity - 1);
  std::memcpy(err->message, message.data(), n);
  err->message[n] = '\0';
}

Status Annotate(const Status& s, std::string_view context) {
  if (s.ok()) return s;
  return Status(s.code(), std::string(context) + ": " + std::string(s.message()));
}

}  // namespace trellis
