// The consumer runtime over MQTT (MqttSource) against a private mosquitto with auth and ACL:
// commit before PUBACK (a consumer killed between its commit and its ack gets the message again
// and skips it as a duplicate), duplicates with new packet ids, and one effect per message id.
//
// The consumer that is killed runs as a child process: this test binary started again with
// CONVERGE_MQTT_CONSUMER_CHILD=1 (see main() at the end), with the failpoint
// consumer.after_commit=kill. Devices publish with mosquitto_pub (another process): a held
// PUBACK parks Paho's process-wide receive thread (broker-adapters/README.md "MQTT").
#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <mutex>
#include <string_view>
#include <thread>
#include <vector>

#include "converge/broker/mqtt.h"
#include "converge/common/log.h"
#include "converge/common/uuid.h"
#include "converge/consumer/consumer.h"
#include "converge/testing/mosquitto.h"
#include "converge/testing/pg_fixture.h"
#include "converge/testing/process.h"

namespace converge::consumer {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr const char* kFilter = "dev/+/evt";

std::unique_ptr<Consumer> MakeConsumer(
    const std::string& db_url, const std::string& mqtt_url, const std::string& client_id,
    const std::function<void(broker::MqttOptions&, ConsumerOptions&)>& tweak = {}) {
  broker::MqttOptions o;
  o.url = mqtt_url;
  o.client_id = client_id;
  o.username = "consumer";
  o.password = "consumer-pw";
  o.reconnect_min = seconds(1);
  o.reconnect_max = seconds(1);
  ConsumerOptions co;
  co.group = "devices";
  co.topics = {kFilter};
  co.database_url = db_url;
  co.poll_timeout = milliseconds(100);
  if (tweak) tweak(o, co);
  auto src = broker::MakeMqttSource(o);
  if (!src.ok()) return nullptr;
  auto c = std::make_unique<Consumer>(co, std::move(src).value());
  c->SetDecoder(broker::DecodeMqttRecord);
  c->Handle("device.reading", [](const Message& m, Context& ctx) {
    ctx.tx().exec_params("INSERT INTO effects (message_id, topic) VALUES ($1, $2)", m.id, m.topic);
    return Status::Ok();
  });
  c->Handle("device.slow", [](const Message&, Context& ctx) {
    ctx.tx().exec("SELECT pg_sleep(30)");
    return Status::Ok();
  });
  return c;
}

// Child mode: consume until killed (the failpoint) or 30 s.
int RunChild() {
  auto c = MakeConsumer(std::getenv("CONVERGE_PG_URL"), std::getenv("CHILD_MQTT_URL"),
                        std::getenv("CHILD_MQTT_CLIENT"));
  if (!c || !c->Start().ok()) return 3;
  std::this_thread::sleep_for(seconds(30));
  c->Stop();
  return 0;
}

bool PublishReading(const testing::MosquittoBroker& b, const std::string& device,
                    const std::string& id, const std::string& type = "device.reading") {
  return b.Publish(
      "device", "device-pw", "dev/" + device + "/evt", "{\"t\":21}",
      {{"specversion", "1.0"}, {"id", id}, {"source", "/devices/" + device}, {"type", type}},
      "application/json");
}

template <class F>
bool WaitUntil(F f, milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (f()) return true;
    std::this_thread::sleep_for(milliseconds(50));
  }
  return f();
}

// What every test here needs: a test database with an `effects` table, a private mosquitto
// with the consumer's and the devices' users and ACL (`extra`: more mosquitto.conf lines), and a
// fresh client id for the consumer.
struct Rig {
  explicit Rig(const std::string& extra = "") : broker(Config(extra)) {}
  static testing::MosquittoConfig Config(const std::string& extra) {
    testing::MosquittoConfig cfg;
    cfg.users = {{"consumer", "consumer-pw"}, {"device", "device-pw"}};
    cfg.acl = "user consumer\ntopic read dev/#\nuser device\ntopic write dev/#\n";
    cfg.extra = extra;
    return cfg;
  }
  // False with `error` when the database or the broker is not there.
  bool Start() {
    if (!db.ok()) {
      error = "no test database";
      return false;
    }
    db.Scalar("CREATE TABLE effects (message_id text NOT NULL, topic text NOT NULL)");
    if (!broker.Start()) {
      error = broker.error();
      return false;
    }
    return true;
  }
  testing::TestDatabase db;
  testing::MosquittoBroker broker;
  const std::string client = "consumer-" + NewUuidV7().ToString().substr(24);
  std::string error;
};

