// converge-reconciler as real processes against a fresh database: configuration errors, metrics
// for the stuck things, SIGTERM; two reconcilers at once with kill -9 (each compensation emitted
// exactly once); a host clock jump under libfaketime (no healthy flow is touched).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <thread>

#include "converge/reconciler/flow.h"
#include "converge/testing/env.h"
#include "converge/testing/pg_fixture.h"
#include "converge/testing/process.h"

namespace converge {
namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;
using testing::ChildProcess;
using testing::TestDatabase;

uint16_t FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// A minimal HTTP/1.0 GET; returns "" when nothing listens.
std::string Get(uint16_t port, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return "";
  }
  const std::string req = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n";
  [[maybe_unused]] auto w = ::write(fd, req.data(), req.size());
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

std::string Slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string Reconciler() { return testing::BinDir() + "/converge-reconciler"; }

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
  const uint16_t port = FreePort();
  auto args = Args("m");
  args[3] = "--metrics.port=" + std::to_string(port);
  ChildProcess p;
  ASSERT_TRUE(p.Start(Reconciler(), args, Env(), ::testing::TempDir() + "reconciler-metrics.log"));
  std::string metrics;
  for (int i = 0; i < 100; ++i) {
    metrics = Get(port, "/metrics");
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
  EXPECT_NE(Get(port, "/readyz").find(" 200"), std::string::npos);
  EXPECT_NE(Get(port, "/healthz").find(" 200"), std::string::npos);
  ASSERT_TRUE(p.Signal(SIGTERM));
  EXPECT_EQ(p.Wait(10000ms), 0);
  EXPECT_EQ(Get(port, "/metrics"), "");
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

}  // namespace
}  // namespace converge
