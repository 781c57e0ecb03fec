/* test_redis_async.c — the asynchronous Redis client (data/redis_async.c)
 * against a private redis-server on loopback (redis_server.h), on a loop
 * of the test's own (perfc/loop.h) and from threads without one.
 *
 * Checked with counts and values: each command gets its own key's value;
 * commands issued in one loop iteration leave in one write; a server
 * stopped (SIGSTOP) makes pending commands time out with PERFC_ETIMEDOUT
 * and a late reply is never handed to a later command; a server killed
 * with commands in flight fails every one with PERFC_EUNAVAILABLE within a
 * bound; a restarted server is used again; a loop that stops fails its
 * pending commands with PERFC_ESHUTDOWN; options are checked. A host name
 * is connected to through data/resolve.c's answer (a name only the test's
 * lookup knows works: hiredis never resolved it), and a name that does
 * not resolve fails commands with PERFC_EUNAVAILABLE, on time. */
/* Sanitizers slow every call several-fold (ThreadSanitizer most): the
 * deadline tests scale their deadlines, delays and bounds together by
 * SAN_SLOW (as test_client.c does), so a normal build's numbers stay. */
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
#include "perfc/metrics.h"
#include "perfc/redis_async.h"
#include "data/resolve_internal.h"
#include "redis_server.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

static test_redis tr;
static perfc_redis_async *ra;
static perfc_loop *loop;
static pthread_t loop_thread;

static int64_t now_ms(void) { return perfc_loop_now_ms(); }

static void *loop_main(void *ud) {
  (void)ud;
  perfc_loop_run(loop);
  return NULL;
}

static unsigned max_pending; /* 0: the default */

static void client_new(int64_t command_timeout_ms) {
  perfc_redis_async_opts o;
  perfc_redis_async_opts_init(&o);
  o.port = tr.port;
  o.max_pending = max_pending;
  o.command_timeout_ms = command_timeout_ms;
  o.backoff_min_ms = 20;
  o.backoff_max_ms = 100;
  cr_assert_eq(perfc_redis_async_new(&ra, &o), 0, "%s", perfc_last_error());
}

static void setup(void) {
  cr_assert_eq(tr_start(&tr), 0, "redis-server did not start");
  client_new(5000);
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
  perfc_redis_async_free(ra);
  ra = NULL;
  tr_stop(&tr);
}

/* ---- running work on the loop ------------------------------------------------ */

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

/* Runs fn(arg) on the loop (everything it issues leaves in that
 * iteration's write) and waits for it. */
static void on_loop(void (*fn)(void *), void *arg) {
  job j = {.fn = fn, .arg = arg};
  perfc_loop_task *t;
  cr_assert_eq(perfc_loop_task_new(&t, loop, job_run, &j), 0);
  perfc_loop_task_post(t);
  int64_t end = now_ms() + 5000;
  while (!atomic_load(&j.done) && now_ms() < end)
    usleep(500);
  cr_assert(atomic_load(&j.done), "the loop did not run the job");
  perfc_loop_task_free(t); /* it ran: off its loop's lists */
}

/* One command's outcome. */
typedef struct res {
  atomic_int done;
  int rc;
  char value[64];
  size_t len;
  int on_loop; /* the callback ran on `loop` */
  int64_t at_ms;
} res;

static void get_cb(int rc, const uint8_t *v, size_t len, void *ud) {
  res *r = ud;
  r->rc = rc;
  r->len = len;
  if (v != NULL && len < sizeof r->value)
    memcpy(r->value, v, len);
  r->on_loop = perfc_loop_current() == loop;
  r->at_ms = now_ms();
  atomic_store(&r->done, 1);
}

static void cmd_cb(int rc, const perfc_redis_reply *reply, void *ud) {
  res *r = ud;
  r->rc = rc;
  if (rc == 0 && reply->str != NULL && reply->len < sizeof r->value) {
    memcpy(r->value, reply->str, reply->len);
    r->len = reply->len;
  }
  r->on_loop = perfc_loop_current() == loop;
  r->at_ms = now_ms();
  atomic_store(&r->done, 1);
}

