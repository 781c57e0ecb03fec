/* test_cached.c — declarative cache-aside end to end: the generated
 * ItemStore (tests/integration/proto/perfc/test/v1/cached.proto) served by a
 * real perfc server, its cache on a real redis-server, called through the
 * generated client over loopback. The handlers are an in-memory "database"
 * that counts its loads; the tests assert those counts.
 *
 * Room: tests/integration (declarative caching). */
#include "perfc/test/v1/cached.perfc.h"
#include "redis_server.h"
#include "test_transport.h"
#include "server/server_internal.h" /* perfc__server_pool_stats */

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the "database" --------------------------------------------------- */

#define N_ROWS 64
#define FAILING_ID 13 /* its load fails with UNAVAILABLE */

typedef struct row {
  int present;
  char name[32];
  int64_t version;
} row;

static pthread_mutex_t db_mu = PTHREAD_MUTEX_INITIALIZER;
static row db[N_ROWS];
static atomic_int loads;         /* GetItem handler calls */
static atomic_int load_delay_ms; /* makes a load slow (single flight test) */

static void db_reset(void) {
  pthread_mutex_lock(&db_mu);
  memset(db, 0, sizeof db);
  for (int i = 1; i <= 10; i++) {
    db[i].present = 1;
    snprintf(db[i].name, sizeof db[i].name, "item-%d", i);
    db[i].version = 1;
  }
  pthread_mutex_unlock(&db_mu);
  atomic_store(&loads, 0);
  atomic_store(&load_delay_ms, 0);
}

static perfc_status_code get_item(perfc_ctx *ctx,
                                  const Perfc__Test__V1__GetItemRequest *req,
                                  Perfc__Test__V1__CachedItem *resp,
                                  void *user_data) {
  (void)user_data;
  atomic_fetch_add(&loads, 1);
  int delay = atomic_load(&load_delay_ms);
  if (delay > 0)
    tr_sleep_ms(delay);
  if (req->id == FAILING_ID)
    return perfc_ctx_error(ctx, PERFC_STATUS_UNAVAILABLE, "database down");
  pthread_mutex_lock(&db_mu);
  if (req->id < 0 || req->id >= N_ROWS || !db[req->id].present) {
    pthread_mutex_unlock(&db_mu);
    return perfc_ctx_error(ctx, PERFC_STATUS_NOT_FOUND, "item %lld",
                           (long long)req->id);
  }
  resp->id = req->id;
  resp->name = perfc_arena_strdup(perfc_ctx_arena(ctx), db[req->id].name);
  resp->version = db[req->id].version;
  pthread_mutex_unlock(&db_mu);
  return resp->name ? PERFC_STATUS_OK : PERFC_STATUS_RESOURCE_EXHAUSTED;
}

static perfc_status_code
update_item(perfc_ctx *ctx, const Perfc__Test__V1__UpdateItemRequest *req,
            Perfc__Test__V1__CachedItem *resp, void *user_data) {
  (void)user_data;
  const Perfc__Test__V1__CachedItem *in = req->item;
  if (!in || in->id <= 0 || in->id >= N_ROWS)
    return perfc_ctx_error(ctx, PERFC_STATUS_INVALID_ARGUMENT, "bad id");
  pthread_mutex_lock(&db_mu); /* the "commit" */
  db[in->id].present = 1;
  snprintf(db[in->id].name, sizeof db[in->id].name, "%s", in->name);
  db[in->id].version++;
  resp->id = in->id;
  resp->version = db[in->id].version;
  pthread_mutex_unlock(&db_mu);
  resp->name = perfc_arena_strdup(perfc_ctx_arena(ctx), in->name);
  return PERFC_STATUS_OK;
}

static perfc_status_code
delete_item(perfc_ctx *ctx, const Perfc__Test__V1__DeleteItemRequest *req,
            Perfc__Test__V1__DeleteItemResponse *resp, void *user_data) {
  (void)ctx, (void)resp, (void)user_data;
  pthread_mutex_lock(&db_mu);
  if (req->id > 0 && req->id < N_ROWS)
    db[req->id].present = 0;
  pthread_mutex_unlock(&db_mu);
  return PERFC_STATUS_OK;
}

