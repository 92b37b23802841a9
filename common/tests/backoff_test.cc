#include "converge/common/backoff.h"

#include <gtest/gtest.h>

#include <set>

#include "converge/common/clock.h"

namespace converge {
namespace {

using std::chrono::milliseconds;

TEST(BackoffTest, GrowsExponentiallyAndCaps) {
  BackoffPolicy p{milliseconds(100), milliseconds(1000), 2.0, 0.0};
  ASSERT_TRUE(p.Validate().ok());
  Backoff b(p, 1);
  EXPECT_EQ(b.Delay(1), milliseconds(100));
  EXPECT_EQ(b.Delay(2), milliseconds(200));
  EXPECT_EQ(b.Delay(3), milliseconds(400));
  EXPECT_EQ(b.Delay(4), milliseconds(800));
  EXPECT_EQ(b.Delay(5), milliseconds(1000));
  EXPECT_EQ(b.Delay(500), milliseconds(1000));  // no overflow on huge attempts
  EXPECT_EQ(b.Delay(0), milliseconds(100));
}

TEST(BackoffTest, JitterStaysInRangeAndSpreads) {
  BackoffPolicy p{milliseconds(1000), milliseconds(1000), 2.0, 0.5};
  Backoff b(p, 42);
  std::set<int64_t> seen;
  for (int i = 0; i < 200; ++i) {
    auto d = b.Delay(1).count();
    EXPECT_GE(d, 500);
    EXPECT_LE(d, 1000);
    seen.insert(d);
  }
  EXPECT_GT(seen.size(), 50u) << "jitter must spread retries";
}

TEST(BackoffTest, ValidateNamesTheBadField) {
  BackoffPolicy p;
  p.multiplier = 0.5;
  auto st = p.Validate("relay.retry");
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("relay.retry.multiplier"), std::string::npos);
  p = BackoffPolicy{};
  p.jitter = 2;
  EXPECT_NE(p.Validate().message().find("backoff.jitter"), std::string::npos);
  p = BackoffPolicy{};
  p.max = milliseconds(1);
  EXPECT_NE(p.Validate().message().find("backoff.max_ms"), std::string::npos);
}

TEST(ManualClockTest, AdvanceAndJump) {
  ManualClock c;
  auto w = c.Now();
  auto m = c.Monotonic();
  c.Advance(std::chrono::seconds(5));
  EXPECT_EQ(c.Now() - w, std::chrono::seconds(5));
  EXPECT_EQ(c.Monotonic() - m, std::chrono::seconds(5));
  c.JumpWall(-std::chrono::hours(1));
  EXPECT_EQ(c.Monotonic() - m, std::chrono::seconds(5));
  EXPECT_EQ(c.Now() - w, std::chrono::seconds(5) - std::chrono::hours(1));
}

}  // namespace
}  // namespace converge
