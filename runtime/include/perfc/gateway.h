/*
 * perfc/gateway.h — HTTP/JSON transcoding: the proto3 JSON mapping for
 * protobuf-c messages, the route matcher over the generated route tables
 * (perfc/http_route.h), binding a matched request (path variables, query
 * parameters, body) into the method's request message, and gRPC status to
 * HTTP status with a google.rpc.Status body. See docs/http-json.md.
 *
 * Room: runtime/src/gateway, link unit libperfc-gateway (perfc::gateway,
 * pkg-config perfc-gateway), which adds yajl; a gRPC-only service links
 * neither. perfc_gateway_attach() serves the routes on a server's port:
 * the h2 transport's listener parses HTTP/1.1 and HTTP/2 and calls this
 * unit through perfc/http_codec.h.
 *
 * Memory: everything a function returns (messages, strings, match results)
 * lives in the arena it was given (perfc/arena.h), normally the call's
 * (perfc_ctx_arena()); nothing is malloc'd per call, nothing needs freeing
 * but the arena. Failures return PERFC_E* and leave a message naming the
 * field path or the path segment in perfc_last_error().
 */
#ifndef PERFC_GATEWAY_H
#define PERFC_GATEWAY_H

#include "perfc/arena.h"
#include "perfc/common.h"
#include "perfc/http_codec.h"
#include "perfc/http_route.h"
#include "perfc/server.h"
#include "perfc/service.h"
#include "perfc/status.h"

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the proto3 JSON mapping ------------------------------------------ */

/** Deepest nesting of JSON objects and arrays the decoder accepts (the
 *  same bound as the binary decoder's 100 messages, core/pb_wire.c). */
#define PERFC_DEFAULT_JSON_MAX_DEPTH 100
/** Hard ceiling for perfc_json_opts.max_depth. */
#define PERFC_JSON_MAX_DEPTH_LIMIT 1000

/** Finds a message type by full name ("pkg.Msg", no leading dot) for
 *  google.protobuf.Any; NULL when unknown. */
typedef const ProtobufCMessageDescriptor *(*perfc_json_type_resolver)(
    const char *full_name, void *user_data);

typedef struct perfc_json_opts {
  /** Refuse a JSON member that names no field (by JSON or proto name)
   *  with PERFC_EPARSE; by default it is skipped, as grpc-gateway does. */
  bool reject_unknown_fields;
  /** Emit fields under their proto names ("user_id") instead of
   *  lowerCamelCase ("userId"). Both are always accepted on input. */
  bool use_proto_names;
  /** Emit fields that hold their default value (0, "", false, empty
   *  repeated and maps, the first enum value); set messages are always
   *  emitted, unset ones never. */
  bool emit_unpopulated;
  /** Emit enums as numbers instead of names. */
  bool enums_as_ints;
  /** Deepest nesting accepted (0 = PERFC_DEFAULT_JSON_MAX_DEPTH; at most
   *  PERFC_JSON_MAX_DEPTH_LIMIT). */
  size_t max_depth;
  /** Resolves google.protobuf.Any's "@type"; NULL knows only the
   *  well-known types. perfc_gateway_router_resolve() knows every message
   *  reachable from the router's services. */
  perfc_json_type_resolver resolve_type;
  void *resolve_user_data;
} perfc_json_opts;

/** Fills `opts` with the defaults (all false, PERFC_DEFAULT_JSON_MAX_DEPTH,
 *  no resolver). Zero-initialised options mean the same. */
PERFC_API void perfc_json_opts_init(perfc_json_opts *opts);

/** Decodes `json` (`len` bytes, UTF-8, need not be NUL-terminated) as a
 *  message of type `desc`, into the arena. `*out` belongs to the arena.
 *  Returns 0, PERFC_EPARSE (malformed JSON, a wrong type or value: the
 *  message names the field path, e.g. "user.profile.age: ..."),
 *  PERFC_ETOOBIG (nested deeper than max_depth), PERFC_EINVAL (NULL
 *  arguments) or PERFC_ENOMEM. `opts` may be NULL. */
PERFC_API int perfc_json_decode(const ProtobufCMessageDescriptor *desc,
                                const char *json, size_t len,
                                const perfc_json_opts *opts, perfc_arena *arena,
                                ProtobufCMessage **out);

/** Decodes `json` into the existing message `msg` (initialised, fields
 *  from the arena or static), merging: members present in the JSON replace
 *  the message's fields, repeated ones included. Same returns as
 *  perfc_json_decode(). */
PERFC_API int perfc_json_decode_into(ProtobufCMessage *msg, const char *json,
                                     size_t len, const perfc_json_opts *opts,
                                     perfc_arena *arena);

/** Encodes `msg` as JSON into the arena: `*out` is NUL-terminated, `*len`
 *  bytes without the NUL. Returns 0, PERFC_EINVAL (NULL arguments, or a
 *  value the mapping cannot express: a Timestamp or Duration out of range,
 *  an Any whose type cannot be resolved; the message names the field) or
 *  PERFC_ENOMEM. `opts` may be NULL. */
