#!/usr/bin/env bash
# Generates docs/configuration.md from the executables themselves, so the reference cannot
# drift from the code:
#   converge-reconciler, converge-relay   their declared config schema (--help-markdown)
#   convergectl                           its command registry (--help-markdown)
#   converge-device-sim, converge-devkafka, converge-shop   their --help text
#
#   docs/tools/gen_configuration.sh build/bin > docs/configuration.md      regenerate
#   docs/tools/gen_configuration.sh build/bin --check                      diff (docs_configuration_test)
#
# The relay's section stays LAST: relay_config_doc_test (outbox-relay/CMakeLists.txt) compares
# the file from `## converge-relay` to its end with `converge-relay --help-markdown`.
set -euo pipefail
bin="${1:?usage: gen_configuration.sh <bin dir> [--check]}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

help_block() {  # <title> <intro> <command...>: a section holding the program's --help
  local title="$1" intro="$2"
  shift 2
  local text
  text=$("$@") || { echo "gen_configuration: '$*' failed" >&2; return 1; }
  printf '## `%s`\n\n%s\n\n```text\n%s\n```\n\n' "$title" "$intro" "$text"
}

generate() {
  cat <<'MD'
# Configuration reference

Every executable a user runs, generated from the programs themselves by
`docs/tools/gen_configuration.sh <bin dir> > docs/configuration.md`: `converge-reconciler` and
`converge-relay` from their declared configuration schema (`--help-markdown`), `convergectl`
from its command registry (`--help-markdown`), the others from their `--help`. The test
`docs_configuration_test` regenerates the file and fails when it differs, and
`relay_config_doc_test` checks the relay's section, so a flag cannot change without this page.

| executable | what it is | section |
| --- | --- | --- |
| `converge-relay` | the outbox relay sidecar: outbox rows → Kafka and/or MQTT | [converge-relay](#converge-relay) |
| `converge-reconciler` | flow deadlines (re-emit, compensate, park), the MQTT device sweep, stuck-things metrics | [converge-reconciler](#converge-reconciler) |
| `convergectl` | operations CLI: migrate, status, dead letters, keys, flows | [convergectl](#convergectl) |
| `converge-device-sim` | simulated MQTT devices (demo, tests, load) | [converge-device-sim](#converge-device-sim) |
| `converge-devkafka` | librdkafka's mock Kafka cluster as a program (development, demo, tests) | [converge-devkafka](#converge-devkafka) |
| `converge-shop` | the example shop's services and tools ([examples/README.md](../examples/README.md)) | [converge-shop](#converge-shop) |

`converge-relay` and `converge-reconciler` read their settings from, lowest precedence first:
built-in defaults, a config file (`--config=<path>` or `$CONVERGE_CONFIG`; `key = value` lines,
`[section]` headers), environment variables, then flags (`--key=value` or `--key value`; a
bool flag alone means true). Both also take `--help`, `--version`, and `--check-config`
(validates, prints the effective configuration with each value's source, secrets as `***`,
and exits). A secret (`database.url`, passwords) is never printed or logged; pass it through
the environment or a file readable only by the service, not a flag (flags show in `ps`).

MD
  "$bin/converge-reconciler" --help-markdown
  printf '\n'
  "$bin/convergectl" --help-markdown
  printf '\n'
  help_block converge-device-sim \
    "Many simulated devices in one process (pubsub-mqtt/README.md, docs/devices.md)." \
    "$bin/converge-device-sim" --help
  help_block converge-devkafka \
    "librdkafka's mock Kafka cluster (broker-adapters/README.md), for development, the demo and tests: not a real Kafka (topics in memory, no TLS or SASL). Prints bootstrap.servers=... (and control.port=...) once up; runs until SIGTERM or SIGINT." \
    "$bin/converge-devkafka" --help
  help_block converge-shop \
    "The example shop (examples/README.md). PostgreSQL, Kafka and MQTT come from the environment variables below; each command takes the flags shown." \
    "$bin/converge-shop" --help
  printf '## converge-relay\n\n'
  "$bin/converge-relay" --help-markdown
}

if [[ "${2:-}" == "--check" ]]; then
  diff -u "$root/docs/configuration.md" <(generate) ||
    { echo "docs/configuration.md is stale: run docs/tools/gen_configuration.sh $bin > docs/configuration.md" >&2; exit 1; }
  echo "docs/configuration.md matches the executables"
else
  generate
fi
