#include "converge/testing/pg_cluster.h"

#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include <pqxx/pqxx>

#include "converge/schemas/migrate.h"
#include "converge/testing/process.h"

namespace converge::testing {

using std::chrono::milliseconds;

int FreeLoopbackPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  int port = 0;
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
    port = ntohs(addr.sin_port);
  ::close(fd);
  return port;
}

PrivatePostgres::~PrivatePostgres() {
  if (running_) StopImmediate();
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

bool PrivatePostgres::RunAsPostgres(const std::vector<std::string>& argv, int timeout_s) {
  std::vector<std::string> args;
  std::string path = argv.front();
  if (::getuid() == 0) {
    // The server refuses to run as root: run every PostgreSQL binary as `postgres`.
    args = {"-u", "postgres", "--"};
    args.insert(args.end(), argv.begin(), argv.end());
    path = "/usr/sbin/runuser";
  } else {
    args.assign(argv.begin() + 1, argv.end());
  }
  ChildProcess p;
  if (!p.Start(path, args, {}, dir_ + "/commands.log")) {
    error_ = "cannot start " + argv.front();
    return false;
  }
  const int rc = p.Wait(std::chrono::seconds(timeout_s));
  if (rc != 0) {
    error_ = argv.front() + " " + (argv.size() > 1 ? argv[1] : "") + " failed (exit " +
             std::to_string(rc) + "), see " + dir_ + "/commands.log and " + dir_ + "/server.log";
    return false;
  }
  return true;
}

bool PrivatePostgres::Start() {
  const char* bin = std::getenv("CONVERGE_PG_BIN");
  bin_ = bin != nullptr && *bin != '\0' ? bin : "/usr/lib/postgresql/15/bin";
  char tmpl[] = "/tmp/converge-pg-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    error_ = "mkdtemp failed";
    return false;
  }
  dir_ = tmpl;
  std::filesystem::create_directories(dir_ + "/run");
  if (::getuid() == 0) {
    const passwd* pw = ::getpwnam("postgres");
    if (pw == nullptr) {
      error_ = "running as root but there is no `postgres` user to run the server";
      return false;
    }
    for (const auto& p : {dir_, dir_ + "/run"})
      if (::chown(p.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
        error_ = "chown " + p + " failed";
        return false;
      }
  }
  if (!RunAsPostgres({bin_ + "/initdb", "-D", dir_ + "/data", "-U", "converge", "--auth=trust",
                      "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"},
                     120))
    return false;
  port_ = FreeLoopbackPort();
  if (port_ == 0) {
    error_ = "no free loopback port";
    return false;
  }
  {
    std::ofstream conf(dir_ + "/data/postgresql.conf", std::ios::app);
    conf << "\n# converge::testing::PrivatePostgres\n"
         << "listen_addresses = '127.0.0.1'\n"
         << "port = " << port_ << "\n"
         << "unix_socket_directories = '" << dir_
         << "/run'\n"
         // A process crash (-m immediate) does not lose page-cache writes: fsync adds nothing
         // here but time. Commits stay synchronous.
         << "fsync = off\n"
         << "max_connections = 60\n"
         << "shared_buffers = 32MB\n"
         << "max_wal_size = 512MB\n"
         << "log_min_messages = warning\n";
  }
  return StartAgain();
}

bool PrivatePostgres::StartAgain() {
  if (!RunAsPostgres({bin_ + "/pg_ctl", "-D", dir_ + "/data", "-l", dir_ + "/server.log", "-w",
                      "-t", "120", "start"},
                     130))
    return false;
  running_ = true;
  return WaitReady(milliseconds(30000));
}

bool PrivatePostgres::StopImmediate() {
  running_ = false;
  return RunAsPostgres(
      {bin_ + "/pg_ctl", "-D", dir_ + "/data", "-m", "immediate", "-w", "-t", "60", "stop"}, 70);
}

bool PrivatePostgres::StopFast() {
  running_ = false;
  return RunAsPostgres(
      {bin_ + "/pg_ctl", "-D", dir_ + "/data", "-m", "fast", "-w", "-t", "60", "stop"}, 70);
}

bool PrivatePostgres::RestartImmediate(milliseconds* downtime) {
  const auto start = std::chrono::steady_clock::now();
  const bool ok = StopImmediate() && StartAgain();
  if (downtime != nullptr)
    *downtime = std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - start);
  return ok;
}

bool PrivatePostgres::WaitReady(milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (true) {
    try {
      pqxx::connection c(url());
      return true;
    } catch (const std::exception& e) {
      if (std::chrono::steady_clock::now() > until) {
        error_ = std::string("server not ready: ") + e.what();
        return false;
      }
    }
    std::this_thread::sleep_for(milliseconds(100));
  }
}

std::string PrivatePostgres::url() const { return url("postgres"); }

std::string PrivatePostgres::url(const std::string& name) const {
  return "postgresql://converge@127.0.0.1:" + std::to_string(port_) + "/" + name;
}

std::string PrivatePostgres::CreateDatabase(const std::string& name, bool migrate) {
  try {
    pqxx::connection admin(url());
    pqxx::nontransaction(admin).exec("CREATE DATABASE " + admin.quote_name(name));
  } catch (const std::exception& e) {
    error_ = std::string("CREATE DATABASE failed: ") + e.what();
    return "";
  }
  if (migrate) {
    auto r = schemas::Migrate(url(name));
    if (!r.ok()) {
      error_ = "migrate failed: " + r.status().ToString();
      return "";
    }
  }
  return url(name);
}

int PrivatePostgres::TerminateSessions(const std::string& name) {
  try {
    pqxx::connection admin(url());
    pqxx::nontransaction tx(admin);
    auto r = tx.exec_params(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = $1 AND pid <> pg_backend_pid()",
        name);
    return r[0][0].as<int>();
  } catch (const std::exception& e) {
    error_ = std::string("terminate sessions failed: ") + e.what();
    return -1;
  }
}

}  // namespace converge::testing
