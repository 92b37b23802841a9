// Robustness scenarios of converge-reconciler as real processes against a private PostgreSQL
// cluster (docs/reliability.md, matrix rows E1 and F3): a workload of flows, of which some
// complete, some lose a reply once (re-emitted, then complete), some never get a reply
// (compensated in reverse order), some whose compensation is never acknowledged (parked as
// needs_attention) and some healthy ones with an hour-long deadline (never touched). A service
// thread plays relay and participants in one transaction per poll: it deletes the outbox rows
// (published), logs them, and replies by business-key prefix.
//
//   reconciler_kill9        one reconciler killed with SIGKILL in a loop mid-sweep, restarted
//   reconciler_concurrent   three reconcilers at once
//   reconciler_clock_jump   two reconcilers under libfaketime (timestamp file): +1 h, then -1 h,
//                           one with its monotonic clock faked too
//
// The same invariants are checked from the database after each: every flow ends as designed
// (completed / compensated / needs_attention / still running), each message (flow, step, kind,
// attempt) emitted once, compensation started at most once per flow and never for a healthy one,
// compensations in reverse step order, no completed step without its history. Results files go
// to the robustness results directory (tests/robustness/harness.h).
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <thread>

#include <pqxx/pqxx>

#include "converge/reconciler/flow.h"
#include "converge/testing/env.h"
#include "converge/testing/pg_cluster.h"
#include "converge/testing/process.h"
#include "harness.h"

