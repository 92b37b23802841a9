// End-to-end device tests against a PRIVATE mosquitto with auth and ACLs on loopback (never the
// shared broker), PostgreSQL from CONVERGE_PG_URL (a fresh database per test):
//   server API (SendCommand / SetDesired) -> outbox -> the real relay engine with the MQTT
//   publisher (broker-adapters; maps mqtt.retain, mqtt.response_topic, mqtt.correlation_data,
//   expires_at) -> mosquitto -> DeviceClient -> acks, reports,
//   presence -> the MQTT source (broker-adapters) -> the real consumer runtime -> the ingest
//   handlers -> PostgreSQL.
#include <gtest/gtest.h>
#include <mqtt/async_client.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <functional>
#include <mutex>
#include <sstream>
#include <thread>

#include "converge/broker/mqtt.h"
#include "converge/common/envelope.h"
#include "converge/common/time_format.h"
#include "converge/common/uuid.h"
#include "converge/consumer/consumer.h"
#include "converge/outbox/outbox.h"
#include "converge/outbox/relay.h"
#include "converge/pubsub/device_client.h"
#include "converge/pubsub/devices.h"
#include "converge/pubsub/testing/device_acl.h"
#include "converge/testing/mosquitto.h"
#include "converge/testing/pg_fixture.h"
#include "converge/testing/process.h"

namespace converge::pubsub {
namespace {

using namespace std::chrono_literals;

#define ASSERT_OK(expr)                  \
  do {                                   \
    const converge::Status st_ = (expr); \
    ASSERT_TRUE(st_.ok()) << st_;        \
  } while (0)
using converge::testing::MosquittoBroker;

bool WaitUntil(const std::function<bool()>& done, std::chrono::milliseconds limit = 15s) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (done()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return done();
}

// A raw MQTT 5 client (plain Paho) for what a device library would never do: publish to other
// devices' topics, replay old wills. Publishes `event` to each topic over one connection and
// returns one result per topic, joined by '|': "" on success, else "rc <rc> reason <reason>".
std::string RawPublishAll(const std::string& url, const std::string& user, const std::string& pw,
                          const std::vector<std::string>& topics, const Message& event) {
  ::mqtt::async_client cli(url, "raw-" + NewUuidV7().ToString().substr(24),
                           ::mqtt::create_options(MQTTVERSION_5), nullptr);
  auto error = [](const ::mqtt::exception& e) {
    return "rc " + std::to_string(e.get_return_code()) + " reason " +
           std::to_string(e.get_reason_code());
  };
  try {
    ::mqtt::connect_options opts;
    opts.set_mqtt_version(MQTTVERSION_5);
    opts.set_clean_start(true);
    opts.set_user_name(user);
    opts.set_password(pw);
    if (!cli.connect(opts)->wait_for(3s)) return "connect timeout";
  } catch (const ::mqtt::exception& e) {
    return "connect: " + error(e);
  }
  std::string out;
  for (size_t i = 0; i < topics.size(); ++i) {
    if (i) out += "|";
    Message m = event;
    m.topic = topics[i];
    auto props = EncodeMqttUserProperties(m);
    if (!props.ok()) return props.status().ToString();
    ::mqtt::properties p;
    for (const auto& [k, v] : props->user_properties)
      p.add(::mqtt::property(::mqtt::property::USER_PROPERTY, k, v));
    auto msg = ::mqtt::message::create(m.topic, m.payload, 1, false);
    msg->set_properties(std::move(p));
    try {
      if (!cli.publish(msg)->wait_for(5s)) out += "timeout";
    } catch (const ::mqtt::exception& e) {
      out += error(e);
    }
  }
  try {
    cli.disconnect()->wait_for(2s);
  } catch (const ::mqtt::exception&) {
  }
  return out;
}

// Deletes the retained message of `topic` (an empty retained PUBLISH), as a broker wipe would.
std::string ClearRetained(const std::string& url, const std::string& user, const std::string& pw,
                          const std::string& topic) {
  ::mqtt::async_client cli(url, "raw-" + NewUuidV7().ToString().substr(24),
                           ::mqtt::create_options(MQTTVERSION_5), nullptr);
  try {
    ::mqtt::connect_options opts;
    opts.set_mqtt_version(MQTTVERSION_5);
    opts.set_clean_start(true);
    opts.set_user_name(user);
    opts.set_password(pw);
    if (!cli.connect(opts)->wait_for(3s)) return "connect timeout";
    if (!cli.publish(topic, "", 0, 1, true)->wait_for(5s)) return "publish timeout";
    cli.disconnect()->wait_for(2s);
  } catch (const ::mqtt::exception& e) {
    return e.what();
  }
  return "";
}

std::string RawPublish(const std::string& url, const std::string& user, const std::string& pw,
                       const std::string& topic, const Message& event) {
  return RawPublishAll(url, user, pw, {topic}, event);
}

// Records what is published under devices/# with the MQTT 5 features the protocol relies on
// (user "observer", read-only).
class Observer {
 public:
  struct Seen {
    std::string topic, correlation, response_topic;
    int expiry = -1;
    bool retained = false;
  };
  explicit Observer(const std::string& url)
      : cli_(url, "observer", ::mqtt::create_options(MQTTVERSION_5), nullptr) {}
  ~Observer() {
    try {
      cli_.disconnect()->wait_for(2s);
    } catch (const ::mqtt::exception&) {
    }
  }
  std::string Start() {
    cli_.set_message_callback([this](::mqtt::const_message_ptr m) {
      Seen s{m->get_topic()};
      const auto& p = m->get_properties();
      if (p.contains(::mqtt::property::CORRELATION_DATA))
        s.correlation = ::mqtt::get<std::string>(p, ::mqtt::property::CORRELATION_DATA);
      if (p.contains(::mqtt::property::RESPONSE_TOPIC))
        s.response_topic = ::mqtt::get<std::string>(p, ::mqtt::property::RESPONSE_TOPIC);
      if (p.contains(::mqtt::property::MESSAGE_EXPIRY_INTERVAL))
        s.expiry = ::mqtt::get<int>(p, ::mqtt::property::MESSAGE_EXPIRY_INTERVAL);
      s.retained = m->is_retained();
      std::lock_guard<std::mutex> lock(mu_);
      seen_.push_back(std::move(s));
    });
    try {
      ::mqtt::connect_options opts;
      opts.set_mqtt_version(MQTTVERSION_5);
      opts.set_clean_start(true);
      opts.set_user_name("observer");
      opts.set_password("observer-pw");
      if (!cli_.connect(opts)->wait_for(5s)) return "connect timeout";
      if (!cli_.subscribe("devices/#", 1)->wait_for(5s)) return "subscribe timeout";
    } catch (const ::mqtt::exception& e) {
      return e.what();
    }
    return "";
  }
  std::vector<Seen> On(const std::string& topic) {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<Seen> out;
    for (const auto& s : seen_)
      if (s.topic == topic) out.push_back(s);
    return out;
  }

