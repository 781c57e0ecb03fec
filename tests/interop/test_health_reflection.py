#!/usr/bin/python3
"""python3-grpcio against perfc's grpc.health.v1.Health and
grpc.reflection.v1 and v1alpha ServerReflection, served by perfc-test-server.

Run by CTest as: /usr/bin/python3 test_health_reflection.py BUILD_BIN_DIR
The health and reflection messages come from FileDescriptorProtos built
here with python3-protobuf's descriptor_pb2, independently of perfc's
copies of the protos; descriptors the server returns are parsed and loaded
into a fresh python DescriptorPool.
"""
import os
import sys
import threading
import time
import unittest

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_grpcio  # noqa: E402  (Server, echo_request: shared helpers)

F = descriptor_pb2.FieldDescriptorProto
STRING, INT32, BYTES, ENUM, MESSAGE = (F.TYPE_STRING, F.TYPE_INT32, F.TYPE_BYTES,
                                       F.TYPE_ENUM, F.TYPE_MESSAGE)


def message(file, name, *fields, oneofs=()):
    m = file.message_type.add(name=name)
    for o in oneofs:
        m.oneof_decl.add(name=o)
    for fname, num, ftype, extra in fields:
        f = m.field.add(name=fname, number=num, type=ftype,
                        label=F.LABEL_REPEATED if extra.get("repeated") else F.LABEL_OPTIONAL)
        if "type_name" in extra:
            f.type_name = extra["type_name"]
        if "oneof" in extra:
            f.oneof_index = extra["oneof"]
    return m


def health_file():
    """grpc/health/v1/health.proto as grpc publishes it."""
    fd = descriptor_pb2.FileDescriptorProto(name="grpc/health/v1/health.proto",
                                            package="grpc.health.v1", syntax="proto3")
    message(fd, "HealthCheckRequest", ("service", 1, STRING, {}))
    resp = message(fd, "HealthCheckResponse",
                   ("status", 1, ENUM,
                    {"type_name": ".grpc.health.v1.HealthCheckResponse.ServingStatus"}))
    e = resp.enum_type.add(name="ServingStatus")
    for i, v in enumerate(("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")):
        e.value.add(name=v, number=i)
    return fd


def reflection_file(version):
    """grpc/reflection/VERSION/reflection.proto as grpc publishes it (v1 and
    v1alpha differ only in the package)."""
    p = ".grpc.reflection.%s." % version
    fd = descriptor_pb2.FileDescriptorProto(name="grpc/reflection/%s/reflection.proto" % version,
                                            package="grpc.reflection." + version, syntax="proto3")
    message(fd, "ServerReflectionRequest",
            ("host", 1, STRING, {}),
            ("file_by_filename", 3, STRING, {"oneof": 0}),
            ("file_containing_symbol", 4, STRING, {"oneof": 0}),
            ("file_containing_extension", 5, MESSAGE, {"oneof": 0, "type_name": p + "ExtensionRequest"}),
            ("all_extension_numbers_of_type", 6, STRING, {"oneof": 0}),
            ("list_services", 7, STRING, {"oneof": 0}),
            oneofs=("message_request",))
    message(fd, "ExtensionRequest", ("containing_type", 1, STRING, {}),
            ("extension_number", 2, INT32, {}))
    message(fd, "ServerReflectionResponse",
            ("valid_host", 1, STRING, {}),
            ("original_request", 2, MESSAGE, {"type_name": p + "ServerReflectionRequest"}),
            ("file_descriptor_response", 4, MESSAGE, {"oneof": 0, "type_name": p + "FileDescriptorResponse"}),
            ("all_extension_numbers_response", 5, MESSAGE,
             {"oneof": 0, "type_name": p + "ExtensionNumberResponse"}),
            ("list_services_response", 6, MESSAGE, {"oneof": 0, "type_name": p + "ListServiceResponse"}),
            ("error_response", 7, MESSAGE, {"oneof": 0, "type_name": p + "ErrorResponse"}),
            oneofs=("message_response",))
    message(fd, "FileDescriptorResponse", ("file_descriptor_proto", 1, BYTES, {"repeated": True}))
    message(fd, "ExtensionNumberResponse", ("base_type_name", 1, STRING, {}),
            ("extension_number", 2, INT32, {"repeated": True}))
    message(fd, "ListServiceResponse",
            ("service", 1, MESSAGE, {"repeated": True, "type_name": p + "ServiceResponse"}))
    message(fd, "ServiceResponse", ("name", 1, STRING, {}))
    message(fd, "ErrorResponse", ("error_code", 1, INT32, {}), ("error_message", 2, STRING, {}))
    return fd


_pool = descriptor_pool.DescriptorPool()
_pool.Add(health_file())
_pool.Add(reflection_file("v1alpha"))
_pool.Add(reflection_file("v1"))
_factory = message_factory.MessageFactory(_pool)


def cls(name):
    return _factory.GetPrototype(_pool.FindMessageTypeByName(name))


