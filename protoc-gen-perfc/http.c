/*
 * http.c — `option (google.api.http)` (google/api/http.proto): the HttpRule
 * of each method, its path templates parsed into segments and variables,
 * its field mappings checked against the request and response messages.
 *
 * Room: protoc-gen-perfc (the generator). Everything a template can get
 * wrong is refused here, with the file, service, method, the rule's field
 * and what to write instead, so the runtime's matcher gets data it can
 * trust and never parses a template.
 */
#include "http.h"

#include "buf.h"

#include "google/api/http.pb-c.h"
#include "perfc/http_route.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef Google__Protobuf__Compiler__CodeGeneratorRequest gen_request;
typedef Google__Protobuf__DescriptorProto msg_desc;
typedef Google__Protobuf__MethodDescriptorProto method_desc;
typedef Google__Protobuf__FieldDescriptorProto field_desc;
typedef Google__Api__HttpRule http_rule;

#define T(x) GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_##x
#define REPEATED GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_REPEATED

/* ---- reading the extension --------------------------------------------- */

/* protobuf-c keeps extensions as unknown fields of MethodOptions; a
 * length-delimited one holds its varint length before the payload. The
 * last occurrence wins, as in protobuf. Returns 0 (rule or NULL) or -1. */
static int read_rule(const method_desc *m, http_rule **out) {
  *out = NULL;
  if (!m->options)
    return 0;
  const ProtobufCMessage *base = &m->options->base;
  for (unsigned i = 0; i < base->n_unknown_fields; i++) {
    const ProtobufCMessageUnknownField *u = &base->unknown_fields[i];
    if (u->tag != PERFC__EXT_GOOGLE_API_HTTP ||
        u->wire_type != PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED)
      continue;
    uint64_t n = 0;
    size_t k = 0;
    int ok = 0;
    for (int shift = 0; k < u->len && shift < 64; shift += 7) {
      uint8_t b = u->data[k++];
      n |= (uint64_t)(b & 0x7f) << shift;
      if (!(b & 0x80)) {
        ok = n == u->len - k;
        break;
      }
    }
    if (!ok)
      return -1;
    if (*out)
      google__api__http_rule__free_unpacked(*out, NULL);
    *out = google__api__http_rule__unpack(NULL, (size_t)n, u->data + k);
    if (!*out)
      return -1;
  }
  return 0;
}

/* ---- small helpers ------------------------------------------------------ */

static void fpath_free(perfc__http_fpath *f) {
  free(f->name);
  free(f->numbers);
  memset(f, 0, sizeof *f);
}

static void route_free(perfc__http_route *r) {
  free(r->http_method);
  free(r->pattern);
  for (size_t i = 0; i < r->n_segs; i++)
    free(r->segs[i].literal);
  free(r->segs);
  free(r->verb);
  for (size_t i = 0; i < r->n_vars; i++)
    fpath_free(&r->vars[i].field);
  free(r->vars);
  fpath_free(&r->body);
  fpath_free(&r->response_body);
}

void perfc__http_routes_free(perfc__http_routes *routes) {
  for (size_t i = 0; i < routes->n; i++)
    route_free(&routes->items[i]);
  free(routes->items);
  routes->items = NULL;
  routes->n = 0;
}

int perfc__http_path_under(const char *field, const char *prefix) {
  size_t n = strlen(prefix);
  return strncmp(field, prefix, n) == 0 && (field[n] == '\0' || field[n] == '.');
}

static int is_ident(const char *s, size_t n) {
  if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
    return 0;
  for (size_t i = 1; i < n; i++)
    if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
      return 0;
  return 1;
}

/* RFC 3986 pchar without ':' (the verb's separator) and without what the
 * template grammar uses ('{', '}', '*', '/'); '%' starts an escape. */
