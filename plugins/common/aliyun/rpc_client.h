// The RPC-style Alibaba Cloud OpenAPI client (ECS is RPC style, Version
// 2014-05-26): signs every request (signature version 1.0), limits the rate
// per action and the calls in flight, bounds every attempt and every call
// with a timeout, and retries what is worth retrying with exponential
// back-off and jitter:
//   Throttling*                                  (longer back-off)
//   ServiceUnavailable*, InternalError*, UnknownError, HTTP 5xx without code
//   OperationConflict*, IncorrectInstanceStatus*, LastTokenProcessing,
//   IdempotentProcessing                         (the resource is busy)
//   SignatureNonceUsed                           (a new nonce per attempt)
//   InvalidSecurityToken.*, and InvalidAccessKeyId.NotFound with STS
//                                                (credentials refreshed, once)
//   no answer / timeout                          (writes are safe to repeat:
//                                                 they carry a ClientToken)
//
// Every write (Idempotency::kWrite) carries a ClientToken: the caller's, so a
// request repeated after a crash is the same request to ECS, or one made here
// and kept for all retries of the call.
#ifndef TRELLIS_PLUGINS_COMMON_ALIYUN_RPC_CLIENT_H_
#define TRELLIS_PLUGINS_COMMON_ALIYUN_RPC_CLIENT_H_

#include <chrono>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "aliyun/clock.h"
#include "aliyun/credentials.h"
#include "aliyun/errors.h"
#include "aliyun/http.h"
#include "aliyun/rate_limiter.h"
#include "aliyun/signer.h"

namespace trellis::aliyun {

struct RpcOptions {
  Endpoint endpoint;
  std::string version = "2014-05-26";
  std::string region;  // sent as RegionId unless the call sets it
  std::chrono::milliseconds attempt_timeout{10000};
  std::chrono::milliseconds call_timeout{60000};  // all attempts and waits of one call
  int max_attempts = 6;
  std::chrono::milliseconds backoff_base{200};
  std::chrono::milliseconds throttle_backoff_base{1000};
  std::chrono::milliseconds backoff_max{10000};
  RateLimit default_limit{20, 40};
  std::map<std::string, RateLimit> limits;  // per action
  int max_concurrent = 10;
  std::string user_agent = "trellis/1.0";
};

// Told about every attempt, for metrics. THREADING: called concurrently.
class RpcObserver {
 public:
  virtual ~RpcObserver() = default;
  // `code` is "OK", the service's error code, or Transport/Timeout.
  virtual void OnAttempt(const std::string& action, const std::string& code, double seconds) = 0;
};

enum class Idempotency { kRead, kWrite };

// THREADING: Call may run concurrently.
class RpcClient {
 public:
  RpcClient(RpcOptions options, std::shared_ptr<HttpTransport> transport,
            std::shared_ptr<CredentialProvider> credentials, Clock* clock,
            RpcObserver* observer = nullptr);

  // Calls `action` with `params` (the action's own parameters; the common
  // ones are added here). A write without "ClientToken" gets one. Returns the
  // response body. Throws CloudError.
  nlohmann::json Call(const std::string& action, Params params, Idempotency idempotency);

  void UpdateLimits(RateLimit default_limit, std::map<std::string, RateLimit> limits,
                    int max_concurrent);
  const RpcOptions& options() const { return options_; }
  const CredentialProvider& credentials() const { return *credentials_; }

  static bool Retryable(const CloudError& e);
  // A random UUID (version 4), the form ECS documents for ClientToken and
  // SignatureNonce.
  static std::string NewUuid();

 private:
  nlohmann::json Attempt(const std::string& action, const Params& params, SteadyTime deadline,
                         std::vector<std::string>* secrets);

  RpcOptions options_;
  std::shared_ptr<HttpTransport> transport_;
  std::shared_ptr<CredentialProvider> credentials_;
  Clock* clock_;
  RpcObserver* observer_;
  RateLimiter limiter_;
  CallGate gate_;
};

}  // namespace trellis::aliyun

#endif  // TRELLIS_PLUGINS_COMMON_ALIYUN_RPC_CLIENT_H_
