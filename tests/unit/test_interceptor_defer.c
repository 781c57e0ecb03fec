/* test_interceptor_defer.c — a server interceptor's deferred decision
 * (perfc_ic_defer / perfc_ic_resume, perfc/interceptor.h), on both
 * transports: three interceptors, `probe` (records what its `after` saw),
 * `gate` (defers, and resumes as the call's x-gate metadata says: from
 * another thread, inside the hook, from a loop timer, or when the test
 * says) and `next` (counts its `before`: the chain went on). The handler
 * counts its runs. Checked: OK goes on to `next` and the handler; a
 * refusal ends the call with its status and message and `after` hooks of
 * probe and gate run; other calls on the same connection go on while one
 * is held (h2: the loop is free); a deadline or a client's reset while
 * held ends the call DEADLINE_EXCEEDED / CANCELLED, the late resume is
 * accepted once and refused after; the server's shutdown waits for a held
 * decision and ends it without a crash. */
#include <google/protobuf/empty.pb-c.h>
#include "test_transport.h"
#include <perfc.h>
#include <perfc/interceptor.h>
#include <perfc/loop.h>

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static atomic_int handler_runs, next_befores, probe_afters, gate_afters;
static atomic_int probe_last_code, gate_last_code;
static atomic_int held; /* a "hold" call is waiting */
static perfc_ic_pending *_Atomic held_p;

static perfc_status_code ok_invoke(perfc_ctx *ctx, const void *h, void *ud,
                                   const ProtobufCMessage *req,
                                   ProtobufCMessage *resp, perfc_stream *s) {
  (void)ctx, (void)h, (void)ud, (void)req, (void)resp, (void)s;
  atomic_fetch_add(&handler_runs, 1);
  return PERFC_STATUS_OK;
}

#define MSG &google__protobuf__empty__descriptor
static const perfc_method_desc methods[] = {
    {.name = "A", .path = "/t.v1.G/A", .kind = PERFC_METHOD_UNARY,
     .input = MSG, .output = MSG, .invoke = ok_invoke},
    {.name = "P", .path = "/t.v1.G/P", .kind = PERFC_METHOD_UNARY,
     .input = MSG, .output = MSG, .invoke = ok_invoke,
     .executor = PERFC_EXEC_POOL},
};
static const perfc_service_desc svc = {
    .name = "t.v1.G", .n_methods = 2, .methods = methods};
static const struct {
  void *a, *p;
} impl = {(void *)1, (void *)1};

