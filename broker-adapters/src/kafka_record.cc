#include "kafka_record.h"

#include <chrono>

namespace converge::broker::internal {

ReceivedRecord ToReceivedRecord(const rd_kafka_message_t& m) {
  ReceivedRecord r;
  r.topic = m.rkt != nullptr ? rd_kafka_topic_name(m.rkt) : "";
  r.partition = m.partition;
  r.offset = m.offset;
  if (m.key != nullptr) r.key.emplace(static_cast<const char*>(m.key), m.key_len);
  if (m.payload != nullptr) r.payload.assign(static_cast<const char*>(m.payload), m.len);

  rd_kafka_headers_t* headers = nullptr;  // owned by the message
  if (rd_kafka_message_headers(&m, &headers) == RD_KAFKA_RESP_ERR_NO_ERROR && headers) {
    const char* name = nullptr;
    const void* value = nullptr;
    size_t size = 0;
    for (size_t i = 0;
         rd_kafka_header_get_all(headers, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR;
         ++i) {
      r.headers.emplace_back(name, value != nullptr
                                       ? std::string(static_cast<const char*>(value), size)
                                       : std::string());
    }
  }

  rd_kafka_timestamp_type_t type = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
  const int64_t ts = rd_kafka_message_timestamp(&m, &type);
  if (type != RD_KAFKA_TIMESTAMP_NOT_AVAILABLE && ts >= 0) {
    r.broker_time = std::chrono::system_clock::time_point(std::chrono::milliseconds(ts));
  }
  return r;
}

}  // namespace converge::broker::internal
