/*
 * route.c — the HTTP route matcher over generated route tables
 * (perfc/http_route.h): method + request target -> route and variables.
 *
 * Room: runtime/src/gateway (libperfc-gateway). The templates were parsed
 * and checked by protoc-gen-perfc; here a request's path is split once into
 * segments, each percent-decoded once, and every route of the method is
 * compared segment by segment (no regular expression, no parsing). The
 * best match by google.api.http's usual precedence wins (perfc/gateway.h).
 * A linear scan: a service's routes are tens, and a miss costs one string
 * compare per route; a trie would pay off only for hundreds.
 */
#include "gateway/json_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct rroute {
  const perfc_service_desc *svc;
  const perfc_http_route *r;
} rroute;

struct perfc_gateway_router {
  rroute *routes;
  size_t n, cap;
  const ProtobufCMessageDescriptor **types;
  size_t n_types, cap_types;
};

int perfc_gateway_router_new(perfc_gateway_router **out) {
  if (!out)
    return perfc_error_set(PERFC_EINVAL, NULL, -1,
                           "perfc_gateway_router_new: out is NULL");
  *out = calloc(1, sizeof **out);
  if (!*out)
    return perfc_error_set(PERFC_ENOMEM, NULL, -1, "gateway: out of memory");
  return 0;
}

void perfc_gateway_router_free(perfc_gateway_router *r) {
  if (!r)
    return;
  free(r->routes);
  free(r->types);
  free(r);
}

static int same_shape(const perfc_http_route *a, const perfc_http_route *b) {
  if (strcmp(a->http_method, b->http_method) != 0 ||
      a->n_segments != b->n_segments || (a->verb == NULL) != (b->verb == NULL) ||
      (a->verb && strcmp(a->verb, b->verb) != 0))
    return 0;
  for (size_t i = 0; i < a->n_segments; i++) {
    if (a->segments[i].kind != b->segments[i].kind)
      return 0;
    if (a->segments[i].kind == PERFC_HTTP_SEG_LITERAL &&
        strcmp(a->segments[i].literal, b->segments[i].literal) != 0)
      return 0;
  }
  return 1;
}

/* Every message type reachable from the services, for Any's "@type". */
static int add_type(perfc_gateway_router *r,
                    const ProtobufCMessageDescriptor *d) {
  for (size_t i = 0; i < r->n_types; i++)
    if (r->types[i] == d)
      return 0;
  if (r->n_types == r->cap_types) {
    size_t cap = r->cap_types ? 2 * r->cap_types : 32;
    const ProtobufCMessageDescriptor **t =
        realloc(r->types, cap * sizeof *t);
    if (!t)
      return PERFC_ENOMEM;
    r->types = t;
    r->cap_types = cap;
  }
  r->types[r->n_types++] = d;
  for (unsigned i = 0; i < d->n_fields; i++)
    if (d->fields[i].type == PROTOBUF_C_TYPE_MESSAGE) {
      int rc = add_type(r, d->fields[i].descriptor);
      if (rc)
        return rc;
    }
  return 0;
}

int perfc_gateway_router_add(perfc_gateway_router *r,
                             const perfc_service_desc *svc) {
  if (!r || !svc)
    return perfc_error_set(PERFC_EINVAL, NULL, -1,
                           "perfc_gateway_router_add: NULL argument");
  for (size_t i = 0; i < svc->n_http_routes; i++) {
    const perfc_http_route *nr = &svc->http_routes[i];
    if (nr->method_index >= svc->n_methods)
      return perfc_error_set(PERFC_EINVAL, NULL, -1,
                             "gateway: %s: route %s %s names method %zu of "
                             "%zu",
                             svc->name, nr->http_method, nr->pattern,
                             nr->method_index, svc->n_methods);
    for (size_t k = 0; k < r->n; k++)
      if (same_shape(r->routes[k].r, nr))
        return perfc_error_set(
            PERFC_EEXIST, NULL, -1,
            "gateway: route %s %s of %s/%s matches the same requests as %s "
            "%s of %s/%s",
            nr->http_method, nr->pattern, svc->name,
            svc->methods[nr->method_index].name, r->routes[k].r->http_method,
            r->routes[k].r->pattern, r->routes[k].svc->name,
            r->routes[k].svc->methods[r->routes[k].r->method_index].name);
  }
  for (size_t i = 0; i < svc->n_http_routes; i++) {
    if (r->n == r->cap) {
      size_t cap = r->cap ? 2 * r->cap : 16;
      rroute *nr = realloc(r->routes, cap * sizeof *nr);
      if (!nr)
        return perfc_error_set(PERFC_ENOMEM, NULL, -1, "gateway: out of memory");
      r->routes = nr;
      r->cap = cap;
    }
    r->routes[r->n].svc = svc;
    r->routes[r->n].r = &svc->http_routes[i];
    r->n++;
  }
  for (size_t i = 0; i < svc->n_methods; i++) {
    if (add_type(r, svc->methods[i].input) || add_type(r, svc->methods[i].output))
      return perfc_error_set(PERFC_ENOMEM, NULL, -1, "gateway: out of memory");
  }
  return 0;
}

