// Exponential backoff with jitter.
//
// Delay(attempt) for attempt = 1, 2, ... grows as initial * multiplier^(attempt-1), capped at
// max, then "full jitter" or "equal jitter" is applied so that many retrying clients spread out
// instead of retrying in lockstep (see AWS Architecture Blog, "Exponential Backoff And Jitter").
//
// Thread safety: BackoffPolicy is a value; Backoff (with its RNG) is not thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <random>

#include "converge/common/status.h"

namespace converge {

struct BackoffPolicy {
  // Delay before the first retry.
  std::chrono::milliseconds initial{100};
  // Upper bound on any delay.
  std::chrono::milliseconds max{30000};
  // Growth factor per attempt; must be >= 1.
  double multiplier = 2.0;
  // Fraction of the delay that is randomized, in [0, 1]. 0 = no jitter, 1 = full jitter
  // (uniform in [0, d]), 0.5 = equal jitter (uniform in [d/2, d]).
  double jitter = 0.5;

  // Names the bad field ("backoff.multiplier must be >= 1").
  Status Validate(std::string_view prefix = "backoff") const;

  // The un-jittered delay for an attempt (attempt <= 0 is treated as 1).
  std::chrono::milliseconds BaseDelay(int attempt) const;
};

class Backoff {
 public:
  explicit Backoff(BackoffPolicy policy, uint64_t seed = std::random_device{}())
      : policy_(policy), rng_(seed) {}

  // The jittered delay to wait before retry number `attempt` (1-based).
  std::chrono::milliseconds Delay(int attempt);

  const BackoffPolicy& policy() const { return policy_; }

 private:
  BackoffPolicy policy_;
  std::mt19937_64 rng_;
};

}  // namespace converge