static const Perfc__Test__V1__ItemStore_Handlers handlers = {
    .get_item = get_item,
    .update_item = update_item,
    .delete_item = delete_item,
};

/* ---- fixture: redis-server, cache, server, channel -------------------- */

static test_redis redis;
static perfc_metrics_registry *reg;
static perfc_redis_pool *pool;
static perfc_cache *cache;
static perfc_server *srv;
static perfc_channel *ch;

/* Worker pool shape and send limit for the next start(); 0 = perfc's
 * defaults. */
static unsigned pool_threads, pool_queue;
static int max_send;

static void start(int with_cache) {
  db_reset();
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  if (with_cache) {
    cr_assert_eq(tr_start(&redis), 0, "redis-server did not start");
    perfc_redis_opts ro;
    perfc_redis_opts_init(&ro);
    ro.port = redis.port;
    ro.registry = reg;
    ro.command_timeout_ms = 100;
    ro.connect_timeout_ms = 100;
    ro.backoff_min_ms = 20;
    ro.backoff_max_ms = 100;
    cr_assert_eq(perfc_redis_pool_new(&pool, &ro), 0);
    perfc_cache_opts co;
    perfc_cache_opts_init(&co);
    co.redis = pool;
    co.registry = reg;
    co.no_subscribe = 1;
    co.retry_ms = 20;
    co.retry_max_ms = 100;
    cr_assert_eq(perfc_cache_new(&cache, &co), 0);
  }
  perfc_server_opts so;
  perfc_server_opts_init(&so);
  if (pool_threads) {
    so.pool_threads = pool_threads;
    so.pool_queue = pool_queue;
  }
  if (max_send)
    so.max_send_message_bytes = max_send;
  cr_assert_eq(test_server_new(&srv, &so), 0);
  int port = 0;
  cr_assert_eq(perfc_server_listen(srv, "127.0.0.1:0", &port), 0);
  if (with_cache)
    cr_assert_eq(perfc__test__v1__item_store__perfc_register_cached(
                     srv, &handlers, NULL, cache),
                 0);
  else
    cr_assert_eq(
        perfc__test__v1__item_store__perfc_register(srv, &handlers, NULL), 0);
  cr_assert_eq(perfc_server_start(srv), 0);
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  cr_assert_eq(perfc_channel_new(&ch, target, NULL), 0);
}

static void setup_cached(void) { start(1); }
static void setup_plain(void) { start(0); }

static void teardown(void) {
  perfc_channel_free(ch);
  perfc_server_free(srv);
  perfc_cache_free(cache);
  perfc_redis_pool_free(pool);
  perfc_metrics_registry_free(reg);
  if (redis.pid > 0)
    tr_stop(&redis);
  memset(&redis, 0, sizeof redis);
  ch = NULL, srv = NULL, cache = NULL, pool = NULL, reg = NULL;
}

/* ---- calls ------------------------------------------------------------ */

/* GetItem(id): returns the status; fills name/version on OK. */
static perfc_status_code get(int64_t id, char *name, size_t name_len,
                             int64_t *version) {
  Perfc__Test__V1__GetItemRequest req = PERFC__TEST__V1__GET_ITEM_REQUEST__INIT;
  req.id = id;
  Perfc__Test__V1__CachedItem *resp = NULL;
  perfc_status st = {0};
  perfc_status_code c =
      perfc__test__v1__item_store__get_item__call(ch, &req, &resp, NULL, &st);
  if (c == PERFC_STATUS_OK) {
    cr_assert_eq(resp->id, id);
    if (name)
      snprintf(name, name_len, "%s", resp->name);
    if (version)
      *version = resp->version;
  }
  if (resp)
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  perfc_status_reset(&st);
  return c;
}

static perfc_status_code update(int64_t id, const char *name) {
  Perfc__Test__V1__CachedItem item = PERFC__TEST__V1__CACHED_ITEM__INIT;
  item.id = id;
  item.name = (char *)name;
  Perfc__Test__V1__UpdateItemRequest req =
      PERFC__TEST__V1__UPDATE_ITEM_REQUEST__INIT;
  req.item = &item;
  Perfc__Test__V1__CachedItem *resp = NULL;
  perfc_status st = {0};
  perfc_status_code c = perfc__test__v1__item_store__update_item__call(
      ch, &req, &resp, NULL, &st);
  if (resp)
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  perfc_status_reset(&st);
  return c;
}

