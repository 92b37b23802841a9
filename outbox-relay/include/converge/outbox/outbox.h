// Writing to the outbox from C++: enqueue messages inside the caller's own PostgreSQL
// transaction, so that the business rows and the messages commit together or not at all.
//
//   pqxx::work tx(conn);
//   tx.exec_params("INSERT INTO orders (id, total) VALUES ($1, $2)", id, total);
//   auto sent = converge::outbox::Enqueue(tx, {.topic = "orders", .key = id,
//                                               .type = "order.placed", .payload = json});
//   if (!sent.ok()) { /* tx is still usable: nothing was sent to the server */ }
//   tx.commit();
//
// Enqueue assigns the message id (UUIDv7) and the per-(topic, key) sequence number, and
// validates exactly like the SQL function converge.enqueue: the checks run here first (so a
// bad message does not abort the caller's transaction) and again in the database.
//
// Thread safety: as safe as the pqxx transaction passed in (one thread at a time).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <pqxx/transaction_base>

#include "converge/common/status.h"

namespace converge::outbox {

struct OutboxMessage {
  // Destination topic (Kafka topic or MQTT topic). Letters, digits, ".", "_", "-", "/".
  std::string topic;
  // Ordering key: messages with the same topic and key are published in enqueue order.
  std::string key;
  // CloudEvents type, e.g. "com.example.order.placed".
  std::string type;
  // Event data, any bytes up to 1,000,000.
  std::string payload;
  std::string content_type = "application/json";
  // Plain headers carried with the message (not CloudEvents attributes).
  std::map<std::string, std::string> headers;
  // CloudEvents source; empty = the database's default (the `converge.source` setting, else
  // "/<database name>").
  std::string source;
  // W3C traceparent, empty when there is none.
  std::string traceparent;
  // Optional expiry (MQTT message expiry interval is derived from it).
  std::optional<std::chrono::system_clock::time_point> expires_at;
  // Optional caller-chosen id (a UUID). Empty = a new UUIDv7. Use it to make the enqueue of a
  // retried request idempotent: a second enqueue with the same id fails with kAlreadyExists.
  std::string message_id;
};

struct Enqueued {
  std::string message_id;  // canonical UUID text
  int64_t seq = 0;         // 1, 2, 3 ... per (topic, key)
};

// The same checks as converge.validate_message, without a round trip. kInvalidArgument names
// the field.
Status Validate(const OutboxMessage& message);

// Enqueues one message in `tx`. Errors: kInvalidArgument (validation; `tx` still usable),
// kAlreadyExists (message_id taken), kFailedPrecondition (schema not migrated), kUnavailable
// (connection lost). After an error other than kInvalidArgument the transaction is aborted by
// the server and must be rolled back.
Result<Enqueued> Enqueue(pqxx::transaction_base& tx, const OutboxMessage& message);

// Enqueues several messages in `tx`, in order. Validates all of them before sending any.
Result<std::vector<Enqueued>> EnqueueMany(pqxx::transaction_base& tx,
                                          std::span<const OutboxMessage> messages);

}  // namespace converge::outbox
