// The outbox relay engine: turns committed outbox rows into broker publishes.
//
// Guarantees (docs/guarantees.md states them with their limits):
//  * At least once: a row is deleted only in the transaction that follows the broker's
//    confirmation. A crash anywhere before that commit republishes the row (a duplicate that
//    consumers dedupe by message id); nothing is lost.
//  * No visibility gap: rows are claimed by state (present in the table), never by an id
//    cursor, so a transaction that commits late with a low id is still published.
//  * Per-key order: within (topic, key), a row is handed to the broker only after every
//    earlier row of that key was confirmed (strict mode, the default). A failed row blocks its
//    key (retry backoff) or parks it (dead letter) in the database, so the order also holds
//    across restarts and when another relay takes the key's slot over.
//  * Several relays share an outbox through leased hash slots (converge.relay_slots); a relay
//    acts on a slot only while its lease is valid, and hands rows to the broker only while the
//    lease outlives the broker's delivery timeout.
//  * Targets are bulkheads: one relay can publish to several brokers (Kafka and MQTT), each
//    target with its own topic filter, claim query, PostgreSQL connection, publishing thread,
//    retry backoff and circuit breaker, so a target that is down or hung never delays another.
//    Every outbox topic maps to exactly one target, so per-key order is per target.
//
// Thread safety: Run() blocks on the calling thread; Stop() may be called from any thread (and
// from a signal-handling thread) and makes Run() return after the current batch is finished.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "converge/broker/publisher.h"
#include "converge/common/backoff.h"
#include "converge/common/clock.h"
#include "converge/common/status.h"

namespace converge::outbox {

struct RelayOptions {
  // PostgreSQL URL of the database that holds the converge schema.
  std::string database_url;
  // Identity of this relay process in converge.relay_instances; empty = host:pid:uuid.
  std::string instance_id;
  // Rows claimed per batch.
  int batch_size = 1000;
  // Poll interval when no notification arrives (the LISTEN/NOTIFY fallback).
  std::chrono::milliseconds poll_interval{500};
  // How long a batch may wait for the broker before unanswered rows count as failed (and are
  // retried). Must be longer than the producer's delivery timeout (kafka message.timeout.ms).
  std::chrono::milliseconds publish_timeout{15000};
  // The broker's own delivery timeout; leases must outlive it (see lease_ttl).
  std::chrono::milliseconds broker_delivery_timeout{10000};
  // Slot lease length (database clock) and renewal period. A dead relay's slots move to the
  // others after lease_ttl + takeover_grace.
  std::chrono::milliseconds lease_ttl{30000};
  std::chrono::milliseconds lease_renew_interval{5000};
  std::chrono::milliseconds takeover_grace{1000};
  // Strict per-key order: one in-flight row per key. false = trust the producer's per-partition
  // ordering (idempotent Kafka producer on a real cluster) and send a key's rows together.
  bool strict_key_order = true;
  // Retry backoff for a row that failed (per key), with jitter.
  BackoffPolicy retry{std::chrono::milliseconds(200), std::chrono::milliseconds(60000), 2.0, 0.5};
  // Circuit breaker: after this many consecutive batches in which nothing succeeded, stop
  // claiming and probe the broker with backoff (breaker_backoff) until it answers.
  int breaker_failures = 3;
  BackoffPolicy breaker_backoff{std::chrono::milliseconds(1000), std::chrono::milliseconds(30000),
                                2.0, 0.5};
  // Publish rate limit in messages per second, per target; 0 = unlimited.
  double rate_limit = 0;
  // Retriable failures before a row is dead-lettered; 0 = retry forever (the default: a broker
  // outage must not empty the outbox into the dead-letter table).
  int max_attempts = 0;

