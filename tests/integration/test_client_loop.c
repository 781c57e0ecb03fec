/* test_client_loop.c — outgoing calls completed on an event loop
 * (perfc_channel_unary_on_loop, runtime/src/client/client.c) over loopback,
 * on both transports (CTest integration.client_loop and .core).
 *
 * An upstream server's Echo handler defers its call, calls a downstream
 * server (TestService) with perfc_channel_unary_on_loop() and finishes its
 * own call from the callback with the downstream's answer. On h2 the
 * handler runs inline on its loop and calls from there; on the C core
 * transport no handler has a loop, so the handler hands the call to a
 * loop the test runs (the API's own rule: call from a loop thread).
 * Checked: the callback runs on the loop that started the call (on h2 the
 * handler's own thread), exactly once per call, with the downstream's
 * response, status, headers and trailers; many concurrent calls each get
 * their own reply; an outgoing deadline; a downstream process killed with
 * calls in flight (every one UNAVAILABLE once, none hangs); the upstream
 * call cancelled by its client cancels the downstream call; the upstream
 * server shut down with outgoing calls in flight; a loop stopped before
 * the reply (CANCELLED during the stop, on the loop's thread); the
 * refusals (no loop on the thread, a loop not the thread's). */
#include "perfc/deferred.h"
#include "perfc/loop.h"
#include "test_service.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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

static int wait_for(atomic_int *v, int want, int64_t limit_ms) {
  int64_t end = now_ms() + limit_ms;
  while (atomic_load(v) < want && now_ms() < end)
    usleep(2000);
  return atomic_load(v);
}

/* Checks that failed on server or loop threads. */
static atomic_int bad;
#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      atomic_fetch_add(&bad, 1);                                               \
    }                                                                          \
  } while (0)

/* ---- a loop of the test's own (the C core transport's handlers) ---------- */

static perfc_loop *aux;
static pthread_t aux_thread;
static int aux_running;

static void *aux_main(void *ud) {
  perfc_loop_run(ud);
  return NULL;
}

static void aux_start(void) {
  cr_assert_eq(perfc_loop_new(&aux), 0);
  cr_assert_eq(pthread_create(&aux_thread, NULL, aux_main, aux), 0);
  aux_running = 1;
}

static void aux_stop(void) {
  if (aux_running) {
    perfc_loop_stop(aux);
    pthread_join(aux_thread, NULL);
    aux_running = 0;
  }
  perfc_loop_free(aux);
  aux = NULL;
}

/* ---- the upstream handler ------------------------------------------------- */

static perfc_channel *out_ch; /* the handlers' channel to the downstream */
static atomic_int started;    /* outgoing calls started */
static atomic_int cb_runs;    /* their callbacks */
static atomic_int cb_on_loop; /* ... on the loop (and thread) that started it */
static atomic_int cb_codes[PERFC_STATUS_COUNT];
static atomic_int meta_ok;    /* Meta's header and trailer seen */

/* Client interceptor on out_ch: every call seen once at each end. */
static atomic_int ic_before, ic_after, ic_sent, ic_recv;
static perfc_status_code cic_before(void *self, const perfc_method_desc *m,
                                    void **st) {
  (void)self;
  (void)m;
  (void)st;
  atomic_fetch_add(&ic_before, 1);
  return PERFC_STATUS_OK;
}
static void cic_message(void *self, const perfc_method_desc *m, void *st,
                        int sent) {
  (void)self;
  (void)m;
  (void)st;
  atomic_fetch_add(sent ? &ic_sent : &ic_recv, 1);
}
static void cic_after(void *self, const perfc_method_desc *m, void *st,
                      perfc_status_code code, int64_t ns) {
  (void)self;
  (void)m;
  (void)st;
  (void)code;
  (void)ns;
  atomic_fetch_add(&ic_after, 1);
}
static const perfc_client_interceptor counting_cic = {
    .name = "count", .before = cic_before, .on_message = cic_message,
    .after = cic_after};

typedef struct op {
  perfc_deferred *d;
  perfc_ctx *ctx;
  const Perfc__Test__V1__EchoRequest *req;
  Perfc__Test__V1__EchoResponse *resp;
  perfc_loop *loop;     /* where the call was started */
  pthread_t thread;     /* ... and its thread */
  perfc_loop_task *task; /* the hand-over to `aux` (C core transport) */
} op;

static const char *mode_of(const Perfc__Test__V1__EchoRequest *req) {
  return req->message ? req->message : "";
}

