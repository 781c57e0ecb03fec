/* test_cache_async.c — runtime/src/data/cache.c's miss on an event loop
 * (perfc_cache_get_or_load_async, issue #16 items 5 and 6) against a real
 * redis-server on loopback: one async load per key (callers on the loop and
 * blocking callers share it), fills of both levels on the loop, negative
 * caching, TTL jitter, the stale-fill race (L1 generation and Redis lease
 * fences), read-your-writes across single-flight loads, L1 trusted only
 * while the invalidation subscription is live, and reads while deletes are
 * pending. Each rule is the one tests/unit/test_cache.c checks on the
 * blocking path; here every lookup runs on a perfc_loop and the loader
 * completes from another thread, as a perfc/pg_async.h query's callback
 * would from the loop. */
#include <criterion/criterion.h>
#include <perfc/cache.h>
#include <perfc/loop.h>
#include <perfc/metrics.h>
#include <perfc/redis.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/redis_internal.h"
#include "redis_server.h"

static test_redis srv;
static perfc_loop *loop;
static pthread_t loop_thread;

static void *loop_main(void *ud) {
  (void)ud;
  perfc_loop_run(loop);
  return NULL;
}

static void up(void) {
  cr_assert_eq(tr_start(&srv), 0, "redis-server start");
  cr_assert_eq(perfc_loop_new(&loop), 0);
  cr_assert_eq(pthread_create(&loop_thread, NULL, loop_main, NULL), 0);
}

static void down(void) {
  perfc_loop_stop(loop);
  pthread_join(loop_thread, NULL);
  perfc_loop_free(loop);
  tr_stop(&srv);
}

TestSuite(cache_async, .init = up, .fini = down, .timeout = 120);

/* ---- a fake database whose loads complete off the loop ---- */

#define MAX_LOADS 64

typedef struct fake_db {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  char vals[16][32]; /* vals[i] is "key<i>"'s value; "" = does not exist */
  atomic_int loads;
  int fail;                   /* loads answer PERFC_EIO */
  int gated, started, released; /* hold a load after it read the row */
  pthread_t threads[MAX_LOADS]; /* each load's completion thread */
  int nthreads;
} fake_db;

static void db_init(fake_db *db) {
  memset(db, 0, sizeof *db);
  pthread_mutex_init(&db->mu, NULL);
  pthread_cond_init(&db->cv, NULL);
}

static void db_put(fake_db *db, int i, const char *v) {
  pthread_mutex_lock(&db->mu);
  snprintf(db->vals[i], sizeof db->vals[i], "%s", v);
  pthread_mutex_unlock(&db->mu);
}

static void db_release(fake_db *db) {
  pthread_mutex_lock(&db->mu);
  db->released = 1;
  db->gated = 0;
  pthread_cond_broadcast(&db->cv);
  pthread_mutex_unlock(&db->mu);
}

static void db_wait_started(fake_db *db) {
  pthread_mutex_lock(&db->mu);
  while (!db->started)
    pthread_cond_wait(&db->cv, &db->mu);
  pthread_mutex_unlock(&db->mu);
}

/* Joins every completion thread (before the test frees what they touch). */
static void db_join(fake_db *db) {
  for (int i = 0; i < db->nthreads; i++)
    pthread_join(db->threads[i], NULL);
  db->nthreads = 0;
}

/* Reads key's row as a query would: 0 with a malloc'd copy, PERFC_ENOENT,
 * or PERFC_EIO; when gated, says "started" and waits for the release. */
static int db_read(fake_db *db, const char *key, uint8_t **out, size_t *len) {
  int i = -1;
  if (sscanf(key, "key%d", &i) != 1 || i < 0 || i >= 16)
    i = -1;
  pthread_mutex_lock(&db->mu);
  char v[32] = "";
  if (i >= 0)
    memcpy(v, db->vals[i], sizeof v);
  int fail = db->fail;
  if (db->gated) {
    db->started = 1;
    pthread_cond_broadcast(&db->cv);
    while (!db->released)
      pthread_cond_wait(&db->cv, &db->mu);
  }
  pthread_mutex_unlock(&db->mu);
  if (fail)
    return PERFC_EIO;
  if (!v[0])
    return PERFC_ENOENT;
  *len = strlen(v);
  *out = (uint8_t *)strdup(v);
  return 0;
}

