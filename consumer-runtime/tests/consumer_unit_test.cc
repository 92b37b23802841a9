// Unit tests: no services. The engine's SQL paths are covered by consumer_integration_test.
#include <gtest/gtest.h>

#include "converge/consumer/consumer.h"
#include "converge/consumer/testing/fake_source.h"
#include "sequence.h"
#include "text.h"

namespace converge::consumer {
namespace {

using internal::DecideSequence;
using internal::SeqVerdict;

ConsumerOptions ValidOptions() {
  ConsumerOptions o;
  o.group = "g";
  o.topics = {"orders"};
  o.database_url = "postgresql://localhost/x";
  return o;
}

TEST(ConsumerOptionsTest, DefaultsWithRequiredFieldsAreValid) {
  EXPECT_TRUE(ValidOptions().Validate().ok());
}

TEST(ConsumerOptionsTest, ValidateNamesTheBadField) {
  struct Case {
    void (*mutate)(ConsumerOptions&);
    const char* field;
  } cases[] = {
      {[](ConsumerOptions& o) { o.group.clear(); }, "consumer.group"},
      {[](ConsumerOptions& o) { o.topics.clear(); }, "consumer.topics"},
      {[](ConsumerOptions& o) { o.topics = {""}; }, "consumer.topics"},
      {[](ConsumerOptions& o) { o.database_url.clear(); }, "consumer.database_url"},
      {[](ConsumerOptions& o) { o.max_batch_records = 0; }, "consumer.max_batch_records"},
      {[](ConsumerOptions& o) { o.max_attempts = 0; }, "consumer.max_attempts"},
      {[](ConsumerOptions& o) { o.retry_backoff.multiplier = 0.5; }, "consumer.retry_backoff"},
      {[](ConsumerOptions& o) { o.prune_batch = 0; }, "consumer.prune_batch"},
      {[](ConsumerOptions& o) { o.linger = std::chrono::milliseconds(-1); }, "consumer.linger"},
  };
  for (const auto& c : cases) {
    ConsumerOptions o = ValidOptions();
    c.mutate(o);
    Status st = o.Validate();
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << c.field;
    EXPECT_NE(st.message().find(c.field), std::string::npos) << st.message();
  }
}

TEST(SequencePolicyTest, UncheckedAndInOrder) {
  for (auto p : {SequencePolicy::kApply, SequencePolicy::kSkipStale, SequencePolicy::kHold}) {
    EXPECT_EQ(DecideSequence(p, std::nullopt, 7, false), SeqVerdict::kInOrder);  // first seen
    EXPECT_EQ(DecideSequence(p, 3, 0, false), SeqVerdict::kInOrder);             // no sequence
    EXPECT_EQ(DecideSequence(p, 3, 4, false), SeqVerdict::kInOrder);
  }
}

TEST(SequencePolicyTest, StaleSequence) {
  EXPECT_EQ(DecideSequence(SequencePolicy::kApply, 5, 5, false), SeqVerdict::kStaleApply);
  EXPECT_EQ(DecideSequence(SequencePolicy::kApply, 5, 2, false), SeqVerdict::kStaleApply);
  EXPECT_EQ(DecideSequence(SequencePolicy::kSkipStale, 5, 5, false), SeqVerdict::kStaleSkip);
  EXPECT_EQ(DecideSequence(SequencePolicy::kSkipStale, 5, 1, false), SeqVerdict::kStaleSkip);
  EXPECT_EQ(DecideSequence(SequencePolicy::kHold, 5, 4, false), SeqVerdict::kStaleSkip);
}

TEST(SequencePolicyTest, Gap) {
  EXPECT_EQ(DecideSequence(SequencePolicy::kApply, 5, 7, false), SeqVerdict::kGapApply);
  EXPECT_EQ(DecideSequence(SequencePolicy::kSkipStale, 5, 7, false), SeqVerdict::kGapApply);
  EXPECT_EQ(DecideSequence(SequencePolicy::kHold, 5, 7, false), SeqVerdict::kGapHold);
  // The hold ends: the missing message is presumed lost and the partition moves on.
  EXPECT_EQ(DecideSequence(SequencePolicy::kHold, 5, 7, true), SeqVerdict::kGapApply);
}

TEST(SequencePolicyTest, DefaultIsSkipStale) {
  EXPECT_EQ(ConsumerOptions{}.sequence_policy, SequencePolicy::kSkipStale);
  EXPECT_EQ(ConsumerOptions{}.unknown_type, UnknownTypePolicy::kDeadLetter);
}

TEST(SafeTextTest, KeepsValidUtf8AndReplacesBadBytes) {
  EXPECT_EQ(internal::SafeText("héllo"), "héllo");
  EXPECT_EQ(internal::SafeText(std::string("a\0b", 3)),
            "a\xEF\xBF\xBD"
            "b");
  EXPECT_EQ(internal::SafeText("a\xFF"
                               "b"),
            "a\xEF\xBF\xBD"
            "b");
}

TEST(HeadersJsonTest, EscapesAndSanitizes) {
  EXPECT_EQ(internal::HeadersJson({}), "{}");
  EXPECT_EQ(internal::HeadersJson({{"ce_id", "x\"y"}, {"t", "a\nb\x01"}}),
            "{\"ce_id\":\"x\\\"y\",\"t\":\"a\\nb\\u0001\"}");
  EXPECT_EQ(internal::HeadersJson({{"k", std::string("\0", 1)}}), "{\"k\":\"\xEF\xBF\xBD\"}");
}

TEST(DecodeRecordTest, DecodesKafkaBinaryMode) {
  broker::ReceivedRecord r;
  r.topic = "orders";
  r.payload = "{}";
  r.headers = {{"ce_specversion", "1.0"}, {"ce_id", "0190a0a0-0000-7000-8000-000000000001"},
               {"ce_source", "/orders"},  {"ce_type", "order.placed"},
               {"ce_subject", "o-1"},     {"ce_keyseq", "3"}};
  auto m = DecodeRecord(r);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->type, "order.placed");
  EXPECT_EQ(m->sequence, 3);
  EXPECT_EQ(m->subject, "o-1");
  r.headers.erase(r.headers.begin() + 1);  // no ce_id
  EXPECT_EQ(DecodeRecord(r).status().code(), StatusCode::kInvalidArgument);
}

TEST(FakeSourceTest, RebalanceSeeksToReturnedOffsets) {
  class Listener : public broker::AssignmentListener {
   public:
    std::map<broker::TopicPartition, int64_t> OnAssigned(
        const std::vector<broker::TopicPartition>& tps) override {
      return {{tps[0], 2}};
    }
    void OnRevoked(const std::vector<broker::TopicPartition>&) override { ++revoked; }
    int revoked = 0;
  } listener;
  testing::FakeSource src;
  for (int i = 0; i < 4; ++i) src.Produce("t", 0, "p" + std::to_string(i), {});
  ASSERT_TRUE(src.Subscribe({"t"}, &listener).ok());
  src.Rebalance({}, {{"t", 0}});
  auto recs = src.Poll(10, std::chrono::milliseconds(0));
  ASSERT_TRUE(recs.ok());
  ASSERT_EQ(recs->size(), 2u);
  EXPECT_EQ((*recs)[0].offset, 2);
  src.Close();
  EXPECT_EQ(listener.revoked, 1);
}

}  // namespace
}  // namespace converge::consumer
