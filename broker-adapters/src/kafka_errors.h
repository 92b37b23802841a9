// How librdkafka's errors become Converge Status codes. Each direction has exactly one
// function, so the table in broker-adapters/README.md can be checked against one place.
#pragma once

#include <librdkafka/rdkafka.h>

#include <string_view>

#include "converge/broker/kafka.h"
#include "converge/common/status.h"

namespace converge::broker::internal {

// The outcome of one produced message, from its delivery report (or from rd_kafka_producev
// failing, with `persisted` = NOT_PERSISTED). `detail` is appended to the message.
//   NO_ERROR                                        → OK (the only success)
//   MSG_SIZE_TOO_LARGE, RECORD_LIST_TOO_LARGE, INVALID_RECORD, INVALID_TOPIC_EXCEPTION,
//   TOPIC_/CLUSTER_AUTHORIZATION_FAILED, POLICY_VIOLATION, UNSUPPORTED_FOR_MESSAGE_FORMAT,
//   INVALID_REQUIRED_ACKS, _INVALID_ARG            → kFailedPrecondition
//   UNKNOWN_TOPIC_OR_PART, _UNKNOWN_TOPIC, _UNKNOWN_PARTITION
//                                                   → kUnavailable, or kFailedPrecondition
//                                                     under UnknownTopicPolicy::kFailPrecondition
//   _FATAL, _PURGE_INFLIGHT                         → kDeadlineExceeded
//   _PURGE_QUEUE, _QUEUE_FULL                       → kUnavailable
//   any other error: POSSIBLY_PERSISTED or PERSISTED → kDeadlineExceeded, NOT_PERSISTED →
//   kUnavailable (this covers _MSG_TIMED_OUT in flight vs. still queued, transport errors,
//   leader changes, NOT_ENOUGH_REPLICAS, ...)
Status MapDeliveryError(rd_kafka_resp_err_t err, rd_kafka_msg_status_t persisted,
                        UnknownTopicPolicy unknown_topic, std::string_view detail = {});

// Errors seen by the consumer (Poll events, Subscribe, Seek, Assign).
//   TOPIC_/GROUP_/CLUSTER_AUTHORIZATION_FAILED, _FATAL, _STATE → kFailedPrecondition
//   _INVALID_ARG, INVALID_GROUP_ID                              → kInvalidArgument
//   anything else (transport, all brokers down, unknown topic, rebalance) → kUnavailable
Status MapConsumerError(rd_kafka_resp_err_t err, std::string_view detail = {});

// Parses an error name as librdkafka prints it ("MSG_SIZE_TOO_LARGE", "_TRANSPORT"), with or
// without the RD_KAFKA_RESP_ERR_ prefix, with one or two leading underscores for the local
// errors, in any case, or as a number ("10", "-185"). kInvalidArgument names the input.
Result<rd_kafka_resp_err_t> ParseKafkaError(std::string_view name);

// Sets one librdkafka property. kInvalidArgument names the property; librdkafka's reason is
// included unless the property holds a secret (its reason may quote the value).
Status SetKafkaProperty(rd_kafka_conf_t* conf, const std::string& name, const std::string& value);

}  // namespace converge::broker::internal
