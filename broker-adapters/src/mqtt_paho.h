// Private to broker-adapters: the Paho pieces the MQTT publisher and source share.
#pragma once

#include <string>

#include <mqtt/async_client.h>

#include "converge/broker/mqtt.h"
#include "converge/common/status.h"

namespace converge::broker::mqtt_internal {

// Connect options for `o` (MQTT 5). The caller sets properties (session expiry) on the returned
// lvalue: Paho 1.2.0 bug #445 leaves a copied connect_options pointing at the original's
// properties.
::mqtt::connect_options ConnectOptions(const MqttOptions& o, bool clean_start);

// Name of an MQTT 5 reason code ("not authorized" for 0x87).
std::string ReasonName(int reason);

// A Paho exception as text: return code, reason code and its name (no secrets inside).
std::string Describe(const ::mqtt::exception& e);

// "tcp://127.0.0.1:1883" etc. with MQTT 5 create options, no persistence.
std::unique_ptr<::mqtt::async_client> NewClient(const MqttOptions& o, const std::string& id);

}  // namespace converge::broker::mqtt_internal
