// libFuzzer target for the CloudEvents envelope decoders (see README.md in this folder).
//
// The input is used twice:
//   1. as a whole, as a structured JSON event (DecodeStructuredJson);
//   2. split at every 0xFF byte (never part of valid UTF-8) into fields:
//        content-type 0xFF name 0xFF value 0xFF name 0xFF value ... 0xFF payload
//      and fed to DecodeKafka (names as given, content-type as a header when not empty) and to
//      DecodeMqtt5 (names with a leading "ce_" removed, content-type as the Content Type
//      property), so one seed exercises both binary bindings.
// For every message a decoder accepts, the target checks that:
//   - encoding it again in the same binding succeeds and decodes to the same message;
//   - encoding it in any other binding either fails with kInvalidArgument or round-trips too
//     (headers aside for structured JSON, which does not carry them).
// Any violation aborts, which libFuzzer reports as a crash with the input saved.
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "converge/common/envelope.h"

namespace {

using converge::HeaderList;
using converge::IdRule;
using converge::Message;
using converge::Result;
using converge::Status;
using converge::StatusCode;

constexpr std::string_view kTopic = "fuzz/topic";

[[noreturn]] void Fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "envelope_fuzz: %s: %s\n", what, detail.c_str());
  std::abort();
}

enum class Headers { kCompare, kIgnore };

bool SameEvent(const Message& a, const Message& b, Headers headers) {
  return a.id == b.id && a.source == b.source && a.type == b.type && a.subject == b.subject &&
         a.time == b.time && a.datacontenttype == b.datacontenttype &&
         a.traceparent == b.traceparent && a.sequence == b.sequence &&
         a.extensions == b.extensions && (headers == Headers::kIgnore || a.headers == b.headers) &&
         a.topic == b.topic && a.payload == b.payload && a.expires_at == b.expires_at;
}

enum class Binding { kKafka, kMqtt5, kJson };

// Encodes `m` in `binding` and decodes the result. nullopt when the encoder refused.
std::optional<Result<Message>> RoundTrip(const Message& m, Binding binding) {
  switch (binding) {
    case Binding::kKafka: {
      auto h = converge::EncodeKafkaHeaders(m, IdRule::kAnyString);
      if (!h.ok()) {
        if (h.status().code() != StatusCode::kInvalidArgument)
          Fail("kafka encode", h.status().ToString());
        return std::nullopt;
      }
      auto key = converge::KafkaKey(m);
      return converge::DecodeKafka(
          m.topic, key ? std::optional<std::string_view>(*key) : std::nullopt, *h, m.payload);
    }
    case Binding::kMqtt5: {
      auto p = converge::EncodeMqttUserProperties(m, IdRule::kAnyString);
      if (!p.ok()) {
        if (p.status().code() != StatusCode::kInvalidArgument)
          Fail("mqtt encode", p.status().ToString());
        return std::nullopt;
      }
      return converge::DecodeMqtt5(m.topic, p->content_type, p->user_properties, m.payload);
    }
    case Binding::kJson: {
      auto j = converge::EncodeStructuredJson(m, IdRule::kAnyString);
      if (!j.ok()) {
        if (j.status().code() != StatusCode::kInvalidArgument)
          Fail("json encode", j.status().ToString());
        return std::nullopt;
      }
      if (j->size() > converge::kMaxStructuredJsonBytes) Fail("json encode", "output too large");
      return converge::DecodeStructuredJson(m.topic, *j);
    }
  }
  return std::nullopt;
}

bool StructuredLikeContentType(const std::string& ct) {
  std::string lower = ct.substr(0, 23);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return lower == "application/cloudevents";
}

void CheckDecoded(const Result<Message>& decoded, Binding origin) {
  if (!decoded.ok()) {
    if (decoded.status().code() != StatusCode::kInvalidArgument) {
      Fail("decoder returned a code other than kInvalidArgument", decoded.status().ToString());
    }
    if (decoded.status().message().empty()) Fail("decoder", "empty error message");
    return;
  }
  const Message& m = *decoded;
  for (Binding target : {Binding::kKafka, Binding::kMqtt5, Binding::kJson}) {
    const auto again = RoundTrip(m, target);
    // Structured JSON takes every decoded message. A binary binding takes it too, unless its
    // datacontenttype is a CloudEvents format (only possible from structured mode) or it has
    // plain headers that only the other binding can carry ("tenant" in Kafka, "ce_x" in MQTT).
    const bool must_encode =
        target == Binding::kJson ||
        (!StructuredLikeContentType(m.datacontenttype) && (target == origin || m.headers.empty()));
    if (!again) {
      if (must_encode) {
        Fail("re-encoding a decoded message failed", std::to_string(static_cast<int>(origin)) +
                                                         " -> " +
                                                         std::to_string(static_cast<int>(target)));
      }
      continue;
    }
    if (!again->ok()) Fail("decoding our own encoding failed", again->status().ToString());
    const Headers headers = target == Binding::kJson ? Headers::kIgnore : Headers::kCompare;
    if (!SameEvent(m, **again, headers)) {
      Fail("round trip changed the message", std::to_string(static_cast<int>(origin)) + " -> " +
                                                 std::to_string(static_cast<int>(target)));
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  CheckDecoded(converge::DecodeStructuredJson(kTopic, input), Binding::kJson);

  std::vector<std::string_view> fields;
  size_t start = 0;
  for (size_t i = 0; i <= input.size(); ++i) {
    if (i == input.size() || input[i] == '\xFF') {
      fields.push_back(input.substr(start, i - start));
      start = i + 1;
    }
  }
  if (fields.size() < 2) return 0;
  const std::string_view content_type = fields.front();
  const std::string_view payload = fields.back();

  HeaderList kafka;
  HeaderList mqtt;
  for (size_t i = 1; i + 2 < fields.size(); i += 2) {
    const std::string name(fields[i]);
    const std::string value(fields[i + 1]);
    kafka.emplace_back(name, value);
    mqtt.emplace_back(name.rfind("ce_", 0) == 0 ? name.substr(3) : name, value);
  }
  if (!content_type.empty()) kafka.emplace_back("content-type", std::string(content_type));

  CheckDecoded(converge::DecodeKafka(kTopic, std::nullopt, kafka, payload), Binding::kKafka);
  CheckDecoded(converge::DecodeMqtt5(kTopic, content_type, mqtt, payload), Binding::kMqtt5);
  return 0;
}
