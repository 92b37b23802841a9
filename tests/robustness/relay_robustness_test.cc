// converge-relay under faults, as real processes, against a private converge-devkafka: kill -9
// at random points in a loop, and a relay paused (SIGSTOP) past its lease while another takes
// its slots over. Each scenario checks the history: every committed message is on the broker
// (lost = 0), and per key the first occurrences of message ids come in sequence order (order
// violations = 0). Duplicates are allowed (at-least-once); consumers dedupe them. The random
// seed is printed for replay.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "converge/broker/kafka_admin.h"
#include "converge/common/uuid.h"
#include "converge/testing/devkafka.h"
#include "converge/testing/env.h"
#include "converge/testing/pg_fixture.h"
#include "converge/testing/process.h"

namespace converge {
namespace {

using std::chrono::milliseconds;
using testing::ChildProcess;
using testing::TestDatabase;

struct History {
  size_t committed = 0;
  size_t lost = 0;
  size_t order_violations = 0;
  size_t duplicates = 0;
};

class RelayRobustness : public ::testing::Test {
 protected:
  void SetUp() override {
    // A private converge-devkafka: the shared one from scripts/services.sh may be restarted by
    // other users of the machine while this test runs (its records live in memory).
    ASSERT_TRUE(kafka_.Start()) << kafka_.error();
    brokers_ = kafka_.bootstrap_servers();
    ASSERT_TRUE(db_.ok());
    topic_ = "robust-" + NewUuidV7().ToString().substr(24);
    const char* seed = std::getenv("CONVERGE_SEED");
    seed_ = seed ? std::stoull(seed) : std::random_device{}();
    std::printf("seed=%llu topic=%s\n", static_cast<unsigned long long>(seed_), topic_.c_str());
    rng_.seed(seed_);
  }

  ChildProcess StartRelay(const std::string& name, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--metrics.port=-1", "--relay.instance_id=" + name,
                                     "--relay.poll_interval=100ms", "--log.level=warn"};
    args.insert(args.end(), extra.begin(), extra.end());
    ChildProcess p;
    EXPECT_TRUE(p.Start(testing::BinDir() + "/converge-relay", args,
                        {{"CONVERGE_PG_URL", db_.url()}, {"CONVERGE_KAFKA_BROKERS", brokers_}},
                        "/tmp/converge-" + topic_ + "-" + name + ".log"));
    return p;
  }

  // Writes `total` messages over `keys` keys in transactions of 1-10 rows; 10% roll back.
  void Writer(int total, int keys, std::atomic<bool>* done) {
    std::mt19937_64 rng(seed_ + 1);
    auto c = db_.Connect();
    int written = 0;
    while (written < total) {
      pqxx::work tx(*c);
      const int n = 1 + static_cast<int>(rng() % 10);
      for (int i = 0; i < n; ++i)
        tx.exec_params("SELECT converge.enqueue($1, $2, 'robust', $3::jsonb)", topic_,
                       "k" + std::to_string(rng() % keys), std::to_string(written + i));
      if (rng() % 10 == 0) {
        tx.abort();
      } else {
        tx.commit();
        written += n;
      }
      std::this_thread::sleep_for(milliseconds(rng() % 4));
    }
    done->store(true);
  }

  // Polls `count_sql` until it returns `want`; false on timeout.
  bool WaitCount(const std::string& count_sql, long long want, milliseconds timeout) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < until) {
      if (db_.Count(count_sql) == want) return true;
      std::this_thread::sleep_for(milliseconds(200));
    }
    return false;
  }
  bool WaitDrained(milliseconds timeout) {
    return WaitCount("SELECT count(*) FROM converge.outbox", 0, timeout);
  }

  History Check() {
    History h;
    // Ground truth: every committed row got a per-key sequence; outbox_keys holds the last one.
    std::map<std::string, int64_t> committed;
    auto c = db_.Connect();
    pqxx::work tx(*c);
    for (const auto& r : tx.exec_params(
             "SELECT key, last_seq FROM converge.outbox_keys WHERE topic = $1", topic_)) {
      committed[r[0].as<std::string>()] = r[1].as<int64_t>();
      h.committed += r[1].as<int64_t>();
    }
    tx.commit();
    auto records = broker::ReadAll(brokers_, topic_, milliseconds(30000));
    EXPECT_TRUE(records.ok()) << records.status();
    if (!records.ok()) return h;
    std::set<std::string> ids;
    std::map<std::string, int64_t> next;
    for (const auto& r : *records) {
      std::string id, seq;
      for (const auto& [k, v] : r.headers) {
        if (k == "ce_id") id = v;
        if (k == "ce_keyseq") seq = v;
      }
      if (!ids.insert(id).second) {
        ++h.duplicates;
        continue;
      }
      const std::string key = r.key.value_or("");
      if (std::stoll(seq) != ++next[key]) ++h.order_violations;
    }
    for (const auto& [key, last] : committed)
      if (next[key] < last) h.lost += static_cast<size_t>(last - next[key]);
    std::printf("committed=%zu lost=%zu order_violations=%zu duplicates=%zu\n", h.committed, h.lost,
                h.order_violations, h.duplicates);
    return h;
  }

  TestDatabase db_;
  testing::PrivateKafka kafka_;
  std::string brokers_;
  std::string topic_;
  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
};

