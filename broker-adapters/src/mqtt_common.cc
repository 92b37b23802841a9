// Shared MQTT pieces: option checks, topic mapping and matching, connect options, reason codes,
// and the record decoder.
#include <algorithm>
#include <cstdio>
#include <random>

#include "converge/broker/mqtt.h"
#include "converge/common/envelope.h"
#include "mqtt_paho.h"

namespace converge::broker {

Status MqttOptions::Validate() const {
  if (url.empty()) return Status::InvalidArgument("mqtt.url must be set");
  const bool tcp = url.rfind("tcp://", 0) == 0 || url.rfind("mqtt://", 0) == 0;
  const bool tls_url = url.rfind("ssl://", 0) == 0 || url.rfind("mqtts://", 0) == 0;
  if (!tcp && !tls_url)
    return Status::InvalidArgument("mqtt.url must start with tcp://, mqtt://, ssl:// or mqtts://");
  if (!tls_url && (!tls.ca_file.empty() || !tls.cert_file.empty() || !tls.key_file.empty()))
    return Status::InvalidArgument("mqtt.tls.* options need an ssl:// or mqtts:// mqtt.url");
  if (tls.cert_file.empty() != tls.key_file.empty())
    return Status::InvalidArgument("mqtt.tls.cert_file and mqtt.tls.key_file go together");
  if (client_id.size() > 65535) return Status::InvalidArgument("mqtt.client_id is too long");
  if (!password.empty() && username.empty())
    return Status::InvalidArgument("mqtt.password needs mqtt.username");
  if (keep_alive.count() < 1 || keep_alive.count() > 65535)
    return Status::InvalidArgument("mqtt.keep_alive must be in [1s, 65535s]");
  if (connect_timeout.count() < 1)
    return Status::InvalidArgument("mqtt.connect_timeout must be >= 1s");
  if (reconnect_min.count() < 1 || reconnect_max < reconnect_min)
    return Status::InvalidArgument("mqtt.reconnect_min must be >= 1s and <= mqtt.reconnect_max");
  if (qos != 1 && qos != 2) return Status::InvalidArgument("mqtt.qos must be 1 or 2");
  if (max_inflight < 1 || max_inflight > 65535)
    return Status::InvalidArgument("mqtt.max_inflight must be in [1, 65535]");
  if (topic_template.empty()) return Status::InvalidArgument("mqtt.topic_template must be set");
  if (topic_template.find_first_of("+#") != std::string::npos)
    return Status::InvalidArgument("mqtt.topic_template must not contain '+' or '#'");
  if (session_expiry.count() < 0 || session_expiry.count() > 0xFFFFFFFFLL)
    return Status::InvalidArgument("mqtt.session_expiry must be in [0, 2^32-1] seconds");
  if (shared_group.find_first_of("/+#") != std::string::npos)
    return Status::InvalidArgument("mqtt.shared_group must not contain '/', '+' or '#'");
  return Status::Ok();
}

Result<std::string> MqttTopicFor(std::string_view tmpl, const Message& message) {
  std::string out;
  for (size_t i = 0; i < tmpl.size();) {
    if (tmpl.compare(i, 7, "{topic}") == 0) {
      out += message.topic;
      i += 7;
    } else if (tmpl.compare(i, 5, "{key}") == 0) {
      if (message.subject.empty())
        return Status::InvalidArgument("mqtt topic template uses {key} but the message has no key");
      if (message.subject.find_first_of(std::string_view("/+#\0", 4)) != std::string::npos)
        return Status::InvalidArgument("key \"" + message.subject +
                                       "\" cannot be an MQTT topic level ('/', '+', '#' or NUL)");
      out += message.subject;
      i += 5;
    } else {
      out += tmpl[i++];
    }
  }
  if (out.empty()) return Status::InvalidArgument("mqtt topic is empty");
  if (out.size() > 65535) return Status::InvalidArgument("mqtt topic is longer than 65535 bytes");
  if (out.find_first_of(std::string_view("+#\0", 3)) != std::string::npos)
    return Status::InvalidArgument("mqtt topic \"" + out + "\" contains a wildcard or NUL");
  return out;
}

bool MqttTopicMatches(std::string_view filter, std::string_view topic) {
  if (filter.rfind("$share/", 0) == 0) {
    const auto slash = filter.find('/', 7);
    if (slash == std::string_view::npos) return false;
    filter.remove_prefix(slash + 1);
  }
  // MQTT 4.7.2: filters starting with a wildcard do not match topics starting with '$'.
  if (!topic.empty() && topic[0] == '$' && !filter.empty() &&
      (filter[0] == '+' || filter[0] == '#'))
    return false;
  size_t f = 0, t = 0;
  while (true) {
    const size_t fe = filter.find('/', f);
    const std::string_view flevel =
        filter.substr(f, fe == std::string_view::npos ? std::string_view::npos : fe - f);
    if (flevel == "#") return true;
    if (t > topic.size()) return false;
    const size_t te = topic.find('/', t);
    const std::string_view tlevel =
        topic.substr(t, te == std::string_view::npos ? std::string_view::npos : te - t);
    if (flevel != "+" && flevel != tlevel) return false;
    const bool flast = fe == std::string_view::npos, tlast = te == std::string_view::npos;
    if (flast && tlast) return true;
    if (tlast) {
      // "a/#" matches "a" (the parent level).
      return filter.substr(fe + 1) == "#";
    }
    if (flast) return false;
    f = fe + 1;
    t = te + 1;
  }
}

std::chrono::milliseconds MaxProcessingTime(const MqttOptions& options) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(options.keep_alive) / 2;
}

