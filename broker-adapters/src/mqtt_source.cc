// MqttSource: MessageSource over MQTT 5 with the PUBACK held until Ack().
//
// Paho C++ 1.2.0 sends a QoS 1 PUBACK (QoS 2 PUBREC) only after the synchronous message
// callback returns (mqtt.md §0.1, verified), and has no NACK. So the callback queues the record
// for Poll() and then blocks until the runtime Ack()s it, i.e. after the local transaction
// committed. A process that dies before that never acks: the broker redelivers the message to
// the persistent session (clean start = false + session expiry) on the next connect, and the
// runtime's inbox dedupes it by message id. Consequences:
//  * one message at a time per connection (Paho's receive thread is parked while it is held);
//  * while a PUBACK is held Paho sends no PINGREQ: processing must finish within
//    MaxProcessingTime() (keepalive / 2), otherwise mosquitto drops the connection after
//    1.5 × keepalive and redelivers (the message then runs again unless its commit happened).
// Subscriptions are (re)made on every connect (auto-reconnect does not resubscribe, and
// mosquitto 2.0.11 loses $share subscriptions over a restart).
//
// Paho C 1.3.12 calls the message callback with its process-wide mutex held, and one receive
// thread serves every Paho client of the process: while a PUBACK is held, NO Paho call can be
// made anywhere in the process (it would block until the Ack), and no other Paho client in the
// process receives anything. So this source never calls Paho outside the connect (it tracks the
// connection state from Paho's callbacks), and a process should have one MqttSource and no
// other Paho client.
//
// Not acking (Close() with a held message the runtime never committed): returning from the
// callback would ack it, and disconnect() cannot run while it is held. The source first "kicks"
// its own connection: it opens a second, raw MQTT 5 connection with the same client id (clean
// start = false, same session expiry), which makes the broker close Paho's connection and keep
// the session, then returns from the callback; the PUBACK hits a closed connection and the broker
// redelivers the message on the next connect. Over TLS the raw connection uses OpenSSL with the
// same CA, client certificate and host-name check as Paho. If the kick fails (broker down), the
// held callback is left parked and the client is leaked: the message stays unacknowledged and is
// redelivered once the process exits.
#include <arpa/inet.h>
#include <netdb.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>

#include "converge/broker/mqtt.h"
#include "converge/common/log.h"
#include "mqtt_paho.h"

namespace converge::broker {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

void PutU16(std::string& out, size_t v) {
  out.push_back(static_cast<char>((v >> 8) & 0xFF));
  out.push_back(static_cast<char>(v & 0xFF));
}
void PutStr(std::string& out, const std::string& s) {
  PutU16(out, s.size());
  out += s;
}
void PutVarint(std::string& out, size_t v) {
  do {
    uint8_t b = v % 128;
    v /= 128;
    if (v > 0) b |= 0x80;
    out.push_back(static_cast<char>(b));
  } while (v > 0);
}

// A blocking stream to the broker: plain TCP or TLS (OpenSSL, verified like Paho's connection:
// the CA file, or the system's trust store, and the host name when verify_hostname is on).
class KickStream {
 public:
  ~KickStream() {
    if (ssl_) {
      SSL_shutdown(ssl_);
      SSL_free(ssl_);
    }
    if (ctx_) SSL_CTX_free(ctx_);
    if (fd_ >= 0) ::close(fd_);
  }

