/* test_pg_async.c — a deferred handler that queries PostgreSQL on the
 * loops (perfc/deferred.h + perfc/pg_async.h), served on both transports
 * (CTest integration.pg_async and .core), inline and on the pool, with a
 * throwaway cluster (scripts/pg-up).
 *
 * Echo becomes "look up the id in `message` and answer its name": the
 * handler of docs/data-layer.md's worked example, holding no thread while
 * PostgreSQL answers. Checked: 400 calls at once, each gets its own row;
 * fewer Syncs (writes) than queries (pipelining across calls); an id with
 * no row is NOT_FOUND; PostgreSQL killed (SIGQUIT, immediate shutdown)
 * with every call's query in flight: every call ends UNAVAILABLE within a
 * bound and none hangs; after a restart calls succeed again. */
#if defined(__SANITIZE_THREAD__)
#define SAN_SLOW 10
#elif defined(__SANITIZE_ADDRESS__)
#define SAN_SLOW 3
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SAN_SLOW 10
#elif __has_feature(address_sanitizer)
#define SAN_SLOW 3
#endif
#endif
#ifndef SAN_SLOW
#define SAN_SLOW 1
#endif
#include "perfc/deferred.h"
#include "perfc/pg_async.h"
#include "test_service.h"

#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the cluster (as tests/unit/test_pg_async.c) -------------------------------- */

static const char *src_root(void) {
  static char root[1024];
  const char *env = getenv("PERFC_SOURCE_DIR");
  if (env)
    return env;
  snprintf(root, sizeof root, "%s", __FILE__);
  char *p = strstr(root, "/tests/integration/test_pg_async.c");
  if (p)
    *p = '\0';
  return root;
}

static char g_dir[256];

static int pg_up(const char *dir, char *dsn, size_t n) {
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "%s/scripts/pg-up %s app 2>&1", src_root(), dir);
  FILE *f = popen(cmd, "r");
  if (!f)
    return -1;
  char line[1024];
  dsn[0] = '\0';
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\n")] = '\0';
    snprintf(dsn, n, "%s", line);
  }
  return pclose(f) == 0 && strncmp(dsn, "host=", 5) == 0 ? 0 : -1;
}

ReportHook(PRE_ALL)(struct criterion_test_set *set) {
  (void)set;
  snprintf(g_dir, sizeof g_dir, "/tmp/perfc-test-pgai-XXXXXX");
  char dsn[1024];
  if (!mkdtemp(g_dir) || pg_up(g_dir, dsn, sizeof dsn) != 0) {
    setenv("PERFC_TEST_PG_FAILED", dsn, 1);
    return;
  }
  setenv("PERFC_TEST_PG_DSN", dsn, 1);
  setenv("PERFC_TEST_PG_DIR", g_dir, 1);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats) {
  (void)stats;
  if (g_dir[0]) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s/scripts/pg-down --rm %s >/dev/null 2>&1",
             src_root(), g_dir);
    if (system(cmd) != 0)
      fprintf(stderr, "test_pg_async: pg-down %s failed\n", g_dir);
  }
}

static const char *dsn(void) {
  const char *failed = getenv("PERFC_TEST_PG_FAILED");
  cr_assert_null(failed, "scripts/pg-up failed: %s", failed ? failed : "");
  const char *d = getenv("PERFC_TEST_PG_DSN");
  cr_assert_not_null(d, "no PERFC_TEST_PG_DSN");
  return d;
}

/* ---- the service: docs/data-layer.md's worked example ------------------------------ */

static perfc_pg_async *pga;
static perfc_server *srv;
static perfc_channel *ch;
/* The kill test makes every query wait; read by the handlers' threads. */
static _Atomic(const char *) sleep_s = "0";

typedef struct lookup {
  perfc_deferred *d;
  Perfc__Test__V1__EchoResponse *resp;
} lookup;

static void on_row(int rc, const perfc_pg_result *res, void *arg) {
  lookup *op = arg;
  perfc_ctx *ctx = perfc_deferred_ctx(op->d);
  if (rc != 0) { /* PERFC_ENOENT: NOT_FOUND; lost connection: UNAVAILABLE */
    perfc_deferred_finish(op->d, perfc_ctx_fail(ctx, rc));
    return;
  }
  char *name = perfc_pg_result_strdup(res, 0, 0, perfc_ctx_arena(ctx));
  if (name == NULL) {
    perfc_deferred_finish(op->d, PERFC_STATUS_RESOURCE_EXHAUSTED);
    return;
  }
  op->resp->payload.data = (uint8_t *)name;
  op->resp->payload.len = strlen(name);
  perfc_deferred_finish(op->d, PERFC_STATUS_OK);
}

