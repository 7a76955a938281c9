#include "aliyun/rpc_client.h"

#include <algorithm>
#include <cmath>
#include <random>

namespace trellis::aliyun {
namespace {

using Json = nlohmann::json;

double Random01() {
  thread_local std::mt19937_64 gen{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(gen);
}

CloudError WithNote(const CloudError& e, const std::string& note) {
  return CloudError(e.kind(), e.action(), e.code(), e.http_status(), e.request_id(),
                    std::string(e.what()) + " (" + note + ")");
}

}  // namespace

RpcClient::RpcClient(RpcOptions options, std::shared_ptr<HttpTransport> transport,
                     std::shared_ptr<CredentialProvider> credentials, Clock* clock,
                     RpcObserver* observer)
    : options_(std::move(options)),
      transport_(std::move(transport)),
      credentials_(std::move(credentials)),
      clock_(clock),
      observer_(observer),
      limiter_(clock, options_.default_limit, options_.limits),
      gate_(clock, options_.max_concurrent) {}

std::string RpcClient::NewUuid() {
  thread_local std::mt19937_64 gen{std::random_device{}()};
  uint64_t hi = gen(), lo = gen();
  hi = (hi & 0xFFFFFFFFFFFF0FFFULL) | 0x0000000000004000ULL;  // version 4
  lo = (lo & 0x3FFFFFFFFFFFFFFFULL) | 0x8000000000000000ULL;  // RFC 4122 variant
  char buf[37];
  std::snprintf(buf, sizeof buf, "%08x-%04x-%04x-%04x-%012llx", static_cast<unsigned>(hi >> 32),
                static_cast<unsigned>((hi >> 16) & 0xFFFF), static_cast<unsigned>(hi & 0xFFFF),
                static_cast<unsigned>(lo >> 48),
                static_cast<unsigned long long>(lo & 0xFFFFFFFFFFFFULL));
  return buf;
}

bool RpcClient::Retryable(const CloudError& e) {
  switch (e.kind()) {
    case CloudError::Kind::kTransport:
    case CloudError::Kind::kTimeout:
      return true;
    case CloudError::Kind::kApi:
      break;
    default:
      return false;
  }
  for (const char* p : {"Throttling", "ServiceUnavailable", "InternalError", "UnknownError",
                        "OperationConflict", "IncorrectInstanceStatus", "LastTokenProcessing",
                        "IdempotentProcessing", "SignatureNonceUsed"}) {
    if (e.Is(p)) return true;
  }
  // An answer without a code of its own (a proxy's 502, 503, 504).
  return e.http_status() >= 500 && e.code().rfind("Http", 0) == 0;
}

void RpcClient::UpdateLimits(RateLimit default_limit, std::map<std::string, RateLimit> limits,
                             int max_concurrent) {
  limiter_.Update(default_limit, std::move(limits));
  gate_.SetLimit(max_concurrent);
}

Json RpcClient::Call(const std::string& action, Params params, Idempotency idempotency) {
  if (idempotency == Idempotency::kWrite &&
      (!params.contains("ClientToken") || params["ClientToken"].empty())) {
    params["ClientToken"] = NewUuid();
  }
  if (!options_.region.empty() && !params.contains("RegionId")) params["RegionId"] = options_.region;
  const SteadyTime deadline = clock_->Now() + options_.call_timeout;
  bool refreshed = false;
  for (int attempt = 1;; ++attempt) {
    std::vector<std::string> secrets;
    bool had_token = false;
    try {
      return Attempt(action, params, deadline, &secrets);
    } catch (const CloudError& e) {
      if (e.kind() == CloudError::Kind::kCancelled || e.kind() == CloudError::Kind::kCredentials ||
          e.kind() == CloudError::Kind::kInvalid) {
        throw;
      }
      had_token = secrets.size() > 3;  // three forms per secret: the token is the second
      bool refused = e.Is("InvalidSecurityToken") || (had_token && e.Is("InvalidAccessKeyId"));
      if (refused && !refreshed) {
        // STS credentials rotate; ask for fresh ones once, at once.
        credentials_->Invalidate();
        refreshed = true;
        continue;
      }
      if (!Retryable(e)) throw;
      if (attempt >= options_.max_attempts) {
        throw WithNote(e, "gave up after " + std::to_string(attempt) + " attempts");
      }
      auto base = e.IsThrottling() ? options_.throttle_backoff_base : options_.backoff_base;
      double exp = std::min<double>(static_cast<double>(options_.backoff_max.count()),
                                    base.count() * std::pow(2.0, attempt - 1));
      // Jitter in [exp/2, exp]: nodes throttled together do not retry together.
      auto wait = std::chrono::milliseconds(static_cast<int64_t>(exp * (0.5 + 0.5 * Random01())));
      if (clock_->Now() + wait >= deadline) {
        throw WithNote(e, "gave up after " + std::to_string(attempt) +
                              " attempts: the call's timeout of " +
                              std::to_string(options_.call_timeout.count()) + " ms would pass");
      }
      if (!clock_->SleepFor(wait)) {
        throw CloudError(CloudError::Kind::kCancelled, action, "Cancelled", 0, "",
                         "ECS " + action + ": cancelled (shutting down)");
      }
    }
  }
}

Json RpcClient::Attempt(const std::string& action, const Params& params, SteadyTime deadline,
                        std::vector<std::string>* secrets) {
  auto refuse = [&](const std::string& what) {
    bool cancelled = clock_->Cancelled();
    return CloudError(cancelled ? CloudError::Kind::kCancelled : CloudError::Kind::kTimeout, action,
                      cancelled ? "Cancelled" : "Timeout", 0, "",
                      "ECS " + action + ": " +
                          (cancelled ? std::string("cancelled (shutting down)")
                                     : what + " before the call's timeout"));
  };
  if (!limiter_.Acquire(action, deadline)) {
    throw refuse("the client-side rate limit allows no call");
  }
  if (!gate_.Enter(deadline)) throw refuse("no slot among the concurrent cloud calls freed up");
  struct Leave {
    CallGate* g;
    ~Leave() { g->Leave(); }
  } leave{&gate_};

  Credentials c = credentials_->Get();
  for (const std::string* s : {&c.access_key_secret, &c.security_token}) {
    if (s->empty()) continue;
    secrets->push_back(*s);
    secrets->push_back(PercentEncode(*s));
    secrets->push_back(PercentEncode(PercentEncode(*s)));
  }
  Params p = params;
  p["Action"] = action;
  p["Version"] = options_.version;
  p["Format"] = "JSON";
  p["AccessKeyId"] = c.access_key_id;
  p["SignatureMethod"] = "HMAC-SHA1";
  p["SignatureVersion"] = "1.0";
  p["SignatureNonce"] = NewUuid();
  p["Timestamp"] = FormatIso8601(clock_->WallNow());
  if (!c.security_token.empty()) p["SecurityToken"] = c.security_token;
  std::string signature = SignRpc("GET", p, c.access_key_secret);

  HttpRequest req;
  req.method = "GET";
  req.scheme = options_.endpoint.scheme;
  req.host = options_.endpoint.host;
  req.port = options_.endpoint.port;
  req.target = "/?" + CanonicalQuery(p) + "&Signature=" + PercentEncode(signature);
  req.headers = {{"User-Agent", options_.user_agent}, {"Accept", "application/json"}};
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock_->Now());
  req.timeout = std::max(std::chrono::milliseconds(200), std::min(options_.attempt_timeout, left));

