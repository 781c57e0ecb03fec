#!/usr/bin/python3
"""test_user_service_faults — issue #13 items 5-8 end to end: user-service
instances on one real PostgreSQL and Redis (usvc_env), faults injected,
acknowledged writes and stale reads counted.

  5  the shipped configuration (its replica host does not exist here) with
     only --postgres: reads fall back to the primary, health says what is
     degraded, one log line;
  6  Redis unreachable for both instances: an update acknowledged by one is
     never answered old by the other (L1 bypassed while unsubscribed);
  7  read-your-writes: writers Update(own id) then GetUser(same id) among
     readers; no read after an acknowledged update returns the old name;
  8  Redis unreachable for the writer only (a proxy the test cuts): deletes
     pending at SIGTERM are retried within the grace, and what cannot be
     delivered is kept in cache.pending_file and replayed by the next start.

Run: /usr/bin/python3 test_user_service_faults.py BUILD/bin (CTest
example.user_service_faults). USVC_RYW_SECONDS (default 4) sets the length
of the item 7 loop; the soak runs it longer.

Room: examples/user-service/tests.
"""
import os
import random
import re
import signal
import socket
import sys
import threading
import time
import unittest

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import usvc_env  # noqa: E402

BIN = os.path.abspath(sys.argv.pop(1) if len(sys.argv) > 1 else "build/bin")
RYW_SECONDS = float(os.environ.get("USVC_RYW_SECONDS", "4"))
M = usvc_env.load_messages()
ENV = None
SERVING, NOT_SERVING = 1, 2


def setUpModule():
    global ENV
    ENV = usvc_env.Env(BIN).up()


def tearDownModule():
    if ENV is not None:
        ENV.stop()


def stub(svc):
    ch = grpc.insecure_channel(svc.target)
    return ch, usvc_env.Stub(ch, M)


def health(svc, name):
    """grpc.health.v1.Health/Check by hand: request field 1 (service),
    response field 1 (status varint); NOT_FOUND is returned as None."""
    ch = grpc.insecure_channel(svc.target)
    try:
        check = ch.unary_unary("/grpc.health.v1.Health/Check")
        b = name.encode()
        try:
            resp = check(b"\x0a" + bytes([len(b)]) + b, timeout=5)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return resp[1] if len(resp) >= 2 and resp[0] == 0x08 else 0
    finally:
        ch.close()


def gauge(svc, series):
    return svc.metrics().get(series)


CACHE = '{cache="users"}'


def wait_subscribed(svc, want):
    usvc_env.wait_for(lambda: gauge(svc, "perfc_cache_invalidation_subscribed" + CACHE)
                      == want, "subscription %s on %s" % (want, svc.log))


def create(st, name, email):
    return st.CreateUser(M["CreateUserRequest"](name=name, email=email), timeout=10)


def update(st, uid, name):
    return st.UpdateUser(M["UpdateUserRequest"](
        user=M["User"](id=uid, name=name),
        update_mask=M["FieldMask"](paths=["name"])), timeout=10)


def get(st, uid):
    return st.GetUser(M["GetUserRequest"](id=uid), timeout=10)


def log_text(svc):
    with open(svc.log) as f:
        return f.read()


