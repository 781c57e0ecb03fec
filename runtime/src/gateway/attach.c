/*
 * gateway/attach.c — perfc_gateway_attach(): the gateway as a server's
 * HTTP/JSON codec (perfc/http_codec.h). The server's listener (the h2
 * transport) parses HTTP and runs the calls; this file matches routes,
 * binds requests and writes responses and errors with the rest of the
 * room, through libperfc's public API only.
 *
 * Room: runtime/src/gateway (libperfc-gateway). The router is built at the
 * server's start from every service added by then (a start hook), so
 * attaching before or after perfc_server_add_service() is the same; the
 * server owns the gateway's state and frees it with itself.
 */
#include "gateway/json_internal.h" /* perfc__gateway_encode_bytes */
#include "perfc/gateway.h"
#include "perfc/http_codec.h"

#include <stdlib.h>
#include <string.h>

typedef struct gw {
  perfc_gateway_opts o;
  perfc_json_opts json; /* o.json with the router's resolver */
  perfc_gateway_router *router;
  uint64_t memo_gen; /* this gateway's entries in the JSON memo */
  /* The CORS strings, copied (o's pointers point here). */
  char **origins;
  char *methods, *headers, *expose;
} gw;

void perfc_gateway_opts_init(perfc_gateway_opts *o) {
  if (o == NULL)
    return;
  memset(o, 0, sizeof *o);
  perfc_json_opts_init(&o->json);
  o->max_body_bytes = PERFC_DEFAULT_HTTP_MAX_BODY_BYTES;
  o->idle_timeout_ms = PERFC_DEFAULT_HTTP_IDLE_TIMEOUT_MS;
  o->gzip_min_bytes = PERFC_DEFAULT_HTTP_GZIP_MIN_BYTES;
  o->gzip_level = PERFC_DEFAULT_HTTP_GZIP_LEVEL;
  o->http_cache = PERFC_HTTP_CACHE_REVALIDATE;
}

static int gw_match(void *ud, const char *http_method, const char *target,
                    size_t target_len, perfc_arena *arena,
                    const perfc_method_desc **method, void **match) {
  gw *g = ud;
  if (g->router == NULL) {
    perfc_error_set(PERFC_ENOENT, NULL, -1, "gateway: the server has not started");
    return 404;
  }
  perfc_gateway_match *m = perfc_arena_alloc(arena, sizeof *m);
  if (m == NULL) {
    perfc_error_set(PERFC_ENOMEM, NULL, -1, "gateway: out of memory");
    return 500;
  }
  bool elsewhere = false;
  int rc = perfc_gateway_match_route(g->router, http_method, target,
                                     target_len, arena, m, &elsewhere);
  /* HEAD without a route of its own runs the GET route; the transport
   * sends the head (Content-Length included) and drops the body. */
  if (rc == PERFC_ENOENT && strcmp(http_method, "HEAD") == 0) {
    bool get_elsewhere = false;
    rc = perfc_gateway_match_route(g->router, "GET", target, target_len, arena,
                                   m, &get_elsewhere);
    if (rc == PERFC_ENOENT) {
      const char *q = memchr(target, '?', target_len);
      perfc_error_set(PERFC_ENOENT, NULL, -1, "gateway: no route for HEAD %.*s",
                      (int)(q ? (size_t)(q - target) : target_len), target);
    }
  }
  if (rc == 0) {
    *method = m->method;
    *match = m;
    return 0;
  }
  if (rc == PERFC_EPARSE)
    return 400;
  if (rc == PERFC_ENOENT && elsewhere) {
    const char *q = memchr(target, '?', target_len);
    int plen = (int)(q ? (size_t)(q - target) : target_len);
    perfc_error_set(PERFC_ENOENT, NULL, -1,
                    "gateway: method %s is not allowed on %.*s (its routes "
                    "take other methods)",
                    http_method, plen, target);
    return 405;
  }
  return rc == PERFC_ENOMEM ? 500 : 404;
}

static int gw_decode(void *ud, void *match, const char *body, size_t len,
                     perfc_arena *arena, ProtobufCMessage **req) {
  gw *g = ud;
  return perfc_gateway_build_request(match, body, len, &g->json, arena, req);
}

static int gw_encode(void *ud, void *match, const ProtobufCMessage *resp,
                     perfc_arena *arena, char **out, size_t *len) {
  gw *g = ud;
  return perfc_gateway_encode_response(match, resp, &g->json, arena, out, len);
}

/* A cache hit's stored bytes as JSON, remembered per thread
 * (json_memo.c): a hit's answer skips the unpack and the encoding. */
static int gw_encode_bytes(void *ud, void *match,
                           const ProtobufCMessageDescriptor *desc,
                           const uint8_t *bytes, size_t n, perfc_arena *arena,
                           char **out, size_t *len) {
  gw *g = ud;
  return perfc__gateway_encode_bytes(&g->json, g->memo_gen, match, desc, bytes,
                                     n, arena, out, len);
}

static int gw_error(void *ud, perfc_status_code code, const char *message,
                    perfc_arena *arena, char **out, size_t *len) {
  (void)ud;
  int rc = perfc_gateway_status_json(code, message, arena, out, len);
  return rc != 0 ? rc : perfc_http_status_from_grpc(code);
}

