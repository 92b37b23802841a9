#!/usr/bin/env bash
# The Converge demo on the embedded defaults: installs what is missing, builds, starts
# PostgreSQL, mosquitto and converge-devkafka, migrates, and then shows the guarantee path:
#   1. a service writes business rows and outbox messages in ONE transaction (plain SQL);
#   2. a rolled-back transaction leaves no message behind;
#   3. converge-relay publishes the committed rows to Kafka, in key order;
#   4. the relay is killed with kill -9 mid-stream and restarted: nothing is lost;
#   5. an independent Kafka consumer (kcat) reads the topic back with its CloudEvents headers;
#   6. the shop (examples/README.md): orders flow through inventory, payment and shipping
#      services exactly once; shipping sends a "deliver" command to a simulated delivery device
#      over MQTT (devices go offline and online) and completes on its ack; stock-outs and
#      declined payments are compensated (converge-reconciler drives deadlines); the relay is
#      killed once more mid-stream and commands are published twice on purpose; the report
#      checks that every order ended completed XOR compensated and stock and money add up, and
#      shows the order latency of the steady state apart from the relay kill window.
# Processes it started are stopped on exit, also on failure or Ctrl-C.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_packages
build_tree "$CONVERGE_BUILD_DIR"
services="$CONVERGE_ROOT/scripts/services.sh"
started_here=0
services_running || started_here=1
relay_pid="" reconciler_pid="" shop_pid="" sim_pid=""
cleanup() {
  local rc=$?
  for p in $shop_pid $sim_pid $reconciler_pid $relay_pid; do
    kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true
  done
  ((started_here)) && "$services" stop >/dev/null 2>&1 || true
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
eval "$("$services" start)"
bin="$CONVERGE_BUILD_DIR/bin"
psql_() { psql "$CONVERGE_PG_URL" -v ON_ERROR_STOP=1 -qAt "$@"; }
topic="demo-orders-$(date +%s)"
relay_log="$CONVERGE_STATE_DIR/demo-relay.log"

log "1. migrate the converge schema"
"$bin/convergectl" migrate

log "2. an order service writes orders and outbox messages in one transaction"
psql_ >/dev/null <<SQL
CREATE TABLE IF NOT EXISTS demo_orders (id text PRIMARY KEY, total numeric NOT NULL);
BEGIN;
INSERT INTO demo_orders SELECT 'order-' || g, g * 10 FROM generate_series(1, 200) g
  ON CONFLICT DO NOTHING;
SELECT count(converge.enqueue('$topic', 'customer-' || (g % 20), 'com.example.order.placed',
                              jsonb_build_object('order', 'order-' || g, 'total', g * 10)))
  FROM generate_series(1, 200) g;
COMMIT;
-- A failed business transaction: its message is rolled back with it.
BEGIN;
SELECT converge.enqueue('$topic', 'customer-x', 'com.example.order.placed', '{"order": "ghost"}');
ROLLBACK;
SQL
echo "outbox rows waiting:  $(psql_ -c "SELECT count(*) FROM converge.outbox WHERE topic = '$topic'")"
echo "ghost order messages: $(psql_ -c "SELECT count(*) FROM converge.outbox WHERE payload::text LIKE '%ghost%'")"
echo "per-key sequence of customer-1: $(psql_ -c "SELECT string_agg(seq::text, ',' ORDER BY seq) FROM converge.outbox WHERE topic = '$topic' AND key = 'customer-1'")"

log "3. converge-relay publishes them; it is killed with kill -9 once mid-stream"
psql_ -c "SELECT count(converge.enqueue('$topic', 'customer-' || (g % 20), 'com.example.order.placed',
                                        jsonb_build_object('order', 'late-' || g)))
            FROM generate_series(1, 2000) g" >/dev/null
"$bin/converge-relay" --metrics.port=0 --relay.batch_size=50 --relay.lease_ttl=6s \
  --relay.lease_renew_interval=1s --relay.publish_timeout=2500ms --kafka.message.timeout.ms=1500 \
  >"$relay_log" 2>&1 &