static void ms_sleep(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits (bounded, 5 s) until *v reaches `want`. */
static int wait_for(atomic_int *v, int want) {
  for (int i = 0; i < 5000 && atomic_load(v) < want; i++)
    ms_sleep(1);
  return atomic_load(v) >= want;
}

/* ---- interceptors ---------------------------------------------------------- */

static perfc_status_code probe_before(void *self, void *ms, perfc_ctx *ctx,
                                      void **cs) {
  (void)self, (void)ms, (void)ctx, (void)cs;
  return PERFC_STATUS_OK;
}

static void probe_after(void *self, void *ms, perfc_ctx *ctx, void *cs,
                        perfc_status_code code) {
  (void)self, (void)ms, (void)ctx, (void)cs;
  atomic_store(&probe_last_code, (int)code);
  atomic_fetch_add(&probe_afters, 1);
}

static perfc_status_code next_before(void *self, void *ms, perfc_ctx *ctx,
                                     void **cs) {
  (void)self, (void)ms, (void)ctx, (void)cs;
  atomic_fetch_add(&next_befores, 1);
  return PERFC_STATUS_OK;
}

typedef struct resumer {
  perfc_ic_pending *p;
  perfc_status_code code;
} resumer;

static void *resume_later(void *arg) {
  resumer *r = arg;
  ms_sleep(20);
  if (r->code != PERFC_STATUS_OK)
    perfc_ctx_error(perfc_ic_pending_ctx(r->p), r->code, "denied by gate");
  cr_assert_eq(perfc_ic_resume(r->p, r->code), 0);
  free(r);
  return NULL;
}

typedef struct loop_resumer {
  perfc_ic_pending *p;
  perfc_loop_timer *t;
} loop_resumer;

/* On the call's loop: the chain goes on right here. */
static void on_timer(void *ud) {
  loop_resumer *lr = ud;
  perfc_ic_resume(lr->p, PERFC_STATUS_OK);
  perfc_loop_timer_free(lr->t); /* fired: nothing of it is used after */
  free(lr);
}

static perfc_status_code gate_before(void *self, void *ms, perfc_ctx *ctx,
                                     void **cs) {
  (void)self, (void)ms, (void)cs;
  const char *how = perfc_ctx_metadata_get(ctx, "x-gate", NULL);
  if (how == NULL)
    return PERFC_STATUS_OK;
  if (strcmp(how, "bogus") == 0)
    return PERFC_STATUS_DEFERRED; /* without a handle */
  perfc_ic_pending *p = perfc_ic_defer(ctx);
  cr_assert_not_null(p, "%s", perfc_last_error());
  /* A second defer of the same call is refused. */
  cr_assert_null(perfc_ic_defer(ctx));
  if (strcmp(how, "inline") == 0) {
    cr_assert_eq(perfc_ic_resume(p, PERFC_STATUS_OK), 0);
    cr_assert_eq(perfc_ic_resume(p, PERFC_STATUS_OK), PERFC_ESTATE);
  } else if (strcmp(how, "inline-but-ok") == 0) {
    /* Defers and resumes, then returns OK (a bug): the resume decides. */
    cr_assert_eq(perfc_ic_resume(p, PERFC_STATUS_OK), 0);
    return PERFC_STATUS_OK;
  } else if (strcmp(how, "thread-but-ok") == 0) {
    resumer *r = malloc(sizeof *r);
    r->p = p;
    r->code = PERFC_STATUS_PERMISSION_DENIED;
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, resume_later, r), 0);
    pthread_detach(t);
    return PERFC_STATUS_OK; /* the bug: the resume's denial must win */
  } else if (strcmp(how, "thread-ok") == 0 || strcmp(how, "thread-deny") == 0) {
    resumer *r = malloc(sizeof *r);
    r->p = p;
    r->code = how[7] == 'o' ? PERFC_STATUS_OK : PERFC_STATUS_PERMISSION_DENIED;
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, resume_later, r), 0);
    pthread_detach(t);
  } else if (strcmp(how, "loop") == 0) {
    perfc_loop *l = perfc_loop_current();
    cr_assert_not_null(l);
    loop_resumer *lr = malloc(sizeof *lr);
    lr->p = p;
    cr_assert_eq(perfc_loop_timer_new(&lr->t, l, on_timer, lr), 0);
    perfc_loop_timer_arm(lr->t, perfc_loop_now_ms() + 20);
  } else { /* hold: the test resumes */
    atomic_store(&held_p, p);
    atomic_fetch_add(&held, 1);
  }
  return PERFC_STATUS_DEFERRED;
}

static void gate_after(void *self, void *ms, perfc_ctx *ctx, void *cs,
                       perfc_status_code code) {
  (void)self, (void)ms, (void)ctx, (void)cs;
  atomic_store(&gate_last_code, (int)code);
  atomic_fetch_add(&gate_afters, 1);
}

/* ---- fixture ----------------------------------------------------------------- */

static perfc_server *srv;
static perfc_channel *ch;

static void start(void) {
  atomic_store(&handler_runs, 0);
  atomic_store(&next_befores, 0);
  atomic_store(&probe_afters, 0);
  atomic_store(&gate_afters, 0);
  atomic_store(&held, 0);
  atomic_store(&held_p, NULL);
  int port;
  cr_assert_eq(test_server_new(&srv, NULL), 0);
  cr_assert_eq(perfc_server_listen(srv, "127.0.0.1:0", &port), 0);
  cr_assert_eq(perfc_server_add_service(srv, &svc, &impl, NULL), 0);
  perfc_server_interceptor probe = {.name = "probe",
                                    .before = probe_before,
                                    .after = probe_after};
  perfc_server_interceptor gate = {.name = "gate",
                                   .before = gate_before,
                                   .after = gate_after};
  perfc_server_interceptor next = {.name = "next", .before = next_before};
  cr_assert_eq(perfc_server_add_interceptor(srv, &probe), 0);
  cr_assert_eq(perfc_server_add_interceptor(srv, &gate), 0);
  cr_assert_eq(perfc_server_add_interceptor(srv, &next), 0);
  cr_assert_eq(perfc_server_start(srv), 0);
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  cr_assert_eq(perfc_channel_new(&ch, target, NULL), 0);
}

