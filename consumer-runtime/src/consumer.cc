// The consumer runtime's transaction engine. One thread (Start's or the RunOnce caller's) owns
// the source, the connection and all state below; only stats and the stop flag are shared.
//
// One batch = one transaction:
//   1. fence (one statement): SELECT ... FOR UPDATE the offset rows of the batch's partitions,
//      requiring (owner, epoch) to still be ours. A row that is not ours means the partition
//      was taken over: its records are dropped, never acked. The row lock makes a concurrent
//      takeover (Claim) wait for this transaction, which then reads the offset it committed.
//   2. fast path: decode all, insert every inbox row in one statement (duplicates and conflicts
//      come back with it), read the key sequences in one statement, run the handlers back to
//      back, upsert the sequences in one statement. A record that needs its own rollback
//      throws NeedCareful: the transaction is rolled back and the batch re-run carefully,
//      each record inside a SAVEPOINT (ProcessRecord), so the others stay.
//   3. advance every partition's next_offset in one statement (forward only) and COMMIT; then
//      Ack the source.
#include "converge/consumer/consumer.h"

#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <set>
#include <thread>

#include <pqxx/pqxx>

#include "converge/common/envelope.h"
#include "converge/common/failpoint.h"
#include "converge/common/log.h"
#include "converge/common/metrics.h"
#include "converge/common/uuid.h"
#include "converge/schemas/pg.h"
#include "sequence.h"
#include "text.h"

namespace converge::consumer {

using broker::ReceivedRecord;
using broker::TopicPartition;
using SteadyTime = std::chrono::steady_clock::time_point;

// ---- Options ----------------------------------------------------------------------------------

Status ConsumerOptions::Validate() const {
  if (group.empty()) return Status::InvalidArgument("consumer.group must not be empty");
  if (topics.empty())
    return Status::InvalidArgument("consumer.topics must name at least one topic");
  for (const auto& t : topics)
    if (t.empty()) return Status::InvalidArgument("consumer.topics must not contain an empty name");
  if (database_url.empty())
    return Status::InvalidArgument("consumer.database_url must not be empty");
  if (max_batch_records < 1)
    return Status::InvalidArgument("consumer.max_batch_records must be >= 1");
  if (max_batch_bytes < 1) return Status::InvalidArgument("consumer.max_batch_bytes must be >= 1");
  if (linger.count() < 0) return Status::InvalidArgument("consumer.linger must be >= 0");
  if (poll_timeout.count() < 0)
    return Status::InvalidArgument("consumer.poll_timeout must be >= 0");
  if (max_attempts < 1) return Status::InvalidArgument("consumer.max_attempts must be >= 1");
  CONVERGE_RETURN_IF_ERROR(retry_backoff.Validate("consumer.retry_backoff"));
  CONVERGE_RETURN_IF_ERROR(reconnect_backoff.Validate("consumer.reconnect_backoff"));
  if (dedupe_window.count() < 0)
    return Status::InvalidArgument("consumer.dedupe_window must be >= 0");
  if (prune_interval.count() < 0)
    return Status::InvalidArgument("consumer.prune_interval must be >= 0");
  if (prune_batch < 1) return Status::InvalidArgument("consumer.prune_batch must be >= 1");
  if (handler_timeout.count() < 0)
    return Status::InvalidArgument("consumer.handler_timeout must be >= 0");
  if (transaction_idle_timeout.count() < 0)
    return Status::InvalidArgument("consumer.transaction_idle_timeout must be >= 0");
  return Status::Ok();
}

Result<Message> DecodeRecord(const ReceivedRecord& record) {
  std::optional<std::string_view> key;
  if (record.key) key = *record.key;
  return DecodeKafka(record.topic, key, record.headers, record.payload);
}

// ---- SQL --------------------------------------------------------------------------------------

namespace {

// The fence of every partition of a batch in one statement: the offset rows that are still
// ours (owner, epoch), locked until COMMIT.
constexpr const char* kFenceSql =
    "SELECT o.topic, o.partition, o.next_offset FROM converge.consumer_offsets o "
    "JOIN unnest($3::text[], $4::int[], $5::bigint[]) AS f(topic, partition, epoch) "
    "ON o.topic = f.topic AND o.partition = f.partition AND o.epoch = f.epoch "
    "WHERE o.consumer_group = $1 AND o.owner = $2 ORDER BY o.topic, o.partition FOR UPDATE OF o";
// Moves every settled partition of a batch forward in one statement (never backwards).
constexpr const char* kAdvanceSql =
    "UPDATE converge.consumer_offsets o SET next_offset = u.next, updated_at = now() "
    "FROM unnest($3::text[], $4::int[], $5::bigint[], $6::bigint[]) AS u(topic, partition, "
    "epoch, next) WHERE o.consumer_group = $1 AND o.owner = $2 AND o.topic = u.topic "
    "AND o.partition = u.partition AND o.epoch = u.epoch AND o.next_offset <= u.next";
// The dedupe rows of a whole batch in one statement, before any handler runs. Per input row
// (ordinality): its inbox UUID, whether a row with that UUID was inserted by this statement
// (the first copy in input order wins), and for a UUID that was stored before, whether the
// stored hash equals this row's (NULL when inserted). Payloads travel hex-encoded (libpqxx 6
// cannot bind a bytea[]).
constexpr const char* kInboxBatchSql =
    "WITH v AS (SELECT v.ord, converge.message_uuid(v.id) AS mid, "
    "sha256(convert_to(v.type, 'UTF8') || '\\x00'::bytea || decode(v.payload, 'hex')) AS hash, "
    "v.topic, v.partition, v.off FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], "
    "$6::int[], $7::bigint[]) WITH ORDINALITY AS v(id, type, payload, topic, partition, off, "
    "ord)), "
    "ins AS (INSERT INTO converge.inbox (consumer_group, message_id, payload_hash, topic, "
    "partition, \"offset\") SELECT $1, mid, hash, topic, partition, off FROM v ORDER BY ord "
    "ON CONFLICT (consumer_group, message_id) DO NOTHING RETURNING message_id) "
    "SELECT v.ord, v.mid::text, n.message_id IS NOT NULL, CASE WHEN n.message_id IS NULL THEN "
    "(SELECT i.payload_hash = v.hash FROM converge.inbox i WHERE i.consumer_group = $1 "
    "AND i.message_id = v.mid) END FROM v LEFT JOIN ins n ON n.message_id = v.mid ORDER BY v.ord";
// The last applied sequence of every (topic, key) of a batch, locked, in one statement.
constexpr const char* kSeqGetBatchSql =
    "SELECT s.topic, s.key, s.last_seq FROM converge.consumer_key_seq s "
    "JOIN unnest($2::text[], $3::text[]) AS k(topic, key) ON s.topic = k.topic AND s.key = k.key "
    "WHERE s.consumer_group = $1 ORDER BY s.topic, s.key FOR UPDATE OF s";
constexpr const char* kSeqPutBatchSql =
    "INSERT INTO converge.consumer_key_seq AS k (consumer_group, topic, key, last_seq) "
    "SELECT $1, u.topic, u.key, u.seq FROM unnest($2::text[], $3::text[], $4::bigint[]) "
    "AS u(topic, key, seq) ON CONFLICT (consumer_group, topic, key) DO UPDATE "
    "SET last_seq = GREATEST(k.last_seq, excluded.last_seq), updated_at = now()";
constexpr const char* kClaimSql =
    "INSERT INTO converge.consumer_offsets AS o (consumer_group, topic, partition, next_offset, "
    "owner, epoch) VALUES ($1, $2, $3, 0, $4, 1) "
    "ON CONFLICT (consumer_group, topic, partition) DO UPDATE "
    "SET owner = excluded.owner, epoch = o.epoch + 1, updated_at = now() "
    "RETURNING next_offset, epoch";
// One round trip: insert the dedupe row, or report whether the existing one has the same hash.
// The outer SELECT sees the snapshot from before the insert, so `same` is NULL when inserted.
constexpr const char* kInboxSql =
    "WITH h AS (SELECT sha256(convert_to($3, 'UTF8') || '\\x00'::bytea || $4::bytea) AS hash), "
    "ins AS (INSERT INTO converge.inbox (consumer_group, message_id, payload_hash, topic, "
    "partition, \"offset\") SELECT $1, converge.message_uuid($2), h.hash, $5, $6, $7 FROM h "
    "ON CONFLICT (consumer_group, message_id) DO NOTHING RETURNING 1) "
    "SELECT EXISTS (SELECT 1 FROM ins), (SELECT i.payload_hash = h.hash FROM converge.inbox i, h "
    "WHERE i.consumer_group = $1 AND i.message_id = converge.message_uuid($2))";
constexpr const char* kSeqGetSql =
    "SELECT last_seq FROM converge.consumer_key_seq "
    "WHERE consumer_group = $1 AND topic = $2 AND key = $3 FOR UPDATE";
constexpr const char* kSeqPutSql =
    "INSERT INTO converge.consumer_key_seq AS k (consumer_group, topic, key, last_seq) "
    "VALUES ($1, $2, $3, $4) ON CONFLICT (consumer_group, topic, key) DO UPDATE "
    "SET last_seq = GREATEST(k.last_seq, excluded.last_seq), updated_at = now()";
constexpr const char* kDeadLetterSql =
    "INSERT INTO converge.dead_letters (origin, consumer_group, message_id, topic, key, seq, "
    "type, source, payload, headers, content_type, traceparent, created_at, partition, "
    "\"offset\", reason, error_code, attempts) VALUES ('consumer', $1, "
    "converge.message_uuid($2), $3, $4, $5::bigint, $6, $7, $8::bytea, $9::jsonb, $10, $11, "
    "to_timestamp($12::double precision), $13, $14, $15, $16, $17)";
// Attempts that survive a crash (migration 0007, README "Attempts across restarts").
constexpr const char* kAttemptsLoadSql =
    "SELECT \"offset\", attempts, coalesce(batch_end, \"offset\"), coalesce(last_error, '') "
    "FROM converge.consumer_attempts WHERE consumer_group = $1 AND topic = $2 AND partition = $3 "
    "AND \"offset\" >= $4";
constexpr const char* kAttemptsGcSql =
    "DELETE FROM converge.consumer_attempts WHERE consumer_group = $1 AND topic = $2 "
    "AND partition = $3 AND \"offset\" < $4";
// Outside the batch transaction, fenced: counts the attempt about to start, or marks the batch
// about to start ($8 = batch_end, attempts unchanged).
constexpr const char* kAttemptStartSql =
    "INSERT INTO converge.consumer_attempts AS a (consumer_group, topic, partition, \"offset\", "
    "attempts, batch_end, last_error) SELECT $1, $2, $3, $4, $7, $8, $9 "
    "FROM converge.consumer_offsets o WHERE o.consumer_group = $1 AND o.topic = $2 "
    "AND o.partition = $3 AND o.owner = $5 AND o.epoch = $6 "
    "ON CONFLICT (consumer_group, topic, partition, \"offset\") DO UPDATE SET "
    "attempts = a.attempts + excluded.attempts, batch_end = GREATEST(a.batch_end, "
    "excluded.batch_end), last_error = coalesce(excluded.last_error, a.last_error), "
    "updated_at = now()";
// Inside the batch transaction: a finished, failed attempt.
constexpr const char* kAttemptFailedSql =
    "INSERT INTO converge.consumer_attempts AS a (consumer_group, topic, partition, \"offset\", "
    "attempts, last_error) VALUES ($1, $2, $3, $4, $5, $6) "
    "ON CONFLICT (consumer_group, topic, partition, \"offset\") DO UPDATE SET "
    "attempts = excluded.attempts, last_error = excluded.last_error, updated_at = now()";
constexpr const char* kDidNotFinish =
    "the attempt did not finish: the process stopped (crashed or was killed) while the handler "
    "ran";
constexpr const char* kPruneSql =
    "DELETE FROM converge.inbox WHERE ctid = ANY (ARRAY("
    "SELECT ctid FROM converge.inbox WHERE consumer_group = $1 AND topic = $2 AND partition = $3 "
    "AND processed_at < now() - make_interval(secs => $4::double precision) AND \"offset\" < $5 "
    "LIMIT $6))";

enum class Outcome { kApplied, kDuplicate, kConflict, kDeadLettered, kSkipped, kRetryLater };

struct Attempts {
  int count = 0;
  std::string last_error;
};

std::string DefaultMemberId() {
  char host[256] = {0};
  if (gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  return std::string(host) + ":" + std::to_string(getpid()) + ":" + NewUuidV7().ToString();
}

std::string SqlInterval(std::chrono::milliseconds d) { return std::to_string(d.count()) + "ms"; }

// Nullable text parameter: nullptr binds SQL NULL.
const char* OrNull(const std::string& s, bool present) { return present ? s.c_str() : nullptr; }

}  // namespace

// ---- Context ----------------------------------------------------------------------------------

Result<Context::Enqueued> Context::Enqueue(const Outbound& m) {
  // outbox::Enqueue validates the message (before any statement) and names the bad field.
  Outbound with_trace;
  const Outbound* out = &m;
  if (m.traceparent.empty() && !message_.traceparent.empty()) {
    with_trace = m;
    with_trace.traceparent = message_.traceparent;
    out = &with_trace;
  }
  try {
    // A nested savepoint keeps a message the server rejects (a taken message id) from aborting
    // the handler's savepoint, so the handler can still decide what to do.
    tx_.exec0("SAVEPOINT converge_enqueue");
  } catch (const std::exception& e) {
    return pg::StatusFromException(e).WithContext("enqueue");
  }
  Result<Enqueued> sent = outbox::Enqueue(tx_, *out);
  try {
    if (!sent.ok()) tx_.exec0("ROLLBACK TO SAVEPOINT converge_enqueue");
    tx_.exec0("RELEASE SAVEPOINT converge_enqueue");
  } catch (const std::exception& e) {
    return pg::StatusFromException(e).WithContext("enqueue");
  }
  if (!sent.ok()) return sent.status().WithContext("enqueue");
  return sent;
}

// ---- Impl -------------------------------------------------------------------------------------

// ---- Metrics ----------------------------------------------------------------------------------

// The consumers registered with one metrics registry. The registry's callback series (one set
// per registry) iterate over them at scrape time.
// What the hub's callbacks read from one member.
struct MemberView {
  std::string group;
  ConsumerStats stats;
  std::map<broker::TopicPartition, std::pair<int64_t, int64_t>> positions;
};
class MetricsMember {
 public:
  virtual MemberView View() const = 0;

