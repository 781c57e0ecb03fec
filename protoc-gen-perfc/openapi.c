/*
 * openapi.c — an OpenAPI 3.0.3 document per .proto file, from the routes
 * http.c builds and the messages' descriptors and comments.
 *
 * Room: protoc-gen-perfc (the generator). Describes what libperfc-gateway
 * does, so every rule here mirrors runtime/src/gateway: field names as
 * perfc__json_name() writes them (the proto name with '_' dropped and the
 * next letter capitalised; a custom json_name is ignored there, so here
 * too), the value forms of json_encode.c, the query parameters bind.c
 * accepts, the status table of status.c. docs/http-json.md, "OpenAPI",
 * says why each choice was made.
 *
 * Why 3.0.3 and not 3.1: the tools people feed these documents to
 * (openapi-generator, Swagger UI, most client generators and gateways)
 * read 3.0 fully and 3.1 partly; what the proto3 JSON mapping needs
 * (nullable wrappers, int64 as strings with a format) is plain 3.0.
 */
#include "openapi.h"

#include "buf.h"
#include "http.h"

#include "perfc/common.h"
#include "perfc/http_route.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef Google__Protobuf__Compiler__CodeGeneratorRequest gen_request;
typedef Google__Protobuf__FileDescriptorProto file_desc;
typedef Google__Protobuf__DescriptorProto msg_desc;
typedef Google__Protobuf__EnumDescriptorProto enum_desc;
typedef Google__Protobuf__ServiceDescriptorProto svc_desc;
typedef Google__Protobuf__MethodDescriptorProto method_desc;
typedef Google__Protobuf__FieldDescriptorProto field_desc;

#define T(x) GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_##x
#define REPEATED GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_REPEATED

/* ---- a small JSON tree: objects keep their keys in insertion order ----- */

enum { J_OBJ, J_ARR, J_STR, J_RAW };

typedef struct jv {
  int kind;
  char *s; /* J_STR: the text; J_RAW: a number, true, false or null */
  char **keys;
  struct jv **vals;
  size_t n;
} jv;

static jv *j_new(int kind, const char *s) {
  jv *v = perfc__xcalloc(1, sizeof *v);
  v->kind = kind;
  v->s = s ? perfc__xstrdup(s) : NULL;
  return v;
}
static jv *j_obj(void) { return j_new(J_OBJ, NULL); }
static jv *j_arr(void) { return j_new(J_ARR, NULL); }
static jv *j_str(const char *s) { return j_new(J_STR, s); }
static jv *j_raw(const char *s) { return j_new(J_RAW, s); }

static void j_free(jv *v) {
  if (!v)
    return;
  for (size_t i = 0; i < v->n; i++) {
    if (v->keys)
      free(v->keys[i]);
    j_free(v->vals[i]);
  }
  free(v->keys);
  free(v->vals);
  free(v->s);
  free(v);
}

static jv *j_get(const jv *o, const char *key) {
  for (size_t i = 0; o && i < o->n; i++)
    if (strcmp(o->keys[i], key) == 0)
      return o->vals[i];
  return NULL;
}

/* Sets obj[key] (replacing a value already there); returns val. */
static jv *j_set(jv *o, const char *key, jv *val) {
  for (size_t i = 0; i < o->n; i++)
    if (strcmp(o->keys[i], key) == 0) {
      j_free(o->vals[i]);
      o->vals[i] = val;
      return val;
    }
  o->keys = perfc__xrealloc(o->keys, (o->n + 1) * sizeof *o->keys);
  o->vals = perfc__xrealloc(o->vals, (o->n + 1) * sizeof *o->vals);
  o->keys[o->n] = perfc__xstrdup(key);
  o->vals[o->n++] = val;
  return val;
}

static jv *j_push(jv *a, jv *val) {
  a->vals = perfc__xrealloc(a->vals, (a->n + 1) * sizeof *a->vals);
  a->vals[a->n++] = val;
  return val;
}

static void j_set_str(jv *o, const char *key, const char *s) {
  j_set(o, key, j_str(s));
}

static void put_jstr(perfc__buf *b, const char *s) {
  perfc__buf_putc(b, '"');
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\')
      perfc__buf_printf(b, "\\%c", *p);
    else if (*p == '\n')
      perfc__buf_puts(b, "\\n");
    else if (*p == '\t')
      perfc__buf_puts(b, "\\t");
    else if (*p < 0x20)
      perfc__buf_printf(b, "\\u%04x", *p);
    else
      perfc__buf_putc(b, (char)*p);
  }
  perfc__buf_putc(b, '"');
}

static void j_write(perfc__buf *b, const jv *v, int ind) {
  switch (v->kind) {
  case J_STR:
    put_jstr(b, v->s);
    return;
  case J_RAW:
    perfc__buf_puts(b, v->s);
    return;
  default:
    break;
  }
  int obj = v->kind == J_OBJ;
  if (v->n == 0) {
    perfc__buf_puts(b, obj ? "{}" : "[]");
    return;
  }
  perfc__buf_putc(b, obj ? '{' : '[');
  for (size_t i = 0; i < v->n; i++) {
    perfc__buf_printf(b, "%s\n%*s", i ? "," : "", ind + 2, "");
    if (obj) {
      put_jstr(b, v->keys[i]);
      perfc__buf_puts(b, ": ");
    }
    j_write(b, v->vals[i], ind + 2);
  }
  perfc__buf_printf(b, "\n%*s%c", ind, "", obj ? '}' : ']');
}

/* Sorts an object's keys (bytewise), so the output does not depend on the
 * order types were reached in. */
static void j_sort(jv *o) {
  for (size_t i = 1; i < o->n; i++)
    for (size_t j = i; j > 0 && strcmp(o->keys[j - 1], o->keys[j]) > 0; j--) {
      char *k = o->keys[j];
      jv *v = o->vals[j];
      o->keys[j] = o->keys[j - 1], o->vals[j] = o->vals[j - 1];
      o->keys[j - 1] = k, o->vals[j - 1] = v;
    }
}

/* ---- names and comments --------------------------------------------------- */

/* The gateway's JSON name of a proto field (json_decode.c,
 * perfc__json_name): every '_' dropped, the letter after it upper-cased.
 * A JSON name therefore never holds '_', which the synthetic parameter
 * names below rely on. */
