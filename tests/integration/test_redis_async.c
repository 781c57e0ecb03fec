/* test_redis_async.c — a deferred handler that reads Redis on the loops
 * (perfc/deferred.h + perfc/redis_async.h), served on both transports
 * (CTest integration.redis_async and .core), inline and on the pool, with
 * a private redis-server (tests/unit/redis_server.h).
 *
 * Echo becomes "GET the key named in `message` and answer its value": a
 * handler that holds no thread while Redis answers. Checked: 400 calls at
 * once, each gets its own key's value; fewer writes to Redis than
 * commands (pipelining across calls); a missing key is NOT_FOUND; Redis
 * killed with calls in flight: every call ends UNAVAILABLE within a bound
 * and none hangs; after a restart calls succeed again. */
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
#include "perfc/deferred.h"
#include "perfc/redis_async.h"
#include "redis_server.h"
#include "test_service.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static test_redis tr;
static perfc_redis_async *ra;
static perfc_server *srv;
static perfc_channel *ch;

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the service ------------------------------------------------------------------ */

typedef struct get_op {
  perfc_deferred *d;
  Perfc__Test__V1__EchoResponse *resp;
} get_op;

static void on_value(int rc, const uint8_t *v, size_t len, void *arg) {
  get_op *op = arg;
  perfc_ctx *ctx = perfc_deferred_ctx(op->d);
  if (rc == 0) {
    uint8_t *copy = perfc_ctx_alloc(ctx, len ? len : 1);
    if (copy == NULL) {
      perfc_deferred_finish(op->d, PERFC_STATUS_RESOURCE_EXHAUSTED);
      return;
    }
    memcpy(copy, v, len);
    op->resp->payload.data = copy;
    op->resp->payload.len = len;
    perfc_deferred_finish(op->d, PERFC_STATUS_OK);
  } else if (rc == PERFC_ENOENT) {
    perfc_deferred_finish(op->d, perfc_ctx_error(ctx, PERFC_STATUS_NOT_FOUND,
                                                 "no such key"));
  } else {
    perfc_deferred_finish(op->d, perfc_ctx_fail(ctx, rc));
  }
}

static perfc_status_code redis_get(perfc_ctx *ctx,
                                   const Perfc__Test__V1__EchoRequest *req,
                                   Perfc__Test__V1__EchoResponse *resp,
                                   void *app) {
  perfc_redis_async *r = app;
  get_op *op = perfc_ctx_alloc(ctx, sizeof *op);
  if (op == NULL || (op->d = perfc_call_defer(ctx)) == NULL)
    return PERFC_STATUS_RESOURCE_EXHAUSTED;
  op->resp = resp;
  int rc = perfc_redis_async_get(r, req->message, on_value, op);
  if (rc != 0)
    perfc_deferred_finish(op->d, perfc_ctx_fail(ctx, rc));
  return PERFC_STATUS_OK; /* ignored: deferred */
}

static void start(perfc_executor exec) {
  cr_assert_eq(tr_start(&tr), 0, "redis-server did not start");
  perfc_redis_async_opts ro;
  perfc_redis_async_opts_init(&ro);
  ro.port = tr.port;
  ro.command_timeout_ms = 5000; /* a kill must fail calls, not a timeout */
  ro.backoff_min_ms = 20;
  ro.backoff_max_ms = 100;
  cr_assert_eq(perfc_redis_async_new(&ra, &ro), 0);
  perfc_server_opts o;
  perfc_server_opts_init(&o);
  o.default_executor = exec;
  o.threads = 2;
  cr_assert_eq(test_server_new(&srv, &o), 0);
  int port;
  cr_assert_eq(perfc_server_listen(srv, "127.0.0.1:0", &port), 0);
  static Perfc__Test__V1__TestService_Handlers h;
  h = test_service_handlers;
  h.echo = redis_get;
  cr_assert_eq(perfc__test__v1__test_service__perfc_register(srv, &h, ra), 0);
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
  perfc_redis_async_free(ra);
  tr_stop(&tr);
}

/* ---- many calls at once -------------------------------------------------------------- */

#define CALLS 400

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
  atomic_store(&o->done, 1);
}

/* Starts CALLS calls at once, key i for call i; waits up to limit_ms for
 * them all; returns how many ended. */
