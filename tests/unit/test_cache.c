/* test_cache.c — runtime/src/data/cache.c: cache-aside over L1 and a real
 * redis-server on loopback. Loads, negative caching, single flight (64
 * threads, one load), Redis killed and restarted, background delete
 * retries, invalidation seen by another process, the stale-fill race
 * forced with a slow loader (L1 fence and Redis lease fence), batch get,
 * bloom filter, metrics. */
#include <criterion/criterion.h>
#include <perfc/cache.h>
#include <perfc/metrics.h>
#include <perfc/redis.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "redis_server.h"

static test_redis srv;

static void up(void) { cr_assert_eq(tr_start(&srv), 0, "redis-server start"); }
static void down(void) { tr_stop(&srv); }

TestSuite(cache, .init = up, .fini = down, .timeout = 120);

/* ---- a fake database the loaders read ---- */

typedef struct fake_db {
  pthread_mutex_t mu;
  char vals[16][32]; /* vals[i] is "key<i>"'s value; "" = does not exist */
  atomic_int loads;  /* single-key loader calls */
  atomic_int batch_loads;
  atomic_int batch_keys;
  int delay_ms;
  int fail; /* loader returns PERFC_EIO */
  /* Gate for the stale-fill race: the loader reads the value, then says
   * "started" and waits until released. */
  int gated;
  int started, released;
  pthread_cond_t cv;
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

static int key_index(const char *key) {
  int i = -1;
  if (sscanf(key, "key%d", &i) != 1 || i < 0 || i >= 16)
    return -1;
  return i;
}

static int loader(const char *key, uint8_t **out, size_t *out_len, void *ud) {
  fake_db *db = ud;
  atomic_fetch_add(&db->loads, 1);
  if (db->delay_ms)
    tr_sleep_ms(db->delay_ms);
  int i = key_index(key);
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
  *out_len = strlen(v);
  *out = (uint8_t *)strdup(v);
  return 0;
}

static int batch_loader(const char *const *keys, size_t n,
                        perfc_cache_value *out, void *ud) {
  fake_db *db = ud;
  atomic_fetch_add(&db->batch_loads, 1);
  atomic_fetch_add(&db->batch_keys, (int)n);
  for (size_t k = 0; k < n; k++) {
    int i = key_index(keys[k]);
    pthread_mutex_lock(&db->mu);
    if (i >= 0 && db->vals[i][0]) {
      out[k].found = 1;
      out[k].len = strlen(db->vals[i]);
      out[k].data = (uint8_t *)strdup(db->vals[i]);
    }
    pthread_mutex_unlock(&db->mu);
  }
  return 0;
}

/* ---- helpers ---- */

typedef struct env {
  perfc_metrics_registry *reg;
  perfc_redis_pool *pool;
  perfc_cache *cache;
} env;

static void env_open(env *e, const char *name, int with_redis, int subscribe) {
  memset(e, 0, sizeof *e);
  cr_assert_eq(perfc_metrics_registry_new(&e->reg), 0);
  if (with_redis) {
    perfc_redis_opts ro;
    perfc_redis_opts_init(&ro);
    ro.port = srv.port;
    ro.registry = e->reg;
    ro.name = name;
    ro.command_timeout_ms = 100;
    ro.backoff_min_ms = 20;
    ro.backoff_max_ms = 100;
    cr_assert_eq(perfc_redis_pool_new(&e->pool, &ro), 0);
  }
  perfc_cache_opts co;
  perfc_cache_opts_init(&co);
  co.name = name;
  co.redis = e->pool;
  co.registry = e->reg;
  co.no_subscribe = !subscribe;
  co.retry_ms = 20;
  co.retry_max_ms = 100;
  cr_assert_eq(perfc_cache_new(&e->cache, &co), 0);
  if (with_redis && subscribe)
    cr_assert_eq(perfc_cache_wait_subscribed(e->cache, 5000), 0);
}

static void env_close(env *e) {
  perfc_cache_free(e->cache);
  perfc_redis_pool_free(e->pool);
  perfc_metrics_registry_free(e->reg);
}

/* get_or_load and compare; "" expects PERFC_ENOENT. */
static void expect(perfc_cache *c, fake_db *db, const char *key,
                   const char *want) {
  uint8_t *v = NULL;
  size_t n = 0;
  int rc = perfc_cache_get_or_load(c, key, loader, db, &v, &n);
  if (!want[0]) {
    cr_assert_eq(rc, PERFC_ENOENT, "%s: rc %d", key, rc);
    return;
  }
  cr_assert_eq(rc, 0, "%s: rc %s", key, perfc_err_name(rc));
  cr_assert_eq(n, strlen(want));
  cr_assert_eq(memcmp(v, want, n), 0, "%s: got %.*s want %s", key, (int)n,
               (const char *)v, want);
  free(v);
}

static perfc_cache_stats stats(perfc_cache *c) {
  perfc_cache_stats st;
  perfc_cache_stats_get(c, &st);
  return st;
}

static int redis_has(perfc_redis_pool *p, const char *key) {
  uint8_t *v;
  size_t n;
  int rc = perfc_redis_get(p, key, &v, &n);
  if (rc == 0)
    free(v);
  return rc == 0;
}

/* ---- tests ---- */

Test(cache, l1_only_load_once_negative_and_errors) {
  fake_db db;
  db_init(&db);
  db_put(&db, 1, "one");
  env e;
  env_open(&e, "l1only", 0, 0);
  expect(e.cache, &db, "key1", "one");
  expect(e.cache, &db, "key1", "one");
  cr_assert_eq(atomic_load(&db.loads), 1);
  /* Not found is cached as a placeholder. */
  expect(e.cache, &db, "key2", "");
  expect(e.cache, &db, "key2", "");
  cr_assert_eq(atomic_load(&db.loads), 2);
  /* Load errors are returned and not cached. */
  db.fail = 1;
  uint8_t *v;
  size_t n;
  cr_assert_eq(perfc_cache_get_or_load(e.cache, "key3", loader, &db, &v, &n),
               PERFC_EIO);
  cr_assert_eq(perfc_cache_get_or_load(e.cache, "key3", loader, &db, &v, &n),
               PERFC_EIO);
  db.fail = 0;
  perfc_cache_stats st = stats(e.cache);
  cr_assert_eq(st.l1_hits, 2);
  cr_assert_eq(st.negative_hits, 1);
  cr_assert_eq(st.loads, 4);
  cr_assert_eq(st.load_errors, 2);
  cr_assert_eq(st.l2_errors, 0);
  /* Invalidation without Redis: L1 only. */
  db_put(&db, 1, "uno");
  const char *k[] = {"key1"};
  cr_assert_eq(perfc_cache_invalidate(e.cache, k, 1), 0);
  expect(e.cache, &db, "key1", "uno");
  env_close(&e);
}

/* perfc_cache_peek: L1 alone, never loading; a miss is not counted (the
 * full lookup that follows counts it), hits and cached "not found" are. */
Test(cache, peek_answers_from_l1_only) {
  fake_db db;
  db_init(&db);
  db_put(&db, 1, "one");
  env e;
  env_open(&e, "peek", 0, 0);
  uint8_t *v = NULL;
  size_t n = 0;
  cr_assert_eq(perfc_cache_peek(e.cache, "key1", &v, &n), 1, "not in L1 yet");
  cr_assert_eq(atomic_load(&db.loads), 0, "peek never loads");
  expect(e.cache, &db, "key1", "one");   /* loads and fills L1 */
  expect(e.cache, &db, "missing", "");  /* caches "not found" */
  cr_assert_eq(perfc_cache_peek(e.cache, "key1", &v, &n), 0);
  cr_assert_eq(n, 3);
  cr_assert_eq(memcmp(v, "one", 3), 0);
  free(v);
  cr_assert_eq(perfc_cache_peek(e.cache, "missing", &v, &n), PERFC_ENOENT);
  cr_assert_eq(perfc_cache_peek(NULL, "key1", &v, &n), PERFC_EINVAL);
  perfc_cache_stats st = stats(e.cache);
  cr_assert_eq(st.l1_hits, 2);
  cr_assert_eq(st.negative_hits, 1);
  cr_assert_eq(st.l1_misses, 2, "only the two full lookups' misses");
  cr_assert_eq(atomic_load(&db.loads), 2);
  env_close(&e);
}

Test(cache, second_instance_reads_redis_not_loader) {
  fake_db db;
  db_init(&db);
  db_put(&db, 1, "one");
  env a, b;
  env_open(&a, "l2a", 1, 0);
  env_open(&b, "l2b", 1, 0);
  expect(a.cache, &db, "key1", "one");
  expect(a.cache, &db, "key2", ""); /* negative placeholder in Redis too */
  cr_assert_eq(atomic_load(&db.loads), 2);
  expect(b.cache, &db, "key1", "one");
  expect(b.cache, &db, "key2", "");
  cr_assert_eq(atomic_load(&db.loads), 2, "b must be served by Redis");
  perfc_cache_stats st = stats(b.cache);
  cr_assert_eq(st.l2_hits, 2);
  cr_assert_eq(st.negative_hits, 1);
  /* The value is stored tagged; the lease is gone after the fill. */
  uint8_t *v;
  size_t n;
  cr_assert_eq(perfc_redis_get(a.pool, "key1", &v, &n), 0);
  cr_assert_eq(n, 4);
  cr_assert_eq(memcmp(v, "vone", 4), 0);
  free(v);
  cr_assert_not(redis_has(a.pool, "perfc:lease:key1"));
  env_close(&b);
  env_close(&a);
}

typedef struct sf_arg {
  perfc_cache *cache;
  fake_db *db;
  atomic_int *ok;
} sf_arg;

static void *sf_thread(void *p) {
  sf_arg *a = p;
  uint8_t *v;
  size_t n;
  if (perfc_cache_get_or_load(a->cache, "key5", loader, a->db, &v, &n) ==
      PERFC_ENOENT)
    atomic_fetch_add(a->ok, 1);
  return NULL;
}

Test(cache, single_flight_64_threads_one_load) {
  fake_db db;
  db_init(&db);
  db.delay_ms = 200; /* long enough that all 64 arrive during the load */
  env e;
  env_open(&e, "sf", 1, 0);
  atomic_int ok = 0;
  sf_arg a = {e.cache, &db, &ok};
  pthread_t t[64];
  for (int i = 0; i < 64; i++)
    pthread_create(&t[i], NULL, sf_thread, &a);
  for (int i = 0; i < 64; i++)
    pthread_join(t[i], NULL);
  cr_assert_eq(atomic_load(&ok), 64);
  cr_assert_eq(atomic_load(&db.loads), 1, "loads: %d", atomic_load(&db.loads));
  perfc_cache_stats st = stats(e.cache);
  cr_assert_eq(st.loads, 1);
  cr_assert_eq(st.singleflight_shared + st.l1_hits, 63);
  env_close(&e);
}

static double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

Test(cache, redis_down_served_by_loader_then_used_again) {
  fake_db db;
  db_init(&db);
  for (int i = 0; i < 16; i++)
    db_put(&db, i, "v");
  env e;
  env_open(&e, "down", 1, 1);
  expect(e.cache, &db, "key0", "v");
  tr_kill(&srv);
  /* Every call succeeds from the loader; none waits long. */
  double worst = 0;
  char key[16];
  for (int i = 1; i < 16; i++) {
    snprintf(key, sizeof key, "key%d", i);
    double t0 = mono();
    expect(e.cache, &db, key, "v");
    double dt = mono() - t0;
    if (dt > worst)
      worst = dt;
  }
  cr_assert_lt(worst, 0.3, "slowest call with Redis down: %.3fs", worst);
  perfc_cache_stats st = stats(e.cache);
  cr_assert_eq(st.loads, 16);
  cr_assert_geq(st.l2_errors, 15);
  /* The errors show in the metrics too. */
  char *text;
  size_t len;
  cr_assert_eq(perfc_metrics_registry_render(e.reg, &text, &len), 0);
  cr_assert(strstr(text, "perfc_cache_l2_errors_total{cache=\"down\"}"));
  cr_assert(strstr(text, "perfc_redis_errors_total{pool=\"down\"}"));
  free(text);
  /* Back: used again without a restart of anything of ours. */
  cr_assert_eq(tr_restart(&srv), 0);
  int filled = 0;
  for (int i = 0; i < 100 && !filled; i++) {
    perfc_l1cache_clear(perfc_cache_l1(e.cache));
    expect(e.cache, &db, "key1", "v");
    filled = redis_has(e.pool, "key1");
    if (!filled)
      tr_sleep_ms(20);
  }
  cr_assert(filled, "Redis not filled after restart");
  perfc_l1cache_clear(perfc_cache_l1(e.cache));
  int loads = atomic_load(&db.loads);
  expect(e.cache, &db, "key1", "v");
  cr_assert_eq(atomic_load(&db.loads), loads, "served from Redis again");
  /* The subscriber came back as well. */
  cr_assert_eq(perfc_cache_wait_subscribed(e.cache, 5000), 0);
  env_close(&e);
}

Test(cache, redis_hung_costs_one_timeout_not_one_per_call) {
  fake_db db;
  db_init(&db);
  for (int i = 0; i < 16; i++)
    db_put(&db, i, "v");
  env e;
  env_open(&e, "hung", 1, 0);
  expect(e.cache, &db, "key0", "v");
  kill(srv.pid, SIGSTOP);
  char key[16];
  int slow = 0;
  double t0 = mono();
  for (int i = 1; i < 16; i++) {
    snprintf(key, sizeof key, "key%d", i);
    double c0 = mono();
    expect(e.cache, &db, key, "v");
    if (mono() - c0 > 0.05)
      slow++;
  }
  double dt = mono() - t0;
  kill(srv.pid, SIGCONT);
  /* The first call waits for the command timeout (100 ms here); then the
   * pool refuses until its backoff ends, and the loader answers at once. */
  cr_assert_leq(slow, 2, "%d calls waited for a timeout", slow);
  cr_assert_lt(dt, 0.5, "15 calls took %.3fs", dt);
  cr_assert_geq(stats(e.cache).l2_errors, 15);
  env_close(&e);
}

Test(cache, failed_delete_is_retried_in_background) {
  fake_db db;
  db_init(&db);
  db_put(&db, 1, "old");
  env e;
  env_open(&e, "retry", 1, 0);
  expect(e.cache, &db, "key1", "old");
  cr_assert(redis_has(e.pool, "key1"));
  /* A frozen server: the DEL times out (and its retries too). */
  kill(srv.pid, SIGSTOP);
  db_put(&db, 1, "new");
  const char *k[] = {"key1"};
  double t0 = mono();
  cr_assert_eq(perfc_cache_invalidate(e.cache, k, 1), 0);
  cr_assert_lt(mono() - t0, 1.0);
  cr_assert_eq(perfc_cache_pending_invalidations(e.cache), 1);
  /* Reads skip Redis while a delete is pending, so the old value in Redis
   * is not served: this comes from the loader. */
  expect(e.cache, &db, "key1", "new");
  kill(srv.pid, SIGCONT);
  for (int i = 0; i < 200 && perfc_cache_pending_invalidations(e.cache); i++)
    tr_sleep_ms(20);
  cr_assert_eq(perfc_cache_pending_invalidations(e.cache), 0);
  /* The background retry deleted the stale Redis value. */
  cr_assert(!redis_has(e.pool, "key1"));
  cr_assert_geq(stats(e.cache).delete_retries, 1);
  perfc_l1cache_clear(perfc_cache_l1(e.cache));
  expect(e.cache, &db, "key1", "new");
  env_close(&e);
}

Test(cache, invalidation_reaches_another_process) {
  int ready[2], go[2];
  cr_assert_eq(pipe(ready), 0);
  cr_assert_eq(pipe(go), 0);
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) {
    /* The other instance: its own registry, pool and cache. No criterion
     * asserts here: the exit code is the verdict. */
    close(ready[0]);
    close(go[1]);
    fake_db db;
    db_init(&db);
    db_put(&db, 7, "seven");
    perfc_metrics_registry *reg;
    perfc_redis_pool *pool;
    perfc_cache *cache;
    perfc_redis_opts ro;
    perfc_redis_opts_init(&ro);
    ro.port = srv.port;
    ro.registry = NULL;
    if (perfc_metrics_registry_new(&reg) != 0)
      _exit(10);
    ro.registry = reg;
    if (perfc_redis_pool_new(&pool, &ro) != 0)
      _exit(11);
    perfc_cache_opts co;
    perfc_cache_opts_init(&co);
    co.name = "xproc";
    co.redis = pool;
    co.registry = reg;
    if (perfc_cache_new(&cache, &co) != 0)
      _exit(12);
    if (perfc_cache_wait_subscribed(cache, 5000) != 0)
      _exit(13);
    uint8_t *v;
    size_t n;
    if (perfc_cache_get_or_load(cache, "key7", loader, &db, &v, &n) != 0)
      _exit(14);
    free(v);
    perfc_l1cache *l1 = perfc_cache_l1(cache);
    uint8_t buf[64];
    if (perfc_l1cache_get_into(l1, "key7", buf, sizeof buf, &n, NULL) != 0)
      _exit(15);
    if (write(ready[1], "R", 1) != 1)
      _exit(16);
    int code = 1;
    for (int i = 0; i < 250; i++) {
      if (perfc_l1cache_get_into(l1, "key7", buf, sizeof buf, &n, NULL) ==
          PERFC_ENOENT) {
        code = 0;
        break;
      }
      tr_sleep_ms(20);
    }
    perfc_cache_stats st;
    perfc_cache_stats_get(cache, &st);
    if (code == 0 && st.remote_invalidations != 1)
      code = 2;
    perfc_cache_free(cache);
    perfc_redis_pool_free(pool);
    perfc_metrics_registry_free(reg);
    _exit(code);
  }
  close(ready[1]);
  close(go[0]);
  struct pollfd pfd = {ready[0], POLLIN, 0};
  cr_assert_eq(poll(&pfd, 1, 10000), 1, "child never got ready");
  char ch;
  cr_assert_eq(read(ready[0], &ch, 1), 1, "child failed before ready");
  env e;
  env_open(&e, "xproc", 1, 0);
  const char *k[] = {"key7"};
  cr_assert_eq(perfc_cache_invalidate(e.cache, k, 1), 0);
  int status = -1;
  for (int i = 0; i < 300; i++) {
    if (waitpid(pid, &status, WNOHANG) == pid)
      break;
    tr_sleep_ms(20);
  }
  if (status == -1) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  cr_assert(WIFEXITED(status), "child did not exit");
  cr_assert_eq(WEXITSTATUS(status), 0, "child exit %d", WEXITSTATUS(status));
  cr_assert(!redis_has(e.pool, "key7"));
  close(ready[0]);
  close(go[1]);
  env_close(&e);
}