static void on_reply(const perfc_call_result *r, void *ud) {
  op *o = ud;
  if (perfc_loop_current() == o->loop &&
      pthread_equal(pthread_self(), o->thread))
    atomic_fetch_add(&cb_on_loop, 1);
  if (r->code >= 0 && r->code < PERFC_STATUS_COUNT)
    atomic_fetch_add(&cb_codes[r->code], 1);
  perfc_status_code code = r->code;
  if (code == PERFC_STATUS_OK) {
    const Perfc__Test__V1__EchoResponse *down =
        (const Perfc__Test__V1__EchoResponse *)r->response;
    CHECK(down != NULL);
    /* In the call's arena (opts.arena): lives until the finish. */
    o->resp->payload = down->payload;
    if (strcmp(mode_of(o->req), "meta") == 0) {
      int h = 0, t = 0;
      for (size_t i = 0; i < r->header_count; i++)
        h += strcmp(r->headers[i].key, "x-initial") == 0 &&
             strcmp(r->headers[i].value, "first") == 0;
      for (size_t i = 0; i < r->trailer_count; i++)
        t += strcmp(r->trailers[i].key, "x-trailing") == 0 &&
             r->trailers[i].value_len == o->req->payload.len &&
             memcmp(r->trailers[i].value, o->req->payload.data,
                    o->req->payload.len) == 0;
      if (h == 1 && t == 1)
        atomic_fetch_add(&meta_ok, 1);
    }
  } else {
    code = perfc_ctx_error(perfc_deferred_ctx(o->d), code, "downstream: %s",
                           r->message ? r->message : "");
  }
  atomic_fetch_add(&cb_runs, 1);
  CHECK(perfc_deferred_finish(o->d, code) == 0);
}

/* On the loop that makes the outgoing call. */
static void start_outgoing(op *o) {
  o->loop = perfc_loop_current();
  o->thread = pthread_self();
  const Perfc__Test__V1__EchoRequest *req = o->req;
  const char *mode = mode_of(req);
  perfc_call_opts co = {.parent = o->ctx, .arena = perfc_ctx_arena(o->ctx)};
  perfc_metadata md = {.key = "x-in", .value = (const char *)req->payload.data,
                       .value_len = req->payload.len};
  const perfc_method_desc *m = M(ECHO);
  Perfc__Test__V1__EchoRequest down = PERFC__TEST__V1__ECHO_REQUEST__INIT;
  down.payload = req->payload;
  if (strcmp(mode, "meta") == 0) {
    m = M(META);
    co.metadata = &md;
    co.metadata_count = 1;
  } else if (strcmp(mode, "slow-noparent") == 0) {
    /* Not tied to the handler's call: only its own 20 s deadline or its
     * loop's stop ends it. */
    m = M(SLOW);
    down.sleep_ms = req->sleep_ms;
    co.parent = NULL;
    co.timeout_ms = 20000;
  } else if (strcmp(mode, "slow") == 0) {
    m = M(SLOW);
    down.sleep_ms = req->sleep_ms;
    co.timeout_ms = req->response_bytes; /* 0: the parent's deadline rules */
    if (co.timeout_ms == 0)
      co.no_timeout = true;
  }
  atomic_fetch_add(&started, 1);
  /* Echo through the generated stub, the others through the runtime. */
  int rc = m == M(ECHO) ? perfc__test__v1__test_service__echo__call_on_loop(
                              out_ch, &down, &co, o->loop, on_reply, o)
                        : perfc_channel_unary_on_loop(out_ch, m, &down.base,
                                                      &co, o->loop, on_reply, o);
  if (rc != 0)
    CHECK(perfc_deferred_finish(o->d, perfc_ctx_fail(o->ctx, rc)) == 0);
}

static void on_handover(void *ud) {
  op *o = ud;
  perfc_loop_task_free(o->task);
  start_outgoing(o);
}

static perfc_status_code outcall_echo(perfc_ctx *ctx,
                                      const Perfc__Test__V1__EchoRequest *req,
                                      Perfc__Test__V1__EchoResponse *resp,
                                      void *ud) {
  (void)ud;
  op *o = perfc_ctx_alloc(ctx, sizeof *o);
  if (o == NULL || (o->d = perfc_call_defer(ctx)) == NULL) {
    CHECK(0);
    return PERFC_STATUS_INTERNAL;
  }
  o->ctx = ctx;
  o->req = req;
  o->resp = resp;
  if (perfc_loop_current() != NULL) {
    start_outgoing(o); /* h2: inline on this loop */
  } else {
    /* The C core transport: no loop here; the test's loop calls. */
    CHECK(perfc_loop_task_new(&o->task, aux, on_handover, o) == 0);
    perfc_loop_task_post(o->task);
  }
  return PERFC_STATUS_OK; /* ignored: deferred */
}

