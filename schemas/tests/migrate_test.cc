#include <gtest/gtest.h>

#include "converge/schemas/migrate.h"
#include "converge/testing/pg_fixture.h"

namespace converge::schemas {
namespace {

using testing::TestDatabase;

TEST(MigrateTest, AppliesAllThenIsIdempotent) {
  TestDatabase db(/*migrate=*/false);
  ASSERT_TRUE(db.ok());
  auto v0 = SchemaVersion(db.url());
  ASSERT_TRUE(v0.ok()) << v0.status();
  EXPECT_EQ(*v0, 0);

  auto dry = Migrate(db.url(), {.dry_run = true});
  ASSERT_TRUE(dry.ok()) << dry.status();
  EXPECT_EQ(dry->applied.size(), KnownMigrations().size());
  EXPECT_EQ(db.Scalar("SELECT to_regclass('converge.outbox') IS NULL"), "t")
      << "a dry run must not change the database";

  auto first = Migrate(db.url());
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->applied.size(), KnownMigrations().size());
  EXPECT_EQ(first->version, KnownMigrations().back().version);
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.schema_migrations"),
            static_cast<long long>(KnownMigrations().size()));

  auto second = Migrate(db.url());
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_TRUE(second->applied.empty());
  EXPECT_EQ(second->existing.size(), KnownMigrations().size());
  EXPECT_EQ(*SchemaVersion(db.url()), KnownMigrations().back().version);
}

TEST(MigrateTest, RefusesAChangedMigration) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  db.Scalar("UPDATE converge.schema_migrations SET checksum = 'deadbeef' WHERE version = 1");
  auto r = Migrate(db.url());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("0001_core.sql was changed"), std::string::npos)
      << r.status();
}

TEST(MigrateTest, RefusesADatabaseNewerThanTheBinary) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  db.Scalar(
      "INSERT INTO converge.schema_migrations (version, name, checksum, applied_by) "
      "VALUES (9999, '9999_future.sql', 'x', 'test')");
  auto r = Migrate(db.url());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("9999"), std::string::npos);
}

TEST(MigrateTest, BadUrlIsUnavailableWithoutThePassword) {
  auto r = Migrate("postgresql://user:hunter2@127.0.0.1:1/nodb?connect_timeout=2");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(r.status().message().find("hunter2"), std::string::npos);
}

TEST(MigrateTest, ConcurrentRunsApplyOnce) {
  TestDatabase db(/*migrate=*/false);
  ASSERT_TRUE(db.ok());
  std::vector<std::thread> ts;
  std::atomic<int> ok{0};
  for (int i = 0; i < 3; ++i)
    ts.emplace_back([&] {
      if (Migrate(db.url()).ok()) ++ok;
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(ok.load(), 3);
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.schema_migrations"),
            static_cast<long long>(KnownMigrations().size()));
}

}  // namespace
}  // namespace converge::schemas
