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
#include "perfc/trace_context.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A set of metric families. Opaque. */
typedef struct perfc_metrics_registry perfc_metrics_registry;
/** One registered metric name with its label names. Opaque; owned by its
 *  registry and valid until perfc_metrics_registry_free(). */
typedef struct perfc_metrics_family perfc_metrics_family;
/** A counter series (one set of label values). Opaque; owned by the registry.
 */
typedef struct perfc_counter perfc_counter;
/** A gauge series. Opaque; owned by the registry. */
typedef struct perfc_gauge perfc_gauge;
/** A histogram series. Opaque; owned by the registry. */
typedef struct perfc_histogram perfc_histogram;

/** The Prometheus metric types perfc supports (no summaries: their
 *  quantiles cannot be aggregated across instances; use histograms). */
typedef enum perfc_metrics_type {
  PERFC_METRICS_COUNTER = 0,
  PERFC_METRICS_GAUGE = 1,
  PERFC_METRICS_HISTOGRAM = 2
} perfc_metrics_type;

/** Most label names a family may have: go-grpc-prometheus needs four; more
 *  than a handful usually means a cardinality mistake. */
#define PERFC_METRICS_MAX_LABELS 16
/** Most bucket bounds a histogram may have (plus the implicit +Inf): keeps
 *  a scrape's per-series scratch space on the stack. */
#define PERFC_METRICS_MAX_BUCKETS 64

/** Prometheus' DefBuckets (client_golang), in seconds: the histogram default,
 *  so dashboards built for Go services read perfc's latencies unchanged.
 *  Usable in an initializer: `double b[] = {PERFC_DEFAULT_METRICS_BUCKETS};`.
 */
#define PERFC_DEFAULT_METRICS_BUCKETS                                          \
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10
/** Number of values in PERFC_DEFAULT_METRICS_BUCKETS. */
#define PERFC_DEFAULT_METRICS_BUCKET_COUNT 11

/** How to register a family. Every pointer is borrowed for the duration of
 *  the call; the registry copies what it keeps. */
typedef struct perfc_metrics_family_opts {
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
   *  NULL/0 = PERFC_DEFAULT_METRICS_BUCKETS. Ignored for counters and gauges.
   */
  const double *buckets;
  size_t bucket_count;
} perfc_metrics_family_opts;

/** Fills `o` with the defaults: everything zero/NULL (no labels, default
 *  buckets). */
PERFC_API void perfc_metrics_family_opts_init(perfc_metrics_family_opts *o);

/** Creates an empty registry. Returns 0 or PERFC_ENOMEM. The caller frees it
 *  with perfc_metrics_registry_free(). */
PERFC_API int perfc_metrics_registry_new(perfc_metrics_registry **out);

/** Frees the registry, its families and series, and calls the free_fn of
 *  every callback series. No handle from it may be used during or after this
 *  call (from any thread). NULL is a no-op. Never pass the default registry. */
PERFC_API void perfc_metrics_registry_free(perfc_metrics_registry *reg);

/** The process-wide registry the runtime's own metrics go to. Created on
 *  first use, never freed; borrowed. Never NULL. */
PERFC_API perfc_metrics_registry *perfc_metrics_registry_default(void);

/** Registers a family. `reg` NULL means the default registry. On success
 *  `*out` is borrowed from the registry. Registering the same name again with
 *  the same type, help, label names and buckets returns the existing family
 *  (so two servers in one process can share the default registry); a
 *  different definition under the same name is PERFC_EEXIST, and so is a
 *  name that collides with a histogram's samples (histogram "h" against
 *  "h_bucket", "h_sum", "h_count", either way round). Returns 0,
 *  PERFC_EINVAL (bad name, label name, buckets, or help not UTF-8),
 *  PERFC_EEXIST or PERFC_ENOMEM. */
PERFC_API int perfc_metrics_family_new(perfc_metrics_family **out,
                                       perfc_metrics_registry *reg,
                                       perfc_metrics_type type,
                                       const perfc_metrics_family_opts *opts);

/** Resolves the counter series for `label_values` (one string per label
 *  name, in order; NULL when the family has no labels; valid UTF-8, copied).
 *  The same values always give the same handle. `*out` is borrowed from the
 *  registry. Returns 0, PERFC_EINVAL (NULL or non-UTF-8 value, family not
 *  a counter, or the values name a callback series) or PERFC_ENOMEM. Call once,
 * keep the handle: this takes the registry lock. */
PERFC_API int perfc_counter_get(perfc_counter **out, perfc_metrics_family *fam,
                                const char *const *label_values);

/** As perfc_counter_get(), for a gauge family. */
PERFC_API int perfc_gauge_get(perfc_gauge **out, perfc_metrics_family *fam,
                              const char *const *label_values);

/** As perfc_counter_get(), for a histogram family. */
PERFC_API int perfc_histogram_get(perfc_histogram **out,
                                  perfc_metrics_family *fam,
                                  const char *const *label_values);

/** A value computed at scrape time (pool depth, CPU seconds, ...). Called on
 *  the scraping thread with the registry lock held: it must be quick and must
 *  not register metrics in the same registry. */
