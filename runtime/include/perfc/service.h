/*
 * perfc/service.h — how a service is described to the runtime.
 *
 * protoc-gen-perfc emits one perfc_service_desc per proto service, with one
 * perfc_method_desc per rpc, as static const data. Server and client both
 * read these tables; users normally only pass them along (the generated
 * `pkg__svc__perfc_register()` and `pkg__svc__method__call()` functions do).
 *
 * Room: runtime public headers; the contract between generated code and the
 * runtime. Append fields only, never reorder: generated code initialises
 * these structs with designated initialisers.
 */
#ifndef PERFC_SERVICE_H
#define PERFC_SERVICE_H

#include "perfc/common.h"
#include "perfc/status.h"
#include <protobuf-c/protobuf-c.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct perfc_ctx perfc_ctx;
typedef struct perfc_stream perfc_stream;
struct perfc_http_route; /* perfc/http_route.h */

/** The four gRPC method kinds. */
typedef enum perfc_method_kind {
  PERFC_METHOD_UNARY = 0,
  PERFC_METHOD_CLIENT_STREAM = 1,
  PERFC_METHOD_SERVER_STREAM = 2,
  PERFC_METHOD_BIDI_STREAM = 3
} perfc_method_kind;

/** Where a handler runs. DEFAULT defers to the server's default. INLINE runs
 *  it on the completion-queue poller (cheapest; only for handlers that never
 *  block). POOL runs it on the bounded worker pool. */
typedef enum perfc_executor {
  PERFC_EXEC_DEFAULT = 0,
  PERFC_EXEC_INLINE = 1,
  PERFC_EXEC_POOL = 2
} perfc_executor;

/** What the runtime checks in the string fields of a method's messages
 *  before protobuf-c unpacks them: requests on the server, responses in
 *  perfc's client. protobuf-c gives string fields to C as NUL-terminated
 *  copies, so a NUL byte would silently cut the value short; proto3
 *  requires valid UTF-8. A refused request is answered INVALID_ARGUMENT
 *  before its handler runs, a refused response fails the call INTERNAL.
 *  Every mode also refuses messages nested deeper than 100 levels. */
typedef enum perfc_string_check {
  /** No NUL byte and valid UTF-8 (proto3's rule): the default. */
  PERFC_STRINGS_UTF8 = 0,
  /** No NUL byte only: methods whose messages come from proto2 files,
   *  which do not require UTF-8. */
  PERFC_STRINGS_NO_NUL = 1,
  /** No check (`(perfc.method).raw_strings`): strings reach the handler as
   *  protobuf-c decodes them, cut at a NUL, bytes unchecked. */
  PERFC_STRINGS_RAW = 2
} perfc_string_check;

/**
 * A generated trampoline that casts the generic arguments to the method's
 * types and calls the user's handler found in `handlers`.
 * - unary:         req set,  resp set,  stream NULL
 * - client stream: req NULL, resp set,  stream set (reader)
 * - server stream: req set,  resp NULL, stream set (writer)
 * - bidi:          req NULL, resp NULL, stream set
 * Returns the RPC's status code; a message goes through perfc_ctx_error().
 */
typedef perfc_status_code (*perfc_method_invoke)(perfc_ctx *ctx,
                                                 const void *handlers,
                                                 void *user_data,
                                                 const ProtobufCMessage *req,
                                                 ProtobufCMessage *resp,
                                                 perfc_stream *stream);

