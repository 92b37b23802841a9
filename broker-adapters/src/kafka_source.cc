// KafkaSource: MessageSource on a librdkafka consumer-group member.
//
// Offsets come from the AssignmentListener (PostgreSQL), never from Kafka's committed offsets:
// the rebalance callback asks the listener and assigns exactly those positions. The callback
// runs inside rd_kafka_consumer_poll, i.e. inside Poll() on the runtime's thread (and inside
// Close(), which revokes everything).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "converge/broker/kafka.h"
#include "kafka_config.h"
#include "kafka_errors.h"
#include "kafka_record.h"
#include "rdkafka_handles.h"

namespace converge::broker {
namespace {

using internal::KafkaConf;
using internal::KafkaError;
using internal::KafkaHandle;
using internal::KafkaTopicPartitionList;
using internal::MapConsumerError;
using Clock = std::chrono::steady_clock;

// How long Seek waits for librdkafka's fetcher to apply the new position.
constexpr int kSeekTimeoutMs = 10000;

std::vector<TopicPartition> ToVector(const rd_kafka_topic_partition_list_t* list) {
  std::vector<TopicPartition> out;
  out.reserve(list->cnt);
  for (int i = 0; i < list->cnt; ++i) {
    out.push_back(TopicPartition{list->elems[i].topic, list->elems[i].partition});
  }
  return out;
}

class KafkaSource final : public MessageSource {
 public:
  ~KafkaSource() override { Close(); }

  static Result<std::unique_ptr<MessageSource>> Create(const KafkaSourceOptions& options);

  Status Subscribe(const std::vector<std::string>& topics, AssignmentListener* listener) override;
  Result<std::vector<ReceivedRecord>> Poll(size_t max_records,
                                           std::chrono::milliseconds timeout) override;
  void Ack(const std::vector<ReceivedRecord>& records) override;
  Status Seek(const TopicPartition& tp, int64_t offset) override;
  std::optional<int64_t> HighWatermark(const TopicPartition& tp) const override;
  void Close() override;

 private:
  static void OnRebalanceThunk(rd_kafka_t*, rd_kafka_resp_err_t err,
                               rd_kafka_topic_partition_list_t* partitions, void* opaque) {
    static_cast<KafkaSource*>(opaque)->OnRebalance(err, partitions);
  }
  void OnRebalance(rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* partitions);
  void Assign(rd_kafka_topic_partition_list_t* partitions, bool cooperative);
  void Revoke(rd_kafka_topic_partition_list_t* partitions, bool cooperative);