typedef struct race_arg {
  perfc_cache *cache;
  fake_db *db;
  int rc;
  char got[32];
} race_arg;

static void *race_reader(void *p) {
  race_arg *a = p;
  uint8_t *v = NULL;
  size_t n = 0;
  a->rc = perfc_cache_get_or_load(a->cache, "key9", loader, a->db, &v, &n);
  if (a->rc == 0) {
    snprintf(a->got, sizeof a->got, "%.*s", (int)n, (const char *)v);
    free(v);
  }
  return NULL;
}

/* Starts a load of key9 through `reader`, lets it read "old" from the
 * database and hold it; runs `write` (the commit plus invalidation) via
 * `inval`; then lets the load finish. */
static void force_race(perfc_cache *reader, perfc_cache *inval, fake_db *db) {
  db_put(db, 9, "old");
  db->gated = 1;
  db->started = db->released = 0;
  race_arg a = {reader, db, -1, ""};
  pthread_t t;
  pthread_create(&t, NULL, race_reader, &a);
  pthread_mutex_lock(&db->mu);
  while (!db->started)
    pthread_cond_wait(&db->cv, &db->mu);
  pthread_mutex_unlock(&db->mu);
  /* The write: commit, then invalidate, while the load holds "old". */
  db_put(db, 9, "new");
  const char *k[] = {"key9"};
  cr_assert_eq(perfc_cache_invalidate(inval, k, 1), 0);
  pthread_mutex_lock(&db->mu);
  db->released = 1;
  db->gated = 0;
  pthread_cond_broadcast(&db->cv);
  pthread_mutex_unlock(&db->mu);
  pthread_join(t, NULL);
  /* The racing reader gets what it read: a read concurrent with a write may
   * see either; what matters is what stays cached. */
  cr_assert_eq(a.rc, 0);
  cr_assert_str_eq(a.got, "old");
}

