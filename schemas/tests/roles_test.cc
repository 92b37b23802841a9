// Least-privilege roles (migration 0005): each component does its job as a login user that is
// a member of only its role, and is refused what it must not do (SQLSTATE 42501).
#include <unistd.h>

#include <gtest/gtest.h>

#include <pqxx/pqxx>

#include "converge/common/uuid.h"
#include "converge/consumer/consumer.h"
#include "converge/consumer/testing/fake_source.h"
#include "converge/outbox/outbox.h"
#include "converge/outbox/relay.h"
#include "converge/reconciler/flow.h"
#include "converge/testing/env.h"
#include "converge/testing/fake_publisher.h"
#include "converge/testing/pg_fixture.h"

namespace converge {
namespace {

using namespace std::chrono_literals;
using testing::TestDatabase;

constexpr const char* kDenied = "42501";

// A login user of the test cluster that is a member of `role` only; dropped at the end.
class RoleUser {
 public:
  RoleUser(const TestDatabase& db, const std::string& role) : db_(db) {
    name_ =
        "t_" + role + "_" + std::to_string(::getpid()) + "_" + NewUuidV7().ToString().substr(24);
    auto c = db.Connect();
    pqxx::nontransaction nt(*c);
    nt.exec0("CREATE ROLE " + nt.quote_name(name_) + " LOGIN IN ROLE " + nt.quote_name(role));
    // The test cluster trusts loopback connections; only the user name changes.
    const std::string& url = db.url();
    const size_t scheme = url.find("://");
    const size_t at = url.find('@', scheme);
    url_ = url.substr(0, scheme + 3) + name_ + url.substr(at);
    pqxx::connection check(url_);
    EXPECT_EQ(pqxx::nontransaction(check).exec1("SELECT current_user")[0].as<std::string>(), name_);
  }
  ~RoleUser() {
    try {
      auto c = db_.Connect();
      pqxx::nontransaction nt(*c);
      nt.exec0("DROP OWNED BY " + nt.quote_name(name_));
      nt.exec0("DROP ROLE IF EXISTS " + nt.quote_name(name_));
    } catch (const std::exception& e) {
      ADD_FAILURE() << "dropping " << name_ << ": " << e.what();
    }
  }
  const std::string& url() const { return url_; }

  // Runs `sql` in its own transaction; returns the SQLSTATE ("" on success).
  std::string Try(const std::string& sql) const {
    try {
      pqxx::connection c(url_);
      pqxx::work tx(c);
      tx.exec(sql);
      tx.commit();
      return "";
    } catch (const pqxx::insufficient_privilege&) {
      return kDenied;
    } catch (const pqxx::sql_error& e) {
      return e.sqlstate().empty() ? std::string("error: ") + e.what() : e.sqlstate();
    }
  }

