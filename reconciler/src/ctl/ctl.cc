#include "ctl.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <iostream>
#include <sstream>

#include "converge/common/json.h"
#include "converge/common/log.h"
#include "converge/common/utf8.h"
#include "converge/schemas/migrate.h"
#include "converge/schemas/pg.h"

namespace converge::ctl {

// ---- registry ----------------------------------------------------------------------------

Registry& Registry::Get() {
  static Registry* registry = new Registry();  // never destroyed: used from static init
  return *registry;
}

void Registry::Add(CommandSpec spec) {
  std::string path = spec.path;
  commands_[path] = std::move(spec);
}

const CommandSpec* Registry::Find(const std::vector<std::string>& words, size_t* consumed) const {
  for (size_t n = std::min<size_t>(words.size(), 3); n > 0; --n) {
    std::string path;
    for (size_t i = 0; i < n; ++i) path += (i ? " " : "") + words[i];
    auto it = commands_.find(path);
    if (it != commands_.end()) {
      *consumed = n;
      return &it->second;
    }
  }
  return nullptr;
}

// ---- helpers -----------------------------------------------------------------------------

std::string DefaultActor() {
  const char* user = std::getenv("USER");
  if (user == nullptr || *user == '\0') user = std::getenv("LOGNAME");
  char host[256] = {0};
  if (gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  return std::string(user && *user ? user : "unknown") + "@" + (host[0] ? host : "localhost");
}

Result<int64_t> ParseDurationSeconds(std::string_view text) {
  auto bad = [&] {
    return Status::InvalidArgument("\"" + std::string(text) +
                                   "\" is not a duration (use e.g. 90s, 15m, 2h, 7d, 1h30m)");
  };
  if (text.empty()) return bad();
  int64_t total = 0;
  size_t i = 0;
  while (i < text.size()) {
    int64_t n = 0;
    auto [p, ec] = std::from_chars(text.data() + i, text.data() + text.size(), n);
    if (ec != std::errc() || n < 0) return bad();
    i = static_cast<size_t>(p - text.data());
    int64_t unit = 1;
    if (i < text.size()) {
      switch (text[i]) {
        case 's':
          unit = 1;
          break;
        case 'm':
          unit = 60;
          break;
        case 'h':
          unit = 3600;
          break;
        case 'd':
          unit = 86400;
          break;
        default:
          return bad();
      }
      ++i;
    } else if (total != 0) {
      return bad();  // "1h30" is ambiguous
    }
    if (n > (int64_t{1} << 40) / unit) return bad();
    total += n * unit;
  }
  return total;
}

std::optional<std::string> Invocation::Get(std::string_view name) const {
  auto it = options_.find(std::string(name));
  if (it == options_.end()) return std::nullopt;
  return it->second;
}

Result<std::optional<int64_t>> Invocation::GetInt(std::string_view name, int64_t min,
                                                  int64_t max) const {
  auto v = Get(name);
  if (!v) return std::optional<int64_t>();
  int64_t n = 0;
  auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
  if (ec != std::errc() || p != v->data() + v->size() || n < min || n > max)
    return Status::InvalidArgument("--" + std::string(name) + " must be an integer in [" +
                                   std::to_string(min) + ", " + std::to_string(max) + "], got \"" +
                                   *v + "\"");
  return std::optional<int64_t>(n);
}

Result<std::optional<int64_t>> Invocation::GetDurationSeconds(std::string_view name) const {
  auto v = Get(name);
  if (!v) return std::optional<int64_t>();
  auto d = ParseDurationSeconds(*v);
  if (!d.ok())
    return Status::InvalidArgument("--" + std::string(name) + ": " + d.status().message());
  return std::optional<int64_t>(*d);
}

// ---- invocation --------------------------------------------------------------------------

namespace {

struct CommonOption {
  const char* name;
  const char* value_name;
  const char* help;
  bool repair_only;
};

constexpr CommonOption kCommonOptions[] = {
    {"db", "URL", "PostgreSQL URL (default $CONVERGE_PG_URL)", false},
    {"output", "table|json", "output format (default table)", false},
    {"dry-run", "", "show what would change, change nothing", true},
    {"reason", "TEXT", "why (required; written to converge.audit_log)", true},
    {"actor", "NAME", "who (default $USER@hostname)", true},
};

}  // namespace

void PrintCommandUsage(const CommandSpec& spec, std::ostream& os) {
  os << "usage: convergectl " << spec.path;
  if (!spec.args.empty()) os << " " << spec.args;
  os << " [options]\n  " << spec.summary << "\n\noptions:\n";
  auto line = [&](const std::string& name, const std::string& value, const std::string& help) {
    std::string left = "  --" + name + (value.empty() ? "" : " " + value);
    if (left.size() < 28)
      left.resize(28, ' ');
    else
      left += "  ";
    os << left << help << "\n";
  };
  for (const auto& o : spec.options) line(o.name, o.value_name, o.help);
  for (const auto& c : kCommonOptions) {
    if (c.repair_only && !spec.repair) continue;
    if (!spec.needs_db && std::string(c.name) != "db" && !c.repair_only) continue;
    line(c.name, c.value_name, c.help);
  }
}

int Invocation::UsageError(std::string_view message) {
  err_ << "convergectl " << spec_.path << ": " << message << "\n";
  PrintCommandUsage(spec_, err_);
  return kExitUsage;
}

int Invocation::Fail(const Status& st) {
  err_ << "convergectl " << spec_.path << ": " << Redact(st.message()) << "\n";
  switch (st.code()) {
    case StatusCode::kNotFound:
      return kExitNotFound;
    case StatusCode::kUnavailable:
      return kExitUnavailable;
    case StatusCode::kInvalidArgument:
      return kExitUsage;
    default:
      return kExitFailed;
  }
}

int Invocation::Parse(const std::vector<std::string>& argv, bool* help) {
  *help = false;
  auto find_value_name = [&](const std::string& name, bool* known) -> std::string {
    *known = false;
    for (const auto& o : spec_.options)
      if (o.name == name) {
        *known = true;
        return o.value_name;
      }
    for (const auto& c : kCommonOptions) {
      if (name != c.name || (c.repair_only && !spec_.repair)) continue;
      *known = true;
      return c.value_name;
    }
    return "";
  };
  std::string output = "table";
  bool only_positional = false;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (only_positional || a.size() < 2 || a.rfind("--", 0) != 0) {
      if (a == "-h" && !only_positional) {
        *help = true;
        return kExitOk;
      }
      if (!only_positional && a.size() > 1 && a[0] == '-')
        return UsageError("unknown option " + a + " (options start with --)");
      args_.push_back(a);
      continue;
    }
    if (a == "--") {
      only_positional = true;
      continue;
    }
    if (a == "--help") {
      *help = true;
      return kExitOk;
    }
    std::string name = a.substr(2), value;
    bool has_inline = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
      has_inline = true;
    }
    bool known = false;
    const std::string value_name = find_value_name(name, &known);
    if (!known) return UsageError("unknown option --" + name);
    if (value_name.empty()) {
      if (has_inline) return UsageError("--" + name + " takes no value");
    } else if (!has_inline) {
      if (i + 1 >= argv.size())
        return UsageError("--" + name + " needs a value (" + value_name + ")");
      value = argv[++i];
    }
    if (name == "db")
      db_url_ = value;
    else if (name == "output")
      output = value;
    else if (name == "dry-run")
      dry_run_ = true;
    else if (name == "reason")
      reason_ = value;
    else if (name == "actor")
      actor_ = value;
    else
      options_[name] = value;
  }
  if (output == "table")
    output_ = OutputFormat::kTable;
  else if (output == "json")
    output_ = OutputFormat::kJson;
  else
    return UsageError("--output must be table or json, got \"" + output + "\"");
  if (static_cast<int>(args_.size()) < spec_.min_args)
    return UsageError(args_.empty() ? "missing argument " + spec_.args
                                    : "too few arguments (expected " + spec_.args + ")");
  if (spec_.max_args >= 0 && static_cast<int>(args_.size()) > spec_.max_args)
    return UsageError("unexpected argument \"" + args_[spec_.max_args] + "\"");
  if (spec_.repair) {
    if (reason_.find_first_not_of(" \t\r\n") == std::string::npos)
      return UsageError(
          "--reason TEXT is required: every repair is recorded in converge.audit_log");
    if (actor_.empty()) actor_ = DefaultActor();
  }
  if (db_url_.empty())
    if (const char* env = std::getenv("CONVERGE_PG_URL")) db_url_ = env;
  return kExitOk;
}

