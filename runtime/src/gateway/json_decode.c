/*
 * json_decode.c — proto3 JSON to protobuf-c messages, driven by
 * ProtobufCMessageDescriptor (https://protobuf.dev/programming-guides/proto3/#json).
 *
 * Room: runtime/src/gateway (libperfc-gateway). Every message, string and
 * array is allocated in the caller's arena; the tree comes from
 * json_parse.c. Fields are written through the descriptors' offsets the
 * way protobuf-c's own unpacker writes them (has_ flags for optional
 * scalars, the case word for oneofs, n_ counts for repeated fields), so a
 * decoded message packs, prints and frees like an unpacked one.
 */
#include "gateway/json_internal.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/empty.pb-c.h"
#include "google/protobuf/field_mask.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"

/* ---- options and failures ----------------------------------------------- */

void perfc_json_opts_init(perfc_json_opts *opts) {
  if (!opts)
    return;
  memset(opts, 0, sizeof *opts);
  opts->max_depth = PERFC_DEFAULT_JSON_MAX_DEPTH;
}

int perfc__jdec_init(perfc__jdec *d, const perfc_json_opts *opts,
                     perfc_arena *a) {
  memset(d, 0, sizeof *d);
  if (opts)
    d->o = *opts;
  if (d->o.max_depth == 0)
    d->o.max_depth = PERFC_DEFAULT_JSON_MAX_DEPTH;
  if (d->o.max_depth > PERFC_JSON_MAX_DEPTH_LIMIT)
    return perfc_error_set(PERFC_EINVAL, NULL, -1,
                           "json: max_depth %zu is above the limit %d",
                           d->o.max_depth, PERFC_JSON_MAX_DEPTH_LIMIT);
  d->a = a;
  /* A message field and its map or array can each add a level, plus the
   * wrappers of Any and Struct: twice the JSON depth and some margin. */
  d->cap = 2 * d->o.max_depth + 8;
  d->path = perfc_arena_alloc(a, d->cap * sizeof *d->path);
  if (!d->path)
    return perfc_error_set(PERFC_ENOMEM, NULL, -1, "json: out of memory");
  return 0;
}

static int push(perfc__jdec *d, const char *name, long index) {
  if (d->depth >= d->cap)
    return perfc_error_set(PERFC_ETOOBIG, NULL, -1,
                           "json: messages nested deeper than %zu levels",
                           d->o.max_depth);
  d->path[d->depth].name = name;
  d->path[d->depth].index = index;
  d->depth++;
  return 0;
}

static void pop(perfc__jdec *d) { d->depth--; }

int perfc__jdec_fail(perfc__jdec *d, int code, const char *fmt, ...) {
  char where[512];
  size_t w = 0;
  where[0] = '\0';
  for (size_t i = 0; i < d->depth && w < sizeof where - 1; i++) {
    int n;
    if (d->path[i].name)
      n = snprintf(where + w, sizeof where - w, "%s%s", w ? "." : "",
                   d->path[i].name);
    else
      n = snprintf(where + w, sizeof where - w, "[%ld]", d->path[i].index);
    if (n < 0)
      break;
    w += (size_t)n;
  }
  if (w >= sizeof where)
    w = sizeof where - 1;
  char why[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  return perfc_error_set(code, NULL, -1, "%s: %s%s%s",
                         d->what ? d->what : "json", where, w ? ": " : "",
                         why);
}

/* ---- descriptors -------------------------------------------------------- */

ProtobufCMessage *perfc__msg_new(perfc_arena *a,
                                 const ProtobufCMessageDescriptor *desc) {
  ProtobufCMessage *m = perfc_arena_alloc(a, desc->sizeof_message);
  if (m)
    protobuf_c_message_init(desc, m);
  return m;
}

void perfc__json_name(const char *proto_name, char *out, size_t cap) {
  size_t o = 0;
  int upper = 0;
  for (const char *p = proto_name; *p && o + 1 < cap; p++) {
    if (*p == '_') {
      upper = 1;
      continue;
    }
    char c = *p;
    if (upper && c >= 'a' && c <= 'z')
      c = (char)(c - 'a' + 'A');
    upper = 0;
    out[o++] = c;
  }
  out[o] = '\0';
}

const ProtobufCFieldDescriptor *
perfc__field_by_json_name(const ProtobufCMessageDescriptor *desc,
                          const char *name, size_t len) {
  char jn[256];
  for (unsigned i = 0; i < desc->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &desc->fields[i];
    if (strlen(f->name) == len && memcmp(f->name, name, len) == 0)
      return f;
  }
  for (unsigned i = 0; i < desc->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &desc->fields[i];
    perfc__json_name(f->name, jn, sizeof jn);
    if (strlen(jn) == len && memcmp(jn, name, len) == 0)
      return f;
  }
  return NULL;
}

bool perfc__field_is_map(const ProtobufCMessageDescriptor *parent,
                         const ProtobufCFieldDescriptor *f) {
  if (f->label != PROTOBUF_C_LABEL_REPEATED ||
      f->type != PROTOBUF_C_TYPE_MESSAGE || !f->descriptor)
    return false;
  const ProtobufCMessageDescriptor *e = f->descriptor;
  if (e->n_fields != 2 || e->fields[0].id != 1 || e->fields[1].id != 2 ||
      strcmp(e->fields[0].name, "key") != 0 ||
      strcmp(e->fields[1].name, "value") != 0)
    return false;
  /* protoc names the entry <CamelCaseField>Entry, nested in the parent. */
  size_t pl = strlen(parent->name);
  if (strncmp(e->name, parent->name, pl) != 0 || e->name[pl] != '.')
    return false;
  char camel[256];
  size_t o = 0;
  int upper = 1;
  for (const char *p = f->name; *p && o + 6 < sizeof camel; p++) {
    if (*p == '_') {
      upper = 1;
      continue;
    }
    char c = *p;
    if (upper && c >= 'a' && c <= 'z')
      c = (char)(c - 'a' + 'A');
    upper = 0;
    camel[o++] = c;
  }
  memcpy(camel + o, "Entry", 6);
  return strcmp(e->short_name, camel) == 0;
}

perfc__wkt perfc__wkt_of(const ProtobufCMessageDescriptor *desc) {
  const char *n = desc->name;
  if (strncmp(n, "google.protobuf.", 16) != 0)
    return PERFC__WKT_NONE;
  n += 16;
  static const struct {
    const char *name;
    perfc__wkt wkt;
  } table[] = {
      {"Any", PERFC__WKT_ANY},           {"Timestamp", PERFC__WKT_TIMESTAMP},
      {"Duration", PERFC__WKT_DURATION}, {"FieldMask", PERFC__WKT_FIELD_MASK},
      {"Struct", PERFC__WKT_STRUCT},     {"Value", PERFC__WKT_VALUE},
      {"ListValue", PERFC__WKT_LIST_VALUE}, {"Empty", PERFC__WKT_EMPTY},
      {"DoubleValue", PERFC__WKT_WRAPPER}, {"FloatValue", PERFC__WKT_WRAPPER},
      {"Int64Value", PERFC__WKT_WRAPPER},  {"UInt64Value", PERFC__WKT_WRAPPER},
      {"Int32Value", PERFC__WKT_WRAPPER},  {"UInt32Value", PERFC__WKT_WRAPPER},
      {"BoolValue", PERFC__WKT_WRAPPER},   {"StringValue", PERFC__WKT_WRAPPER},
      {"BytesValue", PERFC__WKT_WRAPPER},
  };
  for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
    if (strcmp(n, table[i].name) == 0)
      return table[i].wkt;
  return PERFC__WKT_NONE;
}

size_t perfc__field_size(const ProtobufCFieldDescriptor *f) {
  switch (f->type) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
  case PROTOBUF_C_TYPE_ENUM:
    return 4;
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
    return 8;
  case PROTOBUF_C_TYPE_FLOAT:
    return sizeof(float);
  case PROTOBUF_C_TYPE_DOUBLE:
    return sizeof(double);
  case PROTOBUF_C_TYPE_BOOL:
    return sizeof(protobuf_c_boolean);
  case PROTOBUF_C_TYPE_STRING:
    return sizeof(char *);
  case PROTOBUF_C_TYPE_BYTES:
    return sizeof(ProtobufCBinaryData);
  case PROTOBUF_C_TYPE_MESSAGE:
    return sizeof(ProtobufCMessage *);
  }
  return 0;
}

