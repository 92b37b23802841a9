// The per-key sequence decision, kept apart from SQL so unit tests cover every case.
#pragma once

#include <cstdint>
#include <optional>

#include "converge/consumer/consumer.h"

namespace converge::consumer::internal {

enum class SeqVerdict {
  kInOrder,     // not checked, or last + 1, or the first message seen for the key
  kGapApply,    // a gap; apply (policy kApply / kSkipStale, or kHold after the hold ran out)
  kGapHold,     // a gap; hold the partition and retry later
  kStaleApply,  // seq <= last; apply anyway (kApply)
  kStaleSkip,   // seq <= last; skip
};

// `last` is the last applied sequence of (group, topic, key), nullopt when none was recorded.
// `seq` is the message's sequence (0 = unknown: never checked). `hold_exhausted` is true when a
// held message has used up its attempts.
inline SeqVerdict DecideSequence(SequencePolicy policy, std::optional<int64_t> last, int64_t seq,
                                 bool hold_exhausted) {
  if (seq <= 0 || !last.has_value()) return SeqVerdict::kInOrder;
  if (seq == *last + 1) return SeqVerdict::kInOrder;
  if (seq <= *last)
    return policy == SequencePolicy::kApply ? SeqVerdict::kStaleApply : SeqVerdict::kStaleSkip;
  if (policy == SequencePolicy::kHold && !hold_exhausted) return SeqVerdict::kGapHold;
  return SeqVerdict::kGapApply;
}

}  // namespace converge::consumer::internal
