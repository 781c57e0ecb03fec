#!/usr/bin/python3
"""capture_h2.py — records the bytes real clients send to an h2 server, as
seeds for fuzz_h2 (tests/fuzz/corpus/h2/).

Room: tests/fuzz. Starts perfc-h2-echo-server, puts a recording TCP proxy in
front of it, and runs python3-grpcio (unary, gzip, deflate, metadata, a
bidi stream, an unknown method, a cancelled stream) and h2load through the
proxy; every client connection's bytes become one file.

Usage: capture_h2.py SERVER_BINARY OUT_DIR
"""
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading

import grpc

server_bin, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
srv = subprocess.Popen([server_bin, "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE)
port = int(srv.stdout.readline().decode().rsplit(":", 1)[1])
lsock = socket.socket()
lsock.bind(("127.0.0.1", 0))
lsock.listen(16)
pport = lsock.getsockname()[1]
captured = []
tag = ["x"]


def pipe(a, b, record):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            if record is not None:
                record.append(d)
            b.sendall(d)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def accept_loop():
    while True:
        try:
            c, _ = lsock.accept()
        except OSError:
            return
        u = socket.create_connection(("127.0.0.1", port))
        rec = []
        captured.append((tag[0], rec))
        threading.Thread(target=pipe, args=(c, u, rec), daemon=True).start()
        threading.Thread(target=pipe, args=(u, c, None), daemon=True).start()


threading.Thread(target=accept_loop, daemon=True).start()
target = "127.0.0.1:%d" % pport

tag[0] = "grpcio"
with grpc.insecure_channel(target) as ch:
    u = ch.unary_unary("/bench.v1.Echo/Unary")
    u(b"\x0a\x05hello", timeout=5, metadata=[("x-user", "a"), ("x-trace-bin", b"\x00\x01")])
    u(b"\x0a\x03gzp" * 50, timeout=5, compression=grpc.Compression.Gzip)
    u(b"\x0a\x03dfl" * 50, timeout=5, compression=grpc.Compression.Deflate)
    list(ch.stream_stream("/bench.v1.Echo/Stream")(iter([b"a", b"b" * 3000, b""]), timeout=5))
    try:
        ch.unary_unary("/no.Such/Method")(b"", timeout=5)
    except grpc.RpcError:
        pass
    it = ch.stream_stream("/bench.v1.Echo/Stream")(iter([b"z"] * 2), timeout=5)
    next(it)
    it.cancel()

tag[0] = "h2load"
msg = b"\x0a\x40" + bytes(range(64))
with tempfile.NamedTemporaryFile() as f:
    f.write(b"\x00" + struct.pack(">I", len(msg)) + msg)
    f.flush()
    subprocess.run(["h2load", "-n", "8", "-c", "1", "-m", "4", "-H", "content-type: application/grpc",
                    "-H", "te: trailers", "-d", f.name,
                    "http://%s/bench.v1.Echo/Unary" % target], check=True, capture_output=True)

import time
time.sleep(0.5)
lsock.close()
srv.terminate()
srv.wait()
n = 0
for i, (t, rec) in enumerate(captured):
    data = b"".join(rec)
    if data:
        with open(os.path.join(out, "%s-%d" % (t, i)), "wb") as f:
            f.write(data)
        n += 1
print("captured %d sessions into %s" % (n, out))
