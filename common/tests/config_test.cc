#include "converge/common/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <string>

namespace converge {
namespace {

using std::chrono::milliseconds;
using ::testing::HasSubstr;
using ::testing::Not;

std::string WriteFile(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "/converge_config_test_" + name;
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
  return path;
}

// A schema shaped like converge-relay's.
struct RelaySchema {
  ConfigSchema schema{"converge-relay", "Moves outbox rows to the broker."};
  ConfigKey<std::string> db_url = schema.String("database.url", "", "PostgreSQL connection URL.")
                                      .Env("CONVERGE_PG_URL")
                                      .Required();
  ConfigKey<std::string> db_password =
      schema.String("database.password", "", "Password, if not in the URL.")
          .Env("CONVERGE_PG_PASSWORD")
          .Secret();
  ConfigKey<int64_t> batch = schema.Int("relay.batch_size", 100, "Rows claimed per transaction.")
                                 .Range(1, 10000)
                                 .Env("CONVERGE_RELAY_BATCH_SIZE");
  ConfigKey<milliseconds> poll =
      schema.Duration("relay.poll_interval", milliseconds(500), "Sleep when the outbox is empty.")
          .Env("CONVERGE_RELAY_POLL_INTERVAL");
  ConfigKey<milliseconds> lease =
      schema.Duration("relay.lease", std::chrono::seconds(30), "Slot lease duration.")
          .Range(milliseconds(1000), milliseconds(600000));
  ConfigKey<bool> dry_run = schema.Bool("relay.dry_run", false, "Claim but do not publish.");
  ConfigKey<std::string> format =
      schema.Enum("log.format", "logfmt", {"logfmt", "json"}, "Log line format.")
          .Env("CONVERGE_LOG_FORMAT");
  ConfigKey<uint64_t> max_bytes =
      schema.Bytes("relay.max_message_bytes", 1 << 20, "Largest payload published.");
  ConfigKey<int64_t> pin = schema.Int("relay.secret_pin", 0, "A secret number.").Secret();
  ConfigKey<std::string> brokers =
      schema.String("kafka.bootstrap.servers", "", "Kafka bootstrap servers.")
          .Env("CONVERGE_KAFKA_BROKERS");

  RelaySchema() {
    schema.PassThrough("kafka.", "librdkafka properties, passed verbatim");
    schema.PassThrough("mqtt.", "Paho MQTT options");
  }
};

ConfigInputs Inputs(std::vector<std::string> args, std::map<std::string, std::string> env = {}) {
  ConfigInputs in;
  in.args = std::move(args);
  in.env = [env = std::move(env)](const std::string& name) -> std::optional<std::string> {
    auto it = env.find(name);
    if (it == env.end()) return std::nullopt;
    return it->second;
  };
  return in;
}

TEST(ConfigTest, DefaultsApplyWhenNothingIsSet) {
  RelaySchema r;
  auto cfg = r.schema.Load(Inputs({"--database.url=postgresql://h/db"}));
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->Get(r.batch), 100);
  EXPECT_EQ(cfg->Get(r.poll), milliseconds(500));
  EXPECT_EQ(cfg->Get(r.lease), std::chrono::seconds(30));
  EXPECT_FALSE(cfg->Get(r.dry_run));
  EXPECT_EQ(cfg->Get(r.format), "logfmt");
  EXPECT_EQ(cfg->Get(r.max_bytes), 1048576u);
  EXPECT_EQ(cfg->SourceOf("relay.batch_size"), "default");
  EXPECT_FALSE(cfg->IsSet("relay.batch_size"));
  EXPECT_TRUE(cfg->IsSet("database.url"));
}

TEST(ConfigTest, PrecedenceFileThenEnvThenFlag) {
  RelaySchema r;
  const std::string path = WriteFile("precedence.conf",
                                     "database.url = postgresql://file/db\n"
                                     "[relay]\n"
                                     "batch_size = 200\n"
                                     "poll_interval = 2s\n"
                                     "max_message_bytes = 64KiB\n");
  auto cfg = r.schema.Load(
      Inputs({"--config", path, "--relay.poll_interval", "3m"},
             {{"CONVERGE_RELAY_BATCH_SIZE", "300"}, {"CONVERGE_RELAY_POLL_INTERVAL", "1s"}}));
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->Get(r.db_url), "postgresql://file/db");  // file only
  EXPECT_EQ(cfg->Get(r.max_bytes), 65536u);               // file only
  EXPECT_EQ(cfg->Get(r.batch), 300);                      // env beats file
  EXPECT_EQ(cfg->Get(r.poll), std::chrono::minutes(3));   // flag beats env and file
  EXPECT_EQ(cfg->SourceOf("database.url"), "file " + path + ":1");
  EXPECT_EQ(cfg->SourceOf("relay.batch_size"), "env CONVERGE_RELAY_BATCH_SIZE");
  EXPECT_EQ(cfg->SourceOf("relay.poll_interval"), "flag --relay.poll_interval");
  EXPECT_EQ(cfg->config_file(), path);
}

