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
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="perfc-prom-")
        self.procs = []
        self.server = subprocess.Popen(
            [os.path.join(BIN, "perfc-echo-server"), "--listen", "127.0.0.1:0",
             "--metrics-listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(self.server)
        listen = self.server.stdout.readline().split()[-1]
        metrics = self.server.stdout.readline().split()[-1]
        self.target, self.metrics_url = listen, "http://" + metrics

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

        host, port = self.metrics_url[len("http://"):].split("/")[0].rsplit(":", 1)
        web = free_port()
        cfg = os.path.join(self.tmp, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: perfc\n    static_configs:\n"
                    "      - targets: ['%s:%s']\n" % (host, port))
        prom = subprocess.Popen(
            ["prometheus", "--config.file=" + cfg, "--storage.tsdb.path=" + os.path.join(self.tmp, "data"),
             "--web.listen-address=127.0.0.1:%d" % web, "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.procs.append(prom)
        api = "http://127.0.0.1:%d/api/v1/query?" % web

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


if __name__ == "__main__":
    BIN = sys.argv.pop(1)
    unittest.main(verbosity=2)