static int wait_all(res *r, int n, int64_t limit_ms) {
  int64_t end = now_ms() + limit_ms;
  for (;;) {
    int done = 0;
    for (int i = 0; i < n; i++)
      done += atomic_load(&r[i].done);
    if (done == n || now_ms() >= end)
      return done;
    usleep(1000);
  }
}

#define N 200

typedef struct batch {
  res r[N];
  int n;
  int rcs[N];  /* what the issuing call returned */
  const char *verb; /* "SET" or "GET" */
} batch;

static void issue_batch(void *ud) {
  batch *b = ud;
  for (int i = 0; i < b->n; i++) {
    char key[32], val[32];
    snprintf(key, sizeof key, "k%d", i);
    snprintf(val, sizeof val, "value-of-%d", i);
    if (strcmp(b->verb, "SET") == 0) {
      const char *argv[3] = {"SET", key, val};
      b->rcs[i] = perfc_redis_async_command(ra, 3, argv, NULL, cmd_cb, &b->r[i]);
    } else {
      b->rcs[i] = perfc_redis_async_get(ra, key, get_cb, &b->r[i]);
    }
    /* Refused: the callback never runs; recorded as its outcome. */
    if (b->rcs[i] != 0) {
      b->r[i].rc = b->rcs[i];
      atomic_store(&b->r[i].done, 1);
    }
  }
}

static batch *batch_new(const char *verb, int n) {
  batch *b = calloc(1, sizeof *b);
  b->verb = verb;
  b->n = n;
  return b;
}

/* A series of the client's metrics in the default registry (the tests'
 * clients are all named "default"; a client per test, so the values are
 * this test's when the test runs alone in its process, as criterion runs
 * each test). */
static perfc_counter *metric_counter(const char *name, const char *kind) {
  perfc_metrics_family_opts mo;
  perfc_metrics_family_opts_init(&mo);
  const char *one[] = {"client"};
  const char *two[] = {"client", "kind"};
  mo.name = name;
  mo.help = kind ? "Commands that failed: timeout (no reply within "
                   "command_timeout_ms), unavailable (connection lost or "
                   "refused), shutdown (loop or client stopped)."
            : strcmp(name, "perfc_redis_async_commands_total") == 0
                ? "Commands the asynchronous Redis client accepted."
                : "write(2) calls that sent commands (commands / writes: the "
                  "pipelining factor).";
  mo.label_names = kind ? two : one;
  mo.label_count = kind ? 2 : 1;
  perfc_metrics_family *fam;
  cr_assert_eq(perfc_metrics_family_new(&fam, NULL, PERFC_METRICS_COUNTER, &mo), 0,
               "%s", perfc_last_error());
  perfc_counter *c;
  const char *v1[] = {"default"};
  const char *v2[] = {"default", kind};
  cr_assert_eq(perfc_counter_get(&c, fam, kind ? v2 : v1), 0);
  return c;
}

static perfc_gauge *metric_gauge(const char *name) {
  perfc_metrics_family_opts mo;
  perfc_metrics_family_opts_init(&mo);
  const char *one[] = {"client"};
  mo.name = name;
  mo.help = "Connections of the asynchronous Redis client connected now.";
  mo.label_names = one;
  mo.label_count = 1;
  perfc_metrics_family *fam;
  cr_assert_eq(perfc_metrics_family_new(&fam, NULL, PERFC_METRICS_GAUGE, &mo), 0,
               "%s", perfc_last_error());
  perfc_gauge *g;
  const char *v1[] = {"default"};
  cr_assert_eq(perfc_gauge_get(&g, fam, v1), 0);
  return g;
}

TestSuite(redis_async, .init = setup, .fini = teardown, .timeout = 60);

