#include "converge/common/log.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace converge {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// 2026-11-22T19:00:00.123Z
const auto kStart = std::chrono::system_clock::time_point(std::chrono::seconds(1795374000)) +
                    std::chrono::milliseconds(123);

class LogTest : public ::testing::Test {
 protected:
  void SetUp() override { Configure(LogFormat::kLogfmt, Level::kInfo); }
  void TearDown() override { ResetLogging(); }

  void Configure(LogFormat format, Level min_level) {
    LogOptions o;
    o.format = format;
    o.min_level = min_level;
    o.clock = &clock_;
    o.sink = [this](std::string_view line) {
      std::lock_guard lock(mu_);
      lines_.emplace_back(line);
    };
    ConfigureLogging(std::move(o));
  }

  std::vector<std::string> Lines() {
    std::lock_guard lock(mu_);
    return lines_;
  }

  ManualClock clock_{kStart};
  std::mutex mu_;
  std::vector<std::string> lines_;
};

TEST_F(LogTest, LogfmtLineIsExact) {
  Logger log("relay");
  log.Info("claimed batch", {{"rows", 120}, {"slot", 3}});
  ASSERT_EQ(Lines().size(), 1u);
  EXPECT_EQ(Lines()[0],
            "ts=2026-11-22T19:00:00.123Z level=info component=relay msg=\"claimed batch\" "
            "rows=120 slot=3");
}

TEST_F(LogTest, LogfmtValueTypesAndQuoting) {
  Log(Level::kWarn, "x",
      {{"s", "two words"},
       {"empty", ""},
       {"q", "say \"hi\"\\now"},
       {"nl", "a\nb"},
       {"eq", "a=b"},
       {"t", true},
       {"f", false},
       {"neg", -7},
       {"big", std::numeric_limits<uint64_t>::max()},
       {"d", 0.25},
       {"took", std::chrono::microseconds(1500)}});
  ASSERT_EQ(Lines().size(), 1u);
  EXPECT_EQ(Lines()[0],
            "ts=2026-11-22T19:00:00.123Z level=warn msg=x s=\"two words\" empty=\"\" "
            "q=\"say \\\"hi\\\"\\\\now\" nl=\"a\\nb\" eq=\"a=b\" t=true f=false neg=-7 "
            "big=18446744073709551615 d=0.25 took_ms=1.5");
}

TEST_F(LogTest, JsonLineIsExact) {
  Configure(LogFormat::kJson, Level::kInfo);
  Logger log("relay", {{"slot", 3}});
  log.Error("publish failed",
            {{"n", 1}, {"ok", true}, {"d", 0.5}, {"s", "a\"b"}, {"nan", std::nan("")}});
  ASSERT_EQ(Lines().size(), 1u);
  EXPECT_EQ(Lines()[0],
            R"({"ts":"2026-11-22T19:00:00.123Z","level":"error","component":"relay",)"
            R"("msg":"publish failed","slot":3,"n":1,"ok":true,"d":0.5,"s":"a\"b","nan":"NaN"})");
}

TEST_F(LogTest, InvalidUtf8StaysValidText) {
  Configure(LogFormat::kJson, Level::kInfo);
  Log(Level::kInfo, "bytes", {{"v", std::string("ok\xff\xc3\xa9")}});
  Configure(LogFormat::kLogfmt, Level::kInfo);
  Log(Level::kInfo, "bytes", {{"v", std::string("ok\xff\xc3\xa9")}});
  ASSERT_EQ(Lines().size(), 2u);
  EXPECT_THAT(Lines()[0], HasSubstr(R"("v":"ok)"
                                    "\xEF\xBF\xBD\xC3\xA9\""));
  EXPECT_THAT(Lines()[1], HasSubstr("v=\"ok\\xff\xC3\xA9\""));
}

TEST_F(LogTest, ReservedKeysDoNotCollide) {
  Log(Level::kInfo, "m", {{"msg", "other"}, {"bad key", 1}});
  ASSERT_EQ(Lines().size(), 1u);
  EXPECT_THAT(Lines()[0], HasSubstr(" msg=m _msg=other bad_key=1"));
}

