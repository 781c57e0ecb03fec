#!/usr/bin/env python3
"""users_report.py RUNS_TSV — the table of bench/run-users (stdlib only).

Per configuration: runs that passed every check, medians of req/s, latency
and server CPU per call over the rounds, where the answers came from (the
cache and pool counters of the median run), and ratios taken per round (a
run divided by the reference's run of the same round, then the median of
those, as bench/tools/report.py does): to echo for the gRPC
configurations, GetUser from Redis to redis-benchmark GET, GetUser from
PostgreSQL to pgbench. Ends with the issue's target, GetUser from L1 at
least 0.95x echo req/s (issue 16; issue 6 asked 0.85x), met or missed, and the comparison with the Go peer
(go-users-server) per path: perfc ÷ Go req/s and server CPU per call, per
round then the median, with issue 16's targets (Redis and PostgreSQL at
least 3x the Go peer's req/s; PostgreSQL at least 0.8x pgbench).
"""
import csv
import statistics
import sys

ORDER = ["echo", "echo-metrics", "echo-pool", "l1", "go-l1", "l1-noage", "l1-inline", "echo-pool-cl", "redis",
         "redis-pool", "redis-spread", "redis-cluster", "redis-cluster-spread", "go-redis", "pg", "pg-spread", "go-pg",
         "redis-benchmark", "pgbench"]
LABEL = {
    "echo": "echo (perfc-echo-server)",
    "echo-metrics": "echo with the metrics interceptor and /metrics",
    "echo-pool": "echo on the worker pool",
    "l1": "GetUser, L1 hits",
    "l1-noage": "GetUser, L1 hits, no max_connection_age",
    "l1-inline": "GetUser, L1 hits, inline executor",
    "echo-pool-cl": "echo on the worker pool, 16 closed-loop clients",
    "redis": "GetUser, Redis hits (L1 off)",
    "redis-pool": "GetUser, Redis hits (L1 off), Redis read on the pool",
    "pg": "GetUser, PostgreSQL (no cache)",
    "redis-spread": "GetUser, Redis hits (L1 off), perfc-load spread ids",
    "redis-cluster": "GetUser, Redis Cluster hits (3 masters, L1 off)",
    "redis-cluster-spread": "GetUser, Redis Cluster hits (3 masters, L1 off), perfc-load spread ids",
    "pg-spread": "GetUser, PostgreSQL (no cache), perfc-load spread ids",
    "go-l1": "Go peer GetUser, L1 hits",
    "go-redis": "Go peer GetUser, Redis hits (no L1), perfc-load spread ids",
    "go-pg": "Go peer GetUser, PostgreSQL (no cache), perfc-load spread ids",
    "redis-benchmark": "redis-benchmark -t get",
    "pgbench": "pgbench -M prepared (users point select)",
}
# Which reference each row's extra ratio is taken against.
PEER = {"redis": "redis-benchmark", "redis-pool": "redis-benchmark", "pg": "pgbench",
        "redis-spread": "redis-benchmark", "pg-spread": "pgbench",
        "go-redis": "redis-benchmark", "go-pg": "pgbench"}
# perfc against the Go peer, path by path: the same load on both sides.
GO_PAIRS = [("L1", "l1", "go-l1"), ("Redis", "redis-spread", "go-redis"),
            ("PostgreSQL", "pg-spread", "go-pg")]