static bool has_flag(const ProtobufCFieldDescriptor *f) {
  return f->label == PROTOBUF_C_LABEL_OPTIONAL &&
         !(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
         f->type != PROTOBUF_C_TYPE_STRING &&
         f->type != PROTOBUF_C_TYPE_MESSAGE;
}

bool perfc__field_present(const ProtobufCMessage *msg,
                          const ProtobufCFieldDescriptor *f) {
  const char *base = (const char *)msg;
  const void *p = base + f->offset;
  if (f->label == PROTOBUF_C_LABEL_REPEATED)
    return *(const size_t *)(base + f->quantifier_offset) > 0;
  if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
    return *(const uint32_t *)(base + f->quantifier_offset) == f->id;
  if (has_flag(f))
    return *(const protobuf_c_boolean *)(base + f->quantifier_offset) != 0;
  switch (f->type) {
  case PROTOBUF_C_TYPE_MESSAGE:
    return *(ProtobufCMessage *const *)p != NULL;
  case PROTOBUF_C_TYPE_STRING: {
    const char *s = *(char *const *)p;
    if (f->label == PROTOBUF_C_LABEL_REQUIRED ||
        f->label == PROTOBUF_C_LABEL_OPTIONAL)
      return s != NULL && s != f->default_value;
    return s != NULL && s[0] != '\0';
  }
  case PROTOBUF_C_TYPE_BYTES:
    return ((const ProtobufCBinaryData *)p)->len > 0;
  default: {
    size_t n = perfc__field_size(f);
    static const uint8_t zero[8];
    if (f->label == PROTOBUF_C_LABEL_REQUIRED)
      return true;
    return memcmp(p, zero, n) != 0;
  }
  }
}

/* ---- scalars ------------------------------------------------------------ */

static const char *kind_name(const perfc__jnode *v) {
  static const char *const names[] = {"null",   "a bool",   "a number",
                                      "a string", "an object", "an array"};
  return names[v->type];
}

static int is_int_text(const char *s, size_t len) {
  size_t i = s[0] == '-';
  if (i == len)
    return 0;
  for (; i < len; i++)
    if (s[i] < '0' || s[i] > '9')
      return 0;
  return 1;
}

/* A number or a string holding one (the mapping accepts both for every
 * numeric type); exponents and integral fractions ("1e3", "2.0") too. */
static int read_int(perfc__jdec *d, const perfc__jnode *v, int64_t min,
                    int64_t max, uint64_t umax, int is_unsigned, void *out) {
  if (v->type != PERFC__J_NUMBER && v->type != PERFC__J_STRING)
    return perfc__jdec_fail(d, PERFC_EPARSE, "expected an integer, got %s",
                            kind_name(v));
  const char *s = v->s;
  if (v->len == 0)
    return perfc__jdec_fail(d, PERFC_EPARSE, "expected an integer, got \"\"");
  errno = 0;
  char *end;
  if (is_int_text(s, v->len)) {
    if (is_unsigned) {
      if (s[0] == '-' && strspn(s + 1, "0") != v->len - 1)
        return perfc__jdec_fail(d, PERFC_EPARSE,
                                "%s is negative; the field is unsigned", s);
      unsigned long long u = strtoull(s, &end, 10);
      if (errno == ERANGE || u > umax)
        return perfc__jdec_fail(d, PERFC_EPARSE,
                                "%s is out of range (0 to %llu)", s,
                                (unsigned long long)umax);
      if (umax > UINT32_MAX)
        *(uint64_t *)out = u;
      else
        *(uint32_t *)out = (uint32_t)u;
    } else {
      long long x = strtoll(s, &end, 10);
      if (errno == ERANGE || x < min || x > max)
        return perfc__jdec_fail(d, PERFC_EPARSE,
                                "%s is out of range (%lld to %lld)", s,
                                (long long)min, (long long)max);
      if (max > INT32_MAX)
        *(int64_t *)out = x;
      else
        *(int32_t *)out = (int32_t)x;
    }
    return 0;
  }
  double x = strtod(s, &end);
  if (end != s + v->len || !isfinite(x) || x != floor(x))
    return perfc__jdec_fail(d, PERFC_EPARSE, "\"%s\" is not an integer", s);
  if (is_unsigned) {
    if (x < 0 || x > (double)umax || (umax == UINT64_MAX && x >= 18446744073709551616.0))
      return perfc__jdec_fail(d, PERFC_EPARSE, "%s is out of range", s);
    if (umax > UINT32_MAX)
      *(uint64_t *)out = (uint64_t)x;
    else
      *(uint32_t *)out = (uint32_t)x;
  } else {
    if (x < (double)min || x >= -(double)min)
      return perfc__jdec_fail(d, PERFC_EPARSE, "%s is out of range", s);
    if (x > (double)max)
      return perfc__jdec_fail(d, PERFC_EPARSE, "%s is out of range", s);
    if (max > INT32_MAX)
      *(int64_t *)out = (int64_t)x;
    else
      *(int32_t *)out = (int32_t)x;
  }
  return 0;
}

static int read_double(perfc__jdec *d, const perfc__jnode *v, int is_float,
                       void *out) {
  double x;
  if (v->type == PERFC__J_STRING && strcmp(v->s, "NaN") == 0) {
    x = NAN;
  } else if (v->type == PERFC__J_STRING && strcmp(v->s, "Infinity") == 0) {
    x = INFINITY;
  } else if (v->type == PERFC__J_STRING && strcmp(v->s, "-Infinity") == 0) {
    x = -INFINITY;
  } else if (v->type == PERFC__J_NUMBER || v->type == PERFC__J_STRING) {
    char *end;
    errno = 0;
    x = strtod(v->s, &end);
    if (v->len == 0 || end != v->s + v->len || !isfinite(x) ||
        v->s[0] == ' ' || v->s[0] == '+')
      return perfc__jdec_fail(d, PERFC_EPARSE,
                              "\"%s\" is not a number (or \"NaN\", "
                              "\"Infinity\", \"-Infinity\")",
                              v->s);
    if (is_float && (x > FLT_MAX || x < -FLT_MAX))
      return perfc__jdec_fail(d, PERFC_EPARSE, "%s is out of range for float",
                              v->s);
  } else {
    return perfc__jdec_fail(d, PERFC_EPARSE, "expected a number, got %s",
                            kind_name(v));
  }
  if (is_float)
    *(float *)out = (float)x;
  else
    *(double *)out = x;
  return 0;
}

static const int8_t b64[256] = {
    ['A'] = 1,  ['B'] = 2,  ['C'] = 3,  ['D'] = 4,  ['E'] = 5,  ['F'] = 6,
    ['G'] = 7,  ['H'] = 8,  ['I'] = 9,  ['J'] = 10, ['K'] = 11, ['L'] = 12,
    ['M'] = 13, ['N'] = 14, ['O'] = 15, ['P'] = 16, ['Q'] = 17, ['R'] = 18,
    ['S'] = 19, ['T'] = 20, ['U'] = 21, ['V'] = 22, ['W'] = 23, ['X'] = 24,
    ['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28, ['c'] = 29, ['d'] = 30,
    ['e'] = 31, ['f'] = 32, ['g'] = 33, ['h'] = 34, ['i'] = 35, ['j'] = 36,
    ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40, ['o'] = 41, ['p'] = 42,
    ['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48,
    ['w'] = 49, ['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54,
    ['2'] = 55, ['3'] = 56, ['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60,
    ['8'] = 61, ['9'] = 62, ['+'] = 63, ['/'] = 64, ['-'] = 63, ['_'] = 64,
};

int perfc__base64_decode(const char *s, size_t len, uint8_t *out,
                         size_t *out_len) {
  while (len && s[len - 1] == '=')
    len--;
  if (len % 4 == 1)
    return -1;
  size_t o = 0;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < len; i++) {
    int v = b64[(unsigned char)s[i]];
    if (!v)
      return -1;
    acc = (acc << 6) | (uint32_t)(v - 1);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (uint8_t)(acc >> bits);
    }
  }
  *out_len = o;
  return 0;
}

/* Decodes one value of a non-repeated kind into `dst` (one element). */
static int decode_value(perfc__jdec *d, const ProtobufCFieldDescriptor *f,
                        const perfc__jnode *v, void *dst) {
  switch (f->type) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
    return read_int(d, v, INT32_MIN, INT32_MAX, 0, 0, dst);
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
    return read_int(d, v, 0, 0, UINT32_MAX, 1, dst);
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
    return read_int(d, v, INT64_MIN, INT64_MAX, 0, 0, dst);
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
    return read_int(d, v, 0, 0, UINT64_MAX, 1, dst);
  case PROTOBUF_C_TYPE_FLOAT:
    return read_double(d, v, 1, dst);
  case PROTOBUF_C_TYPE_DOUBLE:
    return read_double(d, v, 0, dst);
  case PROTOBUF_C_TYPE_BOOL:
    if (v->type != PERFC__J_BOOL)
      return perfc__jdec_fail(d, PERFC_EPARSE,
                              "expected true or false, got %s", kind_name(v));
    *(protobuf_c_boolean *)dst = v->b != 0;
    return 0;
  case PROTOBUF_C_TYPE_ENUM: {
    const ProtobufCEnumDescriptor *ed = f->descriptor;
    if (v->type == PERFC__J_NULL &&
        strcmp(ed->name, "google.protobuf.NullValue") == 0) {
      *(int32_t *)dst = 0;
      return 0;
    }
    if (v->type == PERFC__J_STRING) {
      const ProtobufCEnumValue *ev =
          protobuf_c_enum_descriptor_get_value_by_name(ed, v->s);
      if (ev) {
        *(int32_t *)dst = ev->value;
        return 0;
      }
      if (!is_int_text(v->s, v->len))
        return perfc__jdec_fail(d, PERFC_EPARSE, "\"%s\" is not a value of %s",
                                v->s, ed->name);
    } else if (v->type != PERFC__J_NUMBER) {
      return perfc__jdec_fail(d, PERFC_EPARSE,
                              "expected an enum name or number, got %s",
                              kind_name(v));
    }
    /* proto3 enums are open: any int32 is kept, as the binary form does. */
    return read_int(d, v, INT32_MIN, INT32_MAX, 0, 0, dst);
  }
  case PROTOBUF_C_TYPE_STRING:
    if (v->type != PERFC__J_STRING)
      return perfc__jdec_fail(d, PERFC_EPARSE, "expected a string, got %s",
                              kind_name(v));
    *(const char **)dst = v->s; /* the tree's copy lives in the arena */
    return 0;
  case PROTOBUF_C_TYPE_BYTES: {
    if (v->type != PERFC__J_STRING)
      return perfc__jdec_fail(d, PERFC_EPARSE,
                              "expected a base64 string, got %s",
                              kind_name(v));
    uint8_t *buf = perfc_arena_alloc(d->a, v->len * 3 / 4 + 3);
    size_t n = 0;
    if (!buf)
      return perfc__jdec_fail(d, PERFC_ENOMEM, "out of memory");
    if (perfc__base64_decode(v->s, v->len, buf, &n) != 0)
      return perfc__jdec_fail(d, PERFC_EPARSE,
                              "not base64 (standard or URL-safe alphabet)");
    ProtobufCBinaryData *b = dst;
    b->data = buf;
    b->len = n;
    return 0;
  }
  case PROTOBUF_C_TYPE_MESSAGE: {
    ProtobufCMessage *m = perfc__msg_new(d->a, f->descriptor);
    if (!m)
      return perfc__jdec_fail(d, PERFC_ENOMEM, "out of memory");
    int rc = perfc__jdec_message(d, m, v);
    if (rc)
      return rc;
    *(ProtobufCMessage **)dst = m;
    return 0;
  }
  }
  return perfc__jdec_fail(d, PERFC_EPARSE, "field type %d is not supported",
                          (int)f->type);
}

/* A map key is always a JSON string; it is read as the key field's type. */
static int decode_map_key(perfc__jdec *d, const ProtobufCFieldDescriptor *kf,
                          const char *key, size_t len, void *dst) {
  perfc__jnode k = {.type = PERFC__J_STRING, .s = key, .len = len};
  if (kf->type == PROTOBUF_C_TYPE_BOOL) {
    if (strcmp(key, "true") == 0 || strcmp(key, "false") == 0) {
      *(protobuf_c_boolean *)dst = key[0] == 't';
      return 0;
    }
    return perfc__jdec_fail(d, PERFC_EPARSE,
                            "map key \"%s\" is not true or false", key);
  }
  return decode_value(d, kf, &k, dst);
}

/* ---- fields ------------------------------------------------------------- */

static int decode_repeated(perfc__jdec *d, ProtobufCMessage *msg,
                           const ProtobufCFieldDescriptor *f,
                           const perfc__jnode *v) {
  char *base = (char *)msg;
  size_t es = perfc__field_size(f);
  int is_map = perfc__field_is_map(msg->descriptor, f);
  if (is_map ? v->type != PERFC__J_OBJECT : v->type != PERFC__J_ARRAY)
    return perfc__jdec_fail(d, PERFC_EPARSE, "expected %s, got %s",
                            is_map ? "an object (a map)" : "an array",
                            kind_name(v));
  void *arr = v->n ? perfc_arena_alloc(d->a, v->n * es) : NULL;
  if (v->n && !arr)
    return perfc__jdec_fail(d, PERFC_ENOMEM, "out of memory");
  size_t i = 0;
  for (const perfc__jnode *e = v->child; e; e = e->next, i++) {
    int rc = push(d, is_map ? e->key : NULL, (long)i);
    if (rc)
      return rc;
    void *slot = (char *)arr + i * es;
    if (is_map) {
      const ProtobufCMessageDescriptor *ed = f->descriptor;
      ProtobufCMessage *entry = perfc__msg_new(d->a, ed);
      if (!entry)
        return perfc__jdec_fail(d, PERFC_ENOMEM, "out of memory");
      const ProtobufCFieldDescriptor *kf = &ed->fields[0], *vf = &ed->fields[1];
      rc = decode_map_key(d, kf, e->key, e->key_len,
                          (char *)entry + kf->offset);
      if (!rc && e->type == PERFC__J_NULL &&
          !(vf->type == PROTOBUF_C_TYPE_MESSAGE &&
            perfc__wkt_of(vf->descriptor) == PERFC__WKT_VALUE))
        rc = perfc__jdec_fail(d, PERFC_EPARSE, "a map value cannot be null");
      if (!rc)
        rc = decode_value(d, vf, e, (char *)entry + vf->offset);
      if (!rc && has_flag(vf))
        *(protobuf_c_boolean *)((char *)entry + vf->quantifier_offset) = 1;
      *(ProtobufCMessage **)slot = entry;
    } else if (e->type == PERFC__J_NULL &&
               !(f->type == PROTOBUF_C_TYPE_MESSAGE &&
                 perfc__wkt_of(f->descriptor) == PERFC__WKT_VALUE)) {
      rc = perfc__jdec_fail(d, PERFC_EPARSE,
                            "null is not a value of a repeated field");
    } else {
      rc = decode_value(d, f, e, slot);
    }
    if (rc)
      return rc;
    pop(d);
  }
  *(size_t *)(base + f->quantifier_offset) = v->n;
  *(void **)(base + f->offset) = arr;
  return 0;
}

/* Resets a singular field to its default (JSON null). */
static void clear_field(ProtobufCMessage *msg,
                        const ProtobufCFieldDescriptor *f) {
  char *base = (char *)msg;
  if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
    uint32_t *c = (uint32_t *)(base + f->quantifier_offset);
    if (*c == f->id)
      *c = 0;
    return;
  }
  if (has_flag(f))
    *(protobuf_c_boolean *)(base + f->quantifier_offset) = 0;
  if (f->type == PROTOBUF_C_TYPE_STRING)
    *(const char **)(base + f->offset) =
        f->default_value ? *(char *const *)f->default_value : "";
  else if (f->type == PROTOBUF_C_TYPE_MESSAGE)
    *(ProtobufCMessage **)(base + f->offset) = NULL;
  else if (f->default_value)
    memcpy(base + f->offset, f->default_value, perfc__field_size(f));
  else
    memset(base + f->offset, 0, perfc__field_size(f));
}

int perfc__jdec_field(perfc__jdec *d, ProtobufCMessage *msg,
                      const ProtobufCFieldDescriptor *f,
                      const perfc__jnode *v) {
  char *base = (char *)msg;
  if (f->label == PROTOBUF_C_LABEL_REPEATED) {
    if (v->type == PERFC__J_NULL) {
      *(size_t *)(base + f->quantifier_offset) = 0;
      return 0;
    }
    return decode_repeated(d, msg, f, v);
  }
  /* null is the default value, except for google.protobuf.Value (whose
   * null is NullValue) and the NullValue enum itself. */
  int value_field = f->type == PROTOBUF_C_TYPE_MESSAGE &&
                    perfc__wkt_of(f->descriptor) == PERFC__WKT_VALUE;
  int null_enum = f->type == PROTOBUF_C_TYPE_ENUM &&
                  strcmp(((const ProtobufCEnumDescriptor *)f->descriptor)->name,
                         "google.protobuf.NullValue") == 0;
  if (v->type == PERFC__J_NULL && !value_field && !null_enum) {
    clear_field(msg, f);
    return 0;
  }
  int rc = decode_value(d, f, v, base + f->offset);
  if (rc)
    return rc;
  if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
    *(uint32_t *)(base + f->quantifier_offset) = f->id;
  else if (has_flag(f))
    *(protobuf_c_boolean *)(base + f->quantifier_offset) = 1;
  return 0;
}

int perfc__jdec_append(perfc__jdec *d, ProtobufCMessage *msg,
                       const ProtobufCFieldDescriptor *f,
                       const perfc__jnode *v) {
  char *base = (char *)msg;
  size_t es = perfc__field_size(f);
  size_t n = *(size_t *)(base + f->quantifier_offset);
  char *old = *(char **)(base + f->offset);
  char *arr = perfc_arena_alloc(d->a, (n + 1) * es);
  if (!arr)
    return perfc__jdec_fail(d, PERFC_ENOMEM, "out of memory");
  if (n)
    memcpy(arr, old, n * es);
  int rc = decode_value(d, f, v, arr + n * es);
  if (rc)
    return rc;
  *(char **)(base + f->offset) = arr;
  *(size_t *)(base + f->quantifier_offset) = n + 1;
  return 0;
}

/* ---- messages ----------------------------------------------------------- */

static int decode_members(perfc__jdec *d, ProtobufCMessage *msg,
                          const perfc__jnode *v, int skip_type) {
  const ProtobufCMessageDescriptor *desc = msg->descriptor;
  if (v->type != PERFC__J_OBJECT)
    return perfc__jdec_fail(d, PERFC_EPARSE, "expected an object (%s), got %s",
                            desc->name, kind_name(v));
  /* The oneof each member set, to refuse two members of one oneof. */
  const ProtobufCFieldDescriptor **set = NULL;
  size_t n_set = 0;
  for (const perfc__jnode *m = v->child; m; m = m->next) {
    if (skip_type && strcmp(m->key, "@type") == 0)
      continue;
    const ProtobufCFieldDescriptor *f =
        perfc__field_by_json_name(desc, m->key, m->key_len);
    int rc = push(d, m->key, 0);
    if (rc)
      return rc;
    if (!f) {
      if (d->o.reject_unknown_fields)
        return perfc__jdec_fail(d, PERFC_EPARSE, "%s has no field \"%s\"",
                                desc->name, m->key);
      pop(d);
      continue;
    }
    if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) && m->type != PERFC__J_NULL) {
      for (size_t i = 0; i < n_set; i++)
        if (set[i]->quantifier_offset == f->quantifier_offset)
          return perfc__jdec_fail(d, PERFC_EPARSE,
                                  "fields \"%s\" and \"%s\" are members of "
                                  "one oneof; set at most one",
                                  set[i]->name, f->name);
      if (!set && !(set = perfc_arena_alloc(d->a, v->n * sizeof *set)))
        return perfc__jdec_fail(d, PERFC_ENOMEM, "out of memory");
      set[n_set++] = f;
    }
    rc = perfc__jdec_field(d, msg, f, m);
    if (rc)
      return rc;
    pop(d);
  }
  return 0;
}

