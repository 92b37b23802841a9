// The robustness harness: a workload generator, process helpers and a history checker shared by
// the scenarios in tests/robustness (see docs/reliability.md).
//
// * Workload: writer threads commit a business row and its outbox message in ONE transaction
//   (hot and cold keys, some transactions rolled back on purpose, some held open for seconds so
//   a lower outbox id commits after higher ones). It records what it attempted: committed,
//   rolled back, failed before COMMIT, or in doubt (the connection died during COMMIT; the
//   business table decides afterwards).
// * The consumer side is converge-test-consumer (test_consumer_main.cc): it applies each
//   message through converge::consumer::Consumer into robust.effects.
// * Check(): reads PostgreSQL (and optionally the broker) and counts lost, phantom, applied
//   twice, per-key order violations, offset regressions and unexpected dead letters.
// * Results: one key=value file per scenario under ResultsDir(); robustness_summary prints the
//   table and "N passed, N failed".
//
// Every random choice comes from Scale::seed (CONVERGE_SEED replays a run). Sizes come from
// CONVERGE_ROBUST_MESSAGES / CONVERGE_ROBUST_FAULTS / CONVERGE_ROBUST_RATE (scripts/soak.sh).
//
// Thread safety: Workload runs its own threads; its accessors may be called from any thread.
// The free functions are independent.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <pqxx/connection>
#include <pqxx/transaction_base>

#include "converge/common/status.h"
#include "converge/testing/process.h"

namespace converge::robustness {

// Sizes and seed of one scenario run.
struct Scale {
  int messages = 0;   // committed messages the workload writes
  int faults = 0;     // faults the scenario injects
  int rate = 0;       // messages per second the writers aim for
  uint64_t seed = 0;  // CONVERGE_SEED or random
};
// Reads CONVERGE_ROBUST_MESSAGES, CONVERGE_ROBUST_FAULTS, CONVERGE_ROBUST_RATE and CONVERGE_SEED
// over the given CI-tier defaults, and prints them with the replay command line.
Scale ReadScale(const std::string& scenario, int messages, int faults, int rate);

// Creates the harness tables in `url` (which already holds the converge schema):
// robust.business (ground truth of committed messages), robust.effects (one row per handler
// run, no unique constraint so that a double apply is visible) and robust.offset_audit, filled
// by a trigger on converge.consumer_offsets.
Status InstallHarnessSchema(const std::string& url);

struct WorkloadOptions {
  std::string db_url;
  std::string topic;
  int messages = 10000;  // done() after this many committed messages
  int rate = 300;        // messages per second (paced; 0 = as fast as possible)
  int hot_keys = 4;      // a few keys that get `hot_share` of the messages
  double hot_share = 0.3;
  int cold_keys = 300;
  int max_rows_per_tx = 8;      // 1..max rows per transaction
  double rollback_share = 0.1;  // transactions rolled back on purpose
  // A second writer holds a transaction with one outbox row open for long_tx_min..long_tx_max
  // every long_tx_every, so rows with lower ids commit after higher ones (visibility gap).
  std::chrono::milliseconds long_tx_every{1500};
  std::chrono::milliseconds long_tx_min{500};
  std::chrono::milliseconds long_tx_max{3000};
  double poison_share = 0.0;  // messages whose payload makes the test handler fail for good
  uint64_t seed = 1;
};

struct WorkloadStats {
  int64_t committed = 0;    // messages in transactions whose COMMIT returned
  int64_t rolled_back = 0;  // messages in transactions rolled back on purpose
  int64_t failed = 0;       // messages in transactions that failed before COMMIT
  int64_t in_doubt = 0;     // messages whose COMMIT outcome is unknown
  int64_t long_transactions = 0;
  int64_t reconnects = 0;
  int64_t poison = 0;  // committed poison messages
};

class Workload {
 public:
  explicit Workload(WorkloadOptions options);
  ~Workload();  // Stop() + join
  Workload(const Workload&) = delete;
  Workload& operator=(const Workload&) = delete;

