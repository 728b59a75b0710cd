#!/usr/bin/env python3
"""Benchmark driver behind scripts/bench.sh (standard library only).

Every row starts one server pinned to SERVER_CPU, drives it with one client pinned to
CLIENT_CPU (evloop load, wrk or redis-benchmark), samples the server's CPU time from
/proc/PID/stat around the client run, stops the server by PID, and prints a markdown row.
Peers (wrk, redis-benchmark, redis-server, nginx) that are not installed give skipped rows.
Only loopback addresses are used; each client run is bounded in time.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "evloop")
OUT = os.path.join(ROOT, "target", "bench")
SERVER_CPU = os.environ.get("SERVER_CPU", "0")
CLIENT_CPU = os.environ.get("CLIENT_CPU", "1")
PORT = int(os.environ.get("PORT", "5700"))
HZ = os.sysconf("SC_CLK_TCK")


def secs(s):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)?", s)
    v, u = float(m.group(1)), m.group(2) or "s"
    return {"us": v / 1e6, "ms": v / 1e3, "s": v, "m": v * 60}[u]


def proc_cpu(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime (all threads)
        except OSError:
            pass
    return total / HZ


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def wait_port(port, proc, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


class Server:
    """A server process pinned to SERVER_CPU, stopped by PID on exit."""

    def __init__(self, cmd, port, workers=False):
        self.proc = subprocess.Popen(["taskset", "-c", SERVER_CPU] + cmd, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        wait_port(port, self.proc)
        time.sleep(0.1)
        self.pids = [self.proc.pid] + (children(self.proc.pid) if workers else [])

    def stop(self):
        for sig in (signal.SIGINT, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=5)
                return
            except subprocess.TimeoutExpired:
                continue


def client(cmd, timeout):
    return subprocess.run(["taskset", "-c", CLIENT_CPU] + cmd, capture_output=True, text=True,
                          timeout=timeout, check=True).stdout


def evloop_load(port, duration, warmup, args):
    out = client([BIN, "load", f"127.0.0.1:{port}", "--json", "-d", duration, "--warmup", warmup] + args,
                 secs(duration) + secs(warmup) + 60)
    r = json.loads(out.strip().splitlines()[-1])
    reqs = r["rps"] * (secs(duration) + secs(warmup))  # CPU is sampled over warmup too
    return r["rps"], r["latency_us"]["p50"], r["latency_us"]["p99"], reqs, r["errors"]


def wrk(port, duration, pipeline):
    args = ["wrk", "-t1", "-c50", f"-d{duration}", "--latency"]
    tmp = None
    if pipeline > 1:
        tmp = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        tmp.write("init = function(args)\n  local r = {}\n"
                  f"  for i = 1, {pipeline} do r[i] = wrk.format(nil, \"/\") end\n"
                  "  req = table.concat(r)\nend\nrequest = function() return req end\n")
        tmp.close()
        args += ["-s", tmp.name]
    out = client(args + [f"http://127.0.0.1:{port}/"], secs(duration) + 60)
    if tmp:
        os.unlink(tmp.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    lat = {m.group(1): secs(m.group(2)) * 1e6 for m in re.finditer(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M)}
    errs = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, lat.get("50"), lat.get("99"), total, int(errs.group(1)) if errs else 0


def redis_benchmark(port, test, pipeline, n):
    out = client(["redis-benchmark", "-p", str(port), "-c", "50", "-n", str(n), "-P", str(pipeline),
                  "-t", test, "--csv"], 300)
    rows = [l for l in out.splitlines() if l.startswith('"') and not l.startswith('"test"')]
    f = [c.strip('"') for c in rows[-1].split(",")]
    return float(f[1]), float(f[4]) * 1000, float(f[6]) * 1000, n, 0


def row(name, server_cmd, port, run, workers=False):
    try:
        srv = Server(server_cmd, port, workers)
    except (OSError, RuntimeError) as e:
        return f"| {name} | skipped: {e} | | | | | |", None
    try:
        c0 = proc_cpu(srv.pids)
        rps, p50, p99, reqs, errors = run()
        cpu = proc_cpu(srv.pids) - c0
        rss = rss_kib(srv.pids) / 1024
    except (subprocess.SubprocessError, AttributeError, IndexError, ValueError) as e:
        return f"| {name} | failed: {type(e).__name__} | | | | | |", None
    finally:
        srv.stop()
    rec = {"scenario": name, "rps": rps, "p50_us": p50, "p99_us": p99,
           "cpu_us_per_req": cpu * 1e6 / reqs if reqs else None, "rss_mib": rss, "errors": errors}
    us = lambda v: "-" if v is None else f"{v:,.0f}"
    return (f"| {name} | {rps:,.0f} | {us(p50)} | {us(p99)} | {rec['cpu_us_per_req']:.2f} | {rss:.1f} | {errors} |",
            rec)


def main():
    quick = "--quick" in sys.argv
    only = [a for a in sys.argv[1:] if not a.startswith("--")]
    duration = os.environ.get("DURATION", "2s" if quick else "10s")
    warmup = os.environ.get("WARMUP", "300ms" if quick else "1s")
    n = int(os.environ.get("REQUESTS", "50000" if quick else "200000"))
    os.makedirs(OUT, exist_ok=True)
    p = PORT
    ev = lambda *a: [BIN, "serve", "--listen", f"127.0.0.1:{p}"] + list(a)
    have = shutil.which
    nginx_conf = os.path.join(OUT, "nginx.conf")
    with open(nginx_conf, "w") as f:
        f.write(f"worker_processes 1;\npid {OUT}/nginx.pid;\nerror_log {OUT}/nginx-error.log;\n"
                "events { worker_connections 4096; }\n"
                f"http {{ access_log off; server {{ listen 127.0.0.1:{p}; keepalive_requests 1000000;\n"
                "  location / { default_type text/plain; return 200 \"Hello, World!\"; } } }\n")
    nginx = ["nginx", "-c", nginx_conf, "-p", OUT, "-g", "daemon off;"]
    redis = ["redis-server", "--port", str(p), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"]

    scenarios = []
    # echo
    for label, cmd in [("reactor (1 loop)", ev("--loops", "1")), ("std engine", ev("--engine", "std"))]:
        scenarios.append(("echo", f"echo 6 B ping-pong, 50 conns, {label}", cmd,
                          lambda: evloop_load(p, duration, warmup, ["-c", "50", "--size", "6"]), False))
        scenarios.append(("echo", f"echo 4 KiB stream, 50 conns, pipeline 8, {label}", cmd,
                          lambda: evloop_load(p, duration, warmup, ["-c", "50", "--size", "4K", "--pipeline", "8"]), False))
    # http
    for pl in (1, 16):
        for label, cmd in [("reactor (1 loop)", ev("--proto", "http", "--loops", "1")),
                           ("std engine", ev("--proto", "http", "--engine", "std"))]:
            scenarios.append(("http", f"HTTP GET / pipeline {pl}, evloop load, {label}", cmd,
                              lambda pl=pl: evloop_load(p, duration, warmup, ["--proto", "http", "-c", "50", "--pipeline", str(pl)]), False))
            if have("wrk"):
                scenarios.append(("http", f"HTTP GET / pipeline {pl}, wrk, {label}", cmd,
                                  lambda pl=pl: wrk(p, duration, pl), False))
        if have("nginx") and have("wrk"):
            scenarios.append(("http", f"HTTP GET / pipeline {pl}, wrk, nginx (1 worker)", nginx,
                              lambda pl=pl: wrk(p, duration, pl), True))
    # redis
    for pl in (1, 16):
        for test in ("ping_inline", "set", "get"):
            servers = [("evloop reactor (1 loop)", ev("--proto", "redis", "--loops", "1")),
                       ("evloop std engine", ev("--proto", "redis", "--engine", "std"))]
            if have("redis-server"):
                servers.append(("redis-server", redis))
            for label, cmd in servers:
                if have("redis-benchmark"):
                    scenarios.append(("redis", f"RESP {test} -P {pl}, redis-benchmark, {label}", cmd,
                                      lambda t=test, pl=pl: redis_benchmark(p, t, pl, n), False))
    head = ("| scenario | req/s | p50 us | p99 us | server CPU us/req | server RSS MiB | errors |\n"
            "|---|---|---|---|---|---|---|")
    print(head, flush=True)
    lines, records = [head], []
    for group, name, cmd, run, workers in scenarios:
        if only and group not in only:
            continue
        line, rec = row(name, cmd, p, run, workers)
        print(line, flush=True)
        lines.append(line)
        if rec:
            records.append(rec)
    with open(os.path.join(OUT, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump(records, f, indent=1)


if __name__ == "__main__":
    main()
