/* test_pg.c — runtime/src/data/pg.c against real PostgreSQL servers.
 *
 * Room: tests/unit. Before any test runs, a report hook starts two throwaway
 * clusters with scripts/pg-up in temp directories: "primary" and a second,
 * independent cluster standing in for a read replica (routing is all the
 * pool decides, so replication itself is not needed to test it). Both are
 * stopped and removed after the last test. Tests run one at a time
 * (ctest passes --jobs 1); each uses its own tables. */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <netinet/in.h>
#include <perfc/pg.h>
#include <perfc/status.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* The status a handler answers for a pg call's result
 * (perfc_status_from_error): the tests assert what a client would see. */
#define ST(rc) perfc_status_from_error(rc)

/* The repository root, from this file's absolute path (CMake compiles with
 * absolute paths); PERFC_SOURCE_DIR overrides. */
static const char *src_root(void) {
  static char root[1024];
  const char *env = getenv("PERFC_SOURCE_DIR");
  if (env)
    return env;
  snprintf(root, sizeof root, "%s", __FILE__);
  char *p = strstr(root, "/tests/unit/test_pg.c");
  if (p)
    *p = '\0';
  return root;
}

/* Runs scripts/pg-up DIR DB and returns its DSN (last stdout line). */
static int pg_up(const char *dir, const char *db, char *dsn, size_t n) {
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "%s/scripts/pg-up %s %s 2>&1", src_root(), dir, db);
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

static char g_dir[2][256];

ReportHook(PRE_ALL)(struct criterion_test_set *set) {
  (void)set;
  static const char *const roles[2] = {"PERFC_TEST_PG_DSN",
                                       "PERFC_TEST_PG_REPLICA_DSN"};
  for (int i = 0; i < 2; i++) {
    snprintf(g_dir[i], sizeof g_dir[i], "/tmp/perfc-test-pg-XXXXXX");
    char dsn[1024];
    if (!mkdtemp(g_dir[i]) ||
        pg_up(g_dir[i], i ? "replica" : "app", dsn, sizeof dsn) != 0) {
      setenv("PERFC_TEST_PG_FAILED", dsn, 1);
      return;
    }
    /* The test processes criterion starts inherit the environment. */
    setenv(roles[i], dsn, 1);
    setenv(i ? "PERFC_TEST_PG_REPLICA_DIR" : "PERFC_TEST_PG_DIR", g_dir[i], 1);
  }
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats) {
  (void)stats;
  for (int i = 0; i < 2; i++)
    if (g_dir[i][0]) {
      char cmd[2048];
      snprintf(cmd, sizeof cmd, "%s/scripts/pg-down --rm %s >/dev/null 2>&1",
               src_root(), g_dir[i]);
      if (system(cmd) != 0)
        fprintf(stderr, "test_pg: pg-down %s failed\n", g_dir[i]);
    }
}

static const char *dsn(void) {
  const char *failed = getenv("PERFC_TEST_PG_FAILED");
  cr_assert_null(failed, "scripts/pg-up failed: %s", failed ? failed : "");
  const char *d = getenv("PERFC_TEST_PG_DSN");
  cr_assert_not_null(d, "no PERFC_TEST_PG_DSN");
  return d;
}

static perfc_pg_pool *new_pool(perfc_metrics_registry *reg, unsigned max,
                               int stmt_timeout_ms, unsigned acquire_ms) {
  perfc_pg_pool_opts o;
  perfc_pg_pool_opts_init(&o);
  o.dsn = dsn();
  o.registry = reg;
  o.name = "test";
  if (max)
    o.max_conns = max;
  if (stmt_timeout_ms)
    o.statement_timeout_ms = stmt_timeout_ms;
  if (acquire_ms)
    o.acquire_timeout_ms = acquire_ms;
  perfc_pg_pool *p;
  cr_assert_eq(perfc_pg_pool_new(&p, &o), 0);
  return p;
}

/* Runs parameterless SQL and asserts success. */
static void must(perfc_pg_pool *p, const char *sql) {
  perfc_pg_query q = {.sql = sql};
  perfc_status_code st = ST(perfc_pg_exec(p, &q, NULL));
  cr_assert_eq(st, PERFC_STATUS_OK, "%s: %s %s", sql,
               perfc_last_error_detail().sqlstate, perfc_last_error());
}

static int64_t count_rows(perfc_pg_pool *p, const char *sql) {
  perfc_pg_query q = {.sql = sql, .flags = PERFC_PG_ONE};
  perfc_pg_result *r;
  cr_assert_eq(ST(perfc_pg_exec(p, &q, &r)), PERFC_STATUS_OK, "%s",
               perfc_last_error());
  int64_t v = -1;
  cr_assert_eq(perfc_pg_result_int64(r, 0, 0, &v), 0);
  perfc_pg_result_free(r);
  return v;
}

static double mono_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