TEST(ConfigTest, ConfigFileFromEnvAndEmptyEnvIsUnset) {
  RelaySchema r;
  const std::string path = WriteFile("fromenv.conf", "relay.batch_size = 7\n");
  auto cfg = r.schema.Load(
      Inputs({"--database.url=x"}, {{"CONVERGE_CONFIG", path}, {"CONVERGE_RELAY_BATCH_SIZE", ""}}));
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->Get(r.batch), 7);
}

TEST(ConfigTest, MissingExplicitFileIsAnErrorButMissingDefaultFileIsNot) {
  RelaySchema r;
  auto bad = r.schema.Load(Inputs({"--config=/nonexistent/relay.conf", "--database.url=x"}));
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("/nonexistent/relay.conf"));
  ConfigInputs in = Inputs({"--database.url=x"});
  in.default_file = "/nonexistent/default.conf";
  auto ok = r.schema.Load(in);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->config_file(), "");
}

TEST(ConfigTest, UnknownKeyIsNamedWithSuggestion) {
  RelaySchema r;
  const std::string path = WriteFile("unknown.conf", "database.url = x\nrelay.batchsize = 5\n");
  auto cfg = r.schema.Load(Inputs({"--config=" + path}));
  ASSERT_FALSE(cfg.ok());
  EXPECT_EQ(cfg.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(cfg.status().message(), HasSubstr("unknown key 'relay.batchsize'"));
  EXPECT_THAT(cfg.status().message(), HasSubstr(path + ":2"));
  EXPECT_THAT(cfg.status().message(), HasSubstr("did you mean 'relay.batch_size'?"));

  auto flag = r.schema.Load(Inputs({"--database.url=x", "--relay.pol_interval=1s"}));
  ASSERT_FALSE(flag.ok());
  EXPECT_THAT(flag.status().message(),
              HasSubstr("unknown key 'relay.pol_interval' from flag --relay.pol_interval; did "
                        "you mean 'relay.poll_interval'?"));

  auto far = r.schema.Load(Inputs({"--database.url=x", "--zzz=1"}));
  ASSERT_FALSE(far.ok());
  EXPECT_THAT(far.status().message(), HasSubstr("unknown key 'zzz'"));
  EXPECT_THAT(far.status().message(), Not(HasSubstr("did you mean")));
}

TEST(ConfigTest, BadValuesNameKeyValueAndExpectation) {
  RelaySchema r;
  auto cfg = r.schema.Load(
      Inputs({"--database.url=x", "--relay.batch_size=12x", "--relay.poll_interval=500",
              "--relay.dry_run=maybe", "--relay.max_message_bytes=1MB2"},
             {{"CONVERGE_LOG_FORMAT", "xml"}}));
  ASSERT_FALSE(cfg.ok());
  const std::string& m = cfg.status().message();
  EXPECT_THAT(m, HasSubstr("relay.batch_size: invalid value \"12x\" from flag "
                           "--relay.batch_size: expected an integer in 1..10000"));
  EXPECT_THAT(m, HasSubstr("relay.poll_interval: invalid value \"500\""));
  EXPECT_THAT(m, HasSubstr("a duration like 500ms, 5s, 2m"));
  EXPECT_THAT(m, HasSubstr("relay.dry_run: invalid value \"maybe\""));
  EXPECT_THAT(m, HasSubstr("true or false"));
  EXPECT_THAT(m, HasSubstr("log.format: invalid value \"xml\" from env CONVERGE_LOG_FORMAT: "
                           "expected one of logfmt, json"));
  EXPECT_THAT(m, HasSubstr("relay.max_message_bytes: invalid value \"1MB2\""));
}

TEST(ConfigTest, RangesAreEnforced) {
  RelaySchema r;
  auto low = r.schema.Load(Inputs({"--database.url=x", "--relay.batch_size=0"}));
  ASSERT_FALSE(low.ok());
  EXPECT_THAT(low.status().message(), HasSubstr("expected an integer in 1..10000"));
  auto lease = r.schema.Load(Inputs({"--database.url=x", "--relay.lease=500ms"}));
  ASSERT_FALSE(lease.ok());
  EXPECT_THAT(lease.status().message(), HasSubstr("relay.lease"));
  EXPECT_THAT(lease.status().message(), HasSubstr("in 1s..10m"));
  auto ok = r.schema.Load(Inputs({"--database.url=x", "--relay.lease=1.5s"}));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->Get(r.lease), milliseconds(1500));
}

