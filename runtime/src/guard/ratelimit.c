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
 *
 * A shared rule asks the limiter's store (Redis: data/ratelimit_redis.c
 * runs the same GCRA in one Lua script on the server's clock) and keeps a
 * local bucket at the fallback rate for when the store cannot answer.
 */
#include "perfc/ratelimit.h"
#include "core/error_internal.h"
#include "observe/metrics_internal.h"
#include "perfc/log.h"
#include "perfc/loop.h"
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
  int peer;          /* key is PERFC_RATELIMIT_KEY_PEER */
  int shared;        /* decided by the store; interval/tau are the fallback */
  int64_t shared_interval_us, shared_tau_us;
  char what[160];    /* "rate limit of 10/s (burst 10) per x-api-key" */
  const char *scope; /* the metric's label: global, service or method */
  bucket *global;    /* global rules: the one shared bucket */
};

/* A method's view: the rules that apply to it, in order. */
typedef struct applied {
  bucket *b;
  int owned; /* allocated for this method (freed with it) */
  perfc_counter *rejected;
  /* Shared rules: the store's key before the client's key value
   * ("/pkg.Svc/M|x-api-key|", "*|:peer|" for the global rule) and the
   * decisions by path. */
  char *skey;
  size_t skey_len;
  perfc_counter *g_admitted, *g_refused, *l_admitted, *l_refused, *errors;
} applied;

typedef struct method_state {
  size_t n;
  int shared; /* some rule is shared: the decision may wait for the store */
  applied a[];
} method_state;

