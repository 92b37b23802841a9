// converge-relay: the outbox relay sidecar. See outbox-relay/README.md and
// docs/configuration.md (generated from the schema below by `converge-relay --help-markdown`).
#include <signal.h>

#include <cstdio>
#include <iostream>
#include <thread>

#include "converge/broker/kafka.h"
#include "converge/broker/mqtt.h"
#include "converge/common/config.h"
#include "converge/common/http_server.h"
#include "converge/common/log.h"
#include "converge/common/metrics.h"
#include "converge/outbox/relay.h"

namespace converge {
namespace {

using std::chrono::milliseconds;

// Every configuration key of converge-relay, declared once (name, default, help, env var).
struct Keys {
  explicit Keys(ConfigSchema& s)
      : db_url(
            s.String("database.url", "", "PostgreSQL URL of the database with the converge schema")
                .Env("CONVERGE_PG_URL")
                .Secret()
                .Required()),
        target(s.Enum("relay.target", "kafka", {"kafka", "mqtt", "both"},
                      "Broker(s) the outbox is published to; both: mqtt.topics to MQTT, the rest "
                      "to Kafka, each target with its own thread, breaker and backoff")),
        bootstrap((s.PassThrough("kafka.",
                                 "Any librdkafka producer property (TLS: kafka.security.protocol, "
                                 "kafka.ssl.ca.location ...; SASL: kafka.sasl.mechanisms, "
                                 "kafka.sasl.username, kafka.sasl.password ...), verbatim"),
                   s.String("kafka.bootstrap.servers", "",
                            "Kafka bootstrap servers (host:port,...); required for relay.target "
                            "kafka and both")
                       .Env("CONVERGE_KAFKA_BROKERS"))),
        message_timeout_ms(
            s.Int("kafka.message.timeout.ms", 10000,
                  "librdkafka delivery timeout; a row not confirmed within it is retried")
                .Range(1000, 3600000)),
        mqtt_url(s.String("mqtt.url", "",
                          "MQTT broker (tcp://host:port or ssl://host:port); required for "
                          "relay.target mqtt and both")),
        mqtt_client_id(
            s.String("mqtt.client_id", "", "MQTT client id (default converge-relay-<random>)")),
        mqtt_username(s.String("mqtt.username", "", "MQTT user name")),
        mqtt_password(s.String("mqtt.password", "", "MQTT password").Secret()),
        mqtt_ca_file(
            s.String("mqtt.tls.ca_file", "", "PEM CA file that signed the broker's certificate")),
        mqtt_cert_file(s.String("mqtt.tls.cert_file", "", "PEM client certificate (mutual TLS)")),
        mqtt_key_file(s.String("mqtt.tls.key_file", "", "PEM client private key")),
        mqtt_key_password(
            s.String("mqtt.tls.key_password", "", "Password of the client key").Secret()),
        mqtt_verify(s.Bool("mqtt.tls.verify_hostname", true,
                           "Check the broker's host name against its certificate")),
        mqtt_qos(s.Int("mqtt.qos", 1, "QoS of the PUBLISHes (1 or 2)").Range(1, 2)),
        mqtt_topics(
            s.String("mqtt.topics", "",
                     "relay.target=both: outbox topic filters routed to MQTT, comma-"
                     "separated, MQTT syntax ('devices/#', 'cmd/+'); the rest goes to Kafka")),
        mqtt_template(s.String("mqtt.topic_template", "{topic}",
                               "MQTT topic of a row: {topic} = outbox topic, {key} = key")),
        mqtt_keep_alive(s.Duration("mqtt.keep_alive", milliseconds(30000), "MQTT keepalive")),
        mqtt_connect_timeout(s.Duration("mqtt.connect_timeout", milliseconds(5000),
                                        "Longest wait for the MQTT CONNACK")),
        mqtt_max_inflight(s.Int("mqtt.max_inflight", 16,
                                "PUBLISHes awaiting their PUBACK at once (below the broker's "
                                "receive maximum)")
                              .Range(1, 65535)),
        instance_id(
            s.String("relay.instance_id", "",
                     "Name of this relay in converge.relay_instances (default host:pid:id)")),
        batch_size(s.Int("relay.batch_size", 1000, "Rows claimed per batch").Range(1, 100000)),
        kafka_producers(s.Int("relay.kafka_producers", 1,
                              "Kafka producers, i.e. batches at the broker at once (their keys "
                              "are disjoint); 2 lets the next batch go out while the last one "
                              "waits for its acks (lower latency at moderate rates for a single "
                              "relay; with several relays it lowered throughput)")
                            .Range(1, 8)),
        poll_interval(s.Duration("relay.poll_interval", milliseconds(500),
                                 "Poll period when no NOTIFY arrives")),
        publish_timeout(
            s.Duration("relay.publish_timeout", milliseconds(15000),
                       "Longest wait for the broker per batch (> kafka.message.timeout.ms)")),
        lease_ttl(s.Duration("relay.lease_ttl", milliseconds(40000),
                             "Slot lease length; a dead relay's slots move after it")),
        lease_renew(s.Duration("relay.lease_renew_interval", milliseconds(5000),
                               "How often leases are renewed and rebalanced")),
        takeover_grace(s.Duration("relay.takeover_grace", milliseconds(1000),
                                  "Extra wait before taking over an expired slot")),
        strict_order(s.Bool("relay.strict_key_order", true,
                            "One in-flight row per key (false: trust the producer's ordering)")),
        retry_initial(s.Duration("relay.retry.initial", milliseconds(200),
                                 "First retry delay of a failed row (per key, with jitter)")),
        retry_max(s.Duration("relay.retry.max", milliseconds(60000), "Longest retry delay")),
        max_attempts(s.Int("relay.max_attempts", 0,
                           "Retriable failures before a row is dead-lettered (0 = never)")
                         .Range(0, 1000000)),
        breaker_failures(s.Int("relay.breaker.failures", 3,
                               "Failed batches in a row that open the circuit breaker")
                             .Range(1, 1000)),
        breaker_initial(s.Duration("relay.breaker.initial", milliseconds(1000),
                                   "First probe delay while the breaker is open")),
        breaker_max(s.Duration("relay.breaker.max", milliseconds(30000), "Longest probe delay")),
        rate_limit(s.Int("relay.rate_limit", 0, "Publish rate limit in messages/s (0 = none)")
                       .Range(0, 100000000)),
        metrics_host(
            s.String("metrics.host", "127.0.0.1", "Interface for /metrics, /healthz, /readyz")),
        metrics_port(s.Int("metrics.port", 9464, "Port for /metrics (0 = ephemeral, -1 = off)")
                         .Range(-1, 65535)),
        log_level(
            s.Enum("log.level", "info", {"debug", "info", "warn", "error"}, "Minimum log level")),
        log_format(s.Enum("log.format", "logfmt", {"logfmt", "json"}, "Log line format")) {}

