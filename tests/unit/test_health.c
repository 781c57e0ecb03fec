/* test_health.c — runtime/src/observe/health.c: the status table, and
 * grpc.health.v1.Health served by a real server on 127.0.0.1:0, called with
 * perfc's client (Check) and a C-core streaming client (Watch). */
#include <criterion/criterion.h>
#include "test_transport.h" /* test_server_new: both transports */
#include <perfc/client.h>
#include <perfc/health.h>
#include <perfc/server.h>
#include <pthread.h>
#include <time.h>

#include "grpc/health/v1/health.perfc.h"
#include "stream_client.h"

#define WATCH_PATH "/grpc.health.v1.Health/Watch"

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A server serving only `h`: no method asks for the pool, its only
 * streaming method is Watch. Such a server once got no worker pool and
 * answered every Watch RESOURCE_EXHAUSTED; the watch tests below are the
 * regression test. */
static perfc_server *serve(perfc_health *h, unsigned pool_threads, int *port) {
  perfc_server_opts o = {.threads = 2, .pool_threads = pool_threads};
  perfc_server *srv;
  cr_assert_eq(test_server_new(&srv, &o), 0);
  cr_assert_eq(perfc_server_listen(srv, "127.0.0.1:0", port), 0);
  cr_assert_eq(perfc_health_register(h, srv), 0);
  cr_assert_eq(perfc_server_start(srv), 0);
  return srv;
}

static perfc_status_code check(perfc_channel *ch, const char *service,
                               int *status) {
  Grpc__Health__V1__HealthCheckRequest req =
      GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  req.service = (char *)service;
  Grpc__Health__V1__HealthCheckResponse *resp = NULL;
  perfc_status st = {0};
  perfc_call_opts opts = {.timeout_ms = 5000};
  perfc_status_code code =
      grpc__health__v1__health__check__call(ch, &req, &resp, &opts, &st);
  *status = resp != NULL ? (int)resp->status : -1;
  if (resp != NULL)
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  perfc_status_reset(&st);
  return code;
}

static void watch_open(sc_call *c, grpc_channel *ch, const char *service) {
  Grpc__Health__V1__HealthCheckRequest req =
      GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  req.service = (char *)service;
  cr_assert_eq(sc_open(c, ch, WATCH_PATH, 20000), 0);
  cr_assert_eq(sc_send(c, &req.base, 1), 0);
}

/* The next status a Watch sends, or -1 when the stream ended. */
static int watch_next(sc_call *c) {
  ProtobufCMessage *m = NULL;
  if (sc_recv(c, &grpc__health__v1__health_check_response__descriptor, &m) != 1)
    return -1;
  int st = (int)((Grpc__Health__V1__HealthCheckResponse *)m)->status;
  protobuf_c_message_free_unpacked(m, NULL);
  return st;
}

