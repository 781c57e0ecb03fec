#!/usr/bin/python3
"""test_perfc_load.py — perfc-load (bench/tools/perfc_load.c), bench/run-users'
load generator, must send the ids it claims and count what came back.

Room: tests/h2. A python3-grpcio server records every GetUserRequest it
decodes, so the test sees from the server's side that each id of the range
was sent exactly as often as round-robin says (int64, sint64 and string
fields, a range and a file, negative ids), and answers NOT_FOUND for some
ids, so the client's per-code counts are checked against the server's
truth. Against perfc-echo-server every reply must be the request echoed
(--check-echo). An OK reply of the wrong length counts `bad`; a server that
never answers is cut off by --max-seconds; connections the server drains
(GOAWAY at max_connection_age) are replaced without a failed call; bad
usage exits 2.

Usage: test_perfc_load.py PERFC_LOAD ECHO_SERVER_BINARY
"""
import collections
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures

import grpc

LOAD, ECHO = sys.argv[1], sys.argv[2]
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def run_load(port, *args, timeout=60):
    p = subprocess.run([LOAD, "--target", "127.0.0.1:%d" % port, *args],
                       capture_output=True, text=True, timeout=timeout)
    kv = {}
    for tok in p.stdout.split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            kv[k] = v
    return p.returncode, kv, p.stderr


def varint(b, i):
    v = shift = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        shift += 7
        if c < 0x80:
            return v, i


def encode_varint(v):
    out = bytearray()
    while v >= 0x80:
        out.append(v & 0x7F | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


# --- a GetUser server that records what it decodes ------------------------------
seen = collections.Counter()
lock = threading.Lock()
mode = {"field": "int64", "not_found_above": None, "hang": False}
release = threading.Event()  # ends the hanging handlers at the end


def get_user(req, ctx):
    if mode["hang"]:
        release.wait(30)
    # GetUserRequest{id}: field 1; the test's template adds field 7 first.
    i, ident = 0, None
    while i < len(req):
        tag, i = varint(req, i)
        if tag & 7 == 0:
            v, i = varint(req, i)
            if tag >> 3 == 1:
                if mode["field"] == "sint64":
                    ident = (v >> 1) ^ -(v & 1)
                else:
                    ident = v - (1 << 64) if v >= 1 << 63 else v
        else:
            n, i = varint(req, i)
            if tag >> 3 == 1:
                ident = req[i:i + n].decode()
            i += n
    with lock:
        seen[ident] += 1
    nf = mode["not_found_above"]
    if nf is not None and isinstance(ident, int) and ident > nf:
        ctx.abort(grpc.StatusCode.NOT_FOUND, "user not found")
    return b"\x08" + encode_varint(ident if isinstance(ident, int) and ident > 0 else 1)


server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
    "user.v1.UserService", {"GetUser": grpc.unary_unary_rpc_method_handler(get_user)}),))
gport = server.add_insecure_port("127.0.0.1:0")
server.start()
path = ["--path", "/user.v1.UserService/GetUser"]

