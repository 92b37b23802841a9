#include "kafka_headers.h"

#include <gtest/gtest.h>

#include <map>

namespace converge::broker::internal {
namespace {

using std::chrono::milliseconds;
using std::chrono::system_clock;

TEST(FormatRfc3339MillisTest, UtcWithMilliseconds) {
  EXPECT_EQ(FormatRfc3339Millis(system_clock::time_point(milliseconds(0))),
            "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(FormatRfc3339Millis(system_clock::time_point(milliseconds(1795376729905))),
            "2026-11-22T19:45:29.905Z");
  EXPECT_EQ(FormatRfc3339Millis(system_clock::time_point(milliseconds(-1))),
            "1969-12-31T23:59:59.999Z");
}

TEST(KafkaHeadersForTest, CarriesEveryAttribute) {
  Message m;
  m.id = "0190f0e2-0000-7000-8000-000000000001";
  m.source = "/orders";
  m.type = "com.example.order.placed";
  m.subject = "order-42";
  m.time = system_clock::time_point(milliseconds(1795376729905));
  m.sequence = 7;
  m.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  m.extensions = {{"tenant", "acme"}};
  m.headers = {{"x-origin", "test"}};
  const auto headers = KafkaHeadersFor(m);
  std::map<std::string, std::string> h(headers.begin(), headers.end());
  EXPECT_EQ(h.size(), headers.size()) << "no header name repeats";
  EXPECT_EQ(h["ce_specversion"], "1.0");
  EXPECT_EQ(h["ce_id"], m.id);
  EXPECT_EQ(h["ce_source"], "/orders");
  EXPECT_EQ(h["ce_type"], "com.example.order.placed");
  EXPECT_EQ(h["ce_subject"], "order-42");
  EXPECT_EQ(h["ce_time"], "2026-11-22T19:45:29.905Z");
  EXPECT_EQ(h["ce_keyseq"], "7");
  EXPECT_EQ(h["ce_traceparent"], m.traceparent);
  EXPECT_EQ(h["content-type"], "application/json");
  EXPECT_EQ(h["ce_tenant"], "acme");
  EXPECT_EQ(h["x-origin"], "test");
}

TEST(KafkaHeadersForTest, OmitsUnsetOptionalAttributes) {
  Message m;
  m.id = "id";
  m.source = "/s";
  m.type = "t";
  m.datacontenttype.clear();
  const auto headers = KafkaHeadersFor(m);
  std::map<std::string, std::string> h(headers.begin(), headers.end());
  for (const char* absent : {"ce_subject", "ce_time", "ce_keyseq", "ce_traceparent", "content-type"}) {
    EXPECT_FALSE(h.contains(absent)) << absent;
  }
  EXPECT_EQ(h.size(), 4u);
}

}  // namespace
}  // namespace converge::broker::internal
