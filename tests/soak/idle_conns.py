#!/usr/bin/python3
"""idle_conns.py — thousands of idle HTTP/2 connections (scripts/soak).

Room: tests/soak. Against a running perfc-test-server (TARGET, PID) whose
open-file limit is LIMIT (set by scripts/soak with prlimit; perfc has no
connection cap of its own, so the fd limit is the configured limit):

1. open UNDER connections (below the limit), each a real HTTP/2 client:
   connection preface, SETTINGS, and the ACK of the server's SETTINGS; the
   server's resident memory before and after gives bytes per connection;
2. open OVER more, past the limit: the server cannot accept them; it must
   keep serving calls on a channel opened before, and not spin (its CPU
   time over 5 s is reported);
3. close everything: fds return to the start, a new connection is served.

Prints one JSON line; exit status 1 on a failed check.
"""
import json
import os
import socket
import sys
import time

import grpc

SVC = "/perfc.test.v1.TestService/"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"


def status(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])


def open_conn(host, port, timeout):
    """Returns (socket, served): served when the server's SETTINGS came."""
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(PREFACE)
    s.settimeout(timeout)
    try:
        head = s.recv(9)
        served = len(head) == 9 and head[3] == 4
        if served:
            s.sendall(SETTINGS_ACK)
    except socket.timeout:
        served = False
    return s, served


def echo_ok(ch):
    try:
        ch.unary_unary(SVC + "Echo")(b"\x0a\x02ok", timeout=5)
        return True
    except grpc.RpcError:
        return False


def main():
    target, pid, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    under = int(os.environ.get("IDLE_UNDER", str(limit - 200)))
    over = int(os.environ.get("IDLE_OVER", "500"))
    host, port = target.rsplit(":", 1)
    port = int(port)
    failures = []
    pre = grpc.insecure_channel(target)
    if not echo_ok(pre):
        print(json.dumps({"failures": ["server not serving at start"]}))
        return 1
    time.sleep(0.5)
    fd0, rss0 = fds(pid), status(pid, "VmRSS")
    socks = []
    served_under = 0
    t0 = time.time()
    for _ in range(under):
        s, ok = open_conn(host, port, 5)
        socks.append(s)
        served_under += ok
    open_s = time.time() - t0
    time.sleep(1)
    fd1, rss1 = fds(pid), status(pid, "VmRSS")
    per_conn = (rss1 - rss0) * 1024 / max(1, served_under)
    if served_under != under:
        failures.append("only %d of %d connections below the limit were served" % (served_under, under))
    if not echo_ok(pre):
        failures.append("Echo failed with %d idle connections" % under)

    served_over = 0
    for _ in range(over):
        try:
            s, ok = open_conn(host, port, 0.2)
        except OSError:
            break
        socks.append(s)
        served_over += ok
    time.sleep(1)
    fd2 = fds(pid)
    c0 = cpu_ticks(pid)
    time.sleep(5)
    cpu_over = (cpu_ticks(pid) - c0) / os.sysconf("SC_CLK_TCK") / 5
    alive_over = echo_ok(pre)
    if not alive_over:
        failures.append("Echo on an existing channel failed past the limit")
    # A fresh client beyond the limit is expected to wait, not to be served.
    for s in socks:
        s.close()
    socks = []
    fd3 = fds(pid)
    for _ in range(100):
        if fd3 <= fd0:
            break
        time.sleep(0.2)
        fd3 = fds(pid)
    if fd3 > fd0:
        failures.append("fds %d at start, %d after closing every connection" % (fd0, fd3))
    fresh = grpc.insecure_channel(target)
    fresh_ok = echo_ok(fresh)
    fresh.close()
    if not fresh_ok:
        failures.append("a new connection was not served after the flood")
    pre.close()
    print(json.dumps({
        "fd_limit": limit, "opened_under": under, "served_under": served_under,
        "open_seconds": round(open_s, 2), "fds_start": fd0, "fds_under": fd1,
        "rss_kib_start": rss0, "rss_kib_under": rss1,
        "bytes_per_connection": int(per_conn), "opened_over": over,
        "served_over": served_over, "fds_over": fd2,
        "server_cpu_cores_over_limit": round(cpu_over, 3),
        "echo_on_existing_channel_over_limit": alive_over,
        "fds_after_close": fd3, "new_connection_served_after": fresh_ok,
        "failures": failures}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
