#include "converge/testing/mqtt_client.h"

#include <condition_variable>
#include <mutex>

#include <mqtt/async_client.h>

namespace converge::testing {

std::string ReceivedMqtt::Prop(const std::string& name) const {
  for (const auto& [k, v] : user_properties)
    if (k == name) return v;
  return "";
}

struct MqttTestClient::Impl {
  Impl(std::string url, std::string id, std::string user, std::string pw)
      : cli(url, id, mqtt::create_options(MQTTVERSION_5), nullptr),
        username(std::move(user)),
        password(std::move(pw)) {}
  mqtt::async_client cli;
  std::string username, password;
  mutable std::mutex mu;
  mutable std::condition_variable cv;
  std::vector<ReceivedMqtt> received;
  std::vector<std::pair<std::string, int>> subs;
};

static std::string Describe(const mqtt::exception& e) {
  return "rc " + std::to_string(e.get_return_code()) + " reason " +
         std::to_string(e.get_reason_code()) + ": " + e.what();
}

MqttTestClient::MqttTestClient(std::string url, std::string client_id, std::string username,
                               std::string password)
    : impl_(std::make_unique<Impl>(std::move(url), std::move(client_id), std::move(username),
                                   std::move(password))) {
  impl_->cli.set_message_callback([this](mqtt::const_message_ptr m) {
    ReceivedMqtt r;
    r.topic = m->get_topic();
    r.payload = m->get_payload_str();
    r.qos = m->get_qos();
    r.dup = m->is_duplicate();
    r.retained = m->is_retained();
    const mqtt::properties& p = m->get_properties();
    for (size_t i = 0; i < p.count(mqtt::property::USER_PROPERTY); ++i) {
      auto kv = mqtt::get<mqtt::string_pair>(p, mqtt::property::USER_PROPERTY, i);
      r.user_properties.emplace_back(std::get<0>(kv), std::get<1>(kv));
    }
    if (p.contains(mqtt::property::CONTENT_TYPE))
      r.content_type = mqtt::get<std::string>(p, mqtt::property::CONTENT_TYPE);
    if (p.contains(mqtt::property::RESPONSE_TOPIC))
      r.response_topic = mqtt::get<std::string>(p, mqtt::property::RESPONSE_TOPIC);
    if (p.contains(mqtt::property::CORRELATION_DATA))
      r.correlation_data = mqtt::get<std::string>(p, mqtt::property::CORRELATION_DATA);
    if (p.contains(mqtt::property::MESSAGE_EXPIRY_INTERVAL))
      r.expiry_interval = mqtt::get<int>(p, mqtt::property::MESSAGE_EXPIRY_INTERVAL);
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->received.push_back(std::move(r));
    impl_->cv.notify_all();
  });
  impl_->cli.set_connected_handler([this](const std::string&) {
    std::vector<std::pair<std::string, int>> subs;
    {
      std::lock_guard<std::mutex> lock(impl_->mu);
      subs = impl_->subs;
    }
    for (const auto& [f, q] : subs) {
      try {
        impl_->cli.subscribe(f, q);
      } catch (const mqtt::exception&) {
      }
    }
  });
}

MqttTestClient::~MqttTestClient() { Disconnect(); }

std::string MqttTestClient::Connect(std::chrono::milliseconds timeout, bool persistent_session) {
  mqtt::connect_options opts;
  opts.set_mqtt_version(MQTTVERSION_5);
  opts.set_clean_start(!persistent_session);
  if (persistent_session)
    opts.set_properties(mqtt::properties{{mqtt::property::SESSION_EXPIRY_INTERVAL, 3600}});
  opts.set_keep_alive_interval(std::chrono::seconds(30));
  opts.set_automatic_reconnect(std::chrono::seconds(1), std::chrono::seconds(2));
  if (!impl_->username.empty()) opts.set_user_name(impl_->username);
  if (!impl_->password.empty()) opts.set_password(impl_->password);
  try {
    if (!impl_->cli.connect(opts)->wait_for(timeout)) return "connect timed out";
    return "";
  } catch (const mqtt::exception& e) {
    return Describe(e);
  }
}

std::string MqttTestClient::Subscribe(const std::string& filter, int qos) {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->subs.emplace_back(filter, qos);
  }
  try {
    if (!impl_->cli.subscribe(filter, qos)->wait_for(std::chrono::seconds(5)))
      return "subscribe timed out";
    return "";
  } catch (const mqtt::exception& e) {
    return Describe(e);
  }
}

std::string MqttTestClient::Publish(
    const std::string& topic, const std::string& payload,
    const std::vector<std::pair<std::string, std::string>>& user_properties,
    const std::string& content_type, int qos) {
  auto msg = mqtt::message::create(topic, payload, qos, false);
  mqtt::properties p;
  for (const auto& [k, v] : user_properties)
    p.add(mqtt::property(mqtt::property::USER_PROPERTY, k, v));
  if (!content_type.empty()) p.add(mqtt::property(mqtt::property::CONTENT_TYPE, content_type));
  msg->set_properties(std::move(p));
  try {
    if (!impl_->cli.publish(msg)->wait_for(std::chrono::seconds(5))) return "publish timed out";
    return "";
  } catch (const mqtt::exception& e) {
    return Describe(e);
  }
}

void MqttTestClient::Disconnect() {
  try {
    if (impl_->cli.is_connected()) impl_->cli.disconnect()->wait_for(std::chrono::seconds(2));
  } catch (const mqtt::exception&) {
  }
}

std::vector<ReceivedMqtt> MqttTestClient::Received() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->received;
}

bool MqttTestClient::WaitFor(size_t n, std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lock(impl_->mu);
  return impl_->cv.wait_for(lock, timeout, [&] { return impl_->received.size() >= n; });
}

}  // namespace converge::testing
