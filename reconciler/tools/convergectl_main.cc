// convergectl: the operations CLI for Converge.
//
//   convergectl migrate | version
//   convergectl status
//   convergectl dlq list|show|replay|discard
//   convergectl keys list|park|unpark
//
// Commands live in reconciler/src/ctl/ (one file per group, registered statically; see
// ctl.h). `convergectl help` lists them; docs/operations.md is the operator's guide. Exit
// codes: 0 ok, 1 failed, 2 usage, 3 database unreachable, 4 not found, 5 schema missing/old.
// `convergectl --help-markdown` prints every command's usage as Markdown: the convergectl
// section of docs/configuration.md (docs_configuration_test fails when they disagree).
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "ctl/ctl.h"

namespace {

void PrintMarkdown(std::ostream& os) {
  os << "## `convergectl`\n\n"
        "The operations CLI: schema migrations, status, dead letters, parked keys, flows. Every "
        "command takes `--db URL` (default `$CONVERGE_PG_URL`) and `--output table|json`; a "
        "repair also takes `--dry-run`, `--reason` (required, written to "
        "`converge.audit_log`) and `--actor`. Exit codes: 0 ok, 1 failed, 2 usage, 3 database "
        "unreachable, 4 not found, 5 schema missing or too old.\n";
  for (const auto& [path, spec] : converge::ctl::Registry::Get().commands()) {
    std::ostringstream usage;
    converge::ctl::PrintCommandUsage(spec, usage);
    os << "\n### `convergectl " << path << "`\n\n```text\n" << usage.str() << "```\n";
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() == 1 && args[0] == "--help-markdown") {
    PrintMarkdown(std::cout);
    return 0;
  }
  const int rc = converge::ctl::RunMain(args, std::cout, std::cerr);
  std::cout.flush();
  return rc;
}