Test(cache, stale_fill_race_same_process) {
  fake_db db;
  db_init(&db);
  env e;
  env_open(&e, "race1", 1, 0);
  force_race(e.cache, e.cache, &db);
  uint8_t buf[64];
  size_t n;
  cr_assert_eq(perfc_l1cache_get_into(perfc_cache_l1(e.cache), "key9", buf,
                                      sizeof buf, &n, NULL),
               PERFC_ENOENT, "stale value filled L1 after the delete");
  cr_assert(!redis_has(e.pool, "key9"),
            "stale value filled Redis after the delete");
  cr_assert_geq(stats(e.cache).stale_fills_refused, 1);
  expect(e.cache, &db, "key9", "new");
  env_close(&e);
}

Test(cache, stale_fill_race_other_process_redis_lease) {
  /* The invalidating instance is another cache with no pub/sub link to the
   * reader, so only the Redis lease can stop the fill (the reader's L1
   * generation never moves). */
  fake_db db;
  db_init(&db);
  env r, w;
  env_open(&r, "race2r", 1, 0);
  env_open(&w, "race2w", 1, 0);
  force_race(r.cache, w.cache, &db);
  cr_assert(!redis_has(r.pool, "key9"),
            "stale value filled Redis after the delete");
  uint8_t buf[64];
  size_t n;
  cr_assert_eq(perfc_l1cache_get_into(perfc_cache_l1(r.cache), "key9", buf,
                                      sizeof buf, &n, NULL),
               PERFC_ENOENT, "lost lease must keep L1 unfilled too");
  cr_assert_geq(stats(r.cache).stale_fills_refused, 1);
  expect(w.cache, &db, "key9", "new");
  env_close(&w);
  env_close(&r);
}

