#include "outbox_store.h"

#include <algorithm>
#include <set>

#include "converge/schemas/pg.h"

namespace converge::outbox {
namespace {

// Headers travel from SQL as "hexname:hexvalue,..." so no JSON parser is needed here. Rows
// without headers skip the aggregate (NULL): the per-row jsonb_each_text subquery was 2.3 of
// 3.4 ms of a 1,000-row claim (EXPLAIN ANALYZE, 100,000-row backlog).
std::string Unhex(std::string_view hex) {
  std::string out;
  out.reserve(hex.size() / 2);
  auto v = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return 0;
  };
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<char>(v(hex[i]) << 4 | v(hex[i + 1])));
  return out;
}

void ParseHeaders(std::string_view text, std::map<std::string, std::string>* out) {
  while (!text.empty()) {
    const auto comma = text.find(',');
    const std::string_view pair = text.substr(0, comma);
    const auto colon = pair.find(':');
    if (colon != std::string_view::npos)
      (*out)[Unhex(pair.substr(0, colon))] = Unhex(pair.substr(colon + 1));
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
}

// Prepared once per connection and run with generic plans (plan_cache_mode, see Connect), so
// no claim pays for planning; each filter is written so that its generic form stays cheap per
// row. The owned slots are a bit string (bit n set: slot n owned), one get_bit per row: a
// generic plan tests `slot = ANY($1)` by a linear search of the array, which with three relays
// (86 slots each, a claim skipping the other relays' 35,000 rows) took 15 ms per claim. The
// in-flight keys are a hashed subplan (`NOT IN (SELECT unnest(...))`).
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
   AND (cardinality($3::text[]) = 0 OR o.topic ~ ANY($3::text[]))
   AND NOT (o.topic ~ ANY($4::text[]))
   AND NOT EXISTS (SELECT 1 FROM converge.outbox_blocked_keys b
                    WHERE b.topic = o.topic AND b.key = o.key
                      AND (b.parked OR b.blocked_until > now()))
   AND (o.topic || E'\x01' || o.key) NOT IN (SELECT unnest($5::text[]))
 ORDER BY o.id
 LIMIT $2
)sql";

// The common outcome (every row confirmed, none of them clearing a retry block) in one
// statement: the fence (the batch's slots this relay still holds, share-locked against
// takeover until the statement ends) and the delete of the rows of those slots. Returns the
// rows deleted and the rows fenced (slot no longer held). $3 holds the batch's distinct slots,
// $4 each row's slot. When every slot is held (the rule) the delete tests that once, not per
// row, and the fenced count is not computed: the per-row `slot = ANY(held)`, a linear search
// in a generic plan, was ~1.3 of the 5 ms of a 1,000-row delete. (Not `slot IN (SELECT ...)`:
// with relay_slots' statistics from before the leases the planner expected one held slot and
// rescanned them per deleted row, 135 ms per 1,000-row delete in the benchmark.)
constexpr const char* kDeleteConfirmedSql = R"sql(
WITH valid AS (SELECT slot FROM converge.relay_slots
                WHERE owner = $1 AND lease_until > now() AND slot = ANY($3::smallint[])
                FOR SHARE),
     held AS (SELECT coalesce(array_agg(slot), '{}') AS slots,
                     count(*) = cardinality($3::smallint[]) AS all_held
                FROM valid),
     del AS (DELETE FROM converge.outbox
              WHERE id = ANY($2::bigint[])
                AND ((SELECT all_held FROM held)
                     OR slot = ANY((SELECT slots FROM held)::smallint[]))
             RETURNING 1)
SELECT (SELECT count(*) FROM del),
       CASE WHEN (SELECT all_held FROM held) THEN 0
            ELSE (SELECT count(*) FROM unnest($4::smallint[]) AS s(slot)
                   WHERE NOT s.slot = ANY((SELECT slots FROM held)::smallint[])) END
)sql";

// The claim's slot set as a bit string literal: character n is '1' when slot n is in `slots`.
std::string SlotBits(const std::vector<int>& slots) {
  std::string bits(kSlotCount, '0');
  for (int s : slots)
    if (s >= 0 && s < kSlotCount) bits[static_cast<size_t>(s)] = '1';
  return bits;
}

}  // namespace

OutboxStore::OutboxStore(std::string url, std::string owner)
    : url_(std::move(url)), owner_(std::move(owner)) {}

