/*
 * h2_echo_server.c — bench.v1.Echo on the h2 transport alone (no call
 * layer, no protobuf decoding): Unary echoes its request bytes, Stream
 * echoes every message; any other method is UNIMPLEMENTED.
 *
 * Room: tests/h2. The test server of issue #15's transport layers: the
 * python3-grpcio test, h2load and tests/adversarial/run.py drive it.
 *
 * Usage: perfc-h2-echo-server --listen HOST:PORT [--threads N]
 *          [--max-recv BYTES] [--metrics-listen HOST:PORT] [--pool 1]
 *          [--transport h2] [--tls-cert F --tls-key F [--tls-client-ca F
 *          --client-auth request|require]] [--grace-ms MS]
 *
 * --pool 1 answers Unary from a worker thread, through the transport's
 * cross-thread path (the loop's queue and eventfd), as a pool handler.
 * --metrics-listen serves perfc's /metrics (process metrics) so the
 * adversarial suite's metrics probe has something to scrape.
 * Prints "listening on HOST:PORT" (and "metrics on HOST:PORT/metrics")
 * once serving; SIGTERM/SIGINT stop it gracefully.
 */
#include "transport/h2/h2_internal.h"

#include "perfc/metrics.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct echo_call {
  perfc__h2_stream *s;
  int kind; /* 0 unary, 1 stream */
  uint8_t *req;
  size_t req_len;
  struct echo_call *next; /* the pool's queue */
} echo_call;

static int use_pool;
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_cv = PTHREAD_COND_INITIALIZER;
static echo_call *pool_head, *pool_tail;
static int pool_stop;

static perfc_status_code on_call(void *data, perfc__h2_stream *s,
                                 const perfc__h2_call_info *info, void **call,
                                 unsigned *flags, const char **refuse) {
  (void)data;
  int kind;
  if (strcmp(info->path, "/bench.v1.Echo/Unary") == 0)
    kind = 0;
  else if (strcmp(info->path, "/bench.v1.Echo/Stream") == 0)
    kind = 1;
  else {
    *refuse = "unknown method";
    return PERFC_STATUS_UNIMPLEMENTED;
  }
  echo_call *c = calloc(1, sizeof *c);
  if (c == NULL) {
    *refuse = "out of memory";
    return PERFC_STATUS_RESOURCE_EXHAUSTED;
  }
  c->s = s;
  c->kind = kind;
  *call = c;
  *flags = kind == 0 ? PERFC__H2_CALL_SINGLE_REQUEST : 0;
  return PERFC_STATUS_OK;
}

static int on_message(void *call, perfc__h2_stream *s, const uint8_t *b,
                      size_t len) {
  echo_call *c = call;
  if (c->kind == 1) {
    int rc = perfc__h2_send_message(s, b, len, 0);
    return rc == PERFC_EFULL ? PERFC_EFULL : 0;
  }
  c->req = malloc(len ? len : 1);
  if (c->req == NULL)
    return 0;
  memcpy(c->req, b, len);
  c->req_len = len;
  return 0;
}

static void answer(echo_call *c) {
  perfc__h2_send_message(c->s, c->req, c->req_len, PERFC__H2_SEND_MORE);
  perfc__h2_finish(c->s, PERFC_STATUS_OK, NULL, NULL, 0, 0);
}

static void on_half_close(void *call, perfc__h2_stream *s) {
  echo_call *c = call;
  if (c->kind == 1) {
    perfc__h2_finish(s, PERFC_STATUS_OK, NULL, NULL, 0, 0);
    return;
  }
  if (!use_pool) {
    answer(c);
    return;
  }
  pthread_mutex_lock(&pool_mu);
  if (pool_tail)
    pool_tail->next = c;
  else
    pool_head = c;
  pool_tail = c;
  pthread_cond_signal(&pool_cv);
  pthread_mutex_unlock(&pool_mu);
}