/* ---- servers ---------------------------------------------------------------- */

static perfc_server *up, *down;
static perfc_channel *ch; /* the test's channel to `up` */

static void start_up(void) {
  perfc_server_opts o;
  perfc_server_opts_init(&o);
  o.default_executor = PERFC_EXEC_INLINE;
  o.threads = 2;
  cr_assert_eq(test_server_new(&up, &o), 0);
  int port;
  cr_assert_eq(perfc_server_listen(up, "127.0.0.1:0", &port), 0);
  static Perfc__Test__V1__TestService_Handlers h;
  h = test_service_handlers;
  h.echo = outcall_echo;
  cr_assert_eq(perfc__test__v1__test_service__perfc_register(up, &h, NULL), 0);
  cr_assert_eq(perfc_server_start(up), 0);
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  cr_assert_eq(perfc_channel_new(&ch, target, NULL), 0);
}

static void out_channel(int port) {
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  const perfc_client_interceptor *ics[] = {&counting_cic};
  perfc_channel_opts co = {.interceptors = ics, .interceptor_count = 1};
  cr_assert_eq(perfc_channel_new(&out_ch, target, &co), 0);
}

static void reset_counts(void) {
  atomic_store(&bad, 0);
  atomic_store(&started, 0);
  atomic_store(&cb_runs, 0);
  atomic_store(&cb_on_loop, 0);
  atomic_store(&meta_ok, 0);
  for (int i = 0; i < PERFC_STATUS_COUNT; i++)
    atomic_store(&cb_codes[i], 0);
  atomic_store(&ic_before, 0);
  atomic_store(&ic_after, 0);
  atomic_store(&ic_sent, 0);
  atomic_store(&ic_recv, 0);
  atomic_store(&test_slow_started, 0);
  atomic_store(&test_slow_cancelled, 0);
}

/* Downstream in this process (with 8 workers for Slow). */
static void setup(void) {
  reset_counts();
  aux_start();
  perfc_server_opts o;
  perfc_server_opts_init(&o);
  o.threads = 8;
  int port;
  down = test_server_start(&o, &port);
  cr_assert_not_null(down);
  out_channel(port);
  start_up();
}

static void teardown(void) {
  cr_assert_eq(atomic_load(&bad), 0, "checks failed on server threads");
  perfc_channel_free(ch);
  ch = NULL;
  if (up != NULL) {
    perfc_server_shutdown(up, 2000);
    perfc_server_free(up);
    up = NULL;
  }
  aux_stop();
  perfc_channel_free(out_ch);
  out_ch = NULL;
  if (down != NULL)
    test_server_stop(down);
  down = NULL;
}

/* Calls upstream Echo synchronously. */
static perfc_status_code call_up(const char *payload, const char *mode,
                                 int sleep_ms, int out_timeout_ms,
                                 int64_t timeout_ms, perfc_status *st) {
  Perfc__Test__V1__EchoRequest req = PERFC__TEST__V1__ECHO_REQUEST__INIT;
  req.payload.data = (uint8_t *)payload;
  req.payload.len = strlen(payload);
  req.message = (char *)mode;
  req.sleep_ms = sleep_ms;
  req.response_bytes = out_timeout_ms;
  Perfc__Test__V1__EchoResponse *resp = NULL;
  perfc_call_opts co = {.timeout_ms = timeout_ms};
  perfc_status_code c =
      perfc__test__v1__test_service__echo__call(ch, &req, &resp, &co, st);
  if (c == PERFC_STATUS_OK) {
    if (resp->payload.len != strlen(payload) ||
        memcmp(resp->payload.data, payload, strlen(payload)) != 0)
      c = PERFC_STATUS_DATA_LOSS;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  }
  return c;
}

