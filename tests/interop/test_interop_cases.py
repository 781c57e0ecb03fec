#!/usr/bin/python3
"""python3-grpcio, an independent client, runs grpc's interop test cases
(doc/interop-test-descriptions.md) against perfc's interop-server, in
plaintext and over TLS.

Run by CTest as:
  /usr/bin/python3 test_interop_cases.py BUILD_BIN_DIR CERT_DIR PROTO_DIR

grpc_tools is not installed, so the grpc.testing message classes are built
at run time: protoc (protobuf-compiler) turns the hand-written protos in
PROTO_DIR into a FileDescriptorSet, and python3-protobuf's message factory
makes classes from it. Response compression, which grpcio cannot observe,
is checked on the wire with nghttp (nghttp2-client): every gRPC frame
carries a compressed flag byte.

Room: tests/interop.
"""
import os
import queue
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import unittest

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

BIN = CERTS = PROTOS = None
M = {}  # message name -> class
SVC = "/grpc.testing.TestService/"
IN_SIZES = [27182, 8, 1828, 45904]
OUT_SIZES = [31415, 9, 2653, 58979]
# Sanitized servers (make check; CMake passes PERFC_SANITIZE) answer
# several-fold slower, ThreadSanitizer's most: deadlines and waits are
# scaled together by SLOW, so each case asserts the same thing and a normal
# build's numbers are unchanged.
_SAN = os.environ.get("PERFC_TEST_SANITIZE", "")
SLOW = 10 if "thread" in _SAN else 3 if "address" in _SAN else 1
# The deadline of every call that is not about deadlines: room, not a bound.
DEADLINE = 10 * SLOW


def load_messages():
    """grpc.testing message classes from the protos, through protoc."""
    with tempfile.NamedTemporaryFile(suffix=".pb") as out:
        subprocess.run(["protoc", "-I", PROTOS, "--include_imports",
                        "--descriptor_set_out=" + out.name,
                        "grpc/testing/test.proto"], check=True)
        fds = descriptor_pb2.FileDescriptorSet.FromString(out.read())
    pool = descriptor_pool.DescriptorPool()
    for f in fds.file:
        pool.Add(f)
    for name in ("Empty", "SimpleRequest", "SimpleResponse", "StreamingInputCallRequest",
                 "StreamingInputCallResponse", "StreamingOutputCallRequest",
                 "StreamingOutputCallResponse", "ResponseParameters"):
        desc = pool.FindMessageTypeByName("grpc.testing." + name)
        M[name] = message_factory.MessageFactory(pool).GetPrototype(desc)


def ser(m):
    return m.SerializeToString()


def des(name):
    return M[name].FromString