typedef struct load_job {
  fake_db *db;
  perfc_cache_load *load;
  char key[32];
} load_job;

static void *load_thread(void *p) {
  load_job *j = p;
  uint8_t *v = NULL;
  size_t n = 0;
  int rc = db_read(j->db, j->key, &v, &n);
  perfc_cache_load_done(j->load, rc, rc == 0 ? v : NULL, n);
  free(j);
  return NULL;
}

/* perfc_cache_async_loader_fn: the row is read on a thread of its own and
 * the load finished from there (never blocking the loop). */
static int async_loader(const char *key, perfc_cache_load *load, void *ud) {
  fake_db *db = ud;
  atomic_fetch_add(&db->loads, 1);
  load_job *j = calloc(1, sizeof *j);
  cr_assert_not_null(j);
  j->db = db;
  j->load = load;
  snprintf(j->key, sizeof j->key, "%s", key);
  pthread_mutex_lock(&db->mu);
  cr_assert_lt(db->nthreads, MAX_LOADS);
  cr_assert_eq(pthread_create(&db->threads[db->nthreads++], NULL, load_thread,
                              j),
               0);
  pthread_mutex_unlock(&db->mu);
  return 0;
}

/* A blocking loader over the same rows, for callers on threads. */
static int sync_loader(const char *key, uint8_t **out, size_t *out_len,
                       void *ud) {
  fake_db *db = ud;
  atomic_fetch_add(&db->loads, 1);
  return db_read(db, key, out, out_len);
}

/* ---- running lookups on the loop ---- */

typedef struct get_res {
  atomic_int done;
  int rc;
  char val[32];
} get_res;

typedef struct get_job {
  perfc_cache *c;
  fake_db *db;
  char key[32];
  int64_t ttl_ms, neg_ms;
  get_res *res;
  int started;
  atomic_int ran;
  perfc_loop_task *task;
} get_job;

static void on_result(int rc, const uint8_t *v, size_t n, void *ud) {
  get_res *r = ud;
  cr_assert_eq(perfc_loop_current(), loop, "answered off the caller's loop");
  r->rc = rc;
  if (rc == 0)
    snprintf(r->val, sizeof r->val, "%.*s", (int)n, (const char *)v);
  atomic_store(&r->done, 1);
}

static void get_job_run(void *ud) {
  get_job *j = ud;
  j->started = perfc_cache_get_or_load_async(
      j->c, j->key, j->ttl_ms, j->neg_ms, async_loader, j->db, on_result,
      j->res);
  atomic_store(&j->ran, 1);
}

/* Starts an async lookup of `key` on the loop; returns what the call
 * returned. `res` is answered later (or already). */
static int start_ttl(perfc_cache *c, fake_db *db, const char *key,
                     int64_t ttl, int64_t neg, get_res *res) {
  get_job j = {.c = c, .db = db, .ttl_ms = ttl, .neg_ms = neg, .res = res};
  snprintf(j.key, sizeof j.key, "%s", key);
  atomic_init(&res->done, 0);
  cr_assert_eq(perfc_loop_task_new(&j.task, loop, get_job_run, &j), 0);
  perfc_loop_task_post(j.task);
  for (int i = 0; i < 5000 && !atomic_load(&j.ran); i++)
    usleep(1000);
  cr_assert(atomic_load(&j.ran));
  perfc_loop_task_free(j.task);
  return j.started;
}

static int start(perfc_cache *c, fake_db *db, const char *key, get_res *res) {
  return start_ttl(c, db, key, 0, 0, res);
}

static int wait_res(get_res *r, int ms) {
  for (int i = 0; i < ms && !atomic_load(&r->done); i++)
    usleep(1000);
  return atomic_load(&r->done);
}

/* One async lookup to its answer; "" expects PERFC_ENOENT. */
static void expect(perfc_cache *c, fake_db *db, const char *key,
                   const char *want) {
  get_res r;
  cr_assert_eq(start(c, db, key, &r), 0);
  cr_assert(wait_res(&r, 5000), "%s: no answer", key);
  if (!want[0]) {
    cr_assert_eq(r.rc, PERFC_ENOENT, "%s: rc %s", key, perfc_err_name(r.rc));
    return;
  }
  cr_assert_eq(r.rc, 0, "%s: rc %s", key, perfc_err_name(r.rc));
  cr_assert_str_eq(r.val, want, "%s", key);
}

