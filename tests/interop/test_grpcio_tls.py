#!/usr/bin/python3
"""python3-grpcio against perfc's server over TLS and mutual TLS, and with
gzip/deflate compression both ways.

Run by CTest as: /usr/bin/python3 test_grpcio_tls.py BUILD_BIN_DIR MAKE_CERTS_SH
Certificates are made into a temporary directory by tests/tls/make-certs.sh.
Compression is proved on the wire: the client talks through a byte-counting
TCP proxy, and a compressible 1 MiB message must cross in far fewer bytes;
for responses nghttp (an independent HTTP/2 client) also shows the
`grpc-encoding` header perfc's server sent.
"""
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import unittest

import grpc

import test_grpcio
from test_grpcio import Server, decode, echo_request

CERTS = None
MAKE_CERTS = None
SVC = "/perfc.test.v1.TestService/"
MSG_BYTES = 1 << 20
SMALL_BYTES = 128 * 1024


def pattern(n):
    return bytes((i * 7) & 0xFF for i in range(n))


def read(name):
    with open(os.path.join(CERTS, name), "rb") as f:
        return f.read()


def cert(name):
    return os.path.join(CERTS, name)


class Proxy:
    """Forwards 127.0.0.1:port to `target`, counting bytes each way."""

    def __init__(self, target):
        host, port = target.rsplit(":", 1)
        self.dest = (host, int(port))
        self.up = self.down = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.target = "127.0.0.1:%d" % self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            s = socket.create_connection(self.dest)
            threading.Thread(target=self._pump, args=(c, s, "up"), daemon=True).start()
            threading.Thread(target=self._pump, args=(s, c, "down"), daemon=True).start()

    def _pump(self, src, dst, way):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self.lock:
                    setattr(self, way, getattr(self, way) + len(data))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def counts(self):
        with self.lock:
            return self.up, self.down

    def close(self):
        self.sock.close()


class TlsTests(unittest.TestCase):
    def start(self, *args):
        srv = Server("perfc-test-server", "--tls-cert", cert("server.crt"),
                     "--tls-key", cert("server.key"), *args)
        srv.channel.close()
        self.addCleanup(srv.stop)
        return srv

    def secure(self, srv, client_cert=False):
        creds = grpc.ssl_channel_credentials(
            root_certificates=read("ca.crt"),
            private_key=read("client.key") if client_cert else None,
            certificate_chain=read("client.crt") if client_cert else None)
        ch = grpc.secure_channel(srv.target, creds)
        self.addCleanup(ch.close)
        return ch

    def echo(self, ch, payload=b"secret"):
        fn = ch.unary_unary(SVC + "Echo")
        return decode(fn(echo_request(payload), timeout=10)).get(1, b"")

    def test_tls_call(self):
        srv = self.start()
        ch = self.secure(srv)
        self.assertEqual(self.echo(ch), b"secret")
        # By host name too: the certificate carries DNS:localhost.
        port = srv.target.rsplit(":", 1)[1]
        creds = grpc.ssl_channel_credentials(root_certificates=read("ca.crt"))
        with grpc.secure_channel("localhost:" + port, creds) as ch2:
            self.assertEqual(self.echo(ch2), b"secret")

    def test_plaintext_client_refused(self):
        srv = self.start()
        with grpc.insecure_channel(srv.target) as ch:
            with self.assertRaises(grpc.RpcError) as ctx:
                self.echo(ch)
            self.assertEqual(ctx.exception.code(), grpc.StatusCode.UNAVAILABLE)

    def test_mtls_require(self):
        srv = self.start("--tls-client-ca", cert("ca.crt"), "--tls-client-auth", "require")
        self.assertEqual(self.echo(self.secure(srv, client_cert=True)), b"secret")
        with self.assertRaises(grpc.RpcError) as ctx:
            self.echo(self.secure(srv, client_cert=False))
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(self.echo(self.secure(srv, client_cert=True)), b"secret")

    def test_mtls_request(self):
        srv = self.start("--tls-client-ca", cert("ca.crt"), "--tls-client-auth", "request")
        self.assertEqual(self.echo(self.secure(srv, client_cert=True)), b"secret")
        self.assertEqual(self.echo(self.secure(srv, client_cert=False)), b"secret")

    def test_bad_key_refused_at_startup(self):
        proc = subprocess.run(
            [os.path.join(test_grpcio.BIN, "perfc-test-server"), "--listen", "127.0.0.1:0",
             "--tls-cert", cert("server.crt"), "--tls-key", cert("other.key")],
            capture_output=True, text=True, timeout=20)
        self.assertEqual(proc.returncode, 1)
        self.assertIn("%s: private key does not match certificate %s"
                      % (cert("other.key"), cert("server.crt")), proc.stderr)


