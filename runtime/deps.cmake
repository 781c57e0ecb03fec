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
# tracing.c / tracing_export.c: spans go out as OTLP/HTTP. libcurl does
# HTTP (keep-alive, TLS, timeouts), zlib gzips the bodies, and the OTLP
# messages are protobuf-c code generated here from the .proto files in
# proto/opentelemetry/ (opentelemetry-proto's field numbers, Apache-2.0).
# The generated code stays private to libperfc (hidden symbols).
pkg_check_modules(LIBCURL REQUIRED IMPORTED_TARGET libcurl)
perfc_unit_link(perfc_runtime PRIVATE PkgConfig::LIBCURL)
find_program(PERFC_PROTOC protoc REQUIRED)
find_program(PERFC_PROTOC_GEN_C protoc-gen-c REQUIRED)
set(_otlp_dir ${PROJECT_SOURCE_DIR}/proto)
set(_otlp_gen ${CMAKE_CURRENT_BINARY_DIR}/otlp_gen)
set(_otlp_protos opentelemetry/proto/common/v1/common.proto
                 opentelemetry/proto/resource/v1/resource.proto
                 opentelemetry/proto/trace/v1/trace.proto
                 opentelemetry/proto/collector/trace/v1/trace_service.proto)
set(_otlp_srcs "")
set(_otlp_deps "")
foreach(p ${_otlp_protos})
  string(REPLACE ".proto" "" _stem ${p})
  list(APPEND _otlp_srcs ${_otlp_gen}/${_stem}.pb-c.c ${_otlp_gen}/${_stem}.pb-c.h)
  list(APPEND _otlp_deps ${_otlp_dir}/${p})
endforeach()
add_custom_command(
  OUTPUT ${_otlp_srcs}
  COMMAND ${CMAKE_COMMAND} -E make_directory ${_otlp_gen}
  COMMAND ${PERFC_PROTOC} --plugin=protoc-gen-c=${PERFC_PROTOC_GEN_C}
          --c_out=${_otlp_gen} -I${_otlp_dir} ${_otlp_protos}
  DEPENDS ${_otlp_deps}
  COMMENT "protoc-c: OTLP trace messages"
  VERBATIM)
target_sources(perfc_runtime_objs PRIVATE ${_otlp_srcs})
target_include_directories(perfc_runtime_objs PRIVATE ${_otlp_gen})
# gateway/json_parse.c: request bodies are parsed with yajl's event parser,
# which takes an allocator per parser, so every byte lands in the call's
# arena (docs/http-json.md, "Parsing: why yajl"). Private: no public header
# includes it.
pkg_check_modules(YAJL REQUIRED IMPORTED_TARGET yajl)
perfc_unit_link(perfc_gateway PRIVATE PkgConfig::YAJL m)
# transport/h2/http1.c: HTTP/1.1 on the gRPC port (issue #18) is parsed by
# http-parser (libhttp-parser-dev 2.9; llhttp is not in Debian 12). It
# ships no pkg-config file. Private: no public header includes it.
find_path(PERFC_HTTP_PARSER_INCLUDE_DIR http_parser.h REQUIRED)
find_library(PERFC_HTTP_PARSER_LIBRARY http_parser REQUIRED)
target_include_directories(perfc_runtime_objs PRIVATE ${PERFC_HTTP_PARSER_INCLUDE_DIR})
perfc_unit_link(perfc_runtime PRIVATE ${PERFC_HTTP_PARSER_LIBRARY})
