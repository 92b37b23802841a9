#!/usr/bin/env bash
# scripts_lib_test: the helpers of scripts/lib.sh under the scripts' own shell options
# (set -euo pipefail). Runs while scripts/services.sh runs the services (integration label).
#  * services_running is true while they run: test.sh, demo.sh and bench.sh stop at exit only
#    the services they started, and a false "not running" made them stop the user's services
#    (a `grep -q` on the status output died of SIGPIPE under pipefail, every time);
#  * it is false for a state directory where nothing runs.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
fail=0
for i in 1 2 3 4 5; do
  if ! services_running; then
    echo "FAIL: services_running is false (try $i) while scripts/services.sh status says:" >&2
    "$CONVERGE_ROOT/scripts/services.sh" status >&2 || true
    fail=1
    break
  fi
done
empty="$(mktemp -d)"
trap 'rm -rf "$empty"' EXIT
if CONVERGE_STATE_DIR="$empty" services_running; then
  echo "FAIL: services_running is true for an empty state directory" >&2
  fail=1
fi
((fail == 0)) && echo "ok"
exit "$fail"