class Proxy:
    """A TCP forwarder to Redis that the test can cut (every connection
    closed, new ones refused) and restore: Redis unreachable for one
    instance while the others still reach it."""

    def __init__(self, port, target):
        self.port, self.target = port, target
        self.lock = threading.Lock()
        self.conns = []
        self.lsock = None
        self.up()

    def up(self):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self.lsock = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def _accept(self, s):
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            try:
                r = socket.create_connection(("127.0.0.1", self.target), 2)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.conns += [c, r]
            for a, b in ((c, r), (r, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        for x in (a, b):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        # shutdown() first: a close alone leaves the accept() blocked in the
        # other thread holding the socket, which keeps listening.
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.lsock.close()
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()
            self.conns = []


def redis_cmd(port, *args):
    """One RESP command on a fresh connection; returns the raw reply."""
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    s = socket.create_connection(("127.0.0.1", port), 5)
    try:
        s.sendall(out)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk
            if b"\r\n" not in data:
                continue
            head = data.index(b"\r\n")
            if data[:1] != b"$" or data.startswith(b"$-1"):
                return data
            if len(data) >= head + 2 + int(data[1:head]) + 2:
                return data
    finally:
        s.close()


class Faults(unittest.TestCase):

    def test_5_primary_only_with_shipped_config(self):
        """The shipped file names replica host "postgres-replica", which does
        not resolve here: started with only --postgres (no
        PERFC_POSTGRES_REPLICA_DSN), every read must work."""
        c = ENV.service("shipped", extra_env={"PERFC_POSTGRES_REPLICA_DSN": None})
        ch, st = stub(c)
        try:
            u = create(st, "Primary Only", "primary.only@example.com")
            self.assertEqual(get(st, u.id).name, "Primary Only")
            r = st.ListUsers(M["ListUsersRequest"](page_size=1000), timeout=10)
            self.assertIn(u.id, [x.id for x in r.users])
            b = st.BatchGetUsers(M["BatchGetUsersRequest"](ids=[u.id]), timeout=10)
            self.assertEqual([x.id for x in b.users], [u.id])
            # Reads work, so the service serves; the replica's own name says
            # it is not used.
            self.assertEqual(health(c, "user.v1.UserService"), SERVING)
            self.assertEqual(health(c, "user.v1.UserService/replica"), NOT_SERVING)
            m = c.metrics()
            self.assertEqual(m['perfc_pg_replica_up{pool="users"}'], 0)
            self.assertGreaterEqual(m['perfc_pg_replica_fallback_total{pool="users"}'], 2)
            # One line per transition and client: the pool (the write's
            # and the workers' reads) and the loops' client (GetUser's
            # miss, ListUsers, BatchGetUsers) each try the replica.
            log = log_text(c)
            self.assertEqual(len(re.findall("pg pool users: replica unreachable", log)), 1,
                             "one log line per transition")
            self.assertLessEqual(len(re.findall("pg async users: replica unreachable", log)), 1,
                                 "one log line per transition")
            st.DeleteUser(M["DeleteUserRequest"](id=u.id), timeout=10)
        finally:
            ch.close()
            self.assertEqual(c.stop(), 0)
        # Without a replica (the ordinary test setup) the name is absent.
        self.assertIsNone(health(ENV.main, "user.v1.UserService/replica"))

    def test_6_redis_unreachable_no_stale_l1(self):
        b = ENV.service("six-b")
        cha, a_st = stub(ENV.main)
        chb, b_st = stub(b)
        try:
            wait_subscribed(ENV.main, 1)
            wait_subscribed(b, 1)
            u = create(a_st, "Six 0", "six@example.com")
            for st in (a_st, b_st, a_st, b_st):  # both L1s hold it
                self.assertEqual(get(st, u.id).name, "Six 0")
            ENV.redis_kill()
            try:
                wait_subscribed(ENV.main, 0)
                wait_subscribed(b, 0)
                acked = stale = 0
                for i in range(1, 41):
                    w, r = (b_st, a_st) if i % 2 else (a_st, b_st)
                    name = "Six %d" % i
                    update(w, u.id, name)
                    acked += 1
                    for _ in range(2):
                        if get(r, u.id).name != name:
                            stale += 1
                self.assertEqual(acked, 40)
                self.assertEqual(stale, 0, "stale reads through the other instance")
                bypassed = gauge(ENV.main, "perfc_cache_l1_bypassed_total" + CACHE)
                self.assertGreaterEqual(bypassed, 40)
            finally:
                ENV.redis_up()
            wait_subscribed(ENV.main, 1)
            wait_subscribed(b, 1)
            # Back: L1 flushed on resubscribe, nothing old is served, and
            # L1 answers again.
            for st in (a_st, b_st):
                self.assertEqual(get(st, u.id).name, "Six 40")
            hits = gauge(ENV.main, "perfc_cache_l1_hits_total" + CACHE)
            self.assertEqual(get(a_st, u.id).name, "Six 40")
            self.assertGreater(gauge(ENV.main, "perfc_cache_l1_hits_total" + CACHE), hits)
            a_st.DeleteUser(M["DeleteUserRequest"](id=u.id), timeout=10)
        finally:
            cha.close()
            chb.close()
            self.assertEqual(b.stop(), 0)

    def test_7_read_your_writes(self):
        _, st = stub(ENV.main)
        ids = [create(st, "W%d v0" % i, "ryw%d@example.com" % i).id for i in range(6)]
        others = [create(st, "R%d" % i, "rywr%d@example.com" % i).id for i in range(20)]
        stop = time.monotonic() + RYW_SECONDS
        counts = {"acked": 0, "checked": 0, "stale": 0, "reads": 0}
        lock = threading.Lock()
        errors = []

        def writer(uid, k):
            ch, s = stub(ENV.main)
            n = 0
            try:
                while time.monotonic() < stop:
                    n += 1
                    name = "W%d v%d" % (k, n)
                    update(s, uid, name)
                    got = get(s, uid).name
                    with lock:
                        counts["acked"] += 1
                        counts["checked"] += 1
                        counts["stale"] += got != name
            except Exception as e:  # noqa: BLE001
                errors.append(e)
            finally:
                ch.close()

        def reader():
            ch, s = stub(ENV.main)
            n = 0
            try:
                while time.monotonic() < stop:
                    get(s, random.choice(ids + others))
                    n += 1
            except Exception as e:  # noqa: BLE001
                errors.append(e)
            finally:
                ch.close()
                with lock:
                    counts["reads"] += n

        threads = [threading.Thread(target=writer, args=(uid, k)) for k, uid in enumerate(ids)]
        threads += [threading.Thread(target=reader) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(RYW_SECONDS + 60)
        print("read-your-writes: %(acked)d acknowledged updates, %(stale)d stale of "
              "%(checked)d reads after them, %(reads)d other reads" % counts)
        self.assertEqual(errors, [])
        self.assertGreater(counts["acked"], 30)
        self.assertEqual(counts["stale"], 0)
        for k, uid in enumerate(ids):  # the last acknowledged name is there
            self.assertTrue(get(st, uid).name.startswith("W%d v" % k))

    def test_8_shutdown_with_pending_deletes(self):
        proxy_port = usvc_env.free_port()
        proxy = Proxy(proxy_port, ENV.redis_port)
        pending = os.path.join(ENV.dir, "b.pending")
        benv = {"PERFC_CACHE_PENDING_FILE": pending,
                "PERFC_SERVER_SHUTDOWN_GRACE": "1s"}
        b = ENV.service("eight-b", extra_env=benv, redis_port=proxy_port)
        _, a_st = stub(ENV.main)
        chb, b_st = stub(b)
        try:
            wait_subscribed(b, 1)
            # 8a: the writer loses Redis, acknowledges an update (its delete
            # is queued), gets Redis back and is stopped at once: the delete
            # must be delivered within the grace, not dropped.
            u = create(a_st, "Eight 0", "eight@example.com")
            self.assertEqual(get(a_st, u.id).name, "Eight 0")  # in Redis now
            proxy.cut()
            update(b_st, u.id, "Eight 1")
            self.assertEqual(gauge(b, "perfc_cache_invalidations_pending" + CACHE), 1)
            proxy.up()
            chb.close()
            self.assertEqual(b.stop(), 0)
            self.assertNotIn("still failing", log_text(b))
            self.assertFalse(os.path.exists(pending))
            self.assertEqual(redis_cmd(ENV.redis_port, "EXISTS", "user:%d" % u.id), b":0\r\n")
            # The delivered invalidation also reached A's L1 (pub/sub: soon,
            # not synchronously).
            usvc_env.wait_for(lambda: get(a_st, u.id).name == "Eight 1",
                              "the update seen through A", timeout=2)

            # 8b: Redis stays unreachable for the writer through its whole
            # grace: the key is saved and the next start deletes it.
            b = ENV.service("eight-b2", extra_env=benv, redis_port=proxy_port)
            chb, b_st = stub(b)
            wait_subscribed(b, 1)
            self.assertEqual(get(a_st, u.id).name, "Eight 1")
            stale_value = redis_cmd(ENV.redis_port, "GET", "user:%d" % u.id)
            self.assertTrue(stale_value.startswith(b"$"), stale_value)
            proxy.cut()
            update(b_st, u.id, "Eight 2")
            chb.close()
            self.assertEqual(b.stop(), 0)
            self.assertIn("saved to " + pending, log_text(b))
            with open(pending, "rb") as f:
                self.assertEqual(f.read(), b"%d:user:%d\n" % (len("user:%d" % u.id), u.id))
            # Redis still holds the old user (the other instance would
            # read it from there): the window this file closes.
            self.assertEqual(redis_cmd(ENV.redis_port, "GET", "user:%d" % u.id), stale_value)
            proxy.up()
            b = ENV.service("eight-b3", extra_env=benv, redis_port=proxy_port)
            usvc_env.wait_for(lambda: gauge(b, "perfc_cache_invalidations_pending" + CACHE) == 0,
                              "replayed delete")
            self.assertIn("left by the previous run", log_text(b))
            self.assertEqual(redis_cmd(ENV.redis_port, "EXISTS", "user:%d" % u.id), b":0\r\n")
            usvc_env.wait_for(lambda: get(a_st, u.id).name == "Eight 2",
                              "the replayed invalidation seen through A", timeout=2)
            acked = stale = 0
            for i in range(3, 13):
                _, st = stub(b)
                update(st, u.id, "Eight %d" % i)
                acked += 1
                stale += get(st, u.id).name != "Eight %d" % i
            self.assertEqual((acked, stale), (10, 0))
            self.assertEqual(b.stop(), 0)
            self.assertFalse(os.path.exists(pending), "file kept after a clean stop")
            a_st.DeleteUser(M["DeleteUserRequest"](id=u.id), timeout=10)
        finally:
            proxy.cut()
            if b.proc.poll() is None:
                b.proc.send_signal(signal.SIGTERM)
                b.proc.wait(30)


if __name__ == "__main__":
    unittest.main(verbosity=2)
