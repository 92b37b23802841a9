#include "converge/common/utf8.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>
#include <string>

namespace converge {
namespace {

using ::testing::HasSubstr;

// A reference encoder, independent of the decoder under test.
std::string Encode(char32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    s.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    s.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return s;
}

TEST(Utf8Test, AcceptsWellFormedText) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("plain ascii"));
  EXPECT_TRUE(IsValidUtf8(std::string("nul\0inside", 10)));  // NUL is well-formed UTF-8
  EXPECT_TRUE(IsValidUtf8("\xC3\xA9"));                      // U+00E9
  EXPECT_TRUE(IsValidUtf8("\xE2\x82\xAC"));                  // U+20AC
  EXPECT_TRUE(IsValidUtf8("\xEF\xBF\xBD"));                  // U+FFFD
  EXPECT_TRUE(IsValidUtf8("\xF0\x9F\x98\x80"));              // U+1F600
  EXPECT_TRUE(IsValidUtf8("\xF4\x8F\xBF\xBF"));              // U+10FFFF, the last code point
  EXPECT_TRUE(IsValidUtf8("\xED\x9F\xBF"));                  // U+D7FF, just below surrogates
  EXPECT_TRUE(IsValidUtf8("\xEE\x80\x80"));                  // U+E000, just above them
}

TEST(Utf8Test, RejectsOverlongForms) {
  EXPECT_FALSE(IsValidUtf8("\xC0\x80"));  // U+0000 in two bytes ("modified UTF-8")
  EXPECT_FALSE(IsValidUtf8("\xC0\xAF"));  // '/' in two bytes
  EXPECT_FALSE(IsValidUtf8("\xC1\xBF"));
  EXPECT_FALSE(IsValidUtf8("\xE0\x80\xAF"));      // '/' in three bytes
  EXPECT_FALSE(IsValidUtf8("\xE0\x9F\xBF"));      // U+07FF in three bytes
  EXPECT_FALSE(IsValidUtf8("\xF0\x80\x80\xAF"));  // '/' in four bytes
  EXPECT_FALSE(IsValidUtf8("\xF0\x8F\xBF\xBF"));  // U+FFFF in four bytes
}

TEST(Utf8Test, RejectsSurrogatesAndBeyondU10FFFF) {
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));              // U+D800
  EXPECT_FALSE(IsValidUtf8("\xED\xBF\xBF"));              // U+DFFF
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\xBD\xED\xB8\x80"));  // CESU-8 pair for U+1F600
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));          // U+110000
  EXPECT_FALSE(IsValidUtf8("\xF5\x80\x80\x80"));
  EXPECT_FALSE(IsValidUtf8("\xF8\x88\x80\x80\x80"));  // old 5-byte form
  EXPECT_FALSE(IsValidUtf8("\xFE"));
  EXPECT_FALSE(IsValidUtf8("\xFF"));
}

TEST(Utf8Test, RejectsTruncatedAndStrayBytes) {
  EXPECT_FALSE(IsValidUtf8("\x80"));  // lone continuation
  EXPECT_FALSE(
      IsValidUtf8("a\xBF"
                  "b"));
  EXPECT_FALSE(IsValidUtf8("\xC3"));  // truncated at the end
  EXPECT_FALSE(IsValidUtf8("\xE2\x82"));
  EXPECT_FALSE(IsValidUtf8("\xF0\x9F\x98"));
  EXPECT_FALSE(
      IsValidUtf8("\xE2\x82"
                  "A"));                      // truncated before ASCII
  EXPECT_FALSE(IsValidUtf8("\xC3\xC3\xA9"));  // a lead byte where a continuation belongs
}

TEST(Utf8Test, FindInvalidUtf8ReportsTheOffset) {
  EXPECT_EQ(FindInvalidUtf8("abc"), std::string_view::npos);
  EXPECT_EQ(FindInvalidUtf8("ab\xC3\xA9\xFF"), 4u);
  EXPECT_EQ(FindInvalidUtf8("\xE2\x82"), 0u);
}

