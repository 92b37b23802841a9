// Declarative, typed configuration for Converge executables.
//
// The program declares every key once (name, type, default, description, env var, secret flag);
// Load() then reads, lowest to highest precedence:
//   1. built-in defaults,
//   2. a config file (--config=<path>, else $CONVERGE_CONFIG, else ConfigInputs::default_file),
//   3. environment variables (one declared variable per key; an empty variable counts as unset),
//   4. command-line flags: --key=value or --key value (a bool flag alone, --key, means true).
//
//   ConfigSchema schema("converge-relay", "Moves outbox rows to the broker.");
//   auto db_url = schema.String("database.url", "", "PostgreSQL connection URL")
//                     .Env("CONVERGE_PG_URL").Secret().Required().key();
//   auto batch = schema.Int("relay.batch_size", 100, "Rows claimed per transaction")
//                    .Range(1, 10000).key();
//   auto poll = schema.Duration("relay.poll_interval", std::chrono::milliseconds(500),
//                               "Sleep when the outbox is empty").key();
//   schema.PassThrough("kafka.", "librdkafka properties, passed verbatim");
//   CONVERGE_ASSIGN_OR_RETURN(Config cfg, schema.Load(ConfigInputs::FromMain(argc, argv)));
//   int64_t n = cfg.Get(batch);
//   std::map<std::string, std::string> rd = cfg.PassThrough("kafka.");  // "acks" → "all"
//
// Config file syntax (ParseConfigText):
//   # comment                         blank lines and lines starting with # are ignored
//   [relay]                           prefixes the keys below with "relay."; [] clears it
//   batch_size = 200                  → relay.batch_size
//   kafka.bootstrap.servers = k1:9092 dotted keys as they are
//   name = "two words # not a comment" double quotes: \" \\ \n \r \t \xHH escapes;
//                                     'single' is literal
//   timeout = 5s  # trailing comment  in an unquoted value, whitespace followed by # starts a
//                                     comment; a # not preceded by whitespace is kept
// A key may appear once per file.
//
// Types: string; int (optional range); duration (500ms, 5s, 2m, 1h, 1m30s, 1.5s; millisecond
// resolution, a bare number is rejected except 0); bool (true/false, yes/no, on/off, 1/0);
// enum (one of a declared list); bytes (1048576, 64KiB, 1MiB, 1GiB, 10MB: KB/MB/GB are powers
// of 1000, KiB/MiB/GiB of 1024).
//
// Pass-through prefixes: keys under a declared prefix (e.g. "kafka.") that are not declared
// themselves are accepted verbatim and collected, prefix stripped, by PassThrough(prefix) for
// librdkafka or Paho. Declared keys under the prefix are included too (with their effective
// value, when non-empty), so declare keys you want an env var for (kafka.sasl.password) as
// strings or ints in the unit the library expects.
//
// Errors: Load returns InvalidArgument listing every problem; each names the key and source,
// the value (never for a secret) and what was expected; an unknown key gets "did you mean".
// A bad declaration (duplicate name, default outside the range) is reported as Internal.
//
// Thread safety: ConfigSchema is built by one thread, then Load/HelpText/MarkdownReference may
// be called concurrently. Config is an immutable value, safe to share.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "converge/common/status.h"

namespace converge {

enum class ConfigType { kString, kInt, kDuration, kBool, kEnum, kBytes };

class Config;
class ConfigSchema;
template <typename T>
class KeyBuilder;

// A typed handle to a declared key; Config::Get(key) returns its value without a string lookup.
// T is std::string (string, enum), int64_t (int), std::chrono::milliseconds (duration), bool,
// or uint64_t (bytes).
template <typename T>
class ConfigKey {
 public:
  const std::string& name() const { return name_; }

