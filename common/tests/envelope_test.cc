#include "converge/common/envelope.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "converge/common/time_format.h"
#include "converge/common/uuid.h"

namespace converge {
namespace {

using namespace std::chrono;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::Pair;
using ::testing::StartsWith;

constexpr char kId[] = "0190a5c6-1f7a-7b3c-8d4e-5f6a7b8c9d0e";
constexpr char kTraceparent[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

Message FullMessage() {
  Message m;
  m.id = kId;
  m.source = "/orders";
  m.type = "com.example.order.placed";
  m.subject = "order-42";
  m.time = sys_days{2024y / May / 1} + 12h + 34min + 56s + 789ms;
  m.datacontenttype = "application/json";
  m.traceparent = kTraceparent;
  m.sequence = 7;
  m.extensions = {{"tenant", "acme"}, {"partitionkey", "p1"}};
  m.headers = {{"x-request-id", "r-1"}, {"Tenant-Region", "eu"}};
  m.topic = "orders";
  m.payload = R"({"order":42,"items":["a","b"]})";
  return m;
}

Message MinimalMessage() {
  Message m;
  m.id = kId;
  m.source = "/orders";
  m.type = "com.example.order.placed";
  m.datacontenttype.clear();
  m.topic = "orders";
  return m;
}

enum class Headers { kCompare, kIgnore };

void ExpectSameEvent(const Message& a, const Message& b, Headers headers = Headers::kCompare) {
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.source, b.source);
  EXPECT_EQ(a.type, b.type);
  EXPECT_EQ(a.subject, b.subject);
  EXPECT_EQ(a.time, b.time) << FormatRfc3339(a.time, SubsecondDigits::kLossless) << " vs "
                            << FormatRfc3339(b.time, SubsecondDigits::kLossless);
  EXPECT_EQ(a.datacontenttype, b.datacontenttype);
  EXPECT_EQ(a.traceparent, b.traceparent);
  EXPECT_EQ(a.sequence, b.sequence);
  EXPECT_EQ(a.extensions, b.extensions);
  if (headers == Headers::kCompare) {
    EXPECT_EQ(a.headers, b.headers);
  }
  EXPECT_EQ(a.topic, b.topic);
  EXPECT_EQ(a.payload, b.payload);
}

// Asserts a kInvalidArgument whose message contains `text`.
template <typename T>
void ExpectRejected(const Result<T>& r, const std::string& text) {
  ASSERT_FALSE(r.ok()) << "expected a rejection mentioning: " << text;
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr(text));
}
void ExpectRejected(const Status& s, const std::string& text) {
  ASSERT_FALSE(s.ok()) << "expected a rejection mentioning: " << text;
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr(text));
}

// Minimal valid Kafka binary headers for tests that change one thing.
HeaderList KafkaBase() {
  return {{"ce_specversion", "1.0"},
          {"ce_id", kId},
          {"ce_source", "/orders"},
          {"ce_type", "com.example.order.placed"}};
}

HeaderList MqttBase() {
  return {{"specversion", "1.0"},
          {"id", kId},
          {"source", "/orders"},
          {"type", "com.example.order.placed"}};
}

std::string JsonWith(const std::string& extra_members) {
  return std::string(R"({"specversion":"1.0","id":")") + kId +
         R"(","source":"/orders","type":"com.example.order.placed")" + extra_members + "}";
}

HeaderList With(HeaderList h, std::string name, std::string value) {
  h.emplace_back(std::move(name), std::move(value));
  return h;
}

HeaderList Without(HeaderList h, std::string_view name) {
  std::erase_if(h, [&](const auto& p) { return p.first == name; });
  return h;
}

HeaderList Replace(HeaderList h, std::string_view name, std::string value) {
  for (auto& p : h)
    if (p.first == name) p.second = std::move(value);
  return h;
}

// ---- round trips ------------------------------------------------------------------------------

TEST(EnvelopeTest, FullMessageIsValid) { EXPECT_TRUE(ValidateMessage(FullMessage()).ok()); }

TEST(EnvelopeTest, KafkaHeadersAreTheBindingsBinaryMode) {
  auto h = EncodeKafkaHeaders(FullMessage());
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_THAT(
      *h,
      ElementsAre(Pair("ce_specversion", "1.0"), Pair("ce_id", kId), Pair("ce_source", "/orders"),
                  Pair("ce_type", "com.example.order.placed"), Pair("ce_subject", "order-42"),
                  Pair("ce_time", "2024-05-01T12:34:56.789Z"), Pair("ce_traceparent", kTraceparent),
                  Pair("ce_keyseq", "7"), Pair("ce_partitionkey", "p1"), Pair("ce_tenant", "acme"),
                  Pair("content-type", "application/json"), Pair("Tenant-Region", "eu"),
                  Pair("x-request-id", "r-1")));
  EXPECT_EQ(KafkaKey(FullMessage()), "order-42");
}

TEST(EnvelopeTest, KafkaRoundTrip) {
  const Message m = FullMessage();
  auto h = EncodeKafkaHeaders(m);
  ASSERT_TRUE(h.ok()) << h.status();
  auto back = DecodeKafka(m.topic, KafkaKey(m), *h, m.payload);
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSameEvent(m, *back);
}

TEST(EnvelopeTest, KafkaLeavesOutAbsentAttributes) {
  const Message m = MinimalMessage();
  auto h = EncodeKafkaHeaders(m);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_THAT(
      *h, ElementsAre(Pair("ce_specversion", "1.0"), Pair("ce_id", kId),
                      Pair("ce_source", "/orders"), Pair("ce_type", "com.example.order.placed")));
  EXPECT_EQ(KafkaKey(m), std::nullopt);
  auto back = DecodeKafka(m.topic, std::nullopt, *h, "");
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSameEvent(m, *back);
  EXPECT_EQ(back->time, system_clock::time_point{});
  EXPECT_EQ(back->sequence, 0);
}

TEST(EnvelopeTest, MqttUserPropertiesAreUnprefixedAndContentTypeIsAProperty) {
  auto p = EncodeMqttUserProperties(FullMessage());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->content_type, "application/json");
  EXPECT_THAT(
      p->user_properties,
      ElementsAre(Pair("specversion", "1.0"), Pair("id", kId), Pair("source", "/orders"),
                  Pair("type", "com.example.order.placed"), Pair("subject", "order-42"),
                  Pair("time", "2024-05-01T12:34:56.789Z"), Pair("traceparent", kTraceparent),
                  Pair("keyseq", "7"), Pair("partitionkey", "p1"), Pair("tenant", "acme"),
                  Pair("Tenant-Region", "eu"), Pair("x-request-id", "r-1")));
}

