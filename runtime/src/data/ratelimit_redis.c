/*
 * ratelimit_redis.c — perfc/ratelimit.h's store in Redis: the same GCRA
 * as guard/ratelimit.c's local buckets, run by one Lua script on Redis's
 * clock so every replica takes from one bucket.
 *
 * Room: runtime/src/data (libperfc-data: hiredis through the blocking
 * pool, data/redis.c's perfc__redis_pipeline, for take(); hiredis's
 * redisAsyncContext on perfc's loops, perfc/redis_async.h, for
 * take_async(), which the limiter uses on the h2 loops so a decision
 * holds no thread).
 *
 * The asynchronous path keeps the pool's failure behaviour itself: the
 * async client reconnects at once to a server that accepts connections
 * and never answers (a stopped Redis), so after a failed decision (timeout,
 * connection lost) this store refuses at once for a backoff (backoff_min_ms
 * doubling to backoff_max_ms), except one probe per backoff period, as the
 * pool does; the limiter's local fallback decides meanwhile.
 *
 * The bucket is one string key holding the theoretical arrival time `tat`
 * in microseconds of Redis's TIME. A call is admitted when
 * max(tat, now) + interval - now <= tau, and then tat becomes
 * max(tat, now) + interval, written with an expiry of the time the bucket
 * takes to fill again (a full bucket is no key at all: memory is spent only
 * on keys that are limiting). Doubles hold microsecond times exactly
 * (2^53 µs is 285 years), and Lua 5.1 would print a 16-digit number in
 * exponent form, so the script writes tat with %d.
 */
#include "perfc/ratelimit_redis.h"
#include "core/error_internal.h"
#include "data/redis_internal.h"
#include "perfc/loop.h"
#include "perfc/redis_async.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char GCRA_LUA[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local interval = tonumber(ARGV[1])\n"
    "local tau = tonumber(ARGV[2])\n"
    "local tat = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "if tat == nil or tat < now then tat = now end\n"
    "local nxt = tat + interval\n"
    "if nxt - now > tau then return {0, nxt - now - tau} end\n"
    "redis.call('SET', KEYS[1], string.format('%d', nxt), 'PX',\n"
    "           string.format('%d', math.floor((nxt - now) / 1000) + 1))\n"
    "return {1, 0}\n";

#define PREFIX_MAX 128

struct perfc_ratelimit_redis {
  perfc_redis_pool *pool;
  perfc_ratelimit_store store;
  char prefix[PREFIX_MAX + 1];
  size_t prefix_len;
  /* The script's SHA1 as SCRIPT LOAD returned it; `sha_ok` (release/
   * acquire) says it is there. Written under `mu` only. */
  pthread_mutex_t mu;
  char sha[41];
  atomic_int sha_ok;
  atomic_uint_fast64_t decisions, errors, loads;
  /* take_async(): the loops' client (lazy: it connects per loop at the
   * first decision there), and its backoff after a failure: no command
   * before until_ms unless this caller wins the probe. */
  perfc_redis_async *ra;
  int64_t backoff_min_ms, backoff_max_ms;
  _Atomic int64_t until_ms, backoff_ms;
  atomic_uint_fast64_t pending;
};

void perfc_ratelimit_redis_opts_init(perfc_ratelimit_redis_opts *o) {
  memset(o, 0, sizeof *o);
  o->timeout_ms = PERFC_DEFAULT_RATELIMIT_REDIS_TIMEOUT_MS;
  o->key_prefix = PERFC_DEFAULT_RATELIMIT_REDIS_PREFIX;
}