static void on_writable(void *call, perfc__h2_stream *s) {
  (void)call;
  perfc__h2_resume_recv(s);
}

static void on_close(void *call, perfc__h2_stream *s, perfc__h2_close_reason why) {
  (void)why;
  echo_call *c = call;
  if (use_pool && c->kind == 0) {
    /* The worker may still hold it: it frees queued calls itself. Mark by
     * dropping the stream pointer under the lock. */
    pthread_mutex_lock(&pool_mu);
    int queued = 0;
    for (echo_call *q = pool_head; q; q = q->next)
      queued |= q == c;
    c->s = NULL;
    pthread_mutex_unlock(&pool_mu);
    perfc__h2_stream_release(s);
    if (queued)
      return;
    free(c->req);
    free(c);
    return;
  }
  free(c->req);
  free(c);
  perfc__h2_stream_release(s);
}

static void *pool_main(void *arg) {
  (void)arg;
  for (;;) {
    pthread_mutex_lock(&pool_mu);
    while (pool_head == NULL && !pool_stop)
      pthread_cond_wait(&pool_cv, &pool_mu);
    if (pool_head == NULL) {
      pthread_mutex_unlock(&pool_mu);
      return NULL;
    }
    echo_call *c = pool_head;
    pool_head = c->next;
    if (pool_head == NULL)
      pool_tail = NULL;
    perfc__h2_stream *s = c->s;
    if (s != NULL)
      answer(c); /* posted to the loop: the stream is valid until release */
    pthread_mutex_unlock(&pool_mu);
    if (s == NULL) { /* closed while queued */
      free(c->req);
      free(c);
    }
  }
}

static void usage(FILE *f) {
  fprintf(f, "usage: perfc-h2-echo-server --listen HOST:PORT [--threads N] "
             "[--max-recv BYTES] [--metrics-listen HOST:PORT] [--pool 1] "
             "[--transport h2] [--tls-cert F --tls-key F [--tls-client-ca F "
             "--client-auth request|require]] [--grace-ms MS]\n");
}

