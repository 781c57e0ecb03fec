/* test_server_main.c — perfc-test-server: TestService, grpc.health.v1.Health
 * and server reflection on --listen, for the python3-grpcio tests and the
 * multi-replica client tests. Prints "listening on HOST:PORT".
 *
 * With --tls-cert/--tls-key the port is TLS (and mTLS with --tls-client-ca
 * and --tls-client-auth request|require). Echo("whoami") answers
 * "server-PORT", so clients can tell replicas apart. Health starts with ""
 * and perfc.test.v1.TestService SERVING; calling Fail with code 0 and
 * message "health:NAME=STATUS" (STATUS SERVING, NOT_SERVING or CLEAR)
 * changes a status instead, so tests can drive Watch from outside. */
#include "test_service.h"

#include "perfc/gateway.h"
#include "perfc/health.h"
#include "perfc/reflection.h"
#include "perfc/tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The handlers' user_data carries the replica name, so Fail reaches the
 * health object through this file-level pointer instead. */
static perfc_health *g_health;

/* Fail, extended: "health:NAME=STATUS" sets a health status (see above). */
static perfc_status_code fail_or_set_health(
    perfc_ctx *ctx, const Perfc__Test__V1__EchoRequest *req,
    Perfc__Test__V1__EchoResponse *resp, void *user_data) {
  const char *m = req->message;
  if (req->code != 0 || strncmp(m, "health:", 7) != 0)
    return test_service_handlers.fail(ctx, req, resp, user_data);
  const char *eq = strrchr(m, '=');
  if (eq == NULL)
    return perfc_ctx_error(ctx, PERFC_STATUS_INVALID_ARGUMENT,
                           "want health:NAME=STATUS");
  char *name = perfc_arena_strndup(perfc_ctx_arena(ctx), m + 7,
                                   (size_t)(eq - m - 7));
  int rc;
  if (strcmp(eq + 1, "CLEAR") == 0)
    rc = perfc_health_clear(g_health, name);
  else
    rc = perfc_health_set(g_health, name,
                          strcmp(eq + 1, "SERVING") == 0
                              ? PERFC_HEALTH_SERVING
                              : PERFC_HEALTH_NOT_SERVING);
  if (rc != 0)
    return perfc_ctx_error(ctx, PERFC_STATUS_FAILED_PRECONDITION, "%s",
                           perfc_strerror(rc));
  return PERFC_STATUS_OK;
}

