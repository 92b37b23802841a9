// converge-device-sim: many simulated devices in one process (one DeviceClient each), going
// offline and online at random, for the demo, tests and load.
//
//   converge-device-sim --url tcp://127.0.0.1:18830 --devices 20 --prefix sim-
//       --password secret --duration 30 --toggle-probability 0.1 --seed 42
//
// Every second each device goes offline (half of the time with its last will, half gracefully)
// or back online with probability --toggle-probability, and online devices publish telemetry
// every --telemetry-interval seconds (0: never). Commands are applied (a command named "fail"
// is rejected); desired states are reported as applied. Prints a summary line per device and a
// total; exit code 0, 2 for bad arguments, 1 when no device could connect.
// The password may also come from CONVERGE_DEVICE_PASSWORD (so it stays out of `ps`).
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "converge/pubsub/device_client.h"

namespace {

using converge::pubsub::CommandResult;
using converge::pubsub::DeviceClient;
using converge::pubsub::DeviceOptions;
using converge::pubsub::OfflineMode;

volatile std::sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

struct Args {
  std::string url;
  int devices = 10;
  std::string prefix = "sim-";
  std::string password;
  double duration = 10;
  double toggle_probability = 0.1;
  double telemetry_interval = 0;
  uint64_t seed = 0;
  bool clean_session = false;
  std::string state_dir;
};

constexpr char kUsage[] =
    "usage: converge-device-sim --url URL [--devices N] [--prefix P] [--password PW]\n"
    "                           [--duration SECONDS] [--toggle-probability P]\n"
    "                           [--telemetry-interval SECONDS] [--seed N] [--clean-session]\n"
    "                           [--state-dir DIR]\n"
    "\n"
    "Simulated MQTT devices (one DeviceClient each) that apply commands (a command named\n"
    "\"fail\" is rejected), report desired states as applied and go offline and online at\n"
    "random. Prints a summary line per device and a total at the end.\n"
    "\n"
    "  --url URL                  MQTT broker, tcp://host:port or ssl://host:port (required)\n"
    "  --devices N                devices, 1..10000 (default 10)\n"
    "  --prefix P                 device ids are P0, P1, ... (default sim-)\n"
    "  --password PW              MQTT password of every device (default\n"
    "                             $CONVERGE_DEVICE_PASSWORD, which keeps it out of ps)\n"
    "  --duration SECONDS         run time, > 0 (default 10)\n"
    "  --toggle-probability P     chance per device per second of going offline (half with\n"
    "                             the last will, half gracefully) or back online (default 0.1)\n"
    "  --telemetry-interval S     telemetry period of online devices, 0 = none (default 0)\n"
    "  --seed N                   random seed, printed at start (default random)\n"
    "  --clean-session            clean MQTT sessions (default persistent, 1 h expiry: QoS 1\n"
    "                             commands wait in the broker while a device is offline)\n"
    "  --state-dir DIR            keep each device's state (connection counter, reported and\n"
    "                             applied desired versions) in DIR/<id>.state across restarts\n"
    "\n"
    "Exit codes: 0 ok, 1 no device could connect, 2 bad arguments.\n";

int Usage(const std::string& error) {
  std::cerr << "converge-device-sim: " << error << "\n" << kUsage;
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  if (const char* pw = std::getenv("CONVERGE_DEVICE_PASSWORD")) a.password = pw;
  a.seed = std::random_device{}();
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (k == "--help" || k == "-h") {
      std::cout << kUsage;
      return 0;
    }
    try {
      if (k == "--clean-session") {
        a.clean_session = true;
        continue;
      }
      const char* v = value();
      if (!v) return Usage(k + " needs a value");
      if (k == "--url")
        a.url = v;
      else if (k == "--devices")
        a.devices = std::stoi(v);
      else if (k == "--prefix")
        a.prefix = v;
      else if (k == "--password")
        a.password = v;
      else if (k == "--duration")
        a.duration = std::stod(v);
      else if (k == "--toggle-probability")
        a.toggle_probability = std::stod(v);
      else if (k == "--telemetry-interval")
        a.telemetry_interval = std::stod(v);
      else if (k == "--seed")
        a.seed = std::stoull(v);
      else if (k == "--state-dir")
        a.state_dir = v;
      else
        return Usage("unknown option " + k);
    } catch (const std::exception&) {
      return Usage("bad value for " + k);
    }
  }
  if (a.url.empty()) return Usage("--url is required");
  if (a.devices < 1 || a.devices > 10000) return Usage("--devices must be in [1, 10000]");
  if (a.toggle_probability < 0 || a.toggle_probability > 1)
    return Usage("--toggle-probability must be in [0, 1]");
  if (a.duration <= 0) return Usage("--duration must be > 0");
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  std::cout << "seed " << a.seed << "\n" << std::flush;
  std::mt19937_64 rng(a.seed);

