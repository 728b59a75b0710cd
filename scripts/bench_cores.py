"""The `cores` group of scripts/bench.sh: how evloop's throughput scales with its loops.

One server, `evloop serve --loops N --reuseport --pin`, confined to SERVER_CPUS (loop i on
the i-th of them), and one `evloop load` with one thread per CPU of CLIENT_CPUS, confined
to those, for N in CORES_LOOPS (1, 2, 4, 8). The load is the same for every N (CORES_CONNS
connections, 100 per client thread unless said), so only the server changes. Rows: echo
64 B and HTTP GET / at pipeline 1 and 16 (CORES_PIPELINES). ROUNDS (3) interleaved rounds
of DURATION (2 s) after WARMUP (0.5 s), medians; a fresh server every run. Per cell:
req/s, that ÷ the 1-loop figure (the scaling), the server's CPU use (100% = one CPU) and
CPU µs per request. The server's CPU tells whether the server or the client ran out: a
server short of N × 100% was waiting for the client.

The default split gives half of the CPUs to the server and the rest to the client (0-7 and
8-15 on 16 CPUs without SMT); with SMT the server's half takes one thread of each core
first. Too few CPUs for the largest N gives a skipped group. Writes
target/bench/cores.md and cores.json, headed by the machine's CPU topology.
"""

import json
import os
import platform


def cpu_list(spec):
    """The CPUs of a taskset-style list ("0-3,8")."""
    out = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            out.extend(range(int(lo), int(hi) + 1))
        else:
            out.append(int(part))
    return out


def siblings(cpu):
    """The CPUs sharing `cpu`'s core (SMT threads), itself included; [cpu] when unknown."""
    try:
        with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list") as f:
            return cpu_list(f.read().strip()) or [cpu]
    except (OSError, ValueError):
        return [cpu]


def default_split():
    """(server CPUs, client CPUs) as taskset lists: halves of the CPUs this process may use,
    the server's half taking each core's first SMT thread first, so that its loops sit on
    distinct cores wherever the machine has enough of them."""
    cpus = sorted(os.sched_getaffinity(0), key=lambda c: (siblings(c).index(c) if c in siblings(c) else 0, c))
    half = len(cpus) // 2
    return ",".join(map(str, cpus[:half])), ",".join(map(str, cpus[half:]))


def topology():
    """One line on the machine: CPU model, CPUs, SMT siblings of CPU 0, kernel."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    sib = ""
    try:
        with open("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list") as f:
            sib = f.read().strip()
    except OSError:
        pass
    return (f"{model or 'unknown CPU'}, {os.cpu_count()} CPUs, CPU 0's SMT siblings: {sib or 'unknown'}, "
            f"kernel {platform.release()}")


def cells(bench, server_cpus, client_cpus, loops, pipelines, conns):
    """Every (row, loops) cell, in table order."""
    threads = len(cpu_list(client_cpus))
    out = []
    for proto, what, extra in (("echo", "echo 64 B", ["--size", "64"]), ("http", "HTTP GET /", ["--proto", "http"])):
        for p in pipelines:
            row = f"{what}, pipeline {p}, {conns:,} connections"
            for n in loops:
                def cmd(proto, port, n=n):
                    return [bench.BIN, "serve", "--proto", proto, "--listen", f"127.0.0.1:{port}", "--loops",
                            str(n), "--reuseport", "--pin", "-q"]
                server = dict(label=f"{n} loop{'s' if n > 1 else ''}", short=str(n), kind="evloop", cmd=cmd,
                              workers=False, env=None, skip=None, cpu=server_cpus)
                out.append(dict(row=row, proto=proto, conns=conns, loops=n, server=server, client_cpu=client_cpus,
                                args=extra + ["--pipeline", str(p), "-t", str(threads)]))
    return out


def settings():
    """(server CPUs, client CPUs, loops, pipelines, connections) from the environment."""
    server_cpus, client_cpus = default_split()
    server_cpus = os.environ.get("SERVER_CPUS", server_cpus)
    client_cpus = os.environ.get("CLIENT_CPUS", client_cpus)
    loops = [int(x) for x in os.environ.get("CORES_LOOPS", "1,2,4,8").split(",") if x.strip()]
    pipelines = [int(x) for x in os.environ.get("CORES_PIPELINES", "1,16").split(",") if x.strip()]
    conns = int(os.environ.get("CORES_CONNS", str(100 * max(len(cpu_list(client_cpus)), 1))))
    return server_cpus, client_cpus, loops, pipelines, conns


def line(c):
    """A cell's line: what --list prints and --only selects by."""
    return f"cores | {c['row']} | evloop load | {c['server']['label']}"


