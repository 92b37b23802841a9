// converge-devkafka as scripts use it: spawn the built binary, read its bootstrap line, inject
// faults over the control port, stop it with SIGTERM.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "converge/broker/kafka.h"
#include "converge/broker/kafka_admin.h"
#include "converge/broker/kafka_mock.h"
#include "kafka_test_support.h"

extern char** environ;

namespace converge::broker {
namespace {

using namespace std::chrono_literals;
using testing::MakeMessage;
using testing::Pointers;
using testing::TestPublisherOptions;
using testing::UniqueName;

class DevKafkaProcess {
 public:
  // Starts converge-devkafka with `args`; reads stdout until both announcement lines arrived.
  explicit DevKafkaProcess(std::vector<std::string> args) {
    int out[2];
    if (pipe(out) != 0) return;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, out[0]);
    std::vector<std::string> argv_strings = {CONVERGE_DEVKAFKA_PATH};
    argv_strings.insert(argv_strings.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (std::string& s : argv_strings) argv.push_back(s.data());
    argv.push_back(nullptr);
    if (posix_spawn(&pid_, CONVERGE_DEVKAFKA_PATH, &actions, nullptr, argv.data(), environ) != 0) {
      pid_ = -1;
    }
    posix_spawn_file_actions_destroy(&actions);
    close(out[1]);
    stdout_ = fdopen(out[0], "r");
    char line[4096];
    while ((bootstrap.empty() || control_port == 0) && stdout_ &&
           std::fgets(line, sizeof(line), stdout_) != nullptr) {
      std::string l(line);
      if (!l.empty() && l.back() == '\n') l.pop_back();
      if (l.starts_with("bootstrap.servers=")) bootstrap = l.substr(18);
      if (l.starts_with("control.port=")) control_port = std::stoi(l.substr(13));
    }
  }
  ~DevKafkaProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (stdout_) fclose(stdout_);
  }

  // Sends one control line and returns the reply line.
  std::string Command(const std::string& line) const {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(control_port));
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      close(fd);
      return "connect failed";
    }
    const std::string request = line + "\n";
    (void)!write(fd, request.data(), request.size());
    std::string reply;
    char c;
    while (read(fd, &c, 1) == 1 && c != '\n') reply += c;
    close(fd);
    return reply;
  }

  // Sends SIGTERM and returns the exit status (or -1).
  int Terminate() {
    if (pid_ <= 0) return -1;
    kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  std::string bootstrap;
  int control_port = 0;

 private:
  pid_t pid_ = -1;
  FILE* stdout_ = nullptr;
};

