#!/usr/bin/env python3
"""bench/tools/report.py — the numbers side of bench/run (stdlib only).

Room: bench tools. bench/run drives servers and h2load; this file turns what
they leave behind into numbers:

  report.py latency H2LOAD_LOG [PCT...]
      h2load --log-file lines are "start_us<TAB>http_status<TAB>duration_us";
      prints "p50_us p99_us max_us" (nearest-rank percentiles), or with
      PCT arguments (e.g. 50 99 99.9) those percentiles and then max_us.

  report.py summary RUNS_TSV OUT_MD META_FILE [MAX_OTHERS]
      RUNS_TSV has one line per measured run (header line first, columns as
      bench/run writes them). Prints the per-server medians and ratios, and
      writes them with META_FILE's lines (machine, flags) as a markdown file.
      A run is clean when others used at most MAX_OTHERS (default 0.10) of
      the server's CPUs and of h2load's.

Ratios are taken per round (a server's run divided by the reference's run in
the same round, the two measured minutes apart) and then the median of those
is reported, so machine-wide drift between rounds cancels out as far as it
can. A round in which either side failed contributes no ratio.
"""
import csv
import math
import os
import statistics
import sys

ORDER = ["ccore", "perfc", "perfc-h2", "perfc-h2m", "cpp", "go", "go-plain"]
LABEL = {
    "ccore": "C core ceiling (ccore-echo-server)",
    "perfc": "perfc, C core transport (perfc-echo-server --transport core)",
    # What ran as perfc-h2 (bench/servers.sh decides) comes from bench/run.
    "perfc-h2": os.environ.get("PERFC_H2_LABEL") or "perfc, h2 transport",
    "perfc-h2m": "perfc + metrics, h2 transport (--transport h2 --metrics-listen)",
    "cpp": "gRPC C++ callback (cpp-echo-server)",
    "go": "grpc-go + prometheus (go-echo-server)",
    "go-plain": "grpc-go, no metrics (go-echo-server)",
}


def latency(path, pcts=(50, 99)):
    durs = []
    with open(path) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) >= 3:
                durs.append(int(parts[2]))
    if not durs:
        print(" ".join(["0"] * (len(pcts) + 1)))
        return
    durs.sort()

    def rank(p):
        # nearest rank: the smallest value with at least p% at or below it
        k = max(1, math.ceil(len(durs) * p / 100 - 1e-9))
        return durs[int(k) - 1]

    print(" ".join(str(rank(p)) for p in pcts), durs[-1])


def fmt(x, nd=0):
    if x is None:
        return "—"
    return f"{x:,.{nd}f}"


