// converge-reconciler: drives flows past their deadline (re-emit, compensate, park), runs the
// MQTT device sweep (re-send, expire) and exposes the stuck things Converge stores as metrics.
// Several may run against one database. See reconciler/README.md and docs/flows.md.
#include <signal.h>

#include <iostream>
#include <thread>

#include "converge/common/config.h"
#include "converge/common/http_server.h"
#include "converge/common/log.h"
#include "converge/common/metrics.h"
#include "converge/reconciler/reconciler.h"

namespace converge {
namespace {

using std::chrono::milliseconds;

struct Keys {
  explicit Keys(ConfigSchema& s)
      : db_url(
            s.String("database.url", "", "PostgreSQL URL of the database with the converge schema")
                .Env("CONVERGE_PG_URL")
                .Secret()
                .Required()),
        instance_id(s.String("reconciler.instance_id", "",
                             "Name of this reconciler in logs (default host:pid)")),
        batch_size(s.Int("reconciler.batch_size", 100, "Due flows handled per transaction")
                       .Range(1, 100000)),
        poll_interval(s.Duration("reconciler.poll_interval", milliseconds(1000),
                                 "Pause between passes over due flows")
                          .Range(milliseconds(1), milliseconds(3600000))),
        stuck_interval(s.Duration("reconciler.stuck_interval", milliseconds(10000),
                                  "How often the stuck-things metrics are refreshed")
                           .Range(milliseconds(1), milliseconds(3600000))),
        outbox_age(s.Duration("reconciler.outbox_age_threshold", milliseconds(300000),
                              "Outbox rows older than this count as stuck")
                       .Range(milliseconds(1), milliseconds(86400000 * 30LL))),
        devices_sweep(s.Bool("devices.sweep", true,
                             "Run the MQTT device sweep (re-send unacked commands and "
                             "unconverged twins, expire commands); one reconciler at a time")),
        devices_interval(
            s.Duration("devices.sweep_interval", milliseconds(5000), "Pause between device sweeps")
                .Range(milliseconds(1), milliseconds(3600000))),
        command_resend(s.Duration("devices.command_resend_interval", milliseconds(30000),
                                  "A sent or received command without a final ack is re-sent "
                                  "(same id) this long after it was last written, until it "
                                  "expires")
                           .Range(milliseconds(1), milliseconds(86400000))),
        twin_resend(s.Duration("devices.twin_resend_after", milliseconds(60000),
                               "An unconverged twin's desired state is re-sent this long after "
                               "its last change or re-send")
                        .Range(milliseconds(1), milliseconds(86400000))),
        skip_offline(s.Bool("devices.skip_offline", true,
                            "Do not re-send to devices whose presence is offline (their online "
                            "message makes them due)")),
        max_resends(s.Int("devices.max_resends", 500, "Commands and twins re-sent per sweep (each)")
                        .Range(1, 100000)),
        metrics_host(
            s.String("metrics.host", "127.0.0.1", "Interface for /metrics, /healthz, /readyz")),
        metrics_port(s.Int("metrics.port", 9465, "Port for /metrics (0 = ephemeral, -1 = off)")
                         .Range(-1, 65535)),
        log_level(
            s.Enum("log.level", "info", {"debug", "info", "warn", "error"}, "Minimum log level")),
        log_format(s.Enum("log.format", "logfmt", {"logfmt", "json"}, "Log line format")) {}