  ConfigKey<std::string> db_url, target, bootstrap;
  ConfigKey<int64_t> message_timeout_ms;
  ConfigKey<std::string> mqtt_url, mqtt_client_id, mqtt_username, mqtt_password, mqtt_ca_file,
      mqtt_cert_file, mqtt_key_file, mqtt_key_password;
  ConfigKey<bool> mqtt_verify;
  ConfigKey<int64_t> mqtt_qos;
  ConfigKey<std::string> mqtt_topics, mqtt_template;
  ConfigKey<milliseconds> mqtt_keep_alive, mqtt_connect_timeout;
  ConfigKey<int64_t> mqtt_max_inflight;
  ConfigKey<std::string> instance_id;
  ConfigKey<int64_t> batch_size, kafka_producers;
  ConfigKey<milliseconds> poll_interval, publish_timeout, lease_ttl, lease_renew, takeover_grace;
  ConfigKey<bool> strict_order;
  ConfigKey<milliseconds> retry_initial, retry_max;
  ConfigKey<int64_t> max_attempts, breaker_failures;
  ConfigKey<milliseconds> breaker_initial, breaker_max;
  ConfigKey<int64_t> rate_limit;
  ConfigKey<std::string> metrics_host;
  ConfigKey<int64_t> metrics_port;
  ConfigKey<std::string> log_level, log_format;
};

class MetricsObserver final : public outbox::RelayObserver {
 public:
  MetricsObserver(metrics::Histogram* batch, metrics::Histogram* latency, Heartbeat* hb)
      : batch_(batch), latency_(latency), hb_(hb) {}
  void OnBatch(size_t rows) override { batch_->Observe(static_cast<double>(rows)); }
  void OnConfirmed(milliseconds d) override { latency_->Observe(d.count() / 1000.0); }
  void OnCycle() override { hb_->Beat(); }

