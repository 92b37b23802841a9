// Base64 (RFC 4648 section 4, standard alphabet, with padding). Private to converge::common.
#pragma once

#include <string>
#include <string_view>

namespace converge::base64 {

std::string Encode(std::string_view bytes);

// Strict: length a multiple of 4, only the standard alphabet, '=' only as final padding, unused
// bits of the last group zero (so every byte string has exactly one accepted encoding), no
// whitespace. Returns false and leaves `out` unspecified on bad input.
bool Decode(std::string_view text, std::string* out);

}  // namespace converge::base64
