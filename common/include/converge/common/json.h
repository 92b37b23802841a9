// Writing small JSON values: string literals and flat objects of strings (headers, details).
// One escaper for the whole project; parsing lives in the envelope codec.
//
// Thread safety: free functions.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace converge {

// Appends `s` as a JSON string literal, quotes included. Control characters are escaped
// (\n, \t, \u0001 ...); bytes that are not well-formed UTF-8 become U+FFFD, so the output is
// always valid JSON.
void AppendJsonString(std::string& out, std::string_view s);

// {"name":"value",...} in the given order.
std::string JsonObjectOfStrings(const std::vector<std::pair<std::string, std::string>>& fields);
std::string JsonObjectOfStrings(const std::map<std::string, std::string>& fields);

}  // namespace converge
