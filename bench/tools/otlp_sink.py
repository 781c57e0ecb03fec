#!/usr/bin/python3
"""otlp_sink.py PORTFILE — the smallest OTLP/HTTP receiver, for benchmarks:
answers every POST /v1/traces with 200 and an empty
ExportTraceServiceResponse, and counts requests and body bytes. Binds
127.0.0.1:0 and writes the port to PORTFILE; on SIGTERM prints
"otlp_sink requests=N bytes=B" and exits. It decodes nothing: the exporter's
bytes are checked by tests/unit/test_tracing.c, and here only the sender's
cost matters."""
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

stats = {"requests": 0, "bytes": 0}
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(n)
        with lock:
            stats["requests"] += 1
            stats["bytes"] += n
        self.send_response(200 if self.path == "/v1/traces" else 404)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(sys.argv[1], "w") as f:
        f.write(str(srv.server_address[1]))

    def stop(*_):
        print("otlp_sink requests=%d bytes=%d" % (stats["requests"], stats["bytes"]), flush=True)
        threading.Thread(target=srv.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    srv.serve_forever()


if __name__ == "__main__":
    main()
