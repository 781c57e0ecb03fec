#!/usr/bin/python3
"""End-to-end tests of user-service against real PostgreSQL and Redis,
through python3-grpcio (message classes from descriptors) and through the
generated C client (user-e2e-client and user-cli).

Run by CTest as: /usr/bin/python3 test_user_service.py BUILD_BIN_DIR
The servers are started here (usvc_env.Env) and stopped at the end; the
failure cases kill Redis and stop PostgreSQL under the running service.
"""
import hashlib
import os
import subprocess
import sys
import time
import unittest
import urllib.request

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import usvc_env  # noqa: E402

BIN = os.path.abspath(sys.argv.pop(1) if len(sys.argv) > 1 else "build/bin")
ENV = None
M = None
STUB = None
CHANNEL = None


def setUpModule():
    global ENV, M, STUB, CHANNEL
    M = usvc_env.load_messages()
    ENV = usvc_env.Env(BIN).up()
    CHANNEL = grpc.insecure_channel(ENV.target)
    STUB = usvc_env.Stub(CHANNEL, M)


def tearDownModule():
    if CHANNEL is not None:
        CHANNEL.close()
    if ENV is not None:
        rc = ENV.svc_stop()
        ENV.stop()
        assert rc == 0, "user-service exited with %s after SIGTERM" % rc


def create(name, email):
    return STUB.CreateUser(M["CreateUserRequest"](name=name, email=email), timeout=10)


def code_of(fn, *args, **kw):
    try:
        fn(*args, timeout=10, **kw)
    except grpc.RpcError as e:
        return e.code(), e.details()
    return grpc.StatusCode.OK, ""


def cache(name, svc=None):
    return (svc or ENV).metrics().get('perfc_cache_%s_total{cache="users"}' % name, 0)


def redis_cli(*args):
    """One command against the test's Redis; its reply as text."""
    return subprocess.run(["redis-cli", "-p", str(ENV.redis_port)] + list(args),
                          stdout=subprocess.PIPE, text=True, check=True).stdout.strip()


