/*
 * observe/metrics_internal.h — what the runtime's own modules share when
 * they register their metrics. Never installed.
 *
 * Room: runtime/src/observe private header; used by observe/ and guard/
 * (both in libperfc: the data unit cannot call these hidden functions).
 */
#ifndef PERFC_OBSERVE_METRICS_INTERNAL_H
#define PERFC_OBSERVE_METRICS_INTERNAL_H

#include "perfc/metrics.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Registers a family named `name` with `help`, `label_count` label names
 * and the default buckets in `reg` (NULL = default registry): the shape of
 * every runtime metric keyed by labels such as grpc_service/grpc_method.
 * One routine so the breaker, shedding, rate limit and server metrics do
 * not each keep a copy. Returns what perfc_metrics_family_new() returns. */
int perfc__metrics_family(perfc_metrics_family **out,
                          perfc_metrics_registry *reg, perfc_metrics_type type,
                          const char *name, const char *help,
                          const char *const *label_names, size_t label_count);

/* ---- the increment, inline, for per-call counters (metrics.c) ----------
 *
 * Every thread adds to its own cells (a scrape sums the threads); a cell
 * is found through the thread's chunk table. perfc_counter_inc() does this
 * behind a call, which costs a per-call counter more than the add itself:
 * the server's gRPC metrics keep their counters' cell numbers and add
 * inline. A counter's cell number is fixed while the counter lives. */
#define PERFC__CELL_CHUNK_SHIFT 10
#define PERFC__CELL_CHUNKS 1024u

typedef _Atomic uint64_t perfc__cell;

typedef struct perfc__cell_table {
  /* Written only by the owning thread (release), read by scrapers
   * (acquire) under metrics.c's lock. */
  _Atomic(perfc__cell *) chunks[PERFC__CELL_CHUNKS];
  struct perfc__cell_table *prev, *next; /* metrics.c's thread list */
} perfc__cell_table;

/* The calling thread's table; NULL before its first update. initial-exec:
 * libperfc is linked at program start, never dlopen'ed. */
extern __thread perfc__cell_table *perfc__cell_tls
    __attribute__((tls_model("initial-exec")));

/* The calling thread's cell number `off`, creating its table or chunk
 * (never NULL: a per-thread sink when out of memory). */
perfc__cell *perfc__cells_slow(uint32_t off);

/* Counter `c`'s cell number. */
uint32_t perfc__counter_cell(const perfc_counter *c);

/* perfc_counter_inc() of the counter whose cell number is `off`. */
static inline void perfc__cell_inc(uint32_t off) {
  perfc__cell_table *t = perfc__cell_tls;
  perfc__cell *c;
  if (__builtin_expect(t != NULL, 1) &&
      __builtin_expect((c = atomic_load_explicit(
                            &t->chunks[off >> PERFC__CELL_CHUNK_SHIFT],
                            memory_order_relaxed)) != NULL,
                       1))
    c += off & ((1u << PERFC__CELL_CHUNK_SHIFT) - 1);
  else
    c = perfc__cells_slow(off);
  /* Single writer: a relaxed load and store, as metrics.c's cell_add_u64. */
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                        memory_order_relaxed);
}

/* Observes, in histogram `h`, the seconds from `start_ns` (perfc__now_ns()
 * time) until now, where "now" may be the end of the calling thread's
 * batch (core/clock_internal.h): on a loop, the instant just before the
 * batch's answers are written, read once for every call of the batch;
 * elsewhere, now. For latencies that end when an answer is ready to
 * leave (the server's handling time). `h` must outlive the batch. */
void perfc__histogram_observe_since(perfc_histogram *h, int64_t start_ns);

#endif /* PERFC_OBSERVE_METRICS_INTERNAL_H */