int Invocation::Open() {
  if (db_url_.empty()) return UsageError("no database: pass --db URL or set CONVERGE_PG_URL");
  auto c = pg::Connect(db_url_);
  if (!c.ok()) {
    err_ << "convergectl " << spec_.path << ": " << Redact(c.status().message()) << "\n";
    return kExitUnavailable;
  }
  conn_ = std::move(c).value();
  try {
    // Visible in pg_stat_activity; a repair waiting behind a busy row gives up after 10 s
    // (lock_timeout, retried as a serialization failure) instead of hanging the operator.
    pqxx::nontransaction(*conn_).exec(
        "SELECT set_config('application_name', 'convergectl', false), "
        "set_config('lock_timeout', '10s', false)");
    pqxx::read_transaction tx(*conn_);
    auto r =
        tx.exec("SELECT to_regclass('converge.schema_migrations') IS NOT NULL, current_database()");
    const std::string dbname = r[0][1].as<std::string>();
    if (!r[0][0].as<bool>()) {
      err_ << "convergectl " << spec_.path << ": the converge schema is missing in database \""
           << dbname << "\": run convergectl migrate\n";
      return kExitSchema;
    }
    schema_version_ =
        tx.exec("SELECT coalesce(max(version), 0) FROM converge.schema_migrations")[0][0].as<int>();
    if (schema_version_ < spec_.min_schema) {
      err_ << "convergectl " << spec_.path << ": database \"" << dbname
           << "\" has converge schema version " << schema_version_ << ", this command needs "
           << spec_.min_schema << ": run convergectl migrate\n";
      return kExitSchema;
    }
  } catch (const std::exception& e) {
    return Fail(pg::StatusFromException(e).WithContext("schema check"));
  }
  return kExitOk;
}

