// Converting consumed librdkafka messages into ReceivedRecord.
#pragma once

#include <librdkafka/rdkafka.h>

#include "converge/broker/source.h"

namespace converge::broker::internal {

// Copies topic, partition, offset, key (nullopt for a null key), every header (a null header
// value becomes ""), payload and the broker/create timestamp. ack_token is left 0.
ReceivedRecord ToReceivedRecord(const rd_kafka_message_t& message);

}  // namespace converge::broker::internal
