/*
 * perfc-echo-server — perfc's side of the echo benchmark: the smallest real
 * perfc service. bench.v1.Echo/Unary returns the request's payload.
 *
 * Room: bench/echo — a program built on the public perfc API exactly as a
 * user would write it (generated echo.perfc.h plus perfc/server.h), measured
 * by bench/run against the C-core ceiling and the C++/Go peers. It must not
 * reach into runtime/src: whatever it costs, a user's service costs too.
 *
 * Usage: perfc-echo-server --listen HOST:PORT [--threads N] [--requests K]
 *                          [--metrics-listen HOST:PORT] [--metrics-dump FILE]
 *                          [--pool-threads N] [--bare 1] [--poller-preempt 1]
 *                          [--worker-preempt 1] [--stream-flush 1]
 *                          [--busy-poll-us N]
 *                          [--executor inline|pool] [--tracing SAMPLER]
 *                          [--transport core|h2] [--stream-executor loop|pool]
 *
 * --stream-executor says where Stream's handler runs: `loop`, callbacks on
 * the h2 loop that owns the connection (perfc_server_set_stream_callbacks:
 * no worker, no hand-off per message), or `pool`, the blocking handler on
 * a worker (one per open stream). The default is loop on h2 (the faster)
 * and pool on the C core transport, which cannot run loop handlers; an
 * explicit `loop` with `--transport core` is refused.
 * --executor pool runs Unary on the worker pool (server.default_executor;
 * inline, on the poller, is the default): bench/run-users measures what the
 * hand-off costs, since examples/user-service runs its handlers there.
 * --bare 1 leaves out health and reflection, so the server registers only
 * Echo's methods, like the peers (the C core keeps a per-connection table
 * sized by the number of registered methods; bench/run-idle).
 * With --metrics-listen the go-grpc-prometheus-compatible interceptor is on
 * and /metrics (plus process metrics) is served there; without it the
 * server runs with no interceptor, so bench/run can measure the cost.
 * --poller-preempt 1 keeps the normal scheduling policy for the pollers
 * (perfc_server_opts.poller_wakeup_preemption), to measure SCHED_BATCH;
 * --worker-preempt 1 the same for the worker pool's threads
 * (perfc_server_opts.worker_wakeup_preemption).
 * --busy-poll-us N: h2's loops poll up to N µs before they sleep
 * (perfc_server_opts.busy_poll_us; bench/run-streaming's perfc-h2spin).
 * --stream-flush 1 writes every Stream reply at once instead of batching
 * those made while the next request waits
 * (perfc_server_opts.stream_flush_every_send).
 * --tracing SAMPLER attaches a tracer (perfc/tracing.h) with that
 * OpenTelemetry sampler (always_off, always_on, parentbased_always_on, ...);
 * spans go where the OTEL_EXPORTER_OTLP_* variables say (bench/run-overhead
 * points them at a local sink). bench/run-overhead measures its cost.
 * --metrics-dump writes the final exposition to FILE after a graceful stop,
 * when every accepted call has been counted: scripts/soak compares it with
 * what h2load received across a SIGTERM (a scrape could only race it).
 */
/* setenv() */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "perfc.h"
#include "perfc/health.h"
#include "perfc/reflection.h"

#include "echo.perfc.h"

/* The response borrows the request's bytes: both live in the call's arena
 * until the call ends, after the response is packed. No copy. */
static perfc_status_code echo_unary(perfc_ctx *ctx,
                                    const Bench__V1__EchoRequest *req,
                                    Bench__V1__EchoResponse *resp,
                                    void *user_data) {
  (void)ctx;
  (void)user_data;
  resp->payload = req->payload;
  return PERFC_STATUS_OK;
}

/* Bidi echo: every request message goes back as one response, in order,
 * until the client half-closes. The handler blocks on a worker thread (perfc
 * runs every streaming handler on the pool), so each open stream holds one
 * worker: --pool-threads must be at least the number of concurrent streams. */
static perfc_status_code echo_stream(perfc_ctx *ctx, perfc_stream *stream,
                                     void *user_data) {
  (void)user_data;
  for (;;) {
    Bench__V1__EchoRequest *req = NULL;
    int rc = bench__v1__echo__stream__recv(stream, &req);
    if (rc == 0)
      return PERFC_STATUS_OK;
    if (rc < 0)
      return perfc_ctx_error(ctx, PERFC_STATUS_CANCELLED, "receive: %s",
                             perfc_strerror(rc));
    Bench__V1__EchoResponse resp = BENCH__V1__ECHO_RESPONSE__INIT;
    resp.payload = req->payload;
    rc = bench__v1__echo__stream__send(stream, &resp);
    if (rc != 0)
      return perfc_ctx_error(ctx, PERFC_STATUS_CANCELLED, "send: %s",
                             perfc_strerror(rc));
  }
}

