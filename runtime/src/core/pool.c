/*
 * pool.c — the bounded worker pool.
 *
 * Room: runtime/src/core. A ring buffer of jobs under one mutex with two condition
 * variables. The lock is per pool, never global, and only calls that chose
 * the pool (blocking handlers) touch it; inline handlers never do. The bound
 * is checked at submit so overload turns into an immediate refusal.
 */
#include "perfc/pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct job {
  perfc_pool_fn fn;
  void *arg;
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
  perfc_gauge *queued_gauge, *busy_gauge;
  perfc_counter *rejected_counter;
  int sched_batch;
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
    if (p->queued_gauge != NULL)
      perfc_gauge_dec(p->queued_gauge);
    if (p->busy_gauge != NULL)
      perfc_gauge_inc(p->busy_gauge);
    pthread_mutex_unlock(&p->mu);
    j.fn(j.arg);
    pthread_mutex_lock(&p->mu);
    p->busy--;
    p->done++;
    if (p->busy_gauge != NULL)
      perfc_gauge_dec(p->busy_gauge);
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

int perfc_pool_new(perfc_pool **out, const perfc_pool_opts *opts) {
  perfc_pool_opts o;
  perfc_pool_opts_init(&o);
  if (opts != NULL) {
    if (opts->threads)
      o.threads = opts->threads;
    if (opts->queue_max)
      o.queue_max = opts->queue_max;
    o.name = opts->name;
    o.queued_gauge = opts->queued_gauge;
    o.busy_gauge = opts->busy_gauge;
    o.rejected_counter = opts->rejected_counter;
    o.sched_batch = opts->sched_batch;
  }
  if (out == NULL)
    return PERFC_EINVAL;
  perfc_pool *p = calloc(1, sizeof *p);
  if (p == NULL)
    return PERFC_ENOMEM;
  p->cap = o.queue_max;
  p->ring = calloc(p->cap, sizeof *p->ring);
  p->threads = calloc(o.threads, sizeof *p->threads);
  if (p->ring == NULL || p->threads == NULL) {
    free(p->ring);
    free(p->threads);
    free(p);
    return PERFC_ENOMEM;
  }
  snprintf(p->name, sizeof p->name, "%s", o.name ? o.name : "perfc-wk");
  p->queued_gauge = o.queued_gauge;
  p->busy_gauge = o.busy_gauge;
  p->rejected_counter = o.rejected_counter;
  p->sched_batch = o.sched_batch;
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->has_work, NULL);
  for (unsigned i = 0; i < o.threads; i++) {
    if (pthread_create(&p->threads[i], NULL, worker_main, p) != 0) {
      p->nthreads = i;
      perfc_pool_free(p);
      return PERFC_ETHREAD;
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
    return PERFC_EINVAL;
  pthread_mutex_lock(&p->mu);
  if (p->stopping) {
    pthread_mutex_unlock(&p->mu);
    return PERFC_ESHUTDOWN;
  }
  if (p->count == p->cap) {
    p->rejected++;
    if (p->rejected_counter != NULL)
      perfc_counter_inc(p->rejected_counter);
    pthread_mutex_unlock(&p->mu);
    return PERFC_EFULL;
  }
  p->ring[(p->head + p->count) % p->cap] = (job){fn, arg};
  p->count++;
  if (p->queued_gauge != NULL)
    perfc_gauge_inc(p->queued_gauge);
  pthread_cond_signal(&p->has_work);
  pthread_mutex_unlock(&p->mu);
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
