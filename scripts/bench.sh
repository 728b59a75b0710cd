#!/usr/bin/env bash
# Benchmarks evloop's engines against each other and against peers. Every row starts one
# server pinned to CPU 0 and one client pinned to CPU 1 (SERVER_CPU / CLIENT_CPU to change),
# and reports requests/s, p50/p99 latency, server CPU us per request, server syscalls per
# request (perf stat -e raw_syscalls:sys_enter; blank without perf), server RSS and errors.
#
# Servers: evloop reactor (--loops 1), std engine (thread per connection), tokio engine
# (--loops 1; this script builds with --features tokio), and the peers nginx (1 worker,
# `return 200`) and redis-server. Clients: evloop load, wrk, redis-benchmark. A peer that
# is not installed gives a skipped row (apt-get install wrk redis-tools redis-server
# nginx-light libnginx-mod-stream haproxy linux-perf).
#
# Full run (~15 min on 2 cores; 5 s per row after 1 s warmup, redis-benchmark -n 300,000
# at pipeline 1 and 4,500,000 at 16, REQUESTS x15):
#   echo 6 B ping-pong and 4 KiB pipelined stream, 50 connections, on the three engines
#   HTTP GET / at pipeline 1 and 16: evloop load and wrk, on the three engines and nginx
#   RESP PING, SET, GET at pipeline 1 and 16: evloop load and redis-benchmark, on the
#     three engines and redis-server
#   proxy: echo 64 B ping-pong at 50 connections through `evloop proxy` (1 loop; copy and
#     splice), HAProxy (mode tcp, nbthread 1) and nginx stream (1 worker) to an evloop echo
#     backend on BACKEND_CPU (CPU 2, or CLIENT_CPU on a 2-CPU machine); the proxy is the
#     measured server. Bulk: 1 GiB each way on one connection (BULK_BYTES), the proxy's CPU
#     seconds for it, evloop copy/splice vs HAProxy (without and with splice) and nginx
#   connection scaling: echo ping-pong at 10, 100, 1,000, 10,000 connections, reactor vs std
#   memory: server RSS per idle connection holding 10,000 connections (reactor, std, tokio)
#   tls: HTTPS GET / at pipeline 1 and 16 (wrk -t1 -c50, https) and TLS handshakes per
#     second, full (openssl s_time -new) and resumed (-reuse), with the server's CPU per
#     handshake, on the reactor (rustls, tls:// listener) and nginx (1 worker, OpenSSL, the
#     same self-signed P-256 certificate, made with openssl under target/bench); RSS per
#     idle TLS connection (handshake done) at MEMORY_CONNS (TLS_MEMORY_CONNS to change)
# --quick (under 2 min; 1 s per row after 300 ms warmup, redis-benchmark -n 750,000 at
# pipeline 16, REQUESTS=50,000 x15):
#   echo 6 B ping-pong on the three engines; HTTP pipeline 16 (evloop load on the three
#   engines and nginx, wrk on the reactor and nginx); RESP GET pipeline 16 (evloop load on
#   the three engines and redis-server, redis-benchmark on the reactor and redis-server);
#   proxy echo (evloop, HAProxy, nginx stream) and bulk 256 MiB (evloop copy and splice,
#   HAProxy); scaling at 10 and 1,000 connections; memory with 1,000 idle connections.
#
#   scripts/bench.sh                    # everything
#   scripts/bench.sh --quick            # the subset above
#   scripts/bench.sh --quick http redis # only some groups: echo http redis proxy scaling memory tls
#   scripts/bench.sh --only 'RESP GET' nginx   # only rows whose line contains one of these
#   scripts/bench.sh --list [...]       # print the rows that would run (no build, no run)
#   scripts/bench.sh --help             # usage (no build); an unknown flag is an error
#
# Environment: DURATION, WARMUP, REQUESTS, SCALE=10,100,1000, MEMORY_CONNS, PORT, PERF=0,
# BACKEND_CPU, BULK_BYTES, TLS_MEMORY_CONNS.
# Writes target/bench/results.md, results.json and results.svg (bench_chart example).
set -euo pipefail
cd "$(dirname "$0")/.."
# Flags first: --help, --list and a bad flag end here, before any build.
for a in "$@"; do
    case "$a" in
        -h | --help) exec python3 scripts/bench.py --help ;;
    esac
done
python3 scripts/bench.py --parse-only "$@"
for a in "$@"; do
    case "$a" in
        --list) exec python3 scripts/bench.py "$@" ;;
    esac
done
cargo build --release --quiet --features tokio --bin evloop --example bench_chart
python3 scripts/bench.py "$@"
cargo run --release --quiet --features tokio --example bench_chart -- \
    target/bench/results.json target/bench/results.svg
