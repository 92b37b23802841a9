// KafkaPublisher against a real Kafka protocol peer: librdkafka's mock cluster (in process, or
// converge-devkafka through CONVERGE_KAFKA_BROKERS).
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <set>
#include <thread>

#include "converge/broker/kafka.h"
#include "converge/broker/kafka_admin.h"
#include "converge/broker/kafka_mock.h"
#include "kafka_test_support.h"

namespace converge::broker {
namespace {

using namespace std::chrono_literals;
using testing::HeaderValue;
using testing::MakeMessage;
using testing::Pointers;
using testing::SharedBootstrap;
using testing::TestPublisherOptions;
using testing::UniqueName;

std::unique_ptr<Publisher> NewPublisher(const KafkaOptions& options) {
  auto p = MakeKafkaPublisher(options);
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? std::move(p).value() : nullptr;
}

std::unique_ptr<KafkaMockCluster> NewMock(int brokers = 1) {
  auto m = KafkaMockCluster::Start(brokers);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? std::move(m).value() : nullptr;
}

// Publishes `messages` until every one is OK or `deadline` passes; returns the last results.
std::vector<DeliveryResult> PublishUntilOk(Publisher& publisher,
                                           const std::vector<Message>& messages,
                                           std::chrono::steady_clock::duration within) {
  const auto deadline = std::chrono::steady_clock::now() + within;
  std::vector<DeliveryResult> results;
  do {
    results = publisher.PublishBatch(Pointers(messages), 3s);
    bool all_ok = true;
    for (const auto& r : results) all_ok = all_ok && r.status.ok();
    if (all_ok) break;
    std::this_thread::sleep_for(100ms);
  } while (std::chrono::steady_clock::now() < deadline);
  return results;
}

TEST(KafkaPublisherTest, PublishedBatchReadsBackWithHeadersAndPerKeyOrder) {
  const std::string topic = UniqueName("pub-readback");
  std::vector<Message> messages;
  for (int seq = 1; seq <= 20; ++seq) {
    for (const char* key : {"alpha", "beta", "gamma"}) {
      messages.push_back(MakeMessage(topic, key, seq));
    }
  }
  messages[0].traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  messages[0].extensions["tenant"] = "acme";
  messages[0].headers["x-origin"] = "publisher-test";

  auto publisher = NewPublisher(TestPublisherOptions(SharedBootstrap()));
  ASSERT_TRUE(publisher);
  ASSERT_TRUE(publisher->CheckConnected(10s).ok());
  const auto results = publisher->PublishBatch(Pointers(messages), 30s);
  ASSERT_EQ(results.size(), messages.size());
  for (size_t i = 0; i < results.size(); ++i) {
    ASSERT_TRUE(results[i].status.ok()) << i << ": " << results[i].status;
    EXPECT_GE(results[i].partition, 0);
    EXPECT_GE(results[i].offset, 0);
  }

  auto records = ReadAll(SharedBootstrap(), topic, 30s);
  ASSERT_TRUE(records.ok()) << records.status();
  ASSERT_EQ(records->size(), messages.size());

  std::map<std::string, const Message*> by_id;
  for (const Message& m : messages) by_id[m.id] = &m;
  std::map<std::string, int32_t> partition_of_key;
  std::map<std::string, int64_t> last_seq_of_key;
  std::set<std::string> seen;
  for (const ReceivedRecord& r : *records) {  // ordered by (partition, offset)
    const std::string id = HeaderValue(r, "ce_id");
    ASSERT_TRUE(by_id.contains(id)) << "unexpected record " << id;
    EXPECT_TRUE(seen.insert(id).second) << "duplicate " << id;
    const Message& m = *by_id[id];
    EXPECT_EQ(r.topic, topic);
    ASSERT_TRUE(r.key.has_value());
    EXPECT_EQ(*r.key, m.subject);
    EXPECT_EQ(r.payload, m.payload);
    EXPECT_EQ(HeaderValue(r, "ce_specversion"), "1.0");
    EXPECT_EQ(HeaderValue(r, "ce_source"), m.source);
    EXPECT_EQ(HeaderValue(r, "ce_type"), m.type);
    EXPECT_EQ(HeaderValue(r, "ce_subject"), m.subject);
    EXPECT_EQ(HeaderValue(r, "ce_keyseq"), std::to_string(m.sequence));
    EXPECT_EQ(HeaderValue(r, "content-type"), "application/json");
    EXPECT_FALSE(HeaderValue(r, "ce_time").empty());
    // Per-key order: one partition per key, keyseq increasing with the offset.
    auto [it, first] = partition_of_key.emplace(m.subject, r.partition);
    EXPECT_EQ(it->second, r.partition) << m.subject << " spread over partitions";
    EXPECT_GT(m.sequence, last_seq_of_key[m.subject]) << m.subject << " out of order";
    last_seq_of_key[m.subject] = m.sequence;
  }
  EXPECT_EQ(seen.size(), messages.size());
  for (const ReceivedRecord& r : *records) {
    if (HeaderValue(r, "ce_id") != messages[0].id) continue;
    EXPECT_EQ(HeaderValue(r, "ce_traceparent"), messages[0].traceparent);
    EXPECT_EQ(HeaderValue(r, "ce_tenant"), "acme");
    EXPECT_EQ(HeaderValue(r, "x-origin"), "publisher-test");
  }
  publisher->Close(5s);
}

TEST(KafkaPublisherTest, MessageLargerThanMessageMaxBytesIsFailedPrecondition) {
  const std::string topic = UniqueName("pub-too-large");
  std::vector<Message> messages = {MakeMessage(topic, "k", 1),
                                   MakeMessage(topic, "big", 1, std::string(200'000, 'x')),
                                   MakeMessage(topic, "k", 2)};
  KafkaOptions options = TestPublisherOptions(SharedBootstrap());
  options.properties["message.max.bytes"] = "100000";  // librdkafka checks it before sending
  auto publisher = NewPublisher(options);
  ASSERT_TRUE(publisher);
  const auto results = publisher->PublishBatch(Pointers(messages), 30s);
  EXPECT_TRUE(results[0].status.ok()) << results[0].status;
  EXPECT_EQ(results[1].status.code(), StatusCode::kFailedPrecondition) << results[1].status;
  EXPECT_NE(results[1].status.message().find("MSG_SIZE_TOO_LARGE"), std::string::npos);
  EXPECT_TRUE(results[2].status.ok()) << results[2].status;
}

// Above MessageLimits::kMaxPayloadBytes the envelope codec refuses the message before librdkafka
// sees it.
TEST(KafkaPublisherTest, PayloadAboveConvergeLimitIsInvalidArgument) {
  const std::string topic = UniqueName("pub-over-limit");
  std::vector<Message> messages = {
      MakeMessage(topic, "big", 1, std::string(MessageLimits::kMaxPayloadBytes + 1, 'x'))};
  auto publisher = NewPublisher(TestPublisherOptions(SharedBootstrap()));
  ASSERT_TRUE(publisher);
  const auto results = publisher->PublishBatch(Pointers(messages), 30s);
  EXPECT_EQ(results[0].status.code(), StatusCode::kInvalidArgument) << results[0].status;
}

TEST(KafkaPublisherTest, BrokerRejectingAsTooLargeIsFailedPrecondition) {
  auto mock = NewMock();
  ASSERT_TRUE(mock);
  const std::string topic = UniqueName("pub-broker-too-large");
  auto publisher = NewPublisher(TestPublisherOptions(mock->bootstrap_servers()));
  ASSERT_TRUE(publisher);
  std::vector<Message> warmup = {MakeMessage(topic, "k", 1)};
  ASSERT_TRUE(publisher->PublishBatch(Pointers(warmup), 10s)[0].status.ok());
  ASSERT_TRUE(mock->PushRequestErrors(KafkaApiKey::kProduce, 1, "MSG_SIZE_TOO_LARGE").ok());
  std::vector<Message> messages = {MakeMessage(topic, "k", 2)};
  const auto results = publisher->PublishBatch(Pointers(messages), 10s);
  EXPECT_EQ(results[0].status.code(), StatusCode::kFailedPrecondition) << results[0].status;
}

TEST(KafkaPublisherTest, InvalidTopicNameIsFailedPrecondition) {
  auto publisher = NewPublisher(TestPublisherOptions(SharedBootstrap()));
  ASSERT_TRUE(publisher);
  std::vector<Message> messages = {MakeMessage("bad topic!", "k", 1), MakeMessage("", "k", 1),
                                   MakeMessage(std::string(250, 'a'), "k", 1)};
  for (const auto& r : publisher->PublishBatch(Pointers(messages), 5s)) {
    EXPECT_EQ(r.status.code(), StatusCode::kFailedPrecondition) << r.status;
  }
}

TEST(KafkaPublisherTest, MessageTheEnvelopeRejectsIsInvalidArgument) {
  const std::string topic = UniqueName("pub-invalid");
  std::vector<Message> messages = {MakeMessage(topic, "k", 1), MakeMessage(topic, "k", 2),
                                   MakeMessage(topic, "k", 3)};
  messages[0].id = "not-a-uuid";
  messages[1].headers["ce_sneaky"] = "x";  // would read back as a CloudEvents attribute
  auto publisher = NewPublisher(TestPublisherOptions(SharedBootstrap()));
  ASSERT_TRUE(publisher);
  const auto results = publisher->PublishBatch(Pointers(messages), 30s);
  EXPECT_EQ(results[0].status.code(), StatusCode::kInvalidArgument) << results[0].status;
  EXPECT_NE(results[0].status.message().find("id"), std::string::npos) << results[0].status;
  EXPECT_EQ(results[1].status.code(), StatusCode::kInvalidArgument) << results[1].status;
  EXPECT_TRUE(results[2].status.ok()) << results[2].status;
}

TEST(KafkaPublisherTest, BrokerDownLongerThanMessageTimeoutIsRetriableThenRecovers) {
  auto mock = NewMock();
  ASSERT_TRUE(mock);
  const std::string topic = UniqueName("pub-broker-down");
  KafkaOptions options = TestPublisherOptions(mock->bootstrap_servers());
  options.message_timeout = 1500ms;
  options.properties["reconnect.backoff.max.ms"] = "200";
  auto publisher = NewPublisher(options);
  ASSERT_TRUE(publisher);
  std::vector<Message> warmup = {MakeMessage(topic, "k", 1)};
  ASSERT_TRUE(publisher->PublishBatch(Pointers(warmup), 10s)[0].status.ok());

  ASSERT_TRUE(mock->SetBrokerDown(-1).ok());
  std::vector<Message> messages;
  for (int i = 2; i <= 6; ++i) messages.push_back(MakeMessage(topic, "k" + std::to_string(i), i));
  const auto start = std::chrono::steady_clock::now();
  const auto results = publisher->PublishBatch(Pointers(messages), 10s);
  // Every message got librdkafka's own answer (message.timeout.ms), before the batch timeout.
  EXPECT_LT(std::chrono::steady_clock::now() - start, 8s);
  for (const auto& r : results) {
    EXPECT_FALSE(r.status.ok());
    EXPECT_TRUE(r.status.code() == StatusCode::kUnavailable ||
                r.status.code() == StatusCode::kDeadlineExceeded)
        << r.status;
  }
  EXPECT_EQ(publisher->CheckConnected(1s).code(), StatusCode::kUnavailable);

  ASSERT_TRUE(mock->SetBrokerUp(-1).ok());
  const auto after = PublishUntilOk(*publisher, messages, 30s);
  for (const auto& r : after) EXPECT_TRUE(r.status.ok()) << r.status;
  EXPECT_TRUE(publisher->CheckConnected(5s).ok());
}

TEST(KafkaPublisherTest, BatchTimeoutReportsUnansweredMessagesAsDeadlineExceeded) {
  auto mock = NewMock();
  ASSERT_TRUE(mock);
  const std::string topic = UniqueName("pub-batch-timeout");
  auto publisher = NewPublisher(TestPublisherOptions(mock->bootstrap_servers()));
  ASSERT_TRUE(publisher);
  std::vector<Message> warmup = {MakeMessage(topic, "k", 1)};
  ASSERT_TRUE(publisher->PublishBatch(Pointers(warmup), 10s)[0].status.ok());
  ASSERT_TRUE(mock->SetBrokerRtt(-1, 3000ms).ok());
  std::vector<Message> messages = {MakeMessage(topic, "k", 2)};
  const auto results = publisher->PublishBatch(Pointers(messages), 500ms);
  EXPECT_EQ(results[0].status.code(), StatusCode::kDeadlineExceeded) << results[0].status;
  ASSERT_TRUE(mock->SetBrokerRtt(-1, 0ms).ok());
  // The late report of the first batch must not leak into the next one.
  std::vector<Message> next = {MakeMessage(topic, "k", 3)};
  const auto later = publisher->PublishBatch(Pointers(next), 10s);
  EXPECT_TRUE(later[0].status.ok()) << later[0].status;
}

// A produced batch is flushed: linger.ms (here far longer than the wait allowed) does not hold
// it back.
TEST(KafkaPublisherTest, BatchIsNotHeldForLinger) {
  auto mock = NewMock();
  ASSERT_TRUE(mock);
  const std::string topic = UniqueName("pub-linger");
  KafkaOptions o = TestPublisherOptions(mock->bootstrap_servers());
  o.linger = 4000ms;
  auto publisher = NewPublisher(o);
  ASSERT_TRUE(publisher);
  std::vector<Message> warmup = {MakeMessage(topic, "k", 1)};  // metadata, connections
  ASSERT_TRUE(publisher->PublishBatch(Pointers(warmup), 9s)[0].status.ok());
  std::vector<Message> messages;
  for (int seq = 2; seq <= 11; ++seq) messages.push_back(MakeMessage(topic, "k", seq));
  const auto results = publisher->PublishBatch(Pointers(messages), 2000ms);
  for (const auto& r : results) EXPECT_TRUE(r.status.ok()) << r.status;
}

// librdkafka asks for a new topic's metadata only on its once-a-second topic scan; the
// publisher asks at once. Each topic's first batch gets 300 ms: without that request the second
// and third topic each waited for the next scan, ~1 s.
TEST(KafkaPublisherTest, FirstBatchToANewTopicDoesNotWaitForTheMetadataScan) {
  auto mock = NewMock();
  ASSERT_TRUE(mock);
  auto publisher = NewPublisher(TestPublisherOptions(mock->bootstrap_servers()));
  ASSERT_TRUE(publisher);
  std::vector<Message> warmup = {MakeMessage(UniqueName("pub-scan-warmup"), "k", 1)};
  ASSERT_TRUE(publisher->PublishBatch(Pointers(warmup), 9s)[0].status.ok());  // connection
  for (int i = 0; i < 3; ++i) {
    std::vector<Message> first = {MakeMessage(UniqueName("pub-scan"), "k", 1)};
    const auto results = publisher->PublishBatch(Pointers(first), 300ms);
    EXPECT_TRUE(results[0].status.ok()) << "topic " << i << ": " << results[0].status;
  }
}

TEST(KafkaPublisherTest, TopicAuthorizationFailureOnProduceIsFailedPrecondition) {
  auto mock = NewMock();
  ASSERT_TRUE(mock);
  const std::string topic = UniqueName("pub-authz");
  auto publisher = NewPublisher(TestPublisherOptions(mock->bootstrap_servers()));
  ASSERT_TRUE(publisher);
  std::vector<Message> warmup = {MakeMessage(topic, "k", 1)};
  ASSERT_TRUE(publisher->PublishBatch(Pointers(warmup), 10s)[0].status.ok());
  ASSERT_TRUE(mock->PushRequestErrors(KafkaApiKey::kProduce, 1, "TOPIC_AUTHORIZATION_FAILED").ok());
  std::vector<Message> messages = {MakeMessage(topic, "k", 2)};
  const auto results = publisher->PublishBatch(Pointers(messages), 10s);
  EXPECT_EQ(results[0].status.code(), StatusCode::kFailedPrecondition) << results[0].status;
  EXPECT_NE(results[0].status.message().find("TOPIC_AUTHORIZATION_FAILED"), std::string::npos);
}

// librdkafka 2.0.2's mock lists a topic's partitions along with the error set by
// rd_kafka_mock_topic_set_error, and librdkafka 2.0.2 ignores a metadata error when partitions
// are listed: the messages are never sent and time out. This pins that behaviour: retriable,
// never OK.
TEST(KafkaPublisherTest, MockTopicMetadataErrorIsRetriableNeverOk) {
  auto mock = NewMock();
  ASSERT_TRUE(mock);
  const std::string topic = UniqueName("pub-topic-error");
  ASSERT_TRUE(mock->SetTopicError(topic, "TOPIC_AUTHORIZATION_FAILED").ok());
  KafkaOptions options = TestPublisherOptions(mock->bootstrap_servers());
  options.message_timeout = 1000ms;
  auto publisher = NewPublisher(options);
  ASSERT_TRUE(publisher);
  std::vector<Message> messages = {MakeMessage(topic, "k", 1), MakeMessage(topic, "k", 2)};
  for (const auto& r : publisher->PublishBatch(Pointers(messages), 10s)) {
    EXPECT_FALSE(r.status.ok());
    EXPECT_TRUE(r.status.IsRetriable() || r.status.code() == StatusCode::kFailedPrecondition)
        << r.status;
  }
  ASSERT_TRUE(mock->SetTopicError(topic, "NO_ERROR").ok());
}

// The mock reports UNKNOWN_TOPIC_OR_PART (with no partitions) for a topic given that error, as
// Kafka does for a topic that does not exist when auto-creation is off.
TEST(KafkaPublisherTest, UnknownTopicFollowsPolicy) {
  auto mock = NewMock();
  ASSERT_TRUE(mock);
  for (UnknownTopicPolicy policy :
       {UnknownTopicPolicy::kRetry, UnknownTopicPolicy::kFailPrecondition}) {
    const std::string topic = UniqueName("pub-unknown-topic");
    ASSERT_TRUE(mock->SetTopicError(topic, "UNKNOWN_TOPIC_OR_PART").ok());
    KafkaOptions options = TestPublisherOptions(mock->bootstrap_servers());
    options.unknown_topic = policy;
    // librdkafka waits this long for a new topic to appear before failing its messages.
    options.properties["topic.metadata.propagation.max.ms"] = "100";
    auto publisher = NewPublisher(options);
    ASSERT_TRUE(publisher);
    std::vector<Message> messages = {MakeMessage(topic, "k", 1)};
    const auto results = publisher->PublishBatch(Pointers(messages), 20s);
    EXPECT_EQ(results[0].status.code(), policy == UnknownTopicPolicy::kRetry
                                            ? StatusCode::kUnavailable
                                            : StatusCode::kFailedPrecondition)
        << results[0].status;
    EXPECT_NE(results[0].status.message().find("UNKNOWN_TOPIC"), std::string::npos)
        << results[0].status;
  }
}

TEST(KafkaPublisherTest, FatalIdempotenceErrorRecreatesTheProducer) {
  auto mock = NewMock();
  ASSERT_TRUE(mock);
  const std::string topic = UniqueName("pub-fatal");
  auto publisher = NewPublisher(TestPublisherOptions(mock->bootstrap_servers()));
  ASSERT_TRUE(publisher);
  std::vector<Message> warmup = {MakeMessage(topic, "k", 1)};
  ASSERT_TRUE(publisher->PublishBatch(Pointers(warmup), 10s)[0].status.ok());
  // A sequence gap the broker reports is fatal for an idempotent producer.
  ASSERT_TRUE(
      mock->PushRequestErrors(KafkaApiKey::kProduce, 1, "OUT_OF_ORDER_SEQUENCE_NUMBER").ok());
  std::vector<Message> messages = {MakeMessage(topic, "k", 2), MakeMessage(topic, "k", 3)};
  for (const auto& r : publisher->PublishBatch(Pointers(messages), 10s)) {
    EXPECT_EQ(r.status.code(), StatusCode::kDeadlineExceeded) << r.status;
  }
  // Not wedged: the next batch goes through a new producer.
  std::vector<Message> next = {MakeMessage(topic, "k", 4)};
  const auto results = publisher->PublishBatch(Pointers(next), 10s);
  EXPECT_TRUE(results[0].status.ok()) << results[0].status;
  EXPECT_TRUE(publisher->CheckConnected(5s).ok());
}

TEST(KafkaPublisherTest, RefusedMessageHoldsBackLaterMessagesOfItsKey) {
  auto mock = NewMock();
  ASSERT_TRUE(mock);
  const std::string topic = UniqueName("pub-held-back");
  KafkaOptions options = TestPublisherOptions(mock->bootstrap_servers());
  options.properties["queue.buffering.max.messages"] = "1";
  auto publisher = NewPublisher(options);
  ASSERT_TRUE(publisher);
  ASSERT_TRUE(mock->SetBrokerDown(-1).ok());
  std::vector<Message> messages = {MakeMessage(topic, "a", 1), MakeMessage(topic, "a", 2),
                                   MakeMessage(topic, "a", 3), MakeMessage(topic, "b", 1)};
  const auto results = publisher->PublishBatch(Pointers(messages), 1s);
  EXPECT_EQ(results[0].status.code(), StatusCode::kDeadlineExceeded) << results[0].status;
  EXPECT_EQ(results[1].status.code(), StatusCode::kUnavailable) << results[1].status;
  EXPECT_NE(results[1].status.message().find("QUEUE_FULL"), std::string::npos);
  EXPECT_EQ(results[2].status.code(), StatusCode::kUnavailable) << results[2].status;
  EXPECT_NE(results[2].status.message().find("same topic and key"), std::string::npos);
  EXPECT_EQ(results[3].status.code(), StatusCode::kUnavailable) << results[3].status;
  publisher->Close(0ms);
}

TEST(KafkaPublisherTest, CloseFromAnotherThreadInterruptsAWait) {
  auto mock = NewMock();
  ASSERT_TRUE(mock);
  const std::string topic = UniqueName("pub-close");
  auto publisher = NewPublisher(TestPublisherOptions(mock->bootstrap_servers()));
  ASSERT_TRUE(publisher);
  ASSERT_TRUE(mock->SetBrokerDown(-1).ok());
  std::vector<Message> messages = {MakeMessage(topic, "k", 1)};
  std::vector<DeliveryResult> results;
  const auto start = std::chrono::steady_clock::now();
  std::thread publishing([&] { results = publisher->PublishBatch(Pointers(messages), 60s); });
  std::this_thread::sleep_for(300ms);
  publisher->Close(100ms);
  publishing.join();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_TRUE(results[0].status.IsRetriable()) << results[0].status;
  EXPECT_EQ(publisher->PublishBatch(Pointers(messages), 1s)[0].status.code(),
            StatusCode::kUnavailable);
}

TEST(KafkaPublisherTest, CheckConnectedFailsWithinTimeoutWhenNothingListens) {
  auto publisher = NewPublisher(TestPublisherOptions("127.0.0.1:1"));
  ASSERT_TRUE(publisher);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(publisher->CheckConnected(500ms).code(), StatusCode::kUnavailable);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
}

}  // namespace
}  // namespace converge::broker
