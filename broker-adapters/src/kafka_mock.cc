#include "converge/broker/kafka_mock.h"

#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <utility>

#include "kafka_config.h"
#include "kafka_errors.h"
#include "rdkafka_handles.h"

// librdkafka 2.0.2's mock cluster accepts its broker connections without TCP_NODELAY, which a
// real Kafka broker sets. With Nagle on, a response written while the previous one is not yet
// acknowledged waits for the client's delayed ACK (40 ms on Linux): under a steady load every
// produce round trip took ~46 ms (50 or 1,000 rows alike) against ~2.4 ms when idle, and the
// relay's latency measured the mock, not Converge. This definition, linked into every process
// that hosts a mock cluster (converge-devkafka, tests, the benchmark), interposes the mock's
// accept() calls (the executable's symbol comes first in the lookup order) and sets
// TCP_NODELAY on each accepted socket. setsockopt fails harmlessly on a non-TCP socket.
extern "C" int accept(int fd, struct sockaddr* addr, socklen_t* len) {
  using AcceptFn = int (*)(int, struct sockaddr*, socklen_t*);
  static const auto real = reinterpret_cast<AcceptFn>(dlsym(RTLD_NEXT, "accept"));
  const int conn = real(fd, addr, len);
  if (conn >= 0) {
    const int one = 1;
    ::setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  return conn;
}

namespace converge::broker {

struct KafkaMockCluster::Impl {
  // Declared first so that it is destroyed last: the mock cluster needs its owning handle.
  internal::KafkaHandle owner;
  internal::KafkaMockClusterHandle mock;
  std::string bootstrap;
  int brokers = 0;
};

namespace {

Status MockStatus(rd_kafka_resp_err_t err, std::string_view what) {
  if (err == RD_KAFKA_RESP_ERR_NO_ERROR) return Status::Ok();
  std::string msg =
      std::string(what) + ": " + rd_kafka_err2name(err) + ": " + rd_kafka_err2str(err);
  switch (err) {
    case RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS:
      return Status::AlreadyExists(std::move(msg));
    case RD_KAFKA_RESP_ERR_BROKER_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR__UNKNOWN_BROKER:
      return Status::NotFound(std::move(msg));
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
    case RD_KAFKA_RESP_ERR_INVALID_PARTITIONS:
    case RD_KAFKA_RESP_ERR_INVALID_REPLICATION_FACTOR:
      return Status::InvalidArgument(std::move(msg));
    default:
      return Status::Internal(std::move(msg));
  }
}

}  // namespace

KafkaMockCluster::KafkaMockCluster(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
KafkaMockCluster::~KafkaMockCluster() = default;

Result<std::unique_ptr<KafkaMockCluster>> KafkaMockCluster::Start(int brokers) {
  if (brokers < 1) return Status::InvalidArgument("brokers must be at least 1");
  // The mock needs a client handle to live in; it gets no bootstrap.servers, and its
  // "no bootstrap.servers configured" notice (level 5) is below the log level set here.
  CONVERGE_ASSIGN_OR_RETURN(
      internal::KafkaConf conf,
      internal::BuildKafkaConf({{"client.id", "converge-kafka-mock"}, {"log_level", "4"}}, {}));
  auto impl = std::make_unique<Impl>();
  CONVERGE_ASSIGN_OR_RETURN(impl->owner, internal::NewKafkaHandle(RD_KAFKA_PRODUCER, conf));
  impl->mock.reset(rd_kafka_mock_cluster_new(impl->owner.get(), brokers));
  if (!impl->mock) return Status::Internal("rd_kafka_mock_cluster_new failed");
  impl->bootstrap = rd_kafka_mock_cluster_bootstraps(impl->mock.get());
  impl->brokers = brokers;
  return std::unique_ptr<KafkaMockCluster>(new KafkaMockCluster(std::move(impl)));
}

const std::string& KafkaMockCluster::bootstrap_servers() const { return impl_->bootstrap; }
int KafkaMockCluster::broker_count() const { return impl_->brokers; }

Status KafkaMockCluster::CreateTopic(const std::string& topic, int partitions,
                                     int replication_factor) {
  if (topic.empty()) return Status::InvalidArgument("topic name is empty");
  if (partitions < 1) return Status::InvalidArgument("partitions must be at least 1");
  if (replication_factor == 0) replication_factor = std::min(3, impl_->brokers);
  if (replication_factor < 1 || replication_factor > impl_->brokers) {
    return Status::InvalidArgument("replication factor must be between 1 and " +
                                   std::to_string(impl_->brokers));
  }
  return MockStatus(
      rd_kafka_mock_topic_create(impl_->mock.get(), topic.c_str(), partitions, replication_factor),
      "create topic " + topic);
}

Status KafkaMockCluster::SetBrokerDown(int32_t broker_id) {
  return MockStatus(rd_kafka_mock_broker_set_down(impl_->mock.get(), broker_id),
                    "broker " + std::to_string(broker_id) + " down");
}

Status KafkaMockCluster::SetBrokerUp(int32_t broker_id) {
  return MockStatus(rd_kafka_mock_broker_set_up(impl_->mock.get(), broker_id),
                    "broker " + std::to_string(broker_id) + " up");
}

Status KafkaMockCluster::SetBrokerRtt(int32_t broker_id, std::chrono::milliseconds rtt) {
  if (rtt.count() < 0 || rtt.count() > INT32_MAX) {
    return Status::InvalidArgument("rtt out of range");
  }
  return MockStatus(
      rd_kafka_mock_broker_set_rtt(impl_->mock.get(), broker_id, static_cast<int>(rtt.count())),
      "broker " + std::to_string(broker_id) + " rtt");
}

Status KafkaMockCluster::PushRequestErrors(int16_t api_key, int count,
                                           std::string_view error_name) {
  if (count < 1) return Status::InvalidArgument("count must be at least 1");
  CONVERGE_ASSIGN_OR_RETURN(rd_kafka_resp_err_t err, internal::ParseKafkaError(error_name));
  std::vector<rd_kafka_resp_err_t> errors(static_cast<size_t>(count), err);
  rd_kafka_mock_push_request_errors_array(impl_->mock.get(), api_key, errors.size(), errors.data());
  return Status::Ok();
}

Status KafkaMockCluster::ClearRequestErrors(int16_t api_key) {
  rd_kafka_mock_clear_request_errors(impl_->mock.get(), api_key);
  return Status::Ok();
}

Status KafkaMockCluster::SetTopicError(const std::string& topic, std::string_view error_name) {
  if (topic.empty()) return Status::InvalidArgument("topic name is empty");
  CONVERGE_ASSIGN_OR_RETURN(rd_kafka_resp_err_t err, internal::ParseKafkaError(error_name));
  rd_kafka_mock_topic_set_error(impl_->mock.get(), topic.c_str(), err);
  return Status::Ok();
}

Status KafkaMockCluster::SetPartitionLeader(const std::string& topic, int32_t partition,
                                            int32_t broker_id) {
  return MockStatus(
      rd_kafka_mock_partition_set_leader(impl_->mock.get(), topic.c_str(), partition, broker_id),
      "set leader of " + topic + "[" + std::to_string(partition) + "]");
}

}  // namespace converge::broker
