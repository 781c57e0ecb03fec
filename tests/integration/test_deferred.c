/* test_deferred.c — deferred unary calls (perfc/deferred.h) over loopback,
 * on both transports (CTest integration.deferred and .core): a handler
 * defers its call and a continuation finishes it later — a timer on the
 * handler's own loop when it has one (an inline handler on h2), else
 * another thread (the C core's pollers, pool workers). Checked: the answer
 * and its status, that interceptors see the call end at the finish (not
 * at the handler's return) exactly once, a finish inside the handler, a
 * second finish refused, a client reset and a deadline while deferred
 * (the continuation sees them, the call ends once, the server goes on),
 * and many calls at once. */
#include "perfc/deferred.h"
#include "perfc/loop.h"
#include "test_service.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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
#define SVC perfc__test__v1__test_service__perfc_desc
#define M(name) (&SVC.methods[PERFC__TEST__V1__TEST_SERVICE__PERFC_METHOD_##name])

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- what the handler and its continuation saw ------------------------------ */

static atomic_int handler_runs;      /* Echo handler entries */
static atomic_int cont_runs;         /* continuations that finished */
static atomic_int cont_finishing;    /* ... counted just before the finish */
static atomic_int cont_on_loop;      /* ... on the handler's own loop thread */
static atomic_int cont_saw_cancel;   /* ... that saw the call cancelled */
static atomic_int second_finish_rc;  /* the "double" case's second finish */
static atomic_int second_defer_null; /* perfc_call_defer twice: NULL */
static atomic_int after_rc_stale;    /* perfc_deferred_ctx after the finish */
/* Checks that failed on server threads (criterion asserts only on the
 * test's own thread). */
static atomic_int bad;
#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      atomic_fetch_add(&bad, 1);                                               \
    }                                                                          \
  } while (0)

/* The interceptor: Echo calls' ends, by status, and the last one's length. */
static atomic_int after_calls;
static atomic_int after_codes[PERFC_STATUS_COUNT];
static _Atomic int64_t after_last_ms;

static void ic_after(void *self, void *ms, perfc_ctx *ctx, void *cs,
                     perfc_status_code code) {
  (void)self;
  (void)ms;
  (void)cs;
  if (strcmp(perfc_ctx_method(ctx), M(ECHO)->path) != 0)
    return;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  int64_t now = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
  atomic_store(&after_last_ms, (now - perfc_ctx_start_ns(ctx)) / 1000000);
  atomic_fetch_add(&after_codes[code], 1);
  atomic_fetch_add(&after_calls, 1);
}

static const perfc_server_interceptor counting_ic = {.name = "count",
                                                     .after = ic_after};

/* One deferred call, in its arena. */
typedef struct op {
  perfc_deferred *d;
  Perfc__Test__V1__EchoResponse *resp;
  const Perfc__Test__V1__EchoRequest *req; /* lives until the finish */
  perfc_loop *loop;                        /* the handler's, or NULL */
  perfc_loop_timer *timer;
  pthread_t handler_thread;
} op;

static void finish_op(op *o) {
  int on_loop = o->loop != NULL && perfc_loop_current() == o->loop &&
                pthread_equal(pthread_self(), o->handler_thread);
  if (on_loop)
    atomic_fetch_add(&cont_on_loop, 1);
  int c = perfc_deferred_cancelled(o->d);
  if (c == 1)
    atomic_fetch_add(&cont_saw_cancel, 1);
  perfc_ctx *ctx = perfc_deferred_ctx(o->d);
  CHECK(ctx != NULL);
  const char *mode = o->req->message ? o->req->message : "";
  int twice = strcmp(mode, "double") == 0;
  perfc_status_code code = (perfc_status_code)o->req->code;
  o->resp->payload = o->req->payload;
  o->resp->cancelled = c == 1;
  if (code != PERFC_STATUS_OK)
    code = perfc_ctx_error(ctx, code, "deferred failure %d", (int)code);
  perfc_deferred *d = o->d;
  atomic_fetch_add(&cont_finishing, 1);
  int rc = perfc_deferred_finish(d, code);
  CHECK(rc == 0);
  /* `o` and the request lived in the call's arena: gone once it ended. */
  atomic_fetch_add(&cont_runs, 1);
  if (twice) {
    atomic_store(&second_finish_rc, perfc_deferred_finish(d, PERFC_STATUS_OK));
    atomic_store(&after_rc_stale, perfc_deferred_ctx(d) == NULL);
  }
}

