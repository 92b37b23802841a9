#include "converge/common/uuid.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace converge {
namespace {

TEST(UuidTest, V7HasVersionVariantAndTime) {
  auto before = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  Uuid u = NewUuidV7();
  EXPECT_EQ(u.version(), 7);
  EXPECT_EQ(u.bytes()[8] & 0xc0, 0x80);
  EXPECT_GE(u.UnixMillis(), before);
  EXPECT_LE(u.UnixMillis(), before + 5000);
}

TEST(UuidTest, V7IsStrictlyIncreasingWithinAThread) {
  Uuid prev = NewUuidV7();
  for (int i = 0; i < 100000; ++i) {
    Uuid next = NewUuidV7();
    ASSERT_LT(prev, next) << prev.ToString() << " !< " << next.ToString();
    ASSERT_LT(prev.ToString(), next.ToString());  // text order equals byte order
    prev = next;
  }
}

TEST(UuidTest, RoundTripsThroughText) {
  Uuid u = NewUuidV7();
  auto parsed = Uuid::Parse(u.ToString());
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(*parsed, u);
  auto upper = Uuid::Parse("0190A5C6-1F7A-7B3C-8D4E-5F6A7B8C9D0E");
  ASSERT_TRUE(upper.ok());
  EXPECT_EQ(upper->ToString(), "0190a5c6-1f7a-7b3c-8d4e-5f6a7b8c9d0e");
}

TEST(UuidTest, RejectsMalformedText) {
  EXPECT_FALSE(Uuid::Parse("").ok());
  EXPECT_FALSE(Uuid::Parse("0190a5c6-1f7a-7b3c-8d4e-5f6a7b8c9d0").ok());
  EXPECT_FALSE(Uuid::Parse("0190a5c6x1f7a-7b3c-8d4e-5f6a7b8c9d0e").ok());
  EXPECT_FALSE(Uuid::Parse("0190a5c6-1f7a-7b3c-8d4e-5f6a7b8c9dzz").ok());
}

TEST(UuidTest, UniqueAcrossThreads) {
  std::vector<std::vector<Uuid>> ids(4);
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < 20000; ++i) ids[t].push_back(NewUuidV7());
    });
  for (auto& th : ts) th.join();
  std::vector<Uuid> all;
  for (auto& v : ids) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  EXPECT_EQ(std::adjacent_find(all.begin(), all.end()), all.end());
}

}  // namespace
}  // namespace converge
