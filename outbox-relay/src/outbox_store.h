// OutboxStore: the relay's SQL. Claims committed rows of the slots this relay owns and records
// each batch's outcome (delete, retry with a per-key block, dead-letter and park) in one
// transaction that is fenced by the relay's slot leases.
//
// Thread safety: one thread at a time (it owns one PostgreSQL connection).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "converge/common/message.h"
#include "converge/common/status.h"

namespace converge::outbox {

// Keys hash to this many slots (converge.relay_slots.slot, 0..255 by the schema's CHECK).
inline constexpr int kSlotCount = 256;

struct OutboxRow {
  int64_t id = 0;
  int slot = 0;
  int attempts = 0;          // failed attempts so far
  bool expired = false;      // expires_at has passed (database clock)
  bool was_blocked = false;  // its key had a retry block that this row's success must clear
  std::chrono::system_clock::time_point created_at{};
  Message message;  // id, topic, subject (key), sequence, type, payload ...
};

struct RetryOutcome {
  size_t row;  // index into the claimed rows
  std::string error;
  std::chrono::milliseconds backoff;
};

struct DeadLetterOutcome {
  size_t row;
  std::string reason;
  std::string error_code;  // too_large, not_authorized, invalid, expired, gave_up ...
  bool park_key = true;
};

struct BatchOutcome {
  std::vector<size_t> published;  // indexes into the claimed rows
  std::vector<RetryOutcome> retry;
  std::vector<DeadLetterOutcome> dead;
};

// Which outbox topics a relay target claims: PostgreSQL regular expressions (from
// TopicFilterRegex). Empty include: every topic; a topic matching an exclude is never claimed.
struct TopicFilter {
  std::vector<std::string> include;
  std::vector<std::string> exclude;
};

struct CompleteResult {
  size_t deleted = 0;
  size_t fenced = 0;  // rows skipped because this relay no longer owns their slot
};

class OutboxStore {
 public:
  OutboxStore(std::string url, std::string owner);

  Status Connect();
  bool connected() const { return conn_ != nullptr; }
  void Disconnect() { conn_.reset(); }

  // Rows of `slots` and `filter`, oldest first, whose key is neither parked nor in a retry block
  // nor in `exclude_keys` (ExcludedKey(topic, key) of the rows still in flight: a claim made
  // while an earlier batch is at the broker must not take a later row of any of its keys). One
  // statement, one round trip.
  Result<std::vector<OutboxRow>> Claim(const std::vector<int>& slots, int limit,
                                       const TopicFilter& filter = {},
                                       const std::vector<std::string>& exclude_keys = {});

  // The form of (topic, key) that Claim's exclude_keys takes. Two different pairs may map to
  // the same string only when a topic contains the separator (\x01); that only excludes more.
  static std::string ExcludedKey(const std::string& topic, const std::string& key) {
    return topic + '\x01' + key;
  }

  // Applies a batch's outcome atomically. Only rows whose slot this relay still owns (lease
  // valid, checked under a share lock on the slot rows) are touched.
  Result<CompleteResult> Complete(const std::vector<OutboxRow>& rows, const BatchOutcome& outcome);

  // Gauges for metrics: age of the oldest row (ms, 0 when empty) and parked keys.
  Status ReadGauges(int64_t* oldest_age_ms, int64_t* parked_keys);

 private:
  Status Fail(const std::exception& e);

  std::string url_;
  std::string owner_;
  std::unique_ptr<pqxx::connection> conn_;
};

}  // namespace converge::outbox