  KafkaHandle consumer_;
  AssignmentListener* listener_ = nullptr;
  bool subscribed_ = false;
  // Partitions this member owns → the assignment generation they were assigned in. A record's
  // ack_token is that generation; Ack() commits only records whose partition still has it.
  std::map<TopicPartition, uint64_t> assigned_;
  uint64_t generation_ = 0;
  // An error from the rebalance callback, returned by the next Poll.
  Status pending_error_;
};

void KafkaSource::Assign(rd_kafka_topic_partition_list_t* partitions, bool cooperative) {
  const std::vector<TopicPartition> tps = ToVector(partitions);
  const std::map<TopicPartition, int64_t> offsets = listener_->OnAssigned(tps);
  for (int i = 0; i < partitions->cnt; ++i) {
    rd_kafka_topic_partition_t& p = partitions->elems[i];
    auto it = offsets.find(TopicPartition{p.topic, p.partition});
    p.offset = (it != offsets.end() && it->second >= 0) ? it->second : RD_KAFKA_OFFSET_BEGINNING;
  }
  ++generation_;
  for (const TopicPartition& tp : tps) assigned_[tp] = generation_;
  if (cooperative) {
    KafkaError error(rd_kafka_incremental_assign(consumer_.get(), partitions));
    if (error) {
      pending_error_ =
          MapConsumerError(rd_kafka_error_code(error.get()), rd_kafka_error_string(error.get()));
    }
  } else if (rd_kafka_resp_err_t err = rd_kafka_assign(consumer_.get(), partitions)) {
    pending_error_ = MapConsumerError(err, "assign");
  }
}

void KafkaSource::Revoke(rd_kafka_topic_partition_list_t* partitions, bool cooperative) {
  const std::vector<TopicPartition> tps = ToVector(partitions);
  for (const TopicPartition& tp : tps) assigned_.erase(tp);
  listener_->OnRevoked(tps);
  if (cooperative) {
    KafkaError error(rd_kafka_incremental_unassign(consumer_.get(), partitions));
  } else {
    rd_kafka_assign(consumer_.get(), nullptr);
    assigned_.clear();
  }
}

void KafkaSource::OnRebalance(rd_kafka_resp_err_t err,
                              rd_kafka_topic_partition_list_t* partitions) {
  const bool cooperative =
      std::strcmp(rd_kafka_rebalance_protocol(consumer_.get()), "COOPERATIVE") == 0;
  switch (err) {
    case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
      Assign(partitions, cooperative);
      break;
    case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
      Revoke(partitions, cooperative);
      break;
    default:
      // librdkafka's documented reaction to a rebalance error: drop the whole assignment.
      if (!assigned_.empty()) {
        std::vector<TopicPartition> all;
        for (const auto& [tp, gen] : assigned_) all.push_back(tp);
        assigned_.clear();
        listener_->OnRevoked(all);
      }
      rd_kafka_assign(consumer_.get(), nullptr);
      pending_error_ = MapConsumerError(err, "rebalance");
      break;
  }
}

Status KafkaSource::Subscribe(const std::vector<std::string>& topics,
                              AssignmentListener* listener) {
  if (!consumer_) return Status::FailedPrecondition("kafka source closed");
  if (listener == nullptr) return Status::InvalidArgument("listener is null");
  if (topics.empty()) return Status::InvalidArgument("no topics to subscribe to");
  KafkaTopicPartitionList list(rd_kafka_topic_partition_list_new(static_cast<int>(topics.size())));
  for (const std::string& t : topics) {
    rd_kafka_topic_partition_list_add(list.get(), t.c_str(), RD_KAFKA_PARTITION_UA);
  }
  listener_ = listener;
  if (rd_kafka_resp_err_t err = rd_kafka_subscribe(consumer_.get(), list.get())) {
    return MapConsumerError(err, "subscribe");
  }
  subscribed_ = true;
  return Status::Ok();
}

Result<std::vector<ReceivedRecord>> KafkaSource::Poll(size_t max_records,
                                                      std::chrono::milliseconds timeout) {
  if (!consumer_) return Status::Unavailable("kafka source closed");
  if (!subscribed_) return Status::FailedPrecondition("Poll before Subscribe");
  const Clock::time_point deadline = Clock::now() + timeout;
  std::vector<ReceivedRecord> out;
  Status error;
  while (out.size() < max_records) {
    int wait_ms = 0;
    if (out.empty() && error.ok()) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      wait_ms = static_cast<int>(std::clamp<int64_t>(left.count(), 0, INT32_MAX));
    }
    internal::KafkaMessage m(rd_kafka_consumer_poll(consumer_.get(), wait_ms));
    if (!m) {
      if (wait_ms == 0) break;
      continue;  // woke early (e.g. after a rebalance callback): wait out the rest
    }
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF && error.ok()) {
        error = MapConsumerError(m->err, rd_kafka_message_errstr(m.get()));
      }
      continue;
    }
    ReceivedRecord r = internal::ToReceivedRecord(*m);
    auto it = assigned_.find(TopicPartition{r.topic, r.partition});
    if (it == assigned_.end()) continue;  // fetched before a revoke: not ours any more
    r.ack_token = it->second;
    out.push_back(std::move(r));
  }
  if (!out.empty()) return out;
  if (!pending_error_.ok()) return std::exchange(pending_error_, Status::Ok());
  if (!error.ok()) return error;
  return out;
}

