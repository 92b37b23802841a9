#include "converge/common/time_format.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <random>

namespace converge {
namespace {

using namespace std::chrono;
using ::testing::HasSubstr;

system_clock::time_point At(int64_t ns) {
  return system_clock::time_point{duration_cast<system_clock::duration>(nanoseconds{ns})};
}

TEST(TimeFormatTest, FormatsUtcWithMilliseconds) {
  EXPECT_EQ(FormatRfc3339(At(0)), "1970-01-01T00:00:00.000Z");
  // 2018-04-05T17:31:00Z, from the CloudEvents JSON format examples.
  const auto t = system_clock::time_point{seconds{1522949460}};
  EXPECT_EQ(FormatRfc3339(t), "2018-04-05T17:31:00.000Z");
  EXPECT_EQ(FormatRfc3339(t + milliseconds{7}), "2018-04-05T17:31:00.007Z");
  EXPECT_EQ(FormatRfc3339(t + microseconds{7001}), "2018-04-05T17:31:00.007Z");  // truncated
  EXPECT_EQ(FormatRfc3339(sys_days{2024y / February / 29} + hours{23} + minutes{59} + seconds{59}),
            "2024-02-29T23:59:59.000Z");
}

TEST(TimeFormatTest, LosslessUsesAsManyDigitsAsNeeded) {
  const auto t = system_clock::time_point{seconds{1522949460}};
  EXPECT_EQ(FormatRfc3339(t, SubsecondDigits::kLossless), "2018-04-05T17:31:00.000Z");
  EXPECT_EQ(FormatRfc3339(t + milliseconds{120}, SubsecondDigits::kLossless),
            "2018-04-05T17:31:00.120Z");
  EXPECT_EQ(FormatRfc3339(t + microseconds{120001}, SubsecondDigits::kLossless),
            "2018-04-05T17:31:00.120001Z");
  EXPECT_EQ(FormatRfc3339(t + nanoseconds{1}, SubsecondDigits::kLossless),
            "2018-04-05T17:31:00.000000001Z");
}

TEST(TimeFormatTest, FormatsTimesBefore1970) {
  EXPECT_EQ(FormatRfc3339(At(-1)), "1969-12-31T23:59:59.999Z");
  EXPECT_EQ(FormatRfc3339(At(-1), SubsecondDigits::kLossless), "1969-12-31T23:59:59.999999999Z");
  EXPECT_EQ(FormatRfc3339(At(-86'400'000'000'000)), "1969-12-31T00:00:00.000Z");
}

TEST(TimeFormatTest, ParsesOffsetsAndFractions) {
  const auto utc = ParseRfc3339("2018-04-05T17:31:00Z");
  ASSERT_TRUE(utc.ok()) << utc.status();
  EXPECT_EQ(*utc, system_clock::time_point{seconds{1522949460}});

  const auto plus2 = ParseRfc3339("2018-04-05T19:31:00+02:00");
  ASSERT_TRUE(plus2.ok());
  EXPECT_EQ(*plus2, *utc);
  const auto minus = ParseRfc3339("2018-04-05T12:01:00-05:30");
  ASSERT_TRUE(minus.ok());
  EXPECT_EQ(*minus, *utc);
  const auto unknown_offset = ParseRfc3339("2018-04-05T17:31:00-00:00");
  ASSERT_TRUE(unknown_offset.ok());
  EXPECT_EQ(*unknown_offset, *utc);
  const auto lower = ParseRfc3339("2018-04-05t17:31:00z");
  ASSERT_TRUE(lower.ok());
  EXPECT_EQ(*lower, *utc);

  const auto frac = ParseRfc3339("2018-04-05T17:31:00.5Z");
  ASSERT_TRUE(frac.ok());
  EXPECT_EQ(*frac - *utc, milliseconds{500});
  const auto nanos = ParseRfc3339("2018-04-05T17:31:00.123456789Z");
  ASSERT_TRUE(nanos.ok());
  EXPECT_EQ(*nanos - *utc, nanoseconds{123456789});
  const auto beyond = ParseRfc3339("2018-04-05T17:31:00.1234567891234Z");
  ASSERT_TRUE(beyond.ok());
  EXPECT_EQ(*beyond - *utc, nanoseconds{123456789});  // truncated after nine digits

  const auto leap_day = ParseRfc3339("2024-02-29T00:00:00Z");
  EXPECT_TRUE(leap_day.ok());
  const auto old = ParseRfc3339("1969-12-31T23:59:59.999Z");
  ASSERT_TRUE(old.ok());
  EXPECT_EQ(old->time_since_epoch(), milliseconds{-1});
}

TEST(TimeFormatTest, RejectsWhatIsNotRfc3339) {
  for (const char* bad : {
           "",
           "2018-04-05",                 // date only
           "2018-04-05T17:31:00",        // no offset
           "2018-04-05 17:31:00Z",       // space instead of T
           "2018-04-05T17:31Z",          // no seconds
           "2018-4-05T17:31:00Z",        // one-digit month
           "18-04-05T17:31:00Z",         // two-digit year
           "2018-04-05T17:31:00.Z",      // '.' without digits
           "2018-04-05T17:31:00+0200",   // offset without ':'
           "2018-04-05T17:31:00+2:00",   // one-digit offset hour
           "2018-04-05T17:31:00+24:00",  // offset out of range
           "2018-04-05T17:31:00+02:60",
           "2018-04-05T17:31:00ZZ",  // trailing text
           "2018-04-05T17:31:00Z ",
           " 2018-04-05T17:31:00Z",
           "2018-02-29T00:00:00Z",  // not a leap year
           "2018-13-01T00:00:00Z",
           "2018-00-01T00:00:00Z",
           "2018-04-31T00:00:00Z",
           "2018-04-00T00:00:00Z",
           "2018-04-05T24:00:00Z",
           "2018-04-05T23:60:00Z",
           "2016-12-31T23:59:60Z",  // leap second
           "2018-04-05T17:31:61Z",
           "1600-01-01T00:00:00Z",    // before system_clock's range
           "2300-01-01T00:00:00Z",    // after it
           "２０18-04-05T17:31:00Z",  // non-ASCII digits
       }) {
    const auto r = ParseRfc3339(bad);
    EXPECT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_THAT(ParseRfc3339("2018-04-05 17:31:00Z").status().message(),
              HasSubstr("expected 'T' at byte 10"));
  EXPECT_THAT(ParseRfc3339("2016-12-31T23:59:60Z").status().message(), HasSubstr("leap second"));
}

TEST(TimeFormatTest, LosslessFormatParsesBackExactly) {
  std::mt19937_64 rng(42);
  // Roughly 1700..2240, everywhere in system_clock's range that has four-digit years.
  std::uniform_int_distribution<int64_t> dist(-8'000'000'000'000'000'000,
                                              8'500'000'000'000'000'000);
  for (int i = 0; i < 20000; ++i) {
    int64_t ns = dist(rng);
    if (i % 3 == 0) ns -= ns % 1'000'000;  // whole milliseconds
    if (i % 3 == 1) ns -= ns % 1'000;      // whole microseconds
    const auto t = At(ns);
    const std::string text = FormatRfc3339(t, SubsecondDigits::kLossless);
    const auto back = ParseRfc3339(text);
    ASSERT_TRUE(back.ok()) << text << ": " << back.status();
    ASSERT_EQ(*back, t) << text;
  }
}

}  // namespace
}  // namespace converge
