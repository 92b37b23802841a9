// The consumer runtime: receives messages from a MessageSource and applies each message's effect
// exactly once per consumer group, by committing the dedupe row, the handler's writes and the
// broker position in ONE local PostgreSQL transaction.
//
//   converge::consumer::Consumer consumer(options, std::move(source));
//   consumer.Handle("order.placed", [](const converge::Message& m, Context& ctx) {
//     ctx.tx().exec_params("UPDATE stock SET n = n - 1 WHERE sku = $1", m.subject);
//     return ctx.Enqueue({.topic = "shipping", .key = m.subject, .type = "ship.requested",
//                         .payload = m.payload}).status();
//   });
//   CONVERGE_RETURN_IF_ERROR(consumer.Start());
//   ...
//   consumer.Stop();   // finishes the current transaction, then closes the source
//
// Handler results: OK commits the handler's writes with the message. A retriable Status
// (kUnavailable, kAborted, kDeadlineExceeded) or a retriable exception (serialization failure,
// deadlock) undoes only this message's writes and retries it after backoff; the
// other messages of the batch are kept. Any other Status or exception dead-letters the message
// at once. After `max_attempts` the message is dead-lettered with its last error. In every
// case the offset moves past the message in the transaction that records the outcome.
//
// pqxx appears in this header on purpose: handlers write SQL through Context::tx().
//
// Thread safety: Handle(), SetDecoder() before Start() only. Start()/Stop()/stats() may be
// called from any thread; handlers run on the consumer's own thread, one at a time.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <pqxx/transaction_base>

#include "converge/broker/source.h"
#include "converge/common/backoff.h"
#include "converge/common/clock.h"
#include "converge/common/message.h"
#include "converge/common/status.h"
#include "converge/outbox/outbox.h"

namespace converge::metrics {
class Registry;
}  // namespace converge::metrics