TEST(EnvelopeTest, MqttRoundTrip) {
  for (const Message& m : {FullMessage(), MinimalMessage()}) {
    auto p = EncodeMqttUserProperties(m);
    ASSERT_TRUE(p.ok()) << p.status();
    auto back = DecodeMqtt5(m.topic, p->content_type, p->user_properties, m.payload);
    ASSERT_TRUE(back.ok()) << back.status();
    ExpectSameEvent(m, *back);
  }
}

TEST(EnvelopeTest, StructuredJsonEmbedsJsonData) {
  auto j = EncodeStructuredJson(FullMessage());
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ(*j, std::string(R"({"specversion":"1.0","id":")") + kId +
                    R"(","source":"/orders","type":"com.example.order.placed",)"
                    R"("subject":"order-42","time":"2024-05-01T12:34:56.789Z",)"
                    R"("traceparent":")" +
                    kTraceparent +
                    R"(","keyseq":"7","partitionkey":"p1","tenant":"acme",)"
                    R"("datacontenttype":"application/json",)"
                    R"("data":{"order":42,"items":["a","b"]}})");
  auto back = DecodeStructuredJson("orders", *j);
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSameEvent(FullMessage(), *back, Headers::kIgnore);
  EXPECT_TRUE(back->headers.empty());  // headers are transport metadata, not part of the event
}

TEST(EnvelopeTest, StructuredJsonUsesBase64WhenDataIsNotEmbeddableJson) {
  struct Case {
    std::string content_type;
    std::string payload;
  };
  for (const Case& c : {
           Case{"application/octet-stream", std::string("\x00\x01\xFF\xFE", 4)},
           Case{"application/xml", "<much wow=\"xml\"/>"}, Case{"application/json", "{not json"},
           Case{"application/json", " {\"a\":1}"},  // outer whitespace would be lost
           Case{"application/json", "{\"a\":1}\n"},
           Case{"application/json", "{\"a\":1,\"a\":2}"},  // duplicate names
           Case{"", "{\"a\":1}"},  // no content type: data would imply application/json
           Case{"application/json", std::string(70, '[') + std::string(70, ']')},  // too deep
       }) {
    Message m = FullMessage();
    m.datacontenttype = c.content_type;
    m.payload = c.payload;
    auto j = EncodeStructuredJson(m);
    ASSERT_TRUE(j.ok()) << j.status();
    EXPECT_THAT(*j, HasSubstr("\"data_base64\":\"")) << c.payload;
    EXPECT_THAT(*j, Not(HasSubstr("\"data\":"))) << c.payload;
    auto back = DecodeStructuredJson(m.topic, *j);
    ASSERT_TRUE(back.ok()) << back.status();
    ExpectSameEvent(m, *back, Headers::kIgnore);
  }
}

TEST(EnvelopeTest, StructuredJsonEmbedsEveryKindOfJsonValue) {
  for (const char* payload : {"null", "true", "0", "-1.5e+3", "\"text \\u00e9\"", "[]", "{}",
                              "[1,{\"a\":[null]}]", "{\"nested\" : { \"x\" : 1 } }"}) {
    Message m = FullMessage();
    m.datacontenttype = "application/cloudevents-like+json; charset=utf-8";
    m.payload = payload;
    auto j = EncodeStructuredJson(m);
    ASSERT_TRUE(j.ok()) << j.status();
    EXPECT_THAT(*j, HasSubstr(std::string("\"data\":") + payload));
    auto back = DecodeStructuredJson(m.topic, *j);
    ASSERT_TRUE(back.ok()) << back.status();
    ExpectSameEvent(m, *back, Headers::kIgnore);
  }
}

TEST(EnvelopeTest, StructuredJsonDoesNotEmbedJsonWithLoneSurrogates) {
  Message m = FullMessage();
  m.payload = R"(["\udc00"])";
  auto j = EncodeStructuredJson(m);
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_THAT(*j, HasSubstr("\"data_base64\":"));
  auto back = DecodeStructuredJson(m.topic, *j);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->payload, m.payload);
}

TEST(EnvelopeTest, StructuredJsonWithoutPayloadHasNoData) {
  Message m = MinimalMessage();
  auto j = EncodeStructuredJson(m);
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_THAT(*j, Not(HasSubstr("data")));
  auto back = DecodeStructuredJson(m.topic, *j);
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSameEvent(m, *back);
}

TEST(EnvelopeTest, TimeKeepsSubMillisecondPrecisionInEveryBinding) {
  Message m = FullMessage();
  m.time += 123us;  // PostgreSQL timestamps have microseconds
  auto h = EncodeKafkaHeaders(m);
  ASSERT_TRUE(h.ok());
  EXPECT_THAT(*h, testing::Contains(Pair("ce_time", "2024-05-01T12:34:56.789123Z")));
  auto k = DecodeKafka(m.topic, KafkaKey(m), *h, m.payload);
  ASSERT_TRUE(k.ok()) << k.status();
  EXPECT_EQ(k->time, m.time);
  m.time += 4ns;
  auto j = EncodeStructuredJson(m);
  ASSERT_TRUE(j.ok());
  auto back = DecodeStructuredJson(m.topic, *j);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->time, m.time);
}

TEST(EnvelopeTest, CrossBindingKafkaToJsonToMqtt) {
  const Message m = FullMessage();
  auto h = EncodeKafkaHeaders(m);
  ASSERT_TRUE(h.ok());
  auto from_kafka = DecodeKafka(m.topic, KafkaKey(m), *h, m.payload);
  ASSERT_TRUE(from_kafka.ok());
  auto j = EncodeStructuredJson(*from_kafka);
  ASSERT_TRUE(j.ok());
  auto from_json = DecodeStructuredJson(m.topic, *j);
  ASSERT_TRUE(from_json.ok());
  auto p = EncodeMqttUserProperties(*from_json);
  ASSERT_TRUE(p.ok());
  auto from_mqtt = DecodeMqtt5(m.topic, p->content_type, p->user_properties, m.payload);
  ASSERT_TRUE(from_mqtt.ok());
  ExpectSameEvent(m, *from_mqtt, Headers::kIgnore);
}

// ---- the CloudEvents specification's own examples ---------------------------------------------

