#!/usr/bin/python3
"""stream_clients.py — clients killed mid-stream (scripts/soak).

Room: tests/soak. Against a running perfc-test-server (TARGET, PID):
ROUNDS times, start N client processes that each hold a Chat (bidi) stream
sending a message every 10 ms and an Expand (server-streaming) stream
reading slowly, let them run, then SIGKILL all of them at once — no
RST_STREAM, no GOAWAY, just sockets closed by the kernel. After every round
the server must answer a unary Echo; at the end its fd count must be back
to where it started (leaked call or connection state shows up as fds).

Prints one JSON line with the numbers; exit status 1 on a failed check.
"""
import json
import os
import signal
import subprocess
import sys
import time

import grpc

SVC = "/perfc.test.v1.TestService/"


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def echo_request(payload=b"", sleep_ms=0, response_bytes=0):
    out = b"\x0a" + varint(len(payload)) + payload
    if sleep_ms:
        out += b"\x10" + varint(sleep_ms)
    if response_bytes:
        out += b"\x28" + varint(response_bytes)
    return out


def fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def client(target):
    """One client process: a bidi and a server stream, forever."""
    ch = grpc.insecure_channel(target)
    expand = ch.unary_stream(SVC + "Expand")(
        echo_request(b"e" * 512, sleep_ms=5, response_bytes=1000000), timeout=600)

    def gen():
        i = 0
        while True:
            yield echo_request(b"chat%d" % i)
            i += 1
            time.sleep(0.01)

    chat = ch.stream_stream(SVC + "Chat")(gen(), timeout=600)
    print("ready", flush=True)
    while True:
        next(chat)
        next(expand)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client(sys.argv[2])
        return 0
    target, pid = sys.argv[1], int(sys.argv[2])
    rounds = int(os.environ.get("KILL_ROUNDS", "5"))
    n = int(os.environ.get("KILL_CLIENTS", "16"))
    hold = float(os.environ.get("KILL_HOLD_S", "2"))
    ch = grpc.insecure_channel(target)
    echo = ch.unary_unary(SVC + "Echo")
    echo(echo_request(b"warm"), timeout=10)
    time.sleep(0.5)
    base = fds(pid)
    peak = base
    failures = []
    killed = 0
    for r in range(rounds):
        procs = [subprocess.Popen([sys.executable, __file__, "--client", target],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                 for _ in range(n)]
        ready = 0
        for p in procs:
            if p.stdout.readline().strip() == b"ready":
                ready += 1
        time.sleep(hold)
        peak = max(peak, fds(pid))
        for p in procs:
            p.send_signal(signal.SIGKILL)
        for p in procs:
            p.wait()
        killed += ready
        try:
            echo(echo_request(b"after-round-%d" % r), timeout=10)
        except grpc.RpcError as e:
            failures.append("round %d: Echo failed: %s" % (r, e.code()))
        if not os.path.exists("/proc/%d" % pid):
            failures.append("server exited")
            break
    # The core notices a dead peer when its socket reads EOF; give it a
    # moment, then compare.
    end = fds(pid)
    for _ in range(50):
        if end <= base:
            break
        time.sleep(0.2)
        end = fds(pid)
    if end > base:
        failures.append("fds %d -> %d after %d killed clients" % (base, end, killed))
    ch.close()
    print(json.dumps({"rounds": rounds, "clients_per_round": n, "streams_killed": killed * 2,
                      "fds_base": base, "fds_peak": peak, "fds_end": end,
                      "failures": failures}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
