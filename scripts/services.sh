#!/usr/bin/env bash
# Starts, stops and inspects the throwaway services Converge's tests, demo and benchmarks use:
#   PostgreSQL 15   a private cluster (initdb as a non-root user) on 127.0.0.1
#   mosquitto       MQTT 3.1.1/5 broker on 127.0.0.1, persistence on
#   devkafka        converge-devkafka: librdkafka's mock Kafka cluster on 127.0.0.1
# All state lives in .state/ inside the checkout (git-ignored).
#
#   eval "$(scripts/services.sh start)"   start what is not running; print export lines
#   scripts/services.sh env               print the export lines again
#   scripts/services.sh status            what runs, where
#   scripts/services.sh stop              stop everything started here (state is kept)
#   scripts/services.sh clean             stop and delete .state/
# Fault injection for robustness tests:
#   pg-restart immediate|fast   pg-stop immediate|fast   pg-start
#   mqtt-kill   mqtt-stop   mqtt-start   kafka <control command>   (e.g. kafka broker-down -1)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PG_BIN=/usr/lib/postgresql/15/bin
PG_DIR="$CONVERGE_STATE_DIR/pg"
MQTT_DIR="$CONVERGE_STATE_DIR/mqtt"
KAFKA_DIR="$CONVERGE_STATE_DIR/kafka"
PORTS_FILE="$CONVERGE_STATE_DIR/ports"
DEVKAFKA_BIN="${CONVERGE_DEVKAFKA_BIN:-$CONVERGE_BUILD_DIR/bin/converge-devkafka}"

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
  local p="$1"
  while port_in_use "$p"; do p=$((p + 1)); done
  echo "$p"
}

# Ports are chosen once and remembered, so URLs stay the same across restarts.
load_ports() {
  mkdir -p "$CONVERGE_STATE_DIR"
  if [[ -f "$PORTS_FILE" ]]; then source "$PORTS_FILE"; return; fi
  PG_PORT=$(free_port "${CONVERGE_PG_PORT:-55432}")
  MQTT_PORT=$(free_port "${CONVERGE_MQTT_PORT:-18830}")
  KAFKA_CONTROL_PORT=$(free_port "${CONVERGE_KAFKA_CONTROL_PORT:-19092}")
  printf 'PG_PORT=%s\nMQTT_PORT=%s\nKAFKA_CONTROL_PORT=%s\n' "$PG_PORT" "$MQTT_PORT" \
    "$KAFKA_CONTROL_PORT" >"$PORTS_FILE"
}

