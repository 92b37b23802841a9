// Flows against a real PostgreSQL (a fresh migrated database per test): the transitions, the
// reconciler engine in-process, completed XOR compensated under a racing late reply, 1% dropped
// replies, and a flow advanced from a consumer handler in the handler's transaction.
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <random>
#include <set>
#include <thread>

#include "converge/common/uuid.h"
#include "converge/consumer/consumer.h"
#include "converge/consumer/testing/fake_source.h"
#include "converge/reconciler/flow.h"
#include "converge/reconciler/reconciler.h"
#include "converge/testing/pg_fixture.h"

namespace converge::flows {
namespace {

using namespace std::chrono_literals;
using reconciler::Reconciler;
using reconciler::ReconcilerOptions;

// order: reserve (compensation release) -> pay (compensation refund, TCC confirm capture) ->
// notify (no compensation).
FlowType OrderFlow(std::chrono::milliseconds deadline = 30s, int attempts = 2) {
  FlowType t;
  t.name = "order";
  t.steps.push_back({.name = "reserve",
                     .command = {"stock", "stock.reserve"},
                     .reply_type = "stock.reserved",
                     .compensation = MessageRoute{"stock", "stock.release"},
                     .deadline = deadline,
                     .max_attempts = attempts});
  t.steps.push_back({.name = "pay",
                     .command = {"payments", "payment.charge"},
                     .reply_type = "payment.charged",
                     .compensation = MessageRoute{"payments", "payment.refund"},
                     .confirm = MessageRoute{"payments", "payment.capture"},
                     .deadline = deadline,
                     .max_attempts = attempts});
  t.steps.push_back({.name = "notify",
                     .command = {"mail", "mail.send"},
                     .deadline = deadline,
                     .max_attempts = attempts});
  t.compensation_deadline = deadline;
  t.compensation_max_attempts = 2;
  return t;
}

class FlowTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(db_.ok());
    // Commits need not wait for the disk in a throwaway database (2 shared cores, busy disk).
    db_.Scalar("ALTER DATABASE \"" + db_.name() + "\" SET synchronous_commit = off");
    // `published` keeps what the simulated relay took from the outbox; `sent` is everything
    // ever emitted.
    db_.Scalar("CREATE TABLE published AS SELECT * FROM converge.outbox WITH NO DATA");
    db_.Scalar(
        "CREATE VIEW sent AS SELECT * FROM converge.outbox UNION ALL SELECT * FROM published");
    conn_ = db_.Connect();
  }

  template <typename Fn>
  auto InTx(Fn&& fn) {
    pqxx::work tx(*conn_);
    auto r = fn(tx);
    tx.commit();
    return r;
  }
  void RegisterType(const FlowType& t) {
    Status st = InTx([&](pqxx::work& tx) { return Register(tx, t); });
    ASSERT_TRUE(st.ok()) << st;
  }
  FlowId StartFlow(const std::string& key, const std::string& type = "order") {
    auto r = InTx([&](pqxx::work& tx) { return Start(tx, type, key, R"({"total":12})"); });
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : FlowId{};
  }
  ReplyOutcome Complete(const FlowId& id, int step) {
    auto r = InTx([&](pqxx::work& tx) { return CompleteStep(tx, id, step); });
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : ReplyOutcome::kDuplicate;
  }
  std::string State(const FlowId& id) {
    return db_.Scalar("SELECT state FROM converge.flows WHERE flow_id = '" + id.value + "'");
  }
  // The relay's part: moves every outbox row to `published`.
  void Publish() {
    db_.Scalar(
        "WITH d AS (DELETE FROM converge.outbox RETURNING *) "
        "INSERT INTO published SELECT * FROM d");
  }
  // Publishes everything, then makes every open deadline due now (the database clock decides,
  // so tests move deadlines instead of sleeping).
  void ExpireDeadlines() {
    Publish();
    db_.Scalar(
        "UPDATE converge.flows SET deadline_at = now() - interval '1 second' "
        "WHERE deadline_at IS NOT NULL");
  }
  std::vector<std::string> OutboxTypes(const FlowId& id) {
    auto c = db_.Connect();
    pqxx::work tx(*c);
    std::vector<std::string> out;
    for (const auto& row :
         tx.exec_params("SELECT type || '#' || (headers->>'converge-flow-attempt') FROM sent "
                        "WHERE headers->>'converge-flow-id' = $1 ORDER BY id",
                        id.value))
      out.push_back(row[0].c_str());
    return out;
  }
  ReconcilerOptions Options() {
    ReconcilerOptions o;
    o.database_url = db_.url();
    o.batch_size = 50;
    return o;
  }

