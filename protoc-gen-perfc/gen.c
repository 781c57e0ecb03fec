/*
 * gen.c — the generator proper: parameters, model, validation, rendering.
 *
 * Room: protoc-gen-perfc (the generator). Reads the CodeGeneratorRequest;
 * writes the response, under stubs=DIR only files that do not exist, and
 * under openapi=DIR the OpenAPI documents (replaced on each run).
 *
 * Errors are messages for the user of protoc, not for us: each names the
 * .proto file, the service and the method it is about, and says what to do.
 */
#include "gen.h"

#include "buf.h"
#include "http.h"
#include "names.h"
#include "openapi.h"
#include "templates.h"
#include "tmpl.h"

#include "core/builtin_files_internal.h"
#include "core/duration_internal.h"
#include "perfc/common.h"
#include "perfc/options.pb-c.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef Google__Protobuf__Compiler__CodeGeneratorRequest gen_request;
typedef Google__Protobuf__Compiler__CodeGeneratorResponse gen_response;
typedef Google__Protobuf__Compiler__CodeGeneratorResponse__File gen_file;
typedef Google__Protobuf__FileDescriptorProto file_desc;
typedef Google__Protobuf__DescriptorProto msg_desc;
typedef Google__Protobuf__EnumDescriptorProto enum_desc;
typedef Google__Protobuf__ServiceDescriptorProto svc_desc;
typedef Google__Protobuf__MethodDescriptorProto method_desc;
typedef Google__Protobuf__FieldDescriptorProto field_desc;

/* Extension numbers of proto/perfc/options.proto; see docs/generator.md. */
enum {
  EXT_METHOD = 51001,
  EXT_CACHE = 51002,
  EXT_INVALIDATE = 51003,
};

/* The templates the generator renders, by file name in templates/. */
enum { T_HEADER, T_SOURCE, T_HANDLERS, T_MAIN, T_COUNT };
static const char *const template_names[T_COUNT] = {
    "perfc.h.tmpl", "perfc.c.tmpl", "handlers.c.tmpl", "main.c.tmpl"};

typedef struct params {
  char *templates_dir;
  char *stubs_dir;
  char *openapi_dir;
} params;

/* ---- a string set with an origin per name, for collision checks -------- */

typedef struct name_entry {
  char *name;
  char *origin;
  struct name_entry *next;
} name_entry;

typedef struct name_set {
  name_entry *slots[4096];
} name_set;

static size_t hash_str(const char *s) {
  size_t h = 1469598103934665603u;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211u;
  return h;
}

static const char *set_find(const name_set *set, const char *name) {
  for (name_entry *e = set->slots[hash_str(name) % 4096]; e; e = e->next)
    if (strcmp(e->name, name) == 0)
      return e->origin;
  return NULL;
}

/* Adds name (taking ownership of it); the first origin wins. */
static void set_add_owned(name_set *set, char *name, const char *origin) {
  if (set_find(set, name)) {
    free(name);
    return;
  }
  name_entry *e = perfc__xmalloc(sizeof *e);
  size_t h = hash_str(name) % 4096;
  e->name = name;
  e->origin = perfc__xstrdup(origin);
  e->next = set->slots[h];
  set->slots[h] = e;
}

static void set_free(name_set *set) {
  for (size_t i = 0; i < 4096; i++) {
    name_entry *e = set->slots[i];
    while (e) {
      name_entry *next = e->next;
      free(e->name);
      free(e->origin);
      free(e);
      e = next;
    }
  }
}

/* ---- small helpers ----------------------------------------------------- */

static char *join_name(const char *prefix, const char *name) {
  return prefix[0] ? perfc__xasprintf("%s.%s", prefix, name)
                   : perfc__xstrdup(name);
}

/* A C string literal's contents; proto paths may in theory hold anything. */
static char *c_escape(const char *s) {
  perfc__buf b = {0};
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      perfc__buf_printf(&b, "\\%c", c);
    else if (c < 0x20 || c >= 0x7f)
      perfc__buf_printf(&b, "\\%03o", c);
    else
      perfc__buf_putc(&b, (char)c);
  }
  return perfc__buf_take(&b);
}

/* protoc-c's style of turning a path into an identifier: letters, digits
 * kept, everything else as _XX hex, so distinct paths give distinct guards. */
static char *path_ident(const char *path) {
  perfc__buf b = {0};
  for (const char *p = path; *p; p++) {
    unsigned char c = (unsigned char)*p;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
        (c >= '0' && c <= '9'))
      perfc__buf_putc(&b, (char)c);
    else
      perfc__buf_printf(&b, "_%02x", c);
  }
  return perfc__buf_take(&b);
}

/* "a/b/foo.proto" -> "a/b/foo" */
static char *strip_proto(const char *path) {
  size_t n = strlen(path);
  if (n > 6 && strcmp(path + n - 6, ".proto") == 0)
    n -= 6;
  return perfc__xstrndup(path, n);
}

static const file_desc *find_file(const gen_request *req, const char *name) {
  for (size_t i = 0; i < req->n_proto_file; i++)
    if (req->proto_file[i]->name && strcmp(req->proto_file[i]->name, name) == 0)
      return req->proto_file[i];
  return NULL;
}

static const msg_desc *find_in_msgs(msg_desc *const *msgs, size_t n,
                                    const char *prefix, const char *want) {
  for (size_t i = 0; i < n; i++) {
    if (msgs[i]->name == NULL)
      continue; /* a nameless message can be no method's type */
    char *full = perfc__xasprintf("%s.%s", prefix, msgs[i]->name);
    const msg_desc *found = NULL;
    if (strcmp(full, want) == 0)
      found = msgs[i];
    else if (strncmp(full, want, strlen(full)) == 0 &&
             want[strlen(full)] == '.')
      found = find_in_msgs(msgs[i]->nested_type, msgs[i]->n_nested_type, full,
                           want);
    free(full);
    if (found)
      return found;
  }
  return NULL;
}

/* Finds a message by its fully qualified name with the leading dot
 * (".a.b.Outer.Inner"), as method and field type names are given. */
static const msg_desc *find_message(const gen_request *req, const char *want,
                                    const file_desc **file) {
  for (size_t i = 0; i < req->n_proto_file; i++) {
    const file_desc *f = req->proto_file[i];
    char *prefix = f->package && f->package[0]
                       ? perfc__xasprintf(".%s", f->package)
                       : perfc__xstrdup("");
    const msg_desc *m =
        find_in_msgs(f->message_type, f->n_message_type, prefix, want);
    free(prefix);
    if (m) {
      if (file)
        *file = f;
      return m;
    }
  }
  return NULL;
}

const msg_desc *perfc__gen_find_message(const gen_request *req,
                                        const char *type_name,
                                        const file_desc **file) {
  return type_name ? find_message(req, type_name, file) : NULL;
}

/* Reads one varint at *p (below end); returns 0 or -1 when truncated. */
static int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *out) {
  uint64_t v = 0;
  for (int shift = 0; *p < end && shift < 64; shift += 7) {
    uint8_t b = *(*p)++;
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *out = v;
      return 0;
    }
  }
  return -1;
}

/* protoc-c's `option (pb_c_file).c_package = "x.y"` (protobuf-c.proto:
 * FileOptions extension 1019, field 6) renames every C identifier of the
 * file. We decode just that string from the unknown fields of FileOptions
 * rather than compiling protobuf-c.proto. Returns a malloc'd string or NULL
 * when the file has none. */
static char *file_c_package(const file_desc *f) {
  char *found = NULL;
  if (!f->options)
    return NULL;
  const ProtobufCMessage *base = &f->options->base;
  for (unsigned i = 0; i < base->n_unknown_fields; i++) {
    const ProtobufCMessageUnknownField *u = &base->unknown_fields[i];
    const uint8_t *p = u->data, *end = u->data + u->len;
    uint64_t n;
    if (u->tag != 1019 ||
        u->wire_type != PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED ||
        read_varint(&p, end, &n) != 0 || n != (uint64_t)(end - p))
      continue;
    while (p < end) {
      uint64_t key, v;
      if (read_varint(&p, end, &key) != 0)
        break;
      unsigned wt = (unsigned)(key & 7);
      if (wt == 0) {
        if (read_varint(&p, end, &v) != 0)
          break;
      } else if (wt == 2) {
        if (read_varint(&p, end, &v) != 0 || v > (uint64_t)(end - p))
          break;
        if (key >> 3 == 6) {
          free(found);
          found = perfc__xstrndup((const char *)p, (size_t)v);
        }
        p += v;
      } else if (wt == 1 && end - p >= 8) {
        p += 8;
      } else if (wt == 5 && end - p >= 4) {
        p += 4;
      } else {
        break;
      }
    }
  }
  return found;
}

/* The dotted name protoc-c mangles for `full` (no leading dot) declared in
 * `f`: the full name, with the package swapped for c_package when the file
 * sets one (protoc-c's OverrideFullName). Malloc'd. */
static char *c_scoped_name(const file_desc *f, const char *full) {
  char *cpkg = file_c_package(f);
  if (!cpkg)
    return perfc__xstrdup(full);
  const char *pkg = f->package ? f->package : "";
  char *r = pkg[0] ? perfc__xasprintf("%s%s", cpkg, full + strlen(pkg))
                   : perfc__xasprintf("%s.%s", cpkg, full);
  free(cpkg);
  return r;
}

/* ---- parameters -------------------------------------------------------- */

static int parse_params(const char *text, params *out, char **err) {
  memset(out, 0, sizeof *out);
  if (!text || !text[0])
    return 0;
  char *copy = perfc__xstrdup(text);
  int rv = 0;
  for (char *tok = copy; tok && !rv;) {
    char *comma = strchr(tok, ',');
    if (comma)
      *comma = '\0';
    char *eq = strchr(tok, '=');
    char *key = tok;
    char *val = eq ? eq + 1 : NULL;
    if (eq)
      *eq = '\0';
    char **slot = NULL;
    if (strcmp(key, "templates") == 0)
      slot = &out->templates_dir;
    else if (strcmp(key, "stubs") == 0)
      slot = &out->stubs_dir;
    else if (strcmp(key, "openapi") == 0)
      slot = &out->openapi_dir;
    if (!key[0] && !val) {
      /* An empty item ("a=b,,c=d" or a trailing comma) is harmless. */
    } else if (!slot) {
      *err = perfc__xasprintf(
          "protoc-gen-perfc: unknown parameter \"%s\"; known parameters: "
          "templates=DIR (use the templates in DIR instead of the built-in "
          "ones), stubs=DIR (write handler scaffolding into DIR), "
          "openapi=DIR (write an OpenAPI 3.0 document per file with "
          "google.api.http routes into DIR)",
          key);
      rv = -1;
    } else if (!val || !val[0]) {
      *err = perfc__xasprintf(
          "protoc-gen-perfc: parameter \"%s\" needs a directory: %s=DIR", key,
          key);
      rv = -1;
    } else {
      free(*slot);
      *slot = perfc__xstrdup(val);
    }
    tok = comma ? comma + 1 : NULL;
  }
  free(copy);
  return rv;
}

