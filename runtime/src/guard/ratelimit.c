/*
 * ratelimit.c — token-bucket rate limiting as a server interceptor: global,
 * per method or per service, optionally one bucket per value of a metadata
 * key (an API key), with a bounded LRU table of keys.
 *
 * Room: runtime/src/guard. Uses perfc/interceptor.h and perfc/metrics.h only.
 *
 * A bucket is GCRA (the "generic cell rate algorithm"), which is a token
 * bucket stored as one number: the theoretical arrival time `tat` of the
 * next call if calls came exactly at the rate. A call at `now` is admitted
 * when max(tat, now) + interval - now <= burst * interval, and then tat
 * becomes max(tat, now) + interval. Holding the whole state in one 64-bit
 * atomic makes taking a token a single compare-and-swap loop with no lock
 * and no separate refill step, and it admits exactly `burst` calls from a
 * full bucket and exactly `rate` per second after that.
 *
 * Keyed buckets live in a table split into shards, each with its own mutex
 * and LRU list, so calls with different keys rarely meet on one lock.
 */
#include "perfc/ratelimit.h"
#include "core/error_internal.h"
#include "observe/metrics_internal.h"
#include "perfc/log.h"
#include "perfc/server.h"
#include "server/server_internal.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_SHARDS 16 /* power of two */

typedef struct key_entry {
  struct key_entry *hnext;         /* hash chain */
  struct key_entry *lprev, *lnext; /* LRU list, most recent first */
  uint64_t hash;
  _Atomic int64_t tat;
  size_t len;
  char key[]; /* not NUL-terminated: compared by length */
} key_entry;

typedef struct key_shard {
  pthread_mutex_t mu;
  key_entry **table; /* `nslots` chains */
  size_t nslots, count, cap;
  key_entry *head, *tail;
} key_shard;

typedef struct rule rule;

/* One bucket (or one table of keyed buckets) and what it costs. */
typedef struct bucket {
  const rule *r;
  _Atomic int64_t tat;
  key_shard *shards; /* keyed rules only */
} bucket;

struct rule {
  char *method;  /* NULL: global */
  size_t prefix; /* service-wide rule: length of "/pkg.Svc/" */
  char *key;     /* metadata key, or NULL */
  int64_t interval_ns, tau_ns;
  unsigned max_keys;
  char what[160];    /* "rate limit of 10/s (burst 10) per x-api-key" */
  const char *scope; /* the metric's label: global, service or method */
  bucket *global;    /* global rules: the one shared bucket */
};

/* A method's view: the rules that apply to it, in order. */
typedef struct applied {
  bucket *b;
  int owned; /* allocated for this method (freed with it) */
  perfc_counter *rejected;
} applied;

typedef struct method_state {
  size_t n;
  applied a[];
} method_state;

struct perfc_ratelimit {
  rule *rules;
  size_t nrules;
  perfc_metrics_family *rejected;
  perfc_clock_fn clock;
  void *clock_ud;
  perfc_server_interceptor ic;
};

void perfc_ratelimit_opts_init(perfc_ratelimit_opts *o) {
  memset(o, 0, sizeof *o);
}

/* ---- buckets ----------------------------------------------------------------
 */

/* The GCRA step: one CAS loop; returns 1 when a token was taken. */
static int take(_Atomic int64_t *tat, int64_t now, int64_t interval,
                int64_t tau) {
  int64_t old = atomic_load_explicit(tat, memory_order_relaxed);
  for (;;) {
    int64_t next = (old > now ? old : now) + interval;
    if (next - now > tau)
      return 0;
    if (atomic_compare_exchange_weak_explicit(
            tat, &old, next, memory_order_relaxed, memory_order_relaxed))
      return 1;
  }
}

/* Gives a token back when a later rule refused the call, so a call refused
 * by one limit does not also spend another. */
static void give_back(_Atomic int64_t *tat, int64_t interval) {
  atomic_fetch_sub_explicit(tat, interval, memory_order_relaxed);
}

static uint64_t hash_bytes(const char *p, size_t n) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (size_t i = 0; i < n; i++)
    h = (h ^ (uint8_t)p[i]) * 1099511628211ull;
  return h;
}

static void lru_unlink(key_shard *s, key_entry *e) {
  if (e->lprev)
    e->lprev->lnext = e->lnext;
  else
    s->head = e->lnext;
  if (e->lnext)
    e->lnext->lprev = e->lprev;
  else
    s->tail = e->lprev;
  e->lprev = e->lnext = NULL;
}

static void lru_push(key_shard *s, key_entry *e) {
  e->lnext = s->head;
  e->lprev = NULL;
  if (s->head)
    s->head->lprev = e;
  s->head = e;
  if (s->tail == NULL)
    s->tail = e;
}

