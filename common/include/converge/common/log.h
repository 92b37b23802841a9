// Structured logging: one line per event, logfmt by default, JSON lines optionally.
//
//   ts=2026-11-22T19:00:00.123Z level=info component=relay msg="claimed batch" rows=120 slot=3
//   {"ts":"2026-11-22T19:00:00.123Z","level":"info","component":"relay","msg":"claimed batch",...}
//
//   Logger log("relay");
//   log.Info("claimed batch", {{"rows", 120}, {"slot", 3}});
//   Log(Level::kWarn, "config file not found", {{"path", path}});   // no component
//
// Secrets are never written: every string (message and field values) passes through Redact(),
// which masks URL passwords and `password=...`-style pairs, and a field whose key names a
// secret (IsSecretKey: password, secret, token, sasl.password, ssl.key, ...) is written as ***.
//
// Repeated messages (a broker outage, a poison row retried in a loop) are limited with
// Logger::LogEvery(key, interval, ...) or a per-call-site LogLimiter; the next line that passes
// carries `suppressed=N`, the number of similar lines dropped since the previous one.
//
// Configuration (level, format, sink, clock) is process-wide and set at startup with
// ConfigureLogging(); the minimum level may change at any time (SetMinLevel).
//
// Thread safety: every function and Logger method may be called from any thread. A line is
// formatted by the calling thread and handed to the sink under a mutex, so lines never
// interleave. The sink must not log.
#pragma once

#include <chrono>
#include <concepts>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "converge/common/clock.h"
#include "converge/common/status.h"

namespace converge {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

enum class LogFormat { kLogfmt, kJson };

// "debug", "info", "warn", "error".
std::string_view LevelName(Level level);
// Accepts the names above (case-insensitive) and "warning".
Result<Level> ParseLevel(std::string_view name);
// Accepts "logfmt" and "json".
Result<LogFormat> ParseLogFormat(std::string_view name);

// One key/value pair of a log line. Values are strings, integers, doubles or bools.
class Field {
 public:
  using Value = std::variant<std::string, int64_t, uint64_t, double, bool>;

  Field(std::string_view key, const char* value) : key_(key), value_(std::string(value)) {}
  Field(std::string_view key, std::string_view value) : key_(key), value_(std::string(value)) {}
  Field(std::string_view key, const std::string& value) : key_(key), value_(value) {}
  Field(std::string_view key, std::string&& value) : key_(key), value_(std::move(value)) {}
  Field(std::string_view key, bool value) : key_(key), value_(value) {}
  template <std::signed_integral T>
  requires(!std::same_as<T, bool>) Field(std::string_view key, T value)
      : key_(key), value_(static_cast<int64_t>(value)) {}
  template <std::unsigned_integral T>
  requires(!std::same_as<T, bool>) Field(std::string_view key, T value)
      : key_(key), value_(static_cast<uint64_t>(value)) {}
  template <std::floating_point T>
  Field(std::string_view key, T value) : key_(key), value_(static_cast<double>(value)) {}
  // A duration is written in milliseconds, as a double: {"took", d} → took_ms=12.5.
  template <typename Rep, typename Period>
  Field(std::string_view key, std::chrono::duration<Rep, Period> d)
      : key_(std::string(key) + "_ms"),
        value_(std::chrono::duration<double, std::milli>(d).count()) {}
  // A Status is written as its ToString() ("UNAVAILABLE: connection refused").
  Field(std::string_view key, const Status& status) : key_(key), value_(status.ToString()) {}

  const std::string& key() const { return key_; }
  const Value& value() const { return value_; }

