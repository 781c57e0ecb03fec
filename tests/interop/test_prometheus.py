#!/usr/bin/python3
"""A real Prometheus server scrapes a perfc server; its counts must equal the
calls made, and promtool must find nothing wrong with the exposition.

Run by CTest as: /usr/bin/python3 test_prometheus.py BUILD_BIN_DIR
Everything is on loopback, in a temporary directory, bounded in time.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

BIN = None
CALLS = 137


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            v = pred()
            if v:
                return v
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))


class PrometheusScrape(unittest.TestCase):
    SERVER_ARGS = []
    SERVER_ENV = {}

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="perfc-prom-")
        self.procs = []
        env = dict(os.environ)
        env.update(self.SERVER_ENV)
        self.server = subprocess.Popen(
            [os.path.join(BIN, "perfc-echo-server"), "--listen", "127.0.0.1:0",
             "--metrics-listen", "127.0.0.1:0"] + self.SERVER_ARGS,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.procs.append(self.server)
        listen = self.server.stdout.readline().split()[-1]
        metrics = self.server.stdout.readline().split()[-1]
        self.target, self.metrics_url = listen, "http://" + metrics

    def start_prometheus(self, *flags):
        host, port = self.metrics_url[len("http://"):].split("/")[0].rsplit(":", 1)
        web = free_port()
        cfg = os.path.join(self.tmp, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: perfc\n    static_configs:\n"
                    "      - targets: ['%s:%s']\n" % (host, port))
        prom = subprocess.Popen(
            ["prometheus", "--config.file=" + cfg, "--storage.tsdb.path=" + os.path.join(self.tmp, "data"),
             "--web.listen-address=127.0.0.1:%d" % web, "--log.level=warn"] + list(flags),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.procs.append(prom)
        return "http://127.0.0.1:%d/api/v1/" % web

    def tearDown(self):
        for p in self.procs:
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_promtool_and_real_prometheus_agree_with_calls(self):
        out = subprocess.run([os.path.join(BIN, "perfc-echo-client"), "--target", self.target,
                              "--count", str(CALLS)], capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)

        scrape = urllib.request.urlopen(self.metrics_url, timeout=10).read()
        check = subprocess.run(["promtool", "check", "metrics"], input=scrape,
                               capture_output=True, timeout=30)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        self.assertEqual(check.stdout + check.stderr, b"", "promtool found problems")

        api = self.start_prometheus() + "query?"

        def query(q):
            body = urllib.request.urlopen(api + urllib.parse.urlencode({"query": q}), timeout=5).read()
            res = json.loads(body)
            return res["data"]["result"] if res.get("status") == "success" else None

        q = 'grpc_server_handled_total{job="perfc",grpc_method="Unary",grpc_code="OK"}'
        result = wait_for(lambda: query(q), 60, "Prometheus to scrape the perfc server")
        self.assertEqual(len(result), 1)
        self.assertEqual(result[0]["metric"]["grpc_service"], "bench.v1.Echo")
        self.assertEqual(result[0]["metric"]["grpc_type"], "unary")
        self.assertEqual(float(result[0]["value"][1]), CALLS)
        started = query('grpc_server_started_total{job="perfc",grpc_method="Unary"}')
        self.assertEqual(float(started[0]["value"][1]), CALLS)
        # Codes never seen are present at zero, so alerts on rate() work at once.
        zero = query('grpc_server_handled_total{job="perfc",grpc_code="Unavailable"}')
        self.assertEqual(float(zero[0]["value"][1]), 0)
        hist = query('grpc_server_handling_seconds_count{job="perfc",grpc_method="Unary"}')
        self.assertEqual(float(hist[0]["value"][1]), CALLS)
        up = query('up{job="perfc"}')
        self.assertEqual(float(up[0]["value"][1]), 1)


class PrometheusExemplars(PrometheusScrape):
    """With a tracer sampling every call, each bucket of
    grpc_server_handling_seconds carries the trace id of a call that fell in
    it; Prometheus (exemplar storage on) scrapes them over OpenMetrics."""
    # Spans go nowhere (a closed port): exemplars need sampling, not export.
    SERVER_ARGS = ["--tracing", "always_on"]
    SERVER_ENV = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:%d/v1/traces" % free_port(),
                  "OTEL_SERVICE_NAME": "echo"}

    def test_promtool_and_real_prometheus_agree_with_calls(self):
        pass  # the parent's test, run once without a tracer

    def test_exemplars_carry_trace_ids(self):
        out = subprocess.run([os.path.join(BIN, "perfc-echo-client"), "--target", self.target,
                              "--count", str(CALLS)], capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        req = urllib.request.Request(self.metrics_url, headers={
            "Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"})
        with urllib.request.urlopen(req, timeout=10) as r:
            self.assertTrue(r.headers["Content-Type"].startswith("application/openmetrics-text"))
            text = r.read().decode()
        self.assertTrue(text.endswith("# EOF\n"))
        self.assertIn("# TYPE grpc_server_handled counter\n", text)
        ex = [l for l in text.splitlines()
              if l.startswith('grpc_server_handling_seconds_bucket{') and "# {trace_id=" in l]
        self.assertTrue(ex, "no exemplar in:\n" + text[:2000])
        # The plain text format has none (Prometheus 0.0.4 cannot parse them).
        plain = urllib.request.urlopen(self.metrics_url, timeout=10).read().decode()
        self.assertNotIn("trace_id", plain)

        api = self.start_prometheus("--enable-feature=exemplar-storage")

        def exemplars():
            now = time.time()
            body = urllib.request.urlopen(api + "query_exemplars?" + urllib.parse.urlencode({
                "query": 'grpc_server_handling_seconds_bucket{job="perfc",grpc_method="Unary"}',
                "start": now - 600, "end": now + 60}), timeout=5).read()
            res = json.loads(body)
            got = [e for series in res.get("data") or [] for e in series["exemplars"]]
            return got if res.get("status") == "success" and got else None

        got = wait_for(exemplars, 90, "Prometheus to store exemplars")
        for e in got:
            tid, sid = e["labels"].get("trace_id", ""), e["labels"].get("span_id", "")
            self.assertRegex(tid, r"^[0-9a-f]{32}$")
            self.assertRegex(sid, r"^[0-9a-f]{16}$")
            self.assertNotEqual(tid, "0" * 32)
            self.assertGreater(float(e["value"]), 0)
            self.assertLess(float(e["value"]), 10)
        # No call was made since `text` was read, so every exemplar Prometheus
        # holds is one the server showed then, ids and all.
        for e in got:
            self.assertIn('trace_id="%s",span_id="%s"' % (e["labels"]["trace_id"],
                                                         e["labels"]["span_id"]), text)


if __name__ == "__main__":
    BIN = sys.argv.pop(1)
    unittest.main(verbosity=2)