// Every code point encoded by the reference encoder is accepted exactly when it is not a
// surrogate; every other 1- and 2-byte string is accepted exactly when it is such an encoding.
TEST(Utf8Test, AgreesWithAReferenceEncoderEverywhere) {
  for (char32_t cp = 0; cp <= 0x10FFFF; ++cp) {
    const bool surrogate = cp >= 0xD800 && cp <= 0xDFFF;
    ASSERT_EQ(IsValidUtf8(Encode(cp)), !surrogate) << std::hex << static_cast<uint32_t>(cp);
  }
  std::set<std::string> two_byte_encodings;
  for (char32_t cp = 0x80; cp < 0x800; ++cp) two_byte_encodings.insert(Encode(cp));
  for (int a = 0; a < 256; ++a) {
    for (int b = 0; b < 256; ++b) {
      const std::string s{static_cast<char>(a), static_cast<char>(b)};
      const bool two_ascii = a < 0x80 && b < 0x80;
      ASSERT_EQ(IsValidUtf8(s), two_ascii || two_byte_encodings.count(s) == 1) << a << " " << b;
    }
  }
}

TEST(Utf8Test, AttributeTextRejectsControlsAndNoncharacters) {
  EXPECT_TRUE(IsValidAttributeText(""));
  EXPECT_TRUE(IsValidAttributeText("com.example.order.placed"));
  EXPECT_TRUE(IsValidAttributeText("caf\xC3\xA9 \xF0\x9F\x98\x80"));
  EXPECT_TRUE(IsValidAttributeText("\xC2\xA0"));      // U+00A0, first after C1
  EXPECT_TRUE(IsValidAttributeText("\xEF\xBF\xBD"));  // U+FFFD
  EXPECT_FALSE(IsValidAttributeText(std::string("a\0b", 3)));
  EXPECT_FALSE(IsValidAttributeText("line\nbreak"));
  EXPECT_FALSE(IsValidAttributeText("tab\there"));
  EXPECT_FALSE(IsValidAttributeText("\x1F"));
  EXPECT_FALSE(IsValidAttributeText("\x7F"));              // DEL
  EXPECT_FALSE(IsValidAttributeText("\xC2\x80"));          // U+0080 (C1)
  EXPECT_FALSE(IsValidAttributeText("\xC2\x9F"));          // U+009F (C1)
  EXPECT_FALSE(IsValidAttributeText("\xEF\xB7\x90"));      // U+FDD0 noncharacter
  EXPECT_FALSE(IsValidAttributeText("\xEF\xB7\xAF"));      // U+FDEF
  EXPECT_FALSE(IsValidAttributeText("\xEF\xBF\xBE"));      // U+FFFE
  EXPECT_FALSE(IsValidAttributeText("\xEF\xBF\xBF"));      // U+FFFF
  EXPECT_FALSE(IsValidAttributeText("\xF0\x9F\xBF\xBE"));  // U+1FFFE
  EXPECT_FALSE(IsValidAttributeText("\xF4\x8F\xBF\xBF"));  // U+10FFFF
  EXPECT_FALSE(IsValidAttributeText("\xC0\x80"));          // ill-formed stays ill-formed
}

TEST(Utf8Test, ValidateAttributeTextNamesTheFieldAndTheProblem) {
  EXPECT_TRUE(ValidateAttributeText("ce_id", "abc").ok());
  const Status bad = ValidateAttributeText("ce_id", "ab\xC3");
  EXPECT_EQ(bad.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.message(), "ce_id is not valid UTF-8 at byte 2");
  const Status nul = ValidateAttributeText("ce_id", std::string("abc\0", 4));
  EXPECT_THAT(nul.message(), HasSubstr("ce_id contains U+0000 at byte 3"));
  const Status nonchar = ValidateAttributeText("type", "\xEF\xBF\xBE");
  EXPECT_THAT(nonchar.message(), HasSubstr("U+FFFE"));
  EXPECT_THAT(nonchar.message(), HasSubstr("noncharacter"));
}

}  // namespace
}  // namespace converge