Test(pg, params_and_result_api) {
  perfc_pg_pool *p = new_pool(NULL, 0, 0, 0);
  must(p, "DROP TABLE IF EXISTS t_basic");
  must(p, "CREATE TABLE t_basic (id bigint PRIMARY KEY, name text, ok bool, "
          "blob bytea, n int)");
  static const uint8_t blob[] = {0x00, 0xff, 0x5c, 0x0a, 0x80};
  perfc_pg_param ins[] = {perfc_pg_int64(INT64_C(9007199254740993)),
                          perfc_pg_text("zoë\t\"'; DROP TABLE t_basic; --"),
                          perfc_pg_bool(1), perfc_pg_bytea(blob, sizeof blob),
                          perfc_pg_null()};
  perfc_pg_query q = {.name = "basic_ins",
                      .sql = "INSERT INTO t_basic VALUES ($1, $2, $3, $4, $5)",
                      .params = ins,
                      .nparams = 5};
  perfc_pg_result *r;
  cr_assert_eq(ST(perfc_pg_exec(p, &q, &r)), PERFC_STATUS_OK, "%s",
               perfc_last_error());
  cr_assert_eq(perfc_pg_result_affected(r), 1);
  perfc_pg_result_free(r);

  perfc_pg_param key[] = {perfc_pg_int64(INT64_C(9007199254740993))};
  perfc_pg_query sel = {
      .name = "basic_sel",
      .sql = "SELECT id, name, ok, blob, n FROM t_basic WHERE id = $1",
      .params = key,
      .nparams = 1,
      .flags = PERFC_PG_ONE};
  cr_assert_eq(ST(perfc_pg_exec(p, &sel, &r)), PERFC_STATUS_OK, "%s",
               perfc_last_error());
  cr_assert_eq(perfc_pg_result_rows(r), 1);
  cr_assert_eq(perfc_pg_result_cols(r), 5);
  cr_assert_eq(perfc_pg_result_col(r, "name"), 1);
  cr_assert_eq(perfc_pg_result_col(r, "nope"), -1);
  int64_t id;
  cr_assert_eq(perfc_pg_result_int64(r, 0, 0, &id), 0);
  cr_assert_eq(id, INT64_C(9007199254740993));
  cr_assert_str_eq(perfc_pg_result_text(r, 0, 1),
                   "zoë\t\"'; DROP TABLE t_basic; --");
  int ok = 0;
  cr_assert_eq(perfc_pg_result_bool(r, 0, 2, &ok), 0);
  cr_assert_eq(ok, 1);
  perfc_arena *a;
  cr_assert_eq(perfc_arena_new(&a, 0), 0);
  perfc_slice b;
  cr_assert_eq(perfc_pg_result_bytea(r, 0, 3, a, &b), 0);
  cr_assert_eq(b.len, sizeof blob);
  cr_assert_eq(memcmp(b.base, blob, sizeof blob), 0);
  cr_assert(perfc_pg_result_is_null(r, 0, 4));
  cr_assert_null(perfc_pg_result_text(r, 0, 4));
  cr_assert_eq(perfc_pg_result_int64(r, 0, 4, &id), PERFC_ENOENT);
  cr_assert_eq(perfc_pg_result_int64(r, 0, 1, &id), PERFC_EPARSE);
  cr_assert(perfc_pg_result_is_null(r, 5, 0)); /* out of range reads as NULL */
  char *copy = perfc_pg_result_strdup(r, 0, 1, a);
  perfc_pg_result_free(r); /* the arena copy outlives the result */
  cr_assert_str_eq(copy, "zoë\t\"'; DROP TABLE t_basic; --");
  perfc_arena_free(a);

  /* The table survived the hostile text: values never become SQL. */
  cr_assert_eq(count_rows(p, "SELECT count(*) FROM t_basic"), 1);
  /* textn: a length-delimited, non-terminated string. */
  const char buf[] = "abcdef";
  perfc_pg_param tn[] = {perfc_pg_textn(buf, 3)};
  perfc_pg_query qt = {.sql = "SELECT $1 || '!'", .params = tn, .nparams = 1};
  cr_assert_eq(ST(perfc_pg_exec(p, &qt, &r)), PERFC_STATUS_OK, "%s",
               perfc_last_error());
  cr_assert_str_eq(perfc_pg_result_text(r, 0, 0), "abc!");
  perfc_pg_result_free(r);
  perfc_pg_pool_free(p);
}

Test(pg, prepared_once_per_connection) {
  perfc_pg_pool *p = new_pool(NULL, 1, 0, 0);
  perfc_pg_conn *c;
  cr_assert_eq(ST(perfc_pg_acquire(p, 0, &c)), PERFC_STATUS_OK, "%s",
               perfc_last_error());
  for (int i = 0; i < 50; i++) {
    perfc_pg_param prm[] = {perfc_pg_int64(i)};
    perfc_pg_query q = {.name = "plus_one",
                        .sql = "SELECT $1::bigint + 1",
                        .params = prm,
                        .nparams = 1};
    perfc_pg_result *r;
    cr_assert_eq(ST(perfc_pg_conn_exec(c, &q, &r)), PERFC_STATUS_OK, "%s",
                 perfc_last_error());
    int64_t v;
    cr_assert_eq(perfc_pg_result_int64(r, 0, 0, &v), 0);
    cr_assert_eq(v, i + 1);
    perfc_pg_result_free(r);
  }
  perfc_pg_query q = {.sql = "SELECT count(*) FROM pg_prepared_statements "
                             "WHERE name = 'plus_one'"};
  perfc_pg_result *r;
  cr_assert_eq(ST(perfc_pg_conn_exec(c, &q, &r)), PERFC_STATUS_OK);
  cr_assert_str_eq(perfc_pg_result_text(r, 0, 0), "1");
  perfc_pg_result_free(r);
  perfc_pg_release(c);
  perfc_pg_pool_free(p);
}

Test(pg, unique_violation_is_already_exists) {
  perfc_pg_pool *p = new_pool(NULL, 0, 0, 0);
  must(p, "DROP TABLE IF EXISTS t_uniq");
  must(p, "CREATE TABLE t_uniq (k text PRIMARY KEY)");
  perfc_pg_param k[] = {perfc_pg_text("dup")};
  perfc_pg_query q = {.name = "uniq_ins",
                      .sql = "INSERT INTO t_uniq VALUES ($1)",
                      .params = k,
                      .nparams = 1};
  cr_assert_eq(ST(perfc_pg_exec(p, &q, NULL)), PERFC_STATUS_OK);
  cr_assert_eq(ST(perfc_pg_exec(p, &q, NULL)), PERFC_STATUS_ALREADY_EXISTS);
  cr_assert_eq(ST(perfc_last_error_detail().code), PERFC_STATUS_ALREADY_EXISTS);
  cr_assert_str_eq(perfc_last_error_detail().sqlstate, "23505");
  cr_assert(strstr(perfc_last_error(), "duplicate key") != NULL, "%s",
            perfc_last_error());
  perfc_pg_pool_free(p);
}

Test(pg, no_row_is_not_found_and_bad_input_is_invalid_argument) {
  perfc_pg_pool *p = new_pool(NULL, 0, 0, 0);
  perfc_pg_query q = {.sql = "SELECT 1 WHERE false", .flags = PERFC_PG_ONE};
  perfc_pg_result *r = (perfc_pg_result *)1;
  cr_assert_eq(ST(perfc_pg_exec(p, &q, &r)), PERFC_STATUS_NOT_FOUND);
  cr_assert_null(r);
  cr_assert_str_eq(perfc_last_error_detail().sqlstate, "");
  /* Without PERFC_PG_ONE, zero rows is a fine answer. */
  q.flags = 0;
  cr_assert_eq(ST(perfc_pg_exec(p, &q, &r)), PERFC_STATUS_OK);
  cr_assert_eq(perfc_pg_result_rows(r), 0);
  perfc_pg_result_free(r);

  perfc_pg_param bad[] = {perfc_pg_text("not a number")};
  perfc_pg_query qi = {.sql = "SELECT $1::int", .params = bad, .nparams = 1};
  cr_assert_eq(ST(perfc_pg_exec(p, &qi, NULL)), PERFC_STATUS_INVALID_ARGUMENT);
  cr_assert_str_eq(perfc_last_error_detail().sqlstate, "22P02");
  perfc_pg_query qz = {.sql = "SELECT 1/0"};
  cr_assert_eq(ST(perfc_pg_exec(p, &qz, NULL)), PERFC_STATUS_INVALID_ARGUMENT);
  cr_assert_str_eq(perfc_last_error_detail().sqlstate, "22012");
  perfc_pg_query qs = {.sql = "SELEKT 1"};
  cr_assert_eq(ST(perfc_pg_exec(p, &qs, NULL)), PERFC_STATUS_INTERNAL);
  cr_assert_str_eq(perfc_last_error_detail().sqlstate, "42601");
  perfc_pg_pool_free(p);
}