TEST(ConfigTest, RequiredKeyMissingIsNamed) {
  RelaySchema r;
  auto cfg = r.schema.Load(Inputs({}));
  ASSERT_FALSE(cfg.ok());
  EXPECT_THAT(cfg.status().message(),
              HasSubstr("missing required key 'database.url' (set it in the config file, env "
                        "CONVERGE_PG_URL or --database.url)"));
}

TEST(ConfigTest, SecretsStayOutOfDumpsAndErrors) {
  RelaySchema r;
  const std::string path = WriteFile("secrets.conf",
                                     "database.url = postgresql://app:urlpass@db/app\n"
                                     "kafka.sasl.password = kafkapass\n"
                                     "kafka.acks = all\n");
  auto cfg = r.schema.Load(Inputs({"--config=" + path}, {{"CONVERGE_PG_PASSWORD", "envpass"}}));
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->Get(r.db_password), "envpass");  // available to the program
  const std::string dump = cfg->DumpEffective();
  for (const char* secret : {"urlpass", "kafkapass", "envpass"}) {
    EXPECT_THAT(dump, Not(HasSubstr(secret))) << dump;
  }
  EXPECT_THAT(dump, HasSubstr("database.password = ***  # env CONVERGE_PG_PASSWORD"));
  EXPECT_THAT(dump, HasSubstr("database.url = postgresql://app:***@db/app  # file " + path));
  EXPECT_THAT(dump, HasSubstr("kafka.sasl.password = ***"));
  EXPECT_THAT(dump, HasSubstr("kafka.acks = all"));
  EXPECT_THAT(dump, HasSubstr("relay.batch_size = 100  # default"));

  auto bad = r.schema.Load(Inputs({"--database.url=x", "--relay.secret_pin=hunter2"}));
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("relay.secret_pin: invalid value (redacted)"));
  EXPECT_THAT(bad.status().message(), Not(HasSubstr("hunter2")));

  auto url = r.schema.Load(Inputs({"--database.url=postgresql://u:hunter2@h/db",
                                   "--relay.batch_size=postgresql://u:hunter2@h/db"}));
  ASSERT_FALSE(url.ok());
  EXPECT_THAT(url.status().message(), Not(HasSubstr("hunter2")));
}