HealthReq = cls("grpc.health.v1.HealthCheckRequest")
HealthResp = cls("grpc.health.v1.HealthCheckResponse")
SERVING, NOT_SERVING, SERVICE_UNKNOWN = 1, 2, 3
TEST_SVC = "perfc.test.v1.TestService"


def start_server():
    test_grpcio.BIN = BIN
    return test_grpcio.Server("perfc-test-server")


def set_health(srv, name, status):
    """perfc-test-server's Fail with code 0 and "health:NAME=STATUS" sets it."""
    srv.unary("/perfc.test.v1.TestService/Fail")(
        test_grpcio.echo_request(message="health:%s=%s" % (name, status)), timeout=10)


class HealthTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = start_server()

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def check(self, service):
        fn = self.srv.channel.unary_unary("/grpc.health.v1.Health/Check",
                                          request_serializer=HealthReq.SerializeToString,
                                          response_deserializer=HealthResp.FromString)
        return fn(HealthReq(service=service), timeout=10).status

    def watch(self, service, timeout=30):
        fn = self.srv.channel.unary_stream("/grpc.health.v1.Health/Watch",
                                           request_serializer=HealthReq.SerializeToString,
                                           response_deserializer=HealthResp.FromString)
        return fn(HealthReq(service=service), timeout=timeout)

    def test_check_server_service_and_unknown(self):
        self.assertEqual(self.check(""), SERVING)
        self.assertEqual(self.check(TEST_SVC), SERVING)
        with self.assertRaises(grpc.RpcError) as ctx:
            self.check("no.such.Service")
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.NOT_FOUND)
        self.assertIn("no.such.Service", ctx.exception.details())

    def test_watch_sees_changes(self):
        name = "watch.v1.Changing"
        set_health(self.srv, name, "SERVING")
        it = self.watch(name)
        self.assertEqual(next(it).status, SERVING)
        set_health(self.srv, name, "NOT_SERVING")
        self.assertEqual(next(it).status, NOT_SERVING)
        self.assertEqual(self.check(name), NOT_SERVING)
        set_health(self.srv, name, "SERVING")
        self.assertEqual(next(it).status, SERVING)
        it.cancel()

    def test_watch_unknown_service_stays_open(self):
        name = "watch.v1.Later"
        it = self.watch(name)
        self.assertEqual(next(it).status, SERVICE_UNKNOWN)
        set_health(self.srv, name, "NOT_SERVING")
        self.assertEqual(next(it).status, NOT_SERVING)
        set_health(self.srv, name, "CLEAR")
        self.assertEqual(next(it).status, SERVICE_UNKNOWN)
        it.cancel()

    def test_many_watchers_cancelled_leave_server_healthy(self):
        # Each open Watch holds a pool worker; the default pool has 4 per
        # core, so 3 fit on any machine.
        its = [self.watch("") for _ in range(3)]
        for it in its:
            self.assertEqual(next(it).status, SERVING)
        for it in its:
            it.cancel()
        self.assertEqual(self.check(""), SERVING)


class HealthShutdownTests(unittest.TestCase):
    def test_sigterm_reports_not_serving_and_ends_watch(self):
        srv = start_server()
        fn = srv.channel.unary_stream("/grpc.health.v1.Health/Watch",
                                      request_serializer=HealthReq.SerializeToString,
                                      response_deserializer=HealthResp.FromString)
        whole = fn(HealthReq(service=""), timeout=30)
        svc = fn(HealthReq(service=TEST_SVC), timeout=30)
        self.assertEqual(next(whole).status, SERVING)
        self.assertEqual(next(svc).status, SERVING)
        t0 = time.monotonic()
        srv.proc.terminate()
        self.assertEqual(next(whole).status, NOT_SERVING)
        self.assertEqual(next(svc).status, NOT_SERVING)
        with self.assertRaises(grpc.RpcError) as ctx:
            next(whole)
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.UNAVAILABLE)
        srv.channel.close()
        _, err = srv.proc.communicate(timeout=20)
        self.assertEqual(srv.proc.returncode, 0, err[-2000:])
        # The watches ended by themselves: no wait for the 5 s grace period.
        self.assertLess(time.monotonic() - t0, 4.5)