TEST_F(LogTest, MinimumLevelFilters) {
  Logger log("c");
  log.Debug("hidden");
  log.Info("shown");
  SetMinLevel(Level::kError);
  log.Warn("hidden too");
  log.Error("shown too");
  SetMinLevel(Level::kDebug);
  log.Debug("now shown");
  const auto lines = Lines();
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_THAT(lines[0], HasSubstr("msg=shown"));
  EXPECT_THAT(lines[1], HasSubstr("level=error"));
  EXPECT_THAT(lines[2], HasSubstr("level=debug"));
}

TEST_F(LogTest, WithAddsContext) {
  Logger log = Logger("relay").With({{"slot", 3}}).With({{"topic", "orders"}});
  log.Info("x", {{"n", 1}});
  ASSERT_EQ(Lines().size(), 1u);
  EXPECT_THAT(Lines()[0], HasSubstr("component=relay msg=x slot=3 topic=orders n=1"));
}

TEST(RedactTest, UrlPasswords) {
  EXPECT_EQ(Redact("postgresql://u:secret@h/db"), "postgresql://u:***@h/db");
  EXPECT_EQ(Redact("mqtt://u:p@h"), "mqtt://u:***@h");
  EXPECT_EQ(Redact("mqtts://user:pw@broker:8883/x"), "mqtts://user:***@broker:8883/x");
  EXPECT_EQ(Redact("connect to postgresql://app:s3cr3t@db:5432/app failed: timeout"),
            "connect to postgresql://app:***@db:5432/app failed: timeout");
  // An unencoded '@' in the password is over-masked, never leaked.
  EXPECT_EQ(Redact("postgresql://u:p@ss@h/db"), "postgresql://u:***@h/db");
  EXPECT_EQ(Redact("a tcp://x:y@h and mqtt://u:v@g"), "a tcp://x:***@h and mqtt://u:***@g");
  // Nothing to hide.
  EXPECT_EQ(Redact("postgresql://u@h/db"), "postgresql://u@h/db");
  EXPECT_EQ(Redact("http://h:8080/metrics"), "http://h:8080/metrics");
  EXPECT_EQ(Redact("plain text"), "plain text");
}

TEST(RedactTest, KeywordPasswords) {
  EXPECT_EQ(Redact("host=db user=u password=secret dbname=app"),
            "host=db user=u password=*** dbname=app");
  EXPECT_EQ(Redact("host=db password = 'sec ret\\' x' port=5432"),
            "host=db password = '***' port=5432");
  EXPECT_EQ(Redact("postgresql://h/db?sslmode=require&password=x&a=b"),
            "postgresql://h/db?sslmode=require&password=***&a=b");
  EXPECT_EQ(Redact("sasl.password=abc acks=all"), "sasl.password=*** acks=all");
  EXPECT_EQ(Redact("PGPASSWORD=x"), "PGPASSWORD=***");
  EXPECT_EQ(Redact("rows=5 user=u"), "rows=5 user=u");
  // Idempotent.
  EXPECT_EQ(Redact(Redact("password=secret")), "password=***");
}

TEST(RedactTest, SecretKeys) {
  for (const char* k :
       {"password", "database.password", "kafka.sasl.password", "api_token", "client_secret",
        "ssl.key.pem", "ssl.key.password", "PGPASSWORD", "mqtt.password", "credentials"}) {
    EXPECT_TRUE(IsSecretKey(k)) << k;
  }
  for (const char* k : {"user", "rows", "ssl.key.location", "host", "topic", "url"}) {
    EXPECT_FALSE(IsSecretKey(k)) << k;
  }
}