  converge::testing::TestDatabase db_;
  std::unique_ptr<pqxx::connection> conn_;
};

TEST_F(FlowTest, HappyPathAdvancesCompletesAndConfirms) {
  RegisterType(OrderFlow());
  FlowId id = StartFlow("order-1");
  EXPECT_EQ(State(id), "running");
  EXPECT_EQ(Complete(id, 0), ReplyOutcome::kAdvanced);
  EXPECT_EQ(Complete(id, 0), ReplyOutcome::kDuplicate);  // redelivered reply
  EXPECT_EQ(Complete(id, 1), ReplyOutcome::kAdvanced);
  EXPECT_EQ(Complete(id, 2), ReplyOutcome::kCompleted);
  EXPECT_EQ(State(id), "completed");
  EXPECT_EQ(OutboxTypes(id), (std::vector<std::string>{"stock.reserve#1", "payment.charge#1",
                                                       "mail.send#1", "payment.capture#1"}));
  // Messages are keyed by the business key and carry the flow's coordinates and data.
  EXPECT_EQ(db_.Count("SELECT count(*) FROM sent WHERE key = 'order-1' AND "
                      "convert_from(payload, 'UTF8')::jsonb #>> '{data,total}' = '12'"),
            4);
  auto info = InTx([&](pqxx::work& tx) { return Get(tx, id); });
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->step, 2);
  EXPECT_FALSE(info->finished_at.empty());
  auto hist = InTx([&](pqxx::work& tx) { return History(tx, id); });
  ASSERT_TRUE(hist.ok());
  EXPECT_EQ(hist->front().event, "started");
  EXPECT_EQ(hist->back().event, "confirm_emitted");
}

// Try/Confirm/Cancel: every participant is tried in turn; when all tried, each gets its
// confirm; when one fails, the ones tried before it get their cancel, in reverse order.
TEST_F(FlowTest, TccConfirmsAllOrCancelsTheTriedOnes) {
  RegisterType(TccFlow("trip", {{.name = "flight",
                                 .topic = "flights",
                                 .try_type = "flight.hold",
                                 .confirm_type = "flight.book",
                                 .cancel_type = "flight.release"},
                                {.name = "hotel",
                                 .topic = "hotels",
                                 .try_type = "hotel.hold",
                                 .confirm_type = "hotel.book",
                                 .cancel_type = "hotel.release"},
                                {.name = "car",
                                 .topic = "cars",
                                 .try_type = "car.hold",
                                 .confirm_type = "car.book",
                                 .cancel_type = "car.release"}}));
  FlowId ok = StartFlow("trip-1", "trip");
  EXPECT_EQ(Complete(ok, 0), ReplyOutcome::kAdvanced);
  EXPECT_EQ(Complete(ok, 1), ReplyOutcome::kAdvanced);
  EXPECT_EQ(Complete(ok, 2), ReplyOutcome::kCompleted);
  EXPECT_EQ(OutboxTypes(ok),
            (std::vector<std::string>{"flight.hold#1", "hotel.hold#1", "car.hold#1",
                                      "flight.book#1", "hotel.book#1", "car.book#1"}));

  FlowId no_car = StartFlow("trip-2", "trip");
  Complete(no_car, 0);
  Complete(no_car, 1);
  auto o = InTx([&](pqxx::work& tx) { return FailStep(tx, no_car, 2, "no car left"); });
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(*o, ReplyOutcome::kCompensating);
  EXPECT_EQ(*InTx([&](pqxx::work& tx) { return CompensationDone(tx, no_car, 1); }),
            ReplyOutcome::kAdvanced);
  EXPECT_EQ(*InTx([&](pqxx::work& tx) { return CompensationDone(tx, no_car, 0); }),
            ReplyOutcome::kCompensated);
  EXPECT_EQ(OutboxTypes(no_car),
            (std::vector<std::string>{"flight.hold#1", "hotel.hold#1", "car.hold#1",
                                      "hotel.release#1", "flight.release#1"}));
}

