#!/usr/bin/python3
"""bidi_check.py HOST:PORT [N] — independent check of bench.v1.Echo/Stream
with Debian's python3-grpcio (run with /usr/bin/python3): N (default 100)
distinct EchoRequests over one bidi stream must come back as N identical
EchoResponses, in order, with status OK. Exit 0 or 1. Used by
bench/run-streaming before each load, so a server whose Stream is wrong
fails the run instead of being measured."""
import sys

import grpc


def main():
    target = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    # EchoRequest and EchoResponse have the same wire form: field 1, bytes.
    reqs = [b"\x0a\x40" + bytes([i & 0xFF]) * 64 for i in range(n)]
    with grpc.insecure_channel(target) as ch:
        call = ch.stream_stream("/bench.v1.Echo/Stream")
        try:
            out = list(call(iter(reqs), timeout=10))
        except grpc.RpcError as e:
            print(f"bidi_check: {target}: {e.code()} {e.details()}", file=sys.stderr)
            return 1
    if out != reqs:
        print(f"bidi_check: {target}: {len(out)} responses, not the {n} echoes",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