  Status Open(const MqttOptions& o) {
    std::string hostport;
    bool tls = false;
    for (const char* scheme : {"tcp://", "mqtt://", "ssl://", "mqtts://"}) {
      if (o.url.rfind(scheme, 0) == 0) {
        hostport = o.url.substr(std::string(scheme).size());
        tls = scheme[0] == 's' || std::string(scheme) == "mqtts://";
      }
    }
    if (hostport.empty()) return Status::InvalidArgument("kick: unsupported url");
    const auto colon = hostport.rfind(':');
    const std::string host = colon == std::string::npos ? hostport : hostport.substr(0, colon);
    const std::string port =
        colon == std::string::npos ? (tls ? "8883" : "1883") : hostport.substr(colon + 1);
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (::getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0 || res == nullptr)
      return Status::Unavailable("kick: cannot resolve " + host);
    fd_ = ::socket(res->ai_family, SOCK_STREAM, 0);
    timeval tv{2, 0};
    bool connected = false;
    if (fd_ >= 0) {
      ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
      connected = ::connect(fd_, res->ai_addr, res->ai_addrlen) == 0;
    }
    ::freeaddrinfo(res);
    if (!connected) return Status::Unavailable("kick: cannot connect to " + hostport);
    if (!tls) return Status::Ok();
    ctx_ = SSL_CTX_new(TLS_client_method());
    if (!ctx_) return Status::Internal("kick: SSL_CTX_new failed");
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    const bool trust = o.tls.ca_file.empty() ? SSL_CTX_set_default_verify_paths(ctx_) == 1
                                             : SSL_CTX_load_verify_locations(
                                                   ctx_, o.tls.ca_file.c_str(), nullptr) == 1;
    if (!trust) return Status::FailedPrecondition("kick: cannot load the CA file");
    if (!o.tls.key_password.empty())
      SSL_CTX_set_default_passwd_cb_userdata(ctx_, const_cast<char*>(o.tls.key_password.c_str()));
    if (!o.tls.cert_file.empty() &&
        (SSL_CTX_use_certificate_chain_file(ctx_, o.tls.cert_file.c_str()) != 1 ||
         SSL_CTX_use_PrivateKey_file(ctx_, o.tls.key_file.c_str(), SSL_FILETYPE_PEM) != 1))
      return Status::FailedPrecondition("kick: cannot load the client certificate or key");
    ssl_ = SSL_new(ctx_);
    if (!ssl_) return Status::Internal("kick: SSL_new failed");
    SSL_set_fd(ssl_, fd_);
    in6_addr a6;
    in_addr a4;
    const bool is_ip = ::inet_pton(AF_INET, host.c_str(), &a4) == 1 ||
                       ::inet_pton(AF_INET6, host.c_str(), &a6) == 1;
    if (!is_ip) SSL_set_tlsext_host_name(ssl_, host.c_str());
    if (o.tls.verify_hostname) {
      X509_VERIFY_PARAM* param = SSL_get0_param(ssl_);
      if (is_ip)
        X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str());
      else
        X509_VERIFY_PARAM_set1_host(param, host.c_str(), 0);
    }
    if (SSL_connect(ssl_) != 1) return Status::Unavailable("kick: TLS handshake failed");
    return Status::Ok();
  }

  bool Write(const std::string& data) {
    if (ssl_)
      return SSL_write(ssl_, data.data(), static_cast<int>(data.size())) ==
             static_cast<int>(data.size());
    return ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(data.size());
  }

  // Reads exactly n bytes (false on error or timeout).
  bool ReadExactly(unsigned char* buf, size_t n) {
    size_t got = 0;
    while (got < n) {
      const long r = ssl_ ? SSL_read(ssl_, buf + got, static_cast<int>(n - got))
                          : ::recv(fd_, buf + got, n - got, 0);
      if (r <= 0) return false;
      got += static_cast<size_t>(r);
    }
    return true;
  }

 private:
  int fd_ = -1;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
};

// Takes the session over with a raw MQTT 5 CONNECT (clean start = false) and leaves with a
// normal DISCONNECT: the broker closes the other connection of this client id and keeps the
// session (and the unacknowledged message in it). OK once a successful CONNACK arrived.
Status KickConnection(const MqttOptions& o) {
  KickStream stream;
  CONVERGE_RETURN_IF_ERROR(stream.Open(o));
  std::string body;
  PutStr(body, "MQTT");
  body.push_back(5);
  uint8_t flags = 0;  // clean start = false
  if (!o.username.empty()) flags |= 0x80;
  if (!o.password.empty()) flags |= 0x40;
  body.push_back(static_cast<char>(flags));
  PutU16(body, 0);  // keepalive: none for this short connection
  // Properties: Session Expiry Interval, the same as the source's own.
  const uint32_t expiry = static_cast<uint32_t>(o.session_expiry.count());
  body.push_back(5);
  body.push_back(0x11);
  for (int shift = 24; shift >= 0; shift -= 8)
    body.push_back(static_cast<char>((expiry >> shift) & 0xFF));
  PutStr(body, o.client_id);
  if (!o.username.empty()) PutStr(body, o.username);
  if (!o.password.empty()) PutStr(body, o.password);
  std::string packet(1, static_cast<char>(0x10));
  PutVarint(packet, body.size());
  packet += body;
  if (!stream.Write(packet)) return Status::Unavailable("kick: send failed");
  // CONNACK: 0x20, remaining length, flags, reason code.
  unsigned char ack[4] = {0};
  if (!stream.ReadExactly(ack, sizeof ack) || ack[0] != 0x20 || ack[3] != 0)
    return Status::Unavailable("kick: no successful CONNACK");
  stream.Write(std::string{static_cast<char>(0xE0), 0});  // DISCONNECT, normal
  return Status::Ok();
}

