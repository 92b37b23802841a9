#include "converge/common/config.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <variant>

#include "converge/common/log.h"
#include "obs_text.h"

namespace converge {

namespace config_internal {

struct KeySpec {
  std::string name;
  std::string description;
  ConfigType type = ConfigType::kString;
  std::string default_text;  // canonical text of the default
  std::string env;
  bool secret = false;
  bool required = false;
  std::optional<int64_t> min;
  std::optional<int64_t> max;
  std::vector<std::string> enum_values;
};

struct PassThroughSpec {
  std::string prefix;
  std::string description;
};

using Value = std::variant<std::string, int64_t, std::chrono::milliseconds, bool, uint64_t>;

struct Entry {
  Value value;
  std::string text;    // canonical text
  std::string source;  // "default", "file x:3", "env X", "flag --k"
  bool set = false;
};

struct PassValue {
  std::string value;
  std::string source;
};

}  // namespace config_internal

using config_internal::Entry;
using config_internal::KeySpec;
using config_internal::PassThroughSpec;
using config_internal::PassValue;
using config_internal::Value;
using obs_internal::AppendQuoted;
using obs_internal::AsciiLower;
using obs_internal::EqualsIgnoreCase;
using obs_internal::QuoteStyle;
using obs_internal::Trim;

struct ConfigSchema::Impl {
  std::string program;
  std::string summary;
  std::vector<KeySpec> keys;
  std::map<std::string, size_t, std::less<>> by_name;
  std::vector<PassThroughSpec> pass_through;
  std::string config_file_env = "CONVERGE_CONFIG";
  std::vector<std::string> declaration_errors;
};

struct Config::Impl {
  std::string program;
  std::vector<KeySpec> keys;
  std::map<std::string, size_t, std::less<>> by_name;
  std::vector<Entry> entries;
  std::vector<std::string> pass_prefixes;
  std::map<std::string, PassValue, std::less<>> pass;  // full key → value (undeclared keys)
  std::vector<std::string> positional;
  bool help = false;
  bool version = false;
  bool check_config = false;
  std::string config_file;
};

namespace {

constexpr int64_t kNsPerMs = 1'000'000;

bool IsKeyChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}

bool IsValidKey(std::string_view k) {
  if (k.empty() || k.front() == '.' || k.back() == '.') return false;
  if (k.find("..") != std::string_view::npos) return false;
  return std::all_of(k.begin(), k.end(), IsKeyChar);
}

bool IsValidDeclaredName(std::string_view k) {
  if (!IsValidKey(k)) return false;
  return std::none_of(k.begin(), k.end(), [](char c) { return c >= 'A' && c <= 'Z'; });
}

bool IsValidEnvName(std::string_view v) {
  if (v.empty() || (v[0] >= '0' && v[0] <= '9')) return false;
  return std::all_of(v.begin(), v.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

std::string Quoted(std::string_view s) { return "'" + std::string(s) + "'"; }

std::string Join(const std::vector<std::string>& parts, std::string_view sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i) out.append(sep);
    out.append(parts[i]);
  }
  return out;
}

// A decimal number "12" or "1.5": integer part and up to 18 fraction digits.
struct Decimal {
  unsigned __int128 int_part = 0;
  unsigned __int128 frac = 0;
  unsigned __int128 frac_scale = 1;  // 10^digits
};

// Parses digits [. digits] at text[*i]; false when there is no digit or the number is huge.
bool ParseDecimal(std::string_view text, size_t* i, Decimal* d) {
  size_t p = *i;
  size_t digits = 0;
  while (p < text.size() && text[p] >= '0' && text[p] <= '9') {
    if (++digits > 19) return false;
    d->int_part = d->int_part * 10 + static_cast<unsigned>(text[p] - '0');
    ++p;
  }
  if (digits == 0) return false;
  if (p < text.size() && text[p] == '.') {
    ++p;
    size_t fdigits = 0;
    while (p < text.size() && text[p] >= '0' && text[p] <= '9') {
      if (++fdigits > 18) return false;
      d->frac = d->frac * 10 + static_cast<unsigned>(text[p] - '0');
      d->frac_scale *= 10;
      ++p;
    }
    if (fdigits == 0) return false;
  }
  *i = p;
  return true;
}

// value * unit exactly, or nullopt if it is not an integer or too large.
std::optional<int64_t> Scale(const Decimal& d, int64_t unit) {
  const unsigned __int128 u = static_cast<unsigned __int128>(unit);
  const unsigned __int128 whole = d.int_part * u;
  const unsigned __int128 frac_num = d.frac * u;
  if (frac_num % d.frac_scale != 0) return std::nullopt;
  const unsigned __int128 total = whole + frac_num / d.frac_scale;
  if (total > static_cast<unsigned __int128>(std::numeric_limits<int64_t>::max())) {
    return std::nullopt;
  }
  return static_cast<int64_t>(total);
}

std::string ExpectedText(const KeySpec& k) {
  std::string range;
  if (k.min && k.max) {
    switch (k.type) {
      case ConfigType::kInt:
        range = " in " + std::to_string(*k.min) + ".." + std::to_string(*k.max);
        break;
      case ConfigType::kDuration:
        range = " in " + FormatDuration(std::chrono::milliseconds(*k.min)) + ".." +
                FormatDuration(std::chrono::milliseconds(*k.max));
        break;
      case ConfigType::kBytes:
        range = " in " + FormatBytes(static_cast<uint64_t>(*k.min)) + ".." +
                FormatBytes(static_cast<uint64_t>(*k.max));
        break;
      default:
        break;
    }
  }
  switch (k.type) {
    case ConfigType::kString:
      return "a string";
    case ConfigType::kInt:
      return "an integer" + range;
    case ConfigType::kDuration:
      return "a duration like 500ms, 5s, 2m" + range;
    case ConfigType::kBool:
      return "true or false";
    case ConfigType::kEnum:
      return "one of " + Join(k.enum_values, ", ");
    case ConfigType::kBytes:
      return "a size like 1048576, 64KiB, 1MiB" + range;
  }
  return "a value";
}

// Short type label for help and docs: "int 1..10000", "duration", "a|b".
std::string TypeLabel(const KeySpec& k) {
  std::string range;
  if (k.min && k.max) {
    if (k.type == ConfigType::kInt) {
      range = " " + std::to_string(*k.min) + ".." + std::to_string(*k.max);
    } else if (k.type == ConfigType::kDuration) {
      range = " " + FormatDuration(std::chrono::milliseconds(*k.min)) + ".." +
              FormatDuration(std::chrono::milliseconds(*k.max));
    } else if (k.type == ConfigType::kBytes) {
      range = " " + FormatBytes(static_cast<uint64_t>(*k.min)) + ".." +
              FormatBytes(static_cast<uint64_t>(*k.max));
    }
  }
  switch (k.type) {
    case ConfigType::kString:
      return "string";
    case ConfigType::kInt:
      return "int" + range;
    case ConfigType::kDuration:
      return "duration" + range;
    case ConfigType::kBool:
      return "bool";
    case ConfigType::kEnum:
      return Join(k.enum_values, "|");
    case ConfigType::kBytes:
      return "bytes" + range;
  }
  return "value";
}

// Parses `text` as the key's type; the error says only what was expected (the caller adds the
// key, the value and the source).
Result<std::pair<Value, std::string>> ParseTyped(const KeySpec& k, std::string_view text) {
  const auto bad = [&]() { return Status::InvalidArgument("expected " + ExpectedText(k)); };
  const auto in_range = [&](int64_t v) { return !(k.min && v < *k.min) && !(k.max && v > *k.max); };
  switch (k.type) {
    case ConfigType::kString:
      return std::pair<Value, std::string>{std::string(text), std::string(text)};
    case ConfigType::kInt: {
      const std::string_view t = Trim(text);
      int64_t v = 0;
      const char* first = t.data();
      if (!t.empty() && t.front() == '+') ++first;
      auto [end, ec] = std::from_chars(first, t.data() + t.size(), v);
      if (t.empty() || ec != std::errc() || end != t.data() + t.size() || !in_range(v)) {
        return bad();
      }
      return std::pair<Value, std::string>{v, std::to_string(v)};
    }
    case ConfigType::kDuration: {
      auto d = ParseDuration(text);
      if (!d.ok() || !in_range(d->count())) return bad();
      return std::pair<Value, std::string>{*d, FormatDuration(*d)};
    }
    case ConfigType::kBool: {
      auto b = ParseBool(text);
      if (!b.ok()) return bad();
      return std::pair<Value, std::string>{*b, *b ? "true" : "false"};
    }
    case ConfigType::kEnum: {
      const std::string_view t = Trim(text);
      for (const std::string& v : k.enum_values) {
        if (EqualsIgnoreCase(v, t)) return std::pair<Value, std::string>{v, v};
      }
      return bad();
    }
    case ConfigType::kBytes: {
      auto b = ParseBytes(text);
      if (!b.ok() || !in_range(static_cast<int64_t>(*b))) return bad();
      return std::pair<Value, std::string>{*b, FormatBytes(*b)};
    }
  }
  return bad();
}

const PassThroughSpec* MatchPassThrough(const std::vector<PassThroughSpec>& specs,
                                        std::string_view key) {
  const PassThroughSpec* best = nullptr;
  for (const PassThroughSpec& p : specs) {
    if (key.size() > p.prefix.size() && key.substr(0, p.prefix.size()) == p.prefix &&
        (!best || p.prefix.size() > best->prefix.size())) {
      best = &p;
    }
  }
  return best;
}

Value ZeroValue(ConfigType type) {
  switch (type) {
    case ConfigType::kInt:
      return int64_t{0};
    case ConfigType::kDuration:
      return std::chrono::milliseconds(0);
    case ConfigType::kBool:
      return false;
    case ConfigType::kBytes:
      return uint64_t{0};
    case ConfigType::kString:
    case ConfigType::kEnum:
      break;
  }
  return std::string();
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = AsciiLower(c);
  return out;
}

std::string DidYouMean(const std::vector<KeySpec>& keys, std::string_view unknown) {
  const std::string u = Lower(unknown);
  const KeySpec* best = nullptr;
  size_t best_d = std::numeric_limits<size_t>::max();
  for (const KeySpec& k : keys) {
    const size_t d = obs_internal::EditDistance(u, k.name);
    if (d < best_d) {
      best_d = d;
      best = &k;
    }
  }
  if (!best) return "";
  const size_t limit = std::max<size_t>(2, best->name.size() / 4);
  if (best_d > limit) return "";
  return "; did you mean " + Quoted(best->name) + "?";
}

// Text for a config-file value: bare when it reads back unchanged, else double-quoted.
std::string FileValue(std::string_view v) {
  bool plain = !v.empty() && v.front() != '"' && v.front() != '\'' && Trim(v).size() == v.size();
  for (size_t i = 0; plain && i < v.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(v[i]);
    if (c < 0x20 || c == 0x7F || (c == '#' && i > 0 && (v[i - 1] == ' ' || v[i - 1] == '\t'))) {
      plain = false;
    }
  }
  if (plain) return std::string(v);
  std::string out;
  AppendQuoted(out, v, QuoteStyle::kLogfmt);  // the parser reads its \xHH escapes back
  return out;
}

std::string SectionOf(std::string_view name) {
  const size_t dot = name.find('.');
  return dot == std::string_view::npos ? std::string() : std::string(name.substr(0, dot));
}

// Sections in order of first declaration, each with its keys in declaration order.
std::vector<std::pair<std::string, std::vector<const KeySpec*>>> GroupBySection(
    const std::vector<KeySpec>& keys) {
  std::vector<std::pair<std::string, std::vector<const KeySpec*>>> groups;
  for (const KeySpec& k : keys) {
    const std::string section = SectionOf(k.name);
    auto it = std::find_if(groups.begin(), groups.end(),
                           [&](const auto& g) { return g.first == section; });
    if (it == groups.end()) {
      groups.push_back({section, {}});
      it = groups.end() - 1;
    }
    it->second.push_back(&k);
  }
  return groups;
}

void AppendWrapped(std::string& out, std::string_view text, size_t indent, size_t width) {
  std::istringstream words{std::string(text)};
  std::string word;
  size_t col = 0;
  while (words >> word) {
    if (col == 0) {
      out.append(indent, ' ');
      col = indent;
    } else if (col + 1 + word.size() > width) {
      out.push_back('\n');
      out.append(indent, ' ');
      col = indent;
    } else {
      out.push_back(' ');
      ++col;
    }
    out.append(word);
    col += word.size();
  }
  if (col > 0) out.push_back('\n');
}

std::string MarkdownCell(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '|') {
      out += "\\|";
    } else if (c == '\n') {
      out += ' ';
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string DefaultForDisplay(const KeySpec& k) {
  if (k.secret) return "(secret)";
  if (k.required) return "(required)";
  return k.default_text.empty() ? "\"\"" : k.default_text;
}

std::string SourcesParagraph(const std::string& config_file_env) {
  std::string s =
      "Sources, lowest to highest precedence: built-in defaults, the config file (--config=<path>";
  if (!config_file_env.empty()) s += " or $" + config_file_env;
  s += "), environment variables, command-line flags (--key=value or --key value; a bool flag "
       "alone means true).";
  return s;
}

}  // namespace

// ---- value parsers ----

Result<std::chrono::milliseconds> ParseDuration(std::string_view text) {
  const std::string_view t = Trim(text);
  const auto bad = [&]() {
    return Status::InvalidArgument("expected a duration like 500ms, 5s, 2m, 1h30m");
  };
  if (t == "0") return std::chrono::milliseconds(0);
  if (t.empty()) return bad();
  static constexpr std::pair<std::string_view, int64_t> kUnits[] = {{"ms", kNsPerMs},
                                                                    {"s", 1000 * kNsPerMs},
                                                                    {"m", 60'000 * kNsPerMs},
                                                                    {"h", 3'600'000 * kNsPerMs}};
  unsigned __int128 total_ns = 0;
  size_t i = 0;
  while (i < t.size()) {
    Decimal d;
    if (!ParseDecimal(t, &i, &d)) return bad();
    const size_t unit_start = i;
    while (i < t.size() && ((t[i] >= 'a' && t[i] <= 'z') || (t[i] >= 'A' && t[i] <= 'Z'))) ++i;
    const std::string unit = Lower(t.substr(unit_start, i - unit_start));
    const auto* u = std::find_if(std::begin(kUnits), std::end(kUnits),
                                 [&](const auto& p) { return p.first == unit; });
    if (u == std::end(kUnits)) return bad();
    const std::optional<int64_t> ns = Scale(d, u->second);
    if (!ns) return bad();
    total_ns += static_cast<unsigned __int128>(*ns);
    if (total_ns > static_cast<unsigned __int128>(std::numeric_limits<int64_t>::max())) {
      return bad();
    }
  }
  if (total_ns % kNsPerMs != 0) {
    return Status::InvalidArgument("duration is finer than the 1ms resolution");
  }
  return std::chrono::milliseconds(static_cast<int64_t>(total_ns / kNsPerMs));
}

Result<uint64_t> ParseBytes(std::string_view text) {
  const std::string_view t = Trim(text);
  const auto bad = [&]() {
    return Status::InvalidArgument("expected a size like 1048576, 64KiB, 1MiB, 10MB");
  };
  static constexpr std::pair<std::string_view, int64_t> kUnits[] = {{"", 1},
                                                                    {"b", 1},
                                                                    {"kb", 1000},
                                                                    {"kib", 1LL << 10},
                                                                    {"mb", 1000'000},
                                                                    {"mib", 1LL << 20},
                                                                    {"gb", 1000'000'000},
                                                                    {"gib", 1LL << 30},
                                                                    {"tb", 1000'000'000'000},
                                                                    {"tib", 1LL << 40}};
  size_t i = 0;
  Decimal d;
  if (!ParseDecimal(t, &i, &d)) return bad();
  const std::string unit = Lower(Trim(t.substr(i)));
  const auto* u = std::find_if(std::begin(kUnits), std::end(kUnits),
                               [&](const auto& p) { return p.first == unit; });
  if (u == std::end(kUnits)) return bad();
  const std::optional<int64_t> v = Scale(d, u->second);
  if (!v) return bad();
  return static_cast<uint64_t>(*v);
}

Result<bool> ParseBool(std::string_view text) {
  const std::string_view t = Trim(text);
  for (std::string_view y : {"true", "yes", "on", "1"}) {
    if (EqualsIgnoreCase(t, y)) return true;
  }
  for (std::string_view n : {"false", "no", "off", "0"}) {
    if (EqualsIgnoreCase(t, n)) return false;
  }
  return Status::InvalidArgument("expected true or false");
}

std::string FormatDuration(std::chrono::milliseconds d) {
  int64_t ms = d.count();
  std::string sign;
  if (ms < 0) {
    sign = "-";
    ms = -ms;
  }
  if (ms == 0) return "0s";
  if (ms % 3'600'000 == 0) return sign + std::to_string(ms / 3'600'000) + "h";
  if (ms % 60'000 == 0) return sign + std::to_string(ms / 60'000) + "m";
  if (ms % 1000 == 0) return sign + std::to_string(ms / 1000) + "s";
  return sign + std::to_string(ms) + "ms";
}

std::string FormatBytes(uint64_t bytes) {
  if (bytes == 0) return "0";
  static constexpr std::pair<uint64_t, std::string_view> kUnits[] = {
      {1ULL << 40, "TiB"}, {1ULL << 30, "GiB"}, {1ULL << 20, "MiB"}, {1ULL << 10, "KiB"}};
  for (const auto& [mult, name] : kUnits) {
    if (bytes % mult == 0) return std::to_string(bytes / mult) + std::string(name);
  }
  return std::to_string(bytes);
}

// ---- config file ----

Result<std::vector<ConfigFileEntry>> ParseConfigText(std::string_view text,
                                                     std::string_view origin) {
  std::vector<ConfigFileEntry> entries;
  std::map<std::string, int, std::less<>> seen;
  std::string prefix;
  int line_no = 0;
  const auto err = [&](std::string what) {
    return Status::InvalidArgument(std::string(origin) + ":" + std::to_string(line_no) + ": " +
                                   what);
  };
  // After a quoted value or a section header, only a comment may follow.
  const auto only_comment = [](std::string_view rest) {
    rest = Trim(rest);
    return rest.empty() || rest.front() == '#';
  };
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    std::string_view line = text.substr(pos, nl - pos);
    pos = nl + 1;
    ++line_no;
    const std::string_view t = Trim(line);
    if (t.empty() || t.front() == '#') continue;

    if (t.front() == '[') {
      const size_t close = t.find(']');
      if (close == std::string_view::npos || !only_comment(t.substr(close + 1))) {
        return err("malformed section header (expected [name])");
      }
      const std::string_view name = Trim(t.substr(1, close - 1));
      if (name.empty()) {
        prefix.clear();
      } else if (!IsValidKey(name)) {
        return err("invalid section name (use letters, digits, '_', '-', '.')");
      } else {
        prefix = std::string(name) + ".";
      }
      continue;
    }

    const size_t eq = t.find('=');
    if (eq == std::string_view::npos) return err("expected 'key = value' or '[section]'");
    const std::string_view key = Trim(t.substr(0, eq));
    if (!IsValidKey(key)) return err("invalid key (use letters, digits, '_', '-', '.')");
    std::string full = prefix + std::string(key);
    std::string_view v = Trim(t.substr(eq + 1));
    std::string value;
    if (!v.empty() && v.front() == '"') {
      size_t i = 1;
      bool closed = false;
      for (; i < v.size(); ++i) {
        const char c = v[i];
        if (c == '"') {
          closed = true;
          break;
        }
        if (c != '\\') {
          value.push_back(c);
          continue;
        }
        if (++i >= v.size()) break;
        switch (v[i]) {
          case '"':
            value.push_back('"');
            break;
          case '\\':
            value.push_back('\\');
            break;
          case 'n':
            value.push_back('\n');
            break;
          case 'r':
            value.push_back('\r');
            break;
          case 't':
            value.push_back('\t');
            break;
          case 'x': {  // \xHH: any byte (what --print-config writes for controls, bad UTF-8)
            const auto hex = [](char h) -> int {
              if (h >= '0' && h <= '9') return h - '0';
              if (h >= 'a' && h <= 'f') return h - 'a' + 10;
              if (h >= 'A' && h <= 'F') return h - 'A' + 10;
              return -1;
            };
            const int hi = i + 1 < v.size() ? hex(v[i + 1]) : -1;
            const int lo = i + 2 < v.size() ? hex(v[i + 2]) : -1;
            if (hi < 0 || lo < 0)
              return err("invalid \\x escape (two hex digits expected) in quoted value of key " +
                         Quoted(full));
            value.push_back(static_cast<char>(hi * 16 + lo));
            i += 2;
            break;
          }
          default:
            return err("invalid escape in quoted value of key " + Quoted(full));
        }
      }
      if (!closed) return err("unterminated quoted value of key " + Quoted(full));
      if (!only_comment(v.substr(i + 1))) {
        return err("unexpected text after quoted value of key " + Quoted(full));
      }
    } else if (!v.empty() && v.front() == '\'') {
      const size_t close = v.find('\'', 1);
      if (close == std::string_view::npos) {
        return err("unterminated quoted value of key " + Quoted(full));
      }
      if (!only_comment(v.substr(close + 1))) {
        return err("unexpected text after quoted value of key " + Quoted(full));
      }
      value = std::string(v.substr(1, close - 1));
    } else {
      size_t cut = v.size();
      for (size_t i = 1; i < v.size(); ++i) {
        if (v[i] == '#' && (v[i - 1] == ' ' || v[i - 1] == '\t')) {
          cut = i;
          break;
        }
      }
      value = std::string(Trim(v.substr(0, cut)));
    }
    auto [it, inserted] = seen.emplace(full, line_no);
    if (!inserted) {
      return err("key " + Quoted(full) + " is set twice (first on line " +
                 std::to_string(it->second) + ")");
    }
    entries.push_back({std::move(full), std::move(value), line_no});
  }
  return entries;
}

// ---- ConfigInputs ----

ConfigInputs ConfigInputs::FromMain(int argc, char** argv) {
  ConfigInputs in;
  for (int i = 1; i < argc; ++i) in.args.emplace_back(argv[i]);
  return in;
}

// ---- ConfigSchema ----

ConfigSchema::ConfigSchema(std::string program, std::string summary)
    : impl_(std::make_unique<Impl>()) {
  impl_->program = std::move(program);
  impl_->summary = std::move(summary);
}

ConfigSchema::~ConfigSchema() = default;

size_t ConfigSchema::Declare(std::string name, ConfigType type, std::string default_text,
                             std::string description, std::vector<std::string> enum_values) {
  if (!IsValidDeclaredName(name)) {
    impl_->declaration_errors.push_back("invalid key name " + Quoted(name));
  } else if (impl_->by_name.count(name)) {
    impl_->declaration_errors.push_back("key " + Quoted(name) + " declared twice");
  }
  KeySpec k;
  k.name = name;
  k.type = type;
  k.default_text = std::move(default_text);
  k.description = std::move(description);
  k.enum_values = std::move(enum_values);
  impl_->keys.push_back(std::move(k));
  impl_->by_name.emplace(std::move(name), impl_->keys.size() - 1);
  return impl_->keys.size() - 1;
}

KeyBuilder<std::string> ConfigSchema::String(std::string name, std::string default_value,
                                             std::string description) {
  return {this, Declare(std::move(name), ConfigType::kString, std::move(default_value),
                        std::move(description), {})};
}

KeyBuilder<int64_t> ConfigSchema::Int(std::string name, int64_t default_value,
                                      std::string description) {
  return {this, Declare(std::move(name), ConfigType::kInt, std::to_string(default_value),
                        std::move(description), {})};
}

KeyBuilder<std::chrono::milliseconds> ConfigSchema::Duration(
    std::string name, std::chrono::milliseconds default_value, std::string description) {
  return {this, Declare(std::move(name), ConfigType::kDuration, FormatDuration(default_value),
                        std::move(description), {})};
}

KeyBuilder<bool> ConfigSchema::Bool(std::string name, bool default_value, std::string description) {
  return {this, Declare(std::move(name), ConfigType::kBool, default_value ? "true" : "false",
                        std::move(description), {})};
}

KeyBuilder<std::string> ConfigSchema::Enum(std::string name, std::string default_value,
                                           std::vector<std::string> values,
                                           std::string description) {
  if (values.empty()) {
    impl_->declaration_errors.push_back("enum key " + Quoted(name) + " has no values");
  }
  return {this, Declare(std::move(name), ConfigType::kEnum, std::move(default_value),
                        std::move(description), std::move(values))};
}

KeyBuilder<uint64_t> ConfigSchema::Bytes(std::string name, uint64_t default_value,
                                         std::string description) {
  return {this, Declare(std::move(name), ConfigType::kBytes, FormatBytes(default_value),
                        std::move(description), {})};
}

void ConfigSchema::PassThrough(std::string prefix, std::string description) {
  if (prefix.size() < 2 || prefix.back() != '.' ||
      !IsValidDeclaredName(std::string_view(prefix).substr(0, prefix.size() - 1))) {
    impl_->declaration_errors.push_back("invalid pass-through prefix " + Quoted(prefix) +
                                        " (must look like 'kafka.')");
  }
  impl_->pass_through.push_back({std::move(prefix), std::move(description)});
}

void ConfigSchema::ConfigFileEnv(std::string variable) {
  impl_->config_file_env = std::move(variable);
}

void ConfigSchema::SetEnv(size_t index, std::string variable) {
  if (!IsValidEnvName(variable)) {
    impl_->declaration_errors.push_back("invalid env var name " + Quoted(variable) + " for key " +
                                        Quoted(impl_->keys[index].name));
  }
  impl_->keys[index].env = std::move(variable);
}

void ConfigSchema::SetSecret(size_t index) { impl_->keys[index].secret = true; }
void ConfigSchema::SetRequired(size_t index) { impl_->keys[index].required = true; }

void ConfigSchema::SetRange(size_t index, int64_t min, int64_t max) {
  if (min > max) {
    impl_->declaration_errors.push_back("key " + Quoted(impl_->keys[index].name) +
                                        " has an empty range");
  }
  impl_->keys[index].min = min;
  impl_->keys[index].max = max;
}

const std::string& ConfigSchema::NameAt(size_t index) const { return impl_->keys[index].name; }

Result<Config> ConfigSchema::Load(const ConfigInputs& inputs) const {
  const Impl& s = *impl_;
  // Declarations are the program's own: a mistake there is a bug, not bad input.
  std::vector<std::string> decl_errors = s.declaration_errors;
  std::set<std::string> envs;
  for (const KeySpec& k : s.keys) {
    if (!k.env.empty() && !envs.insert(k.env).second) {
      decl_errors.push_back("env var " + k.env + " mapped to two keys");
    }
    if (!(k.required && k.default_text.empty()) && !ParseTyped(k, k.default_text).ok()) {
      decl_errors.push_back("default of key " + Quoted(k.name) + " is not " + ExpectedText(k));
    }
    for (const PassThroughSpec& p : s.pass_through) {
      if (k.name + "." == p.prefix) {
        decl_errors.push_back("key " + Quoted(k.name) + " is also a pass-through prefix");
      }
    }
  }
  if (!decl_errors.empty()) {
    return Status::Internal("config schema of " + s.program + ": " + Join(decl_errors, "; "));
  }

  auto impl = std::make_shared<Config::Impl>();
  Config::Impl& c = *impl;
  c.program = s.program;
  c.keys = s.keys;
  c.by_name = s.by_name;
  for (const PassThroughSpec& p : s.pass_through) c.pass_prefixes.push_back(p.prefix);
  c.entries.resize(s.keys.size());
  for (size_t i = 0; i < s.keys.size(); ++i) {
    auto parsed = ParseTyped(s.keys[i], s.keys[i].default_text);
    if (parsed.ok()) {
      c.entries[i].value = parsed->first;
      c.entries[i].text = parsed->second;
    } else {  // a required key without a default: the type's zero value until set
      c.entries[i].value = ZeroValue(s.keys[i].type);
    }
    c.entries[i].source = "default";
  }

  std::vector<std::string> errors;
  // Applies one value from a source; `display` is how the source is named in messages.
  const auto apply = [&](const std::string& key, const std::string& value,
                         const std::string& source) {
    auto it = s.by_name.find(key);
    if (it != s.by_name.end()) {
      const KeySpec& k = s.keys[it->second];
      auto parsed = ParseTyped(k, value);
      if (!parsed.ok()) {
        errors.push_back(k.name + ": invalid value " +
                         (k.secret ? std::string("(redacted)") : "\"" + Redact(value) + "\"") +
                         " from " + source + ": " + parsed.status().message());
        return;
      }
      Entry& e = c.entries[it->second];
      e.value = std::move(parsed->first);
      e.text = std::move(parsed->second);
      e.source = source;
      e.set = true;
      return;
    }
    if (MatchPassThrough(s.pass_through, key)) {
      c.pass[key] = PassValue{value, source};
      return;
    }
    errors.push_back("unknown key " + Quoted(key) + " from " + source + DidYouMean(s.keys, key));
  };

  // Command line first (it names the config file), applied last.
  struct Flag {
    std::string key;
    std::string value;
  };
  std::vector<Flag> flags;
  std::optional<std::string> config_flag;
  const std::vector<std::string>& args = inputs.args;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      c.positional.insert(c.positional.end(), args.begin() + static_cast<ptrdiff_t>(i) + 1,
                          args.end());
      break;
    }
    if (a == "--help" || a == "-h") {
      c.help = true;
      continue;
    }
    if (a == "--version") {
      c.version = true;
      continue;
    }
    if (a == "--check-config") {
      c.check_config = true;
      continue;
    }
    if (a.size() < 2 || a[0] != '-') {
      c.positional.push_back(a);
      continue;
    }
    if (a[1] != '-') {
      errors.push_back("unknown flag " + Quoted(a) + " (flags look like --key=value)");
      continue;
    }
    const std::string body = a.substr(2);
    const size_t eq = body.find('=');
    std::string key = body.substr(0, eq);
    if (!IsValidKey(key)) {
      errors.push_back("malformed flag " + Quoted(eq == std::string::npos ? a : "--" + key) +
                       " (flags look like --key=value)");
      continue;
    }
    std::optional<std::string> value;
    if (eq != std::string::npos) value = body.substr(eq + 1);
    if (!value) {
      auto it = s.by_name.find(key);
      const bool is_bool = it != s.by_name.end() && s.keys[it->second].type == ConfigType::kBool;
      if (is_bool) {
        value = "true";
      } else if (i + 1 < args.size()) {
        value = args[++i];
      } else {
        errors.push_back("flag --" + key + " needs a value");
        continue;
      }
    }
    if (key == "config") {
      config_flag = *value;
    } else {
      flags.push_back({std::move(key), std::move(*value)});
    }
  }

  const auto getenv = [&](const std::string& name) -> std::optional<std::string> {
    if (inputs.env) return inputs.env(name);
    const char* v = std::getenv(name.c_str());
    if (!v) return std::nullopt;
    return std::string(v);
  };

  // Config file: --config, else the env var, else the default (which may be missing).
  std::string path;
  bool must_exist = true;
  if (config_flag) {
    path = *config_flag;
  } else if (auto e = s.config_file_env.empty() ? std::nullopt : getenv(s.config_file_env);
             e && !e->empty()) {
    path = *e;
  } else {
    path = inputs.default_file;
    must_exist = false;
  }
  if (!path.empty()) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      if (must_exist) {
        errors.push_back("cannot read config file " + Quoted(path) + ": " + std::strerror(errno));
      }
    } else {
      std::ostringstream buf;
      buf << in.rdbuf();
      c.config_file = path;
      auto parsed = ParseConfigText(buf.str(), path);
      if (!parsed.ok()) {
        errors.push_back(parsed.status().message());
      } else {
        for (const ConfigFileEntry& e : *parsed) {
          apply(e.key, e.value, "file " + path + ":" + std::to_string(e.line));
        }
      }
    }
  }

  for (const KeySpec& k : s.keys) {
    if (k.env.empty()) continue;
    if (auto v = getenv(k.env); v && !v->empty()) apply(k.name, *v, "env " + k.env);
  }
  for (const Flag& f : flags) apply(f.key, f.value, "flag --" + f.key);

  for (size_t i = 0; i < s.keys.size(); ++i) {
    const KeySpec& k = s.keys[i];
    if (k.required && !c.entries[i].set) {
      std::string how = "the config file";
      if (!k.env.empty()) how += ", env " + k.env;
      errors.push_back("missing required key " + Quoted(k.name) + " (set it in " + how + " or --" +
                       k.name + ")");
    }
  }

  if (!errors.empty() && !c.help && !c.version) {
    return Status::InvalidArgument("invalid configuration: " + Join(errors, "; "));
  }
  return Config(std::move(impl));
}

