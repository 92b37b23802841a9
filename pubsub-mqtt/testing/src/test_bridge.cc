#include "converge/pubsub/testing/test_bridge.h"

#include <mqtt/async_client.h>
#include <unistd.h>

#include "converge/common/envelope.h"
#include "converge/pubsub/protocol.h"

namespace converge::pubsub::testing {
namespace {

std::string Describe(const ::mqtt::exception& e) {
  return "rc " + std::to_string(e.get_return_code()) + ", reason " +
         std::to_string(e.get_reason_code()) + ": " + e.what();
}

::mqtt::connect_options Options(const std::string& user, const std::string& pw) {
  ::mqtt::connect_options opts;
  opts.set_mqtt_version(MQTTVERSION_5);
  opts.set_clean_start(true);
  opts.set_keep_alive_interval(std::chrono::seconds(30));
  opts.set_connect_timeout(std::chrono::seconds(5));
  opts.set_automatic_reconnect(std::chrono::seconds(1), std::chrono::seconds(2));
  opts.set_user_name(user);
  opts.set_password(pw);
  return opts;
}

class DeviceTestPublisher final : public broker::Publisher {
 public:
  DeviceTestPublisher(const std::string& url, std::string user, std::string pw)
      : cli_(url, "converge-test-relay-" + std::to_string(::getpid()),
             ::mqtt::create_options(MQTTVERSION_5), nullptr),
        user_(std::move(user)),
        pw_(std::move(pw)) {}
  ~DeviceTestPublisher() override { Close(std::chrono::milliseconds(1000)); }

  std::vector<broker::DeliveryResult> PublishBatch(std::span<const Message* const> messages,
                                                   std::chrono::milliseconds timeout) override {
    std::vector<broker::DeliveryResult> out(messages.size());
    Status conn = CheckConnected(timeout);
    for (size_t i = 0; i < messages.size(); ++i) {
      if (!conn.ok()) {
        out[i].status = conn;
        continue;
      }
      const Message& m = *messages[i];
      auto props = EncodeMqttUserProperties(m);
      if (!props.ok()) {
        out[i].status = props.status();
        continue;
      }
      ::mqtt::properties p;
      for (const auto& [k, v] : props->user_properties)
        p.add(::mqtt::property(::mqtt::property::USER_PROPERTY, k, v));
      if (!props->content_type.empty())
        p.add(::mqtt::property(::mqtt::property::CONTENT_TYPE, props->content_type));
      bool retain = false;
      for (const auto& [k, v] : m.headers) {
        if (k == kHeaderRetain) retain = v == "true";
        if (k == kHeaderResponseTopic) p.add(::mqtt::property(::mqtt::property::RESPONSE_TOPIC, v));
        if (k == kHeaderCorrelationData)
          p.add(::mqtt::property(::mqtt::property::CORRELATION_DATA, v));
      }
      if (m.expires_at) {
        auto left = std::chrono::ceil<std::chrono::seconds>(*m.expires_at -
                                                            std::chrono::system_clock::now());
        // The relay already dead-letters rows that expired before the claim (without parking
        // the key); a row that expires between claim and publish gets the shortest expiry
        // instead of an error that would park the device's key.
        if (left.count() <= 0) left = std::chrono::seconds(1);
        p.add(::mqtt::property(::mqtt::property::MESSAGE_EXPIRY_INTERVAL,
                               static_cast<int>(left.count())));
      }
      auto msg = ::mqtt::message::create(m.topic, m.payload, 1, retain);
      msg->set_properties(std::move(p));
      try {
        if (!cli_.publish(msg)->wait_for(timeout))
          out[i].status = Status::DeadlineExceeded("no PUBACK");
      } catch (const ::mqtt::exception& e) {
        out[i].status = e.get_reason_code() >= 0x80
                            ? Status::FailedPrecondition("refused: " + Describe(e))
                            : Status::Unavailable("publish failed: " + Describe(e));
      }
    }
    return out;
  }

  Status CheckConnected(std::chrono::milliseconds timeout) override {
    if (cli_.is_connected()) return Status::Ok();
    try {
      if (!ever_) {
        ::mqtt::connect_options opts = Options(user_, pw_);
        if (!cli_.connect(opts)->wait_for(timeout)) return Status::Unavailable("connect timeout");
        ever_ = true;
        return Status::Ok();
      }
    } catch (const ::mqtt::exception& e) {
      return Status::Unavailable("connect failed: " + Describe(e));
    }
    return Status::Unavailable("reconnecting");
  }

  std::string Name() const override { return "mqtt-test"; }

  void Close(std::chrono::milliseconds timeout) override {
    try {
      if (cli_.is_connected()) cli_.disconnect()->wait_for(timeout);
    } catch (const ::mqtt::exception&) {
    }
  }

 private:
  ::mqtt::async_client cli_;
  std::string user_, pw_;
  bool ever_ = false;
};

}  // namespace

std::unique_ptr<broker::Publisher> MakeDeviceTestPublisher(const std::string& url,
                                                           const std::string& username,
                                                           const std::string& password) {
  return std::make_unique<DeviceTestPublisher>(url, username, password);
}

}  // namespace converge::pubsub::testing
