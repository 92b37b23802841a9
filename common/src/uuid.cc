#include "converge/common/uuid.h"

#include <random>

namespace converge {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void FillV7(std::array<uint8_t, 16>& b, uint64_t ms, uint16_t rand_a, uint64_t rand_b) {
  for (int i = 0; i < 6; ++i) b[i] = static_cast<uint8_t>(ms >> (8 * (5 - i)));
  b[6] = static_cast<uint8_t>(0x70 | ((rand_a >> 8) & 0x0f));
  b[7] = static_cast<uint8_t>(rand_a);
  for (int i = 0; i < 8; ++i) b[8 + i] = static_cast<uint8_t>(rand_b >> (8 * (7 - i)));
  b[8] = static_cast<uint8_t>(0x80 | (b[8] & 0x3f));  // RFC 9562 variant
}

}  // namespace

Result<Uuid> Uuid::Parse(std::string_view text) {
  if (text.size() != 36) return Status::InvalidArgument("uuid must be 36 characters");
  std::array<uint8_t, 16> b{};
  size_t j = 0;
  for (size_t i = 0; i < 36; ++i) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (text[i] != '-') return Status::InvalidArgument("uuid has a misplaced '-'");
      continue;
    }
    const int hi = HexValue(text[i]);
    const int lo = (i + 1 < 36) ? HexValue(text[i + 1]) : -1;
    if (hi < 0 || lo < 0) return Status::InvalidArgument("uuid has a non-hex character");
    b[j++] = static_cast<uint8_t>(hi << 4 | lo);
    ++i;
  }
  return Uuid(b);
}

bool Uuid::is_nil() const {
  for (auto v : bytes_)
    if (v != 0) return false;
  return true;
}

int64_t Uuid::UnixMillis() const {
  int64_t ms = 0;
  for (int i = 0; i < 6; ++i) ms = (ms << 8) | bytes_[i];
  return ms;
}

std::string Uuid::ToString() const {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  s.reserve(36);
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) s.push_back('-');
    s.push_back(kHex[bytes_[i] >> 4]);
    s.push_back(kHex[bytes_[i] & 0xf]);
  }
  return s;
}

Uuid UuidV7At(std::chrono::system_clock::time_point t, uint64_t random_bits) {
  std::array<uint8_t, 16> b{};
  const auto ms = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count());
  FillV7(b, ms, static_cast<uint16_t>(random_bits >> 52), random_bits);
  return Uuid(b);
}

Uuid NewUuidV7() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  thread_local uint64_t last_ms = 0;
  thread_local uint16_t counter = 0;
  uint64_t ms = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          std::chrono::system_clock::now().time_since_epoch())
                                          .count());
  if (ms <= last_ms) {
    // Same millisecond (or the wall clock stepped back): keep ids increasing.
    ms = last_ms;
    if (++counter > 0x0fff) {
      ++ms;
      counter = static_cast<uint16_t>(rng() & 0x3ff);
    }
  } else {
    counter = static_cast<uint16_t>(rng() & 0x3ff);  // leave headroom for increments
  }
  last_ms = ms;
  std::array<uint8_t, 16> b{};
  FillV7(b, ms, counter, rng());
  return Uuid(b);
}

}  // namespace converge