static char *json_name(const char *proto) {
  perfc__buf b = {0};
  int upper = 0;
  for (const char *p = proto; *p; p++) {
    if (*p == '_') {
      upper = 1;
      continue;
    }
    char c = *p;
    if (upper && c >= 'a' && c <= 'z')
      c = (char)(c - 'a' + 'A');
    upper = 0;
    perfc__buf_putc(&b, c);
  }
  return perfc__buf_take(&b);
}

/* "user.create_time" -> "user.createTime". */
static char *json_path(const char *proto_path) {
  perfc__buf b = {0};
  char *copy = perfc__xstrdup(proto_path);
  for (char *tok = copy, *dot; tok; tok = dot ? dot + 1 : NULL) {
    dot = strchr(tok, '.');
    if (dot)
      *dot = '\0';
    char *j = json_name(tok);
    perfc__buf_printf(&b, "%s%s", b.len ? "." : "", j);
    free(j);
  }
  free(copy);
  return perfc__buf_take(&b);
}

/* A type found by its ".pkg.Name": its file, and its path in the file's
 * SourceCodeInfo (4,i[,3,k...] for messages, 5,i or ...,4,k for enums). */
typedef struct found {
  const file_desc *file;
  const msg_desc *msg;
  const enum_desc *en;
  int32_t path[64];
  size_t n_path;
} found;

static int find_in(const char *prefix, msg_desc *const *msgs, size_t n_msgs,
                   enum_desc *const *enums, size_t n_enums, int32_t msg_tag,
                   int32_t enum_tag, const char *want, found *out,
                   size_t depth) {
  if (depth + 2 > sizeof out->path / sizeof out->path[0])
    return 0;
  for (size_t i = 0; i < n_enums; i++) {
    char *full = perfc__xasprintf("%s.%s", prefix, enums[i]->name);
    int hit = strcmp(full, want) == 0;
    free(full);
    if (hit) {
      out->en = enums[i];
      out->path[depth] = enum_tag, out->path[depth + 1] = (int32_t)i;
      out->n_path = depth + 2;
      return 1;
    }
  }
  for (size_t i = 0; i < n_msgs; i++) {
    char *full = perfc__xasprintf("%s.%s", prefix, msgs[i]->name);
    size_t fl = strlen(full);
    out->path[depth] = msg_tag, out->path[depth + 1] = (int32_t)i;
    int hit = 0;
    if (strcmp(full, want) == 0) {
      out->msg = msgs[i];
      out->n_path = depth + 2;
      hit = 1;
    } else if (strncmp(full, want, fl) == 0 && want[fl] == '.') {
      hit = find_in(full, msgs[i]->nested_type, msgs[i]->n_nested_type,
                    msgs[i]->enum_type, msgs[i]->n_enum_type, 3, 4, want, out,
                    depth + 2);
    }
    free(full);
    if (hit)
      return 1;
  }
  return 0;
}

static int find_type(const gen_request *req, const char *type_name,
                     found *out) {
  memset(out, 0, sizeof *out);
  for (size_t i = 0; type_name && i < req->n_proto_file; i++) {
    const file_desc *f = req->proto_file[i];
    char *prefix = f->package && f->package[0]
                       ? perfc__xasprintf(".%s", f->package)
                       : perfc__xstrdup("");
    int hit = find_in(prefix, f->message_type, f->n_message_type, f->enum_type,
                      f->n_enum_type, 4, 5, type_name, out, 0);
    free(prefix);
    if (hit) {
      out->file = f;
      return 1;
    }
  }
  return 0;
}

/* The comment protoc recorded for `path` in `f` (leading, else trailing),
 * with the one space after each "//" removed and the trailing newline
 * dropped. NULL when there is none (imported files usually carry no
 * SourceCodeInfo). */
static char *comment_at(const file_desc *f, const int32_t *path, size_t n) {
  if (!f || !f->source_code_info)
    return NULL;
  const Google__Protobuf__SourceCodeInfo *sci = f->source_code_info;
  for (size_t i = 0; i < sci->n_location; i++) {
    const Google__Protobuf__SourceCodeInfo__Location *l = sci->location[i];
    if (l->n_path != n || (n && memcmp(l->path, path, n * sizeof *path) != 0))
      continue;
    const char *c = l->leading_comments && l->leading_comments[0]
                        ? l->leading_comments
                        : l->trailing_comments;
    if (!c || !c[0])
      return NULL;
    perfc__buf b = {0};
    for (const char *p = c; *p;) {
      if (*p == ' ')
        p++;
      const char *nl = strchr(p, '\n');
      size_t len = nl ? (size_t)(nl - p) : strlen(p);
      perfc__buf_append(&b, p, len);
      perfc__buf_putc(&b, '\n');
      p += len + (nl ? 1 : 0);
    }
    while (b.len && (b.data[b.len - 1] == '\n' || b.data[b.len - 1] == ' '))
      b.data[--b.len] = '\0';
    if (!b.len) {
      perfc__buf_free(&b);
      return NULL;
    }
    return perfc__buf_take(&b);
  }
  return NULL;
}

/* The comment of field `index` of the message found as `fm`. */
static char *field_comment(const found *fm, size_t index) {
  if (!fm->msg || fm->n_path + 2 > 64)
    return NULL;
  int32_t p[64];
  memcpy(p, fm->path, fm->n_path * sizeof *p);
  p[fm->n_path] = 2, p[fm->n_path + 1] = (int32_t)index;
  return comment_at(fm->file, p, fm->n_path + 2);
}

/* ---- schemas ---------------------------------------------------------------- */

typedef struct oa {
  const gen_request *req;
  jv *schemas; /* components.schemas, filled as types are reached */
  char **queue; /* type names ("pkg.Name") reached but not yet described */
  size_t n_queue;
} oa;

static const char *const wrappers[][3] = {
    /* name, type, format */
    {"google.protobuf.DoubleValue", "number", "double"},
    {"google.protobuf.FloatValue", "number", "float"},
    {"google.protobuf.Int64Value", "string", "int64"},
    {"google.protobuf.UInt64Value", "string", "uint64"},
    {"google.protobuf.Int32Value", "integer", "int32"},
    {"google.protobuf.UInt32Value", "integer", "int64"},
    {"google.protobuf.BoolValue", "boolean", NULL},
    {"google.protobuf.StringValue", "string", NULL},
    {"google.protobuf.BytesValue", "string", "byte"},
};

