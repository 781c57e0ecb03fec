#!/usr/bin/python3
"""test_stream_load.py — perfc-h2-stream-load (bench/tools/h2_stream_load.c),
run-streaming's client, must account for every message.

Room: tests/h2. Against perfc-echo-server (Stream on the h2 loop, and on
the worker pool) every run must end with exit 0 and exactly the messages
sent echoed; against python3-grpcio servers that lose, alter, reorder or
duplicate one echo, or end the stream with an error, the client must fail
(exit 1) and say so: a load generator that cannot tell would report the
speed of a broken server.

Usage: test_stream_load.py LOAD_BINARY ECHO_SERVER_BINARY
"""
import subprocess
import sys
import threading
from concurrent import futures

import grpc

LOAD, ECHO = sys.argv[1], sys.argv[2]
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def run_load(port, *args):
    p = subprocess.run([LOAD, "--target", "127.0.0.1:%d" % port, "--max-seconds", "30", *args],
                       capture_output=True, text=True, timeout=60)
    kv = {}
    for tok in p.stdout.split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            kv[k] = v
    return p.returncode, kv, p.stderr


def perfc_server(*args):
    p = subprocess.Popen([ECHO, "--listen", "127.0.0.1:0", "--threads", "1", *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if not line.startswith("listening on "):
        p.kill()
        raise SystemExit("perfc-echo-server did not start: %r %s" % (line, p.stderr.read()))
    return p, int(line.split(":")[-1])


def stop(p):
    p.terminate()
    try:
        _, err = p.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
    check(p.returncode == 0, "perfc-echo-server exits 0 (%s)" % err[-300:])


# --- perfc: every message accounted for ---------------------------------------
for args in ([], ["--stream-executor", "pool"], ["--busy-poll-us", "200"]):
    srv, port = perfc_server(*args)
    try:
        for streams, count, burst in ((1, 20000, 1), (16, 2000, 8), (4, 3000, 1)):
            rc, kv, err = run_load(port, "--streams", str(streams), "--count", str(count),
                                   "--burst", str(burst), "--window", "32")
            tag = "perfc %s, %d stream(s) x %d, burst %d" % (args or "loop", streams, count, burst)
            check(rc == 0, tag + ": exit 0 (%s)" % err[-300:])
            check(kv.get("received") == str(streams * count) and kv.get("sent") == str(streams * count),
                  tag + ": every message sent and echoed (%s/%s)" % (kv.get("sent"), kv.get("received")))
            check(kv.get("bad") == "0" and kv.get("failed_streams") == "0", tag + ": no bad echo, no failed stream")
            check(float(kv.get("client_cpu_us_per_msg", "-1")) >= 0, tag + ": reports its CPU per message")
    finally:
        stop(srv)


# --- broken servers: the client must notice -------------------------------------
def faulty(mode):
    def handler(it, ctx):
        msgs = []
        for i, m in enumerate(it):
            if mode == "drop" and i == 7:
                continue
            if mode == "alter" and i == 3:
                m = m[:-1] + bytes([m[-1] ^ 1])
            if mode == "dup" and i == 5:
                yield m
            if mode == "reorder" and i in (10, 11):
                msgs.append(m)
                if len(msgs) == 2:
                    yield msgs[1]
                    yield msgs[0]
                continue
            if mode == "status" and i == 20:
                ctx.abort(grpc.StatusCode.INTERNAL, "broken on purpose")
            yield m
    return handler


for mode in ("drop", "alter", "dup", "reorder", "status"):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    h = grpc.method_handlers_generic_handler(
        "bench.v1.Echo", {"Stream": grpc.stream_stream_rpc_method_handler(faulty(mode))})
    server.add_generic_rpc_handlers((h,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        rc, kv, err = run_load(port, "--streams", "2", "--count", "200", "--window", "8")
        check(rc == 1, "server that does '%s': the client fails (rc %d, %s)" % (mode, rc, " ".join(
            "%s=%s" % (k, kv.get(k)) for k in ("received", "bad", "failed_streams"))))
        check(kv.get("bad") != "0" or kv.get("failed_streams") != "0",
              "server that does '%s': counted bad or failed" % mode)
    finally:
        server.stop(0)

if failures:
    print("%d failure(s)" % len(failures))
    sys.exit(1)
print("all ok")
