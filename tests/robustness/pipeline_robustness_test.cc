// The whole pipeline under faults: workload writers → outbox → converge-relay → Kafka
// (a private converge-devkafka) → converge-test-consumer → robust.effects, every component a
// real process. Each scenario injects its faults while the workload runs, heals, waits until
// every committed message is settled (applied once, or dead-lettered when the scenario says so),
// then checks the history (harness.h) and writes a results file. docs/reliability.md lists the
// scenarios, the invariants and how to replay a seed.
//
// Isolation: faults go only to processes and services this test started itself (a private
// PostgreSQL cluster for the database faults, a private devkafka for the broker faults), never
// to the shared services of scripts/services.sh.
#include <gtest/gtest.h>
#include <signal.h>

#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <random>

#include <pqxx/pqxx>

#include "converge/common/uuid.h"
#include "converge/schemas/pg.h"
#include "converge/testing/devkafka.h"
#include "converge/testing/env.h"
#include "converge/testing/pg_cluster.h"
#include "converge/testing/pg_fixture.h"
#include "harness.h"

namespace converge::robustness {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;
using testing::ChildProcess;

enum class Database { kShared, kPrivate };

class Pipeline : public ::testing::Test {
 protected:
  // Starts the private broker (and the private PostgreSQL cluster when the scenario faults the
  // database), the harness schema, one relay and one consumer.
  void SetUpPipeline(const std::string& scenario, Database db, const Scale& scale) {
    scale_ = scale;
    history_.scenario = scenario;
    history_.seed = scale.seed;
    rng_.seed(scale.seed);
    ep_.scenario = scenario;
    ep_.topic = "robust-" + scenario;
    ep_.group = "robust-" + scenario;
    if (db == Database::kPrivate) {
      private_pg_ = std::make_unique<testing::PrivatePostgres>();
      ASSERT_TRUE(private_pg_->Start()) << private_pg_->error();
      db_name_ = "robust";
      ep_.db_url = private_pg_->CreateDatabase(db_name_);
      ASSERT_FALSE(ep_.db_url.empty()) << private_pg_->error();
    } else {
      shared_db_ = std::make_unique<testing::TestDatabase>();
      ASSERT_TRUE(shared_db_->ok());
      db_name_ = shared_db_->name();
      ep_.db_url = shared_db_->url();
    }
    ASSERT_TRUE(InstallHarnessSchema(ep_.db_url).ok());
    // The mock keeps 5 MiB per partition: more partitions keep a soak run's backlog retained.
    const char* partitions = std::getenv("CONVERGE_ROBUST_PARTITIONS");
    const std::string topic_arg =
        ep_.topic + ":" + (partitions != nullptr && *partitions != '\0' ? partitions : "4");
    ASSERT_TRUE(kafka_.Start({"--topic", topic_arg})) << kafka_.error();
    ep_.brokers = kafka_.bootstrap_servers();
    relay_ = StartRelay(ep_, "relay");
    consumer_ = StartConsumer(ep_, "consumer");
    start_ = steady_clock::now();
  }

  WorkloadOptions DefaultWorkload() const {
    WorkloadOptions w;
    w.db_url = ep_.db_url;
    w.topic = ep_.topic;
    w.messages = scale_.messages;
    w.rate = scale_.rate;
    w.seed = scale_.seed;
    return w;
  }

  // Restarts the relay or the consumer when it has died (killed by the test or a failpoint,
  // or exited on its own — counted separately: a process must survive database and broker
  // faults without exiting).
  void EnsureRunning(const std::map<std::string, std::string>& relay_env = {},
                     const std::map<std::string, std::string>& consumer_env = {}) {
    if (!relay_.Running()) {
      if (!expect_relay_death_) {
        ++unexpected_exits_;
        ++exit_codes_["relay exit " + std::to_string(relay_.last_exit())];
      }
      expect_relay_death_ = false;
      relay_ = StartRelay(ep_, "relay", relay_env);
      ++restarts_;
    }
    if (!consumer_.Running()) {
      if (!expect_consumer_death_) {
        ++unexpected_exits_;
        ++exit_codes_["consumer exit " + std::to_string(consumer_.last_exit())];
      }
      expect_consumer_death_ = false;
      consumer_ = StartConsumer(ep_, "consumer", consumer_env);
      ++restarts_;
    }
  }