TEST(ConsumerMqtt, KilledBetweenCommitAndPubackThenRedeliveredAndSkippedAsDuplicate) {
  Rig rig;
  ASSERT_TRUE(rig.Start()) << rig.error;
  auto& [db, broker, client, error] = rig;

  // 1. A consumer that dies right after committing message A, before Ack (PUBACK held).
  //    It runs once first without the message so that its session and subscription exist.
  char self[4096] = {0};
  ASSERT_GT(::readlink("/proc/self/exe", self, sizeof self - 1), 0);
  const std::map<std::string, std::string> env = {
      {"CONVERGE_MQTT_CONSUMER_CHILD", "1"},
      {"CONVERGE_PG_URL", db.url()},
      {"CHILD_MQTT_URL", broker.url()},
      {"CHILD_MQTT_CLIENT", client},
      {"CONVERGE_FAILPOINTS", "consumer.after_commit=kill"}};
  testing::ChildProcess child;
  ASSERT_TRUE(child.Start(self, {}, env, ::testing::TempDir() + "consumer-mqtt-child.log"));
  ASSERT_TRUE(WaitUntil(
      [&] {
        return broker.ReadLog().find("Received SUBSCRIBE from " + client) != std::string::npos;
      },
      seconds(10)));
  const std::string a = NewUuidV7().ToString();
  ASSERT_TRUE(PublishReading(broker, "d1", a));
  EXPECT_EQ(child.Wait(milliseconds(15000)), 128 + SIGKILL) << "the failpoint did not fire";
  EXPECT_EQ(db.Count("SELECT count(*) FROM effects"), 1) << "committed before the kill";
  EXPECT_EQ(broker.ReadLog().find("Received PUBACK from " + client), std::string::npos)
      << "the PUBACK must not leave before the commit, and the kill came before the Ack";

  // 2. The restarted consumer gets A again (persistent session) and skips it: one effect.
  auto c = MakeConsumer(db.url(), broker.url(), client);
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->Start().ok());
  ASSERT_TRUE(WaitUntil([&] { return c->stats().duplicates_skipped >= 1; }, seconds(10)))
      << "A was not redelivered after the kill";
  EXPECT_EQ(db.Count("SELECT count(*) FROM effects"), 1);
  EXPECT_TRUE(WaitUntil(
      [&] { return broker.ReadLog().find("Received PUBACK from " + client) != std::string::npos; },
      seconds(5)))
      << "the duplicate is acknowledged once skipped";

  // 3. The same id published again (new packet id, DUP=0) is a duplicate too; B is new.
  ASSERT_TRUE(PublishReading(broker, "d1", a));
  const std::string b = NewUuidV7().ToString();
  ASSERT_TRUE(PublishReading(broker, "d2", b));
  ASSERT_TRUE(
      WaitUntil([&] { return db.Count("SELECT count(*) FROM effects") >= 2; }, seconds(10)));
  ASSERT_TRUE(WaitUntil([&] { return c->stats().duplicates_skipped >= 2; }, seconds(10)));
  c->Stop();
  EXPECT_EQ(db.Count("SELECT count(*) FROM effects"), 2);
  EXPECT_EQ(db.Count("SELECT count(DISTINCT message_id) FROM effects"), 2);
  EXPECT_EQ(db.Scalar("SELECT topic FROM effects WHERE message_id = '" + b + "'"), "dev/d2/evt");
  EXPECT_EQ(c->stats().applied, 1u);  // B (A was applied by the killed consumer)
}

