// Integration tests of the consumer engine: real PostgreSQL (CONVERGE_PG_URL, a fresh migrated
// database per test), FakeSource as the broker. Each test checks the three invariants where
// they apply: nothing lost, no effect applied twice, stored offsets never decrease.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>

#include <atomic>
#include <functional>
#include <thread>

#include "converge/common/metrics.h"
#include "converge/common/uuid.h"
#include "converge/consumer/consumer.h"
#include "converge/consumer/testing/fake_source.h"
#include "converge/testing/pg_fixture.h"

namespace converge::consumer {
namespace {

using testing::FakeSource;
using Headers = std::vector<std::pair<std::string, std::string>>;
using namespace std::chrono_literals;

Headers Ce(const std::string& id, const std::string& type = "order.placed",
           const std::string& subject = "", int64_t seq = 0) {
  Headers h = {{"ce_specversion", "1.0"}, {"ce_id", id}, {"ce_source", "/test"}, {"ce_type", type}};
  if (!subject.empty()) h.emplace_back("ce_subject", subject);
  if (seq > 0) h.emplace_back("ce_keyseq", std::to_string(seq));
  return h;
}

std::string NewId() { return NewUuidV7().ToString(); }

class ConsumerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(db_.ok());
    db_.Scalar(
        "CREATE TABLE effects (id text NOT NULL, payload text, at timestamptz DEFAULT now())");
  }

  ConsumerOptions Options(const std::string& member = "") {
    ConsumerOptions o;
    o.group = "g1";
    o.topics = {"orders"};
    o.database_url = db_.url();
    o.member_id = member;
    o.poll_timeout = 20ms;
    o.linger = 2ms;
    o.retry_backoff = {1ms, 5ms, 2.0, 0.0};
    o.reconnect_backoff = {10ms, 200ms, 2.0, 0.0};
    o.max_attempts = 3;
    return o;
  }

  // A consumer whose "order.placed" handler records one effect row per message.
  std::unique_ptr<Consumer> Make(FakeSource*& src, ConsumerOptions o) {
    auto owned = std::make_unique<FakeSource>();
    src = owned.get();
    auto c = std::make_unique<Consumer>(std::move(o), std::move(owned));
    c->Handle("order.placed", [](const Message& m, Context& ctx) {
      ctx.tx().exec_params("INSERT INTO effects (id, payload) VALUES ($1, $2)", m.id, m.payload);
      return Status::Ok();
    });
    return c;
  }

  // Runs RunOnce until `done` or the deadline.
  static bool RunUntil(Consumer& c, const std::function<bool()>& done,
                       std::chrono::milliseconds limit = 10s) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
      Status st = c.RunOnce();
      EXPECT_TRUE(st.ok()) << st;
      if (done()) return true;
    }
    return done();
  }

  long long Effects() { return db_.Count("SELECT count(*) FROM effects"); }
  long long DupEffects() { return db_.Count("SELECT count(*) - count(DISTINCT id) FROM effects"); }
  long long StoredOffset(int partition = 0) {
    std::string s = db_.Scalar(
        "SELECT next_offset FROM converge.consumer_offsets WHERE consumer_group = 'g1' AND "
        "topic = 'orders' AND partition = " +
        std::to_string(partition));
    return s.empty() ? -1 : std::stoll(s);
  }
  long long DeadLetters(const std::string& code) {
    return db_.Count("SELECT count(*) FROM converge.dead_letters WHERE error_code = '" + code +
                     "'");
  }

  converge::testing::TestDatabase db_;
};

TEST_F(ConsumerTest, AppliesEachMessageOnceAndStoresTheOffset) {
  FakeSource* src;
  auto c = Make(src, Options());
  for (int i = 0; i < 20; ++i) src->Produce("orders", 0, "p" + std::to_string(i), Ce(NewId()));
  src->Rebalance({}, {{"orders", 0}});
  ASSERT_TRUE(c->Init().ok());
  ASSERT_TRUE(RunUntil(*c, [&] { return c->stats().consumed == 20; }));
  EXPECT_EQ(Effects(), 20);
  EXPECT_EQ(DupEffects(), 0);
  EXPECT_EQ(StoredOffset(), 20);
  EXPECT_EQ(src->AckedPosition({"orders", 0}), 20);
  EXPECT_EQ(db_.Count("SELECT count(*) FROM converge.inbox WHERE consumer_group = 'g1'"), 20);
}

TEST_F(ConsumerTest, SameMessageProducedTwiceIsAppliedOnce) {
  FakeSource* src;
  auto c = Make(src, Options());
  const std::string id = NewId();
  src->Produce("orders", 0, "same", Ce(id));
  src->Produce("orders", 0, "other", Ce(NewId()));
  src->Produce("orders", 0, "same", Ce(id));  // the relay published it again
  src->Rebalance({}, {{"orders", 0}});
  ASSERT_TRUE(c->Init().ok());
  ASSERT_TRUE(RunUntil(*c, [&] { return c->stats().consumed == 3; }));
  EXPECT_EQ(Effects(), 2);
  EXPECT_EQ(DupEffects(), 0);
  EXPECT_EQ(c->stats().duplicates_skipped, 1u);
  EXPECT_EQ(StoredOffset(), 3);
}