static jv *ref_to(oa *o, const char *name) {
  int known = j_get(o->schemas, name) != NULL;
  for (size_t i = 0; !known && i < o->n_queue; i++)
    known = strcmp(o->queue[i], name) == 0;
  if (!known) {
    o->queue = perfc__xrealloc(o->queue, (o->n_queue + 1) * sizeof *o->queue);
    o->queue[o->n_queue++] = perfc__xstrdup(name);
  }
  jv *r = j_obj();
  char *s = perfc__xasprintf("#/components/schemas/%s", name);
  j_set_str(r, "$ref", s);
  free(s);
  return r;
}

static jv *typed(const char *type, const char *format) {
  jv *s = j_obj();
  j_set_str(s, "type", type);
  if (format)
    j_set_str(s, "format", format);
  return s;
}

/* The schema of a value of well-known type `name` (no leading dot), as
 * json_encode.c writes it; NULL when `name` is no well-known type. Any is
 * a component (google.rpc.Status's details refer to it too). */
static jv *wkt_schema(oa *o, const char *name) {
  if (strncmp(name, "google.protobuf.", 16) != 0)
    return NULL;
  const char *n = name + 16;
  jv *s = NULL;
  if (strcmp(n, "Timestamp") == 0) {
    s = typed("string", "date-time");
    j_set_str(s, "description",
              "RFC 3339, UTC (\"Z\"), 0, 3, 6 or 9 fraction digits; an "
              "offset is accepted on input "
              "(google.protobuf.Timestamp).");
  } else if (strcmp(n, "Duration") == 0) {
    s = typed("string", NULL);
    j_set_str(s, "pattern", "^-?[0-9]+(\\.[0-9]{1,9})?s$");
    j_set_str(s, "example", "1.5s");
    j_set_str(s, "description",
              "Seconds with up to 9 fraction digits and an \"s\" "
              "(google.protobuf.Duration).");
  } else if (strcmp(n, "FieldMask") == 0) {
    s = typed("string", NULL);
    j_set_str(s, "example", "displayName,address.city");
    j_set_str(s, "description",
              "Field paths in lowerCamelCase joined by \",\" "
              "(google.protobuf.FieldMask).");
  } else if (strcmp(n, "Empty") == 0) {
    s = typed("object", NULL);
    j_set_str(s, "description", "Always {} (google.protobuf.Empty).");
  } else if (strcmp(n, "Struct") == 0) {
    s = typed("object", NULL);
    j_set(s, "additionalProperties", j_raw("true"));
    j_set_str(s, "description", "Any JSON object (google.protobuf.Struct).");
  } else if (strcmp(n, "ListValue") == 0) {
    s = typed("array", NULL);
    j_set(s, "items", j_obj());
    j_set_str(s, "description", "Any JSON array (google.protobuf.ListValue).");
  } else if (strcmp(n, "Value") == 0) {
    s = j_obj();
    j_set_str(s, "description",
              "Any JSON value, null included (google.protobuf.Value).");
  } else if (strcmp(n, "Any") == 0) {
    return ref_to(o, name);
  } else {
    for (size_t i = 0; i < sizeof wrappers / sizeof wrappers[0]; i++)
      if (strcmp(name, wrappers[i][0]) == 0) {
        s = typed(wrappers[i][1], wrappers[i][2]);
        if (strcmp(n, "UInt32Value") == 0) {
          j_set(s, "minimum", j_raw("0"));
          j_set(s, "maximum", j_raw("4294967295"));
        }
        j_set(s, "nullable", j_raw("true"));
        char *d = perfc__xasprintf("The wrapped value, or null when unset "
                                   "(%s).",
                                   name);
        j_set_str(s, "description", d);
        free(d);
      }
  }
  return s;
}

/* "Timestamp", "Duration", "FieldMask" and the wrappers: the well-known
 * types bind.c accepts as query parameters. */
static int wkt_query_leaf(const char *name) {
  static const char *const ok[] = {"google.protobuf.Timestamp",
                                   "google.protobuf.Duration",
                                   "google.protobuf.FieldMask"};
  for (size_t i = 0; i < 3; i++)
    if (strcmp(name, ok[i]) == 0)
      return 1;
  for (size_t i = 0; i < sizeof wrappers / sizeof wrappers[0]; i++)
    if (strcmp(name, wrappers[i][0]) == 0)
      return 1;
  return 0;
}

/* The schema of one value of field `fd`, ignoring its label. */
static jv *value_schema(oa *o, const field_desc *fd) {
  const char *tn = fd->type_name && fd->type_name[0] == '.' ? fd->type_name + 1
                                                            : fd->type_name;
  switch (fd->type) {
  case T(INT32):
  case T(SINT32):
  case T(SFIXED32):
    return typed("integer", "int32");
  case T(UINT32):
  case T(FIXED32): {
    /* OpenAPI's int32 is signed: a uint32 needs the wider format. */
    jv *s = typed("integer", "int64");
    j_set(s, "minimum", j_raw("0"));
    j_set(s, "maximum", j_raw("4294967295"));
    return s;
  }
  /* json_encode.c writes 64-bit integers as strings (JavaScript's numbers
   * hold 53 bits); numbers are accepted on input. */
  case T(INT64):
  case T(SINT64):
  case T(SFIXED64):
    return typed("string", "int64");
  case T(UINT64):
  case T(FIXED64):
    return typed("string", "uint64");
  case T(FLOAT):
    return typed("number", "float");
  case T(DOUBLE):
    return typed("number", "double");
  case T(BOOL):
    return typed("boolean", NULL);
  case T(STRING):
    return typed("string", NULL);
  case T(BYTES):
    return typed("string", "byte");
  case T(ENUM):
    if (strcmp(tn, "google.protobuf.NullValue") == 0) {
      jv *s = j_obj();
      j_set_str(s, "description", "Always null (google.protobuf.NullValue).");
      return s;
    }
    return ref_to(o, tn);
  default: { /* message or group */
    jv *w = wkt_schema(o, tn);
    return w ? w : ref_to(o, tn);
  }
  }
}

