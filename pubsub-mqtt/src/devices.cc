// Server side of the device features. Every SQL statement is parameterized; every time decision
// uses the database clock (now()).
#include "converge/pubsub/devices.h"

#include <pqxx/pqxx>

#include "converge/common/metrics.h"
#include "converge/common/time_format.h"
#include "converge/common/utf8.h"
#include "converge/common/uuid.h"
#include "converge/consumer/consumer.h"
#include "converge/outbox/outbox.h"
#include "converge/schemas/pg.h"
#include "json_check.h"

namespace converge::pubsub {
namespace {

using std::chrono::system_clock;

system_clock::time_point FromMicros(int64_t us) {
  return system_clock::time_point(
      std::chrono::duration_cast<system_clock::duration>(std::chrono::microseconds(us)));
}

outbox::OutboxMessage CommandMessage(const std::string& id, const std::string& device_id,
                                     const std::string& name, const std::string& payload,
                                     const std::string& content_type,
                                     system_clock::time_point expires_at) {
  outbox::OutboxMessage m;
  m.topic = DeviceTopic(device_id, TopicKind::kCommands);
  m.key = device_id;
  m.type = std::string(kCommandType);
  m.payload = payload;
  m.content_type = content_type;
  m.expires_at = expires_at;
  m.message_id = id;
  m.headers = {{std::string(kHeaderResponseTopic), DeviceTopic(device_id, TopicKind::kAcks)},
               {std::string(kHeaderCorrelationData), id},
               {std::string(kHeaderCommandName), name},
               {std::string(kHeaderExpiresAt), FormatRfc3339(expires_at)}};
  return m;
}

outbox::OutboxMessage DesiredMessage(const std::string& device_id, std::string_view json,
                                     int64_t version) {
  outbox::OutboxMessage m;
  m.topic = DeviceTopic(device_id, TopicKind::kDesired);
  m.key = device_id;
  m.type = std::string(kDesiredType);
  m.payload = std::string(json);
  m.content_type = "application/json";
  // No expiry: an expired retained message would vanish from the broker (mqtt.md F3).
  m.headers = {{std::string(kHeaderRetain), "true"},
               {std::string(kHeaderDesiredVersion), std::to_string(version)}};
  return m;
}

std::string Ext(const Message& m, std::string_view name) {
  auto it = m.extensions.find(std::string(name));
  return it == m.extensions.end() ? std::string() : it->second;
}

Result<std::string> RequireExt(const Message& m, std::string_view name) {
  std::string v = Ext(m, name);
  if (v.empty())
    return Status::InvalidArgument(std::string(m.type) + " message " + m.id + " lacks the " +
                                   std::string(name) + " attribute");
  return v;
}

void Count(std::atomic<uint64_t> DeviceIngestStats::*field, DeviceIngestStats* stats) {
  if (stats) (stats->*field).fetch_add(1);
}

}  // namespace

// ---- Commands ---------------------------------------------------------------------------------

Result<CommandSent> SendCommand(pqxx::transaction_base& tx, const CommandRequest& r) {
  CONVERGE_RETURN_IF_ERROR(ValidateDeviceId(r.device_id));
  if (r.name.empty() || r.name.size() > 256)
    return Status::InvalidArgument("command name must be 1-256 bytes");
  if (!IsValidAttributeText(r.name))
    return Status::InvalidArgument("command name must be UTF-8 without control characters");
  if (r.ttl <= std::chrono::milliseconds(0) || r.ttl > kMaxCommandTtl)
    return Status::InvalidArgument("command ttl must be in (0, 30 days]");
  std::string id = r.command_id;
  if (id.empty()) {
    id = NewUuidV7().ToString();
  } else {
    auto parsed = Uuid::Parse(id);
    if (!parsed.ok())
      return Status::InvalidArgument("command_id must be a UUID: " + parsed.status().message());
    id = parsed->ToString();
  }
  // Validate the outbox message first, so bad input leaves the transaction usable.
  CONVERGE_RETURN_IF_ERROR(outbox::Validate(CommandMessage(
      id, r.device_id, r.name, r.payload, r.content_type, system_clock::now() + r.ttl)));
  system_clock::time_point expires_at;
  try {
    auto row = tx.exec_params1(
        "INSERT INTO converge.device_commands (id, device_id, name, payload, content_type, "
        "  expires_at) "
        "VALUES ($1::uuid, $2, $3, $4, $5, now() + $6::bigint * interval '1 millisecond') "
        "RETURNING (extract(epoch FROM expires_at) * 1000000)::bigint",
        id, r.device_id, r.name, pqxx::binarystring(r.payload.data(), r.payload.size()),
        r.content_type, static_cast<int64_t>(r.ttl.count()));
    expires_at = FromMicros(row[0].as<int64_t>());
  } catch (const std::exception& e) {
    return pg::StatusFromException(e);
  }
  auto sent = outbox::Enqueue(
      tx, CommandMessage(id, r.device_id, r.name, r.payload, r.content_type, expires_at));
  if (!sent.ok()) return sent.status();
  return CommandSent{id, expires_at};
}

// ---- Twin -------------------------------------------------------------------------------------

Result<int64_t> SetDesired(pqxx::transaction_base& tx, std::string_view device_id,
                           std::string_view desired_json, std::optional<int64_t> expected) {
  CONVERGE_RETURN_IF_ERROR(ValidateDeviceId(device_id));
  CONVERGE_RETURN_IF_ERROR(internal::CheckJson(desired_json, "desired state", true));
  if (desired_json.size() > MessageLimits::kMaxPayloadBytes)
    return Status::InvalidArgument("desired state is larger than 1,000,000 bytes");
  if (expected && *expected < 0)
    return Status::InvalidArgument("expected desired version must be >= 0");
  const std::string id(device_id);
  int64_t version = 0;
  try {
    // Lock (or create) the twin row so concurrent writers serialize on it.
    tx.exec_params(
        "INSERT INTO converge.device_twins (device_id) VALUES ($1) "
        "ON CONFLICT (device_id) DO NOTHING",
        id);
    const int64_t current = tx.exec_params1(
                                  "SELECT desired_version FROM converge.device_twins "
                                  "WHERE device_id = $1 FOR UPDATE",
                                  id)[0]
                                .as<int64_t>();
    if (expected && *expected != current)
      return Status::FailedPrecondition("desired version conflict for device " + id +
                                        ": expected " + std::to_string(*expected) + ", stored " +
                                        std::to_string(current));
    version = tx.exec_params1(
                    "UPDATE converge.device_twins SET desired = $2::jsonb, "
                    "  desired_version = desired_version + 1, desired_at = now(), "
                    "  desired_sent_at = now() "
                    "WHERE device_id = $1 RETURNING desired_version",
                    id, std::string(desired_json))[0]
                  .as<int64_t>();
  } catch (const std::exception& e) {
    return pg::StatusFromException(e);
  }
  auto sent = outbox::Enqueue(tx, DesiredMessage(id, desired_json, version));
  if (!sent.ok()) return sent.status();
  return version;
}

// ---- Ingest -----------------------------------------------------------------------------------

std::vector<std::string> IngestTopicFilters() {
  return {std::string(kTopicRoot) + "/+/acks", std::string(kTopicRoot) + "/+/twin/reported",
          std::string(kTopicRoot) + "/+/presence"};
}

Result<std::string> DeviceOf(const Message& m) {
  if (auto parsed = ParseDeviceTopic(m.topic)) return parsed->device_id;
  if (ValidateDeviceId(m.subject).ok()) return m.subject;
  return Status::InvalidArgument("message " + m.id + " on topic \"" + m.topic.substr(0, 128) +
                                 "\" names no valid device (topic devices/{id}/... or subject)");
}

Status IngestAck(pqxx::transaction_base& tx, const Message& m, DeviceIngestStats* stats) {
  CONVERGE_ASSIGN_OR_RETURN(std::string device, DeviceOf(m));
  CONVERGE_ASSIGN_OR_RETURN(std::string command_text, RequireExt(m, kExtCommandId));
  auto command = Uuid::Parse(command_text);
  if (!command.ok())
    return Status::InvalidArgument("ack " + m.id +
                                   ": commandid is not a UUID: " + command.status().message());
  CONVERGE_ASSIGN_OR_RETURN(std::string status_text, RequireExt(m, kExtAckStatus));
  CONVERGE_ASSIGN_OR_RETURN(AckStatus status, ParseAckStatus(status_text));
  const std::string detail = Ext(m, kExtAckDetail);
  pqxx::result r;
  if (status == AckStatus::kReceived) {
    r = tx.exec_params(
        "UPDATE converge.device_commands SET status = 'received', received_at = now(), "
        "  sent_at = coalesce(sent_at, now()) "
        "WHERE id = $1::uuid AND device_id = $2 AND status IN ('pending', 'sent') RETURNING 1",
        command->ToString(), device);
  } else {
    r = tx.exec_params(
        "UPDATE converge.device_commands SET status = $3, acked_at = now(), finished_at = now(), "
        "  received_at = coalesce(received_at, now()), sent_at = coalesce(sent_at, now()), "
        "  result = nullif($4, '') "
        "WHERE id = $1::uuid AND device_id = $2 AND status IN ('pending', 'sent', 'received') "
        "RETURNING 1",
        command->ToString(), device, std::string(AckStatusName(status)), detail);
  }
  // Unknown command, another device's command, a finished (or expired) one, or an ack that would
  // move the command backwards: committed as consumed, state unchanged.
  Count(r.empty() ? &DeviceIngestStats::acks_ignored : &DeviceIngestStats::acks_applied, stats);
  return Status::Ok();
}

Status IngestReported(pqxx::transaction_base& tx, const Message& m, DeviceIngestStats* stats) {
  CONVERGE_ASSIGN_OR_RETURN(std::string device, DeviceOf(m));
  CONVERGE_ASSIGN_OR_RETURN(std::string rv_text, RequireExt(m, kExtReportedVersion));
  CONVERGE_ASSIGN_OR_RETURN(int64_t reported_version, ParseNonNegative(rv_text, "reportedversion"));
  if (reported_version == 0)
    return Status::InvalidArgument("reported " + m.id + ": reportedversion must be >= 1");
  const std::string dv_text = Ext(m, kExtDesiredVersion);
  int64_t desired_version = 0;
  if (!dv_text.empty()) {
    CONVERGE_ASSIGN_OR_RETURN(desired_version, ParseNonNegative(dv_text, "desiredversion"));
  }
  CONVERGE_RETURN_IF_ERROR(internal::CheckJson(m.payload, "reported state", false));
  // Insert a twin for a device that reports before anything was desired; otherwise update only
  // when the report is newer. applied_desired_version never decreases and never exceeds what
  // was desired.
  auto r = tx.exec_params(
      "INSERT INTO converge.device_twins AS t (device_id, reported, reported_version, "
      "  reported_at) VALUES ($1, $2::jsonb, $3, now()) "
      "ON CONFLICT (device_id) DO UPDATE SET reported = EXCLUDED.reported, "
      "  reported_version = EXCLUDED.reported_version, reported_at = now(), "
      "  applied_desired_version = GREATEST(t.applied_desired_version, "
      "                                     LEAST($4::bigint, t.desired_version)) "
      "WHERE t.reported_version < EXCLUDED.reported_version RETURNING 1",
      device, m.payload, reported_version, desired_version);
  Count(r.empty() ? &DeviceIngestStats::reports_stale : &DeviceIngestStats::reports_applied, stats);
  return Status::Ok();
}

Status IngestPresence(pqxx::transaction_base& tx, const Message& m, DeviceIngestStats* stats) {
  CONVERGE_ASSIGN_OR_RETURN(std::string device, DeviceOf(m));
  CONVERGE_ASSIGN_OR_RETURN(std::string state, RequireExt(m, kExtPresence));
  if (state != "online" && state != "offline")
    return Status::InvalidArgument("presence " + m.id + ": presence must be online or offline");
  CONVERGE_ASSIGN_OR_RETURN(std::string conn_text, RequireExt(m, kExtConnection));
  CONVERGE_ASSIGN_OR_RETURN(int64_t connection, ParseNonNegative(conn_text, "connection"));
  // A higher counter is a newer connection. With the same counter only online -> offline moves
  // (the will or goodbye of the current connection). A lower counter is stale: e.g. the will of
  // an earlier connection that the broker delivered after the device reconnected.
  auto r = tx.exec_params(
      "INSERT INTO converge.device_presence AS p (device_id, state, connection) "
      "VALUES ($1, $2, $3) "
      "ON CONFLICT (device_id) DO UPDATE SET state = EXCLUDED.state, "
      "  connection = EXCLUDED.connection, changed_at = now() "
      "WHERE EXCLUDED.connection > p.connection OR (EXCLUDED.connection = p.connection AND "
      "  p.state = 'online' AND EXCLUDED.state = 'offline') RETURNING 1",
      device, state, connection);
  if (r.empty()) {
    Count(&DeviceIngestStats::presence_stale, stats);
    return Status::Ok();
  }
  Count(&DeviceIngestStats::presence_applied, stats);
  if (state == "online") {
    // Back online: the next sweep re-sends its unacked commands without waiting for the
    // resend interval.
    tx.exec_params(
        "UPDATE converge.device_commands SET resend_due = true "
        "WHERE device_id = $1 AND status IN ('sent', 'received') AND NOT resend_due",
        device);
  }
  return Status::Ok();
}

void RegisterDeviceHandlers(consumer::Consumer& c, DeviceIngestStats* stats) {
  c.Handle(std::string(kAckType), [stats](const Message& m, consumer::Context& ctx) {
    return IngestAck(ctx.tx(), m, stats);
  });
  c.Handle(std::string(kReportedType), [stats](const Message& m, consumer::Context& ctx) {
    return IngestReported(ctx.tx(), m, stats);
  });
  c.Handle(std::string(kPresenceType), [stats](const Message& m, consumer::Context& ctx) {
    return IngestPresence(ctx.tx(), m, stats);
  });
}

// ---- Sweep ------------------------------------------------------------------------------------

Status SweepOptions::Validate() const {
  if (command_resend_interval <= std::chrono::milliseconds(0))
    return Status::InvalidArgument("sweep.command_resend_interval must be > 0");
  if (twin_resend_after <= std::chrono::milliseconds(0))
    return Status::InvalidArgument("sweep.twin_resend_after must be > 0");
  if (max_resends < 1 || max_resends > 100000)
    return Status::InvalidArgument("sweep.max_resends must be in [1, 100000]");
  return Status::Ok();
}

Status RegisterDeviceIngestMetrics(metrics::Registry& registry, const DeviceIngestStats* stats) {
  return registry.AddCallback("converge_device_ingest_total",
                              "Device messages applied or ignored by the ingest handlers",
                              metrics::MetricType::kCounter, {"outcome"}, [stats] {
                                return std::vector<metrics::Sample>{
                                    {{"ack_applied"}, double(stats->acks_applied.load())},
                                    {{"ack_ignored"}, double(stats->acks_ignored.load())},
                                    {{"report_applied"}, double(stats->reports_applied.load())},
                                    {{"report_stale"}, double(stats->reports_stale.load())},
                                    {{"presence_applied"}, double(stats->presence_applied.load())},
                                    {{"presence_stale"}, double(stats->presence_stale.load())}};
                              });
}

Status DeviceSweep::RegisterMetrics(metrics::Registry& registry) {
  CONVERGE_RETURN_IF_ERROR(registry.AddCallback(
      "converge_device_sweep_total", "Device sweep actions over all runs",
      metrics::MetricType::kCounter, {"action"}, [this] {
        return std::vector<metrics::Sample>{{{"expired"}, double(expired_.load())},
                                            {{"marked_sent"}, double(marked_sent_.load())},
                                            {{"resent_command"}, double(resent_commands_.load())},
                                            {{"resent_twin"}, double(resent_twins_.load())}};
      }));
  CONVERGE_RETURN_IF_ERROR(registry.AddCallbackGauge(
      "converge_device_unacked_commands",
      "Device commands pending, sent or received (last sweep; -1 before the first)",
      [this] { return double(unacked_.load()); }));
  return registry.AddCallbackGauge(
      "converge_device_unconverged_twins",
      "Twins whose applied desired version is behind (last sweep; -1 before the first)",
      [this] { return double(unconverged_.load()); });
}

Result<SweepResult> DeviceSweep::RunOnce(pqxx::connection& conn) {
  CONVERGE_RETURN_IF_ERROR(options_.Validate());
  SweepResult out;
  Status st = pg::RunInTransaction(conn, [&](pqxx::work& tx) -> Status {
    out = SweepResult{};
    out.expired_commands =
        tx.exec(
              "UPDATE converge.device_commands SET status = 'expired', finished_at = now() "
              "WHERE status IN ('pending', 'sent', 'received') AND expires_at <= now()")
            .affected_rows();
    // The relay deletes an outbox row only after the broker confirmed it: gone = sent.
    out.marked_sent =
        tx.exec(
              "UPDATE converge.device_commands c SET status = 'sent', sent_at = now() "
              "WHERE c.status = 'pending' AND NOT EXISTS "
              "  (SELECT 1 FROM converge.outbox o WHERE o.message_id = c.id)")
            .affected_rows();
    const char* offline_filter = options_.skip_offline_devices
                                     ? " AND NOT EXISTS (SELECT 1 FROM converge.device_presence p "
                                       "   WHERE p.device_id = c.device_id AND p.state = 'offline')"
                                     : "";
    auto due = tx.exec_params(
        std::string(
            "SELECT c.id::text, c.device_id, c.name, c.payload, c.content_type, "
            "  (extract(epoch FROM c.expires_at) * 1000000)::bigint "
            "FROM converge.device_commands c "
            "WHERE c.status IN ('sent', 'received') AND c.expires_at > now() "
            "  AND (c.resend_due OR c.last_sent_at <= now() - $1::bigint * interval '1 "
            "millisecond')"
            "  AND NOT EXISTS (SELECT 1 FROM converge.outbox o WHERE o.message_id = c.id)") +
            offline_filter + " ORDER BY c.created_at LIMIT $2 FOR UPDATE OF c SKIP LOCKED",
        static_cast<int64_t>(options_.command_resend_interval.count()), options_.max_resends);
    for (const auto& row : due) {
      pqxx::binarystring payload(row[3]);
      const std::string id = row[0].c_str();
      auto sent =
          outbox::Enqueue(tx, CommandMessage(id, row[1].c_str(), row[2].c_str(), payload.str(),
                                             row[4].c_str(), FromMicros(row[5].as<int64_t>())));
      if (!sent.ok()) return sent.status();
      tx.exec_params(
          "UPDATE converge.device_commands SET attempts = attempts + 1, "
          "  last_sent_at = now(), resend_due = false WHERE id = $1::uuid",
          id);
      ++out.resent_commands;
    }
    auto twins = tx.exec_params(
        std::string("SELECT c.device_id, c.desired::text, c.desired_version "
                    "FROM converge.device_twins c "
                    "WHERE c.applied_desired_version < c.desired_version "
                    "  AND coalesce(c.desired_sent_at, c.desired_at) <= "
                    "      now() - $1::bigint * interval '1 millisecond' "
                    "  AND NOT EXISTS (SELECT 1 FROM converge.outbox o "
                    "    WHERE o.topic = 'devices/' || c.device_id || '/twin/desired')") +
            offline_filter + " ORDER BY c.desired_at LIMIT $2 FOR UPDATE OF c SKIP LOCKED",
        static_cast<int64_t>(options_.twin_resend_after.count()), options_.max_resends);
    for (const auto& row : twins) {
      const std::string device = row[0].c_str();
      auto sent = outbox::Enqueue(tx, DesiredMessage(device, row[1].c_str(), row[2].as<int64_t>()));
      if (!sent.ok()) return sent.status();
      tx.exec_params(
          "UPDATE converge.device_twins SET desired_sent_at = now(), "
          "  desired_resends = desired_resends + 1 WHERE device_id = $1",
          device);
      ++out.resent_twins;
    }
    auto counts = tx.exec(
        "SELECT (SELECT count(*) FROM converge.device_commands "
        "          WHERE status IN ('pending', 'sent', 'received')), "
        "       (SELECT count(*) FROM converge.device_twins "
        "          WHERE applied_desired_version < desired_version)");
    out.unacked_commands = counts[0][0].as<int64_t>();
    out.unconverged_twins = counts[0][1].as<int64_t>();
    return Status::Ok();
  });
  if (!st.ok()) return st;
  expired_.fetch_add(out.expired_commands);
  marked_sent_.fetch_add(out.marked_sent);
  resent_commands_.fetch_add(out.resent_commands);
  resent_twins_.fetch_add(out.resent_twins);
  unacked_.store(out.unacked_commands);
  unconverged_.store(out.unconverged_twins);
  return out;
}

}  // namespace converge::pubsub