  // Sleeps while keeping the processes alive.
  void SupervisedSleep(milliseconds d) {
    const auto until = steady_clock::now() + d;
    while (steady_clock::now() < until) {
      EnsureRunning();
      std::this_thread::sleep_for(milliseconds(50));
    }
  }

  // The writer phase lasts about messages/rate seconds; fault i fires at a random moment of
  // the i-th of `faults` equal segments of it.
  void RunFaults(const std::function<void(int)>& inject) {
    const auto phase = milliseconds(int64_t{scale_.messages} * 1000 / std::max(1, scale_.rate));
    const auto segment = phase / std::max(1, scale_.faults);
    const auto begin = steady_clock::now();
    for (int i = 0; i < scale_.faults; ++i) {
      const auto at = begin + segment * i +
                      milliseconds(rng_() % static_cast<uint64_t>(
                                                std::max<int64_t>(1, segment.count() * 3 / 4)));
      while (steady_clock::now() < at) SupervisedSleep(milliseconds(50));
      inject(i);
      if (HasFatalFailure()) return;
    }
  }

  // Waits for the workload, heals, drains, checks and writes the results file.
  void Finish(Workload& workload, CheckOptions check = {}) {
    const auto writer_budget =
        milliseconds(int64_t{scale_.messages} * 3000 / std::max(1, scale_.rate) + 60000);
    const auto until = steady_clock::now() + writer_budget;
    // Also wait for a long (visibility-gap) transaction to have committed.
    while ((!workload.done() || workload.long_transactions() == 0) && steady_clock::now() < until)
      SupervisedSleep(milliseconds(200));
    const bool wrote_all = workload.Wait(milliseconds(1));
    Phase("workload done; healed, draining");
    EnsureRunning();
    // 180 s, or 10 ms per message for soak sizes.
    const milliseconds drain_budget(std::max<int64_t>(180000, int64_t{scale_.messages} * 10));
    history_.recovery_ms = WaitSettled(ep_.db_url, ep_.group, drain_budget);
    if (history_.recovery_ms < 0) history_.unseen = Unsettled(ep_.db_url, ep_.group);
    Phase("settled after " + std::to_string(history_.recovery_ms) + " ms; stopping");
    // A clean stop drains and exits 0.
    relay_.Signal(SIGTERM);
    consumer_.Signal(SIGTERM);
    for (ChildProcess* p : extra_consumers_) p->Signal(SIGTERM);
    const int relay_rc = relay_.Wait(milliseconds(30000));
    int consumer_rc = consumer_.Wait(milliseconds(30000));
    for (ChildProcess* p : extra_consumers_)
      if (const int rc = p->Wait(milliseconds(30000)); rc != 0) consumer_rc = rc;
    Phase("stopped; checking");
    check.db_url = ep_.db_url;
    check.group = ep_.group;
    check.topic = ep_.topic;
    check.brokers = ep_.brokers;
    check.aborted_ids = workload.aborted_ids();
    if (history_.liveness_floor == 0) history_.liveness_floor = int64_t{scale_.messages} * 9 / 10;
    faults_.CopyTo(&history_);
    const WorkloadStats ws = workload.stats();
    history_.extra["workload.committed"] = std::to_string(ws.committed);
    history_.extra["workload.rolled_back"] = std::to_string(ws.rolled_back);
    history_.extra["workload.failed"] = std::to_string(ws.failed);
    history_.extra["workload.in_doubt"] = std::to_string(ws.in_doubt);
    history_.extra["workload.long_transactions"] = std::to_string(ws.long_transactions);
    history_.extra["workload.reconnects"] = std::to_string(ws.reconnects);
    history_.extra["process.restarts"] = std::to_string(restarts_);
    history_.extra["process.unexpected_exits"] = std::to_string(unexpected_exits_);
    Check(check, &history_);
    if (!wrote_all) history_.failures.push_back("the workload did not commit its messages in time");
    if (ws.long_transactions == 0)
      history_.failures.push_back("no long (visibility-gap) transaction committed");
    if (relay_rc != 0 || consumer_rc != 0)
      history_.failures.push_back("SIGTERM exit codes relay=" + std::to_string(relay_rc) +
                                  " consumer=" + std::to_string(consumer_rc) + " (want 0)");
    if (unexpected_exits_ > allowed_unexpected_exits_) {
      std::string codes;
      for (const auto& [what, n] : exit_codes_)
        codes += (codes.empty() ? "" : ", ") + what + " x" + std::to_string(n);
      history_.failures.push_back(std::to_string(unexpected_exits_) +
                                  " relay/consumer exits nobody asked for (" + codes + ")");
    }
    history_.duration_s = std::chrono::duration<double>(steady_clock::now() - start_).count();
    WriteResults(history_);
    for (const auto& f : history_.failures) ADD_FAILURE() << f;
    EXPECT_GE(history_.faults, scale_.faults) << "fewer faults injected than planned";
  }