/* SCRIPT LOAD, remembering the SHA. 0 or a negative error. */
static int load_script(perfc_ratelimit_redis *r) {
  const char *argv[] = {"SCRIPT", "LOAD", GCRA_LUA};
  size_t lens[] = {6, 4, sizeof GCRA_LUA - 1};
  perfc__redis_cmd cmd = {3, argv, lens};
  redisReply *rep = NULL;
  int rc = perfc__redis_pipeline(r->pool, &cmd, 1, &rep);
  if (rc != 0)
    return rc;
  atomic_fetch_add(&r->loads, 1);
  if (rep->type != REDIS_REPLY_STRING || rep->len != 40) {
    rc = perfc__fail(PERFC_EIO, "ratelimit redis: SCRIPT LOAD answered %.*s",
                     rep->type == REDIS_REPLY_ERROR ? (int)rep->len : 0,
                     rep->type == REDIS_REPLY_ERROR ? rep->str : "");
    freeReplyObject(rep);
    return rc;
  }
  pthread_mutex_lock(&r->mu);
  if (!atomic_load_explicit(&r->sha_ok, memory_order_relaxed)) {
    memcpy(r->sha, rep->str, 40);
    r->sha[40] = '\0';
    atomic_store_explicit(&r->sha_ok, 1, memory_order_release);
  }
  pthread_mutex_unlock(&r->mu);
  freeReplyObject(rep);
  return 0;
}

/* One EVALSHA. Returns 1/0 (the decision), 2 for NOSCRIPT, or a negative
 * error. */
static int eval(perfc_ratelimit_redis *r, const char *key, size_t len,
                const char *iv, const char *tau) {
  const char *argv[] = {"EVALSHA", r->sha, "1", key, iv, tau};
  size_t lens[] = {7, 40, 1, len, strlen(iv), strlen(tau)};
  perfc__redis_cmd cmd = {6, argv, lens};
  redisReply *rep = NULL;
  int rc = perfc__redis_pipeline(r->pool, &cmd, 1, &rep);
  if (rc != 0)
    return rc;
  if (rep->type == REDIS_REPLY_ERROR && rep->len >= 8 &&
      memcmp(rep->str, "NOSCRIPT", 8) == 0) {
    rc = 2;
  } else if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
             rep->element[0]->type == REDIS_REPLY_INTEGER) {
    rc = rep->element[0]->integer != 0;
  } else {
    rc = perfc__fail(PERFC_EIO, "ratelimit redis: EVALSHA answered %.*s",
                     rep->type == REDIS_REPLY_ERROR ? (int)rep->len : 0,
                     rep->type == REDIS_REPLY_ERROR ? rep->str : "");
  }
  freeReplyObject(rep);
  return rc;
}

static int take(void *self, const char *key, size_t len, int64_t interval_us,
                int64_t tau_us) {
  perfc_ratelimit_redis *r = self;
  char full[PREFIX_MAX + 512];
  char *k = full;
  size_t n = r->prefix_len + len;
  if (n > sizeof full && (k = malloc(n)) == NULL) {
    atomic_fetch_add(&r->errors, 1);
    return PERFC_ENOMEM;
  }
  memcpy(k, r->prefix, r->prefix_len);
  memcpy(k + r->prefix_len, key, len);
  char iv[24], tau[24];
  snprintf(iv, sizeof iv, "%lld", (long long)interval_us);
  snprintf(tau, sizeof tau, "%lld", (long long)tau_us);
  int rc = 0;
  if (!atomic_load_explicit(&r->sha_ok, memory_order_acquire))
    rc = load_script(r);
  if (rc == 0)
    rc = eval(r, k, n, iv, tau);
  /* Redis restarted (or SCRIPT FLUSH): load again and retry once. */
  if (rc == 2 && (rc = load_script(r)) == 0)
    rc = eval(r, k, n, iv, tau);
  if (rc == 2)
    rc = perfc__fail(PERFC_EIO, "ratelimit redis: NOSCRIPT after SCRIPT LOAD");
  if (k != full)
    free(k);
  atomic_fetch_add(rc < 0 ? &r->errors : &r->decisions, 1);
  return rc;
}

/* ---- take_async: on the calling loop ----------------------------------------- */

/* One decision in flight (malloc'd: it outlives the call that issued it
 * only until its callback, which frees it). */
typedef struct aop {
  perfc_ratelimit_redis *r;
  perfc_ratelimit_store_done_fn done;
  void *arg;
  int reloaded; /* NOSCRIPT answered once: SCRIPT LOAD and retry done */
  char iv[24], tau[24];
  size_t klen;
  char key[];
} aop;

