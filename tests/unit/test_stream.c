/* test_stream.c — runtime/src/server/stream.c's loop streams
 * (perfc_server_set_stream_callbacks, perfc/stream.h): streaming handlers
 * as callbacks on the h2 loop, against perfc's own client. Each test checks
 * what a pool handler guarantees too: every message once and in order,
 * the interceptors' counts (a counting interceptor, the go-grpc-prometheus
 * metrics, the access log), cancellation, the client's deadline and one
 * the server set, flow control reaching the handler as PERFC_EFULL, and
 * the shutdown grace ending a stream with CANCELLED. On the C core
 * transport (the .core copy) every test instead checks that the
 * registration is refused, saying why. */
#include "test_service.h"

#include "perfc/access_log.h"
#include "perfc/grpc_metrics.h"
#include "perfc/log.h"
#include "perfc/metrics.h"
#include "perfc/tracing.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#define SVC "/perfc.test.v1.TestService/"

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* ---- a counting interceptor ------------------------------------------------- */

static atomic_int ic_before, ic_after, ic_recv, ic_sent, ic_code;
static atomic_int ic_lower_ms; /* > 0: `before` lowers the deadline to it */

static perfc_status_code ic_before_fn(void *self, void *ms, perfc_ctx *ctx,
                                      void **cs) {
  (void)self;
  (void)ms;
  (void)cs;
  if (strstr(perfc_ctx_method(ctx), "Echo") != NULL)
    return PERFC_STATUS_OK; /* only streams are counted */
  atomic_fetch_add(&ic_before, 1);
  int lower = atomic_load(&ic_lower_ms);
  if (lower > 0)
    perfc_ctx_set_deadline_ms(ctx, lower);
  return PERFC_STATUS_OK;
}

static void ic_message_fn(void *self, void *ms, perfc_ctx *ctx, void *cs,
                          int sent) {
  (void)self;
  (void)ms;
  (void)ctx;
  (void)cs;
  atomic_fetch_add(sent ? &ic_sent : &ic_recv, 1);
}

static void ic_after_fn(void *self, void *ms, perfc_ctx *ctx, void *cs,
                        perfc_status_code code) {
  (void)self;
  (void)ms;
  (void)cs;
  if (strstr(perfc_ctx_method(ctx), "Echo") != NULL)
    return;
  atomic_store(&ic_code, (int)code);
  atomic_fetch_add(&ic_after, 1);
}

static const perfc_server_interceptor counting = {
    .name = "counting",
    .before = ic_before_fn,
    .on_message = ic_message_fn,
    .after = ic_after_fn,
};

/* ---- loop handlers of this file --------------------------------------------- */

static atomic_int h_starts, h_cancels, h_finishes, h_off_loop;

static void check_thread(void) {
  char name[32] = "";
  pthread_getname_np(pthread_self(), name, sizeof name);
  if (strncmp(name, "perfc-h2-", 9) != 0)
    atomic_fetch_add(&h_off_loop, 1);
}

static perfc_status_code chat_start(perfc_ctx *ctx, perfc_stream *s,
                                    const ProtobufCMessage *req,
                                    ProtobufCMessage *resp, void **state) {
  (void)s;
  (void)req;
  (void)resp;
  (void)state;
  check_thread();
  /* The tracing interceptor's server span is the call's, as for a pool
   * handler (client calls made here would be its children). */
  perfc_span *span = perfc_tracing_ctx_span(ctx);
  if (span == NULL || !perfc_span_recording(span))
    atomic_fetch_add(&h_off_loop, 1000);
  atomic_fetch_add(&h_starts, 1);
  return PERFC_STATUS_OK;
}

static int chat_message(perfc_stream *s, const ProtobufCMessage *m, void *state) {
  (void)state;
  check_thread();
  const Perfc__Test__V1__EchoRequest *req = (const void *)m;
  Perfc__Test__V1__EchoResponse r = PERFC__TEST__V1__ECHO_RESPONSE__INIT;
  r.payload = req->payload;
  int rc = perfc__test__v1__test_service__chat__send(s, &r);
  if (rc == PERFC_EFULL)
    return PERFC_EFULL;
  /* PERFC_ESHUTDOWN once the call is over (its deadline passed): on_cancel
   * follows; the test sees the missing echo. */
  return 0;
}