/* The same echo as loop callbacks: each request is answered from inside
 * on_message, on the loop thread, and leaves with that iteration's one
 * write. When the stream already holds its high-water mark unsent (a slow
 * reader) the send answers PERFC_EFULL; the request is then refused the
 * same way, so perfc keeps it (and the client's window shut) and delivers
 * it again once the stream drained (on_writable left NULL: perfc resumes). */
static int echo_loop_message(perfc_stream *s, const ProtobufCMessage *m,
                             void *state) {
  (void)state;
  const Bench__V1__EchoRequest *req = (const Bench__V1__EchoRequest *)m;
  Bench__V1__EchoResponse resp = BENCH__V1__ECHO_RESPONSE__INIT;
  resp.payload = req->payload;
  int rc = bench__v1__echo__stream__send(s, &resp);
  if (rc == PERFC_EFULL)
    return PERFC_EFULL;
  if (rc != 0)
    perfc_stream_finish(s, perfc_ctx_error(perfc_stream_ctx(s),
                                           PERFC_STATUS_CANCELLED, "send: %s",
                                           perfc_strerror(rc)));
  return 0;
}

static perfc_status_code echo_loop_start(perfc_ctx *ctx, perfc_stream *s,
                                         const ProtobufCMessage *req,
                                         ProtobufCMessage *resp,
                                         void **state) {
  (void)ctx;
  (void)s;
  (void)req;
  (void)resp;
  (void)state;
  return PERFC_STATUS_OK;
}

/* on_half_close NULL: the call ends OK once the client's last request was
 * echoed. */
static const perfc_stream_callbacks echo_loop = {
    .on_start = echo_loop_start,
    .on_message = echo_loop_message,
};

static const Bench__V1__Echo_Handlers echo_handlers = {
    .unary = echo_unary,
    .stream = echo_stream,
};

static void usage(FILE *f) {
  fprintf(f, "usage: perfc-echo-server --listen HOST:PORT [--threads N] "
             "[--requests K] [--metrics-listen HOST:PORT] [--metrics-dump FILE] "
             "[--pool-threads N] [--bare 1] [--poller-preempt 1] [--worker-preempt 1] [--busy-poll-us N] [--stream-flush 1] "
             "[--executor inline|pool] [--tracing SAMPLER] [--transport core|h2] "
             "[--stream-executor loop|pool]\n");
}

