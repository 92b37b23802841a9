// Integration tests with real PostgreSQL and Kafka (librdkafka's in-process mock cluster, a new
// one per test so fault injection never disturbs other tests): the runtime with the real
// KafkaSource. Checks: lost 0, effects applied twice 0, stored offsets never decrease.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "converge/broker/kafka.h"
#include "converge/broker/kafka_mock.h"
#include "converge/common/uuid.h"
#include "converge/consumer/consumer.h"
#include "converge/testing/pg_fixture.h"

namespace converge::consumer {
namespace {

using namespace std::chrono_literals;

// Forwards to a real source but never commits to Kafka: the broker's committed position stays
// at the start, as after a crash between the PostgreSQL COMMIT and the Kafka commit.
class NoAckSource final : public broker::MessageSource {
 public:
  explicit NoAckSource(std::unique_ptr<broker::MessageSource> inner) : inner_(std::move(inner)) {}
  Status Subscribe(const std::vector<std::string>& t, broker::AssignmentListener* l) override {
    return inner_->Subscribe(t, l);
  }
  Result<std::vector<broker::ReceivedRecord>> Poll(size_t n, std::chrono::milliseconds t) override {
    return inner_->Poll(n, t);
  }
  void Ack(const std::vector<broker::ReceivedRecord>&) override {}
  Status Seek(const broker::TopicPartition& tp, int64_t o) override { return inner_->Seek(tp, o); }
  void Close() override { inner_->Close(); }

 private:
  std::unique_ptr<broker::MessageSource> inner_;
};

class ConsumerKafkaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(db_.ok());
    db_.Scalar("CREATE TABLE effects (id text NOT NULL, payload text)");
    auto cluster = broker::KafkaMockCluster::Start(1);
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = std::move(cluster).value();
    ASSERT_TRUE(cluster_->CreateTopic("orders", 4, 1).ok());
    broker::KafkaOptions po;
    po.bootstrap_servers = cluster_->bootstrap_servers();
    po.message_timeout = 10s;
    auto pub = broker::MakeKafkaPublisher(po);
    ASSERT_TRUE(pub.ok()) << pub.status();
    publisher_ = std::move(pub).value();
  }
  void TearDown() override {
    if (publisher_) publisher_->Close(5s);
  }

  Message Make(const std::string& type = "order.placed") {
    Message m;
    m.id = NewUuidV7().ToString();
    m.source = "/test";
    m.type = type;
    m.topic = "orders";
    m.subject = "k" + std::to_string(next_key_++ % 16);
    m.payload = "{\"n\":" + std::to_string(next_key_) + "}";
    return m;
  }
  void Publish(const std::vector<Message>& messages) {
    std::vector<const Message*> ptrs;
    for (const auto& m : messages) ptrs.push_back(&m);
    for (const auto& r : publisher_->PublishBatch(ptrs, 30s))
      ASSERT_TRUE(r.status.ok()) << r.status;
  }

  std::unique_ptr<broker::MessageSource> Source(std::chrono::milliseconds session = 6000ms) {
    broker::KafkaSourceOptions o;
    o.bootstrap_servers = cluster_->bootstrap_servers();
    o.group_id = "g1";
    o.session_timeout = session;
    // A rejoin waits for every member up to the rebalance timeout (max.poll.interval.ms,
    // 300 s by default): bound it, so that a slow (sanitizer) build cannot stall a rebalance
    // for minutes.
    o.properties["max.poll.interval.ms"] = "20000";
    auto s = broker::MakeKafkaSource(o);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(s).value() : nullptr;
  }
  ConsumerOptions Options(const std::string& member) {
    ConsumerOptions o;
    o.group = "g1";
    o.topics = {"orders"};
    o.database_url = db_.url();
    o.member_id = member;
    o.poll_timeout = 50ms;
    o.retry_backoff = {1ms, 5ms, 2.0, 0.0};
    o.reconnect_backoff = {10ms, 200ms, 2.0, 0.0};
    return o;
  }
  std::unique_ptr<Consumer> NewConsumer(const std::string& member,
                                        std::unique_ptr<broker::MessageSource> src) {
    auto c = std::make_unique<Consumer>(Options(member), std::move(src));
    c->Handle("order.placed", [](const Message& m, Context& ctx) {
      ctx.tx().exec_params("INSERT INTO effects (id, payload) VALUES ($1, $2)", m.id, m.payload);
      return Status::Ok();
    });
    c->Handle("poison",
              [](const Message&, Context&) { return Status::FailedPrecondition("poison"); });
    return c;
  }
  bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds limit = 60s) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (!done() && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(20ms);
    return done();
  }
  long long Effects() { return db_.Count("SELECT count(*) FROM effects"); }
  long long Distinct() { return db_.Count("SELECT count(DISTINCT id) FROM effects"); }
  long long StoredTotal() {
    return db_.Count("SELECT coalesce(sum(next_offset), 0) FROM converge.consumer_offsets");
  }

  converge::testing::TestDatabase db_;
  std::unique_ptr<broker::KafkaMockCluster> cluster_;
  std::unique_ptr<broker::Publisher> publisher_;
  int next_key_ = 0;
};

