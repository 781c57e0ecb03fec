/*
 * json_internal.h — what the gateway's JSON decoder, encoder and request
 * binder share: the arena tree yajl's events are built into, field access
 * through protobuf-c descriptors, and the well-known types by name.
 *
 * Room: runtime/src/gateway (libperfc-gateway). Internal; perfc__ names.
 */
#ifndef PERFC_GATEWAY_JSON_INTERNAL_H
#define PERFC_GATEWAY_JSON_INTERNAL_H

#include "perfc/gateway.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum perfc__jtype {
  PERFC__J_NULL,
  PERFC__J_BOOL,
  PERFC__J_NUMBER, /* s/len: the number's text as written */
  PERFC__J_STRING, /* s/len: decoded UTF-8, NUL-terminated */
  PERFC__J_OBJECT,
  PERFC__J_ARRAY
} perfc__jtype;

typedef struct perfc__jnode {
  perfc__jtype type;
  int b;
  const char *key; /* member name inside an object, NUL-terminated */
  size_t key_len;
  const char *s;
  size_t len;
  size_t n; /* children */
  struct perfc__jnode *child, *last, *next, *parent;
} perfc__jnode;

/* Parses `len` bytes of JSON into a tree in the arena (yajl's event parser,
 * allocating from the arena too). 0, PERFC_EPARSE, PERFC_ETOOBIG (deeper
 * than max_depth), PERFC_ENOMEM; the message is set on failure. */
int perfc__json_parse(perfc_arena *a, const char *json, size_t len,
                      size_t max_depth, perfc__jnode **root);

/* A decoding run: the options and the field path for messages. */
typedef struct perfc__jpath {
  const char *name; /* field or key; NULL for an array index */
  long index;
} perfc__jpath;

typedef struct perfc__jdec {
  /* What failure messages start with: "json" for a body, "query parameter
   * \"x\"" or "path variable {x}" for the request binder. */
  const char *what;
  perfc_arena *a;
  perfc_json_opts o;
  perfc__jpath *path;
  size_t depth, cap;
} perfc__jdec;

/* Sets up a decoder (options copied whole, defaults filled, checked). */
int perfc__jdec_init(perfc__jdec *d, const perfc_json_opts *opts,
                     perfc_arena *a);

