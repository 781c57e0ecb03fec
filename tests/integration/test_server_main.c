/* test_server_main.c — perfc-test-server: TestService on --listen, for the
 * python3-grpcio tests. Prints "listening on 127.0.0.1:PORT". With
 * --tls-cert/--tls-key the port is TLS (and mTLS with --tls-client-ca and
 * --tls-client-auth request|require). */
#include "test_service.h"

#include "perfc/tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
  const char *listen = "127.0.0.1:0";
  perfc_server_opts o;
  perfc_server_opts_init(&o);
  perfc_tls_opts tls;
  perfc_tls_opts_init(&tls);
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc)
      listen = argv[++i];
    else if (strcmp(argv[i], "--max-recv-bytes") == 0 && i + 1 < argc)
      o.max_recv_message_bytes = atoi(argv[++i]);
    else if (strcmp(argv[i], "--pool-threads") == 0 && i + 1 < argc)
      o.pool_threads = (unsigned)atoi(argv[++i]);
    else if (strcmp(argv[i], "--pool-queue") == 0 && i + 1 < argc)
      o.pool_queue = (unsigned)atoi(argv[++i]);
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
              "usage: %s [--listen HOST:PORT] [--max-recv-bytes N] "
              "[--pool-threads N] [--pool-queue N] [--compression ALG] "
              "[--tls-cert F --tls-key F [--tls-client-ca F] "
              "[--tls-client-auth none|request|require]]\n",
              argv[0]);
      return 2;
    }
  }
  perfc_server *srv = NULL;
  int port = 0;
  int rc = perfc_server_new(&srv, &o);
  if (rc == 0)
    rc = tls.cert_file != NULL
             ? perfc_server_listen_tls(srv, listen, &tls, &port)
             : perfc_server_listen(srv, listen, &port);
  /* The name Echo("whoami") answers, so clients can tell replicas apart. */
  static char name[32];
  snprintf(name, sizeof name, "server-%d", port);
  if (rc == 0)
    rc = perfc__test__v1__test_service__perfc_register(
        srv, &test_service_handlers, name);
  if (rc == 0)
    rc = perfc_server_start(srv);
  if (rc != 0) {
    fprintf(stderr, "perfc-test-server: %s%s%s\n", perfc_strerror(rc),
            rc == PERFC_ETLS ? ": " : "",
            rc == PERFC_ETLS ? perfc_tls_last_error() : "");
    perfc_server_free(srv);
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
  return 0;
}