  void Phase(const std::string& what) {
    std::printf("[%s] t=%.1fs %s\n", history_.scenario.c_str(),
                std::chrono::duration<double>(steady_clock::now() - start_).count(), what.c_str());
    std::fflush(stdout);
  }

  // Effect rows committed so far (-1 when the database is unreachable).
  int64_t EffectRows() {
    try {
      pqxx::connection c(ep_.db_url);
      return pqxx::nontransaction(c)
          .exec("SELECT count(*) FROM robust.effects")[0][0]
          .as<int64_t>();
    } catch (const std::exception&) {
      return -1;
    }
  }
  // Waits (supervised) until `n` more effects were committed, so that a kill hits a consumer
  // that is working rather than one still joining its group; at most `limit`.
  void WaitForProgress(int64_t n, milliseconds limit = milliseconds(15000)) {
    const int64_t base = EffectRows();
    const auto until = steady_clock::now() + limit;
    while (steady_clock::now() < until) {
      const int64_t now = EffectRows();
      if (base >= 0 && now >= base + n) return;
      SupervisedSleep(milliseconds(20));
    }
  }

  void KillRelay(const std::string& why) {
    expect_relay_death_ = true;
    relay_.Signal(SIGKILL);
    relay_.Wait(milliseconds(5000));
    faults_.Add("relay kill -9 " + why);
  }
  void KillConsumer(const std::string& why) {
    expect_consumer_death_ = true;
    consumer_.Signal(SIGKILL);
    consumer_.Wait(milliseconds(5000));
    faults_.Add("consumer kill -9 " + why);
  }

