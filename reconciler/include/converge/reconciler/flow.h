// Flows: multi-step business processes (order placed -> stock reserved -> paid -> shipped) whose
// state advances inside the caller's PostgreSQL transaction, in the same transaction as the work.
//
//   FlowType order{.name = "order", .steps = {
//       {.name = "reserve", .command = {"stock", "stock.reserve"}, .reply_type = "stock.reserved",
//        .compensation = MessageRoute{"stock", "stock.release"}},
//       {.name = "pay", .command = {"payments", "payment.charge"}, .reply_type = "payment.charged",
//        .compensation = MessageRoute{"payments", "payment.refund"}}}};
//   pqxx::work tx(conn);
//   CONVERGE_RETURN_IF_ERROR(flows::Register(tx, order));            // once, at deployment
//   CONVERGE_ASSIGN_OR_RETURN(FlowId id, flows::Start(tx, "order", order_id, R"({"total":12})"));
//   tx.commit();
//
//   // In the consumer handler of "stock.reserved" (consumer.h), with the reply's own work:
//   CONVERGE_ASSIGN_OR_RETURN(FlowRef ref, flows::RefFromHeaders(message.headers));
//   CONVERGE_ASSIGN_OR_RETURN(ReplyOutcome o, flows::CompleteStep(ctx.tx(), ref.flow_id,
//   ref.step));
//
// Every step emits its command through the outbox (converge.enqueue) with key = business key,
// payload {"flow_id","flow_type","business_key","step","step_name","data"} and headers
// converge-flow-id, converge-flow-step, converge-flow-kind (command|compensation|confirm),
// converge-flow-attempt and converge-flow-step-key. The receiver echoes converge-flow-id and
// converge-flow-step in its reply (copy the headers) so the reply's handler can find the flow.
//
// Message ids and idempotence: the id of an emission is md5(flow, step, kind, attempt) — the
// same attempt always has the same id (a crash or a second reconciler cannot create a different
// message for it; the consumer inbox drops redeliveries), and the next attempt has a new id (so
// the receiver runs its handler again and sends the reply that was lost). The receiver makes the
// step's *effect* idempotent by converge-flow-step-key, which is equal for every attempt.
//
// Completed XOR compensated: every transition locks the flow's row and checks state and step in
// SQL (converge.flow_* functions, schemas/migrations/0003_flows.sql); a trigger refuses any
// update that would complete a flow that started compensating. Deadlines use the database clock.
//
// Errors: kInvalidArgument (unknown flow or flow type, bad JSON: the message names it),
// kAlreadyExists (Start: a flow of that type exists for the business key), kUnavailable,
// kAborted (retry the transaction), kFailedPrecondition (schema not migrated). After an error the
// transaction is aborted by the server (a consumer handler's savepoint undoes it).
//
// Thread safety: as safe as the pqxx transaction passed in (one thread at a time).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <pqxx/transaction_base>

#include "converge/common/status.h"

namespace converge::flows {

// A flow's id (canonical UUID text).
struct FlowId {
  std::string value;
  friend bool operator==(const FlowId&, const FlowId&) = default;
};

// Where a message goes and what it is.
struct MessageRoute {
  std::string topic;  // outbox topic
  std::string type;   // CloudEvents type
};

struct StepDef {
  // Unique within the flow type; shown in history and convergectl.
  std::string name;
  // Emitted when the step starts (and re-emitted, with the next attempt's id, on its deadline).
  MessageRoute command;
  // The reply type that completes the step (documentation: the handler for it calls
  // CompleteStep).
  std::string reply_type;
  // Emitted, in reverse step order, when the flow compensates. Steps without one are skipped.
  std::optional<MessageRoute> compensation;
  // Try/Confirm/Cancel: emitted for every step that has one when the whole flow completes.
  std::optional<MessageRoute> confirm;
  // How long the step waits for its reply before the reconciler re-emits it (database clock).
  std::chrono::milliseconds deadline{30000};
  // Emissions of the command before the flow compensates (1 = no re-emission).
  int max_attempts = 3;
};

struct FlowType {
  // Letters, digits, ".", "_", "-"; at most 128 characters.
  std::string name;
  std::vector<StepDef> steps;
  // How long a compensation waits for CompensationDone before it is re-emitted.
  std::chrono::milliseconds compensation_deadline{30000};
  // Emissions of one compensation before the flow is parked as needs_attention.
  int compensation_max_attempts = 5;