  void Start();
  // Waits until `messages` are committed (or `timeout`); stops the writers either way. Until
  // then the writers keep going past `messages`, so faults always meet a loaded pipeline.
  bool Wait(std::chrono::milliseconds timeout);
  void Stop();
  bool done() const { return done_.load(); }
  int64_t long_transactions() const { return stats().long_transactions; }
  WorkloadStats stats() const;
  // Message ids that must never have an effect (rolled back on purpose or failed before
  // COMMIT).
  std::vector<std::string> aborted_ids() const;

 private:
  void WriterLoop();
  void LongTransactionLoop();
  bool WriteTransaction(std::mt19937_64& rng, int64_t* ordinal,
                        std::unique_ptr<pqxx::connection>& conn);

  WorkloadOptions options_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> done_{false};
  std::thread writer_;
  std::thread long_writer_;
  mutable std::mutex mu_;
  WorkloadStats stats_;
  std::vector<std::string> aborted_;
};

// Writes one workload message (business row + outbox row) in the caller's transaction, for
// scenarios that hold a transaction themselves. Throws what pqxx throws.
void WriteMessage(pqxx::transaction_base& tx, const std::string& topic, const std::string& key,
                  const std::string& message_id, int64_t ordinal);

// What the checker found. Every count except the informational ones must be 0.
struct History {
  std::string scenario;
  uint64_t seed = 0;
  int faults = 0;
  int64_t committed = 0;                // robust.business rows (ground truth)
  int64_t applied = 0;                  // distinct message ids with an effect
  int64_t lost = 0;                     // committed, not poison, never applied, not explained
  int64_t phantom = 0;                  // applied but never committed
  int64_t aborted_read = 0;             // applied although its transaction was rolled back
  int64_t applied_twice = 0;            // effect rows beyond the first per message id
  int64_t order_violations = 0;         // per key, an effect with seq <= the previous one
  int64_t offset_regressions = 0;       // a stored consumer offset went backwards
  int64_t poison = 0;                   // committed poison messages
  int64_t poison_dead_lettered = 0;     // of which dead-lettered by the consumer (must be all)
  int64_t unexpected_dead_letters = 0;  // consumer dead letters for healthy messages
  int64_t relay_dead_letters = 0;       // relay dead letters (0 unless the scenario expects them)
  int64_t parked = 0;                   // committed rows still in the outbox behind a parked key
  int64_t broker_records = -1;          // informational (-1: broker not read)
  int64_t broker_duplicates = -1;       // informational: at-least-once redeliveries on the broker
  int64_t unseen = 0;                   // committed, not yet settled when the drain deadline hit
  int64_t recovery_ms = -1;             // from heal to everything settled
  double duration_s = 0;
  int64_t liveness_floor = 0;                // the scenario fails if fewer messages were applied
  std::map<std::string, std::string> extra;  // scenario-specific facts (fault log, counters)
  std::vector<std::string> failures;         // human-readable reasons; empty = passed
  bool passed() const { return failures.empty(); }
};

struct CheckOptions {
  std::string db_url;
  std::string group;
  std::string topic;
  std::string brokers;  // non-empty: also read the topic back from the broker
  std::vector<std::string> aborted_ids;
  bool relay_dead_letters_expected = false;
};

// Unsettled messages right now: committed, not poison, no effect, not dead-lettered by the
// relay and not parked; plus poison messages not yet dead-lettered. -1 when PostgreSQL is
// unreachable.
int64_t Unsettled(const std::string& db_url, const std::string& group);
// A host clock that can be stepped for child processes: libfaketime preloaded with a timestamp
// file re-read on every call (FAKETIME_NO_CACHE). Ok() is false (with `error`) when libfaketime
// is not installed.
class FakeHostClock {
 public:
  explicit FakeHostClock(std::string stamp_file);
  ~FakeHostClock();
  bool ok() const { return error.empty(); }
  // Steps the clock of every process started with Env() to `offset` ("+1h", "-1d", "+0").
  // Atomic: a process reads the old or the new offset.
  void Set(const std::string& offset) const;
  // The environment for a child process. `fake_monotonic` false: only CLOCK_REALTIME moves.
  // ThreadSanitizer builds: TSan cannot judge such a process. libfaketime's
  // pthread_cond_timedwait wrapper calls the real function past TSan's interceptor, so TSan
  // misses the mutex being released and retaken inside the wait and reports a "double lock"
  // (seen in Paho and in Poco's NotificationQueue); the environment therefore turns TSan's
  // reports off (report_bugs=0; no effect in other builds). The callers' outcome checks still
  // apply, and every other scenario runs the same binaries under TSan.
  std::map<std::string, std::string> Env(bool fake_monotonic) const;

