#include "strict_json.h"

#include <algorithm>

#include "converge/common/utf8.h"

namespace converge::json {
namespace {

bool IsWhitespace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void AppendUtf8(std::string* out, char32_t cp) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

class Reader {
 public:
  Reader(std::string_view text, int max_depth) : s_(text), max_depth_(max_depth) {}

  Status CheckUtf8() const {
    const size_t bad = FindInvalidUtf8(s_);
    if (bad == std::string_view::npos) return Status::Ok();
    return Status::InvalidArgument("JSON is not valid UTF-8 at byte " + std::to_string(bad));
  }

  void SkipWhitespace() {
    while (pos_ < s_.size() && IsWhitespace(s_[pos_])) ++pos_;
  }
  bool AtEnd() const { return pos_ == s_.size(); }
  size_t pos() const { return pos_; }

  Status Error(std::string_view what) const {
    return Status::InvalidArgument("invalid JSON at byte " + std::to_string(pos_) + ": " +
                                   std::string(what));
  }

  // Reads one value at the current position (no leading whitespace). `depth` is the depth of
  // the value's container (0 at top level). `str` receives the unescaped text of a string.
  Status Value(int depth, Kind* kind, std::string* str) {
    if (pos_ >= s_.size()) return Error("expected a value");
    switch (s_[pos_]) {
      case '{':
        *kind = Kind::kObject;
        return Object(depth + 1, nullptr, 0);
      case '[':
        *kind = Kind::kArray;
        return Array(depth + 1);
      case '"':
        *kind = Kind::kString;
        return String(str);
      case 't':
        *kind = Kind::kTrue;
        return Literal("true");
      case 'f':
        *kind = Kind::kFalse;
        return Literal("false");
      case 'n':
        *kind = Kind::kNull;
        return Literal("null");
      default:
        *kind = Kind::kNumber;
        return Number();
    }
  }

  // Reads an object. When `members` is not null, records the members (top level only).
  Status Object(int depth, std::vector<Member>* members, size_t max_members) {
    if (depth > max_depth_) return Error("nesting is too deep");
    ++pos_;  // '{'
    std::vector<std::string> names;
    SkipWhitespace();
    if (pos_ < s_.size() && s_[pos_] == '}') {
      ++pos_;
      return Status::Ok();
    }
    while (true) {
      SkipWhitespace();
      if (pos_ >= s_.size() || s_[pos_] != '"') return Error("expected a member name");
      std::string name;
      CONVERGE_RETURN_IF_ERROR(String(&name));
      SkipWhitespace();
      if (pos_ >= s_.size() || s_[pos_] != ':') return Error("expected ':'");
      ++pos_;
      SkipWhitespace();
      const size_t start = pos_;
      Kind kind = Kind::kNull;
      std::string value;
      CONVERGE_RETURN_IF_ERROR(Value(depth, &kind, members ? &value : nullptr));
      if (members) {
        if (members->size() >= max_members) return Error("too many members");
        members->push_back(Member{name, kind, s_.substr(start, pos_ - start), std::move(value)});
      }
      names.push_back(std::move(name));
      SkipWhitespace();
      if (pos_ < s_.size() && s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < s_.size() && s_[pos_] == '}') {
        ++pos_;
        break;
      }
      return Error("expected ',' or '}'");
    }
    std::sort(names.begin(), names.end());
    const auto dup = std::adjacent_find(names.begin(), names.end());
    if (dup != names.end()) {
      return Status::InvalidArgument("invalid JSON: member name \"" + *dup +
                                     "\" appears more than once");
    }
    return Status::Ok();
  }

 private:
  Status Array(int depth) {
    if (depth > max_depth_) return Error("nesting is too deep");
    ++pos_;  // '['
    SkipWhitespace();
    if (pos_ < s_.size() && s_[pos_] == ']') {
      ++pos_;
      return Status::Ok();
    }
    while (true) {
      SkipWhitespace();
      Kind kind = Kind::kNull;
      CONVERGE_RETURN_IF_ERROR(Value(depth, &kind, nullptr));
      SkipWhitespace();
      if (pos_ < s_.size() && s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < s_.size() && s_[pos_] == ']') {
        ++pos_;
        return Status::Ok();
      }
      return Error("expected ',' or ']'");
    }
  }

  Status Literal(std::string_view word) {
    if (s_.substr(pos_, word.size()) != word) return Error("invalid literal");
    pos_ += word.size();
    return Status::Ok();
  }