TEST(ConsumerMqtt, StopWithAHeldUncommittedMessageDoesNotAckIt) {
  Rig rig;
  ASSERT_TRUE(rig.Start()) << rig.error;
  auto& [db, broker, client, error] = rig;
  {
    // A source whose records are never committed: poll, then close without Ack.
    broker::MqttOptions o;
    o.url = broker.url();
    o.client_id = client;
    o.username = "consumer";
    o.password = "consumer-pw";
    auto src = broker::MakeMqttSource(o);
    ASSERT_TRUE(src.ok());
    class L : public broker::AssignmentListener {
      std::map<broker::TopicPartition, int64_t> OnAssigned(
          const std::vector<broker::TopicPartition>&) override {
        return {};
      }
      void OnRevoked(const std::vector<broker::TopicPartition>&) override {}
    } l;
    ASSERT_TRUE((*src)->Subscribe({kFilter}, &l).ok());
    (void)(*src)->Poll(1, milliseconds(300));
    ASSERT_TRUE(PublishReading(broker, "d1", NewUuidV7().ToString()));
    std::vector<broker::ReceivedRecord> recs;
    ASSERT_TRUE(WaitUntil(
        [&] {
          auto r = (*src)->Poll(1, milliseconds(100));
          if (r.ok() && !r->empty()) recs = *r;
          return !recs.empty();
        },
        seconds(5)));
    (*src)->Close();
  }
  // The runtime then gets it and applies it once.
  auto c = MakeConsumer(db.url(), broker.url(), client);
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->Start().ok());
  EXPECT_TRUE(WaitUntil([&] { return db.Count("SELECT count(*) FROM effects") == 1; }, seconds(10)))
      << "the message closed without Ack was lost";
  c->Stop();
  EXPECT_EQ(c->stats().applied, 1u);
}

TEST(ConsumerMqtt, BrokerKilledAndRestartedMidStreamEveryMessageAppliedOnce) {
  // Save after every change, so what the broker acknowledged survives its kill -9.
  Rig rig("autosave_on_changes true\n");
  ASSERT_TRUE(rig.Start()) << rig.error;
  auto& [db, broker, client, error] = rig;
  auto c = MakeConsumer(db.url(), broker.url(), client);
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->Start().ok());
  ASSERT_TRUE(WaitUntil(
      [&] {
        return broker.ReadLog().find("Received SUBSCRIBE from " + client) != std::string::npos;
      },
      seconds(10)));
  std::this_thread::sleep_for(milliseconds(300));
  std::vector<std::string> ids;
  for (int i = 0; i < 30; ++i) ids.push_back(NewUuidV7().ToString());
  for (int i = 0; i < 30; ++i) {
    if (i == 15) {
      broker.Kill();
      std::this_thread::sleep_for(milliseconds(500));
      ASSERT_TRUE(broker.Start()) << broker.error();
    }
    // A device retries until its broker acknowledges (same id: duplicates are deduped).
    bool sent = false;
    for (int attempt = 0; attempt < 50 && !sent; ++attempt) {
      sent = PublishReading(broker, "d" + std::to_string(i % 3), ids[i]);
      if (!sent) std::this_thread::sleep_for(milliseconds(100));
    }
    ASSERT_TRUE(sent) << "message " << i;
  }
  EXPECT_TRUE(
      WaitUntil([&] { return db.Count("SELECT count(DISTINCT message_id) FROM effects") == 30; },
                seconds(20)))
      << db.Count("SELECT count(DISTINCT message_id) FROM effects") << " of 30 applied";
  c->Stop();
  EXPECT_EQ(db.Count("SELECT count(*) FROM effects"), 30) << "an effect applied twice";
}

