#include "converge/common/envelope.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdint>
#include <limits>
#include <map>

#include "base64.h"
#include "converge/common/time_format.h"
#include "converge/common/utf8.h"
#include "converge/common/uuid.h"
#include "strict_json.h"

namespace converge {
namespace {

using std::chrono::system_clock;

// ---- small text helpers -----------------------------------------------------------------------

char Lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool StartsWithIgnoreCase(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i) {
    if (Lower(s[i]) != Lower(prefix[i])) return false;
  }
  return true;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && StartsWithIgnoreCase(a, b);
}

// Names made only of 'a'-'z' and '0'-'9': what CloudEvents allows for attribute names.
bool IsAttributeLikeName(std::string_view name) {
  if (name.empty()) return false;
  return std::all_of(name.begin(), name.end(),
                     [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); });
}

// A value for an error message: quoted, at most 48 bytes, anything but printable ASCII escaped,
// so a hostile value can neither flood nor corrupt a log line.
std::string Quoted(std::string_view v) {
  static constexpr char kHex[] = "0123456789abcdef";
  constexpr size_t kMax = 48;
  std::string out = "\"";
  const size_t n = std::min(v.size(), kMax);
  for (size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(v[i]);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c < 0x20 || c >= 0x7F) {
      out += "\\x";
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xF]);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  if (v.size() > n) out += "...";
  out.push_back('"');
  return out;
}

Status Invalid(std::string msg) { return Status::InvalidArgument(std::move(msg)); }

// ---- names ------------------------------------------------------------------------------------

constexpr std::array<std::string_view, 10> kEnvelopeAttributeNames = {
    "specversion",     "id",          "source", "type", "subject", "time",
    "datacontenttype", "traceparent", "keyseq", "data"};

// How a binding spells things in error messages.
struct Naming {
  std::string_view attr_prefix;   // "ce_" for Kafka headers
  std::string_view content_type;  // where datacontenttype travels
  std::string_view payload;       // where data travels
  std::string_view container;     // what carries an attribute: "header", "user property"...
  std::string Attr(std::string_view name) const {
    return std::string(attr_prefix) + std::string(name);
  }
};

// Encoders and ValidateMessage talk about Message fields; decoders about the wire.
constexpr Naming kMessageNaming{"", "datacontenttype", "payload", "attribute"};
constexpr Naming kKafkaNaming{"ce_", "content-type", "record value", "header"};
constexpr Naming kMqttNaming{"", "Content Type", "payload", "user property"};
constexpr Naming kJsonNaming{"", "datacontenttype", "data", "member"};

// Which plain header names a binding can carry unambiguously.
enum class HeaderRule {
  kPortable,    // every binding: ValidateMessage
  kKafka,       // not "ce_*", not "content-type"
  kMqtt,        // not made only of a-z0-9 (that reads back as an attribute)
  kNotCarried,  // structured JSON: headers are not part of the event
};

// How the event travels. In binary mode a datacontenttype starting with
// "application/cloudevents" would make the receiver read the message as structured mode.
enum class ContentMode { kBinary, kStructured };

// "application/cloudevents" prefix (any case): the sender chose structured mode.
bool IsStructuredContentType(std::string_view ct) {
  return StartsWithIgnoreCase(ct, "application/cloudevents");
}

// ---- value checks -----------------------------------------------------------------------------

Status CheckText(const std::string& name, std::string_view value, size_t max_bytes) {
  if (value.size() > max_bytes) {
    return Invalid(name + " is too long: " + std::to_string(value.size()) + " bytes (limit " +
                   std::to_string(max_bytes) + ")");
  }
  return ValidateAttributeText(name, value);
}

Status CheckRequiredText(const std::string& name, std::string_view value, size_t max_bytes) {
  if (value.empty()) return Invalid(name + " is missing");
  return CheckText(name, value, max_bytes);
}

bool IsUriCharacter(unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  static constexpr std::string_view kOther = "-._~:/?#[]@!$&'()*+,;=";
  return kOther.find(static_cast<char>(c)) != std::string_view::npos;
}

