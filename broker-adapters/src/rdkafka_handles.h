// Owners for librdkafka's C handles. Every rd_kafka_* object that this module creates is held
// by one of these aliases from the line that created it, so no error path can leak one.
//
// Private to broker-adapters/src: rdkafka.h never appears in a public header.
#pragma once

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <memory>

#include "converge/common/status.h"

namespace converge::broker::internal {

// A deleter that calls the C function `Fn` on the pointer (never called for nullptr).
template <auto Fn>
struct CDeleter {
  template <typename T>
  void operator()(T* p) const {
    Fn(p);
  }
};

using KafkaHandle = std::unique_ptr<rd_kafka_t, CDeleter<rd_kafka_destroy>>;
using KafkaConf = std::unique_ptr<rd_kafka_conf_t, CDeleter<rd_kafka_conf_destroy>>;
using KafkaTopicPartitionList = std::unique_ptr<rd_kafka_topic_partition_list_t,
                                                CDeleter<rd_kafka_topic_partition_list_destroy>>;
using KafkaHeaders = std::unique_ptr<rd_kafka_headers_t, CDeleter<rd_kafka_headers_destroy>>;
using KafkaMessage = std::unique_ptr<rd_kafka_message_t, CDeleter<rd_kafka_message_destroy>>;
using KafkaQueue = std::unique_ptr<rd_kafka_queue_t, CDeleter<rd_kafka_queue_destroy>>;
using KafkaTopic = std::unique_ptr<rd_kafka_topic_t, CDeleter<rd_kafka_topic_destroy>>;
using KafkaMetadata =
    std::unique_ptr<const rd_kafka_metadata_t, CDeleter<rd_kafka_metadata_destroy>>;
using KafkaError = std::unique_ptr<rd_kafka_error_t, CDeleter<rd_kafka_error_destroy>>;
using KafkaMockClusterHandle =
    std::unique_ptr<rd_kafka_mock_cluster_t, CDeleter<rd_kafka_mock_cluster_destroy>>;

// Creates a client from `conf`. On success the client owns the configuration and `conf` is
// left empty; on failure `conf` still owns it (and frees it) and the Status is
// kInvalidArgument carrying librdkafka's reason (e.g. conflicting properties).
Result<KafkaHandle> NewKafkaHandle(rd_kafka_type_t type, KafkaConf& conf);

}  // namespace converge::broker::internal
