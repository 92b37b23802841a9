// converge.enqueue from plain SQL: what any service, in any language, calls.
#include <gtest/gtest.h>

#include "converge/schemas/pg.h"
#include "converge/testing/pg_fixture.h"

namespace converge {
namespace {

using testing::TestDatabase;

// Runs `sql` and returns the Status the error maps to (OK when it succeeded).
Status Exec(const TestDatabase& db, const std::string& sql) {
  try {
    auto c = db.Connect();
    pqxx::work tx(*c);
    tx.exec(sql);
    tx.commit();
    return Status::Ok();
  } catch (const std::exception& e) {
    return pg::StatusFromException(e);
  }
}

TEST(EnqueueSqlTest, WritesARowWithIdSeqAndSlot) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  std::string id =
      db.Scalar("SELECT converge.enqueue('orders', 'order-1', 'order.placed', '{\"total\": 12}')");
  ASSERT_EQ(id.size(), 36u);
  EXPECT_EQ(id[14], '7') << "message ids are UUIDv7: " << id;
  EXPECT_EQ(db.Scalar("SELECT topic || '|' || key || '|' || seq || '|' || type || '|' || "
                      "content_type || '|' || convert_from(payload, 'UTF8') FROM converge.outbox"),
            "orders|order-1|1|order.placed|application/json|{\"total\": 12}");
  EXPECT_EQ(db.Scalar("SELECT slot = converge.key_slot('order-1') FROM converge.outbox"), "t");
  EXPECT_EQ(db.Scalar("SELECT source FROM converge.outbox"), "/" + db.name());
}

TEST(EnqueueSqlTest, SequenceIsPerTopicAndKey) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  ASSERT_TRUE(Exec(db,
                   "SELECT converge.enqueue('t', 'a', 'x', '1');"
                   "SELECT converge.enqueue('t', 'a', 'x', '2');"
                   "SELECT converge.enqueue('t', 'b', 'x', '3');"
                   "SELECT converge.enqueue('u', 'a', 'x', '4');"
                   "SELECT converge.enqueue('t', 'a', 'x', '5');")
                  .ok());
  EXPECT_EQ(
      db.Scalar("SELECT string_agg(topic || key || seq, ',' ORDER BY id) FROM converge.outbox"),
      "ta1,ta2,tb1,ua1,ta3");
}

TEST(EnqueueSqlTest, RolledBackRowsLeaveNoTraceAndNoSeqGap) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  {
    auto c = db.Connect();
    pqxx::work tx(*c);
    tx.exec("SELECT converge.enqueue('t', 'k', 'x', '1')");
    tx.abort();
  }
  ASSERT_TRUE(Exec(db, "SELECT converge.enqueue('t', 'k', 'x', '2')").ok());
  EXPECT_EQ(db.Scalar("SELECT string_agg(seq::text, ',') FROM converge.outbox"), "1");
}

TEST(EnqueueSqlTest, BinaryPayloadHeadersAndExplicitId) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  ASSERT_TRUE(Exec(db,
                   "SELECT converge.enqueue_raw('t', 'k', 'blob', '\\x00ff10'::bytea, "
                   "'{\"tenant\": \"acme\"}', 'application/octet-stream', '/svc', "
                   "'00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', "
                   "'01890a5d-ac96-774b-bcce-b302099a8057')")
                  .ok());
  EXPECT_EQ(db.Scalar("SELECT encode(payload, 'hex') || '|' || (headers->>'tenant') || '|' || "
                      "message_id || '|' || source FROM converge.outbox"),
            "00ff10|acme|01890a5d-ac96-774b-bcce-b302099a8057|/svc");
}

struct BadInput {
  const char* sql;
  const char* expect;  // text the error must contain
};

TEST(EnqueueSqlTest, BadInputIsRejectedWithAClearError) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  const BadInput cases[] = {
      {"SELECT converge.enqueue('', 'k', 't', '{}')", "topic must not be empty"},
      {"SELECT converge.enqueue(repeat('a', 250), 'k', 't', '{}')", "limit is 249"},
      {"SELECT converge.enqueue('a+b', 'k', 't', '{}')", "may only contain"},
      {"SELECT converge.enqueue('t', '', 't', '{}')", "key must not be empty"},
      {"SELECT converge.enqueue('t', repeat('k', 1025), 't', '{}')", "key is 1025 bytes"},
      {"SELECT converge.enqueue('t', 'k', '', '{}')", "type must not be empty"},
      {"SELECT converge.enqueue('t', 'k', 't', NULL)", "payload must not be NULL"},
      {"SELECT converge.enqueue_raw('t', 'k', 't', decode(repeat('00', 1000001), 'hex'))",
       "limit is 1000000"},
      {"SELECT converge.enqueue('t', 'k', 't', '{}', '[1]')", "headers must be a JSON object"},
      {"SELECT converge.enqueue('t', 'k', 't', '{}', '{\"a b\": \"x\"}')", "header name \"a b\""},
      {"SELECT converge.enqueue('t', 'k', 't', '{}', '{\"ce_id\": \"x\"}')", "reserved"},
      {"SELECT converge.enqueue('t', 'k', 't', '{}', '{\"n\": 1}')", "must be a string"},
      {"SELECT converge.enqueue('t', 'k', 't', '{}', '{}', NULL, 'bogus')", "traceparent"},
      {"SELECT converge.enqueue('t', 'k', 't', '{}', "
       "(SELECT jsonb_object_agg('h' || g, 'v') FROM generate_series(1, 65) g))",
       "more than 64 headers"},
  };
  for (const auto& c : cases) {
    Status st = Exec(db, c.sql);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << c.sql << " -> " << st;
    EXPECT_NE(st.message().find(c.expect), std::string::npos) << c.sql << " -> " << st;
  }
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.outbox"), 0);
}

TEST(EnqueueSqlTest, DuplicateMessageIdIsRejected) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  const std::string sql =
      "SELECT converge.enqueue('t', 'k', 't', '{}', '{}', NULL, NULL, "
      "'01890a5d-ac96-774b-bcce-b302099a8057')";
  ASSERT_TRUE(Exec(db, sql).ok());
  EXPECT_EQ(Exec(db, sql).code(), StatusCode::kAlreadyExists);
}

TEST(EnqueueSqlTest, NotifiesRelays) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  auto listener = db.Connect();
  pqxx::nontransaction(*listener).exec("LISTEN converge_outbox");
  ASSERT_TRUE(Exec(db, "SELECT converge.enqueue('t', 'k', 't', '{}')").ok());
  EXPECT_GE(listener->await_notification(5, 0), 1);
}

TEST(EnqueueSqlTest, NotifyOffSkipsTheWakeUpButStillEnqueues) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  auto listener = db.Connect();
  pqxx::nontransaction(*listener).exec("LISTEN converge_outbox");
  ASSERT_TRUE(Exec(db,
                   "SET converge.notify = off; "
                   "SELECT converge.enqueue('t', 'k', 't', '{}')")
                  .ok());
  EXPECT_EQ(listener->await_notification(1, 0), 0);
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.outbox"), 1);
  // Back on (the default) in another session: notified again.
  ASSERT_TRUE(Exec(db, "SELECT converge.enqueue('t', 'k', 't', '{}')").ok());
  EXPECT_GE(listener->await_notification(5, 0), 1);
}

}  // namespace
}  // namespace converge