static int fire(int64_t timeout_ms, int64_t limit_ms) {
  memset(outs, 0, sizeof outs);
  for (int i = 0; i < CALLS; i++) {
    char key[32];
    snprintf(key, sizeof key, "user:%d", i);
    Perfc__Test__V1__EchoRequest req = PERFC__TEST__V1__ECHO_REQUEST__INIT;
    req.message = key;
    perfc_call_opts co = {.timeout_ms = timeout_ms};
    cr_assert_eq(perfc__test__v1__test_service__echo__call_async(ch, &req, &co,
                                                                 on_done,
                                                                 &outs[i]),
                 0);
  }
  int64_t end = now_ms() + limit_ms;
  for (;;) {
    int done = 0;
    for (int i = 0; i < CALLS; i++)
      done += atomic_load(&outs[i].done);
    if (done == CALLS || now_ms() >= end)
      return done;
    usleep(2000);
  }
}

static void set_cb(int rc, const perfc_redis_reply *r, void *ud) {
  (void)r;
  atomic_int *n = ud;
  if (rc == 0)
    atomic_fetch_add(n, 1);
}

/* SETs user:i = "name-i-<run>" from this thread (no loop: the client's
 * own loop carries them) and waits for every OK. */
static void fill_values(int run) {
  static atomic_int ok;
  atomic_store(&ok, 0);
  for (int i = 0; i < CALLS; i++) {
    char key[32], val[48];
    snprintf(key, sizeof key, "user:%d", i);
    snprintf(val, sizeof val, "name-%d-%d", i, run);
    const char *argv[3] = {"SET", key, val};
    cr_assert_eq(perfc_redis_async_command(ra, 3, argv, NULL, set_cb, &ok), 0);
  }
  int64_t end = now_ms() + 5000;
  while (atomic_load(&ok) < CALLS && now_ms() < end)
    usleep(1000);
  cr_assert_eq(atomic_load(&ok), CALLS);
}

static void each_call_gets_its_own_value(void) {
  fill_values(1);
  perfc_redis_async_stats s0;
  perfc_redis_async_stats_get(ra, &s0);
  cr_assert_eq(fire(10000, 20000), CALLS);
  for (int i = 0; i < CALLS; i++) {
    char want[48];
    snprintf(want, sizeof want, "name-%d-1", i);
    cr_assert_eq(outs[i].code, PERFC_STATUS_OK, "call %d: %d", i, outs[i].code);
    cr_assert_str_eq(outs[i].value, want, "call %d got another's value", i);
  }
  perfc_redis_async_stats s;
  perfc_redis_async_stats_get(ra, &s);
  uint64_t cmds = s.commands - s0.commands, writes = s.writes - s0.writes;
  cr_assert_eq(cmds, CALLS);
  cr_assert_eq(s.replies - s0.replies, CALLS);
  /* Calls that arrive in one loop iteration share a write to Redis. */
  cr_assert_lt(writes, cmds, "%llu writes for %llu commands",
               (unsigned long long)writes, (unsigned long long)cmds);
  cr_log_info("%s: %llu GETs in %llu writes", test_transport_is_h2() ? "h2" : "core",
              (unsigned long long)cmds, (unsigned long long)writes);
  /* A key nobody set. */
  Perfc__Test__V1__EchoRequest req = PERFC__TEST__V1__ECHO_REQUEST__INIT;
  req.message = "nobody";
  Perfc__Test__V1__EchoResponse *resp = NULL;
  perfc_status st = {0};
  cr_assert_eq(perfc__test__v1__test_service__echo__call(ch, &req, &resp, NULL, &st),
               PERFC_STATUS_NOT_FOUND);
  perfc_status_reset(&st);
}

Test(redis_async, inline_calls_get_their_own_values, .init = start_inline,
     .fini = stop, .timeout = 120) {
  each_call_gets_its_own_value();
}

Test(redis_async, pool_calls_get_their_own_values, .init = start_pool,
     .fini = stop, .timeout = 120) {
  each_call_gets_its_own_value();
}

/* Redis stopped (SIGSTOP: the calls' GETs are in flight, unanswered), then
 * killed: every call ends UNAVAILABLE within a second of the kill, long
 * before the 5 s command timeout; none hangs. Restarted: calls succeed. */
