// The convergectl framework without a database: option parsing, durations, printers.
#include <gtest/gtest.h>

#include <sstream>

#include "ctl/ctl.h"

namespace converge::ctl {
namespace {

int RunCapture(const std::vector<std::string>& argv, std::string* out, std::string* err) {
  std::ostringstream o, e;
  const int rc = RunMain(argv, o, e);
  *out = o.str();
  *err = e.str();
  return rc;
}

TEST(ConvergectlUnitTest, DurationsAcceptUnitsAndRejectNonsense) {
  EXPECT_EQ(*ParseDurationSeconds("90s"), 90);
  EXPECT_EQ(*ParseDurationSeconds("15m"), 900);
  EXPECT_EQ(*ParseDurationSeconds("1h30m"), 5400);
  EXPECT_EQ(*ParseDurationSeconds("7d"), 7 * 86400);
  EXPECT_EQ(*ParseDurationSeconds("120"), 120);
  for (const char* bad : {"", "5x", "-5m", "1h30", "m", "99999999999999999999d"})
    EXPECT_FALSE(ParseDurationSeconds(bad).ok()) << bad;
}

TEST(ConvergectlUnitTest, UsageErrorsExitTwoAndNameTheProblem) {
  std::string out, err;
  EXPECT_EQ(RunCapture({}, &out, &err), kExitUsage);
  EXPECT_NE(err.find("dlq replay"), std::string::npos) << err;
  EXPECT_EQ(RunCapture({"help"}, &out, &err), kExitOk);
  EXPECT_NE(out.find("keys unpark"), std::string::npos) << out;
  EXPECT_EQ(RunCapture({"dlq"}, &out, &err), kExitUsage);
  EXPECT_NE(err.find("missing command"), std::string::npos) << err;
  EXPECT_EQ(RunCapture({"dlq", "frob"}, &out, &err), kExitUsage);
  EXPECT_NE(err.find("unknown command 'frob'"), std::string::npos) << err;
  EXPECT_EQ(RunCapture({"dlq", "show"}, &out, &err), kExitUsage);
  EXPECT_NE(err.find("missing argument ID"), std::string::npos) << err;
  EXPECT_EQ(RunCapture({"dlq", "show", "1", "2"}, &out, &err), kExitUsage);
  EXPECT_EQ(RunCapture({"keys", "park", "t", "k", "--reason"}, &out, &err), kExitUsage);
  EXPECT_NE(err.find("--reason needs a value"), std::string::npos) << err;
  EXPECT_EQ(RunCapture({"keys", "park", "t", "k", "--reason", "  "}, &out, &err), kExitUsage);
  EXPECT_EQ(RunCapture({"dlq", "list", "--dry-run"}, &out, &err), kExitUsage)
      << "--dry-run belongs to repairs only";
  EXPECT_EQ(RunCapture({"dlq", "list", "--output", "yaml"}, &out, &err), kExitUsage);
  EXPECT_NE(err.find("--output must be table or json"), std::string::npos) << err;
  EXPECT_EQ(RunCapture({"dlq", "list", "--colour"}, &out, &err), kExitUsage);
  EXPECT_NE(err.find("unknown option --colour"), std::string::npos) << err;
  EXPECT_EQ(RunCapture({"dlq", "replay", "--help"}, &out, &err), kExitOk);
  EXPECT_NE(out.find("--dry-run"), std::string::npos) << out;
}

TEST(ConvergectlUnitTest, TableAlignsAndNeutralisesControlCharacters) {
  Table t({"A", "LONGER"}, 8);
  t.AddRow({"x\x1b[31m", "1"});
  t.AddRow({"0123456789", "22"});
  std::ostringstream os;
  t.Print(os);
  EXPECT_EQ(os.str(),
            "A         LONGER\n"
            "x?[31m    1\n"
            "0123456…  22\n");
}

TEST(ConvergectlUnitTest, JsonWriterPayloadAndBase64) {
  JsonWriter j;
  j.BeginObject().Key("a").Int(1).Key("b").BeginArray().String("x\"y").Null().Bool(true);
  j.EndArray().Key("c").Raw("{}").EndObject();
  EXPECT_EQ(j.str(), R"({"a":1,"b":["x\"y",null,true],"c":{}})");
  std::string enc;
  EXPECT_EQ(PayloadForDisplay("{\"a\":\n1}", &enc), "{\"a\":\n1}");
  EXPECT_EQ(enc, "utf-8");
  EXPECT_EQ(PayloadForDisplay(std::string("\x00\xff", 2), &enc), "00ff");
  EXPECT_EQ(enc, "hex");
  EXPECT_EQ(Base64(""), "");
  EXPECT_EQ(Base64("f"), "Zg==");
  EXPECT_EQ(Base64("fo"), "Zm8=");
  EXPECT_EQ(Base64("foo"), "Zm9v");
  EXPECT_EQ(FormatAge(59), "59s");
  EXPECT_EQ(FormatAge(3725), "1h2m");
  EXPECT_EQ(FormatAge(90000), "1d1h");
}

}  // namespace
}  // namespace converge::ctl
