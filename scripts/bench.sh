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
#   memory: server RSS per idle connection, per protocol (echo, http, redis, frame, mqtt),
#     holding MEMORY_CONNS (10,000) connections that each did one request of the protocol
#     (echo 64 B, GET / HTTP/1.1, RESP GET, one 4-byte frame, MQTT CONNECT) and read its
#     reply: (RSS with them - RSS with none) / N, on the reactor, std and tokio engines
#     where the protocol runs there, and redis-server for redis
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
# --issue14 (the same as the group `peers`; not part of a plain run; ~25 min on 2 cores):
# issue 14's table, every server side by side, the client always `evloop load` (one
# thread, mio) on CLIENT_CPU, the server on SERVER_CPU, ROUNDS (5) interleaved rounds
# (round 1 of every cell, then round 2, ...; a fresh server each time), DURATION 2 s after
# WARMUP 0.5 s each, medians reported:
#   echo 64 B pipeline 1 and 16 at 50 connections; echo 64 B pipeline 1 at 1,000, 10,000
#     and 19,000 connections (PEERS_SCALE; the driver raises RLIMIT_NOFILE to the hard
#     limit for the servers and this script, evloop load raises its own)
#   HTTP GET / pipeline 1 and 16; RESP GET pipeline 1 and 16 (50 connections)
# servers: evloop reactor (--loops 1) and tokio engine (--loops 1, current_thread), and
# the peers in bench/peers (its own cargo workspace and Go modules, built here, never by
# cargo test or CI; each a small single-threaded program of ours, in bench/peers/bin):
#   monoio (io_uring, one thread; echo, HTTP, RESP)    hyper 1 (current_thread tokio; HTTP)
#   may_minihttp (one may worker; HTTP)                Go net (stdlib, goroutine per
#   gnet v2 and evio (one loop each; echo, HTTP, RESP)   connection, GOMAXPROCS=1)
#   nginx (1 worker; HTTP) and redis-server (RESP) as above
#   and, as a reference column that is never the best peer, the epoll floor
#   (bench/peers/c/floor.c, built with cc): one thread, edge-triggered epoll, raw
#   recvfrom/sendto, canned replies; the least user work an epoll server can do
# Per cell: req/s, server CPU us per request and CPU utilisation (share of the window,
# from /proc/PID/stat), and from a separate perf round (PERF_DURATION 1 s windows) syscalls
# per request in all and epoll_wait(+pwait)/io_uring_enter/read/write (recvfrom, sendto,
# readv, writev... counted with them) per request. Then bytes per idle connection per
# protocol on the reactor, tokio and the peers (PEERS_MEMORY=0 to leave out). Tables:
# row | evloop | best peer (name, value) | evloop / best | one column per server.
# Toolchains for the peers: Rust (cargo; crates come from crates.io) and Go
# (apt-get install golang-go; gnet and evio come through the Go module proxy, which
# needs network access and, for gnet v2.9.7, a Go newer than Debian 12's 1.19: with Go
# >= 1.21 GOTOOLCHAIN=auto fetches one). A peer that cannot build gets skipped rows with
# the reason (bench/peers/bin/NAME.skip), never a failed run.
#
#   scripts/bench.sh                    # everything but the peers group
#   scripts/bench.sh --quick            # the subset above
#   scripts/bench.sh --quick http redis # only some groups: echo http redis proxy scaling memory tls peers cores
#   scripts/bench.sh --issue14          # issue 14's side-by-side table (= the group peers)
#   scripts/bench.sh cores              # 1, 2, 4, 8 loops with --reuseport --pin, server on
#                                       # half the CPUs, evloop load on the rest (16+ CPUs;
#                                       # scripts/bench_cores.py; not part of a plain run)
#   ROUNDS=2 DURATION=1s scripts/bench.sh --issue14   # a short try of it
#   scripts/bench.sh --only 'RESP GET' nginx   # only rows whose line contains one of these
#   scripts/bench.sh --list [...]       # print the rows that would run (no build, no run)
#   scripts/bench.sh --help             # usage (no build); an unknown flag is an error
#
# Environment: DURATION, WARMUP, REQUESTS, SCALE=10,100,1000, MEMORY_CONNS, PORT, PERF=0,
# BACKEND_CPU, BULK_BYTES, TLS_MEMORY_CONNS; for --issue14 also ROUNDS, PEERS_SCALE,
# PERF_DURATION, PEERS_MEMORY=0.
# Writes target/bench/results.md, results.json and results.svg (bench_chart example);
# --issue14 writes target/bench/peers.md and peers.json.
set -euo pipefail
cd "$(dirname "$0")/.."
# Flags first: --help, --list and a bad flag end here, before any build.
for a in "$@"; do
    case "$a" in
        -h | --help) exec python3 scripts/bench.py --help ;;
    esac
done
# Prints "peers" when the peers group is selected and "others" when any other is (and
# fails, exit 2, on a bad flag).
selected=$(python3 scripts/bench.py --parse-only "$@")
for a in "$@"; do
    case "$a" in
        --list) exec python3 scripts/bench.py "$@" ;;
    esac
done

# Builds the peer servers into bench/peers/bin where their toolchain is present. A peer
# that cannot build leaves NAME.skip there (the reason, shown in its rows) instead.
build_peers() {
    local bin=bench/peers/bin log p
    mkdir -p "$bin"
    rm -f "$bin"/*.skip
    for p in monoio-peer hyper-peer may-peer; do
        if ! command -v cargo >/dev/null; then
            echo "cargo not installed" >"$bin/$p.skip"
        elif log=$(cd bench/peers && cargo build --release --quiet -p "$p" 2>&1); then
            cp -f "bench/peers/target/release/$p" "$bin/$p"
        else
            rm -f "$bin/$p"
            echo "cargo build -p $p failed: $( (grep -m1 '^error' <<<"$log" || tail -n1 <<<"$log") | cut -c1-200)" >"$bin/$p.skip"
        fi
    done
    # The epoll floor: a reference column, not a peer (see bench/peers/c/floor.c).
    if ! command -v cc >/dev/null; then
        echo "cc not installed (apt-get install gcc)" >"$bin/c-floor.skip"
    elif ! log=$(cc -O2 -o "$bin/c-floor" bench/peers/c/floor.c 2>&1); then
        rm -f "$bin/c-floor"
        echo "cc failed: $(head -n1 <<<"$log" | cut -c1-200)" >"$bin/c-floor.skip"
    fi
    # Go: go-net needs only the standard library; gnet and evio need the module proxy.
    for p in net:go-net gnet:gnet evio:evio; do
        local dir=${p%%:*} name=${p##*:}
        if ! command -v go >/dev/null; then
            echo "go not installed (apt-get install golang-go)" >"$bin/$name.skip"
        elif log=$(cd "bench/peers/go/$dir" && GOFLAGS=-mod=mod timeout 300 go build -o "../../bin/$name" . 2>&1); then
            :
        else
            rm -f "$bin/$name"
            echo "go build failed: $(grep -v '^go: downloading' <<<"$log" | tail -n1 | cut -c1-200)" >"$bin/$name.skip"
        fi
    done
}

if [[ $selected == *others* ]]; then
    cargo build --release --quiet --features tokio --bin evloop --example bench_chart
else
    cargo build --release --quiet --features tokio --bin evloop
fi
if [[ $selected == *peers* ]]; then
    build_peers
fi
python3 scripts/bench.py "$@"
if [[ $selected == *others* ]]; then
    cargo run --release --quiet --features tokio --example bench_chart -- \
        target/bench/results.json target/bench/results.svg
fi