 protected:
  ~MetricsMember() = default;
};
struct MetricsHub {
  std::mutex mu;
  std::set<const MetricsMember*> members;  // guarded by mu
};

namespace {

std::mutex& HubsMu() {
  static std::mutex mu;
  return mu;
}
// Guarded by HubsMu().
std::map<metrics::Registry*, std::shared_ptr<MetricsHub>>& Hubs() {
  static auto* hubs = new std::map<metrics::Registry*, std::shared_ptr<MetricsHub>>();
  return *hubs;
}

struct CounterSeries {
  const char* name;
  const char* help;
  uint64_t ConsumerStats::*field;
};
constexpr CounterSeries kCounterSeries[] = {
    {"converge_consumer_consumed_total", "Records settled (every outcome)",
     &ConsumerStats::consumed},
    {"converge_consumer_applied_total", "Records whose handler ran and committed",
     &ConsumerStats::applied},
    {"converge_consumer_duplicates_skipped_total",
     "Redelivered records skipped by the inbox (same id, same payload)",
     &ConsumerStats::duplicates_skipped},
    {"converge_consumer_conflicts_total",
     "Records with a known id but a different payload (dead-lettered)", &ConsumerStats::conflicts},
    {"converge_consumer_dead_letters_total", "Records moved to converge.dead_letters",
     &ConsumerStats::dead_letters},
    {"converge_consumer_unknown_type_skipped_total", "Records without a handler, skipped",
     &ConsumerStats::unknown_type_skipped},
    {"converge_consumer_stale_skipped_total",
     "Records skipped by the sequence policy (older than the last applied)",
     &ConsumerStats::stale_skipped},
    {"converge_consumer_sequence_gaps_total", "Per-key sequence gaps seen",
     &ConsumerStats::sequence_gaps},
    {"converge_consumer_retries_total", "Handler attempts that failed with a retriable error",
     &ConsumerStats::retries},
    {"converge_consumer_transactions_total", "Committed batch transactions",
     &ConsumerStats::transactions},
    {"converge_consumer_transaction_failures_total", "Batch transactions rolled back and re-run",
     &ConsumerStats::transaction_failures},
    {"converge_consumer_fenced_total", "Partitions found owned by another member",
     &ConsumerStats::fenced},
    {"converge_consumer_pruned_total", "Inbox rows pruned", &ConsumerStats::pruned},
    {"converge_consumer_offsets_ahead_total",
     "Stored offsets found ahead of the broker's log (topic recreated or truncated)",
     &ConsumerStats::offsets_ahead},
};
constexpr const char* kCallbackNames[] = {"converge_consumer_consumed_total",
                                          "converge_consumer_applied_total",
                                          "converge_consumer_duplicates_skipped_total",
                                          "converge_consumer_conflicts_total",
                                          "converge_consumer_dead_letters_total",
                                          "converge_consumer_unknown_type_skipped_total",
                                          "converge_consumer_stale_skipped_total",
                                          "converge_consumer_sequence_gaps_total",
                                          "converge_consumer_retries_total",
                                          "converge_consumer_transactions_total",
                                          "converge_consumer_transaction_failures_total",
                                          "converge_consumer_fenced_total",
                                          "converge_consumer_pruned_total",
                                          "converge_consumer_offsets_ahead_total",
                                          "converge_consumer_buffered_records",
                                          "converge_consumer_committed_offset",
                                          "converge_consumer_lag_records"};

}  // namespace

class Consumer::Impl final : public broker::AssignmentListener, public MetricsMember {
 public:
  Impl(ConsumerOptions options, std::unique_ptr<broker::MessageSource> source, const Clock& clock)
      : opts_(std::move(options)),
        source_(std::move(source)),
        clock_(clock),
        retry_backoff_(opts_.retry_backoff),
        reconnect_backoff_(opts_.reconnect_backoff),
        log_("consumer", {{"group", opts_.group}}) {
    member_id_ = opts_.member_id.empty() ? DefaultMemberId() : opts_.member_id;
  }

  ~Impl() override {
    // The registry's callbacks reach this consumer through the hub: leave it before going away;
    // the last member removes the callback series.
    if (hub_ == nullptr) return;
    std::lock_guard<std::mutex> hubs_lock(HubsMu());
    bool last;
    {
      std::lock_guard<std::mutex> lock(hub_->mu);
      hub_->members.erase(this);
      last = hub_->members.empty();
    }
    if (last) {
      for (const char* name : kCallbackNames) (void)registry_->RemoveCallback(name);
      Hubs().erase(registry_);
    }
  }

