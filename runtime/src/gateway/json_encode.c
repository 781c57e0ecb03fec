/*
 * json_encode.c — protobuf-c messages to proto3 JSON, written directly
 * into an arena buffer (no JSON library on this side: the output's shape
 * is fixed by the descriptor, so a writer is all it needs).
 *
 * Room: runtime/src/gateway (libperfc-gateway).
 */
#include "gateway/json_internal.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/field_mask.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"

typedef struct jw {
  perfc_arena *a;
  char *p;
  size_t len, cap;
  int oom;
  perfc__jdec *d; /* options, the field path for messages, Any's resolver */
  size_t depth;   /* messages open */
} jw;

/* The field path of the value being written, for failure messages. */
static int enter(jw *w, const char *name, long index) {
  if (w->d->depth >= w->d->cap)
    return perfc_error_set(PERFC_EINVAL, NULL, -1,
                           "json: messages nested deeper than %zu levels",
                           w->d->o.max_depth);
  w->d->path[w->d->depth].name = name;
  w->d->path[w->d->depth].index = index;
  w->d->depth++;
  return 0;
}

static void leave(jw *w) { w->d->depth--; }

static void grow(jw *w, size_t need) {
  if (w->oom || w->len + need + 1 <= w->cap)
    return;
  size_t cap = w->cap ? w->cap : 256;
  while (cap < w->len + need + 1)
    cap *= 2;
  /* The old buffer stays in the arena until the call ends: at most as
   * much again as the final output. */
  char *np = perfc_arena_alloc(w->a, cap);
  if (!np) {
    w->oom = 1;
    return;
  }
  if (w->len)
    memcpy(np, w->p, w->len);
  w->p = np;
  w->cap = cap;
}

static void put(jw *w, const char *s, size_t n) {
  grow(w, n);
  if (w->oom)
    return;
  memcpy(w->p + w->len, s, n);
  w->len += n;
}

static void puts_(jw *w, const char *s) { put(w, s, strlen(s)); }

static void putc_(jw *w, char c) { put(w, &c, 1); }

/* Integers without printf: vsnprintf cost ~400 instructions per number,
 * five numbers per GetUser answer (an id and two timestamps). */
static void put_u64(jw *w, uint64_t v, int neg, int quoted) {
  char buf[24], *e = buf + sizeof buf, *b = e;
  if (quoted)
    *--b = '"';
  do {
    *--b = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  if (neg)
    *--b = '-';
  if (quoted)
    *--b = '"';
  put(w, b, (size_t)(e - b));
}

static void put_i64(jw *w, int64_t v, int quoted) {
  /* -(v + 1) + 1 reaches INT64_MIN's magnitude without overflow. */
  uint64_t m = v < 0 ? (uint64_t)(-(v + 1)) + 1 : (uint64_t)v;
  put_u64(w, m, v < 0, quoted);
}

/* `v` as exactly `digits` decimal digits (0 <= v < 10^digits). */
static void put_fixed(jw *w, uint32_t v, int digits) {
  char buf[10];
  for (int i = digits; i-- > 0; v /= 10)
    buf[i] = (char)('0' + v % 10);
  put(w, buf, (size_t)digits);
}

/* A JSON string: '"' '\\' and control characters escaped; UTF-8 passes
 * through (strings were checked as UTF-8 when they came in). */
static void put_str(jw *w, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  putc_(w, '"');
  size_t run = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c != '"' && c != '\\')
      continue;
    put(w, s + run, i - run);
    run = i + 1;
    switch (c) {
    case '"':
      puts_(w, "\\\"");
      break;
    case '\\':
      puts_(w, "\\\\");
      break;
    case '\n':
      puts_(w, "\\n");
      break;
    case '\r':
      puts_(w, "\\r");
      break;
    case '\t':
      puts_(w, "\\t");
      break;
    case '\b':
      puts_(w, "\\b");
      break;
    case '\f':
      puts_(w, "\\f");
      break;
    default: {
      char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
      put(w, u, 6);
    }
    }
  }
  put(w, s + run, n - run);
  putc_(w, '"');
}

static void put_cstr(jw *w, const char *s) {
  put_str(w, s ? s : "", s ? strlen(s) : 0);
}