static void chain_remove(key_shard *s, key_entry *e) {
  key_entry **pp = &s->table[e->hash & (s->nslots - 1)];
  while (*pp != e)
    pp = &(*pp)->hnext;
  *pp = e->hnext;
}

/* The entry of `key` in shard `s` (lock held), or NULL. */
static key_entry *lookup(key_shard *s, uint64_t h, const char *key,
                         size_t len) {
  key_entry *e = s->table[h & (s->nslots - 1)];
  while (e != NULL &&
         !(e->hash == h && e->len == len && memcmp(e->key, key, len) == 0))
    e = e->hnext;
  return e;
}

static key_shard *shard_of(bucket *b, uint64_t h) {
  return &b->shards[(h >> 32) & (KEY_SHARDS - 1)];
}

/* Takes a token from the bucket of `key`, creating it (full) if new and
 * evicting the least recently used key when the shard is at its bound.
 * Returns 1 admitted, 0 refused, -1 out of memory (the call is admitted:
 * failing open beats refusing everyone when the table cannot grow). */
static int take_keyed(bucket *b, const char *key, size_t len, int64_t now) {
  uint64_t h = hash_bytes(key, len);
  key_shard *s = shard_of(b, h);
  pthread_mutex_lock(&s->mu);
  key_entry *e = lookup(s, h, key, len);
  if (e != NULL) {
    lru_unlink(s, e);
  } else {
    if (s->count >= s->cap) {
      e = s->tail; /* forget the least recently used key */
      lru_unlink(s, e);
      chain_remove(s, e);
      s->count--;
      if (e->len < len) {
        free(e);
        e = NULL;
      }
    }
    if (e == NULL && (e = malloc(sizeof *e + len)) == NULL) {
      pthread_mutex_unlock(&s->mu);
      return -1;
    }
    e->hash = h;
    e->len = len;
    memcpy(e->key, key, len);
    atomic_init(&e->tat, 0);
    e->hnext = s->table[h & (s->nslots - 1)];
    s->table[h & (s->nslots - 1)] = e;
    s->count++;
  }
  lru_push(s, e);
  int ok = take(&e->tat, now, b->r->interval_ns, b->r->tau_ns);
  pthread_mutex_unlock(&s->mu);
  return ok;
}

/* give_back() for a keyed bucket. The key is looked up again under the
 * lock: another call may have evicted (and freed) its entry meanwhile, and
 * then there is nothing to give back to. */
static void give_back_keyed(bucket *b, const char *key, size_t len) {
  uint64_t h = hash_bytes(key, len);
  key_shard *s = shard_of(b, h);
  pthread_mutex_lock(&s->mu);
  key_entry *e = lookup(s, h, key, len);
  if (e != NULL)
    give_back(&e->tat, b->r->interval_ns);
  pthread_mutex_unlock(&s->mu);
}

static void bucket_free(bucket *b) {
  if (b == NULL)
    return;
  if (b->shards != NULL) {
    for (size_t i = 0; i < KEY_SHARDS; i++) {
      key_shard *s = &b->shards[i];
      for (key_entry *e = s->head, *n; e != NULL; e = n) {
        n = e->lnext;
        free(e);
      }
      free(s->table);
      pthread_mutex_destroy(&s->mu);
    }
    free(b->shards);
  }
  free(b);
}

static bucket *bucket_new(const rule *r) {
  bucket *b = calloc(1, sizeof *b);
  if (b == NULL)
    return NULL;
  b->r = r;
  atomic_init(&b->tat, 0);
  if (r->key == NULL)
    return b;
  if ((b->shards = calloc(KEY_SHARDS, sizeof *b->shards)) == NULL) {
    free(b);
    return NULL;
  }
  size_t cap = (r->max_keys + KEY_SHARDS - 1) / KEY_SHARDS;
  size_t slots = 1;
  while (slots < cap)
    slots <<= 1;
  for (size_t i = 0; i < KEY_SHARDS; i++) {
    key_shard *s = &b->shards[i];
    pthread_mutex_init(&s->mu, NULL);
    s->cap = cap;
    s->nslots = slots;
    if ((s->table = calloc(slots, sizeof *s->table)) == NULL) {
      for (size_t j = i + 1; j < KEY_SHARDS; j++)
        pthread_mutex_init(&b->shards[j].mu, NULL);
      bucket_free(b);
      return NULL;
    }
  }
  return b;
}

/* ---- interceptor ------------------------------------------------------------
 */

static int rule_applies(const rule *r, const char *path) {
  if (r->method == NULL)
    return 1;
  if (r->prefix)
    return strncmp(path, r->method, r->prefix) == 0;
  return strcmp(path, r->method) == 0;
}

