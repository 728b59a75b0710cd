#!/usr/bin/env bash
# Benchmarks evloop's reactor against the std::net thread-per-connection baseline and,
# where installed, against wrk/nginx (HTTP) and redis-benchmark/redis-server (RESP).
# Server pinned to CPU 0, client to CPU 1 (SERVER_CPU / CLIENT_CPU to change).
#
#   scripts/bench.sh                 # every scenario, 10 s each (redis-benchmark: 200,000 requests)
#   scripts/bench.sh --quick         # 2 s each (50,000 requests)
#   scripts/bench.sh --quick http    # only some groups: echo, http, redis
#
# Peers: apt-get install wrk redis-tools redis-server nginx-light (missing ones are skipped).
# Prints a markdown table; also writes target/bench/results.md and results.json.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
exec python3 scripts/bench.py "$@"