static void put_base64(jw *w, const uint8_t *p, size_t n) {
  static const char t[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  putc_(w, '"');
  grow(w, (n + 2) / 3 * 4 + 1);
  if (w->oom)
    return;
  char *o = w->p + w->len;
  size_t i = 0;
  for (; i + 3 <= n; i += 3) {
    uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
    *o++ = t[v >> 18], *o++ = t[(v >> 12) & 63], *o++ = t[(v >> 6) & 63],
    *o++ = t[v & 63];
  }
  if (n - i == 1) {
    uint32_t v = (uint32_t)p[i] << 16;
    *o++ = t[v >> 18], *o++ = t[(v >> 12) & 63], *o++ = '=', *o++ = '=';
  } else if (n - i == 2) {
    uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
    *o++ = t[v >> 18], *o++ = t[(v >> 12) & 63], *o++ = t[(v >> 6) & 63],
    *o++ = '=';
  }
  w->len = (size_t)(o - w->p);
  putc_(w, '"');
}

/* The shortest text that reads back as the same value. */
static void put_double(jw *w, double x, int is_float) {
  if (isnan(x)) {
    puts_(w, "\"NaN\"");
    return;
  }
  if (isinf(x)) {
    puts_(w, x > 0 ? "\"Infinity\"" : "\"-Infinity\"");
    return;
  }
  char buf[40];
  for (int prec = is_float ? 6 : 15; prec <= 17; prec++) {
    snprintf(buf, sizeof buf, "%.*g", prec, x);
    if (is_float ? (float)strtod(buf, NULL) == (float)x
                 : strtod(buf, NULL) == x)
      break;
  }
  puts_(w, buf);
}

static int encode_message(jw *w, const ProtobufCMessage *m);

static int encode_value(jw *w, const ProtobufCFieldDescriptor *f,
                        const void *p) {
  switch (f->type) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
    put_i64(w, *(const int32_t *)p, 0);
    return 0;
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
    put_u64(w, *(const uint32_t *)p, 0, 0);
    return 0;
  /* 64-bit integers are strings: JavaScript's numbers hold 53 bits. */
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
    put_i64(w, *(const int64_t *)p, 1);
    return 0;
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
    put_u64(w, *(const uint64_t *)p, 0, 1);
    return 0;
  case PROTOBUF_C_TYPE_FLOAT:
    put_double(w, *(const float *)p, 1);
    return 0;
  case PROTOBUF_C_TYPE_DOUBLE:
    put_double(w, *(const double *)p, 0);
    return 0;
  case PROTOBUF_C_TYPE_BOOL:
    puts_(w, *(const protobuf_c_boolean *)p ? "true" : "false");
    return 0;
  case PROTOBUF_C_TYPE_ENUM: {
    const ProtobufCEnumDescriptor *ed = f->descriptor;
    int32_t v = *(const int32_t *)p;
    if (strcmp(ed->name, "google.protobuf.NullValue") == 0) {
      puts_(w, "null");
      return 0;
    }
    const ProtobufCEnumValue *ev =
        w->d->o.enums_as_ints ? NULL : protobuf_c_enum_descriptor_get_value(ed, v);
    if (ev)
      put_cstr(w, ev->name);
    else
      put_i64(w, v, 0); /* a number the enum does not name */
    return 0;
  }
  case PROTOBUF_C_TYPE_STRING:
    put_cstr(w, *(char *const *)p);
    return 0;
  case PROTOBUF_C_TYPE_BYTES: {
    const ProtobufCBinaryData *b = p;
    put_base64(w, b->data, b->len);
    return 0;
  }
  case PROTOBUF_C_TYPE_MESSAGE: {
    const ProtobufCMessage *sub = *(ProtobufCMessage *const *)p;
    if (!sub) {
      puts_(w, "null");
      return 0;
    }
    return encode_message(w, sub);
  }
  }
  return perfc__jdec_fail(w->d, PERFC_EINVAL, "field type %d is not supported",
                          (int)f->type);
}