  ConfigKey<std::string> db_url, instance_id;
  ConfigKey<int64_t> batch_size;
  ConfigKey<milliseconds> poll_interval, stuck_interval, outbox_age;
  ConfigKey<bool> devices_sweep;
  ConfigKey<milliseconds> devices_interval, command_resend, twin_resend;
  ConfigKey<bool> skip_offline;
  ConfigKey<int64_t> max_resends;
  ConfigKey<std::string> metrics_host;
  ConfigKey<int64_t> metrics_port;
  ConfigKey<std::string> log_level, log_format;
};

Status RegisterMetrics(metrics::Registry& reg, reconciler::Reconciler& r) {
  const reconciler::ReconcilerStats& st = r.stats();
  auto counter = [&](const char* name, const char* help, const std::atomic<uint64_t>& v) {
    return reg.AddCallback(name, help, metrics::MetricType::kCounter, {}, [&v] {
      return std::vector<metrics::Sample>{{{}, double(v.load())}};
    });
  };
  CONVERGE_RETURN_IF_ERROR(
      counter("converge_reconciler_passes_total", "Committed passes over due flows", st.passes));
  CONVERGE_RETURN_IF_ERROR(counter("converge_reconciler_reemitted_total",
                                   "Step commands re-emitted after their deadline", st.reemitted));
  CONVERGE_RETURN_IF_ERROR(counter("converge_reconciler_compensations_started_total",
                                   "Flows that began compensating after their last attempt",
                                   st.compensations_started));
  CONVERGE_RETURN_IF_ERROR(counter("converge_reconciler_compensations_reemitted_total",
                                   "Compensations re-emitted after their deadline",
                                   st.compensations_reemitted));
  CONVERGE_RETURN_IF_ERROR(counter("converge_reconciler_needs_attention_total",
                                   "Flows parked as needs_attention", st.needs_attention));
  CONVERGE_RETURN_IF_ERROR(counter("converge_reconciler_deadlines_extended_total",
                                   "Deadlines extended because the last emission was not "
                                   "published yet (relay behind)",
                                   st.extended));
  CONVERGE_RETURN_IF_ERROR(reg.AddCallback(
      "converge_reconciler_device_sweeps_total",
      "Device sweeps: run by this reconciler, skipped (another reconciler was sweeping), failed",
      metrics::MetricType::kCounter, {"outcome"}, [&st] {
        return std::vector<metrics::Sample>{{{"ran"}, double(st.device_sweeps.load())},
                                            {{"skipped"}, double(st.device_sweeps_skipped.load())},
                                            {{"failed"}, double(st.device_sweep_errors.load())}};
      }));
  // converge_device_sweep_total{action}, converge_device_unacked_commands and
  // converge_device_unconverged_twins: what the sweeps run by this reconciler did.
  CONVERGE_RETURN_IF_ERROR(r.device_sweep().RegisterMetrics(reg));
  CONVERGE_RETURN_IF_ERROR(counter("converge_reconciler_errors_total",
                                   "Passes that failed (database unreachable, aborted)",
                                   st.errors));
  // The stuck-things snapshot, refreshed by the main loop every reconciler.stuck_interval.
  auto snap_gauge = [&](const char* name, const char* help,
                        std::function<double(const reconciler::StuckSnapshot&)> f) {
    return reg.AddCallbackGauge(name, help, [&r, f] { return f(r.LastSnapshot()); });
  };
  CONVERGE_RETURN_IF_ERROR(snap_gauge("converge_reconciler_outbox_rows", "Rows in the outbox",
                                      [](const auto& s) { return double(s.outbox_rows); }));
  CONVERGE_RETURN_IF_ERROR(snap_gauge("converge_reconciler_outbox_stuck_rows",
                                      "Outbox rows older than reconciler.outbox_age_threshold",
                                      [](const auto& s) { return double(s.outbox_stuck_rows); }));
  CONVERGE_RETURN_IF_ERROR(snap_gauge("converge_reconciler_outbox_oldest_seconds",
                                      "Age of the oldest outbox row (database clock)",
                                      [](const auto& s) { return s.outbox_oldest_seconds; }));
  CONVERGE_RETURN_IF_ERROR(snap_gauge("converge_reconciler_parked_keys",
                                      "Outbox keys parked behind a dead letter",
                                      [](const auto& s) { return double(s.parked_keys); }));
  CONVERGE_RETURN_IF_ERROR(snap_gauge("converge_reconciler_blocked_keys",
                                      "Outbox keys in retry backoff",
                                      [](const auto& s) { return double(s.blocked_keys); }));
  CONVERGE_RETURN_IF_ERROR(snap_gauge("converge_reconciler_open_dead_letters",
                                      "Dead letters with status open",
                                      [](const auto& s) { return double(s.open_dead_letters); }));
  CONVERGE_RETURN_IF_ERROR(snap_gauge("converge_reconciler_flows_overdue",
                                      "Running or compensating flows past their deadline",
                                      [](const auto& s) { return double(s.flows_overdue); }));
  CONVERGE_RETURN_IF_ERROR(reg.AddCallback(
      "converge_reconciler_flows", "Flows by state", metrics::MetricType::kGauge, {"state"}, [&r] {
        std::vector<metrics::Sample> out;
        for (const auto& [state, n] : r.LastSnapshot().flows_by_state)
          out.push_back({{state}, double(n)});
        return out;
      }));
  // Device metrics appear only when the device tables exist (MQTT device migration).
  CONVERGE_RETURN_IF_ERROR(
      reg.AddCallback("converge_reconciler_unacked_device_commands",
                      "Device commands not acknowledged", metrics::MetricType::kGauge, {}, [&r] {
                        auto s = r.LastSnapshot();
                        std::vector<metrics::Sample> out;
                        if (s.unacked_device_commands >= 0)
                          out.push_back({{}, double(s.unacked_device_commands)});
                        return out;
                      }));
  CONVERGE_RETURN_IF_ERROR(
      reg.AddCallback("converge_reconciler_unconverged_device_twins",
                      "Device twins whose reported state differs from the desired one",
                      metrics::MetricType::kGauge, {}, [&r] {
                        auto s = r.LastSnapshot();
                        std::vector<metrics::Sample> out;
                        if (s.unconverged_device_twins >= 0)
                          out.push_back({{}, double(s.unconverged_device_twins)});
                        return out;
                      }));
  return Status::Ok();
}

int Main(int argc, char** argv) {
  // Blocked first thing (taken by sigwait below), so that a SIGTERM while the configuration is
  // read stops the reconciler cleanly instead of killing it, as in converge-relay.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  ConfigSchema schema("converge-reconciler",
                      "Re-emits, compensates or parks flows past their deadline (database "
                      "clock), re-sends and expires MQTT device commands and twins, and exposes "
                      "stuck outbox rows, parked keys and dead letters.");
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
    std::cerr << "converge-reconciler: invalid configuration: " << loaded.status().message()
              << "\n(see converge-reconciler --help)\n";
    return 2;
  }
  const Config& cfg = *loaded;
  if (cfg.help_requested()) {
    std::cout << schema.HelpText();
    return 0;
  }
  if (cfg.version_requested()) {
    std::cout << "converge-reconciler 0.1.0\n";
    return 0;
  }
  reconciler::ReconcilerOptions ro;
  ro.database_url = cfg.Get(k.db_url);
  ro.instance_id = cfg.Get(k.instance_id);
  ro.batch_size = static_cast<int>(cfg.Get(k.batch_size));
  ro.poll_interval = cfg.Get(k.poll_interval);
  ro.stuck_interval = cfg.Get(k.stuck_interval);
  ro.outbox_age_threshold = cfg.Get(k.outbox_age);
  ro.devices_sweep = cfg.Get(k.devices_sweep);
  ro.devices_sweep_interval = cfg.Get(k.devices_interval);
  ro.devices.command_resend_interval = cfg.Get(k.command_resend);
  ro.devices.twin_resend_after = cfg.Get(k.twin_resend);
  ro.devices.skip_offline_devices = cfg.Get(k.skip_offline);
  ro.devices.max_resends = static_cast<int>(cfg.Get(k.max_resends));
  if (Status valid = ro.Validate(); !valid.ok()) {
    std::cerr << "converge-reconciler: invalid configuration: " << valid.message() << "\n";
    return 2;
  }
  if (cfg.check_config_requested()) {
    std::cout << cfg.DumpEffective() << "configuration OK\n";
    return 0;
  }
  LogOptions lo;
  lo.min_level = *ParseLevel(cfg.Get(k.log_level));
  lo.format = *ParseLogFormat(cfg.Get(k.log_format));
  ConfigureLogging(lo);

