// Flows end to end over Kafka (librdkafka's mock cluster, in-process): the order service starts
// flows, the relay publishes their commands, a services consumer applies them and replies, the
// order service's consumer advances the flows in its handler transaction, and the reconciler
// runs on its own thread. 1% of 100 flows lose their "pay" reply once (re-emission completes
// it), 1% lose it always (it compensates). Every flow ends completed XOR compensated, and
// the services applied each step's effect once although commands were re-emitted.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <set>
#include <thread>

#include "converge/broker/kafka.h"
#include "converge/broker/kafka_mock.h"
#include "converge/consumer/consumer.h"
#include "converge/outbox/relay.h"
#include "converge/reconciler/flow.h"
#include "converge/reconciler/reconciler.h"
#include "converge/testing/pg_fixture.h"

namespace converge::flows {
namespace {

using namespace std::chrono_literals;

class FlowKafkaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(db_.ok());
    db_.Scalar("ALTER DATABASE \"" + db_.name() + "\" SET synchronous_commit = off");
    // The services' own tables: effects keyed by the flow step key (idempotent per step).
    db_.Scalar("CREATE TABLE effects (step_key uuid PRIMARY KEY, kind text, flow_id uuid)");
    auto cluster = broker::KafkaMockCluster::Start(1);
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = std::move(cluster).value();
    for (const char* t : {"stock", "payments", "order-replies"})
      ASSERT_TRUE(cluster_->CreateTopic(t, 2, 1).ok());
  }

  std::unique_ptr<consumer::Consumer> NewConsumer(const std::string& group,
                                                  std::vector<std::string> topics) {
    broker::KafkaSourceOptions so;
    so.bootstrap_servers = cluster_->bootstrap_servers();
    so.group_id = group;
    auto src = broker::MakeKafkaSource(so);
    EXPECT_TRUE(src.ok()) << src.status();
    consumer::ConsumerOptions o;
    o.group = group;
    o.topics = std::move(topics);
    o.database_url = db_.url();
    o.poll_timeout = 50ms;
    o.retry_backoff = {5ms, 50ms, 2.0, 0.0};
    return std::make_unique<consumer::Consumer>(o, std::move(src).value());
  }

  converge::testing::TestDatabase db_;
  std::unique_ptr<broker::KafkaMockCluster> cluster_;
};