/* A map key: always a JSON string, whatever the key's type. */
static int encode_map_key(jw *w, const ProtobufCFieldDescriptor *kf,
                          const void *p) {
  if (kf->type == PROTOBUF_C_TYPE_STRING) {
    put_cstr(w, *(char *const *)p);
    return 0;
  }
  if (kf->type == PROTOBUF_C_TYPE_BOOL) {
    puts_(w, *(const protobuf_c_boolean *)p ? "\"true\"" : "\"false\"");
    return 0;
  }
  size_t before = w->len;
  int rc = encode_value(w, kf, p);
  if (rc || w->oom)
    return rc;
  if (w->p[before] != '"') { /* 32-bit integers print bare: quote them */
    putc_(w, '"');
    if (w->oom)
      return 0;
    memmove(w->p + before + 1, w->p + before, w->len - before - 1);
    w->p[before] = '"';
  }
  return 0;
}

static int encode_field(jw *w, const ProtobufCMessage *m,
                        const ProtobufCFieldDescriptor *f) {
  const char *base = (const char *)m;
  if (f->label != PROTOBUF_C_LABEL_REPEATED)
    return encode_value(w, f, base + f->offset);
  size_t n = *(const size_t *)(base + f->quantifier_offset);
  const char *arr = *(char *const *)(base + f->offset);
  size_t es = perfc__field_size(f);
  int is_map = perfc__field_is_map(m->descriptor, f);
  putc_(w, is_map ? '{' : '[');
  for (size_t i = 0; i < n; i++) {
    if (i)
      putc_(w, ',');
    int rc = enter(w, NULL, (long)i);
    if (rc)
      return rc;
    if (is_map) {
      const ProtobufCMessage *e = *(ProtobufCMessage *const *)(arr + i * es);
      const ProtobufCMessageDescriptor *ed = f->descriptor;
      const ProtobufCFieldDescriptor *vf = &ed->fields[1];
      rc = encode_map_key(w, &ed->fields[0],
                          (const char *)e + ed->fields[0].offset);
      putc_(w, ':');
      /* An unset message value is the type's default: {} */
      if (!rc && vf->type == PROTOBUF_C_TYPE_MESSAGE &&
          !*(ProtobufCMessage *const *)((const char *)e + vf->offset))
        puts_(w, "{}");
      else if (!rc)
        rc = encode_value(w, vf, (const char *)e + vf->offset);
    } else {
      rc = encode_value(w, f, arr + i * es);
    }
    if (rc)
      return rc;
    leave(w);
  }
  putc_(w, is_map ? '}' : ']');
  return 0;
}

static int encode_members(jw *w, const ProtobufCMessage *m, int first) {
  const ProtobufCMessageDescriptor *desc = m->descriptor;
  char jn[256];
  for (unsigned i = 0; i < desc->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &desc->fields[i];
    int present = perfc__field_present(m, f);
    if (!present) {
      /* emit_unpopulated prints defaults, but a oneof member or an
       * optional field that is unset has no value to print, and an unset
       * message prints as null only when asked. */
      if (!w->d->o.emit_unpopulated ||
          (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) ||
          (f->label == PROTOBUF_C_LABEL_OPTIONAL &&
           f->type != PROTOBUF_C_TYPE_STRING))
        continue;
    }
    if (!first)
      putc_(w, ',');
    first = 0;
    if (w->d->o.use_proto_names) {
      put_cstr(w, f->name);
    } else {
      perfc__json_name(f->name, jn, sizeof jn);
      put_cstr(w, jn);
    }
    putc_(w, ':');
    int rc = enter(w, f->name, 0);
    if (!rc)
      rc = encode_field(w, m, f);
    if (rc)
      return rc;
    leave(w);
  }
  return 0;
}

