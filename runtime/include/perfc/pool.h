/*
 * perfc/pool.h — a bounded worker pool.
 *
 * Long or blocking handlers run here instead of on a completion-queue poller
 * thread. The queue bound is deliberate: it is the server's concurrency limit,
 * and a submit into a full queue fails at once (PERFC_EFULL) so the server can
 * answer RESOURCE_EXHAUSTED instead of queuing without end.
 *
 * Room: runtime public headers; implemented by runtime/src/core/pool.c,
 * which depends on nothing above core: whoever exports the pool's numbers
 * as metrics (the server's metrics interceptor) does it through the
 * observer below. Thread-safe: submit from any thread.
 *
 * A job runs with the trace context (perfc/trace_context.h) its submitter
 * had, and a successful submit empties the submitter's: the job carries on
 * the call the submitter was working for.
 */
#ifndef PERFC_POOL_H
#define PERFC_POOL_H

#include "perfc/common.h"

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct perfc_pool perfc_pool;

/** A job: `fn(arg)` runs exactly once on a worker thread. */
typedef void (*perfc_pool_fn)(void *arg);

/** Default number of worker threads: 4 per core is enough to hide blocking
 *  I/O in typical handlers without thrashing the scheduler. 0 in opts means
 *  this times the number of online cores. */
#define PERFC_DEFAULT_POOL_THREADS_PER_CORE 4
/** Default queue bound: deep enough to absorb bursts, short enough that a
 *  queued call still meets a typical 1 s deadline. */
#define PERFC_DEFAULT_POOL_QUEUE 4096

/** A change of the pool's counts (perfc_pool_stats), told to an observer. */
typedef enum perfc_pool_event {
  PERFC_POOL_QUEUED = 0,   /**< a job was queued: waiting + 1 */
  PERFC_POOL_STARTED = 1,  /**< a worker took a job: waiting - 1, busy + 1 */
  PERFC_POOL_FINISHED = 2, /**< a job returned: busy - 1, done + 1 */
  PERFC_POOL_REJECTED = 3  /**< a submit was refused with PERFC_EFULL */
} perfc_pool_event;

/** Called for every event, on the thread that caused it, under the pool's
 *  lock (taken anyway, so an observer adds no synchronisation): it must be
 *  quick, must not block and must not call into the pool. */
typedef void (*perfc_pool_observer_fn)(perfc_pool_event ev, void *user_data);

typedef struct perfc_pool_opts {
  unsigned threads;   /**< worker threads; 0 = default */
  unsigned queue_max; /**< jobs waiting (not running); 0 = default */
  const char *name;   /**< thread name prefix (borrowed, copied); NULL = "perfc-wk" */
  /** Optional: told of every change of the counts, e.g. to keep gauges
   *  current. `observer_user_data` is borrowed and must outlive the pool. */
  perfc_pool_observer_fn observer;
  void *observer_user_data;
  /** true: workers run under SCHED_BATCH (never preempt a running thread
   *  when woken; perfc_server_opts.worker_wakeup_preemption says why the
   *  server wants that). false (default): the normal policy. */
  bool sched_batch;
} perfc_pool_opts;

/** Fills `o` with the defaults. */
PERFC_API void perfc_pool_opts_init(perfc_pool_opts *o);

/** Starts the workers. `opts` may be NULL. Returns 0, PERFC_EINVAL (NULL
 *  `out`), PERFC_ENOMEM or PERFC_ETHREAD, with the detail in
 *  perfc_last_error(). The caller frees the pool with perfc_pool_free(). */
PERFC_API int perfc_pool_new(perfc_pool **out, const perfc_pool_opts *opts);

/** Queues `fn(arg)`. Returns 0 (fn will run exactly once), PERFC_EFULL when
 *  the queue is at its bound, or PERFC_ESHUTDOWN after perfc_pool_free()
 *  began; on error fn is never called. */
PERFC_API int perfc_pool_submit(perfc_pool *p, perfc_pool_fn fn, void *arg);

/** Runs every queued job, joins the workers and frees the pool. Must not be
 *  called from a worker. NULL is a no-op. */
PERFC_API void perfc_pool_free(perfc_pool *p);

/** Snapshot counters (approximate while the pool runs). */
typedef struct perfc_pool_stats {
  unsigned threads;
  unsigned queued;   /**< waiting jobs */
  unsigned busy;     /**< workers running a job */
  uint64_t rejected; /**< submits refused with PERFC_EFULL */
  uint64_t done;     /**< jobs completed */
} perfc_pool_stats;

PERFC_API void perfc_pool_stats_get(perfc_pool *p, perfc_pool_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* PERFC_POOL_H */
