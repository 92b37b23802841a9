#include "converge/common/log.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <ctime>
#include <type_traits>
#include <unordered_map>

#include "obs_text.h"

namespace converge {
namespace {

using obs_internal::AsciiLower;

constexpr size_t kMaxLimiterKeys = 4096;

// Process-wide logging state. Leaked on purpose so that logging from static destructors and
// detached threads at exit stays safe.
struct LogState {
  std::atomic<int> min_level{static_cast<int>(Level::kInfo)};
  std::atomic<int> format{static_cast<int>(LogFormat::kLogfmt)};
  std::atomic<const Clock*> clock{nullptr};

  std::mutex sink_mu;  // serializes lines; guards sink
  LogSink sink;

  std::mutex limiters_mu;  // guards limiters
  std::unordered_map<std::string, std::shared_ptr<LogLimiter>> limiters;
};

LogState& State() {
  static LogState* state = new LogState();
  return *state;
}

const Clock& CurrentClock() {
  const Clock* c = State().clock.load(std::memory_order_acquire);
  return c ? *c : SystemClock::Instance();
}

void WriteStderr(std::string_view line) {
  // One write per line (under the sink mutex) so that lines from threads never interleave.
  std::string buf;
  buf.reserve(line.size() + 1);
  buf.append(line);
  buf.push_back('\n');
  const char* p = buf.data();
  size_t left = buf.size();
  while (left > 0) {
    const ssize_t n = ::write(STDERR_FILENO, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // nowhere left to report a failing stderr
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
}

void Emit(std::string_view line) {
  LogState& s = State();
  std::lock_guard lock(s.sink_mu);
  if (s.sink) {
    s.sink(line);
  } else {
    WriteStderr(line);
  }
}

std::string FormatTimestamp(std::chrono::system_clock::time_point tp) {
  using namespace std::chrono;
  const auto ms = floor<milliseconds>(tp.time_since_epoch()).count();
  time_t secs = static_cast<time_t>(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
  const int millis = static_cast<int>(ms - static_cast<int64_t>(secs) * 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  const int n =
      std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                    tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, millis);
  return std::string(buf, n > 0 ? static_cast<size_t>(n) : 0);
}

bool IsKeyChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}

// Field keys become [A-Za-z0-9_.-/:]; keys that collide with the fixed fields get a '_' prefix
// so that a JSON line never carries a duplicate key.
std::string SanitizeKey(std::string_view key) {
  std::string out;
  out.reserve(key.size() + 1);
  for (char c : key) out.push_back(IsKeyChar(c) || c == '/' || c == ':' ? c : '_');
  if (out.empty()) out = "_";
  if (out == "ts" || out == "level" || out == "component" || out == "msg") out.insert(0, "_");
  return out;
}

bool LogfmtNeedsQuotes(std::string_view v) {
  if (v.empty()) return true;
  for (size_t i = 0; i < v.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(v[i]);
    if (c <= ' ' || c == '=' || c == '"' || c == '\\' || c == 0x7F) return true;
    if (c >= 0x80) {
      const size_t n = obs_internal::Utf8SequenceLength(v, i);
      if (n == 0) return true;
      i += n - 1;
    }
  }
  return false;
}

void AppendLogfmtValue(std::string& out, std::string_view v) {
  if (!LogfmtNeedsQuotes(v)) {
    out.append(v);
    return;
  }
  obs_internal::AppendQuoted(out, v, obs_internal::QuoteStyle::kLogfmt);
}

// Renders a field value as text (strings redacted). `json_literal` is set when the text is a
// JSON number/bool that must not be quoted.
std::string ValueText(const Field& f, bool* json_literal) {
  *json_literal = false;
  if (IsSecretKey(f.key())) return "***";
  return std::visit(
      [&](const auto& v) -> std::string {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string>) {
          return Redact(v);
        } else if constexpr (std::is_same_v<T, bool>) {
          *json_literal = true;
          return v ? "true" : "false";
        } else if constexpr (std::is_same_v<T, double>) {
          std::string s = obs_internal::FormatDouble(v);
          *json_literal = !(s == "NaN" || s == "+Inf" || s == "-Inf");
          return s;
        } else {
          *json_literal = true;
          return std::to_string(v);
        }
      },
      f.value());
}

class LineBuilder {
 public:
  explicit LineBuilder(LogFormat format) : json_(format == LogFormat::kJson) {
    if (json_) out_.push_back('{');
  }
  void Add(std::string_view key, std::string_view value, bool json_literal) {
    if (json_) {
      if (out_.size() > 1) out_.push_back(',');
      obs_internal::AppendJsonString(out_, key);
      out_.push_back(':');
      if (json_literal) {
        out_.append(value);
      } else {
        obs_internal::AppendJsonString(out_, value);
      }
    } else {
      if (!out_.empty()) out_.push_back(' ');
      out_.append(key);
      out_.push_back('=');
      AppendLogfmtValue(out_, value);
    }
  }
  void AddField(const Field& f) {
    bool literal = false;
    const std::string text = ValueText(f, &literal);
    Add(SanitizeKey(f.key()), text, literal);
  }
  std::string Finish() {
    if (json_) out_.push_back('}');
    return std::move(out_);
  }

 private:
  bool json_;
  std::string out_;
};

std::string BuildLine(Level level, std::string_view component, std::string_view msg,
                      const std::vector<Field>& context, std::initializer_list<Field> fields,
                      const Field* extra) {
  LineBuilder b(static_cast<LogFormat>(State().format.load(std::memory_order_relaxed)));
  b.Add("ts", FormatTimestamp(CurrentClock().Now()), false);
  b.Add("level", LevelName(level), false);
  if (!component.empty()) b.Add("component", component, false);
  b.Add("msg", Redact(msg), false);
  for (const Field& f : context) b.AddField(f);
  for (const Field& f : fields) b.AddField(f);
  if (extra) b.AddField(*extra);
  return b.Finish();
}

bool ContainsIgnoreCase(std::string_view hay, std::string_view needle) {
  if (needle.size() > hay.size()) return false;
  for (size_t i = 0; i + needle.size() <= hay.size(); ++i) {
    if (obs_internal::EqualsIgnoreCase(hay.substr(i, needle.size()), needle)) return true;
  }
  return false;
}

bool IsUrlAuthorityEnd(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '"' || c == '\'' || c == '<' ||
         c == '>';
}

// scheme://user:password@host → scheme://user:***@host. The authority is taken up to the next
// whitespace or quote and the *last* '@' in it, so that an unencoded '@' or '/' in a password
// is over-masked rather than leaked.
std::string RedactUrlPasswords(std::string_view text) {
  std::string out;
  size_t copied = 0;
  size_t pos = 0;
  while ((pos = text.find("://", pos)) != std::string_view::npos) {
    const size_t start = pos + 3;
    size_t end = start;
    while (end < text.size() && !IsUrlAuthorityEnd(text[end])) ++end;
    const std::string_view region = text.substr(start, end - start);
    const size_t at = region.rfind('@');
    if (at != std::string_view::npos) {
      const size_t colon = region.substr(0, at).find(':');
      if (colon != std::string_view::npos) {
        out.append(text.substr(copied, start + colon + 1 - copied));
        out += "***";
        copied = start + at;
      }
    }
    pos = end;
  }
  if (copied == 0) return std::string(text);
  out.append(text.substr(copied));
  return out;
}

// key=value and key = 'quoted value' pairs whose key names a secret.
std::string RedactSecretPairs(std::string_view text) {
  std::string out;
  size_t copied = 0;
  for (size_t eq = text.find('='); eq != std::string_view::npos; eq = text.find('=', eq + 1)) {
    if (eq < copied) continue;  // inside a value already masked
    size_t k_end = eq;
    while (k_end > copied && (text[k_end - 1] == ' ' || text[k_end - 1] == '\t')) --k_end;
    size_t k_start = k_end;
    while (k_start > copied && IsKeyChar(text[k_start - 1])) --k_start;
    if (k_start == k_end || !IsSecretKey(text.substr(k_start, k_end - k_start))) continue;
    size_t v_start = eq + 1;
    while (v_start < text.size() && (text[v_start] == ' ' || text[v_start] == '\t')) ++v_start;
    size_t v_end = v_start;
    if (v_start < text.size() && (text[v_start] == '\'' || text[v_start] == '"')) {
      const char q = text[v_start];
      ++v_start;
      v_end = v_start;
      while (v_end < text.size() && text[v_end] != q) {
        if (text[v_end] == '\\' && v_end + 1 < text.size()) ++v_end;
        ++v_end;
      }
      if (v_end > text.size()) v_end = text.size();
    } else {
      while (v_end < text.size() && text[v_end] != ' ' && text[v_end] != '\t' &&
             text[v_end] != '\n' && text[v_end] != '\r' && text[v_end] != '&') {
        ++v_end;
      }
    }
    if (v_end == v_start) continue;
    out.append(text.substr(copied, v_start - copied));
    out += "***";
    copied = v_end;
    eq = v_end > 0 ? v_end - 1 : 0;
  }
  if (copied == 0) return std::string(text);
  out.append(text.substr(copied));
  return out;
}

}  // namespace

std::string_view LevelName(Level level) {
  switch (level) {
    case Level::kDebug:
      return "debug";
    case Level::kInfo:
      return "info";
    case Level::kWarn:
      return "warn";
    case Level::kError:
      return "error";
  }
  return "unknown";
}

Result<Level> ParseLevel(std::string_view name) {
  using obs_internal::EqualsIgnoreCase;
  if (EqualsIgnoreCase(name, "debug")) return Level::kDebug;
  if (EqualsIgnoreCase(name, "info")) return Level::kInfo;
  if (EqualsIgnoreCase(name, "warn") || EqualsIgnoreCase(name, "warning")) return Level::kWarn;
  if (EqualsIgnoreCase(name, "error")) return Level::kError;
  return Status::InvalidArgument("unknown log level '" + std::string(name) +
                                 "' (expected debug, info, warn or error)");
}

Result<LogFormat> ParseLogFormat(std::string_view name) {
  if (obs_internal::EqualsIgnoreCase(name, "logfmt")) return LogFormat::kLogfmt;
  if (obs_internal::EqualsIgnoreCase(name, "json")) return LogFormat::kJson;
  return Status::InvalidArgument("unknown log format '" + std::string(name) +
                                 "' (expected logfmt or json)");
}

void ConfigureLogging(LogOptions options) {
  LogState& s = State();
  s.min_level.store(static_cast<int>(options.min_level), std::memory_order_relaxed);
  s.format.store(static_cast<int>(options.format), std::memory_order_relaxed);
  s.clock.store(options.clock, std::memory_order_release);
  {
    std::lock_guard lock(s.sink_mu);
    s.sink = std::move(options.sink);
  }
  std::lock_guard lock(s.limiters_mu);
  s.limiters.clear();
}

void ResetLogging() { ConfigureLogging(LogOptions{}); }

void SetMinLevel(Level level) {
  State().min_level.store(static_cast<int>(level), std::memory_order_relaxed);
}

Level MinLevel() { return static_cast<Level>(State().min_level.load(std::memory_order_relaxed)); }

bool IsSecretKey(std::string_view key) {
  static constexpr std::string_view kWords[] = {"password",   "passwd",  "secret", "token",
                                                "credential", "api_key", "apikey"};
  for (std::string_view w : kWords) {
    if (ContainsIgnoreCase(key, w)) return true;
  }
  // ssl.key.pem / ssl_key hold a private key; ssl.key.location is only a path and useful when
  // diagnosing "file not found".
  if (ContainsIgnoreCase(key, "ssl.key") || ContainsIgnoreCase(key, "ssl_key") ||
      ContainsIgnoreCase(key, "private_key") || ContainsIgnoreCase(key, "private.key")) {
    return !ContainsIgnoreCase(key, "location") && !ContainsIgnoreCase(key, "path") &&
           !ContainsIgnoreCase(key, "file");
  }
  return false;
}

std::string Redact(std::string_view text) {
  if (text.find('=') == std::string_view::npos && text.find("://") == std::string_view::npos) {
    return std::string(text);
  }
  return RedactSecretPairs(RedactUrlPasswords(text));
}

std::string FormatLogLine(Level level, std::string_view component, std::string_view msg,
                          const std::vector<Field>& context, std::initializer_list<Field> fields) {
  return BuildLine(level, component, msg, context, fields, nullptr);
}

void Log(Level level, std::string_view msg, std::initializer_list<Field> fields) {
  if (!LogEnabled(level)) return;
  static const std::vector<Field> kNoContext;
  Emit(BuildLine(level, "", msg, kNoContext, fields, nullptr));
}

LogLimiter::LogLimiter(std::chrono::nanoseconds interval, const Clock* clock)
    : interval_(interval), clock_(clock) {}

bool LogLimiter::Allow(uint64_t* suppressed) {
  const auto now = (clock_ ? *clock_ : CurrentClock()).Monotonic();
  std::lock_guard lock(mu_);
  if (has_allowed_ && now - last_allowed_ < interval_) {
    ++suppressed_;
    return false;
  }
  has_allowed_ = true;
  last_allowed_ = now;
  if (suppressed) *suppressed = suppressed_;
  suppressed_ = 0;
  return true;
}

Logger::Logger(std::string component, std::vector<Field> context)
    : component_(std::move(component)), context_(std::move(context)) {}

Logger Logger::With(std::initializer_list<Field> fields) const {
  Logger copy = *this;
  copy.context_.insert(copy.context_.end(), fields.begin(), fields.end());
  return copy;
}

void Logger::Log(Level level, std::string_view msg, std::initializer_list<Field> fields) const {
  if (!LogEnabled(level)) return;
  Emit(BuildLine(level, component_, msg, context_, fields, nullptr));
}

void Logger::LogEvery(std::string_view key, std::chrono::nanoseconds interval, Level level,
                      std::string_view msg, std::initializer_list<Field> fields) const {
  if (!LogEnabled(level)) return;
  std::shared_ptr<LogLimiter> limiter;
  {
    LogState& s = State();
    std::string full_key = component_;
    full_key.push_back('\0');
    full_key.append(key);
    std::lock_guard lock(s.limiters_mu);
    auto it = s.limiters.find(full_key);
    if (it != s.limiters.end()) {
      limiter = it->second;
    } else if (s.limiters.size() < kMaxLimiterKeys) {
      limiter = std::make_shared<LogLimiter>(interval);
      s.limiters.emplace(std::move(full_key), limiter);
    }
  }
  uint64_t suppressed = 0;
  if (limiter && !limiter->Allow(&suppressed)) return;
  if (suppressed > 0) {
    const Field extra("suppressed", suppressed);
    Emit(BuildLine(level, component_, msg, context_, fields, &extra));
  } else {
    Emit(BuildLine(level, component_, msg, context_, fields, nullptr));
  }
}

}  // namespace converge
