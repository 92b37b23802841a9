// Versioned SQL migrations for the `converge` schema.
//
// Migrations are the files schemas/migrations/NNNN_name.sql, embedded into every binary at
// build time. Migrate() applies the missing ones in order, each in its own transaction, and
// records (version, name, sha256 checksum) in converge.schema_migrations. It is idempotent, it
// serializes concurrent runs with an advisory lock, and it refuses to continue when an applied
// migration's file has changed since (checksum mismatch) or when the database is newer than
// this binary.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "converge/common/status.h"

namespace converge::schemas {

struct MigrationInfo {
  int version = 0;
  std::string name;
  std::string checksum;  // hex sha256 of the file
};

struct MigrateReport {
  std::vector<MigrationInfo> applied;   // applied by this run (or that would be, in a dry run)
  std::vector<MigrationInfo> existing;  // already applied before this run
  int version = 0;                      // schema version after the run
};

struct MigrateOptions {
  // Report what would be applied without changing anything.
  bool dry_run = false;
  // Recorded in converge.schema_migrations.applied_by.
  std::string actor = "convergectl";
};

// The migrations this binary carries, in order.
std::vector<MigrationInfo> KnownMigrations();

// Connects to `db_url` (a libpq URL or keyword string) and applies the missing migrations.
// Errors: kUnavailable (cannot connect), kFailedPrecondition (changed or unknown migration),
// kInternal (a migration failed; nothing of it was applied).
Result<MigrateReport> Migrate(const std::string& db_url, const MigrateOptions& options = {});

// The applied schema version (0 when Converge was never migrated into this database).
Result<int> SchemaVersion(const std::string& db_url);

}  // namespace converge::schemas