  // ---- lifecycle ----

  Status Init() {
    if (initialized_) return Status::Ok();
    CONVERGE_RETURN_IF_ERROR(opts_.Validate());
    if (!source_) return Status::InvalidArgument("consumer: source must not be null");
    // The first connection must work: a wrong URL or a missing schema is reported, not retried.
    CONVERGE_RETURN_IF_ERROR(Connect());
    try {
      pqxx::nontransaction(*conn_).exec("SELECT 1 FROM converge.consumer_offsets LIMIT 0");
    } catch (const std::exception& e) {
      return pg::StatusFromException(e).WithContext("consumer init");
    }
    bound_ = source_->MaxProcessingTime();
    if (opts_.handler_timeout.count() > 0 && (!bound_ || opts_.handler_timeout < *bound_))
      bound_ = opts_.handler_timeout;
    if (bound_ && bound_->count() < 1) bound_ = std::chrono::milliseconds(1);
    CONVERGE_RETURN_IF_ERROR(source_->Subscribe(opts_.topics, this));
    next_prune_ = clock_.Monotonic() + opts_.prune_interval;
    initialized_ = true;
    log_.Info("consumer started", {{"member", member_id_}});
    return Status::Ok();
  }

  Status Start() {
    std::lock_guard<std::mutex> lock(lifecycle_mu_);
    if (thread_.joinable()) return Status::FailedPrecondition("consumer already started");
    CONVERGE_RETURN_IF_ERROR(Init());
    stop_ = false;
    thread_ = std::thread([this] {
      int failures = 0;
      while (!stop_) {
        Status st = RunOnce();
        if (st.ok()) {
          failures = 0;
          continue;
        }
        ++failures;
        log_.LogEvery("run_error", std::chrono::seconds(10), Level::kError, "consumer loop error",
                      {{"error", st.ToString()}});
        SleepInterruptibly(reconnect_backoff_.Delay(failures));
      }
      Close();
    });
    return Status::Ok();
  }

  void Stop() {
    std::lock_guard<std::mutex> lock(lifecycle_mu_);
    stop_ = true;
    cv_.notify_all();
    if (thread_.joinable()) {
      thread_.join();
    } else if (initialized_) {
      Close();
    }
  }

  void Close() {
    if (closed_ || !source_) return;
    closed_ = true;
    source_->Close();
    log_.Info("consumer stopped", {{"member", member_id_}});
  }

  // ---- AssignmentListener (called inside Poll, on this thread) ----

  std::map<TopicPartition, int64_t> OnAssigned(const std::vector<TopicPartition>& tps) override {
    std::map<TopicPartition, int64_t> start;
    for (const auto& tp : tps) {
      Part& part = parts_[tp];
      if (part.halted) {
        std::lock_guard<std::mutex> lock(stats_mu_);
        --stats_.partitions_halted;
      }
      part = Part{};
      Status st = Claim(tp, part);
      if (!st.ok()) {
        // Not fatal: the loop claims it later and seeks; until then its records are dropped.
        log_.Warn("partition claim failed; will retry",
                  {{"topic", tp.topic}, {"partition", tp.partition}, {"error", st.ToString()}});
        continue;
      }
      if (part.next_offset > 0) start[tp] = part.next_offset;
    }
    return start;
  }

  void OnRevoked(const std::vector<TopicPartition>& tps) override {
    for (const auto& tp : tps) {
      if (auto it = parts_.find(tp); it != parts_.end() && it->second.halted) {
        std::lock_guard<std::mutex> lock(stats_mu_);
        --stats_.partitions_halted;
      }
      parts_.erase(tp);
      std::erase_if(attempts_, [&](const auto& kv) { return kv.first.first == tp; });
      std::erase_if(pending_failures_, [&](const auto& kv) { return kv.first.first == tp; });
    }
  }

  // ---- one iteration ----

  Status RunOnce() {
    if (!initialized_) return Status::FailedPrecondition("consumer: Init() was not called");
    if (!conn_ && !Reconnect()) return Status::Ok();  // stopping
    ClaimPending();
    MaybePrune();
    CONVERGE_RETURN_IF_ERROR(Fill());
    std::vector<Slice> batch = TakeBatch();
    if (batch.empty()) return Status::Ok();
    RunBatch(batch);
    return Status::Ok();
  }

  ConsumerStats stats() const {
    std::lock_guard<std::mutex> lock(stats_mu_);
    return stats_;
  }

  const std::string& member_id() const { return member_id_; }

  MemberView View() const override {
    std::lock_guard<std::mutex> lock(stats_mu_);
    return {opts_.group, stats_, positions_};
  }

  static Status AddHubCallbacks(metrics::Registry& reg, const std::shared_ptr<MetricsHub>& hub) {
    auto views = [hub] {
      std::vector<MemberView> out;
      std::lock_guard<std::mutex> lock(hub->mu);
      for (const MetricsMember* m : hub->members) out.push_back(m->View());
      return out;
    };
    for (const CounterSeries& c : kCounterSeries) {
      auto field = c.field;
      CONVERGE_RETURN_IF_ERROR(
          reg.AddCallback(c.name, c.help, metrics::MetricType::kCounter, {"group"}, [views, field] {
            std::vector<metrics::Sample> out;
            for (const auto& v : views()) out.push_back({{v.group}, double(v.stats.*field)});
            return out;
          }));
    }
    CONVERGE_RETURN_IF_ERROR(reg.AddCallback("converge_consumer_buffered_records",
                                             "Records polled and not yet committed",
                                             metrics::MetricType::kGauge, {"group"}, [views] {
                                               std::vector<metrics::Sample> out;
                                               for (const auto& v : views())
                                                 out.push_back({{v.group}, double(v.stats.lag)});
                                               return out;
                                             }));
    CONVERGE_RETURN_IF_ERROR(reg.AddCallback(
        "converge_consumer_committed_offset",
        "Next offset stored in PostgreSQL per owned partition", metrics::MetricType::kGauge,
        {"group", "topic", "partition"}, [views] {
          std::vector<metrics::Sample> out;
          for (const auto& v : views())
            for (const auto& [tp, pos] : v.positions)
              out.push_back({{v.group, tp.topic, std::to_string(tp.partition)}, double(pos.first)});
          return out;
        }));
    return reg.AddCallback(
        "converge_consumer_lag_records",
        "Broker high watermark minus the stored offset per owned partition (Kafka)",
        metrics::MetricType::kGauge, {"group", "topic", "partition"}, [views] {
          std::vector<metrics::Sample> out;
          for (const auto& v : views())
            for (const auto& [tp, pos] : v.positions) {
              if (pos.second < 0) continue;
              out.push_back({{v.group, tp.topic, std::to_string(tp.partition)},
                             double(std::max<int64_t>(0, pos.second - pos.first))});
            }
          return out;
        });
  }

  Status RegisterMetrics(metrics::Registry& reg) {
    if (initialized_ || thread_.joinable())
      return Status::FailedPrecondition("consumer: RegisterMetrics must be called before Start");
    if (metrics_registered_)
      return Status::AlreadyExists("consumer: metrics are already registered");
    {
      // Several consumers of one process (one per service or group) share a registry: the
      // callback series are registered once per registry and report every member.
      std::lock_guard<std::mutex> hubs_lock(HubsMu());
      auto& hub = Hubs()[&reg];
      if (!hub) {
        auto fresh = std::make_shared<MetricsHub>();
        CONVERGE_RETURN_IF_ERROR(AddHubCallbacks(reg, fresh));
        hub = fresh;
      }
      std::lock_guard<std::mutex> lock(hub->mu);
      hub->members.insert(this);
      hub_ = hub;
      registry_ = &reg;
    }
    const std::string group = opts_.group;
    CONVERGE_ASSIGN_OR_RETURN(
        auto* handler_family,
        reg.AddHistogramFamily("converge_consumer_handler_seconds", "Handler run time per record",
                               {"group"}, metrics::DefaultLatencyBuckets()));
    CONVERGE_ASSIGN_OR_RETURN(handler_hist_, handler_family->WithLabels({group}));
    CONVERGE_ASSIGN_OR_RETURN(
        auto* batch_family,
        reg.AddHistogramFamily("converge_consumer_batch_records",
                               "Records settled per committed transaction", {"group"},
                               metrics::ExponentialBuckets(1, 2, 11)));
    CONVERGE_ASSIGN_OR_RETURN(batch_hist_, batch_family->WithLabels({group}));
    metrics_registered_ = true;
    return Status::Ok();
  }

  std::map<std::string, Handler> handlers_;
  Decoder decoder_ = DecodeRecord;