Status OutboxStore::Connect() {
  auto c = pg::Connect(url_);
  if (!c.ok()) return c.status();
  try {
    // The claim walks the outbox in id order and stops after `limit` rows. With keys excluded
    // (those of the batches at the broker) the planner misjudges NOT (key = ANY(<1,000 keys>))
    // as dropping nearly every row, and chose a scan of the whole table plus a sort, in parallel
    // workers whose start alone cost ~40 ms: 180 ms per claim of 1,000 rows from a 100,000-row
    // backlog, which made the relay claim-bound. The id-ordered index walk takes 7 ms. This
    // connection runs only the relay's own statements, so the session settings are safe: a sort
    // is still used where nothing else can answer (enable_sort only penalizes it). Generic
    // plans: a custom plan cost 2.1 ms of planning per 1,000-row claim (its estimates walk the
    // literal arrays) and 1.3 ms per delete, against 7 ms of execution (server log, benchmark).
    pqxx::nontransaction(**c).exec(
        "SET enable_sort = off; SET max_parallel_workers_per_gather = 0; "
        "SET plan_cache_mode = force_generic_plan");
    (*c)->prepare("converge_claim", kClaimSql);
    (*c)->prepare("converge_delete_confirmed", kDeleteConfirmedSql);
  } catch (const std::exception& e) {
    return pg::StatusFromException(e);
  }
  conn_ = std::move(c).value();
  return Status::Ok();
}

Status OutboxStore::Fail(const std::exception& e) {
  Status st = pg::StatusFromException(e);
  if (st.code() == StatusCode::kUnavailable || st.code() == StatusCode::kDeadlineExceeded)
    conn_.reset();  // reconnect next time
  return st;
}

Result<std::vector<OutboxRow>> OutboxStore::Claim(const std::vector<int>& slots, int limit,
                                                  const TopicFilter& filter,
                                                  const std::vector<std::string>& exclude_keys) {
  if (!conn_) return Status::Unavailable("not connected");
  std::vector<OutboxRow> rows;
  if (slots.empty()) return rows;
  try {
    // One SELECT is atomic on its own: no BEGIN/COMMIT round trips around it.
    pqxx::nontransaction tx(*conn_);
    auto r = tx.exec_prepared(
        "converge_claim", SlotBits(slots), limit, pg::TextArrayLiteral(filter.include),
        pg::TextArrayLiteral(filter.exclude), pg::TextArrayLiteral(exclude_keys));
    rows.reserve(r.size());
    for (const auto& f : r) {
      OutboxRow row;
      row.id = f[0].as<int64_t>();
      Message& m = row.message;
      m.id = f[1].as<std::string>();
      m.topic = f[2].as<std::string>();
      m.subject = f[3].as<std::string>();
      m.sequence = f[4].as<int64_t>();
      row.slot = f[5].as<int>();
      m.type = f[6].as<std::string>();
      m.source = f[7].as<std::string>();
      pqxx::binarystring payload(f[8]);
      m.payload.assign(payload.get(), payload.size());
      if (!f[9].is_null()) ParseHeaders(f[9].c_str(), &m.headers);
      m.datacontenttype = f[10].as<std::string>();
      if (!f[11].is_null()) m.traceparent = f[11].as<std::string>();
      row.created_at =
          std::chrono::system_clock::time_point(std::chrono::milliseconds(f[12].as<int64_t>()));
      m.time = row.created_at;
      if (!f[13].is_null())
        m.expires_at =
            std::chrono::system_clock::time_point(std::chrono::milliseconds(f[13].as<int64_t>()));
      row.attempts = f[14].as<int>();
      row.was_blocked = row.attempts > 0;
      row.expired = f[15].as<bool>();
      rows.push_back(std::move(row));
    }
    return rows;
  } catch (const std::exception& e) {
    return Fail(e);
  }
}

