/*
 * perfc/grpc_metrics.h — gRPC metrics with go-grpc-prometheus's exact names
 * and labels, so Grafana dashboards and alerts written for grpc-go services
 * work on perfc services unchanged.
 *
 * Server: grpc_server_started_total, grpc_server_handled_total,
 * grpc_server_msg_received_total, grpc_server_msg_sent_total (labels
 * grpc_type, grpc_service, grpc_method, and grpc_code on handled), and the
 * grpc_server_handling_seconds histogram. Client: the grpc_client_*
 * counterparts. grpc_type is unary, client_stream, server_stream or
 * bidi_stream; grpc_code is grpc-go's spelling (OK, Canceled, NotFound, ...).
 * Every series of every registered method exists from start, at zero.
 *
 * Room: runtime public headers. Builds on perfc/metrics.h (registry) and
 * perfc/interceptor.h (server hooks).
 */
#ifndef PERFC_GRPC_METRICS_H
#define PERFC_GRPC_METRICS_H

#include "perfc/client.h"
#include "perfc/interceptor.h"
#include "perfc/metrics.h"

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct perfc_grpc_metrics perfc_grpc_metrics;

typedef struct perfc_grpc_metrics_opts {
  /** Registry to register in; NULL = perfc_metrics_registry_default().
   * Borrowed. */
  perfc_metrics_registry *registry;
  /** The *_handling_seconds histograms are exported unless this is true
   *  (go-grpc-prometheus makes them opt-in with
   *  EnableHandlingTimeHistogram; dashboards expect them, so perfc turns
   *  them on, and a zeroed struct keeps that default). */
  bool disable_handling_time_histogram;
  /** Histogram buckets; NULL = Prometheus' DefBuckets (.005 .. 10 s). */
  const double *buckets;
  size_t bucket_count;
} perfc_grpc_metrics_opts;

PERFC_API void perfc_grpc_metrics_opts_init(perfc_grpc_metrics_opts *o);

/** Registers the server and client families. `opts` may be NULL and is
 *  copied whole. The caller frees it with perfc_grpc_metrics_free() after
 *  every server and channel using it is freed. Returns 0, PERFC_EINVAL,
 *  PERFC_ENOMEM or an error of perfc_metrics_family_new(), with the detail
 *  in perfc_last_error(). */
PERFC_API int perfc_grpc_metrics_new(perfc_grpc_metrics **out,
                                     const perfc_grpc_metrics_opts *opts);
PERFC_API void perfc_grpc_metrics_free(perfc_grpc_metrics *gm);

/** Adds the server interceptor to `srv` (before perfc_server_start()), and
 *  at start the server's runtime metrics, labelled `port` (its first bound
 *  port): perfc_server_pool_queued, perfc_server_pool_busy_workers,
 *  perfc_server_pool_rejected_total and perfc_server_open_connections.
 *  Returns what perfc_server_add_interceptor() returns. */
PERFC_API int perfc_grpc_metrics_attach(perfc_grpc_metrics *gm,
                                        perfc_server *srv);

/** The client-side hooks, for perfc_channel_opts.interceptor. */
PERFC_API const perfc_client_interceptor *
perfc_grpc_metrics_client_interceptor(perfc_grpc_metrics *gm);

/* Deprecated alias: the attach function's name before every module's
 * became perfc_X_attach(X, srv) (docs/observability.md used it). Define
 * PERFC_NO_DEPRECATED_NAMES to check that nothing uses it. */
#ifndef PERFC_NO_DEPRECATED_NAMES
#define perfc_grpc_metrics_attach_server perfc_grpc_metrics_attach
#endif

#ifdef __cplusplus
}
#endif
#endif /* PERFC_GRPC_METRICS_H */
