#!/usr/bin/env python3
"""Writes user-service-dashboard.json: a Grafana dashboard on the
go-grpc-prometheus metric names perfc exports (docs/metrics.md), so the same
JSON works for perfc, grpc-go and grpc-java services. Rerun after editing;
the JSON is committed so nobody needs Python to import it.

Room: examples/user-service/deploy/grafana.
"""
import json
import os
import sys

SEL = 'job=~"$job", namespace=~"$namespace", grpc_service=~"$service"'
RATE = "$__rate_interval"
DS = {"type": "prometheus", "uid": "${datasource}"}
panels = []
next_id = [1]


def target(expr, legend, ref):
    return {"datasource": DS, "expr": expr, "legendFormat": legend,
            "refId": ref}


def panel(title, kind, targets, x, y, w, h, unit="short", desc="", **extra):
    p = {
        "id": next_id[0], "title": title, "type": kind, "datasource": DS,
        "description": desc,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": [target(e, l, chr(ord("A") + i))
                    for i, (e, l) in enumerate(targets)],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "right",
                               "calcs": ["mean", "max"]},
                    "tooltip": {"mode": "multi"}},
    }
    p.update(extra)
    next_id[0] += 1
    panels.append(p)


def row(title, y):
    panels.append({"id": next_id[0], "type": "row", "title": title,
                   "collapsed": False,
                   "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}})
    next_id[0] += 1


handled = f"grpc_server_handled_total{{{SEL}}}"
started = f"grpc_server_started_total{{{SEL}}}"
bucket = f"grpc_server_handling_seconds_bucket{{{SEL}}}"
errors = (f'sum(rate(grpc_server_handled_total{{{SEL}, grpc_code!="OK"}}[{RATE}]))'
          f" / sum(rate({handled}[{RATE}]))")

row("Overview", 0)
panel("Requests / s", "stat", [(f"sum(rate({handled}[{RATE}]))", "rps")],
      0, 1, 6, 4, "reqps", "All methods, all codes.")
panel("Error ratio", "stat", [(errors, "errors")], 6, 1, 6, 4, "percentunit",
      "Share of calls ending with a code other than OK.")
panel("p99 latency (unary)", "stat",
      [(f'histogram_quantile(0.99, sum by (le) (rate(grpc_server_handling_seconds_bucket{{{SEL}, grpc_type="unary"}}[{RATE}])))', "p99")],
      12, 1, 6, 4, "s")
panel("In flight", "stat",
      [(f"sum({started}) - sum({handled})", "in flight")], 18, 1, 6, 4,
      "short", "Calls started but not yet finished.")

row("Traffic", 5)
panel("Request rate by method", "timeseries",
      [(f"sum by (grpc_service, grpc_method) (rate({handled}[{RATE}]))",
        "{{grpc_service}}/{{grpc_method}}")],
      0, 6, 12, 8, "reqps")
panel("Error ratio by grpc_code", "timeseries",
      [(f'sum by (grpc_code) (rate(grpc_server_handled_total{{{SEL}, grpc_code!="OK"}}[{RATE}]))'
        f" / ignoring(grpc_code) group_left sum(rate({handled}[{RATE}]))",
        "{{grpc_code}}")],
      12, 6, 12, 8, "percentunit",
      "Each non-OK code as a share of all calls.")

row("Latency", 14)
panel("Latency p50 / p90 / p99", "timeseries",
      [(f"histogram_quantile({q}, sum by (le) (rate({bucket}[{RATE}])))",
        f"p{int(q * 100)}") for q in (0.5, 0.9, 0.99)],
      0, 15, 12, 8, "s",
      "From grpc_server_handling_seconds_bucket (all methods).")
panel("p99 by method", "timeseries",
      [(f"histogram_quantile(0.99, sum by (le, grpc_method) (rate({bucket}[{RATE}])))",
        "{{grpc_method}}")],
      12, 15, 12, 8, "s")
panel("In flight by method (started - handled)", "timeseries",
      [(f"sum by (grpc_method) ({started}) - sum by (grpc_method) ({handled})",
        "{{grpc_method}}")],
      0, 23, 12, 8, "short")
panel("Stream messages / s", "timeseries",
      [(f"sum by (grpc_method) (rate(grpc_server_msg_received_total{{{SEL}}}[{RATE}]))",
        "recv {{grpc_method}}"),
       (f"sum by (grpc_method) (rate(grpc_server_msg_sent_total{{{SEL}}}[{RATE}]))",
        "sent {{grpc_method}}")],
      12, 23, 12, 8, "short")

PSEL = 'job=~"$job", namespace=~"$namespace"'
row("Process", 31)
panel("CPU (cores)", "timeseries",
      [(f"rate(process_cpu_seconds_total{{{PSEL}}}[{RATE}])", "{{pod}}")],
      0, 32, 8, 8, "short")
panel("Resident memory", "timeseries",
      [(f"process_resident_memory_bytes{{{PSEL}}}", "{{pod}}")],
      8, 32, 8, 8, "bytes")
panel("Open file descriptors", "timeseries",
      [(f"process_open_fds{{{PSEL}}}", "open {{pod}}"),
       (f"process_max_fds{{{PSEL}}}", "max {{pod}}")],
      16, 32, 8, 8, "short")
panel("Uptime", "timeseries",
      [(f"time() - process_start_time_seconds{{{PSEL}}}", "{{pod}}")],
      0, 40, 8, 6, "s")


def var(name, query, label):
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "query": {"query": query, "refId": name},
            "definition": query, "refresh": 2, "includeAll": True,
            "multi": True, "allValue": ".*",
            "current": {"text": "All", "value": "$__all"}}


dashboard = {
    "title": "user-service (gRPC)",
    "uid": "user-service-grpc",
    "description": "go-grpc-prometheus metrics of perfc's user-service",
    "tags": ["grpc", "perfc", "user-service"],
    "timezone": "browser",
    "schemaVersion": 38,
    "version": 1,
    "editable": True,
    "refresh": "30s",
    "time": {"from": "now-1h", "to": "now"},
    "templating": {"list": [
        {"name": "datasource", "label": "Data source", "type": "datasource",
         "query": "prometheus", "current": {}},
        var("namespace", "label_values(grpc_server_started_total, namespace)",
            "Namespace"),
        var("job", "label_values(grpc_server_started_total, job)", "Job"),
        var("service",
            "label_values(grpc_server_started_total, grpc_service)",
            "gRPC service"),
    ]},
    "panels": panels,
}

# An output path may be given (deploy/check.sh compares a fresh copy).
out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "user-service-dashboard.json")
with open(out, "w") as f:
    json.dump(dashboard, f, indent=2)
    f.write("\n")