namespace converge::consumer {

// What to do when a message's per-key sequence (Message::sequence for its topic and subject)
// is not last_seq + 1. Messages without a subject or with sequence 0 are not checked.
enum class SequencePolicy {
  // Apply every message; gaps and stale sequences are only counted (stats) and logged.
  kApply,
  // The default. A stale message (sequence <= the last applied one, under a different id) is
  // skipped: recorded in the inbox, its offset committed, the handler not run, counted in
  // stale_skipped. Gaps are applied and counted. See README.md "Sequence policy" for why.
  kSkipStale,
  // A gap holds the partition: the message is retried with backoff (max_attempts times), then
  // applied with a warning (the missing message is presumed lost). Stale messages are skipped
  // as in kSkipStale.
  kHold,
};

// A message whose type has no handler.
enum class UnknownTypePolicy {
  // Dead-letter it (error_code "unknown_type"). The default: a missing handler is a deployment
  // mistake, and the message stays available for replay.
  kDeadLetter,
  // Record it in the inbox and commit its offset without running anything.
  kSkip,
};

// What to do when a partition's stored offset is ahead of the broker's log (the topic was
// deleted and recreated, or truncated): the broker restarts the partition at its earliest
// offset and every record would look "committed already" and be dropped in silence.
enum class OffsetAheadPolicy {
  // The default: stop consuming that partition (its records are dropped, never acked), log an
  // error naming group/topic/partition/stored offset/high watermark, count it
  // (offsets_ahead, partitions_halted). An operator resets the stored offset (README
  // "Stored offset ahead of the broker") and restarts the consumer.
  kHalt,
  // Rewind the stored offset to 0 (the broker's earliest) and consume the partition again; the
  // inbox skips what was applied before, within the dedupe window.
  kResetToEarliest,
};

struct ConsumerOptions {
  // The consumer group: the dedupe scope (inbox key is (group, message id)) and the owner of
  // the stored offsets. Required.
  std::string group;
  // Topics to subscribe to. Required, at least one.
  std::vector<std::string> topics;
  // PostgreSQL URL of the database that holds the converge schema and the handler's tables.
  // Required.
  std::string database_url;
  // This process incarnation's identity in converge.consumer_offsets.owner. Empty: generated as
  // "<hostname>:<pid>:<uuidv7>", unique per start.
  std::string member_id;
  // Upper bound on the messages committed in one transaction.
  size_t max_batch_records = 500;
  // Upper bound on the summed payload bytes of one transaction (a single larger message still
  // goes alone).
  size_t max_batch_bytes = 4 << 20;
  // How long the runtime keeps adding records that are already available to a batch. A quiet
  // stream does not wait: as soon as a non-blocking poll finds nothing more, the batch runs.
  std::chrono::milliseconds linger{5};
  // How long one Poll() waits for the first record when nothing is buffered.
  std::chrono::milliseconds poll_timeout{100};
  // Attempts of one message (retriable handler failures, aborted transactions) before it is
  // dead-lettered. Lost database connections do not count: they are retried without limit.
  // Counts survive restarts, also a crash inside the handler (converge.consumer_attempts,
  // README "Attempts across restarts").
  int max_attempts = 5;
  // Delay before re-running a message whose handler failed with a retriable error.
  BackoffPolicy retry_backoff{std::chrono::milliseconds(100), std::chrono::milliseconds(10000), 2.0,
                              0.5};
  // Delay between reconnect attempts after the database connection was lost.
  BackoffPolicy reconnect_backoff{std::chrono::milliseconds(100), std::chrono::milliseconds(5000),
                                  2.0, 0.5};
  // Upper bound on one handler run; zero: none. The effective bound is the smaller of this and
  // the source's MessageSource::MaxProcessingTime() (MQTT: half the keepalive). The batch
  // transaction runs with SET LOCAL statement_timeout = the bound, and a handler that overran
  // it (statement timeout, or measured time after it returned) is a failed, retriable attempt:
  // rolled back, retried with backoff (capped at half the bound), dead-lettered after
  // max_attempts with "handler exceeded <N> ms".
  std::chrono::milliseconds handler_timeout{0};
  // See OffsetAheadPolicy.
  OffsetAheadPolicy on_offset_ahead = OffsetAheadPolicy::kHalt;
  // See SequencePolicy.
  SequencePolicy sequence_policy = SequencePolicy::kSkipStale;
  // See UnknownTypePolicy.
  UnknownTypePolicy unknown_type = UnknownTypePolicy::kDeadLetter;
  // The dedupe window: inbox rows older than this (database clock) and below the committed
  // offset are pruned. A duplicate that arrives later than this is processed again. 7 days,
  // like NServiceBus; a relay's redelivery arrives within seconds to minutes.
  std::chrono::seconds dedupe_window{std::chrono::hours(24 * 7)};
  // How often pruning runs; zero disables it.
  std::chrono::milliseconds prune_interval{60000};
  // Rows deleted per prune statement (short statements keep lock and WAL bursts small).
  int prune_batch = 1000;
  // PostgreSQL idle_in_transaction_session_timeout for the runtime's session. A member paused
  // inside a transaction (SIGSTOP, a stalled VM) keeps its offset rows locked; the server ends
  // its session after this long so the partition's new owner can claim it. Must exceed the
  // longest non-SQL pause inside a handler. Zero: the server default.
  std::chrono::milliseconds transaction_idle_timeout{30000};

  // Names the first bad field: "consumer.group must not be empty".
  Status Validate() const;
};

// Counters since Start(). RegisterMetrics() exposes each as a converge_consumer_* series.
struct ConsumerStats {
  uint64_t consumed = 0;            // records settled (every outcome below)
  uint64_t applied = 0;             // handler ran and committed
  uint64_t duplicates_skipped = 0;  // same id, same payload: handler not run
  uint64_t conflicts = 0;           // same id, different payload: dead-lettered
  uint64_t dead_letters = 0;        // every dead letter (conflicts included)
  uint64_t unknown_type_skipped = 0;
  uint64_t stale_skipped = 0;  // SequencePolicy skips
  uint64_t sequence_gaps = 0;
  uint64_t retries = 0;               // handler retriable failures
  uint64_t transactions = 0;          // committed batch transactions
  uint64_t transaction_failures = 0;  // batch transactions rolled back (re-run)
  uint64_t fenced = 0;                // partitions found taken by another member
  uint64_t pruned = 0;                // inbox rows deleted
  uint64_t offsets_ahead = 0;         // stored offset found ahead of the broker's log
  uint64_t partitions_halted = 0;     // owned partitions not consumed (OffsetAheadPolicy::kHalt)
  uint64_t last_batch_size = 0;
  uint64_t max_batch_size = 0;
  double handler_seconds_total = 0;  // summed handler latency
  int64_t lag = 0;                   // buffered, not yet committed records
};

class Consumer;

// What a handler gets besides the message. Valid only during the handler call.
class Context {
 public:
  // The transaction that commits with the dedupe row and the offset. A failing statement (or a
  // failed Status) undoes only this message's writes: the runtime then re-runs the batch with a
  // SAVEPOINT per message (README "Batching"), so other handlers of the batch may run twice.
  // Use exec/exec_params/quote on it; never commit or abort it, and do not issue
  // COMMIT/ROLLBACK/SAVEPOINT through it.
  pqxx::transaction_base& tx() { return tx_; }
  // The record as received (topic, partition, offset, headers).
  const broker::ReceivedRecord& record() const { return record_; }
  // 1 on the first attempt of this message.
  int attempt() const { return attempt_; }

