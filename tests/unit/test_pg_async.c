/* test_pg_async.c — the asynchronous PostgreSQL client (data/pg_async.c)
 * against a throwaway cluster (scripts/pg-up, started once by a report
 * hook as tests/unit/test_pg.c does), on a loop of the test's own
 * (perfc/loop.h) and from a thread without one.
 *
 * Checked with values and counts: 200 queries issued in one loop
 * iteration travel in one Sync group on one connection and each caller
 * gets its own row; a named statement is prepared once per connection; a
 * failing query in the middle of a pipeline fails only its own call (the
 * reads PostgreSQL skipped are resent; the writes around a failing write
 * stay committed); a statement past its timeout gets PERFC_ETIMEDOUT, its
 * connection is reset and the server drops the statement; the server
 * killed (SIGQUIT: immediate shutdown) with 100 queries in flight fails
 * every one with PERFC_EUNAVAILABLE exactly once, and after a restart new
 * queries succeed; transactions commit, roll back and keep to their
 * connection; a stopped loop fails its pending queries with
 * PERFC_ESHUTDOWN. Host names are connected to through data/resolve.c's
 * answers (names only the test's lookup knows: libpq never resolved them),
 * skipping a listed host that does not resolve. */
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
#include "perfc/loop.h"
#include "perfc/pg.h"
#include "perfc/pg_async.h"
#include "data/resolve_internal.h"

#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- the cluster -------------------------------------------------------------- */

static const char *src_root(void) {
  static char root[1024];
  const char *env = getenv("PERFC_SOURCE_DIR");
  if (env)
    return env;
  snprintf(root, sizeof root, "%s", __FILE__);
  char *p = strstr(root, "/tests/unit/test_pg_async.c");
  if (p)
    *p = '\0';
  return root;
}

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

static char g_dir[256];

