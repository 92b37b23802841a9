#include "converge/reconciler/flow.h"

#include <pqxx/pqxx>

#include <charconv>
#include <set>

#include "converge/common/json.h"
#include "converge/schemas/pg.h"

namespace converge::flows {
namespace {

bool NameChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

Status CheckRoute(const std::string& where, const MessageRoute& r) {
  if (r.topic.empty()) return Status::InvalidArgument(where + ".topic must not be empty");
  if (r.type.empty()) return Status::InvalidArgument(where + ".type must not be empty");
  return Status::Ok();
}

void AppendField(std::string& out, const char* name, const std::string& value) {
  out += ',';
  AppendJsonString(out, name);
  out += ':';
  AppendJsonString(out, value);
}

void AppendInt(std::string& out, const char* name, int64_t value) {
  out += ',';
  AppendJsonString(out, name);
  out += ':';
  out += std::to_string(value);
}

Result<ReplyOutcome> ParseOutcome(const std::string& s) {
  if (s == "advanced") return ReplyOutcome::kAdvanced;
  if (s == "completed") return ReplyOutcome::kCompleted;
  if (s == "compensating") return ReplyOutcome::kCompensating;
  if (s == "compensated") return ReplyOutcome::kCompensated;
  if (s == "retrying") return ReplyOutcome::kRetrying;
  if (s == "duplicate") return ReplyOutcome::kDuplicate;
  if (s == "late") return ReplyOutcome::kLate;
  return Status::Internal("unexpected flow outcome \"" + s + "\"");
}

Status CheckId(const FlowId& id) {
  if (id.value.empty()) return Status::InvalidArgument("flow id must not be empty");
  return Status::Ok();
}

template <typename... Args>
Result<ReplyOutcome> CallOutcome(pqxx::transaction_base& tx, const char* sql, Args&&... args) {
  try {
    auto r = tx.exec_params(sql, std::forward<Args>(args)...);
    return ParseOutcome(std::string(r[0][0].c_str()));
  } catch (const std::exception& e) {
    return pg::StatusFromException(e);
  }
}

std::string Text(const pqxx::field& f) { return f.is_null() ? std::string() : f.c_str(); }

}  // namespace

Status FlowType::Validate() const {
  const std::string prefix = "flow type " + name + ": ";
  if (name.empty() || name.size() > 128) {
    return Status::InvalidArgument("flow type name must be 1 to 128 characters");
  }
  for (char c : name) {
    if (!NameChar(c)) {
      return Status::InvalidArgument("flow type name \"" + name +
                                     "\" may only contain letters, digits, \".\", \"_\" and \"-\"");
    }
  }
  if (steps.empty()) return Status::InvalidArgument(prefix + "needs at least one step");
  std::set<std::string> names;
  for (size_t i = 0; i < steps.size(); ++i) {
    const StepDef& s = steps[i];
    const std::string where = prefix + "step " + std::to_string(i) + " (" + s.name + ")";
    if (s.name.empty()) return Status::InvalidArgument(where + ": name must not be empty");
    if (!names.insert(s.name).second)
      return Status::InvalidArgument(where + ": the step name is used twice");
    CONVERGE_RETURN_IF_ERROR(CheckRoute(where + ": command", s.command));
    if (s.compensation)
      CONVERGE_RETURN_IF_ERROR(CheckRoute(where + ": compensation", *s.compensation));
    if (s.confirm) CONVERGE_RETURN_IF_ERROR(CheckRoute(where + ": confirm", *s.confirm));
    if (s.deadline.count() <= 0) return Status::InvalidArgument(where + ": deadline must be > 0");
    if (s.max_attempts < 1) return Status::InvalidArgument(where + ": max_attempts must be >= 1");
  }
  if (compensation_deadline.count() <= 0)
    return Status::InvalidArgument(prefix + "compensation_deadline must be > 0");
  if (compensation_max_attempts < 1)
    return Status::InvalidArgument(prefix + "compensation_max_attempts must be >= 1");
  return Status::Ok();
}

std::string FlowType::ToJson() const {
  std::string out = "{\"steps\":[";
  for (size_t i = 0; i < steps.size(); ++i) {
    const StepDef& s = steps[i];
    if (i) out += ',';
    out += "{\"name\":";
    AppendJsonString(out, s.name);
    AppendField(out, "topic", s.command.topic);
    AppendField(out, "command", s.command.type);
    if (!s.reply_type.empty()) AppendField(out, "reply", s.reply_type);
    if (s.compensation) {
      AppendField(out, "compensation", s.compensation->type);
      AppendField(out, "compensation_topic", s.compensation->topic);
    }
    if (s.confirm) {
      AppendField(out, "confirm", s.confirm->type);
      AppendField(out, "confirm_topic", s.confirm->topic);
    }
    AppendInt(out, "deadline_ms", s.deadline.count());
    AppendInt(out, "max_attempts", s.max_attempts);
    out += '}';
  }
  out += ']';
  AppendInt(out, "compensation_deadline_ms", compensation_deadline.count());
  AppendInt(out, "compensation_max_attempts", compensation_max_attempts);
  out += '}';
  return out;
}

FlowType TccFlow(std::string name, const std::vector<TccParticipant>& participants) {
  FlowType t;
  t.name = std::move(name);
  for (const auto& p : participants) {
    StepDef s;
    s.name = p.name;
    s.command = {p.topic, p.try_type};
    s.reply_type = p.reply_type;
    s.compensation = MessageRoute{p.topic, p.cancel_type};
    s.confirm = MessageRoute{p.topic, p.confirm_type};
    s.deadline = p.deadline;
    s.max_attempts = p.max_attempts;
    t.steps.push_back(std::move(s));
  }
  return t;
}

const char* ReplyOutcomeName(ReplyOutcome o) {
  switch (o) {
    case ReplyOutcome::kAdvanced:
      return "advanced";
    case ReplyOutcome::kCompleted:
      return "completed";
    case ReplyOutcome::kCompensating:
      return "compensating";
    case ReplyOutcome::kCompensated:
      return "compensated";
    case ReplyOutcome::kRetrying:
      return "retrying";
    case ReplyOutcome::kDuplicate:
      return "duplicate";
    case ReplyOutcome::kLate:
      return "late";
  }
  return "?";
}

Status Register(pqxx::transaction_base& tx, const FlowType& type) {
  CONVERGE_RETURN_IF_ERROR(type.Validate());
  try {
    tx.exec_params("SELECT converge.flow_register($1, $2::jsonb)", type.name, type.ToJson());
    return Status::Ok();
  } catch (const std::exception& e) {
    return pg::StatusFromException(e);
  }
}

Result<FlowId> Start(pqxx::transaction_base& tx, const std::string& flow_type,
                     const std::string& business_key, const std::string& data_json,
                     const std::string& flow_id) {
  if (flow_type.empty()) return Status::InvalidArgument("flow type must not be empty");
  if (business_key.empty()) return Status::InvalidArgument("business key must not be empty");
  try {
    auto r = tx.exec_params("SELECT converge.flow_start($1, $2, $3::jsonb, $4::uuid)::text",
                            flow_type, business_key, data_json.empty() ? "{}" : data_json,
                            flow_id.empty() ? nullptr : flow_id.c_str());
    return FlowId{r[0][0].as<std::string>()};
  } catch (const std::exception& e) {
    return pg::StatusFromException(e);
  }
}

Result<ReplyOutcome> CompleteStep(pqxx::transaction_base& tx, const FlowId& id, int step,
                                  const std::string& data_json) {
  CONVERGE_RETURN_IF_ERROR(CheckId(id));
  return CallOutcome(tx, "SELECT converge.flow_complete_step($1::uuid, $2, $3::jsonb)", id.value,
                     step, data_json.empty() ? "{}" : data_json);
}

Result<ReplyOutcome> FailStep(pqxx::transaction_base& tx, const FlowId& id, int step,
                              const std::string& reason) {
  CONVERGE_RETURN_IF_ERROR(CheckId(id));
  return CallOutcome(tx, "SELECT converge.flow_fail_step($1::uuid, $2, $3)", id.value, step,
                     reason);
}

Result<ReplyOutcome> CompensationDone(pqxx::transaction_base& tx, const FlowId& id, int step) {
  CONVERGE_RETURN_IF_ERROR(CheckId(id));
  return CallOutcome(tx, "SELECT converge.flow_compensation_done($1::uuid, $2)", id.value, step);
}

Result<ReplyOutcome> CompensationFailed(pqxx::transaction_base& tx, const FlowId& id, int step,
                                        const std::string& reason) {
  CONVERGE_RETURN_IF_ERROR(CheckId(id));
  return CallOutcome(tx, "SELECT converge.flow_compensation_failed($1::uuid, $2, $3)", id.value,
                     step, reason);
}

Result<FlowRef> RefFromHeaders(const std::map<std::string, std::string>& headers) {
  auto get = [&](const char* name) -> Result<std::string> {
    auto it = headers.find(name);
    if (it == headers.end() || it->second.empty())
      return Status::InvalidArgument(std::string("header ") + name + " is missing");
    return it->second;
  };
  auto number = [&](const char* name) -> Result<int> {
    CONVERGE_ASSIGN_OR_RETURN(std::string s, get(name));
    int v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size() || v < 0)
      return Status::InvalidArgument(std::string("header ") + name + " is not a number: \"" + s +
                                     "\"");
    return v;
  };
  FlowRef ref;
  CONVERGE_ASSIGN_OR_RETURN(ref.flow_id.value, get("converge-flow-id"));
  CONVERGE_ASSIGN_OR_RETURN(ref.step, number("converge-flow-step"));
  if (auto it = headers.find("converge-flow-kind"); it != headers.end()) ref.kind = it->second;
  if (headers.count("converge-flow-attempt")) {
    CONVERGE_ASSIGN_OR_RETURN(ref.attempt, number("converge-flow-attempt"));
  }
  if (auto it = headers.find("converge-flow-step-key"); it != headers.end())
    ref.step_key = it->second;
  return ref;
}