namespace converge {
namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;
using testing::ChildProcess;

constexpr milliseconds kStepDeadline = 2000ms;
constexpr milliseconds kCompensationDeadline = 2000ms;
constexpr int kMaxAttempts = 2;
constexpr int kCompensationMaxAttempts = 2;

std::string Reconciler() { return testing::BinDir() + "/converge-reconciler"; }

// Device sweeps run or skipped by a reconciler (its /metrics), -1 when unreadable.
double DeviceSweepRounds(int port) {
  const std::string m = testing::HttpGet(port, "/metrics");
  double total = 0;
  for (const char* outcome : {"ran", "skipped"}) {
    const std::string needle =
        std::string("\nconverge_reconciler_device_sweeps_total{outcome=\"") + outcome + "\"} ";
    auto at = m.find(needle);
    if (at == std::string::npos) return -1;
    total += std::stod(m.substr(at + needle.size()));
  }
  return total;
}

std::string Slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Two steps with compensations; "slow" has one step with an hour-long deadline.
std::vector<flows::FlowType> FlowTypes() {
  flows::FlowType fast;
  fast.name = "fast";
  for (const char* step : {"reserve", "pay"}) {
    fast.steps.push_back({.name = step,
                          .command = {"svc", std::string(step) + ".do"},
                          .compensation = flows::MessageRoute{"svc", std::string(step) + ".undo"},
                          .deadline = kStepDeadline,
                          .max_attempts = kMaxAttempts});
  }
  fast.compensation_deadline = kCompensationDeadline;
  fast.compensation_max_attempts = kCompensationMaxAttempts;
  flows::FlowType slow;
  slow.name = "slow";
  slow.steps.push_back({.name = "wait",
                        .command = {"svc", "wait.do"},
                        .compensation = flows::MessageRoute{"svc", "wait.undo"},
                        .deadline = 1h,
                        .max_attempts = 1});
  return {fast, slow};
}

class ReconcilerRobustness : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    pg_ = new testing::PrivatePostgres();
    started_ = pg_->Start();
  }
  static void TearDownTestSuite() {
    delete pg_;
    pg_ = nullptr;
  }

  void SetUp() override {
    ASSERT_TRUE(started_) << pg_->error();
    std::error_code ec;
    std::filesystem::create_directories(robustness::ResultsDir() + "/logs", ec);
    name_ = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::string db = "rec_" + std::to_string(::getpid()) + "_" + name_;
    for (char& ch : db) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    url_ = pg_->CreateDatabase(db);
    ASSERT_FALSE(url_.empty()) << pg_->error();
    conn_ = std::make_unique<pqxx::connection>(url_);
    Exec("ALTER DATABASE \"" + std::string(conn_->dbname()) + "\" SET synchronous_commit = off");
    Exec(
        "CREATE TABLE public.published (message_id uuid, flow_id uuid, business_key text, "
        "step int, kind text, attempt int, type text, at timestamptz DEFAULT clock_timestamp())");
    pqxx::work tx(*conn_);
    for (const auto& t : FlowTypes()) ASSERT_TRUE(flows::Register(tx, t).ok());
    tx.commit();
    seed_ = std::random_device{}();
    if (const char* s = std::getenv("CONVERGE_SEED")) seed_ = std::stoull(s);
    std::cout << "seed " << seed_ << " (CONVERGE_SEED=" << seed_ << " replays the workload)\n";
  }
  void TearDown() override {
    StopWorkload();
    conn_.reset();
  }

  void Exec(const std::string& sql) {
    pqxx::nontransaction q(*conn_);
    q.exec(sql);
  }
  long long Count(const std::string& sql) {
    pqxx::nontransaction q(*conn_);
    return q.exec1(sql)[0].as<long long>();
  }

  std::vector<std::string> Args(const std::string& name) {
    return {"--reconciler.poll_interval=20ms",   "--reconciler.batch_size=3",
            "--reconciler.stuck_interval=200ms", "--metrics.port=-1",
            "--devices.sweep_interval=100ms",    "--reconciler.instance_id=" + name};
  }
  std::map<std::string, std::string> Env() { return {{"CONVERGE_PG_URL", url_}}; }
  std::string LogPath() { return robustness::ResultsDir() + "/logs/reconciler-" + name_ + ".log"; }

  // Starts `flows` flows over `spread` (kind by a seeded draw) and the service thread.
  void StartWorkload(int flows, milliseconds spread) {
    starter_ = std::thread([this, flows, spread] {
      std::mt19937_64 rng(seed_);
      std::uniform_int_distribution<int> pick(0, 99);
      pqxx::connection c(url_);
      for (int i = 0; i < flows && !stop_.load(); ++i) {
        const int p = pick(rng);
        const char* kind = p < 40   ? "ok"
                           : p < 55 ? "retry"
                           : p < 70 ? "comp"
                           : p < 80 ? "park"
                                    : "slow";
        pqxx::work tx(c);
        auto id = flows::Start(tx, std::string(kind) == "slow" ? "slow" : "fast",
                               std::string(kind) + "-" + std::to_string(i));
        if (!id.ok()) {
          ADD_FAILURE() << id.status();
          return;
        }
        tx.commit();
        ++started_flows_;
        std::this_thread::sleep_for(spread / flows);
      }
      starter_done_.store(true);
    });
    service_ = std::thread([this] { ServiceLoop(); });
  }
  void StopWorkload() {
    stop_.store(true);
    if (starter_.joinable()) starter_.join();
    if (service_.joinable()) service_.join();
  }

  // Relay and participants: publish (delete) every outbox row, log it, reply by prefix.
  void ServiceLoop() {
    pqxx::connection c(url_);
    while (!stop_.load()) {
      int handled = 0;
      try {
        pqxx::work tx(c);
        auto rows = tx.exec(
            "WITH d AS (DELETE FROM converge.outbox RETURNING message_id, key, "
            "  (headers->>'converge-flow-id')::uuid AS flow_id, "
            "  (headers->>'converge-flow-step')::int AS step, headers->>'converge-flow-kind' AS "
            "  kind, (headers->>'converge-flow-attempt')::int AS attempt, type, id) "
            "INSERT INTO public.published (message_id, flow_id, business_key, step, kind, "
            "  attempt, type) SELECT message_id, flow_id, key, step, kind, attempt, type FROM d "
            "  ORDER BY id RETURNING flow_id::text, business_key, step, kind, attempt");
        for (const auto& r : rows) {
          ++handled;
          const flows::FlowId id{r[0].c_str()};
          const std::string key = r[1].c_str(), kind = r[3].c_str();
          const int step = r[2].as<int>(), attempt = r[4].as<int>();
          const std::string prefix = key.substr(0, key.find('-'));
          Status st;
          if (kind == "command") {
            const bool drop = prefix == "slow" ||
                              ((prefix == "comp" || prefix == "park") && step == 1) ||
                              (prefix == "retry" && step == 1 && attempt == 1);
            if (!drop) st = flows::CompleteStep(tx, id, step).status();
          } else if (kind == "compensation" && prefix == "comp") {
            st = flows::CompensationDone(tx, id, step).status();
          }
          if (!st.ok()) throw std::runtime_error("reply: " + st.ToString());
        }
        tx.commit();
      } catch (const std::exception& e) {
        // Lock timeout, serialization: the transaction (deletes included) is retried.
        std::cerr << "service: " << e.what() << " (retrying)\n";
        handled = 0;
      }
      if (handled == 0) std::this_thread::sleep_for(15ms);
    }
  }

  // Fast flows not yet in their designed end state.
  long long Unsettled() {
    return Count(
        "SELECT count(*) FROM converge.flows WHERE flow_type = 'fast' AND state IN "
        "('running', 'compensating')");
  }
  bool WaitSettled(milliseconds timeout) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < until) {
      if (starter_done_.load() && Unsettled() == 0) return true;
      std::this_thread::sleep_for(100ms);
    }
    return false;
  }

  // The invariants; failures go to `h` (and to gtest).
  void Check(robustness::History* h) {
    auto expect = [&](const std::string& what, long long got, long long want) {
      std::string key = "check.";  // snake_case for the key=value results file
      for (char ch : what) {
        if (std::isalnum(static_cast<unsigned char>(ch))) {
          key += ch;
        } else if (key.back() != '_' && key.back() != '.') {
          key += '_';
        }
      }
      while (key.back() == '_') key.pop_back();
      h->extra[key] = std::to_string(got);
      if (got != want) {
        h->failures.push_back(what + ": " + std::to_string(got) + ", want " + std::to_string(want));
        ADD_FAILURE() << what << ": " << got << ", want " << want;
      }
    };
    auto by_prefix = [&](const std::string& prefix, const std::string& cond) {
      return Count("SELECT count(*) FROM converge.flows WHERE business_key LIKE '" + prefix +
                   "-%'" + (cond.empty() ? "" : " AND " + cond));
    };
    const long long total = Count("SELECT count(*) FROM converge.flows");
    h->committed = total;
    expect("flows started", total, started_flows_.load());
    for (const char* p : {"ok", "retry", "comp", "park", "slow"})
      h->extra[std::string("flows.") + p] = std::to_string(by_prefix(p, ""));
    // Designed end states.
    expect("ok flows not completed", by_prefix("ok", "state <> 'completed'"), 0);
    expect("retry flows not completed", by_prefix("retry", "state <> 'completed'"), 0);
    expect("comp flows not compensated", by_prefix("comp", "state <> 'compensated'"), 0);
    expect("park flows not needs_attention", by_prefix("park", "state <> 'needs_attention'"), 0);
    expect("healthy slow flows touched",
           by_prefix("slow", "NOT (state = 'running' AND step = 0 AND attempts = 1)"), 0);
    // No compensation of a healthy flow, none started twice.
    expect("healthy flows with compensation",
           Count("SELECT count(*) FROM converge.flows WHERE compensation_started_at IS NOT NULL "
                 "AND split_part(business_key, '-', 1) IN ('ok', 'retry', 'slow')"),
           0);
    expect("flows with compensation_started twice",
           Count("SELECT count(*) FROM (SELECT flow_id FROM converge.flow_history WHERE event = "
                 "'compensation_started' GROUP BY 1 HAVING count(*) > 1) d"),
           0);
    // Each message emitted once: a deterministic id per (flow, step, kind, attempt).
    expect("messages emitted twice",
           Count("SELECT count(*) FROM (SELECT message_id FROM public.published GROUP BY 1 "
                 "HAVING count(*) > 1) d"),
           0);
    expect("(flow, step, kind, attempt) emitted twice",
           Count("SELECT count(*) FROM (SELECT flow_id, step, kind, attempt FROM public.published "
                 "GROUP BY 1, 2, 3, 4 HAVING count(*) > 1) d"),
           0);
    // Retry flows: step 1 re-emitted exactly once (attempt 2), then completed.
    expect("retry flows without exactly one re-emission of step 1",
           Count("SELECT count(*) FROM converge.flows f WHERE business_key LIKE 'retry-%' AND "
                 "(SELECT count(*) FROM public.published p WHERE p.flow_id = f.flow_id AND "
                 "p.kind = 'command' AND p.step = 1 AND p.attempt = 2) <> 1"),
           0);
    // Comp flows: both steps compensated once each, pay (1) before reserve (0).
    expect("comp flows without exactly two compensation messages",
           Count("SELECT count(*) FROM converge.flows f WHERE business_key LIKE 'comp-%' AND "
                 "(SELECT count(*) FROM public.published p WHERE p.flow_id = f.flow_id AND "
                 "p.kind = 'compensation') <> 2"),
           0);
    expect("comp flows compensated out of order",
           Count("SELECT count(*) FROM converge.flows f WHERE business_key LIKE 'comp-%' AND "
                 "(SELECT min(id) FROM converge.flow_history h WHERE h.flow_id = f.flow_id AND "
                 "event = 'compensation_emitted' AND step = 0) < (SELECT min(id) FROM "
                 "converge.flow_history h WHERE h.flow_id = f.flow_id AND event = "
                 "'compensation_emitted' AND step = 1)"),
           0);
    // Park flows: pay's compensation emitted compensation_max_attempts times, reserve's never.
    expect("park flows with a wrong compensation count",
           Count("SELECT count(*) FROM converge.flows f WHERE business_key LIKE 'park-%' AND "
                 "((SELECT count(*) FROM public.published p WHERE p.flow_id = f.flow_id AND "
                 "p.kind = 'compensation' AND p.step = 1) <> " +
                 std::to_string(kCompensationMaxAttempts) +
                 " OR EXISTS (SELECT 1 FROM public.published p WHERE p.flow_id = f.flow_id AND "
                 "p.kind = 'compensation' AND p.step = 0))"),
           0);
    expect("parked flows that should not be",
           Count("SELECT count(*) FROM converge.flows WHERE state = 'needs_attention' AND "
                 "business_key NOT LIKE 'park-%'"),
           0);
    // No step lost: every completed flow has both steps completed in its history, and every
    // step command that was answered has its completion.
    expect("completed flows missing a step completion",
           Count("SELECT count(*) FROM converge.flows f WHERE state = 'completed' AND "
                 "(SELECT count(DISTINCT step) FROM converge.flow_history h WHERE h.flow_id = "
                 "f.flow_id AND event = 'step_completed') <> 2"),
           0);
    expect("flows without their first command",
           Count("SELECT count(*) FROM converge.flows f WHERE NOT EXISTS (SELECT 1 FROM "
                 "public.published p WHERE p.flow_id = f.flow_id AND p.kind = 'command' AND "
                 "p.step = 0 AND p.attempt = 1)"),
           0);
    h->extra["reemitted"] =
        std::to_string(Count("SELECT count(*) FROM converge.flow_history WHERE event = "
                             "'reemitted'"));
    h->extra["deadlines_extended"] = std::to_string(
        Count("SELECT count(*) FROM converge.flow_history WHERE event = 'deadline_extended'"));
    h->extra["published"] = std::to_string(Count("SELECT count(*) FROM public.published"));
  }

  void Finish(robustness::History* h, const robustness::FaultLog& faults) {
    faults.CopyTo(h);
    h->scenario = "reconciler_" + scenario_;
    h->seed = seed_;
    h->duration_s = faults.elapsed_s();
    robustness::WriteResults(*h);
  }

  static testing::PrivatePostgres* pg_;
  static bool started_;
  std::string name_, url_, scenario_;
  std::map<std::string, std::string> h_extra_;
  std::unique_ptr<pqxx::connection> conn_;
  uint64_t seed_ = 0;
  std::atomic<bool> stop_{false}, starter_done_{false};
  std::atomic<long long> started_flows_{0};
  std::thread starter_, service_;
};