Test(client_loop, relay_answers_from_the_callback_on_the_loop, .init = setup,
     .fini = teardown, .timeout = 60) {
  perfc_status st = {0};
  for (int i = 0; i < 5; i++) {
    char p[32];
    snprintf(p, sizeof p, "hello-%d", i);
    cr_assert_eq(call_up(p, "", 0, 0, 5000, &st), PERFC_STATUS_OK, "%s",
                 st.message ? st.message : "");
    perfc_status_reset(&st);
  }
  /* Headers and trailers of the downstream reach the callback. */
  cr_assert_eq(call_up("meta-value", "meta", 0, 0, 5000, &st), PERFC_STATUS_OK,
               "%s", st.message ? st.message : "");
  perfc_status_reset(&st);
  cr_assert_eq(atomic_load(&meta_ok), 1);
  /* A downstream error comes back as the upstream's status. */
  cr_assert_eq(call_up("x", "slow", 2000, 0, 100 * SAN_SLOW, &st),
               PERFC_STATUS_DEADLINE_EXCEEDED);
  perfc_status_reset(&st);
  cr_assert_eq(wait_for(&cb_runs, 7, 3000 * SAN_SLOW), 7);
  cr_assert_eq(atomic_load(&started), 7);
  cr_assert_eq(atomic_load(&cb_codes[PERFC_STATUS_OK]), 6);
  /* Each callback on the loop (and thread) that started its call: the
   * handler's own on h2. */
  cr_assert_eq(atomic_load(&cb_on_loop), 7);
  /* The channel's interceptors saw each call once, at both ends. */
  cr_assert_eq(atomic_load(&ic_before), 7);
  cr_assert_eq(atomic_load(&ic_after), 7);
  cr_assert_eq(atomic_load(&ic_sent), 7);
  cr_assert_eq(atomic_load(&ic_recv), 6);
}

/* ---- many at once --------------------------------------------------------- */

#define MANY 200
static atomic_int many_done, many_ok, many_wrong;
static char many_payload[MANY][24];

static void many_cb(perfc_status_code code, const char *msg,
                    const ProtobufCMessage *resp, void *ud) {
  (void)msg;
  const char *want = ud;
  if (code == PERFC_STATUS_OK) {
    const Perfc__Test__V1__EchoResponse *r =
        (const Perfc__Test__V1__EchoResponse *)resp;
    if (r->payload.len == strlen(want) &&
        memcmp(r->payload.data, want, r->payload.len) == 0)
      atomic_fetch_add(&many_ok, 1);
    else
      atomic_fetch_add(&many_wrong, 1);
  }
  atomic_fetch_add(&many_done, 1);
}

Test(client_loop, many_concurrent_calls_each_get_their_own_reply,
     .init = setup, .fini = teardown, .timeout = 120) {
  atomic_store(&many_done, 0);
  atomic_store(&many_ok, 0);
  atomic_store(&many_wrong, 0);
  for (int i = 0; i < MANY; i++) {
    snprintf(many_payload[i], sizeof many_payload[i], "call-%d-%x", i,
             (unsigned)(i * 2654435761u));
    Perfc__Test__V1__EchoRequest req = PERFC__TEST__V1__ECHO_REQUEST__INIT;
    req.payload.data = (uint8_t *)many_payload[i];
    req.payload.len = strlen(many_payload[i]);
    perfc_call_opts co = {.timeout_ms = 20000 * SAN_SLOW};
    cr_assert_eq(perfc_channel_unary_async(ch, M(ECHO), &req.base, &co,
                                           many_cb, many_payload[i]),
                 0);
  }
  cr_assert_eq(wait_for(&many_done, MANY, 30000 * SAN_SLOW), MANY);
  cr_assert_eq(atomic_load(&many_wrong), 0);
  cr_assert_eq(atomic_load(&many_ok), MANY);
  cr_assert_eq(atomic_load(&cb_runs), MANY);
  cr_assert_eq(atomic_load(&cb_on_loop), MANY);
  cr_assert_eq(atomic_load(&cb_codes[PERFC_STATUS_OK]), MANY);
  cr_assert_eq(atomic_load(&ic_after), MANY);
}

Test(client_loop, outgoing_deadline_exceeded, .init = setup, .fini = teardown,
     .timeout = 60) {
  perfc_status st = {0};
  int64_t t0 = now_ms();
  /* The outgoing call's own 100 ms, under a 10 s upstream deadline. */
  cr_assert_eq(call_up("late", "slow", 3000, 100 * SAN_SLOW, 10000, &st),
               PERFC_STATUS_DEADLINE_EXCEEDED, "%s",
               st.message ? st.message : "");
  int64_t ms = now_ms() - t0;
  cr_assert(st.message != NULL && strstr(st.message, "downstream:") != NULL,
            "%s", st.message ? st.message : "(none)");
  perfc_status_reset(&st);
  cr_assert_lt(ms, 1500 * SAN_SLOW, "answered after %lld ms", (long long)ms);
  cr_assert_eq(atomic_load(&cb_runs), 1);
  cr_assert_eq(atomic_load(&cb_codes[PERFC_STATUS_DEADLINE_EXCEEDED]), 1);
  cr_assert_eq(atomic_load(&cb_on_loop), 1);
  /* The downstream handler saw its deadline pass. */
  cr_assert_eq(wait_for(&test_slow_cancelled, 1, 2000 * SAN_SLOW), 1);
}