class CompressionTests(unittest.TestCase):
    def start(self, *args):
        srv = Server("perfc-test-server", *args)
        self.addCleanup(srv.stop)
        proxy = Proxy(srv.target)
        self.addCleanup(proxy.close)
        return srv, proxy

    def measure(self, proxy, fn):
        up0, down0 = proxy.counts()
        fn()
        up, down = proxy.counts()
        return up - up0, down - down0

    def test_compressed_requests_arrive_intact(self):
        srv, proxy = self.start()
        payload = pattern(MSG_BYTES)
        for comp in (grpc.Compression.Gzip, grpc.Compression.Deflate):
            with grpc.insecure_channel(proxy.target, compression=comp) as ch:
                fn = ch.unary_unary(SVC + "Echo")

                def call():
                    resp = decode(fn(echo_request(payload), timeout=20))
                    self.assertEqual(resp[1], payload)
                up, down = self.measure(proxy, call)
                self.assertLess(up, SMALL_BYTES, "%s request: %d bytes" % (comp, up))
                self.assertGreater(down, MSG_BYTES, "server default is no compression")
        # Per call, and the plain control.
        with grpc.insecure_channel(proxy.target) as ch:
            fn = ch.unary_unary(SVC + "Echo")
            up, _ = self.measure(proxy, lambda: fn(echo_request(payload), timeout=20,
                                                   compression=grpc.Compression.Gzip))
            self.assertLess(up, SMALL_BYTES)
            up, _ = self.measure(proxy, lambda: fn(echo_request(payload), timeout=20))
            self.assertGreater(up, MSG_BYTES)

    def test_decompressed_size_is_limited(self):
        """A 1 MB request that gzips to 1 KB is still over a 64 KiB limit."""
        srv, proxy = self.start("--max-recv-bytes", "65536")
        with grpc.insecure_channel(proxy.target, compression=grpc.Compression.Gzip) as ch:
            fn = ch.unary_unary(SVC + "Echo")
            with self.assertRaises(grpc.RpcError) as ctx:
                fn(echo_request(b"\0" * 1000000), timeout=10)
            self.assertEqual(ctx.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
            self.assertEqual(decode(fn(echo_request(b"ok"), timeout=10))[1], b"ok")

    def test_server_default_gzip_responses(self):
        srv, proxy = self.start("--compression", "gzip")
        with grpc.insecure_channel(proxy.target) as ch:
            fn = ch.unary_unary(SVC + "Big")

            def call():
                resp = decode(fn(echo_request(response_bytes=MSG_BYTES), timeout=20))
                self.assertEqual(resp[1], pattern(MSG_BYTES))
            _, down = self.measure(proxy, call)
            self.assertLess(down, SMALL_BYTES, "gzip response: %d bytes" % down)

    def test_server_sends_grpc_encoding_header(self):
        """nghttp, a client outside gRPC, sees the header and the status."""
        nghttp = shutil.which("nghttp")
        if nghttp is None:
            self.skipTest("nghttp (nghttp2-client) not installed")
        for alg in ("gzip", "deflate"):
            srv, _ = self.start("--compression", alg)
            msg = echo_request(response_bytes=4096)
            with tempfile.NamedTemporaryFile(suffix=".bin") as body:
                body.write(b"\x00" + struct.pack(">I", len(msg)) + msg)
                body.flush()
                out = subprocess.run(
                    [nghttp, "-v", "-n", "-H", "content-type: application/grpc",
                     "-H", "te: trailers", "-H", "grpc-accept-encoding: gzip, deflate",
                     "-d", body.name, "http://%s%sBig" % (srv.target, SVC)],
                    capture_output=True, text=True, errors="replace", timeout=20).stdout
            self.assertIn("grpc-encoding: %s" % alg, out)
            self.assertIn("grpc-status: 0", out)


if __name__ == "__main__":
    test_grpcio.BIN = sys.argv.pop(1)
    MAKE_CERTS = sys.argv.pop(1)
    CERTS = tempfile.mkdtemp(prefix="perfc-tls-py-")
    try:
        subprocess.run(["sh", MAKE_CERTS, CERTS], check=True, stdout=subprocess.DEVNULL)
        unittest.main(verbosity=2)
    finally:
        shutil.rmtree(CERTS, ignore_errors=True)
