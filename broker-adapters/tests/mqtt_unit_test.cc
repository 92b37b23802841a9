// MQTT adapter pieces that need no broker: topic mapping, filter matching, option checks.
#include <gtest/gtest.h>

#include <vector>

#include "converge/broker/mqtt.h"

namespace converge::broker {
namespace {

TEST(MqttTopic, TemplateSubstitutesTopicAndKey) {
  Message m;
  m.topic = "commands";
  m.subject = "dev-7";
  EXPECT_EQ(*MqttTopicFor("{topic}", m), "commands");
  EXPECT_EQ(*MqttTopicFor("dev/{key}/cmd", m), "dev/dev-7/cmd");
  EXPECT_EQ(*MqttTopicFor("site1/{topic}/{key}", m), "site1/commands/dev-7");
}

TEST(MqttTopic, KeysThatCannotBeALevelAreInvalid) {
  Message m;
  m.topic = "commands";
  for (const std::string& key :
       std::vector<std::string>{"a/b", "a+", "#", std::string("a\0b", 3)}) {
    m.subject = key;
    auto t = MqttTopicFor("dev/{key}", m);
    ASSERT_FALSE(t.ok()) << key;
    EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  }
  m.subject = "";
  auto t = MqttTopicFor("dev/{key}", m);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("no key"), std::string::npos);
}

TEST(MqttTopic, FilterMatching) {
  EXPECT_TRUE(MqttTopicMatches("dev/+/evt", "dev/a/evt"));
  EXPECT_FALSE(MqttTopicMatches("dev/+/evt", "dev/a/b/evt"));
  EXPECT_FALSE(MqttTopicMatches("dev/+/evt", "dev/a/cmd"));
  EXPECT_TRUE(MqttTopicMatches("dev/#", "dev"));
  EXPECT_TRUE(MqttTopicMatches("dev/#", "dev/a/b"));
  EXPECT_FALSE(MqttTopicMatches("dev/#", "device"));
  EXPECT_TRUE(MqttTopicMatches("#", "a/b"));
  EXPECT_FALSE(MqttTopicMatches("#", "$SYS/x"));
  EXPECT_TRUE(MqttTopicMatches("+/+", "a/"));
  EXPECT_TRUE(MqttTopicMatches("$share/g/dev/+/evt", "dev/a/evt"));
  EXPECT_TRUE(MqttTopicMatches("a/b", "a/b"));
  EXPECT_FALSE(MqttTopicMatches("a/b", "a/b/c"));
  EXPECT_FALSE(MqttTopicMatches("a/b/c", "a/b"));
}

TEST(MqttOptions, ValidateNamesTheField) {
  MqttOptions o;
  EXPECT_NE(o.Validate().message().find("mqtt.url"), std::string::npos);
  o.url = "http://x";
  EXPECT_NE(o.Validate().message().find("mqtt.url"), std::string::npos);
  o.url = "tcp://127.0.0.1:1883";
  EXPECT_TRUE(o.Validate().ok());
  o.qos = 0;
  EXPECT_NE(o.Validate().message().find("mqtt.qos"), std::string::npos);
  o.qos = 2;
  o.tls.ca_file = "/ca.pem";
  EXPECT_NE(o.Validate().message().find("ssl://"), std::string::npos);
  o.url = "ssl://127.0.0.1:8883";
  EXPECT_TRUE(o.Validate().ok());
  o.topic_template = "dev/+/x";
  EXPECT_NE(o.Validate().message().find("mqtt.topic_template"), std::string::npos);
  o.topic_template = "{topic}";
  o.password = "secret";
  EXPECT_NE(o.Validate().message().find("mqtt.username"), std::string::npos);
  EXPECT_EQ(o.Validate().message().find("secret"), std::string::npos);
}

TEST(MqttSourceFactory, RequiresAClientId) {
  MqttOptions o;
  o.url = "tcp://127.0.0.1:1";
  auto s = MakeMqttSource(o);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("mqtt.client_id"), std::string::npos);
}

TEST(MqttProcessingTime, IsHalfTheKeepalive) {
  MqttOptions o;
  o.keep_alive = std::chrono::seconds(30);
  EXPECT_EQ(MaxProcessingTime(o), std::chrono::milliseconds(15000));
}

}  // namespace
}  // namespace converge::broker