static perfc_status_code del(int64_t id) {
  Perfc__Test__V1__DeleteItemRequest req =
      PERFC__TEST__V1__DELETE_ITEM_REQUEST__INIT;
  req.id = id;
  Perfc__Test__V1__DeleteItemResponse *resp = NULL;
  perfc_status st = {0};
  perfc_status_code c = perfc__test__v1__item_store__delete_item__call(
      ch, &req, &resp, NULL, &st);
  if (resp)
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  perfc_status_reset(&st);
  return c;
}

/* Puts `len` bytes into L1 as item 7's entry and calls GetItem(7), which
 * finds them there; returns the status, with its message in `st` (reset by
 * the caller). */
static perfc_status_code get_with_l1_bytes(const uint8_t *bytes, size_t len,
                                           perfc_status *st) {
  cr_assert_eq(perfc_l1cache_set(perfc_cache_l1(cache), "item:7",
                                 (perfc_slice){bytes, len}, 60000),
               0);
  Perfc__Test__V1__GetItemRequest req = PERFC__TEST__V1__GET_ITEM_REQUEST__INIT;
  req.id = 7;
  Perfc__Test__V1__CachedItem *resp = NULL;
  perfc_status_code c =
      perfc__test__v1__item_store__get_item__call(ch, &req, &resp, NULL, st);
  if (c != PERFC_STATUS_OK)
    cr_assert_null(resp);
  if (resp)
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  return c;
}

/* ---- tests ------------------------------------------------------------ */

TestSuite(cached, .init = setup_cached, .fini = teardown, .timeout = 60);

Test(cached, first_get_loads_second_is_served_from_cache) {
  char name[32];
  int64_t v = 0;
  cr_assert_eq(get(3, name, sizeof name, &v), PERFC_STATUS_OK);
  cr_assert_str_eq(name, "item-3");
  cr_assert_eq(v, 1);
  cr_assert_eq(atomic_load(&loads), 1);
  for (int i = 0; i < 5; i++) {
    cr_assert_eq(get(3, name, sizeof name, &v), PERFC_STATUS_OK);
    cr_assert_str_eq(name, "item-3");
  }
  cr_assert_eq(atomic_load(&loads), 1, "hits must not call the load");
  /* The entry is in Redis too: with L1 cleared, the next call is an L2 hit. */
  perfc_l1cache_clear(perfc_cache_l1(cache));
  cr_assert_eq(get(3, name, sizeof name, &v), PERFC_STATUS_OK);
  cr_assert_str_eq(name, "item-3");
  cr_assert_eq(atomic_load(&loads), 1);
  perfc_cache_stats s;
  perfc_cache_stats_get(cache, &s);
  cr_assert_eq(s.l2_hits, 1);
  cr_assert_geq(s.l1_hits, 5);
}

/* Pool jobs done once the pool is idle (bounded wait: a worker counts its
 * job a moment after the client has the answer). */
static uint64_t pool_done_settled(void) {
  perfc_pool_stats ps = {0};
  for (int i = 0; i < 400; i++) {
    cr_assert_eq(perfc__server_pool_stats(srv, &ps), 0);
    if (ps.queued == 0 && ps.busy == 0)
      break;
    usleep(5 * 1000);
  }
  usleep(20 * 1000);
  cr_assert_eq(perfc__server_pool_stats(srv, &ps), 0);
  return ps.done;
}

/* #16 item 5, first step: on h2 an L1 miss reads Redis with a plain GET on
 * the call's loop, and a hit (a value, or a cached "not found") is
 * answered there without a worker; a Redis miss still loads once on the
 * pool. On the C core (no loop) every L1 miss goes to the pool, as
 * before. The counters are the synchronous path's either way. */