static int literal_char(char c) {
  return isalnum((unsigned char)c) || strchr("-._~!$&'()+,;=@", c) != NULL;
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

/* Reads a literal at s (up to a '/', '}', ':' or the end), decoding %XX, into
 * a malloc'd string; *end gets where it stopped. NULL with *bad set to the
 * offending character's position when it holds one the grammar refuses. */
static char *read_literal(const char *s, const char **end, const char **bad) {
  perfc__buf b = {0};
  const char *p = s;
  *bad = NULL;
  while (*p && *p != '/' && *p != '}' && *p != ':') {
    if (*p == '%' && hexval(p[1]) >= 0 && hexval(p[2]) >= 0) {
      char c = (char)(hexval(p[1]) * 16 + hexval(p[2]));
      if (c == '/' || c == '\0') {
        *bad = p;
        perfc__buf_free(&b);
        return NULL;
      }
      perfc__buf_putc(&b, c);
      p += 3;
      continue;
    }
    if (!literal_char(*p)) {
      *bad = p;
      perfc__buf_free(&b);
      return NULL;
    }
    perfc__buf_putc(&b, *p++);
  }
  *end = p;
  return perfc__buf_take(&b);
}

static const field_desc *field_named(const msg_desc *m, const char *name) {
  for (size_t i = 0; m && i < m->n_field; i++)
    if (m->field[i]->name && strcmp(m->field[i]->name, name) == 0)
      return m->field[i];
  return NULL;
}

static const char *type_label(const field_desc *fd) {
  switch (fd->type) {
  case T(MESSAGE):
    return "a message";
  case T(GROUP):
    return "a group";
  default:
    return "a scalar";
  }
}

/* Whether `fd` is a map field: a repeated message whose type is a nested
 * *Entry message with map_entry set. */
static int is_map(const gen_request *req, const field_desc *fd) {
  if (fd->label != REPEATED || fd->type != T(MESSAGE) || !fd->type_name)
    return 0;
  const msg_desc *e = perfc__gen_find_message(req, fd->type_name, NULL);
  return e && e->options && e->options->has_map_entry && e->options->map_entry;
}

/* Resolves a dotted path of proto field names from `msg`; every piece but
 * the last must be a singular message field. Fills `out` (malloc'd). */
static int resolve_path(const gen_request *req, const msg_desc *msg,
                        const char *msg_name, const char *path,
                        perfc__http_fpath *out, const char *where,
                        const char *what, char **err) {
  memset(out, 0, sizeof *out);
  const char *p = path;
  const field_desc *fd = NULL;
  char *cur_name = perfc__xstrdup(msg_name);
  while (1) {
    const char *dot = strchr(p, '.');
    size_t n = dot ? (size_t)(dot - p) : strlen(p);
    if (!is_ident(p, n)) {
      *err = perfc__xasprintf("%s: %s: \"%s\" is not a field path; write "
                              "proto field names joined by '.', such as "
                              "\"user.id\"",
                              where, what, path);
      goto fail;
    }
    char *piece = perfc__xstrndup(p, n);
    if (fd) {
      if (fd->type != T(MESSAGE) || fd->label == REPEATED) {
        *err = perfc__xasprintf(
            "%s: %s: field path \"%s\" goes through field \"%s\", which is %s; "
            "only singular message fields can be stepped through",
            where, what, path, fd->name,
            fd->label == REPEATED ? "repeated" : type_label(fd));
        free(piece);
        goto fail;
      }
      msg = perfc__gen_find_message(req, fd->type_name, NULL);
      free(cur_name);
      cur_name = perfc__xstrdup(fd->type_name[0] == '.' ? fd->type_name + 1
                                                       : fd->type_name);
    }
    fd = field_named(msg, piece);
    if (!fd) {
      *err = perfc__xasprintf("%s: %s: message %s has no field \"%s\" (field "
                              "paths use the proto names, not the JSON names)",
                              where, what, cur_name, piece);
      free(piece);
      goto fail;
    }
    free(piece);
    out->numbers =
        perfc__xrealloc(out->numbers, (out->depth + 1) * sizeof *out->numbers);
    out->numbers[out->depth++] = (uint32_t)fd->number;
    if (!dot)
      break;
    p = dot + 1;
  }
  free(cur_name);
  out->name = perfc__xstrdup(path);
  out->leaf = fd;
  return 0;
fail:
  free(cur_name);
  fpath_free(out);
  return -1;
}

/* ---- path templates ----------------------------------------------------- */

static void add_seg(perfc__http_route *r, int kind, char *literal) {
  r->segs = perfc__xrealloc(r->segs, (r->n_segs + 1) * sizeof *r->segs);
  r->segs[r->n_segs].kind = kind;
  r->segs[r->n_segs].literal = literal;
  r->n_segs++;
}

/* Template = "/" Segments [ Verb ] ; Segments = Segment { "/" Segment } ;
 * Segment = "*" | "**" | LITERAL | Variable ;
 * Variable = "{" FieldPath [ "=" Segments ] "}" ; Verb = ":" LITERAL.
 * "/" alone (no segment) is accepted too: it is the root, as grpc-gateway
 * and Envoy serve it. Variables are checked against the request in
 * check_vars(); this parses only. */
static int parse_template(perfc__http_route *r, const char *tmpl,
                          const char *where, const char *what,
                          char ***var_paths, char **err) {
#define TERR(...)                                                              \
  do {                                                                         \
    char *why_ = perfc__xasprintf(__VA_ARGS__);                                \
    *err = perfc__xasprintf("%s: %s \"%s\": %s", where, what, tmpl, why_);     \
    free(why_);                                                                \
    return -1;                                                                 \
  } while (0)
  if (tmpl[0] != '/')
    TERR("a path template starts with '/'");
  const char *p = tmpl + 1;
  if (*p == '\0')
    return 0;
  int in_var = 0;
  size_t var_first = 0;
  for (;;) {
    if (*p == '{') {
      if (in_var)
        TERR("a variable cannot contain another variable");
      const char *q = p + 1;
      while (*q && *q != '=' && *q != '}' && *q != '/' && *q != '{')
        q++;
      if (*q != '=' && *q != '}')
        TERR("a '{' without a closing '}'");
      if (q == p + 1)
        TERR("a variable without a field path: write {field} or "
             "{field=segments}");
      *var_paths = perfc__xrealloc(*var_paths, (r->n_vars + 1) * sizeof **var_paths);
      (*var_paths)[r->n_vars] = perfc__xstrndup(p + 1, (size_t)(q - p - 1));
      r->vars = perfc__xrealloc(r->vars, (r->n_vars + 1) * sizeof *r->vars);
      memset(&r->vars[r->n_vars], 0, sizeof *r->vars);
      r->n_vars++;
      var_first = r->n_segs;
      if (*q == '}') {
        add_seg(r, PERFC_HTTP_SEG_ANY, NULL);
        perfc__http_var *v = &r->vars[r->n_vars - 1];
        v->first = (unsigned)var_first;
        v->last = (unsigned)r->n_segs;
        p = q + 1;
      } else {
        in_var = 1;
        p = q + 1;
        if (*p == '}')
          TERR("an empty variable template after '='; write {field=*} or "
               "omit the '='");
        continue;
      }
    } else if (p[0] == '*' && p[1] == '*') {
      add_seg(r, PERFC_HTTP_SEG_ANY_MANY, NULL);
      p += 2;
    } else if (p[0] == '*') {
      add_seg(r, PERFC_HTTP_SEG_ANY, NULL);
      p += 1;
    } else if (*p == '/' || *p == '\0' || *p == '}' || *p == ':') {
      TERR("an empty segment at byte %zu (\"//\", a trailing '/' or a "
           "missing literal)",
           (size_t)(p - tmpl));
    } else {
      const char *end, *bad;
      char *lit = read_literal(p, &end, &bad);
      if (!lit)
        TERR("character '%c' at byte %zu is not allowed in a literal; use "
             "letters, digits, -._~!$&'()+,;=@ or %%XX escapes",
             *bad, (size_t)(bad - tmpl));
      add_seg(r, PERFC_HTTP_SEG_LITERAL, lit);
      p = end;
    }
    if (in_var && *p == '}') {
      perfc__http_var *v = &r->vars[r->n_vars - 1];
      v->first = (unsigned)var_first;
      v->last = (unsigned)r->n_segs;
      in_var = 0;
      p++;
    }
    if (*p == '/') {
      p++;
      continue;
    }
    if (*p == '\0') {
      if (in_var)
        TERR("a '{' without a closing '}'");
      break;
    }
    if (*p == ':' && !in_var) {
      const char *end, *bad;
      char *verb = read_literal(p + 1, &end, &bad);
      if (!verb || *end != '\0' || !verb[0]) {
        free(verb);
        TERR("the verb after ':' must be a non-empty literal at the end of "
             "the template, such as \":batchGet\"");
      }
      r->verb = verb;
      break;
    }
    if (*p == '}')
      TERR("a '}' without a '{'");
    TERR("unexpected '%c' at byte %zu", *p, (size_t)(p - tmpl));
  }
  for (size_t i = 0; i < r->n_segs; i++)
    if (r->segs[i].kind == PERFC_HTTP_SEG_ANY_MANY && i + 1 != r->n_segs)
      TERR("'**' matches the rest of the path, so it must be the last "
           "segment (only a :verb may follow)");
  if (r->n_segs > 65535)
    TERR("more than 65535 segments");
  for (size_t i = 0; i < r->n_vars; i++) {
    perfc__http_var *v = &r->vars[i];
    v->to_end = v->last == r->n_segs && r->n_segs > 0 &&
                r->segs[r->n_segs - 1].kind == PERFC_HTTP_SEG_ANY_MANY;
    v->multi = v->last - v->first != 1 || v->to_end;
  }
  return 0;
#undef TERR
}

/* Path variables bind singular non-message fields (google/api/http.proto:
 * "Fields mapped to the path pattern cannot be repeated and must have a
 * primitive (non-message) type"); a multi-segment one holds '/' and so
 * must be a string. One field is bound once. */
static int check_vars(const gen_request *req, const msg_desc *in,
                      const char *in_name, perfc__http_route *r,
                      char **var_paths, const char *where, const char *what,
                      char **err) {
  for (size_t i = 0; i < r->n_vars; i++) {
    char *label = perfc__xasprintf("%s \"%s\", variable {%s}", what,
                                   r->pattern, var_paths[i]);
    perfc__http_var *v = &r->vars[i];
    int rv = resolve_path(req, in, in_name, var_paths[i], &v->field, where,
                          label, err);
    const field_desc *fd = v->field.leaf;
    if (!rv && (fd->label == REPEATED || fd->type == T(MESSAGE) ||
                fd->type == T(GROUP))) {
      *err = perfc__xasprintf(
          "%s: %s: field \"%s\" is %s; path variables bind singular "
          "primitive fields (strings, numbers, bools, enums, bytes)",
          where, label, var_paths[i],
          fd->label == REPEATED ? "repeated" : type_label(fd));
      rv = -1;
    }
    if (!rv && v->multi && fd->type != T(STRING)) {
      *err = perfc__xasprintf(
          "%s: %s: a variable spanning several segments captures '/' too, so "
          "field \"%s\" must be a string",
          where, label, var_paths[i]);
      rv = -1;
    }
    for (size_t j = 0; !rv && j < i; j++)
      if (strcmp(r->vars[j].field.name, v->field.name) == 0) {
        *err = perfc__xasprintf("%s: %s: field \"%s\" is bound twice in one "
                                "path",
                                where, label, var_paths[i]);
        rv = -1;
      }
    free(label);
    if (rv)
      return rv;
  }
  return 0;
}

/* ---- one rule ----------------------------------------------------------- */

static int add_rule(const gen_request *req, const char *where,
                    const method_desc *m, size_t method_index,
                    const http_rule *rule, unsigned binding,
                    perfc__http_routes *routes, char **err) {
  char *prefix = binding ? perfc__xasprintf("(google.api.http) "
                                            "additional_bindings[%u]",
                                            binding - 1)
                         : perfc__xstrdup("(google.api.http)");
  const char *method = NULL, *tmpl = NULL;
  char *what = NULL;
  int rv = -1;
  char **var_paths = NULL;
  size_t n_paths = 0;
  perfc__http_route r;
  memset(&r, 0, sizeof r);

  if (rule->selector && rule->selector[0]) {
    *err = perfc__xasprintf("%s: %s: selector \"%s\" is for rules in a "
                            "service configuration file; an option on the "
                            "method applies to that method, so leave it out",
                            where, prefix, rule->selector);
    goto out;
  }
  if (binding && rule->n_additional_bindings) {
    *err = perfc__xasprintf("%s: %s: additional bindings cannot have "
                            "additional_bindings themselves (one level only, "
                            "google/api/http.proto)",
                            where, prefix);
    goto out;
  }
  switch (rule->pattern_case) {
  case GOOGLE__API__HTTP_RULE__PATTERN_GET:
    method = "GET", tmpl = rule->get;
    break;
  case GOOGLE__API__HTTP_RULE__PATTERN_PUT:
    method = "PUT", tmpl = rule->put;
    break;
  case GOOGLE__API__HTTP_RULE__PATTERN_POST:
    method = "POST", tmpl = rule->post;
    break;
  case GOOGLE__API__HTTP_RULE__PATTERN_DELETE:
    method = "DELETE", tmpl = rule->delete_;
    break;
  case GOOGLE__API__HTTP_RULE__PATTERN_PATCH:
    method = "PATCH", tmpl = rule->patch;
    break;
  case GOOGLE__API__HTTP_RULE__PATTERN_CUSTOM:
    method = rule->custom && rule->custom->kind ? rule->custom->kind : "";
    tmpl = rule->custom && rule->custom->path ? rule->custom->path : "";
    if (strcmp(method, "*") != 0) {
      /* An HTTP method is a token (RFC 9110): upper case letters here, as
       * every registered method is spelled. */
      int ok = method[0] != '\0';
      for (const char *c = method; *c; c++)
        ok &= (*c >= 'A' && *c <= 'Z') || *c == '-' || *c == '_';
      if (!ok) {
        *err = perfc__xasprintf("%s: %s.custom: kind \"%s\" is not an HTTP "
                                "method; write one in capitals such as "
                                "\"HEAD\" or \"OPTIONS\", or \"*\" for any",
                                where, prefix, method);
        goto out;
      }
    }
    break;
  default:
    *err = perfc__xasprintf("%s: %s: no pattern; set one of get, put, post, "
                            "delete, patch or custom",
                            where, prefix);
    goto out;
  }
  what = rule->pattern_case == GOOGLE__API__HTTP_RULE__PATTERN_CUSTOM
             ? perfc__xasprintf("%s.custom.path", prefix)
             : perfc__xasprintf("%s.%s", prefix, method);
  for (char *c = what + strlen(prefix) + 1; *c; c++)
    *c = (char)tolower((unsigned char)*c);
  r.http_method = perfc__xstrdup(method);
  r.pattern = perfc__xstrdup(tmpl ? tmpl : "");
  r.method_index = method_index;
  r.method = m;
  r.binding_index = binding;
  int parsed = parse_template(&r, r.pattern, where, what, &var_paths, err);
  n_paths = r.n_vars; /* one var_paths entry per variable, even on failure */
  if (parsed != 0)
    goto out;

  const Google__Protobuf__FileDescriptorProto *mf = NULL;
  const msg_desc *in = perfc__gen_find_message(req, m->input_type, &mf);
  const msg_desc *outm = perfc__gen_find_message(req, m->output_type, NULL);
  const char *in_name = m->input_type[0] == '.' ? m->input_type + 1
                                                : m->input_type;
  const char *out_name = m->output_type[0] == '.' ? m->output_type + 1
                                                  : m->output_type;
  if (check_vars(req, in, in_name, &r, var_paths, where, what, err) != 0)
    goto out;

  const char *body = rule->body ? rule->body : "";
  if (!body[0]) {
    r.body_kind = PERFC_HTTP_BODY_NONE;
  } else if (strcmp(method, "GET") == 0) {
    *err = perfc__xasprintf("%s: %s.body \"%s\": a GET request has no body; "
                            "leave body out (the fields come from the path "
                            "and the query)",
                            where, prefix, body);
    goto out;
  } else if (strcmp(body, "*") == 0) {
    r.body_kind = PERFC_HTTP_BODY_ALL;
  } else {
    char *label = perfc__xasprintf("%s.body", prefix);
    r.body_kind = PERFC_HTTP_BODY_FIELD;
    int bad = resolve_path(req, in, in_name, body, &r.body, where, label, err);
    if (!bad && r.body.depth != 1) {
      *err = perfc__xasprintf("%s: %s: \"%s\" is not a top-level field of %s; "
                              "body names a field of the request itself",
                              where, label, body, in_name);
      bad = 1;
    } else if (!bad && (r.body.leaf->label == REPEATED || is_map(req, r.body.leaf))) {
      *err = perfc__xasprintf("%s: %s: field \"%s\" is repeated; the body "
                              "field must not be repeated "
                              "(google/api/http.proto)",
                              where, label, body);
      bad = 1;
    }
    for (size_t i = 0; !bad && i < r.n_vars; i++)
      if (strcmp(r.vars[i].field.name, body) == 0) {
        *err = perfc__xasprintf("%s: %s: field \"%s\" is both the body and "
                                "the path variable {%s}",
                                where, label, body, body);
        bad = 1;
      }
    free(label);
    if (bad)
      goto out;
  }
  const char *rb = rule->response_body ? rule->response_body : "";
  if (rb[0]) {
    char *label = perfc__xasprintf("%s.response_body", prefix);
    int bad = resolve_path(req, outm, out_name, rb, &r.response_body, where,
                           label, err);
    if (!bad && r.response_body.depth != 1) {
      *err = perfc__xasprintf("%s: %s: \"%s\" is not a top-level field of %s",
                              where, label, rb, out_name);
      bad = 1;
    }
    free(label);
    if (bad)
      goto out;
  }
  routes->items =
      perfc__xrealloc(routes->items, (routes->n + 1) * sizeof *routes->items);
  routes->items[routes->n++] = r;
  memset(&r, 0, sizeof r);
  rv = 0;
out:
  for (size_t i = 0; i < n_paths; i++)
    free(var_paths[i]);
  free(var_paths);
  route_free(&r);
  free(what);
  free(prefix);
  return rv;
}

int perfc__http_add_method(const gen_request *req, const char *where,
                           const method_desc *m, size_t method_index,
                           perfc__http_routes *routes, char **err) {
  http_rule *rule = NULL;
  if (read_rule(m, &rule) != 0) {
    *err = perfc__xasprintf("%s: option (google.api.http) does not decode as "
                            "a google.api.HttpRule; was the file compiled "
                            "against a different google/api/http.proto?",
                            where);
    return -1;
  }
  if (!rule)
    return 0;
  int rv = add_rule(req, where, m, method_index, rule, 0, routes, err);
  for (size_t i = 0; !rv && i < rule->n_additional_bindings; i++)
    rv = add_rule(req, where, m, method_index, rule->additional_bindings[i],
                  (unsigned)i + 1, routes, err);
  google__api__http_rule__free_unpacked(rule, NULL);
  return rv;
}

/* Two routes are the same route when every request one matches the other
 * matches too: same method (or either "*"), same segment kinds with equal
 * literals, same verb. Variables' names do not matter to matching. */
static int same_shape(const perfc__http_route *a, const perfc__http_route *b) {
  if (strcmp(a->http_method, b->http_method) != 0 &&
      strcmp(a->http_method, "*") != 0 && strcmp(b->http_method, "*") != 0)
    return 0;
  if (a->n_segs != b->n_segs)
    return 0;
  if ((a->verb == NULL) != (b->verb == NULL) ||
      (a->verb && strcmp(a->verb, b->verb) != 0))
    return 0;
  for (size_t i = 0; i < a->n_segs; i++) {
    if (a->segs[i].kind != b->segs[i].kind)
      return 0;
    if (a->segs[i].kind == PERFC_HTTP_SEG_LITERAL &&
        strcmp(a->segs[i].literal, b->segs[i].literal) != 0)
      return 0;
  }
  return 1;
}

int perfc__http_check_conflicts(const perfc__http_routes *routes,
                                const char *where, char **err) {
  for (size_t i = 0; i < routes->n; i++)
    for (size_t j = 0; j < i; j++) {
      const perfc__http_route *a = &routes->items[j], *b = &routes->items[i];
      if (!same_shape(a, b))
        continue;
      *err = perfc__xasprintf(
          "%s: methods %s and %s both route %s %s (as %s %s): one request "
          "could go to either; change one template",
          where, a->method->name, b->method->name, b->http_method, b->pattern,
          a->http_method, a->pattern);
      return -1;
    }
  return 0;
}

/* ---- the template model -------------------------------------------------- */

static char *c_str(const char *s) {
  perfc__buf b = {0};
  perfc__buf_putc(&b, '"');
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      perfc__buf_printf(&b, "\\%c", c);
    else if (c < 0x20 || c >= 0x7f)
      perfc__buf_printf(&b, "\\%03o", c);
    else if (c == '?')
      perfc__buf_puts(&b, "\\?"); /* no trigraphs */
    else
      perfc__buf_putc(&b, (char)c);
  }
  perfc__buf_putc(&b, '"');
  return perfc__buf_take(&b);
}

