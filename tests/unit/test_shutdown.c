/* test_shutdown.c — a server's shutdown while a call is still inside its
 * handler on the transport's own thread (an INLINE handler: on the C core
 * a poller, on h2 a loop), past the shutdown grace. The grace's end
 * cancels the call, but the handler has not returned: when it does, its
 * answer must go out (or be dropped) without a crash, and the shutdown
 * must wait for it. On the C core with two pollers the transport once
 * shut the completion queues down as soon as the core reported its
 * shutdown done, which poller 0 can learn while poller 1 is still in such
 * a handler; that handler's answer then hit the core's assertion
 * (grpc_call_start_batch on a shut-down queue: the process aborted). So
 * the handler on poller 0 returns quickly and the one on poller 1 late.
 * Both transports (unit.test_shutdown and .core). */
#include <google/protobuf/empty.pb-c.h>
#include "test_transport.h"
#include <perfc.h>

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static atomic_int entered, returned, on_cq0, on_cq1;

static void ms_sleep(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Holds its thread past the grace: the C core's poller 1 for a second,
 * any other thread (poller 0, an h2 loop) for 50 ms. */
static perfc_status_code slow_invoke(perfc_ctx *ctx, const void *h, void *ud,
                                     const ProtobufCMessage *req,
                                     ProtobufCMessage *resp, perfc_stream *s) {
  (void)ctx, (void)h, (void)ud, (void)req, (void)resp, (void)s;
  char name[16] = "";
  pthread_getname_np(pthread_self(), name, sizeof name);
  int late = strcmp(name, "perfc-cq1") == 0;
  atomic_fetch_add(late ? &on_cq1 : &on_cq0, 1);
  atomic_fetch_add(&entered, 1);
  ms_sleep(late ? 1000 : 50);
  atomic_fetch_add(&returned, 1);
  return PERFC_STATUS_OK;
}

#define MSG &google__protobuf__empty__descriptor
static const perfc_method_desc methods[] = {
    {.name = "Slow", .path = "/t.v1.S/Slow", .kind = PERFC_METHOD_UNARY,
     .input = MSG, .output = MSG, .invoke = slow_invoke,
     .executor = PERFC_EXEC_INLINE},
};
static const perfc_service_desc svc = {
    .name = "t.v1.S", .n_methods = 1, .methods = methods};
static const struct {
  void *slow;
} impl = {(void *)1};

typedef struct bg_call {
  pthread_t t;
  perfc_channel *ch;
  perfc_status_code code;
} bg_call;


static void *bg_main(void *arg) {
  bg_call *b = arg;
  perfc_call_opts o = {.wait_for_ready = 1, .timeout_ms = 10000};
  Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
  ProtobufCMessage *resp = NULL;
  perfc_status st = {0};
  b->code = perfc_channel_unary(b->ch, &methods[0], &req.base, &resp, &o, &st);
  perfc_status_reset(&st);
  if (resp != NULL)
    protobuf_c_message_free_unpacked(resp, NULL);
  return NULL;
}

#define NCALLS 12

Test(shutdown, inline_handler_past_the_grace_is_waited_for_not_aborted) {
  atomic_store(&entered, 0);
  atomic_store(&returned, 0);
  atomic_store(&on_cq0, 0);
  atomic_store(&on_cq1, 0);
  perfc_server_opts o;
  perfc_server_opts_init(&o);
  o.threads = 2;
  perfc_server *srv;
  int port;
  cr_assert_eq(test_server_new(&srv, &o), 0);
  cr_assert_eq(perfc_server_listen(srv, "127.0.0.1:0", &port), 0);
  cr_assert_eq(perfc_server_add_service(srv, &svc, &impl, NULL), 0);
  cr_assert_eq(perfc_server_start(srv), 0);
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  /* Several connections: the C core binds each accepted connection to
   * one poller's queue, and a call is matched there first. */
  perfc_channel_opts co;
  perfc_channel_opts_init(&co);
  co.connections = 4;
  perfc_channel *ch;
  cr_assert_eq(perfc_channel_new(&ch, target, &co), 0);
  /* Calls one after another (round robin over the connections) until
   * poller 1 holds one (the C core); on h2 one call held is the case. */
  bg_call b[NCALLS];
  int n = 0;
  int h2 = test_transport_is_h2();
  while (n < NCALLS && (h2 ? atomic_load(&entered) == 0
                           : atomic_load(&on_cq1) == 0)) {
    b[n].ch = ch;
    cr_assert_eq(pthread_create(&b[n].t, NULL, bg_main, &b[n]), 0);
    n++;
    for (int i = 0; i < 300 && atomic_load(&entered) < n; i++)
      ms_sleep(1);
  }
  cr_assert(h2 ? atomic_load(&entered) > 0 : atomic_load(&on_cq1) > 0,
            "no call reached %s in %d calls", h2 ? "a handler" : "poller 1",
            n);
  /* A 20 ms grace: over while poller 1's handler has most of its second
   * to go; poller 0 is free again well before. */
  int64_t t0 = now_ms();
  perfc_server_shutdown(srv, 20);
  int64_t took = now_ms() - t0;
  cr_assert_eq(atomic_load(&returned), atomic_load(&entered),
               "the shutdown returned before the handlers did");
  cr_assert_lt(took, 5000, "the shutdown took %lld ms", (long long)took);
  perfc_server_free(srv);
  for (int i = 0; i < n; i++) {
    pthread_join(b[i].t, NULL);
    /* The handler's OK, or the cancel at the grace's end, or the closed
     * connection: never anything else, never a hang. */
    cr_assert(b[i].code == PERFC_STATUS_OK ||
                  b[i].code == PERFC_STATUS_CANCELLED ||
                  b[i].code == PERFC_STATUS_UNAVAILABLE,
              "call %d ended %s", i, perfc_status_name(b[i].code));
  }
  perfc_channel_free(ch);
}
