#!/usr/bin/env python3
"""HTTP/JSON on the gRPC port (issue #18), against perfc-http-test-server.

Drives web.v1.Web with python's http.client and urllib, raw sockets
(pipelining, garbage, slow clients), curl (HTTP/1.1 and HTTP/2 prior
knowledge) and grpcio (gRPC on the same port). Every check asserts values:
statuses, bodies, header values, counts, timings' bounds.

Usage: test_http.py SERVER_BINARY
"""
import http.client
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

SERVER = sys.argv[1]
SECRET = b"perfc-http-test-secret-0123456789abcdef"
ORIGIN = "https://app.example"


def jwt(claims):
    """An HS256 JWT signed with the test server's secret."""
    import base64
    import hashlib
    import hmac

    def b64(b):
        return base64.urlsafe_b64encode(b).rstrip(b"=")
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = b64(hmac.new(SECRET, head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + sig).decode()


def bearer():
    return {"Authorization": "Bearer " + jwt({"sub": "tester",
                                              "exp": int(time.time()) + 600})}
MAX_BODY = 65536
FAILED = []


def start(*extra):
    # HTTP_TEST_WRAP: a command to run the server under ("valgrind
    # --error-exitcode=9 --leak-check=full"); its exit status is checked.
    wrap = os.environ.get("HTTP_TEST_WRAP", "").split()
    p = subprocess.Popen([*wrap, SERVER, "--max-body", str(MAX_BODY), "--threads",
                          "2", "--cors-origin", ORIGIN, *extra],
                         stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if not line.startswith("listening on "):
        p.kill()
        raise SystemExit(f"server did not start: {line!r}")
    host, port = line.split()[-1].rsplit(":", 1)
    global METRICS
    METRICS = p.stdout.readline().split()[-1]
    return p, host, int(port)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def req(method, path, body=None, headers=None, conn=None):
    """One HTTP/1.1 request; returns (status, headers dict, body bytes)."""
    own = conn is None
    c = conn or http.client.HTTPConnection(HOST, PORT, timeout=10)
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    out = r.read()
    hd = {k.lower(): v for k, v in r.getheaders()}
    if own:
        c.close()
    return r.status, hd, out


def jreq(method, path, body=None, headers=None, conn=None):
    st, hd, out = req(method, path, body, headers, conn)
    return st, hd, (json.loads(out) if out else None)


def curl(*args):
    r = subprocess.run(["curl", "-sS", "--max-time", "10", *args],
                       capture_output=True, timeout=20)
    return r.returncode, r.stdout, r.stderr


# ---- tests -------------------------------------------------------------------

def test_verbs_and_bindings():
    st, hd, b = jreq("POST", "/v1/things", {"id": "1", "name": "one", "size": 3,
                                          "tags": ["a", "b"]})
    check(st == 200, f"POST create: {st} {b}")
    check(hd["content-type"] == "application/json", hd)
    check(b == {"id": "1", "name": "one", "tags": ["a", "b"], "size": 3}, b)
    st, _, b = jreq("GET", "/v1/things/1")
    check(st == 200 and b == {"id": "1", "name": "one", "size": 3}, (st, b))
    # query parameter on a field the path does not bind
    st, _, b = jreq("GET", "/v1/things/1?view=full")
    check(st == 200 and b["tags"] == ["view=full"], b)
    # PATCH: body "thing", path thing.id wins over the body's id
    st, _, b = jreq("PATCH", "/v1/things/1", {"id": "9", "name": "uno", "size": 4})
    check(st == 200 and b == {"id": "1", "name": "uno", "size": 4}, (st, b))
    # PUT (additional binding)
    st, _, b = jreq("PUT", "/v1/things/1", {"name": "eins", "size": 5})
    check(st == 200 and b["name"] == "eins" and b["size"] == 5, (st, b))
    # HEAD (custom kind): no body
    st, hd, raw = req("HEAD", "/v1/ping")
    check(st == 200 and raw == b"", (st, raw))
    # DELETE, then the thing is gone: 404 with google.rpc.Status
    # DeleteThing needs a token (perfc_auth reads Authorization): 401 without
    st, _, b = jreq("DELETE", "/v1/things/1")
    check(st == 401 and b["code"] == 16, (st, b))
    st, _, b = jreq("DELETE", "/v1/things/1",
                    headers={"Authorization": "Bearer " + jwt({"sub": "x", "exp": 1})})
    check(st == 401 and b["code"] == 16, (st, b))
    st, _, b = jreq("DELETE", "/v1/things/1", headers=bearer())
    check(st == 200 and b == {}, (st, b))
    st, _, b = jreq("GET", "/v1/things/1")
    check(st == 404 and b == {"code": 5, "message": "thing 1 not found",
                              "details": []}, (st, b))
    # urllib too (GET with query parameters: repeated and nested)
    for i, (n, s) in enumerate([("x", 1), ("y", 7), ("x", 9)], start=10):
        st, _, _ = jreq("POST", "/v1/things", {"id": str(i), "name": n, "size": s})
        check(st == 200, st)
    url = (f"http://{HOST}:{PORT}/v1/things?page_size=5&tags=t1&tags=t2"
           "&filter.name=x&filter.minSize=5")
    with urllib.request.urlopen(url, timeout=10) as r:
        b = json.loads(r.read())
    check([t["id"] for t in b["things"]] == ["12"], b)
    check(b["things"][0]["tags"] == ["t1", "t2"], b)
    check(b["nextPageToken"] == "after-1", b)


def test_error_mapping():
    want = {1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429,
            9: 400, 10: 409, 11: 400, 12: 501, 13: 500, 14: 503, 15: 500,
            16: 401}
    c = http.client.HTTPConnection(HOST, PORT, timeout=10)
    for code, http_status in want.items():
        st, hd, b = jreq("POST", "/v1/fail", {"code": code, "message": f"m{code}"},
                         conn=c)
        check(st == http_status, f"code {code}: HTTP {st}, want {http_status}")
        check(b == {"code": code, "message": f"m{code}", "details": []}, b)
        check(hd["content-type"] == "application/json", hd)
    c.close()
    st, _, b = jreq("POST", "/v1/fail", {"code": 0})
    check(st == 200 and b == {"name": "ok"}, (st, b))


def test_request_errors():
    # unknown route: 404 naming the path
    st, _, b = jreq("GET", "/v2/nothing/here")
    check(st == 404 and b["code"] == 5 and "/v2/nothing/here" in b["message"], b)
    # wrong method on a known path: 405
    st, _, b = jreq("DELETE", "/v1/things")
    check(st == 405 and "DELETE" in b["message"] and "/v1/things" in b["message"], b)
    # malformed JSON: 400
    st, _, b = jreq("POST", "/v1/things", b'{"id": "2", "name": ')
    check(st == 400 and b["code"] == 3, (st, b))
    # wrong type: 400 naming the field
    st, _, b = jreq("POST", "/v1/things", {"id": "2", "name": 5})
    check(st == 400 and "name" in b["message"], b)
    st, _, b = jreq("POST", "/v1/things", {"id": "2", "size": "big"})
    check(st == 400 and "size" in b["message"], b)
    # a bad query parameter: 400 naming it
    st, _, b = jreq("GET", "/v1/things?page_size=abc")
    check(st == 400 and "page_size" in b["message"], b)
    # a path variable of the wrong type
    st, _, b = jreq("GET", "/v1/things/abc")
    check(st == 400 and b["code"] == 3, (st, b))
    # a handler's INVALID_ARGUMENT
    st, _, b = jreq("GET", "/v1/things/999")
    check(st == 400 and "out of range" in b["message"], b)
    # client and bidi streaming over JSON: 501
    for path in ("/v1/upload", "/v1/chat"):
        st, _, b = jreq("POST", path, {"id": "1"})
        check(st == 501 and b["code"] == 12 and "stream" in b["message"], (path, st, b))
    # a malformed grpc-timeout
    st, _, b = jreq("GET", "/v1/whoami", headers={"grpc-timeout": "soon"})
    check(st == 400 and "grpc-timeout" in b["message"], b)


def test_body_limits():
    big = {"id": "3", "name": "x" * (MAX_BODY + 10)}
    st, _, b = jreq("POST", "/v1/things", big)
    check(st == 413 and b["code"] == 8 and str(MAX_BODY) in b["message"], (st, b))
    # chunked, without a length: 413 once the chunks pass the limit
    c = http.client.HTTPConnection(HOST, PORT, timeout=10)
    chunks = (b"x" * 8192 for _ in range(MAX_BODY // 8192 + 4))
    c.request("POST", "/v1/things", body=chunks,
              headers={"Content-Type": "application/json",
                       "Transfer-Encoding": "chunked"}, encode_chunked=True)
    r = c.getresponse()
    check(r.status == 413, r.status)
    check(r.getheader("connection") == "close", r.getheaders())
    c.close()
    # just under the limit is read whole (and then refused as a bad body)
    st, _, b = jreq("POST", "/v1/things", b"{" + b" " * (MAX_BODY - 2) + b"}")
    check(st == 400 or st == 200, (st, b))
    # headers past max_header_list_bytes: 431
    st, _, b = jreq("GET", "/v1/whoami", headers={"x-big": "h" * 20000})
    check(st == 431 and b["code"] == 8, (st, b))


def test_interceptors_metadata_deadline():
    st, hd, b = jreq("GET", "/v1/whoami", headers={
        "Authorization": "Bearer tok-1", "Grpc-Metadata-Tenant": "acme",
        "X-Other": "dropped", "grpc-timeout": "5S"})
    check(st == 200, (st, b))
    check(b["authorization"] == "Bearer tok-1", b)
    check(b["metadata"].get("tenant") == "acme", b)
    check("x-other" not in b["metadata"], b)
    check(0 < int(b["remainingMs"]) <= 5000, b)
    check(b["method"] == "/web.v1.Web/WhoAmI", b)
    check(hd.get("grpc-metadata-x-served-by") == "perfc", hd)
    st, _, b = jreq("GET", "/v1/whoami")
    check(b["remainingMs"] == "-1", b)
    # the deadline from grpc-timeout ends a slow pool handler: 504
    t0 = time.monotonic()
    st, _, b = jreq("POST", "/v1/fail", {"sleepMs": 3000},
                    headers={"grpc-timeout": "200m"})
    dt = time.monotonic() - t0
    check(st == 504 and b["code"] == 4, (st, b))
    check(dt < 2.0, f"deadline answered after {dt:.2f}s")
    # the rate limiter (an interceptor): 2/s, burst 2 -> 429
    c = http.client.HTTPConnection(HOST, PORT, timeout=10)
    codes = [jreq("GET", "/v1/limited", conn=c)[0] for _ in range(6)]
    c.close()
    check(codes.count(200) >= 2 and codes.count(429) >= 3, codes)


def read_response(f):
    """Reads one HTTP/1.1 response from a socket file; (status, headers, body)."""
    line = f.readline()
    if not line:
        return None
    status = int(line.split()[1])
    hd = {}
    while True:
        l = f.readline().rstrip(b"\r\n")
        if not l:
            break
        k, v = l.split(b":", 1)
        hd[k.decode().lower()] = v.strip().decode()
    if "content-length" in hd:
        body = f.read(int(hd["content-length"]))
    elif hd.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            n = int(f.readline().strip(), 16)
            chunk = f.read(n + 2)[:n]
            if n == 0:
                break
            body += chunk
    else:
        body = f.read()
    return status, hd, body


def test_keepalive_pipelining():
    jreq("POST", "/v1/things", {"id": "20", "name": "p20"})
    s = socket.create_connection((HOST, PORT), timeout=10)
    f = s.makefile("rb")
    reqs = (b"GET /v1/things/20 HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /v1/things/21 HTTP/1.1\r\nHost: t\r\n\r\n"
            b"POST /v1/things HTTP/1.1\r\nHost: t\r\nContent-Length: 27\r\n\r\n"
            b'{"id":"21","name":"p21xxx"}'
            b"GET /v1/things/21 HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /v1/things:stream?page_size=2 HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /v1/things/20 HTTP/1.1\r\nHost: t\r\n\r\n")
    s.sendall(reqs)  # one write: six pipelined requests
    got = [read_response(f) for _ in range(6)]
    check([g[0] for g in got] == [200, 404, 200, 200, 200, 200],
          [g[0] for g in got])
    check(json.loads(got[0][2])["name"] == "p20", got[0])
    check(json.loads(got[3][2])["name"] == "p21xxx", got[3])
    lines = got[4][2].decode().splitlines()
    check([json.loads(l)["id"] for l in lines] == ["1", "2"], lines)
    check(got[4][1]["content-type"] == "application/x-ndjson", got[4][1])
    # the connection stays open for more
    s.sendall(b"GET /v1/things/20 HTTP/1.1\r\nHost: t\r\n\r\n")
    g = read_response(f)
    check(g[0] == 200 and json.loads(g[2])["id"] == "20", g)
    # Connection: close ends it after the answer
    s.sendall(b"GET /v1/things/20 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    g = read_response(f)
    check(g[0] == 200 and g[1].get("connection") == "close", g)
    check(f.read() == b"", "connection not closed after Connection: close")
    s.close()
    # 2,000 pipelined requests (about 90 KB) in one write: every answer,
    # in order (the server reads on only once each answer left)
    n = 2000
    s.close()
    s = socket.create_connection((HOST, PORT), timeout=20)
    f = s.makefile("rb")
    batch = b"".join(b"GET /v1/things/%d?view=v%d HTTP/1.1\r\nHost: t\r\n\r\n"
                     % (20 if i % 2 == 0 else 22, i) for i in range(n))
    s.sendall(batch)
    seen = []
    for i in range(n):
        g = read_response(f)
        seen.append(g[0])
        if i % 2 == 0:
            check(json.loads(g[2])["tags"] == [f"view=v{i}"], (i, g))
    check(seen == [200 if i % 2 == 0 else 404 for i in range(n)],
          f"pipelined answers out of order or failed: {seen[:10]}")
    s.close()
    # a client that shuts its write side after its requests still gets
    # every answer, then the close
    s = socket.create_connection((HOST, PORT), timeout=10)
    f = s.makefile("rb")
    s.sendall(b"GET /v1/things/20 HTTP/1.1\r\nHost: t\r\n\r\n"
              b"GET /v1/things:stream?page_size=2 HTTP/1.1\r\nHost: t\r\n\r\n")
    s.shutdown(socket.SHUT_WR)
    got = [read_response(f) for _ in range(2)]
    check([g[0] for g in got] == [200, 200] and len(got[1][2].splitlines()) == 2, got)
    check(f.read() == b"", "not closed after the half-close's answers")
    s.close()
    # HTTP/1.0 without keep-alive: closed after the answer
    s = socket.create_connection((HOST, PORT), timeout=10)
    s.sendall(b"GET /v1/things/20 HTTP/1.0\r\n\r\n")
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    check(data.startswith(b"HTTP/1.1 200 "), data[:40])
    s.close()


def test_early_answers():
    """An answer that leaves before its request's body (a refusal at the
    head) must not end the request early: the body still arrives, and the
    connection goes on (regression: the body's bytes found no request, a
    crash)."""
    for head, want in [
        (b"POST /web.v1.Web/Nope HTTP/1.1\r\nHost: t\r\n"
         b"Content-Type: application/grpc-web+proto\r\nContent-Length: 5\r\n\r\n",
         b"HTTP/1.1 200 "),
        (b"POST /v1/things HTTP/1.1\r\nHost: t\r\ngrpc-timeout: soon\r\n"
         b"Content-Length: 5\r\n\r\n", b"HTTP/1.1 400 ")]:
        s = socket.create_connection((HOST, PORT), timeout=10)
        f = s.makefile("rb")
        s.sendall(head)
        g = read_response(f)
        check(g is not None and g[0] in (200, 400), g)
        time.sleep(0.05)
        s.sendall(b"\x00\x00\x00\x00\x00")  # the body, after the answer
        s.sendall(b"GET /v1/whoami HTTP/1.1\r\nHost: t\r\n\r\n")
        g = read_response(f)
        check(g is not None and g[0] == 200, g)
        s.close()


def test_ndjson_stream():
    c = http.client.HTTPConnection(HOST, PORT, timeout=10)
    c.request("GET", "/v1/things:stream?page_size=3")
    r = c.getresponse()
    body = r.read().decode()
    check(r.status == 200 and r.getheader("transfer-encoding") == "chunked",
          r.getheaders())
    rows = [json.loads(l) for l in body.splitlines()]
    check(rows == [{"id": str(i), "name": f"thing-{i}", "size": 10 * i}
                   for i in (1, 2, 3)], rows)
    # failure after two messages: the last line is the error
    c.request("GET", "/v1/things:stream?page_size=2&fail_code=5")
    r = c.getresponse()
    rows = [json.loads(l) for l in r.read().decode().splitlines()]
    check(r.status == 200 and len(rows) == 3, rows)
    check(rows[2] == {"error": {"code": 5, "message": "failed after 2 things",
                                "details": []}}, rows[2])
    # failure before any message: a plain error answer
    c.request("GET", "/v1/things:stream?page_size=0&fail_code=7")
    r = c.getresponse()
    b = json.loads(r.read())
    check(r.status == 403 and b["code"] == 7, (r.status, b))
    # no message, no failure: an empty body
    c.request("GET", "/v1/things:stream?page_size=0")
    r = c.getresponse()
    check(r.status == 200 and r.read() == b"", r.status)
    c.close()


def test_http2_curl():
    if shutil.which("curl") is None:
        raise AssertionError("curl is required")
    jreq("POST", "/v1/things", {"id": "30", "name": "h2"})
    base = f"http://{HOST}:{PORT}"
    rc, out, err = curl("--http2-prior-knowledge", "-w", "\n%{http_code} %{http_version}",
                        f"{base}/v1/things/30")
    body, meta = out.rsplit(b"\n", 1)
    check(rc == 0 and meta == b"200 2", (rc, meta, err))
    check(json.loads(body) == {"id": "30", "name": "h2"}, body)
    rc, out, _ = curl("--http2-prior-knowledge", "-w", "\n%{http_code}",
                      f"{base}/v1/nope")
    body, code = out.rsplit(b"\n", 1)
    check(code == b"404" and json.loads(body)["code"] == 5, out)
    rc, out, _ = curl("--http2-prior-knowledge", "-X", "PATCH", "-H",
                      "content-type: application/json", "-d", '{"name":"h2b"}',
                      "-w", "\n%{http_code}", f"{base}/v1/things/30")
    body, code = out.rsplit(b"\n", 1)
    check(code == b"200" and json.loads(body)["name"] == "h2b", out)
    rc, out, _ = curl("--http2-prior-knowledge", "-w", "\n%{http_code}",
                      f"{base}/v1/things:stream?page_size=2&fail_code=14")
    body, code = out.rsplit(b"\n", 1)
    rows = [json.loads(l) for l in body.decode().splitlines()]
    check(code == b"200" and len(rows) == 3 and rows[2]["error"]["code"] == 14, rows)
    with tempfile.NamedTemporaryFile() as tf:
        tf.write(b'{"name":"' + b"z" * (MAX_BODY + 100) + b'"}')
        tf.flush()
        rc, out, _ = curl("--http2-prior-knowledge", "-H",
                          "content-type: application/json", "--data-binary",
                          f"@{tf.name}", "-w", "\n%{http_code}", f"{base}/v1/things")
        body, code = out.rsplit(b"\n", 1)
        check(code == b"413", out[-200:])
    # curl over HTTP/1.1 as well
    rc, out, _ = curl("--http1.1", "-H", "Authorization: Basic eDp5",
                      "-w", "\n%{http_code} %{http_version}", f"{base}/v1/whoami")
    body, meta = out.rsplit(b"\n", 1)
    check(meta == b"200 1.1" and json.loads(body)["authorization"] == "Basic eDp5",
          out)
    # several requests on one HTTP/2 connection, at once: nghttp (curl
    # 7.88.1 cannot reuse a prior-knowledge connection: curl/curl#10634)
    if shutil.which("nghttp"):
        r = subprocess.run(["nghttp", "-nv", f"{base}/v1/things/30",
                            f"{base}/v1/whoami", f"{base}/v1/x",
                            f"{base}/v1/things:stream?page_size=2"],
                           capture_output=True, timeout=20, text=True)
        st = sorted(l.split(":status: ")[1].strip() for l in r.stdout.splitlines()
                    if ":status: " in l)
        check(st == ["200", "200", "200", "404"], r.stdout[-2000:])


def pb_varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def test_grpc_same_port():
    import grpc
    jreq("POST", "/v1/things", {"id": "40", "name": "via-http"})
    ch = grpc.insecure_channel(f"{HOST}:{PORT}")
    get = ch.unary_unary("/web.v1.Web/GetThing")
    resp = get(b"\x08" + pb_varint(40), timeout=10)
    # Thing: 1 id=40, 2 name="via-http"
    check(resp == b"\x08\x28\x12\x08via-http", resp)
    try:
        get(b"\x08" + pb_varint(41), timeout=10)
        raise AssertionError("GetThing 41 did not fail")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.NOT_FOUND, e.code())
    stream = ch.unary_stream("/web.v1.Web/StreamThings")
    msgs = list(stream(b"\x08\x04", timeout=10))
    check(len(msgs) == 4, len(msgs))
    chat = ch.stream_stream("/web.v1.Web/Chat")
    out = list(chat(iter([b"\x12\x01a", b"\x12\x01b"]), timeout=10))
    check(out == [b"\x12\x01a", b"\x12\x01b"], out)
    try:
        ch.unary_unary("/web.v1.Web/Nope")(b"", timeout=10)
        raise AssertionError("unknown method answered")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.UNIMPLEMENTED, e.code())
    ch.close()
    # and what gRPC wrote, HTTP reads
    st, _, b = jreq("GET", "/v1/things/40")
    check(st == 200 and b["name"] == "via-http", b)


def test_garbage():
    cases = [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /v1/things/1 HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400),
        (b"GET /v1/things/1 HTTP/1.1\r\nBad Header\r\n\r\n", 400),
        (b"POST /v1/things HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"GET /v1/\x01things HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 100000 + b"\r\n\r\n", 431),
        (b"GET nopath HTTP/1.1\r\n\r\n", 400),
    ]
    for data, want in cases:
        s = socket.create_connection((HOST, PORT), timeout=10)
        try:
            s.sendall(data)
        except OSError:
            pass
        got = b""
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    break
                got += d
        except OSError:
            pass
        s.close()
        check(got.startswith(b"HTTP/1.1 %d " % want), (data[:60], got[:120]))
    rnd = random.Random(18)
    for i in range(200):
        n = rnd.randint(1, 300)
        if i % 2:
            data = bytes(rnd.getrandbits(8) for _ in range(n))
        else:  # mutate a valid request
            base = bytearray(b"POST /v1/things?x=1 HTTP/1.1\r\nHost: a\r\n"
                             b"Content-Length: 12\r\n\r\n{\"id\":\"50\"}")
            for _ in range(rnd.randint(1, 6)):
                base[rnd.randrange(len(base))] = rnd.getrandbits(8)
            data = bytes(base)
        if data.startswith(b"PRI"):
            continue
        s = socket.create_connection((HOST, PORT), timeout=5)
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
        except OSError:
            pass
        s.close()
    st, _, _ = jreq("GET", "/v1/whoami")
    check(st == 200, "server unwell after garbage")


def test_idle_and_slow_clients():
    p, host, port = start("--idle-ms", "300")
    try:
        s = socket.create_connection((host, port), timeout=10)
        s.sendall(b"GET /v1/whoami HTTP/1.1\r\nHost: t\r\n\r\n")
        f = s.makefile("rb")
        check(read_response(f)[0] == 200, "whoami")
        t0 = time.monotonic()
        check(f.read() == b"", "idle connection not closed")
        dt = time.monotonic() - t0
        check(0.2 < dt < 3.0, f"idle close after {dt:.2f}s (idle 300 ms)")
        s.close()
        # a request head that never ends: closed after the handshake
        # timeout (10 s default), without an answer
        s = socket.create_connection((host, port), timeout=30)
        s.sendall(b"GET /v1/ping HTTP/1.1\r\nHo")
        t0 = time.monotonic()
        check(s.recv(100) == b"", "slow head answered")
        dt = time.monotonic() - t0
        check(8.0 < dt < 16.0, f"slow head closed after {dt:.2f}s")
        s.close()
    finally:
        p.terminate()
        rc = p.wait(timeout=60)
    check(rc in (0, -15), f"second server exited with {rc}")


def scrape():
    with urllib.request.urlopen(f"http://{METRICS}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for l in text.splitlines():
        if l and not l.startswith("#"):
            k, v = l.rsplit(" ", 1)
            out[k] = float(v)
    return out


def test_metrics_by_protocol():
    """The interceptors run for HTTP calls: grpc_server_handled_total counts
    them with gRPC's, perfc_server_http_handled_total by protocol."""
    def series(m, proto, method, code):
        return m.get(f'perfc_server_http_handled_total{{protocol="{proto}",'
                     f'grpc_service="web.v1.Web",grpc_method="{method}",'
                     f'grpc_code="{code}"}}', 0.0)

    def handled(m, method, code):
        return m.get('grpc_server_handled_total{grpc_type="unary",'
                     f'grpc_service="web.v1.Web",grpc_method="{method}",'
                     f'grpc_code="{code}"}}', 0.0)
    import grpc
    m0 = scrape()
    for _ in range(3):
        check(jreq("GET", "/v1/things/63")[0] == 404, "404")
    rc, _, _ = curl("--http2-prior-knowledge", "-o", "/dev/null",
                    f"http://{HOST}:{PORT}/v1/things/63")
    ch = grpc.insecure_channel(f"{HOST}:{PORT}")
    try:
        ch.unary_unary("/web.v1.Web/GetThing")(b"\x08\x3f", timeout=10)
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.NOT_FOUND, e.code())
    ch.close()
    m1 = scrape()
    d1 = series(m1, "http1.1+json", "GetThing", "NotFound") - \
        series(m0, "http1.1+json", "GetThing", "NotFound")
    d2 = series(m1, "h2+json", "GetThing", "NotFound") - \
        series(m0, "h2+json", "GetThing", "NotFound")
    dall = handled(m1, "GetThing", "NotFound") - handled(m0, "GetThing", "NotFound")
    check((d1, d2, dall) == (3, 1, 5), (d1, d2, dall))
    # methods without routes have no HTTP series; routed ones start at zero
    check(any('grpc_method="Fail"' in k and "perfc_server_http" in k for k in m1),
          "no HTTP series for Fail")

def web_call(path, msgs, text=False, headers=None, http2=False):
    """A gRPC-Web call (PROTOCOL-WEB.md): frames in, (messages, trailers) out."""
    import base64
    body = b"".join(b"\x00" + len(m).to_bytes(4, "big") + m for m in msgs)
    ct = "application/grpc-web-text" if text else "application/grpc-web+proto"
    if text:
        body = base64.b64encode(body)
    h = {"content-type": ct, "x-grpc-web": "1", "accept": ct}
    h.update(headers or {})
    if http2:
        with tempfile.NamedTemporaryFile() as tf:
            tf.write(body)
            tf.flush()
            args = ["--http2-prior-knowledge", "--data-binary", f"@{tf.name}",
                    "-D", "-"]
            for k, v in h.items():
                args += ["-H", f"{k}: {v}"]
            rc, out, err = curl(*args, f"http://{HOST}:{PORT}{path}")
        check(rc == 0, err)
        head, data = out.split(b"\r\n\r\n", 1)
        status = int(head.split()[1])
        rct = [l.split(b":", 1)[1].strip().decode() for l in head.split(b"\r\n")
               if l.lower().startswith(b"content-type:")][0]
    else:
        c = http.client.HTTPConnection(HOST, PORT, timeout=10)
        c.request("POST", path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        status, rct = r.status, r.getheader("content-type")
        c.close()
    check(status == 200, (status, data[:200]))
    check(rct == ct + "+proto" if not ct.endswith("+proto") else rct == ct, rct)
    if text:
        # each write is base64 on its own (padding may end any quad)
        data = b"".join(base64.b64decode(data[i:i + 4]) for i in range(0, len(data), 4))
    msgs_out, trailers, i = [], None, 0
    while i < len(data):
        flag, n = data[i], int.from_bytes(data[i + 1:i + 5], "big")
        payload = data[i + 5:i + 5 + n]
        i += 5 + n
        if flag & 0x80:
            check(trailers is None and i == len(data), "trailers not last")
            trailers = dict(l.split(":", 1) for l in payload.decode().split("\r\n") if l)
        else:
            msgs_out.append(payload)
    check(trailers is not None, "no trailers frame")
    return msgs_out, trailers


def test_grpc_web():
    jreq("POST", "/v1/things", {"id": "50", "name": "web"})
    for text in (False, True):
        for h2 in (False, True):
            msgs, tr = web_call("/web.v1.Web/GetThing", [b"\x08\x32"], text=text,
                                http2=h2)
            check(msgs == [b"\x08\x32\x12\x03web"] and tr["grpc-status"] == "0",
                  (text, h2, msgs, tr))
            msgs, tr = web_call("/web.v1.Web/GetThing", [b"\x08\x33"], text=text,
                                http2=h2)
            check(msgs == [] and tr["grpc-status"] == "5" and
                  tr["grpc-message"] == "thing 51 not found", (text, h2, tr))
    # server stream, text mode: three messages, then the status
    msgs, tr = web_call("/web.v1.Web/StreamThings", [b"\x08\x03"], text=True)
    check(len(msgs) == 3 and msgs[0] == b"\x08\x01\x12\x07thing-1\x20\x0a", msgs)
    check(tr["grpc-status"] == "0", tr)
    # a failing stream: its messages, then the error in the trailers
    msgs, tr = web_call("/web.v1.Web/StreamThings", [b"\x08\x02\x20\x09"])
    check(len(msgs) == 2 and tr["grpc-status"] == "9", (msgs, tr))
    # client streaming: three frames in one body (gRPC-Web allows it)
    msgs, tr = web_call("/web.v1.Web/Upload", [b"\x12\x01a"] * 3)
    check(msgs == [b"\x20\x03"] and tr["grpc-status"] == "0", (msgs, tr))
    # metadata: plain headers (not the browser's), trailers from the handler
    msgs, tr = web_call("/web.v1.Web/WhoAmI", [b""],
                        headers={"authorization": "Bearer w", "tenant": "acme"})
    check(b"\x0a\x08Bearer w" in msgs[0] and b"tenant" in msgs[0], msgs)
    check(b"x-grpc-web" not in msgs[0] and b"accept" not in msgs[0], msgs)
    check(b"/web.v1.Web/WhoAmI" in msgs[0], msgs)
    # unknown method, and the auth interceptor on DeleteThing
    msgs, tr = web_call("/web.v1.Web/Nope", [b""])
    check(tr["grpc-status"] == "12", tr)
    msgs, tr = web_call("/web.v1.Web/DeleteThing", [b"\x08\x32"])
    check(tr["grpc-status"] == "16", tr)
    msgs, tr = web_call("/web.v1.Web/DeleteThing", [b"\x08\x32"], headers=bearer())
    check(tr["grpc-status"] == "0" and msgs == [b""], (msgs, tr))
    # a malformed text body
    c = http.client.HTTPConnection(HOST, PORT, timeout=10)
    c.request("POST", "/web.v1.Web/GetThing", body=b"!!!!",
              headers={"content-type": "application/grpc-web-text"})
    r = c.getresponse()
    data = r.read()
    check(r.status == 200 and b"grpc-status:13" in
          b"".join(__import__("base64").b64decode(data[i:i + 4])
                   for i in range(0, len(data), 4)), data)
    c.close()


def test_cors():
    m0 = scrape()
    started = ('grpc_server_started_total{grpc_type="unary",'
               'grpc_service="web.v1.Web",grpc_method="DeleteThing"}')
    pre = {"Origin": ORIGIN, "Access-Control-Request-Method": "DELETE",
           "Access-Control-Request-Headers": "authorization, grpc-timeout"}
    for h2 in (False, True):
        if h2:
            args = ["--http2-prior-knowledge", "-X", "OPTIONS", "-D", "-", "-o",
                    "/dev/null"]
            for k, v in pre.items():
                args += ["-H", f"{k}: {v}"]
            rc, out, _ = curl(*args, f"http://{HOST}:{PORT}/v1/things/1")
            lines = out.decode().split("\r\n")
            st = int(lines[0].split()[1])
            hd = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip()
                  for l in lines[1:] if ":" in l}
        else:
            st, hd, body = req("OPTIONS", "/v1/things/1", headers=pre)
            check(body == b"" and "content-length" not in hd, (body, hd))
        check(st == 204, (h2, st, hd))
        check(hd["access-control-allow-origin"] == ORIGIN, hd)
        check("DELETE" in hd["access-control-allow-methods"], hd)
        check(hd["access-control-allow-headers"] == "authorization, grpc-timeout", hd)
        check(hd["access-control-max-age"] == "600", hd)
        check(hd["vary"] == "origin", hd)
    # the preflight reached no handler and no interceptor
    check(scrape().get(started, 0) == m0.get(started, 0), "preflight reached DeleteThing")
    # another origin: 403, no CORS headers
    st, hd, b = jreq("OPTIONS", "/v1/things/1", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    check(st == 403 and b["code"] == 7 and "access-control-allow-origin" not in hd,
          (st, hd, b))
    # actual requests: headers for the allowed origin only
    jreq("POST", "/v1/things", {"id": "60", "name": "cors"})
    st, hd, b = jreq("GET", "/v1/things/60", headers={"Origin": ORIGIN})
    check(st == 200 and hd["access-control-allow-origin"] == ORIGIN and
          hd["access-control-expose-headers"] == "grpc-status, grpc-message", hd)
    st, hd, b = jreq("GET", "/v1/things/60", headers={"Origin": "https://evil.example"})
    check(st == 200 and "access-control-allow-origin" not in hd, hd)
    st, hd, b = jreq("GET", "/v1/things/60")
    check("access-control-allow-origin" not in hd, hd)
    # errors carry them too (a page must read the error), and gRPC-Web
    st, hd, b = jreq("GET", "/v1/things/61", headers={"Origin": ORIGIN})
    check(st == 404 and hd["access-control-allow-origin"] == ORIGIN, hd)
    c = http.client.HTTPConnection(HOST, PORT, timeout=10)
    c.request("POST", "/web.v1.Web/GetThing", body=b"\x00\x00\x00\x00\x02\x08\x3c",
              headers={"content-type": "application/grpc-web+proto", "Origin": ORIGIN})
    r = c.getresponse()
    r.read()
    check(r.getheader("access-control-allow-origin") == ORIGIN, r.getheaders())
    c.close()
    # without Access-Control-Request-Method an OPTIONS is an ordinary request
    st, hd, b = jreq("OPTIONS", "/v1/things/1", headers={"Origin": ORIGIN})
    check(st == 405, (st, b))


def test_tls():
    """HTTP/1.1 over TLS (ALPN http/1.1, or no ALPN), HTTP/2 JSON and gRPC
    over TLS (ALPN h2), one port."""
    import ssl
    import grpc
    certs = tempfile.mkdtemp(prefix="perfc-http-tls-")
    try:
        subprocess.run(["sh", os.path.join(os.path.dirname(__file__), "..", "tls",
                                           "make-certs.sh"), certs],
                       check=True, capture_output=True, timeout=120)
        p, host, port = start("--tls-cert", os.path.join(certs, "server.crt"),
                              "--tls-key", os.path.join(certs, "server.key"))
        try:
            ca = os.path.join(certs, "ca.crt")
            for alpn in (None, ["http/1.1"]):
                ctx = ssl.create_default_context(cafile=ca)
                if alpn:
                    ctx.set_alpn_protocols(alpn)
                c = http.client.HTTPSConnection("localhost", port, context=ctx,
                                                timeout=10)
                for _ in range(2):  # keep-alive over TLS
                    st, hd, b = jreq("GET", "/v1/whoami", conn=c,
                                     headers={"Authorization": "Bearer t"})
                    check(st == 200 and b["authorization"] == "Bearer t", (alpn, st, b))
                c.close()
            base = f"https://localhost:{port}"
            rc, out, err = curl("--cacert", ca, "--http1.1", "-w", "\n%{http_version}",
                                f"{base}/v1/whoami")
            check(rc == 0 and out.rsplit(b"\n", 1)[1] == b"1.1", (rc, out, err))
            rc, out, err = curl("--cacert", ca, "--http2", "-w", "\n%{http_version}",
                                f"{base}/v1/whoami")
            check(rc == 0 and out.rsplit(b"\n", 1)[1] == b"2", (rc, out, err))
            creds = grpc.ssl_channel_credentials(root_certificates=open(ca, "rb").read())
            ch = grpc.secure_channel(f"localhost:{port}", creds)
            try:
                ch.unary_unary("/web.v1.Web/GetThing")(b"\x08\x3e", timeout=10)
                raise AssertionError("GetThing 62 answered")
            except grpc.RpcError as e:
                check(e.code() == grpc.StatusCode.NOT_FOUND, e.code())
            ch.close()
        finally:
            p.terminate()
            rc = p.wait(timeout=60)
        check(rc in (0, -15), f"TLS server exited with {rc}")
    finally:
        shutil.rmtree(certs, ignore_errors=True)



# ---- compression and the HTTP cache (issue #18 item 6) ----------------------

def note_url(i, suffix=""):
    return f"/v1/notes/{i}{suffix}"


def grpc_note(port, method, payload):
    """A unary gRPC call of web.v1.Web/<method> with a hand-encoded request;
    returns the response's fields {number: value} (varints and strings)."""
    import grpc
    ch = grpc.insecure_channel(f"{HOST}:{port}")
    try:
        raw = ch.unary_unary(f"/web.v1.Web/{method}")(payload, timeout=10)
    finally:
        ch.close()
    out, i = {}, 0
    while i < len(raw):
        key = raw[i]
        i += 1
        if key & 7 == 0:
            v, shift = 0, 0
            while True:
                b = raw[i]
                i += 1
                v |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
            out[key >> 3] = v
        else:
            n = raw[i]  # strings below 128 bytes here
            i += 1
            out[key >> 3] = raw[i:i + n].decode()
            i += n
    return out


def ungzip(hd, body):
    import gzip
    return gzip.decompress(body) if hd.get("content-encoding") == "gzip" else body


def on(port, method, path, body=None, headers=None):
    c = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        return req(method, path, body, headers, conn=c)
    finally:
        c.close()


def test_gzip():
    """Accept-Encoding decides (q-values, *, identity), only above the
    threshold and for JSON, HTTP/1.1 and HTTP/2; the body decompresses to
    the identity answer; NDJSON and small answers are never compressed."""
    import gzip
    big = "g" * 1500
    st, _, _ = jreq("PATCH", note_url(20), {"text": big})
    check(st == 200, st)
    st, hd, ident = req("GET", note_url(20), headers={"Accept-Encoding": "identity"})
    check(st == 200 and "content-encoding" not in hd, hd)
    check(hd.get("vary") == "accept-encoding", hd)
    doc = json.loads(ident)
    check(doc["text"] == big and len(ident) >= 1024, len(ident))
    takes = ["gzip", "GZIP", "x-gzip", "*", "deflate, gzip;q=0.5", "gzip;q=1.000",
             "br;q=1, gzip ; q=0.001", "identity;q=0, gzip", "*;q=0.1, identity"]
    refuses = ["identity", "gzip;q=0", "gzip;q=0.000", "*;q=0", "deflate, br",
               "gzip;q=0, *", "", "gzip;q=2", "gzip;q=abc", "gzip;q=0.0001",
               "gzip;=1", "gzipx", "gzip junk"]
    for ae in takes + refuses:
        st, hd, raw = req("GET", note_url(20), headers={"Accept-Encoding": ae})
        want = ae in takes
        check(st == 200 and (hd.get("content-encoding") == "gzip") == want,
              (ae, st, hd))
        check(hd.get("vary") == "accept-encoding", (ae, hd))
        if want:
            check(len(raw) < len(ident) and int(hd["content-length"]) == len(raw),
                  (ae, len(raw)))
            check(gzip.decompress(raw) == ident, ae)
        else:
            check(raw == ident, ae)
    # the answer to an update is compressed the same way
    st, hd, raw = req("PATCH", note_url(20), {"text": big},
                      headers={"Accept-Encoding": "gzip"})
    check(st == 200 and hd.get("content-encoding") == "gzip" and
          json.loads(gzip.decompress(raw))["text"] == big, hd)
    # (the update reloads the note: its answer counts one more load)
    _, _, ident = req("GET", note_url(20), headers={"Accept-Encoding": "identity"})
    # below the threshold (1 KiB): identity, and no Vary
    jreq("PATCH", note_url(21), {"text": "small"})
    st, hd, raw = req("GET", note_url(21), headers={"Accept-Encoding": "gzip"})
    check(st == 200 and "content-encoding" not in hd and "vary" not in hd and
          json.loads(raw)["text"] == "small", (hd, raw))
    # errors are small JSON: identity
    st, hd, raw = req("GET", "/v1/nope", headers={"Accept-Encoding": "gzip"})
    check(st == 404 and "content-encoding" not in hd and json.loads(raw)["code"] == 5,
          hd)
    # NDJSON streams are never compressed, however long
    st, hd, raw = req("GET", "/v1/things:stream?page_size=60",
                      headers={"Accept-Encoding": "gzip"})
    check(st == 200 and "content-encoding" not in hd and
          len(raw.splitlines()) == 60, (hd, len(raw)))
    # HTTP/2 (curl sends no Accept-Encoding unless told)
    base = f"http://{HOST}:{PORT}"
    with tempfile.TemporaryDirectory() as td:
        hf = os.path.join(td, "h")
        rc, out, err = curl("--http2-prior-knowledge", "-D", hf, "-H",
                            "Accept-Encoding: gzip", f"{base}{note_url(20)}")
        head = open(hf).read().lower()
        check(rc == 0 and head.startswith("http/2 200") and
              "content-encoding: gzip" in head and "vary: accept-encoding" in head,
              (rc, head, err))
        check(gzip.decompress(out) == ident, out[:40])
        rc, out, err = curl("--http2-prior-knowledge", "-D", hf, f"{base}{note_url(20)}")
        head = open(hf).read().lower()
        check(rc == 0 and "content-encoding" not in head and out == ident, head)
        rc, out, err = curl("--http1.1", "-D", hf, f"{base}{note_url(20)}")
        head = open(hf).read().lower()
        check(rc == 0 and "content-encoding" not in head and out == ident, head)
    # gRPC on the same port is not touched by HTTP compression
    f = grpc_note(PORT, "GetNote", b"\x08" + pb_varint(21))
    check(f.get(2) == "small", f)


def test_gzip_options():
    """--gzip-min-bytes moves the threshold; --gzip-level -1 turns it off."""
    import gzip
    p, _, port = start("--gzip-min-bytes", "16", "--gzip-level", "9")
    try:
        on(port, "PATCH", note_url(3), {"text": "0123456789" * 3})
        st, hd, raw = on(port, "GET", note_url(3), headers={"Accept-Encoding": "gzip"})
        check(st == 200 and hd.get("content-encoding") == "gzip" and
              json.loads(gzip.decompress(raw))["text"] == "0123456789" * 3, hd)
        st, hd, raw = on(port, "GET", "/v1/limited", headers={"Accept-Encoding": "gzip"})
        check(st == 200 and "content-encoding" not in hd and raw == b"{}", hd)  # < 16 bytes
    finally:
        p.terminate()
        check(p.wait(timeout=60) in (0, -15), "server exit")
    p, _, port = start("--gzip-level", "-1")
    try:
        on(port, "PATCH", note_url(3), {"text": "z" * 2000})
        st, hd, raw = on(port, "GET", note_url(3), headers={"Accept-Encoding": "gzip"})
        check(st == 200 and "content-encoding" not in hd and "vary" not in hd and
              json.loads(raw)["text"] == "z" * 2000, hd)
    finally:
        p.terminate()
        check(p.wait(timeout=60) in (0, -15), "server exit")


def etag_of(hd):
    return hd.get("etag")


def test_http_cache():
    """ETag stable for the same data, If-None-Match -> 304 without a body,
    a new ETag after an update through JSON or gRPC, Cache-Control; one
    fill serves gRPC and JSON; HTTP/1.1 and HTTP/2."""
    st, _, b = jreq("PATCH", note_url(30), {"text": "first"})
    check(st == 200, (st, b))
    st, hd, b = jreq("GET", note_url(30))
    e1 = etag_of(hd)
    check(st == 200 and b["text"] == "first", b)
    loads = int(b["loads"])
    check(e1 is not None and e1.startswith('"') and e1.endswith('"') and
          len(e1) == 24, e1)
    check(hd.get("cache-control") == "private, no-cache", hd)
    # the same data: the same tag, and no second load (served by the cache)
    for _ in range(3):
        st, hd, b2 = jreq("GET", note_url(30))
        check(st == 200 and etag_of(hd) == e1 and b2 == b, (hd, b2))
    # gRPC reads the entry the JSON GET filled: the same load count
    f = grpc_note(PORT, "GetNote", b"\x08" + pb_varint(30))
    check(f.get(2) == "first" and f.get(3) == loads, (f, loads))
    # conditional GETs
    for inm in (e1, "W/" + e1, '"nope", ' + e1, "*", f' {e1} ,"x"',
                e1[:-1] + '-gzip"'):
        st, hd, raw = req("GET", note_url(30), headers={"If-None-Match": inm})
        check(st == 304 and raw == b"" and etag_of(hd) == e1 and
              hd.get("cache-control") == "private, no-cache" and
              "content-type" not in hd and "content-length" not in hd,
              (inm, st, hd, raw))
    for inm in ('"nope"', 'W/"nope"', e1[:-2] + '"', e1 + "x", e1[1:],
                '"' + e1 + '"', "", ",", "W/", e1 + ", garbage"):
        st, hd, b2 = jreq("GET", note_url(30), headers={"If-None-Match": inm})
        check(st == 200 and etag_of(hd) == e1 and b2 == b, (inm, st, hd))
    # two If-None-Match lines are one list
    c = http.client.HTTPConnection(HOST, PORT, timeout=10)
    c.putrequest("GET", note_url(30))
    c.putheader("If-None-Match", '"a"')
    c.putheader("If-None-Match", e1)
    c.endheaders()
    r = c.getresponse()
    check(r.status == 304 and r.read() == b"", r.status)
    # keep-alive after a 304: the next request on the connection is fine
    st, hd, b2 = jreq("GET", note_url(30), conn=c)
    check(st == 200 and b2 == b, st)
    c.close()
    # an update through JSON: new data, a new tag, the old tag gets 200
    st, _, _ = jreq("PATCH", note_url(30), {"text": "second"})
    check(st == 200, st)
    st, hd, b3 = jreq("GET", note_url(30), headers={"If-None-Match": e1})
    e2 = etag_of(hd)
    check(st == 200 and b3["text"] == "second" and int(b3["loads"]) == loads + 1 and
          e2 not in (None, e1), (st, hd, b3))
    st, hd, raw = req("GET", note_url(30), headers={"If-None-Match": e2})
    check(st == 304 and raw == b"", st)
    # an update through gRPC (UpdateNote: 1 id, 2 text): the same
    msg = b"\x08" + pb_varint(30) + b"\x12\x05third"
    f = grpc_note(PORT, "UpdateNote", msg)
    check(f.get(2) == "third", f)
    st, hd, b4 = jreq("GET", note_url(30), headers={"If-None-Match": e2})
    e3 = etag_of(hd)
    check(st == 200 and b4["text"] == "third" and e3 not in (None, e1, e2),
          (st, hd, b4))
    # HTTP/2: the same tag, 304 on it
    base = f"http://{HOST}:{PORT}"
    with tempfile.TemporaryDirectory() as td:
        hf = os.path.join(td, "h")
        rc, out, err = curl("--http2-prior-knowledge", "-D", hf, f"{base}{note_url(30)}")
        head = open(hf).read().lower()
        check(rc == 0 and head.startswith("http/2 200") and
              f"etag: {e3.lower()}" in head and json.loads(out) == b4, (head, out))
        rc, out, err = curl("--http2-prior-knowledge", "-D", hf, "-H",
                            f"If-None-Match: {e3}", f"{base}{note_url(30)}")
        head = open(hf).read().lower()
        check(rc == 0 and head.startswith("http/2 304") and out == b"" and
              "cache-control: private, no-cache" in head, (head, out))
    # a gzipped answer's tag is the identity's with -gzip; either revalidates
    jreq("PATCH", note_url(31), {"text": "q" * 2000})
    st, hd, raw = req("GET", note_url(31), headers={"Accept-Encoding": "gzip"})
    eg = etag_of(hd)
    st2, hd2, _ = req("GET", note_url(31))
    ei = etag_of(hd2)
    check(st == 200 and st2 == 200 and hd.get("content-encoding") == "gzip" and
          eg == ei[:-1] + '-gzip"', (eg, ei))
    for ae, inm in (("gzip", eg), ("gzip", ei), ("identity", eg)):
        st, hd, raw = req("GET", note_url(31),
                          headers={"Accept-Encoding": ae, "If-None-Match": inm})
        check(st == 304 and raw == b"" and hd.get("vary") == "accept-encoding" and
              etag_of(hd) == (eg if ae == "gzip" else ei), (ae, inm, st, hd))
    # a cached method's default TTL; a method without (perfc.cache): no
    # validators at all
    st, hd, _ = jreq("GET", note_url(30, ":default"))
    check(st == 200 and hd.get("cache-control") == "private, no-cache" and
          etag_of(hd), hd)
    st, hd, _ = jreq("GET", "/v1/whoami", headers={"If-None-Match": "*"})
    check(st == 200 and "etag" not in hd and "cache-control" not in hd, hd)
    # errors carry no validators
    st, hd, b = jreq("GET", note_url(99), headers={"If-None-Match": "*"})
    check(st == 404 and "etag" not in hd, (st, hd))


def test_cache_modes():
    """--http-cache max_age: max-age from the method's ttl (30 s), the
    cache's default TTL falls back to no-cache; off: no validators."""
    p, _, port = start("--http-cache", "max_age")
    try:
        on(port, "PATCH", note_url(5), {"text": "m"})
        st, hd, _ = on(port, "GET", note_url(5))
        check(st == 200 and hd.get("cache-control") == "private, max-age=30" and
              etag_of(hd), hd)
        st, hd, raw = on(port, "GET", note_url(5), headers={"If-None-Match": etag_of(hd)})
        check(st == 304 and raw == b"" and
              hd.get("cache-control") == "private, max-age=30", hd)
        st, hd, _ = on(port, "GET", note_url(5, ":default"))
        check(st == 200 and hd.get("cache-control") == "private, no-cache", hd)
    finally:
        p.terminate()
        check(p.wait(timeout=60) in (0, -15), "server exit")
    p, _, port = start("--http-cache", "off")
    try:
        on(port, "PATCH", note_url(5), {"text": "m"})
        st, hd, b = on(port, "GET", note_url(5), headers={"If-None-Match": "*"})
        check(st == 200 and "etag" not in hd and "cache-control" not in hd and
              json.loads(b)["text"] == "m", hd)
    finally:
        p.terminate()
        check(p.wait(timeout=60) in (0, -15), "server exit")


def test_head():
    """HEAD on a GET route answers like the GET without its body: the same
    status and headers, Content-Length of the GET's body (gzipped too), the
    GET's ETag and its 304; the connection stays usable (no stray body
    bytes); HEAD where no GET route exists is 404/405; HTTP/2 too."""
    st, _, _ = jreq("POST", "/v1/things", {"id": "57", "name": "head", "size": 4})
    check(st == 200, st)
    c = http.client.HTTPConnection(HOST, PORT, timeout=10)
    try:
        st, ghd, gbody = req("GET", "/v1/things/57", conn=c)
        check(st == 200 and len(gbody) > 0, (st, gbody))
        st, hd, raw = req("HEAD", "/v1/things/57", conn=c)
        check(st == 200 and raw == b"", (st, raw))
        check(hd.get("content-length") == str(len(gbody)), (hd, len(gbody)))
        check(hd.get("content-type") == ghd.get("content-type"), hd)
        # the keep-alive connection is in step: the next answer is the GET's
        st, _, again = req("GET", "/v1/things/57", conn=c)
        check(st == 200 and again == gbody, again)
        # a HEAD of a missing thing: the GET's 404 and its error length
        st, ehd, ebody = req("GET", "/v1/things/58", conn=c)
        st2, hd, raw = req("HEAD", "/v1/things/58", conn=c)
        check(st == st2 == 404 and raw == b"" and
              hd.get("content-length") == str(len(ebody)), (st, st2, hd))
        # no GET route: 404 for an unknown path, 405 where other methods live
        st, hd, raw = req("HEAD", "/v1/nothing/here", conn=c)
        check(st == 404 and raw == b"", (st, hd))
        st, hd, raw = req("HEAD", "/v1/upload", conn=c)
        check(st == 405 and raw == b"", (st, hd))
        # a cached method: the GET's ETag, and If-None-Match gives 304
        st, _, _ = jreq("PATCH", note_url(57), {"text": "h" * 1500}, conn=c)
        check(st == 200, st)
        st, ghd, gbody = req("GET", note_url(57), conn=c,
                             headers={"Accept-Encoding": "identity"})
        st2, hd, raw = req("HEAD", note_url(57), conn=c,
                           headers={"Accept-Encoding": "identity"})
        check(st == st2 == 200 and raw == b"" and etag_of(hd) == etag_of(ghd) and
              etag_of(hd) is not None and
              hd.get("content-length") == str(len(gbody)), (ghd, hd))
        st, hd, raw = req("HEAD", note_url(57), conn=c,
                          headers={"If-None-Match": etag_of(ghd)})
        check(st == 304 and raw == b"" and etag_of(hd) == etag_of(ghd), (st, hd))
        # gzipped: the length of the gzipped GET body, and its tag
        st, ghd, gz = req("GET", note_url(57), conn=c, headers={"Accept-Encoding": "gzip"})
        st2, hd, raw = req("HEAD", note_url(57), conn=c, headers={"Accept-Encoding": "gzip"})
        check(st == st2 == 200 and ghd.get("content-encoding") == "gzip" and
              hd.get("content-encoding") == "gzip" and raw == b"" and
              hd.get("content-length") == str(len(gz)) and
              etag_of(hd) == etag_of(ghd), (ghd, hd, len(gz)))
        st, _, again = req("GET", "/v1/things/57", conn=c)
        check(st == 200 and json.loads(again)["id"] == "57", again)
    finally:
        c.close()
    # HTTP/2: the status and headers, no DATA
    with tempfile.TemporaryDirectory() as td:
        hf = os.path.join(td, "h")
        rc, out, err = curl("--http2-prior-knowledge", "-I", "-D", hf,
                            f"http://{HOST}:{PORT}/v1/things/57")
        head = open(hf).read().lower()
        check(rc == 0 and head.startswith("http/2 200") and out.lower().startswith(b"http/2 200")
              and "content-type: application/json" in head, (rc, head, err))


def test_negotiation_fuzz():
    """Random and malformed Accept-Encoding / If-None-Match values: every
    answer is 200 or 304, a 200's body (decompressed when it says gzip) is
    the note, the server stays up."""
    jreq("PATCH", note_url(40), {"text": "f" * 1200})
    _, hd, ident = req("GET", note_url(40), headers={"Accept-Encoding": "identity"})
    etag = etag_of(hd)
    rnd = random.Random(18)
    alphabet = 'gzip*;q=0.1, W/"\t-x' + etag
    pieces = ["gzip", "x-gzip", "*", "identity", ";q=", "0", "1", ".", "5",
              ",", ";", " ", "\t", "=", "W/", '"', etag, "-gzip", "br"]
    c = http.client.HTTPConnection(HOST, PORT, timeout=10)
    for i in range(300):
        if i % 2:
            v = "".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 12)))
        else:
            v = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 40)))
        v = v.strip()
        h = {"Accept-Encoding": v} if i % 3 else {"If-None-Match": v}
        if i % 5 == 0:
            h = {"Accept-Encoding": v, "If-None-Match": v}
        st, hd, raw = req("GET", note_url(40), headers=h, conn=c)
        check(st in (200, 304), (v, st))
        if st == 200:
            check(ungzip(hd, raw) == ident and etag_of(hd).startswith(etag[:-1]),
                  (v, hd))
        else:
            check(raw == b"" and "If-None-Match" in h, (v, hd))
    c.close()
    # long values up to the header limit: no crash, sane answers
    st, hd, raw = req("GET", note_url(40),
                      headers={"Accept-Encoding": "a," * 1500 + "gzip",
                               "If-None-Match": '"x",' * 700 + etag})
    check(st == 304, st)