// The relay published every message twice (e.g. a publish timeout that had in fact succeeded).
TEST_F(ConsumerKafkaTest, MessagesProducedTwiceAreAppliedOnce) {
  std::vector<Message> msgs;
  for (int i = 0; i < 200; ++i) msgs.push_back(Make());
  Publish(msgs);
  Publish(std::vector<Message>(msgs.begin(), msgs.begin() + 80));
  auto c = NewConsumer("m1", Source());
  ASSERT_TRUE(c->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return c->stats().consumed >= 280; })) << c->stats().consumed;
  c->Stop();
  EXPECT_EQ(Effects(), 200);
  EXPECT_EQ(Distinct(), 200);
  EXPECT_EQ(c->stats().duplicates_skipped, 80u);
  EXPECT_EQ(StoredTotal(), 280);
}

// The first incarnation commits to PostgreSQL but never to Kafka; the second one resumes from
// PostgreSQL's offsets: nothing is applied twice, nothing is lost.
TEST_F(ConsumerKafkaTest, RestartBeforeKafkaCommitAppliesOnce) {
  std::vector<Message> first;
  for (int i = 0; i < 100; ++i) first.push_back(Make());
  Publish(first);
  {
    auto c = NewConsumer("m1", std::make_unique<NoAckSource>(Source()));
    ASSERT_TRUE(c->Start().ok());
    ASSERT_TRUE(WaitFor([&] { return c->stats().consumed >= 100; }));
    c->Stop();
  }
  std::vector<Message> second;
  for (int i = 0; i < 50; ++i) second.push_back(Make());
  Publish(second);
  auto c = NewConsumer("m2", Source());
  ASSERT_TRUE(c->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return Effects() >= 150; }));
  std::this_thread::sleep_for(300ms);
  c->Stop();
  EXPECT_EQ(Effects(), 150);
  EXPECT_EQ(Distinct(), 150);
  EXPECT_EQ(c->stats().duplicates_skipped, 0u) << "resumed from PostgreSQL, not from Kafka";
  EXPECT_EQ(StoredTotal(), 150);
}

TEST_F(ConsumerKafkaTest, PoisonMessageIsDeadLetteredAndPartitionContinues) {
  std::vector<Message> msgs;
  for (int i = 0; i < 30; ++i) msgs.push_back(Make(i % 10 == 5 ? "poison" : "order.placed"));
  for (auto& m : msgs) m.subject = "same-key";  // one partition: later messages must pass it
  Publish(msgs);
  auto c = NewConsumer("m1", Source());
  ASSERT_TRUE(c->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return c->stats().consumed >= 30; }));
  c->Stop();
  EXPECT_EQ(Effects(), 27);
  EXPECT_EQ(db_.Count("SELECT count(*) FROM converge.dead_letters WHERE error_code = "
                      "'handler_failed' AND origin = 'consumer'"),
            3);
  EXPECT_EQ(StoredTotal(), 30);
}

// The stored offsets are ahead of the broker (the topic was recreated: the rows say 1000, the
// log has 40 records). Default policy: the partitions are halted — nothing applied, nothing
// skipped in silence, counted — and the stored offsets stay as they were.
TEST_F(ConsumerKafkaTest, StoredOffsetAheadOfTheBrokerHaltsThePartition) {
  for (int p = 0; p < 4; ++p)
    db_.Scalar(
        "INSERT INTO converge.consumer_offsets (consumer_group, topic, partition, "
        "next_offset) VALUES ('g1', 'orders', " +
        std::to_string(p) + ", 1000)");
  std::vector<Message> msgs;
  for (int i = 0; i < 40; ++i) msgs.push_back(Make());
  Publish(msgs);
  auto c = NewConsumer("m1", Source());
  ASSERT_TRUE(c->Start().ok());
  EXPECT_TRUE(WaitFor([&] { return c->stats().partitions_halted == 4; }));
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(c->stats().offsets_ahead, 4u);
  EXPECT_EQ(c->stats().consumed, 0u);
  c->Stop();
  EXPECT_EQ(Effects(), 0);
  EXPECT_EQ(StoredTotal(), 4000);
}