// JSON format 3.2, first example. The spec writes "... base64 encoded string ..." as the data;
// a real base64 value stands in for it.
TEST(EnvelopeSpecExamplesTest, JsonFormatBinaryData) {
  const char* text = R"({
    "specversion" : "1.0",
    "type" : "com.example.someevent",
    "source" : "/mycontext",
    "id" : "A234-1234-1234",
    "time" : "2018-04-05T17:31:00Z",
    "comexampleextension1" : "value",
    "comexampleothervalue" : 5,
    "datacontenttype" : "application/vnd.apache.thrift.binary",
    "data_base64" : "AAEC/w=="
})";
  auto m = DecodeStructuredJson("mytopic", text);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->id, "A234-1234-1234");  // decoders accept non-UUID ids...
  EXPECT_EQ(m->type, "com.example.someevent");
  EXPECT_EQ(m->source, "/mycontext");
  EXPECT_EQ(FormatRfc3339(m->time), "2018-04-05T17:31:00.000Z");
  EXPECT_EQ(m->datacontenttype, "application/vnd.apache.thrift.binary");
  EXPECT_EQ(m->payload, std::string("\x00\x01\x02\xFF", 4));
  EXPECT_THAT(m->extensions, ElementsAre(Pair("comexampleextension1", "value"),
                                         Pair("comexampleothervalue", "5")));
  // ... and ValidateMessage (Converge's own rule) does not, unless asked to.
  ExpectRejected(ValidateMessage(*m), "id must be a UUID");
  EXPECT_TRUE(ValidateMessage(*m, IdRule::kAnyString).ok());

  // The spec re-encodes it in HTTP binary mode; Kafka's mode is the same with "ce_".
  auto h = EncodeKafkaHeaders(*m, IdRule::kAnyString);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_THAT(
      *h,
      ElementsAre(Pair("ce_specversion", "1.0"), Pair("ce_id", "A234-1234-1234"),
                  Pair("ce_source", "/mycontext"), Pair("ce_type", "com.example.someevent"),
                  Pair("ce_time", "2018-04-05T17:31:00.000Z"),
                  Pair("ce_comexampleextension1", "value"), Pair("ce_comexampleothervalue", "5"),
                  Pair("content-type", "application/vnd.apache.thrift.binary")));
  EXPECT_FALSE(EncodeKafkaHeaders(*m).ok());  // the default rule wants a UUID
}

TEST(EnvelopeSpecExamplesTest, JsonFormatXmlStringData) {
  const char* text = R"({
    "specversion" : "1.0",
    "type" : "com.example.someevent",
    "source" : "/mycontext",
    "id" : "B234-1234-1234",
    "time" : "2018-04-05T17:31:00Z",
    "comexampleextension1" : "value",
    "comexampleothervalue" : 5,
    "unsetextension": null,
    "datacontenttype" : "application/xml",
    "data" : "<much wow=\"xml\"/>"
})";
  auto m = DecodeStructuredJson("mytopic", text);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->payload, "<much wow=\"xml\"/>");  // the spec's HTTP binary body
  EXPECT_EQ(m->datacontenttype, "application/xml");
  EXPECT_EQ(m->extensions.count("unsetextension"), 0u);  // null means unset
}

TEST(EnvelopeSpecExamplesTest, JsonFormatJsonObjectData) {
  const char* text = R"({
    "specversion" : "1.0",
    "type" : "com.example.someevent",
    "source" : "/mycontext",
    "subject": null,
    "id" : "C234-1234-1234",
    "time" : "2018-04-05T17:31:00Z",
    "comexampleextension1" : "value",
    "comexampleothervalue" : 5,
    "datacontenttype" : "application/json",
    "data" : {
        "appinfoA" : "abc",
        "appinfoB" : 123,
        "appinfoC" : true
    }
})";
  auto m = DecodeStructuredJson("mytopic", text);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->subject, "");
  EXPECT_EQ(m->payload, R"({
        "appinfoA" : "abc",
        "appinfoB" : 123,
        "appinfoC" : true
    })");
}

TEST(EnvelopeSpecExamplesTest, JsonFormatStringDataWithoutContentType) {
  const char* text = R"({
    "specversion" : "1.0",
    "type" : "com.example.someevent",
    "source" : "/mycontext",
    "subject": null,
    "id" : "D234-1234-1234",
    "time" : "2018-04-05T17:31:00Z",
    "comexampleextension1" : "value",
    "comexampleothervalue" : 5,
    "data" : "I'm just a string"
})";
  auto m = DecodeStructuredJson("mytopic", text);
  ASSERT_TRUE(m.ok()) << m.status();
  // "the Content Type is explicitly set to the application/json value that was implicit ...
  // the content is quoted to indicate that it is a literal JSON string."
  EXPECT_EQ(m->datacontenttype, "application/json");
  EXPECT_EQ(m->payload, "\"I'm just a string\"");
  auto h = EncodeKafkaHeaders(*m, IdRule::kAnyString);
  ASSERT_TRUE(h.ok());
  EXPECT_THAT(*h, testing::Contains(Pair("content-type", "application/json")));
}

// Kafka binding 3.2.5. The spec prints header values in quotes for display; on the wire the value
// of ce_specversion is the three bytes 1.0 (see QuotedSpecversionIsRejected).
TEST(EnvelopeSpecExamplesTest, KafkaBinaryMode) {
  const HeaderList headers = {{"ce_specversion", "1.0"},
                              {"ce_type", "com.example.someevent"},
                              {"ce_source", "/mycontext/subcontext"},
                              {"ce_id", "1234-1234-1234"},
                              {"ce_time", "2018-04-05T03:56:24Z"},
                              {"content-type", "application/avro"}};
  auto m = DecodeKafka("mytopic", "mykey", headers, std::string("\x02\x06\x66oo", 5));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->id, "1234-1234-1234");
  EXPECT_EQ(m->source, "/mycontext/subcontext");
  EXPECT_EQ(m->datacontenttype, "application/avro");
  EXPECT_EQ(m->subject, "");  // the key is not an attribute (binding 3.1)
  EXPECT_EQ(m->topic, "mytopic");
  EXPECT_EQ(FormatRfc3339(m->time), "2018-04-05T03:56:24.000Z");
}

// Kafka binding 3.3.4. The spec's value holds "... application data encoded in XML ..." inside
// braces; a JSON string of XML stands in for it (datacontenttype is not JSON).
TEST(EnvelopeSpecExamplesTest, KafkaStructuredMode) {
  const HeaderList headers = {{"content-type", "application/cloudevents+json; charset=UTF-8"}};
  const char* value = R"({
    "specversion" : "1.0",
    "type" : "com.example.someevent",
    "source" : "/mycontext/subcontext",
    "id" : "1234-1234-1234",
    "time" : "2018-04-05T03:56:24Z",
    "datacontenttype" : "application/xml",
    "data" : "<a>xml</a>"
})";
  auto m = DecodeKafka("mytopic", "mykey", headers, value);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->datacontenttype, "application/xml");
  EXPECT_EQ(m->payload, "<a>xml</a>");
  EXPECT_TRUE(m->headers.empty());
}