Test(cache, batch_get_l1_then_mget_then_one_load) {
  fake_db db;
  db_init(&db);
  for (int i = 0; i < 6; i++) {
    char v[8];
    snprintf(v, sizeof v, "v%d", i);
    db_put(&db, i, v);
  }
  env a, b;
  env_open(&a, "batcha", 1, 0);
  env_open(&b, "batchb", 1, 0);
  expect(b.cache, &db, "key0", "v0"); /* in Redis (via b) */
  expect(b.cache, &db, "key1", "v1");
  expect(a.cache, &db, "key2", "v2"); /* in a's L1 and Redis */
  atomic_store(&db.loads, 0);
  const char *keys[] = {"key0", "key1", "key2", "key3", "key4", "key15"};
  perfc_cache_value out[6];
  cr_assert_eq(perfc_cache_get_many(a.cache, keys, 6, batch_loader, &db, out),
               0);
  const char *want[] = {"v0", "v1", "v2", "v3", "v4", NULL};
  for (int i = 0; i < 6; i++) {
    if (!want[i]) {
      cr_assert_not(out[i].found);
      continue;
    }
    cr_assert(out[i].found, "%s", keys[i]);
    cr_assert_eq(out[i].len, strlen(want[i]));
    cr_assert_eq(memcmp(out[i].data, want[i], out[i].len), 0);
  }
  perfc_cache_values_free(out, 6);
  cr_assert_eq(atomic_load(&db.batch_loads), 1);
  cr_assert_eq(atomic_load(&db.batch_keys), 3, "only key3 key4 key15 load");
  cr_assert_eq(atomic_load(&db.loads), 0);
  /* Everything is cached now, the missing key as a placeholder. */
  cr_assert_eq(perfc_cache_get_many(a.cache, keys, 6, batch_loader, &db, out),
               0);
  perfc_cache_values_free(out, 6);
  cr_assert_eq(atomic_load(&db.batch_loads), 1);
  perfc_l1cache_clear(perfc_cache_l1(a.cache));
  cr_assert_eq(perfc_cache_get_many(a.cache, keys, 6, batch_loader, &db, out),
               0);
  cr_assert_not(out[5].found);
  perfc_cache_values_free(out, 6);
  cr_assert_eq(atomic_load(&db.batch_loads), 1, "all from Redis");
  env_close(&b);
  env_close(&a);
}

Test(cache, bloom_filter_turns_away_unknown_keys) {
  fake_db db;
  db_init(&db);
  db_put(&db, 1, "one");
  perfc_bloom *bf;
  cr_assert_eq(perfc_bloom_new(&bf, 1000, 0.01), 0);
  perfc_bloom_add(bf, "key1");
  cr_assert(perfc_bloom_maybe_contains(bf, "key1"));
  int fp = 0;
  char k[32];
  for (int i = 0; i < 10000; i++) {
    snprintf(k, sizeof k, "absent%d", i);
    fp += perfc_bloom_maybe_contains(bf, k);
  }
  cr_assert_lt(fp, 300, "false positives %d/10000 at 1%%", fp);
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_cache_opts co;
  perfc_cache_opts_init(&co);
  co.registry = reg;
  co.bloom = bf;
  perfc_cache *c;
  cr_assert_eq(perfc_cache_new(&c, &co), 0);
  expect(c, &db, "key1", "one");
  expect(c, &db, "key2", "");
  cr_assert_eq(atomic_load(&db.loads), 1, "key2 never reaches the loader");
  cr_assert_eq(stats(c).bloom_rejects, 1);
  perfc_cache_free(c);
  perfc_metrics_registry_free(reg);
  perfc_bloom_free(bf);
}

Test(cache, ttls_are_jittered) {
  /* L1 TTL 1 s ± 50%: nothing expires before 0.5 s, and at 1 s about half
   * of the entries have (none would without jitter). */
  fake_db db;
  db_init(&db);
  db_put(&db, 1, "x");
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_cache_opts co;
  perfc_cache_opts_init(&co);
  co.registry = reg;
  co.l1_ttl_ms = 1000;
  co.ttl_jitter = 0.5;
  perfc_cache *c;
  cr_assert_eq(perfc_cache_new(&c, &co), 0);
  enum { N = 400 };
  char key[32];
  double t0 = mono();
  for (int i = 0; i < N; i++) {
    snprintf(key, sizeof key, "key1:%d", i); /* all load "key1"'s value */
    uint8_t *v;
    size_t n;
    cr_assert_eq(perfc_cache_get_or_load(c, key, loader, &db, &v, &n), 0);
    free(v);
  }
  double fill = mono() - t0;
  cr_assert_lt(fill, 0.3, "fill took %.3fs, machine too busy", fill);
  perfc_l1cache *l1 = perfc_cache_l1(c);
  perfc_l1cache_stats st;
  tr_sleep_ms(400);
  perfc_l1cache_stats_get(l1, &st);
  cr_assert_eq(st.entries, N);
  tr_sleep_ms(1000 - 400 - (long)(fill * 1000));
  int expired = 0;
  for (int i = 0; i < N; i++) {
    uint8_t buf[8];
    size_t n;
    snprintf(key, sizeof key, "key1:%d", i);
    expired += perfc_l1cache_get_into(l1, key, buf, sizeof buf, &n, NULL) ==
               PERFC_ENOENT;
  }
  cr_assert(expired > N / 8 && expired < N * 7 / 8, "expired %d of %d", expired,
            N);
  perfc_cache_free(c);
  perfc_metrics_registry_free(reg);
}

Test(cache, metrics_registered_and_duplicate_name_refused) {
  env e;
  env_open(&e, "m", 1, 0);
  fake_db db;
  db_init(&db);
  db_put(&db, 1, "x");
  expect(e.cache, &db, "key1", "x");
  expect(e.cache, &db, "key1", "x");
  char *text;
  size_t len;
  cr_assert_eq(perfc_metrics_registry_render(e.reg, &text, &len), 0);
  const char *names[] = {
      "perfc_cache_l1_hits_total{cache=\"m\"} 1",
      "perfc_cache_l1_misses_total{cache=\"m\"} 1",
      "perfc_cache_l2_misses_total{cache=\"m\"} 1",
      "perfc_cache_loads_total{cache=\"m\"} 1",
      "perfc_cache_l1_entries{cache=\"m\"} 1",
      "perfc_cache_l1_evictions_total{cache=\"m\"} 0",
      "perfc_cache_singleflight_shared_total{cache=\"m\"} 0",
      "perfc_cache_invalidations_pending{cache=\"m\"} 0",
      "perfc_redis_pool_connections{pool=\"m\",state=\"idle\"} 1",
      "perfc_redis_pool_wait_seconds_count{pool=\"m\"}",
  };
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    cr_assert(strstr(text, names[i]), "missing: %s\n%s", names[i], text);
  free(text);
  perfc_cache_opts co;
  perfc_cache_opts_init(&co);
  co.name = "m";
  co.registry = e.reg;
  perfc_cache *dup;
  cr_assert_eq(perfc_cache_new(&dup, &co), PERFC_EEXIST);
  env_close(&e);
}

