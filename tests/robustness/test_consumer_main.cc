// converge-test-consumer: the robustness suite's consumer as a real process, so that scenarios
// can kill -9 it, stop it at a failpoint (CONVERGE_FAILPOINTS=consumer.after_commit=kill@N) or
// take its database away. It runs converge::consumer::Consumer on a Kafka consumer group and
// applies every "robust.effect" message by inserting one row into robust.effects (created by
// the harness, see harness.h). A payload with a "poison" member fails for good
// (kFailedPrecondition), so the runtime dead-letters it.
//
//   converge-test-consumer --db URL --brokers HOST:PORT --topic T --group G [--member NAME]
//                          [--session-timeout-ms N]
//                          [--source kafka|mqtt --mqtt-url URL --mqtt-client-id ID]
//
// --source mqtt consumes the MQTT filter "<T>/+" (the relay publishes with
// mqtt.topic_template={topic}/{key}) through broker::MakeMqttSource with a persistent session
// keyed by --mqtt-client-id (stable across restarts, so the broker redelivers what a killed
// consumer never acknowledged); --brokers is then ignored.
//
// SIGTERM/SIGINT: Stop() (finishes the current transaction), print the stats, exit 0. Bad flags
// exit 2 naming the flag.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <thread>

#include "converge/broker/kafka.h"
#include "converge/broker/mqtt.h"
#include "converge/consumer/consumer.h"

namespace {

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop.store(true); }

// The outbox key: the message's subject; over MQTT also the last level of the PUBLISH topic
// ("<topic>/<key>") should the envelope not carry it.
std::string Key(const converge::Message& m) {
  if (!m.subject.empty()) return m.subject;
  const auto slash = m.topic.rfind('/');
  return slash == std::string::npos ? m.topic : m.topic.substr(slash + 1);
}

int Usage(const std::string& why) {
  std::fprintf(stderr,
               "converge-test-consumer: %s\nusage: converge-test-consumer --db URL --brokers "
               "HOST:PORT --topic T --group G [--member NAME] [--session-timeout-ms N] "
               "[--source kafka|mqtt --mqtt-url URL --mqtt-client-id ID]\n",
               why.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace converge;
  using std::chrono::milliseconds;
  std::map<std::string, std::string> flags = {
      {"--member", "consumer"}, {"--session-timeout-ms", "3000"}, {"--source", "kafka"}};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a != "--db" && a != "--brokers" && a != "--topic" && a != "--group" && a != "--member" &&
        a != "--session-timeout-ms" && a != "--source" && a != "--mqtt-url" &&
        a != "--mqtt-client-id")
      return Usage("unknown flag " + a);
    if (i + 1 >= argc) return Usage(a + " needs a value");
    flags[a] = argv[++i];
  }
  for (const char* required : {"--db", "--brokers", "--topic", "--group"})
    if (flags[required].empty()) return Usage(std::string(required) + " is required");
  int session_ms = 0;
  try {
    session_ms = std::stoi(flags["--session-timeout-ms"]);
  } catch (const std::exception&) {
    return Usage("--session-timeout-ms must be a number of milliseconds");
  }

  ::signal(SIGTERM, OnSignal);
  ::signal(SIGINT, OnSignal);

  const bool mqtt = flags["--source"] == "mqtt";
  if (!mqtt && flags["--source"] != "kafka") return Usage("--source must be kafka or mqtt");
  if (mqtt && (flags["--mqtt-url"].empty() || flags["--mqtt-client-id"].empty()))
    return Usage("--source mqtt needs --mqtt-url and --mqtt-client-id");
  Result<std::unique_ptr<broker::MessageSource>> source = Status::Internal("no source");
  if (mqtt) {
    broker::MqttOptions mo;
    mo.url = flags["--mqtt-url"];
    mo.client_id = flags["--mqtt-client-id"];
    mo.reconnect_min = std::chrono::seconds(1);
    mo.reconnect_max = std::chrono::seconds(1);
    source = broker::MakeMqttSource(mo);
  } else {
    broker::KafkaSourceOptions so;
    so.bootstrap_servers = flags["--brokers"];
    so.group_id = flags["--group"];
    so.client_id = "converge-test-consumer";
    so.session_timeout = milliseconds(session_ms);
    so.properties["heartbeat.interval.ms"] = std::to_string(std::max(100, session_ms / 6));
    source = broker::MakeKafkaSource(so);
  }
  if (!source.ok()) {
    std::fprintf(stderr, "converge-test-consumer: %s\n", source.status().ToString().c_str());
    return 2;
  }

  consumer::ConsumerOptions co;
  co.group = flags["--group"];
  co.topics = {mqtt ? flags["--topic"] + "/+" : flags["--topic"]};
  co.database_url = flags["--db"];
  // Unique per incarnation: a restarted consumer is a new member (fencing is by owner+epoch).
  co.member_id = flags["--member"] + ":" + std::to_string(::getpid());
  co.poll_timeout = milliseconds(100);
  co.retry_backoff = {milliseconds(10), milliseconds(200), 2.0, 0.5};
  co.reconnect_backoff = {milliseconds(50), milliseconds(1000), 2.0, 0.5};
  co.transaction_idle_timeout = milliseconds(10000);
  const std::string member = co.member_id;
  const std::string group = co.group;
  consumer::Consumer c(co, std::move(source).value());
  if (mqtt) c.SetDecoder(broker::DecodeMqttRecord);
  c.Handle("robust.effect", [&](const Message& m, consumer::Context& ctx) {
    if (m.payload.find("\"poison\"") != std::string::npos)
      return Status::FailedPrecondition("poison message (robustness test)");
    ctx.tx().exec_params(
        "INSERT INTO robust.effects (consumer_group, message_id, key, seq, member) "
        "VALUES ($1, $2::uuid, $3, $4, $5)",
        group, m.id, Key(m), m.sequence, member);
    return Status::Ok();
  });
  Status st = c.Start();
  if (!st.ok()) {
    std::fprintf(stderr, "converge-test-consumer: start failed: %s\n", st.ToString().c_str());
    return 1;
  }
  std::fprintf(stderr, "converge-test-consumer: %s started\n", member.c_str());
  while (!g_stop.load()) std::this_thread::sleep_for(milliseconds(50));
  c.Stop();
  const auto s = c.stats();
  std::fprintf(stderr,
               "converge-test-consumer: %s stopped consumed=%llu applied=%llu "
               "duplicates_skipped=%llu dead_letters=%llu transaction_failures=%llu fenced=%llu\n",
               member.c_str(), static_cast<unsigned long long>(s.consumed),
               static_cast<unsigned long long>(s.applied),
               static_cast<unsigned long long>(s.duplicates_skipped),
               static_cast<unsigned long long>(s.dead_letters),
               static_cast<unsigned long long>(s.transaction_failures),
               static_cast<unsigned long long>(s.fenced));
  return 0;
}