// The broker's answer to one filter's SUBSCRIBE, logged because the consumer would otherwise
// stay connected and silently receive nothing, or receive at most once:
//  * refused (reason >= 0x80, e.g. 0x87 not authorized on brokers whose ACL covers subscribes;
//    mosquitto 2.0.11 grants every valid filter and applies read ACLs at delivery): error;
//  * granted below the requested QoS (mosquitto's max_qos): error, since a QoS 0 subscription
//    is neither queued while the consumer is away nor redelivered after a crash;
//  * granted: info "mqtt subscribed" (tests and operators wait for it).
// Runs on Paho's threads: only logs, never throws.
class SubscribeListener : public ::mqtt::iaction_listener {
 public:
  SubscribeListener(const Logger& log, std::string filter, int requested_qos)
      : log_(log), filter_(std::move(filter)), requested_qos_(requested_qos) {}

  void on_success(const ::mqtt::token& tok) override {
    int code = requested_qos_;
    try {
      const auto codes = tok.get_subscribe_response().get_reason_codes();
      if (!codes.empty()) code = static_cast<int>(codes.front());
    } catch (...) {
    }
    if (code >= 0x80) {
      Refused(code);
    } else if (code < requested_qos_) {
      log_.Log(Level::kError,
               "mqtt subscription granted below the requested QoS; messages can be lost",
               {{"filter", filter_}, {"requested_qos", requested_qos_}, {"granted_qos", code}});
    } else {
      log_.Log(Level::kInfo, "mqtt subscribed", {{"filter", filter_}, {"granted_qos", code}});
    }
  }
  void on_failure(const ::mqtt::token& tok) override {
    int code = -1;
    try {
      code = static_cast<int>(tok.get_reason_code());
      if (code == 0) code = tok.get_return_code();
    } catch (...) {
    }
    Refused(code);
  }

 private:
  void Refused(int code) {
    log_.Log(Level::kError, "mqtt subscribe refused; nothing arrives through this filter",
             {{"filter", filter_},
              {"reason_code", code},
              {"reason", ::mqtt::exception::reason_code_str(code)}});
  }

  const Logger log_;
  const std::string filter_;
  const int requested_qos_;
};

class SourceImpl {
 public:
  explicit SourceImpl(MqttOptions o)
      : o_(std::move(o)), cli_(mqtt_internal::NewClient(o_, o_.client_id)) {}

  ~SourceImpl() {
    Close();
    std::lock_guard<std::mutex> lock(mu_);
    destroyed_ = true;
    cv_.notify_all();
  }

  Status Subscribe(const std::vector<std::string>& topics, AssignmentListener* listener) {
    if (topics.empty()) return Status::InvalidArgument("mqtt source: no topic filters");
    for (const auto& t : topics) {
      if (t.empty() || t.rfind("$share/", 0) == 0)
        return Status::InvalidArgument("mqtt source: topic filter \"" + t +
                                       "\" must be non-empty and without $share/ (use "
                                       "mqtt.shared_group)");
      const auto hash = t.find('#');
      if (hash != std::string::npos && hash != t.size() - 1)
        return Status::InvalidArgument("mqtt source: '#' must be last in \"" + t + "\"");
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      listener_ = listener;
      assigned_ = false;
      // A repeated Subscribe (the consumer retries its start when the first connect timed out,
      // and that connect may still complete in the background) must not free listeners that
      // OnConnected may have handed to Paho meanwhile. The same filters keep their listeners;
      // replaced ones stay alive with the source.
      if (sub_listeners_.empty() || filters_ != topics) {
        for (auto& l : sub_listeners_) retired_listeners_.push_back(std::move(l));
        sub_listeners_.clear();
        for (const auto& t : topics)
          sub_listeners_.push_back(std::make_unique<SubscribeListener>(
              log_, o_.shared_group.empty() ? t : "$share/" + o_.shared_group + "/" + t, o_.qos));
      }
      filters_ = topics;
    }
    // The callbacks are installed once: Paho C refuses to replace them (-1) while a connect
    // that timed out in an earlier Subscribe is still under way. They read filters_ and
    // listener_ under mu_, so a repeated Subscribe needs only the members above.
    if (!callbacks_set_) {
      try {
        cli_->set_connected_handler([this](const std::string&) {
          connected_.store(true);
          OnConnected();
        });
        cli_->set_connection_lost_handler([this](const std::string&) {
          connected_.store(false);
          log_.LogEvery("mqtt.lost", std::chrono::seconds(10), Level::kWarn,
                        "mqtt connection lost; reconnecting", {{"url", o_.url}});
        });
        cli_->set_message_callback([this](::mqtt::const_message_ptr m) { OnMessage(m); });
      } catch (const ::mqtt::exception& e) {
        return Status::Internal("mqtt source: could not install the client callbacks: " +
                                mqtt_internal::Describe(e));
      }
      callbacks_set_ = true;
    }
    return Connect(milliseconds(o_.connect_timeout));
  }

