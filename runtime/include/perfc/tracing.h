/*
 * perfc/tracing.h — distributed tracing: W3C trace context, spans for
 * calls, sampling, and export over OTLP/HTTP to an OpenTelemetry Collector,
 * Jaeger or Tempo.
 *
 * A perfc_tracer holds the sampler, the resource (service name and
 * attributes) and a batch exporter thread. Attached to a server it makes a
 * server span per call, continuing the trace in the call's `traceparent`
 * metadata; its client interceptor makes a client span per outgoing call
 * and sends `traceparent` (the child of the handler's server span when the
 * call names its handler's context in perfc_call_opts.parent), `tracestate`
 * and `baggage` on.
 *
 *   perfc_tracing_opts o;
 *   perfc_tracing_opts_init(&o);          // OTEL_* variables fill the rest
 *   perfc_tracer *tr;
 *   perfc_tracing_new(&tr, &o);
 *   perfc_tracing_attach(tr, srv);        // before perfc_server_start()
 *   const perfc_client_interceptor *ics[] = {perfc_tracing_client_interceptor(tr)};
 *   ...
 *   perfc_server_free(srv); perfc_channel_free(ch);
 *   perfc_tracing_free(tr);               // exports what is queued, within the grace
 *
 * Room: runtime public headers (observe). A tracer is thread-safe; it must
 * outlive every server and channel that uses it.
 */
#ifndef PERFC_TRACING_H
#define PERFC_TRACING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "perfc/common.h"
#include "perfc/interceptor.h"
#include "perfc/metrics.h"
#include "perfc/server.h"
#include "perfc/trace_context.h" /* perfc_span_context */