/* ---- helpers ---- */

typedef struct env {
  perfc_metrics_registry *reg;
  perfc_redis_pool *pool;
  perfc_cache *cache;
} env;

static void env_open_retry(env *e, const char *name, int subscribe,
                           int64_t retry_ms) {
  memset(e, 0, sizeof *e);
  cr_assert_eq(perfc_metrics_registry_new(&e->reg), 0);
  perfc_redis_opts ro;
  perfc_redis_opts_init(&ro);
  ro.port = srv.port;
  ro.registry = e->reg;
  ro.name = name;
  ro.command_timeout_ms = 300;
  ro.backoff_min_ms = 20;
  ro.backoff_max_ms = 100;
  cr_assert_eq(perfc_redis_pool_new(&e->pool, &ro), 0);
  perfc_cache_opts co;
  perfc_cache_opts_init(&co);
  co.name = name;
  co.redis = e->pool;
  co.registry = e->reg;
  co.no_subscribe = !subscribe;
  co.retry_ms = retry_ms;
  co.retry_max_ms = retry_ms * 5;
  cr_assert_eq(perfc_cache_new(&e->cache, &co), 0);
  if (subscribe)
    cr_assert_eq(perfc_cache_wait_subscribed(e->cache, 5000), 0);
}

static void env_open(env *e, const char *name, int subscribe) {
  env_open_retry(e, name, subscribe, 20);
}

static void env_close(env *e) {
  perfc_cache_free(e->cache);
  perfc_redis_pool_free(e->pool);
  perfc_metrics_registry_free(e->reg);
}

static perfc_cache_stats stats(perfc_cache *c) {
  perfc_cache_stats st;
  perfc_cache_stats_get(c, &st);
  return st;
}

/* Redis's raw value of `key` ("" when absent). */
static void redis_raw(perfc_redis_pool *p, const char *key, char *buf,
                      size_t cap) {
  uint8_t *v = NULL;
  size_t n = 0;
  buf[0] = 0;
  if (perfc_redis_get(p, key, &v, &n) == 0) {
    snprintf(buf, cap, "%.*s", (int)n, (const char *)v);
    free(v);
  }
}

static long long pttl(perfc_redis_pool *p, const char *key) {
  const char *argv[] = {"PTTL", key};
  size_t argvlen[] = {4, strlen(key)};
  perfc__redis_cmd cmd = {2, argv, argvlen};
  redisReply *r;
  cr_assert_eq(perfc__redis_pipeline(p, &cmd, 1, &r), 0);
  long long v = r->type == REDIS_REPLY_INTEGER ? r->integer : -100;
  freeReplyObject(r);
  return v;
}

static int redis_has_lease(perfc_redis_pool *p, const char *key) {
  char lk[64], raw[64];
  snprintf(lk, sizeof lk, "perfc:lease:%s", key);
  redis_raw(p, lk, raw, sizeof raw);
  return raw[0] != 0;
}

static int l1_has(perfc_cache *c, const char *key) {
  uint8_t buf[64];
  size_t n;
  return perfc_l1cache_get_into(perfc_cache_l1(c), key, buf, sizeof buf, &n,
                                NULL) == 0;
}

/* ---- tests ---- */

