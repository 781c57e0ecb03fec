/*
 * perfc-stream-load — streaming load on perfc's client stream API: S bidi
 * streams to bench.v1.Echo/Stream, each with a window of W messages in
 * flight. Two shapes (--threads-per-stream):
 *   2 (default): a writer thread and a reader thread per stream (the writer
 *     waits for a free slot, the reader frees one per echo);
 *   1: one thread per stream that writes while the window has room and
 *     reads otherwise. No hand-off between threads, so the client spends
 *     less per message and the server's own speed decides the rate sooner.
 *     With --burst B > 1 it writes only once B slots are free, and then
 *     fills them as one burst: write_more (perfc_client_stream_send_more)
 *     for all but the last message, so the burst costs one system call
 *     instead of B. --burst 1 (the default) writes each message on its
 *     own as soon as a slot is free.
 * Reports messages/s and the client's own CPU time, so that a comparison
 * run against two servers can show how much of the box the client took.
 *
 * Room: bench/echo — built on the public perfc API as a user would
 * (generated echo.perfc.h); bench/run-streaming runs the same binary
 * against every server.
 *
 * Usage: perfc-stream-load --target HOST:PORT [--streams S] [--window W]
 *                          [--count N] [--payload BYTES] [--connections C]
 *                          [--threads-per-stream 1|2] [--burst B]
 * --count is messages per stream (default 100000). Bounded: the calls carry
 * a deadline of MAX_SECONDS, so a stuck server ends the run with an error.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "perfc.h"

#include "echo.perfc.h"

#define MAX_SECONDS 120

typedef struct stream_job {
  perfc_channel *ch;
  const Bench__V1__EchoRequest *req;
  long count;
  perfc_client_stream *s;
  sem_t window;
  long window_size, burst;
  long sent, received, bad;
  int send_rc, recv_rc;
  perfc_status_code code;
  char message[128];
  pthread_t writer, reader;
} stream_job;

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* The writer blocks on the window before each send, so at most W messages
 * are unanswered on this stream; the window is what keeps the pipe full
 * without an unbounded send queue. */
static void *writer_main(void *arg) {
  stream_job *j = arg;
  for (long i = 0; i < j->count; i++) {
    sem_wait(&j->window);
    int rc = bench__v1__echo__stream__write(j->s, j->req);
    if (rc != 0) {
      j->send_rc = rc;
      break;
    }
    j->sent++;
  }
  perfc_client_stream_close_send(j->s);
  return NULL;
}

/* Reads one echo and checks its size. Returns the read's result: 1 for a
 * message (counted), 0 at the end of the stream, < 0 on error (kept). */
static int read_one(stream_job *j) {
  Bench__V1__EchoResponse *resp = NULL;
  int rc = bench__v1__echo__stream__read(j->s, &resp);
  if (rc != 1) {
    j->recv_rc = rc;
    return rc;
  }
  if (resp->payload.len != j->req->payload.len)
    j->bad++;
  j->received++;
  return 1;
}

/* --threads-per-stream 1: the window is a count, not a semaphore. */
static void *single_main(void *arg) {
  stream_job *j = arg;
  while (j->received < j->count) {
    long room = j->window_size - (j->sent - j->received);
    long left = j->count - j->sent;
    long n = room < left ? room : left;
    if (n > 0 && (j->burst == 1 || n >= j->burst || n == left)) {
      int rc = 0;
      for (long k = 0; k < n && rc == 0; k++) {
        int more = j->burst > 1 && k + 1 < n;
        rc = more ? bench__v1__echo__stream__write_more(j->s, j->req)
                  : bench__v1__echo__stream__write(j->s, j->req);
        if (rc == 0)
          j->sent++;
      }
      if (rc != 0) {
        j->send_rc = rc;
        break;
      }
      if (j->sent == j->count)
        perfc_client_stream_close_send(j->s);
      continue;
    }
    if (read_one(j) != 1)
      break;
  }
  if (j->received < j->count)
    perfc_client_stream_cancel(j->s);
  return NULL;
}

static void *reader_main(void *arg) {
  stream_job *j = arg;
  while (read_one(j) == 1)
    sem_post(&j->window);
  /* Unblock a writer still waiting for a slot when the call died early. */
  if (j->received < j->count) {
    perfc_client_stream_cancel(j->s);
    sem_post(&j->window);
  }
  return NULL;
}

