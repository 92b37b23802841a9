// MessageSource: the consumer runtime's view of a broker. Kafka implements it with a consumer
// group; MQTT with a subscription whose PUBACK is held until Ack() (so the local commit happens
// before the broker forgets the message).
//
// Thread safety: Subscribe, Poll and Ack are called from one thread (the runtime's loop). The
// AssignmentListener is called from inside Poll, on that same thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "converge/common/status.h"

namespace converge::broker {

struct TopicPartition {
  std::string topic;
  int32_t partition = 0;
  friend auto operator<=>(const TopicPartition&, const TopicPartition&) = default;
};

// One record as the broker delivered it, before the envelope is decoded.
struct ReceivedRecord {
  std::string topic;
  int32_t partition = 0;  // MQTT: always 0
  int64_t offset = -1;    // Kafka offset; MQTT: a per-connection arrival counter
  std::optional<std::string> key;
  std::vector<std::pair<std::string, std::string>> headers;  // Kafka headers / MQTT user props
  std::string payload;
  std::string content_type;  // MQTT 5 content type, empty otherwise
  std::chrono::system_clock::time_point broker_time{};
  uint64_t ack_token = 0;  // source-private: what Ack() needs to release this record
};

class AssignmentListener {
 public:
  virtual ~AssignmentListener() = default;
  // Partitions were assigned to this member. Return the next offset to read for each; a
  // partition missing from the map starts from the earliest retained offset.
  virtual std::map<TopicPartition, int64_t> OnAssigned(
      const std::vector<TopicPartition>& partitions) = 0;
  // Partitions were taken away. After this returns, records of these partitions that were
  // polled but not yet committed must be dropped, not committed.
  virtual void OnRevoked(const std::vector<TopicPartition>& partitions) = 0;
};

class MessageSource {
 public:
  virtual ~MessageSource() = default;

  virtual Status Subscribe(const std::vector<std::string>& topics,
                           AssignmentListener* listener) = 0;

  // Returns up to `max_records` records, waiting at most `timeout` for the first one. An empty
  // vector means nothing arrived. Errors: kUnavailable (broker unreachable, retry).
  virtual Result<std::vector<ReceivedRecord>> Poll(size_t max_records,
                                                   std::chrono::milliseconds timeout) = 0;

  // Called after the local transaction that recorded these records committed. Kafka: commits
  // the offsets to the broker too (for lag tools only; PostgreSQL holds the real position).
  // MQTT: releases the held PUBACKs.
  virtual void Ack(const std::vector<ReceivedRecord>& records) = 0;

  // Rewinds a partition to `offset` (used after a failed transaction so that records that were
  // polled but not committed are delivered again).
  virtual Status Seek(const TopicPartition& tp, int64_t offset) = 0;

  // The offset the broker will give the next produced record of `tp` (Kafka's high watermark),
  // as last learned from fetch responses, without a round trip; nullopt when unknown or when
  // the source has no such notion (MQTT). The runtime turns it into the lag metric.
  virtual std::optional<int64_t> HighWatermark(const TopicPartition& tp) const {
    (void)tp;
    return std::nullopt;
  }

  // The longest the runtime may take between Poll() returning a record and Ack() for it before
  // the broker gives up on this delivery and redelivers it (MQTT: half the keepalive, because no
  // ping goes out while a PUBACK is held). nullopt: no such bound (Kafka, whose consumer keeps
  // its group membership from a background thread). The runtime bounds the handler's SQL by it
  // and counts an overrun as a failed attempt, so a slow message cannot loop forever.
  virtual std::optional<std::chrono::milliseconds> MaxProcessingTime() const {
    return std::nullopt;
  }

  virtual void Close() = 0;
};

}  // namespace converge::broker