def test_cache_redis():
    """Two servers sharing Redis (L2): one's fill answers the other with
    the same bytes and ETag (a 304 on the first one's tag), and an update
    through one is seen by the other's next GET (a new ETag)."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise AssertionError("redis-server is required")
    s0 = socket.socket()
    s0.bind(("127.0.0.1", 0))
    rport = s0.getsockname()[1]
    s0.close()
    rdir = tempfile.mkdtemp(prefix="perfc-http-redis-")
    redis = subprocess.Popen([exe, "--port", str(rport), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", rdir],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = []
    try:
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", rport), 1).close()
                break
            except OSError:
                check(time.time() < deadline, "redis-server did not start")
                time.sleep(0.05)
        a, _, pa = start("--redis-port", str(rport))
        procs.append(a)
        b, _, pb = start("--redis-port", str(rport))
        procs.append(b)
        on(pa, "PATCH", note_url(7), {"text": "from-a"})
        st, hd, raw = on(pa, "GET", note_url(7))
        ea = etag_of(hd)
        check(st == 200 and json.loads(raw) == {"id": "7", "text": "from-a",
                                                "loads": "1"}, raw)
        # B never stored note 7: what it answers came from A's fill in Redis
        st, hd, raw_b = on(pb, "GET", note_url(7))
        check(st == 200 and raw_b == raw and etag_of(hd) == ea, (raw_b, hd))
        st, hd, raw_b = on(pb, "GET", note_url(7), headers={"If-None-Match": ea})
        check(st == 304 and raw_b == b"", st)
        # A's update invalidates Redis and (pub/sub) B's L1: B loads its own
        on(pa, "PATCH", note_url(7), {"text": "changed"})
        deadline = time.time() + 5
        while True:
            st, hd, raw_b = on(pb, "GET", note_url(7), headers={"If-None-Match": ea})
            if st == 200 or time.time() > deadline:
                break
            time.sleep(0.05)
        check(st == 200 and json.loads(raw_b).get("text", "") == "" and
              etag_of(hd) not in (None, ea), (st, raw_b, hd))
        st, hd, raw = on(pa, "GET", note_url(7))
        check(st == 200 and json.loads(raw).get("text", "") in ("changed", ""), raw)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=60)
        redis.kill()
        redis.wait()
        shutil.rmtree(rdir, ignore_errors=True)

def main():
    global HOST, PORT
    p, HOST, PORT = start()
    tests = [test_verbs_and_bindings, test_error_mapping, test_request_errors,
             test_body_limits, test_interceptors_metadata_deadline,
             test_keepalive_pipelining, test_early_answers, test_ndjson_stream,
             test_http2_curl,
             test_grpc_same_port, test_metrics_by_protocol, test_grpc_web,
             test_cors,
             test_tls, test_garbage,
             test_gzip, test_gzip_options, test_http_cache, test_cache_modes,
             test_head,
             test_negotiation_fuzz, test_cache_redis,
             test_idle_and_slow_clients]
    only = os.environ.get("HTTP_TEST_ONLY")
    try:
        for t in tests:
            if only and only not in t.__name__:
                continue
            try:
                t()
                print(f"ok   {t.__name__}")
            except Exception as e:  # noqa: BLE001 - report every failure
                FAILED.append(t.__name__)
                print(f"FAIL {t.__name__}: {type(e).__name__}: {e}")
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
    check_rc = rc in (0, -15)
    if not check_rc:
        FAILED.append(f"server exit {rc}")
    print("FAILED: " + ", ".join(FAILED) if FAILED else "all passed")
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