struct perfc_ratelimit {
  rule *rules;
  size_t nrules;
  perfc_metrics_family *rejected, *decisions, *store_errors;
  perfc_ratelimit_store store;
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

/* The client's address without its port ("ipv4:10.0.0.7" from
 * "ipv4:10.0.0.7:53122"): a client's connections share its bucket. */
static const char *peer_address(perfc_ctx *ctx, size_t *len) {
  const char *p = perfc_ctx_peer(ctx);
  if (p == NULL) {
    *len = 0;
    return NULL;
  }
  const char *colon = strrchr(p, ':');
  size_t n = strlen(p);
  /* Only a trailing ":digits" is a port ("unix:/path" has none). */
  if (colon != NULL && colon[1] != '\0' &&
      strspn(colon + 1, "0123456789") == strlen(colon + 1))
    n = (size_t)(colon - p);
  *len = n;
  return p;
}

/* The store's key of a shared rule for key value `v` ("/pkg.Svc/M|x-api-key|"
 * + the value), in the call's arena; NULL when out of memory. */
static char *store_key(const applied *a, perfc_ctx *ctx, const char *v,
                       size_t len, size_t *n) {
  *n = a->skey_len + (v ? len : 0);
  char *key = perfc_ctx_alloc(ctx, *n + 1);
  if (key == NULL)
    return NULL;
  memcpy(key, a->skey, a->skey_len);
  if (v != NULL)
    memcpy(key + a->skey_len, v, len);
  key[*n] = '\0';
  return key;
}

/* Asks the store for a shared rule's token, blocking: 1, 0, or negative
 * when the store could not decide (counted; the caller falls back to the
 * local bucket). */
static int store_take(perfc_ratelimit *rl, applied *a, perfc_ctx *ctx,
                      const char *v, size_t len) {
  const rule *r = a->b->r;
  size_t n;
  char *key = store_key(a, ctx, v, len, &n);
  if (key == NULL) {
    perfc_counter_inc(a->errors);
    return PERFC_ENOMEM;
  }
  int rc = rl->store.take(rl->store.self, key, n, r->shared_interval_us,
                          r->shared_tau_us);
  if (rc < 0)
    perfc_counter_inc(a->errors);
  return rc < 0 ? rc : rc > 0;
}

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
  for (size_t i = 0; i < ms->n; i++) {
    if (ms->a[i].owned)
      bucket_free(ms->a[i].b);
    free(ms->a[i].skey);
  }
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
  /* Local rules first, then shared ones (each group in the order given):
   * a call a local rule refuses must not spend a shared token, which
   * cannot be given back. */
  for (size_t pass = 0; pass < 2; pass++)
  for (size_t i = 0; i < rl->nrules; i++) {
    rule *r = &rl->rules[i];
    if (!rule_applies(r, m->path) || (size_t)r->shared != pass)
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
    if (r->shared) {
      ms->shared = 1;
      /* One store key per rule and method ("*" for the global rule): the
       * replicas agree on it whatever order their rules are in. */
      char buf[512];
      int kl = snprintf(buf, sizeof buf, "%s|%s|", r->method ? m->path : "*",
                        r->key ? r->key : "");
      if (kl < 0 || (size_t)kl >= sizeof buf ||
          (a->skey = strdup(buf)) == NULL)
        goto fail;
      a->skey_len = (size_t)kl;
      const char *l[4] = {svc->name, m->name, "global", "admitted"};
      int rc = perfc_counter_get(&a->g_admitted, rl->decisions, l);
      l[3] = "refused";
      rc |= perfc_counter_get(&a->g_refused, rl->decisions, l);
      l[2] = "local";
      rc |= perfc_counter_get(&a->l_refused, rl->decisions, l);
      l[3] = "admitted";
      rc |= perfc_counter_get(&a->l_admitted, rl->decisions, l);
      rc |= perfc_counter_get(&a->errors, rl->store_errors, l);
      if (rc != 0)
        goto fail;
    }
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

/* One call's decision. On the stack when it cannot wait (no shared rule,
 * no loop, no take_async); in the call's arena when the store may answer
 * later, since the decision then goes on in the store's callback. */
typedef struct decision {
  perfc_ratelimit *rl;
  method_state *ms;
  perfc_ctx *ctx;
  perfc_ic_pending *p; /* the deferred decision, once deferred */
  int can_wait;        /* take_async may be used for this call */
  int64_t now;
  size_t i;            /* the rule being decided */
  const char *v;       /* its key value (in the arena) while the store works */
  size_t len;
  /* What each rule took, to give it back if a later rule refuses. */
  struct {
    const char *key; /* keyed rules: the key's value, in the call's arena */
    size_t len;
    int took;
  } taken[PERFC_RATELIMIT_MAX_RULES];
} decision;

/* rc of decide() when no store answer is being handed in. */
#define NO_ANSWER (-1000)
/* store_take_async(): the answer comes in on_store_answer. */
#define WAITING (-1001)

static void give_back_before(decision *d, size_t upto) {
  for (size_t j = 0; j < upto; j++) {
    bucket *bj = d->ms->a[j].b;
    if (!d->taken[j].took)
      continue;
    if (d->taken[j].key == NULL)
      give_back(&bj->tat, bj->r->interval_ns);
    else
      give_back_keyed(bj, d->taken[j].key, d->taken[j].len);
  }
}

static perfc_status_code decide(decision *d, int answer);

/* The store's answer for rule d->i, on the loop that asked. */
static void on_store_answer(int rc, void *arg) {
  decision *d = arg;
  perfc_ratelimit *rl = d->rl;
  d->now = rl->clock ? rl->clock(rl->clock_ud) : perfc__now_ns();
  perfc_status_code c = decide(d, rc);
  if (c != PERFC_STATUS_DEFERRED)
    perfc_ic_resume(d->p, c);
}

/* Asks the store without blocking (the call's decision is deferred).
 * Returns WAITING, or the answer of the blocking take (take_async said
 * PERFC_ESTATE, or the decision could not be deferred), or a negative
 * error (counted) for the local fallback. */
static int store_take_async(decision *d, applied *a, const char *v,
                            size_t len) {
  perfc_ratelimit *rl = d->rl;
  if (d->p == NULL && (d->p = perfc_ic_defer(d->ctx)) == NULL) {
    /* Out of handles, or a stream that cannot wait (see the hook): this
     * call decides blocking. */
    d->can_wait = 0;
    return store_take(rl, a, d->ctx, v, len);
  }
  const rule *r = a->b->r;
  size_t n;
  char *key = store_key(a, d->ctx, v, len, &n);
  if (key == NULL) {
    perfc_counter_inc(a->errors);
    return PERFC_ENOMEM;
  }
  d->v = v;
  d->len = len;
  int rc = rl->store.take_async(rl->store.self, key, n, r->shared_interval_us,
                                r->shared_tau_us, on_store_answer, d);
  if (rc == 0)
    return WAITING;
  if (rc == PERFC_ESTATE) {
    d->can_wait = 0;
    return store_take(rl, a, d->ctx, v, len);
  }
  perfc_counter_inc(a->errors);
  return rc;
}

/* Decides the rules from d->i on; `answer` is the store's for rule d->i
 * (NO_ANSWER: ask it). Returns OK, RESOURCE_EXHAUSTED with the message set,
 * CANCELLED (the call went away while the store worked), or
 * PERFC_STATUS_DEFERRED when the store's answer is awaited. */
static perfc_status_code decide(decision *d, int answer) {
  method_state *ms = d->ms;
  perfc_ctx *ctx = d->ctx;
  for (; d->i < ms->n; d->i++) {
    size_t i = d->i;
    applied *a = &ms->a[i];
    bucket *b = a->b;
    const rule *r = b->r;
    int ok = -2; /* not decided by the store */
    int fell_back = 0;
    d->taken[i].key = NULL;
    const char *v = NULL;
    size_t len = 0;
    if (answer != NO_ANSWER) {
      /* Resumed with the store's answer for this rule. */
      v = d->v;
      len = d->len;
      ok = answer < 0 ? answer : answer > 0;
      if (answer < 0)
        perfc_counter_inc(a->errors);
      answer = NO_ANSWER;
    } else {
      if (r->peer)
        v = peer_address(ctx, &len);
      else if (r->key != NULL)
        v = perfc_ctx_metadata_get(ctx, r->key, &len);
      if (r->shared) {
        if (d->p != NULL && perfc_ic_pending_cancelled(d->p) == 1) {
          /* Gone while an earlier shared rule waited: ask no more. */
          give_back_before(d, i);
          return PERFC_STATUS_CANCELLED;
        }
        ok = d->can_wait ? store_take_async(d, a, v, len)
                         : store_take(d->rl, a, ctx, v, len);
        if (ok == WAITING)
          return PERFC_STATUS_DEFERRED;
      }
    }
    if (r->shared && ok >= 0) {
      perfc_counter_inc(ok ? a->g_admitted : a->g_refused);
      d->taken[i].took = 0; /* nothing local to give back */
    }
    if (ok < 0) {
      fell_back = r->shared;
      if (r->key == NULL) {
        ok = take(&b->tat, d->now, r->interval_ns, r->tau_ns);
      } else {
        d->taken[i].key = v ? v : "";
        d->taken[i].len = v ? len : 0;
        ok = take_keyed(b, d->taken[i].key, d->taken[i].len, d->now);
      }
      if (r->shared)
        perfc_counter_inc(ok != 0 ? a->l_admitted : a->l_refused);
      d->taken[i].took = ok > 0; /* -1: admitted without a bucket */
    }
    if (ok == 0) {
      give_back_before(d, i);
      perfc_counter_inc(ms->a[i].rejected);
      /* An operator reading the refusal must see that the limit was not
       * global at that moment. */
      return perfc_ctx_error(ctx, PERFC_STATUS_RESOURCE_EXHAUSTED,
                             "%s exceeded for %s%s", r->what,
                             perfc_ctx_method(ctx),
                             fell_back ? " (decided by this replica's "
                                         "fallback: the shared store did "
                                         "not answer)"
                                       : "");
    }
  }
  return PERFC_STATUS_OK;
}

static perfc_status_code before(void *self, void *state, perfc_ctx *ctx,
                                void **call_state) {
  (void)call_state;
  perfc_ratelimit *rl = self;
  method_state *ms = state;
  if (ms == NULL)
    return PERFC_STATUS_OK;
  /* A shared rule on a loop asks the store without blocking the loop
   * (docs/scaling.md, "Where it runs"): its state then lives in the
   * call's arena, which lasts until the decision is resumed. */
  decision on_stack;
  decision *d = &on_stack;
  /* Streams too: on h2 every call can wait (perfc_ic_defer); a loop is
   * the condition, so the C core's calls decide blocking as before. */
  int can_wait = ms->shared && rl->store.take_async != NULL &&
                 perfc_loop_current() != NULL;
  if (can_wait && (d = perfc_ctx_alloc(ctx, sizeof *d)) == NULL) {
    d = &on_stack;
    can_wait = 0;
  }
  d->rl = rl;
  d->ms = ms;
  d->ctx = ctx;
  d->p = NULL;
  d->can_wait = can_wait;
  d->now = rl->clock ? rl->clock(rl->clock_ud) : perfc__now_ns();
  d->i = 0;
  perfc_status_code c = decide(d, NO_ANSWER);
  if (c == PERFC_STATUS_DEFERRED || d->p == NULL)
    return c;
  /* Deferred, then decided here after all (the store refused at once, in
   * its backoff): the decision is the resume's. */
  perfc_ic_resume(d->p, c);
  return PERFC_STATUS_DEFERRED;
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

static int check_rate(double rate, double burst_in, double burst,
                      size_t index, const char *what) {
  if (!(rate > 0) || !isfinite(rate) || 1e9 / rate < 1)
    return perfc_error_set(PERFC_EINVAL, NULL, (long)index,
                           "ratelimit: rule %zu: %srate %g is not in (0, 1e9]",
                           index, what, rate);
  if (burst_in < 0 || (burst_in > 0 && burst_in < 1) || !isfinite(burst) ||
      burst * 1e9 / rate > 9e18)
    return perfc_error_set(PERFC_EINVAL, NULL, (long)index,
                           "ratelimit: rule %zu: %sburst %g is neither 0 nor a "
                           "finite number >= 1",
                           index, what, burst_in);
  return 0;
}

static int rule_init(rule *r, const perfc_ratelimit_rule *in, size_t index,
                     unsigned max_keys, int have_store) {
  double burst = in->burst > 0 ? in->burst : (in->rate > 1 ? in->rate : 1);
  int crc = check_rate(in->rate, in->burst, burst, index, "");
  if (crc != 0)
    return crc;
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
    r->peer = strcmp(in->key_metadata, PERFC_RATELIMIT_KEY_PEER) == 0;
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
  if (in->shared) {
    if (!have_store)
      return perfc_error_set(PERFC_EINVAL, NULL, (long)index,
                             "ratelimit: rule %zu is shared but the limiter "
                             "has no store (perfc_ratelimit_opts.store)",
                             index);
    double lr = in->local_rate > 0 ? in->local_rate : in->rate;
    double lb = in->local_burst > 0 ? in->local_burst
                : in->local_rate > 0 ? (lr > 1 ? lr : 1)
                                     : burst;
    int rc;
    if (in->local_rate < 0 ||
        (rc = check_rate(lr, in->local_burst, lb, index, "local_")) != 0)
      return in->local_rate < 0
                 ? perfc_error_set(PERFC_EINVAL, NULL, (long)index,
                                   "ratelimit: rule %zu: local_rate %g is "
                                   "negative",
                                   index, in->local_rate)
                 : rc;
    /* The store counts microseconds (Redis's TIME); 1e6 calls per second
     * at most there. */
    if (1e6 / in->rate < 1)
      return perfc_error_set(PERFC_EINVAL, NULL, (long)index,
                             "ratelimit: rule %zu: a shared rate above 1e6/s "
                             "(%g) is finer than the store's microseconds",
                             index, in->rate);
    r->shared = 1;
    r->shared_interval_us = (int64_t)(1e6 / in->rate + 0.5);
    r->shared_tau_us = (int64_t)(burst * 1e6 / in->rate + 0.5);
    r->interval_ns = (int64_t)(1e9 / lr + 0.5);
    r->tau_ns = (int64_t)(lb * 1e9 / lr + 0.5);
  }
  if ((m != NULL && (r->method = strdup(m)) == NULL) ||
      (in->key_metadata != NULL && (r->key = strdup(in->key_metadata)) == NULL))
    return perfc__fail(PERFC_ENOMEM, "ratelimit: out of memory");
  size_t n = m ? strlen(m) : 0;
  if (n > 0 && m[n - 1] == '/')
    r->prefix = n;
  r->scope = m == NULL ? "global" : r->prefix ? "service" : "method";
  snprintf(r->what, sizeof r->what, "%srate limit of %g/s (burst %g)%s%s%s",
           r->shared ? "global " : "", in->rate, burst,
           r->key ? " per " : "",
           r->peer ? "client address" : r->key ? r->key : "",
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
  int have_store = o.store != NULL && o.store->take != NULL;
  if (have_store)
    rl->store = *o.store;
  int rc = 0;
  if ((rl->rules = calloc(o.rule_count, sizeof *rl->rules)) == NULL)
    rc = perfc__fail(PERFC_ENOMEM, "ratelimit: out of memory");
  for (size_t i = 0; rc == 0 && i < o.rule_count; i++) {
    rl->nrules++;
    rc = rule_init(&rl->rules[i], &o.rules[i], i, o.max_keys, have_store);
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
  int any_shared = 0;
  for (size_t i = 0; rc == 0 && i < rl->nrules; i++)
    any_shared |= rl->rules[i].shared;
  /* The shared families only when a rule is shared: a plain limiter's
   * /metrics page stays as it was. */
  if (rc == 0 && any_shared) {
    static const char *const labels[] = {"grpc_service", "grpc_method", "path",
                                         "decision"};
    rc = perfc__metrics_family(
        &rl->decisions, o.registry, PERFC_METRICS_COUNTER,
        "perfc_ratelimit_shared_decisions_total",
        "Decisions of shared (cross-replica) rate limits; path is global "
        "(the store decided) or local (the fallback bucket, the store "
        "failing), decision admitted or refused.",
        labels, 4);
  }
  if (rc == 0 && any_shared) {
    static const char *const labels[] = {"grpc_service", "grpc_method"};
    rc = perfc__metrics_family(
        &rl->store_errors, o.registry, PERFC_METRICS_COUNTER,
        "perfc_ratelimit_store_errors_total",
        "Shared rate-limit decisions the store could not make (unreachable, "
        "timed out, error reply); the local fallback decided them.",
        labels, 2);
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