Test(redis_async, each_command_gets_its_own_value_in_one_write) {
  batch *set = batch_new("SET", N);
  on_loop(issue_batch, set);
  cr_assert_eq(wait_all(set->r, N, 5000), N);
  for (int i = 0; i < N; i++) {
    cr_assert_eq(set->rcs[i], 0);
    cr_assert_eq(set->r[i].rc, 0);
    cr_assert_str_eq(set->r[i].value, "OK");
  }
  perfc_redis_async_stats st0;
  perfc_redis_async_stats_get(ra, &st0);
  batch *get = batch_new("GET", N);
  on_loop(issue_batch, get);
  cr_assert_eq(wait_all(get->r, N, 5000), N);
  for (int i = 0; i < N; i++) {
    char want[32];
    snprintf(want, sizeof want, "value-of-%d", i);
    cr_assert_eq(get->r[i].rc, 0, "GET %d: %d", i, get->r[i].rc);
    cr_assert_str_eq(get->r[i].value, want);
    cr_assert(get->r[i].on_loop, "GET %d's callback ran off the loop", i);
  }
  perfc_redis_async_stats st;
  perfc_redis_async_stats_get(ra, &st);
  /* The metrics say the same (the default registry, client "default"). */
  cr_assert_eq(perfc_counter_value(metric_counter("perfc_redis_async_commands_total", NULL)),
               st.commands);
  cr_assert_eq(perfc_counter_value(metric_counter("perfc_redis_async_writes_total", NULL)),
               st.writes);
  cr_assert_eq(perfc_gauge_value(metric_gauge("perfc_redis_async_connections")), 1.0);
  /* 200 GETs issued in one iteration: one write(2) on the one connection. */
  cr_assert_eq(st.commands - st0.commands, N);
  cr_assert_eq(st.writes - st0.writes, 1, "%llu writes for %d commands",
               (unsigned long long)(st.writes - st0.writes), N);
  cr_assert_eq(st.replies, 2 * N);
  cr_assert_eq(st.connects, 1);
  cr_assert_eq(st.conns_up, 1);
  free(set);
  free(get);
}

static res miss, wrong, lpush;

static void issue_misc(void *ud) {
  (void)ud;
  const char *argv[3] = {"LPUSH", "alist", "x"};
  cr_assert_eq(perfc_redis_async_command(ra, 3, argv, NULL, cmd_cb, &lpush), 0);
  cr_assert_eq(perfc_redis_async_get(ra, "no-such-key", get_cb, &miss), 0);
  cr_assert_eq(perfc_redis_async_get(ra, "alist", get_cb, &wrong), 0);
}

Test(redis_async, missing_key_and_error_reply) {
  memset(&miss, 0, sizeof miss);
  memset(&wrong, 0, sizeof wrong);
  memset(&lpush, 0, sizeof lpush);
  on_loop(issue_misc, NULL);
  int64_t end = now_ms() + 5000;
  while ((!atomic_load(&miss.done) || !atomic_load(&wrong.done) ||
          !atomic_load(&lpush.done)) && now_ms() < end)
    usleep(1000);
  cr_assert_eq(lpush.rc, 0);
  cr_assert_eq(miss.rc, PERFC_ENOENT);
  cr_assert_eq(wrong.rc, PERFC_EIO); /* WRONGTYPE */
}

