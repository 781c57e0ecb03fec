/* test_redis.c — runtime/src/data/redis.c against a real redis-server on
 * loopback: commands, MGET/pipelined SET with TTL, DEL, pool bound and
 * acquire timeout, server down reported fast, reconnect after restart,
 * health check of idle connections, pub/sub with resubscribe. */
#include <criterion/criterion.h>
#include <perfc/metrics.h>
#include <perfc/redis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "redis_server.h"

static test_redis srv;

/* Options aimed at this suite's redis-server, with a fresh registry (the
 * caller frees it) so each test's metrics start at zero. */
static perfc_redis_opts opts_for_test(perfc_metrics_registry **reg) {
  cr_assert_eq(perfc_metrics_registry_new(reg), 0);
  perfc_redis_opts o;
  perfc_redis_opts_init(&o);
  o.port = srv.port;
  o.registry = *reg;
  return o;
}

static void up(void) { cr_assert_eq(tr_start(&srv), 0, "redis-server start"); }
static void down(void) { tr_stop(&srv); }

static double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static perfc_slice S(const char *s) {
  perfc_slice v = {(const uint8_t *)s, strlen(s)};
  return v;
}

static perfc_redis_pool *mkpool(perfc_metrics_registry *reg, unsigned size) {
  perfc_redis_opts o;
  perfc_redis_opts_init(&o);
  o.port = srv.port;
  o.pool_size = size;
  o.registry = reg;
  o.backoff_min_ms = 20;
  o.backoff_max_ms = 100;
  perfc_redis_pool *p = NULL;
  cr_assert_eq(perfc_redis_pool_new(&p, &o), 0);
  return p;
}

TestSuite(redis, .init = up, .fini = down, .timeout = 60);

Test(redis, get_set_del_ttl) {
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_redis_pool *p = mkpool(reg, 2);
  cr_assert_eq(perfc_redis_ping(p), 0);
  uint8_t *v;
  size_t n;
  cr_assert_eq(perfc_redis_get(p, "k", &v, &n), PERFC_ENOENT);
  cr_assert_eq(perfc_redis_set(p, "k", S("v1"), 0), 0);
  cr_assert_eq(perfc_redis_get(p, "k", &v, &n), 0);
  cr_assert_eq(n, 2);
  cr_assert_eq(memcmp(v, "v1", 2), 0);
  free(v);
  /* Binary values with NULs survive. */
  const uint8_t bin[] = {0, 1, 0, 255};
  perfc_slice sb = {bin, sizeof bin};
  cr_assert_eq(perfc_redis_set(p, "b", sb, 0), 0);
  cr_assert_eq(perfc_redis_get(p, "b", &v, &n), 0);
  cr_assert_eq(n, 4);
  cr_assert_eq(memcmp(v, bin, 4), 0);
  free(v);
  /* PX expiry. */
  cr_assert_eq(perfc_redis_set(p, "t", S("x"), 50), 0);
  tr_sleep_ms(120);
  cr_assert_eq(perfc_redis_get(p, "t", &v, &n), PERFC_ENOENT);
  const char *keys[] = {"k", "b", "absent"};
  cr_assert_eq(perfc_redis_del(p, keys, 3), 0);
  cr_assert_eq(perfc_redis_get(p, "k", &v, &n), PERFC_ENOENT);
  perfc_redis_pool_stats st;
  perfc_redis_pool_stats_get(p, &st);
  cr_assert_eq(st.in_use, 0);
  cr_assert_eq(st.idle, 1);
  cr_assert_eq(st.connects, 1);
  cr_assert_eq(st.errors, 0);
  perfc_redis_pool_free(p);
  perfc_metrics_registry_free(reg);
}

Test(redis, mget_and_pipelined_set) {
  perfc_metrics_registry *reg;
  perfc_redis_opts o = opts_for_test(&reg);
  o.batch_keys = 7; /* forces several MGETs in one pipeline */
  perfc_redis_pool *p;
  cr_assert_eq(perfc_redis_pool_new(&p, &o), 0);
  enum { N = 50 };
  char kbuf[N][16], vbuf[N][16];
  const char *keys[N + 1];
  perfc_redis_item items[N];
  for (int i = 0; i < N; i++) {
    snprintf(kbuf[i], 16, "m%d", i);
    snprintf(vbuf[i], 16, "val%d", i);
    keys[i] = kbuf[i];
    items[i].key = kbuf[i];
    items[i].value = S(vbuf[i]);
    items[i].ttl_ms = (i % 2) ? 60 : 0; /* odd keys expire quickly */
  }
  keys[N] = "missing";
  cr_assert_eq(perfc_redis_set_many(p, items, N), 0);
  perfc_redis_value out[N + 1];
  cr_assert_eq(perfc_redis_mget(p, keys, N + 1, out), 0);
  for (int i = 0; i < N; i++) {
    cr_assert(out[i].found);
    cr_assert_eq(out[i].len, strlen(vbuf[i]));
    cr_assert_eq(memcmp(out[i].data, vbuf[i], out[i].len), 0);
  }
  cr_assert_not(out[N].found);
  perfc_redis_values_free(out, N + 1);
  tr_sleep_ms(150);
  cr_assert_eq(perfc_redis_mget(p, keys, N, out), 0);
  for (int i = 0; i < N; i++)
    cr_assert_eq(out[i].found, i % 2 == 0, "key %d", i);
  perfc_redis_values_free(out, N);
  perfc_redis_pool_free(p);
  perfc_metrics_registry_free(reg);
}