static perfc_status_code get_name(perfc_ctx *ctx,
                                  const Perfc__Test__V1__EchoRequest *req,
                                  Perfc__Test__V1__EchoResponse *resp,
                                  void *app) {
  lookup *op = perfc_ctx_alloc(ctx, sizeof *op);
  if (op == NULL || (op->d = perfc_call_defer(ctx)) == NULL)
    return PERFC_STATUS_RESOURCE_EXHAUSTED;
  op->resp = resp;
  perfc_pg_param p[] = {perfc_pg_text(req->message),
                        perfc_pg_text(atomic_load(&sleep_s))};
  perfc_pg_query q = {.name = "get_name",
                      .sql = "SELECT name FROM t_names, pg_sleep($2::float8) "
                             "WHERE id = $1::bigint",
                      .params = p,
                      .nparams = 2,
                      .flags = PERFC_PG_READ | PERFC_PG_ONE};
  int rc = perfc_pg_async_query(app, &q, on_row, op);
  if (rc != 0)
    perfc_deferred_finish(op->d, perfc_ctx_fail(ctx, rc));
  return PERFC_STATUS_OK; /* ignored: the call is deferred */
}

static void must(const char *sql) {
  perfc_pg_pool *pool;
  perfc_pg_pool_opts po;
  perfc_pg_pool_opts_init(&po);
  po.dsn = dsn();
  po.name = "setup";
  cr_assert_eq(perfc_pg_pool_new(&pool, &po), 0);
  perfc_pg_query q = {.sql = sql};
  cr_assert_eq(perfc_pg_exec(pool, &q, NULL), 0, "%s: %s", sql,
               perfc_last_error());
  perfc_pg_pool_free(pool);
}

#define CALLS 400

static void start(perfc_executor exec) {
  must("DROP TABLE IF EXISTS t_names");
  must("CREATE TABLE t_names (id bigint PRIMARY KEY, name text)");
  must("INSERT INTO t_names SELECT i, 'name-' || i FROM generate_series(0, 399) i");
  atomic_store(&sleep_s, "0");
  perfc_pg_async_opts ao;
  perfc_pg_async_opts_init(&ao);
  ao.dsn = dsn();
  ao.backoff_min_ms = 20;
  ao.backoff_max_ms = 100;
  cr_assert_eq(perfc_pg_async_new(&pga, &ao), 0, "%s", perfc_last_error());
  perfc_server_opts o;
  perfc_server_opts_init(&o);
  o.default_executor = exec;
  o.threads = 2;
  cr_assert_eq(test_server_new(&srv, &o), 0);
  int port;
  cr_assert_eq(perfc_server_listen(srv, "127.0.0.1:0", &port), 0);
  static Perfc__Test__V1__TestService_Handlers h;
  h = test_service_handlers;
  h.echo = get_name;
  cr_assert_eq(perfc__test__v1__test_service__perfc_register(srv, &h, pga), 0);
  cr_assert_eq(perfc_server_start(srv), 0);
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  perfc_channel_opts co = {.connections = 2};
  cr_assert_eq(perfc_channel_new(&ch, target, &co), 0);
}

static void start_inline(void) { start(PERFC_EXEC_INLINE); }
static void start_pool(void) { start(PERFC_EXEC_POOL); }

static void stop(void) {
  perfc_channel_free(ch);
  int64_t t0 = now_ms();
  perfc_server_shutdown(srv, 5000);
  cr_assert_lt(now_ms() - t0, 3000 * SAN_SLOW);
  perfc_server_free(srv);
  perfc_pg_async_free(pga);
}

typedef struct outcome {
  atomic_int done;
  perfc_status_code code;
  char value[48];
  int64_t at_ms;
} outcome;

static outcome outs[CALLS];

static void on_done(perfc_status_code code, const char *message,
                    const ProtobufCMessage *resp, void *ud) {
  (void)message;
  outcome *o = ud;
  o->code = code;
  if (code == PERFC_STATUS_OK) {
    const Perfc__Test__V1__EchoResponse *r =
        (const Perfc__Test__V1__EchoResponse *)resp;
    size_t n = r->payload.len < sizeof o->value - 1 ? r->payload.len
                                                    : sizeof o->value - 1;
    memcpy(o->value, r->payload.data, n);
    o->value[n] = '\0';
  }
  o->at_ms = now_ms();
  atomic_fetch_add(&o->done, 1);
}

static void launch(int64_t timeout_ms) {
  memset(outs, 0, sizeof outs);
  for (int i = 0; i < CALLS; i++) {
    char key[32];
    snprintf(key, sizeof key, "%d", i);
    Perfc__Test__V1__EchoRequest req = PERFC__TEST__V1__ECHO_REQUEST__INIT;
    req.message = key;
    perfc_call_opts co = {.timeout_ms = timeout_ms};
    cr_assert_eq(perfc__test__v1__test_service__echo__call_async(
                     ch, &req, &co, on_done, &outs[i]),
                 0);
  }
}

static int wait_done(int64_t limit_ms) {
  int64_t end = now_ms() + limit_ms;
  for (;;) {
    int done = 0;
    for (int i = 0; i < CALLS; i++)
      done += atomic_load(&outs[i].done) > 0;
    if (done == CALLS || now_ms() >= end)
      return done;
    usleep(2000);
  }
}

static void check_values(void) {
  for (int i = 0; i < CALLS; i++) {
    char want[48];
    snprintf(want, sizeof want, "name-%d", i);
    cr_assert_eq(outs[i].code, PERFC_STATUS_OK, "call %d: %s", i,
                 perfc_status_name(outs[i].code));
    cr_assert_str_eq(outs[i].value, want, "call %d got another's row", i);
  }
}

