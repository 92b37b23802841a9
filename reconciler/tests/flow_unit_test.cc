// Flow definitions and flow headers, without a database.
#include <gtest/gtest.h>

#include "converge/reconciler/flow.h"
#include "converge/reconciler/reconciler.h"

namespace converge::flows {
namespace {

FlowType Order() {
  FlowType t;
  t.name = "order";
  t.steps.push_back({.name = "reserve",
                     .command = {"stock", "stock.reserve"},
                     .reply_type = "stock.reserved",
                     .compensation = MessageRoute{"stock", "stock.release"}});
  t.steps.push_back({.name = "pay", .command = {"payments", "payment.charge"}});
  return t;
}

TEST(FlowTypeTest, ValidDefinitionPasses) { EXPECT_TRUE(Order().Validate().ok()); }

TEST(FlowTypeTest, ProblemsAreNamed) {
  FlowType t = Order();
  t.steps[1].command.topic = "";
  Status st = t.Validate();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("step 1 (pay): command.topic must not be empty"), std::string::npos)
      << st;

  t = Order();
  t.steps[1].name = "reserve";
  EXPECT_NE(t.Validate().message().find("used twice"), std::string::npos);

  t = Order();
  t.steps[0].max_attempts = 0;
  EXPECT_NE(t.Validate().message().find("max_attempts must be >= 1"), std::string::npos);

  t = Order();
  t.name = "bad name";
  EXPECT_NE(t.Validate().message().find("may only contain"), std::string::npos);

  t = Order();
  t.steps.clear();
  EXPECT_NE(t.Validate().message().find("at least one step"), std::string::npos);
}

TEST(FlowTypeTest, JsonCarriesEveryField) {
  FlowType t = Order();
  t.steps[0].deadline = std::chrono::milliseconds(1500);
  EXPECT_EQ(
      t.ToJson(),
      R"({"steps":[{"name":"reserve","topic":"stock","command":"stock.reserve",)"
      R"("reply":"stock.reserved","compensation":"stock.release",)"
      R"("compensation_topic":"stock","deadline_ms":1500,"max_attempts":3},)"
      R"({"name":"pay","topic":"payments","command":"payment.charge","deadline_ms":30000,)"
      R"("max_attempts":3}],"compensation_deadline_ms":30000,"compensation_max_attempts":5})");
}

TEST(FlowTypeTest, TccShapeHasConfirmAndCancelPerParticipant) {
  FlowType t = TccFlow("booking", {{.name = "seat",
                                    .topic = "seats",
                                    .try_type = "seat.hold",
                                    .confirm_type = "seat.book",
                                    .cancel_type = "seat.free"}});
  ASSERT_TRUE(t.Validate().ok());
  ASSERT_EQ(t.steps.size(), 1u);
  EXPECT_EQ(t.steps[0].command.type, "seat.hold");
  EXPECT_EQ(t.steps[0].confirm->type, "seat.book");
  EXPECT_EQ(t.steps[0].compensation->type, "seat.free");
}

TEST(FlowRefTest, ParsesHeaders) {
  auto ref = RefFromHeaders({{"converge-flow-id", "0190a000-0000-7000-8000-000000000001"},
                             {"converge-flow-step", "2"},
                             {"converge-flow-kind", "command"},
                             {"converge-flow-attempt", "3"},
                             {"converge-flow-step-key", "k"}});
  ASSERT_TRUE(ref.ok()) << ref.status();
  EXPECT_EQ(ref->flow_id.value, "0190a000-0000-7000-8000-000000000001");
  EXPECT_EQ(ref->step, 2);
  EXPECT_EQ(ref->attempt, 3);
  EXPECT_EQ(ref->kind, "command");
  EXPECT_EQ(ref->step_key, "k");
}

TEST(FlowRefTest, MissingOrBadHeadersAreNamed) {
  auto r = RefFromHeaders({{"converge-flow-step", "1"}});
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("converge-flow-id is missing"), std::string::npos);
  r = RefFromHeaders({{"converge-flow-id", "x"}, {"converge-flow-step", "one"}});
  EXPECT_NE(r.status().message().find("converge-flow-step is not a number"), std::string::npos);
}

TEST(ReconcilerOptionsTest, ValidateNamesTheKey) {
  reconciler::ReconcilerOptions o;
  EXPECT_NE(o.Validate().message().find("database.url"), std::string::npos);
  o.database_url = "postgresql://x/y";
  EXPECT_TRUE(o.Validate().ok());
  o.batch_size = 0;
  EXPECT_NE(o.Validate().message().find("reconciler.batch_size"), std::string::npos);
}

}  // namespace
}  // namespace converge::flows
