// The device protocol: the MQTT topic layout per device, the CloudEvents types, the outbox
// headers the relay's MQTT publisher maps to MQTT 5 features, and the extension attributes
// devices send. Shared by the server side (devices.h) and the device client (device_client.h);
// docs/devices.md describes the whole protocol.
//
//   devices/{id}/commands       server -> device  commands (QoS 1, message expiry, response
//                                                 topic + correlation data)
//   devices/{id}/acks           device -> server  command acks (received/applied/rejected)
//   devices/{id}/twin/desired   server -> device  desired state snapshot, RETAINED, versioned
//   devices/{id}/twin/reported  device -> server  reported state with versions
//   devices/{id}/telemetry      device -> server  telemetry (application-defined)
//   devices/{id}/presence       device -> server  RETAINED online/offline with the connection
//                                                 counter; the last will is "offline"
//
// Thread safety: constants and pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "converge/common/status.h"

namespace converge::pubsub {

inline constexpr std::string_view kTopicRoot = "devices";
inline constexpr size_t kMaxDeviceIdBytes = 64;

// CloudEvents types.
inline constexpr std::string_view kCommandType = "converge.device.command";
inline constexpr std::string_view kDesiredType = "converge.device.desired";
inline constexpr std::string_view kAckType = "converge.device.ack";
inline constexpr std::string_view kReportedType = "converge.device.reported";
inline constexpr std::string_view kPresenceType = "converge.device.presence";
inline constexpr std::string_view kTelemetryType = "converge.device.telemetry";

// Outbox headers (server -> device). The relay's MQTT publisher maps the mqtt.* ones to MQTT 5
// features; all of them are also carried as user properties, so a device can fall back to
// them when a publisher does not map a feature.
//   mqtt.retain          "true": publish with the RETAIN flag (desired state)
//   mqtt.response_topic  the Response Topic property (commands: devices/{id}/acks)
//   mqtt.correlation_data  the Correlation Data property, as bytes of the value (the command id)
// The Message Expiry Interval comes from the outbox row's expires_at (no header needed).
inline constexpr std::string_view kHeaderRetain = "mqtt.retain";
inline constexpr std::string_view kHeaderResponseTopic = "mqtt.response_topic";
inline constexpr std::string_view kHeaderCorrelationData = "mqtt.correlation_data";
// Device-level headers: the command's name, its expiry (RFC 3339, the device checks it too) and
// the desired state's version.
inline constexpr std::string_view kHeaderCommandName = "device.command";
inline constexpr std::string_view kHeaderExpiresAt = "device.expires_at";
inline constexpr std::string_view kHeaderDesiredVersion = "device.version";

// CloudEvents extension attributes (device -> server; MQTT 5 user properties of the same name).
inline constexpr std::string_view kExtCommandId = "commandid";              // ack
inline constexpr std::string_view kExtAckStatus = "ackstatus";              // ack
inline constexpr std::string_view kExtAckDetail = "ackdetail";              // ack (optional)
inline constexpr std::string_view kExtReportedVersion = "reportedversion";  // reported
inline constexpr std::string_view kExtDesiredVersion = "desiredversion";    // reported
inline constexpr std::string_view kExtPresence = "presence";                // presence
inline constexpr std::string_view kExtConnection = "connection";            // presence

enum class TopicKind { kCommands, kAcks, kDesired, kReported, kTelemetry, kPresence };

enum class AckStatus { kReceived, kApplied, kRejected };
std::string_view AckStatusName(AckStatus s);  // "received", "applied", "rejected"
Result<AckStatus> ParseAckStatus(std::string_view s);

// OK for 1-64 bytes of A-Z a-z 0-9 '.' '_' '-', not "." or "..". Otherwise kInvalidArgument
// naming the problem ("device id \"a/b\" contains '/' ..."). The same rule as the SQL
// converge.valid_device_id.
Status ValidateDeviceId(std::string_view id);

// "devices/{id}/<kind>" (the id is not validated here).
std::string DeviceTopic(std::string_view device_id, TopicKind kind);

struct ParsedTopic {
  std::string device_id;
  TopicKind kind;
};
// The device and kind of a device topic; nullopt for anything else (or an invalid id).
std::optional<ParsedTopic> ParseDeviceTopic(std::string_view topic);

// The CloudEvents source of messages a device sends: "/devices/{id}".
std::string DeviceSource(std::string_view device_id);

// A decimal int64 >= 0; kInvalidArgument naming `what` otherwise.
Result<int64_t> ParseNonNegative(std::string_view text, std::string_view what);

}  // namespace converge::pubsub