static void chat_half_close(perfc_stream *s, void *state) {
  (void)state;
  check_thread();
  atomic_fetch_add(&h_finishes, 1);
  cr_assert_eq(perfc_stream_finish(s, PERFC_STATUS_OK), 0);
  /* Once finished the stream is closed to the handler. */
}

static void chat_cancel(perfc_stream *s, void *state) {
  (void)state;
  check_thread();
  /* The call is over: no finish, no send. */
  if (perfc_stream_finish(s, PERFC_STATUS_OK) != PERFC_ESTATE)
    atomic_fetch_add(&h_off_loop, 100);
  atomic_fetch_add(&h_cancels, 1);
}

static const perfc_stream_callbacks chat_cb = {
    .on_start = chat_start,
    .on_message = chat_message,
    .on_half_close = chat_half_close,
    .on_cancel = chat_cancel,
};

/* ---- the server --------------------------------------------------------------- */

static perfc_server *srv;
static perfc_channel *ch;
static perfc_grpc_metrics *gm;
static perfc_metrics_registry *reg;
static perfc_tracer *tracer;
static int port;

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char access_lines[8][512];
static int naccess;

static void log_sink(perfc_log_level level, const char *msg, void *ud) {
  (void)level;
  (void)ud;
  if (strstr(msg, "access") == NULL || strstr(msg, "TestService/Echo") != NULL)
    return;
  pthread_mutex_lock(&log_mu);
  if (naccess < 8)
    snprintf(access_lines[naccess++], sizeof access_lines[0], "%s", msg);
  pthread_mutex_unlock(&log_mu);
}

static void reset_counts(void) {
  atomic_store(&ic_before, 0);
  atomic_store(&ic_after, 0);
  atomic_store(&ic_recv, 0);
  atomic_store(&ic_sent, 0);
  atomic_store(&ic_code, -1);
  atomic_store(&ic_lower_ms, 0);
  atomic_store(&h_starts, 0);
  atomic_store(&h_cancels, 0);
  atomic_store(&h_finishes, 0);
  atomic_store(&h_off_loop, 0);
  atomic_store(&test_loop_cancels, 0);
  atomic_store(&test_loop_efull, 0);
  naccess = 0;
}

/* A server with TestService, this file's Chat callbacks (or, with
 * `service_loops`, test_service.c's loop versions of every stream), the
 * counting interceptor, the metrics interceptor and the access log.
 * Returns 0 on h2; on the C core transport checks the refusal and returns
 * -1 (the caller's test then ends). */
static int start(int service_loops, const perfc_server_opts *opts) {
  reset_counts();
  perfc_log_set_sink(log_sink, NULL);
  perfc_log_set_format(PERFC_LOG_LOGFMT);
  cr_assert_eq(test_server_new(&srv, opts), 0);
  cr_assert_eq(perfc_server_listen(srv, "127.0.0.1:0", &port), 0);
  cr_assert_eq(perfc__test__v1__test_service__perfc_register(
                   srv, &test_service_handlers, NULL),
               0);
  int rc = service_loops ? test_service_loop_streams(srv)
                         : perfc_server_set_stream_callbacks(srv, SVC "Chat",
                                                             &chat_cb, NULL);
  if (!test_transport_is_h2()) {
    cr_assert_eq(rc, PERFC_ESTATE, "the C core transport must refuse");
    cr_assert(strstr(perfc_last_error(), "need the h2 transport") != NULL, "%s",
              perfc_last_error());
    perfc_server_free(srv);
    srv = NULL;
    perfc_log_set_sink(NULL, NULL);
    return -1;
  }
  cr_assert_eq(rc, 0, "%s", perfc_last_error());
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_grpc_metrics_opts mo;
  perfc_grpc_metrics_opts_init(&mo);
  mo.registry = reg;
  cr_assert_eq(perfc_grpc_metrics_new(&gm, &mo), 0);
  cr_assert_eq(perfc_server_add_interceptor(srv, &counting), 0);
  cr_assert_eq(perfc_grpc_metrics_attach(gm, srv), 0);
  cr_assert_eq(perfc_access_log_attach(PERFC_LOG_INFO, srv), 0);
  /* Every call sampled; the exporter's port is closed (spans are counted
   * when they end, whatever their export does). */
  perfc_tracing_opts to;
  perfc_tracing_opts_init(&to);
  to.ignore_env = true;
  to.sampler = PERFC_SAMPLER_ALWAYS_ON;
  to.endpoint = "http://127.0.0.1:9/v1/traces";
  to.no_retry = true;
  to.registry = reg;
  cr_assert_eq(perfc_tracing_new(&tracer, &to), 0);
  cr_assert_eq(perfc_tracing_attach(tracer, srv), 0);
  cr_assert_eq(perfc_server_start(srv), 0);
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  cr_assert_eq(perfc_channel_new(&ch, target, NULL), 0);
  return 0;
}