/* Commands from a thread without a loop run on the client's own loop. */
Test(redis_async, from_a_thread_without_a_loop) {
  res r[20];
  memset(r, 0, sizeof r);
  for (int i = 0; i < 20; i++) {
    char key[16], val[16];
    snprintf(key, sizeof key, "t%d", i);
    snprintf(val, sizeof val, "v%d", i);
    const char *argv[3] = {"SET", key, val};
    cr_assert_eq(perfc_redis_async_command(ra, 3, argv, NULL, cmd_cb, &r[i]), 0);
  }
  cr_assert_eq(wait_all(r, 20, 5000), 20);
  res g[20];
  memset(g, 0, sizeof g);
  for (int i = 0; i < 20; i++) {
    char key[16];
    snprintf(key, sizeof key, "t%d", i);
    cr_assert_eq(perfc_redis_async_get(ra, key, get_cb, &g[i]), 0);
  }
  cr_assert_eq(wait_all(g, 20, 5000), 20);
  for (int i = 0; i < 20; i++) {
    char want[16];
    snprintf(want, sizeof want, "v%d", i);
    cr_assert_eq(g[i].rc, 0);
    cr_assert_str_eq(g[i].value, want);
    cr_assert(!g[i].on_loop); /* the client's own loop, not the test's */
  }
}

/* SIGSTOP: the server keeps the connection but never answers. Every
 * command gets PERFC_ETIMEDOUT after command_timeout_ms; once the server
 * runs again, its late replies are dropped with the old connection and new
 * commands get their own values. */
Test(redis_async, stalled_server_times_out_and_no_late_reply_leaks) {
  perfc_redis_async_free(ra);
  client_new(200 * SAN_SLOW);
  batch *set = batch_new("SET", 50);
  on_loop(issue_batch, set);
  cr_assert_eq(wait_all(set->r, 50, 5000), 50);
  kill(tr.pid, SIGSTOP);
  batch *get = batch_new("GET", 50);
  int64_t t0 = now_ms();
  on_loop(issue_batch, get);
  cr_assert_eq(wait_all(get->r, 50, 3000 * SAN_SLOW), 50);
  for (int i = 0; i < 50; i++) {
    cr_assert_eq(get->r[i].rc, PERFC_ETIMEDOUT, "GET %d: %d", i, get->r[i].rc);
    cr_assert_geq(get->r[i].at_ms - t0, 190 * SAN_SLOW);
    cr_assert_lt(get->r[i].at_ms - t0, 1500 * SAN_SLOW,
                 "GET %d answered after %lld ms",
                 i, (long long)(get->r[i].at_ms - t0));
  }
  kill(tr.pid, SIGCONT);
  /* Ask for other keys: a late reply handed to these would show. */
  int ok = 0;
  for (int attempt = 0; attempt < 100 && !ok; attempt++) {
    batch *again = batch_new("GET", 50);
    on_loop(issue_batch, again);
    cr_assert_eq(wait_all(again->r, 50, 3000), 50);
    ok = 1;
    for (int i = 0; i < 50; i++) {
      if (again->r[i].rc != 0) {
        ok = 0; /* still reconnecting */
        continue;
      }
      char want[32];
      snprintf(want, sizeof want, "value-of-%d", i);
      cr_assert_str_eq(again->r[i].value, want);
    }
    free(again);
    if (!ok)
      usleep(20 * 1000);
  }
  cr_assert(ok, "never answered again after SIGCONT");
  perfc_redis_async_stats st;
  perfc_redis_async_stats_get(ra, &st);
  cr_assert_eq(st.timeouts, 50);
  cr_assert_eq(perfc_counter_value(
                   metric_counter("perfc_redis_async_errors_total", "timeout")),
               50);
  free(set);
  free(get);
}

/* SIGKILL with 200 commands in flight (the server stopped first, so none
 * is answered): every one fails with PERFC_EUNAVAILABLE soon after the
 * kill, far inside the 5 s command timeout; none hangs. Then the server is
 * restarted and used again. */
