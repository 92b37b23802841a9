// Failpoints: named places in the code where a robustness test can make the process die at an
// exact moment (for example "after the broker confirmed, before the outbox rows were deleted").
//
// They are switched on only through the environment of a process started by a test:
//
//   CONVERGE_FAILPOINTS="relay.after_publish=kill@3,consumer.after_commit=kill"
//
// `kill` raises SIGKILL on the first hit, `kill@N` on the Nth hit; `abort` calls std::abort.
// Unknown actions are reported once on stderr and ignored. With the variable unset a failpoint
// costs one relaxed atomic load. Failpoint names are listed in docs/reliability.md.
#pragma once

#include <string_view>

namespace converge {

// Evaluates the failpoint `name`; returns normally unless the configured action kills the
// process.
void Failpoint(std::string_view name);

// Re-reads CONVERGE_FAILPOINTS (tests that set the variable in-process call this).
void ReloadFailpoints();

}  // namespace converge
