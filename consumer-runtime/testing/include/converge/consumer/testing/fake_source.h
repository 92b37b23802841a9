// FakeSource: an in-memory MessageSource for consumer tests. A test appends records to
// partitions (Produce), assigns or revokes partitions (which calls the listener the way a
// broker rebalance would, from inside the next Poll), and flips failure switches.
//
// Thread safety: the source side (Subscribe/Poll/Ack/Seek/Close) is called by the consumer's
// thread; the test side (Produce, Assign, Revoke, switches, getters) may be called from any
// thread. Everything is guarded by one mutex; the listener is called without it held.
#pragma once

#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "converge/broker/source.h"

namespace converge::consumer::testing {

class FakeSource final : public broker::MessageSource {
 public:
  // Appends a record to topic/partition; returns its offset.
  int64_t Produce(const std::string& topic, int32_t partition, std::string payload,
                  std::vector<std::pair<std::string, std::string>> headers,
                  std::optional<std::string> key = std::nullopt);
  // Queues a rebalance delivered at the next Poll: OnRevoked for `revoke`, then OnAssigned for
  // `assign`, and the positions returned by OnAssigned are used (earliest when missing).
  void Rebalance(std::vector<broker::TopicPartition> revoke,
                 std::vector<broker::TopicPartition> assign);
  // Poll returns kUnavailable the next `n` times.
  void FailPolls(int n);
  // Polls return nothing while paused (a stalled broker / partition).
  void Pause(bool paused);
  // Start every assigned partition at offset 0, whatever OnAssigned returned (a broker that
  // redelivers everything: the consumer must still apply each effect once).
  void IgnoreAssignedOffsets(bool ignore);
  // What MaxProcessingTime() returns (default nullopt, like Kafka). Before Init().
  void SetMaxProcessingTime(std::optional<std::chrono::milliseconds> bound);

  // What was acked, in order, and the highest acked offset + 1 per partition.
  std::vector<broker::ReceivedRecord> acked() const;
  int64_t AckedPosition(const broker::TopicPartition& tp) const;
  int64_t Position(const broker::TopicPartition& tp) const;
  bool closed() const;

  // MessageSource
  Status Subscribe(const std::vector<std::string>& topics,
                   broker::AssignmentListener* listener) override;
  Result<std::vector<broker::ReceivedRecord>> Poll(size_t max_records,
                                                   std::chrono::milliseconds timeout) override;
  void Ack(const std::vector<broker::ReceivedRecord>& records) override;
  Status Seek(const broker::TopicPartition& tp, int64_t offset) override;
  void Close() override;
  std::optional<std::chrono::milliseconds> MaxProcessingTime() const override;

 private:
  struct Pending {
    std::vector<broker::TopicPartition> revoke, assign;
  };
  mutable std::mutex mu_;
  broker::AssignmentListener* listener_ = nullptr;
  std::map<broker::TopicPartition, std::vector<broker::ReceivedRecord>> log_;
  std::map<broker::TopicPartition, int64_t> position_;  // assigned partitions only
  std::vector<Pending> pending_;
  std::vector<broker::ReceivedRecord> acked_;
  std::map<broker::TopicPartition, int64_t> acked_position_;
  int fail_polls_ = 0;
  bool paused_ = false;
  bool ignore_assigned_ = false;
  bool closed_ = false;
  std::optional<std::chrono::milliseconds> max_processing_time_;
};

}  // namespace converge::consumer::testing
