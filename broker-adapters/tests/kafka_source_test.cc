// KafkaSource (consumer group) against librdkafka's mock cluster.
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <mutex>
#include <set>

#include "converge/broker/kafka.h"
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

// Records the callbacks and answers OnAssigned from `start_offsets`.
class RecordingListener : public AssignmentListener {
 public:
  std::map<TopicPartition, int64_t> OnAssigned(
      const std::vector<TopicPartition>& partitions) override {
    std::map<TopicPartition, int64_t> out;
    for (const TopicPartition& tp : partitions) {
      owned.insert(tp);
      if (auto it = start_offsets.find(tp); it != start_offsets.end()) out[tp] = it->second;
    }
    ++assigned_calls;
    return out;
  }
  void OnRevoked(const std::vector<TopicPartition>& partitions) override {
    for (const TopicPartition& tp : partitions) owned.erase(tp);
    ++revoked_calls;
  }

  std::map<TopicPartition, int64_t> start_offsets;
  std::set<TopicPartition> owned;
  int assigned_calls = 0;
  int revoked_calls = 0;
};

// Publishes `count` messages spread over four keys and returns them.
std::vector<Message> Publish(const std::string& bootstrap, const std::string& topic, int count) {
  std::vector<Message> messages;
  for (int i = 0; i < count; ++i) {
    messages.push_back(MakeMessage(topic, "key-" + std::to_string(i % 4), i / 4 + 1));
  }
  auto publisher = MakeKafkaPublisher(TestPublisherOptions(bootstrap));
  EXPECT_TRUE(publisher.ok()) << publisher.status();
  if (!publisher.ok()) return {};
  for (const auto& r : (*publisher)->PublishBatch(Pointers(messages), 30s)) {
    EXPECT_TRUE(r.status.ok()) << r.status;
  }
  return messages;
}

std::unique_ptr<MessageSource> NewSource(const std::string& bootstrap, const std::string& group,
                                         const std::string& strategy = "range,roundrobin") {
  KafkaSourceOptions o;
  o.bootstrap_servers = bootstrap;
  o.group_id = group;
  o.session_timeout = 6000ms;
  o.assignment_strategy = strategy;
  auto s = MakeKafkaSource(o);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(s).value() : nullptr;
}

// Polls until `want` records arrived or `within` passed.
std::vector<ReceivedRecord> PollFor(MessageSource& source, size_t want,
                                    std::chrono::steady_clock::duration within) {
  std::vector<ReceivedRecord> all;
  const auto deadline = std::chrono::steady_clock::now() + within;
  while (all.size() < want && std::chrono::steady_clock::now() < deadline) {
    auto batch = source.Poll(want - all.size(), 200ms);
    if (!batch.ok()) continue;  // transient (e.g. coordinator not ready yet)
    for (ReceivedRecord& r : *batch) all.push_back(std::move(r));
  }
  return all;
}

void ExpectAllOnce(const std::vector<ReceivedRecord>& records, const std::vector<Message>& sent) {
  std::set<std::string> want, got;
  for (const Message& m : sent) want.insert(m.id);
  for (const ReceivedRecord& r : records) {
    EXPECT_TRUE(got.insert(HeaderValue(r, "ce_id")).second) << "duplicate";
  }
  EXPECT_EQ(got, want);
}

void RunSubscribePollSeek(const std::string& strategy) {
  const std::string bootstrap = SharedBootstrap();
  const std::string topic = UniqueName("src-basic");
  const std::vector<Message> sent = Publish(bootstrap, topic, 24);
  ASSERT_EQ(sent.size(), 24u);

  RecordingListener listener;
  auto source = NewSource(bootstrap, UniqueName("group"), strategy);
  ASSERT_TRUE(source);
  ASSERT_TRUE(source->Subscribe({topic}, &listener).ok());
  const auto records = PollFor(*source, sent.size(), 30s);
  ExpectAllOnce(records, sent);
  EXPECT_GE(listener.assigned_calls, 1);
  EXPECT_EQ(listener.owned.size(), 4u) << "auto-created topics have 4 partitions";
  for (const ReceivedRecord& r : records) {
    EXPECT_EQ(r.topic, topic);
    ASSERT_TRUE(r.key.has_value());
    EXPECT_EQ(HeaderValue(r, "ce_subject"), *r.key);
    EXPECT_EQ(HeaderValue(r, "content-type"), "application/json");
    EXPECT_NE(r.ack_token, 0u);
    EXPECT_GT(r.broker_time.time_since_epoch().count(), 0);
  }
  source->Ack(records);

  // Rewind one partition to its first record: exactly that partition's records come again.
  ASSERT_FALSE(records.empty());
  const ReceivedRecord& first = records.front();
  size_t in_partition = 0;
  for (const ReceivedRecord& r : records) in_partition += r.partition == first.partition;
  ASSERT_TRUE(source->Seek({first.topic, first.partition}, first.offset).ok());
  const auto again = PollFor(*source, in_partition, 20s);
  ASSERT_EQ(again.size(), in_partition);
  for (const ReceivedRecord& r : again) EXPECT_EQ(r.partition, first.partition);
  EXPECT_EQ(again.front().offset, first.offset);
  EXPECT_TRUE(source->Poll(10, 500ms)->empty()) << "nothing else was rewound";

  EXPECT_EQ(source->Seek({topic, 99}, 0).code(), StatusCode::kFailedPrecondition);
  source->Close();
  EXPECT_TRUE(listener.owned.empty()) << "Close revokes every partition";
}

