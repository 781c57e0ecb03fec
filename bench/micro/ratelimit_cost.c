/*
 * ratelimit_cost.c — benchmark: what a shared (Redis) rate-limit decision
 * adds to a unary call, against no limit and a local limit, in one run on
 * one machine.
 *
 * Room: benchmarks (micro). Not built by CMake (bench/CMakeLists.txt belongs
 * to the benchmark suite); build by hand after building the runtime:
 *
 *   cc -O2 -I runtime/include -I build/runtime/wkt \
 *      bench/micro/ratelimit_cost.c -L build/lib -lperfc-data -lperfc \
 *      -lperfc-wkt -lprotobuf-c -Wl,-rpath,$PWD/build/lib \
 *      -o build/ratelimit_cost
 *   d=$(mktemp -d); (cd $d && redis-server --port 6392 --save '' \
 *       --appendonly no --daemonize yes)
 *   ./build/ratelimit_cost 6392 [calls=5000] [rounds=3]
 *   redis-cli -p 6392 shutdown nosave
 *
 * One perfc server (the default transport, h2) with an Empty method, one
 * channel, `calls` sequential unary calls with an x-api-key after 200
 * warm-up calls, per mode: none (no limiter), local (a keyed local rule),
 * shared (the same rule shared through Redis; its rate and burst are so
 * high that every call is admitted: the cost is the decision, not a
 * refusal). Modes alternate over `rounds`; it prints each round's
 * microseconds per call and the medians. Sequential calls make the
 * difference the latency a decision adds (about one Redis round trip, on
 * the loop that dispatches the call: docs/scaling.md).
 */
#include <perfc.h>
#include <perfc/ratelimit_redis.h>
#include <google/protobuf/empty.pb-c.h>

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static perfc_status_code ok_invoke(perfc_ctx *ctx, const void *h, void *ud,
                                   const ProtobufCMessage *req,
                                   ProtobufCMessage *resp, perfc_stream *s) {
  (void)ctx, (void)h, (void)ud, (void)req, (void)resp, (void)s;
  return PERFC_STATUS_OK;
}

static const perfc_method_desc methods[] = {
    {.name = "A", .path = "/bench.v1.R/A", .kind = PERFC_METHOD_UNARY,
     .input = &google__protobuf__empty__descriptor,
     .output = &google__protobuf__empty__descriptor, .invoke = ok_invoke}};
static const perfc_service_desc svc = {
    .name = "bench.v1.R", .n_methods = 1, .methods = methods};
static const struct {
  void *a;
} impl = {(void *)1};

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

enum { NONE, LOCAL, SHARED, NMODES };
static const char *const mode_names[] = {"none", "local", "shared"};

/* One round of one mode: microseconds per call, or -1 on a failure. */
static double run(int mode, int redis_port, int calls) {
  perfc_ratelimit_redis *store = NULL;
  perfc_ratelimit *rl = NULL;
  perfc_server *srv = NULL;
  perfc_channel *ch = NULL;
  double us = -1;
  int port;
  if (perfc_server_new(&srv, NULL) != 0 ||
      perfc_server_listen(srv, "127.0.0.1:0", &port) != 0 ||
      perfc_server_add_service(srv, &svc, &impl, NULL) != 0)
    goto out;
  if (mode != NONE) {
    perfc_redis_opts ro;
    perfc_redis_opts_init(&ro);
    ro.port = redis_port;
    ro.name = "ratelimit";
    perfc_ratelimit_redis_opts so;
    perfc_ratelimit_redis_opts_init(&so);
    so.redis = &ro;
    perfc_ratelimit_rule r = {.rate = 1e6, .burst = 1e9,
                              .key_metadata = "x-api-key",
                              .shared = mode == SHARED};
    perfc_ratelimit_opts o;
    perfc_ratelimit_opts_init(&o);
    o.rules = &r;
    o.rule_count = 1;
    if (perfc_ratelimit_redis_new(&store, &so) != 0)
      goto out;
    o.store = perfc_ratelimit_redis_store(store);
    if (perfc_ratelimit_new(&rl, &o) != 0 ||
        perfc_ratelimit_attach(rl, srv) != 0)
      goto out;
  }
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  if (perfc_server_start(srv) != 0 || perfc_channel_new(&ch, target, NULL))
    goto out;
  perfc_metadata md[] = {{"x-api-key", "bench", 0}};
  perfc_call_opts co = {
      .metadata = md, .metadata_count = 1, .wait_for_ready = 1};
  Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
  double t0 = 0;
  for (int i = 0; i < calls + 200; i++) {
    if (i == 200)
      t0 = now_s();
    ProtobufCMessage *resp = NULL;
    perfc_status_code c =
        perfc_channel_unary(ch, &methods[0], &req.base, &resp, &co, NULL);
    if (resp)
      protobuf_c_message_free_unpacked(resp, NULL);
    if (c != PERFC_STATUS_OK) {
      fprintf(stderr, "%s: call %d: %s\n", mode_names[mode], i,
              perfc_status_name(c));
      goto out;
    }
  }
  us = (now_s() - t0) / calls * 1e6;
  if (store != NULL) {
    perfc_ratelimit_redis_stats st;
    perfc_ratelimit_redis_stats_get(store, &st);
    /* A shared round the store did not decide measured the fallback. */
    if (mode == SHARED && st.decisions < (uint64_t)calls) {
      fprintf(stderr, "shared: Redis decided %llu of %d calls\n",
              (unsigned long long)st.decisions, calls);
      us = -1;
    }
  }
out:
  perfc_channel_free(ch);
  perfc_server_free(srv);
  perfc_ratelimit_free(rl);
  perfc_ratelimit_redis_free(store);
  return us;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s REDIS_PORT [calls=5000] [rounds=3]\n", argv[0]);
    return 2;
  }
  int port = atoi(argv[1]);
  int calls = argc > 2 ? atoi(argv[2]) : 5000;
  int rounds = argc > 3 ? atoi(argv[3]) : 3;
  if (calls < 1 || rounds < 1 || rounds > 32)
    return 2;
  double us[NMODES][32];
  for (int r = 0; r < rounds; r++)
    for (int k = 0; k < NMODES; k++) {
      int mode = (k + r) % NMODES; /* alternate which goes first */
      us[mode][r] = run(mode, port, calls);
      if (us[mode][r] < 0)
        return 1;
      printf("round %d %-6s %8.1f us/call\n", r + 1, mode_names[mode],
             us[mode][r]);
    }
  double med[NMODES];
  for (int m = 0; m < NMODES; m++) {
    qsort(us[m], (size_t)rounds, sizeof us[m][0], cmp);
    med[m] = us[m][rounds / 2];
  }
  printf("median us/call: none %.1f, local %.1f, shared %.1f; "
         "shared - local = %.1f us per decision\n",
         med[NONE], med[LOCAL], med[SHARED], med[SHARED] - med[LOCAL]);
  return 0;
}
