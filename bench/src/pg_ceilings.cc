// PostgreSQL ceilings: what the database does for the relay's and the consumer's statement
// shapes with no Converge code and no broker. Ratios in the report divide by these.
#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "converge/schemas/pg.h"
#include "measurements.h"

namespace converge::bench {
namespace {

// Copied from outbox-relay/src/outbox_store.cc (kClaimSql): the same columns, predicates and
// order, so the ceiling reads what the relay reads, and run the same way (prepared, generic
// plan: no planning per claim). Only the relay's exclusion of in-flight keys is left out.
constexpr const char* kClaimSql = R"sql(
SELECT o.id, o.message_id::text, o.topic, o.key, o.seq, o.slot, o.type, o.source, o.payload,
       CASE WHEN o.headers <> '{}' THEN
         (SELECT string_agg(encode(convert_to(h.key, 'UTF8'), 'hex') || ':' ||
                            encode(convert_to(h.value, 'UTF8'), 'hex'), ',')
            FROM jsonb_each_text(o.headers) h) END,
       o.content_type, o.traceparent,
       (extract(epoch FROM o.created_at) * 1000)::bigint,
       (extract(epoch FROM o.expires_at) * 1000)::bigint,
       o.attempts,
       coalesce(o.expires_at <= now(), false)
  FROM converge.outbox o
 WHERE get_bit($1::varbit, o.slot) = 1
   AND NOT EXISTS (SELECT 1 FROM converge.outbox_blocked_keys b
                    WHERE b.topic = o.topic AND b.key = o.key
                      AND (b.parked OR b.blocked_until > now()))
 ORDER BY o.id
 LIMIT $2
)sql";

std::string AllSlots() { return std::string(256, '1'); }  // bit n set: slot n

}  // namespace

double ClaimDeleteCeiling(const BenchDatabase& db, long rows, int batch) {
  auto conn = db.Connect();
  db.Exec("TRUNCATE converge.outbox");
  FillOutbox(*conn, "ceiling", rows, 4096);
  db.Exec("VACUUM ANALYZE converge.outbox");
  const std::string slots = AllSlots();
  pqxx::nontransaction(*conn).exec("SET plan_cache_mode = force_generic_plan");
  conn->prepare("ceiling_claim", kClaimSql);
  conn->prepare("ceiling_delete", "DELETE FROM converge.outbox WHERE id = ANY($1::bigint[])");
  long done = 0;
  const auto start = Clock::now();
  while (true) {
    std::string ids = "{";
    size_t n = 0;
    {
      pqxx::read_transaction tx(*conn);
      for (const auto& row : tx.exec_prepared("ceiling_claim", slots, batch)) {
        // Read every column, as the relay does when it builds its messages.
        for (const auto& f : row) (void)f.c_str();
        if (n++ > 0) ids += ',';
        ids += row[0].c_str();
      }
      tx.commit();
    }
    if (n == 0) break;
    pqxx::work tx(*conn);
    tx.exec_prepared0("ceiling_delete", ids + "}");
    tx.commit();
    done += static_cast<long>(n);
  }
  const double secs = SecondsSince(start);
  if (done != rows)
    throw BenchError("claim+delete ceiling deleted " + std::to_string(done) + " rows, expected " +
                     std::to_string(rows));
  return static_cast<double>(done) / secs;
}

