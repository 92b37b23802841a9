// Integration tests of the server side with real PostgreSQL (CONVERGE_PG_URL, a fresh migrated
// database per test): SendCommand/SetDesired in the caller's transaction, the ingest handlers
// run by the real consumer runtime (FakeSource as the broker), and the sweep.
#include <gtest/gtest.h>

#include <functional>

#include "converge/common/envelope.h"
#include "converge/common/metrics.h"
#include "converge/common/uuid.h"
#include "converge/consumer/consumer.h"
#include "converge/consumer/testing/fake_source.h"
#include "converge/pubsub/devices.h"
#include "converge/testing/pg_fixture.h"

namespace converge::pubsub {
namespace {

using consumer::testing::FakeSource;
using namespace std::chrono_literals;
using Headers = std::vector<std::pair<std::string, std::string>>;

// An MQTT 5 user-property list (CloudEvents binary mode) for a device message.
Headers DeviceEvent(std::string_view type, const std::string& device,
                    const std::map<std::string, std::string>& ext) {
  Message m;
  m.id = NewUuidV7().ToString();
  m.source = DeviceSource(device);
  m.type = std::string(type);
  m.subject = device;
  m.topic = "devices/" + device;
  m.time = std::chrono::system_clock::now();
  m.extensions = ext;
  auto props = EncodeMqttUserProperties(m);
  EXPECT_TRUE(props.ok()) << props.status();
  return props.ok() ? props->user_properties : Headers{};
}

class DevicesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(db_.ok());
    conn_ = db_.Connect();
    auto src = std::make_unique<FakeSource>();
    src_ = src.get();
    consumer::ConsumerOptions o;
    o.group = "devices";
    o.topics = {"devices"};
    o.database_url = db_.url();
    o.poll_timeout = 10ms;
    o.linger = 1ms;
    o.max_attempts = 2;
    o.retry_backoff = {1ms, 2ms, 2.0, 0.0};
    consumer_ = std::make_unique<consumer::Consumer>(o, std::move(src));
    // MQTT records: the PUBLISH topic is the record key (as the MQTT source delivers it).
    consumer_->SetDecoder([](const broker::ReceivedRecord& r) {
      return DecodeMqtt5(r.key.value_or(r.topic), r.content_type, r.headers, r.payload);
    });
    RegisterDeviceHandlers(*consumer_, &stats_);
    ASSERT_TRUE(consumer_->Init().ok());
    src_->Rebalance({}, {{"devices", 0}});
  }

  // Delivers one device message and runs the consumer until it is committed.
  void Deliver(TopicKind kind, const std::string& device, std::string_view type,
               const std::map<std::string, std::string>& ext, const std::string& payload = "{}",
               const std::string& topic_device = "") {
    const std::string topic = DeviceTopic(topic_device.empty() ? device : topic_device, kind);
    const int64_t off = src_->Produce("devices", 0, payload, DeviceEvent(type, device, ext), topic);
    const auto end = std::chrono::steady_clock::now() + 10s;
    while (src_->AckedPosition({"devices", 0}) <= off && std::chrono::steady_clock::now() < end)
      ASSERT_TRUE(consumer_->RunOnce().ok());
    ASSERT_GT(src_->AckedPosition({"devices", 0}), off) << "message not committed";
  }

  void Ack(const std::string& device, const std::string& command, const std::string& status,
           const std::string& topic_device = "") {
    Deliver(TopicKind::kAcks, device, kAckType,
            {{"commandid", command}, {"ackstatus", status}, {"ackdetail", "d-" + status}}, "{}",
            topic_device);
  }

  std::string Send(const std::string& device, std::chrono::milliseconds ttl = 60s) {
    pqxx::work tx(*conn_);
    auto sent = SendCommand(
        tx, {.device_id = device, .name = "reboot", .payload = "{\"delay\":1}", .ttl = ttl});
    EXPECT_TRUE(sent.ok()) << sent.status();
    tx.commit();
    return sent.ok() ? sent->command_id : "";
  }