static const msg_desc *map_entry(oa *o, const field_desc *fd) {
  if (fd->label != REPEATED || fd->type != T(MESSAGE))
    return NULL;
  found f;
  if (!find_type(o->req, fd->type_name, &f) || !f.msg)
    return NULL;
  const msg_desc *e = f.msg;
  return e->options && e->options->has_map_entry && e->options->map_entry &&
                 e->n_field == 2
             ? e
             : NULL;
}

/* The schema of field `fd` with its label: arrays for repeated fields,
 * objects for maps (keys are strings in JSON, whatever their type). */
static jv *field_schema(oa *o, const field_desc *fd) {
  const msg_desc *e = map_entry(o, fd);
  if (e) {
    jv *s = typed("object", NULL);
    const field_desc *v = e->field[0]->number == 2 ? e->field[0] : e->field[1];
    j_set(s, "additionalProperties", value_schema(o, v));
    return s;
  }
  if (fd->label == REPEATED) {
    jv *s = typed("array", NULL);
    j_set(s, "items", value_schema(o, fd));
    return s;
  }
  return value_schema(o, fd);
}

/* Adds a description to a schema; a $ref cannot have siblings in OpenAPI
 * 3.0 (they are ignored), so it is wrapped in allOf. Takes both. */
static jv *describe(jv *s, char *desc) {
  if (!desc)
    return s;
  if (j_get(s, "$ref")) {
    jv *w = j_obj();
    j_push(j_set(w, "allOf", j_arr()), s);
    s = w;
  }
  j_set_str(s, "description", desc);
  free(desc);
  return s;
}

static jv *message_schema(oa *o, const found *fm, const char *name) {
  const msg_desc *m = fm->msg;
  jv *s = typed("object", NULL);
  perfc__buf d = {0};
  char *c = comment_at(fm->file, fm->path, fm->n_path);
  if (c)
    perfc__buf_puts(&d, c);
  free(c);
  /* A oneof's members are all properties; the mapping writes the one set. */
  for (size_t k = 0; k < m->n_oneof_decl; k++) {
    perfc__buf members = {0};
    size_t n = 0;
    for (size_t i = 0; i < m->n_field; i++) {
      const field_desc *fd = m->field[i];
      if (fd->has_oneof_index && (size_t)fd->oneof_index == k &&
          !(fd->has_proto3_optional && fd->proto3_optional)) {
        char *j = json_name(fd->name);
        perfc__buf_printf(&members, "%s`%s`", n++ ? ", " : "", j);
        free(j);
      }
    }
    if (n)
      perfc__buf_printf(&d, "%sAt most one of %s is set (oneof %s).",
                        d.len ? "\n\n" : "", members.data,
                        m->oneof_decl[k]->name);
    perfc__buf_free(&members);
  }
  if (d.len)
    j_set_str(s, "description", d.data);
  perfc__buf_free(&d);
  if (m->n_field) {
    jv *props = j_set(s, "properties", j_obj());
    for (size_t i = 0; i < m->n_field; i++) {
      char *j = json_name(m->field[i]->name);
      j_set(props, j, describe(field_schema(o, m->field[i]),
                               field_comment(fm, i)));
      free(j);
    }
  }
  (void)name;
  return s;
}

static jv *enum_schema(const found *fe) {
  const enum_desc *e = fe->en;
  jv *s = typed("string", NULL);
  jv *vals = j_set(s, "enum", j_arr());
  perfc__buf d = {0};
  char *c = comment_at(fe->file, fe->path, fe->n_path);
  if (c)
    perfc__buf_puts(&d, c);
  free(c);
  int32_t p[66];
  memcpy(p, fe->path, fe->n_path * sizeof *p);
  for (size_t i = 0; i < e->n_value; i++) {
    j_push(vals, j_str(e->value[i]->name));
    p[fe->n_path] = 2, p[fe->n_path + 1] = (int32_t)i;
    char *vc = comment_at(fe->file, p, fe->n_path + 2);
    if (vc) {
      perfc__buf_printf(&d, "%s- `%s`: %s", d.len ? "\n" : "",
                        e->value[i]->name, vc);
      free(vc);
    }
  }
  if (d.len)
    j_set_str(s, "description", d.data);
  perfc__buf_free(&d);
  return s;
}

static jv *status_schema(oa *o) {
  jv *s = typed("object", NULL);
  j_set_str(s, "description",
            "The error of a failed call (google.rpc.Status). The HTTP status "
            "follows `code`; see the Error response.");
  jv *p = j_set(s, "properties", j_obj());
  jv *code = j_set(p, "code", typed("integer", "int32"));
  j_set_str(code, "description", "The gRPC status code (google.rpc.Code).");
  j_set(code, "minimum", j_raw("0"));
  j_set(code, "maximum", j_raw("16"));
  j_set_str(j_set(p, "message", typed("string", NULL)), "description",
            "What went wrong, in English, for the developer.");
  jv *det = j_set(p, "details", typed("array", NULL));
  j_set(det, "items", ref_to(o, "google.protobuf.Any"));
  return s;
}

/* Describes every type reached so far, and the types those reach. */
static void drain(oa *o) {
  while (o->n_queue) {
    char *name = o->queue[--o->n_queue];
    jv *s;
    found f;
    if (strcmp(name, "google.protobuf.Any") == 0) {
      s = typed("object", NULL);
      j_set_str(s, "description",
                "A message of any type: \"@type\" names it, its fields "
                "follow (a well-known type's JSON sits under \"value\") "
                "(google.protobuf.Any).");
      j_push(j_set(s, "required", j_arr()), j_str("@type"));
      jv *p = j_set(s, "properties", j_obj());
      j_set_str(j_set(p, "@type", typed("string", NULL)), "example",
                "type.googleapis.com/package.Message");
      j_set(s, "additionalProperties", j_raw("true"));
    } else if (strcmp(name, "google.rpc.Status") == 0) {
      s = status_schema(o);
    } else {
      char *dotted = perfc__xasprintf(".%s", name);
      int hit = find_type(o->req, dotted, &f);
      free(dotted);
      /* Every type name comes from a descriptor protoc checked, so a miss
       * cannot happen; an empty object keeps the document valid if it does. */
      s = !hit ? typed("object", NULL)
                : f.en ? enum_schema(&f) : message_schema(o, &f, name);
    }
    j_set(o->schemas, name, s);
    free(name);
  }
}

