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

Memory rows open N idle connections from this process and report (RSS with N - RSS with
none) / N. Peers (wrk, redis-benchmark, redis-server, nginx) that are not installed give
skipped rows. Only 127.0.0.1 is used; every client and wait is bounded in time.

Usage: bench.py [-h] [--quick] [--only TEXT [TEXT ...]] [--list] [GROUP ...]
  (bench.py --help for details; unknown flags are an error)
TLS rows (group tls): wrk over https and openssl s_time (-new / -reuse; server CPU over
the whole run per handshake) against `evloop serve --listen tls://` and nginx with the same
self-signed certificate; idle TLS connections are opened (handshake done) by this process.
Proxy rows: the proxy (evloop proxy, HAProxy, nginx stream) is the measured server; the
echo backend it forwards to runs once for all of them on BACKEND_CPU.

Env: SERVER_CPU, CLIENT_CPU, BACKEND_CPU, BULK_BYTES, PORT (first port; each row takes the next), DURATION, WARMUP,
     REQUESTS (redis-benchmark -n at pipeline 1; x15 at pipeline 16), PERF=0 (no syscalls),
     SCALE (connection counts, e.g. 10,100,1000,10000), MEMORY_CONNS, TLS_MEMORY_CONNS.
Writes target/bench/results.md and results.json.
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

    def __init__(self, cmd, port, workers=False, cpu=None):
        if not port_free(port):
            raise RuntimeError(f"port {port} is in use")
        self.proc = subprocess.Popen(["taskset", "-c", cpu or SERVER_CPU] + cmd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
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


def memory_row(server_label, server_cmd, port, n, group="memory", connect=None, workers=False):
    rec = {"group": group, "server": server_label, "connections": n}
    connect = connect or (lambda port: socket.create_connection(("127.0.0.1", port), timeout=5))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = n + 256
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            rec.update(status="failed", note=f"RLIMIT_NOFILE hard limit {hard} < {need}")
            return rec
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    try:
        srv = Server(server_cmd, port, workers)
    except (OSError, RuntimeError) as e:
        rec.update(status="skipped", note=f"server did not start: {e}")
        return rec
    conns = []
    try:
        time.sleep(0.2)
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
                   status="ok" if held >= n else "failed")
        if held < n and "note" not in rec:
            rec["note"] = f"server holds only {held} of {n}"
    finally:
        for c in conns:
            c.close()
        srv.stop()
    return rec


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


GROUPS = ("echo", "http", "redis", "proxy", "scaling", "memory", "tls")

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
                    "cores; --quick under 2.",
        epilog="Environment: SERVER_CPU, CLIENT_CPU, PORT, DURATION, WARMUP, REQUESTS "
               "(redis-benchmark -n at pipeline 1; x15 at pipeline 16), PERF=0, PERF_DURATION, "
               "SCALE (e.g. 10,100,1000), MEMORY_CONNS. Writes target/bench/results.md, "
               "results.json (and, from bench.sh, results.svg).")
    p.add_argument("--quick", action="store_true",
                   help="a subset with short rows (1 s per row after 300 ms warmup)")
    p.add_argument("--only", nargs="+", metavar="TEXT", default=[],
                   help="run only the rows whose 'group | scenario | client | server' contains "
                        "one of these texts (case-insensitive), e.g. --only 'RESP GET' nginx; "
                        "memory rows match on 'memory | <server>'")
    p.add_argument("--list", action="store_true",
                   help="print the rows that would run, then exit (needs no build)")
    p.add_argument("groups", nargs="*", metavar="GROUP",
                   help=f"only these groups: {' '.join(GROUPS)}")
    p.add_argument("--parse-only", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    bad = [g for g in a.groups if g not in GROUPS]
    if bad:
        p.error(f"unknown group {', '.join(bad)} (groups: {' '.join(GROUPS)})")
    return a


def main():
    a = parse_args(sys.argv[1:])
    if a.parse_only:
        return
    quick, only = a.quick, a.groups
    ONLY_ROWS.extend(a.only)
    if a.list:
        os.makedirs(OUT, exist_ok=True)  # scenarios() writes the nginx config there
        specs = scenarios(quick, only, shutil.which, True, "1s", "0s", 1)
        for spec in specs:
            print(f"{spec['group']} | {spec['scenario']} | {spec['client']} | {spec['server']}")
        if not only or "memory" in only:
            for label in (REACTOR, STD, TOKIO):
                if row_selected(f"memory | {label}"):
                    print(f"memory | idle connections | this script | {label}")
        for label, _, _, _ in tls_memory_rows(only, shutil.which):
            print(f"tls | idle TLS connections | this script | {label}")
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
    tokio = "tokio" in help_text.split("--engine", 1)[-1].split("--backlog", 1)[0]
    # this process opens the memory rows' connections; evloop load raises its own limit
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

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
    mem_labels = [l for l in (REACTOR, STD, TOKIO) if row_selected(f"memory | {l}")]
    if (not only or "memory" in only) and mem_labels:
        print(f"\nMemory: server RSS holding {mem_n:,} idle connections\n\n{MEM_HEAD}", flush=True)
        lines += ["", f"Memory: server RSS holding {mem_n:,} idle connections", "", MEM_HEAD]
        for label in mem_labels:
            if label == TOKIO and not tokio:
                continue
            cmd = [BIN, "serve", "-q", "--listen", f"127.0.0.1:{port}", "--backlog", "4096"] + ENGINES[label]
            rec = memory_row(label, cmd, port, mem_n)
            port += 1
            mem.append(rec)
            print(mem_line(rec), flush=True)
            lines.append(mem_line(rec))

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
    react_mem = next((m for m in mem if m["server"] == REACTOR and m.get("bytes_per_conn")), None)
    tls_react = next((m for m in tls_mem if m["server"] == REACTOR_TLS and m.get("bytes_per_conn")), None)
    for m in tls_mem:
        if tls_react and m is not tls_react and m.get("bytes_per_conn"):
            summary.append(f"- **memory per idle TLS connection**: reactor/{m['server']} "
                           f"{tls_react['bytes_per_conn'] / m['bytes_per_conn']:.3f}x bytes")
    for m in mem:
        if react_mem and m is not react_mem and m.get("bytes_per_conn"):
            summary.append(f"- **memory per idle connection**: reactor/{m['server']} "
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


if __name__ == "__main__":
    main()
