/*
 * perfc/http_codec.h — the hook through which a server's listener serves
 * HTTP/JSON (issue #18): the h2 transport parses HTTP (HTTP/1.1 and
 * non-gRPC HTTP/2 requests on the gRPC port) and runs the matched method
 * through the same call layer and interceptors as a gRPC call; a codec
 * registered here turns requests into messages and messages into bodies.
 *
 * Room: runtime public headers; the contract between libperfc (the
 * listener, transport/h2) and libperfc-gateway (perfc_gateway_attach() in
 * perfc/gateway.h registers the JSON codec). libperfc holds no JSON code:
 * a server without a codec links no JSON library and answers non-gRPC
 * requests as a gRPC server does (HTTP 415). See docs/http-json.md.
 */
#ifndef PERFC_HTTP_CODEC_H
#define PERFC_HTTP_CODEC_H

#include "perfc/arena.h"
#include "perfc/common.h"
#include "perfc/server.h"
#include "perfc/service.h"
#include "perfc/status.h"

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Largest HTTP request body the listener buffers; a longer one is
 *  answered 413 without reading more of it. */
#define PERFC_DEFAULT_HTTP_MAX_BODY_BYTES (4u << 20)
/** An HTTP/1.1 keep-alive connection with no request in progress is
 *  closed after this long (h2 connections keep their ping keepalive). */
#define PERFC_DEFAULT_HTTP_IDLE_TIMEOUT_MS 60000
/** CORS defaults: the methods a preflight allows, the response headers a
 *  page may read (gRPC-Web's status), and how long a browser may cache a
 *  preflight's answer. */
#define PERFC_DEFAULT_CORS_METHODS "GET, POST, PUT, PATCH, DELETE, HEAD"
#define PERFC_DEFAULT_CORS_EXPOSE_HEADERS "grpc-status, grpc-message"
#define PERFC_DEFAULT_CORS_MAX_AGE_MS 600000
/** Response compression (HTTP/JSON answers, not gRPC-Web, which has its
 *  own): bodies of at least this many bytes are gzipped for a client whose
 *  Accept-Encoding takes gzip; smaller ones gain little and cost a
 *  deflate. */
#define PERFC_DEFAULT_HTTP_GZIP_MIN_BYTES 1024
/** zlib's level for those bodies (1 fastest .. 9 smallest). */
#define PERFC_DEFAULT_HTTP_GZIP_LEVEL 5
/** gzip_level value that turns response compression off. */
#define PERFC_HTTP_GZIP_OFF (-1)

/** What a GET answer of a `(perfc.cache)` method says to HTTP caches
 *  (docs/http-json.md, "HTTP cache"). Every mode but OFF sends a strong
 *  ETag (a hash of the body) and answers a matching If-None-Match 304. */
typedef enum perfc_http_cache_mode {
  /** `Cache-Control: private, no-cache`: a client may keep the answer but
   *  asks again every time (If-None-Match, 304 when unchanged), so an
   *  update is seen at once, as the server's own cache sees it. */
  PERFC_HTTP_CACHE_REVALIDATE = 0,
  /** `Cache-Control: private, max-age=<the method's ttl in s>`: a client
   *  reuses the answer without asking for up to the TTL (an update may be
   *  unseen that long); a method whose ttl is the cache's default gets
   *  REVALIDATE's header. */
  PERFC_HTTP_CACHE_MAX_AGE = 1,
  /** No ETag, no Cache-Control, no 304. */
  PERFC_HTTP_CACHE_OFF = 2
} perfc_http_cache_mode;

/** A codec: every function runs on the call's thread (a transport loop or
 *  a worker), must not block, and allocates only from `arena` (the
 *  call's). A failure leaves its message in perfc_last_error(). */