// MQTT binding 3.1.4: note the datacontenttype user property next to the Content Type.
TEST(EnvelopeSpecExamplesTest, MqttBinaryMode) {
  const HeaderList props = {{"specversion", "1.0"},
                            {"type", "com.example.someevent"},
                            {"time", "2018-04-05T03:56:24Z"},
                            {"id", "1234-1234-1234"},
                            {"source", "/mycontext/subcontext"},
                            {"datacontenttype", "application/json; charset=utf-8"}};
  auto m = DecodeMqtt5("mytopic", "application/json; charset=utf-8", props, "{}");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->datacontenttype, "application/json; charset=utf-8");
  EXPECT_TRUE(m->extensions.empty());
  // Re-encoded, the content type travels only in the property (binding 3.1.1).
  auto p = EncodeMqttUserProperties(*m, IdRule::kAnyString);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->content_type, "application/json; charset=utf-8");
  for (const auto& [name, value] : p->user_properties) EXPECT_NE(name, "datacontenttype");
}

// MQTT binding 3.2.4, as printed: `"time" : 2018-04-05T03:56;24Z` and `"id" : 1234-1234-1234` are
// not JSON, so a strict decoder must refuse it; with the values quoted it decodes.
TEST(EnvelopeSpecExamplesTest, MqttStructuredModeAsPrintedIsNotJson) {
  const char* as_printed = R"({
    "specversion" : "1.0",
    "type" : "com.example.someevent",
	"time" : 2018-04-05T03:56;24Z,
	"id" : 1234-1234-1234,
	"source" : "/mycontext/subcontext",
	"datacontenttype" : "application/json; charset=utf-8",
    "data" : {}
})";
  ExpectRejected(DecodeMqtt311("mytopic", as_printed), "invalid JSON");
  ExpectRejected(
      DecodeMqtt5("mytopic", "application/cloudevents+json; charset=utf-8", {}, as_printed),
      "invalid JSON");

  const char* quoted = R"({
    "specversion" : "1.0",
    "type" : "com.example.someevent",
	"time" : "2018-04-05T03:56:24Z",
	"id" : "1234-1234-1234",
	"source" : "/mycontext/subcontext",
	"datacontenttype" : "application/json; charset=utf-8",
    "data" : {"x": 1}
})";
  auto v311 = DecodeMqtt311("mytopic", quoted);
  ASSERT_TRUE(v311.ok()) << v311.status();
  EXPECT_EQ(v311->payload, R"({"x": 1})");
  auto v5 = DecodeMqtt5("mytopic", "application/cloudevents+json; charset=utf-8",
                        {{"type", "ignored.in.structured.mode"}, {"x-trace", "t1"}}, quoted);
  ASSERT_TRUE(v5.ok()) << v5.status();
  EXPECT_EQ(v5->type, "com.example.someevent");
  EXPECT_THAT(v5->headers, ElementsAre(Pair("x-trace", "t1")));
}

// ---- rejections -------------------------------------------------------------------------------

TEST(EnvelopeRejectTest, MissingRequiredAttributes) {
  for (const std::string name : {"specversion", "id", "source", "type"}) {
    SCOPED_TRACE(name);
    ExpectRejected(DecodeKafka("t", std::nullopt, Without(KafkaBase(), "ce_" + name), ""),
                   "ce_" + name + " is missing");
    ExpectRejected(DecodeMqtt5("t", "", Without(MqttBase(), name), ""), name + " is missing");
    std::string json = JsonWith("");
    const std::string member = "\"" + name + "\":";
    const size_t at = json.find(member);
    ASSERT_NE(at, std::string::npos);
    // null means unset, so it counts as missing too
    json.replace(at + member.size(),
                 json.find_first_of(",}", at + member.size() + 1) - (at + member.size()), "null");
    ExpectRejected(DecodeStructuredJson("t", json), name + " is missing");
  }
  ExpectRejected(DecodeKafka("t", std::nullopt, Replace(KafkaBase(), "ce_type", ""), ""),
                 "ce_type is empty");
  ExpectRejected(DecodeKafka("", std::nullopt, KafkaBase(), ""), "topic is missing");
}

TEST(EnvelopeRejectTest, SpecversionMustBeExactly1Point0) {
  for (const char* v : {"0.3", "1", "1.0 ", " 1.0", "1.0.0", "1.1", "\"1.0\""}) {
    ExpectRejected(DecodeKafka("t", std::nullopt, Replace(KafkaBase(), "ce_specversion", v), ""),
                   "ce_specversion must be \"1.0\"");
    ExpectRejected(DecodeMqtt5("t", "", Replace(MqttBase(), "specversion", v), ""),
                   "specversion must be \"1.0\"");
  }
  ExpectRejected(DecodeStructuredJson("t", R"({"specversion":1.0,"id":"a","source":"/",)"
                                           R"("type":"t"})"),
                 "specversion must be a JSON string");
}

TEST(EnvelopeRejectTest, QuotedSpecversionIsRejected) {
  ExpectRejected(
      DecodeKafka("t", std::nullopt, Replace(KafkaBase(), "ce_specversion", "\"1.0\""), ""),
      R"(ce_specversion must be "1.0", got "\"1.0\"")");
}

TEST(EnvelopeRejectTest, InvalidUtf8) {
  ExpectRejected(DecodeKafka("t", std::nullopt, Replace(KafkaBase(), "ce_type", "a\xC0\xAF"), ""),
                 "ce_type is not valid UTF-8 at byte 1");
  ExpectRejected(DecodeMqtt5("t", "", With(MqttBase(), "subject", "\xED\xA0\x80"), ""),
                 "subject is not valid UTF-8");
  ExpectRejected(DecodeKafka("t", std::nullopt, With(KafkaBase(), "x-h", "\xFF"), ""),
                 "header \"x-h\" value is not valid UTF-8");
  ExpectRejected(DecodeKafka("t", std::nullopt, With(KafkaBase(), "x-\xF4\x90\x80\x80", "v"), ""),
                 "name is not valid UTF-8");
  ExpectRejected(DecodeStructuredJson("t", JsonWith(",\"subject\":\"\xE2\x82\"")),
                 "JSON is not valid UTF-8");
  ExpectRejected(DecodeKafka("t\xC3", std::nullopt, KafkaBase(), ""), "topic is not valid UTF-8");
  // Payload bytes are data, not text.
  EXPECT_TRUE(DecodeKafka("t", std::nullopt, KafkaBase(), "\xFF\xFE").ok());
}

TEST(EnvelopeRejectTest, NulAndControlCharacters) {
  ExpectRejected(
      DecodeKafka("t", std::nullopt, Replace(KafkaBase(), "ce_id", std::string("a\0b", 3)), ""),
      "ce_id contains U+0000 at byte 1");
  ExpectRejected(DecodeMqtt5("t", "", Replace(MqttBase(), "source", "/a\nb"), ""),
                 "source contains U+000A");
  ExpectRejected(DecodeStructuredJson("t", JsonWith(R"(,"subject":"x\u0000y")")),
                 "subject contains U+0000");
  ExpectRejected(DecodeStructuredJson("t", JsonWith(R"(,"tenant":"\u0085")")),
                 "tenant contains U+0085");
  ExpectRejected(DecodeKafka("t", std::nullopt, With(KafkaBase(), "x-h", "a\tb"), ""),
                 "header \"x-h\" value contains U+0009");
  Message m = FullMessage();
  m.type = std::string("a\0", 2);
  ExpectRejected(ValidateMessage(m), "type contains U+0000");
}