static perfc_redis_pool *g_pool;
static atomic_int g_ok;

static void *pinger(void *arg) {
  (void)arg;
  for (int i = 0; i < 200; i++)
    if (perfc_redis_ping(g_pool) == 0)
      atomic_fetch_add(&g_ok, 1);
  return NULL;
}

Test(redis, pool_bounded_under_threads) {
  perfc_metrics_registry *reg;
  perfc_redis_opts o = opts_for_test(&reg);
  o.pool_size = 3;
  o.acquire_timeout_ms = 2000;
  cr_assert_eq(perfc_redis_pool_new(&g_pool, &o), 0);
  atomic_store(&g_ok, 0);
  pthread_t t[8];
  for (int i = 0; i < 8; i++)
    pthread_create(&t[i], NULL, pinger, NULL);
  for (int i = 0; i < 8; i++)
    pthread_join(t[i], NULL);
  cr_assert_eq(atomic_load(&g_ok), 8 * 200);
  perfc_redis_pool_stats st;
  perfc_redis_pool_stats_get(g_pool, &st);
  cr_assert_leq(st.connects, 3);
  cr_assert_leq(st.idle, 3);
  cr_assert_eq(st.in_use, 0);
  /* The metrics are there, by pool name. */
  char *text;
  size_t len;
  cr_assert_eq(perfc_metrics_registry_render(reg, &text, &len), 0);
  cr_assert(strstr(text, "perfc_redis_pool_connections{pool=\"default\","
                         "state=\"in_use\"} 0"));
  cr_assert(strstr(
      text, "perfc_redis_pool_wait_seconds_count{pool=\"default\"} 1600"));
  free(text);
  perfc_redis_pool_free(g_pool);
  perfc_metrics_registry_free(reg);
}

Test(redis, acquire_times_out_when_pool_exhausted) {
  perfc_metrics_registry *reg;
  perfc_redis_opts o = opts_for_test(&reg);
  o.pool_size = 1;
  o.acquire_timeout_ms = 50;
  o.command_timeout_ms = 1000;
  cr_assert_eq(perfc_redis_pool_new(&g_pool, &o), 0);
  cr_assert_eq(perfc_redis_ping(g_pool), 0);
  /* Freeze the server so the one connection stays busy in a command. */
  kill(srv.pid, SIGSTOP);
  atomic_store(&g_ok, 0);
  pthread_t t;
  pthread_create(&t, NULL, pinger, NULL); /* its first PING hangs */
  tr_sleep_ms(100);
  double t0 = mono();
  int rc = perfc_redis_ping(g_pool);
  double dt = mono() - t0;
  kill(srv.pid, SIGCONT);
  pthread_join(t, NULL);
  cr_assert_eq(rc, PERFC_ETIMEDOUT);
  cr_assert_lt(dt, 0.5, "acquire waited %.3fs", dt);
  perfc_redis_pool_free(g_pool);
  perfc_metrics_registry_free(reg);
}

