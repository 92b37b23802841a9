// MqttPublisher: Publisher over MQTT 5 (Paho C++ async_client, QoS 1 by default).
//
// Outcomes (mqtt.md §0.3, verified on Paho 1.2.0 / C 1.3.12 / mosquitto 2.0.11):
//   token completes, no exception          OK (PUBACK/PUBCOMP reason < 0x80)
//   PUBACK reason >= 0x80 (0x87 ...)        kFailedPrecondition naming the reason: dead-letter
//   publish() throws rc -3 (disconnected)   kUnavailable: nothing was sent
//   rc -4 (too many in flight), -12         kUnavailable
//   token fails after sending (-11 after a reconnect, connection lost) or no answer in time
//                                           kDeadlineExceeded: may have been delivered
// callback::delivery_complete is never used (Paho also calls it for failures).
//
// A wedged Paho client is replaced. After a broker restart Paho C 1.3.12 can reconnect and
// report itself connected while never writing the publishes queued to it again: every token
// times out, and once max_buffered_messages of them pile up every publish() is refused with -12.
// The relay would retry forever against it (seen in CI after a graceful mosquitto restart; the
// MqttPublisher.PublishesAgainAfterEveryRestartUnderLoad test reproduces it). So when a batch
// gets nothing through while Paho says it is connected (a -12 refusal, or no PUBACK at all
// before the batch timeout), the client is destroyed and a new one with the same client id
// connects with a clean start. Nothing is lost: the affected rows were reported as failures
// (kUnavailable or kDeadlineExceeded) and the relay publishes them again; destroying the client
// also keeps stale queued publishes from going out later behind the relay's back.
#include <algorithm>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "converge/broker/mqtt.h"
#include "converge/common/envelope.h"
#include "converge/common/log.h"
#include "mqtt_paho.h"

namespace converge::broker {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

std::string RandomSuffix() {
  std::random_device rd;
  std::mt19937_64 g(rd());
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(g()));
  return buf;
}

class MqttPublisher final : public Publisher {
 public:
  explicit MqttPublisher(MqttOptions o)
      : o_(std::move(o)),
        client_id_(o_.client_id.empty() ? "converge-relay-" + RandomSuffix() : o_.client_id),
        cli_(NewClient()) {}

  ~MqttPublisher() override { Close(milliseconds(2000)); }

  std::vector<DeliveryResult> PublishBatch(std::span<const Message* const> messages,
                                           milliseconds timeout) override {
    std::vector<DeliveryResult> out(messages.size());
    const auto deadline = Clock::now() + timeout;
    Status conn = EnsureConnected(std::min(timeout, milliseconds(o_.connect_timeout)));
    if (!conn.ok()) {
      for (auto& r : out) r.status = conn;
      return out;
    }
    struct Pending {
      size_t index;
      ::mqtt::delivery_token_ptr token;
    };
    std::deque<Pending> pending;
    std::set<std::pair<std::string_view, std::string_view>> held;  // keys not handed over
    bool buffer_full = false;                                      // publish() refused with -12
    size_t unanswered = 0;                                         // no PUBACK before the deadline
    auto settle = [&](Pending& p) { out[p.index].status = Wait(p.token, deadline, &unanswered); };

    for (size_t i = 0; i < messages.size(); ++i) {
      const Message& m = *messages[i];
      const auto key = std::make_pair(std::string_view(m.topic), std::string_view(m.subject));
      if (held.count(key)) {
        out[i].status = Status::Unavailable(
            "held back: an earlier message of this topic and key was not handed to the broker");
        continue;
      }
      if (closing_.load()) {
        out[i].status = Status::Unavailable("mqtt publisher is closing");
        held.insert(key);
        continue;
      }
      auto msg = Build(m);
      if (!msg.ok()) {
        out[i].status = msg.status();
        held.insert(key);
        continue;
      }
      // Bounded window: wait for the oldest PUBACK before sending more.
      while (pending.size() >= static_cast<size_t>(o_.max_inflight)) {
        settle(pending.front());
        pending.pop_front();
      }
      try {
        pending.push_back({i, cli_->publish(*msg)});
      } catch (const ::mqtt::exception& e) {
        // Refused before sending (disconnected, too many in flight): nothing reached the broker.
        out[i].status = Status::Unavailable("mqtt publish refused: " + mqtt_internal::Describe(e));
        held.insert(key);
        if (e.get_return_code() == MQTTASYNC_MAX_BUFFERED_MESSAGES) buffer_full = true;
      }
    }
    for (auto& p : pending) settle(p);
    ReplaceIfWedged(out, buffer_full, unanswered);
    return out;
  }

