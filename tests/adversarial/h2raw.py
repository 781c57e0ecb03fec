"""h2raw.py — a raw HTTP/2 client for attacking gRPC servers (stdlib only).

Room: tests/adversarial. A well-behaved client library (nghttp2, grpcio)
refuses to send what these tests need: a HEADERS block of 16 MB, a
RST_STREAM right after the request, a length prefix that lies, a
connection that never ACKs the server's SETTINGS. This module builds every
frame by hand (RFC 9113) and encodes header blocks with HPACK literals that
touch no dynamic table (RFC 7541 6.2.2, "literal never indexed"), so the
bytes on the wire are exactly the ones a test wrote. It decodes the
server's HEADERS fully (static and dynamic table, Huffman), because a real
server answers with both.

Nothing here asserts; the probes in run.py do.
"""
import socket
import struct
import time
import zlib

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, \
    WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIO = 0x1, 0x1, 0x4, 0x8, 0x20

S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT_STREAMS, \
    S_INITIAL_WINDOW_SIZE, S_MAX_FRAME_SIZE, S_MAX_HEADER_LIST_SIZE = range(1, 7)

NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, \
    SETTINGS_TIMEOUT, STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, \
    COMPRESSION_ERROR, CONNECT_ERROR, ENHANCE_YOUR_CALM = range(12)

GRPC_CODES = ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT",
              "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
              "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
              "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
              "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"]


def frame(ftype, flags, sid, payload=b""):
    """One frame: 24-bit length, type, flags, 31-bit stream id, payload."""
    n = len(payload)
    return struct.pack(">BHBBI", n >> 16, n & 0xFFFF, ftype, flags,
                       sid & 0x7FFFFFFF) + payload


def settings(pairs=()):
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


SETTINGS_ACK = frame(SETTINGS, ACK, 0)


def window_update(sid, inc):
    return frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", inc))


def rst_stream(sid, code=CANCEL):
    return frame(RST_STREAM, 0, sid, struct.pack(">I", code))


def goaway(last_sid=0, code=NO_ERROR):
    return frame(GOAWAY, 0, 0, struct.pack(">II", last_sid, code))


def grpc_message(body, compressed=False, flag=None, length=None):
    """A gRPC length-prefixed message. `flag` overrides the compressed-flag
    byte and `length` the declared length, to build lies on purpose."""
    f = flag if flag is not None else (1 if compressed else 0)
    n = length if length is not None else len(body)
    return struct.pack(">BI", f, n) + body


def pb_bytes_field(num, data):
    """A protobuf length-delimited field (EchoRequest.payload is field 1)."""
    return _varint(num << 3 | 2) + _varint(len(data)) + data


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def gzip_bytes(data):
    c = zlib.compressobj(6, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


def gzip_zeros(total):
    """gzip of `total` zero bytes, as a decompression bomb: about 1 MiB per
    GiB (deflate's ceiling, ~1032:1), built directly instead of by
    compressing a GiB (which takes zlib seconds).

    One final dynamic-Huffman block (RFC 1951 3.2.7) whose literal/length
    code has three symbols: 285 (a copy of 258 bytes) as the 1-bit code 0,
    literal 0 and end-of-block as 2-bit codes; the one distance code
    (distance 1) is the 1-bit code 0. A literal 0 and then copies of 258
    bytes at distance 1: every copy is two zero bits, so the body is zero
    bytes. zlib inflates it like any other stream."""
    bits = _BitWriter()
    bits.put(1, 1)        # BFINAL
    bits.put(2, 2)        # BTYPE = dynamic Huffman
    bits.put(286 - 257, 5)  # HLIT: literal/length codes 0..285
    bits.put(0, 5)        # HDIST: one distance code
    bits.put(18 - 4, 4)   # HCLEN: code-length codes up to "1" in the order
    order = (16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1)
    cl_len = {0: 2, 1: 2, 2: 2, 18: 2}  # canonical: 0=00 1=01 2=10 18=11
    for sym in order:
        bits.put(cl_len.get(sym, 0), 3)
    cl_code = {0: 0, 1: 1, 2: 2, 18: 3}

    def cl(sym, extra=None):
        bits.put_huff(cl_code[sym], 2)
        if extra is not None:
            bits.put(extra - 11, 7)  # 18: repeat a zero length 11..138 times

    cl(2)                      # literal 0: 2 bits
    cl(18, 138), cl(18, 117)   # literals 1..255 unused
    cl(2)                      # 256 end of block: 2 bits
    cl(18, 28)                 # lengths 257..284 unused
    cl(1)                      # 285: 1 bit
    cl(1)                      # distance code 0: 1 bit
    # Canonical codes: 285 -> 0, literal 0 -> 10, end of block -> 11.
    if total:
        bits.put_huff(0b10, 2)  # the first zero, literally
        copies, rest = divmod(total - 1, 258)
        bits.zeros(2 * copies)  # (285, distance 1) pairs: two zero bits each
        for _ in range(rest):
            bits.put_huff(0b10, 2)
    bits.put_huff(0b11, 2)     # end of block
    crc = 0
    z = bytes(1 << 20)
    left = total
    while left > 0:
        crc = zlib.crc32(z if left >= len(z) else bytes(left), crc)
        left -= len(z)
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + bits.getvalue() +
            struct.pack("<II", crc, total & 0xFFFFFFFF))


