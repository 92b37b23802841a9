// Private text helpers shared by log.cc, config.cc and metrics.cc: number formatting, escaping,
// UTF-8 checks, edit distance. Not part of the public API.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace converge::obs_internal {

// Length of the well-formed UTF-8 sequence starting at s[i] (1..4), or 0 when the bytes there
// are not well-formed (overlong, surrogate, truncated, > U+10FFFF).
size_t Utf8SequenceLength(std::string_view s, size_t i);

// Shortest text that reads back as the same double: "1", "0.25", "1e+21"; "NaN", "+Inf", "-Inf".
std::string FormatDouble(double v);

// How AppendQuoted writes what cannot appear as is: control characters and bytes that are not
// well-formed UTF-8.
enum class QuoteStyle {
  kJson,    // controls as \u00XX; malformed bytes become U+FFFD (always valid JSON)
  kLogfmt,  // controls and malformed bytes as \xXX (the original byte stays visible)
};
// Appends `s` in double quotes; `"`, `\`, \n, \r and \t are backslash-escaped.
void AppendQuoted(std::string& out, std::string_view s, QuoteStyle style);

// AppendQuoted(out, s, QuoteStyle::kJson): a JSON string literal.
void AppendJsonString(std::string& out, std::string_view s);

// Levenshtein distance, for "did you mean" suggestions.
size_t EditDistance(std::string_view a, std::string_view b);

char AsciiLower(char c);
bool EqualsIgnoreCase(std::string_view a, std::string_view b);
std::string_view Trim(std::string_view s);

}  // namespace converge::obs_internal
