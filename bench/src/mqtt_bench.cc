// The plain Paho C++ QoS 1 publisher the relay's MQTT target is compared with.
#include <deque>

#include <mqtt/async_client.h>

#include "converge/common/uuid.h"
#include "measurements.h"

namespace converge::bench {

PahoResult PahoQos1(const std::string& url, const std::string& topic, long messages, int window) {
  std::string server = url;
  if (server.rfind("mqtt://", 0) == 0) server = "tcp://" + server.substr(7);
  mqtt::async_client client(server, "converge-bench-" + NewUuidV7().ToString().substr(0, 18),
                            mqtt::create_options(MQTTVERSION_3_1_1));
  auto opts = mqtt::connect_options_builder()
                  .clean_session(true)
                  .max_inflight(window)
                  .keep_alive_interval(std::chrono::seconds(30))
                  .finalize();
  try {
    client.connect(opts)->wait_for(std::chrono::seconds(10));
    if (!client.is_connected()) throw BenchError("MQTT: not connected to " + server);
    const std::string payload = "{\"n\":1,\"pad\":\"" + std::string(100, 'x') + "\"}";
    PahoResult r;

    // Windowed: keep up to `window` publishes waiting for their PUBACK.
    auto start = Clock::now();
    std::deque<mqtt::delivery_token_ptr> inflight;
    for (long i = 0; i < messages; ++i) {
      if (static_cast<int>(inflight.size()) >= window) {
        inflight.front()->wait();
        inflight.pop_front();
      }
      inflight.push_back(client.publish(topic, payload.data(), payload.size(), 1, false));
    }
    for (auto& t : inflight) t->wait();
    r.windowed_per_s = static_cast<double>(messages) / SecondsSince(start);

    // One at a time: publish, wait for PUBACK.
    const long sync_messages = std::max<long>(1, messages / 4);
    start = Clock::now();
    for (long i = 0; i < sync_messages; ++i)
      client.publish(topic, payload.data(), payload.size(), 1, false)->wait();
    r.sync_per_s = static_cast<double>(sync_messages) / SecondsSince(start);
    client.disconnect()->wait();
    return r;
  } catch (const mqtt::exception& e) {
    throw BenchError(std::string("MQTT (") + server + "): " + e.what());
  }
}

}  // namespace converge::bench