Test(cached, l2_hit_is_answered_on_the_loop_without_a_worker) {
  char name[32];
  cr_assert_eq(get(4, name, sizeof name, NULL), PERFC_STATUS_OK);
  cr_assert_eq(get(40, NULL, 0, NULL), PERFC_STATUS_NOT_FOUND);
  cr_assert_eq(atomic_load(&loads), 2);
  perfc_l1cache_clear(perfc_cache_l1(cache));
  uint64_t done0 = pool_done_settled();
  perfc_cache_stats s0;
  perfc_cache_stats_get(cache, &s0);
  cr_assert_eq(get(4, name, sizeof name, NULL), PERFC_STATUS_OK);
  cr_assert_str_eq(name, "item-4");
  cr_assert_eq(get(40, NULL, 0, NULL), PERFC_STATUS_NOT_FOUND);
  cr_assert_eq(atomic_load(&loads), 2, "L2 hits must not load");
  uint64_t done1 = pool_done_settled();
  cr_assert_eq(done1 - done0, test_transport_is_h2() ? 0u : 2u,
               "%llu pool jobs for two L2 hits",
               (unsigned long long)(done1 - done0));
  perfc_cache_stats s;
  perfc_cache_stats_get(cache, &s);
  cr_assert_eq(s.l2_hits - s0.l2_hits, 2);
  cr_assert_eq(s.l1_misses - s0.l1_misses, 2);
  cr_assert_eq(s.negative_hits - s0.negative_hits, 1);
  /* The hits filled L1: the next calls are L1 hits. */
  cr_assert_eq(get(4, name, sizeof name, NULL), PERFC_STATUS_OK);
  cr_assert_eq(get(40, NULL, 0, NULL), PERFC_STATUS_NOT_FOUND);
  perfc_cache_stats_get(cache, &s0);
  cr_assert_eq(s0.l2_hits, s.l2_hits);
  /* A key Redis does not have: one load on the pool, then cached. */
  cr_assert_eq(get(5, name, sizeof name, NULL), PERFC_STATUS_OK);
  cr_assert_eq(atomic_load(&loads), 3);
}

/* A hit sends the stored bytes as they are, without decoding them: an
 * entry holding another valid CachedItem encoding comes back as that item.
 * Bytes that are not plain protobuf fields are not sent: they are decoded,
 * and what does not decode is INTERNAL naming the key, while the other
 * keys keep working. */
Test(cached, hits_send_stored_bytes_and_damaged_bytes_are_internal) {
  char name[32];
  cr_assert_eq(get(7, name, sizeof name, NULL), PERFC_STATUS_OK);
  cr_assert_eq(atomic_load(&loads), 1);
  Perfc__Test__V1__CachedItem other = PERFC__TEST__V1__CACHED_ITEM__INIT;
  other.id = 7;
  other.name = "stored-bytes";
  other.version = 42;
  uint8_t buf[64];
  size_t n = perfc__test__v1__cached_item__pack(&other, buf);
  perfc_l1cache *l1 = perfc_cache_l1(cache);
  cr_assert_eq(perfc_l1cache_set(l1, "item:7", (perfc_slice){buf, n}, 60000), 0);
  int64_t version = 0;
  cr_assert_eq(get(7, name, sizeof name, &version), PERFC_STATUS_OK);
  cr_assert_str_eq(name, "stored-bytes");
  cr_assert_eq(version, 42);

  static const uint8_t damaged[] = {0x0b, 0x0c}; /* a group: not plain */
  perfc_status st = {0};
  cr_assert_eq(get_with_l1_bytes(damaged, sizeof damaged, &st),
               PERFC_STATUS_INTERNAL);
  cr_assert_not_null(st.message);
  cr_assert(strstr(st.message, "item:7") != NULL, "%s", st.message);
  perfc_status_reset(&st);
  cr_assert_eq(get(8, name, sizeof name, NULL), PERFC_STATUS_OK);
  cr_assert_str_eq(name, "item-8");
  cr_assert_eq(atomic_load(&loads), 2, "hits, even damaged ones, never load");
}

