/*
 * bind.c — a matched HTTP request into the method's request message (body,
 * path variables, query parameters, in that order, google/api/http.proto's
 * "Rules for HTTP mapping"), then, for a PATCH without an update_mask, the
 * mask from the body's members; and the response into its JSON body.
 *
 * Room: runtime/src/gateway (libperfc-gateway).
 */
#include "gateway/json_internal.h"

#include <stdio.h>
#include <string.h>

/* The text of a path variable or query parameter as a JSON value of the
 * field's kind: a string node, except bools (true/false). */
static int text_node(perfc__jdec *d, const ProtobufCFieldDescriptor *f,
                     const char *s, size_t len, perfc__jnode *n) {
  memset(n, 0, sizeof *n);
  n->type = PERFC__J_STRING;
  n->s = s;
  n->len = len;
  int is_bool = f->type == PROTOBUF_C_TYPE_BOOL;
  if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
    const ProtobufCMessageDescriptor *md = f->descriptor;
    is_bool = strcmp(md->name, "google.protobuf.BoolValue") == 0;
  }
  if (is_bool) {
    if (strcmp(s, "true") == 0 || strcmp(s, "false") == 0) {
      n->type = PERFC__J_BOOL;
      n->b = s[0] == 't';
      return 0;
    }
    return perfc__jdec_fail(d, PERFC_EPARSE, "\"%s\" is not true or false", s);
  }
  return 0;
}

/* proto3 strings are UTF-8; a path or query value is bytes after
 * %-decoding, so it is checked here (yajl checks JSON strings). */
static int utf8_ok(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned char c = s[i];
    size_t k;
    uint32_t cp;
    if (c < 0x80) {
      i++;
      continue;
    }
    if ((c & 0xe0) == 0xc0)
      k = 1, cp = c & 0x1f;
    else if ((c & 0xf0) == 0xe0)
      k = 2, cp = c & 0x0f;
    else if ((c & 0xf8) == 0xf0)
      k = 3, cp = c & 0x07;
    else
      return 0;
    if (n - i <= k)
      return 0;
    for (size_t j = 1; j <= k; j++) {
      if ((s[i + j] & 0xc0) != 0x80)
        return 0;
      cp = (cp << 6) | (s[i + j] & 0x3f);
    }
    if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) ||
        (k == 3 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff))
      return 0;
    i += k + 1;
  }
  return 1;
}

/* Walks `names` (proto or JSON names, '.'-separated, or the numbers of a
 * route's field path) from msg to the leaf's parent, creating unset
 * messages on the way. */
static int walk_numbers(perfc__jdec *d, ProtobufCMessage *msg,
                        const perfc_http_field_path *fp,
                        ProtobufCMessage **parent,
                        const ProtobufCFieldDescriptor **leaf) {
  ProtobufCMessage *m = msg;
  for (size_t i = 0; i < fp->depth; i++) {
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field(m->descriptor, fp->numbers[i]);
    if (!f)
      return perfc__jdec_fail(d, PERFC_EINVAL,
                              "route field %s does not match message %s",
                              fp->name, m->descriptor->name);
    if (i + 1 == fp->depth) {
      *parent = m;
      *leaf = f;
      return 0;
    }
    ProtobufCMessage **slot = (ProtobufCMessage **)((char *)m + f->offset);
    if (!*slot) {
      *slot = perfc__msg_new(d->a, f->descriptor);
      if (!*slot)
        return perfc__jdec_fail(d, PERFC_ENOMEM, "out of memory");
      if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
        *(uint32_t *)((char *)m + f->quantifier_offset) = f->id;
    }
    m = *slot;
  }
  return perfc__jdec_fail(d, PERFC_EINVAL, "empty route field path");
}

static int set_text(perfc__jdec *d, ProtobufCMessage *parent,
                    const ProtobufCFieldDescriptor *f, const char *s,
                    size_t len) {
  if (f->type == PROTOBUF_C_TYPE_STRING && !utf8_ok((const unsigned char *)s, len))
    return perfc__jdec_fail(d, PERFC_EPARSE, "the value is not valid UTF-8");
  perfc__jnode n;
  int rc = text_node(d, f, s, len, &n);
  if (rc)
    return rc;
  if (f->label == PROTOBUF_C_LABEL_REPEATED)
    return perfc__jdec_append(d, parent, f, &n);
  return perfc__jdec_field(d, parent, f, &n);
}

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Form decoding of a query component: '+' is a space, %XX a byte. NULL on
 * a malformed escape or a decoded NUL (protobuf-c strings end there). */
