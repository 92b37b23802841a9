// The CloudEvents 1.0 envelope: one codec, three bindings, all mapping to and from
// converge::Message.
//
//   Kafka binary content mode   attributes as `ce_<name>` headers, datacontenttype as the
//                               `content-type` header, data as the record value.
//   MQTT 5 binary content mode  attributes as user properties named exactly as the attribute,
//                               datacontenttype as the Content Type property, data as payload.
//   Structured JSON             `application/cloudevents+json`: attributes and data in one JSON
//                               object (MQTT 3.1.1, tools, and receivers of structured Kafka or
//                               MQTT 5 messages).
//
// Encoders check the message first and never produce something the matching decoder rejects.
// Decoders are strict: anything outside the rules below is kInvalidArgument, with a message that
// names the attribute as it appears on the wire ("ce_type is missing", "ce_time is not RFC 3339:
// ...", "header \"x-a\" appears more than once"). docs/envelope.md lists every rule.
//
// Two id rules, on purpose: Converge produces UUIDv7 ids and checks for a UUID wherever a message
// enters Converge (ValidateMessage, the encoders by default); decoders accept any non-empty
// CloudEvents String id, because other producers (and the CloudEvents spec's own examples, e.g.
// "A234-1234-1234") use other ids.
//
// Message fields that mean "absent": empty strings, sequence 0, time == time_point{} (the epoch).
// `expires_at` is not a CloudEvents attribute and is not encoded here (the MQTT adapter maps it
// to the Message Expiry Interval). `topic` is not encoded either; decoders take it as a parameter.
//
// Thread safety: pure functions.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "converge/common/message.h"
#include "converge/common/status.h"

