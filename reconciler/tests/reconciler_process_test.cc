// converge-reconciler as real processes against a fresh database: configuration errors, metrics
// for the stuck things, SIGTERM; two reconcilers at once with kill -9 (each compensation emitted
// exactly once); a host clock jump under libfaketime (no healthy flow is touched); the device
// sweep (re-send, expiry, twins) run by one reconciler and by three at once.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <thread>

#include "converge/pubsub/devices.h"
#include "converge/reconciler/flow.h"
#include "converge/reconciler/reconciler.h"
#include "converge/testing/env.h"
#include "converge/testing/pg_cluster.h"
#include "converge/testing/pg_fixture.h"
#include "converge/testing/process.h"

namespace converge {
namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;
using testing::ChildProcess;
using testing::TestDatabase;

std::string Slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string Reconciler() { return testing::BinDir() + "/converge-reconciler"; }

// The value of the sample `name` (with its labels, e.g. `x{action="expired"}`) in a /metrics
// text, or -1 when absent.
double Metric(const std::string& text, const std::string& name) {
  const std::string needle = "\n" + name + " ";
  auto at = text.find(needle);
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + needle.size()));
}

flows::FlowType OrderFlow(milliseconds step_deadline, int attempts) {
  flows::FlowType t;
  t.name = "order";
  t.steps.push_back({.name = "reserve",
                     .command = {"stock", "stock.reserve"},
                     .compensation = flows::MessageRoute{"stock", "stock.release"},
                     .deadline = step_deadline,
                     .max_attempts = attempts});
  t.steps.push_back({.name = "pay",
                     .command = {"payments", "payment.charge"},
                     .compensation = flows::MessageRoute{"payments", "payment.refund"},
                     .deadline = step_deadline,
                     .max_attempts = attempts});
  t.compensation_deadline = 120s;  // acknowledged long before: no re-emission in these tests
  t.compensation_max_attempts = 2;
  return t;
}

class ReconcilerProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(db_.ok());
    db_.Scalar("ALTER DATABASE \"" + db_.name() + "\" SET synchronous_commit = off");
  }
  std::vector<std::string> Args(const std::string& name) {
    return {"--reconciler.poll_interval=20ms", "--reconciler.batch_size=5",
            "--reconciler.stuck_interval=100ms", "--metrics.port=-1",
            "--reconciler.instance_id=" + name};
  }
  std::map<std::string, std::string> Env() { return {{"CONVERGE_PG_URL", db_.url()}}; }
  long long Count(const std::string& sql) { return db_.Count(sql); }

  TestDatabase db_;
};

TEST_F(ReconcilerProcessTest, BadConfigurationExitsTwoAndCheckConfigMasksTheUrl) {
  const std::string log = ::testing::TempDir() + "reconciler-badcfg.log";
  std::remove(log.c_str());
  ChildProcess p;
  ASSERT_TRUE(p.Start(Reconciler(), {"--reconciler.batch_sise=5"},
                      {{"CONVERGE_PG_URL", "postgresql://u:pw@127.0.0.1:1/x"}}, log));
  EXPECT_EQ(p.Wait(10000ms), 2);
  EXPECT_NE(Slurp(log).find("did you mean 'reconciler.batch_size'"), std::string::npos)
      << Slurp(log);

  const std::string log2 = ::testing::TempDir() + "reconciler-check.log";
  std::remove(log2.c_str());
  ChildProcess q;
  ASSERT_TRUE(q.Start(Reconciler(), {"--check-config"},
                      {{"CONVERGE_PG_URL", "postgresql://u:s3cret@127.0.0.1:1/x"}}, log2));
  EXPECT_EQ(q.Wait(10000ms), 0);
  EXPECT_NE(Slurp(log2).find("configuration OK"), std::string::npos) << Slurp(log2);
  EXPECT_EQ(Slurp(log2).find("s3cret"), std::string::npos) << Slurp(log2);
}