static void params_free(params *p) {
  free(p->templates_dir);
  free(p->stubs_dir);
  free(p->openapi_dir);
}

/* ---- templates --------------------------------------------------------- */

static int read_file(const char *path, char **data, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return -1;
  perfc__buf b = {0};
  char chunk[8192];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
    perfc__buf_append(&b, chunk, n);
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    perfc__buf_free(&b);
    return -1;
  }
  *len = b.len;
  *data = perfc__buf_take(&b);
  return 0;
}

/* Loads every template: from templates=DIR when that directory has a file
 * of the name, else the built-in one, so a user can override just one. */
static int load_templates(const params *prm, perfc__tmpl *out[T_COUNT],
                          char **err) {
  if (prm->templates_dir) {
    struct stat st;
    if (stat(prm->templates_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
      *err = perfc__xasprintf("protoc-gen-perfc: templates=%s: not a "
                              "directory",
                              prm->templates_dir);
      return -1;
    }
  }
  for (int i = 0; i < T_COUNT; i++) {
    out[i] = NULL;
    char *text = NULL;
    size_t len = 0;
    char *label = NULL;
    if (prm->templates_dir) {
      char *path =
          perfc__xasprintf("%s/%s", prm->templates_dir, template_names[i]);
      if (read_file(path, &text, &len) == 0)
        label = path;
      else
        free(path);
    }
    if (!label) {
      for (size_t j = 0; j < perfc__n_embedded_templates; j++) {
        if (strcmp(perfc__embedded_templates[j].name, template_names[i]) == 0) {
          text = perfc__xstrndup(perfc__embedded_templates[j].text,
                                 perfc__embedded_templates[j].len);
          len = perfc__embedded_templates[j].len;
          label =
              perfc__xasprintf("(built-in) templates/%s", template_names[i]);
        }
      }
    }
    if (!label) {
      *err = perfc__xasprintf("protoc-gen-perfc: template %s is missing (it "
                              "is not built in and not in templates=DIR)",
                              template_names[i]);
      return -1;
    }
    int rc = perfc__tmpl_parse(&out[i], label, text, len, err);
    free(text);
    free(label);
    if (rc != 0)
      return -1;
  }
  return 0;
}

/* ---- protoc-c's names, for the collision check ------------------------- */

/* The names protoc-c emits for enum `e` declared in scope `scope` (a package
 * or an enclosing message's full name): its type, its descriptor, and one
 * constant per value. */
static void add_enum_names(name_set *set, const file_desc *f,
                           const enum_desc *e, const char *scope) {
  char *efull = join_name(scope, e->name);
  char *escoped = c_scoped_name(f, efull);
  char *ec = perfc__full_name_to_c(escoped);
  char *el = perfc__full_name_to_lower(escoped);
  char *eu = perfc__full_name_to_upper(escoped);
  free(escoped);
  char *eorigin = perfc__xasprintf("protoc-c's code for enum %s", efull);
  set_add_owned(set, perfc__xstrdup(ec), eorigin);
  set_add_owned(set, perfc__xasprintf("%s__descriptor", el), eorigin);
  for (size_t v = 0; v < e->n_value; v++)
    set_add_owned(set, perfc__xasprintf("%s__%s", eu, e->value[v]->name),
                  eorigin);
  free(efull), free(ec), free(el), free(eu), free(eorigin);
}

static void add_msg_names(name_set *set, const file_desc *f, const msg_desc *m,
                          const char *scope) {
  char *full = join_name(scope, m->name);
  char *scoped = c_scoped_name(f, full);
  char *c = perfc__full_name_to_c(scoped);
  char *lc = perfc__full_name_to_lower(scoped);
  char *uc = perfc__full_name_to_upper(scoped);
  free(scoped);
  char *origin = perfc__xasprintf("protoc-c's code for message %s", full);
  static const char *const lsuffix[] = {"__init",
                                        "__get_packed_size",
                                        "__pack",
                                        "__pack_to_buffer",
                                        "__unpack",
                                        "__free_unpacked",
                                        "__descriptor",
                                        "__field_descriptors",
                                        "__field_indices_by_name",
                                        "__number_ranges"};
  set_add_owned(set, perfc__xstrdup(c), origin);
  set_add_owned(set, perfc__xasprintf("%s_Closure", c), origin);
  set_add_owned(set, perfc__xasprintf("%s__INIT", uc), origin);
  for (size_t i = 0; i < sizeof lsuffix / sizeof lsuffix[0]; i++)
    set_add_owned(set, perfc__xasprintf("%s%s", lc, lsuffix[i]), origin);
  for (size_t i = 0; i < m->n_oneof_decl; i++) {
    char *oc = perfc__to_camel(m->oneof_decl[i]->name);
    char *ou = perfc__to_upper(m->oneof_decl[i]->name);
    set_add_owned(set, perfc__xasprintf("%s__%sCase", c, oc), origin);
    set_add_owned(set, perfc__xasprintf("%s__%s__NOT_SET", uc, ou), origin);
    for (size_t k = 0; k < m->n_field; k++) {
      const field_desc *fd = m->field[k];
      if (fd->has_oneof_index && fd->oneof_index == (int32_t)i) {
        char *fu = perfc__to_upper(fd->name);
        set_add_owned(set, perfc__xasprintf("%s__%s_%s", uc, ou, fu), origin);
        free(fu);
      }
    }
    free(oc);
    free(ou);
  }
  for (size_t i = 0; i < m->n_nested_type; i++)
    add_msg_names(set, f, m->nested_type[i], full);
  for (size_t i = 0; i < m->n_enum_type; i++)
    add_enum_names(set, f, m->enum_type[i], full);
  free(full), free(c), free(lc), free(uc), free(origin);
}

static void add_file_names(name_set *set, const file_desc *f) {
  const char *pkg = f->package ? f->package : "";
  for (size_t i = 0; i < f->n_message_type; i++)
    add_msg_names(set, f, f->message_type[i], pkg);
  for (size_t i = 0; i < f->n_enum_type; i++)
    add_enum_names(set, f, f->enum_type[i], pkg);
  for (size_t i = 0; i < f->n_service; i++) {
    const svc_desc *s = f->service[i];
    char *full = join_name(pkg, s->name);
    char *scoped = c_scoped_name(f, full);
    char *c = perfc__full_name_to_c(scoped);
    char *lc = perfc__full_name_to_lower(scoped);
    char *uc = perfc__full_name_to_upper(scoped);
    free(scoped);
    /* Everything protobuf-c 1.4.1's c_service.cc emits for a service apart
     * from the per-method client functions (added by add_method_names),
     * each with what it is, so a clash can say what it clashes with. */
    static const struct {
      const char *pre;  /* before the service's C name */
      char which;       /* that name: 'c' type, 'l' lower, 'u' upper */
      const char *suf;  /* after it */
      const char *what;
    } svc_names[] = {
        {"", 'c', "_Service", "service type"},
        {"_", 'c', "_Service", "service struct tag"},
        {"", 'c', "_ServiceDestroy", "destroy function type"},
        {"", 'u', "__BASE_INIT", "BASE_INIT macro"},
        {"", 'u', "__INIT", "INIT macro"},
        {"", 'l', "__init", "initialiser function"},
        {"", 'l', "__descriptor", "service descriptor"},
        {"", 'l', "__method_descriptors", "method descriptor table"},
        {"", 'l', "__method_indices_by_name", "method index table"},
    };
    for (size_t k = 0; k < sizeof svc_names / sizeof svc_names[0]; k++) {
      const char *arg = svc_names[k].which == 'c'   ? c
                        : svc_names[k].which == 'l' ? lc
                                                    : uc;
      char *name = perfc__xasprintf("%s%s%s", svc_names[k].pre, arg,
                                    svc_names[k].suf);
      char *origin = perfc__xasprintf("protoc-c's %s for service %s",
                                      svc_names[k].what, full);
      set_add_owned(set, name, origin);
      free(origin);
    }
    free(full), free(c), free(lc), free(uc);
  }
}

/* protoc-c's client function for method `m` of service `full` (proto full
 * name) whose lower-case C prefix is `lc`, and the origin it is recorded
 * with. Both malloc'd. */
static char *client_fn_name(const char *lc, const char *method, char **origin,
                            const char *full) {
  char *ml = perfc__camel_to_lower(method);
  char *name = perfc__xasprintf("%s__%s", lc, ml);
  *origin = perfc__xasprintf("protoc-c's client function for method %s.%s",
                             full, method);
  free(ml);
  return name;
}

/* The per-method client functions of every service in `f`. Added after
 * every file's other names (add_file_names), so that a method whose
 * function has the name of some other protoc-c symbol finds that symbol's
 * origin in the set, not its own (check_method_names). */
static void add_method_names(name_set *set, const file_desc *f) {
  const char *pkg = f->package ? f->package : "";
  for (size_t i = 0; i < f->n_service; i++) {
    const svc_desc *s = f->service[i];
    char *full = join_name(pkg, s->name);
    char *scoped = c_scoped_name(f, full);
    char *lc = perfc__full_name_to_lower(scoped);
    free(scoped);
    for (size_t m = 0; m < s->n_method; m++) {
      char *origin;
      char *name = client_fn_name(lc, s->method[m]->name, &origin, full);
      set_add_owned(set, name, origin);
      free(origin);
    }
    free(full), free(lc);
  }
}

/* ---- options ----------------------------------------------------------- */

typedef struct method_opts {
  Perfc__MethodOptions *method;
  Perfc__CacheOptions *cache;
  Perfc__InvalidateOptions *invalidate;
} method_opts;

/* protobuf-c keeps a length-delimited unknown field with its varint length
 * prefix in `data`; this finds the payload behind it. */
static int unknown_payload(const ProtobufCMessageUnknownField *u,
                           const uint8_t **data, size_t *len) {
  uint64_t n = 0;
  size_t i = 0;
  for (int shift = 0; i < u->len && shift < 64; shift += 7) {
    uint8_t b = u->data[i++];
    n |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      if (n != u->len - i)
        return -1;
      *data = u->data + i;
      *len = (size_t)n;
      return 0;
    }
  }
  return -1;
}