Test(pg, sqlstate_mapping) {
  cr_assert_eq(perfc_pg_status_from_sqlstate("23505"),
               PERFC_STATUS_ALREADY_EXISTS);
  cr_assert_eq(perfc_pg_status_from_sqlstate("57014"),
               PERFC_STATUS_DEADLINE_EXCEEDED);
  cr_assert_eq(perfc_pg_status_from_sqlstate("22001"),
               PERFC_STATUS_INVALID_ARGUMENT);
  cr_assert_eq(perfc_pg_status_from_sqlstate("08006"),
               PERFC_STATUS_UNAVAILABLE);
  cr_assert_eq(perfc_pg_status_from_sqlstate("57P01"),
               PERFC_STATUS_UNAVAILABLE);
  cr_assert_eq(perfc_pg_status_from_sqlstate("40001"), PERFC_STATUS_ABORTED);
  cr_assert_eq(perfc_pg_status_from_sqlstate("23503"), PERFC_STATUS_INTERNAL);
  cr_assert_eq(perfc_pg_status_from_sqlstate(""), PERFC_STATUS_INTERNAL);
  cr_assert_eq(perfc_pg_status_from_sqlstate(NULL), PERFC_STATUS_INTERNAL);
}

/* The codes themselves (not only the status a handler answers) and the
 * one detail mechanism: perfc_last_error_detail() after each failure. */
Test(pg, errors_are_perfc_codes_with_detail) {
  perfc_pg_pool *p = new_pool(NULL, 1, 0, 50);
  must(p, "DROP TABLE IF EXISTS t_codes");
  must(p, "CREATE TABLE t_codes (k bigint PRIMARY KEY)");
  perfc_pg_query ins = {.sql = "INSERT INTO t_codes VALUES (1)"};
  cr_assert_eq(perfc_pg_exec(p, &ins, NULL), 0);
  cr_assert_eq(perfc_pg_exec(p, &ins, NULL), PERFC_EEXIST);
  perfc_error_detail d = perfc_last_error_detail();
  cr_assert_eq(d.code, PERFC_EEXIST);
  cr_assert_str_eq(d.sqlstate, "23505");
  cr_assert_eq(d.index, -1);
  cr_assert(strstr(d.message, "duplicate key") != NULL, "%s", d.message);

  /* PERFC_PG_ONE without a row: ENOENT, no SQLSTATE (not the server's). */
  perfc_pg_query none = {.sql = "SELECT k FROM t_codes WHERE k = 2",
                         .flags = PERFC_PG_ONE};
  cr_assert_eq(perfc_pg_exec(p, &none, NULL), PERFC_ENOENT);
  d = perfc_last_error_detail();
  cr_assert_eq(d.code, PERFC_ENOENT);
  cr_assert_str_eq(d.sqlstate, "");
  cr_assert_str_eq(d.message, "pg: no rows");

  /* A batch names the failing statement: the third of three. */
  perfc_pg_param v[3] = {perfc_pg_int64(10), perfc_pg_int64(11),
                         perfc_pg_int64(1)};
  perfc_pg_query qs[3];
  for (int i = 0; i < 3; i++)
    qs[i] = (perfc_pg_query){.sql = "INSERT INTO t_codes VALUES ($1)",
                             .params = &v[i],
                             .nparams = 1};
  perfc_pg_conn *c;
  cr_assert_eq(perfc_pg_acquire(p, 0, &c), 0);
  cr_assert_eq(perfc_pg_batch(c, qs, 3), PERFC_EEXIST);
  d = perfc_last_error_detail();
  cr_assert_eq(d.index, 2);
  cr_assert_str_eq(d.sqlstate, "23505");
  /* A refused argument in a batch carries its index too. */
  qs[1].timeout_ms = -5;
  cr_assert_eq(perfc_pg_batch(c, qs, 3), PERFC_EINVAL);
  cr_assert_eq(perfc_last_error_detail().index, 1);
  qs[1].timeout_ms = 0;

  /* Pool exhausted (the one connection is lent out): EFULL. */
  perfc_pg_conn *c2 = NULL;
  cr_assert_eq(perfc_pg_acquire(p, 0, &c2), PERFC_EFULL);
  cr_assert_null(c2);
  cr_assert(strstr(perfc_last_error(), "pool exhausted") != NULL, "%s",
            perfc_last_error());
  perfc_pg_release(c);
  cr_assert_eq(count_rows(p, "SELECT count(*) FROM t_codes"), 1);

  cr_assert_eq(perfc_pg_error_from_sqlstate("23505"), PERFC_EEXIST);
  cr_assert_eq(perfc_pg_error_from_sqlstate("57014"), PERFC_ETIMEDOUT);
  cr_assert_eq(perfc_pg_error_from_sqlstate("22012"), PERFC_EINVAL);
  cr_assert_eq(perfc_pg_error_from_sqlstate("40P01"), PERFC_EABORTED);
  cr_assert_eq(perfc_pg_error_from_sqlstate("08006"), PERFC_EUNAVAILABLE);
  cr_assert_eq(perfc_pg_error_from_sqlstate("23514"), PERFC_EINTERNAL);
  cr_assert_eq(perfc_pg_error_from_sqlstate(NULL), PERFC_EINTERNAL);
  perfc_pg_pool_free(p);
}

static int tx_dup(perfc_pg_conn *c, void *ud) {
  (void)ud;
  perfc_pg_query q = {.sql = "INSERT INTO t_codes VALUES (1)"};
  return perfc_pg_conn_exec(c, &q, NULL);
}

Test(pg, tx_keeps_the_bodys_detail) {
  perfc_pg_pool *p = new_pool(NULL, 1, 0, 0);
  must(p, "DROP TABLE IF EXISTS t_codes");
  must(p, "CREATE TABLE t_codes (k bigint PRIMARY KEY)");
  must(p, "INSERT INTO t_codes VALUES (1)");
  cr_assert_eq(perfc_pg_tx(p, tx_dup, NULL), PERFC_EEXIST);
  cr_assert_str_eq(perfc_last_error_detail().sqlstate, "23505");
  cr_assert_eq(perfc_last_error_detail().code, PERFC_EEXIST);
  perfc_pg_pool_free(p);
}

