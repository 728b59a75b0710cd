#!/usr/bin/env python3
"""Benchmark driver behind scripts/bench.sh (standard library only).

Every row starts one server pinned to SERVER_CPU (new session, stopped by process group),
drives it with one client pinned to CLIENT_CPU (evloop load, wrk or redis-benchmark), and
measures the server: CPU time from /proc/PID/stat, syscalls with `perf stat -e
raw_syscalls:sys_enter -p PIDS` (blank where perf cannot count them), VmRSS.

Time-based clients (evloop load, wrk): the driver waits until the server holds all the
client's connections (distinct socket inodes among its fds), lets the warmup pass, then
samples CPU and syscalls over a window inside the client's measured period (5% in, 90% of
it long); requests in the window = client req/s x window length. Count-based clients
(redis-benchmark): the whole run, requests = -n.

Memory rows open N idle connections from this process, each first sending one request of
its protocol and reading the reply (echo 64 B, `GET / HTTP/1.1`, RESP GET, one 4-byte
frame, MQTT CONNECT), and report (RSS with N - RSS with none) / N per protocol and server.
"RSS with none" is read after one such connection has been served and closed, so the
code and per-thread buffers a first request pages in are not charged to the connections;
the figure from the RSS at start (cold) is given in brackets beside it.
Peers (wrk, redis-benchmark, redis-server, nginx) that are not installed give skipped rows.
Only 127.0.0.1 is used; every client and wait is bounded in time.

The group peers (--issue14; not in a run that names no group) is issue 14's side-by-side
table: rows echo 64 B P1/P16 at 50 connections and P1 at 1,000/10,000/19,000 (PEERS_SCALE),
HTTP GET P1/P16, RESP GET P1/P16, all driven by `evloop load`, on the reactor, the tokio
engine and the peers of bench/peers (monoio, hyper, may_minihttp, Go net, gnet, evio; built
by bench.sh into bench/peers/bin, NAME.skip there saying why one could not be), nginx and
redis-server, and the epoll floor (bench/peers/c/floor.c: canned replies, no parsing; a
reference column, never the best peer). ROUNDS interleaved rounds (every cell once per
round, a fresh server each time), medians; server CPU per request and CPU utilisation over a window inside the
client's measured period; then one perf round (PERF_DURATION) with `perf stat --control`
switched on for the same kind of window: syscalls in all (raw_syscalls:sys_enter) and
epoll_wait/io_uring_enter/read/write (syscalls:sys_enter_*) per request; then memory rows of
the same servers. Writes target/bench/peers.md and peers.json.

Usage: bench.py [-h] [--quick] [--only TEXT [TEXT ...]] [--issue14] [--list] [GROUP ...]
  (bench.py --help for details; unknown flags are an error)
TLS rows (group tls): wrk over https and openssl s_time (-new / -reuse; server CPU over
the whole run per handshake) against `evloop serve --listen tls://` and nginx with the same
self-signed certificate; idle TLS connections are opened (handshake done) by this process.
Proxy rows: the proxy (evloop proxy, HAProxy, nginx stream) is the measured server; the
echo backend it forwards to runs once for all of them on BACKEND_CPU.

Env: SERVER_CPU, CLIENT_CPU, BACKEND_CPU, BULK_BYTES, PORT (first port; each row takes the next), DURATION, WARMUP,
     REQUESTS (redis-benchmark -n at pipeline 1; x15 at pipeline 16), PERF=0 (no syscalls),
     SCALE (connection counts, e.g. 10,100,1000,10000), MEMORY_CONNS, TLS_MEMORY_CONNS;
     peers: ROUNDS (5), DURATION (2s), WARMUP (500ms), PERF_DURATION (1s), PEERS_SCALE
     (1000,10000,19000), PEERS_MEMORY=0 (no memory rows).
Writes target/bench/results.md and results.json (peers: peers.md and peers.json).

The group cores (not in a run that names no group; scripts/bench_cores.py) measures how
throughput scales with the loops: `evloop serve --loops N --reuseport --pin` on SERVER_CPUS,
`evloop load` with a thread per CPU of CLIENT_CPUS, N in CORES_LOOPS (1,2,4,8); echo 64 B and
HTTP GET at CORES_PIPELINES (1,16); writes cores.md and cores.json. It needs a machine with
at least 2 x max(N) CPUs for the default split (skipped rows below that).
"""
import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import bench_cores

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "evloop")
OUT = os.path.join(ROOT, "target", "bench")
SERVER_CPU = os.environ.get("SERVER_CPU", "0")
CLIENT_CPU = os.environ.get("CLIENT_CPU", "1")
# The proxy rows' echo backend: a third CPU where there is one.
BACKEND_CPU = os.environ.get("BACKEND_CPU", "2" if (os.cpu_count() or 1) > 2 else CLIENT_CPU)
HZ = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# What the client functions of the scenarios read when called: the duration of a
# time-based client and the share of -n of a count-based one (smaller for the perf pass).
CLIENT = {"d": "5s", "w": None, "n": 1.0}

REACTOR, STD, TOKIO = "reactor (1 loop)", "std engine", "tokio (1 loop)"
ENGINES = {REACTOR: ["--loops", "1"], STD: ["--engine", "std"],
           TOKIO: ["--engine", "tokio", "--loops", "1"]}
NGINX, REDIS = "nginx (1 worker)", "redis-server"
PROXY, PROXY_SPLICE = "evloop proxy (1 loop)", "evloop proxy (1 loop, splice)"
HAPROXY, HAPROXY_SPLICE = "HAProxy (nbthread 1)", "HAProxy (nbthread 1, splice)"
NGINX_STREAM = "nginx stream (1 worker)"
NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"


def secs(s):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)?", s.strip())
    v, u = float(m.group(1)), m.group(2) or "s"
    return {"us": v / 1e6, "ms": v / 1e3, "s": v, "m": v * 60}[u]


# ---- what a server process uses -------------------------------------------------------