/* The extensions arrive as unknown fields of google.protobuf.MethodOptions
 * (protobuf-c keeps those verbatim); each is one length-delimited message.
 * When protoc sends a field twice the last one wins, as in protobuf. */
static int read_method_opts(const method_desc *m, method_opts *o) {
  memset(o, 0, sizeof *o);
  if (!m->options)
    return 0;
  const ProtobufCMessage *base = &m->options->base;
  for (unsigned i = 0; i < base->n_unknown_fields; i++) {
    const ProtobufCMessageUnknownField *u = &base->unknown_fields[i];
    const uint8_t *data;
    size_t len;
    if (u->wire_type != PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED ||
        (u->tag != EXT_METHOD && u->tag != EXT_CACHE &&
         u->tag != EXT_INVALIDATE))
      continue;
    if (unknown_payload(u, &data, &len) != 0)
      return -1;
    if (u->tag == EXT_METHOD) {
      if (o->method)
        perfc__method_options__free_unpacked(o->method, NULL);
      o->method = perfc__method_options__unpack(NULL, len, data);
      if (!o->method)
        return -1;
    } else if (u->tag == EXT_CACHE) {
      if (o->cache)
        perfc__cache_options__free_unpacked(o->cache, NULL);
      o->cache = perfc__cache_options__unpack(NULL, len, data);
      if (!o->cache)
        return -1;
    } else if (u->tag == EXT_INVALIDATE) {
      if (o->invalidate)
        perfc__invalidate_options__free_unpacked(o->invalidate, NULL);
      o->invalidate = perfc__invalidate_options__unpack(NULL, len, data);
      if (!o->invalidate)
        return -1;
    }
  }
  return 0;
}

static void method_opts_free(method_opts *o) {
  if (o->method)
    perfc__method_options__free_unpacked(o->method, NULL);
  if (o->cache)
    perfc__cache_options__free_unpacked(o->cache, NULL);
  if (o->invalidate)
    perfc__invalidate_options__free_unpacked(o->invalidate, NULL);
}

/* Checks that every {field} (or {a.b}) in a key template names a field of
 * the request message. `what` says which option the key comes from. */
static int check_key_template(const gen_request *req, const msg_desc *input,
                              const char *input_name, const char *where,
                              const char *what, const char *key, char **err) {
  if (!key[0]) {
    *err = perfc__xasprintf("%s: %s is empty; give a key such as "
                            "\"user:{id}\"",
                            where, what);
    return -1;
  }
  for (const char *p = key; *p; p++) {
    if (*p == '}') {
      *err = perfc__xasprintf("%s: %s \"%s\" has a '}' without a '{'", where,
                              what, key);
      return -1;
    }
    if (*p != '{')
      continue;
    const char *close = strchr(p, '}');
    const char *reopen = strchr(p + 1, '{');
    if (!close || (reopen && reopen < close)) {
      *err = perfc__xasprintf("%s: %s \"%s\" has a '{' without a closing '}'",
                              where, what, key);
      return -1;
    }
    char *path = perfc__xstrndup(p + 1, (size_t)(close - p - 1));
    const msg_desc *msg = input;
    char *msg_name = perfc__xstrdup(input_name);
    int rv = 0;
    char *save = NULL;
    if (!path[0]) {
      *err = perfc__xasprintf("%s: %s \"%s\" has an empty '{}'; name a field "
                              "of %s",
                              where, what, key, input_name);
      rv = -1;
    }
    for (char *piece = rv ? NULL : strtok_r(path, ".", &save); piece;
         piece = strtok_r(NULL, ".", &save)) {
      const field_desc *fd = NULL;
      for (size_t f = 0; msg && f < msg->n_field; f++)
        if (strcmp(msg->field[f]->name, piece) == 0)
          fd = msg->field[f];
      if (!fd) {
        *err = perfc__xasprintf("%s: %s \"%s\" names field \"%s\", which "
                                "request message %s does not have",
                                where, what, key, piece, msg_name);
        rv = -1;
        break;
      }
      free(msg_name);
      msg_name = perfc__xstrdup(fd->type_name && fd->type_name[0] == '.'
                                    ? fd->type_name + 1
                                    : (fd->type_name ? fd->type_name : ""));
      msg = fd->type ==
                    GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_MESSAGE
                ? find_message(req, fd->type_name, NULL)
                : NULL;
    }
    free(msg_name);
    free(path);
    if (rv)
      return rv;
    p = close;
  }
  return 0;
}

/* An option left empty is unset (0: no timeout, the cache's TTL); anything
 * else must be a duration by the rule the configuration file uses too
 * (core/duration.c), "0" included. */
static int check_duration(const char *where, const char *what, const char *s,
                          int64_t *ms, char **err) {
  *ms = 0;
  if (s == NULL || s[0] == '\0')
    return 0;
  if (perfc__duration_parse_ms(s, ms) != 0) {
    *err = perfc__xasprintf("%s: %s \"%s\" is not a duration; write 0 or "
                            "<integer><unit> groups with units ms, s, m, h, "
                            "such as \"250ms\", \"2s\", \"10m\" or \"1m30s\"",
                            where, what, s);
    return -1;
  }
  return 0;
}

/* ---- the model --------------------------------------------------------- */

static const char *kind_enum(const method_desc *m) {
  int cs = m->has_client_streaming && m->client_streaming;
  int ss = m->has_server_streaming && m->server_streaming;
  return cs && ss ? "PERFC_METHOD_BIDI_STREAM"
         : cs     ? "PERFC_METHOD_CLIENT_STREAM"
         : ss     ? "PERFC_METHOD_SERVER_STREAM"
                  : "PERFC_METHOD_UNARY";
}

/* Appends our name for the collision check, reporting a clash. */
static int claim(name_set *ours, const name_set *theirs, char *name,
                 const char *origin, const char *where, char **err) {
  const char *other = set_find(theirs, name);
  if (!other)
    other = set_find(ours, name);
  if (other) {
    *err = perfc__xasprintf("%s: the generated name \"%s\" (%s) collides with "
                            "%s; rename the method or service",
                            where, name, origin, other);
    free(name);
    return -1;
  }
  set_add_owned(ours, name, origin);
  return 0;
}

static int add_type_vars(perfc__tv *tm, const gen_request *req,
                         const char *prefix, const char *type_name,
                         const char *where, const msg_desc **found,
                         char **err) {
  const file_desc *mf = NULL;
  /* protoc always names both types, but the request is still untrusted
   * input (a hand-made or truncated one reached strcmp(NULL) here). */
  if (type_name == NULL) {
    *err = perfc__xasprintf("%s: the method names no message type", where);
    return -1;
  }
  const msg_desc *m = find_message(req, type_name, &mf);
  if (!m) {
    *err = perfc__xasprintf("%s: message type %s is not in the request; "
                            "protoc sent an incomplete descriptor set",
                            where, type_name);
    return -1;
  }
  const char *full = type_name[0] == '.' ? type_name + 1 : type_name;
  char *scoped = c_scoped_name(mf, full);
  char *c = perfc__full_name_to_c(scoped);
  char *lc = perfc__full_name_to_lower(scoped);
  free(scoped);
  char key[32];
  snprintf(key, sizeof key, "%s_c", prefix);
  perfc__tv_set_str(tm, key, c);
  snprintf(key, sizeof key, "%s_desc", prefix);
  perfc__tv_set_strf(tm, key, "%s__descriptor", lc);
  snprintf(key, sizeof key, "%s_full", prefix);
  perfc__tv_set_str(tm, key, full);
  free(c);
  free(lc);
  if (found)
    *found = m;
  return 0;
}

/* Appends `c` to a C string literal's body, escaped, and doubled when it is
 * '%' since the literal is a printf format. */
static void fmt_lit_char(perfc__buf *b, char c) {
  if (c == '%')
    perfc__buf_puts(b, "%%");
  else if (c == '"' || c == '\\')
    perfc__buf_printf(b, "\\%c", c);
  else if ((unsigned char)c < 0x20 || (unsigned char)c >= 0x7f)
    perfc__buf_printf(b, "\\%03o", (unsigned char)c);
  else
    perfc__buf_printf(b, "%c", c);
}

/* Appends `c` to a C string literal's body, escaped (no '%' doubling: the
 * literal is copied, not a format). Octal escapes are always three digits,
 * so a digit after one cannot extend it. */
static void lit_char(perfc__buf *b, char c) {
  if (c == '"' || c == '\\')
    perfc__buf_printf(b, "\\%c", c);
  else if ((unsigned char)c < 0x20 || (unsigned char)c >= 0x7f)
    perfc__buf_printf(b, "\\%03o", (unsigned char)c);
  else
    perfc__buf_putc(b, c);
}

/* The key builder's pending literal text (`raw`, `n` bytes of the template
 * escaped as a C literal): copied with one memcpy into the key. */
static void build_flush_lit(perfc__buf *put, perfc__buf *lit, size_t *n,
                            size_t *size) {
  if (*n == 0)
    return;
  perfc__buf_printf(put, "  memcpy(p, \"%s\", %zu);\n  p += %zu;\n",
                    lit->data, *n, *n);
  *size += *n;
  *n = 0;
  lit->len = 0;
  lit->data[0] = '\0';
}

/* Turns a key template that check_key_template() accepted into a printf
 * format and its arguments over `r` (the request, typed): "item:{id}" ->
 * "item:%lld" and ", (long long)r->id"; and into `build`, the body of a C
 * function of (perfc_arena *a, const Req *r) that writes the same bytes
 * into the arena without a format (literals copied, integers through
 * perfc_cache_key_put_i64/u64, strings measured first so one allocation
 * fits the key) and returns them, or NULL when the arena is exhausted. The
 * generated code calls that function; the format stays a template value
 * for custom templates. A field on the way that is an
 * unset message reads as its default (0 or ""), as protobuf defines it.
 * Fields whose text would be ambiguous or unstable are refused: repeated
 * fields, bytes, floating point, messages as the last piece, and oneof
 * members (protoc-c keeps those in a union, so an unset one cannot be
 * read). */
