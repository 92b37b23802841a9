#include "converge/common/status.h"

#include <gtest/gtest.h>

namespace converge {
namespace {

Result<int> Half(int x) {
  if (x % 2) return Status::InvalidArgument("x must be even");
  return x / 2;
}

Status UseHalf(int x, int* out) {
  CONVERGE_ASSIGN_OR_RETURN(int h, Half(x));
  *out = h;
  return Status::Ok();
}

TEST(StatusTest, CodesTellTheCallerWhetherToRetry) {
  EXPECT_TRUE(Status::Unavailable("db down").IsRetriable());
  EXPECT_TRUE(Status::Aborted("40001").IsRetriable());
  EXPECT_TRUE(Status::DeadlineExceeded("maybe written").IsRetriable());
  EXPECT_TRUE(Status::FailedPrecondition("too large").IsPermanent());
  EXPECT_TRUE(Status::InvalidArgument("bad").IsPermanent());
  EXPECT_FALSE(Status::Ok().IsPermanent());
  EXPECT_FALSE(Status::Ok().IsRetriable());
}

TEST(StatusTest, ToStringAndContext) {
  EXPECT_EQ(Status::Ok().ToString(), "OK");
  EXPECT_EQ(Status::Unavailable("refused").WithContext("claim").ToString(),
            "UNAVAILABLE: claim: refused");
  EXPECT_TRUE(Status::Ok().WithContext("x").ok());
}

TEST(ResultTest, ValueOrStatus) {
  auto r = Half(4);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 2);
  auto bad = Half(3);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.value_or(-1), -1);
  int out = 0;
  EXPECT_TRUE(UseHalf(8, &out).ok());
  EXPECT_EQ(out, 4);
  EXPECT_EQ(UseHalf(7, &out).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace converge
