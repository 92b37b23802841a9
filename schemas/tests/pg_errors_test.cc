#include <gtest/gtest.h>

#include "converge/schemas/pg.h"

namespace converge::pg {
namespace {

TEST(PgErrorsTest, SqlStatesMapToWhatTheCallerShouldDo) {
  EXPECT_EQ(CodeForSqlState("40001"), StatusCode::kAborted);  // serialization_failure
  EXPECT_EQ(CodeForSqlState("40P01"), StatusCode::kAborted);  // deadlock_detected
  EXPECT_EQ(CodeForSqlState("08006"), StatusCode::kUnavailable);
  EXPECT_EQ(CodeForSqlState("57P01"), StatusCode::kUnavailable);  // admin_shutdown
  EXPECT_EQ(CodeForSqlState("53300"), StatusCode::kUnavailable);  // too_many_connections
  EXPECT_EQ(CodeForSqlState("23505"), StatusCode::kAlreadyExists);
  EXPECT_EQ(CodeForSqlState("22023"), StatusCode::kInvalidArgument);
  EXPECT_EQ(CodeForSqlState("42P01"), StatusCode::kFailedPrecondition);
  EXPECT_EQ(CodeForSqlState("42501"), StatusCode::kFailedPrecondition);
  EXPECT_EQ(CodeForSqlState("XX000"), StatusCode::kInternal);
  EXPECT_EQ(CodeForSqlState(""), StatusCode::kInternal);
}

TEST(PgErrorsTest, ExceptionsMap) {
  EXPECT_EQ(StatusFromException(pqxx::broken_connection("gone")).code(), StatusCode::kUnavailable);
  EXPECT_EQ(StatusFromException(pqxx::in_doubt_error("?")).code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(StatusFromException(pqxx::serialization_failure("40001")).code(), StatusCode::kAborted);
  auto missing = StatusFromException(pqxx::undefined_table("relation missing", "q", "42P01"));
  EXPECT_EQ(missing.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(missing.message().find("convergectl migrate"), std::string::npos);
  EXPECT_EQ(StatusFromException(pqxx::deadlock_detected("40P01")).code(), StatusCode::kAborted);
  EXPECT_EQ(StatusFromException(pqxx::statement_completion_unknown("?")).code(),
            StatusCode::kDeadlineExceeded);
  EXPECT_EQ(StatusFromException(pqxx::unique_violation("dup", "q", "23505")).code(),
            StatusCode::kAlreadyExists);
  EXPECT_EQ(StatusFromException(std::runtime_error("boom")).code(), StatusCode::kInternal);
}

TEST(PgErrorsTest, ArrayLiteralsEscape) {
  EXPECT_EQ(TextArrayLiteral({"a", "b\"c", "d\\e", ""}), R"({"a","b\"c","d\\e",""})");
  EXPECT_EQ(IntArrayLiteral(std::vector<int>{1, -2, 3}), "{1,-2,3}");
  EXPECT_EQ(IntArrayLiteral(std::vector<int>{}), "{}");
}

// The partition timeouts are added to a URI and to a key=value string, each only when the caller
// did not set it; every other setting (a password with quotes and backslashes too) survives.
TEST(PgConnectTest, TimeoutsAreAddedUnlessSet) {
  ::unsetenv("PGCONNECT_TIMEOUT");
  auto uri = WithConnectionDefaults(
      "postgresql://app:p%27w%5Cd@127.0.0.1:55432/shop?application_name=svc&keepalives_idle=60");
  ASSERT_TRUE(uri.ok()) << uri.status();
  EXPECT_EQ(*uri,
            "user='app' password='p\\'w\\\\d' dbname='shop' host='127.0.0.1' port='55432' "
            "application_name='svc' keepalives_idle='60' connect_timeout='10' keepalives='1' "
            "keepalives_interval='5' keepalives_count='3' tcp_user_timeout='30000'");

  auto kv = WithConnectionDefaults("host=/tmp/sock dbname=x connect_timeout=3 tcp_user_timeout=0");
  ASSERT_TRUE(kv.ok()) << kv.status();
  EXPECT_EQ(*kv,
            "connect_timeout='3' dbname='x' host='/tmp/sock' tcp_user_timeout='0' keepalives='1' "
            "keepalives_idle='10' keepalives_interval='5' keepalives_count='3'");

  ::setenv("PGCONNECT_TIMEOUT", "7", 1);  // libpq's own variable wins over our default
  auto env = WithConnectionDefaults("dbname=x");
  ::unsetenv("PGCONNECT_TIMEOUT");
  ASSERT_TRUE(env.ok());
  EXPECT_EQ(env->find("connect_timeout"), std::string::npos) << *env;
}

TEST(PgConnectTest, MalformedUrlIsNamedWithoutRepeatingIt) {
  auto bad = WithConnectionDefaults("postgresql://u:secretpw@h/db?bogus_opt=1");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("invalid PostgreSQL connection string"), std::string::npos);
  EXPECT_EQ(bad.status().message().find("secretpw"), std::string::npos) << bad.status();
  auto conn = Connect("nonsense_key=1");
  ASSERT_FALSE(conn.ok());
  EXPECT_EQ(conn.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(conn.status().message().find("nonsense_key"), std::string::npos) << conn.status();
}

}  // namespace
}  // namespace converge::pg
