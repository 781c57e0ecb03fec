#!/usr/bin/python3
"""cached_calls.py GRPC_ADDR METRICS_ADDR — calls app.v1.CachedGreeter/Greet
three times with the same name and once with another, with python3-grpcio
and hand-encoded bytes, then reads /metrics: the scaffolded main's cache
must have answered the repeats (perfc_cache_loads_total{cache="cached"} 2:
one load per distinct name; hits 2).

Run by tests/generator/run.sh (mode install), which also counts the
handler's own log lines. Exits non-zero on a mismatch.
"""
import re
import sys
import urllib.request

import grpc

ident = lambda b: b  # noqa: E731  (bytes in, bytes out)


def enc(name):
    b = name.encode()
    return b"\x0a" + bytes([len(b)]) + b  # GreetRequest{name}


def main():
    target, metrics = sys.argv[1], sys.argv[2]
    with grpc.insecure_channel(target) as ch:
        greet = ch.unary_unary("/app.v1.CachedGreeter/Greet",
                               request_serializer=ident,
                               response_deserializer=ident)
        want = b"\x0a\x09hello ann"  # GreetReply{message: "hello ann"}
        for _ in range(3):
            got = greet(enc("ann"), timeout=5)
            assert got == want, "reply %r" % got
        got = greet(enc("bob"), timeout=5)
        assert got == b"\x0a\x09hello bob", "reply %r" % got
    text = urllib.request.urlopen("http://%s/metrics" % metrics,
                                  timeout=5).read().decode()

    def value(name):
        m = re.search(r'^%s\{cache="cached"\} (\S+)$' % name, text, re.M)
        assert m, "%s missing from /metrics" % name
        return float(m.group(1))

    loads = value("perfc_cache_loads_total")
    hits = value("perfc_cache_l1_hits_total") + value("perfc_cache_l2_hits_total")
    assert loads == 2, "loads %s: the cache did not answer repeats" % loads
    assert hits == 2, "hits %s" % hits
    print("cached: 4 calls, 2 loads, 2 hits")


if __name__ == "__main__":
    main()
