"""raw_h2.py — a minimal HTTP/2 client that writes the frames it is told to,
for tests whose input no conforming gRPC client can produce (a compressed
flag without grpc-encoding, a lying length prefix, a decompression bomb,
a header block past the limits). Standard library only.

Room: tests/integration (imported by the python tests there). Not a general
HTTP/2 implementation: HPACK is encoded as literals without indexing and
decoded with the static and dynamic tables; Huffman-coded strings from the
peer are decoded with the RFC 7541 table built below.
"""
import socket
import struct
import time

DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x8, 0x9)
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

STATIC = [None,
    (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"),
    (":path", "/index.html"), (":scheme", "http"), (":scheme", "https"),
    (":status", "200"), (":status", "204"), (":status", "206"), (":status", "304"),
    (":status", "400"), (":status", "404"), (":status", "500"), ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""),
    ("accept", ""), ("access-control-allow-origin", ""), ("age", ""), ("allow", ""),
    ("authorization", ""), ("cache-control", ""), ("content-disposition", ""),
    ("content-encoding", ""), ("content-language", ""), ("content-length", ""),
    ("content-location", ""), ("content-range", ""), ("content-type", ""), ("cookie", ""),
    ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""),
    ("if-match", ""), ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""),
    ("if-unmodified-since", ""), ("last-modified", ""), ("link", ""), ("location", ""),
    ("max-forwards", ""), ("proxy-authenticate", ""), ("proxy-authorization", ""),
    ("range", ""), ("referer", ""), ("refresh", ""), ("retry-after", ""), ("server", ""),
    ("set-cookie", ""), ("strict-transport-security", ""), ("transfer-encoding", ""),
    ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", "")]