TEST_F(FlowTest, BadInputIsNamed) {
  RegisterType(OrderFlow());
  auto r = InTx([&](pqxx::work& tx) { return Start(tx, "nope", "k"); });
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("flow type \"nope\" is not registered"), std::string::npos);
  StartFlow("order-1");
  pqxx::work tx(*conn_);
  EXPECT_EQ(Start(tx, "order", "order-1").status().code(), StatusCode::kAlreadyExists);
  tx.abort();
  pqxx::work tx2(*conn_);
  auto c = CompleteStep(tx2, FlowId{"00000000-0000-0000-0000-00000000abcd"}, 0);
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("does not exist"), std::string::npos);
}

TEST_F(FlowTest, DeadlineReemitsThenCompensatesInReverseOrderOnce) {
  RegisterType(OrderFlow());
  FlowId id = StartFlow("order-1");
  Complete(id, 0);
  Complete(id, 1);  // now at "notify", which never replies
  Reconciler r(Options());
  ExpireDeadlines();
  auto s = r.ScanOnce();
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->reemitted, 1);
  ExpireDeadlines();
  s = r.ScanOnce();
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->compensations_started, 1);
  EXPECT_EQ(State(id), "compensating");
  // notify has no compensation: the first compensation is pay's refund.
  auto step = InTx([&](pqxx::work& tx) { return Get(tx, id); });
  EXPECT_EQ(step->step, 1);
  EXPECT_NE(step->last_error.find("got no reply after 2 attempt(s)"), std::string::npos);
  EXPECT_EQ(InTx([&](pqxx::work& tx) { return CompensationDone(tx, id, 1); }).value(),
            ReplyOutcome::kAdvanced);
  EXPECT_EQ(InTx([&](pqxx::work& tx) { return CompensationDone(tx, id, 1); }).value(),
            ReplyOutcome::kDuplicate);
  EXPECT_EQ(InTx([&](pqxx::work& tx) { return CompensationDone(tx, id, 0); }).value(),
            ReplyOutcome::kCompensated);
  EXPECT_EQ(State(id), "compensated");
  EXPECT_EQ(OutboxTypes(id),
            (std::vector<std::string>{"stock.reserve#1", "payment.charge#1", "mail.send#1",
                                      "mail.send#2", "payment.refund#1", "stock.release#1"}));
  // A scan later changes nothing, and the late reply of "notify" cannot complete the flow.
  ExpireDeadlines();
  EXPECT_EQ(r.ScanOnce()->total(), 0);
  EXPECT_EQ(Complete(id, 2), ReplyOutcome::kLate);
  EXPECT_EQ(State(id), "compensated");
}

TEST_F(FlowTest, ReemissionsHaveDeterministicDistinctIdsAndStableStepKey) {
  RegisterType(OrderFlow(30s, 3));
  FlowId id = StartFlow("order-1");
  Reconciler r(Options());
  ExpireDeadlines();
  ASSERT_EQ(r.ScanOnce()->reemitted, 1);
  EXPECT_EQ(db_.Count("SELECT count(DISTINCT message_id) FROM sent"), 2);
  EXPECT_EQ(db_.Count("SELECT count(DISTINCT headers->>'converge-flow-step-key') FROM "
                      "sent"),
            1);
  EXPECT_EQ(db_.Count("SELECT count(*) FROM sent WHERE message_id = "
                      "converge.flow_message_id('" +
                      id.value + "', 0, 'command', 2)"),
            1);
  // Same payload for every attempt: a receiver's inbox sees no conflict between them.
  EXPECT_EQ(db_.Count("SELECT count(DISTINCT payload) FROM sent"), 1);
}

