#!/usr/bin/python3
"""bench/tools/grpc_check.py HOST:PORT PAYLOAD_BYTES — an independent gRPC
client's view of one echo server, run by bench/run before and after every
measured load.

Room: bench tools. h2load only sees HTTP/2 (every gRPC error is still a 200),
so this checks what h2load cannot: that /bench.v1.Echo/Unary ends with
grpc-status OK and returns the request bytes, and that an unknown method ends
with UNIMPLEMENTED promptly instead of hanging. It uses Debian's
python3-grpcio (/usr/bin/python3) with raw bytes, so it needs no generated
code: EchoRequest and EchoResponse are both `bytes payload = 1`.

Exit status 0 when every check passed; 1 with a reason on stderr otherwise.
"""
import sys

import grpc


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    target, size = sys.argv[1], int(sys.argv[2])
    payload = bytes(i & 0xFF for i in range(size))
    # field 1, wire type 2 (length-delimited); sizes here stay below 128.
    request = b"\x0a" + bytes([size]) + payload
    with grpc.insecure_channel(target) as ch:
        unary = ch.unary_unary("/bench.v1.Echo/Unary")
        resp, call = unary.with_call(request, timeout=5)
        if call.code() != grpc.StatusCode.OK:
            print(f"grpc_check: Unary ended {call.code()}", file=sys.stderr)
            return 1
        if resp != request:
            print(f"grpc_check: Unary echoed {resp!r}, sent {request!r}",
                  file=sys.stderr)
            return 1
        try:
            ch.unary_unary("/bench.v1.Echo/NoSuchMethod")(request, timeout=5)
            print("grpc_check: unknown method succeeded", file=sys.stderr)
            return 1
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNIMPLEMENTED:
                print(f"grpc_check: unknown method ended {e.code()}, "
                      "want UNIMPLEMENTED", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