std::string ConfigSchema::HelpText() const {
  const Impl& s = *impl_;
  std::string out = "Usage: " + s.program + " [flags]\n\n";
  if (!s.summary.empty()) {
    AppendWrapped(out, s.summary, 0, 100);
    out += "\n";
  }
  AppendWrapped(out, SourcesParagraph(s.config_file_env), 0, 100);
  out += "\nGeneral:\n";
  out += "  --help, -h\n      Print this help and exit.\n";
  out += "  --version\n      Print the version and exit.\n";
  out +=
      "  --check-config\n      Validate the configuration, print the effective values "
      "(secrets redacted) and exit.\n";
  out += "  --config=<path>\n      Config file";
  if (!s.config_file_env.empty()) out += ".   env: " + s.config_file_env;
  out += "\n";
  for (const auto& [section, keys] : GroupBySection(s.keys)) {
    out += "\n" + (section.empty() ? std::string("Other") : section) + ":\n";
    for (const KeySpec* k : keys) {
      out += "  --" + k->name + "=<" + TypeLabel(*k) + ">\n";
      AppendWrapped(out, k->description, 6, 100);
      std::string meta = "      ";
      if (k->required) {
        meta += "required";
      } else {
        meta += "default: " + DefaultForDisplay(*k);
      }
      if (k->secret) meta += "   secret";
      if (!k->env.empty()) meta += "   env: " + k->env;
      out += meta + "\n";
    }
  }
  if (!s.pass_through.empty()) {
    out += "\nPass-through (any key under the prefix, given to the library verbatim):\n";
    for (const PassThroughSpec& p : s.pass_through) {
      out += "  --" + p.prefix + "<property>=<value>\n";
      AppendWrapped(out, p.description, 6, 100);
    }
  }
  return out;
}

