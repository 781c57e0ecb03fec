/*
 * resilience_overhead.c — what the reliability interceptors cost a unary
 * call end to end: Ping calls per second and process CPU microseconds per
 * call, with and without timeouts + two rate limits (global and per
 * method, set far above the load) + the shedder (limit far above the
 * load), in alternating runs so drift hits both sides alike.
 *
 * Room: benchmarks (micro). Not built by CMake; build by hand after
 * building the runtime and its tests' well-known types:
 *
 *   cc -O2 -pthread -D_GNU_SOURCE -I runtime/include -I build/runtime/wkt \
 *      -I tests/unit bench/micro/resilience_overhead.c \
 *      build/lib/libperfc.so.0.1.0 build/lib/libperfc-wkt.so.0 \
 *      -Wl,-rpath,$PWD/build/lib -lprotobuf-c $(pkg-config --libs grpc) \
 *      -o build/resilience_overhead
 *   ./build/resilience_overhead [pairs]
 *
 * Client and server share the process (4 synchronous client threads, one
 * poller, inline handler), so CPU per call counts both sides: the
 * interceptors' share of it is what changes between the columns.
 */
#include "empty_service.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#define CLIENTS 4
#define SECONDS 3

static perfc_channel *ch;
static atomic_int stop_flag;
static atomic_long calls;

static void *client(void *arg) {
  (void)arg;
  long n = 0;
  while (!atomic_load(&stop_flag))
    n += empty_call(ch, 0) == PERFC_STATUS_OK;
  atomic_fetch_add(&calls, n);
  return NULL;
}

static double cpu_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* One run; returns calls per second, and CPU microseconds per call. */
static double run(int with, double *cpu_us) {
  perfc_server *srv;
  int port;
  perfc_server_opts so;
  perfc_server_opts_init(&so);
  so.threads = 1;
  perfc_server_new(&srv, &so);
  perfc_server_listen(srv, "127.0.0.1:0", &port);
  perfc_server_add_service(srv, &empty_svc, &empty_impl, NULL);
  perfc_metrics_registry *reg;
  perfc_metrics_registry_new(&reg);
  perfc_ratelimit *rl = NULL;
  perfc_shedding *sh = NULL;
  perfc_timeouts *tm = NULL;
  if (with) {
    perfc_timeouts_opts to;
    perfc_timeouts_opts_init(&to);
    to.default_timeout_ms = 1000;
    perfc_timeouts_new(&tm, &to);
    perfc_timeouts_attach(tm, srv);
    perfc_ratelimit_rule r[] = {{.rate = 1e8},
                                {.method = "/t.v1.Svc/Ping", .rate = 1e8}};
    perfc_ratelimit_opts ro;
    perfc_ratelimit_opts_init(&ro);
    ro.registry = reg;
    ro.rules = r;
    ro.rule_count = 2;
    perfc_ratelimit_new(&rl, &ro);
    perfc_ratelimit_attach(rl, srv);
    perfc_shedding_opts o;
    perfc_shedding_opts_init(&o);
    o.registry = reg;
    o.min_limit = o.initial_limit = 1000;
    perfc_shedding_new(&sh, &o);
    perfc_shedding_attach(sh, srv);
  }
  perfc_server_start(srv);
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  perfc_channel_new(&ch, target, NULL);
  for (int i = 0; i < 200; i++)
    empty_call(ch, 0); /* connect and warm up */
  atomic_store(&stop_flag, 0);
  atomic_store(&calls, 0);
  double c0 = cpu_s();
  pthread_t th[CLIENTS];
  for (int i = 0; i < CLIENTS; i++)
    pthread_create(&th[i], NULL, client, NULL);
  struct timespec d = {SECONDS, 0};
  nanosleep(&d, NULL);
  atomic_store(&stop_flag, 1);
  for (int i = 0; i < CLIENTS; i++)
    pthread_join(th[i], NULL);
  double n = (double)atomic_load(&calls);
  *cpu_us = (cpu_s() - c0) * 1e6 / n;
  perfc_channel_free(ch);
  perfc_server_free(srv);
  perfc_ratelimit_free(rl);
  perfc_shedding_free(sh);
  perfc_timeouts_free(tm);
  perfc_metrics_registry_free(reg);
  return n / SECONDS;
}

int main(int argc, char **argv) {
  int pairs = argc > 1 ? atoi(argv[1]) : 5;
  printf("%-6s %12s %12s %10s %10s\n", "pair", "without/s", "with/s",
         "cpu us w/o", "cpu us w/");
  for (int k = 0; k < pairs; k++) {
    double a, b, ca, cb;
    if (k & 1) {
      b = run(1, &cb);
      a = run(0, &ca);
    } else {
      a = run(0, &ca);
      b = run(1, &cb);
    }
    printf("%-6d %12.0f %12.0f %10.1f %10.1f\n", k, a, b, ca, cb);
  }
  return 0;
}
