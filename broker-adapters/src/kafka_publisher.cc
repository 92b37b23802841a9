// KafkaPublisher: Publisher on an idempotent librdkafka producer.
//
// Delivery reports are served by rd_kafka_poll() on the thread inside PublishBatch, so the
// callbacks only touch state owned by that call. A message whose report arrives after its batch
// returned (it was reported kDeadlineExceeded) is looked up by its token, not found, and
// ignored.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "converge/broker/kafka.h"
#include "converge/common/envelope.h"
#include "kafka_config.h"
#include "kafka_errors.h"
#include "rdkafka_handles.h"

namespace converge::broker {
namespace {

using internal::KafkaConf;
using internal::KafkaHandle;
using internal::KafkaHeaders;
using internal::MapDeliveryError;
using Clock = std::chrono::steady_clock;

// PublishBatch waits for its reports in rd_kafka_flush() calls of at most this long (see there),
// so that Close() from another thread and a fatal error are noticed quickly.
constexpr std::chrono::milliseconds kFlushSlice{5};
// The longest LearnTopicLocked waits for a topic's metadata (a round trip, normally).
constexpr std::chrono::milliseconds kLearnTimeout{500};

int ClampMillis(std::chrono::milliseconds ms) {
  if (ms.count() <= 0) return 0;
  if (ms.count() > INT32_MAX) return INT32_MAX;
  return static_cast<int>(ms.count());
}

// Kafka's legal topic names: 1..249 of [a-zA-Z0-9._-], not "." or "..".
bool IsValidTopicName(const std::string& topic) {
  if (topic.empty() || topic.size() > 249 || topic == "." || topic == "..") return false;
  for (char c : topic) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

class KafkaPublisher final : public Publisher {
 public:
  explicit KafkaPublisher(KafkaOptions options) : options_(std::move(options)) {}
  ~KafkaPublisher() override { Close(std::chrono::milliseconds(0)); }

  // Builds the configuration and the first producer, so that configuration errors surface in
  // the factory.
  static Result<std::unique_ptr<Publisher>> Create(const KafkaOptions& options);

  std::vector<DeliveryResult> PublishBatch(std::span<const Message* const> messages,
                                           std::chrono::milliseconds timeout) override;
  Status CheckConnected(std::chrono::milliseconds timeout) override;
  std::string Name() const override { return "kafka"; }
  void Close(std::chrono::milliseconds timeout) override;

 private:
  static void OnDeliveryThunk(rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
    static_cast<KafkaPublisher*>(opaque)->OnDelivery(*m);
  }
  static void OnErrorThunk(rd_kafka_t*, int err, const char*, void* opaque) {
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
      static_cast<KafkaPublisher*>(opaque)->fatal_.store(true, std::memory_order_relaxed);
    }
    // Other errors (transport, all brokers down) are transient: librdkafka retries, and they
    // reach the caller through delivery reports and CheckConnected.
  }

  void OnDelivery(const rd_kafka_message_t& m);
  Status CreateProducerLocked();
  // After rd_kafka_fatal_error: every message of this batch still waiting becomes
  // kDeadlineExceeded, and the producer is replaced.
  void RecoverFromFatalLocked();
  Status ProduceOne(const Message& message, uint64_t token, Clock::time_point deadline);
  // Asks the brokers for `topic`'s metadata once per producer, before its first message.
  void LearnTopicLocked(const std::string& topic, Clock::time_point deadline);

  const KafkaOptions options_;
  // Configuration with callbacks and opaque set; each producer gets a copy (rd_kafka_conf_dup).
  // Written once in Create().
  KafkaConf template_conf_;

  // Set by Close() from any thread; PublishBatch checks it between poll slices.
  std::atomic<bool> closing_{false};
  // Set by the error callback (which runs inside rd_kafka_poll, on the publishing thread).
  std::atomic<bool> fatal_{false};

  // Held for the whole of PublishBatch, CheckConnected and Close.
  std::mutex mu_;
  bool closed_ = false;
  KafkaHandle producer_;  // null after a failed re-creation; the next call retries
  // The batch in progress: message token → index into *results_.
  std::unordered_map<uint64_t, size_t> in_flight_;
  // Topics whose metadata this producer asked for (LearnTopicLocked); reset with the producer.
  std::unordered_set<std::string> known_topics_;
  std::vector<DeliveryResult>* results_ = nullptr;
  uint64_t next_token_ = 1;
};

Status KafkaPublisher::CreateProducerLocked() {
  KafkaConf conf(rd_kafka_conf_dup(template_conf_.get()));
  known_topics_.clear();
  CONVERGE_ASSIGN_OR_RETURN(producer_, internal::NewKafkaHandle(RD_KAFKA_PRODUCER, conf));
  fatal_.store(false, std::memory_order_relaxed);
  return Status::Ok();
}

void KafkaPublisher::OnDelivery(const rd_kafka_message_t& m) {
  const auto token = reinterpret_cast<uintptr_t>(m._private);
  auto it = in_flight_.find(token);
  if (it == in_flight_.end() || results_ == nullptr) return;  // a report from an earlier batch
  DeliveryResult& r = (*results_)[it->second];
  r.status = MapDeliveryError(m.err, rd_kafka_message_status(&m), options_.unknown_topic);
  r.partition = m.partition;
  r.offset = m.err == RD_KAFKA_RESP_ERR_NO_ERROR ? m.offset : -1;
  in_flight_.erase(it);
}

void KafkaPublisher::RecoverFromFatalLocked() {
  char reason[512] = "";
  const rd_kafka_resp_err_t err = rd_kafka_fatal_error(producer_.get(), reason, sizeof(reason));
  // Reports librdkafka already queued (purged messages) carry their own, exact answer.
  rd_kafka_poll(producer_.get(), 0);
  const std::string msg = std::string("kafka producer fatal error ") + rd_kafka_err2name(err) +
                          ": " + reason + "; producer recreated, message may have been written";
  if (results_ != nullptr) {
    for (const auto& [token, index] : in_flight_) {
      (*results_)[index] = DeliveryResult{Status::DeadlineExceeded(msg), -1, -1};
    }
  }
  in_flight_.clear();
  producer_.reset();
  // If this fails, producer_ stays null and the next call tries again.
  (void)CreateProducerLocked();
}

Status KafkaPublisher::ProduceOne(const Message& message, uint64_t token,
                                  Clock::time_point deadline) {
  if (!IsValidTopicName(message.topic)) {
    return Status::FailedPrecondition("invalid Kafka topic name \"" + message.topic + "\"");
  }
  // The CloudEvents attributes as ce_* headers (common/'s envelope codec). A message the codec
  // rejects can never be published as it is: kInvalidArgument, naming the field.
  Result<HeaderList> encoded = EncodeKafkaHeaders(message);
  if (!encoded.ok()) return encoded.status().WithContext("kafka envelope");
  KafkaHeaders headers(rd_kafka_headers_new(encoded->size()));
  for (const auto& [name, value] : *encoded) {
    rd_kafka_header_add(headers.get(), name.data(), static_cast<ssize_t>(name.size()), value.data(),
                        static_cast<ssize_t>(value.size()));
  }
  const std::optional<std::string> key = KafkaKey(message);  // the subject, or no key
  const void* key_data = key ? key->data() : nullptr;
  const size_t key_size = key ? key->size() : 0;

  while (true) {
    // RD_KAFKA_MSG_F_COPY: librdkafka keeps its own copy, because the message may outlive this
    // batch (a late delivery after a kDeadlineExceeded answer). No record timestamp is given:
    // librdkafka stamps the produce time. The enqueue time travels in ce_time; as the record
    // timestamp it would let time-based retention delete a row published late (after an
    // outage) almost at once.
    rd_kafka_resp_err_t err = rd_kafka_producev(
        producer_.get(), RD_KAFKA_V_TOPIC(message.topic.c_str()),
        RD_KAFKA_V_KEY(key_data, key_size),
        RD_KAFKA_V_VALUE(const_cast<char*>(message.payload.data()), message.payload.size()),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(headers.get()),
        RD_KAFKA_V_OPAQUE(reinterpret_cast<void*>(static_cast<uintptr_t>(token))), RD_KAFKA_V_END);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      // rd_kafka_producev succeeded and now owns the headers.
      headers.release();
      return Status::Ok();
    }
    if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL && Clock::now() < deadline &&
        !closing_.load(std::memory_order_relaxed)) {
      rd_kafka_poll(producer_.get(), 10);  // serve delivery reports to make room
      continue;
    }
    return MapDeliveryError(err, RD_KAFKA_MSG_STATUS_NOT_PERSISTED, options_.unknown_topic,
                            "not produced");
  }
}

