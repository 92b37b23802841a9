// The convergectl command framework.
//
// Each command group lives in its own file under reconciler/src/ctl/ (dlq.cc, keys.cc,
// status.cc, flows.cc, ...) and registers its commands at static-initialisation time:
//
//   namespace converge::ctl {
//   namespace {
//   int DlqShow(Invocation& inv) { ... }
//   const Registration kShow({.path = "dlq show", .args = "ID", .summary = "...",
//                             .min_args = 1, .max_args = 1, .run = DlqShow});
//   }  // namespace
//   }  // namespace converge::ctl
//
// reconciler/CMakeLists.txt compiles every src/ctl/*.cc into convergectl (an OBJECT library,
// so no registration is dropped by the linker); a new group needs no CMake or main() edit.
//
// The framework parses the command line (common options plus the command's own), connects to
// PostgreSQL and checks the converge schema before the command runs (exit 3 / 5 with a clear
// message), maps Status codes to exit codes, and offers the table and JSON printers, the
// repair transaction (--dry-run rolls back) and the audit row.
//
// Thread safety: single-threaded CLI; nothing here is shared between threads.
#pragma once

#include <pqxx/pqxx>

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "converge/common/status.h"

namespace converge::ctl {

// Exit codes, documented in docs/operations.md. Scripts rely on them: never renumber.
enum ExitCode : int {
  kExitOk = 0,           // success (a dry run that would succeed, too)
  kExitFailed = 1,       // the operation failed or was refused (e.g. unpark of a dead head)
  kExitUsage = 2,        // bad command line: unknown command/option, missing --reason ...
  kExitUnavailable = 3,  // the database cannot be reached (bad URL, server down, bad password)
  kExitNotFound = 4,     // an id, key or flow given on the command line does not exist
  kExitSchema = 5,       // the converge schema is missing or too old: run convergectl migrate
};

enum class OutputFormat { kTable, kJson };

// An option a command accepts beyond the common ones.
struct OptionSpec {
  std::string name;        // without dashes: "topic"
  std::string value_name;  // "TOPIC"; empty = a flag without value
  std::string help;
};

class Invocation;

struct CommandSpec {
  // Words that select the command: "dlq list", "status", "migrate".
  std::string path;
  // Positional arguments for the usage line: "ID...", "TOPIC KEY".
  std::string args;
  std::string summary;
  std::vector<OptionSpec> options;
  // A repair changes data: it gets --dry-run, --reason (required) and --actor, and must write
  // its changes and its audit row through Invocation::Repair.
  bool repair = false;
  // The framework connects and checks the schema before run(); false for migrate/version.
  bool needs_db = true;
  // The lowest converge schema version the command works with (older = exit 5).
  int min_schema = 1;
  // Positional argument count; max_args < 0 = unlimited.
  int min_args = 0;
  int max_args = 0;
  // Returns the process exit code.
  std::function<int(Invocation&)> run;
};

// All registered commands, ordered by path.
class Registry {
 public:
  static Registry& Get();
  void Add(CommandSpec spec);
  // The command named by the leading words of `words` (longest match); sets *consumed.
  const CommandSpec* Find(const std::vector<std::string>& words, size_t* consumed) const;
  const std::map<std::string, CommandSpec>& commands() const { return commands_; }

 private:
  std::map<std::string, CommandSpec> commands_;
};

// Registers a command from a file-scope constant.
struct Registration {
  explicit Registration(CommandSpec spec) { Registry::Get().Add(std::move(spec)); }
};

// What one run of a command sees: its arguments, the common options, the database, the
// output streams.
class Invocation {
 public:
  Invocation(const CommandSpec& spec, std::ostream& out, std::ostream& err)
      : spec_(spec), out_(out), err_(err) {}

  const CommandSpec& spec() const { return spec_; }
  const std::vector<std::string>& args() const { return args_; }
  std::ostream& out() { return out_; }
  std::ostream& err() { return err_; }

  // Common options.
  const std::string& db_url() const { return db_url_; }
  OutputFormat output() const { return output_; }
  bool json() const { return output_ == OutputFormat::kJson; }
  bool dry_run() const { return dry_run_; }
  const std::string& reason() const { return reason_; }
  const std::string& actor() const { return actor_; }

  // Command-specific options (by name without dashes). A flag has the value "".
  bool Has(std::string_view name) const { return options_.count(std::string(name)) > 0; }
  std::optional<std::string> Get(std::string_view name) const;
  // Typed accessors; a bad value is a usage error naming the option (InvalidArgument).
  Result<std::optional<int64_t>> GetInt(std::string_view name, int64_t min, int64_t max) const;
  Result<std::optional<int64_t>> GetDurationSeconds(std::string_view name) const;

  // The open connection (needs_db commands only; valid inside run()).
  pqxx::connection& db() { return *conn_; }
  // The schema version found at connect time.
  int schema_version() const { return schema_version_; }

