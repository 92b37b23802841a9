// MosquittoBroker: a private mosquitto 2.0 child process for tests, on a free 127.0.0.1 port,
// with its own config, password file, ACL file, persistence directory and log in a temporary
// directory. Tests may kill -9 it, stop it, pause it and start it again on the same port with
// the same persistence (never the shared broker from scripts/services.sh).
//
//   converge::testing::MosquittoBroker broker({.users = {{"relay", "relay-pw"}},
//                                              .acl = "user relay\ntopic write dev/#\n"});
//   ASSERT_TRUE(broker.Start()) << broker.error();
//   options.url = broker.url();
//   broker.Kill();                      // SIGKILL
//   ASSERT_TRUE(broker.Start());        // same port, same persistence
//
// Thread safety: one thread.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <utility>
#include <vector>

namespace converge::testing {

struct MosquittoConfig {
  // username → password. Empty: allow_anonymous true (no password file).
  std::vector<std::pair<std::string, std::string>> users;
  // acl_file contents ("user relay\ntopic write dev/#\n..."); empty: no ACL file.
  std::string acl;
  bool persistence = true;
  // TLS listener instead of plain TCP: a CA and a server certificate for 127.0.0.1 (IP SAN) are
  // generated with the openssl CLI; url() is then ssl://127.0.0.1:<port>, ca_file() the CA, and
  // other_ca_file() a second CA that did not sign the server certificate.
  bool tls = false;
  // A second listener, with TLS, beside the plain one (tls_url(); same CA files as above).
  bool tls_listener = false;
  // Extra mosquitto.conf lines (e.g. "max_inflight_messages 1").
  std::string extra;
};

class MosquittoBroker {
 public:
  explicit MosquittoBroker(MosquittoConfig config = {});
  ~MosquittoBroker();  // SIGKILLs the child and removes the directory
  MosquittoBroker(const MosquittoBroker&) = delete;
  MosquittoBroker& operator=(const MosquittoBroker&) = delete;

  // Starts mosquitto (first call: picks a port and writes the files; later calls reuse them)
  // and waits until it accepts TCP connections (5 s). False with error() on failure.
  bool Start();
  // SIGKILL (a crash: nothing saved since the last autosave) and reap.
  void Kill();
  // SIGTERM (persistence saved) and reap.
  void Stop();
  bool Signal(int sig);
  bool running() const { return pid_ > 0; }

  int port() const { return port_; }
  std::string url() const {
    return (config_.tls ? "ssl://127.0.0.1:" : "tcp://127.0.0.1:") + std::to_string(port_);
  }
  // The TLS listener: url() when `tls`, the second listener when `tls_listener`.
  std::string tls_url() const {
    return "ssl://127.0.0.1:" + std::to_string(config_.tls ? port_ : tls_port_);
  }
  std::string ca_file() const { return dir_ + "/ca.crt"; }
  std::string other_ca_file() const { return dir_ + "/other-ca.crt"; }
  const std::string& dir() const { return dir_; }
  // Publishes one MQTT 5 message with the mosquitto_pub CLI, in a separate process (so it does
  // not share Paho's process-wide threads with the code under test). True on success.
  bool Publish(const std::string& username, const std::string& password, const std::string& topic,
               const std::string& payload,
               const std::vector<std::pair<std::string, std::string>>& user_properties = {},
               const std::string& content_type = "", int qos = 1) const;
  // The broker log (log_type all): "Denied PUBLISH", "Received PUBACK" ... lines.
  std::string ReadLog() const;
  const std::string& error() const { return error_; }

 private:
  bool WriteFiles();
  bool MakeCertificates();
  void Reap(std::chrono::milliseconds timeout);

  MosquittoConfig config_;
  std::string dir_;
  int port_ = 0;
  int tls_port_ = 0;
  pid_t pid_ = -1;
  std::string error_;
};

}  // namespace converge::testing
