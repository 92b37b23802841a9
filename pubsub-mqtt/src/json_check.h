// A strict JSON validator (RFC 8259: one value, no trailing text, no comments, nesting at most
// 64), so that a bad document is refused before it reaches PostgreSQL's jsonb cast (a failed
// statement would abort the caller's transaction). Thread safety: pure function.
#pragma once

#include <string_view>

#include "converge/common/status.h"

namespace converge::pubsub::internal {

// OK when `text` is exactly one JSON value (surrounding whitespace allowed); with
// `require_object`, the value must be an object. kInvalidArgument "<what> is not valid JSON:
// ... at byte N" otherwise.
Status CheckJson(std::string_view text, std::string_view what, bool require_object);

}  // namespace converge::pubsub::internal
