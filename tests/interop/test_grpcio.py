#!/usr/bin/python3
"""python3-grpcio against perfc servers: an independent gRPC implementation
checks bytes, status codes, metadata and every bad-input case.

Run by CTest as: /usr/bin/python3 test_grpcio.py BUILD_BIN_DIR
Messages are encoded by hand (they are tiny) so the test depends on nothing
perfc or protoc generated.
"""
import os
import random
import signal
import subprocess
import sys
import time
import unittest

# The transport the servers run on (CTest's `.h2` copies set it), passed
# through as --transport.
TRANSPORT_ARGS = (["--transport", os.environ["PERFC_TEST_TRANSPORT"]]
                  if os.environ.get("PERFC_TEST_TRANSPORT") else [])
# More perfc-test-server arguments (interop.grpcio.http: --http, the same suite
# against a server whose port serves HTTP/JSON too).
EXTRA_ARGS = os.environ.get("PERFC_TEST_SERVER_ARGS", "").split()

import grpc

BIN = None
# Sanitized servers (make check; CMake passes PERFC_SANITIZE) answer
# several-fold slower, ThreadSanitizer's most: a test whose deadline must
# leave room for a first answer scales the deadline and its waits together
# by SLOW, so it asserts the same thing and a normal build is unchanged.
_SAN = os.environ.get("PERFC_TEST_SANITIZE", "")
SLOW = 10 if "thread" in _SAN else 3 if "address" in _SAN else 1


def varint(n):
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_bytes(num, data):
    return varint(num << 3 | 2) + varint(len(data)) + data


def field_varint(num, v):
    return varint(num << 3) + varint(v)


def echo_request(payload=b"", sleep_ms=0, code=0, message="", response_bytes=0):
    out = b""
    if payload:
        out += field_bytes(1, payload)
    if sleep_ms:
        out += field_varint(2, sleep_ms)
    if code:
        out += field_varint(3, code)
    if message:
        out += field_bytes(4, message.encode())
    if response_bytes:
        out += field_varint(5, response_bytes)
    return out


def decode(buf):
    """Returns {field_number: value} for a flat message."""
    i, out = 0, {}
    while i < len(buf):
        key, i = read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = read_varint(buf, i)
        elif wt == 2:
            n, i = read_varint(buf, i)
            v, i = buf[i:i + n], i + n
        else:
            raise ValueError("unexpected wire type %d" % wt)
        out[num] = v
    return out


def read_varint(buf, i):
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


