/*
 * cache.c — cache-aside over L1 (l1cache.c) and Redis (redis.c): single
 * flight loads, jittered TTLs, negative caching, invalidation with
 * background retries and pub/sub fan-out, stale-fill fencing; consults a
 * bloom filter (bloom.c) when given one.
 *
 * Room: runtime/src/data (data layer, cache-aside). Public API in
 * perfc/cache.h; the design, including why the stale-fill fence is correct,
 * is in docs/data-layer.md. In short:
 *
 * - L1 fence: before reading Redis, a load reads the key's L1 generation;
 *   the L1 fill is a set that succeeds only if the generation is unchanged.
 *   Every invalidation (local, or received over pub/sub) advances it.
 * - Redis fence: a miss in Redis atomically (one Lua script) sets a lease
 *   key `perfc:lease:<key>` to a token unique to this load; the fill is a
 *   Lua script that writes the value only if the lease still holds that
 *   token. Invalidation deletes the key and its lease in one DEL, so a load
 *   that began before it cannot fill after it.
 *
 * Values in Redis carry a one-byte tag: 'v' + bytes for a value, 'n' for
 * a "not found" placeholder, so that an empty value and a negative entry
 * stay distinct. 'n' may be followed by a note the loader gave with its
 * PERFC_ENOENT (perfc_cache_rpc: the handler's NOT_FOUND message), kept in
 * L1 beside the negative flag; 'n' alone is a placeholder without one.
 */
#include "perfc/cache.h"
#include "perfc/loop.h"
#include "perfc/redis_async.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "core/error_internal.h"
#include "core/thread_internal.h"
#include "data/cache_internal.h"
#include "data/redis_cluster_internal.h"
#include "data/redis_internal.h"
#include "perfc/log.h"
#include "perfc/tracing.h"

#define TAG_VALUE 'v'
#define TAG_NEGATIVE 'n'
#define LEASE_PREFIX "perfc:lease:"
#define CHANNEL_PREFIX "perfc:cache:invalidate:"
#define FLIGHT_STRIPES 64
/* Keys per DEL the retry thread sends at once. */
#define RETRY_BATCH 256

/* One Lua round trip for a read miss: return the value, or take the lease
 * and return nil. Taking the lease unconditionally (not NX) is deliberate:
 * the newest load is the one that read the newest data, so it should be
 * the one allowed to fill. */
static const char GET_OR_LEASE_LUA[] =
    "local v = redis.call('GET', KEYS[1]) "
    "if v then return v end "
    "redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2]) "
    "return false";

/* The fill: only while our lease stands. An invalidation deleted it, a
 * newer load replaced it, or it expired: then the value we hold may be
 * older than the database and must not go into Redis. */
static const char FILL_LUA[] =
    "if redis.call('GET', KEYS[2]) == ARGV[1] then "
    "redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) "
    "redis.call('DEL', KEYS[2]) "
    "return 1 end "
    "return 0";

/* One load in progress. `version` is the key's L1 generation when the
 * flight began: an invalidation of the key (local, remote or a clear)
 * advances it, and a reader that then finds this flight does not join it,
 * because a load that began before a write may return what the write
 * replaced (docs/data-layer.md, "Single flight and read-your-writes"). */
typedef struct awaiter awaiter;
typedef struct flight {
  struct flight *next;
  char *key;
  uint64_t version;
  int linked; /* still in its stripe's list (a newer flight may replace it) */
  unsigned refs;
  int done;
  int rc;
  uint8_t *val;
  size_t len;
  pthread_cond_t cv;
  /* Callers on event loops waiting for this flight
   * (perfc_cache_get_or_load_async): they cannot block on `cv`, so the
   * leader posts each one's delivery to its loop. */
  awaiter *aw;
} flight;

typedef struct stripe {
  pthread_mutex_t mu;
  flight *head;
  char pad[64 - sizeof(pthread_mutex_t) % 64];
} stripe;

typedef struct pending {
  struct pending *next;
  char *key;
} pending;

/* A scrape-time view of L1 stats. The registry owns it (it may outlive the
 * cache), so the cache only detaches it on free. */
typedef struct l1_probe {
  pthread_mutex_t mu;
  perfc_l1cache *l1;
  int what; /* 0 entries, 1 bytes, 2 evictions, 3 expired */
  double last;
} l1_probe;

typedef struct metrics {
  perfc_counter *l1_hits, *l1_misses, *l2_hits, *l2_misses, *negative_hits,
      *loads, *load_errors, *shared, *l2_errors, *stale_refused, *invalidations,
      *remote_invalidations, *delete_retries, *bloom_rejects, *l1_bypassed;
  perfc_gauge *pending, *subscribed;
} metrics;

struct perfc_cache {
  char *name;
  char *channel;
  perfc_redis_pool *redis;
  /* The same server through perfc/redis_async.h, for L1 misses of
   * declarative methods on event loops (NULL: opts.no_async_l2 or no
   * redis). */
  perfc_redis_async *ra;
  perfc_bloom *bloom;
  perfc_l1cache *l1;
  /* opts.no_l1: L1 holds no entries (its generations still fence loads). */
  bool no_l1;
  uint32_t l1_ttl_ms, l2_ttl_ms, negative_ttl_ms, lease_ttl_ms;
  uint32_t retry_ms, retry_max_ms;
  unsigned retry_queue_max;
  double jitter;
  char instance[17]; /* 16 hex digits, random per cache */
  atomic_uint_fast64_t token_seq;

  stripe stripes[FLIGHT_STRIPES];

  /* Retry queue of keys whose Redis delete (or publish) failed. */
  pthread_mutex_t rq_mu;
  pthread_cond_t rq_cv;
  pending *rq_head, *rq_tail;
  size_t rq_len;
  atomic_size_t rq_count; /* rq_len, readable without the lock */
  int rq_stop;
  pthread_t rq_thread;
  int rq_started;

  perfc_redis_subscriber *sub;
  atomic_int subscribed_once;
  /* 1 while the invalidation subscription is live. L1 is read and filled
   * only then (or when there is no subscriber at all): while it is down,
   * other instances' invalidations cannot reach us. */
  atomic_int sub_live;
  uint32_t drain_ms;
  char *pending_file;

  metrics m;
  l1_probe *probes[4];
};

/* ---- small helpers ---- */

/* L1 may answer and be filled only while this instance hears every other
 * instance's invalidations: always without a subscriber (L1 alone, or the
 * caller opted out with no_subscribe), else only while the subscription is
 * live. */
static int l1_trusted(perfc_cache *c) {
  return c->sub == NULL || atomic_load_explicit(&c->sub_live,
                                                memory_order_acquire);
}

/* L1 is read and filled only when it is on and trusted. A read that skips
 * it because it is off is not a bypass (nothing to count). */
static int l1_usable(perfc_cache *c) { return !c->no_l1 && l1_trusted(c); }

static uint64_t rng_next(void) {
  static _Thread_local uint64_t s;
  if (s == 0) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    s = (uint64_t)ts.tv_nsec ^ ((uint64_t)(uintptr_t)&s << 16) ^
        0x9e3779b97f4a7c15ull;
  }
  s ^= s << 13;
  s ^= s >> 7;
  s ^= s << 17;
  return s;
}

static uint32_t jittered(const perfc_cache *c, uint32_t ttl) {
  if (c->jitter <= 0 || ttl == 0)
    return ttl;
  double u = (double)(rng_next() >> 11) / 9007199254740992.0; /* [0,1) */
  double t = (double)ttl * (1.0 + c->jitter * (2.0 * u - 1.0));
  if (t < 1)
    t = 1;
  return (uint32_t)t;
}

/* On a Redis Cluster the lease must live in its key's slot: the lease and
 * fill scripts take both keys, and the invalidation's DEL of both is then
 * one command per slot. The lease key carries a hash tag that hashes as
 * the key does: the key's own tag, or the whole key when it has none
 * (which works unless the key holds a '}'; then a short tag is searched
 * for that lands in the same slot). */
static char *cluster_lease_key(const char *key, size_t n) {
  unsigned slot = perfc__rc_slot(key, n);
  const char *tag = key;
  size_t tl = n;
  char found[24];
  const char *open = memchr(key, '{', n);
  const char *close = open ? memchr(open + 1, '}', n - (size_t)(open - key) - 1)
                           : NULL;
  if (close && close > open + 1) {
    tag = open + 1;
    tl = (size_t)(close - open - 1);
  } else if (n == 0 || memchr(key, '}', n)) {
    /* 16384 slots: a counter finds one within a few ten thousand tries. */
    for (unsigned long i = 0;; i++) {
      int w = snprintf(found, sizeof found, "t%lu", i);
      if (perfc__rc_slot(found, (size_t)w) == slot) {
        tag = found;
        tl = (size_t)w;
        break;
      }
    }
  }
  char *k = malloc(sizeof LEASE_PREFIX + tl + 2 + n);
  if (k) {
    size_t o = sizeof LEASE_PREFIX - 1;
    memcpy(k, LEASE_PREFIX, o);
    k[o++] = '{';
    memcpy(k + o, tag, tl);
    o += tl;
    k[o++] = '}';
    memcpy(k + o, key, n + 1);
  }
  return k;
}

static char *lease_key(const perfc_cache *c, const char *key) {
  size_t n = strlen(key);
  if (perfc__redis_pool_cluster(c->redis))
    return cluster_lease_key(key, n);
  char *k = malloc(sizeof LEASE_PREFIX + n);
  if (k) {
    memcpy(k, LEASE_PREFIX, sizeof LEASE_PREFIX - 1);
    memcpy(k + sizeof LEASE_PREFIX - 1, key, n + 1);
  }
  return k;
}

static void make_token(perfc_cache *c, char *buf, size_t cap) {
  unsigned long long seq =
      (unsigned long long)atomic_fetch_add(&c->token_seq, 1);
  snprintf(buf, cap, "%s-%llu", c->instance, seq);
}

static uint8_t *dup_bytes(const uint8_t *p, size_t n) {
  uint8_t *d = malloc(n ? n : 1);
  if (d && n)
    memcpy(d, p, n);
  return d;
}

/* ---- options, metrics ---- */

void perfc_cache_opts_init(perfc_cache_opts *o) {
  memset(o, 0, sizeof(*o));
  o->name = PERFC_DEFAULT_CACHE_NAME;
  o->l1_ttl_ms = PERFC_DEFAULT_CACHE_L1_TTL_MS;
  o->l2_ttl_ms = PERFC_DEFAULT_CACHE_L2_TTL_MS;
  o->negative_ttl_ms = PERFC_DEFAULT_CACHE_NEGATIVE_TTL_MS;
  o->ttl_jitter = PERFC_DEFAULT_CACHE_TTL_JITTER;
  o->lease_ttl_ms = PERFC_DEFAULT_CACHE_LEASE_TTL_MS;
  o->retry_ms = PERFC_DEFAULT_CACHE_RETRY_MS;
  o->retry_max_ms = PERFC_DEFAULT_CACHE_RETRY_MAX_MS;
  o->retry_queue_max = PERFC_DEFAULT_CACHE_RETRY_QUEUE;
  o->drain_ms = PERFC_DEFAULT_CACHE_DRAIN_MS;
}

static int counter(perfc_counter **out, perfc_metrics_registry *reg,
                   const char *name, const char *help, const char *cache) {
  static const char *const labels[] = {"cache"};
  perfc_metrics_family_opts mo;
  perfc_metrics_family_opts_init(&mo);
  mo.name = name;
  mo.help = help;
  mo.label_names = labels;
  mo.label_count = 1;
  perfc_metrics_family *fam;
  int rc = perfc_metrics_family_new(&fam, reg, PERFC_METRICS_COUNTER, &mo);
  if (rc == 0)
    rc = perfc_counter_get(out, fam, &cache);
  return rc;
}

static double probe_fn(void *ud) {
  l1_probe *p = ud;
  pthread_mutex_lock(&p->mu);
  if (p->l1) {
    perfc_l1cache_stats st;
    perfc_l1cache_stats_get(p->l1, &st);
    uint64_t v = p->what == 0   ? st.entries
                 : p->what == 1 ? st.bytes
                 : p->what == 2 ? st.evictions
                                : st.expired;
    p->last = (double)v;
  }
  double v = p->last;
  pthread_mutex_unlock(&p->mu);
  return v;
}

static void probe_free(void *ud) {
  l1_probe *p = ud;
  pthread_mutex_destroy(&p->mu);
  free(p);
}