// The process dies after COMMIT and before the broker commit: a new incarnation is handed every
// record again (here the source even ignores the stored position). Effects stay once.
TEST_F(ConsumerTest, RestartBeforeBrokerCommitAppliesOnce) {
  std::vector<std::string> ids;
  for (int i = 0; i < 10; ++i) ids.push_back(NewId());
  {
    FakeSource* src;
    auto c = Make(src, Options());
    for (auto& id : ids) src->Produce("orders", 0, "x", Ce(id));
    src->Rebalance({}, {{"orders", 0}});
    ASSERT_TRUE(c->Init().ok());
    ASSERT_TRUE(RunUntil(*c, [&] { return c->stats().consumed == 10; }));
  }
  // Operator rewinds the stored offset too, so the inbox is the only line of defence.
  db_.Scalar(
      "BEGIN; SET LOCAL converge.allow_offset_rewind = 'on'; UPDATE "
      "converge.consumer_offsets SET next_offset = 0; COMMIT");
  FakeSource* src;
  auto c = Make(src, Options());
  src->IgnoreAssignedOffsets(true);
  for (auto& id : ids) src->Produce("orders", 0, "x", Ce(id));
  const std::string fresh = NewId();
  src->Produce("orders", 0, "x", Ce(fresh));
  src->Rebalance({}, {{"orders", 0}});
  ASSERT_TRUE(c->Init().ok());
  ASSERT_TRUE(RunUntil(*c, [&] { return c->stats().consumed == 11; }));
  EXPECT_EQ(c->stats().duplicates_skipped, 10u);
  EXPECT_EQ(Effects(), 11);
  EXPECT_EQ(DupEffects(), 0);
  EXPECT_EQ(StoredOffset(), 11);
}

TEST_F(ConsumerTest, StoredOffsetCannotMoveBackwards) {
  FakeSource* src;
  auto c = Make(src, Options());
  src->Produce("orders", 0, "x", Ce(NewId()));
  src->Rebalance({}, {{"orders", 0}});
  ASSERT_TRUE(c->Init().ok());
  ASSERT_TRUE(RunUntil(*c, [&] { return c->stats().consumed == 1; }));
  auto conn = db_.Connect();
  pqxx::work tx(*conn);
  EXPECT_THROW(tx.exec("UPDATE converge.consumer_offsets SET next_offset = 0"), pqxx::sql_error);
}

TEST_F(ConsumerTest, SameIdDifferentPayloadIsAConflictAndDeadLettered) {
  FakeSource* src;
  auto c = Make(src, Options());
  const std::string id = NewId();
  src->Produce("orders", 0, "original", Ce(id));
  src->Produce("orders", 0, "tampered", Ce(id));
  src->Produce("orders", 0, "after", Ce(NewId()));
  src->Rebalance({}, {{"orders", 0}});
  ASSERT_TRUE(c->Init().ok());
  ASSERT_TRUE(RunUntil(*c, [&] { return c->stats().consumed == 3; }));
  EXPECT_EQ(Effects(), 2);
  EXPECT_EQ(db_.Scalar("SELECT payload FROM effects WHERE id = '" + id + "'"), "original");
  EXPECT_EQ(c->stats().conflicts, 1u);
  EXPECT_EQ(DeadLetters("payload_conflict"), 1);
  EXPECT_EQ(db_.Scalar("SELECT convert_from(payload, 'UTF8') || ':' || \"offset\" FROM "
                       "converge.dead_letters"),
            "tampered:1");
  EXPECT_EQ(StoredOffset(), 3);
}

TEST_F(ConsumerTest, PoisonMessageIsDeadLetteredAndThePartitionContinues) {
  FakeSource* src;
  auto c = Make(src, Options());
  c->Handle("poison", [](const Message&, Context& ctx) {
    ctx.tx().exec("INSERT INTO effects (id) VALUES ('poison-write')");
    return Status::FailedPrecondition("cannot ever work");
  });
  src->Produce("orders", 0, "a", Ce(NewId()));
  src->Produce("orders", 0, "bad", Ce(NewId(), "poison"));
  src->Produce("orders", 0, "garbage", {{"ce_type", "no id"}});  // undecodable
  src->Produce("orders", 0, "x", Ce(NewId(), "nobody.handles.this"));
  src->Produce("orders", 0, "b", Ce(NewId()));
  src->Rebalance({}, {{"orders", 0}});
  ASSERT_TRUE(c->Init().ok());
  ASSERT_TRUE(RunUntil(*c, [&] { return c->stats().consumed == 5; }));
  EXPECT_EQ(Effects(), 2);  // a and b; the poison handler's own write was rolled back
  EXPECT_EQ(DeadLetters("handler_failed"), 1);
  EXPECT_EQ(DeadLetters("decode_failed"), 1);
  EXPECT_EQ(DeadLetters("unknown_type"), 1);
  EXPECT_EQ(db_.Count("SELECT attempts FROM converge.dead_letters WHERE error_code = "
                      "'handler_failed'"),
            1);
  EXPECT_EQ(StoredOffset(), 5);
  EXPECT_EQ(c->stats().dead_letters, 3u);
}

TEST_F(ConsumerTest, UnknownTypeCanBeSkipped) {
  FakeSource* src;
  auto o = Options();
  o.unknown_type = UnknownTypePolicy::kSkip;
  auto c = Make(src, o);
  src->Produce("orders", 0, "x", Ce(NewId(), "nobody.handles.this"));
  src->Rebalance({}, {{"orders", 0}});
  ASSERT_TRUE(c->Init().ok());
  ASSERT_TRUE(RunUntil(*c, [&] { return c->stats().consumed == 1; }));
  EXPECT_EQ(c->stats().unknown_type_skipped, 1u);
  EXPECT_EQ(db_.Count("SELECT count(*) FROM converge.dead_letters"), 0);
  EXPECT_EQ(StoredOffset(), 1);
}

