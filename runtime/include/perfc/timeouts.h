/*
 * perfc/timeouts.h — per-method server-side timeouts as a server
 * interceptor: the method's (perfc.method).timeout, an operator's override,
 * or a default, applied from the moment the call arrived.
 * docs/reliability.md#timeouts explains how the lowered deadline reaches
 * handlers and downstream calls.
 *
 * Room: runtime public headers; implemented by runtime/src/guard/timeouts.c
 * on perfc/interceptor.h. Created once, attached to servers before they
 * start, freed after every server using it is freed.
 */
#ifndef PERFC_TIMEOUTS_H
#define PERFC_TIMEOUTS_H

#include "perfc/interceptor.h"
#include "perfc/service.h"

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/** One override: `method` is "/pkg.Svc/Method", or "/pkg.Svc/" (a trailing
 *  slash) for every method of the service; the string is borrowed during
 *  perfc_timeouts_new() only. */
typedef struct perfc_timeouts_rule {
  const char *method;
  /** The method's timeout, milliseconds, > 0 (unless no_timeout). */
  int64_t timeout_ms;
  /** true: the method gets no server-side timeout, whatever its proto
   *  option says; timeout_ms must then be 0. */
  bool no_timeout;
} perfc_timeouts_rule;

typedef struct perfc_timeouts_opts {
  /** Overrides of (perfc.method).timeout, first match wins; copied. */
  const perfc_timeouts_rule *rules;
  size_t rule_count;
  /** true: methods with neither an override nor a proto option get
   *  default_timeout_ms. false (the default): they get no server-side
   *  timeout, only what the proto or config asks. */
  bool default_timeout_enabled;
  /** Milliseconds, > 0 when default_timeout_enabled, else 0. */
  int64_t default_timeout_ms;
} perfc_timeouts_opts;

typedef struct perfc_timeouts perfc_timeouts;

/** Fills `o` with the defaults (no overrides, no default timeout). */
PERFC_API void perfc_timeouts_opts_init(perfc_timeouts_opts *o);

/** Creates the timeout interceptor; `opts` may be NULL (then only proto
 *  options apply) and is copied whole, rules included. Freed with
 *  perfc_timeouts_free() after the servers. Returns 0, PERFC_EINVAL (NULL
 *  or relative method; a timeout not > 0 where one is enabled, or set
 *  where none is: the detail and the rule's index are in
 *  perfc_last_error_detail()) or PERFC_ENOMEM. */
PERFC_API int perfc_timeouts_new(perfc_timeouts **out,
                                 const perfc_timeouts_opts *opts);

/** Adds it to `srv` (before perfc_server_start()): a call to a method with
 *  a timeout gets its deadline lowered to that timeout from the moment the
 *  call arrived, unless the client's deadline is earlier (see
 *  perfc_ctx_set_deadline_ms()). Returns what perfc_server_add_interceptor()
 *  returns, or PERFC_EINVAL. */
PERFC_API int perfc_timeouts_attach(perfc_timeouts *t, perfc_server *srv);

/** The timeout the interceptor applies to `m` of `svc`, in ms (0 = none),
 *  for tests and diagnostics. */
PERFC_API int64_t perfc_timeouts_for(const perfc_timeouts *t,
                                     const perfc_service_desc *svc,
                                     const perfc_method_desc *m);

/** Frees it. NULL is a no-op. */
PERFC_API void perfc_timeouts_free(perfc_timeouts *t);

/* Deprecated alias: the rule's name before it moved inside the module's
 * prefix (docs/reliability.md used it). Define PERFC_NO_DEPRECATED_NAMES
 * to check that nothing uses it. */
#ifndef PERFC_NO_DEPRECATED_NAMES
typedef perfc_timeouts_rule perfc_timeout_rule;
#endif

#ifdef __cplusplus
}
#endif
#endif /* PERFC_TIMEOUTS_H */
