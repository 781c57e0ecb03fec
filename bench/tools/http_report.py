#!/usr/bin/env python3
"""http_report.py RUNS_TSV — the table of bench/run-http (stdlib only).

Per configuration: runs that passed every check, medians of req/s, latency
and server CPU per request over the rounds, and the body size. Then the
ratios of issue 18 item 11, each taken per round (a run divided by the
other side's run of the same round, then the median, as
bench/tools/report.py does): perfc's JSON GetUser ÷ grpc-gateway's on the
same protocol (target at least 3x req/s) and perfc's JSON GetUser ÷ perfc's
gRPC GetUser, both from L1 (target at least 0.7x), with server CPU per
request beside each. floor-h1, a server that only writes a canned answer
per request under json-h1's load, gives the ceiling of that load shape:
json-h1 ÷ floor-h1 is the share of the ceiling perfc reaches, floor-h1 ÷
grpc-l1 the best JSON-over-HTTP/1.1 ÷ gRPC ratio any server could reach
here.
"""
import csv
import statistics
import sys

ORDER = ["grpc-l1", "grpc-m1", "json-h1", "json-h1p", "json-h2", "floor-h1", "gw-h1", "gw-h1p", "gw-h2", "go-l1"]
LABEL = {
    "grpc-l1": "perfc gRPC GetUser (h2load, L1)",
    "grpc-m1": "perfc gRPC GetUser, one call in flight per connection",
    "json-h1": "perfc JSON GET /v1/users/1, HTTP/1.1",
    "json-h1p": "perfc JSON GET /v1/users/1, HTTP/1.1 pipelined",
    "json-h2": "perfc JSON GET /v1/users/1, HTTP/2",
    "floor-h1": "h1-floor: a canned answer per request, HTTP/1.1 (json-h1's load)",
    "gw-h1": "grpc-gateway + Go peer, HTTP/1.1",
    "gw-h1p": "grpc-gateway + Go peer, HTTP/1.1 pipelined",
    "gw-h2": "grpc-gateway + Go peer, HTTP/2 (h2c)",
    "go-l1": "Go peer gRPC GetUser (L1)",
}
GW_TARGET = 3.0
GRPC_TARGET = 0.7


def ratio(rows, ref_rows, col):
    refs = {r["round"]: r for r in ref_rows}
    rs = [float(r[col]) / float(refs[r["round"]][col]) for r in rows
          if r["round"] in refs and float(refs[r["round"]][col])]
    return statistics.median(rs) if rs else None


def fmt(x, spec):
    return "—" if x is None else format(x, spec)


def main():
    rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
    by = {}
    for r in rows:
        by.setdefault(r["server"], []).append(r)
    good = {k: [r for r in v if r["ok"] == "1"] for k, v in by.items()}
    print("| configuration | runs ok | req/s | p50 µs | p99 µs | server CPU µs/req | body B |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for k in [c for c in ORDER if c in by] + [c for c in by if c not in ORDER]:
        ok = good[k]
        med = {c: statistics.median(float(r[c]) for r in ok) if ok else None
               for c in ("rps", "p50_us", "p99_us", "server_cpu_us_per_rpc")}
        body = ok[0]["body_bytes"] if ok else "—"
        print("| " + " | ".join([
            LABEL.get(k, k), f"{len(ok)}/{len(by[k])}", fmt(med["rps"], ",.0f"),
            fmt(med["p50_us"], ",.0f"), fmt(med["p99_us"], ",.0f"),
            fmt(med["server_cpu_us_per_rpc"], ".2f"), body]) + " |")
    print()
    pairs = [("json-h1", "gw-h1", GW_TARGET, "perfc JSON ÷ grpc-gateway, HTTP/1.1"),
             ("json-h1p", "gw-h1p", GW_TARGET, "perfc JSON ÷ grpc-gateway, HTTP/1.1 pipelined"),
             ("json-h2", "gw-h2", GW_TARGET, "perfc JSON ÷ grpc-gateway, HTTP/2"),
             ("json-h1", "grpc-l1", GRPC_TARGET, "perfc JSON HTTP/1.1 ÷ perfc gRPC"),
             ("json-h1", "grpc-m1", GRPC_TARGET,
              "perfc JSON HTTP/1.1 ÷ perfc gRPC, both one request in flight per connection"),
             ("json-h1", "floor-h1", None,
              "perfc JSON HTTP/1.1 ÷ h1-floor (the share of this load shape's ceiling)"),
             ("floor-h1", "grpc-l1", None,
              "h1-floor ÷ perfc gRPC (the best HTTP/1.1-without-pipelining ratio any server reaches here)"),
             ("json-h1p", "grpc-l1", GRPC_TARGET, "perfc JSON HTTP/1.1 pipelined ÷ perfc gRPC"),
             ("json-h2", "grpc-l1", GRPC_TARGET, "perfc JSON HTTP/2 ÷ perfc gRPC"),
             ("gw-h2", "go-l1", None, "grpc-gateway HTTP/2 ÷ Go peer gRPC"),
             ("grpc-l1", "go-l1", None, "perfc gRPC ÷ Go peer gRPC")]
    for a, b, target, what in pairs:
        if not good.get(a) or not good.get(b):
            continue
        x = ratio(good[a], good[b], "rps")
        xc = ratio(good[a], good[b], "server_cpu_us_per_rpc")
        line = f"- {what}: {fmt(x, '.2f')}x req/s, {fmt(xc, '.2f')}x server CPU per request"
        if target is not None:
            line += (f"; target ≥ {target}x: "
                     f"{'met' if x is not None and x >= target else 'missed'}")
        print(line + ".")
    for r in rows:
        if r["ok"] != "1":
            print(f"- round {r['round']} {r['server']} failed: {r['note']}")


if __name__ == "__main__":
    main()