// A retriable failure of one message in a batch: the others are committed once, the failing
// one is retried (savepoint) and applied once.
TEST_F(ConsumerTest, RetriableFailureInBatchKeepsTheOthers) {
  FakeSource* src;
  auto c = Make(src, Options());
  std::atomic<int> flaky_calls{0};
  c->Handle("flaky", [&](const Message& m, Context& ctx) {
    ctx.tx().exec_params("INSERT INTO effects (id, payload) VALUES ($1, 'flaky')", m.id);
    if (++flaky_calls <= 2) return Status::Unavailable("downstream busy");
    return Status::Ok();
  });
  for (int i = 0; i < 3; ++i) src->Produce("orders", 0, "x", Ce(NewId()));
  src->Produce("orders", 0, "x", Ce(NewId(), "flaky"));
  for (int i = 0; i < 3; ++i) src->Produce("orders", 0, "x", Ce(NewId()));
  src->Produce("orders", 1, "x", Ce(NewId()));
  src->Rebalance({}, {{"orders", 0}, {"orders", 1}});
  ASSERT_TRUE(c->Init().ok());
  ASSERT_TRUE(RunUntil(*c, [&] { return c->stats().consumed == 8; }));
  EXPECT_EQ(flaky_calls.load(), 3);
  EXPECT_EQ(Effects(), 8);
  EXPECT_EQ(DupEffects(), 0);
  EXPECT_EQ(c->stats().retries, 2u);
  EXPECT_EQ(StoredOffset(0), 7);
  EXPECT_EQ(StoredOffset(1), 1);
}

TEST_F(ConsumerTest, MessageThatKeepsFailingIsDeadLetteredWithAttempts) {
  FakeSource* src;
  auto c = Make(src, Options());
  c->Handle("always", [](const Message&, Context&) { return Status::Aborted("deadlock-ish"); });
  src->Produce("orders", 0, "x", Ce(NewId(), "always"));
  src->Produce("orders", 0, "y", Ce(NewId()));
  src->Rebalance({}, {{"orders", 0}});
  ASSERT_TRUE(c->Init().ok());
  ASSERT_TRUE(RunUntil(*c, [&] { return c->stats().consumed == 2; }));
  EXPECT_EQ(DeadLetters("retries_exhausted"), 1);
  EXPECT_EQ(db_.Scalar("SELECT attempts FROM converge.dead_letters"), "3");
  EXPECT_NE(db_.Scalar("SELECT reason FROM converge.dead_letters").find("deadlock-ish"),
            std::string::npos);
  EXPECT_EQ(Effects(), 1);
  EXPECT_EQ(StoredOffset(), 2);
}

TEST_F(ConsumerTest, HandlerExceptionFromSqlIsIsolatedBySavepoint) {
  FakeSource* src;
  auto c = Make(src, Options());
  c->Handle("bad.sql", [](const Message&, Context& ctx) {
    ctx.tx().exec("INSERT INTO effects (id) VALUES ('partial')");
    ctx.tx().exec("SELECT * FROM no_such_table");  // throws: 42P01 -> permanent
    return Status::Ok();
  });
  src->Produce("orders", 0, "a", Ce(NewId()));
  src->Produce("orders", 0, "x", Ce(NewId(), "bad.sql"));
  src->Produce("orders", 0, "b", Ce(NewId()));
  src->Rebalance({}, {{"orders", 0}});
  ASSERT_TRUE(c->Init().ok());
  ASSERT_TRUE(RunUntil(*c, [&] { return c->stats().consumed == 3; }));
  EXPECT_EQ(Effects(), 2);
  EXPECT_EQ(db_.Count("SELECT count(*) FROM effects WHERE id = 'partial'"), 0);
  EXPECT_EQ(DeadLetters("handler_failed"), 1);
  EXPECT_EQ(c->stats().transactions, 1u);  // one batch, nothing re-run
}

// The batch runs without per-record savepoints; a handler that swallows an SQL error (and so
// leaves the transaction aborted) must still cost only itself: the batch is re-run with
// savepoints, that record is charged and finally dead-lettered, the others apply once.
TEST_F(ConsumerTest, HandlerSwallowingAnSqlErrorCostsOnlyItself) {
  FakeSource* src;
  auto c = Make(src, Options());
  std::atomic<int> calls{0};
  c->Handle("swallow", [&](const Message&, Context& ctx) {
    ++calls;
    try {
      ctx.tx().exec("SELECT * FROM no_such_table");
    } catch (const std::exception&) {
    }
    return Status::Ok();
  });
  for (int i = 0; i < 3; ++i) src->Produce("orders", 0, "a" + std::to_string(i), Ce(NewId()));
  src->Produce("orders", 0, "x", Ce(NewId(), "swallow"));
  for (int i = 0; i < 3; ++i) src->Produce("orders", 0, "b" + std::to_string(i), Ce(NewId()));
  src->Rebalance({}, {{"orders", 0}});
  ASSERT_TRUE(c->Init().ok());
  ASSERT_TRUE(RunUntil(*c, [&] { return c->stats().consumed == 7; }));
  EXPECT_EQ(Effects(), 6);
  EXPECT_EQ(DupEffects(), 0);
  EXPECT_EQ(DeadLetters("retries_exhausted"), 1);
  EXPECT_EQ(db_.Scalar("SELECT attempts FROM converge.dead_letters"), "3");
  EXPECT_EQ(StoredOffset(), 7);
  EXPECT_EQ(db_.Count("SELECT count(*) FROM converge.inbox WHERE consumer_group = 'g1'"), 7);
}

