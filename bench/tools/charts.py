#!/usr/bin/python3
"""charts.py BUILD OUT_DIR [--data DATA_DIR] — SVG charts of the benchmark
runs, drawn from the scripts' own raw output, so `make bench` on a fresh
clone redraws them:

  BUILD/bench/runs.tsv            (bench/run)          -> unary-rps.svg, unary-cpu.svg
  BUILD/bench-more/latency.tsv    (bench/run-latency)  -> latency.svg
  BUILD/bench-more/streaming.tsv  (bench/run-streaming) -> streaming.svg
  BUILD/bench-more/idle.tsv       (bench/run-idle)     -> idle.svg

Each bar is the median over the rounds of a server's successful runs; the
whisker spans the lowest to the highest round (the spread a reader should
weigh single numbers against). A missing input is skipped with a note.
With --data, the inputs drawn are copied to DATA_DIR in the same layout
(DATA_DIR/bench/runs.tsv, ...), so the committed charts keep the runs they
show and `charts.py DATA_DIR OUT_DIR` redraws them without a build.

Needs python3-matplotlib (Debian; scripts/bootstrap --bench), run with
/usr/bin/python3. Output is deterministic for the same input (fixed SVG
ids, no date).

Room: bench tools.
"""
import csv
import os
import shutil
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

plt.rcParams["svg.hashsalt"] = "perfc-bench"
plt.rcParams["font.size"] = 9

# Server names (bench/servers.sh) in the order charts show them.
ORDER = ["perfc-h2", "perfc-h2m", "perfc", "perfc-m", "ccore", "cpp", "cpp-full", "go-plain", "go",
         "perfc-bare"]
SHORT = {
    "perfc-h2": "perfc h2",
    "perfc-h2m": "perfc h2 + metrics",
    "perfc": "perfc (C core)",
    "perfc-m": "perfc + metrics",
    "ccore": "C core ceiling",
    "cpp": "gRPC C++",
    "cpp-full": "gRPC C++ full",
    "go-plain": "grpc-go",
    "go": "grpc-go + prom",
    "perfc-bare": "perfc bare",
}
COLOR = {"perfc-h2": "#1f6fb4", "perfc-h2m": "#3d85c6", "perfc": "#6fa8dc", "perfc-m": "#9fc5e8",
         "perfc-bare": "#9fc5e8", "ccore": "#999999", "cpp": "#e69138",
         "cpp-full": "#f6b26b", "go-plain": "#38a169", "go": "#93c47d"}


def rows_of(path):
    with open(path) as f:
        return list(csv.DictReader(f, delimiter="\t"))


def labels_of(build):
    """bench/run writes what each name ran (perfc-h2 differs by build)."""
    path = os.path.join(build, "bench", "labels.tsv")
    short = dict(SHORT)
    if os.path.exists(path):
        for r in rows_of(path):
            if r["server"] == "perfc-h2" and "transport only" in r["label"]:
                short["perfc-h2"] = "perfc h2\n(transport only)"
    return short


def order(servers):
    known = [s for s in ORDER if s in servers]
    return known + sorted(set(servers) - set(known))


def spread(values):
    m = statistics.median(values)
    return m, m - min(values), max(values) - m


def bars(ax, names, values, short, fmt, unit):
    """One bar per server: median, whiskers min..max over rounds."""
    meds, lo, hi = [], [], []
    for n in names:
        m, a, b = spread(values[n])
        meds.append(m)
        lo.append(a)
        hi.append(b)
    x = range(len(names))
    ax.bar(x, meds, yerr=[lo, hi], capsize=4, color=[COLOR.get(n, "#b4a7d6") for n in names],
           error_kw={"elinewidth": 1, "ecolor": "#333333"})
    ax.set_xticks(list(x), [short.get(n, n) for n in names], rotation=0)
    ax.set_ylabel(unit)
    ax.grid(axis="y", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    top = max(m + h for m, h in zip(meds, hi)) if meds else 1
    for i, (m, h) in enumerate(zip(meds, hi)):
        ax.text(i, m + h + top * 0.01, format(m, fmt), ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, top * 1.12)


def by_server(rows, col, config=None):
    out = {}
    for r in rows:
        if r.get("ok") != "1" or (config is not None and r.get("config") != config):
            continue
        out.setdefault(r["server"], []).append(float(r[col]))
    return out


def save(fig, path):
    fig.tight_layout()
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)
    print(f"charts: wrote {path}")


def rounds_note(rows):
    n = len({r["round"] for r in rows})
    return f"median of {n} round{'s' if n != 1 else ''}; whiskers: lowest to highest round"