static char *form_decode(perfc_arena *a, const char *s, size_t n,
                         size_t *out_len) {
  char *o = perfc_arena_alloc(a, n + 1);
  if (!o)
    return NULL;
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (c == '+') {
      c = ' ';
    } else if (c == '%') {
      if (n - i < 3)
        return NULL;
      int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
      if (hi < 0 || lo < 0 || hi * 16 + lo == 0)
        return NULL;
      c = (char)(hi * 16 + lo);
      i += 2;
    }
    o[k++] = c;
  }
  o[k] = '\0';
  *out_len = k;
  return o;
}

/* Whether field path `name` (proto names) is bound by the path or body. */
static const char *bound_by(const perfc_http_route *rt, const char *name) {
  for (size_t i = 0; i < rt->n_vars; i++)
    if (strcmp(rt->vars[i].field.name, name) == 0)
      return "the path";
  if (rt->body_kind == PERFC_HTTP_BODY_ALL)
    return "the body (body: \"*\")";
  if (rt->body_kind == PERFC_HTTP_BODY_FIELD) {
    size_t l = strlen(rt->body.name);
    if (strncmp(name, rt->body.name, l) == 0 &&
        (name[l] == '\0' || name[l] == '.'))
      return "the body";
  }
  return NULL;
}

static int bind_query_param(perfc__jdec *d, const perfc_http_route *rt,
                            ProtobufCMessage *msg, const char *key,
                            const char *val, size_t val_len) {
  /* Resolve the dotted path by proto or JSON names, building the proto
   * name path to check against the path and body bindings. */
  char proto_path[512];
  size_t pp = 0;
  ProtobufCMessage *m = msg;
  const char *p = key;
  const ProtobufCFieldDescriptor *f = NULL;
  ProtobufCMessage *parent = NULL;
  while (1) {
    const char *dot = strchr(p, '.');
    size_t n = dot ? (size_t)(dot - p) : strlen(p);
    f = perfc__field_by_json_name(m->descriptor, p, n);
    if (!f) {
      if (d->o.reject_unknown_fields)
        return perfc__jdec_fail(d, PERFC_EPARSE, "%s has no field \"%.*s\"",
                                m->descriptor->name, (int)n, p);
      return 0;
    }
    int w = snprintf(proto_path + pp, sizeof proto_path - pp, "%s%s",
                     pp ? "." : "", f->name);
    if (w < 0 || (size_t)w >= sizeof proto_path - pp)
      return perfc__jdec_fail(d, PERFC_EPARSE, "the parameter name is too long");
    pp += (size_t)w;
    if (!dot) {
      parent = m;
      break;
    }
    if (f->type != PROTOBUF_C_TYPE_MESSAGE ||
        f->label == PROTOBUF_C_LABEL_REPEATED ||
        perfc__wkt_of(f->descriptor) != PERFC__WKT_NONE)
      return perfc__jdec_fail(d, PERFC_EPARSE,
                              "field \"%s\" is not a singular message; only "
                              "those can be stepped through with '.'",
                              f->name);
    ProtobufCMessage **slot = (ProtobufCMessage **)((char *)m + f->offset);
    if (!*slot) {
      *slot = perfc__msg_new(d->a, f->descriptor);
      if (!*slot)
        return perfc__jdec_fail(d, PERFC_ENOMEM, "out of memory");
      if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
        *(uint32_t *)((char *)m + f->quantifier_offset) = f->id;
    }
    m = *slot;
    p = dot + 1;
  }
  const char *why = bound_by(rt, proto_path);
  if (why)
    return perfc__jdec_fail(d, PERFC_EPARSE,
                            "field %s is bound by %s; it cannot be a query "
                            "parameter too",
                            proto_path, why);
  if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
    perfc__wkt w = perfc__wkt_of(f->descriptor);
    if (perfc__field_is_map(parent->descriptor, f) ||
        !(w == PERFC__WKT_TIMESTAMP || w == PERFC__WKT_DURATION ||
          w == PERFC__WKT_FIELD_MASK || w == PERFC__WKT_WRAPPER))
      return perfc__jdec_fail(d, PERFC_EPARSE,
                              "field %s is a %s; query parameters set "
                              "primitive fields (and Timestamp, Duration, "
                              "FieldMask, wrappers), nested ones with '.'",
                              proto_path,
                              perfc__field_is_map(parent->descriptor, f)
                                  ? "map"
                                  : "message");
  }
  return set_text(d, parent, f, val, val_len);
}