/* Durations are int64 ms; "off" is an explicit field, never -1. */
Test(pg, options_explicit_off_and_checked) {
  perfc_pg_pool_opts o;
  perfc_pg_pool_opts_init(&o);
  cr_assert_eq(o.connect_timeout_ms, PERFC_DEFAULT_PG_CONNECT_TIMEOUT_MS);
  cr_assert_eq(o.statement_timeout_ms, PERFC_DEFAULT_PG_STATEMENT_TIMEOUT_MS);
  o.dsn = dsn();
  o.statement_timeout_ms = -1;
  perfc_pg_pool *p = NULL;
  cr_assert_eq(perfc_pg_pool_new(&p, &o), PERFC_EINVAL);
  cr_assert_null(p);
  cr_assert(strstr(perfc_last_error(), "negative duration") != NULL, "%s",
            perfc_last_error());
  o.statement_timeout_ms = 0; /* default, whatever else is set */
  o.no_statement_timeout = true;
  o.name = "test";
  cr_assert_eq(perfc_pg_pool_new(&p, &o), 0);
  perfc_pg_query show = {.sql = "SHOW statement_timeout"};
  perfc_pg_result *r;
  cr_assert_eq(perfc_pg_exec(p, &show, &r), 0, "%s", perfc_last_error());
  cr_assert_str_eq(perfc_pg_result_text(r, 0, 0), "0");
  perfc_pg_result_free(r);
  perfc_pg_pool_free(p);

  /* Per call: no_timeout on a pool with the default 30 s. */
  p = new_pool(NULL, 1, 0, 0);
  perfc_pg_query show_none = {.sql = "SHOW statement_timeout",
                              .no_timeout = true};
  cr_assert_eq(perfc_pg_exec(p, &show_none, &r), 0, "%s", perfc_last_error());
  cr_assert_str_eq(perfc_pg_result_text(r, 0, 0), "0");
  perfc_pg_result_free(r);
  cr_assert_eq(perfc_pg_exec(p, &show, &r), 0);
  cr_assert_str_eq(perfc_pg_result_text(r, 0, 0), "30s");
  perfc_pg_result_free(r);
  show.timeout_ms = -1;
  cr_assert_eq(perfc_pg_exec(p, &show, NULL), PERFC_EINVAL);
  perfc_pg_pool_free(p);
}

Test(pg, statement_timeout_is_deadline_exceeded) {
  /* Pool-wide timeout. */
  perfc_pg_pool *p = new_pool(NULL, 1, 200, 0);
  perfc_pg_query q = {.name = "sleep",
                      .sql = "SELECT pg_sleep($1::float8)",
                      .params = (perfc_pg_param[]){perfc_pg_text("3")},
                      .nparams = 1};
  double t0 = mono_s();
  cr_assert_eq(ST(perfc_pg_exec(p, &q, NULL)), PERFC_STATUS_DEADLINE_EXCEEDED,
               "%s", perfc_last_error());
  cr_assert_lt(mono_s() - t0, 2.0);
  cr_assert_str_eq(perfc_last_error_detail().sqlstate, "57014");
  /* The connection survives a cancelled statement. */
  must(p, "SELECT 1");
  perfc_pg_pool_free(p);

  /* Per-call override on a pool whose default is long. */
  p = new_pool(NULL, 1, 0, 0);
  q.timeout_ms = 100;
  t0 = mono_s();
  cr_assert_eq(ST(perfc_pg_exec(p, &q, NULL)), PERFC_STATUS_DEADLINE_EXCEEDED);
  cr_assert_lt(mono_s() - t0, 2.0);
  /* The next call without override has the pool default back. */
  perfc_pg_query q2 = {.name = "sleep",
                       .sql = q.sql,
                       .params = (perfc_pg_param[]){perfc_pg_text("0.3")},
                       .nparams = 1};
  cr_assert_eq(ST(perfc_pg_exec(p, &q2, NULL)), PERFC_STATUS_OK, "%s",
               perfc_last_error());
  perfc_pg_query show = {.sql = "SHOW statement_timeout"};
  perfc_pg_result *r;
  cr_assert_eq(ST(perfc_pg_exec(p, &show, &r)), PERFC_STATUS_OK);
  cr_assert_str_eq(perfc_pg_result_text(r, 0, 0), "30s");
  perfc_pg_result_free(r);
  perfc_pg_pool_free(p);
}

Test(pg, pool_exhaustion_times_out_acquire) {
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_pg_pool *p = new_pool(reg, 2, 0, 200);
  perfc_pg_conn *a, *b, *c = NULL;
  cr_assert_eq(ST(perfc_pg_acquire(p, 0, &a)), PERFC_STATUS_OK, "%s",
               perfc_last_error());
  cr_assert_eq(ST(perfc_pg_acquire(p, 0, &b)), PERFC_STATUS_OK);
  double t0 = mono_s();
  cr_assert_eq(ST(perfc_pg_acquire(p, 0, &c)), PERFC_STATUS_RESOURCE_EXHAUSTED);
  double waited = mono_s() - t0;
  cr_assert_geq(waited, 0.19);
  cr_assert_lt(waited, 1.0);
  cr_assert_null(c);
  cr_assert(strstr(perfc_last_error(), "exhausted") != NULL, "%s",
            perfc_last_error());

  char *text;
  size_t len;
  cr_assert_eq(perfc_metrics_registry_render(reg, &text, &len), 0);
  cr_assert(
      strstr(text,
             "perfc_pg_connections_in_use{pool=\"test\",target=\"primary\"} 2"),
      "%s", text);
  cr_assert(
      strstr(text,
             "perfc_pg_errors_total{pool=\"test\",kind=\"acquire_timeout\"} 1"),
      "%s", text);
  cr_assert(
      strstr(text, "perfc_pg_acquire_wait_seconds_count{pool=\"test\"} 3"),
      "%s", text);
  free(text);

  perfc_pg_release(b);
  cr_assert_eq(ST(perfc_pg_acquire(p, 0, &c)), PERFC_STATUS_OK);
  cr_assert_eq(c, b); /* the idle connection is reused, not a new one */
  perfc_pg_release(c);
  perfc_pg_release(a);
  cr_assert_eq(perfc_metrics_registry_render(reg, &text, &len), 0);
  cr_assert(
      strstr(text,
             "perfc_pg_connections_idle{pool=\"test\",target=\"primary\"} 2"),
      "%s", text);
  cr_assert(
      strstr(text,
             "perfc_pg_connections_in_use{pool=\"test\",target=\"primary\"} 0"),
      "%s", text);
  free(text);
  perfc_pg_pool_free(p);
  perfc_metrics_registry_free(reg);
}

typedef struct tx_case {
  int fail_after_insert;
  int swallow_error;
} tx_case;

static int tx_body(perfc_pg_conn *c, void *ud) {
  tx_case *tc = ud;
  perfc_pg_query q = {.name = "tx_ins",
                      .sql = "INSERT INTO t_tx VALUES ($1)",
                      .params = (perfc_pg_param[]){perfc_pg_int64(1)},
                      .nparams = 1};
  int rc = perfc_pg_conn_exec(c, &q, NULL);
  if (rc != 0)
    return rc;
  if (tc->swallow_error) {
    perfc_pg_query bad = {.sql = "SELECT 1/0"};
    perfc_pg_conn_exec(c, &bad, NULL);
    return 0;
  }
  if (tc->fail_after_insert)
    return perfc_error_set(PERFC_EPRECONDITION, NULL, -1,
                           "the application refused");
  return perfc_pg_conn_exec(c, &q, NULL); /* duplicate: must roll back */
}

