#!/usr/bin/python3
"""bystander.py — the well-behaved client beside an attack.

Room: tests/adversarial. A separate process (its own GIL, its own gRPC
core), so the attacker's python loop cannot slow it down and make the
server look worse than it is. It calls bench.v1.Echo/Unary over one
python3-grpcio channel every INTERVAL_MS, each call with a deadline of
DEADLINE_MS, until SIGTERM (or MAX_S seconds), then prints one JSON line:
calls, ok, failures by code, latency p50/max in ms.

Usage: bystander.py TARGET DEADLINE_MS INTERVAL_MS MAX_S
Prints "ready" once a first call succeeded (within 10 s), so the attack
starts against a connected client.
"""
import json
import signal
import sys
import time

import grpc

REQ = b"\x0a\x09bystander"  # EchoRequest{payload: "bystander"}


def main():
    target, deadline_ms, interval_ms, max_s = (sys.argv[1], int(sys.argv[2]),
                                               int(sys.argv[3]), float(sys.argv[4]))
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    ch = grpc.insecure_channel(target)
    call = ch.unary_unary("/bench.v1.Echo/Unary")
    t_end = time.monotonic() + 10
    while True:
        try:
            call(REQ, timeout=2)
            break
        except grpc.RpcError as e:
            if time.monotonic() > t_end:
                print(json.dumps({"error": "no first call: %s" % e.code().name}), flush=True)
                return 1
            time.sleep(0.1)
    print("ready", flush=True)
    lat, fails, calls = [], {}, 0
    t_end = time.monotonic() + max_s
    while not stop and time.monotonic() < t_end:
        t0 = time.monotonic()
        calls += 1
        try:
            resp = call(REQ, timeout=deadline_ms / 1000.0)
            if resp != REQ:
                fails["WRONG_REPLY"] = fails.get("WRONG_REPLY", 0) + 1
            else:
                lat.append((time.monotonic() - t0) * 1000)
        except grpc.RpcError as e:
            name = e.code().name
            fails[name] = fails.get(name, 0) + 1
        left = interval_ms / 1000.0 - (time.monotonic() - t0)
        if left > 0 and not stop:
            time.sleep(left)
    lat.sort()
    print(json.dumps({
        "calls": calls, "ok": len(lat), "failed": fails,
        "p50_ms": round(lat[len(lat) // 2], 1) if lat else None,
        "max_ms": round(lat[-1], 1) if lat else None,
    }), flush=True)
    ch.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