PERFC_API int perfc_json_encode(const ProtobufCMessage *msg,
                                const perfc_json_opts *opts, perfc_arena *arena,
                                char **out, size_t *len);

/* ---- routes ------------------------------------------------------------ */

typedef struct perfc_gateway_router perfc_gateway_router;

/** Creates an empty router. The caller frees it with
 *  perfc_gateway_router_free(). Returns 0, PERFC_EINVAL or PERFC_ENOMEM. */
PERFC_API int perfc_gateway_router_new(perfc_gateway_router **out);

/** Adds a service's generated routes (svc->http_routes). `svc` is
 *  borrowed and must outlive the router (generated descriptions are
 *  static). Returns 0; PERFC_EEXIST when one of them matches exactly the
 *  requests a route already added matches (same method, segments and
 *  verb; the message names both); PERFC_EINVAL, PERFC_ENOMEM. A service
 *  without routes adds nothing and returns 0. */
PERFC_API int perfc_gateway_router_add(perfc_gateway_router *r,
                                       const perfc_service_desc *svc);

/** Frees the router; NULL is a no-op. */
PERFC_API void perfc_gateway_router_free(perfc_gateway_router *r);

/** A perfc_json_type_resolver over every message type reachable from the
 *  router's services' requests and responses, plus the well-known types
 *  those reach; pass the router as user_data. */
PERFC_API const ProtobufCMessageDescriptor *
perfc_gateway_router_resolve(const char *full_name, void *router);

/** The result of a match; all pointers borrowed from the router or the
 *  arena. */
typedef struct perfc_gateway_match {
  const perfc_service_desc *service;
  const perfc_method_desc *method;
  const perfc_http_route *route;
  /** One value per route->vars[i], percent-decoded (a multi-segment
   *  variable keeps %2F), NUL-terminated, in the arena. */
  const char **var_values;
  size_t *var_lens;
  /** The raw query string after '?', not decoded (NULL when none). */
  const char *query;
  size_t query_len;
} perfc_gateway_match;

/** Matches an HTTP method and request target ("/v1/users/7?view=full")
 *  against the router's routes. Precedence (google.api.http gives none; this
 *  is grpc-gateway's and Envoy's order): a route with a :verb the path ends
 *  with beats one without; then segment by segment from the left a literal
 *  beats `*`, which beats `**`; then the route added first.
 *  Returns 0 and fills `out`; PERFC_ENOENT when no route matches (the
 *  answer is 404, or 405 when `*method_allowed_elsewhere` is set: a route
 *  matches the path with another HTTP method); PERFC_EPARSE for a malformed
 *  %-escape or a decoded NUL (answer 400). `method_allowed_elsewhere` may
 *  be NULL. */
PERFC_API int perfc_gateway_match_route(const perfc_gateway_router *r,
                                        const char *http_method,
                                        const char *target, size_t target_len,
                                        perfc_arena *arena,
                                        perfc_gateway_match *out,
                                        bool *method_allowed_elsewhere);

/** Builds the matched method's request message: the body (`body`,
 *  `body_len` bytes of JSON, none when body_len is 0) per the route's
 *  body mapping, then the path variables, then the query parameters on the
 *  fields neither binds (`a=1&a=2` for repeated fields, `sub.field=x`
 *  through singular messages, proto or JSON names, `+` and %-escapes
 *  decoded; a parameter naming no field is skipped unless
 *  opts->reject_unknown_fields). Path variables win over the body. Returns
 *  0 with `*out` in the arena, or PERFC_EPARSE / PERFC_ETOOBIG with a
 *  message naming the field, variable or parameter (answer 400). */
PERFC_API int perfc_gateway_build_request(const perfc_gateway_match *m,
                                          const char *body, size_t body_len,
                                          const perfc_json_opts *opts,
                                          perfc_arena *arena,
                                          ProtobufCMessage **out);

/** Encodes the response as the route says: the whole message, or its
 *  response_body field (a repeated or map field as a JSON array or
 *  object; an unset message field as `null`). Returns as
 *  perfc_json_encode(). */
PERFC_API int perfc_gateway_encode_response(const perfc_gateway_match *m,
                                            const ProtobufCMessage *resp,
                                            const perfc_json_opts *opts,
                                            perfc_arena *arena, char **out,
                                            size_t *len);

/* ---- errors ------------------------------------------------------------ */

/** The HTTP status for a gRPC status code, as google.rpc.Code documents it
 *  (and grpc-gateway answers): OK 200, CANCELLED 499, UNKNOWN 500,
 *  INVALID_ARGUMENT 400, DEADLINE_EXCEEDED 504, NOT_FOUND 404,
 *  ALREADY_EXISTS 409, PERMISSION_DENIED 403, RESOURCE_EXHAUSTED 429,
 *  FAILED_PRECONDITION 400, ABORTED 409, OUT_OF_RANGE 400,
 *  UNIMPLEMENTED 501, INTERNAL 500, UNAVAILABLE 503, DATA_LOSS 500,
 *  UNAUTHENTICATED 401; any other value 500. */
PERFC_API int perfc_http_status_from_grpc(perfc_status_code code);