/* ---- the status table ------------------------------------------------------- */

static const struct {
  const char *name;
  int http;
} grpc_codes[17] = {
    {"OK", 200},
    {"CANCELLED", 499},
    {"UNKNOWN", 500},
    {"INVALID_ARGUMENT", 400},
    {"DEADLINE_EXCEEDED", 504},
    {"NOT_FOUND", 404},
    {"ALREADY_EXISTS", 409},
    {"PERMISSION_DENIED", 403},
    {"RESOURCE_EXHAUSTED", 429},
    {"FAILED_PRECONDITION", 400},
    {"ABORTED", 409},
    {"OUT_OF_RANGE", 400},
    {"UNIMPLEMENTED", 501},
    {"INTERNAL", 500},
    {"UNAVAILABLE", 503},
    {"DATA_LOSS", 500},
    {"UNAUTHENTICATED", 401},
};

int perfc__openapi_http_status(int grpc_code) {
  return grpc_code >= 0 && grpc_code < 17 ? grpc_codes[grpc_code].http : -1;
}

static jv *error_response(oa *o) {
  perfc__buf d = {0};
  perfc__buf_puts(&d, "A failed call: a google.rpc.Status. The HTTP status "
                      "follows the gRPC code:");
  for (int i = 1; i < 17; i++)
    perfc__buf_printf(&d, " %s %d%s", grpc_codes[i].name, grpc_codes[i].http,
                      i < 16 ? "," : ".");
  perfc__buf_puts(&d, " A request that does not parse or bind (bad JSON, a "
                      "wrong type, an unknown query parameter value) is 400, "
                      "an unknown path 404, a known path with another method "
                      "405.");
  jv *r = j_obj();
  j_set_str(r, "description", d.data);
  perfc__buf_free(&d);
  jv *ct = j_set(j_set(r, "content", j_obj()), "application/json", j_obj());
  j_set(ct, "schema", ref_to(o, "google.rpc.Status"));
  return r;
}

/* ---- operations ------------------------------------------------------------- */

static const char *const oa_methods[] = {"get",     "put",  "post",  "delete",
                                         "options", "head", "patch", "trace"};
#define N_OA_METHODS (sizeof oa_methods / sizeof oa_methods[0])

/* A path literal written back as the template had it: the characters the
 * route grammar takes as they are, everything else %XX. */
static void put_literal(perfc__buf *b, const char *lit) {
  for (const unsigned char *p = (const unsigned char *)lit; *p; p++) {
    if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
        (*p >= '0' && *p <= '9') || strchr("-._~!$&'()+,;=@", *p))
      perfc__buf_putc(b, (char)*p);
    else
      perfc__buf_printf(b, "%%%02X", *p);
  }
}

static const char MULTI_NOTE[] =
    "Matches the rest of the path, '/' included. OpenAPI 3.0 has no "
    "parameter spanning several segments: send the '/' unescaped (a client "
    "that percent-encodes it as %2F sends one segment, which this route "
    "does not match).";

static jv *path_param(const char *name, jv *schema, char *desc) {
  jv *p = j_obj();
  j_set_str(p, "name", name);
  j_set_str(p, "in", "path");
  j_set(p, "required", j_raw("true"));
  if (desc)
    j_set_str(p, "description", desc);
  free(desc);
  j_set(p, "schema", schema);
  return p;
}

/* The comment of the leaf of a field path, walking from message `type`. */
static char *path_comment(oa *o, const char *type, const char *proto_path) {
  found fm;
  if (!find_type(o->req, type, &fm) || !fm.msg)
    return NULL;
  char *copy = perfc__xstrdup(proto_path), *res = NULL;
  for (char *tok = copy, *dot; tok; tok = dot ? dot + 1 : NULL) {
    dot = strchr(tok, '.');
    if (dot)
      *dot = '\0';
    size_t i = 0;
    while (i < fm.msg->n_field && strcmp(fm.msg->field[i]->name, tok) != 0)
      i++;
    if (i == fm.msg->n_field)
      break;
    if (!dot) {
      res = field_comment(&fm, i);
      break;
    }
    if (!find_type(o->req, fm.msg->field[i]->type_name, &fm) || !fm.msg)
      break;
  }
  free(copy);
  return res;
}

/* The OpenAPI path of a route, and its path parameters into `params`:
 * {field} for a variable of one segment (named by its JSON path); a
 * variable of several segments is written out, its literals as they are
 * and each wildcard as {<json>_<k>}; a wildcard outside any variable is
 * {wildcard_<k>}. JSON names hold no '_', so these names never collide
 * with a field's. */
