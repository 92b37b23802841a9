// The relay engine against real PostgreSQL and a FakePublisher with failure switches.
#include <gtest/gtest.h>

#include <map>
#include <thread>

#include "converge/outbox/outbox.h"
#include "converge/outbox/relay.h"
#include "converge/testing/fake_publisher.h"
#include "converge/testing/pg_fixture.h"

namespace converge::outbox {
namespace {

using testing::FakePublisher;
using testing::TestDatabase;

RelayOptions Options(const TestDatabase& db) {
  RelayOptions o;
  o.database_url = db.url();
  o.batch_size = 100;
  o.poll_interval = std::chrono::milliseconds(50);
  o.retry = {std::chrono::milliseconds(200), std::chrono::milliseconds(200), 1.0, 0.0};
  o.breaker_backoff = {std::chrono::milliseconds(100), std::chrono::milliseconds(100), 1.0, 0.0};
  return o;
}

void EnqueueSql(const TestDatabase& db, const std::string& topic, const std::string& key, int n) {
  auto c = db.Connect();
  pqxx::work tx(*c);
  for (int i = 0; i < n; ++i)
    tx.exec_params("SELECT converge.enqueue($1, $2, 'test.event', $3::jsonb)", topic, key,
                   std::to_string(i));
  tx.commit();
}

// Runs cycles until the outbox is empty (or `max` cycles).
void Drain(Relay& relay, int max = 200) {
  for (int i = 0; i < max; ++i) {
    auto r = relay.RunOnce();
    ASSERT_TRUE(r.ok()) << r.status();
    if (*r == 0) return;
  }
}

// Checks that per (topic, key) the published sequence numbers never go backwards, ignoring
// exact duplicates that follow a retry.
void ExpectPerKeyOrder(const std::vector<Message>& published) {
  std::map<std::pair<std::string, std::string>, int64_t> last;
  for (const auto& m : published) {
    auto& l = last[{m.topic, m.subject}];
    EXPECT_GE(m.sequence, l) << m.topic << "/" << m.subject << " went back from " << l << " to "
                             << m.sequence;
    l = std::max(l, m.sequence);
  }
}

TEST(RelayTest, PublishesEveryRowOnceInKeyOrderAndDeletesIt) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  for (int k = 0; k < 20; ++k) EnqueueSql(db, "orders", "key-" + std::to_string(k), 15);
  auto pub = std::make_unique<FakePublisher>();
  FakePublisher* fake = pub.get();
  Relay relay(Options(db), std::move(pub));
  Drain(relay);
  auto published = fake->published();
  EXPECT_EQ(published.size(), 300u);
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.outbox"), 0);
  EXPECT_EQ(relay.stats().published.load(), 300u);
  ExpectPerKeyOrder(published);
  std::set<std::string> ids;
  for (const auto& m : published) {
    ids.insert(m.id);
    EXPECT_EQ(m.type, "test.event");
    EXPECT_EQ(m.topic, "orders");
    EXPECT_FALSE(m.source.empty());
    EXPECT_GT(m.sequence, 0);
  }
  EXPECT_EQ(ids.size(), 300u) << "no duplicates when nothing fails";
}

TEST(RelayTest, StrictOrderSendsOneRowPerKeyPerWave) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  EnqueueSql(db, "t", "hot", 5);
  auto pub = std::make_unique<FakePublisher>();
  FakePublisher* fake = pub.get();
  Relay relay(Options(db), std::move(pub));
  Drain(relay);
  EXPECT_EQ(fake->published().size(), 5u);
  EXPECT_EQ(fake->batches(), 5) << "each row of one key waits for the previous confirmation";
}

// T1 takes a low id and commits late; T2 commits first. A cursor-based relay would skip T1's
// row forever; a state-based claim publishes it when it becomes visible.
TEST(RelayTest, VisibilityGapLosesNothing) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  auto pub = std::make_unique<FakePublisher>();
  FakePublisher* fake = pub.get();
  Relay relay(Options(db), std::move(pub));

  auto c1 = db.Connect();
  pqxx::work t1(*c1);
  t1.exec("SELECT converge.enqueue('t', 'slow', 'x', '1')");  // lower id, not yet committed
  EnqueueSql(db, "t", "fast", 1);                             // higher id, committed
  Drain(relay);
  ASSERT_EQ(fake->published().size(), 1u);
  EXPECT_EQ(fake->published()[0].subject, "fast");
  t1.commit();
  Drain(relay);
  ASSERT_EQ(fake->published().size(), 2u);
  EXPECT_EQ(fake->published()[1].subject, "slow");
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.outbox"), 0);
}

