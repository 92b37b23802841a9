// DeviceClient on Paho C++ 1.2 (MQTT 5). Paho rules followed (mqtt.md §2): the client is created
// with create_options(MQTTVERSION_5) and no Paho persistence; connect properties and the will are
// set on the final connect_options lvalue (bug #445); no automatic reconnect (each connection
// needs a new will with a new counter, which Paho's reconnect cannot change), so the worker
// reconnects itself and subscribes again after every connect; callbacks only queue and never
// wait; every Paho call is wrapped in try/catch.
#include "converge/pubsub/device_client.h"

#include <mqtt/async_client.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "converge/common/envelope.h"
#include "converge/common/json.h"
#include "converge/common/log.h"
#include "converge/common/time_format.h"
#include "converge/common/utf8.h"
#include "converge/common/uuid.h"
#include "converge/pubsub/protocol.h"

// Paho C++ 1.2.0 builds disconnect_options from the MQTT 3 C initializer (struct_version 0), so
// Paho C ignores its reason code and a "disconnect with will message" (0x04) reaches the broker
// as a normal disconnect: no will (verified against mosquitto 2.0.11: "Received DISCONNECT", no
// will published). The class is a friend of disconnect_options (declared for Paho's own tests);
// this is the one place that uses that access, to select the MQTT 5 layout of the C struct.
namespace mqtt {
class disconnect_options_test {
 public:
  static void UseVersion5(disconnect_options& opts) { opts.opts_.struct_version = 1; }
};
}  // namespace mqtt

namespace converge::pubsub {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

int64_t UnixMillis() {
  return std::chrono::duration_cast<milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A value greater than `last` and, normally, than every value handed out before a restart that
// lost `last` (the clock moves on).
int64_t NextMonotonic(int64_t last) { return std::max(last + 1, UnixMillis()); }

std::string Describe(const ::mqtt::exception& e) {
  std::string s = "rc " + std::to_string(e.get_return_code());
  if (e.get_reason_code() != 0) s += ", reason " + std::to_string(e.get_reason_code());
  const std::string msg = e.what();
  if (!msg.empty()) s += ": " + msg;
  return s;
}

// Attribute text of at most 1024 bytes (control characters become spaces, cut at a UTF-8
// boundary); "" when the text is not UTF-8.
std::string AttributeText(std::string s) {
  for (char& c : s)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  if (s.size() > MessageLimits::kMaxAttributeBytes) {
    size_t n = MessageLimits::kMaxAttributeBytes;
    while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
    s.resize(n);
  }
  return IsValidAttributeText(s) ? s : std::string();
}

enum class EventKind { kMessage, kLost, kGoOffline, kGoOnline, kStop };

struct Event {
  EventKind kind;
  ::mqtt::const_message_ptr message;
  OfflineMode mode = OfflineMode::kGraceful;
};

}  // namespace

Status DeviceOptions::Validate() const {
  static constexpr std::string_view kSchemes[] = {"tcp://", "mqtt://", "ssl://", "mqtts://"};
  bool scheme = false;
  for (auto s : kSchemes) scheme = scheme || url.rfind(s, 0) == 0;
  if (!scheme)
    return Status::InvalidArgument(
        "device.url must start with tcp://, mqtt://, ssl:// or mqtts://");
  if (Status st = ValidateDeviceId(device_id); !st.ok())
    return Status::InvalidArgument("device.device_id: " + st.message());
  if (keep_alive.count() < 1) return Status::InvalidArgument("device.keep_alive must be >= 1 s");
  if (connect_timeout < milliseconds(100))
    return Status::InvalidArgument("device.connect_timeout must be >= 100 ms");
  if (reconnect_min < milliseconds(1) || reconnect_max < reconnect_min)
    return Status::InvalidArgument("device.reconnect_min must be >= 1 ms and <= reconnect_max");
  if (session_expiry.count() < 0 || session_expiry.count() > 0x7FFFFFFF)
    return Status::InvalidArgument("device.session_expiry must be in [0, 2^31-1] s");
  if (dedupe_capacity < 1) return Status::InvalidArgument("device.dedupe_capacity must be >= 1");
  if (publish_timeout < milliseconds(1))
    return Status::InvalidArgument("device.publish_timeout must be > 0");
  return Status::Ok();
}

class DeviceClient::Impl {
 public:
  explicit Impl(DeviceOptions o) : o_(std::move(o)) {
    if (o_.username.empty()) o_.username = o_.device_id;
    commands_topic_ = DeviceTopic(o_.device_id, TopicKind::kCommands);
    desired_topic_ = DeviceTopic(o_.device_id, TopicKind::kDesired);
    presence_topic_ = DeviceTopic(o_.device_id, TopicKind::kPresence);
    desired_handler_ = [](const DesiredState& d) -> Result<std::string> { return d.json; };
  }

