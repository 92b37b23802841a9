// converge-shop: the example shop's services and tools (see examples/README.md).
//
//   converge-shop setup     [--skus N] [--stock N] [--shipping 1]   schema, stock, flow type
//   converge-shop place     [--orders N] [--rate R] [--decline-percent P] [--seed S]
//   converge-shop services  [--metrics-port P] [--metrics-host H] [--devices N]
//                           [--fetch-wait-ms MS]              inventory, payments, orchestrator
//                                                             (+ shipping over MQTT to N devices)
//   converge-shop duplicate [--count N]                       re-publish N stock commands to Kafka
//   converge-shop report    [--wait SECONDS]                  the end state, checked
//   converge-shop mark      NAME                              record the database time as NAME
//                                                             (disruption_start/_end split the
//                                                             report's latency)
//
// The database comes from $CONVERGE_PG_URL, Kafka from $CONVERGE_KAFKA_BROKERS and MQTT from
// $CONVERGE_MQTT_URL, as
// scripts/services.sh exports them. Exit codes: 0 ok, 1 failed (or report inconsistent),
// 2 usage.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <pqxx/pqxx>

#include "converge/broker/kafka.h"
#include "converge/broker/kafka_admin.h"
#include "converge/broker/mqtt.h"
#include "converge/common/http_server.h"
#include "converge/common/metrics.h"
#include "converge/consumer/consumer.h"
#include "converge/pubsub/devices.h"
#include "shop.h"

namespace {

using converge::Status;

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }

struct Args {
  std::map<std::string, std::string> flags;
  std::string error;
  long Int(const std::string& name, long def) {
    auto it = flags.find(name);
    if (it == flags.end()) return def;
    char* end = nullptr;
    long v = std::strtol(it->second.c_str(), &end, 10);
    if (end == it->second.c_str() || *end != '\0' || v < 0) {
      error = "--" + name + " must be a non-negative integer, got \"" + it->second + "\"";
      return def;
    }
    return v;
  }
};

Args Parse(const std::vector<std::string>& argv, const std::vector<std::string>& known) {
  Args a;
  for (size_t i = 0; i < argv.size(); ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) {
      a.error = "unexpected argument \"" + arg + "\"";
      return a;
    }
    arg = arg.substr(2);
    std::string value;
    if (auto eq = arg.find('='); eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg.resize(eq);
    } else if (i + 1 < argv.size()) {
      value = argv[++i];
    } else {
      a.error = "--" + arg + " needs a value";
      return a;
    }
    if (std::find(known.begin(), known.end(), arg) == known.end()) {
      a.error = "unknown option --" + arg;
      return a;
    }
    a.flags[arg] = value;
  }
  return a;
}

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

std::unique_ptr<converge::consumer::Consumer> MakeConsumer(const std::string& db,
                                                           const std::string& brokers,
                                                           const std::string& group,
                                                           const std::string& topic,
                                                           long fetch_wait_ms) {
  converge::broker::KafkaSourceOptions so{
      .bootstrap_servers = brokers, .group_id = group, .client_id = "shop-" + group};
  // librdkafka's mock cluster (converge-devkafka) answers a Fetch only when fetch.wait.max.ms
  // runs out, even when records are there; a real broker answers at once. The demo passes 10.
  if (fetch_wait_ms > 0) so.properties["fetch.wait.max.ms"] = std::to_string(fetch_wait_ms);
  auto source = converge::broker::MakeKafkaSource(so);
  if (!source.ok()) {
    std::cerr << "converge-shop: kafka source for " << group << ": " << source.status() << "\n";
    return nullptr;
  }
  converge::consumer::ConsumerOptions o;
  o.group = group;
  o.topics = {topic};
  o.database_url = db;
  return std::make_unique<converge::consumer::Consumer>(std::move(o), std::move(source).value());
}