// A handler that kills its process (kill -9 in the middle of the handler) never finishes an
// attempt. Attempts are recorded outside the batch transaction, so the message is still
// dead-lettered after max_attempts (3) runs of its handler, across restarts: the first crash is
// noticed at the next claim (the batch marker), then the batch's records run one per
// transaction with the attempt counted first. Each incarnation is a forked child process.
TEST_F(ConsumerTest, HandlerThatCrashesTheProcessIsDeadLetteredAcrossRestarts) {
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i) ids.push_back(NewId());
  auto incarnation = [&]() -> int {  // exit status, or -signal
    fflush(nullptr);
    const pid_t pid = fork();
    if (pid == 0) {
      FakeSource* src;
      auto c = Make(src, Options());
      c->Handle("crash", [](const Message&, Context&) -> Status {
        raise(SIGKILL);
        return Status::Ok();
      });
      for (int i = 0; i < 6; ++i)
        src->Produce("orders", 0, "p" + std::to_string(i),
                     Ce(ids[i], i == 2 ? "crash" : "order.placed"));
      src->Rebalance({}, {{"orders", 0}});
      if (!c->Init().ok()) _exit(3);
      const auto end = std::chrono::steady_clock::now() + 20s;
      while (src->AckedPosition({"orders", 0}) < 6) {
        if (!c->RunOnce().ok() || std::chrono::steady_clock::now() > end) _exit(2);
      }
      c->Close();
      _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFSIGNALED(status) ? -WTERMSIG(status) : WEXITSTATUS(status);
  };
  int crashes = 0, last = 1;
  for (int run = 0; run < 10 && last != 0; ++run) {
    last = incarnation();
    if (last == -SIGKILL) ++crashes;
    ASSERT_TRUE(last == 0 || last == -SIGKILL) << "child exited with " << last;
  }
  EXPECT_EQ(last, 0);
  EXPECT_EQ(crashes, 4);  // max_attempts + the first, unnoticed one
  EXPECT_EQ(DeadLetters("retries_exhausted"), 1);
  EXPECT_EQ(db_.Scalar("SELECT attempts || ':' || \"offset\" FROM converge.dead_letters"), "3:2");
  EXPECT_NE(db_.Scalar("SELECT reason FROM converge.dead_letters").find("did not finish"),
            std::string::npos);
  EXPECT_EQ(Effects(), 5);
  EXPECT_EQ(DupEffects(), 0);
  EXPECT_EQ(StoredOffset(), 6);
  EXPECT_EQ(db_.Count("SELECT count(*) FROM converge.consumer_attempts"), 0);
}

// A retriable failure's attempt count is stored with the batch, so a restart continues it.
TEST_F(ConsumerTest, RetriableAttemptsContinueAfterARestart) {
  const std::string id = NewId();
  for (int run = 0; run < 2; ++run) {
    FakeSource* src;
    auto o = Options();
    o.max_attempts = 4;
    auto c = Make(src, o);
    std::atomic<int> calls{0};
    c->Handle("flaky", [&](const Message&, Context&) {
      ++calls;
      return Status::Unavailable("downstream busy");
    });
    src->Produce("orders", 0, "x", Ce(id, "flaky"));
    src->Rebalance({}, {{"orders", 0}});
    ASSERT_TRUE(c->Init().ok());
    if (run == 0) {
      ASSERT_TRUE(RunUntil(*c, [&] { return calls.load() == 2; }));
      c->Close();
      EXPECT_EQ(db_.Scalar("SELECT attempts FROM converge.consumer_attempts WHERE \"offset\" = 0"),
                "2");
    } else {
      ASSERT_TRUE(RunUntil(*c, [&] { return c->stats().consumed == 1; }));
      EXPECT_EQ(calls.load(), 2);  // 2 + 2 = max_attempts
    }
  }
  EXPECT_EQ(DeadLetters("retries_exhausted"), 1);
  EXPECT_EQ(db_.Scalar("SELECT attempts FROM converge.dead_letters"), "4");
  EXPECT_EQ(StoredOffset(), 1);
}

// The source's MaxProcessingTime (MQTT: half the keepalive) bounds the handler: SQL past it is
// cancelled by statement_timeout, a handler that returns late is charged as well; both are
// retried and finally dead-lettered with "handler exceeded <N> ms", the others apply.
TEST_F(ConsumerTest, HandlerOverrunningTheSourceBoundIsRetriedThenDeadLettered) {
  FakeSource* src;
  auto o = Options();
  o.handler_timeout = 10s;  // the source's bound is smaller: it wins
  auto c = Make(src, o);
  src->SetMaxProcessingTime(300ms);
  std::atomic<int> sql_calls{0}, cpu_calls{0};
  c->Handle("slow.sql", [&](const Message&, Context& ctx) {
    ++sql_calls;
    ctx.tx().exec("SELECT pg_sleep(5)");
    return Status::Ok();
  });
  c->Handle("slow.cpu", [&](const Message&, Context&) {
    ++cpu_calls;
    std::this_thread::sleep_for(400ms);
    return Status::Ok();
  });
  src->Produce("orders", 0, "a", Ce(NewId()));
  src->Produce("orders", 0, "x", Ce(NewId(), "slow.sql"));
  src->Produce("orders", 0, "y", Ce(NewId(), "slow.cpu"));
  src->Produce("orders", 0, "b", Ce(NewId()));
  src->Rebalance({}, {{"orders", 0}});
  ASSERT_TRUE(c->Init().ok());
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(RunUntil(
      *c, [&] { return c->stats().consumed == 4; }, 20s));
  // Three attempts each, every SQL attempt cancelled near 300 ms (not after pg_sleep's 5 s).
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  EXPECT_EQ(sql_calls.load(), 3);
  EXPECT_EQ(cpu_calls.load(), 3);
  EXPECT_EQ(DeadLetters("retries_exhausted"), 2);
  EXPECT_EQ(db_.Count("SELECT count(*) FROM converge.dead_letters WHERE reason LIKE "
                      "'%handler exceeded 300 ms%' AND attempts = 3"),
            2);
  EXPECT_EQ(Effects(), 2);
  EXPECT_EQ(DupEffects(), 0);
  EXPECT_EQ(StoredOffset(), 4);
}

