// The pipelined Run() loop: batch n+1 is claimed while batch n is at the broker. These tests
// hold batch n at a FakePublisher until the relay has claimed n+1 (stats().batches counts
// claims), then check that n+1 never carried a later row of a key of n, that a failure in n
// does not let such a row overtake, and that a lost lease fences both batches.
#include <gtest/gtest.h>

#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "converge/outbox/relay.h"
#include "converge/testing/fake_publisher.h"
#include "converge/testing/pg_fixture.h"

namespace converge::outbox {
namespace {

using std::chrono::milliseconds;
using testing::FakePublisher;
using testing::TestDatabase;

RelayOptions Options(const TestDatabase& db) {
  RelayOptions o;
  o.database_url = db.url();
  o.batch_size = 10;
  o.poll_interval = milliseconds(50);
  o.retry = {milliseconds(100), milliseconds(100), 1.0, 0.0};
  return o;
}

void Enqueue(const TestDatabase& db, const std::string& key, int n) {
  auto c = db.Connect();
  pqxx::work tx(*c);
  for (int i = 0; i < n; ++i)
    tx.exec_params("SELECT converge.enqueue('t', $1, 'test.event', $2::jsonb)", key,
                   std::to_string(i));
  tx.commit();
}

// Holds the first batch at the "broker" until the relay has claimed its second batch, and
// records every batch handed to the publisher.
class HoldFirstBatch {
 public:
  HoldFirstBatch(FakePublisher* fake, const Relay* relay) : relay_(relay) {
    fake->BeforeBatch([this](const std::vector<Message>& batch) {
      bool first;
      {
        std::lock_guard<std::mutex> lock(mu_);
        batches_.push_back(batch);
        first = batches_.size() == 1;
      }
      if (!first) return;
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
      while (relay_->stats().batches.load() < 2 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(milliseconds(5));
      overlapped_ = relay_->stats().batches.load() >= 2;
    });
  }
  std::vector<std::vector<Message>> batches() const {
    std::lock_guard<std::mutex> lock(mu_);
    return batches_;
  }
  // The relay claimed its second batch while the first was still unanswered.
  bool overlapped() const { return overlapped_.load(); }

 private:
  const Relay* relay_;
  mutable std::mutex mu_;
  std::vector<std::vector<Message>> batches_;
  std::atomic<bool> overlapped_{false};
};

bool WaitFor(const std::function<bool()>& done, std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(milliseconds(20));
  }
  return true;
}

// Runs the relay on a thread until the outbox is empty (30 s at most), then stops it.
bool RunUntilDrained(const TestDatabase& db, Relay& relay) {
  std::thread runner([&] { EXPECT_TRUE(relay.Run().ok()); });
  const bool drained =
      WaitFor([&] { return db.Count("SELECT count(*) FROM converge.outbox") == 0; },
              std::chrono::seconds(30));
  relay.Stop();
  runner.join();
  return drained;
}

// Index of the first publish of (key, seq) in `published`, or -1.
int IndexOf(const std::vector<Message>& published, const std::string& key, int64_t seq) {
  for (size_t i = 0; i < published.size(); ++i)
    if (published[i].subject == key && published[i].sequence == seq) return static_cast<int>(i);
  return -1;
}

// 9 cold keys, then hot#1: the first batch (10 rows) is full, so the relay claims the next
// one while it is at the broker; hot#2 and 20 more cold rows are eligible by id order.
void FillHotAndCold(const TestDatabase& db) {
  for (int k = 0; k < 9; ++k) Enqueue(db, "cold-" + std::to_string(k), 1);
  Enqueue(db, "hot", 2);
  for (int k = 9; k < 29; ++k) Enqueue(db, "cold-" + std::to_string(k), 1);
}

TEST(RelayPipeline, NextBatchClaimedInFlightLeavesOutTheKeysOfTheBatchAtTheBroker) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  FillHotAndCold(db);
  auto pub = std::make_unique<FakePublisher>();
  FakePublisher* fake = pub.get();
  Relay relay(Options(db), std::move(pub));
  HoldFirstBatch hold(fake, &relay);
  ASSERT_TRUE(RunUntilDrained(db, relay));