static void method_free(void *self, void *state) {
  (void)self;
  method_state *ms = state;
  if (ms == NULL)
    return;
  for (size_t i = 0; i < ms->n; i++)
    if (ms->a[i].owned)
      bucket_free(ms->a[i].b);
  free(ms);
}

static void *method_init(void *self, const perfc_service_desc *svc,
                         const perfc_method_desc *m) {
  perfc_ratelimit *rl = self;
  size_t n = 0;
  for (size_t i = 0; i < rl->nrules; i++)
    n += rule_applies(&rl->rules[i], m->path);
  if (n == 0)
    return NULL;
  method_state *ms = calloc(1, sizeof *ms + n * sizeof ms->a[0]);
  if (ms == NULL)
    goto fail;
  for (size_t i = 0; i < rl->nrules; i++) {
    rule *r = &rl->rules[i];
    if (!rule_applies(r, m->path))
      continue;
    applied *a = &ms->a[ms->n++];
    if (r->global != NULL) {
      a->b = r->global;
    } else {
      a->owned = 1;
      if ((a->b = bucket_new(r)) == NULL)
        goto fail;
    }
    const char *labels[] = {svc->name, m->name, r->scope};
    if (perfc_counter_get(&a->rejected, rl->rejected, labels) != 0)
      goto fail;
  }
  return ms;
fail:
  /* A method whose limits cannot be set up must not run unlimited without
   * a trace; it runs unlimited (refusing everything would be worse), and
   * the log says so. */
  perfc_log(PERFC_LOG_ERROR,
            "ratelimit: out of memory setting up %s; it "
            "runs without rate limits",
            m->path);
  method_free(self, ms);
  return NULL;
}

static perfc_status_code before(void *self, void *state, perfc_ctx *ctx,
                                void **call_state) {
  (void)call_state;
  perfc_ratelimit *rl = self;
  method_state *ms = state;
  if (ms == NULL)
    return PERFC_STATUS_OK;
  int64_t now = rl->clock ? rl->clock(rl->clock_ud) : perfc__now_ns();
  /* What each rule took, to give it back if a later rule refuses. */
  struct {
    const char *key; /* keyed rules: the key's value, in the call's arena */
    size_t len;
    int took;
  } taken[PERFC_RATELIMIT_MAX_RULES];
  for (size_t i = 0; i < ms->n; i++) {
    bucket *b = ms->a[i].b;
    const rule *r = b->r;
    int ok;
    taken[i].key = NULL;
    if (r->key == NULL) {
      ok = take(&b->tat, now, r->interval_ns, r->tau_ns);
    } else {
      size_t len = 0;
      const char *v = perfc_ctx_metadata_get(ctx, r->key, &len);
      taken[i].key = v ? v : "";
      taken[i].len = v ? len : 0;
      ok = take_keyed(b, taken[i].key, taken[i].len, now);
    }
    taken[i].took = ok > 0; /* -1: admitted without a bucket */
    if (ok == 0) {
      for (size_t j = 0; j < i; j++) {
        bucket *bj = ms->a[j].b;
        if (!taken[j].took)
          continue;
        if (taken[j].key == NULL)
          give_back(&bj->tat, bj->r->interval_ns);
        else
          give_back_keyed(bj, taken[j].key, taken[j].len);
      }
      perfc_counter_inc(ms->a[i].rejected);
      return perfc_ctx_error(ctx, PERFC_STATUS_RESOURCE_EXHAUSTED,
                             "%s exceeded for %s", r->what,
                             perfc_ctx_method(ctx));
    }
  }
  return PERFC_STATUS_OK;
}

/* ---- lifecycle --------------------------------------------------------------
 */

static void rule_clear(rule *r) {
  free(r->method);
  free(r->key);
  bucket_free(r->global);
}

void perfc_ratelimit_free(perfc_ratelimit *rl) {
  if (rl == NULL)
    return;
  for (size_t i = 0; i < rl->nrules; i++)
    rule_clear(&rl->rules[i]);
  free(rl->rules);
  free(rl);
}