int Services(Args& a, const std::string& db, const std::string& brokers) {
  const long port = a.Int("metrics-port", 9466);
  const long devices = a.Int("devices", 0);
  const long fetch_wait_ms = a.Int("fetch-wait-ms", 0);
  if (!a.error.empty()) return std::cerr << "converge-shop services: " << a.error << "\n", 2;
  if (fetch_wait_ms < 0 || fetch_wait_ms > 300000)
    return std::cerr << "converge-shop services: --fetch-wait-ms must be in [0, 300000]\n", 2;
  struct Svc {
    const char* name;
    const char* topic;
    void (*reg)(converge::consumer::Consumer&);
  };
  const Svc svcs[] = {{"inventory", shop::kStockTopic, shop::RegisterInventory},
                      {"payments", shop::kPaymentsTopic, shop::RegisterPayments},
                      {"orchestrator", shop::kRepliesTopic, shop::RegisterOrchestrator}};
  converge::metrics::Registry registry;
  std::vector<std::pair<std::string, std::unique_ptr<converge::consumer::Consumer>>> consumers;
  for (const Svc& s : svcs) {
    auto c = MakeConsumer(db, brokers, std::string("shop-") + s.name, s.topic, fetch_wait_ms);
    if (!c) return 1;
    s.reg(*c);
    if (Status st = c->RegisterMetrics(registry); !st.ok())
      return std::cerr << "converge-shop: metrics: " << st << "\n", 1;
    consumers.emplace_back(s.name, std::move(c));
  }
  if (devices > 0) {
    auto c = MakeConsumer(db, brokers, "shop-shipping", shop::kShippingTopic, fetch_wait_ms);
    if (!c) return 1;
    shop::RegisterShipping(*c, "truck-", static_cast<int>(devices));
    if (Status st = c->RegisterMetrics(registry); !st.ok())
      return std::cerr << "converge-shop: metrics: " << st << "\n", 1;
    consumers.emplace_back("shipping", std::move(c));
    const std::string mqtt = Env("CONVERGE_MQTT_URL");
    if (mqtt.empty()) return std::cerr << "converge-shop: --devices needs CONVERGE_MQTT_URL\n", 2;
    converge::broker::MqttOptions mo;
    mo.url = mqtt;
    mo.client_id = "shop-device-ingest";
    auto source = converge::broker::MakeMqttSource(mo);
    if (!source.ok()) return std::cerr << "converge-shop: mqtt: " << source.status() << "\n", 1;
    converge::consumer::ConsumerOptions o;
    o.group = "shop-devices";
    o.topics = converge::pubsub::IngestTopicFilters();
    o.database_url = db;
    auto ingest =
        std::make_unique<converge::consumer::Consumer>(std::move(o), std::move(source).value());
    ingest->SetDecoder(converge::broker::DecodeMqttRecord);
    shop::RegisterDeviceIngest(*ingest);
    if (Status st = ingest->RegisterMetrics(registry); !st.ok())
      return std::cerr << "converge-shop: metrics: " << st << "\n", 1;
    consumers.emplace_back("device-ingest", std::move(ingest));
  }
  std::unique_ptr<converge::MetricsServer> server;
  std::string metrics_address;
  if (port > 0) {
    converge::MetricsServerOptions mo;
    mo.port = static_cast<uint16_t>(port);
    if (auto h = a.flags.find("metrics-host"); h != a.flags.end()) mo.host = h->second;
    server = std::make_unique<converge::MetricsServer>(registry, mo);
    if (Status st = server->Start(); !st.ok())
      return std::cerr << "converge-shop: metrics: " << st << "\n", 1;
    metrics_address = mo.host + ":" + std::to_string(port);
  }
  for (auto& [name, c] : consumers) {
    if (Status st = c->Start(); !st.ok())
      return std::cerr << "converge-shop: " << name << ": " << st << "\n", 1;
  }
  std::cout << "shop services running (inventory, payments, orchestrator"
            << (devices > 0 ? ", shipping" : "") << "); metrics on "
            << (server ? metrics_address + "/metrics" : std::string("(off)")) << "\n"
            << std::flush;
  auto save_stats = [&] {
    try {
      pqxx::connection conn(db);
      pqxx::work tx(conn);
      for (auto& [name, c] : consumers) {
        const auto st = c->stats();
        tx.exec_params0(
            "INSERT INTO shop.service_stats (service, applied, duplicates_skipped, dead_letters) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (service) DO UPDATE SET applied = $2, "
            "duplicates_skipped = $3, dead_letters = $4, updated_at = now()",
            name, static_cast<long long>(st.applied), static_cast<long long>(st.duplicates_skipped),
            static_cast<long long>(st.dead_letters));
      }
      tx.commit();
    } catch (const std::exception& e) {
      std::cerr << "converge-shop: saving stats: " << e.what() << "\n";
    }
  };
  // Device commands that go unacked are re-sent and expired by converge-reconciler's device
  // sweep (scripts/demo.sh and compose run it with --devices.command_resend_interval=5s).
  while (!g_stop) {
    std::this_thread::sleep_for(std::chrono::seconds(1));
    save_stats();
  }
  for (auto& [name, c] : consumers) c->Stop();
  save_stats();
  return 0;
}

