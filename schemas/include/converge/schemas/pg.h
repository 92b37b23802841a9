// PostgreSQL helpers shared by Converge's modules (relay, consumer runtime, reconciler, CLI).
// This header exposes libpqxx types on purpose: it is the PostgreSQL adapter, used only by code
// that already works with pqxx transactions.
//
// Thread safety: free functions; a pqxx::connection must be used by one thread at a time.
#pragma once

#include <pqxx/pqxx>

#include <exception>
#include <memory>
#include <string>
#include <string_view>

#include "converge/common/status.h"

namespace converge::pg {

// Maps any exception thrown by libpqxx (or the standard library) to a Status whose code tells
// the caller what to do:
//   connection lost, server shutting down, too many connections      -> kUnavailable
//   serialization failure (40001), deadlock (40P01), lock timeout     -> kAborted
//   commit outcome unknown (pqxx::in_doubt_error)                     -> kDeadlineExceeded
//   unique violation (23505)                                          -> kAlreadyExists
//   invalid input (class 22, raised by converge.enqueue)              -> kInvalidArgument
//   undefined table/schema/function (42P01, 3F000, 42883)            -> kFailedPrecondition
//   insufficient privilege (42501)                                    -> kFailedPrecondition
//   anything else                                                     -> kInternal
// The message carries the SQLSTATE and the server's text, never the connection string.
Status StatusFromException(const std::exception& e);

// The same mapping from a bare SQLSTATE (exposed for tests).
StatusCode CodeForSqlState(std::string_view sqlstate);

// Opens a connection. Errors are kUnavailable with the password redacted from any URL text.
Result<std::unique_ptr<pqxx::connection>> Connect(const std::string& url);

// Formats values as a PostgreSQL array literal for a parameter cast to ::text[] / ::bigint[]
// (libpqxx 6.4 cannot bind arrays). Elements are quoted and escaped.
std::string TextArrayLiteral(const std::vector<std::string>& values);
template <typename Int>
std::string IntArrayLiteral(const std::vector<Int>& values) {
  std::string s = "{";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(values[i]);
  }
  s += '}';
  return s;
}

// Runs `fn(pqxx::work&)` in a transaction and commits, retrying the whole unit when the Status
// (or exception) says kAborted (serialization failure, deadlock), up to `max_attempts`.
template <typename Fn>
Status RunInTransaction(pqxx::connection& conn, Fn&& fn, int max_attempts = 5) {
  Status last;
  for (int attempt = 1; attempt <= max_attempts; ++attempt) {
    try {
      pqxx::work tx(conn);
      Status st = fn(tx);
      if (!st.ok()) {
        tx.abort();
        if (st.code() == StatusCode::kAborted && attempt < max_attempts) {
          last = st;
          continue;
        }
        return st;
      }
      tx.commit();
      return Status::Ok();
    } catch (const std::exception& e) {
      last = StatusFromException(e);
      if (last.code() != StatusCode::kAborted) return last;
    }
  }
  return last;
}

}  // namespace converge::pg
