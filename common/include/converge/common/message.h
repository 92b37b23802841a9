// Message: one event as Converge carries it, independent of the broker. Its attributes are the
// CloudEvents 1.0 context attributes; envelope.h maps them to Kafka headers, MQTT 5 user
// properties or structured JSON and back.
//
// Thread safety: a value type.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace converge {

// Limits enforced everywhere a message enters Converge (SQL enqueue, C++ enqueue, decoders).
// They match the CHECKs in schemas/migrations and are documented in docs/envelope.md.
struct MessageLimits {
  static constexpr size_t kMaxTopicBytes = 249;  // Kafka's own topic-name limit
  static constexpr size_t kMaxKeyBytes = 1024;
  static constexpr size_t kMaxTypeBytes = 256;
  static constexpr size_t kMaxSourceBytes = 1024;
  static constexpr size_t kMaxAttributeBytes = 1024;  // any other attribute or header value
  static constexpr size_t kMaxHeaders = 64;
  static constexpr size_t kMaxHeaderNameBytes = 128;
  static constexpr size_t kMaxPayloadBytes = 1000000;  // below Kafka's message.max.bytes
};

struct Message {
  // CloudEvents `id`: a UUIDv7 in canonical text form. Unique per message; the dedupe key.
  std::string id;
  // CloudEvents `source`: URI-reference of the producing service, e.g. "/orders".
  std::string source;
  // CloudEvents `type`, e.g. "com.example.order.placed".
  std::string type;
  // CloudEvents `subject`: the ordering key. Messages with the same topic and subject are
  // delivered in `sequence` order. Also the Kafka message key.
  std::string subject;
  // CloudEvents `time`: when the message was enqueued (RFC 3339 on the wire).
  std::chrono::system_clock::time_point time{};
  // CloudEvents `datacontenttype`, e.g. "application/json".
  std::string datacontenttype = "application/json";
  // W3C trace context, empty when absent (CloudEvents distributed-tracing extension).
  std::string traceparent;
  // Converge extension `keyseq`: 1, 2, 3 ... per (topic, subject); 0 when unknown.
  int64_t sequence = 0;
  // Other CloudEvents extension attributes (lowercase a-z0-9 names, at most 20 characters).
  std::map<std::string, std::string> extensions;
  // Plain transport headers that are not CloudEvents attributes (from enqueue's `headers`).
  std::map<std::string, std::string> headers;
  // The topic the message is published to (not a CloudEvents attribute).
  std::string topic;
  // The event data, as bytes.
  std::string payload;
  // Optional deadline after which the message is no longer useful (MQTT message expiry).
  std::optional<std::chrono::system_clock::time_point> expires_at;
};

}  // namespace converge
