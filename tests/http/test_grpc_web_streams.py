#!/usr/bin/env python3
"""gRPC-Web client and bidi streams (issue #18 items 5 and 10), against
perfc-http-test-server.

A gRPC-Web request body holds gRPC's length-prefixed frames; perfc hands
each message to the handler as it arrives and streams the answers back as
frames, the status in a last frame (flag 0x80). Driven here over:
- HTTP/1.1 with Content-Length and chunked (http.client, raw sockets);
- HTTP/2 with python3-h2 (Debian's `python3-h2`, a sans-IO HTTP/2 client:
  DATA frames sent one at a time, answers read as they come);
binary (`application/grpc-web+proto`) and text (`-text`, base64) modes.

Bidi is checked lock-step: one message sent, its echo read before the
next is sent (the request body is still open), so an implementation that
waits for the end of the body fails by timeout. Errors mid-stream (the
handler's status in the trailers frame), a body over the server's limit,
a message past max_recv_message_bytes, and malformed frames (a length
prefix past the end of the body, an unknown flag byte, a body that is not
base64) each get their status in the trailers, within a bounded time,
and the server keeps serving. Client and bidi methods over HTTP/JSON on
HTTP/2 answer 501 with a google.rpc.Status. HTTP/1.1's bounds: the
socket is not read while a handler is behind (the server's RSS while
48 MiB are pushed at a sleeping handler), a stream's silences end at the
idle timeout (not at the 10 s bound on a whole request), a client's
reset of an unread connection costs no CPU. Some of it again over TLS.

The test server's Upload answers size = count and id = sum of the ids;
Chat echoes; a message named "fail" ends them with FAILED_PRECONDITION
(9) or ABORTED (10).

Usage: test_grpc_web_streams.py SERVER_BINARY
"""
import base64
import http.client
import json
import os
import socket
import subprocess
import sys
import time

SERVER = sys.argv[1]
MAX_BODY = 65536
FAILED = []
BIN = "application/grpc-web+proto"
TEXT = "application/grpc-web-text"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


TLS = None  # an ssl.SSLContext while the TLS test runs


def connect(alpn):
    """A connection to the server: plain, or TLS offering `alpn`."""
    s = socket.create_connection((HOST, PORT), timeout=10)
    if TLS is None:
        return s
    import ssl
    ctx = ssl.create_default_context(cafile=TLS)
    ctx.set_alpn_protocols(alpn)
    t = ctx.wrap_socket(s, server_hostname="localhost")
    check(t.selected_alpn_protocol() == alpn[0], t.selected_alpn_protocol())
    return t