// A handler slower than the keepalive would hold the PUBACK (and Paho's receive thread) until
// mosquitto drops the client and redelivers: a poison loop (mqtt.md §0.1). The runtime bounds
// the handler at MaxProcessingTime = keepalive / 2: the slow message is cut off, retried, dead-
// lettered after max_attempts, and the message behind it is applied; the broker never drops the
// consumer for a missed keepalive.
TEST(ConsumerMqtt, HandlerSlowerThanTheKeepaliveIsCutOffAndDeadLetteredNotLooped) {
  Rig rig;
  ASSERT_TRUE(rig.Start()) << rig.error;
  auto& [db, broker, client, error] = rig;
  auto c =
      MakeConsumer(db.url(), broker.url(), client, [](broker::MqttOptions& o, ConsumerOptions& co) {
        o.keep_alive = seconds(2);  // bound: 1 s; mosquitto drops after 3 s
        co.max_attempts = 3;
      });
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->Start().ok());
  ASSERT_TRUE(WaitUntil(
      [&] {
        return broker.ReadLog().find("Received SUBSCRIBE from " + client) != std::string::npos;
      },
      seconds(10)));
  const std::string slow = NewUuidV7().ToString(), next = NewUuidV7().ToString();
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(PublishReading(broker, "d1", slow, "device.slow"));
  ASSERT_TRUE(PublishReading(broker, "d1", next));
  ASSERT_TRUE(WaitUntil([&] { return db.Count("SELECT count(*) FROM effects") == 1; }, seconds(20)))
      << "the message behind the slow one was not applied";
  // Three attempts of about 1 s each (plus backoff), not three pg_sleep(30)s.
  EXPECT_LT(std::chrono::steady_clock::now() - t0, seconds(12));
  c->Stop();
  EXPECT_EQ(db.Scalar("SELECT message_id FROM effects"), next);
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.dead_letters WHERE message_id = '" + slow +
                     "' AND reason LIKE '%handler exceeded 1000 ms%' AND attempts = 3"),
            1)
      << db.Scalar(
             "SELECT string_agg(reason || ' / ' || attempts, '; ') FROM converge.dead_letters");
  const std::string log = broker.ReadLog();
  EXPECT_EQ(log.find("Client " + client + " has exceeded timeout"), std::string::npos)
      << "mosquitto dropped the consumer for a missed keepalive";
  EXPECT_EQ(c->stats().applied, 1u);
  EXPECT_EQ(c->stats().dead_letters, 1u);
}

// A subscription the broker grants below the requested QoS (mosquitto's max_qos 0) is an error
// line naming the filter: QoS 0 is neither queued while the consumer is away nor redelivered
// after a crash. A fully granted one is logged as subscribed. (mosquitto 2.0.11 never refuses a
// valid filter, so the refused branch, reason >= 0x80, cannot be provoked here.)
TEST(ConsumerMqtt, SubscriptionGrantedBelowTheRequestedQosIsAnError) {
  struct Capture {  // the process's log lines, restored to stderr however the test ends
    Capture() {
      ConfigureLogging({.sink = [this](std::string_view line) {
        std::lock_guard<std::mutex> lock(mu);
        lines.emplace_back(line);
      }});
    }
    ~Capture() { ResetLogging(); }
    std::mutex mu;
    std::vector<std::string> lines;
  } capture;
  auto& mu = capture.mu;
  auto& lines = capture.lines;
  auto logged = [&](const std::string& what) {
    std::lock_guard<std::mutex> lock(mu);
    for (const auto& l : lines)
      if (l.find(what) != std::string::npos) return l;
    return std::string();
  };
  for (const bool capped : {false, true}) {
    SCOPED_TRACE(capped ? "max_qos 0" : "no cap");
    {
      std::lock_guard<std::mutex> lock(mu);
      lines.clear();
    }
    Rig rig(capped ? "max_qos 0\n" : "");
    ASSERT_TRUE(rig.Start()) << rig.error;
    auto c = MakeConsumer(rig.db.url(), rig.broker.url(), rig.client);
    ASSERT_NE(c, nullptr);
    ASSERT_TRUE(c->Start().ok());
    const std::string want = capped ? "granted below the requested QoS" : "mqtt subscribed";
    EXPECT_TRUE(WaitUntil([&] { return !logged(want).empty(); }, seconds(10)))
        << rig.broker.ReadLog();
    const std::string line = logged(want);
    EXPECT_NE(line.find("filter=dev/+/evt"), std::string::npos) << line;
    if (capped) {
      EXPECT_NE(line.find("level=error"), std::string::npos) << line;
      EXPECT_NE(line.find("requested_qos=1 granted_qos=0"), std::string::npos) << line;
      EXPECT_EQ(logged("mqtt subscribed"), "");
    } else {
      EXPECT_NE(line.find("granted_qos=1"), std::string::npos) << line;
      EXPECT_EQ(logged("granted below"), "");
    }
    c->Stop();
  }
}

}  // namespace
}  // namespace converge::consumer

int main(int argc, char** argv) {
  if (std::getenv("CONVERGE_MQTT_CONSUMER_CHILD") != nullptr) return converge::consumer::RunChild();
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
