/*
 * ratelimit_redis.c — perfc/ratelimit.h's store in Redis: the same GCRA
 * as guard/ratelimit.c's local buckets, run by one Lua script on Redis's
 * clock so every replica takes from one bucket.
 *
 * Room: runtime/src/data (libperfc-data: hiredis through the blocking
 * pool, data/redis.c's perfc__redis_pipeline).
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
  pthread_mutex_init(&r->mu, NULL);
  r->prefix_len = strlen(o.key_prefix);
  memcpy(r->prefix, o.key_prefix, r->prefix_len + 1);
  r->store = (perfc_ratelimit_store){.self = r, .take = take};
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
}

void perfc_ratelimit_redis_free(perfc_ratelimit_redis *r) {
  if (r == NULL)
    return;
  perfc_redis_pool_free(r->pool);
  pthread_mutex_destroy(&r->mu);
  free(r);
}