TEST(ConfigTest, PassThroughPrefixesCollectVerbatim) {
  RelaySchema r;
  const std::string path = WriteFile("pass.conf",
                                     "[kafka]\n"
                                     "acks = all\n"
                                     "linger.ms = 5\n"
                                     "[mqtt]\n"
                                     "keep_alive = 30\n");
  auto cfg = r.schema.Load(Inputs({"--config=" + path, "--database.url=x", "--kafka.linger.ms=10",
                                   "--kafka.client.id", "relay-1"},
                                  {{"CONVERGE_KAFKA_BROKERS", "k1:9092,k2:9092"}}));
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  const std::map<std::string, std::string> want_kafka = {{"acks", "all"},
                                                         {"bootstrap.servers", "k1:9092,k2:9092"},
                                                         {"client.id", "relay-1"},
                                                         {"linger.ms", "10"}};
  EXPECT_EQ(cfg->PassThrough("kafka."), want_kafka);
  EXPECT_EQ(cfg->PassThrough("mqtt."), (std::map<std::string, std::string>{{"keep_alive", "30"}}));
  EXPECT_EQ(*cfg->Text("kafka.acks"), "all");
  EXPECT_EQ(cfg->SourceOf("kafka.linger.ms"), "flag --kafka.linger.ms");
}

TEST(ConfigTest, FlagForms) {
  RelaySchema r;
  auto cfg =
      r.schema.Load(Inputs({"replay", "--database.url", "x", "--relay.dry_run", "--check-config",
                            "--relay.batch_size", "9", "--", "--not-a-flag"}));
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_TRUE(cfg->Get(r.dry_run));
  EXPECT_EQ(cfg->Get(r.batch), 9);
  EXPECT_TRUE(cfg->check_config_requested());
  EXPECT_FALSE(cfg->help_requested());
  EXPECT_EQ(cfg->positional(), (std::vector<std::string>{"replay", "--not-a-flag"}));

  auto no_value = r.schema.Load(Inputs({"--database.url=x", "--relay.batch_size"}));
  ASSERT_FALSE(no_value.ok());
  EXPECT_THAT(no_value.status().message(), HasSubstr("flag --relay.batch_size needs a value"));

  auto dash = r.schema.Load(Inputs({"--database.url=x", "-v"}));
  ASSERT_FALSE(dash.ok());
  EXPECT_THAT(dash.status().message(), HasSubstr("unknown flag '-v'"));

  auto malformed = r.schema.Load(Inputs({"--database.url=x", "--kafka.a b=c"}));
  ASSERT_FALSE(malformed.ok());
  EXPECT_THAT(malformed.status().message(), HasSubstr("malformed flag '--kafka.a b'"));
}

TEST(ConfigDeathTest, KeyFromAnotherSchemaIsAWiringBug) {
  RelaySchema r;
  ConfigSchema other("other", "");
  ConfigKey<int64_t> foreign = other.Int("x.y", 1, "x");
  auto cfg = r.schema.Load(Inputs({"--database.url=x"}));
  ASSERT_TRUE(cfg.ok());
  EXPECT_DEATH((void)cfg->Get(foreign), "config key 'x.y' does not belong to this Config");
}

TEST(ConfigTest, HelpSucceedsEvenWhenConfigIsInvalid) {
  RelaySchema r;
  auto cfg = r.schema.Load(Inputs({"--help", "--relay.batch_size=oops"}));
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_TRUE(cfg->help_requested());
}

TEST(ConfigTest, HelpTextListsKeysTypesDefaultsAndEnv) {
  RelaySchema r;
  const std::string help = r.schema.HelpText();
  EXPECT_THAT(help, HasSubstr("Usage: converge-relay"));
  EXPECT_THAT(help, HasSubstr("Moves outbox rows to the broker."));
  EXPECT_THAT(help, HasSubstr("\nrelay:\n"));
  EXPECT_THAT(help, HasSubstr("  --relay.batch_size=<int 1..10000>\n"
                              "      Rows claimed per transaction.\n"
                              "      default: 100   env: CONVERGE_RELAY_BATCH_SIZE\n"));
  EXPECT_THAT(help, HasSubstr("--database.url=<string>"));
  EXPECT_THAT(help, HasSubstr("required   env: CONVERGE_PG_URL"));
  EXPECT_THAT(help, HasSubstr("--relay.poll_interval=<duration>"));
  EXPECT_THAT(help, HasSubstr("--log.format=<logfmt|json>"));
  EXPECT_THAT(help, HasSubstr("default: (secret)   secret   env: CONVERGE_PG_PASSWORD"));
  EXPECT_THAT(help, HasSubstr("--kafka.<property>=<value>"));
  EXPECT_THAT(help, HasSubstr("CONVERGE_CONFIG"));
}

