#include "kafka_config.h"

#include <chrono>

#include "converge/broker/kafka.h"
#include "kafka_errors.h"

namespace converge::broker {
namespace {

Status RequirePositive(std::chrono::milliseconds value, const char* field) {
  if (value.count() <= 0) {
    return Status::InvalidArgument(std::string(field) + " must be positive, got " +
                                   std::to_string(value.count()) + " ms");
  }
  return Status::Ok();
}

bool HasBootstrap(const std::string& field, const std::map<std::string, std::string>& props) {
  if (!field.empty()) return true;
  for (const char* name : {"bootstrap.servers", "metadata.broker.list"}) {
    auto it = props.find(name);
    if (it != props.end() && !it->second.empty()) return true;
  }
  return false;
}

}  // namespace

Status KafkaOptions::Validate() const {
  if (!HasBootstrap(bootstrap_servers, properties)) {
    return Status::InvalidArgument("bootstrap_servers is empty");
  }
  CONVERGE_RETURN_IF_ERROR(RequirePositive(message_timeout, "message_timeout"));
  CONVERGE_RETURN_IF_ERROR(RequirePositive(request_timeout, "request_timeout"));
  if (linger.count() < 0) return Status::InvalidArgument("linger must not be negative");
  if (linger >= message_timeout) {
    return Status::InvalidArgument("linger must be shorter than message_timeout");
  }
  if (auto it = properties.find("acks"); it != properties.end()) {
    if (it->second != "all" && it->second != "-1") {
      return Status::InvalidArgument(
          "kafka property \"acks\": must be \"all\" (Publisher's OK means every in-sync replica "
          "has the message), got \"" +
          it->second + "\"");
    }
  }
  return Status::Ok();
}

Status KafkaSourceOptions::Validate() const {
  if (!HasBootstrap(bootstrap_servers, properties)) {
    return Status::InvalidArgument("bootstrap_servers is empty");
  }
  if (group_id.empty() && !properties.contains("group.id")) {
    return Status::InvalidArgument("group_id is empty");
  }
  CONVERGE_RETURN_IF_ERROR(RequirePositive(session_timeout, "session_timeout"));
  CONVERGE_RETURN_IF_ERROR(RequirePositive(max_poll_interval, "max_poll_interval"));
  for (const char* name : {"enable.auto.commit", "enable.auto.offset.store"}) {
    auto it = properties.find(name);
    if (it != properties.end() && it->second != "false") {
      return Status::InvalidArgument(std::string("kafka property \"") + name +
                                     "\": must be \"false\" (offsets are stored with the "
                                     "consumer's own transaction), got \"" +
                                     it->second + "\"");
    }
  }
  return Status::Ok();
}

namespace internal {

std::string MillisString(std::chrono::milliseconds ms) { return std::to_string(ms.count()); }

Result<KafkaConf> BuildKafkaConf(const KafkaProperties& typed,
                                 const std::map<std::string, std::string>& overrides) {
  KafkaConf conf(rd_kafka_conf_new());
  for (const auto& [name, value] : typed) {
    if (value.empty()) continue;  // an unset typed field keeps librdkafka's default
    CONVERGE_RETURN_IF_ERROR(SetKafkaProperty(conf.get(), name, value));
  }
  for (const auto& [name, value] : overrides) {
    CONVERGE_RETURN_IF_ERROR(SetKafkaProperty(conf.get(), name, value));
  }
  return conf;
}

Result<KafkaHandle> NewKafkaHandle(rd_kafka_type_t type, KafkaConf& conf) {
  char errstr[512];
  rd_kafka_t* rk = rd_kafka_new(type, conf.get(), errstr, sizeof(errstr));
  if (rk == nullptr) {
    // rd_kafka_new failed and did not take the configuration: `conf` still frees it.
    return Status::InvalidArgument(std::string("kafka configuration rejected: ") + errstr);
  }
  // rd_kafka_new succeeded and now owns the configuration; release it without freeing.
  conf.release();
  return KafkaHandle(rk);
}

}  // namespace internal
}  // namespace converge::broker