static void stop(void) {
  perfc_channel_free(ch);
  perfc_server_free(srv);
  ch = NULL;
  srv = NULL;
}

static perfc_status_code call_m(int m, const char *gate, int64_t timeout_ms,
                                char *msg, size_t cap) {
  perfc_metadata md[] = {{"x-gate", gate, 0}};
  perfc_call_opts o = {.metadata = md,
                       .metadata_count = gate ? 1 : 0,
                       .wait_for_ready = 1,
                       .timeout_ms = timeout_ms};
  Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
  ProtobufCMessage *resp = NULL;
  perfc_status st = {0};
  perfc_status_code c =
      perfc_channel_unary(ch, &methods[m], &req.base, &resp, &o, &st);
  if (msg != NULL)
    snprintf(msg, cap, "%s", st.message ? st.message : "");
  perfc_status_reset(&st);
  if (resp)
    protobuf_c_message_free_unpacked(resp, NULL);
  return c;
}

static perfc_status_code call(const char *gate, int64_t timeout_ms,
                              char *msg, size_t cap) {
  return call_m(0, gate, timeout_ms, msg, cap);
}

typedef struct bg_call {
  pthread_t t;
  const char *gate;
  int64_t timeout_ms;
  perfc_status_code code;
  int64_t done_ms;
} bg_call;

static void *bg_main(void *arg) {
  bg_call *b = arg;
  b->code = call(b->gate, b->timeout_ms, NULL, 0);
  b->done_ms = now_ms();
  return NULL;
}

static void bg_start(bg_call *b, const char *gate, int64_t timeout_ms) {
  b->gate = gate;
  b->timeout_ms = timeout_ms;
  cr_assert_eq(pthread_create(&b->t, NULL, bg_main, b), 0);
}

/* ---- tests ------------------------------------------------------------------- */

Test(interceptor_defer, resume_ok_from_another_thread_goes_on) {
  start();
  cr_assert_eq(call("thread-ok", 5000, NULL, 0), PERFC_STATUS_OK);
  cr_assert_eq(atomic_load(&next_befores), 1, "the chain went on");
  cr_assert_eq(atomic_load(&handler_runs), 1);
  cr_assert(wait_for(&probe_afters, 1));
  cr_assert_eq(atomic_load(&probe_last_code), PERFC_STATUS_OK);
  cr_assert_eq(atomic_load(&gate_last_code), PERFC_STATUS_OK);
  /* Undeferred calls are untouched. */
  cr_assert_eq(call(NULL, 5000, NULL, 0), PERFC_STATUS_OK);
  cr_assert_eq(atomic_load(&handler_runs), 2);
  stop();
}

Test(interceptor_defer, resumed_call_goes_to_the_pool) {
  /* A POOL method after a deferred decision: on the C core the decision
   * already asked for the client's close; the pool hand-off must not ask
   * again. */
  start();
  for (int i = 0; i < 3; i++)
    cr_assert_eq(call_m(1, "thread-ok", 5000, NULL, 0), PERFC_STATUS_OK);
  cr_assert_eq(atomic_load(&handler_runs), 3);
  cr_assert(wait_for(&probe_afters, 3));
  cr_assert_eq(atomic_load(&probe_last_code), PERFC_STATUS_OK);
  stop();
}

Test(interceptor_defer, resume_refusal_ends_call_and_runs_after_hooks) {
  start();
  char msg[256];
  cr_assert_eq(call("thread-deny", 5000, msg, sizeof msg),
               PERFC_STATUS_PERMISSION_DENIED);
  cr_assert_str_eq(msg, "denied by gate");
  cr_assert_eq(atomic_load(&handler_runs), 0);
  cr_assert_eq(atomic_load(&next_befores), 0, "the chain stopped at gate");
  cr_assert(wait_for(&probe_afters, 1));
  cr_assert(wait_for(&gate_afters, 1));
  cr_assert_eq(atomic_load(&probe_last_code), PERFC_STATUS_PERMISSION_DENIED);
  cr_assert_eq(atomic_load(&gate_last_code), PERFC_STATUS_PERMISSION_DENIED);
  stop();
}