/* "type.googleapis.com/pkg.Msg" -> the message type, through the resolver
 * or the well-known types. */
const ProtobufCMessageDescriptor *perfc__json_resolve(const perfc__jdec *d,
                                                     const char *url) {
  const char *slash = strrchr(url, '/');
  const char *name = slash ? slash + 1 : url;
  static const ProtobufCMessageDescriptor *const wkts[] = {
      &google__protobuf__any__descriptor,
      &google__protobuf__timestamp__descriptor,
      &google__protobuf__duration__descriptor,
      &google__protobuf__field_mask__descriptor,
      &google__protobuf__struct__descriptor,
      &google__protobuf__value__descriptor,
      &google__protobuf__list_value__descriptor,
      &google__protobuf__empty__descriptor,
      &google__protobuf__double_value__descriptor,
      &google__protobuf__float_value__descriptor,
      &google__protobuf__int64_value__descriptor,
      &google__protobuf__uint64_value__descriptor,
      &google__protobuf__int32_value__descriptor,
      &google__protobuf__uint32_value__descriptor,
      &google__protobuf__bool_value__descriptor,
      &google__protobuf__string_value__descriptor,
      &google__protobuf__bytes_value__descriptor,
  };
  if (d->o.resolve_type) {
    const ProtobufCMessageDescriptor *r =
        d->o.resolve_type(name, d->o.resolve_user_data);
    if (r)
      return r;
  }
  for (size_t i = 0; i < sizeof wkts / sizeof wkts[0]; i++)
    if (strcmp(wkts[i]->name, name) == 0)
      return wkts[i];
  return NULL;
}