bool IsHex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// RFC 3986 URI-reference, checked at the character level: unreserved, reserved and well-formed
// %XX only. The structure (scheme, authority) is not checked.
Status CheckUriReference(const std::string& name, std::string_view v) {
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] == '%') {
      if (i + 2 >= v.size() || !IsHex(v[i + 1]) || !IsHex(v[i + 2])) {
        return Invalid(name + " is not a URI-reference: bad percent-encoding at byte " +
                       std::to_string(i));
      }
      i += 2;
    } else if (!IsUriCharacter(static_cast<unsigned char>(v[i]))) {
      return Invalid(name + " is not a URI-reference: character " + Quoted(v.substr(i, 1)) +
                     " at byte " + std::to_string(i) + " must be percent-encoded");
    }
  }
  return Status::Ok();
}

bool IsTokenChar(char c) {  // RFC 9110 tchar
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  static constexpr std::string_view kOther = "!#$%&'*+-.^_`|~";
  return kOther.find(c) != std::string_view::npos;
}

// RFC 2046 / RFC 9110 media-type: type "/" subtype *( OWS ";" OWS name "=" (token / quoted) ).
Status CheckMediaType(const std::string& name, std::string_view v) {
  size_t i = 0;
  auto token = [&] {
    const size_t start = i;
    while (i < v.size() && IsTokenChar(v[i])) ++i;
    return i > start;
  };
  auto ows = [&] {
    while (i < v.size() && (v[i] == ' ' || v[i] == '\t')) ++i;
  };
  auto bad = [&](std::string_view why) {
    return Invalid(name + " is not a media type (" + std::string(why) + " at byte " +
                   std::to_string(i) + "): " + Quoted(v));
  };
  if (!token()) return bad("expected a type");
  if (i >= v.size() || v[i] != '/') return bad("expected '/'");
  ++i;
  if (!token()) return bad("expected a subtype");
  while (true) {
    ows();
    if (i == v.size()) return Status::Ok();
    if (v[i] != ';') return bad("expected ';'");
    ++i;
    ows();
    if (!token()) return bad("expected a parameter name");
    if (i >= v.size() || v[i] != '=') return bad("expected '='");
    ++i;
    if (i < v.size() && v[i] == '"') {
      ++i;
      while (i < v.size() && v[i] != '"') {
        if (v[i] == '\\') ++i;  // quoted-pair
        ++i;
      }
      if (i >= v.size()) return bad("unterminated quoted string");
      ++i;
    } else if (!token()) {
      return bad("expected a parameter value");
    }
  }
}

// W3C Trace Context traceparent: version "-" trace-id "-" parent-id "-" flags, lower-case hex.
Status CheckTraceparent(const std::string& name, std::string_view v) {
  auto bad = [&] {
    return Invalid(name +
                   " is not a W3C traceparent (\"00-<32 hex>-<16 hex>-<2 hex>\"): " + Quoted(v));
  };
  auto lower_hex = [&](size_t from, size_t n, bool may_be_zero) {
    bool nonzero = false;
    for (size_t k = from; k < from + n; ++k) {
      const char c = v[k];
      if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
      nonzero = nonzero || c != '0';
    }
    return may_be_zero || nonzero;
  };
  if (v.size() < 55) return bad();
  if (!lower_hex(0, 2, true) || v.substr(0, 2) == "ff") return bad();
  if (v[2] != '-' || v[35] != '-' || v[52] != '-') return bad();
  if (!lower_hex(3, 32, false) || !lower_hex(36, 16, false) || !lower_hex(53, 2, true)) {
    return bad();
  }
  // Version 00 is exactly 55 characters; later versions may append "-<more>".
  if (v.substr(0, 2) == "00" ? v.size() != 55 : (v.size() > 55 && v[55] != '-')) return bad();
  return Status::Ok();
}

