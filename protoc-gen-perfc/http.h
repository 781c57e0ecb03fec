/*
 * http.h — `option (google.api.http)`: reading the HttpRule of a method,
 * parsing and checking its path templates and field mappings, and the
 * routes the templates render into a service's route table
 * (perfc/http_route.h) and the OpenAPI writer (openapi.c) describes.
 *
 * Room: protoc-gen-perfc (the generator). Pure functions over the request's
 * descriptors; everything returned is malloc'd and freed with
 * perfc__http_routes_free().
 */
#ifndef PERFC_GEN_HTTP_H
#define PERFC_GEN_HTTP_H

#include "google/protobuf/compiler/plugin.pb-c.h"
#include "tmpl.h"

#include <stddef.h>
#include <stdint.h>

/* google/api/annotations.proto: extend MethodOptions { HttpRule http = 72295728; } */
#define PERFC__EXT_GOOGLE_API_HTTP 72295728u

typedef struct perfc__http_fpath {
  char *name;                /* "user.id"; NULL when unset */
  uint32_t *numbers;         /* field numbers, one per piece */
  size_t depth;
  /* The leaf field's descriptor (borrowed from the request). */
  const Google__Protobuf__FieldDescriptorProto *leaf;
} perfc__http_fpath;

typedef struct perfc__http_seg {
  int kind;      /* PERFC_HTTP_SEG_* of perfc/http_route.h */
  char *literal; /* decoded literal, LITERAL only */
} perfc__http_seg;

typedef struct perfc__http_var {
  perfc__http_fpath field;
  unsigned first, last;
  int to_end, multi;
} perfc__http_var;

typedef struct perfc__http_route {
  char *http_method;  /* "GET", ..., custom kind, "*" */
  char *pattern;
  size_t method_index;
  const Google__Protobuf__MethodDescriptorProto *method;
  perfc__http_seg *segs;
  size_t n_segs;
  char *verb; /* NULL when none */
  perfc__http_var *vars;
  size_t n_vars;
  int body_kind; /* PERFC_HTTP_BODY_* */
  perfc__http_fpath body;
  perfc__http_fpath response_body;
  unsigned binding_index;
} perfc__http_route;

typedef struct perfc__http_routes {
  perfc__http_route *items;
  size_t n;
} perfc__http_routes;

/* Finds a message by ".pkg.Name" among the request's files (gen.c). */
const Google__Protobuf__DescriptorProto *perfc__gen_find_message(
    const Google__Protobuf__Compiler__CodeGeneratorRequest *req,
    const char *type_name, const Google__Protobuf__FileDescriptorProto **file);

/* Reads method `m`'s (google.api.http) rule, if any, checks it, and appends
 * its routes (the rule, then its additional_bindings) to `routes`. `where`
 * prefixes error messages ("x.proto: service a.S, method M"). Returns 0, or
 * -1 with a malloc'd message in *err. */
int perfc__http_add_method(
    const Google__Protobuf__Compiler__CodeGeneratorRequest *req,
    const char *where, const Google__Protobuf__MethodDescriptorProto *m,
    size_t method_index, perfc__http_routes *routes, char **err);

/* Refuses two routes of one service that match the same requests (same
 * HTTP method, same segments and verb). `where` names the service. */
int perfc__http_check_conflicts(const perfc__http_routes *routes,
                                const char *where, char **err);

/* Sets the service's template model: has_http_routes, n_http_routes and
 * the http_routes list (docs/generator.md, "Templates"). */
void perfc__http_model(const perfc__http_routes *routes, perfc__tv *svc);

/* Whether the field lies under (or is) a field path: "user.id" is under
 * "user". */
int perfc__http_path_under(const char *field, const char *prefix);

void perfc__http_routes_free(perfc__http_routes *routes);

#endif /* PERFC_GEN_HTTP_H */
