// UTF-8 checks for everything that enters Converge as text: CloudEvents attribute values, header
// names and values, topics, JSON documents.
//
// Thread safety: pure functions.
#pragma once

#include <cstddef>
#include <string_view>

#include "converge/common/status.h"

namespace converge {

// True when `text` is well-formed UTF-8 (RFC 3629): no overlong forms, no surrogates
// (U+D800-U+DFFF), nothing above U+10FFFF, no stray continuation bytes, no truncated sequence.
// NUL and control characters are well-formed and accepted here.
bool IsValidUtf8(std::string_view text);

// The byte offset of the first ill-formed sequence, or std::string_view::npos when the whole text
// is well-formed.
size_t FindInvalidUtf8(std::string_view text);

// True when `text` is a valid CloudEvents `String` (CloudEvents 1.0 "Type System"): well-formed
// UTF-8 without control characters (U+0000-U+001F, U+007F-U+009F) and without Unicode
// noncharacters (U+FDD0-U+FDEF and U+nFFFE/U+nFFFF in every plane). This is the rule for
// attribute values, header names and values and topics; payloads are bytes and are not checked.
bool IsValidAttributeText(std::string_view text);

// As IsValidAttributeText, but says why. The message starts with `field`:
//   "ce_id is not valid UTF-8 at byte 3"
//   "ce_id contains U+0000 at byte 3 (control characters are not allowed)"
Status ValidateAttributeText(std::string_view field, std::string_view text);

}  // namespace converge