Status Invocation::Repair(const std::function<Status(pqxx::work&)>& fn) {
  Status last;
  for (int attempt = 1; attempt <= 3; ++attempt) {
    try {
      pqxx::work tx(*conn_);
      last = fn(tx);
      if (!last.ok()) {
        tx.abort();
      } else if (dry_run_) {
        tx.abort();  // the dry run ran every statement; roll all of them back
      } else {
        tx.commit();
      }
    } catch (const std::exception& e) {
      last = pg::StatusFromException(e);
    }
    // Serialization failures and deadlocks: run the whole repair again.
    if (last.code() != StatusCode::kAborted) return last;
  }
  return last;
}

void Invocation::Audit(pqxx::transaction_base& tx, std::string_view action, std::string_view target,
                       const std::string& details_json) {
  if (dry_run_) return;  // dry runs are not audited: they change nothing, not even the log
  tx.exec_params(
      "INSERT INTO converge.audit_log (actor, action, target, reason, dry_run, details) "
      "VALUES ($1, $2, $3, $4, false, $5::jsonb)",
      actor_, std::string(action), std::string(target), reason_, details_json);
}

// ---- dispatch ----------------------------------------------------------------------------

namespace {

void PrintOverview(std::ostream& os) {
  os << "usage: convergectl <command> [options]\n\ncommands:\n";
  for (const auto& [path, spec] : Registry::Get().commands()) {
    std::string left = "  " + path + (spec.args.empty() ? "" : " " + spec.args);
    if (left.size() < 30)
      left.resize(30, ' ');
    else
      left += "  ";
    os << left << spec.summary << "\n";
  }
  os << "\n'convergectl <command> --help' lists a command's options. Exit codes: 0 ok, 1 failed,\n"
        "2 usage, 3 database unreachable, 4 not found, 5 schema missing or too old.\n";
}

}  // namespace