class Server:
    """build/bin/interop-server on a free port."""

    def __init__(self, tls):
        self.proc = subprocess.Popen(
            [os.path.join(BIN, "interop-server"), "--port", "0", "--use_tls",
             "true" if tls else "false", "--tls_dir", CERTS]
            # CTest names each copy's transport; passed through (unset:
            # the server's default).
            + (["--transport", os.environ["PERFC_TEST_TRANSPORT"]]
               if os.environ.get("PERFC_TEST_TRANSPORT") else []),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        if "listening on port" not in line:
            self.stop()
            raise RuntimeError("interop-server did not start: %r" % line)
        self.port = int(line.split("listening on port ")[1].split()[0])

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Cases:
    """Every case, as grpc's interop descriptions state it. Subclasses pick
    plaintext or TLS."""

    TLS = False

    @classmethod
    def setUpClass(cls):
        cls.server = Server(cls.TLS)
        if cls.TLS:
            with open(os.path.join(CERTS, "ca.crt"), "rb") as f:
                creds = grpc.ssl_channel_credentials(root_certificates=f.read())
            cls.channel = grpc.secure_channel(
                "127.0.0.1:%d" % cls.server.port, creds,
                options=[("grpc.ssl_target_name_override", "localhost")])
        else:
            cls.channel = grpc.insecure_channel("127.0.0.1:%d" % cls.server.port)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.server.stop()

    # -- stubs over the channel, typed by hand
    def unary(self, method="UnaryCall", req="SimpleRequest", resp="SimpleResponse"):
        return self.channel.unary_unary(SVC + method, request_serializer=ser,
                                        response_deserializer=des(resp))

    def sout(self):
        return self.channel.unary_stream(SVC + "StreamingOutputCall", request_serializer=ser,
                                         response_deserializer=des("StreamingOutputCallResponse"))

    def sin(self):
        return self.channel.stream_unary(SVC + "StreamingInputCall", request_serializer=ser,
                                         response_deserializer=des("StreamingInputCallResponse"))

    def duplex(self, method="FullDuplexCall"):
        return self.channel.stream_stream(SVC + method, request_serializer=ser,
                                          response_deserializer=des("StreamingOutputCallResponse"))

    def large_request(self, **kw):
        return M["SimpleRequest"](response_size=314159,
                                  payload={"body": bytes(271828)}, **kw)

    def out_request(self, sizes, in_size=0, **kw):
        return M["StreamingOutputCallRequest"](
            response_parameters=[{"size": s} for s in sizes],
            payload={"body": bytes(in_size)}, **kw)

    # -- the cases
    def test_empty_unary(self):
        r = self.unary("EmptyCall", "Empty", "Empty")(M["Empty"](), timeout=DEADLINE)
        self.assertEqual(r, M["Empty"]())

    def test_large_unary(self):
        r = self.unary()(self.large_request(), timeout=DEADLINE)
        self.assertEqual(r.payload.body, bytes(314159))

    def test_client_streaming(self):
        reqs = [M["StreamingInputCallRequest"](payload={"body": bytes(n)}) for n in IN_SIZES]
        r = self.sin()(iter(reqs), timeout=DEADLINE)
        self.assertEqual(r.aggregated_payload_size, 74922)

    def test_server_streaming(self):
        got = [len(r.payload.body) for r in self.sout()(self.out_request(OUT_SIZES), timeout=DEADLINE)]
        self.assertEqual(got, OUT_SIZES)

    def test_ping_pong(self):
        reqs = _Requests()
        call = self.duplex()(reqs, timeout=DEADLINE)
        for i, o in zip(IN_SIZES, OUT_SIZES):
            reqs.put(self.out_request([o], i))
            self.assertEqual(len(next(call).payload.body), o)
        reqs.close()
        self.assertEqual(list(call), [])
        self.assertEqual(call.code(), grpc.StatusCode.OK)

    def test_empty_stream(self):
        self.assertEqual(list(self.duplex()(iter([]), timeout=DEADLINE)), [])

    def test_cancel_after_begin(self):
        fut = self.sin().future(iter(_Blocking()), timeout=DEADLINE)
        fut.cancel()
        with self.assertRaises(grpc.FutureCancelledError):
            fut.result()

    def test_cancel_after_first_response(self):
        reqs = _Requests()
        call = self.duplex()(reqs, timeout=DEADLINE)
        reqs.put(self.out_request([31415], 27182))
        self.assertEqual(len(next(call).payload.body), 31415)
        call.cancel()
        reqs.close()
        self.assertEqual(call.code(), grpc.StatusCode.CANCELLED)

    def test_timeout_on_sleeping_server(self):
        reqs = _Requests()
        call = self.duplex()(reqs, timeout=0.001)
        reqs.put(M["StreamingOutputCallRequest"](payload={"body": bytes(27182)}))
        with self.assertRaises(grpc.RpcError) as e:
            next(call)
        reqs.close()
        self.assertEqual(e.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)

    def test_custom_metadata(self):
        md = (("x-grpc-test-echo-initial", "test_initial_metadata_value"),
              ("x-grpc-test-echo-trailing-bin", b"\xab\xab\xab"))
        r, call = self.unary().with_call(self.large_request(), metadata=md, timeout=DEADLINE)
        self.assertEqual(r.payload.body, bytes(314159))
        self.check_echo(call)
        call = self.duplex()(iter([self.out_request([314159], 271828)]), metadata=md,
                             timeout=DEADLINE)
        self.assertEqual([len(r.payload.body) for r in call], [314159])
        self.check_echo(call)

    def check_echo(self, call):
        self.assertIn(("x-grpc-test-echo-initial", "test_initial_metadata_value"),
                      tuple(call.initial_metadata()))
        self.assertIn(("x-grpc-test-echo-trailing-bin", b"\xab\xab\xab"),
                      tuple(call.trailing_metadata()))

    def status_request(self, message):
        return {"code": 2, "message": message}

    def test_status_code_and_message(self):
        msg = "test status message"
        with self.assertRaises(grpc.RpcError) as e:
            self.unary()(M["SimpleRequest"](response_status=self.status_request(msg)),
                         timeout=DEADLINE)
        self.assertEqual((e.exception.code(), e.exception.details()),
                         (grpc.StatusCode.UNKNOWN, msg))
        req = M["StreamingOutputCallRequest"](response_status=self.status_request(msg))
        with self.assertRaises(grpc.RpcError) as e:
            list(self.duplex()(iter([req]), timeout=DEADLINE))
        self.assertEqual((e.exception.code(), e.exception.details()),
                         (grpc.StatusCode.UNKNOWN, msg))

    def test_special_status_message(self):
        msg = "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"
        with self.assertRaises(grpc.RpcError) as e:
            self.unary()(M["SimpleRequest"](response_status=self.status_request(msg)),
                         timeout=DEADLINE)
        self.assertEqual((e.exception.code(), e.exception.details()),
                         (grpc.StatusCode.UNKNOWN, msg))

    def test_unimplemented_method(self):
        with self.assertRaises(grpc.RpcError) as e:
            self.unary("UnimplementedCall", "Empty", "Empty")(M["Empty"](), timeout=DEADLINE)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNIMPLEMENTED)

    def test_unimplemented_service(self):
        stub = self.channel.unary_unary("/grpc.testing.UnimplementedService/UnimplementedCall",
                                        request_serializer=ser,
                                        response_deserializer=des("Empty"))
        with self.assertRaises(grpc.RpcError) as e:
            stub(M["Empty"](), timeout=DEADLINE)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNIMPLEMENTED)

    def test_client_compressed_unary(self):
        with self.assertRaises(grpc.RpcError) as e:  # the probe
            self.unary()(self.large_request(expect_compressed={"value": True}), timeout=DEADLINE)
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        r = self.unary()(self.large_request(expect_compressed={"value": True}),
                         compression=grpc.Compression.Gzip, timeout=DEADLINE)
        self.assertEqual(r.payload.body, bytes(314159))
        r = self.unary()(self.large_request(expect_compressed={"value": False}), timeout=DEADLINE)
        self.assertEqual(r.payload.body, bytes(314159))

    def test_server_compressed_unary(self):
        for flag in (True, False):
            r = self.unary()(self.large_request(response_compressed={"value": flag}),
                             timeout=DEADLINE)
            self.assertEqual(r.payload.body, bytes(314159))
            if not self.TLS:
                self.assertEqual(wire_flags(self.server.port, "UnaryCall",
                                            self.large_request(response_compressed={"value": flag})),
                                 [1 if flag else 0])

    def test_client_compressed_streaming(self):
        probe = M["StreamingInputCallRequest"](payload={"body": bytes(27182)},
                                               expect_compressed={"value": True})
        with self.assertRaises(grpc.RpcError) as e:
            self.sin()(iter([probe]), timeout=DEADLINE)
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        # grpcio has no per-message "do not compress" switch, so unlike the
        # description's second (uncompressed) message both go out gzip'd.
        reqs = [probe, M["StreamingInputCallRequest"](payload={"body": bytes(45904)},
                                                      expect_compressed={"value": True})]
        r = self.sin()(iter(reqs), compression=grpc.Compression.Gzip, timeout=DEADLINE)
        self.assertEqual(r.aggregated_payload_size, 73086)

    def test_server_compressed_streaming(self):
        req = M["StreamingOutputCallRequest"](response_parameters=[
            {"size": 31415, "compressed": {"value": True}},
            {"size": 92653, "compressed": {"value": False}}])
        got = [len(r.payload.body) for r in self.sout()(req, timeout=DEADLINE)]
        self.assertEqual(got, [31415, 92653])
        if not self.TLS:
            self.assertEqual(wire_flags(self.server.port, "StreamingOutputCall", req), [1, 0])


    # -- beyond the case list: server behaviour the cases do not reach
    def test_half_duplex_answers_after_half_close(self):
        reqs = _Requests()
        call = self.duplex("HalfDuplexCall")(reqs, timeout=DEADLINE)
        reqs.put(self.out_request([10, 20]))
        reqs.put(self.out_request([30]))
        reqs.close()
        self.assertEqual([len(r.payload.body) for r in call], [10, 20, 30])
        req = self.out_request([5], response_status=self.status_request("after all"))
        with self.assertRaises(grpc.RpcError) as e:
            list(self.duplex("HalfDuplexCall")(iter([req]), timeout=DEADLINE))
        self.assertEqual((e.exception.code(), e.exception.details()),
                         (grpc.StatusCode.UNKNOWN, "after all"))

    def test_stream_first_uncompressed_stays_uncompressed(self):
        """The encoding goes out with the headers: a stream whose first
        message was sent plain cannot compress a later one."""
        req = M["StreamingOutputCallRequest"](response_parameters=[
            {"size": 100, "compressed": {"value": False}},
            {"size": 200, "compressed": {"value": True}}])
        got = [len(r.payload.body) for r in self.sout()(req, timeout=DEADLINE)]
        self.assertEqual(got, [100, 200])
        if not self.TLS:
            self.assertEqual(wire_flags(self.server.port, "StreamingOutputCall", req), [0, 0])