TEST_F(FlowKafkaTest, OnePercentDroppedRepliesEndCompletedXorCompensatedOverKafka) {
  FlowType order;
  order.name = "order";
  order.steps.push_back({.name = "reserve",
                         .command = {"stock", "stock.reserve"},
                         .reply_type = "stock.reserved",
                         .compensation = MessageRoute{"stock", "stock.release"},
                         .deadline = 4s,
                         .max_attempts = 3});
  order.steps.push_back({.name = "pay",
                         .command = {"payments", "payment.charge"},
                         .reply_type = "payment.charged",
                         .compensation = MessageRoute{"payments", "payment.refund"},
                         .deadline = 4s,
                         .max_attempts = 3});
  order.compensation_deadline = 5s;
  constexpr int kFlows = 100;
  // Flow 7 loses its first "pay" reply, flow 57 every "pay" reply (filled in once the flows
  // exist; the handlers read these sets under mu).
  std::mutex mu;
  std::set<std::string> drop_once, drop_always, dropped_once;  // guarded by mu

  // The stock and payment services: apply the command once per step key, reply (copying the
  // flow headers) in the same transaction.
  auto services = NewConsumer("services", {"stock", "payments"});
  auto serve = [&](const std::string& reply_type, bool is_pay) {
    return [&, reply_type, is_pay](const Message& m, consumer::Context& ctx) -> Status {
      CONVERGE_ASSIGN_OR_RETURN(FlowRef ref, RefFromHeaders(m.headers));
      ctx.tx().exec_params(
          "INSERT INTO effects VALUES ($1::uuid, $2, $3::uuid) ON CONFLICT DO NOTHING",
          ref.step_key, m.type, ref.flow_id.value);
      if (is_pay && ref.kind == "command") {
        std::lock_guard<std::mutex> lock(mu);
        if (drop_always.count(ref.flow_id.value)) return Status::Ok();
        if (drop_once.count(ref.flow_id.value) && dropped_once.insert(ref.flow_id.value).second)
          return Status::Ok();
      }
      return ctx
          .Enqueue({.topic = "order-replies",
                    .key = m.subject,
                    .type = reply_type,
                    .payload = "{}",
                    .headers = {{"converge-flow-id", ref.flow_id.value},
                                {"converge-flow-step", std::to_string(ref.step)}}})
          .status();
    };
  };
  services->Handle("stock.reserve", serve("stock.reserved", false));
  services->Handle("payment.charge", serve("payment.charged", true));
  services->Handle("stock.release", serve("stock.released", false));
  services->Handle("payment.refund", serve("payment.refunded", false));

  // The order service: replies advance the flows inside the handler's transaction.
  auto orders = NewConsumer("orders", {"order-replies"});
  auto complete = [](const Message& m, consumer::Context& ctx) -> Status {
    CONVERGE_ASSIGN_OR_RETURN(FlowRef ref, RefFromHeaders(m.headers));
    return CompleteStep(ctx.tx(), ref.flow_id, ref.step).status();
  };
  auto compensated = [](const Message& m, consumer::Context& ctx) -> Status {
    CONVERGE_ASSIGN_OR_RETURN(FlowRef ref, RefFromHeaders(m.headers));
    return CompensationDone(ctx.tx(), ref.flow_id, ref.step).status();
  };
  orders->Handle("stock.reserved", complete);
  orders->Handle("payment.charged", complete);
  orders->Handle("stock.released", compensated);
  orders->Handle("payment.refunded", compensated);

  outbox::RelayOptions ro;
  ro.database_url = db_.url();
  ro.poll_interval = 50ms;
  broker::KafkaOptions ko;
  ko.bootstrap_servers = cluster_->bootstrap_servers();
  ko.message_timeout = 10s;
  auto publisher = broker::MakeKafkaPublisher(ko);
  ASSERT_TRUE(publisher.ok()) << publisher.status();
  outbox::Relay relay(ro, std::move(publisher).value());

  reconciler::ReconcilerOptions rco;
  rco.database_url = db_.url();
  rco.poll_interval = 100ms;
  reconciler::Reconciler rec(rco);

  ASSERT_TRUE(services->Start().ok());
  ASSERT_TRUE(orders->Start().ok());
  std::thread relay_thread([&] { EXPECT_TRUE(relay.Run().ok()); });
  std::thread rec_thread([&] { EXPECT_TRUE(rec.Run().ok()); });
  // Flows start once both groups own their partitions (a group join takes a few seconds).
  for (int i = 0; i < 300 && db_.Count("SELECT count(*) FROM converge.consumer_offsets WHERE "
                                       "owner IS NOT NULL") < 6;
       ++i)
    std::this_thread::sleep_for(100ms);
  std::vector<FlowId> ids;
  {
    auto c = db_.Connect();
    pqxx::work tx(*c);
    EXPECT_TRUE(Register(tx, order).ok());
    for (int i = 0; i < kFlows; ++i) {
      auto id = Start(tx, "order", "order-" + std::to_string(i), R"({"total":1})");
      EXPECT_TRUE(id.ok()) << id.status();
      if (id.ok()) ids.push_back(*id);
    }
    tx.commit();
  }
  EXPECT_EQ(ids.size(), size_t(kFlows));
  if (ids.size() == size_t(kFlows)) {
    std::lock_guard<std::mutex> lock(mu);
    drop_once.insert(ids[7].value);
    drop_always.insert(ids[57].value);
  }
  auto open = [&] {
    return db_.Count(
        "SELECT count(*) FROM converge.flows WHERE state NOT IN ('completed', 'compensated')");
  };
  const auto end = std::chrono::steady_clock::now() + 90s;
  while (open() > 0 && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(100ms);
  rec.Stop();
  relay.Stop();
  rec_thread.join();
  relay_thread.join();
  services->Stop();
  orders->Stop();

  EXPECT_EQ(open(), 0);
  EXPECT_EQ(db_.Count("SELECT count(*) FROM converge.flows WHERE state = 'completed'"), kFlows - 1);
  for (const auto& id : drop_always) {
    EXPECT_EQ(db_.Scalar("SELECT state FROM converge.flows WHERE flow_id = '" + id + "'"),
              "compensated");
    // Both steps were undone once: the refund of the unanswered payment and the release.
    EXPECT_EQ(db_.Count("SELECT count(*) FROM effects WHERE kind IN ('payment.refund', "
                        "'stock.release') AND flow_id = '" +
                        id + "'"),
              2);
  }
  for (const auto& id : drop_once) {
    EXPECT_EQ(db_.Scalar("SELECT state FROM converge.flows WHERE flow_id = '" + id + "'"),
              "completed");
    EXPECT_GE(db_.Count("SELECT count(*) FROM converge.flow_history WHERE event = 'reemitted' "
                        "AND flow_id = '" +
                        id + "'"),
              1);
  }
  // Each step's effect applied once per flow, whatever the number of attempts.
  EXPECT_EQ(db_.Count("SELECT count(*) FROM effects WHERE kind = 'stock.reserve'"), kFlows);
  EXPECT_EQ(db_.Count("SELECT count(*) FROM effects WHERE kind = 'payment.charge'"), kFlows);
  EXPECT_EQ(db_.Count("SELECT count(*) FROM effects WHERE kind IN ('payment.refund', "
                      "'stock.release')"),
            2);
  EXPECT_EQ(db_.Count("SELECT count(*) FROM converge.flows f WHERE state = 'completed' AND "
                      "compensation_started_at IS NOT NULL"),
            0);
}

}  // namespace
}  // namespace converge::flows