 private:
  ::mqtt::async_client cli_;
  std::mutex mu_;
  std::vector<Seen> seen_;
};

Message DeviceEvent(const std::string& device, std::string_view type,
                    std::map<std::string, std::string> ext) {
  Message m;
  m.id = NewUuidV7().ToString();
  m.source = DeviceSource(device);
  m.type = std::string(type);
  m.subject = device;
  m.time = std::chrono::system_clock::now();
  m.extensions = std::move(ext);
  m.payload = "{}";
  return m;
}

class DevicesMqttTest : public ::testing::Test {
 protected:
  DevicesMqttTest()
      : broker_({.users = {{"relay", "relay-pw"},
                           {"ingest", "ingest-pw"},
                           {"d1", "d1-pw"},
                           {"d2", "d2-pw"},
                           {"sim-0", "sim-pw"},
                           {"sim-1", "sim-pw"},
                           {"sim-2", "sim-pw"},
                           {"sim-3", "sim-pw"},
                           {"observer", "observer-pw"}},
                 .acl = testing::DeviceAcl("relay", "ingest") +
                        "\nuser observer\ntopic read devices/#\n"}) {}

  void SetUp() override {
    ASSERT_TRUE(db_.ok());
    ASSERT_TRUE(broker_.Start()) << broker_.error();
    conn_ = db_.Connect();
    // Relay: the real engine with the real MQTT publisher.
    outbox::RelayOptions ro;
    ro.database_url = db_.url();
    ro.poll_interval = 50ms;
    broker::MqttOptions po;
    po.url = broker_.url();
    po.username = "relay";
    po.password = "relay-pw";
    auto publisher = broker::MakeMqttPublisher(po);
    ASSERT_TRUE(publisher.ok()) << publisher.status();
    relay_ = std::make_unique<outbox::Relay>(ro, std::move(publisher).value());
    relay_thread_ = std::thread([this] { (void)relay_->Run(); });
    // Ingest: the real consumer runtime over the real MQTT source (PUBACK after the commit).
    broker::MqttOptions so;
    so.url = broker_.url();
    so.client_id = "converge-ingest";
    so.username = "ingest";
    so.password = "ingest-pw";
    so.reconnect_min = 1s;
    so.reconnect_max = 1s;
    auto src = broker::MakeMqttSource(so);
    ASSERT_TRUE(src.ok()) << src.status();
    consumer::ConsumerOptions co;
    co.group = "device-ingest";
    co.topics = IngestTopicFilters();
    co.database_url = db_.url();
    co.poll_timeout = 20ms;
    co.linger = 2ms;
    consumer_ = std::make_unique<consumer::Consumer>(co, std::move(src).value());
    consumer_->SetDecoder(broker::DecodeMqttRecord);
    RegisterDeviceHandlers(*consumer_, &stats_);
    ASSERT_TRUE(consumer_->Start().ok());
    // The source subscribes in the background: wait until its subscription is in place (its
    // retained-presence view of the broker is empty, so probe with the ingest counters).
    ASSERT_TRUE(WaitUntil([&] { return IngestReady(); }, 10s));
  }