static void stop(void) {
  perfc_channel_free(ch);
  ch = NULL;
  perfc_server_free(srv);
  srv = NULL;
  perfc_tracing_free(tracer);
  tracer = NULL;
  perfc_grpc_metrics_free(gm);
  gm = NULL;
  perfc_metrics_registry_free(reg);
  reg = NULL;
  perfc_log_set_sink(NULL, NULL);
}

/* Waits (bounded) until `*v` reaches `want`. */
static int wait_for(atomic_int *v, int want, int ms) {
  for (int64_t end = now_ms() + ms; now_ms() < end; sleep_ms(5))
    if (atomic_load(v) >= want)
      return 1;
  return atomic_load(v) >= want;
}

/* The value of the metrics line starting with `prefix` and holding
 * `method`, or -1. */
static double metric(const char *prefix, const char *method, const char *extra) {
  char *text = NULL;
  size_t len = 0;
  cr_assert_eq(perfc_metrics_registry_render(reg, &text, &len), 0);
  double v = -1;
  for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
    if (strncmp(line, prefix, strlen(prefix)) != 0 || strstr(line, method) == NULL ||
        (extra != NULL && strstr(line, extra) == NULL))
      continue;
    const char *sp = strrchr(line, ' ');
    v = sp ? strtod(sp + 1, NULL) : -1;
    break;
  }
  free(text);
  return v;
}

static perfc_call_opts call_opts(int64_t timeout_ms) {
  perfc_call_opts o = {.timeout_ms = timeout_ms, .wait_for_ready = true};
  return o;
}

/* ---- tests ---------------------------------------------------------------------- */