Test(redis_async, killed_mid_pipeline_all_unavailable_then_reconnects) {
  batch *set = batch_new("SET", N);
  on_loop(issue_batch, set);
  cr_assert_eq(wait_all(set->r, N, 5000), N);
  kill(tr.pid, SIGSTOP);
  batch *get = batch_new("GET", N);
  on_loop(issue_batch, get);
  usleep(50 * 1000);
  for (int i = 0; i < N; i++)
    cr_assert(!atomic_load(&get->r[i].done), "GET %d answered by a stopped server", i);
  int64_t t0 = now_ms();
  tr_kill(&tr);
  cr_assert_eq(wait_all(get->r, N, 2000 * SAN_SLOW), N,
               "commands hang after the kill");
  for (int i = 0; i < N; i++) {
    cr_assert_eq(get->r[i].rc, PERFC_EUNAVAILABLE, "GET %d: %d", i, get->r[i].rc);
    cr_assert_lt(get->r[i].at_ms - t0, 1000 * SAN_SLOW);
  }
  /* While it is down, commands are refused at once or fail fast. */
  batch *down = batch_new("GET", 10);
  on_loop(issue_batch, down);
  for (int i = 0; i < 10; i++)
    if (down->rcs[i] == 0)
      cr_assert_eq(wait_all(&down->r[i], 1, 1000), 1);
    else
      cr_assert_eq(down->rcs[i], PERFC_EUNAVAILABLE);
  cr_assert_eq(tr_restart(&tr), 0);
  /* Back within the backoff (100 ms at most) plus a connect. */
  int64_t t1 = now_ms();
  int ok = 0;
  while (!ok && now_ms() - t1 < 3000) {
    batch *one = batch_new("SET", 1);
    on_loop(issue_batch, one);
    if (one->rcs[0] == 0 && wait_all(one->r, 1, 1000) == 1 && one->r[0].rc == 0)
      ok = 1;
    free(one);
    if (!ok)
      usleep(10 * 1000);
  }
  cr_assert(ok, "no answer within 3 s of the restart");
  perfc_redis_async_stats st;
  perfc_redis_async_stats_get(ra, &st);
  cr_assert_geq(st.connects, 2);
  cr_assert_eq(st.conns_up, 1);
  free(set);
  free(get);
  free(down);
}

/* A loop that stops with commands pending fails them (PERFC_ESHUTDOWN) on
 * its thread, before perfc_loop_run() returns. */
Test(redis_async, loop_stop_fails_pending_commands) {
  batch *set = batch_new("SET", 10);
  on_loop(issue_batch, set);
  cr_assert_eq(wait_all(set->r, 10, 5000), 10);
  kill(tr.pid, SIGSTOP);
  batch *get = batch_new("GET", 10);
  on_loop(issue_batch, get);
  stop_loop();
  for (int i = 0; i < 10; i++) {
    cr_assert(atomic_load(&get->r[i].done));
    cr_assert_eq(get->r[i].rc, PERFC_ESHUTDOWN);
  }
  kill(tr.pid, SIGCONT);
  perfc_redis_async_stats st;
  perfc_redis_async_stats_get(ra, &st);
  cr_assert_eq(st.conns_up, 0);
  free(set);
  free(get);
}

/* A stalled server cannot make a loop hold more than max_pending commands
 * per connection: past it commands are refused at once with PERFC_EFULL. */
Test(redis_async, max_pending_bounds_a_stalled_connection) {
  perfc_redis_async_free(ra);
  max_pending = 5;
  client_new(5000);
  max_pending = 0;
  batch *set = batch_new("SET", 1);
  on_loop(issue_batch, set); /* connected */
  cr_assert_eq(wait_all(set->r, 1, 5000), 1);
  kill(tr.pid, SIGSTOP);
  batch *get = batch_new("GET", 10);
  on_loop(issue_batch, get);
  for (int i = 0; i < 10; i++)
    cr_assert_eq(get->rcs[i], i < 5 ? 0 : PERFC_EFULL, "GET %d: %d", i,
                 get->rcs[i]);
  kill(tr.pid, SIGCONT);
  cr_assert_eq(wait_all(get->r, 10, 5000), 10);
  for (int i = 0; i < 5; i++) /* answered once it runs: k0 set, k1..k4 not */
    cr_assert_eq(get->r[i].rc, i == 0 ? 0 : PERFC_ENOENT, "GET %d: %d", i,
                 get->r[i].rc);
  free(set);
  free(get);
}

