/*
 * breaker.c — client-side adaptive throttling from Google's SRE book
 * ("Handling Overload"), as go-zero and kratos implement it: per target and
 * method, over a sliding window of buckets, a call is refused locally with
 * probability
 *     max(0, (requests - K * accepts) / (requests + 1))
 * where `requests` counts every call the application made (refused ones
 * included) and `accepts` the calls the backend answered with anything but
 * an overload or failure code. There is no open/closed state machine: the
 * refusal probability rises as the backend fails and falls as it accepts,
 * so recovery is gradual and needs no half-open probe.
 *
 * Room: runtime/src/guard. A perfc_client_interceptor over perfc/metrics.h.
 *
 * Methods are only known per call, so a method's window is found in a
 * lock-free table keyed by the descriptor's address (generated descriptors
 * are static), created on the method's first call under a mutex, as
 * grpc_metrics.c does. A bucket is two counters and the epoch (bucket
 * number) it belongs to; a thread that finds a stale epoch claims the
 * bucket with a compare-and-swap and zeroes it. A count racing that reset
 * may be lost, which only blurs a statistic that is an estimate anyway.
 */
#include "perfc/breaker.h"
#include "core/error_internal.h"
#include "observe/metrics_internal.h"
#include "perfc/log.h"
#include "server/server_internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_SLOTS 1024 /* power of two */
#define MAX_BUCKETS 1024

typedef struct bucket {
  _Atomic int64_t epoch;
  _Atomic uint64_t requests, accepts;
} bucket;

typedef struct window {
  const perfc_method_desc *desc;
  perfc_counter *rejected;
  perfc_gauge *state;
  _Atomic int throttling; /* last value written to `state` */
  bucket b[];
} window;

struct perfc_breaker {
  char *target;
  double k;
  int64_t bucket_ns;
  unsigned nbuckets, min_requests;
  perfc_clock_fn clock;
  void *clock_ud;
  double (*random)(void *);
  void *random_ud;
  perfc_metrics_family *rejected, *state;
  pthread_mutex_t mu; /* serialises inserts into cache */
  _Atomic(window *) cache[CACHE_SLOTS];
  perfc_client_interceptor ic;
};

void perfc_breaker_opts_init(perfc_breaker_opts *o) {
  memset(o, 0, sizeof *o);
  o->k = PERFC_DEFAULT_BREAKER_K;
  o->window_ms = PERFC_DEFAULT_BREAKER_WINDOW_MS;
  o->buckets = PERFC_DEFAULT_BREAKER_BUCKETS;
  o->min_requests = PERFC_DEFAULT_BREAKER_MIN_REQUESTS;
}

static int64_t now(const perfc_breaker *b) {
  return b->clock ? b->clock(b->clock_ud) : perfc__now_ns();
}

/* xorshift64*, one state per thread: no shared line, good enough to draw
 * refusals. Seeded from the state's own address so threads differ. */
static double thread_random(void) {
  static _Thread_local uint64_t s;
  if (s == 0)
    s = ((uint64_t)(uintptr_t)&s * 0x9E3779B97F4A7C15ull) | 1;
  s ^= s >> 12;
  s ^= s << 25;
  s ^= s >> 27;
  return (double)((s * 0x2545F4914F6CDD1Dull) >> 11) / 9007199254740992.0;
}

/* ---- the window -------------------------------------------------------------
 */

static void record(const perfc_breaker *b, window *w, int accepted) {
  int64_t e = now(b) / b->bucket_ns;
  bucket *bk = &w->b[(uint64_t)e % b->nbuckets];
  int64_t seen = atomic_load_explicit(&bk->epoch, memory_order_acquire);
  if (seen != e &&
      atomic_compare_exchange_strong_explicit(
          &bk->epoch, &seen, e, memory_order_acq_rel, memory_order_acquire)) {
    atomic_store_explicit(&bk->requests, 0, memory_order_relaxed);
    atomic_store_explicit(&bk->accepts, 0, memory_order_relaxed);
  }
  atomic_fetch_add_explicit(&bk->requests, 1, memory_order_relaxed);
  if (accepted)
    atomic_fetch_add_explicit(&bk->accepts, 1, memory_order_relaxed);
}