 private:
  metrics::Histogram* batch_;
  metrics::Histogram* latency_;
  Heartbeat* hb_;
};

Status RegisterMetrics(metrics::Registry& reg, const outbox::Relay& relay) {
  const outbox::RelayStats& st = relay.stats();
  auto counter = [&](const char* name, const char* help, const std::atomic<uint64_t>& v) {
    return reg.AddCallback(name, help, metrics::MetricType::kCounter, {}, [&v] {
      return std::vector<metrics::Sample>{{{}, double(v.load())}};
    });
  };
  auto gauge = [&](const char* name, const char* help, const std::atomic<int64_t>& v,
                   double scale = 1.0) {
    return reg.AddCallbackGauge(name, help, [&v, scale] { return double(v.load()) * scale; });
  };
  CONVERGE_RETURN_IF_ERROR(counter("converge_relay_published_total",
                                   "Rows confirmed by the broker and removed from the outbox",
                                   st.published));
  CONVERGE_RETURN_IF_ERROR(counter("converge_relay_failed_total",
                                   "Publish attempts that failed with a retriable error",
                                   st.failed));
  CONVERGE_RETURN_IF_ERROR(counter("converge_relay_retried_total",
                                   "Rows published after at least one failed attempt", st.retried));
  CONVERGE_RETURN_IF_ERROR(counter("converge_relay_dead_lettered_total",
                                   "Rows moved to converge.dead_letters", st.dead_lettered));
  CONVERGE_RETURN_IF_ERROR(counter("converge_relay_fenced_total",
                                   "Rows not removed because the slot lease was lost", st.fenced));
  CONVERGE_RETURN_IF_ERROR(counter("converge_relay_batches_total", "Batches claimed", st.batches));
  CONVERGE_RETURN_IF_ERROR(
      gauge("converge_relay_owned_slots", "Hash slots leased by this relay", st.owned_slots));
  CONVERGE_RETURN_IF_ERROR(gauge("converge_outbox_parked_keys",
                                 "Keys parked after a dead-lettered row", st.parked_keys));
  CONVERGE_RETURN_IF_ERROR(gauge("converge_outbox_oldest_unpublished_seconds",
                                 "Age of the oldest row still in the outbox", st.oldest_age_ms,
                                 0.001));
  CONVERGE_RETURN_IF_ERROR(reg.AddCallback("converge_relay_circuit_open",
                                           "1 while the target's circuit breaker is open",
                                           metrics::MetricType::kGauge, {"target"}, [&relay] {
                                             std::vector<metrics::Sample> out;
                                             for (const auto& [name, open] : relay.TargetBreakers())
                                               out.push_back({{name}, open ? 1.0 : 0.0});
                                             return out;
                                           }));
  return Status::Ok();
}

int Main(int argc, char** argv) {
  // SIGTERM and SIGINT are taken by a dedicated thread, which stops the relay cleanly (below).
  // Blocked first thing, so that one arriving while the configuration is read and the
  // publishers are built waits for that thread instead of killing the process, and every thread
  // started meanwhile inherits the mask. (One that arrives before main() still kills it: a
  // process cannot block signals before it runs.)
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  ConfigSchema schema("converge-relay",
                      "Publishes committed outbox rows to Kafka and/or MQTT, in key order, at "
                      "least once.");
  const Keys k(schema);
  auto inputs = ConfigInputs::FromMain(argc, argv);
  for (const auto& a : inputs.args) {
    if (a == "--help-markdown") {
      std::cout << schema.MarkdownReference();
      return 0;
    }
  }
  auto loaded = schema.Load(inputs);
  if (!loaded.ok()) {
    std::cerr << "converge-relay: invalid configuration: " << loaded.status().message()
              << "\n(see converge-relay --help)\n";
    return 2;
  }
  const Config& cfg = *loaded;
  if (cfg.help_requested()) {
    std::cout << schema.HelpText();
    return 0;
  }
  if (cfg.version_requested()) {
    std::cout << "converge-relay 0.1.0\n";
    return 0;
  }

  outbox::RelayOptions ro;
  ro.database_url = cfg.Get(k.db_url);
  ro.instance_id = cfg.Get(k.instance_id);
  ro.batch_size = static_cast<int>(cfg.Get(k.batch_size));
  ro.poll_interval = cfg.Get(k.poll_interval);
  ro.publish_timeout = cfg.Get(k.publish_timeout);
  ro.broker_delivery_timeout = milliseconds(cfg.Get(k.message_timeout_ms));
  ro.lease_ttl = cfg.Get(k.lease_ttl);
  ro.lease_renew_interval = cfg.Get(k.lease_renew);
  ro.takeover_grace = cfg.Get(k.takeover_grace);
  ro.strict_key_order = cfg.Get(k.strict_order);
  ro.retry.initial = cfg.Get(k.retry_initial);
  ro.retry.max = cfg.Get(k.retry_max);
  ro.breaker_failures = static_cast<int>(cfg.Get(k.breaker_failures));
  ro.breaker_backoff.initial = cfg.Get(k.breaker_initial);
  ro.breaker_backoff.max = cfg.Get(k.breaker_max);
  ro.rate_limit = static_cast<double>(cfg.Get(k.rate_limit));
  ro.max_attempts = static_cast<int>(cfg.Get(k.max_attempts));

  const std::string target = cfg.Get(k.target);
  const bool use_kafka = target != "mqtt", use_mqtt = target != "kafka";
  auto invalid = [](const std::string& why) {
    std::cerr << "converge-relay: invalid configuration: " << why << "\n";
    return 2;
  };

  broker::KafkaOptions ko;
  ko.bootstrap_servers = cfg.Get(k.bootstrap);
  ko.message_timeout = milliseconds(cfg.Get(k.message_timeout_ms));
  ko.properties = cfg.PassThrough("kafka.");
  ko.properties.erase("bootstrap.servers");
  ko.properties.erase("message.timeout.ms");
  if (use_kafka && ko.bootstrap_servers.empty())
    return invalid("kafka.bootstrap.servers must be set for relay.target=" + target);
  if (!use_kafka) ro.broker_delivery_timeout = ro.publish_timeout / 2;

  broker::MqttOptions mo;
  mo.url = cfg.Get(k.mqtt_url);
  mo.client_id = cfg.Get(k.mqtt_client_id);
  mo.username = cfg.Get(k.mqtt_username);
  mo.password = cfg.Get(k.mqtt_password);
  mo.tls.ca_file = cfg.Get(k.mqtt_ca_file);
  mo.tls.cert_file = cfg.Get(k.mqtt_cert_file);
  mo.tls.key_file = cfg.Get(k.mqtt_key_file);
  mo.tls.key_password = cfg.Get(k.mqtt_key_password);
  mo.tls.verify_hostname = cfg.Get(k.mqtt_verify);
  mo.qos = static_cast<int>(cfg.Get(k.mqtt_qos));
  mo.topic_template = cfg.Get(k.mqtt_template);
  mo.keep_alive = std::chrono::ceil<std::chrono::seconds>(cfg.Get(k.mqtt_keep_alive));
  mo.connect_timeout = std::chrono::ceil<std::chrono::seconds>(cfg.Get(k.mqtt_connect_timeout));
  mo.max_inflight = static_cast<int>(cfg.Get(k.mqtt_max_inflight));
  std::vector<std::string> mqtt_topics;
  {
    const std::string list = cfg.Get(k.mqtt_topics);
    size_t start = 0;
    while (start <= list.size()) {
      size_t comma = list.find(',', start);
      if (comma == std::string::npos) comma = list.size();
      std::string f = list.substr(start, comma - start);
      f.erase(0, f.find_first_not_of(' '));
      f.erase(f.find_last_not_of(' ') + 1);
      if (!f.empty()) mqtt_topics.push_back(f);
      start = comma + 1;
    }
  }
  if (target == "both" && mqtt_topics.empty())
    return invalid("mqtt.topics must name the outbox topics for MQTT when relay.target=both");
  if (target != "both" && !mqtt_topics.empty())
    return invalid("mqtt.topics is only used with relay.target=both");
  for (const auto& f : mqtt_topics)
    if (auto re = outbox::TopicFilterRegex(f); !re.ok())
      return invalid("mqtt.topics: " + re.status().message());

  Status valid = ro.Validate();
  if (valid.ok() && use_kafka) valid = ko.Validate();
  if (valid.ok() && use_mqtt) valid = mo.Validate();
  if (!valid.ok()) return invalid(valid.message());
  std::vector<outbox::RelayTarget> targets;
  if (use_mqtt) {
    // MQTT first: its filters decide; Kafka (if any) takes every other topic.
    auto mp = broker::MakeMqttPublisher(mo);
    if (!mp.ok()) return invalid(mp.status().message());
    targets.push_back({std::move(mp).value(), mqtt_topics, {}});
  }
  if (use_kafka) {
    auto publisher = broker::MakeKafkaPublisher(ko);
    if (!publisher.ok()) return invalid(publisher.status().message());
    outbox::RelayTarget kafka{std::move(publisher).value(), {}, {}};
    for (int64_t i = 1; i < cfg.Get(k.kafka_producers); ++i) {
      auto more = broker::MakeKafkaPublisher(ko);
      if (!more.ok()) return invalid(more.status().message());
      kafka.more_publishers.push_back(std::move(more).value());
    }
    targets.push_back(std::move(kafka));
  }
  if (cfg.check_config_requested()) {
    std::cout << cfg.DumpEffective() << "configuration OK\n";
    return 0;
  }

  LogOptions lo;
  lo.min_level = *ParseLevel(cfg.Get(k.log_level));
  lo.format = *ParseLogFormat(cfg.Get(k.log_format));
  ConfigureLogging(lo);

  metrics::Registry registry;
  auto* batch_hist = *registry.AddHistogram("converge_relay_batch_size", "Rows per claimed batch",
                                            metrics::ExponentialBuckets(1, 4, 8));
  auto* latency_hist =
      *registry.AddHistogram("converge_relay_commit_to_confirm_seconds",
                             "Time from the outbox insert to the broker's confirmation",
                             // Fine below 128 ms, where latency objectives live (20 ms is a
                             // bound, so "p99 under 20 ms" can be read off exactly), then
                             // doubling up to 32 s.
                             {0.001, 0.002, 0.003, 0.004, 0.006, 0.008, 0.010,  0.012, 0.016,
                              0.020, 0.025, 0.032, 0.040, 0.050, 0.064, 0.080,  0.100, 0.128,
                              0.256, 0.512, 1.024, 2.048, 4.096, 8.192, 16.384, 32.768});
  Heartbeat heartbeat(SystemClock::Instance(), std::chrono::seconds(60) + ro.publish_timeout);
  MetricsObserver observer(batch_hist, latency_hist, &heartbeat);
  outbox::Relay relay(ro, std::move(targets), &observer);
  if (Status st = RegisterMetrics(registry, relay); !st.ok()) {
    std::cerr << "converge-relay: " << st << "\n";
    return 1;
  }
  std::unique_ptr<MetricsServer> server;
  if (cfg.Get(k.metrics_port) >= 0) {
    MetricsServerOptions mo;
    mo.host = cfg.Get(k.metrics_host);
    mo.port = static_cast<uint16_t>(cfg.Get(k.metrics_port));
    mo.liveness = [&heartbeat] { return heartbeat.Check(); };
    mo.readiness = [&relay]() -> Status {
      if (relay.stats().ready.load() == 0)
        return Status::Unavailable("not connected to PostgreSQL or holding no slot");
      if (relay.stats().breaker_open.load() != 0)
        return Status::Unavailable("broker unreachable (circuit breaker open)");
      return Status::Ok();
    };
    server = std::make_unique<MetricsServer>(registry, mo);
    if (Status st = server->Start(); !st.ok()) {
      std::cerr << "converge-relay: metrics endpoint: " << st << "\n";
      return 1;
    }
    Log(Level::kInfo, "metrics endpoint listening",
        {{"address", mo.host + ":" + std::to_string(server->port())}});
  }

  std::thread signals([&] {
    int sig = 0;
    sigwait(&set, &sig);
    Log(Level::kInfo, "signal received; draining", {{"signal", sig}});
    relay.Stop();
  });
  Status st = relay.Run();
  if (server) server->Stop();
  // Wake the signal thread if Run() returned on its own.
  pthread_kill(signals.native_handle(), SIGTERM);
  signals.join();
  if (!st.ok()) {
    Log(Level::kError, "relay stopped", {{"error", st.ToString()}});
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace converge

int main(int argc, char** argv) { return converge::Main(argc, argv); }
