#include "converge/common/json.h"

#include "obs_text.h"

namespace converge {
namespace {

template <typename Fields>
std::string ObjectOf(const Fields& fields) {
  std::string out = "{";
  bool first = true;
  for (const auto& [name, value] : fields) {
    if (!first) out += ',';
    first = false;
    AppendJsonString(out, name);
    out += ':';
    AppendJsonString(out, value);
  }
  out += '}';
  return out;
}

}  // namespace

void AppendJsonString(std::string& out, std::string_view s) {
  obs_internal::AppendJsonString(out, s);
}

std::string JsonObjectOfStrings(const std::vector<std::pair<std::string, std::string>>& fields) {
  return ObjectOf(fields);
}

std::string JsonObjectOfStrings(const std::map<std::string, std::string>& fields) {
  return ObjectOf(fields);
}

}  // namespace converge
