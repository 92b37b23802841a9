// Test stand-ins for the two MQTT adapters of broker-adapters, so that the device features can
// be tested end to end before those adapters map every MQTT 5 feature:
//   MakeDeviceTestPublisher  a broker::Publisher for the real relay engine (outbox-relay) that
//                            maps the outbox headers of protocol.h exactly as the relay's
//                            MqttPublisher must: mqtt.retain -> RETAIN, mqtt.response_topic ->
//                            Response Topic, mqtt.correlation_data -> Correlation Data,
//                            expires_at -> Message Expiry Interval; CloudEvents binary mode.
//   IngestBridge             subscribes to the device -> server topics and appends what arrives
//                            to a FakeSource-like sink (the consumer runtime then runs the real
//                            handlers); Paho acknowledges on arrival, so this is not the
//                            at-least-once MqttSource, only a transport for tests.
// Thread safety: as broker::Publisher; IngestBridge's sink is called on Paho's thread.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "converge/broker/publisher.h"

namespace converge::pubsub::testing {

std::unique_ptr<broker::Publisher> MakeDeviceTestPublisher(const std::string& url,
                                                           const std::string& username,
                                                           const std::string& password);

class IngestBridge {
 public:
  // (MQTT topic, user properties, payload)
  using Sink = std::function<void(
      const std::string&, std::vector<std::pair<std::string, std::string>>, const std::string&)>;
  IngestBridge(std::string url, std::string username, std::string password, Sink sink);
  ~IngestBridge();
  // Connects (clean start) and subscribes to `filters`. "" on success, else the error.
  std::string Start(const std::vector<std::string>& filters);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace converge::pubsub::testing
