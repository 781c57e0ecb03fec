# Private dependencies of runtime modules, included by runtime/CMakeLists.txt.
# Room: runtime build glue. Each block names the module that needs it.

# metrics_http.c: /metrics and /healthz are served by libmicrohttpd (we do
# not hand-write an HTTP server). process_metrics.c uses libm-free /proc
# parsing; metrics.c uses floor/fabs/isnan from libm.
pkg_check_modules(MHD REQUIRED IMPORTED_TARGET libmicrohttpd)
perfc_unit_link(perfc_runtime PRIVATE PkgConfig::MHD m)

# tls.c: PEM files are read and checked with OpenSSL 3 (key matches
# certificate, validity dates, parseable CA bundles) before gRPC sees them.
pkg_check_modules(OPENSSL REQUIRED IMPORTED_TARGET openssl)
perfc_unit_link(perfc_runtime PRIVATE PkgConfig::OPENSSL)
# pg.c: the PostgreSQL pool is built on libpq (pipeline mode needs 14+;
# Debian 12 ships 15). Private: perfc/pg.h does not include libpq-fe.h.
pkg_check_modules(LIBPQ REQUIRED IMPORTED_TARGET libpq)
perfc_unit_link(perfc_data PRIVATE PkgConfig::LIBPQ)
# redis.c (and cache.c through redis_internal.h): the Redis client is
# hiredis (protocol, replies, socket timeouts); perfc adds the pool,
# backoff and the subscriber thread.
pkg_check_modules(HIREDIS REQUIRED IMPORTED_TARGET hiredis)
perfc_unit_link(perfc_data PRIVATE PkgConfig::HIREDIS)

# config.c: the YAML file is loaded with libcyaml against a fixed schema;
# libyaml itself (which libcyaml is built on) is used directly for a second
# pass that maps each key to its line and column for error messages.
pkg_check_modules(CYAML REQUIRED IMPORTED_TARGET libcyaml yaml-0.1)
perfc_unit_link(perfc_config PRIVATE PkgConfig::CYAML)

# zlib: received compressed messages are inflated by perfc itself, bounded
# by the receive limit, on both transports (transport/core/grpc_util.c: the
# core's own decompression inflates a whole message before any size check,
# docs/reliability.md #13 item 1; transport/h2/grpc.c).
pkg_check_modules(ZLIB REQUIRED IMPORTED_TARGET zlib)
perfc_unit_link(perfc_runtime PRIVATE PkgConfig::ZLIB)
# transport/h2: perfc's own server transport. HTTP/2 framing, HPACK and
# flow control are libnghttp2's (Debian 1.52). Private: no public header
# includes it.
pkg_check_modules(NGHTTP2 REQUIRED IMPORTED_TARGET libnghttp2)
perfc_unit_link(perfc_runtime PRIVATE PkgConfig::NGHTTP2)