static void on_timer(void *ud) {
  op *o = ud;
  perfc_loop_timer_free(o->timer);
  finish_op(o);
}

static void *finisher(void *ud) {
  op *o = ud;
  usleep((useconds_t)o->req->sleep_ms * 1000);
  finish_op(o);
  return NULL;
}

/* perfc_deferred_run_handler(): the call whose handler handed it back, the
 * thread that ran it first, and the second run's thread. */
static perfc_ctx *_Atomic handback_ctx;
static _Atomic pthread_t handback_first;
static atomic_int handback_second_on_other_thread;

static void *hand_back(void *ud) {
  usleep(20 * 1000);
  CHECK(perfc_deferred_run_handler(ud) == 0);
  CHECK(perfc_deferred_finish(ud, PERFC_STATUS_OK) == PERFC_ESTATE);
  return NULL;
}

static perfc_status_code deferred_echo(perfc_ctx *ctx,
                                       const Perfc__Test__V1__EchoRequest *req,
                                       Perfc__Test__V1__EchoResponse *resp,
                                       void *ud) {
  (void)ud;
  atomic_fetch_add(&handler_runs, 1);
  const char *mode = req->message ? req->message : "";
  if (atomic_load(&handback_ctx) == ctx) {
    /* The second run, on a worker: an ordinary answer. */
    atomic_store(&handback_ctx, NULL);
    atomic_store(&handback_second_on_other_thread,
                 !pthread_equal(pthread_self(), atomic_load(&handback_first)));
    resp->payload = req->payload;
    return PERFC_STATUS_OK;
  }
  op *o = perfc_ctx_alloc(ctx, sizeof *o);
  if (o == NULL || (o->d = perfc_call_defer(ctx)) == NULL) {
    CHECK(0);
    return PERFC_STATUS_INTERNAL;
  }
  if (perfc_call_defer(ctx) == NULL)
    atomic_fetch_add(&second_defer_null, 1);
  o->resp = resp;
  o->req = req;
  o->handler_thread = pthread_self();
  if (strcmp(mode, "handback") == 0 || strcmp(mode, "handback-now") == 0) {
    /* Handed back to the server: this handler runs again on a worker,
     * where it answers (below, handback_second). */
    atomic_store(&handback_ctx, ctx);
    atomic_store(&handback_first, pthread_self());
    if (strcmp(mode, "handback-now") == 0) {
      /* Before the return: the hand-back waits for it. */
      CHECK(perfc_deferred_run_handler(o->d) == 0);
      CHECK(perfc_deferred_run_handler(o->d) == PERFC_ESTATE);
    } else {
      pthread_t t;
      CHECK(pthread_create(&t, NULL, hand_back, o->d) == 0);
      pthread_detach(t);
    }
    return PERFC_STATUS_INTERNAL; /* ignored: the call is deferred */
  }
  if (strcmp(mode, "early") == 0) {
    /* Finished before the handler returns: the call ends at the return. */
    resp->payload = req->payload;
    CHECK(perfc_deferred_finish(o->d, PERFC_STATUS_OK) == 0);
    CHECK(perfc_deferred_finish(o->d, PERFC_STATUS_OK) == PERFC_ESTATE);
    return PERFC_STATUS_INTERNAL; /* ignored: the call is deferred */
  }
  o->loop = perfc_loop_current();
  if (o->loop != NULL) {
    CHECK(perfc_loop_timer_new(&o->timer, o->loop, on_timer, o) == 0);
    perfc_loop_timer_arm(o->timer, perfc_loop_now_ms() + req->sleep_ms);
  } else {
    pthread_t t;
    CHECK(pthread_create(&t, NULL, finisher, o) == 0);
    pthread_detach(t);
  }
  return PERFC_STATUS_INTERNAL; /* ignored: the call is deferred */
}

