#include "harness.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include <pqxx/pqxx>

#include "converge/broker/kafka_admin.h"
#include "converge/common/uuid.h"
#include "converge/schemas/pg.h"
#include "converge/testing/env.h"

namespace converge::robustness {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

namespace {

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  try {
    return std::stoi(v);
  } catch (const std::exception&) {
    std::fprintf(stderr, "%s=%s is not a number; using %d\n", name, v, fallback);
    return fallback;
  }
}

milliseconds RandomBetween(std::mt19937_64& rng, milliseconds lo, milliseconds hi) {
  if (hi <= lo) return lo;
  return lo + milliseconds(rng() % static_cast<uint64_t>((hi - lo).count() + 1));
}

// One row: the outbox message and the business row in the caller's transaction.
constexpr const char* kWriteRow =
    "WITH m AS (SELECT converge.enqueue($1, $2, 'robust.effect', $3::jsonb, '{}'::jsonb, NULL, "
    "NULL, $4::uuid) AS id) "
    "INSERT INTO robust.business (message_id, key, poison) SELECT id, $2, $5 FROM m";

std::string Payload(int64_t ordinal, bool poison) {
  return "{\"n\":" + std::to_string(ordinal) + (poison ? ",\"poison\":true}" : "}");
}

}  // namespace

Scale ReadScale(const std::string& scenario, int messages, int faults, int rate) {
  Scale s;
  s.messages = EnvInt("CONVERGE_ROBUST_MESSAGES", messages);
  s.faults = EnvInt("CONVERGE_ROBUST_FAULTS", faults);
  s.rate = EnvInt("CONVERGE_ROBUST_RATE", rate);
  const char* seed = std::getenv("CONVERGE_SEED");
  s.seed = seed != nullptr && *seed != '\0' ? std::stoull(seed) : std::random_device{}();
  const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string gtest_name =
      test != nullptr ? std::string(test->test_suite_name()) + "." + test->name() : scenario;
  std::printf(
      "[%s] seed=%llu messages=%d faults=%d rate=%d/s\n"
      "[%s] replay: CONVERGE_SEED=%llu CONVERGE_ROBUST_MESSAGES=%d CONVERGE_ROBUST_FAULTS=%d "
      "CONVERGE_ROBUST_RATE=%d tests/robustness/pipeline_robustness_test --gtest_filter=%s\n",
      scenario.c_str(), static_cast<unsigned long long>(s.seed), s.messages, s.faults, s.rate,
      scenario.c_str(), static_cast<unsigned long long>(s.seed), s.messages, s.faults, s.rate,
      gtest_name.c_str());
  std::fflush(stdout);
  return s;
}