TEST_F(FlowTest, FailedStepCompensatesOnlyTheStepsBeforeIt) {
  RegisterType(OrderFlow());
  FlowId id = StartFlow("order-1");
  Complete(id, 0);
  auto o = InTx([&](pqxx::work& tx) { return FailStep(tx, id, 1, "card declined"); });
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(*o, ReplyOutcome::kCompensating);
  EXPECT_EQ(OutboxTypes(id).back(), "stock.release#1");
  EXPECT_EQ(db_.Count("SELECT count(*) FROM sent WHERE type = 'payment.refund'"), 0);
  // A stock-out at the first step: nothing to undo.
  FlowId id2 = StartFlow("order-2");
  o = InTx([&](pqxx::work& tx) { return FailStep(tx, id2, 0, "out of stock"); });
  EXPECT_EQ(*o, ReplyOutcome::kCompensated);
}

TEST_F(FlowTest, CompensationThatKeepsFailingIsParkedWithTheReason) {
  RegisterType(OrderFlow());
  FlowId id = StartFlow("order-1");
  Complete(id, 0);
  ASSERT_TRUE(InTx([&](pqxx::work& tx) { return FailStep(tx, id, 1, "card declined"); }).ok());
  Reconciler r(Options());
  auto failed = InTx([&](pqxx::work& tx) {
    return CompensationFailed(tx, id, 0, "stock service: warehouse locked");
  });
  EXPECT_EQ(*failed, ReplyOutcome::kRetrying);
  Publish();
  EXPECT_EQ(r.ScanOnce()->compensations_reemitted, 1);  // attempt 2 of 2
  ASSERT_TRUE(InTx([&](pqxx::work& tx) {
                return CompensationFailed(tx, id, 0, "warehouse still locked");
              }).ok());
  Publish();
  EXPECT_EQ(r.ScanOnce()->needs_attention, 1);
  auto info = InTx([&](pqxx::work& tx) { return Get(tx, id); });
  EXPECT_EQ(info->state, "needs_attention");
  EXPECT_NE(info->last_error.find("warehouse still locked"), std::string::npos) << info->last_error;
  EXPECT_NE(info->last_error.find("after 2 attempt(s)"), std::string::npos);
  EXPECT_EQ(db_.Count("SELECT count(*) FROM sent WHERE type = 'stock.release'"), 2);
  // Parked flows are not touched again.
  ExpireDeadlines();
  EXPECT_EQ(r.ScanOnce()->total(), 0);
}

TEST_F(FlowTest, SqlRefusesToCompleteAFlowThatStartedCompensating) {
  RegisterType(OrderFlow());
  FlowId id = StartFlow("order-1");
  ASSERT_TRUE(InTx([&](pqxx::work& tx) { return FailStep(tx, id, 0, "out of stock"); }).ok());
  ASSERT_EQ(State(id), "compensated");
  pqxx::work tx(*conn_);
  try {
    tx.exec_params("UPDATE converge.flows SET state = 'completed' WHERE flow_id = $1::uuid",
                   id.value);
    FAIL() << "the trigger let a compensated flow complete";
  } catch (const pqxx::sql_error& e) {
    EXPECT_NE(std::string(e.what()).find("final state"), std::string::npos) << e.what();
  }
  tx.abort();
  // Also while compensating (not final yet).
  FlowId id2 = StartFlow("order-2");
  Complete(id2, 0);
  ASSERT_TRUE(InTx([&](pqxx::work& tx) { return FailStep(tx, id2, 1, "declined"); }).ok());
  ASSERT_EQ(State(id2), "compensating");
  pqxx::work tx2(*conn_);
  EXPECT_THROW(tx2.exec_params("UPDATE converge.flows SET state = 'completed' WHERE flow_id = "
                               "$1::uuid",
                               id2.value),
               pqxx::sql_error);
}