Test(redis, command_timeout_bounds_a_hung_server) {
  perfc_metrics_registry *reg;
  perfc_redis_opts o = opts_for_test(&reg);
  o.command_timeout_ms = 100;
  o.backoff_min_ms = 200;
  o.backoff_max_ms = 400;
  perfc_redis_pool *p;
  cr_assert_eq(perfc_redis_pool_new(&p, &o), 0);
  cr_assert_eq(perfc_redis_ping(p), 0);
  kill(srv.pid, SIGSTOP);
  double t0 = mono();
  int rc = perfc_redis_ping(p);
  double dt = mono() - t0;
  cr_assert_eq(rc, PERFC_ETIMEDOUT);
  cr_assert_lt(dt, 0.5, "hung for %.3fs", dt);
  /* The timeout makes the pool suspect the server: further calls are
   * refused at once instead of each waiting for a timeout (a connect to a
   * stopped server still succeeds, so only the backoff prevents that). */
  perfc_redis_pool_stats st;
  perfc_redis_pool_stats_get(p, &st);
  cr_assert(st.backing_off);
  t0 = mono();
  for (int i = 0; i < 100; i++)
    cr_assert_eq(perfc_redis_ping(p), PERFC_EIO);
  dt = mono() - t0;
  cr_assert_lt(dt, 0.05, "100 refusals took %.3fs", dt);
  /* After the backoff one probe goes through; still frozen, it times out
   * and the backoff grows. */
  tr_sleep_ms(220);
  cr_assert_eq(perfc_redis_ping(p), PERFC_ETIMEDOUT);
  cr_assert_eq(perfc_redis_ping(p), PERFC_EIO);
  kill(srv.pid, SIGCONT);
  /* Thawed: once the backoff passes, the probe succeeds and clears it. */
  int ok = 0;
  for (int i = 0; i < 100 && !ok; i++) {
    ok = perfc_redis_ping(p) == 0;
    if (!ok)
      tr_sleep_ms(20);
  }
  cr_assert(ok);
  perfc_redis_pool_stats_get(p, &st);
  cr_assert_not(st.backing_off);
  cr_assert_geq(st.errors, 102);
  perfc_redis_pool_free(p);
  perfc_metrics_registry_free(reg);
}

static perfc_redis_pool *g_del_pool;
static int g_del_rc;

static void *del_thread(void *arg) {
  (void)arg;
  const char *keys[] = {"d1", "d2"};
  g_del_rc = perfc_redis_del(g_del_pool, keys, 2);
  return NULL;
}

Test(redis, del_retries_through_a_transient_failure) {
  perfc_metrics_registry *reg;
  perfc_redis_opts o = opts_for_test(&reg);
  o.command_timeout_ms = 100;
  o.del_retries = 5;
  cr_assert_eq(perfc_redis_pool_new(&g_del_pool, &o), 0);
  cr_assert_eq(perfc_redis_set(g_del_pool, "d1", S("x"), 0), 0);
  cr_assert_eq(perfc_redis_set(g_del_pool, "d2", S("y"), 0), 0);
  /* The first attempt times out on a frozen server; a retry after it
   * thaws succeeds. */
  kill(srv.pid, SIGSTOP);
  pthread_t t;
  pthread_create(&t, NULL, del_thread, NULL);
  tr_sleep_ms(150);
  kill(srv.pid, SIGCONT);
  pthread_join(t, NULL);
  cr_assert_eq(g_del_rc, 0);
  uint8_t *v;
  size_t n;
  cr_assert_eq(perfc_redis_get(g_del_pool, "d1", &v, &n), PERFC_ENOENT);
  cr_assert_eq(perfc_redis_get(g_del_pool, "d2", &v, &n), PERFC_ENOENT);
  perfc_redis_pool_stats st;
  perfc_redis_pool_stats_get(g_del_pool, &st);
  cr_assert_geq(st.errors, 1, "the first attempt should have failed");
  perfc_redis_pool_free(g_del_pool);
  perfc_metrics_registry_free(reg);
}

Test(redis, down_is_fast_and_restart_is_used_again) {
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_redis_pool *p = mkpool(reg, 4);
  cr_assert_eq(perfc_redis_set(p, "a", S("1"), 0), 0);
  tr_kill(&srv);
  /* The idle connection is dead: the first command fails on it, later ones
   * are refused by the backoff without touching the network. */
  double worst = 0;
  for (int i = 0; i < 200; i++) {
    uint8_t *v;
    size_t n;
    double t0 = mono();
    int rc = perfc_redis_get(p, "a", &v, &n);
    double dt = mono() - t0;
    if (dt > worst)
      worst = dt;
    cr_assert(rc == PERFC_EIO || rc == PERFC_ETIMEDOUT, "rc %d", rc);
  }
  cr_assert_lt(worst, 0.3, "slowest failure took %.3fs", worst);
  perfc_redis_pool_stats st;
  perfc_redis_pool_stats_get(p, &st);
  cr_assert_geq(st.errors, 200);
  cr_assert_eq(tr_restart(&srv), 0);
  /* Used again once the backoff (max 100 ms here) has passed. */
  int ok = 0;
  for (int i = 0; i < 100 && !ok; i++) {
    ok = perfc_redis_ping(p) == 0;
    if (!ok)
      tr_sleep_ms(20);
  }
  cr_assert(ok, "pool did not reconnect");
  cr_assert_eq(perfc_redis_set(p, "a", S("2"), 0), 0);
  perfc_redis_pool_free(p);
  perfc_metrics_registry_free(reg);
}