typedef struct perfc_method_desc {
  const char *name; /**< proto method name, "GetUser" */
  const char *path; /**< HTTP/2 path, "/user.v1.UserService/GetUser" */
  perfc_method_kind kind;
  const ProtobufCMessageDescriptor *input;
  const ProtobufCMessageDescriptor *output;
  /** offsetof() the handler's function pointer in the service's handlers
   *  struct; a NULL pointer there answers UNIMPLEMENTED. */
  size_t handler_offset;
  perfc_method_invoke invoke;
  perfc_executor executor; /**< from (perfc.method).executor or DEFAULT */
  int64_t timeout_ms;      /**< from (perfc.method).timeout; 0 = none */
  int idempotent;          /**< from (perfc.method).idempotent */
  /** Optional (generated for declaratively cached methods): answers a call
   *  of a pool method on the poller when that needs no blocking, such as an
   *  L1 hit. Gets the registration's user data, the decoded request and the
   *  response to fill; returns 1 with `*code` set when it answered, 0 to
   *  hand the call to the pool as usual. Must never block. */
  int (*try_inline)(perfc_ctx *ctx, void *user_data,
                    const ProtobufCMessage *req, ProtobufCMessage *resp,
                    perfc_status_code *code);
  /** The string check of this method's messages; generated from the
   *  proto's syntax and `(perfc.method).raw_strings`. Code generated
   *  before it leaves 0: PERFC_STRINGS_UTF8. */
  perfc_string_check strings;
  /** 1 for a method with a `(perfc.cache)` option (generated), with the
   *  option's ttl in `cache_ttl_ms` (0 when it leaves the TTL to the
   *  cache's default). The HTTP/JSON listener gives GET answers of such a
   *  method an ETag, If-None-Match -> 304 and Cache-Control
   *  (docs/http-json.md, "HTTP cache"). Code generated before leaves 0. */
  int cached;
  int64_t cache_ttl_ms;
} perfc_method_desc;

/** One serialized FileDescriptorProto (without source_code_info), as the
 *  generator embeds it; all borrowed static data. `data` NULL and `len` 0
 *  name a file the runtime carries itself (perfc_file_desc_builtin():
 *  perfc/options.proto and the well-known types): generated tables refer
 *  to those by name instead of embedding their bytes, and reflection
 *  serves the runtime's copy. */
typedef struct perfc_file_desc {
  const char *name;    /**< the proto's path, "user/v1/user.proto" */
  const uint8_t *data; /**< the serialized FileDescriptorProto, or NULL */
  size_t len;
} perfc_file_desc;

typedef struct perfc_service_desc {
  const char *name;         /**< full name, "user.v1.UserService" */
  const char *proto_file;   /**< "user/v1/user.proto" */
  size_t n_methods;
  const perfc_method_desc *methods;
  /** Serialized FileDescriptorProto of the defining file (for reflection);
   *  may be NULL/0. */
  const uint8_t *file_descriptor;
  size_t file_descriptor_len;
  /** The defining file (first, the same bytes as file_descriptor) and
   *  every file it imports, directly or not, depth first in import order;
   *  server reflection answers from these. NULL/0 from generators before
   *  perfc 0.1.0's reflection support. */
  const perfc_file_desc *files;
  size_t n_files;
  /** The HTTP/JSON routes compiled from the methods' `(google.api.http)`
   *  options (perfc/http_route.h, docs/http-json.md), in declaration
   *  order; NULL/0 when none has one, and from generators before them. */
  const struct perfc_http_route *http_routes;
  size_t n_http_routes;
} perfc_service_desc;

/** The runtime's copy of a file it carries itself, by path:
 *  "perfc/options.proto", "google/api/http.proto",
 *  "google/api/annotations.proto" and "google/protobuf/X.proto" for X in any, api,
 *  duration, empty, field_mask, source_context, struct, timestamp, type,
 *  wrappers, descriptor (the files perfc::wkt holds protoc-c code for),
 *  serialized as protoc does, without source info. NULL for any other
 *  name. Borrowed static data, valid for the life of the program. */
PERFC_API const perfc_file_desc *perfc_file_desc_builtin(const char *name);

/** Finds a method by name ("GetUser") or path; NULL when absent. */
PERFC_API const perfc_method_desc *
perfc_service_find_method(const perfc_service_desc *svc, const char *name);

#ifdef __cplusplus
}
#endif
#endif /* PERFC_SERVICE_H */
