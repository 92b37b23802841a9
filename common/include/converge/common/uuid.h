// UUIDs, and UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then random bits, so ids sort by
// creation time. Message ids are UUIDv7 in canonical lowercase text form.
//
// Thread safety: NewUuidV7() is safe to call from any thread (per-thread generator state);
// ids from one thread are strictly increasing even within one millisecond.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "converge/common/status.h"

namespace converge {

class Uuid {
 public:
  Uuid() = default;  // the nil UUID
  explicit Uuid(const std::array<uint8_t, 16>& bytes) : bytes_(bytes) {}

  // Parses the canonical 8-4-4-4-12 hex form (either case).
  static Result<Uuid> Parse(std::string_view text);

  const std::array<uint8_t, 16>& bytes() const { return bytes_; }
  int version() const { return bytes_[6] >> 4; }
  bool is_nil() const;
  // For v7: the embedded Unix time in milliseconds.
  int64_t UnixMillis() const;
  std::string ToString() const;  // lowercase canonical form

  friend auto operator<=>(const Uuid&, const Uuid&) = default;

 private:
  std::array<uint8_t, 16> bytes_{};
};

// A new UUIDv7 for the current time (monotonic per thread: a 12-bit counter in rand_a orders ids
// created within the same millisecond).
Uuid NewUuidV7();
// A UUIDv7 for a given time, for tests.
Uuid UuidV7At(std::chrono::system_clock::time_point t, uint64_t random_bits);

}  // namespace converge
