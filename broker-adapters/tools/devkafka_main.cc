// converge-devkafka: librdkafka's mock Kafka cluster as a program, for development, the demo and
// integration tests, with a loopback control port for fault injection. See
// broker-adapters/README.md.
//
//   converge-devkafka [--brokers N] [--partitions N] [--topic NAME[:PARTITIONS]]...
//                     [--bootstrap-file PATH] [--control-port PORT]
//
// Prints `bootstrap.servers=...` and (with --control-port) `control.port=...` on stdout once
// the cluster is up. Runs until SIGTERM or SIGINT.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "converge/broker/kafka_mock.h"

namespace {

using converge::Status;
using converge::broker::KafkaApiKey;
using converge::broker::KafkaMockCluster;

constexpr size_t kMaxLine = 4096;
constexpr size_t kMaxClients = 64;

constexpr char kUsage[] =
    "usage: converge-devkafka [--brokers N] [--partitions N] [--topic NAME[:PARTITIONS]]...\n"
    "                         [--bootstrap-file PATH] [--control-port PORT]\n"
    "\n"
    "  --brokers N          mock brokers, ids 1..N (default 1)\n"
    "  --partitions N       partitions for --topic and create-topic without a count (default 4;\n"
    "                       topics auto-created by clients always get 4 in librdkafka 2.0.2)\n"
    "  --topic NAME[:P]     create a topic at start (repeatable)\n"
    "  --bootstrap-file F   write the bootstrap.servers value to F (atomically)\n"
    "  --control-port P     accept control commands on 127.0.0.1:P (0: any free port)\n"
    "\n"
    "Control protocol: one command per line, one reply line: \"ok[ <value>]\" or \"error "
    "<why>\".\n";

constexpr char kHelp[] =
    "ok commands: ping | bootstrap | broker-down <id|-1> | broker-up <id|-1> | "
    "rtt <id|-1> <ms> | produce-errors <count> <error> | "
    "request-errors <apikey> <count> <error> | clear-errors <apikey> | "
    "topic-error <topic> <error|NO_ERROR> | create-topic <topic> [partitions] [replication] | "
    "leader <topic> <partition> <broker|-1>";

template <typename T>
std::optional<T> ParseNumber(std::string_view s) {
  T value{};
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return value;
}

struct Flags {
  int brokers = 1;
  int partitions = 4;
  std::vector<std::pair<std::string, int>> topics;  // partitions 0: use --partitions
  std::string bootstrap_file;
  std::optional<int> control_port;
};

std::optional<Flags> ParseFlags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    auto value = [&]() -> std::optional<std::string_view> {
      if (i + 1 >= argc) {
        std::cerr << "converge-devkafka: " << arg << " needs a value\n";
        return std::nullopt;
      }
      return std::string_view(argv[++i]);
    };
    auto number = [&](int min) -> std::optional<int> {
      auto v = value();
      if (!v) return std::nullopt;
      auto n = ParseNumber<int>(*v);
      if (!n || *n < min) {
        std::cerr << "converge-devkafka: " << arg << ": expected a number >= " << min << ", got \""
                  << *v << "\"\n";
        return std::nullopt;
      }
      return n;
    };
    if (arg == "--brokers") {
      auto n = number(1);
      if (!n) return std::nullopt;
      f.brokers = *n;
    } else if (arg == "--partitions") {
      auto n = number(1);
      if (!n) return std::nullopt;
      f.partitions = *n;
    } else if (arg == "--topic") {
      auto v = value();
      if (!v) return std::nullopt;
      std::string_view name = *v;
      int partitions = 0;
      if (size_t colon = name.rfind(':'); colon != std::string_view::npos) {
        auto n = ParseNumber<int>(name.substr(colon + 1));
        if (!n || *n < 1) {
          std::cerr << "converge-devkafka: --topic " << name << ": bad partition count\n";
          return std::nullopt;
        }
        partitions = *n;
        name = name.substr(0, colon);
      }
      f.topics.emplace_back(std::string(name), partitions);
    } else if (arg == "--bootstrap-file") {
      auto v = value();
      if (!v) return std::nullopt;
      f.bootstrap_file = std::string(*v);
    } else if (arg == "--control-port") {
      auto n = number(0);
      if (!n || *n > 65535) return std::nullopt;
      f.control_port = *n;
    } else if (arg == "-h" || arg == "--help") {
      std::cout << kUsage;
      std::exit(0);
    } else {
      std::cerr << "converge-devkafka: unknown argument " << arg << "\n" << kUsage;
      return std::nullopt;
    }
  }
  return f;
}