static int decode_any(perfc__jdec *d, ProtobufCMessage *msg,
                      const perfc__jnode *v) {
  if (v->type != PERFC__J_OBJECT)
    return perfc__jdec_fail(d, PERFC_EPARSE,
                            "expected an object with \"@type\", got %s",
                            kind_name(v));
  if (v->n == 0)
    return 0; /* {} is an empty Any */
  const perfc__jnode *t = NULL;
  for (const perfc__jnode *m = v->child; m; m = m->next)
    if (strcmp(m->key, "@type") == 0)
      t = m;
  if (!t || t->type != PERFC__J_STRING)
    return perfc__jdec_fail(d, PERFC_EPARSE,
                            "google.protobuf.Any needs a string \"@type\"");
  const ProtobufCMessageDescriptor *inner_desc = perfc__json_resolve(d, t->s);
  if (!inner_desc)
    return perfc__jdec_fail(d, PERFC_EPARSE,
                            "google.protobuf.Any: type \"%s\" is not known "
                            "to this server",
                            t->s);
  ProtobufCMessage *inner = perfc__msg_new(d->a, inner_desc);
  if (!inner)
    return perfc__jdec_fail(d, PERFC_ENOMEM, "out of memory");
  int rc;
  perfc__wkt w = perfc__wkt_of(inner_desc);
  if (w != PERFC__WKT_NONE && w != PERFC__WKT_ANY && w != PERFC__WKT_EMPTY) {
    /* A well-known type with a special form sits under "value". */
    const perfc__jnode *val = NULL;
    for (const perfc__jnode *m = v->child; m; m = m->next) {
      if (strcmp(m->key, "value") == 0)
        val = m;
      else if (strcmp(m->key, "@type") != 0)
        return perfc__jdec_fail(d, PERFC_EPARSE,
                                "google.protobuf.Any of %s: unexpected "
                                "member \"%s\" (the value goes in \"value\")",
                                inner_desc->name, m->key);
    }
    if (!val)
      return perfc__jdec_fail(d, PERFC_EPARSE,
                              "google.protobuf.Any of %s needs \"value\"",
                              inner_desc->name);
    rc = push(d, "value", 0);
    if (!rc)
      rc = perfc__jdec_message(d, inner, val);
    if (!rc)
      pop(d);
  } else {
    rc = decode_members(d, inner, v, 1);
  }
  if (rc)
    return rc;
  size_t n = protobuf_c_message_get_packed_size(inner);
  uint8_t *buf = perfc_arena_alloc(d->a, n ? n : 1);
  if (!buf)
    return perfc__jdec_fail(d, PERFC_ENOMEM, "out of memory");
  protobuf_c_message_pack(inner, buf);
  Google__Protobuf__Any *any = (Google__Protobuf__Any *)msg;
  any->type_url = (char *)t->s;
  any->value.data = buf;
  any->value.len = n;
  return 0;
}