def summary(runs_tsv, out_md, meta_file, max_others):
    with open(runs_tsv) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    ok = [r for r in rows if r["ok"] == "1"]
    # A clean run had its server's and h2load's CPUs to itself (others <=
    # max_others on both sides).
    clean = [r for r in ok if float(r["others"]) <= max_others
             and float(r.get("cli_others") or 0) <= max_others]
    servers = [s for s in ORDER if any(r["server"] == s for r in rows)]
    servers += sorted({r["server"] for r in rows} - set(servers))

    def med(runs, server, col):
        v = [float(r[col]) for r in runs if r["server"] == server]
        return statistics.median(v) if v else None

    def ratio(runs, server, ref, col):
        by_round = {}
        for r in runs:
            by_round.setdefault(r["round"], {})[r["server"]] = float(r[col])
        v = [d[server] / d[ref] for d in by_round.values()
             if server in d and ref in d and d[ref] > 0]
        return statistics.median(v) if v else None

    has_cli = bool(ok) and "cli_cpu_us_per_rpc" in ok[0]
    # Both grpc-go peers are references: perfc without metrics is compared
    # with grpc-go without them, perfc + metrics with go-grpc-prometheus.
    go_refs = [g for g in ("go-plain", "go") if g in servers]
    head = ["server", "runs clean/ok/all", "req/s", "p50 ms", "p99 ms",
            "server CPU µs/RPC", "server used"]
    if has_cli:
        head += ["h2load CPU µs/RPC", "h2load used"]
    head += ["others on server CPUs", "others on h2load CPUs",
             "req/s ÷ C++", "CPU/RPC ÷ C++", "req/s ÷ C core", "CPU/RPC ÷ C core"]
    for g in go_refs:
        head += [f"req/s ÷ {g}", f"CPU/RPC ÷ {g}"]
    table = []
    for s in servers:
        n_all = sum(1 for r in rows if r["server"] == s)
        n_ok = sum(1 for r in ok if r["server"] == s)
        n_clean = sum(1 for r in clean if r["server"] == s)
        # Throughput and latency measure the neighbours when the server's
        # core was shared, so they come from clean runs (all ok runs, marked
        # with *, only if a server has none). CPU per RPC is the server's own
        # time and barely moves under sharing, so every ok run counts.
        tr = clean if n_clean else ok
        mark = "" if n_clean else "*"
        p50, p99 = med(tr, s, "p50_us"), med(tr, s, "p99_us")
        busy = med(tr, s, "busy")
        others = med(ok, s, "others")
        cli_others = med(ok, s, "cli_others") if ok and "cli_others" in ok[0] else None

        def m(x):
            return x + mark if x != "—" else x

        row = [
            LABEL.get(s, s), f"{n_clean}/{n_ok}/{n_all}", m(fmt(med(tr, s, "rps"))),
            m(fmt(p50 / 1000 if p50 is not None else None, 2)),
            m(fmt(p99 / 1000 if p99 is not None else None, 2)),
            fmt(med(ok, s, "cpu_us_per_rpc"), 2),
            f"{busy * 100:.0f}%{mark}" if busy is not None else "—",
        ]
        if has_cli:
            # h2load's own CPU per call and share of its core: near 100 %
            # means the load generator, not the server, set the rate.
            cb = med(ok, s, "cli_busy")
            row += [fmt(med(ok, s, "cli_cpu_us_per_rpc"), 2),
                    f"{cb * 100:.0f}%" if cb is not None else "—"]
        row += [
            f"{others * 100:.0f}%" if others is not None else "—",
            f"{cli_others * 100:.0f}%" if cli_others is not None else "—",
            fmt(ratio(clean, s, "cpp", "rps"), 2),
            fmt(ratio(ok, s, "cpp", "cpu_us_per_rpc"), 2),
            fmt(ratio(clean, s, "ccore", "rps"), 2),
            fmt(ratio(ok, s, "ccore", "cpu_us_per_rpc"), 2),
        ]
        for g in go_refs:
            row += [fmt(ratio(clean, s, g, "rps"), 2),
                    fmt(ratio(ok, s, g, "cpu_us_per_rpc"), 2)]
        table.append(row)

    # Plain text for the terminal.
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    print(line(head))
    for r in table:
        print(line(r))

    md = ["| " + " | ".join(head) + " |",
          "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    md += ["| " + " | ".join(r) + " |" for r in table]
    with open(meta_file) as f:
        meta = f.read().rstrip("\n")
    with open(out_md, "w") as f:
        f.write("# Echo benchmark results\n\n")
        f.write("Written by bench/run; method in docs/benchmarks.md.\n\n")
        f.write(meta + "\n\n")
        f.write("Medians over the rounds; ratios are medians of per-round "
                "ratios (same round, servers alternated). req/s, latency and "
                "their ratios use clean runs only (others on the server's "
                f"and on h2load's CPUs <= {max_others * 100:.0f}%; * = no "
                "clean run, all ok "
                "runs used); CPU per RPC uses every ok run.\n\n")
        f.write("\n".join(md) + "\n\n")
        f.write("## Every run\n\n")
        cols = list(rows[0].keys()) if rows else []
        f.write("| " + " | ".join(cols) + " |\n")
        f.write("|" + "|".join(["---"] * len(cols)) + "|\n")
        for r in rows:
            f.write("| " + " | ".join(str(r.get(c) or "") for c in cols)
                    + " |\n")


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "latency":
        latency(sys.argv[2], [float(p) for p in sys.argv[3:]] or (50, 99))
    elif len(sys.argv) in (5, 6) and sys.argv[1] == "summary":
        summary(sys.argv[2], sys.argv[3], sys.argv[4],
                float(sys.argv[5]) if len(sys.argv) == 6 else 0.10)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
