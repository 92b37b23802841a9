// PrivateMosquitto: a mosquitto 2.0 child process for one test, on a free 127.0.0.1 port, with
// auth on (allow_anonymous false, a password file made with mosquitto_passwd, an ACL file), its
// own persistence directory and log, all in a temporary directory that is removed afterwards.
// Never the shared broker of scripts/services.sh: tests may kill and restart this one.
//
//   PrivateMosquitto broker({.users = {{"relay", "pw"}, {"d1", "d1-pw"}},
//                            .acl = DeviceAcl("relay", "ingest")});
//   ASSERT_TRUE(broker.Start()) << broker.error();
//
// Thread safety: one thread.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <utility>
#include <vector>

namespace converge::pubsub::testing {

struct PrivateMosquittoConfig {
  // username -> password; at least one (anonymous access is always off).
  std::vector<std::pair<std::string, std::string>> users;
  std::string acl;  // acl_file contents
  bool persistence = true;
  std::string extra;  // more mosquitto.conf lines
  // Also a TLS listener on a second loopback port, with a CA and a server certificate for
  // 127.0.0.1 made by the openssl CLI (ca_file(), tls_url()); other_ca_file() is an unrelated CA.
  bool tls = false;
};

// The ACL of pubsub-mqtt/examples/acl.example for a server user that publishes to devices
// (the relay) and one that ingests from them; devices get their own topics through %u patterns.
std::string DeviceAcl(const std::string& relay_user, const std::string& ingest_user);

class PrivateMosquitto {
 public:
  explicit PrivateMosquitto(PrivateMosquittoConfig config);
  ~PrivateMosquitto();  // SIGKILL, reap, remove the directory
  PrivateMosquitto(const PrivateMosquitto&) = delete;
  PrivateMosquitto& operator=(const PrivateMosquitto&) = delete;

  // Starts (the first call writes the files; later calls reuse port and data) and waits until it
  // accepts connections (5 s). False with error() on failure.
  bool Start();
  void Kill();  // SIGKILL and reap
  std::string url() const { return "tcp://127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }
  std::string tls_url() const { return "ssl://127.0.0.1:" + std::to_string(tls_port_); }
  std::string ca_file() const { return dir_ + "/ca.crt"; }
  std::string other_ca_file() const { return dir_ + "/other-ca.crt"; }
  std::string ReadLog() const;
  const std::string& error() const { return error_; }

 private:
  bool WriteFiles();
  bool MakeCertificates();
  PrivateMosquittoConfig config_;
  std::string dir_;
  int port_ = 0;
  int tls_port_ = 0;
  pid_t pid_ = -1;
  std::string error_;
};

}  // namespace converge::pubsub::testing