/* A failed command (no reply, connection lost, refused): back off. */
static void backoff_fail(perfc_ratelimit_redis *r) {
  int64_t b = atomic_load_explicit(&r->backoff_ms, memory_order_relaxed);
  b = b == 0 ? r->backoff_min_ms
      : b * 2 > r->backoff_max_ms ? r->backoff_max_ms
                                  : b * 2;
  atomic_store_explicit(&r->backoff_ms, b, memory_order_relaxed);
  atomic_store_explicit(&r->until_ms, perfc_loop_now_ms() + b,
                        memory_order_release);
}

static void backoff_ok(perfc_ratelimit_redis *r) {
  if (atomic_load_explicit(&r->backoff_ms, memory_order_relaxed) != 0) {
    atomic_store_explicit(&r->backoff_ms, 0, memory_order_relaxed);
    atomic_store_explicit(&r->until_ms, 0, memory_order_release);
  }
}

/* Whether a command may go now: not backing off, or this caller took the
 * period's one probe (moving until_ms a period on, so the others wait). */
static int may_send(perfc_ratelimit_redis *r) {
  int64_t until = atomic_load_explicit(&r->until_ms, memory_order_acquire);
  if (until == 0)
    return 1;
  int64_t now = perfc_loop_now_ms();
  if (now < until)
    return 0;
  int64_t b = atomic_load_explicit(&r->backoff_ms, memory_order_relaxed);
  return atomic_compare_exchange_strong(&r->until_ms, &until, now + b);
}

static void aop_end(aop *op, int rc) {
  perfc_ratelimit_redis *r = op->r;
  atomic_fetch_add(rc < 0 ? &r->errors : &r->decisions, 1);
  atomic_fetch_sub(&r->pending, 1);
  perfc_ratelimit_store_done_fn done = op->done;
  void *arg = op->arg;
  free(op);
  done(rc, arg);
}

static int send_eval(aop *op);
static int send_load(aop *op);

static void on_load(int rc, const perfc_redis_reply *rep, void *ud) {
  aop *op = ud;
  perfc_ratelimit_redis *r = op->r;
  if (rc != 0) {
    if (rc == PERFC_ETIMEDOUT || rc == PERFC_EUNAVAILABLE)
      backoff_fail(r);
    aop_end(op, rc);
    return;
  }
  backoff_ok(r);
  atomic_fetch_add(&r->loads, 1);
  if (rep->type != PERFC_REDIS_REPLY_STRING || rep->len != 40) {
    aop_end(op, perfc__fail(PERFC_EIO, "ratelimit redis: SCRIPT LOAD answered %.*s",
                            rep->type == PERFC_REDIS_REPLY_ERROR ? (int)rep->len : 0,
                            rep->type == PERFC_REDIS_REPLY_ERROR ? rep->str : ""));
    return;
  }
  pthread_mutex_lock(&r->mu);
  memcpy(r->sha, rep->str, 40);
  r->sha[40] = '\0';
  atomic_store_explicit(&r->sha_ok, 1, memory_order_release);
  pthread_mutex_unlock(&r->mu);
  int src = send_eval(op);
  if (src != 0)
    aop_end(op, src);
}

static void on_eval(int rc, const perfc_redis_reply *rep, void *ud) {
  aop *op = ud;
  perfc_ratelimit_redis *r = op->r;
  if (rc != 0) {
    if (rc == PERFC_ETIMEDOUT || rc == PERFC_EUNAVAILABLE)
      backoff_fail(r);
    aop_end(op, rc);
    return;
  }
  backoff_ok(r);
  if (rep->type == PERFC_REDIS_REPLY_ERROR && rep->len >= 8 &&
      memcmp(rep->str, "NOSCRIPT", 8) == 0) {
    /* Redis restarted (or SCRIPT FLUSH): load again and retry once. */
    if (op->reloaded) {
      aop_end(op, perfc__fail(PERFC_EIO,
                              "ratelimit redis: NOSCRIPT after SCRIPT LOAD"));
      return;
    }
    op->reloaded = 1;
    int src = send_load(op);
    if (src != 0)
      aop_end(op, src);
    return;
  }
  if (rep->type == PERFC_REDIS_REPLY_ARRAY && rep->elements == 2 &&
      rep->element[0].type == PERFC_REDIS_REPLY_INTEGER) {
    aop_end(op, rep->element[0].integer != 0);
    return;
  }
  aop_end(op, perfc__fail(PERFC_EIO, "ratelimit redis: EVALSHA answered %.*s",
                          rep->type == PERFC_REDIS_REPLY_ERROR ? (int)rep->len : 0,
                          rep->type == PERFC_REDIS_REPLY_ERROR ? rep->str : ""));
}