std::string ConfigSchema::MarkdownReference() const {
  const Impl& s = *impl_;
  std::string out = "## `" + s.program + "`\n\n";
  if (!s.summary.empty()) out += MarkdownCell(s.summary) + "\n\n";
  out += SourcesParagraph(s.config_file_env) + "\n";
  for (const auto& [section, keys] : GroupBySection(s.keys)) {
    out += "\n### " + (section.empty() ? std::string("Other") : "`" + section + "`") + "\n\n";
    out += "| Key | Type | Default | Environment | Description |\n";
    out += "| --- | --- | --- | --- | --- |\n";
    for (const KeySpec* k : keys) {
      std::string type = MarkdownCell(TypeLabel(*k));
      if (k->secret) type += ", secret";
      std::string def = DefaultForDisplay(*k);
      if (!k->secret && !k->required) def = "`" + MarkdownCell(def) + "`";
      out += "| `" + k->name + "` | " + type + " | " + def + " | " +
             (k->env.empty() ? std::string() : "`" + k->env + "`") + " | " +
             MarkdownCell(k->description) + " |\n";
    }
  }
  if (!s.pass_through.empty()) {
    out += "\n### Pass-through prefixes\n\n| Prefix | Description |\n| --- | --- |\n";
    for (const PassThroughSpec& p : s.pass_through) {
      out += "| `" + p.prefix + "*` | " + MarkdownCell(p.description) + " |\n";
    }
  }
  return out;
}

