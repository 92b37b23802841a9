#!/usr/bin/env bash
# bench_smoke_test: runs converge-bench with tiny sizes against the services and checks that it
# exits 0 and prints every field the issue asks for (values are not judged: this is not a timed
# test). Needs the services' environment (scripts/services.sh); fails when they are missing.
set -euo pipefail
bench="$1"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
"$bench" --tiny --json --work-dir "$out/work" >"$out/result.json" 2>"$out/stderr" || {
  cat "$out/stderr" >&2
  echo "FAIL: converge-bench --tiny exited non-zero" >&2
  exit 1
}
cat "$out/result.json"
fail=0
for field in relay_kafka_vs_claim_delete relay_kafka_vs_naive relay_mqtt_vs_paho \
             consumer_batched_vs_ceiling consumer_single_vs_ceiling e2e_p99_ms_at_1000 \
             relay_commit_to_confirm_p99_le_ms_at_1000 \
             relay_rss_mb relay_idle_cpu_percent notes; do
  grep -q "\"$field\": " "$out/result.json" || { echo "FAIL: field $field missing" >&2; fail=1; }
done
# Every ratio that can be measured here must be a positive number.
for field in relay_kafka_vs_claim_delete relay_kafka_vs_naive relay_mqtt_vs_paho \
             consumer_batched_vs_ceiling \
             consumer_single_vs_ceiling e2e_p99_ms_at_1000 relay_rss_mb \
             relay_commit_to_confirm_p99_le_ms_at_1000; do
  grep -Eq "\"$field\": [0-9]+\.[0-9]+" "$out/result.json" ||
    { echo "FAIL: $field is not a number" >&2; fail=1; }
done
if command -v python3 >/dev/null; then
  python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$out/result.json" ||
    { echo "FAIL: output is not valid JSON" >&2; fail=1; }
fi
((fail == 0)) && echo "bench smoke: 1 passed, 0 failed"
exit "$fail"