// The reply holds the flow's row lock: the reconciler skips the flow (SKIP LOCKED) instead of
// compensating it, and the reply completes it.
TEST_F(FlowTest, ReplyHoldingTheLockWinsOverTheReconciler) {
  RegisterType(OrderFlow(30s, 1));
  FlowId id = StartFlow("order-1");
  Complete(id, 0);
  Complete(id, 1);
  ExpireDeadlines();
  auto reply_conn = db_.Connect();
  pqxx::work reply(*reply_conn);
  ASSERT_EQ(*CompleteStep(reply, id, 2), ReplyOutcome::kCompleted);
  Reconciler r(Options());
  EXPECT_EQ(r.ScanOnce()->total(), 0);
  reply.commit();
  EXPECT_EQ(r.ScanOnce()->total(), 0);
  EXPECT_EQ(State(id), "completed");
  EXPECT_EQ(db_.Count("SELECT count(*) FROM converge.flow_history WHERE event LIKE 'compens%'"), 0);
}

// The reconciler holds the lock and starts compensating: the reply waits for it, then finds the
// flow compensating and changes nothing.
TEST_F(FlowTest, LateReplyWaitingForTheReconcilerChangesNothing) {
  RegisterType(OrderFlow(30s, 1));
  FlowId id = StartFlow("order-1");
  Complete(id, 0);
  ExpireDeadlines();
  auto rec_conn = db_.Connect();
  pqxx::work rec(*rec_conn);
  auto acted = rec.exec("SELECT action FROM converge.flow_reconcile(10)");
  ASSERT_EQ(acted.size(), 1u);
  EXPECT_EQ(std::string(acted[0][0].c_str()), "compensation_started");
  auto late = std::async(std::launch::async, [&] {
    auto c = db_.Connect();
    pqxx::work tx(*c);
    auto o = CompleteStep(tx, id, 1);
    tx.commit();
    return o;
  });
  EXPECT_EQ(late.wait_for(300ms), std::future_status::timeout);  // blocked on the row lock
  rec.commit();
  auto o = late.get();
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(*o, ReplyOutcome::kLate);
  EXPECT_EQ(State(id), "compensating");
  EXPECT_EQ(db_.Count("SELECT count(*) FROM converge.flow_history WHERE event = 'late_reply'"), 1);
}

// Many flows due at once, replies and two reconcilers racing on real connections: each flow ends
// completed (and nothing was compensated) XOR compensating (and its reply was late), and every
// compensation was emitted exactly once.
TEST_F(FlowTest, LateRepliesRacingTwoReconcilersEndCompletedXorCompensating) {
  RegisterType(OrderFlow(30s, 1));
  constexpr int kFlows = 60;
  std::vector<FlowId> ids;
  {
    pqxx::work tx(*conn_);
    for (int i = 0; i < kFlows; ++i)
      ids.push_back(*Start(tx, "order", "order-" + std::to_string(i)));
    tx.commit();
  }
  ExpireDeadlines();
  std::map<std::string, ReplyOutcome> outcomes;
  auto replies = std::async(std::launch::async, [&] {
    auto c = db_.Connect();
    // Newest first, while the reconcilers take the oldest deadlines first: they meet midway.
    for (auto it = ids.rbegin(); it != ids.rend(); ++it) {
      const FlowId& id = *it;
      pqxx::work tx(*c);
      auto o = CompleteStep(tx, id, 0);
      tx.commit();
      if (o.ok()) outcomes[id.value] = *o;
    }
  });
  std::atomic<bool> replies_done{false};
  auto reconcile = [&] {
    ReconcilerOptions o = Options();
    o.batch_size = 7;
    Reconciler r(o);
    while (!replies_done.load()) {
      EXPECT_TRUE(r.ScanOnce().ok());
      std::this_thread::sleep_for(5ms);
    }
    EXPECT_TRUE(r.ScanOnce().ok());
  };
  std::thread a(reconcile), b(reconcile);
  replies.get();
  replies_done.store(true);
  a.join();
  b.join();
  ASSERT_EQ(outcomes.size(), size_t(kFlows));
  int completed_path = 0, compensated_path = 0;
  for (const auto& id : ids) {
    const std::string st = State(id);
    const long long comp = db_.Count(
        "SELECT count(*) FROM sent WHERE type = 'stock.release' AND "
        "headers->>'converge-flow-id' = '" +
        id.value + "'");
    if (outcomes[id.value] == ReplyOutcome::kAdvanced) {
      ++completed_path;
      EXPECT_EQ(st, "running") << id.value;  // advanced to "pay"
      EXPECT_EQ(comp, 0) << id.value;
    } else {
      ++compensated_path;
      EXPECT_EQ(outcomes[id.value], ReplyOutcome::kLate) << id.value;
      EXPECT_EQ(st, "compensating") << id.value;
      EXPECT_EQ(comp, 1) << id.value;
    }
  }
  std::cout << "advanced by the reply: " << completed_path
            << ", compensation won: " << compensated_path << "\n";
  EXPECT_EQ(completed_path + compensated_path, kFlows);
}