static int key_c_format(const gen_request *req, const msg_desc *input,
                        const char *where, const char *what, const char *key,
                        char **fmt_out, char **args_out, char **build_out,
                        char **err) {
  perfc__buf fmt = {0}, args = {0};
  /* The builder's body (see the comment above): `pre` reads the string
   * fields and their lengths, `put` writes the pieces at p; `size` counts
   * the bytes known at generation time (literals, integers' maximum, the
   * NUL) and `strs` the string fields. */
  perfc__buf pre = {0}, put = {0}, lit = {0}, sizes = {0};
  size_t lit_n = 0, size = 1, strs = 0, ints = 0;
  perfc__buf_puts(&lit, "");
  perfc__buf_puts(&sizes, "");
  int rv = 0;
  for (const char *p = key; *p && !rv; p++) {
    if (*p != '{') {
      fmt_lit_char(&fmt, *p);
      lit_char(&lit, *p);
      lit_n++;
      continue;
    }
    const char *close = strchr(p, '}');
    char *path = perfc__xstrndup(p + 1, (size_t)(close - p - 1));
    perfc__buf guard = {0}, access = {0};
    perfc__buf_puts(&access, "r");
    const msg_desc *msg = input;
    char *save = NULL;
    const field_desc *fd = NULL;
    for (char *piece = strtok_r(path, ".", &save); piece && !rv;
         piece = strtok_r(NULL, ".", &save)) {
      if (fd) {
        /* The previous piece was a message: guard against it being unset. */
        perfc__buf_printf(&guard, "%s%s", guard.len ? " && " : "", access.data);
        msg = find_message(req, fd->type_name, NULL);
      }
      fd = NULL;
      for (size_t f = 0; msg && f < msg->n_field; f++)
        if (strcmp(msg->field[f]->name, piece) == 0)
          fd = msg->field[f];
      /* protoc-c's FieldName(): the proto name lower-cased, '_' appended
       * to a keyword. */
      char *cname = perfc__xstrdup(fd->name);
      for (char *q = cname; *q; q++)
        *q = (char)tolower((unsigned char)*q);
      if (perfc__is_c_keyword(cname))
        perfc__buf_printf(&access, "->%s_", cname);
      else
        perfc__buf_printf(&access, "->%s", cname);
      free(cname);
      const char *why = NULL;
      if (fd->label ==
          GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_REPEATED)
        why = "is repeated";
      else if (fd->has_oneof_index && !fd->proto3_optional)
        why = "is a member of a oneof";
      if (why) {
        *err = perfc__xasprintf("%s: %s \"%s\": field \"%s\" %s; key fields "
                                "must be singular integers, bools, enums or "
                                "strings (through singular messages)",
                                where, what, key, piece, why);
        rv = -1;
      }
    }
    free(path);
    const char *conv = NULL, *cast = NULL, *zero = "0";
    if (!rv) {
      switch (fd->type) {
      case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_INT32:
      case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_INT64:
      case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SINT32:
      case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SINT64:
      case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SFIXED32:
      case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SFIXED64:
        conv = "%lld", cast = "(long long)";
        break;
      case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_UINT32:
      case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_UINT64:
      case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_FIXED32:
      case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_FIXED64:
        conv = "%llu", cast = "(unsigned long long)";
        break;
      case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_BOOL:
      case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_ENUM:
        conv = "%d", cast = "(int)";
        break;
      case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_STRING:
        conv = "%s", cast = "", zero = "\"\"";
        break;
      default:
        *err = perfc__xasprintf("%s: %s \"%s\": field \"%s\" is not an "
                                "integer, bool, enum or string; key fields "
                                "must be singular integers, bools, enums or "
                                "strings (through singular messages)",
                                where, what, key, fd->name);
        rv = -1;
      }
    }
    if (!rv) {
      perfc__buf_puts(&fmt, conv);
      int is_str = strcmp(conv, "%s") == 0;
      /* protoc-c sets unset strings to "", but a request built by hand
       * may hold NULL: read that as "" too. */
      if (is_str)
        perfc__buf_printf(&guard, "%s%s", guard.len ? " && " : "", access.data);
      perfc__buf val = {0};
      if (guard.len)
        perfc__buf_printf(&val, "%s(%s ? %s : %s)", cast, guard.data,
                          access.data, zero);
      else
        perfc__buf_printf(&val, "%s%s", cast, access.data);
      perfc__buf_printf(&args, ", %s", val.data);
      build_flush_lit(&put, &lit, &lit_n, &size);
      if (is_str) {
        perfc__buf_printf(&pre,
                          "  const char *s%zu = %s;\n"
                          "  size_t n%zu = strlen(s%zu);\n",
                          strs, val.data, strs, strs);
        perfc__buf_printf(&put, "  memcpy(p, s%zu, n%zu);\n  p += n%zu;\n",
                          strs, strs, strs);
        perfc__buf_printf(&sizes, " + n%zu", strs);
        strs++;
      } else {
        /* %lld and %d print what put_i64 writes of the same cast value. */
        perfc__buf_printf(&put, "  p = perfc_cache_key_put_%s(p, %s);\n",
                          strcmp(conv, "%llu") == 0 ? "u64" : "i64",
                          val.data);
        ints++;
      }
      perfc__buf_free(&val);
    }
    perfc__buf_free(&guard);
    perfc__buf_free(&access);
    p = close;
  }
  if (!rv)
    build_flush_lit(&put, &lit, &lit_n, &size);
  perfc__buf_free(&lit);
  if (rv) {
    perfc__buf_free(&fmt);
    perfc__buf_free(&args);
    perfc__buf_free(&pre);
    perfc__buf_free(&put);
    perfc__buf_free(&sizes);
    return rv;
  }
  perfc__buf build = {0};
  if (ints == 1)
    perfc__buf_puts(&sizes, " + PERFC_CACHE_KEY_INT_MAX");
  else if (ints > 1)
    perfc__buf_printf(&sizes, " + %zu * PERFC_CACHE_KEY_INT_MAX", ints);
  perfc__buf_printf(&build,
                    "%s%s  char *k = perfc_arena_alloc(a, %zu%s);\n"
                    "  if (k == NULL)\n"
                    "    return NULL;\n"
                    "  char *p = k;\n"
                    "%s  *p = '\\0';\n"
                    "  return k;",
                    strs + ints ? "" : "  (void)r; /* the key names no field */\n",
                    pre.len ? pre.data : "", size, sizes.data,
                    put.len ? put.data : "");
  perfc__buf_free(&pre);
  perfc__buf_free(&put);
  perfc__buf_free(&sizes);
  *fmt_out = perfc__buf_take(&fmt);
  *args_out = perfc__buf_take(&args);
  *build_out = perfc__buf_take(&build);
  return 0;
}

/* Whether a message reachable from `type_name` (the message itself, its
 * message fields and theirs, map entries included) has a string field and
 * is declared in a file that is not proto3. Such strings need not be UTF-8
 * (protobuf requires UTF-8 in proto3 only), so the method's check becomes
 * NUL only. `seen` holds the type names already looked at (recursive
 * messages). */
static int reaches_non_proto3_strings(const gen_request *req,
                                      const char *type_name,
                                      const char ***seen, size_t *n_seen) {
  for (size_t i = 0; i < *n_seen; i++)
    if (strcmp((*seen)[i], type_name) == 0)
      return 0;
  *seen = perfc__xrealloc(*seen, (*n_seen + 1) * sizeof **seen);
  (*seen)[(*n_seen)++] = type_name;
  const file_desc *mf = NULL;
  const msg_desc *m = find_message(req, type_name, &mf);
  if (!m)
    return 0;
  int proto3 = mf->syntax && strcmp(mf->syntax, "proto3") == 0;
  for (size_t i = 0; i < m->n_field; i++) {
    const field_desc *fd = m->field[i];
    if (!fd->has_type)
      continue;
    if (fd->type == GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_STRING &&
        !proto3)
      return 1;
    if (fd->type == GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_MESSAGE &&
        fd->type_name &&
        reaches_non_proto3_strings(req, fd->type_name, seen, n_seen))
      return 1;
  }
  return 0;
}

/* The method table's `strings` (perfc_string_check): UTF-8 and NUL for
 * proto3 messages, NUL only when a proto2 message with strings is
 * reachable from the request or the response (one mode per method, so a
 * proto3 message mixed with proto2 ones gets the weaker check), nothing
 * with (perfc.method).raw_strings. */
static const char *string_check(const gen_request *req, const method_desc *m,
                                const method_opts *o) {
  if (o->method && o->method->raw_strings)
    return "PERFC_STRINGS_RAW";
  const char **seen = NULL;
  size_t n_seen = 0;
  int weak = reaches_non_proto3_strings(req, m->input_type, &seen, &n_seen) ||
             reaches_non_proto3_strings(req, m->output_type, &seen, &n_seen);
  free(seen);
  return weak ? "PERFC_STRINGS_NO_NUL" : "PERFC_STRINGS_UTF8";
}

