// convergectl flows list|show|retry|compensate|resolve: multi-step flows (converge.flows and
// converge.flow_history, schema 3). The repairs call the same SQL functions the flow API and
// the reconciler use (converge.flow_retry, flow_compensate, flow_resolve in
// schemas/migrations/0003_flows.sql), so an operator cannot break "completed XOR compensated"
// either; each writes an audit row, and --dry-run runs it and rolls it back.
#include <iostream>
#include <regex>
#include <set>

#include "converge/common/json.h"
#include "ctl.h"

namespace converge::ctl {
namespace {

constexpr int kFlowsSchema = 3;

const char* OrNull(const std::optional<std::string>& v) { return v ? v->c_str() : nullptr; }

Status CheckFlowId(const std::string& id) {
  static const std::regex kUuid(
      "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$");
  if (!std::regex_match(id, kUuid))
    return Status::InvalidArgument("FLOW_ID \"" + id + "\" is not a UUID");
  return Status::Ok();
}

std::string Deadline(const pqxx::field& at, const pqxx::field& left) {
  if (at.is_null()) return "-";
  const int64_t s = left.as<int64_t>();
  return s >= 0 ? "in " + FormatAge(s) : "overdue " + FormatAge(-s);
}

int List(Invocation& inv) {
  const std::string state = inv.Get("state").value_or("all");
  static const std::set<std::string> kStates = {
      "all", "open", "running", "completed", "compensating", "compensated", "needs_attention"};
  if (!kStates.count(state))
    return inv.UsageError(
        "--state must be one of all, open, running, completed, compensating, "
        "compensated, needs_attention; got \"" +
        state + "\"");
  auto limit = inv.GetInt("limit", 1, 100000);
  if (!limit.ok()) return inv.UsageError(limit.status().message());
  pqxx::read_transaction tx(inv.db());
  const pqxx::result r = tx.exec_params(
      "SELECT flow_id::text, flow_type, business_key, state, step, step_name, attempts, " +
          SqlTime("deadline_at") +
          ", extract(epoch FROM deadline_at - now())::bigint, last_error, " +
          SqlTime("created_at") +
          ", greatest(0, extract(epoch FROM now() - created_at))::bigint, " +
          SqlTime("updated_at") +
          "  FROM converge.flows "
          " WHERE ($1::text = 'all' OR state = $1 "
          "        OR ($1 = 'open' AND state IN ('running', 'compensating', 'needs_attention'))) "
          "   AND ($2::text IS NULL OR flow_type = $2) "
          "   AND ($3::text IS NULL OR business_key = $3) "
          "   AND (NOT $4::boolean OR (state IN ('running', 'compensating') "
          "                            AND deadline_at <= now())) "
          " ORDER BY created_at, flow_id LIMIT $5",
      state, OrNull(inv.Get("type")), OrNull(inv.Get("key")), inv.Has("overdue"),
      limit->value_or(1000));
  if (inv.json()) {
    JsonWriter j;
    j.BeginObject().Key("flows").BeginArray();
    for (const auto& f : r) {
      j.BeginObject().Field("flow_id", f[0]).Field("flow_type", f[1]).Field("business_key", f[2]);
      j.Field("state", f[3]).FieldInt("step", f[4]).Field("step_name", f[5]);
      j.FieldInt("attempts", f[6]).Field("deadline_at", f[7]);
      j.FieldInt("deadline_in_seconds", f[8]).Field("last_error", f[9]);
      j.Field("created_at", f[10]).Field("updated_at", f[12]).EndObject();
    }
    j.EndArray().Key("count").Int(static_cast<int64_t>(r.size())).EndObject();
    inv.out() << j.str() << "\n";
    return kExitOk;
  }
  if (r.empty()) {
    inv.out() << "no flows\n";
    return kExitOk;
  }
  Table t({"FLOW_ID", "TYPE", "KEY", "STATE", "STEP", "ATTEMPTS", "DEADLINE", "AGE", "LAST_ERROR"});
  for (const auto& f : r) {
    t.AddRow({f[0].c_str(), f[1].c_str(), f[2].c_str(), f[3].c_str(),
              std::string(f[4].c_str()) + " " + f[5].c_str(), f[6].c_str(), Deadline(f[7], f[8]),
              FormatAge(f[11].as<int64_t>()), Cell(f[9])});
  }
  t.Print(inv.out());
  return kExitOk;
}

int Show(Invocation& inv) {
  const std::string id = inv.args()[0];
  if (Status st = CheckFlowId(id); !st.ok()) return inv.UsageError(st.message());
  pqxx::read_transaction tx(inv.db());
  const pqxx::result r = tx.exec_params(
      "SELECT flow_id::text, flow_type, business_key, state, step, step_name, attempts, " +
          SqlTime("deadline_at") +
          ", extract(epoch FROM deadline_at - now())::bigint, last_error, data::text, version, " +
          SqlTime("created_at") + ", " + SqlTime("updated_at") + ", " + SqlTime("finished_at") +
          ", " + SqlTime("compensation_started_at") +
          " FROM converge.flows WHERE flow_id = $1::uuid",
      id);
  if (r.empty()) return inv.Fail(Status::NotFound("flow " + id + " does not exist"));
  const pqxx::result h = tx.exec_params(
      "SELECT " + SqlTime("at") +
          ", step, step_name, event, message_id::text, detail FROM converge.flow_history "
          "WHERE flow_id = $1::uuid ORDER BY id",
      id);
  const auto& f = r[0];
  if (inv.json()) {
    JsonWriter j;
    j.BeginObject().Field("flow_id", f[0]).Field("flow_type", f[1]).Field("business_key", f[2]);
    j.Field("state", f[3]).FieldInt("step", f[4]).Field("step_name", f[5]);
    j.FieldInt("attempts", f[6]).Field("deadline_at", f[7]).FieldInt("deadline_in_seconds", f[8]);
    j.Field("last_error", f[9]).Key("data").Raw(f[10].c_str()).FieldInt("version", f[11]);
    j.Field("created_at", f[12]).Field("updated_at", f[13]).Field("finished_at", f[14]);
    j.Field("compensation_started_at", f[15]).Key("history").BeginArray();
    for (const auto& e : h) {
      j.BeginObject().Field("at", e[0]).FieldInt("step", e[1]).Field("step_name", e[2]);
      j.Field("event", e[3]).Field("message_id", e[4]).Field("detail", e[5]).EndObject();
    }
    j.EndArray().EndObject();
    inv.out() << j.str() << "\n";
    return kExitOk;
  }
  Table t({"FIELD", "VALUE"}, 100);
  t.AddRow({"flow_id", f[0].c_str()});
  t.AddRow({"type", f[1].c_str()});
  t.AddRow({"business_key", f[2].c_str()});
  t.AddRow({"state", f[3].c_str()});
  t.AddRow({"step", std::string(f[4].c_str()) + " " + f[5].c_str()});
  t.AddRow({"attempts", f[6].c_str()});
  t.AddRow({"deadline", Cell(f[7]) + (f[7].is_null() ? "" : " (" + Deadline(f[7], f[8]) + ")")});
  t.AddRow({"last_error", Cell(f[9])});
  t.AddRow({"data", f[10].c_str()});
  t.AddRow({"version", f[11].c_str()});
  t.AddRow({"created_at", Cell(f[12])});
  t.AddRow({"updated_at", Cell(f[13])});
  t.AddRow({"finished_at", Cell(f[14])});
  t.AddRow({"compensation_started_at", Cell(f[15])});
  t.Print(inv.out());
  inv.out() << "\nhistory:\n";
  Table ht({"AT", "STEP", "EVENT", "MESSAGE_ID", "DETAIL"});
  for (const auto& e : h)
    ht.AddRow({e[0].c_str(), std::string(e[1].c_str()) + " " + e[2].c_str(), e[3].c_str(),
               Cell(e[4]), Cell(e[5])});
  ht.Print(inv.out());
  return kExitOk;
}

// Runs one repair function on a flow inside Invocation::Repair, with the audit row.
int RunRepair(Invocation& inv, const std::string& action, const std::string& sql,
              const std::vector<std::string>& extra) {
  const std::string id = inv.args()[0];
  if (Status st = CheckFlowId(id); !st.ok()) return inv.UsageError(st.message());
  std::string before, after, text;
  Status st = inv.Repair([&](pqxx::work& tx) -> Status {
    const pqxx::result cur = tx.exec_params(
        "SELECT state || ' at step ' || step || ' (' || step_name || ')' FROM converge.flows "
        "WHERE flow_id = $1::uuid FOR UPDATE",
        id);
    if (cur.empty()) return Status::NotFound("flow " + id + " does not exist");
    before = cur[0][0].c_str();
    pqxx::result r;
    if (extra.empty()) {
      r = tx.exec_params(sql, id);
    } else if (extra.size() == 1) {
      r = tx.exec_params(sql, id, extra[0]);
    } else {
      r = tx.exec_params(sql, id, extra[0], extra[1]);
    }
    text = r[0][0].c_str();
    after = tx.exec_params(
                  "SELECT state || ' at step ' || step || ' (' || step_name || ')' FROM "
                  "converge.flows WHERE flow_id = $1::uuid",
                  id)[0][0]
                .c_str();
    std::string details = "{\"before\":";
    AppendJsonString(details, before);
    details += ",\"after\":";
    AppendJsonString(details, after);
    details += ",\"result\":";
    AppendJsonString(details, text);
    details += "}";
    inv.Audit(tx, "flows." + action, "flow:" + id, details);
    return Status::Ok();
  });
  if (!st.ok()) {
    // A refused transition (wrong state) is SQLSTATE 55000: say so plainly.
    if (st.code() == StatusCode::kInternal && st.message().find("55000") != std::string::npos)
      return inv.Fail(Status::FailedPrecondition(st.message()));
    return inv.Fail(st);
  }
  if (inv.json()) {
    JsonWriter j;
    j.BeginObject().Key("dry_run").Bool(inv.dry_run()).Key("action").String(action);
    j.Key("flow_id").String(id).Key("before").String(before).Key("after").String(after);
    j.Key("result").String(text).EndObject();
    inv.out() << j.str() << "\n";
    return kExitOk;
  }
  inv.out() << (inv.dry_run() ? "would " : "") << action << " flow " << id << ": " << text
            << " (was " << before << ", " << (inv.dry_run() ? "would be " : "now ") << after
            << ")\n";
  if (inv.dry_run()) inv.out() << "dry run: nothing was changed\n";
  return kExitOk;
}

int Retry(Invocation& inv) {
  return RunRepair(inv, "retry", "SELECT converge.flow_retry($1::uuid)", {});
}

int Compensate(Invocation& inv) {
  return RunRepair(inv, "compensate", "SELECT converge.flow_compensate($1::uuid, $2)",
                   {inv.actor() + ": " + inv.reason()});
}

int Resolve(Invocation& inv) {
  const std::string outcome = inv.Get("outcome").value_or("");
  if (outcome != "completed" && outcome != "compensated")
    return inv.UsageError("--outcome must be completed or compensated");
  return RunRepair(inv, "resolve", "SELECT converge.flow_resolve($1::uuid, $2, $3)",
                   {outcome, inv.actor() + ": " + inv.reason()});
}

const Registration kList({.path = "flows list",
                          .summary = "flows with state, step, attempts and deadline",
                          .options = {{"state", "STATE",
                                       "all (default), open, running, completed, compensating, "
                                       "compensated or needs_attention"},
                                      {"type", "TYPE", "only this flow type"},
                                      {"key", "KEY", "only this business key"},
                                      {"overdue", "",
                                       "only running/compensating flows past "
                                       "their deadline"},
                                      {"limit", "N", "at most N flows (default 1000)"}},
                          .min_schema = kFlowsSchema,
                          .run = List});

const Registration kShow({.path = "flows show",
                          .args = "FLOW_ID",
                          .summary = "one flow with its step history",
                          .min_schema = kFlowsSchema,
                          .min_args = 1,
                          .max_args = 1,
                          .run = Show});

const Registration kRetry({.path = "flows retry",
                           .args = "FLOW_ID",
                           .summary = "re-emit the current step (or compensation) now, one more "
                                      "attempt",
                           .repair = true,
                           .min_schema = kFlowsSchema,
                           .min_args = 1,
                           .max_args = 1,
                           .run = Retry});

const Registration kCompensate({.path = "flows compensate",
                                .args = "FLOW_ID",
                                .summary = "give up on a running flow: compensate its steps in "
                                           "reverse order",
                                .repair = true,
                                .min_schema = kFlowsSchema,
                                .min_args = 1,
                                .max_args = 1,
                                .run = Compensate});

const Registration kResolve({.path = "flows resolve",
                             .args = "FLOW_ID",
                             .summary = "record the outcome of a flow fixed by hand",
                             .options = {{"outcome", "OUTCOME", "completed or compensated"}},
                             .repair = true,
                             .min_schema = kFlowsSchema,
                             .min_args = 1,
                             .max_args = 1,
                             .run = Resolve});

}  // namespace
}  // namespace converge::ctl