Result<CompleteResult> OutboxStore::Complete(const std::vector<OutboxRow>& rows,
                                             const BatchOutcome& outcome) {
  if (!conn_) return Status::Unavailable("not connected");
  CompleteResult result;
  const bool only_confirmed = outcome.retry.empty() && outcome.dead.empty() &&
                              std::none_of(outcome.published.begin(), outcome.published.end(),
                                           [&](size_t i) { return rows[i].was_blocked; });
  if (only_confirmed) {
    if (outcome.published.empty()) return result;
    std::vector<int64_t> ids;
    std::vector<int> slots;
    ids.reserve(outcome.published.size());
    slots.reserve(outcome.published.size());
    for (size_t i : outcome.published) {
      ids.push_back(rows[i].id);
      slots.push_back(rows[i].slot);
    }
    try {
      pqxx::nontransaction tx(*conn_);
      std::vector<int> distinct(slots);
      std::sort(distinct.begin(), distinct.end());
      distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
      auto r = tx.exec_prepared("converge_delete_confirmed", owner_, pg::IntArrayLiteral(ids),
                                pg::IntArrayLiteral(distinct), pg::IntArrayLiteral(slots));
      result.deleted = r[0][0].as<size_t>();
      result.fenced = r[0][1].as<size_t>();
      return result;
    } catch (const std::exception& e) {
      return Fail(e);
    }
  }
  try {
    pqxx::work tx(*conn_);
    // Fence: the slots this relay still holds, locked against takeover until commit.
    std::set<int> valid;
    for (const auto& f : tx.exec_params(
             "SELECT slot FROM converge.relay_slots WHERE owner = $1 AND lease_until > now() "
             "FOR SHARE",
             owner_))
      valid.insert(f[0].as<int>());
    auto owned = [&](size_t i) { return valid.count(rows[i].slot) > 0; };

    std::vector<int64_t> del_ids;
    std::vector<std::string> unblock_topics, unblock_keys;
    for (size_t i : outcome.published) {
      if (!owned(i)) {
        ++result.fenced;
        continue;
      }
      del_ids.push_back(rows[i].id);
      if (rows[i].was_blocked) {
        unblock_topics.push_back(rows[i].message.topic);
        unblock_keys.push_back(rows[i].message.subject);
      }
    }
    if (!del_ids.empty()) {
      auto r = tx.exec_params("DELETE FROM converge.outbox WHERE id = ANY($1::bigint[])",
                              pg::IntArrayLiteral(del_ids));
      result.deleted = r.affected_rows();
    }
    if (!unblock_keys.empty()) {
      tx.exec_params(
          "DELETE FROM converge.outbox_blocked_keys b USING unnest($1::text[], $2::text[]) "
          "AS u(topic, key) WHERE b.topic = u.topic AND b.key = u.key AND NOT b.parked",
          pg::TextArrayLiteral(unblock_topics), pg::TextArrayLiteral(unblock_keys));
    }
    for (const auto& r : outcome.retry) {
      if (!owned(r.row)) {
        ++result.fenced;
        continue;
      }
      const OutboxRow& row = rows[r.row];
      tx.exec_params(
          "UPDATE converge.outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1",
          row.id, r.error);
      tx.exec_params(
          "INSERT INTO converge.outbox_blocked_keys "
          "  (topic, key, parked, blocked_until, reason, message_id) "
          "VALUES ($1, $2, false, now() + $3 * interval '1 millisecond', $4, $5::uuid) "
          "ON CONFLICT (topic, key) DO UPDATE SET blocked_until = excluded.blocked_until, "
          "  reason = excluded.reason, message_id = excluded.message_id "
          "  WHERE NOT converge.outbox_blocked_keys.parked",
          row.message.topic, row.message.subject, static_cast<int64_t>(r.backoff.count()),
          "retrying: " + r.error, row.message.id);
    }
    for (const auto& d : outcome.dead) {
      if (!owned(d.row)) {
        ++result.fenced;
        continue;
      }
      const OutboxRow& row = rows[d.row];
      tx.exec_params(
          "WITH moved AS (DELETE FROM converge.outbox WHERE id = $1 RETURNING *) "
          "INSERT INTO converge.dead_letters (origin, outbox_id, message_id, topic, key, seq, "
          "  type, source, payload, headers, content_type, traceparent, created_at, expires_at, "
          "  reason, error_code, attempts) "
          "SELECT 'relay', id, message_id, topic, key, seq, type, source, payload, headers, "
          "  content_type, traceparent, created_at, expires_at, $2, $3, attempts + 1 FROM moved",
          row.id, d.reason, d.error_code);
      if (d.park_key) {
        tx.exec_params(
            "INSERT INTO converge.outbox_blocked_keys "
            "  (topic, key, parked, blocked_until, reason, message_id) "
            "VALUES ($1, $2, true, NULL, $3, $4::uuid) "
            "ON CONFLICT (topic, key) DO UPDATE SET parked = true, blocked_until = NULL, "
            "  reason = excluded.reason, message_id = excluded.message_id, since = now()",
            row.message.topic, row.message.subject, "dead-lettered: " + d.reason, row.message.id);
      } else if (row.was_blocked) {
        tx.exec_params(
            "DELETE FROM converge.outbox_blocked_keys WHERE topic = $1 AND key = $2 "
            "AND NOT parked",
            row.message.topic, row.message.subject);
      }
    }
    tx.commit();
    return result;
  } catch (const std::exception& e) {
    return Fail(e);
  }
}

Status OutboxStore::ReadGauges(int64_t* oldest_age_ms, int64_t* parked_keys) {
  if (!conn_) return Status::Unavailable("not connected");
  try {
    pqxx::read_transaction tx(*conn_);
    auto r = tx.exec(
        "SELECT coalesce((SELECT (extract(epoch FROM now() - created_at) * 1000)::bigint "
        "                   FROM converge.outbox ORDER BY id LIMIT 1), 0), "
        "       (SELECT count(*) FROM converge.outbox_blocked_keys WHERE parked)");
    *oldest_age_ms = std::max<int64_t>(0, r[0][0].as<int64_t>());
    *parked_keys = r[0][1].as<int64_t>();
    return Status::Ok();
  } catch (const std::exception& e) {
    return Fail(e);
  }
}

}  // namespace converge::outbox