static int build_method(const gen_request *req, const file_desc *f,
                        const char *svc_full, const char *svc_lc,
                        const char *svc_uc, const method_desc *m, perfc__tv *tm,
                        name_set *ours, const name_set *theirs, int *wired,
                        char **err) {
  char *where =
      perfc__xasprintf("%s: service %s, method %s", f->name, svc_full, m->name);
  char *ml = perfc__camel_to_lower(m->name);
  char *mu = perfc__camel_to_upper(m->name);
  const char *kind = kind_enum(m);
  method_opts o;
  int rv = -1;
  const msg_desc *input = NULL;
  memset(&o, 0, sizeof o);

  perfc__tv_set_str(tm, "name", m->name);
  perfc__tv_set_str(tm, "lc_name", ml);
  perfc__tv_set_str(tm, "uc_name", mu);
  perfc__tv_set_strf(tm, "path", "/%s/%s", svc_full, m->name);
  perfc__tv_set_str(tm, "kind", kind);
  perfc__tv_set_bool(tm, "unary", strcmp(kind, "PERFC_METHOD_UNARY") == 0);
  perfc__tv_set_bool(tm, "client_stream",
                     strcmp(kind, "PERFC_METHOD_CLIENT_STREAM") == 0);
  perfc__tv_set_bool(tm, "server_stream",
                     strcmp(kind, "PERFC_METHOD_SERVER_STREAM") == 0);
  perfc__tv_set_bool(tm, "bidi", strcmp(kind, "PERFC_METHOD_BIDI_STREAM") == 0);
  if (add_type_vars(tm, req, "in", m->input_type, where, &input, err) != 0 ||
      add_type_vars(tm, req, "out", m->output_type, where, NULL, err) != 0)
    goto out;

  if (read_method_opts(m, &o) != 0) {
    *err = perfc__xasprintf("%s: the perfc options (perfc.method, perfc.cache, "
                            "perfc.invalidate) do not decode; was the file "
                            "compiled against a different perfc/options.proto?",
                            where);
    goto out;
  }
  const char *executor = "PERFC_EXEC_DEFAULT";
  int64_t timeout_ms = 0;
  int idempotent = 0;
  if (o.method) {
    switch (o.method->executor) {
    case PERFC__METHOD_OPTIONS__EXECUTOR__INLINE:
      executor = "PERFC_EXEC_INLINE";
      break;
    case PERFC__METHOD_OPTIONS__EXECUTOR__POOL:
      executor = "PERFC_EXEC_POOL";
      break;
    default:
      break;
    }
    if (check_duration(where, "(perfc.method).timeout", o.method->timeout,
                       &timeout_ms, err) != 0)
      goto out;
    idempotent = o.method->idempotent != 0;
  }
  perfc__tv_set_str(tm, "executor", executor);
  perfc__tv_set_strf(tm, "timeout_ms", "%" PRId64, timeout_ms);
  perfc__tv_set_strf(tm, "idempotent", "%d", idempotent);
  perfc__tv_set_str(tm, "strings", string_check(req, m, &o));

  const char *in_full = perfc__tv_get_str(tm, "in_full");
  perfc__tv_set_bool(tm, "has_cache", o.cache != NULL);
  if (o.cache) {
    int64_t ttl = 0, neg = 0;
    if (strcmp(kind, "PERFC_METHOD_UNARY") != 0) {
      *err = perfc__xasprintf("%s: (perfc.cache) applies to unary methods "
                              "only; this method streams",
                              where);
      goto out;
    }
    if (check_key_template(req, input, in_full, where, "(perfc.cache).key",
                           o.cache->key, err) != 0 ||
        check_duration(where, "(perfc.cache).ttl", o.cache->ttl, &ttl, err) !=
            0 ||
        check_duration(where, "(perfc.cache).negative_ttl",
                       o.cache->negative_ttl, &neg, err) != 0)
      goto out;
    /* perfc_cache takes 32-bit milliseconds (49 days). */
    if (ttl > (int64_t)UINT32_MAX - 1 || neg > (int64_t)UINT32_MAX - 1) {
      *err = perfc__xasprintf("%s: (perfc.cache) ttl and negative_ttl must "
                              "be below 49 days",
                              where);
      goto out;
    }
    char *fmt = NULL, *args = NULL, *build = NULL;
    if (key_c_format(req, input, where, "(perfc.cache).key", o.cache->key, &fmt,
                     &args, &build, err) != 0)
      goto out;
    perfc__tv_set_str(tm, "cache_key", o.cache->key);
    perfc__tv_set_str(tm, "cache_key_fmt", fmt);
    perfc__tv_set_str(tm, "cache_key_args", args);
    perfc__tv_set_str(tm, "cache_key_build", build);
    free(fmt), free(args), free(build);
    perfc__tv_set_strf(tm, "cache_ttl_ms", "%" PRId64, ttl);
    perfc__tv_set_strf(tm, "cache_negative_ttl_ms", "%" PRId64, neg);
    /* An empty ttl means the cache's default; an empty negative_ttl means
     * "not found" is not cached (options.proto). */
    perfc__tv_set_strf(tm, "cache_ttl_c", "%" PRId64 "u", ttl);
    if (neg)
      perfc__tv_set_strf(tm, "cache_negative_ttl_c", "%" PRId64 "u", neg);
    else
      perfc__tv_set_str(tm, "cache_negative_ttl_c", "PERFC_CACHE_TTL_NONE");
    *wired |= 1;
  }
  perfc__tv *inv = perfc__tv_set_list(tm, "invalidate");
  if (o.invalidate) {
    for (size_t k = 0; k < o.invalidate->n_keys; k++) {
      if (check_key_template(req, input, in_full, where,
                             "(perfc.invalidate) key", o.invalidate->keys[k],
                             err) != 0)
        goto out;
      char *fmt = NULL, *args = NULL, *build = NULL;
      if (key_c_format(req, input, where, "(perfc.invalidate) key",
                       o.invalidate->keys[k], &fmt, &args, &build, err) != 0)
        goto out;
      perfc__tv *ti = perfc__tv_list_add(inv);
      perfc__tv_set_str(ti, "key", o.invalidate->keys[k]);
      perfc__tv_set_str(ti, "key_fmt", fmt);
      perfc__tv_set_str(ti, "key_args", args);
      perfc__tv_set_str(ti, "key_build", build);
      free(fmt), free(args), free(build);
    }
    /* The keys come from the one request, which only a unary method has. */
    if (o.invalidate->n_keys && strcmp(kind, "PERFC_METHOD_UNARY") != 0) {
      *err = perfc__xasprintf("%s: (perfc.invalidate) applies to unary "
                              "methods only; this method streams",
                              where);
      goto out;
    }
  }
  size_t n_inv = o.invalidate ? o.invalidate->n_keys : 0;
  /* A read that deletes its own cache entries has no meaning the
   * generated trampoline could give it. */
  if (o.cache && n_inv) {
    *err = perfc__xasprintf("%s: (perfc.cache) and (perfc.invalidate) on one "
                            "method; a method either reads through the cache "
                            "or invalidates it",
                            where);
    goto out;
  }
  perfc__tv_set_bool(tm, "has_invalidate", n_inv > 0);
  perfc__tv_set_strf(tm, "n_invalidate", "%zu", n_inv);
  if (n_inv)
    *wired |= 1;
  /* A unary method that does not invalidate may have an entry in the
   * service's AsyncHandlers (an async load for a cached one, a handler on
   * the event loop for a plain one): bit 1 says the struct has a member. */
  int async_ok = strcmp(kind, "PERFC_METHOD_UNARY") == 0 && n_inv == 0;
  perfc__tv_set_bool(tm, "async_ok", async_ok);
  perfc__tv_set_bool(tm, "async_plain", async_ok && o.cache == NULL);
  if (async_ok)
    *wired |= 2;

  /* Every name perfc adds to the C namespace for this method. */
  char *origin =
      perfc__xasprintf("perfc's code for method %s.%s", svc_full, m->name);
  int bad =
      claim(ours, theirs, perfc__xasprintf("%s__PERFC_METHOD_%s", svc_uc, mu),
            origin, where, err) ||
      claim(ours, theirs, perfc__xasprintf("%s__%s__perfc_invoke", svc_lc, ml),
            origin, where, err);
  if (!bad && o.cache)
    bad =
        claim(ours, theirs, perfc__xasprintf("%s__%s__perfc_load", svc_lc, ml),
              origin, where, err) ||
        claim(ours, theirs, perfc__xasprintf("%s__%s__perfc_key", svc_lc, ml),
              origin, where, err);
  /* The key builders of the keys it invalidates. */
  for (size_t k = 0; !bad && k < n_inv; k++)
    bad = claim(ours, theirs,
                perfc__xasprintf("%s__%s__perfc_key%zu", svc_lc, ml, k),
                origin, where, err);
  if (!bad && strcmp(kind, "PERFC_METHOD_UNARY") == 0)
    bad =
        claim(ours, theirs, perfc__xasprintf("%s__%s__call", svc_lc, ml),
              origin, where, err) ||
        claim(ours, theirs, perfc__xasprintf("%s__%s__call_async", svc_lc, ml),
              origin, where, err);
  /* Client-side stream stubs: open, then write/read per direction, and
   * finish for the status (and a client stream's single response). */
  if (!bad && strcmp(kind, "PERFC_METHOD_UNARY") != 0)
    bad = claim(ours, theirs, perfc__xasprintf("%s__%s__open", svc_lc, ml),
                origin, where, err) ||
          claim(ours, theirs, perfc__xasprintf("%s__%s__finish", svc_lc, ml),
                origin, where, err);
  if (!bad && (strcmp(kind, "PERFC_METHOD_CLIENT_STREAM") == 0 ||
               strcmp(kind, "PERFC_METHOD_BIDI_STREAM") == 0))
    bad = claim(ours, theirs, perfc__xasprintf("%s__%s__write", svc_lc, ml),
                origin, where, err);
  if (!bad && (strcmp(kind, "PERFC_METHOD_SERVER_STREAM") == 0 ||
               strcmp(kind, "PERFC_METHOD_BIDI_STREAM") == 0))
    bad = claim(ours, theirs, perfc__xasprintf("%s__%s__read", svc_lc, ml),
                origin, where, err);
  if (!bad && (strcmp(kind, "PERFC_METHOD_CLIENT_STREAM") == 0 ||
               strcmp(kind, "PERFC_METHOD_BIDI_STREAM") == 0))
    bad = claim(ours, theirs, perfc__xasprintf("%s__%s__recv", svc_lc, ml),
                origin, where, err);
  if (!bad && (strcmp(kind, "PERFC_METHOD_SERVER_STREAM") == 0 ||
               strcmp(kind, "PERFC_METHOD_BIDI_STREAM") == 0))
    bad = claim(ours, theirs, perfc__xasprintf("%s__%s__send", svc_lc, ml),
                origin, where, err);
  if (!bad)
    bad = claim(ours, theirs, perfc__xasprintf("%s__%s__impl", svc_lc, ml),
                origin, where, err);
  free(origin);
  if (bad)
    goto out;
  rv = 0;
out:
  method_opts_free(&o);
  free(where);
  free(ml);
  free(mu);
  return rv;
}

/* Method names protoc-c cannot compile: C keywords, names that fold to
 * the same lower-case identifier, and names whose client function
 * (`<service>__<method>`, c_service.cc) is already another protoc-c
 * symbol: the service's own `__init`, `__descriptor`,
 * `__method_descriptors` or `__method_indices_by_name`, or any name another
 * message, enum or service of the request gets. Checked first because they
 * break protoc-c's own output, whatever perfc does. `lc` is the service's
 * lower-case C name. */