ReportHook(PRE_ALL)(struct criterion_test_set *set) {
  (void)set;
  snprintf(g_dir, sizeof g_dir, "/tmp/perfc-test-pga-XXXXXX");
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

/* ---- client and loop ------------------------------------------------------------ */

static perfc_pg_async *pga;
static perfc_pg_pool *pool; /* the blocking pool, to set up and check */
static perfc_loop *loop;
static pthread_t loop_thread;

static int64_t now_ms(void) { return perfc_loop_now_ms(); }

static void *loop_main(void *ud) {
  (void)ud;
  perfc_loop_run(loop);
  return NULL;
}

static unsigned max_pending, tx_conns; /* 0: the defaults */

static void client_new(int64_t stmt_timeout_ms) {
  perfc_pg_async_opts o;
  perfc_pg_async_opts_init(&o);
  o.max_pending = max_pending;
  o.tx_conns_per_loop = tx_conns;
  o.dsn = dsn();
  o.statement_timeout_ms = stmt_timeout_ms;
  o.backoff_min_ms = 20;
  o.backoff_max_ms = 200;
  o.connect_timeout_ms = 2000;
  cr_assert_eq(perfc_pg_async_new(&pga, &o), 0, "%s", perfc_last_error());
}

static void setup(void) {
  client_new(10000 * SAN_SLOW);
  perfc_pg_pool_opts po;
  perfc_pg_pool_opts_init(&po);
  po.dsn = dsn();
  po.name = "check";
  cr_assert_eq(perfc_pg_pool_new(&pool, &po), 0, "%s", perfc_last_error());
  cr_assert_eq(perfc_loop_new(&loop), 0);
  cr_assert_eq(pthread_create(&loop_thread, NULL, loop_main, NULL), 0);
}

static void stop_loop(void) {
  if (loop != NULL) {
    perfc_loop_stop(loop);
    pthread_join(loop_thread, NULL);
    perfc_loop_free(loop);
    loop = NULL;
  }
}

static void teardown(void) {
  stop_loop();
  perfc_pg_async_free(pga);
  pga = NULL;
  perfc_pg_pool_free(pool);
  pool = NULL;
}

static void must(const char *sql) {
  perfc_pg_query q = {.sql = sql};
  cr_assert_eq(perfc_pg_exec(pool, &q, NULL), 0, "%s: %s", sql,
               perfc_last_error());
}

static int64_t scalar(const char *sql) {
  perfc_pg_query q = {.sql = sql, .flags = PERFC_PG_ONE};
  perfc_pg_result *r;
  cr_assert_eq(perfc_pg_exec(pool, &q, &r), 0, "%s", perfc_last_error());
  int64_t v = -1;
  cr_assert_eq(perfc_pg_result_int64(r, 0, 0, &v), 0);
  perfc_pg_result_free(r);
  return v;
}

typedef struct job {
  void (*fn)(void *arg);
  void *arg;
  atomic_int done;
} job;

static void job_run(void *ud) {
  job *j = ud;
  j->fn(j->arg);
  atomic_store(&j->done, 1);
}

/* Runs fn(arg) on the loop and waits for it: everything it issues leaves
 * at the end of that one iteration. */
static void on_loop(void (*fn)(void *), void *arg) {
  job j = {.fn = fn, .arg = arg};
  perfc_loop_task *t;
  cr_assert_eq(perfc_loop_task_new(&t, loop, job_run, &j), 0);
  perfc_loop_task_post(t);
  int64_t end = now_ms() + 5000;
  while (!atomic_load(&j.done) && now_ms() < end)
    usleep(500);
  cr_assert(atomic_load(&j.done), "the loop did not run the job");
  perfc_loop_task_free(t);
}

/* One query's outcome. */
typedef struct res {
  atomic_int calls; /* times the callback ran: must end at 1 */
  int rc;
  int64_t a;
  char b[64];
  int on_loop;
  int64_t at_ms;
  char sqlstate[6];
} res;

static void cb(int rc, const perfc_pg_result *r, void *ud) {
  res *o = ud;
  o->rc = rc;
  if (rc == 0 && perfc_pg_result_rows(r) > 0) {
    perfc_pg_result_int64(r, 0, 0, &o->a);
    if (perfc_pg_result_cols(r) > 1 && perfc_pg_result_text(r, 0, 1))
      snprintf(o->b, sizeof o->b, "%s", perfc_pg_result_text(r, 0, 1));
  }
  snprintf(o->sqlstate, sizeof o->sqlstate, "%s",
           perfc_last_error_detail().sqlstate);
  o->on_loop = perfc_loop_current() == loop;
  o->at_ms = now_ms();
  atomic_fetch_add(&o->calls, 1);
}

static int wait_all(res *r, int n, int64_t limit_ms) {
  int64_t end = now_ms() + limit_ms;
  for (;;) {
    int done = 0;
    for (int i = 0; i < n; i++)
      done += atomic_load(&r[i].calls) > 0;
    if (done == n || now_ms() >= end)
      return done;
    usleep(1000);
  }
}

#define N 200

typedef struct batch {
  res r[N];
  int rcs[N];
  int n;
  int bad; /* index that divides by zero, or -1 */
  int64_t base;
} batch;

/* Caller i asks for (base + i) * 2 and its own label. */
static void issue_reads(void *ud) {
  batch *b = ud;
  for (int i = 0; i < b->n; i++) {
    char label[32];
    snprintf(label, sizeof label, "caller-%d", i);
    perfc_pg_param p[] = {perfc_pg_int64(b->base + i), perfc_pg_text(label),
                          perfc_pg_int64(i == b->bad ? 0 : 1)};
    perfc_pg_query q = {.name = "pga_dbl",
                        .sql = "SELECT $1::bigint * 2 / $3::bigint, $2::text",
                        .params = p,
                        .nparams = 3,
                        .flags = PERFC_PG_READ | PERFC_PG_ONE};
    b->rcs[i] = perfc_pg_async_query(pga, &q, cb, &b->r[i]);
    if (b->rcs[i] != 0) {
      b->r[i].rc = b->rcs[i];
      atomic_store(&b->r[i].calls, 1);
    }
  }
}

static batch *batch_new(int n, int bad, int64_t base) {
  batch *b = calloc(1, sizeof *b);
  b->n = n;
  b->bad = bad;
  b->base = base;
  return b;
}

static void check_reads(batch *b) {
  for (int i = 0; i < b->n; i++) {
    cr_assert_eq(b->rcs[i], 0, "query %d refused: %s", i, perfc_last_error());
    cr_assert_eq(atomic_load(&b->r[i].calls), 1, "query %d: %d callbacks", i,
                 atomic_load(&b->r[i].calls));
    if (i == b->bad) {
      cr_assert_eq(b->r[i].rc, PERFC_EINVAL, "query %d: %d", i, b->r[i].rc);
      cr_assert_str_eq(b->r[i].sqlstate, "22012");
      continue;
    }
    char want[32];
    snprintf(want, sizeof want, "caller-%d", i);
    cr_assert_eq(b->r[i].rc, 0, "query %d: rc %d", i, b->r[i].rc);
    cr_assert_eq(b->r[i].a, (b->base + i) * 2, "query %d got %lld", i,
                 (long long)b->r[i].a);
    cr_assert_str_eq(b->r[i].b, want);
    cr_assert(b->r[i].on_loop, "query %d's callback ran off the loop", i);
  }
}

TestSuite(pg_async, .init = setup, .fini = teardown, .timeout = 120);

Test(pg_async, pipelined_callers_get_their_own_rows_one_sync_one_prepare) {
  batch *warm = batch_new(1, -1, 7);
  on_loop(issue_reads, warm);
  cr_assert_eq(wait_all(warm->r, 1, 5000 * SAN_SLOW), 1);
  check_reads(warm);
  perfc_pg_async_stats st0;
  perfc_pg_async_stats_get(pga, &st0);
  cr_assert_eq(st0.connects, 1);
  cr_assert_eq(st0.prepares, 1);

  for (int round = 0; round < 3; round++) {
    batch *b = batch_new(N, -1, 1000 * (round + 1));
    on_loop(issue_reads, b);
    cr_assert_eq(wait_all(b->r, N, 5000 * SAN_SLOW), N);
    check_reads(b);
    free(b);
  }
  perfc_pg_async_stats st;
  perfc_pg_async_stats_get(pga, &st);
  /* Each round of 200 reads issued in one iteration: one Sync (one
   * write), on the one connection; the statement prepared once. */
  cr_assert_eq(st.queries - st0.queries, 3 * N);
  cr_assert_eq(st.syncs - st0.syncs, 3, "%llu syncs for 3 rounds",
               (unsigned long long)(st.syncs - st0.syncs));
  cr_assert_eq(st.prepares, 1);
  cr_assert_eq(st.connects, 1);
  cr_assert_eq(st.conns_up, 1);
  cr_assert_eq(st.resent, 0);
  free(warm);
}

Test(pg_async, error_mid_pipeline_fails_only_its_own_call) {
  /* A client with its own registry, to read its metrics. */
  perfc_pg_async_free(pga);
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_pg_async_opts o;
  perfc_pg_async_opts_init(&o);
  o.dsn = dsn();
  o.registry = reg;
  o.name = "m";
  cr_assert_eq(perfc_pg_async_new(&pga, &o), 0);
  batch *b = batch_new(50, 25, 100);
  on_loop(issue_reads, b);
  cr_assert_eq(wait_all(b->r, 50, 5000 * SAN_SLOW), 50);
  check_reads(b);
  perfc_pg_async_stats st;
  perfc_pg_async_stats_get(pga, &st);
  /* The 24 reads behind the failing one were skipped and sent again. */
  cr_assert_eq(st.resent, 24, "%llu resent", (unsigned long long)st.resent);
  /* Syncs: the connection's setup statement, the group of 50, the group
   * of the 24 resent. */
  cr_assert_eq(st.syncs, 3, "%llu syncs", (unsigned long long)st.syncs);
  char *text;
  size_t len;
  cr_assert_eq(perfc_metrics_registry_render(reg, &text, &len), 0);
  cr_assert(strstr(text, "perfc_pg_async_queries_total{client=\"m\"} 50"),
            "%s", text);
  cr_assert(strstr(text, "perfc_pg_async_flushes_total{client=\"m\"} 3"),
            "%s", text);
  cr_assert(strstr(text, "perfc_pg_async_errors_total{client=\"m\","
                         "kind=\"server\"} 1"), "%s", text);
  cr_assert(strstr(text, "perfc_pg_async_connections{client=\"m\"} 1"),
            "%s", text);
  free(text);
  perfc_pg_async_free(pga);
  pga = NULL;
  perfc_metrics_registry_free(reg);
  free(b);
}

/* Writes: each in a Sync group of its own, so a failing INSERT does not
 * undo its neighbours. */
static res wr[10];

static void issue_writes(void *ud) {
  (void)ud;
  for (int i = 0; i < 10; i++) {
    perfc_pg_param p[] = {perfc_pg_int64(i == 5 ? 3 : i)}; /* 5 repeats 3 */
    perfc_pg_query q = {.name = "pga_ins",
                        .sql = "INSERT INTO t_pga_w VALUES ($1)",
                        .params = p,
                        .nparams = 1};
    cr_assert_eq(perfc_pg_async_query(pga, &q, cb, &wr[i]), 0);
  }
}

Test(pg_async, failing_write_does_not_undo_its_neighbours) {
  must("DROP TABLE IF EXISTS t_pga_w");
  must("CREATE TABLE t_pga_w (id bigint PRIMARY KEY)");
  memset(wr, 0, sizeof wr);
  on_loop(issue_writes, NULL);
  cr_assert_eq(wait_all(wr, 10, 5000 * SAN_SLOW), 10);
  for (int i = 0; i < 10; i++) {
    cr_assert_eq(atomic_load(&wr[i].calls), 1);
    cr_assert_eq(wr[i].rc, i == 5 ? PERFC_EEXIST : 0, "insert %d: %d", i,
                 wr[i].rc);
  }
  cr_assert_eq(scalar("SELECT count(*) FROM t_pga_w"), 9);
}

/* A named statement with bad SQL: its callers get the server's error, the
 * reads around them their values. */
static res bad_sql[3];

static void issue_bad_sql(void *ud) {
  (void)ud;
  perfc_pg_param p[] = {perfc_pg_int64(5)};
  perfc_pg_query ok = {.name = "pga_ok", .sql = "SELECT $1::bigint + 1",
                       .params = p, .nparams = 1, .flags = PERFC_PG_READ};
  perfc_pg_query bad = {.name = "pga_bad", .sql = "SELEC $1::bigint",
                        .params = p, .nparams = 1, .flags = PERFC_PG_READ};
  cr_assert_eq(perfc_pg_async_query(pga, &ok, cb, &bad_sql[0]), 0);
  cr_assert_eq(perfc_pg_async_query(pga, &bad, cb, &bad_sql[1]), 0);
  cr_assert_eq(perfc_pg_async_query(pga, &ok, cb, &bad_sql[2]), 0);
}

Test(pg_async, bad_statement_fails_its_callers_only) {
  memset(bad_sql, 0, sizeof bad_sql);
  on_loop(issue_bad_sql, NULL);
  cr_assert_eq(wait_all(bad_sql, 3, 5000 * SAN_SLOW), 3);
  cr_assert_eq(bad_sql[0].rc, 0);
  cr_assert_eq(bad_sql[0].a, 6);
  cr_assert_eq(bad_sql[1].rc, PERFC_EINTERNAL);
  cr_assert_str_eq(bad_sql[1].sqlstate, "42601");
  cr_assert_eq(bad_sql[2].rc, 0);
  cr_assert_eq(bad_sql[2].a, 6);
  for (int i = 0; i < 3; i++)
    cr_assert_eq(atomic_load(&bad_sql[i].calls), 1);
}

/* ---- timeouts ------------------------------------------------------------------ */

static res slow, behind;

static void issue_slow(void *ud) {
  int64_t timeout_ms = *(int64_t *)ud;
  perfc_pg_query q = {.sql = "SELECT 1, pg_sleep(5)::text",
                      .timeout_ms = timeout_ms};
  cr_assert_eq(perfc_pg_async_query(pga, &q, cb, &slow), 0);
  perfc_pg_param p[] = {perfc_pg_int64(41)};
  perfc_pg_query q2 = {.sql = "SELECT $1::bigint + 1", .params = p,
                       .nparams = 1, .no_timeout = true};
  cr_assert_eq(perfc_pg_async_query(pga, &q2, cb, &behind), 0);
}

Test(pg_async, statement_timeout_resets_the_connection_no_stale_result) {
  memset(&slow, 0, sizeof slow);
  memset(&behind, 0, sizeof behind);
  int64_t timeout_ms = 200 * SAN_SLOW;
  int64_t t0 = now_ms();
  on_loop(issue_slow, &timeout_ms);
  cr_assert_eq(wait_all(&slow, 1, 3000 * SAN_SLOW), 1);
  cr_assert_eq(wait_all(&behind, 1, 3000 * SAN_SLOW), 1);
  cr_assert_eq(slow.rc, PERFC_ETIMEDOUT, "slow: %d", slow.rc);
  cr_assert_geq(slow.at_ms - t0, timeout_ms - 10);
  cr_assert_lt(slow.at_ms - t0, 1500 * SAN_SLOW, "timed out after %lld ms",
               (long long)(slow.at_ms - t0));
  /* The query behind it on the reset connection: unavailable, not the
   * sleeping query's late row. */
  cr_assert_eq(behind.rc, PERFC_EUNAVAILABLE, "behind: %d", behind.rc);
  /* New queries get their own values (after the reconnect). */
  int ok = 0;
  for (int attempt = 0; attempt < 100 && !ok; attempt++) {
    batch *b = batch_new(20, -1, 500);
    on_loop(issue_reads, b);
    cr_assert_eq(wait_all(b->r, 20, 5000 * SAN_SLOW), 20);
    ok = b->r[0].rc == 0;
    if (ok)
      check_reads(b);
    free(b);
    if (!ok)
      usleep(20 * 1000);
  }
  cr_assert(ok, "never answered again after the reset");
  /* The server dropped the statement (client_connection_check_interval):
   * no pg_sleep left running within 3 s. */
  int64_t left = -1;
  for (int i = 0; i < 60 && left != 0; i++) {
    left = scalar("SELECT count(*) FROM pg_stat_activity "
                  "WHERE query LIKE 'SELECT 1, pg_sleep(5)%'");
    if (left != 0)
      usleep(50 * 1000);
  }
  cr_assert_eq(left, 0, "the timed-out statement still runs on the server");
  perfc_pg_async_stats st;
  perfc_pg_async_stats_get(pga, &st);
  cr_assert_eq(st.timeouts, 1);
}

/* The server's own statement_timeout (57014) maps to PERFC_ETIMEDOUT too. */
static res srv_to;

static res srv_set;

static void issue_server_timeout(void *ud) {
  (void)ud;
  perfc_pg_query set = {
      .sql = "SELECT 1, set_config('statement_timeout', '100', false)"};
  cr_assert_eq(perfc_pg_async_query(pga, &set, cb, &srv_set), 0);
  perfc_pg_query q = {.sql = "SELECT 1, pg_sleep(2)::text", .no_timeout = true};
  cr_assert_eq(perfc_pg_async_query(pga, &q, cb, &srv_to), 0);
}

Test(pg_async, server_statement_timeout_is_deadline_exceeded) {
  memset(&srv_to, 0, sizeof srv_to);
  memset(&srv_set, 0, sizeof srv_set);
  on_loop(issue_server_timeout, NULL);
  cr_assert_eq(wait_all(&srv_to, 1, 5000 * SAN_SLOW), 1);
  cr_assert_eq(srv_set.rc, 0, "%d %s", srv_set.rc, srv_set.sqlstate);
  cr_assert_eq(srv_set.a, 1);
  cr_assert_str_eq(srv_set.b, "100ms");
  cr_assert_eq(srv_to.rc, PERFC_ETIMEDOUT, "%d", srv_to.rc);
  cr_assert_str_eq(srv_to.sqlstate, "57014");
}

/* ---- the server killed with queries in flight -------------------------------------- */

static res inflight[100];

static void issue_inflight(void *ud) {
  (void)ud;
  perfc_pg_query sleep_q = {.sql = "SELECT 1, pg_sleep(30)::text",
                            .no_timeout = true};
  cr_assert_eq(perfc_pg_async_query(pga, &sleep_q, cb, &inflight[0]), 0);
  for (int i = 1; i < 100; i++) {
    perfc_pg_param p[] = {perfc_pg_int64(i)};
    perfc_pg_query q = {.name = "pga_kill", .sql = "SELECT $1::bigint",
                        .params = p, .nparams = 1,
                        .flags = PERFC_PG_READ, .no_timeout = true};
    cr_assert_eq(perfc_pg_async_query(pga, &q, cb, &inflight[i]), 0);
  }
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

Test(pg_async, killed_with_queries_in_flight_all_unavailable_then_back) {
  memset(inflight, 0, sizeof inflight);
  on_loop(issue_inflight, NULL);
  /* Every query is on the wire behind the sleep; none is answered. */
  usleep(300 * 1000);
  for (int i = 0; i < 100; i++)
    cr_assert_eq(atomic_load(&inflight[i].calls), 0, "query %d answered", i);
  /* SIGQUIT: immediate shutdown, every backend killed at once. */
  long pid = postmaster_pid();
  int64_t t0 = now_ms();
  cr_assert_eq(kill((pid_t)pid, SIGQUIT), 0);
  cr_assert_eq(wait_all(inflight, 100, 5000 * SAN_SLOW), 100,
               "some queries hang after the kill");
  for (int i = 0; i < 100; i++) {
    cr_assert_eq(inflight[i].rc, PERFC_EUNAVAILABLE, "query %d: %d", i,
                 inflight[i].rc);
    cr_assert_lt(inflight[i].at_ms - t0, 3000 * SAN_SLOW);
  }
  /* Refused at once while it is down (no hang either). */
  batch *down = batch_new(5, -1, 0);
  on_loop(issue_reads, down);
  cr_assert_eq(wait_all(down->r, 5, 5000 * SAN_SLOW), 5);
  for (int i = 0; i < 5; i++)
    cr_assert_eq(down->r[i].rc, PERFC_EUNAVAILABLE, "%d: %d", i,
                 down->r[i].rc);
  free(down);
  /* Back up on the same port: new queries succeed, each its own row. */
  char cmd[2200];
  const char *dir = getenv("PERFC_TEST_PG_DIR");
  snprintf(cmd, sizeof cmd, "%s/scripts/pg-up %.1000s app >/dev/null 2>&1",
           src_root(), dir != NULL ? dir : "");
  cr_assert_eq(system(cmd), 0, "pg-up failed");
  int ok = 0;
  for (int attempt = 0; attempt < 200 && !ok; attempt++) {
    batch *b = batch_new(50, -1, 9000);
    on_loop(issue_reads, b);
    cr_assert_eq(wait_all(b->r, 50, 5000 * SAN_SLOW), 50);
    ok = 1;
    for (int i = 0; i < 50; i++)
      ok &= b->r[i].rc == 0;
    if (ok)
      check_reads(b);
    free(b);
    if (!ok)
      usleep(50 * 1000);
  }
  cr_assert(ok, "never answered again after the restart");
  /* Exactly once: no callback ran a second time meanwhile. */
  for (int i = 0; i < 100; i++)
    cr_assert_eq(atomic_load(&inflight[i].calls), 1, "query %d: %d calls", i,
                 atomic_load(&inflight[i].calls));
}

/* ---- transactions ----------------------------------------------------------------- */

typedef struct txrun {
  int commit;    /* 1 commit, 0 rollback */
  int64_t id;
  atomic_int step;
  int rc_begin, rc_ins, rc_pid, rc_end;
  int rc_other_thread; /* a query and a commit from another thread */
  int64_t pid_a, pid_b;
  perfc_pg_async_tx *tx;
} txrun;

/* The transaction used from a thread that is not its loop's: both calls
 * refused with PERFC_ESTATE, the handle untouched. Returns the two codes
 * packed (query * 1000 + commit) for one assertion. */
typedef struct other_use {
  perfc_pg_async_tx *tx;
  int rc_q, rc_c;
} other_use;

static void noop_cb(int rc, const perfc_pg_result *r, void *ud) {
  (void)rc;
  (void)r;
  (void)ud;
}

static void *other_main(void *ud) {
  other_use *u = ud;
  perfc_pg_query q = {.sql = "SELECT 1"};
  u->rc_q = perfc_pg_async_tx_query(u->tx, &q, noop_cb, NULL);
  u->rc_c = perfc_pg_async_commit(u->tx, noop_cb, NULL);
  return NULL;
}

static int other_thread_use(perfc_pg_async_tx *tx) {
  other_use u = {.tx = tx};
  pthread_t th;
  pthread_create(&th, NULL, other_main, &u);
  pthread_join(th, NULL);
  return u.rc_q * 1000 + u.rc_c;
}

static void tx_ended(int rc, const perfc_pg_result *r, void *ud) {
  (void)r;
  txrun *t = ud;
  t->rc_end = rc;
  atomic_store(&t->step, 9);
}

static void tx_pid_b(int rc, const perfc_pg_result *r, void *ud) {
  txrun *t = ud;
  t->rc_pid = rc;
  if (rc == 0)
    perfc_pg_result_int64(r, 0, 0, &t->pid_b);
  int erc = t->commit ? perfc_pg_async_commit(t->tx, tx_ended, t)
                      : perfc_pg_async_rollback(t->tx, tx_ended, t);
  if (erc != 0) {
    t->rc_end = erc;
    atomic_store(&t->step, 9);
  }
}

static void tx_inserted(int rc, const perfc_pg_result *r, void *ud) {
  txrun *t = ud;
  t->rc_ins = rc;
  t->rc_other_thread = other_thread_use(t->tx);
  if (rc == 0)
    perfc_pg_result_int64(r, 0, 0, &t->pid_a);
  perfc_pg_query q = {.sql = "SELECT pg_backend_pid()"};
  cr_assert_eq(perfc_pg_async_tx_query(t->tx, &q, tx_pid_b, t), 0);
}

static void tx_begun(int rc, perfc_pg_async_tx *tx, void *ud) {
  txrun *t = ud;
  t->rc_begin = rc;
  t->tx = tx;
  if (rc != 0) {
    atomic_store(&t->step, 9);
    return;
  }
  perfc_pg_param p[] = {perfc_pg_int64(t->id)};
  perfc_pg_query q = {.name = "pga_tx_ins",
                      .sql = "INSERT INTO t_pga_tx VALUES ($1) "
                             "RETURNING pg_backend_pid()",
                      .params = p, .nparams = 1};
  cr_assert_eq(perfc_pg_async_tx_query(tx, &q, tx_inserted, t), 0);
}

static void start_tx(void *ud) {
  txrun *t = ud;
  cr_assert_eq(perfc_pg_async_begin(pga, tx_begun, t), 0, "%s",
               perfc_last_error());
}

static void wait_tx(txrun *t) {
  int64_t end = now_ms() + 5000 * SAN_SLOW;
  while (atomic_load(&t->step) != 9 && now_ms() < end)
    usleep(1000);
  cr_assert_eq(atomic_load(&t->step), 9, "transaction hangs");
}

Test(pg_async, transactions_commit_roll_back_and_keep_their_connection) {
  must("DROP TABLE IF EXISTS t_pga_tx");
  must("CREATE TABLE t_pga_tx (id bigint PRIMARY KEY)");
  /* Two transactions at once, one commits, one rolls back. */
  txrun a = {.commit = 1, .id = 1}, b = {.commit = 0, .id = 2};
  on_loop(start_tx, &a);
  on_loop(start_tx, &b);
  wait_tx(&a);
  wait_tx(&b);
  cr_assert_eq(a.rc_begin, 0);
  cr_assert_eq(a.rc_ins, 0);
  cr_assert_eq(a.rc_pid, 0);
  cr_assert_eq(a.rc_end, 0, "commit: %d", a.rc_end);
  cr_assert_eq(b.rc_end, 0, "rollback: %d", b.rc_end);
  /* Each statement of a transaction ran on its one backend; the two
   * transactions held two. */
  cr_assert_eq(a.rc_other_thread, PERFC_ESTATE * 1000 + PERFC_ESTATE);
  cr_assert_eq(a.pid_a, a.pid_b);
  cr_assert_eq(b.pid_a, b.pid_b);
  cr_assert_neq(a.pid_a, b.pid_a);
  cr_assert_eq(scalar("SELECT count(*) FROM t_pga_tx WHERE id = 1"), 1);
  cr_assert_eq(scalar("SELECT count(*) FROM t_pga_tx WHERE id = 2"), 0);
  /* The connection is free again: a third transaction reuses one. */
  txrun c = {.commit = 1, .id = 3};
  on_loop(start_tx, &c);
  wait_tx(&c);
  cr_assert_eq(c.rc_end, 0);
  cr_assert(c.pid_a == a.pid_a || c.pid_a == b.pid_a);
  /* A failing statement: the COMMIT answers ROLLBACK, PERFC_EABORTED. */
  txrun d = {.commit = 1, .id = 3}; /* duplicate key */
  on_loop(start_tx, &d);
  wait_tx(&d);
  cr_assert_eq(d.rc_ins, PERFC_EEXIST);
  cr_assert_eq(d.rc_end, PERFC_EABORTED, "commit after failure: %d", d.rc_end);
  cr_assert_eq(scalar("SELECT count(*) FROM t_pga_tx"), 2);
}

Test(pg_async, begin_needs_a_loop) {
  cr_assert_eq(perfc_pg_async_begin(pga, tx_begun, NULL), PERFC_ESTATE);
}

/* ---- threads without a loop, loop stop, options ------------------------------------- */

Test(pg_async, from_a_thread_without_a_loop) {
  res r[20];
  memset(r, 0, sizeof r);
  for (int i = 0; i < 20; i++) {
    perfc_pg_param p[] = {perfc_pg_int64(i)};
    perfc_pg_query q = {.name = "pga_own", .sql = "SELECT $1::bigint * 3",
                        .params = p, .nparams = 1, .flags = PERFC_PG_READ};
    cr_assert_eq(perfc_pg_async_query(pga, &q, cb, &r[i]), 0);
  }
  cr_assert_eq(wait_all(r, 20, 5000 * SAN_SLOW), 20);
  for (int i = 0; i < 20; i++) {
    cr_assert_eq(r[i].rc, 0);
    cr_assert_eq(r[i].a, 3 * i);
    cr_assert(!r[i].on_loop); /* the client's own loop */
  }
}

static res pending;

static void issue_pending(void *ud) {
  (void)ud;
  perfc_pg_query q = {.sql = "SELECT 1, pg_sleep(5)::text", .no_timeout = true};
  cr_assert_eq(perfc_pg_async_query(pga, &q, cb, &pending), 0);
}

Test(pg_async, stopped_loop_fails_pending_with_shutdown) {
  memset(&pending, 0, sizeof pending);
  on_loop(issue_pending, NULL);
  usleep(100 * 1000);
  int64_t t0 = now_ms();
  stop_loop();
  cr_assert_eq(atomic_load(&pending.calls), 1);
  cr_assert_eq(pending.rc, PERFC_ESHUTDOWN);
  cr_assert_lt(now_ms() - t0, 2000);
}

Test(pg_async, options_are_checked) {
  perfc_pg_async *x = NULL;
  perfc_pg_async_opts o;
  perfc_pg_async_opts_init(&o);
  cr_assert_eq(perfc_pg_async_new(&x, &o), PERFC_EINVAL); /* no dsn */
  o.dsn = dsn();
  o.conns_per_loop = 65;
  cr_assert_eq(perfc_pg_async_new(&x, &o), PERFC_EINVAL);
  o.conns_per_loop = 1;
  o.statement_timeout_ms = -1;
  cr_assert_eq(perfc_pg_async_new(&x, &o), PERFC_EINVAL);
  cr_assert_null(x);
  /* Bad queries are refused before anything is sent. */
  perfc_pg_query q = {.sql = NULL};
  cr_assert_eq(perfc_pg_async_query(pga, &q, cb, NULL), PERFC_EINVAL);
  perfc_pg_query q2 = {.sql = "SELECT 1", .name = ""};
  cr_assert_eq(perfc_pg_async_query(pga, &q2, cb, NULL), PERFC_EINVAL);
  perfc_pg_query q3 = {.sql = "SELECT 1", .timeout_ms = -5};
  cr_assert_eq(perfc_pg_async_query(pga, &q3, cb, NULL), PERFC_EINVAL);
  /* Options from a pool's. */
  perfc_pg_pool_opts po;
  perfc_pg_pool_opts_init(&po);
  po.dsn = "host=127.0.0.1";
  po.async_conns_per_loop = 3;
  po.statement_timeout_ms = 1234;
  perfc_pg_async_opts_from_pool(&o, &po);
  cr_assert_str_eq(o.dsn, "host=127.0.0.1");
  cr_assert_eq(o.conns_per_loop, 3);
  cr_assert_eq(o.statement_timeout_ms, 1234);
}

/* ---- bounds and the lost-statement path ------------------------------------------- */

static res bound[6];
static int bound_rc[6];

static void issue_bounded(void *ud) {
  (void)ud;
  for (int i = 0; i < 6; i++) {
    perfc_pg_param p[] = {perfc_pg_int64(i)};
    perfc_pg_query q = {.sql = "SELECT $1::bigint", .params = p, .nparams = 1,
                        .flags = PERFC_PG_READ};
    bound_rc[i] = perfc_pg_async_query(pga, &q, cb, &bound[i]);
  }
}

Test(pg_async, max_pending_bounds_a_connection) {
  perfc_pg_async_free(pga);
  max_pending = 5;
  client_new(10000);
  memset(bound, 0, sizeof bound);
  on_loop(issue_bounded, NULL);
  for (int i = 0; i < 5; i++)
    cr_assert_eq(bound_rc[i], 0);
  cr_assert_eq(bound_rc[5], PERFC_EFULL);
  cr_assert_eq(wait_all(bound, 5, 5000 * SAN_SLOW), 5);
  for (int i = 0; i < 5; i++) {
    cr_assert_eq(bound[i].rc, 0);
    cr_assert_eq(bound[i].a, i);
  }
  usleep(50 * 1000);
  cr_assert_eq(atomic_load(&bound[5].calls), 0); /* refused: never called */
}

static int begin_rc[2];
static txrun two[2];

static void begin_two(void *ud) {
  (void)ud;
  for (int i = 0; i < 2; i++)
    begin_rc[i] = perfc_pg_async_begin(pga, tx_begun, &two[i]);
}

Test(pg_async, tx_conns_per_loop_bounds_open_transactions) {
  must("DROP TABLE IF EXISTS t_pga_tx");
  must("CREATE TABLE t_pga_tx (id bigint PRIMARY KEY)");
  perfc_pg_async_free(pga);
  tx_conns = 1;
  client_new(10000);
  memset(two, 0, sizeof two);
  two[0].commit = 1;
  two[0].id = 7;
  on_loop(begin_two, NULL);
  cr_assert_eq(begin_rc[0], 0);
  cr_assert_eq(begin_rc[1], PERFC_EFULL);
  wait_tx(&two[0]);
  cr_assert_eq(two[0].rc_end, 0);
  cr_assert_eq(scalar("SELECT count(*) FROM t_pga_tx WHERE id = 7"), 1);
}

/* The session loses its prepared statements (DEALLOCATE ALL behind the
 * client's back): the next use gets 26000, prepares again, is resent once,
 * and answers. */
static res lost[3];

static void issue_named(void *ud) {
  res *r = ud;
  perfc_pg_param p[] = {perfc_pg_int64(20)};
  perfc_pg_query q = {.name = "pga_lost", .sql = "SELECT $1::bigint + 1",
                      .params = p, .nparams = 1};
  cr_assert_eq(perfc_pg_async_query(pga, &q, cb, r), 0);
}

static void issue_deallocate(void *ud) {
  perfc_pg_query q = {.sql = "DEALLOCATE ALL"};
  cr_assert_eq(perfc_pg_async_query(pga, &q, cb, ud), 0);
}

Test(pg_async, lost_prepared_statement_is_prepared_again) {
  memset(lost, 0, sizeof lost);
  on_loop(issue_named, &lost[0]);
  cr_assert_eq(wait_all(&lost[0], 1, 5000 * SAN_SLOW), 1);
  cr_assert_eq(lost[0].rc, 0);
  on_loop(issue_deallocate, &lost[1]);
  cr_assert_eq(wait_all(&lost[1], 1, 5000 * SAN_SLOW), 1);
  cr_assert_eq(lost[1].rc, 0, "DEALLOCATE: %d", lost[1].rc);
  on_loop(issue_named, &lost[2]);
  cr_assert_eq(wait_all(&lost[2], 1, 5000 * SAN_SLOW), 1);
  cr_assert_eq(lost[2].rc, 0, "after DEALLOCATE: %d %s", lost[2].rc,
               lost[2].sqlstate);
  cr_assert_eq(lost[2].a, 21);
  perfc_pg_async_stats st;
  perfc_pg_async_stats_get(pga, &st);
  cr_assert_eq(st.prepares, 2);
}

/* Nothing listens: the first query is accepted while the connection opens
 * and fails with PERFC_EUNAVAILABLE when the connect does; while the
 * backoff runs, queries are refused at once. */
static res unreach[2];
static int unreach_rc[2];

static void issue_unreachable(void *ud) {
  int i = *(int *)ud;
  perfc_pg_query q = {.sql = "SELECT 1", .flags = PERFC_PG_READ};
  unreach_rc[i] = perfc_pg_async_query(pga, &q, cb, &unreach[i]);
}

Test(pg_async, unreachable_server_is_unavailable) {
  perfc_pg_async_free(pga);
  perfc_pg_async_opts o;
  perfc_pg_async_opts_init(&o);
  o.dsn = "host=127.0.0.1 port=1 user=postgres dbname=nope";
  o.backoff_min_ms = 5000; /* the second query falls inside it */
  cr_assert_eq(perfc_pg_async_new(&pga, &o), 0);
  memset(unreach, 0, sizeof unreach);
  int i = 0;
  on_loop(issue_unreachable, &i);
  cr_assert_eq(unreach_rc[0], 0);
  cr_assert_eq(wait_all(&unreach[0], 1, 3000 * SAN_SLOW), 1);
  cr_assert_eq(unreach[0].rc, PERFC_EUNAVAILABLE);
  i = 1;
  on_loop(issue_unreachable, &i);
  cr_assert_eq(unreach_rc[1], PERFC_EUNAVAILABLE);
  usleep(20 * 1000);
  cr_assert_eq(atomic_load(&unreach[1].calls), 0);
  perfc_pg_async_stats st;
  perfc_pg_async_stats_get(pga, &st);
  cr_assert_eq(st.connects, 0);
  cr_assert_eq(st.failed, 1);
}

/* ---- host names ------------------------------------------------------------------ */

static int name_lookup(const char *name, char addr[PERFC__RESOLVE_ADDR_LEN]) {
  if (strcmp(name, "pg-by-name.test") != 0)
    return -1;
  strcpy(addr, "127.0.0.1");
  return 0;
}

static res byname[2];

static void issue_by_name(void *ud) {
  int i = *(int *)ud;
  perfc_pg_query q = {.sql = "SELECT 40 + 2, current_user"};
  cr_assert_eq(perfc_pg_async_query(pga, &q, cb, &byname[i]), 0);
}

/* The test DSN with its host replaced by `hosts`. */
static void named_client(const char *hosts) {
  const char *d = dsn();
  const char *rest = strchr(d, ' '); /* "host=127.0.0.1 port=... ..." */
  cr_assert_not_null(rest);
  char nd[1024];
  snprintf(nd, sizeof nd, "host=%s%s", hosts, rest);
  perfc_pg_async_free(pga);
  perfc_pg_async_opts o;
  perfc_pg_async_opts_init(&o);
  o.dsn = nd;
  o.backoff_min_ms = 20;
  o.connect_timeout_ms = 2000;
  cr_assert_eq(perfc_pg_async_new(&pga, &o), 0, "%s", perfc_last_error());
}

Test(pg_async, host_names_are_reached_through_the_resolver) {
  perfc__resolve_set_lookup(name_lookup);
  memset(byname, 0, sizeof byname);
  named_client("pg-by-name.test");
  int i = 0;
  on_loop(issue_by_name, &i);
  cr_assert_eq(wait_all(&byname[0], 1, 5000 * SAN_SLOW), 1);
  cr_assert_eq(byname[0].rc, 0, "%s", perfc_strerror(byname[0].rc));
  cr_assert_eq(byname[0].a, 42);
  cr_assert_str_eq(byname[0].b, "postgres");
  /* A host list: the one that does not resolve is skipped. */
  named_client("nowhere.test,pg-by-name.test");
  i = 1;
  on_loop(issue_by_name, &i);
  cr_assert_eq(wait_all(&byname[1], 1, 5000 * SAN_SLOW), 1);
  cr_assert_eq(byname[1].rc, 0, "%s", perfc_strerror(byname[1].rc));
  cr_assert_eq(byname[1].a, 42);
  perfc__resolve_set_lookup(NULL);
}