 private:
  const TestDatabase& db_;
  std::string name_, url_;
};

TEST(RolesTest, RolesExistAndAuditLogIsAppendOnly) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  EXPECT_EQ(db.Count("SELECT count(*) FROM pg_roles WHERE rolname IN ('converge_writer', "
                     "'converge_relay', 'converge_consumer', 'converge_flows', 'converge_devices', "
                     "'converge_reconciler', 'converge_operator', 'converge_readonly') "
                     "AND NOT rolcanlogin"),
            8);
  RoleUser op(db, "converge_operator");
  EXPECT_EQ(op.Try("INSERT INTO converge.audit_log (actor, action, target, reason) "
                   "VALUES ('me', 'test', 'x', 'why')"),
            "");
  EXPECT_EQ(op.Try("UPDATE converge.audit_log SET reason = 'rewritten'"), kDenied);
  EXPECT_EQ(op.Try("DELETE FROM converge.audit_log"), kDenied);
  EXPECT_EQ(op.Try("UPDATE converge.consumer_offsets SET next_offset = 0"), kDenied);
  EXPECT_EQ(op.Try("DELETE FROM converge.outbox"), kDenied);
  RoleUser ro(db, "converge_readonly");
  for (const char* t : {"outbox", "inbox", "dead_letters", "flows", "audit_log", "consumer_offsets",
                        "relay_slots", "device_commands"})
    EXPECT_EQ(ro.Try(std::string("SELECT count(*) FROM converge.") + t), "") << t;
  EXPECT_EQ(ro.Try("INSERT INTO converge.audit_log (actor, action, target, reason) "
                   "VALUES ('me', 'test', 'x', 'why')"),
            kDenied);
  EXPECT_EQ(ro.Try("SELECT converge.enqueue('t', 'k', 'x', '{}')"), kDenied);
  // The operations CLI works under these roles: status read-only, a repair as an operator.
  const std::string ctl = testing::BinDir() + "/convergectl";
  EXPECT_EQ(std::system((ctl + " status --db '" + ro.url() + "' >/dev/null").c_str()), 0);
  db.Scalar("SELECT converge.enqueue('orders', 'k1', 'order.placed', '{}')");
  EXPECT_EQ(
      std::system(
          (ctl + " keys park orders k1 --reason test --db '" + op.url() + "' >/dev/null").c_str()),
      0);
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.outbox_blocked_keys WHERE parked"), 1);
  EXPECT_EQ(
      std::system((ctl + " keys unpark orders k1 --reason test --db '" + op.url() + "' >/dev/null")
                      .c_str()),
      0);
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.outbox_blocked_keys"), 0);
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.audit_log WHERE action LIKE 'keys.%'"), 2);
}

TEST(RolesTest, WriterEnqueuesAndCannotReadOrDelete) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  RoleUser w(db, "converge_writer");
  EXPECT_EQ(w.Try("SELECT converge.enqueue('orders', 'k', 'order.placed', '{}')"), "");
  {
    pqxx::connection c(w.url());
    pqxx::work tx(c);
    auto sent = outbox::Enqueue(tx, {.topic = "orders", .key = "k", .type = "order.placed"});
    ASSERT_TRUE(sent.ok()) << sent.status();
    EXPECT_EQ(sent->seq, 2);
    tx.commit();
  }
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.outbox"), 2);
  EXPECT_EQ(w.Try("SELECT * FROM converge.outbox"), kDenied);
  EXPECT_EQ(w.Try("DELETE FROM converge.outbox"), kDenied);
  EXPECT_EQ(w.Try("SELECT * FROM converge.inbox"), kDenied);
  EXPECT_EQ(w.Try("UPDATE converge.relay_slots SET owner = 'me'"), kDenied);
}

TEST(RolesTest, RelayPublishesAndCannotTouchConsumerState) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  db.Scalar(
      "SELECT count(converge.enqueue('orders', 'k' || (g % 3), 'order.placed', '{}')) "
      "FROM generate_series(1, 20) g");
  RoleUser r(db, "converge_relay");
  auto publisher = std::make_unique<testing::FakePublisher>();
  auto* fake = publisher.get();
  outbox::RelayOptions o;
  o.database_url = r.url();
  o.poll_interval = 50ms;
  outbox::Relay relay(o, std::move(publisher));
  for (int i = 0; i < 50 && db.Count("SELECT count(*) FROM converge.outbox") > 0; ++i) {
    auto n = relay.RunOnce();
    ASSERT_TRUE(n.ok()) << n.status();
  }
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.outbox"), 0);
  EXPECT_EQ(fake->published().size(), 20u);
  EXPECT_EQ(r.Try("INSERT INTO converge.inbox (consumer_group, message_id, payload_hash, topic, "
                  "partition, \"offset\") VALUES ('g', gen_random_uuid(), '\\x00', 't', 0, 0)"),
            kDenied);
  EXPECT_EQ(r.Try("UPDATE converge.consumer_offsets SET next_offset = 0"), kDenied);
  EXPECT_EQ(r.Try("UPDATE converge.outbox SET payload = '\\x00'"), kDenied);
  EXPECT_EQ(r.Try("UPDATE converge.flows SET state = 'completed'"), kDenied);
  EXPECT_EQ(r.Try("INSERT INTO converge.audit_log (actor, action, target, reason) "
                  "VALUES ('me', 'test', 'x', 'why')"),
            kDenied);
}