TEST(RelayTest, RetriableFailureBlocksOnlyItsKeyAndKeepsOrder) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  EnqueueSql(db, "t", "bad", 3);
  EnqueueSql(db, "t", "good", 3);
  auto pub = std::make_unique<FakePublisher>();
  FakePublisher* fake = pub.get();
  int failures = 0;
  fake->FailWhen([&](const Message& m) {
    if (m.subject == "bad" && m.sequence == 2 && failures < 2) {
      ++failures;
      return Status::DeadlineExceeded("possibly persisted");
    }
    return Status::Ok();
  });
  // A retry block long enough to be observed on a loaded machine (a 200 ms one could pass
  // before the check below runs).
  RelayOptions o = Options(db);
  o.retry = {std::chrono::milliseconds(1500), std::chrono::milliseconds(1500), 1.0, 0.0};
  Relay relay(o, std::move(pub));
  ASSERT_TRUE(relay.RunOnce().ok());
  // good: 3 published; bad: seq 1 published, seq 2 failed (and may be on the broker), seq 3 held.
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.outbox"), 2);
  EXPECT_EQ(db.Scalar("SELECT parked::text || ' ' || (blocked_until > now())::text "
                      "FROM converge.outbox_blocked_keys WHERE key = 'bad'"),
            "false true");
  EXPECT_EQ(db.Count("SELECT attempts FROM converge.outbox WHERE key = 'bad' AND seq = 2"), 1);
  // While blocked, nothing of "bad" is claimed.
  ASSERT_TRUE(relay.RunOnce().ok());
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.outbox"), 2);
  for (int i = 0; i < 100 && db.Count("SELECT count(*) FROM converge.outbox") > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ASSERT_TRUE(relay.RunOnce().ok());
  }
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.outbox"), 0);
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.outbox_blocked_keys"), 0)
      << "the key's block is cleared once its head row got through";
  ExpectPerKeyOrder(fake->published());
  EXPECT_GE(relay.stats().retried.load(), 1u);
}

TEST(RelayTest, PermanentFailureDeadLettersAndParksTheKey) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  EnqueueSql(db, "t", "poison", 3);
  EnqueueSql(db, "t", "fine", 2);
  auto pub = std::make_unique<FakePublisher>();
  FakePublisher* fake = pub.get();
  fake->RefuseAsTooLarge("poison", 1);
  Relay relay(Options(db), std::move(pub));
  Drain(relay);
  EXPECT_EQ(db.Scalar("SELECT origin || '|' || error_code || '|' || attempts || '|' || seq || '|' "
                      "|| (reason LIKE '%too large%') FROM converge.dead_letters"),
            "relay|too_large|1|1|true");
  EXPECT_EQ(db.Scalar("SELECT parked FROM converge.outbox_blocked_keys WHERE key = 'poison'"), "t");
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.outbox WHERE key = 'poison'"), 2)
      << "later rows of a parked key wait; they must not overtake";
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.outbox WHERE key = 'fine'"), 0);
  for (const auto& m : fake->published()) EXPECT_NE(m.subject, "poison");
  EXPECT_EQ(relay.stats().dead_lettered.load(), 1u);
}

TEST(RelayTest, BrokerDownOpensTheBreakerAndLosesNothing) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  EnqueueSql(db, "t", "a", 4);
  EnqueueSql(db, "t", "b", 4);
  auto pub = std::make_unique<FakePublisher>();
  FakePublisher* fake = pub.get();
  fake->SetDown(true);
  auto o = Options(db);
  o.breaker_failures = 2;
  Relay relay(o, std::move(pub));
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(relay.RunOnce().ok());
  EXPECT_EQ(relay.stats().breaker_open.load(), 1);
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.outbox"), 8);
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.outbox_blocked_keys"), 0)
      << "a broker outage is not the rows' fault: no per-key bookkeeping";
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.dead_letters"), 0);
  const int batches_while_open = fake->batches();
  ASSERT_TRUE(relay.RunOnce().ok());
  EXPECT_EQ(fake->batches(), batches_while_open) << "an open breaker claims nothing";

  fake->SetDown(false);
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  Drain(relay);
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.outbox"), 0);
  EXPECT_EQ(relay.stats().breaker_open.load(), 0);
  ExpectPerKeyOrder(fake->published());
}

