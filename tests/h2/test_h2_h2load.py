#!/usr/bin/python3
"""test_h2_h2load.py — h2load (nghttp2's load generator) against
perfc-h2-echo-server, checked as bench/run checks it: every request
succeeded and every response carried exactly one echoed message (the DATA
byte count equals requests x body length). No speed is asserted.

Room: tests/h2. Usage: test_h2_h2load.py SERVER_BINARY H2LOAD
"""
import re
import struct
import subprocess
import sys
import tempfile

server, h2load = sys.argv[1], sys.argv[2]
N, C, M = 20000, 4, 16

msg = b"\x0a\x40" + bytes(range(64))          # EchoRequest{payload: 64 bytes}
body = b"\x00" + struct.pack(">I", len(msg)) + msg
fails = 0
for args in ((), ("--pool", "1")):
    p = subprocess.Popen([server, "--listen", "127.0.0.1:0", *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = p.stdout.readline().decode()
    port = int(line.rsplit(":", 1)[1])
    try:
        with tempfile.NamedTemporaryFile() as f:
            f.write(body)
            f.flush()
            out = subprocess.run(
                [h2load, "-n", str(N), "-c", str(C), "-m", str(M),
                 "-H", "content-type: application/grpc", "-H", "te: trailers",
                 "-d", f.name, "http://127.0.0.1:%d/bench.v1.Echo/Unary" % port],
                capture_output=True, text=True, timeout=90).stdout
    finally:
        p.terminate()
        p.wait(timeout=15)
    succ = int(re.search(r"requests: .* (\d+) succeeded", out).group(1))
    failed = int(re.search(r"requests: .* (\d+) failed", out).group(1))
    data = int(re.search(r"traffic: .*\((\d+)\) data", out).group(1))
    ok = succ == N and failed == 0 and data == N * len(body)
    print("%s %s: %d succeeded, %d failed, %d DATA bytes (want %d)" % (
        "ok  " if ok else "FAIL", args or "inline", succ, failed, data, N * len(body)))
    fails += not ok
sys.exit(1 if fails else 0)