static char *route_path(oa *o, const perfc__http_route *r, const char *in_type,
                        jv *params) {
  perfc__buf b = {0};
  unsigned wild = 0;
  for (size_t k = 0; k < r->n_segs; k++) {
    const perfc__http_var *v = NULL;
    for (size_t i = 0; i < r->n_vars && !v; i++)
      if (r->vars[i].first == k)
        v = &r->vars[i];
    const perfc__http_seg *s = &r->segs[k];
    perfc__buf_putc(&b, '/');
    if (!v) {
      if (s->kind == PERFC_HTTP_SEG_LITERAL) {
        put_literal(&b, s->literal);
        continue;
      }
      char *name = perfc__xasprintf("wildcard_%u", ++wild);
      perfc__buf_printf(&b, "{%s}", name);
      j_push(params,
             path_param(name, typed("string", NULL),
                        perfc__xstrdup(s->kind == PERFC_HTTP_SEG_ANY
                                           ? "Any one path segment; not "
                                             "bound to a field."
                                           : MULTI_NOTE)));
      free(name);
      continue;
    }
    char *jp = json_path(v->field.name);
    if (v->last - v->first == 1 && s->kind != PERFC_HTTP_SEG_LITERAL) {
      perfc__buf_printf(&b, "{%s}", jp);
      perfc__buf d = {0};
      char *c = path_comment(o, in_type, v->field.name);
      if (c)
        perfc__buf_puts(&d, c);
      free(c);
      if (s->kind == PERFC_HTTP_SEG_ANY_MANY)
        perfc__buf_printf(&d, "%s%s", d.len ? "\n\n" : "", MULTI_NOTE);
      j_push(params, path_param(jp, value_schema(o, v->field.leaf),
                                d.len ? perfc__buf_take(&d) : NULL));
      perfc__buf_free(&d);
      free(jp);
      continue;
    }
    /* Several segments: the field (a string) gets the text they match. */
    perfc__buf pat = {0};
    for (unsigned i = v->first; i < v->last; i++) {
      const perfc__http_seg *t = &r->segs[i];
      if (i > v->first)
        perfc__buf_putc(&pat, '/');
      if (t->kind == PERFC_HTTP_SEG_LITERAL)
        put_literal(&pat, t->literal);
      else
        perfc__buf_puts(&pat, t->kind == PERFC_HTTP_SEG_ANY ? "*" : "**");
    }
    unsigned part = 0;
    for (unsigned i = v->first; i < v->last; i++) {
      const perfc__http_seg *t = &r->segs[i];
      if (i > v->first)
        perfc__buf_putc(&b, '/');
      if (t->kind == PERFC_HTTP_SEG_LITERAL) {
        put_literal(&b, t->literal);
        continue;
      }
      char *name = perfc__xasprintf("%s_%u", jp, ++part);
      perfc__buf_printf(&b, "{%s}", name);
      char *d = perfc__xasprintf(
          "Wildcard %u of field `%s`, which gets the whole text matched by "
          "`%s`.%s%s",
          part, jp, pat.data, t->kind == PERFC_HTTP_SEG_ANY_MANY ? " " : "",
          t->kind == PERFC_HTTP_SEG_ANY_MANY ? MULTI_NOTE : "");
      j_push(params, path_param(name, typed("string", NULL), d));
      free(name);
    }
    perfc__buf_free(&pat);
    free(jp);
    k = v->last - 1;
  }
  if (r->n_segs == 0)
    perfc__buf_putc(&b, '/');
  if (r->verb) {
    perfc__buf_putc(&b, ':');
    put_literal(&b, r->verb);
  }
  return perfc__buf_take(&b);
}

/* Query parameters: the fields neither the path nor the body binds, as
 * bind.c takes them: primitives (repeated ones as ?a=1&a=2), Timestamp,
 * Duration, FieldMask and wrappers, nested through singular messages with
 * '.'. Maps, repeated messages and the other well-known types cannot be
 * query parameters. A message already on the way is not entered again
 * (a recursive type would never end). */
static void query_params(oa *o, const perfc__http_route *r, const char *type,
                         const char *proto_prefix, const char *json_prefix,
                         const char **stack, size_t depth, jv *params) {
  found fm;
  if (r->body_kind == PERFC_HTTP_BODY_ALL || depth >= 32 ||
      !find_type(o->req, type, &fm) || !fm.msg)
    return;
  stack[depth] = type;
  for (size_t i = 0; i < fm.msg->n_field; i++) {
    const field_desc *fd = fm.msg->field[i];
    char *pp = proto_prefix ? perfc__xasprintf("%s.%s", proto_prefix, fd->name)
                            : perfc__xstrdup(fd->name);
    char *jn = json_name(fd->name);
    char *jp = json_prefix ? perfc__xasprintf("%s.%s", json_prefix, jn)
                           : perfc__xstrdup(jn);
    free(jn);
    int bound = r->body_kind == PERFC_HTTP_BODY_FIELD &&
                perfc__http_path_under(pp, r->body.name);
    for (size_t v = 0; v < r->n_vars && !bound; v++)
      bound = strcmp(r->vars[v].field.name, pp) == 0;
    int leaf = fd->type != T(MESSAGE) && fd->type != T(GROUP);
    const char *tn =
        fd->type_name ? fd->type_name + (fd->type_name[0] == '.') : "";
    if (!bound && !leaf && !map_entry(o, fd) && wkt_query_leaf(tn))
      leaf = 1;
    if (!bound && leaf) {
      jv *p = j_obj();
      j_set_str(p, "name", jp);
      j_set_str(p, "in", "query");
      char *c = field_comment(&fm, i);
      if (c)
        j_set_str(p, "description", c);
      free(c);
      j_set(p, "schema", field_schema(o, fd));
      j_push(params, p);
    } else if (!bound && fd->type == T(MESSAGE) && fd->label != REPEATED &&
               strncmp(tn, "google.protobuf.", 16) != 0) {
      int seen = 0;
      for (size_t s = 0; s <= depth && !seen; s++)
        seen = strcmp(stack[s], fd->type_name) == 0;
      if (!seen)
        query_params(o, r, fd->type_name, pp, jp, stack, depth + 1, params);
    }
    free(pp), free(jp);
  }
}

static jv *json_content(jv *schema, const char *type) {
  jv *c = j_obj();
  j_set(j_set(c, type, j_obj()), "schema", schema);
  return c;
}

/* Whether two OpenAPI paths are the same but for their parameters'
 * names, which OpenAPI 3.0 forbids ("identical" templated paths). */
static int same_template(const char *a, const char *b) {
  while (*a && *b) {
    if (*a == '{' && *b == '{') {
      a = strchr(a, '}'), b = strchr(b, '}');
      if (!a || !b)
        return 0;
    } else if (*a != *b) {
      return 0;
    }
    a++, b++;
  }
  return *a == *b;
}

/* The route's OpenAPI path and path parameters, named as an earlier path
 * of the same shape names them: OpenAPI 3.0 takes paths that differ only
 * in their parameters' names for one path ("identical"), and such routes
 * are common (GET /v1/shelves/{shelf}/books/{book_id} beside PATCH
 * /v1/shelves/{book.shelf}/books/{book.id}). A renamed parameter says
 * which field it sets. */