static int tx_ok(perfc_pg_conn *c, void *ud) {
  (void)ud;
  perfc_pg_query q = {.sql = "INSERT INTO t_tx VALUES (2), (3)"};
  return perfc_pg_conn_exec(c, &q, NULL);
}

Test(pg, transaction_commits_or_rolls_back) {
  perfc_pg_pool *p = new_pool(NULL, 1, 0, 0);
  must(p, "DROP TABLE IF EXISTS t_tx");
  must(p, "CREATE TABLE t_tx (id bigint PRIMARY KEY)");
  cr_assert_eq(ST(perfc_pg_tx(p, tx_ok, NULL)), PERFC_STATUS_OK, "%s",
               perfc_last_error());
  cr_assert_eq(count_rows(p, "SELECT count(*) FROM t_tx"), 2);

  tx_case dup = {0, 0};
  cr_assert_eq(ST(perfc_pg_tx(p, tx_body, &dup)), PERFC_STATUS_ALREADY_EXISTS);
  cr_assert_str_eq(perfc_last_error_detail().sqlstate, "23505");
  tx_case app_fail = {1, 0};
  cr_assert_eq(ST(perfc_pg_tx(p, tx_body, &app_fail)),
               PERFC_STATUS_FAILED_PRECONDITION);
  tx_case swallow = {0, 1};
  cr_assert_eq(ST(perfc_pg_tx(p, tx_body, &swallow)), PERFC_STATUS_ABORTED);
  /* None of the three left a row behind, and the connection is clean. */
  cr_assert_eq(count_rows(p, "SELECT count(*) FROM t_tx"), 2);
  cr_assert_eq(count_rows(p, "SELECT count(*) FROM t_tx WHERE id = 1"), 0);

  /* A connection released mid-transaction is rolled back, not leaked. */
  perfc_pg_conn *c;
  cr_assert_eq(ST(perfc_pg_acquire(p, 0, &c)), PERFC_STATUS_OK);
  perfc_pg_query b = {.sql = "BEGIN"},
                 ins = {.sql = "INSERT INTO t_tx VALUES (9)"};
  cr_assert_eq(ST(perfc_pg_conn_exec(c, &b, NULL)), PERFC_STATUS_OK);
  cr_assert_eq(ST(perfc_pg_conn_exec(c, &ins, NULL)), PERFC_STATUS_OK);
  perfc_pg_release(c);
  cr_assert_eq(count_rows(p, "SELECT count(*) FROM t_tx"), 2);
  perfc_pg_pool_free(p);
}

Test(pg, pipeline_batch_of_1000_inserts) {
  perfc_pg_pool *p = new_pool(NULL, 1, 0, 0);
  must(p, "DROP TABLE IF EXISTS t_batch");
  must(p, "CREATE TABLE t_batch (id bigint PRIMARY KEY, v text)");
  enum { N = 1000 };
  static perfc_pg_param prm[N][2];
  static perfc_pg_query qs[N];
  static char txt[N][32];
  for (int i = 0; i < N; i++) {
    snprintf(txt[i], sizeof txt[i], "row %d", i);
    prm[i][0] = perfc_pg_int64(i);
    prm[i][1] = perfc_pg_text(txt[i]);
    qs[i] = (perfc_pg_query){.name = "batch_ins",
                             .sql = "INSERT INTO t_batch VALUES ($1, $2)",
                             .params = prm[i],
                             .nparams = 2};
  }
  perfc_pg_conn *c;
  cr_assert_eq(ST(perfc_pg_acquire(p, 0, &c)), PERFC_STATUS_OK);
  double t0 = mono_s();
  cr_assert_eq(ST(perfc_pg_batch(c, qs, N)), PERFC_STATUS_OK, "%s",
               perfc_last_error());
  cr_log_info("pipeline: %d inserts in %.1f ms", N, (mono_s() - t0) * 1e3);
  perfc_pg_release(c);
  cr_assert_eq(count_rows(p, "SELECT count(*) FROM t_batch"), N);
  cr_assert_eq(
      count_rows(p, "SELECT count(*) FROM t_batch WHERE v = 'row ' || id"), N);

  /* A failure in the middle undoes the whole batch and names the query. */
  must(p, "TRUNCATE t_batch");
  prm[500][0] = perfc_pg_int64(499);
  cr_assert_eq(ST(perfc_pg_acquire(p, 0, &c)), PERFC_STATUS_OK);
  cr_assert_eq(ST(perfc_pg_batch(c, qs, N)), PERFC_STATUS_ALREADY_EXISTS);
  cr_assert_eq(perfc_last_error_detail().index, 500);
  cr_assert_str_eq(perfc_last_error_detail().sqlstate, "23505");
  /* The connection is usable afterwards (out of pipeline mode). */
  perfc_pg_query one = {.sql = "SELECT 1"};
  cr_assert_eq(ST(perfc_pg_conn_exec(c, &one, NULL)), PERFC_STATUS_OK, "%s",
               perfc_last_error());
  perfc_pg_release(c);
  cr_assert_eq(count_rows(p, "SELECT count(*) FROM t_batch"), 0);
  perfc_pg_pool_free(p);
}

/* Row i's tricky text: every COPY special character, a NUL-free control
 * character, multi-byte UTF-8 (2, 3 and 4 bytes), and "\N" as literal
 * text, which must not turn into NULL. */
static int tricky(char *buf, size_t n, int i) {
  static const char *const parts[] = {
      "tab\there", "nl\nthere",   "cr\rthere",   "back\\slash",
      "\\N",       "\\t literal", "ünïcødé ✓ 🐘", "\x01\x1f ctl",
      "",          "end\\"};
  return snprintf(buf, n, "%d|%s|%s", i, parts[i % 10], parts[(i / 10) % 10]);
}