// Writes `content` to `path` through a temporary file and rename(), so that a script polling
// for the file never reads half of it.
bool WriteFileAtomically(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << content << "\n";
    if (!out.flush()) return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

std::string Reply(const Status& s, std::string_view value = {}) {
  if (!s.ok()) return "error " + s.ToString();
  return value.empty() ? std::string("ok") : "ok " + std::string(value);
}

// Executes one control command and returns the reply line (without newline).
std::string Execute(KafkaMockCluster& cluster, int default_partitions, std::string_view line) {
  std::istringstream in{std::string(line)};
  std::vector<std::string> w;
  for (std::string word; in >> word;) w.push_back(word);
  if (w.empty()) return "error empty command";
  const std::string& cmd = w[0];
  auto arity = [&](size_t min, size_t max) { return w.size() >= min + 1 && w.size() <= max + 1; };
  auto num = [&](size_t i) { return ParseNumber<int32_t>(w[i]); };
  const std::string usage = "error bad arguments for " + cmd + " (try: help)";

  if (cmd == "ping" && arity(0, 0)) return "ok";
  if (cmd == "help") return kHelp;
  if (cmd == "bootstrap" && arity(0, 0)) return "ok " + cluster.bootstrap_servers();
  if ((cmd == "broker-down" || cmd == "broker-up") && arity(1, 1)) {
    auto id = num(1);
    if (!id) return usage;
    return Reply(cmd == "broker-down" ? cluster.SetBrokerDown(*id) : cluster.SetBrokerUp(*id));
  }
  if (cmd == "rtt" && arity(2, 2)) {
    auto id = num(1), ms = num(2);
    if (!id || !ms) return usage;
    return Reply(cluster.SetBrokerRtt(*id, std::chrono::milliseconds(*ms)));
  }
  if (cmd == "produce-errors" && arity(2, 2)) {
    auto count = num(1);
    if (!count) return usage;
    return Reply(cluster.PushRequestErrors(KafkaApiKey::kProduce, *count, w[2]));
  }
  if (cmd == "request-errors" && arity(3, 3)) {
    auto key = num(1), count = num(2);
    if (!key || !count || *key < 0 || *key > INT16_MAX) return usage;
    return Reply(cluster.PushRequestErrors(static_cast<int16_t>(*key), *count, w[3]));
  }
  if (cmd == "clear-errors" && arity(1, 1)) {
    auto key = num(1);
    if (!key || *key < 0 || *key > INT16_MAX) return usage;
    return Reply(cluster.ClearRequestErrors(static_cast<int16_t>(*key)));
  }
  if (cmd == "topic-error" && arity(2, 2)) return Reply(cluster.SetTopicError(w[1], w[2]));
  if (cmd == "create-topic" && arity(1, 3)) {
    std::optional<int32_t> partitions = default_partitions, replication = 0;
    if (w.size() > 2) partitions = num(2);
    if (w.size() > 3) replication = num(3);
    if (!partitions || !replication) return usage;
    return Reply(cluster.CreateTopic(w[1], *partitions, *replication));
  }
  if (cmd == "leader" && arity(3, 3)) {
    auto partition = num(2), broker = num(3);
    if (!partition || !broker) return usage;
    return Reply(cluster.SetPartitionLeader(w[1], *partition, *broker));
  }
  if (cmd == "broker-down" || cmd == "broker-up" || cmd == "rtt" || cmd == "produce-errors" ||
      cmd == "request-errors" || cmd == "clear-errors" || cmd == "topic-error" ||
      cmd == "create-topic" || cmd == "leader" || cmd == "ping" || cmd == "bootstrap") {
    return usage;
  }
  return "error unknown command " + cmd + " (try: help)";
}

// Binds 127.0.0.1:port (0: any free port). Returns the socket, or -1 after printing why.
int Listen(int port, int* bound_port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    std::perror("converge-devkafka: socket");
    return -1;
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);  // loopback only: no remote fault injection
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(fd, 16) != 0) {
    std::fprintf(stderr, "converge-devkafka: control port 127.0.0.1:%d: %s\n", port,
                 std::strerror(errno));
    close(fd);
    return -1;
  }
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  *bound_port = ntohs(addr.sin_port);
  return fd;
}

struct Client {
  int fd;
  std::string buffer;
};

void WriteAll(int fd, std::string data) {
  data += '\n';
  const char* p = data.data();
  size_t left = data.size();
  while (left > 0) {
    ssize_t n = send(fd, p, left, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd pfd{fd, POLLOUT, 0};
      poll(&pfd, 1, 1000);
      continue;
    }
    if (n <= 0) return;  // the client went away; it is dropped on its next read
    p += n;
    left -= static_cast<size_t>(n);
  }
}