int main(int argc, char **argv) {
  const char *listen = NULL;
  const char *metrics_listen = NULL;
  const char *metrics_dump = NULL;
  long threads = 0;
  long requests = 0; /* 0 = perfc's default */
  long pool_threads = 0; /* 0 = perfc's default (4 per core) */
  int bare = 0;
  int preempt = 0; /* --poller-preempt 1: pollers keep the normal policy */
  long long busy_poll_us = 0; /* --busy-poll-us N: h2 loops poll N µs */
  int wpreempt = 0; /* --worker-preempt 1: workers keep the normal policy */
  int sflush = 0;   /* --stream-flush 1: no reply batching on streams */
  perfc_executor executor = PERFC_EXEC_INLINE;
  perfc_server_transport transport = PERFC_TRANSPORT_DEFAULT;
  const char *tracing = NULL; /* --tracing SAMPLER */
  const char *stream_exec = NULL; /* --stream-executor loop|pool; NULL: best */

  /* A SIGINT/SIGTERM during the start-up waits for perfc_server_run(),
   * which then stops gracefully (docs/design.md, "Signals"). */
  if (perfc_server_hold_signals() != 0) {
    fprintf(stderr, "perfc-echo-server: %s\n", perfc_last_error());
    return 1;
  }
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      return 0;
    }
    if (i + 1 >= argc) {
      usage(stderr);
      return 2;
    }
    const char *v = argv[++i];
    if (!strcmp(a, "--listen")) {
      listen = v;
    } else if (!strcmp(a, "--threads")) {
      char *end = NULL;
      threads = strtol(v, &end, 10);
      if (*v == '\0' || *end != '\0' || threads < 0 || threads > 1024) {
        fprintf(stderr, "perfc-echo-server: bad --threads '%s'\n", v);
        return 2;
      }
    } else if (!strcmp(a, "--requests")) {
      char *end = NULL;
      requests = strtol(v, &end, 10);
      if (*v == '\0' || *end != '\0' || requests < 1 || requests > 65536) {
        fprintf(stderr, "perfc-echo-server: bad --requests '%s'\n", v);
        return 2;
      }
    } else if (!strcmp(a, "--pool-threads")) {
      char *end = NULL;
      pool_threads = strtol(v, &end, 10);
      if (*v == '\0' || *end != '\0' || pool_threads < 1 ||
          pool_threads > 4096) {
        fprintf(stderr, "perfc-echo-server: bad --pool-threads '%s'\n", v);
        return 2;
      }
    } else if (!strcmp(a, "--bare")) {
      bare = !strcmp(v, "1");
    } else if (!strcmp(a, "--poller-preempt")) {
      preempt = !strcmp(v, "1");
    } else if (!strcmp(a, "--worker-preempt")) {
      wpreempt = !strcmp(v, "1");
    } else if (!strcmp(a, "--busy-poll-us")) {
      busy_poll_us = strtoll(v, NULL, 10);
    } else if (!strcmp(a, "--stream-flush")) {
      sflush = !strcmp(v, "1");
    } else if (!strcmp(a, "--transport")) {
      if (!strcmp(v, "core")) {
        transport = PERFC_TRANSPORT_CORE;
      } else if (!strcmp(v, "h2")) {
        transport = PERFC_TRANSPORT_H2;
      } else {
        fprintf(stderr, "perfc-echo-server: bad --transport '%s'\n", v);
        return 2;
      }
    } else if (!strcmp(a, "--executor")) {
      if (!strcmp(v, "inline")) {
        executor = PERFC_EXEC_INLINE;
      } else if (!strcmp(v, "pool")) {
        executor = PERFC_EXEC_POOL;
      } else {
        fprintf(stderr, "perfc-echo-server: bad --executor '%s'\n", v);
        usage(stderr);
        return 2;
      }
    } else if (!strcmp(a, "--stream-executor")) {
      if (strcmp(v, "loop") != 0 && strcmp(v, "pool") != 0) {
        fprintf(stderr, "perfc-echo-server: bad --stream-executor '%s'\n", v);
        return 2;
      }
      stream_exec = v;
    } else if (!strcmp(a, "--tracing")) {
      tracing = v;
    } else if (!strcmp(a, "--metrics-listen")) {
      metrics_listen = v;
    } else if (!strcmp(a, "--metrics-dump")) {
      metrics_dump = v;
    } else {
      fprintf(stderr, "perfc-echo-server: unknown option '%s'\n", a);
      usage(stderr);
      return 2;
    }
  }
  if (!listen) {
    usage(stderr);
    return 2;
  }
  perfc_server_opts opts;
  perfc_server_opts_init(&opts);
  opts.threads = (unsigned)threads; /* 0 = one poller per core */
  opts.requests_per_method = (unsigned)requests;
  opts.pool_threads = (unsigned)pool_threads;
  opts.poller_wakeup_preemption = preempt;
  opts.busy_poll_us = busy_poll_us;
  opts.worker_wakeup_preemption = wpreempt;
  opts.stream_flush_every_send = sflush;
  opts.default_executor = executor;
  opts.transport = transport;

  perfc_server *srv = NULL;
  perfc_grpc_metrics *gm = NULL;
  perfc_metrics_http *http = NULL;
  perfc_health *health = NULL;
  int port = 0;
  int rc = perfc_server_new(&srv, &opts);
  if (rc == 0 && metrics_listen) {
    perfc_metrics_http_opts ho;
    perfc_metrics_http_opts_init(&ho);
    ho.addr = metrics_listen;
    rc = perfc_grpc_metrics_new(&gm, NULL);
    if (rc == 0)
      rc = perfc_grpc_metrics_attach(gm, srv);
    if (rc == 0)
      rc = perfc_process_metrics_register(NULL);
    if (rc == 0)
      rc = perfc_metrics_http_start(&http, &ho);
    if (rc != 0)
      fprintf(stderr, "perfc-echo-server: --metrics-listen %s: %s\n",
              metrics_listen, perfc_strerror(rc));
  }
  perfc_tracer *tracer = NULL;
  if (rc == 0 && tracing) {
    /* The sampler by its OTEL_TRACES_SAMPLER name, the way operators set it. */
    setenv("OTEL_TRACES_SAMPLER", tracing, 1);
    rc = perfc_tracing_new(&tracer, NULL);
    if (rc == 0)
      rc = perfc_tracing_attach(tracer, srv);
    if (rc != 0)
      fprintf(stderr, "perfc-echo-server: --tracing %s: %s\n", tracing,
              perfc_strerror(rc));
  }
  if (rc == 0)
    rc = perfc_server_listen(srv, listen, &port);
  if (rc == 0)
    rc = bench__v1__echo__perfc_register(srv, &echo_handlers, NULL);
  /* Stream on the loop unless asked for the pool; by default only where
   * the transport runs loop handlers (h2). */
  if (rc == 0 && (stream_exec == NULL || !strcmp(stream_exec, "loop"))) {
    int lrc = perfc_server_set_stream_callbacks(srv, "/bench.v1.Echo/Stream",
                                                &echo_loop, NULL);
    if (lrc == PERFC_ESTATE && stream_exec == NULL)
      lrc = 0; /* the C core transport: the blocking handler stays */
    else if (lrc != 0)
      fprintf(stderr, "perfc-echo-server: --stream-executor loop: %s\n",
              perfc_last_error());
    rc = lrc;
  }
  /* Health and reflection, as generated mains serve them, so probes and
   * grpcurl work here too; neither adds work to Unary's path. */
  if (rc == 0 && !bare)
    rc = perfc_health_new(&health, NULL);
  if (rc == 0 && !bare)
    rc = perfc_health_register(health, srv);
  if (rc == 0 && !bare)
    rc = perfc_reflection_register(srv);
  if (rc == 0)
    rc = perfc_server_start(srv);
  if (rc != 0) {
    fprintf(stderr, "perfc-echo-server: %s: %s\n", listen, perfc_strerror(rc));
    perfc_server_free(srv);
    perfc_tracing_free(tracer);
    perfc_metrics_http_stop(http);
    perfc_grpc_metrics_free(gm);
    perfc_health_free(health);
    return 1;
  }

  /* The host as given, the port as bound (":0" reports the real port). */
  const char *colon = strrchr(listen, ':');
  printf("listening on %.*s:%d\n", (int)(colon ? colon - listen : 0), listen,
         port);
  if (http != NULL) {
    const char *mcolon = strrchr(metrics_listen, ':');
    printf("metrics on %.*s:%d/metrics\n",
           (int)(mcolon ? mcolon - metrics_listen : 0), metrics_listen,
           perfc_metrics_http_port(http));
  }
  fflush(stdout);

  int sig = perfc_server_run(srv); /* returns after SIGINT/SIGTERM */
  fprintf(stderr, "perfc-echo-server: %s, stopped\n",
          sig == SIGTERM  ? "SIGTERM"
          : sig == SIGINT ? "SIGINT"
                          : "shutdown");
  perfc_server_free(srv);
  if (tracer != NULL) {
    /* After the final flush: bench/trace-cost shows these, so a run whose
     * spans were dropped (which hides their export cost) is seen. */
    perfc_tracing_flush(tracer, 5000);
    perfc_tracing_stats st;
    perfc_tracing_stats_get(tracer, &st);
    fprintf(stderr,
            "perfc-echo-server: tracing spans ended=%llu exported=%llu "
            "dropped_queue_full=%llu dropped_export=%llu requests=%llu\n",
            (unsigned long long)st.spans_ended,
            (unsigned long long)st.spans_exported,
            (unsigned long long)st.dropped_queue_full,
            (unsigned long long)st.dropped_export,
            (unsigned long long)st.export_requests);
  }
  perfc_tracing_free(tracer);
  int dump_rc = 0;
  if (metrics_dump != NULL && gm != NULL) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = fopen(metrics_dump, "w");
    dump_rc = f == NULL ||
              perfc_metrics_registry_render(NULL, &text, &len) != 0 ||
              fwrite(text, 1, len, f) != len;
    if (f != NULL && fclose(f) != 0)
      dump_rc = 1;
    free(text);
    if (dump_rc)
      fprintf(stderr, "perfc-echo-server: cannot write %s\n", metrics_dump);
  }
  perfc_metrics_http_stop(http);
  perfc_grpc_metrics_free(gm);
  perfc_health_free(health); /* after the server, which uses it until freed */
  return dump_rc;
}