// 1% of flows lose a reply once (the re-emission completes them), 1% lose every reply of the
// "pay" step (they compensate). A simulated service answers every other command within the
// deadline. All stuck flows are detected; every flow ends completed XOR compensated.
TEST_F(FlowTest, OnePercentDroppedRepliesAreAllDetectedAndEndCompletedXorCompensated) {
  RegisterType(OrderFlow(30s, 2));
  constexpr int kFlows = 1000;
  std::mt19937 rng(20261122);
  std::vector<FlowId> ids;
  {
    pqxx::work tx(*conn_);
    for (int i = 0; i < kFlows; ++i)
      ids.push_back(*Start(tx, "order", "order-" + std::to_string(i), R"({"total":1})"));
    tx.commit();
  }
  std::vector<int> order(kFlows);
  for (int i = 0; i < kFlows; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), rng);
  std::set<std::string> drop_once, drop_always;
  for (int i = 0; i < kFlows / 100; ++i) drop_once.insert(ids[order[i]].value);
  for (int i = kFlows / 100; i < 2 * kFlows / 100; ++i) drop_always.insert(ids[order[i]].value);
  std::cout << "seed 20261122: " << drop_once.size() << " flows lose one reply, "
            << drop_always.size() << " lose every pay reply\n";

  // The services: take every message from the outbox (as relay + consumer would) and reply in
  // the same transaction; compensations are acknowledged. Returns the messages handled.
  std::set<std::string> dropped_once_done;
  auto serve = [&] {
    int handled = 0;
    for (;;) {
      pqxx::work tx(*conn_);
      auto rows = tx.exec(
          "DELETE FROM converge.outbox WHERE id IN (SELECT id FROM converge.outbox ORDER BY id "
          "LIMIT 500) RETURNING headers->>'converge-flow-id', "
          "(headers->>'converge-flow-step')::int, headers->>'converge-flow-kind'");
      for (const auto& row : rows) {
        FlowId id{row[0].c_str()};
        const int step = row[1].as<int>();
        const std::string kind = row[2].c_str();
        if (kind == "compensation") {
          EXPECT_TRUE(CompensationDone(tx, id, step).ok());
        } else if (kind == "command") {
          if (step == 1 && drop_always.count(id.value)) continue;
          if (step == 1 && drop_once.count(id.value) && dropped_once_done.insert(id.value).second)
            continue;
          auto o = CompleteStep(tx, id, step);
          EXPECT_TRUE(o.ok()) << o.status();
        }
      }
      tx.commit();
      handled += static_cast<int>(rows.size());
      if (rows.empty()) return handled;
    }
  };
  // Time is the database's: once the services have answered everything they received, a flow
  // still waiting is stuck, and its deadline is moved to the past instead of sleeping it out.
  Reconciler r(Options());
  for (int round = 0; round < 20; ++round) {
    serve();
    if (db_.Count("SELECT count(*) FROM converge.flows WHERE state NOT IN ('completed', "
                  "'compensated')") == 0)
      break;
    ExpireDeadlines();
    auto scan = r.ScanOnce();
    ASSERT_TRUE(scan.ok()) << scan.status();
  }
  EXPECT_EQ(r.stats().reemitted.load(), drop_once.size() + drop_always.size());
  EXPECT_EQ(r.stats().compensations_started.load(), drop_always.size());
  EXPECT_EQ(db_.Count("SELECT count(*) FROM converge.flows WHERE state NOT IN ('completed', "
                      "'compensated')"),
            0);
  // Detected: every flow that lost a reply was re-emitted by the reconciler.
  for (const auto& id : drop_once) {
    EXPECT_EQ(State(FlowId{id}), "completed") << id;
    EXPECT_GE(db_.Count("SELECT count(*) FROM converge.flow_history WHERE event = 'reemitted' "
                        "AND flow_id = '" +
                        id + "'"),
              1)
        << id;
  }
  for (const auto& id : drop_always) {
    EXPECT_EQ(State(FlowId{id}), "compensated") << id;
  }
  EXPECT_EQ(db_.Count("SELECT count(*) FROM converge.flows WHERE state = 'compensated'"),
            long(drop_always.size()));
  // XOR, from the history: no completed flow has a compensation event and no compensated flow
  // completed; each compensation emitted once per (flow, step).
  EXPECT_EQ(db_.Count("SELECT count(*) FROM converge.flows f WHERE state = 'completed' AND "
                      "EXISTS (SELECT 1 FROM converge.flow_history h WHERE h.flow_id = f.flow_id "
                      "AND h.event LIKE 'compensation%')"),
            0);
  EXPECT_EQ(db_.Count("SELECT count(*) FROM converge.flows f WHERE state = 'compensated' AND "
                      "EXISTS (SELECT 1 FROM converge.flow_history h WHERE h.flow_id = f.flow_id "
                      "AND h.event = 'completed')"),
            0);
  EXPECT_EQ(db_.Count("SELECT count(*) FROM (SELECT flow_id, step FROM converge.flow_history "
                      "WHERE event = 'compensation_emitted' GROUP BY 1, 2 HAVING count(*) > 1) d"),
            0);
}