static int gw_start(perfc_server *srv, void *ud) {
  gw *g = ud;
  /* A retried start builds it again. */
  perfc_gateway_router_free(g->router);
  g->router = NULL;
  perfc_gateway_router *r;
  int rc = perfc_gateway_router_new(&r);
  if (rc != 0)
    return rc;
  size_t n = perfc_server_service_count(srv);
  for (size_t i = 0; i < n; i++) {
    rc = perfc_gateway_router_add(r, perfc_server_service_at(srv, i));
    if (rc != 0) {
      perfc_gateway_router_free(r);
      return rc;
    }
  }
  g->json = g->o.json;
  if (g->json.resolve_type == NULL) {
    g->json.resolve_type = perfc_gateway_router_resolve;
    g->json.resolve_user_data = r;
  }
  g->router = r;
  /* The options (resolver included) are this start's: answers remembered
   * under an earlier start's generation are not used again. */
  g->memo_gen = perfc__gateway_memo_gen();
  return 0;
}

static void gw_free(void *ud) {
  gw *g = ud;
  perfc_gateway_router_free(g->router);
  for (size_t i = 0; g->origins != NULL && i < g->o.cors_origin_count; i++)
    free(g->origins[i]);
  free(g->origins);
  free(g->methods);
  free(g->headers);
  free(g->expose);
  free(g);
}

/* Copies the CORS strings the options borrow; false when out of memory. */
static bool copy_cors(gw *g) {
  perfc_gateway_opts *o = &g->o;
  if (o->cors_origin_count > 0) {
    g->origins = calloc(o->cors_origin_count, sizeof *g->origins);
    if (g->origins == NULL)
      return false;
    for (size_t i = 0; i < o->cors_origin_count; i++)
      if ((g->origins[i] = strdup(o->cors_origins[i])) == NULL)
        return false;
    o->cors_origins = (const char *const *)g->origins;
  }
#define DUP(f, d)                                                              \
  if (o->f != NULL && (g->d = strdup(o->f)) == NULL)                          \
    return false;                                                              \
  o->f = g->d
  DUP(cors_methods, methods);
  DUP(cors_headers, headers);
  DUP(cors_expose_headers, expose);
#undef DUP
  return true;
}

int perfc_gateway_attach(const perfc_gateway_opts *opts, perfc_server *srv) {
  if (srv == NULL)
    return perfc_error_set(PERFC_EINVAL, NULL, -1,
                           "perfc_gateway_attach: NULL server");
  gw *g = calloc(1, sizeof *g);
  if (g == NULL)
    return perfc_error_set(PERFC_ENOMEM, NULL, -1, "gateway: out of memory");
  if (opts != NULL)
    g->o = *opts;
  else
    perfc_gateway_opts_init(&g->o);
  g->json = g->o.json;
  if (g->o.cors_origin_count > 0 && g->o.cors_origins == NULL) {
    free(g);
    return perfc_error_set(PERFC_EINVAL, NULL, -1,
                           "perfc_gateway_attach: cors_origin_count without "
                           "cors_origins");
  }
  for (size_t i = 0; i < g->o.cors_origin_count; i++)
    if (g->o.cors_origins[i] == NULL || g->o.cors_origins[i][0] == '\0') {
      free(g);
      return perfc_error_set(PERFC_EINVAL, NULL, -1,
                             "perfc_gateway_attach: CORS origin %zu is empty",
                             i);
    }
  int lvl = g->o.gzip_level, mode = (int)g->o.http_cache;
  if (lvl < PERFC_HTTP_GZIP_OFF || lvl > 9 || mode < 0 ||
      mode > PERFC_HTTP_CACHE_OFF) {
    free(g);
    return perfc_error_set(PERFC_EINVAL, NULL, -1,
                           "perfc_gateway_attach: gzip_level %d (want -1 for "
                           "off, 0 for the default, or 1..9) or http_cache "
                           "mode %d is out of range",
                           lvl, mode);
  }
  if (!copy_cors(g)) {
    g->o.cors_origin_count = g->origins ? g->o.cors_origin_count : 0;
    gw_free(g);
    return perfc_error_set(PERFC_ENOMEM, NULL, -1, "gateway: out of memory");
  }
  /* The server owns g from here (freed in perfc_server_free). */
  int rc = perfc_server_add_shutdown_hook(srv, NULL, g, gw_free);
  if (rc != 0) {
    free(g);
    return rc;
  }
  perfc_http_codec codec = {
      .match = gw_match,
      .decode = gw_decode,
      .encode = gw_encode,
      .encode_bytes = gw_encode_bytes,
      .error = gw_error,
      .content_type = "application/json",
      .stream_content_type = "application/x-ndjson",
      .max_body_bytes = g->o.max_body_bytes,
      .idle_timeout_ms = g->o.idle_timeout_ms,
      .cors_origins = g->o.cors_origins,
      .cors_origin_count = g->o.cors_origin_count,
      .cors_methods = g->o.cors_methods,
      .cors_headers = g->o.cors_headers,
      .cors_expose_headers = g->o.cors_expose_headers,
      .cors_max_age_ms = g->o.cors_max_age_ms,
      .cors_allow_credentials = g->o.cors_allow_credentials,
      .gzip_min_bytes = g->o.gzip_min_bytes,
      .gzip_level = g->o.gzip_level,
      .http_cache = g->o.http_cache,
  };
  rc = perfc_server_set_http_codec(srv, &codec, g);
  if (rc != 0)
    return rc;
  return perfc_server_add_start_hook(srv, gw_start, g);
}