static int check_method_names(const file_desc *f, const char *svc_full,
                              const char *lc, const svc_desc *s,
                              const name_set *theirs, char **err) {
  for (size_t i = 0; i < s->n_method; i++) {
    char *li = perfc__camel_to_lower(s->method[i]->name);
    if (perfc__is_c_keyword(li)) {
      *err = perfc__xasprintf(
          "%s: service %s, method %s: the method's C name \"%s\" is a C "
          "keyword, so protoc-c's and perfc's code would not compile; rename "
          "the method",
          f->name, svc_full, s->method[i]->name, li);
      free(li);
      return -1;
    }
    for (size_t j = 0; j < i; j++) {
      char *lj = perfc__camel_to_lower(s->method[j]->name);
      int same = strcmp(li, lj) == 0;
      free(lj);
      if (same) {
        *err = perfc__xasprintf(
            "%s: service %s, methods %s and %s: both become \"%s\" in C, so "
            "protoc-c's and perfc's code would not compile; rename one of them",
            f->name, svc_full, s->method[j]->name, s->method[i]->name, li);
        free(li);
        return -1;
      }
    }
    free(li);
    char *mine;
    char *fn = client_fn_name(lc, s->method[i]->name, &mine, svc_full);
    const char *other = set_find(theirs, fn);
    int clash = other && strcmp(other, mine) != 0;
    if (clash)
      *err = perfc__xasprintf(
          "%s: service %s, method %s: protoc-c names the method's client "
          "function \"%s\", which is already %s, so protoc-c's code would "
          "not compile; rename the method",
          f->name, svc_full, s->method[i]->name, fn, other);
    free(fn);
    free(mine);
    if (clash)
      return -1;
  }
  return 0;
}

/* The serialized FileDescriptorProto for reflection, without
 * source_code_info: comments and spans are large and reflection clients
 * do not use them (grpc's own generators drop them too). Malloc'd. */
static uint8_t *pack_descriptor(const file_desc *f, size_t *len) {
  file_desc copy = *f;
  copy.source_code_info = NULL;
  size_t n = google__protobuf__file_descriptor_proto__get_packed_size(&copy);
  uint8_t *bytes = perfc__xmalloc(n ? n : 1);
  google__protobuf__file_descriptor_proto__pack(&copy, bytes);
  *len = n;
  return bytes;
}

/* pack_descriptor()'s bytes as the body of a C array initialiser. */
static char *descriptor_bytes(const file_desc *f, size_t *len) {
  size_t n = 0;
  uint8_t *bytes = pack_descriptor(f, &n);
  perfc__buf b = {0};
  for (size_t i = 0; i < n; i++) {
    if (i % 12 == 0)
      perfc__buf_puts(&b, "  ");
    perfc__buf_printf(&b, "0x%02x,", bytes[i]);
    perfc__buf_putc(&b, (i % 12 == 11 || i + 1 == n) ? '\n' : ' ');
  }
  free(bytes);
  *len = n;
  return perfc__buf_take(&b);
}

/* Whether the runtime carries `f` itself (perfc_file_desc_builtin(): the
 * well-known types and perfc/options.proto): same name and the very bytes
 * this plugin would embed, so reflection serves the same file either way.
 * A file of that name from another protobuf version, or a user's own
 * perfc/options.proto, differs and is embedded as before. */
static int runtime_carries(const file_desc *f) {
  for (size_t i = 0; i < perfc__n_builtin_files; i++) {
    const perfc_file_desc *b = &perfc__builtin_files[i];
    if (strcmp(b->name, f->name) != 0)
      continue;
    size_t n = 0;
    uint8_t *bytes = pack_descriptor(f, &n);
    int same = n == b->len && memcmp(bytes, b->data, n) == 0;
    free(bytes);
    return same;
  }
  return 0;
}

/* Appends to `out` the files `f` imports, directly or not, each once and
 * depth first in import order (grpc's reflection answers in this order: the
 * file, then each import followed by its own imports). protoc puts every one
 * of them in the request. */
static void collect_deps(const gen_request *req, const file_desc *f,
                         const file_desc ***out, size_t *n) {
  for (size_t i = 0; i < f->n_dependency; i++) {
    const file_desc *d = find_file(req, f->dependency[i]);
    if (!d)
      continue;
    int seen = 0;
    for (size_t k = 0; k < *n && !seen; k++)
      seen = (*out)[k] == d;
    if (seen)
      continue;
    *out = perfc__xrealloc(*out, (*n + 1) * sizeof **out);
    (*out)[(*n)++] = d;
    collect_deps(req, d, out, n);
  }
}

/* The model's `deps` list (the embedded descriptors of every transitive
 * import) and `files_name` / `n_files`. Returns -1 with `*err` set when a
 * name collides with protoc-c's. */
static int add_dep_files(perfc__tv *root, const gen_request *req,
                         const file_desc *f, const char *pkg_lc, name_set *ours,
                         const name_set *theirs, char **err) {
  const file_desc **deps = NULL;
  size_t n = 0;
  int bad = 0;
  /* The file itself counts as seen so an import cycle cannot add it. */
  deps = perfc__xmalloc(sizeof *deps);
  deps[n++] = f;
  collect_deps(req, f, &deps, &n);
  const char *fd_name = perfc__tv_get_str(root, "fd_name");
  perfc__tv *list = perfc__tv_set_list(root, "deps");
  int any_builtin = 0;
  for (size_t i = 1; !bad && i < n; i++) {
    perfc__tv *d = perfc__tv_list_add(list);
    char *esc = c_escape(deps[i]->name);
    perfc__tv_set_str(d, "name", deps[i]->name);
    perfc__tv_set_str(d, "name_c", esc);
    free(esc);
    int builtin = runtime_carries(deps[i]);
    perfc__tv_set_bool(d, "builtin", builtin);
    any_builtin |= builtin;
    /* The bytes stay in the model for every import, so a template written
     * before `builtin` existed (templates=DIR) still renders, embedding
     * them all as it did. */
    size_t len = 0;
    char *bytes = descriptor_bytes(deps[i], &len);
    char *var = perfc__xasprintf("%s_dep%zu", fd_name, i);
    perfc__tv_set_str(d, "var", var);
    perfc__tv_set_str(d, "bytes", bytes);
    perfc__tv_set_strf(d, "len", "%zu", len);
    bad = claim(ours, theirs, var, "perfc's embedded file descriptor", f->name,
                err);
    free(bytes);
  }
  perfc__tv_set_bool(root, "has_builtin_deps", any_builtin);
  perfc__tv_set_strf(root, "n_files", "%zu", n);
  perfc__tv_set_strf(root, "files_name", "%s%sperfc_files", pkg_lc,
                     pkg_lc[0] ? "__" : "");
  if (!bad)
    bad = claim(ours, theirs,
                perfc__xstrdup(perfc__tv_get_str(root, "files_name")),
                "perfc's embedded file descriptor list", f->name, err);
  free(deps);
  return bad ? -1 : 0;
}

static perfc__tv *build_file(const gen_request *req, const file_desc *f,
                             const name_set *theirs, char **err) {
  perfc__tv *root = perfc__tv_obj();
  name_set *ours = perfc__xcalloc(1, sizeof *ours);
  const char *pkg = f->package ? f->package : "";
  char *stem = strip_proto(f->name);
  const char *slash = strrchr(stem, '/');
  char *ident = path_ident(f->name);
  char *pkg_lc = perfc__full_name_to_lower(pkg);
  char *esc = c_escape(f->name);
  size_t fd_len = 0;
  char *fd_bytes = descriptor_bytes(f, &fd_len);
  int bad = 0;

  perfc__tv_set_str(root, "proto_file", f->name);
  perfc__tv_set_str(root, "proto_file_c", esc);
  perfc__tv_set_str(root, "base", slash ? slash + 1 : stem);
  perfc__tv_set_str(root, "package", pkg);
  perfc__tv_set_strf(root, "pb_header", "%s.pb-c.h", stem);
  perfc__tv_set_strf(root, "perfc_header", "%s.perfc.h", stem);
  perfc__tv_set_strf(root, "header_guard", "PERFC_%s__PERFC_H", ident);
  perfc__tv_set_str(root, "generator_version", PERFC_VERSION_STRING);
  perfc__tv_set_strf(root, "generator_version_number", "%d",
                     PERFC_VERSION_NUMBER);
  perfc__tv_set_strf(root, "fd_name", "%s%sperfc_file_descriptor", pkg_lc,
                     pkg_lc[0] ? "__" : "");
  perfc__tv_set_str(root, "fd_bytes", fd_bytes);
  perfc__tv_set_strf(root, "fd_len", "%zu", fd_len);
  bad = claim(ours, theirs, perfc__xstrdup(perfc__tv_get_str(root, "fd_name")),
              "perfc's embedded file descriptor", f->name, err);
  if (!bad)
    bad = add_dep_files(root, req, f, pkg_lc, ours, theirs, err);

  perfc__tv *services = perfc__tv_set_list(root, "services");
  int any_wired = 0, any_http = 0;
  for (size_t i = 0; !bad && i < f->n_service; i++) {
    const svc_desc *s = f->service[i];
    char *full = join_name(pkg, s->name);
    /* C names follow protoc-c's (c_package aware); the gRPC path and the
     * descriptor name keep the proto's full name. */
    char *scoped = c_scoped_name(f, full);
    char *c = perfc__full_name_to_c(scoped);
    char *lc = perfc__full_name_to_lower(scoped);
    char *uc = perfc__full_name_to_upper(scoped);
    free(scoped);
    char *where = perfc__xasprintf("%s: service %s", f->name, full);
    char *origin = perfc__xasprintf("perfc's code for service %s", full);
    perfc__tv *ts = perfc__tv_list_add(services);
    perfc__tv_set_str(ts, "name", s->name);
    perfc__tv_set_str(ts, "full_name", full);
    perfc__tv_set_str(ts, "c", c);
    perfc__tv_set_str(ts, "lc", lc);
    perfc__tv_set_str(ts, "uc", uc);
    perfc__tv_set_strf(ts, "n_methods", "%zu", s->n_method);
    perfc__tv_set_bool(ts, "has_methods", s->n_method > 0);
    bad = check_method_names(f, full, lc, s, theirs, err);
    static const char *const suffixes[] = {"__perfc_desc", "__perfc_methods",
                                           "__perfc_register",
                                           "__perfc_handlers"};
    for (size_t k = 0; !bad && k < sizeof suffixes / sizeof suffixes[0]; k++)
      bad = claim(ours, theirs, perfc__xasprintf("%s%s", lc, suffixes[k]),
                  origin, where, err);
    if (!bad)
      bad = claim(ours, theirs, perfc__xasprintf("%s_Handlers", c), origin,
                  where, err) ||
            claim(ours, theirs, perfc__xasprintf("%s__PERFC_METHOD_COUNT", uc),
                  origin, where, err);
    perfc__tv *methods = perfc__tv_set_list(ts, "methods");
    int wired = 0;
    perfc__http_routes routes = {0};
    for (size_t m = 0; !bad && m < s->n_method; m++) {
      bad =
          build_method(req, f, full, lc, uc, s->method[m],
                       perfc__tv_list_add(methods), ours, theirs, &wired, err);
      if (!bad) {
        char *mwhere = perfc__xasprintf("%s: service %s, method %s", f->name,
                                        full, s->method[m]->name);
        bad = perfc__http_add_method(req, mwhere, s->method[m], m, &routes,
                                     err) != 0;
        free(mwhere);
      }
    }
    /* The HTTP/JSON route table (google.api.http), compiled to data. */
    if (!bad)
      bad = perfc__http_check_conflicts(&routes, where, err) != 0;
    if (!bad && routes.n)
      bad = claim(ours, theirs, perfc__xasprintf("%s__perfc_http_routes", lc),
                  origin, where, err);
    perfc__http_model(&routes, ts);
    any_http |= routes.n > 0;
    perfc__http_routes_free(&routes);
    /* A service with (perfc.cache) or (perfc.invalidate) methods is
     * registered through a binding that carries the cache; a service
     * without any keeps the plain output. */
    perfc__tv_set_bool(ts, "has_async", (wired & 3) == 3);
    wired &= 1;
    perfc__tv_set_bool(ts, "cache_wired", wired);
    any_wired |= wired;
    static const char *const wired_suffixes[] = {
        "__perfc_register_cached", "__perfc_binding", "__perfc_bind",
        "__perfc_register_cached_async"};
    for (size_t k = 0; !bad && wired && k < 4; k++)
      bad = claim(ours, theirs, perfc__xasprintf("%s%s", lc, wired_suffixes[k]),
                  origin, where, err);
    free(full), free(c), free(lc), free(uc), free(where), free(origin);
  }
  perfc__tv_set_bool(root, "cache_wired_file", any_wired);
  perfc__tv_set_bool(root, "http_routes_file", any_http);
  /* A file of several services checks at start that each was registered
   * (templates/perfc.c.tmpl, check_name): an old main misses new ones. */
  perfc__tv_set_bool(root, "multi_service", f->n_service > 1);
  perfc__tv_set_strf(root, "services_name", "%s%sperfc_services", pkg_lc,
                     pkg_lc[0] ? "__" : "");
  perfc__tv_set_strf(root, "check_name", "%s%sperfc_check_registered",
                     pkg_lc, pkg_lc[0] ? "__" : "");
  if (!bad && f->n_service > 1)
    bad = claim(ours, theirs,
                perfc__xstrdup(perfc__tv_get_str(root, "services_name")),
                "perfc's list of the file's services", f->name, err) ||
          claim(ours, theirs,
                perfc__xstrdup(perfc__tv_get_str(root, "check_name")),
                "perfc's start-time registration check", f->name, err);
  set_free(ours);
  free(ours);
  free(stem), free(ident), free(pkg_lc), free(esc), free(fd_bytes);
  if (bad) {
    perfc__tv_free(root);
    return NULL;
  }
  return root;
}