  // Runs `fn(tx)` in one transaction. A normal run commits; --dry-run rolls back, so a dry run
  // executes every check and statement of the real repair and changes nothing (audit rows are
  // not written either: see docs/operations.md). A Status error rolls back and is returned.
  Status Repair(const std::function<Status(pqxx::work&)>& fn);

  // Writes the converge.audit_log row for this repair inside `tx`: actor, action ("dlq.replay"),
  // target ("dead_letter:42"), --reason, details (a JSON object text).
  void Audit(pqxx::transaction_base& tx, std::string_view action, std::string_view target,
             const std::string& details_json = "{}");

  // Prints "convergectl <path>: <message>" on stderr and returns the exit code for `st`:
  // kNotFound 4, kUnavailable 3, kInvalidArgument 2, anything else 1.
  int Fail(const Status& st);
  // Prints a usage error and the command's usage line; returns kExitUsage.
  int UsageError(std::string_view message);

  // ---- for the framework (main) ----
  // Parses options and positionals after the command words. Returns kExitOk or kExitUsage
  // (message already printed); *help is set when --help was given.
  int Parse(const std::vector<std::string>& argv, bool* help);
  // Connects and checks the schema; returns kExitOk or the exit code (message printed).
  int Open();

 private:
  const CommandSpec& spec_;
  std::ostream& out_;
  std::ostream& err_;
  std::vector<std::string> args_;
  std::map<std::string, std::string> options_;
  std::string db_url_;
  OutputFormat output_ = OutputFormat::kTable;
  bool dry_run_ = false;
  std::string reason_;
  std::string actor_;
  std::unique_ptr<pqxx::connection> conn_;
  int schema_version_ = 0;
};

// Entry point used by main(): dispatches argv (without the program name) and returns the exit
// code. `out`/`err` are the streams to write to.
int RunMain(const std::vector<std::string>& argv, std::ostream& out, std::ostream& err);

// Prints the usage of one command.
void PrintCommandUsage(const CommandSpec& spec, std::ostream& os);

// "$USER@hostname" (or "unknown@hostname").
std::string DefaultActor();

// Parses "90s", "15m", "2h", "7d", "1h30m" or plain seconds "120". InvalidArgument otherwise.
Result<int64_t> ParseDurationSeconds(std::string_view text);

// ---- output ------------------------------------------------------------------------------

// An aligned text table for people. Cells are sanitized (control characters shown as '?') and
// cut to `max_width` characters with "…" so one bad value cannot break the layout.
class Table {
 public:
  explicit Table(std::vector<std::string> headers, size_t max_width = 60)
      : headers_(std::move(headers)), max_width_(max_width) {}
  void AddRow(std::vector<std::string> cells);
  size_t size() const { return rows_.size(); }
  void Print(std::ostream& os) const;

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
  size_t max_width_;
};

// A small streaming JSON writer producing one compact document. Commas are handled by the
// writer; strings go through common/json.h's escaper (always valid UTF-8 JSON).
//
//   JsonWriter j; j.BeginObject(); j.Key("count"); j.Int(3); j.EndObject(); j.str();
class JsonWriter {
 public:
  JsonWriter& BeginObject();
  JsonWriter& EndObject();
  JsonWriter& BeginArray();
  JsonWriter& EndArray();
  JsonWriter& Key(std::string_view key);
  JsonWriter& String(std::string_view value);
  JsonWriter& Int(int64_t value);
  JsonWriter& Double(double value);
  JsonWriter& Bool(bool value);
  JsonWriter& Null();
  // Inserts already-valid JSON text (e.g. a jsonb column read as text).
  JsonWriter& Raw(std::string_view json);
  // Shorthands: a field from a nullable database value (NULL -> null).
  JsonWriter& Field(std::string_view key, const pqxx::field& f);
  JsonWriter& FieldInt(std::string_view key, const pqxx::field& f);
  const std::string& str() const { return out_; }

 private:
  void Separate();
  std::string out_;
  std::vector<bool> first_;  // per open container: no element written yet
  bool after_key_ = false;
};

// A nullable text field for a table cell ("-" for NULL).
std::string Cell(const pqxx::field& f);

// Payload bytes for people: the text when it is valid UTF-8 without control characters
// (tab/newline allowed), else hex. *encoding is set to "utf-8" or "hex".
std::string PayloadForDisplay(std::string_view bytes, std::string* encoding);
std::string Base64(std::string_view bytes);

// "45s", "3m12s", "2h5m", "3d4h": an age for people.
std::string FormatAge(int64_t seconds);

// SQL text formatting a timestamptz column as RFC 3339 UTC with milliseconds, e.g.
// SqlTime("failed_at") for a SELECT list. `column` must be a literal column name.
std::string SqlTime(std::string_view column);

// Reads a bytea field into raw bytes.
std::string Bytes(const pqxx::field& f);

}  // namespace converge::ctl