static int probe(perfc_cache *c, perfc_metrics_registry *reg, int what,
                 perfc_metrics_type type, const char *name, const char *help) {
  static const char *const labels[] = {"cache"};
  perfc_metrics_family_opts mo;
  perfc_metrics_family_opts_init(&mo);
  mo.name = name;
  mo.help = help;
  mo.label_names = labels;
  mo.label_count = 1;
  perfc_metrics_family *fam;
  int rc = perfc_metrics_family_new(&fam, reg, type, &mo);
  if (rc != 0)
    return rc;
  l1_probe *p = calloc(1, sizeof(*p));
  if (!p)
    return PERFC_ENOMEM;
  pthread_mutex_init(&p->mu, NULL);
  p->l1 = c->l1;
  p->what = what;
  const char *lv[] = {c->name};
  rc = perfc_metrics_family_add_func(fam, lv, probe_fn, p, probe_free);
  if (rc != 0) {
    probe_free(p);
    return rc;
  }
  c->probes[what] = p;
  return 0;
}

static int register_metrics(perfc_cache *c, perfc_metrics_registry *reg) {
  metrics *m = &c->m;
  const char *n = c->name;
  int rc;
#define C(field, metric, help)                                                 \
  if ((rc = counter(&m->field, reg, metric, help, n)) != 0)                    \
  return rc
  C(l1_hits, "perfc_cache_l1_hits_total", "Lookups answered by L1.");
  C(l1_misses, "perfc_cache_l1_misses_total", "Lookups L1 could not answer.");
  C(l2_hits, "perfc_cache_l2_hits_total", "Lookups answered by Redis.");
  C(l2_misses, "perfc_cache_l2_misses_total",
    "Lookups Redis could not answer.");
  C(negative_hits, "perfc_cache_negative_hits_total",
    "Lookups answered by a cached \"not found\" placeholder (L1 or Redis).");
  C(loads, "perfc_cache_loads_total", "Loader calls (a batch counts once).");
  C(load_errors, "perfc_cache_load_errors_total", "Loader calls that failed.");
  C(shared, "perfc_cache_singleflight_shared_total",
    "Callers served by a load another caller ran (single flight).");
  C(l2_errors, "perfc_cache_l2_errors_total",
    "Cache operations that met a Redis failure and degraded to the loader.");
  C(stale_refused, "perfc_cache_stale_fills_refused_total",
    "Fills refused because the key was invalidated during the load.");
  C(invalidations, "perfc_cache_invalidations_total", "Keys invalidated here.");
  C(remote_invalidations, "perfc_cache_remote_invalidations_total",
    "L1 keys dropped on another instance's invalidation message.");
  C(delete_retries, "perfc_cache_delete_retries_total",
    "Background attempts at failed Redis deletes.");
  C(bloom_rejects, "perfc_cache_bloom_rejects_total",
    "Lookups the bloom filter answered \"cannot exist\".");
  C(l1_bypassed, "perfc_cache_l1_bypassed_total",
    "Lookups that skipped L1 because the invalidation subscription was "
    "down.");
#undef C
  static const char *const labels[] = {"cache"};
  perfc_metrics_family_opts mo;
  perfc_metrics_family_opts_init(&mo);
  mo.name = "perfc_cache_invalidations_pending";
  mo.help = "Keys whose Redis delete is waiting for a retry.";
  mo.label_names = labels;
  mo.label_count = 1;
  perfc_metrics_family *fam;
  if ((rc = perfc_metrics_family_new(&fam, reg, PERFC_METRICS_GAUGE, &mo)) !=
          0 ||
      (rc = perfc_gauge_get(&m->pending, fam, &n)) != 0)
    return rc;
  mo.name = "perfc_cache_invalidation_subscribed";
  mo.help = "1 while the invalidation subscription is live (L1 in use), 0 "
            "while it is down or not yet established (L1 bypassed).";
  if ((rc = perfc_metrics_family_new(&fam, reg, PERFC_METRICS_GAUGE, &mo)) !=
          0 ||
      (rc = perfc_gauge_get(&m->subscribed, fam, &n)) != 0)
    return rc;
  if ((rc = probe(c, reg, 0, PERFC_METRICS_GAUGE, "perfc_cache_l1_entries",
                  "Entries in L1.")) != 0 ||
      (rc = probe(c, reg, 1, PERFC_METRICS_GAUGE, "perfc_cache_l1_bytes",
                  "Bytes accounted in L1 (keys, values, overhead).")) != 0 ||
      (rc = probe(c, reg, 2, PERFC_METRICS_COUNTER,
                  "perfc_cache_l1_evictions_total",
                  "L1 entries evicted to stay under the byte bound.")) != 0 ||
      (rc = probe(c, reg, 3, PERFC_METRICS_COUNTER,
                  "perfc_cache_l1_expired_total",
                  "L1 entries dropped because their TTL passed.")) != 0)
    return rc;
  return 0;
}

/* ---- invalidation: Redis delete, publish, retry thread ---- */

/* DEL of every key and its lease in one command, one attempt. */
static int del_with_leases(perfc_cache *c, const char *const *keys, size_t n) {
  char **all = calloc(2 * n, sizeof(char *));
  if (!all)
    return PERFC_ENOMEM;
  int rc = 0;
  for (size_t i = 0; i < n && rc == 0; i++) {
    all[2 * i] = (char *)keys[i];
    all[2 * i + 1] = lease_key(c, keys[i]);
    if (!all[2 * i + 1])
      rc = PERFC_ENOMEM;
  }
  /* One attempt, not perfc_redis_del's paused retries: a failure is
   * retried by the background thread, so the writer never waits for it. */
  if (rc == 0) {
    const char **argv = calloc(2 * n + 1, sizeof(char *));
    size_t *argvlen = calloc(2 * n + 1, sizeof(size_t));
    if (argv && argvlen) {
      argv[0] = "DEL";
      argvlen[0] = 3;
      for (size_t i = 0; i < 2 * n; i++) {
        argv[i + 1] = all[i];
        argvlen[i + 1] = strlen(all[i]);
      }
      perfc__redis_cmd cmd = {(int)(2 * n + 1), argv, argvlen};
      redisReply *r;
      /* redis.wait_replicas: not done until replicated (a DEL lost in
       * a failover would leave the old value on the new master). */
      rc = perfc__redis_pipeline_replicated(c->redis, &cmd, 1, &r);
      if (rc == 0) {
        if (r->type == REDIS_REPLY_ERROR)
          rc = PERFC_EIO;
        freeReplyObject(r);
      }
    } else {
      rc = PERFC_ENOMEM;
    }
    free(argv);
    free(argvlen);
  }
  for (size_t i = 0; i < n; i++)
    free(all[2 * i + 1]);
  free(all);
  return rc;
}

/* Message: the sender's 16-hex instance id, '\n', then per key
 * "<decimal length>:<bytes>". Lengths make any byte legal in a key. */
static int publish(perfc_cache *c, const char *const *keys, size_t n) {
  size_t cap = 18;
  for (size_t i = 0; i < n; i++)
    cap += strlen(keys[i]) + 21;
  char *msg = malloc(cap);
  if (!msg)
    return PERFC_ENOMEM;
  size_t len = (size_t)snprintf(msg, cap, "%s\n", c->instance);
  for (size_t i = 0; i < n; i++) {
    size_t kl = strlen(keys[i]);
    len += (size_t)snprintf(msg + len, cap - len, "%zu:", kl);
    memcpy(msg + len, keys[i], kl);
    len += kl;
  }
  perfc_slice m = {(const uint8_t *)msg, len};
  int rc = perfc_redis_publish(c->redis, c->channel, m);
  free(msg);
  return rc;
}

static void enqueue_retry(perfc_cache *c, const char *const *keys, size_t n) {
  pthread_mutex_lock(&c->rq_mu);
  for (size_t i = 0; i < n; i++) {
    pending *p = malloc(sizeof(*p));
    char *k = p ? strdup(keys[i]) : NULL;
    if (!k) {
      free(p);
      perfc_log(PERFC_LOG_ERROR,
                "cache %s: out of memory queueing a Redis delete retry",
                c->name);
      continue;
    }
    p->key = k;
    p->next = NULL;
    if (c->rq_tail)
      c->rq_tail->next = p;
    else
      c->rq_head = p;
    c->rq_tail = p;
    c->rq_len++;
    if (c->rq_len > c->retry_queue_max) {
      /* Past the bound the oldest key is given up: its Redis TTL still
       * limits how long a stale value can live. */
      pending *old = c->rq_head;
      c->rq_head = old->next;
      if (!c->rq_head)
        c->rq_tail = NULL;
      c->rq_len--;
      perfc_log(PERFC_LOG_WARN,
                "cache %s: retry queue full, giving up deleting %s from Redis",
                c->name, old->key);
      free(old->key);
      free(old);
    }
  }
  atomic_store(&c->rq_count, c->rq_len);
  perfc_gauge_set(c->m.pending, (double)c->rq_len);
  pthread_cond_signal(&c->rq_cv);
  pthread_mutex_unlock(&c->rq_mu);
}

static void timed_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu,
                          uint32_t ms) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)ms * 1000000ull;
  ts.tv_sec += (time_t)(ns / 1000000000ull);
  ts.tv_nsec = (long)(ns % 1000000000ull);
  pthread_cond_timedwait(cv, mu, &ts);
}

/* Takes up to RETRY_BATCH keys off the queue, deletes and publishes them,
 * and puts them back at the front on failure. Returns 0 on success. */
static int retry_once(perfc_cache *c) {
  pending *batch = NULL, **tail = &batch, *last = NULL;
  size_t n = 0;
  pthread_mutex_lock(&c->rq_mu);
  while (c->rq_head && n < RETRY_BATCH) {
    pending *p = c->rq_head;
    c->rq_head = p->next;
    p->next = NULL;
    *tail = p;
    tail = &p->next;
    last = p;
    n++;
  }
  if (!c->rq_head)
    c->rq_tail = NULL;
  pthread_mutex_unlock(&c->rq_mu);
  if (n == 0)
    return 0;
  const char **keys = calloc(n, sizeof(char *));
  int rc = PERFC_ENOMEM;
  if (keys) {
    size_t i = 0;
    for (pending *p = batch; p; p = p->next)
      keys[i++] = p->key;
    perfc_counter_inc(c->m.delete_retries);
    rc = del_with_leases(c, keys, n);
    if (rc == 0)
      rc = publish(c, keys, n);
    if (rc == 0)
      /* Fence again: a fill that raced the failed delete must not stay. */
      for (i = 0; i < n; i++)
        perfc_l1cache_delete(c->l1, keys[i]);
    free(keys);
  }
  pthread_mutex_lock(&c->rq_mu);
  if (rc == 0) {
    c->rq_len -= n;
    while (batch) {
      pending *nx = batch->next;
      free(batch->key);
      free(batch);
      batch = nx;
    }
  } else {
    last->next = c->rq_head;
    c->rq_head = batch;
    if (!c->rq_tail)
      c->rq_tail = last;
  }
  atomic_store(&c->rq_count, c->rq_len);
  perfc_gauge_set(c->m.pending, (double)c->rq_len);
  pthread_mutex_unlock(&c->rq_mu);
  return rc;
}

static void *retry_main(void *arg) {
  perfc_cache *c = arg;
  uint32_t delay = 0;
  pthread_mutex_lock(&c->rq_mu);
  for (;;) {
    while (!c->rq_head && !c->rq_stop)
      pthread_cond_wait(&c->rq_cv, &c->rq_mu);
    if (c->rq_stop)
      break;
    delay = delay == 0                    ? c->retry_ms
            : delay < c->retry_max_ms / 2 ? delay * 2
                                          : c->retry_max_ms;
    timed_wait_ms(&c->rq_cv, &c->rq_mu, delay);
    if (c->rq_stop)
      break;
    pthread_mutex_unlock(&c->rq_mu);
    int rc = retry_once(c);
    pthread_mutex_lock(&c->rq_mu);
    if (rc == 0) {
      delay = 0;
      if (!c->rq_head)
        perfc_log(PERFC_LOG_INFO, "cache %s: pending Redis deletes done",
                  c->name);
    }
  }
  pthread_mutex_unlock(&c->rq_mu);
  return NULL;
}

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int perfc_cache_drain(perfc_cache *c, int64_t timeout_ms) {
  if (!c || timeout_ms < 0)
    return perfc__fail(PERFC_EINVAL, "cache: NULL or negative timeout_ms");
  if (!c->redis)
    return 0;
  uint64_t deadline = mono_ms() + (uint64_t)timeout_ms;
  /* Retries back to back while they succeed; after a failure waits the
   * first retry delay (the pool refuses calls at once during its backoff,
   * so retrying without a pause would only spin) and tries again until the
   * deadline. Each attempt is bounded by the pool's timeouts, so the
   * deadline can be overrun by at most one connect or command timeout. */
  while (atomic_load(&c->rq_count) > 0) {
    if (retry_once(c) == 0)
      continue;
    uint64_t now = mono_ms();
    if (now >= deadline)
      break;
    uint64_t pause = deadline - now < c->retry_ms ? deadline - now : c->retry_ms;
    struct timespec ts = {(time_t)(pause / 1000), (long)(pause % 1000) * 1000000};
    nanosleep(&ts, NULL);
  }
  size_t left = atomic_load(&c->rq_count);
  return left > 0 ? perfc__fail(PERFC_ETIMEDOUT,
                                "cache %s: %zu Redis deletes still pending "
                                "after %lld ms",
                                c->name, left, (long long)timeout_ms)
                  : 0;
}