  std::string error;

 private:
  const std::string stamp_;
};

// A readable account of where the unsettled messages are (outbox and leases, or published and
// not applied) and of the consumer's offsets, for a scenario that did not drain.
std::string DescribeUnsettled(const std::string& db_url, const std::string& group);
// Polls Unsettled() until 0; returns the milliseconds it took, or -1 at `timeout`.
int64_t WaitSettled(const std::string& db_url, const std::string& group,
                    std::chrono::milliseconds timeout);

// Fills the counts of `h` and appends a failure for every invariant that does not hold.
void Check(const CheckOptions& options, History* h);

// Where results files go: CONVERGE_ROBUSTNESS_RESULTS, else <build>/robustness-results.
std::string ResultsDir();
// Writes <ResultsDir()>/<scenario>.result (key=value lines) and prints the same to stdout.
void WriteResults(const History& h);

// Process helpers. Logs go to <ResultsDir()>/logs/<scenario>-<name>.log.
struct Endpoints {
  std::string db_url;
  std::string brokers;
  std::string topic;
  std::string group;
  std::string scenario;
};
// converge-relay with short leases, retries and breaker delays so recovery fits a CI budget.
testing::ChildProcess StartRelay(const Endpoints& e, const std::string& name,
                                 const std::map<std::string, std::string>& env = {},
                                 const std::vector<std::string>& extra_args = {});
// converge-test-consumer (`extra_args` e.g. {"--source", "mqtt", "--mqtt-url", URL}).
testing::ChildProcess StartConsumer(const Endpoints& e, const std::string& name,
                                    const std::map<std::string, std::string>& env = {},
                                    const std::vector<std::string>& extra_args = {});

// A network partition on loopback with nftables (the tests run as root). Each instance owns a
// table `inet converge_robust_<pid>_<n>` with an input-hook chain (on loopback both directions
// pass the input hook; dropping in the output hook would make the sender's syscall fail with
// EPERM instead of hanging). Block() drops (blackhole: connections hang, SYNs go unanswered)
// or resets (`reject with tcp reset`) TCP to AND from the given ports, optionally only for
// one loopback address (e.g. 127.0.0.2, so the harness's own connections on 127.0.0.1 stay up).
// Heal() deletes the table; so does the destructor (also when a test fails).
class NetPartition {
 public:
  enum class Mode { kDrop, kReset };
  NetPartition();
  ~NetPartition();  // Heal()
  NetPartition(const NetPartition&) = delete;
  NetPartition& operator=(const NetPartition&) = delete;

  bool Block(const std::vector<int>& ports, Mode mode, const std::string& address = "");
  bool Heal();
  bool blocked() const { return blocked_; }
  const std::string& table() const { return table_; }
  const std::string& error() const { return error_; }
  // Deletes converge_robust_* tables whose owning process is gone; returns how many.
  static int DeleteStaleTables();

 private:
  bool Run(const std::string& script);
  std::string table_;
  std::string error_;
  bool blocked_ = false;
};
// The ports of a "host:port,host:port" bootstrap list.
std::vector<int> PortsOf(const std::string& bootstrap_servers);

// A time-stamped, numbered list of injected faults, printed as they happen.
class FaultLog {
 public:
  FaultLog();
  void Add(const std::string& what);
  int count() const { return static_cast<int>(entries_.size()); }
  double elapsed_s() const;
  void CopyTo(History* h) const;

 private:
  std::chrono::steady_clock::time_point start_;
  std::vector<std::string> entries_;
};

}  // namespace converge::robustness
