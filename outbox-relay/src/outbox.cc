#include "converge/outbox/outbox.h"

#include <pqxx/pqxx>

#include <regex>

#include "converge/common/envelope.h"
#include "converge/common/json.h"
#include "converge/common/message.h"
#include "converge/common/time_format.h"
#include "converge/common/uuid.h"
#include "converge/schemas/pg.h"

namespace converge::outbox {
namespace {

bool AllChars(const std::string& s, bool (*ok)(char)) {
  for (char c : s)
    if (!ok(c)) return false;
  return true;
}
bool TopicChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-' || c == '/';
}
bool HeaderNameChar(char c) { return TopicChar(c) && c != '/'; }

Status Invalid(const std::string& what) {
  return Status::InvalidArgument("converge.enqueue: " + what);
}

}  // namespace

Status Validate(const OutboxMessage& m) {
  using L = MessageLimits;
  if (m.topic.empty()) return Invalid("topic must not be empty");
  if (m.topic.size() > L::kMaxTopicBytes)
    return Invalid("topic is " + std::to_string(m.topic.size()) + " bytes, the limit is 249");
  if (!AllChars(m.topic, TopicChar))
    return Invalid("topic \"" + m.topic +
                   "\" may only contain letters, digits, \".\", \"_\", \"-\" and \"/\"");
  if (m.key.empty()) return Invalid("key must not be empty (it is the ordering key)");
  if (m.key.size() > L::kMaxKeyBytes)
    return Invalid("key is " + std::to_string(m.key.size()) + " bytes, the limit is 1024");
  if (m.key.find('\0') != std::string::npos) return Invalid("key must not contain NUL bytes");
  if (m.type.empty()) return Invalid("type must not be empty");
  if (m.type.size() > L::kMaxTypeBytes)
    return Invalid("type is " + std::to_string(m.type.size()) + " bytes, the limit is 256");
  if (m.type.find('\0') != std::string::npos) return Invalid("type must not contain NUL bytes");
  if (m.payload.size() > L::kMaxPayloadBytes)
    return Invalid("payload is " + std::to_string(m.payload.size()) +
                   " bytes, the limit is 1000000");
  if (m.source.size() > L::kMaxSourceBytes || m.source.find('\0') != std::string::npos)
    return Invalid("source must be 1 to 1024 bytes");
  if (m.content_type.empty() || m.content_type.size() > 256 ||
      m.content_type.find('\0') != std::string::npos)
    return Invalid("content_type must be 1 to 256 bytes");
  static const std::regex kTraceparent("^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$");
  if (!m.traceparent.empty() && !std::regex_match(m.traceparent, kTraceparent))
    return Invalid("traceparent \"" + m.traceparent + "\" is not a W3C traceparent");
  if (m.headers.size() > L::kMaxHeaders) return Invalid("more than 64 headers");
  for (const auto& [name, value] : m.headers) {
    if (name.empty() || name.size() > L::kMaxHeaderNameBytes || !AllChars(name, HeaderNameChar))
      return Invalid("header name \"" + name +
                     "\" must be 1 to 128 letters, digits, \".\", \"_\" or \"-\"");
    std::string lower = name;
    for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (lower.rfind("ce_", 0) == 0 || lower == "content-type")
      return Invalid("header name \"" + name + "\" is reserved for the CloudEvents envelope");
    if (value.size() > L::kMaxAttributeBytes)
      return Invalid("header \"" + name + "\" is longer than 1024 bytes");
    if (value.find('\0') != std::string::npos)
      return Invalid("header \"" + name + "\" must not contain NUL bytes");
  }
  if (!m.message_id.empty() && !Uuid::Parse(m.message_id).ok())
    return Invalid("message_id \"" + m.message_id + "\" is not a UUID");
  // Everything the envelope will check when the relay publishes the message (UTF-8 and control
  // characters, the source's URI form, the media type, header names every binding can carry):
  // a message that could never be published is refused here, not dead-lettered later.
  Message envelope;
  envelope.id = m.message_id.empty() ? "00000000-0000-7000-8000-000000000000" : m.message_id;
  envelope.source = m.source.empty() ? "/converge" : m.source;  // empty = the database default
  envelope.type = m.type;
  envelope.subject = m.key;
  envelope.topic = m.topic;
  envelope.datacontenttype = m.content_type;
  envelope.traceparent = m.traceparent;
  envelope.headers = m.headers;
  envelope.sequence = 1;
  // The payload is not copied: its size was checked above and it is bytes, not text.
  if (Status st = ValidateMessage(envelope); !st.ok()) return Invalid(st.message());
  return Status::Ok();
}

Result<Enqueued> Enqueue(pqxx::transaction_base& tx, const OutboxMessage& m) {
  CONVERGE_RETURN_IF_ERROR(Validate(m));
  const std::string id = m.message_id.empty() ? NewUuidV7().ToString() : m.message_id;
  const std::string headers = JsonObjectOfStrings(m.headers);
  const std::string expires = m.expires_at ? FormatRfc3339(*m.expires_at) : std::string();
  try {
    auto r = tx.exec_params(
        "SELECT message_id::text, seq FROM converge.enqueue_message($1, $2, $3, $4, $5::jsonb, "
        "$6, $7, $8, $9::uuid, $10::timestamptz)",
        m.topic, m.key, m.type, pqxx::binarystring(m.payload.data(), m.payload.size()), headers,
        m.content_type, m.source.empty() ? nullptr : m.source.c_str(),
        m.traceparent.empty() ? nullptr : m.traceparent.c_str(), id,
        expires.empty() ? nullptr : expires.c_str());
    return Enqueued{r[0][0].as<std::string>(), r[0][1].as<int64_t>()};
  } catch (const std::exception& e) {
    return pg::StatusFromException(e);
  }
}

Result<std::vector<Enqueued>> EnqueueMany(pqxx::transaction_base& tx,
                                          std::span<const OutboxMessage> messages) {
  for (size_t i = 0; i < messages.size(); ++i) {
    Status st = Validate(messages[i]);
    if (!st.ok()) return st.WithContext("message " + std::to_string(i));
  }
  std::vector<Enqueued> out;
  out.reserve(messages.size());
  for (const auto& m : messages) {
    CONVERGE_ASSIGN_OR_RETURN(auto e, Enqueue(tx, m));
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace converge::outbox
