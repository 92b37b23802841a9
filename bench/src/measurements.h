// The measurements converge-bench runs. Each returns plain numbers; bench_main.cc puts them
// side by side with their baselines. Every measurement uses the bench database and the
// services named by the environment (scripts/services.sh).
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "bench_util.h"

namespace converge::bench {

// ---- PostgreSQL ceilings (plain SQL, no Converge code) ----

// The relay's claim shape (outbox_store.cc: the claim SELECT over every slot, blocked-key
// check, ORDER BY id LIMIT batch) followed by one batched DELETE ... WHERE id = ANY($1), each
// in its own transaction, on one connection, with no broker. Rows per second.
double ClaimDeleteCeiling(const BenchDatabase& db, long rows, int batch);

struct ConsumerCeilings {
  double batched_rows_per_s = 0;  // `batch` messages per commit
  double single_rows_per_s = 0;   // one message per commit (the single-row commit rate)
};
// The consumer's transaction shape in plain SQL: per message an inbox INSERT (sha256 of the
// payload computed by the server, as the runtime does) and a business INSERT into
// bench_effects, then the offset UPDATE, then COMMIT.
ConsumerCeilings MeasureConsumerCeilings(const BenchDatabase& db, long batched_rows,
                                         long single_rows, int batch);

struct WriterCeilings {
  double insert_commits_per_s = 0;  // INSERT; COMMIT
  double notify_commits_per_s = 0;  // INSERT; pg_notify; COMMIT (what converge.enqueue does)
};
// `connections` concurrent writers, one single-row transaction at a time each, for `seconds`
// per variant: shows what the NOTIFY in converge.enqueue costs writers.
WriterCeilings MeasureWriterCeilings(const BenchDatabase& db, int connections, double seconds);

// ---- relay ----

struct RelayResult {
  double rows_per_s = 0;         // from the fill's commit to an empty outbox (after a warm-up)
  double rss_mb = 0;             // largest VmRSS seen while draining (first relay)
  double drain_cpu_percent = 0;  // first relay's utime+stime while draining, % of one core
  double hwm_mb = 0;             // VmHWM at the end of the drain (first relay)
  double idle_cpu_percent = -1;  // utime+stime over idle_seconds with an empty outbox, % of a core
};
// Starts `relays` converge-relay processes (with `extra_args`, e.g. --relay.target=mqtt), waits
// until they share the 256 slots, has them publish 1,000 warm-up rows (not timed: connections,
// topic metadata), fills the outbox with `rows` rows in one transaction and times the drain.
// Then, when idle_seconds > 0, measures the first relay's CPU use with nothing to do.
RelayResult MeasureRelay(const BenchDatabase& db, const std::string& relay_bin,
                         const std::string& brokers, const std::string& topic, long rows,
                         int relays, double idle_seconds, const std::string& log_path,
                         const std::vector<std::string>& extra_args = {});

// converge::broker's Kafka publisher alone (what the relay uses), PublishBatch calls of
// `batch` messages, no database: the broker side of the relay's cycle. Rows per second.
double PublisherAlone(const std::string& brokers, const std::string& topic, long rows, int batch);

// The relay a user writes without Converge: one row per transaction (SELECT ... LIMIT 1 FOR
// UPDATE SKIP LOCKED, produce with librdkafka, wait for its delivery report, DELETE, COMMIT).
// Runs until `rows` rows are published or `max_seconds` passed. Rows per second.
double NaiveRelay(const BenchDatabase& db, const std::string& brokers, const std::string& topic,
                  long rows, double max_seconds);

// ---- consumer ----

// fetch.wait.max.ms of the consumers' Kafka source; 0 = librdkafka's default (500 ms).
void SetConsumerFetchWait(int ms);

// Publishes `rows` CloudEvents records to `topic` first (not timed), then runs
// converge::consumer::Consumer (Kafka source, handler = one INSERT into bench_effects) with
// max_batch_records = `batch` and times from the first committed batch to the last record.
double ConsumerThroughput(const BenchDatabase& db, const std::string& brokers,
                          const std::string& topic, long rows, int batch);

struct LatencyResult {
  double offered_per_s = 0;
  double achieved_per_s = 0;  // what the writers committed
  long messages = 0;
  int rows_per_transaction = 1;
  // Messages not applied grace_seconds (max(10 s, 2 × the run)) after the writers' schedule
  // ended (the path is saturated at this rate);
  // they count with their wait so far, so the percentiles are lower bounds then.
  long unapplied = 0;
  double grace_seconds = 0;
  double p50_ms = 0, p99_ms = 0, p999_ms = 0, max_ms = 0;
  // Where the time goes, from wall-clock stamps (the Kafka timestamp has 1 ms resolution).
  struct Stage {
    std::string name;
    double p50_ms = 0, p99_ms = 0;
  };
  std::vector<Stage> stages;
  // Outbox insert → broker confirmation, from the relay's own histogram
  // (converge_relay_commit_to_confirm_seconds, buckets 1, 2, 4 ... ms): the upper bound of the
  // bucket holding the 50th / 99th percentile; empty when not scraped.
  std::optional<double> confirm_p50_le_ms, confirm_p99_le_ms;
};
// Writers commit outbox rows (converge::outbox::EnqueueMany, max(1, rate/200) rows per
// transaction) at `rate` rows per second for `seconds`; one
// converge-relay publishes to Kafka; a Consumer applies them. Latency = the consumer's COMMIT
// returned minus the writer's COMMIT returned (same process, same monotonic clock).
LatencyResult MeasureEndToEnd(const BenchDatabase& db, const std::string& relay_bin,
                              const std::string& brokers, const std::string& topic, double rate,
                              double seconds, const std::string& log_path);

// ---- MQTT ----

struct PahoResult {
  double windowed_per_s = 0;  // up to `window` QoS 1 publishes in flight
  double sync_per_s = 0;      // publish, wait for PUBACK, next
};
// A plain Paho C++ QoS 1 publisher against `url` (mqtt://host:port), `messages` each way.
PahoResult PahoQos1(const std::string& url, const std::string& topic, long messages, int window);

}  // namespace converge::bench
