// High watermarks of Kafka partitions, for `convergectl status` (consumer lag). Kept in the CLI
// (librdkafka stays in this .cc): it is an operator's read-only query, not the data path.
//
// Thread safety: a free function; each call uses its own short-lived client.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "converge/common/status.h"

namespace converge::ctl {

using TopicPartitionKey = std::pair<std::string, int>;

struct WatermarkResult {
  // High watermark (the offset the next record will get) per (topic, partition) answered.
  std::map<TopicPartitionKey, int64_t> high;
  // Per (topic, partition) that failed: the broker's error text.
  std::map<TopicPartitionKey, std::string> errors;
};

// Queries each partition's high watermark from `bootstrap_servers` within `timeout` in total.
// kUnavailable when the client cannot be created or no broker answers at all.
Result<WatermarkResult> QueryHighWatermarks(const std::string& bootstrap_servers,
                                            const std::vector<TopicPartitionKey>& partitions,
                                            std::chrono::milliseconds timeout);

}  // namespace converge::ctl
