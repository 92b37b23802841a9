#include "kafka_test_support.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <random>

namespace converge::broker::testing {

const std::string& SharedBootstrap() {
  // Lives until the process exits: every test of this binary may use it.
  static std::unique_ptr<KafkaMockCluster> mock;
  static const std::string bootstrap = [] {
    if (const char* env = std::getenv("CONVERGE_KAFKA_BROKERS"); env != nullptr && *env != 0) {
      return std::string(env);
    }
    auto started = KafkaMockCluster::Start(3);
    if (!started.ok()) {
      ADD_FAILURE() << "cannot start the in-process mock cluster: " << started.status();
      return std::string("127.0.0.1:1");
    }
    mock = std::move(started).value();
    return mock->bootstrap_servers();
  }();
  return bootstrap;
}

std::string UniqueName(std::string_view prefix) {
  static std::mt19937_64 rng(std::random_device{}());
  return std::string(prefix) + "-" + std::to_string(rng() % 1000000000000ULL);
}

Message MakeMessage(const std::string& topic, const std::string& subject, int64_t sequence,
                    std::string payload) {
  static std::atomic<uint64_t> counter{0};
  Message m;
  m.id = "00000000-0000-7000-8000-" + std::to_string(100000000000ULL + counter++);
  m.source = "/converge/tests";
  m.type = "com.example.test";
  m.subject = subject;
  m.time = std::chrono::system_clock::now();
  m.sequence = sequence;
  m.topic = topic;
  m.payload = payload.empty()
                  ? "{\"subject\":\"" + subject + "\",\"seq\":" + std::to_string(sequence) + "}"
                  : std::move(payload);
  return m;
}

std::vector<const Message*> Pointers(const std::vector<Message>& messages) {
  std::vector<const Message*> out;
  for (const Message& m : messages) out.push_back(&m);
  return out;
}

KafkaOptions TestPublisherOptions(const std::string& bootstrap) {
  KafkaOptions o;
  o.bootstrap_servers = bootstrap;
  o.message_timeout = std::chrono::milliseconds(10000);
  return o;
}

std::string HeaderValue(const ReceivedRecord& r, std::string_view name) {
  for (const auto& [k, v] : r.headers) {
    if (k == name) return v;
  }
  return "";
}

}  // namespace converge::broker::testing