class ReflectionTests(unittest.TestCase):
    VERSION = "v1alpha"
    Req = cls("grpc.reflection.v1alpha.ServerReflectionRequest")
    Resp = cls("grpc.reflection.v1alpha.ServerReflectionResponse")

    @classmethod
    def setUpClass(cls):
        cls.srv = start_server()

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def ask(self, *requests):
        fn = self.srv.channel.stream_stream(
            "/grpc.reflection.%s.ServerReflection/ServerReflectionInfo" % self.VERSION,
            request_serializer=self.Req.SerializeToString,
            response_deserializer=self.Resp.FromString)
        out = list(fn(iter(requests), timeout=10))
        self.assertEqual(len(out), len(requests))
        for req, resp in zip(requests, out):
            self.assertEqual(resp.original_request, req)
        return out

    def files(self, resp):
        self.assertEqual(resp.WhichOneof("message_response"), "file_descriptor_response",
                         str(resp))
        return [descriptor_pb2.FileDescriptorProto.FromString(b)
                for b in resp.file_descriptor_response.file_descriptor_proto]

    def test_list_services(self):
        (resp,) = self.ask(self.Req(host="h", list_services=""))
        self.assertEqual(resp.valid_host, "h")
        names = [s.name for s in resp.list_services_response.service]
        for want in (TEST_SVC, "grpc.health.v1.Health",
                     "grpc.reflection.v1alpha.ServerReflection",
                     "grpc.reflection.v1.ServerReflection"):
            self.assertIn(want, names)
        (resp,) = self.ask(self.Req(file_containing_symbol="grpc.reflection.%s.ServerReflection"
                                    % self.VERSION))
        self.assertEqual(self.files(resp)[0].package, "grpc.reflection." + self.VERSION)

    def test_file_containing_symbol_loads_into_python(self):
        (resp,) = self.ask(self.Req(file_containing_symbol="perfc.test.v1.EchoRequest"))
        files = self.files(resp)
        self.assertEqual(files[0].name, "perfc/test/v1/test.proto")
        self.assertIn("EchoRequest", [m.name for m in files[0].message_type])
        names = [f.name for f in files]
        self.assertIn("perfc/options.proto", names)
        self.assertIn("google/protobuf/descriptor.proto", names)
        self.assertEqual(len(names), len(set(names)))
        # Load into a fresh pool, imports first: every import is in the answer.
        pool = descriptor_pool.DescriptorPool()
        pending, added = list(files), set()
        while pending:
            ready = [f for f in pending if all(d in added for d in f.dependency)]
            self.assertTrue(ready, "imports missing: %s" % [f.name for f in pending])
            for f in ready:
                pool.Add(f)
                added.add(f.name)
                pending.remove(f)
        msg = pool.FindMessageTypeByName("perfc.test.v1.EchoRequest")
        self.assertEqual(msg.fields_by_name["sleep_ms"].number, 2)
        svc = pool.FindServiceByName(TEST_SVC)
        self.assertEqual(svc.methods_by_name["Chat"].output_type.full_name,
                         "perfc.test.v1.EchoResponse")
        # And the message class works on the wire format.
        Echo = message_factory.MessageFactory(pool).GetPrototype(msg)
        self.assertEqual(Echo.FromString(test_grpcio.echo_request(b"ab", sleep_ms=7)).sleep_ms, 7)

    def test_symbols_of_every_kind(self):
        cases = {
            TEST_SVC: "perfc/test/v1/test.proto",
            TEST_SVC + ".Expand": "perfc/test/v1/test.proto",
            "grpc.health.v1.HealthCheckResponse.ServingStatus": "grpc/health/v1/health.proto",
            "grpc.health.v1.Health.Watch": "grpc/health/v1/health.proto",
            "perfc.CacheOptions": "perfc/options.proto",
            "google.protobuf.DescriptorProto.ExtensionRange": "google/protobuf/descriptor.proto",
        }
        reqs = [self.Req(file_containing_symbol=s) for s in cases]
        for (sym, file), resp in zip(cases.items(), self.ask(*reqs)):
            self.assertEqual(self.files(resp)[0].name, file, sym)

    def test_file_by_filename_and_unknowns(self):
        health, bad_file, bad_sym, good = self.ask(
            self.Req(file_by_filename="grpc/health/v1/health.proto"),
            self.Req(file_by_filename="no/such.proto"),
            self.Req(file_containing_symbol="perfc.test.v1.NoSuchThing"),
            self.Req(file_containing_symbol="perfc.test.v1.EchoResponse"))
        (f,) = self.files(health)
        self.assertEqual(f.package, "grpc.health.v1")
        self.assertEqual([s.name for s in f.service], ["Health"])
        for resp, text in ((bad_file, "no/such.proto"), (bad_sym, "perfc.test.v1.NoSuchThing")):
            self.assertEqual(resp.WhichOneof("message_response"), "error_response")
            self.assertEqual(resp.error_response.error_code, grpc.StatusCode.NOT_FOUND.value[0])
            self.assertIn(text, resp.error_response.error_message)
        self.assertEqual(self.files(good)[0].name, "perfc/test/v1/test.proto")

    def test_extensions(self):
        by_number, numbers = self.ask(
            self.Req(file_containing_extension={"containing_type": "google.protobuf.MethodOptions",
                                               "extension_number": 51001}),
            self.Req(all_extension_numbers_of_type="google.protobuf.MethodOptions"))
        self.assertEqual(self.files(by_number)[0].name, "perfc/options.proto")
        self.assertEqual(sorted(numbers.all_extension_numbers_response.extension_number),
                         [51001, 51002, 51003])


class ReflectionV1Tests(ReflectionTests):
    """The same questions on grpc.reflection.v1 (grpcurl 1.8.8+, grpc_cli and
    grpc-go's clients ask it first)."""
    VERSION = "v1"
    Req = cls("grpc.reflection.v1.ServerReflectionRequest")
    Resp = cls("grpc.reflection.v1.ServerReflectionResponse")


if __name__ == "__main__":
    BIN = sys.argv.pop(1)
    unittest.main(verbosity=2)