 private:
  struct Part {
    bool claimed = false;
    // Attempts across restarts: the first batch after a claim is announced by a marker row;
    // records up to suspect_until (found at claim) run one per transaction, attempt counted
    // first; has_attempt_rows: converge.consumer_attempts may hold rows of this partition.
    bool probation = true;
    int64_t suspect_until = -1;
    bool has_attempt_rows = false;
    bool attempt_row_in_tx = false;  // the current transaction wrote one (a retried record)
    bool halted = false;             // stored offset ahead of the broker (OffsetAheadPolicy)
    int64_t epoch = 0;
    int64_t next_offset = 0;         // committed (stored) position
    std::deque<ReceivedRecord> buf;  // polled, not yet committed
    SteadyTime not_before{};         // retry backoff of the head record
    SteadyTime next_claim{};         // when an unclaimed partition is tried again
    int claim_failures = 0;
  };
  // The records of one partition in one batch transaction.
  struct Slice {
    TopicPartition tp;
    int64_t epoch = 0;
    size_t count = 0;      // records of part.buf in this batch
    size_t start = 0;      // records before it were committed already (found by the fence)
    bool suspect = false;  // a lone record of a batch that did not finish last time
    size_t settled = 0;    // records whose outcome was committed
    bool fenced = false;
  };
  // A key's last applied sequence within a fast batch.
  struct SeqState {
    std::optional<int64_t> last;
    bool dirty = false;
  };
  // Outcome counts of one transaction, merged into stats_ only after COMMIT.
  struct Tally {
    uint64_t applied = 0, duplicates = 0, conflicts = 0, dead = 0, unknown = 0, stale = 0, gaps = 0,
             retries = 0;
    double handler_seconds = 0;
  };

  // Refreshes positions_ from parts_ (consumer thread, stats_mu_ held).
  void UpdatePositionsLocked() {
    positions_.clear();
    for (const auto& [tp, part] : parts_) {
      if (!part.claimed) continue;
      positions_[tp] = {part.next_offset, source_->HighWatermark(tp).value_or(-1)};
    }
  }

  // ---- connection ----

  Status Connect() {
    CONVERGE_ASSIGN_OR_RETURN(conn_, pg::Connect(opts_.database_url));
    try {
      conn_->prepare("converge_fence", kFenceSql);
      conn_->prepare("converge_advance", kAdvanceSql);
      conn_->prepare("converge_claim", kClaimSql);
      conn_->prepare("converge_inbox", kInboxSql);
      conn_->prepare("converge_seq_get", kSeqGetSql);
      conn_->prepare("converge_seq_put", kSeqPutSql);
      conn_->prepare("converge_inbox_batch", kInboxBatchSql);
      conn_->prepare("converge_seq_get_batch", kSeqGetBatchSql);
      conn_->prepare("converge_seq_put_batch", kSeqPutBatchSql);
      conn_->prepare("converge_dead_letter", kDeadLetterSql);
      conn_->prepare("converge_prune", kPruneSql);
      conn_->prepare("converge_attempts_load", kAttemptsLoadSql);
      conn_->prepare("converge_attempts_gc", kAttemptsGcSql);
      conn_->prepare("converge_attempt_start", kAttemptStartSql);
      conn_->prepare("converge_attempt_failed", kAttemptFailedSql);
      pqxx::nontransaction nt(*conn_);
      nt.exec("SET application_name = " + nt.quote("converge-consumer " + opts_.group));
      // A member paused inside a transaction (SIGSTOP, GC-like stall) holds its offset rows'
      // locks; the server ends such a session so the new owner's claim does not wait forever.
      if (opts_.transaction_idle_timeout.count() > 0)
        nt.exec("SET idle_in_transaction_session_timeout = " +
                nt.quote(SqlInterval(opts_.transaction_idle_timeout)));
    } catch (const std::exception& e) {
      conn_.reset();
      return pg::StatusFromException(e);
    }
    return Status::Ok();
  }

  // Reconnects with backoff until it works or Stop() is called. False: stopping.
  bool Reconnect() {
    for (int attempt = 1; !stop_; ++attempt) {
      Status st = Connect();
      if (st.ok()) return true;
      log_.LogEvery("reconnect", std::chrono::seconds(10), Level::kWarn,
                    "PostgreSQL unreachable, retrying", {{"error", st.ToString()}});
      SleepInterruptibly(reconnect_backoff_.Delay(attempt));
    }
    return false;
  }

  void SleepInterruptibly(std::chrono::milliseconds d) {
    std::unique_lock<std::mutex> lock(cv_mu_);
    cv_.wait_for(lock, d, [this] { return stop_.load(); });
  }

  // ---- ownership ----

  // Takes the partition's offset row: owner = me, epoch + 1. From now on a commit of the
  // previous owner is refused by the fence.
  Status Claim(const TopicPartition& tp, Part& part) {
    if (!conn_) CONVERGE_RETURN_IF_ERROR(Connect());
    try {
      pqxx::work tx(*conn_);
      // A previous owner paused inside its transaction holds the row lock; do not block the
      // source's Poll for long (the loop retries the claim).
      tx.exec0("SET LOCAL lock_timeout = '2s'");
      pqxx::row r =
          tx.exec_prepared1("converge_claim", opts_.group, tp.topic, tp.partition, member_id_);
      const int64_t next = r[0].as<int64_t>();
      tx.exec_prepared0("converge_attempts_gc", opts_.group, tp.topic, tp.partition, next);
      pqxx::result rows =
          tx.exec_prepared("converge_attempts_load", opts_.group, tp.topic, tp.partition, next);
      tx.commit();
      part.next_offset = next;
      part.epoch = r[1].as<int64_t>();
      part.probation = true;
      part.suspect_until = -1;
      part.has_attempt_rows = !rows.empty();
      for (const auto& row : rows) {
        const int64_t offset = row[0].as<int64_t>();
        const int attempts = row[1].as<int>();
        part.suspect_until = std::max(part.suspect_until, row[2].as<int64_t>());
        if (attempts > 0) attempts_[{tp, offset}] = Attempts{attempts, row[3].as<std::string>()};
      }
      if (part.suspect_until >= 0)
        log_.Warn(
            "a batch of this partition did not finish last time; running its records one "
            "per transaction, counting attempts",
            {{"topic", tp.topic},
             {"partition", tp.partition},
             {"from", next},
             {"to", part.suspect_until}});
      part.claimed = true;
      part.claim_failures = 0;
      log_.Info("partition claimed", {{"topic", tp.topic},
                                      {"partition", tp.partition},
                                      {"epoch", part.epoch},
                                      {"next_offset", part.next_offset}});
      return Status::Ok();
    } catch (const std::exception& e) {
      Status st = pg::StatusFromException(e);
      if (!conn_->is_open()) conn_.reset();
      ++part.claim_failures;
      part.next_claim = clock_.Monotonic() + reconnect_backoff_.Delay(part.claim_failures);
      return st;
    }
  }

  void ClaimPending() {
    const SteadyTime now = clock_.Monotonic();
    for (auto& [tp, part] : parts_) {
      if (part.claimed || now < part.next_claim) continue;
      if (Claim(tp, part).ok()) {
        part.buf.clear();
        Status st = source_->Seek(tp, part.next_offset);
        if (!st.ok())
          log_.Warn("seek after claim failed", {{"topic", tp.topic}, {"error", st.ToString()}});
      }
    }
  }

  // ---- polling and batching ----

  size_t Buffered() const {
    size_t n = 0;
    for (const auto& [tp, part] : parts_) n += part.buf.size();
    return n;
  }

  // True when some partition has a record that may run now.
  bool HasReady(SteadyTime now) const {
    for (const auto& [tp, part] : parts_)
      if (!part.buf.empty() && now >= part.not_before) return true;
    return false;
  }

  void Route(std::vector<ReceivedRecord>& records) {
    for (auto& rec : records) {
      auto it = parts_.find(TopicPartition{rec.topic, rec.partition});
      if (it == parts_.end() || !it->second.claimed) continue;  // not ours (yet): drop
      Part& part = it->second;
      if (part.halted) continue;
      if (rec.offset < part.next_offset) {
        // Committed already, or the broker restarted the partition below the stored offset
        // (topic recreated / truncated): the watermark that came with this fetch tells.
        if (part.buf.empty()) {
          const auto hw = source_->HighWatermark(it->first);
          if (hw && *hw < part.next_offset) OffsetAhead(it->first, part, *hw);
        }
        if (part.halted || rec.offset < part.next_offset) continue;
      }
      if (!part.buf.empty() && rec.offset <= part.buf.back().offset) continue;  // redelivered
      part.buf.push_back(std::move(rec));
    }
  }

  void OffsetAhead(const TopicPartition& tp, Part& part, int64_t high_watermark) {
    const bool reset = opts_.on_offset_ahead == OffsetAheadPolicy::kResetToEarliest;
    log_.Error("stored offset is ahead of the broker's log (topic recreated or truncated?)",
               {{"topic", tp.topic},
                {"partition", tp.partition},
                {"stored_offset", part.next_offset},
                {"high_watermark", high_watermark},
                {"action", reset ? "reset_to_earliest" : "halt"}});
    {
      std::lock_guard<std::mutex> lock(stats_mu_);
      ++stats_.offsets_ahead;
      if (!reset) ++stats_.partitions_halted;
    }
    if (!reset) {
      part.halted = true;
      part.buf.clear();
      return;
    }
    if (!conn_) return;  // the next record of the partition tries again
    try {
      pqxx::work tx(*conn_);
      tx.exec0("SET LOCAL converge.allow_offset_rewind = 'on'");
      pqxx::result r = tx.exec_params(
          "UPDATE converge.consumer_offsets SET next_offset = 0, updated_at = now() "
          "WHERE consumer_group = $1 AND topic = $2 AND partition = $3 AND owner = $4 "
          "AND epoch = $5",
          opts_.group, tp.topic, tp.partition, member_id_, part.epoch);
      tx.commit();
      if (r.affected_rows() == 1) {
        part.next_offset = 0;
        part.buf.clear();
        return;
      }
    } catch (const std::exception& e) {
      log_.Warn("offset reset failed; will try again",
                {{"topic", tp.topic}, {"error", pg::StatusFromException(e).ToString()}});
      if (conn_ && !conn_->is_open()) conn_.reset();
    }
  }