Test(client_loop, upstream_cancel_cancels_the_downstream_call, .init = setup,
     .fini = teardown, .timeout = 60) {
  Perfc__Test__V1__EchoRequest req = PERFC__TEST__V1__ECHO_REQUEST__INIT;
  req.payload.data = (uint8_t *)"bye";
  req.payload.len = 3;
  req.message = "slow";
  req.sleep_ms = 10000;
  perfc_client_stream *s = NULL;
  cr_assert_eq(perfc_channel_stream_open(ch, M(ECHO), &req.base, NULL, &s), 0);
  cr_assert_eq(wait_for(&test_slow_started, 1, 5000 * SAN_SLOW), 1);
  int64_t t0 = now_ms();
  perfc_client_stream_cancel(s);
  perfc_client_stream_free(s);
  /* The downstream handler sees its call cancelled within its 5 ms poll,
   * not after its 10 s. */
  cr_assert_eq(wait_for(&test_slow_cancelled, 1, 3000 * SAN_SLOW), 1);
  cr_assert_lt(now_ms() - t0, 3000 * SAN_SLOW);
  cr_assert_eq(wait_for(&cb_runs, 1, 3000 * SAN_SLOW), 1);
  cr_assert_eq(atomic_load(&cb_codes[PERFC_STATUS_CANCELLED]), 1);
  cr_assert_eq(atomic_load(&cb_on_loop), 1);
  usleep(100 * 1000);
  cr_assert_eq(atomic_load(&cb_runs), 1, "a callback ran twice");
}

/* ---- faults: the upstream server stops, the downstream dies ---------------- */

#define INFLIGHT 6
static atomic_int up_done, up_codes[PERFC_STATUS_COUNT];

static void up_cb(perfc_status_code code, const char *msg,
                  const ProtobufCMessage *resp, void *ud) {
  (void)msg;
  (void)resp;
  (void)ud;
  if (code >= 0 && code < PERFC_STATUS_COUNT)
    atomic_fetch_add(&up_codes[code], 1);
  atomic_fetch_add(&up_done, 1);
}

static void start_inflight_mode(int sleep_ms, const char *mode);
static void start_inflight(int sleep_ms) { start_inflight_mode(sleep_ms, "slow"); }

static void start_inflight_mode(int sleep_ms, const char *mode) {
  atomic_store(&up_done, 0);
  for (int i = 0; i < PERFC_STATUS_COUNT; i++)
    atomic_store(&up_codes[i], 0);
  for (int i = 0; i < INFLIGHT; i++) {
    Perfc__Test__V1__EchoRequest req = PERFC__TEST__V1__ECHO_REQUEST__INIT;
    req.payload.data = (uint8_t *)"inflight";
    req.payload.len = 8;
    req.message = (char *)mode;
    req.sleep_ms = sleep_ms;
    perfc_call_opts co = {.timeout_ms = 30000 * SAN_SLOW};
    cr_assert_eq(perfc_channel_unary_async(ch, M(ECHO), &req.base, &co, up_cb,
                                           NULL),
                 0);
  }
  cr_assert_eq(wait_for(&started, INFLIGHT, 5000 * SAN_SLOW), INFLIGHT);
}

Test(client_loop, upstream_shutdown_with_calls_in_flight, .init = setup,
     .fini = teardown, .timeout = 60) {
  start_inflight(20000);
  cr_assert_eq(wait_for(&test_slow_started, INFLIGHT, 5000 * SAN_SLOW),
               INFLIGHT);
  int64_t t0 = now_ms();
  perfc_server_shutdown(up, 200);
  int64_t ms = now_ms() - t0;
  /* The grace's end cancels the deferred calls, which cancels their
   * outgoing calls; each callback runs once, finishes its call, and
   * nothing holds the shutdown. */
  cr_assert_lt(ms, 3000 * SAN_SLOW, "shutdown took %lld ms", (long long)ms);
  cr_assert_eq(atomic_load(&cb_runs), INFLIGHT);
  cr_assert_eq(atomic_load(&cb_codes[PERFC_STATUS_CANCELLED]), INFLIGHT);
  cr_assert_eq(wait_for(&test_slow_cancelled, INFLIGHT, 3000 * SAN_SLOW),
               INFLIGHT);
  cr_assert_eq(wait_for(&up_done, INFLIGHT, 5000 * SAN_SLOW), INFLIGHT);
  cr_assert_eq(atomic_load(&up_codes[PERFC_STATUS_OK]), 0);
  perfc_server_free(up);
  up = NULL;
  cr_assert_eq(atomic_load(&cb_runs), INFLIGHT);
}