static void each_call_gets_its_own_row(void) {
  perfc_pg_async_stats s0;
  perfc_pg_async_stats_get(pga, &s0);
  launch(10000);
  cr_assert_eq(wait_done(20000), CALLS);
  check_values();
  perfc_pg_async_stats s;
  perfc_pg_async_stats_get(pga, &s);
  uint64_t q = s.queries - s0.queries, syncs = s.syncs - s0.syncs;
  cr_assert_eq(q, CALLS);
  /* Calls that arrive in one loop iteration share a Sync (a write). The
   * connections' setup statements add one Sync each (at most 3 loops). */
  cr_assert_lt(syncs, q, "%llu Syncs for %llu queries",
               (unsigned long long)syncs, (unsigned long long)q);
  cr_log_info("%s: %llu queries in %llu Syncs",
              test_transport_is_h2() ? "h2" : "core", (unsigned long long)q,
              (unsigned long long)syncs);
  Perfc__Test__V1__EchoRequest req = PERFC__TEST__V1__ECHO_REQUEST__INIT;
  req.message = "100000";
  Perfc__Test__V1__EchoResponse *resp = NULL;
  perfc_status st = {0};
  cr_assert_eq(perfc__test__v1__test_service__echo__call(ch, &req, &resp, NULL,
                                                         &st),
               PERFC_STATUS_NOT_FOUND);
  perfc_status_reset(&st);
}

Test(pg_async, inline_calls_get_their_own_rows, .init = start_inline,
     .fini = stop, .timeout = 120) {
  each_call_gets_its_own_row();
}

Test(pg_async, pool_calls_get_their_own_rows, .init = start_pool, .fini = stop,
     .timeout = 120) {
  each_call_gets_its_own_row();
}

static long postmaster_pid(void) {
  char path[512];
  snprintf(path, sizeof path, "%s/data/postmaster.pid",
           getenv("PERFC_TEST_PG_DIR"));
  FILE *f = fopen(path, "r");
  cr_assert_not_null(f, "no %s", path);
  long pid = 0;
  cr_assert_eq(fscanf(f, "%ld", &pid), 1);
  fclose(f);
  return pid;
}

/* Every query waits 30 s in PostgreSQL (the first on each connection
 * sleeps, the others queue behind it); the server is killed: every call
 * ends UNAVAILABLE within a bound, none hangs, none twice. Restarted:
 * calls succeed again, each with its own row. */
static void killed_mid_pipeline(void) {
  each_call_gets_its_own_row(); /* connections up, statement prepared */
  atomic_store(&sleep_s, "30");
  launch(60000);
  usleep(500 * 1000);
  int early = 0;
  for (int i = 0; i < CALLS; i++)
    early += atomic_load(&outs[i].done);
  cr_assert_eq(early, 0, "%d calls ended before the kill", early);
  int64_t t0 = now_ms();
  cr_assert_eq(kill((pid_t)postmaster_pid(), SIGQUIT), 0);
  cr_assert_eq(wait_done(5000 * SAN_SLOW), CALLS, "calls hang after the kill");
  int64_t worst = 0;
  for (int i = 0; i < CALLS; i++) {
    cr_assert_eq(outs[i].code, PERFC_STATUS_UNAVAILABLE, "call %d: %s", i,
                 perfc_status_name(outs[i].code));
    cr_assert_eq(atomic_load(&outs[i].done), 1);
    if (outs[i].at_ms - t0 > worst)
      worst = outs[i].at_ms - t0;
  }
  cr_assert_lt(worst, 2000 * SAN_SLOW, "the last call ended %lld ms after "
               "the kill", (long long)worst);
  atomic_store(&sleep_s, "0");
  char cmd[2200];
  snprintf(cmd, sizeof cmd, "%s/scripts/pg-up %.1000s app >/dev/null 2>&1",
           src_root(), getenv("PERFC_TEST_PG_DIR"));
  cr_assert_eq(system(cmd), 0, "pg-up failed");
  int all_ok = 0;
  int64_t t1 = now_ms();
  while (!all_ok && now_ms() - t1 < 10000 * SAN_SLOW) {
    launch(10000);
    cr_assert_eq(wait_done(20000), CALLS);
    all_ok = 1;
    for (int i = 0; i < CALLS; i++)
      if (outs[i].code != PERFC_STATUS_OK) {
        cr_assert_eq(outs[i].code, PERFC_STATUS_UNAVAILABLE, "call %d: %s", i,
                     perfc_status_name(outs[i].code));
        all_ok = 0;
      }
    if (!all_ok)
      usleep(50 * 1000);
  }
  cr_assert(all_ok, "calls still failing after the restart");
  check_values();
}

Test(pg_async, killed_mid_pipeline_inline, .init = start_inline, .fini = stop,
     .timeout = 120) {
  killed_mid_pipeline();
}

Test(pg_async, killed_mid_pipeline_pool, .init = start_pool, .fini = stop,
     .timeout = 120) {
  killed_mid_pipeline();
}