Test(cache_async, miss_loads_once_and_fills_both_levels_on_the_loop) {
  fake_db db;
  db_init(&db);
  db_put(&db, 1, "one");
  env e;
  env_open(&e, "a_fill", 0);
  /* Off a loop the async path refuses, and says so. */
  get_res r;
  cr_assert_eq(perfc_cache_get_or_load_async(e.cache, "key1", 0, 0,
                                             async_loader, &db, on_result, &r),
               PERFC_ESTATE);
  cr_assert_eq(perfc_cache_async_usable(e.cache), 0);

  expect(e.cache, &db, "key1", "one");
  cr_assert_eq(atomic_load(&db.loads), 1);
  char raw[64];
  redis_raw(e.pool, "key1", raw, sizeof raw);
  cr_assert_str_eq(raw, "vone", "Redis not filled with the tagged value");
  cr_assert(l1_has(e.cache, "key1"));
  cr_assert(!redis_has_lease(e.pool, "key1"), "the lease was left behind");
  /* Then from L1 (answered inside the call), with no load. */
  expect(e.cache, &db, "key1", "one");
  cr_assert_eq(atomic_load(&db.loads), 1);
  perfc_cache_stats st = stats(e.cache);
  cr_assert_eq(st.loads, 1);
  cr_assert_eq(st.l1_hits, 1);
  cr_assert_eq(st.l1_misses, 1);
  cr_assert_eq(st.l2_misses, 1);

  /* A second instance: Redis answers on the loop, no load. */
  env e2;
  env_open(&e2, "a_fill2", 0);
  expect(e2.cache, &db, "key1", "one");
  cr_assert_eq(atomic_load(&db.loads), 1);
  cr_assert_eq(stats(e2.cache).l2_hits, 1);
  cr_assert(l1_has(e2.cache, "key1"), "an L2 hit did not fill L1");

  /* Not found: cached in both levels as the placeholder. */
  expect(e.cache, &db, "key2", "");
  expect(e.cache, &db, "key2", "");
  cr_assert_eq(atomic_load(&db.loads), 2);
  redis_raw(e.pool, "key2", raw, sizeof raw);
  cr_assert_str_eq(raw, "n");
  expect(e2.cache, &db, "key2", "");
  cr_assert_eq(atomic_load(&db.loads), 2);
  cr_assert_eq(stats(e2.cache).negative_hits, 1);

  /* A failing load: returned, nothing cached, the next call loads again. */
  db.fail = 1;
  get_res f;
  cr_assert_eq(start(e.cache, &db, "key3", &f), 0);
  cr_assert(wait_res(&f, 5000));
  cr_assert_eq(f.rc, PERFC_EIO);
  cr_assert_eq(start(e.cache, &db, "key3", &f), 0);
  cr_assert(wait_res(&f, 5000));
  cr_assert_eq(f.rc, PERFC_EIO);
  cr_assert_eq(atomic_load(&db.loads), 4);
  cr_assert_eq(stats(e.cache).load_errors, 2);
  redis_raw(e.pool, "key3", raw, sizeof raw);
  cr_assert_str_eq(raw, "");
  db_join(&db);
  env_close(&e2);
  env_close(&e);
}

/* One load per key: lookups on the loop and blocking callers on threads
 * that arrive while it runs all get its value. */
typedef struct sync_get {
  perfc_cache *c;
  fake_db *db;
  int rc;
  char val[32];
} sync_get;

static void *sync_get_main(void *p) {
  sync_get *g = p;
  uint8_t *v = NULL;
  size_t n = 0;
  g->rc = perfc_cache_get_or_load(g->c, "key5", sync_loader, g->db, &v, &n);
  if (g->rc == 0) {
    snprintf(g->val, sizeof g->val, "%.*s", (int)n, (const char *)v);
    free(v);
  }
  return NULL;
}