  Result<std::vector<ReceivedRecord>> Poll(size_t max_records, milliseconds timeout) {
    std::vector<TopicPartition> to_assign;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!assigned_ && listener_) {
        assigned_ = true;
        for (const auto& f : filters_) to_assign.push_back({f, 0});
      }
    }
    if (!to_assign.empty()) {
      // Each filter is one partition; the returned offsets only raise the counter's floor.
      auto start = listener_->OnAssigned(to_assign);
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& [tp, off] : start) next_offset_ = std::max(next_offset_, off);
    }
    if (!ever_connected_.load()) {  // before the first connect no callback can hold Paho
      Status st = Connect(std::min(timeout, milliseconds(o_.connect_timeout)));
      if (!st.ok()) return st;
    }
    std::vector<ReceivedRecord> out;
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return !ready_.empty() || stopping_; });
    while (!ready_.empty() && out.size() < max_records) {
      Held& h = held_.at(ready_.front());
      ready_.pop_front();
      h.record.offset = next_offset_++;
      out.push_back(h.record);
    }
    if (out.empty() && !connected_.load())
      return Status::Unavailable("mqtt: disconnected from " + o_.url + " (reconnecting)");
    return out;
  }

  void Ack(const std::vector<ReceivedRecord>& records) {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& r : records) {
      auto it = held_.find(r.ack_token);
      if (it != held_.end()) it->second.acked = true;
    }
    cv_.notify_all();
  }

  // MQTT cannot rewind. Seek raises the offset floor to `offset` and hands the records of that
  // filter that were polled but not acked (their PUBACK is still held) to the next Poll again.
  Status Seek(const TopicPartition& tp, int64_t offset) {
    std::lock_guard<std::mutex> lock(mu_);
    next_offset_ = std::max(next_offset_, offset);
    for (auto& [token, h] : held_) {
      if (h.record.topic != tp.topic || h.acked) continue;
      if (std::find(ready_.begin(), ready_.end(), token) == ready_.end()) ready_.push_front(token);
    }
    cv_.notify_all();
    return Status::Ok();
  }

  void Close() {
    bool kick = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (closed_) return;
      closed_ = true;
      stopping_ = true;
      // Acked callbacks leave by themselves; wait for them (bounded).
      cv_.wait_for(lock, milliseconds(2000), [&] { return in_callback_ == 0 || HasUnacked(); });
      kick = in_callback_ > 0;
    }
    if (kick && !Kick()) {
      // Cannot drop the connection without acking: leave the callback parked and the client
      // alive (destroying it would block on Paho's mutex). Redelivered when the process exits.
      log_.Log(Level::kError,
               "mqtt source closed with an unacknowledged message held; it stays unacknowledged "
               "until this process exits",
               {{"client_id", o_.client_id}});
      std::lock_guard<std::mutex> lock(mu_);
      leaked_ = true;  // MqttSource then never deletes this object
      return;
    }
    {
      std::unique_lock<std::mutex> lock(mu_);
      release_ = true;
      cv_.notify_all();
      cv_.wait_for(lock, milliseconds(3000), [&] { return in_callback_ == 0; });
    }
    try {
      cli_->disconnect(1000)->wait_for(milliseconds(2000));
    } catch (const ::mqtt::exception&) {
      // Not connected (the kick dropped it): disconnect() still stops the automatic reconnect.
    }
  }

  // Close() could not drop the connection and left a callback parked: this object must then
  // never be destroyed (the parked callback still uses it).
  bool leaked() {
    std::lock_guard<std::mutex> lock(mu_);
    return leaked_;
  }

 private:
  struct Held {
    ReceivedRecord record;
    bool acked = false;
  };

  bool HasUnacked() const {
    for (const auto& [t, h] : held_)
      if (!h.acked) return true;
    return false;
  }

  // Drops this client's connection through the broker without acking (see the file comment).
  bool Kick() {
    Status st = KickConnection(o_);
    if (!st.ok())
      log_.Log(Level::kWarn, "mqtt source could not drop its connection",
               {{"error", st.ToString()}});
    return st.ok();
  }

  Status Connect(milliseconds timeout) {
    try {
      if (!connect_tok_) {
        // Persistent session: what the broker sent but we never acked is redelivered.
        ::mqtt::connect_options opts = mqtt_internal::ConnectOptions(o_, /*clean_start=*/false);
        opts.set_properties(::mqtt::properties{
            {::mqtt::property::SESSION_EXPIRY_INTERVAL,
             static_cast<int>(std::min<int64_t>(o_.session_expiry.count(), 0x7FFFFFFF))}});
        connect_tok_ = cli_->connect(opts);
      }
      if (!connect_tok_->wait_for(timeout))
        return Status::Unavailable("mqtt: not connected to " + o_.url + " yet");
      connect_tok_.reset();
      ever_connected_.store(true);
      return Status::Ok();
    } catch (const ::mqtt::exception& e) {
      connect_tok_.reset();
      return Status::Unavailable("mqtt connect to " + o_.url +
                                 " failed: " + mqtt_internal::Describe(e));
    }
  }

  // On every (re)connect: subscribe without waiting (waiting here would deadlock Paho).
  void OnConnected() {
    std::vector<std::string> filters;
    std::vector<SubscribeListener*> listeners;
    {
      std::lock_guard<std::mutex> lock(mu_);
      filters = filters_;
      for (const auto& l : sub_listeners_) listeners.push_back(l.get());
    }
    log_.Log(Level::kInfo, "mqtt connected; subscribing",
             {{"url", o_.url}, {"client_id", o_.client_id}, {"filters", filters.size()}});
    for (size_t i = 0; i < filters.size(); ++i) {
      const std::string& f = filters[i];
      const std::string sub = o_.shared_group.empty() ? f : "$share/" + o_.shared_group + "/" + f;
      try {
        cli_->subscribe(sub, o_.qos, nullptr, *listeners[i]);
      } catch (const ::mqtt::exception& e) {
        log_.Log(Level::kError, "mqtt subscribe failed",
                 {{"filter", sub}, {"error", mqtt_internal::Describe(e)}});
      }
    }
  }

  // Paho's receive thread. Returns (and so lets Paho send the PUBACK) only once the record is
  // acked, or when the source is closing (after the disconnect, so nothing is acked then).
  void OnMessage(const ::mqtt::const_message_ptr& m) {
    try {
      ReceivedRecord rec;
      const std::string& topic = m->get_topic();
      {
        std::lock_guard<std::mutex> lock(mu_);
        for (const auto& f : filters_)
          if (MqttTopicMatches(f, topic)) {
            rec.topic = f;
            break;
          }
      }
      if (rec.topic.empty()) rec.topic = topic;  // e.g. a session subscription from before
      rec.partition = 0;
      rec.key = topic;
      rec.payload = m->get_payload_str();
      rec.broker_time = std::chrono::system_clock::now();
      const ::mqtt::properties& props = m->get_properties();
      const size_t n = props.count(::mqtt::property::USER_PROPERTY);
      for (size_t i = 0; i < n; ++i) {
        auto kv = ::mqtt::get<::mqtt::string_pair>(props, ::mqtt::property::USER_PROPERTY, i);
        rec.headers.emplace_back(std::get<0>(kv), std::get<1>(kv));
      }
      if (props.contains(::mqtt::property::CONTENT_TYPE))
        rec.content_type = ::mqtt::get<std::string>(props, ::mqtt::property::CONTENT_TYPE);
      std::unique_lock<std::mutex> lock(mu_);
      if (stopping_) {
        // Closing: never hand out or ack a new message. Drop the connection, then return.
        lock.unlock();
        if (!Kick()) {
          std::unique_lock<std::mutex> relock(mu_);
          cv_.wait(relock, [&] { return destroyed_; });
        }
        return;
      }
      ++in_callback_;
      const uint64_t token = ++last_token_;
      rec.ack_token = token;
      held_.emplace(token, Held{std::move(rec), false});
      ready_.push_back(token);
      cv_.notify_all();
      const auto since = Clock::now();
      bool warned = false;
      while (!held_.at(token).acked && !release_) {
        cv_.wait_for(lock, milliseconds(500));
        if (!warned && Clock::now() - since > MaxProcessingTime(o_)) {
          warned = true;
          log_.Log(Level::kWarn,
                   "mqtt message not acknowledged within half the keepalive; the broker may "
                   "drop the connection and redeliver it",
                   {{"topic", topic}, {"max_processing_ms", MaxProcessingTime(o_).count()}});
        }
      }
      held_.erase(token);
      std::erase(ready_, token);
      --in_callback_;
      cv_.notify_all();
    } catch (const std::exception& e) {
      // An exception must not cross Paho's C frames. Park instead of returning: returning
      // would ack a message the runtime never saw.
      log_.Log(Level::kError, "mqtt message callback failed", {{"error", e.what()}});
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return destroyed_; });
    }
  }

  // One per filter (guarded by mu_). Declared before the client so that they outlive it: Paho
  // keeps a reference in each subscribe token.
  std::vector<std::unique_ptr<SubscribeListener>> sub_listeners_;
  std::vector<std::unique_ptr<SubscribeListener>> retired_listeners_;  // see Subscribe()
  bool callbacks_set_ = false;                                         // Subscribe()'s thread only
  MqttOptions o_;
  std::unique_ptr<::mqtt::async_client> cli_;
  ::mqtt::token_ptr connect_tok_;
  std::atomic<bool> ever_connected_{false};
  Logger log_{"mqtt"};

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> filters_;
  AssignmentListener* listener_ = nullptr;
  bool assigned_ = false;
  std::map<uint64_t, Held> held_;
  std::deque<uint64_t> ready_;
  uint64_t last_token_ = 0;
  int64_t next_offset_ = 1;
  int in_callback_ = 0;
  bool stopping_ = false;  // Close() started: no new record is handed out or acked
  bool release_ = false;   // Close(): the connection was dropped; parked callbacks may return
  bool destroyed_ = false;
  bool closed_ = false;
  bool leaked_ = false;
  std::atomic<bool> connected_{false};
};

}  // namespace