Status InstallHarnessSchema(const std::string& url) {
  try {
    pqxx::connection c(url);
    pqxx::work tx(c);
    tx.exec(R"sql(
CREATE SCHEMA robust;
-- Ground truth: a row here commits together with its outbox message.
CREATE TABLE robust.business (
  message_id   uuid PRIMARY KEY,
  key          text NOT NULL,
  poison       boolean NOT NULL DEFAULT false,
  committed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- One row per handler run that committed. No unique constraint on purpose: a double apply
-- must be visible to the checker, not refused.
CREATE TABLE robust.effects (
  apply_seq      bigserial PRIMARY KEY,
  consumer_group text NOT NULL,
  message_id     uuid NOT NULL,
  key            text NOT NULL,
  seq            bigint NOT NULL,
  member         text NOT NULL,
  applied_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX effects_message ON robust.effects (message_id);
CREATE TABLE robust.offset_audit (
  id             bigserial PRIMARY KEY,
  consumer_group text NOT NULL,
  topic          text NOT NULL,
  partition      integer NOT NULL,
  old_offset     bigint NOT NULL,
  new_offset     bigint NOT NULL,
  old_owner      text,
  new_owner      text,
  at             timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION robust.audit_offsets() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.next_offset IS DISTINCT FROM OLD.next_offset THEN
    INSERT INTO robust.offset_audit (consumer_group, topic, partition, old_offset, new_offset,
                                     old_owner, new_owner)
      VALUES (NEW.consumer_group, NEW.topic, NEW.partition, OLD.next_offset, NEW.next_offset,
              OLD.owner, NEW.owner);
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER robust_offset_audit AFTER UPDATE ON converge.consumer_offsets
  FOR EACH ROW EXECUTE FUNCTION robust.audit_offsets();
)sql");
    tx.commit();
    return Status::Ok();
  } catch (const std::exception& e) {
    return pg::StatusFromException(e);
  }
}

void WriteMessage(pqxx::transaction_base& tx, const std::string& topic, const std::string& key,
                  const std::string& message_id, int64_t ordinal) {
  tx.exec_params(kWriteRow, topic, key, Payload(ordinal, false), message_id, false);
}

// ---------------------------------------------------------------------------------------------
// Workload

Workload::Workload(WorkloadOptions options) : options_(std::move(options)) {}

Workload::~Workload() { Stop(); }

void Workload::Start() {
  writer_ = std::thread([this] { WriterLoop(); });
  if (options_.long_tx_every.count() > 0)
    long_writer_ = std::thread([this] { LongTransactionLoop(); });
}

bool Workload::Wait(milliseconds timeout) {
  const auto until = steady_clock::now() + timeout;
  while (!done_.load() && steady_clock::now() < until)
    std::this_thread::sleep_for(milliseconds(50));
  Stop();
  return done_.load();
}

void Workload::Stop() {
  stop_.store(true);
  if (writer_.joinable()) writer_.join();
  if (long_writer_.joinable()) long_writer_.join();
}

WorkloadStats Workload::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

std::vector<std::string> Workload::aborted_ids() const {
  std::lock_guard<std::mutex> lock(mu_);
  return aborted_;
}

void Workload::WriterLoop() {
  std::mt19937_64 rng(options_.seed * 7919 + 1);
  const auto start = steady_clock::now();
  int64_t ordinal = 0;
  auto extra_start = start;
  int64_t extra_base = 0;
  std::unique_ptr<pqxx::connection> conn;
  while (!stop_.load()) {
    int64_t committed = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      committed = stats_.committed;
    }
    // The target reached, writing goes on at a quarter of the rate (faults still being
    // injected must meet a loaded pipeline, without piling up a backlog) until Wait()/Stop().
    if (committed >= options_.messages && !done_.load()) {
      done_.store(true);
      extra_start = steady_clock::now();
      extra_base = committed;
    }
    if (options_.rate > 0) {
      // Paced: the n-th message is due at start + n / rate.
      const auto due =
          done_.load() ? extra_start + milliseconds((committed - extra_base) * 4000 / options_.rate)
                       : start + milliseconds(committed * 1000 / options_.rate);
      if (steady_clock::now() < due) std::this_thread::sleep_until(due);
    }
    if (!WriteTransaction(rng, &ordinal, conn)) std::this_thread::sleep_for(milliseconds(100));
  }
}

// One transaction of 1..max rows; false when PostgreSQL was unreachable.
bool Workload::WriteTransaction(std::mt19937_64& rng, int64_t* ordinal,
                                std::unique_ptr<pqxx::connection>& conn) {
  struct Row {
    std::string id, key;
    bool poison;
  };
  std::vector<Row> rows;
  const int n = 1 + static_cast<int>(rng() % static_cast<uint64_t>(options_.max_rows_per_tx));
  for (int i = 0; i < n; ++i) {
    const bool hot = std::uniform_real_distribution<double>(0, 1)(rng) < options_.hot_share;
    std::string key = hot ? "hot-" + std::to_string(rng() % options_.hot_keys)
                          : "cold-" + std::to_string(rng() % options_.cold_keys);
    const bool poison = options_.poison_share > 0 &&
                        std::uniform_real_distribution<double>(0, 1)(rng) < options_.poison_share;
    rows.push_back({NewUuidV7().ToString(), std::move(key), poison});
  }
  const bool rollback = std::uniform_real_distribution<double>(0, 1)(rng) < options_.rollback_share;
  bool committing = false;
  try {
    if (!conn || !conn->is_open()) conn = std::make_unique<pqxx::connection>(options_.db_url);
    pqxx::work tx(*conn);
    for (const auto& r : rows)
      tx.exec_params(kWriteRow, options_.topic, r.key, Payload((*ordinal)++, r.poison), r.id,
                     r.poison);
    if (rollback) {
      tx.abort();
      std::lock_guard<std::mutex> lock(mu_);
      stats_.rolled_back += n;
      for (const auto& r : rows) aborted_.push_back(r.id);
      return true;
    }
    committing = true;
    tx.commit();
    std::lock_guard<std::mutex> lock(mu_);
    stats_.committed += n;
    for (const auto& r : rows) stats_.poison += r.poison ? 1 : 0;
    return true;
  } catch (const std::exception&) {
    conn.reset();
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.reconnects;
    if (committing) {
      stats_.in_doubt += n;  // robust.business decides
    } else {
      stats_.failed += n;
      for (const auto& r : rows) aborted_.push_back(r.id);
    }
    return false;
  }
}

void Workload::LongTransactionLoop() {
  std::mt19937_64 rng(options_.seed * 104729 + 2);
  int64_t ordinal = 1000000000;
  while (!stop_.load()) {
    const auto pause = RandomBetween(rng, options_.long_tx_every / 2, options_.long_tx_every);
    for (auto until = steady_clock::now() + pause; steady_clock::now() < until && !stop_.load();)
      std::this_thread::sleep_for(milliseconds(20));
    if (stop_.load()) return;
    const std::string id = NewUuidV7().ToString();
    // Own keys: the long transaction must not hold a hot key's outbox_keys row lock, which
    // would stall the main writer instead of creating a visibility gap.
    const std::string key = "long-" + std::to_string(rng() % 8);
    bool committing = false;
    try {
      pqxx::connection c(options_.db_url);
      pqxx::work tx(c);
      tx.exec_params(kWriteRow, options_.topic, key, Payload(ordinal++, false), id, false);
      const auto hold = RandomBetween(rng, options_.long_tx_min, options_.long_tx_max);
      std::this_thread::sleep_for(hold);  // later, higher outbox ids commit meanwhile
      committing = true;
      tx.commit();
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.committed;
      ++stats_.long_transactions;
    } catch (const std::exception&) {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.reconnects;
      if (committing) {
        ++stats_.in_doubt;
      } else {
        ++stats_.failed;
        aborted_.push_back(id);
      }
      std::this_thread::sleep_for(milliseconds(100));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Checker

namespace {

// Committed healthy messages without an outcome (no effect, not dead-lettered by the relay, not
// parked behind a dead-lettered head).
constexpr const char* kUnsettledHealthy = R"sql(
SELECT count(*) FROM robust.business b
 WHERE NOT b.poison
   AND NOT EXISTS (SELECT 1 FROM robust.effects e
                    WHERE e.message_id = b.message_id AND e.consumer_group = $1)
   AND NOT EXISTS (SELECT 1 FROM converge.dead_letters d
                    WHERE d.origin = 'relay' AND d.message_id = b.message_id)
   AND NOT EXISTS (SELECT 1 FROM converge.outbox o
                     JOIN converge.outbox_blocked_keys k
                       ON k.topic = o.topic AND k.key = o.key AND k.parked
                    WHERE o.message_id = b.message_id))sql";

constexpr const char* kUnsettledPoison = R"sql(
SELECT count(*) FROM robust.business b
 WHERE b.poison
   AND NOT EXISTS (SELECT 1 FROM converge.dead_letters d
                    WHERE d.message_id = b.message_id
                      AND (d.origin = 'relay' OR d.consumer_group = $1)))sql";

int64_t CountParam(pqxx::transaction_base& tx, const char* sql, const std::string& p) {
  return tx.exec_params(sql, p)[0][0].as<int64_t>();
}
int64_t Count(pqxx::transaction_base& tx, const char* sql) {
  return tx.exec(sql)[0][0].as<int64_t>();
}

}  // namespace

int64_t Unsettled(const std::string& db_url, const std::string& group) {
  try {
    pqxx::connection c(db_url);
    pqxx::read_transaction tx(c);
    return CountParam(tx, kUnsettledHealthy, group) + CountParam(tx, kUnsettledPoison, group);
  } catch (const std::exception&) {
    return -1;
  }
}

namespace {
constexpr const char* kFaketimeLib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
}  // namespace

FakeHostClock::FakeHostClock(std::string stamp_file) : stamp_(std::move(stamp_file)) {
  if (::access(kFaketimeLib, R_OK) != 0)
    error = std::string(kFaketimeLib) + " missing: apt-get install faketime";
  std::filesystem::create_directories(std::filesystem::path(stamp_).parent_path());
  Set("+0");
}

FakeHostClock::~FakeHostClock() { std::remove(stamp_.c_str()); }

void FakeHostClock::Set(const std::string& offset) const {
  const std::string tmp = stamp_ + ".tmp";
  std::ofstream(tmp) << offset << "\n";
  std::rename(tmp.c_str(), stamp_.c_str());
}

std::map<std::string, std::string> FakeHostClock::Env(bool fake_monotonic) const {
  const char* tsan = std::getenv("TSAN_OPTIONS");
  std::map<std::string, std::string> env = {
      {"LD_PRELOAD", kFaketimeLib},
      {"FAKETIME_TIMESTAMP_FILE", stamp_},
      {"FAKETIME_NO_CACHE", "1"},
      {"TSAN_OPTIONS", std::string(tsan != nullptr ? tsan : "") + ":report_bugs=0"}};
  if (!fake_monotonic) env["FAKETIME_DONT_FAKE_MONOTONIC"] = "1";
  return env;
}

std::string DescribeUnsettled(const std::string& db_url, const std::string& group) {
  // Where the unsettled healthy messages are: still in the outbox (and why the relay does not
  // take them), or gone from it (published) without an effect (the consumer side).
  static constexpr const char* kWhere = R"sql(
WITH u AS (
  SELECT b.message_id, b.key FROM robust.business b
   WHERE NOT b.poison
     AND NOT EXISTS (SELECT 1 FROM robust.effects e
                      WHERE e.message_id = b.message_id AND e.consumer_group = $1)
     AND NOT EXISTS (SELECT 1 FROM converge.dead_letters d
                      WHERE d.origin = 'relay' AND d.message_id = b.message_id))
SELECT coalesce(o.id::text, 'published') AS outbox_id, u.key, o.seq, o.slot,
       o.attempts, s.owner, (s.lease_until > now()) AS leased,
       k.parked, k.blocked_until - now() AS blocked_for, k.reason,
       (SELECT last_seq FROM converge.consumer_key_seq q
         WHERE q.consumer_group = $1 AND q.key = u.key LIMIT 1) AS consumer_last_seq
  FROM u LEFT JOIN converge.outbox o ON o.message_id = u.message_id
         LEFT JOIN converge.relay_slots s ON s.slot = o.slot
         LEFT JOIN converge.outbox_blocked_keys k ON k.topic = o.topic AND k.key = o.key
 ORDER BY u.key, o.seq LIMIT 40)sql";
  static constexpr const char* kOffsets = R"sql(
SELECT topic, partition, next_offset, owner, epoch, now() - updated_at AS idle
  FROM converge.consumer_offsets WHERE consumer_group = $1 ORDER BY topic, partition)sql";
  std::string out;
  auto dump = [&](pqxx::result r, const char* title) {
    out += std::string(title) + " (" + std::to_string(r.size()) + " rows)\n";
    for (const auto& row : r) {
      out += "   ";
      for (const auto& f : row)
        out += std::string(" ") + f.name() + "=" + (f.is_null() ? "NULL" : f.c_str());
      out += "\n";
    }
  };
  try {
    pqxx::connection c(db_url);
    pqxx::read_transaction tx(c);
    dump(tx.exec_params(kWhere, group), "unsettled messages");
    dump(tx.exec_params(kOffsets, group), "consumer offsets");
    dump(tx.exec("SELECT instance_id, lease_until > now() AS live FROM converge.relay_instances"),
         "relay instances");
  } catch (const std::exception& e) {
    out += std::string("cannot describe the unsettled messages: ") + e.what() + "\n";
  }
  return out;
}

int64_t WaitSettled(const std::string& db_url, const std::string& group, milliseconds timeout) {
  const auto start = steady_clock::now();
  int64_t last = -1;
  auto last_print = start;
  while (steady_clock::now() - start < timeout) {
    last = Unsettled(db_url, group);
    if (last == 0)
      return std::chrono::duration_cast<milliseconds>(steady_clock::now() - start).count();
    if (steady_clock::now() - last_print > std::chrono::seconds(5)) {
      std::printf("  draining: %lld unsettled\n", static_cast<long long>(last));
      std::fflush(stdout);
      last_print = steady_clock::now();
    }
    std::this_thread::sleep_for(milliseconds(250));
  }
  return -1;
}

void Check(const CheckOptions& o, History* h) {
  try {
    pqxx::connection c(o.db_url);
    pqxx::read_transaction tx(c);
    h->committed = Count(tx, "SELECT count(*) FROM robust.business");
    h->applied = CountParam(
        tx, "SELECT count(DISTINCT message_id) FROM robust.effects WHERE consumer_group = $1",
        o.group);
    h->lost = CountParam(tx, kUnsettledHealthy, o.group);
    h->phantom =
        Count(tx,
              "SELECT count(DISTINCT e.message_id) FROM robust.effects e WHERE NOT "
              "EXISTS (SELECT 1 FROM robust.business b WHERE b.message_id = e.message_id)");
    h->aborted_read = tx.exec_params(
                            "SELECT count(DISTINCT e.message_id) FROM robust.effects e "
                            "WHERE e.message_id = ANY($1::uuid[])",
                            pg::TextArrayLiteral(o.aborted_ids))[0][0]
                          .as<int64_t>();
    h->applied_twice = CountParam(tx,
                                  "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n "
                                  "FROM robust.effects WHERE consumer_group = $1 "
                                  "GROUP BY message_id) x",
                                  o.group);
    h->order_violations =
        CountParam(tx,
                   "SELECT count(*) FROM (SELECT seq, lag(seq) OVER (PARTITION BY key ORDER BY "
                   "apply_seq) AS prev FROM robust.effects WHERE consumer_group = $1) x "
                   "WHERE seq <= prev",
                   o.group);
    h->offset_regressions = CountParam(
        tx,
        "SELECT count(*) FROM robust.offset_audit WHERE consumer_group = $1 AND new_offset < "
        "old_offset",
        o.group);
    h->poison = Count(tx, "SELECT count(*) FROM robust.business WHERE poison");
    h->poison_dead_lettered = h->poison - CountParam(tx, kUnsettledPoison, o.group);
    h->unexpected_dead_letters = CountParam(tx,
                                            "SELECT count(*) FROM converge.dead_letters d "
                                            "WHERE d.origin = 'consumer' AND d.consumer_group = "
                                            "$1 AND NOT EXISTS (SELECT 1 FROM robust.business b "
                                            "WHERE b.poison AND b.message_id = d.message_id)",
                                            o.group);
    h->relay_dead_letters =
        Count(tx, "SELECT count(*) FROM converge.dead_letters WHERE origin = 'relay'");
    h->parked = Count(tx,
                      "SELECT count(*) FROM converge.outbox o JOIN converge.outbox_blocked_keys k "
                      "ON k.topic = o.topic AND k.key = o.key AND k.parked");
  } catch (const std::exception& e) {
    h->failures.push_back(std::string("checker could not read PostgreSQL: ") + e.what());
    return;
  }
  if (!o.brokers.empty()) {
    auto records = broker::ReadAll(o.brokers, o.topic, milliseconds(60000));
    if (!records.ok()) {
      h->failures.push_back("checker could not read the topic: " + records.status().ToString());
    } else {
      std::set<std::string> ids;
      h->broker_records = static_cast<int64_t>(records->size());
      h->broker_duplicates = 0;
      for (const auto& r : *records)
        for (const auto& [k, v] : r.headers)
          if (k == "ce_id" && !ids.insert(v).second) ++h->broker_duplicates;
    }
  }
  auto fail_if = [h](bool bad, const std::string& what) {
    if (bad) h->failures.push_back(what);
  };
  fail_if(h->lost > 0, std::to_string(h->lost) + " committed messages lost (never applied)");
  fail_if(h->phantom > 0, std::to_string(h->phantom) + " phantom effects (never committed)");
  fail_if(h->aborted_read > 0,
          std::to_string(h->aborted_read) + " effects of rolled-back transactions");
  fail_if(h->applied_twice > 0, std::to_string(h->applied_twice) + " effects applied twice");
  fail_if(h->order_violations > 0,
          std::to_string(h->order_violations) + " per-key order violations");
  fail_if(h->offset_regressions > 0,
          std::to_string(h->offset_regressions) + " stored consumer offsets went backwards");
  fail_if(
      h->poison_dead_lettered != h->poison,
      std::to_string(h->poison - h->poison_dead_lettered) + " poison messages not dead-lettered");
  fail_if(h->unexpected_dead_letters > 0,
          std::to_string(h->unexpected_dead_letters) + " healthy messages dead-lettered");
  fail_if(!o.relay_dead_letters_expected && h->relay_dead_letters > 0,
          std::to_string(h->relay_dead_letters) + " relay dead letters");
  fail_if(!o.relay_dead_letters_expected && h->parked > 0,
          std::to_string(h->parked) + " messages parked behind a dead letter");
  fail_if(h->applied < h->liveness_floor, "liveness floor: " + std::to_string(h->applied) +
                                              " applied < " + std::to_string(h->liveness_floor));
  fail_if(h->unseen != 0, std::to_string(h->unseen) + " unseen after heal-and-drain");
}

// ---------------------------------------------------------------------------------------------
// Results

std::string ResultsDir() {
  const char* v = std::getenv("CONVERGE_ROBUSTNESS_RESULTS");
  return v != nullptr && *v != '\0' ? v : CONVERGE_ROBUSTNESS_RESULTS_DEFAULT;
}

void WriteResults(const History& h) {
  std::ostringstream out;
  out << "scenario=" << h.scenario << "\n"
      << "passed=" << (h.passed() ? "true" : "false") << "\n"
      << "seed=" << h.seed << "\n"
      << "faults=" << h.faults << "\n"
      << "committed=" << h.committed << "\n"
      << "applied=" << h.applied << "\n"
      << "lost=" << h.lost << "\n"
      << "phantom=" << h.phantom << "\n"
      << "aborted_read=" << h.aborted_read << "\n"
      << "applied_twice=" << h.applied_twice << "\n"
      << "order_violations=" << h.order_violations << "\n"
      << "offset_regressions=" << h.offset_regressions << "\n"
      << "poison=" << h.poison << "\n"
      << "poison_dead_lettered=" << h.poison_dead_lettered << "\n"
      << "unexpected_dead_letters=" << h.unexpected_dead_letters << "\n"
      << "relay_dead_letters=" << h.relay_dead_letters << "\n"
      << "parked=" << h.parked << "\n"
      << "broker_records=" << h.broker_records << "\n"
      << "broker_duplicates=" << h.broker_duplicates << "\n"
      << "unseen=" << h.unseen << "\n"
      << "recovery_ms=" << h.recovery_ms << "\n"
      << "liveness_floor=" << h.liveness_floor << "\n"
      << "duration_s=" << static_cast<int64_t>(h.duration_s) << "\n";
  for (const auto& [k, v] : h.extra) out << k << "=" << v << "\n";
  for (size_t i = 0; i < h.failures.size(); ++i)
    out << "failure." << i << "=" << h.failures[i] << "\n";
  std::error_code ec;
  std::filesystem::create_directories(ResultsDir(), ec);
  const std::string path = ResultsDir() + "/" + h.scenario + ".result";
  std::ofstream(path) << out.str();
  std::printf("---- results (%s)\n%s----\n", path.c_str(), out.str().c_str());
  std::fflush(stdout);
}

// ---------------------------------------------------------------------------------------------
// Processes

namespace {
std::string LogPath(const Endpoints& e, const std::string& name) {
  const std::string dir = ResultsDir() + "/logs";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  return dir + "/" + e.scenario + "-" + name + ".log";
}
}  // namespace

testing::ChildProcess StartRelay(const Endpoints& e, const std::string& name,
                                 const std::map<std::string, std::string>& env,
                                 const std::vector<std::string>& extra_args) {
  std::vector<std::string> args = {
      "--metrics.port=-1", "--relay.instance_id=" + name, "--relay.poll_interval=100ms",
      "--relay.lease_ttl=6s", "--relay.lease_renew_interval=1s", "--relay.takeover_grace=500ms",
      "--relay.publish_timeout=2500ms", "--kafka.message.timeout.ms=1500",
      "--relay.retry.initial=100ms", "--relay.retry.max=1s", "--relay.breaker.initial=200ms",
      "--relay.breaker.max=1s",
      // CONVERGE_ROBUST_LOG_LEVEL=info|debug for a closer look at a replayed run.
      "--log.level=" + std::string(std::getenv("CONVERGE_ROBUST_LOG_LEVEL") != nullptr
                                       ? std::getenv("CONVERGE_ROBUST_LOG_LEVEL")
                                       : "warn")};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  std::map<std::string, std::string> full = {{"CONVERGE_PG_URL", e.db_url},
                                             {"CONVERGE_KAFKA_BROKERS", e.brokers},
                                             {"CONVERGE_FAILPOINTS", ""}};
  for (const auto& [k, v] : env) full[k] = v;
  testing::ChildProcess p;
  if (!p.Start(testing::BinDir() + "/converge-relay", args, full, LogPath(e, name)))
    std::fprintf(stderr, "cannot start converge-relay\n");
  return p;
}

testing::ChildProcess StartConsumer(const Endpoints& e, const std::string& name,
                                    const std::map<std::string, std::string>& env,
                                    const std::vector<std::string>& extra_args) {
  std::vector<std::string> args = {"--db",  e.db_url,  "--brokers", e.brokers,  "--topic",
                                   e.topic, "--group", e.group,     "--member", name};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  std::map<std::string, std::string> full = {{"CONVERGE_FAILPOINTS", ""}};
  for (const auto& [k, v] : env) full[k] = v;
  testing::ChildProcess p;
  if (!p.Start(testing::BinDir() + "/converge-test-consumer", args, full, LogPath(e, name)))
    std::fprintf(stderr, "cannot start converge-test-consumer\n");
  return p;
}

// ---------------------------------------------------------------------------------------------
// Network partitions (nftables)

namespace {
std::atomic<int> g_partition_counter{0};
constexpr const char* kTablePrefix = "converge_robust_";
}  // namespace

NetPartition::NetPartition()
    : table_(std::string(kTablePrefix) + std::to_string(::getpid()) + "_" +
             std::to_string(g_partition_counter.fetch_add(1))) {}

NetPartition::~NetPartition() { Heal(); }

bool NetPartition::Run(const std::string& script) {
  const std::string dir = std::filesystem::temp_directory_path().string();
  const std::string rules = dir + "/" + table_ + ".nft";
  const std::string err = dir + "/" + table_ + ".err";
  std::ofstream(rules) << script;
  const std::string cmd = "nft -f " + rules + " 2>" + err;
  const int rc = std::system(cmd.c_str());
  std::ifstream in(err);
  std::stringstream text;
  text << in.rdbuf();
  std::filesystem::remove(rules);
  std::filesystem::remove(err);
  if (rc != 0) {
    error_ = "nft failed (rc " + std::to_string(rc) + "): " + text.str();
    return false;
  }
  return true;
}

bool NetPartition::Block(const std::vector<int>& ports, Mode mode, const std::string& address) {
  if (ports.empty()) {
    error_ = "no ports to block";
    return false;
  }
  std::string set = "{ ";
  for (size_t i = 0; i < ports.size(); ++i) set += (i ? ", " : "") + std::to_string(ports[i]);
  set += " }";
  const std::string verdict = mode == Mode::kDrop ? "drop" : "reject with tcp reset";
  const std::string to = address.empty() ? "" : "ip daddr " + address + " ";
  const std::string from = address.empty() ? "" : "ip saddr " + address + " ";
  // Re-creating the table replaces an earlier Block() atomically.
  std::string script = blocked_ ? "delete table inet " + table_ + "\n" : "";
  // The RSTs that `reject` sends back pass the same hook and would match the other rule:
  // without the accept they are dropped and a "reset" partition becomes a blackhole.
  const std::string pass_resets =
      mode == Mode::kReset ? "    iif \"lo\" tcp flags & rst == rst accept\n" : "";
  script += "table inet " + table_ + " {\n  chain input {\n" +
            "    type filter hook input priority -10; policy accept;\n" + pass_resets +
            "    iif \"lo\" " + to + "tcp dport " + set + " " + verdict + "\n" + "    iif \"lo\" " +
            from + "tcp sport " + set + " " + verdict + "\n  }\n}\n";
  if (!Run(script)) return false;
  blocked_ = true;
  return true;
}

bool NetPartition::Heal() {
  if (!blocked_) return true;
  if (!Run("delete table inet " + table_ + "\n")) return false;
  blocked_ = false;
  return true;
}

int NetPartition::DeleteStaleTables() {
  FILE* p = ::popen("nft list tables 2>/dev/null", "r");
  if (p == nullptr) return 0;
  std::vector<std::string> stale;
  char line[512];
  while (std::fgets(line, sizeof(line), p) != nullptr) {
    std::istringstream words(line);
    std::string word, family, name;
    words >> word >> family >> name;
    if (word != "table" || name.rfind(kTablePrefix, 0) != 0) continue;
    const std::string rest = name.substr(std::string(kTablePrefix).size());
    const long pid = std::strtol(rest.c_str(), nullptr, 10);
    if (pid > 0 && ::kill(static_cast<pid_t>(pid), 0) == 0) continue;  // its owner still runs
    stale.push_back(family + " " + name);
  }
  ::pclose(p);
  for (const auto& t : stale) {
    const std::string cmd = "nft delete table " + t + " 2>/dev/null";
    if (std::system(cmd.c_str()) == 0) std::printf("deleted stale nftables table %s\n", t.c_str());
  }
  return static_cast<int>(stale.size());
}

std::vector<int> PortsOf(const std::string& bootstrap_servers) {
  std::vector<int> ports;
  std::istringstream in(bootstrap_servers);
  std::string hostport;
  while (std::getline(in, hostport, ',')) {
    const auto colon = hostport.rfind(':');
    if (colon == std::string::npos) continue;
    ports.push_back(std::atoi(hostport.c_str() + colon + 1));
  }
  return ports;
}

FaultLog::FaultLog() : start_(steady_clock::now()) {}

double FaultLog::elapsed_s() const {
  return std::chrono::duration<double>(steady_clock::now() - start_).count();
}

void FaultLog::Add(const std::string& what) {
  char stamp[32];
  std::snprintf(stamp, sizeof(stamp), "t=%.1fs ", elapsed_s());
  entries_.push_back(stamp + what);
  std::printf("  fault %zu: %s\n", entries_.size(), entries_.back().c_str());
  std::fflush(stdout);
}

void FaultLog::CopyTo(History* h) const {
  h->faults = count();
  for (size_t i = 0; i < entries_.size(); ++i) {
    char key[32];
    std::snprintf(key, sizeof(key), "fault.%03zu", i + 1);
    h->extra[key] = entries_[i];
  }
}

}  // namespace converge::robustness
