#!/usr/bin/env bash
# Validates compose/ without a Docker engine (CI has none):
#   1. docker-compose parses the stack (with and without the required password);
#   2. every port is published on 127.0.0.1 only;
#   3. the image is built by scripts/build.sh, the same script developers run;
#   4. the runtime stage installs a Debian package for every shared library that the built
#      executables link (ldd of the real binaries, mapped to packages with dpkg -S).
# Usage: check_compose.sh <bin dir>
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="${1:?usage: check_compose.sh <bin dir>}"
compose="$root/compose/docker-compose.yml"
dockerfile="$root/compose/Dockerfile"
fail() { echo "check_compose: $*" >&2; exit 1; }

POSTGRES_PASSWORD=test docker-compose -f "$compose" config -q || fail "docker-compose config rejected $compose"
empty_env=$(mktemp)
trap 'rm -f "$empty_env"' EXIT
if out=$(env -u POSTGRES_PASSWORD docker-compose -f "$compose" --env-file "$empty_env" config -q 2>&1); then
  fail "the stack starts without POSTGRES_PASSWORD; it must refuse"
fi
grep -q 'POSTGRES_PASSWORD' <<<"$out" || fail "the missing-password error does not name POSTGRES_PASSWORD: $out"

# Ports: every published port binds loopback.
while read -r line; do
  [[ "$line" =~ ^-\ \"?127\.0\.0\.1: ]] || fail "port not bound to 127.0.0.1: $line"
done < <(awk '/^    ports:/{p=1;next} p&&/^      -/{sub(/^ +/,"");print;next} {p=0}' "$compose")

# The build stage runs the developers' build script.
grep -qE '^RUN .*scripts/build\.sh --release' "$dockerfile" || fail "the Dockerfile does not build with scripts/build.sh"

# Runtime packages cover what the binaries link directly (their DT_NEEDED entries); the
# packages' own dependencies bring the rest. libc, libstdc++ and libgcc are in the base image.
runtime=$(sed -n '/runtime-packages: begin/,/runtime-packages: end/p' "$dockerfile" | tr ' \\' '\n\n' | grep -E '^[a-z0-9][a-z0-9.+-]+$' || true)
missing=()
bins=()
for name in converge-relay convergectl converge-reconciler converge-shop converge-device-sim; do
  [[ -x "$bin/$name" ]] && bins+=("$bin/$name")
done
[[ -x "$bin/converge-relay" && -x "$bin/convergectl" ]] || fail "converge-relay and convergectl must be built in $bin"
for exe in "${bins[@]}"; do
  paths=$(ldd "$exe" | awk '/=> \//{print $1, $3}')
  for soname in $(objdump -p "$exe" | awk '/NEEDED/{print $2}'); do
    path=$(awk -v n="$soname" '$1==n{print $2}' <<<"$paths")
    [[ -n "$path" ]] || fail "$(basename "$exe"): $soname not found by ldd"
    pkg=$(dpkg -S "$(readlink -f "$path")" 2>/dev/null | head -1 | cut -d: -f1 || true)
    [[ -n "$pkg" ]] || pkg=$(dpkg -S "$path" 2>/dev/null | head -1 | cut -d: -f1 || true)
    [[ -n "$pkg" ]] || fail "$(basename "$exe"): no Debian package owns $path"
    case "$pkg" in libc6|libgcc-s1|libstdc++6) continue ;; esac
    grep -qx "$pkg" <<<"$runtime" || missing+=("$pkg (for $(basename "$exe"): $soname)")
  done
done
((${#missing[@]} == 0)) || fail "runtime stage lacks packages: ${missing[*]}"
echo "check_compose: ok (${#bins[@]} executables checked)"
