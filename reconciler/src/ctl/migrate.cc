// convergectl migrate | version: the schema commands (they open their own connection).
#include <iostream>

#include "converge/schemas/migrate.h"
#include "ctl.h"

namespace converge::ctl {
namespace {

int Migrate(Invocation& inv) {
  if (inv.db_url().empty())
    return inv.UsageError("no database: pass --db URL or set CONVERGE_PG_URL");
  schemas::MigrateOptions opts;
  opts.dry_run = inv.dry_run();
  opts.actor = "convergectl:" + DefaultActor();
  auto r = schemas::Migrate(inv.db_url(), opts);
  if (!r.ok()) return inv.Fail(r.status());
  if (inv.json()) {
    JsonWriter j;
    j.BeginObject().Key("dry_run").Bool(opts.dry_run).Key("version").Int(r->version);
    j.Key("already_applied").Int(static_cast<int64_t>(r->existing.size()));
    j.Key(opts.dry_run ? "would_apply" : "applied").BeginArray();
    for (const auto& m : r->applied) j.String(m.name);
    j.EndArray().EndObject();
    inv.out() << j.str() << "\n";
    return kExitOk;
  }
  for (const auto& m : r->applied)
    inv.out() << (opts.dry_run ? "would apply " : "applied ") << m.name << "\n";
  inv.out() << "schema version " << r->version << " (" << r->existing.size() << " already applied, "
            << r->applied.size() << (opts.dry_run ? " to apply)\n" : " applied now)\n");
  return kExitOk;
}

int Version(Invocation& inv) {
  const int schema = schemas::KnownMigrations().back().version;
  if (inv.json()) {
    JsonWriter j;
    j.BeginObject().Key("convergectl").String("0.1.0").Key("schema_version").Int(schema);
    j.EndObject();
    inv.out() << j.str() << "\n";
  } else {
    inv.out() << "convergectl 0.1.0, schema version " << schema << "\n";
  }
  return kExitOk;
}

const Registration kMigrate({.path = "migrate",
                             .summary = "apply the missing schema migrations",
                             .options = {{"dry-run", "", "list the migrations that would run"}},
                             .needs_db = false,
                             .run = Migrate});
const Registration kVersion({.path = "version",
                             .summary = "print the version and the known schema version",
                             .needs_db = false,
                             .run = Version});

}  // namespace
}  // namespace converge::ctl