Result<Message> DecodeMqttRecord(const ReceivedRecord& record) {
  const std::string topic = record.key.value_or(record.topic);
  if (record.headers.empty() && record.content_type.empty())
    return DecodeMqtt311(topic, record.payload);
  return DecodeMqtt5(topic, record.content_type, record.headers, record.payload);
}

namespace mqtt_internal {

::mqtt::connect_options ConnectOptions(const MqttOptions& o, bool clean_start) {
  ::mqtt::connect_options opts;
  opts.set_mqtt_version(MQTTVERSION_5);
  opts.set_clean_start(clean_start);
  opts.set_keep_alive_interval(o.keep_alive);
  opts.set_connect_timeout(o.connect_timeout);
  opts.set_automatic_reconnect(o.reconnect_min, o.reconnect_max);
  opts.set_max_inflight(o.max_inflight);
  if (!o.username.empty()) opts.set_user_name(o.username);
  if (!o.password.empty()) opts.set_password(o.password);
  const bool tls = o.url.rfind("ssl://", 0) == 0 || o.url.rfind("mqtts://", 0) == 0;
  if (tls) {
    ::mqtt::ssl_options ssl;
    if (!o.tls.ca_file.empty()) ssl.set_trust_store(o.tls.ca_file);
    if (!o.tls.cert_file.empty()) ssl.set_key_store(o.tls.cert_file);
    if (!o.tls.key_file.empty()) ssl.set_private_key(o.tls.key_file);
    if (!o.tls.key_password.empty()) ssl.set_private_key_password(o.tls.key_password);
    ssl.set_enable_server_cert_auth(true);
    ssl.set_verify(o.tls.verify_hostname);
    opts.set_ssl(std::move(ssl));
  }
  return opts;
}

std::string ReasonName(int reason) {
  switch (reason) {
    case 0x00:
      return "success";
    case 0x10:
      return "no matching subscribers";
    case 0x80:
      return "unspecified error";
    case 0x81:
      return "malformed packet";
    case 0x82:
      return "protocol error";
    case 0x83:
      return "implementation specific error";
    case 0x84:
      return "unsupported protocol version";
    case 0x85:
      return "client identifier not valid";
    case 0x86:
      return "bad user name or password";
    case 0x87:
      return "not authorized";
    case 0x88:
      return "server unavailable";
    case 0x89:
      return "server busy";
    case 0x8A:
      return "banned";
    case 0x8C:
      return "bad authentication method";
    case 0x90:
      return "topic name invalid";
    case 0x91:
      return "packet identifier in use";
    case 0x92:
      return "packet identifier not found";
    case 0x93:
      return "receive maximum exceeded";
    case 0x95:
      return "packet too large";
    case 0x97:
      return "quota exceeded";
    case 0x99:
      return "payload format invalid";
    case 0x9A:
      return "retain not supported";
    case 0x9B:
      return "qos not supported";
    case 0x9F:
      return "connection rate exceeded";
    default:
      return "reason " + std::to_string(reason);
  }
}

std::string Describe(const ::mqtt::exception& e) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%02X", e.get_reason_code() & 0xFF);
  std::string out = "paho rc " + std::to_string(e.get_return_code());
  if (e.get_reason_code() != 0)
    out += ", reason " + std::string(buf) + " " + ReasonName(e.get_reason_code());
  return out;
}

std::unique_ptr<::mqtt::async_client> NewClient(const MqttOptions& o, const std::string& id) {
  // Paho counts every publish not yet written to the socket against max_buffered_messages (also
  // while connected): leave room for a whole in-flight window, or a large window is refused (-12).
  ::mqtt::create_options co(MQTTVERSION_5, std::max(100, 2 * o.max_inflight));
  return std::make_unique<::mqtt::async_client>(o.url, id, co, nullptr);
}

}  // namespace mqtt_internal
}  // namespace converge::broker