int RunMain(const std::vector<std::string>& argv, std::ostream& out, std::ostream& err) {
  if (argv.empty() || argv[0] == "help" || argv[0] == "--help" || argv[0] == "-h") {
    if (argv.size() > 1) {
      size_t n = 0;
      std::vector<std::string> rest(argv.begin() + 1, argv.end());
      if (const CommandSpec* spec = Registry::Get().Find(rest, &n)) {
        PrintCommandUsage(*spec, out);
        return kExitOk;
      }
    }
    PrintOverview(argv.empty() ? err : out);
    return argv.empty() ? kExitUsage : kExitOk;
  }
  size_t consumed = 0;
  const CommandSpec* spec = Registry::Get().Find(argv, &consumed);
  if (spec == nullptr) {
    // "convergectl dlq" alone or with an unknown verb: list that group's commands.
    std::string group = argv[0];
    bool any = false;
    for (const auto& [path, s] : Registry::Get().commands())
      if (path.rfind(group + " ", 0) == 0) any = true;
    if (any) {
      err << "convergectl " << group << ": "
          << (argv.size() > 1 ? "unknown command '" + argv[1] + "'" : "missing command")
          << "; one of:\n";
      for (const auto& [path, s] : Registry::Get().commands())
        if (path.rfind(group + " ", 0) == 0) err << "  " << path << " " << s.args << "\n";
      return kExitUsage;
    }
    err << "convergectl: unknown command '" << argv[0] << "'\n";
    PrintOverview(err);
    return kExitUsage;
  }
  Invocation inv(*spec, out, err);
  bool help = false;
  std::vector<std::string> rest(argv.begin() + static_cast<std::ptrdiff_t>(consumed), argv.end());
  if (int rc = inv.Parse(rest, &help); rc != kExitOk) return rc;
  if (help) {
    PrintCommandUsage(*spec, out);
    return kExitOk;
  }
  if (spec->needs_db)
    if (int rc = inv.Open(); rc != kExitOk) return rc;
  try {
    return spec->run(inv);
  } catch (const std::exception& e) {
    return inv.Fail(pg::StatusFromException(e));
  }
}

// ---- output ------------------------------------------------------------------------------