typedef struct perfc_http_codec {
  /** Matches an HTTP method ("GET") and request target ("/v1/x/7?a=1",
   *  `target_len` bytes). Returns 0 with `*method` (a method of a service
   *  added to the server; the listener finds it by its gRPC path) and
   *  `*match` (the codec's state, in the arena, handed to the functions
   *  below); or the HTTP status of the refusal: 404 (no route), 405 (the
   *  path has routes for other methods), 400 (a malformed target). */
  int (*match)(void *user_data, const char *http_method, const char *target,
               size_t target_len, perfc_arena *arena,
               const perfc_method_desc **method, void **match);
  /** The method's request message from the match and the body (`len`
   *  bytes, maybe 0). Returns 0 with `*req` in the arena, or a negative
   *  PERFC_E* (answered 400 with the message, which names the field). */
  int (*decode)(void *user_data, void *match, const char *body, size_t len,
                perfc_arena *arena, ProtobufCMessage **req);
  /** A response message as the body: `*out` (`*len` bytes) in the arena.
   *  Returns 0 or a negative PERFC_E* (answered 500). */
  int (*encode)(void *user_data, void *match, const ProtobufCMessage *resp,
                perfc_arena *arena, char **out, size_t *len);
  /** An error answer: returns the HTTP status for `code` and writes the
   *  body (`*out`, `*len` bytes, in the arena); a negative PERFC_E* when
   *  out of memory. */
  int (*error)(void *user_data, perfc_status_code code, const char *message,
               perfc_arena *arena, char **out, size_t *len);
  /** The body's media type ("application/json"); server streams are sent
   *  as newline-delimited bodies under `stream_content_type`
   *  ("application/x-ndjson"). */
  const char *content_type;
  const char *stream_content_type;
  /** 0 = PERFC_DEFAULT_HTTP_MAX_BODY_BYTES. */
  size_t max_body_bytes;
  /** 0 = PERFC_DEFAULT_HTTP_IDLE_TIMEOUT_MS. */
  int64_t idle_timeout_ms;
  /** CORS (HTTP/JSON and gRPC-Web): the origins browsers may call from
   *  ("https://app.example"; "*" for any), cors_origin_count of them;
   *  none: CORS is off. Borrowed like user_data. The other fields as
   *  perfc_gateway_opts documents them (NULL/0: its defaults). */
  const char *const *cors_origins;
  size_t cors_origin_count;
  const char *cors_methods;
  const char *cors_headers;
  const char *cors_expose_headers;
  int64_t cors_max_age_ms;
  bool cors_allow_credentials;
  /** Compression of unary answers (perfc_gateway_opts documents them):
   *  0 = PERFC_DEFAULT_HTTP_GZIP_MIN_BYTES / _LEVEL; gzip_level
   *  PERFC_HTTP_GZIP_OFF: none. */
  size_t gzip_min_bytes;
  int gzip_level;
  /** ETag / Cache-Control of GET answers of cached methods. */
  perfc_http_cache_mode http_cache;
  /** Optional: the body of a response the handler gave as its encoded
   *  bytes (a cache hit: perfc_ctx_set_raw_response), `n` bytes of a
   *  `desc` message; the same body `encode` makes of the unpacked message,
   *  same rules. Lets a codec skip the unpack and remember answers (the
   *  gateway keeps the JSON of recent bytes per thread). NULL, or a
   *  failure: the listener unpacks the bytes and calls `encode`. */
  int (*encode_bytes)(void *user_data, void *match,
                      const ProtobufCMessageDescriptor *desc,
                      const uint8_t *bytes, size_t n, perfc_arena *arena,
                      char **out, size_t *len);
} perfc_http_codec;

/** Lets the server's listener serve HTTP through `codec` (copied;
 *  `user_data` is borrowed and must outlive the server). Before
 *  perfc_server_start() only, once. Returns 0; PERFC_EINVAL (a function
 *  or content type missing, or the server's transport is the gRPC C core,
 *  server.transport: core, which cannot carry HTTP/JSON: the message in
 *  perfc_last_error() says which); PERFC_ESTATE (started, or a codec is
 *  set already). */
PERFC_API int perfc_server_set_http_codec(perfc_server *srv,
                                          const perfc_http_codec *codec,
                                          void *user_data);

#ifdef __cplusplus
}
#endif
#endif /* PERFC_HTTP_CODEC_H */
