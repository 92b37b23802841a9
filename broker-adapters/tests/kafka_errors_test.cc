#include "kafka_errors.h"

#include <gtest/gtest.h>

namespace converge::broker::internal {
namespace {

constexpr auto kNot = RD_KAFKA_MSG_STATUS_NOT_PERSISTED;
constexpr auto kMaybe = RD_KAFKA_MSG_STATUS_POSSIBLY_PERSISTED;
constexpr auto kRetry = UnknownTopicPolicy::kRetry;

StatusCode Code(rd_kafka_resp_err_t err, rd_kafka_msg_status_t persisted = kNot,
                UnknownTopicPolicy policy = kRetry) {
  return MapDeliveryError(err, persisted, policy).code();
}

TEST(KafkaDeliveryErrorTest, OnlyNoErrorIsSuccess) {
  EXPECT_TRUE(
      MapDeliveryError(RD_KAFKA_RESP_ERR_NO_ERROR, RD_KAFKA_MSG_STATUS_PERSISTED, kRetry).ok());
  // Every other code, whatever its persistence status, is a failure.
  const rd_kafka_err_desc* descs = nullptr;
  size_t count = 0;
  rd_kafka_get_err_descs(&descs, &count);
  for (size_t i = 0; i < count; ++i) {
    if (descs[i].name == nullptr || descs[i].code == RD_KAFKA_RESP_ERR_NO_ERROR) continue;
    for (auto persisted : {kNot, kMaybe, RD_KAFKA_MSG_STATUS_PERSISTED}) {
      EXPECT_FALSE(MapDeliveryError(descs[i].code, persisted, kRetry).ok()) << descs[i].name;
    }
  }
}

TEST(KafkaDeliveryErrorTest, TimeoutDependsOnPersistenceStatus) {
  EXPECT_EQ(Code(RD_KAFKA_RESP_ERR__MSG_TIMED_OUT, kMaybe), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(Code(RD_KAFKA_RESP_ERR__MSG_TIMED_OUT, kNot), StatusCode::kUnavailable);
  EXPECT_EQ(Code(RD_KAFKA_RESP_ERR__TIMED_OUT, kMaybe), StatusCode::kDeadlineExceeded);
}

TEST(KafkaDeliveryErrorTest, PermanentErrorsAreFailedPrecondition) {
  for (auto err :
       {RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION, RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE,
        RD_KAFKA_RESP_ERR_INVALID_RECORD, RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED,
        RD_KAFKA_RESP_ERR_POLICY_VIOLATION, RD_KAFKA_RESP_ERR__INVALID_ARG}) {
    EXPECT_EQ(Code(err, kNot), StatusCode::kFailedPrecondition) << rd_kafka_err2name(err);
    // A definite broker answer stays permanent even if librdkafka could not be sure.
    EXPECT_EQ(Code(err, kMaybe), StatusCode::kFailedPrecondition) << rd_kafka_err2name(err);
  }
}

TEST(KafkaDeliveryErrorTest, UnknownTopicFollowsPolicy) {
  for (auto err : {RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART, RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC,
                   RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION}) {
    EXPECT_EQ(Code(err, kNot, UnknownTopicPolicy::kRetry), StatusCode::kUnavailable);
    EXPECT_EQ(Code(err, kNot, UnknownTopicPolicy::kFailPrecondition),
              StatusCode::kFailedPrecondition);
  }
}

TEST(KafkaDeliveryErrorTest, ClientSideOutcomes) {
  EXPECT_EQ(Code(RD_KAFKA_RESP_ERR__QUEUE_FULL), StatusCode::kUnavailable);
  EXPECT_EQ(Code(RD_KAFKA_RESP_ERR__PURGE_QUEUE), StatusCode::kUnavailable);
  EXPECT_EQ(Code(RD_KAFKA_RESP_ERR__PURGE_INFLIGHT), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(Code(RD_KAFKA_RESP_ERR__FATAL, kNot), StatusCode::kDeadlineExceeded);
}

TEST(KafkaDeliveryErrorTest, TransientBrokerErrorsAreRetriable) {
  for (auto err :
       {RD_KAFKA_RESP_ERR__TRANSPORT, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS, RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
        RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH, RD_KAFKA_RESP_ERR_KAFKA_STORAGE_ERROR}) {
    EXPECT_EQ(Code(err, kNot), StatusCode::kUnavailable) << rd_kafka_err2name(err);
    EXPECT_EQ(Code(err, kMaybe), StatusCode::kDeadlineExceeded) << rd_kafka_err2name(err);
  }
  // PERSISTED with an error is contradictory; the safe reading is "maybe written".
  EXPECT_EQ(Code(RD_KAFKA_RESP_ERR__TRANSPORT, RD_KAFKA_MSG_STATUS_PERSISTED),
            StatusCode::kDeadlineExceeded);
}

TEST(KafkaDeliveryErrorTest, MessageNamesTheErrorAndDetail) {
  Status s = MapDeliveryError(RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE, kNot, kRetry, "orders");
  EXPECT_NE(s.message().find("MSG_SIZE_TOO_LARGE"), std::string::npos) << s;
  EXPECT_NE(s.message().find("orders"), std::string::npos) << s;
}

TEST(KafkaConsumerErrorTest, Mapping) {
  EXPECT_TRUE(MapConsumerError(RD_KAFKA_RESP_ERR_NO_ERROR).ok());
  EXPECT_EQ(MapConsumerError(RD_KAFKA_RESP_ERR__TRANSPORT).code(), StatusCode::kUnavailable);
  EXPECT_EQ(MapConsumerError(RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN).code(), StatusCode::kUnavailable);
  EXPECT_EQ(MapConsumerError(RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED).code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(MapConsumerError(RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED).code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(MapConsumerError(RD_KAFKA_RESP_ERR__FATAL).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(MapConsumerError(RD_KAFKA_RESP_ERR_INVALID_GROUP_ID).code(),
            StatusCode::kInvalidArgument);
}

TEST(ParseKafkaErrorTest, AcceptsTheUsualSpellings) {
  EXPECT_EQ(*ParseKafkaError("MSG_SIZE_TOO_LARGE"), RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE);
  EXPECT_EQ(*ParseKafkaError("msg_size_too_large"), RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE);
  EXPECT_EQ(*ParseKafkaError("RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE"),
            RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE);
  EXPECT_EQ(*ParseKafkaError("_TRANSPORT"), RD_KAFKA_RESP_ERR__TRANSPORT);
  EXPECT_EQ(*ParseKafkaError("__TRANSPORT"), RD_KAFKA_RESP_ERR__TRANSPORT);
  EXPECT_EQ(*ParseKafkaError("RD_KAFKA_RESP_ERR__TRANSPORT"), RD_KAFKA_RESP_ERR__TRANSPORT);
  EXPECT_EQ(*ParseKafkaError("NO_ERROR"), RD_KAFKA_RESP_ERR_NO_ERROR);
  EXPECT_EQ(*ParseKafkaError("29"), RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
  EXPECT_EQ(*ParseKafkaError("-185"), RD_KAFKA_RESP_ERR__TIMED_OUT);
  Result<rd_kafka_resp_err_t> bad = ParseKafkaError("NOT_A_KAFKA_ERROR");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("NOT_A_KAFKA_ERROR"), std::string::npos);
}

}  // namespace
}  // namespace converge::broker::internal
