#include "text.h"

#include "converge/common/json.h"
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

std::string HeadersJson(const std::vector<std::pair<std::string, std::string>>& headers) {
  std::vector<std::pair<std::string, std::string>> safe;
  safe.reserve(headers.size());
  for (const auto& [name, value] : headers) safe.emplace_back(SafeText(name), SafeText(value));
  return JsonObjectOfStrings(safe);
}

}  // namespace converge::consumer::internal