  std::string CommandStatus(const std::string& id) {
    return db_.Scalar("SELECT status FROM converge.device_commands WHERE id = '" + id + "'");
  }
  // The relay published the command: its outbox row is gone.
  void Publish(const std::string& id) {
    db_.Scalar("DELETE FROM converge.outbox WHERE message_id = '" + id + "'");
  }
  // Moves a command's last outbox write (resend clock) an hour into the past.
  void Age(const std::string& id) {
    db_.Scalar(
        "UPDATE converge.device_commands SET last_sent_at = now() - interval '1 hour' "
        "WHERE id = '" +
        id + "'");
  }
  void Expire(const std::string& id) {
    db_.Scalar(
        "UPDATE converge.device_commands SET created_at = now() - interval '2 hours', "
        "expires_at = now() - interval '1 second' WHERE id = '" +
        id + "'");
  }
  void AgeTwin(const std::string& device) {
    db_.Scalar(
        "UPDATE converge.device_twins SET desired_at = now() - interval '1 hour', "
        "desired_sent_at = now() - interval '1 hour' WHERE device_id = '" +
        device + "'");
  }
  long long Dead() { return db_.Count("SELECT count(*) FROM converge.dead_letters"); }

  converge::testing::TestDatabase db_;
  std::unique_ptr<pqxx::connection> conn_;
  FakeSource* src_ = nullptr;
  DeviceIngestStats stats_;
  std::unique_ptr<consumer::Consumer> consumer_;
};

TEST_F(DevicesTest, SendCommandWritesRowAndOutboxMessageInTheCallersTransaction) {
  const std::string id = Send("d1", 30s);
  EXPECT_EQ(CommandStatus(id), "pending");
  EXPECT_EQ(db_.Scalar("SELECT topic || ' ' || key || ' ' || type || ' ' || "
                       "(headers->>'mqtt.correlation_data') || ' ' || "
                       "(headers->>'mqtt.response_topic') || ' ' || (headers->>'device.command') "
                       "FROM converge.outbox WHERE message_id = '" +
                       id + "'"),
            "devices/d1/commands d1 converge.device.command " + id + " devices/d1/acks reboot");
  // The outbox expiry is the command's (database clock), to the millisecond.
  EXPECT_EQ(db_.Scalar("SELECT abs(extract(epoch FROM o.expires_at - c.expires_at)) < 0.001 "
                       "FROM converge.outbox o JOIN converge.device_commands c ON c.id = "
                       "o.message_id"),
            "t");
  // Rolled back: neither the row nor the message.
  {
    pqxx::work tx(*conn_);
    ASSERT_TRUE(SendCommand(tx, {.device_id = "d1", .name = "x"}).ok());
    tx.abort();
  }
  EXPECT_EQ(db_.Count("SELECT count(*) FROM converge.device_commands"), 1);
  EXPECT_EQ(db_.Count("SELECT count(*) FROM converge.outbox"), 1);
}