/* The pending-deletes file: per key "<decimal length>:<bytes>\n", so any
 * byte may be in a key. Written whole to "<file>.tmp", synced and renamed
 * over the file, so a crash leaves the old file or the new one. */
static int pending_save(perfc_cache *c) {
  size_t plen = strlen(c->pending_file);
  char *tmp = malloc(plen + 5);
  if (!tmp)
    return PERFC_ENOMEM;
  memcpy(tmp, c->pending_file, plen);
  memcpy(tmp + plen, ".tmp", 5);
  int rc = 0;
  FILE *f = fopen(tmp, "w");
  if (!f) {
    rc = PERFC_EIO;
  } else {
    pthread_mutex_lock(&c->rq_mu);
    for (pending *p = c->rq_head; p && rc == 0; p = p->next) {
      size_t kl = strlen(p->key);
      if (fprintf(f, "%zu:", kl) < 0 || fwrite(p->key, 1, kl, f) != kl ||
          fputc('\n', f) == EOF)
        rc = PERFC_EIO;
    }
    pthread_mutex_unlock(&c->rq_mu);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0)
      rc = PERFC_EIO;
    if (fclose(f) != 0)
      rc = PERFC_EIO;
    if (rc == 0 && rename(tmp, c->pending_file) != 0)
      rc = PERFC_EIO;
    if (rc != 0)
      unlink(tmp);
  }
  free(tmp);
  return rc;
}

/* Queues the keys a previous run could not delete. A malformed tail is
 * logged and ignored: the keys before it are still worth deleting. */
static void pending_load(perfc_cache *c) {
  FILE *f = fopen(c->pending_file, "r");
  if (!f) {
    if (errno != ENOENT)
      perfc_log(PERFC_LOG_WARN, "cache %s: cannot read %s: %s", c->name,
                c->pending_file, strerror(errno));
    return;
  }
  size_t n = 0;
  for (;;) {
    size_t kl;
    if (fscanf(f, "%zu:", &kl) != 1)
      break;
    char *k = kl < (1u << 20) ? malloc(kl + 1) : NULL;
    if (!k || fread(k, 1, kl, f) != kl || fgetc(f) != '\n' ||
        memchr(k, 0, kl) != NULL) {
      free(k);
      perfc_log(PERFC_LOG_WARN, "cache %s: %s: malformed entry after %zu keys",
                c->name, c->pending_file, n);
      break;
    }
    k[kl] = 0;
    const char *one[1] = {k};
    enqueue_retry(c, one, 1);
    free(k);
    n++;
  }
  fclose(f);
  if (n)
    perfc_log(PERFC_LOG_INFO,
              "cache %s: %zu Redis deletes left by the previous run (%s) "
              "queued; Redis is not read until they are done",
              c->name, n, c->pending_file);
}

/* Runs on the subscriber thread. */
static void on_invalidation(perfc_redis_sub_event ev, const char *channel,
                            perfc_slice msg, void *ud) {
  perfc_cache *c = ud;
  (void)channel;
  if (ev == PERFC_REDIS_SUB_SUBSCRIBED) {
    /* Messages published while we were disconnected are lost: every L1
     * entry may be stale, so start over. The clear also advances every
     * key's generation, so a load that began while we were not subscribed
     * cannot fill L1 afterwards. Only then is L1 trusted again. */
    perfc_l1cache_clear(c->l1);
    if (atomic_exchange(&c->subscribed_once, 1))
      perfc_log(PERFC_LOG_INFO,
                "cache %s: resubscribed to %s, L1 cleared and in use again",
                c->name, c->channel);
    atomic_store(&c->sub_live, 1);
    perfc_gauge_set(c->m.subscribed, 1);
    return;
  }
  if (ev == PERFC_REDIS_SUB_UNSUBSCRIBED) {
    /* From now on another instance's invalidation may not reach us: stop
     * trusting L1 first, then drop it (which also fences fills of loads
     * already running). */
    atomic_store(&c->sub_live, 0);
    perfc_gauge_set(c->m.subscribed, 0);
    perfc_l1cache_clear(c->l1);
    perfc_log(PERFC_LOG_WARN,
              "cache %s: invalidation subscription to %s lost, bypassing L1 "
              "until it is back",
              c->name, c->channel);
    return;
  }
  const char *p = (const char *)msg.base, *end = p + msg.len;
  if (msg.len < 17 || p[16] != '\n')
    return;
  if (memcmp(p, c->instance, 16) == 0)
    return; /* our own: L1 was already dropped by perfc_cache_invalidate */
  p += 17;
  char small[256];
  while (p < end) {
    size_t kl = 0;
    while (p < end && *p >= '0' && *p <= '9')
      kl = kl * 10 + (size_t)(*p++ - '0');
    if (p >= end || *p != ':' || (size_t)(end - p - 1) < kl)
      return; /* malformed: ignore the rest */
    p++;
    char *k = kl < sizeof small ? small : malloc(kl + 1);
    if (!k)
      return;
    memcpy(k, p, kl);
    k[kl] = 0;
    perfc_l1cache_delete(c->l1, k);
    perfc_counter_inc(c->m.remote_invalidations);
    if (k != small)
      free(k);
    p += kl;
  }
}

/* ---- lifecycle ---- */

/* The options as the cache uses them: the caller's struct copied whole (a
 * field added later cannot be dropped by a hand-kept copy list), then each
 * zero replaced by its default and every value checked. */
static int resolve_opts(perfc_cache_opts *o, const perfc_cache_opts *in) {
  perfc_cache_opts d;
  perfc_cache_opts_init(&d);
  *o = in ? *in : d;
  const int64_t ms[] = {o->l1_ttl_ms,    o->l2_ttl_ms, o->negative_ttl_ms,
                        o->lease_ttl_ms, o->retry_ms,  o->retry_max_ms,
                        o->drain_ms};
  for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++)
    if (ms[i] < 0 || ms[i] > PERFC_CACHE_MAX_TTL_MS)
      return perfc__fail(PERFC_EINVAL,
                         "cache: a duration option is %lld ms (0 = default, "
                         "at most %lld)",
                         (long long)ms[i], (long long)PERFC_CACHE_MAX_TTL_MS);
  if (!(o->ttl_jitter >= 0 && o->ttl_jitter <= PERFC_CACHE_MAX_TTL_JITTER))
    return perfc__fail(PERFC_EINVAL,
                       "cache: ttl_jitter %g outside 0..%g (no_ttl_jitter "
                       "turns it off)",
                       o->ttl_jitter, PERFC_CACHE_MAX_TTL_JITTER);
  if (o->pending_file && (!o->pending_file[0] || !o->redis))
    return perfc__fail(PERFC_EINVAL,
                       "cache: pending_file needs a name and a Redis pool");
#define DEF(f)                                                                 \
  if (!o->f)                                                                   \
  o->f = d.f
  DEF(name);
  DEF(l1_ttl_ms);
  DEF(l2_ttl_ms);
  DEF(negative_ttl_ms);
  DEF(ttl_jitter);
  DEF(lease_ttl_ms);
  DEF(retry_ms);
  DEF(retry_max_ms);
  DEF(retry_queue_max);
  DEF(drain_ms);
#undef DEF
  if (o->retry_max_ms < o->retry_ms)
    o->retry_max_ms = o->retry_ms;
  return 0;
}

int perfc_cache_new(perfc_cache **out, const perfc_cache_opts *opts) {
  if (!out)
    return perfc__fail(PERFC_EINVAL, "cache: NULL out");
  perfc_cache_opts o;
  int rc = resolve_opts(&o, opts);
  if (rc != 0)
    return rc;
  perfc_cache *c = calloc(1, sizeof(*c));
  if (!c)
    return perfc__fail(PERFC_ENOMEM, "cache: out of memory");
  c->redis = o.redis;
  c->bloom = o.bloom;
  c->no_l1 = o.no_l1;
  c->l1_ttl_ms = (uint32_t)o.l1_ttl_ms;
  c->l2_ttl_ms = (uint32_t)o.l2_ttl_ms;
  c->negative_ttl_ms = (uint32_t)o.negative_ttl_ms;
  c->lease_ttl_ms = (uint32_t)o.lease_ttl_ms;
  c->retry_ms = (uint32_t)o.retry_ms;
  c->retry_max_ms = (uint32_t)o.retry_max_ms;
  c->retry_queue_max = o.retry_queue_max;
  c->jitter = o.no_ttl_jitter ? 0 : o.ttl_jitter;
  c->drain_ms = (uint32_t)o.drain_ms;
  c->name = strdup(o.name);
  if (o.channel)
    c->channel = strdup(o.channel);
  else if (c->name && (c->channel = malloc(sizeof CHANNEL_PREFIX +
                                           strlen(c->name))) != NULL)
    sprintf(c->channel, "%s%s", CHANNEL_PREFIX, c->name);
  uint64_t id = 0;
  if (getrandom(&id, sizeof id, 0) != (ssize_t)sizeof id)
    id = rng_next() ^ (uint64_t)(uintptr_t)c;
  snprintf(c->instance, sizeof c->instance, "%016llx", (unsigned long long)id);
  for (int i = 0; i < FLIGHT_STRIPES; i++)
    pthread_mutex_init(&c->stripes[i].mu, NULL);
  pthread_mutex_init(&c->rq_mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&c->rq_cv, &ca);
  pthread_condattr_destroy(&ca);
  rc = (!c->name || !c->channel) ? PERFC_ENOMEM : 0;
  if (rc == 0 && o.pending_file && !(c->pending_file = strdup(o.pending_file)))
    rc = PERFC_ENOMEM;
  if (rc == 0) {
    perfc_l1cache_opts lo;
    perfc_l1cache_opts_init(&lo);
    if (o.l1_shards)
      lo.shards = o.l1_shards;
    if (o.l1_max_bytes)
      lo.max_bytes = o.l1_max_bytes;
    lo.default_ttl_ms = c->l1_ttl_ms;
    rc = perfc_l1cache_new(&c->l1, &lo);
  }
  if (rc == 0)
    rc = register_metrics(c, o.registry);
  if (rc == 0 && c->pending_file)
    pending_load(c);
  if (rc == 0 && c->redis) {
    if (perfc__thread_create(&c->rq_thread, retry_main, c) != 0)
      rc = PERFC_ETHREAD;
    else
      c->rq_started = 1;
  }
  if (rc == 0 && c->redis && !o.no_subscribe)
    rc = perfc_redis_subscriber_new(&c->sub, perfc__redis_pool_opts(c->redis),
                                    c->channel, on_invalidation, c);
  if (rc == 0 && c->redis && !o.no_async_l2) {
    /* The pool's server and bounds; it connects per loop, when used. */
    const perfc_redis_opts *po = perfc__redis_pool_opts(c->redis);
    perfc_redis_async_opts ao;
    perfc_redis_async_opts_init(&ao);
    ao.host = po->host;
    ao.port = po->port;
    ao.connect_timeout_ms = po->connect_timeout_ms;
    ao.command_timeout_ms = po->command_timeout_ms;
    ao.backoff_min_ms = po->backoff_min_ms;
    ao.backoff_max_ms = po->backoff_max_ms;
    ao.conns_per_loop = po->async_conns_per_loop;
    ao.name = po->name;
    ao.registry = po->registry;
    ao.cluster_nodes = po->cluster_nodes; /* a cluster: routed per slot */
    ao.n_cluster_nodes = po->n_cluster_nodes;
    ao.cluster_refresh_ms = po->cluster_refresh_ms;
    ao.sentinels = po->sentinels; /* Sentinel mode: the same master */
    ao.n_sentinels = po->n_sentinels;
    ao.master_name = po->master_name;
    ao.username = po->username; /* the same AUTH (copied again) */
    ao.password = po->password;
    ao.sentinel_password = po->sentinel_password;
    ao.sentinel_username = po->sentinel_username;
    rc = perfc_redis_async_new(&c->ra, &ao);
  }
  if (rc != 0) {
    /* The failing call (l1cache, metrics, subscriber) left its detail;
     * out of memory and a thread that would not start are said here. */
    if (rc == PERFC_ENOMEM || rc == PERFC_ETHREAD)
      perfc__fail(rc, "cache %s: %s", o.name, perfc_strerror(rc));
    else if (rc == PERFC_EEXIST)
      perfc__fail(rc,
                  "cache %s: a cache of this name already has metrics "
                  "in this registry",
                  o.name);
    perfc_cache_free(c);
    return rc;
  }
  *out = c;
  return 0;
}