TEST_F(ReconcilerProcessTest, ServesStuckThingsAsMetricsAndStopsOnSigterm) {
  db_.Scalar("SELECT converge.enqueue('t', 'k', 'ty', '{}')");
  db_.Scalar("UPDATE converge.outbox SET created_at = now() - interval '2 hours'");
  db_.Scalar(
      "INSERT INTO converge.outbox_blocked_keys (topic, key, parked, reason) VALUES "
      "('t', 'k1', true, 'dead letter')");
  db_.Scalar(
      "INSERT INTO converge.dead_letters (origin, topic, reason, error_code) VALUES "
      "('relay', 't', 'too large', 'too_large'), ('relay', 't', 'x', 'too_large')");
  db_.Scalar(
      "INSERT INTO converge.device_commands (id, device_id, name, expires_at) VALUES "
      "(gen_random_uuid(), 'dev-1', 'reboot', now() + interval '1 hour')");
  {
    auto c = db_.Connect();
    pqxx::work tx(*c);
    ASSERT_TRUE(flows::Register(tx, OrderFlow(1h, 1)).ok());
    ASSERT_TRUE(flows::Start(tx, "order", "o-1").ok());
    tx.commit();
  }
  const uint16_t port = testing::FreeLoopbackPort();
  auto args = Args("m");
  args[3] = "--metrics.port=" + std::to_string(port);
  ChildProcess p;
  ASSERT_TRUE(p.Start(Reconciler(), args, Env(), ::testing::TempDir() + "reconciler-metrics.log"));
  std::string metrics;
  for (int i = 0; i < 100; ++i) {
    metrics = testing::HttpGet(port, "/metrics");
    if (metrics.find("converge_reconciler_open_dead_letters 2") != std::string::npos) break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_NE(metrics.find("converge_reconciler_open_dead_letters 2"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("converge_reconciler_parked_keys 1"), std::string::npos) << metrics;
  // The two-hour-old row counts, the flow's fresh command does not.
  EXPECT_NE(metrics.find("converge_reconciler_outbox_stuck_rows 1"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("converge_reconciler_outbox_rows 2"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("converge_reconciler_flows{state=\"running\"} 1"), std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("converge_reconciler_passes_total"), std::string::npos);
  EXPECT_NE(metrics.find("\nconverge_reconciler_unacked_device_commands 1\n"), std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("\nconverge_reconciler_unconverged_device_twins 0\n"), std::string::npos)
      << metrics;
  EXPECT_NE(testing::HttpGet(port, "/readyz").find(" 200"), std::string::npos);
  EXPECT_NE(testing::HttpGet(port, "/healthz").find(" 200"), std::string::npos);
  ASSERT_TRUE(p.Signal(SIGTERM));
  EXPECT_EQ(p.Wait(10000ms), 0);
  EXPECT_EQ(testing::HttpGet(port, "/metrics"), "");
}

// 200 flows whose "pay" step never replies, two reconcilers, one killed with SIGKILL twice while
// they compensate (and replaced). A service acknowledges each compensation as it appears. Each
// flow must end compensated with exactly one refund and one release in the outbox.
TEST_F(ReconcilerProcessTest, TwoReconcilersAndKillNineEmitEachCompensationOnce) {
  constexpr int kFlows = 200;
  {
    auto c = db_.Connect();
    pqxx::work tx(*c);
    ASSERT_TRUE(flows::Register(tx, OrderFlow(300ms, 1)).ok());
    for (int i = 0; i < kFlows; ++i) {
      auto id = flows::Start(tx, "order", "o-" + std::to_string(i));
      ASSERT_TRUE(id.ok());
      ASSERT_TRUE(flows::CompleteStep(tx, *id, 0).ok());  // now waiting for "pay"
    }
    tx.commit();
  }
  // The relay published the commands (and "pay" never answers); compensations stay in the
  // outbox so that they can be counted.
  db_.Scalar("DELETE FROM converge.outbox WHERE headers->>'converge-flow-kind' = 'command'");
  // Due in waves over 3 s, so that the kills land while the reconcilers are busy.
  db_.Scalar(
      "UPDATE converge.flows f SET deadline_at = now() + (s.n % 30) * interval '100 ms' FROM "
      "(SELECT flow_id, row_number() OVER (ORDER BY flow_id) AS n FROM converge.flows) s "
      "WHERE f.flow_id = s.flow_id");
  std::atomic<bool> stop{false};
  std::thread service([&] {
    auto c = db_.Connect();
    // Every compensation row is looked at until acknowledged: an id cursor would skip a row
    // whose transaction committed after one with a higher id (the visibility gap).
    std::set<std::string> acked;
    while (!stop.load()) {
      pqxx::work tx(*c);
      auto rows = tx.exec(
          "SELECT message_id::text, headers->>'converge-flow-id', "
          "(headers->>'converge-flow-step')::int FROM converge.outbox WHERE "
          "headers->>'converge-flow-kind' = 'compensation' ORDER BY id");
      int fresh = 0;
      for (const auto& row : rows) {
        if (!acked.insert(row[0].c_str()).second) continue;
        ++fresh;
        auto o = flows::CompensationDone(tx, flows::FlowId{row[1].c_str()}, row[2].as<int>());
        EXPECT_TRUE(o.ok()) << o.status();
      }
      tx.commit();
      if (fresh == 0) std::this_thread::sleep_for(20ms);
    }
  });
  const std::string log = ::testing::TempDir() + "reconciler-kill.log";
  std::remove(log.c_str());
  ChildProcess a, b;
  ASSERT_TRUE(a.Start(Reconciler(), Args("a"), Env(), log));
  ASSERT_TRUE(b.Start(Reconciler(), Args("b"), Env(), log));
  auto started = [&] {
    return Count("SELECT count(*) FROM converge.flows WHERE compensation_started_at IS NOT NULL");
  };
  auto wait_for = [&](long long n) {
    for (int i = 0; i < 600 && started() < n; ++i) std::this_thread::sleep_for(20ms);
  };
  wait_for(kFlows / 4);
  const long long at_first_kill = started();
  ASSERT_TRUE(a.Signal(SIGKILL));
  EXPECT_EQ(a.Wait(5000ms), 128 + SIGKILL);
  ChildProcess a2;
  ASSERT_TRUE(a2.Start(Reconciler(), Args("a2"), Env(), log));
  wait_for(kFlows / 2);
  const long long at_second_kill = started();
  ASSERT_TRUE(b.Signal(SIGKILL));
  EXPECT_EQ(b.Wait(5000ms), 128 + SIGKILL);
  ChildProcess b2;
  ASSERT_TRUE(b2.Start(Reconciler(), Args("b2"), Env(), log));
  for (int i = 0; i < 1500; ++i) {
    if (Count("SELECT count(*) FROM converge.flows WHERE state <> 'compensated'") == 0) break;
    std::this_thread::sleep_for(20ms);
  }
  stop.store(true);
  service.join();
  a2.Signal(SIGTERM);
  b2.Signal(SIGTERM);
  EXPECT_EQ(a2.Wait(10000ms), 0);
  EXPECT_EQ(b2.Wait(10000ms), 0);
  EXPECT_EQ(Count("SELECT count(*) FROM converge.flows WHERE state = 'compensated'"), kFlows);
  EXPECT_EQ(Count("SELECT count(*) FROM converge.outbox WHERE type = 'payment.refund'"), kFlows);
  EXPECT_EQ(Count("SELECT count(*) FROM converge.outbox WHERE type = 'stock.release'"), kFlows);
  EXPECT_EQ(Count("SELECT count(*) FROM (SELECT headers->>'converge-flow-id', type FROM "
                  "converge.outbox WHERE headers->>'converge-flow-kind' = 'compensation' "
                  "GROUP BY 1, 2 HAVING count(*) <> 1) d"),
            0);
  EXPECT_EQ(Count("SELECT count(*) FROM (SELECT flow_id, step FROM converge.flow_history WHERE "
                  "event = 'compensation_emitted' GROUP BY 1, 2 HAVING count(*) <> 1) d"),
            0);
  // Both kills hit while there was work left (deadlines are spread over 3 s).
  EXPECT_LT(at_first_kill, kFlows);
  EXPECT_LT(at_second_kill, kFlows);
  std::cout << "compensations started at the kills: " << at_first_kill << ", " << at_second_kill
            << "\n";
}

// The host clock of the reconcilers jumps two hours ahead (and a day back) under libfaketime;
// flows whose deadline (database clock) is an hour away stay untouched, while a flow that is
// really late is handled exactly once.
TEST_F(ReconcilerProcessTest, HostClockJumpCausesNoFalseCompensation) {
  {
    auto c = db_.Connect();
    pqxx::work tx(*c);
    ASSERT_TRUE(flows::Register(tx, OrderFlow(1h, 2)).ok());
    for (int i = 0; i < 50; ++i)
      ASSERT_TRUE(flows::Start(tx, "order", "healthy-" + std::to_string(i)).ok());
    ASSERT_TRUE(flows::Start(tx, "order", "late").ok());
    tx.commit();
  }
  db_.Scalar(
      "UPDATE converge.flows SET deadline_at = now() - interval '1 second' WHERE "
      "business_key = 'late'");
  db_.Scalar("DELETE FROM converge.outbox");  // published by the relay
  const std::string log = ::testing::TempDir() + "reconciler-faketime.log";
  std::remove(log.c_str());
  // libfaketime preloaded into the reconciler itself (what `faketime -f +2h` does, minus the
  // wrapper process, so that the test signals the reconciler directly).
  const std::string lib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
  ASSERT_EQ(::access(lib.c_str(), R_OK), 0) << lib << " missing: apt-get install faketime";
  auto env_ahead = Env(), env_behind = Env();
  env_ahead["LD_PRELOAD"] = env_behind["LD_PRELOAD"] = lib;
  env_ahead["FAKETIME"] = "+2h";
  env_behind["FAKETIME"] = "-1d";
  ChildProcess ahead, behind;
  ASSERT_TRUE(ahead.Start(Reconciler(), Args("ahead"), env_ahead, log));
  ASSERT_TRUE(behind.Start(Reconciler(), Args("behind"), env_behind, log));
  for (int i = 0; i < 250; ++i) {
    if (Count("SELECT count(*) FROM converge.flow_history WHERE event = 'reemitted'") > 0) break;
    std::this_thread::sleep_for(20ms);
  }
  // Let both run many more passes (poll every 20 ms) with the clock jumped.
  std::this_thread::sleep_for(1500ms);
  ahead.Signal(SIGTERM);
  behind.Signal(SIGTERM);
  EXPECT_EQ(ahead.Wait(10000ms), 0);
  EXPECT_EQ(behind.Wait(10000ms), 0);
  EXPECT_EQ(Count("SELECT count(*) FROM converge.flow_history WHERE event = 'reemitted'"), 1)
      << "the really late flow is re-emitted once";
  EXPECT_EQ(Count("SELECT count(*) FROM converge.flows WHERE business_key LIKE 'healthy-%' AND "
                  "state = 'running' AND attempts = 1"),
            50);
  EXPECT_EQ(Count("SELECT count(*) FROM converge.flows WHERE compensation_started_at IS NOT "
                  "NULL"),
            0);
  // The processes really saw a jumped clock: their log timestamps are hours off.
  const std::string out = Slurp(log);
  const std::string db_hour = db_.Scalar("SELECT to_char(now() AT TIME ZONE 'UTC', 'HH24')");
  const std::string ahead_hour = db_.Scalar(
      "SELECT to_char((now() + interval '2 hours') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24')");
  EXPECT_NE(out.find("ts=" + ahead_hour), std::string::npos)
      << "expected log lines stamped " << ahead_hour << " (db hour " << db_hour << "):\n"
      << out.substr(0, 1500);
}

// The device sweep run by converge-reconciler: a command past its resend interval is written to
// the outbox again (same id), an expired one is expired, an unconverged twin's snapshot is
// re-sent; nothing is re-sent again within the resend interval; the counts are on /metrics.
TEST_F(ReconcilerProcessTest, SweepsDevicesResendingAndExpiringCommands) {
  std::string resend_id, expired_id;
  {
    auto c = db_.Connect();
    pqxx::work tx(*c);
    auto sent = pubsub::SendCommand(
        tx, {.device_id = "dev-1", .name = "reboot", .ttl = std::chrono::hours(1)});
    ASSERT_TRUE(sent.ok()) << sent.status();
    resend_id = sent->command_id;
    auto v = pubsub::SetDesired(tx, "dev-2", R"({"target": 21})");
    ASSERT_TRUE(v.ok()) << v.status();
    tx.commit();
  }
  // The relay published both; the command was sent an hour ago and never acknowledged, the
  // twin's snapshot too. A second command expired a second ago.
  db_.Scalar("DELETE FROM converge.outbox");
  db_.Scalar(
      "UPDATE converge.device_commands SET status = 'sent', sent_at = now() - interval "
      "'1 hour', last_sent_at = now() - interval '1 hour'");
  db_.Scalar("UPDATE converge.device_twins SET desired_sent_at = now() - interval '1 hour'");
  expired_id = db_.Scalar(
      "INSERT INTO converge.device_commands (id, device_id, name, status, created_at, "
      "last_sent_at, expires_at) VALUES (gen_random_uuid(), 'dev-1', 'stop', 'sent', now() - "
      "interval '1 hour', now() - interval '1 hour', now() - interval '1 second') RETURNING "
      "id::text");
  const uint16_t port = testing::FreeLoopbackPort();
  auto args = Args("d");
  args[3] = "--metrics.port=" + std::to_string(port);
  args.push_back("--devices.sweep_interval=50ms");
  args.push_back("--devices.command_resend_interval=1h");
  args.push_back("--devices.twin_resend_after=1h");
  ChildProcess p;
  ASSERT_TRUE(p.Start(Reconciler(), args, Env(), ::testing::TempDir() + "reconciler-dev.log"));
  auto done = [&] {
    return Count("SELECT count(*) FROM converge.outbox WHERE message_id = '" + resend_id + "'") ==
               1 &&
           Count(
               "SELECT count(*) FROM converge.outbox WHERE topic = 'devices/dev-2/twin/desired'") ==
               1 &&
           Count("SELECT count(*) FROM converge.device_commands WHERE status = 'expired'") == 1;
  };
  for (int i = 0; i < 250 && !done(); ++i) std::this_thread::sleep_for(20ms);
  ASSERT_TRUE(done()) << Slurp(::testing::TempDir() + "reconciler-dev.log");
  EXPECT_EQ(
      db_.Scalar("SELECT status FROM converge.device_commands WHERE id = '" + expired_id + "'"),
      "expired");
  EXPECT_EQ(db_.Scalar("SELECT type FROM converge.outbox WHERE message_id = '" + resend_id + "'"),
            std::string(pubsub::kCommandType));
  EXPECT_EQ(Count("SELECT count(*) FROM converge.outbox WHERE message_id = '" + expired_id + "'"),
            0)
      << "an expired command is never re-sent";
  // The relay publishes the re-sends; within the resend interval (1 h) nothing is re-sent
  // again although the reconciler keeps sweeping every 50 ms.
  db_.Scalar("DELETE FROM converge.outbox");
  std::this_thread::sleep_for(1000ms);
  EXPECT_EQ(Count("SELECT count(*) FROM converge.outbox"), 0);
  EXPECT_EQ(Count("SELECT attempts FROM converge.device_commands WHERE id = '" + resend_id + "'"),
            2);
  EXPECT_EQ(Count("SELECT desired_resends FROM converge.device_twins"), 1);
  const std::string metrics = testing::HttpGet(port, "/metrics");
  EXPECT_EQ(Metric(metrics, "converge_device_sweep_total{action=\"expired\"}"), 1) << metrics;
  EXPECT_EQ(Metric(metrics, "converge_device_sweep_total{action=\"resent_command\"}"), 1);
  EXPECT_EQ(Metric(metrics, "converge_device_sweep_total{action=\"resent_twin\"}"), 1);
  EXPECT_EQ(Metric(metrics, "converge_device_unacked_commands"), 1);
  EXPECT_GE(Metric(metrics, "converge_reconciler_device_sweeps_total{outcome=\"ran\"}"), 5);
  EXPECT_EQ(Metric(metrics, "converge_reconciler_device_sweeps_total{outcome=\"skipped\"}"), 0);
  ASSERT_TRUE(p.Signal(SIGTERM));
  EXPECT_EQ(p.Wait(10000ms), 0);

  // devices.sweep=false: the reconciler leaves the device tables alone.
  db_.Scalar(
      "UPDATE converge.device_commands SET last_sent_at = now() - interval '2 hours' "
      "WHERE id = '" +
      resend_id + "'");
  args.push_back("--devices.sweep=false");
  ChildProcess q;
  ASSERT_TRUE(q.Start(Reconciler(), args, Env(), ::testing::TempDir() + "reconciler-dev.log"));
  std::this_thread::sleep_for(1000ms);
  ASSERT_TRUE(q.Signal(SIGTERM));
  EXPECT_EQ(q.Wait(10000ms), 0);
  EXPECT_EQ(Count("SELECT count(*) FROM converge.outbox"), 0);
}

// Three reconcilers at once, each sweeping devices every 20 ms and driving flows: 40 commands
// expire and are counted once in total (the sum of the three processes' metrics); 40 unacked
// commands are re-sent (the relay publishes each copy at once) never twice within the resend
// interval, judged on the database clock from a trigger's log of every re-send; 30 stuck flows
// start compensating once each, with their first compensation emitted once.
TEST_F(ReconcilerProcessTest, ThreeReconcilersSweepDevicesAndFlowsWithoutDoubleWork) {
  constexpr int kExpiring = 40, kResending = 40, kFlows = 30;
  constexpr int kResendMs = 700;
  db_.Scalar(
      "CREATE TABLE public.resend_log (id uuid, at timestamptz); "
      "CREATE FUNCTION public.log_resend() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
      "INSERT INTO public.resend_log VALUES (NEW.id, NEW.last_sent_at); RETURN NEW; END $$; "
      "CREATE TRIGGER log_resend AFTER UPDATE OF last_sent_at ON converge.device_commands "
      "FOR EACH ROW WHEN (NEW.last_sent_at IS DISTINCT FROM OLD.last_sent_at) "
      "EXECUTE FUNCTION public.log_resend()");
  db_.Scalar(
      "INSERT INTO converge.device_commands (id, device_id, name, status, created_at, "
      "last_sent_at, expires_at) SELECT gen_random_uuid(), 'dev-' || (i % 7), 'stop', "
      "'sent', now() - interval '1 hour', now() - interval '1 hour', now() + i * "
      "interval '50 ms' FROM generate_series(1, " +
      std::to_string(kExpiring) + ") i");
  db_.Scalar(
      "INSERT INTO converge.device_commands (id, device_id, name, status, created_at, "
      "last_sent_at, expires_at) SELECT gen_random_uuid(), 'dev-' || (i % 5), 'reboot', "
      "'sent', now() - interval '1 hour', now() - interval '1 hour', now() + interval "
      "'1 hour' FROM generate_series(1, " +
      std::to_string(kResending) + ") i");
  {
    auto c = db_.Connect();
    pqxx::work tx(*c);
    ASSERT_TRUE(flows::Register(tx, OrderFlow(300ms, 1)).ok());
    for (int i = 0; i < kFlows; ++i) {
      auto id = flows::Start(tx, "order", "o-" + std::to_string(i));
      ASSERT_TRUE(id.ok());
      ASSERT_TRUE(flows::CompleteStep(tx, *id, 0).ok());  // waiting for "pay", which never comes
    }
    tx.commit();
  }
  db_.Scalar("DELETE FROM converge.outbox");
  std::atomic<bool> stop{false};
  std::atomic<long long> published{0};
  std::thread relay([&] {
    auto c = db_.Connect();
    while (!stop.load()) {
      pqxx::work tx(*c);
      published += static_cast<long long>(
          tx.exec("DELETE FROM converge.outbox WHERE topic LIKE 'devices/%'").affected_rows());
      tx.commit();
      std::this_thread::sleep_for(10ms);
    }
  });
  std::vector<uint16_t> ports;
  std::vector<std::unique_ptr<ChildProcess>> procs;
  const std::string log = ::testing::TempDir() + "reconciler-dev3.log";
  std::remove(log.c_str());
  for (const char* name : {"x", "y", "z"}) {
    ports.push_back(testing::FreeLoopbackPort());
    auto args = Args(name);
    args[3] = "--metrics.port=" + std::to_string(ports.back());
    args.push_back("--devices.sweep_interval=20ms");
    args.push_back("--devices.command_resend_interval=" + std::to_string(kResendMs) + "ms");
    procs.push_back(std::make_unique<ChildProcess>());
    ASSERT_TRUE(procs.back()->Start(Reconciler(), args, Env(), log));
  }
  // Long enough for every command to expire and for several resend intervals.
  std::this_thread::sleep_for(3500ms);
  // Take the device sweep lock ourselves (waiting for the sweep that holds it): from then on
  // every reconciler skips its sweeps, so the counters read below are final.
  auto lock_conn = db_.Connect();
  pqxx::nontransaction(*lock_conn)
      .exec_params("SELECT pg_advisory_lock($1)", reconciler::kDeviceSweepLockKey);
  double expired = 0, resent = 0, ran = 0, skipped = 0;
  for (uint16_t port : ports) {
    const std::string m = testing::HttpGet(port, "/metrics");
    ASSERT_GE(Metric(m, "converge_device_sweep_total{action=\"expired\"}"), 0) << m;
    expired += Metric(m, "converge_device_sweep_total{action=\"expired\"}");
    resent += Metric(m, "converge_device_sweep_total{action=\"resent_command\"}");
    ran += Metric(m, "converge_reconciler_device_sweeps_total{outcome=\"ran\"}");
    skipped += Metric(m, "converge_reconciler_device_sweeps_total{outcome=\"skipped\"}");
  }
  for (auto& p : procs) ASSERT_TRUE(p->Signal(SIGTERM));
  for (auto& p : procs) EXPECT_EQ(p->Wait(10000ms), 0);
  stop.store(true);
  relay.join();
  std::cout << "device sweeps run " << ran << ", skipped (another reconciler sweeping) " << skipped
            << "; re-sends " << resent << "\n";
  EXPECT_EQ(Count("SELECT count(*) FROM converge.device_commands WHERE status = 'expired'"),
            kExpiring);
  EXPECT_EQ(expired, kExpiring) << "each expiry counted by exactly one reconciler";
  // Every re-send is in the log, counted once, and published once by the relay.
  const long long resends = Count("SELECT count(*) FROM public.resend_log");
  EXPECT_EQ(resent, resends);
  EXPECT_EQ(Count("SELECT coalesce(sum(attempts - 1), 0) FROM converge.device_commands"), resends);
  // Never two re-sends of a command within the interval (database clock), and every command
  // still open was re-sent several times (3.5 s / 0.7 s).
  EXPECT_EQ(Count("SELECT count(*) FROM (SELECT at - lag(at) OVER (PARTITION BY id ORDER BY at) "
                  "AS gap FROM public.resend_log) g WHERE gap < interval '" +
                  std::to_string(kResendMs) + " ms'"),
            0);
  EXPECT_EQ(Count("SELECT count(*) FROM converge.device_commands WHERE name = 'reboot' AND "
                  "attempts >= 3"),
            kResending);
  EXPECT_EQ(Count("SELECT count(*) FROM public.resend_log l JOIN converge.device_commands c "
                  "USING (id) WHERE c.name = 'stop' AND l.at >= c.expires_at"),
            0)
      << "no re-send after expiry";
  // The flows: each compensated once, each compensation emitted once.
  EXPECT_EQ(Count("SELECT count(*) FROM converge.flows WHERE compensation_started_at IS NOT "
                  "NULL"),
            kFlows);
  EXPECT_EQ(Count("SELECT count(*) FROM converge.flow_history WHERE event = "
                  "'compensation_started'"),
            kFlows);
  EXPECT_EQ(Count("SELECT count(*) FROM (SELECT flow_id, step FROM converge.flow_history WHERE "
                  "event = 'compensation_emitted' GROUP BY 1, 2 HAVING count(*) <> 1) d"),
            0);
  // Compensations run in reverse order and none is acknowledged here: each flow emitted the
  // refund of "pay" once and waits for it before releasing "reserve".
  EXPECT_EQ(Count("SELECT count(*) FROM converge.outbox WHERE headers->>'converge-flow-kind' = "
                  "'compensation' AND type = 'payment.refund'"),
            kFlows);
  EXPECT_EQ(Count("SELECT count(*) FROM converge.outbox WHERE headers->>'converge-flow-kind' = "
                  "'compensation'"),
            kFlows);
}

}  // namespace
}  // namespace converge