  Status CheckConnected(milliseconds timeout) override { return EnsureConnected(timeout); }

  std::string Name() const override { return "mqtt"; }

  void Close(milliseconds timeout) override {
    std::lock_guard<std::mutex> lock(close_mu_);
    closing_.store(true);
    if (closed_) return;
    closed_ = true;
    try {
      if (cli_->is_connected())
        cli_->disconnect(static_cast<int>(timeout.count()))->wait_for(timeout);
    } catch (const ::mqtt::exception&) {
    }
  }

 private:
  Result<::mqtt::message_ptr> Build(const Message& m) {
    auto topic = MqttTopicFor(o_.topic_template, m);
    if (!topic.ok()) return topic.status();
    auto props = EncodeMqttUserProperties(m);
    if (!props.ok()) return props.status();
    ::mqtt::properties p;
    for (const auto& [k, v] : props->user_properties)
      p.add(::mqtt::property(::mqtt::property::USER_PROPERTY, k, v));
    if (!props->content_type.empty())
      p.add(::mqtt::property(::mqtt::property::CONTENT_TYPE, props->content_type));
    if (m.expires_at) {
      const auto left =
          std::chrono::ceil<std::chrono::seconds>(*m.expires_at - std::chrono::system_clock::now());
      if (left.count() <= 0)
        return Status::FailedPrecondition("message expired before it could be published");
      p.add(::mqtt::property(::mqtt::property::MESSAGE_EXPIRY_INTERVAL,
                             static_cast<int>(std::min<int64_t>(left.count(), 0x7FFFFFFF))));
    }
    // MQTT 5 features asked for by plain headers (also kept as user properties above).
    bool retained = false;
    if (auto it = m.headers.find("mqtt.retain"); it != m.headers.end()) {
      if (it->second != "true" && it->second != "false")
        return Status::InvalidArgument("header mqtt.retain must be \"true\" or \"false\"");
      retained = it->second == "true";
    }
    if (auto it = m.headers.find("mqtt.response_topic"); it != m.headers.end()) {
      if (it->second.empty() || it->second.find_first_of("+#") != std::string::npos)
        return Status::InvalidArgument(
            "header mqtt.response_topic must be a topic name without wildcards");
      p.add(::mqtt::property(::mqtt::property::RESPONSE_TOPIC, it->second));
    }
    if (auto it = m.headers.find("mqtt.correlation_data"); it != m.headers.end())
      p.add(::mqtt::property(::mqtt::property::CORRELATION_DATA, ::mqtt::binary(it->second)));
    auto msg = ::mqtt::message::create(*topic, m.payload, o_.qos, retained);
    msg->set_properties(std::move(p));
    return ::mqtt::message_ptr(msg);
  }

  std::unique_ptr<::mqtt::async_client> NewClient() {
    auto cli = mqtt_internal::NewClient(o_, client_id_);
    cli->set_connection_lost_handler([this](const std::string&) {
      log_.LogEvery("mqtt.lost", std::chrono::seconds(10), Level::kWarn,
                    "mqtt connection lost; reconnecting", {{"url", o_.url}});
    });
    return cli;
  }

  // See the file comment: a batch that got nothing through while Paho says it is connected, by
  // a full publish buffer or by no PUBACK at all before the batch timeout, replaces the client.
  void ReplaceIfWedged(const std::vector<DeliveryResult>& out, bool buffer_full,
                       size_t unanswered) {
    const bool delivered =
        std::any_of(out.begin(), out.end(), [](const DeliveryResult& r) { return r.status.ok(); });
    if (delivered || (!buffer_full && unanswered == 0) || !cli_->is_connected()) return;
    std::lock_guard<std::mutex> lock(close_mu_);
    if (closed_) return;
    log_.Log(Level::kWarn, "mqtt client connected but not delivering; replacing it",
             {{"url", o_.url},
              {"client_id", client_id_},
              {"queued_in_paho", cli_->get_pending_delivery_tokens().size()},
              {"refused_buffer_full", buffer_full},
              {"unanswered", unanswered}});
    cli_.reset();  // MQTTAsync_destroy: closes the socket, drops what was queued
    cli_ = NewClient();
    connect_tok_.reset();
    ever_connected_ = false;
  }

