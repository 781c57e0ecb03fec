/*
 * shedding.c — adaptive load shedding: a concurrency limit per unary method
 * that no one sets by hand, after brpc's "auto" concurrency limiter.
 *
 * Room: runtime/src/guard. A server interceptor over perfc/interceptor.h and
 * perfc/metrics.h. docs/reliability.md explains the choice against
 * go-zero/kratos's CPU-based BBR shedding.
 *
 * The limit follows Little's law: a method that completes at most Q calls
 * per second, each taking S seconds when it never waits, needs Q*S calls in
 * flight to stay busy; more only wait in a queue. Per window of calls:
 *   limit = max_qps * ((2 + alpha) * S - L)
 * where max_qps is the highest throughput seen (decaying slowly), S the
 * no-load latency and L the window's average latency from arrival to
 * answer. With no queue (L = S) the limit sits at (1 + alpha) * max_qps * S
 * and, while the limit itself caps throughput, grows by (1 + alpha) per
 * window; as queueing makes L rise above S it shrinks, and it settles
 * where L is about (1 + alpha / 2) * S.
 *
 * brpc estimates S from the same end-to-end latencies, so a first window
 * measured behind a queue keeps the queue (it remeasures every ~50 s).
 * perfc measures S without the queue: `on_message` for the request runs
 * when the handler is about to start (after any wait for a worker), so S is
 * the smallest windowed average of handler time over the last
 * SERVICE_WINDOWS windows — free of queueing, and following a method that
 * really became slower within seconds.
 *
 * Hot path: admission is one fetch-add on the method's in-flight counter
 * (a concurrency limit must count in one place); samples go into the
 * window under a try-lock, and a sample that finds the lock taken is
 * dropped rather than waited for.
 */
#include "perfc/shedding.h"
#include "core/error_internal.h"
#include "observe/metrics_internal.h"
#include "perfc/log.h"
#include "perfc/server.h"
#include "server/server_internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Windows whose service time S is the minimum of: 20 x 500 ms = 10 s. */
#define SERVICE_WINDOWS 20
/* A window short of min_samples stays open up to this many window lengths
 * (slow methods still adapt), then closes if it holds at least
 * SPARSE_SAMPLES calls, or is dropped. */
#define SPARSE_STRETCH 10
#define SPARSE_SAMPLES 8
/* How fast max_qps forgets a peak: 10% of the gap per window. */
#define QPS_DECAY 0.1

typedef struct limiter {
  _Atomic int inflight;
  _Atomic int limit;
  perfc_shedding *sh;
  perfc_counter *rejected;
  perfc_gauge *limit_gauge, *latency_gauge;

  pthread_mutex_t mu; /* the window below; only ever try-locked */
  int64_t start_ns;
  uint64_t count;
  double sum_total_ns, sum_service_ns;
  double max_qps;
  double service_ns[SERVICE_WINDOWS]; /* ring of window averages, 0 = unset */
  unsigned ring_pos;
} limiter;

struct perfc_shedding {
  perfc_shedding_opts o;
  int64_t window_ns;
  perfc_metrics_family *rejected, *limit, *latency;
  perfc_server_interceptor ic;
};

void perfc_shedding_opts_init(perfc_shedding_opts *o) {
  memset(o, 0, sizeof *o);
  o->window_ms = PERFC_DEFAULT_SHEDDING_WINDOW_MS;
  o->min_samples = PERFC_DEFAULT_SHEDDING_MIN_SAMPLES;
  o->min_limit = PERFC_DEFAULT_SHEDDING_MIN_LIMIT;
  o->initial_limit = PERFC_DEFAULT_SHEDDING_INITIAL_LIMIT;
  o->max_limit = PERFC_DEFAULT_SHEDDING_MAX_LIMIT;
  o->alpha = PERFC_DEFAULT_SHEDDING_ALPHA;
}

/* Closes a window: new max_qps, S and limit. Called with mu held. */
static void update(limiter *l, int64_t now) {
  const perfc_shedding_opts *o = &l->sh->o;
  double elapsed = (double)(now - l->start_ns);
  double qps = (double)l->count * 1e9 / elapsed;
  double avg_total = l->sum_total_ns / (double)l->count;
  double avg_service = l->sum_service_ns / (double)l->count;
  if (qps >= l->max_qps)
    l->max_qps = qps;
  else
    l->max_qps += (qps - l->max_qps) * QPS_DECAY;
  l->service_ns[l->ring_pos] = avg_service;
  l->ring_pos = (l->ring_pos + 1) % SERVICE_WINDOWS;
  double s = avg_service;
  for (unsigned i = 0; i < SERVICE_WINDOWS; i++)
    if (l->service_ns[i] > 0 && l->service_ns[i] < s)
      s = l->service_ns[i];
  double next = l->max_qps * ((2 + o->alpha) * s - avg_total) / 1e9;
  if (next < (double)o->min_limit)
    next = o->min_limit;
  if (next > (double)o->max_limit)
    next = o->max_limit;
  int limit = (int)(next + 0.5);
  atomic_store_explicit(&l->limit, limit, memory_order_relaxed);
  /* Once per window: a shared write is fine here. */
  perfc_gauge_set(l->limit_gauge, limit);
  perfc_gauge_set(l->latency_gauge, s / 1e9);
}