// A relay that is behind (or down) must not cost attempts: while the last emission is still in
// the outbox the deadline is only extended; once it is published, the deadline counts again.
TEST_F(FlowTest, UnpublishedEmissionExtendsTheDeadlineInsteadOfSpendingAnAttempt) {
  RegisterType(OrderFlow(30s, 1));
  FlowId id = StartFlow("order-1");
  Reconciler r(Options());
  for (int i = 0; i < 3; ++i) {
    db_.Scalar("UPDATE converge.flows SET deadline_at = now() - interval '1 second'");
    auto s = r.ScanOnce();
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->extended, 1);
    EXPECT_EQ(s->compensations_started, 0);
  }
  auto info = InTx([&](pqxx::work& tx) { return Get(tx, id); });
  EXPECT_EQ(info->state, "running");
  EXPECT_EQ(info->attempts, 1);
  EXPECT_EQ(db_.Count("SELECT count(*) FROM converge.flow_history WHERE event = "
                      "'deadline_extended'"),
            3);
  ExpireDeadlines();  // published now, and still no reply
  EXPECT_EQ(r.ScanOnce()->compensations_started, 1);
}

TEST_F(FlowTest, StuckThingsSnapshotCountsOutboxKeysDeadLettersAndFlows) {
  RegisterType(OrderFlow());
  StartFlow("order-1");
  db_.Scalar("UPDATE converge.outbox SET created_at = now() - interval '1 hour'");
  db_.Scalar(
      "INSERT INTO converge.outbox_blocked_keys (topic, key, parked, reason) VALUES "
      "('t', 'k1', true, 'dead letter'), ('t', 'k2', false, 'retry')");
  db_.Scalar(
      "INSERT INTO converge.dead_letters (origin, topic, reason, error_code) VALUES "
      "('relay', 't', 'too large', 'too_large')");
  // Device tables (migration 0004): one command still waiting for its ack, one finished; one
  // twin whose device has not applied the latest desired state, one converged.
  db_.Scalar(
      "INSERT INTO converge.device_commands (id, device_id, name, status, expires_at) VALUES "
      "(gen_random_uuid(), 'dev-1', 'reboot', 'sent', now() + interval '1 hour'), "
      "(gen_random_uuid(), 'dev-1', 'reboot', 'applied', now() + interval '1 hour')");
  db_.Scalar(
      "INSERT INTO converge.device_twins (device_id, desired_version, applied_desired_version) "
      "VALUES ('dev-1', 2, 1), ('dev-2', 1, 1)");
  db_.Scalar("UPDATE converge.flows SET deadline_at = now() - interval '1 second'");
  Reconciler r(Options());
  auto s = r.RefreshSnapshot();
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->outbox_rows, 1);
  EXPECT_EQ(s->outbox_stuck_rows, 1);
  EXPECT_GT(s->outbox_oldest_seconds, 3500);
  EXPECT_EQ(s->parked_keys, 1);
  EXPECT_EQ(s->blocked_keys, 1);
  EXPECT_EQ(s->open_dead_letters, 1);
  EXPECT_EQ(s->flows_by_state.at("running"), 1);
  EXPECT_EQ(s->flows_by_state.at("completed"), 0);
  EXPECT_EQ(s->flows_overdue, 1);
  EXPECT_EQ(s->unacked_device_commands, 1);
  EXPECT_EQ(s->unconverged_device_twins, 1);
}