int Duplicate(Args& a, const std::string& brokers) {
  const long count = a.Int("count", 20);
  if (!a.error.empty()) return std::cerr << "converge-shop duplicate: " << a.error << "\n", 2;
  auto records = converge::broker::ReadAll(brokers, shop::kStockTopic, std::chrono::seconds(10));
  if (!records.ok()) return std::cerr << "converge-shop duplicate: " << records.status() << "\n", 1;
  std::vector<converge::Message> copies;
  for (const auto& rec : *records) {
    if (static_cast<long>(copies.size()) >= count) break;
    auto m = converge::consumer::DecodeRecord(rec);
    if (!m.ok()) continue;
    m->topic = rec.topic;
    copies.push_back(std::move(m).value());
  }
  auto publisher = converge::broker::MakeKafkaPublisher({.bootstrap_servers = brokers});
  if (!publisher.ok())
    return std::cerr << "converge-shop duplicate: " << publisher.status() << "\n", 1;
  std::vector<const converge::Message*> ptrs;
  for (const auto& m : copies) ptrs.push_back(&m);
  auto results = (*publisher)->PublishBatch(ptrs, std::chrono::seconds(30));
  size_t ok = 0;
  for (const auto& r : results) ok += r.status.ok() ? 1 : 0;
  (*publisher)->Close(std::chrono::seconds(5));
  std::cout << "re-published " << ok << " already-delivered stock commands (same message ids)\n";
  return ok == copies.size() ? 0 : 1;
}