def start(max_body=MAX_BODY, *extra):
    wrap = os.environ.get("HTTP_TEST_WRAP", "").split()
    p = subprocess.Popen([*wrap, SERVER, "--max-body", str(max_body),
                          "--threads", "2", *extra], stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if not line.startswith("listening on "):
        p.kill()
        raise SystemExit(f"server did not start: {line!r}")
    host, port = line.split()[-1].rsplit(":", 1)
    p.stdout.readline()  # metrics on ...
    return p, host, int(port)


# ---- protobuf by hand (web.v1.Thing: id=1 int64, name=2 string) ---------------

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def thing(id_=0, name=""):
    b = b""
    if id_:
        b += b"\x08" + varint(id_)
    if name:
        nb = name.encode()
        b += b"\x12" + varint(len(nb)) + nb
    return b


def parse_thing(b):
    out, i = {}, 0
    while i < len(b):
        key = b[i]
        i += 1
        f, wt = key >> 3, key & 7
        if wt == 0:
            v, s = 0, 0
            while True:
                c = b[i]
                i += 1
                v |= (c & 0x7F) << s
                s += 7
                if not c & 0x80:
                    break
            out[{1: "id", 4: "size"}.get(f, f)] = v
        elif wt == 2:
            n = b[i]
            i += 1
            out[{2: "name"}.get(f, f)] = b[i:i + n].decode()
            i += n
        else:
            raise ValueError(f"wire type {wt}")
    return out


def frame(msg, flag=0):
    return bytes([flag]) + len(msg).to_bytes(4, "big") + msg


class Frames:
    """Incremental gRPC-Web answer decoder: bytes (base64 in text mode, in
    4-character groups that each write pads on its own) in, frames out."""

    def __init__(self, text):
        self.text, self.b64, self.buf = text, b"", b""
        self.msgs, self.trailers = [], None

    def feed(self, data):
        if self.text:
            self.b64 += data
            n = len(self.b64) // 4 * 4
            self.buf += b"".join(base64.b64decode(self.b64[i:i + 4])
                                 for i in range(0, n, 4))
            self.b64 = self.b64[n:]
        else:
            self.buf += data
        while len(self.buf) >= 5:
            flag, n = self.buf[0], int.from_bytes(self.buf[1:5], "big")
            if len(self.buf) < 5 + n:
                break
            payload, self.buf = self.buf[5:5 + n], self.buf[5 + n:]
            if flag & 0x80:
                check(self.trailers is None, "two trailers frames")
                self.trailers = dict(
                    l.split(":", 1) for l in payload.decode().split("\r\n") if l)
            else:
                check(self.trailers is None, "a message after the trailers")
                self.msgs.append(payload)

    def done(self):
        check(self.b64 == b"" and self.buf == b"", ("left over", self.b64, self.buf))
        check(self.trailers is not None, "no trailers frame")
        return self.msgs, self.trailers


def enc(body, text):
    return base64.b64encode(body) if text else body


# ---- HTTP/1.1 ------------------------------------------------------------------

def h1_call(path, body, text=False, chunked=False, encoded=False):
    """A whole gRPC-Web call over http.client; body bytes (Content-Length)
    or, chunked, a list of pieces each sent as a chunk (each base64'd on
    its own in text mode, unless `encoded`: then sent as they are)."""
    ct = TEXT if text else BIN
    c = http.client.HTTPConnection(HOST, PORT, timeout=10)
    h = {"content-type": ct, "x-grpc-web": "1"}
    if chunked:
        c.request("POST", path, body=iter([b if encoded else enc(b, text) for b in body]),
                  headers=h, encode_chunked=True)
    else:
        c.request("POST", path, body=enc(body, text), headers=h)
    r = c.getresponse()
    data = r.read()
    check(r.status == 200, (r.status, data[:200]))
    check(r.getheader("content-type") == ct + ("" if ct.endswith("+proto") else "+proto"),
          r.getheader("content-type"))
    c.close()
    f = Frames(text)
    f.feed(data)
    return f.done()


class H1Stream:
    """A gRPC-Web call over a raw HTTP/1.1 socket with a chunked request
    body, read as the answer arrives (chunked too)."""

    def __init__(self, path, text=False, extra=b"", length=None):
        """length: a Content-Length body of that many bytes (sent raw by
        send(); no chunks), else a chunked one."""
        self.text, self.length = text, length
        self.s = connect(["http/1.1"])
        ct = (TEXT if text else BIN).encode()
        framing = (b"Content-Length: %d\r\n" % length if length is not None
                   else b"Transfer-Encoding: chunked\r\n")
        self.s.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: t\r\n"
                       b"Content-Type: " + ct + b"\r\nX-Grpc-Web: 1\r\n" + extra +
                       framing + b"\r\n")
        self.raw = b""
        self.head = None
        self.frames = Frames(text)
        self.ended = False

    def send(self, msg, flag=0):
        self.send_raw(enc(frame(msg, flag), self.text))

    def send_raw(self, data):
        if self.length is not None:
            self.s.sendall(data)
        else:
            self.s.sendall(b"%x\r\n" % len(data) + data + b"\r\n")

    def end(self):
        self.s.sendall(b"0\r\n\r\n")

    def _fill(self, deadline):
        self.s.settimeout(max(0.05, deadline - time.monotonic()))
        d = self.s.recv(65536)
        if not d:
            raise EOFError("connection closed")
        self.raw += d

    def _pump(self):
        if self.head is None:
            i = self.raw.find(b"\r\n\r\n")
            if i < 0:
                return
            self.head, self.raw = self.raw[:i].decode(), self.raw[i + 4:]
            check(self.head.startswith("HTTP/1.1 200 "), self.head)
            check("transfer-encoding: chunked" in self.head.lower(), self.head)
        while not self.ended:
            i = self.raw.find(b"\r\n")
            if i < 0:
                return
            n = int(self.raw[:i], 16)
            if len(self.raw) < i + 2 + n + 2:
                return
            chunk = self.raw[i + 2:i + 2 + n]
            check(self.raw[i + 2 + n:i + 4 + n] == b"\r\n", "chunk framing")
            self.raw = self.raw[i + 4 + n:]
            if n == 0:
                self.ended = True
            else:
                self.frames.feed(chunk)

    def read_msgs(self, count, timeout=5):
        deadline = time.monotonic() + timeout
        while len(self.frames.msgs) < count and self.frames.trailers is None:
            check(time.monotonic() < deadline,
                  f"no answer within {timeout}s ({len(self.frames.msgs)} of {count})")
            self._fill(deadline)
            self._pump()
        return self.frames.msgs[:count]

    def finish(self, timeout=5):
        deadline = time.monotonic() + timeout
        while not self.ended:
            check(time.monotonic() < deadline, f"no end within {timeout}s")
            self._fill(deadline)
            self._pump()
        return self.frames.done()

    def close(self):
        self.s.close()


def h1_connection_closes(s, timeout=5):
    """True when the server closes the connection within timeout."""
    s.settimeout(timeout)
    try:
        while s.recv(65536):
            pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


# ---- HTTP/2 (python3-h2) --------------------------------------------------------

