#include "converge/common/failpoint.h"

#include <unistd.h>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>

namespace converge {
namespace {

struct Action {
  enum Kind { kKill, kAbort } kind = kKill;
  long at = 1;    // fire on this hit
  long hits = 0;  // hits so far
};

std::mutex mu;
std::map<std::string, Action, std::less<>>* table = nullptr;  // guarded by mu
std::atomic<int> state{0};  // 0 not loaded, 1 none configured, 2 some configured

void LoadLocked() {
  delete table;
  table = nullptr;
  const char* env = std::getenv("CONVERGE_FAILPOINTS");
  std::string spec = env != nullptr ? env : "";
  auto* t = new std::map<std::string, Action, std::less<>>();
  size_t pos = 0;
  while (pos < spec.size()) {
    size_t end = spec.find(',', pos);
    if (end == std::string::npos) end = spec.size();
    std::string item = spec.substr(pos, end - pos);
    pos = end + 1;
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    const std::string name = item.substr(0, eq);
    std::string action = eq == std::string::npos ? "kill" : item.substr(eq + 1);
    Action a;
    const size_t at = action.find('@');
    if (at != std::string::npos) {
      a.at = std::strtol(action.c_str() + at + 1, nullptr, 10);
      if (a.at < 1) a.at = 1;
      action.resize(at);
    }
    if (action == "kill") {
      a.kind = Action::kKill;
    } else if (action == "abort") {
      a.kind = Action::kAbort;
    } else {
      std::fprintf(stderr,
                   "converge: CONVERGE_FAILPOINTS: unknown action \"%s\" for %s (ignored)\n",
                   action.c_str(), name.c_str());
      continue;
    }
    (*t)[name] = a;
  }
  table = t;
  state.store(t->empty() ? 1 : 2, std::memory_order_release);
}

}  // namespace

void ReloadFailpoints() {
  std::lock_guard<std::mutex> lock(mu);
  LoadLocked();
}

void Failpoint(std::string_view name) {
  int s = state.load(std::memory_order_acquire);
  if (s == 1) return;
  std::lock_guard<std::mutex> lock(mu);
  if (state.load(std::memory_order_relaxed) == 0) LoadLocked();
  if (state.load(std::memory_order_relaxed) == 1) return;
  auto it = table->find(name);
  if (it == table->end()) return;
  Action& a = it->second;
  if (++a.hits != a.at) return;
  std::fprintf(stderr, "converge: failpoint %.*s fired (hit %ld)\n", static_cast<int>(name.size()),
               name.data(), a.hits);
  std::fflush(stderr);
  if (a.kind == Action::kAbort) std::abort();
  ::kill(::getpid(), SIGKILL);
}

}  // namespace converge