// librdkafka requests a new topic's metadata only on its next periodic topic scan (once a
// second): a producer's first message to a topic waited 0.6-0.9 s (debug log: "New local
// topic" ... 890 ms ... "Requesting metadata ... refresh unavailable topics"), after every relay
// start and for every new topic. A direct metadata request takes a round trip. A failure is
// ignored: the messages then wait for librdkafka's own refresh, as before.
void KafkaPublisher::LearnTopicLocked(const std::string& topic, Clock::time_point deadline) {
  if (closing_.load() || known_topics_.contains(topic) || !IsValidTopicName(topic)) return;
  known_topics_.insert(topic);
  internal::KafkaTopic rkt(rd_kafka_topic_new(producer_.get(), topic.c_str(), nullptr));
  if (!rkt) return;
  const auto remaining =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  if (remaining.count() <= 0) return;
  const rd_kafka_metadata_t* raw = nullptr;
  // At most kLearnTimeout: the call cannot be interrupted by Close(), and with the brokers down
  // the produce path reports that anyway.
  (void)rd_kafka_metadata(producer_.get(), 0, rkt.get(), &raw,
                          ClampMillis(std::min(remaining, kLearnTimeout)));
  internal::KafkaMetadata metadata(raw);  // only the client's metadata cache matters
}

