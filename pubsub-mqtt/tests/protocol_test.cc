// Unit tests of the device protocol helpers and the strict JSON check (no services).
#include <gtest/gtest.h>

#include "converge/pubsub/device_client.h"
#include "converge/pubsub/protocol.h"
#include "json_check.h"

namespace converge::pubsub {
namespace {

TEST(DeviceIdTest, AcceptsTheAllowedAlphabet) {
  EXPECT_TRUE(ValidateDeviceId("d1").ok());
  EXPECT_TRUE(ValidateDeviceId("Sensor_01.kitchen-2").ok());
  EXPECT_TRUE(ValidateDeviceId(std::string(64, 'a')).ok());
}

TEST(DeviceIdTest, RejectsWildcardsSeparatorsAndSizeWithAClearError) {
  for (std::string bad : {"a/b", "a+b", "a#", "$sys", "a b", "ä", "", ".", ".."}) {
    Status st = ValidateDeviceId(bad);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_NE(ValidateDeviceId("a/b").message().find("contains '/'"), std::string::npos)
      << ValidateDeviceId("a/b").message();
  EXPECT_NE(ValidateDeviceId(std::string(65, 'a')).message().find("at most 64"), std::string::npos);
  EXPECT_NE(ValidateDeviceId(std::string("a\0b", 3)).message().find("byte 0"), std::string::npos);
}

TEST(TopicTest, LayoutRoundTrips) {
  EXPECT_EQ(DeviceTopic("d1", TopicKind::kCommands), "devices/d1/commands");
  EXPECT_EQ(DeviceTopic("d1", TopicKind::kDesired), "devices/d1/twin/desired");
  for (TopicKind k : {TopicKind::kCommands, TopicKind::kAcks, TopicKind::kDesired,
                      TopicKind::kReported, TopicKind::kTelemetry, TopicKind::kPresence}) {
    auto p = ParseDeviceTopic(DeviceTopic("dev-7", k));
    ASSERT_TRUE(p.has_value());
    EXPECT_EQ(p->device_id, "dev-7");
    EXPECT_EQ(p->kind, k);
  }
  EXPECT_FALSE(ParseDeviceTopic("devices/d1/other").has_value());
  EXPECT_FALSE(ParseDeviceTopic("devices/d1").has_value());
  EXPECT_FALSE(ParseDeviceTopic("devices//acks").has_value());
  EXPECT_FALSE(ParseDeviceTopic("things/d1/acks").has_value());
  EXPECT_FALSE(ParseDeviceTopic("devices/a+b/acks").has_value());
}

TEST(AckStatusTest, ParsesOnlyKnownNames) {
  EXPECT_EQ(*ParseAckStatus("applied"), AckStatus::kApplied);
  EXPECT_EQ(AckStatusName(AckStatus::kRejected), "rejected");
  EXPECT_EQ(ParseAckStatus("done").status().code(), StatusCode::kInvalidArgument);
}

TEST(NumberTest, NonNegativeDecimalOnly) {
  EXPECT_EQ(*ParseNonNegative("42", "v"), 42);
  for (const char* bad : {"", "-1", "1.5", "12a", " 1", "99999999999999999999"})
    EXPECT_FALSE(ParseNonNegative(bad, "v").ok()) << bad;
}

TEST(JsonCheckTest, AcceptsStrictJson) {
  for (const char* ok : {"{}", " {\"a\": [1, -2.5e3, true, null, \"x\\u00e9\"]} ",
                         "{\"nested\":{\"k\":\"v\"}}", "\"s\"", "0", "[]"})
    EXPECT_TRUE(internal::CheckJson(ok, "x", false).ok()) << ok;
}

TEST(JsonCheckTest, RejectsWhatJsonbWouldRefuse) {
  for (const char* bad :
       {"", "{", "{\"a\":}", "{'a':1}", "{\"a\":1,}", "[1 2]", "01", "1.", "{\"a\":\"\\u0000\"}",
        "{\"a\":\"\x01\"}", "{} x", "nul", "{\"a\":\"\xff\"}"})
    EXPECT_FALSE(internal::CheckJson(bad, "x", false).ok()) << bad;
  EXPECT_FALSE(internal::CheckJson(std::string(100, '['), "x", false).ok());
  Status st = internal::CheckJson("[1]", "desired state", true);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("desired state is not valid JSON object"), std::string::npos)
      << st.message();
}

}  // namespace
}  // namespace converge::pubsub

namespace converge::pubsub {
namespace {

TEST(DeviceOptionsTest, ValidateNamesTheBadField) {
  DeviceOptions o;
  o.url = "tcp://127.0.0.1:1883";
  o.device_id = "d1";
  EXPECT_TRUE(o.Validate().ok());
  auto bad = [](DeviceOptions x) { return x.Validate().message(); };
  DeviceOptions u = o;
  u.url = "http://x";
  EXPECT_NE(bad(u).find("device.url"), std::string::npos);
  DeviceOptions d = o;
  d.device_id = "a/b";
  EXPECT_NE(bad(d).find("device.device_id"), std::string::npos);
  DeviceOptions r = o;
  r.reconnect_max = std::chrono::milliseconds(1);
  EXPECT_NE(bad(r).find("device.reconnect_min"), std::string::npos);
  DeviceOptions c = o;
  c.dedupe_capacity = 0;
  EXPECT_NE(bad(c).find("device.dedupe_capacity"), std::string::npos);
  // Start refuses bad options before touching the network.
  DeviceClient client(u);
  EXPECT_EQ(client.Start().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace converge::pubsub