class H2:
    """One HTTP/2 connection (prior knowledge, h2c) driven by python3-h2."""

    def __init__(self):
        import h2.config
        import h2.connection
        self.s = connect(["h2"])
        self.c = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.c.initiate_connection()
        self.s.sendall(self.c.data_to_send())
        self.streams = {}

    def open(self, path, method="POST", ctype=BIN, end=False, extra=()):
        sid = self.c.get_next_available_stream_id()
        hdrs = [(":method", method), (":path", path), (":scheme", "http"),
                (":authority", f"{HOST}:{PORT}"), ("content-type", ctype),
                ("x-grpc-web", "1"), *extra]
        self.c.send_headers(sid, hdrs, end_stream=end)
        self.s.sendall(self.c.data_to_send())
        self.streams[sid] = {"headers": None, "data": b"", "ended": False,
                             "reset": None, "trailers": None}
        return sid

    def send(self, sid, data, end=False):
        # python3-h2 honours the peer's windows: a send past them would raise
        while data:
            room = min(self.c.local_flow_control_window(sid),
                       self.c.max_outbound_frame_size)
            if room <= 0:
                self.pump(time.monotonic() + 5)
                continue
            piece, data = data[:room], data[room:]
            self.c.send_data(sid, piece, end_stream=end and not data)
            self.s.sendall(self.c.data_to_send())

    def end(self, sid):
        self.c.end_stream(sid)
        self.s.sendall(self.c.data_to_send())

    def pump(self, deadline):
        import h2.events
        self.s.settimeout(max(0.05, deadline - time.monotonic()))
        d = self.s.recv(65536)
        if not d:
            raise EOFError("connection closed")
        for ev in self.c.receive_data(d):
            st = self.streams.get(getattr(ev, "stream_id", None))
            if isinstance(ev, h2.events.ResponseReceived):
                st["headers"] = dict(ev.headers)
            elif isinstance(ev, h2.events.TrailersReceived):
                st["trailers"] = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                st["data"] += ev.data
                self.c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                st["ended"] = True
            elif isinstance(ev, h2.events.StreamReset):
                st["reset"] = ev.error_code
                st["ended"] = True
        out = self.c.data_to_send()
        if out:
            self.s.sendall(out)

    def wait(self, sid, cond, timeout=5, what="answer"):
        deadline = time.monotonic() + timeout
        while not cond(self.streams[sid]):
            check(time.monotonic() < deadline, f"no {what} within {timeout}s")
            self.pump(deadline)

    def close(self):
        self.s.close()


def h2_web(conn, sid, text, count=None, timeout=5):
    """The stream's frames so far (count messages awaited) or, with count
    None, the whole answer once the stream ended."""
    st = conn.streams[sid]
    if count is None:
        conn.wait(sid, lambda s: s["ended"], timeout, "end of stream")
    else:
        def enough(s):
            f = Frames(text)
            f.feed(s["data"])
            return len(f.msgs) >= count or f.trailers is not None or s["ended"]
        conn.wait(sid, enough, timeout, f"{count} messages")
    check(st["headers"] is not None and st["headers"][":status"] == "200", st["headers"])
    check(st["headers"]["content-type"] == (TEXT + "+proto" if text else BIN),
          st["headers"])
    f = Frames(text)
    f.feed(st["data"])
    if count is None:
        check(st["reset"] in (None, 0), ("reset", st["reset"]))
        return f.done()
    return f.msgs, f.trailers


# ---- tests ---------------------------------------------------------------------

N = 50
IDS_SUM = N * (N + 1) // 2


def test_client_stream_h1():
    """Upload: N frames over HTTP/1.1, Content-Length and chunked (one
    message a chunk, and frames split across chunks), binary and text."""
    msgs = [frame(thing(i, f"m{i}")) for i in range(1, N + 1)]
    for text in (False, True):
        out, tr = h1_call("/web.v1.Web/Upload", b"".join(msgs), text=text)
        check(tr["grpc-status"] == "0" and len(out) == 1, (text, out, tr))
        check(parse_thing(out[0]) == {"id": IDS_SUM, "size": N}, parse_thing(out[0]))
        out, tr = h1_call("/web.v1.Web/Upload", msgs, text=text, chunked=True)
        check(tr["grpc-status"] == "0" and
              parse_thing(out[0]) == {"id": IDS_SUM, "size": N}, (text, out, tr))
        # the frames cut at arbitrary places: prefixes split over chunks
        # and, in text mode, base64 quads too (7 characters a chunk)
        whole = enc(b"".join(msgs), text)
        pieces = [whole[i:i + 7] for i in range(0, len(whole), 7)]
        out, tr = h1_call("/web.v1.Web/Upload", pieces, text=text, chunked=True,
                          encoded=True)
        check(tr["grpc-status"] == "0" and
              parse_thing(out[0]) == {"id": IDS_SUM, "size": N}, (text, out, tr))
    # no message at all: a client stream may be empty
    out, tr = h1_call("/web.v1.Web/Upload", b"")
    check(tr["grpc-status"] == "0" and out == [b""], (out, tr))