TEST(ConfigTest, MarkdownReferenceHasATableRowPerKey) {
  RelaySchema r;
  const std::string md = r.schema.MarkdownReference();
  EXPECT_THAT(md, HasSubstr("## `converge-relay`"));
  EXPECT_THAT(md, HasSubstr("### `relay`"));
  EXPECT_THAT(md, HasSubstr("| `relay.batch_size` | int 1..10000 | `100` | "
                            "`CONVERGE_RELAY_BATCH_SIZE` | Rows claimed per transaction. |"));
  EXPECT_THAT(md, HasSubstr("| `log.format` | logfmt\\|json | `logfmt` |"));
  EXPECT_THAT(md, HasSubstr("| `database.password` | string, secret | (secret) |"));
  EXPECT_THAT(md, HasSubstr("| `kafka.*` | librdkafka properties, passed verbatim |"));
}

TEST(ConfigTest, BadDeclarationsAreInternalErrors) {
  ConfigSchema s("p", "");
  s.Int("a.b", 0, "x").Range(1, 10);  // default outside the range
  s.Int("a.c", 1, "x");
  s.Int("a.c", 1, "again");
  s.String("Bad Name", "", "x");
  auto cfg = s.Load(Inputs({}));
  ASSERT_FALSE(cfg.ok());
  EXPECT_EQ(cfg.status().code(), StatusCode::kInternal);
  EXPECT_THAT(cfg.status().message(), HasSubstr("default of key 'a.b'"));
  EXPECT_THAT(cfg.status().message(), HasSubstr("key 'a.c' declared twice"));
  EXPECT_THAT(cfg.status().message(), HasSubstr("invalid key name 'Bad Name'"));
}

TEST(ConfigFileTest, Syntax) {
  auto entries = ParseConfigText(
      "# comment\n"
      "\n"
      "top = 1\n"
      "[kafka]\n"
      "bootstrap.servers = k1:9092 # trailing comment\n"
      "  sasl.username=\"two words # kept\" # comment\n"
      "path = 'C:\\dir' \r\n"
      "color = red#blue\n"
      "escaped = \"a\\\"b\\\\c\\nd\"\n"
      "empty =\n"
      "[]\n"
      "again = x\n",
      "t.conf");
  ASSERT_TRUE(entries.ok()) << entries.status();
  std::vector<std::tuple<std::string, std::string, int>> got;
  for (const auto& e : *entries) got.emplace_back(e.key, e.value, e.line);
  const std::vector<std::tuple<std::string, std::string, int>> want = {
      {"top", "1", 3},
      {"kafka.bootstrap.servers", "k1:9092", 5},
      {"kafka.sasl.username", "two words # kept", 6},
      {"kafka.path", "C:\\dir", 7},
      {"kafka.color", "red#blue", 8},
      {"kafka.escaped", "a\"b\\c\nd", 9},
      {"kafka.empty", "", 10},
      {"again", "x", 12}};
  EXPECT_EQ(got, want);
}

TEST(ConfigFileTest, ErrorsNameTheLineButNotTheValue) {
  const auto err = [](std::string_view text) {
    auto r = ParseConfigText(text, "f.conf");
    return r.ok() ? std::string("OK") : r.status().message();
  };
  EXPECT_EQ(err("a = 1\nhunter2\n"), "f.conf:2: expected 'key = value' or '[section]'");
  EXPECT_EQ(err("password = \"hunter2\n"), "f.conf:1: unterminated quoted value of key 'password'");
  EXPECT_EQ(err("a = 1\n[x]\nb = 2\nb = 3\n"),
            "f.conf:4: key 'x.b' is set twice (first on line 3)");
  EXPECT_EQ(err("[sec\n"), "f.conf:1: malformed section header (expected [name])");
  EXPECT_EQ(err("bad key = 1\n"), "f.conf:1: invalid key (use letters, digits, '_', '-', '.')");
  EXPECT_EQ(err("a = \"x\" y\n"), "f.conf:1: unexpected text after quoted value of key 'a'");
  EXPECT_EQ(err("a = \"\\q\"\n"), "f.conf:1: invalid escape in quoted value of key 'a'");
  EXPECT_EQ(err("a = \"\\x4\"\n"),
            "f.conf:1: invalid \\x escape (two hex digits expected) in quoted value of key 'a'");
}

