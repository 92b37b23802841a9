// MetricsServer: the small HTTP endpoint every Converge process runs for operators.
//
//   GET /metrics  200, the registry in Prometheus text format 0.0.4
//   GET /healthz  liveness: 200 "ok" while the liveness probe passes (by default: always, i.e.
//                 while the process answers); 503 with the reason otherwise. Wire it to a
//                 Heartbeat beaten by the main loop so that a wedged loop gets restarted.
//   GET /readyz   readiness: 200 "ok" only when the readiness probe returns OK (database
//                 reachable, broker connected, lease held...), else 503 with the reason.
//   anything else 404; methods other than GET/HEAD 405.
//
// Probe reasons pass through Redact() before they are sent. Probes and metric callbacks run on
// the server's threads: they must be quick, thread-safe and must not block on I/O (read state
// the main loop maintains).
//
// Binds 127.0.0.1 by default: expose it deliberately (host "0.0.0.0") behind the network policy
// you intend. Port 0 picks a free port; port() tells which.
//
// Thread safety: Start/Stop from one owning thread; port() from any thread after Start.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "converge/common/clock.h"
#include "converge/common/status.h"

namespace converge {
namespace metrics {
class Registry;
}

// Returns OK when healthy/ready, else a Status whose message says why.
using Probe = std::function<Status()>;

struct MetricsServerOptions {
  // Interface to bind. 127.0.0.1 keeps metrics off the network unless asked for.
  std::string host = "127.0.0.1";
  // TCP port; 0 = an ephemeral port (see MetricsServer::port()).
  uint16_t port = 9464;
  // Threads serving requests; scrapes and probes are cheap, two is plenty.
  int threads = 2;
  // Connections waiting for a thread beyond which new ones are refused.
  int max_queued = 16;
  // Socket send/receive timeout per request: bounds how long a slow client can hold a thread
  // (and therefore how long Stop() may wait).
  std::chrono::milliseconds io_timeout{5000};
  // Liveness probe for /healthz; null = always OK.
  Probe liveness;
  // Readiness probe for /readyz; null = always OK.
  Probe readiness;
};

class MetricsServer {
 public:
  // `registry` must outlive the server.
  MetricsServer(const metrics::Registry& registry, MetricsServerOptions options);
  ~MetricsServer();  // Stop()s
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Binds and starts serving. Unavailable when the address cannot be bound (in use, no such
  // interface), InvalidArgument for a malformed host, FailedPrecondition if already started.
  Status Start();
  // Stops accepting connections, lets requests in progress finish, joins the threads.
  // Idempotent; the server cannot be restarted.
  void Stop();
  // The bound port (useful with port 0); 0 before Start.
  uint16_t port() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Liveness from a loop's heartbeat: the loop calls Beat() each iteration; Check() fails when no
// beat came for `max_silence` (the loop is stuck). Before the first beat Check() passes, so a
// slow startup is not reported dead (use readiness for "not started yet").
//
//   Heartbeat hb(SystemClock::Instance(), std::chrono::seconds(60));
//   options.liveness = [&hb] { return hb.Check(); };
//
// Thread safety: Beat and Check may be called concurrently (one atomic).
class Heartbeat {
 public:
  Heartbeat(const Clock& clock, std::chrono::nanoseconds max_silence)
      : clock_(clock), max_silence_(max_silence) {}
  void Beat();
  Status Check() const;

 private:
  const Clock& clock_;
  const std::chrono::nanoseconds max_silence_;
  std::atomic<int64_t> last_beat_ns_{-1};  // steady clock, -1 = never
};

}  // namespace converge