// ---- Config ----

namespace {
[[noreturn]] void KeyMismatch(const std::string& name) {
  // A ConfigKey from another schema, or of another type: a wiring bug, caught on the first run.
  std::fprintf(stderr, "converge: config key '%s' does not belong to this Config\n", name.c_str());
  std::abort();
}
}  // namespace

#define CONVERGE_CONFIG_ACCESSOR(Name, T)                                              \
  const T& Config::Name(size_t index, const std::string& name) const {                 \
    if (!impl_ || index >= impl_->entries.size() || impl_->keys[index].name != name) { \
      KeyMismatch(name);                                                               \
    }                                                                                  \
    const T* v = std::get_if<T>(&impl_->entries[index].value);                         \
    if (!v) KeyMismatch(name);                                                         \
    return *v;                                                                         \
  }
CONVERGE_CONFIG_ACCESSOR(StringAt, std::string)
CONVERGE_CONFIG_ACCESSOR(IntAt, int64_t)
CONVERGE_CONFIG_ACCESSOR(DurationAt, std::chrono::milliseconds)
CONVERGE_CONFIG_ACCESSOR(BoolAt, bool)
CONVERGE_CONFIG_ACCESSOR(BytesAt, uint64_t)
#undef CONVERGE_CONFIG_ACCESSOR

