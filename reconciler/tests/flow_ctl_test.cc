// convergectl flows list|show|retry|compensate|resolve as a process against a fresh database:
// table and JSON output, exit codes, audit rows, and --dry-run changing nothing.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "converge/reconciler/flow.h"
#include "converge/testing/env.h"
#include "converge/testing/pg_fixture.h"
#include "converge/testing/process.h"

namespace converge {
namespace {

using namespace std::chrono_literals;

struct CtlRun {
  int code = -1;
  std::string out;  // stdout and stderr
};

class FlowCtlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(db_.ok());
    auto c = db_.Connect();
    pqxx::work tx(*c);
    flows::FlowType t;
    t.name = "order";
    t.steps.push_back({.name = "reserve",
                       .command = {"stock", "stock.reserve"},
                       .compensation = flows::MessageRoute{"stock", "stock.release"}});
    t.steps.push_back({.name = "pay",
                       .command = {"payments", "payment.charge"},
                       .compensation = flows::MessageRoute{"payments", "payment.refund"}});
    ASSERT_TRUE(flows::Register(tx, t).ok());
    running_ = *flows::Start(tx, "order", "o-running", R"({"total":12})");
    parked_ = *flows::Start(tx, "order", "o-parked");
    ASSERT_TRUE(flows::CompleteStep(tx, parked_, 0).ok());
    ASSERT_TRUE(flows::FailStep(tx, parked_, 1, "card declined").ok());
    tx.commit();
    // The release keeps failing: parked as needs_attention.
    db_.Scalar(
        "UPDATE converge.flows SET state = 'needs_attention', deadline_at = NULL, "
        "last_error = 'compensation of step \"reserve\" failed after 5 attempt(s)' "
        "WHERE flow_id = '" +
        parked_.value + "'");
  }

  CtlRun Ctl(std::vector<std::string> args) {
    static int n = 0;
    const std::string log = ::testing::TempDir() + "flow-ctl-" + std::to_string(++n) + ".log";
    std::remove(log.c_str());
    args.push_back("--db=" + db_.url());
    testing::ChildProcess p;
    CtlRun r;
    if (!p.Start(testing::BinDir() + "/convergectl", args, {}, log)) return r;
    r.code = p.Wait(20000ms);
    std::ifstream f(log);
    std::stringstream ss;
    ss << f.rdbuf();
    r.out = ss.str();
    return r;
  }

  // Everything a repair could touch.
  std::string Fingerprint() {
    return db_.Scalar(
        "SELECT md5(coalesce((SELECT string_agg(f::text, '|' ORDER BY flow_id) FROM "
        "converge.flows f), '') || coalesce((SELECT string_agg(h::text, '|' ORDER BY id) FROM "
        "converge.flow_history h), '') || coalesce((SELECT string_agg(o::text, '|' ORDER BY id) "
        "FROM converge.outbox o), '') || (SELECT count(*) FROM converge.audit_log)::text)");
  }

  testing::TestDatabase db_;
  flows::FlowId running_, parked_;
};

TEST_F(FlowCtlTest, ListPrintsATableAndJson) {
  CtlRun r = Ctl({"flows", "list"});
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("FLOW_ID"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(running_.value), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("needs_attention"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("0 reserve"), std::string::npos) << r.out;

  r = Ctl({"flows", "list", "--state", "needs_attention", "--output", "json"});
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out.rfind("{\"flows\":[{\"flow_id\":\"" + parked_.value + "\"", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("\"state\":\"needs_attention\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"count\":1}"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find(running_.value), std::string::npos) << r.out;

  r = Ctl({"flows", "list", "--state", "stuck"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("--state must be one of"), std::string::npos) << r.out;
}

TEST_F(FlowCtlTest, ShowPrintsTheHistoryAndNamesMissingFlows) {
  CtlRun r = Ctl({"flows", "show", parked_.value});
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("history:"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("step_failed"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("compensation_emitted"), std::string::npos) << r.out;

  r = Ctl({"flows", "show", running_.value, "--output=json"});
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"data\":{\"total\": 12}"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"history\":[{"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"event\":\"started\""), std::string::npos) << r.out;

  r = Ctl({"flows", "show", "00000000-0000-0000-0000-000000000042"});
  EXPECT_EQ(r.code, 4) << r.out;
  EXPECT_NE(r.out.find("does not exist"), std::string::npos) << r.out;
  r = Ctl({"flows", "show", "order-42"});
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("is not a UUID"), std::string::npos) << r.out;
}

TEST_F(FlowCtlTest, DryRunsChangeNothing) {
  const std::string before = Fingerprint();
  CtlRun r = Ctl({"flows", "compensate", running_.value, "--dry-run", "--reason", "test"});
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("would compensate"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("dry run: nothing was changed"), std::string::npos) << r.out;
  r = Ctl({"flows", "retry", parked_.value, "--dry-run", "--reason", "test", "--output", "json"});
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"dry_run\":true"), std::string::npos) << r.out;
  r = Ctl({"flows", "resolve", parked_.value, "--outcome", "compensated", "--dry-run", "--reason",
           "test"});
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(Fingerprint(), before);
}

TEST_F(FlowCtlTest, RepairsApplyWriteAuditRowsAndRefuseWhatWouldBreakTheRules) {
  CtlRun r = Ctl({"flows", "retry", parked_.value, "--reason", "stock service fixed"});
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(db_.Scalar("SELECT state FROM converge.flows WHERE flow_id = '" + parked_.value + "'"),
            "compensating");
  EXPECT_EQ(db_.Count("SELECT count(*) FROM converge.outbox WHERE type = 'stock.release'"), 2);

  r = Ctl({"flows", "compensate", running_.value, "--reason", "customer cancelled"});
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(db_.Scalar("SELECT state FROM converge.flows WHERE flow_id = '" + running_.value + "'"),
            "compensating");
  // Completing a flow that compensates is refused (exit 1), whoever asks.
  r = Ctl({"flows", "resolve", running_.value, "--outcome", "completed", "--reason", "x"});
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("can only be resolved as compensated"), std::string::npos) << r.out;
  r = Ctl({"flows", "resolve", running_.value, "--outcome", "compensated", "--reason",
           "released by hand"});
  EXPECT_EQ(r.code, 0) << r.out;
  r = Ctl({"flows", "compensate", running_.value, "--reason", "again"});
  EXPECT_EQ(r.code, 1) << r.out;
  r = Ctl({"flows", "retry", running_.value});
  EXPECT_EQ(r.code, 2) << r.out;  // --reason is required for a repair
  r = Ctl({"flows", "resolve", running_.value, "--outcome", "done", "--reason", "x"});
  EXPECT_EQ(r.code, 2) << r.out;

  EXPECT_EQ(db_.Count("SELECT count(*) FROM converge.audit_log"), 3);
  EXPECT_EQ(db_.Count("SELECT count(*) FROM converge.audit_log WHERE action = 'flows.resolve' "
                      "AND reason = 'released by hand' AND target = 'flow:" +
                      running_.value + "' AND details->>'after' LIKE 'compensated%'"),
            1);
}

}  // namespace
}  // namespace converge