static int bind_query(perfc__jdec *d, const perfc_gateway_match *mt,
                      ProtobufCMessage *msg) {
  const char *q = mt->query, *end = mt->query + mt->query_len;
  while (q < end) {
    const char *amp = memchr(q, '&', (size_t)(end - q));
    const char *e = amp ? amp : end;
    const char *eq = memchr(q, '=', (size_t)(e - q));
    const char *ke = eq ? eq : e;
    if (ke > q) {
      size_t kl = 0, vl = 0;
      char *key = form_decode(d->a, q, (size_t)(ke - q), &kl);
      char *val = key ? form_decode(d->a, eq ? eq + 1 : e,
                                    eq ? (size_t)(e - eq - 1) : 0, &vl)
                      : NULL;
      if (!key || !val)
        return perfc_error_set(PERFC_EPARSE, NULL, -1,
                               "query parameter \"%.*s\": malformed "
                               "%%-escape or an encoded NUL",
                               (int)(e - q), q);
      d->what = perfc_arena_sprintf(d->a, "query parameter \"%s\"", key);
      d->depth = 0;
      if (!d->what)
        return perfc_error_set(PERFC_ENOMEM, NULL, -1, "gateway: out of memory");
      int rc = bind_query_param(d, mt->route, msg, key, val, vl);
      if (rc)
        return rc;
    }
    q = e + (amp != NULL);
  }
  return 0;
}

static int only_space(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
      return 0;
  return 1;
}

/* PATCH with `body: "field"` and no update_mask (grpc-gateway's rule, AIP-134):
 * the mask becomes the body's members, as proto field paths relative to the
 * body field ("name", "profile.age"), so a partial JSON object updates only
 * what it names. proto3 scalars have no presence, so only the binder, which
 * still sees the JSON, can tell `{"name":"x"}` from `{"name":"x","email":""}`.
 * Nested objects of (non well-known, non map) message fields recurse;
 * members naming no field are left out, and so are fields a path variable
 * binds (the path wins over the body). */
#define MASK_MAX_PATHS 256
static int mask_collect(perfc_arena *a, const perfc_http_route *rt,
                        const ProtobufCMessageDescriptor *desc,
                        const perfc__jnode *obj, const char *prefix,
                        char **paths, size_t *n) {
  for (const perfc__jnode *m = obj->child; m; m = m->next) {
    const ProtobufCFieldDescriptor *f =
        perfc__field_by_json_name(desc, m->key, m->key_len);
    if (!f)
      continue;
    char *p = prefix ? perfc_arena_sprintf(a, "%s.%s", prefix, f->name)
                     : perfc_arena_strdup(a, f->name);
    if (!p)
      return perfc_error_set(PERFC_ENOMEM, NULL, -1, "gateway: out of memory");
    if (f->type == PROTOBUF_C_TYPE_MESSAGE &&
        f->label != PROTOBUF_C_LABEL_REPEATED && m->type == PERFC__J_OBJECT &&
        m->n > 0 && perfc__wkt_of(f->descriptor) == PERFC__WKT_NONE) {
      int rc = mask_collect(a, rt, f->descriptor, m, p, paths, n);
      if (rc)
        return rc;
      continue;
    }
    char *full = perfc_arena_sprintf(a, "%s.%s", rt->body.name, p);
    if (!full)
      return perfc_error_set(PERFC_ENOMEM, NULL, -1, "gateway: out of memory");
    int bound = 0;
    for (size_t i = 0; i < rt->n_vars; i++)
      bound |= strcmp(rt->vars[i].field.name, full) == 0;
    if (bound)
      continue;
    if (*n == MASK_MAX_PATHS)
      return perfc_error_set(PERFC_ETOOBIG, NULL, -1,
                             "json: more than %d fields for the update mask",
                             MASK_MAX_PATHS);
    paths[(*n)++] = p;
  }
  return 0;
}

static int derive_update_mask(perfc_arena *a, const perfc_http_route *rt,
                              ProtobufCMessage *msg,
                              const ProtobufCFieldDescriptor *bodyf,
                              const perfc__jnode *root) {
  const ProtobufCFieldDescriptor *mf =
      protobuf_c_message_descriptor_get_field_by_name(msg->descriptor,
                                                      "update_mask");
  if (!mf || mf->type != PROTOBUF_C_TYPE_MESSAGE ||
      mf->label == PROTOBUF_C_LABEL_REPEATED ||
      perfc__wkt_of(mf->descriptor) != PERFC__WKT_FIELD_MASK ||
      bodyf->type != PROTOBUF_C_TYPE_MESSAGE || root->type != PERFC__J_OBJECT)
    return 0;
  ProtobufCMessage **slot = (ProtobufCMessage **)((char *)msg + mf->offset);
  const ProtobufCFieldDescriptor *pf =
      protobuf_c_message_descriptor_get_field_by_name(mf->descriptor, "paths");
  if (!pf)
    return 0;
  if (*slot && *(size_t *)((char *)*slot + pf->quantifier_offset) > 0)
    return 0; /* the client sent a mask (body or query): it stands */
  char **paths = perfc_arena_alloc(a, MASK_MAX_PATHS * sizeof *paths);
  size_t n = 0;
  if (!paths)
    return perfc_error_set(PERFC_ENOMEM, NULL, -1, "gateway: out of memory");
  int rc = mask_collect(a, rt, bodyf->descriptor, root, NULL, paths, &n);
  if (rc || n == 0)
    return rc;
  ProtobufCMessage *mask = *slot ? *slot : perfc__msg_new(a, mf->descriptor);
  if (!mask)
    return perfc_error_set(PERFC_ENOMEM, NULL, -1, "gateway: out of memory");
  *(size_t *)((char *)mask + pf->quantifier_offset) = n;
  *(char ***)((char *)mask + pf->offset) = paths;
  *slot = mask;
  return 0;
}

