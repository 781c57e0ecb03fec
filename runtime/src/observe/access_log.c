/*
 * access_log.c — the access-log interceptor.
 *
 * Room: runtime/src/observe. Uses the interceptor hooks, perfc_log_fields and
 * the tracing module's span lookup (same room).
 * The level lives in `self` (a small static table indexed by level), so the
 * interceptor needs no allocation and nothing to free.
 */
#include "perfc/access_log.h"
#include "core/error_internal.h"
#include "perfc/server.h"
#include "perfc/tracing.h"
#include "server/server_internal.h"

#include <stdio.h>

static int is_client_error(perfc_status_code c) {
  return c == PERFC_STATUS_CANCELLED || c == PERFC_STATUS_NOT_FOUND ||
         c == PERFC_STATUS_ALREADY_EXISTS || c == PERFC_STATUS_INVALID_ARGUMENT;
}

static void after(void *self, void *method_state, perfc_ctx *ctx,
                  void *call_state, perfc_status_code code) {
  (void)method_state;
  (void)call_state;
  perfc_log_level level = *(const perfc_log_level *)self;
  if (code != PERFC_STATUS_OK && !is_client_error(code) && level < PERFC_LOG_WARN)
    level = PERFC_LOG_WARN;
  if (level < perfc_log_get_level())
    return; /* skip the formatting when the record would be dropped */
  char duration[32];
  snprintf(duration, sizeof duration, "%.3f",
           (double)(perfc__now_ns() - perfc_ctx_start_ns(ctx)) / 1e6);
  /* With a tracer attached, the record names the call's trace and server
   * span (hex, as the W3C traceparent spells them) so a log line leads to
   * its trace and back. */
  char ids[PERFC_TRACEPARENT_LEN + 1];
  perfc_span *span = perfc_tracing_ctx_span(ctx);
  perfc_log_field f[] = {
      {"method", perfc_ctx_method(ctx)},
      {"code", perfc_status_name(code)},
      {"duration_ms", duration},
      {"peer", perfc_ctx_peer(ctx)},
      {"trace_id", NULL},
      {"span_id", NULL},
  };
  size_t n = 4;
  if (span != NULL) {
    perfc_span_context sc;
    perfc_span_get_context(span, &sc);
    perfc_traceparent_format(&sc, ids); /* 00-<trace>-<span>-01 */
    ids[35] = ids[52] = '\0';
    f[4].value = ids + 3;
    f[5].value = ids + 36;
    n = 6;
  }
  perfc_log_fields(level, f, n, "access");
}

int perfc_access_log_attach(perfc_log_level level, perfc_server *srv) {
  static const perfc_log_level levels[] = {PERFC_LOG_DEBUG, PERFC_LOG_INFO,
                                           PERFC_LOG_WARN, PERFC_LOG_ERROR,
                                           PERFC_LOG_OFF};
  if ((unsigned)level > PERFC_LOG_OFF)
    return perfc__fail(PERFC_EINVAL,
                       "access log: level %d is not a perfc_log_level",
                       (int)level);
  perfc_server_interceptor ic = {
      .name = "access_log",
      .self = (void *)&levels[level],
      .after = after,
  };
  return perfc_server_add_interceptor(srv, &ic);
}