TEST(EnvelopeRejectTest, Oversize) {
  const std::string big(1025, 'a');
  ExpectRejected(
      DecodeKafka("t", std::nullopt, Replace(KafkaBase(), "ce_type", std::string(257, 't')), ""),
      "ce_type is too long: 257 bytes (limit 256)");
  ExpectRejected(DecodeKafka("t", std::nullopt, Replace(KafkaBase(), "ce_source", "/" + big), ""),
                 "ce_source is too long: 1026 bytes (limit 1024)");
  ExpectRejected(DecodeKafka("t", std::nullopt, Replace(KafkaBase(), "ce_id", big), ""),
                 "ce_id is too long");
  ExpectRejected(DecodeKafka("t", std::nullopt, With(KafkaBase(), "ce_subject", big), ""),
                 "ce_subject is too long");
  ExpectRejected(DecodeKafka("t", std::nullopt, With(KafkaBase(), "ce_ext", big), ""),
                 "ce_ext is too long");
  ExpectRejected(
      DecodeKafka("t", std::nullopt, With(KafkaBase(), "x-" + std::string(127, 'h'), "v"), ""),
      "name is too long: 129 bytes (limit 128)");
  ExpectRejected(DecodeKafka("t", std::nullopt, With(KafkaBase(), "x-h", big), ""),
                 "header \"x-h\" value is too long");
  ExpectRejected(DecodeKafka(std::string(250, 't'), std::nullopt, KafkaBase(), ""),
                 "topic is too long: 250 bytes (limit 249)");
  EXPECT_TRUE(DecodeKafka(std::string(249, 't'), std::nullopt, KafkaBase(), "").ok());

  const std::string payload(MessageLimits::kMaxPayloadBytes + 1, 'p');
  ExpectRejected(DecodeKafka("t", std::nullopt, KafkaBase(), payload),
                 "record value is too large: 1000001 bytes (limit 1000000)");
  ExpectRejected(DecodeMqtt5("t", "", MqttBase(), payload), "payload is too large");
  EXPECT_TRUE(DecodeKafka("t", std::nullopt, KafkaBase(), payload.substr(1)).ok());
  ExpectRejected(DecodeStructuredJson("t", JsonWith(",\"datacontenttype\":\"text/plain\","
                                                    "\"data\":\"" +
                                                    payload + "\"")),
                 "data is too large");
  ExpectRejected(DecodeStructuredJson("t", std::string(kMaxStructuredJsonBytes + 1, ' ')),
                 "structured event is too large");
  Message m = FullMessage();
  m.payload = payload;
  ExpectRejected(EncodeKafkaHeaders(m), "payload is too large");
  ExpectRejected(EncodeStructuredJson(m), "payload is too large");
}

TEST(EnvelopeRejectTest, BadExtensionNames) {
  ExpectRejected(DecodeKafka("t", std::nullopt, With(KafkaBase(), "ce_Foo", "v"), ""),
                 "header \"ce_Foo\" is not a valid CloudEvents attribute name");
  ExpectRejected(DecodeKafka("t", std::nullopt, With(KafkaBase(), "ce_foo_bar", "v"), ""),
                 "\"ce_foo_bar\" is not a valid CloudEvents attribute name");
  ExpectRejected(DecodeKafka("t", std::nullopt, With(KafkaBase(), "ce_", "v"), ""),
                 "\"ce_\" is not a valid CloudEvents attribute name");
  ExpectRejected(
      DecodeKafka("t", std::nullopt, With(KafkaBase(), "ce_" + std::string(21, 'x'), "v"), ""),
      "longer than 20 characters");
  EXPECT_TRUE(
      DecodeKafka("t", std::nullopt, With(KafkaBase(), "ce_" + std::string(20, 'x'), "v"), "")
          .ok());
  ExpectRejected(DecodeKafka("t", std::nullopt, With(KafkaBase(), "ce_data", "v"), ""),
                 "\"data\" is reserved");
  ExpectRejected(DecodeMqtt5("t", "", With(MqttBase(), std::string(21, 'x'), "v"), ""),
                 "user property \"xxxxxxxxxxxxxxxxxxxxx\" has an attribute name longer than 20");
  ExpectRejected(DecodeStructuredJson("t", JsonWith(R"(,"Foo":"v")")),
                 "member \"Foo\" is not a valid CloudEvents attribute name");
  ExpectRejected(DecodeStructuredJson("t", JsonWith(R"(,"data_x":"v")")),
                 "member \"data_x\" is not a valid");

  Message m = FullMessage();
  m.extensions["Upper"] = "v";
  ExpectRejected(ValidateMessage(m), "extension \"Upper\" has an invalid name");
  for (const char* reserved : {"keyseq", "time", "data", "datacontenttype", "specversion"}) {
    Message r = FullMessage();
    r.extensions[reserved] = "v";
    ExpectRejected(ValidateMessage(r), "has an invalid name");
    EXPECT_FALSE(IsValidExtensionName(reserved));
  }
  EXPECT_TRUE(IsValidExtensionName("dataschema"));
  EXPECT_TRUE(IsValidExtensionName("comexampleextension1"));
  EXPECT_FALSE(IsValidExtensionName(""));
}

TEST(EnvelopeRejectTest, BadTime) {
  for (const char* t :
       {"2018-04-05 03:56:24Z", "2018-04-05T03:56:24", "2018-02-30T00:00:00Z",
        "2018-04-05T03:56;24Z", "yesterday", "2018-04-05T24:00:00Z", "1522949460"}) {
    ExpectRejected(DecodeKafka("t", std::nullopt, With(KafkaBase(), "ce_time", t), ""),
                   "ce_time is not RFC 3339: ");
  }
  ExpectRejected(DecodeKafka("t", std::nullopt, With(KafkaBase(), "ce_time", ""), ""),
                 "ce_time is not RFC 3339");
  ExpectRejected(DecodeMqtt5("t", "", With(MqttBase(), "time", "2018-04-05T03:56:24+0200"), ""),
                 "time is not RFC 3339: expected ':' in the offset");
  ExpectRejected(DecodeStructuredJson("t", JsonWith(R"(,"time":1522949460)")),
                 "time must be a JSON string");
  // Offsets are converted to UTC.
  auto m =
      DecodeKafka("t", std::nullopt, With(KafkaBase(), "ce_time", "2018-04-05T05:56:24+02:00"), "");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(FormatRfc3339(m->time), "2018-04-05T03:56:24.000Z");
}

