/*
 * perfc/metrics_http.h — the metrics HTTP endpoint: GET /metrics (the
 * Prometheus text format 0.0.4 of a registry) and GET /healthz, over
 * libmicrohttpd on its own thread and port. See docs/metrics.md.
 *
 * Room: runtime public headers; implemented by
 * runtime/src/observe/metrics_http.c on perfc/metrics.h.
 */
#ifndef PERFC_METRICS_HTTP_H
#define PERFC_METRICS_HTTP_H

#include "perfc/metrics.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A running metrics HTTP endpoint. Opaque. */
typedef struct perfc_metrics_http perfc_metrics_http;

/** Default listen address: all IPv4 interfaces (Prometheus scrapes from
 *  another host or pod), port 9464 as OpenTelemetry's Prometheus exporter
 *  uses, clear of Prometheus (9090) and node_exporter (9100). */
#define PERFC_DEFAULT_METRICS_ADDR "0.0.0.0:9464"

/** Options for perfc_metrics_http_start(); fill with
 *  perfc_metrics_http_opts_init() or `= {0}` (zero = default). */
typedef struct perfc_metrics_http_opts {
  /** "HOST:PORT" ("127.0.0.1:0", "[::1]:9464", "localhost:9100"); an empty
   *  host or "*" means all IPv4 interfaces; port 0 picks a free port (see
   *  perfc_metrics_http_port()). Borrowed. NULL = PERFC_DEFAULT_METRICS_ADDR.
   */
  const char *addr;
  /** Registry served at /metrics; borrowed, must outlive the endpoint.
   *  NULL = the default registry. */
  perfc_metrics_registry *registry;
} perfc_metrics_http_opts;

/** Fills `o` with the defaults. */
PERFC_API void perfc_metrics_http_opts_init(perfc_metrics_http_opts *o);

/** Binds and starts serving on libmicrohttpd's own polling thread:
 *  GET /metrics (text format 0.0.4) and GET /healthz (200 "ok", or 503
 *  "not serving" after perfc_metrics_http_set_serving(h, 0)); other paths
 *  404, other methods 405. `opts` may be NULL. Returns 0, PERFC_EINVAL (bad
 *  address), PERFC_EBIND (cannot resolve or listen) or PERFC_ENOMEM /
 *  PERFC_ETHREAD. The caller stops it with perfc_metrics_http_stop(). */
PERFC_API int perfc_metrics_http_start(perfc_metrics_http **out,
                                       const perfc_metrics_http_opts *opts);

/** The port actually bound (useful with port 0). */
PERFC_API int perfc_metrics_http_port(const perfc_metrics_http *h);

/** Sets what /healthz answers: nonzero = serving (200, the initial state),
 *  0 = not serving (503), e.g. while draining before shutdown. */
PERFC_API void perfc_metrics_http_set_serving(perfc_metrics_http *h,
                                              int serving);

/** Stops the polling thread, closes the socket and frees `h`. NULL is a
 *  no-op. */
PERFC_API void perfc_metrics_http_stop(perfc_metrics_http *h);

#ifdef __cplusplus
}
#endif
#endif /* PERFC_METRICS_HTTP_H */
