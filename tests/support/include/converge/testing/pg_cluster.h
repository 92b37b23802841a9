// PrivatePostgres: a throwaway PostgreSQL 15 cluster for tests that fault the database itself
// (immediate restarts, terminated sessions). It never touches the shared server from
// scripts/services.sh: initdb runs into a fresh temporary directory (as the `postgres` user via
// runuser when the test runs as root, because the server refuses to run as root), the server
// listens on 127.0.0.1 on a free port with its own unix socket directory, and the destructor
// stops it (-m immediate) and deletes the directory.
//
//   converge::testing::PrivatePostgres pg;
//   ASSERT_TRUE(pg.Start()) << pg.error();
//   std::string url = pg.CreateDatabase("app");   // migrated to the newest converge schema
//   pg.RestartImmediate();                         // crash + recovery, same port
//
// Binaries come from CONVERGE_PG_BIN, default /usr/lib/postgresql/15/bin.
//
// Thread safety: one thread drives the fixture; url() may be read from any thread.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace converge::testing {

class PrivatePostgres {
 public:
  PrivatePostgres() = default;
  ~PrivatePostgres();  // stops the server (-m immediate) and removes the directory
  PrivatePostgres(const PrivatePostgres&) = delete;
  PrivatePostgres& operator=(const PrivatePostgres&) = delete;

  // initdb + start. False (and error() says why) when a step fails.
  bool Start();
  // Stops with `pg_ctl stop -m immediate` (no shutdown checkpoint: crash recovery on the next
  // start) or `-m fast`.
  bool StopImmediate();
  bool StopFast();
  // Starts a stopped cluster again on the same port and waits until it accepts connections.
  bool StartAgain();
  // StopImmediate() + StartAgain(); the wall time the server was unavailable is returned in
  // `downtime` when given.
  bool RestartImmediate(std::chrono::milliseconds* downtime = nullptr);

  // Creates `name` and migrates it; returns its URL ("" and error() on failure).
  std::string CreateDatabase(const std::string& name, bool migrate = true);
  // pg_terminate_backend() for every other session of database `name`; returns how many.
  int TerminateSessions(const std::string& name);

  // postgresql://converge@127.0.0.1:<port>/postgres (superuser "converge", trust auth).
  std::string url() const;
  // The URL of database `name` on this cluster.
  std::string url(const std::string& name) const;
  int port() const { return port_; }
  const std::string& dir() const { return dir_; }
  const std::string& error() const { return error_; }

 private:
  bool RunAsPostgres(const std::vector<std::string>& argv, int timeout_s);
  bool WaitReady(std::chrono::milliseconds timeout);

  std::string bin_;
  std::string dir_;
  std::string error_;
  int port_ = 0;
  bool running_ = false;
};

// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read, close).
int FreeLoopbackPort();

}  // namespace converge::testing