Test(cached, not_found_is_cached_for_negative_ttl) {
  cr_assert_eq(get(40, NULL, 0, NULL), PERFC_STATUS_NOT_FOUND);
  cr_assert_eq(atomic_load(&loads), 1);
  for (int i = 0; i < 5; i++)
    cr_assert_eq(get(40, NULL, 0, NULL), PERFC_STATUS_NOT_FOUND);
  cr_assert_eq(atomic_load(&loads), 1, "negative hits must not load");
  /* negative_ttl is 1s (± 5 % jitter): after it the key is loaded again. */
  tr_sleep_ms(1300);
  cr_assert_eq(get(40, NULL, 0, NULL), PERFC_STATUS_NOT_FOUND);
  cr_assert_eq(atomic_load(&loads), 2);
}

Test(cached, update_invalidates_and_next_get_sees_new_value) {
  char name[32];
  int64_t v = 0;
  cr_assert_eq(get(5, name, sizeof name, &v), PERFC_STATUS_OK);
  cr_assert_eq(get(5, name, sizeof name, &v), PERFC_STATUS_OK);
  cr_assert_eq(atomic_load(&loads), 1);
  cr_assert_eq(update(5, "renamed"), PERFC_STATUS_OK);
  cr_assert_eq(get(5, name, sizeof name, &v), PERFC_STATUS_OK);
  cr_assert_str_eq(name, "renamed");
  cr_assert_eq(v, 2);
  cr_assert_eq(atomic_load(&loads), 2, "the update must invalidate");
  cr_assert_eq(get(5, name, sizeof name, &v), PERFC_STATUS_OK);
  cr_assert_eq(atomic_load(&loads), 2);
  /* Nested key "item:{item.id}" and a failed update (no invalidation). */
  cr_assert_eq(update(0, "x"), PERFC_STATUS_INVALID_ARGUMENT);
  cr_assert_eq(get(5, name, sizeof name, &v), PERFC_STATUS_OK);
  cr_assert_eq(atomic_load(&loads), 2);
  perfc_cache_stats s;
  perfc_cache_stats_get(cache, &s);
  cr_assert_eq(s.invalidations, 1);
}

Test(cached, delete_invalidates_and_not_found_follows) {
  cr_assert_eq(get(7, NULL, 0, NULL), PERFC_STATUS_OK);
  cr_assert_eq(del(7), PERFC_STATUS_OK);
  cr_assert_eq(get(7, NULL, 0, NULL), PERFC_STATUS_NOT_FOUND);
  cr_assert_eq(atomic_load(&loads), 2);
}

Test(cached, load_errors_pass_through_and_are_not_cached) {
  for (int i = 1; i <= 3; i++) {
    cr_assert_eq(get(FAILING_ID, NULL, 0, NULL), PERFC_STATUS_UNAVAILABLE);
    cr_assert_eq(atomic_load(&loads), i);
  }
}

#define N_THREADS 32

static pthread_barrier_t barrier;

static void *get_missing(void *arg) {
  perfc_status_code *out = arg;
  pthread_barrier_wait(&barrier);
  *out = get(50, NULL, 0, NULL);
  return NULL;
}

Test(cached, concurrent_gets_of_one_missing_key_load_once) {
  /* The load is slow so that every call arrives while it runs. */
  atomic_store(&load_delay_ms, 300);
  pthread_t th[N_THREADS];
  perfc_status_code codes[N_THREADS];
  pthread_barrier_init(&barrier, NULL, N_THREADS);
  for (int i = 0; i < N_THREADS; i++)
    cr_assert_eq(pthread_create(&th[i], NULL, get_missing, &codes[i]), 0);
  for (int i = 0; i < N_THREADS; i++)
    pthread_join(th[i], NULL);
  pthread_barrier_destroy(&barrier);
  for (int i = 0; i < N_THREADS; i++)
    cr_assert_eq(codes[i], PERFC_STATUS_NOT_FOUND, "thread %d: %d", i,
                 codes[i]);
  cr_assert_eq(atomic_load(&loads), 1);
}