typedef double (*perfc_metrics_value_fn)(void *user_data);

/** Adds a series to a counter or gauge family whose value is `fn(user_data)`
 *  at each scrape. `free_fn(user_data)`, if not NULL, is called when the
 *  registry is freed. Returns 0; or PERFC_EINVAL (histogram family, NULL fn
 *  or value), PERFC_EEXIST (those label values already exist) or
 *  PERFC_ENOMEM, and then free_fn is not called. */
PERFC_API int perfc_metrics_family_add_func(perfc_metrics_family *fam,
                                            const char *const *label_values,
                                            perfc_metrics_value_fn fn,
                                            void *user_data,
                                            void (*free_fn)(void *user_data));

/** Shorthand: registers a label-less counter family and returns its series
 *  (borrowed). `reg` NULL = default registry. Errors as
 * perfc_metrics_family_new(). */
PERFC_API int perfc_counter_new(perfc_counter **out,
                                perfc_metrics_registry *reg, const char *name,
                                const char *help);

/** Shorthand for a label-less gauge; as perfc_counter_new(). */
PERFC_API int perfc_gauge_new(perfc_gauge **out, perfc_metrics_registry *reg,
                              const char *name, const char *help);

/** Shorthand for a label-less histogram; `buckets` as in
 * perfc_metrics_family_opts (NULL/0 = default). As perfc_counter_new(). */
PERFC_API int perfc_histogram_new(perfc_histogram **out,
                                  perfc_metrics_registry *reg, const char *name,
                                  const char *help, const double *buckets,
                                  size_t bucket_count);

/** Shorthand: a label-less gauge whose value is `fn(user_data)` at each
 *  scrape; user_data is borrowed (must outlive the registry). Errors as
 *  perfc_metrics_family_new() and perfc_metrics_family_add_func(). */
PERFC_API int perfc_gauge_func_new(perfc_metrics_registry *reg,
                                   const char *name, const char *help,
                                   perfc_metrics_value_fn fn, void *user_data);

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

/** Observes `v` and keeps (sc's trace and span id, v, now) as the latest
 *  exemplar of the bucket `v` falls in, shown by
 *  perfc_metrics_registry_render_openmetrics(); `sc` NULL is a plain
 *  observe. Never waits: an exemplar another thread is writing at that
 *  instant is left to that thread. */
PERFC_API void perfc_histogram_observe_exemplar(perfc_histogram *h, double v,
                                                const perfc_span_context *sc);

/** As perfc_metrics_registry_render(), in the OpenMetrics 1.0 text format
 *  (what Prometheus asks for with `Accept: application/openmetrics-text`):
 *  counters' HELP/TYPE names without `_total` and samples with it, each
 *  histogram bucket's exemplar (trace_id, span_id, value, timestamp), and
 *  the closing `# EOF`. */
PERFC_API int perfc_metrics_registry_render_openmetrics(
    perfc_metrics_registry *reg, char **out, size_t *out_len);

/** Renders `reg` (NULL = default) in the Prometheus text format 0.0.4:
 *  families sorted by name, series by label values. On success `*out` is a
 *  NUL-terminated malloc'd buffer of `*out_len` bytes (NUL not counted) that
 *  the caller frees with free(). Returns 0 or PERFC_ENOMEM. */
PERFC_API int perfc_metrics_registry_render(perfc_metrics_registry *reg,
                                            char **out, size_t *out_len);

/*
 * Deprecated aliases. Until this version the registry, family and option
 * names sat outside the module's prefix (perfc_registry_*, perfc_family_*,
 * perfc_metric_*), and docs/metrics.md taught them; these keep such code
 * compiling. New code uses the perfc_metrics_ names. Define
 * PERFC_NO_DEPRECATED_NAMES to check that nothing uses them (perfc's own
 * code builds that way).
 */
#ifndef PERFC_NO_DEPRECATED_NAMES
typedef perfc_metrics_registry perfc_registry;
typedef perfc_metrics_family perfc_family;
typedef perfc_metrics_family_opts perfc_metric_opts;
typedef perfc_metrics_type perfc_metric_type;
#define PERFC_METRIC_COUNTER PERFC_METRICS_COUNTER
#define PERFC_METRIC_GAUGE PERFC_METRICS_GAUGE
#define PERFC_METRIC_HISTOGRAM PERFC_METRICS_HISTOGRAM
#define perfc_metric_opts_init perfc_metrics_family_opts_init
#define perfc_registry_new perfc_metrics_registry_new
#define perfc_registry_free perfc_metrics_registry_free
#define perfc_registry_default perfc_metrics_registry_default
#define perfc_registry_render perfc_metrics_registry_render
#define perfc_family_new perfc_metrics_family_new
#define perfc_family_add_func perfc_metrics_family_add_func
#endif /* PERFC_NO_DEPRECATED_NAMES */

#ifdef __cplusplus
}
#endif

/* Compatibility: metrics.h declared the whole module until the process
 * metrics and the HTTP endpoint got headers of their own, and
 * docs/metrics.md said so; including it still declares them. */
#include "perfc/metrics_http.h"
#include "perfc/process_metrics.h"

#endif /* PERFC_METRICS_H */
