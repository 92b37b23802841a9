// Publisher: the relay's view of a broker. One implementation per target (Kafka, MQTT) lives in
// broker-adapters/src; tests use converge::testing::FakePublisher.
//
// Thread safety: implementations are safe to call from one thread at a time (the relay's
// publishing loop); Close() may be called from another thread to interrupt a wait.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "converge/common/message.h"
#include "converge/common/status.h"

namespace converge::broker {

// The broker's answer for one message.
//   OK                   confirmed: the broker has it (acks=all for Kafka, PUBACK/PUBCOMP < 0x80
//                        for MQTT). Only now may the outbox row be deleted.
//   kUnavailable         not written (broker down, queue full, transport error): retry later.
//   kDeadlineExceeded    may have been written (librdkafka's POSSIBLY_PERSISTED, an MQTT
//                        timeout after PUBLISH was sent): retry; consumers dedupe the duplicate.
//   kFailedPrecondition  can never be published as it is (too large, not authorized, invalid
//                        topic): dead-letter it.
//   kInvalidArgument     the message itself is invalid for this target: dead-letter it.
struct DeliveryResult {
  Status status;
  int32_t partition = -1;  // Kafka partition, -1 when not applicable
  int64_t offset = -1;     // Kafka offset, -1 when not applicable
};

class Publisher {
 public:
  virtual ~Publisher() = default;

  // Publishes every message and waits until each one is confirmed or failed, at most `timeout`.
  // Returns one result per message, in input order. Messages to the same topic and key are
  // handed to the broker in input order. A message still unanswered at the timeout is reported
  // as kDeadlineExceeded (it may still be written).
  virtual std::vector<DeliveryResult> PublishBatch(std::span<const Message* const> messages,
                                                   std::chrono::milliseconds timeout) = 0;

  // OK when the broker is reachable; used by /readyz and the circuit breaker's probe.
  virtual Status CheckConnected(std::chrono::milliseconds timeout) = 0;

  // A short name for logs and metrics: "kafka", "mqtt".
  virtual std::string Name() const = 0;

  // Flushes what is in flight (up to timeout) and disconnects. Idempotent.
  virtual void Close(std::chrono::milliseconds timeout) = 0;
};

}  // namespace converge::broker