Test(client_loop, upstream_shutdown_ends_unparented_calls_with_its_loops,
     .init = setup, .fini = teardown, .timeout = 60) {
  if (!test_transport_is_h2())
    cr_skip_test("the C core transport's handlers have no loop: here the "
                 "test's own loop makes the calls, and the server's stop "
                 "does not stop it (covered by loop_stopped_before_the_reply)");
  /* Outgoing calls made without `parent`: the shutdown cannot cancel them
   * through their handler's call; the h2 loops stop at the grace's end and
   * that ends them (CANCELLED), well before their 20 s deadline. */
  start_inflight_mode(20000, "slow-noparent");
  cr_assert_eq(wait_for(&test_slow_started, INFLIGHT, 5000 * SAN_SLOW),
               INFLIGHT);
  int64_t t0 = now_ms();
  perfc_server_shutdown(up, 200);
  int64_t ms = now_ms() - t0;
  cr_assert_lt(ms, 5000 * SAN_SLOW, "shutdown took %lld ms", (long long)ms);
  cr_assert_eq(atomic_load(&cb_runs), INFLIGHT);
  cr_assert_eq(atomic_load(&cb_codes[PERFC_STATUS_CANCELLED]), INFLIGHT);
  cr_assert_eq(atomic_load(&cb_on_loop), INFLIGHT);
  cr_assert_eq(wait_for(&test_slow_cancelled, INFLIGHT, 3000 * SAN_SLOW),
               INFLIGHT);
  cr_assert_eq(wait_for(&up_done, INFLIGHT, 5000 * SAN_SLOW), INFLIGHT);
  cr_assert_eq(atomic_load(&up_codes[PERFC_STATUS_OK]), 0);
  perfc_server_free(up);
  up = NULL;
  cr_assert_eq(atomic_load(&cb_runs), INFLIGHT);
}

/* bin/perfc-test-server (next to this binary) as a child process. */
static pid_t spawn_server(int *out_port) {
  char exe[512], path[600];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  cr_assert_gt(n, 0);
  exe[n] = '\0';
  *strrchr(exe, '/') = '\0';
  snprintf(path, sizeof path, "%s/perfc-test-server", exe);
  int fds[2];
  cr_assert_eq(pipe(fds), 0);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 1);
    close(fds[0]);
    execl(path, path, "--listen", "127.0.0.1:0", (char *)NULL);
    _exit(127);
  }
  close(fds[1]);
  FILE *f = fdopen(fds[0], "r");
  char line[128] = "";
  cr_assert_not_null(fgets(line, sizeof line, f), "perfc-test-server did not start");
  fclose(f);
  char *colon = strrchr(line, ':');
  cr_assert_not_null(colon, "%s", line);
  *out_port = atoi(colon + 1);
  return pid;
}

static pid_t child = -1;

static void setup_child(void) {
  reset_counts();
  aux_start();
  int port;
  child = spawn_server(&port);
  out_channel(port);
  start_up();
}

static void teardown_child(void) {
  if (child > 0) {
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    child = -1;
  }
  teardown();
}

Test(client_loop, downstream_killed_with_calls_in_flight, .init = setup_child,
     .fini = teardown_child, .timeout = 60) {
  /* A first call connects the channel, so the ones in flight are on an
   * established connection when it dies. */
  perfc_status st = {0};
  cr_assert_eq(call_up("warm", "", 0, 0, 10000, &st), PERFC_STATUS_OK, "%s",
               st.message ? st.message : "");
  perfc_status_reset(&st);
  reset_counts();
  start_inflight(20000);
  /* The requests reach the child (no counter there to watch). */
  usleep(300 * 1000 * SAN_SLOW);
  cr_assert_eq(atomic_load(&cb_runs), 0);
  kill(child, SIGKILL);
  waitpid(child, NULL, 0);
  child = -1;
  int64_t t0 = now_ms();
  cr_assert_eq(wait_for(&cb_runs, INFLIGHT, 5000 * SAN_SLOW), INFLIGHT);
  cr_assert_lt(now_ms() - t0, 5000 * SAN_SLOW);
  cr_assert_eq(atomic_load(&cb_codes[PERFC_STATUS_UNAVAILABLE]), INFLIGHT,
               "OK %d CANCELLED %d DEADLINE %d INTERNAL %d",
               atomic_load(&cb_codes[0]),
               atomic_load(&cb_codes[PERFC_STATUS_CANCELLED]),
               atomic_load(&cb_codes[PERFC_STATUS_DEADLINE_EXCEEDED]),
               atomic_load(&cb_codes[PERFC_STATUS_INTERNAL]));
  cr_assert_eq(wait_for(&up_done, INFLIGHT, 5000 * SAN_SLOW), INFLIGHT);
  cr_assert_eq(atomic_load(&up_codes[PERFC_STATUS_UNAVAILABLE]), INFLIGHT);
  cr_assert_eq(atomic_load(&cb_on_loop), INFLIGHT);
  usleep(100 * 1000);
  cr_assert_eq(atomic_load(&cb_runs), INFLIGHT, "a callback ran twice");
}

