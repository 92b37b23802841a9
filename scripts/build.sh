#!/usr/bin/env bash
# Installs the Debian packages Converge needs (only what is missing) and builds it.
#
#   scripts/build.sh                      build/ (RelWithDebInfo), what test.sh and demo.sh use
#   scripts/build.sh --release DIR        a Release build in DIR (compose/Dockerfile uses this)
#
# The executables land in <build dir>/bin.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

build_dir="$CONVERGE_BUILD_DIR"
while (($#)); do
  case "$1" in
    --release) export CONVERGE_BUILD_TYPE=Release; build_dir="${2:?--release needs a directory}"; shift ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
  shift
done
ensure_packages
build_tree "$build_dir"
log "built: $build_dir/bin"