static double probability(const perfc_breaker *b, window *w) {
  int64_t e = now(b) / b->bucket_ns;
  uint64_t req = 0, acc = 0;
  for (unsigned i = 0; i < b->nbuckets; i++) {
    int64_t ep = atomic_load_explicit(&w->b[i].epoch, memory_order_acquire);
    if (ep > e - (int64_t)b->nbuckets && ep <= e) {
      req += atomic_load_explicit(&w->b[i].requests, memory_order_relaxed);
      acc += atomic_load_explicit(&w->b[i].accepts, memory_order_relaxed);
    }
  }
  if (req < b->min_requests)
    return 0;
  double p = ((double)req - b->k * (double)acc) / ((double)req + 1);
  return p > 0 ? p : 0;
}

static size_t slot_of(const perfc_method_desc *m) {
  uintptr_t h = ((uintptr_t)m >> 4) * 0x9E3779B97F4A7C15ull;
  return (size_t)(h >> 20) & (CACHE_SLOTS - 1);
}

static window *find(perfc_breaker *b, const perfc_method_desc *m) {
  size_t start = slot_of(m);
  for (size_t i = 0; i < CACHE_SLOTS; i++) {
    window *w = atomic_load_explicit(&b->cache[(start + i) & (CACHE_SLOTS - 1)],
                                     memory_order_acquire);
    if (w == NULL || w->desc == m)
      return w;
  }
  return NULL;
}

static window *window_new(perfc_breaker *b, const perfc_method_desc *m) {
  window *w = calloc(1, sizeof *w + b->nbuckets * sizeof w->b[0]);
  if (w == NULL)
    return NULL;
  w->desc = m;
  for (unsigned i = 0; i < b->nbuckets; i++)
    atomic_init(&w->b[i].epoch, INT64_MIN);
  const char *labels[] = {b->target, m->name};
  if (perfc_counter_get(&w->rejected, b->rejected, labels) != 0 ||
      perfc_gauge_get(&w->state, b->state, labels) != 0) {
    free(w);
    return NULL;
  }
  return w;
}

static window *find_or_add(perfc_breaker *b, const perfc_method_desc *m) {
  window *w = find(b, m);
  if (w != NULL)
    return w;
  pthread_mutex_lock(&b->mu);
  size_t start = slot_of(m);
  for (size_t i = 0; i < CACHE_SLOTS; i++) {
    _Atomic(window *) *slot = &b->cache[(start + i) & (CACHE_SLOTS - 1)];
    window *s = atomic_load_explicit(slot, memory_order_relaxed);
    if (s != NULL && s->desc == m) {
      w = s;
      break;
    }
    if (s == NULL) {
      if ((w = window_new(b, m)) != NULL)
        atomic_store_explicit(slot, w, memory_order_release);
      else
        perfc_log(PERFC_LOG_ERROR,
                  "breaker: cannot track %s; its calls pass "
                  "unthrottled",
                  m->path);
      break;
    }
  }
  pthread_mutex_unlock(&b->mu);
  return w; /* NULL: table full or out of memory; the call is not throttled */
}

/* ---- interceptor ------------------------------------------------------------
 */

/* call_state is the window, with the low bit set when we refused the call
 * (windows are malloc'd, so the bit is free). */
#define REFUSED_BIT ((uintptr_t)1)

static perfc_status_code before(void *self, const perfc_method_desc *m,
                                void **call_state) {
  perfc_breaker *b = self;
  window *w = find_or_add(b, m);
  *call_state = w;
  if (w == NULL)
    return PERFC_STATUS_OK;
  double p = probability(b, w);
  int throttling = p > 0;
  /* The gauge is written on transitions only, not on every call. */
  if (atomic_load_explicit(&w->throttling, memory_order_relaxed) !=
          throttling &&
      atomic_exchange_explicit(&w->throttling, throttling,
                               memory_order_relaxed) != throttling)
    perfc_gauge_set(w->state, throttling);
  if (throttling) {
    double r = b->random ? b->random(b->random_ud) : thread_random();
    if (r < p) {
      perfc_counter_inc(w->rejected);
      *call_state = (void *)((uintptr_t)w | REFUSED_BIT);
      return PERFC_STATUS_UNAVAILABLE;
    }
  }
  return PERFC_STATUS_OK;
}

/* The codes that mean "the backend did not serve this": go-zero's list. */
static int accepted(perfc_status_code c) {
  switch (c) {
  case PERFC_STATUS_UNAVAILABLE:
  case PERFC_STATUS_DEADLINE_EXCEEDED:
  case PERFC_STATUS_INTERNAL:
  case PERFC_STATUS_RESOURCE_EXHAUSTED:
  case PERFC_STATUS_DATA_LOSS:
  case PERFC_STATUS_UNIMPLEMENTED:
    return 0;
  default:
    return 1;
  }
}