Test(cached, redis_killed_gets_are_answered_by_the_loader) {
  char name[32];
  cr_assert_eq(get(1, name, sizeof name, NULL), PERFC_STATUS_OK);
  tr_kill(&redis);
  /* New keys: Redis is consulted, fails within its timeout, the load answers.
   */
  for (int id = 2; id <= 4; id++) {
    cr_assert_eq(get(id, name, sizeof name, NULL), PERFC_STATUS_OK);
    char want[32];
    snprintf(want, sizeof want, "item-%d", id);
    cr_assert_str_eq(name, want);
  }
  cr_assert_eq(atomic_load(&loads), 4);
  /* Writes still succeed; their Redis deletes wait for a retry. */
  cr_assert_eq(update(2, "while-down"), PERFC_STATUS_OK);
  cr_assert_eq(get(2, name, sizeof name, NULL), PERFC_STATUS_OK);
  cr_assert_str_eq(name, "while-down");
  perfc_cache_stats s;
  perfc_cache_stats_get(cache, &s);
  cr_assert_gt(s.l2_errors, 0);
  /* Back up: the delete queued while Redis was down is retried. */
  cr_assert_eq(tr_restart(&redis), 0);
  for (int i = 0; i < 300 && perfc_cache_pending_invalidations(cache) > 0; i++)
    tr_sleep_ms(10);
  cr_assert_eq(perfc_cache_pending_invalidations(cache), 0);
}

TestSuite(plain, .init = setup_plain, .fini = teardown, .timeout = 60);

/* Without a cache every call reaches the handler. */
Test(plain, without_a_cache_every_get_loads) {
  for (int i = 1; i <= 3; i++) {
    cr_assert_eq(get(3, NULL, 0, NULL), PERFC_STATUS_OK);
    cr_assert_eq(atomic_load(&loads), i);
  }
  cr_assert_eq(get(40, NULL, 0, NULL), PERFC_STATUS_NOT_FOUND);
  cr_assert_eq(get(40, NULL, 0, NULL), PERFC_STATUS_NOT_FOUND);
  cr_assert_eq(atomic_load(&loads), 5);
  cr_assert_eq(update(3, "new"), PERFC_STATUS_OK);
}

/* ---- the send limit holds for cached bytes too -------------------------- */

static void setup_small_send_limit(void) {
  max_send = 100;
  start(1);
}

TestSuite(send_limit, .init = setup_small_send_limit, .fini = teardown,
          .timeout = 60);

/* A hit is sent as the stored bytes, without packing `resp`; it is held to
 * max_send_message_bytes all the same: RESOURCE_EXHAUSTED naming the size
 * and the limit, and the next call is served. */
Test(send_limit, a_cached_response_over_the_send_limit_is_resource_exhausted) {
  char name[32];
  cr_assert_eq(get(7, name, sizeof name, NULL), PERFC_STATUS_OK);
  Perfc__Test__V1__CachedItem big = PERFC__TEST__V1__CACHED_ITEM__INIT;
  char long_name[300];
  memset(long_name, 'n', sizeof long_name - 1);
  long_name[sizeof long_name - 1] = '\0';
  big.id = 7;
  big.name = long_name;
  uint8_t buf[512];
  size_t n = perfc__test__v1__cached_item__pack(&big, buf);
  cr_assert_gt(n, 100);
  perfc_status st = {0};
  cr_assert_eq(get_with_l1_bytes(buf, n, &st), PERFC_STATUS_RESOURCE_EXHAUSTED);
  char want[96];
  snprintf(want, sizeof want, "response of %zu bytes exceeds the 100-byte send limit", n);
  cr_assert(st.message != NULL && strstr(st.message, want) != NULL, "%s",
            st.message ? st.message : "(none)");
  perfc_status_reset(&st);
  cr_assert_eq(get(8, name, sizeof name, NULL), PERFC_STATUS_OK);
  cr_assert_str_eq(name, "item-8");
  cr_assert_eq(atomic_load(&loads), 2, "the oversized hit did not load");
}

/* ---- L1 hits are answered on the poller (try_inline) ---------------------- */

static void setup_one_worker(void) {
  pool_threads = 1;
  pool_queue = 1;
  start(1);
}

static void *get_slow(void *arg) {
  perfc_status_code *out = arg;
  *out = get(5, NULL, 0, NULL);
  return NULL;
}

TestSuite(inline_hits, .init = setup_one_worker, .fini = teardown,
          .timeout = 60);

