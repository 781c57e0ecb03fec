/*
 * status.c — names for gRPC status codes, from the table in perfc/status.h.
 *
 * Room: runtime/src; touches nothing else.
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