// "1" .. "9223372036854775807": no sign, no leading zero, no spaces.
std::optional<int64_t> ParsePositiveInt64(std::string_view s) {
  if (s.empty() || s.size() > 19 || s[0] < '1' || s[0] > '9') return std::nullopt;
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

Status CheckHeaderName(std::string_view name, HeaderRule rule) {
  if (name.empty()) return Invalid("a header has an empty name");
  const std::string label = "header " + Quoted(name);
  if (name.size() > MessageLimits::kMaxHeaderNameBytes) {
    return Invalid(label + " name is too long: " + std::to_string(name.size()) + " bytes (limit " +
                   std::to_string(MessageLimits::kMaxHeaderNameBytes) + ")");
  }
  CONVERGE_RETURN_IF_ERROR(ValidateAttributeText(label + " name", name));
  const bool kafka_rule = rule == HeaderRule::kPortable || rule == HeaderRule::kKafka;
  const bool mqtt_rule = rule == HeaderRule::kPortable || rule == HeaderRule::kMqtt;
  if (kafka_rule && (StartsWithIgnoreCase(name, "ce_") || EqualsIgnoreCase(name, "content-type"))) {
    return Invalid(label +
                   " is reserved: names starting with \"ce_\" and \"content-type\" carry the "
                   "CloudEvents envelope in Kafka");
  }
  if (mqtt_rule && IsAttributeLikeName(name)) {
    return Invalid(label +
                   " would be read as a CloudEvents attribute in MQTT 5 (a name made only of "
                   "a-z and 0-9): add another character, e.g. \"x-" +
                   std::string(name.substr(0, 32)) + "\"");
  }
  return Status::Ok();
}

// Every rule a Message must meet to be encoded; decoders run it too, so that whatever they
// return can be encoded again.
Status CheckMessage(const Message& m, IdRule id_rule, HeaderRule header_rule, ContentMode mode,
                    const Naming& n) {
  if (m.topic.empty()) return Invalid("topic is missing");
  CONVERGE_RETURN_IF_ERROR(CheckText("topic", m.topic, MessageLimits::kMaxTopicBytes));
  if (m.topic.find_first_of("+#") != std::string::npos) {
    return Invalid("topic " + Quoted(m.topic) + " contains an MQTT wildcard ('+' or '#')");
  }

  const std::string id_name = n.Attr("id");
  CONVERGE_RETURN_IF_ERROR(CheckRequiredText(id_name, m.id, MessageLimits::kMaxAttributeBytes));
  if (id_rule == IdRule::kUuid) {
    auto uuid = Uuid::Parse(m.id);
    if (!uuid.ok() || uuid->is_nil()) {
      return Invalid(id_name + " must be a UUID (Converge produces UUIDv7), got " + Quoted(m.id));
    }
  }

  const std::string source_name = n.Attr("source");
  CONVERGE_RETURN_IF_ERROR(
      CheckRequiredText(source_name, m.source, MessageLimits::kMaxSourceBytes));
  CONVERGE_RETURN_IF_ERROR(CheckUriReference(source_name, m.source));

  CONVERGE_RETURN_IF_ERROR(CheckRequiredText(n.Attr("type"), m.type, MessageLimits::kMaxTypeBytes));
  CONVERGE_RETURN_IF_ERROR(CheckText(n.Attr("subject"), m.subject, MessageLimits::kMaxKeyBytes));

  if (!m.datacontenttype.empty()) {
    const std::string name(n.content_type);
    CONVERGE_RETURN_IF_ERROR(CheckText(name, m.datacontenttype, MessageLimits::kMaxAttributeBytes));
    CONVERGE_RETURN_IF_ERROR(CheckMediaType(name, m.datacontenttype));
    if (mode == ContentMode::kBinary && IsStructuredContentType(m.datacontenttype)) {
      return Invalid(name + " " + Quoted(m.datacontenttype) +
                     " cannot be sent in binary content mode: receivers would read the message "
                     "as a structured CloudEvent");
    }
  }
  if (!m.traceparent.empty()) {
    const std::string name = n.Attr("traceparent");
    CONVERGE_RETURN_IF_ERROR(CheckText(name, m.traceparent, MessageLimits::kMaxAttributeBytes));
    CONVERGE_RETURN_IF_ERROR(CheckTraceparent(name, m.traceparent));
  }
  if (m.sequence < 0) {
    return Invalid("sequence (" + n.Attr("keyseq") + ") must not be negative, got " +
                   std::to_string(m.sequence));
  }

  for (const auto& [name, value] : m.extensions) {
    const std::string wire = n.Attr(name);
    if (!IsValidExtensionName(name)) {
      return Invalid("extension " + Quoted(wire) +
                     " has an invalid name: 1-20 characters a-z and 0-9, not one of the "
                     "envelope's own attribute names");
    }
    CONVERGE_RETURN_IF_ERROR(CheckText(wire, value, MessageLimits::kMaxAttributeBytes));
  }

  size_t carried = m.extensions.size();
  if (header_rule != HeaderRule::kNotCarried) {
    for (const auto& [name, value] : m.headers) {
      CONVERGE_RETURN_IF_ERROR(CheckHeaderName(name, header_rule));
      CONVERGE_RETURN_IF_ERROR(
          CheckText("header " + Quoted(name) + " value", value, MessageLimits::kMaxAttributeBytes));
    }
    carried += m.headers.size();
  }
  if (carried > MessageLimits::kMaxHeaders) {
    return Invalid("too many headers and extensions: " + std::to_string(carried) + " (limit " +
                   std::to_string(MessageLimits::kMaxHeaders) + ")");
  }

  if (m.payload.size() > MessageLimits::kMaxPayloadBytes) {
    return Invalid(std::string(n.payload) + " is too large: " + std::to_string(m.payload.size()) +
                   " bytes (limit " + std::to_string(MessageLimits::kMaxPayloadBytes) + ")");
  }
  return Status::Ok();
}

// ---- encoding ---------------------------------------------------------------------------------

bool HasTime(const Message& m) { return m.time != system_clock::time_point{}; }

std::string TimeText(const Message& m) { return FormatRfc3339(m.time, SubsecondDigits::kLossless); }

// The attributes other than datacontenttype, in wire order, with `prefix` on each name.
HeaderList AttributePairs(const Message& m, std::string_view prefix) {
  HeaderList out;
  out.reserve(9 + m.extensions.size() + m.headers.size());
  auto add = [&](std::string_view name, std::string value) {
    out.emplace_back(std::string(prefix) + std::string(name), std::move(value));
  };
  add("specversion", std::string(kCloudEventsSpecVersion));
  add("id", m.id);
  add("source", m.source);
  add("type", m.type);
  if (!m.subject.empty()) add("subject", m.subject);
  if (HasTime(m)) add("time", TimeText(m));
  if (!m.traceparent.empty()) add("traceparent", m.traceparent);
  if (m.sequence > 0) add("keyseq", std::to_string(m.sequence));
  for (const auto& [name, value] : m.extensions) add(name, value);
  return out;
}

// ---- decoding ---------------------------------------------------------------------------------

using AttributeMap = std::map<std::string, std::string, std::less<>>;

Status CheckWireAttributeName(std::string_view name, const Naming& n) {
  const std::string label = std::string(n.container) + " " + Quoted(n.Attr(name));
  if (!IsAttributeLikeName(name)) {
    return Invalid(label + " is not a valid CloudEvents attribute name (only a-z and 0-9)");
  }
  if (name.size() > kMaxExtensionNameBytes) {
    return Invalid(label + " has an attribute name longer than " +
                   std::to_string(kMaxExtensionNameBytes) + " characters");
  }
  if (name == "data") return Invalid(label + ": \"data\" is reserved and cannot be an attribute");
  return Status::Ok();
}

Status AddAttribute(AttributeMap& attrs, std::string_view name, std::string_view value,
                    const Naming& n) {
  CONVERGE_RETURN_IF_ERROR(CheckWireAttributeName(name, n));
  if (!attrs.emplace(std::string(name), std::string(value)).second) {
    return Invalid(n.Attr(name) + " appears more than once");
  }
  return Status::Ok();
}

Status AddHeader(std::map<std::string, std::string>& headers, const std::string& name,
                 const std::string& value) {
  if (!headers.emplace(name, value).second) {
    return Invalid("header " + Quoted(name) + " appears more than once");
  }
  return Status::Ok();
}

// Moves the attributes into a Message: required ones present, specversion "1.0", present
// optional ones non-empty, time and keyseq parsed; what is left becomes extensions. The content
// type is expected under "datacontenttype".
Result<Message> BuildMessage(std::string_view topic, AttributeMap attrs, const Naming& n) {
  auto take = [&](std::string_view name) -> std::optional<std::string> {
    auto it = attrs.find(name);
    if (it == attrs.end()) return std::nullopt;
    std::string v = std::move(it->second);
    attrs.erase(it);
    return v;
  };
  Message m;
  m.topic = std::string(topic);
  m.datacontenttype.clear();

  const auto specversion = take("specversion");
  if (!specversion) return Invalid(n.Attr("specversion") + " is missing");
  if (*specversion != kCloudEventsSpecVersion) {
    return Invalid(n.Attr("specversion") + " must be \"1.0\", got " + Quoted(*specversion));
  }
  struct Required {
    std::string_view name;
    std::string* field;
  };
  for (const Required& r :
       {Required{"id", &m.id}, Required{"source", &m.source}, Required{"type", &m.type}}) {
    auto v = take(r.name);
    if (!v) return Invalid(n.Attr(r.name) + " is missing");
    if (v->empty()) return Invalid(n.Attr(r.name) + " is empty");
    *r.field = std::move(*v);
  }
  struct Optional {
    std::string name;  // as named in errors
    std::string_view key;
    std::string* field;
  };
  for (const Optional& o :
       {Optional{n.Attr("subject"), "subject", &m.subject},
        Optional{std::string(n.content_type), "datacontenttype", &m.datacontenttype},
        Optional{n.Attr("traceparent"), "traceparent", &m.traceparent}}) {
    auto v = take(o.key);
    if (!v) continue;
    if (v->empty()) return Invalid(o.name + " is present but empty");
    *o.field = std::move(*v);
  }
  if (auto time = take("time")) {
    auto parsed = ParseRfc3339(*time);
    if (!parsed.ok()) {
      return Invalid(n.Attr("time") + " is not RFC 3339: " + parsed.status().message() + " in " +
                     Quoted(*time));
    }
    m.time = *parsed;
  }
  if (auto keyseq = take("keyseq")) {
    const auto v = ParsePositiveInt64(*keyseq);
    if (!v) {
      return Invalid(n.Attr("keyseq") + " must be a positive decimal int64, got " +
                     Quoted(*keyseq));
    }
    m.sequence = *v;
  }
  for (auto& [name, value] : attrs) m.extensions.emplace(name, std::move(value));
  return m;
}

// The media type without parameters and surrounding spaces, lower-cased.
std::string BareMediaType(std::string_view ct) {
  ct = ct.substr(0, ct.find(';'));
  while (!ct.empty() && (ct.front() == ' ' || ct.front() == '\t')) ct.remove_prefix(1);
  while (!ct.empty() && (ct.back() == ' ' || ct.back() == '\t')) ct.remove_suffix(1);
  std::string out(ct);
  std::transform(out.begin(), out.end(), out.begin(), Lower);
  return out;
}

Status CheckStructuredFormat(std::string_view label, std::string_view ct) {
  if (BareMediaType(ct) == "application/cloudevents+json") return Status::Ok();
  return Invalid(std::string(label) + " " + Quoted(ct) +
                 " is a CloudEvents event format this decoder does not support (only "
                 "application/cloudevents+json)");
}

// A JSON extension value as its canonical CloudEvents string: strings as is, booleans "true" and
// "false", integers in the CloudEvents Integer range in decimal.
Result<std::string> ExtensionValueFromJson(const json::Member& mem) {
  switch (mem.kind) {
    case json::Kind::kString:
      return mem.string_value;
    case json::Kind::kTrue:
      return std::string("true");
    case json::Kind::kFalse:
      return std::string("false");
    case json::Kind::kNumber: {
      const std::string_view raw = mem.raw;
      int64_t v = 0;
      const auto [end, ec] = std::from_chars(raw.data(), raw.data() + raw.size(), v);
      if (ec == std::errc() && end == raw.data() + raw.size() &&
          v >= std::numeric_limits<int32_t>::min() && v <= std::numeric_limits<int32_t>::max()) {
        return std::to_string(v);
      }
      return Invalid(mem.name + " is not a CloudEvents Integer (a whole number within 32 bits): " +
                     Quoted(raw));
    }
    default:
      return Invalid(mem.name + " must be a string, boolean or integer, got " + Quoted(mem.raw));
  }
}

bool IsStringAttribute(std::string_view name) {
  return name == "specversion" || name == "id" || name == "source" || name == "type" ||
         name == "subject" || name == "time" || name == "datacontenttype" || name == "traceparent";
}

// Structured JSON to Message, without the final CheckMessage (the caller adds headers first).
Result<Message> DecodeStructured(std::string_view topic, std::string_view text) {
  if (text.size() > kMaxStructuredJsonBytes) {
    return Invalid("structured event is too large: " + std::to_string(text.size()) +
                   " bytes (limit " + std::to_string(kMaxStructuredJsonBytes) + ")");
  }
  auto parsed = json::ParseObject(text, kMaxJsonDataDepth + 1,
                                  MessageLimits::kMaxHeaders + kMaxEnvelopeHeaders + 2);
  if (!parsed.ok()) return Invalid("structured event: " + parsed.status().message());

  AttributeMap attrs;
  const json::Member* data = nullptr;
  const json::Member* data_base64 = nullptr;
  for (const json::Member& mem : *parsed) {
    if (mem.name == "data") {
      data = &mem;
      continue;
    }
    if (mem.name == "data_base64") {
      if (mem.kind == json::Kind::kNull) continue;
      if (mem.kind != json::Kind::kString) return Invalid("data_base64 must be a JSON string");
      data_base64 = &mem;
      continue;
    }
    CONVERGE_RETURN_IF_ERROR(CheckWireAttributeName(mem.name, kJsonNaming));
    if (mem.kind == json::Kind::kNull) continue;  // JSON format 2.2: null means unset
    std::string value;
    if (IsStringAttribute(mem.name)) {
      if (mem.kind != json::Kind::kString) return Invalid(mem.name + " must be a JSON string");
      value = mem.string_value;
    } else if (mem.name == "keyseq") {
      if (mem.kind == json::Kind::kString) {
        value = mem.string_value;
      } else if (mem.kind == json::Kind::kNumber) {
        value = std::string(mem.raw);
      } else {
        return Invalid("keyseq must be a JSON string or integer");
      }
    } else {
      CONVERGE_ASSIGN_OR_RETURN(value, ExtensionValueFromJson(mem));
    }
    CONVERGE_RETURN_IF_ERROR(AddAttribute(attrs, mem.name, value, kJsonNaming));
  }
  if (data && data_base64) return Invalid("data and data_base64 are both present");

  CONVERGE_ASSIGN_OR_RETURN(Message m, BuildMessage(topic, std::move(attrs), kJsonNaming));
  if (data_base64) {
    if (!base64::Decode(data_base64->string_value, &m.payload)) {
      return Invalid("data_base64 is not valid base64 (RFC 4648, padded, no whitespace)");
    }
  } else if (data) {
    // JSON format 3.1.2: without datacontenttype, data is JSON; say so explicitly from here on.
    if (m.datacontenttype.empty()) m.datacontenttype = "application/json";
    if (IsJsonContentType(m.datacontenttype)) {
      m.payload = std::string(data->raw);
    } else if (data->kind == json::Kind::kString) {
      m.payload = data->string_value;
    } else {
      return Invalid("data must be a JSON string when datacontenttype " +
                     Quoted(m.datacontenttype) + " is not JSON");
    }
  }
  return m;
}

Status CheckHeaderCount(size_t count, std::string_view what) {
  const size_t limit = MessageLimits::kMaxHeaders + kMaxEnvelopeHeaders;
  if (count > limit) {
    return Invalid("too many " + std::string(what) + ": " + std::to_string(count) + " (limit " +
                   std::to_string(limit) + ")");
  }
  return Status::Ok();
}

Status CheckBinaryPayloadSize(std::string_view payload, const Naming& n) {
  if (payload.size() > MessageLimits::kMaxPayloadBytes) {
    return Invalid(std::string(n.payload) + " is too large: " + std::to_string(payload.size()) +
                   " bytes (limit " + std::to_string(MessageLimits::kMaxPayloadBytes) + ")");
  }
  return Status::Ok();
}

// A datacontenttype sent both as the protocol's content type and as an attribute must agree.
Status MergeContentType(AttributeMap& attrs, std::optional<std::string_view> protocol_value,
                        const Naming& n) {
  auto it = attrs.find("datacontenttype");
  if (it != attrs.end() && protocol_value && it->second != *protocol_value) {
    return Invalid(n.Attr("datacontenttype") + " " + Quoted(it->second) + " and " +
                   std::string(n.content_type) + " " + Quoted(*protocol_value) + " disagree");
  }
  if (protocol_value) attrs["datacontenttype"] = std::string(*protocol_value);
  return Status::Ok();
}

}  // namespace