static char *route_params(oa *o, const perfc__http_route *r, const jv *paths,
                          jv *params) {
  char *path = route_path(o, r, r->method->input_type, params);
  for (size_t i = 0; i < paths->n; i++) {
    const char *k = paths->keys[i];
    if (strcmp(k, path) == 0 || !same_template(k, path))
      continue;
    size_t n = 0;
    for (const char *q = strchr(k, '{'); q; q = strchr(q + 1, '{'), n++) {
      const char *e = strchr(q, '}');
      jv *p = n < params->n ? params->vals[n] : NULL;
      if (!p || !e)
        break;
      char *name = perfc__xstrndup(q + 1, (size_t)(e - q - 1));
      jv *old = j_get(p, "name");
      if (strcmp(old->s, name) != 0) {
        jv *d = j_get(p, "description");
        char *nd = perfc__xasprintf(
            "Sets `%s` (named `%s` after the first route of this path).%s%s",
            old->s, name, d ? "\n\n" : "", d ? d->s : "");
        j_set_str(p, "description", nd);
        free(nd);
        j_set_str(p, "name", name);
        /* Keep the key order of path_param(): schema last. */
        for (size_t a = 0; a + 1 < p->n; a++)
          if (strcmp(p->keys[a], "schema") == 0) {
            char *sk = p->keys[a];
            jv *sv = p->vals[a];
            memmove(p->keys + a, p->keys + a + 1, (p->n - a - 1) * sizeof *p->keys);
            memmove(p->vals + a, p->vals + a + 1, (p->n - a - 1) * sizeof *p->vals);
            p->keys[p->n - 1] = sk, p->vals[p->n - 1] = sv;
            break;
          }
      }
      free(name);
    }
    free(path);
    return perfc__xstrdup(k);
  }
  return path;
}

typedef struct op_ctx {
  const file_desc *f;
  const svc_desc *svc;
  size_t svc_index;
  const char *full_svc;
} op_ctx;

static jv *build_operation(oa *o, const op_ctx *c, const perfc__http_route *r,
                           const char *suffix, jv *path_params) {
  const method_desc *m = r->method;
  jv *op = j_obj();
  j_push(j_set(op, "tags", j_arr()), j_str(c->svc->name));
  char *id = perfc__xasprintf("%s_%s%s", c->svc->name, m->name, suffix);
  j_set_str(op, "operationId", id);
  free(id);
  int32_t mp[4] = {6, (int32_t)c->svc_index, 2, (int32_t)r->method_index};
  perfc__buf d = {0};
  char *cm = comment_at(c->f, mp, 4);
  if (cm)
    perfc__buf_puts(&d, cm);
  free(cm);
  int cs = m->has_client_streaming && m->client_streaming;
  int ss = m->has_server_streaming && m->server_streaming;
  perfc__buf_printf(&d, "%sgRPC: /%s/%s%s.", d.len ? "\n\n" : "", c->full_svc,
                    m->name,
                    cs && ss ? " (bidirectional streaming)"
                    : cs     ? " (client streaming)"
                    : ss     ? " (server streaming)"
                             : "");
  if (cs)
    perfc__buf_puts(&d, " A streaming request cannot be sent as one JSON "
                        "body: over HTTP/JSON this route answers 501 "
                        "UNIMPLEMENTED; use gRPC or gRPC-Web.");
  j_set_str(op, "description", d.data);
  perfc__buf_free(&d);

  jv *params = j_arr();
  /* Moves the path parameters in (the caller built them for this
   * operation alone). */
  for (size_t i = 0; i < path_params->n; i++)
    j_push(params, path_params->vals[i]);
  path_params->n = 0;
  const char *in_type = m->input_type;
  const char *stack[33];
  query_params(o, r, in_type, NULL, NULL, stack, 0, params);
  if (params->n)
    j_set(op, "parameters", params);
  else
    j_free(params);

  if (r->body_kind != PERFC_HTTP_BODY_NONE && !cs) {
    jv *rb = j_set(op, "requestBody", j_obj());
    jv *schema;
    if (r->body_kind == PERFC_HTTP_BODY_ALL) {
      j_set_str(rb, "description",
                "The request message; fields also bound by the path take the "
                "path's values. An empty body is an empty message.");
      jv *w = wkt_schema(o, in_type + 1);
      schema = w ? w : ref_to(o, in_type + 1);
    } else {
      char *bc = path_comment(o, in_type, r->body.name);
      char *bd = perfc__xasprintf("The request's field `%s`%s%s",
                                  r->body.name, bc ? ": " : ".", bc ? bc : "");
      free(bc);
      j_set_str(rb, "description", bd);
      free(bd);
      schema = field_schema(o, r->body.leaf);
    }
    j_set(rb, "content", json_content(schema, "application/json"));
  }

  jv *resps = j_set(op, "responses", j_obj());
  if (!cs) {
    jv *ok = j_set(resps, "200", j_obj());
    jv *schema;
    const char *out = m->output_type + 1;
    if (r->response_body.name) {
      schema = field_schema(o, r->response_body.leaf);
      char *s = perfc__xasprintf("The response's field `%s`.",
                                 r->response_body.name);
      j_set_str(ok, "description", s);
      free(s);
    } else {
      jv *w = wkt_schema(o, out);
      schema = w ? w : ref_to(o, out);
      char *s = ss ? perfc__xasprintf("A stream of %s: newline-delimited "
                                      "JSON, one message per line.",
                                      out)
                   : perfc__xasprintf("A %s.", out);
      j_set_str(ok, "description", s);
      free(s);
    }
    j_set(ok, "content",
          json_content(schema, ss ? "application/x-ndjson"
                                  : "application/json"));
  }
  j_set_str(j_set(resps, "default", j_obj()), "$ref",
            "#/components/responses/Error");
  return op;
}

static char *route_where(const op_ctx *c, const perfc__http_route *r) {
  return perfc__xasprintf("%s: service %s, method %s: %s %s: ", c->f->name,
                          c->full_svc, r->method->name, r->http_method,
                          r->pattern);
}

/* Adds the operations of one route to `paths`. A route of kind "*" is
 * added last (the caller's second pass) under every method its path does
 * not have yet: a named method wins over "*" in the matcher too. */
