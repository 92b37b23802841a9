#include "text.h"

#include <cstdio>

#include "converge/common/utf8.h"

namespace converge::consumer::internal {

std::string SafeText(std::string_view s) {
  if (s.find('\0') == std::string_view::npos && IsValidUtf8(s)) return std::string(s);
  std::string out;
  out.reserve(s.size());
  while (!s.empty()) {
    const size_t bad = FindInvalidUtf8(s);
    const size_t nul = s.find('\0');
    const size_t cut = std::min(bad, nul);
    if (cut == std::string_view::npos || cut >= s.size()) {
      out.append(s);
      break;
    }
    out.append(s.substr(0, cut));
    out.append("\xEF\xBF\xBD");  // U+FFFD
    s.remove_prefix(cut + 1);
  }
  return out;
}

namespace {

void AppendJsonString(std::string& out, std::string_view s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

}  // namespace

std::string HeadersJson(const std::vector<std::pair<std::string, std::string>>& headers) {
  std::string out = "{";
  bool first = true;
  for (const auto& [name, value] : headers) {
    if (!first) out += ',';
    first = false;
    AppendJsonString(out, SafeText(name));
    out += ':';
    AppendJsonString(out, SafeText(value));
  }
  out += '}';
  return out;
}

}  // namespace converge::consumer::internal