  void TearDown() override {
    if (relay_) relay_->Stop();
    if (relay_thread_.joinable()) relay_thread_.join();
    if (consumer_) consumer_->Stop();
  }

  DeviceOptions Dev(const std::string& id) {
    DeviceOptions o;
    o.url = broker_.url();
    o.device_id = id;
    o.password = id + "-pw";
    o.connect_timeout = 3000ms;
    o.reconnect_min = 100ms;
    o.reconnect_max = 500ms;
    return o;
  }

  std::string Send(const std::string& device, std::chrono::milliseconds ttl = 60s,
                   const std::string& name = "reboot") {
    pqxx::work tx(*conn_);
    auto sent =
        SendCommand(tx, {.device_id = device, .name = name, .payload = "{\"arg\":1}", .ttl = ttl});
    EXPECT_TRUE(sent.ok()) << sent.status();
    tx.commit();
    return sent.ok() ? sent->command_id : "";
  }
  int64_t Desire(const std::string& device, const std::string& json) {
    pqxx::work tx(*conn_);
    auto v = SetDesired(tx, device, json);
    EXPECT_TRUE(v.ok()) << v.status();
    tx.commit();
    return v.ok() ? *v : -1;
  }
  std::string Sql(const std::string& q) { return db_.Scalar(q); }
  std::string Status(const std::string& id) {
    return Sql("SELECT status FROM converge.device_commands WHERE id = '" + id + "'");
  }
  std::string Presence(const std::string& device) {
    return Sql(
        "SELECT state || ' ' || connection FROM converge.device_presence WHERE device_id "
        "= '" +
        device + "'");
  }
  // Publishes a presence message for the probe device "d2" until the ingest has applied one.
  bool IngestReady() {
    if (stats_.presence_applied.load() + stats_.presence_stale.load() > probes_seen_) return true;
    Message probe =
        DeviceEvent("d2", kPresenceType, {{"presence", "offline"}, {"connection", "0"}});
    (void)RawPublish(broker_.url(), "d2", "d2-pw", "devices/d2/presence", probe);
    std::this_thread::sleep_for(200ms);
    return stats_.presence_applied.load() + stats_.presence_stale.load() > probes_seen_;
  }
  bool OutboxEmpty() { return db_.Count("SELECT count(*) FROM converge.outbox") == 0; }

