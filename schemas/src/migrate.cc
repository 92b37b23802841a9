#include "converge/schemas/migrate.h"

#include <algorithm>
#include <map>

#include "converge/schemas/pg.h"
#include "migrations_internal.h"

namespace converge::schemas {
namespace {

using internal::EmbeddedMigrations;

// Advisory lock key that serializes concurrent `convergectl migrate` runs.
constexpr int64_t kMigrateLockKey = 0x636f6e7665726765;  // "converge"

constexpr const char* kCreateTable = R"sql(
  CREATE SCHEMA IF NOT EXISTS converge;
  CREATE TABLE IF NOT EXISTS converge.schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    applied_by text        NOT NULL
  );
)sql";

std::string Checksum(pqxx::transaction_base& tx, std::string_view sql) {
  // Computed by the server so no crypto library is needed here.
  auto r = tx.exec_params("SELECT encode(sha256(convert_to($1, 'UTF8')), 'hex')", std::string(sql));
  return r[0][0].as<std::string>();
}

}  // namespace

std::vector<MigrationInfo> KnownMigrations() {
  std::vector<MigrationInfo> out;
  for (const auto& m : EmbeddedMigrations()) out.push_back({m.version, std::string(m.name), ""});
  return out;
}

Result<int> SchemaVersion(const std::string& db_url) {
  CONVERGE_ASSIGN_OR_RETURN(auto conn, pg::Connect(db_url));
  try {
    pqxx::read_transaction tx(*conn);
    auto exists = tx.exec("SELECT to_regclass('converge.schema_migrations') IS NOT NULL");
    if (!exists[0][0].as<bool>()) return 0;
    auto r = tx.exec("SELECT coalesce(max(version), 0) FROM converge.schema_migrations");
    return r[0][0].as<int>();
  } catch (const std::exception& e) {
    return pg::StatusFromException(e);
  }
}

Result<MigrateReport> Migrate(const std::string& db_url, const MigrateOptions& options) {
  CONVERGE_ASSIGN_OR_RETURN(auto conn, pg::Connect(db_url));
  MigrateReport report;
  try {
    // Session-level lock: held across the per-migration transactions below.
    pqxx::nontransaction(*conn).exec_params("SELECT pg_advisory_lock($1)", kMigrateLockKey);
    struct Unlock {
      pqxx::connection& c;
      ~Unlock() {
        try {
          pqxx::nontransaction(c).exec_params("SELECT pg_advisory_unlock($1)", kMigrateLockKey);
        } catch (...) {  // the session ends with the connection anyway
        }
      }
    } unlock{*conn};

    if (!options.dry_run) {
      pqxx::work tx(*conn);
      tx.exec(kCreateTable);
      tx.commit();
    }

    std::map<int, MigrationInfo> applied;
    {
      pqxx::work tx(*conn);
      auto exists = tx.exec("SELECT to_regclass('converge.schema_migrations') IS NOT NULL");
      if (exists[0][0].as<bool>()) {
        for (const auto& row :
             tx.exec("SELECT version, name, checksum FROM converge.schema_migrations")) {
          MigrationInfo mi{row[0].as<int>(), row[1].as<std::string>(), row[2].as<std::string>()};
          applied[mi.version] = mi;
        }
      }
      tx.commit();
    }

    const auto& known = EmbeddedMigrations();
    const int newest_known = known.empty() ? 0 : known.back().version;
    if (!applied.empty() && applied.rbegin()->first > newest_known) {
      return Status::FailedPrecondition("database schema is at version " +
                                        std::to_string(applied.rbegin()->first) +
                                        " but this binary only knows up to " +
                                        std::to_string(newest_known) + "; use a newer convergectl");
    }

    for (const auto& m : known) {
      pqxx::work tx(*conn);
      const std::string sum = Checksum(tx, m.sql);
      MigrationInfo info{m.version, std::string(m.name), sum};
      auto it = applied.find(m.version);
      if (it != applied.end()) {
        if (it->second.checksum != sum) {
          return Status::FailedPrecondition(
              "migration " + std::string(m.name) + " was changed after it was applied (recorded " +
              "checksum " + it->second.checksum.substr(0, 12) + ", file " + sum.substr(0, 12) +
              "); refusing to continue. Restore the original file and add a new migration.");
        }
        report.existing.push_back(info);
        continue;
      }
      if (options.dry_run) {
        report.applied.push_back(info);
        continue;
      }
      try {
        tx.exec(std::string(m.sql));
        tx.exec_params(
            "INSERT INTO converge.schema_migrations (version, name, checksum, applied_by) "
            "VALUES ($1, $2, $3, $4)",
            m.version, std::string(m.name), sum, options.actor);
        tx.commit();
      } catch (const std::exception& e) {
        return Status::Internal(
            "migration " + std::string(m.name) +
            " failed and was rolled back: " + pg::StatusFromException(e).message());
      }
      report.applied.push_back(info);
    }
    // The version after this run (for a dry run: the version it would reach).
    for (const auto* list : {&report.existing, &report.applied})
      for (const auto& m : *list) report.version = std::max(report.version, m.version);
    return report;
  } catch (const std::exception& e) {
    return pg::StatusFromException(e).WithContext("migrate");
  }
}

}  // namespace converge::schemas