const ProtobufCMessageDescriptor *
perfc_gateway_router_resolve(const char *full_name, void *router) {
  const perfc_gateway_router *r = router;
  if (!r || !full_name)
    return NULL;
  for (size_t i = 0; i < r->n_types; i++)
    if (strcmp(r->types[i]->name, full_name) == 0)
      return r->types[i];
  return NULL;
}

/* ---- matching ----------------------------------------------------------- */

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Percent-decodes s[0..n) into the arena; keep_slash leaves %2F/%2f as
 * they are (multi-segment variables, google/api/http.proto). NULL with
 * *bad set on a malformed escape or a decoded NUL. */
static char *pct_decode(perfc_arena *a, const char *s, size_t n,
                        int keep_slash, size_t *out_len, int *bad) {
  char *out = perfc_arena_alloc(a, n + 1);
  if (!out)
    return NULL;
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] != '%') {
      out[o++] = s[i];
      continue;
    }
    if (i + 2 >= n) {
      *bad = 1;
      return NULL;
    }
    int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
    if (hi < 0 || lo < 0) {
      *bad = 1;
      return NULL;
    }
    char c = (char)(hi * 16 + lo);
    if (c == '\0') {
      *bad = 1;
      return NULL;
    }
    if (keep_slash && c == '/') {
      memcpy(out + o, s + i, 3);
      o += 3;
    } else {
      out[o++] = c;
    }
    i += 2;
  }
  out[o] = '\0';
  *out_len = o;
  return out;
}

typedef struct seg {
  const char *raw;
  size_t raw_len;
  const char *dec; /* fully decoded */
} seg;

/* -1 when a matches worse than b, 1 when better, 0 when equal. */
static int rank(const perfc_http_route *a, const perfc_http_route *b) {
  if ((a->verb != NULL) != (b->verb != NULL))
    return a->verb ? 1 : -1;
  size_t n = a->n_segments < b->n_segments ? a->n_segments : b->n_segments;
  for (size_t i = 0; i < n; i++) {
    int ka = (int)a->segments[i].kind, kb = (int)b->segments[i].kind;
    if (ka != kb)
      return ka < kb ? 1 : -1;
  }
  /* One ends where the other goes on with a `**` matching nothing. */
  if (a->n_segments != b->n_segments)
    return a->n_segments < b->n_segments ? 1 : -1;
  int sa = strcmp(a->http_method, "*") == 0, sb = strcmp(b->http_method, "*") == 0;
  if (sa != sb)
    return sa ? -1 : 1;
  return 0;
}

static int segs_match(const perfc_http_route *r, const seg *s, size_t n) {
  size_t i = 0;
  for (; i < r->n_segments; i++) {
    const perfc_http_segment *t = &r->segments[i];
    if (t->kind == PERFC_HTTP_SEG_ANY_MANY)
      return 1; /* the generator put it last; it takes the rest, even none */
    if (i >= n)
      return 0;
    if (t->kind == PERFC_HTTP_SEG_ANY) {
      if (s[i].raw_len == 0)
        return 0;
    } else if (strcmp(t->literal, s[i].dec) != 0) {
      return 0;
    }
  }
  return i == n;
}

