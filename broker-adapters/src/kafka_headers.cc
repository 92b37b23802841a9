#include "kafka_headers.h"

#include <cstdio>
#include <ctime>

namespace converge::broker::internal {

std::string FormatRfc3339Millis(std::chrono::system_clock::time_point t) {
  using namespace std::chrono;
  const auto ms_total = duration_cast<milliseconds>(t.time_since_epoch()).count();
  auto secs = static_cast<std::time_t>(ms_total / 1000);
  int ms = static_cast<int>(ms_total % 1000);
  if (ms < 0) {  // before 1970: floor, not truncate
    ms += 1000;
    --secs;
  }
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
  return buf;
}

std::vector<std::pair<std::string, std::string>> KafkaHeadersFor(const Message& message) {
  std::vector<std::pair<std::string, std::string>> h;
  h.reserve(9 + message.extensions.size() + message.headers.size());
  h.emplace_back("ce_specversion", "1.0");
  h.emplace_back("ce_id", message.id);
  h.emplace_back("ce_source", message.source);
  h.emplace_back("ce_type", message.type);
  if (!message.subject.empty()) h.emplace_back("ce_subject", message.subject);
  if (message.time.time_since_epoch().count() != 0) {
    h.emplace_back("ce_time", FormatRfc3339Millis(message.time));
  }
  if (message.sequence > 0) h.emplace_back("ce_keyseq", std::to_string(message.sequence));
  if (!message.traceparent.empty()) h.emplace_back("ce_traceparent", message.traceparent);
  if (!message.datacontenttype.empty()) h.emplace_back("content-type", message.datacontenttype);
  for (const auto& [name, value] : message.extensions) h.emplace_back("ce_" + name, value);
  for (const auto& [name, value] : message.headers) h.emplace_back(name, value);
  return h;
}

}  // namespace converge::broker::internal
