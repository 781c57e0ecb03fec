#!/usr/bin/python3
"""run.py — adversarial probes against a perfc server (issue #13).

Room: tests/adversarial. Each probe starts a fresh server, starts a
well-behaved python3-grpcio client beside it (bystander.py), attacks from
a raw HTTP/2 client (h2raw.py), measures the server from /proc and asserts
the bounds of budgets.py.

Usage:
  run.py [options] PROBE...      PROBE: a name, "all" (default) or "--list"
  --bin-dir DIR     where perfc-echo-server is (default: build/bin)
  --server PATH     the server binary ($PERFC_ADV_SERVER); it must take
                    --listen HOST:PORT and print "listening on HOST:PORT",
                    take --metrics-listen HOST:PORT (printing "metrics on
                    HOST:PORT/metrics") and serve bench.v1.Echo/Unary
  --transport T     pass "--transport T" to the server and judge by T's
                    row of budgets.KNOWN ($PERFC_ADV_TRANSPORT); without it
                    no flag is passed and budgets.DEFAULT_TRANSPORT applies
  --heavy           the soak-sized variant (scripts/soak)
  --report          measure and print, never fail (for "before" numbers)
  --json FILE       append one JSON line per probe

Exit status: 0 all bounds held, 1 a bound failed or a probe could not run
(its server did not start: the reason is printed), 2 bad arguments.
Every attack is bounded in count and in time; every process started is
killed on exit, failure or signal.
"""
import argparse
import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import budgets  # noqa: E402
import h2raw as h2  # noqa: E402

PY = "/usr/bin/python3"  # Debian's grpcio is importable only by this one
UNARY = "/bench.v1.Echo/Unary"
MIB = 1 << 20
CLK_TCK = os.sysconf("SC_CLK_TCK")
_children = []


class SetupError(Exception):
    pass


def _kill_children():
    for p in list(_children):
        if p.poll() is None:
            try:
                p.kill()
                p.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
    _children.clear()


def _on_signal(signum, _frame):
    _kill_children()
    sys.exit(128 + signum)


def echo_request(payload=b"x" * 16):
    return h2.pb_bytes_field(1, payload)


# ---- the server under test ---------------------------------------------

