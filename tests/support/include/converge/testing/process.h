// Child processes for robustness tests: start an executable with arguments and environment,
// signal it (SIGKILL, SIGSTOP, SIGCONT, SIGTERM), wait for it with a timeout; read its HTTP
// endpoints.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <string>
#include <vector>

namespace converge::testing {

class ChildProcess {
 public:
  ChildProcess() = default;
  ~ChildProcess();  // SIGKILLs and reaps a child that is still running
  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;

  // Starts `path args...` with the current environment plus `env`. stdout and stderr go to
  // `log_path` (appended) when given, else to /dev/null.
  bool Start(const std::string& path, const std::vector<std::string>& args,
             const std::map<std::string, std::string>& env = {}, const std::string& log_path = "");
  bool Signal(int sig);
  // Waits for exit; returns the exit code (128+signal when killed) or -1 on timeout.
  int Wait(std::chrono::milliseconds timeout);
  bool Running();
  pid_t pid() const { return pid_; }
  // How the last child that Wait() or Running() reaped ended: the exit code, 128+signal when
  // killed, -1 when none was reaped yet.
  int last_exit() const { return last_exit_; }

 private:
  pid_t pid_ = -1;
  int last_exit_ = -1;
};

// A minimal HTTP/1.0 GET of `path` on 127.0.0.1:`port` (a process's /metrics, /healthz,
// /readyz): the whole response, status line included; "" when nothing listens.
std::string HttpGet(int port, const std::string& path);

}  // namespace converge::testing