bool IsValidExtensionName(std::string_view name) {
  if (!IsAttributeLikeName(name) || name.size() > kMaxExtensionNameBytes) return false;
  return std::find(kEnvelopeAttributeNames.begin(), kEnvelopeAttributeNames.end(), name) ==
         kEnvelopeAttributeNames.end();
}

bool IsJsonContentType(std::string_view content_type) {
  const std::string bare = BareMediaType(content_type);
  const size_t slash = bare.find('/');
  if (slash == std::string::npos) return false;
  const std::string_view subtype = std::string_view(bare).substr(slash + 1);
  return subtype == "json" || (subtype.size() > 5 && subtype.ends_with("+json"));
}

Status ValidateMessage(const Message& message, IdRule id_rule) {
  return CheckMessage(message, id_rule, HeaderRule::kPortable, ContentMode::kBinary,
                      kMessageNaming);
}

// ---- Kafka ------------------------------------------------------------------------------------

Result<HeaderList> EncodeKafkaHeaders(const Message& message, IdRule id_rule) {
  CONVERGE_RETURN_IF_ERROR(
      CheckMessage(message, id_rule, HeaderRule::kKafka, ContentMode::kBinary, kMessageNaming));
  HeaderList out = AttributePairs(message, "ce_");
  if (!message.datacontenttype.empty()) out.emplace_back("content-type", message.datacontenttype);
  for (const auto& [name, value] : message.headers) out.emplace_back(name, value);
  return out;
}

