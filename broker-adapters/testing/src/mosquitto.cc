#include "converge/testing/mosquitto.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace converge::testing {
namespace {

int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

bool CanConnect(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

int RunQuiet(const std::vector<std::string>& argv) {
  pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    int devnull = ::open("/dev/null", O_WRONLY);
    if (devnull >= 0) {
      ::dup2(devnull, 1);
      ::dup2(devnull, 2);
    }
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

MosquittoBroker::MosquittoBroker(MosquittoConfig config) : config_(std::move(config)) {}

MosquittoBroker::~MosquittoBroker() {
  Kill();
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

bool MosquittoBroker::WriteFiles() {
  std::string tmpl =
      (std::filesystem::temp_directory_path() / "converge-mosquitto-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) {
    error_ = "mkdtemp failed";
    return false;
  }
  dir_ = tmpl;
  std::filesystem::create_directories(dir_ + "/data");
  port_ = FreePort();
  if (port_ == 0) {
    error_ = "no free port";
    return false;
  }
  std::ostringstream conf;
  // As root, mosquitto would switch to the mosquitto user and lose access to this directory.
  if (::geteuid() == 0) conf << "user root\n";
  conf << "per_listener_settings false\n"
       << "listener " << port_ << " 127.0.0.1\n";
  const auto tls_files = [&] {
    conf << "cafile " << dir_ << "/ca.crt\ncertfile " << dir_ << "/server.crt\nkeyfile " << dir_
         << "/server.key\n";
  };
  if (config_.tls || config_.tls_listener) {
    if (!MakeCertificates()) return false;
  }
  if (config_.tls) tls_files();
  if (config_.tls_listener) {
    tls_port_ = FreePort();
    if (tls_port_ == 0 || tls_port_ == port_) {
      error_ = "no free port for the TLS listener";
      return false;
    }
    conf << "listener " << tls_port_ << " 127.0.0.1\n";
    tls_files();
  }
  if (config_.users.empty()) {
    conf << "allow_anonymous true\n";
  } else {
    conf << "allow_anonymous false\npassword_file " << dir_ << "/passwd\n";
    std::ofstream(dir_ + "/passwd").close();
    ::chmod((dir_ + "/passwd").c_str(), 0600);
    for (const auto& [user, pw] : config_.users) {
      if (RunQuiet({"mosquitto_passwd", "-b", dir_ + "/passwd", user, pw}) != 0) {
        error_ = "mosquitto_passwd failed for user " + user;
        return false;
      }
    }
  }
  if (!config_.acl.empty()) {
    std::ofstream(dir_ + "/acl") << config_.acl;
    conf << "acl_file " << dir_ << "/acl\n";
  }
  if (config_.persistence)
    conf << "persistence true\npersistence_location " << dir_ << "/data/\nautosave_interval 1\n";
  conf << "log_dest file " << dir_ << "/broker.log\nlog_type all\n" << config_.extra << "\n";
  std::ofstream(dir_ + "/mosquitto.conf") << conf.str();
  return true;
}

// A CA and a server certificate for 127.0.0.1 (IP SAN), and an unrelated CA, made with the
// openssl CLI (EC keys: fast to generate).
bool MosquittoBroker::MakeCertificates() {
  const std::string d = dir_ + "/";
  std::ofstream(d + "san.ext") << "subjectAltName=IP:127.0.0.1\n";
  const std::vector<std::string> ec = {"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                                       "-nodes"};
  const auto with_key = [&](std::vector<std::string> head, std::vector<std::string> tail) {
    head.insert(head.end(), ec.begin(), ec.end());
    head.insert(head.end(), tail.begin(), tail.end());
    return head;
  };
  const std::vector<std::vector<std::string>> steps = {
      with_key({"openssl", "req", "-x509"}, {"-keyout", d + "ca.key", "-out", d + "ca.crt", "-days",
                                             "2", "-subj", "/CN=converge-test-ca"}),
      with_key({"openssl", "req", "-x509"},
               {"-keyout", d + "other-ca.key", "-out", d + "other-ca.crt", "-days", "2", "-subj",
                "/CN=other-test-ca"}),
      with_key({"openssl", "req"},
               {"-keyout", d + "server.key", "-out", d + "server.csr", "-subj", "/CN=127.0.0.1"}),
      {"openssl", "x509", "-req", "-in", d + "server.csr", "-CA", d + "ca.crt", "-CAkey",
       d + "ca.key", "-CAcreateserial", "-out", d + "server.crt", "-days", "2", "-extfile",
       d + "san.ext"},
  };
  for (const auto& step : steps) {
    if (RunQuiet(step) != 0) {
      error_ = "openssl failed: " + step[1] + " (is the openssl CLI installed?)";
      return false;
    }
  }
  return true;
}

bool MosquittoBroker::Start() {
  if (pid_ > 0) return true;
  if (dir_.empty() && !WriteFiles()) return false;
  pid_t pid = ::fork();
  if (pid < 0) {
    error_ = "fork failed";
    return false;
  }
  if (pid == 0) {
    // Dies with the test process even when that one aborts (a sanitizer halt, a crash) and the
    // destructor never runs: no orphaned broker keeps its port and directory.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() == 1) ::_exit(127);
    int out = ::open((dir_ + "/stderr.log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (out >= 0) {
      ::dup2(out, 1);
      ::dup2(out, 2);
    }
    const std::string conf = dir_ + "/mosquitto.conf";
    execlp("mosquitto", "mosquitto", "-c", conf.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  pid_ = pid;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < deadline) {
    if (CanConnect(port_)) return true;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      error_ = "mosquitto exited at start; see " + dir_ + "/stderr.log and broker.log";
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  error_ = "mosquitto did not accept connections on port " + std::to_string(port_);
  Kill();
  return false;
}

bool MosquittoBroker::Signal(int sig) { return pid_ > 0 && ::kill(pid_, sig) == 0; }

void MosquittoBroker::Reap(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (pid_ > 0) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      pid_ = -1;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void MosquittoBroker::Kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGCONT);
  ::kill(pid_, SIGKILL);
  Reap(std::chrono::milliseconds(5000));
}

void MosquittoBroker::Stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGCONT);
  ::kill(pid_, SIGTERM);
  Reap(std::chrono::milliseconds(5000));
}

bool MosquittoBroker::Publish(const std::string& username, const std::string& password,
                              const std::string& topic, const std::string& payload,
                              const std::vector<std::pair<std::string, std::string>>& props,
                              const std::string& content_type, int qos) const {
  std::vector<std::string> argv = {
      "mosquitto_pub",     "-V", "mqttv5", "-h", "127.0.0.1", "-p", std::to_string(port_), "-q",
      std::to_string(qos), "-t", topic,    "-m", payload};
  if (!username.empty()) argv.insert(argv.end(), {"-u", username, "-P", password});
  if (config_.tls) argv.insert(argv.end(), {"--cafile", ca_file()});
  for (const auto& [k, v] : props)
    argv.insert(argv.end(), {"-D", "publish", "user-property", k, v});
  if (!content_type.empty())
    argv.insert(argv.end(), {"-D", "publish", "content-type", content_type});
  return RunQuiet(argv) == 0;
}

std::string MosquittoBroker::ReadLog() const {
  std::ifstream in(dir_ + "/broker.log");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace converge::testing