/* ---- server and client -------------------------------------------------------- */

static perfc_server *srv;
static perfc_channel *ch;

static void start(perfc_executor exec) {
  perfc_server_opts o;
  perfc_server_opts_init(&o);
  o.default_executor = exec;
  o.threads = 2;
  cr_assert_eq(test_server_new(&srv, &o), 0);
  int port;
  cr_assert_eq(perfc_server_listen(srv, "127.0.0.1:0", &port), 0);
  static Perfc__Test__V1__TestService_Handlers h;
  h = test_service_handlers;
  h.echo = deferred_echo;
  cr_assert_eq(perfc__test__v1__test_service__perfc_register(srv, &h, NULL), 0);
  cr_assert_eq(perfc_server_add_interceptor(srv, &counting_ic), 0);
  cr_assert_eq(perfc_server_start(srv), 0);
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  cr_assert_eq(perfc_channel_new(&ch, target, NULL), 0);
  atomic_store(&handler_runs, 0);
  atomic_store(&cont_runs, 0);
  atomic_store(&cont_finishing, 0);
  atomic_store(&cont_on_loop, 0);
  atomic_store(&cont_saw_cancel, 0);
  atomic_store(&second_finish_rc, 0);
  atomic_store(&second_defer_null, 0);
  atomic_store(&after_calls, 0);
  atomic_store(&bad, 0);
  for (int i = 0; i < PERFC_STATUS_COUNT; i++)
    atomic_store(&after_codes[i], 0);
}

static void start_inline(void) { start(PERFC_EXEC_INLINE); }
static void start_pool(void) { start(PERFC_EXEC_POOL); }

static void stop(void) {
  cr_assert_eq(atomic_load(&bad), 0, "checks failed on server threads");
  perfc_channel_free(ch);
  ch = NULL;
  if (srv == NULL)
    return; /* the test stopped it */
  int64_t t0 = now_ms();
  perfc_server_shutdown(srv, 5000);
  /* Every deferred call was finished: nothing holds the shutdown. */
  cr_assert_lt(now_ms() - t0, 3000 * SAN_SLOW, "shutdown waited %lld ms",
               (long long)(now_ms() - t0));
  perfc_server_free(srv);
  srv = NULL;
  ch = NULL;
}

static perfc_status_code call(const char *payload, int sleep_ms, int code,
                              const char *mode, int64_t timeout_ms,
                              perfc_status *st, size_t *len_out) {
  Perfc__Test__V1__EchoRequest req = PERFC__TEST__V1__ECHO_REQUEST__INIT;
  req.payload.data = (uint8_t *)payload;
  req.payload.len = strlen(payload);
  req.sleep_ms = sleep_ms;
  req.code = code;
  req.message = (char *)mode;
  Perfc__Test__V1__EchoResponse *resp = NULL;
  perfc_call_opts co = {.timeout_ms = timeout_ms};
  perfc_status_code c =
      perfc__test__v1__test_service__echo__call(ch, &req, &resp, &co, st);
  if (c == PERFC_STATUS_OK) {
    /* Another call's answer would show here. */
    if (resp->payload.len != strlen(payload) ||
        memcmp(resp->payload.data, payload, strlen(payload)) != 0)
      c = PERFC_STATUS_DATA_LOSS;
    if (len_out != NULL)
      *len_out = resp->payload.len;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  }
  return c;
}

/* Waits (bounded) until `v` reaches `want`. */
static int wait_for(atomic_int *v, int want, int64_t limit_ms) {
  int64_t end = now_ms() + limit_ms;
  while (atomic_load(v) < want && now_ms() < end)
    usleep(2000);
  return atomic_load(v);
}

