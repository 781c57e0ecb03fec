#!/usr/bin/python3
"""test_go_users.py — go-users-server answers GetUser as user-service does,
from the path its flags select (bench/run-users relies on both).

Room: bench/peers/go-users. PostgreSQL and Redis come from
examples/user-service/tests/usvc_env.py (private, loopback); user-service
runs the migration and creates the users, then:
- every user (and NOT_FOUND for a missing id and for id 0) is the same
  message from the Go peer as from user-service;
- L1 on: a first pass loads from PostgreSQL and fills Redis (TTL 10 min +
  at most 10 % jitter; NOT_FOUND cached for 30 s + jitter), a second pass
  is all L1 hits; with --l1-max-entries 10 at most 10 of 50 ids hit L1;
- no L1: perfc-load's spread ids are all Redis hits, no load, no sharing;
- Redis emptied, concurrent calls for one id share loads (singleflight);
- --cache=false without Redis: one SELECT per call;
- grpc-gateway in front (--gateway-listen): GET /v1/users/{id} over
  HTTP/1.1 and h2c answers the users user-service answers as JSON, 404
  for a missing id, 501 for an unimplemented route;
- SIGTERM exits 0; a missing --postgres exits 2.

Usage: test_go_users.py BIN_DIR (go-users-server, user-service, perfc-load)
"""
import os
import re
import subprocess
import sys
import time
import urllib.request

import json

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.join(ROOT, "examples", "user-service", "tests"))
import usvc_env  # noqa: E402

BIN = os.path.abspath(sys.argv[1])
PREFIX = "go:user:"
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


class GoPeer:
    def __init__(self, env, *args, redis=True):
        argv = [os.path.join(BIN, "go-users-server"), "--listen", "127.0.0.1:0",
                "--metrics-listen", "127.0.0.1:0", "--threads", "1", "--postgres", env.dsn,
                "--gateway-listen", "127.0.0.1:0", "--key-prefix", PREFIX, *args]
        if redis:
            argv += ["--redis", "127.0.0.1:%d" % env.redis_port]
        GoPeer.runs = getattr(GoPeer, "runs", 0) + 1
        self.log = os.path.join(env.dir, "go-users-%d.log" % GoPeer.runs)
        self.proc = subprocess.Popen(argv, stdout=open(self.log, "w"), stderr=subprocess.STDOUT)

        def ports():
            text = open(self.log).read()
            if self.proc.poll() is not None:
                raise SystemExit("go-users-server exited %d:\n%s" % (self.proc.returncode, text))
            g = re.search(r"^listening on .*:(\d+)$", text, re.M)
            m = re.search(r"^metrics on .*:(\d+)$", text, re.M)
            w = re.search(r"^gateway on .*:(\d+)$", text, re.M)
            return g and m and w and (int(g.group(1)), int(m.group(1)), int(w.group(1)))
        self.port, self.mport, self.gport = usvc_env.wait_for(ports, "go-users-server")
        self.channel = grpc.insecure_channel("127.0.0.1:%d" % self.port)
        self.stub = usvc_env.Stub(self.channel, msgs)

    def counters(self):
        text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.mport, timeout=5).read().decode()
        out = {}
        for name in ("l1_hits", "redis_hits", "loads", "singleflight_shared"):
            m = re.search(r"^gousers_cache_%s_total (\S+)$" % name, text, re.M)
            out[name] = int(float(m.group(1))) if m else None
        m = re.search(r"^gousers_pg_queries_total (\S+)$", text, re.M)
        out["pg"] = int(float(m.group(1))) if m else None
        # go-grpc-prometheus counts the calls like perfc's interceptor.
        m = re.search(r'^grpc_server_handled_total\{grpc_code="OK",grpc_method="GetUser".*\} (\S+)$', text, re.M)
        out["handled_ok"] = int(float(m.group(1))) if m else 0
        return out

    def stop(self):
        self.channel.close()
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def get(stub, ident):
    try:
        return stub.GetUser(msgs["GetUserRequest"](id=ident), timeout=10), None
    except grpc.RpcError as e:
        return None, e.code()


def http_get(port, path, http2=False):
    """(status, parsed JSON body) of GET http://127.0.0.1:port/path by curl
    (HTTP/1.1, or cleartext HTTP/2 with prior knowledge)."""
    r = subprocess.run(["curl", "-sS", "--max-time", "10", "-w", "\n%{http_code} %{http_version}",
                        *(["--http2-prior-knowledge"] if http2 else ["--http1.1"]),
                        "http://127.0.0.1:%d%s" % (port, path)],
                       capture_output=True, text=True, timeout=20)
    body, _, tail = r.stdout.rpartition("\n")
    code, version = tail.split()
    return int(code), version, json.loads(body) if body else None


