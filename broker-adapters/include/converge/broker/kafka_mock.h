// KafkaMockCluster: librdkafka's built-in mock Kafka cluster, in this process, for tests and for
// the converge-devkafka tool. Clients in this or other processes on the same host connect to
// bootstrap_servers().
//
// What the librdkafka 2.0.2 mock is (see broker-adapters/README.md): in-memory only; brokers
// bind 127.0.0.1 on random ports; no TLS or SASL; each partition keeps at most 5 MiB or 100,000
// message sets (older ones are dropped silently); an idempotent producer's retries are
// deduplicated only when it has a transactional.id; no abort markers (read_committed sees
// aborted records); topics auto-created by clients always get 4 partitions.
//
// Thread safety: every method may be called from any thread (librdkafka hands each command to
// the mock's own thread and waits for it).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "converge/common/status.h"

namespace converge::broker {

// Kafka protocol request types, for PushRequestErrors (librdkafka 2.0.2 keeps its RD_KAFKAP_*
// constants private).
struct KafkaApiKey {
  static constexpr int16_t kProduce = 0;
  static constexpr int16_t kFetch = 1;
  static constexpr int16_t kListOffsets = 2;
  static constexpr int16_t kMetadata = 3;
  static constexpr int16_t kOffsetCommit = 8;
  static constexpr int16_t kOffsetFetch = 9;
  static constexpr int16_t kFindCoordinator = 10;
  static constexpr int16_t kJoinGroup = 11;
  static constexpr int16_t kHeartbeat = 12;
  static constexpr int16_t kLeaveGroup = 13;
  static constexpr int16_t kSyncGroup = 14;
  static constexpr int16_t kApiVersion = 18;
  static constexpr int16_t kInitProducerId = 22;
};

class KafkaMockCluster {
 public:
  // Starts `brokers` mock brokers (ids 1..brokers). kInvalidArgument when brokers < 1,
  // kInternal when librdkafka cannot start them.
  static Result<std::unique_ptr<KafkaMockCluster>> Start(int brokers);
  ~KafkaMockCluster();
  KafkaMockCluster(const KafkaMockCluster&) = delete;
  KafkaMockCluster& operator=(const KafkaMockCluster&) = delete;

  // "127.0.0.1:41234,127.0.0.1:39871"
  const std::string& bootstrap_servers() const;
  int broker_count() const;

  // Creates a topic. replication_factor 0 means min(3, brokers), as for auto-created topics.
  // kAlreadyExists, or kInvalidArgument for partitions < 1 or replication > brokers.
  Status CreateTopic(const std::string& topic, int partitions, int replication_factor = 0);

  // Disconnects broker `broker_id` (-1: every broker) and refuses new connections. Leadership
  // does not move. kNotFound for an unknown broker.
  Status SetBrokerDown(int32_t broker_id);
  Status SetBrokerUp(int32_t broker_id);
  // Delays every response of the broker (-1: every broker).
  Status SetBrokerRtt(int32_t broker_id, std::chrono::milliseconds rtt);

  // The next `count` requests of `api_key`, on any broker, fail with `error_name`
  // ("NOT_LEADER_FOR_PARTITION", "MSG_SIZE_TOO_LARGE", "_TRANSPORT" disconnects, or a number).
  Status PushRequestErrors(int16_t api_key, int count, std::string_view error_name);
  Status ClearRequestErrors(int16_t api_key);

  // Metadata (and AddPartitionsToTxn) responses for `topic` carry `error_name`; "NO_ERROR"
  // clears it. The 2.0.2 mock still lists the topic's partitions with the error, and
  // librdkafka 2.0.2 then ignores it: producers see their messages time out rather than fail
  // with the error. Use PushRequestErrors(kProduce, ...) for a produce-path error.
  Status SetTopicError(const std::string& topic, std::string_view error_name);

  // Moves the partition's leadership (-1: leaderless). Creates the topic if needed.
  Status SetPartitionLeader(const std::string& topic, int32_t partition, int32_t broker_id);

 private:
  struct Impl;
  explicit KafkaMockCluster(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace converge::broker