/* ---- output ------------------------------------------------------------ */

static void add_output(gen_response *resp, char *name, char *content) {
  gen_file *file = perfc__xmalloc(sizeof *file);
  google__protobuf__compiler__code_generator_response__file__init(file);
  file->name = name;
  file->content = content;
  resp->file =
      perfc__xrealloc(resp->file, (resp->n_file + 1) * sizeof *resp->file);
  resp->file[resp->n_file++] = file;
}

/* Writes `content` to `path` only when no such file exists: scaffolding
 * belongs to the user from the moment it is written (scaffold_notes() says
 * what such a file lacks). */
static int write_new_file(const char *path, const char *content, char **err) {
  FILE *f = fopen(path, "wx");
  if (!f) {
    if (errno == EEXIST)
      return 0;
    *err = perfc__xasprintf("protoc-gen-perfc: stubs: cannot create %s: %s",
                            path, strerror(errno));
    return -1;
  }
  size_t n = strlen(content);
  int bad = fwrite(content, 1, n, f) != n;
  bad |= fclose(f) != 0;
  if (bad) {
    *err = perfc__xasprintf("protoc-gen-perfc: stubs: cannot write %s", path);
    return -1;
  }
  return 0;
}

/* Whether `word` occurs in text[0..len) as a whole C identifier (with
 * `dot`, preceded by '.': a designated initialiser's member). */
static int has_ident(const char *text, size_t len, const char *word, int dot) {
  size_t wl = strlen(word);
  for (size_t i = 0; i + wl <= len; i++) {
    if (memcmp(text + i, word, wl) != 0)
      continue;
    int before_ok = dot ? i > 0 && text[i - 1] == '.'
                        : i == 0 || !(isalnum((unsigned char)text[i - 1]) ||
                                      text[i - 1] == '_');
    int after_ok = i + wl == len || !(isalnum((unsigned char)text[i + wl]) ||
                                      text[i + wl] == '_');
    if (before_ok && after_ok)
      return 1;
  }
  return 0;
}

/* The initialiser `{...}` of `table` defined in `text` ("NAME = {" after
 * its declaration), as [*from, *to); 0 when there is none. */
static int find_table(const char *text, const char *table, size_t *from,
                      size_t *to) {
  size_t tl = strlen(table);
  for (const char *p = strstr(text, table); p; p = strstr(p + 1, table)) {
    const char *q = p + tl;
    if (p > text && (isalnum((unsigned char)p[-1]) || p[-1] == '_'))
      continue;
    while (isspace((unsigned char)*q))
      q++;
    if (*q != '=')
      continue;
    q++;
    while (isspace((unsigned char)*q))
      q++;
    if (*q != '{')
      continue;
    int depth = 0;
    for (const char *e = q; *e; e++) {
      depth += *e == '{';
      depth -= *e == '}';
      if (depth == 0) {
        *from = (size_t)(q - text);
        *to = (size_t)(e - text);
        return 1;
      }
    }
  }
  return 0;
}

/* Scaffolding is never rewritten, so when regenerating for a proto that
 * grew, say what the user's copy lacks: each method its handlers table
 * does not fill (it answers UNIMPLEMENTED), and each service its main does
 * not register (not served at all). Found by reading the files for the
 * generated names; a table filled some other way may be reported though
 * it is complete, which the note's wording allows for. */
static void scaffold_notes(const file_desc *f, const char *handlers_path,
                           const char *main_path, perfc__buf *notes) {
  const char *pkg = f->package ? f->package : "";
  char *htext = NULL, *mtext = NULL;
  size_t hlen = 0, mlen = 0;
  int have_h = read_file(handlers_path, &htext, &hlen) == 0;
  int have_m = read_file(main_path, &mtext, &mlen) == 0;
  if (have_h)
    perfc__buf_printf(notes, "protoc-gen-perfc: %s exists and is yours; left "
                             "unchanged\n", handlers_path);
  if (have_m)
    perfc__buf_printf(notes, "protoc-gen-perfc: %s exists and is yours; left "
                             "unchanged\n", main_path);
  for (size_t i = 0; i < f->n_service; i++) {
    const svc_desc *s = f->service[i];
    char *full = join_name(pkg, s->name);
    char *scoped = c_scoped_name(f, full);
    char *lc = perfc__full_name_to_lower(scoped);
    char *table = perfc__xasprintf("%s__perfc_handlers", lc);
    char *reg = perfc__xasprintf("%s__perfc_register", lc);
    size_t from = 0, to = 0;
    int has_table = have_h && find_table(htext, table, &from, &to);
    for (size_t m = 0; have_h && m < s->n_method; m++) {
      char *ml = perfc__camel_to_lower(s->method[m]->name);
      if (!has_table || !has_ident(htext + from, to - from, ml, 1))
        perfc__buf_printf(notes,
                          "protoc-gen-perfc: %s: /%s/%s has no handler "
                          "(no .%s in %s): answers UNIMPLEMENTED\n",
                          handlers_path, full, s->method[m]->name, ml, table);
      free(ml);
    }
    if (have_m && !has_ident(mtext, mlen, reg, 0)) {
      /* ..._register_cached registers it too (a longer identifier). */
      char *cached = perfc__xasprintf("%s_cached", reg);
      if (!has_ident(mtext, mlen, cached, 0))
        perfc__buf_printf(notes,
                          "protoc-gen-perfc: %s: service %s is not registered "
                          "(no %s call): it is not served; add "
                          "%s(srv, &%s, NULL)\n",
                          main_path, full, reg, reg, table);
      free(cached);
    }
    free(full), free(scoped), free(lc), free(table), free(reg);
  }
  free(htext);
  free(mtext);
}

static int render(const perfc__tmpl *t, const perfc__tv *model, char **out,
                  char **err) {
  perfc__buf b = {0};
  if (perfc__tmpl_render(t, model, &b, err) != 0) {
    perfc__buf_free(&b);
    return -1;
  }
  *out = perfc__buf_take(&b);
  return 0;
}

/* Renders the outputs of one file into `resp`, and its scaffolding (when
 * stubs=DIR is set) into `stubs`, which is written only once every file has
 * generated without error. */
static int generate_file(const gen_request *req, const params *prm,
                         perfc__tmpl *const tmpls[T_COUNT],
                         const name_set *theirs, const file_desc *f,
                         gen_response *resp, gen_response *stubs,
                         gen_response *openapi, perfc__buf *notes,
                         char **err) {
  perfc__tv *model = build_file(req, f, theirs, err);
  if (!model)
    return -1;
  if (prm->openapi_dir) {
    char *doc = NULL;
    if (perfc__openapi_document(req, f, &doc, err) != 0) {
      perfc__tv_free(model);
      return -1;
    }
    if (doc) {
      char *ostem = strip_proto(f->name);
      add_output(openapi,
                 perfc__xasprintf("%s/%s.openapi.json", prm->openapi_dir,
                                  ostem),
                 doc);
      free(ostem);
    }
  }
  char *stem = strip_proto(f->name);
  char *h = NULL, *c = NULL, *handlers = NULL, *mainc = NULL;
  int rv = -1;
  if (render(tmpls[T_HEADER], model, &h, err) != 0 ||
      render(tmpls[T_SOURCE], model, &c, err) != 0)
    goto out;
  add_output(resp, perfc__xasprintf("%s.perfc.h", stem), h);
  add_output(resp, perfc__xasprintf("%s.perfc.c", stem), c);
  h = c = NULL;
  if (prm->stubs_dir) {
    const char *base = perfc__tv_get_str(model, "base");
    if (render(tmpls[T_HANDLERS], model, &handlers, err) != 0 ||
        render(tmpls[T_MAIN], model, &mainc, err) != 0)
      goto out;
    char *hpath = perfc__xasprintf("%s/%s_handlers.c", prm->stubs_dir, base);
    char *mpath = perfc__xasprintf("%s/%s_main.c", prm->stubs_dir, base);
    scaffold_notes(f, hpath, mpath, notes);
    add_output(stubs, hpath, handlers);
    add_output(stubs, mpath, mainc);
    handlers = mainc = NULL;
  }
  rv = 0;
out:
  free(h), free(c), free(handlers), free(mainc), free(stem);
  perfc__tv_free(model);
  return rv;
}

