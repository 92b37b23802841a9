// Kafka implementations of Publisher and MessageSource, built on librdkafka (which stays out of
// this header). Each factory validates its options and creates the client; neither connects
// before the first call, so a factory succeeds with an unreachable broker.
//
//   KafkaOptions options;
//   options.bootstrap_servers = "broker1:9092,broker2:9092";
//   options.properties["security.protocol"] = "SASL_SSL";   // any librdkafka property
//   CONVERGE_ASSIGN_OR_RETURN(auto publisher, MakeKafkaPublisher(options));
//
// Thread safety: the options are values. The returned objects follow the contracts in
// publisher.h and source.h.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "converge/broker/publisher.h"
#include "converge/broker/source.h"
#include "converge/common/status.h"

namespace converge::broker {

// What a delivery report of "unknown topic or partition" means. Kafka reports it for a topic
// that does not exist (auto-creation off) but also, briefly, for a topic that was just created
// and whose metadata has not reached every broker.
enum class UnknownTopicPolicy {
  // kUnavailable: retry with backoff. A missing topic is usually a deployment-order problem
  // that an operator fixes by creating the topic; the messages then flow without having been
  // dead-lettered. The default.
  kRetry,
  // kFailedPrecondition: dead-letter. For deployments where topics are created up front and
  // a missing topic means a wrong topic name in the message.
  kFailPrecondition,
};

// Producer settings. Every field maps to one librdkafka property; `properties` is applied last
// and overrides them, so TLS, SASL and tuning work exactly as librdkafka's CONFIGURATION.md
// documents.
struct KafkaOptions {
  // `bootstrap.servers`: comma-separated host:port list. Required (here or in `properties`).
  std::string bootstrap_servers;
  // `client.id`: shown in broker logs and used for quotas.
  std::string client_id = "converge";
  // `message.timeout.ms`: how long librdkafka keeps trying one message (queueing, retries,
  // waiting for the ack) before reporting it failed. Pass PublishBatch a longer timeout than
  // this so that every message gets a definite answer rather than kDeadlineExceeded.
  std::chrono::milliseconds message_timeout{30000};
  // `linger.ms`: how long a message waits for others to share its produce request. Small for
  // low latency: the relay already hands messages over in batches. PublishBatch does not wait
  // for it: once the batch is produced it flushes (librdkafka then sends at once).
  std::chrono::milliseconds linger{2};
  // `request.timeout.ms`: how long one produce request waits for the broker's ack.
  std::chrono::milliseconds request_timeout{10000};
  // `compression.type`: none, gzip, snappy, lz4 or zstd. Off by default: outbox payloads are
  // small and latency matters more than bytes.
  std::string compression = "none";
  // `enable.idempotence`: no duplicates or reordering from librdkafka's own retries, per
  // partition. `acks` is always `all` (the Publisher contract: OK means every in-sync replica
  // has the message); setting `acks` to anything else in `properties` is rejected.
  bool idempotence = true;
  // How "unknown topic or partition" is reported; see UnknownTopicPolicy.
  UnknownTopicPolicy unknown_topic = UnknownTopicPolicy::kRetry;
  // Any librdkafka property (name → value), applied after the fields above. Unknown names and
  // bad values make the factory fail with kInvalidArgument naming the property.
  std::map<std::string, std::string> properties;

  // Checks the typed fields (not `properties`: librdkafka checks those in the factory).
  // kInvalidArgument names the bad field.
  Status Validate() const;
};

// Consumer settings for a consumer-group MessageSource. Offsets are never committed
// automatically: the consumer runtime stores them in PostgreSQL and returns them from
// AssignmentListener::OnAssigned; Ack() commits to Kafka only so that lag tools see progress.
struct KafkaSourceOptions {
  // `bootstrap.servers`: comma-separated host:port list. Required (here or in `properties`).
  std::string bootstrap_servers;
  // `group.id`: the consumer group. Required.
  std::string group_id;
  // `client.id`: shown in broker logs.
  std::string client_id = "converge";
  // `session.timeout.ms`: a member silent this long is removed from the group and its
  // partitions are reassigned.
  std::chrono::milliseconds session_timeout{10000};
  // `max.poll.interval.ms`: a member that does not call Poll for this long leaves the group.
  std::chrono::milliseconds max_poll_interval{300000};
  // `partition.assignment.strategy`. The default, eager `range,roundrobin`, revokes every
  // partition at each rebalance, which matches AssignmentListener's simple contract and works
  // with librdkafka 2.0.2's mock cluster. `cooperative-sticky` is supported as well (only the
  // moved partitions are revoked and assigned).
  std::string assignment_strategy = "range,roundrobin";
  // `auto.offset.reset`, used only when an offset returned by OnAssigned is no longer
  // retained. `earliest` re-reads rather than skips; consumers dedupe.
  std::string auto_offset_reset = "earliest";
  // Any librdkafka property, applied after the fields above. `enable.auto.commit` and
  // `enable.auto.offset.store` must stay false (rejected otherwise).
  std::map<std::string, std::string> properties;

  // Checks the typed fields; kInvalidArgument names the bad field.
  Status Validate() const;
};

// Creates a Kafka publisher. kInvalidArgument for bad options or librdkafka properties.
//
// Key, value and headers come from common/'s envelope codec (KafkaKey, EncodeKafkaHeaders).
// Delivery results (see the table in broker-adapters/README.md): OK only on a successful
// delivery report; kInvalidArgument when the codec rejects the message; kDeadlineExceeded when the
// message may have been written (timed out in flight, no report within the batch timeout, or the
// producer hit a fatal error and was recreated); kUnavailable when it was not written and a retry
// may succeed; kFailedPrecondition when it can never be written as it is (too large, not
// authorized, invalid topic name).
Result<std::unique_ptr<Publisher>> MakeKafkaPublisher(const KafkaOptions& options);

// Creates a Kafka consumer-group source. kInvalidArgument for bad options or properties.
//
// Records carry the Kafka headers as received. ReceivedRecord::ack_token holds the assignment
// generation the record was polled in; Ack() skips records whose partition has been revoked
// (or revoked and re-assigned) since. The AssignmentListener is also called from Close(), which
// revokes every partition.
Result<std::unique_ptr<MessageSource>> MakeKafkaSource(const KafkaSourceOptions& options);

}  // namespace converge::broker