// What DumpEffective writes reads back as the same value, whatever bytes it holds: quotes,
// backslashes, a leading space, " #", controls and malformed UTF-8 (written as \xHH).
TEST(ConfigFileTest, DumpedValuesReadBackUnchanged) {
  RelaySchema r;
  const std::vector<std::string> values = {"plain",    " lead",           "a \"q\" b\\c",
                                           "x #not",   "tab\there\nnl",   std::string("nul\0b", 5),
                                           "bell\x07", "bad\xff\xfeutf8", "caf\xc3\xa9"};
  for (const auto& v : values) {
    auto cfg = r.schema.Load(Inputs({"--database.url=x", "--kafka.client.id=" + v}));
    ASSERT_TRUE(cfg.ok()) << cfg.status();
    const std::string dump = cfg->DumpEffective();
    auto entries = ParseConfigText(dump, "dump.conf");
    ASSERT_TRUE(entries.ok()) << entries.status() << "\n" << dump;
    bool found = false;
    for (const auto& e : *entries) {
      if (e.key != "kafka.client.id") continue;
      found = true;
      EXPECT_EQ(e.value, v) << dump;
    }
    EXPECT_TRUE(found) << dump;
  }
}

TEST(ConfigValuesTest, Durations) {
  EXPECT_EQ(*ParseDuration("500ms"), milliseconds(500));
  EXPECT_EQ(*ParseDuration("5s"), milliseconds(5000));
  EXPECT_EQ(*ParseDuration("2m"), milliseconds(120000));
  EXPECT_EQ(*ParseDuration("1h30m"), milliseconds(5400000));
  EXPECT_EQ(*ParseDuration("1.5s"), milliseconds(1500));
  EXPECT_EQ(*ParseDuration("0"), milliseconds(0));
  for (const char* bad : {"", "5", "5x", "ms", "-1s", "1.s", "0.5ms", "99999999999999999999h"}) {
    EXPECT_FALSE(ParseDuration(bad).ok()) << bad;
  }
  EXPECT_EQ(FormatDuration(milliseconds(500)), "500ms");
  EXPECT_EQ(FormatDuration(milliseconds(5000)), "5s");
  EXPECT_EQ(FormatDuration(milliseconds(120000)), "2m");
  EXPECT_EQ(FormatDuration(milliseconds(7200000)), "2h");
  EXPECT_EQ(FormatDuration(milliseconds(1500)), "1500ms");
}

TEST(ConfigValuesTest, BytesAndBools) {
  EXPECT_EQ(*ParseBytes("1048576"), 1048576u);
  EXPECT_EQ(*ParseBytes("1MiB"), 1048576u);
  EXPECT_EQ(*ParseBytes("64 KiB"), 65536u);
  EXPECT_EQ(*ParseBytes("10MB"), 10000000u);
  EXPECT_EQ(*ParseBytes("1.5KiB"), 1536u);
  EXPECT_EQ(*ParseBytes("2gib"), 2147483648u);
  for (const char* bad : {"", "1 XB", "1.1B", "-1", "KiB", "99999999999TiB"}) {
    EXPECT_FALSE(ParseBytes(bad).ok()) << bad;
  }
  EXPECT_EQ(FormatBytes(1048576), "1MiB");
  EXPECT_EQ(FormatBytes(1000), "1000");
  EXPECT_TRUE(*ParseBool("YES"));
  EXPECT_FALSE(*ParseBool("off"));
  EXPECT_FALSE(ParseBool("2").ok());
}

}  // namespace
}  // namespace converge
