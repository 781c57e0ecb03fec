/*
 * perfc/http_route.h — a service's HTTP/JSON routes, as protoc-gen-perfc
 * compiles them from `option (google.api.http)` (google/api/http.proto).
 *
 * Room: runtime public headers; the contract between generated code and the
 * HTTP gateway (perfc/gateway.h, runtime/src/gateway). Every path template
 * is parsed and checked by the generator; what reaches the runtime is data:
 * segments (literal, `*`, `**`), the variables as segment ranges bound to
 * field paths, the verb, and the body mappings. Nothing is parsed and no
 * regular expression runs when a request is matched.
 *
 * Append fields only, never reorder: generated code initialises these
 * structs with designated initialisers. All pointers are static data.
 */
#ifndef PERFC_HTTP_ROUTE_H
#define PERFC_HTTP_ROUTE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** What one path segment of a template matches. */
typedef enum perfc_http_segment_kind {
  /** Exactly `literal` (compared with the percent-decoded segment). */
  PERFC_HTTP_SEG_LITERAL = 0,
  /** `*`: any one segment. */
  PERFC_HTTP_SEG_ANY = 1,
  /** `**`: zero or more segments; only ever the template's last segment. */
  PERFC_HTTP_SEG_ANY_MANY = 2
} perfc_http_segment_kind;

typedef struct perfc_http_segment {
  perfc_http_segment_kind kind;
  const char *literal; /**< PERFC_HTTP_SEG_LITERAL only, else NULL */
} perfc_http_segment;

/** A request field named by a dotted path of proto field names
 *  ("user.id"), with the same path as field numbers, so the runtime walks
 *  protobuf-c descriptors without looking names up. */
typedef struct perfc_http_field_path {
  const char *name;         /**< "user.id": proto names joined by '.' */
  const uint32_t *numbers;  /**< the field number at each step */
  size_t depth;             /**< number of steps (>= 1) */
} perfc_http_field_path;

/** A `{field}` or `{field=segments}` variable: it captures segments
 *  [first, last) of the matched path (last == first + 1 for `{field}`;
 *  a variable ending in `**` captures to the end of the path). */
typedef struct perfc_http_var {
  perfc_http_field_path field;
  uint16_t first;
  uint16_t last;
  /** 1 when the variable spans `**` (captures to the end of the path). */
  uint8_t to_end;
  /** 1 for a variable of several segments (`{x=**}`, or `{name=...}` whose
   *  template holds a '/'): its
   *  value is the captured segments joined by '/', percent-decoded except
   *  %2F stays as it is (google/api/http.proto); a single-segment
   *  variable is fully decoded. */
  uint8_t multi;
} perfc_http_var;

/** How the request body maps to the request message. */
typedef enum perfc_http_body_kind {
  PERFC_HTTP_BODY_NONE = 0,  /**< no body; every unbound field from the query */
  PERFC_HTTP_BODY_ALL = 1,   /**< `body: "*"`: every field not in the path */
  PERFC_HTTP_BODY_FIELD = 2  /**< `body: "f"`: one top-level field */
} perfc_http_body_kind;

/** One HTTP binding of a method: the rule itself or one of its
 *  additional_bindings. */
typedef struct perfc_http_route {
  /** "GET", "PUT", "POST", "DELETE", "PATCH", a custom kind as written
   *  ("HEAD", "OPTIONS", ...), or "*" for any method. */
  const char *http_method;
  const char *pattern;   /**< the template as written, "/v1/users/{id}" */
  size_t method_index;   /**< into the service's methods[] */
  const perfc_http_segment *segments;
  size_t n_segments;
  const char *verb;      /**< the `:verb` suffix without ':', or NULL */
  const perfc_http_var *vars;
  size_t n_vars;
  perfc_http_body_kind body_kind;
  perfc_http_field_path body;          /**< BODY_FIELD only */
  /** `response_body`: the response field sent as the body; name NULL when
   *  the whole response is. */
  perfc_http_field_path response_body;
  /** 0 for the method's own rule, 1.. for its additional_bindings. */
  uint16_t binding_index;
} perfc_http_route;

#ifdef __cplusplus
}
#endif
#endif /* PERFC_HTTP_ROUTE_H */
