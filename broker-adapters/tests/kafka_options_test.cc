// Options validation and client creation; no broker is contacted.
#include <gtest/gtest.h>

#include "converge/broker/kafka.h"

namespace converge::broker {
namespace {

KafkaOptions ProducerOptions() {
  KafkaOptions o;
  o.bootstrap_servers = "127.0.0.1:1";  // nothing listens; factories do not connect
  return o;
}

KafkaSourceOptions ConsumerOptions() {
  KafkaSourceOptions o;
  o.bootstrap_servers = "127.0.0.1:1";
  o.group_id = "g";
  return o;
}

TEST(KafkaOptionsTest, DefaultsAreValidAndCreateAPublisher) {
  EXPECT_TRUE(ProducerOptions().Validate().ok());
  auto p = MakeKafkaPublisher(ProducerOptions());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ((*p)->Name(), "kafka");
  (*p)->Close(std::chrono::milliseconds(0));
  (*p)->Close(std::chrono::milliseconds(0));  // idempotent
}

TEST(KafkaOptionsTest, MissingBootstrapIsInvalid) {
  KafkaOptions o = ProducerOptions();
  o.bootstrap_servers.clear();
  EXPECT_EQ(MakeKafkaPublisher(o).status().code(), StatusCode::kInvalidArgument);
  o.properties["bootstrap.servers"] = "127.0.0.1:1";
  EXPECT_TRUE(MakeKafkaPublisher(o).ok());
}

TEST(KafkaOptionsTest, UnknownPropertyIsNamed) {
  KafkaOptions o = ProducerOptions();
  o.properties["no.such.property"] = "1";
  auto p = MakeKafkaPublisher(o);
  ASSERT_EQ(p.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(p.status().message().find("no.such.property"), std::string::npos) << p.status();
}

TEST(KafkaOptionsTest, BadPropertyValueIsNamed) {
  KafkaOptions o = ProducerOptions();
  o.properties["linger.ms"] = "soon";
  auto p = MakeKafkaPublisher(o);
  ASSERT_EQ(p.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(p.status().message().find("linger.ms"), std::string::npos) << p.status();
}

TEST(KafkaOptionsTest, AcksOtherThanAllIsRejected) {
  KafkaOptions o = ProducerOptions();
  o.properties["acks"] = "1";
  auto p = MakeKafkaPublisher(o);
  ASSERT_EQ(p.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(p.status().message().find("acks"), std::string::npos);
  o.properties["acks"] = "-1";
  EXPECT_TRUE(MakeKafkaPublisher(o).ok());
}

TEST(KafkaOptionsTest, ConflictingPropertiesFailAtCreation) {
  KafkaOptions o = ProducerOptions();
  o.properties["max.in.flight.requests.per.connection"] = "50";  // > 5 with idempotence
  auto p = MakeKafkaPublisher(o);
  EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument) << p.status();
}

TEST(KafkaOptionsTest, TypedFieldsAreChecked) {
  KafkaOptions o = ProducerOptions();
  o.message_timeout = std::chrono::milliseconds(0);
  EXPECT_NE(o.Validate().message().find("message_timeout"), std::string::npos);
  o = ProducerOptions();
  o.linger = std::chrono::milliseconds(-1);
  EXPECT_NE(o.Validate().message().find("linger"), std::string::npos);
  o = ProducerOptions();
  o.compression = "brotli";
  auto p = MakeKafkaPublisher(o);
  ASSERT_EQ(p.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(p.status().message().find("compression.type"), std::string::npos) << p.status();
}

TEST(KafkaSourceOptionsTest, DefaultsAreValidAndCreateASource) {
  auto s = MakeKafkaSource(ConsumerOptions());
  ASSERT_TRUE(s.ok()) << s.status();
  (*s)->Close();
  (*s)->Close();
}

TEST(KafkaSourceOptionsTest, GroupIdIsRequired) {
  KafkaSourceOptions o = ConsumerOptions();
  o.group_id.clear();
  auto s = MakeKafkaSource(o);
  ASSERT_EQ(s.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("group_id"), std::string::npos);
}

TEST(KafkaSourceOptionsTest, AutoCommitCannotBeTurnedOn) {
  for (const char* name : {"enable.auto.commit", "enable.auto.offset.store"}) {
    KafkaSourceOptions o = ConsumerOptions();
    o.properties[name] = "true";
    auto s = MakeKafkaSource(o);
    ASSERT_EQ(s.status().code(), StatusCode::kInvalidArgument) << name;
    EXPECT_NE(s.status().message().find(name), std::string::npos);
  }
}

TEST(KafkaSourceOptionsTest, PollBeforeSubscribeIsAnError) {
  auto s = MakeKafkaSource(ConsumerOptions());
  ASSERT_TRUE(s.ok());
  EXPECT_EQ((*s)->Poll(10, std::chrono::milliseconds(0)).status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ((*s)->Subscribe({"t"}, nullptr).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace converge::broker
