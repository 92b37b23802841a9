// converge-bench: measures the relay, the consumer and the end-to-end latency next to the
// baselines they are judged against (PostgreSQL ceilings, a naive relay, plain Paho), and
// prints a markdown table or one JSON object. scripts/bench.sh builds, starts the services and
// runs it; see bench/README.md.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <optional>
#include <set>
#include <sstream>

#include "converge/common/log.h"
#include "measurements.h"

namespace converge::bench {
namespace {

constexpr const char* kUsage =
    "usage: converge-bench [--quick | --tiny] [--json] [--out-json FILE] [--out-md FILE]\n"
    "                      [--relay-bin PATH] [--work-dir DIR] [--only LIST]\n"
    "  (default)    the full run (several minutes)\n"
    "  --quick      smaller sizes, finishes in under 3 minutes\n"
    "  --tiny       minimal sizes, only proves that every measurement runs (smoke test)\n"
    "  --json       print one JSON object instead of the markdown table\n"
    "  --out-json   also write the JSON object to FILE; --out-md the markdown table\n"
    "  --relay-bin  converge-relay to measure (default: next to this program)\n"
    "  --work-dir   where relay logs go (default /tmp/converge-bench-<pid>)\n"
    "  --fetch-wait-ms  the consumers' fetch.wait.max.ms (default 10; 0 = librdkafka's 500)\n"
    "  --only       comma-separated subset: ceilings,relay,naive,mqtt,consumer,e2e (for\n"
    "               profiling one part; the ratios of parts not run are null). ceilings =\n"
    "               claim+delete and writer commits; consumer includes its own ceilings\n"
    "Needs CONVERGE_PG_URL, CONVERGE_KAFKA_BROKERS, CONVERGE_KAFKA_CONTROL and CONVERGE_MQTT_URL\n"
    "(eval \"$(scripts/services.sh start)\").\n";

struct Sizes {
  std::string mode;
  long claim_rows, relay_rows, naive_rows;
  double naive_seconds;
  long paho_messages, relay_mqtt_rows;
  long consumer_batched, consumer_single;
  std::vector<std::pair<double, double>> e2e;  // (rate, seconds)
  double idle_seconds;
  double writer_seconds;
};

Sizes SizesFor(const std::string& mode) {
  if (mode == "tiny") return {mode, 500, 500, 100, 1, 200, 200, 300, 50, {{1000, 1}}, 1, 0.5};
  if (mode == "quick")
    return {mode, 20000, 20000, 20000, 3, 5000, 5000, 10000, 1000, {{100, 4}, {1000, 5}}, 5, 2};
  return {mode,  100000, 100000, 100000, 10,
          20000, 20000,  50000,  5000,   {{100, 10}, {1000, 15}, {5000, 5}},
          10,    5};
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// One JSON number, or null when unknown.
std::string Num(std::optional<double> v, int decimals = 3) {
  if (!v || !std::isfinite(*v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, *v);
  return buf;
}

std::string Fmt(double v, int decimals = 0) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  const std::string s = buf;
  // Thousands separators in the integer part.
  const size_t sign = s[0] == '-' ? 1 : 0;
  const size_t int_end = std::min(s.find('.'), s.size());
  std::string out = s.substr(0, sign);
  for (size_t i = sign; i < int_end; ++i) {
    if (i > sign && (int_end - i) % 3 == 0) out.push_back(',');
    out.push_back(s[i]);
  }
  out.append(s, int_end, std::string::npos);
  return out;
}

struct Report {
  Sizes sizes;
  double claim_delete = 0;
  ConsumerCeilings ceilings;
  WriterCeilings writers;
  int fetch_wait_ms = 0;
  RelayResult relay1, relay3;
  // Median of the rounds' own relay/ceiling ratios (each round measures the claim+delete
  // ceiling right before its relays; not the ratio of the medians); claim_delete and the
  // relays' rows/s are the medians. Unset when the relay was not measured.
  std::optional<double> relay1_ratio, relay3_ratio;
  int relay_rounds = 0;
  double publisher_alone = 0;
  double naive = 0;
  PahoResult paho;
  std::optional<double> relay_mqtt;
  double consumer_batched = 0, consumer_single = 0;
  // Median of the rounds' own consumer/ceiling ratios (each round measures its ceiling right
  // before its consumer); the rows/s above are the medians of the rounds.
  std::optional<double> consumer_batched_ratio, consumer_single_ratio;
  int consumer_rounds = 0;
  std::vector<LatencyResult> e2e;
  std::vector<std::string> notes;
  double seconds = 0;

  const LatencyResult* At(double rate) const {
    for (const auto& l : e2e)
      if (l.offered_per_s == rate) return &l;
    return nullptr;
  }

  std::string Json() const {
    std::ostringstream o;
    auto ratio = [](double a, double b) -> std::optional<double> {
      if (a <= 0 || b <= 0) return std::nullopt;
      return a / b;
    };
    o << "{\n";
    o << "  \"mode\": \"" << sizes.mode << "\",\n";
    o << "  \"pg_claim_delete_rows_per_s\": " << Num(claim_delete, 1) << ",\n";
    o << "  \"pg_consumer_batched_rows_per_s\": " << Num(ceilings.batched_rows_per_s, 1) << ",\n";
    o << "  \"pg_single_row_commits_per_s\": " << Num(ceilings.single_rows_per_s, 1) << ",\n";
    o << "  \"pg_writer_commits_per_s_16conn\": " << Num(writers.insert_commits_per_s, 1) << ",\n";
    o << "  \"pg_writer_notify_commits_per_s_16conn\": " << Num(writers.notify_commits_per_s, 1)
      << ",\n";
    o << "  \"relay_kafka_rows_per_s\": " << Num(relay1.rows_per_s, 1) << ",\n";
    o << "  \"kafka_publisher_alone_rows_per_s\": " << Num(publisher_alone, 1) << ",\n";
    o << "  \"relay_kafka_3_rows_per_s\": " << Num(relay3.rows_per_s, 1) << ",\n";
    o << "  \"naive_relay_rows_per_s\": " << Num(naive, 1) << ",\n";
    o << "  \"relay_kafka_vs_claim_delete\": " << Num(relay1_ratio) << ",\n";
    o << "  \"relay_kafka_3_vs_claim_delete\": " << Num(relay3_ratio) << ",\n";
    o << "  \"relay_rounds\": " << relay_rounds << ",\n";
    o << "  \"relay_kafka_vs_naive\": " << Num(ratio(relay1.rows_per_s, naive)) << ",\n";
    o << "  \"paho_qos1_msgs_per_s\": " << Num(paho.windowed_per_s, 1) << ",\n";
    o << "  \"paho_qos1_sync_msgs_per_s\": " << Num(paho.sync_per_s, 1) << ",\n";
    o << "  \"relay_mqtt_rows_per_s\": " << Num(relay_mqtt, 1) << ",\n";
    o << "  \"relay_mqtt_vs_paho\": "
      << Num(relay_mqtt ? ratio(*relay_mqtt, paho.windowed_per_s) : std::nullopt) << ",\n";
    o << "  \"consumer_batched_rows_per_s\": " << Num(consumer_batched, 1) << ",\n";
    o << "  \"consumer_single_rows_per_s\": " << Num(consumer_single, 1) << ",\n";
    o << "  \"consumer_batched_vs_ceiling\": "
      << Num(consumer_batched_ratio ? consumer_batched_ratio
                                    : ratio(consumer_batched, ceilings.batched_rows_per_s))
      << ",\n";
    o << "  \"consumer_single_vs_ceiling\": "
      << Num(consumer_single_ratio ? consumer_single_ratio
                                   : ratio(consumer_single, ceilings.single_rows_per_s))
      << ",\n";
    o << "  \"consumer_rounds\": " << consumer_rounds << ",\n";
    for (const auto& l : e2e) {
      const std::string s = std::to_string(static_cast<long>(l.offered_per_s));
      o << "  \"e2e_p50_ms_at_" << s << "\": " << Num(l.p50_ms, 2) << ",\n";
      o << "  \"e2e_p99_ms_at_" << s << "\": " << Num(l.p99_ms, 2) << ",\n";
      o << "  \"e2e_p999_ms_at_" << s << "\": " << Num(l.p999_ms, 2) << ",\n";
      o << "  \"e2e_unapplied_at_" << s << "\": " << l.unapplied << ",\n";
      o << "  \"e2e_achieved_per_s_at_" << s << "\": " << Num(l.achieved_per_s, 1) << ",\n";
      o << "  \"relay_commit_to_confirm_p50_le_ms_at_" << s << "\": " << Num(l.confirm_p50_le_ms, 1)
        << ",\n";
      o << "  \"relay_commit_to_confirm_p99_le_ms_at_" << s << "\": " << Num(l.confirm_p99_le_ms, 1)
        << ",\n";
      const char* keys[] = {"relay", "transit", "commit"};
      for (size_t i = 0; i < l.stages.size() && i < 3; ++i) {
        o << "  \"e2e_stage_" << keys[i] << "_p50_ms_at_" << s
          << "\": " << Num(l.stages[i].p50_ms, 1) << ",\n";
        o << "  \"e2e_stage_" << keys[i] << "_p99_ms_at_" << s
          << "\": " << Num(l.stages[i].p99_ms, 1) << ",\n";
      }
    }
    if (!At(1000)) o << "  \"e2e_p99_ms_at_1000\": null,\n";
    o << "  \"relay_rss_mb\": " << Num(relay1.rss_mb, 1) << ",\n";
    o << "  \"relay_peak_rss_mb\": " << Num(relay1.hwm_mb, 1) << ",\n";
    o << "  \"relay_drain_cpu_percent\": " << Num(relay1.drain_cpu_percent, 1) << ",\n";
    o << "  \"consumer_fetch_wait_ms\": " << fetch_wait_ms << ",\n";
    o << "  \"relay_idle_cpu_percent\": "
      << Num(relay1.idle_cpu_percent >= 0 ? std::optional<double>(relay1.idle_cpu_percent)
                                          : std::nullopt,
             2)
      << ",\n";
    o << "  \"seconds\": " << Num(seconds, 1) << ",\n";
    o << "  \"notes\": \"";
    for (size_t i = 0; i < notes.size(); ++i) o << (i ? " " : "") << notes[i];
    o << "\"\n}\n";
    return o.str();
  }

  std::string Markdown() const {
    std::ostringstream o;
    // A figure that was not measured (--only, or a failed step) shows as such, not as 0.
    auto val = [](double v, const char* unit, int decimals = 0) {
      return v > 0 ? Fmt(v, decimals) + unit : std::string("not measured");
    };
    auto ratio = [](double a, double b) {
      return a > 0 && b > 0 ? Fmt(a / b, 2) : std::string("—");
    };
    auto verdict = [](bool measured, bool ok) {
      return !measured ? "—" : ok ? "met" : "**missed**";
    };
    o << "| Measurement | Result | Baseline (same run) | Ratio | Target |\n";
    o << "| --- | ---: | --- | ---: | --- |\n";
    o << "| PostgreSQL ceiling: relay claim + batched delete (1000/batch) | "
      << val(claim_delete, " rows/s") << " | plain SQL, no broker | | |\n";
    o << "| PostgreSQL ceiling: consumer transaction, batched (500/commit) | "
      << val(ceilings.batched_rows_per_s, " rows/s") << " | plain SQL | | |\n";
    o << "| PostgreSQL ceiling: consumer transaction, one per commit | "
      << val(ceilings.single_rows_per_s, " commits/s") << " | plain SQL | | |\n";
    o << "| PostgreSQL: writer commits, 16 connections, INSERT | "
      << val(writers.insert_commits_per_s, " commits/s") << " | plain SQL | | |\n";
    o << "| PostgreSQL: writer commits, 16 connections, INSERT + pg_notify (as converge.enqueue) | "
      << val(writers.notify_commits_per_s, " commits/s") << " | INSERT alone "
      << val(writers.insert_commits_per_s, " commits/s") << " | "
      << ratio(writers.notify_commits_per_s, writers.insert_commits_per_s) << " | |\n";
    auto relay_ratio = [](const std::optional<double>& r) {
      return r ? Fmt(*r, 2) : std::string("—");
    };
    const std::string rounds_note =
        relay_rounds > 1 ? " (median of " + std::to_string(relay_rounds) + " rounds)" : "";
    o << "| relay → Kafka, 1 relay | " << val(relay1.rows_per_s, " rows/s") << " | claim + delete "
      << val(claim_delete, " rows/s") << rounds_note << " | " << relay_ratio(relay1_ratio)
      << " | ≥ 0.6 (" << verdict(relay1_ratio.has_value(), relay1_ratio.value_or(0) >= 0.6)
      << ") |\n";
    o << "| Kafka publisher alone (PublishBatch of 1000, no database) | "
      << val(publisher_alone, " rows/s") << " | | | |\n";
    o << "| relay CPU while draining (1 relay) | " << val(relay1.drain_cpu_percent, " % of a core")
      << " | | | |\n";
    o << "| relay → Kafka, 3 relays | " << val(relay3.rows_per_s, " rows/s") << " | claim + delete "
      << val(claim_delete, " rows/s") << rounds_note << " | " << relay_ratio(relay3_ratio)
      << " | |\n";
    o << "| relay → Kafka, 1 relay vs naive relay | " << val(relay1.rows_per_s, " rows/s")
      << " | naive one-row relay " << val(naive, " rows/s") << " | "
      << ratio(relay1.rows_per_s, naive) << " | |\n";
    o << "| relay → MQTT (QoS 1, 1 relay, mqtt.max_inflight 16) | "
      << (relay_mqtt ? val(*relay_mqtt, " rows/s") : std::string("not measured"))
      << " | plain Paho QoS 1, " << val(paho.windowed_per_s, " msg/s") << " with 16 in flight, "
      << val(paho.sync_per_s, " msg/s") << " one at a time | "
      << (relay_mqtt ? ratio(*relay_mqtt, paho.windowed_per_s) : std::string("—")) << " | |\n";
    const double cb_ratio =
        consumer_batched_ratio.value_or(consumer_batched > 0 && ceilings.batched_rows_per_s > 0
                                            ? consumer_batched / ceilings.batched_rows_per_s
                                            : 0);
    const double cs_ratio =
        consumer_single_ratio.value_or(consumer_single > 0 && ceilings.single_rows_per_s > 0
                                           ? consumer_single / ceilings.single_rows_per_s
                                           : 0);
    const std::string rounds =
        consumer_rounds > 1 ? " (median of " + std::to_string(consumer_rounds) + " rounds)" : "";
    o << "| consumer, batched (500/transaction) | " << val(consumer_batched, " rows/s")
      << " | batched ceiling " << val(ceilings.batched_rows_per_s, " rows/s") << rounds << " | "
      << (cb_ratio > 0 ? Fmt(cb_ratio, 2) : std::string("—")) << " | ≥ 0.8 ("
      << verdict(cb_ratio > 0, cb_ratio >= 0.8) << ") |\n";
    o << "| consumer, one per transaction | " << val(consumer_single, " rows/s")
      << " | one-per-commit ceiling " << val(ceilings.single_rows_per_s, " commits/s") << rounds
      << " | " << (cs_ratio > 0 ? Fmt(cs_ratio, 2) : std::string("—")) << " | |\n";
    for (const auto& l : e2e) {
      const char* bound = l.unapplied ? "≥ " : "";
      o << "| end to end at " << Fmt(l.offered_per_s) << " msg/s offered (" << Fmt(l.achieved_per_s)
        << " achieved, " << Fmt(static_cast<double>(l.messages)) << " msgs, "
        << l.rows_per_transaction << " per writer transaction) | p50 " << bound << Fmt(l.p50_ms, 1)
        << " ms, p99 " << bound << Fmt(l.p99_ms, 1) << " ms, p99.9 " << bound << Fmt(l.p999_ms, 1)
        << " ms";
      if (l.unapplied)
        o << " (saturated: " << Fmt(static_cast<double>(l.unapplied)) << " not applied within "
          << Fmt(l.grace_seconds) << " s after the writers stopped)";
      o << " | | | ";
      if (l.offered_per_s == 1000) o << "p99 ≤ 20 ms (" << verdict(true, l.p99_ms <= 20) << ")";
      o << " |\n";
    }
    for (const auto& l : e2e) {
      const auto& p50 = l.confirm_p50_le_ms;
      const auto& p99 = l.confirm_p99_le_ms;
      o << "| relay commit → broker confirm at " << Fmt(l.offered_per_s)
        << " msg/s (the relay's histogram: bucket bounds) | "
        << (p50 && p99 ? "p50 ≤ " + Fmt(*p50) + " ms, p99 ≤ " + Fmt(*p99) + " ms"
                       : std::string("not measured"))
        << " | | | ";
      if (l.offered_per_s == 1000)
        o << "p99 ≤ 20 ms (" << verdict(p99.has_value(), p99.value_or(0) <= 20) << ")";
      o << " |\n";
    }
    const bool mem = relay1.hwm_mb > 0;
    o << "| relay RSS while draining (VmRSS max; VmHWM) | "
      << (mem ? Fmt(relay1.rss_mb, 1) + " MB; " + Fmt(relay1.hwm_mb, 1) + " MB"
              : std::string("not measured"))
      << " | | | ≤ 30 MB (" << verdict(mem, relay1.hwm_mb <= 30) << ") |\n";
    const bool idle = relay1.idle_cpu_percent >= 0;
    o << "| relay idle CPU (empty outbox, " << Fmt(sizes.idle_seconds) << " s) | "
      << (idle ? Fmt(relay1.idle_cpu_percent, 2) + " % of a core" : std::string("not measured"))
      << " | | | near 0 (" << verdict(idle, relay1.idle_cpu_percent < 1.0) << ") |\n";
    if (!e2e.empty()) {
      o << "\nWhere the end-to-end time goes (wall-clock stamps; the Kafka timestamp is the "
           "relay's produce call, 1 ms resolution):\n\n| offered | stage | p50 | p99 |\n"
           "| ---: | --- | ---: | ---: |\n";
      for (const auto& l : e2e)
        for (const auto& st : l.stages)
          o << "| " << Fmt(l.offered_per_s) << " msg/s | " << st.name << " | " << Fmt(st.p50_ms, 1)
            << " ms | " << Fmt(st.p99_ms, 1) << " ms |\n";
    }
    if (!notes.empty()) {
      o << "\nNotes:\n";
      for (const auto& n : notes) o << "- " << n << "\n";
    }
    return o.str();
  }
};

int Main(int argc, char** argv) {
  std::string mode = "full", out_json, out_md, relay_bin, work_dir;
  bool json = false;
  // The mock broker answers a Fetch only when fetch.wait.max.ms expires, even when records
  // arrive sooner (a real broker answers as soon as fetch.min.bytes are there); 10 ms keeps
  // that artefact out of the latency figures. 0 = librdkafka's default, 500 ms.
  int fetch_wait_ms = 10;
  std::set<std::string> only;
  auto want = [&](const char* what) { return only.empty() || only.count(what) > 0; };
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw BenchError(a + " needs a value");
      return argv[++i];
    };
    if (a == "--quick")
      mode = "quick";
    else if (a == "--tiny")
      mode = "tiny";
    else if (a == "--json")
      json = true;
    else if (a == "--out-json")
      out_json = value();
    else if (a == "--out-md")
      out_md = value();
    else if (a == "--relay-bin")
      relay_bin = value();
    else if (a == "--work-dir")
      work_dir = value();
    else if (a == "--fetch-wait-ms")
      fetch_wait_ms = std::stoi(value());
    else if (a == "--only") {
      std::stringstream list(value());
      for (std::string item; std::getline(list, item, ',');) {
        if (item != "ceilings" && item != "relay" && item != "naive" && item != "mqtt" &&
            item != "consumer" && item != "e2e")
          throw BenchError("--only: unknown measurement '" + item +
                           "' (ceilings, relay, naive, mqtt, consumer, e2e)");
        only.insert(item);
      }
    } else if (a == "-h" || a == "--help") {
      std::cout << kUsage;
      return 0;
    } else {
      std::cerr << "converge-bench: unknown argument " << a << "\n" << kUsage;
      return 2;
    }
  }
  if (relay_bin.empty()) {
    const std::string self = argv[0];
    const auto slash = self.rfind('/');
    relay_bin =
        (slash == std::string::npos ? std::string(".") : self.substr(0, slash)) + "/converge-relay";
  }
  if (::access(relay_bin.c_str(), X_OK) != 0)
    throw BenchError("converge-relay not found or not executable at " + relay_bin +
                     " (use --relay-bin)");
  const std::string pid = std::to_string(::getpid());
  if (work_dir.empty()) work_dir = "/tmp/converge-bench-" + pid;
  if (std::system(("mkdir -p '" + work_dir + "'").c_str()) != 0)
    throw BenchError("cannot create " + work_dir);
  const std::string relay_log = work_dir + "/relay.log";

