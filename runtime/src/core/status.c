/*
 * status.c — names for gRPC status codes, from the table in perfc/status.h.
 *
 * Room: runtime/src/core; touches nothing else.
 */
#include "perfc/status.h"

#include <stdlib.h>

static const char *const canonical[PERFC_STATUS_COUNT] = {
#define XX(name, value, go) [value] = #name,
    PERFC_STATUS_MAP(XX)
#undef XX
};

static const char *const go_names[PERFC_STATUS_COUNT] = {
#define XX(name, value, go) [value] = go,
    PERFC_STATUS_MAP(XX)
#undef XX
};

const char *perfc_status_name(int code) {
  if (code < 0 || code >= PERFC_STATUS_COUNT)
    return "UNKNOWN_CODE";
  return canonical[code];
}

const char *perfc_status_go_name(int code) {
  /* grpc-go prints out-of-range codes as "Code(N)"; a fixed string keeps the
   * label set bounded, which matters more for a metrics label. */
  if (code < 0 || code >= PERFC_STATUS_COUNT)
    return "Unknown";
  return go_names[code];
}

void perfc_status_reset(perfc_status *st) {
  if (st == NULL)
    return;
  free(st->message);
  st->message = NULL;
  st->code = PERFC_STATUS_OK;
}

perfc_status_code perfc_status_from_error(int err) {
  switch (err) {
  case 0:
    return PERFC_STATUS_OK;
  case PERFC_EINVAL:
  case PERFC_EPARSE:
    return PERFC_STATUS_INVALID_ARGUMENT;
  case PERFC_ENOENT:
    return PERFC_STATUS_NOT_FOUND;
  case PERFC_EEXIST:
    return PERFC_STATUS_ALREADY_EXISTS;
  case PERFC_ETIMEDOUT:
    return PERFC_STATUS_DEADLINE_EXCEEDED;
  case PERFC_EFULL:
    return PERFC_STATUS_RESOURCE_EXHAUSTED;
  case PERFC_EUNAVAILABLE:
  case PERFC_ESHUTDOWN:
  case PERFC_EIO:
    return PERFC_STATUS_UNAVAILABLE;
  case PERFC_EABORTED:
    return PERFC_STATUS_ABORTED;
  case PERFC_EPRECONDITION:
    return PERFC_STATUS_FAILED_PRECONDITION;
  case PERFC_ETOOBIG:
    return PERFC_STATUS_OUT_OF_RANGE;
  case PERFC_EINTERNAL:
    return PERFC_STATUS_INTERNAL;
  default:
    return PERFC_STATUS_INTERNAL;
  }
}