/* Records a failure naming the current field path ("user.tags[2]: ..."). */
int perfc__jdec_fail(perfc__jdec *d, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Decodes one JSON value into the field `f` of `msg` (a repeated field gets
 * one more element when `append`, else the whole array from a JSON array). */
int perfc__jdec_field(perfc__jdec *d, ProtobufCMessage *msg,
                      const ProtobufCFieldDescriptor *f,
                      const perfc__jnode *v);

/* Appends one element decoded from `v` to the repeated field `f` (query
 * parameters `?a=1&a=2`). */
int perfc__jdec_append(perfc__jdec *d, ProtobufCMessage *msg,
                       const ProtobufCFieldDescriptor *f,
                       const perfc__jnode *v);

/* Decodes a JSON object (or a well-known type's form) into `msg`. */
int perfc__jdec_message(perfc__jdec *d, ProtobufCMessage *msg,
                        const perfc__jnode *v);

/* A new initialised message of type `desc` in the arena; NULL when out of
 * memory. */
ProtobufCMessage *perfc__msg_new(perfc_arena *a,
                                 const ProtobufCMessageDescriptor *desc);

/* The field named `name` (`len` bytes) by proto name or lowerCamelCase
 * JSON name; NULL when none. */
const ProtobufCFieldDescriptor *
perfc__field_by_json_name(const ProtobufCMessageDescriptor *desc,
                          const char *name, size_t len);

/* proto3 JSON's name for a field: lowerCamelCase of the proto name
 * (protoc's ToJsonName). Writes at most cap bytes with the NUL. */
void perfc__json_name(const char *proto_name, char *out, size_t cap);

/* Whether a repeated message field is a map (its entry type is the
 * nested <CamelName>Entry of fields key = 1 and value = 2). */
bool perfc__field_is_map(const ProtobufCMessageDescriptor *parent,
                         const ProtobufCFieldDescriptor *f);

/* The well-known types the mapping treats specially. */
typedef enum perfc__wkt {
  PERFC__WKT_NONE = 0,
  PERFC__WKT_ANY,
  PERFC__WKT_TIMESTAMP,
  PERFC__WKT_DURATION,
  PERFC__WKT_FIELD_MASK,
  PERFC__WKT_STRUCT,
  PERFC__WKT_VALUE,
  PERFC__WKT_LIST_VALUE,
  PERFC__WKT_EMPTY,
  PERFC__WKT_WRAPPER /* DoubleValue ... BytesValue: field 1 "value" */
} perfc__wkt;

perfc__wkt perfc__wkt_of(const ProtobufCMessageDescriptor *desc);

/* Size in bytes of one value of field `f` as protobuf-c stores it. */
size_t perfc__field_size(const ProtobufCFieldDescriptor *f);

/* Whether field `f` of `msg` is set: present in the proto3 sense (a
 * non-default scalar, has_ for optional, a message pointer, the oneof
 * case, n > 0 for repeated). */
bool perfc__field_present(const ProtobufCMessage *msg,
                          const ProtobufCFieldDescriptor *f);

/* Base64 decode, standard or URL-safe alphabet, padding optional. Returns
 * 0 or -1 (not base64). `out` must hold len * 3 / 4 + 3 bytes. */
int perfc__base64_decode(const char *s, size_t len, uint8_t *out,
                         size_t *out_len);

/* RFC 3339 timestamp and proto3 duration text ("1.5s"), as the mapping
 * writes them. Both 0 or -1. */
int perfc__parse_timestamp(const char *s, size_t len, int64_t *seconds,
                           int32_t *nanos);
int perfc__parse_duration(const char *s, size_t len, int64_t *seconds,
                          int32_t *nanos);

/* The message type of an Any's type URL ("type.googleapis.com/pkg.Msg"):
 * the options' resolver first, then the well-known types; NULL if none. */
const ProtobufCMessageDescriptor *perfc__json_resolve(const perfc__jdec *d,
                                                     const char *url);

/* Encodes one field's value (a repeated field as an array, a map as an
 * object) as a JSON document: the gateway's response_body. */
int perfc__json_encode_field(const ProtobufCMessage *msg,
                             const ProtobufCFieldDescriptor *f,
                             const perfc_json_opts *opts, perfc_arena *arena,
                             char **out, size_t *len);

/* Timestamp range of the mapping: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z */
#define PERFC__TS_MIN (-62135596800LL)
#define PERFC__TS_MAX 253402300799LL
/* Duration range: +-10,000 years. */
#define PERFC__DUR_MAX 315576000000LL

/* json_memo.c: perfc_http_codec.encode_bytes for the gateway. The JSON of
 * `n` protobuf bytes of `desc` as the route of `match` writes it with
 * `opts` (perfc_gateway_encode_response of the unpacked message), from the
 * calling thread's memo when the same bytes were answered by the same
 * gateway (`gen`) on the same route lately. `*out` in `arena`. 0;
 * PERFC_EPARSE when the bytes do not decode; as
 * perfc_gateway_encode_response otherwise. */
int perfc__gateway_encode_bytes(const perfc_json_opts *opts, uint64_t gen,
                                const perfc_gateway_match *match,
                                const ProtobufCMessageDescriptor *desc,
                                const uint8_t *bytes, size_t n,
                                perfc_arena *arena, char **out, size_t *len);
/* A new gateway's generation: never 0, never given twice. */
uint64_t perfc__gateway_memo_gen(void);
/* The calling thread's memo hits and misses (tests). */
void perfc__gateway_memo_stats(uint64_t *hits, uint64_t *misses);

#endif /* PERFC_GATEWAY_JSON_INTERNAL_H */
