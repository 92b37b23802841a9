#include "converge/common/time_format.h"

#include <cstdint>
#include <cstdio>

namespace converge {
namespace {

constexpr int64_t kNanosPerSecond = 1'000'000'000;
constexpr int64_t kSecondsPerDay = 86'400;

int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

// Reads exactly `n` decimal digits at text[*pos]; false when they are not all digits.
bool ReadDigits(std::string_view text, size_t* pos, size_t n, int* out) {
  if (text.size() - *pos < n) return false;
  int v = 0;
  for (size_t i = 0; i < n; ++i) {
    const char c = text[*pos + i];
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *pos += n;
  *out = v;
  return true;
}

Status Bad(std::string what, size_t pos) {
  return Status::InvalidArgument(std::move(what) + " at byte " + std::to_string(pos));
}

bool Expect(std::string_view text, size_t* pos, char c) {
  if (*pos < text.size() && text[*pos] == c) {
    ++*pos;
    return true;
  }
  return false;
}

}  // namespace

std::string FormatRfc3339(std::chrono::system_clock::time_point t, SubsecondDigits digits) {
  using namespace std::chrono;
  const int64_t ns = duration_cast<nanoseconds>(t.time_since_epoch()).count();
  // Split with floor division so that times before 1970 format correctly and nothing overflows.
  const int64_t secs = FloorDiv(ns, kNanosPerSecond);
  const int64_t sub = ns - secs * kNanosPerSecond;
  const int64_t day = FloorDiv(secs, kSecondsPerDay);
  const int64_t sod = secs - day * kSecondsPerDay;
  const year_month_day ymd{sys_days{days{day}}};

  int frac_digits = 3;
  int64_t frac = sub / 1'000'000;
  if (digits == SubsecondDigits::kLossless && sub % 1'000'000 != 0) {
    if (sub % 1000 == 0) {
      frac_digits = 6;
      frac = sub / 1000;
    } else {
      frac_digits = 9;
      frac = sub;
    }
  }
  char buf[48];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02d.%0*lldZ",
                static_cast<int>(ymd.year()), static_cast<unsigned>(ymd.month()),
                static_cast<unsigned>(ymd.day()), static_cast<int>(sod / 3600),
                static_cast<int>(sod / 60 % 60), static_cast<int>(sod % 60), frac_digits,
                static_cast<long long>(frac));
  return buf;
}

Result<std::chrono::system_clock::time_point> ParseRfc3339(std::string_view text) {
  using namespace std::chrono;
  size_t pos = 0;
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, s = 0;
  if (!ReadDigits(text, &pos, 4, &y)) return Bad("expected a 4-digit year", pos);
  if (!Expect(text, &pos, '-')) return Bad("expected '-'", pos);
  if (!ReadDigits(text, &pos, 2, &mo)) return Bad("expected a 2-digit month", pos);
  if (!Expect(text, &pos, '-')) return Bad("expected '-'", pos);
  if (!ReadDigits(text, &pos, 2, &d)) return Bad("expected a 2-digit day", pos);
  if (!Expect(text, &pos, 'T') && !Expect(text, &pos, 't')) return Bad("expected 'T'", pos);
  if (!ReadDigits(text, &pos, 2, &h)) return Bad("expected a 2-digit hour", pos);
  if (!Expect(text, &pos, ':')) return Bad("expected ':'", pos);
  if (!ReadDigits(text, &pos, 2, &mi)) return Bad("expected 2-digit minutes", pos);
  if (!Expect(text, &pos, ':')) return Bad("expected ':'", pos);
  if (!ReadDigits(text, &pos, 2, &s)) return Bad("expected 2-digit seconds", pos);

  int64_t frac_ns = 0;
  if (Expect(text, &pos, '.')) {
    const size_t start = pos;
    int64_t scale = 100'000'000;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
      frac_ns += (text[pos] - '0') * scale;  // digits after the ninth add 0: truncated
      scale /= 10;
      ++pos;
    }
    if (pos == start) return Bad("expected a digit after '.'", pos);
  }

  int offset_seconds = 0;
  if (Expect(text, &pos, 'Z') || Expect(text, &pos, 'z')) {
    // UTC
  } else if (pos < text.size() && (text[pos] == '+' || text[pos] == '-')) {
    const int sign = text[pos] == '-' ? -1 : 1;
    ++pos;
    int oh = 0, om = 0;
    if (!ReadDigits(text, &pos, 2, &oh)) return Bad("expected a 2-digit offset hour", pos);
    if (!Expect(text, &pos, ':')) return Bad("expected ':' in the offset", pos);
    if (!ReadDigits(text, &pos, 2, &om)) return Bad("expected 2-digit offset minutes", pos);
    if (oh > 23 || om > 59) return Bad("offset out of range", pos - 5);
    offset_seconds = sign * (oh * 3600 + om * 60);
  } else {
    return Bad("expected 'Z' or an offset like +02:00", pos);
  }
  if (pos != text.size()) return Bad("unexpected text after the offset", pos);

  const year_month_day ymd{year{y}, month{static_cast<unsigned>(mo)},
                           day{static_cast<unsigned>(d)}};
  if (!ymd.ok()) {
    return Status::InvalidArgument("no such date: " + std::string(text.substr(0, 10)));
  }
  if (h > 23) return Bad("hour out of range", 11);
  if (mi > 59) return Bad("minutes out of range", 14);
  if (s == 60) return Bad("leap seconds are not supported", 17);
  if (s > 59) return Bad("seconds out of range", 17);

  const int64_t day_count = sys_days{ymd}.time_since_epoch().count();
  const int64_t secs =
      day_count * kSecondsPerDay + h * 3600 + mi * 60 + s - static_cast<int64_t>(offset_seconds);
  int64_t ns = 0;
  if (__builtin_mul_overflow(secs, kNanosPerSecond, &ns) ||
      __builtin_add_overflow(ns, frac_ns, &ns)) {
    return Status::InvalidArgument("time out of range (system_clock holds about 1677 to 2262)");
  }
  return system_clock::time_point{duration_cast<system_clock::duration>(nanoseconds{ns})};
}

}  // namespace converge