TEST(EnvelopeRejectTest, BadKeyseq) {
  for (const char* k : {"0", "-1", "01", "+1", "1.0", "abc", " 1", "9223372036854775808",
                        "99999999999999999999", ""}) {
    ExpectRejected(DecodeKafka("t", std::nullopt, With(KafkaBase(), "ce_keyseq", k), ""),
                   "ce_keyseq must be a positive decimal int64");
  }
  auto max =
      DecodeKafka("t", std::nullopt, With(KafkaBase(), "ce_keyseq", "9223372036854775807"), "");
  ASSERT_TRUE(max.ok()) << max.status();
  EXPECT_EQ(max->sequence, INT64_MAX);
  // JSON: a string or an integer number.
  auto num = DecodeStructuredJson("t", JsonWith(R"(,"keyseq":42)"));
  ASSERT_TRUE(num.ok()) << num.status();
  EXPECT_EQ(num->sequence, 42);
  ExpectRejected(DecodeStructuredJson("t", JsonWith(R"(,"keyseq":4.2)")),
                 "keyseq must be a positive decimal int64, got \"4.2\"");
  ExpectRejected(DecodeStructuredJson("t", JsonWith(R"(,"keyseq":true)")),
                 "keyseq must be a JSON string or integer");
  Message m = FullMessage();
  m.sequence = -1;
  ExpectRejected(ValidateMessage(m), "sequence (keyseq) must not be negative");
}

TEST(EnvelopeRejectTest, TooManyHeaders) {
  HeaderList h = KafkaBase();
  for (int i = 0; i < 64; ++i) h.emplace_back("x-h" + std::to_string(i), "v");
  EXPECT_TRUE(DecodeKafka("t", std::nullopt, h, "").ok());
  ExpectRejected(DecodeKafka("t", std::nullopt, With(h, "x-one-more", "v"), ""),
                 "too many headers and extensions: 65 (limit 64)");
  ExpectRejected(DecodeKafka("t", std::nullopt, With(h, "ce_ext", "v"), ""),
                 "too many headers and extensions: 65 (limit 64)");
  for (int i = 64; i < 80; ++i) h.emplace_back("x-h" + std::to_string(i), "v");
  ExpectRejected(DecodeKafka("t", std::nullopt, h, ""), "too many headers: 84 (limit 74)");

  HeaderList p = MqttBase();
  for (int i = 0; i < 65; ++i) p.emplace_back("e" + std::to_string(i), "v");
  ExpectRejected(DecodeMqtt5("t", "", p, ""), "too many headers and extensions: 65");

  std::string json;
  for (int i = 0; i < 65; ++i) json += ",\"e" + std::to_string(i) + "\":\"v\"";
  ExpectRejected(DecodeStructuredJson("t", JsonWith(json)), "too many headers and extensions");

  Message m = FullMessage();
  m.extensions.clear();
  m.headers.clear();
  for (int i = 0; i < 40; ++i) m.extensions["e" + std::to_string(i)] = "v";
  for (int i = 0; i < 25; ++i) m.headers["x-" + std::to_string(i)] = "v";
  ExpectRejected(ValidateMessage(m), "too many headers and extensions: 65 (limit 64)");
}

TEST(EnvelopeRejectTest, Duplicates) {
  ExpectRejected(DecodeKafka("t", std::nullopt, With(KafkaBase(), "ce_id", kId), ""),
                 "ce_id appears more than once");
  ExpectRejected(
      DecodeKafka("t", std::nullopt,
                  With(With(KafkaBase(), "content-type", "a/b"), "content-type", "a/b"), ""),
      "content-type appears more than once");
  ExpectRejected(
      DecodeKafka("t", std::nullopt, With(With(KafkaBase(), "x-a", "1"), "x-a", "2"), ""),
      "header \"x-a\" appears more than once");
  ExpectRejected(DecodeMqtt5("t", "", With(MqttBase(), "type", "again"), ""),
                 "type appears more than once");
  ExpectRejected(DecodeStructuredJson("t", JsonWith(R"(,"type":"again")")),
                 "member name \"type\" appears more than once");
  ExpectRejected(DecodeStructuredJson("t", JsonWith(R"(,"data":{"a":1,"b":{"c":1,"c":2}})")),
                 "member name \"c\" appears more than once");
  // Escapes are compared after unescaping.
  ExpectRejected(DecodeStructuredJson("t", JsonWith(R"(,"data":{"a":1,"\u0061":2})")),
                 "appears more than once");
}

TEST(EnvelopeRejectTest, StrictJson) {
  for (const std::string& bad : {
           JsonWith(","),  // trailing comma
           JsonWith("/* c */"),
           JsonWith(R"(,"data":[1,])"),
           JsonWith(R"(,"data":01)"),  // leading zero
           JsonWith(R"(,"data":NaN)"),
           JsonWith(R"(,"data":1.)"),
           JsonWith(R"(,"data":'x')"),
           JsonWith(R"(,"tenant":"\ud800")"),  // lone high surrogate
           JsonWith(R"(,"tenant":"\udc00")"),  // lone low surrogate
           JsonWith(R"(,"tenant":"\ud800\u0041")"),
           JsonWith(R"(,"data":["\udc00"])"),  // also inside embedded data
           JsonWith(R"(,"data":{"\ud800":1})"),
           JsonWith(R"(,"tenant":"\x41")"),
           JsonWith(",\"tenant\":\"raw\ttab\""),  // unescaped control character
           JsonWith("") + "x",                    // trailing text
           JsonWith("") + "{}",
           std::string("\xEF\xBB\xBF") + JsonWith(""),  // byte order mark
           std::string("[") + JsonWith("") + "]",       // not an object
           std::string(""),
           std::string("{"),
           JsonWith(R"(,"data":)" + std::string(70, '[') + std::string(70, ']')),  // too deep
       }) {
    auto r = DecodeStructuredJson("t", bad);
    EXPECT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
  }
  // A valid surrogate pair is fine.
  auto pair = DecodeStructuredJson("t", JsonWith(R"(,"tenant":"\ud83d\ude00")"));
  ASSERT_TRUE(pair.ok()) << pair.status();
  EXPECT_EQ(pair->extensions.at("tenant"), "\xF0\x9F\x98\x80");
}

