#include "aliyun/signer.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <stdexcept>

namespace trellis::aliyun {

std::string PercentEncode(std::string_view s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size() * 3);
  for (unsigned char c : s) {
    bool unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                      c == '-' || c == '_' || c == '.' || c == '~';
    if (unreserved) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xF]);
    }
  }
  return out;
}

std::string CanonicalQuery(const Params& params) {
  // std::map orders keys by byte value, which is the order the service uses.
  std::string out;
  for (const auto& [k, v] : params) {
    if (k == "Signature") continue;
    if (!out.empty()) out.push_back('&');
    out += PercentEncode(k);
    out.push_back('=');
    out += PercentEncode(v);
  }
  return out;
}

std::string StringToSign(const std::string& method, const Params& params) {
  return method + "&" + PercentEncode("/") + "&" + PercentEncode(CanonicalQuery(params));
}

std::string HmacSha1Base64(std::string_view key, std::string_view data) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (HMAC(EVP_sha1(), key.data(), static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac, &len) == nullptr) {
    throw std::runtime_error("HMAC-SHA1 failed");
  }
  std::string out(4 * ((len + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), mac, static_cast<int>(len));
  out.resize(n);
  return out;
}

std::string SignRpc(const std::string& method, const Params& params,
                    std::string_view access_key_secret) {
  std::string key(access_key_secret);
  key.push_back('&');
  return HmacSha1Base64(key, StringToSign(method, params));
}

}  // namespace trellis::aliyun