// on_offset_ahead = reset_to_earliest: the stored offsets are rewound and the new log consumed.
TEST_F(ConsumerKafkaTest, StoredOffsetAheadCanResetToEarliest) {
  for (int p = 0; p < 4; ++p)
    db_.Scalar(
        "INSERT INTO converge.consumer_offsets (consumer_group, topic, partition, "
        "next_offset) VALUES ('g1', 'orders', " +
        std::to_string(p) + ", 1000)");
  std::vector<Message> msgs;
  for (int i = 0; i < 40; ++i) msgs.push_back(Make());
  Publish(msgs);
  auto o = Options("m1");
  o.on_offset_ahead = OffsetAheadPolicy::kResetToEarliest;
  auto c = std::make_unique<Consumer>(o, Source());
  c->Handle("order.placed", [](const Message& m, Context& ctx) {
    ctx.tx().exec_params("INSERT INTO effects (id, payload) VALUES ($1, $2)", m.id, m.payload);
    return Status::Ok();
  });
  ASSERT_TRUE(c->Start().ok());
  EXPECT_TRUE(WaitFor([&] { return Effects() == 40; }));
  c->Stop();
  EXPECT_EQ(Distinct(), 40);
  EXPECT_EQ(StoredTotal(), 40);
  EXPECT_EQ(c->stats().partitions_halted, 0u);
  EXPECT_GE(c->stats().offsets_ahead, 1u);
}

// Rebalance: three members join and leave under load; one is paused (not polling) past the
// session timeout and then resumes. Every message is applied exactly once and no stored offset
// ever decreases (sampled throughout; the forward-only trigger would also refuse it).
TEST_F(ConsumerKafkaTest, RebalanceStormWithPausedMemberAppliesOnce) {
  std::atomic<bool> producing{true};
  std::atomic<int> produced{0};
  std::thread producer([&] {
    while (producing) {
      std::vector<Message> batch;
      for (int i = 0; i < 20; ++i) batch.push_back(Make());
      Publish(batch);
      produced += 20;
      std::this_thread::sleep_for(20ms);
    }
  });
  std::atomic<bool> sampling{true};
  std::atomic<bool> decreased{false};
  std::thread sampler([&] {
    auto conn = db_.Connect();
    std::map<int, long long> last;
    while (sampling) {
      pqxx::nontransaction nt(*conn);
      for (const auto& row :
           nt.exec("SELECT partition, next_offset FROM converge.consumer_offsets")) {
        const int p = row[0].as<int>();
        const long long o = row[1].as<long long>();
        if (o < last[p]) decreased = true;
        last[p] = o;
      }
      std::this_thread::sleep_for(10ms);
    }
  });

  auto a = NewConsumer("a", Source());
  ASSERT_TRUE(a->Start().ok());
  std::this_thread::sleep_for(1500ms);
  // b is driven by hand so it can be "paused": it stops polling past the session timeout.
  auto b = NewConsumer("b", Source(3000ms));
  ASSERT_TRUE(b->Init().ok());
  std::atomic<bool> b_paused{false}, b_run{true};
  std::thread tb([&] {
    while (b_run) {
      if (b_paused) {
        std::this_thread::sleep_for(10ms);
        continue;
      }
      EXPECT_TRUE(b->RunOnce().ok());
    }
  });
  std::this_thread::sleep_for(2000ms);
  auto c = NewConsumer("c", Source());
  ASSERT_TRUE(c->Start().ok());
  std::this_thread::sleep_for(1500ms);
  b_paused = true;  // a SIGSTOP-like stall: b keeps its buffered records and its (stale) epoch
  std::this_thread::sleep_for(5000ms);
  b_paused = false;  // b resumes; its commits for partitions moved away must be refused
  std::this_thread::sleep_for(2000ms);
  a->Stop();  // a leaves: another rebalance
  std::this_thread::sleep_for(2000ms);
  producing = false;
  producer.join();
  const long long want = produced.load();
  // Generous: on a loaded 2-core machine a rejoin can wait out a coordinator request timeout.
  EXPECT_TRUE(WaitFor([&] { return Distinct() >= want; }, 150s)) << Distinct() << " of " << want;
  b_run = false;
  tb.join();
  b->Stop();
  c->Stop();
  sampling = false;
  sampler.join();
  EXPECT_EQ(Distinct(), want) << "lost messages";
  EXPECT_EQ(Effects(), want) << "effects applied twice";
  EXPECT_FALSE(decreased) << "a stored offset moved backwards";
  EXPECT_EQ(StoredTotal(), want);
  std::cout << "fenced: a=" << a->stats().fenced << " b=" << b->stats().fenced
            << " c=" << c->stats().fenced << " duplicates skipped: "
            << a->stats().duplicates_skipped + b->stats().duplicates_skipped +
                   c->stats().duplicates_skipped
            << "\n";
}

}  // namespace
}  // namespace converge::consumer