namespace converge {

// Kafka headers or MQTT user properties in wire order. Both protocols allow a name to repeat;
// decoders reject repeats because a Message cannot hold them.
using HeaderList = std::vector<std::pair<std::string, std::string>>;

inline constexpr std::string_view kCloudEventsSpecVersion = "1.0";
// The Content Type for structured mode (MQTT 5 Content Type property, Kafka content-type header).
inline constexpr std::string_view kStructuredJsonContentType =
    "application/cloudevents+json; charset=utf-8";
// CloudEvents: names SHOULD NOT exceed 20 characters; Converge makes that a MUST.
inline constexpr size_t kMaxExtensionNameBytes = 20;
// A structured JSON event may hold base64 data (4/3 of kMaxPayloadBytes) and the attributes.
inline constexpr size_t kMaxStructuredJsonBytes = 2 * MessageLimits::kMaxPayloadBytes;
// Deepest JSON nesting accepted in embedded `data` (the event object itself is one more level).
inline constexpr int kMaxJsonDataDepth = 64;
// Headers/properties a decoder accepts beyond kMaxHeaders: the envelope's own (ce_specversion,
// ce_id, ce_source, ce_type, ce_subject, ce_time, ce_traceparent, ce_keyseq, content-type and a
// redundant ce_datacontenttype).
inline constexpr size_t kMaxEnvelopeHeaders = 10;

// Which message ids a check accepts.
enum class IdRule {
  // A canonical 8-4-4-4-12 UUID (any version, either case), not the nil UUID. Converge's own
  // messages carry UUIDv7; use this wherever Converge produces or accepts a message to publish.
  kUuid,
  // Any non-empty CloudEvents String up to MessageLimits::kMaxAttributeBytes. What decoders
  // accept; use it to re-encode events that came from other producers.
  kAnyString,
};

// True for a valid CloudEvents extension name that Converge can carry: 1-20 characters, each
// 'a'-'z' or '0'-'9', and not a name the envelope uses itself (specversion, id, source, type,
// subject, time, datacontenttype, traceparent, keyseq, data). `dataschema` is allowed and is
// carried as an extension (Message has no field for it).
bool IsValidExtensionName(std::string_view name);

// True when a datacontenttype declares JSON data: "*/json" or "*/*+json" once parameters are
// stripped (CloudEvents JSON format 3.1.1), compared case-insensitively.
bool IsJsonContentType(std::string_view content_type);

// The checks a message must pass to enter Converge (the outbox enqueue API calls this) and to be
// published. All failures are kInvalidArgument naming the field:
//   topic       non-empty, <= kMaxTopicBytes, attribute text, no MQTT wildcard '+' or '#'
//   id          per `id_rule` (default: UUID)
//   source      non-empty, <= kMaxSourceBytes, attribute text, RFC 3986 characters only
//   type        non-empty, <= kMaxTypeBytes, attribute text
//   subject     <= kMaxKeyBytes (it is the Kafka key), attribute text
//   datacontenttype  <= kMaxAttributeBytes, an RFC 2046 "type/subtype; param=value" shape
//   traceparent W3C Trace Context form "vv-<32 hex>-<16 hex>-<2 hex>"
//   sequence    >= 0
//   extensions  names per IsValidExtensionName, values <= kMaxAttributeBytes, attribute text
//   headers     names 1..kMaxHeaderNameBytes, values <= kMaxAttributeBytes, both attribute text;
//               a name must be usable in every binding: not starting with "ce_" (any case), not
//               "content-type" (any case), and not made only of 'a'-'z' and '0'-'9' (an MQTT 5
//               receiver would read it as a CloudEvents attribute). "x-tenant" and "Tenant" are
//               fine; "tenant" is not.
//   headers + extensions  at most kMaxHeaders together
//   payload     <= kMaxPayloadBytes (bytes, not checked as text)
// "Attribute text" is IsValidAttributeText (utf8.h): UTF-8 with no control characters.
Status ValidateMessage(const Message& message, IdRule id_rule = IdRule::kUuid);

// ---- Kafka binary content mode ----------------------------------------------------------------

// The record headers for `message`: ce_specversion, ce_id, ce_source, ce_type, ce_subject,
// ce_time, ce_traceparent, ce_keyseq, ce_<extension>..., content-type, then the plain headers.
// Absent attributes are left out. The record value is message.payload; the key is
// KafkaKey(message). Plain headers follow the Kafka rule (no "ce_" prefix, not "content-type");
// otherwise the checks are ValidateMessage's.
Result<HeaderList> EncodeKafkaHeaders(const Message& message, IdRule id_rule = IdRule::kUuid);

// The record key Converge uses: the subject (so a subject's messages share a partition), or
// nullopt when the subject is empty.
std::optional<std::string> KafkaKey(const Message& message);

// Decodes a received record. A `content-type` header starting with "application/cloudevents"
// (any case) selects structured mode: "application/cloudevents+json" is decoded as structured
// JSON from the value (ce_* headers are then ignored, other headers become Message::headers);
// other event formats are rejected. Otherwise binary mode: `ce_` headers are attributes (exact
// lower-case prefix), `content-type` is datacontenttype, every other header is a plain header.
// `key` is not a CloudEvents attribute and never sets one (Kafka binding 3.1: a key mapping must
// not modify the event); it is accepted so adapters can pass the record as received.
Result<Message> DecodeKafka(std::string_view topic, std::optional<std::string_view> key,
                            const HeaderList& headers, std::string_view payload);

// ---- MQTT 5 binary content mode ---------------------------------------------------------------

struct MqttProperties {
  // The PUBLISH Content Type property (= datacontenttype); empty: leave the property out.
  std::string content_type;
  // specversion, id, source, type, subject, time, traceparent, keyseq, extensions..., then the
  // plain headers. Attribute names are used unchanged (MQTT binding 3.1.3.1: no prefix).
  HeaderList user_properties;
};

// Plain headers follow the MQTT rule (a name made only of 'a'-'z' and '0'-'9' would read back
// as an attribute, so it is rejected); otherwise the checks are ValidateMessage's.
Result<MqttProperties> EncodeMqttUserProperties(const Message& message,
                                                IdRule id_rule = IdRule::kUuid);

// Decodes an MQTT 5 PUBLISH. `content_type` is the Content Type property, empty when absent. A
// content type starting with "application/cloudevents" selects structured mode as for Kafka.
// In binary mode a user property whose name is made only of 'a'-'z' and '0'-'9' is an attribute
// (longer than kMaxExtensionNameBytes: rejected); any other name is a plain header. A
// `datacontenttype` user property (the binding's own example sends one) must equal the Content
// Type property when both are present.
Result<Message> DecodeMqtt5(std::string_view topic, std::string_view content_type,
                            const HeaderList& user_properties, std::string_view payload);

// Decodes an MQTT 3.1.1 PUBLISH: always structured JSON (MQTT binding 3).
Result<Message> DecodeMqtt311(std::string_view topic, std::string_view payload);

// ---- Structured JSON (application/cloudevents+json) -------------------------------------------

// One compact JSON object: specversion, id, source, type, subject, time, traceparent, keyseq (a
// JSON string of decimal digits: it is an int64, beyond the CloudEvents Integer range), the
// extensions as top-level members, datacontenttype, then the data:
//   - `data` holding the payload itself when datacontenttype declares JSON (IsJsonContentType)
//     and the payload is exactly one strict JSON value with no surrounding whitespace and nesting
//     at most kMaxJsonDataDepth;
//   - otherwise `data_base64`, so the payload bytes always come back unchanged;
//   - neither when the payload is empty.
// Message::headers and Message::topic are not part of the event and are not written.
Result<std::string> EncodeStructuredJson(const Message& message, IdRule id_rule = IdRule::kUuid);

// Decodes one structured event (at most kMaxStructuredJsonBytes). Strict JSON: UTF-8, no
// duplicate member names at any depth, no lone surrogate escapes. Attribute members must be
// strings (null means absent, per the JSON format); keyseq may also be a JSON integer;
// extension values may be strings, booleans or integers within the CloudEvents Integer range
// (stored as their canonical string: 5 -> "5", true -> "true"). `data` with a JSON
// datacontenttype becomes the exact source text of the value (so `"data": "hi"` gives the
// payload `"hi"` with quotes); with another datacontenttype it must be a string, whose unescaped
// text is the payload. A `data` member without datacontenttype implies "application/json"
// (JSON format 3.1.2), which the decoded Message then carries explicitly. `data_base64` must be
// strict base64. Message::headers comes back empty.
Result<Message> DecodeStructuredJson(std::string_view topic, std::string_view json);

}  // namespace converge
