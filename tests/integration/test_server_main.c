/* test_server_main.c — perfc-test-server: TestService, grpc.health.v1.Health
 * and server reflection on --listen, for the python3-grpcio tests. Prints
 * "listening on 127.0.0.1:PORT".
 *
 * Health starts with "" and perfc.test.v1.TestService SERVING. Calling
 * Fail with code 0 and message "health:NAME=STATUS" (STATUS SERVING,
 * NOT_SERVING or CLEAR) changes a status instead, so tests can drive Watch
 * from outside the process. */
#include "test_service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Fail, extended: "health:NAME=STATUS" sets a health status (see above). */
static perfc_status_code fail_or_set_health(
    perfc_ctx *ctx, const Perfc__Test__V1__EchoRequest *req,
    Perfc__Test__V1__EchoResponse *resp, void *user_data) {
  perfc_health *health = user_data;
  const char *m = req->message;
  if (req->code != 0 || strncmp(m, "health:", 7) != 0)
    return test_service_handlers.fail(ctx, req, resp, NULL);
  const char *eq = strrchr(m, '=');
  if (eq == NULL)
    return perfc_ctx_error(ctx, PERFC_STATUS_INVALID_ARGUMENT, "want health:NAME=STATUS");
  char *name = perfc_arena_strndup(perfc_ctx_arena(ctx), m + 7, (size_t)(eq - m - 7));
  int rc;
  if (strcmp(eq + 1, "CLEAR") == 0)
    rc = perfc_health_clear(health, name);
  else
    rc = perfc_health_set(health, name,
                          strcmp(eq + 1, "SERVING") == 0 ? PERFC_HEALTH_SERVING
                                                        : PERFC_HEALTH_NOT_SERVING);
  if (rc != 0)
    return perfc_ctx_error(ctx, PERFC_STATUS_FAILED_PRECONDITION, "%s", perfc_strerror(rc));
  return PERFC_STATUS_OK;
}

int main(int argc, char **argv) {
  Perfc__Test__V1__TestService_Handlers handlers = test_service_handlers;
  handlers.fail = fail_or_set_health;
  const char *listen = "127.0.0.1:0";
  perfc_server_opts o;
  perfc_server_opts_init(&o);
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc)
      listen = argv[++i];
    else if (strcmp(argv[i], "--max-recv-bytes") == 0 && i + 1 < argc)
      o.max_recv_message_bytes = atoi(argv[++i]);
    else if (strcmp(argv[i], "--pool-threads") == 0 && i + 1 < argc)
      o.pool_threads = (unsigned)atoi(argv[++i]);
    else if (strcmp(argv[i], "--pool-queue") == 0 && i + 1 < argc)
      o.pool_queue = (unsigned)atoi(argv[++i]);
    else {
      fprintf(stderr,
              "usage: %s [--listen HOST:PORT] [--max-recv-bytes N] "
              "[--pool-threads N] [--pool-queue N]\n",
              argv[0]);
      return 2;
    }
  }
  perfc_server *srv = NULL;
  perfc_health *health = NULL;
  int port = 0;
  int rc = perfc_health_new(&health, NULL);
  if (rc == 0)
    rc = perfc_health_set(health, "perfc.test.v1.TestService",
                          PERFC_HEALTH_SERVING);
  if (rc == 0)
    rc = perfc_server_new(&srv, &o);
  if (rc == 0)
    rc = perfc_server_listen(srv, listen, &port);
  if (rc == 0)
    rc = perfc__test__v1__test_service__perfc_register(
        srv, &handlers, health);
  if (rc == 0)
    rc = perfc_health_register(health, srv);
  if (rc == 0)
    rc = perfc_reflection_register(srv);
  if (rc == 0)
    rc = perfc_server_start(srv);
  if (rc != 0) {
    fprintf(stderr, "perfc-test-server: %s\n", perfc_strerror(rc));
    perfc_server_free(srv);
    perfc_health_free(health);
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
  perfc_health_free(health);
  return 0;
}