std::optional<std::string> KafkaKey(const Message& message) {
  if (message.subject.empty()) return std::nullopt;
  return message.subject;
}

Result<Message> DecodeKafka(std::string_view topic, std::optional<std::string_view> key,
                            const HeaderList& headers, std::string_view payload) {
  static_cast<void>(key);  // not an attribute: see the header comment
  CONVERGE_RETURN_IF_ERROR(CheckHeaderCount(headers.size(), "headers"));
  std::optional<std::string_view> content_type;
  for (const auto& [name, value] : headers) {
    if (name != "content-type") continue;
    if (content_type) return Invalid("content-type appears more than once");
    content_type = value;
  }

  if (content_type && IsStructuredContentType(*content_type)) {
    CONVERGE_RETURN_IF_ERROR(CheckStructuredFormat("content-type", *content_type));
    CONVERGE_ASSIGN_OR_RETURN(Message m, DecodeStructured(topic, payload));
    for (const auto& [name, value] : headers) {
      // Binding 3.3.3: a structured message MAY repeat the attributes as ce_ headers; the event
      // in the value is authoritative.
      if (name.starts_with("ce_") || name == "content-type") continue;
      CONVERGE_RETURN_IF_ERROR(AddHeader(m.headers, name, value));
    }
    CONVERGE_RETURN_IF_ERROR(CheckMessage(m, IdRule::kAnyString, HeaderRule::kKafka,
                                          ContentMode::kStructured, kJsonNaming));
    return m;
  }

  CONVERGE_RETURN_IF_ERROR(CheckBinaryPayloadSize(payload, kKafkaNaming));
  AttributeMap attrs;
  std::map<std::string, std::string> plain;
  for (const auto& [name, value] : headers) {
    if (name == "content-type") continue;
    if (name.starts_with("ce_")) {
      CONVERGE_RETURN_IF_ERROR(
          AddAttribute(attrs, std::string_view(name).substr(3), value, kKafkaNaming));
    } else {
      CONVERGE_RETURN_IF_ERROR(AddHeader(plain, name, value));
    }
  }
  CONVERGE_RETURN_IF_ERROR(MergeContentType(attrs, content_type, kKafkaNaming));
  CONVERGE_ASSIGN_OR_RETURN(Message m, BuildMessage(topic, std::move(attrs), kKafkaNaming));
  m.headers = std::move(plain);
  m.payload = std::string(payload);
  CONVERGE_RETURN_IF_ERROR(
      CheckMessage(m, IdRule::kAnyString, HeaderRule::kKafka, ContentMode::kBinary, kKafkaNaming));
  return m;
}