/* Writes the OpenAPI documents, creating the folders on their way (the
 * document of a/b/foo.proto is DIR/a/b/foo.openapi.json, like the other
 * outputs). Each is written to a temporary name and renamed, so a reader
 * never sees half a document. */
static int write_openapi(const gen_response *docs, char **err) {
  for (size_t i = 0; i < docs->n_file; i++) {
    const char *path = docs->file[i]->name;
    char *dir = perfc__xstrdup(path);
    for (char *p = dir + 1; *p; p++) {
      if (*p != '/')
        continue;
      *p = '\0';
      if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        *err = perfc__xasprintf("protoc-gen-perfc: openapi: cannot create "
                                "%s: %s",
                                dir, strerror(errno));
        free(dir);
        return -1;
      }
      *p = '/';
    }
    free(dir);
    char *tmp = perfc__xasprintf("%s.tmp", path);
    FILE *fp = fopen(tmp, "wb");
    const char *content = docs->file[i]->content;
    int bad = !fp || fwrite(content, 1, strlen(content), fp) != strlen(content);
    if (fp)
      bad |= fclose(fp) != 0;
    if (!bad)
      bad = rename(tmp, path) != 0;
    if (bad) {
      *err = perfc__xasprintf("protoc-gen-perfc: openapi: cannot write %s: %s",
                              path, strerror(errno));
      remove(tmp);
      free(tmp);
      return -1;
    }
    free(tmp);
  }
  return 0;
}

/* Creates stubs=DIR when missing and writes the scaffolding that does not
 * exist yet. */
static int write_stubs(const params *prm, const gen_response *stubs,
                       char **err) {
  if (!prm->stubs_dir || stubs->n_file == 0)
    return 0;
  struct stat st;
  if (stat(prm->stubs_dir, &st) != 0 &&
      (errno != ENOENT || mkdir(prm->stubs_dir, 0777) != 0)) {
    *err = perfc__xasprintf("protoc-gen-perfc: stubs=%s: cannot create the "
                            "directory: %s",
                            prm->stubs_dir, strerror(errno));
    return -1;
  }
  if (stat(prm->stubs_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
    *err = perfc__xasprintf("protoc-gen-perfc: stubs=%s: not a directory",
                            prm->stubs_dir);
    return -1;
  }
  for (size_t i = 0; i < stubs->n_file; i++)
    if (write_new_file(stubs->file[i]->name, stubs->file[i]->content, err) != 0)
      return -1;
  return 0;
}

static int check_stub_names(const gen_request *req, const params *prm,
                            char **err) {
  if (!prm->stubs_dir)
    return 0;
  /* Scaffolding is named after the file's base name; two files with one
   * base name would silently share (and so skip) one scaffold. */
  for (size_t i = 0; i < req->n_file_to_generate; i++) {
    for (size_t j = 0; j < i; j++) {
      const char *a = strrchr(req->file_to_generate[i], '/');
      const char *b = strrchr(req->file_to_generate[j], '/');
      a = a ? a + 1 : req->file_to_generate[i];
      b = b ? b + 1 : req->file_to_generate[j];
      if (strcmp(a, b) == 0) {
        *err = perfc__xasprintf("protoc-gen-perfc: stubs=%s: %s and %s would "
                                "both get scaffolding named after \"%s\"; run "
                                "protoc for them separately with different "
                                "stubs directories",
                                prm->stubs_dir, req->file_to_generate[j],
                                req->file_to_generate[i], a);
        return -1;
      }
    }
  }
  return 0;
}

/* Every name the generator reads must be present. protoc always sets them,
 * but descriptor.proto makes all of them optional, and the request is
 * untrusted input to the plugin: fuzz_gen found NULL names reaching strcmp
 * and the name mangler. One pass up front keeps the rest of the generator
 * free of NULL checks. Returns 0, or -1 with `*err` set. */
static int check_enum(const enum_desc *e, const char *where, char **err) {
  if (e->name == NULL) {
    *err = perfc__xasprintf("protoc-gen-perfc: %s: an enum has no name", where);
    return -1;
  }
  for (size_t v = 0; v < e->n_value; v++)
    if (e->value[v]->name == NULL) {
      *err = perfc__xasprintf("protoc-gen-perfc: %s: enum %s has a value "
                              "without a name",
                              where, e->name);
      return -1;
    }
  return 0;
}

static int check_msg(const msg_desc *m, const char *where, char **err) {
  if (m->name == NULL) {
    *err =
        perfc__xasprintf("protoc-gen-perfc: %s: a message has no name", where);
    return -1;
  }
  for (size_t i = 0; i < m->n_field; i++)
    if (m->field[i]->name == NULL) {
      *err = perfc__xasprintf("protoc-gen-perfc: %s: message %s has a field "
                              "without a name",
                              where, m->name);
      return -1;
    }
  for (size_t i = 0; i < m->n_oneof_decl; i++)
    if (m->oneof_decl[i]->name == NULL) {
      *err = perfc__xasprintf("protoc-gen-perfc: %s: message %s has a oneof "
                              "without a name",
                              where, m->name);
      return -1;
    }
  for (size_t i = 0; i < m->n_nested_type; i++)
    if (check_msg(m->nested_type[i], where, err) != 0)
      return -1;
  for (size_t i = 0; i < m->n_enum_type; i++)
    if (check_enum(m->enum_type[i], where, err) != 0)
      return -1;
  return 0;
}

static int check_names(const gen_request *req, char **err) {
  for (size_t i = 0; i < req->n_proto_file; i++) {
    const file_desc *f = req->proto_file[i];
    if (f->name == NULL) {
      *err = perfc__xstrdup("protoc-gen-perfc: a file descriptor has no name; "
                            "run the plugin through protoc");
      return -1;
    }
    for (size_t k = 0; k < f->n_message_type; k++)
      if (check_msg(f->message_type[k], f->name, err) != 0)
        return -1;
    for (size_t k = 0; k < f->n_enum_type; k++)
      if (check_enum(f->enum_type[k], f->name, err) != 0)
        return -1;
    for (size_t k = 0; k < f->n_service; k++) {
      const svc_desc *sv = f->service[k];
      if (sv->name == NULL) {
        *err = perfc__xasprintf("protoc-gen-perfc: %s: a service has no name",
                                f->name);
        return -1;
      }
      for (size_t j = 0; j < sv->n_method; j++) {
        const method_desc *md = sv->method[j];
        if (md->name == NULL || md->input_type == NULL ||
            md->output_type == NULL) {
          *err = perfc__xasprintf("protoc-gen-perfc: %s: service %s has a "
                                  "method without a name or message type",
                                  f->name, sv->name);
          return -1;
        }
      }
    }
  }
  return 0;
}

void perfc__generate(const gen_request *req, gen_response *resp) {
  char *err = NULL;
  params prm;
  perfc__tmpl *tmpls[T_COUNT] = {0};
  name_set *theirs = perfc__xcalloc(1, sizeof *theirs);
  gen_response stubs =
      GOOGLE__PROTOBUF__COMPILER__CODE_GENERATOR_RESPONSE__INIT;
  gen_response openapi =
      GOOGLE__PROTOBUF__COMPILER__CODE_GENERATOR_RESPONSE__INIT;
  perfc__buf notes = {0};

  resp->has_supported_features = 1;
  resp->supported_features =
      GOOGLE__PROTOBUF__COMPILER__CODE_GENERATOR_RESPONSE__FEATURE__FEATURE_PROTO3_OPTIONAL;
  if (parse_params(req->parameter, &prm, &err) != 0)
    goto out;
  if (check_names(req, &err) != 0 || load_templates(&prm, tmpls, &err) != 0 ||
      check_stub_names(req, &prm, &err) != 0)
    goto out;
  for (size_t i = 0; i < req->n_proto_file; i++)
    add_file_names(theirs, req->proto_file[i]);
  for (size_t i = 0; i < req->n_proto_file; i++)
    add_method_names(theirs, req->proto_file[i]);
  for (size_t i = 0; i < req->n_file_to_generate; i++) {
    const file_desc *f = find_file(req, req->file_to_generate[i]);
    if (!f) {
      err = perfc__xasprintf("protoc-gen-perfc: %s is to be generated but "
                             "protoc sent no descriptor for it",
                             req->file_to_generate[i]);
      break;
    }
    if (f->n_service == 0)
      continue;
    if (generate_file(req, &prm, tmpls, theirs, f, resp, &stubs, &openapi,
                      &notes, &err) != 0)
      break;
  }
  if (!err)
    write_stubs(&prm, &stubs, &err);
  if (!err)
    write_openapi(&openapi, &err);
  /* Notes about scaffolding kept as it was, only for a run that succeeded
   * (a failed one writes nothing, so they would not be true). */
  if (!err && notes.len > 0)
    fwrite(notes.data, 1, notes.len, stderr);
  perfc__buf_free(&notes);
out:
  if (err) {
    /* protoc writes nothing when the plugin reports an error, so drop the
     * files of earlier .proto files too: all or nothing. */
    perfc__gen_response_clear(resp);
    resp->error = err;
  }
  for (int i = 0; i < T_COUNT; i++)
    perfc__tmpl_free(tmpls[i]);
  params_free(&prm);
  set_free(theirs);
  free(theirs);
  perfc__gen_response_clear(&stubs);
  perfc__gen_response_clear(&openapi);
}

void perfc__gen_response_clear(gen_response *resp) {
  for (size_t i = 0; i < resp->n_file; i++) {
    free(resp->file[i]->name);
    free(resp->file[i]->content);
    free(resp->file[i]);
  }
  free(resp->file);
  resp->file = NULL;
  resp->n_file = 0;
  free(resp->error);
  resp->error = NULL;
}