 private:
  friend class ConfigSchema;
  friend class Config;
  friend class KeyBuilder<T>;
  ConfigKey(size_t index, std::string name) : index_(index), name_(std::move(name)) {}
  size_t index_;
  std::string name_;
};

// Returned by the ConfigSchema declaration methods to add optional attributes.
template <typename T>
class KeyBuilder {
 public:
  // The environment variable that sets this key.
  KeyBuilder& Env(std::string variable);
  // Never printed: help shows no default, dumps and errors show *** / <redacted>.
  KeyBuilder& Secret();
  // Load fails unless a file, env var or flag sets the key.
  KeyBuilder& Required();
  // Inclusive bounds, for int, duration and bytes keys.
  KeyBuilder& Range(T min,
                    T max) requires(!std::is_same_v<T, std::string> && !std::is_same_v<T, bool>);
  ConfigKey<T> key() const;
  operator ConfigKey<T>() const { return key(); }  // NOLINT: implicit by design

 private:
  friend class ConfigSchema;
  KeyBuilder(ConfigSchema* schema, size_t index) : schema_(schema), index_(index) {}
  ConfigSchema* schema_;
  size_t index_;
};

// What Load reads. Tests fill it directly; executables use FromMain.
struct ConfigInputs {
  // Command-line arguments without the program name.
  std::vector<std::string> args;
  // Looks up an environment variable: nullopt when unset. Null: the process environment.
  std::function<std::optional<std::string>(const std::string& name)> env;
  // The config file used when neither --config nor the config-file env var names one. Unlike
  // an explicitly named file, it may be missing. Empty: none.
  std::string default_file;

  static ConfigInputs FromMain(int argc, char** argv);
};

// One `key = value` line of a config file, after section prefixing and unquoting.
struct ConfigFileEntry {
  std::string key;
  std::string value;
  int line = 0;
};

// Parses config file text. `origin` (a path) prefixes error messages: "relay.conf:7: ...".
// Errors never quote values (a malformed line may hold a secret).
Result<std::vector<ConfigFileEntry>> ParseConfigText(std::string_view text,
                                                     std::string_view origin);

// Value parsers used by Load, public for tools and tests.
Result<std::chrono::milliseconds> ParseDuration(std::string_view text);
Result<uint64_t> ParseBytes(std::string_view text);
Result<bool> ParseBool(std::string_view text);
// Canonical text: 500ms, 5s, 2m, 1h; 1MiB, 64KiB, 1000 (plain bytes when not a KiB multiple).
std::string FormatDuration(std::chrono::milliseconds d);
std::string FormatBytes(uint64_t bytes);

// The effective configuration: immutable, cheap to copy.
class Config {
 public:
  template <typename T>
  const T& Get(const ConfigKey<T>& key) const;

  // Effective value of a declared or pass-through key as text (secrets included: for wiring,
  // never for printing). NotFound for a key that is neither.
  Result<std::string> Text(std::string_view name) const;
  // True when a file, env var or flag set the key (not only its default).
  bool IsSet(std::string_view name) const;
  // "default", "file relay.conf:7", "env CONVERGE_PG_URL" or "flag --relay.batch_size".
  std::string SourceOf(std::string_view name) const;

  // Keys under `prefix` ("kafka."), with the prefix stripped, for librdkafka/Paho.
  std::map<std::string, std::string> PassThrough(std::string_view prefix) const;

  // Arguments that are not flags (and everything after "--"), in order.
  const std::vector<std::string>& positional() const;
  // --help/-h, --version, --check-config were given. With --help or --version, Load succeeds
  // even if the rest of the configuration is invalid, so that help can always be printed.
  bool help_requested() const;
  bool version_requested() const;
  bool check_config_requested() const;
  // The config file that was read; empty if none.
  const std::string& config_file() const;

  // The effective configuration as config-file text, one key per line with its source as a
  // comment, secrets as ***. For --check-config.
  std::string DumpEffective() const;

 private:
  friend class ConfigSchema;
  struct Impl;
  explicit Config(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  // Abort (a wiring bug) when the key is not this Config's key of that type.
  const std::string& StringAt(size_t index, const std::string& name) const;
  const int64_t& IntAt(size_t index, const std::string& name) const;
  const std::chrono::milliseconds& DurationAt(size_t index, const std::string& name) const;
  const bool& BoolAt(size_t index, const std::string& name) const;
  const uint64_t& BytesAt(size_t index, const std::string& name) const;

  std::shared_ptr<const Impl> impl_;
};

class ConfigSchema {
 public:
  // `program` names the executable in help; `summary` is one sentence about it.
  ConfigSchema(std::string program, std::string summary);
  ~ConfigSchema();
  ConfigSchema(const ConfigSchema&) = delete;
  ConfigSchema& operator=(const ConfigSchema&) = delete;