/* `{"user.id", (const uint32_t[]){2, 1}, 2}` or `{NULL, NULL, 0}`. */
static char *fpath_c(const perfc__http_fpath *f) {
  if (!f->name)
    return perfc__xstrdup("{NULL, NULL, 0}");
  perfc__buf b = {0};
  char *name = c_str(f->name);
  perfc__buf_printf(&b, "{%s, (const uint32_t[]){", name);
  free(name);
  for (size_t i = 0; i < f->depth; i++)
    perfc__buf_printf(&b, "%s%u", i ? ", " : "", f->numbers[i]);
  perfc__buf_printf(&b, "}, %zu}", f->depth);
  return perfc__buf_take(&b);
}

void perfc__http_model(const perfc__http_routes *routes, perfc__tv *svc) {
  static const char *const seg_kind[] = {
      "PERFC_HTTP_SEG_LITERAL", "PERFC_HTTP_SEG_ANY", "PERFC_HTTP_SEG_ANY_MANY"};
  static const char *const body_kind[] = {
      "PERFC_HTTP_BODY_NONE", "PERFC_HTTP_BODY_ALL", "PERFC_HTTP_BODY_FIELD"};
  perfc__tv_set_bool(svc, "has_http_routes", routes->n > 0);
  perfc__tv_set_strf(svc, "n_http_routes", "%zu", routes->n);
  perfc__tv *list = perfc__tv_set_list(svc, "http_routes");
  for (size_t i = 0; i < routes->n; i++) {
    const perfc__http_route *r = &routes->items[i];
    perfc__tv *t = perfc__tv_list_add(list);
    char *s;
    perfc__tv_set_str(t, "http_method_c", s = c_str(r->http_method)), free(s);
    perfc__tv_set_str(t, "pattern", r->pattern);
    perfc__tv_set_str(t, "pattern_c", s = c_str(r->pattern)), free(s);
    perfc__tv_set_str(t, "rpc", r->method->name);
    perfc__tv_set_strf(t, "method_index", "%zu", r->method_index);
    perfc__tv_set_strf(t, "n_segments", "%zu", r->n_segs);
    perfc__tv_set_bool(t, "has_segments", r->n_segs > 0);
    perfc__tv *segs = perfc__tv_set_list(t, "segments");
    for (size_t k = 0; k < r->n_segs; k++) {
      perfc__tv *ts = perfc__tv_list_add(segs);
      perfc__tv_set_str(ts, "kind", seg_kind[r->segs[k].kind]);
      if (r->segs[k].literal)
        perfc__tv_set_str(ts, "literal_c", s = c_str(r->segs[k].literal)),
            free(s);
      else
        perfc__tv_set_str(ts, "literal_c", "NULL");
    }
    if (r->verb)
      perfc__tv_set_str(t, "verb_c", s = c_str(r->verb)), free(s);
    else
      perfc__tv_set_str(t, "verb_c", "NULL");
    perfc__tv_set_strf(t, "n_vars", "%zu", r->n_vars);
    perfc__tv_set_bool(t, "has_vars", r->n_vars > 0);
    perfc__tv *vars = perfc__tv_set_list(t, "vars");
    for (size_t k = 0; k < r->n_vars; k++) {
      const perfc__http_var *v = &r->vars[k];
      perfc__tv *tv = perfc__tv_list_add(vars);
      perfc__tv_set_str(tv, "field_c", s = fpath_c(&v->field)), free(s);
      perfc__tv_set_strf(tv, "first", "%u", v->first);
      perfc__tv_set_strf(tv, "last", "%u", v->last);
      perfc__tv_set_strf(tv, "to_end", "%d", v->to_end);
      perfc__tv_set_strf(tv, "multi", "%d", v->multi);
    }
    perfc__tv_set_str(t, "body_kind", body_kind[r->body_kind]);
    perfc__tv_set_str(t, "body_c", s = fpath_c(&r->body)), free(s);
    perfc__tv_set_str(t, "response_body_c", s = fpath_c(&r->response_body)),
        free(s);
    perfc__tv_set_strf(t, "binding_index", "%u", r->binding_index);
  }
}
