#include "converge/schemas/pg.h"

#include <libpq-fe.h>
#include <pqxx/except>

#include <cstdlib>
#include <mutex>
#include <set>
#include <utility>

namespace converge::pg {
namespace {

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

StatusCode CodeForSqlState(std::string_view state) {
  if (state.size() != 5) return StatusCode::kInternal;
  const std::string_view cls = state.substr(0, 2);
  if (cls == "08") return StatusCode::kUnavailable;              // connection exception
  if (state == "57P01" || state == "57P02" || state == "57P03")  // admin/crash shutdown,
    return StatusCode::kUnavailable;                             // cannot connect now
  if (state == "53300" || state == "53400") return StatusCode::kUnavailable;  // too many conns
  if (cls == "40") return StatusCode::kAborted;                               // 40001, 40P01, ...
  if (state == "55P03") return StatusCode::kAborted;                          // lock_not_available
  if (state == "57014") return StatusCode::kAborted;      // query_canceled/timeout
  if (state == "25P03") return StatusCode::kUnavailable;  // idle_in_transaction_session_timeout
  if (state == "23505") return StatusCode::kAlreadyExists;
  if (cls == "22") return StatusCode::kInvalidArgument;
  if (cls == "23") return StatusCode::kInvalidArgument;  // other constraint
  if (state == "42P01" || state == "3F000" || state == "42883" || state == "42501")
    return StatusCode::kFailedPrecondition;
  return StatusCode::kInternal;
}

Status StatusFromException(const std::exception& e) {
  if (dynamic_cast<const pqxx::in_doubt_error*>(&e) != nullptr)
    return Status::DeadlineExceeded(std::string("commit outcome unknown: ") + e.what());
  if (dynamic_cast<const pqxx::statement_completion_unknown*>(&e) != nullptr)
    return Status::DeadlineExceeded(Trim(std::string("statement outcome unknown: ") + e.what()));
  // libpqxx 6.4: serialization_failure and deadlock_detected derive from transaction_rollback,
  // which carries no SQLSTATE.
  if (dynamic_cast<const pqxx::transaction_rollback*>(&e) != nullptr)
    return Status::Aborted(Trim(std::string("transaction rolled back: ") + e.what()));
  if (dynamic_cast<const pqxx::broken_connection*>(&e) != nullptr)
    return Status::Unavailable(Trim(std::string("PostgreSQL connection lost: ") + e.what()));
  if (const auto* sql = dynamic_cast<const pqxx::sql_error*>(&e)) {
    const std::string state = sql->sqlstate();
    std::string msg = Trim(state.empty() ? std::string(e.what()) : state + " " + e.what());
    if (state.empty()) {
      // libpqxx reports a dropped connection during a query as sql_error without a state.
      const std::string what = e.what();
      if (what.find("server closed the connection") != std::string::npos ||
          what.find("connection") != std::string::npos)
        return Status::Unavailable(std::move(msg));
      return Status::Internal(std::move(msg));
    }
    StatusCode code = CodeForSqlState(state);
    if (state == "42P01" || state == "3F000")
      msg += " (is the converge schema migrated? run: convergectl migrate --db URL)";
    return Status(code, std::move(msg));
  }
  if (dynamic_cast<const pqxx::usage_error*>(&e) != nullptr)
    return Status::Internal(std::string("libpqxx usage error: ") + e.what());
  return Status::Internal(Trim(e.what()));
}

Result<std::string> WithConnectionDefaults(const std::string& url) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(url.c_str(), &error);
  if (options == nullptr) {
    std::string why = error != nullptr ? Trim(error) : std::string("out of memory");
    PQfreemem(error);
    return Status::InvalidArgument("invalid PostgreSQL connection string: " + why);
  }
  // Quoted for a key=value string: '...' with \ and \' escaped.
  const auto append = [](std::string& out, const char* key, std::string_view value) {
    if (!out.empty()) out += ' ';
    out += key;
    out += "='";
    for (char c : value) {
      if (c == '\\' || c == '\'') out += '\\';
      out += c;
    }
    out += '\'';
  };
  std::string out;
  std::set<std::string, std::less<>> set;
  for (const PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
    if (o->val == nullptr) continue;
    append(out, o->keyword, o->val);
    set.insert(o->keyword);
  }
  PQconninfoFree(options);
  static constexpr std::pair<const char*, const char*> kDefaults[] = {
      {"connect_timeout", "10"},    {"keepalives", "1"},       {"keepalives_idle", "10"},
      {"keepalives_interval", "5"}, {"keepalives_count", "3"}, {"tcp_user_timeout", "30000"}};
  for (const auto& [key, value] : kDefaults) {
    if (set.contains(key)) continue;
    if (std::string_view(key) == "connect_timeout" && std::getenv("PGCONNECT_TIMEOUT") != nullptr)
      continue;
    append(out, key, value);
  }
  return out;
}

Result<std::unique_ptr<pqxx::connection>> Connect(const std::string& url) {
  auto conninfo = WithConnectionDefaults(url);
  if (!conninfo.ok())
    return Status::Unavailable("cannot connect to PostgreSQL: " + conninfo.status().message());
  try {
    auto conn = std::make_unique<pqxx::connection>(*conninfo);
    // libpqxx 6.4 maps encoding names through a function-local static std::map, built by the
    // first query of the process. Its guard is read inline in the (uninstrumented) library, so
    // ThreadSanitizer cannot see that a thread's later lookup follows the build and reports a
    // race whenever two threads run their first queries concurrently (the relay's listener and
    // a target's lease renewal). Building it under call_once makes the order visible; it costs
    // one round trip per process.
    static std::once_flag encodings_built;
    std::call_once(encodings_built, [&] { pqxx::nontransaction(*conn).exec("SELECT 1"); });
    return conn;
  } catch (const std::exception& e) {
    // libpq's messages name host and port but never the password; the URL is not repeated.
    return Status::Unavailable(Trim(std::string("cannot connect to PostgreSQL: ") + e.what()));
  }
}

std::string TextArrayLiteral(const std::vector<std::string>& values) {
  std::string s = "{";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i) s += ',';
    s += '"';
    for (char c : values[i]) {
      if (c == '"' || c == '\\') s += '\\';
      s += c;
    }
    s += '"';
  }
  s += '}';
  return s;
}

}  // namespace converge::pg