  Status Fill() {
    // Bound memory when a partition is held in backoff: stop polling, the source keeps the rest.
    const size_t cap = opts_.max_batch_records * 4;
    SteadyTime now = clock_.Monotonic();
    if (Buffered() >= cap) {
      if (!HasReady(now)) SleepInterruptibly(std::chrono::milliseconds(10));
      return Status::Ok();
    }
    auto timeout = opts_.poll_timeout;
    if (HasReady(now)) {
      timeout = std::chrono::milliseconds(0);
    } else {
      for (const auto& [tp, part] : parts_)
        if (!part.buf.empty())
          timeout = std::min(timeout, std::chrono::ceil<std::chrono::milliseconds>(std::max(
                                          part.not_before - now, SteadyTime::duration(0))));
    }
    auto polled = source_->Poll(cap - Buffered(), timeout);
    if (!polled.ok()) {
      // kUnavailable: the broker is unreachable; the source reconnects by itself.
      log_.LogEvery("poll", std::chrono::seconds(10), Level::kWarn, "poll failed",
                    {{"error", polled.status().ToString()}});
      return Status::Ok();
    }
    Route(*polled);
    // A busy stream: keep taking what is already available, up to the batch size or linger.
    // A quiet stream: the first empty non-blocking poll ends the batch (no added latency).
    const SteadyTime linger_end = clock_.Monotonic() + opts_.linger;
    while (!stop_ && Buffered() < cap && clock_.Monotonic() < linger_end) {
      size_t ready = 0;
      now = clock_.Monotonic();
      for (const auto& [tp, part] : parts_)
        if (now >= part.not_before) ready += part.buf.size();
      if (ready >= opts_.max_batch_records || ready == 0) break;
      auto more = source_->Poll(std::min(cap - Buffered(), opts_.max_batch_records - ready),
                                std::chrono::milliseconds(0));
      if (!more.ok() || more->empty()) break;
      Route(*more);
    }
    return Status::Ok();
  }

  std::vector<Slice> TakeBatch() {
    std::vector<Slice> batch;
    const SteadyTime now = clock_.Monotonic();
    size_t records = 0, bytes = 0;
    // A record of a batch that did not finish last time runs alone (its attempt is counted
    // before it starts, so a crash in its handler is charged to it and nothing else).
    for (auto& [tp, part] : parts_) {
      if (part.buf.empty() || now < part.not_before || !part.claimed) continue;
      if (part.buf.front().offset > part.suspect_until) continue;
      Slice s{tp, part.epoch};
      s.count = 1;
      s.suspect = true;
      batch.push_back(std::move(s));
      return batch;
    }
    for (auto& [tp, part] : parts_) {
      if (part.buf.empty() || now < part.not_before || !part.claimed) continue;
      Slice s{tp, part.epoch};
      for (const auto& rec : part.buf) {
        if (records >= opts_.max_batch_records) break;
        if (records > 0 && bytes + rec.payload.size() > opts_.max_batch_bytes) break;
        ++records;
        bytes += rec.payload.size();
        ++s.count;
      }
      if (s.count > 0) batch.push_back(std::move(s));
      if (records >= opts_.max_batch_records) break;
    }
    return batch;
  }

  // ---- the batch transaction ----

  void RunBatch(std::vector<Slice>& batch) {
    // The fast path runs the batch without per-record savepoints; the first record that needs
    // one (a failed handler, a held sequence gap, a statement error) rolls it back and the batch
    // is re-run carefully, each record in its own savepoint. A batch with a record that is
    // being retried starts carefully.
    if (!AnnounceAttempts(batch)) return;  // retried by the next RunOnce
    bool careful = NeedsCareful(batch);
    for (int tx_attempt = 1;; ++tx_attempt) {
      if (!conn_ && !Reconnect()) return;  // stopping: nothing committed, nothing acked
      for (auto& s : batch) {
        s.settled = 0, s.fenced = false;
        if (auto it = parts_.find(s.tp); it != parts_.end()) it->second.attempt_row_in_tx = false;
      }
      Tally tally;
      inflight_ = nullptr;
      bool switch_to_careful = false;
      try {
        // libpqxx 6 aborts a pqxx::work on any failed statement (savepoints would be useless)
        // and runs exec_prepared outside a subtransaction's SAVEPOINT, so the runtime drives the
        // transaction itself: BEGIN, (SAVEPOINT per record when careful), COMMIT.
        pqxx::nontransaction tx(*conn_);
        if (bound_) {
          // One round trip: the bound is a number this process formatted, not input.
          tx.exec0("BEGIN; SET LOCAL statement_timeout = '" + std::to_string(bound_->count()) +
                   "ms'");
        } else {
          tx.exec0("BEGIN");
        }
        Fence(tx, batch);
        if (careful)
          CarefulBody(tx, batch, tally);
        else
          FastBody(tx, batch, tally);
        DropPassedAttempts(tx, batch);
        Advance(tx, batch);
        Failpoint("consumer.before_commit");
        tx.exec0("COMMIT");
        Failpoint("consumer.after_commit");  // committed locally, not yet acked to the broker
      } catch (const NeedCareful&) {
        switch_to_careful = true;
      } catch (const std::exception& e) {
        Status st = pg::StatusFromException(e);
        const bool lost = st.code() == StatusCode::kUnavailable ||
                          st.code() == StatusCode::kDeadlineExceeded ||
                          !(conn_ && conn_->is_open());
        if (!careful && !lost) {
          // Some record broke the fast transaction (e.g. a handler swallowed an SQL error):
          // the careful re-run finds out which one and charges it.
          switch_to_careful = true;
        } else {
          RollbackQuietly();
          {
            std::lock_guard<std::mutex> lock(stats_mu_);
            ++stats_.transaction_failures;
          }
          // A record that breaks the whole transaction (aborted, or a bug) is charged an
          // attempt so it is eventually dead-lettered; a lost connection is nobody's fault.
          if (inflight_ != nullptr && !lost) {
            Attempts& a = attempts_[{TopicPartition{inflight_->topic, inflight_->partition},
                                     inflight_->offset}];
            ++a.count;
            a.last_error = st.ToString();
          }
          inflight_ = nullptr;
          log_.LogEvery("tx_failed", std::chrono::seconds(5), Level::kWarn,
                        "batch transaction failed; re-running",
                        {{"error", st.ToString()}, {"attempt", tx_attempt}});
          if (conn_ && !conn_->is_open()) conn_.reset();
          if (st.code() == StatusCode::kUnavailable || st.code() == StatusCode::kDeadlineExceeded)
            conn_.reset();
          if (stop_) return;
          SleepInterruptibly(reconnect_backoff_.Delay(std::min(tx_attempt, 10)));
          continue;
        }
      }
      if (switch_to_careful) {
        RollbackQuietly();
        inflight_ = nullptr;
        careful = true;
        --tx_attempt;  // not a failure of the transaction
        continue;
      }
      Committed(batch, tally);
      return;
    }
  }

  // Before the transaction, in its own (autocommit) statement so that it outlives a crash: the
  // first batch after a claim writes a marker row; a record of a batch that did not finish
  // last time gets its attempt counted. False when the database could not be reached.
  bool AnnounceAttempts(std::vector<Slice>& batch) {
    if (!conn_ && !Reconnect()) return false;
    for (auto& s : batch) {
      Part& part = parts_.at(s.tp);
      const ReceivedRecord& head = part.buf.front();
      try {
        if (s.suspect) {
          Attempts& at = attempts_[{s.tp, head.offset}];
          if (at.count >= opts_.max_attempts) continue;  // dead-lettered without running
          pqxx::nontransaction(*conn_).exec_prepared0(
              "converge_attempt_start", opts_.group, s.tp.topic, s.tp.partition, head.offset,
              member_id_, s.epoch, 1, nullptr, kDidNotFinish);
          part.has_attempt_rows = true;
        } else if (part.probation) {
          pqxx::nontransaction(*conn_).exec_prepared0(
              "converge_attempt_start", opts_.group, s.tp.topic, s.tp.partition, head.offset,
              member_id_, s.epoch, 0, part.buf[s.count - 1].offset, nullptr);
          part.has_attempt_rows = true;
          part.probation = false;
        }
      } catch (const std::exception& e) {
        log_.LogEvery("attempts", std::chrono::seconds(10), Level::kWarn,
                      "could not record an attempt; retrying",
                      {{"error", pg::StatusFromException(e).ToString()}});
        if (conn_ && !conn_->is_open()) conn_.reset();
        SleepInterruptibly(reconnect_backoff_.Delay(1));
        return false;
      }
    }
    return true;
  }

  // Attempt rows below the new committed offsets are garbage: deleted in the transaction that
  // passes them (only for partitions that have any).
  void DropPassedAttempts(pqxx::nontransaction& tx, const std::vector<Slice>& batch) {
    for (const auto& s : batch) {
      if (s.fenced || s.settled == 0) continue;
      const Part& part = parts_.at(s.tp);
      if (!part.has_attempt_rows) continue;
      tx.exec_prepared0("converge_attempts_gc", opts_.group, s.tp.topic, s.tp.partition,
                        part.buf[s.settled - 1].offset + 1);
    }
  }

  // Thrown by the fast path when a record needs its own savepoint.
  struct NeedCareful {};