# RFC 7541 Appendix B: (code, bit length) for symbols 0..256.
_HUFF = [
    (0x1ff8, 13), (0x7fffd8, 23), (0xfffffe2, 28), (0xfffffe3, 28), (0xfffffe4, 28),
    (0xfffffe5, 28), (0xfffffe6, 28), (0xfffffe7, 28), (0xfffffe8, 28), (0xffffea, 24),
    (0x3ffffffc, 30), (0xfffffe9, 28), (0xfffffea, 28), (0x3ffffffd, 30), (0xfffffeb, 28),
    (0xfffffec, 28), (0xfffffed, 28), (0xfffffee, 28), (0xfffffef, 28), (0xffffff0, 28),
    (0xffffff1, 28), (0xffffff2, 28), (0x3ffffffe, 30), (0xffffff3, 28), (0xffffff4, 28),
    (0xffffff5, 28), (0xffffff6, 28), (0xffffff7, 28), (0xffffff8, 28), (0xffffff9, 28),
    (0xffffffa, 28), (0xffffffb, 28), (0x14, 6), (0x3f8, 10), (0x3f9, 10), (0xffa, 12),
    (0x1ff9, 13), (0x15, 6), (0xf8, 8), (0x7fa, 11), (0x3fa, 10), (0x3fb, 10), (0xf9, 8),
    (0x7fb, 11), (0xfa, 8), (0x16, 6), (0x17, 6), (0x18, 6), (0x0, 5), (0x1, 5), (0x2, 5),
    (0x19, 6), (0x1a, 6), (0x1b, 6), (0x1c, 6), (0x1d, 6), (0x1e, 6), (0x1f, 6), (0x5c, 7),
    (0xfb, 8), (0x7ffc, 15), (0x20, 6), (0xffb, 12), (0x3fc, 10), (0x1ffa, 13), (0x21, 6),
    (0x5d, 7), (0x5e, 7), (0x5f, 7), (0x60, 7), (0x61, 7), (0x62, 7), (0x63, 7), (0x64, 7),
    (0x65, 7), (0x66, 7), (0x67, 7), (0x68, 7), (0x69, 7), (0x6a, 7), (0x6b, 7), (0x6c, 7),
    (0x6d, 7), (0x6e, 7), (0x6f, 7), (0x70, 7), (0x71, 7), (0x72, 7), (0xfc, 8), (0x73, 7),
    (0xfd, 8), (0x1ffb, 13), (0x7fff0, 19), (0x1ffc, 13), (0x3ffc, 14), (0x22, 6),
    (0x7ffd, 15), (0x3, 5), (0x23, 6), (0x4, 5), (0x24, 6), (0x5, 5), (0x25, 6), (0x26, 6),
    (0x27, 6), (0x6, 5), (0x74, 7), (0x75, 7), (0x28, 6), (0x29, 6), (0x2a, 6), (0x7, 5),
    (0x2b, 6), (0x76, 7), (0x2c, 6), (0x8, 5), (0x9, 5), (0x2d, 6), (0x77, 7), (0x78, 7),
    (0x79, 7), (0x7a, 7), (0x7b, 7), (0x7ffe, 15), (0x7fc, 11), (0x3ffd, 14), (0x1ffd, 13),
    (0xffffffc, 28), (0xfffe6, 20), (0x3fffd2, 22), (0xfffe7, 20), (0xfffe8, 20),
    (0x3fffd3, 22), (0x3fffd4, 22), (0x3fffd5, 22), (0x7fffd9, 23), (0x3fffd6, 22),
    (0x7fffda, 23), (0x7fffdb, 23), (0x7fffdc, 23), (0x7fffdd, 23), (0x7fffde, 23),
    (0xffffeb, 24), (0x7fffdf, 23), (0xffffec, 24), (0xffffed, 24), (0x3fffd7, 22),
    (0x7fffe0, 23), (0xffffee, 24), (0x7fffe1, 23), (0x7fffe2, 23), (0x7fffe3, 23),
    (0x7fffe4, 23), (0x1fffdc, 21), (0x3fffd8, 22), (0x7fffe5, 23), (0x3fffd9, 22),
    (0x7fffe6, 23), (0x7fffe7, 23), (0xffffef, 24), (0x3fffda, 22), (0x1fffdd, 21),
    (0xfffe9, 20), (0x3fffdb, 22), (0x3fffdc, 22), (0x7fffe8, 23), (0x7fffe9, 23),
    (0x1fffde, 21), (0x7fffea, 23), (0x3fffdd, 22), (0x3fffde, 22), (0xfffff0, 24),
    (0x1fffdf, 21), (0x3fffdf, 22), (0x7fffeb, 23), (0x7fffec, 23), (0x1fffe0, 21),
    (0x1fffe1, 21), (0x3fffe0, 22), (0x1fffe2, 21), (0x7fffed, 23), (0x3fffe1, 22),
    (0x7fffee, 23), (0x7fffef, 23), (0xfffea, 20), (0x3fffe2, 22), (0x3fffe3, 22),
    (0x3fffe4, 22), (0x7ffff0, 23), (0x3fffe5, 22), (0x3fffe6, 22), (0x7ffff1, 23),
    (0x3ffffe0, 26), (0x3ffffe1, 26), (0xfffeb, 20), (0x7fff1, 19), (0x3fffe7, 22),
    (0x7ffff2, 23), (0x3fffe8, 22), (0x1ffffec, 25), (0x3ffffe2, 26), (0x3ffffe3, 26),
    (0x3ffffe4, 26), (0x7ffffde, 27), (0x7ffffdf, 27), (0x3ffffe5, 26), (0xfffff1, 24),
    (0x1ffffed, 25), (0x7fff2, 19), (0x1fffe3, 21), (0x3ffffe6, 26), (0x7ffffe0, 27),
    (0x7ffffe1, 27), (0x3ffffe7, 26), (0x7ffffe2, 27), (0xfffff2, 24), (0x1fffe4, 21),
    (0x1fffe5, 21), (0x3ffffe8, 26), (0x3ffffe9, 26), (0xffffffd, 28), (0x7ffffe3, 27),
    (0x7ffffe4, 27), (0x7ffffe5, 27), (0xfffec, 20), (0xfffff3, 24), (0xfffed, 20),
    (0x1fffe6, 21), (0x3fffe9, 22), (0x1fffe7, 21), (0x1fffe8, 21), (0x7ffff3, 23),
    (0x3fffea, 22), (0x3fffeb, 22), (0x1ffffee, 25), (0x1ffffef, 25), (0xfffff4, 24),
    (0xfffff5, 24), (0x3ffffea, 26), (0x7ffff4, 23), (0x3ffffeb, 26), (0x7ffffe6, 27),
    (0x3ffffec, 26), (0x3ffffed, 26), (0x7ffffe7, 27), (0x7ffffe8, 27), (0x7ffffe9, 27),
    (0x7ffffea, 27), (0x7ffffeb, 27), (0xffffffe, 28), (0x7ffffec, 27), (0x7ffffed, 27),
    (0x7ffffee, 27), (0x7ffffef, 27), (0x7fffff0, 27), (0x3ffffee, 26), (0x3fffffff, 30)]
_HUFF_DEC = {(code, n): sym for sym, (code, n) in enumerate(_HUFF)}


def huffman_decode(data):
    out, code, n = bytearray(), 0, 0
    for byte in data:
        for i in range(7, -1, -1):
            code = (code << 1) | ((byte >> i) & 1)
            n += 1
            sym = _HUFF_DEC.get((code, n))
            if sym is not None:
                if sym == 256:
                    raise ValueError("EOS in huffman string")
                out.append(sym)
                code, n = 0, 0
    return bytes(out)