class UserService(unittest.TestCase):
    """Ordered: the failure cases come last (test_9x)."""

    def test_01_crud(self):
        u = create("Ada Lovelace", "ada@example.com")
        self.assertGreater(u.id, 0)
        self.assertEqual((u.name, u.email), ("Ada Lovelace", "ada@example.com"))
        self.assertGreater(u.create_time.seconds, 1600000000)
        self.assertEqual(u.create_time, u.update_time)
        g = STUB.GetUser(M["GetUserRequest"](id=u.id), timeout=10)
        self.assertEqual(g, u)
        mask = M["FieldMask"](paths=["name"])
        up = STUB.UpdateUser(M["UpdateUserRequest"](
            user=M["User"](id=u.id, name="Ada King", email="ignored@example.com"),
            update_mask=mask), timeout=10)
        self.assertEqual((up.name, up.email), ("Ada King", "ada@example.com"))
        self.assertGreaterEqual(
            (up.update_time.seconds, up.update_time.nanos),
            (u.update_time.seconds, u.update_time.nanos))
        # Empty mask: name and email both.
        up = STUB.UpdateUser(M["UpdateUserRequest"](
            user=M["User"](id=u.id, name="Ada B", email="ada.b@example.com")), timeout=10)
        self.assertEqual((up.name, up.email), ("Ada B", "ada.b@example.com"))
        # The cached copy was dropped after the commit: the next read is new.
        self.assertEqual(STUB.GetUser(M["GetUserRequest"](id=u.id), timeout=10), up)
        STUB.DeleteUser(M["DeleteUserRequest"](id=u.id), timeout=10)
        self.assertEqual(code_of(STUB.GetUser, M["GetUserRequest"](id=u.id))[0],
                         grpc.StatusCode.NOT_FOUND)

    def test_02_errors(self):
        C = grpc.StatusCode
        cases = [("", "x@example.com", C.INVALID_ARGUMENT, "name"),
                 ("x" * 101, "x@example.com", C.INVALID_ARGUMENT, "name"),
                 ("Bob", "not-an-email", C.INVALID_ARGUMENT, "email"),
                 ("Bob", "bob@", C.INVALID_ARGUMENT, "email"),
                 ("Bob", "bob@nodot", C.INVALID_ARGUMENT, "email"),
                 ("Bob", "", C.INVALID_ARGUMENT, "email")]
        for name, email, code, field in cases:
            got, details = code_of(STUB.CreateUser, M["CreateUserRequest"](name=name, email=email))
            self.assertEqual(got, code, (name, email))
            self.assertTrue(details.startswith(field + ":"), details)
        # A NUL would cut protobuf-c's C string ("Alice\0Admin" stored as
        # "Alice", "x@example.com\0@evil" checked as "x@example.com"), and
        # proto3 strings must be UTF-8: perfc refuses both before the
        # handler runs, naming the field.
        for name, email, field, why in [
                ("Alice\0Admin", "alice@example.com", "name", "string contains a NUL byte at byte 5"),
                ("Eve", "x@example.com\0@evil", "email", "string contains a NUL byte at byte 13")]:
            got, details = code_of(STUB.CreateUser, M["CreateUserRequest"](name=name, email=email))
            self.assertEqual(got, C.INVALID_ARGUMENT, details)
            self.assertIn("field user.v1.CreateUserRequest.%s: %s" % (field, why), details)
        raw = CHANNEL.unary_unary("/user.v1.UserService/CreateUser")
        with self.assertRaises(grpc.RpcError) as ctx:  # name "caf\xe9" (Latin-1)
            raw(b"\x0a\x04caf\xe9\x12\x11latin@example.com", timeout=10)
        self.assertEqual(ctx.exception.code(), C.INVALID_ARGUMENT)
        self.assertIn("field user.v1.CreateUserRequest.name: string is not valid UTF-8 at byte 3",
                      ctx.exception.details())
        # Nothing was stored: the address of the refused Alice is free.
        self.assertEqual(create("Alice", "alice@example.com").name, "Alice")
        # 100 characters (multi-byte ones count once) is the limit.
        create("é" * 100, "hundred@example.com")
        create("Bob", "bob@example.com")
        got, details = code_of(STUB.CreateUser, M["CreateUserRequest"](name="B", email="BOB@example.com"))
        self.assertEqual(got, C.ALREADY_EXISTS)
        self.assertIn("email", details)
        for fn, req in [(STUB.GetUser, M["GetUserRequest"](id=987654321)),
                        (STUB.DeleteUser, M["DeleteUserRequest"](id=987654321)),
                        (STUB.UpdateUser, M["UpdateUserRequest"](
                            user=M["User"](id=987654321, name="n", email="n@example.com")))]:
            self.assertEqual(code_of(fn, req)[0], C.NOT_FOUND)
        u = create("Carol", "carol@example.com")
        bad_mask = M["UpdateUserRequest"](user=M["User"](id=u.id, name="C"),
                                         update_mask=M["FieldMask"](paths=["id"]))
        got, details = code_of(STUB.UpdateUser, bad_mask)
        self.assertEqual(got, C.INVALID_ARGUMENT)
        self.assertTrue(details.startswith("update_mask"), details)
        got, details = code_of(STUB.UpdateUser, M["UpdateUserRequest"](
            user=M["User"](id=u.id, name=""), update_mask=M["FieldMask"](paths=["name"])))
        self.assertEqual((got, details.split(":")[0]), (C.INVALID_ARGUMENT, "name"))
        got, _ = code_of(STUB.UpdateUser, M["UpdateUserRequest"](
            user=M["User"](id=u.id, email="bob@EXAMPLE.com"), update_mask=M["FieldMask"](paths=["email"])))
        self.assertEqual(got, C.ALREADY_EXISTS)
        got, details = code_of(STUB.ListUsers, M["ListUsersRequest"](page_token="garbage"))
        self.assertEqual((got, details.split(":")[0]), (C.INVALID_ARGUMENT, "page_token"))

    def test_03_import_and_paging(self):
        rows = [M["CreateUserRequest"](name="Imp %d" % i, email="imp%d@example.com" % i)
                for i in range(1100)]
        rows += [M["CreateUserRequest"](name="Dup", email="IMP5@example.com"),   # dup in stream
                 M["CreateUserRequest"](name="Taken", email="bob@example.com"),  # existing
                 M["CreateUserRequest"](name="", email="empty@example.com"),     # invalid
                 M["CreateUserRequest"](name="Bad", email="bad")]                # invalid
        r = STUB.ImportUsers(iter(rows), timeout=60)
        self.assertEqual((r.created, r.failed), (1100, 4))
        # The first of the duplicates won.
        page = STUB.ListUsers(M["ListUsersRequest"](), timeout=10)
        self.assertEqual(len(page.users), 50)  # page_size 0 -> 50
        self.assertTrue(page.next_page_token)
        page = STUB.ListUsers(M["ListUsersRequest"](page_size=-3), timeout=10)
        self.assertEqual(len(page.users), 50)
        page = STUB.ListUsers(M["ListUsersRequest"](page_size=5000), timeout=10)
        self.assertEqual(len(page.users), 1000)  # capped
        # Walk every page: ids strictly increasing, no gaps between pages.
        seen, token = [], ""
        while True:
            page = STUB.ListUsers(M["ListUsersRequest"](page_size=300, page_token=token), timeout=10)
            seen += [u.id for u in page.users]
            token = page.next_page_token
            if not token:
                break
        self.assertEqual(seen, sorted(set(seen)))
        streamed = [u.id for u in STUB.StreamUsers(M["ListUsersRequest"](), timeout=30)]
        self.assertEqual(streamed, seen)
        emails = {u.email for u in STUB.StreamUsers(M["ListUsersRequest"](), timeout=30)}
        self.assertIn("imp5@example.com", emails)
        self.assertNotIn("IMP5@example.com", emails)
        self.assertNotIn("empty@example.com", emails)

    def test_04_batch_and_sync(self):
        a = create("Batch A", "batch.a@example.com")
        b = create("Batch B", "batch.b@example.com")
        r = STUB.BatchGetUsers(M["BatchGetUsersRequest"](ids=[b.id, 999999, a.id, -1]), timeout=10)
        self.assertEqual([u.id for u in r.users], [b.id, a.id])
        self.assertEqual(r.users[1], a)
        got = [u.id for u in STUB.SyncUsers(
            iter([M["GetUserRequest"](id=i) for i in (a.id, 424242, b.id)]), timeout=10)]
        self.assertEqual(got, [a.id, b.id])
        self.assertEqual(code_of(STUB.BatchGetUsers,
                                 M["BatchGetUsersRequest"](ids=list(range(1, 1002))))[0],
                         grpc.StatusCode.INVALID_ARGUMENT)

    def test_05_cache_metrics(self):
        u = create("Cached", "cached@example.com")
        req = M["GetUserRequest"](id=u.id)
        loads0, l1_0 = cache("loads"), cache("l1_hits")
        STUB.GetUser(req, timeout=10)            # miss: one load
        for _ in range(5):
            STUB.GetUser(req, timeout=10)        # L1 hits
        self.assertEqual(cache("loads") - loads0, 1)
        self.assertGreaterEqual(cache("l1_hits") - l1_0, 5)
        inv0 = cache("invalidations")
        STUB.UpdateUser(M["UpdateUserRequest"](user=M["User"](id=u.id, name="Cached 2"),
                                               update_mask=M["FieldMask"](paths=["name"])), timeout=10)
        self.assertGreater(cache("invalidations"), inv0)
        self.assertEqual(STUB.GetUser(req, timeout=10).name, "Cached 2")
        self.assertEqual(cache("loads") - loads0, 2)
        self.assertEqual(STUB.GetUser(req, timeout=10).name, "Cached 2")  # cached again
        self.assertEqual(cache("loads") - loads0, 2)
        # Delete drops the entry too: the next read loads and finds nothing,
        # instead of answering the cached "Cached 2".
        inv1 = cache("invalidations")
        STUB.DeleteUser(M["DeleteUserRequest"](id=u.id), timeout=10)
        self.assertEqual(cache("invalidations") - inv1, 1)
        self.assertEqual(code_of(STUB.GetUser, req)[0], grpc.StatusCode.NOT_FOUND)
        self.assertEqual(cache("loads") - loads0, 3)
        # A failed write invalidates nothing.
        inv2 = cache("invalidations")
        self.assertEqual(code_of(STUB.DeleteUser, M["DeleteUserRequest"](id=u.id))[0],
                         grpc.StatusCode.NOT_FOUND)
        self.assertEqual(cache("invalidations"), inv2)
        # Negative caching: an unknown id is loaded once, then answered from
        # the placeholder.
        neg0, loads1 = cache("negative_hits"), cache("loads")
        for _ in range(3):
            code_of(STUB.GetUser, M["GetUserRequest"](id=55555555))
        self.assertEqual(cache("loads") - loads1, 1)
        self.assertGreaterEqual(cache("negative_hits") - neg0, 2)
        # go-grpc-prometheus series for the handled calls.
        key = ('grpc_server_handled_total{grpc_type="unary",grpc_service="user.v1.UserService",'
               'grpc_method="GetUser",grpc_code="NotFound"}')
        self.assertGreaterEqual(ENV.metrics().get(key, 0), 3)

    def test_05b_one_cache_for_every_rpc(self):
        """GetUser (the generated wiring), BatchGetUsers and SyncUsers
        (user_cache_get_many) read and fill the same "user:{id}" entries
        with the same value and TTLs."""
        a = create("Shared A", "shared.a@example.com")
        b = create("Shared B", "shared.b@example.com")
        loads0 = cache("loads")
        ga = STUB.GetUser(M["GetUserRequest"](id=a.id), timeout=10)   # loads a
        self.assertEqual(cache("loads") - loads0, 1)
        l1 = cache("l1_hits")
        r = STUB.BatchGetUsers(M["BatchGetUsersRequest"](ids=[a.id]), timeout=10)
        self.assertEqual(list(r.users), [ga])       # GetUser's entry, decoded
        self.assertEqual(cache("loads") - loads0, 1)
        self.assertEqual(cache("l1_hits") - l1, 1)
        r = STUB.BatchGetUsers(M["BatchGetUsersRequest"](ids=[b.id]), timeout=10)  # loads b
        self.assertEqual(cache("loads") - loads0, 2)
        l1 = cache("l1_hits")
        self.assertEqual(STUB.GetUser(M["GetUserRequest"](id=b.id), timeout=10), r.users[0])
        synced = list(STUB.SyncUsers(iter([M["GetUserRequest"](id=b.id)]), timeout=10))
        self.assertEqual(synced, [r.users[0]])
        self.assertEqual(cache("loads") - loads0, 2)
        self.assertEqual(cache("l1_hits") - l1, 2)
        # Both levels hold the same key and TTL whichever RPC filled them:
        # 10 min (GetUser's ttl) with the file's 10 % jitter, in Redis.
        for uid in (a.id, b.id):
            self.assertEqual(redis_cli("EXISTS", "user:%d" % uid), "1")
            ttl = int(redis_cli("PTTL", "user:%d" % uid))
            self.assertTrue(500000 < ttl <= 660000, (uid, ttl))
        # "Not found" from either path: negative_ttl 30 s.
        STUB.BatchGetUsers(M["BatchGetUsersRequest"](ids=[77777701]), timeout=10)
        code_of(STUB.GetUser, M["GetUserRequest"](id=77777702))
        for uid in (77777701, 77777702):
            ttl = int(redis_cli("PTTL", "user:%d" % uid))
            self.assertTrue(20000 < ttl <= 33000, (uid, ttl))

    def test_06_generated_c_client(self):
        """The same API through perfc's generated C stubs (user-e2e-client
        runs its own checks of every method and error) and user-cli."""
        r = subprocess.run([os.path.join(BIN, "user-e2e-client"), ENV.target],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout)
        cli = [os.path.join(BIN, "user-cli"), "--target", ENV.target]
        r = subprocess.run(cli + ["create", "Cli", "cli@example.com"], stdout=subprocess.PIPE, text=True)
        self.assertEqual(r.returncode, 0)
        uid = r.stdout.split()[0].split("=")[1]
        r = subprocess.run(cli + ["get", uid], stdout=subprocess.PIPE, text=True)
        self.assertIn('name="Cli"', r.stdout)
        r = subprocess.run(cli + ["create", "", "x@example.com"], stderr=subprocess.PIPE, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("INVALID_ARGUMENT: name", r.stderr)

    def test_07_scale_out(self):
        """Two replicas on one PostgreSQL and Redis: an update through one
        drops the other's L1 copy (Redis pub/sub), and round_robin over an
        ipv4: list spreads calls over both."""
        b = ENV.service("user-service-b")
        try:
            u = create("Replica", "replica@example.com")
            req = M["GetUserRequest"](id=u.id)
            self.assertEqual(STUB.GetUser(req, timeout=10).name, "Replica")  # A caches it
            with grpc.insecure_channel(b.target) as ch_b:
                usvc_env.Stub(ch_b, M).UpdateUser(M["UpdateUserRequest"](
                    user=M["User"](id=u.id, name="Replica 2"),
                    update_mask=M["FieldMask"](paths=["name"])), timeout=10)
            usvc_env.wait_for(lambda: STUB.GetUser(req, timeout=10).name == "Replica 2",
                              "replica A to drop its L1 copy", timeout=5)
            self.assertGreater(cache("remote_invalidations"), 0)

            key = ('grpc_server_handled_total{grpc_type="unary",grpc_service="user.v1.UserService",'
                   'grpc_method="GetUser",grpc_code="OK"}')
            before = (ENV.metrics().get(key, 0), b.metrics().get(key, 0))
            target = "ipv4:%s,%s" % (ENV.target, b.target)
            with grpc.insecure_channel(target, options=[("grpc.lb_policy_name", "round_robin")]) as ch:
                stub = usvc_env.Stub(ch, M)
                for _ in range(20):
                    stub.GetUser(req, timeout=10, wait_for_ready=True)
            after = (ENV.metrics().get(key, 0), b.metrics().get(key, 0))
            self.assertGreaterEqual(after[0] - before[0], 5)
            self.assertGreaterEqual(after[1] - before[1], 5)
            # The generated C client with the same target and policy.
            r = subprocess.run([os.path.join(BIN, "user-cli"), "--target", target,
                                "--lb", "round_robin", "get", str(u.id)],
                               stdout=subprocess.PIPE, text=True, timeout=30)
            self.assertEqual(r.returncode, 0)
            self.assertIn('name="Replica 2"', r.stdout)
        finally:
            self.assertEqual(b.stop(), 0)

    def test_07b_cache_modes(self):
        """cache.l1_max_bytes 0: every read comes from Redis (the modes
        bench/run-users measures); cache.enabled false: every read is a
        SELECT, and writes are still seen at once."""
        u = create("Modes", "modes@example.com")
        STUB.BatchGetUsers(M["BatchGetUsersRequest"](ids=[u.id]), timeout=10)  # into Redis
        c = ENV.service("user-service-l1off", {"PERFC_CACHE_L1_MAX_BYTES": "0"})
        try:
            with grpc.insecure_channel(c.target) as ch:
                stub = usvc_env.Stub(ch, M)
                for _ in range(4):
                    self.assertEqual(stub.GetUser(M["GetUserRequest"](id=u.id), timeout=10).name,
                                     "Modes")
            self.assertEqual((cache("l1_hits", c), cache("l2_hits", c), cache("loads", c)),
                             (0, 4, 0))
        finally:
            self.assertEqual(c.stop(), 0)
        d = ENV.service("user-service-nocache", {"PERFC_CACHE_ENABLED": "false"})
        try:
            with grpc.insecure_channel(d.target) as ch:
                stub = usvc_env.Stub(ch, M)
                req = M["GetUserRequest"](id=u.id)
                self.assertEqual(stub.GetUser(req, timeout=10).name, "Modes")
                stub.UpdateUser(M["UpdateUserRequest"](user=M["User"](id=u.id, name="Modes 2"),
                                                       update_mask=M["FieldMask"](paths=["name"])),
                                timeout=10)
                self.assertEqual(stub.GetUser(req, timeout=10).name, "Modes 2")
                r = stub.BatchGetUsers(M["BatchGetUsersRequest"](ids=[u.id, 88888888]), timeout=10)
                self.assertEqual([x.name for x in r.users], ["Modes 2"])
                self.assertEqual([x.id for x in stub.SyncUsers(iter([req]), timeout=10)], [u.id])
            m = d.metrics()
            self.assertNotIn('perfc_cache_loads_total{cache="users"}', m)
            # Every GetUser reached PostgreSQL: queries counted by the pool
            # (the C core transport, the writes) and by the loops' client
            # (on h2, GetUser's async load is the handler).
            self.assertGreaterEqual(sum(v for k, v in m.items()
                                        if k.startswith('perfc_pg_queries_total{pool="users"') or
                                        k.startswith('perfc_pg_async_queries_total{client="users"')), 5)
        finally:
            self.assertEqual(d.stop(), 0)

    def test_07c_trace_of_an_async_miss(self):
        """The default path reads Redis on the loop and, on a miss, hands
        the call to a worker that loads it: the trace keeps every span under
        the call's (the L2 GET from the loop, then the load and its SELECT
        from the worker; `make demo` once showed only the L1 peek)."""
        u = create("Traced", "traced@example.com")
        t = ENV.service("user-service-traced", {
            "PERFC_TRACING_ENABLED": "true", "PERFC_TRACING_SAMPLER": "always_on",
            "PERFC_TRACING_DEBUG_TRACES": "true", "PERFC_TRACING_SHUTDOWN_GRACE": "1s",
            "PERFC_TRACING_ENDPOINT": "http://127.0.0.1:9/v1/traces"})
        try:
            # Not in this replica's L1; dropped from Redis so the load runs.
            redis_cli("DEL", "user:%d" % u.id)
            with grpc.insecure_channel(t.target) as ch:
                stub = usvc_env.Stub(ch, M)
                self.assertEqual(stub.GetUser(M["GetUserRequest"](id=u.id), timeout=10).name,
                                 "Traced")
            page = urllib.request.urlopen("http://127.0.0.1:%d/debug/traces" % t.metrics_port,
                                          timeout=5).read().decode()
            blocks = [b for b in page.split("\ntrace ")[1:] if "/GetUser" in b.splitlines()[0]]
            self.assertEqual(len(blocks), 1, page)
            b = blocks[0]
            wants = ["cache.peek", "cache.get_or_load", "perfc.cache.level=load", "cache.load",
                     "db.statement=user_get"]
            if os.environ.get("PERFC_SERVER_TRANSPORT", "h2") != "core":
                # On h2 the handler runs on a loop: the L2 GET goes from there.
                # The C core transport has no loop: Redis is read on the pool.
                wants += ["db.operation=GET", "perfc.cache.level=l2", "perfc.cache.result=miss"]
            for want in wants:
                self.assertIn(want, b, "%s missing from the GetUser trace:\n%s" % (want, b))
        finally:
            self.assertEqual(t.stop(), 0)

    def test_07d_reads_on_the_loops_without_the_pool(self):
        """On h2, GetUser's misses (the async load over pg_async), ListUsers,
        BatchGetUsers (misses included) and SyncUsers are served on the
        event loops:
        the worker pool starts no job for them, PostgreSQL is queried
        through the loops' client, and the answers are the pool path's. On
        the C core transport (no loops) the same calls run on the pool."""
        core = os.environ.get("PERFC_SERVER_TRANSPORT", "h2") == "core"
        users = [create("Loop %d" % i, "loop%d@example.com" % i) for i in range(3)]
        s = ENV.service("user-service-loops")
        try:
            for u in users:  # no entry in Redis: the loads must run
                redis_cli("DEL", "user:%d" % u.id)
            m0 = s.metrics()
            pool = [k for k in m0 if k.startswith("perfc_server_pool_started_total")]
            self.assertEqual(len(pool), 1, pool)
            pool = pool[0]
            with grpc.insecure_channel(s.target) as ch:
                stub = usvc_env.Stub(ch, M)
                self.assertEqual(stub.GetUser(M["GetUserRequest"](id=users[0].id),
                                              timeout=10).name, "Loop 0")
                self.assertEqual(code_of(stub.GetUser, M["GetUserRequest"](id=987654321))[0],
                                 grpc.StatusCode.NOT_FOUND)
                r = stub.BatchGetUsers(M["BatchGetUsersRequest"](
                    ids=[users[2].id, 87654321, users[1].id, users[0].id]), timeout=10)
                self.assertEqual([x.name for x in r.users], ["Loop 2", "Loop 1", "Loop 0"])
                page = stub.ListUsers(M["ListUsersRequest"](page_size=2), timeout=10)
                self.assertEqual(len(page.users), 2)
                self.assertNotEqual(page.next_page_token, "")
                nxt = stub.ListUsers(M["ListUsersRequest"](page_size=2,
                                                           page_token=page.next_page_token),
                                     timeout=10)
                self.assertGreater(nxt.users[0].id, page.users[1].id)
                self.assertEqual(code_of(stub.ListUsers, M["ListUsersRequest"](page_token="x"))[0],
                                 grpc.StatusCode.INVALID_ARGUMENT)
                # SyncUsers: in order, unknown and invalid ids skipped, a miss
                # loaded; 300 ids keep the stream's window busy.
                redis_cli("DEL", "user:%d" % users[2].id)
                ids = [users[2].id, 0, 76543210, users[0].id, users[1].id] + \
                    [users[i % 3].id for i in range(300)]
                got = [x.name for x in stub.SyncUsers(
                    iter([M["GetUserRequest"](id=i) for i in ids]), timeout=20)]
                self.assertEqual(got, ["Loop 2", "Loop 0", "Loop 1"] +
                                 ["Loop %d" % (i % 3) for i in range(300)])
            m1 = s.metrics()
            started = m1.get(pool, 0) - m0.get(pool, 0)
            loads = (m1.get('perfc_cache_loads_total{cache="users"}', 0) -
                     m0.get('perfc_cache_loads_total{cache="users"}', 0))
            # GetUser x2 and the two BatchGet misses (one batch load on the
            # pool's path, one single-flight load per id on the loops).
            self.assertGreaterEqual(loads, 2 if core else 4)
            pga = sum(v for k, v in m1.items()
                      if k.startswith('perfc_pg_async_queries_total{client="users"'))
            if core:
                self.assertGreaterEqual(started, 7)  # every call above
                self.assertEqual(pga, 0)
            else:
                self.assertEqual(started, 0, "the worker pool ran %d calls" % started)
                self.assertGreaterEqual(pga, 6)
            # The entries the loops filled are the ones the wiring reads.
            self.assertEqual(redis_cli("GETRANGE", "user:%d" % users[1].id, "0", "0"), "v")
        finally:
            self.assertEqual(s.stop(), 0)

    def test_07e_no_cache_get_user_on_the_loop(self):
        """cache.enabled false: GetUser's async load is then the whole
        handler; on h2 it queries PostgreSQL through the loops' client and
        the worker pool starts no job (found, not found with the handler's
        message); on the C core transport the pool's handler answers."""
        core = os.environ.get("PERFC_SERVER_TRANSPORT", "h2") == "core"
        u = create("No Cache", "nocache@example.com")
        s = ENV.service("user-service-nocache-loop",
                        extra_env={"PERFC_CACHE_ENABLED": "false"})
        try:
            m0 = s.metrics()
            pool = [k for k in m0 if k.startswith("perfc_server_pool_started_total")][0]
            with grpc.insecure_channel(s.target) as ch:
                stub = usvc_env.Stub(ch, M)
                for _ in range(3):
                    self.assertEqual(stub.GetUser(M["GetUserRequest"](id=u.id),
                                                  timeout=10).email, "nocache@example.com")
                code, msg = code_of(stub.GetUser, M["GetUserRequest"](id=987654321))
                self.assertEqual(code, grpc.StatusCode.NOT_FOUND)
                self.assertEqual(msg, "user not found")
            m1 = s.metrics()
            started = m1.get(pool, 0) - m0.get(pool, 0)
            pga = sum(v for k, v in m1.items()
                      if k.startswith('perfc_pg_async_queries_total{client="users"')) - \
                sum(v for k, v in m0.items()
                    if k.startswith('perfc_pg_async_queries_total{client="users"'))
            self.assertFalse(any(k.startswith("perfc_cache_loads_total") and v
                                 for k, v in m1.items()), "a cache ran")
            if core:
                self.assertGreaterEqual(started, 4)
                self.assertEqual(pga, 0)
            else:
                self.assertEqual(started, 0, "the worker pool ran %d calls" % started)
                self.assertEqual(pga, 4)
        finally:
            self.assertEqual(s.stop(), 0)

    def test_08_migrations(self):
        """Applied once with the file's sha256; a recorded checksum that no
        longer matches the file stops a new replica from starting."""
        path = os.path.join(usvc_env.EXAMPLE, "sql", "0001_create_users.sql")
        with open(path, "rb") as f:
            want = hashlib.sha256(f.read()).hexdigest()
        self.assertEqual(ENV.psql("SELECT version || ' ' || checksum FROM schema_migrations"),
                         "0001_create_users " + want)
        ENV.psql("UPDATE schema_migrations SET checksum = 'edited' "
                 "WHERE version = '0001_create_users'")
        try:
            env = dict(os.environ, PERFC_POSTGRES_REPLICA_DSN="")
            r = subprocess.run(ENV.service_argv(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=env, timeout=60)
            self.assertEqual(r.returncode, 1, r.stdout)
            self.assertIn("0001_create_users.sql was edited after it was applied", r.stdout)
        finally:
            ENV.psql("UPDATE schema_migrations SET checksum = '%s' "
                     "WHERE version = '0001_create_users'" % want)

    def test_91_redis_killed(self):
        u = create("Before", "before.redis@example.com")
        ENV.redis_kill()
        try:
            # Every call still works: the cache falls back to PostgreSQL.
            v = create("During", "during.redis@example.com")
            self.assertEqual(STUB.GetUser(M["GetUserRequest"](id=v.id), timeout=10).name, "During")
            self.assertEqual(STUB.GetUser(M["GetUserRequest"](id=u.id), timeout=10).name, "Before")
            up = STUB.UpdateUser(M["UpdateUserRequest"](user=M["User"](id=u.id, name="After"),
                                                        update_mask=M["FieldMask"](paths=["name"])),
                                 timeout=10)
            self.assertEqual(up.name, "After")
            self.assertEqual(STUB.GetUser(M["GetUserRequest"](id=u.id), timeout=10).name, "After")
            r = STUB.BatchGetUsers(M["BatchGetUsersRequest"](ids=[u.id, v.id]), timeout=10)
            self.assertEqual(len(r.users), 2)
            self.assertGreater(cache("l2_errors"), 0)
        finally:
            ENV.redis_up()

    def test_92_postgres_stopped(self):
        u = create("Pg", "pg.stop@example.com")
        ENV.pg_down()
        try:
            C = grpc.StatusCode
            self.assertEqual(code_of(STUB.ListUsers, M["ListUsersRequest"]())[0], C.UNAVAILABLE)
            self.assertEqual(code_of(STUB.CreateUser, M["CreateUserRequest"](
                name="x", email="pgdown@example.com"))[0], C.UNAVAILABLE)
            self.assertEqual(code_of(STUB.GetUser, M["GetUserRequest"](id=u.id + 1000000))[0],
                             C.UNAVAILABLE)
            self.assertEqual(code_of(STUB.DeleteUser, M["DeleteUserRequest"](id=u.id))[0],
                             C.UNAVAILABLE)
        finally:
            ENV.pg_up()
        # Same service process: the pool reconnects on its own.
        usvc_env.wait_for(lambda: code_of(STUB.ListUsers, M["ListUsersRequest"]())[0]
                          == grpc.StatusCode.OK, "recovery after PostgreSQL restart")
        self.assertIsNone(ENV.svc.poll())
        v = create("Back", "pg.back@example.com")
        self.assertEqual(STUB.GetUser(M["GetUserRequest"](id=v.id), timeout=10).name, "Back")
        STUB.DeleteUser(M["DeleteUserRequest"](id=u.id), timeout=10)


if __name__ == "__main__":
    unittest.main(verbosity=2)