Test(loop_stream, bidi_every_message_once_with_interceptors_metrics_and_log) {
  if (start(0, NULL) != 0)
    return;
  perfc_call_opts o = call_opts(20000);
  perfc_client_stream *s;
  cr_assert_eq(perfc__test__v1__test_service__chat__open(ch, &o, &s), 0);
  enum { N = 500 };
  for (int i = 0; i < N; i++) {
    char body[32];
    int len = snprintf(body, sizeof body, "m%d", i);
    Perfc__Test__V1__EchoRequest req = PERFC__TEST__V1__ECHO_REQUEST__INIT;
    req.payload.data = (uint8_t *)body;
    req.payload.len = (size_t)len;
    cr_assert_eq(perfc__test__v1__test_service__chat__write(s, &req), 0);
    Perfc__Test__V1__EchoResponse *r;
    cr_assert_eq(perfc__test__v1__test_service__chat__read(s, &r), 1);
    cr_assert_eq(r->payload.len, (size_t)len);
    cr_assert_eq(memcmp(r->payload.data, body, (size_t)len), 0, "echo %d", i);
  }
  cr_assert_eq(perfc_client_stream_close_send(s), 0);
  Perfc__Test__V1__EchoResponse *r;
  cr_assert_eq(perfc__test__v1__test_service__chat__read(s, &r), 0);
  perfc_status st = {0};
  cr_assert_eq(perfc__test__v1__test_service__chat__finish(s, &st), PERFC_STATUS_OK);
  perfc_status_reset(&st);
  perfc_client_stream_free(s);
  cr_assert(wait_for(&ic_after, 1, 5000));
  cr_assert_eq(atomic_load(&h_starts), 1);
  cr_assert_eq(atomic_load(&h_finishes), 1);
  cr_assert_eq(atomic_load(&h_cancels), 0);
  cr_assert_eq(atomic_load(&h_off_loop), 0, "callbacks ran off the h2 loop");
  cr_assert_eq(atomic_load(&ic_before), 1);
  cr_assert_eq(atomic_load(&ic_after), 1);
  cr_assert_eq(atomic_load(&ic_code), PERFC_STATUS_OK);
  cr_assert_eq(atomic_load(&ic_recv), N);
  cr_assert_eq(atomic_load(&ic_sent), N);
  cr_assert_eq(metric("grpc_server_msg_received_total{", "grpc_method=\"Chat\"", NULL), N);
  cr_assert_eq(metric("grpc_server_msg_sent_total{", "grpc_method=\"Chat\"", NULL), N);
  cr_assert_eq(metric("grpc_server_started_total{", "grpc_method=\"Chat\"", NULL), 1);
  cr_assert_eq(metric("grpc_server_handled_total{", "grpc_method=\"Chat\"",
                      "grpc_code=\"OK\""),
               1);
  perfc_tracing_stats ts;
  perfc_tracing_stats_get(tracer, &ts);
  cr_assert_eq(ts.spans_ended, 1, "one server span, ended at the finish");
  stop();
  cr_assert_eq(naccess, 1);
  cr_assert(strstr(access_lines[0], "method=/perfc.test.v1.TestService/Chat code=OK") != NULL,
            "%s", access_lines[0]);
}

Test(loop_stream, client_stream_answers_with_the_response) {
  if (start(1, NULL) != 0)
    return;
  perfc_call_opts o = call_opts(20000);
  perfc_client_stream *s;
  cr_assert_eq(perfc__test__v1__test_service__collect__open(ch, &o, &s), 0);
  char want[400] = "";
  for (int i = 0; i < 100; i++) {
    char body[8];
    int len = snprintf(body, sizeof body, "%d,", i);
    strcat(want, body);
    Perfc__Test__V1__EchoRequest req = PERFC__TEST__V1__ECHO_REQUEST__INIT;
    req.payload.data = (uint8_t *)body;
    req.payload.len = (size_t)len;
    cr_assert_eq(perfc__test__v1__test_service__collect__write(s, &req), 0);
  }
  Perfc__Test__V1__EchoResponse *resp = NULL;
  perfc_status st = {0};
  cr_assert_eq(perfc__test__v1__test_service__collect__finish(s, &resp, &st),
               PERFC_STATUS_OK, "%s", st.message ? st.message : "");
  cr_assert_eq(resp->remaining_ms, 100);
  cr_assert_eq(resp->payload.len, strlen(want));
  cr_assert_eq(memcmp(resp->payload.data, want, strlen(want)), 0);
  perfc_status_reset(&st);
  perfc_client_stream_free(s);
  cr_assert(wait_for(&ic_after, 1, 5000));
  cr_assert_eq(atomic_load(&ic_recv), 100);
  cr_assert_eq(atomic_load(&ic_code), PERFC_STATUS_OK);
  stop();
}

/* The reader starts once a send met flow control (or after 20 s): a
 * fixed pause was too short under ThreadSanitizer, whose slower writer had
 * not filled the stream yet, and the test then saw no PERFC_EFULL. */
static void wait_for_efull(void) {
  for (int i = 0; i < 2000 && atomic_load(&test_loop_efull) == 0; i++)
    sleep_ms(10);
}