class _BitWriter:
    """Deflate's bit order: values LSB first, Huffman codes MSB first."""

    def __init__(self):
        self.out = bytearray()
        self.acc = 0
        self.n = 0

    def put(self, value, nbits):
        self.acc |= value << self.n
        self.n += nbits
        while self.n >= 8:
            self.out.append(self.acc & 0xFF)
            self.acc >>= 8
            self.n -= 8

    def put_huff(self, code, nbits):
        rev = 0
        for i in range(nbits):
            rev |= (code >> i & 1) << (nbits - 1 - i)
        self.put(rev, nbits)

    def zeros(self, nbits):
        while self.n and nbits:  # up to the byte boundary
            self.put(0, 1)
            nbits -= 1
        self.out += bytes(nbits // 8)
        self.put(0, nbits % 8)

    def getvalue(self):
        return bytes(self.out) + (bytes([self.acc]) if self.n else b"")


# ---- HPACK (RFC 7541) --------------------------------------------------

STATIC_TABLE = [
    (b":authority", b""), (b":method", b"GET"), (b":method", b"POST"),
    (b":path", b"/"), (b":path", b"/index.html"), (b":scheme", b"http"),
    (b":scheme", b"https"), (b":status", b"200"), (b":status", b"204"),
    (b":status", b"206"), (b":status", b"304"), (b":status", b"400"),
    (b":status", b"404"), (b":status", b"500"), (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"), (b"accept-language", b""),
    (b"accept-ranges", b""), (b"accept", b""),
    (b"access-control-allow-origin", b""), (b"age", b""), (b"allow", b""),
    (b"authorization", b""), (b"cache-control", b""),
    (b"content-disposition", b""), (b"content-encoding", b""),
    (b"content-language", b""), (b"content-length", b""),
    (b"content-location", b""), (b"content-range", b""),
    (b"content-type", b""), (b"cookie", b""), (b"date", b""), (b"etag", b""),
    (b"expect", b""), (b"expires", b""), (b"from", b""), (b"host", b""),
    (b"if-match", b""), (b"if-modified-since", b""), (b"if-none-match", b""),
    (b"if-range", b""), (b"if-unmodified-since", b""),
    (b"last-modified", b""), (b"link", b""), (b"location", b""),
    (b"max-forwards", b""), (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""), (b"range", b""), (b"referer", b""),
    (b"refresh", b""), (b"retry-after", b""), (b"server", b""),
    (b"set-cookie", b""), (b"strict-transport-security", b""),
    (b"transfer-encoding", b""), (b"user-agent", b""), (b"vary", b""),
    (b"via", b""), (b"www-authenticate", b""),
]

# The Huffman code of RFC 7541 Appendix B is canonical: codes are assigned
# in order of (length, symbol), so the 257 code lengths define it. One
# letter per symbol 0..256 (EOS), 'A' = 5 bits ... 'Z' = 30 bits.
_HUFF_LENGTHS = (
    "ISXXXXXXXTZXXZXXXXXXXXZXXXXXXXXXBFFHIBDGFFDGDBBBAAABBBBBBBCDKBHFIBCCCCCC"
    "CCCCCCCCCCCCCCCCDCDIOIJBKABABABBBACCBBBABCBAABCCCCCKGJIXPRPPRRRSRSSSSSTS"
    "TTRSTSSSSQRSRSSTRQPRRSSQSRRTQRSSQQRQSRSSPRRRSRRSVVPORSRUVVVWWVTUOQVWWVWT"
    "QQVVXWWWPTPQRQQSRRUUTTVSVWVVWWWWWXWWWWWVZ")


def _huffman_codes():
    lengths = [ord(c) - ord("A") + 5 for c in _HUFF_LENGTHS]
    assert len(lengths) == 257
    order = sorted(range(257), key=lambda s: (lengths[s], s))
    codes = {}
    code = 0
    prev = lengths[order[0]]
    for i, sym in enumerate(order):
        if i:
            code = (code + 1) << (lengths[sym] - prev)
        prev = lengths[sym]
        codes[sym] = (code, lengths[sym])
    return codes


_HUFF = _huffman_codes()
# Decoding table: (length, code) -> symbol.
_HUFF_DEC = {(n, c): s for s, (c, n) in _HUFF.items()}
_HUFF_MIN = min(n for _, n in _HUFF.values())


class HpackError(Exception):
    pass


def huffman_encode(data):
    acc = nbits = 0
    out = bytearray()
    for b in data:
        code, n = _HUFF[b]
        acc = acc << n | code
        nbits += n
        while nbits >= 8:
            nbits -= 8
            out.append(acc >> nbits & 0xFF)
        acc &= (1 << nbits) - 1
    if nbits:
        out.append((acc << (8 - nbits) | (0xFF >> nbits)) & 0xFF)
    return bytes(out)


def huffman_decode(data):
    out = bytearray()
    code = n = 0
    for byte in data:
        for i in range(7, -1, -1):
            code = code << 1 | (byte >> i & 1)
            n += 1
            if n >= _HUFF_MIN:
                sym = _HUFF_DEC.get((n, code))
                if sym is not None:
                    if sym == 256:
                        raise HpackError("EOS in Huffman string")
                    out.append(sym)
                    code = n = 0
            if n > 30:
                raise HpackError("bad Huffman code")
    # Padding: fewer than 8 bits, all ones (the EOS prefix).
    if n > 7 or code != (1 << n) - 1:
        raise HpackError("bad Huffman padding")
    return bytes(out)


def encode_int(value, prefix_bits, first):
    """HPACK integer with an N-bit prefix; `first` holds the high bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_int(buf, i, prefix_bits):
    limit = (1 << prefix_bits) - 1
    if i >= len(buf):
        raise HpackError("truncated integer")
    value = buf[i] & limit
    i += 1
    if value < limit:
        return value, i
    shift = 0
    while True:
        if i >= len(buf):
            raise HpackError("truncated integer")
        b = buf[i]
        i += 1
        value += (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i
        if shift > 35:
            raise HpackError("integer overflow")


def _enc_str(s, huffman=False):
    if huffman:
        h = huffman_encode(s)
        return encode_int(len(h), 7, 0x80) + h
    return encode_int(len(s), 7, 0) + s


def encode_headers(headers, huffman=False):
    """A header block of literals never indexed with a literal name, so it
    changes no dynamic table on either side. `headers`: (name, value) pairs
    of bytes or str."""
    out = []
    for name, value in headers:
        if isinstance(name, str):
            name = name.encode()
        if isinstance(value, str):
            value = value.encode()
        out.append(b"\x10" + _enc_str(name, huffman) + _enc_str(value, huffman))
    return b"".join(out)


class HpackDecoder:
    """Decodes the server's header blocks, with its dynamic table."""

    def __init__(self, max_size=4096):
        self.max_size = max_size
        self.size = 0
        self.table = []  # newest first

    def _add(self, name, value):
        self.table.insert(0, (name, value))
        self.size += 32 + len(name) + len(value)
        self._evict()

    def _evict(self):
        while self.size > self.max_size and self.table:
            n, v = self.table.pop()
            self.size -= 32 + len(n) + len(v)

    def _get(self, idx):
        if idx == 0:
            raise HpackError("index 0")
        if idx <= len(STATIC_TABLE):
            return STATIC_TABLE[idx - 1]
        j = idx - len(STATIC_TABLE) - 1
        if j >= len(self.table):
            raise HpackError("index %d past the dynamic table" % idx)
        return self.table[j]

    def _str(self, buf, i):
        if i >= len(buf):
            raise HpackError("truncated string")
        huff = buf[i] & 0x80
        n, i = decode_int(buf, i, 7)
        if i + n > len(buf):
            raise HpackError("truncated string")
        s = bytes(buf[i:i + n])
        return (huffman_decode(s) if huff else s), i + n

    def decode(self, buf):
        out = []
        i = 0
        while i < len(buf):
            b = buf[i]
            if b & 0x80:  # indexed field
                idx, i = decode_int(buf, i, 7)
                out.append(self._get(idx))
            elif b & 0x40:  # literal with incremental indexing
                idx, i = decode_int(buf, i, 6)
                name = self._get(idx)[0] if idx else None
                if name is None:
                    name, i = self._str(buf, i)
                value, i = self._str(buf, i)
                self._add(name, value)
                out.append((name, value))
            elif b & 0x20:  # dynamic table size update
                self.max_size, i = decode_int(buf, i, 5)
                self._evict()
            else:  # literal without indexing (0x00) or never indexed (0x10)
                idx, i = decode_int(buf, i, 4)
                name = self._get(idx)[0] if idx else None
                if name is None:
                    name, i = self._str(buf, i)
                value, i = self._str(buf, i)
                out.append((name, value))
        return out


# ---- connection ----------------------------------------------------------

class Stream:
    def __init__(self, sid):
        self.sid = sid
        self.headers = None   # first header block: [(name, value)]
        self.trailers = None  # second header block
        self.data = bytearray()
        self.ended = False    # END_STREAM received
        self.reset = None     # RST_STREAM error code received
        self.send_window = 0

    @property
    def http_status(self):
        return _hget(self.headers, b":status")

    @property
    def grpc_status(self):
        """The numeric grpc-status from the trailers, or from a
        trailers-only response's headers; None when there is none."""
        for block in (self.trailers, self.headers):
            v = _hget(block, b"grpc-status")
            if v is not None:
                return int(v)
        return None

    @property
    def grpc_code(self):
        s = self.grpc_status
        if s is None:
            return None
        return GRPC_CODES[s] if 0 <= s < len(GRPC_CODES) else str(s)

    @property
    def grpc_message(self):
        for block in (self.trailers, self.headers):
            v = _hget(block, b"grpc-message")
            if v is not None:
                return v.decode("utf-8", "replace")
        return None

    @property
    def done(self):
        return self.ended or self.reset is not None

    def messages(self):
        """The gRPC messages in the DATA received: [(flag, body)]."""
        out, i, d = [], 0, self.data
        while i + 5 <= len(d):
            flag, n = struct.unpack_from(">BI", d, i)
            out.append((flag, bytes(d[i + 5:i + 5 + n])))
            i += 5 + n
        return out


def _hget(block, name):
    if block is None:
        return None
    for n, v in block:
        if n == name:
            return v
    return None


class ConnectionClosed(Exception):
    pass


class H2Conn:
    """One HTTP/2 client connection driven by hand.

    `pump()` reads and handles frames: it ACKs the server's SETTINGS (unless
    `ack_settings` is False), answers PINGs, tracks flow-control windows,
    decodes header blocks and returns every DATA byte to the window, so a
    response is never stalled by this side."""

    def __init__(self, host, port, timeout=10.0, source=None):
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=source)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.host = host
        self.port = port
        self.rbuf = bytearray()
        self.dec = HpackDecoder()
        self.streams = {}
        self.next_sid = 1
        self.ack_settings = True
        self.server_settings = {}
        self.got_settings = False
        self.conn_send_window = 65535
        self.peer_initial_window = 65535
        self.peer_max_frame = 16384
        self.goaway = None   # (last_stream_id, error_code, debug)
        self.closed = False  # EOF or reset from the server
        self._hdr_sid = None  # a header block in progress (CONTINUATION)
        self._hdr_buf = bytearray()
        self._hdr_end_stream = False

    # -- sending
    def send(self, data):
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as e:
            self.closed = True
            raise ConnectionClosed(str(e))

    def handshake(self, pairs=((S_ENABLE_PUSH, 0),), ack=True, timeout=5.0):
        """Preface and SETTINGS, then wait for the server's SETTINGS (ACKed
        only when `ack`). Returns True when the server's SETTINGS came."""
        self.ack_settings = ack
        self.send(PREFACE + settings(pairs))
        return self.pump(lambda: self.got_settings, timeout)

    def new_stream(self):
        sid = self.next_sid
        self.next_sid += 2
        st = Stream(sid)
        st.send_window = self.peer_initial_window
        self.streams[sid] = st
        return st

    def header_frames(self, sid, block, end_stream=False, max_frame=None):
        """HEADERS (+ CONTINUATION) frames carrying `block`."""
        mf = max_frame or self.peer_max_frame
        chunks = [block[i:i + mf] for i in range(0, len(block), mf)] or [b""]
        out = []
        for k, c in enumerate(chunks):
            flags = END_HEADERS if k == len(chunks) - 1 else 0
            if k == 0:
                out.append(frame(HEADERS, flags | (END_STREAM if end_stream else 0), sid, c))
            else:
                out.append(frame(CONTINUATION, flags, sid, c))
        return b"".join(out)

    def request_headers(self, path, extra=(), content_type="application/grpc",
                        timeout=None):
        h = [(":method", "POST"), (":scheme", "http"), (":path", path),
             (":authority", "%s:%d" % (self.host, self.port))]
        if content_type is not None:
            h.append(("content-type", content_type))
        h.append(("te", "trailers"))
        if timeout is not None:
            h.append(("grpc-timeout", timeout))
        h.extend(extra)
        return encode_headers(h)

    def start_call(self, path, extra=(), content_type="application/grpc",
                   end_stream=False, timeout=None):
        st = self.new_stream()
        self.send(self.header_frames(
            st.sid, self.request_headers(path, extra, content_type, timeout),
            end_stream))
        return st

    def send_data(self, st, data, end_stream=False, deadline=None):
        """DATA within the server's flow-control windows and frame size;
        blocks (pumping) for WINDOW_UPDATEs until `deadline`. Returns the
        bytes sent, which is less than len(data) when the window stayed
        shut, the stream ended or the connection closed."""
        sent = 0
        view = memoryview(data)
        while True:
            if st.done or self.closed or self.goaway is not None and st.sid > self.goaway[0]:
                return sent
            room = min(self.conn_send_window, st.send_window, self.peer_max_frame,
                       len(data) - sent)
            if room <= 0 and sent < len(data):
                if deadline is not None and time.monotonic() >= deadline:
                    return sent
                wait = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
                w0 = (self.conn_send_window, st.send_window)
                self.pump(lambda: (self.conn_send_window, st.send_window) != w0 or st.done, wait)
                continue
            last = sent + room >= len(data)
            flags = END_STREAM if (last and end_stream) else 0
            self.send(frame(DATA, flags, st.sid, bytes(view[sent:sent + room])))
            sent += room
            self.conn_send_window -= room
            st.send_window -= room
            if last:
                return sent

    def unary(self, path, body, extra=(), timeout=10.0, grpc_timeout=None):
        """A whole unary call: headers, one message, END_STREAM; waits for
        the answer. Returns the Stream."""
        st = self.start_call(path, extra, timeout=grpc_timeout)
        deadline = time.monotonic() + timeout
        self.send_data(st, body, end_stream=True, deadline=deadline)
        self.wait(st, max(0.0, deadline - time.monotonic()))
        return st

    def wait(self, st, timeout):
        return self.pump(lambda: st.done, timeout)

    # -- receiving
    def _read(self, timeout):
        self.sock.settimeout(max(timeout, 0.001))
        try:
            chunk = self.sock.recv(1 << 20)
        except socket.timeout:
            return False
        except (ConnectionResetError, OSError):
            self.closed = True
            return False
        if not chunk:
            self.closed = True
            return False
        self.rbuf += chunk
        return True

    def next_frame(self, timeout):
        """The next frame (type, flags, sid, payload) or None."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.rbuf) >= 9:
                n = self.rbuf[0] << 16 | self.rbuf[1] << 8 | self.rbuf[2]
                if len(self.rbuf) >= 9 + n:
                    ftype, flags, sid = self.rbuf[3], self.rbuf[4], \
                        struct.unpack_from(">I", self.rbuf, 5)[0] & 0x7FFFFFFF
                    payload = bytes(self.rbuf[9:9 + n])
                    del self.rbuf[:9 + n]
                    return ftype, flags, sid, payload
            if self.closed:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._read(left)

    def pump(self, until=None, timeout=1.0):
        """Handles frames until `until()` is true (returns True), the
        timeout passes or the connection closes (returns until's value)."""
        deadline = time.monotonic() + timeout
        while True:
            if until is not None and until():
                return True
            left = deadline - time.monotonic()
            if left <= 0 or (self.closed and len(self.rbuf) < 9):
                return bool(until and until())
            f = self.next_frame(left)
            if f is None:
                continue
            self.handle(*f)

    def handle(self, ftype, flags, sid, payload):
        if self._hdr_sid is not None and ftype != CONTINUATION:
            raise HpackError("frame type %d inside a header block" % ftype)
        if ftype == SETTINGS:
            if not flags & ACK:
                for k in range(0, len(payload) - len(payload) % 6, 6):
                    key, val = struct.unpack_from(">HI", payload, k)
                    self.server_settings[key] = val
                    if key == S_INITIAL_WINDOW_SIZE:
                        delta = val - self.peer_initial_window
                        self.peer_initial_window = val
                        for st in self.streams.values():
                            st.send_window += delta
                    elif key == S_MAX_FRAME_SIZE:
                        self.peer_max_frame = val
                self.got_settings = True
                if self.ack_settings:
                    self.send(SETTINGS_ACK)
        elif ftype == PING:
            if not flags & ACK:
                self.send(frame(PING, ACK, 0, payload))
        elif ftype == WINDOW_UPDATE:
            inc = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
            if sid == 0:
                self.conn_send_window += inc
            elif sid in self.streams:
                self.streams[sid].send_window += inc
        elif ftype == GOAWAY:
            last, code = struct.unpack_from(">II", payload)
            self.goaway = (last & 0x7FFFFFFF, code, payload[8:])
        elif ftype == RST_STREAM:
            st = self.streams.get(sid)
            if st is not None:
                st.reset = struct.unpack(">I", payload[:4])[0]
        elif ftype == DATA:
            st = self.streams.get(sid)
            body = payload
            if flags & PADDED and payload:
                body = payload[1:len(payload) - payload[0]]
            if st is not None:
                st.data += body
                if flags & END_STREAM:
                    st.ended = True
            if payload:  # give the bytes back so answers keep flowing
                self.send(window_update(0, len(payload)) +
                          (window_update(sid, len(payload)) if st is not None and not st.done else b""))
        elif ftype in (HEADERS, CONTINUATION):
            if ftype == HEADERS:
                body = payload
                if flags & PADDED:
                    body = body[1:len(body) - body[0]]
                if flags & PRIO:
                    body = body[5:]
                self._hdr_sid = sid
                self._hdr_buf = bytearray(body)
                self._hdr_end_stream = bool(flags & END_STREAM)
            else:
                self._hdr_buf += payload
            if flags & END_HEADERS:
                block = self.dec.decode(bytes(self._hdr_buf))
                st = self.streams.get(self._hdr_sid)
                if st is not None:
                    if st.headers is None:
                        st.headers = block
                    else:
                        st.trailers = block
                    if self._hdr_end_stream:
                        st.ended = True
                self._hdr_sid = None
                self._hdr_buf = bytearray()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
        self.closed = True


def self_test():
    """RFC 7541 Appendix C vectors for the Huffman code and integers."""
    assert huffman_encode(b"www.example.com").hex() == "f1e3c2e5f23a6ba0ab90f4ff"
    assert huffman_encode(b"no-cache").hex() == "a8eb10649cbf"
    assert huffman_encode(b"custom-value").hex() == "25a849e95bb8e8b4bf"
    assert huffman_encode(b"Mon, 21 Oct 2013 20:13:21 GMT").hex() == \
        "d07abe941054d444a8200595040b8166e082a62d1bff"
    for s in (b"www.example.com", b"no-cache", bytes(range(256)),
              b"\xff\xfe\x00grpc-status"):
        assert huffman_decode(huffman_encode(s)) == s
    assert encode_int(10, 5, 0) == b"\x0a"
    assert encode_int(1337, 5, 0) == b"\x1f\x9a\x0a"
    assert decode_int(b"\x1f\x9a\x0a", 0, 5) == (1337, 3)
    # C.4.1..C.4.3: three requests with Huffman and the dynamic table.
    d = HpackDecoder()
    r1 = d.decode(bytes.fromhex("828684418cf1e3c2e5f23a6ba0ab90f4ff"))
    assert r1 == [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"),
                  (b":authority", b"www.example.com")]
    r2 = d.decode(bytes.fromhex("828684be5886a8eb10649cbf"))
    assert r2[-1] == (b"cache-control", b"no-cache") and r2[3][1] == b"www.example.com"
    r3 = d.decode(bytes.fromhex(
        "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf"))
    assert r3[-1] == (b"custom-key", b"custom-value") and d.size == 164
    for n in (0, 1, 258, 259, 1000, 10 << 20):
        assert zlib.decompress(gzip_zeros(n), 31) == bytes(n), n
    blk = encode_headers([(":path", "/x"), ("a", "b" * 200)], huffman=True)
    assert HpackDecoder().decode(blk) == [(b":path", b"/x"), (b"a", b"b" * 200)]
    return True


if __name__ == "__main__":
    self_test()
    print("h2raw: self-test ok")