static int send_load(aop *op) {
  const char *argv[] = {"SCRIPT", "LOAD", GCRA_LUA};
  size_t lens[] = {6, 4, sizeof GCRA_LUA - 1};
  return perfc_redis_async_command(op->r->ra, 3, argv, lens, on_load, op);
}

static int send_eval(aop *op) {
  perfc_ratelimit_redis *r = op->r;
  char sha[41];
  pthread_mutex_lock(&r->mu);
  memcpy(sha, r->sha, sizeof sha);
  pthread_mutex_unlock(&r->mu);
  const char *argv[] = {"EVALSHA", sha, "1", op->key, op->iv, op->tau};
  size_t lens[] = {7, 40, 1, op->klen, strlen(op->iv), strlen(op->tau)};
  return perfc_redis_async_command(r->ra, 6, argv, lens, on_eval, op);
}

static int take_async(void *self, const char *key, size_t len,
                      int64_t interval_us, int64_t tau_us,
                      perfc_ratelimit_store_done_fn done, void *arg) {
  perfc_ratelimit_redis *r = self;
  /* Off a loop the async client would hand the command to its own
   * thread: the caller may as well block (it has no loop to free). */
  if (r->ra == NULL || perfc_loop_current() == NULL)
    return PERFC_ESTATE;
  if (!may_send(r)) {
    atomic_fetch_add(&r->errors, 1);
    return perfc__fail(PERFC_EUNAVAILABLE,
                       "ratelimit redis: backing off after a failure");
  }
  aop *op = malloc(sizeof *op + r->prefix_len + len + 1);
  if (op == NULL) {
    atomic_fetch_add(&r->errors, 1);
    return perfc__fail(PERFC_ENOMEM, "ratelimit redis: out of memory");
  }
  op->r = r;
  op->done = done;
  op->arg = arg;
  op->reloaded = 0;
  snprintf(op->iv, sizeof op->iv, "%lld", (long long)interval_us);
  snprintf(op->tau, sizeof op->tau, "%lld", (long long)tau_us);
  memcpy(op->key, r->prefix, r->prefix_len);
  memcpy(op->key + r->prefix_len, key, len);
  op->klen = r->prefix_len + len;
  op->key[op->klen] = '\0';
  int rc = atomic_load_explicit(&r->sha_ok, memory_order_acquire)
               ? send_eval(op)
               : send_load(op);
  if (rc != 0) {
    /* Refused at once: no usable connection on this loop (reconnecting),
     * or too many in flight. */
    if (rc == PERFC_EUNAVAILABLE)
      backoff_fail(r);
    free(op);
    atomic_fetch_add(&r->errors, 1);
    return rc;
  }
  atomic_fetch_add(&r->pending, 1);
  return 0;
}

