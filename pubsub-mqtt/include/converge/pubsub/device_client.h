// The device side: a small MQTT 5 client (Eclipse Paho C++, which stays out of this header) that
// speaks the protocol in protocol.h / docs/devices.md.
//
//   converge::pubsub::DeviceOptions o;
//   o.url = "tcp://127.0.0.1:1883";  o.device_id = "d1";  o.password = "...";
//   converge::pubsub::DeviceClient dev(o);
//   dev.OnCommand([](const Command& c) { return CommandResult::Applied("done"); });
//   dev.OnDesired([](const DesiredState& d) -> Result<std::string> { return d.json; });
//   CONVERGE_RETURN_IF_ERROR(dev.Start());   // connects now and again after every loss
//   ...
//   dev.Stop();                               // "offline" presence, clean disconnect
//
// What it does on every connection: a new connection counter (greater than every earlier one,
// also across restarts: max(last + 1, Unix milliseconds), kept in `state_file` when set), a
// retained last will "offline" with that counter on devices/{id}/presence, subscriptions to its
// commands and desired state (again on every connect), then a retained "online" presence.
//   Commands: refused silently once expired; deduplicated by command id (the last
//   `dedupe_capacity` ids and their outcomes are remembered; a duplicate is acknowledged again
//   with the remembered outcome and not run); otherwise ack `received`, run the handler, ack
//   `applied` or `rejected` to the response topic with the correlation data.
//   Desired state: applied when its version is above the applied one (older ones are ignored;
//   the same one is reported again, so a lost report is repaired); reported with a new
//   reported version and the applied desired version.
// Messages are processed on the client's own worker thread, never on Paho's callback thread
// (which every Paho client of the process shares).
//
// Thread safety: all public methods may be called from any thread. Handlers run on the worker
// thread, one at a time.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "converge/common/status.h"

namespace converge::pubsub {

struct DeviceTlsOptions {
  std::string ca_file;       // PEM trust store for the broker certificate (ssl:// URLs)
  std::string cert_file;     // client certificate (mutual TLS), optional
  std::string key_file;      // client private key, optional
  std::string key_password;  // secret: never logged
  bool verify_hostname = true;
};

struct DeviceOptions {
  // tcp://host:port or ssl://host:port (mqtt:// and mqtts:// too). Required.
  std::string url;
  // The device id (protocol.h ValidateDeviceId); also the MQTT client id. Required.
  std::string device_id;
  // MQTT username; empty = the device id (what the ACL patterns with %u expect).
  std::string username;
  std::string password;  // secret: never logged
  DeviceTlsOptions tls;
  std::chrono::seconds keep_alive{30};
  std::chrono::milliseconds connect_timeout{5000};
  // Reconnect delays after a lost or failed connection (doubling from min to max).
  std::chrono::milliseconds reconnect_min{200};
  std::chrono::milliseconds reconnect_max{5000};
  // Persistent session (clean start = false + Session Expiry, mqtt.md §2.3): the broker keeps
  // the subscriptions and queues QoS 1 commands while the device is away, for `session_expiry`.
  // false: clean start; only the retained desired state and the server's re-sends reach it.
  bool persistent_session = true;
  std::chrono::seconds session_expiry{3600};
  // Small state file (connection counter, reported version, applied desired version); empty:
  // in memory, with counters derived from the clock.
  std::string state_file;
  // How many command ids are remembered for deduplication.
  size_t dedupe_capacity = 1024;
  // How long a publish (ack, report, presence) waits for its PUBACK.
  std::chrono::milliseconds publish_timeout{5000};

  Status Validate() const;  // names the bad field: "device.url must start with tcp://, ..."
};

struct Command {
  std::string id;  // the command id (= message id = correlation data)
  std::string name;
  std::string payload;
  std::string content_type;
  std::chrono::system_clock::time_point expires_at{};  // epoch when unknown
};

struct CommandResult {
  bool applied = true;
  std::string detail;  // result or rejection reason (at most 1024 bytes are sent)
  static CommandResult Applied(std::string detail = "") { return {true, std::move(detail)}; }
  static CommandResult Rejected(std::string reason) { return {false, std::move(reason)}; }
};

struct DesiredState {
  int64_t version = 0;
  std::string json;
};

// Returns the state to report (a JSON document; usually the applied desired state), or an
// error: then nothing is applied or reported, and the server re-sends later.
using DesiredHandler = std::function<Result<std::string>(const DesiredState&)>;
using CommandHandler = std::function<CommandResult(const Command&)>;

struct DeviceStats {
  uint64_t connects = 0;  // successful connections
  uint64_t connect_failures = 0;
  uint64_t commands_run = 0;  // handler calls
  uint64_t commands_applied = 0;
  uint64_t commands_rejected = 0;
  uint64_t duplicate_commands = 0;  // deduplicated (not run again)
  uint64_t expired_commands = 0;    // arrived after their expiry (not run)
  uint64_t desired_applied = 0;
  uint64_t desired_ignored = 0;  // older than the applied version
  uint64_t reports = 0;          // reported-state messages published
  uint64_t publish_failures = 0;
  int64_t connection = 0;  // current connection counter
  int64_t applied_desired_version = 0;
  bool connected = false;
};

// How Disconnect() leaves.
enum class OfflineMode {
  // Publishes the retained "offline" presence, then disconnects normally (no will).
  kGraceful,
  // Disconnects with reason 0x04 (disconnect with will message): the broker publishes the last
  // will, as it would after a lost connection. For tests and the simulator.
  kWill,
};

class DeviceClient {
 public:
  explicit DeviceClient(DeviceOptions options);
  ~DeviceClient();  // Stop(OfflineMode::kGraceful)
  DeviceClient(const DeviceClient&) = delete;
  DeviceClient& operator=(const DeviceClient&) = delete;

  // Before Start().
  void OnCommand(CommandHandler handler);
  void OnDesired(DesiredHandler handler);  // default: report the desired JSON as applied

  // Validates the options, starts the worker and connects; returns once connected or after
  // connect_timeout (then kUnavailable, and the worker keeps trying in the background).
  Status Start();
  // Goes offline (see OfflineMode) and stops the worker. Idempotent.
  void Stop(OfflineMode mode = OfflineMode::kGraceful);
  // Goes offline but keeps the client: Reconnect() connects again with a new counter.
  void GoOffline(OfflineMode mode);
  Status Reconnect();
  // Waits until connected (and subscribed, and online presence published).
  bool WaitConnected(std::chrono::milliseconds timeout) const;

  // Publishes telemetry (QoS 1) on devices/{id}/telemetry as a kTelemetryType event.
  Status PublishTelemetry(const std::string& json);

  DeviceStats stats() const;
  const std::string& device_id() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace converge::pubsub
