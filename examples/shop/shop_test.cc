// The shop example end to end, as the demo runs it but smaller: real PostgreSQL (a fresh
// database), a private Kafka mock cluster, converge-relay and converge-reconciler as processes,
// the three services in this process. The relay is killed with SIGKILL half-way and
// restarted; some stock commands are published twice. The test checks the report's invariants:
// every order ended completed XOR compensated, stock and money add up, nothing applied twice.
#include <signal.h>

#include <chrono>
#include <thread>

#include <gtest/gtest.h>

#include "converge/broker/kafka.h"
#include "converge/broker/kafka_admin.h"
#include "converge/broker/kafka_mock.h"
#include "converge/broker/mqtt.h"
#include "converge/consumer/consumer.h"
#include "converge/pubsub/devices.h"
#include "converge/testing/env.h"
#include "converge/testing/pg_fixture.h"
#include "converge/testing/process.h"
#include "shop.h"

namespace {

using namespace std::chrono_literals;
using converge::testing::ChildProcess;

std::unique_ptr<converge::consumer::Consumer> Service(const std::string& db,
                                                      const std::string& brokers,
                                                      const std::string& group,
                                                      const std::string& topic) {
  auto source = converge::broker::MakeKafkaSource(
      {.bootstrap_servers = brokers, .group_id = group, .session_timeout = 6000ms});
  EXPECT_TRUE(source.ok()) << source.status();
  converge::consumer::ConsumerOptions o;
  o.group = group;
  o.topics = {topic};
  o.database_url = db;
  o.poll_timeout = 50ms;
  return std::make_unique<converge::consumer::Consumer>(std::move(o), std::move(source).value());
}

// Short leases: the restarted relay takes the killed one's slots over within ~3 s (the default
// 40 s would outlast the flows' deadlines and compensate every order).
const std::vector<std::string> kRelayFlags = {"--metrics.port=0",
                                              "--relay.poll_interval=50ms",
                                              "--relay.lease_ttl=3s",
                                              "--relay.lease_renew_interval=500ms",
                                              "--relay.takeover_grace=200ms",
                                              "--relay.publish_timeout=1500ms",
                                              "--kafka.message.timeout.ms=1000"};

TEST(ShopTest, OrdersEndCompletedXorCompensatedAcrossARelayKill) {
  converge::testing::TestDatabase db;
  ASSERT_TRUE(db.ok());
  auto cluster = converge::broker::KafkaMockCluster::Start(1);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  const std::string brokers = (*cluster)->bootstrap_servers();
  for (const char* t : {shop::kStockTopic, shop::kPaymentsTopic, shop::kRepliesTopic})
    ASSERT_TRUE((*cluster)->CreateTopic(t, 2).ok());

  // 3 SKUs x 12 units against ~60 units of demand: some orders run out of stock.
  ASSERT_TRUE(shop::Setup(db.url(), 3, 12).ok());

  const std::map<std::string, std::string> env = {{"CONVERGE_PG_URL", db.url()},
                                                  {"CONVERGE_KAFKA_BROKERS", brokers}};
  const std::string bin = converge::testing::BinDir();
  const std::string log = ::testing::TempDir() + "shop_test_" + db.name() + ".log";
  ChildProcess relay, reconciler;
  ASSERT_TRUE(relay.Start(bin + "/converge-relay", kRelayFlags, env, log));
  ASSERT_TRUE(reconciler.Start(bin + "/converge-reconciler",
                               {"--metrics.port=0", "--reconciler.poll_interval=200ms"}, env, log));

  auto inventory = Service(db.url(), brokers, "shop-inventory", shop::kStockTopic);
  auto payments = Service(db.url(), brokers, "shop-payments", shop::kPaymentsTopic);
  auto orchestrator = Service(db.url(), brokers, "shop-orchestrator", shop::kRepliesTopic);
  shop::RegisterInventory(*inventory);
  shop::RegisterPayments(*payments);
  shop::RegisterOrchestrator(*orchestrator);
  ASSERT_TRUE(inventory->Start().ok());
  ASSERT_TRUE(payments->Start().ok());
  ASSERT_TRUE(orchestrator->Start().ok());

  std::thread placer([&] {
    shop::PlaceOptions o{.orders = 30, .rate = 60, .skus = 3, .decline_percent = 20, .seed = 7};
    auto placed = shop::PlaceOrders(db.url(), o);
    EXPECT_TRUE(placed.ok()) << placed.status();
  });
  std::this_thread::sleep_for(300ms);
  ASSERT_TRUE(relay.Running()) << "converge-relay exited; see " << log;
  ASSERT_TRUE(reconciler.Running()) << "converge-reconciler exited; see " << log;
  ASSERT_TRUE(shop::MarkNow(db.url(), "disruption_start").ok());
  ASSERT_TRUE(relay.Signal(SIGKILL));  // mid-stream: rows published but not deleted come again
  relay.Wait(5s);
  std::this_thread::sleep_for(300ms);
  ASSERT_TRUE(relay.Start(bin + "/converge-relay", kRelayFlags, env, log));
  placer.join();
  ASSERT_TRUE(shop::MarkNow(db.url(), "disruption_end").ok());

  // Publish some stock commands a second time, with their original ids.
  auto records = converge::broker::ReadAll(brokers, shop::kStockTopic, 10s);
  ASSERT_TRUE(records.ok()) << records.status();
  std::vector<converge::Message> copies;
  for (const auto& rec : *records) {
    if (copies.size() == 5) break;
    auto m = converge::consumer::DecodeRecord(rec);
    ASSERT_TRUE(m.ok()) << m.status();
    m->topic = rec.topic;
    copies.push_back(*m);
  }
  auto publisher = converge::broker::MakeKafkaPublisher({.bootstrap_servers = brokers});
  ASSERT_TRUE(publisher.ok());
  std::vector<const converge::Message*> ptrs;
  for (const auto& m : copies) ptrs.push_back(&m);
  for (const auto& r : (*publisher)->PublishBatch(ptrs, 10s)) ASSERT_TRUE(r.status.ok());

  shop::Report report;
  const auto deadline = std::chrono::steady_clock::now() + 120s;
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = shop::ReadReport(db.url());
    ASSERT_TRUE(r.ok()) << r.status();
    report = *r;
    if (report.placed == 30 && report.running == 0 && report.completed + report.compensated == 30 &&
        inventory->stats().duplicates_skipped >= copies.size())
      break;
    std::this_thread::sleep_for(200ms);
  }
  inventory->Stop();
  payments->Stop();
  orchestrator->Stop();
  relay.Signal(SIGTERM);
  reconciler.Signal(SIGTERM);
  EXPECT_EQ(relay.Wait(20s), 0);
  EXPECT_EQ(reconciler.Wait(20s), 0);