def redis(*args):
    return subprocess.run(["redis-cli", "-p", str(env.redis_port), *args], capture_output=True,
                          text=True, check=True).stdout.strip()


def load(peer, *args):
    p = subprocess.run([os.path.join(BIN, "perfc-load"), "--target", "127.0.0.1:%d" % peer.port,
                        "--path", "/user.v1.UserService/GetUser", "--field", "1",
                        "--max-seconds", "60", *args], capture_output=True, text=True, timeout=90)
    kv = dict(t.split("=", 1) for t in p.stdout.split() if "=" in t)
    return p.returncode, kv, p.stderr


msgs = usvc_env.load_messages()
env = usvc_env.Env(BIN)
N = 50
peer = None
ok_end = False
try:
    env.up()
    perfc = usvc_env.Stub(grpc.insecure_channel(env.target), msgs)
    for i in range(N):
        perfc.CreateUser(msgs["CreateUserRequest"](name="User %d" % i, email="u%d@example.com" % i),
                         timeout=10)
    ids = [int(r) for r in env.psql("SELECT id FROM users ORDER BY id").split()]
    check(len(ids) == N, "%d users created" % N)

    # --- L1 on --------------------------------------------------------------------
    peer = GoPeer(env)
    same = all(get(peer.stub, i) == get(perfc, i) for i in ids)
    check(same, "L1: all %d users equal user-service's answers" % N)
    missing = max(ids) + 1000
    check(get(peer.stub, missing)[1] == grpc.StatusCode.NOT_FOUND == get(perfc, missing)[1],
          "a missing id: NOT_FOUND from both")
    check(get(peer.stub, 0)[1] == grpc.StatusCode.NOT_FOUND, "id 0: NOT_FOUND")
    c = peer.counters()
    check(c["loads"] == N + 1 and c["pg"] == N + 1 and c["l1_hits"] == 0,
          "first pass: %d loads, %d SELECTs, no L1 hit (%s)" % (N + 1, N + 1, c))
    pttl = int(redis("PTTL", PREFIX + str(ids[0])))
    check(600000 - 5000 <= pttl <= 660000, "Redis TTL of a user: 10 min + jitter (%d ms)" % pttl)
    npttl = int(redis("PTTL", PREFIX + str(missing)))
    check(0 < npttl <= 33000 and redis("STRLEN", PREFIX + str(missing)) == "0",
          "NOT_FOUND cached empty for 30 s + jitter (%d ms)" % npttl)
    check(all(get(peer.stub, i)[0] is not None for i in ids), "second pass: all found")
    check(get(peer.stub, missing)[1] == grpc.StatusCode.NOT_FOUND, "second pass: missing id NOT_FOUND")
    c = peer.counters()
    check(c["l1_hits"] == N + 1 and c["loads"] == N + 1 and c["redis_hits"] == 0,
          "second pass: all L1 hits (%s)" % c)

    # grpc-gateway in front (--gateway-listen): the same users as JSON over
    # HTTP/1.1 and h2c, as user-service's own JSON answers them; NOT_FOUND
    # is 404 with code 5; the calls reach GetUser through the gateway's
    # loopback client connection (counted by the gRPC interceptor).
    def same_user(g, p):
        return g is not None and p is not None and \
            (g["id"], g["name"], g["email"]) == (p["id"], p["name"], p["email"])
    both = [(http_get(peer.gport, "/v1/users/%d" % i), http_get(env.grpc_port, "/v1/users/%d" % i))
            for i in ids[:10]]
    check(all(g[0] == 200 and g[1] == "1.1" and p[0] == 200 and same_user(g[2], p[2]) for g, p in both),
          "gateway: GET /v1/users/{id} over HTTP/1.1 = user-service's JSON (%s)" % (both[0],))
    st, ver, b = http_get(peer.gport, "/v1/users/%d" % ids[0], http2=True)
    check(st == 200 and ver == "2" and same_user(b, both[0][1][2]),
          "gateway: HTTP/2 (h2c prior knowledge) answers too (%s %s %s)" % (st, ver, b))
    st, _, b = http_get(peer.gport, "/v1/users/%d" % missing)
    check(st == 404 and b.get("code") == 5 and b.get("message") == "user not found",
          "gateway: a missing id is 404 with code 5 (%s %s)" % (st, b))
    st, _, b = http_get(peer.gport, "/v1/users")
    check(st == 501 and b.get("code") == 12, "gateway: ListUsers UNIMPLEMENTED is 501 (%s %s)" % (st, b))
    c2 = peer.counters()
    # 11 found (10 over HTTP/1.1, 1 over h2c) and the missing id's cached
    # NOT_FOUND: 12 L1 hits.
    check(c2["handled_ok"] - c["handled_ok"] == 11 and c2["l1_hits"] - c["l1_hits"] == 12 and
          c2["loads"] == c["loads"],
          "gateway: 12 GetUser calls through the gateway, all L1 hits (%s)" % c2)
    check(peer.stop() == 0, "L1: SIGTERM, exit 0")

    # --- L1 bounded to 10 entries ---------------------------------------------------
    peer = GoPeer(env, "--l1-max-entries", "10")
    for _ in range(2):
        for i in ids:
            get(peer.stub, i)
    c = peer.counters()
    check(c["l1_hits"] <= 10 and c["l1_hits"] + c["redis_hits"] == 2 * N and c["loads"] == 0,
          "L1 of 10 entries: at most 10 of %d hits, the rest from Redis (%s)" % (2 * N, c))
    check(peer.stop() == 0, "bounded L1: exit 0")

    # --- no L1: every call a Redis hit -----------------------------------------------
    peer = GoPeer(env, "--l1-max-entries", "0")
    rc, kv, err = load(peer, "--ids", "%d-%d" % (min(ids), max(ids)), "-n", "1000", "-c", "2", "-m", "8")
    c = peer.counters()
    check(rc == 0 and kv.get("ok") == "1000" and kv.get("distinct_ids") == str(N),
          "no L1: perfc-load 1000 OK over %d ids (%s %s)" % (N, kv, err[-200:]))
    check(c["redis_hits"] == 1000 and c["l1_hits"] == 0 and c["loads"] == 0 and c["singleflight_shared"] == 0
          and c["handled_ok"] == 1000, "no L1: 1000 Redis hits, no load, no sharing (%s)" % c)

    # Redis emptied: 32 concurrent calls for one id share their loads.
    redis("FLUSHALL")
    rc, kv, err = load(peer, "--ids", str(ids[0]), "-n", "400", "-m", "32")
    c2 = peer.counters()
    loads = c2["loads"] - c["loads"]
    check(rc == 0 and kv.get("ok") == "400", "one hot id: 400 OK (%s)" % kv)
    check(1 <= loads < 400 and c2["pg"] - c["pg"] == loads and
          c2["redis_hits"] - c["redis_hits"] + loads <= 400,
          "one hot id: %d loads (one SELECT each) for 400 calls" % loads)
    check(peer.stop() == 0, "no L1: exit 0")

    # --- cache off, no Redis at all ----------------------------------------------------
    env.redis_kill()
    peer = GoPeer(env, "--cache=false", redis=False)
    rc, kv, err = load(peer, "--ids", "%d-%d" % (min(ids), max(ids)), "-n", "300", "-c", "2", "-m", "4")
    c = peer.counters()
    check(rc == 0 and kv.get("ok") == "300", "cache off: 300 OK without Redis (%s %s)" % (kv, err[-200:]))
    check(c["pg"] == 300 and not c["loads"] and not c["redis_hits"] and not c["l1_hits"],
          "cache off: one SELECT per call (%s)" % c)
    check(get(peer.stub, missing)[1] == grpc.StatusCode.NOT_FOUND, "cache off: missing id NOT_FOUND")
    check(peer.stop() == 0, "cache off: exit 0")
    peer = None

    bad = subprocess.run([os.path.join(BIN, "go-users-server"), "--listen", "127.0.0.1:0"],
                         capture_output=True, text=True, timeout=20)
    check(bad.returncode == 2 and "usage" in bad.stderr, "no --postgres: exit 2 with usage")
    ok_end = True
finally:
    if peer is not None:
        peer.stop()
    if failures or not ok_end:
        for f in sorted(os.listdir(env.dir)):
            if f.startswith("go-users-"):
                print("--- %s\n%s" % (f, open(os.path.join(env.dir, f)).read()[-2000:]))
    env.stop()

if failures:
    print("%d check(s) failed" % len(failures))
    sys.exit(1)
print("all checks passed")