// ---- MQTT 5 -----------------------------------------------------------------------------------

Result<MqttProperties> EncodeMqttUserProperties(const Message& message, IdRule id_rule) {
  CONVERGE_RETURN_IF_ERROR(
      CheckMessage(message, id_rule, HeaderRule::kMqtt, ContentMode::kBinary, kMessageNaming));
  MqttProperties out;
  out.content_type = message.datacontenttype;
  out.user_properties = AttributePairs(message, "");
  for (const auto& [name, value] : message.headers) out.user_properties.emplace_back(name, value);
  return out;
}

Result<Message> DecodeMqtt5(std::string_view topic, std::string_view content_type,
                            const HeaderList& user_properties, std::string_view payload) {
  CONVERGE_RETURN_IF_ERROR(CheckHeaderCount(user_properties.size(), "user properties"));

  if (IsStructuredContentType(content_type)) {
    CONVERGE_RETURN_IF_ERROR(CheckStructuredFormat("Content Type", content_type));
    CONVERGE_ASSIGN_OR_RETURN(Message m, DecodeStructured(topic, payload));
    for (const auto& [name, value] : user_properties) {
      // Binding 3.2.3: structured messages MAY repeat the attributes as user properties.
      if (IsAttributeLikeName(name)) continue;
      CONVERGE_RETURN_IF_ERROR(AddHeader(m.headers, name, value));
    }
    CONVERGE_RETURN_IF_ERROR(CheckMessage(m, IdRule::kAnyString, HeaderRule::kMqtt,
                                          ContentMode::kStructured, kJsonNaming));
    return m;
  }

  CONVERGE_RETURN_IF_ERROR(CheckBinaryPayloadSize(payload, kMqttNaming));
  AttributeMap attrs;
  std::map<std::string, std::string> plain;
  for (const auto& [name, value] : user_properties) {
    if (IsAttributeLikeName(name)) {
      CONVERGE_RETURN_IF_ERROR(AddAttribute(attrs, name, value, kMqttNaming));
    } else {
      CONVERGE_RETURN_IF_ERROR(AddHeader(plain, name, value));
    }
  }
  std::optional<std::string_view> protocol_ct;
  if (!content_type.empty()) protocol_ct = content_type;
  CONVERGE_RETURN_IF_ERROR(MergeContentType(attrs, protocol_ct, kMqttNaming));
  CONVERGE_ASSIGN_OR_RETURN(Message m, BuildMessage(topic, std::move(attrs), kMqttNaming));
  m.headers = std::move(plain);
  m.payload = std::string(payload);
  CONVERGE_RETURN_IF_ERROR(
      CheckMessage(m, IdRule::kAnyString, HeaderRule::kMqtt, ContentMode::kBinary, kMqttNaming));
  return m;
}

