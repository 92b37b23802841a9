// MQTT 5 implementations of Publisher and MessageSource, built on Eclipse Paho C++ 1.2 (which
// stays out of this header). See broker-adapters/README.md "MQTT" for the guarantees, the
// reason-code mapping and the Paho/mosquitto behaviour they rely on
// (/work/shared/reference/mqtt.md has the verified details).
//
//   MqttOptions options;
//   options.url = "tcp://127.0.0.1:1883";          // ssl://host:8883 for TLS
//   options.username = "relay";
//   options.password = "...";                      // never logged
//   options.topic_template = "dev/{key}/cmd";      // outbox topic/key -> MQTT topic
//   CONVERGE_ASSIGN_OR_RETURN(auto publisher, MakeMqttPublisher(options));
//
// Thread safety: the options are values. The returned objects follow the contracts in
// publisher.h and source.h.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "converge/broker/publisher.h"
#include "converge/broker/source.h"
#include "converge/common/message.h"
#include "converge/common/status.h"

namespace converge::broker {

// TLS for ssl:// URLs (PEM files). Empty strings leave Paho's defaults.
struct MqttTlsOptions {
  std::string ca_file;          // trust store: the CA that signed the broker's certificate
  std::string cert_file;        // client certificate (mutual TLS)
  std::string key_file;         // client private key
  std::string key_password;     // secret: never logged
  bool verify_hostname = true;  // check the broker's host name against its certificate
};

// Connection settings shared by the publisher and the source.
struct MqttOptions {
  // tcp://host:port, mqtt://host:port, ssl://host:port or mqtts://host:port. Required.
  std::string url;
  // MQTT client id. Publisher: empty = "converge-relay-<random>". Source: required and stable
  // across restarts (the persistent session that redelivers unacknowledged messages is keyed by
  // it); two live clients with the same id disconnect each other.
  std::string client_id;
  std::string username;
  std::string password;  // secret: never logged
  MqttTlsOptions tls;
  // Keepalive. The source holds a message's PUBACK (and with it Paho's receive thread) until
  // Ack(), so handler + commit time must stay well below this; see MaxProcessingTime().
  std::chrono::seconds keep_alive{30};
  std::chrono::seconds connect_timeout{5};
  // Automatic reconnect interval bounds (Paho doubles from min to max).
  std::chrono::seconds reconnect_min{1};
  std::chrono::seconds reconnect_max{10};
  // Publisher: 1 (default) or 2. Source: the subscription QoS, 1 (default) or 2.
  int qos = 1;
  // Publisher: at most this many PUBLISHes awaiting their PUBACK at once. Keep it at or below
  // the broker's receive maximum (mosquitto: max_inflight_messages, 20 by default): above it
  // Paho C 1.3.12 sends the excess only once a second (broker-adapters/README.md).
  int max_inflight = 16;
  // Publisher: the MQTT topic of a message. "{topic}" is replaced by the outbox topic and
  // "{key}" by the key (Message::subject); a key containing '/', '+', '#' or NUL, or an empty
  // key where "{key}" is used, makes the message kInvalidArgument (dead-lettered).
  std::string topic_template = "{topic}";
  // Source: session expiry of the persistent session (clean start = false). Messages that
  // arrive while the consumer is away are kept by the broker for this long.
  std::chrono::seconds session_expiry{std::chrono::hours(24)};
  // Source: subscribe as "$share/<shared_group>/<filter>" (load sharing between members;
  // messages of one topic are spread over the members, so per-device order is lost). Empty:
  // plain subscriptions (ordered per topic).
  std::string shared_group;

  // Names the first bad field: "mqtt.url must start with tcp://, mqtt://, ssl:// or mqtts://".
  Status Validate() const;
};

// The publisher. Never connects in the factory; the first PublishBatch/CheckConnected does.
// Errors: kInvalidArgument naming the bad option.
// Plain headers of a message that ask for MQTT 5 features (they also travel as user
// properties): "mqtt.retain" ("true"/"false": the RETAIN flag), "mqtt.response_topic" (the
// Response Topic property), "mqtt.correlation_data" (the Correlation Data property, the value's
// bytes). A bad value makes the message kInvalidArgument.
Result<std::unique_ptr<Publisher>> MakeMqttPublisher(const MqttOptions& options);

// The source. Subscribe() takes MQTT topic filters ('+' and '#' allowed); each filter is one
// "partition" for the runtime: records carry topic = the filter they matched (the first in
// Subscribe() order), partition 0, key = the PUBLISH topic name, offset = a counter that only
// grows, also across restarts (it starts above every offset the runtime returns from
// OnAssigned or passes to Seek). Decode records with DecodeMqttRecord. When Subscribe() returns
// kUnavailable (the broker did not answer within connect_timeout) it may be called again; the
// first connect attempt may still complete meanwhile.
Result<std::unique_ptr<MessageSource>> MakeMqttSource(const MqttOptions& options);

// Decodes a record from the MQTT source (binary mode via the user properties, structured mode
// by content type; a record without user properties or content type is read as MQTT 3.1.1
// structured JSON). Message::topic is the PUBLISH topic name.
Result<Message> DecodeMqttRecord(const ReceivedRecord& record);

// The MQTT topic for a message under `topic_template` (see MqttOptions::topic_template).
Result<std::string> MqttTopicFor(std::string_view topic_template, const Message& message);

// True when `topic` matches the MQTT filter (`+` one level, `#` the rest, also the parent).
// A "$share/<group>/" prefix on the filter is ignored.
bool MqttTopicMatches(std::string_view filter, std::string_view topic);

// The longest a consumer may take between Poll() returning an MQTT record and Ack() for it:
// half the keepalive. Past 1.5 × keepalive mosquitto drops the connection (Paho cannot send
// pings while the PUBACK is held) and redelivers the message, which would run again.
std::chrono::milliseconds MaxProcessingTime(const MqttOptions& options);

}  // namespace converge::broker