int perfc_gateway_build_request(const perfc_gateway_match *m,
                                const char *body, size_t body_len,
                                const perfc_json_opts *opts,
                                perfc_arena *arena, ProtobufCMessage **out) {
  if (!m || !m->route || !m->method || !arena || !out || (!body && body_len))
    return perfc_error_set(PERFC_EINVAL, NULL, -1,
                           "perfc_gateway_build_request: NULL argument");
  const perfc_http_route *rt = m->route;
  perfc__jdec d;
  int rc = perfc__jdec_init(&d, opts, arena);
  if (rc)
    return rc;
  ProtobufCMessage *msg = perfc__msg_new(arena, m->method->input);
  if (!msg)
    return perfc_error_set(PERFC_ENOMEM, NULL, -1, "gateway: out of memory");
  int empty = body_len == 0 || only_space(body, body_len);
  const perfc__jnode *mask_root = NULL;
  const ProtobufCFieldDescriptor *mask_field = NULL;
  /* 1. The body. */
  if (!empty && rt->body_kind == PERFC_HTTP_BODY_NONE)
    return perfc_error_set(PERFC_EPARSE, NULL, -1,
                           "%s %s takes no request body; send the fields as "
                           "query parameters",
                           rt->http_method, rt->pattern);
  if (!empty) {
    perfc__jnode *root;
    rc = perfc__json_parse(arena, body, body_len, d.o.max_depth, &root);
    if (rc)
      return rc;
    if (rt->body_kind == PERFC_HTTP_BODY_ALL) {
      rc = perfc__jdec_message(&d, msg, root);
    } else {
      ProtobufCMessage *parent;
      const ProtobufCFieldDescriptor *f;
      rc = walk_numbers(&d, msg, &rt->body, &parent, &f);
      if (!rc) {
        d.path[0].name = f->name;
        d.depth = 1;
        rc = perfc__jdec_field(&d, parent, f, root);
        d.depth = 0;
        if (rt->body.depth == 1 && strcmp(rt->http_method, "PATCH") == 0)
          mask_root = root, mask_field = f;
      }
    }
    if (rc)
      return rc;
  }
  /* 2. Path variables, which win over what the body said. */
  for (size_t i = 0; i < rt->n_vars; i++) {
    ProtobufCMessage *parent;
    const ProtobufCFieldDescriptor *f;
    d.what = perfc_arena_sprintf(arena, "path variable {%s}",
                                 rt->vars[i].field.name);
    if (!d.what)
      return perfc_error_set(PERFC_ENOMEM, NULL, -1, "gateway: out of memory");
    rc = walk_numbers(&d, msg, &rt->vars[i].field, &parent, &f);
    if (!rc)
      rc = set_text(&d, parent, f, m->var_values[i], m->var_lens[i]);
    if (rc)
      return rc;
  }
  /* 3. Query parameters, on the fields neither binds. */
  if (m->query_len) {
    rc = bind_query(&d, m, msg);
    if (rc)
      return rc;
  }
  /* 4. PATCH without an update_mask: the body's fields (derive_update_mask). */
  if (mask_root) {
    rc = derive_update_mask(arena, rt, msg, mask_field, mask_root);
    if (rc)
      return rc;
  }
  *out = msg;
  return 0;
}

int perfc_gateway_encode_response(const perfc_gateway_match *m,
                                  const ProtobufCMessage *resp,
                                  const perfc_json_opts *opts,
                                  perfc_arena *arena, char **out,
                                  size_t *len) {
  if (!m || !m->route || !resp || !arena || !out)
    return perfc_error_set(PERFC_EINVAL, NULL, -1,
                           "perfc_gateway_encode_response: NULL argument");
  const perfc_http_field_path *rb = &m->route->response_body;
  if (!rb->name)
    return perfc_json_encode(resp, opts, arena, out, len);
  const ProtobufCFieldDescriptor *f =
      protobuf_c_message_descriptor_get_field(resp->descriptor, rb->numbers[0]);
  if (!f)
    return perfc_error_set(PERFC_EINVAL, NULL, -1,
                           "gateway: response_body %s is not a field of %s",
                           rb->name, resp->descriptor->name);
  return perfc__json_encode_field(resp, f, opts, arena, out, len);
}