Test(redis, idle_connection_health_checked) {
  perfc_metrics_registry *reg;
  perfc_redis_opts o = opts_for_test(&reg);
  o.health_check_ms = 10;
  perfc_redis_pool *p;
  cr_assert_eq(perfc_redis_pool_new(&p, &o), 0);
  cr_assert_eq(perfc_redis_ping(p), 0);
  /* Restart the server behind the idle connection: the PING on acquire
   * notices and reconnects, so the caller's command succeeds. */
  tr_kill(&srv);
  cr_assert_eq(tr_restart(&srv), 0);
  tr_sleep_ms(20);
  cr_assert_eq(perfc_redis_set(p, "h", S("x"), 0), 0);
  perfc_redis_pool_stats st;
  perfc_redis_pool_stats_get(p, &st);
  cr_assert_eq(st.connects, 2);
  perfc_redis_pool_free(p);
  perfc_metrics_registry_free(reg);
}

typedef struct sub_log {
  pthread_mutex_t mu;
  int subscribed;
  int unsubscribed;
  int messages;
  char last[64];
} sub_log;

static void on_msg(perfc_redis_sub_event ev, const char *channel, perfc_slice m,
                   void *ud) {
  sub_log *l = ud;
  pthread_mutex_lock(&l->mu);
  if (ev == PERFC_REDIS_SUB_SUBSCRIBED) {
    l->subscribed++;
  } else if (ev == PERFC_REDIS_SUB_UNSUBSCRIBED) {
    l->unsubscribed++;
  } else {
    l->messages++;
    size_t n = m.len < sizeof l->last - 1 ? m.len : sizeof l->last - 1;
    memcpy(l->last, m.base, n);
    l->last[n] = 0;
  }
  (void)channel;
  pthread_mutex_unlock(&l->mu);
}

static int wait_messages(sub_log *l, int want) {
  for (int i = 0; i < 200; i++) {
    pthread_mutex_lock(&l->mu);
    int got = l->messages;
    pthread_mutex_unlock(&l->mu);
    if (got >= want)
      return got;
    tr_sleep_ms(10);
  }
  return -1;
}

Test(redis, pubsub_delivers_and_resubscribes) {
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_redis_pool *p = mkpool(reg, 2);
  perfc_redis_opts o;
  perfc_redis_opts_init(&o);
  o.port = srv.port;
  o.backoff_min_ms = 20;
  o.backoff_max_ms = 100;
  sub_log l = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, ""};
  perfc_redis_subscriber *s;
  cr_assert_eq(perfc_redis_subscriber_new(&s, &o, "chan", on_msg, &l), 0);
  cr_assert_eq(perfc_redis_subscriber_wait_ready(s, 5000), 0);
  cr_assert_eq(perfc_redis_publish(p, "chan", S("hello")), 0);
  cr_assert_eq(wait_messages(&l, 1), 1);
  cr_assert_str_eq(l.last, "hello");
  /* Server restart: the subscriber reconnects and subscribes again. */
  tr_kill(&srv);
  cr_assert_eq(tr_restart(&srv), 0);
  cr_assert_eq(perfc_redis_subscriber_wait_ready(s, 5000), 0);
  for (int i = 0; i < 100 && perfc_redis_publish(p, "chan", S("again")) != 0;
       i++)
    tr_sleep_ms(20);
  cr_assert_eq(wait_messages(&l, 2), 2);
  cr_assert_str_eq(l.last, "again");
  pthread_mutex_lock(&l.mu);
  cr_assert_eq(l.subscribed, 2);
  /* The lost subscription was reported once, between the two. */
  cr_assert_eq(l.unsubscribed, 1);
  pthread_mutex_unlock(&l.mu);
  double t0 = mono();
  perfc_redis_subscriber_free(s);
  cr_assert_lt(mono() - t0, 0.5);
  perfc_redis_pool_free(p);
  perfc_metrics_registry_free(reg);
}

Test(redis, subscriber_with_server_down_stops_promptly) {
  perfc_redis_opts o;
  perfc_redis_opts_init(&o);
  o.port = srv.port;
  tr_kill(&srv);
  sub_log l = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, ""};
  perfc_redis_subscriber *s;
  cr_assert_eq(perfc_redis_subscriber_new(&s, &o, "chan", on_msg, &l), 0);
  cr_assert_eq(perfc_redis_subscriber_wait_ready(s, 100), PERFC_ETIMEDOUT);
  double t0 = mono();
  perfc_redis_subscriber_free(s);
  cr_assert_lt(mono() - t0, 0.5);
  cr_assert_eq(l.subscribed, 0);
}

