// convergectl: the operations CLI for Converge.
//
//   convergectl migrate [--db URL] [--dry-run]
//   convergectl version
//
// The database URL comes from --db, else from CONVERGE_PG_URL. Exit codes: 0 success,
// 1 the operation failed, 2 usage error, 3 cannot reach the database.
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "converge/schemas/migrate.h"

namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitUnavailable = 3;

void Usage(std::ostream& os) {
  os << "usage: convergectl <command> [options]\n\n"
        "commands:\n"
        "  migrate [--db URL] [--dry-run]   apply the missing schema migrations\n"
        "  version                          print the version and the known schema version\n\n"
        "--db defaults to $CONVERGE_PG_URL.\n";
}

int ExitFor(const converge::Status& st) {
  return st.code() == converge::StatusCode::kUnavailable ? kExitUnavailable : kExitFailed;
}

int Migrate(const std::vector<std::string>& args) {
  std::string db;
  converge::schemas::MigrateOptions opts;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--db" && i + 1 < args.size()) {
      db = args[++i];
    } else if (args[i].rfind("--db=", 0) == 0) {
      db = args[i].substr(5);
    } else if (args[i] == "--dry-run") {
      opts.dry_run = true;
    } else {
      std::cerr << "convergectl migrate: unknown option " << args[i] << "\n";
      return kExitUsage;
    }
  }
  if (db.empty()) {
    if (const char* env = std::getenv("CONVERGE_PG_URL")) db = env;
  }
  if (db.empty()) {
    std::cerr << "convergectl migrate: no database: pass --db URL or set CONVERGE_PG_URL\n";
    return kExitUsage;
  }
  if (const char* user = std::getenv("USER")) opts.actor = std::string("convergectl:") + user;
  auto r = converge::schemas::Migrate(db, opts);
  if (!r.ok()) {
    std::cerr << "convergectl migrate: " << r.status() << "\n";
    return ExitFor(r.status());
  }
  for (const auto& m : r->applied)
    std::cout << (opts.dry_run ? "would apply " : "applied ") << m.name << "\n";
  std::cout << "schema version " << r->version << " (" << r->existing.size()
            << " already applied, " << r->applied.size()
            << (opts.dry_run ? " to apply)\n" : " applied now)\n");
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "help" || args[0] == "--help" || args[0] == "-h") {
    Usage(args.empty() ? std::cerr : std::cout);
    return args.empty() ? kExitUsage : kExitOk;
  }
  const std::string cmd = args[0];
  args.erase(args.begin());
  if (cmd == "migrate") return Migrate(args);
  if (cmd == "version") {
    std::cout << "convergectl 0.1.0, schema version "
              << converge::schemas::KnownMigrations().back().version << "\n";
    return kExitOk;
  }
  std::cerr << "convergectl: unknown command '" << cmd << "'\n";
  Usage(std::cerr);
  return kExitUsage;
}