int main(int argc, char **argv) {
  const char *listen = NULL, *metrics_listen = NULL;
  perfc_tls_opts tls;
  perfc_tls_opts_init(&tls);
  perfc__h2_opts o;
  perfc__h2_opts_init(&o);
  o.loops = 1;
  long grace_ms = 5000;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      return 0;
    }
    if (i + 1 >= argc) {
      fprintf(stderr, "perfc-h2-echo-server: %s needs a value\n", a);
      usage(stderr);
      return 2;
    }
    const char *v = argv[++i];
    char *end = NULL;
    if (!strcmp(a, "--listen")) {
      listen = v;
    } else if (!strcmp(a, "--threads")) {
      o.loops = (int)strtol(v, &end, 10);
      if (*end || o.loops < 1 || o.loops > 256) {
        fprintf(stderr, "perfc-h2-echo-server: bad --threads '%s'\n", v);
        return 2;
      }
    } else if (!strcmp(a, "--max-recv")) {
      long long n = strtoll(v, &end, 10);
      if (*end || n < 1 || n > (1LL << 31)) {
        fprintf(stderr, "perfc-h2-echo-server: bad --max-recv '%s'\n", v);
        return 2;
      }
      o.max_recv_message_bytes = (size_t)n;
      if (o.conn_recv_budget_bytes < (size_t)n * 2)
        o.conn_recv_budget_bytes = (size_t)n * 2;
    } else if (!strcmp(a, "--grace-ms")) {
      grace_ms = strtol(v, &end, 10);
      if (*end || grace_ms < 0) {
        fprintf(stderr, "perfc-h2-echo-server: bad --grace-ms '%s'\n", v);
        return 2;
      }
    } else if (!strcmp(a, "--pool")) {
      use_pool = !strcmp(v, "1");
    } else if (!strcmp(a, "--transport")) {
      if (strcmp(v, "h2") != 0) {
        fprintf(stderr, "perfc-h2-echo-server: only --transport h2 is served here\n");
        return 2;
      }
    } else if (!strcmp(a, "--metrics-listen")) {
      metrics_listen = v;
    } else if (!strcmp(a, "--tls-cert")) {
      tls.cert_file = v;
    } else if (!strcmp(a, "--tls-key")) {
      tls.key_file = v;
    } else if (!strcmp(a, "--tls-client-ca")) {
      tls.client_ca_file = v;
    } else if (!strcmp(a, "--client-auth")) {
      tls.client_auth = !strcmp(v, "require")   ? PERFC_TLS_CLIENT_AUTH_REQUIRE
                        : !strcmp(v, "request") ? PERFC_TLS_CLIENT_AUTH_REQUEST
                                                : PERFC_TLS_CLIENT_AUTH_NONE;
    } else {
      fprintf(stderr, "perfc-h2-echo-server: unknown option '%s'\n", a);
      usage(stderr);
      return 2;
    }
  }
  if (listen == NULL) {
    usage(stderr);
    return 2;
  }
  /* Signals are taken by sigwait below; block them before any thread
   * starts so every thread inherits the mask. */
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, NULL);
  signal(SIGPIPE, SIG_IGN);

  perfc__h2_callbacks cb = {on_call, on_message, on_half_close, on_writable,
                            on_close, NULL, NULL};
  perfc__h2_server *srv = NULL;
  perfc_metrics_http *http = NULL;
  int port = 0;
  int rc = perfc__h2_server_new(&srv, &o, &cb, NULL);
  if (rc == 0)
    rc = perfc__h2_server_listen(srv, listen, tls.cert_file ? &tls : NULL, &port);
  if (rc == 0 && metrics_listen != NULL) {
    perfc_metrics_http_opts ho;
    perfc_metrics_http_opts_init(&ho);
    ho.addr = metrics_listen;
    rc = perfc_process_metrics_register(NULL);
    if (rc == 0)
      rc = perfc_metrics_http_start(&http, &ho);
  }
  pthread_t worker;
  if (rc == 0 && use_pool && pthread_create(&worker, NULL, pool_main, NULL) != 0)
    rc = -1;
  if (rc == 0)
    rc = perfc__h2_server_start(srv);
  if (rc != 0) {
    fprintf(stderr, "perfc-h2-echo-server: %s: %s (%s)\n", listen,
            perfc_strerror(rc), perfc_last_error());
    perfc__h2_server_free(srv);
    perfc_metrics_http_stop(http);
    return 1;
  }
  const char *colon = strrchr(listen, ':');
  printf("listening on %.*s:%d\n", (int)(colon - listen), listen, port);
  if (http != NULL) {
    const char *mc = strrchr(metrics_listen, ':');
    printf("metrics on %.*s:%d/metrics\n", (int)(mc ? mc - metrics_listen : 0),
           metrics_listen, perfc_metrics_http_port(http));
  }
  fflush(stdout);

  int sig = 0;
  sigwait(&sigs, &sig);
  perfc__h2_server_shutdown(srv, grace_ms);
  perfc__h2_stats st;
  perfc__h2_server_stats(srv, &st);
  fprintf(stderr,
          "perfc-h2-echo-server: %s, stopped: %llu connections, %llu streams, "
          "%llu reset by clients, %llu rapid-reset GOAWAYs\n",
          sig == SIGTERM ? "SIGTERM" : "SIGINT",
          (unsigned long long)st.conns_accepted,
          (unsigned long long)st.streams_started,
          (unsigned long long)st.streams_reset_by_client,
          (unsigned long long)st.goaway_rapid_reset);
  perfc__h2_server_free(srv);
  if (use_pool) {
    pthread_mutex_lock(&pool_mu);
    pool_stop = 1;
    pthread_cond_broadcast(&pool_cv);
    pthread_mutex_unlock(&pool_mu);
    pthread_join(worker, NULL);
  }
  perfc_metrics_http_stop(http);
  return 0;
}