void KafkaSource::Ack(const std::vector<ReceivedRecord>& records) {
  if (!consumer_ || records.empty()) return;
  std::map<TopicPartition, int64_t> next;
  for (const ReceivedRecord& r : records) {
    TopicPartition tp{r.topic, r.partition};
    auto it = assigned_.find(tp);
    if (it == assigned_.end() || it->second != r.ack_token) continue;  // revoked since
    int64_t& n = next[tp];
    n = std::max(n, r.offset + 1);
  }
  if (next.empty()) return;
  KafkaTopicPartitionList list(rd_kafka_topic_partition_list_new(static_cast<int>(next.size())));
  for (const auto& [tp, offset] : next) {
    rd_kafka_topic_partition_list_add(list.get(), tp.topic.c_str(), tp.partition)->offset = offset;
  }
  // Asynchronous and informational (lag tools): PostgreSQL holds the real position, so a
  // failed commit changes nothing that matters and is not reported.
  rd_kafka_commit(consumer_.get(), list.get(), 1);
}

Status KafkaSource::Seek(const TopicPartition& tp, int64_t offset) {
  if (!consumer_) return Status::Unavailable("kafka source closed");
  if (!assigned_.contains(tp)) {
    return Status::FailedPrecondition("seek: " + tp.topic + "[" + std::to_string(tp.partition) +
                                      "] is not assigned to this member");
  }
  KafkaTopicPartitionList list(rd_kafka_topic_partition_list_new(1));
  rd_kafka_topic_partition_list_add(list.get(), tp.topic.c_str(), tp.partition)->offset =
      offset >= 0 ? offset : RD_KAFKA_OFFSET_BEGINNING;
  KafkaError error(rd_kafka_seek_partitions(consumer_.get(), list.get(), kSeekTimeoutMs));
  if (error) {
    return MapConsumerError(rd_kafka_error_code(error.get()), rd_kafka_error_string(error.get()));
  }
  return MapConsumerError(list->elems[0].err, "seek");
}

std::optional<int64_t> KafkaSource::HighWatermark(const TopicPartition& tp) const {
  if (!consumer_) return std::nullopt;
  int64_t low = -1, high = -1;
  // Cached from the last fetch response: no broker round trip.
  if (rd_kafka_get_watermark_offsets(consumer_.get(), tp.topic.c_str(), tp.partition, &low,
                                     &high) != RD_KAFKA_RESP_ERR_NO_ERROR ||
      high < 0) {
    return std::nullopt;
  }
  return high;
}

void KafkaSource::Close() {
  if (!consumer_) return;
  // Leaves the group; the rebalance callback runs here and calls OnRevoked.
  rd_kafka_consumer_close(consumer_.get());
  consumer_.reset();
  assigned_.clear();
}

Result<std::unique_ptr<MessageSource>> KafkaSource::Create(const KafkaSourceOptions& options) {
  CONVERGE_RETURN_IF_ERROR(options.Validate());
  const internal::KafkaProperties typed = {
      {"bootstrap.servers", options.bootstrap_servers},
      {"group.id", options.group_id},
      {"client.id", options.client_id},
      {"session.timeout.ms", internal::MillisString(options.session_timeout)},
      {"max.poll.interval.ms", internal::MillisString(options.max_poll_interval)},
      {"partition.assignment.strategy", options.assignment_strategy},
      {"auto.offset.reset", options.auto_offset_reset},
      {"enable.auto.commit", "false"},
      {"enable.auto.offset.store", "false"},
      {"enable.partition.eof", "false"},
  };
  auto source = std::unique_ptr<KafkaSource>(new KafkaSource());
  CONVERGE_ASSIGN_OR_RETURN(KafkaConf conf, internal::BuildKafkaConf(typed, options.properties));
  rd_kafka_conf_set_rebalance_cb(conf.get(), &KafkaSource::OnRebalanceThunk);
  rd_kafka_conf_set_opaque(conf.get(), source.get());
  CONVERGE_ASSIGN_OR_RETURN(source->consumer_, internal::NewKafkaHandle(RD_KAFKA_CONSUMER, conf));
  // Route the main queue (errors, statistics) to rd_kafka_consumer_poll, i.e. to Poll().
  rd_kafka_poll_set_consumer(source->consumer_.get());
  return std::unique_ptr<MessageSource>(std::move(source));
}

}  // namespace

Result<std::unique_ptr<MessageSource>> MakeKafkaSource(const KafkaSourceOptions& options) {
  return KafkaSource::Create(options);
}

}  // namespace converge::broker