/** The body of an error answer: google.rpc.Status as JSON,
 *  `{"code":5,"message":"...","details":[]}`, NUL-terminated in the arena
 *  (`*len` without the NUL). `message` may be NULL (""). Returns 0,
 *  PERFC_EINVAL or PERFC_ENOMEM. */
PERFC_API int perfc_gateway_status_json(perfc_status_code code,
                                        const char *message,
                                        perfc_arena *arena, char **out,
                                        size_t *len);

/* ---- serving: the gateway on a server's port -------------------------- */

typedef struct perfc_gateway_opts {
  /** How bodies are read and written (lowerCamelCase out by default;
   *  resolve_type NULL: every message of the server's services). */
  perfc_json_opts json;
  /** Largest request body (0 = PERFC_DEFAULT_HTTP_MAX_BODY_BYTES, 4 MiB);
   *  a larger one is answered 413. */
  size_t max_body_bytes;
  /** An idle HTTP/1.1 keep-alive connection closes after this long
   *  (0 = PERFC_DEFAULT_HTTP_IDLE_TIMEOUT_MS, 60 s). */
  int64_t idle_timeout_ms;
  /** CORS for HTTP/JSON and gRPC-Web: the origins a browser page may call
   *  from, exactly as the browser sends them ("https://app.example"), or
   *  "*" for any; `cors_origin_count` of them (copied). None: CORS off (no
   *  CORS headers; an OPTIONS request is routed like any other). An
   *  allowed origin's answers carry Access-Control-Allow-Origin (the
   *  origin, or "*"), Vary: Origin and Access-Control-Expose-Headers; its
   *  preflights (OPTIONS with Access-Control-Request-Method) are answered
   *  204 by the listener without reaching a route or an interceptor;
   *  another origin's preflight gets 403. */
  const char *const *cors_origins;
  size_t cors_origin_count;
  /** Access-Control-Allow-Methods of a preflight; NULL =
   *  PERFC_DEFAULT_CORS_METHODS. Copied. */
  const char *cors_methods;
  /** Access-Control-Allow-Headers of a preflight; NULL = the headers the
   *  preflight asks for (Access-Control-Request-Headers). Copied. */
  const char *cors_headers;
  /** Access-Control-Expose-Headers; NULL = PERFC_DEFAULT_CORS_EXPOSE_HEADERS
   *  (grpc-status, grpc-message). Copied. */
  const char *cors_expose_headers;
  /** Access-Control-Max-Age (sent in whole seconds); 0 =
   *  PERFC_DEFAULT_CORS_MAX_AGE_MS (10 minutes). */
  int64_t cors_max_age_ms;
  /** Access-Control-Allow-Credentials: true (then "*" answers name the
   *  origin, as the Fetch standard requires). */
  bool cors_allow_credentials;
  /** Response compression: a unary answer whose body is at least
   *  `gzip_min_bytes` (0 = PERFC_DEFAULT_HTTP_GZIP_MIN_BYTES, 1 KiB) and
   *  whose content type compresses (JSON) is sent `Content-Encoding: gzip`
   *  when the request's Accept-Encoding takes gzip (q-values honoured:
   *  `gzip;q=0`, or `*;q=0` without gzip named, refuses it), with `Vary:
   *  Accept-Encoding`. NDJSON streams are never compressed. `gzip_level`
   *  1..9 (0 = PERFC_DEFAULT_HTTP_GZIP_LEVEL; PERFC_HTTP_GZIP_OFF: never
   *  compress). */
  size_t gzip_min_bytes;
  int gzip_level;
  /** HTTP caching of GET answers of methods with a `(perfc.cache)`
   *  option: ETag, If-None-Match -> 304, Cache-Control
   *  (perfc_http_cache_mode; default PERFC_HTTP_CACHE_REVALIDATE). */
  perfc_http_cache_mode http_cache;
} perfc_gateway_opts;

/** Fills `o` with the defaults above. */
PERFC_API void perfc_gateway_opts_init(perfc_gateway_opts *o);

/** Serves the server's google.api.http routes as HTTP/JSON on its own
 *  listening ports, beside gRPC: HTTP/1.1 (keep-alive, pipelining) and
 *  HTTP/2 requests whose content-type is not application/grpc*. The
 *  routes of every service added before perfc_server_start() are served;
 *  each request runs the method's handler through the server's
 *  interceptors like a gRPC call. `opts` is copied (NULL: defaults). The
 *  server owns what this allocates. Before perfc_server_start(), once.
 *  Returns 0, PERFC_EINVAL (NULL server, or a server on the C core
 *  transport: HTTP/JSON needs server.transport h2), PERFC_ESTATE
 *  (started, or attached already) or PERFC_ENOMEM; the router's own
 *  errors (two services with the same route: PERFC_EEXIST) come from
 *  perfc_server_start(). See docs/http-json.md. */
PERFC_API int perfc_gateway_attach(const perfc_gateway_opts *opts,
                                   perfc_server *srv);

#ifdef __cplusplus
}
#endif
#endif /* PERFC_GATEWAY_H */