Test(health, table) {
  perfc_health_opts o;
  perfc_health_opts_init(&o);
  cr_assert_eq(o.watch_poll_ms, PERFC_DEFAULT_HEALTH_WATCH_POLL_MS);
  perfc_health *h;
  cr_assert_eq(perfc_health_new(NULL, NULL), PERFC_EINVAL);
  perfc_health_opts bad = {.watch_poll_ms = -1};
  cr_assert_eq(perfc_health_new(&h, &bad), PERFC_EINVAL);
  cr_assert_eq(perfc_health_new(&h, NULL), 0);

  cr_assert_eq(perfc_health_get(h, ""), PERFC_HEALTH_SERVING,
               "server starts SERVING");
  cr_assert_eq(perfc_health_get(h, NULL), PERFC_HEALTH_SERVING);
  cr_assert_eq(perfc_health_get(h, "a.B"), PERFC_HEALTH_SERVICE_UNKNOWN);
  cr_assert_eq(perfc_health_set(h, "a.B", PERFC_HEALTH_NOT_SERVING), 0);
  cr_assert_eq(perfc_health_get(h, "a.B"), PERFC_HEALTH_NOT_SERVING);
  cr_assert_eq(perfc_health_set(h, "a.B", PERFC_HEALTH_SERVING), 0);
  cr_assert_eq(perfc_health_get(h, "a.B"), PERFC_HEALTH_SERVING);
  cr_assert_eq(perfc_health_set(h, "a.B", PERFC_HEALTH_SERVICE_UNKNOWN),
               PERFC_EINVAL, "SERVICE_UNKNOWN is Watch's, not a state to set");
  cr_assert_eq(perfc_health_set(h, NULL, PERFC_HEALTH_SERVING), PERFC_EINVAL);
  cr_assert_eq(perfc_health_set(NULL, "", PERFC_HEALTH_SERVING), PERFC_EINVAL);
  /* Many names: the table grows. */
  for (int i = 0; i < 40; i++) {
    char name[32];
    snprintf(name, sizeof name, "svc.N%d", i);
    cr_assert_eq(perfc_health_set(h, name, PERFC_HEALTH_NOT_SERVING), 0);
  }
  cr_assert_eq(perfc_health_get(h, "svc.N39"), PERFC_HEALTH_NOT_SERVING);
  cr_assert_eq(perfc_health_clear(h, "svc.N0"), 0);
  cr_assert_eq(perfc_health_clear(h, "svc.N0"), PERFC_ENOENT);
  cr_assert_eq(perfc_health_get(h, "svc.N0"), PERFC_HEALTH_SERVICE_UNKNOWN);
  cr_assert_eq(perfc_health_get(h, "svc.N39"), PERFC_HEALTH_NOT_SERVING);

  perfc_health_shutdown(h);
  perfc_health_shutdown(h);
  cr_assert_eq(perfc_health_get(h, "a.B"), PERFC_HEALTH_NOT_SERVING);
  cr_assert_eq(perfc_health_get(h, "never.Set"), PERFC_HEALTH_NOT_SERVING);
  cr_assert_eq(perfc_health_set(h, "a.B", PERFC_HEALTH_SERVING),
               PERFC_ESHUTDOWN);
  cr_assert_eq(perfc_health_get(h, "a.B"), PERFC_HEALTH_NOT_SERVING);

  cr_assert_str_eq(perfc_health_status_name(PERFC_HEALTH_SERVING), "SERVING");
  cr_assert_str_eq(perfc_health_status_name(PERFC_HEALTH_SERVICE_UNKNOWN),
                   "SERVICE_UNKNOWN");
  cr_assert_str_eq(perfc_health_status_name((perfc_health_status)9), "INVALID");
  perfc_health_free(h);
  perfc_health_free(NULL);
  cr_assert_eq(perfc_health_register(NULL, NULL), PERFC_EINVAL);
}

Test(health, check_over_the_wire) {
  perfc_health *h;
  cr_assert_eq(perfc_health_new(&h, NULL), 0);
  int port;
  perfc_server *srv = serve(h, 0, &port);
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  perfc_channel *ch;
  cr_assert_eq(perfc_channel_new(&ch, target, NULL), 0);

  int st;
  cr_assert_eq(check(ch, "", &st), PERFC_STATUS_OK);
  cr_assert_eq(st, PERFC_HEALTH_SERVING);
  cr_assert_eq(check(ch, "app.v1.Users", &st), PERFC_STATUS_NOT_FOUND);
  cr_assert_eq(perfc_health_set(h, "app.v1.Users", PERFC_HEALTH_NOT_SERVING),
               0);
  cr_assert_eq(check(ch, "app.v1.Users", &st), PERFC_STATUS_OK);
  cr_assert_eq(st, PERFC_HEALTH_NOT_SERVING);
  cr_assert_eq(perfc_health_set(h, "", PERFC_HEALTH_NOT_SERVING), 0);
  cr_assert_eq(check(ch, "", &st), PERFC_STATUS_OK);
  cr_assert_eq(st, PERFC_HEALTH_NOT_SERVING);

  perfc_channel_free(ch);
  perfc_server_free(srv);
  perfc_health_free(h);
}

Test(health, watch_sends_current_then_changes) {
  perfc_health_opts o = {.watch_poll_ms = 50};
  perfc_health *h;
  cr_assert_eq(perfc_health_new(&h, &o), 0);
  cr_assert_eq(perfc_health_set(h, "app.v1.Users", PERFC_HEALTH_SERVING), 0);
  int port;
  perfc_server *srv = serve(h, 4, &port);
  grpc_init();
  grpc_channel *ch = sc_channel(port);

  sc_call w;
  watch_open(&w, ch, "app.v1.Users");
  cr_assert_eq(watch_next(&w), PERFC_HEALTH_SERVING, "current status at once");
  cr_assert_eq(perfc_health_set(h, "app.v1.Users", PERFC_HEALTH_NOT_SERVING),
               0);
  cr_assert_eq(watch_next(&w), PERFC_HEALTH_NOT_SERVING);
  cr_assert_eq(perfc_health_set(h, "app.v1.Users", PERFC_HEALTH_SERVING), 0);
  cr_assert_eq(watch_next(&w), PERFC_HEALTH_SERVING);

  /* An unknown name: SERVICE_UNKNOWN, and the call stays open until the
   * name becomes known. */
  sc_call u;
  watch_open(&u, ch, "later.v1.Svc");
  cr_assert_eq(watch_next(&u), PERFC_HEALTH_SERVICE_UNKNOWN);
  cr_assert_eq(perfc_health_set(h, "later.v1.Svc", PERFC_HEALTH_SERVING), 0);
  cr_assert_eq(watch_next(&u), PERFC_HEALTH_SERVING);
  cr_assert_eq(perfc_health_clear(h, "later.v1.Svc"), 0);
  cr_assert_eq(watch_next(&u), PERFC_HEALTH_SERVICE_UNKNOWN);

  sc_cancel(&w);
  cr_assert_eq(sc_finish(&w, NULL, 0), GRPC_STATUS_CANCELLED);
  sc_cancel(&u);
  cr_assert_eq(sc_finish(&u, NULL, 0), GRPC_STATUS_CANCELLED);
  sc_free(&w);
  sc_free(&u);
  grpc_channel_destroy(ch);
  perfc_server_free(srv);
  perfc_health_free(h);
  grpc_shutdown();
}

