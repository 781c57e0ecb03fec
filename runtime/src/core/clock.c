/*
 * core/clock.c — the monotonic clock and a loop thread's batch
 * (core/clock_internal.h).
 *
 * Room: runtime/src/core. Calls libc only.
 */
#include "core/clock_internal.h"

#include <time.h>

int64_t perfc__now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A handful of hooks: the runtime has one user (observe/metrics.c's
 * latency histograms); a thread whose slots are full does its work now. */
#define BATCH_HOOKS 4

typedef struct batch {
  int active;
  unsigned n;
  void (*fn[BATCH_HOOKS])(int64_t now_ns);
} batch;

/* initial-exec: one %fs-relative access per call, as the metrics' cells
 * (libperfc is linked at program start, never dlopen'ed). */
static __thread batch t_batch __attribute__((tls_model("initial-exec")));

void perfc__batch_begin(void) { t_batch.active = 1; }

void perfc__batch_end(void) {
  batch *b = &t_batch;
  b->active = 0;
  if (b->n == 0)
    return;
  int64_t now = perfc__now_ns();
  /* A hook may not register again (the batch is over), so n is final. */
  for (unsigned i = 0; i < b->n; i++)
    b->fn[i](now);
  b->n = 0;
}

int perfc__batch_at_end(void (*fn)(int64_t now_ns)) {
  batch *b = &t_batch;
  if (!b->active)
    return -1;
  for (unsigned i = 0; i < b->n; i++)
    if (b->fn[i] == fn)
      return 0;
  if (b->n == BATCH_HOOKS)
    return -1;
  b->fn[b->n++] = fn;
  return 0;
}