  std::cout << shop::FormatReport(report);
  SCOPED_TRACE(shop::FormatReport(report));
  EXPECT_EQ(report.placed, 30);
  EXPECT_EQ(report.completed + report.compensated, 30) << "an order did not finish";
  EXPECT_GT(report.completed, 0);
  EXPECT_GT(report.compensated, 0);
  // The latency is split at the marks around the kill: every completed order is in exactly one
  // of the two groups, and the report labels both.
  EXPECT_TRUE(report.has_window);
  EXPECT_GT(report.window_seconds, 0.3);
  EXPECT_EQ(report.latency.orders, report.completed);
  EXPECT_EQ(report.steady.orders + report.disrupted.orders, report.completed);
  EXPECT_NE(shop::FormatReport(report).find("relay kill window"), std::string::npos);
  EXPECT_GT(report.stock_outs + report.declined, 0);
  EXPECT_EQ(report.needs_attention, 0);
  EXPECT_EQ(report.stock_initial - report.stock_reserved_for_completed, report.stock_now);
  EXPECT_EQ(report.double_charges, 0);
  EXPECT_EQ(report.double_reservations, 0);
  EXPECT_EQ(report.net_charged_cents, report.completed_amount_cents);
  EXPECT_TRUE(report.consistent());
  EXPECT_GE(inventory->stats().duplicates_skipped, copies.size());
  // Every flow ended in exactly one of the two states, and a compensated order holds no stock.
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.flows f JOIN shop.reservations r ON "
                     "r.order_id = f.business_key WHERE f.state = 'compensated' AND r.state = "
                     "'reserved'"),
            0);
}

