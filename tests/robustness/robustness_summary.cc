// robustness_summary: prints one table row per scenario results file (written by the
// robustness scenarios, see harness.h) and a final "N passed, N failed" line. Exit code 1 when
// any scenario failed.
//
//   robustness_summary [RESULTS_DIR]     (default: CONVERGE_ROBUSTNESS_RESULTS, else the build's)
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  std::string dir = CONVERGE_ROBUSTNESS_RESULTS_DEFAULT;
  if (const char* env = std::getenv("CONVERGE_ROBUSTNESS_RESULTS"); env != nullptr && *env)
    dir = env;
  if (argc > 1) dir = argv[1];
  std::vector<std::map<std::string, std::string>> rows;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.path().extension() != ".result") continue;
    std::map<std::string, std::string> row;
    std::ifstream in(entry.path());
    for (std::string line; std::getline(in, line);) {
      const auto eq = line.find('=');
      if (eq != std::string::npos) row[line.substr(0, eq)] = line.substr(eq + 1);
    }
    rows.push_back(std::move(row));
  }
  std::sort(rows.begin(), rows.end(),
            [](const auto& a, const auto& b) { return a.at("scenario") < b.at("scenario"); });
  const std::vector<std::pair<std::string, std::string>> cols = {
      {"scenario", "scenario"},
      {"passed", "ok"},
      {"seed", "seed"},
      {"faults", "faults"},
      {"committed", "committed"},
      {"applied", "applied"},
      {"lost", "lost"},
      {"phantom", "phantom"},
      {"applied_twice", "twice"},
      {"order_violations", "order"},
      {"offset_regressions", "off<"},
      {"unexpected_dead_letters", "dlq!"},
      {"broker_duplicates", "brk_dups"},
      {"recovery_ms", "recovery_ms"},
      {"duration_s", "secs"}};
  std::vector<size_t> width;
  for (const auto& [key, title] : cols) {
    size_t w = title.size();
    for (const auto& r : rows)
      if (auto it = r.find(key); it != r.end()) w = std::max(w, it->second.size());
    width.push_back(w);
  }
  std::printf("robustness results (%s)\n", dir.c_str());
  for (size_t i = 0; i < cols.size(); ++i)
    std::printf("%-*s ", static_cast<int>(width[i]), cols[i].second.c_str());
  std::printf("\n");
  int passed = 0, failed = 0;
  for (const auto& r : rows) {
    for (size_t i = 0; i < cols.size(); ++i) {
      auto it = r.find(cols[i].first);
      std::printf("%-*s ", static_cast<int>(width[i]), it == r.end() ? "-" : it->second.c_str());
    }
    std::printf("\n");
    if (r.count("passed") && r.at("passed") == "true") {
      ++passed;
    } else {
      ++failed;
      for (const auto& [k, v] : r)
        if (k.rfind("failure.", 0) == 0)
          std::printf("    %s: %s\n", r.at("scenario").c_str(), v.c_str());
    }
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