Result<std::string> Config::Text(std::string_view name) const {
  if (auto it = impl_->by_name.find(name); it != impl_->by_name.end()) {
    return impl_->entries[it->second].text;
  }
  if (auto it = impl_->pass.find(name); it != impl_->pass.end()) return it->second.value;
  return Status::NotFound("no config key " + Quoted(name));
}

bool Config::IsSet(std::string_view name) const {
  if (auto it = impl_->by_name.find(name); it != impl_->by_name.end()) {
    return impl_->entries[it->second].set;
  }
  return impl_->pass.count(name) > 0;
}

std::string Config::SourceOf(std::string_view name) const {
  if (auto it = impl_->by_name.find(name); it != impl_->by_name.end()) {
    return impl_->entries[it->second].source;
  }
  if (auto it = impl_->pass.find(name); it != impl_->pass.end()) return it->second.source;
  return "";
}

std::map<std::string, std::string> Config::PassThrough(std::string_view prefix) const {
  std::map<std::string, std::string> out;
  // Declared keys under the prefix first, then undeclared ones (never both for one key).
  for (size_t i = 0; i < impl_->keys.size(); ++i) {
    const std::string& name = impl_->keys[i].name;
    if (name.size() > prefix.size() && name.compare(0, prefix.size(), prefix) == 0 &&
        !impl_->entries[i].text.empty()) {
      out[name.substr(prefix.size())] = impl_->entries[i].text;
    }
  }
  for (const auto& [key, v] : impl_->pass) {
    if (key.size() > prefix.size() && key.compare(0, prefix.size(), prefix) == 0) {
      // Only keys whose longest pass-through prefix is this one.
      bool longer = false;
      for (const std::string& p : impl_->pass_prefixes) {
        if (p.size() > prefix.size() && key.compare(0, p.size(), p) == 0) longer = true;
      }
      if (!longer) out[key.substr(prefix.size())] = v.value;
    }
  }
  return out;
}

const std::vector<std::string>& Config::positional() const { return impl_->positional; }
bool Config::help_requested() const { return impl_->help; }
bool Config::version_requested() const { return impl_->version; }
bool Config::check_config_requested() const { return impl_->check_config; }
const std::string& Config::config_file() const { return impl_->config_file; }

std::string Config::DumpEffective() const {
  std::string out = "# " + impl_->program + " effective configuration (secrets shown as ***)\n";
  if (!impl_->config_file.empty()) out += "# config file: " + impl_->config_file + "\n";
  for (size_t i = 0; i < impl_->keys.size(); ++i) {
    const KeySpec& k = impl_->keys[i];
    const Entry& e = impl_->entries[i];
    const bool hide = k.secret && !e.text.empty();
    out += k.name + " = " + (hide ? std::string("***") : FileValue(Redact(e.text))) + "  # " +
           e.source + "\n";
  }
  for (const auto& [key, v] : impl_->pass) {
    const bool hide = IsSecretKey(key);
    out += key + " = " + (hide ? std::string("***") : FileValue(Redact(v.value))) + "  # " +
           v.source + " (pass-through)\n";
  }
  return out;
}

}  // namespace converge
