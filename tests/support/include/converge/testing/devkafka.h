// PrivateKafka: a converge-devkafka child process (librdkafka's mock cluster) that belongs to one
// test, with its own control port, so the test can inject broker faults (broker-down, rtt,
// produce-errors, request-errors) without touching the shared devkafka of scripts/services.sh.
//
//   converge::testing::PrivateKafka kafka;
//   ASSERT_TRUE(kafka.Start()) << kafka.error();
//   kafka.Control("broker-down -1");            // "ok"
//   kafka.bootstrap_servers();                  // "127.0.0.1:41234"
//
// The binary is <BinDir()>/converge-devkafka. Records live in memory: they die with the child.
//
// Thread safety: Control() may be called from any thread (one connection per call).
#pragma once

#include <string>
#include <vector>

#include "converge/testing/process.h"

namespace converge::testing {

class PrivateKafka {
 public:
  PrivateKafka() = default;
  ~PrivateKafka();  // SIGTERM, then SIGKILL after 10 s
  PrivateKafka(const PrivateKafka&) = delete;
  PrivateKafka& operator=(const PrivateKafka&) = delete;

  // Starts converge-devkafka with `extra_args` (e.g. {"--topic", "orders:4"}); waits for the
  // bootstrap list and a control-port `ping`. False and error() on failure.
  bool Start(const std::vector<std::string>& extra_args = {});
  // Sends one control command; returns the reply line ("ok", "ok <value>", "error <why>"), or
  // "error <why>" when the control port cannot be reached.
  std::string Control(const std::string& command) const;

  const std::string& bootstrap_servers() const { return bootstrap_; }
  int control_port() const { return control_port_; }
  const std::string& error() const { return error_; }
  const std::string& log_path() const { return log_path_; }

 private:
  ChildProcess child_;
  std::string dir_;
  std::string bootstrap_;
  std::string log_path_;
  std::string error_;
  int control_port_ = 0;
};

}  // namespace converge::testing