void perfc_cache_free(perfc_cache *c) {
  if (!c)
    return;
  /* Subscriber first: its callback touches L1. The async client's
   * callbacks do too (its reads' fills), so it goes as well. */
  perfc_redis_subscriber_free(c->sub);
  perfc_redis_async_free(c->ra);
  if (c->rq_started) {
    pthread_mutex_lock(&c->rq_mu);
    c->rq_stop = 1;
    pthread_cond_signal(&c->rq_cv);
    pthread_mutex_unlock(&c->rq_mu);
    pthread_join(c->rq_thread, NULL);
    /* Deletes still pending would leave other instances reading the old
     * values from Redis until their TTL: retry them for drain_ms (nothing
     * to do if the application already called perfc_cache_drain()), then
     * keep what is left in pending_file for the next start. */
    if (c->rq_head && perfc_cache_drain(c, c->drain_ms) != 0) {
      int saved = c->pending_file ? pending_save(c) : PERFC_ENOENT;
      if (saved == 0)
        perfc_log(PERFC_LOG_WARN,
                  "cache %s: %zu Redis deletes still failing after %u ms at "
                  "shutdown; saved to %s for the next start",
                  c->name, c->rq_len, (unsigned)c->drain_ms, c->pending_file);
      else
        perfc_log(PERFC_LOG_ERROR,
                  "cache %s: %zu Redis deletes still failing after %u ms at "
                  "shutdown%s; other instances may read those keys' old "
                  "values from Redis until their TTL",
                  c->name, c->rq_len, (unsigned)c->drain_ms,
                  c->pending_file ? " and cannot be saved" : "");
    } else if (c->pending_file && unlink(c->pending_file) != 0 &&
               errno != ENOENT) {
      perfc_log(PERFC_LOG_WARN, "cache %s: cannot remove %s: %s", c->name,
                c->pending_file, strerror(errno));
    }
  }
  while (c->rq_head) {
    pending *nx = c->rq_head->next;
    free(c->rq_head->key);
    free(c->rq_head);
    c->rq_head = nx;
  }
  for (int i = 0; i < 4; i++) {
    if (c->probes[i]) {
      pthread_mutex_lock(&c->probes[i]->mu);
      c->probes[i]->l1 = NULL;
      pthread_mutex_unlock(&c->probes[i]->mu);
    }
  }
  perfc_l1cache_free(c->l1);
  for (int i = 0; i < FLIGHT_STRIPES; i++)
    pthread_mutex_destroy(&c->stripes[i].mu);
  pthread_cond_destroy(&c->rq_cv);
  pthread_mutex_destroy(&c->rq_mu);
  free(c->pending_file);
  free(c->channel);
  free(c->name);
  free(c);
}

perfc_l1cache *perfc_cache_l1(perfc_cache *c) { return c ? c->l1 : NULL; }

size_t perfc_cache_pending_invalidations(perfc_cache *c) {
  return c ? atomic_load(&c->rq_count) : 0;
}

int perfc_cache_wait_subscribed(perfc_cache *c, int64_t timeout_ms) {
  if (!c)
    return perfc__fail(PERFC_EINVAL, "cache: NULL");
  if (!c->sub)
    return perfc__fail(PERFC_ESTATE,
                       "cache %s: no invalidation subscriber "
                       "(no Redis, or no_subscribe)",
                       c->name);
  return perfc_redis_subscriber_wait_ready(c->sub, timeout_ms);
}

/* ---- Redis reads and fills ---- */

/* GET, or take the lease on a miss: 0 with the tagged value, PERFC_ENOENT
 * (miss, lease taken), or a Redis error. */
static int l2_get_or_lease(perfc_cache *c, const char *key, const char *token,
                           uint8_t **val, size_t *len) {
  char *lk = lease_key(c, key);
  if (!lk)
    return PERFC_ENOMEM;
  char ttl[16];
  snprintf(ttl, sizeof ttl, "%u", (unsigned)c->lease_ttl_ms);
  const char *argv[] = {"EVAL", GET_OR_LEASE_LUA, "2", key, lk, token, ttl};
  size_t argvlen[7];
  for (int i = 0; i < 7; i++)
    argvlen[i] = strlen(argv[i]);
  argvlen[1] = sizeof GET_OR_LEASE_LUA - 1;
  perfc__redis_cmd cmd = {7, argv, argvlen};
  redisReply *r;
  int rc = perfc__redis_pipeline(c->redis, &cmd, 1, &r);
  free(lk);
  if (rc != 0)
    return rc;
  if (r->type == REDIS_REPLY_NIL) {
    rc = PERFC_ENOENT;
  } else if (r->type == REDIS_REPLY_STRING) {
    *val = dup_bytes((const uint8_t *)r->str, r->len);
    *len = r->len;
    rc = *val ? 0 : PERFC_ENOMEM;
  } else {
    if (r->type == REDIS_REPLY_ERROR)
      perfc_log(PERFC_LOG_WARN, "cache %s: lease script: %s", c->name, r->str);
    rc = PERFC_EIO;
  }
  freeReplyObject(r);
  return rc;
}

/* A call's TTL overrides (perfc_cache_get_or_load_ttl); 0 = the cache's.
 * NEG_TTL_NONE (outside the range a TTL may take) is the caller's
 * PERFC_CACHE_TTL_NONE. */
#define NEG_TTL_NONE UINT32_MAX
typedef struct call_ttl {
  uint32_t ttl_ms, negative_ttl_ms;
} call_ttl;

/* One item of a fill. */
typedef struct fill_item {
  const char *key;
  const uint8_t *val; /* a negative entry's note, or NULL */
  size_t len;
  int negative;
  int result;      /* out: 1 filled, 0 refused (lease lost), <0 error */
  uint32_t ttl_ms; /* 0: the cache's TTL for the kind (value or negative) */
} fill_item;

/* Pipelines one FILL_LUA per item under `token`. Returns 0 when the
 * replies came back (see each item's result) or the Redis error. */
static int l2_fill(perfc_cache *c, fill_item *items, size_t n,
                   const char *token) {
  enum { ARGS = 8 }; /* EVAL script 2 key lease token value ttl */
  perfc__redis_cmd *cmds = calloc(n, sizeof(*cmds));
  const char **argv = calloc(n * ARGS, sizeof(char *));
  size_t *argvlen = calloc(n * ARGS, sizeof(size_t));
  char **owned = calloc(n * 2, sizeof(char *)); /* lease keys, tagged values */
  char(*ttl)[16] = calloc(n, sizeof(*ttl));
  redisReply **replies = calloc(n, sizeof(*replies));
  int rc = PERFC_ENOMEM;
  if (!cmds || !argv || !argvlen || !owned || !ttl || !replies)
    goto done;
  for (size_t i = 0; i < n; i++) {
    fill_item *it = &items[i];
    char *lk = lease_key(c, it->key);
    char *tv = malloc(it->len + 1);
    owned[2 * i] = lk;
    owned[2 * i + 1] = tv;
    if (!lk || !tv)
      goto done;
    tv[0] = it->negative ? TAG_NEGATIVE : TAG_VALUE;
    if (it->len) /* a value, or a negative entry's note */
      memcpy(tv + 1, it->val, it->len);
    uint32_t t = jittered(c, it->ttl_ms     ? it->ttl_ms
                             : it->negative ? c->negative_ttl_ms
                                            : c->l2_ttl_ms);
    snprintf(ttl[i], sizeof ttl[i], "%u", (unsigned)t);
    const char **av = &argv[ARGS * i];
    size_t *al = &argvlen[ARGS * i];
    av[0] = "EVAL";
    av[1] = FILL_LUA;
    av[2] = "2";
    av[3] = it->key;
    av[4] = lk;
    av[5] = token;
    av[6] = tv;
    av[7] = ttl[i];
    for (int k = 0; k < ARGS; k++)
      al[k] = k == 6 ? 0 : strlen(av[k]);
    al[1] = sizeof FILL_LUA - 1;
    al[6] = it->len + 1;
    cmds[i] = (perfc__redis_cmd){ARGS, av, al};
  }
  rc = perfc__redis_pipeline(c->redis, cmds, n, replies);
  if (rc == 0) {
    for (size_t i = 0; i < n; i++) {
      redisReply *r = replies[i];
      if (r->type == REDIS_REPLY_INTEGER)
        items[i].result = r->integer == 1 ? 1 : 0;
      else {
        if (r->type == REDIS_REPLY_ERROR)
          perfc_log(PERFC_LOG_WARN, "cache %s: fill script: %s", c->name,
                    r->str);
        items[i].result = PERFC_EIO;
      }
    }
  }
done:
  if (rc != 0)
    for (size_t i = 0; i < n; i++)
      items[i].result = rc;
  if (replies)
    for (size_t i = 0; i < n; i++)
      if (replies[i])
        freeReplyObject(replies[i]);
  if (owned)
    for (size_t i = 0; i < 2 * n; i++)
      free(owned[i]);
  free(replies);
  free(ttl);
  free(owned);
  free(argvlen);
  free(argv);
  free(cmds);
  return rc;
}

/* L1 never keeps an entry longer than Redis would (`ttl_ms`, a per-call
 * override, or the cache's negative TTL), so a short TTL from a method's
 * options is not stretched by L1's default. */
static uint32_t l1_ttl_for(const perfc_cache *c, int negative,
                           uint32_t ttl_ms) {
  uint32_t t = c->l1_ttl_ms;
  uint32_t cap = ttl_ms ? ttl_ms : negative ? c->negative_ttl_ms : 0;
  if (cap && cap < t)
    t = cap;
  return jittered(c, t);
}

static void l1_fill(perfc_cache *c, const char *key, const uint8_t *val,
                    size_t len, int negative, uint64_t version,
                    uint32_t ttl_ms) {
  if (!l1_usable(c))
    return;
  perfc_slice v = {val, len};
  int rc = perfc_l1cache_set_versioned(
      c->l1, key, v, negative, l1_ttl_for(c, negative, ttl_ms), version);
  if (rc == PERFC_ESTATE)
    perfc_counter_inc(c->m.stale_refused);
}

/* Decodes a tagged Redis value into the result and fills L1. Returns 0
 * (value in *out), PERFC_ENOENT (placeholder), or PERFC_EIO (not ours). */
static int take_l2_value(perfc_cache *c, const char *key, uint8_t *tagged,
                         size_t tlen, uint64_t version, const call_ttl *ct,
                         uint8_t **out, size_t *out_len) {
  if (tlen >= 1 && tagged[0] == TAG_NEGATIVE) {
    perfc_counter_inc(c->m.l2_hits);
    perfc_counter_inc(c->m.negative_hits);
    l1_fill(c, key, tagged + 1, tlen - 1, 1, version,
            ct ? ct->negative_ttl_ms : 0); /* with its note */
    free(tagged);
    return PERFC_ENOENT;
  }
  if (tlen >= 1 && tagged[0] == TAG_VALUE) {
    perfc_counter_inc(c->m.l2_hits);
    l1_fill(c, key, tagged + 1, tlen - 1, 0, version, ct ? ct->ttl_ms : 0);
    memmove(tagged, tagged + 1, tlen - 1);
    *out = tagged;
    *out_len = tlen - 1;
    return 0;
  }
  /* Something else wrote the key: do not trust it, ask the loader. */
  free(tagged);
  perfc_counter_inc(c->m.l2_errors);
  return PERFC_EIO;
}

/* ---- the declarative hit path's L2 read on a loop (cache_internal.h) ---- */

typedef struct l2_async {
  perfc_cache *c;
  uint64_t version;
  call_ttl ct;
  perfc__cache_l2_fn fn;
  void *ud;
  /* The call's trace context when the GET left, and the GET's span: the
   * reply comes on the loop, which by then works for no call. */
  perfc_trace_current tc;
  perfc_span *span;
  char key[];
} l2_async;

/* What the synchronous path counts for an L1 that did not answer. */
static void count_l1_not_answering(perfc_cache *c) {
  if (c->no_l1)
    return;
  if (l1_trusted(c))
    perfc_counter_inc(c->m.l1_misses);
  else
    perfc_counter_inc(c->m.l1_bypassed);
}

