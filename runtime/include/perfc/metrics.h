/*
 * perfc/metrics.h — the metrics registry: counters, gauges and histograms in
 * Prometheus' data model, rendered in the text exposition format 0.0.4.
 *
 * A metric is registered once as a *family* (name, help, label names); a
 * *series* handle is then resolved once per set of label values. The hot path
 * (perfc_counter_inc, perfc_histogram_observe, perfc_gauge_add, ...) works on
 * that handle with no lookup, no lock and no shared cache line: every series
 * keeps cells per thread and the scrape sums them (perfc_gauge_set alone
 * writes a shared line). See docs/metrics.md.
 *
 * Room: runtime public headers. Thread-safe: every function may be called from
 * any thread. Registration and rendering take a registry lock; the update
 * functions never do.
 */
#ifndef PERFC_METRICS_H
#define PERFC_METRICS_H

#include "perfc/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A set of metric families. Opaque. */
typedef struct perfc_registry perfc_registry;
/** One registered metric name with its label names. Opaque; owned by its
 *  registry and valid until perfc_registry_free(). */
typedef struct perfc_family perfc_family;
/** A counter series (one set of label values). Opaque; owned by the registry.
 */
typedef struct perfc_counter perfc_counter;
/** A gauge series. Opaque; owned by the registry. */
typedef struct perfc_gauge perfc_gauge;
/** A histogram series. Opaque; owned by the registry. */
typedef struct perfc_histogram perfc_histogram;

/** The Prometheus metric types perfc supports (no summaries: their
 *  quantiles cannot be aggregated across instances; use histograms). */
typedef enum perfc_metric_type {
  PERFC_METRIC_COUNTER = 0,
  PERFC_METRIC_GAUGE = 1,
  PERFC_METRIC_HISTOGRAM = 2
} perfc_metric_type;

/** Most label names a family may have: go-grpc-prometheus needs four; more
 *  than a handful usually means a cardinality mistake. */
#define PERFC_METRICS_MAX_LABELS 16
/** Most bucket bounds a histogram may have (plus the implicit +Inf): keeps
 *  a scrape's per-series scratch space on the stack. */
#define PERFC_METRICS_MAX_BUCKETS 64

/** Prometheus' DefBuckets (client_golang), in seconds: the histogram default,
 *  so dashboards built for Go services read perfc's latencies unchanged.
 *  Usable in an initializer: `double b[] = {PERFC_DEFAULT_BUCKETS};`. */
#define PERFC_DEFAULT_BUCKETS                                                  \
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10
/** Number of values in PERFC_DEFAULT_BUCKETS. */
#define PERFC_DEFAULT_BUCKET_COUNT 11

/** How to register a family. Every pointer is borrowed for the duration of
 *  the call; the registry copies what it keeps. */
typedef struct perfc_metric_opts {
  /** Metric name, `[a-zA-Z_:][a-zA-Z0-9_:]*`. Required. */
  const char *name;
  /** HELP text; NULL or "" omits the HELP line. Valid UTF-8; escaped. */
  const char *help;
  /** Label names, `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with "__", unique;
   *  histograms may not use "le". NULL when label_count is 0. */
  const char *const *label_names;
  size_t label_count;
  /** Histograms only: upper bounds, strictly increasing, finite (a trailing
   *  +Inf is accepted and dropped: the +Inf bucket is always present).
   *  NULL/0 = PERFC_DEFAULT_BUCKETS. Ignored for counters and gauges. */
  const double *buckets;
  size_t bucket_count;
} perfc_metric_opts;

/** Fills `o` with the defaults: everything zero/NULL (no labels, default
 *  buckets). */
PERFC_API void perfc_metric_opts_init(perfc_metric_opts *o);

/** Creates an empty registry. Returns 0 or PERFC_ENOMEM. The caller frees it
 *  with perfc_registry_free(). */
PERFC_API int perfc_registry_new(perfc_registry **out);

/** Frees the registry, its families and series, and calls the free_fn of
 *  every callback series. No handle from it may be used during or after this
 *  call (from any thread). NULL is a no-op. Never pass the default registry. */
PERFC_API void perfc_registry_free(perfc_registry *reg);

/** The process-wide registry the runtime's own metrics go to. Created on
 *  first use, never freed; borrowed. Never NULL. */
PERFC_API perfc_registry *perfc_registry_default(void);

/** Registers a family. `reg` NULL means the default registry. On success
 *  `*out` is borrowed from the registry. Registering the same name again with
 *  the same type, help, label names and buckets returns the existing family
 *  (so two servers in one process can share the default registry); a
 *  different definition under the same name is PERFC_EEXIST, and so is a
 *  name that collides with a histogram's samples (histogram "h" against
 *  "h_bucket", "h_sum", "h_count", either way round). Returns 0,
 *  PERFC_EINVAL (bad name, label name, buckets, or help not UTF-8),
 *  PERFC_EEXIST or PERFC_ENOMEM. */
PERFC_API int perfc_family_new(perfc_family **out, perfc_registry *reg,
                               perfc_metric_type type,
                               const perfc_metric_opts *opts);

/** Resolves the counter series for `label_values` (one string per label
 *  name, in order; NULL when the family has no labels; valid UTF-8, copied).
 *  The same values always give the same handle. `*out` is borrowed from the
 *  registry. Returns 0, PERFC_EINVAL (NULL or non-UTF-8 value, family not
 *  a counter, or the values name a callback series) or PERFC_ENOMEM. Call once,
 * keep the handle: this takes the registry lock. */
PERFC_API int perfc_counter_get(perfc_counter **out, perfc_family *fam,
                                const char *const *label_values);

