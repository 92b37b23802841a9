// convergectl keys list|park|unpark: ordering keys the relay holds back
// (converge.outbox_blocked_keys). A parked key waits for an operator; a backing-off key waits
// until blocked_until after a retriable failure of its head row.
#include <iostream>

#include "ctl.h"

namespace converge::ctl {
namespace {

const char* OrNull(const std::optional<std::string>& v) { return v ? v->c_str() : nullptr; }

int List(Invocation& inv) {
  const std::string state = inv.Get("state").value_or("all");
  if (state != "parked" && state != "backoff" && state != "all")
    return inv.UsageError("--state must be parked, backoff or all, got \"" + state + "\"");
  pqxx::read_transaction tx(inv.db());
  const pqxx::result r = tx.exec_params(
      "SELECT b.topic, b.key, b.parked, " + SqlTime("b.blocked_until") +
          ", greatest(0, extract(epoch FROM b.blocked_until - now()))::bigint, b.reason, "
          "       b.message_id::text, " +
          SqlTime("b.since") +
          ", greatest(0, extract(epoch FROM now() - b.since))::bigint, "
          "       (SELECT count(*) FROM converge.outbox o WHERE o.topic = b.topic AND o.key = "
          "b.key), "
          "       (SELECT min(d.id) FROM converge.dead_letters d WHERE d.origin = 'relay' "
          "          AND d.status = 'open' AND d.message_id = b.message_id) "
          "  FROM converge.outbox_blocked_keys b "
          " WHERE ($1::text IS NULL OR b.topic = $1) AND ($2::text IS NULL OR b.key = $2) "
          "   AND ($3::text = 'all' OR ($3 = 'parked' AND b.parked) "
          "        OR ($3 = 'backoff' AND NOT b.parked)) "
          " ORDER BY b.since, b.topic, b.key",
      OrNull(inv.Get("topic")), OrNull(inv.Get("key")), state);
  if (inv.json()) {
    JsonWriter j;
    j.BeginObject().Key("keys").BeginArray();
    for (const auto& f : r) {
      j.BeginObject().Field("topic", f[0]).Field("key", f[1]);
      j.Key("state").String(f[2].as<bool>() ? "parked" : "backoff");
      j.Field("blocked_until", f[3]).Field("reason", f[5]).Field("message_id", f[6]);
      j.Field("since", f[7]).FieldInt("age_seconds", f[8]).FieldInt("waiting_rows", f[9]);
      j.FieldInt("dead_letter_id", f[10]).EndObject();
    }
    j.EndArray().Key("count").Int(static_cast<int64_t>(r.size())).EndObject();
    inv.out() << j.str() << "\n";
    return kExitOk;
  }
  if (r.empty()) {
    inv.out() << "no parked or backing-off keys\n";
    return kExitOk;
  }
  Table t({"TOPIC", "KEY", "STATE", "SINCE", "WAITING", "DEAD_LETTER", "HEAD_MESSAGE", "REASON"});
  for (const auto& f : r) {
    const std::string st =
        f[2].as<bool>() ? "parked" : "backoff " + FormatAge(f[4].as<int64_t>(0)) + " left";
    t.AddRow({f[0].c_str(), f[1].c_str(), st, FormatAge(f[8].as<int64_t>()) + " ago", f[9].c_str(),
              Cell(f[10]), Cell(f[6]), f[5].c_str()});
  }
  t.Print(inv.out());
  return kExitOk;
}

void PrintResult(Invocation& inv, const std::string& verb, const std::string& topic,
                 const std::string& key, bool changed, const std::string& text, int64_t waiting) {
  if (inv.json()) {
    JsonWriter j;
    j.BeginObject().Key("dry_run").Bool(inv.dry_run()).Key("action").String(verb);
    j.Key("topic").String(topic).Key("key").String(key).Key("changed").Bool(changed);
    j.Key("waiting_rows").Int(waiting).Key("message").String(text).EndObject();
    inv.out() << j.str() << "\n";
    return;
  }
  inv.out() << text << "\n";
  if (inv.dry_run()) inv.out() << "dry run: nothing was changed\n";
}

Status CheckKey(const std::string& topic, const std::string& key) {
  if (topic.empty()) return Status::InvalidArgument("TOPIC must not be empty");
  if (key.empty()) return Status::InvalidArgument("KEY must not be empty");
  return Status::Ok();
}

int Park(Invocation& inv) {
  const std::string topic = inv.args()[0], key = inv.args()[1];
  if (Status st = CheckKey(topic, key); !st.ok()) return inv.UsageError(st.message());
  bool changed = false;
  int64_t waiting = 0;
  std::string text;
  Status st = inv.Repair([&](pqxx::work& tx) -> Status {
    const pqxx::result cur = tx.exec_params(
        "SELECT parked, reason FROM converge.outbox_blocked_keys WHERE topic = $1 AND key = $2 "
        "FOR UPDATE",
        topic, key);
    waiting = tx.exec_params("SELECT count(*) FROM converge.outbox WHERE topic = $1 AND key = $2",
                             topic, key)[0][0]
                  .as<int64_t>();
    if (!cur.empty() && cur[0][0].as<bool>()) {
      changed = false;
      text = "key " + topic + "/" + key + " is already parked (" + cur[0][1].c_str() +
             "); nothing changed";
      return Status::Ok();
    }
    // The head row (if any) is recorded so `keys list` shows what the key waits on.
    tx.exec_params(
        "INSERT INTO converge.outbox_blocked_keys AS b "
        "  (topic, key, parked, blocked_until, reason, message_id) "
        "VALUES ($1, $2, true, NULL, $3, (SELECT message_id FROM converge.outbox "
        "         WHERE topic = $1 AND key = $2 ORDER BY id LIMIT 1)) "
        "ON CONFLICT (topic, key) DO UPDATE SET parked = true, blocked_until = NULL, "
        "  reason = excluded.reason, message_id = coalesce(b.message_id, excluded.message_id), "
        "  since = now()",
        topic, key, "parked by " + inv.actor() + ": " + inv.reason());
    changed = true;
    text = std::string(inv.dry_run() ? "would park" : "parked") + " key " + topic + "/" + key +
           ": its " + std::to_string(waiting) +
           " waiting row(s) and every new one stay in the outbox until `convergectl keys "
           "unpark`";
    inv.Audit(tx, "keys.park", "key:" + topic + "/" + key,
              "{\"waiting_rows\":" + std::to_string(waiting) + "}");
    return Status::Ok();
  });
  if (!st.ok()) return inv.Fail(st);
  PrintResult(inv, "park", topic, key, changed, text, waiting);
  return kExitOk;
}

int Unpark(Invocation& inv) {
  const std::string topic = inv.args()[0], key = inv.args()[1];
  if (Status st = CheckKey(topic, key); !st.ok()) return inv.UsageError(st.message());
  const bool force = inv.Has("force");
  int64_t waiting = 0;
  std::string text;
  Status st = inv.Repair([&](pqxx::work& tx) -> Status {
    const pqxx::result cur = tx.exec_params(
        "SELECT b.parked, b.message_id::text, "
        "       (SELECT min(d.id) FROM converge.dead_letters d WHERE d.origin = 'relay' "
        "          AND d.status = 'open' AND d.message_id = b.message_id) "
        "  FROM converge.outbox_blocked_keys b WHERE b.topic = $1 AND b.key = $2 FOR UPDATE",
        topic, key);
    if (cur.empty())
      return Status::NotFound("key " + topic + "/" + key + " is neither parked nor backing off");
    const bool parked = cur[0][0].as<bool>();
    // The open dead letter at the key's head, -1 when none (a plain value: GCC 12 warns about
    // std::optional<int64_t> here with a false -Wmaybe-uninitialized).
    const int64_t dead = cur[0][2].is_null() ? -1 : cur[0][2].as<int64_t>();
    if (parked && dead >= 0 && !force) {
      const std::string id = std::to_string(dead);
      return Status::FailedPrecondition(
          "key " + topic + "/" + key + " is parked by open dead letter " + id +
          " (its head message " + cur[0][1].c_str() +
          "); unparking would publish the key's later rows and silently skip that message. "
          "Use `convergectl dlq replay " +
          id + "` or `convergectl dlq discard " + id + "`, or pass --force to unpark anyway");
    }
    waiting = tx.exec_params("SELECT count(*) FROM converge.outbox WHERE topic = $1 AND key = $2",
                             topic, key)[0][0]
                  .as<int64_t>();
    tx.exec_params("DELETE FROM converge.outbox_blocked_keys WHERE topic = $1 AND key = $2", topic,
                   key);
    text = std::string(inv.dry_run() ? "would unpark" : "unparked") + " key " + topic + "/" + key +
           (parked ? "" : " (it was backing off; its head row is retried now)") + ": " +
           std::to_string(waiting) + " waiting row(s) will be published";
    if (parked && dead >= 0)
      text += "; dead letter " + std::to_string(dead) +
              " stays open and its message is skipped (--force)";
    inv.Audit(tx, "keys.unpark", "key:" + topic + "/" + key,
              std::string("{\"was\":\"") + (parked ? "parked" : "backoff") + "\",\"forced\":" +
                  (force ? "true" : "false") + ",\"waiting_rows\":" + std::to_string(waiting) +
                  (dead >= 0 ? ",\"dead_letter_id\":" + std::to_string(dead) : "") + "}");
    return Status::Ok();
  });
  if (!st.ok()) return inv.Fail(st);
  PrintResult(inv, "unpark", topic, key, true, text, waiting);
  return kExitOk;
}

const Registration kList({.path = "keys list",
                          .summary = "parked and backing-off ordering keys",
                          .options = {{"topic", "TOPIC", "only this topic"},
                                      {"key", "KEY", "only this key"},
                                      {"state", "STATE", "parked, backoff or all (default)"}},
                          .run = List});

const Registration kPark({.path = "keys park",
                          .args = "TOPIC KEY",
                          .summary = "hold a key's rows in the outbox (per-key order is kept)",
                          .repair = true,
                          .min_args = 2,
                          .max_args = 2,
                          .run = Park});

const Registration kUnpark({.path = "keys unpark",
                            .args = "TOPIC KEY",
                            .summary = "let a parked or backing-off key flow again",
                            .options = {{"force", "",
                                         "unpark even when the key's head is an open dead letter "
                                         "(skips that message)"}},
                            .repair = true,
                            .min_args = 2,
                            .max_args = 2,
                            .run = Unpark});

}  // namespace
}  // namespace converge::ctl