  converge::testing::TestDatabase db_;
  MosquittoBroker broker_;
  std::unique_ptr<pqxx::connection> conn_;
  std::unique_ptr<outbox::Relay> relay_;
  std::thread relay_thread_;
  DeviceIngestStats stats_;
  uint64_t probes_seen_ = 0;
  std::unique_ptr<consumer::Consumer> consumer_;
};

// A command handler that records what ran.
struct Recorder {
  std::mutex mu;
  std::vector<Command> commands;
  std::vector<int64_t> desired_versions;
  CommandHandler Commands() {
    return [this](const Command& c) {
      std::lock_guard<std::mutex> lock(mu);
      commands.push_back(c);
      return c.name == "fail" ? CommandResult::Rejected("cannot") : CommandResult::Applied("ok");
    };
  }
  DesiredHandler Desired() {
    return [this](const DesiredState& d) -> Result<std::string> {
      std::lock_guard<std::mutex> lock(mu);
      desired_versions.push_back(d.version);
      return d.json;
    };
  }
  size_t Count() {
    std::lock_guard<std::mutex> lock(mu);
    return commands.size();
  }
  std::vector<int64_t> Versions() {
    std::lock_guard<std::mutex> lock(mu);
    return desired_versions;
  }
};

TEST_F(DevicesMqttTest, CommandRoundTripCarriesCorrelationAndEndsApplied) {
  Recorder rec;
  Observer observer(broker_.url());
  ASSERT_EQ(observer.Start(), "");
  DeviceClient dev(Dev("d1"));
  dev.OnCommand(rec.Commands());
  ASSERT_OK(dev.Start());
  ASSERT_TRUE(WaitUntil([&] { return Presence("d1").rfind("online", 0) == 0; }));
  const std::string ok = Send("d1"), bad = Send("d1", 60s, "fail");
  ASSERT_TRUE(WaitUntil([&] { return Status(ok) == "applied" && Status(bad) == "rejected"; }))
      << Status(ok) << " " << Status(bad);
  ASSERT_EQ(rec.Count(), 2u);
  EXPECT_EQ(rec.commands[0].id, ok);
  EXPECT_EQ(rec.commands[0].name, "reboot");
  EXPECT_EQ(rec.commands[0].payload, "{\"arg\":1}");
  EXPECT_GT(rec.commands[0].expires_at, std::chrono::system_clock::now());
  EXPECT_EQ(Sql("SELECT (received_at IS NOT NULL AND sent_at IS NOT NULL AND acked_at IS NOT NULL)"
                "::text || ' ' || result FROM converge.device_commands WHERE id = '" +
                bad + "'"),
            "true cannot");
  EXPECT_EQ(stats_.acks_ignored.load(), 0u);
  // On the wire: commands carry Response Topic, Correlation Data (= command id) and Message
  // Expiry; every ack (received + final, two per command) echoes the Correlation Data.
  auto commands = observer.On("devices/d1/commands");
  ASSERT_EQ(commands.size(), 2u);
  EXPECT_EQ(commands[0].correlation, ok);
  EXPECT_EQ(commands[0].response_topic, "devices/d1/acks");
  EXPECT_GT(commands[0].expiry, 0);
  EXPECT_LE(commands[0].expiry, 60);
  ASSERT_TRUE(WaitUntil([&] { return observer.On("devices/d1/acks").size() == 4; }));
  for (const auto& a : observer.On("devices/d1/acks"))
    EXPECT_TRUE(a.correlation == ok || a.correlation == bad) << a.correlation;
  dev.Stop();
  ASSERT_TRUE(WaitUntil([&] { return Presence("d1").rfind("offline", 0) == 0; }));
}

TEST_F(DevicesMqttTest, DeviceOfflineThenBackGetsLatestDesiredAndEachCommandOnce) {
  Recorder rec;
  DeviceClient dev(Dev("d1"));  // persistent session
  dev.OnCommand(rec.Commands());
  dev.OnDesired(rec.Desired());
  ASSERT_OK(dev.Start());
  Desire("d1", "{\"target\":1}");
  ASSERT_TRUE(WaitUntil(
      [&] { return Sql("SELECT applied_desired_version FROM converge.device_twins") == "1"; }));
  dev.GoOffline(OfflineMode::kGraceful);
  ASSERT_TRUE(WaitUntil([&] { return Presence("d1").rfind("offline", 0) == 0; }));
  Desire("d1", "{\"target\":2}");
  Desire("d1", "{\"target\":3}");
  const std::string c1 = Send("d1"), c2 = Send("d1");
  ASSERT_TRUE(WaitUntil([&] { return OutboxEmpty(); }));  // published while the device is away
  // The sweep marks them sent and, the device being offline, does not re-send.
  DeviceSweep sweep({.command_resend_interval = 60s, .twin_resend_after = 60s});
  auto r = sweep.RunOnce(*conn_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->marked_sent, 2);
  EXPECT_EQ(r->resent_commands, 0);
  EXPECT_EQ(rec.Count(), 0u);

  ASSERT_OK(dev.Reconnect());
  ASSERT_TRUE(WaitUntil([&] {
    return Status(c1) == "applied" && Status(c2) == "applied" &&
           Sql("SELECT applied_desired_version || ' ' || reported::text FROM "
               "converge.device_twins") == "3 {\"target\": 3}";
  })) << Status(c1)
      << " " << Status(c2) << " "
      << Sql("SELECT applied_desired_version FROM converge.device_twins");
  // Online again: the sweep would re-send what is still unacked (nothing is).
  r = sweep.RunOnce(*conn_);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->unacked_commands, 0);
  EXPECT_EQ(r->unconverged_twins, 0);
  EXPECT_EQ(rec.Count(), 2u);
  auto versions = rec.Versions();
  ASSERT_FALSE(versions.empty());
  EXPECT_EQ(versions.back(), 3);
  EXPECT_TRUE(std::is_sorted(versions.begin(), versions.end()));  // never backwards
  EXPECT_EQ(dev.stats().applied_desired_version, 3);
}

TEST_F(DevicesMqttTest, DuplicateCommandDeliveriesRunOnceAndAreAcknowledgedAgain) {
  Recorder rec;
  DeviceClient dev(Dev("d1"));
  dev.OnCommand(rec.Commands());
  ASSERT_OK(dev.Start());
  const std::string id = Send("d1");
  ASSERT_TRUE(WaitUntil([&] { return Status(id) == "applied"; }));
  // The relay publishes the same message again (e.g. it crashed before deleting the row), and
  // the sweep re-sends it: same message id both times.
  {
    pqxx::work tx(*conn_);
    const auto exp = std::chrono::system_clock::now() + 60s;
    outbox::OutboxMessage m{.topic = "devices/d1/commands",
                            .key = "d1",
                            .type = std::string(kCommandType),
                            .payload = "{\"arg\":1}"};
    m.headers = {{"mqtt.response_topic", "devices/d1/acks"},
                 {"mqtt.correlation_data", id},
                 {"device.command", "reboot"},
                 {"device.expires_at", FormatRfc3339(exp)}};
    m.expires_at = exp;
    m.message_id = id;
    ASSERT_TRUE(outbox::Enqueue(tx, m).ok());
    tx.commit();
  }
  ASSERT_TRUE(WaitUntil([&] { return dev.stats().duplicate_commands == 1; }));
  ASSERT_TRUE(WaitUntil([&] { return stats_.acks_ignored.load() >= 1; }));  // re-ack, finished
  EXPECT_EQ(rec.Count(), 1u);
  EXPECT_EQ(dev.stats().commands_run, 1u);
  EXPECT_EQ(Status(id), "applied");
}

TEST_F(DevicesMqttTest, ExpiredCommandsAreNeverRunAndEndExpired) {
  Recorder rec;
  DeviceClient dev(Dev("d1"));
  dev.OnCommand(rec.Commands());
  ASSERT_OK(dev.Start());
  dev.GoOffline(OfflineMode::kWill);
  const std::string id = Send("d1", 2000ms);
  // Published and queued by the broker with its expiry (or dead-lettered as expired by a late
  // relay: either way it never runs).
  ASSERT_TRUE(WaitUntil([&] { return OutboxEmpty(); }));
  std::this_thread::sleep_for(2200ms);  // past the message expiry (2 s)
  DeviceSweep sweep({});
  auto r = sweep.RunOnce(*conn_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->expired_commands, 1);
  ASSERT_OK(dev.Reconnect());
  // A publisher that ignores the expiry: the device refuses the command by its header.
  Message late = DeviceEvent("server", kCommandType, {});
  late.source = "/test";
  late.subject = "d1";
  late.headers = {{"device.command", "reboot"},
                  {"device.expires_at", FormatRfc3339(std::chrono::system_clock::now() - 1s)}};
  ASSERT_EQ(RawPublish(broker_.url(), "relay", "relay-pw", "devices/d1/commands", late), "");
  ASSERT_TRUE(WaitUntil([&] { return dev.stats().expired_commands == 1; }));
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(rec.Count(), 0u);
  EXPECT_EQ(Status(id), "expired");
}

TEST_F(DevicesMqttTest, TwinConvergesAfterReconnectFromTheRetainedSnapshotOnly) {
  Recorder rec;
  DeviceOptions o = Dev("d2");
  o.persistent_session = false;  // nothing queued: only the retained snapshot arrives
  {
    DeviceClient first(o);
    ASSERT_OK(first.Start());
    first.Stop(OfflineMode::kWill);
  }
  for (int v = 1; v <= 5; ++v) Desire("d2", "{\"v\":" + std::to_string(v) + "}");
  ASSERT_TRUE(WaitUntil([&] { return OutboxEmpty(); }));
  EXPECT_EQ(Sql("SELECT applied_desired_version || '/' || desired_version FROM "
                "converge.device_twins"),
            "0/5");
  DeviceClient dev(o);
  dev.OnDesired(rec.Desired());
  ASSERT_OK(dev.Start());
  ASSERT_TRUE(WaitUntil(
      [&] { return Sql("SELECT applied_desired_version FROM converge.device_twins") == "5"; }));
  EXPECT_EQ(rec.Versions(), std::vector<int64_t>{5});
  EXPECT_EQ(Sql("SELECT reported::text FROM converge.device_twins"), "{\"v\": 5}");
  DeviceSweep sweep({});
  EXPECT_EQ(sweep.RunOnce(*conn_)->unconverged_twins, 0);
}

TEST_F(DevicesMqttTest, SweepResendsTheSnapshotWhenTheRetainedMessageIsLost) {
  Recorder rec;
  DeviceOptions o = Dev("d2");
  o.persistent_session = false;
  Desire("d2", "{\"v\":1}");
  ASSERT_TRUE(WaitUntil([&] { return OutboxEmpty(); }));
  ASSERT_EQ(ClearRetained(broker_.url(), "relay", "relay-pw", "devices/d2/twin/desired"), "");
  DeviceClient dev(o);
  dev.OnDesired(rec.Desired());
  ASSERT_OK(dev.Start());
  std::this_thread::sleep_for(500ms);
  EXPECT_TRUE(rec.Versions().empty());  // nothing retained any more
  DeviceSweep sweep({.twin_resend_after = 60s});
  auto r = sweep.RunOnce(*conn_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->unconverged_twins, 1);
  EXPECT_EQ(r->resent_twins, 0);  // not yet due
  Sql("UPDATE converge.device_twins SET desired_sent_at = now() - interval '1 hour'");
  r = sweep.RunOnce(*conn_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->resent_twins, 1);
  ASSERT_TRUE(WaitUntil(
      [&] { return Sql("SELECT applied_desired_version FROM converge.device_twins") == "1"; }));
  EXPECT_EQ(rec.Versions(), std::vector<int64_t>{1});
  EXPECT_EQ(sweep.RunOnce(*conn_)->unconverged_twins, 0);
}

TEST_F(DevicesMqttTest, StaleWillCannotMarkAReconnectedDeviceOffline) {
  DeviceClient dev(Dev("d1"));
  ASSERT_OK(dev.Start());
  const int64_t first = dev.stats().connection;
  ASSERT_TRUE(WaitUntil([&] { return Presence("d1") == "online " + std::to_string(first); }));
  // The connection drops: the broker publishes the last will (it carries the counter).
  dev.GoOffline(OfflineMode::kWill);
  ASSERT_TRUE(WaitUntil([&] { return Presence("d1") == "offline " + std::to_string(first); }))
      << Presence("d1")
      << " dead letters: " << Sql("SELECT string_agg(reason, '; ') FROM converge.dead_letters")
      << "\n"
      << broker_.ReadLog();
  ASSERT_OK(dev.Reconnect());
  const int64_t second = dev.stats().connection;
  ASSERT_GT(second, first);
  ASSERT_TRUE(WaitUntil([&] { return Presence("d1") == "online " + std::to_string(second); }));
  // The old will delivered late (e.g. by a bridge or a slow broker): ignored.
  Message will = DeviceEvent("d1", kPresenceType,
                             {{"presence", "offline"}, {"connection", std::to_string(first)}});
  const uint64_t stale_before = stats_.presence_stale.load();
  ASSERT_EQ(RawPublish(broker_.url(), "d1", "d1-pw", "devices/d1/presence", will), "");
  ASSERT_TRUE(WaitUntil([&] { return stats_.presence_stale.load() > stale_before; }));
  EXPECT_EQ(Presence("d1"), "online " + std::to_string(second));
}

TEST_F(DevicesMqttTest, AclKeepsDevicesToTheirOwnTopicsAndAuthIsRequired) {
  Message ack = DeviceEvent("d2", kAckType,
                            {{"commandid", NewUuidV7().ToString()}, {"ackstatus", "applied"}});
  // d1 may not publish as d2 (MQTT 5: PUBACK 0x87 not authorized), nor pretend to be the
  // server; its own topic is fine.
  EXPECT_EQ(RawPublishAll(broker_.url(), "d1", "d1-pw",
                          {"devices/d2/acks", "devices/d2/twin/desired", "devices/d1/commands",
                           "devices/d1/telemetry"},
                          ack),
            "rc 0 reason 135|rc 0 reason 135|rc 0 reason 135|");
  // Wrong password: refused at connect (CONNACK "bad user name or password").
  EXPECT_EQ(
      RawPublish(broker_.url(), "d1", "wrong", "devices/d1/telemetry", ack).rfind("connect: ", 0),
      0u);
  DeviceOptions o = Dev("d1");
  o.password = "wrong";
  o.connect_timeout = 4000ms;  // Paho needs ~2 s for a connect round trip under load
  DeviceClient dev(o);
  converge::Status st = dev.Start();
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_NE(st.message().find("135"), std::string::npos) << st.message();
  dev.Stop();
}

TEST_F(DevicesMqttTest, SimulatorRunsDevicesThatGoOfflineAndOnline) {
  const std::string log = ::testing::TempDir() + "device_sim_" + std::to_string(::getpid());
  converge::testing::ChildProcess sim;
  ASSERT_TRUE(sim.Start(CONVERGE_DEVICE_SIM_PATH,
                        {"--url", broker_.url(), "--devices", "4", "--prefix", "sim-", "--duration",
                         "3", "--toggle-probability", "0.5", "--seed", "7"},
                        {{"CONVERGE_DEVICE_PASSWORD", "sim-pw"}}, log));
  for (int i = 0; i < 4; ++i) Send("sim-" + std::to_string(i));
  EXPECT_EQ(sim.Wait(30s), 0);
  std::ifstream in(log);
  std::stringstream out;
  out << in.rdbuf();
  EXPECT_NE(out.str().find("seed 7"), std::string::npos) << out.str();
  EXPECT_NE(out.str().find("summary devices=4"), std::string::npos) << out.str();
  EXPECT_EQ(out.str().find("offline_events=0 "), std::string::npos) << out.str();
  // Every simulated device was seen online and offline by the ingest.
  ASSERT_TRUE(WaitUntil([&] {
    return db_.Count(
               "SELECT count(*) FROM converge.device_presence WHERE device_id LIKE "
               "'sim-%' AND state = 'offline'") == 4;
  })) << out.str();
  // Commands sent while they ran reached the devices that were online.
  EXPECT_GE(db_.Count("SELECT count(*) FROM converge.device_commands WHERE status = 'applied'"), 1)
      << out.str();
}

// Device "d1" (password "d1-pw") of a standalone test broker at `url`.
DeviceOptions D1(const std::string& url, std::chrono::milliseconds connect_timeout) {
  DeviceOptions o;
  o.url = url;
  o.device_id = "d1";
  o.password = "d1-pw";
  o.connect_timeout = connect_timeout;
  return o;
}

// The broker is stopped (SIGTERM) or killed (-9) and started again 12 times while a device
// publishes telemetry without pause: after every restart the device reconnects by itself and
// its publishes are acknowledged again within 20 s (the relay's Paho client once wedged after
// such a restart, broker-adapters/README.md "A wedged client is replaced").
TEST(DeviceClientRestartTest, PublishesAgainAfterEveryBrokerRestart) {
  MosquittoBroker broker(
      {.users = {{"d1", "d1-pw"}}, .acl = testing::DeviceAcl("relay", "ingest")});
  ASSERT_TRUE(broker.Start()) << broker.error();
  DeviceOptions o = D1(broker.url(), 2000ms);
  o.reconnect_max = 1000ms;
  o.publish_timeout = 2000ms;
  DeviceClient dev(o);
  ASSERT_OK(dev.Start());
  std::atomic<bool> stop{false};
  std::atomic<int64_t> acked{0};
  std::thread loop([&] {
    while (!stop.load()) {
      if (dev.PublishTelemetry("{\"t\":1}").ok()) {
        acked.fetch_add(1);
      } else {
        std::this_thread::sleep_for(20ms);
      }
    }
  });
  int stuck_round = -1;
  for (int round = 0; round < 12 && stuck_round < 0; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200 + 97 * round % 600));
    if (round % 2 == 0) {
      broker.Stop();
    } else {
      broker.Kill();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100 + 131 * round % 900));
    ASSERT_TRUE(broker.Start()) << broker.error();
    const int64_t before = acked.load();
    const auto t0 = std::chrono::steady_clock::now();
    while (acked.load() < before + 50 && std::chrono::steady_clock::now() - t0 < 20s)
      std::this_thread::sleep_for(20ms);
    if (acked.load() < before + 50) stuck_round = round;
  }
  stop.store(true);
  loop.join();
  EXPECT_EQ(stuck_round, -1) << "no acknowledged telemetry within 20 s after restart "
                             << stuck_round << "; publish failures "
                             << dev.stats().publish_failures;
  dev.Stop();
}

