// The relay under test (the real converge-relay process) and the naive relay baseline.
#include <librdkafka/rdkafka.h>

#include <memory>
#include <thread>

#include "measurements.h"

namespace converge::bench {
namespace {

using std::chrono::milliseconds;

// True once `relays` live relays hold all 256 slots between them, evenly.
bool SlotsBalanced(pqxx::connection& conn, int relays) {
  pqxx::read_transaction tx(conn);
  auto r = tx.exec1(
      "SELECT count(DISTINCT owner), count(*), coalesce(max(n), 0) FROM ("
      "  SELECT owner, count(*) OVER (PARTITION BY owner) AS n FROM converge.relay_slots "
      "   WHERE owner IS NOT NULL AND lease_until > now()) s");
  const int target = (256 + relays - 1) / relays;
  return r[0].as<int>() == relays && r[1].as<int>() == 256 && r[2].as<int>() <= target;
}

}  // namespace

RelayResult MeasureRelay(const BenchDatabase& db, const std::string& relay_bin,
                         const std::string& brokers, const std::string& topic, long rows,
                         int relays, double idle_seconds, const std::string& log_path,
                         const std::vector<std::string>& extra_args) {
  db.Exec("TRUNCATE converge.outbox, converge.outbox_keys, converge.outbox_blocked_keys");
  auto conn = db.Connect();
  std::vector<std::unique_ptr<Child>> children;
  for (int i = 0; i < relays; ++i) {
    std::vector<std::string> args = {
        "--metrics.port=-1", "--log.level=warn",
        "--relay.instance_id=bench-" + topic + "-" + std::to_string(i)};
    // Several relays: renew every second so that the slots are shared out quickly.
    if (relays > 1) args.push_back("--relay.lease_renew_interval=1s");
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    children.push_back(std::make_unique<Child>(
        relay_bin, args,
        std::map<std::string, std::string>{{"CONVERGE_PG_URL", db.url()},
                                           {"CONVERGE_KAFKA_BROKERS", brokers}},
        log_path));
  }
  const auto balance_deadline = Clock::now() + std::chrono::seconds(60);
  while (!SlotsBalanced(*conn, relays)) {
    for (auto& c : children)
      if (!c->Running()) throw BenchError("converge-relay exited early; see " + log_path);
    if (Clock::now() > balance_deadline)
      throw BenchError("relays did not share the slots within 60 s; see " + log_path);
    std::this_thread::sleep_for(milliseconds(50));
  }

  // Warm-up, not timed (as the naive relay's first row and the publisher's first batch are
  // not): connections, topic metadata, the first claim's plan. (A relay's first publish to a
  // topic used to wait 0.6-0.9 s for librdkafka's topic scan, a third of the timed drain of
  // 100,000 rows; the publisher now asks for the metadata at once.) 1,000 keys reach every
  // relay's slots.
  FillOutbox(*conn, topic, 1000, 1000, "warm-");
  if (!WaitOutboxEmpty(*conn, std::chrono::seconds(60)))
    throw BenchError("the relays did not publish the warm-up rows within 60 s; see " + log_path);

  FillOutbox(*conn, topic, rows, 4096);
  const auto start = Clock::now();
  RelayResult result;
  const pid_t first = children[0]->pid();
  const double cpu_start = ReadProcCpuSeconds(first);
  const auto deadline = start + std::chrono::minutes(10);
  while (true) {
    const ProcMemory m = ReadProcMemory(first);
    result.rss_mb = std::max(result.rss_mb, m.rss_mb);
    pqxx::read_transaction tx(*conn);
    if (tx.exec("SELECT 1 FROM converge.outbox ORDER BY id LIMIT 1").empty()) break;
    tx.commit();
    if (Clock::now() > deadline) throw BenchError("the relays did not drain the outbox in 10 min");
    for (auto& c : children)
      if (!c->Running()) throw BenchError("converge-relay exited while draining; see " + log_path);
    std::this_thread::sleep_for(milliseconds(5));
  }
  const double drain_secs = SecondsSince(start);
  result.rows_per_s = static_cast<double>(rows) / drain_secs;
  result.drain_cpu_percent = 100.0 * (ReadProcCpuSeconds(first) - cpu_start) / drain_secs;
  result.hwm_mb = ReadProcMemory(first).hwm_mb;

  if (idle_seconds > 0) {
    std::this_thread::sleep_for(milliseconds(1000));  // let the last batch's work finish
    const double cpu0 = ReadProcCpuSeconds(first);
    const auto t0 = Clock::now();
    std::this_thread::sleep_for(std::chrono::duration<double>(idle_seconds));
    const double cpu1 = ReadProcCpuSeconds(first);
    result.idle_cpu_percent = 100.0 * (cpu1 - cpu0) / SecondsSince(t0);
  }
  for (auto& c : children)
    if (c->Stop(std::chrono::seconds(20)) != 0)
      throw BenchError("converge-relay did not exit cleanly on SIGTERM; see " + log_path);
  return result;
}

namespace {

struct KafkaDeleter {
  void operator()(rd_kafka_t* rk) const { rd_kafka_destroy(rk); }
};

// Delivery report: record the error code of the message in its opaque.
void OnDelivery(rd_kafka_t*, const rd_kafka_message_t* m, void*) {
  *static_cast<rd_kafka_resp_err_t*>(m->_private) = m->err;
}

std::unique_ptr<rd_kafka_t, KafkaDeleter> NaiveProducer(const std::string& brokers) {
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  auto set = [&](const char* k, const std::string& v) {
    if (rd_kafka_conf_set(conf, k, v.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
      rd_kafka_conf_destroy(conf);
      throw BenchError(std::string("librdkafka ") + k + ": " + err);
    }
  };
  set("bootstrap.servers", brokers);
  set("acks", "all");
  set("enable.idempotence", "true");
  rd_kafka_conf_set_dr_msg_cb(conf, OnDelivery);
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (rk == nullptr) {
    rd_kafka_conf_destroy(conf);  // rd_kafka_new takes the conf only when it succeeds
    throw BenchError(std::string("rd_kafka_new: ") + err);
  }
  return std::unique_ptr<rd_kafka_t, KafkaDeleter>(rk);
}

}  // namespace

double NaiveRelay(const BenchDatabase& db, const std::string& brokers, const std::string& topic,
                  long rows, double max_seconds) {
  db.Exec("TRUNCATE converge.outbox, converge.outbox_keys, converge.outbox_blocked_keys");
  auto conn = db.Connect();
  FillOutbox(*conn, topic, rows, 4096);
  auto producer = NaiveProducer(brokers);
  long done = 0;
  auto start = Clock::now();
  while (done < rows && SecondsSince(start) < max_seconds) {
    pqxx::work tx(*conn);
    auto r = tx.exec(
        "SELECT id, message_id::text, topic, key, type, source, payload FROM converge.outbox "
        "ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED");
    if (r.empty()) break;
    const auto& row = r[0];
    pqxx::binarystring payload(row[6]);
    const std::string key = row[3].c_str();
    const std::string id = row[1].c_str(), type = row[4].c_str(), source = row[5].c_str();
    rd_kafka_resp_err_t delivery = RD_KAFKA_RESP_ERR__IN_PROGRESS;
    rd_kafka_resp_err_t err = rd_kafka_producev(
        producer.get(), RD_KAFKA_V_TOPIC(row[2].c_str()), RD_KAFKA_V_KEY(key.data(), key.size()),
        RD_KAFKA_V_VALUE(const_cast<unsigned char*>(payload.data()), payload.size()),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_HEADER("ce_id", id.data(), static_cast<ssize_t>(id.size())),
        RD_KAFKA_V_HEADER("ce_type", type.data(), static_cast<ssize_t>(type.size())),
        RD_KAFKA_V_HEADER("ce_source", source.data(), static_cast<ssize_t>(source.size())),
        RD_KAFKA_V_HEADER("ce_specversion", "1.0", 3), RD_KAFKA_V_OPAQUE(&delivery),
        RD_KAFKA_V_END);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
      throw BenchError(std::string("naive relay produce: ") + rd_kafka_err2str(err));
    // Wait for this message's delivery report (flush sends at once, ignoring linger.ms).
    rd_kafka_flush(producer.get(), 10000);
    if (delivery != RD_KAFKA_RESP_ERR_NO_ERROR)
      throw BenchError(std::string("naive relay delivery: ") + rd_kafka_err2str(delivery));
    tx.exec_params0("DELETE FROM converge.outbox WHERE id = $1", row[0].as<int64_t>());
    tx.commit();
    // The clock starts after the first row: the producer's connection set-up (metadata,
    // idempotent producer id) is not throughput.
    if (++done == 1) start = Clock::now();
  }
  const double secs = SecondsSince(start);
  if (done < 2) throw BenchError("naive relay published fewer than 2 rows");
  return static_cast<double>(done - 1) / secs;
}

}  // namespace converge::bench
