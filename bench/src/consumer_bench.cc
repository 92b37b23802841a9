// The consumer runtime under test (converge::consumer::Consumer with the Kafka source) and the
// end-to-end latency run (writers → outbox → converge-relay → Kafka → Consumer).
#include <algorithm>
#include <atomic>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "converge/broker/kafka.h"
#include "converge/common/uuid.h"
#include "converge/consumer/consumer.h"
#include "converge/outbox/outbox.h"
#include "converge/testing/pg_cluster.h"
#include "converge/testing/process.h"
#include "measurements.h"

namespace converge::bench {
namespace {

using namespace std::chrono_literals;

int fetch_wait_ms = 0;
int FetchWaitMs() { return fetch_wait_ms; }

std::unique_ptr<consumer::Consumer> NewConsumer(const BenchDatabase& db, const std::string& brokers,
                                                const std::string& topic, int batch,
                                                consumer::Handler handler) {
  broker::KafkaSourceOptions so;
  so.bootstrap_servers = brokers;
  so.group_id = "bench-" + topic;
  if (FetchWaitMs() > 0) so.properties["fetch.wait.max.ms"] = std::to_string(FetchWaitMs());
  auto source = broker::MakeKafkaSource(so);
  if (!source.ok()) throw BenchError("Kafka source: " + source.status().ToString());
  consumer::ConsumerOptions co;
  co.group = so.group_id;
  co.topics = {topic};
  co.database_url = db.url();
  co.max_batch_records = static_cast<size_t>(batch);
  auto c = std::make_unique<consumer::Consumer>(co, std::move(source).value());
  c->Handle("bench.event", std::move(handler));
  if (Status st = c->Init(); !st.ok()) throw BenchError("consumer Init: " + st.ToString());
  return c;
}

// The same prepared INSERT the consumer ceiling runs (pg_ceilings.cc), so that the ratio
// compares the runtime's own work, not a parse per row that the ceiling does not pay.
// (libpqxx 6 prepares lazily and ignores a repeated identical definition.)
Status InsertEffect(const Message& m, consumer::Context& ctx) {
  ctx.tx().conn().prepare("bench_effect",
                          "INSERT INTO bench_effects (id, payload) VALUES ($1, $2)");
  ctx.tx().exec_prepared0("bench_effect", m.id, m.payload);
  return Status::Ok();
}

// Publishes `rows` records in PublishBatch calls of `batch`; returns rows per second.
double Publish(const std::string& brokers, const std::string& topic, long rows, int batch) {
  broker::KafkaOptions po;
  po.bootstrap_servers = brokers;
  auto pub = broker::MakeKafkaPublisher(po);
  if (!pub.ok()) throw BenchError("Kafka publisher: " + pub.status().ToString());
  const std::string pad(100, 'x');
  double busy = 0;  // seconds inside PublishBatch, not counting the first (connection set-up)
  long timed = 0;
  for (long start = 0; start < rows; start += batch) {
    std::vector<Message> messages;
    for (long i = start; i < std::min(rows, start + batch); ++i) {
      Message m;
      m.id = NewUuidV7().ToString();
      m.source = "/bench";
      m.type = "bench.event";
      m.topic = topic;
      m.subject = "key-" + std::to_string(i % 4096);
      m.payload = "{\"n\":" + std::to_string(i) + ",\"pad\":\"" + pad + "\"}";
      messages.push_back(std::move(m));
    }
    std::vector<const Message*> ptrs;
    for (const auto& m : messages) ptrs.push_back(&m);
    const auto t0 = Clock::now();
    for (const auto& r : (*pub)->PublishBatch(ptrs, 60s))
      if (!r.status.ok()) throw BenchError("publishing to Kafka: " + r.status.ToString());
    if (start > 0) {
      busy += SecondsSince(t0);
      timed += static_cast<long>(ptrs.size());
    }
  }
  (*pub)->Close(10s);
  return busy > 0 ? static_cast<double>(timed) / busy : 0;
}

}  // namespace

void SetConsumerFetchWait(int ms) { fetch_wait_ms = ms; }

double PublisherAlone(const std::string& brokers, const std::string& topic, long rows, int batch) {
  // The first batch (connection set-up) is not timed, so tiny runs use smaller batches.
  const long b = std::max<long>(1, std::min<long>(batch, rows / 4));
  return Publish(brokers, topic, rows, static_cast<int>(b));
}

double ConsumerThroughput(const BenchDatabase& db, const std::string& brokers,
                          const std::string& topic, long rows, int batch) {
  db.Exec("CREATE TABLE IF NOT EXISTS bench_effects (id text NOT NULL, payload text)");
  Publish(brokers, topic, rows, 2000);
  auto c = NewConsumer(db, brokers, topic, batch, InsertEffect);
  // The clock starts after the first committed batch: group join and partition claims are not
  // throughput.
  const auto join_deadline = Clock::now() + 60s;
  while (c->stats().consumed == 0) {
    if (Status st = c->RunOnce(); !st.ok()) throw BenchError("consumer: " + st.ToString());
    if (Clock::now() > join_deadline) throw BenchError("consumer got no record within 60 s");
  }
  const uint64_t first = c->stats().consumed;
  const auto start = Clock::now();
  const auto deadline = start + 10min;
  while (c->stats().consumed < static_cast<uint64_t>(rows)) {
    if (Status st = c->RunOnce(); !st.ok()) throw BenchError("consumer: " + st.ToString());
    if (Clock::now() > deadline) throw BenchError("consumer did not finish within 10 min");
  }
  const double secs = SecondsSince(start);
  const auto st = c->stats();
  c->Close();
  if (st.applied != static_cast<uint64_t>(rows))
    throw BenchError("consumer applied " + std::to_string(st.applied) + " of " +
                     std::to_string(rows) +
                     " records (dead letters: " + std::to_string(st.dead_letters) + ")");
  return static_cast<double>(rows - static_cast<long>(first)) / secs;
}

LatencyResult MeasureEndToEnd(const BenchDatabase& db, const std::string& relay_bin,
                              const std::string& brokers, const std::string& topic, double rate,
                              double seconds, const std::string& log_path) {
  db.Exec("CREATE TABLE IF NOT EXISTS bench_effects (id text NOT NULL, payload text)");
  const int metrics_port = converge::testing::FreeLoopbackPort();
  Child relay(relay_bin, {"--metrics.port=" + std::to_string(metrics_port), "--log.level=warn"},
              {{"CONVERGE_PG_URL", db.url()}, {"CONVERGE_KAFKA_BROKERS", brokers}}, log_path);

  using SysTime = std::chrono::system_clock::time_point;
  struct Stamp {
    Clock::time_point at;  // for the latency (monotonic)
    SysTime wall;          // for the stage split (the Kafka timestamp is wall-clock)
  };
  struct Seen {
    SysTime produced;  // the record's Kafka timestamp: when the relay handed it to librdkafka
    SysTime handled;   // when the handler ran
  };
  std::mutex mu;
  std::unordered_map<std::string, Stamp> committed, applied;
  std::unordered_map<std::string, Seen> seen;
  std::vector<std::string> in_batch;  // ids the current consumer transaction applied
  auto c = NewConsumer(db, brokers, topic, 500, [&](const Message& m, consumer::Context& ctx) {
    Status st = InsertEffect(m, ctx);
    in_batch.push_back(m.id);
    seen[m.id] = {ctx.record().broker_time, std::chrono::system_clock::now()};
    return st;
  });
  auto run_once = [&] {
    in_batch.clear();
    if (Status st = c->RunOnce(); !st.ok()) throw BenchError("consumer: " + st.ToString());
    // RunOnce returned: the batch transaction has committed.
    const Stamp now{Clock::now(), std::chrono::system_clock::now()};
    std::lock_guard<std::mutex> lock(mu);
    for (const auto& id : in_batch) applied.emplace(id, now);
  };

  // Warm-up: one message through the whole path, so that the relay holds its slots and the
  // consumer its partitions before the clock runs.
  // Enqueues rows n .. n+count-1 in one transaction; returns their ids and the commit time.
  auto enqueue = [&](pqxx::connection& conn, long n, int count) {
    std::vector<outbox::OutboxMessage> rows;
    for (long i = n; i < n + count; ++i)
      rows.push_back({.topic = topic,
                      .key = "key-" + std::to_string((i + 4096) % 4096),
                      .type = "bench.event",
                      .payload = "{\"n\":" + std::to_string(i) + "}"});
    pqxx::work tx(conn);
    auto e = outbox::EnqueueMany(tx, rows);
    if (!e.ok()) throw BenchError("enqueue: " + e.status().ToString());
    tx.commit();
    const Stamp at{Clock::now(), std::chrono::system_clock::now()};
    std::vector<std::pair<std::string, Stamp>> out;
    for (const auto& x : *e) out.emplace_back(x.message_id, at);
    return out;
  };
  {
    auto conn = db.Connect();
    enqueue(*conn, -1, 1);
    const auto deadline = Clock::now() + 60s;
    while (c->stats().applied == 0) {
      run_once();
      if (!relay.Running()) throw BenchError("converge-relay exited; see " + log_path);
      if (Clock::now() > deadline) throw BenchError("e2e warm-up message not applied in 60 s");
    }
    std::lock_guard<std::mutex> lock(mu);
    applied.clear();
  }

  // Writers commit `per_tx` rows per transaction, at most ~200 transactions per second in all:
  // converge.enqueue's pg_notify serializes committing transactions (PostgreSQL holds a
  // database-wide lock from the NOTIFY queue insert through the WAL flush), so on a disk with
  // ~5 ms flushes one row per transaction cannot offer more than ~200 msg/s. See
  // docs/benchmarks.md.
  const int per_tx = std::max(1, static_cast<int>(rate / 200));
  const int writers = rate > 100 ? 2 : 1;
  std::atomic<bool> failed{false};
  std::string failure;
  std::atomic<int> writers_done{0};
  std::vector<std::thread> threads;
  const auto start = Clock::now();
  for (int w = 0; w < writers; ++w) {
    threads.emplace_back([&, w] {
      try {
        auto conn = db.Connect();
        const auto interval = std::chrono::duration<double>(writers * per_tx / rate);
        const long count = static_cast<long>(rate * seconds / (writers * per_tx));
        for (long i = 0; i < count && !failed; ++i) {
          std::this_thread::sleep_until(start + std::chrono::duration_cast<Clock::duration>(
                                                    interval * static_cast<double>(i)));
          auto done = enqueue(*conn, (i * writers + w) * per_tx, per_tx);
          std::lock_guard<std::mutex> lock(mu);
          for (auto& [id, at] : done) committed.emplace(std::move(id), at);
        }
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(mu);
        failure = e.what();
        failed = true;
      }
      ++writers_done;
    });
  }
  double write_secs = 0;
  // A saturated rate never drains; stop waiting this long after the writers' schedule ends.
  const double grace = std::max(10.0, 2 * seconds);
  const auto deadline = start + std::chrono::duration<double>(seconds + grace);
  while (true) {
    run_once();
    if (writers_done == writers) {
      if (write_secs == 0) write_secs = SecondsSince(start);
      std::lock_guard<std::mutex> lock(mu);
      if (applied.size() >= committed.size()) break;
    }
    if (failed || Clock::now() > deadline || !relay.Running()) break;
  }
  for (auto& t : threads) t.join();
  c->Close();
  if (failed) throw BenchError("e2e writer: " + failure);
  if (!relay.Running())
    throw BenchError("converge-relay exited during the e2e run; see " + log_path);

  std::vector<double> ms, relay_ms, transit_ms, commit_ms;
  auto millis = [](auto d) { return std::chrono::duration<double, std::milli>(d).count(); };
  const auto end = Clock::now();
  long unapplied = 0;
  for (const auto& [id, at] : committed) {
    auto it = applied.find(id);
    if (it == applied.end()) {
      ++unapplied;
      ms.push_back(millis(end - at.at));  // a lower bound
      continue;
    }
    ms.push_back(millis(it->second.at - at.at));
    const Seen& s = seen[id];
    relay_ms.push_back(millis(s.produced - at.wall));
    transit_ms.push_back(millis(s.handled - s.produced));
    commit_ms.push_back(millis(it->second.wall - s.handled));
  }
  LatencyResult r;
  r.stages = {
      {"writer commit → relay produce", Percentile(relay_ms, 50), Percentile(relay_ms, 99)},
      {"produce → consumer handler", Percentile(transit_ms, 50), Percentile(transit_ms, 99)},
      {"handler → consumer commit", Percentile(commit_ms, 50), Percentile(commit_ms, 99)}};
  r.offered_per_s = rate;
  r.rows_per_transaction = per_tx;
  r.unapplied = unapplied;
  r.grace_seconds = grace;
  r.messages = static_cast<long>(ms.size());
  r.achieved_per_s = static_cast<double>(ms.size()) / write_secs;
  r.p50_ms = Percentile(ms, 50);
  r.p99_ms = Percentile(ms, 99);
  r.p999_ms = Percentile(ms, 99.9);
  r.max_ms = ms.empty() ? 0 : ms.back();
  // Empty (not measured) when the endpoint does not answer.
  const std::string metrics = converge::testing::HttpGet(metrics_port, "/metrics");
  const std::string hist = "converge_relay_commit_to_confirm_seconds";
  if (auto b = HistogramQuantileBound(metrics, hist, 0.50)) r.confirm_p50_le_ms = *b * 1000;
  if (auto b = HistogramQuantileBound(metrics, hist, 0.99)) r.confirm_p99_le_ms = *b * 1000;
  relay.Stop(20s);
  return r;
}

}  // namespace converge::bench