Test(cache_async, single_flight_shared_by_loop_and_blocking_callers) {
  fake_db db;
  db_init(&db);
  db_put(&db, 5, "five");
  env e;
  env_open(&e, "a_flight", 0);
  db.gated = 1;
  enum { NL = 8, NT = 3 };
  get_res r[NL];
  cr_assert_eq(start(e.cache, &db, "key5", &r[0]), 0);
  db_wait_started(&db);
  for (int i = 1; i < NL; i++)
    cr_assert_eq(start(e.cache, &db, "key5", &r[i]), 0);
  sync_get g[NT];
  pthread_t t[NT];
  for (int i = 0; i < NT; i++) {
    g[i] = (sync_get){e.cache, &db, -1, ""};
    pthread_create(&t[i], NULL, sync_get_main, &g[i]);
  }
  /* Everyone is waiting on the one load (the blocking callers counted
   * their L1 miss before joining). */
  for (int i = 0; i < 500 && stats(e.cache).l1_misses < NL + NT; i++)
    tr_sleep_ms(5);
  tr_sleep_ms(50);
  for (int i = 0; i < NL; i++)
    cr_assert_not(atomic_load(&r[i].done), "answered before the load ended");
  db_release(&db);
  for (int i = 0; i < NL; i++) {
    cr_assert(wait_res(&r[i], 5000));
    cr_assert_eq(r[i].rc, 0);
    cr_assert_str_eq(r[i].val, "five");
  }
  for (int i = 0; i < NT; i++) {
    pthread_join(t[i], NULL);
    cr_assert_eq(g[i].rc, 0);
    cr_assert_str_eq(g[i].val, "five");
  }
  cr_assert_eq(atomic_load(&db.loads), 1);
  cr_assert_eq(stats(e.cache).singleflight_shared, NL + NT - 1);

  /* And a loop caller joins a blocking caller's load. */
  db.gated = 1;
  db.started = db.released = 0;
  db_put(&db, 5, "FIVE");
  const char *k[] = {"key5"};
  cr_assert_eq(perfc_cache_invalidate(e.cache, k, 1), 0);
  sync_get lead = {e.cache, &db, -1, ""};
  pthread_t lt;
  pthread_create(&lt, NULL, sync_get_main, &lead);
  db_wait_started(&db);
  get_res w;
  cr_assert_eq(start(e.cache, &db, "key5", &w), 0);
  tr_sleep_ms(50);
  cr_assert_not(atomic_load(&w.done));
  db_release(&db);
  pthread_join(lt, NULL);
  cr_assert(wait_res(&w, 5000));
  cr_assert_eq(w.rc, 0);
  cr_assert_str_eq(w.val, "FIVE");
  cr_assert_eq(atomic_load(&db.loads), 2);
  db_join(&db);
  env_close(&e);
}

/* Per-call TTLs, negative caching off, and jitter on the fills made from
 * the loop (Redis PTTLs spread within ± the jitter). */
Test(cache_async, ttls_negative_off_and_jitter_on_the_loop) {
  fake_db db;
  db_init(&db);
  db_put(&db, 1, "one");
  env e;
  env_open(&e, "a_ttl", 0);
  get_res r;
  /* A value for 300 ms. */
  cr_assert_eq(start_ttl(e.cache, &db, "key1", 300, 0, &r), 0);
  cr_assert(wait_res(&r, 5000));
  cr_assert_eq(r.rc, 0);
  char raw[64];
  redis_raw(e.pool, "key1", raw, sizeof raw);
  cr_assert_str_eq(raw, "vone");
  tr_sleep_ms(500);
  redis_raw(e.pool, "key1", raw, sizeof raw);
  cr_assert_str_eq(raw, "", "L2 kept the cache's TTL");
  /* Not found, not cached. */
  for (int i = 0; i < 2; i++) {
    cr_assert_eq(start_ttl(e.cache, &db, "key3", 0, PERFC_CACHE_TTL_NONE, &r),
                 0);
    cr_assert(wait_res(&r, 5000));
    cr_assert_eq(r.rc, PERFC_ENOENT);
  }
  cr_assert_eq(atomic_load(&db.loads), 3);
  redis_raw(e.pool, "key3", raw, sizeof raw);
  cr_assert_str_eq(raw, "");
  cr_assert_eq(start_ttl(e.cache, &db, "key1", -5, 0, &r), PERFC_EINVAL);

  /* 40 keys filled from the loop with a 100 s TTL: the default jitter is
   * ± 5%, so the PTTLs spread over [95 s, 105 s] and are not all equal. */
  long min = 1L << 40, max = 0;
  for (int i = 0; i < 40; i++) {
    char key[32];
    snprintf(key, sizeof key, "key1:%d", i); /* no row: negative entries */
    cr_assert_eq(start_ttl(e.cache, &db, key, 100000, 100000, &r), 0);
    cr_assert(wait_res(&r, 5000));
    long long ms = pttl(e.pool, key);
    if (ms < min)
      min = ms;
    if (ms > max)
      max = ms;
  }
  cr_assert_geq(min, 95000 - 2000, "PTTL %ld below the jitter range", min);
  cr_assert_leq(max, 105000, "PTTL %ld above the jitter range", max);
  cr_assert_gt(max - min, 500, "no jitter: PTTLs %ld..%ld", min, max);
  db_join(&db);
  env_close(&e);
}