static void finished_from_continuation(int expect_on_loop) {
  perfc_status st = {0};
  for (int i = 0; i < 5; i++) {
    cr_assert_eq(call("deferred", 60, 0, "", 5000, &st, NULL), PERFC_STATUS_OK,
                 "%s", st.message ? st.message : "");
    perfc_status_reset(&st);
    /* The interceptor saw the end at the finish: after the continuation's
     * 60 ms, not at the handler's return a moment after the call came. */
    cr_assert_geq(atomic_load(&after_last_ms), 55, "call %d ended after %lld ms",
                  i, (long long)atomic_load(&after_last_ms));
  }
  cr_assert_eq(wait_for(&cont_runs, 5, 2000), 5);
  cr_assert_eq(atomic_load(&handler_runs), 5);
  cr_assert_eq(atomic_load(&after_calls), 5);
  cr_assert_eq(atomic_load(&after_codes[PERFC_STATUS_OK]), 5);
  cr_assert_eq(atomic_load(&second_defer_null), 5, "a second defer was accepted");
  cr_assert_eq(atomic_load(&cont_on_loop), expect_on_loop ? 5 : 0,
               "continuations on the handler's loop: %d",
               atomic_load(&cont_on_loop));
  /* An error status and its message come from the continuation too. */
  cr_assert_eq(call("x", 5, PERFC_STATUS_NOT_FOUND, "", 5000, &st, NULL),
               PERFC_STATUS_NOT_FOUND);
  cr_assert_str_eq(st.message, "deferred failure 5");
  perfc_status_reset(&st);
  cr_assert_eq(wait_for(&after_codes[PERFC_STATUS_NOT_FOUND], 1, 2000), 1);
}

Test(deferred, inline_finished_from_a_continuation_on_its_loop,
     .init = start_inline, .fini = stop, .timeout = 60) {
  /* On h2 an inline handler runs on its loop, and so does its timer. */
  finished_from_continuation(test_transport_is_h2());
}

Test(deferred, pool_finished_from_another_thread, .init = start_pool,
     .fini = stop, .timeout = 60) {
  finished_from_continuation(0);
}

Test(deferred, finished_inside_the_handler, .init = start_inline, .fini = stop,
     .timeout = 60) {
  perfc_status st = {0};
  cr_assert_eq(call("early", 0, 0, "early", 5000, &st, NULL), PERFC_STATUS_OK,
               "%s", st.message ? st.message : "");
  perfc_status_reset(&st);
  cr_assert_eq(wait_for(&after_calls, 1, 2000), 1);
  cr_assert_eq(atomic_load(&after_codes[PERFC_STATUS_OK]), 1);
}

Test(deferred, second_finish_refused, .init = start_inline, .fini = stop,
     .timeout = 60) {
  perfc_status st = {0};
  cr_assert_eq(call("twice", 10, 0, "double", 5000, &st, NULL),
               PERFC_STATUS_OK);
  perfc_status_reset(&st);
  cr_assert_eq(wait_for(&cont_runs, 1, 2000), 1);
  /* The second finish comes right after the first in the continuation. */
  int64_t end = now_ms() + 2000;
  while (atomic_load(&second_finish_rc) == 0 && now_ms() < end)
    usleep(1000);
  cr_assert_eq(atomic_load(&second_finish_rc), PERFC_ESTATE);
  cr_assert_eq(atomic_load(&after_rc_stale), 1);
  /* Ended once: one `after`, and the server goes on. */
  usleep(50 * 1000);
  cr_assert_eq(atomic_load(&after_calls), 1);
  cr_assert_eq(call("again", 0, 0, "", 5000, &st, NULL), PERFC_STATUS_OK);
  perfc_status_reset(&st);
  /* A handle that never was one is refused too. */
  cr_assert_eq(perfc_deferred_finish((perfc_deferred *)(uintptr_t)0x12345,
                                     PERFC_STATUS_OK),
               PERFC_ESTATE);
  cr_assert_eq(perfc_deferred_finish(NULL, PERFC_STATUS_OK), PERFC_ESTATE);
}