// A rate limit is a floor on elapsed time (a busier machine only makes it slower), so this
// asserts a lower bound only: 100 rows at 50/s with one second of burst need >= 1 s.
TEST(RelayTest, RateLimitSpacesPublishes) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  for (int k = 0; k < 100; ++k) EnqueueSql(db, "t", "k" + std::to_string(k), 1);
  auto o = Options(db);
  o.rate_limit = 50;
  auto pub = std::make_unique<FakePublisher>();
  FakePublisher* fake = pub.get();
  Relay relay(o, std::move(pub));
  // NOTIFYs arriving meanwhile must not cut the wait short.
  std::thread noise([&] {
    for (int i = 0; i < 20; ++i) {
      db.Scalar("SELECT pg_notify('converge_outbox', '')");
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  const auto start = std::chrono::steady_clock::now();
  Drain(relay);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  noise.join();
  EXPECT_EQ(fake->published().size(), 100u);
  EXPECT_GE(elapsed, std::chrono::milliseconds(950));
}

TEST(RelayTest, ExpiredMessageIsDeadLetteredWithoutParking) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  db.Scalar(
      "SELECT converge.enqueue('t', 'k', 'x', '1', '{}', NULL, NULL, NULL, now() - interval '1s')");
  EnqueueSql(db, "t", "k", 1);
  auto pub = std::make_unique<FakePublisher>();
  FakePublisher* fake = pub.get();
  Relay relay(Options(db), std::move(pub));
  Drain(relay);
  EXPECT_EQ(db.Scalar("SELECT error_code FROM converge.dead_letters"), "expired");
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.outbox_blocked_keys"), 0);
  ASSERT_EQ(fake->published().size(), 1u);
  EXPECT_EQ(fake->published()[0].sequence, 2);
}

TEST(RelayTest, LostLeaseFencesTheDelete) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  EnqueueSql(db, "t", "k", 1);
  auto pub = std::make_unique<FakePublisher>();
  FakePublisher* fake = pub.get();
  // While the batch is at the broker, another relay takes every slot over.
  fake->FailWhen([&](const Message&) {
    db.Scalar(
        "UPDATE converge.relay_slots SET owner = 'other', epoch = epoch + 1, "
        "lease_until = now() + interval '1 minute'");
    return Status::Ok();
  });
  Relay relay(Options(db), std::move(pub));
  ASSERT_TRUE(relay.RunOnce().ok());
  EXPECT_EQ(fake->published().size(), 1u);
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.outbox"), 1)
      << "a relay that lost the slot must not delete: the new owner republishes (a duplicate)";
  EXPECT_EQ(relay.stats().fenced.load(), 1u);
}

// One slot of the batch lost, the other still held: the delete skips the rule's one-test path
// and fences row by row, deleting only the held slot's rows.
TEST(RelayTest, LostLeaseOfOneSlotFencesOnlyItsRows) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  ASSERT_NE(db.Scalar("SELECT converge.key_slot('a')"), db.Scalar("SELECT converge.key_slot('b')"));
  EnqueueSql(db, "t", "a", 2);
  EnqueueSql(db, "t", "b", 3);
  auto pub = std::make_unique<FakePublisher>();
  FakePublisher* fake = pub.get();
  // While the batch is at the broker, another relay takes over the slot of key "a" only.
  fake->FailWhen([&](const Message&) {
    db.Scalar(
        "UPDATE converge.relay_slots SET owner = 'other', epoch = epoch + 1, "
        "lease_until = now() + interval '1 minute' WHERE slot = converge.key_slot('a')");
    return Status::Ok();
  });
  Relay relay(Options(db), std::move(pub));
  ASSERT_TRUE(relay.RunOnce().ok());
  EXPECT_EQ(fake->published().size(), 5u);
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.outbox WHERE key = 'a'"), 2)
      << "the lost slot's rows stay for its new owner (duplicates, never losses)";
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.outbox WHERE key = 'b'"), 0)
      << "the held slot's rows are deleted";
  EXPECT_EQ(relay.stats().fenced.load(), 2u);
  EXPECT_EQ(relay.stats().published.load(), 3u);
}

TEST(RelayTest, TwoRelaysSplitTheSlotsAndEachPublishesItsOwn) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  auto o = Options(db);
  o.lease_renew_interval = std::chrono::milliseconds(1);  // renew on every cycle
  Relay a(o, std::make_unique<FakePublisher>());
  Relay b(o, std::make_unique<FakePublisher>());
  ASSERT_TRUE(a.RunOnce().ok());
  EXPECT_EQ(a.stats().owned_slots.load(), 256);
  ASSERT_TRUE(b.RunOnce().ok());  // registers; no slot is free yet
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_TRUE(a.RunOnce().ok());  // sees two live relays: gives half back
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_TRUE(b.RunOnce().ok());  // takes the free half
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_TRUE(a.RunOnce().ok());
  EXPECT_EQ(a.stats().owned_slots.load(), 128);
  EXPECT_EQ(b.stats().owned_slots.load(), 128);
  EXPECT_EQ(db.Count("SELECT count(DISTINCT owner) FROM converge.relay_slots"), 2);

  // Rows in every slot are published by whichever relay owns the slot, each exactly once.
  for (int k = 0; k < 64; ++k) EnqueueSql(db, "t", "k" + std::to_string(k), 2);
  Drain(a);
  Drain(b);
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.outbox"), 0);
  EXPECT_EQ(a.stats().published.load() + b.stats().published.load(), 128u);
  EXPECT_GT(a.stats().published.load(), 0u);
  EXPECT_GT(b.stats().published.load(), 0u);
}

}  // namespace
}  // namespace converge::outbox
