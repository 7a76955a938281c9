#include "core/rpc/grpc_wire.h"

#include <algorithm>

namespace trellis::rpc {

std::string Frame(std::string_view message) {
  std::string out(5, '\0');
  auto n = static_cast<uint32_t>(message.size());
  out[1] = static_cast<char>(n >> 24);
  out[2] = static_cast<char>(n >> 16);
  out[3] = static_cast<char>(n >> 8);
  out[4] = static_cast<char>(n);
  out.append(message);
  return out;
}

std::optional<std::string_view> Unframe(std::string_view body, std::string* why) {
  if (body.size() < 5) {
    *why = "no message";
    return std::nullopt;
  }
  if (body[0] != 0) {
    *why = "compressed messages are not supported";
    return std::nullopt;
  }
  auto b = reinterpret_cast<const unsigned char*>(body.data());
  uint32_t n = (uint32_t{b[1]} << 24) | (uint32_t{b[2]} << 16) | (uint32_t{b[3]} << 8) | b[4];
  if (n != body.size() - 5) {
    *why = "not exactly one message";
    return std::nullopt;
  }
  return body.substr(5);
}

std::string FormatTimeout(std::chrono::milliseconds t) {
  long long ms = std::max<long long>(t.count(), 1);
  if (ms <= 99999999) return std::to_string(ms) + "m";
  return std::to_string(std::min<long long>((ms + 999) / 1000, 99999999)) + "S";
}

std::string PercentEncode(std::string_view v) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string o;
  o.reserve(v.size());
  for (unsigned char c : v) {
    if (c >= 0x20 && c <= 0x7e && c != '%') {
      o += static_cast<char>(c);
    } else {
      o += '%';
      o += kHex[c >> 4];
      o += kHex[c & 15];
    }
  }
  return o;
}

std::string PercentDecode(std::string_view v) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string o;
  o.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    int hi, lo;
    if (v[i] == '%' && i + 2 < v.size() && (hi = hex(v[i + 1])) >= 0 && (lo = hex(v[i + 2])) >= 0) {
      o += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      o += v[i];
    }
  }
  return o;
}

}  // namespace trellis::rpc
