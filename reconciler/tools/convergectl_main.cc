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
#include <iostream>
#include <string>
#include <vector>

#include "ctl/ctl.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  const int rc = converge::ctl::RunMain(args, std::cout, std::cerr);
  std::cout.flush();
  return rc;
}