Test(interceptor_defer, hook_that_defers_but_returns_ok_waits_for_the_resume) {
  start();
  /* Resumed later with a denial: the call ends with it; neither the rest
   * of the chain nor the handler ran on the hook's OK. */
  char msg[256];
  cr_assert_eq(call("thread-but-ok", 5000, msg, sizeof msg),
               PERFC_STATUS_PERMISSION_DENIED);
  cr_assert_str_eq(msg, "denied by gate");
  cr_assert_eq(atomic_load(&next_befores), 0);
  cr_assert_eq(atomic_load(&handler_runs), 0);
  cr_assert(wait_for(&gate_afters, 1));
  cr_assert_eq(atomic_load(&gate_last_code), PERFC_STATUS_PERMISSION_DENIED);
  /* Resumed inside the hook with OK: the chain goes on once, not twice. */
  cr_assert_eq(call("inline-but-ok", 5000, NULL, 0), PERFC_STATUS_OK);
  cr_assert_eq(atomic_load(&next_befores), 1);
  cr_assert_eq(atomic_load(&handler_runs), 1);
  /* Nothing is left pending: the shutdown does not wait (it would until
   * the test's timeout if a handle had been left unresumed). */
  int64_t t0 = now_ms();
  stop();
  cr_assert_lt(now_ms() - t0, 3000, "the shutdown waited for a decision");
}

Test(interceptor_defer, resume_inside_the_hook) {
  start();
  cr_assert_eq(call("inline", 5000, NULL, 0), PERFC_STATUS_OK);
  cr_assert_eq(atomic_load(&handler_runs), 1);
  cr_assert_eq(atomic_load(&next_befores), 1);
  stop();
}

Test(interceptor_defer, deferred_without_a_handle_is_internal) {
  start();
  char msg[256];
  cr_assert_eq(call("bogus", 5000, msg, sizeof msg), PERFC_STATUS_INTERNAL);
  cr_assert(strstr(msg, "without perfc_ic_defer"), "%s", msg);
  cr_assert_eq(atomic_load(&handler_runs), 0);
  stop();
}

Test(interceptor_defer, resume_from_a_loop_timer) {
  if (!test_transport_is_h2())
    cr_skip_test("the C core transport has no loop in a `before` hook");
  start();
  cr_assert_eq(call("loop", 5000, NULL, 0), PERFC_STATUS_OK);
  cr_assert_eq(atomic_load(&handler_runs), 1);
  stop();
}

Test(interceptor_defer, other_calls_go_on_while_one_is_held) {
  start();
  bg_call held_call;
  bg_start(&held_call, "hold", 10000);
  cr_assert(wait_for(&held, 1), "the hold call never reached the gate");
  /* Same channel, same connection (h2: the same loop): served now. */
  int64_t t0 = now_ms();
  for (int i = 0; i < 5; i++)
    cr_assert_eq(call(NULL, 5000, NULL, 0), PERFC_STATUS_OK);
  cr_assert_lt(now_ms() - t0, 2000);
  cr_assert_eq(atomic_load(&handler_runs), 5, "the held call did not run");
  cr_assert_eq(perfc_ic_resume(atomic_load(&held_p), PERFC_STATUS_OK), 0);
  pthread_join(held_call.t, NULL);
  cr_assert_eq(held_call.code, PERFC_STATUS_OK);
  cr_assert_eq(atomic_load(&handler_runs), 6);
  stop();
}