Test(loop_stream, server_stream_flow_control_reaches_the_handler) {
  if (start(1, NULL) != 0)
    return;
  /* 100 messages of 64 KiB (6.4 MiB) to a reader that waits first: the
   * handler's sends answer PERFC_EFULL at the stream's 1 MiB high-water
   * mark and go on from on_writable; nothing is lost or reordered. */
  static uint8_t body[65536];
  memset(body, 'q', sizeof body);
  Perfc__Test__V1__EchoRequest req = PERFC__TEST__V1__ECHO_REQUEST__INIT;
  req.payload.data = body;
  req.payload.len = sizeof body;
  req.response_bytes = 100;
  perfc_call_opts o = call_opts(30000);
  perfc_client_stream *s;
  cr_assert_eq(perfc__test__v1__test_service__expand__open(ch, &req, &o, &s), 0);
  wait_for_efull();
  int n = 0;
  Perfc__Test__V1__EchoResponse *r;
  while (perfc__test__v1__test_service__expand__read(s, &r) == 1) {
    cr_assert_eq(r->payload.len, sizeof body);
    cr_assert_eq(r->payload.data[0], 'q');
    n++;
  }
  cr_assert_eq(n, 100);
  perfc_status st = {0};
  cr_assert_eq(perfc__test__v1__test_service__expand__finish(s, &st), PERFC_STATUS_OK);
  perfc_status_reset(&st);
  perfc_client_stream_free(s);
  cr_assert_gt(atomic_load(&test_loop_efull), 0, "no send met flow control");
  cr_assert(wait_for(&ic_after, 1, 5000));
  cr_assert_eq(atomic_load(&ic_sent), 100);
  cr_assert_eq(atomic_load(&ic_recv), 1);
  stop();
}

typedef struct writer_job {
  perfc_client_stream *s;
  int n, rc;
} writer_job;

static void *write_big(void *arg) {
  writer_job *j = arg;
  static uint8_t body[262144];
  for (int i = 0; i < j->n && j->rc == 0; i++) {
    memset(body, 'a' + i % 26, sizeof body);
    Perfc__Test__V1__EchoRequest req = PERFC__TEST__V1__ECHO_REQUEST__INIT;
    req.payload.data = body;
    req.payload.len = sizeof body;
    j->rc = perfc__test__v1__test_service__chat__write(j->s, &req);
  }
  perfc_client_stream_close_send(j->s);
  return NULL;
}

Test(loop_stream, bidi_refused_message_delivered_again_and_counted_once) {
  if (start(1, NULL) != 0)
    return;
  /* 40 messages of 256 KiB (10 MiB) while the reader waits: the echoes
   * fill the stream, the handler's send answers PERFC_EFULL and it refuses
   * the message; perfc keeps it and delivers it again after the drain.
   * Every echo arrives once, in order; the message hook counts 40. */
  perfc_call_opts o = call_opts(30000);
  writer_job j = {.n = 40};
  cr_assert_eq(perfc__test__v1__test_service__chat__open(ch, &o, &j.s), 0);
  pthread_t w;
  pthread_create(&w, NULL, write_big, &j);
  wait_for_efull();
  int n = 0;
  Perfc__Test__V1__EchoResponse *r;
  while (perfc__test__v1__test_service__chat__read(j.s, &r) == 1) {
    cr_assert_eq(r->payload.len, 262144u);
    cr_assert_eq(r->payload.data[0], 'a' + n % 26, "echo %d out of order", n);
    cr_assert_eq(r->payload.data[262143], 'a' + n % 26);
    n++;
  }
  pthread_join(w, NULL);
  cr_assert_eq(j.rc, 0);
  cr_assert_eq(n, 40);
  perfc_status st = {0};
  cr_assert_eq(perfc__test__v1__test_service__chat__finish(j.s, &st), PERFC_STATUS_OK);
  perfc_status_reset(&st);
  perfc_client_stream_free(j.s);
  cr_assert_gt(atomic_load(&test_loop_efull), 0, "no send met flow control");
  cr_assert(wait_for(&ic_after, 1, 5000));
  cr_assert_eq(atomic_load(&ic_recv), 40, "a redelivered message counted twice");
  cr_assert_eq(atomic_load(&ic_sent), 40);
  stop();
}