/* The stale-fill race on the loop: a load reads "old" and is held; the
 * write commits "new" and invalidates; the load then ends. Its value may
 * answer its own callers but must go into neither level. */
static void force_race(perfc_cache *reader, perfc_cache *inval, fake_db *db) {
  db_put(db, 9, "old");
  db->gated = 1;
  db->started = db->released = 0;
  get_res r;
  cr_assert_eq(start(reader, db, "key9", &r), 0);
  db_wait_started(db);
  db_put(db, 9, "new");
  const char *k[] = {"key9"};
  cr_assert_eq(perfc_cache_invalidate(inval, k, 1), 0);
  db_release(db);
  cr_assert(wait_res(&r, 5000));
  cr_assert_eq(r.rc, 0);
  cr_assert_str_eq(r.val, "old");
  db_join(db);
}

Test(cache_async, stale_fill_race_same_process) {
  fake_db db;
  db_init(&db);
  env e;
  env_open(&e, "a_race1", 0);
  force_race(e.cache, e.cache, &db);
  cr_assert_not(l1_has(e.cache, "key9"), "stale value filled L1");
  char raw[64];
  redis_raw(e.pool, "key9", raw, sizeof raw);
  cr_assert_str_eq(raw, "", "stale value filled Redis");
  cr_assert_geq(stats(e.cache).stale_fills_refused, 1);
  expect(e.cache, &db, "key9", "new");
  db_join(&db);
  env_close(&e);
}

Test(cache_async, stale_fill_race_other_process_redis_lease) {
  /* The invalidating instance has no pub/sub link to the reader: only the
   * Redis lease stops the fill (the reader's L1 generation never moves). */
  fake_db db;
  db_init(&db);
  env r, w;
  env_open(&r, "a_race2r", 0);
  env_open(&w, "a_race2w", 0);
  force_race(r.cache, w.cache, &db);
  char raw[64];
  redis_raw(r.pool, "key9", raw, sizeof raw);
  cr_assert_str_eq(raw, "", "stale value filled Redis");
  cr_assert_not(l1_has(r.cache, "key9"), "lost lease must keep L1 unfilled");
  cr_assert_eq(stats(r.cache).stale_fills_refused, 1);
  expect(w.cache, &db, "key9", "new");
  db_join(&db);
  env_close(&w);
  env_close(&r);
}

/* Read-your-writes across single-flight loads (issue #13 item 7) on the
 * loop: R1's load reads "old" and is held; the write commits "new" and
 * invalidates; R2 begins after that and must not join R1's flight: it
 * loads on its own and answers "new" while R1 is still held. */
Test(cache_async, read_after_invalidation_never_joins_older_flight) {
  fake_db db;
  db_init(&db);
  db_put(&db, 4, "old");
  env e;
  env_open(&e, "a_ryw", 0);
  db.gated = 1;
  get_res r1, r2;
  cr_assert_eq(start(e.cache, &db, "key4", &r1), 0);
  db_wait_started(&db);
  pthread_mutex_lock(&db.mu);
  db.gated = 0; /* later loads do not wait */
  snprintf(db.vals[4], sizeof db.vals[4], "new");
  pthread_mutex_unlock(&db.mu);
  const char *keys[] = {"key4"};
  cr_assert_eq(perfc_cache_invalidate(e.cache, keys, 1), 0);
  cr_assert_eq(start(e.cache, &db, "key4", &r2), 0);
  int r2_done = wait_res(&r2, 3000);
  int r1_early = atomic_load(&r1.done);
  db_release(&db);
  cr_assert(wait_res(&r1, 5000));
  cr_assert(r2_done, "a read after the invalidation joined the older load");
  cr_assert_not(r1_early);
  cr_assert_eq(r2.rc, 0);
  cr_assert_str_eq(r2.val, "new");
  cr_assert_eq(r1.rc, 0);
  cr_assert_str_eq(r1.val, "old"); /* began before the write */
  cr_assert_eq(atomic_load(&db.loads), 2);
  expect(e.cache, &db, "key4", "new"); /* R1's fills were fenced */
  char raw[64];
  redis_raw(e.pool, "key4", raw, sizeof raw);
  cr_assert_str_eq(raw, "vnew");
  db_join(&db);
  env_close(&e);
}