static void sample(limiter *l, int64_t now, int64_t total_ns,
                   int64_t service_ns) {
  if (pthread_mutex_trylock(&l->mu) != 0)
    return; /* another thread is sampling: losing one sample is harmless */
  if (l->start_ns == 0)
    l->start_ns = now;
  l->count++;
  l->sum_total_ns += (double)total_ns;
  l->sum_service_ns += (double)service_ns;
  int64_t elapsed = now - l->start_ns;
  int64_t window = l->sh->window_ns;
  if (elapsed >= window) {
    int full = l->count >= l->sh->o.min_samples;
    int stretched = elapsed >= window * SPARSE_STRETCH;
    if (full || (stretched && l->count >= SPARSE_SAMPLES))
      update(l, now);
    if (full || stretched) {
      l->start_ns = now;
      l->count = 0;
      l->sum_total_ns = l->sum_service_ns = 0;
    }
  }
  pthread_mutex_unlock(&l->mu);
}

/* ---- interceptor ------------------------------------------------------------
 */

static void *method_init(void *self, const perfc_service_desc *svc,
                         const perfc_method_desc *m) {
  perfc_shedding *sh = self;
  if (m->kind != PERFC_METHOD_UNARY)
    return NULL;
  limiter *l = calloc(1, sizeof *l);
  if (l == NULL)
    goto fail;
  l->sh = sh;
  atomic_init(&l->inflight, 0);
  atomic_init(&l->limit, (int)sh->o.initial_limit);
  pthread_mutex_init(&l->mu, NULL);
  const char *labels[] = {svc->name, m->name};
  if (perfc_counter_get(&l->rejected, sh->rejected, labels) != 0 ||
      perfc_gauge_get(&l->limit_gauge, sh->limit, labels) != 0 ||
      perfc_gauge_get(&l->latency_gauge, sh->latency, labels) != 0) {
    pthread_mutex_destroy(&l->mu);
    free(l);
    goto fail;
  }
  perfc_gauge_set(l->limit_gauge, sh->o.initial_limit);
  return l;
fail:
  perfc_log(PERFC_LOG_ERROR,
            "shedding: out of memory setting up %s; it is not shed", m->path);
  return NULL;
}

static void method_free(void *self, void *state) {
  (void)self;
  limiter *l = state;
  if (l == NULL)
    return;
  pthread_mutex_destroy(&l->mu);
  free(l);
}

static perfc_status_code before(void *self, void *state, perfc_ctx *ctx,
                                void **call_state) {
  (void)self;
  limiter *l = state;
  if (l == NULL)
    return PERFC_STATUS_OK;
  int n = atomic_fetch_add_explicit(&l->inflight, 1, memory_order_relaxed) + 1;
  int limit = atomic_load_explicit(&l->limit, memory_order_relaxed);
  if (n > limit) {
    atomic_fetch_sub_explicit(&l->inflight, 1, memory_order_relaxed);
    perfc_counter_inc(l->rejected);
    return perfc_ctx_error(ctx, PERFC_STATUS_RESOURCE_EXHAUSTED,
                           "server overloaded: %s is at its adaptive limit of "
                           "%d calls in flight",
                           perfc_ctx_method(ctx), limit);
  }
  /* The handler's start time, set by on_message; 0 until then. */
  int64_t *started = perfc_ctx_alloc(ctx, sizeof *started);
  if (started != NULL)
    *started = 0;
  *call_state = started != NULL ? (void *)started : (void *)l;
  return PERFC_STATUS_OK;
}

static void on_message(void *self, void *state, perfc_ctx *ctx,
                       void *call_state, int sent) {
  (void)self;
  (void)ctx;
  if (state != NULL && !sent && call_state != state)
    *(int64_t *)call_state = perfc__now_ns();
}

/* Calls that failed fast say nothing about how long the method takes:
 * refusals by later interceptors or a full worker queue, and cancellations. */