TEST(EnvelopeRejectTest, StructuredData) {
  ExpectRejected(DecodeStructuredJson("t", JsonWith(R"(,"data":{},"data_base64":"AA==")")),
                 "data and data_base64 are both present");
  for (const char* b64 :
       {"AA=", "A===", "AAA=A", "AB==", "AAB=", "AA==AA==", "AA AA===", "A-==", "AA\\n=="}) {
    ExpectRejected(
        DecodeStructuredJson("t", JsonWith(std::string(R"(,"data_base64":")") + b64 + "\"")),
        "data_base64 is not valid base64");
  }
  ExpectRejected(DecodeStructuredJson("t", JsonWith(R"(,"data_base64":5)")),
                 "data_base64 must be a JSON string");
  ExpectRejected(
      DecodeStructuredJson("t", JsonWith(R"(,"datacontenttype":"text/plain","data":{"a":1})")),
      "data must be a JSON string when datacontenttype \"text/plain\" is not JSON");
  auto b = DecodeStructuredJson("t", JsonWith(R"(,"data_base64":"")"));
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->payload, "");
  auto null_b64 = DecodeStructuredJson("t", JsonWith(R"(,"data_base64":null)"));
  ASSERT_TRUE(null_b64.ok());
  EXPECT_EQ(null_b64->datacontenttype, "");
}

TEST(EnvelopeRejectTest, JsonExtensionValueTypes) {
  auto ok = DecodeStructuredJson(
      "t", JsonWith(R"(,"b":true,"f":false,"i":-2147483648,"j":2147483647,"z":-0,"s":"x")"));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_THAT(ok->extensions,
              ElementsAre(Pair("b", "true"), Pair("f", "false"), Pair("i", "-2147483648"),
                          Pair("j", "2147483647"), Pair("s", "x"), Pair("z", "0")));
  ExpectRejected(DecodeStructuredJson("t", JsonWith(R"(,"i":2147483648)")),
                 "i is not a CloudEvents Integer");
  ExpectRejected(DecodeStructuredJson("t", JsonWith(R"(,"i":1.5)")),
                 "i is not a CloudEvents Integer");
  ExpectRejected(DecodeStructuredJson("t", JsonWith(R"(,"i":1e3)")),
                 "i is not a CloudEvents Integer");
  ExpectRejected(DecodeStructuredJson("t", JsonWith(R"(,"o":{"a":1})")),
                 "o must be a string, boolean or integer");
  ExpectRejected(DecodeStructuredJson("t", JsonWith(R"(,"a":[1])")),
                 "a must be a string, boolean or integer");
}

TEST(EnvelopeRejectTest, EmptyOptionalAttributes) {
  ExpectRejected(DecodeKafka("t", std::nullopt, With(KafkaBase(), "ce_subject", ""), ""),
                 "ce_subject is present but empty");
  ExpectRejected(DecodeKafka("t", std::nullopt, With(KafkaBase(), "content-type", ""), ""),
                 "content-type is present but empty");
  ExpectRejected(DecodeMqtt5("t", "", With(MqttBase(), "traceparent", ""), ""),
                 "traceparent is present but empty");
  ExpectRejected(DecodeStructuredJson("t", JsonWith(R"(,"subject":"")")),
                 "subject is present but empty");
}

TEST(EnvelopeRejectTest, ContentTypes) {
  ExpectRejected(
      DecodeKafka("t", std::nullopt, {{"content-type", "application/cloudevents+avro"}}, "x"),
      "content-type \"application/cloudevents+avro\" is a CloudEvents event format "
      "this decoder does not support");
  ExpectRejected(DecodeMqtt5("t", "application/cloudevents-batch+json", {}, "[]"),
                 "Content Type \"application/cloudevents-batch+json\" is a CloudEvents event");
  ExpectRejected(DecodeKafka("t", std::nullopt, With(KafkaBase(), "content-type", "json"), ""),
                 "content-type is not a media type");
  ExpectRejected(DecodeMqtt5("t", "text/plain; charset", MqttBase(), ""),
                 "Content Type is not a media type");
  // Prefix matching is case-insensitive (Kafka binding 3).
  auto upper = DecodeKafka("t", std::nullopt, {{"content-type", "Application/CloudEvents+JSON"}},
                           JsonWith(""));
  EXPECT_TRUE(upper.ok()) << upper.status();
  // Binary mode: the datacontenttype attribute, if also sent, must agree.
  ExpectRejected(DecodeKafka("t", std::nullopt,
                             With(With(KafkaBase(), "content-type", "text/plain"),
                                  "ce_datacontenttype", "text/html"),
                             ""),
                 "ce_datacontenttype \"text/html\" and content-type \"text/plain\" disagree");
  ExpectRejected(
      DecodeMqtt5("t", "text/plain", With(MqttBase(), "datacontenttype", "text/html"), ""),
      "disagree");
  auto only_attr = DecodeMqtt5("t", "", With(MqttBase(), "datacontenttype", "text/html"), "");
  ASSERT_TRUE(only_attr.ok());
  EXPECT_EQ(only_attr->datacontenttype, "text/html");
  EXPECT_TRUE(IsJsonContentType("application/json"));
  EXPECT_TRUE(IsJsonContentType("Application/JSON ; charset=utf-8"));
  EXPECT_TRUE(IsJsonContentType("application/vnd.foo+json"));
  EXPECT_TRUE(IsJsonContentType("text/json"));
  EXPECT_FALSE(IsJsonContentType("application/jsonx"));
  EXPECT_FALSE(IsJsonContentType("application/+json"));
  EXPECT_FALSE(IsJsonContentType("application/xml"));
  EXPECT_FALSE(IsJsonContentType("json"));
}

TEST(EnvelopeRejectTest, Traceparent) {
  for (const char* bad : {
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",       // no flags
           "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",    // upper case
           "00-00000000000000000000000000000000-00f067aa0ba902b7-01",    // zero trace id
           "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",    // zero parent id
           "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",    // version ff
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",  // v00 is 55 chars
           "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
       }) {
    ExpectRejected(DecodeKafka("t", std::nullopt, With(KafkaBase(), "ce_traceparent", bad), ""),
                   "ce_traceparent is not a W3C traceparent");
  }
  // A future version may append fields.
  EXPECT_TRUE(DecodeKafka("t", std::nullopt,
                          With(KafkaBase(), "ce_traceparent",
                               "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future"),
                          "")
                  .ok());
}

TEST(EnvelopeRejectTest, KafkaKeyIsNotAnAttribute) {
  auto m = DecodeKafka("t", "some-key", KafkaBase(), "");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->subject, "");
  auto with_subject = DecodeKafka("t", "other", With(KafkaBase(), "ce_subject", "s1"), "");
  ASSERT_TRUE(with_subject.ok());
  EXPECT_EQ(with_subject->subject, "s1");
}

// ---- ValidateMessage and the encoders' own checks ---------------------------------------------