  // Names the first problem: "flow type order: step 1 (pay): command.topic must not be empty".
  Status Validate() const;
  // The definition stored in converge.flow_types (see 0003_flows.sql).
  std::string ToJson() const;
};

// One Try/Confirm/Cancel participant: Try is the step's command, Confirm is sent to every
// participant when all tried successfully, Cancel (the compensation) otherwise.
struct TccParticipant {
  std::string name;
  std::string topic;
  std::string try_type;
  std::string confirm_type;
  std::string cancel_type;
  std::string reply_type;  // "tried" reply
  std::chrono::milliseconds deadline{30000};
  int max_attempts = 3;
};
// A flow type in the TCC shape: one step per participant, each with confirm and cancel.
FlowType TccFlow(std::string name, const std::vector<TccParticipant>& participants);

// Registers or replaces the flow type (converge.flow_register).
Status Register(pqxx::transaction_base& tx, const FlowType& type);

// Starts a flow at step 0 and emits its command. `data_json` (a JSON object) travels in every
// message's payload; replies may merge more into it. `flow_id` empty: a new UUIDv7.
Result<FlowId> Start(pqxx::transaction_base& tx, const std::string& flow_type,
                     const std::string& business_key, const std::string& data_json = "{}",
                     const std::string& flow_id = "");

// What a reply did.
enum class ReplyOutcome {
  kAdvanced,      // the next step (or next compensation) was emitted
  kCompleted,     // the flow completed (TCC confirms emitted)
  kCompensating,  // a failure reply started compensation
  kCompensated,   // the flow ended compensated
  kRetrying,      // a failed compensation will be re-emitted by the reconciler
  kDuplicate,     // the flow is already past this step: nothing changed
  kLate,          // the flow is compensating or parked: the reply changed nothing
};
const char* ReplyOutcomeName(ReplyOutcome o);

// The reply completing step `step` arrived; `data_json` (an object) is merged into the data.
Result<ReplyOutcome> CompleteStep(pqxx::transaction_base& tx, const FlowId& id, int step,
                                  const std::string& data_json = "{}");
// Step `step` failed for good: compensate the steps before it.
Result<ReplyOutcome> FailStep(pqxx::transaction_base& tx, const FlowId& id, int step,
                              const std::string& reason);
// The compensation of step `step` was applied.
Result<ReplyOutcome> CompensationDone(pqxx::transaction_base& tx, const FlowId& id, int step);
// The compensation of step `step` failed; the reconciler retries it, then parks the flow.
Result<ReplyOutcome> CompensationFailed(pqxx::transaction_base& tx, const FlowId& id, int step,
                                        const std::string& reason);

// The flow coordinates carried in a flow message's headers.
struct FlowRef {
  FlowId flow_id;
  int step = 0;
  std::string kind;  // command, compensation, confirm
  int attempt = 0;
  std::string step_key;  // same for every attempt of (flow, step, kind)
};
// kInvalidArgument naming the missing or malformed header.
Result<FlowRef> RefFromHeaders(const std::map<std::string, std::string>& headers);

struct FlowInfo {
  FlowId flow_id;
  std::string flow_type;
  std::string business_key;
  std::string state;  // running, completed, compensating, compensated, needs_attention
  int step = 0;
  std::string step_name;
  int attempts = 0;
  std::string deadline_at;  // database time as text, empty when none
  std::string last_error;
  std::string data_json;
  int64_t version = 0;
  std::string created_at, updated_at, finished_at, compensation_started_at;
};
struct HistoryEntry {
  int64_t id = 0;
  std::string at;
  int step = 0;
  std::string step_name;
  std::string event;
  std::string message_id;
  std::string detail;
};
// kNotFound when there is no such flow.
Result<FlowInfo> Get(pqxx::transaction_base& tx, const FlowId& id);
Result<std::vector<HistoryEntry>> History(pqxx::transaction_base& tx, const FlowId& id);

}  // namespace converge::flows