Test(pg, copy_100k_rows_round_trip_exactly, .timeout = 120) {
  perfc_pg_pool *p = new_pool(NULL, 1, 0, 0);
  must(p, "DROP TABLE IF EXISTS t_copy");
  must(p, "CREATE TABLE t_copy (id bigint, body text, maybe text)");
  enum { N = 100000 };
  perfc_pg_conn *c;
  cr_assert_eq(ST(perfc_pg_acquire(p, 0, &c)), PERFC_STATUS_OK);
  cr_assert_eq(
      ST(perfc_pg_copy_begin(c, "COPY t_copy (id, body, maybe) FROM STDIN")),
      PERFC_STATUS_OK, "%s", perfc_last_error());
  double t0 = mono_s();
  for (int i = 0; i < N; i++) {
    char id[16], body[128];
    int il = snprintf(id, sizeof id, "%d", i);
    int bl = tricky(body, sizeof body, i);
    perfc_slice f[3] = {{(const uint8_t *)id, (size_t)il},
                        {(const uint8_t *)body, (size_t)bl},
                        {i % 3 ? (const uint8_t *)"x" : NULL, i % 3 ? 1u : 0u}};
    cr_assert_eq(ST(perfc_pg_copy_row(c, f, 3)), PERFC_STATUS_OK, "%s",
                 perfc_last_error());
  }
  uint64_t rows = 0;
  cr_assert_eq(ST(perfc_pg_copy_end(c, &rows)), PERFC_STATUS_OK, "%s",
               perfc_last_error());
  cr_log_info("copy: %d rows in %.1f ms", N, (mono_s() - t0) * 1e3);
  cr_assert_eq(rows, N);

  perfc_pg_query q = {.sql = "SELECT id, body, maybe FROM t_copy ORDER BY id"};
  perfc_pg_result *r;
  cr_assert_eq(ST(perfc_pg_conn_exec(c, &q, &r)), PERFC_STATUS_OK, "%s",
               perfc_last_error());
  cr_assert_eq(perfc_pg_result_rows(r), N);
  for (int i = 0; i < N; i++) {
    char body[128];
    int bl = tricky(body, sizeof body, i);
    int64_t id;
    cr_assert_eq(perfc_pg_result_int64(r, i, 0, &id), 0);
    cr_assert_eq(id, i);
    cr_assert_eq(perfc_pg_result_len(r, i, 1), (size_t)bl, "row %d", i);
    cr_assert_eq(memcmp(perfc_pg_result_text(r, i, 1), body, bl), 0, "row %d",
                 i);
    cr_assert_eq(perfc_pg_result_is_null(r, i, 2), i % 3 == 0, "row %d", i);
  }
  perfc_pg_result_free(r);

  /* A NUL byte cannot travel in text: the row is refused and the COPY is
   * aborted, so nothing of it lands. */
  cr_assert_eq(ST(perfc_pg_copy_begin(c, "COPY t_copy (id, body) FROM STDIN")),
               PERFC_STATUS_OK);
  perfc_slice good[2] = {{(const uint8_t *)"1", 1}, {(const uint8_t *)"ok", 2}};
  perfc_slice bad[2] = {{(const uint8_t *)"2", 1},
                        {(const uint8_t *)"a\0b", 3}};
  cr_assert_eq(ST(perfc_pg_copy_row(c, good, 2)), PERFC_STATUS_OK);
  cr_assert_eq(ST(perfc_pg_copy_row(c, bad, 2)), PERFC_STATUS_INVALID_ARGUMENT);
  cr_assert_eq(ST(perfc_pg_copy_end(c, &rows)), PERFC_STATUS_INVALID_ARGUMENT);
  perfc_pg_query cnt = {.sql = "SELECT count(*) FROM t_copy"};
  cr_assert_eq(ST(perfc_pg_conn_exec(c, &cnt, &r)), PERFC_STATUS_OK, "%s",
               perfc_last_error());
  cr_assert_str_eq(perfc_pg_result_text(r, 0, 0), "100000");
  perfc_pg_result_free(r);
  perfc_pg_release(c);
  perfc_pg_pool_free(p);
}

Test(pg, recovers_after_server_restart, .timeout = 120) {
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_pg_pool *p = new_pool(reg, 4, 0, 0);
  /* Fill the pool with three idle, prepared connections. */
  perfc_pg_conn *c[3];
  perfc_pg_query q = {.name = "restart_sel",
                      .sql = "SELECT $1::bigint * 2",
                      .params = (perfc_pg_param[]){perfc_pg_int64(21)},
                      .nparams = 1,
                      .flags = PERFC_PG_ONE};
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(ST(perfc_pg_acquire(p, 0, &c[i])), PERFC_STATUS_OK, "%s",
                 perfc_last_error());
    cr_assert_eq(ST(perfc_pg_conn_exec(c[i], &q, NULL)), PERFC_STATUS_OK);
  }
  for (int i = 0; i < 3; i++)
    perfc_pg_release(c[i]);

  char cmd[2200];
  const char *dir = getenv("PERFC_TEST_PG_DIR");
  snprintf(cmd, sizeof cmd, "%s/scripts/pg-up --restart %.1000s app >/dev/null",
           src_root(), dir != NULL ? dir : "");
  cr_assert_eq(system(cmd), 0, "pg-up --restart failed");

  /* The failing call reports UNAVAILABLE; the next one works, on a new
   * connection where the statement is prepared again. */
  perfc_pg_result *r;
  perfc_status_code st = ST(perfc_pg_exec(p, &q, &r));
  cr_assert_eq(st, PERFC_STATUS_UNAVAILABLE, "got %s: %s",
               perfc_status_name(st), perfc_last_error());
  cr_assert_eq(ST(perfc_pg_exec(p, &q, &r)), PERFC_STATUS_OK, "%s",
               perfc_last_error());
  cr_assert_str_eq(perfc_pg_result_text(r, 0, 0), "42");
  perfc_pg_result_free(r);
  for (int i = 0; i < 20; i++)
    cr_assert_eq(ST(perfc_pg_exec(p, &q, NULL)), PERFC_STATUS_OK, "%s",
                 perfc_last_error());

  char *text;
  size_t len;
  cr_assert_eq(perfc_metrics_registry_render(reg, &text, &len), 0);
  cr_assert(
      strstr(text,
             "perfc_pg_errors_total{pool=\"test\",kind=\"unavailable\"} 1"),
      "%s", text);
  free(text);
  perfc_pg_pool_free(p);
  perfc_metrics_registry_free(reg);
}

Test(pg, unreachable_server_is_unavailable) {
  perfc_pg_pool_opts o;
  perfc_pg_pool_opts_init(&o);
  o.dsn = "host=127.0.0.1 port=1 user=postgres dbname=nope";
  perfc_pg_pool *p;
  cr_assert_eq(perfc_pg_pool_new(&p, &o), 0); /* lazy: no connection yet */
  cr_assert_eq(ST(perfc_pg_ping(p, 0)), PERFC_STATUS_UNAVAILABLE);
  cr_assert(strstr(perfc_last_error(), "cannot connect") != NULL, "%s",
            perfc_last_error());
  perfc_pg_query q = {.sql = "SELECT 1"};
  cr_assert_eq(ST(perfc_pg_exec(p, &q, NULL)), PERFC_STATUS_UNAVAILABLE);
  perfc_pg_pool_free(p);
  cr_assert_eq(perfc_pg_pool_new(&p, NULL), PERFC_EINVAL);
}