static void l2_async_done(int rc, const uint8_t *v, size_t len, void *ud) {
  l2_async *q = ud;
  perfc_cache *c = q->c;
  /* The continuation works for the call that asked: its spans and log
   * lines belong to it, as on the synchronous path. */
  perfc_trace_current loop_tc;
  int had = perfc_trace_current_get(&loop_tc);
  perfc_trace_current_set(&q->tc);
  if (q->span != NULL) {
    const char *result = rc == 0 && len >= 1 && v[0] == TAG_VALUE  ? "hit"
                         : rc == 0 && len >= 1 && v[0] == TAG_NEGATIVE ? "negative"
                         : rc == 0 || rc == PERFC_ENOENT ? "miss"
                                                         : "error";
    perfc_span_set_attr_str(q->span, "perfc.cache.result", result);
    if (rc != 0 && rc != PERFC_ENOENT)
      perfc_span_set_status(q->span, PERFC_SPAN_STATUS_ERROR,
                            perfc_err_name(rc));
    perfc_span_end(q->span);
  }
  if (rc == 0 && len >= 1 && v[0] == TAG_NEGATIVE) {
    count_l1_not_answering(c);
    perfc_counter_inc(c->m.l2_hits);
    perfc_counter_inc(c->m.negative_hits);
    l1_fill(c, q->key, v + 1, len - 1, 1, q->version, q->ct.negative_ttl_ms);
    q->fn(PERFC_ENOENT, v + 1, len - 1, q->ud); /* the note, if any */
  } else if (rc == 0 && len >= 1 && v[0] == TAG_VALUE) {
    count_l1_not_answering(c);
    perfc_counter_inc(c->m.l2_hits);
    l1_fill(c, q->key, v + 1, len - 1, 0, q->version, q->ct.ttl_ms);
    q->fn(0, v + 1, len - 1, q->ud);
  } else {
    /* No entry (the full path leases and loads it), Redis failing (the
     * full path degrades to the loader), or bytes that are not ours. Not
     * counted here: the full path meets the same and counts it once. */
    q->fn(1, NULL, 0, q->ud);
  }
  perfc_trace_current_set(had ? &loop_tc : NULL);
  free(q);
}

int perfc__cache_l2_async_usable(perfc_cache *c) {
  return c != NULL && c->ra != NULL && atomic_load(&c->rq_count) == 0;
}

int perfc__cache_l2_get_async(perfc_cache *c, const char *key, int64_t ttl_ms,
                              int64_t negative_ttl_ms, perfc__cache_l2_fn fn,
                              void *user_data) {
  if (c == NULL || c->ra == NULL || key == NULL || fn == NULL ||
      perfc_loop_current() == NULL)
    return PERFC_ESTATE;
  /* While deletes wait for a retry, Redis may hold values the database no
   * longer has (as lead_load). */
  if (atomic_load(&c->rq_count) != 0)
    return PERFC_ESTATE;
  if (ttl_ms < 0 || ttl_ms > PERFC_CACHE_MAX_TTL_MS ||
      (negative_ttl_ms != PERFC_CACHE_TTL_NONE &&
       (negative_ttl_ms < 0 || negative_ttl_ms > PERFC_CACHE_MAX_TTL_MS)))
    return PERFC_EINVAL;
  size_t kl = strlen(key);
  l2_async *q = malloc(sizeof *q + kl + 1);
  if (q == NULL)
    return PERFC_ENOMEM;
  q->c = c;
  /* Read before the GET: an invalidation after this point fences the
   * fill, as for a load. */
  q->version = perfc_l1cache_version(c->l1, key);
  q->ct = (call_ttl){(uint32_t)ttl_ms,
                     negative_ttl_ms == PERFC_CACHE_TTL_NONE
                         ? NEG_TTL_NONE
                         : (uint32_t)negative_ttl_ms};
  q->fn = fn;
  q->ud = user_data;
  memcpy(q->key, key, kl + 1);
  /* The GET's span, ended by its reply; not left current meanwhile (the
   * handler goes on, and the loop to other calls). */
  perfc_trace_current_get(&q->tc);
  q->span = perfc_tracing_span_start_current("GET", PERFC_SPAN_CLIENT);
  if (q->span != NULL) {
    perfc_trace_current_set(&q->tc);
    perfc_span_set_attr_str(q->span, "db.system", "redis");
    perfc_span_set_attr_str(q->span, "db.operation", "GET");
    perfc_span_set_attr_str(q->span, "perfc.cache.name", c->name);
    perfc_span_set_attr_str(q->span, "perfc.cache.level", "l2");
  }
  int rc = perfc_redis_async_get(c->ra, q->key, l2_async_done, q);
  if (rc != 0) {
    perfc_span_set_status(q->span, PERFC_SPAN_STATUS_ERROR, perfc_err_name(rc));
    perfc_span_end(q->span);
    perfc_trace_current_set(&q->tc);
    free(q);
  }
  return rc;
}

/* The leader's work: L2, then the loader, then the fills. Returns 0 with
 * *out (malloc'd), PERFC_ENOENT, or the loader's error. */
static int lead_load(perfc_cache *c, const char *key, uint64_t version,
                     perfc_cache_loader_fn loader, void *ud, const call_ttl *ct,
                     uint8_t **out, size_t *out_len, const char **level) {
  /* `version` was read when the flight began, before Redis: an
   * invalidation after that point fences our fills. */
  int neg = 0;
  /* The previous flight for this key may have filled L1 between our miss
   * and our becoming leader; checking again keeps it to one load. */
  int rc = l1_usable(c) ? perfc_l1cache_get(c->l1, key, out, out_len, &neg)
                        : PERFC_ENOENT;
  if (rc == 0) {
    *level = "l1";
    return neg ? PERFC_ENOENT : 0;
  }
  /* While deletes wait for a retry, Redis may hold values the database no
   * longer has: neither read nor fill it. */
  int use_l2 = c->redis && atomic_load(&c->rq_count) == 0;
  int leased = 0;
  char token[48];
  if (use_l2) {
    make_token(c, token, sizeof token);
    uint8_t *tagged = NULL;
    size_t tlen = 0;
    rc = l2_get_or_lease(c, key, token, &tagged, &tlen);
    if (rc == 0) {
      rc = take_l2_value(c, key, tagged, tlen, version, ct, out, out_len);
      if (rc != PERFC_EIO) {
        *level = "l2";
        return rc;
      }
    } else if (rc == PERFC_ENOENT) {
      perfc_counter_inc(c->m.l2_misses);
      leased = 1;
    } else {
      perfc_counter_inc(c->m.l2_errors);
    }
  }
  perfc_counter_inc(c->m.loads);
  uint8_t *val = NULL;
  size_t len = 0;
  *level = "load";
  /* The loader's own work (its SQL, its calls) nests under this span. */
  perfc_span *ls = perfc_tracing_span_start_current("cache.load",
                                                    PERFC_SPAN_INTERNAL);
  perfc_span_set_attr_str(ls, "perfc.cache.name", c->name);
  rc = loader(key, &val, &len, ud);
  if (rc != 0 && rc != PERFC_ENOENT)
    perfc_span_set_status(ls, PERFC_SPAN_STATUS_ERROR, perfc_err_name(rc));
  perfc_span_end(ls);
  if (rc != 0 && rc != PERFC_ENOENT) {
    perfc_counter_inc(c->m.load_errors);
    free(val);
    return rc;
  }
  int negative = rc == PERFC_ENOENT;
  if (negative && ct->negative_ttl_ms == NEG_TTL_NONE) {
    /* Negative caching is off for this call: nothing is filled, and the
     * lease (if taken) expires by itself after lease_ttl_ms, during which
     * other instances load without filling Redis. */
    free(val);
    return PERFC_ENOENT;
  }
  if (negative) {
    /* A note the loader gave (perfc_cache_rpc: the handler's message) is
     * kept with the placeholder in both levels. */
    if (!val)
      len = 0;
  } else if (!val) {
    if (len != 0)
      return PERFC_EINVAL;
    if (!(val = malloc(1)))
      return PERFC_ENOMEM;
  }
  int fill_l1 = 1;
  if (leased) {
    fill_item it = {key,      val, len,
                    negative, 0,   negative ? ct->negative_ttl_ms : ct->ttl_ms};
    l2_fill(c, &it, 1, token);
    if (it.result == 0) {
      /* The lease is gone: invalidated (or a newer load took over). Our
       * value may predate a write, so it goes into neither level. */
      perfc_counter_inc(c->m.stale_refused);
      fill_l1 = 0;
    } else if (it.result < 0) {
      perfc_counter_inc(c->m.l2_errors);
    }
  }
  if (fill_l1)
    l1_fill(c, key, val, len, negative, version,
            negative ? ct->negative_ttl_ms : ct->ttl_ms);
  if (negative) {
    free(val);
    return PERFC_ENOENT;
  }
  *out = val;
  *out_len = len;
  return 0;
}

static uint64_t str_hash(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++) {
    h ^= (unsigned char)*s;
    h *= 1099511628211ull;
  }
  return h ^ (h >> 29);
}

/* Copies a flight's result for one participant. */
static int take_result(const flight *f, uint8_t **out, size_t *out_len) {
  if (f->rc != 0)
    return f->rc;
  uint8_t *d = dup_bytes(f->val, f->len);
  if (!d)
    return PERFC_ENOMEM;
  *out = d;
  *out_len = f->len;
  return 0;
}

static void flight_unref_locked(flight *f) {
  if (--f->refs == 0) {
    pthread_cond_destroy(&f->cv);
    free(f->val);
    free(f->key);
    free(f);
  }
}

/* A caller on an event loop waiting for a flight (any leader's). */
struct awaiter {
  awaiter *next;
  perfc_cache *c;
  stripe *s;
  flight *f; /* holds a reference */
  perfc_loop_task *task; /* on the waiter's loop */
  perfc_cache_result_fn fn;
  void *ud;
  perfc_trace_current tc;
  perfc_span *span; /* the waiter's cache.get_or_load */
};

static void cache_span_end(perfc_span *sp, const char *level, int rc);

/* On the waiter's loop: the flight's result, then the reference dropped. */
static void awaiter_deliver(void *arg) {
  awaiter *w = arg;
  uint8_t *v = NULL;
  size_t n = 0;
  pthread_mutex_lock(&w->s->mu);
  int rc = take_result(w->f, &v, &n);
  flight_unref_locked(w->f);
  pthread_mutex_unlock(&w->s->mu);
  perfc_counter_inc(w->c->m.shared);
  cache_span_end(w->span, "shared", rc);
  perfc_trace_current loop_tc;
  int had = perfc_trace_current_get(&loop_tc);
  perfc_trace_current_set(&w->tc);
  w->fn(rc, v, n, w->ud);
  perfc_trace_current_set(had ? &loop_tc : NULL);
  free(v);
  perfc_loop_task_free(w->task);
  free(w);
}

/* The end of a flight, from its leader (a blocking caller or a load on a
 * loop): unlinks it, hands the result to the callers waiting on `cv` and
 * posts it to those waiting on loops. `val` stays the leader's. */
static void flight_publish(stripe *s, flight *f, int rc, const uint8_t *val,
                           size_t len) {
  pthread_mutex_lock(&s->mu);
  if (f->linked) {
    flight **pp = &s->head;
    while (*pp != f)
      pp = &(*pp)->next;
    *pp = f->next;
    f->linked = 0;
  }
  f->done = 1;
  f->rc = rc;
  if (f->refs > 1 && rc == 0) {
    /* Waiters copy from the flight; the leader keeps the original. */
    f->val = dup_bytes(val, len);
    f->len = len;
    if (!f->val)
      f->rc = PERFC_ENOMEM;
  }
  awaiter *aw = f->aw;
  f->aw = NULL;
  pthread_cond_broadcast(&f->cv);
  flight_unref_locked(f); /* each awaiter still holds its own reference */
  pthread_mutex_unlock(&s->mu);
  /* Posted even to the leader's own loop: a waiter's callback never runs
   * inside the leader's. */
  while (aw) {
    awaiter *nx = aw->next;
    perfc_loop_task_post(aw->task);
    aw = nx;
  }
}

int perfc_cache_get_or_load(perfc_cache *c, const char *key,
                            perfc_cache_loader_fn loader, void *loader_ud,
                            uint8_t **out, size_t *out_len) {
  return perfc_cache_get_or_load_ttl(c, key, 0, 0, loader, loader_ud, out,
                                     out_len);
}

/* perfc_cache_peek() and its arena variant: L1 alone, never loading. The
 * value is malloc'd when `a` is NULL, else copied into `a`. */
