// Alibaba Cloud's RPC request signature, version 1.0 (HMAC-SHA1):
//
//   canonical  = join("&", PercentEncode(k) "=" PercentEncode(v)
//                          for (k, v) in params sorted by k, Signature excluded)
//   to_sign    = METHOD "&" PercentEncode("/") "&" PercentEncode(canonical)
//   Signature  = Base64(HMAC-SHA1(AccessKeySecret "&", to_sign))
//
// PercentEncode is RFC 3986: A-Z a-z 0-9 - _ . ~ stay, every other byte of
// the UTF-8 text becomes %XY (upper-case hex), so a space is %20 (not '+'),
// '*' is %2A and '~' stays.
#ifndef TRELLIS_PLUGINS_COMMON_ALIYUN_SIGNER_H_
#define TRELLIS_PLUGINS_COMMON_ALIYUN_SIGNER_H_

#include <map>
#include <string>
#include <string_view>

namespace trellis::aliyun {

using Params = std::map<std::string, std::string>;

std::string PercentEncode(std::string_view s);
// The sorted, encoded query (also usable as the request's query string).
std::string CanonicalQuery(const Params& params);
std::string StringToSign(const std::string& method, const Params& params);
std::string HmacSha1Base64(std::string_view key, std::string_view data);
// The Signature value (not yet percent-encoded) for `params` signed with
// `access_key_secret`.
std::string SignRpc(const std::string& method, const Params& params,
                    std::string_view access_key_secret);

}  // namespace trellis::aliyun

#endif  // TRELLIS_PLUGINS_COMMON_ALIYUN_SIGNER_H_
