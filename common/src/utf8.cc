#include "converge/common/utf8.h"

#include <cstdio>
#include <string>

namespace converge {
namespace {

// Decodes the sequence starting at s[i]. Returns its length and stores the code point, or
// returns 0 when the sequence is ill-formed (RFC 3629 section 4 table of well-formed bytes).
size_t DecodeScalar(std::string_view s, size_t i, char32_t* cp) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  }
  size_t n = 0;
  char32_t c = 0;
  char32_t min = 0;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    n = 2, c = b0 & 0x1F, min = 0x80;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    n = 3, c = b0 & 0x0F, min = 0x800;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    n = 4, c = b0 & 0x07, min = 0x10000;
  } else {
    return 0;  // 0x80-0xC1 (continuation or overlong lead) and 0xF5-0xFF never start a sequence
  }
  if (s.size() - i < n) return 0;
  for (size_t k = 1; k < n; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0) != 0x80) return 0;
    c = (c << 6) | (b & 0x3F);
  }
  if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
  *cp = c;
  return n;
}

bool IsControl(char32_t cp) { return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F); }

bool IsNoncharacter(char32_t cp) {
  return (cp >= 0xFDD0 && cp <= 0xFDEF) || (cp & 0xFFFE) == 0xFFFE;
}

enum class Problem { kNone, kIllFormed, kControl, kNoncharacter };

struct Finding {
  Problem problem = Problem::kNone;
  size_t offset = 0;
  char32_t cp = 0;
};

Finding Scan(std::string_view s, bool check_characters) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b >= 0x20 && b < 0x7F) {  // fast path: printable ASCII
      ++i;
      continue;
    }
    char32_t cp = 0;
    const size_t n = DecodeScalar(s, i, &cp);
    if (n == 0) return {Problem::kIllFormed, i, 0};
    if (check_characters) {
      if (IsControl(cp)) return {Problem::kControl, i, cp};
      if (IsNoncharacter(cp)) return {Problem::kNoncharacter, i, cp};
    }
    i += n;
  }
  return {};
}

}  // namespace

bool IsValidUtf8(std::string_view text) { return Scan(text, false).problem == Problem::kNone; }

size_t FindInvalidUtf8(std::string_view text) {
  const Finding f = Scan(text, false);
  return f.problem == Problem::kNone ? std::string_view::npos : f.offset;
}

bool IsValidAttributeText(std::string_view text) {
  return Scan(text, true).problem == Problem::kNone;
}

Status ValidateAttributeText(std::string_view field, std::string_view text) {
  const Finding f = Scan(text, true);
  if (f.problem == Problem::kNone) return Status::Ok();
  std::string msg(field);
  char cp[16];
  std::snprintf(cp, sizeof cp, "U+%04X", static_cast<unsigned>(f.cp));
  switch (f.problem) {
    case Problem::kIllFormed:
      msg += " is not valid UTF-8 at byte " + std::to_string(f.offset);
      break;
    case Problem::kControl:
      msg += " contains " + std::string(cp) + " at byte " + std::to_string(f.offset) +
             " (control characters are not allowed)";
      break;
    case Problem::kNoncharacter:
      msg += " contains " + std::string(cp) + " at byte " + std::to_string(f.offset) +
             " (Unicode noncharacters are not allowed)";
      break;
    case Problem::kNone:
      break;
  }
  return Status::InvalidArgument(std::move(msg));
}

}  // namespace converge