static void killed_mid_pipeline(void) {
  fill_values(2);
  kill(tr.pid, SIGSTOP);
  memset(outs, 0, sizeof outs);
  int64_t t0 = 0;
  for (int i = 0; i < CALLS; i++) {
    char key[32];
    snprintf(key, sizeof key, "user:%d", i);
    Perfc__Test__V1__EchoRequest req = PERFC__TEST__V1__ECHO_REQUEST__INIT;
    req.message = key;
    perfc_call_opts co = {.timeout_ms = 20000};
    cr_assert_eq(perfc__test__v1__test_service__echo__call_async(
                     ch, &req, &co, on_done, &outs[i]),
                 0);
  }
  usleep(300 * 1000); /* the calls reach the server and their GETs Redis */
  int early = 0;
  for (int i = 0; i < CALLS; i++)
    early += atomic_load(&outs[i].done);
  cr_assert_eq(early, 0, "%d calls ended while Redis was stopped", early);
  t0 = now_ms();
  tr_kill(&tr);
  int64_t end = now_ms() + 5000;
  int done = 0;
  while (now_ms() < end) {
    done = 0;
    for (int i = 0; i < CALLS; i++)
      done += atomic_load(&outs[i].done);
    if (done == CALLS)
      break;
    usleep(2000);
  }
  cr_assert_eq(done, CALLS, "%d calls still hang after the kill", CALLS - done);
  int64_t worst = 0;
  for (int i = 0; i < CALLS; i++) {
    cr_assert_eq(outs[i].code, PERFC_STATUS_UNAVAILABLE, "call %d: %s", i,
                 perfc_status_name(outs[i].code));
    if (outs[i].at_ms - t0 > worst)
      worst = outs[i].at_ms - t0;
  }
  cr_assert_lt(worst, 1000 * SAN_SLOW,
               "the last call ended %lld ms after the kill",
               (long long)worst);
  cr_assert_eq(tr_restart(&tr), 0);
  /* Reconnected within the backoff (100 ms at most) plus a connect; the
   * restarted server is empty, so values are set again. */
  int64_t t1 = now_ms();
  int ok = 0;
  while (!ok && now_ms() - t1 < 5000) {
    static atomic_int n;
    atomic_store(&n, 0);
    const char *argv[3] = {"SET", "user:0", "back"};
    if (perfc_redis_async_command(ra, 3, argv, NULL, set_cb, &n) == 0) {
      int64_t e = now_ms() + 500;
      while (atomic_load(&n) == 0 && now_ms() < e)
        usleep(1000);
      ok = atomic_load(&n) == 1;
    }
    if (!ok)
      usleep(20 * 1000);
  }
  cr_assert(ok, "no Redis within 5 s of the restart");
  fill_values(3);
  /* The client's own loop is connected again; each server loop has its
   * own connection, reopened by its timer within the backoff (100 ms at
   * most) plus a connect: until then its calls are refused at once with
   * UNAVAILABLE. So every call succeeds within a bound, not at once. */
  int all_ok = 0, rounds = 0;
  int64_t t2 = now_ms();
  while (!all_ok && now_ms() - t2 < 5000 * SAN_SLOW) {
    rounds++;
    cr_assert_eq(fire(10000, 20000), CALLS);
    all_ok = 1;
    for (int i = 0; i < CALLS; i++)
      if (outs[i].code != PERFC_STATUS_OK) {
        cr_assert_eq(outs[i].code, PERFC_STATUS_UNAVAILABLE,
                     "call %d after the restart: %s", i,
                     perfc_status_name(outs[i].code));
        all_ok = 0;
      }
    if (!all_ok)
      usleep(20 * 1000);
  }
  cr_assert(all_ok, "calls still failing %lld ms after the restart",
            (long long)(now_ms() - t2));
  for (int i = 0; i < CALLS; i++) {
    char want[48];
    snprintf(want, sizeof want, "name-%d-3", i);
    cr_assert_str_eq(outs[i].value, want, "call %d got another's value", i);
  }
  cr_log_info("all %d calls OK %lld ms after Redis answered again (%d rounds)",
              CALLS, (long long)(now_ms() - t2), rounds);
}

Test(redis_async, killed_mid_pipeline_inline, .init = start_inline,
     .fini = stop, .timeout = 120) {
  killed_mid_pipeline();
}

Test(redis_async, killed_mid_pipeline_pool, .init = start_pool, .fini = stop,
     .timeout = 120) {
  killed_mid_pipeline();
}