Test(interceptor_defer, deadline_while_held_then_late_resume) {
  start();
  int64_t t0 = now_ms();
  cr_assert_eq(call("hold", 150, NULL, 0), PERFC_STATUS_DEADLINE_EXCEEDED);
  cr_assert_lt(now_ms() - t0, 3000);
  cr_assert_eq(atomic_load(&held), 1);
  perfc_ic_pending *p = atomic_load(&held_p);
  /* The server answered at the deadline; the decision is still pending. */
  cr_assert_eq(atomic_load(&probe_afters), 0);
  /* The server's own deadline (from grpc-timeout, taken when the call
   * arrived) passes just after the client's: the client's reset may come
   * first (the C core), and the call is over for the server once both. */
  perfc_ctx *pctx = perfc_ic_pending_ctx(p);
  cr_assert_not_null(pctx);
  for (int i = 0; i < 2000 && (perfc_ic_pending_cancelled(p) != 1 ||
                               perfc_ctx_remaining_ms(pctx) != 0);
       i++)
    ms_sleep(1);
  cr_assert_eq(perfc_ic_pending_cancelled(p), 1);
  cr_assert_eq(perfc_ctx_remaining_ms(pctx), 0);
  cr_assert_eq(perfc_ic_resume(p, PERFC_STATUS_OK), 0);
  cr_assert(wait_for(&probe_afters, 1));
  cr_assert_eq(atomic_load(&probe_last_code), PERFC_STATUS_DEADLINE_EXCEEDED);
  cr_assert_eq(atomic_load(&handler_runs), 0, "a late OK runs no handler");
  cr_assert_eq(perfc_ic_resume(p, PERFC_STATUS_OK), PERFC_ESTATE);
  cr_assert_null(perfc_ic_pending_ctx(p));
  stop();
}

Test(interceptor_defer, client_reset_while_held) {
  start();
  perfc_metadata md[] = {{"x-gate", "hold", 0}};
  perfc_call_opts o = {.metadata = md, .metadata_count = 1,
                       .wait_for_ready = 1, .timeout_ms = 10000};
  Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
  perfc_client_stream *s;
  cr_assert_eq(perfc_channel_stream_open(ch, &methods[0], &req.base, &o, &s),
               0);
  cr_assert(wait_for(&held, 1));
  perfc_ic_pending *p = atomic_load(&held_p);
  perfc_client_stream_cancel(s); /* RST_STREAM */
  cr_assert_eq(perfc_client_stream_finish(s, NULL, NULL),
               PERFC_STATUS_CANCELLED);
  perfc_client_stream_free(s);
  for (int i = 0; i < 5000 && perfc_ic_pending_cancelled(p) != 1; i++)
    ms_sleep(1);
  cr_assert_eq(perfc_ic_pending_cancelled(p), 1, "the server saw the reset");
  cr_assert_eq(perfc_ic_resume(p, PERFC_STATUS_OK), 0);
  cr_assert(wait_for(&probe_afters, 1));
  cr_assert_eq(atomic_load(&probe_last_code), PERFC_STATUS_CANCELLED);
  cr_assert_eq(atomic_load(&handler_runs), 0);
  cr_assert_eq(perfc_ic_resume(p, PERFC_STATUS_OK), PERFC_ESTATE);
  stop();
}

typedef struct shut {
  pthread_t t;
  atomic_int done;
} shut;

static void *shut_main(void *arg) {
  shut *s = arg;
  perfc_server_shutdown(srv, 100);
  atomic_store(&s->done, 1);
  return NULL;
}

Test(interceptor_defer, shutdown_waits_for_a_held_decision) {
  start();
  bg_call held_call;
  bg_start(&held_call, "hold", 20000);
  cr_assert(wait_for(&held, 1));
  shut sh = {.done = 0};
  cr_assert_eq(pthread_create(&sh.t, NULL, shut_main, &sh), 0);
  /* Past the grace: the connections are closed, the call is cancelled, and
   * the shutdown waits for the decision (as for a deferred call). */
  perfc_ic_pending *p = atomic_load(&held_p);
  for (int i = 0; i < 5000 && perfc_ic_pending_cancelled(p) != 1; i++)
    ms_sleep(1);
  cr_assert_eq(perfc_ic_pending_cancelled(p), 1);
  cr_assert_eq(atomic_load(&sh.done), 0, "shutdown did not wait");
  cr_assert_eq(perfc_ic_resume(p, PERFC_STATUS_OK), 0);
  pthread_join(sh.t, NULL);
  pthread_join(held_call.t, NULL);
  cr_assert_neq(held_call.code, PERFC_STATUS_OK);
  cr_assert_eq(atomic_load(&handler_runs), 0);
  cr_assert(wait_for(&probe_afters, 1));
  cr_assert_eq(atomic_load(&probe_last_code), PERFC_STATUS_CANCELLED);
  stop();
}
