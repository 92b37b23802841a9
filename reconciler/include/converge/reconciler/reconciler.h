// The reconciler engine behind `converge-reconciler`: finds flows past their deadline and drives
// them (re-emit, compensate in reverse order, park as needs_attention), and measures the other
// stuck things Converge stores (old outbox rows, parked keys, open dead letters, flows by state).
// It also runs the MQTT device sweep (pubsub::DeviceSweep: re-send unacked commands and
// unconverged twins, expire commands) every devices_sweep_interval, so that applications need
// not run it themselves.
//
//   Reconciler r(options);
//   r.Run();              // until Stop(); or ScanOnce() from a test loop
//
// Every decision is one call of converge.flow_reconcile() (schemas/migrations/0003_flows.sql):
// due flows are claimed with FOR UPDATE SKIP LOCKED and compared with the database's now(), so
// several reconcilers share the work without waiting for each other, and the host clock (skewed,
// jumping) never decides whether a flow is late. A reconciler killed mid-pass loses only its
// open transaction: nothing it emitted or changed in that pass is committed.
//
// The device sweep is run by one reconciler at a time: each sweep holds the session advisory
// lock kDeviceSweepLockKey while it runs (pg_try_advisory_lock; a reconciler that does not get
// it skips that sweep). Sweeps are therefore serial across reconcilers: a command is re-sent at
// most once per command_resend_interval and expired once, whatever the number of reconcilers.
// A reconciler killed mid-sweep loses its session, hence the lock and the open transaction.
//
// Thread safety: Run() on one thread; Stop() and stats() from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "converge/common/status.h"
#include "converge/pubsub/devices.h"

namespace converge::reconciler {

// The session advisory lock that serializes device sweeps across reconcilers ("devsweep").
inline constexpr int64_t kDeviceSweepLockKey = 0x6465767377656570;

struct ReconcilerOptions {
  // PostgreSQL URL of the database with the converge schema. Required.
  std::string database_url;
  // Name of this instance in logs (default host:pid).
  std::string instance_id;
  // Due flows handled per transaction.
  int batch_size = 100;
  // Pause between passes when the last pass found nothing to do.
  std::chrono::milliseconds poll_interval{1000};
  // How often the stuck-things snapshot (metrics) is refreshed.
  std::chrono::milliseconds stuck_interval{10000};
  // Outbox rows older than this count as stuck (converge_reconciler_outbox_stuck_rows).
  std::chrono::milliseconds outbox_age_threshold{300000};
  // Delay between reconnect attempts after the database connection was lost.
  std::chrono::milliseconds reconnect_interval{1000};
  // Called once per loop iteration of Run() (also while the database is unreachable), for a
  // liveness heartbeat. Optional; must be quick and thread-safe.
  std::function<void()> on_cycle;

  // The device sweep (MQTT commands and twins; idle while the device tables of migration 0004
  // are absent). Disabled: the reconciler only measures the device tables.
  bool devices_sweep = true;
  // Pause between device sweeps (host monotonic clock; every decision inside uses now()).
  std::chrono::milliseconds devices_sweep_interval{5000};
  // command_resend_interval, twin_resend_after, skip_offline_devices, max_resends.
  pubsub::SweepOptions devices;

  // Names the first bad field.
  Status Validate() const;
};

// What one pass did.
struct ScanResult {
  int reemitted = 0;              // step commands re-emitted (next attempt)
  int compensations_started = 0;  // flows that began compensating
  int compensated = 0;            // flows with nothing to undo, compensated at once
  int compensations_reemitted = 0;
  int needs_attention = 0;  // flows parked for a person
  // Deadlines extended because the last emission is still unpublished in the outbox (relay
  // behind): no attempt is spent on a message that was never sent.
  int extended = 0;
  int total() const {
    return reemitted + compensations_started + compensated + compensations_reemitted +
           needs_attention + extended;
  }
};

// The other stuck things, read in one transaction.
struct StuckSnapshot {
  int64_t outbox_rows = 0;
  int64_t outbox_stuck_rows = 0;     // older than outbox_age_threshold
  double outbox_oldest_seconds = 0;  // 0 when empty
  int64_t parked_keys = 0;
  int64_t blocked_keys = 0;  // in retry backoff
  int64_t open_dead_letters = 0;
  std::map<std::string, int64_t> flows_by_state;  // every state, 0 included
  int64_t flows_overdue = 0;                      // running/compensating past their deadline now
  // Device tables (present once the MQTT device migration 0004 is applied; -1 when absent):
  // commands pending/sent/received, twins whose applied desired version lags the desired one.
  int64_t unacked_device_commands = -1;
  int64_t unconverged_device_twins = -1;
};

// What one device sweep attempt did.
struct DeviceSweepOutcome {
  enum class Kind {
    kRan,       // this reconciler swept; `result` holds the counts
    kLocked,    // another reconciler was sweeping (held kDeviceSweepLockKey): skipped
    kNoTables,  // the device tables (migration 0004) do not exist: nothing to sweep
  };
  Kind kind = Kind::kRan;
  pubsub::SweepResult result;
};

// Counters since start; read by the metrics endpoint.
struct ReconcilerStats {
  std::atomic<uint64_t> passes{0};
  std::atomic<uint64_t> reemitted{0};
  std::atomic<uint64_t> compensations_started{0};
  std::atomic<uint64_t> compensated{0};
  std::atomic<uint64_t> compensations_reemitted{0};
  std::atomic<uint64_t> needs_attention{0};
  std::atomic<uint64_t> extended{0};
  std::atomic<uint64_t> errors{0};
  std::atomic<int64_t> ready{0};  // 1 while connected
  // Device sweeps: run by this reconciler, skipped because another one held the lock, failed.
  std::atomic<uint64_t> device_sweeps{0};
  std::atomic<uint64_t> device_sweeps_skipped{0};
  std::atomic<uint64_t> device_sweep_errors{0};
};

class Reconciler {
 public:
  explicit Reconciler(ReconcilerOptions options);
  ~Reconciler();
  Reconciler(const Reconciler&) = delete;
  Reconciler& operator=(const Reconciler&) = delete;

  // Loops until Stop(): passes, stuck snapshots, reconnects. Returns an error only for what
  // needs a person (invalid options, schema missing).
  Status Run();
  void Stop();

  // One pass over due flows (at most batch_size per transaction, repeated while batches are
  // full). Connects when needed.
  Result<ScanResult> ScanOnce();
  // One device sweep now, under kDeviceSweepLockKey (see above). Connects when needed. Errors:
  // kUnavailable (connection lost), what DeviceSweep::RunOnce returns.
  Result<DeviceSweepOutcome> SweepDevicesOnce();
  // Reads the stuck-things snapshot now and keeps it for Snapshot().
  Result<StuckSnapshot> RefreshSnapshot();
  // The last snapshot taken (empty before the first).
  StuckSnapshot LastSnapshot() const;

  const ReconcilerStats& stats() const { return stats_; }
  // The device sweep, for its metrics (DeviceSweep::RegisterMetrics): counters of the sweeps
  // this reconciler ran.
  pubsub::DeviceSweep& device_sweep() { return device_sweep_; }

 private:
  struct Impl;
  Status EnsureConnected();
  ReconcilerOptions options_;
  ReconcilerStats stats_;
  pubsub::DeviceSweep device_sweep_;
  std::unique_ptr<Impl> impl_;
  mutable std::mutex snapshot_mu_;
  StuckSnapshot snapshot_;  // guarded by snapshot_mu_
};

}  // namespace converge::reconciler