std::vector<DeliveryResult> KafkaPublisher::PublishBatch(std::span<const Message* const> messages,
                                                         std::chrono::milliseconds timeout) {
  const Clock::time_point deadline = Clock::now() + timeout;
  std::vector<DeliveryResult> results(messages.size());
  std::lock_guard lock(mu_);

  auto fail_all = [&](const Status& status) {
    for (DeliveryResult& r : results) r = DeliveryResult{status, -1, -1};
    return results;
  };
  if (closed_ || closing_.load()) return fail_all(Status::Unavailable("kafka publisher closed"));
  if (producer_ && (fatal_.load() || rd_kafka_fatal_error(producer_.get(), nullptr, 0))) {
    RecoverFromFatalLocked();
  }
  if (!producer_) {
    Status created = CreateProducerLocked();
    if (!created.ok()) return fail_all(created.WithContext("kafka producer"));
  }

  results_ = &results;
  // (topic, key) pairs whose earlier message was refused at produce time: later messages of
  // the same key are held back so that a retry cannot overtake them.
  std::set<std::pair<std::string, std::string>> held_back;
  for (size_t i = 0; i < messages.size(); ++i) {
    const Message& m = *messages[i];
    DeliveryResult& r = results[i];
    if (!m.subject.empty() && held_back.contains({m.topic, m.subject})) {
      r.status = Status::Unavailable(
          "not produced: an earlier message with the same topic and key was not accepted");
      continue;
    }
    if (i == 0 || m.topic != messages[i - 1]->topic) LearnTopicLocked(m.topic, deadline);
    const uint64_t token = next_token_++;
    Status produced = ProduceOne(m, token, deadline);
    if (!produced.ok()) {
      r.status = std::move(produced);
      if (r.status.IsRetriable() && !m.subject.empty()) held_back.insert({m.topic, m.subject});
      continue;
    }
    in_flight_.emplace(token, i);
    r.status = Status::DeadlineExceeded("no delivery report within the batch timeout");
  }

  while (!in_flight_.empty() && !closing_.load(std::memory_order_relaxed)) {
    if (fatal_.load(std::memory_order_relaxed) ||
        rd_kafka_fatal_error(producer_.get(), nullptr, 0) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      RecoverFromFatalLocked();
      break;
    }
    const auto remaining =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (remaining.count() <= 0) break;
    // rd_kafka_flush, not rd_kafka_poll: while it runs, librdkafka sends what is queued at once
    // instead of after linger.ms (librdkafka >= 1.9). The batch is all produced by now, so
    // lingering would only delay it. Short slices: flush also waits for older messages still in
    // flight (an earlier batch's late ones), which this batch need not wait for.
    rd_kafka_flush(producer_.get(), ClampMillis(std::min(remaining, kFlushSlice)));
  }
  // Whatever is still in flight keeps its kDeadlineExceeded answer; its report, if it ever
  // comes, finds no entry.
  in_flight_.clear();
  results_ = nullptr;
  return results;
}