def list_lines(bench):
    """The lines --list prints for the group."""
    return [line(c) for c in cells(bench, *settings())]


def table(bench, recs, loops):
    """Markdown: one line per row and loop count."""
    lines = ["| row | loops | req/s | × 1 loop | server CPU % | CPU µs/req | p99 µs |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    base = {}
    for r in recs:
        if r["loops"] == min(loops) and r.get("rps"):
            base[r["row"]] = r["rps"] / min(loops)
    for r in recs:
        if r["status"] != "ok":
            lines.append(f"| {r['row']} | {r['loops']} | {r['status']}: {r.get('note', '')} | | | | |")
            continue
        b = base.get(r["row"])
        scale = f"{r['rps'] / b:.2f}" if b else ""
        lines.append(f"| {r['row']} | {r['loops']} | {bench.fmt(r['rps'])} | {scale} | "
                     f"{bench.fmt(r.get('cpu_util'), '.0f')} | {bench.fmt(r.get('cpu_us_per_req'), '.2f')} | "
                     f"{bench.fmt(r.get('p99'), ',.0f')} |")
    return lines


def run(bench, port):
    """Runs the group with bench.py's helpers (`bench`, that module); prints and writes the
    table. Returns the next free port."""
    server_cpus, client_cpus, loops, pipelines, conns = settings()
    rounds = int(os.environ.get("ROUNDS", "3"))
    duration = os.environ.get("DURATION", "2s")
    warmup = os.environ.get("WARMUP", "500ms")
    n_client = len(cpu_list(client_cpus))
    head = topology()
    print(f"\nCores: {head}\nserver on CPUs {server_cpus} (--loops N --reuseport --pin), evloop load "
          f"-t {n_client} on CPUs {client_cpus}; {rounds} interleaved rounds of {duration} after {warmup}",
          flush=True)
    if not server_cpus or not client_cpus or len(cpu_list(server_cpus)) < max(loops):
        print(f"cores: skipped: {max(loops)} loops need {max(loops)} server CPUs and some client CPUs "
              f"(server {server_cpus or 'none'}, client {client_cpus or 'none'}); set SERVER_CPUS, CLIENT_CPUS "
              "or CORES_LOOPS", flush=True)
        return port
    cs = [c for c in cells(bench, server_cpus, client_cpus, loops, pipelines, conns) if bench.row_selected(line(c))]
    runs, port = bench.run_rounds(cs, port, rounds, duration, warmup)
    recs = []
    for c, rs in zip(cs, runs):
        rec = bench.summarize_cell(c, rs, [])
        rec["loops"] = c["loops"]
        recs.append(rec)
    lines = [f"Cores: {head}", "",
             f"Server `evloop serve --loops N --reuseport --pin` on CPUs {server_cpus}; `evloop load -t {n_client}` "
             f"on CPUs {client_cpus}; medians of {rounds} interleaved rounds of {duration} after {warmup}.", ""]
    lines += table(bench, recs, loops)
    print("\n" + "\n".join(lines), flush=True)
    os.makedirs(bench.OUT, exist_ok=True)
    with open(os.path.join(bench.OUT, "cores.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    meta = dict(topology=head, server_cpus=server_cpus, client_cpus=client_cpus, rounds=rounds,
                duration=duration, warmup=warmup, connections=conns, client_threads=n_client)
    with open(os.path.join(bench.OUT, "cores.json"), "w") as f:
        json.dump(dict(meta=meta, cells=[{k: v for k, v in r.items() if k != "server"} for r in recs]), f, indent=1)
    return port