  // Key names are lower-case [a-z0-9_.-], dotted; the part before the first dot is the section
  // that groups the key in help and docs.
  KeyBuilder<std::string> String(std::string name, std::string default_value,
                                 std::string description);
  KeyBuilder<int64_t> Int(std::string name, int64_t default_value, std::string description);
  KeyBuilder<std::chrono::milliseconds> Duration(std::string name,
                                                 std::chrono::milliseconds default_value,
                                                 std::string description);
  KeyBuilder<bool> Bool(std::string name, bool default_value, std::string description);
  KeyBuilder<std::string> Enum(std::string name, std::string default_value,
                               std::vector<std::string> values, std::string description);
  KeyBuilder<uint64_t> Bytes(std::string name, uint64_t default_value, std::string description);

  // Accept and collect every key under `prefix` (must end with '.').
  void PassThrough(std::string prefix, std::string description);
  // The env var that names the config file. Default CONVERGE_CONFIG; empty disables it.
  void ConfigFileEnv(std::string variable);

  Result<Config> Load(const ConfigInputs& inputs) const;

  // Text for --help: usage, sources and precedence, keys grouped by section with type,
  // default and env var.
  std::string HelpText() const;
  // The same reference as Markdown tables (docs/configuration.md is generated from this).
  std::string MarkdownReference() const;

 private:
  template <typename T>
  friend class KeyBuilder;
  struct Impl;
  size_t Declare(std::string name, ConfigType type, std::string default_text,
                 std::string description, std::vector<std::string> enum_values);
  void SetEnv(size_t index, std::string variable);
  void SetSecret(size_t index);
  void SetRequired(size_t index);
  void SetRange(size_t index, int64_t min, int64_t max);
  const std::string& NameAt(size_t index) const;

  std::unique_ptr<Impl> impl_;
};

// ---- template definitions ----

template <typename T>
KeyBuilder<T>& KeyBuilder<T>::Env(std::string variable) {
  schema_->SetEnv(index_, std::move(variable));
  return *this;
}
template <typename T>
KeyBuilder<T>& KeyBuilder<T>::Secret() {
  schema_->SetSecret(index_);
  return *this;
}
template <typename T>
KeyBuilder<T>& KeyBuilder<T>::Required() {
  schema_->SetRequired(index_);
  return *this;
}
template <typename T>
KeyBuilder<T>& KeyBuilder<T>::Range(T min, T max) requires(!std::is_same_v<T, std::string> &&
                                                           !std::is_same_v<T, bool>) {
  if constexpr (std::is_same_v<T, std::chrono::milliseconds>) {
    schema_->SetRange(index_, min.count(), max.count());
  } else {
    schema_->SetRange(index_, static_cast<int64_t>(min), static_cast<int64_t>(max));
  }
  return *this;
}
template <typename T>
ConfigKey<T> KeyBuilder<T>::key() const {
  return ConfigKey<T>(index_, schema_->NameAt(index_));
}

template <typename T>
const T& Config::Get(const ConfigKey<T>& key) const {
  if constexpr (std::is_same_v<T, std::string>) {
    return StringAt(key.index_, key.name_);
  } else if constexpr (std::is_same_v<T, int64_t>) {
    return IntAt(key.index_, key.name_);
  } else if constexpr (std::is_same_v<T, std::chrono::milliseconds>) {
    return DurationAt(key.index_, key.name_);
  } else if constexpr (std::is_same_v<T, bool>) {
    return BoolAt(key.index_, key.name_);
  } else {
    static_assert(std::is_same_v<T, uint64_t>, "unsupported config key type");
    return BytesAt(key.index_, key.name_);
  }
}

}  // namespace converge
