// Server side of the device features: commands, twins and presence in PostgreSQL, changed in
// the caller's transaction; server -> device messages written to the outbox (the relay publishes
// them to MQTT); device -> server messages applied by consumer-runtime handlers; a sweep that
// re-sends and expires. docs/devices.md has the protocol, the lifecycle and the rules.
//
//   pqxx::work tx(conn);
//   tx.exec_params("UPDATE thermostats SET target = $2 WHERE id = $1", id, 21);
//   auto cmd = converge::pubsub::SendCommand(tx, {.device_id = id, .name = "reboot",
//                                                .ttl = std::chrono::minutes(5)});
//   auto v = converge::pubsub::SetDesired(tx, id, R"({"target": 21})");
//   tx.commit();                                  // rows and messages commit together
//
//   converge::pubsub::DeviceIngestStats stats;
//   converge::pubsub::RegisterDeviceHandlers(consumer, &stats);  // acks, reported, presence
//
//   converge::pubsub::DeviceSweep sweep({});      // called periodically (reconciler process)
//   auto r = sweep.RunOnce(conn);                 // re-sends, expires, counts
//
// Errors: kInvalidArgument names the bad argument and leaves the transaction usable;
// kFailedPrecondition for a desired-version conflict or a missing schema (0004_devices);
// anything else from PostgreSQL is mapped by pg::StatusFromException and leaves the
// transaction aborted.
//
// Thread safety: free functions are as safe as the transaction passed in; DeviceIngestStats
// counters are atomics; a DeviceSweep may be shared (RunOnce takes the caller's connection).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <pqxx/connection>
#include <pqxx/transaction_base>

#include "converge/common/message.h"
#include "converge/common/status.h"
#include "converge/pubsub/protocol.h"

namespace converge::consumer {
class Consumer;
}  // namespace converge::consumer
namespace converge::metrics {
class Registry;
}  // namespace converge::metrics