/* ---- a loop that stops before the reply; refusals --------------------------- */

static atomic_int stop_cb_runs, stop_cb_code, stop_cb_on_loop;
static atomic_int stop_again_rc;
static pthread_t stop_loop_thread;

static void stop_cb(const perfc_call_result *r, void *ud) {
  (void)ud;
  atomic_store(&stop_cb_code, r->code);
  atomic_store(&stop_cb_on_loop,
               pthread_equal(pthread_self(), stop_loop_thread) &&
                   perfc_loop_current() == aux);
  /* A call from here, during the stop, is refused (no new box). */
  Perfc__Test__V1__EchoRequest req = PERFC__TEST__V1__ECHO_REQUEST__INIT;
  atomic_store(&stop_again_rc,
               perfc_channel_unary_on_loop(out_ch, M(ECHO), &req.base, NULL,
                                           NULL, stop_cb, NULL));
  atomic_fetch_add(&stop_cb_runs, 1);
}

static atomic_int stop_started_rc = 1;
static perfc_loop_task *stop_task;

static void start_on_aux(void *ud) {
  (void)ud;
  perfc_loop_task_free(stop_task);
  stop_task = NULL;
  stop_loop_thread = pthread_self();
  Perfc__Test__V1__EchoRequest req = PERFC__TEST__V1__ECHO_REQUEST__INIT;
  req.sleep_ms = 20000;
  perfc_call_opts co = {.timeout_ms = 30000};
  atomic_store(&stop_started_rc,
               perfc_channel_unary_on_loop(out_ch, M(SLOW), &req.base, &co,
                                           aux, stop_cb, NULL));
}

static void setup_down_only(void) {
  reset_counts();
  aux_start();
  perfc_server_opts o;
  perfc_server_opts_init(&o);
  o.threads = 4;
  int port;
  down = test_server_start(&o, &port);
  cr_assert_not_null(down);
  out_channel(port);
}

static void noop_cb(const perfc_call_result *r, void *ud) {
  (void)r;
  (void)ud;
  atomic_fetch_add(&bad, 1); /* must never run */
}

Test(client_loop, loop_stopped_before_the_reply, .init = setup_down_only,
     .fini = teardown, .timeout = 60) {
  atomic_store(&stop_cb_runs, 0);
  atomic_store(&stop_again_rc, 0);
  cr_assert_eq(perfc_loop_task_new(&stop_task, aux, start_on_aux, NULL), 0);
  perfc_loop_task_post(stop_task);
  cr_assert_eq(wait_for(&test_slow_started, 1, 5000 * SAN_SLOW), 1);
  /* The downstream handler may start before the loop thread stored the
   * start's return value (seen under load): wait for that too. */
  int64_t end = now_ms() + 5000 * SAN_SLOW;
  while (atomic_load(&stop_started_rc) == 1 && now_ms() < end)
    usleep(1000);
  cr_assert_eq(atomic_load(&stop_started_rc), 0);
  cr_assert_eq(atomic_load(&stop_cb_runs), 0);
  /* The loop stops with the call in flight: the callback runs during the
   * stop, on the loop's thread, with CANCELLED, once; the downstream call
   * is cancelled. */
  perfc_loop_stop(aux);
  pthread_join(aux_thread, NULL);
  aux_running = 0;
  cr_assert_eq(atomic_load(&stop_cb_runs), 1);
  cr_assert_eq(atomic_load(&stop_cb_code), PERFC_STATUS_CANCELLED);
  cr_assert_eq(atomic_load(&stop_cb_on_loop), 1);
  cr_assert_eq(atomic_load(&stop_again_rc), PERFC_ESHUTDOWN);
  cr_assert_eq(wait_for(&test_slow_cancelled, 1, 3000 * SAN_SLOW), 1);
  /* Channel free waits for the core's completion of the cancelled call,
   * which then only releases it. */
  perfc_channel_free(out_ch);
  out_ch = NULL;
  cr_assert_eq(atomic_load(&stop_cb_runs), 1);
  cr_assert_eq(atomic_load(&ic_before), 1);
  cr_assert_eq(atomic_load(&ic_after), 1);
}

