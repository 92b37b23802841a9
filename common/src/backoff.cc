#include "converge/common/backoff.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace converge {

Status BackoffPolicy::Validate(std::string_view prefix) const {
  std::string p(prefix);
  if (initial.count() <= 0) return Status::InvalidArgument(p + ".initial_ms must be > 0");
  if (max < initial) return Status::InvalidArgument(p + ".max_ms must be >= " + p + ".initial_ms");
  if (!(multiplier >= 1.0) || !std::isfinite(multiplier))
    return Status::InvalidArgument(p + ".multiplier must be >= 1");
  if (!(jitter >= 0.0 && jitter <= 1.0))
    return Status::InvalidArgument(p + ".jitter must be in [0, 1]");
  return Status::Ok();
}

std::chrono::milliseconds BackoffPolicy::BaseDelay(int attempt) const {
  if (attempt < 1) attempt = 1;
  double d = static_cast<double>(initial.count());
  const double cap = static_cast<double>(max.count());
  for (int i = 1; i < attempt && d < cap; ++i) d *= multiplier;
  d = std::min(d, cap);
  return std::chrono::milliseconds(static_cast<int64_t>(d));
}

std::chrono::milliseconds Backoff::Delay(int attempt) {
  const auto base = policy_.BaseDelay(attempt).count();
  if (policy_.jitter <= 0.0 || base <= 0) return std::chrono::milliseconds(base);
  const auto fixed = static_cast<int64_t>(static_cast<double>(base) * (1.0 - policy_.jitter));
  std::uniform_int_distribution<int64_t> dist(fixed, base);
  return std::chrono::milliseconds(dist(rng_));
}

}  // namespace converge