// A reply consumed by the consumer runtime advances the flow in the handler's transaction: the
// dedupe row, the offset, the handler's own write and the flow's next step commit together.
TEST_F(FlowTest, ConsumerHandlerAdvancesTheFlowInItsTransaction) {
  RegisterType(OrderFlow());
  FlowId id = StartFlow("order-1");
  db_.Scalar("CREATE TABLE reservations (flow_id uuid PRIMARY KEY)");
  consumer::ConsumerOptions o;
  o.group = "orders-service";
  o.topics = {"stock-replies"};
  o.database_url = db_.url();
  o.poll_timeout = 20ms;
  o.linger = 1ms;
  auto owned = std::make_unique<consumer::testing::FakeSource>();
  auto* src = owned.get();
  consumer::Consumer c(o, std::move(owned));
  c.Handle("stock.reserved", [](const Message& m, consumer::Context& ctx) -> Status {
    CONVERGE_ASSIGN_OR_RETURN(FlowRef ref, RefFromHeaders(m.headers));
    ctx.tx().exec_params("INSERT INTO reservations VALUES ($1::uuid)", ref.flow_id.value);
    CONVERGE_ASSIGN_OR_RETURN(ReplyOutcome out, CompleteStep(ctx.tx(), ref.flow_id, ref.step));
    (void)out;
    return Status::Ok();
  });
  const std::string msg_id = NewUuidV7().ToString();
  std::vector<std::pair<std::string, std::string>> headers = {
      {"ce_specversion", "1.0"},      {"ce_id", msg_id},
      {"ce_source", "/stock"},        {"ce_type", "stock.reserved"},
      {"converge-flow-id", id.value}, {"converge-flow-step", "0"}};
  src->Produce("stock-replies", 0, "{}", headers);
  src->Produce("stock-replies", 0, "{}", headers);  // delivered twice: applied once
  src->Rebalance({}, {{"stock-replies", 0}});
  ASSERT_TRUE(c.Init().ok());
  const auto end = std::chrono::steady_clock::now() + 10s;
  while (c.stats().consumed < 2 && std::chrono::steady_clock::now() < end)
    ASSERT_TRUE(c.RunOnce().ok());
  c.Close();
  EXPECT_EQ(c.stats().applied, 1u);
  EXPECT_EQ(db_.Count("SELECT count(*) FROM reservations"), 1);
  auto info = InTx([&](pqxx::work& tx) { return Get(tx, id); });
  EXPECT_EQ(info->step, 1);
  EXPECT_EQ(OutboxTypes(id).back(), "payment.charge#1");
}

}  // namespace
}  // namespace converge::flows