Test(client_loop, refused_off_the_loop, .init = setup_down_only,
     .fini = teardown, .timeout = 30) {
  Perfc__Test__V1__EchoRequest req = PERFC__TEST__V1__ECHO_REQUEST__INIT;
  /* This thread runs no loop. */
  cr_assert_eq(perfc_channel_unary_on_loop(out_ch, M(ECHO), &req.base, NULL,
                                           NULL, noop_cb, NULL),
               PERFC_EINVAL);
  cr_assert(strstr(perfc_last_error(), "no event loop") != NULL, "%s",
            perfc_last_error());
  /* A loop, but not this thread's. */
  cr_assert_eq(perfc_channel_unary_on_loop(out_ch, M(ECHO), &req.base, NULL,
                                           aux, noop_cb, NULL),
               PERFC_EINVAL);
  cr_assert_eq(perfc_channel_unary_on_loop(out_ch, M(ECHO), &req.base, NULL,
                                           aux, NULL, NULL),
               PERFC_EINVAL);
  usleep(50 * 1000);
  cr_assert_eq(atomic_load(&bad), 0, "a refused call's callback ran");
  cr_assert_eq(atomic_load(&ic_before), 0);
}

/* ---- a client interceptor's refusal comes through the callback ------------ */

static perfc_status_code deny_before(void *self, const perfc_method_desc *m,
                                     void **st) {
  (void)self;
  (void)m;
  (void)st;
  return PERFC_STATUS_PERMISSION_DENIED;
}
static const perfc_client_interceptor deny_cic = {.name = "deny",
                                                  .before = deny_before};
static perfc_channel *deny_ch;
static perfc_loop_task *deny_task;
static atomic_int deny_returned, deny_cb_runs, deny_cb_code, deny_cb_after_return,
    deny_cb_on_loop, deny_rc = 1;
static atomic_int deny_msg_ok;

static void deny_cb(const perfc_call_result *r, void *ud) {
  (void)ud;
  atomic_store(&deny_cb_code, r->code);
  atomic_store(&deny_cb_after_return, atomic_load(&deny_returned));
  atomic_store(&deny_cb_on_loop, perfc_loop_current() == aux);
  atomic_store(&deny_msg_ok, r->message != NULL &&
                                 strstr(r->message, "client interceptor") != NULL);
  atomic_fetch_add(&deny_cb_runs, 1);
}

static void deny_on_aux(void *ud) {
  (void)ud;
  perfc_loop_task_free(deny_task);
  deny_task = NULL;
  Perfc__Test__V1__EchoRequest req = PERFC__TEST__V1__ECHO_REQUEST__INIT;
  atomic_store(&deny_rc, perfc_channel_unary_on_loop(deny_ch, M(ECHO), &req.base,
                                                     NULL, NULL, deny_cb, NULL));
  atomic_store(&deny_returned, 1);
}

Test(client_loop, interceptor_refusal_comes_through_the_callback,
     .init = setup_down_only, .fini = teardown, .timeout = 30) {
  const perfc_client_interceptor *ics[] = {&deny_cic};
  perfc_channel_opts co = {.interceptors = ics, .interceptor_count = 1};
  cr_assert_eq(perfc_channel_new(&deny_ch, "127.0.0.1:1", &co), 0);
  cr_assert_eq(perfc_loop_task_new(&deny_task, aux, deny_on_aux, NULL), 0);
  perfc_loop_task_post(deny_task);
  cr_assert_eq(wait_for(&deny_cb_runs, 1, 3000 * SAN_SLOW), 1);
  cr_assert_eq(atomic_load(&deny_rc), 0);
  cr_assert_eq(atomic_load(&deny_cb_code), PERFC_STATUS_PERMISSION_DENIED);
  /* Never from inside the start function: later, on the loop. */
  cr_assert_eq(atomic_load(&deny_cb_after_return), 1);
  cr_assert_eq(atomic_load(&deny_cb_on_loop), 1);
  cr_assert_eq(atomic_load(&deny_msg_ok), 1);
  perfc_channel_free(deny_ch);
  deny_ch = NULL;
  usleep(20 * 1000);
  cr_assert_eq(atomic_load(&deny_cb_runs), 1);
}