  EXPECT_TRUE(hold.overlapped()) << "the second batch is claimed while the first is in flight";
  const auto batches = hold.batches();
  ASSERT_GE(batches.size(), 2u);
  EXPECT_EQ(IndexOf(batches[0], "hot", 1), 9) << "hot#1 closes the first batch";
  EXPECT_EQ(IndexOf(batches[1], "hot", 2), -1)
      << "the batch claimed while hot#1 was unconfirmed must not carry hot#2";
  const auto published = fake->published();
  EXPECT_EQ(published.size(), 31u);
  EXPECT_LT(IndexOf(published, "hot", 1), IndexOf(published, "hot", 2));
  EXPECT_EQ(relay.stats().published.load(), 31u);
}

TEST(RelayPipeline, FailureInTheBatchAtTheBrokerDoesNotLetTheNextBatchOvertake) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  FillHotAndCold(db);
  auto pub = std::make_unique<FakePublisher>();
  FakePublisher* fake = pub.get();
  std::atomic<int> failures{0};
  fake->FailWhen([&](const Message& m) {
    if (m.subject == "hot" && m.sequence == 1 && failures.load() < 1) {
      ++failures;
      return Status::Unavailable("partition leader not available");
    }
    return Status::Ok();
  });
  Relay relay(Options(db), std::move(pub));
  HoldFirstBatch hold(fake, &relay);
  ASSERT_TRUE(RunUntilDrained(db, relay));

  EXPECT_TRUE(hold.overlapped());
  EXPECT_EQ(failures.load(), 1);
  const auto batches = hold.batches();
  ASSERT_GE(batches.size(), 2u);
  EXPECT_EQ(IndexOf(batches[1], "hot", 2), -1);
  // hot#1 failed (not written) and was retried after its block; hot#2 only after that.
  const auto published = fake->published();
  const int first = IndexOf(published, "hot", 1), second = IndexOf(published, "hot", 2);
  ASSERT_GE(first, 0);
  ASSERT_GE(second, 0);
  EXPECT_LT(first, second) << "hot#2 overtook the failed hot#1";
  EXPECT_EQ(published.size(), 31u);
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.outbox_blocked_keys"), 0);
  EXPECT_EQ(relay.stats().retried.load(), 1u);
}

TEST(RelayPipeline, LeaseLostWhileBatchesAreInTheAirFencesTheirDeletes) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  FillHotAndCold(db);
  auto pub = std::make_unique<FakePublisher>();
  FakePublisher* fake = pub.get();
  auto o = Options(db);
  Relay relay(o, std::move(pub));
  std::atomic<bool> stolen{false};
  std::mutex mu;
  std::vector<std::vector<Message>> batches;
  fake->BeforeBatch([&](const std::vector<Message>& batch) {
    {
      std::lock_guard<std::mutex> lock(mu);
      batches.push_back(batch);
      if (batches.size() > 1) return;
    }
    // First batch: wait until the next one is claimed, then another relay takes every slot
    // (as after an expired lease) before either is confirmed.
    WaitFor([&] { return relay.stats().batches.load() >= 2; }, std::chrono::seconds(20));
    db.Scalar(
        "UPDATE converge.relay_slots SET owner = 'other', epoch = epoch + 1, "
        "lease_until = now() + interval '1 minute'");
    stolen = true;
  });
  std::thread runner([&] { EXPECT_TRUE(relay.Run().ok()); });
  const bool fenced_both = WaitFor(
      [&] {
        std::lock_guard<std::mutex> lock(mu);
        return stolen.load() && batches.size() >= 2 &&
               relay.stats().fenced.load() >= batches[0].size() + batches[1].size();
      },
      std::chrono::seconds(30));
  relay.Stop();
  runner.join();
  EXPECT_TRUE(fenced_both) << "fenced " << relay.stats().fenced.load();
  EXPECT_EQ(relay.stats().published.load(), 0u) << "nothing deleted after the slots were lost";
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.outbox"), 31)
      << "the new owner publishes every row again (duplicates, never losses)";
}

