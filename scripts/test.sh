#!/usr/bin/env bash
# Installs what is missing, builds, starts the services and runs every test.
#
#   scripts/test.sh                       the whole suite (unit, integration, robustness)
#   scripts/test.sh --sanitize=address    the same under ASan+UBSan (build-asan/)
#   scripts/test.sh --sanitize=thread     the same under TSan (build-tsan/)
#   scripts/test.sh --label unit          one label only (unit | integration | robustness | fuzz)
#   scripts/test.sh -R relay              tests whose name matches a regex
#
# The full run ends with the libFuzzer targets (scripts/fuzz.sh, clang, build-fuzz/), each for
# $CONVERGE_FUZZ_SECONDS seconds (default 20).
#
# Exits non-zero when any test fails. Services this script started are stopped on exit,
# also on failure or Ctrl-C; services that were already running are left alone.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

sanitize="" label="" regex=""
while (($#)); do
  case "$1" in
    --sanitize=*) sanitize="${1#*=}" ;;
    --label) label="$2"; shift ;;
    --label=*) label="${1#*=}" ;;
    -R) regex="$2"; shift ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
  shift
done

build_dir="$CONVERGE_BUILD_DIR"
cmake_args=()
case "$sanitize" in
  "") ;;
  address) build_dir="$CONVERGE_ROOT/build-asan"; cmake_args+=(-DCONVERGE_SANITIZE=address) ;;
  thread) build_dir="$CONVERGE_ROOT/build-tsan"; cmake_args+=(-DCONVERGE_SANITIZE=thread) ;;
  *) die "--sanitize must be address or thread" ;;
esac

ensure_packages
build_tree "$build_dir" "${cmake_args[@]}"

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
eval "$(CONVERGE_DEVKAFKA_BIN="$build_dir/bin/converge-devkafka" "$services" start)"
export CONVERGE_BIN_DIR="$build_dir/bin"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$CONVERGE_ROOT/scripts/lsan.supp:print_suppressions=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}"

ctest_args=(--test-dir "$build_dir" --output-on-failure --no-tests=error)
[[ -n "$regex" ]] && ctest_args+=(-R "$regex")

# True when the label (and -R, if given) selects at least one test. A phase that selects none
# is skipped: `-R clock_jumps` must not fail the unit|integration phase for matching nothing.
# Without -R an empty label still runs, and --no-tests=error fails it.
selects_tests() {
  [[ -z "$regex" ]] && return 0
  ctest --test-dir "$build_dir" -N -L "$1" -R "$regex" | grep 'Total Tests: [1-9]' >/dev/null
}

rc=0
# Unit and integration tests use private databases and topics: run them two at a time.
# Robustness tests restart shared services: run them alone, after the others.
if [[ -z "$label" || ( "$label" != robustness && "$label" != fuzz ) ]]; then
  lbl="${label:-unit|integration}"
  if selects_tests "$lbl"; then
    log "ctest -L '$lbl'"
    ctest "${ctest_args[@]}" -L "$lbl" -j2 || rc=1
  fi
fi
if [[ -z "$label" || "$label" == robustness ]]; then
  if ctest --test-dir "$build_dir" -N -L robustness ${regex:+-R "$regex"} |
    grep 'Total Tests: [1-9]' >/dev/null; then
    log "ctest -L robustness"
    ctest "${ctest_args[@]}" -L robustness -j1 || rc=1
    # The robustness scenarios' table and "N passed, N failed" (docs/reliability.md).
    summary="$build_dir/tests/robustness/robustness_summary"
    if [[ -x "$summary" && -d "$build_dir/robustness-results" ]]; then
      "$summary" "$build_dir/robustness-results" || rc=1
    fi
  fi
fi
if [[ ( -z "$label" && -z "$regex" && -z "$sanitize" ) || "$label" == fuzz ]]; then
  "$CONVERGE_ROOT/scripts/fuzz.sh" --seconds "${CONVERGE_FUZZ_SECONDS:-20}" || rc=1
fi
exit "$rc"
