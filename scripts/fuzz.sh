#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (build-fuzz/) and runs each one for a while.
#
#   scripts/fuzz.sh                 every target, 20 s each (what scripts/test.sh runs)
#   scripts/fuzz.sh --seconds 600   longer (scripts/soak.sh)
#   scripts/fuzz.sh envelope_fuzz   one target
#
# New inputs that libFuzzer finds go to build-fuzz/corpus/<target>/ (not committed); the
# checked-in seeds in common/fuzz/corpus/ are read only. A crash leaves its input in
# build-fuzz/artifacts/ and this script exits non-zero; replay it with
#   build-fuzz/common/<target> build-fuzz/artifacts/<file>
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

seconds=20 targets=()
while (($#)); do
  case "$1" in
    --seconds) seconds="$2"; shift ;;
    --seconds=*) seconds="${1#*=}" ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown argument: $1 (see --help)" ;;
    *) targets+=("$1") ;;
  esac
  shift
done
((${#targets[@]})) || targets=(envelope_fuzz config_fuzz)

ensure_packages
build_dir="$CONVERGE_ROOT/build-fuzz"
if [[ ! -f "$build_dir/CMakeCache.txt" ]]; then
  log "configuring $build_dir (clang, libFuzzer)"
  cmake -S "$CONVERGE_ROOT" -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCONVERGE_FUZZ=ON \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ >/dev/null
fi
log "building ${targets[*]} ($build_dir)"
if ! cmake --build "$build_dir" --target "${targets[@]}" -j"$(nproc)" >"$build_dir/build.log" 2>&1; then
  grep -E -B2 -A8 'error|Error' "$build_dir/build.log" | head -80 >&2
  die "fuzz build failed; full log: $build_dir/build.log"
fi

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
mkdir -p "$build_dir/artifacts"
rc=0
for t in "${targets[@]}"; do
  name="${t%_fuzz}"
  corpus="$build_dir/corpus/$name"
  mkdir -p "$corpus"
  seeds=()
  [[ -d "$CONVERGE_ROOT/common/fuzz/corpus/$name" ]] && seeds+=("$CONVERGE_ROOT/common/fuzz/corpus/$name")
  dict=()
  [[ -f "$CONVERGE_ROOT/common/fuzz/$name.dict" ]] && dict+=("-dict=$CONVERGE_ROOT/common/fuzz/$name.dict")
  log "fuzzing $t for ${seconds}s"
  if "$build_dir/common/$t" "$corpus" "${seeds[@]}" "${dict[@]}" -max_total_time="$seconds" \
       -max_len=4096 -artifact_prefix="$build_dir/artifacts/$t-" -print_final_stats=1 \
       >"$build_dir/$t.log" 2>&1; then
    grep -E '^stat::number_of_executed_units|^Done' "$build_dir/$t.log" | sed "s/^/  $t: /" >&2 || true
  else
    tail -40 "$build_dir/$t.log" >&2
    log "$t FAILED; inputs in $build_dir/artifacts/"
    rc=1
  fi
done
exit "$rc"
