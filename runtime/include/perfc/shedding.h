/*
 * perfc/shedding.h — adaptive load shedding as a server interceptor: a
 * concurrency limit per unary method that no one sets by hand (brpc's
 * "auto" limiter). docs/reliability.md explains the formula, the defaults
 * and the perfc_shedding_* metrics.
 *
 * Room: runtime public headers; implemented by runtime/src/guard/shedding.c
 * on perfc/interceptor.h and perfc/metrics.h. A shedder is created once,
 * attached to servers before they start, and freed after every server
 * using it is freed. The per-call hooks take no global lock.
 */
#ifndef PERFC_SHEDDING_H
#define PERFC_SHEDDING_H

#include "perfc/interceptor.h"
#include "perfc/metrics.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Length of one measurement window: half a second reacts to a load step
 *  within a second or two yet holds enough calls to average (brpc's auto
 *  limiter uses 1 s). */
#define PERFC_DEFAULT_SHEDDING_WINDOW_MS 500
/** Fewer completed calls than this in a window is too little evidence (brpc
 *  uses 100 at 1 s): the window stays open, up to ten window lengths, and
 *  then updates the limit only if it holds at least 8 calls. */
#define PERFC_DEFAULT_SHEDDING_MIN_SAMPLES 50
/** The limit never goes below this many calls in flight, so an idle server
 *  never refuses a small burst because its measured throughput was low. */
#define PERFC_DEFAULT_SHEDDING_MIN_LIMIT 8
/** Limit before the first full window, as brpc's initial auto limit: high
 *  enough not to refuse a cold start, low enough to bound the first queue. */
#define PERFC_DEFAULT_SHEDDING_INITIAL_LIMIT 40
/** Headroom over the no-queue concurrency (brpc's auto_cl_alpha, 0.3):
 *  tolerates 30% latency noise before shrinking the limit. */
#define PERFC_DEFAULT_SHEDDING_ALPHA 0.3
/** The ceiling when none is given: 2^30 calls in flight, far above what a
 *  server holds, so in effect none (and the largest accepted). */
#define PERFC_DEFAULT_SHEDDING_MAX_LIMIT (1u << 30)

typedef struct perfc_shedding_opts {
  /** Registry for the shedding metrics; NULL = default. Borrowed. */
  perfc_metrics_registry *registry;
  int64_t window_ms;      /**< 0 = PERFC_DEFAULT_SHEDDING_WINDOW_MS */
  unsigned min_samples;   /**< 0 = PERFC_DEFAULT_SHEDDING_MIN_SAMPLES */
  unsigned min_limit;     /**< 0 = PERFC_DEFAULT_SHEDDING_MIN_LIMIT */
  unsigned initial_limit; /**< 0 = PERFC_DEFAULT_SHEDDING_INITIAL_LIMIT */
  /** Most calls in flight ever allowed; 0 = PERFC_DEFAULT_SHEDDING_MAX_LIMIT
   *  (in effect no ceiling). */
  unsigned max_limit;
  double alpha; /**< 0 = PERFC_DEFAULT_SHEDDING_ALPHA */
} perfc_shedding_opts;

typedef struct perfc_shedding perfc_shedding;

/** Fills `o` with the defaults above. */
PERFC_API void perfc_shedding_opts_init(perfc_shedding_opts *o);

/** Creates a shedder; `opts` may be NULL (defaults) and is copied whole.
 *  The caller frees it with perfc_shedding_free() after every server it is
 *  attached to is freed. Returns 0, PERFC_EINVAL (min_limit or
 *  initial_limit above max_limit, max_limit above
 *  PERFC_DEFAULT_SHEDDING_MAX_LIMIT, alpha outside (0, 1], window_ms < 0),
 *  PERFC_ENOMEM or an error of perfc_metrics_family_new(); the detail is
 *  in perfc_last_error(). */
PERFC_API int perfc_shedding_new(perfc_shedding **out,
                                 const perfc_shedding_opts *opts);

/** Adds the shedder to `srv` (before perfc_server_start()). Each unary
 *  method gets its own concurrency limit (brpc's "auto" limiter: maximum
 *  throughput times no-load latency, shrunk as latency rises above it); a
 *  call over the limit ends at once with RESOURCE_EXHAUSTED. Streaming
 *  methods are not shed (their duration says nothing about load), and
 *  INLINE methods in effect neither: the pollers bound their concurrency
 *  and their excess waits in the core, unseen. Attach it
 *  after interceptors that refuse cheaply (auth, rate limits) so that their
 *  refusals do not count as served calls. Returns what
 *  perfc_server_add_interceptor() returns, or PERFC_EINVAL. */
PERFC_API int perfc_shedding_attach(perfc_shedding *sh, perfc_server *srv);

/** Frees the shedder. NULL is a no-op. */
PERFC_API void perfc_shedding_free(perfc_shedding *sh);

#ifdef __cplusplus
}
#endif
#endif /* PERFC_SHEDDING_H */