  Scale scale_;
  History history_;
  std::mt19937_64 rng_;
  Endpoints ep_;
  std::string db_name_;
  std::unique_ptr<testing::TestDatabase> shared_db_;
  std::unique_ptr<testing::PrivatePostgres> private_pg_;
  testing::PrivateKafka kafka_;
  ChildProcess relay_;
  ChildProcess consumer_;
  FaultLog faults_;
  steady_clock::time_point start_;
  std::vector<ChildProcess*> extra_consumers_;  // more group members, stopped by Finish()
  int restarts_ = 0;
  int unexpected_exits_ = 0;
  std::map<std::string, int> exit_codes_;  // unexpected exits by process and exit code
  int allowed_unexpected_exits_ = 0;
  bool expect_relay_death_ = false;
  bool expect_consumer_death_ = false;
};

// kill -9 of the consumer at random moments under load: redelivered records are deduped, the
// offsets stored in PostgreSQL never go back, nothing is lost.
TEST_F(Pipeline, ConsumerKillNine) {
  SetUpPipeline("consumer_kill9", Database::kShared, ReadScale("consumer_kill9", 10000, 8, 400));
  ASSERT_FALSE(HasFatalFailure());
  Workload w(DefaultWorkload());
  w.Start();
  RunFaults([&](int) {
    const int64_t n = 1 + static_cast<int64_t>(rng_() % 300);
    WaitForProgress(n);
    KillConsumer("after " + std::to_string(n) + " more effects");
  });
  Finish(w);
}

// Relay and consumer killed at each failpoint: before publish, after the broker confirmed but
// before the rows were deleted, after the delete; before and after the consumer's COMMIT.
TEST_F(Pipeline, FailpointKills) {
  SetUpPipeline("failpoint_kills", Database::kShared, ReadScale("failpoint_kills", 10000, 10, 400));
  ASSERT_FALSE(HasFatalFailure());
  const std::vector<std::string> points = {"relay.before_publish", "consumer.before_commit",
                                           "relay.after_publish", "consumer.after_commit",
                                           "relay.after_complete"};
  std::map<std::string, int> fired;
  Workload w(DefaultWorkload());
  w.Start();
  RunFaults([&](int i) {
    const std::string& point = points[static_cast<size_t>(i) % points.size()];
    const int nth = 1 + static_cast<int>(rng_() % 4);
    const std::map<std::string, std::string> env = {
        {"CONVERGE_FAILPOINTS", point + "=kill@" + std::to_string(nth)}};
    const bool relay = point.rfind("relay.", 0) == 0;
    // Restart the target with the failpoint armed and wait for it to fire.
    ChildProcess& target = relay ? relay_ : consumer_;
    (relay ? expect_relay_death_ : expect_consumer_death_) = true;
    target.Signal(SIGTERM);
    target.Wait(milliseconds(20000));
    target = relay ? StartRelay(ep_, "relay", env) : StartConsumer(ep_, "consumer", env);
    const auto until = steady_clock::now() + milliseconds(15000);
    while (target.Running() && steady_clock::now() < until) {
      if (relay ? !consumer_.Running() : !relay_.Running()) EnsureRunning();
      std::this_thread::sleep_for(milliseconds(20));
    }
    if (!target.Running()) {
      ++fired[point];
      faults_.Add(point + "=kill@" + std::to_string(nth) + " fired");
    } else {
      faults_.Add(point + "=kill@" + std::to_string(nth) + " did not fire within 15 s");
    }
    (relay ? expect_relay_death_ : expect_consumer_death_) = true;
    EnsureRunning();
  });
  for (const auto& p : points) history_.extra["fired." + p] = std::to_string(fired[p]);
  Finish(w);
  if (scale_.faults >= static_cast<int>(points.size())) {
    for (const auto& p : points) {
      EXPECT_GE(fired[p], 1) << p << " never fired";
    }
  }
}

// PostgreSQL crash (pg_ctl stop -m immediate, start) while writers, relay and consumer run.
TEST_F(Pipeline, PostgresImmediateRestart) {
  SetUpPipeline("pg_restart", Database::kPrivate, ReadScale("pg_restart", 10000, 8, 350));
  ASSERT_FALSE(HasFatalFailure());
  Workload w(DefaultWorkload());
  w.Start();
  int64_t worst_downtime = 0;
  RunFaults([&](int) {
    milliseconds down{0};
    ASSERT_TRUE(private_pg_->RestartImmediate(&down)) << private_pg_->error();
    worst_downtime = std::max<int64_t>(worst_downtime, down.count());
    faults_.Add("postgres restart -m immediate, down " + std::to_string(down.count()) + " ms");
  });
  history_.extra["pg.worst_downtime_ms"] = std::to_string(worst_downtime);
  Finish(w);
}

// pg_terminate_backend() on every session of the database (writers, relay, consumer).
TEST_F(Pipeline, PostgresSessionsTerminated) {
  SetUpPipeline("pg_terminate", Database::kPrivate, ReadScale("pg_terminate", 10000, 10, 400));
  ASSERT_FALSE(HasFatalFailure());
  Workload w(DefaultWorkload());
  w.Start();
  RunFaults([&](int) {
    const int n = private_pg_->TerminateSessions(db_name_);
    ASSERT_GE(n, 0) << private_pg_->error();
    faults_.Add("pg_terminate_backend on " + std::to_string(n) + " sessions");
  });
  Finish(w);
}

// Every broker down for longer than kafka.message.timeout.ms (1.5 s), then up again.
TEST_F(Pipeline, KafkaBrokerDown) {
  SetUpPipeline("kafka_down", Database::kShared, ReadScale("kafka_down", 10000, 6, 300));
  ASSERT_FALSE(HasFatalFailure());
  Workload w(DefaultWorkload());
  w.Start();
  RunFaults([&](int) {
    ASSERT_EQ(kafka_.Control("broker-down -1"), "ok");
    const auto hold = milliseconds(2000 + rng_() % 2000);
    faults_.Add("broker-down -1 for " + std::to_string(hold.count()) + " ms");
    SupervisedSleep(hold);
    ASSERT_EQ(kafka_.Control("broker-up -1"), "ok");
  });
  Finish(w);
}

// Retriable produce errors (disconnects, NOT_LEADER, timeouts) and slow acks (RTT).
TEST_F(Pipeline, KafkaProduceErrorsAndSlowAcks) {
  SetUpPipeline("kafka_errors_rtt", Database::kShared,
                ReadScale("kafka_errors_rtt", 10000, 10, 400));
  ASSERT_FALSE(HasFatalFailure());
  const std::vector<std::string> errors = {"NOT_LEADER_FOR_PARTITION", "_TRANSPORT",
                                           "REQUEST_TIMED_OUT", "NOT_ENOUGH_REPLICAS"};
  Workload w(DefaultWorkload());
  w.Start();
  RunFaults([&](int i) {
    if (i % 2 == 0) {
      const std::string err = errors[rng_() % errors.size()];
      const int count = 1 + static_cast<int>(rng_() % 5);
      const std::string cmd = "produce-errors " + std::to_string(count) + " " + err;
      ASSERT_EQ(kafka_.Control(cmd), "ok") << cmd;
      faults_.Add(cmd);
    } else {
      const int rtt = 300 + static_cast<int>(rng_() % 1500);
      ASSERT_EQ(kafka_.Control("rtt -1 " + std::to_string(rtt)), "ok");
      const auto hold = milliseconds(1000 + rng_() % 2000);
      faults_.Add("rtt -1 " + std::to_string(rtt) + " for " + std::to_string(hold.count()) + " ms");
      SupervisedSleep(hold);
      ASSERT_EQ(kafka_.Control("rtt -1 0"), "ok");
    }
  });
  kafka_.Control("clear-errors 0");
  Finish(w);
}

// 1% of the messages make the handler fail for good: each is dead-lettered by the consumer,
// every other message flows; consumer kill -9 on top.
TEST_F(Pipeline, PoisonMessages) {
  SetUpPipeline("poison", Database::kShared, ReadScale("poison", 10000, 3, 400));
  ASSERT_FALSE(HasFatalFailure());
  WorkloadOptions o = DefaultWorkload();
  o.poison_share = 0.01;
  Workload w(o);
  w.Start();
  RunFaults([&](int) {
    WaitForProgress(1 + static_cast<int64_t>(rng_() % 300));
    KillConsumer("(poison run)");
  });
  history_.liveness_floor = int64_t{scale_.messages} * 9 / 10;
  Finish(w);
  EXPECT_GT(history_.poison, 0) << "the workload wrote no poison message";
}

// The visibility gap, deterministically (Debezium's dbz#76 interleaving): a transaction writes
// rows (low outbox ids) and stays open while the workload commits and publishes many later rows;
// in every other round the relay is killed before the old transaction commits and restarted
// after. The late rows must still be published and applied, in key order.
TEST_F(Pipeline, VisibilityGap) {
  SetUpPipeline("visibility_gap", Database::kShared, ReadScale("visibility_gap", 4000, 6, 400));
  ASSERT_FALSE(HasFatalFailure());
  Workload w(DefaultWorkload());
  w.Start();
  int64_t ordinal = 2000000000;
  std::vector<std::string> late_ids;
  RunFaults([&](int i) {
    pqxx::connection c(ep_.db_url);
    pqxx::work tx(c);
    const std::string key = "gap-" + std::to_string(i);
    for (int r = 0; r < 5; ++r) {
      late_ids.push_back(NewUuidV7().ToString());
      WriteMessage(tx, ep_.topic, key, late_ids.back(), ordinal++);
    }
    WaitForProgress(100 + static_cast<int64_t>(rng_() % 200));  // later rows flow meanwhile
    if (i % 2 == 1) KillRelay("while a transaction with lower outbox ids is open");
    tx.commit();
    faults_.Add("5 rows on " + key + " committed late" +
                (i % 2 == 1 ? " while the relay was down" : ""));
    EnsureRunning();
  });
  Finish(w);
  pqxx::connection c(ep_.db_url);
  pqxx::read_transaction tx(c);
  EXPECT_EQ(tx.exec_params("SELECT count(DISTINCT message_id) FROM robust.effects WHERE "
                           "message_id = ANY($1::uuid[])",
                           pg::TextArrayLiteral(late_ids))[0][0]
                .as<size_t>(),
            late_ids.size())
      << "rows committed late must all be applied";
}

// Two consumers in the group; one is paused (SIGSTOP) longer than the group session (3 s), so
// the other takes its partitions over, and then resumed (SIGCONT) as a zombie that may still
// hold polled records. Fencing by (owner, epoch) must drop them: nothing applied twice, no
// stored offset moves back.
TEST_F(Pipeline, ConsumerPauseZombie) {
  SetUpPipeline("consumer_pause", Database::kShared, ReadScale("consumer_pause", 8000, 5, 400));
  ASSERT_FALSE(HasFatalFailure());
  ChildProcess second = StartConsumer(ep_, "consumer-b");
  extra_consumers_.push_back(&second);
  Workload w(DefaultWorkload());
  w.Start();
  RunFaults([&](int i) {
    ChildProcess& victim = i % 2 == 0 ? consumer_ : second;
    WaitForProgress(1 + static_cast<int64_t>(rng_() % 200));
    ASSERT_TRUE(victim.Signal(SIGSTOP));
    // Past the session timeout, below the runtime's transaction_idle_timeout (10 s).
    const auto hold = milliseconds(4000 + rng_() % 3000);
    faults_.Add(std::string(i % 2 == 0 ? "consumer" : "consumer-b") + " SIGSTOP for " +
                std::to_string(hold.count()) + " ms");
    SupervisedSleep(hold);
    ASSERT_TRUE(victim.Signal(SIGCONT));
  });
  Finish(w);
}

// The broker refuses produce requests for good (MSG_SIZE_TOO_LARGE): the relay dead-letters
// those rows and parks their keys; every other key keeps flowing, nothing is lost in between.
TEST_F(Pipeline, PermanentPublishErrors) {
  SetUpPipeline("permanent_errors", Database::kShared,
                ReadScale("permanent_errors", 10000, 5, 400));
  ASSERT_FALSE(HasFatalFailure());
  Workload w(DefaultWorkload());
  w.Start();
  RunFaults([&](int) {
    ASSERT_EQ(kafka_.Control("produce-errors 1 MSG_SIZE_TOO_LARGE"), "ok");
    faults_.Add("produce-errors 1 MSG_SIZE_TOO_LARGE");
  });
  history_.liveness_floor = int64_t{scale_.messages} / 5;
  CheckOptions check;
  check.relay_dead_letters_expected = true;
  Finish(w, check);
  EXPECT_GT(history_.relay_dead_letters, 0) << "no produce error reached the relay";
}

}  // namespace
}  // namespace converge::robustness