/* seconds/nanos as the mapping prints them: 0, 3, 6 or 9 digits. */
static void put_frac(jw *w, int32_t nanos) {
  if (nanos == 0)
    return;
  putc_(w, '.');
  if (nanos % 1000000 == 0)
    put_fixed(w, (uint32_t)(nanos / 1000000), 3);
  else if (nanos % 1000 == 0)
    put_fixed(w, (uint32_t)(nanos / 1000), 6);
  else
    put_fixed(w, (uint32_t)nanos, 9);
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const unsigned doe = (unsigned)(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static int encode_any(jw *w, const Google__Protobuf__Any *any) {
  if (!any->type_url || !any->type_url[0]) {
    puts_(w, "{}");
    return 0;
  }
  const ProtobufCMessageDescriptor *desc =
      perfc__json_resolve(w->d, any->type_url);
  if (!desc)
    return perfc__jdec_fail(w->d, PERFC_EINVAL,
                            "google.protobuf.Any: type \"%s\" is not known, "
                            "so its value cannot be written as JSON",
                            any->type_url);
  ProtobufCAllocator al = perfc_arena_allocator(w->a);
  ProtobufCMessage *inner =
      protobuf_c_message_unpack(desc, &al, any->value.len, any->value.data);
  if (!inner)
    return perfc__jdec_fail(w->d, PERFC_EINVAL,
                            "google.protobuf.Any: the value does not decode "
                            "as %s",
                            desc->name);
  puts_(w, "{\"@type\":");
  put_cstr(w, any->type_url);
  perfc__wkt k = perfc__wkt_of(desc);
  if (k != PERFC__WKT_NONE && k != PERFC__WKT_EMPTY) {
    puts_(w, ",\"value\":");
    int rc = encode_message(w, inner);
    putc_(w, '}');
    return rc;
  }
  int rc = encode_members(w, inner, 0);
  putc_(w, '}');
  return rc;
}

static int encode_message(jw *w, const ProtobufCMessage *m) {
  const ProtobufCMessageDescriptor *desc = m->descriptor;
  /* The decoder's bound: a JSON level can be two messages (a ListValue
   * and its Value), so messages may nest up to twice max_depth and the
   * wrappers; deeper means a message built by hand (or a cycle). */
  if (w->depth >= w->d->cap)
    return perfc__jdec_fail(w->d, PERFC_EINVAL,
                            "messages nested deeper than %zu levels",
                            w->d->cap);
  w->depth++;
  int rc = 0;
  switch (perfc__wkt_of(desc)) {
  case PERFC__WKT_ANY:
    rc = encode_any(w, (const Google__Protobuf__Any *)m);
    break;
  case PERFC__WKT_TIMESTAMP: {
    const Google__Protobuf__Timestamp *t = (const void *)m;
    if (t->seconds < PERFC__TS_MIN || t->seconds > PERFC__TS_MAX ||
        t->nanos < 0 || t->nanos > 999999999) {
      rc = perfc__jdec_fail(w->d, PERFC_EINVAL,
                            "timestamp %" PRId64 "s %" PRId32
                            "ns is outside 0001-01-01..9999-12-31",
                            t->seconds, t->nanos);
      break;
    }
    int64_t days = t->seconds >= 0 ? t->seconds / 86400
                                   : -((-t->seconds + 86399) / 86400);
    int64_t rem = t->seconds - days * 86400, y;
    unsigned mo, d;
    civil_from_days(days, &y, &mo, &d);
    /* "YYYY-MM-DDTHH:MM:SS": the range check above keeps y in 1..9999. */
    putc_(w, '"');
    put_fixed(w, (uint32_t)y, 4);
    putc_(w, '-');
    put_fixed(w, mo, 2);
    putc_(w, '-');
    put_fixed(w, d, 2);
    putc_(w, 'T');
    put_fixed(w, (uint32_t)(rem / 3600), 2);
    putc_(w, ':');
    put_fixed(w, (uint32_t)(rem / 60 % 60), 2);
    putc_(w, ':');
    put_fixed(w, (uint32_t)(rem % 60), 2);
    put_frac(w, t->nanos);
    puts_(w, "Z\"");
    break;
  }
  case PERFC__WKT_DURATION: {
    const Google__Protobuf__Duration *du = (const void *)m;
    if (du->seconds < -PERFC__DUR_MAX || du->seconds > PERFC__DUR_MAX ||
        du->nanos < -999999999 || du->nanos > 999999999 ||
        (du->seconds > 0 && du->nanos < 0) ||
        (du->seconds < 0 && du->nanos > 0)) {
      rc = perfc__jdec_fail(w->d, PERFC_EINVAL,
                            "duration %" PRId64 "s %" PRId32
                            "ns is out of range or has mixed signs",
                            du->seconds, du->nanos);
      break;
    }
    int neg = du->seconds < 0 || du->nanos < 0;
    putc_(w, '"');
    put_u64(w, (uint64_t)(du->seconds < 0 ? -du->seconds : du->seconds), neg,
            0);
    put_frac(w, du->nanos < 0 ? -du->nanos : du->nanos);
    puts_(w, "s\"");
    break;
  }
  case PERFC__WKT_FIELD_MASK: {
    /* The paths in lowerCamelCase joined by ',', as one JSON string
     * (escaped like any other: a path may hold any byte). */
    const Google__Protobuf__FieldMask *fm = (const void *)m;
    size_t total = 1;
    for (size_t i = 0; i < fm->n_paths; i++)
      total += strlen(fm->paths[i] ? fm->paths[i] : "") + 1;
    char *joined = perfc_arena_alloc(w->a, total);
    if (!joined) {
      w->oom = 1;
      break;
    }
    size_t o = 0;
    for (size_t i = 0; i < fm->n_paths; i++) {
      if (i)
        joined[o++] = ',';
      perfc__json_name(fm->paths[i] ? fm->paths[i] : "", joined + o, total - o);
      o += strlen(joined + o);
    }
    joined[o] = '\0';
    put_str(w, joined, o);
    break;
  }
  case PERFC__WKT_WRAPPER:
    rc = encode_value(w, &desc->fields[0],
                      (const char *)m + desc->fields[0].offset);
    break;
  case PERFC__WKT_STRUCT:
  case PERFC__WKT_LIST_VALUE:
    rc = encode_field(w, m, &desc->fields[0]);
    break;
  case PERFC__WKT_VALUE: {
    const Google__Protobuf__Value *v = (const void *)m;
    switch (v->kind_case) {
    case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE:
      if (!isfinite(v->number_value)) {
        rc = perfc__jdec_fail(w->d, PERFC_EINVAL,
                              "google.protobuf.Value cannot hold NaN or "
                              "Infinity in JSON");
        break;
      }
      put_double(w, v->number_value, 0);
      break;
    case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE:
      put_cstr(w, v->string_value);
      break;
    case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE:
      puts_(w, v->bool_value ? "true" : "false");
      break;
    case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE:
      if (v->struct_value)
        rc = encode_message(w, &v->struct_value->base);
      else
        puts_(w, "{}");
      break;
    case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE:
      if (v->list_value)
        rc = encode_message(w, &v->list_value->base);
      else
        puts_(w, "[]");
      break;
    default:
      puts_(w, "null");
      break;
    }
    break;
  }
  case PERFC__WKT_EMPTY:
  case PERFC__WKT_NONE:
    putc_(w, '{');
    rc = encode_members(w, m, 1);
    putc_(w, '}');
    break;
  }
  w->depth--;
  return rc;
}

static int finish(jw *w, char **out, size_t *len) {
  grow(w, 1);
  if (w->oom)
    return perfc_error_set(PERFC_ENOMEM, NULL, -1, "json: out of memory");
  w->p[w->len] = '\0';
  *out = w->p;
  if (len)
    *len = w->len;
  return 0;
}

int perfc__json_encode_field(const ProtobufCMessage *msg,
                             const ProtobufCFieldDescriptor *f,
                             const perfc_json_opts *opts, perfc_arena *arena,
                             char **out, size_t *len) {
  perfc__jdec d;
  int rc = perfc__jdec_init(&d, opts, arena);
  if (rc)
    return rc;
  jw w = {.a = arena, .d = &d};
  rc = encode_field(&w, msg, f);
  return rc ? rc : finish(&w, out, len);
}

int perfc_json_encode(const ProtobufCMessage *msg, const perfc_json_opts *opts,
                      perfc_arena *arena, char **out, size_t *len) {
  if (!msg || !arena || !out)
    return perfc_error_set(PERFC_EINVAL, NULL, -1,
                           "perfc_json_encode: NULL argument");
  perfc__jdec d;
  int rc = perfc__jdec_init(&d, opts, arena);
  if (rc)
    return rc;
  jw w = {.a = arena, .d = &d};
  rc = encode_message(&w, msg);
  return rc ? rc : finish(&w, out, len);
}
