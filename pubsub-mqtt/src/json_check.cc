#include "json_check.h"

#include <cstdint>
#include <string>

namespace converge::pubsub::internal {
namespace {

class Checker {
 public:
  explicit Checker(std::string_view s) : s_(s) {}

  // Returns "" on success, else the reason.
  std::string Run(bool require_object) {
    Ws();
    if (require_object && (pos_ >= s_.size() || s_[pos_] != '{')) return "expected an object";
    if (!Value(0)) return err_;
    Ws();
    if (pos_ != s_.size()) {
      Fail("trailing text");
      return err_;
    }
    return "";
  }
  size_t pos() const { return pos_; }

 private:
  bool Fail(const char* what) {
    if (err_.empty()) err_ = what;
    return false;
  }
  void Ws() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
      ++pos_;
  }
  bool Lit(std::string_view w) {
    if (s_.substr(pos_, w.size()) != w) return Fail("invalid literal");
    pos_ += w.size();
    return true;
  }
  bool Value(int depth) {
    if (depth > 64) return Fail("nested deeper than 64");
    if (pos_ >= s_.size()) return Fail("unexpected end");
    switch (s_[pos_]) {
      case '{':
        return Object(depth);
      case '[':
        return Array(depth);
      case '"':
        return String();
      case 't':
        return Lit("true");
      case 'f':
        return Lit("false");
      case 'n':
        return Lit("null");
      default:
        return Number();
    }
  }
  bool Object(int depth) {
    ++pos_;
    Ws();
    if (pos_ < s_.size() && s_[pos_] == '}') return ++pos_, true;
    while (true) {
      Ws();
      if (pos_ >= s_.size() || s_[pos_] != '"') return Fail("expected a member name");
      if (!String()) return false;
      Ws();
      if (pos_ >= s_.size() || s_[pos_] != ':') return Fail("expected ':'");
      ++pos_;
      Ws();
      if (!Value(depth + 1)) return false;
      Ws();
      if (pos_ < s_.size() && s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < s_.size() && s_[pos_] == '}') return ++pos_, true;
      return Fail("expected ',' or '}'");
    }
  }
  bool Array(int depth) {
    ++pos_;
    Ws();
    if (pos_ < s_.size() && s_[pos_] == ']') return ++pos_, true;
    while (true) {
      Ws();
      if (!Value(depth + 1)) return false;
      Ws();
      if (pos_ < s_.size() && s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < s_.size() && s_[pos_] == ']') return ++pos_, true;
      return Fail("expected ',' or ']'");
    }
  }
  static bool Hex(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
  }
  bool String() {
    ++pos_;  // opening quote
    while (pos_ < s_.size()) {
      const unsigned char c = static_cast<unsigned char>(s_[pos_]);
      if (c == '"') return ++pos_, true;
      if (c < 0x20) return Fail("control character in a string");
      if (c == '\\') {
        if (++pos_ >= s_.size()) break;
        const char e = s_[pos_];
        if (e == 'u') {
          for (int i = 1; i <= 4; ++i)
            if (pos_ + i >= s_.size() || !Hex(s_[pos_ + i])) return Fail("bad \\u escape");
          // PostgreSQL's jsonb refuses \u0000.
          if (s_.substr(pos_ + 1, 4) == "0000") return Fail("\\u0000 is not allowed");
          pos_ += 5;
          continue;
        }
        if (std::string_view("\"\\/bfnrt").find(e) == std::string_view::npos)
          return Fail("bad escape");
        ++pos_;
        continue;
      }
      if (c < 0x80) {
        ++pos_;
        continue;
      }
      // UTF-8 sequence: lead byte and continuation bytes, no overlongs or surrogates.
      int n = 0;
      uint32_t cp = 0;
      if ((c & 0xE0) == 0xC0)
        n = 1, cp = c & 0x1F;
      else if ((c & 0xF0) == 0xE0)
        n = 2, cp = c & 0x0F;
      else if ((c & 0xF8) == 0xF0)
        n = 3, cp = c & 0x07;
      else
        return Fail("invalid UTF-8");
      for (int i = 1; i <= n; ++i) {
        if (pos_ + i >= s_.size()) return Fail("invalid UTF-8");
        const unsigned char cc = static_cast<unsigned char>(s_[pos_ + i]);
        if ((cc & 0xC0) != 0x80) return Fail("invalid UTF-8");
        cp = (cp << 6) | (cc & 0x3F);
      }
      if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
          cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return Fail("invalid UTF-8");
      pos_ += n + 1;
    }
    return Fail("unterminated string");
  }
  bool Digits() {
    const size_t start = pos_;
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
    return pos_ > start;
  }
  bool Number() {
    if (pos_ < s_.size() && s_[pos_] == '-') ++pos_;
    if (pos_ >= s_.size()) return Fail("unexpected end");
    if (s_[pos_] == '0') {
      ++pos_;
    } else if (!Digits()) {
      return Fail("unexpected character");
    }
    if (pos_ < s_.size() && s_[pos_] == '.') {
      ++pos_;
      if (!Digits()) return Fail("bad number");
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      ++pos_;
      if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
      if (!Digits()) return Fail("bad number");
    }
    return true;
  }

  std::string_view s_;
  size_t pos_ = 0;
  std::string err_;
};

}  // namespace

Status CheckJson(std::string_view text, std::string_view what, bool require_object) {
  Checker c(text);
  std::string err = c.Run(require_object);
  if (err.empty()) return Status::Ok();
  return Status::InvalidArgument(std::string(what) + " is not valid JSON" +
                                 (require_object ? " object" : "") + ": " + err + " at byte " +
                                 std::to_string(c.pos()));
}

}  // namespace converge::pubsub::internal