relay_pid=$!
sleep 1.5
kill -9 "$relay_pid"; wait "$relay_pid" 2>/dev/null || true
echo "relay killed; rows still in the outbox: $(psql_ -c "SELECT count(*) FROM converge.outbox WHERE topic = '$topic'")"
"$bin/converge-relay" --metrics.port=0 --relay.lease_ttl=6s --relay.lease_renew_interval=1s \
  --relay.publish_timeout=2500ms --kafka.message.timeout.ms=1500 --relay.takeover_grace=500ms \
  >>"$relay_log" 2>&1 &
relay_pid=$!
for _ in $(seq 300); do
  left=$(psql_ -c "SELECT count(*) FROM converge.outbox WHERE topic = '$topic'")
  printf '\r  outbox backlog: %5s' "$left"
  [[ "$left" == 0 ]] && break
  sleep 0.2
done
echo
[[ "$left" == 0 ]] || die "relay did not drain the outbox; see $relay_log"
kill -TERM "$relay_pid"; wait "$relay_pid" || true; relay_pid=""

log "4. an independent Kafka consumer reads the topic back"
kcat -C -b "$CONVERGE_KAFKA_BROKERS" -t "$topic" -o beginning -e -q \
  -f '%k\t%h\t%s\n' >"$CONVERGE_STATE_DIR/demo-topic.txt" 2>/dev/null || true
received=$(wc -l <"$CONVERGE_STATE_DIR/demo-topic.txt")
unique=$(grep -o 'ce_id=[^,]*' "$CONVERGE_STATE_DIR/demo-topic.txt" | sort -u | wc -l)
echo "first record: $(head -1 "$CONVERGE_STATE_DIR/demo-topic.txt" | cut -c1-300)"

log "report"
committed=$(psql_ -c "SELECT coalesce(sum(last_seq), 0) FROM converge.outbox_keys WHERE topic = '$topic'")
ghosts=$(grep -c '"ghost"' "$CONVERGE_STATE_DIR/demo-topic.txt" || true)
printf '  committed messages      %s\n' "$committed"
printf '  records on Kafka        %s (duplicates from the kill: %s, absorbed by consumers'"'"' dedupe)\n' \
  "$received" "$((received - unique))"
printf '  distinct message ids    %s\n' "$unique"
printf '  lost                    %s\n' "$((committed - unique))"
printf '  rolled-back published   %s\n' "$ghosts"
[[ "$unique" == "$committed" && "$ghosts" == 0 ]] || die "the demo lost or invented messages"

log "6. the shop: orders -> inventory -> payment, compensated when stock runs out or a card is declined"
shop_log="$CONVERGE_STATE_DIR/demo-shop.log"
relay_flags=(--metrics.port=9464 --relay.lease_ttl=6s --relay.lease_renew_interval=1s
             --relay.takeover_grace=500ms --relay.publish_timeout=2500ms --kafka.message.timeout.ms=1500
             --relay.target=both --mqtt.url="$CONVERGE_MQTT_URL" --mqtt.topics='devices/#')
# A fresh shop per run: the demo's own schema, reset so the report covers this run only.
psql_ -c "DROP SCHEMA IF EXISTS shop CASCADE" >/dev/null
psql_ -c "DELETE FROM converge.flows WHERE flow_type = 'shop.order'" >/dev/null
psql_ -c "DELETE FROM converge.device_commands WHERE device_id LIKE 'truck-%'" >/dev/null
# converge-devkafka keeps its topics in memory: after a services restart the shop topics start
# again at offset 0, so positions stored by an earlier demo run would skip the new records.
psql_ >/dev/null <<SQL
DELETE FROM converge.consumer_offsets WHERE consumer_group LIKE 'shop-%';
DELETE FROM converge.inbox WHERE consumer_group LIKE 'shop-%';
DELETE FROM converge.consumer_key_seq WHERE consumer_group LIKE 'shop-%';
DELETE FROM converge.dead_letters WHERE consumer_group LIKE 'shop-%';
SQL
"$bin/converge-shop" setup --skus 10 --stock 55 --shipping 1
"$bin/converge-device-sim" --url "$CONVERGE_MQTT_URL" --devices 5 --prefix truck- \
  --toggle-probability 0.05 --duration 900 --seed 7 >"$CONVERGE_STATE_DIR/demo-devices.log" 2>&1 &