Test(loop_stream, client_cancel_calls_on_cancel_once) {
  if (start(0, NULL) != 0)
    return;
  perfc_call_opts o = call_opts(20000);
  perfc_client_stream *s;
  cr_assert_eq(perfc__test__v1__test_service__chat__open(ch, &o, &s), 0);
  Perfc__Test__V1__EchoRequest req = PERFC__TEST__V1__ECHO_REQUEST__INIT;
  req.payload.data = (uint8_t *)"x";
  req.payload.len = 1;
  cr_assert_eq(perfc__test__v1__test_service__chat__write(s, &req), 0);
  Perfc__Test__V1__EchoResponse *r;
  cr_assert_eq(perfc__test__v1__test_service__chat__read(s, &r), 1);
  perfc_client_stream_cancel(s);
  cr_assert(wait_for(&h_cancels, 1, 5000), "on_cancel never ran");
  cr_assert(wait_for(&ic_after, 1, 5000));
  perfc_client_stream_free(s);
  sleep_ms(50);
  cr_assert_eq(atomic_load(&h_cancels), 1);
  cr_assert_eq(atomic_load(&h_finishes), 0);
  cr_assert_eq(atomic_load(&ic_after), 1);
  cr_assert_eq(atomic_load(&ic_code), PERFC_STATUS_CANCELLED);
  cr_assert_eq(atomic_load(&h_off_loop), 0);
  perfc_tracing_stats ts;
  perfc_tracing_stats_get(tracer, &ts);
  cr_assert_eq(ts.spans_ended, 1, "the cancelled stream's span ended once");
  /* The loop still serves. */
  Perfc__Test__V1__EchoResponse *er = NULL;
  perfc_status st = {0};
  cr_assert_eq(perfc__test__v1__test_service__echo__call(ch, &req, &er, NULL, &st),
               PERFC_STATUS_OK);
  protobuf_c_message_free_unpacked(&er->base, NULL);
  perfc_status_reset(&st);
  stop();
}

/* A stream that never ends on its own, ended by a deadline: the client's
 * (`client_ms`) or one the server sets in an interceptor (`server_ms`). */
static void deadline_case(int64_t client_ms, int server_ms) {
  if (start(0, NULL) != 0)
    return;
  atomic_store(&ic_lower_ms, server_ms);
  perfc_call_opts o = call_opts(client_ms);
  perfc_client_stream *s;
  int64_t t0 = now_ms();
  cr_assert_eq(perfc__test__v1__test_service__chat__open(ch, &o, &s), 0);
  Perfc__Test__V1__EchoRequest req = PERFC__TEST__V1__ECHO_REQUEST__INIT;
  req.payload.data = (uint8_t *)"x";
  req.payload.len = 1;
  cr_assert_eq(perfc__test__v1__test_service__chat__write(s, &req), 0);
  Perfc__Test__V1__EchoResponse *r;
  cr_assert_eq(perfc__test__v1__test_service__chat__read(s, &r), 1);
  /* The status came instead of an echo: 0 (the server ended) or an error. */
  cr_assert_leq(perfc__test__v1__test_service__chat__read(s, &r), 0);
  perfc_status st = {0};
  cr_assert_eq(perfc__test__v1__test_service__chat__finish(s, &st),
               PERFC_STATUS_DEADLINE_EXCEEDED, "%s", st.message ? st.message : "");
  int64_t took = now_ms() - t0;
  perfc_status_reset(&st);
  perfc_client_stream_free(s);
  /* Ended by the deadline, not by the 20 s one or a hang. */
  cr_assert_lt(took, 10000);
  cr_assert(wait_for(&h_cancels, 1, 5000), "on_cancel never ran");
  cr_assert(wait_for(&ic_after, 1, 5000));
  cr_assert_eq(atomic_load(&h_cancels), 1);
  cr_assert_eq(atomic_load(&h_finishes), 0);
  int code = atomic_load(&ic_code);
  if (server_ms > 0)
    cr_assert_eq(code, PERFC_STATUS_DEADLINE_EXCEEDED, "%d", code);
  else
    /* The client resets the stream at its deadline; the reset may arrive
     * a moment before the server's copy of that deadline (grpc-timeout
     * counts from when the headers arrived) passes: CANCELLED then, as
     * grpc-go's server says for a client's cancel. */
    cr_assert(code == PERFC_STATUS_DEADLINE_EXCEEDED ||
                  code == PERFC_STATUS_CANCELLED,
              "%d", code);
  stop();
}

