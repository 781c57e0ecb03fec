/*
 * perfc-echo-client — calls bench.v1.Echo/Unary through the generated C
 * client stub (echo.perfc.h) and checks every answer.
 *
 * Room: bench/echo — a program built on the public perfc API exactly as a
 * user would write it. `make demo` runs it; it also measures the C client's
 * own call rate with --threads.
 *
 * Usage: perfc-echo-client --target HOST:PORT [--message TEXT] [--count N]
 *                          [--threads T] [--connections C] [--timeout-ms MS]
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "perfc.h"

#include "echo.perfc.h"

typedef struct worker {
  perfc_channel *ch;
  const char *message;
  long count;
  int64_t timeout_ms;
  long ok, failed;
  perfc_status_code first_error;
  char first_message[200];
} worker;

static void *run(void *arg) {
  worker *w = arg;
  size_t len = strlen(w->message);
  perfc_arena *arena;
  if (perfc_arena_new(&arena, 0) != 0)
    return NULL;
  for (long i = 0; i < w->count; i++) {
    Bench__V1__EchoRequest req = BENCH__V1__ECHO_REQUEST__INIT;
    req.payload.data = (uint8_t *)w->message;
    req.payload.len = len;
    Bench__V1__EchoResponse *resp = NULL;
    perfc_status st = {0};
    /* One arena reused for every response: reset, no free per call. */
    perfc_arena_reset(arena);
    perfc_call_opts opts = {.timeout_ms = w->timeout_ms, .arena = arena};
    perfc_status_code code =
        bench__v1__echo__unary__call(w->ch, &req, &resp, &opts, &st);
    if (code == PERFC_STATUS_OK && resp->payload.len == len &&
        memcmp(resp->payload.data, w->message, len) == 0) {
      w->ok++;
    } else {
      if (w->failed++ == 0) {
        w->first_error = code;
        snprintf(w->first_message, sizeof w->first_message, "%s",
                 code == PERFC_STATUS_OK ? "payload mismatch"
                                         : (st.message ? st.message : ""));
      }
    }
    perfc_status_reset(&st);
  }
  perfc_arena_free(arena);
  return NULL;
}

static void usage(FILE *f) {
  fprintf(f, "usage: perfc-echo-client --target HOST:PORT [--message TEXT] "
             "[--count N] [--threads T] [--connections C] [--timeout-ms MS]\n");
}

int main(int argc, char **argv) {
  const char *target = NULL, *message = "hello";
  long count = 1, threads = 1, connections = 1, timeout_ms = 5000;
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
    char *end = NULL;
    long n = strtol(v, &end, 10);
    int numeric = *v != '\0' && *end == '\0' && n > 0;
    if (!strcmp(a, "--target"))
      target = v;
    else if (!strcmp(a, "--message"))
      message = v;
    else if (!strcmp(a, "--count") && numeric)
      count = n;
    else if (!strcmp(a, "--threads") && numeric && n <= 1024)
      threads = n;
    else if (!strcmp(a, "--connections") && numeric && n <= 1024)
      connections = n;
    else if (!strcmp(a, "--timeout-ms") && numeric)
      timeout_ms = n;
    else {
      fprintf(stderr, "perfc-echo-client: bad option '%s %s'\n", a, v);
      usage(stderr);
      return 2;
    }
  }
  if (target == NULL) {
    usage(stderr);
    return 2;
  }
  perfc_channel_opts co;
  perfc_channel_opts_init(&co);
  co.connections = (unsigned)connections;
  perfc_channel *ch;
  int rc = perfc_channel_new(&ch, target, &co);
  if (rc != 0) {
    fprintf(stderr, "perfc-echo-client: %s: %s\n", target, perfc_strerror(rc));
    return 1;
  }
  worker *w = calloc((size_t)threads, sizeof *w);
  pthread_t *th = calloc((size_t)threads, sizeof *th);
  if (w == NULL || th == NULL)
    return 1;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (long i = 0; i < threads; i++) {
    w[i] = (worker){.ch = ch, .message = message,
                    .count = count / threads + (i < count % threads),
                    .timeout_ms = timeout_ms};
    pthread_create(&th[i], NULL, run, &w[i]);
  }
  long ok = 0, failed = 0;
  const worker *first_bad = NULL;
  for (long i = 0; i < threads; i++) {
    pthread_join(th[i], NULL);
    ok += w[i].ok;
    failed += w[i].failed;
    if (w[i].failed && first_bad == NULL)
      first_bad = &w[i];
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double secs = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
  printf("  generated C client: %ld calls of \"%s\" to %s: %ld echoed correctly, "
         "%ld failed, %.0f calls/s (%ld thread%s)\n",
         count, message, target, ok, failed, secs > 0 ? (double)count / secs : 0.0,
         threads, threads == 1 ? "" : "s");
  if (first_bad != NULL)
    printf("  first failure: %s: %s\n", perfc_status_name(first_bad->first_error),
           first_bad->first_message);
  free(w);
  free(th);
  perfc_channel_free(ch);
  return failed == 0 ? 0 : 1;
}