// The MessageSource: owns a SourceImpl and deletes it unless Close() had to leave a callback
// parked (then the implementation, its Paho client and its state are leaked on purpose).
class MqttSource final : public MessageSource {
 public:
  explicit MqttSource(MqttOptions o)
      : max_processing_(converge::broker::MaxProcessingTime(o)),
        impl_(new SourceImpl(std::move(o))) {}
  ~MqttSource() override {
    impl_->Close();
    if (!impl_->leaked()) delete impl_;
  }
  Status Subscribe(const std::vector<std::string>& topics, AssignmentListener* listener) override {
    return impl_->Subscribe(topics, listener);
  }
  Result<std::vector<ReceivedRecord>> Poll(size_t max_records, milliseconds timeout) override {
    return impl_->Poll(max_records, timeout);
  }
  void Ack(const std::vector<ReceivedRecord>& records) override { impl_->Ack(records); }
  Status Seek(const TopicPartition& tp, int64_t offset) override { return impl_->Seek(tp, offset); }
  std::optional<milliseconds> MaxProcessingTime() const override { return max_processing_; }
  void Close() override { impl_->Close(); }

 private:
  const milliseconds max_processing_;
  SourceImpl* impl_;
};

Result<std::unique_ptr<MessageSource>> MakeMqttSource(const MqttOptions& options) {
  CONVERGE_RETURN_IF_ERROR(options.Validate());
  if (options.client_id.empty())
    return Status::InvalidArgument(
        "mqtt.client_id must be set for a source (its persistent session is keyed by it)");
  try {
    return std::unique_ptr<MessageSource>(new MqttSource(options));
  } catch (const ::mqtt::exception& e) {
    return Status::InvalidArgument("mqtt client: " + mqtt_internal::Describe(e));
  }
}

}  // namespace converge::broker