// The state file keeps the counters across restarts: a counter ahead of the clock (e.g. the
// clock was set back after a reboot) still grows, so a stale will stays stale.
TEST(DeviceStateFileTest, ConnectionCounterGrowsAcrossRestartsEvenWhenTheClockIsBehind) {
  MosquittoBroker broker({.users = {{"d1", "d1-pw"}},
                          .acl = testing::DeviceAcl("relay", "ingest"),
                          .persistence = false});
  ASSERT_TRUE(broker.Start()) << broker.error();
  const std::string state = ::testing::TempDir() + "device_state_" + std::to_string(::getpid());
  DeviceOptions o = D1(broker.url(), 4000ms);
  o.state_file = state;
  const int64_t ahead = 4'000'000'000'000;  // year 2096 in Unix ms
  std::ofstream(state) << "connection " << ahead << "\nreported 7\napplied 3\n";
  {
    DeviceClient dev(o);
    ASSERT_OK(dev.Start());
    EXPECT_EQ(dev.stats().connection, ahead + 1);
    EXPECT_EQ(dev.stats().applied_desired_version, 3);
    dev.Stop();
  }
  DeviceClient again(o);
  ASSERT_OK(again.Start());
  EXPECT_EQ(again.stats().connection, ahead + 2);
  again.Stop();
  std::remove(state.c_str());
}

