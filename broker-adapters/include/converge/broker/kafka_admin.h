// Small Kafka helpers for tests and tools (not for the data path).
//
// Thread safety: free functions; each call uses its own client.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "converge/broker/source.h"
#include "converge/common/status.h"

namespace converge::broker {

// Reads every record of `topic` as it is when the call starts: an independent consumer (no
// group, commits nothing) assigns all partitions from their first retained offset and reads
// each up to its high watermark. Records are ordered by (partition, offset); ack_token is 0.
// kNotFound when the topic does not exist (it is not auto-created), kDeadlineExceeded when
// `timeout` passes first, kUnavailable when the brokers cannot be reached. `properties` are
// extra librdkafka consumer properties (e.g. security settings).
Result<std::vector<ReceivedRecord>> ReadAll(
    const std::string& bootstrap_servers, const std::string& topic,
    std::chrono::milliseconds timeout, const std::map<std::string, std::string>& properties = {});

// The number of partitions of `topic`. kNotFound when it does not exist.
Result<int> PartitionCount(const std::string& bootstrap_servers, const std::string& topic,
                           std::chrono::milliseconds timeout,
                           const std::map<std::string, std::string>& properties = {});

}  // namespace converge::broker
