/*
 * pool.c — the bounded worker pool.
 *
 * Room: runtime/src/core; calls nothing above core (its numbers reach
 * metrics through perfc_pool_opts.observer). A ring buffer of jobs under
 * one mutex with two condition variables. The lock is per pool, never global,
 * and only calls that chose the pool (blocking handlers) touch it; inline
 * handlers never do. The bound is checked at submit so overload turns into an
 * immediate refusal.
 */
#include "perfc/pool.h"
#include "core/error_internal.h"
#include "core/thread_internal.h"
#include "perfc/trace_context.h"

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct job {
  perfc_pool_fn fn;
  void *arg;
  /* The submitter's trace context: the job is the rest of the work the
   * submitter was doing for a call (a handler handed to a worker), so its
   * Redis, PostgreSQL and log lines belong to that call's span. */
  perfc_trace_current tc;
} job;

struct perfc_pool {
  pthread_mutex_t mu;
  pthread_cond_t has_work;
  job *ring;
  unsigned cap, head, count;
  unsigned busy;
  int stopping;
  uint64_t rejected, done;
  unsigned nthreads;
  pthread_t *threads;
  perfc_pool_observer_fn observer;
  void *observer_ud;
  bool sched_batch;
  char name[12];
};

void perfc_pool_opts_init(perfc_pool_opts *o) {
  memset(o, 0, sizeof *o);
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  if (cores < 1)
    cores = 1;
  o->threads = (unsigned)cores * PERFC_DEFAULT_POOL_THREADS_PER_CORE;
  o->queue_max = PERFC_DEFAULT_POOL_QUEUE;
  o->name = NULL;
}

static void *worker_main(void *arg) {
  perfc_pool *p = arg;
  if (p->sched_batch) {
    /* Failure leaves the normal policy, which is only slower. */
    struct sched_param sp = {.sched_priority = 0};
    (void)pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
  }
  pthread_mutex_lock(&p->mu);
  for (;;) {
    while (p->count == 0 && !p->stopping)
      pthread_cond_wait(&p->has_work, &p->mu);
    if (p->count == 0) /* stopping and drained */
      break;
    job j = p->ring[p->head];
    p->head = (p->head + 1) % p->cap;
    p->count--;
    p->busy++;
    if (p->observer != NULL)
      p->observer(PERFC_POOL_STARTED, p->observer_ud);
    pthread_mutex_unlock(&p->mu);
    perfc_trace_current_set(&j.tc);
    j.fn(j.arg);
    perfc_trace_current_set(NULL);
    pthread_mutex_lock(&p->mu);
    p->busy--;
    p->done++;
    if (p->observer != NULL)
      p->observer(PERFC_POOL_FINISHED, p->observer_ud);
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

int perfc_pool_new(perfc_pool **out, const perfc_pool_opts *opts) {
  if (out == NULL)
    return perfc__fail(PERFC_EINVAL, "pool: NULL out");
  /* Copied whole, then zeros become defaults: a field added to the options
   * later is kept without a line here. */
  perfc_pool_opts o;
  perfc_pool_opts_init(&o);
  if (opts != NULL) {
    perfc_pool_opts d = o;
    o = *opts;
    if (o.threads == 0)
      o.threads = d.threads;
    if (o.queue_max == 0)
      o.queue_max = d.queue_max;
  }
  perfc_pool *p = calloc(1, sizeof *p);
  if (p == NULL)
    return perfc__fail(PERFC_ENOMEM, "pool: out of memory");
  p->cap = o.queue_max;
  p->ring = calloc(p->cap, sizeof *p->ring);
  p->threads = calloc(o.threads, sizeof *p->threads);
  if (p->ring == NULL || p->threads == NULL) {
    free(p->ring);
    free(p->threads);
    free(p);
    return perfc__fail(PERFC_ENOMEM,
                       "pool: out of memory for %u threads and %u queued jobs",
                       o.threads, o.queue_max);
  }
  snprintf(p->name, sizeof p->name, "%s", o.name ? o.name : "perfc-wk");
  p->observer = o.observer;
  p->observer_ud = o.observer_user_data;
  p->sched_batch = o.sched_batch;
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->has_work, NULL);
  for (unsigned i = 0; i < o.threads; i++) {
    if (perfc__thread_create(&p->threads[i], worker_main, p) != 0) {
      p->nthreads = i;
      perfc_pool_free(p);
      return perfc__fail(PERFC_ETHREAD, "pool: cannot start worker %u of %u",
                         i + 1, o.threads);
    }
    p->nthreads = i + 1;
    char tn[16]; /* the kernel keeps 15 characters of a thread name */
    snprintf(tn, sizeof tn, "%.8s%u", p->name, i % 10000u);
    pthread_setname_np(p->threads[i], tn);
  }
  *out = p;
  return 0;
}

int perfc_pool_submit(perfc_pool *p, perfc_pool_fn fn, void *arg) {
  if (p == NULL || fn == NULL)
    return perfc__fail(PERFC_EINVAL,
                       "pool: submit needs a pool and a function");
  pthread_mutex_lock(&p->mu);
  if (p->stopping) {
    pthread_mutex_unlock(&p->mu);
    return perfc__fail(PERFC_ESHUTDOWN, "pool: shutting down");
  }
  if (p->count == p->cap) {
    p->rejected++;
    if (p->observer != NULL)
      p->observer(PERFC_POOL_REJECTED, p->observer_ud);
    unsigned cap = p->cap;
    pthread_mutex_unlock(&p->mu);
    /* Outside the lock: only the refused caller pays for the message. */
    return perfc__fail(PERFC_EFULL, "pool: queue full (%u jobs waiting)", cap);
  }
  job *j = &p->ring[(p->head + p->count) % p->cap];
  j->fn = fn;
  j->arg = arg;
  perfc_trace_current_get(&j->tc);
  p->count++;
  if (p->observer != NULL)
    p->observer(PERFC_POOL_QUEUED, p->observer_ud);
  pthread_cond_signal(&p->has_work);
  pthread_mutex_unlock(&p->mu);
  /* The context moved with the job: the submitter (a server poller handing
   * a call to a worker) goes on to other calls, and its own log lines must
   * not carry this call's ids. */
  perfc_trace_current_set(NULL);
  return 0;
}

void perfc_pool_free(perfc_pool *p) {
  if (p == NULL)
    return;
  pthread_mutex_lock(&p->mu);
  p->stopping = 1;
  pthread_cond_broadcast(&p->has_work);
  pthread_mutex_unlock(&p->mu);
  for (unsigned i = 0; i < p->nthreads; i++)
    pthread_join(p->threads[i], NULL);
  pthread_cond_destroy(&p->has_work);
  pthread_mutex_destroy(&p->mu);
  free(p->threads);
  free(p->ring);
  free(p);
}

void perfc_pool_stats_get(perfc_pool *p, perfc_pool_stats *out) {
  pthread_mutex_lock(&p->mu);
  out->threads = p->nthreads;
  out->queued = p->count;
  out->busy = p->busy;
  out->rejected = p->rejected;
  out->done = p->done;
  pthread_mutex_unlock(&p->mu);
}