static int rule_init(rule *r, const perfc_ratelimit_rule *in, size_t index,
                     unsigned max_keys) {
  double burst = in->burst > 0 ? in->burst : (in->rate > 1 ? in->rate : 1);
  if (!(in->rate > 0) || !isfinite(in->rate) || 1e9 / in->rate < 1)
    return perfc_error_set(PERFC_EINVAL, NULL, (long)index,
                           "ratelimit: rule %zu: rate %g is not in (0, 1e9]",
                           index, in->rate);
  if (in->burst < 0 || (in->burst > 0 && in->burst < 1) || !isfinite(burst) ||
      burst * 1e9 / in->rate > 9e18)
    return perfc_error_set(PERFC_EINVAL, NULL, (long)index,
                           "ratelimit: rule %zu: burst %g is neither 0 nor a "
                           "finite number >= 1",
                           index, in->burst);
  const char *m = in->method;
  if (m != NULL && m[0] == '\0')
    m = NULL;
  if (m != NULL && m[0] != '/')
    return perfc_error_set(PERFC_EINVAL, NULL, (long)index,
                           "ratelimit: rule %zu: method \"%s\" does not start "
                           "with '/'",
                           index, m);
  if (in->key_metadata != NULL) {
    if (in->key_metadata[0] == '\0')
      return perfc_error_set(PERFC_EINVAL, NULL, (long)index,
                             "ratelimit: rule %zu: empty key_metadata", index);
    for (const char *p = in->key_metadata; *p; p++)
      if (*p >= 'A' && *p <= 'Z') /* metadata keys arrive lower-case */
        return perfc_error_set(PERFC_EINVAL, NULL, (long)index,
                               "ratelimit: rule %zu: key_metadata \"%s\" is "
                               "not lower-case",
                               index, in->key_metadata);
  }
  r->interval_ns = (int64_t)(1e9 / in->rate + 0.5);
  r->tau_ns = (int64_t)(burst * 1e9 / in->rate + 0.5);
  r->max_keys = max_keys;
  if ((m != NULL && (r->method = strdup(m)) == NULL) ||
      (in->key_metadata != NULL && (r->key = strdup(in->key_metadata)) == NULL))
    return perfc__fail(PERFC_ENOMEM, "ratelimit: out of memory");
  size_t n = m ? strlen(m) : 0;
  if (n > 0 && m[n - 1] == '/')
    r->prefix = n;
  r->scope = m == NULL ? "global" : r->prefix ? "service" : "method";
  snprintf(r->what, sizeof r->what, "rate limit of %g/s (burst %g)%s%s%s",
           in->rate, burst, r->key ? " per " : "", r->key ? r->key : "",
           m == NULL ? " shared by all methods" : "");
  if (m == NULL && (r->global = bucket_new(r)) == NULL)
    return perfc__fail(PERFC_ENOMEM, "ratelimit: out of memory");
  return 0;
}

int perfc_ratelimit_new(perfc_ratelimit **out,
                        const perfc_ratelimit_opts *opts) {
  if (out == NULL || opts == NULL)
    return perfc__fail(PERFC_EINVAL, "ratelimit: NULL out or options");
  /* Copied whole, then zeros become defaults; the rules are deep-copied
   * into rl->rules below and the copy keeps no pointer into them. */
  perfc_ratelimit_opts o = *opts;
  if (o.max_keys == 0)
    o.max_keys = PERFC_DEFAULT_RATELIMIT_MAX_KEYS;
  if (o.rule_count == 0 || o.rules == NULL ||
      o.rule_count > PERFC_RATELIMIT_MAX_RULES)
    return perfc__fail(PERFC_EINVAL, "ratelimit: %zu rules; 1 to %d needed",
                       o.rules == NULL ? 0 : o.rule_count,
                       PERFC_RATELIMIT_MAX_RULES);
  perfc_ratelimit *rl = calloc(1, sizeof *rl);
  if (rl == NULL)
    return perfc__fail(PERFC_ENOMEM, "ratelimit: out of memory");
  rl->clock = o.clock;
  rl->clock_ud = o.clock_user_data;
  int rc = 0;
  if ((rl->rules = calloc(o.rule_count, sizeof *rl->rules)) == NULL)
    rc = perfc__fail(PERFC_ENOMEM, "ratelimit: out of memory");
  for (size_t i = 0; rc == 0 && i < o.rule_count; i++) {
    rl->nrules++;
    rc = rule_init(&rl->rules[i], &o.rules[i], i, o.max_keys);
  }
  if (rc == 0) {
    static const char *const labels[] = {"grpc_service", "grpc_method",
                                         "scope"};
    rc = perfc__metrics_family(
        &rl->rejected, o.registry, PERFC_METRICS_COUNTER,
        "perfc_ratelimit_rejected_total",
        "Calls refused with RESOURCE_EXHAUSTED by a rate limit; scope is "
        "global, service or method.",
        labels, 3);
  }
  if (rc != 0) {
    perfc_ratelimit_free(rl);
    return rc;
  }
  rl->ic = (perfc_server_interceptor){
      .name = "ratelimit",
      .self = rl,
      .method_init = method_init,
      .method_free = method_free,
      .before = before,
  };
  *out = rl;
  return 0;
}

int perfc_ratelimit_attach(perfc_ratelimit *rl, perfc_server *srv) {
  if (rl == NULL)
    return perfc__fail(PERFC_EINVAL, "ratelimit: attach needs a limiter");
  return perfc_server_add_interceptor(srv, &rl->ic);
}