TEST(DevKafkaTest, ControlPortInjectsFaultsSeenByThePublisher) {
  const std::filesystem::path bootstrap_file =
      std::filesystem::temp_directory_path() / (UniqueName("devkafka-bootstrap") + ".txt");
  DevKafkaProcess devkafka({"--brokers", "2", "--partitions", "3", "--topic", "preset:5", "--topic",
                            "defaulted", "--bootstrap-file", bootstrap_file.string(),
                            "--control-port", "0"});
  ASSERT_FALSE(devkafka.bootstrap.empty());
  ASSERT_GT(devkafka.control_port, 0);
  {
    std::ifstream in(bootstrap_file);
    std::string from_file;
    std::getline(in, from_file);
    EXPECT_EQ(from_file, devkafka.bootstrap);
  }
  EXPECT_EQ(devkafka.Command("ping"), "ok");
  EXPECT_EQ(devkafka.Command("bootstrap"), "ok " + devkafka.bootstrap);
  EXPECT_EQ(*PartitionCount(devkafka.bootstrap, "preset", 10s), 5);
  EXPECT_EQ(*PartitionCount(devkafka.bootstrap, "defaulted", 10s), 3);
  EXPECT_EQ(devkafka.Command("create-topic made 7"), "ok");
  EXPECT_EQ(*PartitionCount(devkafka.bootstrap, "made", 10s), 7);
  EXPECT_TRUE(devkafka.Command("create-topic made 7").starts_with("error ALREADY_EXISTS"));
  EXPECT_TRUE(devkafka.Command("broker-down 9").starts_with("error"));
  EXPECT_TRUE(devkafka.Command("produce-errors 1 NO_SUCH_ERROR").starts_with("error"));
  EXPECT_TRUE(devkafka.Command("launch-missiles").starts_with("error unknown command"));

  const std::string topic = UniqueName("devkafka");
  KafkaOptions options = TestPublisherOptions(devkafka.bootstrap);
  options.message_timeout = 1500ms;
  options.properties["reconnect.backoff.max.ms"] = "200";
  auto publisher = MakeKafkaPublisher(options);
  ASSERT_TRUE(publisher.ok()) << publisher.status();
  std::vector<Message> messages = {MakeMessage(topic, "k", 1)};
  ASSERT_TRUE((*publisher)->PublishBatch(Pointers(messages), 10s)[0].status.ok());

  ASSERT_EQ(devkafka.Command("broker-down -1"), "ok");
  const auto down = (*publisher)->PublishBatch(Pointers(messages), 10s);
  EXPECT_TRUE(down[0].status.IsRetriable()) << down[0].status;

  ASSERT_EQ(devkafka.Command("broker-up -1"), "ok");
  bool recovered = false;
  for (int attempt = 0; attempt < 30 && !recovered; ++attempt) {
    recovered = (*publisher)->PublishBatch(Pointers(messages), 3s)[0].status.ok();
  }
  EXPECT_TRUE(recovered);

  ASSERT_EQ(devkafka.Command("produce-errors 1 MSG_SIZE_TOO_LARGE"), "ok");
  const auto rejected = (*publisher)->PublishBatch(Pointers(messages), 10s);
  EXPECT_EQ(rejected[0].status.code(), StatusCode::kFailedPrecondition) << rejected[0].status;
  (*publisher)->Close(1s);

  EXPECT_EQ(devkafka.Terminate(), 0);
  EXPECT_FALSE(std::filesystem::exists(bootstrap_file)) << "removed on clean shutdown";
}

// The mock cluster's broker connections have TCP_NODELAY, as a real Kafka broker's do (see
// kafka_mock.cc: without it every produce round trip under load waited ~40 ms for a delayed
// ACK). A client connects to an in-process mock broker; the accepted socket is found among
// this process's descriptors (local port = the broker's, with a peer) and inspected.
TEST(DevKafkaTest, MockBrokerConnectionsDisableNagle) {
  auto cluster = converge::broker::KafkaMockCluster::Start(1);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  const std::string bootstrap = (*cluster)->bootstrap_servers();
  const auto colon = bootstrap.rfind(':');
  ASSERT_NE(colon, std::string::npos) << bootstrap;
  const int port = std::stoi(bootstrap.substr(colon + 1));
  const int client = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(client, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  int found = -1, nodelay = -1;
  for (int attempt = 0; attempt < 100 && found < 0; ++attempt) {
    for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
      const int fd = std::stoi(e.path().filename().string());
      sockaddr_in local{}, peer{};
      socklen_t ll = sizeof local, pl = sizeof peer;
      if (fd == client || ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &ll) != 0 ||
          local.sin_family != AF_INET || ntohs(local.sin_port) != port ||
          ::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &pl) != 0)
        continue;
      socklen_t len = sizeof nodelay;
      ASSERT_EQ(::getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, &len), 0);
      found = fd;
    }
    if (found < 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::close(client);
  ASSERT_GE(found, 0) << "the mock broker's side of the connection was not found";
  EXPECT_EQ(nodelay, 1) << "the mock broker accepted a connection with Nagle's algorithm on";
}

TEST(DevKafkaTest, RejectsBadFlags) {
  DevKafkaProcess devkafka({"--brokers", "zero"});
  EXPECT_TRUE(devkafka.bootstrap.empty());
  EXPECT_EQ(devkafka.Terminate(), 2);
}

}  // namespace
}  // namespace converge::broker