int main(int argc, char **argv) {
  const char *target = NULL;
  long streams = 1, window = 32, count = 100000, payload = 64, connections = 1,
       per_stream = 2, burst = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    char *end = NULL;
    long v = strtol(argv[i + 1], &end, 10);
    int num = *end == '\0' && v > 0;
    if (!strcmp(argv[i], "--target"))
      target = argv[i + 1];
    else if (!strcmp(argv[i], "--streams") && num && v <= 1024)
      streams = v;
    else if (!strcmp(argv[i], "--window") && num && v <= 65536)
      window = v;
    else if (!strcmp(argv[i], "--count") && num)
      count = v;
    else if (!strcmp(argv[i], "--payload") && num && v <= (1 << 20))
      payload = v;
    else if (!strcmp(argv[i], "--connections") && num && v <= 1024)
      connections = v;
    else if (!strcmp(argv[i], "--threads-per-stream") && num && v <= 2)
      per_stream = v;
    else if (!strcmp(argv[i], "--burst") && num && v <= 65536)
      burst = v;
    else {
      fprintf(stderr, "perfc-stream-load: bad option %s %s\n", argv[i],
              argv[i + 1]);
      return 2;
    }
  }
  if (target == NULL || argc % 2 == 0) {
    fprintf(stderr, "usage: perfc-stream-load --target HOST:PORT [--streams S] "
                    "[--window W] [--count N] [--payload BYTES] "
                    "[--connections C] [--threads-per-stream 1|2] "
                    "[--burst B]\n");
    return 2;
  }
  uint8_t *body = malloc((size_t)payload);
  stream_job *jobs = calloc((size_t)streams, sizeof *jobs);
  if (body == NULL || jobs == NULL)
    return 1;
  memset(body, 'x', (size_t)payload);
  Bench__V1__EchoRequest req = BENCH__V1__ECHO_REQUEST__INIT;
  req.payload.data = body;
  req.payload.len = (size_t)payload;

  perfc_channel_opts co;
  perfc_channel_opts_init(&co);
  co.connections = (unsigned)connections;
  perfc_channel *ch = NULL;
  int rc = perfc_channel_new(&ch, target, &co);
  if (rc != 0) {
    fprintf(stderr, "perfc-stream-load: %s\n", perfc_strerror(rc));
    return 1;
  }
  perfc_call_opts opts = {.timeout_ms = MAX_SECONDS * 1000, .wait_for_ready = 1};
  for (long i = 0; i < streams; i++) {
    stream_job *j = &jobs[i];
    j->ch = ch;
    j->req = &req;
    j->count = count;
    j->window_size = window;
    j->burst = burst > window ? window : burst;
    sem_init(&j->window, 0, (unsigned)window);
    rc = bench__v1__echo__stream__open(ch, &opts, &j->s);
    if (rc != 0) {
      fprintf(stderr, "perfc-stream-load: open: %s\n", perfc_strerror(rc));
      return 1;
    }
  }
  double c0 = cpu_seconds();
  int64_t t0 = now_ns();
  for (long i = 0; i < streams; i++) {
    if (per_stream == 1) {
      pthread_create(&jobs[i].reader, NULL, single_main, &jobs[i]);
      continue;
    }
    pthread_create(&jobs[i].reader, NULL, reader_main, &jobs[i]);
    pthread_create(&jobs[i].writer, NULL, writer_main, &jobs[i]);
  }
  long sent = 0, received = 0, bad = 0, failed_streams = 0;
  for (long i = 0; i < streams; i++) {
    stream_job *j = &jobs[i];
    if (per_stream == 2)
      pthread_join(j->writer, NULL);
    pthread_join(j->reader, NULL);
  }
  int64_t t1 = now_ns();
  double c1 = cpu_seconds();
  for (long i = 0; i < streams; i++) {
    stream_job *j = &jobs[i];
    perfc_status st = {0};
    j->code = perfc_client_stream_finish(j->s, NULL, &st);
    if (j->code != PERFC_STATUS_OK || j->received != count || j->send_rc) {
      failed_streams++;
      fprintf(stderr, "perfc-stream-load: stream %ld: status %d (%s), sent %ld "
                      "received %ld, send rc %d, recv rc %d\n",
              i, (int)j->code, st.message ? st.message : "", j->sent,
              j->received, j->send_rc, j->recv_rc);
    }
    perfc_status_reset(&st);
    sent += j->sent;
    received += j->received;
    bad += j->bad;
    perfc_client_stream_free(j->s);
    sem_destroy(&j->window);
  }
  double secs = (double)(t1 - t0) / 1e9;
  double cpu = c1 - c0;
  printf("streams=%ld threads_per_stream=%ld burst=%ld window=%ld payload=%ld sent=%ld received=%ld bad=%ld "
         "failed_streams=%ld seconds=%.3f msgs_per_s=%.0f client_cpu_s=%.3f "
         "client_cpu_us_per_msg=%.3f\n",
         streams, per_stream, burst, window, payload, sent, received, bad, failed_streams, secs,
         received / secs, cpu, received ? cpu * 1e6 / received : 0.0);
  perfc_channel_free(ch);
  free(jobs);
  free(body);
  return failed_streams == 0 && bad == 0 ? 0 : 1;
}