testing::PrivatePostgres* ReconcilerRobustness::pg_ = nullptr;
bool ReconcilerRobustness::started_ = false;

// F3: kill -9 of the reconciler in a loop while flows are due in a stream (batches of 3 per
// transaction, so most kills land in the middle of a sweep), restarted at once.
TEST_F(ReconcilerRobustness, KillNineLoop) {
  scenario_ = "kill9";
  robustness::FaultLog faults;
  std::remove(LogPath().c_str());
  StartWorkload(160, 8000ms);
  std::mt19937_64 rng(seed_ + 1);
  std::uniform_int_distribution<int> life(150, 700);
  auto proc = std::make_unique<ChildProcess>();
  ASSERT_TRUE(proc->Start(Reconciler(), Args("k0"), Env(), LogPath()));
  // Kill while there is work: until the starter is done and a few seconds into the tail, when
  // re-emissions and compensations fall due.
  const auto until = std::chrono::steady_clock::now() + 14s;
  int kills = 0;
  while (std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(milliseconds(life(rng)));
    ASSERT_TRUE(proc->Signal(SIGKILL));
    EXPECT_EQ(proc->Wait(5000ms), 128 + SIGKILL);
    faults.Add("kill -9 reconciler k" + std::to_string(kills) + " (unsettled " +
               std::to_string(Unsettled()) + ")");
    ++kills;
    proc = std::make_unique<ChildProcess>();
    ASSERT_TRUE(proc->Start(Reconciler(), Args("k" + std::to_string(kills)), Env(), LogPath()));
  }
  const bool settled = WaitSettled(40s);
  ASSERT_TRUE(proc->Signal(SIGTERM));
  EXPECT_EQ(proc->Wait(10000ms), 0);
  StopWorkload();
  robustness::History h;
  if (!settled) h.failures.push_back("flows not settled within 40 s");
  EXPECT_TRUE(settled) << Unsettled() << " fast flows unsettled";
  EXPECT_GE(kills, 10);
  Check(&h);
  Finish(&h, faults);
}