  SteadyTime t0 = clock_->Now();
  HttpResponse res = transport_->Send(req);
  double secs = std::chrono::duration<double>(clock_->Now() - t0).count();

  if (res.status == 0) {
    const char* code = res.timed_out ? "Timeout" : "Transport";
    if (observer_ != nullptr) observer_->OnAttempt(action, code, secs);
    throw CloudError(res.timed_out ? CloudError::Kind::kTimeout : CloudError::Kind::kTransport,
                     action, code, 0, "",
                     "ECS " + action + " at " + options_.endpoint.ToString() + ": " +
                         ScrubSecrets(res.error, *secrets));
  }
  Json body = Json::parse(res.body, nullptr, false);
  if (res.status == 200 && body.is_object()) {
    if (observer_ != nullptr) observer_->OnAttempt(action, "OK", secs);
    return body;
  }
  std::string code, message, request_id;
  if (body.is_object()) {
    code = body.value("Code", "");
    message = body.value("Message", "");
    request_id = body.value("RequestId", "");
  }
  if (code.empty()) code = res.status == 200 ? "InvalidResponse" : "Http" + std::to_string(res.status);
  if (message.empty()) {
    message = res.status == 200 ? "the answer is not a JSON object"
                                : "HTTP " + std::to_string(res.status);
  }
  if (observer_ != nullptr) observer_->OnAttempt(action, code, secs);
  message = ScrubSecrets(message, *secrets);
  if (message.size() > 400) message = message.substr(0, 400) + "...";
  throw CloudError(res.status == 200 ? CloudError::Kind::kTransport : CloudError::Kind::kApi,
                   action, code, res.status, request_id,
                   "ECS " + action + ": " + code + " (HTTP " + std::to_string(res.status) +
                       (request_id.empty() ? "" : ", request " + request_id) + "): " + message);
}

}  // namespace trellis::aliyun