/* perfc_cache_get_or_load_ttl: a call's TTLs replace the cache's in both
 * levels (what generated code passes from (perfc.cache) ttl and
 * negative_ttl), and PERFC_CACHE_TTL_NONE leaves "not found" uncached. */
static int get_ttl(perfc_cache *c, fake_db *db, const char *key, int64_t ttl,
                   int64_t neg) {
  uint8_t *v = NULL;
  size_t n = 0;
  int rc = perfc_cache_get_or_load_ttl(c, key, ttl, neg, loader, db, &v, &n);
  free(v);
  return rc;
}

Test(cache, per_call_ttl_override) {
  fake_db db;
  db_init(&db);
  db_put(&db, 1, "one");
  env e;
  env_open(&e, "ttl", 1, 0);
  /* A value: 300 ms in Redis and in L1 (the default would be minutes). */
  cr_assert_eq(get_ttl(e.cache, &db, "key1", 300, 0), 0);
  cr_assert(redis_has(e.pool, "key1"));
  cr_assert_eq(get_ttl(e.cache, &db, "key1", 300, 0), 0);
  cr_assert_eq(atomic_load(&db.loads), 1);
  tr_sleep_ms(500);
  cr_assert_not(redis_has(e.pool, "key1"), "L2 kept the cache's TTL");
  cr_assert_eq(get_ttl(e.cache, &db, "key1", 300, 0), 0);
  cr_assert_eq(atomic_load(&db.loads), 2, "L1 kept the cache's TTL");
  /* "Not found" for 200 ms instead of the default 30 s. */
  cr_assert_eq(get_ttl(e.cache, &db, "key2", 0, 200), PERFC_ENOENT);
  cr_assert_eq(get_ttl(e.cache, &db, "key2", 0, 200), PERFC_ENOENT);
  cr_assert_eq(atomic_load(&db.loads), 3);
  tr_sleep_ms(400);
  cr_assert_eq(get_ttl(e.cache, &db, "key2", 0, 200), PERFC_ENOENT);
  cr_assert_eq(atomic_load(&db.loads), 4);
  /* Negative caching off: every call loads, nothing is stored. */
  cr_assert_eq(get_ttl(e.cache, &db, "key3", 0, PERFC_CACHE_TTL_NONE),
               PERFC_ENOENT);
  cr_assert_eq(get_ttl(e.cache, &db, "key3", 0, PERFC_CACHE_TTL_NONE),
               PERFC_ENOENT);
  cr_assert_eq(atomic_load(&db.loads), 6);
  cr_assert_not(redis_has(e.pool, "key3"));
  /* A value cannot be "not cached" that way. */
  cr_assert_eq(get_ttl(e.cache, &db, "key1", PERFC_CACHE_TTL_NONE, 0),
               PERFC_EINVAL);
  env_close(&e);
}

/* ---- #13: read-your-writes, L1 while unsubscribed, shutdown drain ---- */

typedef struct get_arg {
  perfc_cache *cache;
  fake_db *db;
  const char *key;
  atomic_int done;
  int rc;
  char val[32];
} get_arg;

static void *get_thread(void *p) {
  get_arg *g = p;
  uint8_t *v = NULL;
  size_t n = 0;
  g->rc = perfc_cache_get_or_load(g->cache, g->key, loader, g->db, &v, &n);
  if (g->rc == 0) {
    snprintf(g->val, sizeof g->val, "%.*s", (int)n, (const char *)v);
    free(v);
  }
  atomic_store(&g->done, 1);
  return NULL;
}

static int wait_done(get_arg *g, int ms) {
  for (int i = 0; i < ms / 5 && !atomic_load(&g->done); i++)
    tr_sleep_ms(5);
  return atomic_load(&g->done);
}

static void release_gate(fake_db *db) {
  pthread_mutex_lock(&db->mu);
  db->released = 1;
  pthread_cond_broadcast(&db->cv);
  pthread_mutex_unlock(&db->mu);
}

/* Issue #13 item 7, made deterministic: R1's load reads "old" and blocks;
 * the write commits "new" and invalidates; R2 begins after that. R2 must
 * not join R1's flight (it would answer "old" after the acknowledged
 * write): it loads on its own and returns "new" while R1 is still
 * blocked. Without the flight's generation check R2 waits for R1. */
static void flight_after_invalidation(int with_redis, int l1_off) {
  fake_db db;
  db_init(&db);
  db_put(&db, 4, "old");
  env e;
  memset(&e, 0, sizeof e);
  cr_assert_eq(perfc_metrics_registry_new(&e.reg), 0);
  if (with_redis) {
    perfc_redis_opts ro;
    perfc_redis_opts_init(&ro);
    ro.port = srv.port;
    ro.registry = e.reg;
    ro.name = "flightv";
    cr_assert_eq(perfc_redis_pool_new(&e.pool, &ro), 0);
  }
  perfc_cache_opts co;
  perfc_cache_opts_init(&co);
  co.name = "flightv";
  co.redis = e.pool;
  co.registry = e.reg;
  co.no_subscribe = 1;
  if (l1_off)
    co.no_l1 = true; /* what user-service does for l1_max_bytes: 0 */
  cr_assert_eq(perfc_cache_new(&e.cache, &co), 0);

  db.gated = 1;
  get_arg r1 = {e.cache, &db, "key4", 0, 0, ""};
  pthread_t t1;
  pthread_create(&t1, NULL, get_thread, &r1);
  pthread_mutex_lock(&db.mu);
  while (!db.started)
    pthread_cond_wait(&db.cv, &db.mu);
  db.gated = 0; /* later loads do not block */
  snprintf(db.vals[4], sizeof db.vals[4], "new");
  pthread_mutex_unlock(&db.mu);
  const char *keys[] = {"key4"};
  cr_assert_eq(perfc_cache_invalidate(e.cache, keys, 1), 0);

  get_arg r2 = {e.cache, &db, "key4", 0, 0, ""};
  pthread_t t2;
  pthread_create(&t2, NULL, get_thread, &r2);
  int r2_done = wait_done(&r2, 3000);
  int r1_done_early = atomic_load(&r1.done);
  release_gate(&db);
  pthread_join(t1, NULL);
  pthread_join(t2, NULL);
  cr_assert(r2_done, "a read after the invalidation joined the older load");
  cr_assert_not(r1_done_early);
  cr_assert_eq(r2.rc, 0);
  cr_assert_str_eq(r2.val, "new");
  /* R1 began before the write: its own answer may be the old row. */
  cr_assert_eq(r1.rc, 0);
  cr_assert_str_eq(r1.val, "old");
  cr_assert_eq(atomic_load(&db.loads), 2);
  /* And its fills were fenced: the next read sees "new". */
  expect(e.cache, &db, "key4", "new");
  env_close(&e);
}

Test(cache, read_after_invalidation_never_joins_older_flight) {
  flight_after_invalidation(1, 0);
}

Test(cache, read_after_invalidation_never_joins_older_flight_l1_off) {
  flight_after_invalidation(1, 1);
}