def hpack_int(value, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def hpack_literal(name, value):
    """Literal header field without indexing, new name, no Huffman."""
    if isinstance(name, str):
        name = name.encode()
    if isinstance(value, str):
        value = value.encode()
    return b"\x00" + hpack_int(len(name), 7) + name + hpack_int(len(value), 7) + value


def grpc_request_headers(path, authority="localhost", encoding=None, extra=()):
    block = b"\x83\x86"  # :method POST, :scheme http (static indices)
    block += hpack_literal(":path", path) + hpack_literal(":authority", authority)
    block += hpack_literal("content-type", "application/grpc") + hpack_literal("te", "trailers")
    if encoding is not None:
        block += hpack_literal("grpc-encoding", encoding)
    for k, v in extra:
        block += hpack_literal(k, v)
    return block


def grpc_frame(payload, flag=0, length=None):
    """A gRPC length-prefixed message; `length` may lie about the body."""
    return bytes([flag]) + struct.pack(">I", len(payload) if length is None else length) + payload


class Decoder:
    def __init__(self):
        self.dyn = []  # newest first
        self.size = 0
        self.max = 4096

    def _int(self, buf, i, prefix):
        limit = (1 << prefix) - 1
        v = buf[i] & limit
        i += 1
        if v < limit:
            return v, i
        shift = 0
        while True:
            b = buf[i]
            i += 1
            v += (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return v, i

    def _str(self, buf, i):
        huff = buf[i] & 0x80
        n, i = self._int(buf, i, 7)
        s = bytes(buf[i:i + n])
        return (huffman_decode(s) if huff else s).decode("latin-1"), i + n

    def _get(self, idx):
        if idx < len(STATIC):
            return STATIC[idx]
        return self.dyn[idx - len(STATIC)]

    def _add(self, name, value):
        self.dyn.insert(0, (name, value))
        self.size += len(name) + len(value) + 32
        self._evict()

    def _evict(self):
        while self.size > self.max and self.dyn:
            n, v = self.dyn.pop()
            self.size -= len(n) + len(v) + 32

    def decode(self, buf):
        out, i = [], 0
        while i < len(buf):
            b = buf[i]
            if b & 0x80:
                idx, i = self._int(buf, i, 7)
                out.append(self._get(idx))
            elif b & 0x40 or (b & 0xF0) in (0x00, 0x10):
                incr = bool(b & 0x40)
                idx, i = self._int(buf, i, 6 if incr else 4)
                if idx:
                    name = self._get(idx)[0]
                else:
                    name, i = self._str(buf, i)
                value, i = self._str(buf, i)
                out.append((name, value))
                if incr:
                    self._add(name, value)
            elif b & 0x20:
                self.max, i = self._int(buf, i, 5)
                self._evict()
            else:
                raise ValueError("bad HPACK byte 0x%02x" % b)
        return out


class Conn:
    """One HTTP/2 connection. `ack_settings=False` never ACKs the server's
    SETTINGS (the server then never applies its own advertised limits)."""

    def __init__(self, host, port, ack_settings=True, settings=b"", timeout=10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.ack_settings = ack_settings
        self.buf = b""
        self.dec = Decoder()
        self.streams = {}  # id -> {"headers": [...], "data": b"", "closed": bool, "rst": code}
        self.goaway = None
        self.closed = False
        # Send windows (RFC 9113 6.9): the connection's, each stream's, and
        # the peer's initial stream window from its SETTINGS.
        self.conn_window = 65535
        self.initial_window = 65535
        self.stream_window = {}
        self.sock.sendall(PREFACE + self.frame(SETTINGS, 0, 0, settings))
        # A large window: a test's replies never wait on WINDOW_UPDATE.
        self.sock.sendall(self.frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", (1 << 30))))

    @staticmethod
    def frame(ftype, flags, stream, payload=b""):
        return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
            struct.pack(">I", stream) + payload

    def send(self, data):
        self.sock.sendall(data)

    def headers(self, stream, block, end_stream=False, max_frame=16384):
        """HEADERS plus CONTINUATIONs for a block of any size."""
        first, rest = block[:max_frame], block[max_frame:]
        out = [self.frame(HEADERS, (END_STREAM if end_stream else 0) |
                          (0 if rest else END_HEADERS), stream, first)]
        while rest:
            piece, rest = rest[:max_frame], rest[max_frame:]
            out.append(self.frame(CONTINUATION, 0 if rest else END_HEADERS, stream, piece))
        return b"".join(out)

    def data(self, stream, payload, end_stream=False, max_frame=16384):
        out = []
        while True:
            piece, payload = payload[:max_frame], payload[max_frame:]
            out.append(self.frame(DATA, END_STREAM if end_stream and not payload else 0,
                                  stream, piece))
            if not payload:
                return b"".join(out)

    def send_data(self, stream, payload, end_stream=False, seconds=30):
        """DATA within the peer's flow-control windows, reading its
        WINDOW_UPDATEs as needed. Returns False when the windows stayed
        shut for `seconds` (the peer stopped reading) or the connection
        closed."""
        deadline = time.monotonic() + seconds
        self.stream_window.setdefault(stream, self.initial_window)
        while True:
            room = min(self.conn_window, self.stream_window[stream], 16384)
            if payload and room <= 0:
                f = self._read_frame(deadline)
                if f is None:
                    return False
                self._handle(*f)
                continue
            piece, payload = payload[:room], payload[room:]
            self.send(self.frame(DATA, END_STREAM if end_stream and not payload else 0,
                                 stream, piece))
            self.conn_window -= len(piece)
            self.stream_window[stream] -= len(piece)
            if not payload:
                return True

    def _read_frame(self, deadline):
        while len(self.buf) < 9 or len(self.buf) < 9 + int.from_bytes(self.buf[:3], "big"):
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 20)
            except socket.timeout:
                return None
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                self.closed = True
                return None
            self.buf += chunk
        n = int.from_bytes(self.buf[:3], "big")
        ftype, flags = self.buf[3], self.buf[4]
        stream = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
        payload, self.buf = self.buf[9:9 + n], self.buf[9 + n:]
        return ftype, flags, stream, payload

    def _handle(self, ftype, flags, stream, payload):
        st = self.streams.setdefault(stream, {"headers": [], "data": b"", "closed": False,
                                             "rst": None}) if stream else None
        if ftype == SETTINGS and not flags & ACK:
            for i in range(0, len(payload) - 5, 6):
                ident, value = struct.unpack(">HI", payload[i:i + 6])
                if ident == 4:  # SETTINGS_INITIAL_WINDOW_SIZE
                    delta = value - self.initial_window
                    self.initial_window = value
                    for k in self.stream_window:
                        self.stream_window[k] += delta
            if self.ack_settings:
                self.send(self.frame(SETTINGS, ACK, 0))
        elif ftype == WINDOW_UPDATE:
            inc = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            if stream == 0:
                self.conn_window += inc
            else:
                self.stream_window[stream] = self.stream_window.get(
                    stream, self.initial_window) + inc
        elif ftype == PING and not flags & ACK:
            self.send(self.frame(PING, ACK, 0, payload))
        elif ftype == HEADERS:
            if flags & 0x8:  # PADDED
                payload = payload[1:len(payload) - payload[0]]
            if flags & 0x20:  # PRIORITY
                payload = payload[5:]
            st["headers"] += self.dec.decode(payload)
            st["closed"] |= bool(flags & END_STREAM)
        elif ftype == CONTINUATION:
            st["headers"] += self.dec.decode(payload)
        elif ftype == DATA:
            st["data"] += payload
            st["closed"] |= bool(flags & END_STREAM)
            if payload:  # keep the stream's window open
                upd = struct.pack(">I", len(payload))
                self.send(self.frame(WINDOW_UPDATE, 0, stream, upd))
        elif ftype == RST_STREAM:
            st["rst"] = int.from_bytes(payload[:4], "big")
            st["closed"] = True
        elif ftype == GOAWAY:
            self.goaway = (int.from_bytes(payload[:4], "big") & 0x7FFFFFFF,
                           int.from_bytes(payload[4:8], "big"), payload[8:])

    def pump(self, seconds):
        """Reads and answers frames for up to `seconds`."""
        deadline = time.monotonic() + seconds
        while not self.closed:
            f = self._read_frame(deadline)
            if f is None:
                return
            self._handle(*f)

    def wait(self, stream, seconds):
        """Reads until `stream` is closed (trailers, END_STREAM or RST);
        returns its state dict, or None on timeout or connection loss."""
        deadline = time.monotonic() + seconds
        while True:
            st = self.streams.get(stream)
            if st is not None and st["closed"]:
                return st
            f = self._read_frame(deadline)
            if f is None:
                return None
            self._handle(*f)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def grpc_status(st):
    """(grpc-status int or None, grpc-message str) of a closed stream."""
    h = dict(st["headers"])
    code = h.get("grpc-status")
    msg = h.get("grpc-message", "")
    # grpc-message is percent-encoded (PROTOCOL-HTTP2.md).
    out, i = bytearray(), 0
    raw = msg.encode("latin-1")
    while i < len(raw):
        if raw[i] == 0x25 and i + 2 < len(raw) + 0 and i + 3 <= len(raw):
            try:
                out.append(int(raw[i + 1:i + 3], 16))
                i += 3
                continue
            except ValueError:
                pass
        out.append(raw[i])
        i += 1
    return (int(code) if code is not None else None), out.decode("utf-8", "replace")


def read_proc_kb(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0