  // Liveness: the main loop beats once per pass; a loop stuck for a minute beyond its poll
  // interval (a hung statement, a deadlocked thread) fails /healthz so it gets restarted.
  Heartbeat heartbeat(SystemClock::Instance(), std::chrono::seconds(60) + ro.poll_interval);
  ro.on_cycle = [&heartbeat] { heartbeat.Beat(); };
  reconciler::Reconciler rec(ro);
  metrics::Registry registry;
  if (Status st = RegisterMetrics(registry, rec); !st.ok()) {
    std::cerr << "converge-reconciler: " << st << "\n";
    return 1;
  }
  std::unique_ptr<MetricsServer> server;
  if (cfg.Get(k.metrics_port) >= 0) {
    MetricsServerOptions mo;
    mo.host = cfg.Get(k.metrics_host);
    mo.port = static_cast<uint16_t>(cfg.Get(k.metrics_port));
    mo.liveness = [&heartbeat] { return heartbeat.Check(); };
    mo.readiness = [&rec]() -> Status {
      if (rec.stats().ready.load() == 0) return Status::Unavailable("not connected to PostgreSQL");
      return Status::Ok();
    };
    server = std::make_unique<MetricsServer>(registry, mo);
    if (Status st = server->Start(); !st.ok()) {
      std::cerr << "converge-reconciler: metrics endpoint: " << st << "\n";
      return 1;
    }
    Log(Level::kInfo, "metrics endpoint listening",
        {{"address", mo.host + ":" + std::to_string(server->port())}});
  }
  std::thread signals([&] {
    int sig = 0;
    sigwait(&set, &sig);
    Log(Level::kInfo, "signal received; stopping", {{"signal", sig}});
    rec.Stop();
  });
  Status st = rec.Run();
  if (server) server->Stop();
  pthread_kill(signals.native_handle(), SIGTERM);
  signals.join();
  if (!st.ok()) {
    Log(Level::kError, "reconciler stopped", {{"error", st.ToString()}});
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace converge

int main(int argc, char** argv) { return converge::Main(argc, argv); }