  ~Impl() { Stop(OfflineMode::kGraceful); }

  Status Start() {
    CONVERGE_RETURN_IF_ERROR(o_.Validate());
    // Created and wired before taking mu_: Paho runs these callbacks holding its process-wide
    // mutex and they take mu_ (Push), so calling into Paho with mu_ held would invert that
    // order (ThreadSanitizer: lock-order-inversion). No callback fires before the connect.
    std::unique_ptr<::mqtt::async_client> cli;
    try {
      cli = std::make_unique<::mqtt::async_client>(o_.url, o_.device_id,
                                                   ::mqtt::create_options(MQTTVERSION_5), nullptr);
    } catch (const ::mqtt::exception& e) {
      return Status::InvalidArgument("device.url: " + Describe(e));
    }
    cli->set_message_callback([this](::mqtt::const_message_ptr m) {
      Push({EventKind::kMessage, std::move(m)});
    });
    cli->set_connection_lost_handler([this](const std::string&) { Push({EventKind::kLost}); });
    cli->set_disconnected_handler(
        [this](const ::mqtt::properties&, ::mqtt::ReasonCode) { Push({EventKind::kLost}); });
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (started_) return Status::FailedPrecondition("device client already started");
      LoadState();
      cli_ = std::move(cli);
      started_ = true;
      want_online_ = true;
      worker_ = std::thread([this] { Run(); });
    }
    if (WaitConnected(o_.connect_timeout + milliseconds(500))) return Status::Ok();
    return Status::Unavailable("device " + o_.device_id + ": not connected to " + o_.url +
                               " yet (retrying in the background): " + LastError());
  }