class Server:
    """The server binary on 127.0.0.1:0, measured from /proc."""

    def __init__(self, opts, metrics=False, name="server"):
        self.opts = opts
        cmd = [opts.server, "--listen", "127.0.0.1:0"]
        if metrics:
            cmd += ["--metrics-listen", "127.0.0.1:0"]
        if opts.transport:
            cmd += ["--transport", opts.transport]
        os.makedirs(opts.work, exist_ok=True)
        self.log_path = os.path.join(opts.work, name + ".stderr")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log,
                                     stdin=subprocess.DEVNULL)
        _children.append(self.proc)
        self.pid = self.proc.pid
        self.port = self.metrics_port = None
        deadline = time.monotonic() + 15
        lines = []
        while time.monotonic() < deadline and (self.port is None or
                                               (metrics and self.metrics_port is None)):
            line = self._readline(deadline)
            if line is None:
                break
            lines.append(line)
            if line.startswith("listening on "):
                self.port = int(line.rsplit(":", 1)[1])
            elif line.startswith("metrics on "):
                self.metrics_port = int(line.split(":")[-1].split("/")[0])
        if self.port is None or (metrics and self.metrics_port is None):
            self.stop()
            raise SetupError("%s did not start: %s %s" % (
                " ".join(cmd), lines, open(self.log_path, "rb").read()[-2000:]))
        self.target = "127.0.0.1:%d" % self.port

    def _readline(self, deadline):
        out = []
        result = []

        def rd():
            result.append(self.proc.stdout.readline())
        t = threading.Thread(target=rd, daemon=True)
        t.start()
        t.join(max(0.0, deadline - time.monotonic()))
        if not result or not result[0]:
            return None
        out.append(result[0].decode("utf-8", "replace").strip())
        return out[0]

    def alive(self):
        return self.proc.poll() is None

    def status_kib(self, key):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        raise SetupError("no %s in /proc/%d/status" % (key, self.pid))

    def rss_mib(self):
        return self.status_kib("VmRSS") / 1024.0

    def hwm_mib(self):
        return self.status_kib("VmHWM") / 1024.0

    def reset_hwm(self):
        """VmHWM back to the current RSS (Linux >= 4.0), so a peak is this
        attack's and not the start-up's."""
        try:
            with open("/proc/%d/clear_refs" % self.pid, "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def cpu_s(self):
        with open("/proc/%d/stat" % self.pid) as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / CLK_TCK

    def fds(self):
        return len(os.listdir("/proc/%d/fd" % self.pid))

    def log_size(self):
        self.log.flush()
        return os.path.getsize(self.log_path)

    def log_since(self, offset):
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc in _children:
            _children.remove(self.proc)
        self.log.close()
        self.proc.stdout.close()


class Bystander:
    """bystander.py in its own process: calls every interval with a
    deadline; summary() stops it and returns its counts."""

    def __init__(self, server, opts):
        self.proc = subprocess.Popen(
            [PY, os.path.join(HERE, "bystander.py"), server.target,
             str(opts.deadline_ms), "20", "600"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        _children.append(self.proc)
        line = self.proc.stdout.readline().decode().strip()
        if line != "ready":
            self.proc.kill()
            raise SetupError("bystander not ready: %s %s" % (
                line, self.proc.stderr.read(2000)))

    def summary(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        if self.proc in _children:
            _children.remove(self.proc)
        try:
            s = json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            s = {"calls": 0, "ok": 0, "failed": {"NO_SUMMARY": 1}, "stderr": err[-500:].decode()}
        # No successful call at all counts as a failure: a bystander that
        # never got through saw nothing.
        s["failed_n"] = sum(s.get("failed", {}).values()) + (0 if s.get("ok") else 1)
        return s


# ---- one probe's context -------------------------------------------------

# The first line of every ASan, LSan, TSan and UBSan report.
SANITIZER_MARKERS = (b"ERROR: AddressSanitizer", b"ERROR: LeakSanitizer",
                     b"WARNING: ThreadSanitizer", b"runtime error:")


def sanitizer_log_files(pid):
    """The report files a sanitizer wrote for process pid when its options
    set log_path (scripts/check does, so that every report is counted):
    they are PATH.PID, not the process's stderr."""
    files = []
    for var in ("ASAN_OPTIONS", "LSAN_OPTIONS", "UBSAN_OPTIONS", "TSAN_OPTIONS"):
        for opt in os.environ.get(var, "").split(":"):
            if opt.startswith("log_path="):
                f = "%s.%d" % (opt[len("log_path="):], pid)
                if f not in files and os.path.exists(f):
                    files.append(f)
    return files


def resource_key(key):
    """True for a bound on the server's memory or CPU (see Probe.check)."""
    return (key == "cpu_s" or key.endswith("_mib") or key.endswith("_kib")
            or key.startswith("kib_per_"))


class Probe:
    def __init__(self, name, opts):
        self.name = name
        self.opts = opts
        self.transport = opts.transport or budgets.DEFAULT_TRANSPORT
        self.m = {}          # measurements, in order
        self.checks = []     # (key, value, bound, ok, reason)
        self.server = None
        self.bystander = None
        self.base_rss = None
        self.cpu0 = None

    def start(self, metrics=False, bystander=True):
        self.server = Server(self.opts, metrics=metrics, name=self.name)
        if bystander:
            self.bystander = Bystander(self.server, self.opts)
        # A warm-up call from this side too, so the baseline includes one
        # served raw connection's worth of lazily allocated state.
        c = self.conn()
        st = c.unary(UNARY, h2.grpc_message(echo_request()), timeout=10)
        c.close()
        if st.grpc_code != "OK":
            raise SetupError("warm-up call failed: %s %s" % (st.grpc_code, st.headers))
        time.sleep(0.5)
        self.baseline()

    def baseline(self):
        self.base_rss = self.server.rss_mib()
        self.m["base_rss_mib"] = round(self.base_rss, 1)
        if not self.server.reset_hwm():
            self.m["hwm_reset"] = False
        self.cpu0 = self.server.cpu_s()
        self.base_fds = self.server.fds()

    def conn(self, handshake=True, ack=True, source=None):
        c = h2.H2Conn("127.0.0.1", self.server.port, timeout=10, source=source)
        if handshake and not c.handshake(ack=ack):
            raise SetupError("no SETTINGS from the server")
        return c

    def peak_mib(self):
        return round(self.server.hwm_mib() - self.base_rss, 1)

    def cpu_used(self):
        return round(self.server.cpu_s() - self.cpu0, 2)

    def settle_rss(self, limit_mib, seconds):
        """Waits up to `seconds` for RSS to fall within `limit_mib` of the
        baseline; returns the growth last seen."""
        deadline = time.monotonic() + seconds
        while True:
            g = self.server.rss_mib() - self.base_rss
            if g <= limit_mib or time.monotonic() >= deadline:
                return round(g, 1)
            time.sleep(0.25)

    def settle_fds(self, seconds):
        deadline = time.monotonic() + seconds
        while True:
            extra = self.server.fds() - self.base_fds
            if extra <= 0 or time.monotonic() >= deadline:
                return max(0, extra)
            time.sleep(0.25)

    def bound(self, key):
        return budgets.bound(self.transport, self.name, key, self.opts.heavy)[0]

    def measure(self, key, value):
        self.m[key] = value

    def check(self, key, value):
        """Records `value` and judges it against the budget of `key`."""
        self.m[key] = value
        b, reason = budgets.bound(self.transport, self.name, key, self.opts.heavy)
        if isinstance(b, (set, frozenset)):
            ok = value in b
        elif self.opts.sanitizer and resource_key(key):
            # A sanitized server's memory and CPU are the sanitizer's (ASan's
            # redzones and quarantine, TSan's shadow memory and several-fold
            # slower code): measured and shown, not judged. What the server
            # answers, the bystander, fds and logs are judged as always.
            ok = True
            reason = "not judged under -fsanitize=%s" % self.opts.sanitizer
        else:
            ok = value is not None and value <= b
        self.checks.append((key, value, b, ok, reason))
        return ok

    def finish_bystander(self):
        if self.bystander is None:
            return
        s = self.bystander.summary()
        self.bystander = None
        self.measure("bystander", {k: s.get(k) for k in ("calls", "ok", "failed", "p50_ms", "max_ms")})
        if "bystander_failed" in budgets.BUDGETS[self.name]:
            self.check("bystander_failed", s["failed_n"])

    def close(self):
        if self.bystander is not None:
            self.bystander.summary()
            self.bystander = None
        if self.server is not None:
            if not self.server.alive():
                self.m["server_exit"] = self.server.proc.returncode
            self.server.stop()
            # A sanitizer's report (it goes to the server's stderr, or to
            # its log_path file, at the fault or at exit for leaks) fails
            # the probe even when the answers looked right. Only sanitized
            # builds can print one.
            with open(self.server.log_path, "rb") as f:
                log = f.read()
            for path in sanitizer_log_files(self.server.pid):
                with open(path, "rb") as f:
                    log += f.read()
            n = sum(log.count(m) for m in SANITIZER_MARKERS)
            self.checks.append(("sanitizer_reports", n, 0, n == 0, None))


# ---- probes ----------------------------------------------------------------

PROBES = {}


def probe(name, heavy_param=False):
    def reg(fn):
        PROBES[name] = fn
        fn.has_heavy = heavy_param
        return fn
    return reg


@probe("bomb", heavy_param=True)
def p_bomb(p):
    """#13 item 1: three gzip messages of ~1 MiB (256 MiB inflated; 1 GiB
    with --heavy) at once, on three connections."""
    inflated = (1 << 30) if p.opts.heavy else (256 << 20)
    bomb = h2.gzip_zeros(inflated)
    p.measure("inflated_mib", inflated // MIB)
    p.measure("compressed_kib", len(bomb) // 1024)
    p.start()
    msg = h2.grpc_message(bomb, compressed=True)
    calls = []
    for _ in range(3):
        c = p.conn()
        st = c.start_call(UNARY, extra=[("grpc-encoding", "gzip")])
        calls.append((c, st))
    deadline = time.monotonic() + (90 if p.opts.heavy else 45)
    for c, st in calls:
        c.send_data(st, msg, end_stream=True, deadline=deadline)
    for c, st in calls:
        c.wait(st, max(0.0, deadline - time.monotonic()))
    codes = sorted({st.grpc_code or ("rst %s" % st.reset if st.reset is not None else "none")
                    for _, st in calls})
    p.measure("codes", codes)
    p.measure("message", calls[0][1].grpc_message)
    p.check("code", codes[0] if len(codes) == 1 else "/".join(codes))
    p.check("cpu_s", p.cpu_used())
    for c, _ in calls:
        c.close()
    p.check("after_close_mib", p.settle_rss(p.bound("after_close_mib"), 5))
    p.check("peak_mib", p.peak_mib())  # VmHWM: the peak up to now
    p.finish_bystander()


@probe("rapid_reset", heavy_param=True)
def p_rapid_reset(p):
    """#13 item 2: one connection sending HEADERS + DATA(END_STREAM) +
    RST_STREAM(CANCEL) in batches as fast as python can (3 s; 10 s with
    --heavy), a reader thread draining whatever the server answers."""
    seconds = 10.0 if p.opts.heavy else 3.0
    p.start()
    c = p.conn()
    c.send(h2.window_update(0, (1 << 30)))
    block = c.request_headers(UNARY)
    body = h2.grpc_message(echo_request())
    data_hdr = struct.pack(">BHBB", 0, len(body), h2.DATA, h2.END_STREAM)
    hdr_hdr = struct.pack(">BHBB", len(block) >> 16, len(block) & 0xFFFF,
                          h2.HEADERS, h2.END_HEADERS)
    rst = struct.pack(">BHBB", 0, 4, h2.RST_STREAM, 0)
    rst_body = struct.pack(">I", h2.CANCEL)
    stop = threading.Event()
    received = [0]

    def drain():
        c.sock.settimeout(0.5)
        while not stop.is_set():
            try:
                d = c.sock.recv(1 << 20)
            except socket.timeout:
                continue
            except OSError:
                break
            if not d:
                break
            received[0] += len(d)
    t = threading.Thread(target=drain, daemon=True)
    t.start()
    sid = 1
    batch = 200
    streams = 0
    closed_by_server = False
    t0 = time.monotonic()
    deadline = t0 + seconds
    c.sock.settimeout(5)
    while time.monotonic() < deadline and sid < (1 << 31) - 2 * batch:
        parts = []
        for _ in range(batch):
            s = struct.pack(">I", sid)
            parts += (hdr_hdr, s, block, data_hdr, s, body, rst, s, rst_body)
            sid += 2
        try:
            c.sock.sendall(b"".join(parts))
        except OSError:  # the server closed us: a mitigation, not a failure
            closed_by_server = True
            break
        streams += batch
    elapsed = time.monotonic() - t0
    p.measure("streams", streams)
    p.measure("streams_per_s", int(streams / elapsed))
    p.measure("closed_by_server", closed_by_server)
    p.measure("server_cpu_s", p.cpu_used())
    stop.set()
    c.close()
    t.join(2)
    # The server may still be working through what it had read when the
    # client left; the peak is taken after the settling time.
    p.check("after_close_mib", p.settle_rss(p.bound("after_close_mib"), 10 if p.opts.heavy else 5))
    peak = p.peak_mib()
    p.check("peak_mib", peak)
    p.check("kib_per_stream", round(peak * 1024 / max(1, streams), 2))
    p.finish_bystander()


@probe("no_budget", heavy_param=True)
def p_no_budget(p):
    """#13 item 3: N streams on one connection, each sending 4 MB of a
    message that never finishes (128 streams; 500 with --heavy). Sends
    within the server's flow-control windows: a server with a budget shuts
    them, and the client simply cannot send more."""
    n = 500 if p.opts.heavy else 128
    per_stream = 4_000_000
    seconds = 60.0 if p.opts.heavy else 15.0
    p.start()
    c = p.conn()
    streams = [c.start_call(UNARY) for _ in range(n)]
    prefix = struct.pack(">BI", 0, budgets.MAX_RECV_BYTES - 1024)
    chunk = prefix + bytes(per_stream - len(prefix))
    deadline = time.monotonic() + seconds
    sent = 0
    shut = 0  # streams whose window stayed shut for a second
    for st in streams:
        if time.monotonic() >= deadline or c.closed:
            break
        got = c.send_data(st, chunk, end_stream=False,
                          deadline=min(deadline, time.monotonic() + 1.0))
        sent += got
        if got < len(chunk):
            shut += 1
            if shut >= 3:  # three in a row: the connection window is shut
                break
        else:
            shut = 0
        c.pump(None, 0)  # take WINDOW_UPDATEs and SETTINGS as they come
    p.measure("offered_mb", n * per_stream // 1_000_000)
    p.measure("accepted_mb", sent // 1_000_000)
    p.measure("streams_reset", sum(1 for st in streams if st.reset is not None))
    c.pump(None, 1.0)
    p.measure("cpu_s", p.cpu_used())
    c.close()
    p.check("after_close_mib", p.settle_rss(p.bound("after_close_mib"), 10 if p.opts.heavy else 5))
    p.check("peak_mib", p.peak_mib())
    p.finish_bystander()


@probe("header_flood", heavy_param=True)
def p_header_flood(p):
    """#13 item 4: a client that never ACKs the server's SETTINGS sends a
    header block of 4 MiB (16 MiB with --heavy), then a message: once as
    literal fields, once as one indexed field repeated (each byte of the
    block adds a header: the cheapest way to make a server build a list)."""
    size = (16 << 20) if p.opts.heavy else (4 << 20)
    p.start()
    base = [(":method", "POST"), (":scheme", "http"), (":path", UNARY),
            (":authority", "127.0.0.1"), ("content-type", "application/grpc"),
            ("te", "trailers")]
    blocks = {
        # Literal never-indexed fields of 8 bytes each.
        "literal": h2.encode_headers(base + [("x-%05x" % (i & 0xFFFFF), "a")
                                             for i in range(size // 12)]),
        # One field added to the dynamic table ("xa: b", literal with
        # incremental indexing), then index 62 (that entry) once a byte.
        "indexed": h2.encode_headers(base) + b"\x40\x02xa\x01b" + b"\xbe" * size,
    }
    worst_cpu = worst_peak = 0.0
    for kind, block in blocks.items():
        p.server.reset_hwm()
        base_rss = p.server.rss_mib()
        cpu0 = p.server.cpu_s()
        outcome, seconds = _header_flood_once(p, block)
        time.sleep(1.0)  # CPU the server still spends after the answer counts
        cpu = p.server.cpu_s() - cpu0
        peak = p.server.hwm_mib() - base_rss
        p.measure("seconds_" + kind, round(seconds, 1))
        p.measure("cpu_s_" + kind, round(cpu, 2))
        p.measure("peak_mib_" + kind, round(peak, 1))
        p.check("outcome_" + kind, outcome)
        worst_cpu, worst_peak = max(worst_cpu, cpu), max(worst_peak, peak)
    p.measure("block_mib", size >> 20)
    p.check("cpu_s", round(worst_cpu, 2))
    p.check("peak_mib", round(worst_peak, 1))
    p.finish_bystander()


def _header_flood_once(p, block):
    """Sends `block` as HEADERS + CONTINUATIONs of 16 KiB and a message on
    a connection that never ACKs SETTINGS; returns (outcome, seconds)."""
    c = p.conn(ack=False)
    st = c.new_stream()
    frames = c.header_frames(st.sid, block, max_frame=16384)

    def sender():
        try:
            c.sock.sendall(frames)
            c.sock.sendall(h2.frame(h2.DATA, h2.END_STREAM, st.sid,
                                    h2.grpc_message(echo_request())))
        except OSError:
            pass  # the server closed or reset us: judged below
    t0 = time.monotonic()
    t = threading.Thread(target=sender, daemon=True)
    t.start()
    limit = 30.0
    try:
        c.pump(lambda: st.done or c.goaway is not None or c.closed, limit)
    except h2.HpackError as e:
        return "undecodable answer: %s" % e, time.monotonic() - t0
    elapsed = time.monotonic() - t0
    if st.reset is not None:
        outcome = "rst"
    elif st.grpc_code is not None and st.grpc_code != "OK":
        outcome = st.grpc_code
    elif st.http_status is not None and st.http_status != b"200":
        outcome = "http " + st.http_status.decode()
    elif st.grpc_code == "OK":
        outcome = "accepted"
    elif c.goaway is not None:
        outcome = "goaway"
    elif c.closed:
        outcome = "closed"
    else:
        outcome = "no answer in %ds" % limit
    c.close()
    t.join(5)
    return outcome, elapsed


@probe("metrics_lockout")
def p_metrics_lockout(p):
    """#13 item 10: 129 sockets from 127.0.0.2 each send an unfinished
    GET /metrics and hold it 5 s, while a scraper on 127.0.0.1 scrapes every
    0.5 s (2 s timeout); then 3 s more scrapes after they close."""
    p.start(metrics=True, bystander=False)
    mport = p.server.metrics_port

    def scrape():
        try:
            h = http.client.HTTPConnection("127.0.0.1", mport, timeout=2)
            h.request("GET", "/metrics")
            r = h.getresponse()
            body = r.read()
            h.close()
            return r.status == 200 and b"process_" in body
        except (OSError, http.client.HTTPException):
            return False
    if not scrape():
        raise SetupError("/metrics does not answer before the attack")
    held = []
    for _ in range(129):
        try:
            s = socket.create_connection(("127.0.0.1", mport), timeout=2,
                                         source_address=("127.0.0.2", 0))
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            held.append(s)
        except OSError:
            pass
    p.measure("held_sockets", len(held))

    def scrapes(seconds):
        n = failed = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.monotonic()
            n += 1
            failed += 0 if scrape() else 1
            time.sleep(max(0.0, 0.5 - (time.monotonic() - t0)))
        return n, failed
    n, failed = scrapes(5.0)
    p.measure("scrapes_during", n)
    p.check("scrapes_failed_during", failed)
    for s in held:
        s.close()
    n, failed = scrapes(3.0)
    p.measure("scrapes_after", n)
    p.check("scrapes_failed_after", failed)


@probe("log_flood")
def p_log_flood(p):
    """#13 item 11: 5,000 unary calls, each with a 7,000-byte invalid
    grpc-timeout, on 4 connections in windows of 100 calls."""
    total = 5000
    p.start()
    conns = [p.conn() for _ in range(4)]
    body = h2.grpc_message(echo_request())
    bad = "x" * 7000
    off = p.server.log_size()
    t0 = time.monotonic()
    answered = 0
    codes = {}
    sent = 0
    deadline = t0 + 60
    while sent < total and time.monotonic() < deadline:
        batch = []
        for c in conns:
            for _ in range(min(100, (total - sent) // len(conns) or 1)):
                if sent >= total:
                    break
                st = c.start_call(UNARY, timeout=bad)
                c.send(h2.frame(h2.DATA, h2.END_STREAM, st.sid, body))
                batch.append((c, st))
                sent += 1
        for c, st in batch:
            c.wait(st, max(0.0, deadline - time.monotonic()))
            if st.done:
                answered += 1
                k = st.grpc_code or ("rst" if st.reset is not None else "none")
                codes[k] = codes.get(k, 0) + 1
            c.streams.pop(st.sid, None)
    for c in conns:
        c.close()
    time.sleep(0.5)
    log = p.server.log_since(off)
    p.measure("calls", sent)
    p.measure("codes", codes)
    p.measure("seconds", round(time.monotonic() - t0, 1))
    p.check("unanswered", sent - answered)
    lines = log.count(b"\n")
    p.check("log_lines", lines)
    p.check("log_bytes", len(log))
    p.measure("longest_line", max((len(x) for x in log.split(b"\n")), default=0))


def _one_call(p, headers=(), messages=(), content_type="application/grpc",
              path=UNARY, wait=10.0):
    """One call on its own connection: headers, the given raw DATA payloads,
    END_STREAM. Returns (code-or-outcome, stream, conn-outcome)."""
    c = p.conn()
    st = c.start_call(path, extra=headers, content_type=content_type)
    data = b"".join(messages)
    c.send_data(st, data, end_stream=True, deadline=time.monotonic() + wait)
    c.wait(st, wait)
    c.close()
    if st.grpc_code is not None:
        return st.grpc_code, st
    if st.reset is not None:
        return "rst", st
    return "none", st


@probe("framing")
def p_framing(p):
    """#13 item 12: length-prefixed-message violations on a unary call."""
    p.start()
    req = echo_request()
    cases = {
        "short_body": [h2.grpc_message(req[:4], length=100)],
        "flag_without_encoding": [h2.grpc_message(h2.gzip_bytes(req), compressed=True)],
        "unknown_flag": [h2.grpc_message(req, flag=2)],
        "second_message": [h2.grpc_message(req), h2.grpc_message(req)],
    }
    for name, msgs in cases.items():
        code, st = _one_call(p, messages=msgs)
        p.measure("message_" + name, st.grpc_message)
        p.check("code_" + name, code)
    code, st = _one_call(p, headers=[("grpc-encoding", "snappy")],
                         messages=[h2.grpc_message(req, compressed=True)])
    p.measure("message_unsupported_encoding", st.grpc_message)
    p.measure("accept_encoding", (h2._hget(st.headers, b"grpc-accept-encoding") or b"").decode())
    p.check("code_unsupported_encoding", code)
    p.finish_bystander()


@probe("slowloris", heavy_param=True)
def p_slowloris(p):
    """Connections that never finish: half stop inside the preface, half
    inside a HEADERS frame (200; 1000 with --heavy), held 5 s."""
    n = 1000 if p.opts.heavy else 200
    p.start()
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", p.server.port), timeout=5)
        if i % 2 == 0:
            s.sendall(h2.PREFACE[:16])
        else:
            s.sendall(h2.PREFACE + h2.settings() + h2.SETTINGS_ACK)
            # A HEADERS frame that announces 1000 bytes and sends 10.
            s.sendall(struct.pack(">BHBBI", 0, 1000, h2.HEADERS, h2.END_HEADERS, 1) + b"\x10" * 10)
        socks.append(s)
    p.measure("conns", n)
    time.sleep(5.0)
    p.check("kib_per_conn", round((p.server.hwm_mib() - p.base_rss) * 1024 / n, 1))
    p.check("cpu_s", p.cpu_used())
    p.measure("closed_by_server", sum(1 for s in socks if _closed(s)))
    for s in socks:
        s.close()
    p.check("after_close_mib", p.settle_rss(p.bound("after_close_mib"), 5))
    p.check("fds_leaked", p.settle_fds(5))
    p.finish_bystander()


def _closed(s):
    s.setblocking(False)
    try:
        while True:
            d = s.recv(65536)
            if not d:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


@probe("idle_conns", heavy_param=True)
def p_idle_conns(p):
    """Idle HTTP/2 connections, handshake done and ACKed (1000; 4000 with
    --heavy): memory per connection, all of it and every fd returned."""
    n = 4000 if p.opts.heavy else 1000
    p.start()
    conns = []
    served = 0
    for _ in range(n):
        c = h2.H2Conn("127.0.0.1", p.server.port, timeout=5)
        if c.handshake(timeout=5):
            served += 1
        conns.append(c)
    time.sleep(1.0)
    for c in conns:  # the server's WINDOW_UPDATE and ACK, read
        c.pump(None, 0)
    p.measure("conns", n)
    p.measure("served", served)
    grow = p.server.rss_mib() - p.base_rss
    p.check("kib_per_conn", round(grow * 1024 / n, 1))
    p.measure("cpu_s", p.cpu_used())
    for c in conns:
        c.close()
    p.check("fds_leaked", p.settle_fds(10))
    p.check("after_close_mib", p.settle_rss(p.bound("after_close_mib"), 5))
    p.finish_bystander()


@probe("oversized")
def p_oversized(p):
    """A message declaring 64 MiB against the 4 MiB limit, of which up to
    16 MiB are offered (flow control permitting, no END_STREAM); then one
    of exactly limit + 1 bytes sent whole."""
    p.start()
    c = p.conn()
    st = c.start_call(UNARY)
    declared = 64 << 20
    data = struct.pack(">BI", 0, declared) + bytes((16 << 20) - 5)
    sent = c.send_data(st, data, deadline=time.monotonic() + 5)
    c.wait(st, 5)
    p.measure("accepted_mib_before_answer", round(sent / MIB, 1))
    p.check("code_declared_64mib", st.grpc_code or ("rst" if st.reset is not None else "none"))
    p.measure("message_declared_64mib", st.grpc_message)
    c.close()
    n = budgets.MAX_RECV_BYTES + 1
    msg = h2.grpc_message(h2.pb_bytes_field(1, bytes(n - 5)))  # payload field of n bytes total
    msg = struct.pack(">BI", 0, n) + msg[5:5 + n]
    code, st = _one_call(p, messages=[msg])
    p.check("code_limit_plus_one", code)
    p.check("peak_mib", p.peak_mib())
    p.finish_bystander()


@probe("unknown_method")
def p_unknown_method(p):
    p.start(bystander=False)
    body = h2.grpc_message(echo_request())
    code, st = _one_call(p, messages=[body], path="/bench.v1.Echo/NoSuchMethod")
    p.check("code_unknown_method", code)
    p.check("http_unknown_method", (st.http_status or b"none").decode())
    code, st = _one_call(p, messages=[body], path="/no.such.v1.Service/Call")
    p.check("code_unknown_service", code)


@probe("content_type")
def p_content_type(p):
    p.start(bystander=False)
    body = h2.grpc_message(echo_request())
    for key, ct in (("text_plain", "text/plain"), ("missing", None)):
        code, st = _one_call(p, messages=[body], content_type=ct)
        p.measure("code_" + key, code)
        p.check("http_" + key, (st.http_status or b"none").decode())
    code, st = _one_call(p, messages=[body], content_type="application/grpc+proto")
    p.check("code_grpc_proto", code)


@probe("garbage")
def p_garbage(p):
    """Protocol errors right after a good handshake, one connection each;
    the connection must close (GOAWAY or EOF within 3 s)."""
    p.start()
    hb = h2.encode_headers([(":method", "POST"), (":path", UNARY)])
    variants = {
        "random_bytes": bytes((i * 197 + 89) & 0xFF for i in range(4096)),
        "settings_len_5": h2.frame(h2.SETTINGS, 0, 0, b"\x00" * 5),
        "data_on_stream_0": h2.frame(h2.DATA, 0, 0, b"abc"),
        "bad_hpack_index": h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, 1, b"\xff\xff\xff\x7f"),
        "window_update_0": h2.window_update(0, 0),
        "oversized_frame": struct.pack(">BHBBI", 0xFF, 0xFFFF, h2.DATA, 0, 1) + bytes(1024),
        "continuation_alone": h2.frame(h2.CONTINUATION, h2.END_HEADERS, 1, hb),
        "even_stream_id": h2.frame(h2.HEADERS, h2.END_HEADERS, 2, hb),
    }
    still_open = []
    outcomes = {}
    for name, payload in variants.items():
        c = p.conn()
        try:
            c.send(payload)
        except h2.ConnectionClosed:
            pass
        try:
            c.pump(lambda: c.closed or c.goaway is not None, 3.0)
        except h2.HpackError as e:
            outcomes[name] = "undecodable answer: %s" % e
        if c.goaway is not None:
            outcomes[name] = "goaway %d" % c.goaway[1]
        elif c.closed:
            outcomes[name] = "closed"
        else:
            outcomes.setdefault(name, "open")
            still_open.append(name)
        c.close()
    # HTTP/1.1 where the preface should be.
    s = socket.create_connection(("127.0.0.1", p.server.port), timeout=3)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        s.settimeout(3)
        while s.recv(65536):
            pass
        outcomes["http1_request"] = "closed"
    except socket.timeout:
        outcomes["http1_request"] = "open"
        still_open.append("http1_request")
    except OSError:
        outcomes["http1_request"] = "closed"
    s.close()
    p.measure("outcomes", outcomes)
    p.check("variants_open", len(still_open))
    code, _ = _one_call(p, messages=[h2.grpc_message(echo_request())])
    p.check("alive", p.server.alive() and code == "OK")
    p.finish_bystander()


FAST = ["unknown_method", "content_type", "framing", "garbage", "oversized",
        "header_flood", "log_flood", "metrics_lockout", "slowloris",
        "idle_conns", "bomb", "rapid_reset", "no_budget"]


def run_probe(name, opts):
    p = Probe(name, opts)
    t0 = time.monotonic()
    err = None
    try:
        PROBES[name](p)
    except SetupError as e:
        err = "setup: %s" % e
    except Exception as e:  # a probe crash is a failure, with its reason
        import traceback
        traceback.print_exc()
        err = "%s: %s" % (type(e).__name__, e)
    finally:
        try:
            p.close()
        except Exception as e:  # noqa: BLE001 (reported, not raised)
            err = err or "close: %s" % e
    failed = [c for c in p.checks if not c[3]]
    variant = "heavy" if opts.heavy else "fast"
    print("adversarial: %s (transport %s%s, %s variant, %.1f s)" % (
        name, p.transport, "" if opts.transport else " by default", variant,
        time.monotonic() - t0))
    for k, v in p.m.items():
        if not any(c[0] == k for c in p.checks):
            print("  %-28s %s" % (k, json.dumps(v, default=str)))
    for key, value, b, ok, reason in p.checks:
        shown = sorted(b, key=str) if isinstance(b, (set, frozenset)) else "<= %s" % b
        print("  %-28s %-22s %s %s%s" % (key, json.dumps(value, default=str), shown,
                                        "ok" if ok else "FAIL",
                                        "  (known: %s)" % reason if reason else ""))
    if err:
        print("  ERROR %s" % err)
    result = {"probe": name, "transport": p.transport, "variant": variant,
              "ok": not failed and not err, "error": err,
              "measured": p.m,
              "failed": [c[0] for c in failed]}
    if opts.json:
        with open(opts.json, "a") as f:
            f.write(json.dumps(result, default=str) + "\n")
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("probes", nargs="*")
    ap.add_argument("--bin-dir", default=os.path.join(HERE, "..", "..", "build", "bin"))
    ap.add_argument("--server", default=os.environ.get("PERFC_ADV_SERVER"))
    ap.add_argument("--transport", default=os.environ.get("PERFC_ADV_TRANSPORT") or None)
    ap.add_argument("--heavy", action="store_true")
    # The server is built with -fsanitize=VALUE (CMake passes
    # PERFC_SANITIZE): memory and CPU bounds are then not judged.
    ap.add_argument("--sanitizer", default=os.environ.get("PERFC_ADV_SANITIZER", ""))
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--work", default=None)
    ap.add_argument("--deadline-ms", type=int,
                    default=int(os.environ.get("PERFC_ADV_DEADLINE_MS", "2000")))
    ap.add_argument("--list", action="store_true")
    opts = ap.parse_args()
    if opts.list:
        for n in FAST:
            print("%-16s %s" % (n, (PROBES[n].__doc__ or "").strip().split("\n")[0]))
        return 0
    opts.server = opts.server or os.path.join(opts.bin_dir, "perfc-echo-server")
    if not os.access(opts.server, os.X_OK):
        print("run.py: no server binary %s" % opts.server, file=sys.stderr)
        return 2
    opts.work = opts.work or os.path.join(os.path.dirname(os.path.abspath(opts.server)),
                                          "..", "adversarial")
    names = opts.probes or ["all"]
    if names == ["all"]:
        names = FAST
    for n in names:
        if n not in PROBES:
            print("run.py: unknown probe %s (--list)" % n, file=sys.stderr)
            return 2
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    # A whole-run bound: no probe hangs the suite.
    signal.signal(signal.SIGALRM, _on_signal)
    signal.alarm(600 * len(names))
    results = []
    try:
        for n in names:
            results.append(run_probe(n, opts))
    finally:
        _kill_children()
    bad = [r["probe"] for r in results if not r["ok"]]
    if bad:
        print("adversarial: FAILED %s" % " ".join(bad))
    return 0 if opts.report or not bad else 1


if __name__ == "__main__":
    sys.exit(main())