Result<FlowInfo> Get(pqxx::transaction_base& tx, const FlowId& id) {
  CONVERGE_RETURN_IF_ERROR(CheckId(id));
  try {
    auto r = tx.exec_params(
        "SELECT flow_id::text, flow_type, business_key, state, step, step_name, attempts, "
        "deadline_at::text, last_error, data::text, version, created_at::text, updated_at::text, "
        "finished_at::text, compensation_started_at::text "
        "FROM converge.flows WHERE flow_id = $1::uuid",
        id.value);
    if (r.empty()) return Status::NotFound("flow " + id.value + " does not exist");
    const auto& row = r[0];
    FlowInfo f;
    f.flow_id.value = Text(row[0]);
    f.flow_type = Text(row[1]);
    f.business_key = Text(row[2]);
    f.state = Text(row[3]);
    f.step = row[4].as<int>();
    f.step_name = Text(row[5]);
    f.attempts = row[6].as<int>();
    f.deadline_at = Text(row[7]);
    f.last_error = Text(row[8]);
    f.data_json = Text(row[9]);
    f.version = row[10].as<int64_t>();
    f.created_at = Text(row[11]);
    f.updated_at = Text(row[12]);
    f.finished_at = Text(row[13]);
    f.compensation_started_at = Text(row[14]);
    return f;
  } catch (const std::exception& e) {
    return pg::StatusFromException(e);
  }
}

Result<std::vector<HistoryEntry>> History(pqxx::transaction_base& tx, const FlowId& id) {
  CONVERGE_RETURN_IF_ERROR(CheckId(id));
  try {
    auto r = tx.exec_params(
        "SELECT id, at::text, step, step_name, event, message_id::text, detail "
        "FROM converge.flow_history WHERE flow_id = $1::uuid ORDER BY id",
        id.value);
    std::vector<HistoryEntry> out;
    for (const auto& row : r) {
      HistoryEntry h;
      h.id = row[0].as<int64_t>();
      h.at = Text(row[1]);
      h.step = row[2].as<int>();
      h.step_name = Text(row[3]);
      h.event = Text(row[4]);
      h.message_id = Text(row[5]);
      h.detail = Text(row[6]);
      out.push_back(std::move(h));
    }
    return out;
  } catch (const std::exception& e) {
    return pg::StatusFromException(e);
  }
}

}  // namespace converge::flows