  // Names the first bad field, e.g. "relay.batch_size must be in [1, 100000]".
  Status Validate() const;
};

// Counters a relay keeps; exported as Prometheus metrics by the executable.
struct RelayStats {
  std::atomic<uint64_t> published{0};      // rows confirmed and deleted
  std::atomic<uint64_t> failed{0};         // publish attempts that failed (retriable)
  std::atomic<uint64_t> retried{0};        // rows published again after a failure
  std::atomic<uint64_t> dead_lettered{0};  // rows moved to converge.dead_letters
  std::atomic<uint64_t> batches{0};        // batches claimed
  std::atomic<uint64_t> fenced{0};         // rows not deleted because the lease was lost
  std::atomic<int64_t> owned_slots{0};
  std::atomic<int64_t> parked_keys{0};
  std::atomic<int64_t> oldest_age_ms{0};  // age of the oldest unpublished row
  std::atomic<int64_t> breaker_open{0};   // targets whose circuit breaker is open
  std::atomic<int64_t> ready{0};          // 1 once connected and holding leases
};

// Observes individual publishes (for the latency histogram and the batch-size histogram).
class RelayObserver {
 public:
  virtual ~RelayObserver() = default;
  virtual void OnBatch(size_t rows) = 0;
  // Time from the row's insert (database clock) to the broker's confirmation.
  virtual void OnConfirmed(std::chrono::milliseconds commit_to_confirm) = 0;
  // Called once per loop iteration, busy or idle (a liveness heartbeat).
  virtual void OnCycle() {}
};

// One broker a relay publishes to, and the outbox topics it takes.
struct RelayTarget {
  std::unique_ptr<broker::Publisher> publisher;
  // Outbox topic filters in MQTT syntax over the outbox topic name ('+' one level between '/',
  // '#' as the last level: that level and everything below, e.g. "devices/#"). A topic belongs
  // to the first target (in constructor order) with a matching filter; a target with no filters
  // takes every topic no other target's filters match. At most one target may have none.
  std::vector<std::string> topics;
  // More publishers to the same broker (e.g. further Kafka producers), for Run(): each one
  // takes a batch while the others' batches wait for their confirmations, so up to
  // 1 + more_publishers.size() batches are at the broker at once. Their keys are disjoint
  // (a claim excludes the keys of every batch not yet recorded), so per-key order does not
  // depend on the publishers' ordering between each other. RunOnce() uses `publisher` only.
  std::vector<std::unique_ptr<broker::Publisher>> more_publishers;
};

// The PostgreSQL regular expression (anchored) for an outbox topic filter; kInvalidArgument
// names a misplaced wildcard.
Result<std::string> TopicFilterRegex(const std::string& filter);

class Relay {
 public:
  // `publisher` is owned by the relay. `observer` may be null and must outlive the relay.
  Relay(RelayOptions options, std::unique_ptr<broker::Publisher> publisher,
        RelayObserver* observer = nullptr, Clock* clock = &SystemClock::Instance());
  // Several targets (bulkheads). Run() gives each its own thread; RunOnce() runs one cycle of
  // each target in turn on the calling thread. An invalid target list makes Run()/RunOnce()
  // return kInvalidArgument.
  Relay(RelayOptions options, std::vector<RelayTarget> targets, RelayObserver* observer = nullptr,
        Clock* clock = &SystemClock::Instance());
  ~Relay();
  Relay(const Relay&) = delete;
  Relay& operator=(const Relay&) = delete;

  // Runs until Stop(): connects (retrying), registers, leases slots, publishes. On return the
  // leases are released and the instance is deregistered. Returns the reason it stopped
  // abnormally (an invalid configuration), OK after Stop().
  Status Run();

  // Asks Run() to return after finishing the batch in flight. Async-signal-safe.
  void Stop();

  // One claim → publish → complete cycle (for tests). Connects and leases on first use.
  // Returns the number of rows claimed.
  Result<size_t> RunOnce();

  const RelayStats& stats() const;
  // Per target, in constructor order: its publisher's Name() and whether its circuit breaker
  // is open now. Safe from any thread (for metrics).
  std::vector<std::pair<std::string, bool>> TargetBreakers() const;
  const std::string& instance_id() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace converge::outbox