static int is_sample(perfc_status_code code) {
  return code != PERFC_STATUS_RESOURCE_EXHAUSTED &&
         code != PERFC_STATUS_CANCELLED && code != PERFC_STATUS_UNAVAILABLE &&
         code != PERFC_STATUS_UNAUTHENTICATED &&
         code != PERFC_STATUS_PERMISSION_DENIED;
}

static void after(void *self, void *state, perfc_ctx *ctx, void *call_state,
                  perfc_status_code code) {
  (void)self;
  limiter *l = state;
  if (l == NULL || call_state == NULL)
    return; /* not admitted by us: nothing to release */
  atomic_fetch_sub_explicit(&l->inflight, 1, memory_order_relaxed);
  if (call_state == (void *)l || !is_sample(code))
    return;
  int64_t started = *(const int64_t *)call_state;
  if (started == 0)
    return; /* never reached the handler (deadline, bad request) */
  int64_t now = perfc__now_ns();
  sample(l, now, now - perfc_ctx_start_ns(ctx), now - started);
}

/* ---- lifecycle --------------------------------------------------------------
 */

/* Every family here has the same two labels. */
static const char *const family_labels[] = {"grpc_service", "grpc_method"};
#define family(out, reg, type, name, help)                                     \
  perfc__metrics_family(out, reg, type, name, help, family_labels, 2)

int perfc_shedding_new(perfc_shedding **out, const perfc_shedding_opts *opts) {
  if (out == NULL)
    return perfc__fail(PERFC_EINVAL, "shedding: NULL out");
  /* Copied whole, then zeros become defaults: a field added later is kept
   * without a line here. */
  perfc_shedding_opts o;
  perfc_shedding_opts_init(&o);
  if (opts != NULL) {
    const perfc_shedding_opts d = o;
    o = *opts;
    if (o.window_ms == 0)
      o.window_ms = d.window_ms;
    if (o.min_samples == 0)
      o.min_samples = d.min_samples;
    if (o.min_limit == 0)
      o.min_limit = d.min_limit;
    if (o.initial_limit == 0)
      o.initial_limit = d.initial_limit;
    if (o.max_limit == 0)
      o.max_limit = d.max_limit;
    if (o.alpha == 0)
      o.alpha = d.alpha;
  }
  if (o.window_ms < 1)
    return perfc__fail(PERFC_EINVAL, "shedding: window_ms %lld is negative",
                       (long long)o.window_ms);
  if (!(o.alpha > 0 && o.alpha <= 1))
    return perfc__fail(PERFC_EINVAL, "shedding: alpha %g is outside (0, 1]",
                       o.alpha);
  if (o.max_limit > PERFC_DEFAULT_SHEDDING_MAX_LIMIT)
    return perfc__fail(PERFC_EINVAL, "shedding: max_limit %u is above %u",
                       o.max_limit, (unsigned)PERFC_DEFAULT_SHEDDING_MAX_LIMIT);
  if (o.min_limit > o.max_limit || o.initial_limit > o.max_limit)
    return perfc__fail(PERFC_EINVAL,
                       "shedding: min_limit %u and initial_limit %u must not "
                       "exceed max_limit %u",
                       o.min_limit, o.initial_limit, o.max_limit);
  perfc_shedding *sh = calloc(1, sizeof *sh);
  if (sh == NULL)
    return perfc__fail(PERFC_ENOMEM, "shedding: out of memory");
  sh->o = o;
  sh->window_ns = o.window_ms * 1000000;
  int rc = family(&sh->rejected, o.registry, PERFC_METRICS_COUNTER,
                  "perfc_shedding_rejected_total",
                  "Calls refused with RESOURCE_EXHAUSTED by the adaptive "
                  "concurrency limit.");
  if (rc == 0)
    rc = family(&sh->limit, o.registry, PERFC_METRICS_GAUGE,
                "perfc_shedding_limit",
                "Current adaptive limit of calls in flight.");
  if (rc == 0)
    rc = family(&sh->latency, o.registry, PERFC_METRICS_GAUGE,
                "perfc_shedding_noload_latency_seconds",
                "Handler time without queueing the limit is computed from.");
  if (rc != 0) {
    free(sh);
    return rc;
  }
  sh->ic = (perfc_server_interceptor){
      .name = "shedding",
      .self = sh,
      .method_init = method_init,
      .method_free = method_free,
      .before = before,
      .on_message = on_message,
      .after = after,
  };
  *out = sh;
  return 0;
}

int perfc_shedding_attach(perfc_shedding *sh, perfc_server *srv) {
  if (sh == NULL)
    return perfc__fail(PERFC_EINVAL, "shedding: attach needs a shedder");
  return perfc_server_add_interceptor(srv, &sh->ic);
}

void perfc_shedding_free(perfc_shedding *sh) { free(sh); }
