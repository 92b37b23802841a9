# Shared by scripts/*.sh. Source it; do not run it.
# Everything here is idempotent: re-running a script does no work that is already done.

CONVERGE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONVERGE_STATE_DIR="${CONVERGE_STATE_DIR:-$CONVERGE_ROOT/.state}"
CONVERGE_BUILD_DIR="${CONVERGE_BUILD_DIR:-$CONVERGE_ROOT/build}"

# Debian 12 packages the project needs to build, test and run.
CONVERGE_PACKAGES=(
  build-essential cmake pkg-config git
  librdkafka-dev libpqxx-dev libpoco-dev libpaho-mqttpp-dev libpaho-mqtt-dev libssl-dev
  googletest libgtest-dev libgmock-dev libbenchmark-dev
  postgresql postgresql-contrib mosquitto mosquitto-clients
  kcat faketime nftables docker-compose ccache clang libclang-rt-14-dev
)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root to run: $* (install sudo or run as root)"; fi
}

# Installs the missing Debian packages. apt-get update runs only when something is missing.
ensure_packages() {
  local missing=() p
  for p in "${CONVERGE_PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
}

# Configures (once) and builds. Extra arguments go to cmake at configure time.
build_tree() {
  local build_dir="$1"; shift
  if [[ ! -f "$build_dir/CMakeCache.txt" ]]; then
    log "configuring $build_dir"
    cmake -S "$CONVERGE_ROOT" -B "$build_dir" -DCMAKE_BUILD_TYPE="${CONVERGE_BUILD_TYPE:-RelWithDebInfo}" "$@" >/dev/null
  fi
  log "building ($build_dir)"
  mkdir -p "$build_dir"
  if ! cmake --build "$build_dir" -j"$(nproc)" >"$build_dir/build.log" 2>&1; then
    grep -E -B2 -A8 'error|Error' "$build_dir/build.log" | head -80 >&2
    die "build failed; full log: $build_dir/build.log"
  fi
  grep -E 'warning:' "$build_dir/build.log" | sort -u | head -20 >&2 || true
}

# True when scripts/services.sh already runs PostgreSQL for this checkout (then a script that
# did not start the services must not stop them). Not `grep -q`: it exits at the first line, and
# under `set -o pipefail` the status command's SIGPIPE on its next lines made this false at
# random, so a script stopped services it had not started.
services_running() {
  "$CONVERGE_ROOT/scripts/services.sh" status 2>/dev/null | grep '^postgresql  running' >/dev/null
}
