// MqttTestClient: an independent MQTT 5 client for tests (plain Paho, none of Converge's
// adapters): subscribes and records what arrives (auto-acked), publishes raw messages.
// Resubscribes on every connect and reconnects automatically.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace converge::testing {

struct ReceivedMqtt {
  std::string topic;
  std::string payload;
  std::vector<std::pair<std::string, std::string>> user_properties;
  std::string content_type;
  int expiry_interval = -1;  // Message Expiry Interval, -1 when absent
  int qos = 0;
  bool dup = false;
  bool retained = false;
  std::string response_topic;    // "" when absent
  std::string correlation_data;  // "" when absent
  // The user property `name`, "" when absent.
  std::string Prop(const std::string& name) const;
};

class MqttTestClient {
 public:
  MqttTestClient(std::string url, std::string client_id, std::string username = "",
                 std::string password = "");
  ~MqttTestClient();

  // Connects (MQTT 5; clean start, or a persistent session of one hour). "" on success, else
  // the error.
  std::string Connect(std::chrono::milliseconds timeout = std::chrono::seconds(5),
                      bool persistent_session = false);
  // Subscribes now and after every reconnect. "" on success, else the error.
  std::string Subscribe(const std::string& filter, int qos = 1);
  // Publishes and waits for the PUBACK: "" on success, else the error (rc, reason).
  std::string Publish(const std::string& topic, const std::string& payload,
                      const std::vector<std::pair<std::string, std::string>>& user_properties = {},
                      const std::string& content_type = "", int qos = 1);
  void Disconnect();

  std::vector<ReceivedMqtt> Received() const;
  // Waits until at least `n` messages arrived.
  bool WaitFor(size_t n, std::chrono::milliseconds timeout) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace converge::testing