Status KafkaPublisher::CheckConnected(std::chrono::milliseconds timeout) {
  std::lock_guard lock(mu_);
  if (closed_ || closing_.load()) return Status::Unavailable("kafka publisher closed");
  if (producer_ && (fatal_.load() || rd_kafka_fatal_error(producer_.get(), nullptr, 0))) {
    RecoverFromFatalLocked();
  }
  if (!producer_) CONVERGE_RETURN_IF_ERROR(CreateProducerLocked().WithContext("kafka producer"));
  const rd_kafka_metadata_t* raw = nullptr;
  // all_topics=0, no topic: asks one broker for the broker list only.
  rd_kafka_resp_err_t err =
      rd_kafka_metadata(producer_.get(), 0, nullptr, &raw, ClampMillis(timeout));
  internal::KafkaMetadata metadata(raw);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return Status::Unavailable(std::string("kafka metadata request failed: ") +
                               rd_kafka_err2name(err) + ": " + rd_kafka_err2str(err));
  }
  if (metadata->broker_cnt == 0) return Status::Unavailable("kafka metadata lists no brokers");
  return Status::Ok();
}

void KafkaPublisher::Close(std::chrono::milliseconds timeout) {
  closing_.store(true);
  std::lock_guard lock(mu_);  // waits for PublishBatch to notice closing_ and return
  if (closed_) return;
  closed_ = true;
  if (producer_) {
    // Reports served here find no batch and are dropped: their messages were already
    // answered kDeadlineExceeded.
    rd_kafka_flush(producer_.get(), ClampMillis(timeout));
    producer_.reset();
  }
}

Result<std::unique_ptr<Publisher>> KafkaPublisher::Create(const KafkaOptions& options) {
  CONVERGE_RETURN_IF_ERROR(options.Validate());
  const internal::KafkaProperties typed = {
      {"bootstrap.servers", options.bootstrap_servers},
      {"client.id", options.client_id},
      {"enable.idempotence", options.idempotence ? "true" : "false"},
      {"acks", "all"},
      {"message.timeout.ms", internal::MillisString(options.message_timeout)},
      {"request.timeout.ms", internal::MillisString(options.request_timeout)},
      {"linger.ms", internal::MillisString(options.linger)},
      {"compression.type", options.compression},
  };
  auto publisher = std::make_unique<KafkaPublisher>(options);
  CONVERGE_ASSIGN_OR_RETURN(publisher->template_conf_,
                            internal::BuildKafkaConf(typed, options.properties));
  rd_kafka_conf_t* conf = publisher->template_conf_.get();
  rd_kafka_conf_set_dr_msg_cb(conf, &KafkaPublisher::OnDeliveryThunk);
  rd_kafka_conf_set_error_cb(conf, &KafkaPublisher::OnErrorThunk);
  rd_kafka_conf_set_opaque(conf, publisher.get());
  {
    std::lock_guard lock(publisher->mu_);
    CONVERGE_RETURN_IF_ERROR(publisher->CreateProducerLocked());
  }
  return std::unique_ptr<Publisher>(std::move(publisher));
}

}  // namespace

Result<std::unique_ptr<Publisher>> MakeKafkaPublisher(const KafkaOptions& options) {
  return KafkaPublisher::Create(options);
}

}  // namespace converge::broker
