#include "bench_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "converge/schemas/migrate.h"

extern char** environ;

namespace converge::bench {

double Percentile(std::vector<double>& values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double rank = std::ceil(p / 100.0 * static_cast<double>(values.size()));
  const size_t index = rank < 1 ? 0 : static_cast<size_t>(rank) - 1;
  return values[std::min(index, values.size() - 1)];
}

std::string RequireEnv(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0')
    throw BenchError(
        std::string(name) +
        " is not set; start the services first: eval \"$(scripts/services.sh start)\"");
  return v;
}

namespace {

// `url` (postgresql://user@host:port/db?params) with its database name replaced.
std::string WithDatabase(const std::string& url, const std::string& db) {
  const auto scheme = url.find("://");
  if (scheme == std::string::npos)
    throw BenchError("CONVERGE_PG_URL must be a postgresql:// URL, got a keyword string");
  const auto slash = url.find('/', scheme + 3);
  const auto query = url.find('?', scheme + 3);
  std::string out = url.substr(0, std::min(slash, query)) + "/" + db;
  if (query != std::string::npos) out += url.substr(query);
  return out;
}

}  // namespace

BenchDatabase::BenchDatabase(const std::string& admin_url) : admin_url_(admin_url) {
  name_ = "converge_bench_" + std::to_string(::getpid());
  url_ = WithDatabase(admin_url, name_);
  {
    pqxx::connection admin(admin_url_);
    pqxx::nontransaction nt(admin);
    nt.exec0("DROP DATABASE IF EXISTS " + nt.quote_name(name_));
    nt.exec0("CREATE DATABASE " + nt.quote_name(name_));
  }
  schemas::MigrateOptions mo;
  mo.actor = "converge-bench";
  auto report = schemas::Migrate(url_, mo);
  if (!report.ok()) throw BenchError("migrating the bench database: " + report.status().ToString());
}

BenchDatabase::~BenchDatabase() {
  try {
    pqxx::connection admin(admin_url_);
    pqxx::nontransaction nt(admin);
    nt.exec_params("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                   name_);
    nt.exec0("DROP DATABASE IF EXISTS " + nt.quote_name(name_));
  } catch (const std::exception&) {
    // Best effort: a leftover converge_bench_<pid> database is dropped by the next run's name
    // only if the pid repeats; it holds no data worth keeping.
  }
}

std::unique_ptr<pqxx::connection> BenchDatabase::Connect() const {
  return std::make_unique<pqxx::connection>(url_);
}

void BenchDatabase::Exec(const std::string& sql) const {
  pqxx::connection c(url_);
  pqxx::nontransaction tx(c);  // autocommit: VACUUM cannot run in a transaction block
  tx.exec(sql);
}

long long BenchDatabase::Count(const std::string& sql) const {
  pqxx::connection c(url_);
  pqxx::read_transaction tx(c);
  return tx.exec1(sql)[0].as<long long>();
}

void FillOutbox(pqxx::connection& conn, const std::string& topic, long rows, int keys,
                const std::string& key_prefix) {
  pqxx::work tx(conn);
  tx.exec_params0(
      "INSERT INTO converge.outbox (message_id, topic, key, seq, slot, type, source, payload) "
      "SELECT converge.uuid_v7(), $1, $4 || (i % $3), i / $3 + 1, "
      "       converge.key_slot($4 || (i % $3)), 'bench.event', '/bench', "
      "       convert_to('{\"n\":' || i || ',\"pad\":\"' || repeat('x', 100) || '\"}', 'UTF8') "
      "  FROM generate_series(0, $2 - 1) AS i",
      topic, rows, keys, key_prefix);
  tx.exec("SELECT pg_notify('converge_outbox', '')");
  tx.commit();
}

bool WaitOutboxEmpty(pqxx::connection& conn, std::chrono::milliseconds timeout) {
  const auto end = Clock::now() + timeout;
  while (Clock::now() < end) {
    pqxx::read_transaction tx(conn);
    if (tx.exec("SELECT 1 FROM converge.outbox ORDER BY id LIMIT 1").empty()) return true;
    tx.commit();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

Child::Child(const std::string& path, const std::vector<std::string>& args,
             const std::map<std::string, std::string>& env, const std::string& log_path) {
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string kv = *e;
    const std::string key = kv.substr(0, kv.find('='));
    if (!env.count(key)) env_strings.push_back(kv);
  }
  for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
  std::vector<char*> argv{const_cast<char*>(path.c_str())};
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);

  pid_ = ::fork();
  if (pid_ < 0) throw BenchError("fork failed");
  if (pid_ == 0) {
    const int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::close(fd);
    }
    ::execve(path.c_str(), argv.data(), envp.data());
    ::_exit(127);
  }
}

Child::~Child() { Stop(std::chrono::seconds(10)); }

bool Child::Running() {
  if (pid_ <= 0) return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) {
    pid_ = -1;
    return false;
  }
  return true;
}

