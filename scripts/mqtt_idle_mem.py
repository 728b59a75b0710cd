#!/usr/bin/env python3
"""Broker memory per idle MQTT client (issue 15, bench (a)).

Opens N clients against a broker (each CONNECTs with keepalive 300 and SUBSCRIBEs to one
topic of its own), waits for every CONNACK and SUBACK, and prints the broker's RSS growth
per client (from /proc/PID/status). Usage: mqtt_idle_mem.py PID PORT [N]
"""
import resource
import socket
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def mqtt_str(s):
    b = s.encode()
    return len(b).to_bytes(2, "big") + b


def connect_packet(cid):
    body = mqtt_str("MQTT") + bytes([4, 0x02]) + (300).to_bytes(2, "big") + mqtt_str(cid)
    return bytes([0x10, len(body)]) + body


def subscribe_packet(topic):
    body = (1).to_bytes(2, "big") + mqtt_str(topic) + bytes([0])
    return bytes([0x82, len(body)]) + body


def main():
    pid, port = int(sys.argv[1]), int(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    time.sleep(0.5)
    before = rss_kib(pid)
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(connect_packet(f"idle-{i}") + subscribe_packet(f"dev/{i}/cmd" if len(sys.argv) <= 4 else sys.argv[4]))
        socks.append(s)
    for s in socks:
        got = b""
        while len(got) < 4 + 5:  # CONNACK (4) + SUBACK (5)
            chunk = s.recv(64)
            if not chunk:
                raise RuntimeError("closed")
            got += chunk
    time.sleep(1.0)
    after = rss_kib(pid)
    per = (after - before) * 1024 / n
    print(f"clients={n} rss_before_kib={before} rss_after_kib={after} bytes_per_client={per:.0f}")
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
