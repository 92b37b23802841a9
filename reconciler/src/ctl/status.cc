// convergectl status: one screen over everything Converge keeps — outbox backlog per topic,
// relays and their slots, consumer positions (and lag with Kafka), dead letters, held keys,
// flows, device commands (when that table exists). Read-only; one snapshot (REPEATABLE READ).
#include <cstdlib>
#include <iostream>

#include "converge/common/log.h"
#include "ctl.h"
#include "kafka_watermarks.h"

namespace converge::ctl {
namespace {

int64_t I(const pqxx::field& f) { return f.is_null() ? 0 : f.as<int64_t>(); }

int Status_(Invocation& inv) {
  std::string brokers = inv.Get("kafka").value_or("");
  if (brokers.empty() && !inv.Has("no-kafka"))
    if (const char* env = std::getenv("CONVERGE_KAFKA_BROKERS")) brokers = env;
  if (inv.Has("no-kafka")) brokers.clear();
  auto kafka_timeout = inv.GetDurationSeconds("kafka-timeout");
  if (!kafka_timeout.ok()) return inv.UsageError(kafka_timeout.status().message());
  const std::chrono::milliseconds timeout(
      kafka_timeout->has_value() ? std::max<int64_t>(1, **kafka_timeout) * 1000 : 3000);

  pqxx::transaction<pqxx::repeatable_read, pqxx::read_only> tx(inv.db());
  const pqxx::result outbox = tx.exec(
      "SELECT topic, count(*), count(DISTINCT key), "
      "       greatest(0, extract(epoch FROM now() - min(created_at)))::bigint "
      "  FROM converge.outbox GROUP BY topic ORDER BY topic");
  const pqxx::result relays = tx.exec(
      "SELECT i.instance_id, i.hostname, i.pid, "
      "       greatest(0, extract(epoch FROM now() - i.heartbeat_at))::bigint, "
      "       i.lease_until > now(), "
      "       (SELECT count(*) FROM converge.relay_slots s "
      "         WHERE s.owner = i.instance_id AND s.lease_until > now()) "
      "  FROM converge.relay_instances i ORDER BY i.instance_id");
  const pqxx::result slots = tx.exec(
      "SELECT count(*) FILTER (WHERE owner IS NOT NULL AND lease_until > now()), count(*) "
      "  FROM converge.relay_slots");
  const pqxx::result consumers = tx.exec(
      "SELECT consumer_group, topic, partition, next_offset, owner, "
      "       greatest(0, extract(epoch FROM now() - updated_at))::bigint "
      "  FROM converge.consumer_offsets ORDER BY consumer_group, topic, partition");
  const pqxx::result dead = tx.exec(
      "SELECT origin, coalesce(consumer_group, ''), topic, error_code, count(*), "
      "       greatest(0, extract(epoch FROM now() - min(failed_at)))::bigint "
      "  FROM converge.dead_letters WHERE status = 'open' "
      " GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4");
  const pqxx::result keys = tx.exec(
      "SELECT count(*) FILTER (WHERE parked), "
      "       count(*) FILTER (WHERE NOT parked AND blocked_until > now()), "
      "       greatest(0, extract(epoch FROM now() - min(since) FILTER (WHERE parked)))::bigint "
      "  FROM converge.outbox_blocked_keys");
  const pqxx::result flows = tx.exec(
      "SELECT count(*) FILTER (WHERE state = 'running'), "
      "       count(*) FILTER (WHERE state = 'running' AND deadline_at < now()), "
      "       count(*) FILTER (WHERE state = 'compensating'), "
      "       count(*) FILTER (WHERE state = 'compensating' AND deadline_at < now()), "
      "       count(*) FILTER (WHERE state = 'needs_attention') "
      "  FROM converge.flows");
  // Device commands: the MQTT device tables come with a later migration.
  std::optional<pqxx::result> devices;
  if (tx.exec("SELECT to_regclass('converge.device_commands') IS NOT NULL")[0][0].as<bool>()) {
    const bool has_status =
        tx.exec(
              "SELECT EXISTS (SELECT 1 FROM information_schema.columns "
              " WHERE table_schema = 'converge' AND table_name = 'device_commands' "
              "   AND column_name = 'status')")[0][0]
            .as<bool>();
    devices = tx.exec(has_status ? "SELECT status::text, count(*) FROM converge.device_commands "
                                   "GROUP BY 1 ORDER BY 1"
                                 : "SELECT 'total', count(*) FROM converge.device_commands");
  }
  tx.commit();

  // Consumer lag needs the high watermarks.
  std::optional<WatermarkResult> marks;
  std::string kafka_error;
  if (!brokers.empty() && !consumers.empty()) {
    std::vector<TopicPartitionKey> tps;
    for (const auto& c : consumers) tps.emplace_back(c[1].c_str(), c[2].as<int>());
    std::sort(tps.begin(), tps.end());
    tps.erase(std::unique(tps.begin(), tps.end()), tps.end());
    auto r = QueryHighWatermarks(brokers, tps, timeout);
    if (r.ok())
      marks = std::move(r).value();
    else
      kafka_error = Redact(r.status().message());
  }
  auto high = [&](const pqxx::row& c) -> std::optional<int64_t> {
    if (!marks) return std::nullopt;
    auto it = marks->high.find({c[1].c_str(), c[2].as<int>()});
    if (it == marks->high.end()) return std::nullopt;
    return it->second;
  };
  // The broker's answer for a partition it could not report (e.g. unknown topic), or "".
  auto mark_error = [&](const pqxx::row& c) -> std::string {
    if (!marks) return "";
    auto it = marks->errors.find({c[1].c_str(), c[2].as<int>()});
    return it == marks->errors.end() ? "" : it->second;
  };

  int64_t backlog = 0, oldest = 0;
  for (const auto& o : outbox) {
    backlog += I(o[1]);
    oldest = std::max(oldest, I(o[3]));
  }
  int64_t open_dead = 0;
  for (const auto& d : dead) open_dead += I(d[4]);
  // --check: exit 1 when something waits for a person (for monitoring scripts).
  const bool attention = open_dead > 0 || I(keys[0][0]) > 0 || I(flows[0][1]) > 0 ||
                         I(flows[0][3]) > 0 || I(flows[0][4]) > 0;
  const int rc = inv.Has("check") && attention ? kExitFailed : kExitOk;

  if (inv.json()) {
    JsonWriter j;
    j.BeginObject();
    j.Key("outbox").BeginObject().Key("rows").Int(backlog).Key("oldest_age_seconds").Int(oldest);
    j.Key("topics").BeginArray();
    for (const auto& o : outbox)
      j.BeginObject()
          .Field("topic", o[0])
          .FieldInt("rows", o[1])
          .FieldInt("keys", o[2])
          .FieldInt("oldest_age_seconds", o[3])
          .EndObject();
    j.EndArray().EndObject();
    j.Key("relays").BeginObject().Key("slots_owned").Int(I(slots[0][0]));
    j.Key("slots_total").Int(I(slots[0][1])).Key("instances").BeginArray();
    for (const auto& r : relays)
      j.BeginObject()
          .Field("instance_id", r[0])
          .Field("hostname", r[1])
          .FieldInt("pid", r[2])
          .FieldInt("heartbeat_age_seconds", r[3])
          .Key("alive")
          .Bool(r[4].as<bool>())
          .FieldInt("slots", r[5])
          .EndObject();
    j.EndArray().EndObject();
    j.Key("consumers").BeginObject();
    j.Key("kafka").BeginObject().Key("brokers");
    if (brokers.empty())
      j.Null();
    else
      j.String(Redact(brokers));
    j.Key("error");
    if (kafka_error.empty())
      j.Null();
    else
      j.String(kafka_error);
    j.EndObject().Key("partitions").BeginArray();
    for (const auto& c : consumers) {
      j.BeginObject().Field("group", c[0]).Field("topic", c[1]).FieldInt("partition", c[2]);
      j.FieldInt("next_offset", c[3]).Field("owner", c[4]).FieldInt("updated_age_seconds", c[5]);
      auto h = high(c);
      j.Key("high_watermark");
      if (h)
        j.Int(*h);
      else
        j.Null();
      j.Key("lag");
      if (h)
        j.Int(std::max<int64_t>(0, *h - I(c[3])));
      else
        j.Null();
      if (const std::string e = mark_error(c); !e.empty()) j.Key("kafka_error").String(e);
      j.EndObject();
    }
    j.EndArray().EndObject();
    j.Key("dead_letters").BeginObject().Key("open").Int(open_dead).Key("groups").BeginArray();
    for (const auto& d : dead) {
      j.BeginObject().Field("origin", d[0]).Key("consumer_group");
      if (std::string(d[1].c_str()).empty())
        j.Null();
      else
        j.String(d[1].c_str());
      j.Field("topic", d[2])
          .Field("error_code", d[3])
          .FieldInt("count", d[4])
          .FieldInt("oldest_age_seconds", d[5])
          .EndObject();
    }
    j.EndArray().EndObject();
    j.Key("keys").BeginObject().Key("parked").Int(I(keys[0][0])).Key("backoff").Int(I(keys[0][1]));
    j.Key("oldest_parked_age_seconds").Int(I(keys[0][2])).EndObject();
    j.Key("flows").BeginObject().Key("running").Int(I(flows[0][0]));
    j.Key("running_past_deadline").Int(I(flows[0][1])).Key("compensating").Int(I(flows[0][2]));
    j.Key("compensating_past_deadline").Int(I(flows[0][3]));
    j.Key("needs_attention").Int(I(flows[0][4])).EndObject();
    j.Key("device_commands");
    if (!devices) {
      j.Null();
    } else {
      j.BeginObject();
      for (const auto& d : *devices) j.Key(d[0].c_str()).Int(I(d[1]));
      j.EndObject();
    }
    j.Key("needs_attention").Bool(attention);
    j.EndObject();
    inv.out() << j.str() << "\n";
    return rc;
  }

  std::ostream& os = inv.out();
  os << "OUTBOX  " << backlog << " row(s) waiting";
  if (backlog) os << ", oldest " << FormatAge(oldest);
  os << "\n";
  if (!outbox.empty()) {
    Table t({"  TOPIC", "ROWS", "KEYS", "OLDEST"});
    for (const auto& o : outbox)
      t.AddRow({"  " + std::string(o[0].c_str()), o[1].c_str(), o[2].c_str(), FormatAge(I(o[3]))});
    t.Print(os);
  }
  os << "\nRELAYS  " << relays.size() << " instance(s), " << I(slots[0][0]) << "/" << I(slots[0][1])
     << " slots leased\n";
  if (!relays.empty()) {
    Table t({"  INSTANCE", "HOST", "PID", "SLOTS", "HEARTBEAT", "STATE"});
    for (const auto& r : relays)
      t.AddRow({"  " + std::string(r[0].c_str()), r[1].c_str(), r[2].c_str(), r[5].c_str(),
                FormatAge(I(r[3])) + " ago", r[4].as<bool>() ? "alive" : "lease expired"});
    t.Print(os);
  }
  os << "\nCONSUMERS  " << consumers.size() << " partition(s)";
  if (brokers.empty())
    os << " (lag: pass --kafka BROKERS or set CONVERGE_KAFKA_BROKERS)";
  else if (!kafka_error.empty())
    os << " (lag unavailable: " << kafka_error << ")";
  os << "\n";
  if (!consumers.empty()) {
    Table t({"  GROUP", "TOPIC", "PARTITION", "NEXT_OFFSET", "HIGH_WATERMARK", "LAG", "OWNER",
             "UPDATED"});
    for (const auto& c : consumers) {
      auto h = high(c);
      t.AddRow({"  " + std::string(c[0].c_str()), c[1].c_str(), c[2].c_str(), c[3].c_str(),
                h ? std::to_string(*h) : "-",
                h                       ? std::to_string(std::max<int64_t>(0, *h - I(c[3])))
                : mark_error(c).empty() ? "-"
                                        : "? (" + mark_error(c) + ")",
                Cell(c[4]), FormatAge(I(c[5])) + " ago"});
    }
    t.Print(os);
  }
  os << "\nDEAD LETTERS  " << open_dead << " open\n";
  if (!dead.empty()) {
    Table t({"  ORIGIN", "GROUP", "TOPIC", "ERROR", "COUNT", "OLDEST"});
    for (const auto& d : dead)
      t.AddRow({"  " + std::string(d[0].c_str()),
                std::string(d[1].c_str()).empty() ? "-" : d[1].c_str(), d[2].c_str(), d[3].c_str(),
                d[4].c_str(), FormatAge(I(d[5]))});
    t.Print(os);
  }
  os << "\nKEYS  " << I(keys[0][0]) << " parked";
  if (I(keys[0][0])) os << " (oldest " << FormatAge(I(keys[0][2])) << ")";
  os << ", " << I(keys[0][1]) << " backing off\n";
  os << "\nFLOWS  " << I(flows[0][0]) << " running (" << I(flows[0][1]) << " past deadline), "
     << I(flows[0][2]) << " compensating (" << I(flows[0][3]) << " past deadline), "
     << I(flows[0][4]) << " need attention\n";
  if (devices) {
    os << "\nDEVICE COMMANDS ";
    for (const auto& d : *devices) os << " " << d[0].c_str() << "=" << d[1].c_str();
    os << "\n";
  }
  if (attention)
    os << "\nneeds attention: see convergectl dlq list, convergectl keys list"
       << (I(flows[0][1]) + I(flows[0][3]) + I(flows[0][4]) > 0 ? ", convergectl flows" : "")
       << "\n";
  return rc;
}

const Registration kStatus({.path = "status",
                            .summary = "one screen: backlog, relays, consumer lag, dead letters, "
                                       "keys, flows, device commands",
                            .options = {{"kafka", "BROKERS",
                                         "Kafka bootstrap servers for consumer lag (default "
                                         "$CONVERGE_KAFKA_BROKERS)"},
                                        {"no-kafka", "", "do not ask Kafka (no lag column)"},
                                        {"kafka-timeout", "DURATION",
                                         "how long to wait for Kafka in total (default 3s)"},
                                        {"check", "",
                                         "exit 1 when something needs a person (open dead "
                                         "letters, parked keys, stuck or parked flows)"}},
                            .run = Status_});

}  // namespace
}  // namespace converge::ctl