// The gauges that need a query (oldest row's age, parked keys) are read beside the loop, every
// 2 s, on their own connection.
TEST(RelayPipeline, GaugesShowTheParkedKeyAndTheAgeOfTheRowWaitingBehindIt) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  Enqueue(db, "poison", 2);
  Enqueue(db, "fine", 3);
  auto pub = std::make_unique<FakePublisher>();
  FakePublisher* fake = pub.get();
  fake->RefuseAsTooLarge("poison", 1);
  Relay relay(Options(db), std::move(pub));
  std::thread runner([&] { EXPECT_TRUE(relay.Run().ok()); });
  // poison#2 waits behind the parked key; its age grows from one reading to the next.
  int64_t first_age = 0;
  const bool parked = WaitFor(
      [&] {
        first_age = relay.stats().oldest_age_ms.load();
        return relay.stats().parked_keys.load() == 1 && first_age > 0;
      },
      std::chrono::seconds(15));
  const bool aged =
      parked && WaitFor([&] { return relay.stats().oldest_age_ms.load() > first_age; },
                        std::chrono::seconds(15));
  const int64_t sql_age = db.Count(
      "SELECT (extract(epoch FROM now() - min(created_at)) * 1000)::bigint FROM converge.outbox");
  relay.Stop();
  runner.join();
  EXPECT_TRUE(parked) << "parked_keys " << relay.stats().parked_keys.load() << ", oldest_age_ms "
                      << relay.stats().oldest_age_ms.load();
  EXPECT_TRUE(aged) << "oldest_age_ms stayed at " << first_age;
  EXPECT_LE(relay.stats().oldest_age_ms.load(), sql_age + 100);
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.outbox"), 1) << "poison#2 waits";
}

}  // namespace
}  // namespace converge::outbox

namespace converge::outbox {
namespace {

// Two publishers: rows committed while a batch waits for its confirmations go out at once on
// the other publisher (moderate rates: that batch is not full). The two batches' keys must be
// disjoint, and a failure in the first must not let the second carry the failed key's next row.
TEST(RelayPipeline, TwoPublishersCarryDisjointKeysAndAFailureIsNotOvertaken) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  // The first batch: 9 cold keys and hot#1. hot#2 and 5 more cold rows are committed while it
  // is at the broker.
  for (int k = 0; k < 9; ++k) Enqueue(db, "cold-" + std::to_string(k), 1);
  Enqueue(db, "hot", 1);
  auto pub1 = std::make_unique<FakePublisher>();
  auto pub2 = std::make_unique<FakePublisher>();
  FakePublisher* fakes[2] = {pub1.get(), pub2.get()};
  std::mutex mu;
  std::vector<std::vector<Message>> batches;  // in the order they reached a publisher
  std::vector<Message> log;                   // every successful publish, in order
  std::atomic<bool> concurrent{false};
  std::atomic<int> failures{0};
  auto record = [&](const std::vector<Message>& batch) {
    size_t n;
    {
      std::lock_guard<std::mutex> lock(mu);
      batches.push_back(batch);
      n = batches.size();
      for (const auto& m : batch) {
        const bool fail = m.subject == "hot" && m.sequence == 1 && failures.load() == 0;
        if (fail) ++failures;
        if (!fail) log.push_back(m);
      }
    }
    if (n != 1) return;
    Enqueue(db, "hot", 1);
    for (int k = 9; k < 14; ++k) Enqueue(db, "cold-" + std::to_string(k), 1);
    // Hold the first batch until the second one is at the other publisher.
    concurrent = WaitFor(
        [&] {
          std::lock_guard<std::mutex> lock(mu);
          return batches.size() >= 2;
        },
        std::chrono::seconds(20));
  };
  for (FakePublisher* f : fakes) {
    f->BeforeBatch(record);
    f->FailWhen([&](const Message& m) {
      // The record hook already decided; replay its decision for this message.
      std::lock_guard<std::mutex> lock(mu);
      for (const auto& l : log)
        if (l.id == m.id) return Status::Ok();
      return Status::Unavailable("partition leader not available");
    });
  }
  std::vector<RelayTarget> targets;
  RelayTarget t{std::move(pub1), {}, {}};
  t.more_publishers.push_back(std::move(pub2));
  targets.push_back(std::move(t));
  Relay relay(Options(db), std::move(targets));
  ASSERT_TRUE(RunUntilDrained(db, relay));

  EXPECT_TRUE(concurrent.load()) << "the second batch went out while the first was unconfirmed";
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_GE(batches.size(), 2u);
  std::set<std::string> first_keys;
  for (const auto& m : batches[0]) first_keys.insert(m.subject);
  for (const auto& m : batches[1])
    EXPECT_EQ(first_keys.count(m.subject), 0u) << m.subject << " was in both batches at once";
  EXPECT_EQ(failures.load(), 1);
  const int first = IndexOf(log, "hot", 1), second = IndexOf(log, "hot", 2);
  ASSERT_GE(first, 0);
  ASSERT_GE(second, 0);
  EXPECT_LT(first, second) << "hot#2 overtook the failed hot#1";
  EXPECT_EQ(log.size(), 16u);
  EXPECT_EQ(relay.stats().published.load(), 16u);
}

}  // namespace
}  // namespace converge::outbox