def test_bidi_h1_chunked():
    """Chat over chunked HTTP/1.1, lock-step: each echo is read before the
    next message is sent, the request body still open."""
    for text in (False, True):
        st = H1Stream("/web.v1.Web/Chat", text=text)
        try:
            for i in range(1, 6):
                st.send(thing(i, f"hello {i}"))
                got = st.read_msgs(i)
                check(len(got) == i and parse_thing(got[-1]) ==
                      {"id": i, "name": f"hello {i}"}, (text, i, got))
            st.end()
            msgs, tr = st.finish()
            check(len(msgs) == 5 and tr["grpc-status"] == "0", (text, msgs, tr))
        finally:
            st.close()


def test_bidi_h1_content_length():
    """Bidi lock-step with a Content-Length body: the answers leave before
    the body's announced end, which is the half-close."""
    msgs_in = [frame(thing(i, f"cl {i}")) for i in range(1, 4)]
    st = H1Stream("/web.v1.Web/Chat", length=sum(map(len, msgs_in)))
    try:
        for i, m in enumerate(msgs_in, start=1):
            st.send_raw(m)
            got = st.read_msgs(i)
            check(len(got) == i and parse_thing(got[-1]) == {"id": i, "name": f"cl {i}"},
                  (i, got))
        msgs, tr = st.finish()
        check(len(msgs) == 3 and tr["grpc-status"] == "0", (msgs, tr))
    finally:
        st.close()


def test_bidi_h1_idle():
    """A gRPC-Web bidi stream on HTTP/1.1 whose client falls silent is
    closed after the idle timeout (1 s on this server), and its handler
    sees the cancel: the server serves on."""
    global HOST, PORT
    saved = HOST, PORT
    p, HOST, PORT = start(MAX_BODY, "--idle-ms", "1000")
    try:
        st = H1Stream("/web.v1.Web/Chat")
        st.send(thing(1, "then silence"))
        check(len(st.read_msgs(1)) == 1, "first echo")
        t0 = time.monotonic()
        check(h1_connection_closes(st.s, timeout=10), "not closed after 10 s of silence")
        waited = time.monotonic() - t0
        check(0.5 <= waited <= 5, f"closed after {waited:.1f} s (idle 1 s)")
        st.close()
        out, tr = h1_call("/web.v1.Web/Upload", frame(thing(4, "z")))
        check(tr["grpc-status"] == "0" and parse_thing(out[0]) == {"id": 4, "size": 1}, tr)
    finally:
        p.terminate()
        rc = p.wait(timeout=60)
        HOST, PORT = saved
    check(rc in (0, -15), f"the idle server exited {rc}")


def test_bidi_h1_pause():
    """A pause longer than the 10 s bound on a whole HTTP/1.1 request's
    arrival (handshake_timeout) does not end a gRPC-Web bidi stream: its
    silences are bounded by the idle timeout (60 s) instead. Regression:
    the connection was closed 10 s after the request's first byte."""
    st = H1Stream("/web.v1.Web/Chat")
    try:
        st.send(thing(1, "before"))
        check(len(st.read_msgs(1)) == 1, "first echo")
        time.sleep(11)
        st.send(thing(2, "after"))
        got = st.read_msgs(2)
        check(parse_thing(got[1]) == {"id": 2, "name": "after"}, got)
        st.end()
        msgs, tr = st.finish()
        check(len(msgs) == 2 and tr["grpc-status"] == "0", (msgs, tr))
    finally:
        st.close()


def test_errors_mid_stream_h1():
    # Chat: two echoes, then the handler's status in the trailers; the
    # request body is still open when the answer ends
    st = H1Stream("/web.v1.Web/Chat")
    try:
        st.send(thing(1, "a"))
        st.send(thing(2, "b"))
        check(len(st.read_msgs(2)) == 2, "two echoes")
        st.send(thing(3, "fail"))
        st.read_msgs(3)
        check(st.frames.trailers is not None, "trailers after the failure")
        check(st.frames.trailers["grpc-status"] == "10" and
              st.frames.trailers["grpc-message"] == "chat aborted at message 3",
              st.frames.trailers)
        check(len(st.frames.msgs) == 2, st.frames.msgs)
        # the rest of the body is read (discarded), then the next request
        st.send(thing(4, "late"))
        st.end()
        msgs, tr = st.finish()
        check(tr["grpc-status"] == "10", tr)
        st.s.sendall(b"GET /v1/whoami HTTP/1.1\r\nHost: t\r\n\r\n")
        st.s.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data:
            d = st.s.recv(4096)
            check(d, "closed before the next answer")
            data += d
        check(data.startswith(b"HTTP/1.1 200 "), data[:60])
    finally:
        st.close()
    # Upload: the status the handler returned at message 3 of 5
    body = b"".join(frame(thing(i, "fail" if i == 3 else "x")) for i in range(1, 6))
    for text in (False, True):
        out, tr = h1_call("/web.v1.Web/Upload", body, text=text)
        check(out == [] and tr["grpc-status"] == "9" and
              tr["grpc-message"] == "upload refused at message 3", (text, out, tr))