#ifdef __cplusplus
extern "C" {
#endif

typedef struct perfc_tracer perfc_tracer;
typedef struct perfc_span perfc_span;


/** Span kinds, numbered as OTLP's Span.SpanKind. */
typedef enum perfc_span_kind {
  PERFC_SPAN_INTERNAL = 1,
  PERFC_SPAN_SERVER = 2,
  PERFC_SPAN_CLIENT = 3,
  PERFC_SPAN_PRODUCER = 4,
  PERFC_SPAN_CONSUMER = 5,
} perfc_span_kind;

/** Span status, numbered as OTLP's Status.StatusCode. */
typedef enum perfc_span_status {
  PERFC_SPAN_STATUS_UNSET = 0,
  PERFC_SPAN_STATUS_OK = 1,
  PERFC_SPAN_STATUS_ERROR = 2,
} perfc_span_status;

/** The samplers of the OpenTelemetry SDK specification, by their
 *  OTEL_TRACES_SAMPLER names. DEFAULT (0) means OTEL_TRACES_SAMPLER, else
 *  parentbased_always_on (the specification's default). */
typedef enum perfc_sampler {
  PERFC_SAMPLER_DEFAULT = 0,
  PERFC_SAMPLER_ALWAYS_ON,               /**< "always_on" */
  PERFC_SAMPLER_ALWAYS_OFF,              /**< "always_off" */
  PERFC_SAMPLER_TRACEIDRATIO,            /**< "traceidratio" */
  PERFC_SAMPLER_PARENTBASED_ALWAYS_ON,   /**< "parentbased_always_on" */
  PERFC_SAMPLER_PARENTBASED_ALWAYS_OFF,  /**< "parentbased_always_off" */
  PERFC_SAMPLER_PARENTBASED_TRACEIDRATIO /**< "parentbased_traceidratio" */
} perfc_sampler;

/** The *traceidratio samplers' ratio when nothing sets one: every trace. */
#define PERFC_DEFAULT_TRACING_SAMPLER_RATIO 1.0
/** Where spans go: the OTLP/HTTP default of every SDK (Collector, Jaeger
 *  and Tempo all listen on 4318). */
#define PERFC_DEFAULT_TRACING_ENDPOINT "http://localhost:4318/v1/traces"
/** Queue and batch sizes and the export delay: the OpenTelemetry batch
 *  span processor's defaults (OTEL_BSP_*). A full queue drops spans; it
 *  never makes a call wait. */
#define PERFC_DEFAULT_TRACING_MAX_QUEUE_SPANS 2048
#define PERFC_DEFAULT_TRACING_MAX_BATCH_SPANS 512
#define PERFC_DEFAULT_TRACING_SCHEDULE_DELAY_MS 5000
/** One export request's time limit (OTEL_EXPORTER_OTLP_TIMEOUT's default). */
#define PERFC_DEFAULT_TRACING_EXPORT_TIMEOUT_MS 10000
/** Retries of a batch answered 429/502/503/504 (or not answered): the
 *  first wait, its cap (each wait doubles, with jitter, unless the answer
 *  carries Retry-After) and the total time spent on one batch. */
#define PERFC_DEFAULT_TRACING_RETRY_INITIAL_BACKOFF_MS 1000
#define PERFC_DEFAULT_TRACING_RETRY_MAX_BACKOFF_MS 5000
#define PERFC_DEFAULT_TRACING_RETRY_MAX_ELAPSED_MS 30000
/** What perfc_tracing_free() gives the exporter to send what is queued. */
#define PERFC_DEFAULT_TRACING_SHUTDOWN_GRACE_MS 5000
/** Per-span limits; events beyond the cap (messages on a long stream) are
 *  counted in the span's dropped_events_count instead. */
#define PERFC_DEFAULT_TRACING_MAX_EVENTS 32
#define PERFC_DEFAULT_TRACING_MAX_ATTRIBUTES 32
/** /debug/traces: spans kept per thread (each ring is fixed-size, ~0.5 KiB a
 *  span), rings at most (threads beyond share them), and how many of the
 *  slowest and of the failed calls a page lists. */
#define PERFC_DEFAULT_TRACING_DEBUG_RING_SPANS 256
#define PERFC_TRACING_DEBUG_MAX_RINGS 64
#define PERFC_TRACING_DEBUG_LIST_CALLS 20

typedef struct perfc_tracing_opts {
  /** Off: perfc_tracing_attach() adds nothing and no span is made.
   *  OTEL_SDK_DISABLED=true turns tracing off as well. */
  bool disabled;
  /** Do not read OTEL_* variables (tests, or programs configured only in
   *  code). Otherwise a variable fills each option left at its zero value;
   *  an option set here wins over the variable. */
  bool ignore_env;
  /** service.name (OTEL_SERVICE_NAME, else a `service.name` in the
   *  resource attributes, else "unknown_service"). Copied. */
  const char *service_name;
  /** More resource attributes, "k1=v1,k2=v2" with %-encoded values
   *  (OTEL_RESOURCE_ATTRIBUTES' syntax). Copied. */
  const char *resource_attributes;
  perfc_sampler sampler;
  /** The ratio for the *traceidratio samplers, in [0, 1]; read only when
   *  `sampler` is set here (else OTEL_TRACES_SAMPLER_ARG, default 1).
   *  perfc_tracing_opts_init() sets PERFC_DEFAULT_TRACING_SAMPLER_RATIO. */
  double sampler_ratio;
  /** Full URL spans are POSTed to (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
   *  else OTEL_EXPORTER_OTLP_ENDPOINT + "/v1/traces"; else the default).
   *  Copied. */
  const char *endpoint;
  /** Extra request headers, "k1=v1,k2=v2" (OTEL_EXPORTER_OTLP_HEADERS,
   *  e.g. an API key). Copied. */
  const char *headers;
  /** "none" (the default: uncompressed bodies) or "gzip"
   *  (OTEL_EXPORTER_OTLP_COMPRESSION). */
  const char *compression;
  size_t max_queue_spans;      /**< 0 = default */
  size_t max_export_batch_spans; /**< 0 = default */
  int64_t schedule_delay_ms;   /**< 0 = default */
  int64_t export_timeout_ms;   /**< 0 = default */
  int64_t retry_initial_backoff_ms; /**< 0 = default */
  int64_t retry_max_backoff_ms;     /**< 0 = default */
  int64_t retry_max_elapsed_ms;     /**< 0 = default */
  /** Never retry a batch: a failed POST drops it. */
  bool no_retry;
  int64_t shutdown_grace_ms;   /**< 0 = default */
  unsigned max_events_per_span;     /**< 0 = default */
  unsigned max_attributes_per_span; /**< 0 = default */
  /** Keep the latest sampled spans in memory (a ring per thread) for
   *  perfc_tracing_debug_render() and /debug/traces on the metrics port
   *  (perfc_metrics_http_opts.tracer). Off by default. */
  bool debug_traces;
  /** Spans each thread's ring holds; 0 = PERFC_DEFAULT_TRACING_DEBUG_RING_SPANS. */
  unsigned debug_ring_spans;
  /** Where perfc_tracing_* metrics go; NULL = the default registry.
   *  Borrowed: must outlive the tracer. */
  perfc_metrics_registry *registry;
} perfc_tracing_opts;

PERFC_API void perfc_tracing_opts_init(perfc_tracing_opts *o);

/** Makes a tracer and starts its exporter thread. `opts` may be NULL.
 *  Returns 0, PERFC_EINVAL (a bad option or OTEL_* value, with the reason
 *  in perfc_last_error()) or PERFC_ENOMEM. Free with perfc_tracing_free(). */
PERFC_API int perfc_tracing_new(perfc_tracer **out,
                                const perfc_tracing_opts *opts);

/** Exports the spans still queued (within shutdown_grace_ms), stops the
 *  exporter and frees the tracer. Every server and channel using it must be
 *  freed first. NULL is a no-op. */
PERFC_API void perfc_tracing_free(perfc_tracer *tr);

/** Exports every span ended so far and waits up to `timeout_ms` for it.
 *  Returns 0 once they were answered (accepted, refused or dropped), or
 *  PERFC_ETIMEDOUT. */
PERFC_API int perfc_tracing_flush(perfc_tracer *tr, int64_t timeout_ms);

/** Adds the server interceptor: a server span per call. Register it first
 *  (outermost) so refusals by later interceptors get spans too. Before
 *  perfc_server_start(). Returns 0 (also when tracing is disabled, or the
 *  sampler is always_off, which would record no call: then nothing is
 *  added, and a handler's outgoing calls still carry the caller's trace)
 *  or what perfc_server_add_interceptor() returns. */
PERFC_API int perfc_tracing_attach(perfc_tracer *tr, perfc_server *srv);

/** The client interceptor: a client span per outgoing call and the
 *  traceparent/tracestate/baggage request metadata. Borrowed from the
 *  tracer. */
PERFC_API const perfc_client_interceptor *
perfc_tracing_client_interceptor(perfc_tracer *tr);

/** The server span of the call a handler is serving, or NULL (no tracer
 *  attached, or an always_off sampler, which makes no span objects).
 *  Borrowed: valid while the handler runs. */
PERFC_API perfc_span *perfc_tracing_ctx_span(perfc_ctx *ctx);

/** The trace context a handler's children continue: its server span's, or
 *  with an always_off sampler the one the caller sent (sampled flag
 *  cleared). Returns 0, or PERFC_ENOENT when the call is not traced. */
PERFC_API int perfc_tracing_ctx_span_context(perfc_ctx *ctx,
                                             perfc_span_context *out);

/* ---- spans ------------------------------------------------------------------ */

/**
 * Starts a child span of `parent` (for example a cache lookup, a Redis
 * command or a SQL statement inside a handler, with `kind`
 * PERFC_SPAN_CLIENT and db.* attributes). An unsampled parent gives a
 * non-recording child that only carries ids (no arena, no copy). Returns
 * NULL when `parent` or `name` is NULL (no traced call) or memory runs out;
 * every perfc_span_* function takes NULL as a no-op, so callers need not
 * check. End it with perfc_span_end(), which frees it. `name` is copied.
 * The hook the data layer is meant to call.
 */
PERFC_API perfc_span *perfc_tracing_span_start_child(perfc_span *parent,
                                                     const char *name,
                                                     perfc_span_kind kind);

/**
 * Starts a child of the calling thread's current span (perfc/trace_context.h:
 * the server span of the call a handler is serving, or a span this
 * function made current inside it) and makes the child current until
 * perfc_span_end(), which restores the previous one. This is what the data
 * layer calls around each cache lookup, Redis command and SQL statement,
 * so their spans nest without being handed a context. Returns NULL when
 * the thread works for no call, the call is not sampled, `name` is NULL or
 * memory runs out (every perfc_span_* function takes NULL). End it on the
 * thread that started it. `name` is copied.
 */
PERFC_API perfc_span *perfc_tracing_span_start_current(const char *name,
                                                       perfc_span_kind kind);

/** Attributes; key and value are copied. Beyond max_attributes_per_span,
 *  counted as dropped. No-ops on a non-recording span. */
PERFC_API void perfc_span_set_attr_str(perfc_span *s, const char *key,
                                       const char *value);
PERFC_API void perfc_span_set_attr_int(perfc_span *s, const char *key,
                                       int64_t value);
/** An event now, named `name` (copied); beyond max_events_per_span
 *  counted as dropped. */
PERFC_API void perfc_span_add_event(perfc_span *s, const char *name);
/** Sets the status; `message` (copied, may be NULL) only with ERROR. */
PERFC_API void perfc_span_set_status(perfc_span *s, perfc_span_status status,
                                     const char *message);
/** 1 when the span is sampled and will be exported. */
PERFC_API int perfc_span_recording(const perfc_span *s);
/** The span's trace context. */
PERFC_API void perfc_span_get_context(const perfc_span *s,
                                      perfc_span_context *out);
/** Ends a span made by perfc_tracing_span_start_child(): queues it for
 *  export (never blocks) and frees it. NULL is a no-op. */
PERFC_API void perfc_span_end(perfc_span *s);

/* ---- W3C trace context ------------------------------------------------------- */

/** Length of a version-00 traceparent, without the NUL. */
#define PERFC_TRACEPARENT_LEN 55

/** Parses a `traceparent` value as W3C Trace Context level 1 says
 *  (lower-case hex, version ff and all-zero ids invalid, longer values only
 *  for versions above 00 and only after a '-'). Returns 0 or PERFC_EINVAL. */
PERFC_API int perfc_traceparent_parse(const char *s, size_t len,
                                      perfc_span_context *out);
/** Writes the version-00 traceparent of `sc` and a NUL into `out`
 *  (PERFC_TRACEPARENT_LEN + 1 bytes). */
PERFC_API void perfc_traceparent_format(const perfc_span_context *sc,
                                        char *out);
/** 1 when `s` is a valid W3C `tracestate` (at most 32 list members, keys
 *  and values per the grammar, no key twice, at most 512 bytes), else 0. */
PERFC_API int perfc_tracestate_valid(const char *s, size_t len);

/** Renders the page /debug/traces serves (text): the slowest and the
 *  failed recent calls among the spans kept in memory, each with its spans
 *  as a tree (kind, duration, offset, name, status, attributes). Only with
 *  debug_traces on; only sampled spans are kept. `*out` is malloc'd (the
 *  caller frees it). Returns 0, PERFC_ENOENT (debug_traces off),
 *  PERFC_EINVAL or PERFC_ENOMEM. */
PERFC_API int perfc_tracing_debug_render(perfc_tracer *tr, char **out,
                                         size_t *out_len);

/* ---- counters ---------------------------------------------------------------- */

typedef struct perfc_tracing_stats {
  uint64_t spans_ended;        /**< sampled spans that ended */
  uint64_t spans_exported;     /**< accepted by the receiver (2xx) */
  uint64_t dropped_queue_full; /**< the queue was full when they ended */
  uint64_t dropped_export;     /**< refused (4xx) or retries ran out */
  uint64_t export_requests;    /**< POSTs made, retries included */
  uint64_t export_retries;     /**< POSTs that were retries */
} perfc_tracing_stats;

/** Reads the tracer's counters (also exported as perfc_tracing_* metrics). */
PERFC_API void perfc_tracing_stats_get(perfc_tracer *tr,
                                       perfc_tracing_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* PERFC_TRACING_H */
