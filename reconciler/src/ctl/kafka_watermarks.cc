#include "kafka_watermarks.h"

#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <memory>

namespace converge::ctl {
namespace {

struct KafkaDeleter {
  void operator()(rd_kafka_t* rk) const { rd_kafka_destroy(rk); }
};
struct ConfDeleter {
  void operator()(rd_kafka_conf_t* c) const { rd_kafka_conf_destroy(c); }
};

void QuietLog(const rd_kafka_t*, int, const char*, const char*) {}

}  // namespace

Result<WatermarkResult> QueryHighWatermarks(const std::string& bootstrap_servers,
                                            const std::vector<TopicPartitionKey>& partitions,
                                            std::chrono::milliseconds timeout) {
  WatermarkResult out;
  if (partitions.empty()) return out;
  std::unique_ptr<rd_kafka_conf_t, ConfDeleter> conf(rd_kafka_conf_new());
  char err[512];
  if (rd_kafka_conf_set(conf.get(), "bootstrap.servers", bootstrap_servers.c_str(), err,
                        sizeof err) != RD_KAFKA_CONF_OK)
    return Status::InvalidArgument(std::string("kafka: ") + err);
  // Connection errors are reported through the query results; keep stderr clean.
  rd_kafka_conf_set_log_cb(conf.get(), QuietLog);
  rd_kafka_t* raw = rd_kafka_new(RD_KAFKA_CONSUMER, conf.get(), err, sizeof err);
  if (raw == nullptr) return Status::Unavailable(std::string("kafka: ") + err);
  conf.release();  // rd_kafka_new took ownership of the conf only because it succeeded
  std::unique_ptr<rd_kafka_t, KafkaDeleter> rk(raw);

  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int answered = 0;
  for (const auto& tp : partitions) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    const int ms = static_cast<int>(std::max<int64_t>(left.count(), 100));
    int64_t lo = 0, hi = 0;
    rd_kafka_resp_err_t e =
        rd_kafka_query_watermark_offsets(rk.get(), tp.first.c_str(), tp.second, &lo, &hi, ms);
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
      out.high[tp] = hi;
      ++answered;
    } else {
      out.errors[tp] = rd_kafka_err2str(e);
      // No broker reachable: do not wait the timeout again for every partition.
      if (answered == 0 &&
          (e == RD_KAFKA_RESP_ERR__TRANSPORT || e == RD_KAFKA_RESP_ERR__TIMED_OUT ||
           e == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN))
        return Status::Unavailable("kafka " + bootstrap_servers + ": " + rd_kafka_err2str(e));
    }
  }
  return out;
}

}  // namespace converge::ctl