static int expect_string(perfc__jdec *d, const perfc__jnode *v,
                         const char *what) {
  if (v->type != PERFC__J_STRING)
    return perfc__jdec_fail(d, PERFC_EPARSE, "expected %s string, got %s",
                            what, kind_name(v));
  return 0;
}

/* days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
 * days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned dd) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = (unsigned)(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + dd - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (int64_t)doe - 719468;
}

static int digits(const char *s, int n, int *out) {
  int v = 0;
  for (int i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return 0;
}

/* Reads ".f{1,9}" at *p; nanos scaled to 9 digits. */
static int fraction(const char **p, const char *end, int32_t *nanos) {
  *nanos = 0;
  if (*p >= end || **p != '.')
    return 0;
  (*p)++;
  int n = 0;
  int32_t v = 0;
  while (*p < end && **p >= '0' && **p <= '9') {
    if (++n > 9)
      return -1;
    v = v * 10 + (**p - '0');
    (*p)++;
  }
  if (n == 0)
    return -1;
  for (int i = n; i < 9; i++)
    v *= 10;
  *nanos = v;
  return 0;
}

int perfc__parse_timestamp(const char *s, size_t len, int64_t *seconds,
                           int32_t *nanos) {
  /* 1972-01-01T10:00:20.021-05:00 */
  int Y, M, D, h, mi, se;
  const char *end = s + len;
  if (len < 20 || digits(s, 4, &Y) || s[4] != '-' || digits(s + 5, 2, &M) ||
      s[7] != '-' || digits(s + 8, 2, &D) || (s[10] != 'T' && s[10] != 't') ||
      digits(s + 11, 2, &h) || s[13] != ':' || digits(s + 14, 2, &mi) ||
      s[16] != ':' || digits(s + 17, 2, &se))
    return -1;
  static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  int leap = (Y % 4 == 0 && Y % 100 != 0) || Y % 400 == 0;
  if (Y < 1 || M < 1 || M > 12 || D < 1 || D > mdays[M - 1] ||
      (M == 2 && D == 29 && !leap) || h > 23 || mi > 59 || se > 59)
    return -1;
  const char *p = s + 19;
  if (fraction(&p, end, nanos) != 0)
    return -1;
  int64_t off = 0;
  if (p < end && (*p == 'Z' || *p == 'z')) {
    p++;
  } else if (p + 6 == end && (*p == '+' || *p == '-') && p[3] == ':') {
    int oh, om;
    if (digits(p + 1, 2, &oh) || digits(p + 4, 2, &om) || oh > 23 || om > 59)
      return -1;
    off = (oh * 3600 + om * 60) * (*p == '-' ? -1 : 1);
    p += 6;
  } else {
    return -1;
  }
  if (p != end)
    return -1;
  int64_t t = days_from_civil(Y, (unsigned)M, (unsigned)D) * 86400 +
              h * 3600 + mi * 60 + se - off;
  if (t < PERFC__TS_MIN || t > PERFC__TS_MAX)
    return -1;
  *seconds = t;
  return 0;
}