/** As perfc_counter_get(), for a gauge family. */
PERFC_API int perfc_gauge_get(perfc_gauge **out, perfc_family *fam,
                              const char *const *label_values);

/** As perfc_counter_get(), for a histogram family. */
PERFC_API int perfc_histogram_get(perfc_histogram **out, perfc_family *fam,
                                  const char *const *label_values);

/** A value computed at scrape time (pool depth, CPU seconds, ...). Called on
 *  the scraping thread with the registry lock held: it must be quick and must
 *  not register metrics in the same registry. */
typedef double (*perfc_metric_fn)(void *user_data);

/** Adds a series to a counter or gauge family whose value is `fn(user_data)`
 *  at each scrape. `free_fn(user_data)`, if not NULL, is called when the
 *  registry is freed. Returns 0; or PERFC_EINVAL (histogram family, NULL fn
 *  or value), PERFC_EEXIST (those label values already exist) or
 *  PERFC_ENOMEM, and then free_fn is not called. */
PERFC_API int perfc_family_add_func(perfc_family *fam,
                                    const char *const *label_values,
                                    perfc_metric_fn fn, void *user_data,
                                    void (*free_fn)(void *user_data));

/** Shorthand: registers a label-less counter family and returns its series
 *  (borrowed). `reg` NULL = default registry. Errors as perfc_family_new(). */
PERFC_API int perfc_counter_new(perfc_counter **out, perfc_registry *reg,
                                const char *name, const char *help);

/** Shorthand for a label-less gauge; as perfc_counter_new(). */
PERFC_API int perfc_gauge_new(perfc_gauge **out, perfc_registry *reg,
                              const char *name, const char *help);

/** Shorthand for a label-less histogram; `buckets` as in perfc_metric_opts
 *  (NULL/0 = default). As perfc_counter_new(). */
PERFC_API int perfc_histogram_new(perfc_histogram **out, perfc_registry *reg,
                                  const char *name, const char *help,
                                  const double *buckets, size_t bucket_count);

/** Shorthand: a label-less gauge whose value is `fn(user_data)` at each
 *  scrape; user_data is borrowed (must outlive the registry). Errors as
 *  perfc_family_new() and perfc_family_add_func(). */
PERFC_API int perfc_gauge_func_new(perfc_registry *reg, const char *name,
                                   const char *help, perfc_metric_fn fn,
                                   void *user_data);

/* The hot path. No lock, no allocation after a thread's first update, no
 * write to memory another thread writes. Handles must be non-NULL. */

/** Adds 1. */
PERFC_API void perfc_counter_inc(perfc_counter *c);
/** Adds `v` (counters only go up). */
PERFC_API void perfc_counter_add(perfc_counter *c, uint64_t v);
/** Sets the gauge, voiding every earlier add from any thread. Lock-free
 *  (one compare-and-swap and two stores on the gauge's own cache line), but
 *  unlike add it writes memory shared by all threads: prefer add/inc/dec
 *  on hot paths and set for occasional values. Adds racing with a set are
 *  ordered either before it (and voided) or after it. Not async-signal-safe. */
PERFC_API void perfc_gauge_set(perfc_gauge *g, double v);
/** Adds `v` (may be negative) to this thread's share of the gauge: no
 *  lock, no write to shared memory. */
PERFC_API void perfc_gauge_add(perfc_gauge *g, double v);
/** Adds 1. */
PERFC_API void perfc_gauge_inc(perfc_gauge *g);
/** Subtracts 1. */
PERFC_API void perfc_gauge_dec(perfc_gauge *g);
/** Records one observation (seconds, by convention, for latencies). */
PERFC_API void perfc_histogram_observe(perfc_histogram *h, double v);

/** Current total of a counter, summed over all threads (slow: takes a
 *  lock; for tests and diagnostics). */
PERFC_API uint64_t perfc_counter_value(perfc_counter *c);
/** Current value of a gauge. */
PERFC_API double perfc_gauge_value(perfc_gauge *g);
/** Current observation count and sum of a histogram (slow, as
 *  perfc_counter_value()); either pointer may be NULL. */
PERFC_API void perfc_histogram_value(perfc_histogram *h, uint64_t *count,
                                     double *sum);

/** Renders `reg` (NULL = default) in the Prometheus text format 0.0.4:
 *  families sorted by name, series by label values. On success `*out` is a
 *  NUL-terminated malloc'd buffer of `*out_len` bytes (NUL not counted) that
 *  the caller frees with free(). Returns 0 or PERFC_ENOMEM. */
PERFC_API int perfc_registry_render(perfc_registry *reg, char **out,
                                    size_t *out_len);

/** Registers the standard process metrics (process_cpu_seconds_total,
 *  process_resident_memory_bytes, process_virtual_memory_bytes,
 *  process_open_fds, process_max_fds, process_start_time_seconds, read from
 *  /proc at scrape time), `perfc_build_info{version="..."} 1` and
 *  `perfc_log_suppressed_total{level}` (records the logger's per-site rate
 *  limit dropped, perfc/log.h) in `reg` (NULL = default). Calling it twice
 *  on one registry is PERFC_EEXIST. Returns 0, PERFC_EEXIST, PERFC_EINVAL
 *  or PERFC_ENOMEM. */
PERFC_API int perfc_process_metrics_register(perfc_registry *reg);

/* ---- HTTP exposition: /metrics and /healthz over libmicrohttpd ---- */

/** A running metrics HTTP endpoint. Opaque. */
typedef struct perfc_metrics_http perfc_metrics_http;

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
  perfc_registry *registry;
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
#endif /* PERFC_METRICS_H */