int Report(Args& a, const std::string& db) {
  const long wait = a.Int("wait", 0);
  if (!a.error.empty()) return std::cerr << "converge-shop report: " << a.error << "\n", 2;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(wait);
  auto last_print = std::chrono::steady_clock::now();
  for (;;) {
    auto r = shop::ReadReport(db);
    if (!r.ok()) return std::cerr << "converge-shop report: " << r.status() << "\n", 1;
    const bool settled = r->running == 0 && r->placed == r->completed + r->compensated;
    if (settled || std::chrono::steady_clock::now() >= deadline || g_stop) {
      std::cout << shop::FormatReport(*r);
      std::cout << (r->consistent() ? "RESULT: consistent — every order ended completed XOR "
                                      "compensated, nothing lost, nothing applied twice\n"
                                    : "RESULT: NOT consistent (see above)\n");
      return r->consistent() ? 0 : 1;
    }
    if (std::chrono::steady_clock::now() - last_print >= std::chrono::seconds(2)) {
      last_print = std::chrono::steady_clock::now();
      std::cout << "  waiting: " << r->completed << " completed, " << r->compensated
                << " compensated, " << r->running << " in flight\n"
                << std::flush;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

void Usage(std::ostream& os) {
  os << "usage: converge-shop <setup|place|services|duplicate|report|mark> [options]\n"
        "  setup     [--skus N] [--stock N] [--shipping 1]\n"
        "  place     [--orders N] [--rate R] [--decline-percent P] [--seed S] [--skus N]\n"
        "  services  [--metrics-port P] [--metrics-host H] [--devices N] [--fetch-wait-ms MS]\n"
        "            (MS: the Kafka consumers' fetch.wait.max.ms; 0 = librdkafka's 500. The\n"
        "             mock broker answers a fetch only when it runs out: the demo uses 10)\n"
        "  duplicate [--count N]\n"
        "  report    [--wait SECONDS]\n"
        "  mark      NAME    (disruption_start, disruption_end: the report shows the latency of\n"
        "                     orders placed between them apart from the steady state)\n"
        "Database: $CONVERGE_PG_URL. Kafka: $CONVERGE_KAFKA_BROKERS. MQTT: $CONVERGE_MQTT_URL.\n";
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) return Usage(std::cerr), 2;
  const std::string cmd = args[0];
  args.erase(args.begin());
  if (cmd == "help" || cmd == "--help" || cmd == "-h") return Usage(std::cout), 0;
  signal(SIGINT, OnSignal);
  signal(SIGTERM, OnSignal);
  const std::string db = Env("CONVERGE_PG_URL");
  const std::string brokers = Env("CONVERGE_KAFKA_BROKERS");
  if (db.empty()) return std::cerr << "converge-shop: set CONVERGE_PG_URL\n", 2;
  if (cmd == "setup") {
    Args a = Parse(args, {"skus", "stock", "shipping"});
    const long skus = a.Int("skus", 10), stock = a.Int("stock", 30), ship = a.Int("shipping", 0);
    if (!a.error.empty()) return std::cerr << "converge-shop setup: " << a.error << "\n", 2;
    Status st = shop::Setup(db, static_cast<int>(skus), static_cast<int>(stock), ship > 0);
    if (!st.ok()) return std::cerr << "converge-shop setup: " << st << "\n", 1;
    std::cout << "shop ready: " << skus << " SKUs with " << stock << " each\n";
    return 0;
  }
  if (cmd == "place") {
    Args a = Parse(args, {"orders", "rate", "decline-percent", "seed", "skus"});
    shop::PlaceOptions o;
    o.orders = static_cast<int>(a.Int("orders", 100));
    o.rate = static_cast<double>(a.Int("rate", 50));
    o.decline_percent = static_cast<int>(a.Int("decline-percent", 10));
    o.seed = static_cast<uint64_t>(a.Int("seed", 1));
    o.skus = static_cast<int>(a.Int("skus", 10));
    if (!a.error.empty()) return std::cerr << "converge-shop place: " << a.error << "\n", 2;
    if (o.rate <= 0 || o.skus <= 0)
      return std::cerr << "converge-shop place: --rate and --skus must be positive\n", 2;
    auto placed = shop::PlaceOrders(db, o);
    if (!placed.ok()) return std::cerr << "converge-shop place: " << placed.status() << "\n", 1;
    return 0;
  }
  if (cmd == "mark") {
    if (args.size() != 1 || args[0].rfind("--", 0) == 0)
      return std::cerr << "converge-shop mark: expected one NAME\n", 2;
    if (Status st = shop::MarkNow(db, args[0]); !st.ok())
      return std::cerr << "converge-shop mark: " << st << "\n", 1;
    return 0;
  }
  if (brokers.empty() && (cmd == "services" || cmd == "duplicate"))
    return std::cerr << "converge-shop: set CONVERGE_KAFKA_BROKERS\n", 2;
  if (cmd == "services") {
    Args a = Parse(args, {"metrics-port", "metrics-host", "devices", "fetch-wait-ms"});
    if (!a.error.empty()) return std::cerr << "converge-shop services: " << a.error << "\n", 2;
    return Services(a, db, brokers);
  }
  if (cmd == "duplicate") {
    Args a = Parse(args, {"count"});
    if (!a.error.empty()) return std::cerr << "converge-shop duplicate: " << a.error << "\n", 2;
    return Duplicate(a, brokers);
  }
  if (cmd == "report") {
    Args a = Parse(args, {"wait"});
    if (!a.error.empty()) return std::cerr << "converge-shop report: " << a.error << "\n", 2;
    return Report(a, db);
  }
  std::cerr << "converge-shop: unknown command \"" << cmd << "\"\n";
  Usage(std::cerr);
  return 2;
}
