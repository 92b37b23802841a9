// The Kafka headers that carry a Message's CloudEvents attributes (binary content mode of the
// CloudEvents Kafka protocol binding: `ce_` + attribute name, `content-type` for
// datacontenttype).
//
// Interim: common/'s envelope codec (converge/common/envelope.h) will own this mapping for
// every broker; when it lands the publisher switches to it and this file goes away.
#pragma once

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "converge/common/message.h"

namespace converge::broker::internal {

// ce_specversion=1.0, ce_id, ce_source, ce_type, ce_subject (when set), ce_time (RFC 3339, UTC,
// milliseconds, when set), ce_keyseq (when > 0), ce_traceparent (when set), content-type (when
// set), then ce_<extension> for each extension and the plain transport headers unchanged.
std::vector<std::pair<std::string, std::string>> KafkaHeadersFor(const Message& message);

// "2026-11-22T19:00:00.123Z"
std::string FormatRfc3339Millis(std::chrono::system_clock::time_point t);

}  // namespace converge::broker::internal
