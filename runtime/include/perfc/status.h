/*
 * perfc/status.h — gRPC status codes. These are a separate type from the
 * PERFC_E* error codes: a status is what an RPC ended with, an error is what a
 * perfc function call failed with.
 *
 * Room: runtime public headers. Depends on perfc/common.h only.
 */
#ifndef PERFC_STATUS_H
#define PERFC_STATUS_H

#include "perfc/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* XX(NAME, value, GoName). Values are the wire values and match grpc's
 * grpc_status_code; GoName is grpc-go's codes.Code String(), which
 * go-grpc-prometheus uses as the grpc_code label. */
#define PERFC_STATUS_MAP(XX)                                                   \
  XX(OK, 0, "OK")                                                              \
  XX(CANCELLED, 1, "Canceled")                                                 \
  XX(UNKNOWN, 2, "Unknown")                                                    \
  XX(INVALID_ARGUMENT, 3, "InvalidArgument")                                   \
  XX(DEADLINE_EXCEEDED, 4, "DeadlineExceeded")                                 \
  XX(NOT_FOUND, 5, "NotFound")                                                 \
  XX(ALREADY_EXISTS, 6, "AlreadyExists")                                       \
  XX(PERMISSION_DENIED, 7, "PermissionDenied")                                 \
  XX(RESOURCE_EXHAUSTED, 8, "ResourceExhausted")                               \
  XX(FAILED_PRECONDITION, 9, "FailedPrecondition")                             \
  XX(ABORTED, 10, "Aborted")                                                   \
  XX(OUT_OF_RANGE, 11, "OutOfRange")                                           \
  XX(UNIMPLEMENTED, 12, "Unimplemented")                                       \
  XX(INTERNAL, 13, "Internal")                                                 \
  XX(UNAVAILABLE, 14, "Unavailable")                                           \
  XX(DATA_LOSS, 15, "DataLoss")                                                \
  XX(UNAUTHENTICATED, 16, "Unauthenticated")

typedef enum perfc_status_code {
#define PERFC_STATUS_XX(name, value, go) PERFC_STATUS_##name = (value),
  PERFC_STATUS_MAP(PERFC_STATUS_XX)
#undef PERFC_STATUS_XX
} perfc_status_code;

#define PERFC_STATUS_COUNT 17

/** Canonical upper-case name ("NOT_FOUND"); static; "UNKNOWN_CODE" when out
 *  of range. */
PERFC_API const char *perfc_status_name(int code);

/** grpc-go spelling ("NotFound"), as go-grpc-prometheus labels it; static. */
PERFC_API const char *perfc_status_go_name(int code);

/** The gRPC status a handler answers with when a perfc call it made failed
 *  with `err` (a PERFC_E* code): EINVAL → INVALID_ARGUMENT, ENOENT →
 *  NOT_FOUND, EEXIST → ALREADY_EXISTS, ETIMEDOUT → DEADLINE_EXCEEDED,
 *  EFULL → RESOURCE_EXHAUSTED, EUNAVAILABLE, ESHUTDOWN and EIO →
 *  UNAVAILABLE, EABORTED → ABORTED, EPRECONDITION → FAILED_PRECONDITION,
 *  ETOOBIG → OUT_OF_RANGE, anything else → INTERNAL; 0 → OK. With
 *  perfc_last_error() as the message this is the whole error path of a
 *  handler: `return perfc_ctx_fail(ctx, rc);` (perfc/server.h). */
PERFC_API perfc_status_code perfc_status_from_error(int err);

/** The outcome of a client call: code plus message. `message` is owned by the
 *  struct (malloc'd, NUL-terminated, may be NULL); release it with
 *  perfc_status_reset(). */
typedef struct perfc_status {
  perfc_status_code code;
  char *message;
} perfc_status;

/** Frees `st->message` and sets the status to OK. NULL is a no-op. */
PERFC_API void perfc_status_reset(perfc_status *st);

#ifdef __cplusplus
}
#endif
#endif /* PERFC_STATUS_H */
