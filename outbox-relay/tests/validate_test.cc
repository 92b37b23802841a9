#include <gtest/gtest.h>

#include "converge/outbox/outbox.h"

namespace converge::outbox {
namespace {

OutboxMessage Good() {
  return {.topic = "orders", .key = "o-1", .type = "order.placed", .payload = "{}"};
}

TEST(ValidateTest, AcceptsAGoodMessage) { EXPECT_TRUE(Validate(Good()).ok()); }

TEST(ValidateTest, NamesTheBadField) {
  struct Case {
    std::function<void(OutboxMessage&)> mutate;
    const char* expect;
  } cases[] = {
      {[](auto& m) { m.topic = ""; }, "topic must not be empty"},
      {[](auto& m) { m.topic = std::string(250, 'a'); }, "limit is 249"},
      {[](auto& m) { m.topic = "a#b"; }, "may only contain"},
      {[](auto& m) { m.key = ""; }, "key must not be empty"},
      {[](auto& m) { m.key = std::string(1025, 'k'); }, "key is 1025 bytes"},
      {[](auto& m) { m.type = ""; }, "type must not be empty"},
      {[](auto& m) { m.payload = std::string(1000001, 'x'); }, "limit is 1000000"},
      {[](auto& m) { m.traceparent = "nope"; }, "traceparent"},
      {[](auto& m) { m.headers["ce_id"] = "x"; }, "reserved"},
      {[](auto& m) { m.headers["a b"] = "x"; }, "header name \"a b\""},
      {[](auto& m) { m.headers["h"] = std::string(1025, 'v'); }, "longer than 1024"},
      {[](auto& m) {
         for (int i = 0; i < 65; ++i) m.headers["h" + std::to_string(i)] = "v";
       },
       "more than 64 headers"},
      {[](auto& m) { m.message_id = "not-a-uuid"; }, "is not a UUID"},
      {[](auto& m) { m.content_type = ""; }, "content_type"},
      // The envelope's rules, checked at enqueue so a row can always be published.
      {[](auto& m) { m.headers["x-note"] = "line\nbreak"; }, "x-note"},
      {[](auto& m) { m.headers["tenant"] = "acme"; }, "tenant"},
      {[](auto& m) { m.source = "not a uri"; }, "source"},
      {[](auto& m) { m.content_type = "json"; }, "datacontenttype"},
      {[](auto& m) { m.key = "bad\xff"; }, "subject"},
  };
  for (const auto& c : cases) {
    OutboxMessage m = Good();
    c.mutate(m);
    Status st = Validate(m);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << c.expect;
    EXPECT_NE(st.message().find(c.expect), std::string::npos) << st;
  }
}

}  // namespace
}  // namespace converge::outbox