int Child::Stop(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  const auto end = Clock::now() + timeout;
  int status = 0;
  while (Clock::now() < end) {
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
  return -1;
}

ProcMemory ReadProcMemory(pid_t pid) {
  ProcMemory m;
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string key;
    double kb = 0;
    fields >> key >> kb;
    if (key == "VmRSS:") m.rss_mb = kb / 1024.0;
    if (key == "VmHWM:") m.hwm_mb = kb / 1024.0;
  }
  return m;
}

double ReadProcCpuSeconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto paren = text.rfind(')');
  if (paren == std::string::npos) throw BenchError("cannot read /proc/" + std::to_string(pid));
  std::istringstream fields(text.substr(paren + 2));
  // Fields after the command: state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt
  // cmajflt utime(14) stime(15).
  std::string skip;
  for (int i = 3; i <= 13; ++i) fields >> skip;
  double utime = 0, stime = 0;
  fields >> utime >> stime;
  return (utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

void CreateKafkaTopic(const std::string& control, const std::string& topic, int partitions) {
  const auto colon = control.rfind(':');
  if (colon == std::string::npos) throw BenchError("CONVERGE_KAFKA_CONTROL must be host:port");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(std::stoi(control.substr(colon + 1))));
  if (::inet_pton(AF_INET, control.substr(0, colon).c_str(), &addr.sin_addr) != 1)
    throw BenchError("CONVERGE_KAFKA_CONTROL must be an IPv4 host:port, got " + control);
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    if (fd >= 0) ::close(fd);
    throw BenchError("converge-devkafka control port " + control + " is not reachable");
  }
  const std::string cmd = "create-topic " + topic + " " + std::to_string(partitions) + "\n";
  std::string reply;
  if (::write(fd, cmd.data(), cmd.size()) == static_cast<ssize_t>(cmd.size())) {
    char c;
    while (::read(fd, &c, 1) == 1 && c != '\n') reply.push_back(c);
  }
  ::close(fd);
  if (reply.rfind("ok", 0) != 0)
    throw BenchError("devkafka create-topic " + topic + ": " +
                     (reply.empty() ? "no reply" : reply));
}

std::optional<double> HistogramQuantileBound(const std::string& metrics, const std::string& name,
                                             double q) {
  std::vector<std::pair<double, double>> buckets;  // (le, cumulative count)
  std::istringstream in(metrics);
  const std::string prefix = name + "_bucket{";
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(prefix, 0) != 0) continue;
    const auto le = line.find("le=\"");
    const auto close = line.find("\"}", le);
    if (le == std::string::npos || close == std::string::npos) continue;
    const std::string bound = line.substr(le + 4, close - le - 4);
    const double count = std::stod(line.substr(close + 2));
    buckets.emplace_back(bound == "+Inf" ? HUGE_VAL : std::stod(bound), count);
  }
  if (buckets.empty() || buckets.back().second <= 0) return std::nullopt;
  const double want = q * buckets.back().second;
  for (const auto& [le, count] : buckets)
    if (count >= want) return le;
  return std::nullopt;
}

}  // namespace converge::bench