int perfc_gateway_match_route(const perfc_gateway_router *r,
                              const char *http_method, const char *target,
                              size_t target_len, perfc_arena *arena,
                              perfc_gateway_match *out,
                              bool *method_allowed_elsewhere) {
  if (method_allowed_elsewhere)
    *method_allowed_elsewhere = false;
  if (!r || !http_method || !target || !arena || !out)
    return perfc_error_set(PERFC_EINVAL, NULL, -1,
                           "perfc_gateway_match_route: NULL argument");
  memset(out, 0, sizeof *out);
  /* A request-target holds printable ASCII only (RFC 9112); a NUL would
   * also cut a variable's C string short. */
  for (size_t i = 0; i < target_len; i++)
    if ((unsigned char)target[i] <= 0x20 || (unsigned char)target[i] >= 0x7f)
      return perfc_error_set(PERFC_EPARSE, NULL, -1,
                             "gateway: the request target holds byte 0x%02x "
                             "at %zu; escape it as %%%02X",
                             (unsigned char)target[i], i,
                             (unsigned char)target[i]);
  const char *q = memchr(target, '?', target_len);
  size_t path_len = q ? (size_t)(q - target) : target_len;
  if (q) {
    out->query = q + 1;
    out->query_len = target_len - path_len - 1;
  }
  if (path_len == 0 || target[0] != '/')
    return perfc_error_set(PERFC_ENOENT, NULL, -1,
                           "gateway: the path must start with '/'");
  /* Segments: "/" is none; "/a/b" is two. */
  size_t n = 0;
  if (path_len > 1)
    for (size_t i = 0; i < path_len; i++)
      n += target[i] == '/';
  seg *s = n ? perfc_arena_alloc(arena, n * sizeof *s) : NULL;
  if (n && !s)
    return perfc_error_set(PERFC_ENOMEM, NULL, -1, "gateway: out of memory");
  const char *p = target + 1, *end = target + path_len;
  for (size_t i = 0; i < n; i++) {
    const char *slash = memchr(p, '/', (size_t)(end - p));
    const char *e = slash ? slash : end;
    s[i].raw = p;
    s[i].raw_len = (size_t)(e - p);
    p = e + 1;
  }
  /* A trailing ":verb" on the last segment, for routes that have one. */
  const char *verb = NULL;
  size_t verb_len = 0;
  if (n) {
    const char *c = memchr(s[n - 1].raw, ':', s[n - 1].raw_len);
    const char *last = NULL;
    while (c) { /* the last ':' */
      last = c;
      c = memchr(c + 1, ':', s[n - 1].raw_len - (size_t)(c + 1 - s[n - 1].raw));
    }
    if (last) {
      verb = last + 1;
      verb_len = s[n - 1].raw_len - (size_t)(verb - s[n - 1].raw);
    }
  }
  for (size_t i = 0; i < n; i++) {
    size_t dl;
    int bad = 0;
    s[i].dec = pct_decode(arena, s[i].raw, s[i].raw_len, 0, &dl, &bad);
    if (!s[i].dec)
      return bad ? perfc_error_set(PERFC_EPARSE, NULL, -1,
                                   "gateway: path segment %zu \"%.*s\" has "
                                   "a malformed %%-escape or an encoded NUL",
                                   i + 1, (int)s[i].raw_len, s[i].raw)
                 : perfc_error_set(PERFC_ENOMEM, NULL, -1,
                                   "gateway: out of memory");
  }
  /* The same segments with the verb cut from the last one. */
  seg *sv = NULL;
  char *verb_dec = NULL;
  if (verb) {
    sv = perfc_arena_alloc(arena, n * sizeof *sv);
    if (!sv)
      return perfc_error_set(PERFC_ENOMEM, NULL, -1, "gateway: out of memory");
    memcpy(sv, s, n * sizeof *sv);
    size_t dl;
    int bad = 0;
    sv[n - 1].raw_len = (size_t)(verb - 1 - s[n - 1].raw);
    sv[n - 1].dec =
        pct_decode(arena, sv[n - 1].raw, sv[n - 1].raw_len, 0, &dl, &bad);
    verb_dec = pct_decode(arena, verb, verb_len, 0, &dl, &bad);
    if (!sv[n - 1].dec || !verb_dec)
      return perfc_error_set(bad ? PERFC_EPARSE : PERFC_ENOMEM, NULL, -1,
                             "gateway: malformed %%-escape in \"%.*s\"",
                             (int)s[n - 1].raw_len, s[n - 1].raw);
  }
  const rroute *best = NULL;
  for (size_t k = 0; k < r->n; k++) {
    const perfc_http_route *rt = r->routes[k].r;
    const seg *use = s;
    if (rt->verb) {
      if (!verb || strcmp(rt->verb, verb_dec) != 0)
        continue;
      use = sv;
    }
    if (!segs_match(rt, use, n))
      continue;
    if (strcmp(rt->http_method, "*") != 0 &&
        strcmp(rt->http_method, http_method) != 0) {
      if (method_allowed_elsewhere)
        *method_allowed_elsewhere = true;
      continue;
    }
    if (!best || rank(rt, best->r) > 0)
      best = &r->routes[k];
  }
  if (!best)
    return perfc_error_set(PERFC_ENOENT, NULL, -1,
                           "gateway: no route for %s %.*s", http_method,
                           (int)path_len, target);
  const perfc_http_route *rt = best->r;
  const seg *use = rt->verb ? sv : s;
  out->service = best->svc;
  out->method = &best->svc->methods[rt->method_index];
  out->route = rt;
  if (rt->n_vars) {
    out->var_values = perfc_arena_alloc(arena, rt->n_vars * sizeof(char *));
    out->var_lens = perfc_arena_alloc(arena, rt->n_vars * sizeof(size_t));
    if (!out->var_values || !out->var_lens)
      return perfc_error_set(PERFC_ENOMEM, NULL, -1, "gateway: out of memory");
  }
  for (size_t i = 0; i < rt->n_vars; i++) {
    const perfc_http_var *v = &rt->vars[i];
    size_t last = v->to_end ? n : v->last;
    if (!v->multi) {
      out->var_values[i] = use[v->first].dec;
      out->var_lens[i] = strlen(use[v->first].dec);
      continue;
    }
    /* The raw segments joined by '/', decoded except %2F. */
    if (v->first >= last) {
      out->var_values[i] = "";
      out->var_lens[i] = 0;
      continue;
    }
    const char *from = use[v->first].raw;
    const char *to = use[last - 1].raw + use[last - 1].raw_len;
    int bad = 0;
    size_t dl = 0;
    char *val = pct_decode(arena, from, (size_t)(to - from), 1, &dl, &bad);
    if (!val)
      return perfc_error_set(bad ? PERFC_EPARSE : PERFC_ENOMEM, NULL, -1,
                             "gateway: malformed %%-escape in the path");
    out->var_values[i] = val;
    out->var_lens[i] = dl;
  }
  return 0;
}
