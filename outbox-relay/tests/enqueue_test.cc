// The C++ enqueue API against a real PostgreSQL: ids, sequences, atomicity with business rows,
// and the same validation as the SQL function.
#include <gtest/gtest.h>

#include "converge/common/uuid.h"
#include "converge/outbox/outbox.h"
#include "converge/testing/pg_fixture.h"

namespace converge::outbox {
namespace {

using testing::TestDatabase;

TEST(EnqueueTest, AssignsUuidV7AndPerKeySequence) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  auto c = db.Connect();
  pqxx::work tx(*c);
  std::vector<OutboxMessage> ms = {
      {.topic = "orders", .key = "a", .type = "t", .payload = "1"},
      {.topic = "orders", .key = "a", .type = "t", .payload = "2"},
      {.topic = "orders", .key = "b", .type = "t", .payload = "3"},
  };
  auto r = EnqueueMany(tx, ms);
  ASSERT_TRUE(r.ok()) << r.status();
  tx.commit();
  ASSERT_EQ(r->size(), 3u);
  EXPECT_EQ((*r)[0].seq, 1);
  EXPECT_EQ((*r)[1].seq, 2);
  EXPECT_EQ((*r)[2].seq, 1);
  auto id = Uuid::Parse((*r)[0].message_id);
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(id->version(), 7);
  EXPECT_LT((*r)[0].message_id, (*r)[1].message_id);
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.outbox"), 3);
}

TEST(EnqueueTest, BinaryPayloadHeadersExpiryAndTraceparentRoundTrip) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  auto c = db.Connect();
  pqxx::work tx(*c);
  OutboxMessage m{.topic = "devices/d1/cmd", .key = "d1", .type = "cmd.reboot"};
  m.payload = std::string("\x00\x01\xff\"\\", 5);
  m.content_type = "application/octet-stream";
  m.headers = {{"x-tenant", "a\"b\\c é"}, {"x-y", "z"}};
  m.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  m.expires_at = std::chrono::system_clock::time_point(std::chrono::milliseconds(4102444800123));
  auto r = Enqueue(tx, m);
  ASSERT_TRUE(r.ok()) << r.status();
  tx.commit();
  EXPECT_EQ(db.Scalar("SELECT encode(payload, 'hex') FROM converge.outbox"), "0001ff225c");
  EXPECT_EQ(db.Scalar("SELECT headers->>'x-tenant' FROM converge.outbox"), "a\"b\\c é");
  EXPECT_EQ(db.Scalar("SELECT traceparent FROM converge.outbox"), m.traceparent);
  EXPECT_EQ(
      db.Scalar("SELECT (extract(epoch FROM expires_at) * 1000)::bigint FROM converge.outbox"),
      "4102444800123");
}

TEST(EnqueueTest, CommitsOrRollsBackWithTheBusinessRows) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  db.Scalar("CREATE TABLE orders (id text PRIMARY KEY)");
  auto c = db.Connect();
  {
    pqxx::work tx(*c);
    tx.exec("INSERT INTO orders VALUES ('o-1')");
    ASSERT_TRUE(Enqueue(tx, {.topic = "orders", .key = "o-1", .type = "t", .payload = "{}"}).ok());
    tx.abort();
  }
  EXPECT_EQ(db.Count("SELECT count(*) FROM orders"), 0);
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.outbox"), 0);
  {
    pqxx::work tx(*c);
    tx.exec("INSERT INTO orders VALUES ('o-2')");
    ASSERT_TRUE(Enqueue(tx, {.topic = "orders", .key = "o-2", .type = "t", .payload = "{}"}).ok());
    tx.commit();
  }
  EXPECT_EQ(db.Count("SELECT count(*) FROM orders"), 1);
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.outbox"), 1);
}

TEST(EnqueueTest, InvalidMessageLeavesTheTransactionUsable) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  auto c = db.Connect();
  pqxx::work tx(*c);
  auto bad = Enqueue(tx, {.topic = "", .key = "k", .type = "t"});
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Enqueue(tx, {.topic = "t", .key = "k", .type = "t"}).ok());
  tx.commit();
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.outbox"), 1);
}

TEST(EnqueueTest, SameIdTwiceIsAlreadyExists) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  auto c = db.Connect();
  const std::string id = NewUuidV7().ToString();
  {
    pqxx::work tx(*c);
    ASSERT_TRUE(Enqueue(tx, {.topic = "t", .key = "k", .type = "t", .message_id = id}).ok());
    tx.commit();
  }
  pqxx::work tx(*c);
  auto again = Enqueue(tx, {.topic = "t", .key = "k", .type = "t", .message_id = id});
  EXPECT_EQ(again.status().code(), StatusCode::kAlreadyExists) << again.status();
}

// The C++ checks and the SQL checks must agree: every message the C++ side rejects, the SQL
// function rejects with the same text (bypassing the C++ check by calling SQL directly).
TEST(EnqueueTest, CppAndSqlValidationAgree) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  struct Case {
    OutboxMessage m;
    std::string sql;
  } cases[] = {
      {{.topic = "", .key = "k", .type = "t"}, "SELECT converge.enqueue('', 'k', 't', '{}')"},
      {{.topic = "a+b", .key = "k", .type = "t"}, "SELECT converge.enqueue('a+b', 'k', 't', '{}')"},
      {{.topic = "t", .key = "", .type = "t"}, "SELECT converge.enqueue('t', '', 't', '{}')"},
      {{.topic = "t", .key = "k", .type = ""}, "SELECT converge.enqueue('t', 'k', '', '{}')"},
      {{.topic = "t", .key = "k", .type = "t", .headers = {{"ce_x", "v"}}},
       "SELECT converge.enqueue('t', 'k', 't', '{}', '{\"ce_x\": \"v\"}')"},
      {{.topic = "t", .key = "k", .type = "t", .traceparent = "bad"},
       "SELECT converge.enqueue('t', 'k', 't', '{}', '{}', NULL, 'bad')"},
  };
  for (const auto& c : cases) {
    Status cpp = Validate(c.m);
    ASSERT_EQ(cpp.code(), StatusCode::kInvalidArgument);
    std::string sql_error;
    try {
      auto conn = db.Connect();
      pqxx::work tx(*conn);
      tx.exec(c.sql);
      tx.commit();
    } catch (const std::exception& e) {
      sql_error = e.what();
    }
    ASSERT_FALSE(sql_error.empty()) << c.sql;
    // Same leading text: "converge.enqueue: <what>".
    const std::string head = cpp.message().substr(0, cpp.message().find('"'));
    EXPECT_NE(sql_error.find(head.substr(0, std::min<size_t>(head.size(), 40))), std::string::npos)
        << "C++: " << cpp.message() << "\nSQL: " << sql_error;
  }
}

}  // namespace
}  // namespace converge::outbox
