// Building librdkafka configurations from Converge's typed options.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "converge/common/status.h"
#include "rdkafka_handles.h"

namespace converge::broker::internal {

using KafkaProperties = std::vector<std::pair<std::string, std::string>>;

// A new configuration holding `typed` and then `overrides` (so overrides win). The first
// property librdkafka rejects makes this kInvalidArgument naming it.
Result<KafkaConf> BuildKafkaConf(const KafkaProperties& typed,
                                 const std::map<std::string, std::string>& overrides);

// "123"
std::string MillisString(std::chrono::milliseconds ms);

}  // namespace converge::broker::internal
