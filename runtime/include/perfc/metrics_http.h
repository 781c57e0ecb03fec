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
typedef struct perfc_tracer perfc_tracer; /* perfc/tracing.h */

/** Default listen address: loopback only, so a service started without a
 *  configuration does not expose its metrics (method names, pool sizes,
 *  build version) to every network it is on; a deployment that scrapes
 *  from another host or pod says so (e.g. "0.0.0.0:9464", as
 *  examples/user-service/deploy/k8s does). Port 9464 as OpenTelemetry's
 *  Prometheus exporter uses, clear of Prometheus (9090) and node_exporter
 *  (9100). */
#define PERFC_DEFAULT_METRICS_ADDR "127.0.0.1:9464"

/** Connections served at once. Prometheus needs one per scraper; the bound
 *  caps memory and descriptors (each connection holds at most
 *  PERFC_METRICS_HTTP_CONNECTION_MEMORY bytes of buffers) under a flood. */
#define PERFC_DEFAULT_METRICS_MAX_CONNECTIONS 128

/** Connections served at once from one client IP address: below the total
 *  so that one address cannot take every slot from the others. */
#define PERFC_DEFAULT_METRICS_MAX_CONNECTIONS_PER_IP 16

/** Time a connection has to deliver a complete request header, counted
 *  from its accept or from the end of its previous response (so it is
 *  also the keep-alive idle time). A scraper sends its header in one
 *  packet; a client that trickles or stalls is closed after this long. */
#define PERFC_DEFAULT_METRICS_HEADER_TIMEOUT_MS 5000

/** Per-connection buffer limit handed to libmicrohttpd
 *  (MHD_OPTION_CONNECTION_MEMORY_LIMIT): a request header larger than
 *  this is refused with 431. Not an option: a scrape header is ~300 bytes. */
#define PERFC_METRICS_HTTP_CONNECTION_MEMORY (16 * 1024)

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
  /** Most connections at once; 0 = PERFC_DEFAULT_METRICS_MAX_CONNECTIONS.
   *  A connection beyond it closes the oldest one still waiting for its
   *  request header (idle keep-alive or unfinished), or is closed at once
   *  when there is none (every connection is being answered). */
  unsigned max_connections;
  /** Most connections at once from one IP address, the same way; 0 =
   *  PERFC_DEFAULT_METRICS_MAX_CONNECTIONS_PER_IP; capped at
   *  max_connections. */
  unsigned max_connections_per_ip;
  /** 0 = PERFC_DEFAULT_METRICS_HEADER_TIMEOUT_MS; see there. A response
   *  the client does not read is dropped after the same time (rounded up
   *  to seconds) without progress. */
  int64_t header_timeout_ms;
  /** Serve GET /debug/traces from this tracer (made with debug_traces on);
   *  NULL = no such page (404). Borrowed: must outlive the endpoint. */
  perfc_tracer *tracer;
} perfc_metrics_http_opts;

/** Fills `o` with the defaults. */
PERFC_API void perfc_metrics_http_opts_init(perfc_metrics_http_opts *o);

/** Binds and starts serving on a thread of its own (libmicrohttpd's epoll
 *  mode, driven by perfc so that header deadlines are enforced):
 *  GET /metrics (text format 0.0.4) and GET /healthz (200 "ok", or 503
 *  "not serving" after perfc_metrics_http_set_serving(h, 0)); other paths
 *  404, other methods 405. `opts` may be NULL. Returns 0, PERFC_EINVAL (bad
 *  address, negative timeout), PERFC_EBIND (cannot resolve or listen) or
 *  PERFC_ENOMEM / PERFC_ETHREAD. The caller stops it with
 *  perfc_metrics_http_stop(). */
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