static void cancelled_by_client(void) {
  Perfc__Test__V1__EchoRequest req = PERFC__TEST__V1__ECHO_REQUEST__INIT;
  req.payload.data = (uint8_t *)"bye";
  req.payload.len = 3;
  req.sleep_ms = 400 * SAN_SLOW;
  perfc_client_stream *s = NULL;
  cr_assert_eq(perfc_channel_stream_open(ch, M(ECHO), &req.base, NULL, &s), 0);
  cr_assert_eq(wait_for(&handler_runs, 1, 5000), 1);
  perfc_client_stream_cancel(s);
  perfc_client_stream_free(s);
  /* The continuation runs at its time, sees the cancel, and the call ends
   * once, reported CANCELLED. */
  cr_assert_eq(wait_for(&cont_runs, 1, 3000 * SAN_SLOW), 1);
  cr_assert_eq(atomic_load(&cont_saw_cancel), 1);
  cr_assert_eq(wait_for(&after_calls, 1, 2000), 1);
  cr_assert_eq(atomic_load(&after_codes[PERFC_STATUS_CANCELLED]), 1,
               "after saw OK %d, DEADLINE %d", atomic_load(&after_codes[0]),
               atomic_load(&after_codes[PERFC_STATUS_DEADLINE_EXCEEDED]));
  perfc_status st = {0};
  cr_assert_eq(call("still", 0, 0, "", 5000, &st, NULL), PERFC_STATUS_OK);
  perfc_status_reset(&st);
}

Test(deferred, client_reset_while_deferred_inline, .init = start_inline,
     .fini = stop, .timeout = 60) {
  cancelled_by_client();
}

Test(deferred, client_reset_while_deferred_pool, .init = start_pool,
     .fini = stop, .timeout = 60) {
  cancelled_by_client();
}

static void deadline_while_deferred(void) {
  perfc_status st = {0};
  int64_t t0 = now_ms();
  cr_assert_eq(call("late", 500 * SAN_SLOW, 0, "", 100 * SAN_SLOW, &st, NULL),
               PERFC_STATUS_DEADLINE_EXCEEDED, "%s",
               st.message ? st.message : "");
  int64_t ms = now_ms() - t0;
  perfc_status_reset(&st);
  /* The client is answered at its deadline, not when the continuation
   * comes 400 ms later. */
  cr_assert_lt(ms, 400 * SAN_SLOW, "DEADLINE_EXCEEDED after %lld ms",
               (long long)ms);
  cr_assert_eq(wait_for(&cont_runs, 1, 3000 * SAN_SLOW), 1);
  cr_assert_eq(atomic_load(&cont_saw_cancel), 1);
  cr_assert_eq(wait_for(&after_calls, 1, 2000), 1);
  cr_assert_eq(atomic_load(&after_codes[PERFC_STATUS_DEADLINE_EXCEEDED]), 1);
  cr_assert_eq(call("still", 0, 0, "", 5000, &st, NULL), PERFC_STATUS_OK);
  perfc_status_reset(&st);
}

Test(deferred, deadline_while_deferred_inline, .init = start_inline,
     .fini = stop, .timeout = 60) {
  deadline_while_deferred();
}

Test(deferred, deadline_while_deferred_pool, .init = start_pool, .fini = stop,
     .timeout = 60) {
  deadline_while_deferred();
}

static void *many_calls(void *ud) {
  intptr_t id = (intptr_t)ud;
  for (int i = 0; i < 25; i++) {
    char payload[32];
    snprintf(payload, sizeof payload, "t%ld-c%d", (long)id, i);
    perfc_status st = {0};
    perfc_status_code c = call(payload, i % 3, 0, "", 10000, &st, NULL);
    perfc_status_reset(&st);
    if (c != PERFC_STATUS_OK)
      return (void *)1;
  }
  return NULL;
}