static int add_route(oa *o, const op_ctx *c, const perfc__http_route *r,
                     int any_pass, jv *paths, char **err) {
  int any = strcmp(r->http_method, "*") == 0;
  if (any != any_pass)
    return 0;
  size_t mi = N_OA_METHODS;
  if (!any) {
    for (mi = 0; mi < N_OA_METHODS; mi++) {
      char up[16];
      size_t k = 0;
      for (; oa_methods[mi][k]; k++)
        up[k] = (char)(oa_methods[mi][k] - 'a' + 'A');
      up[k] = '\0';
      if (strcmp(up, r->http_method) == 0)
        break;
    }
    if (mi == N_OA_METHODS) {
      char *w = route_where(c, r);
      *err = perfc__xasprintf(
          "%sopenapi: OpenAPI 3.0 has operations for GET, PUT, POST, DELETE, "
          "OPTIONS, HEAD, PATCH and TRACE only, so custom kind \"%s\" cannot "
          "be described; use one of those, or leave openapi= out",
          w, r->http_method);
      free(w);
      return -1;
    }
  }
  jv *pparams = j_arr();
  char *path = route_params(o, r, paths, pparams);
  j_free(pparams);
  jv *item = j_get(paths, path);
  if (!item)
    item = j_set(paths, path, j_obj());
  char suffix[48] = "";
  if (r->binding_index)
    snprintf(suffix, sizeof suffix, "_%u", r->binding_index + 1);
  int rv = 0;
  for (size_t k = any ? 0 : mi; k < (any ? N_OA_METHODS : mi + 1); k++) {
    if (j_get(item, oa_methods[k])) {
      if (any)
        continue;
      char *w = route_where(c, r);
      *err = perfc__xasprintf("%sopenapi: %s %s is already an operation of "
                              "another route of the file",
                              w, r->http_method, path);
      free(w);
      rv = -1;
      break;
    }
    char sfx[64];
    snprintf(sfx, sizeof sfx, "%s%s%s", suffix, any ? "_" : "",
             any ? oa_methods[k] : "");
    /* Each operation gets parameter objects of its own. */
    jv *mine = j_arr();
    free(route_params(o, r, paths, mine));
    j_set(item, oa_methods[k], build_operation(o, c, r, sfx, mine));
    j_free(mine);
  }
  free(path);
  return rv;
}

/* operationIds must be unique in a document: "Svc_Method" plus "_2".. for
 * additional bindings can meet a method that is called "Method_2". */
static int check_operation_ids(const file_desc *f, const jv *paths,
                               char **err) {
  size_t n = 0;
  const char **ids = NULL;
  int rv = 0;
  for (size_t i = 0; i < paths->n && !rv; i++)
    for (size_t k = 0; k < paths->vals[i]->n && !rv; k++) {
      const jv *id = j_get(paths->vals[i]->vals[k], "operationId");
      for (size_t j = 0; j < n && !rv; j++)
        if (strcmp(ids[j], id->s) == 0) {
          *err = perfc__xasprintf(
              "%s: openapi: two operations are named %s (a method's "
              "additional binding \"_N\" and a method named so); rename the "
              "method",
              f->name, id->s);
          rv = -1;
        }
      ids = perfc__xrealloc(ids, (n + 1) * sizeof *ids);
      ids[n++] = id->s;
    }
  free(ids);
  return rv;
}

int perfc__openapi_document(const gen_request *req, const file_desc *f,
                            char **out, char **err) {
  *out = NULL;
  oa o = {.req = req, .schemas = j_obj()};
  jv *doc = j_obj();
  j_set_str(doc, "openapi", "3.0.3");
  jv *info = j_set(doc, "info", j_obj());
  jv *tags = j_set(doc, "tags", j_arr());
  jv *paths = j_set(doc, "paths", j_obj());
  int rv = 0, any_route = 0;
  const char *pkg = f->package ? f->package : "";
  for (size_t i = 0; i < f->n_service && !rv; i++) {
    const svc_desc *s = f->service[i];
    char *full = pkg[0] ? perfc__xasprintf("%s.%s", pkg, s->name)
                        : perfc__xstrdup(s->name);
    perfc__http_routes routes = {0};
    for (size_t m = 0; m < s->n_method && !rv; m++) {
      char *where = perfc__xasprintf("%s: service %s, method %s", f->name,
                                     full, s->method[m]->name);
      rv = perfc__http_add_method(req, where, s->method[m], m, &routes, err);
      free(where);
    }
    op_ctx c = {.f = f, .svc = s, .svc_index = i, .full_svc = full};
    for (int pass = 0; pass < 2 && !rv; pass++)
      for (size_t r = 0; r < routes.n && !rv; r++)
        rv = add_route(&o, &c, &routes.items[r], pass, paths, err);
    if (!rv && routes.n) {
      any_route = 1;
      jv *t = j_push(tags, j_obj());
      j_set_str(t, "name", s->name);
      int32_t sp[2] = {6, (int32_t)i};
      char *sc = comment_at(f, sp, 2);
      char *d = perfc__xasprintf("%s%sgRPC service %s.", sc ? sc : "",
                                 sc ? "\n\n" : "", full);
      j_set_str(t, "description", d);
      free(d), free(sc);
    }
    perfc__http_routes_free(&routes);
    free(full);
  }
  if (!rv)
    rv = check_operation_ids(f, paths, err);
  if (!rv && any_route) {
    /* Title: the package (or the file); version: the package's last piece
     * when it is a version such as "v1", which is how protos version. */
    j_set_str(info, "title", pkg[0] ? pkg : f->name);
    const char *last = strrchr(pkg, '.');
    last = last ? last + 1 : pkg;
    j_set_str(info, "version",
              last[0] == 'v' && last[1] >= '0' && last[1] <= '9'
                  ? last
                  : "unversioned");
    int32_t syntax_path[1] = {12}, pkg_path[1] = {2};
    char *fc = comment_at(f, syntax_path, 1);
    if (!fc)
      fc = comment_at(f, pkg_path, 1);
    char *d = perfc__xasprintf(
        "%s%sThe HTTP/JSON routes (google.api.http) of %s. Generated by "
        "protoc-gen-perfc %s; do not edit.",
        fc ? fc : "", fc ? "\n\n" : "", f->name, PERFC_VERSION_STRING);
    j_set_str(info, "description", d);
    free(d), free(fc);
    jv *comps = j_set(doc, "components", j_obj());
    jv *resps = j_set(comps, "responses", j_obj());
    j_set(resps, "Error", error_response(&o));
    drain(&o);
    j_sort(o.schemas);
    j_set(comps, "schemas", o.schemas);
    o.schemas = NULL;
    perfc__buf b = {0};
    j_write(&b, doc, 0);
    perfc__buf_putc(&b, '\n');
    *out = perfc__buf_take(&b);
  }
  for (size_t i = 0; i < o.n_queue; i++)
    free(o.queue[i]);
  free(o.queue);
  j_free(o.schemas);
  j_free(doc);
  return rv ? -1 : 0;
}