TEST_F(ConsumerTest, ChainedStepEnqueuesInTheSameTransaction) {
  FakeSource* src;
  auto c = Make(src, Options());
  c->Handle("order.paid", [](const Message& m, Context& ctx) {
    auto sent = ctx.Enqueue(
        {.topic = "shipping", .key = m.subject, .type = "ship.requested", .payload = m.payload});
    if (!sent.ok()) return sent.status();
    if (m.payload == "fail-after-enqueue") return Status::FailedPrecondition("no");
    return Status::Ok();
  });
  src->Produce("orders", 0, "{\"n\":1}", Ce(NewId(), "order.paid", "o-1", 1));
  src->Produce("orders", 0, "fail-after-enqueue", Ce(NewId(), "order.paid", "o-2", 1));
  src->Produce("orders", 0, "{}", Ce(NewId(), "order.paid", "", 0));  // empty key: invalid
  src->Rebalance({}, {{"orders", 0}});
  ASSERT_TRUE(c->Init().ok());
  ASSERT_TRUE(RunUntil(*c, [&] { return c->stats().consumed == 3; }));
  EXPECT_EQ(db_.Count("SELECT count(*) FROM converge.outbox WHERE topic = 'shipping'"), 1);
  EXPECT_EQ(db_.Scalar("SELECT key FROM converge.outbox"), "o-1");
  EXPECT_EQ(DeadLetters("handler_failed"), 2);
}

TEST_F(ConsumerTest, RejectedEnqueueKeepsTheHandlersOtherWrites) {
  FakeSource* src;
  auto c = Make(src, Options());
  const std::string taken = NewId();
  db_.Scalar(
      "SELECT converge.enqueue_message('shipping', 'k0', 'ship.requested', '{}'::bytea, "
      "'{}'::jsonb, 'application/json', NULL, NULL, '" +
      taken + "'::uuid, NULL)");
  std::vector<std::string> errors;
  c->Handle("order.paid", [&](const Message& m, Context& ctx) {
    ctx.tx().exec_params("INSERT INTO effects (id, payload) VALUES ($1, $2)", m.id, m.payload);
    // A taken id is refused by the server; a bad topic is refused before any round trip.
    auto dup = ctx.Enqueue({.topic = "shipping",
                            .key = m.subject,
                            .type = "ship.requested",
                            .payload = "{}",
                            .message_id = taken});
    auto bad = ctx.Enqueue({.topic = "no spaces allowed", .key = m.subject, .type = "t"});
    errors.push_back(dup.status().ToString());
    errors.push_back(bad.status().ToString());
    EXPECT_EQ(dup.status().code(), StatusCode::kAlreadyExists);
    EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
    // The transaction is still usable: this enqueue and the effect row commit.
    auto ok = ctx.Enqueue({.topic = "shipping", .key = m.subject, .type = "ship.requested"});
    return ok.status();
  });
  src->Produce("orders", 0, "p", Ce(NewId(), "order.paid", "o-1", 1));
  src->Rebalance({}, {{"orders", 0}});
  ASSERT_TRUE(c->Init().ok());
  ASSERT_TRUE(RunUntil(*c, [&] { return c->stats().consumed == 1; }));
  EXPECT_EQ(Effects(), 1);
  EXPECT_EQ(c->stats().applied, 1u);
  EXPECT_EQ(db_.Count("SELECT count(*) FROM converge.outbox WHERE key = 'o-1'"), 1);
  ASSERT_EQ(errors.size(), 2u);
  EXPECT_NE(errors[1].find("topic"), std::string::npos) << errors[1];
}