  void RollbackQuietly() {
    try {
      if (conn_ && conn_->is_open()) pqxx::nontransaction(*conn_).exec0("ROLLBACK");
    } catch (const std::exception&) {
      conn_.reset();
    }
  }

  bool NeedsCareful(const std::vector<Slice>& batch) const {
    if (attempts_.empty() && pending_failures_.empty()) return false;
    for (const auto& s : batch) {
      const Part& part = parts_.at(s.tp);
      for (size_t i = 0; i < s.count; ++i) {
        const auto key = std::make_pair(s.tp, part.buf[i].offset);
        auto it = attempts_.find(key);
        if ((it != attempts_.end() && it->second.count > 0) || pending_failures_.count(key) > 0)
          return true;
      }
    }
    return false;
  }

  // Locks the offset rows of the batch's partitions that are still ours; marks the others
  // fenced. After a commit whose outcome was unknown, skips what that commit already recorded.
  void Fence(pqxx::nontransaction& tx, std::vector<Slice>& batch) {
    std::vector<std::string> topics;
    std::vector<int> partitions;
    std::vector<int64_t> epochs;
    for (const auto& s : batch) {
      topics.push_back(s.tp.topic);
      partitions.push_back(s.tp.partition);
      epochs.push_back(s.epoch);
    }
    pqxx::result r =
        tx.exec_prepared("converge_fence", opts_.group, member_id_, pg::TextArrayLiteral(topics),
                         pg::IntArrayLiteral(partitions), pg::IntArrayLiteral(epochs));
    std::map<TopicPartition, int64_t> stored;
    for (const auto& row : r)
      stored[TopicPartition{row[0].as<std::string>(), row[1].as<int>()}] = row[2].as<int64_t>();
    for (auto& s : batch) {
      auto it = stored.find(s.tp);
      if (it == stored.end()) {
        s.fenced = true;
        continue;
      }
      Part& part = parts_.at(s.tp);
      part.next_offset = std::max(part.next_offset, it->second);
      s.start = 0;
      while (s.start < s.count && part.buf[s.start].offset < it->second) ++s.start;
      s.settled = s.start;
    }
  }

  void Advance(pqxx::nontransaction& tx, const std::vector<Slice>& batch) {
    std::vector<std::string> topics;
    std::vector<int> partitions;
    std::vector<int64_t> epochs, ends;
    for (const auto& s : batch) {
      if (s.fenced || s.settled == 0) continue;
      topics.push_back(s.tp.topic);
      partitions.push_back(s.tp.partition);
      epochs.push_back(s.epoch);
      ends.push_back(parts_.at(s.tp).buf[s.settled - 1].offset + 1);
    }
    if (topics.empty()) return;
    pqxx::result r = tx.exec_prepared("converge_advance", opts_.group, member_id_,
                                      pg::TextArrayLiteral(topics), pg::IntArrayLiteral(partitions),
                                      pg::IntArrayLiteral(epochs), pg::IntArrayLiteral(ends));
    // The fence row lock makes this impossible; a bug if it happens.
    if (r.affected_rows() != topics.size())
      throw std::logic_error("consumer: fenced offset row changed inside the transaction");
  }

  // The original engine: every record in its own savepoint (ProcessRecord).
  void CarefulBody(pqxx::nontransaction& tx, std::vector<Slice>& batch, Tally& tally) {
    for (auto& s : batch) {
      if (s.fenced) continue;
      Part& part = parts_.at(s.tp);
      for (size_t i = s.start; i < s.count; ++i) {
        const ReceivedRecord& rec = part.buf[i];
        inflight_ = &rec;
        Outcome out = ProcessRecord(tx, s.tp, part, rec, tally);
        inflight_ = nullptr;
        if (out == Outcome::kRetryLater) break;
        s.settled = i + 1;
      }
    }
  }

  // The common case: one multi-row statement records every dedupe row, one reads the key
  // sequences, then the handlers run back to back with no savepoint, then one statement
  // stores the sequences. Any record that would need a rollback of its own throws NeedCareful.
  void FastBody(pqxx::nontransaction& tx, std::vector<Slice>& batch, Tally& tally) {
    struct Item {
      Slice* slice;
      size_t index;  // in the partition's buffer
      const ReceivedRecord* rec;
      Result<Message> msg;
      int first = -1;  // index of the batch's first copy of the same inbox id (-1: this one)
      bool inserted = false;
      bool same = false;
    };
    std::vector<Item> items;
    std::vector<std::string> ids, types, payloads, topics;
    std::vector<int> partitions;
    std::vector<int64_t> offsets;
    std::vector<size_t> row_item;  // inbox statement row -> item
    for (auto& s : batch) {
      if (s.fenced) continue;
      Part& part = parts_.at(s.tp);
      for (size_t i = s.start; i < s.count; ++i) {
        const ReceivedRecord& rec = part.buf[i];
        items.push_back(Item{&s, i, &rec, decoder_(rec)});
        const Item& it = items.back();
        if (!it.msg.ok()) continue;
        row_item.push_back(items.size() - 1);
        ids.push_back(it.msg->id);
        types.push_back(it.msg->type);
        payloads.push_back(HexOf(it.msg->payload));
        topics.push_back(rec.topic);
        partitions.push_back(rec.partition);
        offsets.push_back(rec.offset);
      }
    }
    if (items.empty()) return;
    if (!row_item.empty()) {
      pqxx::result r = tx.exec_prepared(
          "converge_inbox_batch", opts_.group, pg::TextArrayLiteral(ids),
          pg::TextArrayLiteral(types), pg::TextArrayLiteral(payloads), pg::TextArrayLiteral(topics),
          pg::IntArrayLiteral(partitions), pg::IntArrayLiteral(offsets));
      if (r.size() != row_item.size())
        throw std::logic_error("consumer: inbox batch returned a wrong row count");
      std::map<std::string, int> first_of;  // inbox UUID -> first item with it
      for (size_t k = 0; k < r.size(); ++k) {
        Item& it = items[row_item[k]];
        const std::string mid = r[k][1].as<std::string>();
        auto [pos, fresh] = first_of.emplace(mid, static_cast<int>(row_item[k]));
        if (!fresh) it.first = pos->second;
        it.inserted = r[k][2].as<bool>();
        it.same = !r[k][3].is_null() && r[k][3].as<bool>();
      }
    }
    // Key sequences of the records that may run, read (and locked) at once.
    std::map<std::pair<std::string, std::string>, SeqState> seqs;
    {
      std::vector<std::string> st, sk;
      for (const Item& it : items) {
        if (!it.msg.ok() || it.msg->sequence <= 0 || it.msg->subject.empty()) continue;
        if (seqs.emplace(std::make_pair(it.rec->topic, it.msg->subject), SeqState{}).second) {
          st.push_back(it.rec->topic);
          sk.push_back(it.msg->subject);
        }
      }
      if (!st.empty()) {
        pqxx::result r = tx.exec_prepared("converge_seq_get_batch", opts_.group,
                                          pg::TextArrayLiteral(st), pg::TextArrayLiteral(sk));
        for (const auto& row : r)
          seqs[{row[0].as<std::string>(), row[1].as<std::string>()}].last = row[2].as<int64_t>();
      }
    }
    for (Item& it : items) {
      Slice& s = *it.slice;
      const ReceivedRecord& rec = *it.rec;
      inflight_ = &rec;
      Attempts* at = nullptr;
      if (auto a = attempts_.find({s.tp, rec.offset}); a != attempts_.end()) at = &a->second;
      const int done_attempts = at != nullptr ? at->count : 0;
      if (!it.msg.ok()) {
        DeadLetter(tx, rec, nullptr, "decode_failed", it.msg.status().message(), done_attempts + 1);
        ++tally.dead;
      } else if (const Message& msg = *it.msg; !it.inserted || it.first >= 0) {
        // A copy of a stored message, or a second copy within this batch.
        const bool same = it.first >= 0 && it.inserted
                              ? items[it.first].msg->type == msg.type &&
                                    items[it.first].msg->payload == msg.payload
                              : it.same;
        if (same) {
          ++tally.duplicates;
        } else {
          DeadLetter(tx, rec, &msg, "payload_conflict",
                     "message id " + msg.id +
                         " was processed before with a different type or payload (payload hash)",
                     done_attempts + 1);
          ++tally.conflicts;
          ++tally.dead;
        }
      } else if (auto handler = handlers_.find(msg.type); handler == handlers_.end()) {
        if (opts_.unknown_type == UnknownTypePolicy::kSkip) {
          ++tally.unknown;
        } else {
          DeadLetter(tx, rec, &msg, "unknown_type",
                     "no handler is registered for type \"" + msg.type + "\"", done_attempts + 1);
          ++tally.dead;
        }
      } else if (done_attempts >= opts_.max_attempts) {
        DeadLetter(tx, rec, &msg, "retries_exhausted", at->last_error, done_attempts);
        ++tally.dead;
      } else {
        SeqState* seq = nullptr;
        bool skip = false;
        if (msg.sequence > 0 && !msg.subject.empty()) {
          seq = &seqs[{rec.topic, msg.subject}];
          switch (internal::DecideSequence(opts_.sequence_policy, seq->last, msg.sequence,
                                           done_attempts + 1 >= opts_.max_attempts)) {
            case internal::SeqVerdict::kInOrder:
              break;
            case internal::SeqVerdict::kStaleApply:
              log_.LogEvery("stale", std::chrono::seconds(10), Level::kWarn,
                            "stale sequence applied (policy apply)",
                            {{"key", msg.subject}, {"seq", msg.sequence}, {"last", *seq->last}});
              break;
            case internal::SeqVerdict::kStaleSkip:
              log_.LogEvery("stale", std::chrono::seconds(10), Level::kWarn,
                            "stale sequence skipped",
                            {{"key", msg.subject}, {"seq", msg.sequence}, {"last", *seq->last}});
              ++tally.stale;
              skip = true;
              break;
            case internal::SeqVerdict::kGapHold:
              throw NeedCareful{};  // the inbox rows after it must not be kept
            case internal::SeqVerdict::kGapApply:
              ++tally.gaps;
              log_.LogEvery("gap", std::chrono::seconds(10), Level::kWarn, "sequence gap",
                            {{"key", msg.subject}, {"seq", msg.sequence}, {"last", *seq->last}});
              break;
          }
        }
        if (!skip) {
          Status st = RunHandler(handler->second, tx, rec, msg, done_attempts + 1, tally);
          if (!st.ok() && handler_hit_aborted_tx_) throw NeedCareful{};  // not its fault
          if (!st.ok()) {
            // Only this record's writes must go: the careful re-run settles it with this
            // result (without calling the handler again) and keeps the others.
            pending_failures_[{s.tp, rec.offset}] = st;
            throw NeedCareful{};
          }
          if (seq != nullptr) {
            seq->last = std::max(seq->last.value_or(msg.sequence), msg.sequence);
            seq->dirty = true;
          }
          ++tally.applied;
        }
      }
      inflight_ = nullptr;
      s.settled = it.index + 1;
    }
    std::vector<std::string> st, sk;
    std::vector<int64_t> sv;
    for (const auto& [k, v] : seqs) {
      if (!v.dirty) continue;
      st.push_back(k.first);
      sk.push_back(k.second);
      sv.push_back(*v.last);
    }
    if (!st.empty())
      tx.exec_prepared0("converge_seq_put_batch", opts_.group, pg::TextArrayLiteral(st),
                        pg::TextArrayLiteral(sk), pg::IntArrayLiteral(sv));
  }

