#!/usr/bin/env python3
"""medians.py TSV REF[,REF2...] COL[:FMT]... — medians per (config, server)
of the successful runs in TSV (columns: round, config, server, ok, ...,
others, ...), each column followed by its ratio to server REF in the same
config: the median over rounds of (this run / REF's run of the same round),
as bench/tools/report.py takes it, so drift between rounds cancels out.
With several comma-separated references, each column gets one ratio column
per reference (bench/run-idle: x cpp and x cpp-full).
A markdown table on stdout. Used by bench/run-streaming, run-idle,
run-client and run-overhead."""
import csv
import statistics
import sys


def main():
    path, refs_arg, cols = sys.argv[1], sys.argv[2], sys.argv[3:]
    refnames = [r for r in refs_arg.split(",") if r]
    rows = list(csv.DictReader(open(path), delimiter="\t"))
    configs, servers, groups = [], [], {}
    for r in rows:
        if r["config"] not in configs:
            configs.append(r["config"])
        if r["server"] not in servers:
            servers.append(r["server"])
        groups.setdefault((r["config"], r["server"]), []).append(r)
    spec = [(c.split(":")[0], c.split(":")[1] if ":" in c else ".0f") for c in cols]
    head = ["config", "server", "runs ok"]
    for c, _ in spec:
        head += [c + " (median)"] + [f"x {ref}" for ref in refnames]
    head += ["others max"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for cfg in configs:
        med = {}
        for s in servers:
            ok = [r for r in groups.get((cfg, s), []) if r["ok"] == "1"]
            med[s] = {c: statistics.median(float(r[c]) for r in ok) if ok else None
                      for c, _ in spec}
        for s in servers:
            g = groups.get((cfg, s), [])
            if not g:
                continue
            ok = [r for r in g if r["ok"] == "1"]
            line = [cfg, s, f"{len(ok)}/{len(g)}"]
            for c, f in spec:
                v = med[s][c]
                line.append("—" if v is None else format(v, f))
                for ref in refnames:
                    refs = {r["round"]: r for r in groups.get((cfg, ref), [])
                            if r["ok"] == "1"}
                    ratios = [float(r[c]) / float(refs[r["round"]][c]) for r in ok
                              if r["round"] in refs and float(refs[r["round"]][c])]
                    line.append(f"{statistics.median(ratios):.2f}" if ratios else "—")
            om = max((float(r["others"]) for r in g), default=0)
            line.append(f"{om * 100:.0f}%")
            print("| " + " | ".join(line) + " |")


if __name__ == "__main__":
    main()
