// converge-relay as a process: configuration errors, --check-config without secrets, the
// /metrics, /healthz and /readyz endpoints, publishing with only the services' variables set,
// and SIGTERM draining and giving the slot leases back.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "converge/testing/env.h"
#include "converge/testing/mosquitto.h"
#include "converge/testing/mqtt_client.h"
#include "converge/testing/pg_cluster.h"
#include "converge/testing/pg_fixture.h"
#include "converge/testing/process.h"

namespace converge {
namespace {

using std::chrono::milliseconds;
using testing::ChildProcess;
using testing::TestDatabase;

std::string Slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string Relay() { return testing::BinDir() + "/converge-relay"; }

TEST(RelayProcessTest, BadConfigurationExitsTwoAndNamesTheKey) {
  const std::string log = ::testing::TempDir() + "relay-badcfg.log";
  std::remove(log.c_str());
  ChildProcess p;
  ASSERT_TRUE(p.Start(Relay(), {"--relay.batch_sise=5"},
                      {{"CONVERGE_PG_URL", "postgresql://u:pw@127.0.0.1:1/x"},
                       {"CONVERGE_KAFKA_BROKERS", "127.0.0.1:1"}},
                      log));
  EXPECT_EQ(p.Wait(milliseconds(10000)), 2);
  EXPECT_NE(Slurp(log).find("did you mean 'relay.batch_size'"), std::string::npos) << Slurp(log);
}

TEST(RelayProcessTest, CheckConfigMasksSecrets) {
  const std::string log = ::testing::TempDir() + "relay-check.log";
  std::remove(log.c_str());
  ChildProcess p;
  ASSERT_TRUE(p.Start(Relay(), {"--check-config", "--kafka.sasl.password=hunter2"},
                      {{"CONVERGE_PG_URL", "postgresql://u:s3cret@127.0.0.1:1/x"},
                       {"CONVERGE_KAFKA_BROKERS", "127.0.0.1:1"}},
                      log));
  EXPECT_EQ(p.Wait(milliseconds(10000)), 0);
  const std::string out = Slurp(log);
  EXPECT_NE(out.find("configuration OK"), std::string::npos) << out;
  EXPECT_EQ(out.find("s3cret"), std::string::npos) << out;
  EXPECT_EQ(out.find("hunter2"), std::string::npos) << out;
}

TEST(RelayProcessTest, PublishesServesMetricsAndDrainsOnSigterm) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  const std::string brokers = testing::RequireEnv("CONVERGE_KAFKA_BROKERS");
  ASSERT_FALSE(brokers.empty());
  db.Scalar(
      "SELECT count(converge.enqueue('relay-process-test', 'k' || (g % 7), 't', "
      "to_jsonb(g))) FROM generate_series(1, 50) g");
  const uint16_t port = testing::FreeLoopbackPort();
  ChildProcess p;
  ASSERT_TRUE(p.Start(Relay(), {"--metrics.port=" + std::to_string(port)},
                      {{"CONVERGE_PG_URL", db.url()}, {"CONVERGE_KAFKA_BROKERS", brokers}},
                      ::testing::TempDir() + "relay-process.log"));
  for (int i = 0; i < 200 && db.Count("SELECT count(*) FROM converge.outbox") > 0; ++i)
    std::this_thread::sleep_for(milliseconds(100));
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.outbox"), 0);