ConsumerCeilings MeasureConsumerCeilings(const BenchDatabase& db, long batched_rows,
                                         long single_rows, int batch) {
  auto conn = db.Connect();
  db.Exec("CREATE TABLE IF NOT EXISTS bench_effects (id text NOT NULL, payload text)");
  db.Exec(
      "INSERT INTO converge.consumer_offsets (consumer_group, topic, partition, next_offset, "
      "owner, epoch) VALUES ('ceiling', 'ceiling', 0, 0, 'bench', 1) ON CONFLICT DO NOTHING");
  // The dedupe rows of a whole transaction in one multi-row statement, as the runtime writes
  // them (it must not do less: a row per message, with the payload hash); the business INSERT
  // stays one statement per message, as a handler does.
  conn->prepare("inbox",
                "INSERT INTO converge.inbox (consumer_group, message_id, payload_hash, topic, "
                "partition, \"offset\") SELECT 'ceiling', u.id::uuid, "
                "sha256(convert_to(u.payload, 'UTF8')), 'ceiling', 0, u.off "
                "FROM unnest($1::text[], $2::text[], $3::bigint[]) AS u(id, payload, off)");
  conn->prepare("effect", "INSERT INTO bench_effects (id, payload) VALUES ($1, $2)");
  conn->prepare("offset",
                "UPDATE converge.consumer_offsets SET next_offset = $1, updated_at = now() "
                "WHERE consumer_group = 'ceiling' AND topic = 'ceiling' AND partition = 0 "
                "AND owner = 'bench' AND epoch = 1");
  const std::string payload = "{\"n\":1,\"pad\":\"" + std::string(100, 'x') + "\"}";
  // Called once per round: carry on after the previous round's dedupe rows.
  long offset = pqxx::nontransaction(*conn)
                    .exec1(
                        "SELECT coalesce(max(\"offset\") + 1, 0) FROM converge.inbox WHERE "
                        "consumer_group = 'ceiling'")[0]
                    .as<long>();
  auto run = [&](long rows, int per_commit) {
    const auto start = Clock::now();
    for (long done = 0; done < rows;) {
      pqxx::work tx(*conn);
      std::vector<std::string> ids, payloads;
      std::vector<long> offsets;
      for (int i = 0; i < per_commit && done + i < rows; ++i) {
        // A UUID that is unique per message (the inbox key).
        char id[40];
        std::snprintf(id, sizeof id, "00000000-0000-7000-8000-%012ld", offset + i);
        ids.emplace_back(id);
        payloads.push_back(payload);
        offsets.push_back(offset + i);
      }
      tx.exec_prepared0("inbox", pg::TextArrayLiteral(ids), pg::TextArrayLiteral(payloads),
                        pg::IntArrayLiteral(offsets));
      for (const auto& id : ids) tx.exec_prepared0("effect", id, payload);
      done += static_cast<long>(ids.size());
      offset += static_cast<long>(ids.size());
      tx.exec_prepared0("offset", offset);
      tx.commit();
    }
    return static_cast<double>(rows) / SecondsSince(start);
  };
  ConsumerCeilings c;
  c.batched_rows_per_s = run(batched_rows, batch);
  c.single_rows_per_s = run(single_rows, 1);
  return c;
}

WriterCeilings MeasureWriterCeilings(const BenchDatabase& db, int connections, double seconds) {
  db.Exec("CREATE TABLE IF NOT EXISTS bench_writes (id bigserial PRIMARY KEY, v text)");
  auto run = [&](bool notify) {
    std::atomic<long> commits{0};
    std::vector<std::thread> threads;
    std::string failure;
    std::mutex mu;
    const auto start = Clock::now();
    for (int i = 0; i < connections; ++i) {
      threads.emplace_back([&] {
        try {
          auto conn = db.Connect();
          while (SecondsSince(start) < seconds) {
            pqxx::work tx(*conn);
            tx.exec0("INSERT INTO bench_writes (v) VALUES ('x')");
            if (notify) tx.exec("SELECT pg_notify('bench_writes', '')");
            tx.commit();
            ++commits;
          }
        } catch (const std::exception& e) {
          std::lock_guard<std::mutex> lock(mu);
          failure = e.what();
        }
      });
    }
    for (auto& t : threads) t.join();
    if (!failure.empty()) throw BenchError("writer ceiling: " + failure);
    return static_cast<double>(commits.load()) / SecondsSince(start);
  };
  WriterCeilings w;
  w.insert_commits_per_s = run(false);
  w.notify_commits_per_s = run(true);
  return w;
}

}  // namespace converge::bench
