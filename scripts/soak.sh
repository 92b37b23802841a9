#!/usr/bin/env bash
# The soak tier of the robustness suite: the same scenarios as the CI tier (ctest label
# robustness, see docs/reliability.md) with 100,000 messages and 50 faults each, then the
# summary table and an "N passed, N failed" line.
#
#   scripts/soak.sh                          every scenario
#   scripts/soak.sh -R Postgres              scenarios whose gtest name matches a regex
#   CONVERGE_SEED=123 scripts/soak.sh -R PostgresImmediateRestart     replay one run
#
# Sizes (environment): CONVERGE_ROBUST_MESSAGES (default 100000), CONVERGE_ROBUST_FAULTS
# (default 50), CONVERGE_ROBUST_RATE (messages/s the writers aim for, default 400),
# CONVERGE_ROBUST_PARTITIONS (topic partitions, default 16). The build
# goes to $CONVERGE_BUILD_DIR (default build/); results files to
# <build>/robustness-results/<scenario>.result, process logs next to them in logs/.
# Exits non-zero when a scenario fails. Services this script started are stopped on exit.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

regex=""
while (($#)); do
  case "$1" in
    -R) regex="$2"; shift ;;
    -R*) regex="${1#-R}" ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
  shift
done

export CONVERGE_ROBUST_MESSAGES="${CONVERGE_ROBUST_MESSAGES:-100000}"
export CONVERGE_ROBUST_FAULTS="${CONVERGE_ROBUST_FAULTS:-50}"
export CONVERGE_ROBUST_RATE="${CONVERGE_ROBUST_RATE:-400}"
# librdkafka's mock keeps 5 MiB per partition: 16 partitions keep a backlog of 100k retained.
export CONVERGE_ROBUST_PARTITIONS="${CONVERGE_ROBUST_PARTITIONS:-16}"

build_dir="$CONVERGE_BUILD_DIR"
ensure_packages
build_tree "$build_dir"

services="$CONVERGE_ROOT/scripts/services.sh"
started_here=0
services_running || started_here=1
cleanup() {
  local rc=$?
  if ((started_here)); then "$services" stop >/dev/null 2>&1 || true; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# The shared services only carry data here; every fault goes to a private PostgreSQL cluster or
# a private converge-devkafka that the scenario starts itself.
eval "$(CONVERGE_DEVKAFKA_BIN="$build_dir/bin/converge-devkafka" "$services" start)"
export CONVERGE_BIN_DIR="$build_dir/bin"

log "soak: ${CONVERGE_ROBUST_MESSAGES} messages, ${CONVERGE_ROBUST_FAULTS} faults per scenario, ${CONVERGE_ROBUST_RATE}/s"
# The scenario binary is run directly (not through ctest, whose per-test TIMEOUT is sized for
# the CI tier): one gtest per scenario, results reset first, the summary table last.
results="$build_dir/robustness-results"
export CONVERGE_ROBUSTNESS_RESULTS="$results"
rm -rf "$results"
bin="$build_dir/tests/robustness/pipeline_robustness_test"
mapfile -t scenarios < <("$bin" --gtest_list_tests | awk '/^[^ ]/ {suite=$1} /^  / {print suite $1}')
rc=0 ran=0
for t in "${scenarios[@]}"; do
  [[ -n "$regex" && ! "$t" =~ $regex ]] && continue
  log "soak: $t"
  ran=$((ran + 1))
  "$bin" --gtest_color=no --gtest_filter="$t" || rc=1
done
((ran)) || die "no scenario matches '$regex' (see: $bin --gtest_list_tests)"
"$build_dir/tests/robustness/robustness_summary" "$results" || rc=1
exit "$rc"
