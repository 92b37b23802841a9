// A test stand-in for the relay's MQTT publisher until broker::MakeMqttPublisher maps the device
// headers: MakeDeviceTestPublisher is a broker::Publisher for the real relay engine
// (outbox-relay) that maps the outbox headers of protocol.h exactly as the relay's MqttPublisher
// must: mqtt.retain -> RETAIN, mqtt.response_topic -> Response Topic, mqtt.correlation_data ->
// Correlation Data, expires_at -> Message Expiry Interval; CloudEvents binary mode (all headers
// also as user properties).
// Thread safety: as broker::Publisher.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "converge/broker/publisher.h"

namespace converge::pubsub::testing {

std::unique_ptr<broker::Publisher> MakeDeviceTestPublisher(const std::string& url,
                                                           const std::string& username,
                                                           const std::string& password);

}  // namespace converge::pubsub::testing