class Server:
    """Starts a perfc binary on an ephemeral port and stops it with SIGTERM,
    checking it exits cleanly (0) — a crash or a sanitizer report fails."""

    def __init__(self, name, *args):
        self.proc = subprocess.Popen([os.path.join(BIN, name), "--listen", "127.0.0.1:0", *args, *TRANSPORT_ARGS,
                                      *(EXTRA_ARGS if name == "perfc-test-server" else [])],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError("%s did not start: %r %s" % (name, line, self.proc.stderr.read()))
        self.target = line.split()[-1]
        self.channel = grpc.insecure_channel(self.target)

    def unary(self, path):
        return self.channel.unary_unary(path, request_serializer=None, response_deserializer=None)

    def stop(self):
        self.channel.close()
        self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("server did not stop within 20 s of SIGTERM")
        if self.proc.returncode != 0:
            raise AssertionError("server exited %d: %s" % (self.proc.returncode, err[-2000:]))


SVC = "/perfc.test.v1.TestService/"


class TestServiceTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = Server("perfc-test-server", "--max-recv-bytes", "65536")

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def call(self, method, body, timeout=10, metadata=None):
        return self.srv.unary(SVC + method)(body, timeout=timeout, metadata=metadata)

    def assertCode(self, ctx, code, text=None):
        self.assertEqual(ctx.exception.code(), code, ctx.exception.details())
        if text is not None:
            self.assertIn(text, ctx.exception.details())

    def test_echo_bytes(self):
        for n in (0, 1, 64, 1000, 60000):
            payload = bytes(random.getrandbits(8) for _ in range(n))
            resp = decode(self.call("Echo", echo_request(payload)))
            self.assertEqual(resp.get(1, b""), payload)
            self.assertTrue(resp[2].startswith(b"ipv"), resp[2])

    def test_status_codes_and_messages(self):
        for code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS,
                     grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAUTHENTICATED):
            with self.assertRaises(grpc.RpcError) as ctx:
                self.call("Fail", echo_request(code=code.value[0], message="why: %s" % code.name))
            self.assertCode(ctx, code, "why: %s" % code.name)

    def test_malformed_bytes_invalid_argument(self):
        # Field 1 declared bytes, sent as a varint; then a truncated length;
        # then random garbage. Each is INVALID_ARGUMENT naming the type.
        for body in (field_varint(1, 5), b"\x0a\x10abc", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"):
            with self.assertRaises(grpc.RpcError) as ctx:
                self.call("Echo", body)
            self.assertCode(ctx, grpc.StatusCode.INVALID_ARGUMENT, "perfc.test.v1.EchoRequest")
        rnd = random.Random(7)
        for _ in range(200):
            body = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 64)))
            try:
                self.call("Echo", body)
            except grpc.RpcError as e:
                self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT, e.details())
        self.assertEqual(decode(self.call("Echo", echo_request(b"ok")))[1], b"ok")

    def test_string_with_nul_or_bad_utf8_invalid_argument(self):
        # protobuf-c would hand "Alice\0Admin" to the handler as "Alice":
        # a NUL or invalid UTF-8 in a string field is refused before the
        # handler, on every receive path, naming the field.
        field = "field perfc.test.v1.EchoRequest.message: "
        nul = field_bytes(4, b"Alice\x00Admin")
        latin1 = field_bytes(4, b"caf\xe9")
        for body, why in ((nul, "string contains a NUL byte at byte 5"),
                          (latin1, "string is not valid UTF-8 at byte 3")):
            with self.assertRaises(grpc.RpcError) as ctx:
                self.call("Strings", body)
            self.assertCode(ctx, grpc.StatusCode.INVALID_ARGUMENT, field + why)
            # server streaming: the one request
            with self.assertRaises(grpc.RpcError) as ctx:
                list(self.srv.channel.unary_stream(SVC + "Expand")(
                    body + field_varint(5, 3), timeout=10))
            self.assertCode(ctx, grpc.StatusCode.INVALID_ARGUMENT, field + why)
            # client streaming: the second message
            with self.assertRaises(grpc.RpcError) as ctx:
                self.srv.channel.stream_unary(SVC + "Collect")(
                    iter([echo_request(b"a"), body]), timeout=10)
            self.assertCode(ctx, grpc.StatusCode.INVALID_ARGUMENT, field + why)
        # The raw_strings method takes the bytes: C sees "Alice" (strlen 5).
        resp = decode(self.call("RawStrings", nul))
        self.assertEqual(resp[2], b"Alice")
        self.assertEqual(resp[3], 5)
        # Valid UTF-8 in every length passes unchanged.
        text = "gr\u00fc\u00df \u20ac \U0001F600 " * 7
        resp = decode(self.call("Strings", echo_request(message=text)))
        self.assertEqual(resp[2].decode(), text)

    def test_oversized_request_resource_exhausted(self):
        with self.assertRaises(grpc.RpcError) as ctx:
            self.call("Echo", echo_request(b"x" * 100000))
        self.assertCode(ctx, grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertEqual(decode(self.call("Echo", echo_request(b"ok")))[1], b"ok")

    def test_unknown_method_and_service(self):
        for path in (SVC + "NoSuchMethod", "/no.such.Service/Echo"):
            t0 = time.monotonic()
            with self.assertRaises(grpc.RpcError) as ctx:
                self.srv.unary(path)(b"", timeout=10)
            self.assertCode(ctx, grpc.StatusCode.UNIMPLEMENTED, path)
            self.assertLess(time.monotonic() - t0, 2)

    def test_missing_handler_unimplemented(self):
        with self.assertRaises(grpc.RpcError) as ctx:
            self.call("Missing", b"")
        self.assertCode(ctx, grpc.StatusCode.UNIMPLEMENTED, "Missing")

    def test_deadline_exceeded(self):
        with self.assertRaises(grpc.RpcError) as ctx:
            self.call("Slow", echo_request(sleep_ms=3000), timeout=0.2)
        self.assertCode(ctx, grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertEqual(decode(self.call("Echo", echo_request(b"ok")))[1], b"ok")

    def test_metadata_both_ways(self):
        fn = self.srv.unary(SVC + "Meta")
        resp, call = fn.with_call(b"", metadata=(("x-in", "from-python"),), timeout=10)
        self.assertEqual(decode(resp)[1], b"from-python")
        initial = dict(call.initial_metadata())
        trailing = dict(call.trailing_metadata())
        self.assertEqual(initial.get("x-initial"), "first")
        self.assertEqual(trailing.get("x-trailing"), "from-python")
        self.assertEqual(trailing.get("x-raw-bin"), b"\x00\x01\x02")

    def test_cancel_mid_call_and_keep_serving(self):
        futures = [self.srv.unary(SVC + "Slow").future(echo_request(sleep_ms=2000), timeout=10)
                   for _ in range(10)]
        time.sleep(0.2)
        for f in futures:
            f.cancel()
        for f in futures:
            self.assertTrue(f.cancelled())
        self.assertEqual(decode(self.call("Echo", echo_request(b"ok")))[1], b"ok")

    def test_many_concurrent_calls(self):
        fn = self.srv.unary(SVC + "Echo")
        futures = [(i, fn.future(echo_request(b"c%d" % i), timeout=20)) for i in range(500)]
        for i, f in futures:
            self.assertEqual(decode(f.result())[1], b"c%d" % i)


class StreamingTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = Server("perfc-test-server")

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def test_client_stream_collects_every_message(self):
        fn = self.srv.channel.stream_unary(SVC + "Collect")
        parts = [os.urandom(random.randint(0, 300)) for _ in range(200)]
        resp = decode(fn(iter([echo_request(p) for p in parts]), timeout=20))
        self.assertEqual(resp.get(1, b""), b"".join(parts))
        self.assertEqual(resp[3], 200)
        # An empty stream is a valid call with an empty answer.
        self.assertEqual(decode(fn(iter([]), timeout=10)).get(3, 0), 0)

    def test_client_stream_error_and_malformed_message(self):
        fn = self.srv.channel.stream_unary(SVC + "Collect")
        with self.assertRaises(grpc.RpcError) as ctx:
            fn(iter([echo_request(b"a"), echo_request(code=5)]), timeout=10)
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.NOT_FOUND)
        self.assertIn("stopped at message 2", ctx.exception.details())
        with self.assertRaises(grpc.RpcError) as ctx:
            fn(iter([echo_request(b"a"), field_varint(1, 7)]), timeout=10)
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("malformed stream message", ctx.exception.details())

    def test_server_stream_in_order_with_metadata(self):
        fn = self.srv.channel.unary_stream(SVC + "Expand")
        call = fn(echo_request(response_bytes=1000), timeout=20)
        got = [decode(m).get(1, b"") for m in call]
        self.assertEqual(got, [str(i).encode() for i in range(1000)])
        self.assertEqual(dict(call.initial_metadata()).get("x-initial"), "stream")
        self.assertEqual(call.code(), grpc.StatusCode.OK)

    def test_server_stream_cancel_stops_writer(self):
        fn = self.srv.channel.unary_stream(SVC + "Expand")
        call = fn(echo_request(response_bytes=100000, sleep_ms=1), timeout=20)
        first = [next(call) for _ in range(5)]
        self.assertEqual(decode(first[4])[1], b"4")
        call.cancel()
        self.assertEqual(call.code(), grpc.StatusCode.CANCELLED)
        # The server's writer saw the cancel and stopped: it still serves.
        self.assertEqual(decode(self.srv.unary(SVC + "Echo")(echo_request(b"ok"), timeout=10))[1], b"ok")

    def test_slow_reader_flow_control(self):
        # 2000 messages of 64 KiB (125 MiB) toward a reader that pauses: with
        # flow control the writer blocks, so the server's resident memory
        # stays far below what buffering the whole stream would take.
        def rss_kib():
            with open("/proc/%d/status" % self.srv.proc.pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        before = rss_kib()
        fn = self.srv.channel.unary_stream(SVC + "Expand")
        call = fn(echo_request(b"z" * 65536, response_bytes=2000), timeout=60)
        self.assertEqual(decode(next(call))[1][:1], b"z")
        time.sleep(1.0)  # the reader stalls; an unbounded writer would race ahead
        grown = rss_kib() - before
        # ASan keeps freed blocks in its quarantine (256 MiB by default), so
        # a sanitized server's RSS also holds messages already sent: the
        # bound doubles there and stays well below buffering all 125 MiB.
        bound = 32 * 1024 * (2 if "address" in _SAN else 1)
        self.assertLess(grown, bound, "server grew %d KiB while the reader stalled" % grown)
        n = 1 + sum(1 for _ in call)
        self.assertEqual(n, 2000)

    def test_bidi_ping_pong(self):
        fn = self.srv.channel.stream_stream(SVC + "Chat")
        import queue
        q = queue.Queue()

        def gen():
            while True:
                item = q.get()
                if item is None:
                    return
                yield item

        call = fn(gen(), timeout=20)
        for i in range(50):
            q.put(echo_request(b"ping%d" % i))
            self.assertEqual(decode(next(call))[1], b"ping%d" % i)
        q.put(None)
        self.assertEqual(list(call), [])
        self.assertEqual(call.code(), grpc.StatusCode.OK)

    def test_bidi_deadline(self):
        fn = self.srv.channel.stream_stream(SVC + "Chat")
        import threading
        stop = threading.Event()

        def gen():
            yield echo_request(b"x")
            stop.wait(5 * SLOW)

        call = fn(gen(), timeout=0.3 * SLOW)
        self.assertEqual(decode(next(call))[1], b"x")
        with self.assertRaises(grpc.RpcError) as ctx:
            next(call)
        stop.set()
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)


class LoopStreamingTests(StreamingTests):
    """Every streaming test again, with Collect, Expand, Chat and Quit
    handled by loop callbacks (perfc/stream.h, perfc-test-server
    --loop-streams 1): same answers, statuses, cancels, deadlines and flow
    control. h2 only: the C core transport refuses them (LoopRefusedTests)."""

    @classmethod
    def setUpClass(cls):
        cls.srv = None
        if os.environ.get("PERFC_TEST_TRANSPORT") != "core":
            cls.srv = Server("perfc-test-server", "--loop-streams", "1")

    @classmethod
    def tearDownClass(cls):
        if cls.srv is not None:
            cls.srv.stop()

    def setUp(self):
        if self.srv is None:
            self.skipTest("loop stream handlers are h2-only (refusal: LoopRefusedTests)")

    def test_bidi_slow_reader_redelivers_refused_messages(self):
        # 200 messages of 64 KiB (12.5 MiB) echoed to a reader that stalls
        # for a second: the handler's sends answer PERFC_EFULL, it refuses
        # the message (kept by perfc, the window shut), and perfc delivers
        # it again once the stream drained. Every echo arrives once, in
        # order, and the server does not buffer the stream.
        def rss_kib():
            with open("/proc/%d/status" % self.srv.proc.pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        before = rss_kib()
        fn = self.srv.channel.stream_stream(SVC + "Chat")
        bodies = [bytes([i]) * 65536 for i in range(200)]
        call = fn(iter([echo_request(b) for b in bodies]), timeout=60 * SLOW)
        self.assertEqual(decode(next(call))[1], bodies[0])
        time.sleep(1.0)
        grown = rss_kib() - before
        self.assertLess(grown, 32 * 1024, "server grew %d KiB while the reader stalled" % grown)
        rest = [decode(m)[1] for m in call]
        self.assertEqual(len(rest), 199)
        self.assertTrue(rest == bodies[1:], "echoes differ from the requests")
        self.assertEqual(call.code(), grpc.StatusCode.OK)


class LoopRefusedTests(unittest.TestCase):
    def test_core_refuses_loop_streams_at_registration(self):
        if os.environ.get("PERFC_TEST_TRANSPORT") != "core":
            self.skipTest("h2 runs loop stream handlers (LoopStreamingTests)")
        p = subprocess.run([os.path.join(BIN, "perfc-test-server"), "--listen", "127.0.0.1:0",
                            "--loop-streams", "1", *TRANSPORT_ARGS],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(p.returncode, 1)
        self.assertIn("need the h2 transport", p.stderr)
        self.assertNotIn("listening on", p.stdout)


class EchoServerTests(unittest.TestCase):
    """The benchmark echo server, the demo's subject."""

    def test_echo_server_stream_loop_and_pool(self):
        if not os.path.exists(os.path.join(BIN, "perfc-echo-server")):
            self.skipTest("perfc-echo-server not built")
        # The default (loop on h2, pool on core) and the pool explicitly.
        for args in ([], ["--stream-executor", "pool"]):
            srv = Server("perfc-echo-server", *args)
            try:
                fn = srv.channel.stream_stream("/bench.v1.Echo/Stream")
                bodies = [os.urandom(random.randint(0, 200)) for _ in range(300)]
                got = [decode(m).get(1, b"") for m in fn(iter([field_bytes(1, b) if b else b"" for b in bodies]), timeout=20)]
                self.assertEqual(got, bodies, "args %r" % args)
            finally:
                srv.stop()

    def test_echo_server_bytes_and_codes(self):
        if not os.path.exists(os.path.join(BIN, "perfc-echo-server")):
            self.skipTest("perfc-echo-server not built")
        srv = Server("perfc-echo-server")
        try:
            fn = srv.unary("/bench.v1.Echo/Unary")
            for n in (0, 64, 4096):
                payload = os.urandom(n)
                self.assertEqual(decode(fn(field_bytes(1, payload) if n else b"", timeout=10)).get(1, b""), payload)
            with self.assertRaises(grpc.RpcError) as ctx:
                fn(field_varint(1, 3), timeout=10)
            self.assertEqual(ctx.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            with self.assertRaises(grpc.RpcError) as ctx:
                srv.unary("/bench.v1.Echo/Nope")(b"", timeout=10)
            self.assertEqual(ctx.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
        finally:
            srv.stop()


class EarlySignalTests(unittest.TestCase):
    """A server told to stop as soon as it said "listening on" (before or
    while it enters perfc_server_run()) shuts down gracefully and exits 0;
    it used to die of the signal's default action (exit -15), as
    interop.grpcio_tls's test_plaintext_client_refused saw under load."""

    ROUNDS = 20

    def rounds(self, name, sig):
        if "thread" in _SAN:
            # ThreadSanitizer defers an asynchronous signal to the receiving
            # thread's next intercepted call, and loses some that arrive
            # during start-up: in 1 round in 7 to 1 in 140 the server hung
            # in perfc_server_run() with its handler never run, nothing
            # pending in /proc/PID/status, and every perfc thread blocking
            # the signal. 0 hangs in 1,600 rounds of the normal build and
            # 400 of the ASan build, which run this test.
            self.skipTest("ThreadSanitizer loses early asynchronous signals")
        path = os.path.join(BIN, name)
        if not os.path.exists(path):
            self.skipTest(name + " not built")
        deadline = time.monotonic() + 120
        for i in range(self.ROUNDS):
            self.assertLess(time.monotonic(), deadline, "%d rounds in 120 s" % i)
            p = subprocess.Popen([path, "--listen", "127.0.0.1:0", *TRANSPORT_ARGS],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            line = p.stdout.readline()
            p.send_signal(sig)  # at once: the gap before perfc_server_run()
            try:
                _, err = p.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
                self.fail("round %d: %s did not stop within 20 s" % (i, name))
            self.assertTrue(line.startswith("listening on "), "round %d: %r %s" % (i, line, err[-500:]))
            self.assertEqual(p.returncode, 0, "round %d: %s exited %d: %s"
                             % (i, name, p.returncode, err[-1000:]))

    def test_sigterm_right_after_listening_exits_0(self):
        self.rounds("perfc-test-server", signal.SIGTERM)

    def test_sigint_right_after_listening_exits_0(self):
        self.rounds("perfc-test-server", signal.SIGINT)

    def test_echo_server_sigterm_right_after_listening_exits_0(self):
        self.rounds("perfc-echo-server", signal.SIGTERM)


if __name__ == "__main__":
    BIN = sys.argv.pop(1)
    unittest.main(verbosity=2)