  // An outbound message for Enqueue (a chained step): the same struct and the same validation
  // as converge::outbox::Enqueue.
  using Outbound = outbox::OutboxMessage;
  using Enqueued = outbox::Enqueued;
  // Writes an outbox row in this transaction (converge::outbox::Enqueue): it is published only
  // if this message's effect commits. An empty `traceparent` propagates the incoming message's.
  // Errors: kInvalidArgument names the field, kAlreadyExists a taken message_id; the handler
  // should return the error (the message is then dead-lettered). A rejected enqueue never
  // aborts the handler's other writes: it runs inside its own savepoint.
  Result<Enqueued> Enqueue(const Outbound& message);

 private:
  friend class Consumer;
  Context(pqxx::transaction_base& tx, const broker::ReceivedRecord& record, const Message& message,
          int attempt)
      : tx_(tx), record_(record), message_(message), attempt_(attempt) {}
  pqxx::transaction_base& tx_;
  const broker::ReceivedRecord& record_;
  const Message& message_;
  int attempt_;
};

using Handler = std::function<Status(const Message&, Context&)>;
// Turns a received record into a Message. kInvalidArgument dead-letters the record
// (error_code "decode_failed").
using Decoder = std::function<Result<Message>(const broker::ReceivedRecord&)>;

// The default decoder: CloudEvents Kafka binding (binary and structured mode).
Result<Message> DecodeRecord(const broker::ReceivedRecord& record);

class Consumer {
 public:
  Consumer(ConsumerOptions options, std::unique_ptr<broker::MessageSource> source,
           const Clock& clock = SystemClock::Instance());
  ~Consumer();  // Stop()
  Consumer(const Consumer&) = delete;
  Consumer& operator=(const Consumer&) = delete;

  // Registers the handler for a CloudEvents type. Before Start()/Init() only.
  void Handle(std::string type, Handler handler);
  // Replaces DecodeRecord (e.g. for MQTT sources). Before Start()/Init() only.
  void SetDecoder(Decoder decoder);

  // Validates the options, connects to PostgreSQL, subscribes and starts the consumer thread.
  Status Start();
  // Asks the thread to stop, waits for the current transaction to finish, closes the source
  // (which revokes the partitions). Idempotent.
  void Stop();

  // For tests and custom loops, instead of Start(): Init() then RunOnce() repeatedly on one
  // thread. RunOnce polls, runs at most one batch transaction and returns. Errors only for
  // conditions that need a person (schema missing); transient ones are retried inside.
  Status Init();
  Status RunOnce();
  // Closes the source (RunOnce loops only; Stop() does this itself).
  void Close();
  // Runs inbox pruning now (it also runs every prune_interval); returns the rows deleted.
  uint64_t PruneNow();

  // Exposes this consumer's converge_consumer_* series (labelled by group) in `registry`:
  // counters for every ConsumerStats field, handler latency and batch size histograms, and per
  // partition lag (broker high watermark minus the stored offset, Kafka only). Call before
  // Start()/Init(); the registry must outlive the consumer (whose destructor removes its
  // callback series), and a consumer registers once.
  // Serve the registry with converge::MetricsServer (common/http_server.h).
  Status RegisterMetrics(metrics::Registry& registry);

  ConsumerStats stats() const;
  const std::string& member_id() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace converge::consumer
