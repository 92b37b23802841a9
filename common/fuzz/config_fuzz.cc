// libFuzzer target for the config file parser and the value parsers.
//
//   cmake -DCONVERGE_FUZZ=ON -DCMAKE_CXX_COMPILER=clang++ ... && ./config_fuzz -max_total_time=60
//
// Besides "no crash, no sanitizer report", it checks invariants: every parsed key is a valid
// key, line numbers increase, and durations/sizes survive Format → Parse unchanged.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "converge/common/config.h"

namespace {

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

bool IsKeyChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  auto entries = converge::ParseConfigText(text, "fuzz.conf");
  if (entries.ok()) {
    int last_line = 0;
    for (const converge::ConfigFileEntry& e : *entries) {
      Check(!e.key.empty() && e.key.front() != '.' && e.key.back() != '.');
      for (char c : e.key) Check(IsKeyChar(c));
      Check(e.line > last_line);
      last_line = e.line;
    }
  } else {
    Check(entries.status().code() == converge::StatusCode::kInvalidArgument);
    Check(entries.status().message().rfind("fuzz.conf:", 0) == 0);
  }

  if (auto d = converge::ParseDuration(text); d.ok()) {
    Check(d->count() >= 0);
    auto again = converge::ParseDuration(converge::FormatDuration(*d));
    Check(again.ok() && *again == *d);
  }
  if (auto b = converge::ParseBytes(text); b.ok()) {
    auto again = converge::ParseBytes(converge::FormatBytes(*b));
    Check(again.ok() && *again == *b);
  }
  (void)converge::ParseBool(text);
  return 0;
}