def test_body_limit_h1():
    """HTTP/1.1 has no flow control: a gRPC-Web body is bounded by the
    server's max_body_bytes (64 KiB here). Chunks past it end the call
    RESOURCE_EXHAUSTED, then the connection closes (the rest is not read);
    a Content-Length over it is refused before the body."""
    st = H1Stream("/web.v1.Web/Upload")
    try:
        one = frame(thing(1, "x" * 1000))
        sent = 0
        try:
            while sent < 4 * MAX_BODY:
                st.send_raw(one)
                sent += len(one)
        except (BrokenPipeError, ConnectionResetError):
            pass
        msgs, tr = st.finish()
        check(msgs == [] and tr["grpc-status"] == "8" and
              "larger than the server's limit" in tr["grpc-message"], (msgs, tr))
        check(h1_connection_closes(st.s), "connection not closed after the limit")
    finally:
        st.close()
    # a call that ended (its handler failed) while the client sends on:
    # the rest is read and dropped, but bounded too: past the limit the
    # connection closes (it was read for ever)
    st = H1Stream("/web.v1.Web/Chat")
    try:
        st.send(thing(1, "fail"))
        st.read_msgs(1)
        check(st.frames.trailers is not None and
              st.frames.trailers["grpc-status"] == "10", st.frames.trailers)
        one = frame(thing(2, "x" * 1000))
        try:
            for _ in range(4 * MAX_BODY // len(one)):
                st.send_raw(one)
        except (BrokenPipeError, ConnectionResetError):
            pass
        msgs, tr = st.finish()
        check(tr["grpc-status"] == "10", tr)
        check(h1_connection_closes(st.s), "connection not closed past the limit")
    finally:
        st.close()
    # the same as a Content-Length: refused at the head, as gRPC-Web (200
    # and the status in a trailers frame, as a gRPC-Web client reads it),
    # then the connection closes (the body is never read); an HTTP/JSON
    # request over the limit gets 413
    for text in (False, True):
        s = socket.create_connection((HOST, PORT), timeout=10)
        try:
            s.sendall(b"POST /web.v1.Web/Upload HTTP/1.1\r\nHost: t\r\n"
                      b"Content-Type: " + (TEXT if text else BIN).encode() + b"\r\n"
                      b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1))
            data = b""
            s.settimeout(5)
            while True:
                d = s.recv(65536)
                if not d:
                    break
                data += d
            head, body = data.split(b"\r\n\r\n", 1)
            check(head.startswith(b"HTTP/1.1 200 ") and b"connection: close" in head.lower(),
                  head)
            chunks, rest = b"", body
            while rest:
                i = rest.index(b"\r\n")
                n = int(rest[:i], 16)
                chunks += rest[i + 2:i + 2 + n]
                rest = rest[i + 4 + n:]
            f = Frames(text)
            f.feed(chunks)
            msgs, tr = f.done()
            check(msgs == [] and tr["grpc-status"] == "8" and tr["grpc-message"] ==
                  f"request body of {MAX_BODY + 1} bytes is larger than the server's "
                  f"{MAX_BODY}-byte limit", tr)
        finally:
            s.close()
    s = socket.create_connection((HOST, PORT), timeout=10)
    try:
        s.sendall(b"POST /v1/upload HTTP/1.1\r\nHost: t\r\n"
                  b"Content-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1))
        s.settimeout(5)
        data = s.recv(65536)
        check(data.startswith(b"HTTP/1.1 413 "), data[:80])
    finally:
        s.close()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backpressure_run(p):
    """Upload: 768 x 64 KiB pushed into a handler asleep 2 s at its first
    message; the server's RSS meanwhile, then every message delivered."""
    import threading
    base = rss_kib(p.pid)
    st = H1Stream("/web.v1.Web/Upload")
    n, pad = 768, "p" * (64 * 1024 - 16)
    sent = [0]

    def push():
        try:
            st.send(thing(1, "slow"))
            for i in range(2, n + 1):
                st.send(thing(i, pad))
                sent[0] = i
            st.end()
        except OSError:  # the check below fails then
            pass
    st.s.settimeout(30)
    th = threading.Thread(target=push, daemon=True)
    th.start()
    time.sleep(1.5)  # inside the handler's 2 s sleep
    grown = rss_kib(p.pid) - base
    during = sent[0]
    th.join(timeout=30)
    check(not th.is_alive() and sent[0] == n, ("sender stuck", sent[0]))
    msgs, tr = st.finish(timeout=30)
    st.close()
    check(tr["grpc-status"] == "0" and
          parse_thing(msgs[0]) == {"id": n * (n + 1) // 2, "size": n}, (tr, msgs))
    print(f"     backpressure: {during} of {n} messages sent during the "
          f"handler's sleep, server RSS +{grown} KiB", flush=True)
    check(grown < 8 * 1024, f"server RSS grew by {grown} KiB while the handler slept")
    check(during < n // 2, f"{during} of {n} messages accepted while the handler slept")
    return pad


def test_backpressure_h1():
    """HTTP/1.1 has no flow control: while a client stream's handler is
    behind, the server stops reading the socket (TCP holds the client)
    instead of buffering what arrives. A server with a 256 MiB body limit;
    Upload sleeps 2 s at its first message while the client pushes 48 MiB
    (768 messages of 64 KiB): the server's RSS grows by less than 8 MiB
    meanwhile (it grew by the whole 48 MiB before), and every message is
    then delivered (count and sum of ids)."""
    import threading
    global HOST, PORT
    saved = HOST, PORT
    p, HOST, PORT = start(256 << 20)
    try:
        pad = backpressure_run(p)
        n = 768
        # The handler fails while its queue is full (the socket not read):
        # the status goes out, the rest of the body is read and dropped,
        # the connection serves its next request. Regression: the socket
        # stayed unread, the client's send blocked for ever.
        st = H1Stream("/web.v1.Web/Upload")
        sent = [0]

        def push_fail():
            try:
                st.send(thing(1, "slow"))
                for i in range(2, 200):
                    st.send(thing(i, pad))
                st.send(thing(200, "fail"))
                for i in range(201, n + 1):
                    st.send(thing(i, pad))
                    sent[0] = i
                st.end()
            except OSError:
                pass
        st.s.settimeout(30)
        th = threading.Thread(target=push_fail, daemon=True)
        th.start()
        th.join(timeout=30)
        check(not th.is_alive() and sent[0] == n, ("sender stuck after the failure", sent[0]))
        msgs, tr = st.finish(timeout=10)
        check(msgs == [] and tr["grpc-status"] == "9" and
              tr["grpc-message"] == "upload refused at message 200", tr)
        st.s.sendall(b"GET /v1/whoami HTTP/1.1\r\nHost: t\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            d = st.s.recv(4096)
            check(d, "closed before the next answer")
            data += d
        check(data.startswith(b"HTTP/1.1 200 "), data[:60])
        st.close()
        # A client that resets its connection while the handler is behind
        # (the socket not read): the server neither spins on the error
        # (CPU over the handler's sleep below 0.5 s) nor keeps the call
        # (the next call is served).
        import struct
        st = H1Stream("/web.v1.Web/Upload")
        st.send(thing(1, "slow"))
        st.s.setblocking(False)
        try:
            for i in range(2, n + 1):
                st.send(thing(i, pad))
        except (BlockingIOError, OSError):
            pass
        cpu0 = cpu_s(p.pid)
        st.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        st.s.close()  # RST
        time.sleep(1.5)
        spent = cpu_s(p.pid) - cpu0
        print(f"     reset while paused: server CPU {spent:.2f} s in 1.5 s", flush=True)
        check(spent < 0.5, f"server spent {spent:.2f} s of CPU after the reset")
        out, tr = h1_call("/web.v1.Web/Upload", frame(thing(3, "z")))
        check(tr["grpc-status"] == "0" and parse_thing(out[0]) == {"id": 3, "size": 1}, tr)
        # The same for an HTTP/JSON request whose handler is still working
        # (the connection is not read while its answer is owed).
        s2 = socket.create_connection((HOST, PORT), timeout=10)
        body = b'{"sleepMs":2000}'
        s2.sendall(b"POST /v1/fail HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n" % len(body) + body)
        time.sleep(0.2)
        cpu0 = cpu_s(p.pid)
        s2.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s2.close()
        time.sleep(1.5)
        spent = cpu_s(p.pid) - cpu0
        print(f"     reset during a JSON call: server CPU {spent:.2f} s in 1.5 s", flush=True)
        check(spent < 0.5, f"server spent {spent:.2f} s of CPU after the reset")
    finally:
        p.terminate()
        rc = p.wait(timeout=60)
        HOST, PORT = saved
    check(rc in (0, -15), f"the second server exited {rc}")


def test_malformed_h1():
    cases = [
        # a length prefix announcing 100 bytes, 3 sent
        (b"\x00\x00\x00\x00\x64abc", "13",
         "the stream ended before the length its prefix announced"),
        # a prefix cut short
        (b"\x00\x00\x00", "13",
         "the stream ended before the length its prefix announced"),
        # an unknown flag byte
        (b"\x7f\x00\x00\x00\x00", "13", "unknown message flag byte"),
        # a frame past max_recv_message_bytes (4 MiB): refused on its prefix
        (b"\x00\x00\x50\x00\x00", "8", "max_recv_message_bytes"),
    ]
    for path in ("/web.v1.Web/Upload", "/web.v1.Web/Chat", "/web.v1.Web/GetThing"):
        for body, code, words in cases:
            for text in (False, True):
                t0 = time.monotonic()
                out, tr = h1_call(path, frame(thing(1, "ok")) + body
                                  if path != "/web.v1.Web/GetThing" else body,
                                  text=text)
                check(tr["grpc-status"] == code and words in tr.get("grpc-message", ""),
                      (path, body, text, out, tr))
                check(time.monotonic() - t0 < 5, "slow answer")
    # a text body that is not base64, mid-stream, on a chunked bidi call
    st = H1Stream("/web.v1.Web/Chat", text=True)
    try:
        st.send(thing(1, "a"))
        check(len(st.read_msgs(1)) == 1, "first echo")
        st.send_raw(b"!!!!")
        st.end()
        msgs, tr = st.finish()
        check(len(msgs) == 1 and tr["grpc-status"] == "13" and
              "not base64" in tr["grpc-message"], (msgs, tr))
    finally:
        st.close()


def test_client_stream_h2():
    c = H2()
    try:
        for text in (False, True):
            ct = TEXT if text else BIN
            sid = c.open("/web.v1.Web/Upload", ctype=ct)
            for i in range(1, N + 1):  # one DATA frame a message
                c.send(sid, enc(frame(thing(i, f"m{i}")), text))
            c.end(sid)
            msgs, tr = h2_web(c, sid, text)
            check(tr["grpc-status"] == "0" and
                  parse_thing(msgs[0]) == {"id": IDS_SUM, "size": N}, (text, msgs, tr))
            # 7-byte DATA frames: prefixes (and base64 quads) split across them
            whole = enc(b"".join(frame(thing(i, f"m{i}")) for i in range(1, N + 1)), text)
            sid = c.open("/web.v1.Web/Upload", ctype=ct)
            for i in range(0, len(whole), 7):
                c.send(sid, whole[i:i + 7])
            c.end(sid)
            msgs, tr = h2_web(c, sid, text)
            check(tr["grpc-status"] == "0" and
                  parse_thing(msgs[0]) == {"id": IDS_SUM, "size": N}, (text, msgs, tr))
        # the handler's error at message 3
        sid = c.open("/web.v1.Web/Upload")
        c.send(sid, b"".join(frame(thing(i, "fail" if i == 3 else "x"))
                             for i in range(1, 6)), end=True)
        msgs, tr = h2_web(c, sid, False)
        check(msgs == [] and tr["grpc-status"] == "9" and
              tr["grpc-message"] == "upload refused at message 3", (msgs, tr))
    finally:
        c.close()


def test_bidi_h2():
    """Chat over HTTP/2, lock-step, two calls interleaved on one connection."""
    c = H2()
    try:
        for text in (False, True):
            ct = TEXT if text else BIN
            a = c.open("/web.v1.Web/Chat", ctype=ct)
            b = c.open("/web.v1.Web/Chat", ctype=ct)
            for i in range(1, 6):
                c.send(a, enc(frame(thing(i, f"a{i}")), text))
                msgs, tr = h2_web(c, a, text, count=i)
                check(tr is None and len(msgs) == i and
                      parse_thing(msgs[-1]) == {"id": i, "name": f"a{i}"}, (text, i, msgs))
                c.send(b, enc(frame(thing(100 + i, f"b{i}")), text))
                msgs, tr = h2_web(c, b, text, count=i)
                check(tr is None and parse_thing(msgs[-1])["id"] == 100 + i, (text, i, msgs))
            c.end(a)
            msgs, tr = h2_web(c, a, text)
            check(len(msgs) == 5 and tr["grpc-status"] == "0", (text, msgs, tr))
            # b fails mid-stream: echoes so far, then ABORTED in the trailers
            c.send(b, enc(frame(thing(7, "fail")), text))
            msgs, tr = h2_web(c, b, text, count=6)
            check(len(msgs) == 5 and tr is not None and tr["grpc-status"] == "10" and
                  tr["grpc-message"] == "chat aborted at message 6", (text, msgs, tr))
            c.wait(b, lambda s: s["ended"], 5, "end of the failed stream")
    finally:
        c.close()


def test_limits_and_malformed_h2():
    c = H2()
    try:
        # a frame past max_recv_message_bytes: refused on its prefix, the
        # 5 MiB body never sent nor buffered
        sid = c.open("/web.v1.Web/Chat")
        c.send(sid, frame(thing(1, "a")) + b"\x00\x00\x50\x00\x00" + b"x" * 100)
        msgs, tr = h2_web(c, sid, False, count=2)
        check(tr is not None and tr["grpc-status"] == "8" and
              "max_recv_message_bytes" in tr["grpc-message"], (msgs, tr))
        c.wait(sid, lambda s: s["ended"], 5, "end of stream")
        # a length prefix past the end of the body
        for text in (False, True):
            sid = c.open("/web.v1.Web/Upload", ctype=TEXT if text else BIN)
            c.send(sid, enc(frame(thing(1, "a")) + b"\x00\x00\x00\x00\x64abc", text),
                   end=True)
            msgs, tr = h2_web(c, sid, text)
            check(tr["grpc-status"] == "13" and
                  "ended before the length its prefix announced" in tr["grpc-message"],
                  (text, msgs, tr))
        # a long bidi stream is not bounded by max_body_bytes on HTTP/2
        # (flow control holds the client): 4x the limit echoed in full
        sid = c.open("/web.v1.Web/Chat")
        one = frame(thing(1, "y" * 4000))
        n = 4 * MAX_BODY // len(one) + 1
        for i in range(n):
            c.send(sid, one)
            if i % 8 == 7:
                h2_web(c, sid, False, count=i + 1)
        c.end(sid)
        msgs, tr = h2_web(c, sid, False, timeout=10)
        check(len(msgs) == n and tr["grpc-status"] == "0", (len(msgs), n, tr))
        # HTTP/JSON cannot carry a stream of requests: 501 over HTTP/2 too
        for path in ("/v1/upload", "/v1/chat"):
            sid = c.open(path, ctype="application/json")
            c.send(sid, b'{"id":"1"}', end=True)
            c.wait(sid, lambda s: s["ended"], 5, "501")
            st = c.streams[sid]
            body = json.loads(st["data"])
            kind = "client" if path == "/v1/upload" else "bidi"
            check(st["headers"][":status"] == "501" and body == {
                "code": 12, "details": [],
                "message": f"/web.v1.Web/{'Upload' if kind == 'client' else 'Chat'} is a "
                           f"{kind}-streaming method: HTTP/JSON carries unary and "
                           "server-streaming methods only (call it over gRPC or gRPC-Web)"},
                  (path, st))
    finally:
        c.close()


def test_tls():
    """The same over TLS, one port: lock-step bidi on HTTP/1.1 (ALPN
    http/1.1) and on HTTP/2 (ALPN h2), and the HTTP/1.1 back-pressure
    (TLS records: the socket not read while the handler is behind)."""
    import shutil
    import tempfile
    global HOST, PORT, TLS
    certs = tempfile.mkdtemp(prefix="perfc-grpcweb-tls-")
    saved = HOST, PORT
    p = None
    try:
        subprocess.run(["sh", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                           "..", "tls", "make-certs.sh"), certs],
                       check=True, capture_output=True, timeout=120)
        p, HOST, PORT = start(256 << 20, "--tls-cert", os.path.join(certs, "server.crt"),
                              "--tls-key", os.path.join(certs, "server.key"))
        TLS = os.path.join(certs, "ca.crt")
        for text in (False, True):
            st = H1Stream("/web.v1.Web/Chat", text=text)
            try:
                for i in range(1, 4):
                    st.send(thing(i, f"tls {i}"))
                    check(parse_thing(st.read_msgs(i)[-1]) == {"id": i, "name": f"tls {i}"},
                          (text, i))
                st.end()
                msgs, tr = st.finish()
                check(len(msgs) == 3 and tr["grpc-status"] == "0", (text, msgs, tr))
            finally:
                st.close()
            c = H2()
            try:
                sid = c.open("/web.v1.Web/Chat", ctype=TEXT if text else BIN)
                for i in range(1, 4):
                    c.send(sid, enc(frame(thing(i, f"h2 {i}")), text))
                    msgs, tr = h2_web(c, sid, text, count=i)
                    check(tr is None and parse_thing(msgs[-1]) == {"id": i, "name": f"h2 {i}"},
                          (text, i, msgs))
                c.end(sid)
                msgs, tr = h2_web(c, sid, text)
                check(len(msgs) == 3 and tr["grpc-status"] == "0", (text, msgs, tr))
            finally:
                c.close()
        backpressure_run(p)
    finally:
        TLS = None
        HOST, PORT = saved
        if p is not None:
            p.terminate()
            rc = p.wait(timeout=60)
            check(rc in (0, -15), f"the TLS server exited {rc}")
        shutil.rmtree(certs, ignore_errors=True)


def test_server_still_serves():
    out, tr = h1_call("/web.v1.Web/Upload", frame(thing(5, "z")))
    check(tr["grpc-status"] == "0" and parse_thing(out[0]) == {"id": 5, "size": 1},
          (out, tr))


def main():
    global HOST, PORT
    p, HOST, PORT = start()
    tests = [test_client_stream_h1, test_bidi_h1_chunked, test_bidi_h1_content_length,
             test_bidi_h1_idle, test_bidi_h1_pause,
             test_errors_mid_stream_h1,
             test_body_limit_h1, test_backpressure_h1, test_malformed_h1, test_client_stream_h2,
             test_bidi_h2, test_limits_and_malformed_h2, test_tls, test_server_still_serves]
    only = os.environ.get("HTTP_TEST_ONLY")
    try:
        for t in tests:
            if only and only not in t.__name__:
                continue
            try:
                t()
                print(f"ok   {t.__name__}", flush=True)
            except Exception as e:  # noqa: BLE001 - report every failure
                FAILED.append(t.__name__)
                print(f"FAIL {t.__name__}: {type(e).__name__}: {e}", flush=True)
            if p.poll() is not None:
                FAILED.append("server exited")
                print(f"FAIL server exited with {p.returncode}")
                break
    finally:
        p.terminate()
        try:
            rc = p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = "killed"
    if rc not in (0, -15):
        FAILED.append(f"server exit {rc}")
    print("FAILED: " + ", ".join(FAILED) if FAILED else "all passed")
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