  std::vector<std::unique_ptr<DeviceClient>> devs;
  std::vector<bool> online;
  int connected = 0;
  for (int i = 0; i < a.devices; ++i) {
    DeviceOptions o;
    o.url = a.url;
    o.device_id = a.prefix + std::to_string(i);
    o.password = a.password;
    o.persistent_session = !a.clean_session;
    if (!a.state_dir.empty()) o.state_file = a.state_dir + "/" + o.device_id + ".state";
    if (auto st = o.Validate(); !st.ok()) return Usage(st.message());
    auto d = std::make_unique<DeviceClient>(o);
    d->OnCommand([](const converge::pubsub::Command& c) {
      return c.name == "fail" ? CommandResult::Rejected("simulated failure")
                              : CommandResult::Applied("ok");
    });
    auto st = d->Start();
    if (st.ok())
      ++connected;
    else
      std::cerr << o.device_id << ": " << st.message() << "\n";
    online.push_back(true);
    devs.push_back(std::move(d));
  }
  if (connected == 0) {
    std::cerr << "converge-device-sim: no device could connect\n";
    return 1;
  }
  std::bernoulli_distribution toggle(a.toggle_probability), with_will(0.5);
  uint64_t offline_events = 0, online_events = 0;
  const auto start = std::chrono::steady_clock::now();
  auto next_telemetry = start;
  while (!g_stop &&
         std::chrono::steady_clock::now() - start < std::chrono::duration<double>(a.duration)) {
    // Decisions once per second; the stop flag is checked every 100 ms.
    for (int k = 0; k < 10 && !g_stop; ++k)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (g_stop) break;
    for (size_t i = 0; i < devs.size(); ++i) {
      if (!toggle(rng)) continue;
      if (online[i]) {
        devs[i]->GoOffline(with_will(rng) ? OfflineMode::kWill : OfflineMode::kGraceful);
        online[i] = false;
        ++offline_events;
      } else {
        (void)devs[i]->Reconnect();
        online[i] = true;
        ++online_events;
      }
    }
    if (a.telemetry_interval > 0 && std::chrono::steady_clock::now() >= next_telemetry) {
      next_telemetry += std::chrono::duration_cast<std::chrono::steady_clock::duration>(
          std::chrono::duration<double>(a.telemetry_interval));
      for (size_t i = 0; i < devs.size(); ++i)
        if (online[i])
          (void)devs[i]->PublishTelemetry("{\"t\":" + std::to_string(rng() % 100) + "}");
    }
  }
  // Everyone back online at the end, so the server can converge them.
  for (size_t i = 0; i < devs.size(); ++i)
    if (!online[i]) (void)devs[i]->Reconnect();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));

  uint64_t applied = 0, rejected = 0, dups = 0, expired = 0, desired = 0, connects = 0;
  for (auto& d : devs) {
    auto s = d->stats();
    std::cout << "device " << d->device_id() << " connected=" << s.connected
              << " connects=" << s.connects << " commands_applied=" << s.commands_applied
              << " commands_rejected=" << s.commands_rejected
              << " duplicates=" << s.duplicate_commands << " expired=" << s.expired_commands
              << " desired_version=" << s.applied_desired_version << "\n";
    applied += s.commands_applied;
    rejected += s.commands_rejected;
    dups += s.duplicate_commands;
    expired += s.expired_commands;
    desired += s.desired_applied;
    connects += s.connects;
  }
  std::cout << "summary devices=" << devs.size() << " connects=" << connects
            << " offline_events=" << offline_events << " online_events=" << online_events
            << " commands_applied=" << applied << " commands_rejected=" << rejected
            << " duplicates=" << dups << " expired=" << expired << " desired_applied=" << desired
            << "\n"
            << std::flush;
  for (auto& d : devs) d->Stop();
  return 0;
}