static int peek(perfc_cache *c, const char *key, perfc_arena *a, uint8_t **out,
                size_t *out_len, int *out_plain) {
  if (!c || !key || !out || !out_len)
    return PERFC_EINVAL;
  if (c->bloom && !perfc_bloom_maybe_contains(c->bloom, key)) {
    perfc_counter_inc(c->m.bloom_rejects);
    return PERFC_ENOENT;
  }
  /* Not trusted: "not in L1", so the caller takes the full path, which
   * counts the bypass. */
  if (!l1_usable(c))
    return 1;
  int neg = 0;
  int rc = a ? perfc__l1cache_get_arena(c->l1, key, a, out, out_len, &neg,
                                        out_plain)
             : perfc_l1cache_get(c->l1, key, out, out_len, &neg);
  if (rc == PERFC_ENOENT)
    return 1;
  if (rc != 0)
    return rc;
  perfc_counter_inc(c->m.l1_hits);
  if (neg) {
    perfc_counter_inc(c->m.negative_hits);
    /* perfc_l1cache_get leaves *out NULL for a negative entry; the arena
     * read gives its note (NULL when none). */
    return PERFC_ENOENT;
  }
  return 0;
}

static void cache_span_end(perfc_span *sp, const char *level, int rc);

/* peek() in a span: an L1 lookup that never loads; a miss (1) is
 * recorded as such. */
static int peek_traced(perfc_cache *c, const char *key, perfc_arena *a,
                       uint8_t **out, size_t *out_len, int *out_plain) {
  perfc_span *sp =
      c != NULL ? perfc_tracing_span_start_current("cache.peek",
                                                   PERFC_SPAN_INTERNAL)
                : NULL;
  /* Tested here, not only inside: an L1 hit of an untraced call (the
   * usual one) then pays no call at all for the span. */
  if (sp != NULL)
    perfc_span_set_attr_str(sp, "perfc.cache.name", c->name);
  int rc = peek(c, key, a, out, out_len, out_plain);
  if (sp != NULL && rc == 1) {
    perfc_span_set_attr_str(sp, "perfc.cache.level", "l1");
    perfc_span_set_attr_str(sp, "perfc.cache.result", "miss");
    perfc_span_end(sp);
  } else {
    cache_span_end(sp, "l1", rc);
  }
  return rc;
}

int perfc_cache_peek(perfc_cache *c, const char *key, uint8_t **out,
                     size_t *out_len) {
  return peek_traced(c, key, NULL, out, out_len, NULL);
}

int perfc__cache_negative_note(perfc_cache *c, const char *key,
                               perfc_arena *a, uint8_t **out, size_t *out_len) {
  if (!c || !key || !l1_usable(c))
    return PERFC_ENOENT;
  return perfc__l1cache_note(c->l1, key, a, out, out_len);
}

int perfc__cache_peek_arena(perfc_cache *c, const char *key, perfc_arena *a,
                            uint8_t **out, size_t *out_len, int *out_plain) {
  if (a == NULL)
    return PERFC_EINVAL;
  if (out_plain != NULL)
    *out_plain = 0;
  return peek_traced(c, key, a, out, out_len, out_plain);
}

static int get_or_load(perfc_cache *c, const char *key, int64_t ttl_ms,
                       int64_t negative_ttl_ms, perfc_cache_loader_fn loader,
                       void *loader_ud, uint8_t **out, size_t *out_len,
                       const char **level);

/* The span of a lookup inside a traced call: which level answered
 * (perfc.cache.level: l1, l2, load, shared: another call's load, bloom:
 * the filter said absent) and how (perfc.cache.result: found, not_found, error). The key is not
 * recorded: keys often hold user ids or e-mail addresses, and a trace
 * store is no place for them. */
static void cache_span_end(perfc_span *sp, const char *level, int rc) {
  if (sp == NULL)
    return;
  if (level != NULL)
    perfc_span_set_attr_str(sp, "perfc.cache.level", level);
  perfc_span_set_attr_str(sp, "perfc.cache.result",
                          rc == 0                ? "found"
                          : rc == PERFC_ENOENT   ? "not_found"
                                                 : "error");
  if (rc != 0 && rc != PERFC_ENOENT)
    perfc_span_set_status(sp, PERFC_SPAN_STATUS_ERROR, perfc_err_name(rc));
  perfc_span_end(sp);
}

int perfc_cache_get_or_load_ttl(perfc_cache *c, const char *key, int64_t ttl_ms,
                                int64_t negative_ttl_ms,
                                perfc_cache_loader_fn loader, void *loader_ud,
                                uint8_t **out, size_t *out_len) {
  perfc_span *sp =
      c != NULL ? perfc_tracing_span_start_current("cache.get_or_load",
                                                   PERFC_SPAN_INTERNAL)
                : NULL;
  perfc_span_set_attr_str(sp, "perfc.cache.name", c != NULL ? c->name : NULL);
  const char *level = NULL;
  int rc = get_or_load(c, key, ttl_ms, negative_ttl_ms, loader, loader_ud, out,
                       out_len, &level);
  cache_span_end(sp, level, rc);
  return rc;
}

static int get_or_load(perfc_cache *c, const char *key, int64_t ttl_ms,
                       int64_t negative_ttl_ms, perfc_cache_loader_fn loader,
                       void *loader_ud, uint8_t **out, size_t *out_len,
                       const char **level) {
  if (!c || !key || !loader || !out || !out_len)
    return perfc__fail(PERFC_EINVAL, "cache: NULL cache, key, loader or out");
  if (ttl_ms < 0 || ttl_ms > PERFC_CACHE_MAX_TTL_MS ||
      (negative_ttl_ms != PERFC_CACHE_TTL_NONE &&
       (negative_ttl_ms < 0 || negative_ttl_ms > PERFC_CACHE_MAX_TTL_MS)))
    return perfc__fail(PERFC_EINVAL, "cache %s: TTLs %lld/%lld ms out of range",
                       c->name, (long long)ttl_ms, (long long)negative_ttl_ms);
  /* Inside, TTLs are 32-bit and "do not cache" is NEG_TTL_NONE. */
  const call_ttl ct = {(uint32_t)ttl_ms, negative_ttl_ms == PERFC_CACHE_TTL_NONE
                                             ? NEG_TTL_NONE
                                             : (uint32_t)negative_ttl_ms};
  if (c->bloom && !perfc_bloom_maybe_contains(c->bloom, key)) {
    perfc_counter_inc(c->m.bloom_rejects);
    *level = "bloom";
    return PERFC_ENOENT;
  }
  int neg = 0;
  int rc = PERFC_ENOENT;
  if (c->no_l1) {
    /* No in-process level: straight to the flight. */
  } else if (l1_trusted(c)) {
    rc = perfc_l1cache_get(c->l1, key, out, out_len, &neg);
    if (rc == 0) {
      perfc_counter_inc(c->m.l1_hits);
      *level = "l1";
      if (neg) {
        perfc_counter_inc(c->m.negative_hits);
        return PERFC_ENOENT;
      }
      return 0;
    }
    if (rc != PERFC_ENOENT)
      return rc;
    perfc_counter_inc(c->m.l1_misses);
  } else {
    perfc_counter_inc(c->m.l1_bypassed);
  }

  stripe *s = &c->stripes[str_hash(key) % FLIGHT_STRIPES];
  pthread_mutex_lock(&s->mu);
  /* The key's generation now: if an invalidation of the key completed
   * since a flight for it began (its generation differs), that flight may
   * be reading what the write replaced, and this call may have begun after
   * the write was acknowledged, so it must not take that flight's result.
   * The stale flight is unlinked (its own participants still get its
   * result) and this call starts a new one. */
  uint64_t version = perfc_l1cache_version(c->l1, key);
  flight *f = s->head;
  while (f && strcmp(f->key, key) != 0)
    f = f->next;
  if (f && f->version != version) {
    flight **pp = &s->head;
    while (*pp != f)
      pp = &(*pp)->next;
    *pp = f->next;
    f->linked = 0;
    f = NULL;
  }
  if (f) {
    f->refs++;
    while (!f->done)
      pthread_cond_wait(&f->cv, &s->mu);
    rc = take_result(f, out, out_len);
    flight_unref_locked(f);
    pthread_mutex_unlock(&s->mu);
    perfc_counter_inc(c->m.shared);
    *level = "shared";
    return rc;
  }
  f = calloc(1, sizeof(*f));
  char *k = f ? strdup(key) : NULL;
  if (!k) {
    pthread_mutex_unlock(&s->mu);
    free(f);
    return PERFC_ENOMEM;
  }
  f->key = k;
  f->version = version;
  f->linked = 1;
  f->refs = 1;
  pthread_cond_init(&f->cv, NULL);
  f->next = s->head;
  s->head = f;
  pthread_mutex_unlock(&s->mu);

  uint8_t *val = NULL;
  size_t len = 0;
  rc = lead_load(c, key, version, loader, loader_ud, &ct, &val, &len, level);

  flight_publish(s, f, rc, val, len);
  if (rc == 0) {
    *out = val;
    *out_len = len;
  }
  return rc;
}

/* ---- the miss on an event loop (perfc_cache_get_or_load_async) ---- */

/* One caller's lookup on a loop, and once it leads a flight, the load:
 * its lease, the loader's result and the fills. Lives from the call to
 * its answer. */
struct perfc_cache_load {
  perfc_cache *c;
  stripe *s;
  flight *f;             /* the flight it leads; NULL before */
  perfc_loop *loop;      /* the caller's, where every step runs */
  perfc_loop_task *back; /* brings perfc_cache_load_done() to `loop` */
  uint64_t version;      /* the key's L1 generation before Redis */
  call_ttl ct;
  int leased;
  char token[48];
  perfc_cache_async_loader_fn loader;
  void *loader_ud;
  perfc_cache_result_fn done;
  void *done_ud;
  perfc_trace_current tc; /* the caller's: continuations work for it */
  perfc_span *span;       /* cache.get_or_load, ended with the answer */
  perfc_span *load_span;  /* cache.load, while the loader runs */
  const char *level;      /* which level answered, for the span */
  atomic_int spent;       /* perfc_cache_load_done() was called */
  int lrc;                /* the loader's result, while it crosses */
  uint8_t *lval;          /* threads, then while the fill runs */
  size_t llen;
  char key[];
};

/* Runs `fn` as the caller's work: its trace context is current. */
static void op_answer(perfc_cache_load *op, int rc, const uint8_t *v,
                      size_t n) {
  cache_span_end(op->span, op->level, rc);
  op->span = NULL;
  perfc_trace_current loop_tc;
  int had = perfc_trace_current_get(&loop_tc);
  perfc_trace_current_set(&op->tc);
  op->done(rc, v, n, op->done_ud);
  perfc_trace_current_set(had ? &loop_tc : NULL);
}

static void op_free(perfc_cache_load *op) {
  if (op->span != NULL) /* never answered: out of memory before */
    cache_span_end(op->span, op->level, PERFC_ENOMEM);
  if (op->load_span != NULL)
    perfc_span_end(op->load_span);
  if (op->back != NULL)
    perfc_loop_task_free(op->back);
  free(op->lval);
  free(op);
}

/* The end: the flight's other callers get the result, then this one. */
static void op_finish(perfc_cache_load *op, int rc, const uint8_t *v,
                      size_t n) {
  if (op->f != NULL)
    flight_publish(op->s, op->f, rc, v, n);
  /* A value, or a "not found" with its note (NULL when none). */
  int with = rc == 0 || rc == PERFC_ENOENT;
  op_answer(op, rc, with ? v : NULL, with ? n : 0);
  op_free(op);
}

/* The value is in Redis (or the lease was lost): L1, then the answer. */
static void op_fill_l1_and_finish(perfc_cache_load *op, int fill_l1) {
  int negative = op->lrc == PERFC_ENOENT;
  if (fill_l1)
    l1_fill(op->c, op->key, op->lval, op->llen, negative, op->version,
            negative ? op->ct.negative_ttl_ms : op->ct.ttl_ms);
  op_finish(op, negative ? PERFC_ENOENT : 0, op->lval, op->llen);
}

static void op_fill_done(int rc, const perfc_redis_reply *r, void *ud) {
  perfc_cache_load *op = ud;
  int fill_l1 = 1;
  if (rc == 0 && r->type == PERFC_REDIS_REPLY_INTEGER && r->integer == 0) {
    /* The lease is gone: invalidated (or a newer load took over). Our
     * value may predate a write, so it goes into neither level. */
    perfc_counter_inc(op->c->m.stale_refused);
    fill_l1 = 0;
  } else if (rc != 0 || r->type != PERFC_REDIS_REPLY_INTEGER) {
    if (rc == 0 && r->type == PERFC_REDIS_REPLY_ERROR)
      perfc_log(PERFC_LOG_WARN, "cache %s: fill script: %.*s", op->c->name,
                (int)r->len, r->str);
    perfc_counter_inc(op->c->m.l2_errors);
  }
  op_fill_l1_and_finish(op, fill_l1);
}