  const std::string pg_url = RequireEnv("CONVERGE_PG_URL");
  const std::string brokers = RequireEnv("CONVERGE_KAFKA_BROKERS");
  const std::string control = RequireEnv("CONVERGE_KAFKA_CONTROL");
  const std::string mqtt_url = RequireEnv("CONVERGE_MQTT_URL");

  SetMinLevel(Level::kWarn);  // the consumer runtime logs every partition claim at info
  Report rep;
  rep.sizes = SizesFor(mode);
  rep.fetch_wait_ms = fetch_wait_ms;
  SetConsumerFetchWait(fetch_wait_ms);
  const Sizes& z = rep.sizes;
  const auto start = Clock::now();
  BenchDatabase db(pg_url);
  auto topic = [&](const std::string& name) {
    const std::string t = "bench-" + pid + "-" + name;
    CreateKafkaTopic(control, t, 8);
    return t;
  };

  // A measurement that fails is reported in the notes and the run goes on; the exit status
  // is 1 when any failed.
  int failures = 0;
  auto step = [&](const std::string& what, const std::function<void()>& fn) {
    std::cerr << "converge-bench: " << what << std::endl;
    try {
      fn();
    } catch (const std::exception& e) {
      std::cerr << "converge-bench: " << what << " FAILED: " << e.what() << std::endl;
      rep.notes.push_back(what + " failed: " + e.what() + ".");
      ++failures;
    }
  };
  if (want("ceilings")) {
    step("PostgreSQL ceilings", [&] {
      // With the relay measured, its rounds measure this ceiling beside it.
      if (!want("relay")) rep.claim_delete = ClaimDeleteCeiling(db, z.claim_rows, 1000);
      rep.writers = MeasureWriterCeilings(db, 16, z.writer_seconds);
    });
  }
  if (want("relay")) {
    // Rounds alternate the claim+delete ceiling and the relays, as for the consumer: measured
    // once each, tens of seconds apart, the ceiling alone moved 88k-151k rows/s between runs.
    // RSS and idle CPU come from the first round's single relay.
    const int rounds = z.mode == "tiny" ? 1 : 3;
    step("relay → Kafka (1 and 3 relays) and the claim+delete ceiling, " + std::to_string(rounds) +
             " rounds",
         [&] {
           std::vector<double> ceil, one, three, ratio1, ratio3, cpu;
           for (int r = 0; r < rounds; ++r) {
             const std::string n = std::to_string(r);
             const double c = ClaimDeleteCeiling(db, z.claim_rows, 1000);
             const RelayResult a =
                 MeasureRelay(db, relay_bin, brokers, topic("relay1-" + n), z.relay_rows, 1,
                              r == 0 ? z.idle_seconds : 0, relay_log);
             const RelayResult b = MeasureRelay(db, relay_bin, brokers, topic("relay3-" + n),
                                                z.relay_rows, 3, 0, relay_log);
             if (r == 0) rep.relay1 = a;
             rep.relay1.rss_mb = std::max(rep.relay1.rss_mb, a.rss_mb);
             rep.relay1.hwm_mb = std::max(rep.relay1.hwm_mb, a.hwm_mb);
             ceil.push_back(c);
             one.push_back(a.rows_per_s);
             three.push_back(b.rows_per_s);
             cpu.push_back(a.drain_cpu_percent);
             ratio1.push_back(c > 0 ? a.rows_per_s / c : 0);
             ratio3.push_back(c > 0 ? b.rows_per_s / c : 0);
           }
           rep.claim_delete = Median(ceil);
           rep.relay1.rows_per_s = Median(one);
           rep.relay1.drain_cpu_percent = Median(cpu);
           rep.relay3.rows_per_s = Median(three);
           rep.relay1_ratio = Median(ratio1);
           rep.relay3_ratio = Median(ratio3);
           rep.relay_rounds = rounds;
         });
    step("Kafka publisher alone", [&] {
      rep.publisher_alone = PublisherAlone(brokers, topic("publisher"), z.relay_rows, 1000);
    });
  }
  if (want("naive")) {
    step("naive relay → Kafka", [&] {
      rep.naive = NaiveRelay(db, brokers, topic("naive"), z.naive_rows, z.naive_seconds);
    });
  }
  if (want("mqtt")) {
    // The baseline keeps as many QoS 1 publishes in flight as converge-relay does by default
    // (mqtt.max_inflight = 16), so the ratio compares the code, not the window.
    step("plain Paho QoS 1 publisher",
         [&] { rep.paho = PahoQos1(mqtt_url, "bench/" + pid + "/paho", z.paho_messages, 16); });
    step("relay → MQTT, 1 relay", [&] {
      std::string url = mqtt_url;
      if (url.rfind("mqtt://", 0) == 0) url = "tcp://" + url.substr(7);
      RelayResult r =
          MeasureRelay(db, relay_bin, brokers, "bench-" + pid + "-mqtt", z.relay_mqtt_rows, 1, 0,
                       relay_log, {"--relay.target=mqtt", "--mqtt.url=" + url});
      rep.relay_mqtt = r.rows_per_s;
    });
  }
  if (want("consumer")) {
    // Rounds alternate the ceiling and the consumer, each on a share of the rows, so that the
    // load of a shared machine hits both alike; the ratio is the median of the rounds' ratios.
    // (Measured once each, one after the other, the ceiling alone moved 5.2k-13.2k rows/s
    // between runs while the consumer stayed within 5 %.)
    const int rounds = z.mode == "tiny" ? 1 : 3;
    step("consumer and its PostgreSQL ceilings, " + std::to_string(rounds) + " rounds", [&] {
      std::vector<double> ceil_b, ceil_s, cons_b, cons_s, ratio_b, ratio_s;
      for (int r = 0; r < rounds; ++r) {
        const ConsumerCeilings c = MeasureConsumerCeilings(db, z.consumer_batched / rounds,
                                                           z.consumer_single / rounds, 500);
        const double b =
            ConsumerThroughput(db, brokers, topic("consumer-batched-" + std::to_string(r)),
                               z.consumer_batched / rounds, 500);
        const double one =
            ConsumerThroughput(db, brokers, topic("consumer-single-" + std::to_string(r)),
                               z.consumer_single / rounds, 1);
        ceil_b.push_back(c.batched_rows_per_s);
        ceil_s.push_back(c.single_rows_per_s);
        cons_b.push_back(b);
        cons_s.push_back(one);
        ratio_b.push_back(c.batched_rows_per_s > 0 ? b / c.batched_rows_per_s : 0);
        ratio_s.push_back(c.single_rows_per_s > 0 ? one / c.single_rows_per_s : 0);
      }
      rep.ceilings.batched_rows_per_s = Median(ceil_b);
      rep.ceilings.single_rows_per_s = Median(ceil_s);
      rep.consumer_batched = Median(cons_b);
      rep.consumer_single = Median(cons_s);
      rep.consumer_batched_ratio = Median(ratio_b);
      rep.consumer_single_ratio = Median(ratio_s);
      rep.consumer_rounds = rounds;
    });
  }
  if (want("e2e")) {
    for (const auto& [rate, secs] : z.e2e) {
      step("end to end at " + Fmt(rate) + " msg/s", [&, rate = rate, secs = secs] {
        db.Exec("TRUNCATE converge.outbox");
        rep.e2e.push_back(MeasureEndToEnd(db, relay_bin, brokers,
                                          topic("e2e-" + std::to_string(static_cast<long>(rate))),
                                          rate, secs, relay_log));
      });
    }
  }
  rep.notes.push_back(
      "Kafka is converge-devkafka (librdkafka's mock cluster, in-process memory, no disk, "
      "shared with other users of the services). Consumers run with fetch.wait.max.ms=" +
      std::to_string(fetch_wait_ms) +
      " because the mock broker holds every Fetch for the full wait even when records arrive.");
  rep.seconds = SecondsSince(start);

  const std::string js = rep.Json(), md = rep.Markdown();
  if (!out_json.empty()) std::ofstream(out_json) << js;
  if (!out_md.empty()) std::ofstream(out_md) << md;
  std::cout << (json ? js : md);
  return failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace converge::bench

int main(int argc, char** argv) {
  try {
    return converge::bench::Main(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "converge-bench: " << e.what() << "\n";
    return 1;
  }
}
