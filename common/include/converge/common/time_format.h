// RFC 3339 timestamps (the CloudEvents `Timestamp` type): formatting in UTC and strict parsing.
//
// Thread safety: pure functions.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "converge/common/status.h"

namespace converge {

// How many fractional-second digits FormatRfc3339 writes.
enum class SubsecondDigits {
  // Always 3 digits; sub-millisecond precision is truncated (toward the past).
  kMillis,
  // 3 digits when the time is a whole millisecond, else 6 when it is a whole microsecond, else
  // 9. Never loses information, so Parse(Format(t)) == t for every time_point.
  kLossless,
};

// "2024-05-01T12:34:56.789Z": always UTC with 'Z', always with a fractional part.
std::string FormatRfc3339(std::chrono::system_clock::time_point t,
                          SubsecondDigits digits = SubsecondDigits::kMillis);

// Parses an RFC 3339 `date-time` (section 5.6): "YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)".
// Accepts lower-case 't' and 'z' (RFC 3339 allows them) and any number of fractional digits
// (digits after the ninth are truncated: system_clock counts nanoseconds). "-00:00" is UTC.
// Rejects: a space instead of 'T', a missing offset, impossible dates (2023-02-29), hour 24,
// leap seconds (":60", which system_clock cannot represent), offsets beyond 23:59, trailing
// text, and times outside what system_clock can hold (about 1677 to 2262).
// Errors are kInvalidArgument with a reason such as "expected 'T' at byte 10".
Result<std::chrono::system_clock::time_point> ParseRfc3339(std::string_view text);

}  // namespace converge