Test(pg, read_calls_go_to_the_replica) {
  const char *replica = getenv("PERFC_TEST_PG_REPLICA_DSN");
  cr_assert_not_null(replica);
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_pg_pool_opts o;
  perfc_pg_pool_opts_init(&o);
  o.dsn = dsn();
  o.replica_dsn = replica;
  o.registry = reg;
  o.name = "routed";
  perfc_pg_pool *p;
  cr_assert_eq(perfc_pg_pool_new(&p, &o), 0);
  perfc_pg_query who = {.name = "who", .sql = "SELECT current_database()"};
  perfc_pg_result *r;
  cr_assert_eq(ST(perfc_pg_exec(p, &who, &r)), PERFC_STATUS_OK, "%s",
               perfc_last_error());
  cr_assert_str_eq(perfc_pg_result_text(r, 0, 0), "app");
  perfc_pg_result_free(r);
  who.flags = PERFC_PG_READ;
  cr_assert_eq(ST(perfc_pg_exec(p, &who, &r)), PERFC_STATUS_OK, "%s",
               perfc_last_error());
  cr_assert_str_eq(perfc_pg_result_text(r, 0, 0), "replica");
  perfc_pg_result_free(r);
  cr_assert_eq(ST(perfc_pg_ping(p, PERFC_PG_READ)), PERFC_STATUS_OK);
  /* Transactions always run on the primary. */
  char *text;
  size_t len;
  cr_assert_eq(perfc_metrics_registry_render(reg, &text, &len), 0);
  cr_assert(
      strstr(text,
             "perfc_pg_queries_total{pool=\"routed\",target=\"replica\"} 1"),
      "%s", text);
  cr_assert(
      strstr(text,
             "perfc_pg_queries_total{pool=\"routed\",target=\"primary\"} 1"),
      "%s", text);
  cr_assert(
      strstr(text,
             "perfc_pg_connections_idle{pool=\"routed\",target=\"replica\"} 1"),
      "%s", text);
  free(text);
  perfc_pg_pool_free(p);

  /* Without a replica, READ calls run on the primary. */
  o.replica_dsn = NULL;
  o.name = "unrouted";
  cr_assert_eq(perfc_pg_pool_new(&p, &o), 0);
  cr_assert_eq(ST(perfc_pg_exec(p, &who, &r)), PERFC_STATUS_OK, "%s",
               perfc_last_error());
  cr_assert_str_eq(perfc_pg_result_text(r, 0, 0), "app");
  perfc_pg_result_free(r);
  perfc_pg_pool_free(p);
  perfc_metrics_registry_free(reg);
}

typedef struct worker_arg {
  perfc_pg_pool *pool;
  int ok, failed;
} worker_arg;

static void *worker(void *arg) {
  worker_arg *w = arg;
  for (int i = 0; i < 200; i++) {
    perfc_pg_query q = {.name = "conc",
                        .sql = "SELECT $1::bigint",
                        .params = (perfc_pg_param[]){perfc_pg_int64(i)},
                        .nparams = 1};
    perfc_pg_result *r;
    if (ST(perfc_pg_exec(w->pool, &q, &r)) == PERFC_STATUS_OK) {
      int64_t v = -1;
      perfc_pg_result_int64(r, 0, 0, &v);
      w->ok += v == i;
      perfc_pg_result_free(r);
    } else {
      w->failed++;
    }
  }
  return NULL;
}

Test(pg, eight_threads_share_three_connections) {
  perfc_pg_pool *p = new_pool(NULL, 3, 0, 5000);
  pthread_t th[8];
  worker_arg w[8];
  for (int i = 0; i < 8; i++) {
    w[i] = (worker_arg){p, 0, 0};
    pthread_create(&th[i], NULL, worker, &w[i]);
  }
  for (int i = 0; i < 8; i++) {
    pthread_join(th[i], NULL);
    cr_assert_eq(w[i].ok, 200);
    cr_assert_eq(w[i].failed, 0);
  }
  perfc_pg_pool_free(p);
}

Test(pg, session_state_changes_behind_the_cache) {
  perfc_pg_pool *p = new_pool(NULL, 1, 0, 0);
  perfc_pg_conn *c;
  cr_assert_eq(ST(perfc_pg_acquire(p, 0, &c)), PERFC_STATUS_OK);
  perfc_pg_query q = {.name = "cached", .sql = "SELECT 7"};
  cr_assert_eq(ST(perfc_pg_conn_exec(c, &q, NULL)), PERFC_STATUS_OK);
  /* Someone drops every prepared statement: one call fails (26000), the
   * cache is forgotten, the next call prepares again. */
  perfc_pg_query dealloc = {.sql = "DEALLOCATE ALL"};
  cr_assert_eq(ST(perfc_pg_conn_exec(c, &dealloc, NULL)), PERFC_STATUS_OK);
  cr_assert_eq(ST(perfc_pg_conn_exec(c, &q, NULL)), PERFC_STATUS_INTERNAL);
  cr_assert_str_eq(perfc_last_error_detail().sqlstate, "26000");
  cr_assert_eq(ST(perfc_pg_conn_exec(c, &q, NULL)), PERFC_STATUS_OK, "%s",
               perfc_last_error());

  /* A per-call timeout set inside the caller's own transaction is undone
   * by its ROLLBACK; the pool notices and sets the default again. */
  perfc_pg_query b = {.sql = "BEGIN"}, rb = {.sql = "ROLLBACK"};
  perfc_pg_query in_tx = {.sql = "SELECT 1", .timeout_ms = 1234};
  perfc_pg_query show = {.sql = "SHOW statement_timeout"};
  perfc_pg_query show_override = {.sql = "SHOW statement_timeout",
                                  .timeout_ms = 1234};
  perfc_pg_result *r;
  cr_assert_eq(ST(perfc_pg_conn_exec(c, &b, NULL)), PERFC_STATUS_OK);
  cr_assert_eq(ST(perfc_pg_conn_exec(c, &in_tx, NULL)), PERFC_STATUS_OK);
  cr_assert_eq(ST(perfc_pg_conn_exec(c, &rb, NULL)), PERFC_STATUS_OK);
  cr_assert_eq(ST(perfc_pg_conn_exec(c, &show_override, &r)), PERFC_STATUS_OK);
  cr_assert_str_eq(perfc_pg_result_text(r, 0, 0), "1234ms");
  perfc_pg_result_free(r);
  cr_assert_eq(ST(perfc_pg_conn_exec(c, &show, &r)), PERFC_STATUS_OK);
  cr_assert_str_eq(perfc_pg_result_text(r, 0, 0), "30s");
  perfc_pg_result_free(r);
  perfc_pg_release(c);
  perfc_pg_pool_free(p);
}

Test(pg, connect_timeout_bounds_a_silent_server, .timeout = 30) {
  /* A listener that never accepts: the kernel completes the TCP handshake,
   * then nobody answers the startup packet, so only connect_timeout ends
   * the wait. */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  cr_assert_eq(listen(fd, 16), 0);
  socklen_t sl = sizeof sa;
  getsockname(fd, (struct sockaddr *)&sa, &sl);
  char d[128];
  snprintf(d, sizeof d, "host=127.0.0.1 port=%d user=postgres dbname=x",
           ntohs(sa.sin_port));
  perfc_pg_pool_opts o;
  perfc_pg_pool_opts_init(&o);
  o.dsn = d;
  o.connect_timeout_ms = 2000;
  perfc_pg_pool *p;
  cr_assert_eq(perfc_pg_pool_new(&p, &o), 0);
  double t0 = mono_s();
  cr_assert_eq(ST(perfc_pg_ping(p, 0)), PERFC_STATUS_UNAVAILABLE);
  double waited = mono_s() - t0;
  cr_assert_geq(waited, 1.5, "%.2f s", waited);
  cr_assert_lt(waited, 5.0, "%.2f s", waited);
  cr_assert(strstr(perfc_last_error(), "timeout") != NULL, "%s",
            perfc_last_error());
  perfc_pg_pool_free(p);
  close(fd);
}