TEST_F(DevicesTest, BadInputIsRefusedByNameAndLeavesTheTransactionUsable) {
  pqxx::work tx(*conn_);
  auto bad_id = SendCommand(tx, {.device_id = "a/b", .name = "x"});
  EXPECT_EQ(bad_id.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad_id.status().message().find("contains '/'"), std::string::npos);
  EXPECT_EQ(SendCommand(tx, {.device_id = "d1", .name = ""}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(SendCommand(tx, {.device_id = "d1", .name = "x", .ttl = 0ms}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(SendCommand(tx, {.device_id = "d1", .name = "x", .command_id = "nope"}).status().code(),
            StatusCode::kInvalidArgument);
  auto bad_json = SetDesired(tx, "d1", "{\"a\":");
  EXPECT_EQ(bad_json.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad_json.status().message().find("desired state is not valid JSON"), std::string::npos);
  EXPECT_EQ(SetDesired(tx, "d1", "[1]").status().code(), StatusCode::kInvalidArgument);
  // Still usable.
  EXPECT_TRUE(SetDesired(tx, "d1", "{\"a\":1}").ok());
  tx.commit();
  EXPECT_EQ(db_.Count("SELECT desired_version FROM converge.device_twins"), 1);
}

TEST_F(DevicesTest, SetDesiredVersionsRetainedSnapshotsAndConflicts) {
  for (int i = 1; i <= 3; ++i) {
    pqxx::work tx(*conn_);
    auto v = SetDesired(tx, "d1", "{\"target\":" + std::to_string(i) + "}");
    ASSERT_TRUE(v.ok()) << v.status();
    EXPECT_EQ(*v, i);
    tx.commit();
  }
  EXPECT_EQ(
      db_.Scalar("SELECT string_agg(headers->>'device.version' || ':' || "
                 "(headers->>'mqtt.retain') || ':' || convert_from(payload, 'UTF8'), ',' "
                 "ORDER BY seq) FROM converge.outbox WHERE topic = 'devices/d1/twin/desired'"),
      "1:true:{\"target\":1},2:true:{\"target\":2},3:true:{\"target\":3}");
  EXPECT_EQ(db_.Count("SELECT count(*) FROM converge.outbox WHERE expires_at IS NOT NULL"), 0);
  pqxx::work tx(*conn_);
  auto conflict = SetDesired(tx, "d1", "{}", 2);
  EXPECT_EQ(conflict.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(conflict.status().message().find("expected 2, stored 3"), std::string::npos);
  auto ok = SetDesired(tx, "d1", "{}", 3);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(*ok, 4);
  EXPECT_EQ(*SetDesired(tx, "new-device", "{}", 0), 1);
  tx.commit();
}

TEST_F(DevicesTest, AcksMoveCommandsForwardOnlyAndStrayAcksAreCountedNotApplied) {
  const std::string a = Send("d1"), b = Send("d1"), c = Send("d2");
  Ack("d1", a, "received");
  EXPECT_EQ(CommandStatus(a), "received");
  Ack("d1", a, "applied");
  EXPECT_EQ(CommandStatus(a), "applied");
  EXPECT_EQ(db_.Scalar("SELECT result FROM converge.device_commands WHERE id = '" + a + "'"),
            "d-applied");
  // Late or repeated acks never move it back or sideways.
  Ack("d1", a, "received");
  Ack("d1", a, "rejected");
  EXPECT_EQ(CommandStatus(a), "applied");
  // A final ack without a received one first is fine.
  Ack("d1", b, "rejected");
  EXPECT_EQ(CommandStatus(b), "rejected");
  // Another device's command (the ack arrived on devices/d1/acks): ignored.
  Ack("d1", c, "applied");
  EXPECT_EQ(CommandStatus(c), "pending");
  // Unknown command id: ignored.
  Ack("d1", NewUuidV7().ToString(), "applied");
  EXPECT_EQ(stats_.acks_applied.load(), 3u);
  EXPECT_EQ(stats_.acks_ignored.load(), 4u);
  EXPECT_EQ(Dead(), 0);
  // The database refuses a backwards move too (forward-only trigger).
  EXPECT_THROW(
      db_.Scalar("UPDATE converge.device_commands SET status = 'sent' WHERE id = '" + a + "'"),
      std::exception);
}

TEST_F(DevicesTest, DuplicateAckMessageIsAppliedOnceByTheInbox) {
  const std::string a = Send("d1");
  Headers h = DeviceEvent(kAckType, "d1", {{"commandid", a}, {"ackstatus", "applied"}});
  src_->Produce("devices", 0, "{}", h, "devices/d1/acks");
  const int64_t off = src_->Produce("devices", 0, "{}", h, "devices/d1/acks");
  while (src_->AckedPosition({"devices", 0}) <= off) ASSERT_TRUE(consumer_->RunOnce().ok());
  EXPECT_EQ(CommandStatus(a), "applied");
  EXPECT_EQ(consumer_->stats().duplicates_skipped, 1u);
  EXPECT_EQ(stats_.acks_applied.load(), 1u);
}

TEST_F(DevicesTest, MalformedDeviceMessagesAreDeadLettered) {
  Deliver(TopicKind::kAcks, "d1", kAckType, {{"ackstatus", "applied"}});  // no id
  Deliver(TopicKind::kAcks, "d1", kAckType, {{"commandid", "x"}, {"ackstatus", "applied"}});
  Deliver(TopicKind::kAcks, "d1", kAckType,
          {{"commandid", NewUuidV7().ToString()}, {"ackstatus", "done"}});
  Deliver(TopicKind::kReported, "d1", kReportedType, {{"reportedversion", "1"}}, "{not json");
  Deliver(TopicKind::kPresence, "d1", kPresenceType, {{"presence", "away"}, {"connection", "1"}});
  EXPECT_EQ(Dead(), 5);
  EXPECT_EQ(db_.Count("SELECT count(*) FROM converge.dead_letters WHERE reason LIKE "
                      "'%commandid%'"),
            2);
}

TEST_F(DevicesTest, StaleAndDuplicateReportsNeverMoveTheTwinBackwards) {
  {
    pqxx::work tx(*conn_);
    ASSERT_TRUE(SetDesired(tx, "d1", "{\"t\":1}").ok());
    ASSERT_TRUE(SetDesired(tx, "d1", "{\"t\":2}").ok());
    tx.commit();
  }
  Deliver(TopicKind::kReported, "d1", kReportedType,
          {{"reportedversion", "10"}, {"desiredversion", "2"}}, "{\"t\":2}");
  Deliver(TopicKind::kReported, "d1", kReportedType,
          {{"reportedversion", "9"}, {"desiredversion", "1"}}, "{\"t\":1}");  // stale
  Deliver(TopicKind::kReported, "d1", kReportedType,
          {{"reportedversion", "10"}, {"desiredversion", "1"}}, "{\"t\":1}");  // same version
  EXPECT_EQ(db_.Scalar("SELECT reported::text || ' ' || reported_version || ' ' || "
                       "applied_desired_version FROM converge.device_twins"),
            "{\"t\": 2} 10 2");
  // A newer report claiming an older desired version keeps applied_desired_version.
  Deliver(TopicKind::kReported, "d1", kReportedType,
          {{"reportedversion", "11"}, {"desiredversion", "1"}}, "{\"t\":1}");
  EXPECT_EQ(db_.Scalar("SELECT reported_version || ' ' || applied_desired_version "
                       "FROM converge.device_twins"),
            "11 2");
  // A version the server never set is capped at desired_version.
  Deliver(TopicKind::kReported, "d1", kReportedType,
          {{"reportedversion", "12"}, {"desiredversion", "99"}}, "{}");
  EXPECT_EQ(db_.Count("SELECT applied_desired_version FROM converge.device_twins"), 2);
  EXPECT_EQ(stats_.reports_applied.load(), 3u);
  EXPECT_EQ(stats_.reports_stale.load(), 2u);
  // A device that reports before anything was desired gets a twin.
  Deliver(TopicKind::kReported, "d9", kReportedType, {{"reportedversion", "1"}}, "{\"x\":1}");
  EXPECT_EQ(db_.Scalar("SELECT desired_version || ' ' || reported::text FROM "
                       "converge.device_twins WHERE device_id = 'd9'"),
            "0 {\"x\": 1}");
}

TEST_F(DevicesTest, StaleWillCannotMarkAReconnectedDeviceOffline) {
  auto presence = [&] {
    return db_.Scalar(
        "SELECT state || ' ' || connection FROM converge.device_presence "
        "WHERE device_id = 'd1'");
  };
  Deliver(TopicKind::kPresence, "d1", kPresenceType,
          {{"presence", "online"}, {"connection", "100"}});
  Deliver(TopicKind::kPresence, "d1", kPresenceType,
          {{"presence", "online"}, {"connection", "200"}});
  // The will of connection 100 arrives after the device reconnected as 200.
  Deliver(TopicKind::kPresence, "d1", kPresenceType,
          {{"presence", "offline"}, {"connection", "100"}});
  EXPECT_EQ(presence(), "online 200");
  EXPECT_EQ(stats_.presence_stale.load(), 1u);
  // The will of the current connection does.
  Deliver(TopicKind::kPresence, "d1", kPresenceType,
          {{"presence", "offline"}, {"connection", "200"}});
  EXPECT_EQ(presence(), "offline 200");
  // A replayed retained "online" of the same connection does not resurrect it.
  Deliver(TopicKind::kPresence, "d1", kPresenceType,
          {{"presence", "online"}, {"connection", "200"}});
  EXPECT_EQ(presence(), "offline 200");
  EXPECT_EQ(stats_.presence_applied.load(), 3u);
}

TEST_F(DevicesTest, SweepMarksSentResendsWithTheSameIdAndExpires) {
  DeviceSweep sweep({.command_resend_interval = 60s, .twin_resend_after = 60s});
  const std::string a = Send("d1"), b = Send("d1");
  // Not published yet: stays pending, nothing re-sent.
  auto r = sweep.RunOnce(*conn_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->marked_sent, 0);
  EXPECT_EQ(r->unacked_commands, 2);
  Publish(a);
  Publish(b);
  r = sweep.RunOnce(*conn_);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->marked_sent, 2);
  EXPECT_EQ(r->resent_commands, 0);  // sent less than the resend interval ago
  EXPECT_EQ(CommandStatus(a), "sent");
  Age(a);
  Expire(b);
  r = sweep.RunOnce(*conn_);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->expired_commands, 1);
  EXPECT_EQ(CommandStatus(b), "expired");
  EXPECT_EQ(r->resent_commands, 1);
  // Re-sent under the same message id (the device dedupes it), with the same expiry.
  EXPECT_EQ(db_.Count("SELECT count(*) FROM converge.outbox o JOIN converge.device_commands c "
                      "ON c.id = o.message_id WHERE o.expires_at = date_trunc('milliseconds', "
                      "c.expires_at) OR abs(extract(epoch FROM o.expires_at - c.expires_at)) < "
                      "0.001"),
            1);
  EXPECT_EQ(db_.Count("SELECT attempts FROM converge.device_commands WHERE id = '" + a + "'"), 2);
  // Still queued in the outbox: not written twice, even when due again.
  Age(a);
  r = sweep.RunOnce(*conn_);
  EXPECT_EQ(r->resent_commands, 0);
  // An ack after expiry does not resurrect the expired command.
  Ack("d1", b, "applied");
  EXPECT_EQ(CommandStatus(b), "expired");
  // A received command without a final ack is re-sent too; an applied one is not.
  Publish(a);
  Ack("d1", a, "received");
  Age(a);
  r = sweep.RunOnce(*conn_);
  EXPECT_EQ(r->resent_commands, 1);
  Publish(a);
  Ack("d1", a, "applied");
  Age(a);
  r = sweep.RunOnce(*conn_);
  EXPECT_EQ(r->resent_commands, 0);
  EXPECT_EQ(r->unacked_commands, 0);
  // Metrics: totals over the runs, gauges from the last one, ingest outcomes.
  metrics::Registry reg;
  ASSERT_TRUE(sweep.RegisterMetrics(reg).ok());
  ASSERT_TRUE(RegisterDeviceIngestMetrics(reg, &stats_).ok());
  const std::string text = reg.Expose();
  EXPECT_NE(text.find("converge_device_sweep_total{action=\"expired\"} 1"), std::string::npos)
      << text;
  EXPECT_NE(text.find("converge_device_sweep_total{action=\"resent_command\"} 2"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("converge_device_unacked_commands 0"), std::string::npos) << text;
  EXPECT_NE(text.find("converge_device_ingest_total{outcome=\"ack_ignored\"} 1"), std::string::npos)
      << text;
}

TEST_F(DevicesTest, SweepWaitsForOfflineDevicesAndResendsWhenTheyComeBack) {
  DeviceSweep sweep({.command_resend_interval = 60s, .twin_resend_after = 60s});
  const std::string a = Send("d1");
  {
    pqxx::work tx(*conn_);
    ASSERT_TRUE(SetDesired(tx, "d1", "{\"t\":1}").ok());
    tx.commit();
  }
  db_.Scalar("DELETE FROM converge.outbox");  // the relay published everything
  Deliver(TopicKind::kPresence, "d1", kPresenceType,
          {{"presence", "offline"}, {"connection", "5"}});
  Age(a);
  AgeTwin("d1");
  auto r = sweep.RunOnce(*conn_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->resent_commands, 0);
  EXPECT_EQ(r->resent_twins, 0);
  EXPECT_EQ(r->unconverged_twins, 1);
  // Online again: the command is due at once, the twin snapshot too (unconverged for longer
  // than twin_resend_after).
  db_.Scalar("UPDATE converge.device_commands SET last_sent_at = now()");
  Deliver(TopicKind::kPresence, "d1", kPresenceType, {{"presence", "online"}, {"connection", "6"}});
  r = sweep.RunOnce(*conn_);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->resent_commands, 1);  // resend_due, although sent "just now"
  EXPECT_EQ(r->resent_twins, 1);
  EXPECT_EQ(db_.Scalar("SELECT (headers->>'device.version') || ' ' || (headers->>'mqtt.retain') "
                       "|| ' ' || convert_from(payload, 'UTF8') FROM converge.outbox "
                       "WHERE topic = 'devices/d1/twin/desired'"),
            "1 true {\"t\": 1}");
  EXPECT_EQ(db_.Count("SELECT desired_resends FROM converge.device_twins"), 1);
  // Converged: no more twin re-sends.
  db_.Scalar("DELETE FROM converge.outbox");
  Deliver(TopicKind::kReported, "d1", kReportedType,
          {{"reportedversion", "1"}, {"desiredversion", "1"}}, "{\"t\":1}");
  AgeTwin("d1");
  r = sweep.RunOnce(*conn_);
  EXPECT_EQ(r->resent_twins, 0);
  EXPECT_EQ(r->unconverged_twins, 0);
}

}  // namespace
}  // namespace converge::pubsub
