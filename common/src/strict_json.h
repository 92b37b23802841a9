// A small strict JSON (RFC 8259) reader and writer for the CloudEvents structured format.
// Private to converge::common. Stricter than RFC 8259 requires, on purpose:
//   - the input must be well-formed UTF-8 (checked up front);
//   - duplicate member names are rejected at every depth (RFC 8259 leaves them undefined);
//   - \u escapes that encode a lone surrogate are rejected (they cannot become UTF-8);
//   - nesting deeper than max_depth is rejected (the reader is recursive).
// No comments, trailing commas, NaN, leading zeros or single quotes.
//
// Thread safety: pure functions.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "converge/common/status.h"

namespace converge::json {

enum class Kind { kNull, kFalse, kTrue, kNumber, kString, kArray, kObject };

// One member of a top-level object.
struct Member {
  std::string name;  // unescaped
  Kind kind = Kind::kNull;
  std::string_view raw;      // the value's exact source text (no surrounding whitespace)
  std::string string_value;  // unescaped; only for kString
};

// Parses `text` as one JSON object (whitespace around it allowed) and returns its members in
// document order. `max_depth` counts the top-level object as 1. `max_members` bounds the
// top-level member count.
Result<std::vector<Member>> ParseObject(std::string_view text, int max_depth, size_t max_members);

// OK when `text` is exactly one JSON value under the same rules (whitespace around it allowed).
Status ValidateText(std::string_view text, int max_depth);

// Appends `utf8` as a JSON string literal with quotes. Escapes '"', '\\' and U+0000-U+001F;
// everything else is copied as is, so the input must be valid UTF-8.
void AppendString(std::string* out, std::string_view utf8);

}  // namespace converge::json