  const std::string metrics = testing::HttpGet(port, "/metrics");
  EXPECT_NE(metrics.find("converge_relay_published_total 50"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("converge_relay_owned_slots 256"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("converge_relay_commit_to_confirm_seconds_count 50"), std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("converge_relay_circuit_open{target=\"kafka\"} 0"), std::string::npos)
      << metrics;
  EXPECT_NE(testing::HttpGet(port, "/healthz").find(" 200"), std::string::npos);
  EXPECT_NE(testing::HttpGet(port, "/readyz").find(" 200"), std::string::npos);

  ASSERT_TRUE(p.Signal(SIGTERM));
  EXPECT_EQ(p.Wait(milliseconds(20000)), 0);
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.relay_slots WHERE owner IS NOT NULL"), 0)
      << "SIGTERM gives the slots back";
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.relay_instances"), 0);
  EXPECT_EQ(testing::HttpGet(port, "/metrics"), "") << "the endpoint stops with the process";
}

TEST(RelayProcessTest, MqttKeysAreCheckedAndThePasswordIsMasked) {
  const std::string log = ::testing::TempDir() + "relay-mqtt-check.log";
  std::remove(log.c_str());
  ChildProcess p;
  ASSERT_TRUE(p.Start(
      Relay(),
      {"--check-config", "--relay.target=both", "--mqtt.url=tcp://127.0.0.1:1",
       "--mqtt.username=relay", "--mqtt.password=hunter3", "--mqtt.topics=devices/#, cmd/+"},
      {{"CONVERGE_PG_URL", "postgresql://u:pw@127.0.0.1:1/x"},
       {"CONVERGE_KAFKA_BROKERS", "127.0.0.1:1"}},
      log));
  EXPECT_EQ(p.Wait(milliseconds(10000)), 0) << Slurp(log);
  EXPECT_EQ(Slurp(log).find("hunter3"), std::string::npos) << Slurp(log);

  const std::string log2 = ::testing::TempDir() + "relay-mqtt-bad.log";
  std::remove(log2.c_str());
  ChildProcess q;
  ASSERT_TRUE(q.Start(Relay(), {"--relay.target=both", "--mqtt.url=tcp://127.0.0.1:1"},
                      {{"CONVERGE_PG_URL", "postgresql://u:pw@127.0.0.1:1/x"},
                       {"CONVERGE_KAFKA_BROKERS", "127.0.0.1:1"}},
                      log2));
  EXPECT_EQ(q.Wait(milliseconds(10000)), 2);
  EXPECT_NE(Slurp(log2).find("mqtt.topics"), std::string::npos) << Slurp(log2);

  const std::string log3 = ::testing::TempDir() + "relay-mqtt-bad-filter.log";
  std::remove(log3.c_str());
  ChildProcess r;
  ASSERT_TRUE(r.Start(
      Relay(), {"--relay.target=both", "--mqtt.url=tcp://127.0.0.1:1", "--mqtt.topics=devices/#/x"},
      {{"CONVERGE_PG_URL", "postgresql://u:pw@127.0.0.1:1/x"},
       {"CONVERGE_KAFKA_BROKERS", "127.0.0.1:1"}},
      log3));
  EXPECT_EQ(r.Wait(milliseconds(10000)), 2);
  EXPECT_NE(Slurp(log3).find("'#' must be the last level"), std::string::npos) << Slurp(log3);
}

// A backlog whose every batch covers every key: a claim made while a batch is at the broker
// finds nothing (all keys are in flight). The relay must claim again as soon as that batch
// completes, not when the poll interval (here 60 s) or a NOTIFY (none: the rows were committed
// before it started) wakes it; before that fix 20 batches took 20 poll intervals.
TEST(RelayProcessTest, BacklogOnFewKeysDrainsWithoutWaitingForThePollInterval) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  const std::string brokers = testing::RequireEnv("CONVERGE_KAFKA_BROKERS");
  ASSERT_FALSE(brokers.empty());
  db.Scalar(
      "SELECT count(converge.enqueue('relay-process-backlog', 'k' || (g % 20), 't', "
      "to_jsonb(g))) FROM generate_series(1, 2000) g");
  ChildProcess p;
  ASSERT_TRUE(p.Start(Relay(),
                      {"--metrics.port=-1", "--relay.batch_size=100", "--relay.poll_interval=60s"},
                      {{"CONVERGE_PG_URL", db.url()}, {"CONVERGE_KAFKA_BROKERS", brokers}},
                      ::testing::TempDir() + "relay-process-backlog.log"));
  for (int i = 0; i < 300 && db.Count("SELECT count(*) FROM converge.outbox") > 0; ++i)
    std::this_thread::sleep_for(milliseconds(100));
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.outbox"), 0)
      << "the backlog did not drain in 30 s (one batch per 60 s poll interval?)";
  ASSERT_TRUE(p.Signal(SIGTERM));
  EXPECT_EQ(p.Wait(milliseconds(20000)), 0);
}

TEST(RelayProcessTest, BothTargetsRouteByTopicFilter) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  const std::string brokers = testing::RequireEnv("CONVERGE_KAFKA_BROKERS");
  ASSERT_FALSE(brokers.empty());
  testing::MosquittoConfig cfg;
  cfg.users = {{"relay", "relay-pw"}, {"reader", "reader-pw"}};
  cfg.acl = "user relay\ntopic write dev/#\nuser reader\ntopic read #\n";
  testing::MosquittoBroker mqtt(cfg);
  ASSERT_TRUE(mqtt.Start()) << mqtt.error();
  testing::MqttTestClient reader(mqtt.url(), "reader", "reader", "reader-pw");
  ASSERT_EQ(reader.Connect(), "");
  ASSERT_EQ(reader.Subscribe("dev/#"), "");
  db.Scalar(
      "SELECT count(converge.enqueue('devices/commands', 'd' || (g % 3), 'cmd', "
      "to_jsonb(g))) FROM generate_series(1, 9) g");
  db.Scalar(
      "SELECT count(converge.enqueue('relay-process-kafka', 'k' || (g % 3), 't', "
      "to_jsonb(g))) FROM generate_series(1, 6) g");
  ChildProcess p;
  ASSERT_TRUE(p.Start(Relay(),
                      {"--metrics.port=-1", "--relay.target=both", "--mqtt.url=" + mqtt.url(),
                       "--mqtt.username=relay", "--mqtt.password=relay-pw",
                       "--mqtt.topics=devices/#", "--mqtt.topic_template=dev/{key}/cmd"},
                      {{"CONVERGE_PG_URL", db.url()}, {"CONVERGE_KAFKA_BROKERS", brokers}},
                      ::testing::TempDir() + "relay-process-both.log"));
  for (int i = 0; i < 200 && db.Count("SELECT count(*) FROM converge.outbox") > 0; ++i)
    std::this_thread::sleep_for(milliseconds(100));
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.outbox"), 0);
  EXPECT_TRUE(reader.WaitFor(9, milliseconds(5000)));
  std::this_thread::sleep_for(milliseconds(200));
  auto got = reader.Received();
  EXPECT_EQ(got.size(), 9u) << "only the devices/# rows go to MQTT";
  for (const auto& m : got) EXPECT_EQ(m.topic, "dev/" + m.Prop("subject") + "/cmd");
  ASSERT_TRUE(p.Signal(SIGTERM));
  EXPECT_EQ(p.Wait(milliseconds(20000)), 0);
}

}  // namespace
}  // namespace converge
