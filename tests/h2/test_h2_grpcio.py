#!/usr/bin/python3
"""test_h2_grpcio.py — python3-grpcio against perfc-h2-echo-server.

Room: tests/h2. grpcio is an independent HTTP/2 + gRPC implementation (the
C core inside python): every call must come back byte-exact with the status
the transport promises. Runs the server inline and with --pool 1 (answers
posted from another thread), plaintext and TLS.

Usage: test_h2_grpcio.py SERVER_BINARY
"""
import os
import subprocess
import sys
import tempfile
import threading

import grpc

SERVER = sys.argv[1]
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def start(*args):
    p = subprocess.Popen([SERVER, "--listen", "127.0.0.1:0", *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = p.stdout.readline().decode()
    if not line.startswith("listening on "):
        p.kill()
        raise SystemExit("server did not start: %r %r" % (line, p.stderr.read()))
    return p, line.split()[-1]


def stop(p):
    p.terminate()
    try:
        out, err = p.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    check(p.returncode == 0, "server exits 0 after SIGTERM (rc %s, %s)" % (p.returncode, err[-300:]))


def exercise(ch, tag):
    unary = ch.unary_unary("/bench.v1.Echo/Unary")
    for size in (0, 1, 64, 16383, 16384, 16385, 100000, 4 * 1024 * 1024 - 16):
        payload = bytes((i * 7 + size) & 0xFF for i in range(size))
        r = unary(payload, timeout=10)
        check(r == payload, "%s: unary echo of %d bytes" % (tag, size))
    for comp in (grpc.Compression.Gzip, grpc.Compression.Deflate):
        payload = b"compress me " * 1000
        r = unary(payload, timeout=10, compression=comp)
        check(r == payload, "%s: unary echo with %s" % (tag, comp))
    try:
        unary(bytes(4 * 1024 * 1024 + 1), timeout=10)
        check(False, "%s: over max receive size fails" % tag)
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED,
              "%s: over max receive size -> RESOURCE_EXHAUSTED (%s)" % (tag, e.code()))
    try:
        ch.unary_unary("/bench.v1.Echo/Missing")(b"x", timeout=10)
        check(False, "%s: unknown method fails" % tag)
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.UNIMPLEMENTED,
              "%s: unknown method -> UNIMPLEMENTED (%s)" % (tag, e.code()))
    stream = ch.stream_stream("/bench.v1.Echo/Stream")
    msgs = [bytes([i]) * (i * 1000) for i in range(50)]
    got = list(stream(iter(msgs), timeout=20))
    check(got == msgs, "%s: bidi stream echoes 50 messages in order" % tag)
    # Many concurrent calls on one connection (one loop, batched output).
    results = []

    def worker(k):
        ok = 0
        for i in range(100):
            p = b"%d-%d" % (k, i)
            if unary(p, timeout=10) == p:
                ok += 1
        results.append(ok)
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    check(sum(results) == 800, "%s: 800 concurrent unary calls (%d ok)" % (tag, sum(results)))
    # A cancelled streaming call: the server sees RST_STREAM and carries on.
    it = stream(iter([b"a"] * 3), timeout=10)
    next(it)
    it.cancel()
    check(unary(b"after", timeout=10) == b"after", "%s: served after a client cancel" % tag)


for args, tag in (((), "inline"), (("--pool", "1"), "pool"), (("--threads", "2"), "2 loops")):
    p, target = start(*args)
    try:
        with grpc.insecure_channel(target, options=[
                ("grpc.max_send_message_length", 8 << 20),
                ("grpc.max_receive_message_length", 8 << 20)]) as ch:
            exercise(ch, tag)
    finally:
        stop(p)

# TLS, ALPN h2, a self-signed certificate made here.
with tempfile.TemporaryDirectory() as d:
    key, crt = os.path.join(d, "k.pem"), os.path.join(d, "c.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", crt, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    p, target = start("--tls-cert", crt, "--tls-key", key)
    try:
        creds = grpc.ssl_channel_credentials(open(crt, "rb").read())
        with grpc.secure_channel(target, creds, options=[
                ("grpc.ssl_target_name_override", "localhost"),
                ("grpc.max_send_message_length", 8 << 20),
                ("grpc.max_receive_message_length", 8 << 20)]) as ch:
            exercise(ch, "tls")
    finally:
        stop(p)

print("%d failure(s)" % len(failures))
sys.exit(1 if failures else 0)
