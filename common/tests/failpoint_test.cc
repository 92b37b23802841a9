#include "converge/common/failpoint.h"

#include <cstdlib>

#include <gtest/gtest.h>

namespace converge {
namespace {

TEST(FailpointTest, UnsetFailpointsDoNothing) {
  ::unsetenv("CONVERGE_FAILPOINTS");
  ReloadFailpoints();
  for (int i = 0; i < 10; ++i) Failpoint("relay.after_publish");
  SUCCEED();
}

TEST(FailpointDeathTest, KillFiresOnTheConfiguredHit) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  ::setenv("CONVERGE_FAILPOINTS", "a.b=kill@3,other=abort", 1);
  ReloadFailpoints();
  Failpoint("a.b");
  Failpoint("a.b");  // the first two hits pass
  Failpoint("unrelated");
  EXPECT_EXIT(Failpoint("a.b"), ::testing::KilledBySignal(SIGKILL), "failpoint a.b fired");
  EXPECT_DEATH(Failpoint("other"), "failpoint other fired");
  ::unsetenv("CONVERGE_FAILPOINTS");
  ReloadFailpoints();
}

TEST(FailpointTest, UnknownActionIsIgnored) {
  ::setenv("CONVERGE_FAILPOINTS", "x=explode", 1);
  ReloadFailpoints();
  Failpoint("x");  // reported on stderr, does not kill
  ::unsetenv("CONVERGE_FAILPOINTS");
  ReloadFailpoints();
  SUCCEED();
}

}  // namespace
}  // namespace converge