Test(cache, read_after_invalidation_never_joins_older_flight_l1_only) {
  flight_after_invalidation(0, 0);
}

/* Without an invalidation, reads that arrive during a load still share it
 * (one load for all), and a remote invalidation (the subscriber's path)
 * also stops later reads from joining. */
Test(cache, flight_still_shared_without_invalidation) {
  fake_db db;
  db_init(&db);
  db_put(&db, 5, "five");
  env e;
  env_open(&e, "flightshare", 1, 0);
  db.gated = 1;
  get_arg g[4];
  pthread_t t[4];
  for (int i = 0; i < 4; i++) {
    g[i] = (get_arg){e.cache, &db, "key5", 0, 0, ""};
    pthread_create(&t[i], NULL, get_thread, &g[i]);
  }
  pthread_mutex_lock(&db.mu);
  while (!db.started)
    pthread_cond_wait(&db.cv, &db.mu);
  pthread_mutex_unlock(&db.mu);
  /* Let the other three reach the flight and wait on it. */
  for (int i = 0; i < 200 && stats(e.cache).l1_misses < 4; i++)
    tr_sleep_ms(5);
  tr_sleep_ms(50);
  release_gate(&db);
  for (int i = 0; i < 4; i++) {
    pthread_join(t[i], NULL);
    cr_assert_eq(g[i].rc, 0);
    cr_assert_str_eq(g[i].val, "five");
  }
  cr_assert_eq(atomic_load(&db.loads), 1);
  cr_assert_eq(stats(e.cache).singleflight_shared, 3);
  env_close(&e);
}

static uint64_t l1_entries(perfc_cache *c) {
  perfc_l1cache_stats st;
  perfc_l1cache_stats_get(perfc_cache_l1(c), &st);
  return st.entries;
}

static int wait_bypassing(perfc_cache *c, fake_db *db, const char *key) {
  for (int i = 0; i < 600; i++) {
    uint64_t before = stats(c).l1_bypassed;
    uint8_t *v = NULL;
    size_t n = 0;
    if (perfc_cache_get_or_load(c, key, loader, db, &v, &n) == 0)
      free(v);
    if (stats(c).l1_bypassed > before)
      return 1;
    tr_sleep_ms(5);
  }
  return 0;
}

/* Issue #13 item 6: while the invalidation subscription is down, another
 * instance's invalidation cannot reach this one, so L1 is not trusted:
 * reads bypass it (and do not fill it), peek says "not in L1", and a row
 * changed elsewhere is seen at once. When the subscription is back, L1 is
 * cleared and used again. */
Test(cache, l1_bypassed_while_unsubscribed_and_flushed_on_resubscribe) {
  fake_db db;
  db_init(&db);
  db_put(&db, 6, "v1");
  env e;
  env_open(&e, "bypass", 1, 1);
  expect(e.cache, &db, "key6", "v1");
  expect(e.cache, &db, "key6", "v1");
  cr_assert_eq(atomic_load(&db.loads), 1);
  cr_assert_eq(l1_entries(e.cache), 1);
  uint8_t *v = NULL;
  size_t n = 0;
  cr_assert_eq(perfc_cache_peek(e.cache, "key6", &v, &n), 0);
  free(v);

  tr_kill(&srv);
  cr_assert(wait_bypassing(e.cache, &db, "key6"), "L1 still trusted");
  cr_assert_eq(l1_entries(e.cache), 0, "L1 not dropped with the subscription");
  /* Another instance writes; its invalidation cannot reach us. */
  db_put(&db, 6, "v2");
  expect(e.cache, &db, "key6", "v2");
  cr_assert_eq(perfc_cache_peek(e.cache, "key6", &v, &n), 1);
  cr_assert_eq(l1_entries(e.cache), 0, "L1 filled while unsubscribed");
  perfc_cache_value out[1];
  const char *keys[] = {"key6"};
  db_put(&db, 6, "v3");
  cr_assert_eq(perfc_cache_get_many(e.cache, keys, 1, batch_loader, &db, out),
               0);
  cr_assert_eq(out[0].found, 1);
  cr_assert_eq(memcmp(out[0].data, "v3", 2), 0);
  perfc_cache_values_free(out, 1);
  cr_assert_eq(l1_entries(e.cache), 0);

  cr_assert_eq(tr_restart(&srv), 0);
  cr_assert_eq(perfc_cache_wait_subscribed(e.cache, 5000), 0);
  uint64_t bypassed = stats(e.cache).l1_bypassed;
  int loads = atomic_load(&db.loads);
  expect(e.cache, &db, "key6", "v3");
  expect(e.cache, &db, "key6", "v3");
  cr_assert_eq(atomic_load(&db.loads), loads + 1, "L1 not used again");
  cr_assert_eq(stats(e.cache).l1_bypassed, bypassed);
  cr_assert_eq(l1_entries(e.cache), 1);
  char *text;
  size_t len;
  cr_assert_eq(perfc_metrics_registry_render(e.reg, &text, &len), 0);
  cr_assert(strstr(text,
                   "perfc_cache_invalidation_subscribed{cache=\"bypass\"} 1"),
            "%s", text);
  free(text);
  env_close(&e);
}

/* A subscription that has not been established yet is not trusted
 * either: with Redis down from the start, nothing goes into L1. */
Test(cache, l1_bypassed_before_first_subscription) {
  fake_db db;
  db_init(&db);
  db_put(&db, 7, "a");
  tr_kill(&srv);
  env e;
  env_open(&e, "nosub", 1, 0);
  perfc_cache_free(e.cache);
  perfc_cache_opts co;
  perfc_cache_opts_init(&co);
  co.name = "nosub2";
  co.redis = e.pool;
  co.registry = e.reg;
  cr_assert_eq(perfc_cache_new(&e.cache, &co), 0);
  expect(e.cache, &db, "key7", "a");
  db_put(&db, 7, "b");
  expect(e.cache, &db, "key7", "b");
  cr_assert_eq(atomic_load(&db.loads), 2);
  cr_assert_eq(l1_entries(e.cache), 0);
  cr_assert_eq(stats(e.cache).l1_bypassed, 2);
  env_close(&e);
  cr_assert_eq(tr_restart(&srv), 0);
}

/* Issue #13 item 8: deletes pending when Redis answers again are delivered
 * by perfc_cache_drain() at once, not after the retry thread's backoff. A
 * frozen server keeps its data, so the old value is really there. */
Test(cache, drain_delivers_pending_deletes) {
  fake_db db;
  db_init(&db);
  db_put(&db, 8, "old");
  env e;
  env_open(&e, "drain", 1, 0);
  expect(e.cache, &db, "key8", "old");
  cr_assert(redis_has(e.pool, "key8"));
  kill(srv.pid, SIGSTOP);
  const char *keys[] = {"key8"};
  cr_assert_eq(perfc_cache_invalidate(e.cache, keys, 1), 0);
  cr_assert_eq(perfc_cache_pending_invalidations(e.cache), 1);
  /* Frozen: the drain gives up at its deadline, the key still pending. */
  cr_assert_eq(perfc_cache_drain(e.cache, 150), PERFC_ETIMEDOUT);
  cr_assert_eq(perfc_cache_pending_invalidations(e.cache), 1);
  kill(srv.pid, SIGCONT);
  cr_assert_eq(perfc_cache_drain(e.cache, 3000), 0);
  cr_assert_eq(perfc_cache_pending_invalidations(e.cache), 0);
  cr_assert(!redis_has(e.pool, "key8"), "the old value is still in Redis");
  env_close(&e);
}

