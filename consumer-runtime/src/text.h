// Text helpers for values the runtime writes to PostgreSQL text/jsonb columns from records it
// could not trust (a dead letter must never fail because a key holds invalid UTF-8 or a NUL).
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace converge::consumer::internal {

// Valid UTF-8 without NUL: unchanged. Otherwise every invalid byte and NUL becomes U+FFFD.
std::string SafeText(std::string_view s);

// A JSON object {"name": "value", ...} of the headers (SafeText applied; a repeated name keeps
// the last value, as jsonb does).
std::string HeadersJson(const std::vector<std::pair<std::string, std::string>>& headers);

}  // namespace converge::consumer::internal