# PostgreSQL refuses to run as root: run it as the `postgres` user when we are root.
pg_user() { if [[ $(id -u) -eq 0 ]]; then echo postgres; else id -un; fi; }
as_pg() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_running() { [[ -f "$PG_DIR/data/postmaster.pid" ]] && as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" status >/dev/null 2>&1; }

pg_start() {
  if [[ ! -f "$PG_DIR/data/PG_VERSION" ]]; then
    log "initdb (PostgreSQL 15, user $(pg_user))"
    mkdir -p "$PG_DIR/data" "$PG_DIR/run"
    [[ $(id -u) -eq 0 ]] && chown -R postgres:postgres "$PG_DIR"
    chmod 700 "$PG_DIR/data"
    as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U converge --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    cat >>"$PG_DIR/data/postgresql.conf" <<CONF
# Converge throwaway cluster: loopback only, private socket directory.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_DIR/run'
max_connections = 300
shared_buffers = 256MB
logging_collector = on
log_directory = '$PG_DIR/log'
log_min_messages = warning
CONF
  fi
  if ! pg_running; then
    log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 start >/dev/null
  fi
  if ! as_pg "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U converge -d postgres -Atqc \
       "SELECT 1 FROM pg_database WHERE datname = 'converge'" | grep -q 1; then
    as_pg "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U converge converge
  fi
}

pg_stop() {
  local mode="${1:-fast}"
  if pg_running; then as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m "$mode" -w -t 60 stop >/dev/null || true; fi
}

mqtt_pid() { [[ -f "$MQTT_DIR/mosquitto.pid" ]] && cat "$MQTT_DIR/mosquitto.pid"; }
mqtt_running() { local p; p=$(mqtt_pid) && kill -0 "$p" 2>/dev/null; }

mqtt_start() {
  mkdir -p "$MQTT_DIR/data"
  cat >"$MQTT_DIR/mosquitto.conf" <<CONF
# Converge development broker: loopback only. Anonymous access is allowed on this private
# listener; the authenticated TLS setup for production is in docs/operations.md.
user $(id -un)
per_listener_settings false
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence true
persistence_location $MQTT_DIR/data/
autosave_interval 1
max_queued_messages 100000
max_inflight_messages 100
log_dest file $MQTT_DIR/mosquitto.log
log_type error
log_type warning
log_type notice
CONF
  if ! mqtt_running; then
    log "starting mosquitto on 127.0.0.1:$MQTT_PORT"
    mosquitto -c "$MQTT_DIR/mosquitto.conf" -d
    # mosquitto -d does not write a pid file unless told to; find the daemon by its config.
    for _ in $(seq 50); do
      local p; p=$(pgrep -f "mosquitto -c $MQTT_DIR/mosquitto.conf" | head -1 || true)
      if [[ -n "$p" ]] && port_in_use "$MQTT_PORT"; then echo "$p" >"$MQTT_DIR/mosquitto.pid"; return; fi
      sleep 0.1
    done
    die "mosquitto did not start; see $MQTT_DIR/mosquitto.log"
  fi
}

mqtt_stop() {
  local sig="${1:-TERM}" p
  if p=$(mqtt_pid) && kill -0 "$p" 2>/dev/null; then
    kill -"$sig" "$p" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
  fi
  rm -f "$MQTT_DIR/mosquitto.pid"
}

kafka_pid() { [[ -f "$KAFKA_DIR/devkafka.pid" ]] && cat "$KAFKA_DIR/devkafka.pid"; }
kafka_running() { local p; p=$(kafka_pid) && kill -0 "$p" 2>/dev/null; }

kafka_start() {
  [[ -x "$DEVKAFKA_BIN" ]] || die "converge-devkafka not built ($DEVKAFKA_BIN); run scripts/test.sh or build first"
  mkdir -p "$KAFKA_DIR"
  if ! kafka_running; then
    log "starting converge-devkafka (librdkafka mock cluster)"
    rm -f "$KAFKA_DIR/bootstrap"
    # --partitions applies to topics created through devkafka (--topic, create-topic); topics
    # that clients auto-create get 4 partitions (hard-coded in librdkafka 2.0.2's mock).
    nohup "$DEVKAFKA_BIN" --brokers "${CONVERGE_KAFKA_BROKER_COUNT:-3}" \
      --partitions "${CONVERGE_KAFKA_PARTITIONS:-8}" --bootstrap-file "$KAFKA_DIR/bootstrap" \
      --control-port "$KAFKA_CONTROL_PORT" >"$KAFKA_DIR/devkafka.log" 2>&1 &
    echo $! >"$KAFKA_DIR/devkafka.pid"
    for _ in $(seq 100); do [[ -s "$KAFKA_DIR/bootstrap" ]] && return; sleep 0.1; done
    die "converge-devkafka did not start; see $KAFKA_DIR/devkafka.log"
  fi
}

kafka_stop() {
  local p
  if p=$(kafka_pid) && kill -0 "$p" 2>/dev/null; then
    kill "$p" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$p" 2>/dev/null || true
  fi
  rm -f "$KAFKA_DIR/devkafka.pid"
}

kafka_control() {
  local reply
  exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_CONTROL_PORT" || die "devkafka control port not reachable"
  printf '%s\n' "$*" >&3
  IFS= read -r -t 10 reply <&3 || true
  exec 3>&-
  echo "$reply"
  [[ "$reply" == ok* ]]
}

print_env() {
  echo "export CONVERGE_PG_URL='postgresql://converge@127.0.0.1:$PG_PORT/converge'"
  [[ -s "$KAFKA_DIR/bootstrap" ]] && echo "export CONVERGE_KAFKA_BROKERS='$(cat "$KAFKA_DIR/bootstrap")'"
  echo "export CONVERGE_KAFKA_CONTROL='127.0.0.1:$KAFKA_CONTROL_PORT'"
  echo "export CONVERGE_MQTT_URL='mqtt://127.0.0.1:$MQTT_PORT'"
  echo "export CONVERGE_STATE_DIR='$CONVERGE_STATE_DIR'"
  echo "export CONVERGE_SERVICES='$CONVERGE_ROOT/scripts/services.sh'"
}

status() {
  local s
  pg_running && s=running || s=stopped; echo "postgresql  $s  127.0.0.1:$PG_PORT  ($PG_DIR)"
  mqtt_running && s=running || s=stopped; echo "mosquitto   $s  127.0.0.1:$MQTT_PORT  ($MQTT_DIR)"
  kafka_running && s=running || s=stopped
  echo "devkafka    $s  $(cat "$KAFKA_DIR/bootstrap" 2>/dev/null || echo -)  control 127.0.0.1:$KAFKA_CONTROL_PORT"
}

main() {
  local cmd="${1:-}"; shift || true
  load_ports
  case "$cmd" in
    start)
      pg_start; mqtt_start; kafka_start
      print_env ;;
    env) print_env ;;
    status) status ;;
    stop) kafka_stop; mqtt_stop; pg_stop fast ;;
    clean) kafka_stop; mqtt_stop; pg_stop immediate; rm -rf "$CONVERGE_STATE_DIR" ;;
    pg-restart) pg_stop "${1:-fast}"; pg_start ;;
    pg-stop) pg_stop "${1:-fast}" ;;
    pg-start) pg_start ;;
    mqtt-kill) mqtt_stop KILL ;;
    mqtt-stop) mqtt_stop TERM ;;
    mqtt-start) mqtt_start ;;
    kafka) kafka_control "$@" ;;
    *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
}

main "$@"