Test(redis_async, options_are_checked, .init = NULL, .fini = NULL) {
  perfc_redis_async *r = NULL;
  perfc_redis_async_opts o;
  perfc_redis_async_opts_init(&o);
  o.command_timeout_ms = -1;
  cr_assert_eq(perfc_redis_async_new(&r, &o), PERFC_EINVAL);
  cr_assert(strstr(perfc_last_error(), "command_timeout_ms") != NULL);
  perfc_redis_async_opts_init(&o);
  o.conns_per_loop = 1000;
  cr_assert_eq(perfc_redis_async_new(&r, &o), PERFC_EINVAL);
  perfc_redis_async_opts z = {0};
  cr_assert_eq(perfc_redis_async_new(&r, &z), 0);
  const char *argv[1] = {NULL};
  cr_assert_eq(perfc_redis_async_command(r, 1, argv, NULL, cmd_cb, NULL),
               PERFC_EINVAL);
  cr_assert_eq(perfc_redis_async_get(r, NULL, get_cb, NULL), PERFC_EINVAL);
  perfc_redis_async_free(r);
  perfc_redis_async_free(NULL);
}

/* ---- host names ------------------------------------------------------------------ */

/* Only the test knows this name: hiredis's own getaddrinfo() could not
 * resolve it, so a working client proves the loop used the resolver's
 * address. */
static int name_lookup(const char *name, char addr[PERFC__RESOLVE_ADDR_LEN]) {
  if (strcmp(name, "redis-by-name.test") != 0)
    return -1;
  strcpy(addr, "127.0.0.1");
  return 0;
}

static perfc_redis_async *named_client(const char *host) {
  perfc_redis_async_opts o;
  perfc_redis_async_opts_init(&o);
  o.host = host;
  o.port = tr.port;
  o.command_timeout_ms = 2000;
  o.backoff_min_ms = 20;
  o.backoff_max_ms = 100;
  o.name = "named";
  o.registry = NULL;
  perfc_redis_async *c;
  cr_assert_eq(perfc_redis_async_new(&c, &o), 0, "%s", perfc_last_error());
  return c;
}

Test(redis_async, a_host_name_is_reached_through_the_resolver) {
  perfc__resolve_set_lookup(name_lookup);
  perfc_redis_async *c = named_client("redis-by-name.test");
  res set = {0}, get = {0};
  const char *argv[3] = {"SET", "named-key", "named-value"};
  cr_assert_eq(perfc_redis_async_command(c, 3, argv, NULL, cmd_cb, &set), 0);
  cr_assert_eq(wait_all(&set, 1, 5000), 1);
  cr_assert_eq(set.rc, 0, "%s", perfc_strerror(set.rc));
  cr_assert_eq(perfc_redis_async_get(c, "named-key", get_cb, &get), 0);
  cr_assert_eq(wait_all(&get, 1, 5000), 1);
  cr_assert_eq(get.rc, 0);
  cr_assert_str_eq(get.value, "named-value");
  perfc_redis_async_free(c);
  perfc__resolve_set_lookup(NULL);
}

Test(redis_async, a_name_that_does_not_resolve_fails_on_time) {
  perfc__resolve_set_lookup(name_lookup);
  perfc_redis_async *c = named_client("nowhere.test");
  res r = {0};
  int64_t t0 = now_ms();
  int rc = perfc_redis_async_get(c, "k", get_cb, &r);
  if (rc == 0) {
    cr_assert_eq(wait_all(&r, 1, 5000), 1);
    rc = r.rc;
  }
  cr_assert_eq(rc, PERFC_EUNAVAILABLE, "%s", perfc_strerror(rc));
  cr_assert_lt(now_ms() - t0, 2500);
  perfc_redis_async_free(c);
  perfc__resolve_set_lookup(NULL);
}