def proc_cpu(pids):
    """utime + stime of the processes (all their threads, live and exited), seconds."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / HZ


def rss_bytes(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except OSError:
            pass
    return total


def sockets(pids):
    """Distinct sockets the processes hold (a dup'ed stream counts once)."""
    seen = set()
    for pid in pids:
        d = f"/proc/{pid}/fd"
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for n in names:
            try:
                link = os.readlink(f"{d}/{n}")
            except OSError:
                continue
            if link.startswith("socket:"):
                seen.add(link)
    return len(seen)


def established(port):
    """Server-side ESTABLISHED sockets on 127.0.0.1:port, accepted or still in the backlog:
    how many of its connects a client has completed."""
    want = f"0100007F:{port:04X}"
    n = 0
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                fields = line.split(None, 4)
                if fields[1] == want and fields[3] == "01":
                    n += 1
    except OSError:
        pass
    return n


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def port_free(port):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_port(port, proc, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


class Server:
    """A server pinned to SERVER_CPU (or `cpu`) in its own session, stopped by process group."""

    def __init__(self, cmd, port, workers=False, cpu=None, env=None):
        if not port_free(port):
            raise RuntimeError(f"port {port} is in use")
        self.proc = subprocess.Popen(["taskset", "-c", cpu or SERVER_CPU] + cmd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True, env=dict(os.environ, **(env or {})))
        try:
            wait_port(port, self.proc)
            time.sleep(0.15)
        except BaseException:
            self.stop()
            raise
        self.pids = [self.proc.pid] + (children(self.proc.pid) if workers else [])

    def stop(self):
        for sig, wait in ((signal.SIGTERM, 6), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # nginx's worker is in the same group; make sure nothing is left
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# ---- syscalls --------------------------------------------------------------------------

PERF_EVENT = "raw_syscalls:sys_enter"


def perf_works():
    if os.environ.get("PERF", "1") == "0" or not shutil.which("perf"):
        return False
    try:
        r = subprocess.run(["perf", "stat", "-e", PERF_EVENT, "-x,", "true"], capture_output=True,
                           text=True, timeout=20)
        return r.returncode == 0 and parse_perf(r.stderr) is not None
    except (OSError, subprocess.SubprocessError):
        return False


def parse_perf(text):
    """(syscalls, task-clock seconds) from `perf stat -x,` output; None where absent."""
    calls = clock = None
    for line in text.splitlines():
        f = line.split(",")
        if len(f) < 3:
            continue
        try:
            if f[2].startswith(PERF_EVENT):
                calls = int(f[0])
            elif f[2].startswith("task-clock"):
                clock = float(f[0]) / 1e3
        except ValueError:
            pass
    return (calls, clock) if calls is not None else None


def perf_cmd(pids):
    return ["perf", "stat", "-e", f"{PERF_EVENT},task-clock", "-x,", "-p", ",".join(map(str, pids))]


# ---- clients ---------------------------------------------------------------------------

class Client:
    """How to run one client: its command, time-based (duration, warmup, connections)
    or count-based (requests), and how to read its output."""

    def __init__(self, name, cmd, parse, conns, duration=None, warmup=0.0, count=None,
                 connect_budget=30.0, tmpfile=None, whole_run=False):
        self.name, self.cmd, self.parse, self.conns = name, cmd, parse, conns
        self.duration, self.warmup, self.count = duration, warmup, count
        self.connect_budget, self.tmpfile = connect_budget, tmpfile
        # whole_run: server CPU over the client's whole run, divided by the requests it
        # reports (clients that open and close connections: openssl s_time)
        self.whole_run = whole_run


def evloop_load(port, duration, warmup, args, conns=50, connect_budget=30.0):
    d, w = secs(duration), secs(warmup)
    cmd = [BIN, "load", f"127.0.0.1:{port}", "--json", "-d", duration, "--warmup", warmup,
           "-c", str(conns)] + args

    def parse(out, err, rc):
        lines = [l for l in out.splitlines() if l.startswith("{")]
        if not lines:
            msg = (err.strip().splitlines() or [f"exit {rc}"])[-1]
            raise RuntimeError(msg.replace("|", "/")[:140])
        r = json.loads(lines[-1])
        return dict(rps=r["rps"], p50=r["latency_us"]["p50"], p99=r["latency_us"]["p99"],
                    errors=r["errors"] + r["dropped"], total=r["requests"])
    return Client("evloop load", cmd, parse, conns, d, w, connect_budget=connect_budget)


def wrk(port, duration, pipeline, conns=50, scheme="http"):
    duration = f"{max(1, round(secs(duration)))}s"  # wrk takes whole seconds
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{duration}", "--latency", "--timeout", "5s"]
    tmp = None
    if pipeline > 1:
        tmp = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        tmp.write("init = function(args)\n  local r = {}\n"
                  f"  for i = 1, {pipeline} do r[i] = wrk.format(nil, \"/\") end\n"
                  "  req = table.concat(r)\nend\nrequest = function() return req end\n")
        tmp.close()
        cmd += ["-s", tmp.name]
    cmd.append(f"{scheme}://127.0.0.1:{port}/")

    def parse(out, err, rc):
        m = re.search(r"Requests/sec:\s+([\d.]+)", out)
        if rc != 0 or not m:
            raise RuntimeError(((err or out).strip().splitlines() or [f"exit {rc}"])[-1][:140])
        lat = {g.group(1): secs(g.group(2)) * 1e6
               for g in re.finditer(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M)}
        errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        errors += int(non2xx.group(1)) if non2xx else 0
        if pipeline > 1:  # wrk times only the first response of each pipelined batch
            lat = {}
        total = int(re.search(r"(\d+) requests in", out).group(1))
        return dict(rps=float(m.group(1)), p50=lat.get("50"), p99=lat.get("99"), errors=errors,
                    total=total)
    return Client("wrk", cmd, parse, conns, secs(duration), 0.0, tmpfile=tmp and tmp.name)


def s_time(port, duration, reuse):
    """openssl s_time: one connection at a time, each a TLS handshake (-new: full; -reuse:
    resuming the first connection's session) and one `GET / HTTP/1.0` (-www /; the server
    closes after the response). The request makes the client read, so that it takes the TLS
    1.3 session tickets a server sends after the handshake: without it s_time resumes only
    with servers whose ticket reaches it before it closes. A "request" is a connection;
    errors = connections that were not resumed in the -reuse run."""
    d = max(1, round(secs(duration)))
    cmd = ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-time", str(d),
           "-reuse" if reuse else "-new", "-www", "/"]

    def parse(out, err, rc):
        runs = re.findall(r"(\d+) connections in ([\d.]+) real seconds", out)
        if rc != 0 or not runs:
            raise RuntimeError(((err or out).strip().splitlines() or [f"exit {rc}"])[-1][:140])
        n, t = int(runs[-1][0]), float(runs[-1][1])
        errors = 0
        if reuse:  # s_time prints 'r' per resumed connection, the version digit otherwise
            marks = "".join(re.findall(r"^[r*123]+$", out, re.M))
            errors = sum(c != "r" for c in marks)
        return dict(rps=n / t if t else 0.0, p50=None, p99=None, errors=errors, total=n)
    return Client("openssl s_time", cmd, parse, 1, d, 0.0, whole_run=True)


def redis_benchmark(port, test, pipeline, n, conns=50):
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", str(conns), "-n", str(n),
           "-P", str(pipeline), "-t", test, "--csv"]

    def parse(out, err, rc):
        rows = [l for l in out.splitlines() if l.startswith('"') and not l.startswith('"test"')]
        if rc != 0 or not rows:
            raise RuntimeError(((err or out).strip().splitlines() or [f"exit {rc}"])[-1][:140])
        f = [c.strip('"') for c in rows[-1].split(",")]
        errors = len(re.findall(r"^(?:Error|ERR)", err + out, re.M))
        return dict(rps=float(f[1]), p50=float(f[4]) * 1000, p99=float(f[6]) * 1000, errors=errors,
                    total=n)
    return Client("redis-benchmark", cmd, parse, conns, count=n)


BULK_CLIENT = r"""
import json, socket, sys, threading, time
port, total = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port), timeout=60)
chunk = bytes(range(256)) * 4096
got = [0]
def reader():
    buf = bytearray(1 << 20)
    while True:
        n = s.recv_into(buf)
        if n == 0:
            break
        got[0] += n
t = threading.Thread(target=reader)
t0 = time.monotonic()
t.start()
sent = 0
while sent < total:
    s.sendall(chunk)
    sent += len(chunk)
s.shutdown(socket.SHUT_WR)
t.join()
print(json.dumps(dict(sent=sent, got=got[0], secs=time.monotonic() - t0)))
"""


def bulk(port, total):
    """Sends `total` bytes through `port` to the echo backend while reading them back: one
    count-based "request" (so CPU us/req is the proxy's CPU for the whole transfer)."""
    cmd = [sys.executable, "-c", BULK_CLIENT, str(port), str(total)]

    def parse(out, err, rc):
        lines = [l for l in out.splitlines() if l.startswith("{")]
        if rc != 0 or not lines:
            raise RuntimeError(((err or out).strip().splitlines() or [f"exit {rc}"])[-1][:140])
        r = json.loads(lines[-1])
        return dict(rps=1 / r["secs"], p50=None, p99=None, errors=int(r["got"] != r["sent"]),
                    total=1, gib_per_s=r["got"] / 2**30 / r["secs"])
    return Client("bulk client", cmd, parse, 1, count=1)


# The echo backend every proxy row forwards to, started once (see backend_port).
BACKEND = {}


def backend_port(port):
    """Starts the proxy rows' echo backend (evloop serve, one loop, pinned to BACKEND_CPU)
    on `port` the first time; returns its port."""
    if "port" not in BACKEND:
        BACKEND["srv"] = Server([BIN, "serve", "-q", "--loops", "1", "--backlog", "4096",
                                 "--listen", f"127.0.0.1:{port}"], port, cpu=BACKEND_CPU)
        BACKEND["port"] = port
    return BACKEND["port"]


# ---- one row ---------------------------------------------------------------------------

def run_client(srv, port, client, use_perf):
    """Runs the client against the started server; returns the row's measurements.

    use_perf: the syscall pass. `perf stat -p` (server pids) is attached before the client
    starts and stopped after it exits; syscalls per request = syscalls / the requests the
    client made (its warmup is 0 in this pass, so that is all of them; the connects and
    closes of its connections are included). Otherwise the measured pass, without perf."""
    base_socks = sockets(srv.pids)
    perf = None
    if use_perf:
        perf = subprocess.Popen(perf_cmd(srv.pids), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(0.25)
    proc = subprocess.Popen(["taskset", "-c", CLIENT_CPU] + client.cmd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    note = None
    budget = (client.duration or 0) + client.warmup + client.connect_budget + 300
    try:
        if use_perf:
            c0 = proc_cpu(srv.pids)
            out, err = proc.communicate(timeout=budget)
            c1 = proc_cpu(srv.pids)
            rss = rss_bytes(srv.pids)
            perf.send_signal(signal.SIGINT)
            counted = parse_perf(perf.communicate(timeout=20)[1])
            m = client.parse(out, err, proc.returncode)
            reqs = m["total"]
            m["syscalls_per_req"] = counted[0] / reqs if counted and reqs else None
        elif client.duration is not None and not client.whole_run:
            # Time-based: the client's measured window starts `warmup` after its last connect
            # completes (kernel ESTABLISHED count); sample from 5% into it for 90% of it.
            deadline = time.monotonic() + client.connect_budget
            while (proc.poll() is None and time.monotonic() < deadline
                   and established(port) < client.conns):
                time.sleep(0.02)
            time.sleep(client.warmup + 0.05 * client.duration)
            held = sockets(srv.pids) - base_socks
            if proc.poll() is None and held < client.conns:
                note = (f"the server held only {held:,} of {client.conns:,} connections when the "
                        f"measured window began ({client.warmup:g} s after the last connect)")
            c0, t0 = proc_cpu(srv.pids), time.monotonic()
            time.sleep(0.9 * client.duration)
            c1, t1 = proc_cpu(srv.pids), time.monotonic()
            rss = rss_bytes(srv.pids)
            out, err = proc.communicate(timeout=budget)
            m = client.parse(out, err, proc.returncode)
            reqs = m["rps"] * (t1 - t0)
        else:
            # Count-based, or whole_run: the whole run.
            c0, t0 = proc_cpu(srv.pids), time.monotonic()
            out, err = proc.communicate(timeout=budget)
            c1, t1 = proc_cpu(srv.pids), time.monotonic()
            rss = rss_bytes(srv.pids)
            m = client.parse(out, err, proc.returncode)
            if client.whole_run:  # s_time reports whole seconds only
                m["rps"] = m["total"] / (t1 - t0)
            reqs = client.count if client.count is not None else m["total"]
    finally:
        for p in (proc, perf):
            if p and p.poll() is None:
                p.kill()
                p.wait()
        if client.tmpfile:
            os.unlink(client.tmpfile)
    m.update(cpu_us_per_req=(c1 - c0) * 1e6 / reqs if reqs else None, rss_mib=rss / 2**20)
    if note:
        m["note"] = note
        raise Incomplete(m)
    return m


class Incomplete(Exception):
    """A run that finished but did not measure what it meant to (its numbers attached)."""


def measure(spec, port, perf_pass):
    """One row: the measured run without perf, then, where perf works, a shorter run under
    `perf stat` on a fresh server for syscalls per request (perf's tracepoint slows every
    syscall, so it stays out of the req/s, latency and CPU numbers)."""
    rec = {k: spec[k] for k in ("group", "scenario", "client", "server", "role")}
    if spec.get("skip"):
        rec.update(status="skipped", note=spec["skip"])
        return rec

    def one(port, use_perf):
        try:
            srv = Server(spec["server_cmd"](port), port, spec.get("workers", False))
        except (OSError, RuntimeError) as e:
            return dict(status="skipped", note=f"server did not start: {e}")
        try:
            return dict(run_client(srv, port, spec["client_fn"](port), use_perf), status="ok")
        except Incomplete as e:
            return dict(e.args[0], status="failed")
        except (OSError, RuntimeError, subprocess.SubprocessError, ValueError, KeyError, IndexError) as e:
            return dict(status="failed", note=f"{type(e).__name__}: {e}".replace("\n", " ")[:160])
        finally:
            srv.stop()

    rec.update(one(port, False), syscalls_per_req=None)
    if perf_pass and rec["status"] == "ok":
        saved = dict(CLIENT)
        CLIENT.update(perf_pass)
        try:
            p = one(port + 1, True)
        finally:
            CLIENT.update(saved)
        if p["status"] == "ok":
            rec["syscalls_per_req"] = p["syscalls_per_req"]
        else:
            rec["syscalls_note"] = p.get("note", p["status"])
    return rec


# ---- memory per idle connection --------------------------------------------------------

def tls_connect(port):
    """A TLS connection to 127.0.0.1:port with its handshake done (no verification: the
    benchmark's self-signed certificate)."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        return ctx.wrap_socket(s, server_hostname="localhost")
    except BaseException:
        s.close()
        raise


# What each idle connection of a memory row sends first (its reply is read before the
# next connection opens): the protocol's smallest real request.
IDLE_REQUESTS = {
    "echo": b"x" * 64,
    "http": b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "redis": b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
    "frame": b"\x00\x00\x00\x04abcd",
    "mqtt": bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 60, 0, 0]),  # CONNECT, clean session
}
MEMORY_PROTOS = tuple(IDLE_REQUESTS)


def connect_with_request(request):
    """A connect function for memory_row: connects, sends `request`, reads the first bytes
    of the reply (an empty read, the server closing, is an error)."""
    def connect(port):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            s.sendall(request)
            if not s.recv(4096):
                raise ConnectionError("the server closed the connection instead of replying")
            return s
        except BaseException:
            s.close()
            raise
    return connect


def memory_row(server_label, server_cmd, port, n, group="memory", connect=None, workers=False, env=None,
               extra=None):
    rec = dict({"group": group, "server": server_label, "connections": n}, **(extra or {}))
    connect = connect or (lambda port: socket.create_connection(("127.0.0.1", port), timeout=5))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = n + 256
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            rec.update(status="failed", note=f"RLIMIT_NOFILE hard limit {hard} < {need}")
            return rec
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    try:
        srv = Server(server_cmd, port, workers, env=env)
    except (OSError, RuntimeError) as e:
        rec.update(status="skipped", note=f"server did not start: {e}")
        return rec
    conns = []
    try:
        time.sleep(0.2)
        rss_cold = rss_bytes(srv.pids)
        # One connection served (its request answered) and closed before the baseline:
        # the code and per-thread buffers a server's first request pages in are the
        # server's, not its connections'. rss0 is "RSS without connections" of a server
        # that has served; the cold figure (from RSS at start) is kept beside it.
        try:
            connect(port).close()
        except OSError:
            pass
        time.sleep(0.3)
        base_socks, rss0 = sockets(srv.pids), rss_bytes(srv.pids)
        deadline = time.monotonic() + 60
        for _ in range(n):
            if time.monotonic() > deadline:
                break
            try:
                conns.append(connect(port))
            except OSError as e:
                rec["note"] = f"connect failed after {len(conns)}: {e}"
                break
        deadline = time.monotonic() + 60 + n / 100  # the std engine spawns a thread per accept
        while time.monotonic() < deadline and sockets(srv.pids) - base_socks < len(conns):
            time.sleep(0.05)
        held = sockets(srv.pids) - base_socks
        time.sleep(0.3)
        rss1 = rss_bytes(srv.pids)
        rec.update(rss0_mib=rss0 / 2**20, rss_mib=rss1 / 2**20, held=held,
                   bytes_per_conn=(rss1 - rss0) / held if held else None,
                   bytes_per_conn_cold=(rss1 - rss_cold) / held if held else None,
                   status="ok" if held >= n else "failed")
        if held < n and "note" not in rec:
            rec["note"] = f"server holds only {held} of {n}"
    finally:
        for c in conns:
            c.close()
        srv.stop()
    return rec


# ---- memory rows per protocol -----------------------------------------------------------

def memory_servers(have, tokio, peers=False):
    """The memory rows: (proto, label, command(port), workers, env, skip). The evloop engines
    where the protocol runs there (mqtt: reactor only), redis-server for redis; with
    `peers`, the tokio engine but not std, and the peer servers of the peers group."""
    out = []
    engines = [REACTOR, TOKIO] if peers else [REACTOR, STD, TOKIO]
    for proto in MEMORY_PROTOS:
        for e in engines:
            if proto == "mqtt" and e != REACTOR:
                continue
            skip = "no tokio engine in this build (cargo build --features tokio)" if e == TOKIO and not tokio else None
            cmd = (lambda port, proto=proto, e=e: [BIN, "serve", "-q", "--proto", proto, "--listen",
                                                   f"127.0.0.1:{port}", "--backlog", "4096"] + ENGINES[e])
            out.append((proto, e, cmd, False, None, skip))
        if proto == "redis" and not peers:
            out.append((proto, REDIS, redis_server_cmd, False, None,
                        None if have("redis-server") else "redis-server not installed"))
        if peers:
            for p in peer_servers(have):
                if proto in p["protos"] and p["kind"] == "peer":
                    out.append((proto, p["label"], lambda port, p=p, proto=proto: p["cmd"](proto, port),
                                p["workers"], p["env"], p["skip"]))
    return out


def mem_line_key(group, proto, label):
    """The line a memory row is listed (--list) and selected (--only) by."""
    return f"{group} | {'' if group == 'memory' else 'memory, '}{proto} idle connections | this script | {label}"


def redis_server_cmd(port):
    return ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--protected-mode", "no", "--maxclients", "19000"]


def run_memory_rows(rows, port, n, group):
    """Measures the memory rows (as memory_servers gives them); prints one line each and
    returns (records, printed lines, next port)."""
    recs, lines = [], []
    for proto, label, cmd, workers, env, skip in rows:
        extra = {"engine": label, "proto": proto}
        name = f"{label}, {proto}"
        if skip:
            rec = dict({"group": group, "server": name, "connections": n, "status": "skipped", "note": skip}, **extra)
        else:
            rec = memory_row(name, cmd(port), port, n, group=group, workers=workers, env=env, extra=extra,
                             connect=connect_with_request(IDLE_REQUESTS[proto]))
            port += 1
        recs.append(rec)
        lines.append(mem_line(rec))
        print(lines[-1], flush=True)
    return recs, lines, port


def memory_section(head, rows, port, n, group):
    """Prints `head`, measures the memory rows (one line each), then prints the side-by-side
    table, one column per server in the order of `rows`. Returns (records, row lines,
    table lines, next port)."""
    print(f"\n{head}\n\n{MEM_HEAD}", flush=True)
    recs, lines, port = run_memory_rows(rows, port, n, group)
    columns = []
    for r in rows:
        if r[1] not in columns:
            columns.append(r[1])
    table = memory_table(recs, columns)
    print("\n" + "\n".join(table), flush=True)
    return recs, lines, table, port


def table_cell(r, value, text, r_status=False):
    """One server's cell in a side-by-side table: blank without a record, "skipped", the
    status when `value(r)` is None (blank for an ok record unless `r_status`), else
    `text(r)`."""
    if r is None:
        return ""
    if r["status"] == "skipped":
        return "skipped"
    if value(r) is None:
        return r["status"] if r_status or r["status"] != "ok" else ""
    return text(r)


def memory_table(recs, columns):
    """Bytes per idle connection side by side: one line per protocol, one column per server;
    each cell is "after a warm-up connection (from a cold start)"."""
    head = "| protocol | " + " | ".join(columns) + " |\n|---|" + "---:|" * len(columns)
    lines = [head]
    for proto in MEMORY_PROTOS:
        by = {r["engine"]: r for r in recs if r.get("proto") == proto}
        if not by:
            continue
        def text(r):
            cold = r.get("bytes_per_conn_cold")
            return (f"{r['bytes_per_conn']:,.0f}" + (f" ({cold:,.0f})" if cold is not None else "")
                    + ("" if r["status"] == "ok" else f" ({r['status']})"))
        cells = [table_cell(by.get(c), lambda r: r.get("bytes_per_conn"), text, r_status=True) for c in columns]
        lines.append(f"| {proto} | " + " | ".join(cells) + " |")
    return lines


# ---- peers: issue 14's side-by-side table (group peers, --issue14) ------------------------

PEER_BIN = os.path.join(ROOT, "bench", "peers", "bin")

# The peers group's rows: (name, protocol, evloop load arguments, connections).
def peer_rows():
    rows = [("echo 64 B, 50 conns, pipeline 1", "echo", ["--size", "64"], 50),
            ("echo 64 B, 50 conns, pipeline 16", "echo", ["--size", "64", "--pipeline", "16"], 50)]
    for c in (int(x) for x in os.environ.get("PEERS_SCALE", "1000,10000,19000").split(",") if x.strip()):
        rows.append((f"echo 64 B, {c:,} conns, pipeline 1", "echo", ["--size", "64"], c))
    for pl in (1, 16):
        rows.append((f"HTTP GET /, 50 conns, pipeline {pl}", "http", ["--proto", "http", "--pipeline", str(pl)], 50))
    for pl in (1, 16):
        rows.append((f"RESP GET, 50 conns, pipeline {pl}", "redis",
                     ["--proto", "redis", "--command", "get", "--pipeline", str(pl)], 50))
    return rows


def peer_binary(name, how):
    """(path, skip reason or None) of a peer program that scripts/bench.sh builds into
    bench/peers/bin (NAME.skip there holds why it could not)."""
    path = os.path.join(PEER_BIN, name)
    if os.access(path, os.X_OK) and not os.path.exists(path + ".skip"):
        return path, None
    try:
        with open(path + ".skip") as f:
            why = f.read().strip().splitlines()[0]
    except (OSError, IndexError):
        why = f"not built (scripts/bench.sh --issue14 builds it; needs {how})"
    return path, why.replace("|", "/")[:200]


def peer_servers(have):
    """Every server of the peers group: label, short column name, protocols, command
    (proto, port) -> argv, kind (evloop or peer), skip reason, workers, env."""
    def ev(engine):
        return lambda proto, port: [BIN, "serve", "-q", "--proto", proto, "--listen", f"127.0.0.1:{port}",
                                    "--backlog", "4096"] + ENGINES[engine]

    def peer(name, how):
        path, skip = peer_binary(name, how)
        return (lambda proto, port: [path, proto, f"127.0.0.1:{port}"]), skip

    def http_only(name, how):
        path, skip = peer_binary(name, how)
        return (lambda proto, port: [path, f"127.0.0.1:{port}"]), skip
    go1 = {"GOMAXPROCS": "1"}
    out = [dict(label=REACTOR, short="evloop reactor", protos=("echo", "http", "redis"), cmd=ev(REACTOR),
                kind="evloop", skip=None, workers=False, env=None),
           dict(label=TOKIO, short="evloop tokio", protos=("echo", "http", "redis"), cmd=ev(TOKIO),
                kind="evloop", skip=None, workers=False, env=None)]
    specs = [("monoio-peer", "monoio (1 thread)", "monoio", ("echo", "http", "redis"), peer, "cargo", None),
             ("hyper-peer", "hyper (current_thread)", "hyper", ("http",), http_only, "cargo", None),
             ("may-peer", "may_minihttp (1 worker)", "may_minihttp", ("http",), http_only, "cargo", None),
             ("go-net", "Go net (GOMAXPROCS=1)", "Go net", ("echo", "http", "redis"), peer, "go", go1),
             ("gnet", "gnet v2 (1 loop)", "gnet", ("echo", "http", "redis"), peer, "go and the Go module proxy", go1),
             ("evio", "evio (1 loop)", "evio", ("echo", "http", "redis"), peer, "go and the Go module proxy", go1)]
    for name, label, short, protos, make, how, env in specs:
        cmd, skip = make(name, how)
        out.append(dict(label=label, short=short, protos=protos, cmd=cmd, kind="peer", skip=skip,
                        workers=False, env=env))
    # Not a peer: the least an epoll server can do per request (bench/peers/c/floor.c), so
    # that a table shows how much of any epoll server's cost is the kernel's.
    cmd, skip = peer("c-floor", "a C compiler (cc)")
    out.append(dict(label="epoll floor (C, canned replies)", short="epoll floor", protos=("echo", "http", "redis"),
                    cmd=cmd, kind="floor", skip=skip, workers=False, env=None))
    nginx_skip = None if have("nginx") else "nginx not installed (apt-get install nginx-light)"
    out.append(dict(label=NGINX, short="nginx", protos=("http",), cmd=lambda proto, port: nginx_http_cmd(port),
                    kind="peer", skip=nginx_skip, workers=True, env=None))
    out.append(dict(label=REDIS, short="redis-server", protos=("redis",),
                    cmd=lambda proto, port: redis_server_cmd(port), kind="peer",
                    skip=None if have("redis-server") else "redis-server not installed", workers=False, env=None))
    return out


def nginx_http_cmd(port):
    """nginx, one worker, `return 200 "Hello, World!"` on 127.0.0.1:port."""
    conf = os.path.join(OUT, f"nginx-peers-{port}.conf")
    os.makedirs(os.path.join(OUT, "nginx-tmp"), exist_ok=True)
    with open(conf, "w") as f:
        f.write(f"worker_processes 1;\npid {OUT}/nginx-peers.pid;\nerror_log {OUT}/nginx-error.log;\n"
                "worker_rlimit_nofile 20000;\nevents { worker_connections 19500; }\n"
                "http { access_log off; keepalive_requests 100000000;\n"
                f"  client_body_temp_path {OUT}/nginx-tmp; proxy_temp_path {OUT}/nginx-tmp;\n"
                f"  fastcgi_temp_path {OUT}/nginx-tmp; uwsgi_temp_path {OUT}/nginx-tmp;\n"
                f"  scgi_temp_path {OUT}/nginx-tmp;\n"
                f"  server {{ listen 127.0.0.1:{port} backlog=4096;\n"
                "    location / { default_type text/plain; return 200 \"Hello, World!\"; } } }\n")
    return ["nginx", "-e", f"{OUT}/nginx-error.log", "-c", conf, "-p", OUT, "-g", "daemon off;"]


def peer_cells(have):
    """(row, server) pairs of the peers group that --only selects, in table order."""
    cells = []
    servers = peer_servers(have)
    for row, proto, args, conns in peer_rows():
        for srv in servers:
            if proto not in srv["protos"]:
                continue
            if row_selected(f"peers | {row} | evloop load | {srv['label']}"):
                cells.append(dict(row=row, proto=proto, args=args, conns=conns, server=srv))
    return cells


# Syscalls counted per request in the perf round: raw_syscalls:sys_enter (all), and these
# sums of syscalls:sys_enter_* tracepoints.
SYSCALL_KINDS = {
    "epoll_wait": ("epoll_wait", "epoll_pwait", "epoll_pwait2"),
    "io_uring_enter": ("io_uring_enter",),
    "read": ("read", "readv", "recvfrom", "recvmsg"),
    "write": ("write", "writev", "sendto", "sendmsg"),
}


def syscall_events():
    """The perf events of the perf round: the total, plus the per-kind tracepoints where
    this kernel has them all (else the total only)."""
    kinds = [f"syscalls:sys_enter_{n}" for names in SYSCALL_KINDS.values() for n in names]
    try:
        r = subprocess.run(["perf", "stat", "-x,", "-e", ",".join([PERF_EVENT] + kinds), "true"],
                           capture_output=True, text=True, timeout=20)
        if r.returncode == 0:
            return [PERF_EVENT] + kinds
    except (OSError, subprocess.SubprocessError):
        pass
    return [PERF_EVENT]


def parse_perf_counts(text):
    """{event: count} from `perf stat -x,` output (events perf could not count are left out)."""
    counts = {}
    for line in text.splitlines():
        f = line.split(",")
        if len(f) >= 3:
            try:
                counts[f[2].strip()] = int(f[0])
            except ValueError:
                pass
    return counts


def fd_count(pids):
    """Open descriptors of the processes (cheap: no readlink, unlike sockets())."""
    n = 0
    for pid in pids:
        try:
            n += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return n


class PerfWindow:
    """`perf stat -x, -D -1 --control fifo:...` attached to `pids` with its events off:
    enable() and disable() switch them on and off (each waits for perf's ack), counts()
    stops perf and returns {event: count}. Started before the client, so that perf's own
    start-up is over before the window it counts."""

    def __init__(self, pids, events):
        self.dir = tempfile.mkdtemp(prefix="perf-", dir=OUT)
        self.ctl_path, self.ack_path = os.path.join(self.dir, "ctl"), os.path.join(self.dir, "ack")
        os.mkfifo(self.ctl_path)
        os.mkfifo(self.ack_path)
        self.ctl = self.ack = None
        self.proc = subprocess.Popen(["perf", "stat", "-x,", "-D", "-1", "--control",
                                      f"fifo:{self.ctl_path},{self.ack_path}", "-e", ",".join(events),
                                      "-p", ",".join(map(str, pids))],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        while self.ctl is None:  # perf opens its end of the FIFO once it is ready
            try:
                self.ctl = os.open(self.ctl_path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError("perf stat --control did not start")
                time.sleep(0.02)
        self.ack = os.open(self.ack_path, os.O_RDONLY | os.O_NONBLOCK)

    def _command(self, word):
        os.write(self.ctl, word.encode() + b"\n")
        deadline, got = time.monotonic() + 5, b""
        while b"ack" not in got:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"perf did not acknowledge {word}")
            try:
                got += os.read(self.ack, 64)
            except BlockingIOError:
                pass
            time.sleep(0.002)

    def enable(self):
        self._command("enable")

    def disable(self):
        self._command("disable")

    def counts(self):
        self.proc.send_signal(signal.SIGINT)
        err = self.proc.communicate(timeout=20)[1]
        self.close()
        return parse_perf_counts(err)

    def close(self):
        for fd in (self.ctl, self.ack):
            if fd is not None:
                os.close(fd)
        self.ctl = self.ack = None
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def client_connected(pid, port):
    """The client's connections to 127.0.0.1:port that are established (ss, which asks the
    kernel with a filter; without ss, the server side's count from /proc/net/tcp)."""
    if shutil.which("ss"):
        try:
            r = subprocess.run(["ss", "-Htn", "state", "established", f"dport = :{port}"],
                               capture_output=True, text=True, timeout=10)
            if r.returncode == 0:
                return sum(1 for line in r.stdout.splitlines() if line.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    return established(port)


def peer_run(cell, port, duration, warmup, events=None):
    """One cell once: a fresh server, `evloop load` for warmup + duration; the server's CPU
    over a window from 10% into the client's measured period, 80% of it long. The client's
    warmup starts when its last connect completes: this polls for that (client_connected),
    so the window starts at most a poll (0.1 s with many connections) late. Rows of more
    than 1,000 connections get conns / 10,000 s more warmup, time for a server to accept
    them all; a server that still holds fewer when the window starts gives a partial run
    (numbers kept, noted). The server runs on cell["server"]["cpu"] where given (else
    SERVER_CPU), the client on cell["client_cpu"] (else CLIENT_CPU). With `events`, perf
    counts those syscall events over the same window instead (PerfWindow), and the CPU
    figures are left out (perf slows every syscall)."""
    srv_spec = cell["server"]
    conns = cell["conns"]
    d, w = secs(duration), secs(warmup)
    if conns > 1000:
        w += conns / 10000
        warmup = f"{w:g}s"
    budget = 60.0 + conns / 200
    srv = Server(srv_spec["cmd"](cell["proto"], port), port, srv_spec["workers"], cpu=srv_spec.get("cpu"),
                 env=srv_spec["env"])
    client = evloop_load(port, duration, warmup, cell["args"], conns=conns, connect_budget=budget)
    proc = perf = None
    try:
        base = fd_count(srv.pids)
        if events:
            perf = PerfWindow(srv.pids, events)
        proc = subprocess.Popen(["taskset", "-c", cell.get("client_cpu", CLIENT_CPU)] + client.cmd,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # The client's last connect completes at some c in (before, after]: its measured
        # period [c + w, c + w + d] then surely holds [after + w, before + w + d].
        deadline = time.monotonic() + budget
        step = 0.01 if conns <= 1000 else 0.05
        before = after = time.monotonic()
        while proc.poll() is None and time.monotonic() < deadline:
            before = after
            if client_connected(proc.pid, port) >= conns:
                break
            time.sleep(step)
            after = time.monotonic()
        after = time.monotonic()
        start = after + w + 0.05 * d
        end = min(start + 0.8 * d, before + w + 0.95 * d)
        time.sleep(max(0.0, start - time.monotonic()))
        held = fd_count(srv.pids) - base
        if perf:
            perf.enable()
        c0, t0 = proc_cpu(srv.pids), time.monotonic()
        time.sleep(max(0.0, end - time.monotonic()))
        c1, t1 = proc_cpu(srv.pids), time.monotonic()
        if perf:
            perf.disable()
        still = proc.poll() is None
        rss = rss_bytes(srv.pids)
        out, err = proc.communicate(timeout=d + w + budget + 60)
        m = client.parse(out, err, proc.returncode)
        notes, partial = [], None
        if held < conns:
            partial = (f"the server held {max(held, 0):,} of {conns:,} connections when the window began "
                       f"({w:g} s after the last connect)")
        if not still:
            notes.append("the client ended before the window did")
        elif t1 - t0 < 0.4 * d:
            notes.append(f"a window of only {t1 - t0:.2f} s (the client's connects were seen late)")
        reqs = m["rps"] * (t1 - t0)
        if perf:
            counts = perf.counts()
            if PERF_EVENT in counts and reqs:
                m["syscalls_per_req"] = counts[PERF_EVENT] / reqs
                for kind, names in SYSCALL_KINDS.items():
                    got = [counts[f"syscalls:sys_enter_{n}"] for n in names if f"syscalls:sys_enter_{n}" in counts]
                    m[f"{kind}_per_req"] = sum(got) / reqs
                m["wait_per_req"] = m.get("epoll_wait_per_req", 0) + m.get("io_uring_enter_per_req", 0)
            else:
                notes.append("perf counted nothing")
        else:
            m.update(cpu_us_per_req=(c1 - c0) * 1e6 / reqs if reqs else None,
                     cpu_util=(c1 - c0) / (t1 - t0) * 100, rss_mib=rss / 2**20)
        m["status"] = "failed" if notes else "partial" if partial else "ok"
        if notes or partial:
            m["note"] = "; ".join(notes + ([partial] if partial else []))
        return m
    finally:
        if proc and proc.poll() is None:
            proc.kill()
            proc.wait()
        if perf:
            perf.close()
        srv.stop()


def run_rounds(cells, port, rounds, duration, warmup):
    """Every cell once per round (peer_cell_once, a fresh server and port each time), for
    `rounds` interleaved rounds, printing a line per run (a skipped cell's only in round
    1). Returns each cell's runs and the next free port."""
    runs = [[] for _ in cells]
    for rnd in range(rounds):
        for i, c in enumerate(cells):
            r = peer_cell_once(c, port, duration, warmup)
            port = port + 1 if not c["server"]["skip"] else port
            runs[i].append(r)
            if not c["server"]["skip"] or rnd == 0:
                print(f"  round {rnd + 1}/{rounds} | {c['row']} | {c['server']['label']} | {r['status']} | "
                      f"{fmt(r.get('rps'))} req/s | {fmt(r.get('cpu_us_per_req'), '.2f')} CPU us/req | "
                      f"{fmt(r.get('cpu_util'), '.0f')}% CPU | errors {r.get('errors', '')} {r.get('note', '')}",
                      flush=True)
    return runs, port


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def peer_cell_once(cell, port, duration, warmup, events=None):
    """peer_run, with every failure turned into a record."""
    if cell["server"]["skip"]:
        return dict(status="skipped", note=cell["server"]["skip"])
    try:
        return peer_run(cell, port, duration, warmup, events)
    except (OSError, RuntimeError, subprocess.SubprocessError, ValueError, KeyError, IndexError) as e:
        return dict(status="failed", note=f"{type(e).__name__}: {e}".replace("\n", " ").replace("|", "/")[:160])


PEER_METRICS = ("rps", "p50", "p99", "cpu_us_per_req", "cpu_util", "rss_mib")
SYSCALL_METRICS = ("syscalls_per_req", "wait_per_req") + tuple(f"{k}_per_req" for k in SYSCALL_KINDS)


def summarize_cell(cell, runs, perf_runs):
    """The medians of a cell's rounds (ok runs only) and its error and failure counts."""
    ok = [r for r in runs if r["status"] in ("ok", "partial")]
    rec = dict(row=cell["row"], proto=cell["proto"], conns=cell["conns"], server=cell["server"]["label"],
               short=cell["server"]["short"], kind=cell["server"]["kind"], rounds=len(runs), ok_rounds=len(ok),
               errors=sum(r.get("errors", 0) for r in runs), runs=runs, perf_runs=perf_runs)
    for k in PEER_METRICS:
        rec[k] = median([r.get(k) for r in ok])
    pok = [r for r in perf_runs if r["status"] in ("ok", "partial")]
    for k in SYSCALL_METRICS:
        rec[k] = median([r.get(k) for r in pok])
    if runs and all(r["status"] == "skipped" for r in runs):
        rec.update(status="skipped", note=runs[0].get("note", ""))
    elif not ok:
        rec.update(status="failed", note=next((r.get("note") for r in runs if r.get("note")), ""))
    else:
        rec["status"] = "ok"
        rec["partial"] = sum(r["status"] == "partial" for r in runs + perf_runs)
        notes = []
        if len(ok) < len(runs):
            notes.append(f"{len(runs) - len(ok)} of {len(runs)} rounds left out: "
                         + "; ".join(sorted({r.get("note", r["status"]) for r in runs if r not in ok})))
        if rec["partial"]:
            notes.append(f"{rec['partial']} partial run(s): "
                         + "; ".join(sorted({r["note"] for r in runs + perf_runs if r["status"] == "partial"})[:2]))
        bad_perf = [r for r in perf_runs if r["status"] not in ("ok", "partial")]
        if bad_perf:
            notes.append("perf round: " + "; ".join(r.get("note", r["status"]) for r in bad_perf))
        if notes:
            rec["note"] = " / ".join(notes)
    return rec


def side_by_side(recs, columns, metric, spec, lower_better, title, compare=True, exclude=()):
    """A markdown table: row | evloop | best peer (name, value) | evloop / best | one column
    per server (without `compare`: row | one column per server). evloop is the reactor; the
    best peer is the best non-evloop server (lowest where `lower_better`) not in `exclude`."""
    if compare:
        head = (f"{title}\n\n| row | evloop | best peer | evloop ÷ best | " + " | ".join(columns) + " |\n"
                "|---|---:|---|---:|" + "---:|" * len(columns))
    else:
        head = f"{title}\n\n| row | " + " | ".join(columns) + " |\n|---|" + "---:|" * len(columns)
    lines = [head]
    rows = []
    for r in recs:
        if r["row"] not in rows:
            rows.append(r["row"])
    for row in rows:
        by = {r["short"]: r for r in recs if r["row"] == row}
        val = lambda r: r.get(metric) if r and r["status"] == "ok" else None
        ev = val(by.get("evloop reactor"))
        peers = [(r["short"], val(r)) for r in by.values()
                 if r["kind"] == "peer" and r["short"] not in exclude and val(r) is not None]
        best = (min if lower_better else max)(peers, key=lambda p: p[1]) if peers else None
        ratio = f"{ev / best[1]:.2f}" if ev is not None and best and best[1] else ""
        text = lambda r: format(val(r), spec) + ("*" if r["errors"] else "") + ("†" if r.get("partial") else "")
        cells = [table_cell(by.get(c), val, text) for c in columns]
        if compare:
            lines.append(f"| {row} | {fmt(ev, spec)} | " + (f"{best[0]} {format(best[1], spec)}" if best else "")
                         + f" | {ratio} | " + " | ".join(cells) + " |")
        else:
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return lines


def detail_lines(recs):
    head = ("| row | server | rounds ok | req/s | p50 us | p99 us | CPU us/req | CPU % | syscalls/req | "
            "epoll_wait/req | io_uring_enter/req | read/req | write/req | RSS MiB | errors | note |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    lines = [head]
    for r in recs:
        if r["status"] == "skipped":
            lines.append(f"| {r['row']} | {r['server']} | | | | | | | | | | | | | | skipped: {r.get('note', '')} |")
            continue
        lines.append(f"| {r['row']} | {r['server']} | {r['ok_rounds']}/{r['rounds']} | {fmt(r['rps'])} | "
                     f"{fmt(r['p50'])} | {fmt(r['p99'])} | {fmt(r['cpu_us_per_req'], '.2f')} | "
                     f"{fmt(r['cpu_util'], '.0f')} | {fmt(r['syscalls_per_req'], '.2f')} | "
                     f"{fmt(r['epoll_wait_per_req'], '.3f')} | {fmt(r['io_uring_enter_per_req'], '.3f')} | "
                     f"{fmt(r['read_per_req'], '.2f')} | {fmt(r['write_per_req'], '.2f')} | "
                     f"{fmt(r['rss_mib'], '.1f')} | {r['errors']} | "
                     f"{(r['status'] + ': ' if r['status'] != 'ok' else '') + r.get('note', '')} |")
    return lines


def run_peers(have, tokio, port, quick, use_perf):
    """The peers group: every cell once per round, ROUNDS interleaved rounds, then one perf
    round for syscalls; then the memory rows of the peers; prints and writes the tables.
    Returns the next free port."""
    rounds = int(os.environ.get("ROUNDS", "2" if quick else "5"))
    duration = os.environ.get("DURATION", "1s" if quick else "2s")
    warmup = os.environ.get("WARMUP", "300ms" if quick else "500ms")
    perf_d = os.environ.get("PERF_DURATION", "1s")
    mem_n = int(os.environ.get("MEMORY_CONNS", "1000" if quick else "10000"))
    cells = peer_cells(have)
    for c in cells:
        if c["server"]["label"] == TOKIO and not tokio:
            c["server"] = dict(c["server"], skip="no tokio engine in this build (cargo build --features tokio)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for c in cells:
        need = c["conns"] + 100
        if hard != resource.RLIM_INFINITY and hard < need and not c["server"]["skip"]:
            c["server"] = dict(c["server"], skip=f"RLIMIT_NOFILE hard limit {hard} < {need}")
    events = syscall_events() if use_perf else None
    monoio = os.path.join(PEER_BIN, "monoio-peer")
    driver = ""
    if os.access(monoio, os.X_OK):
        try:
            driver = subprocess.run([monoio, "--driver"], capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    live = sum(not c["server"]["skip"] for c in cells)
    print(f"\nPeers (issue 14): {len(cells)} cells ({live} to run), {rounds} interleaved rounds of {duration} after "
          f"{warmup} warmup, then {'a perf round of ' + perf_d + ' runs' if events else 'no perf round (perf unavailable)'}; "
          f"server CPU {SERVER_CPU}, evloop load on CPU {CLIENT_CPU}" + (f"; monoio driver: {driver}" if driver else ""),
          flush=True)
    t_start = time.monotonic()
    runs, port = run_rounds(cells, port, rounds, duration, warmup)
    perf_runs = [[] for _ in cells]
    if events:
        for i, c in enumerate(cells):
            if c["server"]["skip"]:
                continue
            r = peer_cell_once(c, port, perf_d, warmup, events)
            port += 1
            perf_runs[i].append(r)
            print(f"  perf | {c['row']} | {c['server']['label']} | {r['status']} | "
                  f"{fmt(r.get('syscalls_per_req'), '.2f')} syscalls/req {r.get('note', '')}", flush=True)
    recs = [summarize_cell(c, runs[i], perf_runs[i]) for i, c in enumerate(cells)]
    columns = []
    for r in recs:
        if r["short"] not in columns:
            columns.append(r["short"])
    out = [f"Issue 14: evloop vs peers, one server on CPU {SERVER_CPU}, `evloop load` (one thread) on CPU "
           f"{CLIENT_CPU}; medians of {rounds} interleaved rounds of {duration} after {warmup} warmup "
           f"({(time.monotonic() - t_start) / 60:.1f} min). evloop = the reactor (`evloop serve --loops 1`); "
           "best peer = the best server that is not evloop (its tokio engine is shown, not counted as a peer); "
           "* = errors in some round; † = in some run the server did not yet hold every connection when the "
           "window began (see the detail table)."
           + (f" monoio driver: {driver}." if driver else "")]
    out += [""] + side_by_side(recs, columns, "cpu_us_per_req", ".2f", True,
                               "Server CPU us per request (lower is better; evloop ÷ best < 1: evloop uses less)")
    out += [""] + side_by_side(recs, columns, "rps", ",.0f", False,
                               "Requests per second (higher is better; evloop ÷ best > 1: evloop is faster)")
    if events:
        out += [""] + side_by_side(recs, columns, "syscalls_per_req", ".2f", True,
                                   f"Server syscalls per request (perf round, {perf_d} runs; lower is better; monoio "
                                   "is left out of the best peer: over io_uring its reads and writes are no syscalls)",
                                   exclude=("monoio",))
        out += [""] + side_by_side(recs, columns, "wait_per_req", ".3f", True,
                                   "epoll_wait (+ epoll_pwait; io_uring_enter for monoio) per request (perf round); it "
                                   "depends on how saturated the server is: see the CPU % table")
    out += [""] + side_by_side(recs, columns, "cpu_util", ".0f", False,
                               "Server CPU utilisation, % of the window (100 = one core saturated; below 100 the "
                               "client is the bottleneck)", compare=False)
    out += ["", "Detail (medians; syscall columns from the perf round: epoll_wait counts epoll_pwait/pwait2, read "
                "counts readv/recvfrom/recvmsg, write counts writev/sendto/sendmsg)", ""] + detail_lines(recs)
    print("\n" + "\n".join(out), flush=True)
    mem = []
    if os.environ.get("PEERS_MEMORY", "1") != "0":
        rows = [r for r in memory_servers(have, tokio, peers=True)
                if row_selected(mem_line_key("peers", r[0], r[1]))]
        if rows:
            head = (f"Memory: bytes per idle connection, {mem_n:,} connections that each did one request "
                    "(RSS with them - RSS with none) / N")
            mem, mlines, table, port = memory_section(head, rows, port, mem_n, "peers")
            out += ["", head, ""] + table + ["", MEM_HEAD] + mlines
    with open(os.path.join(OUT, "peers.md"), "w") as f:
        f.write("\n".join(out) + "\n")
    meta = dict(rounds=rounds, duration=duration, warmup=warmup, perf_duration=perf_d, server_cpu=SERVER_CPU,
                client_cpu=CLIENT_CPU, syscall_events=events, monoio_driver=driver, memory_conns=mem_n,
                time=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    with open(os.path.join(OUT, "peers.json"), "w") as f:
        json.dump(dict(meta=meta, cells=recs, memory=mem), f, indent=1)
    bad = [r for r in recs if r["status"] == "failed"] + [m for m in mem if m["status"] == "failed"]
    errs = sum(r["errors"] for r in recs)
    print(f"\n{len(recs)} cells ({sum(r['status'] == 'skipped' for r in recs)} skipped, {len(bad)} failed, "
          f"{errs} wrong replies or dropped connections in all), {len(mem)} memory rows; wrote {OUT}/peers.md "
          "and peers.json", flush=True)
    return port


# ---- TLS ---------------------------------------------------------------------------------

TLS_CERT = {}
REACTOR_TLS, NGINX_TLS = "reactor (1 loop, rustls)", "nginx (1 worker, OpenSSL)"


def tls_cert():
    """A self-signed P-256 certificate for localhost / 127.0.0.1 (made once per run, in a
    temporary directory under target/bench); (cert, key) paths."""
    if "cert" not in TLS_CERT:
        d = tempfile.mkdtemp(prefix="tls-", dir=OUT)
        cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                        "-keyout", key, "-out", cert], check=True, capture_output=True, timeout=30)
        TLS_CERT.update(cert=cert, key=key)
    return TLS_CERT["cert"], TLS_CERT["key"]


def evloop_tls_cmd(port):
    cert, key = tls_cert()
    return [BIN, "serve", "-q", "--proto", "http", "--listen", f"tls://127.0.0.1:{port}",
            "--tls-cert", cert, "--tls-key", key, "--backlog", "4096"] + ENGINES[REACTOR]


def nginx_tls_cmd(port):
    """nginx, one worker, `return 200` over TLS with the same certificate; a shared session
    cache so that -reuse resumes (TLS 1.3 tickets are on by default)."""
    cert, key = tls_cert()
    conf = os.path.join(OUT, f"nginx-tls-{port}.conf")
    with open(conf, "w") as f:
        f.write(f"worker_processes 1;\npid {OUT}/nginx-tls.pid;\nerror_log {OUT}/nginx-error.log;\n"
                "events { worker_connections 16384; }\n"
                "http { access_log off; keepalive_requests 100000000;\n"
                f"  client_body_temp_path {OUT}/nginx-tmp; proxy_temp_path {OUT}/nginx-tmp;\n"
                f"  fastcgi_temp_path {OUT}/nginx-tmp; uwsgi_temp_path {OUT}/nginx-tmp;\n"
                f"  scgi_temp_path {OUT}/nginx-tmp;\n"
                f"  ssl_certificate {cert}; ssl_certificate_key {key};\n"
                "  ssl_session_cache shared:SSL:10m;\n"
                f"  server {{ listen 127.0.0.1:{port} ssl;\n"
                "    location / { default_type text/plain; return 200 \"Hello, World!\"; } } }\n")
    return ["nginx", "-e", f"{OUT}/nginx-error.log", "-c", conf, "-p", OUT, "-g", "daemon off;"]


def tls_skips(have):
    """Why the TLS rows cannot run, per server: (no_openssl, no_nginx, no_wrk)."""
    no_openssl = None if have("openssl") else "openssl not installed (certificate, s_time)"
    no_nginx = no_openssl or (None if have("nginx") else "nginx not installed (apt-get install nginx-light)")
    no_wrk = None if have("wrk") else "wrk not installed (apt-get install wrk)"
    return no_openssl, no_nginx, no_wrk


def tls_memory_rows(only, have):
    """The tls group's idle-connection rows: (label, command, workers, skip)."""
    if only and "tls" not in only:
        return []
    no_openssl, no_nginx, _ = tls_skips(have)
    rows = [(REACTOR_TLS, evloop_tls_cmd, False, no_openssl), (NGINX_TLS, nginx_tls_cmd, True, no_nginx)]
    return [r for r in rows if row_selected(f"tls | idle TLS connections | {r[0]}")]


# ---- the scenarios ---------------------------------------------------------------------

def scenarios(quick, only, have, tokio, duration, warmup, n1):
    ev = lambda proto, engine, *extra: (
        lambda port: [BIN, "serve", "-q", "--proto", proto, "--listen", f"127.0.0.1:{port}"]
        + ENGINES[engine] + list(extra))
    specs = []

    def add(group, scenario, client, server, server_cmd, client_fn, role, workers=False, skip=None):
        if only and group not in only:
            return
        if not row_selected(f"{group} | {scenario} | {client} | {server}"):
            return
        specs.append(dict(group=group, scenario=scenario, client=client, server=server, role=role,
                          server_cmd=server_cmd, client_fn=client_fn, workers=workers, skip=skip))

    engines = [REACTOR, STD, TOKIO]
    eng_skip = lambda e: "no tokio engine in this build (cargo build --features tokio)" \
        if e == TOKIO and not tokio else None
    role = lambda e: {REACTOR: "reactor", STD: "std", TOKIO: "tokio"}[e]

    # echo
    echo = [("echo 6 B ping-pong, 50 conns", ["--size", "6"])]
    if not quick:
        echo.append(("echo 4 KiB stream, 50 conns, pipeline 8", ["--size", "4K", "--pipeline", "8"]))
    for scen, args in echo:
        for e in engines:
            add("echo", scen, "evloop load", e, ev("echo", e),
                lambda port, a=args: evloop_load(port, CLIENT["d"], CLIENT["w"] or warmup, a), role(e), skip=eng_skip(e))

    # http
    nginx_conf = os.path.join(OUT, "nginx.conf")
    with open(nginx_conf, "w") as f:
        f.write(f"worker_processes 1;\npid {OUT}/nginx.pid;\nerror_log {OUT}/nginx-error.log;\n"
                "events { worker_connections 16384; }\n"
                "http { access_log off; keepalive_requests 100000000;\n"
                f"  client_body_temp_path {OUT}/nginx-tmp; proxy_temp_path {OUT}/nginx-tmp;\n"
                f"  fastcgi_temp_path {OUT}/nginx-tmp; uwsgi_temp_path {OUT}/nginx-tmp;\n"
                f"  scgi_temp_path {OUT}/nginx-tmp;\n"
                "  server { listen 127.0.0.1:__PORT__;\n"
                "    location / { default_type text/plain; return 200 \"Hello, World!\"; } } }\n")

    def nginx_cmd(port):
        conf = os.path.join(OUT, f"nginx-{port}.conf")
        with open(nginx_conf) as src, open(conf, "w") as dst:
            dst.write(src.read().replace("__PORT__", str(port)))
        return ["nginx", "-e", f"{OUT}/nginx-error.log", "-c", conf, "-p", OUT, "-g", "daemon off;"]
    no_nginx = None if have("nginx") else "nginx not installed"
    no_wrk = None if have("wrk") else "wrk not installed"
    for pl in ((16,) if quick else (1, 16)):
        scen = f"HTTP GET /, 50 conns, pipeline {pl}"
        for e in engines:
            add("http", scen, "evloop load", e, ev("http", e),
                lambda port, pl=pl: evloop_load(port, CLIENT["d"], CLIENT["w"] or warmup,
                                                ["--proto", "http", "--pipeline", str(pl)]),
                role(e), skip=eng_skip(e))
        add("http", scen, "evloop load", NGINX, nginx_cmd,
            lambda port, pl=pl: evloop_load(port, CLIENT["d"], CLIENT["w"] or warmup, ["--proto", "http", "--pipeline", str(pl)]),
            "peer", workers=True, skip=no_nginx)
        for e in ([REACTOR] if quick else engines):
            add("http", scen, "wrk", e, ev("http", e), lambda port, pl=pl: wrk(port, CLIENT["d"], pl),
                role(e), skip=no_wrk or eng_skip(e))
        add("http", scen, "wrk", NGINX, nginx_cmd, lambda port, pl=pl: wrk(port, CLIENT["d"], pl),
            "peer", workers=True, skip=no_wrk or no_nginx)

    # redis
    redis_cmd = lambda port: ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--protected-mode", "no"]
    no_redis = None if have("redis-server") else "redis-server not installed"
    no_rb = None if have("redis-benchmark") else "redis-benchmark not installed"
    cases = [("get", 16)] if quick else [(c, pl) for pl in (1, 16) for c in ("ping", "set", "get")]
    for cmd, pl in cases:
        scen = f"RESP {cmd.upper()}, 50 conns, pipeline {pl}"
        load = lambda port, cmd=cmd, pl=pl: evloop_load(
            port, CLIENT["d"], CLIENT["w"] or warmup, ["--proto", "redis", "--command", cmd, "--pipeline", str(pl)])
        n = n1 * (15 if pl > 1 else 1)
        rb = lambda port, cmd=cmd, pl=pl, n=n: redis_benchmark(
            port, {"ping": "ping_mbulk"}.get(cmd, cmd), pl, int(n * CLIENT["n"]))
        for e in engines:
            add("redis", scen, "evloop load", e, ev("redis", e), load, role(e), skip=eng_skip(e))
        add("redis", scen, "evloop load", REDIS, redis_cmd, load, "peer", skip=no_redis)
        for e in ([REACTOR] if quick else engines):
            add("redis", scen, "redis-benchmark", e, ev("redis", e), rb, role(e), skip=no_rb or eng_skip(e))
        add("redis", scen, "redis-benchmark", REDIS, redis_cmd, rb, "peer", skip=no_rb or no_redis)

    # proxy: the proxy is the measured server; the echo backend runs on BACKEND_CPU
    def proxy_cmd(splice):
        return lambda port: [BIN, "proxy", "-q", "--listen", f"127.0.0.1:{port}", "--loops", "1",
                             "--backend", f"127.0.0.1:{backend_port(port + 10000)}",
                             "--health-check", "off", "--splice" if splice else "--no-splice"]

    def haproxy_cmd(splice):
        def cmd(port):
            conf = os.path.join(OUT, f"haproxy-{port}.cfg")
            with open(conf, "w") as f:
                f.write("global\n  nbthread 1\n  maxconn 4000\n"
                        "defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 60s\n"
                        "  timeout server 60s\n" + ("  option splice-request\n  option splice-response\n" if splice else "") +
                        f"listen p\n  bind 127.0.0.1:{port}\n"
                        f"  server b 127.0.0.1:{backend_port(port + 10000)}\n")
            return ["haproxy", "-db", "-f", conf]
        return cmd

    def nginx_stream_cmd(port):
        conf = os.path.join(OUT, f"nginx-stream-{port}.conf")
        with open(conf, "w") as f:
            f.write(f"load_module {NGINX_STREAM_MODULE};\nworker_processes 1;\npid {OUT}/nginx-stream.pid;\n"
                    f"error_log {OUT}/nginx-error.log;\nevents {{ worker_connections 16384; }}\n"
                    f"stream {{ server {{ listen 127.0.0.1:{port}; "
                    f"proxy_half_close on; proxy_pass 127.0.0.1:{backend_port(port + 10000)}; }} }}\n")
        return ["nginx", "-e", f"{OUT}/nginx-error.log", "-c", conf, "-p", OUT, "-g", "daemon off;"]
    no_haproxy = None if have("haproxy") else "haproxy not installed (apt-get install haproxy)"
    no_stream = no_nginx or (None if os.path.exists(NGINX_STREAM_MODULE) else
                             "nginx stream module not installed (apt-get install libnginx-mod-stream)")
    scen = "echo 64 B ping-pong through a proxy, 50 conns"
    load64 = lambda port: evloop_load(port, CLIENT["d"], CLIENT["w"] or warmup, ["--size", "64"])
    add("proxy", scen, "evloop load", PROXY, proxy_cmd(False), load64, "reactor")
    if not quick:
        add("proxy", scen, "evloop load", PROXY_SPLICE, proxy_cmd(True), load64, "splice")
    add("proxy", scen, "evloop load", HAPROXY, haproxy_cmd(False), load64, "peer", skip=no_haproxy)
    add("proxy", scen, "evloop load", NGINX_STREAM, nginx_stream_cmd, load64, "peer", workers=True,
        skip=no_stream)
    size = int(os.environ.get("BULK_BYTES", str(2**28 if quick else 2**30)))
    scen = f"bulk {size / 2**30:g} GiB each way through a proxy, 1 conn"
    add("proxy", scen, "bulk client", PROXY, proxy_cmd(False), lambda port: bulk(port, size), "reactor")
    add("proxy", scen, "bulk client", PROXY_SPLICE, proxy_cmd(True), lambda port: bulk(port, size), "splice")
    add("proxy", scen, "bulk client", HAPROXY, haproxy_cmd(False), lambda port: bulk(port, size), "peer",
        skip=no_haproxy)
    if not quick:
        add("proxy", scen, "bulk client", HAPROXY_SPLICE, haproxy_cmd(True), lambda port: bulk(port, size),
            "peer", skip=no_haproxy)
        add("proxy", scen, "bulk client", NGINX_STREAM, nginx_stream_cmd, lambda port: bulk(port, size),
            "peer", workers=True, skip=no_stream)

    # tls: HTTPS keep-alive with wrk, handshakes with openssl s_time (CPU per handshake)
    no_openssl, no_tls_nginx, no_tls_wrk = tls_skips(have)
    for pl in ((16,) if quick else (1, 16)):
        scen = f"HTTPS GET /, 50 conns, pipeline {pl}"
        add("tls", scen, "wrk", REACTOR_TLS, evloop_tls_cmd,
            lambda port, pl=pl: wrk(port, CLIENT["d"], pl, scheme="https"), "reactor",
            skip=no_openssl or no_tls_wrk)
        add("tls", scen, "wrk", NGINX_TLS, nginx_tls_cmd,
            lambda port, pl=pl: wrk(port, CLIENT["d"], pl, scheme="https"), "peer", workers=True,
            skip=no_tls_nginx or no_tls_wrk)
    for reuse in (False, True):
        scen = f"TLS handshakes + GET /, {'resumed (s_time -reuse)' if reuse else 'full (s_time -new)'}, 1 conn at a time"
        add("tls", scen, "openssl s_time", REACTOR_TLS, evloop_tls_cmd,
            lambda port, r=reuse: s_time(port, CLIENT["d"], r), "reactor", skip=no_openssl)
        add("tls", scen, "openssl s_time", NGINX_TLS, nginx_tls_cmd,
            lambda port, r=reuse: s_time(port, CLIENT["d"], r), "peer", workers=True, skip=no_tls_nginx)

    # connection scaling
    steps = os.environ.get("SCALE", "10,1000" if quick else "10,100,1000,10000")
    for c in (int(x) for x in steps.split(",")):
        scen = f"echo ping-pong, {c:,} conns"
        budget = 30.0 + c / 100  # for the client's connects
        # A longer warmup, so a server can accept every connection before the window
        # (the std engine's acceptor competes for the one CPU with every busy thread).
        w = f"{secs(warmup) + min(c / 250, 20):g}s"
        for e in (REACTOR, STD):
            add("scaling", scen, "evloop load", e, ev("echo", e, "--backlog", "4096"),
                lambda port, c=c, b=budget, w=w: evloop_load(port, CLIENT["d"], CLIENT["w"] or w, ["--size", "6"],
                                                             conns=c, connect_budget=b), role(e))
    return specs


# ---- output ----------------------------------------------------------------------------

def fmt(v, spec=",.0f"):
    return "" if v is None else format(v, spec)


HEAD = ("| scenario | client | server | req/s | p50 us | p99 us | server CPU us/req | syscalls/req "
        "| server RSS MiB | errors |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|")


def table_line(r):
    lead = f"| {r['scenario']} | {r['client']} | {r['server']} |"
    if r["status"] != "ok" and r.get("rps") is None:
        return f"{lead} {r['status']}: {r.get('note', '')} | | | | | | |"
    if r["status"] != "ok":  # finished, but not what it meant to measure
        lead = f"| {r['scenario']} | {r['client']} | {r['server']} ({r['status']}: {r['note']}) |"
    return (f"{lead} {fmt(r['rps'])} | {fmt(r['p50'])} | {fmt(r['p99'])} | "
            f"{fmt(r['cpu_us_per_req'], '.2f')} | {fmt(r['syscalls_per_req'], '.2f')} | "
            f"{fmt(r['rss_mib'], '.1f')} | {r['errors']} |")


MEM_HEAD = ("| server | idle connections | RSS with none MiB | RSS with them MiB | bytes per connection | note |\n"
            "|---|---:|---:|---:|---:|---|")


def mem_line(r):
    note = r.get("note", "")
    if r["status"] != "ok":
        note = f"{r['status']}: {note}"
    if r["status"] == "skipped":
        return f"| {r['server']} | {r['connections']:,} | | | | {note} |"
    return (f"| {r['server']} | {r.get('held', 0):,} of {r['connections']:,} | {fmt(r.get('rss0_mib'), '.1f')} | "
            f"{fmt(r.get('rss_mib'), '.1f')} | {fmt(r.get('bytes_per_conn'))} | {note} |")


def ratios(rows):
    """Per (scenario, client): reactor over std, tokio and each peer, for req/s and CPU/req."""
    out, groups = [], {}
    for r in rows:
        if r["status"] == "ok":
            groups.setdefault((r["scenario"], r["client"]), []).append(r)
    for (scen, client), rs in groups.items():
        react = next((r for r in rs if r["role"] == "reactor"), None)
        if not react:
            continue
        for other in rs:
            if other is react:
                continue
            rps = react["rps"] / other["rps"] if other["rps"] else None
            a, b = react["cpu_us_per_req"], other["cpu_us_per_req"]
            cpu = a / b if a and b else None
            a, b = react["syscalls_per_req"], other["syscalls_per_req"]
            sc = a / b if a and b else None
            out.append(dict(scenario=scen, client=client, versus=other["server"], role=other["role"],
                            rps_ratio=rps, cpu_ratio=cpu, syscall_ratio=sc))
    return out


def ratio_lines(rat):
    lines, by = [], {}
    for x in rat:
        by.setdefault((x["scenario"], x["client"]), []).append(x)
    for (scen, client), xs in by.items():
        parts = []
        for x in xs:
            name = {"std": "std", "tokio": "tokio"}.get(x["role"], x["versus"])
            p = f"reactor/{name} {fmt(x['rps_ratio'], '.2f')}x req/s"
            if x["cpu_ratio"] is not None:
                p += f", {x['cpu_ratio']:.2f}x CPU/req"
            parts.append(p)
        lines.append(f"- **{scen}** ({client}): " + "; ".join(parts))
    return lines


GROUPS = ("echo", "http", "redis", "proxy", "scaling", "memory", "tls", "peers", "cores")
# Groups that run alone, outside the regular table, and only when named (peers also by
# --issue14): a run that names no group runs the others.
APART = ("peers", "cores")
DEFAULT_GROUPS = tuple(g for g in GROUPS if g not in APART)

# Substrings from --only; a row runs when its "group | scenario | client | server" line
# contains one of them (case-insensitive). Empty: every row.
ONLY_ROWS = []


def row_selected(line):
    return not ONLY_ROWS or any(o.lower() in line.lower() for o in ONLY_ROWS)


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="scripts/bench.sh",
        description="Benchmarks evloop's engines (reactor, std, tokio) against each other and "
                    "against nginx and redis-server. Each row: one server pinned to SERVER_CPU, "
                    "one client pinned to CLIENT_CPU. The full run takes about 15 minutes on 2 "
                    "cores; --quick under 2. The group peers (--issue14; not in a plain run) "
                    "puts evloop beside monoio, hyper, may_minihttp, Go net, gnet, evio, nginx "
                    "and redis-server in interleaved rounds (about 25 minutes). The group cores (not in a "
                    "plain run) measures throughput at 1, 2, 4, 8 loops with --reuseport --pin on a "
                    "machine of 16 CPUs or more (about 2.5 minutes).",
        epilog="Environment: SERVER_CPU, CLIENT_CPU, PORT, DURATION, WARMUP, REQUESTS "
               "(redis-benchmark -n at pipeline 1; x15 at pipeline 16), PERF=0, PERF_DURATION, "
               "SCALE (e.g. 10,100,1000), MEMORY_CONNS; for peers also ROUNDS (5), PEERS_SCALE "
               "(1000,10000,19000), PEERS_MEMORY=0 (no memory rows); for cores SERVER_CPUS and CLIENT_CPUS "
               "(taskset lists; default: the first and second half of the CPUs), CORES_LOOPS (1,2,4,8), "
               "CORES_PIPELINES (1,16), CORES_CONNS (100 per client CPU), ROUNDS (3). Writes "
               "target/bench/results.md, results.json (and, from bench.sh, results.svg); peers writes "
               "peers.md and peers.json, cores cores.md and cores.json.")
    p.add_argument("--quick", action="store_true",
                   help="a subset with short rows (1 s per row after 300 ms warmup)")
    p.add_argument("--only", nargs="+", metavar="TEXT", default=[],
                   help="run only the rows whose 'group | scenario | client | server' contains "
                        "one of these texts (case-insensitive), e.g. --only 'RESP GET' nginx; "
                        "memory rows match on 'memory | <protocol> idle connections | this script "
                        "| <server>' (peers ones on 'peers | ...'); --list prints every row's line")
    p.add_argument("--issue14", action="store_true",
                   help="issue 14's side-by-side table: the same as naming the group peers")
    p.add_argument("--list", action="store_true",
                   help="print the rows that would run, then exit (needs no build)")
    p.add_argument("groups", nargs="*", metavar="GROUP",
                   help=f"only these groups: {' '.join(GROUPS)} (default: all but peers and cores)")
    p.add_argument("--parse-only", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    bad = [g for g in a.groups if g not in GROUPS]
    if bad:
        p.error(f"unknown group {', '.join(bad)} (groups: {' '.join(GROUPS)})")
    if a.issue14 and "peers" not in a.groups:
        a.groups.append("peers")
    return a


def main():
    a = parse_args(sys.argv[1:])
    groups = list(a.groups) or list(DEFAULT_GROUPS)
    peers = "peers" in groups
    cores = "cores" in groups
    only = [g for g in groups if g not in APART]  # the groups of the regular table
    if a.parse_only:  # for bench.sh: what to build and whether to draw results.svg
        print(" ".join((["peers"] if peers else []) + (["others"] if only else [])))
        return
    quick = a.quick
    ONLY_ROWS.extend(a.only)
    if a.list:
        os.makedirs(OUT, exist_ok=True)  # scenarios() writes the nginx config there
        if only:
            specs = scenarios(quick, only, shutil.which, True, "1s", "0s", 1)
            for spec in specs:
                print(f"{spec['group']} | {spec['scenario']} | {spec['client']} | {spec['server']}")
            if "memory" in only:
                for proto, label, _, _, _, _ in memory_servers(shutil.which, True):
                    if row_selected(mem_line_key("memory", proto, label)):
                        print(mem_line_key("memory", proto, label))
            for label, _, _, _ in tls_memory_rows(only, shutil.which):
                print(f"tls | idle TLS connections | this script | {label}")
        if peers:
            for c in peer_cells(shutil.which):
                print(f"peers | {c['row']} | evloop load | {c['server']['label']}")
            if os.environ.get("PEERS_MEMORY", "1") != "0":
                for proto, label, _, _, _, _ in memory_servers(shutil.which, True, peers=True):
                    if row_selected(mem_line_key("peers", proto, label)):
                        print(mem_line_key("peers", proto, label))
        if cores:
            for line in bench_cores.list_lines(sys.modules[__name__]):
                if row_selected(line):
                    print(line)
        return
    duration = os.environ.get("DURATION", "1s" if quick else "5s")
    warmup = os.environ.get("WARMUP", "300ms" if quick else "1s")
    n1 = int(os.environ.get("REQUESTS", "50000" if quick else "300000"))
    mem_n = int(os.environ.get("MEMORY_CONNS", "1000" if quick else "10000"))
    port = int(os.environ.get("PORT", "5700"))
    if not os.access(BIN, os.X_OK):
        sys.exit(f"bench.py: {BIN} not found; run scripts/bench.sh (it builds it)")
    os.makedirs(os.path.join(OUT, "nginx-tmp"), exist_ok=True)
    have = shutil.which
    use_perf = perf_works()
    help_text = subprocess.run([BIN, "serve", "--help"], capture_output=True, text=True, timeout=10).stdout
    # the --engine option's possible values (not the examples above the options)
    engines = re.search(r"--engine <ENGINE>.*?possible values: ([^\]]*)\]", help_text, re.S)
    tokio = bool(engines and "tokio" in engines.group(1))
    # this process opens the memory rows' connections; evloop load raises its own limit
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    if not only:  # the peers and/or cores groups alone
        if peers:
            port = run_peers(have, tokio, port, quick, use_perf)
        if cores:
            bench_cores.run(sys.modules[__name__], port)
        return
    CLIENT.update(d=duration, n=1.0)
    perf_pass = dict(d=os.environ.get("PERF_DURATION", "1s" if quick else "2s"), w="0s", n=0.25) if use_perf else None
    specs = scenarios(quick, only, have, tokio, duration, warmup, n1)
    print(f"evloop bench: {'quick' if quick else 'full'} run, {duration} per row after {warmup} warmup, "
          f"server CPU {SERVER_CPU}, client CPU {CLIENT_CPU}, syscalls "
          f"{'by perf' if use_perf else 'not counted (perf unavailable)'}\n", flush=True)
    print(HEAD, flush=True)
    lines, rows = [HEAD], []
    for spec in specs:
        rec = measure(spec, port, perf_pass)
        port += 2
        rows.append(rec)
        line = table_line(rec)
        print(line, flush=True)
        lines.append(line)

    mem = []
    mem_rows = [r for r in memory_servers(have, tokio) if row_selected(mem_line_key("memory", r[0], r[1]))]
    if "memory" in only and mem_rows:
        head = (f"Memory: server RSS holding {mem_n:,} idle connections, each after one request of its "
                "protocol (bytes per connection = (RSS with them - RSS with none) / N)")
        mem, mlines, table, port = memory_section(head, mem_rows, port, mem_n, "memory")
        lines += ["", head, "", MEM_HEAD] + mlines + [""] + table

    tls_mem = []
    tls_rows = tls_memory_rows(only, have)
    if tls_rows:
        tls_n = int(os.environ.get("TLS_MEMORY_CONNS", str(mem_n)))
        head = f"TLS memory: server RSS holding {tls_n:,} idle TLS connections (handshake done)"
        print(f"\n{head}\n\n{MEM_HEAD}", flush=True)
        lines += ["", head, "", MEM_HEAD]
        for label, cmd, workers, skip in tls_rows:
            if skip:
                rec = {"group": "tls", "server": label, "connections": tls_n, "status": "skipped", "note": skip}
            else:
                rec = memory_row(label, cmd(port), port, tls_n, group="tls", connect=tls_connect,
                                 workers=workers)
            port += 1
            tls_mem.append(rec)
            print(mem_line(rec), flush=True)
            lines.append(mem_line(rec))
    hs = [r for r in rows if r["status"] == "ok" and r["client"] == "openssl s_time" and r.get("cpu_us_per_req")]
    if hs:
        head = ("TLS handshakes (req/s is handshakes/s with one s_time client; per core = handshakes "
                "per second of server CPU, 1e6 / CPU us per handshake):")
        hs_lines = [f"- **{r['server']}**, {r['scenario'].split(', ')[1]}: {r['rps']:,.0f}/s, "
                    f"{r['cpu_us_per_req']:.1f} us CPU each, {1e6 / r['cpu_us_per_req']:,.0f} per core"
                    + (f" ({r['errors']} not resumed)" if r["errors"] else "") for r in hs]
        print(f"\n{head}\n", flush=True)
        print("\n".join(hs_lines), flush=True)
        lines += ["", head, ""] + hs_lines

    if "srv" in BACKEND:
        BACKEND.pop("srv").stop()
    bulk_lines = [f"- **{r['server']}**: {r['cpu_us_per_req'] / 1e6:.3f} proxy CPU s for {r['scenario'].split(' each')[0][5:]} "
                  f"each way ({r['gib_per_s']:.2f} GiB/s each way)"
                  for r in rows if r["status"] == "ok" and r["client"] == "bulk client"]
    if bulk_lines:
        head = "Proxy bulk rows (the req/s column is transfers/s; CPU us/req is the proxy's CPU for the whole transfer):"
        print(f"\n{head}\n", flush=True)
        print("\n".join(bulk_lines), flush=True)
        lines += ["", head, ""] + bulk_lines
    rat = ratios(rows)
    summary = ratio_lines(rat)
    tls_react = next((m for m in tls_mem if m["server"] == REACTOR_TLS and m.get("bytes_per_conn")), None)
    for m in tls_mem:
        if tls_react and m is not tls_react and m.get("bytes_per_conn"):
            summary.append(f"- **memory per idle TLS connection**: reactor/{m['server']} "
                           f"{tls_react['bytes_per_conn'] / m['bytes_per_conn']:.3f}x bytes")
    for m in mem:
        react_mem = next((r for r in mem if r.get("engine") == REACTOR and r.get("proto") == m.get("proto")
                          and r.get("bytes_per_conn")), None)
        if react_mem and m is not react_mem and m.get("bytes_per_conn"):
            summary.append(f"- **memory per idle {m['proto']} connection**: reactor/{m['engine']} "
                           f"{react_mem['bytes_per_conn'] / m['bytes_per_conn']:.3f}x bytes")
    if summary:
        print("\nRatios (reactor over the others; req/s higher is better, CPU/req lower is better):\n")
        print("\n".join(summary), flush=True)
        lines += ["", "Ratios (reactor over the others; req/s higher is better, CPU/req lower is better):", ""]
        lines += summary
    with open(os.path.join(OUT, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    meta = dict(quick=quick, duration=duration, warmup=warmup, server_cpu=SERVER_CPU, client_cpu=CLIENT_CPU,
                syscalls=use_perf, tokio=tokio, time=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump(dict(meta=meta, rows=rows, memory=mem, tls_memory=tls_mem, ratios=rat), f, indent=1)
    bad = sum(r["status"] == "failed" for r in rows + mem + tls_mem)
    print(f"\n{len(rows) + len(mem) + len(tls_mem)} rows, {bad} failed; wrote {OUT}/results.md and results.json", flush=True)
    if peers:
        port = run_peers(have, tokio, port, quick, use_perf)
    if cores:
        bench_cores.run(sys.modules[__name__], port)


if __name__ == "__main__":
    main()