TEST_F(LogTest, SecretsNeverReachTheSink) {
  Logger log("relay");
  log.Info("connecting to postgresql://app:hunter2@db/app", {{"password", "hunter2"},
                                                             {"kafka.sasl.password", "hunter2"},
                                                             {"token", 12345},
                                                             {"dsn", "host=db password=hunter2"},
                                                             {"ssl.key.location", "/etc/key.pem"}});
  Configure(LogFormat::kJson, Level::kInfo);
  log.Warn("x", {{"api_token", "hunter2"}, {"url", "mqtt://u:hunter2@h"}});
  const auto lines = Lines();
  ASSERT_EQ(lines.size(), 2u);
  for (const std::string& line : lines) EXPECT_THAT(line, Not(HasSubstr("hunter2")));
  EXPECT_THAT(lines[0], HasSubstr("password=*** kafka.sasl.password=*** token=***"));
  EXPECT_THAT(lines[0], HasSubstr("ssl.key.location=/etc/key.pem"));
  EXPECT_THAT(lines[0], HasSubstr("postgresql://app:***@db/app"));
  EXPECT_THAT(lines[1], HasSubstr(R"("api_token":"***","url":"mqtt://u:***@h")"));
}

TEST_F(LogTest, LogEverySuppressesAndCounts) {
  Logger log("relay");
  for (int i = 0; i < 5; ++i) {
    log.LogEvery("publish_failed", std::chrono::seconds(10), Level::kWarn, "publish failed",
                 {{"attempt", i}});
  }
  ASSERT_EQ(Lines().size(), 1u);
  EXPECT_THAT(Lines()[0], Not(HasSubstr("suppressed")));
  EXPECT_THAT(Lines()[0], HasSubstr("attempt=0"));

  clock_.Advance(std::chrono::seconds(9));
  log.LogEvery("publish_failed", std::chrono::seconds(10), Level::kWarn, "publish failed",
               {{"attempt", 5}});
  EXPECT_EQ(Lines().size(), 1u);

  clock_.Advance(std::chrono::seconds(1));
  log.LogEvery("publish_failed", std::chrono::seconds(10), Level::kWarn, "publish failed",
               {{"attempt", 6}});
  ASSERT_EQ(Lines().size(), 2u);
  EXPECT_THAT(Lines()[1], HasSubstr("attempt=6 suppressed=5"));

  // Keys are independent, and so are components.
  log.LogEvery("other", std::chrono::seconds(10), Level::kWarn, "other");
  Logger("consumer").LogEvery("publish_failed", std::chrono::seconds(10), Level::kWarn, "x");
  EXPECT_EQ(Lines().size(), 4u);
}

TEST_F(LogTest, LogLimiterPerCallSite) {
  LogLimiter limiter(std::chrono::seconds(1), &clock_);
  uint64_t dropped = 99;
  EXPECT_TRUE(limiter.Allow(&dropped));
  EXPECT_EQ(dropped, 0u);
  EXPECT_FALSE(limiter.Allow());
  EXPECT_FALSE(limiter.Allow());
  clock_.Advance(std::chrono::milliseconds(1000));
  EXPECT_TRUE(limiter.Allow(&dropped));
  EXPECT_EQ(dropped, 2u);
}

TEST_F(LogTest, ConcurrentLinesAreWhole) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 500;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([t] {
      Logger log("worker", {{"thread", t}});
      for (int i = 0; i < kPerThread; ++i) log.Info("tick", {{"i", i}});
    });
  }
  for (auto& th : threads) th.join();
  const auto lines = Lines();
  ASSERT_EQ(lines.size(), static_cast<size_t>(kThreads * kPerThread));
  for (const std::string& line : lines) {
    ASSERT_THAT(line, ::testing::MatchesRegex("ts=\\S+ level=info component=worker msg=tick "
                                              "thread=[0-9]+ i=[0-9]+"));
  }
}

TEST(LevelTest, ParseAndName) {
  EXPECT_EQ(*ParseLevel("WARNING"), Level::kWarn);
  EXPECT_EQ(*ParseLevel("debug"), Level::kDebug);
  EXPECT_FALSE(ParseLevel("verbose").ok());
  EXPECT_EQ(LevelName(Level::kError), "error");
  EXPECT_EQ(*ParseLogFormat("JSON"), LogFormat::kJson);
  EXPECT_FALSE(ParseLogFormat("xml").ok());
}

}  // namespace
}  // namespace converge
