#!/usr/bin/python3
"""The demo's independent client: python3-grpcio calls perfc-echo-server.

usage: demo-grpcio-client.py HOST:PORT MESSAGE
Prints what it sent and what came back, then shows an error status.
"""
import sys

import grpc


def encode_bytes_field(data):
    # EchoRequest{bytes payload = 1}: tag 0x0a, varint length, bytes.
    n, length = len(data), bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        length.append(b | (0x80 if n else 0))
        if not n:
            break
    return b"\x0a" + bytes(length) + data


def main():
    target, message = sys.argv[1], sys.argv[2].encode()
    with grpc.insecure_channel(target) as ch:
        unary = ch.unary_unary("/bench.v1.Echo/Unary")
        reply = unary(encode_bytes_field(message), timeout=5)
        payload = reply[2:] if len(reply) > 2 else b""
        print("  python3-grpcio: sent %r, got back %r (%s)" %
              (message.decode(), payload.decode(), "OK" if payload == message else "MISMATCH"))
        try:
            ch.unary_unary("/bench.v1.Echo/DoesNotExist")(b"", timeout=5)
        except grpc.RpcError as e:
            print("  python3-grpcio: unknown method -> %s: %s" % (e.code().name, e.details()))
        return 0 if payload == message else 1


if __name__ == "__main__":
    sys.exit(main())