/* A frozen server shows no error on the subscribed connection; the
 * heartbeat PING must notice it within SUB_HEARTBEAT_MS + 2 *
 * command_timeout_ms (100 + 2 * 100 ms here) and report the subscription
 * lost, and the subscriber must come back once the server answers again. */
Test(redis, subscriber_heartbeat_notices_frozen_server) {
  perfc_redis_opts o;
  perfc_redis_opts_init(&o);
  o.port = srv.port;
  o.command_timeout_ms = 100;
  o.backoff_min_ms = 20;
  o.backoff_max_ms = 100;
  sub_log l = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, ""};
  perfc_redis_subscriber *s;
  cr_assert_eq(perfc_redis_subscriber_new(&s, &o, "hb", on_msg, &l), 0);
  cr_assert_eq(perfc_redis_subscriber_wait_ready(s, 5000), 0);
  /* Quiet but alive: heartbeats are answered, nothing is reported. */
  tr_sleep_ms(500);
  pthread_mutex_lock(&l.mu);
  cr_assert_eq(l.unsubscribed, 0);
  pthread_mutex_unlock(&l.mu);
  kill(srv.pid, SIGSTOP);
  double t0 = mono(), lost = -1;
  for (int i = 0; i < 300 && lost < 0; i++) {
    pthread_mutex_lock(&l.mu);
    if (l.unsubscribed == 1)
      lost = mono() - t0;
    pthread_mutex_unlock(&l.mu);
    if (lost < 0)
      tr_sleep_ms(5);
  }
  kill(srv.pid, SIGCONT);
  cr_log_info("frozen server noticed after %.0f ms", lost * 1000);
  cr_assert_geq(lost, 0, "the lost subscription was never reported");
  /* 300 ms is the bound; the rest is slack for a loaded machine. */
  cr_assert_lt(lost, 1.0);
  for (int i = 0; i < 200; i++) {
    pthread_mutex_lock(&l.mu);
    int sub = l.subscribed;
    pthread_mutex_unlock(&l.mu);
    if (sub == 2)
      break;
    tr_sleep_ms(10);
  }
  pthread_mutex_lock(&l.mu);
  cr_assert_eq(l.subscribed, 2);
  pthread_mutex_unlock(&l.mu);
  perfc_redis_subscriber_free(s);
}

/* #14: options copied whole and checked (durations int64 ms, negative
 * refused), and every failure leaves its reason in perfc_last_error(). */
Test(redis, options_checked_and_failures_say_why) {
  perfc_metrics_registry *reg;
  perfc_redis_opts o = opts_for_test(&reg);
  o.command_timeout_ms = -1;
  perfc_redis_pool *p = NULL;
  cr_assert_eq(perfc_redis_pool_new(&p, &o), PERFC_EINVAL);
  cr_assert_null(p);
  cr_assert(strstr(perfc_last_error(), "-1 ms") != NULL, "%s",
            perfc_last_error());
  o.command_timeout_ms = (int64_t)PERFC_REDIS_MAX_DURATION_MS + 1;
  cr_assert_eq(perfc_redis_pool_new(&p, &o), PERFC_EINVAL);
  o.command_timeout_ms = 0; /* default */
  o.port = 70000;
  cr_assert_eq(perfc_redis_pool_new(&p, &o), PERFC_EINVAL);
  /* A port nothing listens on: EIO naming the address, then the backoff
   * refusal says so too. */
  o.port = 1;
  cr_assert_eq(perfc_redis_pool_new(&p, &o), 0);
  cr_assert_eq(perfc_redis_ping(p), PERFC_EIO);
  cr_assert(strstr(perfc_last_error(), "cannot connect") != NULL, "%s",
            perfc_last_error());
  cr_assert(strstr(perfc_last_error(), ":1") != NULL, "%s", perfc_last_error());
  cr_assert_eq(perfc_redis_ping(p), PERFC_EIO);
  cr_assert(strstr(perfc_last_error(), "backoff") != NULL, "%s",
            perfc_last_error());
  /* A negative item TTL is refused before anything is sent. */
  perfc_redis_pool_free(p);
  o.port = srv.port;
  cr_assert_eq(perfc_redis_pool_new(&p, &o), 0);
  perfc_slice v = {(const uint8_t *)"v", 1};
  cr_assert_eq(perfc_redis_set(p, "k14", v, -1), PERFC_EINVAL);
  cr_assert_eq(perfc_redis_set(p, "k14", v, 60000), 0);
  perfc_redis_pool_free(p);
  perfc_metrics_registry_free(reg);
}
