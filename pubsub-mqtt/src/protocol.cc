#include "converge/pubsub/protocol.h"

#include <charconv>

namespace converge::pubsub {
namespace {

struct KindName {
  TopicKind kind;
  std::string_view suffix;
};
constexpr KindName kKinds[] = {
    {TopicKind::kCommands, "commands"},    {TopicKind::kAcks, "acks"},
    {TopicKind::kDesired, "twin/desired"}, {TopicKind::kReported, "twin/reported"},
    {TopicKind::kTelemetry, "telemetry"},  {TopicKind::kPresence, "presence"},
};

bool IdChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

}  // namespace

std::string_view AckStatusName(AckStatus s) {
  switch (s) {
    case AckStatus::kReceived:
      return "received";
    case AckStatus::kApplied:
      return "applied";
    case AckStatus::kRejected:
      return "rejected";
  }
  return "received";
}

Result<AckStatus> ParseAckStatus(std::string_view s) {
  if (s == "received") return AckStatus::kReceived;
  if (s == "applied") return AckStatus::kApplied;
  if (s == "rejected") return AckStatus::kRejected;
  return Status::InvalidArgument("ackstatus must be received, applied or rejected, not \"" +
                                 std::string(s.substr(0, 64)) + "\"");
}

Status ValidateDeviceId(std::string_view id) {
  if (id.empty()) return Status::InvalidArgument("device id must not be empty");
  if (id.size() > kMaxDeviceIdBytes)
    return Status::InvalidArgument("device id is " + std::to_string(id.size()) +
                                   " bytes; at most " + std::to_string(kMaxDeviceIdBytes));
  if (id == "." || id == "..") return Status::InvalidArgument("device id must not be . or ..");
  for (char c : id) {
    if (IdChar(c)) continue;
    std::string shown = (c >= 0x20 && c < 0x7f)
                            ? std::string("'") + c + "'"
                            : "byte " + std::to_string(static_cast<unsigned char>(c));
    return Status::InvalidArgument("device id \"" + std::string(id.substr(0, 64)) + "\" contains " +
                                   shown + "; allowed are A-Z a-z 0-9 . _ -");
  }
  return Status::Ok();
}

std::string DeviceTopic(std::string_view device_id, TopicKind kind) {
  std::string t(kTopicRoot);
  t += '/';
  t += device_id;
  t += '/';
  for (const auto& k : kKinds)
    if (k.kind == kind) t += k.suffix;
  return t;
}

std::optional<ParsedTopic> ParseDeviceTopic(std::string_view topic) {
  if (topic.size() <= kTopicRoot.size() + 1 || topic.substr(0, kTopicRoot.size()) != kTopicRoot ||
      topic[kTopicRoot.size()] != '/')
    return std::nullopt;
  std::string_view rest = topic.substr(kTopicRoot.size() + 1);
  const size_t slash = rest.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  std::string_view id = rest.substr(0, slash), suffix = rest.substr(slash + 1);
  if (!ValidateDeviceId(id).ok()) return std::nullopt;
  for (const auto& k : kKinds)
    if (k.suffix == suffix) return ParsedTopic{std::string(id), k.kind};
  return std::nullopt;
}

std::string DeviceSource(std::string_view device_id) {
  return "/" + std::string(kTopicRoot) + "/" + std::string(device_id);
}

Result<int64_t> ParseNonNegative(std::string_view text, std::string_view what) {
  int64_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || p != text.data() + text.size() || v < 0)
    return Status::InvalidArgument(std::string(what) + " must be a decimal integer >= 0, not \"" +
                                   std::string(text.substr(0, 32)) + "\"");
  return v;
}

}  // namespace converge::pubsub