TEST_F(ConsumerTest, MetricsExposeCountersHistogramsAndOffsets) {
  FakeSource* src;
  auto c = Make(src, Options());
  metrics::Registry registry;
  ASSERT_TRUE(c->RegisterMetrics(registry).ok());
  EXPECT_EQ(c->RegisterMetrics(registry).code(), StatusCode::kAlreadyExists);
  const std::string id = NewId();
  src->Produce("orders", 0, "a", Ce(id));
  src->Produce("orders", 0, "a", Ce(id));  // duplicate
  src->Produce("orders", 0, "b", Ce(NewId(), "no.handler"));
  src->Rebalance({}, {{"orders", 0}});
  ASSERT_TRUE(c->Init().ok());
  ASSERT_TRUE(RunUntil(*c, [&] { return c->stats().consumed == 3; }));
  const std::string text = registry.Expose();
  EXPECT_NE(text.find("converge_consumer_consumed_total{group=\"g1\"} 3"), std::string::npos)
      << text;
  EXPECT_NE(text.find("converge_consumer_applied_total{group=\"g1\"} 1"), std::string::npos);
  EXPECT_NE(text.find("converge_consumer_duplicates_skipped_total{group=\"g1\"} 1"),
            std::string::npos);
  EXPECT_NE(text.find("converge_consumer_dead_letters_total{group=\"g1\"} 1"), std::string::npos);
  EXPECT_NE(text.find("converge_consumer_committed_offset{group=\"g1\",topic=\"orders\","
                      "partition=\"0\"} 3"),
            std::string::npos);
  EXPECT_NE(text.find("converge_consumer_handler_seconds_count{group=\"g1\"} 1"),
            std::string::npos);
  EXPECT_NE(text.find("converge_consumer_batch_records_count{group=\"g1\"}"), std::string::npos);
  // Registering after Init is refused: the histograms are observed on the consumer's thread.
  metrics::Registry late;
  EXPECT_EQ(c->RegisterMetrics(late).code(), StatusCode::kFailedPrecondition);
  // A second consumer (another group) in the same process shares the registry.
  ConsumerOptions o2 = Options();
  o2.group = "g2";
  auto c2 = std::make_unique<Consumer>(o2, std::make_unique<FakeSource>());
  ASSERT_TRUE(c2->RegisterMetrics(registry).ok());
  EXPECT_NE(registry.Expose().find("converge_consumer_consumed_total{group=\"g2\"} 0"),
            std::string::npos);
  c.reset();  // leaves the registry; g2 stays
  std::string after = registry.Expose();
  EXPECT_EQ(after.find("converge_consumer_consumed_total{group=\"g1\"}"), std::string::npos);
  EXPECT_NE(after.find("converge_consumer_consumed_total{group=\"g2\"}"), std::string::npos);
  c2.reset();  // the last member removes the callback series
  EXPECT_EQ(registry.Expose().find("converge_consumer_consumed_total{"), std::string::npos);
}

TEST_F(ConsumerTest, SkipStaleSequenceIsTheDefault) {
  FakeSource* src;
  auto c = Make(src, Options());
  src->Produce("orders", 0, "1", Ce(NewId(), "order.placed", "k", 1));
  src->Produce("orders", 0, "2", Ce(NewId(), "order.placed", "k", 2));
  src->Produce("orders", 0, "old", Ce(NewId(), "order.placed", "k", 1));  // new id, old seq
  src->Produce("orders", 0, "5", Ce(NewId(), "order.placed", "k", 5));    // gap: applied
  src->Rebalance({}, {{"orders", 0}});
  ASSERT_TRUE(c->Init().ok());
  ASSERT_TRUE(RunUntil(*c, [&] { return c->stats().consumed == 4; }));
  EXPECT_EQ(Effects(), 3);
  EXPECT_EQ(db_.Count("SELECT count(*) FROM effects WHERE payload = 'old'"), 0);
  EXPECT_EQ(c->stats().stale_skipped, 1u);
  EXPECT_EQ(c->stats().sequence_gaps, 1u);
  EXPECT_EQ(db_.Scalar("SELECT last_seq FROM converge.consumer_key_seq"), "5");
}

TEST_F(ConsumerTest, ApplyPolicyAppliesStale) {
  FakeSource* src;
  auto o = Options();
  o.sequence_policy = SequencePolicy::kApply;
  auto c = Make(src, o);
  src->Produce("orders", 0, "2", Ce(NewId(), "order.placed", "k", 2));
  src->Produce("orders", 0, "1", Ce(NewId(), "order.placed", "k", 1));
  src->Rebalance({}, {{"orders", 0}});
  ASSERT_TRUE(c->Init().ok());
  ASSERT_TRUE(RunUntil(*c, [&] { return c->stats().consumed == 2; }));
  EXPECT_EQ(Effects(), 2);
  EXPECT_EQ(db_.Scalar("SELECT last_seq FROM converge.consumer_key_seq"), "2");
}

TEST_F(ConsumerTest, HoldPolicyRetriesAGapThenApplies) {
  FakeSource* src;
  auto o = Options();
  o.sequence_policy = SequencePolicy::kHold;
  auto c = Make(src, o);
  src->Produce("orders", 0, "1", Ce(NewId(), "order.placed", "k", 1));
  src->Produce("orders", 0, "3", Ce(NewId(), "order.placed", "k", 3));
  src->Produce("orders", 0, "4", Ce(NewId(), "order.placed", "k", 4));
  src->Rebalance({}, {{"orders", 0}});
  ASSERT_TRUE(c->Init().ok());
  ASSERT_TRUE(RunUntil(*c, [&] { return c->stats().consumed == 3; }));
  EXPECT_EQ(c->stats().retries, 2u);  // held twice (max_attempts 3), applied on the third
  EXPECT_EQ(c->stats().sequence_gaps, 1u);
  EXPECT_EQ(Effects(), 3);
  // Order within the key was kept: 4 was not applied before 3.
  EXPECT_EQ(db_.Scalar("SELECT string_agg(payload, ',' ORDER BY at, payload) FROM effects"),
            "1,3,4");
}

