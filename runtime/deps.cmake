# Private dependencies of runtime modules, included by runtime/CMakeLists.txt.
# Room: runtime build glue. Each block names the module that needs it.

# metrics_http.c: /metrics and /healthz are served by libmicrohttpd (we do
# not hand-write an HTTP server). process_metrics.c uses libm-free /proc
# parsing; metrics.c uses floor/fabs/isnan from libm.
pkg_check_modules(MHD REQUIRED IMPORTED_TARGET libmicrohttpd)
target_link_libraries(perfc_runtime PRIVATE PkgConfig::MHD m)

# redis.c (and cache.c through redis_internal.h): the Redis client is
# hiredis (protocol, replies, socket timeouts); perfc adds the pool,
# backoff and the subscriber thread.
pkg_check_modules(HIREDIS REQUIRED IMPORTED_TARGET hiredis)
target_link_libraries(perfc_runtime PRIVATE PkgConfig::HIREDIS)