/* A watcher whose client left gives its worker back within the poll
 * period although no status changes: with one worker, a second Watch is
 * answered only if the first one's handler returned. */
Test(health, cancelled_watch_frees_its_worker) {
  perfc_health_opts o = {.watch_poll_ms = 50};
  perfc_health *h;
  cr_assert_eq(perfc_health_new(&h, &o), 0);
  int port;
  perfc_server *srv = serve(h, 1, &port);
  grpc_init();
  grpc_channel *ch = sc_channel(port);

  for (int round = 0; round < 3; round++) {
    sc_call w;
    watch_open(&w, ch, "");
    cr_assert_eq(watch_next(&w), PERFC_HEALTH_SERVING, "round %d", round);
    sc_cancel(&w);
    cr_assert_eq(sc_finish(&w, NULL, 0), GRPC_STATUS_CANCELLED);
    sc_free(&w);
  }
  grpc_channel_destroy(ch);
  perfc_server_free(srv);
  perfc_health_free(h);
  grpc_shutdown();
}

typedef struct shutdown_arg {
  perfc_server *srv;
  int64_t took_ms;
} shutdown_arg;

static void *do_shutdown(void *arg) {
  shutdown_arg *a = arg;
  int64_t t0 = now_ms();
  perfc_server_shutdown(a->srv, 10000);
  a->took_ms = now_ms() - t0;
  return NULL;
}

Test(health, shutdown_reports_not_serving_and_ends_watches) {
  perfc_health *h;
  cr_assert_eq(perfc_health_new(&h, NULL), 0);
  cr_assert_eq(perfc_health_set(h, "app.v1.Users", PERFC_HEALTH_SERVING), 0);
  int port;
  perfc_server *srv = serve(h, 4, &port);
  grpc_init();
  grpc_channel *ch = sc_channel(port);

  sc_call a, b;
  watch_open(&a, ch, "");
  watch_open(&b, ch, "app.v1.Users");
  cr_assert_eq(watch_next(&a), PERFC_HEALTH_SERVING);
  cr_assert_eq(watch_next(&b), PERFC_HEALTH_SERVING);

  shutdown_arg sa = {.srv = srv};
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, do_shutdown, &sa), 0);
  cr_assert_eq(watch_next(&a), PERFC_HEALTH_NOT_SERVING);
  cr_assert_eq(watch_next(&b), PERFC_HEALTH_NOT_SERVING);
  cr_assert_eq(watch_next(&a), -1, "the stream ends after NOT_SERVING");
  char msg[128];
  cr_assert_eq(sc_finish(&a, msg, sizeof msg), GRPC_STATUS_UNAVAILABLE);
  cr_assert_str_eq(msg, "server is shutting down");
  cr_assert_eq(sc_finish(&b, NULL, 0), GRPC_STATUS_UNAVAILABLE);
  pthread_join(t, NULL);
  /* The watches ended by themselves: no wait for the 10 s grace. */
  cr_assert_lt(sa.took_ms, 5000, "shutdown took %lld ms",
               (long long)sa.took_ms);
  cr_assert_eq(perfc_health_get(h, "app.v1.Users"), PERFC_HEALTH_NOT_SERVING);
  cr_assert_eq(perfc_health_set(h, "", PERFC_HEALTH_SERVING), PERFC_ESHUTDOWN);

  sc_free(&a);
  sc_free(&b);
  grpc_channel_destroy(ch);
  perfc_server_free(srv);
  perfc_health_free(h);
  grpc_shutdown();
}