/* What the drain cannot deliver is saved to pending_file at free and
 * queued again by the next cache with that file, which deletes it once
 * Redis answers (and reads skip Redis until then); a free with nothing
 * pending removes the file. */
Test(cache, undelivered_deletes_survive_a_restart_in_pending_file) {
  fake_db db;
  db_init(&db);
  db_put(&db, 9, "old");
  char path[] = "/tmp/perfc-test-pending-XXXXXX";
  int fd = mkstemp(path);
  cr_assert_geq(fd, 0);
  close(fd);
  unlink(path);
  env e;
  env_open(&e, "pend", 1, 0);
  perfc_cache_free(e.cache);
  perfc_cache_opts co;
  perfc_cache_opts_init(&co);
  co.name = "pend";
  co.redis = e.pool;
  co.registry = NULL;
  co.no_subscribe = 1;
  co.drain_ms = 200;
  co.pending_file = path;
  perfc_metrics_registry *r1;
  cr_assert_eq(perfc_metrics_registry_new(&r1), 0);
  co.registry = r1;
  cr_assert_eq(perfc_cache_new(&e.cache, &co), 0);
  expect(e.cache, &db, "key9", "old");
  cr_assert(redis_has(e.pool, "key9"));
  kill(srv.pid, SIGSTOP);
  const char *keys[] = {"key9", "odd key\nwith:colon"};
  cr_assert_eq(perfc_cache_invalidate(e.cache, keys, 2), 0);
  perfc_cache_free(e.cache); /* drains 200 ms in vain, then saves */
  kill(srv.pid, SIGCONT);
  FILE *f = fopen(path, "r");
  cr_assert_not_null(f, "pending file not written");
  char buf[128] = "";
  size_t got = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  cr_assert_eq(got, strlen("4:key9\n18:odd key\nwith:colon\n"));
  cr_assert_str_eq(buf, "4:key9\n18:odd key\nwith:colon\n");
  /* The DELs sent while the server was frozen may still run once it
   * thaws (they sat in its socket buffer): put the stale value back, as a
   * server that really never got them would still hold it. */
  for (int i = 0; i < 100 && perfc_redis_set(e.pool, "key9",
                                             (perfc_slice){(const uint8_t *)"vold", 4},
                                             60000) != 0;
       i++)
    tr_sleep_ms(20);
  cr_assert(redis_has(e.pool, "key9"));

  /* The next start queues them and delivers them. */
  perfc_metrics_registry *r2;
  cr_assert_eq(perfc_metrics_registry_new(&r2), 0);
  co.registry = r2;
  cr_assert_eq(perfc_cache_new(&e.cache, &co), 0);
  for (int i = 0; i < 400 && perfc_cache_pending_invalidations(e.cache); i++)
    tr_sleep_ms(10);
  cr_assert_eq(perfc_cache_pending_invalidations(e.cache), 0);
  cr_assert(!redis_has(e.pool, "key9"), "replayed delete not delivered");
  perfc_cache_free(e.cache);
  cr_assert_eq(access(path, F_OK), -1, "pending file left after a clean stop");
  e.cache = NULL;
  env_close(&e);
  perfc_metrics_registry_free(r1);
  perfc_metrics_registry_free(r2);
}

/* ---- #14: explicit off-switches and checked options ---- */

/* no_l1: nothing is kept in process memory, every read goes to Redis, and
 * an invalidation still reaches readers (through Redis). */
Test(cache, no_l1_keeps_nothing_in_process) {
  fake_db db;
  db_init(&db);
  db_put(&db, 1, "one");
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_redis_opts ro;
  perfc_redis_opts_init(&ro);
  ro.port = srv.port;
  ro.registry = reg;
  ro.name = "nol1";
  perfc_redis_pool *pool;
  cr_assert_eq(perfc_redis_pool_new(&pool, &ro), 0);
  perfc_cache_opts co;
  perfc_cache_opts_init(&co);
  co.name = "nol1";
  co.redis = pool;
  co.registry = reg;
  co.no_subscribe = true;
  co.no_l1 = true;
  perfc_cache *c;
  cr_assert_eq(perfc_cache_new(&c, &co), 0);
  for (int i = 0; i < 5; i++)
    expect(c, &db, "key1", "one");
  expect(c, &db, "key2", "");
  expect(c, &db, "key2", "");
  perfc_cache_stats st = stats(c);
  cr_assert_eq(atomic_load(&db.loads), 2, "one load per key, then Redis");
  cr_assert_eq(st.l1_hits, 0);
  cr_assert_eq(st.l1_misses, 0, "L1 off is not looked up");
  cr_assert_eq(st.l1_bypassed, 0, "L1 off is not a bypass");
  cr_assert_eq(st.l2_hits, 5, "4 values and 1 placeholder from Redis");
  cr_assert_eq(l1_entries(c), 0);
  uint8_t *v = NULL;
  size_t n = 0;
  cr_assert_eq(perfc_cache_peek(c, "key1", &v, &n), 1, "peek: not in L1");
  /* The batch path too. */
  const char *keys[] = {"key1", "key2"};
  perfc_cache_value out[2];
  cr_assert_eq(perfc_cache_get_many(c, keys, 2, batch_loader, &db, out), 0);
  cr_assert(out[0].found && !out[1].found);
  perfc_cache_values_free(out, 2);
  cr_assert_eq(l1_entries(c), 0);
  cr_assert_eq(stats(c).l1_misses, 0);
  /* A write is seen at once: Redis is deleted, nothing local is stale. */
  db_put(&db, 1, "uno");
  const char *k1[] = {"key1"};
  cr_assert_eq(perfc_cache_invalidate(c, k1, 1), 0);
  expect(c, &db, "key1", "uno");
  perfc_cache_free(c);
  perfc_redis_pool_free(pool);
  perfc_metrics_registry_free(reg);
}

/* "Off" is a field, not -1.0; out-of-range values are refused with a
 * message instead of being taken as a sentinel. */
