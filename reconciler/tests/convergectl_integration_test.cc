// convergectl as a process against a fresh migrated database per test (CONVERGE_PG_URL).
// Dead letters are made the real way: the relay with a FakePublisher that refuses a message
// (kFailedPrecondition), the consumer runtime with a FakeSource and a failing handler. Each
// repair is checked for its effect, its audit row, and that --dry-run leaves every converge
// table unchanged; output is checked as a table and as JSON (parsed).
#include <gtest/gtest.h>
#include <unistd.h>

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <chrono>
#include <fstream>
#include <map>
#include <sstream>

#include "converge/broker/kafka.h"
#include "converge/broker/kafka_mock.h"
#include "converge/common/envelope.h"
#include "converge/common/uuid.h"
#include "converge/consumer/consumer.h"
#include "converge/consumer/testing/fake_source.h"
#include "converge/outbox/relay.h"
#include "converge/testing/env.h"
#include "converge/testing/fake_publisher.h"
#include "converge/testing/pg_fixture.h"
#include "converge/testing/process.h"

namespace converge {
namespace {

using converge::testing::FakePublisher;
using converge::testing::TestDatabase;
using namespace std::chrono_literals;

struct CtlRun {
  int rc = -1;
  std::string out, err;
};

std::string Slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// Runs build/bin/convergectl with `args`; stdout and stderr are captured separately.
CtlRun Ctl(const std::vector<std::string>& args) {
  static int n = 0;
  const std::string base =
      ::testing::TempDir() + "convergectl_" + std::to_string(getpid()) + "_" + std::to_string(n++);
  std::remove((base + ".out").c_str());
  std::remove((base + ".err").c_str());
  std::vector<std::string> argv = {"-c", "exec \"$0\" \"$@\" 2>\"$CONVERGECTL_TEST_ERR\"",
                                   testing::BinDir() + "/convergectl"};
  argv.insert(argv.end(), args.begin(), args.end());
  testing::ChildProcess p;
  CtlRun r;
  if (!p.Start("/bin/sh", argv, {{"CONVERGECTL_TEST_ERR", base + ".err"}}, base + ".out")) {
    ADD_FAILURE() << "cannot start convergectl";
    return r;
  }
  r.rc = p.Wait(30s);
  r.out = Slurp(base + ".out");
  r.err = Slurp(base + ".err");
  return r;
}

// With --db of the test database.
CtlRun Ctl(const TestDatabase& db, std::vector<std::string> args) {
  args.push_back("--db");
  args.push_back(db.url());
  return Ctl(args);
}

Poco::JSON::Object::Ptr Json(const CtlRun& r) {
  try {
    Poco::JSON::Parser parser;
    return parser.parse(r.out).extract<Poco::JSON::Object::Ptr>();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "stdout is not one JSON document: " << e.what() << "\n" << r.out << r.err;
    return new Poco::JSON::Object();
  }
}

// Every converge table's rows as text: a dry run must leave this unchanged.
std::string Snapshot(const TestDatabase& db) {
  auto c = db.Connect();
  pqxx::work tx(*c);
  std::string s;
  for (const auto& t : tx.exec("SELECT tablename FROM pg_tables WHERE schemaname = 'converge' "
                               "ORDER BY 1")) {
    const std::string name = t[0].c_str();
    s += name + ":\n";
    s +=
        tx.exec("SELECT coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '') FROM converge." +
                tx.quote_name(name) + " t")[0][0]
            .c_str();
    s += "\n";
  }
  return s;
}

void EnqueueSql(const TestDatabase& db, const std::string& topic, const std::string& key, int n,
                int first = 1) {
  auto c = db.Connect();
  pqxx::work tx(*c);
  for (int i = 0; i < n; ++i)
    tx.exec_params("SELECT converge.enqueue($1, $2, 'test.event', $3::jsonb)", topic, key,
                   "{\"n\":" + std::to_string(first + i) + "}");
  tx.commit();
}

outbox::RelayOptions RelayOpts(const TestDatabase& db) {
  outbox::RelayOptions o;
  o.database_url = db.url();
  o.batch_size = 100;
  o.poll_interval = 50ms;
  o.retry = {200ms, 200ms, 1.0, 0.0};
  o.breaker_backoff = {100ms, 100ms, 1.0, 0.0};
  return o;
}

void Drain(outbox::Relay& relay) {
  for (int i = 0; i < 50; ++i) {
    auto r = relay.RunOnce();
    ASSERT_TRUE(r.ok()) << r.status();
    if (*r == 0) return;
  }
}

// The relay dead-letters (t, poison) seq 1 ("message too large"), parks the key and leaves
// seq 2..3 waiting; (t, fine) is published.
struct PoisonSetup {
  explicit PoisonSetup(const TestDatabase& db) {
    EnqueueSql(db, "t", "poison", 3);
    EnqueueSql(db, "t", "fine", 1);
    auto pub = std::make_unique<FakePublisher>();
    fake = pub.get();
    fake->RefuseAsTooLarge("poison", 1);
    relay = std::make_unique<outbox::Relay>(RelayOpts(db), std::move(pub));
    Drain(*relay);
    dead_id = db.Scalar("SELECT id FROM converge.dead_letters");
  }
  std::vector<std::pair<std::string, int64_t>> Published(const std::string& key) const {
    std::vector<std::pair<std::string, int64_t>> out;
    for (const auto& m : fake->published())
      if (m.subject == key) out.emplace_back(m.id, m.sequence);
    return out;
  }
  FakePublisher* fake = nullptr;
  std::unique_ptr<outbox::Relay> relay;
  std::string dead_id;
};

// ---- exit codes ----------------------------------------------------------------------------

TEST(ConvergectlTest, ExitCodesForUsageUnreachableDatabaseMissingSchemaAndUnknownIds) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  EXPECT_EQ(Ctl(std::vector<std::string>{}).rc, 2);
  CtlRun r = Ctl({"frobnicate"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("unknown command 'frobnicate'"), std::string::npos) << r.err;
  r = Ctl(db, {"dlq", "list", "--older-than", "5x"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("not a duration"), std::string::npos) << r.err;
  r = Ctl(db, {"dlq", "replay", "1"});
  EXPECT_EQ(r.rc, 2) << "a repair without --reason is a usage error";
  EXPECT_NE(r.err.find("--reason TEXT is required"), std::string::npos) << r.err;

  // 3: the database cannot be reached; the password is never printed.
  r = Ctl({"dlq", "list", "--db", "postgresql://converge:hunter2@127.0.0.1:1/nowhere"});
  EXPECT_EQ(r.rc, 3) << r.err;
  EXPECT_NE(r.err.find("cannot connect"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("hunter2"), std::string::npos) << r.err;
  EXPECT_EQ(r.out.find("hunter2"), std::string::npos) << r.out;

  // status --check on a quiet database.
  r = Ctl(db, {"status", "--no-kafka", "--check", "--output", "json"});
  EXPECT_EQ(r.rc, 0) << r.out << r.err;
  EXPECT_FALSE(Json(r)->getValue<bool>("needs_attention"));

  // 4: unknown ids and keys.
  r = Ctl(db, {"dlq", "show", "424242"});
  EXPECT_EQ(r.rc, 4);
  EXPECT_NE(r.err.find("no dead letter with id 424242"), std::string::npos) << r.err;
  EXPECT_EQ(Ctl(db, {"dlq", "replay", "424242", "--reason", "x"}).rc, 4);
  r = Ctl(db, {"keys", "unpark", "t", "nokey", "--reason", "x"});
  EXPECT_EQ(r.rc, 4);
  EXPECT_NE(r.err.find("neither parked nor backing off"), std::string::npos) << r.err;

  // 5: a database without the converge schema.
  TestDatabase bare(/*migrate=*/false);
  ASSERT_TRUE(bare.ok());
  for (auto cmd : {std::vector<std::string>{"status"}, {"dlq", "list"}}) {
    r = Ctl(bare, cmd);
    EXPECT_EQ(r.rc, 5) << cmd[0];
    EXPECT_NE(r.err.find("run convergectl migrate"), std::string::npos) << r.err;
  }
  r = Ctl(bare, {"migrate", "--dry-run"});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("would apply 0001_core"), std::string::npos) << r.out;
  // A schema older than the command needs (here: the bookkeeping table, no migration yet).
  bare.Scalar("CREATE SCHEMA converge; CREATE TABLE converge.schema_migrations (version int)");
  r = Ctl(bare, {"keys", "list"});
  EXPECT_EQ(r.rc, 5);
  EXPECT_NE(r.err.find("has converge schema version 0, this command needs 1: run convergectl "
                       "migrate"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(Ctl({"version"}).rc, 0);
}

// ---- relay dead letters --------------------------------------------------------------------

TEST(ConvergectlTest, RelayDeadLetterListShowDryRunAndReplayInItsKeysPlace) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  PoisonSetup s(db);
  ASSERT_FALSE(s.dead_id.empty());
  const std::string message_id =
      db.Scalar("SELECT message_id FROM converge.dead_letters WHERE id = " + s.dead_id);

  // list: table and JSON, with filters.
  CtlRun r = Ctl(db, {"dlq", "list"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out.rfind("ID ", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("too_large"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("poison"), std::string::npos) << r.out;
  r = Ctl(db, {"dlq", "list", "--output", "json", "--origin", "relay", "--topic", "t"});
  ASSERT_EQ(r.rc, 0) << r.err;
  auto j = Json(r);
  ASSERT_EQ(j->getArray("dead_letters")->size(), 1u) << r.out;
  auto d = j->getArray("dead_letters")->getObject(0);
  EXPECT_EQ(d->getValue<std::string>("origin"), "relay");
  EXPECT_EQ(d->getValue<std::string>("key"), "poison");
  EXPECT_EQ(d->getValue<int>("seq"), 1);
  EXPECT_EQ(d->getValue<std::string>("error_code"), "too_large");
  EXPECT_EQ(d->getValue<std::string>("status"), "open");
  EXPECT_EQ(d->getValue<std::string>("message_id"), message_id);
  EXPECT_EQ(j->getValue<int>("total"), 1);
  for (auto filter : {std::vector<std::string>{"--origin", "consumer"},
                      {"--key", "fine"},
                      {"--error", "not_authorized"},
                      {"--older-than", "1h"},
                      {"--status", "replayed"}}) {
    std::vector<std::string> args = {"dlq", "list", "--output", "json"};
    args.insert(args.end(), filter.begin(), filter.end());
    r = Ctl(db, args);
    ASSERT_EQ(r.rc, 0) << r.err;
    EXPECT_EQ(Json(r)->getValue<int>("count"), 0) << filter[0] << " " << r.out;
  }

  // show: every field, the payload as text, the key's state.
  r = Ctl(db, {"dlq", "show", s.dead_id});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("parked by this message"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("payload (8 bytes, utf-8):\n{\"n\": 1}"), std::string::npos) << r.out;
  r = Ctl(db, {"dlq", "show", s.dead_id, "--output", "json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  j = Json(r);
  EXPECT_EQ(j->getObject("payload")->getValue<std::string>("encoding"), "utf-8");
  EXPECT_EQ(j->getObject("payload")->getValue<std::string>("data"), "{\"n\": 1}");
  EXPECT_EQ(j->getValue<int>("key_outbox_rows"), 2);
  EXPECT_EQ(j->getValue<std::string>("content_type"), "application/json");

  // keys: the key is parked by the open dead letter; unpark refuses to skip it.
  r = Ctl(db, {"keys", "list", "--output", "json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  j = Json(r);
  ASSERT_EQ(j->getArray("keys")->size(), 1u) << r.out;
  EXPECT_EQ(j->getArray("keys")->getObject(0)->getValue<std::string>("state"), "parked");
  EXPECT_EQ(j->getArray("keys")->getObject(0)->getValue<std::string>("dead_letter_id"), s.dead_id);
  EXPECT_EQ(j->getArray("keys")->getObject(0)->getValue<int>("waiting_rows"), 2);
  const std::string before = Snapshot(db);
  r = Ctl(db, {"keys", "unpark", "t", "poison", "--reason", "try"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("convergectl dlq replay " + s.dead_id), std::string::npos) << r.err;
  EXPECT_EQ(Snapshot(db), before);

  // Dry run: says what would happen, changes nothing (no audit row either).
  r = Ctl(db, {"dlq", "replay", s.dead_id, "--reason", "limit raised", "--dry-run"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("would replay dead letter " + s.dead_id), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("dry run: nothing was changed"), std::string::npos) << r.out;
  EXPECT_EQ(Snapshot(db), before);

  // Replay: back under its outbox id and seq, key unparked, dead letter resolved, audited.
  const std::string outbox_id =
      db.Scalar("SELECT outbox_id FROM converge.dead_letters WHERE id = " + s.dead_id);
  r = Ctl(db, {"dlq", "replay", s.dead_id, "--reason", "limit raised", "--actor", "alice",
               "--output", "json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  j = Json(r);
  EXPECT_FALSE(j->getValue<bool>("dry_run"));
  auto o = j->getArray("replayed")->getObject(0);
  EXPECT_TRUE(o->getValue<bool>("unparked"));
  EXPECT_EQ(o->getValue<int>("later_rows"), 2);
  EXPECT_EQ(db.Scalar("SELECT id || '|' || seq || '|' || attempts FROM converge.outbox "
                      "WHERE message_id = '" +
                      message_id + "'"),
            outbox_id + "|1|0");
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.outbox_blocked_keys"), 0);
  EXPECT_EQ(db.Scalar("SELECT status || '|' || resolved_by || '|' || (resolved_at IS NOT NULL) "
                      "FROM converge.dead_letters WHERE id = " +
                      s.dead_id),
            "replayed|alice|true");
  EXPECT_EQ(db.Scalar("SELECT actor || '|' || action || '|' || target || '|' || reason || '|' || "
                      "dry_run || '|' || (details->>'outbox_id') FROM converge.audit_log"),
            "alice|dlq.replay|dead_letter:" + s.dead_id + "|limit raised|false|" + outbox_id);

  // The relay now publishes the replayed message first, then the key's later rows.
  s.fake->FailWhen(nullptr);
  Drain(*s.relay);
  const auto published = s.Published("poison");
  ASSERT_EQ(published.size(), 3u);
  EXPECT_EQ(published[0].first, message_id);
  EXPECT_EQ(published[0].second, 1);
  EXPECT_EQ(published[1].second, 2);
  EXPECT_EQ(published[2].second, 3);
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.outbox"), 0);

  // A second replay is refused; the history shows the first.
  r = Ctl(db, {"dlq", "replay", s.dead_id, "--reason", "again"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("already replayed (by alice"), std::string::npos) << r.err;
  r = Ctl(db, {"dlq", "show", s.dead_id});
  EXPECT_NE(r.out.find("dlq.replay by alice: limit raised"), std::string::npos) << r.out;
}

TEST(ConvergectlTest, DiscardUnparksTheKeySoLaterRowsFlowAndForcedUnpark) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  PoisonSetup s(db);
  ASSERT_FALSE(s.dead_id.empty());
  std::string before = Snapshot(db);
  CtlRun r = Ctl(db, {"keys", "unpark", "t", "poison", "--reason", "x", "--force", "--dry-run"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("stays open and its message is skipped"), std::string::npos) << r.out;
  r = Ctl(db, {"dlq", "discard", s.dead_id, "--reason", "obsolete", "--dry-run"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("would discard"), std::string::npos) << r.out;
  EXPECT_EQ(Snapshot(db), before);

  r = Ctl(db, {"dlq", "discard", s.dead_id, "--reason", "obsolete", "--actor", "bob"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("key unparked: its 2 waiting row(s) will now be published without this "
                       "message"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(db.Scalar("SELECT status || '|' || resolved_by FROM converge.dead_letters"),
            "discarded|bob");
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.outbox_blocked_keys"), 0);
  EXPECT_EQ(db.Scalar("SELECT action || '|' || reason FROM converge.audit_log"),
            "dlq.discard|obsolete");
  s.fake->FailWhen(nullptr);
  Drain(*s.relay);
  const auto published = s.Published("poison");
  ASSERT_EQ(published.size(), 2u);
  EXPECT_EQ(published[0].second, 2);
  EXPECT_EQ(published[1].second, 3);
  EXPECT_EQ(Ctl(db, {"dlq", "discard", s.dead_id, "--reason", "x"}).rc, 1);
}

TEST(ConvergectlTest, KeysParkHoldsRowsInOrderAndUnparkReleasesThem) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  EnqueueSql(db, "t", "k1", 2);
  const std::string before = Snapshot(db);
  CtlRun r =
      Ctl(db, {"keys", "park", "t", "k1", "--reason", "downstream maintenance", "--dry-run"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("would park key t/k1"), std::string::npos) << r.out;
  EXPECT_EQ(Snapshot(db), before);
  EXPECT_EQ(Ctl(db, {"keys", "park", "t", "k1"}).rc, 2) << "--reason is required";

  r = Ctl(db,
          {"keys", "park", "t", "k1", "--reason", "downstream maintenance", "--actor", "carol"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(db.Scalar("SELECT parked || '|' || reason FROM converge.outbox_blocked_keys"),
            "true|parked by carol: downstream maintenance");
  r = Ctl(db, {"keys", "park", "t", "k1", "--reason", "again"});
  EXPECT_EQ(r.rc, 0);
  EXPECT_NE(r.out.find("already parked"), std::string::npos) << r.out;
  r = Ctl(db, {"keys", "list"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out.rfind("TOPIC ", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("parked"), std::string::npos) << r.out;

  auto pub = std::make_unique<FakePublisher>();
  FakePublisher* fake = pub.get();
  outbox::Relay relay(RelayOpts(db), std::move(pub));
  Drain(relay);
  EXPECT_TRUE(fake->published().empty());

  r = Ctl(db, {"keys", "unpark", "t", "k1", "--reason", "maintenance over", "--output", "json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(Json(r)->getValue<bool>("changed"));
  Drain(relay);
  ASSERT_EQ(fake->published().size(), 2u);
  EXPECT_EQ(fake->published()[0].sequence, 1);
  EXPECT_EQ(fake->published()[1].sequence, 2);
  EXPECT_EQ(db.Scalar("SELECT string_agg(action || ':' || target, ',' ORDER BY id) "
                      "FROM converge.audit_log"),
            "keys.park:key:t/k1,keys.unpark:key:t/k1");
  const std::string default_actor =
      db.Scalar("SELECT actor FROM converge.audit_log WHERE action = 'keys.unpark'");
  EXPECT_NE(default_actor.find('@'), std::string::npos) << "$USER@hostname: " << default_actor;
}

// ---- consumer dead letters -----------------------------------------------------------------

TEST(ConvergectlTest, ConsumerDeadLetterReplayIsAppliedOnceByThatGroupOnly) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  db.Scalar("CREATE TABLE effects (grp text, id text, payload text)");
  EnqueueSql(db, "orders", "o1", 3);
  // Publish through the relay, then hand the records to two consumer groups.
  auto pub = std::make_unique<FakePublisher>();
  FakePublisher* fake = pub.get();
  outbox::Relay relay(RelayOpts(db), std::move(pub));
  Drain(relay);
  ASSERT_EQ(fake->published().size(), 3u);

  bool broken = true;
  struct Group {
    consumer::testing::FakeSource* src = nullptr;
    std::unique_ptr<consumer::Consumer> c;
  };
  auto make = [&](const std::string& name) {
    consumer::ConsumerOptions o;
    o.group = name;
    o.topics = {"orders"};
    o.database_url = db.url();
    o.poll_timeout = 20ms;
    o.linger = 2ms;
    o.retry_backoff = {1ms, 5ms, 2.0, 0.0};
    o.max_attempts = 2;
    auto src = std::make_unique<consumer::testing::FakeSource>();
    Group g;
    g.src = src.get();
    g.c = std::make_unique<consumer::Consumer>(o, std::move(src));
    g.c->Handle("test.event", [&, name](const Message& m, consumer::Context& ctx) {
      if (name == "g1" && broken && m.payload == "{\"n\": 1}")
        return Status::InvalidArgument("handler cannot parse the order");
      ctx.tx().exec_params("INSERT INTO effects VALUES ($1, $2, $3)", name, m.id, m.payload);
      return Status::Ok();
    });
    g.src->Rebalance({}, {{"orders", 0}});
    EXPECT_TRUE(g.c->Init().ok());
    return g;
  };
  auto feed = [&](Group& g, const Message& m) {
    auto h = EncodeKafkaHeaders(m);
    ASSERT_TRUE(h.ok()) << h.status();
    g.src->Produce("orders", 0, m.payload, *h, KafkaKey(m));
  };
  auto run = [&](Group& g, long long effects) {
    for (int i = 0; i < 200; ++i) {
      ASSERT_TRUE(g.c->RunOnce().ok());
      if (db.Count("SELECT count(*) FROM effects") == effects &&
          static_cast<int64_t>(g.c->stats().consumed) >= g.src->Position({"orders", 0}))
        return;
    }
  };
  Group g1 = make("g1"), g2 = make("g2");
  for (const auto& m : fake->published()) {
    feed(g1, m);
    feed(g2, m);
  }
  run(g1, 2);
  run(g2, 5);
  const std::string first_id = fake->published()[0].id;
  const std::string dead_id = db.Scalar(
      "SELECT id FROM converge.dead_letters WHERE origin = 'consumer' AND consumer_group = 'g1'");
  ASSERT_FALSE(dead_id.empty()) << db.Scalar("SELECT count(*) FROM effects");
  EXPECT_EQ(db.Scalar("SELECT error_code || '|' || message_id FROM converge.dead_letters"),
            "handler_failed|" + first_id);

  CtlRun r = Ctl(db, {"dlq", "list", "--origin", "consumer", "--group", "g1"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("handler_failed"), std::string::npos) << r.out;

  const std::string before = Snapshot(db);
  r = Ctl(db, {"dlq", "replay", dead_id, "--reason", "handler fixed", "--dry-run"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("would replay"), std::string::npos) << r.out;
  r = Ctl(db,
          {"dlq", "replay", dead_id, "--reason", "handler fixed", "--dry-run", "--output", "json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(Json(r)->getValue<bool>("dry_run"));
  EXPECT_EQ(Snapshot(db), before);

  r = Ctl(db, {"dlq", "replay", dead_id, "--reason", "handler fixed", "--output", "json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  auto o = Json(r)->getArray("replayed")->getObject(0);
  EXPECT_EQ(o->getValue<int>("inbox_rows_removed"), 1);
  EXPECT_EQ(o->getValue<int>("seq"), 4) << "above the stream's and the group's last sequence";
  // Same message id, envelope headers dropped, g1's inbox row gone, g2's kept.
  EXPECT_EQ(db.Scalar("SELECT seq || '|' || headers::text || '|' || type FROM converge.outbox "
                      "WHERE message_id = '" +
                      first_id + "'"),
            "4|{}|test.event");
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.inbox WHERE message_id = '" + first_id + "'"),
            1);
  EXPECT_EQ(
      db.Scalar("SELECT consumer_group FROM converge.inbox WHERE message_id = '" + first_id + "'"),
      "g2");
  EXPECT_EQ(db.Scalar("SELECT status FROM converge.dead_letters WHERE id = " + dead_id),
            "replayed");

  // Published again; g1 (fixed) applies it once, g2 dedupes it.
  broken = false;
  const size_t before_pub = fake->published().size();
  Drain(relay);
  ASSERT_EQ(fake->published().size(), before_pub + 1);
  const Message replayed = fake->published().back();
  EXPECT_EQ(replayed.id, first_id);
  feed(g1, replayed);
  feed(g2, replayed);
  run(g1, 6);
  run(g2, 6);
  EXPECT_EQ(db.Scalar("SELECT string_agg(grp, ',' ORDER BY grp) FROM effects WHERE id = '" +
                      first_id + "'"),
            "g1,g2");
  EXPECT_EQ(db.Count("SELECT count(*) FROM converge.dead_letters"), 1);
}

TEST(ConvergectlTest, ConsumerReplayRefusalsAndStatusScreen) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  // Dead letters as the consumer writes them (consumer.cc kDeadLetterSql), for the cases the
  // replay must refuse: no decodable id, a payload conflict, a key produced elsewhere.
  db.Scalar(
      "INSERT INTO converge.dead_letters (origin, consumer_group, message_id, topic, key, seq, "
      " type, payload, headers, partition, \"offset\", reason, error_code, attempts) VALUES "
      "('consumer', 'g', NULL, 'in', NULL, NULL, NULL, '\\x00ff'::bytea, '{}', 0, 1, "
      "  'not a CloudEvent', 'decode_failed', 1), "
      "('consumer', 'g', converge.uuid_v7(), 'in', 'k', 5, 'x.y', 'a', '{}', 0, 2, 'other "
      "  payload', 'payload_conflict', 1), "
      "('consumer', 'g', converge.uuid_v7(), 'in', 'k', 6, 'x.y', 'b', "
      "  '{\"ce_id\": \"x\", \"tenant\": \"t1\"}', 0, 3, 'boom', 'handler_failed', 1)");
  CtlRun r = Ctl(db, {"dlq", "replay", "1", "--reason", "x"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("has no message id"), std::string::npos) << r.err;
  r = Ctl(db, {"dlq", "show", "1", "--output", "json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(Json(r)->getObject("payload")->getValue<std::string>("encoding"), "base64");
  EXPECT_EQ(Json(r)->getObject("payload")->getValue<std::string>("data"), "AP8=");
  r = Ctl(db, {"dlq", "show", "1"});
  EXPECT_NE(r.out.find("payload (2 bytes, hex):\n00ff"), std::string::npos) << r.out;
  r = Ctl(db, {"dlq", "replay", "2", "--reason", "x"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("payload conflict"), std::string::npos) << r.err;
  const std::string before = Snapshot(db);
  r = Ctl(db, {"dlq", "replay", "3", "2", "--reason", "x", "--force"});
  EXPECT_EQ(r.rc, 1) << "all ids in one transaction: one refusal changes nothing";
  EXPECT_NE(r.err.find("nothing was changed"), std::string::npos) << r.err;
  r = Ctl(db, {"dlq", "replay", "3", "--reason", "x"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("not produced from this database"), std::string::npos) << r.err;
  EXPECT_EQ(Snapshot(db), before);
  r = Ctl(db, {"dlq", "replay", "3", "--reason", "x", "--force"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(db.Scalar("SELECT seq || '|' || headers::text FROM converge.outbox"),
            "1|{\"tenant\": \"t1\"}");

  Poco::JSON::Object::Ptr j;
  // Bulk: --all with filters instead of ids (open dead letters only: 1 and 2 are left).
  EXPECT_EQ(Ctl(db, {"dlq", "discard", "--reason", "x"}).rc, 2) << "ids or --all";
  EXPECT_EQ(Ctl(db, {"dlq", "discard", "1", "--all", "--reason", "x"}).rc, 2);
  EXPECT_EQ(Ctl(db, {"dlq", "discard", "1", "--origin", "consumer", "--reason", "x"}).rc, 2)
      << "filters select with --all only";
  const std::string before_bulk = Snapshot(db);
  r = Ctl(db,
          {"dlq", "discard", "--all", "--origin", "consumer", "--reason", "cleanup", "--dry-run"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("would discard dead letter 1 "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("would discard dead letter 2 "), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("dead letter 3 "), std::string::npos) << "3 is replayed, not open";
  EXPECT_EQ(Snapshot(db), before_bulk);
  r = Ctl(db, {"dlq", "discard", "--all", "--origin", "consumer", "--limit", "1", "--reason",
               "cleanup", "--output", "json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  j = Json(r);
  ASSERT_EQ(j->getArray("discarded")->size(), 1u) << r.out;
  EXPECT_EQ(j->getArray("discarded")->getObject(0)->getValue<int>("id"), 1);
  EXPECT_EQ(j->getValue<int>("more_matching"), 1);
  EXPECT_EQ(db.Scalar("SELECT string_agg(id || ':' || status, ',' ORDER BY id) "
                      "FROM converge.dead_letters"),
            "1:discarded,2:open,3:replayed");

  // status: one screen, table and JSON. The device section follows the table's existence
  // (the devices migration may or may not be in this build): start without it.
  db.Scalar("DROP TABLE IF EXISTS converge.device_commands CASCADE");
  EnqueueSql(db, "orders", "a", 2);
  db.Scalar(
      "INSERT INTO converge.outbox_blocked_keys (topic, key, parked, reason) "
      "VALUES ('orders', 'a', true, 'test');"
      "INSERT INTO converge.consumer_offsets (consumer_group, topic, partition, next_offset) "
      "VALUES ('g', 'in', 0, 7);"
      "INSERT INTO converge.flows (flow_id, flow_type, business_key, state, step_name, "
      "  deadline_at) VALUES "
      "(gen_random_uuid(), 'order', 'o1', 'running', 's1', now() - interval '1 hour'), "
      "(gen_random_uuid(), 'order', 'o2', 'running', 's1', now() + interval '1 hour'), "
      "(gen_random_uuid(), 'order', 'o3', 'needs_attention', 's2', NULL)");
  r = Ctl(db, {"status", "--no-kafka"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("OUTBOX  3 row(s) waiting"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("DEAD LETTERS  1 open"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("KEYS  1 parked"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("FLOWS  2 running (1 past deadline), 0 compensating (0 past deadline), "
                       "1 need attention"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(r.out.find("DEVICE COMMANDS"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("needs attention"), std::string::npos) << r.out;
  EXPECT_EQ(Ctl(db, {"status", "--no-kafka", "--check"}).rc, 1);
  db.Scalar(
      "CREATE TABLE converge.device_commands (id bigint, status text);"
      "INSERT INTO converge.device_commands VALUES (1, 'pending'), (2, 'pending')");
  r = Ctl(db, {"status", "--no-kafka", "--output", "json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  j = Json(r);
  EXPECT_EQ(j->getObject("outbox")->getValue<int>("rows"), 3);
  EXPECT_EQ(j->getObject("dead_letters")->getValue<int>("open"), 1);
  EXPECT_EQ(j->getObject("keys")->getValue<int>("parked"), 1);
  EXPECT_EQ(j->getObject("flows")->getValue<int>("running_past_deadline"), 1);
  EXPECT_EQ(j->getObject("flows")->getValue<int>("needs_attention"), 1);
  EXPECT_EQ(j->getObject("device_commands")->getValue<int>("pending"), 2);
  auto parts = j->getObject("consumers")->getArray("partitions");
  ASSERT_EQ(parts->size(), 1u);
  EXPECT_EQ(parts->getObject(0)->getValue<int>("next_offset"), 7);
  EXPECT_TRUE(parts->getObject(0)->isNull("lag"));
}

TEST(ConvergectlTest, StatusShowsConsumerLagFromKafkaHighWatermarks) {
  TestDatabase db;
  ASSERT_TRUE(db.ok());
  auto cluster = broker::KafkaMockCluster::Start(1);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  ASSERT_TRUE((*cluster)->CreateTopic("lagged", 2, 1).ok());
  broker::KafkaOptions ko;
  ko.bootstrap_servers = (*cluster)->bootstrap_servers();
  auto pub = broker::MakeKafkaPublisher(ko);
  ASSERT_TRUE(pub.ok()) << pub.status();
  std::vector<Message> msgs(5);
  std::vector<const Message*> ptrs;
  for (auto& m : msgs) {
    m.id = NewUuidV7().ToString();
    m.topic = "lagged";
    m.subject = "same-key";  // one partition gets all five
    m.type = "t.e";
    m.source = "/test";
    m.payload = "{}";
    m.datacontenttype = "application/json";
    ptrs.push_back(&m);
  }
  for (const auto& d : (*pub)->PublishBatch(ptrs, 10s)) ASSERT_TRUE(d.status.ok()) << d.status;
  const int partition = static_cast<int>((*pub)->PublishBatch({ptrs.data(), 1}, 10s)[0].partition);
  (*pub)->Close(1s);
  db.Scalar(
      "INSERT INTO converge.consumer_offsets (consumer_group, topic, partition, "
      "next_offset) VALUES ('g', 'lagged', " +
      std::to_string(partition) +
      ", 2), "
      "('g', 'lagged', " +
      std::to_string(1 - partition) + ", 0), ('g', 'lagged', 7, 0)");
  CtlRun r = Ctl(db, {"status", "--kafka", (*cluster)->bootstrap_servers(), "--output", "json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  auto parts = Json(r)->getObject("consumers")->getArray("partitions");
  ASSERT_EQ(parts->size(), 3u) << r.out;
  for (size_t i = 0; i < parts->size(); ++i) {
    auto p = parts->getObject(i);
    if (p->getValue<int>("partition") == 7) {  // the topic has 2 partitions
      EXPECT_TRUE(p->isNull("lag")) << r.out;
      EXPECT_FALSE(p->getValue<std::string>("kafka_error").empty()) << r.out;
    } else if (p->getValue<int>("partition") == partition) {
      EXPECT_EQ(p->getValue<int>("high_watermark"), 6) << r.out;
      EXPECT_EQ(p->getValue<int>("lag"), 4) << r.out;
    } else {
      EXPECT_EQ(p->getValue<int>("lag"), 0) << r.out;
    }
  }
  r = Ctl(db, {"status", "--kafka", (*cluster)->bootstrap_servers()});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("HIGH_WATERMARK"), std::string::npos) << r.out;
  // Kafka down: status still answers, and says why there is no lag.
  r = Ctl(db, {"status", "--kafka", "127.0.0.1:1", "--kafka-timeout", "1s"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("lag unavailable"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace converge