  // Waits for one token until `deadline` (in slices, so Close() can interrupt it); counts a
  // token still unanswered then in `*unanswered`.
  Status Wait(const ::mqtt::delivery_token_ptr& tok, Clock::time_point deadline,
              size_t* unanswered) {
    try {
      while (true) {
        const auto now = Clock::now();
        if (now >= deadline || closing_.load()) {
          ++*unanswered;
          return Status::DeadlineExceeded("mqtt: no PUBACK before the batch timeout");
        }
        const auto slice = std::min<Clock::duration>(deadline - now, milliseconds(50));
        if (tok->wait_for(std::chrono::duration_cast<milliseconds>(slice) + milliseconds(1)))
          return Status::Ok();
      }
    } catch (const ::mqtt::exception& e) {
      if (e.get_reason_code() >= 0x80)
        return Status::FailedPrecondition("mqtt broker refused the message: " +
                                          mqtt_internal::Describe(e));
      return Status::DeadlineExceeded("mqtt publish interrupted after sending: " +
                                      mqtt_internal::Describe(e));
    }
  }

  // Connects on first use; afterwards Paho's automatic reconnect takes over and this only waits
  // (up to `timeout`) for it.
  Status EnsureConnected(milliseconds timeout) {
    if (closing_.load()) return Status::Unavailable("mqtt publisher is closed");
    if (cli_->is_connected()) return Status::Ok();
    const auto deadline = Clock::now() + timeout;
    if (!ever_connected_) {
      try {
        if (!connect_tok_) {
          // Clean start: nothing of an earlier session is resumed, so a message in flight when
          // the connection drops fails (-11) and is retried by the relay instead of being resent
          // by Paho behind the relay's back (mqtt.md §0.3).
          ::mqtt::connect_options opts = mqtt_internal::ConnectOptions(o_, /*clean_start=*/true);
          connect_tok_ = cli_->connect(opts);
        }
        while (Clock::now() < deadline && !closing_.load()) {
          if (connect_tok_->wait_for(milliseconds(50))) {
            ever_connected_ = true;
            connect_tok_.reset();
            log_.Log(Level::kInfo, "mqtt connected", {{"url", o_.url}, {"client_id", client_id_}});
            return Status::Ok();
          }
        }
        return Status::Unavailable("mqtt: not connected to " + o_.url + " yet");
      } catch (const ::mqtt::exception& e) {
        connect_tok_.reset();
        return Status::Unavailable("mqtt connect to " + o_.url +
                                   " failed: " + mqtt_internal::Describe(e));
      }
    }
    while (Clock::now() < deadline && !closing_.load()) {
      if (cli_->is_connected()) return Status::Ok();
      std::this_thread::sleep_for(milliseconds(20));
    }
    return cli_->is_connected()
               ? Status::Ok()
               : Status::Unavailable("mqtt: disconnected from " + o_.url + " (reconnecting)");
  }

  MqttOptions o_;
  std::string client_id_;
  std::unique_ptr<::mqtt::async_client> cli_;
  ::mqtt::token_ptr connect_tok_;
  bool ever_connected_ = false;
  std::atomic<bool> closing_{false};
  std::mutex close_mu_;
  bool closed_ = false;
  Logger log_{"mqtt"};
};

}  // namespace

Result<std::unique_ptr<Publisher>> MakeMqttPublisher(const MqttOptions& options) {
  CONVERGE_RETURN_IF_ERROR(options.Validate());
  try {
    return std::unique_ptr<Publisher>(new MqttPublisher(options));
  } catch (const ::mqtt::exception& e) {
    return Status::InvalidArgument("mqtt client: " + mqtt_internal::Describe(e));
  }
}

}  // namespace converge::broker