static void after(void *self, const perfc_method_desc *m, void *call_state,
                  perfc_status_code code, int64_t elapsed_ns) {
  (void)m;
  (void)elapsed_ns;
  uintptr_t v = (uintptr_t)call_state;
  window *w = (window *)(v & ~REFUSED_BIT);
  if (w == NULL)
    return;
  /* A refused call is a request the backend did not accept: counting it is
   * what lets the probability fall again only through real successes. */
  record(self, w, !(v & REFUSED_BIT) && accepted(code));
}

/* ---- lifecycle --------------------------------------------------------------
 */

/* Every family here has the same two labels. */
static const char *const family_labels[] = {"target", "grpc_method"};
#define family(out, reg, type, name, help)                                     \
  perfc__metrics_family(out, reg, type, name, help, family_labels, 2)

int perfc_breaker_new(perfc_breaker **out, const perfc_breaker_opts *opts) {
  if (out == NULL)
    return perfc__fail(PERFC_EINVAL, "breaker: NULL out");
  /* Copied whole, then zeros become defaults: a field added later is kept
   * without a line here. */
  perfc_breaker_opts o;
  perfc_breaker_opts_init(&o);
  if (opts != NULL) {
    const perfc_breaker_opts d = o;
    o = *opts;
    if (o.k == 0)
      o.k = d.k;
    if (o.window_ms == 0)
      o.window_ms = d.window_ms;
    if (o.buckets == 0)
      o.buckets = d.buckets;
    if (o.min_requests == 0)
      o.min_requests = d.min_requests;
  }
  if (!(o.k >= 1))
    return perfc__fail(PERFC_EINVAL, "breaker: k %g is below 1", o.k);
  if (o.buckets > MAX_BUCKETS)
    return perfc__fail(PERFC_EINVAL, "breaker: %u buckets, at most %d",
                       o.buckets, MAX_BUCKETS);
  if (o.window_ms < (int64_t)o.buckets)
    return perfc__fail(PERFC_EINVAL,
                       "breaker: window_ms %lld is shorter than %u buckets "
                       "of 1 ms",
                       (long long)o.window_ms, o.buckets);
  perfc_breaker *b = calloc(1, sizeof *b);
  if (b == NULL)
    return perfc__fail(PERFC_ENOMEM, "breaker: out of memory");
  if ((b->target = strdup(o.target ? o.target : "")) == NULL) {
    free(b);
    return perfc__fail(PERFC_ENOMEM, "breaker: out of memory");
  }
  b->k = o.k;
  b->nbuckets = o.buckets;
  b->bucket_ns = o.window_ms * 1000000 / o.buckets;
  b->min_requests = o.min_requests;
  b->clock = o.clock;
  b->clock_ud = o.clock_user_data;
  b->random = o.random;
  b->random_ud = o.random_user_data;
  int rc = family(&b->rejected, o.registry, PERFC_METRICS_COUNTER,
                  "perfc_breaker_rejected_total",
                  "Client calls failed locally with UNAVAILABLE by adaptive "
                  "throttling.");
  if (rc == 0)
    rc = family(&b->state, o.registry, PERFC_METRICS_GAUGE,
                "perfc_breaker_state",
                "1 while adaptive throttling refuses some calls to the "
                "method, 0 while it lets every call through.");
  if (rc != 0) {
    free(b->target);
    free(b);
    return rc;
  }
  pthread_mutex_init(&b->mu, NULL);
  b->ic = (perfc_client_interceptor){
      .name = "breaker", .self = b, .before = before, .after = after};
  *out = b;
  return 0;
}

const perfc_client_interceptor *perfc_breaker_interceptor(perfc_breaker *b) {
  return b ? &b->ic : NULL;
}

double perfc_breaker_probability(perfc_breaker *b, const perfc_method_desc *m) {
  if (b == NULL || m == NULL)
    return 0;
  window *w = find(b, m);
  return w ? probability(b, w) : 0;
}

void perfc_breaker_free(perfc_breaker *b) {
  if (b == NULL)
    return;
  for (size_t i = 0; i < CACHE_SLOTS; i++)
    free(atomic_load(&b->cache[i]));
  pthread_mutex_destroy(&b->mu);
  free(b->target);
  free(b);
}
