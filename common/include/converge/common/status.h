// Status and Result<T>: Converge's error type. No exception crosses a module's public API;
// functions that can fail return one of these, and the code tells the caller what to do next.
//
// Thread safety: values; safe to copy between threads.
#pragma once

#include <cassert>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace converge {

// What a failure means for the caller. Keep the list short: every code is an instruction.
enum class StatusCode {
  kOk = 0,
  // A dependency (database, broker) is not reachable now: retry the same call after backoff.
  kUnavailable,
  // The unit of work lost a race (serialization failure, deadlock, fenced lease): retry the
  // whole unit of work from the start.
  kAborted,
  // The outcome is unknown (timeout after the request may have been applied). Retrying may
  // duplicate, so the receiver must dedupe.
  kDeadlineExceeded,
  // Retrying cannot help (message too large, topic not authorized, schema missing): park or
  // dead-letter, or ask a person.
  kFailedPrecondition,
  // The caller's input is wrong; the message names the field.
  kInvalidArgument,
  // The thing exists already. In dedupe this is the normal "seen before" answer.
  kAlreadyExists,
  // The thing asked for does not exist.
  kNotFound,
  // A bug or a broken invariant.
  kInternal,
};

std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK

  static Status Ok() { return Status(); }
  static Status Unavailable(std::string msg) { return {StatusCode::kUnavailable, std::move(msg)}; }
  static Status Aborted(std::string msg) { return {StatusCode::kAborted, std::move(msg)}; }
  static Status DeadlineExceeded(std::string msg) {
    return {StatusCode::kDeadlineExceeded, std::move(msg)};
  }
  static Status FailedPrecondition(std::string msg) {
    return {StatusCode::kFailedPrecondition, std::move(msg)};
  }
  static Status InvalidArgument(std::string msg) {
    return {StatusCode::kInvalidArgument, std::move(msg)};
  }
  static Status AlreadyExists(std::string msg) {
    return {StatusCode::kAlreadyExists, std::move(msg)};
  }
  static Status NotFound(std::string msg) { return {StatusCode::kNotFound, std::move(msg)}; }
  static Status Internal(std::string msg) { return {StatusCode::kInternal, std::move(msg)}; }

  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // True when repeating the same call (after backoff) may succeed.
  bool IsRetriable() const {
    return code_ == StatusCode::kUnavailable || code_ == StatusCode::kAborted ||
           code_ == StatusCode::kDeadlineExceeded;
  }
  // True when retrying cannot help: dead-letter, park, or report.
  bool IsPermanent() const { return !ok() && !IsRetriable(); }

  // "UNAVAILABLE: connection refused"
  std::string ToString() const;

  // Returns a copy whose message is prefixed with context: "relay claim: <message>".
  Status WithContext(std::string_view context) const;

  friend bool operator==(const Status& a, const Status& b) {
    return a.code_ == b.code_ && a.message_ == b.message_;
  }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

std::ostream& operator<<(std::ostream& os, const Status& s);

// Result<T> holds a T or a non-OK Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT: implicit by design
    assert(!std::get<Status>(v_).ok() && "Result built from an OK status carries no value");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T value_or(T fallback) const { return ok() ? value() : std::move(fallback); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace converge

// Returns early from the calling function when `expr` is not OK.
#define CONVERGE_RETURN_IF_ERROR(expr) \
  do {                                 \
    ::converge::Status _st = (expr);   \
    if (!_st.ok()) return _st;         \
  } while (0)

#define CONVERGE_CONCAT_INNER(a, b) a##b
#define CONVERGE_CONCAT(a, b) CONVERGE_CONCAT_INNER(a, b)
// CONVERGE_ASSIGN_OR_RETURN(auto x, Foo()); declares x from a Result or returns its Status.
#define CONVERGE_ASSIGN_OR_RETURN(lhs, expr) \
  CONVERGE_ASSIGN_OR_RETURN_IMPL(CONVERGE_CONCAT(_res_, __LINE__), lhs, expr)
#define CONVERGE_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                   \
  if (!tmp.ok()) return tmp.status();                  \
  lhs = std::move(tmp).value()