/* ---- #13 item 5: reads fall back to the primary while the replica is
 * unreachable ---- */

typedef struct transitions {
  pthread_mutex_t mu;
  int n;
  int seen[8];
} transitions;

static void on_replica(perfc_pg_pool *pool, int usable, void *ud) {
  transitions *t = ud;
  (void)pool;
  pthread_mutex_lock(&t->mu);
  if (t->n < 8)
    t->seen[t->n] = usable;
  t->n++;
  pthread_mutex_unlock(&t->mu);
}

static const char *who_text(perfc_pg_pool *p, perfc_status_code *st,
                            char *buf, size_t n) {
  perfc_pg_query who = {.name = "who", .sql = "SELECT current_database()",
                        .flags = PERFC_PG_READ};
  perfc_pg_result *r = NULL;
  *st = ST(perfc_pg_exec(p, &who, &r));
  snprintf(buf, n, "%s",
           *st == PERFC_STATUS_OK ? perfc_pg_result_text(r, 0, 0)
                                  : perfc_last_error());
  perfc_pg_result_free(r);
  return buf;
}

static int metric_has(perfc_metrics_registry *reg, const char *line) {
  char *text;
  size_t len;
  cr_assert_eq(perfc_metrics_registry_render(reg, &text, &len), 0);
  int has = strstr(text, line) != NULL;
  if (!has)
    cr_log_info("metrics: %s", text);
  free(text);
  return has;
}

Test(pg, unreachable_replica_reads_use_primary) {
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  transitions t = {PTHREAD_MUTEX_INITIALIZER, 0, {0}};
  perfc_pg_pool_opts o;
  perfc_pg_pool_opts_init(&o);
  o.dsn = dsn();
  o.replica_dsn = "host=127.0.0.1 port=1 user=postgres dbname=nope";
  o.registry = reg;
  o.name = "fallback";
  o.replica_retry_ms = 100;
  o.replica_fn = on_replica;
  o.replica_ud = &t;
  perfc_pg_pool *p;
  cr_assert_eq(perfc_pg_pool_new(&p, &o), 0);
  cr_assert_eq(perfc_pg_replica_usable(p), 1); /* assumed until tried */
  char buf[256];
  perfc_status_code st;
  for (int i = 0; i < 20; i++) {
    who_text(p, &st, buf, sizeof buf);
    cr_assert_eq(st, PERFC_STATUS_OK, "read %d: %s", i, buf);
    cr_assert_str_eq(buf, "app");
    if (i == 9)
      usleep(150 * 1000); /* one probe of the replica in between */
  }
  cr_assert_eq(perfc_pg_replica_usable(p), 0);
  cr_assert_eq(t.n, 1, "one transition, not one per read");
  cr_assert_eq(t.seen[0], 0);
  cr_assert(metric_has(reg, "perfc_pg_replica_fallback_total{pool=\"fallback\"} 20"));
  cr_assert(metric_has(reg, "perfc_pg_replica_up{pool=\"fallback\"} 0"));
  /* Writes and transactions were never affected; the replica check
   * reports the replica itself. */
  cr_assert_eq(ST(perfc_pg_ping(p, 0)), PERFC_STATUS_OK);
  cr_assert_eq(ST(perfc_pg_ping(p, PERFC_PG_READ)), PERFC_STATUS_UNAVAILABLE);
  cr_assert_eq(t.n, 1);
  perfc_pg_pool_free(p);

  /* Opting out: the read is UNAVAILABLE, as before. */
  o.name = "nofallback";
  o.no_replica_fallback = true;
  o.replica_fn = NULL;
  cr_assert_eq(perfc_pg_pool_new(&p, &o), 0);
  who_text(p, &st, buf, sizeof buf);
  cr_assert_eq(st, PERFC_STATUS_UNAVAILABLE);
  cr_assert_eq(perfc_pg_replica_usable(p), 0);
  perfc_pg_pool_free(p);
  perfc_metrics_registry_free(reg);
}

static int run_script(const char *script, const char *dir, const char *db) {
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "%s/scripts/%s %s %s >/dev/null 2>&1", src_root(),
           script, dir, db);
  return system(cmd);
}

Test(pg, replica_stopped_then_back, .timeout = 120) {
  const char *replica = getenv("PERFC_TEST_PG_REPLICA_DSN");
  const char *rdir = getenv("PERFC_TEST_PG_REPLICA_DIR");
  cr_assert_not_null(replica);
  cr_assert_not_null(rdir);
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  transitions t = {PTHREAD_MUTEX_INITIALIZER, 0, {0}};
  perfc_pg_pool_opts o;
  perfc_pg_pool_opts_init(&o);
  o.dsn = dsn();
  o.replica_dsn = replica;
  o.registry = reg;
  o.name = "flap";
  o.replica_retry_ms = 100;
  o.replica_fn = on_replica;
  o.replica_ud = &t;
  perfc_pg_pool *p;
  cr_assert_eq(perfc_pg_pool_new(&p, &o), 0);
  char buf[256];
  perfc_status_code st;
  cr_assert_str_eq(who_text(p, &st, buf, sizeof buf), "replica");
  cr_assert_eq(run_script("pg-down", rdir, ""), 0);
  /* The idle replica connection dies under the first read: that read is
   * run again on the primary, not failed. */
  for (int i = 0; i < 10; i++) {
    who_text(p, &st, buf, sizeof buf);
    cr_assert_eq(st, PERFC_STATUS_OK, "read %d: %s", i, buf);
    cr_assert_str_eq(buf, "app");
  }
  cr_assert_eq(perfc_pg_replica_usable(p), 0);
  cr_assert_eq(run_script("pg-up", rdir, "replica"), 0);
  int back = 0;
  for (int i = 0; i < 200 && !back; i++) {
    who_text(p, &st, buf, sizeof buf);
    cr_assert_eq(st, PERFC_STATUS_OK, "%s", buf);
    back = strcmp(buf, "replica") == 0;
    if (!back)
      usleep(50 * 1000);
  }
  cr_assert(back, "reads never returned to the replica");
  cr_assert_eq(perfc_pg_replica_usable(p), 1);
  pthread_mutex_lock(&t.mu);
  cr_assert_eq(t.n, 2);
  cr_assert_eq(t.seen[0], 0);
  cr_assert_eq(t.seen[1], 1);
  pthread_mutex_unlock(&t.mu);
  cr_assert(metric_has(reg, "perfc_pg_replica_up{pool=\"flap\"} 1"));
  perfc_pg_pool_free(p);
  perfc_metrics_registry_free(reg);
}