int perfc_ratelimit_redis_new(perfc_ratelimit_redis **out,
                              const perfc_ratelimit_redis_opts *opts) {
  if (out == NULL)
    return perfc__fail(PERFC_EINVAL, "ratelimit redis: NULL out");
  perfc_ratelimit_redis_opts o;
  perfc_ratelimit_redis_opts_init(&o);
  if (opts != NULL) {
    o = *opts;
    if (o.timeout_ms == 0)
      o.timeout_ms = PERFC_DEFAULT_RATELIMIT_REDIS_TIMEOUT_MS;
    if (o.key_prefix == NULL)
      o.key_prefix = PERFC_DEFAULT_RATELIMIT_REDIS_PREFIX;
  }
  if (o.timeout_ms < 1 || o.timeout_ms > 60000)
    return perfc__fail(PERFC_EINVAL,
                       "ratelimit redis: timeout_ms %lld is not in 1..60000",
                       (long long)o.timeout_ms);
  if (strlen(o.key_prefix) > PREFIX_MAX)
    return perfc__fail(PERFC_EINVAL,
                       "ratelimit redis: key_prefix longer than %d bytes",
                       PREFIX_MAX);
  perfc_redis_opts ro;
  perfc_redis_opts_init(&ro);
  if (o.redis != NULL)
    ro = *o.redis;
  if (ro.name == NULL)
    ro.name = "ratelimit";
  ro.connect_timeout_ms = ro.command_timeout_ms = ro.acquire_timeout_ms =
      o.timeout_ms;
  perfc_ratelimit_redis *r = calloc(1, sizeof *r);
  if (r == NULL)
    return perfc__fail(PERFC_ENOMEM, "ratelimit redis: out of memory");
  int rc = perfc_redis_pool_new(&r->pool, &ro);
  if (rc != 0) {
    free(r);
    return rc;
  }
  /* The loops' client: the pool's server, AUTH, Sentinel and bounds
   * (as the cache's own async client takes them), the decision's
   * timeout. Not for a Redis Cluster: the pool sends SCRIPT LOAD to every
   * master, the async client would send it to one (a keyless command),
   * so a cluster's decisions stay on the blocking path. */
  const perfc_redis_opts *po = perfc__redis_pool_opts(r->pool);
  if (po->n_cluster_nodes == 0) {
    perfc_redis_async_opts ao;
    perfc_redis_async_opts_init(&ao);
    ao.host = po->host;
    ao.port = po->port;
    ao.connect_timeout_ms = ao.command_timeout_ms = o.timeout_ms;
    ao.backoff_min_ms = po->backoff_min_ms;
    ao.backoff_max_ms = po->backoff_max_ms;
    ao.conns_per_loop = po->async_conns_per_loop;
    ao.name = po->name;
    ao.registry = po->registry;
    ao.sentinels = po->sentinels;
    ao.n_sentinels = po->n_sentinels;
    ao.master_name = po->master_name;
    ao.username = po->username;
    ao.password = po->password;
    ao.sentinel_password = po->sentinel_password;
    ao.sentinel_username = po->sentinel_username;
    rc = perfc_redis_async_new(&r->ra, &ao);
    if (rc != 0) {
      perfc_redis_pool_free(r->pool);
      free(r);
      return rc;
    }
    r->backoff_min_ms = ao.backoff_min_ms > 0 ? ao.backoff_min_ms
                                              : PERFC_DEFAULT_REDIS_BACKOFF_MIN_MS;
    r->backoff_max_ms = ao.backoff_max_ms > 0 ? ao.backoff_max_ms
                                              : PERFC_DEFAULT_REDIS_BACKOFF_MAX_MS;
    if (r->backoff_max_ms < r->backoff_min_ms)
      r->backoff_max_ms = r->backoff_min_ms;
  }
  pthread_mutex_init(&r->mu, NULL);
  r->prefix_len = strlen(o.key_prefix);
  memcpy(r->prefix, o.key_prefix, r->prefix_len + 1);
  r->store = (perfc_ratelimit_store){
      .self = r, .take = take, .take_async = take_async};
  *out = r;
  return 0;
}

const perfc_ratelimit_store *
perfc_ratelimit_redis_store(perfc_ratelimit_redis *r) {
  return r ? &r->store : NULL;
}

void perfc_ratelimit_redis_stats_get(perfc_ratelimit_redis *r,
                                     perfc_ratelimit_redis_stats *out) {
  memset(out, 0, sizeof *out);
  if (r == NULL)
    return;
  out->decisions = atomic_load(&r->decisions);
  out->errors = atomic_load(&r->errors);
  out->script_loads = atomic_load(&r->loads);
  out->pending = atomic_load(&r->pending);
}

void perfc_ratelimit_redis_free(perfc_ratelimit_redis *r) {
  if (r == NULL)
    return;
  /* Decisions in flight get PERFC_ESHUTDOWN on their loops first. */
  perfc_redis_async_free(r->ra);
  perfc_redis_pool_free(r->pool);
  pthread_mutex_destroy(&r->mu);
  free(r);
}