// TLS: a device connects over ssl:// with the CA that signed the broker's certificate (host
// name checked against the certificate's 127.0.0.1) and is refused with an unrelated CA.
TEST(DevicesTlsTest, DeviceConnectsOverTlsWithTheRightCaOnly) {
  MosquittoBroker broker({.users = {{"d1", "d1-pw"}},
                          .acl = testing::DeviceAcl("relay", "ingest"),
                          .persistence = false,
                          .tls_listener = true});
  ASSERT_TRUE(broker.Start()) << broker.error();
  DeviceOptions o = D1(broker.tls_url(), 4000ms);
  o.tls.ca_file = broker.ca_file();
  {
    DeviceClient dev(o);
    ASSERT_OK(dev.Start());
    EXPECT_TRUE(dev.stats().connected);
    EXPECT_TRUE(dev.PublishTelemetry("{\"t\":1}").ok());
    dev.Stop();
  }
  o.tls.ca_file = broker.other_ca_file();
  o.connect_timeout = 1500ms;
  DeviceClient wrong(o);
  EXPECT_EQ(wrong.Start().code(), StatusCode::kUnavailable);
  EXPECT_EQ(wrong.stats().connects, 0u);
  wrong.Stop();
}

}  // namespace
}  // namespace converge::pubsub
