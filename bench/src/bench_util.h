// Small helpers shared by the benchmark programs: timing, percentiles, a fresh migrated
// database, child processes and /proc readings. Not a library for product code.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <pqxx/pqxx>

namespace converge::bench {

using Clock = std::chrono::steady_clock;

inline double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// The p-th percentile (0..100) of `values` (sorted in place), nearest rank; 0 when empty.
double Percentile(std::vector<double>& values, double p);

// Thrown for any condition that ends the run (bad input, a service missing, a timeout).
struct BenchError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A database created on the server named by `admin_url` for this run, migrated to the newest
// Converge schema, and dropped when the object dies.
class BenchDatabase {
 public:
  explicit BenchDatabase(const std::string& admin_url);
  ~BenchDatabase();
  BenchDatabase(const BenchDatabase&) = delete;
  BenchDatabase& operator=(const BenchDatabase&) = delete;

  const std::string& url() const { return url_; }
  std::unique_ptr<pqxx::connection> Connect() const;
  // Runs `sql` outside a transaction block (autocommit).
  void Exec(const std::string& sql) const;
  long long Count(const std::string& sql) const;

 private:
  std::string admin_url_, name_, url_;
};

// Inserts `rows` outbox rows for `topic` in one transaction (plain INSERT ... SELECT, the
// shape converge.enqueue writes: `keys` distinct keys round-robin, seq per key, ~130-byte JSON
// payload; keys are `key_prefix` followed by a number) and notifies the relays on commit.
void FillOutbox(pqxx::connection& conn, const std::string& topic, long rows, int keys,
                const std::string& key_prefix = "key-");

// Waits until converge.outbox is empty; false on timeout.
bool WaitOutboxEmpty(pqxx::connection& conn, std::chrono::milliseconds timeout);

// A child process (converge-relay). The destructor sends SIGTERM and reaps it.
class Child {
 public:
  Child(const std::string& path, const std::vector<std::string>& args,
        const std::map<std::string, std::string>& env, const std::string& log_path);
  ~Child();
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  pid_t pid() const { return pid_; }
  bool Running();
  // SIGTERM, wait up to `timeout`, then SIGKILL. Returns the exit status (or -1).
  int Stop(std::chrono::milliseconds timeout);

 private:
  pid_t pid_ = -1;
};

struct ProcMemory {
  double rss_mb = 0;  // VmRSS
  double hwm_mb = 0;  // VmHWM (peak RSS)
};
ProcMemory ReadProcMemory(pid_t pid);
// utime + stime of a process, in seconds.
double ReadProcCpuSeconds(pid_t pid);

// Environment variable or a BenchError naming it.
std::string RequireEnv(const char* name);

}  // namespace converge::bench

namespace converge::bench {
// Sends "create-topic <topic> <partitions>" to converge-devkafka's control port
// (CONVERGE_KAFKA_CONTROL, host:port) so that no measurement pays for topic auto-creation.
void CreateKafkaTopic(const std::string& control, const std::string& topic, int partitions);

// From Prometheus text: the upper bound (`le`, in the metric's unit) of the first bucket of
// histogram `name` holding at least fraction q of its observations; nullopt when absent or empty.
std::optional<double> HistogramQuantileBound(const std::string& metrics, const std::string& name,
                                             double q);
}  // namespace converge::bench