def unary(build, out, short, used):
    path = os.path.join(build, "bench", "runs.tsv")
    if not os.path.exists(path):
        print(f"charts: {path} missing (bench/run not run): unary charts skipped")
        return
    rows = rows_of(path)
    used.append(path)
    for col, name, title, unit, fmt in (
            ("rps", "unary-rps.svg", "Unary echo, one server core: requests per second",
             "req/s", ",.0f"),
            ("cpu_us_per_rpc", "unary-cpu.svg",
             "Unary echo: server CPU per call (lower is better)", "µs per RPC", ".2f")):
        vals = by_server(rows, col)
        if not vals:
            continue
        names = order(vals)
        fig, ax = plt.subplots(figsize=(1.25 * len(names) + 1.5, 3.6))
        bars(ax, names, vals, short, fmt, unit)
        ax.set_title(f"{title}\n({rounds_note(rows)})", fontsize=9)
        save(fig, os.path.join(out, name))


def latency(build, out, short, used):
    path = os.path.join(build, "bench-more", "latency.tsv")
    if not os.path.exists(path):
        print(f"charts: {path} missing (bench/run-latency not run): latency chart skipped")
        return
    rows = rows_of(path)
    used.append(path)
    names = order(by_server(rows, "p99_us"))
    if not names:
        return
    fig, ax = plt.subplots(figsize=(1.4 * len(names) + 1.5, 3.6))
    width = 0.27
    for k, (col, lab, shade) in enumerate((("p50_us", "p50", 0.45), ("p99_us", "p99", 0.75),
                                           ("p999_us", "p99.9", 1.0))):
        vals = by_server(rows, col)
        meds, lo, hi = [], [], []
        for n in names:
            m, a, b = spread([v / 1000 for v in vals[n]])
            meds.append(m)
            lo.append(a)
            hi.append(b)
        xs = [i + (k - 1) * width for i in range(len(names))]
        ax.bar(xs, meds, width, yerr=[lo, hi], capsize=3, label=lab, color="#1f6fb4",
               alpha=shade, error_kw={"elinewidth": 1, "ecolor": "#333333"})
    ax.set_yscale("log")
    ax.set_xticks(list(range(len(names))), [short.get(n, n) for n in names])
    ax.set_ylabel("ms (log scale)")
    ax.grid(axis="y", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8)
    rate = rows[0].get("rate", "?")
    ax.set_title(f"Open-loop latency at {int(float(rate)):,} req/s for every server "
                 f"(h2load --rps)\n({rounds_note(rows)})", fontsize=9)
    save(fig, os.path.join(out, "latency.svg"))


def grouped(build, out, short, used, tsv, col, title, unit, name, fmt):
    path = os.path.join(build, "bench-more", tsv)
    if not os.path.exists(path):
        print(f"charts: {path} missing: {name} skipped")
        return
    rows = rows_of(path)
    used.append(path)
    configs = []
    for r in rows:
        if r["config"] not in configs:
            configs.append(r["config"])
    fig, axes = plt.subplots(1, len(configs), figsize=(4.2 * len(configs), 3.6), squeeze=False)
    for ax, cfg in zip(axes[0], configs):
        vals = by_server(rows, col, cfg)
        if not vals:
            continue
        bars(ax, order(vals), vals, short, fmt, unit)
        ax.set_title(cfg, fontsize=9)
    fig.suptitle(f"{title} ({rounds_note(rows)})", fontsize=9)
    save(fig, os.path.join(out, name))


def main(argv):
    args = argv[1:]
    data = None
    if "--data" in args:
        i = args.index("--data")
        data = args[i + 1]
        del args[i:i + 2]
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    build, out = args
    os.makedirs(out, exist_ok=True)
    short = labels_of(build)
    used = []
    unary(build, out, short, used)
    latency(build, out, short, used)
    grouped(build, out, short, used, "streaming.tsv", "msgs_per_s",
            "Bidi streaming, 64-byte messages: messages per second", "msgs/s",
            "streaming.svg", ",.0f")
    grouped(build, out, short, used, "idle.tsv", "kib_per_1000",
            "Server memory per 1,000 idle HTTP/2 connections (lower is better)",
            "KiB per 1,000 connections", "idle.svg", ",.0f")
    if data:
        os.makedirs(data, exist_ok=True)
        lab = os.path.join(build, "bench", "labels.tsv")
        for p in used + ([lab] if os.path.exists(lab) else []):
            # The same layout as BUILD, so `charts.py DATA_DIR OUT` redraws.
            sub = os.path.join(data, os.path.basename(os.path.dirname(p)))
            os.makedirs(sub, exist_ok=True)
            shutil.copyfile(p, os.path.join(sub, os.path.basename(p)))
            print(f"charts: kept {p} in {sub}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