 private:
  std::string key_;
  Value value_;
};

// Where formatted lines go. Receives one line without the trailing newline.
using LogSink = std::function<void(std::string_view line)>;

struct LogOptions {
  // Lines below this level are dropped before formatting.
  Level min_level = Level::kInfo;
  // logfmt for people and grep, JSON lines for log pipelines.
  LogFormat format = LogFormat::kLogfmt;
  // Empty: write to stderr (one write per line). Tests capture lines here.
  LogSink sink;
  // Source of the `ts` field and of LogEvery's intervals. Null: the system clock. Must outlive
  // every log call (until the next ConfigureLogging).
  const Clock* clock = nullptr;
};

// Replaces the process-wide logging configuration. Call at startup (and in tests).
void ConfigureLogging(LogOptions options);
// Restores the defaults: info, logfmt, stderr, system clock.
void ResetLogging();
void SetMinLevel(Level level);
Level MinLevel();
inline bool LogEnabled(Level level) { return level >= MinLevel(); }

// True when a key names a secret: it contains (case-insensitively) password, passwd, secret,
// token, credential, api_key/apikey, or ssl.key (but not ssl.key.location, a file path).
bool IsSecretKey(std::string_view key);

// Masks secrets inside free text:
//   postgresql://u:secret@h/db   → postgresql://u:***@h/db   (any scheme://user:pass@host)
//   host=h password=secret       → host=h password=***        (libpq keywords, also quoted)
//   ...?sslmode=require&password=x → ...&password=***
// Any `key=value` whose key IsSecretKey() has its value masked.
std::string Redact(std::string_view text);

// Writes one line without a component. Fields are appended in order.
void Log(Level level, std::string_view msg, std::initializer_list<Field> fields = {});

// Formats one line exactly as Log would write it (ts from the configured clock), without
// writing it. For tests and for tools that print log-style lines.
std::string FormatLogLine(Level level, std::string_view component, std::string_view msg,
                          const std::vector<Field>& context, std::initializer_list<Field> fields);

// A per-call-site rate limiter: at most one line per interval; the line that passes learns how
// many were dropped before it.
//
//   static LogLimiter limiter(std::chrono::seconds(10));
//   if (uint64_t dropped; limiter.Allow(&dropped)) log.Warn("publish failed", {...});
//
// Thread-safe. Uses the logging clock unless one is given.
class LogLimiter {
 public:
  explicit LogLimiter(std::chrono::nanoseconds interval, const Clock* clock = nullptr);
  // True when a line may be written now; then *suppressed (if given) is set to the number of
  // calls refused since the last allowed one, and the counter restarts.
  bool Allow(uint64_t* suppressed = nullptr);

 private:
  std::mutex mu_;
  const std::chrono::nanoseconds interval_;
  const Clock* clock_;
  bool has_allowed_ = false;
  std::chrono::steady_clock::time_point last_allowed_;
  uint64_t suppressed_ = 0;
};

// A component's logger: every line carries `component=<name>` and the context fields.
// Cheap to copy; values, no registration.
class Logger {
 public:
  explicit Logger(std::string component, std::vector<Field> context = {});

  // A logger with extra context fields: log.With({{"slot", 3}}).Info(...).
  Logger With(std::initializer_list<Field> fields) const;

  void Log(Level level, std::string_view msg, std::initializer_list<Field> fields = {}) const;
  void Debug(std::string_view msg, std::initializer_list<Field> fields = {}) const {
    Log(Level::kDebug, msg, fields);
  }
  void Info(std::string_view msg, std::initializer_list<Field> fields = {}) const {
    Log(Level::kInfo, msg, fields);
  }
  void Warn(std::string_view msg, std::initializer_list<Field> fields = {}) const {
    Log(Level::kWarn, msg, fields);
  }
  void Error(std::string_view msg, std::initializer_list<Field> fields = {}) const {
    Log(Level::kError, msg, fields);
  }

  // Writes at most one line per `interval` for this (component, key); the line written after
  // a quiet period carries suppressed=N. Keys name a call site or a failure class
  // ("publish_failed"), never a per-message value: each distinct key is remembered for the
  // life of the process (at most 4096; beyond that lines are written unlimited).
  void LogEvery(std::string_view key, std::chrono::nanoseconds interval, Level level,
                std::string_view msg, std::initializer_list<Field> fields = {}) const;

  const std::string& component() const { return component_; }

 private:
  std::string component_;
  std::vector<Field> context_;
};

}  // namespace converge
