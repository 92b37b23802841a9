#include "converge/common/http_server.h"

#include <Poco/Net/HTTPClientSession.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/StreamCopier.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <sstream>
#include <thread>

#include "converge/common/metrics.h"

namespace converge {
namespace {

using ::testing::HasSubstr;

struct Reply {
  int status = 0;
  std::string content_type;
  std::string body;
};

Reply Fetch(uint16_t port, const std::string& path,
            const std::string& method = Poco::Net::HTTPRequest::HTTP_GET) {
  Poco::Net::HTTPClientSession session("127.0.0.1", port);
  session.setTimeout(Poco::Timespan(5, 0));
  Poco::Net::HTTPRequest request(method, path, Poco::Net::HTTPMessage::HTTP_1_1);
  session.sendRequest(request);
  Poco::Net::HTTPResponse response;
  std::istream& in = session.receiveResponse(response);
  Reply r;
  r.status = response.getStatus();
  r.content_type = response.getContentType();
  std::ostringstream body;
  Poco::StreamCopier::copyStream(in, body);
  r.body = body.str();
  return r;
}

class MetricsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto c = registry_.AddCounter("converge_test_total", "A test counter");
    ASSERT_TRUE(c.ok());
    counter_ = *c;
    counter_->Inc(7);
  }

  MetricsServerOptions Options() {
    MetricsServerOptions o;
    o.port = 0;
    o.readiness = [this]() -> Status {
      std::lock_guard lock(mu_);
      return ready_;
    };
    return o;
  }

  void SetReady(Status s) {
    std::lock_guard lock(mu_);
    ready_ = std::move(s);
  }

  metrics::Registry registry_;
  metrics::Counter* counter_ = nullptr;
  std::mutex mu_;
  Status ready_;
};

TEST_F(MetricsServerTest, ServesMetricsHealthAndReadiness) {
  MetricsServer server(registry_, Options());
  ASSERT_TRUE(server.Start().ok());
  const uint16_t port = server.port();
  ASSERT_NE(port, 0);

  Reply m = Fetch(port, "/metrics");
  EXPECT_EQ(m.status, 200);
  EXPECT_EQ(m.content_type, "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(m.body, registry_.Expose());
  EXPECT_THAT(m.body, HasSubstr("converge_test_total 7\n"));

  counter_->Inc();
  EXPECT_THAT(Fetch(port, "/metrics?x=1").body, HasSubstr("converge_test_total 8\n"));

  Reply h = Fetch(port, "/healthz");
  EXPECT_EQ(h.status, 200);
  EXPECT_EQ(h.body, "ok\n");

  Reply ready = Fetch(port, "/readyz");
  EXPECT_EQ(ready.status, 200);
  EXPECT_EQ(ready.body, "ok\n");

  SetReady(Status::Unavailable("database unreachable: postgresql://app:hunter2@db/app"));
  Reply not_ready = Fetch(port, "/readyz");
  EXPECT_EQ(not_ready.status, 503);
  EXPECT_EQ(not_ready.body, "UNAVAILABLE: database unreachable: postgresql://app:***@db/app\n");
  EXPECT_EQ(Fetch(port, "/healthz").status, 200);  // not ready is still alive

  SetReady(Status::Ok());
  EXPECT_EQ(Fetch(port, "/readyz").status, 200);

  Reply missing = Fetch(port, "/nope");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(Fetch(port, "/").status, 404);
  EXPECT_EQ(Fetch(port, "/metrics", Poco::Net::HTTPRequest::HTTP_POST).status, 405);

  Reply head = Fetch(port, "/metrics", Poco::Net::HTTPRequest::HTTP_HEAD);
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.body, "");

  server.Stop();
  EXPECT_THROW(Fetch(port, "/healthz"), Poco::Exception);
  server.Stop();  // idempotent
}

TEST_F(MetricsServerTest, LivenessFollowsTheHeartbeat) {
  ManualClock clock;
  Heartbeat hb(clock, std::chrono::seconds(30));
  MetricsServerOptions o = Options();
  o.liveness = [&hb] { return hb.Check(); };
  MetricsServer server(registry_, o);
  ASSERT_TRUE(server.Start().ok());

  EXPECT_EQ(Fetch(server.port(), "/healthz").status, 200);  // no beat yet: starting up
  hb.Beat();
  clock.Advance(std::chrono::seconds(30));
  EXPECT_EQ(Fetch(server.port(), "/healthz").status, 200);
  clock.Advance(std::chrono::seconds(1));
  Reply dead = Fetch(server.port(), "/healthz");
  EXPECT_EQ(dead.status, 503);
  EXPECT_EQ(dead.body, "UNAVAILABLE: no heartbeat for 31000ms (limit 30000ms)\n");
  hb.Beat();
  EXPECT_EQ(Fetch(server.port(), "/healthz").status, 200);
}

TEST_F(MetricsServerTest, ThrowingProbeIsNotReady) {
  MetricsServerOptions o = Options();
  o.readiness = []() -> Status { throw std::runtime_error("boom"); };
  MetricsServer server(registry_, o);
  ASSERT_TRUE(server.Start().ok());
  Reply r = Fetch(server.port(), "/readyz");
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.body, "INTERNAL: probe threw: boom\n");
}

TEST_F(MetricsServerTest, BindErrors) {
  MetricsServer first(registry_, Options());
  ASSERT_TRUE(first.Start().ok());
  EXPECT_EQ(first.Start().code(), StatusCode::kFailedPrecondition);

  MetricsServerOptions o = Options();
  o.port = first.port();
  MetricsServer second(registry_, o);
  const Status s = second.Start();
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s;
  EXPECT_THAT(s.message(), HasSubstr(std::to_string(first.port())));

  MetricsServerOptions bad = Options();
  bad.host = "192.0.2.1";  // TEST-NET-1: not an address of this host
  MetricsServer third(registry_, bad);
  EXPECT_EQ(third.Start().code(), StatusCode::kUnavailable);
}

TEST_F(MetricsServerTest, StopDrainsARequestInProgress) {
  std::atomic<bool> entered{false};
  std::atomic<bool> release{false};
  MetricsServerOptions o = Options();
  o.readiness = [&]() -> Status {
    entered = true;
    while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return Status::Ok();
  };
  MetricsServer server(registry_, o);
  ASSERT_TRUE(server.Start().ok());
  const uint16_t port = server.port();
  Reply slow;
  std::thread client([&] { slow = Fetch(port, "/readyz"); });
  while (!entered) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::atomic<bool> stopped{false};
  std::thread stopper([&] {
    server.Stop();
    stopped = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(stopped) << "Stop() returned while a request was in progress";
  release = true;
  stopper.join();
  client.join();
  EXPECT_TRUE(stopped);
  EXPECT_EQ(slow.status, 200);
  EXPECT_EQ(slow.body, "ok\n");
}

}  // namespace
}  // namespace converge
