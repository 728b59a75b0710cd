#!/usr/bin/env python3
"""Compare two evloop builds (or capture settings) by server CPU time per request.

Each row starts `evloop serve --loops 1` pinned to SERVER_CPU (default 0) and runs
`evloop load -c 50` pinned to CLIENT_CPU (default 1) for the given duration; the server's
CPU time (utime + stime from /proc/PID/stat) over the run divided by the requests answered
is the figure. Builds alternate within each round, so a busy machine hurts both alike;
medians of the rounds are printed with every value.

  scripts/compare.py builds BASE_BIN NEW_BIN [--duration 3s] [--rounds 5]
      echo pipeline 1, HTTP pipeline 16, RESP GET pipeline 16: BASE vs NEW
  scripts/compare.py capture BIN [--duration 3s] [--rounds 3]
      RESP GET pipeline 1 at 200 connections: capture off, 1 in 100, 1 in 1
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile

from bench import median, proc_cpu

SERVER_CPU = os.environ.get("SERVER_CPU", "0")
CLIENT_CPU = os.environ.get("CLIENT_CPU", "1")


def row(server_bin, load_bin, proto, port, serve_extra, load_extra, duration, conns):
    srv = subprocess.Popen(
        ["taskset", "-c", SERVER_CPU, server_bin, "serve", "--proto", proto, "--loops", "1",
         "--listen", f"127.0.0.1:{port}", "-q"] + serve_extra,
        stderr=subprocess.PIPE)
    try:
        srv.stderr.readline()  # the ready line
        c0 = proc_cpu([srv.pid])
        out = subprocess.run(
            ["taskset", "-c", CLIENT_CPU, load_bin, "load", f"127.0.0.1:{port}", "--proto", proto,
             "-c", str(conns), "-d", duration, "--json", "-q"] + load_extra,
            capture_output=True, text=True, check=True)
        c1 = proc_cpu([srv.pid])
    finally:
        srv.send_signal(signal.SIGTERM)
        srv.wait()
    n = json.loads(out.stdout.strip().splitlines()[-1])["requests"]
    return (c1 - c0) * 1e6 / max(n, 1)


def report(results):
    for key, values in results.items():
        v = sorted(values)
        print(f"{key:32} cpu_us/req median {median(v):.3f}  (all {', '.join(f'{x:.3f}' for x in v)})")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    b = sub.add_parser("builds", help="two binaries side by side")
    b.add_argument("base")
    b.add_argument("new")
    c = sub.add_parser("capture", help="capture off, 1/100, 1/1")
    c.add_argument("bin")
    for s in (b, c):
        s.add_argument("--duration", default="3s")
        s.add_argument("--rounds", type=int, default=5 if s is b else 3)
    a = p.parse_args()
    results = {}
    if a.mode == "builds":
        rows = [("echo P1", "echo", 5600, []), ("http P16", "http", 5601, ["--pipeline", "16"]),
                ("redis GET P16", "redis", 5602, ["--pipeline", "16", "--command", "get"])]
        for _ in range(a.rounds):
            for name, proto, port, extra in rows:
                for label, binary in (("base", a.base), ("new", a.new)):
                    us = row(binary, a.new, proto, port, [], extra, a.duration, 50)
                    results.setdefault(f"{name} {label}", []).append(us)
    else:
        with tempfile.TemporaryDirectory() as d:
            for _ in range(a.rounds):
                for label, extra in (("off", []), ("1/100", ["--capture-sample", "100"]),
                                     ("1/1", ["--capture-sample", "1"])):
                    cap = ["--capture", f"{d}/c.pcap"] + extra if extra else []
                    us = row(a.bin, a.bin, "redis", 5610, cap, ["--command", "get"], a.duration, 200)
                    results.setdefault(f"capture {label}", []).append(us)
    report(results)


if __name__ == "__main__":
    sys.exit(main())