Test(deferred, many_calls_each_get_their_own_answer, .init = start_inline,
     .fini = stop, .timeout = 120) {
  pthread_t t[8];
  for (intptr_t i = 0; i < 8; i++)
    cr_assert_eq(pthread_create(&t[i], NULL, many_calls, (void *)i), 0);
  int failed = 0;
  for (int i = 0; i < 8; i++) {
    void *r;
    pthread_join(t[i], &r);
    failed += r != NULL;
  }
  cr_assert_eq(failed, 0);
  cr_assert_eq(wait_for(&after_calls, 200, 2000), 200);
  cr_assert_eq(atomic_load(&after_codes[PERFC_STATUS_OK]), 200);
}

Test(deferred, defer_refused_outside_a_unary_handler) {
  cr_assert_null(perfc_call_defer(NULL));
  cr_assert_eq(perfc_last_error_detail().code, PERFC_ESTATE);
}

/* Regression: the C core considers a call over once its deadline passed,
 * so its shutdown did not wait for a deferred call still to be finished,
 * and the server was freed under the continuation (ThreadSanitizer:
 * heap-use-after-free in perfc__call_unary_complete). The server now
 * counts deferred calls and its shutdown waits for their finish. Pool
 * executor: the continuation is a thread of its own, which outlives the
 * transport's threads. */
Test(deferred, shutdown_waits_for_a_pending_deferred_call, .init = start_pool,
     .fini = stop, .timeout = 120) {
  perfc_status st = {0};
  cr_assert_eq(call("late", 800 * SAN_SLOW, 0, "", 100 * SAN_SLOW, &st, NULL),
               PERFC_STATUS_DEADLINE_EXCEEDED);
  perfc_status_reset(&st);
  cr_assert_eq(atomic_load(&cont_finishing), 0);
  perfc_server_shutdown(srv, 0);
  /* The continuation's finish came before the shutdown returned (its
   * counter is bumped just before the finish; the rest of the
   * continuation may still run after it). */
  cr_assert_eq(atomic_load(&cont_finishing), 1);
  /* Ended once: DEADLINE_EXCEEDED, or CANCELLED when the shutdown's end
   * of grace marked it first (a call on a worker past the grace). */
  cr_assert_eq(atomic_load(&after_calls), 1);
  cr_assert_eq(atomic_load(&after_codes[PERFC_STATUS_DEADLINE_EXCEEDED]) +
                   atomic_load(&after_codes[PERFC_STATUS_CANCELLED]),
               1);
  perfc_server_free(srv);
  srv = NULL;
}

/* perfc_deferred_run_handler: a deferred call handed back to the server
 * runs its handler again on a worker, whose return ends it; from another
 * thread after the handler returned, and from the handler itself before
 * it returns. The handle is spent either way. */
static void handed_back(const char *mode) {
  atomic_store(&handback_second_on_other_thread, 0);
  perfc_status st = {0};
  cr_assert_eq(call("again", 0, 0, mode, 5000, &st, NULL), PERFC_STATUS_OK,
               "%s", st.message ? st.message : "");
  perfc_status_reset(&st);
  cr_assert_eq(atomic_load(&handler_runs), 2);
  cr_assert_eq(atomic_load(&handback_second_on_other_thread), 1);
  cr_assert_eq(wait_for(&after_calls, 1, 2000), 1);
  cr_assert_eq(atomic_load(&after_codes[PERFC_STATUS_OK]), 1);
}

Test(deferred, handed_back_to_the_pool_from_another_thread,
     .init = start_inline, .fini = stop, .timeout = 60) {
  handed_back("handback");
}

Test(deferred, handed_back_to_the_pool_before_the_handler_returns,
     .init = start_inline, .fini = stop, .timeout = 60) {
  handed_back("handback-now");
}