try:
    # Round robin over 1..300: 900 calls send each id exactly 3 times.
    seen.clear()
    rc, kv, err = run_load(gport, *path, "--field", "1", "--ids", "1-300", "-n", "900",
                           "-c", "2", "-m", "4")
    check(rc == 0, "int64 range: exit 0 (%s)" % err[-300:])
    check(kv.get("calls") == "900" and kv.get("ok") == "900" and kv.get("status_0") == "900",
          "int64 range: 900 calls, 900 OK (%s)" % kv)
    check(kv.get("distinct_ids") == "300", "int64 range: reports 300 distinct ids")
    check(set(seen) == set(range(1, 301)) and set(seen.values()) == {3},
          "int64 range: the server saw ids 1..300, each 3 times")
    check(float(kv.get("client_cpu_us_per_call", "-1")) > 0 and float(kv.get("p99_us", "0")) > 0,
          "int64 range: reports its CPU per call and latency")

    # NOT_FOUND above 90: the client's codes match the server's answers.
    seen.clear()
    mode["not_found_above"] = 90
    rc, kv, err = run_load(gport, *path, "--field", "1", "--ids", "1-100", "-n", "400",
                           "-c", "1", "-m", "8")
    mode["not_found_above"] = None
    check(rc == 1, "NOT_FOUND for some ids: exit 1")
    check(kv.get("status_0") == "360" and kv.get("status_5") == "40" and kv.get("non_ok") == "40"
          and kv.get("ok") == "360" and kv.get("calls") == "400",
          "NOT_FOUND for some ids: 360 OK, 40 NOT_FOUND (%s)" % kv)
    check("grpc-status 5: user not found" in err, "NOT_FOUND: the first failure is named")

    # Negative ids as int64 (10-byte varints) and as sint64 (zigzag), with a
    # template whose field 7 the server skips.
    for ftype in ("int64", "sint64"):
        seen.clear()
        mode["field"] = ftype
        rc, kv, err = run_load(gport, *path, "--template-hex", "3805", "--field", "1",
                               "--type", ftype, "--ids", "-3-2", "-n", "12")
        check(rc == 0 and kv.get("ok") == "12" and kv.get("distinct_ids") == "6",
              "%s ids -3..2: 12 OK, 6 distinct (%s %s)" % (ftype, kv, err[-200:]))
        check(dict(seen) == {i: 2 for i in range(-3, 3)},
              "%s ids -3..2: the server decoded each twice (%s)" % (ftype, dict(seen)))
    mode["field"] = "int64"

    # Strings from a file (blank lines skipped).
    with tempfile.NamedTemporaryFile("w", suffix=".ids", delete=False) as f:
        f.write("alice\nbob\n\ncarol\r\n")
        idfile = f.name
    seen.clear()
    rc, kv, err = run_load(gport, *path, "--field", "1", "--type", "string", "--ids-file", idfile,
                           "-n", "9", "-m", "3")
    os.unlink(idfile)
    check(rc == 0 and kv.get("ok") == "9" and kv.get("distinct_ids") == "3",
          "string ids from a file: 9 OK, 3 distinct (%s)" % kv)
    check(dict(seen) == {"alice": 3, "bob": 3, "carol": 3},
          "string ids from a file: the server saw each 3 times (%s)" % dict(seen))

    # An OK reply that is not the expected message counts bad.
    rc, kv, err = run_load(gport, *path, "--field", "1", "--ids", "5", "-n", "10",
                           "--expect-len", "3")
    check(rc == 1 and kv.get("bad") == "10" and kv.get("ok") == "0" and kv.get("status_0") == "10",
          "wrong reply length: 10 OK statuses, all counted bad (%s)" % kv)
    rc, kv, err = run_load(gport, *path, "--field", "1", "--ids", "5", "-n", "10",
                           "--expect-len", "2")
    check(rc == 0 and kv.get("ok") == "10", "right reply length: 10 OK (%s)" % kv)

    # -D: bounded in time, every call issued ends.
    t0 = time.time()
    rc, kv, err = run_load(gport, *path, "--field", "1", "--ids", "1-1000", "-D", "1", "-m", "4")
    took = time.time() - t0
    check(rc == 0 and int(kv.get("calls", 0)) > 0 and kv.get("calls") == kv.get("ok"),
          "-D 1: every call issued ended OK (%s)" % kv)
    check(took < 10, "-D 1: ended after %.1f s" % took)

    # A server that never answers: --max-seconds cuts the run off.
    mode["hang"] = True
    t0 = time.time()
    rc, kv, err = run_load(gport, *path, "--field", "1", "-n", "4", "-m", "4",
                           "--max-seconds", "2")
    took = time.time() - t0
    mode["hang"] = False
    check(rc == 1 and kv.get("ok") == "0" and kv.get("no_status") == "4",
          "hanging server: exit 1, 4 calls without status (%s)" % kv)
    check(took < 10, "hanging server: stopped after %.1f s (--max-seconds 2)" % took)
    # Each of the 4 calls lasted the 2 s to the cut-off: the histogram's
    # percentiles (1.6 % buckets) and the exact max say so.
    check(all(1.9e6 <= float(kv.get(k, 0)) <= 2.3e6 for k in ("p50_us", "p99_us", "max_us")),
          "hanging server: p50, p99 and max about 2 s (%s)" % {k: kv.get(k) for k in ("p50_us", "p99_us", "max_us")})
finally:
    release.set()
    server.stop(0)

# --- a server that drains its connections every 300 ms: they are replaced -----------
aged = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                   options=[("grpc.max_connection_age_ms", 300),
                            ("grpc.max_connection_age_grace_ms", 5000)])
aged.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
    "user.v1.UserService", {"GetUser": grpc.unary_unary_rpc_method_handler(lambda req, ctx: b"\x08\x01")}),))
aport = aged.add_insecure_port("127.0.0.1:0")
aged.start()
try:
    rc, kv, err = run_load(aport, *path, "--field", "1", "--ids", "1-100", "-D", "2", "-c", "2", "-m", "4")
    check(rc == 0 and int(kv.get("reconnects", 0)) >= 2 and kv.get("calls") == kv.get("ok") != "0",
          "connection age 300 ms: connections replaced, every call OK (%s %s)" % (kv, err[-200:]))
finally:
    aged.stop(0)

# --- bad usage ----------------------------------------------------------------------
for args in (["--ids", "5-1", "--field", "1"], ["--ids", "1-5"], ["--field", "0"],
             ["-n", "5", "-D", "1"], ["--type", "float", "--field", "1"], ["--template-hex", "abc"]):
    rc, kv, err = run_load(1, *path, *args)
    check(rc == 2 and "calls" not in kv, "bad usage %s: exit 2 (%s)" % (args, err.strip()[-120:]))

# --- perfc-echo-server: every reply is the request echoed ---------------------------
p = subprocess.Popen([ECHO, "--listen", "127.0.0.1:0", "--threads", "1"],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
line = p.stdout.readline()
if not line.startswith("listening on "):
    p.kill()
    raise SystemExit("perfc-echo-server did not start: %r" % line)
eport = int(line.split(":")[-1])
try:
    rc, kv, err = run_load(eport, "--path", "/bench.v1.Echo/Unary", "--field", "1", "--type", "string",
                           "--ids", "1-500", "-n", "3000", "-c", "2", "-m", "8", "--check-echo")
    check(rc == 0 and kv.get("ok") == "3000" and kv.get("bad") == "0" and kv.get("distinct_ids") == "500",
          "perfc-echo-server: 3000 echoes intact, 500 distinct payloads (%s %s)" % (kv, err[-200:]))
    rc, kv, err = run_load(eport, "--path", "/bench.v1.Echo/Nope", "-n", "20", "-m", "4")
    check(rc == 1 and kv.get("status_12") == "20", "perfc-echo-server: unknown method counted UNIMPLEMENTED (%s)" % kv)
finally:
    p.terminate()
    try:
        p.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
    check(p.returncode == 0, "perfc-echo-server exits 0")

if failures:
    print("%d check(s) failed" % len(failures))
    sys.exit(1)
print("all checks passed")