GO_TARGET = 3.0
PGBENCH_TARGET = 0.8
NOT_GRPC = ("redis-benchmark", "pgbench")
# Loads shaped like echo's (one h2load, many streams per connection); the
# redis configuration is 16 closed-loop clients (bench/run-users says why),
# so a ratio of it to echo would compare two load shapes.
SAME_SHAPE = ("echo", "echo-metrics", "echo-pool", "l1", "l1-noage", "l1-inline", "pg", "go-l1")
TARGET = 0.95


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
    head = ["configuration", "runs ok", "req/s", "× echo", "p50 µs", "p99 µs",
            "server CPU µs/call", "CPU × echo", "answers (median run): L1 / Redis / loads / shared / SELECTs",
            "× peer"]
    print("| " + " | ".join(head) + " |")
    print("|---|" + "---:|" * 8 + "---:|")
    for k in [c for c in ORDER if c in by] + [c for c in by if c not in ORDER]:
        ok = good[k]
        med = {c: statistics.median(float(r[c]) for r in ok) if ok else None
               for c in ("rps", "p50_us", "p99_us", "server_cpu_us_per_rpc")}
        grpc = k not in NOT_GRPC
        same = k in SAME_SHAPE
        x_echo = ratio(ok, good.get("echo", []), "rps") if same else None
        x_cpu = ratio(ok, good.get("echo", []), "server_cpu_us_per_rpc") if same else None
        answers = "—"
        if ok and not k.startswith("echo") and grpc:
            mid = sorted(ok, key=lambda r: float(r["rps"]))[len(ok) // 2]
            answers = " / ".join(f"{int(mid[c]):,}" for c in
                                 ("l1_hits", "l2_hits", "loads", "shared", "pg_queries"))
            answers += f" of {int(mid['calls']):,}"
        x_peer = ratio(ok, good.get(PEER[k], []), "rps") if k in PEER else None
        print("| " + " | ".join([
            LABEL.get(k, k), f"{len(ok)}/{len(by[k])}", fmt(med["rps"], ",.0f"),
            fmt(x_echo, ".2f"), fmt(med["p50_us"], ",.0f"), fmt(med["p99_us"], ",.0f"),
            fmt(med["server_cpu_us_per_rpc"], ".2f") if grpc else "—",
            fmt(x_cpu, ".2f"), answers,
            (f"{x_peer:.2f} × {PEER[k]}" if x_peer is not None else "—")]) + " |")
    x = ratio(good.get("l1", []), good.get("echo", []), "rps")
    print()
    if x is None:
        print("Target (GetUser from L1 ≥ 0.95x echo req/s): not measured.")
    else:
        per = sorted(ratio([r], good.get("echo", []), "rps") or 0 for r in good.get("l1", []))
        print(f"Target (GetUser from L1 ≥ {TARGET}x echo req/s): "
              f"{'met' if x >= TARGET else 'missed'}, {x:.2f}x "
              f"(per round {', '.join(f'{v:.2f}' for v in per)}).")
    # The same comparison with both sides on one executor: what the cache
    # path costs apart from the hand-off to the worker pool.
    for a, b in (("l1", "echo-metrics"), ("l1", "echo-pool"), ("l1-inline", "echo"), ("l1", "l1-noage"),
                 ("redis", "echo-pool-cl"), ("redis", "redis-pool"),
                 ("redis-cluster", "redis"), ("redis-cluster-spread", "redis-spread")):
        x = ratio(good.get(a, []), good.get(b, []), "rps")
        if x is not None:
            print(f"- {LABEL[a]} ÷ {LABEL[b]}: {x:.2f}x req/s, "
                  f"{ratio(good[a], good[b], 'server_cpu_us_per_rpc'):.2f}x server CPU per call.")
    go_table(good)
    failed = [r for r in rows if r["ok"] != "1"]
    for r in failed:
        print(f"- round {r['round']} {r['server']} failed: {r['note']}")


def med(rows, col):
    vals = [float(r[col]) for r in rows if r.get(col) not in (None, "")]
    return statistics.median(vals) if vals else None


def go_table(good):
    """perfc ÷ the Go peer, path by path (ratios per round, then the median)."""
    pairs = [(p, a, b) for p, a, b in GO_PAIRS if good.get(a) and good.get(b)]
    if not pairs:
        return
    print()
    print("GetUser against the Go peer (go-users-server), same load on both sides:")
    print()
    print("| served from | perfc req/s | Go req/s | perfc ÷ Go req/s | server CPU µs/call perfc / Go "
          "| CPU perfc ÷ Go | load CPU µs/call perfc / Go |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for path, a, b in pairs:
        x = ratio(good[a], good[b], "rps")
        xc = ratio(good[a], good[b], "server_cpu_us_per_rpc")
        la, lb = med(good[a], "load_cpu_us_per_call"), med(good[b], "load_cpu_us_per_call")
        load = "—" if not la or not lb else f"{la:.2f} / {lb:.2f}"
        print(f"| {path} ({a} : {b}) | {med(good[a], 'rps'):,.0f} | {med(good[b], 'rps'):,.0f} "
              f"| {fmt(x, '.2f')} | {med(good[a], 'server_cpu_us_per_rpc'):.2f} / "
              f"{med(good[b], 'server_cpu_us_per_rpc'):.2f} | {fmt(xc, '.2f')} | {load} |")
    print()
    for path, a, b in pairs:
        if path == "L1":
            continue
        x = ratio(good[a], good[b], "rps")
        print(f"- Target (GetUser from {path} ≥ {GO_TARGET:.0f}x the Go peer's req/s): "
              f"{'met' if x is not None and x >= GO_TARGET else 'missed'}, {fmt(x, '.2f')}x.")
    if good.get("pg-spread") and good.get("pgbench"):
        x = ratio(good["pg-spread"], good["pgbench"], "rps")
        print(f"- Target (GetUser from PostgreSQL ≥ {PGBENCH_TARGET}x pgbench -S -M prepared): "
              f"{'met' if x is not None and x >= PGBENCH_TARGET else 'missed'}, {fmt(x, '.2f')}x.")


if __name__ == "__main__":
    main()