// F3: three reconcilers at once over the same stream of flows.
TEST_F(ReconcilerRobustness, ThreeReconcilersAtOnce) {
  scenario_ = "concurrent";
  robustness::FaultLog faults;
  std::remove(LogPath().c_str());
  StartWorkload(160, 8000ms);
  std::vector<std::unique_ptr<ChildProcess>> procs;
  for (const char* n : {"c1", "c2", "c3"}) {
    procs.push_back(std::make_unique<ChildProcess>());
    ASSERT_TRUE(procs.back()->Start(Reconciler(), Args(n), Env(), LogPath()));
    faults.Add(std::string("reconciler ") + n + " started");
  }
  const bool settled = WaitSettled(45s);
  for (auto& p : procs) ASSERT_TRUE(p->Signal(SIGTERM));
  for (auto& p : procs) EXPECT_EQ(p->Wait(10000ms), 0);
  StopWorkload();
  robustness::History h;
  if (!settled) h.failures.push_back("flows not settled within 45 s");
  EXPECT_TRUE(settled) << Unsettled() << " fast flows unsettled";
  Check(&h);
  Finish(&h, faults);
}

// E1: the reconcilers' host clock jumps +1 h, then -1 h (libfaketime timestamp file, re-read on
// every call); one has its monotonic clock faked as well. Deadlines are decided on the database's
// now(): no healthy flow is compensated or re-emitted early, the stuck ones are handled as
// designed, and the sweeps keep running after the monotonic clock stepped back.
TEST_F(ReconcilerRobustness, ClockJumps) {
  scenario_ = "clock_jump";
  robustness::FakeHostClock host_clock(robustness::ResultsDir() + "/logs/reconciler-faketime-" +
                                       std::to_string(::getpid()) + ".rc");
  ASSERT_TRUE(host_clock.ok()) << host_clock.error;
  host_clock.Set("+1h");
  const std::string ahead_hour = pqxx::nontransaction(*conn_)
                                     .exec1(
                                         "SELECT to_char((now() + interval '1 hour') AT TIME "
                                         "ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24')")[0]
                                     .c_str();
  robustness::FaultLog faults;
  std::remove(LogPath().c_str());
  auto env = Env();
  auto env_real_monotonic = Env();
  for (const auto& [k, v] : host_clock.Env(/*fake_monotonic=*/true)) env[k] = v;
  for (const auto& [k, v] : host_clock.Env(/*fake_monotonic=*/false)) env_real_monotonic[k] = v;
  StartWorkload(160, 8000ms);
  ChildProcess a, b;
  const int port = testing::FreeLoopbackPort();
  auto faked_args = Args("faked-monotonic");
  faked_args[3] = "--metrics.port=" + std::to_string(port);
  ASSERT_TRUE(a.Start(Reconciler(), faked_args, env, LogPath()));
  ASSERT_TRUE(b.Start(Reconciler(), Args("real-monotonic"), env_real_monotonic, LogPath()));
  faults.Add("two reconcilers with the host clock +1h");
  std::this_thread::sleep_for(6s);
  host_clock.Set("-1h");
  faults.Add("host clock jumps to -1h (two hours back)");
  // The reconciler whose monotonic clock stepped back two hours keeps sweeping devices (every
  // 100 ms): its periodic tasks are due again when the clock reads earlier than their last run.
  std::this_thread::sleep_for(1000ms);
  const double rounds_before = DeviceSweepRounds(port);
  std::this_thread::sleep_for(1500ms);
  const double rounds_after = DeviceSweepRounds(port);
  h_extra_["device_sweep_rounds_after_jump"] = std::to_string(rounds_after - rounds_before);
  EXPECT_GE(rounds_before, 0);
  EXPECT_GE(rounds_after - rounds_before, 3)
      << "the device sweep stalled after the monotonic clock stepped back";
  const bool settled = WaitSettled(45s);
  // Both still cycle after the jump back: the one with the faked monotonic clock too.
  const std::string behind_hour = pqxx::nontransaction(*conn_)
                                      .exec1(
                                          "SELECT to_char((now() - interval '1 hour') AT TIME "
                                          "ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24')")[0]
                                      .c_str();
  ASSERT_TRUE(a.Signal(SIGTERM));
  ASSERT_TRUE(b.Signal(SIGTERM));
  EXPECT_EQ(a.Wait(10000ms), 0);
  EXPECT_EQ(b.Wait(10000ms), 0);
  StopWorkload();
  robustness::History h;
  h.extra = h_extra_;
  if (!settled) h.failures.push_back("flows not settled within 45 s");
  if (rounds_after - rounds_before < 3)
    h.failures.push_back("device sweep stalled after the monotonic clock stepped back");
  EXPECT_TRUE(settled) << Unsettled() << " fast flows unsettled";
  // The processes really ran with both offsets: their log lines carry the faked hours.
  const std::string log = Slurp(LogPath());
  for (const auto& [what, hour] : {std::pair{"ahead", ahead_hour}, {"behind", behind_hour}}) {
    const bool seen = log.find("ts=" + hour) != std::string::npos;
    h.extra[std::string("log_") + what] = seen ? "true" : "false";
    if (!seen) h.failures.push_back(std::string("no log line stamped ") + hour);
    EXPECT_TRUE(seen) << "no log line stamped " << hour << ":\n" << log.substr(0, 2000);
  }
  Check(&h);
  Finish(&h, faults);
}

}  // namespace
}  // namespace converge
