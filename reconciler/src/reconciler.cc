#include "converge/reconciler/reconciler.h"

#include <unistd.h>

#include <pqxx/pqxx>

#include <thread>

#include "converge/common/log.h"
#include "converge/schemas/pg.h"

namespace converge::reconciler {

namespace {

std::string DefaultInstanceId() {
  char host[256] = {0};
  if (gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  return std::string(host[0] ? host : "localhost") + ":" + std::to_string(getpid());
}

// Sleeps in short relative slices (nanosleep), so Stop() is prompt and a jump of the host's
// wall clock cannot stretch or cut the pause.
void SleepUnlessStopped(std::chrono::milliseconds d, const std::atomic<bool>& stop) {
  const auto slice = std::chrono::milliseconds(20);
  while (d.count() > 0 && !stop.load()) {
    const auto step = std::min(d, slice);
    std::this_thread::sleep_for(step);
    d -= step;
  }
}

}  // namespace

Status ReconcilerOptions::Validate() const {
  if (database_url.empty()) return Status::InvalidArgument("database.url must be set");
  if (batch_size < 1 || batch_size > 100000)
    return Status::InvalidArgument("reconciler.batch_size must be 1 to 100000");
  if (poll_interval.count() <= 0)
    return Status::InvalidArgument("reconciler.poll_interval must be > 0");
  if (stuck_interval.count() <= 0)
    return Status::InvalidArgument("reconciler.stuck_interval must be > 0");
  if (outbox_age_threshold.count() <= 0)
    return Status::InvalidArgument("reconciler.outbox_age_threshold must be > 0");
  if (reconnect_interval.count() <= 0)
    return Status::InvalidArgument("reconciler.reconnect_interval must be > 0");
  if (devices_sweep_interval.count() <= 0)
    return Status::InvalidArgument("devices.sweep_interval must be > 0");
  if (Status st = devices.Validate(); !st.ok())
    return Status::InvalidArgument("devices: " + st.message());
  return Status::Ok();
}

struct Reconciler::Impl {
  std::unique_ptr<pqxx::connection> conn;
  std::atomic<bool> stop{false};
};

Reconciler::Reconciler(ReconcilerOptions options)
    : options_(std::move(options)),
      device_sweep_(options_.devices),
      impl_(std::make_unique<Impl>()) {
  if (options_.instance_id.empty()) options_.instance_id = DefaultInstanceId();
}

Reconciler::~Reconciler() = default;

void Reconciler::Stop() { impl_->stop.store(true); }

// (Re)opens the one connection the sweeps and the snapshot share; readiness follows it.
Status Reconciler::EnsureConnected() {
  if (impl_->conn && impl_->conn->is_open()) return Status::Ok();
  auto c = pg::Connect(options_.database_url);
  if (!c.ok()) {
    stats_.ready.store(0);
    return c.status();
  }
  impl_->conn = std::move(c).value();
  stats_.ready.store(1);
  return Status::Ok();
}

// The device sweep under a session advisory lock: taken before RunOnce's transaction and
// released after its commit, so a second reconciler's sweep starts only after the first one's
// changes are visible (its re-sends moved last_sent_at, its expiries are final). The lock is
// released with the session when the process dies.
Result<DeviceSweepOutcome> Reconciler::SweepDevicesOnce() {
  CONVERGE_RETURN_IF_ERROR(EnsureConnected());
  pqxx::connection& conn = *impl_->conn;
  DeviceSweepOutcome out;
  auto fail = [&](const Status& st) -> Status {
    stats_.device_sweep_errors.fetch_add(1);
    if (st.code() == StatusCode::kUnavailable) {
      impl_->conn.reset();  // the session (and any advisory lock it held) is gone
      stats_.ready.store(0);
    }
    return st;
  };
  try {
    pqxx::nontransaction q(conn);
    auto r = q.exec_params(
        "SELECT to_regclass('converge.device_commands') IS NOT NULL AND "
        "to_regclass('converge.device_twins') IS NOT NULL AND "
        "to_regclass('converge.device_presence') IS NOT NULL, "
        "pg_try_advisory_lock($1)",
        kDeviceSweepLockKey);
    // Both expressions are evaluated: release the lock when there is nothing to sweep.
    const bool tables = r[0][0].as<bool>(), locked = r[0][1].as<bool>();
    if (!tables) {
      if (locked) q.exec_params("SELECT pg_advisory_unlock($1)", kDeviceSweepLockKey);
      out.kind = DeviceSweepOutcome::Kind::kNoTables;
      return out;
    }
    if (!locked) {
      stats_.device_sweeps_skipped.fetch_add(1);
      out.kind = DeviceSweepOutcome::Kind::kLocked;
      return out;
    }
  } catch (const std::exception& e) {
    return fail(pg::StatusFromException(e));
  }
  auto swept = device_sweep_.RunOnce(conn);
  try {
    pqxx::nontransaction(conn).exec_params("SELECT pg_advisory_unlock($1)", kDeviceSweepLockKey);
  } catch (const std::exception& e) {
    return fail(pg::StatusFromException(e));
  }
  if (!swept.ok()) return fail(swept.status());
  stats_.device_sweeps.fetch_add(1);
  out.kind = DeviceSweepOutcome::Kind::kRan;
  out.result = *swept;
  return out;
}

Result<ScanResult> Reconciler::ScanOnce() {
  CONVERGE_RETURN_IF_ERROR(EnsureConnected());
  ScanResult total;
  for (;;) {
    ScanResult pass;
    int rows = 0;
    Status st = pg::RunInTransaction(*impl_->conn, [&](pqxx::work& tx) -> Status {
      pass = ScanResult{};
      auto r = tx.exec_params("SELECT flow_id::text, action FROM converge.flow_reconcile($1)",
                              options_.batch_size);
      rows = static_cast<int>(r.size());
      for (const auto& row : r) {
        const std::string action = row[1].c_str();
        if (action == "reemitted") {
          ++pass.reemitted;
        } else if (action == "compensation_started") {
          ++pass.compensations_started;
        } else if (action == "compensated") {
          ++pass.compensated;
        } else if (action == "compensation_reemitted") {
          ++pass.compensations_reemitted;
        } else if (action == "extended") {
          ++pass.extended;
        } else if (action == "needs_attention") {
          ++pass.needs_attention;
          Log(Level::kWarn, "flow needs attention",
              {{"flow_id", row[0].c_str()}, {"instance", options_.instance_id}});
        }
      }
      return Status::Ok();
    });
    if (!st.ok()) {
      stats_.errors.fetch_add(1);
      if (st.code() == StatusCode::kUnavailable) {
        impl_->conn.reset();
        stats_.ready.store(0);
      }
      return st;
    }
    stats_.passes.fetch_add(1);
    stats_.reemitted.fetch_add(pass.reemitted);
    stats_.compensations_started.fetch_add(pass.compensations_started);
    stats_.compensated.fetch_add(pass.compensated);
    stats_.compensations_reemitted.fetch_add(pass.compensations_reemitted);
    stats_.needs_attention.fetch_add(pass.needs_attention);
    stats_.extended.fetch_add(pass.extended);
    total.reemitted += pass.reemitted;
    total.compensations_started += pass.compensations_started;
    total.compensated += pass.compensated;
    total.compensations_reemitted += pass.compensations_reemitted;
    total.needs_attention += pass.needs_attention;
    total.extended += pass.extended;
    if (rows < options_.batch_size || impl_->stop.load()) break;
  }
  return total;
}

Result<StuckSnapshot> Reconciler::RefreshSnapshot() {
  CONVERGE_RETURN_IF_ERROR(EnsureConnected());
  StuckSnapshot s;
  Status st = pg::RunInTransaction(*impl_->conn, [&](pqxx::work& tx) -> Status {
    s = StuckSnapshot{};
    auto o = tx.exec_params(
        "SELECT count(*), count(*) FILTER (WHERE created_at < now() - $1 * interval '1 "
        "millisecond'), "
        "coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 FROM converge.outbox",
        static_cast<int64_t>(options_.outbox_age_threshold.count()));
    s.outbox_rows = o[0][0].as<int64_t>();
    s.outbox_stuck_rows = o[0][1].as<int64_t>();
    s.outbox_oldest_seconds = std::max(0.0, o[0][2].as<double>());
    auto k = tx.exec(
        "SELECT count(*) FILTER (WHERE parked), count(*) FILTER (WHERE NOT parked) "
        "FROM converge.outbox_blocked_keys");
    s.parked_keys = k[0][0].as<int64_t>();
    s.blocked_keys = k[0][1].as<int64_t>();
    s.open_dead_letters =
        tx.exec("SELECT count(*) FROM converge.dead_letters WHERE status = 'open'")[0][0]
            .as<int64_t>();
    for (const char* state :
         {"running", "completed", "compensating", "compensated", "needs_attention"})
      s.flows_by_state[state] = 0;
    for (const auto& row : tx.exec("SELECT state, count(*) FROM converge.flows GROUP BY state"))
      s.flows_by_state[row[0].c_str()] = row[1].as<int64_t>();
    s.flows_overdue = tx.exec(
                            "SELECT count(*) FROM converge.flows WHERE state IN "
                            "('running', 'compensating') AND deadline_at <= now()")[0][0]
                          .as<int64_t>();
    // Device tables arrive with the MQTT device migration (0004); measure them only once they
    // exist, in a savepoint so that a different table shape cannot hide the other numbers.
    auto dev = tx.exec(
        "SELECT to_regclass('converge.device_commands') IS NOT NULL, "
        "to_regclass('converge.device_twins') IS NOT NULL");
    const bool commands = dev[0][0].as<bool>(), twins = dev[0][1].as<bool>();
    if (commands || twins) {
      try {
        pqxx::subtransaction sub(tx, "devices");
        if (commands) {
          s.unacked_device_commands =
              sub.exec(
                     "SELECT count(*) FROM converge.device_commands "
                     "WHERE status IN ('pending', 'sent', 'received')")[0][0]
                  .as<int64_t>();
        }
        if (twins) {
          s.unconverged_device_twins =
              sub.exec(
                     "SELECT count(*) FROM converge.device_twins "
                     "WHERE applied_desired_version < desired_version")[0][0]
                  .as<int64_t>();
        }
        sub.commit();
      } catch (const pqxx::sql_error& e) {
        s.unacked_device_commands = s.unconverged_device_twins = -1;
        Log(Level::kWarn, "device tables not measured", {{"error", pg::StatusFromException(e)}});
      }
    }
    return Status::Ok();
  });
  if (!st.ok()) {
    if (st.code() == StatusCode::kUnavailable) {
      impl_->conn.reset();
      stats_.ready.store(0);
    }
    return st;
  }
  {
    std::lock_guard<std::mutex> lock(snapshot_mu_);
    snapshot_ = s;
  }
  return s;
}

StuckSnapshot Reconciler::LastSnapshot() const {
  std::lock_guard<std::mutex> lock(snapshot_mu_);
  return snapshot_;
}

Status Reconciler::Run() {
  CONVERGE_RETURN_IF_ERROR(options_.Validate());
  Log(Level::kInfo, "reconciler started", {{"instance", options_.instance_id}});
  // Periodic tasks on the steady clock. A task is also due when the clock reads earlier than
  // its last run (a faked or broken monotonic clock stepping back must not stall it).
  using SteadyClock = std::chrono::steady_clock;
  auto due = [](bool done_before, SteadyClock::time_point last, SteadyClock::time_point now,
                std::chrono::milliseconds every) {
    return !done_before || now < last || now - last >= every;
  };
  auto last_snapshot = SteadyClock::time_point{};
  bool snapshot_taken = false;
  auto last_device_sweep = SteadyClock::time_point{};
  bool device_swept = false;
  while (!impl_->stop.load()) {
    if (options_.on_cycle) options_.on_cycle();
    auto scan = ScanOnce();
    if (!scan.ok()) {
      if (scan.status().code() == StatusCode::kFailedPrecondition) {
        Log(Level::kError, "reconciler cannot run", {{"error", scan.status()}});
        return scan.status();
      }
      Log(Level::kWarn, "reconciler pass failed; retrying", {{"error", scan.status()}});
      SleepUnlessStopped(options_.reconnect_interval, impl_->stop);
      continue;
    }
    if (scan->total() > 0) {
      Log(Level::kInfo, "reconciled flows",
          {{"reemitted", scan->reemitted},
           {"compensations_started", scan->compensations_started},
           {"compensated", scan->compensated},
           {"compensations_reemitted", scan->compensations_reemitted},
           {"needs_attention", scan->needs_attention},
           {"extended", scan->extended},
           {"instance", options_.instance_id}});
    }
    if (options_.devices_sweep &&
        due(device_swept, last_device_sweep, SteadyClock::now(), options_.devices_sweep_interval)) {
      auto sweep = SweepDevicesOnce();
      if (!sweep.ok()) {
        Log(Level::kWarn, "device sweep failed; retrying next interval",
            {{"error", sweep.status()}, {"instance", options_.instance_id}});
      } else if (sweep->kind == DeviceSweepOutcome::Kind::kRan) {
        const pubsub::SweepResult& d = sweep->result;
        if (d.expired_commands + d.marked_sent + d.resent_commands + d.resent_twins > 0) {
          Log(Level::kInfo, "swept devices",
              {{"expired_commands", d.expired_commands},
               {"marked_sent", d.marked_sent},
               {"resent_commands", d.resent_commands},
               {"resent_twins", d.resent_twins},
               {"unacked_commands", d.unacked_commands},
               {"unconverged_twins", d.unconverged_twins},
               {"instance", options_.instance_id}});
        }
      }
      device_swept = true;
      last_device_sweep = SteadyClock::now();
    }
    const auto now = SteadyClock::now();
    if (due(snapshot_taken, last_snapshot, now, options_.stuck_interval)) {
      auto snap = RefreshSnapshot();
      if (!snap.ok()) {
        Log(Level::kWarn, "stuck-things snapshot failed", {{"error", snap.status()}});
      }
      snapshot_taken = true;
      last_snapshot = now;
    }
    SleepUnlessStopped(options_.poll_interval, impl_->stop);
  }
  Log(Level::kInfo, "reconciler stopped", {{"instance", options_.instance_id}});
  return Status::Ok();
}

}  // namespace converge::reconciler