/* The loader's result, on the loop: the fills, as lead_load() does them. */
static void op_loaded(perfc_cache_load *op) {
  perfc_cache *c = op->c;
  int rc = op->lrc;
  if (op->load_span != NULL) {
    if (rc != 0 && rc != PERFC_ENOENT)
      perfc_span_set_status(op->load_span, PERFC_SPAN_STATUS_ERROR,
                            perfc_err_name(rc));
    perfc_span_end(op->load_span);
    op->load_span = NULL;
  }
  if (rc != 0 && rc != PERFC_ENOENT) {
    perfc_counter_inc(c->m.load_errors);
    free(op->lval);
    op->lval = NULL;
    op_finish(op, rc, NULL, 0);
    return;
  }
  int negative = rc == PERFC_ENOENT;
  if (negative) {
    /* A note the loader gave (perfc_cache_rpc: the handler's message) is
     * kept with the placeholder in both levels, as lead_load() does. */
    if (op->lval == NULL)
      op->llen = 0;
    if (op->ct.negative_ttl_ms == NEG_TTL_NONE) {
      /* Negative caching off for this call: nothing is filled; the lease
       * (if taken) expires by itself. */
      op_finish(op, PERFC_ENOENT, NULL, 0);
      return;
    }
  } else if (op->lval == NULL) {
    if (op->llen != 0 || (op->lval = malloc(1)) == NULL) {
      op->lrc = op->llen != 0 ? PERFC_EINVAL : PERFC_ENOMEM;
      op_loaded(op);
      return;
    }
  }
  if (!op->leased) {
    op_fill_l1_and_finish(op, 1);
    return;
  }
  /* FILL_LUA with the lease's token, on this loop's connection. */
  char *lk = lease_key(op->c, op->key);
  char *tv = malloc(op->llen + 1);
  int sent = PERFC_ENOMEM;
  if (lk != NULL && tv != NULL) {
    tv[0] = negative ? TAG_NEGATIVE : TAG_VALUE;
    if (op->llen) /* the value, or the placeholder's note */
      memcpy(tv + 1, op->lval, op->llen);
    char ttl[16];
    uint32_t t = jittered(c, negative ? (op->ct.negative_ttl_ms
                                             ? op->ct.negative_ttl_ms
                                             : c->negative_ttl_ms)
                                      : (op->ct.ttl_ms ? op->ct.ttl_ms
                                                       : c->l2_ttl_ms));
    snprintf(ttl, sizeof ttl, "%u", (unsigned)t);
    const char *argv[] = {"EVAL", FILL_LUA, "2", op->key, lk, op->token, tv,
                          ttl};
    size_t argvlen[8];
    for (int i = 0; i < 8; i++)
      argvlen[i] = i == 6 ? 0 : strlen(argv[i]);
    argvlen[1] = sizeof FILL_LUA - 1;
    argvlen[6] = op->llen + 1;
    sent = perfc_redis_async_command(c->ra, 8, argv, argvlen, op_fill_done, op);
  }
  free(lk);
  free(tv);
  if (sent != 0) {
    perfc_counter_inc(c->m.l2_errors);
    op_fill_l1_and_finish(op, 1);
  }
}

/* perfc_cache_load_done() from another thread, back on the loop. */
static void op_back(void *arg) { op_loaded(arg); }

void perfc_cache_load_done(perfc_cache_load *op, int rc, uint8_t *val,
                           size_t len) {
  if (op == NULL || atomic_exchange(&op->spent, 1) != 0) {
    perfc_log(PERFC_LOG_ERROR,
              "perfc_cache_load_done: called twice for one load (ignored)");
    free(val);
    return;
  }
  op->lrc = rc;
  op->lval = val;
  op->llen = len;
  if (perfc_loop_current() == op->loop)
    op_loaded(op);
  else
    perfc_loop_task_post(op->back);
}

/* The loader, under a span; its own work (its SQL) nests under it. */
static void op_load(perfc_cache_load *op) {
  perfc_counter_inc(op->c->m.loads);
  op->level = "load";
  perfc_trace_current loop_tc;
  int had = perfc_trace_current_get(&loop_tc);
  perfc_trace_current_set(&op->tc);
  op->load_span = perfc_tracing_span_start_current("cache.load",
                                                   PERFC_SPAN_INTERNAL);
  perfc_span_set_attr_str(op->load_span, "perfc.cache.name", op->c->name);
  int rc = op->loader(op->key, op, op->loader_ud);
  perfc_trace_current_set(had ? &loop_tc : NULL);
  /* On 0, `op` may be gone already (the loader finished it inside). */
  if (rc != 0) {
    if (atomic_exchange(&op->spent, 1) != 0) {
      perfc_log(PERFC_LOG_ERROR,
                "cache %s: an async loader failed after calling "
                "perfc_cache_load_done(); its failure is ignored",
                op->c->name);
      return;
    }
    op->lrc = rc;
    op->lval = NULL;
    op->llen = 0;
    op_loaded(op);
  }
}

static void op_leased(int rc, const perfc_redis_reply *r, void *ud) {
  perfc_cache_load *op = ud;
  perfc_cache *c = op->c;
  if (rc == 0 && r->type == PERFC_REDIS_REPLY_STRING) {
    uint8_t *tagged = dup_bytes((const uint8_t *)r->str, r->len);
    uint8_t *v = NULL;
    size_t n = 0;
    int t = tagged ? take_l2_value(c, op->key, tagged, r->len, op->version,
                                   &op->ct, &v, &n)
                   : PERFC_ENOMEM;
    if (t != PERFC_EIO) {
      op->level = "l2";
      op_finish(op, t, v, n);
      free(v);
      return;
    }
  } else if (rc == 0 && r->type == PERFC_REDIS_REPLY_NIL) {
    perfc_counter_inc(c->m.l2_misses);
    op->leased = 1;
  } else {
    if (rc == 0 && r->type == PERFC_REDIS_REPLY_ERROR)
      perfc_log(PERFC_LOG_WARN, "cache %s: lease script: %.*s", c->name,
                (int)r->len, r->str);
    perfc_counter_inc(c->m.l2_errors);
  }
  op_load(op);
}

/* The leader's work on the loop: L1 again, Redis with the lease, the
 * loader; as lead_load(). */
static void op_lead(perfc_cache_load *op) {
  perfc_cache *c = op->c;
  int neg = 0;
  uint8_t *v = NULL;
  size_t n = 0;
  int rc = l1_usable(c) ? perfc_l1cache_get(c->l1, op->key, &v, &n, &neg)
                        : PERFC_ENOENT;
  if (rc == 0) {
    op->level = "l1";
    op_finish(op, neg ? PERFC_ENOENT : 0, v, n);
    free(v);
    return;
  }
  if (perfc_loop_task_new(&op->back, op->loop, op_back, op) != 0) {
    op_finish(op, PERFC_ENOMEM, NULL, 0);
    return;
  }
  if (c->ra == NULL || atomic_load(&c->rq_count) != 0) {
    op_load(op); /* no Redis, or deletes pending: neither read nor fill */
    return;
  }
  make_token(c, op->token, sizeof op->token);
  char *lk = lease_key(op->c, op->key);
  int sent = PERFC_ENOMEM;
  if (lk != NULL) {
    char ttl[16];
    snprintf(ttl, sizeof ttl, "%u", (unsigned)c->lease_ttl_ms);
    const char *argv[] = {"EVAL", GET_OR_LEASE_LUA, "2", op->key, lk,
                          op->token, ttl};
    size_t argvlen[7];
    for (int i = 0; i < 7; i++)
      argvlen[i] = strlen(argv[i]);
    argvlen[1] = sizeof GET_OR_LEASE_LUA - 1;
    sent = perfc_redis_async_command(c->ra, 7, argv, argvlen, op_leased, op);
    free(lk);
  }
  if (sent != 0) {
    perfc_counter_inc(c->m.l2_errors);
    op_load(op);
  }
}

/* Joins the key's flight (when it began after the key's last
 * invalidation) or starts one led by `op`, as get_or_load() does. */
static void op_join_or_lead(perfc_cache_load *op) {
  perfc_cache *c = op->c;
  stripe *s = &c->stripes[str_hash(op->key) % FLIGHT_STRIPES];
  op->s = s;
  awaiter *w = calloc(1, sizeof *w);
  flight *nf = calloc(1, sizeof *nf);
  char *k = nf ? strdup(op->key) : NULL;
  if (w == NULL || k == NULL ||
      perfc_loop_task_new(&w->task, op->loop, awaiter_deliver, w) != 0) {
    free(w);
    free(nf);
    free(k);
    op_finish(op, PERFC_ENOMEM, NULL, 0);
    return;
  }
  pthread_mutex_lock(&s->mu);
  uint64_t version = perfc_l1cache_version(c->l1, op->key);
  flight *f = s->head;
  while (f && strcmp(f->key, op->key) != 0)
    f = f->next;
  if (f && f->version != version) {
    flight **pp = &s->head;
    while (*pp != f)
      pp = &(*pp)->next;
    *pp = f->next;
    f->linked = 0;
    f = NULL;
  }
  if (f) {
    f->refs++;
    w->c = c;
    w->s = s;
    w->f = f;
    w->fn = op->done;
    w->ud = op->done_ud;
    w->tc = op->tc;
    w->span = op->span;
    op->span = NULL;
    w->next = f->aw;
    f->aw = w;
    pthread_mutex_unlock(&s->mu);
    free(nf);
    free(k);
    op_free(op);
    return;
  }
  nf->key = k;
  nf->version = version;
  nf->linked = 1;
  nf->refs = 1;
  pthread_cond_init(&nf->cv, NULL);
  nf->next = s->head;
  s->head = nf;
  pthread_mutex_unlock(&s->mu);
  perfc_loop_task_free(w->task);
  free(w);
  op->f = nf;
  op->version = version;
  op_lead(op);
}

/* The plain GET before the flight: a hit answers without a lease. */
static void op_got(int rc, const uint8_t *v, size_t len, void *ud) {
  perfc_cache_load *op = ud;
  perfc_cache *c = op->c;
  if (rc == 0 && len >= 1 && v[0] == TAG_NEGATIVE) {
    perfc_counter_inc(c->m.l2_hits);
    perfc_counter_inc(c->m.negative_hits);
    l1_fill(c, op->key, NULL, 0, 1, op->version, op->ct.negative_ttl_ms);
    op->level = "l2";
    op_finish(op, PERFC_ENOENT, NULL, 0);
    return;
  }
  if (rc == 0 && len >= 1 && v[0] == TAG_VALUE) {
    perfc_counter_inc(c->m.l2_hits);
    l1_fill(c, op->key, v + 1, len - 1, 0, op->version, op->ct.ttl_ms);
    op->level = "l2";
    op_finish(op, 0, v + 1, len - 1);
    return;
  }
  /* No entry, Redis failing, or bytes not ours: the flight's lease read
   * meets the same and counts it once. */
  op_join_or_lead(op);
}

int perfc_cache_async_usable(perfc_cache *c) {
  return c != NULL && perfc_loop_current() != NULL &&
         (c->redis == NULL || c->ra != NULL);
}