class _Blocking:
    """A request iterator that never yields: the call stays open until
    cancelled."""

    def __iter__(self):
        return self

    def __next__(self):
        time.sleep(30)
        raise StopIteration


class _Requests:
    """A request iterator fed by the test: a bidi call that writes one
    message, reads the answer, then writes the next."""

    def __init__(self):
        self.q = queue.Queue()

    def put(self, m):
        self.q.put(m)

    def close(self):
        self.q.put(None)

    def __iter__(self):
        return self

    def __next__(self):
        m = self.q.get()
        if m is None:
            raise StopIteration
        return m


def wire_flags(port, method, req):
    """The compressed-flag byte of every response frame, as nghttp (an HTTP/2
    client outside gRPC) receives them."""
    nghttp = shutil.which("nghttp")
    if nghttp is None:
        raise unittest.SkipTest("nghttp (nghttp2-client) not installed")
    msg = ser(req)
    with tempfile.NamedTemporaryFile(suffix=".bin") as body:
        body.write(b"\x00" + struct.pack(">I", len(msg)) + msg)
        body.flush()
        out = subprocess.run(
            [nghttp, "-H", "content-type: application/grpc", "-H", "te: trailers",
             "-H", "grpc-accept-encoding: gzip", "-d", body.name,
             "http://127.0.0.1:%d%s%s" % (port, SVC, method)],
            capture_output=True, timeout=20 * SLOW, check=True).stdout
    flags, i = [], 0
    while i + 5 <= len(out):
        flags.append(out[i])
        i += 5 + struct.unpack(">I", out[i + 1:i + 5])[0]
    return flags


class Plaintext(Cases, unittest.TestCase):
    TLS = False


class Tls(Cases, unittest.TestCase):
    TLS = True


if __name__ == "__main__":
    BIN, CERTS, PROTOS = sys.argv[1:4]
    del sys.argv[1:4]
    load_messages()
    unittest.main(verbosity=2)