// Shipping over MQTT: the third step sends a deliver command to a simulated device through the
// outbox and converge-relay's MQTT target (the shared mosquitto of scripts/services.sh); the
// device's ack, ingested from MQTT by the consumer runtime, completes the flow.
TEST(ShopTest, ShippingCompletesOnDeviceAcksOverMqtt) {
  converge::testing::TestDatabase db;
  ASSERT_TRUE(db.ok());
  const std::string mqtt = converge::testing::RequireEnv("CONVERGE_MQTT_URL");
  ASSERT_FALSE(mqtt.empty());
  auto cluster = converge::broker::KafkaMockCluster::Start(1);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  const std::string brokers = (*cluster)->bootstrap_servers();
  for (const char* t :
       {shop::kStockTopic, shop::kPaymentsTopic, shop::kRepliesTopic, shop::kShippingTopic})
    ASSERT_TRUE((*cluster)->CreateTopic(t, 2).ok());
  ASSERT_TRUE(shop::Setup(db.url(), 2, 100, /*with_shipping=*/true).ok());

  // Device ids unique to this run: the broker is shared.
  const std::string prefix = "truck-" + std::to_string(::getpid()) + "-";
  const std::map<std::string, std::string> env = {{"CONVERGE_PG_URL", db.url()},
                                                  {"CONVERGE_KAFKA_BROKERS", brokers}};
  const std::string bin = converge::testing::BinDir();
  const std::string log = ::testing::TempDir() + "shop_ship_" + db.name() + ".log";
  std::vector<std::string> relay_flags = kRelayFlags;
  relay_flags.insert(relay_flags.end(),
                     {"--relay.target=both", "--mqtt.url=" + mqtt, "--mqtt.topics=devices/#",
                      "--mqtt.client_id=shop-test-relay-" + prefix});
  ChildProcess relay, reconciler, devices;
  ASSERT_TRUE(relay.Start(bin + "/converge-relay", relay_flags, env, log));
  ASSERT_TRUE(reconciler.Start(bin + "/converge-reconciler",
                               {"--metrics.port=0", "--reconciler.poll_interval=200ms"}, env, log));
  ASSERT_TRUE(devices.Start(bin + "/converge-device-sim",
                            {"--url", mqtt, "--devices", "2", "--prefix", prefix,
                             "--toggle-probability", "0", "--duration", "120"},
                            {}, log));

  auto inventory = Service(db.url(), brokers, "shop-inventory", shop::kStockTopic);
  auto payments = Service(db.url(), brokers, "shop-payments", shop::kPaymentsTopic);
  auto orchestrator = Service(db.url(), brokers, "shop-orchestrator", shop::kRepliesTopic);
  auto shipping = Service(db.url(), brokers, "shop-shipping", shop::kShippingTopic);
  converge::broker::MqttOptions mo;
  mo.url = mqtt;
  mo.client_id = "shop-test-ingest-" + prefix;
  auto source = converge::broker::MakeMqttSource(mo);
  ASSERT_TRUE(source.ok()) << source.status();
  converge::consumer::ConsumerOptions io;
  io.group = "shop-devices";
  io.topics = converge::pubsub::IngestTopicFilters();
  io.database_url = db.url();
  io.poll_timeout = 50ms;
  converge::consumer::Consumer ingest(io, std::move(source).value());
  ingest.SetDecoder(converge::broker::DecodeMqttRecord);
  shop::RegisterInventory(*inventory);
  shop::RegisterPayments(*payments);
  shop::RegisterOrchestrator(*orchestrator);
  shop::RegisterShipping(*shipping, prefix, 2);
  shop::RegisterDeviceIngest(ingest);
  for (auto* c : {inventory.get(), payments.get(), orchestrator.get(), shipping.get(), &ingest})
    ASSERT_TRUE(c->Start().ok());

  shop::PlaceOptions o{.orders = 12, .rate = 30, .skus = 2, .decline_percent = 0, .seed = 11};
  auto placed = shop::PlaceOrders(db.url(), o);
  ASSERT_TRUE(placed.ok()) << placed.status();

  shop::Report report;
  const auto deadline = std::chrono::steady_clock::now() + 120s;
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = shop::ReadReport(db.url());
    ASSERT_TRUE(r.ok()) << r.status();
    report = *r;
    if (report.completed + report.compensated == 12 && report.running == 0) break;
    std::this_thread::sleep_for(200ms);
  }
  for (auto* c : {inventory.get(), payments.get(), orchestrator.get(), shipping.get(), &ingest})
    c->Stop();
  devices.Signal(SIGTERM);
  relay.Signal(SIGTERM);
  reconciler.Signal(SIGTERM);
  devices.Wait(20s);
  EXPECT_EQ(relay.Wait(20s), 0);
  EXPECT_EQ(reconciler.Wait(20s), 0);

  std::cout << shop::FormatReport(report);
  SCOPED_TRACE(shop::FormatReport(report));
  EXPECT_EQ(report.completed, 12) << "see " << log;
  EXPECT_EQ(report.shipments, 12);
  EXPECT_EQ(report.delivered, 12);
  EXPECT_EQ(report.device_commands_applied, 12);
  EXPECT_TRUE(report.consistent());
}

}  // namespace
