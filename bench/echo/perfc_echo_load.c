/*
 * perfc-echo-load — perfc's C client as a load generator: keeps N unary
 * calls in flight against bench.v1.Echo/Unary with the generated async stub
 * (echo__unary__call_async) and reports calls/s and latency percentiles.
 *
 * Room: bench/echo — built on the public perfc API as a user would; bench
 * scripts run it to measure the client side (issue: perfc's client driving
 * perfc-echo-server at 1, 16 and 256 calls in flight).
 *
 * Usage: perfc-echo-load --target HOST:PORT [--inflight N] [--count N]
 *                        [--payload BYTES] [--connections C]
 * Bounded: stops after --count calls (default 100000) or 120 s, whichever
 * comes first.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "perfc.h"

#include "echo.perfc.h"

#define MAX_SECONDS 120

typedef struct load {
  perfc_channel *ch;
  Bench__V1__EchoRequest req;
  long count;      /* calls to make in total */
  atomic_long started, done, failed;
  int64_t *lat_ns; /* one slot per call, indexed by start order */
  int64_t deadline_ns;
  pthread_mutex_t mu;
  pthread_cond_t cv;
} load;

typedef struct slot {
  load *l;
  long index;
  int64_t t0;
} slot;

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void start_one(slot *s);

/* Closed loop: every completion starts the next call from the same slot,
 * so exactly `inflight` calls are outstanding until the count is reached. */
static void on_done(perfc_status_code code, const char *message,
                    const ProtobufCMessage *resp, void *user_data) {
  (void)message;
  (void)resp;
  slot *s = user_data;
  load *l = s->l;
  l->lat_ns[s->index] = now_ns() - s->t0;
  if (code != PERFC_STATUS_OK)
    atomic_fetch_add(&l->failed, 1);
  long d = atomic_fetch_add(&l->done, 1) + 1;
  if (now_ns() < l->deadline_ns)
    start_one(s);
  pthread_mutex_lock(&l->mu);
  if (d >= atomic_load(&l->started))
    pthread_cond_signal(&l->cv);
  pthread_mutex_unlock(&l->mu);
}

static void start_one(slot *s) {
  load *l = s->l;
  long i = atomic_fetch_add(&l->started, 1);
  if (i >= l->count) {
    atomic_fetch_sub(&l->started, 1);
    return;
  }
  s->index = i;
  s->t0 = now_ns();
  perfc_call_opts opts = {.timeout_ms = 10000};
  if (bench__v1__echo__unary__call_async(l->ch, &l->req, &opts, on_done, s) != 0) {
    l->lat_ns[i] = 0;
    atomic_fetch_add(&l->failed, 1);
    atomic_fetch_add(&l->done, 1);
  }
}

/* The process's own CPU time (all threads), so a run can report what the
 * client itself cost per call. */
static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  const char *target = NULL;
  long inflight = 1, count = 100000, payload = 64, connections = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    char *end = NULL;
    long v = strtol(argv[i + 1], &end, 10);
    int num = *end == '\0' && v > 0;
    if (!strcmp(argv[i], "--target"))
      target = argv[i + 1];
    else if (!strcmp(argv[i], "--inflight") && num && v <= 100000)
      inflight = v;
    else if (!strcmp(argv[i], "--count") && num)
      count = v;
    else if (!strcmp(argv[i], "--payload") && num && v <= (1 << 20))
      payload = v;
    else if (!strcmp(argv[i], "--connections") && num && v <= 1024)
      connections = v;
    else {
      fprintf(stderr, "perfc-echo-load: bad option %s %s\n", argv[i], argv[i + 1]);
      return 2;
    }
  }
  if (target == NULL || argc % 2 == 0) {
    fprintf(stderr, "usage: perfc-echo-load --target HOST:PORT [--inflight N] "
                    "[--count N] [--payload BYTES] [--connections C]\n");
    return 2;
  }
  load l = {.count = count, .mu = PTHREAD_MUTEX_INITIALIZER,
            .cv = PTHREAD_COND_INITIALIZER};
  l.lat_ns = calloc((size_t)count, sizeof *l.lat_ns);
  uint8_t *body = malloc((size_t)payload);
  slot *slots = calloc((size_t)inflight, sizeof *slots);
  if (l.lat_ns == NULL || body == NULL || slots == NULL)
    return 1;
  memset(body, 'x', (size_t)payload);
  bench__v1__echo_request__init(&l.req);
  l.req.payload.data = body;
  l.req.payload.len = (size_t)payload;
  perfc_channel_opts co;
  perfc_channel_opts_init(&co);
  co.connections = (unsigned)connections;
  int rc = perfc_channel_new(&l.ch, target, &co);
  if (rc != 0) {
    fprintf(stderr, "perfc-echo-load: %s\n", perfc_strerror(rc));
    return 1;
  }
  /* One warm-up call so connection set-up is not in the numbers. */
  Bench__V1__EchoResponse *warm = NULL;
  perfc_call_opts wo = {.timeout_ms = 10000, .wait_for_ready = 1};
  if (bench__v1__echo__unary__call(l.ch, &l.req, &warm, &wo, NULL) != PERFC_STATUS_OK) {
    fprintf(stderr, "perfc-echo-load: warm-up call to %s failed\n", target);
    return 1;
  }
  protobuf_c_message_free_unpacked(&warm->base, NULL);

  double c0 = cpu_seconds();
  int64_t t0 = now_ns();
  l.deadline_ns = t0 + (int64_t)MAX_SECONDS * 1000000000;
  for (long i = 0; i < inflight; i++) {
    slots[i].l = &l;
    start_one(&slots[i]);
  }
  pthread_mutex_lock(&l.mu);
  while (atomic_load(&l.done) < atomic_load(&l.started) ||
         (atomic_load(&l.started) < count && now_ns() < l.deadline_ns)) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 1;
    pthread_cond_timedwait(&l.cv, &l.mu, &ts);
  }
  pthread_mutex_unlock(&l.mu);
  double secs = (double)(now_ns() - t0) / 1e9;
  double cpu = cpu_seconds() - c0;
  long done = atomic_load(&l.done);
  qsort(l.lat_ns, (size_t)done, sizeof *l.lat_ns, cmp_i64);
  double p50 = done ? (double)l.lat_ns[done / 2] / 1e3 : 0;
  double p99 = done ? (double)l.lat_ns[(done * 99) / 100] / 1e3 : 0;
  printf("inflight=%ld calls=%ld failed=%ld seconds=%.2f rps=%.0f p50_us=%.1f "
         "p99_us=%.1f client_cpu_us_per_call=%.2f\n",
         inflight, done, atomic_load(&l.failed), secs, done / secs, p50, p99,
         done ? cpu * 1e6 / (double)done : 0.0);
  perfc_channel_free(l.ch);
  free(l.lat_ns);
  free(body);
  free(slots);
  return atomic_load(&l.failed) == 0 ? 0 : 1;
}
