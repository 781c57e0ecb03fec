/*
 * metrics_stress.c — a criterion-free stress driver for the metrics module,
 * meant to run under ThreadSanitizer. Criterion itself aborts at start-up
 * under TSan ("Could not initialize inheritable arena", Snaipe/Criterion
 * issue #274), so the unit tests cannot be TSan'd directly; this repeats
 * their concurrent parts with plain asserts.
 *
 * Room: benchmarks (micro). Not built by CMake. With a TSan build of the
 * runtime (cmake -B build-tsan -DPERFC_SANITIZE=thread):
 *
 *   cc -O1 -g -fsanitize=thread -pthread -I runtime/include \
 *      bench/micro/metrics_stress.c -L build-tsan/lib -lperfc \
 *      -Wl,-rpath,$PWD/build-tsan/lib -o build-tsan/metrics_stress
 *   ./build-tsan/metrics_stress
 *
 * It exits 0 and prints "ok" when every total is exact.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "perfc/metrics.h"
#include "perfc/metrics_http.h"
#include "perfc/process_metrics.h"

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      exit(1);                                                                 \
    }                                                                          \
  } while (0)

#define WORKERS 4
#define ROUNDS 50
#define PER_THREAD 20000

static perfc_metrics_registry *reg;
static perfc_metrics_family *fam;
static perfc_counter *hits;
static perfc_histogram *lat;
static perfc_gauge *inflight;
static int port;
static atomic_int stop_scrape;
static atomic_int scrapes;

static void *worker(void *arg) {
  long idx = (long)arg;
  /* Resolve a per-thread series too: registration under contention. */
  char v[16];
  snprintf(v, sizeof v, "w%ld", idx % 3);
  perfc_counter *mine;
  CHECK(perfc_counter_get(&mine, fam, (const char *const[]){v}) == 0);
  for (int i = 0; i < PER_THREAD; i++) {
    perfc_gauge_inc(inflight);
    perfc_counter_inc(hits);
    perfc_counter_inc(mine);
    perfc_histogram_observe(lat, (i % 100) * 0.001);
    perfc_gauge_dec(inflight);
  }
  return NULL;
}

static void scrape_http(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {0};
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CHECK(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
  const char req[] = "GET /metrics HTTP/1.0\r\n\r\n";
  CHECK(write(fd, req, sizeof req - 1) == (ssize_t)(sizeof req - 1));
  char buf[8192];
  size_t len = 0;
  ssize_t r;
  while ((r = read(fd, buf + len, sizeof buf - 1 - len)) > 0)
    len += (size_t)r;
  buf[len] = '\0';
  close(fd);
  CHECK(strncmp(buf, "HTTP/1.1 200", 12) == 0);
}

static void *scraper(void *arg) {
  (void)arg;
  uint64_t last = 0;
  while (!stop_scrape) {
    uint64_t v = perfc_counter_value(hits);
    CHECK(v >= last);
    last = v;
    /* set() races with the workers' inc/dec pairs: each thread's delta
     * since the set is -1, 0 or +1. */
    perfc_gauge_set(inflight, 1000);
    double g = perfc_gauge_value(inflight);
    CHECK(g >= 1000 - WORKERS && g <= 1000 + WORKERS);
    scrape_http();
    scrapes++;
  }
  return NULL;
}

int main(void) {
  CHECK(perfc_metrics_registry_new(&reg) == 0);
  CHECK(perfc_process_metrics_register(reg) == 0);
  CHECK(perfc_counter_new(&hits, reg, "hits_total", "Hits.") == 0);
  CHECK(perfc_histogram_new(&lat, reg, "lat_seconds", "Latency.", NULL, 0) ==
        0);
  CHECK(perfc_gauge_new(&inflight, reg, "inflight", "In flight.") == 0);
  const char *ln[] = {"worker"};
  perfc_metrics_family_opts o;
  perfc_metrics_family_opts_init(&o);
  o.name = "worker_hits_total";
  o.help = "Per worker.";
  o.label_names = ln;
  o.label_count = 1;
  CHECK(perfc_metrics_family_new(&fam, reg, PERFC_METRICS_COUNTER, &o) == 0);

  perfc_metrics_http_opts ho;
  perfc_metrics_http_opts_init(&ho);
  ho.addr = "127.0.0.1:0";
  ho.registry = reg;
  perfc_metrics_http *h;
  CHECK(perfc_metrics_http_start(&h, &ho) == 0);
  port = perfc_metrics_http_port(h);

  pthread_t s;
  CHECK(pthread_create(&s, NULL, scraper, NULL) == 0);
  /* Threads come and go while the scraper renders over HTTP. */
  for (int round = 0; round < ROUNDS; round++) {
    pthread_t t[WORKERS];
    for (long i = 0; i < WORKERS; i++)
      CHECK(pthread_create(&t[i], NULL, worker,
                           (void *)(round * WORKERS + i)) == 0);
    for (int i = 0; i < WORKERS; i++)
      pthread_join(t[i], NULL);
  }
  stop_scrape = 1;
  pthread_join(s, NULL);

  uint64_t total = (uint64_t)ROUNDS * WORKERS * PER_THREAD, n;
  CHECK(perfc_counter_value(hits) == total);
  perfc_histogram_value(lat, &n, NULL);
  CHECK(n == total);
  perfc_gauge_set(inflight, 0);
  CHECK(perfc_gauge_value(inflight) == 0);
  perfc_gauge_inc(inflight);
  CHECK(perfc_gauge_value(inflight) == 1);
  uint64_t per = 0;
  for (int i = 0; i < 3; i++) {
    char v[16];
    snprintf(v, sizeof v, "w%d", i);
    perfc_counter *c;
    CHECK(perfc_counter_get(&c, fam, (const char *const[]){v}) == 0);
    per += perfc_counter_value(c);
  }
  CHECK(per == total);
  perfc_metrics_http_stop(h);
  perfc_metrics_registry_free(reg);
  printf("ok: %llu increments exact under %d concurrent scrapes\n",
         (unsigned long long)total, (int)scrapes);
  return 0;
}
