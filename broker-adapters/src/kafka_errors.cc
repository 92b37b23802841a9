#include "kafka_errors.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <string>

namespace converge::broker::internal {
namespace {

std::string Describe(rd_kafka_resp_err_t err, std::string_view detail) {
  std::string out = "kafka ";
  out += rd_kafka_err2name(err);
  out += ": ";
  out += rd_kafka_err2str(err);
  if (!detail.empty()) {
    out += " (";
    out += detail;
    out += ")";
  }
  return out;
}

// Broker or client answers that no retry can change: the message, its topic or the producer's
// permissions must change first.
bool IsPermanentProduceError(rd_kafka_resp_err_t err) {
  switch (err) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:  // Kafka's INVALID_TOPIC_EXCEPTION
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_POLICY_VIOLATION:
    case RD_KAFKA_RESP_ERR_UNSUPPORTED_FOR_MESSAGE_FORMAT:
    case RD_KAFKA_RESP_ERR_INVALID_REQUIRED_ACKS:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
      return true;
    default:
      return false;
  }
}

bool IsUnknownTopicError(rd_kafka_resp_err_t err) {
  return err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
         err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC || err == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION;
}

bool IsSecretProperty(std::string_view name) {
  static constexpr std::string_view kMarkers[] = {"password", "secret", "pem",
                                                  "ssl.key",  "token",  "oauthbearer.config"};
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (std::string_view marker : kMarkers) {
    if (lower.find(marker) != std::string::npos && lower != "ssl.key.location") return true;
  }
  return false;
}

}  // namespace

Status MapDeliveryError(rd_kafka_resp_err_t err, rd_kafka_msg_status_t persisted,
                        UnknownTopicPolicy unknown_topic, std::string_view detail) {
  if (err == RD_KAFKA_RESP_ERR_NO_ERROR) return Status::Ok();
  std::string msg = Describe(err, detail);
  if (IsPermanentProduceError(err)) return Status::FailedPrecondition(std::move(msg));
  if (IsUnknownTopicError(err)) {
    return unknown_topic == UnknownTopicPolicy::kFailPrecondition
               ? Status::FailedPrecondition(std::move(msg))
               : Status::Unavailable(std::move(msg));
  }
  switch (err) {
    case RD_KAFKA_RESP_ERR__FATAL:
    case RD_KAFKA_RESP_ERR__PURGE_INFLIGHT:
      // The request may have reached the broker before the producer gave up on it.
      return Status::DeadlineExceeded(std::move(msg));
    case RD_KAFKA_RESP_ERR__PURGE_QUEUE:
    case RD_KAFKA_RESP_ERR__QUEUE_FULL:
      // Never left the client.
      return Status::Unavailable(std::move(msg));
    default:
      break;
  }
  if (persisted == RD_KAFKA_MSG_STATUS_NOT_PERSISTED) return Status::Unavailable(std::move(msg));
  msg += persisted == RD_KAFKA_MSG_STATUS_POSSIBLY_PERSISTED ? " [possibly persisted]"
                                                             : " [persisted]";
  return Status::DeadlineExceeded(std::move(msg));
}

Status MapConsumerError(rd_kafka_resp_err_t err, std::string_view detail) {
  if (err == RD_KAFKA_RESP_ERR_NO_ERROR) return Status::Ok();
  std::string msg = Describe(err, detail);
  switch (err) {
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR__FATAL:
    case RD_KAFKA_RESP_ERR__STATE:
      return Status::FailedPrecondition(std::move(msg));
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
    case RD_KAFKA_RESP_ERR_INVALID_GROUP_ID:
      return Status::InvalidArgument(std::move(msg));
    default:
      return Status::Unavailable(std::move(msg));
  }
}

Result<rd_kafka_resp_err_t> ParseKafkaError(std::string_view name) {
  std::string want(name);
  std::transform(want.begin(), want.end(), want.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  int number = 0;
  auto [end, ec] = std::from_chars(want.data(), want.data() + want.size(), number);
  if (ec == std::errc() && end == want.data() + want.size()) {
    return static_cast<rd_kafka_resp_err_t>(number);
  }
  constexpr std::string_view kPrefix = "RD_KAFKA_RESP_ERR_";
  if (want.starts_with(kPrefix)) want.erase(0, kPrefix.size());
  if (want.starts_with("__")) want.erase(0, 1);  // the C enum spells local errors with "__"

  const rd_kafka_err_desc* descs = nullptr;
  size_t count = 0;
  rd_kafka_get_err_descs(&descs, &count);
  for (size_t i = 0; i < count; ++i) {
    if (descs[i].name != nullptr && want == descs[i].name) return descs[i].code;
  }
  return Status::InvalidArgument("unknown Kafka error name \"" + std::string(name) + "\"");
}

Status SetKafkaProperty(rd_kafka_conf_t* conf, const std::string& name, const std::string& value) {
  char errstr[512];
  if (rd_kafka_conf_set(conf, name.c_str(), value.c_str(), errstr, sizeof(errstr)) ==
      RD_KAFKA_CONF_OK) {
    return Status::Ok();
  }
  std::string msg = "kafka property \"" + name + "\": ";
  msg += IsSecretProperty(name) ? std::string("invalid value (not shown: secret)")
                                : std::string(errstr);
  return Status::InvalidArgument(std::move(msg));
}

}  // namespace converge::broker::internal