int perfc__parse_duration(const char *s, size_t len, int64_t *seconds,
                          int32_t *nanos) {
  const char *p = s, *end = s + len;
  int neg = 0;
  if (p < end && *p == '-')
    neg = 1, p++;
  const char *ds = p;
  int64_t sec = 0;
  while (p < end && *p >= '0' && *p <= '9') {
    if (sec > PERFC__DUR_MAX)
      return -1;
    sec = sec * 10 + (*p - '0');
    p++;
  }
  if (p == ds || fraction(&p, end, nanos) != 0 || p + 1 != end || *p != 's' ||
      sec > PERFC__DUR_MAX)
    return -1;
  *seconds = neg ? -sec : sec;
  if (neg)
    *nanos = -*nanos;
  return 0;
}

int perfc__jdec_message(perfc__jdec *d, ProtobufCMessage *msg,
                        const perfc__jnode *v) {
  const ProtobufCMessageDescriptor *desc = msg->descriptor;
  if (d->depth + 2 >= d->cap)
    return perfc__jdec_fail(d, PERFC_ETOOBIG,
                            "messages nested deeper than %zu levels",
                            d->o.max_depth);
  switch (perfc__wkt_of(desc)) {
  case PERFC__WKT_ANY:
    return decode_any(d, msg, v);
  case PERFC__WKT_TIMESTAMP: {
    Google__Protobuf__Timestamp *ts = (Google__Protobuf__Timestamp *)msg;
    if (expect_string(d, v, "an RFC 3339"))
      return PERFC_EPARSE;
    if (perfc__parse_timestamp(v->s, v->len, &ts->seconds, &ts->nanos) != 0)
      return perfc__jdec_fail(d, PERFC_EPARSE,
                              "\"%s\" is not an RFC 3339 timestamp between "
                              "0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z "
                              "(such as \"1972-01-01T10:00:20.021Z\")",
                              v->s);
    return 0;
  }
  case PERFC__WKT_DURATION: {
    Google__Protobuf__Duration *du = (Google__Protobuf__Duration *)msg;
    if (expect_string(d, v, "a duration"))
      return PERFC_EPARSE;
    if (perfc__parse_duration(v->s, v->len, &du->seconds, &du->nanos) != 0)
      return perfc__jdec_fail(d, PERFC_EPARSE,
                              "\"%s\" is not a duration: seconds with up to "
                              "9 fractional digits and an 's', such as "
                              "\"1.5s\" or \"-0.000001s\", within 10000 years",
                              v->s);
    return 0;
  }
  case PERFC__WKT_FIELD_MASK: {
    Google__Protobuf__FieldMask *fm = (Google__Protobuf__FieldMask *)msg;
    if (expect_string(d, v, "a field mask"))
      return PERFC_EPARSE;
    size_t n = v->len ? 1 : 0;
    for (size_t i = 0; i < v->len; i++)
      n += v->s[i] == ',';
    fm->n_paths = n;
    fm->paths = n ? perfc_arena_alloc(d->a, n * sizeof *fm->paths) : NULL;
    if (n && !fm->paths)
      return perfc__jdec_fail(d, PERFC_ENOMEM, "out of memory");
    const char *p = v->s;
    for (size_t k = 0; k < n; k++) {
      size_t l = strcspn(p, ",");
      /* lowerCamelCase paths back to proto names: "fooBar.baz" ->
       * "foo_bar.baz". An underscore in the JSON form cannot round-trip. */
      char *out = perfc_arena_alloc(d->a, 2 * l + 1), *o = out;
      if (!out)
        return perfc__jdec_fail(d, PERFC_ENOMEM, "out of memory");
      for (size_t i = 0; i < l; i++) {
        char c = p[i];
        if (c == '_')
          return perfc__jdec_fail(d, PERFC_EPARSE,
                                  "field mask path \"%.*s\" must be "
                                  "lowerCamelCase (no '_')",
                                  (int)l, p);
        if (c >= 'A' && c <= 'Z') {
          *o++ = '_';
          c = (char)(c - 'A' + 'a');
        }
        *o++ = c;
      }
      *o = '\0';
      if (l == 0)
        return perfc__jdec_fail(d, PERFC_EPARSE,
                                "field mask \"%s\" has an empty path", v->s);
      fm->paths[k] = out;
      p += l + (p[l] == ',');
    }
    return 0;
  }
  case PERFC__WKT_WRAPPER: {
    int rc = push(d, "value", 0);
    if (!rc)
      rc = perfc__jdec_field(d, msg, &desc->fields[0], v);
    if (!rc)
      pop(d);
    return rc;
  }
  case PERFC__WKT_STRUCT:
    if (v->type != PERFC__J_OBJECT)
      return perfc__jdec_fail(d, PERFC_EPARSE,
                              "expected an object (google.protobuf.Struct), "
                              "got %s",
                              kind_name(v));
    return decode_repeated(d, msg, &desc->fields[0], v);
  case PERFC__WKT_LIST_VALUE:
    if (v->type != PERFC__J_ARRAY)
      return perfc__jdec_fail(d, PERFC_EPARSE,
                              "expected an array (google.protobuf.ListValue), "
                              "got %s",
                              kind_name(v));
    return decode_repeated(d, msg, &desc->fields[0], v);
  case PERFC__WKT_VALUE: {
    Google__Protobuf__Value *val = (Google__Protobuf__Value *)msg;
    switch (v->type) {
    case PERFC__J_NULL:
      val->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE;
      val->null_value = GOOGLE__PROTOBUF__NULL_VALUE__NULL_VALUE;
      return 0;
    case PERFC__J_BOOL:
      val->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE;
      val->bool_value = v->b != 0;
      return 0;
    case PERFC__J_NUMBER:
      val->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
      return read_double(d, v, 0, &val->number_value);
    case PERFC__J_STRING:
      val->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
      val->string_value = (char *)v->s;
      return 0;
    case PERFC__J_OBJECT: {
      ProtobufCMessage *s =
          perfc__msg_new(d->a, &google__protobuf__struct__descriptor);
      if (!s)
        return perfc__jdec_fail(d, PERFC_ENOMEM, "out of memory");
      int rc = perfc__jdec_message(d, s, v);
      val->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
      val->struct_value = (Google__Protobuf__Struct *)s;
      return rc;
    }
    case PERFC__J_ARRAY: {
      ProtobufCMessage *l =
          perfc__msg_new(d->a, &google__protobuf__list_value__descriptor);
      if (!l)
        return perfc__jdec_fail(d, PERFC_ENOMEM, "out of memory");
      int rc = perfc__jdec_message(d, l, v);
      val->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
      val->list_value = (Google__Protobuf__ListValue *)l;
      return rc;
    }
    }
    return 0;
  }
  case PERFC__WKT_EMPTY:
  case PERFC__WKT_NONE:
    break;
  }
  return decode_members(d, msg, v, 0);
}

