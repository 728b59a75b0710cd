#!/usr/bin/env bash
# MQTT fan-out / fan-in bench (issue 15 (b)): evloop against mosquitto, same clients.
# Scenarios: 1 publisher -> SUBS subscribers, and PUBS publishers -> 1 subscriber, QoS 0
# and 1, with mosquitto_pub -l (one message per stdin line) and mosquitto_sub -C.
# Prints delivered messages/s and broker CPU (user+sys) microseconds per delivered message.
# Both brokers keep at most 1,000 queued QoS 1 messages per client (a subscriber that
# falls further behind loses messages, and its case reports a timeout after 30 s).
# Usage: scripts/mqtt_bench.sh [evloop-binary] [messages]   (needs mosquitto, mosquitto-clients)
set -euo pipefail
BIN=${1:-target/release/evloop}
MSGS=${2:-20000}
SUBS=${SUBS:-100}
PUBS=${PUBS:-100}
LOOPS=${LOOPS:-2}
PORT_EV=18871
PORT_MQ=18872
TICK=$(getconf CLK_TCK)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run_case PID PORT NAME QOS NPUB NSUB PER_PUB
run_case() {
    local pid=$1 port=$2 name=$3 qos=$4 npub=$5 nsub=$6 per_pub=$7
    local expect=$((npub * per_pub)) subs=() i
    for ((i = 0; i < nsub; i++)); do
        mosquitto_sub -h 127.0.0.1 -p "$port" -t bench/t -q "$qos" -C "$expect" -W 30 >/dev/null &
        subs+=($!)
    done
    sleep 1
    local c0 t0 c1 t1
    c0=$(cpu_ticks "$pid")
    t0=$(date +%s.%N)
    local pubs=()
    for ((i = 0; i < npub; i++)); do
        seq "$per_pub" | mosquitto_pub -h 127.0.0.1 -p "$port" -t bench/t -q "$qos" -l &
        pubs+=($!)
    done
    local ok=1
    for p in "${subs[@]}"; do wait "$p" || ok=0; done
    t1=$(date +%s.%N)
    c1=$(cpu_ticks "$pid")
    for p in "${pubs[@]}"; do wait "$p" || true; done
    local delivered=$((expect * nsub))
    awk -v n="$delivered" -v t0="$t0" -v t1="$t1" -v c="$((c1 - c0))" -v hz="$TICK" -v name="$name" -v ok="$ok" \
        'BEGIN { s = t1 - t0; printf "%-34s %9d msgs %10.0f msg/s %8.2f us CPU/msg%s\n", name, n, n / s, c / hz * 1e6 / n, ok ? "" : " (some subscribers timed out)" }'
}

bench() {
    local who=$1 pid=$2 port=$3
    run_case "$pid" "$port" "$who 1->$SUBS qos0" 0 1 "$SUBS" "$MSGS"
    run_case "$pid" "$port" "$who 1->$SUBS qos1" 1 1 "$SUBS" "$MSGS"
    run_case "$pid" "$port" "$who $PUBS->1 qos0" 0 "$PUBS" 1 $((MSGS / PUBS * 10))
    run_case "$pid" "$port" "$who $PUBS->1 qos1" 1 "$PUBS" 1 $((MSGS / PUBS * 10))
}

"$BIN" serve --proto mqtt --loops "$LOOPS" --listen "127.0.0.1:$PORT_EV" 2>/dev/null &
EV=$!
conf=$(mktemp)
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_connections -1\nmax_queued_messages 1000\n' "$PORT_MQ" >"$conf"
mosquitto -c "$conf" >/dev/null 2>&1 &
MQ=$!
trap 'kill $EV $MQ 2>/dev/null; rm -f "$conf"' EXIT
sleep 1
bench "evloop($LOOPS loops)" "$EV" "$PORT_EV"
bench "mosquitto" "$MQ" "$PORT_MQ"
