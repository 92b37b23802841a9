#include "converge/common/metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <thread>
#include <vector>

namespace converge::metrics {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(MetricsTest, ExpositionOfASmallRegistryIsExact) {
  Registry r;
  auto published = r.AddCounterFamily("converge_published_total", "Rows published", {"topic"});
  ASSERT_TRUE(published.ok()) << published.status();
  (*(*published)->WithLabels({"orders"}))->Inc(3);
  (*(*published)->WithLabels({"audit"}))->Inc();
  auto inflight = r.AddGauge("converge_inflight", "In-flight publishes");
  ASSERT_TRUE(inflight.ok());
  (*inflight)->Set(2.5);
  auto latency = r.AddHistogram("converge_publish_seconds", "Publish latency", {0.125, 1});
  ASSERT_TRUE(latency.ok());
  (*latency)->Observe(0.0625);
  (*latency)->Observe(0.125);  // le is inclusive
  (*latency)->Observe(0.5);
  (*latency)->Observe(7);
  ASSERT_TRUE(r.AddCallbackGauge("converge_oldest_unpublished_seconds",
                                 "Age of the oldest unpublished row", [] { return 42.0; })
                  .ok());

  EXPECT_EQ(r.Expose(),
            "# HELP converge_inflight In-flight publishes\n"
            "# TYPE converge_inflight gauge\n"
            "converge_inflight 2.5\n"
            "# HELP converge_oldest_unpublished_seconds Age of the oldest unpublished row\n"
            "# TYPE converge_oldest_unpublished_seconds gauge\n"
            "converge_oldest_unpublished_seconds 42\n"
            "# HELP converge_publish_seconds Publish latency\n"
            "# TYPE converge_publish_seconds histogram\n"
            "converge_publish_seconds_bucket{le=\"0.125\"} 2\n"
            "converge_publish_seconds_bucket{le=\"1\"} 3\n"
            "converge_publish_seconds_bucket{le=\"+Inf\"} 4\n"
            "converge_publish_seconds_sum 7.6875\n"
            "converge_publish_seconds_count 4\n"
            "# HELP converge_published_total Rows published\n"
            "# TYPE converge_published_total counter\n"
            "converge_published_total{topic=\"audit\"} 1\n"
            "converge_published_total{topic=\"orders\"} 3\n");
}

TEST(MetricsTest, LabeledHistogramBuckets) {
  Registry r;
  auto fam = r.AddHistogramFamily("lat", "h", {"op"}, {1, 2, 4});
  ASSERT_TRUE(fam.ok());
  Histogram* h = *(*fam)->WithLabels({"claim"});
  for (double v : {0.5, 1.0, 1.5, 3.0, 4.0, 100.0}) h->Observe(v);
  h->Observe(std::nan(""));  // ignored
  const Histogram::Snapshot s = h->Snap();
  EXPECT_EQ(s.cumulative, (std::vector<uint64_t>{2, 3, 5, 6}));
  EXPECT_DOUBLE_EQ(s.sum, 110);
  const std::string text = r.Expose();
  EXPECT_THAT(text, HasSubstr("lat_bucket{op=\"claim\",le=\"1\"} 2\n"
                              "lat_bucket{op=\"claim\",le=\"2\"} 3\n"
                              "lat_bucket{op=\"claim\",le=\"4\"} 5\n"
                              "lat_bucket{op=\"claim\",le=\"+Inf\"} 6\n"
                              "lat_sum{op=\"claim\"} 110\n"
                              "lat_count{op=\"claim\"} 6\n"));
  h->ObserveDuration(std::chrono::milliseconds(1500));
  EXPECT_EQ(h->Snap().cumulative[1], 4u);
}

TEST(MetricsTest, LabelValuesAndHelpAreEscaped) {
  Registry r;
  auto fam = r.AddGaugeFamily("g", "line one\nback\\slash", {"path", "q"});
  ASSERT_TRUE(fam.ok());
  (*(*fam)->WithLabels({"C:\\dir\n", "say \"hi\""}))->Set(1);
  (*(*fam)->WithLabels({"bad\xff", "ok"}))->Set(2);
  EXPECT_EQ(r.Expose(),
            "# HELP g line one\\nback\\\\slash\n"
            "# TYPE g gauge\n"
            "g{path=\"C:\\\\dir\\n\",q=\"say \\\"hi\\\"\"} 1\n"
            "g{path=\"bad\xEF\xBF\xBD\",q=\"ok\"} 2\n");
}

TEST(MetricsTest, ValueFormatting) {
  Registry r;
  Gauge* g = *r.AddGauge("g", "h");
  Counter* c = *r.AddCounter("c_total", "h");
  g->Set(-std::numeric_limits<double>::infinity());
  c->Inc(2);
  c->Add(0.5);
  c->Add(-10);  // ignored: counters never fall
  EXPECT_EQ(r.Expose(),
            "# HELP c_total h\n# TYPE c_total counter\nc_total 2.5\n"
            "# HELP g h\n# TYPE g gauge\ng -Inf\n");
  g->Set(1e21);
  EXPECT_THAT(r.Expose(), HasSubstr("g 1e+21\n"));
  g->Set(std::nan(""));
  EXPECT_THAT(r.Expose(), HasSubstr("g NaN\n"));
}

TEST(MetricsTest, RegistrationRules) {
  Registry r;
  auto a = r.AddCounterFamily("x_total", "h", {"a"});
  ASSERT_TRUE(a.ok());
  auto again = r.AddCounterFamily("x_total", "h", {"a"});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*a, *again);  // identical definition: the same family
  EXPECT_EQ(r.AddCounterFamily("x_total", "other help", {"a"}).status().code(),
            StatusCode::kAlreadyExists);
  EXPECT_EQ(r.AddGauge("x_total", "h").status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(r.AddCounter("bad-name", "h").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.AddCounterFamily("y", "h", {"__x"}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.AddCounterFamily("y", "h", {"a", "a"}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.AddHistogramFamily("h", "h", {"le"}, {1}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(r.AddHistogram("h", "h", {2, 1}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.AddHistogram("h", "h", {1, INFINITY}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*a)->WithLabels({"1", "2"}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*a)->WithLabels({"v"}).value(), (*a)->WithLabels({"v"}).value());
}

TEST(MetricsTest, CallbacksAreEvaluatedAtScrapeAndRemovable) {
  Registry r;
  double age = 1;
  ASSERT_TRUE(r.AddCallbackGauge("age_seconds", "h", [&] { return age; }).ok());
  ASSERT_TRUE(r.AddCallback("lag", "h", MetricType::kGauge, {"partition"}, [] {
                 return std::vector<Sample>{{{"1"}, 5}, {{"0"}, 7}, {{"x", "y"}, 9}};
               }).ok());
  EXPECT_THAT(r.Expose(), HasSubstr("age_seconds 1\n"));
  age = 30;
  const std::string text = r.Expose();
  EXPECT_THAT(text, HasSubstr("age_seconds 30\n"));
  EXPECT_THAT(text, HasSubstr("lag{partition=\"0\"} 7\nlag{partition=\"1\"} 5\n"));
  EXPECT_THAT(text, Not(HasSubstr("9")));  // wrong label count skipped
  EXPECT_EQ(r.AddCallbackGauge("age_seconds", "h", [] { return 0.0; }).code(),
            StatusCode::kAlreadyExists);
  ASSERT_TRUE(r.RemoveCallback("age_seconds").ok());
  EXPECT_THAT(r.Expose(), Not(HasSubstr("age_seconds")));
  EXPECT_EQ(r.RemoveCallback("age_seconds").code(), StatusCode::kNotFound);
}

TEST(MetricsTest, ConcurrentUpdatesSumCorrectly) {
  Registry r;
  CounterFamily* fam = *r.AddCounterFamily("ops_total", "h", {"worker"});
  Counter* shared = *r.AddCounter("shared_total", "h");
  Gauge* gauge = *r.AddGauge("level", "h");
  Histogram* hist = *r.AddHistogram("obs", "h", {0.5});
  constexpr int kThreads = 8;
  constexpr int kIters = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Counter* mine = *fam->WithLabels({std::to_string(t % 2)});
      for (int i = 0; i < kIters; ++i) {
        mine->Inc();
        shared->Inc();
        shared->Add(0.5);
        gauge->Inc();
        gauge->Dec(0.5);
        hist->Observe(i % 2 ? 1.0 : 0.25);
      }
    });
  }
  // Scrape concurrently with the writers.
  for (int i = 0; i < 20; ++i) EXPECT_FALSE(r.Expose().empty());
  for (auto& th : threads) th.join();
  EXPECT_DOUBLE_EQ((*fam->WithLabels({"0"}))->Value(), kThreads / 2 * kIters);
  EXPECT_DOUBLE_EQ((*fam->WithLabels({"1"}))->Value(), kThreads / 2 * kIters);
  EXPECT_DOUBLE_EQ(shared->Value(), 1.5 * kThreads * kIters);
  EXPECT_DOUBLE_EQ(gauge->Value(), 0.5 * kThreads * kIters);
  const Histogram::Snapshot s = hist->Snap();
  EXPECT_EQ(s.cumulative, (std::vector<uint64_t>{kThreads * kIters / 2, kThreads * kIters}));
  EXPECT_DOUBLE_EQ(s.sum, kThreads * (kIters / 2) * 1.25);
}

TEST(MetricsTest, TooManyChildrenIsRefused) {
  Registry r;
  CounterFamily* fam = *r.AddCounterFamily("c_total", "h", {"id"});
  for (size_t i = 0; i < CounterFamily::kMaxChildren; ++i) {
    ASSERT_TRUE(fam->WithLabels({std::to_string(i)}).ok());
  }
  EXPECT_EQ(fam->WithLabels({"one more"}).status().code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(fam->WithLabels({"0"}).ok());  // existing children are still found
}

TEST(MetricsTest, BucketHelpers) {
  EXPECT_EQ(ExponentialBuckets(1, 2, 4), (std::vector<double>{1, 2, 4, 8}));
  EXPECT_EQ(LinearBuckets(0.5, 0.5, 3), (std::vector<double>{0.5, 1, 1.5}));
  Registry r;
  EXPECT_TRUE(r.AddHistogram("d", "h", DefaultLatencyBuckets()).ok());
}

}  // namespace
}  // namespace converge::metrics