  // Runs a handler, timing it; exceptions become a Status.
  Status RunHandler(const Handler& handler, pqxx::transaction_base& tx, const ReceivedRecord& rec,
                    const Message& msg, int attempt, Tally& tally) {
    Context ctx(tx, rec, msg, attempt);
    Status st;
    const SteadyTime t0 = std::chrono::steady_clock::now();
    handler_hit_aborted_tx_ = false;
    try {
      st = handler(msg, ctx);
    } catch (const pqxx::sql_error& e) {
      // 25P02: an earlier statement (of another record) had already aborted the transaction.
      handler_hit_aborted_tx_ = e.sqlstate() == "25P02";
      st = pg::StatusFromException(e);
      if (bound_ && e.sqlstate() == "57014") st = Overran();  // statement_timeout
    } catch (const std::exception& e) {
      st = pg::StatusFromException(e);
    } catch (...) {
      st = Status::Internal("handler threw a non-standard exception");
    }
    const auto elapsed = std::chrono::steady_clock::now() - t0;
    const double handler_seconds = std::chrono::duration<double>(elapsed).count();
    tally.handler_seconds += handler_seconds;
    if (handler_hist_ != nullptr) handler_hist_->Observe(handler_seconds);
    if (bound_ && elapsed > *bound_) st = Overran();
    return st;
  }

  Status Overran() const {
    return Status::DeadlineExceeded("handler exceeded " + std::to_string(bound_->count()) + " ms");
  }

  // Retry backoff, kept below the handler bound when there is one (an MQTT broker must not
  // see the message held past its keepalive).
  std::chrono::milliseconds RetryDelay(int attempt) {
    auto d = retry_backoff_.Delay(attempt);
    if (bound_) d = std::min(d, std::max(std::chrono::milliseconds(1), *bound_ / 2));
    return d;
  }

  static std::string HexOf(const std::string& bytes) {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string out(bytes.size() * 2, '0');
    for (size_t i = 0; i < bytes.size(); ++i) {
      const auto b = static_cast<unsigned char>(bytes[i]);
      out[2 * i] = kDigits[b >> 4];
      out[2 * i + 1] = kDigits[b & 0xf];
    }
    return out;
  }

  void Committed(std::vector<Slice>& batch, const Tally& tally) {
    pending_failures_.clear();
    std::vector<ReceivedRecord> acked;
    uint64_t settled_total = 0;
    uint64_t fenced = 0;
    for (auto& s : batch) {
      auto it = parts_.find(s.tp);
      if (s.fenced) {
        ++fenced;
        log_.Warn("partition taken over by another member; dropping its records",
                  {{"topic", s.tp.topic}, {"partition", s.tp.partition}, {"epoch", s.epoch}});
        OnRevoked({s.tp});
        continue;
      }
      Part& part = it->second;
      if (s.settled > 0 && !part.attempt_row_in_tx) part.has_attempt_rows = false;
      for (size_t i = 0; i < s.settled; ++i) {
        attempts_.erase({s.tp, part.buf.front().offset});
        part.next_offset = part.buf.front().offset + 1;
        acked.push_back(std::move(part.buf.front()));
        part.buf.pop_front();
      }
      settled_total += s.settled;
    }
    {
      std::lock_guard<std::mutex> lock(stats_mu_);
      ++stats_.transactions;
      stats_.consumed += settled_total;
      stats_.applied += tally.applied;
      stats_.duplicates_skipped += tally.duplicates;
      stats_.conflicts += tally.conflicts;
      stats_.dead_letters += tally.dead;
      stats_.unknown_type_skipped += tally.unknown;
      stats_.stale_skipped += tally.stale;
      stats_.sequence_gaps += tally.gaps;
      stats_.retries += tally.retries;
      stats_.fenced += fenced;
      stats_.handler_seconds_total += tally.handler_seconds;
      stats_.last_batch_size = settled_total;
      stats_.max_batch_size = std::max(stats_.max_batch_size, settled_total);
      stats_.lag = static_cast<int64_t>(Buffered());
      if (metrics_registered_) UpdatePositionsLocked();
    }
    if (batch_hist_ != nullptr && settled_total > 0)
      batch_hist_->Observe(static_cast<double>(settled_total));
    if (!acked.empty()) source_->Ack(acked);
  }

  // Each record runs inside SAVEPOINT converge_rec; a failure rolls back to it, so the dead
  // letter and the other records of the batch stay in the transaction.
  Outcome ProcessRecord(pqxx::nontransaction& tx, const TopicPartition& tp, Part& part,
                        const ReceivedRecord& rec, Tally& tally) {
    Attempts& at = attempts_[{tp, rec.offset}];
    Result<Message> msg = decoder_(rec);
    if (!msg.ok()) {
      DeadLetter(tx, rec, nullptr, "decode_failed", msg.status().message(), at.count + 1);
      ++tally.dead;
      return Outcome::kDeadLettered;
    }
    tx.exec0("SAVEPOINT converge_rec");
    pqxx::row r =
        tx.exec_prepared1("converge_inbox", opts_.group, msg->id, msg->type,
                          pqxx::binarystring(msg->payload), rec.topic, rec.partition, rec.offset);
    if (!r[0].as<bool>()) {
      tx.exec0("RELEASE SAVEPOINT converge_rec");
      if (!r[1].is_null() && r[1].as<bool>()) {
        ++tally.duplicates;
        return Outcome::kDuplicate;
      }
      DeadLetter(tx, rec, &*msg, "payload_conflict",
                 "message id " + msg->id +
                     " was processed before with a different type or payload (payload hash)",
                 at.count + 1);
      ++tally.conflicts;
      ++tally.dead;
      return Outcome::kConflict;
    }
    auto handler = handlers_.find(msg->type);
    if (handler == handlers_.end()) {
      if (opts_.unknown_type == UnknownTypePolicy::kSkip) {
        ++tally.unknown;
      } else {
        DeadLetter(tx, rec, &*msg, "unknown_type",
                   "no handler is registered for type \"" + msg->type + "\"", at.count + 1);
        ++tally.dead;
      }
      tx.exec0("RELEASE SAVEPOINT converge_rec");
      return opts_.unknown_type == UnknownTypePolicy::kSkip ? Outcome::kSkipped
                                                            : Outcome::kDeadLettered;
    }
    if (at.count >= opts_.max_attempts) {
      DeadLetter(tx, rec, &*msg, "retries_exhausted", at.last_error, at.count);
      tx.exec0("RELEASE SAVEPOINT converge_rec");
      ++tally.dead;
      return Outcome::kDeadLettered;
    }
    const bool check_seq = msg->sequence > 0 && !msg->subject.empty();
    if (check_seq) {
      pqxx::result s = tx.exec_prepared("converge_seq_get", opts_.group, rec.topic, msg->subject);
      std::optional<int64_t> last;
      if (!s.empty()) last = s[0][0].as<int64_t>();
      switch (internal::DecideSequence(opts_.sequence_policy, last, msg->sequence,
                                       at.count + 1 >= opts_.max_attempts)) {
        case internal::SeqVerdict::kInOrder:
          break;
        case internal::SeqVerdict::kStaleApply:
          log_.LogEvery("stale", std::chrono::seconds(10), Level::kWarn,
                        "stale sequence applied (policy apply)",
                        {{"key", msg->subject}, {"seq", msg->sequence}, {"last", *last}});
          break;
        case internal::SeqVerdict::kStaleSkip:
          tx.exec0("RELEASE SAVEPOINT converge_rec");
          log_.LogEvery("stale", std::chrono::seconds(10), Level::kWarn, "stale sequence skipped",
                        {{"key", msg->subject}, {"seq", msg->sequence}, {"last", *last}});
          ++tally.stale;
          return Outcome::kSkipped;
        case internal::SeqVerdict::kGapHold:
          tx.exec0("ROLLBACK TO SAVEPOINT converge_rec");
          tx.exec0("RELEASE SAVEPOINT converge_rec");
          ++at.count;
          at.last_error = "sequence gap: key " + msg->subject + " expected " +
                          std::to_string(*last + 1) + ", got " + std::to_string(msg->sequence);
          part.not_before = clock_.Monotonic() + RetryDelay(at.count);
          ++tally.retries;
          return Outcome::kRetryLater;
        case internal::SeqVerdict::kGapApply:
          ++tally.gaps;
          log_.LogEvery("gap", std::chrono::seconds(10), Level::kWarn, "sequence gap",
                        {{"key", msg->subject}, {"seq", msg->sequence}, {"last", *last}});
          break;
      }
    }
    Status st;
    if (auto pending = pending_failures_.find({tp, rec.offset});
        pending != pending_failures_.end()) {
      // The fast path ran this attempt already and it failed: settle it with that result.
      st = pending->second;
      pending_failures_.erase(pending);
    } else {
      st = RunHandler(handler->second, tx, rec, *msg, at.count + 1, tally);
    }
    if (st.ok()) {
      // If the handler swallowed an SQL error and still returned OK, these statements fail and
      // the whole batch is re-run (the record is charged an attempt).
      if (check_seq)
        tx.exec_prepared0("converge_seq_put", opts_.group, rec.topic, msg->subject, msg->sequence);
      tx.exec0("RELEASE SAVEPOINT converge_rec");
      ++tally.applied;
      return Outcome::kApplied;
    }
    // Undo only this message's writes (and its inbox row); the batch's other work stays.
    tx.exec0("ROLLBACK TO SAVEPOINT converge_rec");
    tx.exec0("RELEASE SAVEPOINT converge_rec");
    ++at.count;
    at.last_error = st.ToString();
    if (st.IsRetriable() && at.count < opts_.max_attempts) {
      // Kept across restarts (committed with the batch's other records).
      tx.exec_prepared0("converge_attempt_failed", opts_.group, tp.topic, tp.partition, rec.offset,
                        at.count, internal::SafeText(at.last_error));
      part.has_attempt_rows = true;
      part.attempt_row_in_tx = true;
      part.not_before = clock_.Monotonic() + RetryDelay(at.count);
      ++tally.retries;
      return Outcome::kRetryLater;
    }
    // Re-record the inbox row so a redelivered copy is a duplicate, not a second dead letter.
    tx.exec_prepared("converge_inbox", opts_.group, msg->id, msg->type,
                     pqxx::binarystring(msg->payload), rec.topic, rec.partition, rec.offset);
    DeadLetter(tx, rec, &*msg, st.IsRetriable() ? "retries_exhausted" : "handler_failed",
               st.ToString(), at.count);
    ++tally.dead;
    return Outcome::kDeadLettered;
  }