int perfc__cache_get_or_load_async(perfc_cache *c, const char *key,
                                   int64_t ttl_ms, int64_t negative_ttl_ms,
                                   perfc_cache_async_loader_fn loader,
                                   void *loader_ud, perfc_cache_result_fn done,
                                   void *done_ud, int l2_missed) {
  if (!c || !key || !loader || !done)
    return perfc__fail(PERFC_EINVAL, "cache: NULL cache, key, loader or done");
  if (ttl_ms < 0 || ttl_ms > PERFC_CACHE_MAX_TTL_MS ||
      (negative_ttl_ms != PERFC_CACHE_TTL_NONE &&
       (negative_ttl_ms < 0 || negative_ttl_ms > PERFC_CACHE_MAX_TTL_MS)))
    return perfc__fail(PERFC_EINVAL, "cache %s: TTLs %lld/%lld ms out of range",
                       c->name, (long long)ttl_ms, (long long)negative_ttl_ms);
  perfc_loop *loop = perfc_loop_current();
  if (loop == NULL || (c->redis != NULL && c->ra == NULL))
    return perfc__fail(PERFC_ESTATE,
                       "cache %s: the asynchronous path needs an event loop "
                       "and, with Redis, the asynchronous client "
                       "(no_async_l2 off)",
                       c->name);
  size_t kl = strlen(key);
  perfc_cache_load *op = calloc(1, sizeof *op + kl + 1);
  if (op == NULL)
    return perfc__fail(PERFC_ENOMEM, "cache %s: out of memory", c->name);
  op->c = c;
  op->loop = loop;
  op->ct = (call_ttl){(uint32_t)ttl_ms, negative_ttl_ms == PERFC_CACHE_TTL_NONE
                                            ? NEG_TTL_NONE
                                            : (uint32_t)negative_ttl_ms};
  op->loader = loader;
  op->loader_ud = loader_ud;
  op->done = done;
  op->done_ud = done_ud;
  atomic_init(&op->spent, 0);
  memcpy(op->key, key, kl + 1);
  /* The lookup's span; what runs for it later (the loader's queries)
   * nests under it, so its context is the one continuations restore. */
  perfc_trace_current caller_tc;
  int had = perfc_trace_current_get(&caller_tc);
  op->span = perfc_tracing_span_start_current("cache.get_or_load",
                                              PERFC_SPAN_INTERNAL);
  perfc_span_set_attr_str(op->span, "perfc.cache.name", c->name);
  perfc_trace_current_get(&op->tc);
  perfc_trace_current_set(had ? &caller_tc : NULL);
  if (c->bloom && !perfc_bloom_maybe_contains(c->bloom, key)) {
    perfc_counter_inc(c->m.bloom_rejects);
    op->level = "bloom";
    op_finish(op, PERFC_ENOENT, NULL, 0);
    return 0;
  }
  if (c->no_l1) {
    /* No in-process level. */
  } else if (l1_trusted(c)) {
    int neg = 0;
    uint8_t *v = NULL;
    size_t n = 0;
    int rc = perfc_l1cache_get(c->l1, key, &v, &n, &neg);
    if (rc == 0) {
      perfc_counter_inc(c->m.l1_hits);
      if (neg)
        perfc_counter_inc(c->m.negative_hits);
      op->level = "l1";
      op_finish(op, neg ? PERFC_ENOENT : 0, v, n);
      free(v);
      return 0;
    }
    if (rc != PERFC_ENOENT) {
      cache_span_end(op->span, "l1", rc);
      free(op);
      return rc;
    }
    perfc_counter_inc(c->m.l1_misses);
  } else {
    perfc_counter_inc(c->m.l1_bypassed);
  }
  /* Read before Redis: an invalidation after this point fences the fills
   * (a flight led by this call reads it again under the stripe lock). */
  op->version = perfc_l1cache_version(c->l1, key);
  if (!l2_missed && c->ra != NULL && atomic_load(&c->rq_count) == 0 &&
      perfc_redis_async_get(c->ra, op->key, op_got, op) == 0)
    return 0;
  op_join_or_lead(op);
  return 0;
}

int perfc_cache_get_or_load_async(perfc_cache *c, const char *key,
                                  int64_t ttl_ms, int64_t negative_ttl_ms,
                                  perfc_cache_async_loader_fn loader,
                                  void *loader_ud, perfc_cache_result_fn done,
                                  void *done_ud) {
  return perfc__cache_get_or_load_async(c, key, ttl_ms, negative_ttl_ms,
                                        loader, loader_ud, done, done_ud, 0);
}

void perfc_cache_values_free(perfc_cache_value *out, size_t n) {
  if (!out)
    return;
  for (size_t i = 0; i < n; i++) {
    free(out[i].data);
    out[i] = (perfc_cache_value){NULL, 0, 0};
  }
}

/* Takes leases for `n` keys under one token in one pipeline. Returns 0 when
 * every SET succeeded. */
static int take_leases(perfc_cache *c, const char *const *keys, size_t n,
                       const char *token) {
  perfc__redis_cmd *cmds = calloc(n, sizeof(*cmds));
  const char **argv = calloc(n * 5, sizeof(char *));
  size_t *argvlen = calloc(n * 5, sizeof(size_t));
  char **lks = calloc(n, sizeof(char *));
  redisReply **replies = calloc(n, sizeof(*replies));
  char ttl[16];
  snprintf(ttl, sizeof ttl, "%u", (unsigned)c->lease_ttl_ms);
  int rc = PERFC_ENOMEM;
  if (!cmds || !argv || !argvlen || !lks || !replies)
    goto done;
  for (size_t i = 0; i < n; i++) {
    if (!(lks[i] = lease_key(c, keys[i])))
      goto done;
    const char **av = &argv[5 * i];
    size_t *al = &argvlen[5 * i];
    av[0] = "SET";
    av[1] = lks[i];
    av[2] = token;
    av[3] = "PX";
    av[4] = ttl;
    for (int k = 0; k < 5; k++)
      al[k] = strlen(av[k]);
    cmds[i] = (perfc__redis_cmd){5, av, al};
  }
  rc = perfc__redis_pipeline(c->redis, cmds, n, replies);
  for (size_t i = 0; rc == 0 && i < n; i++)
    if (replies[i]->type == REDIS_REPLY_ERROR)
      rc = PERFC_EIO;
done:
  if (replies)
    for (size_t i = 0; i < n; i++)
      if (replies[i])
        freeReplyObject(replies[i]);
  if (lks)
    for (size_t i = 0; i < n; i++)
      free(lks[i]);
  free(replies);
  free(lks);
  free(argvlen);
  free(argv);
  free(cmds);
  return rc;
}

int perfc_cache_get_many(perfc_cache *c, const char *const *keys, size_t n,
                         perfc_cache_batch_loader_fn loader, void *loader_ud,
                         perfc_cache_value *out) {
  if (!c || (n && (!keys || !out)) || !loader)
    return PERFC_EINVAL;
  for (size_t i = 0; i < n; i++) {
    out[i] = (perfc_cache_value){NULL, 0, 0};
    if (!keys[i])
      return PERFC_EINVAL;
  }
  if (n == 0)
    return 0;
  size_t *miss = calloc(n, sizeof(size_t));
  uint64_t *ver = calloc(n, sizeof(uint64_t));
  const char **mkeys = calloc(n, sizeof(char *));
  perfc_redis_value *rv = calloc(n, sizeof(*rv));
  perfc_cache_value *lv = calloc(n, sizeof(*lv));
  fill_item *fi = calloc(n, sizeof(*fi));
  int rc = PERFC_ENOMEM;
  if (!miss || !ver || !mkeys || !rv || !lv || !fi)
    goto done;
  size_t nmiss = 0;
  for (size_t i = 0; i < n; i++) {
    if (c->bloom && !perfc_bloom_maybe_contains(c->bloom, keys[i])) {
      perfc_counter_inc(c->m.bloom_rejects);
      continue;
    }
    ver[i] = perfc_l1cache_version(c->l1, keys[i]);
    int neg = 0;
    if (l1_usable(c)) {
      rc = perfc_l1cache_get(c->l1, keys[i], &out[i].data, &out[i].len, &neg);
    } else {
      if (!c->no_l1)
        perfc_counter_inc(c->m.l1_bypassed);
      rc = PERFC_ENOENT;
    }
    if (rc == 0) {
      perfc_counter_inc(c->m.l1_hits);
      out[i].found = !neg;
      if (neg)
        perfc_counter_inc(c->m.negative_hits);
    } else if (rc == PERFC_ENOENT) {
      if (l1_usable(c))
        perfc_counter_inc(c->m.l1_misses);
      miss[nmiss++] = i;
    } else {
      goto fail;
    }
  }
  rc = 0;
  int leased = 0;
  char token[48];
  if (nmiss && c->redis && atomic_load(&c->rq_count) == 0) {
    for (size_t j = 0; j < nmiss; j++)
      mkeys[j] = keys[miss[j]];
    int r = perfc_redis_mget(c->redis, mkeys, nmiss, rv);
    if (r == 0) {
      size_t still = 0;
      for (size_t j = 0; j < nmiss; j++) {
        size_t i = miss[j];
        int t = rv[j].found
                    ? take_l2_value(c, keys[i], rv[j].data, rv[j].len, ver[i],
                                    NULL, &out[i].data, &out[i].len)
                    : PERFC_EIO;
        rv[j].data = NULL; /* taken over (or freed) by take_l2_value */
        if (t == 0)
          out[i].found = 1;
        else if (t != PERFC_ENOENT) {
          if (!rv[j].found)
            perfc_counter_inc(c->m.l2_misses);
          miss[still++] = i;
        }
      }
      nmiss = still;
      for (size_t j = 0; j < nmiss; j++)
        mkeys[j] = keys[miss[j]];
      if (nmiss) {
        make_token(c, token, sizeof token);
        if (take_leases(c, mkeys, nmiss, token) == 0)
          leased = 1;
        else
          perfc_counter_inc(c->m.l2_errors);
      }
    } else {
      perfc_counter_inc(c->m.l2_errors);
    }
  }
  if (nmiss == 0)
    goto done;
  for (size_t j = 0; j < nmiss; j++)
    mkeys[j] = keys[miss[j]];
  perfc_counter_inc(c->m.loads);
  rc = loader(mkeys, nmiss, lv, loader_ud);
  if (rc != 0) {
    perfc_counter_inc(c->m.load_errors);
    perfc_cache_values_free(lv, nmiss);
    goto fail;
  }
  for (size_t j = 0; j < nmiss; j++) {
    if (lv[j].found && !lv[j].data) {
      if (lv[j].len || !(lv[j].data = malloc(1))) {
        perfc_cache_values_free(lv, nmiss);
        rc = lv[j].len ? PERFC_EINVAL : PERFC_ENOMEM;
        goto fail;
      }
    }
    /* A not-found's bytes (a loader may leave some) are not a note here. */
    fi[j] = (fill_item){mkeys[j], lv[j].found ? lv[j].data : NULL,
                        lv[j].found ? lv[j].len : 0, !lv[j].found, 1, 0};
  }
  if (leased) {
    l2_fill(c, fi, nmiss, token);
    for (size_t j = 0; j < nmiss; j++) {
      if (fi[j].result == 0)
        perfc_counter_inc(c->m.stale_refused);
      else if (fi[j].result < 0)
        perfc_counter_inc(c->m.l2_errors);
    }
  }
  for (size_t j = 0; j < nmiss; j++) {
    size_t i = miss[j];
    if (fi[j].result != 0)
      l1_fill(c, keys[i], fi[j].val, fi[j].len, !lv[j].found, ver[i], 0);
    if (lv[j].found) {
      out[i].data = lv[j].data;
      out[i].len = lv[j].len;
      out[i].found = 1;
    } else {
      free(lv[j].data);
    }
    lv[j].data = NULL;
  }
  rc = 0;
  goto done;
fail:
  perfc_cache_values_free(out, n);
done:
  if (rv)
    perfc_redis_values_free(rv, n);
  free(fi);
  free(lv);
  free(rv);
  free(mkeys);
  free(ver);
  free(miss);
  return rc;
}

int perfc_cache_invalidate(perfc_cache *c, const char *const *keys, size_t n) {
  if (!c || (n && !keys))
    return PERFC_EINVAL;
  for (size_t i = 0; i < n; i++)
    if (!keys[i])
      return PERFC_EINVAL;
  if (n == 0)
    return 0;
  perfc_counter_add(c->m.invalidations, n);
  if (c->redis) {
    /* Redis before L1: with L1 dropped first, a concurrent read could miss
     * L1, find the old value still in Redis and put it back into L1 with a
     * version read after our L1 delete. */
    int rc = del_with_leases(c, keys, n);
    if (rc == 0)
      rc = publish(c, keys, n);
    if (rc != 0) {
      if (rc == PERFC_ENOMEM) {
        /* Cannot even queue a retry: drop L1 at least, and say so. */
        for (size_t i = 0; i < n; i++)
          perfc_l1cache_delete(c->l1, keys[i]);
        return rc;
      }
      perfc_log(PERFC_LOG_DEBUG,
                "cache %s: Redis invalidation failed (%s), retrying in the "
                "background",
                c->name, perfc_err_name(rc));
      perfc_counter_inc(c->m.l2_errors);
      enqueue_retry(c, keys, n);
    }
  }
  for (size_t i = 0; i < n; i++)
    perfc_l1cache_delete(c->l1, keys[i]);
  return 0;
}

void perfc_cache_stats_get(perfc_cache *c, perfc_cache_stats *out) {
  memset(out, 0, sizeof(*out));
  if (!c)
    return;
  const metrics *m = &c->m;
  out->l1_hits = perfc_counter_value(m->l1_hits);
  out->l1_misses = perfc_counter_value(m->l1_misses);
  out->l2_hits = perfc_counter_value(m->l2_hits);
  out->l2_misses = perfc_counter_value(m->l2_misses);
  out->negative_hits = perfc_counter_value(m->negative_hits);
  out->loads = perfc_counter_value(m->loads);
  out->load_errors = perfc_counter_value(m->load_errors);
  out->singleflight_shared = perfc_counter_value(m->shared);
  out->l2_errors = perfc_counter_value(m->l2_errors);
  out->stale_fills_refused = perfc_counter_value(m->stale_refused);
  out->invalidations = perfc_counter_value(m->invalidations);
  out->remote_invalidations = perfc_counter_value(m->remote_invalidations);
  out->delete_retries = perfc_counter_value(m->delete_retries);
  out->bloom_rejects = perfc_counter_value(m->bloom_rejects);
  out->l1_bypassed = perfc_counter_value(m->l1_bypassed);
}