TEST(KafkaSourceTest, SubscribePollAndSeekEager) { RunSubscribePollSeek("range,roundrobin"); }

TEST(KafkaSourceTest, SubscribePollAndSeekCooperativeSticky) {
  RunSubscribePollSeek("cooperative-sticky");
}

TEST(KafkaSourceTest, StartsFromTheOffsetsTheListenerReturns) {
  const std::string bootstrap = SharedBootstrap();
  const std::string topic = UniqueName("src-offsets");
  const std::vector<Message> sent = Publish(bootstrap, topic, 40);
  ASSERT_EQ(sent.size(), 40u);

  // First read everything to learn how records spread over partitions.
  RecordingListener reader_listener;
  auto reader = NewSource(bootstrap, UniqueName("group"));
  ASSERT_TRUE(reader->Subscribe({topic}, &reader_listener).ok());
  const auto all = PollFor(*reader, sent.size(), 30s);
  ASSERT_EQ(all.size(), sent.size());
  reader->Close();
  std::map<int32_t, int64_t> end_of;
  for (const ReceivedRecord& r : all)
    end_of[r.partition] = std::max(end_of[r.partition], r.offset + 1);

  // A new member whose "database" says: partition p is done up to end-2.
  RecordingListener listener;
  size_t expected = 0;
  for (const auto& [p, end] : end_of) {
    const int64_t start = std::max<int64_t>(0, end - 2);
    listener.start_offsets[{topic, p}] = start;
    expected += static_cast<size_t>(end - start);
  }
  auto source = NewSource(bootstrap, UniqueName("group"));
  ASSERT_TRUE(source->Subscribe({topic}, &listener).ok());
  auto tail = PollFor(*source, expected, 30s);
  for (ReceivedRecord& r : PollFor(*source, 1, 1s)) tail.push_back(std::move(r));  // no more
  EXPECT_EQ(tail.size(), expected);
  for (const ReceivedRecord& r : tail) {
    EXPECT_GE(r.offset, (listener.start_offsets[TopicPartition{topic, r.partition}]));
  }
  source->Close();
}

TEST(KafkaSourceTest, SecondMemberTriggersRevokeAndSplitsPartitions) {
  const std::string bootstrap = SharedBootstrap();
  const std::string topic = UniqueName("src-rebalance");
  const std::string group = UniqueName("group");
  ASSERT_EQ(Publish(bootstrap, topic, 8).size(), 8u);

  RecordingListener first_listener, second_listener;
  auto first = NewSource(bootstrap, group);
  ASSERT_TRUE(first->Subscribe({topic}, &first_listener).ok());
  const auto deadline1 = std::chrono::steady_clock::now() + 20s;
  while (first_listener.owned.size() < 4 && std::chrono::steady_clock::now() < deadline1) {
    (void)first->Poll(100, 100ms);
  }
  ASSERT_EQ(first_listener.owned.size(), 4u);

  auto second = NewSource(bootstrap, group);
  ASSERT_TRUE(second->Subscribe({topic}, &second_listener).ok());
  const auto deadline2 = std::chrono::steady_clock::now() + 40s;
  while ((second_listener.owned.empty() ||
          first_listener.owned.size() + second_listener.owned.size() != 4) &&
         std::chrono::steady_clock::now() < deadline2) {
    (void)first->Poll(100, 100ms);
    (void)second->Poll(100, 100ms);
  }
  EXPECT_GE(first_listener.revoked_calls, 1);
  EXPECT_FALSE(second_listener.owned.empty());
  EXPECT_FALSE(first_listener.owned.empty());
  EXPECT_EQ(first_listener.owned.size() + second_listener.owned.size(), 4u);
  for (const TopicPartition& tp : first_listener.owned) {
    EXPECT_FALSE(second_listener.owned.contains(tp)) << "partition owned twice";
  }
  second->Close();
  first->Close();
}

}  // namespace
}  // namespace converge::broker