  // number = [ minus ] int [ frac ] [ exp ]; int = zero / ( digit1-9 *DIGIT )
  Status Number() {
    auto digit = [&] { return pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9'; };
    if (pos_ < s_.size() && s_[pos_] == '-') ++pos_;
    if (!digit()) return Error("expected a value");
    if (s_[pos_] == '0') {
      ++pos_;
      if (digit()) return Error("leading zeros are not allowed");
    } else {
      while (digit()) ++pos_;
    }
    if (pos_ < s_.size() && s_[pos_] == '.') {
      ++pos_;
      if (!digit()) return Error("expected a digit after '.'");
      while (digit()) ++pos_;
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      ++pos_;
      if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
      if (!digit()) return Error("expected a digit in the exponent");
      while (digit()) ++pos_;
    }
    return Status::Ok();
  }

  Status Hex4(char32_t* out) {
    if (s_.size() - pos_ < 4) return Error("truncated \\u escape");
    char32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const int h = HexValue(s_[pos_ + i]);
      if (h < 0) return Error("invalid \\u escape");
      v = (v << 4) | static_cast<char32_t>(h);
    }
    pos_ += 4;
    *out = v;
    return Status::Ok();
  }

  // Reads a string literal; `out` may be null when only validation is needed.
  Status String(std::string* out) {
    ++pos_;  // '"'
    while (true) {
      const size_t run = pos_;
      while (pos_ < s_.size() && s_[pos_] != '"' && s_[pos_] != '\\' &&
             static_cast<unsigned char>(s_[pos_]) >= 0x20) {
        ++pos_;
      }
      if (out) out->append(s_.data() + run, pos_ - run);
      if (pos_ >= s_.size()) return Error("unterminated string");
      const char c = s_[pos_];
      if (c == '"') {
        ++pos_;
        return Status::Ok();
      }
      if (c != '\\') return Error("control character in a string (must be escaped)");
      ++pos_;
      if (pos_ >= s_.size()) return Error("unterminated escape");
      const char e = s_[pos_++];
      char32_t cp = 0;
      switch (e) {
        case '"':
          cp = '"';
          break;
        case '\\':
          cp = '\\';
          break;
        case '/':
          cp = '/';
          break;
        case 'b':
          cp = '\b';
          break;
        case 'f':
          cp = '\f';
          break;
        case 'n':
          cp = '\n';
          break;
        case 'r':
          cp = '\r';
          break;
        case 't':
          cp = '\t';
          break;
        case 'u': {
          CONVERGE_RETURN_IF_ERROR(Hex4(&cp));
          if (cp >= 0xDC00 && cp <= 0xDFFF) return Error("lone low surrogate in \\u escape");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (s_.substr(pos_, 2) != "\\u") return Error("lone high surrogate in \\u escape");
            pos_ += 2;
            char32_t low = 0;
            CONVERGE_RETURN_IF_ERROR(Hex4(&low));
            if (low < 0xDC00 || low > 0xDFFF) return Error("lone high surrogate in \\u escape");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          break;
        }
        default:
          return Error("invalid escape");
      }
      if (out) AppendUtf8(out, cp);
    }
  }

  std::string_view s_;
  size_t pos_ = 0;
  int max_depth_;
};

}  // namespace

Result<std::vector<Member>> ParseObject(std::string_view text, int max_depth, size_t max_members) {
  Reader r(text, max_depth);
  CONVERGE_RETURN_IF_ERROR(r.CheckUtf8());
  r.SkipWhitespace();
  if (r.AtEnd() || text[r.pos()] != '{') return r.Error("expected a JSON object");
  std::vector<Member> members;
  CONVERGE_RETURN_IF_ERROR(r.Object(1, &members, max_members));
  r.SkipWhitespace();
  if (!r.AtEnd()) return r.Error("unexpected text after the object");
  return members;
}

Status ValidateText(std::string_view text, int max_depth) {
  Reader r(text, max_depth);
  CONVERGE_RETURN_IF_ERROR(r.CheckUtf8());
  r.SkipWhitespace();
  Kind kind = Kind::kNull;
  CONVERGE_RETURN_IF_ERROR(r.Value(0, &kind, nullptr));
  r.SkipWhitespace();
  if (!r.AtEnd()) return r.Error("unexpected text after the value");
  return Status::Ok();
}

void AppendString(std::string* out, std::string_view utf8) {
  static constexpr char kHex[] = "0123456789abcdef";
  out->push_back('"');
  for (const char ch : utf8) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\b':
        out->append("\\b");
        break;
      case '\f':
        out->append("\\f");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      default:
        if (c < 0x20) {
          out->append("\\u00");
          out->push_back(kHex[c >> 4]);
          out->push_back(kHex[c & 0xF]);
        } else {
          out->push_back(ch);
        }
    }
  }
  out->push_back('"');
}

}  // namespace converge::json