/* L1 is trusted only while the invalidation subscription is live: with
 * Redis gone, lookups on the loop bypass L1 and fill nothing into it, a
 * row changed elsewhere is seen at once; once resubscribed, L1 serves
 * again. */
Test(cache_async, l1_bypassed_while_unsubscribed) {
  fake_db db;
  db_init(&db);
  db_put(&db, 6, "v1");
  env e;
  env_open(&e, "a_bypass", 1);
  expect(e.cache, &db, "key6", "v1");
  expect(e.cache, &db, "key6", "v1");
  cr_assert_eq(atomic_load(&db.loads), 1);
  tr_kill(&srv);
  int bypassing = 0;
  for (int i = 0; i < 600 && !bypassing; i++) {
    uint64_t before = stats(e.cache).l1_bypassed;
    get_res r;
    cr_assert_eq(start(e.cache, &db, "key6", &r), 0);
    cr_assert(wait_res(&r, 5000));
    bypassing = stats(e.cache).l1_bypassed > before;
    if (!bypassing)
      tr_sleep_ms(5);
  }
  cr_assert(bypassing, "L1 still trusted without the subscription");
  db_put(&db, 6, "v2"); /* another instance's write we cannot hear of */
  expect(e.cache, &db, "key6", "v2");
  cr_assert_not(l1_has(e.cache, "key6"), "L1 filled while unsubscribed");
  cr_assert_gt(stats(e.cache).l2_errors, 0);
  cr_assert_eq(tr_restart(&srv), 0);
  cr_assert_eq(perfc_cache_wait_subscribed(e.cache, 5000), 0);
  int loads = atomic_load(&db.loads);
  expect(e.cache, &db, "key6", "v2");
  expect(e.cache, &db, "key6", "v2");
  cr_assert_eq(atomic_load(&db.loads), loads + 1, "L1 not used again");
  cr_assert(l1_has(e.cache, "key6"));
  db_join(&db);
  env_close(&e);
}

/* Pending invalidations (Redis frozen during the delete): lookups on the
 * loop neither read Redis (it still holds the old value) nor fill it; the
 * drain delivers the delete, after which Redis is used again. */
Test(cache_async, pending_deletes_keep_the_loop_off_redis) {
  fake_db db;
  db_init(&db);
  db_put(&db, 8, "old");
  env e;
  /* The background retry waits a minute: only the drain delivers. */
  env_open_retry(&e, "a_pending", 0, 60000);
  expect(e.cache, &db, "key8", "old");
  char raw[64];
  redis_raw(e.pool, "key8", raw, sizeof raw);
  cr_assert_str_eq(raw, "vold");
  kill(srv.pid, SIGSTOP);
  db_put(&db, 8, "new");
  const char *keys[] = {"key8"};
  cr_assert_eq(perfc_cache_invalidate(e.cache, keys, 1), 0);
  cr_assert_eq(perfc_cache_pending_invalidations(e.cache), 1);
  kill(srv.pid, SIGCONT);
  /* The frozen server may still run the DEL it had received; whatever it
   * did, Redis now holds a stale value that only the queued delete may
   * remove. The loop must neither serve it nor overwrite it. */
  int set = -1;
  for (int i = 0; i < 100 && set != 0; i++) { /* past the pool's backoff */
    set = perfc_redis_set(e.pool, "key8",
                          (perfc_slice){(const uint8_t *)"vstale", 6}, 60000);
    if (set != 0)
      tr_sleep_ms(20);
  }
  cr_assert_eq(set, 0);
  int loads = atomic_load(&db.loads);
  expect(e.cache, &db, "key8", "new");
  cr_assert_eq(atomic_load(&db.loads), loads + 1);
  cr_assert_eq(perfc_cache_pending_invalidations(e.cache), 1);
  redis_raw(e.pool, "key8", raw, sizeof raw);
  cr_assert_str_eq(raw, "vstale", "filled Redis while a delete was pending");
  cr_assert_not(redis_has_lease(e.pool, "key8"), "took a lease while pending");
  cr_assert_eq(perfc_cache_drain(e.cache, 3000), 0);
  redis_raw(e.pool, "key8", raw, sizeof raw);
  cr_assert_str_eq(raw, "", "the old value is still in Redis");
  db_join(&db);
  env_close(&e);
}