Test(cache, options_are_checked_and_jitter_off_is_explicit) {
  perfc_cache_opts co;
  perfc_cache_opts_init(&co);
  co.name = "optcheck";
  co.ttl_jitter = -1.0; /* the old spelling of "none" */
  perfc_cache *c = NULL;
  cr_assert_eq(perfc_cache_new(&c, &co), PERFC_EINVAL);
  cr_assert(strstr(perfc_last_error(), "ttl_jitter") != NULL, "%s",
            perfc_last_error());
  co.ttl_jitter = 0.6;
  cr_assert_eq(perfc_cache_new(&c, &co), PERFC_EINVAL);
  co.ttl_jitter = 0;
  co.l1_ttl_ms = -5;
  cr_assert_eq(perfc_cache_new(&c, &co), PERFC_EINVAL);
  cr_assert(strstr(perfc_last_error(), "-5 ms") != NULL, "%s",
            perfc_last_error());
  co.l1_ttl_ms = PERFC_CACHE_MAX_TTL_MS + 1;
  cr_assert_eq(perfc_cache_new(&c, &co), PERFC_EINVAL);
  cr_assert_null(c);

  /* no_ttl_jitter with a jitter set: every L1 entry lives exactly the L1
   * TTL (with ± 50 % some would be gone at 0.7 s and some left at 1.4 s). */
  fake_db db;
  db_init(&db);
  for (int i = 0; i < 16; i++)
    db_put(&db, i, "x");
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_cache_opts_init(&co);
  co.name = "nojitter";
  co.registry = reg;
  co.l1_ttl_ms = 1000;
  co.ttl_jitter = 0.5;
  co.no_ttl_jitter = true;
  cr_assert_eq(perfc_cache_new(&c, &co), 0);
  char k[16];
  for (int i = 0; i < 16; i++) {
    snprintf(k, sizeof k, "key%d", i);
    expect(c, &db, k, "x");
  }
  tr_sleep_ms(700);
  int live = 0;
  for (int i = 0; i < 16; i++) {
    snprintf(k, sizeof k, "key%d", i);
    uint8_t *v = NULL;
    size_t n = 0;
    if (perfc_l1cache_get(perfc_cache_l1(c), k, &v, &n, NULL) == 0) {
      live++;
      free(v);
    }
  }
  cr_assert_eq(live, 16, "an entry expired before its unjittered TTL");
  tr_sleep_ms(700);
  live = 0;
  for (int i = 0; i < 16; i++) {
    snprintf(k, sizeof k, "key%d", i);
    uint8_t *v = NULL;
    size_t n = 0;
    if (perfc_l1cache_get(perfc_cache_l1(c), k, &v, &n, NULL) == 0) {
      live++;
      free(v);
    }
  }
  cr_assert_eq(live, 0, "an entry outlived its unjittered TTL");
  perfc_cache_free(c);
  perfc_metrics_registry_free(reg);
}

/* ---- #16 item 5: the L2 read on an event loop (cache_internal.h) ---- */

#include "data/cache_internal.h"
#include "perfc/loop.h"

typedef struct l2_res {
  atomic_int done;
  int rc;
  char val[32];
} l2_res;

static void l2_res_cb(int rc, const uint8_t *v, size_t len, void *ud) {
  l2_res *r = ud;
  r->rc = rc;
  if (v != NULL && len < sizeof r->val)
    memcpy(r->val, v, len);
  atomic_store(&r->done, 1);
}

typedef struct l2_job {
  perfc_cache *c;
  const char *key;
  l2_res *res;
  int started;
  atomic_int ran;
} l2_job;

static void l2_job_run(void *ud) {
  l2_job *j = ud;
  j->started = perfc__cache_l2_get_async(j->c, j->key, 0, 0, l2_res_cb, j->res);
  atomic_store(&j->ran, 1);
}

static perfc_loop *l2_loop;
static void *l2_loop_main(void *ud) {
  (void)ud;
  perfc_loop_run(l2_loop);
  return NULL;
}

/* Runs perfc__cache_l2_get_async(key) on the test's loop; returns what it
 * returned. */
static int l2_start(perfc_cache *c, const char *key, l2_res *res) {
  l2_job j = {.c = c, .key = key, .res = res};
  perfc_loop_task *t;
  cr_assert_eq(perfc_loop_task_new(&t, l2_loop, l2_job_run, &j), 0);
  perfc_loop_task_post(t);
  for (int i = 0; i < 5000 && !atomic_load(&j.ran); i++)
    usleep(1000);
  cr_assert(atomic_load(&j.ran));
  perfc_loop_task_free(t);
  return j.started;
}

static int l2_wait(l2_res *r) {
  for (int i = 0; i < 5000 && !atomic_load(&r->done); i++)
    usleep(1000);
  return atomic_load(&r->done);
}

/* An invalidation between the GET and its reply fences the L1 fill (the
 * key's generation is read before the GET), as for a load; without one the
 * hit fills L1. Off a loop, or with no_async_l2, the read does not start. */
Test(cache, l2_read_on_a_loop_is_fenced_by_an_invalidation) {
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_redis_opts ro;
  perfc_redis_opts_init(&ro);
  ro.port = srv.port;
  ro.registry = reg;
  ro.command_timeout_ms = 2000;
  perfc_redis_pool *pool;
  cr_assert_eq(perfc_redis_pool_new(&pool, &ro), 0);
  perfc_cache_opts co;
  perfc_cache_opts_init(&co);
  co.redis = pool;
  co.registry = reg;
  co.no_subscribe = true;
  perfc_cache *c;
  cr_assert_eq(perfc_cache_new(&c, &co), 0);
  cr_assert_eq(perfc_loop_new(&l2_loop), 0);
  pthread_t lt;
  cr_assert_eq(pthread_create(&lt, NULL, l2_loop_main, NULL), 0);
  /* Stored as the cache stores values: 'v' + bytes. */
  cr_assert_eq(perfc_redis_set(pool, "key1", (perfc_slice){(const uint8_t *)"vone", 4}, 60000), 0);
  cr_assert_eq(perfc_redis_set(pool, "key2", (perfc_slice){(const uint8_t *)"n", 1}, 60000), 0);

  l2_res r = {0};
  cr_assert_eq(perfc__cache_l2_get_async(c, "key1", 0, 0, l2_res_cb, &r),
               PERFC_ESTATE, "started off a loop");
  /* A plain hit fills L1. */
  cr_assert_eq(l2_start(c, "key1", &r), 0);
  cr_assert(l2_wait(&r));
  cr_assert_eq(r.rc, 0);
  cr_assert_str_eq(r.val, "one");
  uint8_t *v = NULL;
  size_t n = 0;
  int neg = 0;
  cr_assert_eq(perfc_l1cache_get(perfc_cache_l1(c), "key1", &v, &n, &neg), 0);
  cr_assert_eq(n, 3);
  free(v);
  /* A cached "not found". */
  l2_res rn = {0};
  cr_assert_eq(l2_start(c, "key2", &rn), 0);
  cr_assert(l2_wait(&rn));
  cr_assert_eq(rn.rc, PERFC_ENOENT);
  /* A key Redis lacks: the full path must run. */
  l2_res rm = {0};
  cr_assert_eq(l2_start(c, "key3", &rm), 0);
  cr_assert(l2_wait(&rm));
  cr_assert_eq(rm.rc, 1);
  /* The race: Redis answers only after the key was invalidated. */
  perfc_l1cache_clear(perfc_cache_l1(c));
  perfc_cache_stats s0, s;
  perfc_cache_stats_get(c, &s0);
  kill(srv.pid, SIGSTOP);
  l2_res rr = {0};
  cr_assert_eq(l2_start(c, "key1", &rr), 0);
  perfc_l1cache_delete(perfc_cache_l1(c), "key1"); /* advances its generation */
  kill(srv.pid, SIGCONT);
  cr_assert(l2_wait(&rr));
  cr_assert_eq(rr.rc, 0); /* the read itself saw the value */
  cr_assert_eq(perfc_l1cache_get(perfc_cache_l1(c), "key1", &v, &n, &neg),
               PERFC_ENOENT, "a fenced fill went into L1");
  perfc_cache_stats_get(c, &s);
  cr_assert_eq(s.stale_fills_refused - s0.stale_fills_refused, 1);
  cr_assert_eq(s.l2_hits - s0.l2_hits, 1);

  perfc_loop_stop(l2_loop);
  pthread_join(lt, NULL);
  perfc_loop_free(l2_loop);
  perfc_cache_free(c);
  perfc_redis_pool_free(pool);
  perfc_metrics_registry_free(reg);
}