TEST(ValidateMessageTest, IdRules) {
  Message m = FullMessage();
  m.id = NewUuidV7().ToString();
  EXPECT_TRUE(ValidateMessage(m).ok());
  m.id = "0190A5C6-1F7A-7B3C-8D4E-5F6A7B8C9D0E";
  EXPECT_TRUE(ValidateMessage(m).ok());
  m.id = "00000000-0000-0000-0000-000000000000";
  ExpectRejected(ValidateMessage(m), "id must be a UUID");
  m.id = "A234-1234-1234";
  ExpectRejected(ValidateMessage(m),
                 "id must be a UUID (Converge produces UUIDv7), got "
                 "\"A234-1234-1234\"");
  ExpectRejected(EncodeKafkaHeaders(m), "id must be a UUID");
  ExpectRejected(EncodeMqttUserProperties(m), "id must be a UUID");
  ExpectRejected(EncodeStructuredJson(m), "id must be a UUID");
  EXPECT_TRUE(ValidateMessage(m, IdRule::kAnyString).ok());
  EXPECT_TRUE(EncodeStructuredJson(m, IdRule::kAnyString).ok());
  m.id.clear();
  ExpectRejected(ValidateMessage(m, IdRule::kAnyString), "id is missing");
}

TEST(ValidateMessageTest, HeaderNamesMustWorkInEveryBinding) {
  for (const char* ok :
       {"x-tenant", "Tenant", "app_id", "X-Request-Id", "tenant-1", "caf\xC3\xA9"}) {
    Message m = FullMessage();
    m.headers = {{ok, "v"}};
    EXPECT_TRUE(ValidateMessage(m).ok()) << ok << ": " << ValidateMessage(m);
  }
  struct Case {
    const char* name;
    const char* why;
  };
  for (const Case& c : {Case{"tenant", "would be read as a CloudEvents attribute in MQTT 5"},
                        Case{"abc123", "would be read as a CloudEvents attribute"},
                        Case{"ce_x", "is reserved"}, Case{"CE_X", "is reserved"},
                        Case{"content-type", "is reserved"}, Case{"Content-Type", "is reserved"},
                        Case{"", "empty name"}, Case{"a\nb", "contains U+000A"}}) {
    Message m = FullMessage();
    m.headers = {{c.name, "v"}};
    ExpectRejected(ValidateMessage(m), c.why);
  }
  // Each encoder applies only its own binding's rule.
  Message kafka_only = FullMessage();
  kafka_only.headers = {{"tenant", "v"}};
  EXPECT_TRUE(EncodeKafkaHeaders(kafka_only).ok());
  ExpectRejected(EncodeMqttUserProperties(kafka_only), "would be read as a CloudEvents attribute");
  Message mqtt_only = FullMessage();
  mqtt_only.headers = {{"ce_x", "v"}};
  EXPECT_TRUE(EncodeMqttUserProperties(mqtt_only).ok());
  ExpectRejected(EncodeKafkaHeaders(mqtt_only), "is reserved");
  // A Kafka record with such a header decodes, and cannot be re-encoded for MQTT.
  auto from_kafka = DecodeKafka("t", std::nullopt, With(KafkaBase(), "tenant", "acme"), "");
  ASSERT_TRUE(from_kafka.ok()) << from_kafka.status();
  EXPECT_EQ(from_kafka->headers.at("tenant"), "acme");
  EXPECT_FALSE(EncodeMqttUserProperties(*from_kafka).ok());
  ExpectRejected(DecodeKafka("t", std::nullopt, With(KafkaBase(), "CE_x", "v"), ""),
                 "header \"CE_x\" is reserved");
}

// In binary mode a receiver takes "application/cloudevents..." as structured mode, so an event
// whose data is itself a CloudEvent can only travel in structured mode.
TEST(ValidateMessageTest, CloudEventsDataContentTypeOnlyInStructuredMode) {
  Message m = FullMessage();
  m.datacontenttype = "application/cloudevents+json";
  m.payload = JsonWith("");
  ExpectRejected(ValidateMessage(m), "cannot be sent in binary content mode");
  ExpectRejected(EncodeKafkaHeaders(m), "cannot be sent in binary content mode");
  ExpectRejected(EncodeMqttUserProperties(m), "cannot be sent in binary content mode");
  auto j = EncodeStructuredJson(m);
  ASSERT_TRUE(j.ok()) << j.status();
  auto back = DecodeStructuredJson(m.topic, *j);
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSameEvent(m, *back, Headers::kIgnore);
}

TEST(ValidateMessageTest, OtherFieldRules) {
  struct Case {
    void (*change)(Message&);
    const char* why;
  };
  for (const Case& c : {
           Case{[](Message& m) { m.topic.clear(); }, "topic is missing"},
           Case{[](Message& m) { m.topic = "a/#"; }, "contains an MQTT wildcard"},
           Case{[](Message& m) { m.topic = "a/+/b"; }, "contains an MQTT wildcard"},
           Case{[](Message& m) { m.source.clear(); }, "source is missing"},
           Case{[](Message& m) { m.source = "/my orders"; }, "source is not a URI-reference"},
           Case{[](Message& m) { m.source = "/a%2"; }, "bad percent-encoding"},
           Case{[](Message& m) { m.source = "/caf\xC3\xA9"; }, "must be percent-encoded"},
           Case{[](Message& m) { m.type.clear(); }, "type is missing"},
           Case{[](Message& m) { m.type = std::string(257, 't'); }, "type is too long"},
           Case{[](Message& m) { m.subject = std::string(1025, 's'); }, "subject is too long"},
           Case{[](Message& m) { m.datacontenttype = "json"; }, "datacontenttype is not a media"},
           Case{[](Message& m) { m.datacontenttype = "a/b;"; }, "datacontenttype is not a media"},
           Case{[](Message& m) { m.datacontenttype = "a/b; c=\"d"; }, "unterminated"},
           Case{[](Message& m) { m.traceparent = "00-abc"; }, "traceparent is not a W3C"},
           Case{[](Message& m) { m.extensions["tenant"] = "\x7F"; }, "tenant contains U+007F"},
           Case{[](Message& m) { m.headers["x-a"] = std::string(1025, 'v'); }, "too long"},
       }) {
    Message m = FullMessage();
    c.change(m);
    ExpectRejected(ValidateMessage(m), c.why);
  }
  for (const char* source : {"https://github.com/cloudevents", "mailto:a@b.example",
                             "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66", "1-555-123-4567",
                             "/a%20b?x=1#frag", "http://[::1]:8080/p"}) {
    Message m = FullMessage();
    m.source = source;
    EXPECT_TRUE(ValidateMessage(m).ok()) << source << ": " << ValidateMessage(m);
  }
  for (const char* ct :
       {"application/json", "application/json; charset=utf-8", "text/plain;charset=\"utf-8\"",
        "application/vnd.apache.thrift.binary", "multipart/mixed; boundary=\"a b\"; x=y"}) {
    Message m = FullMessage();
    m.datacontenttype = ct;
    EXPECT_TRUE(ValidateMessage(m).ok()) << ct << ": " << ValidateMessage(m);
  }
}

}  // namespace
}  // namespace converge
