// convergectl dlq list|show|replay|discard: the dead letters of the relay and the consumers.
//
// Replay semantics (docs/operations.md "Dead letters" states them for operators):
//  * relay origin: the row goes back into converge.outbox under its original outbox id
//    (OVERRIDING SYSTEM VALUE), message id and per-key seq, so the relay (which claims in id
//    order, one in-flight row per key) publishes it before the key's later rows; the key's
//    parking by this message is lifted; the dead letter is marked replayed; an audit row is
//    written. One transaction.
//  * consumer origin: the message is enqueued again under the SAME message id (ce_id), so every
//    group that already applied it dedupes it (inbox), and the dead-lettering group's inbox row
//    for that id is deleted so that group applies it once. Its sequence number is the next one
//    of this database's outbox stream for (topic, key), raised above the group's last applied
//    sequence so the group never skips it as stale. One transaction.
#include <algorithm>
#include <charconv>
#include <iostream>
#include <set>

#include "converge/common/json.h"
#include "ctl.h"

namespace converge::ctl {
namespace {

const char* OrNull(const std::optional<std::string>& v) { return v ? v->c_str() : nullptr; }

Result<std::vector<int64_t>> ParseIds(const std::vector<std::string>& args) {
  std::vector<int64_t> ids;
  std::set<int64_t> seen;
  for (const auto& a : args) {
    int64_t id = 0;
    auto [p, ec] = std::from_chars(a.data(), a.data() + a.size(), id);
    if (ec != std::errc() || p != a.data() + a.size() || id <= 0)
      return Status::InvalidArgument("\"" + a + "\" is not a dead-letter id (a positive integer)");
    if (seen.insert(id).second) ids.push_back(id);
  }
  return ids;
}

// ---- dlq list ----------------------------------------------------------------------------

// The dead-letter filters shared by list and the bulk form of replay/discard (--all).
struct Filter {
  std::optional<std::string> origin, group, topic, key, type, error, older_than_s;
  std::string status = "open";
  int64_t limit = 100;
};

// The WHERE clause over converge.dead_letters for Filter's parameters $1..$8.
constexpr const char* kFilterWhere =
    " WHERE ($1::text IS NULL OR origin = $1) AND ($2::text IS NULL OR topic = $2) "
    "   AND ($3::text IS NULL OR key = $3) AND ($4::text IS NULL OR type = $4) "
    "   AND ($5::text IS NULL OR error_code = $5) "
    "   AND ($6::text IS NULL OR failed_at < now() - make_interval(secs => $6::double "
    "precision)) "
    "   AND ($7::text = 'all' OR status = $7) "
    "   AND ($8::text IS NULL OR consumer_group = $8) ";

const std::vector<OptionSpec> kFilterOptions = {
    {"origin", "relay|consumer", "only dead letters of the relay or of consumers"},
    {"group", "GROUP", "only this consumer group"},
    {"topic", "TOPIC", "only this topic"},
    {"key", "KEY", "only this ordering key"},
    {"type", "TYPE", "only this CloudEvents type"},
    {"error", "CODE", "only this error_code (too_large, handler_failed ...)"},
    {"older-than", "DURATION", "failed longer ago than this (90s, 15m, 2h, 7d)"},
    {"limit", "N", "at most N dead letters (default 100)"}};

// Reads the filter options; InvalidArgument names the bad one.
Result<Filter> ParseFilter(const Invocation& inv, bool with_status) {
  Filter f;
  f.origin = inv.Get("origin");
  if (f.origin && *f.origin != "relay" && *f.origin != "consumer")
    return Status::InvalidArgument("--origin must be relay or consumer, got \"" + *f.origin + "\"");
  if (with_status) {
    f.status = inv.Get("status").value_or("open");
    if (f.status != "open" && f.status != "replayed" && f.status != "discarded" &&
        f.status != "all")
      return Status::InvalidArgument("--status must be open, replayed, discarded or all, got \"" +
                                     f.status + "\"");
  }
  auto older = inv.GetDurationSeconds("older-than");
  if (!older.ok()) return older.status();
  if (*older) f.older_than_s = std::to_string(**older);
  auto limit = inv.GetInt("limit", 1, 100000);
  if (!limit.ok()) return limit.status();
  f.limit = limit->value_or(100);
  f.group = inv.Get("group");
  f.topic = inv.Get("topic");
  f.key = inv.Get("key");
  f.type = inv.Get("type");
  f.error = inv.Get("error");
  return f;
}

pqxx::result QueryFilter(pqxx::transaction_base& tx, const std::string& select_list,
                         const Filter& f, const std::string& suffix = "") {
  return tx.exec_params("SELECT " + select_list + " FROM converge.dead_letters" + kFilterWhere +
                            " ORDER BY id LIMIT $9" + suffix,
                        OrNull(f.origin), OrNull(f.topic), OrNull(f.key), OrNull(f.type),
                        OrNull(f.error), OrNull(f.older_than_s), f.status, OrNull(f.group),
                        f.limit);
}

int List(Invocation& inv) {
  auto filter = ParseFilter(inv, /*with_status=*/true);
  if (!filter.ok()) return inv.UsageError(filter.status().message());
  const std::string& status = filter->status;
  pqxx::read_transaction tx(inv.db());
  const pqxx::result r = QueryFilter(
      tx,
      "id, origin, consumer_group, message_id::text, topic, key, seq, type, error_code, "
      "reason, attempts, " +
          SqlTime("failed_at") +
          ", greatest(0, extract(epoch FROM now() - failed_at))::bigint, status, "
          "coalesce(octet_length(payload), 0), outbox_id, partition, \"offset\", " +
          SqlTime("resolved_at") + ", resolved_by, count(*) OVER ()",
      *filter);
  const int64_t total = r.empty() ? 0 : r[0][20].as<int64_t>();
  if (inv.json()) {
    JsonWriter j;
    j.BeginObject().Key("dead_letters").BeginArray();
    for (const auto& f : r) {
      j.BeginObject();
      j.Key("id").Int(f[0].as<int64_t>()).Field("origin", f[1]).Field("consumer_group", f[2]);
      j.Field("message_id", f[3]).Field("topic", f[4]).Field("key", f[5]).FieldInt("seq", f[6]);
      j.Field("type", f[7]).Field("error_code", f[8]).Field("reason", f[9]);
      j.FieldInt("attempts", f[10]).Field("failed_at", f[11]).FieldInt("age_seconds", f[12]);
      j.Field("status", f[13]).FieldInt("payload_bytes", f[14]).FieldInt("outbox_id", f[15]);
      j.FieldInt("partition", f[16]).FieldInt("offset", f[17]).Field("resolved_at", f[18]);
      j.Field("resolved_by", f[19]);
      j.EndObject();
    }
    j.EndArray().Key("count").Int(static_cast<int64_t>(r.size())).Key("total").Int(total);
    j.EndObject();
    inv.out() << j.str() << "\n";
    return kExitOk;
  }
  Table t({"ID", "ORIGIN", "GROUP", "TOPIC", "KEY", "SEQ", "TYPE", "ERROR", "ATTEMPTS", "AGE",
           "STATUS", "REASON"});
  for (const auto& f : r)
    t.AddRow({f[0].c_str(), f[1].c_str(), Cell(f[2]), f[4].c_str(), Cell(f[5]), Cell(f[6]),
              Cell(f[7]), f[8].c_str(), f[10].c_str(), FormatAge(f[12].as<int64_t>()),
              f[13].c_str(), f[9].c_str()});
  if (t.size() == 0) {
    inv.out() << "no " << (status == "all" ? "" : status + " ") << "dead letters match\n";
    return kExitOk;
  }
  t.Print(inv.out());
  if (total > static_cast<int64_t>(r.size()))
    inv.out() << "(" << r.size() << " of " << total << " shown; raise --limit)\n";
  return kExitOk;
}

// ---- dlq show ----------------------------------------------------------------------------

int Show(Invocation& inv) {
  auto ids = ParseIds(inv.args());
  if (!ids.ok()) return inv.UsageError(ids.status().message());
  const int64_t id = ids->front();
  pqxx::read_transaction tx(inv.db());
  const pqxx::result r = tx.exec_params(
      "SELECT d.id, d.origin, d.consumer_group, d.outbox_id, d.message_id::text, d.topic, d.key, "
      "       d.seq, d.type, d.source, d.content_type, d.traceparent, " +
          SqlTime("d.created_at") + ", " + SqlTime("d.expires_at") +
          ", d.partition, d.\"offset\", d.reason, d.error_code, d.attempts, " +
          SqlTime("d.failed_at") + ", d.status, " + SqlTime("d.resolved_at") +
          ", d.resolved_by, d.payload, "
          "       (SELECT b.parked FROM converge.outbox_blocked_keys b "
          "         WHERE b.topic = d.topic AND b.key = d.key AND b.message_id = d.message_id), "
          "       (SELECT count(*) FROM converge.outbox o WHERE o.topic = d.topic AND o.key = "
          "d.key), "
          "       EXISTS (SELECT 1 FROM converge.inbox i WHERE i.consumer_group = d.consumer_group "
          "                 AND i.message_id = d.message_id), "
          "       EXISTS (SELECT 1 FROM converge.outbox o WHERE o.message_id = d.message_id) "
          "  FROM converge.dead_letters d WHERE d.id = $1",
      id);
  if (r.empty()) return inv.Fail(Status::NotFound("no dead letter with id " + std::to_string(id)));
  const pqxx::row f = r[0];
  const pqxx::result headers = tx.exec_params(
      "SELECT h.key, h.value FROM converge.dead_letters d, jsonb_each_text(d.headers) h "
      " WHERE d.id = $1 ORDER BY h.key",
      id);
  const pqxx::result history = tx.exec_params(
      "SELECT " + SqlTime("at") +
          ", actor, action, reason FROM converge.audit_log WHERE target = $1 ORDER BY id",
      "dead_letter:" + std::to_string(id));
  const std::string payload = Bytes(f[23]);
  std::string encoding;
  const std::string shown = PayloadForDisplay(payload, &encoding);
  const bool relay = std::string(f[1].c_str()) == "relay";
  std::string key_state = "-";
  if (relay) {
    key_state = f[24].is_null()    ? "not parked by this message"
                : f[24].as<bool>() ? "parked by this message (later rows wait)"
                                   : "blocked (retry backoff)";
  }
  const char* names[] = {
      "id",         "origin",     "consumer_group", "outbox_id",   "message_id",   "topic",
      "key",        "seq",        "type",           "source",      "content_type", "traceparent",
      "created_at", "expires_at", "partition",      "offset",      "reason",       "error_code",
      "attempts",   "failed_at",  "status",         "resolved_at", "resolved_by"};
  const std::set<int> ints = {0, 3, 7, 14, 15, 18};
  if (inv.json()) {
    JsonWriter j;
    j.BeginObject();
    for (int i = 0; i < 23; ++i) {
      if (ints.count(i))
        j.FieldInt(names[i], f[i]);
      else
        j.Field(names[i], f[i]);
    }
    j.Key("headers").BeginObject();
    for (const auto& h : headers) j.Key(h[0].c_str()).String(h[1].c_str());
    j.EndObject();
    j.Key("payload").BeginObject().Key("bytes").Int(static_cast<int64_t>(payload.size()));
    if (encoding == "utf-8")
      j.Key("encoding").String("utf-8").Key("data").String(shown);
    else
      j.Key("encoding").String("base64").Key("data").String(Base64(payload));
    j.EndObject();
    j.Key("key_outbox_rows").Int(f[25].as<int64_t>());
    if (relay)
      j.Key("key_state").String(key_state);
    else
      j.Key("group_inbox_row").Bool(f[26].as<bool>());
    j.Key("in_outbox").Bool(f[27].as<bool>());
    j.Key("history").BeginArray();
    for (const auto& h : history)
      j.BeginObject()
          .Field("at", h[0])
          .Field("actor", h[1])
          .Field("action", h[2])
          .Field("reason", h[3])
          .EndObject();
    j.EndArray().EndObject();
    inv.out() << j.str() << "\n";
    return kExitOk;
  }
  Table t({"FIELD", "VALUE"}, 300);
  for (int i = 0; i < 23; ++i) t.AddRow({names[i], Cell(f[i])});
  for (const auto& h : headers) t.AddRow({std::string("header ") + h[0].c_str(), h[1].c_str()});
  t.AddRow({"key_outbox_rows", f[25].c_str()});
  if (relay)
    t.AddRow({"key_state", key_state});
  else
    t.AddRow({"group_inbox_row", f[26].as<bool>() ? "present" : "absent"});
  t.AddRow({"in_outbox", f[27].as<bool>() ? "yes (queued for publishing)" : "no"});
  for (const auto& h : history)
    t.AddRow({"history", std::string(h[0].c_str()) + " " + h[2].c_str() + " by " + h[1].c_str() +
                             ": " + h[3].c_str()});
  t.Print(inv.out());
  inv.out() << "\npayload (" << payload.size() << " bytes, " << encoding << "):\n" << shown << "\n";
  return kExitOk;
}

// ---- dlq replay / discard ----------------------------------------------------------------

struct Outcome {
  int64_t id = 0;
  std::string origin, group, message_id, topic, key;
  std::optional<int64_t> seq;  // the (re)queued row's seq
  std::optional<int64_t> outbox_id;
  bool unparked = false;
  int64_t later_rows = 0;  // the key's rows waiting in the outbox
  int64_t inbox_rows_removed = 0;
  std::vector<std::string> notes;
};

struct DeadLetterRow {
  int64_t id = 0;
  std::string origin, status, topic, error_code;
  std::optional<std::string> group, message_id, key, type, resolved_by, resolved_at;
  std::optional<int64_t> outbox_id, seq;
};

std::optional<std::string> Opt(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  return std::string(f.c_str());
}
std::optional<int64_t> OptInt(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  return f.as<int64_t>();
}

Result<DeadLetterRow> LockDeadLetter(pqxx::work& tx, int64_t id, const char* verb) {
  const pqxx::result r = tx.exec_params(
      "SELECT id, origin, status, topic, error_code, consumer_group, message_id::text, key, type, "
      "       resolved_by, " +
          SqlTime("resolved_at") +
          ", outbox_id, seq FROM converge.dead_letters WHERE id = $1 FOR UPDATE",
      id);
  if (r.empty()) return Status::NotFound("no dead letter with id " + std::to_string(id));
  const auto& f = r[0];
  DeadLetterRow d{f[0].as<int64_t>(), f[1].c_str(),  f[2].c_str(), f[3].c_str(), f[4].c_str(),
                  Opt(f[5]),          Opt(f[6]),     Opt(f[7]),    Opt(f[8]),    Opt(f[9]),
                  Opt(f[10]),         OptInt(f[11]), OptInt(f[12])};
  if (d.status != "open")
    return Status::FailedPrecondition("cannot " + std::string(verb) + " dead letter " +
                                      std::to_string(id) + ": it is already " + d.status + " (by " +
                                      d.resolved_by.value_or("?") + " at " +
                                      d.resolved_at.value_or("?") + ")");
  return d;
}

void Resolve(Invocation& inv, pqxx::work& tx, int64_t id, const char* status) {
  tx.exec_params(
      "UPDATE converge.dead_letters SET status = $2, resolved_at = now(), resolved_by = $3 "
      "WHERE id = $1",
      id, std::string(status), inv.actor());
}

// Lifts the parking of (topic, key) when this message parked it. Returns true when unparked;
// adds a note when the key stays parked for another reason.
bool UnparkIfParkedBy(pqxx::work& tx, const DeadLetterRow& d, Outcome* out) {
  const pqxx::result b = tx.exec_params(
      "SELECT parked, message_id::text, reason FROM converge.outbox_blocked_keys "
      " WHERE topic = $1 AND key = $2 FOR UPDATE",
      d.topic, d.key.value_or(""));
  if (b.empty()) return false;
  const bool parked = b[0][0].as<bool>();
  const std::string by = b[0][1].is_null() ? "" : b[0][1].c_str();
  if (parked && d.message_id && by == *d.message_id) {
    tx.exec_params("DELETE FROM converge.outbox_blocked_keys WHERE topic = $1 AND key = $2",
                   d.topic, *d.key);
    return true;
  }
  if (parked)
    out->notes.push_back("the key stays parked (" + std::string(b[0][2].c_str()) +
                         "); see convergectl keys list");
  return false;
}

Status ReplayRelay(Invocation& inv, pqxx::work& tx, const DeadLetterRow& d, Outcome* out) {
  if (!d.outbox_id || !d.message_id || !d.key || !d.seq)
    return Status::FailedPrecondition("dead letter " + std::to_string(d.id) +
                                      " lacks its outbox id, message id, key or seq");
  const pqxx::result dup =
      tx.exec_params("SELECT id FROM converge.outbox WHERE id = $1 OR message_id = $2::uuid",
                     *d.outbox_id, *d.message_id);
  if (!dup.empty())
    return Status::FailedPrecondition("message " + *d.message_id +
                                      " is already in the outbox (outbox id " + dup[0][0].c_str() +
                                      "); nothing to replay");
  out->unparked = UnparkIfParkedBy(tx, d, out);
  const pqxx::result ins = tx.exec_params(
      "INSERT INTO converge.outbox (id, message_id, topic, key, seq, slot, type, source, payload, "
      "  headers, content_type, traceparent, created_at, expires_at, attempts, last_error) "
      "OVERRIDING SYSTEM VALUE "
      "SELECT outbox_id, message_id, topic, key, seq, converge.key_slot(key), type, "
      "       coalesce(source, '/' || current_database()), payload, headers, "
      "       coalesce(content_type, 'application/json'), traceparent, "
      "       coalesce(created_at, now()), expires_at, 0, NULL "
      "  FROM converge.dead_letters WHERE id = $1 "
      "RETURNING coalesce(expires_at <= now(), false)",
      d.id);
  if (ins[0][0].as<bool>())
    out->notes.push_back(
        "the message has expired (expires_at is past): the relay will "
        "dead-letter it again as expired");
  tx.exec("SELECT pg_notify('converge_outbox', '')");
  out->outbox_id = d.outbox_id;
  out->seq = d.seq;
  out->later_rows =
      tx.exec_params("SELECT count(*) - 1 FROM converge.outbox WHERE topic = $1 AND key = $2",
                     d.topic, *d.key)[0][0]
          .as<int64_t>();
  (void)inv;
  return Status::Ok();
}

Status ReplayConsumer(Invocation& inv, pqxx::work& tx, const DeadLetterRow& d, Outcome* out) {
  const std::string what = "dead letter " + std::to_string(d.id);
  if (!d.message_id)
    return Status::FailedPrecondition(
        what + " has no message id (error " + d.error_code +
        "): the record was not a CloudEvent and cannot be replayed; fix the producer and "
        "discard it");
  if (d.error_code == "payload_conflict")
    return Status::FailedPrecondition(
        what + " is a payload conflict: group " + d.group.value_or("?") +
        " already applied "
        "message " +
        *d.message_id +
        " with a different payload; replaying would apply a second "
        "effect under the same id. Resolve it by hand and discard it");
  if (!d.key || d.key->empty() || !d.type)
    return Status::FailedPrecondition(what + " has no key or no type: it cannot be enqueued");
  const pqxx::result q = tx.exec_params(
      "SELECT EXISTS (SELECT 1 FROM converge.outbox WHERE message_id = $1::uuid), "
      "       lower(coalesce(headers->>'content-type', '')) LIKE 'application/cloudevents%' "
      "  FROM converge.dead_letters WHERE id = $2",
      *d.message_id, d.id);
  if (q[0][0].as<bool>())
    return Status::FailedPrecondition("message " + *d.message_id +
                                      " is already in the outbox, waiting to be published");
  if (q[0][1].as<bool>())
    return Status::FailedPrecondition(
        what +
        " was a structured-mode CloudEvent (the stored value is the whole event); "
        "replay supports binary-mode records only");
  // Sequence: above this database's stream for the key and above the group's last applied
  // sequence. The stream row lock serializes us with concurrent enqueues of the key.
  const pqxx::result s = tx.exec_params(
      "SELECT (SELECT last_seq FROM converge.outbox_keys WHERE topic = $1 AND key = $2 "
      "          FOR UPDATE), "
      "       (SELECT last_seq FROM converge.consumer_key_seq "
      "         WHERE consumer_group = $3 AND topic = $1 AND key = $2)",
      d.topic, *d.key, d.group.value_or(""));
  const std::optional<int64_t> stream = OptInt(s[0][0]), applied = OptInt(s[0][1]);
  if (!stream && d.seq && !inv.Has("force"))
    return Status::FailedPrecondition(
        what + ": the key " + d.topic + "/" + *d.key +
        " is not produced from this database (no converge.outbox_keys row), so the replay "
        "would start a second sequence for it and the producer's next messages could be "
        "skipped as stale by groups with sequence_policy skip_stale. Replay it from the "
        "producer's database, or pass --force");
  const int64_t seq = std::max(stream.value_or(0), applied.value_or(0)) + 1;
  tx.exec_params(
      "INSERT INTO converge.outbox_keys (topic, key, last_seq) VALUES ($1, $2, $3) "
      "ON CONFLICT (topic, key) DO UPDATE SET last_seq = excluded.last_seq",
      d.topic, *d.key, seq);
  // The stored headers are the record's: drop the envelope's own (ce_*, content-type).
  const pqxx::result ins = tx.exec_params(
      "WITH d AS (SELECT *, coalesce((SELECT jsonb_object_agg(h.key, h.value) "
      "                                 FROM jsonb_each(headers) h "
      "                                WHERE lower(h.key) NOT LIKE 'ce\\_%' "
      "                                  AND lower(h.key) <> 'content-type'), '{}') AS plain, "
      "                       coalesce(source, '/' || current_database()) AS src, "
      "                       coalesce(content_type, 'application/octet-stream') AS ctype "
      "             FROM converge.dead_letters WHERE id = $1), "
      "     v AS (SELECT converge.validate_message(topic, key, type, payload, plain, src, ctype, "
      "                                            traceparent) FROM d) "
      "INSERT INTO converge.outbox (message_id, topic, key, seq, slot, type, source, payload, "
      "  headers, content_type, traceparent, expires_at) "
      "SELECT message_id, topic, key, $2, converge.key_slot(key), type, src, payload, plain, "
      "       ctype, traceparent, expires_at FROM d, v "
      "RETURNING id",
      d.id, seq);
  tx.exec("SELECT pg_notify('converge_outbox', '')");
  out->outbox_id = ins[0][0].as<int64_t>();
  out->seq = seq;
  out->inbox_rows_removed =
      tx.exec_params(
            "DELETE FROM converge.inbox WHERE consumer_group = $1 AND message_id = $2::uuid",
            d.group.value_or(""), *d.message_id)
          .affected_rows();
  return Status::Ok();
}

std::string OutcomeJson(const Outcome& o) {
  JsonWriter j;
  j.BeginObject().Key("id").Int(o.id).Key("origin").String(o.origin);
  if (!o.group.empty()) j.Key("consumer_group").String(o.group);
  j.Key("message_id").String(o.message_id).Key("topic").String(o.topic).Key("key").String(o.key);
  if (o.outbox_id) j.Key("outbox_id").Int(*o.outbox_id);
  if (o.seq) j.Key("seq").Int(*o.seq);
  j.Key("unparked").Bool(o.unparked);
  j.Key("later_rows").Int(o.later_rows);
  if (o.origin == "consumer") j.Key("inbox_rows_removed").Int(o.inbox_rows_removed);
  j.Key("notes").BeginArray();
  for (const auto& n : o.notes) j.String(n);
  j.EndArray().EndObject();
  return j.str();
}

enum class Verb { kReplay, kDiscard };

int Resolve(Invocation& inv, Verb verb) {
  const bool all = inv.Has("all");
  if (all == !inv.args().empty())
    return inv.UsageError(all ? "give dead-letter ids or --all with filters, not both"
                              : "missing argument: dead-letter ids, or --all with filters");
  auto ids = ParseIds(inv.args());
  if (!ids.ok()) return inv.UsageError(ids.status().message());
  auto filter = ParseFilter(inv, /*with_status=*/false);
  if (!filter.ok()) return inv.UsageError(filter.status().message());
  if (!all)
    for (const auto& o : kFilterOptions)
      if (inv.Has(o.name)) return inv.UsageError("--" + o.name + " selects with --all only");
  const bool replay = verb == Verb::kReplay;
  std::vector<Outcome> outcomes;
  int64_t matching = 0;
  Status st = inv.Repair([&](pqxx::work& tx) -> Status {
    outcomes.clear();
    if (all) {
      // The open dead letters matching the filters, oldest first, locked for this repair.
      ids->clear();
      for (const auto& row : QueryFilter(tx, "id, count(*) OVER ()", *filter)) {
        ids->push_back(row[0].as<int64_t>());
        matching = row[1].as<int64_t>();
      }
    }
    for (int64_t id : *ids) {
      auto d = LockDeadLetter(tx, id, replay ? "replay" : "discard");
      if (!d.ok()) return d.status();
      Outcome o;
      o.id = id;
      o.origin = d->origin;
      o.group = d->group.value_or("");
      o.message_id = d->message_id.value_or("");
      o.topic = d->topic;
      o.key = d->key.value_or("");
      if (replay) {
        Status r =
            d->origin == "relay" ? ReplayRelay(inv, tx, *d, &o) : ReplayConsumer(inv, tx, *d, &o);
        if (!r.ok()) return r;
      } else {
        o.seq = d->seq;
        if (d->origin == "relay") {
          o.unparked = UnparkIfParkedBy(tx, *d, &o);
          o.later_rows =
              tx.exec_params("SELECT count(*) FROM converge.outbox WHERE topic = $1 AND key = $2",
                             d->topic, o.key)[0][0]
                  .as<int64_t>();
        }
      }
      Resolve(inv, tx, id, replay ? "replayed" : "discarded");
      inv.Audit(tx, replay ? "dlq.replay" : "dlq.discard", "dead_letter:" + std::to_string(id),
                OutcomeJson(o));
      outcomes.push_back(std::move(o));
    }
    return Status::Ok();
  });
  if (st.code() == StatusCode::kInvalidArgument)  // the message failed converge's validation
    st = Status::FailedPrecondition(st.message());
  if (!st.ok()) {
    if (ids->size() > 1 && st.code() != StatusCode::kUnavailable)
      inv.err() << "convergectl " << inv.spec().path
                << ": nothing was changed (all ids are handled in one transaction)\n";
    return inv.Fail(st);
  }
  const int64_t left = all ? matching - static_cast<int64_t>(outcomes.size()) : 0;
  if (inv.json()) {
    JsonWriter j;
    j.BeginObject().Key("dry_run").Bool(inv.dry_run());
    j.Key(replay ? "replayed" : "discarded").BeginArray();
    for (const auto& o : outcomes) j.Raw(OutcomeJson(o));
    j.EndArray();
    if (all) j.Key("more_matching").Int(left);
    j.EndObject();
    inv.out() << j.str() << "\n";
    return kExitOk;
  }
  if (all && outcomes.empty()) inv.out() << "no open dead letters match\n";
  const char* done = inv.dry_run() ? (replay ? "would replay" : "would discard")
                                   : (replay ? "replayed" : "discarded");
  for (const auto& o : outcomes) {
    std::string line = std::string(done) + " dead letter " + std::to_string(o.id) + " (" +
                       o.origin + (o.group.empty() ? "" : " group " + o.group) + ", " + o.topic +
                       "/" + o.key + ", message " + o.message_id + ")";
    if (replay && o.origin == "relay")
      line += ": back in the outbox as id " + std::to_string(o.outbox_id.value_or(0)) + " seq " +
              std::to_string(o.seq.value_or(0)) + ", ahead of the key's " +
              std::to_string(o.later_rows) + " later row(s)";
    if (replay && o.origin == "consumer")
      line += ": enqueued again with the same message id as outbox id " +
              std::to_string(o.outbox_id.value_or(0)) + " seq " +
              std::to_string(o.seq.value_or(0)) + "; " + std::to_string(o.inbox_rows_removed) +
              " inbox row of group " + o.group + " removed so the group applies it once";
    if (o.unparked)
      line += replay ? "; key unparked"
                     : "; key unparked: its " + std::to_string(o.later_rows) +
                           " waiting row(s) will now be published without this message";
    inv.out() << line << "\n";
    for (const auto& n : o.notes) inv.out() << "  note: " << n << "\n";
  }
  if (left > 0)
    inv.out() << left << " more open dead letter(s) match: raise --limit or run again\n";
  if (inv.dry_run()) inv.out() << "dry run: nothing was changed\n";
  return kExitOk;
}

std::vector<OptionSpec> ListOptions() {
  std::vector<OptionSpec> o = kFilterOptions;
  o.push_back({"status", "STATUS", "open (default), replayed, discarded or all"});
  return o;
}

// Replay/discard: ids, or --all with the list filters (open dead letters only).
std::vector<OptionSpec> RepairOptions(bool replay) {
  std::vector<OptionSpec> o = {
      {"all", "", "act on every open dead letter matching the filters (instead of ids)"}};
  o.insert(o.end(), kFilterOptions.begin(), kFilterOptions.end());
  if (replay)
    o.push_back({"force", "",
                 "consumer origin: replay even though the key is produced from another "
                 "database"});
  return o;
}

const Registration kList({.path = "dlq list",
                          .summary = "list dead letters (open ones by default)",
                          .options = ListOptions(),
                          .run = List});

const Registration kShow({.path = "dlq show",
                          .args = "ID",
                          .summary = "one dead letter with every field, headers and payload",
                          .min_args = 1,
                          .max_args = 1,
                          .run = Show});

const Registration kReplay(
    {.path = "dlq replay",
     .args = "ID... | --all FILTERS",
     .summary = "publish dead letters again (relay: in their key's place; consumer: to the group)",
     .options = RepairOptions(/*replay=*/true),
     .repair = true,
     .min_args = 0,
     .max_args = -1,
     .run = [](Invocation& inv) { return Resolve(inv, Verb::kReplay); }});

const Registration kDiscard(
    {.path = "dlq discard",
     .args = "ID... | --all FILTERS",
     .summary = "give dead letters up (a relay key they parked is unparked)",
     .options = RepairOptions(/*replay=*/false),
     .repair = true,
     .min_args = 0,
     .max_args = -1,
     .run = [](Invocation& inv) { return Resolve(inv, Verb::kDiscard); }});

}  // namespace
}  // namespace converge::ctl