/* ---- entry points ------------------------------------------------------- */

int perfc_json_decode_into(ProtobufCMessage *msg, const char *json, size_t len,
                           const perfc_json_opts *opts, perfc_arena *arena) {
  if (!msg || (!json && len) || !arena)
    return perfc_error_set(PERFC_EINVAL, NULL, -1,
                           "perfc_json_decode: NULL argument");
  perfc__jdec d;
  int rc = perfc__jdec_init(&d, opts, arena);
  if (rc)
    return rc;
  perfc__jnode *root;
  rc = perfc__json_parse(arena, json ? json : "", len, d.o.max_depth, &root);
  if (rc)
    return rc;
  return perfc__jdec_message(&d, msg, root);
}

int perfc_json_decode(const ProtobufCMessageDescriptor *desc, const char *json,
                      size_t len, const perfc_json_opts *opts,
                      perfc_arena *arena, ProtobufCMessage **out) {
  if (!desc || !out || !arena)
    return perfc_error_set(PERFC_EINVAL, NULL, -1,
                           "perfc_json_decode: NULL argument");
  ProtobufCMessage *m = perfc__msg_new(arena, desc);
  if (!m)
    return perfc_error_set(PERFC_ENOMEM, NULL, -1, "json: out of memory");
  int rc = perfc_json_decode_into(m, json, len, opts, arena);
  if (rc == 0)
    *out = m;
  return rc;
}