  void Stop(OfflineMode mode) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!started_ || stopping_) return;
      stopping_ = true;
      events_.push_back({EventKind::kGoOffline, nullptr, mode});
      events_.push_back({EventKind::kStop});
      cv_.notify_all();
    }
    if (worker_.joinable()) worker_.join();
    cli_.reset();
  }

  void GoOffline(OfflineMode mode) {
    Push({EventKind::kGoOffline, nullptr, mode});
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, o_.publish_timeout + o_.connect_timeout,
                 [&] { return !connected_ && !want_online_; });
  }

  Status Reconnect() {
    Push({EventKind::kGoOnline});
    if (WaitConnected(o_.connect_timeout + milliseconds(500))) return Status::Ok();
    return Status::Unavailable("device " + o_.device_id + ": reconnect failed: " + LastError());
  }

  bool WaitConnected(milliseconds timeout) const {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return connected_ || stopping_; }) && connected_;
  }

  Status PublishTelemetry(const std::string& json) {
    if (!cli_) return Status::FailedPrecondition("device client not started");
    Message m = NewMessage(kTelemetryType);
    m.payload = json;
    return Publish(DeviceTopic(o_.device_id, TopicKind::kTelemetry), m, false, "");
  }

  DeviceStats stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    DeviceStats s = stats_;
    s.connected = connected_;
    s.connection = connection_;
    s.applied_desired_version = applied_desired_;
    return s;
  }

  const DeviceOptions& options() const { return o_; }
  CommandHandler command_handler_;
  DesiredHandler desired_handler_;

 private:
  void Push(Event e) {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(std::move(e));
    cv_.notify_all();
  }

  std::string LastError() const {
    std::lock_guard<std::mutex> lock(mu_);
    return last_error_.empty() ? "no answer yet" : last_error_;
  }

  // ---- the worker ----

  void Run() {
    milliseconds delay = o_.reconnect_min;
    Clock::time_point next_attempt = Clock::now();
    while (true) {
      Event ev{EventKind::kStop};
      bool have_event = false, try_connect = false;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait_until(
            lock, want_online_ && !connected_ ? next_attempt : Clock::now() + std::chrono::hours(1),
            [&] {
              return !events_.empty() ||
                     (want_online_ && !connected_ && Clock::now() >= next_attempt);
            });
        if (!events_.empty()) {
          ev = std::move(events_.front());
          events_.pop_front();
          have_event = true;
        } else if (want_online_ && !connected_ && Clock::now() >= next_attempt) {
          try_connect = true;
        }
      }
      if (try_connect) {
        if (Connect()) {
          delay = o_.reconnect_min;
        } else {
          next_attempt = Clock::now() + delay;
          delay = std::min(delay * 2, o_.reconnect_max);
        }
        continue;
      }
      if (!have_event) continue;
      switch (ev.kind) {
        case EventKind::kMessage:
          try {
            HandleMessage(*ev.message);
          } catch (const std::exception& e) {
            Log(Level::kWarn, "device: message handling failed",
                {{"device", o_.device_id}, {"error", e.what()}});
          }
          break;
        case EventKind::kLost:
          SetConnected(false);
          next_attempt = Clock::now() + delay;
          break;
        case EventKind::kGoOffline:
          Disconnect(ev.mode);
          break;
        case EventKind::kGoOnline: {
          std::lock_guard<std::mutex> lock(mu_);
          want_online_ = true;
          next_attempt = Clock::now();
          delay = o_.reconnect_min;
          cv_.notify_all();
          break;
        }
        case EventKind::kStop:
          return;
      }
    }
  }

  void SetConnected(bool on) {
    std::lock_guard<std::mutex> lock(mu_);
    connected_ = on;
    cv_.notify_all();
  }

  void SetError(std::string e) {
    std::lock_guard<std::mutex> lock(mu_);
    last_error_ = std::move(e);
    ++stats_.connect_failures;
  }

  Message NewMessage(std::string_view type) const {
    Message m;
    m.id = NewUuidV7().ToString();
    m.source = DeviceSource(o_.device_id);
    m.type = std::string(type);
    m.subject = o_.device_id;
    m.time = std::chrono::system_clock::now();
    m.datacontenttype = "application/json";
    return m;
  }

  Result<::mqtt::message_ptr> Build(const std::string& topic, Message m, bool retained,
                                    const std::string& correlation) const {
    m.topic = topic;
    CONVERGE_ASSIGN_OR_RETURN(MqttProperties props, EncodeMqttUserProperties(m));
    ::mqtt::properties p;
    for (const auto& [k, v] : props.user_properties)
      p.add(::mqtt::property(::mqtt::property::USER_PROPERTY, k, v));
    if (!props.content_type.empty())
      p.add(::mqtt::property(::mqtt::property::CONTENT_TYPE, props.content_type));
    if (!correlation.empty())
      p.add(::mqtt::property(::mqtt::property::CORRELATION_DATA, correlation));
    auto msg = ::mqtt::message::create(topic, m.payload, 1, retained);
    msg->set_properties(std::move(p));
    return ::mqtt::message_ptr(msg);
  }

  Status Publish(const std::string& topic, const Message& m, bool retained,
                 const std::string& correlation) {
    auto msg = Build(topic, m, retained, correlation);
    Status st = msg.status();
    if (st.ok()) {
      try {
        auto tok = cli_->publish(*msg);
        if (!tok->wait_for(o_.publish_timeout))
          st = Status::DeadlineExceeded("no PUBACK within publish_timeout");
      } catch (const ::mqtt::exception& e) {
        st = Status::Unavailable("publish to " + topic + " failed: " + Describe(e));
      }
    }
    if (!st.ok()) {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.publish_failures;
    }
    return st;
  }

  Message PresenceMessage(bool online, int64_t connection) const {
    Message m = NewMessage(kPresenceType);
    m.extensions[std::string(kExtPresence)] = online ? "online" : "offline";
    m.extensions[std::string(kExtConnection)] = std::to_string(connection);
    m.payload = std::string("{\"state\":\"") + (online ? "online" : "offline") +
                "\",\"connection\":" + std::to_string(connection) + "}";
    return m;
  }

  bool Connect() {
    int64_t counter;
    {
      std::lock_guard<std::mutex> lock(mu_);
      counter = connection_ = NextMonotonic(connection_);
    }
    SaveState();
    try {
      // Will: retained "offline" with this connection's counter.
      auto will_msg = Build(presence_topic_, PresenceMessage(false, counter), true, "");
      if (!will_msg.ok()) {
        SetError(will_msg.status().message());
        return false;
      }
      ::mqtt::connect_options opts;
      opts.set_mqtt_version(MQTTVERSION_5);
      opts.set_clean_start(!o_.persistent_session);
      opts.set_keep_alive_interval(o_.keep_alive);
      opts.set_connect_timeout(
          std::chrono::duration_cast<std::chrono::seconds>(o_.connect_timeout) +
          std::chrono::seconds(1));
      opts.set_automatic_reconnect(false);
      opts.set_user_name(o_.username);
      if (!o_.password.empty()) opts.set_password(o_.password);
      if (o_.url.rfind("ssl://", 0) == 0 || o_.url.rfind("mqtts://", 0) == 0) {
        ::mqtt::ssl_options ssl;
        if (!o_.tls.ca_file.empty()) ssl.set_trust_store(o_.tls.ca_file);
        if (!o_.tls.cert_file.empty()) ssl.set_key_store(o_.tls.cert_file);
        if (!o_.tls.key_file.empty()) ssl.set_private_key(o_.tls.key_file);
        if (!o_.tls.key_password.empty()) ssl.set_private_key_password(o_.tls.key_password);
        ssl.set_enable_server_cert_auth(true);
        ssl.set_verify(o_.tls.verify_hostname);
        opts.set_ssl(std::move(ssl));
      }
      opts.set_will_message(**will_msg);
      // Last, on the final lvalue (Paho 1.2.0 bug #445: copies keep a dangling pointer).
      if (o_.persistent_session)
        opts.set_properties({{::mqtt::property::SESSION_EXPIRY_INTERVAL,
                              static_cast<int>(o_.session_expiry.count())}});
      auto tok = cli_->connect(opts);
      if (!tok->wait_for(o_.connect_timeout)) {
        SetError("connect timed out");
        try {
          cli_->disconnect(0);
        } catch (const ::mqtt::exception&) {
        }
        return false;
      }
      // Subscribe on every connect: Paho never resubscribes, and a clean session has nothing.
      // One topic per SUBSCRIBE: Paho 1.2.0 returns garbage reason codes for a multi-topic one.
      for (const std::string& filter : {commands_topic_, desired_topic_}) {
        auto sub = cli_->subscribe(filter, 1);
        if (!sub->wait_for(o_.connect_timeout)) {
          SetError("subscribe to " + filter + " timed out");
          Drop();
          return false;
        }
        const int rc = static_cast<int>(sub->get_reason_code());
        if (rc >= 0x80) {
          SetError("subscribe to " + filter + " refused, reason " + std::to_string(rc));
          Drop();
          return false;
        }
      }
    } catch (const ::mqtt::exception& e) {
      SetError("connect to " + o_.url + " failed: " + Describe(e));
      Drop();
      return false;
    }
    Status st = Publish(presence_topic_, PresenceMessage(true, counter), true, "");
    if (!st.ok()) {
      SetError("online presence: " + st.message());
      Drop();
      return false;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.connects;
      last_error_.clear();
    }
    SetConnected(true);
    return true;
  }

  void Drop() {
    try {
      if (cli_->is_connected()) cli_->disconnect(0)->wait_for(o_.publish_timeout);
    } catch (const ::mqtt::exception&) {
    }
  }

  void Disconnect(OfflineMode mode) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      want_online_ = false;
    }
    try {
      if (cli_->is_connected()) {
        if (mode == OfflineMode::kGraceful) {
          (void)Publish(presence_topic_, PresenceMessage(false, connection_), true, "");
          cli_->disconnect()->wait_for(o_.publish_timeout);
        } else {
          ::mqtt::disconnect_options d;
          ::mqtt::disconnect_options_test::UseVersion5(d);
          d.set_reason_code(::mqtt::ReasonCode::DISCONNECT_WITH_WILL_MESSAGE);
          cli_->disconnect(d)->wait_for(o_.publish_timeout);
        }
      }
    } catch (const ::mqtt::exception& e) {
      Log(Level::kWarn, "device: disconnect failed",
          {{"device", o_.device_id}, {"error", Describe(e)}});
    }
    SetConnected(false);
  }

  // ---- messages ----

  void HandleMessage(const ::mqtt::message& msg) {
    const std::string& topic = msg.get_topic();
    const ::mqtt::properties& props = msg.get_properties();
    HeaderList user;
    const size_t n = props.count(::mqtt::property::USER_PROPERTY);
    for (size_t i = 0; i < n; ++i) {
      auto kv = ::mqtt::get<::mqtt::string_pair>(props, ::mqtt::property::USER_PROPERTY, i);
      user.emplace_back(std::get<0>(kv), std::get<1>(kv));
    }
    std::string content_type, correlation, response_topic;
    if (props.contains(::mqtt::property::CONTENT_TYPE))
      content_type = ::mqtt::get<std::string>(props, ::mqtt::property::CONTENT_TYPE);
    if (props.contains(::mqtt::property::CORRELATION_DATA))
      correlation = ::mqtt::get<std::string>(props, ::mqtt::property::CORRELATION_DATA);
    if (props.contains(::mqtt::property::RESPONSE_TOPIC))
      response_topic = ::mqtt::get<std::string>(props, ::mqtt::property::RESPONSE_TOPIC);
    auto decoded = DecodeMqtt5(topic, content_type, user, msg.get_payload_str());
    if (!decoded.ok()) {
      Log(Level::kWarn, "device: undecodable message dropped",
          {{"device", o_.device_id}, {"topic", topic}, {"error", decoded.status().message()}});
      return;
    }
    Message& m = *decoded;
    auto header = [&](std::string_view name) {
      auto it = m.headers.find(std::string(name));
      return it == m.headers.end() ? std::string() : it->second;
    };
    // Publishers that do not map the MQTT features still carry them as headers.
    if (correlation.empty()) correlation = header(kHeaderCorrelationData);
    if (response_topic.empty()) response_topic = header(kHeaderResponseTopic);
    if (topic == commands_topic_) {
      Command c;
      c.id = m.id;
      c.name = header(kHeaderCommandName);
      c.payload = m.payload;
      c.content_type = m.datacontenttype;
      if (auto exp = ParseRfc3339(header(kHeaderExpiresAt)); exp.ok()) c.expires_at = *exp;
      HandleCommand(
          c, response_topic.empty() ? DeviceTopic(o_.device_id, TopicKind::kAcks) : response_topic,
          correlation.empty() ? c.id : correlation);
    } else if (topic == desired_topic_) {
      auto version = ParseNonNegative(header(kHeaderDesiredVersion), "device.version");
      if (!version.ok()) {
        Log(Level::kWarn, "device: desired state without a valid version dropped",
            {{"device", o_.device_id}, {"error", version.status().message()}});
        return;
      }
      HandleDesired({*version, m.payload});
    }
  }

  void Ack(const Command& c, AckStatus status, const std::string& detail,
           const std::string& response_topic, const std::string& correlation) {
    Message m = NewMessage(kAckType);
    m.extensions[std::string(kExtCommandId)] = c.id;
    m.extensions[std::string(kExtAckStatus)] = std::string(AckStatusName(status));
    const std::string text = AttributeText(detail);
    if (!text.empty()) m.extensions[std::string(kExtAckDetail)] = text;
    std::string body = "{\"command_id\":";
    AppendJsonString(body, c.id);
    body += ",\"status\":";
    AppendJsonString(body, AckStatusName(status));
    body += ",\"detail\":";
    AppendJsonString(body, detail);
    body += "}";
    m.payload = body;
    Status st = Publish(response_topic, m, false, correlation);
    if (!st.ok())
      Log(Level::kWarn, "device: ack not published (the server re-sends the command)",
          {{"device", o_.device_id}, {"command", c.id}, {"error", st.message()}});
  }

  void HandleCommand(const Command& c, const std::string& response_topic,
                     const std::string& correlation) {
    if (c.expires_at != std::chrono::system_clock::time_point{} &&
        c.expires_at <= std::chrono::system_clock::now()) {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.expired_commands;
      return;
    }
    std::optional<std::pair<bool, std::string>> seen;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = outcomes_.find(c.id);
      if (it != outcomes_.end()) {
        seen = it->second;
        ++stats_.duplicate_commands;
      }
    }
    if (seen) {
      // Already run: acknowledge again (the first ack may be lost), never run twice.
      Ack(c, seen->first ? AckStatus::kApplied : AckStatus::kRejected, seen->second, response_topic,
          correlation);
      return;
    }
    Ack(c, AckStatus::kReceived, "", response_topic, correlation);
    CommandResult result = CommandResult::Rejected("no command handler");
    if (command_handler_) {
      try {
        result = command_handler_(c);
      } catch (const std::exception& e) {
        result = CommandResult::Rejected(std::string("handler threw: ") + e.what());
      }
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.commands_run;
      ++(result.applied ? stats_.commands_applied : stats_.commands_rejected);
      outcomes_[c.id] = {result.applied, result.detail};
      order_.push_back(c.id);
      while (order_.size() > o_.dedupe_capacity) {
        outcomes_.erase(order_.front());
        order_.pop_front();
      }
    }
    Ack(c, result.applied ? AckStatus::kApplied : AckStatus::kRejected, result.detail,
        response_topic, correlation);
  }

  void HandleDesired(const DesiredState& d) {
    int64_t applied;
    std::string reported;
    {
      std::lock_guard<std::mutex> lock(mu_);
      applied = applied_desired_;
      reported = reported_json_;
    }
    if (d.version < applied) {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.desired_ignored;
      return;
    }
    if (d.version > applied || reported.empty()) {
      Result<std::string> r = Status::Internal("no handler");
      try {
        r = desired_handler_(d);
      } catch (const std::exception& e) {
        r = Status::Internal(std::string("desired handler threw: ") + e.what());
      }
      if (!r.ok()) {
        Log(Level::kWarn, "device: desired state not applied",
            {{"device", o_.device_id},
             {"version", std::to_string(d.version)},
             {"error", r.status().message()}});
        return;
      }
      std::lock_guard<std::mutex> lock(mu_);
      applied_desired_ = applied = d.version;
      reported_json_ = reported = *r;
      ++stats_.desired_applied;
    }
    // Report (again, for the same version: the server may have missed the first report).
    int64_t version;
    {
      std::lock_guard<std::mutex> lock(mu_);
      version = reported_version_ = NextMonotonic(reported_version_);
    }
    SaveState();
    Message m = NewMessage(kReportedType);
    m.extensions[std::string(kExtReportedVersion)] = std::to_string(version);
    m.extensions[std::string(kExtDesiredVersion)] = std::to_string(applied);
    m.payload = reported;
    Status st = Publish(DeviceTopic(o_.device_id, TopicKind::kReported), m, false, "");
    if (st.ok()) {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.reports;
    }
  }

  // ---- state file: "connection N\nreported N\napplied N\n" ----

  void LoadState() {
    if (o_.state_file.empty()) return;
    std::ifstream in(o_.state_file);
    std::string key;
    int64_t value;
    while (in >> key >> value) {
      if (key == "connection") connection_ = value;
      if (key == "reported") reported_version_ = value;
      if (key == "applied") applied_desired_ = value;
    }
  }

  void SaveState() {
    if (o_.state_file.empty()) return;
    std::ostringstream s;
    {
      std::lock_guard<std::mutex> lock(mu_);
      s << "connection " << connection_ << "\nreported " << reported_version_ << "\napplied "
        << applied_desired_ << "\n";
    }
    const std::string tmp = o_.state_file + ".tmp";
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << s.str();
      if (!out) return;
    }
    std::rename(tmp.c_str(), o_.state_file.c_str());
  }

  DeviceOptions o_;
  std::string commands_topic_, desired_topic_, presence_topic_;
  std::unique_ptr<::mqtt::async_client> cli_;
  std::thread worker_;

  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::deque<Event> events_;
  bool started_ = false, stopping_ = false, want_online_ = false, connected_ = false;
  std::string last_error_;
  DeviceStats stats_;
  int64_t connection_ = 0, reported_version_ = 0, applied_desired_ = 0;
  std::string reported_json_;
  std::unordered_map<std::string, std::pair<bool, std::string>> outcomes_;
  std::deque<std::string> order_;
};

DeviceClient::DeviceClient(DeviceOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}
DeviceClient::~DeviceClient() = default;
void DeviceClient::OnCommand(CommandHandler handler) {
  impl_->command_handler_ = std::move(handler);
}
void DeviceClient::OnDesired(DesiredHandler handler) {
  impl_->desired_handler_ = std::move(handler);
}
Status DeviceClient::Start() { return impl_->Start(); }
void DeviceClient::Stop(OfflineMode mode) { impl_->Stop(mode); }
void DeviceClient::GoOffline(OfflineMode mode) { impl_->GoOffline(mode); }
Status DeviceClient::Reconnect() { return impl_->Reconnect(); }
bool DeviceClient::WaitConnected(std::chrono::milliseconds timeout) const {
  return impl_->WaitConnected(timeout);
}
Status DeviceClient::PublishTelemetry(const std::string& json) {
  return impl_->PublishTelemetry(json);
}
DeviceStats DeviceClient::stats() const { return impl_->stats(); }
const std::string& DeviceClient::device_id() const { return impl_->options().device_id; }

}  // namespace converge::pubsub
