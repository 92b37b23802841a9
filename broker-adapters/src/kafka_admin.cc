#include "converge/broker/kafka_admin.h"

#include <algorithm>
#include <map>
#include <random>
#include <tuple>

#include "kafka_config.h"
#include "kafka_errors.h"
#include "kafka_record.h"
#include "rdkafka_handles.h"

namespace converge::broker {
namespace {

using Clock = std::chrono::steady_clock;

int RemainingMs(Clock::time_point deadline) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(left, 0, INT32_MAX));
}

// A consumer that never joins a group or commits: for assign()-based reads.
Result<internal::KafkaHandle> NewReader(const std::string& bootstrap_servers,
                                        const std::map<std::string, std::string>& properties) {
  std::random_device rd;
  const std::string group = "converge-reader-" + std::to_string(rd());
  CONVERGE_ASSIGN_OR_RETURN(internal::KafkaConf conf,
                            internal::BuildKafkaConf({{"bootstrap.servers", bootstrap_servers},
                                                      {"group.id", group},
                                                      {"client.id", "converge-reader"},
                                                      {"enable.auto.commit", "false"},
                                                      {"enable.partition.eof", "false"},
                                                      {"allow.auto.create.topics", "false"}},
                                                     properties));
  return internal::NewKafkaHandle(RD_KAFKA_CONSUMER, conf);
}

Result<int> CountPartitions(rd_kafka_t* rk, const std::string& topic, int timeout_ms) {
  internal::KafkaTopic rkt(rd_kafka_topic_new(rk, topic.c_str(), nullptr));
  if (!rkt) return Status::InvalidArgument("bad topic name \"" + topic + "\"");
  const rd_kafka_metadata_t* raw = nullptr;
  rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt.get(), &raw, timeout_ms);
  internal::KafkaMetadata md(raw);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) return internal::MapConsumerError(err, "metadata");
  if (md->topic_cnt != 1) return Status::Internal("metadata returned no entry for " + topic);
  const rd_kafka_metadata_topic_t& t = md->topics[0];
  if (t.err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART || (t.err == 0 && t.partition_cnt == 0)) {
    return Status::NotFound("topic " + topic + " does not exist");
  }
  if (t.err != RD_KAFKA_RESP_ERR_NO_ERROR) return internal::MapConsumerError(t.err, topic);
  return t.partition_cnt;
}

}  // namespace

Result<int> PartitionCount(const std::string& bootstrap_servers, const std::string& topic,
                           std::chrono::milliseconds timeout,
                           const std::map<std::string, std::string>& properties) {
  CONVERGE_ASSIGN_OR_RETURN(internal::KafkaHandle rk, NewReader(bootstrap_servers, properties));
  return CountPartitions(rk.get(), topic, static_cast<int>(timeout.count()));
}

Result<std::vector<ReceivedRecord>> ReadAll(const std::string& bootstrap_servers,
                                            const std::string& topic,
                                            std::chrono::milliseconds timeout,
                                            const std::map<std::string, std::string>& properties) {
  const Clock::time_point deadline = Clock::now() + timeout;
  CONVERGE_ASSIGN_OR_RETURN(internal::KafkaHandle rk, NewReader(bootstrap_servers, properties));
  CONVERGE_ASSIGN_OR_RETURN(int partitions,
                            CountPartitions(rk.get(), topic, RemainingMs(deadline)));

  // partition → the high watermark to read up to.
  std::map<int32_t, int64_t> want;
  internal::KafkaTopicPartitionList assignment(rd_kafka_topic_partition_list_new(partitions));
  for (int32_t p = 0; p < partitions; ++p) {
    int64_t low = 0, high = 0;
    rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(rk.get(), topic.c_str(), p, &low,
                                                               &high, RemainingMs(deadline));
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return internal::MapConsumerError(err, "watermarks of partition " + std::to_string(p));
    }
    if (high <= low) continue;
    want[p] = high;
    rd_kafka_topic_partition_list_add(assignment.get(), topic.c_str(), p)->offset = low;
  }

  std::vector<ReceivedRecord> records;
  if (!want.empty()) {
    if (rd_kafka_resp_err_t err = rd_kafka_assign(rk.get(), assignment.get())) {
      return internal::MapConsumerError(err, "assign");
    }
    while (!want.empty()) {
      const int wait = RemainingMs(deadline);
      if (wait == 0) {
        rd_kafka_assign(rk.get(), nullptr);
        return Status::DeadlineExceeded("read " + std::to_string(records.size()) + " records of " +
                                        topic + "; " + std::to_string(want.size()) +
                                        " partitions not read to their high watermark");
      }
      internal::KafkaMessage m(rd_kafka_consumer_poll(rk.get(), std::min(wait, 100)));
      if (!m || m->err != RD_KAFKA_RESP_ERR_NO_ERROR) continue;  // transient: keep trying
      ReceivedRecord r = internal::ToReceivedRecord(*m);
      auto it = want.find(r.partition);
      if (it == want.end()) continue;
      const bool last = r.offset + 1 >= it->second;
      if (r.offset < it->second) records.push_back(std::move(r));
      if (last) want.erase(it);
    }
    rd_kafka_assign(rk.get(), nullptr);
  }
  std::sort(records.begin(), records.end(), [](const ReceivedRecord& a, const ReceivedRecord& b) {
    return std::tie(a.partition, a.offset) < std::tie(b.partition, b.offset);
  });
  return records;
}

}  // namespace converge::broker
