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

// Opens a connection to `url` (a postgresql:// URI or a key=value string) with the defaults of
// WithConnectionDefaults. Errors are kUnavailable and never repeat the URL.
Result<std::unique_ptr<pqxx::connection>> Connect(const std::string& url);

// `url` as a key=value connection string with the timeouts that keep a network partition from
// blocking a call for minutes or hours, each added only when neither the URL nor (for
// connect_timeout) the PGCONNECT_TIMEOUT environment variable sets it:
//   connect_timeout=10          a connect to a blackholed address gives up after 10 s (libpq's
//                               default waits for the kernel: about 2 minutes)
//   keepalives=1 keepalives_idle=10 keepalives_interval=5 keepalives_count=3
//                               a connection waiting for a reply notices a dead peer in ~25 s
//                               (the kernel default starts probing after 2 hours)
//   tcp_user_timeout=30000      unacknowledged data gives up after 30 s (default: ~15 minutes)
// None of these fires on a healthy connection, however long a query runs. Unix sockets ignore
// the TCP ones. Errors: kInvalidArgument naming libpq's complaint (not the URL, which may hold a
// password).
Result<std::string> WithConnectionDefaults(const std::string& url);

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
