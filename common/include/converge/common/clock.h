// Clock: the injectable source of time. Production code takes a Clock& so that backoff, leases,
// deadlines and retention are tested by advancing a ManualClock, never by sleeping.
//
// Decisions that several processes must agree on (leases, flow deadlines) use the database's
// clock, not this one; Clock is for process-local timing.
//
// Thread safety: SystemClock is stateless; ManualClock is safe for concurrent use.
#pragma once

#include <atomic>
#include <chrono>

namespace converge {

class Clock {
 public:
  virtual ~Clock() = default;
  // Wall-clock time (may jump): for timestamps shown to people and written to messages.
  virtual std::chrono::system_clock::time_point Now() const = 0;
  // Monotonic time: for intervals, timeouts and backoff.
  virtual std::chrono::steady_clock::time_point Monotonic() const = 0;
};

class SystemClock final : public Clock {
 public:
  std::chrono::system_clock::time_point Now() const override {
    return std::chrono::system_clock::now();
  }
  std::chrono::steady_clock::time_point Monotonic() const override {
    return std::chrono::steady_clock::now();
  }
  // A process-wide instance.
  static SystemClock& Instance();
};

// A clock that moves only when told to. Both views advance together.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(std::chrono::system_clock::time_point start =
                           std::chrono::system_clock::time_point(std::chrono::seconds(1700000000)))
      : wall_ns_(start.time_since_epoch().count()), mono_ns_(0) {}

  std::chrono::system_clock::time_point Now() const override {
    return std::chrono::system_clock::time_point(
        std::chrono::system_clock::duration(wall_ns_.load()));
  }
  std::chrono::steady_clock::time_point Monotonic() const override {
    return std::chrono::steady_clock::time_point(
        std::chrono::steady_clock::duration(mono_ns_.load()));
  }
  void Advance(std::chrono::nanoseconds d) {
    wall_ns_ += std::chrono::duration_cast<std::chrono::system_clock::duration>(d).count();
    mono_ns_ += std::chrono::duration_cast<std::chrono::steady_clock::duration>(d).count();
  }
  // Moves only the wall clock (a host clock jump); monotonic time is unaffected.
  void JumpWall(std::chrono::nanoseconds d) {
    wall_ns_ += std::chrono::duration_cast<std::chrono::system_clock::duration>(d).count();
  }

 private:
  std::atomic<int64_t> wall_ns_;
  std::atomic<int64_t> mono_ns_;
};

}  // namespace converge