/* GetItem runs on the pool, whose one worker and one queue slot are taken
 * by slow loads: a call that needed the pool would be refused at once with
 * RESOURCE_EXHAUSTED. A key already in L1, and a cached "not found", are
 * still answered, without a load, because the poller answers them. */
Test(inline_hits, l1_hits_and_cached_not_found_need_no_worker) {
  char name[32];
  cr_assert_eq(get(1, name, sizeof name, NULL), PERFC_STATUS_OK);
  cr_assert_eq(get(40, NULL, 0, NULL), PERFC_STATUS_NOT_FOUND);
  cr_assert_eq(atomic_load(&loads), 2);
  atomic_store(&load_delay_ms, 1500);
  pthread_t th[2];
  perfc_status_code codes[2];
  cr_assert_eq(pthread_create(&th[0], NULL, get_slow, &codes[0]), 0);
  /* The first is on the worker (its load started) before the second
   * queues; waited for, not guessed, so a loaded TSan build keeps up. */
  for (int i = 0; i < 500 && atomic_load(&loads) == 2; i++)
    tr_sleep_ms(10);
  cr_assert_eq(atomic_load(&loads), 3, "the first slow load never started");
  cr_assert_eq(pthread_create(&th[1], NULL, get_slow, &codes[1]), 0);
  /* The second reaches the server and takes the one queue slot. */
  perfc_pool_stats ps = {0};
  for (int i = 0; i < 500; i++) {
    cr_assert_eq(perfc__server_pool_stats(srv, &ps), 0);
    if (ps.queued == 1)
      break;
    tr_sleep_ms(10);
  }
  cr_assert_eq(ps.queued, 1, "the second slow call never queued");
  cr_assert_eq(get(2, NULL, 0, NULL), PERFC_STATUS_RESOURCE_EXHAUSTED,
               "a miss needs the (full) pool");
  for (int i = 0; i < 20; i++) {
    cr_assert_eq(get(1, name, sizeof name, NULL), PERFC_STATUS_OK, "hit %d", i);
    cr_assert_str_eq(name, "item-1");
    cr_assert_eq(get(40, NULL, 0, NULL), PERFC_STATUS_NOT_FOUND);
  }
  for (int i = 0; i < 2; i++) {
    pthread_join(th[i], NULL);
    cr_assert_eq(codes[i], PERFC_STATUS_OK);
  }
  /* 1, 40, then 5 once (the second slow call shared its flight or hit L1). */
  cr_assert_leq(atomic_load(&loads), 4);
  perfc_cache_stats cs;
  perfc_cache_stats_get(cache, &cs);
  cr_assert_geq(cs.l1_hits, 40, "inline answers count as L1 hits");
}

/* A miss decoded on the poller and then queued for the worker still gets
 * the pool's deadline check when the worker takes it: a call whose
 * deadline passed in the queue is not loaded. */
Test(inline_hits, a_miss_that_expired_in_the_queue_is_not_loaded) {
  atomic_store(&load_delay_ms, 1000);
  pthread_t th;
  perfc_status_code slow_code;
  cr_assert_eq(pthread_create(&th, NULL, get_slow, &slow_code), 0);
  /* Wait until the slow load holds the one worker (a fixed 150 ms was too
   * short for a loaded TSan build, 2 runs in 7). */
  for (int i = 0; i < 500 && atomic_load(&loads) == 0; i++)
    tr_sleep_ms(10);
  cr_assert_eq(atomic_load(&loads), 1, "the slow load never started");
  Perfc__Test__V1__GetItemRequest req = PERFC__TEST__V1__GET_ITEM_REQUEST__INIT;
  req.id = 6;
  Perfc__Test__V1__CachedItem *resp = NULL;
  perfc_call_opts co = {.timeout_ms = 200};
  cr_assert_eq(perfc__test__v1__item_store__get_item__call(ch, &req, &resp, &co, NULL),
               PERFC_STATUS_DEADLINE_EXCEEDED);
  pthread_join(th, NULL);
  cr_assert_eq(slow_code, PERFC_STATUS_OK);
  tr_sleep_ms(200); /* the worker has taken the expired call by now */
  cr_assert_eq(atomic_load(&loads), 1, "only item 5 was loaded");
}