// Batching: a busy stream is committed in few transactions bounded by max_batch_records; a
// quiet stream commits each message on its own without waiting.
TEST_F(ConsumerTest, BatchesWhenBusyAndSinglesWhenQuiet) {
  FakeSource* src;
  auto o = Options();
  o.max_batch_records = 50;
  auto c = Make(src, o);
  for (int i = 0; i < 120; ++i) src->Produce("orders", 0, "x", Ce(NewId()));
  src->Rebalance({}, {{"orders", 0}});
  ASSERT_TRUE(c->Init().ok());
  ASSERT_TRUE(RunUntil(*c, [&] { return c->stats().consumed == 120; }));
  EXPECT_EQ(c->stats().max_batch_size, 50u);
  EXPECT_LE(c->stats().transactions, 4u);
  src->Produce("orders", 0, "x", Ce(NewId()));
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(RunUntil(*c, [&] { return c->stats().consumed == 121; }));
  EXPECT_EQ(c->stats().last_batch_size, 1u);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  EXPECT_EQ(Effects(), 121);
}

TEST_F(ConsumerTest, BatchRespectsMaxBytes) {
  FakeSource* src;
  auto o = Options();
  o.max_batch_bytes = 1000;
  auto c = Make(src, o);
  for (int i = 0; i < 10; ++i) src->Produce("orders", 0, std::string(400, 'x'), Ce(NewId()));
  src->Rebalance({}, {{"orders", 0}});
  ASSERT_TRUE(c->Init().ok());
  ASSERT_TRUE(RunUntil(*c, [&] { return c->stats().consumed == 10; }));
  EXPECT_EQ(c->stats().max_batch_size, 2u);
}

// Zombie fencing: member A owns partition 0; member B takes it over (rebalance A never heard
// of, e.g. A was SIGSTOPped). A's next commit is refused, its records are dropped without an
// ack, the stored offset never moves backwards, and B applies everything exactly once.
TEST_F(ConsumerTest, ZombieCannotCommitAfterTakeover) {
  FakeSource* a_src;
  FakeSource* b_src;
  auto a = Make(a_src, Options("member-a"));
  auto b = Make(b_src, Options("member-b"));
  std::vector<std::string> ids;
  for (int i = 0; i < 10; ++i) ids.push_back(NewId());
  for (auto* s : {a_src, b_src})
    for (int i = 0; i < 5; ++i) s->Produce("orders", 0, "x", Ce(ids[i]));
  a_src->Rebalance({}, {{"orders", 0}});
  ASSERT_TRUE(a->Init().ok());
  ASSERT_TRUE(RunUntil(*a, [&] { return a->stats().consumed == 5; }));
  EXPECT_EQ(StoredOffset(), 5);

  b_src->Rebalance({}, {{"orders", 0}});
  ASSERT_TRUE(b->Init().ok());
  ASSERT_TRUE(b->RunOnce().ok());  // claims: epoch 2, seeks to 5
  EXPECT_EQ(db_.Scalar("SELECT owner || ':' || epoch FROM converge.consumer_offsets"),
            "member-b:2");

  for (int i = 5; i < 10; ++i) a_src->Produce("orders", 0, "x", Ce(ids[i]));
  ASSERT_TRUE(a->RunOnce().ok());
  ASSERT_TRUE(a->RunOnce().ok());
  EXPECT_EQ(a->stats().fenced, 1u);
  EXPECT_EQ(a->stats().consumed, 5u);
  EXPECT_EQ(a_src->AckedPosition({"orders", 0}), 5);
  EXPECT_EQ(Effects(), 5);
  EXPECT_EQ(StoredOffset(), 5);

  for (int i = 5; i < 10; ++i) b_src->Produce("orders", 0, "x", Ce(ids[i]));
  ASSERT_TRUE(RunUntil(*b, [&] { return b->stats().consumed == 5; }));
  EXPECT_EQ(Effects(), 10);
  EXPECT_EQ(DupEffects(), 0);
  EXPECT_EQ(StoredOffset(), 10);
  // A keeps polling records of the partition it lost: they are dropped, never committed.
  ASSERT_TRUE(a->RunOnce().ok());
  EXPECT_EQ(StoredOffset(), 10);
  EXPECT_EQ(Effects(), 10);
}

// The takeover waits for a transaction the old owner already has open (row lock), then reads
// the offset that transaction committed: nothing is applied twice across the handover.
TEST_F(ConsumerTest, TakeoverDuringOpenTransactionWaitsForIt) {
  FakeSource* a_src;
  FakeSource* b_src;
  auto a = Make(a_src, Options("member-a"));
  std::atomic<bool> in_handler{false};
  std::atomic<bool> release{false};
  a->Handle("slow", [&](const Message& m, Context& ctx) {
    ctx.tx().exec_params("INSERT INTO effects (id) VALUES ($1)", m.id);
    in_handler = true;
    while (!release) std::this_thread::sleep_for(1ms);
    return Status::Ok();
  });
  auto b = Make(b_src, Options("member-b"));
  b->Handle("slow", [](const Message& m, Context& ctx) {
    ctx.tx().exec_params("INSERT INTO effects (id) VALUES ($1)", m.id);
    return Status::Ok();
  });
  const std::string id = NewId();
  a_src->Produce("orders", 0, "x", Ce(id, "slow"));
  b_src->Produce("orders", 0, "x", Ce(id, "slow"));
  a_src->Rebalance({}, {{"orders", 0}});
  ASSERT_TRUE(a->Init().ok());
  std::thread ta([&] { EXPECT_TRUE(RunUntil(*a, [&] { return a->stats().consumed == 1; })); });
  while (!in_handler) std::this_thread::sleep_for(1ms);
  std::thread release_later([&] {
    std::this_thread::sleep_for(300ms);
    release = true;
  });
  b_src->Rebalance({}, {{"orders", 0}});
  ASSERT_TRUE(b->Init().ok());
  ASSERT_TRUE(RunUntil(
      *b, [&] { return StoredOffset() == 1 && release; }, 5s));
  ta.join();
  release_later.join();
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(b->RunOnce().ok());
  EXPECT_EQ(Effects(), 1);
  EXPECT_EQ(b->stats().consumed, 0u);
}