int main(int argc, char **argv) {
  /* First, as generated mains do: a SIGTERM any time before the run (the
   * tests send one as soon as "listening on" is read) ends the server
   * gracefully with exit 0 (docs/design.md, "Signals"). */
  if (perfc_server_hold_signals() != 0) {
    fprintf(stderr, "perfc-test-server: %s\n", perfc_last_error());
    return 1;
  }
  Perfc__Test__V1__TestService_Handlers handlers = test_service_handlers;
  handlers.fail = fail_or_set_health;
  const char *listen = "127.0.0.1:0";
  perfc_server_opts o;
  perfc_server_opts_init(&o);
  /* PERFC_TEST_TRANSPORT first; --transport overrides it. */
  test_transport_apply(&o);
  perfc_tls_opts tls;
  perfc_tls_opts_init(&tls);
  int http = 0;
  int loop_streams = 0; /* --loop-streams 1: the streams as loop callbacks */
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--transport") == 0 && i + 1 < argc) {
      const char *t = argv[++i];
      if (strcmp(t, "h2") != 0 && strcmp(t, "core") != 0) {
        fprintf(stderr, "--transport %s: expected h2 or core\n", t);
        return 2;
      }
      o.transport = strcmp(t, "h2") == 0 ? PERFC_TRANSPORT_H2 : PERFC_TRANSPORT_CORE;
    } else if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc)
      listen = argv[++i];
    else if (strcmp(argv[i], "--max-recv-bytes") == 0 && i + 1 < argc)
      o.max_recv_message_bytes = atoi(argv[++i]);
    else if (strcmp(argv[i], "--pool-threads") == 0 && i + 1 < argc)
      o.pool_threads = (unsigned)atoi(argv[++i]);
    else if (strcmp(argv[i], "--pool-queue") == 0 && i + 1 < argc)
      o.pool_queue = (unsigned)atoi(argv[++i]);
    else if (strcmp(argv[i], "--memory-budget") == 0 && i + 1 < argc)
      o.memory_budget_bytes = (size_t)strtoull(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--max-metadata-bytes") == 0 && i + 1 < argc)
      o.max_metadata_bytes = (size_t)strtoull(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--loop-streams") == 0 && i + 1 < argc)
      loop_streams = atoi(argv[++i]);
    else if (strcmp(argv[i], "--shutdown-grace-ms") == 0 && i + 1 < argc)
      o.shutdown_grace_ms = atoll(argv[++i]);
    else if (strcmp(argv[i], "--http") == 0)
      http = 1; /* HTTP/JSON on the same port (perfc_gateway_attach) */
    else if (strcmp(argv[i], "--compression") == 0 && i + 1 < argc)
      o.compression = argv[++i];
    else if (strcmp(argv[i], "--tls-cert") == 0 && i + 1 < argc)
      tls.cert_file = argv[++i];
    else if (strcmp(argv[i], "--tls-key") == 0 && i + 1 < argc)
      tls.key_file = argv[++i];
    else if (strcmp(argv[i], "--tls-client-ca") == 0 && i + 1 < argc)
      tls.client_ca_file = argv[++i];
    else if (strcmp(argv[i], "--tls-client-auth") == 0 && i + 1 < argc) {
      const char *m = argv[++i];
      tls.client_auth =
          strcmp(m, "require") == 0   ? PERFC_TLS_CLIENT_AUTH_REQUIRE
          : strcmp(m, "request") == 0 ? PERFC_TLS_CLIENT_AUTH_REQUEST
                                      : PERFC_TLS_CLIENT_AUTH_NONE;
    } else {
      fprintf(stderr,
              "usage: %s [--listen HOST:PORT] [--transport core|h2] [--max-recv-bytes N] "
              "[--pool-threads N] [--pool-queue N] [--compression ALG] "
              "[--memory-budget BYTES] [--max-metadata-bytes BYTES] "
              "[--shutdown-grace-ms MS] [--http] [--loop-streams 0|1] "
              "[--tls-cert F --tls-key F [--tls-client-ca F] "
              "[--tls-client-auth none|request|require]]\n",
              argv[0]);
      return 2;
    }
  }
  perfc_server *srv = NULL;
  int port = 0;
  int rc = perfc_health_new(&g_health, NULL);
  if (rc == 0)
    rc = perfc_health_set(g_health, "perfc.test.v1.TestService",
                          PERFC_HEALTH_SERVING);
  if (rc == 0)
    rc = perfc_server_new(&srv, &o);
  if (rc == 0)
    rc = tls.cert_file != NULL
             ? perfc_server_listen_tls(srv, listen, &tls, &port)
             : perfc_server_listen(srv, listen, &port);
  static char name[32];
  snprintf(name, sizeof name, "server-%d", port);
  if (rc == 0)
    rc = perfc__test__v1__test_service__perfc_register(srv, &handlers, name);
  if (rc == 0 && loop_streams && (rc = test_service_loop_streams(srv)) != 0)
    fprintf(stderr, "perfc-test-server: --loop-streams: %s\n",
            perfc_last_error());
  if (rc == 0)
    rc = perfc_health_register(g_health, srv);
  if (rc == 0)
    rc = perfc_reflection_register(srv);
  if (rc == 0 && http)
    rc = perfc_gateway_attach(NULL, srv);
  if (rc == 0)
    rc = perfc_server_start(srv);
  if (rc != 0) {
    fprintf(stderr, "perfc-test-server: %s%s%s\n", perfc_strerror(rc),
            rc == PERFC_ETLS ? ": " : "",
            rc == PERFC_ETLS ? perfc_tls_last_error() : "");
    perfc_server_free(srv);
    perfc_health_free(g_health);
    return 1;
  }
  char host[256];
  snprintf(host, sizeof host, "%s", listen);
  char *colon = strrchr(host, ':');
  if (colon != NULL)
    *colon = '\0';
  printf("listening on %s:%d\n", host, port);
  fflush(stdout);
  perfc_server_run(srv);
  perfc_server_free(srv);
  perfc_health_free(g_health); /* after the server, which uses it until freed */
  return 0;
}