TEST(RolesTest, ConsumerAppliesOnceAndCannotTouchTheRelaysState) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  db.Scalar("CREATE TABLE public.effects (id text PRIMARY KEY)");
  RoleUser u(db, "converge_consumer");
  db.Scalar("GRANT INSERT ON public.effects TO converge_consumer");  // the service's table
  auto owned = std::make_unique<consumer::testing::FakeSource>();
  auto* src = owned.get();
  consumer::ConsumerOptions o;
  o.group = "g";
  o.topics = {"orders"};
  o.database_url = u.url();
  o.poll_timeout = 20ms;
  consumer::Consumer c(o, std::move(owned));
  c.Handle("order.placed", [](const Message& m, consumer::Context& ctx) {
    ctx.tx().exec_params0("INSERT INTO public.effects (id) VALUES ($1)", m.id);
    return ctx.Enqueue({.topic = "shipping", .key = m.subject, .type = "ship"}).status();
  });
  const std::string id = NewUuidV7().ToString();
  const std::vector<std::pair<std::string, std::string>> headers = {{"ce_specversion", "1.0"},
                                                                    {"ce_id", id},
                                                                    {"ce_source", "/t"},
                                                                    {"ce_type", "order.placed"},
                                                                    {"ce_subject", "k"}};
  src->Produce("orders", 0, "{}", headers);
  src->Produce("orders", 0, "{}", headers);  // a duplicate
  src->Rebalance({}, {{"orders", 0}});
  ASSERT_TRUE(c.Init().ok());
  for (int i = 0; i < 100 && c.stats().consumed < 2; ++i) ASSERT_TRUE(c.RunOnce().ok());
  EXPECT_EQ(c.stats().applied, 1u);
  EXPECT_EQ(c.stats().duplicates_skipped, 1u);
  EXPECT_EQ(db.Count("SELECT count(*) FROM effects"), 1);
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.outbox WHERE topic = 'shipping'"), 1);
  EXPECT_EQ(db.Count("SELECT next_offset FROM converge.consumer_offsets"), 2);
  c.Close();
  EXPECT_EQ(u.Try("DELETE FROM converge.outbox"), kDenied);
  EXPECT_EQ(u.Try("UPDATE converge.relay_slots SET owner = 'me'"), kDenied);
  EXPECT_EQ(u.Try("UPDATE converge.dead_letters SET status = 'discarded'"), kDenied);
}

TEST(RolesTest, FlowsAdvanceAsTheFlowsRoleAndReconcilerReadsWhatItWatches) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  RoleUser f(db, "converge_flows");
  {
    pqxx::connection c(f.url());
    pqxx::work tx(c);
    flows::FlowType t{.name = "order",
                      .steps = {{.name = "reserve",
                                 .command = {"stock", "stock.reserve"},
                                 .reply_type = "stock.reserved"}}};
    ASSERT_TRUE(flows::Register(tx, t).ok());
    auto id = flows::Start(tx, "order", "o-1");
    ASSERT_TRUE(id.ok()) << id.status().ToString();
    auto done = flows::CompleteStep(tx, *id, 0);
    ASSERT_TRUE(done.ok()) << done.status();
    EXPECT_EQ(*done, flows::ReplyOutcome::kCompleted);
    tx.commit();
  }
  EXPECT_EQ(db.Scalar("SELECT state FROM converge.flows"), "completed");
  EXPECT_EQ(f.Try("DELETE FROM converge.flows"), kDenied);
  EXPECT_EQ(f.Try("UPDATE converge.consumer_offsets SET next_offset = 0"), kDenied);
  RoleUser rec(db, "converge_reconciler");
  EXPECT_EQ(rec.Try("SELECT * FROM converge.flow_reconcile(10)"), "");
  for (const char* t :
       {"outbox", "outbox_blocked_keys", "dead_letters", "device_commands", "device_twins"})
    EXPECT_EQ(rec.Try(std::string("SELECT count(*) FROM converge.") + t), "") << t;
  EXPECT_EQ(rec.Try("DELETE FROM converge.outbox"), kDenied);
  EXPECT_EQ(rec.Try("SELECT * FROM converge.inbox"), kDenied);
}

}  // namespace
}  // namespace converge
