#!/usr/bin/env bash
# Benchmarks evloop's reactor against the std::net thread-per-connection baseline (and
# against installed peers where a scenario has one), server and client pinned to
# different CPUs. Prints a markdown table and writes target/bench/results.md.
#
#   scripts/bench.sh            # every scenario, 10 s each
#   scripts/bench.sh --quick    # 2 s each
#   DURATION=5s scripts/bench.sh
#
# Only loopback addresses are used; every server started here is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-1s}
if [[ "${1:-}" == "--quick" ]]; then DURATION=2s; WARMUP=300ms; fi
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PORT=${PORT:-5700}

cargo build --release --quiet
BIN=target/release/evloop
OUT=target/bench
mkdir -p "$OUT"

TICKS=$(getconf CLK_TCK)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "server on port $1 did not come up" >&2
  return 1
}

rows=()
# run_row NAME SERVER_CMD... -- LOAD_ARGS...
run_row() {
  local name=$1; shift
  local server=() load=()
  while [[ $1 != -- ]]; do server+=("$1"); shift; done; shift
  load=("$@")
  taskset -c "$SERVER_CPU" "${server[@]}" >/dev/null 2>&1 &
  local spid=$!
  pids+=("$spid")
  wait_port "$PORT"
  local t0 t1 json
  t0=$(cpu_ticks "$spid")
  json=$(taskset -c "$CLIENT_CPU" "$BIN" load "127.0.0.1:$PORT" --json -d "$DURATION" --warmup "$WARMUP" "${load[@]}")
  t1=$(cpu_ticks "$spid")
  local rss_kb
  rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$spid/status")
  kill -INT "$spid" 2>/dev/null || true
  wait "$spid" 2>/dev/null || true
  python3 - "$name" "$json" "$((t1 - t0))" "$TICKS" "$rss_kb" "$DURATION" "$WARMUP" <<'PY'
import json, sys, re
name, j, ticks, hz, rss, dur, warm = sys.argv[1:]
r = json.loads(j)
def secs(s):
    m = re.fullmatch(r"([\d.]+)(ms|s|m)?", s)
    v = float(m.group(1)); u = m.group(2) or "s"
    return v / 1000 if u == "ms" else v * 60 if u == "m" else v
# CPU was sampled over warmup + duration; scale requests to that window.
window = secs(dur) + secs(warm)
cpu_us = int(ticks) / int(hz) * 1e6
reqs = r["rps"] * window
print(f"| {name} | {r['rps']:.0f} | {r['latency_us']['p50']:.0f} | {r['latency_us']['p99']:.0f} | "
      f"{cpu_us / reqs:.2f} | {int(rss) / 1024:.1f} | {r['errors']} |")
PY
}

header="| scenario | req/s | p50 us | p99 us | server CPU us/req | server RSS MiB | errors |
|---|---|---|---|---|---|---|"

echo_rows() {
  run_row "echo 6 B, 50 conns, reactor (1 loop)" "$BIN" serve --loops 1 --listen "127.0.0.1:$PORT" -- -c 50 --size 6
  run_row "echo 6 B, 50 conns, std engine" "$BIN" serve --engine std --listen "127.0.0.1:$PORT" -- -c 50 --size 6
}

{
  echo "$header"
  echo_rows
} | tee "$OUT/results.md"