/* 1 s: room for the first echo under a sanitizer or valgrind. */
Test(loop_stream, client_deadline_ends_the_stream) { deadline_case(1000, 0); }

Test(loop_stream, server_lowered_deadline_ends_the_stream) {
  deadline_case(20000, 1000);
}

static void *shutdown_main(void *arg) {
  perfc_server_shutdown(arg, 300);
  return NULL;
}

Test(loop_stream, shutdown_grace_end_cancels_with_cancelled) {
  if (start(0, NULL) != 0)
    return;
  perfc_call_opts o = call_opts(20000);
  perfc_client_stream *s;
  cr_assert_eq(perfc__test__v1__test_service__chat__open(ch, &o, &s), 0);
  Perfc__Test__V1__EchoRequest req = PERFC__TEST__V1__ECHO_REQUEST__INIT;
  req.payload.data = (uint8_t *)"x";
  req.payload.len = 1;
  cr_assert_eq(perfc__test__v1__test_service__chat__write(s, &req), 0);
  Perfc__Test__V1__EchoResponse *r;
  cr_assert_eq(perfc__test__v1__test_service__chat__read(s, &r), 1);
  pthread_t t;
  pthread_create(&t, NULL, shutdown_main, srv);
  perfc_status st = {0};
  /* The grace ends, the stream is cancelled on its loop and its status
   * still goes out: CANCELLED, not a lost connection (UNAVAILABLE). The
   * read waits for it (finish would half-close, which ends the stream). */
  cr_assert_leq(perfc__test__v1__test_service__chat__read(s, &r), 0);
  perfc_status_code code = perfc__test__v1__test_service__chat__finish(s, &st);
  cr_assert_eq(code, PERFC_STATUS_CANCELLED, "%s: %s", perfc_status_name(code),
               st.message ? st.message : "");
  cr_assert(st.message != NULL && strstr(st.message, "grace") != NULL, "%s",
            st.message ? st.message : "");
  perfc_status_reset(&st);
  pthread_join(t, NULL);
  perfc_client_stream_free(s);
  cr_assert_eq(atomic_load(&h_cancels), 1);
  cr_assert_eq(atomic_load(&ic_after), 1);
  cr_assert_eq(atomic_load(&ic_code), PERFC_STATUS_CANCELLED);
  stop();
}

Test(loop_stream, registration_errors) {
  perfc_server *s;
  cr_assert_eq(test_server_new(&s, NULL), 0);
  cr_assert_eq(perfc_server_listen(s, "127.0.0.1:0", NULL), 0);
  cr_assert_eq(perfc__test__v1__test_service__perfc_register(
                   s, &test_service_handlers, NULL),
               0);
  perfc_stream_callbacks none = {0};
  cr_assert_eq(perfc_server_set_stream_callbacks(s, SVC "Chat", &none, NULL),
               PERFC_EINVAL, "on_start is required");
  cr_assert_eq(perfc_server_set_stream_callbacks(s, SVC "Echo", &chat_cb, NULL),
               PERFC_EINVAL, "unary methods are refused");
  cr_assert(strstr(perfc_last_error(), "unary") != NULL);
  cr_assert_eq(perfc_server_set_stream_callbacks(s, SVC "Nope", &chat_cb, NULL),
               PERFC_ENOENT);
  int by_name = perfc_server_set_stream_callbacks(s, "Chat", &chat_cb, NULL);
  cr_assert_eq(by_name, test_transport_is_h2() ? 0 : PERFC_ESTATE);
  cr_assert_eq(perfc_server_start(s), 0);
  cr_assert_eq(perfc_server_set_stream_callbacks(s, SVC "Chat", &chat_cb, NULL),
               PERFC_ESTATE, "after start");
  perfc_server_free(s);
}
