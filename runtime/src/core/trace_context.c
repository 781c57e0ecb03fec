/*
 * trace_context.c — the per-thread slot of perfc/trace_context.h.
 *
 * Room: runtime/src/core. Knows nothing of spans or tracers: observe fills
 * the slot, the logger (log.c) and the worker pool (pool.c) read it.
 */
#include "perfc/trace_context.h"

#include <string.h>

/* initial-exec: libperfc is linked, not dlopen'ed (tracing.c's ids do the
 * same), so each access is one %fs-relative load instead of a
 * __tls_get_addr call; every traced call sets the slot three times. */
static _Thread_local perfc_trace_current tls_current
    __attribute__((tls_model("initial-exec")));

int perfc_trace_current_get(perfc_trace_current *out) {
  if (out == NULL)
    return 0;
  *out = tls_current;
  return out->tracer != NULL;
}

void perfc_trace_current_set(const perfc_trace_current *tc) {
  if (tc == NULL || tc->tracer == NULL)
    tls_current.tracer = NULL;
  else
    tls_current = *tc;
}

static void hex(char *o, const uint8_t *b, size_t n) {
  static const char hx[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    o[2 * i] = hx[b[i] >> 4];
    o[2 * i + 1] = hx[b[i] & 15];
  }
  o[2 * n] = '\0';
}

int perfc_trace_current_ids(char trace_hex[33], char span_hex[17]) {
  if (tls_current.tracer == NULL)
    return 0;
  hex(trace_hex, tls_current.sc.trace_id, 16);
  hex(span_hex, tls_current.sc.span_id, 8);
  return 1;
}
