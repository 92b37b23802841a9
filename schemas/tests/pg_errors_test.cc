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
  EXPECT_EQ(StatusFromException(pqxx::serialization_failure("40001")).code(),
            StatusCode::kAborted);
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

}  // namespace
}  // namespace converge::pg