namespace {

// Replaces control characters and invalid UTF-8 so a cell is one safe line.
std::string SafeCell(std::string_view s, size_t max_width) {
  std::string out;
  out.reserve(s.size());
  if (!IsValidUtf8(s)) {
    for (char c : s) out.push_back(static_cast<unsigned char>(c) < 0x80 ? c : '?');
  } else {
    out.assign(s);
  }
  for (char& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  // Cut by code points.
  size_t cps = 0, i = 0;
  for (; i < out.size(); ++i) {
    if ((static_cast<unsigned char>(out[i]) & 0xC0) != 0x80) {
      if (cps == max_width) break;
      ++cps;
    }
  }
  if (i < out.size()) {
    // drop the last code point to make room for the ellipsis
    size_t j = i;
    do {
      --j;
    } while (j > 0 && (static_cast<unsigned char>(out[j]) & 0xC0) == 0x80);
    out.resize(j);
    out += "…";
  }
  return out;
}

size_t DisplayWidth(std::string_view s) {
  size_t n = 0;
  for (char c : s)
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
  return n;
}

}  // namespace

void Table::AddRow(std::vector<std::string> cells) {
  cells.resize(headers_.size());
  for (auto& c : cells) c = SafeCell(c, max_width_);
  rows_.push_back(std::move(cells));
}

void Table::Print(std::ostream& os) const {
  std::vector<size_t> w(headers_.size());
  for (size_t i = 0; i < headers_.size(); ++i) w[i] = DisplayWidth(headers_[i]);
  for (const auto& r : rows_)
    for (size_t i = 0; i < r.size(); ++i) w[i] = std::max(w[i], DisplayWidth(r[i]));
  auto line = [&](const std::vector<std::string>& cells) {
    std::string s;
    for (size_t i = 0; i < cells.size(); ++i) {
      s += cells[i];
      if (i + 1 < cells.size()) s += std::string(w[i] - DisplayWidth(cells[i]) + 2, ' ');
    }
    os << s << "\n";
  };
  line(headers_);
  for (const auto& r : rows_) line(r);
}

void JsonWriter::Separate() {
  if (after_key_) {
    after_key_ = false;
    return;
  }
  if (!first_.empty()) {
    if (!first_.back()) out_ += ',';
    first_.back() = false;
  }
}

JsonWriter& JsonWriter::BeginObject() {
  Separate();
  out_ += '{';
  first_.push_back(true);
  return *this;
}
JsonWriter& JsonWriter::EndObject() {
  out_ += '}';
  first_.pop_back();
  return *this;
}
JsonWriter& JsonWriter::BeginArray() {
  Separate();
  out_ += '[';
  first_.push_back(true);
  return *this;
}
JsonWriter& JsonWriter::EndArray() {
  out_ += ']';
  first_.pop_back();
  return *this;
}
JsonWriter& JsonWriter::Key(std::string_view key) {
  Separate();
  AppendJsonString(out_, key);
  out_ += ':';
  after_key_ = true;
  return *this;
}
JsonWriter& JsonWriter::String(std::string_view value) {
  Separate();
  AppendJsonString(out_, value);
  return *this;
}
JsonWriter& JsonWriter::Int(int64_t value) {
  Separate();
  out_ += std::to_string(value);
  return *this;
}
JsonWriter& JsonWriter::Double(double value) {
  Separate();
  std::ostringstream s;
  s << value;
  out_ += s.str();
  return *this;
}
JsonWriter& JsonWriter::Bool(bool value) {
  Separate();
  out_ += value ? "true" : "false";
  return *this;
}
JsonWriter& JsonWriter::Null() {
  Separate();
  out_ += "null";
  return *this;
}
JsonWriter& JsonWriter::Raw(std::string_view json) {
  Separate();
  out_ += json;
  return *this;
}
JsonWriter& JsonWriter::Field(std::string_view key, const pqxx::field& f) {
  Key(key);
  return f.is_null() ? Null() : String(f.c_str());
}
JsonWriter& JsonWriter::FieldInt(std::string_view key, const pqxx::field& f) {
  Key(key);
  return f.is_null() ? Null() : Int(f.as<int64_t>());
}

std::string FormatAge(int64_t seconds) {
  if (seconds < 0) seconds = 0;
  const int64_t d = seconds / 86400, h = seconds % 86400 / 3600, m = seconds % 3600 / 60,
                s = seconds % 60;
  if (d > 0) return std::to_string(d) + "d" + (h ? std::to_string(h) + "h" : "");
  if (h > 0) return std::to_string(h) + "h" + (m ? std::to_string(m) + "m" : "");
  if (m > 0) return std::to_string(m) + "m" + (s ? std::to_string(s) + "s" : "");
  return std::to_string(s) + "s";
}

std::string SqlTime(std::string_view column) {
  const std::string c(column);
  return "to_char(" + c + " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')";
}

std::string Cell(const pqxx::field& f) { return f.is_null() ? "-" : f.c_str(); }

std::string Bytes(const pqxx::field& f) {
  if (f.is_null()) return "";
  pqxx::binarystring b(f);
  return std::string(b.get(), b.size());
}

std::string PayloadForDisplay(std::string_view bytes, std::string* encoding) {
  bool text = IsValidUtf8(bytes);
  for (char c : bytes) {
    const auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\n' && c != '\t' && c != '\r') || u == 0x7f) text = false;
  }
  if (text) {
    *encoding = "utf-8";
    return std::string(bytes);
  }
  *encoding = "hex";
  static const char* kHex = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) {
    out += kHex[(static_cast<unsigned char>(c) >> 4) & 0xF];
    out += kHex[static_cast<unsigned char>(c) & 0xF];
  }
  return out;
}

std::string Base64(std::string_view bytes) {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    uint32_t v = static_cast<unsigned char>(bytes[i]) << 16 |
                 static_cast<unsigned char>(bytes[i + 1]) << 8 |
                 static_cast<unsigned char>(bytes[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out += kAlphabet[(v >> s) & 0x3F];
  }
  if (i < bytes.size()) {
    uint32_t v = static_cast<unsigned char>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) v |= static_cast<unsigned char>(bytes[i + 1]) << 8;
    out += kAlphabet[(v >> 18) & 0x3F];
    out += kAlphabet[(v >> 12) & 0x3F];
    out += i + 1 < bytes.size() ? kAlphabet[(v >> 6) & 0x3F] : '=';
    out += '=';
  }
  return out;
}

}  // namespace converge::ctl