sim_pid=$!
"$bin/converge-relay" "${relay_flags[@]}" >>"$relay_log" 2>&1 &
relay_pid=$!
"$bin/converge-reconciler" --metrics.port=9465 --reconciler.poll_interval=500ms \
  --devices.command_resend_interval=5s >"$shop_log" 2>&1 &
reconciler_pid=$!
# --fetch-wait-ms 10: converge-devkafka (librdkafka's mock) answers a fetch only when
# fetch.wait.max.ms runs out; a real Kafka broker answers at once and needs no such setting.
"$bin/converge-shop" services --metrics-port 9466 --devices 5 --fetch-wait-ms 10 >>"$shop_log" 2>&1 &
shop_pid=$!
for _ in $(seq 100); do
  grep -q 'shop services running' "$shop_log" && break
  kill -0 "$shop_pid" 2>/dev/null || die "converge-shop services exited; see $shop_log"
  sleep 0.2
done
grep -q 'shop services running' "$shop_log" || die "converge-shop services did not start; see $shop_log"
sleep 4  # the consumers join their Kafka groups and claim their partitions
seed=$(date +%s)
in_flight() { psql_ -c "SELECT count(*) FROM converge.flows WHERE flow_type = 'shop.order' AND state IN ('running', 'compensating')"; }
shop_backlog() { psql_ -c "SELECT count(*) FROM converge.outbox WHERE topic LIKE 'shop.%' OR topic LIKE 'devices/%'"; }
# Waits (up to $1 seconds) until no order is in flight, showing progress.
wait_settled() {
  local n
  for _ in $(seq $(($1 * 5))); do
    n=$(in_flight)
    printf '\r  orders in flight: %5s' "$n"
    [[ "$n" == 0 ]] && break
    sleep 0.2
  done
  echo
}

log "6a. steady state: 150 orders at 50/s"
"$bin/converge-shop" place --orders 150 --rate 50 --decline-percent 10 --seed "$seed"
wait_settled 60

log "6b. the relay is killed with kill -9 while 100 more orders are placed"
"$bin/converge-shop" mark disruption_start
kill -9 "$relay_pid"; wait "$relay_pid" 2>/dev/null || true
killed_at=$(date +%s.%N)
echo "  relay killed; its replacement starts at once and takes over the slots when their lease expires"
"$bin/converge-relay" "${relay_flags[@]}" >>"$relay_log" 2>&1 &
relay_pid=$!
"$bin/converge-shop" place --orders 100 --rate 50 --decline-percent 10 --seed "$((seed + 1))"
for _ in $(seq 300); do
  left=$(shop_backlog)
  printf '\r  outbox backlog: %5s' "$left"
  [[ "$left" == 0 ]] && break
  sleep 0.2
done
echo
[[ "$left" == 0 ]] || die "the restarted relay did not drain the outbox; see $relay_log"
"$bin/converge-shop" mark disruption_end
awk -v a="$killed_at" -v b="$(date +%s.%N)" 'BEGIN { printf "  relay recovered: backlog drained %.1f s after the kill\n", b - a }'
wait_settled 120

log "6c. 25 stock commands published a second time, with their original message ids"
"$bin/converge-shop" duplicate --count 25

log "6d. steady state again: 100 orders at 50/s"
"$bin/converge-shop" place --orders 100 --rate 50 --decline-percent 10 --seed "$((seed + 2))"

log "report"
shop_rc=0
"$bin/converge-shop" report --wait 120 || shop_rc=$?
echo
"$bin/convergectl" status || true
echo
cat <<EOF
Where to look next:
  convergectl status | dlq list | keys list | flows list     ($bin/convergectl help)
  metrics: relay http://127.0.0.1:9464/metrics, reconciler :9465, shop services :9466
  logs:    $relay_log, $shop_log, $CONVERGE_STATE_DIR/demo-devices.log
  docs:    README.md, docs/architecture.md, docs/guarantees.md, examples/README.md
EOF
((shop_rc == 0)) || die "the shop's end state is not consistent (see the report above)"