TEST_F(ConsumerTest, RevokedPartitionRecordsAreNotCommitted) {
  FakeSource* src;
  auto c = Make(src, Options());
  src->Rebalance({}, {{"orders", 0}});
  ASSERT_TRUE(c->Init().ok());
  ASSERT_TRUE(c->RunOnce().ok());
  src->Pause(true);
  src->Produce("orders", 0, "x", Ce(NewId()));
  src->Rebalance({{"orders", 0}}, {});
  src->Pause(false);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(c->RunOnce().ok());
  EXPECT_EQ(Effects(), 0);
  EXPECT_EQ(StoredOffset(), 0);
}

// PostgreSQL drops the connection mid-stream: the transaction is re-run after reconnecting;
// nothing is lost and nothing is applied twice.
TEST_F(ConsumerTest, LostConnectionIsRetriedWithoutLossOrDuplicates) {
  FakeSource* src;
  auto c = Make(src, Options());
  std::atomic<int> calls{0};
  const std::string db = db_.name();
  c->Handle("killer", [&](const Message& m, Context& ctx) {
    ctx.tx().exec_params("INSERT INTO effects (id) VALUES ($1)", m.id);
    if (++calls == 1) {
      // Terminate our own backend, as a PostgreSQL restart would.
      ctx.tx().exec("SELECT pg_terminate_backend(pg_backend_pid())");
    }
    return Status::Ok();
  });
  for (int i = 0; i < 5; ++i) src->Produce("orders", 0, "x", Ce(NewId()));
  src->Produce("orders", 0, "x", Ce(NewId(), "killer"));
  for (int i = 0; i < 5; ++i) src->Produce("orders", 0, "x", Ce(NewId()));
  src->Rebalance({}, {{"orders", 0}});
  ASSERT_TRUE(c->Init().ok());
  ASSERT_TRUE(RunUntil(*c, [&] { return c->stats().consumed == 11; }));
  EXPECT_GE(c->stats().transaction_failures, 1u);
  EXPECT_EQ(Effects(), 11);
  EXPECT_EQ(DupEffects(), 0);
  EXPECT_EQ(StoredOffset(), 11);
}

// The dedupe window: rows older than it and below the committed offset are pruned; a
// duplicate that arrives after that is processed again (the documented limit).
TEST_F(ConsumerTest, PruneHonoursTheDedupeWindow) {
  FakeSource* src;
  auto o = Options();
  o.dedupe_window = std::chrono::hours(24);
  o.prune_batch = 2;
  auto c = Make(src, o);
  const std::string old_id = NewId();
  src->Produce("orders", 0, "x", Ce(old_id));
  for (int i = 0; i < 4; ++i) src->Produce("orders", 0, "x", Ce(NewId()));
  src->Rebalance({}, {{"orders", 0}});
  ASSERT_TRUE(c->Init().ok());
  ASSERT_TRUE(RunUntil(*c, [&] { return c->stats().consumed == 5; }));
  db_.Scalar(
      "UPDATE converge.inbox SET processed_at = now() - interval '25 hours' WHERE "
      "\"offset\" < 3");
  EXPECT_EQ(c->PruneNow(), 3u);
  EXPECT_EQ(db_.Count("SELECT count(*) FROM converge.inbox"), 2);
  // A very late duplicate of the pruned message is applied again.
  src->Produce("orders", 0, "x", Ce(old_id));
  ASSERT_TRUE(RunUntil(*c, [&] { return c->stats().consumed == 6; }));
  EXPECT_EQ(db_.Count("SELECT count(*) FROM effects WHERE id = '" + old_id + "'"), 2);
}

TEST_F(ConsumerTest, StartStopFinishesAndCloses) {
  FakeSource* src;
  auto c = Make(src, Options());
  for (int i = 0; i < 200; ++i) src->Produce("orders", 0, "x", Ce(NewId()));
  src->Rebalance({}, {{"orders", 0}});
  ASSERT_TRUE(c->Start().ok());
  const auto end = std::chrono::steady_clock::now() + 10s;
  while (c->stats().consumed < 200 && std::chrono::steady_clock::now() < end)
    std::this_thread::sleep_for(5ms);
  c->Stop();
  EXPECT_TRUE(src->closed());
  EXPECT_EQ(Effects(), 200);
  EXPECT_EQ(StoredOffset(), 200);
}

TEST_F(ConsumerTest, NonUuidIdsStillDedupe) {
  FakeSource* src;
  auto c = Make(src, Options());
  src->Produce("orders", 0, "x", Ce("A234-1234-1234"));
  src->Produce("orders", 0, "x", Ce("A234-1234-1234"));
  src->Rebalance({}, {{"orders", 0}});
  ASSERT_TRUE(c->Init().ok());
  ASSERT_TRUE(RunUntil(*c, [&] { return c->stats().consumed == 2; }));
  EXPECT_EQ(Effects(), 1);
}

}  // namespace
}  // namespace converge::consumer