TEST_F(RelayRobustness, KillNineInALoopLosesNothingAndKeepsKeyOrder) {
  std::atomic<bool> done{false};
  std::thread writer([&] { Writer(3000, 40, &done); });
  int kills = 0;
  while (!done.load() || kills < 8) {
    ChildProcess relay = StartRelay("r1");
    std::this_thread::sleep_for(milliseconds(200 + rng_() % 600));
    relay.Signal(SIGKILL);
    relay.Wait(milliseconds(5000));
    ++kills;
    if (kills > 60) break;
  }
  writer.join();
  // The killed relays' leases expire; a fresh relay takes the slots over and drains.
  ChildProcess last =
      StartRelay("r-final", {"--relay.lease_ttl=6s", "--relay.lease_renew_interval=1s",
                             "--relay.publish_timeout=2500ms", "--kafka.message.timeout.ms=1500"});
  // The killed relays may have drained everything already: wait until the final one holds the
  // slots, so that the SIGTERM below finds it running and holding leases to give back.
  ASSERT_TRUE(WaitCount(
      "SELECT count(*) FROM converge.relay_slots WHERE owner = 'r-final' AND lease_until > now()",
      256, milliseconds(120000)))
      << "the final relay did not take the killed relays' slots over";
  ASSERT_TRUE(WaitDrained(milliseconds(120000))) << "outbox not drained after heal";
  last.Signal(SIGTERM);
  EXPECT_EQ(last.Wait(milliseconds(20000)), 0) << "SIGTERM must drain and exit 0";
  EXPECT_EQ(db_.Count("SELECT count(*) FROM converge.relay_slots WHERE owner IS NOT NULL AND "
                      "lease_until > now()"),
            0)
      << "a relay stopped with SIGTERM gives its slots back";
  History h = Check();
  std::printf("kills=%d\n", kills);
  EXPECT_GE(h.committed, 3000u) << "liveness floor";
  EXPECT_EQ(h.lost, 0u);
  EXPECT_EQ(h.order_violations, 0u);
}

TEST_F(RelayRobustness, PausedRelayLosesItsSlotsWithoutBreakingKeyOrder) {
  const std::vector<std::string> fast = {
      "--relay.lease_ttl=6s", "--relay.lease_renew_interval=1s", "--relay.publish_timeout=2500ms",
      "--kafka.message.timeout.ms=1500", "--relay.takeover_grace=500ms"};
  ChildProcess a = StartRelay("a", fast);
  std::this_thread::sleep_for(milliseconds(1500));
  ChildProcess b = StartRelay("b", fast);
  std::atomic<bool> done{false};
  std::thread writer([&] { Writer(3000, 10, &done); });
  std::this_thread::sleep_for(milliseconds(2500));
  ASSERT_TRUE(a.Signal(SIGSTOP));
  // Past a's lease: b must own every slot and keep publishing.
  bool b_took_over = false;
  for (int i = 0; i < 100 && !b_took_over; ++i) {
    std::this_thread::sleep_for(milliseconds(200));
    b_took_over = db_.Count(
                      "SELECT count(*) FROM converge.relay_slots WHERE owner = 'b' AND "
                      "lease_until > now()") == 256;
  }
  EXPECT_TRUE(b_took_over) << "the live relay must take the paused relay's slots";
  ASSERT_TRUE(a.Signal(SIGCONT));
  writer.join();
  ASSERT_TRUE(WaitDrained(milliseconds(120000))) << "outbox not drained after heal";
  a.Signal(SIGTERM);
  b.Signal(SIGTERM);
  EXPECT_EQ(a.Wait(milliseconds(20000)), 0);
  EXPECT_EQ(b.Wait(milliseconds(20000)), 0);
  History h = Check();
  EXPECT_GE(h.committed, 3000u) << "liveness floor";
  EXPECT_EQ(h.lost, 0u);
  EXPECT_EQ(h.order_violations, 0u);
}

}  // namespace
}  // namespace converge
