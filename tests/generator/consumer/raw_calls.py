#!/usr/bin/python3
"""raw_calls.py HOST:PORT SERVICE — what grpc_cli or grpcurl would ask a
freshly built perfc server, with python3-grpcio and hand-encoded bytes (no
generated stubs, so nothing of perfc's is trusted):

- grpc.health.v1.Health/Check for "" answers SERVING (bytes 08 01);
- grpc.reflection.v1 and v1alpha ServerReflectionInfo list_services both
  name SERVICE, grpc.health.v1.Health and both reflection services.

Run by tests/generator/run.sh (mode install). Exits non-zero on a mismatch.
"""
import sys

import grpc

ident = lambda b: b  # noqa: E731  (bytes in, bytes out)


def list_services(ch, version):
    call = ch.stream_stream(
        "/grpc.reflection.%s.ServerReflection/ServerReflectionInfo" % version,
        request_serializer=ident, response_deserializer=ident)
    # ServerReflectionRequest{list_services: ""}: field 7, length 0.
    replies = list(call(iter([b"\x3a\x00"]), timeout=5))
    assert len(replies) == 1, replies
    return replies[0]


def main():
    target, service = sys.argv[1], sys.argv[2]
    with grpc.insecure_channel(target) as ch:
        check = ch.unary_unary("/grpc.health.v1.Health/Check",
                               request_serializer=ident,
                               response_deserializer=ident)
        got = check(b"", timeout=5)
        assert got == b"\x08\x01", "health: %r" % got
        print("health: SERVING")
        for version in ("v1", "v1alpha"):
            reply = list_services(ch, version)
            for name in (service, "grpc.health.v1.Health",
                         "grpc.reflection.v1.ServerReflection",
                         "grpc.reflection.v1alpha.ServerReflection"):
                assert name.encode() in reply, "%s: %s missing in %r" % (
                    version, name, reply)
            print("reflection %s: lists %s" % (version, service))


if __name__ == "__main__":
    main()
