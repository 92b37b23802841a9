#include "converge/testing/devkafka.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "converge/testing/env.h"
#include "converge/testing/pg_cluster.h"

namespace converge::testing {

using std::chrono::milliseconds;

PrivateKafka::~PrivateKafka() {
  if (child_.Running()) {
    child_.Signal(SIGTERM);
    if (child_.Wait(milliseconds(10000)) < 0) child_.Signal(SIGKILL);
  }
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

bool PrivateKafka::Start(const std::vector<std::string>& extra_args) {
  char tmpl[] = "/tmp/converge-kafka-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    error_ = "mkdtemp failed";
    return false;
  }
  dir_ = tmpl;
  log_path_ = dir_ + "/devkafka.log";
  const std::string bootstrap_file = dir_ + "/bootstrap";
  // The port is chosen here (not 0) so the test knows it without parsing stdout.
  for (int attempt = 0; attempt < 5; ++attempt) {
    control_port_ = FreeLoopbackPort();
    std::vector<std::string> args = {"--bootstrap-file", bootstrap_file, "--control-port",
                                     std::to_string(control_port_)};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    if (!child_.Start(BinDir() + "/converge-devkafka", args, {}, log_path_)) {
      error_ = "cannot start " + BinDir() + "/converge-devkafka";
      return false;
    }
    const auto until = std::chrono::steady_clock::now() + milliseconds(15000);
    while (std::chrono::steady_clock::now() < until && child_.Running()) {
      std::ifstream in(bootstrap_file);
      std::string line;
      if (std::getline(in, line) && !line.empty() && Control("ping") == "ok") {
        bootstrap_ = line.substr(line.find('=') == std::string::npos ? 0 : line.find('=') + 1);
        return true;
      }
      std::this_thread::sleep_for(milliseconds(50));
    }
    // The port may have been taken between FreeLoopbackPort() and bind: try another.
    child_.Signal(SIGKILL);
    child_.Wait(milliseconds(5000));
  }
  error_ = "converge-devkafka did not come up; see " + log_path_;
  return false;
}

std::string PrivateKafka::Control(const std::string& command) const {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "error socket";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(control_port_));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return "error cannot connect to the control port";
  }
  const std::string line = command + "\nquit\n";
  if (::send(fd, line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size())) {
    ::close(fd);
    return "error send failed";
  }
  std::string reply;
  char c = 0;
  while (::recv(fd, &c, 1, 0) == 1 && c != '\n') reply.push_back(c);
  ::close(fd);
  if (!reply.empty() && reply.back() == '\r') reply.pop_back();
  return reply.empty() ? "error no reply" : reply;
}

}  // namespace converge::testing