Result<Message> DecodeMqtt311(std::string_view topic, std::string_view payload) {
  return DecodeStructuredJson(topic, payload);
}

// ---- Structured JSON --------------------------------------------------------------------------

Result<std::string> EncodeStructuredJson(const Message& message, IdRule id_rule) {
  CONVERGE_RETURN_IF_ERROR(CheckMessage(message, id_rule, HeaderRule::kNotCarried,
                                        ContentMode::kStructured, kMessageNaming));
  std::string out;
  out.reserve(256 + message.payload.size() * 4 / 3);
  out.push_back('{');
  bool first = true;
  auto member = [&](std::string_view name) {
    if (!first) out.push_back(',');
    first = false;
    json::AppendString(&out, name);
    out.push_back(':');
  };
  for (const auto& [name, value] : AttributePairs(message, "")) {
    member(name);
    json::AppendString(&out, value);
  }
  if (!message.datacontenttype.empty()) {
    member("datacontenttype");
    json::AppendString(&out, message.datacontenttype);
  }
  const std::string& p = message.payload;
  if (!p.empty()) {
    // Embed only what reads back byte for byte: one strict JSON value, no outer whitespace.
    const bool embeddable =
        !message.datacontenttype.empty() && IsJsonContentType(message.datacontenttype) &&
        p.find_first_of(" \t\r\n") != 0 && p.find_last_of(" \t\r\n") != p.size() - 1 &&
        json::ValidateText(p, kMaxJsonDataDepth).ok();
    if (embeddable) {
      member("data");
      out += p;
    } else {
      member("data_base64");
      out.push_back('"');
      out += base64::Encode(p);
      out.push_back('"');
    }
  }
  out.push_back('}');
  return out;
}

Result<Message> DecodeStructuredJson(std::string_view topic, std::string_view json) {
  CONVERGE_ASSIGN_OR_RETURN(Message m, DecodeStructured(topic, json));
  CONVERGE_RETURN_IF_ERROR(CheckMessage(m, IdRule::kAnyString, HeaderRule::kNotCarried,
                                        ContentMode::kStructured, kJsonNaming));
  return m;
}

}  // namespace converge