namespace converge::pubsub {

// ---- Commands ---------------------------------------------------------------------------------

inline constexpr std::chrono::seconds kMaxCommandTtl{30 * 24 * 3600};

struct CommandRequest {
  std::string device_id;
  // Command name, 1-256 bytes of UTF-8 without control characters ("reboot", "set-target").
  std::string name;
  // Command arguments, any bytes up to 1,000,000 (JSON by default).
  std::string payload;
  std::string content_type = "application/json";
  // Time to live from now (database clock), (0, 30 days]. Past it the command is `expired`,
  // the broker drops an undelivered copy (message expiry) and the device refuses it.
  std::chrono::milliseconds ttl{std::chrono::minutes(5)};
  // Optional caller-chosen command id (a UUID) to make a retried request idempotent; a second
  // SendCommand with the same id fails with kAlreadyExists. Empty: a new UUIDv7.
  std::string command_id;
};

struct CommandSent {
  std::string command_id;  // also the outbox message id and the MQTT correlation data
  std::chrono::system_clock::time_point expires_at;
};

// Inserts the command (status `pending`) and its outbox message to devices/{id}/commands in
// `tx`: message id = command id (re-sends keep it, so the device dedupes them), response topic
// devices/{id}/acks, correlation data = command id, expiry = expires_at.
Result<CommandSent> SendCommand(pqxx::transaction_base& tx, const CommandRequest& request);

// ---- Twin -------------------------------------------------------------------------------------

// Sets the desired state (a JSON object) of a device: desired_version + 1 and a RETAINED outbox
// message with the full snapshot to devices/{id}/twin/desired (header device.version), in `tx`.
// With `expected_version`, the change happens only if the stored desired_version equals it (0 for
// a device without a twin); otherwise kFailedPrecondition "desired version conflict".
// Returns the new desired version.
Result<int64_t> SetDesired(pqxx::transaction_base& tx, std::string_view device_id,
                           std::string_view desired_json,
                           std::optional<int64_t> expected_version = std::nullopt);

// ---- Ingest (device -> server) ----------------------------------------------------------------

// Counters of the ingest handlers (all of them: the messages were consumed and committed).
struct DeviceIngestStats {
  std::atomic<uint64_t> acks_applied{0};  // acks that advanced a command
  std::atomic<uint64_t> acks_ignored{0};  // unknown, other device's or finished commands,
                                          // and acks that would move a command backwards
  std::atomic<uint64_t> reports_applied{0};
  std::atomic<uint64_t> reports_stale{0};  // reported_version not above the stored one
  std::atomic<uint64_t> presence_applied{0};
  std::atomic<uint64_t> presence_stale{0};  // lower connection counter (stale will ...)
};

// The MQTT topic filters the ingest consumer subscribes to: devices/+/acks,
// devices/+/twin/reported, devices/+/presence.
std::vector<std::string> IngestTopicFilters();

// The device a message came from: the {id} of its devices/{id}/... topic (with ACLs the topic
// proves the sender), else its subject (e.g. when bridged through Kafka). kInvalidArgument when
// neither is a valid device id.
Result<std::string> DeviceOf(const Message& message);

// The handlers, usable with any transaction (the consumer runtime passes its own). Malformed
// messages (missing/invalid extension attributes, a reported payload that is not JSON) are
// kInvalidArgument, which the runtime dead-letters. Stale, duplicate, unknown and late messages
// are OK (committed and counted in `stats`, which may be null) and never move state backwards.
//   ack:      extensions commandid (UUID), ackstatus (received|applied|rejected), ackdetail
//   reported: extensions reportedversion (> stored), desiredversion; payload = reported JSON
//   presence: extensions presence (online|offline), connection (the counter)
Status IngestAck(pqxx::transaction_base& tx, const Message& message, DeviceIngestStats* stats);
Status IngestReported(pqxx::transaction_base& tx, const Message& message, DeviceIngestStats* stats);
Status IngestPresence(pqxx::transaction_base& tx, const Message& message, DeviceIngestStats* stats);

// Exposes `stats` as the counter family converge_device_ingest_total{outcome=...} (outcomes:
// ack_applied, ack_ignored, report_applied, report_stale, presence_applied, presence_stale).
// `stats` must outlive the registry or be removed with RemoveCallback first.
Status RegisterDeviceIngestMetrics(metrics::Registry& registry, const DeviceIngestStats* stats);

// Registers the three handlers on a consumer (types kAckType, kReportedType, kPresenceType).
// `stats` may be null and must outlive the consumer otherwise. Before Start()/Init().
void RegisterDeviceHandlers(consumer::Consumer& consumer, DeviceIngestStats* stats);

// ---- Sweep ------------------------------------------------------------------------------------

struct SweepOptions {
  // A command in `sent`/`received` without a final ack is re-sent (same message id) after this
  // long since it was last written to the outbox, until it expires.
  std::chrono::milliseconds command_resend_interval{std::chrono::seconds(30)};
  // An unconverged twin (applied_desired_version < desired_version) gets its desired snapshot
  // re-sent after this long since its last change or re-send.
  std::chrono::milliseconds twin_resend_after{std::chrono::seconds(60)};
  // Skip re-sends to devices whose presence is `offline` (their online message triggers them).
  bool skip_offline_devices = true;
  // At most this many commands and this many twins re-sent per RunOnce.
  int max_resends = 500;

  Status Validate() const;  // names the bad field
};

struct SweepResult {
  int64_t expired_commands = 0;   // moved to `expired` by this run
  int64_t marked_sent = 0;        // pending -> sent (their outbox row is gone)
  int64_t resent_commands = 0;    // written to the outbox again
  int64_t resent_twins = 0;       // desired snapshots written again
  int64_t unacked_commands = 0;   // pending + sent + received after this run
  int64_t unconverged_twins = 0;  // applied_desired_version < desired_version after this run
};

// One sweep pass, in one transaction on the database clock: expire due commands, mark `sent`
// those whose outbox row is gone, re-send unacked commands and unconverged twins, count.
// Several processes may sweep at once (rows are locked with SKIP LOCKED).
class DeviceSweep {
 public:
  explicit DeviceSweep(SweepOptions options) : options_(std::move(options)) {}
  Result<SweepResult> RunOnce(pqxx::connection& conn);

  // Exposes converge_device_sweep_total{action="expired"|"marked_sent"|"resent_command"|
  // "resent_twin"} (counters over all runs) and the gauges converge_device_unacked_commands and
  // converge_device_unconverged_twins (from the last successful run; -1 before it). The sweep
  // must outlive the registry or be removed with RemoveCallback first.
  Status RegisterMetrics(metrics::Registry& registry);

 private:
  SweepOptions options_;
  std::atomic<int64_t> expired_{0}, marked_sent_{0}, resent_commands_{0}, resent_twins_{0};
  std::atomic<int64_t> unacked_{-1}, unconverged_{-1};
};

}  // namespace converge::pubsub