  // Writes a dead letter with the record exactly as received (value and headers), so that a
  // replay can reproduce it, plus what could be decoded.
  void DeadLetter(pqxx::transaction_base& tx, const ReceivedRecord& rec, const Message* msg,
                  const std::string& code, const std::string& reason, int attempts) {
    const bool m = msg != nullptr;
    const std::string key = internal::SafeText(m ? msg->subject : rec.key.value_or(""));
    const std::string seq = m && msg->sequence > 0 ? std::to_string(msg->sequence) : "";
    const std::string created =
        m && msg->time != std::chrono::system_clock::time_point{}
            ? std::to_string(std::chrono::duration<double>(msg->time.time_since_epoch()).count())
            : "";
    const std::string id = m ? internal::SafeText(msg->id) : "";
    const std::string type = m ? internal::SafeText(msg->type) : "";
    const std::string source = m ? internal::SafeText(msg->source) : "";
    const std::string ctype = m ? internal::SafeText(msg->datacontenttype) : "";
    const std::string tp = m ? internal::SafeText(msg->traceparent) : "";
    tx.exec_prepared0("converge_dead_letter", opts_.group, OrNull(id, m), rec.topic,
                      OrNull(key, !key.empty()), OrNull(seq, !seq.empty()), OrNull(type, m),
                      OrNull(source, m), pqxx::binarystring(rec.payload),
                      internal::HeadersJson(rec.headers), OrNull(ctype, m && !ctype.empty()),
                      OrNull(tp, m && !tp.empty()), OrNull(created, !created.empty()),
                      rec.partition, rec.offset, internal::SafeText(reason), code,
                      std::max(attempts, 1));
    log_.LogEvery("dead_letter", std::chrono::seconds(1), Level::kWarn, "message dead-lettered",
                  {{"topic", rec.topic},
                   {"partition", rec.partition},
                   {"offset", rec.offset},
                   {"error_code", code},
                   {"reason", reason}});
  }

  // ---- pruning ----

  void MaybePrune() {
    if (opts_.prune_interval.count() == 0 || clock_.Monotonic() < next_prune_) return;
    next_prune_ = clock_.Monotonic() + opts_.prune_interval;
    PruneNow();
  }

 public:
  // Deletes inbox rows of the owned partitions that are older than the dedupe window and below
  // the committed offset, prune_batch rows per statement (each its own short transaction).
  uint64_t PruneNow() {
    uint64_t total = 0;
    if (!conn_) return 0;
    const double window = static_cast<double>(opts_.dedupe_window.count());
    try {
      for (const auto& [tp, part] : parts_) {
        if (!part.claimed) continue;
        for (int round = 0; round < 100 && !stop_; ++round) {
          pqxx::work tx(*conn_);
          pqxx::result r = tx.exec_prepared("converge_prune", opts_.group, tp.topic, tp.partition,
                                            window, part.next_offset, opts_.prune_batch);
          tx.commit();
          total += r.affected_rows();
          if (r.affected_rows() < static_cast<size_t>(opts_.prune_batch)) break;
        }
      }
    } catch (const std::exception& e) {
      log_.LogEvery("prune", std::chrono::seconds(60), Level::kWarn, "inbox prune failed",
                    {{"error", pg::StatusFromException(e).ToString()}});
      if (!conn_->is_open()) conn_.reset();
    }
    if (total > 0) {
      std::lock_guard<std::mutex> lock(stats_mu_);
      stats_.pruned += total;
    }
    return total;
  }

 private:
  ConsumerOptions opts_;
  std::unique_ptr<broker::MessageSource> source_;
  const Clock& clock_;
  std::string member_id_;
  Backoff retry_backoff_;
  Backoff reconnect_backoff_;
  Logger log_;

  std::unique_ptr<pqxx::connection> conn_;
  std::map<TopicPartition, Part> parts_;
  std::map<std::pair<TopicPartition, int64_t>, Attempts> attempts_;
  // Handler failures of the fast path, settled by the careful re-run without calling the
  // handler again. Cleared after each committed batch.
  std::map<std::pair<TopicPartition, int64_t>, Status> pending_failures_;
  const ReceivedRecord* inflight_ = nullptr;
  bool handler_hit_aborted_tx_ = false;  // set by RunHandler
  // The handler time bound (min of handler_timeout and the source's MaxProcessingTime).
  std::optional<std::chrono::milliseconds> bound_;
  SteadyTime next_prune_{};
  bool initialized_ = false;
  bool closed_ = false;

  mutable std::mutex stats_mu_;
  ConsumerStats stats_;  // guarded by stats_mu_
  // Per owned partition: the stored next offset and the broker's high watermark (-1 unknown),
  // for the lag metric. Guarded by stats_mu_; refreshed after each commit.
  std::map<TopicPartition, std::pair<int64_t, int64_t>> positions_;

  // Set by RegisterMetrics before the consumer thread starts; observed on that thread.
  bool metrics_registered_ = false;
  metrics::Registry* registry_ = nullptr;
  std::shared_ptr<MetricsHub> hub_;
  metrics::Histogram* handler_hist_ = nullptr;
  metrics::Histogram* batch_hist_ = nullptr;

  std::mutex lifecycle_mu_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::mutex cv_mu_;
  std::condition_variable cv_;

  friend class Consumer;
};

// ---- Consumer ---------------------------------------------------------------------------------

Consumer::Consumer(ConsumerOptions options, std::unique_ptr<broker::MessageSource> source,
                   const Clock& clock)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(source), clock)) {}

Consumer::~Consumer() { Stop(); }

void Consumer::Handle(std::string type, Handler handler) {
  impl_->handlers_[std::move(type)] = std::move(handler);
}
void Consumer::SetDecoder(Decoder decoder) { impl_->decoder_ = std::move(decoder); }
Status Consumer::Start() { return impl_->Start(); }
void Consumer::Stop() { impl_->Stop(); }
Status Consumer::Init() { return impl_->Init(); }
Status Consumer::RunOnce() { return impl_->RunOnce(); }
void Consumer::Close() { impl_->Close(); }
uint64_t Consumer::PruneNow() { return impl_->PruneNow(); }
ConsumerStats Consumer::stats() const { return impl_->stats(); }
Status Consumer::RegisterMetrics(metrics::Registry& registry) {
  return impl_->RegisterMetrics(registry);
}
const std::string& Consumer::member_id() const { return impl_->member_id(); }

}  // namespace converge::consumer
