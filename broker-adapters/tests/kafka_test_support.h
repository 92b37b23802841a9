// Shared helpers for the Kafka integration tests.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "converge/broker/kafka.h"
#include "converge/broker/kafka_mock.h"
#include "converge/common/message.h"

namespace converge::broker::testing {

// The Kafka every "happy path" test uses: CONVERGE_KAFKA_BROKERS when scripts/services.sh
// exported it, otherwise a mock cluster (3 brokers) started once in this process. Tests that
// inject faults start their own KafkaMockCluster instead, so that they never disturb other
// tests sharing the broker.
const std::string& SharedBootstrap();

// A topic name no other test (or earlier run against the same broker) uses.
std::string UniqueName(std::string_view prefix);

// A complete message: id, source, type, subject, time, keyseq and a payload naming them.
Message MakeMessage(const std::string& topic, const std::string& subject, int64_t sequence,
                    std::string payload = {});

std::vector<const Message*> Pointers(const std::vector<Message>& messages);

// Options with short timeouts suited to tests.
KafkaOptions TestPublisherOptions(const std::string& bootstrap);

// Returns the value of the first header called `name`, or "" when there is none.
std::string HeaderValue(const ReceivedRecord& r, std::string_view name);

}  // namespace converge::broker::testing