// Serves the control port until a signal arrives on `signal_fd`. Returns the signal number.
int Serve(KafkaMockCluster& cluster, int default_partitions, int signal_fd, int listen_fd) {
  std::vector<Client> clients;
  while (true) {
    std::vector<pollfd> fds;
    fds.push_back({signal_fd, POLLIN, 0});
    if (listen_fd >= 0) fds.push_back({listen_fd, POLLIN, 0});
    for (const Client& c : clients) fds.push_back({c.fd, POLLIN, 0});
    if (poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      std::perror("converge-devkafka: poll");
      return 0;
    }
    if (fds[0].revents & POLLIN) {
      signalfd_siginfo info{};
      if (read(signal_fd, &info, sizeof(info)) == sizeof(info)) {
        for (const Client& c : clients) close(c.fd);
        return static_cast<int>(info.ssi_signo);
      }
    }
    const size_t first_client = listen_fd >= 0 ? 2 : 1;
    const size_t polled_clients = clients.size();  // a client accepted below was not polled
    if (listen_fd >= 0) {
      if (fds[1].revents & POLLIN) {
        int fd = accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0 && clients.size() >= kMaxClients) {
          WriteAll(fd, "error too many control connections");
          close(fd);
        } else if (fd >= 0) {
          clients.push_back({fd, {}});
        }
      }
    }
    std::vector<Client> still_open;
    for (size_t i = 0; i < clients.size(); ++i) {
      Client& c = clients[i];
      const short revents = i < polled_clients ? fds[first_client + i].revents : 0;
      bool open = true;
      if (revents & (POLLIN | POLLHUP | POLLERR)) {
        char buf[1024];
        ssize_t n = recv(c.fd, buf, sizeof(buf), 0);
        if (n > 0) {
          c.buffer.append(buf, static_cast<size_t>(n));
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
          open = false;
        }
        size_t nl;
        while (open && (nl = c.buffer.find('\n')) != std::string::npos) {
          std::string line = c.buffer.substr(0, nl);
          c.buffer.erase(0, nl + 1);
          if (!line.empty() && line.back() == '\r') line.pop_back();
          if (line == "quit") {
            open = false;
            break;
          }
          const std::string reply = Execute(cluster, default_partitions, line);
          std::fprintf(stderr, "converge-devkafka: control: %s -> %s\n", line.c_str(),
                       reply.c_str());
          WriteAll(c.fd, reply);
        }
        if (open && c.buffer.size() > kMaxLine) {
          WriteAll(c.fd, "error line too long");
          open = false;
        }
      }
      if (open) {
        still_open.push_back(std::move(c));
      } else {
        close(c.fd);
      }
    }
    clients = std::move(still_open);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::optional<Flags> flags = ParseFlags(argc, argv);
  if (!flags) return 2;

  // Block the stop signals before librdkafka starts its threads (they inherit the mask), so
  // that they are delivered only through the signalfd below.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  int signal_fd = signalfd(-1, &stop_signals, SFD_CLOEXEC);
  if (signal_fd < 0) {
    std::perror("converge-devkafka: signalfd");
    return 1;
  }

  auto cluster = KafkaMockCluster::Start(flags->brokers);
  if (!cluster.ok()) {
    std::cerr << "converge-devkafka: " << cluster.status() << "\n";
    return 1;
  }
  for (const auto& [name, partitions] : flags->topics) {
    Status s = (*cluster)->CreateTopic(name, partitions > 0 ? partitions : flags->partitions);
    if (!s.ok()) {
      std::cerr << "converge-devkafka: --topic " << name << ": " << s << "\n";
      return 1;
    }
  }
  if (flags->partitions != 4) {
    std::cerr << "converge-devkafka: note: --partitions " << flags->partitions
              << " applies to --topic and create-topic without a count; topics auto-created by "
                 "clients get 4 partitions (fixed in librdkafka 2.0.2's mock)\n";
  }

  int listen_fd = -1, control_port = 0;
  if (flags->control_port) {
    listen_fd = Listen(*flags->control_port, &control_port);
    if (listen_fd < 0) return 1;
  }
  const std::string& bootstrap = (*cluster)->bootstrap_servers();
  if (!flags->bootstrap_file.empty() && !WriteFileAtomically(flags->bootstrap_file, bootstrap)) {
    std::cerr << "converge-devkafka: cannot write " << flags->bootstrap_file << ": "
              << std::strerror(errno) << "\n";
    return 1;
  }
  std::cout << "bootstrap.servers=" << bootstrap << "\n";
  if (listen_fd >= 0) std::cout << "control.port=" << control_port << "\n";
  std::cout << std::flush;

  const int signo = Serve(**cluster, flags->partitions, signal_fd, listen_fd);
  std::cerr << "converge-devkafka: " << (signo ? strsignal(signo) : "stopping")
            << ", shutting down\n";
  if (listen_fd >= 0) close(listen_fd);
  close(signal_fd);
  cluster->reset();
  if (!flags->bootstrap_file.empty()) std::remove(flags->bootstrap_file.c_str());
  return 0;
}
