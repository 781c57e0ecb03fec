/* test_ratelimit_redis.c — perfc/ratelimit.h's shared rules with the Redis
 * store (data/ratelimit_redis.c) on a real redis-server on loopback: two
 * perfc servers, each with its own limiter, store and metrics registry (as
 * two replicas in two processes would have), share one bucket per rule,
 * method and key; exact counts, since the rate is 0.001/s and only the
 * burst counts during a test. Redis killed: each replica's local fallback
 * admits exactly its local burst and the metrics show the local path;
 * Redis stopped (SIGSTOP): a decision times out to the local path; Redis
 * restarted empty: NOSCRIPT is answered by a second SCRIPT LOAD and the
 * global path resumes.
 *
 * On h2 a shared rule's decision is deferred (perfc_ic_defer) and made with
 * the loop's asynchronous Redis client: with Redis frozen (SIGSTOP) and a
 * decision on A pending, calls to B on the same connection (the same
 * loop) are answered at once; the decision still falls back after the
 * timeout; a client that gives up (deadline, reset) or a server shutdown
 * while it is pending end cleanly (run these under ASan: build-asan).
 * Streams defer too: a server stream waiting for its decision holds no
 * loop, a client stream's messages sent meanwhile wait for the handler,
 * and a reset while it waits ends it cleanly. */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <google/protobuf/empty.pb-c.h>
#include "redis_server.h"
#include "test_transport.h" /* test_server_new: both transports */
#include <perfc.h>
#include <perfc/ratelimit_redis.h>

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

static perfc_status_code ok_invoke(perfc_ctx *ctx, const void *h, void *ud,
                                   const ProtobufCMessage *req,
                                   ProtobufCMessage *resp, perfc_stream *s) {
  (void)ctx, (void)h, (void)ud, (void)req, (void)resp, (void)s;
  return PERFC_STATUS_OK;
}

/* C, a server stream: three messages. */
static perfc_status_code three_invoke(perfc_ctx *ctx, const void *h, void *ud,
                                      const ProtobufCMessage *req,
                                      ProtobufCMessage *resp, perfc_stream *s) {
  (void)ctx, (void)h, (void)ud, (void)req, (void)resp;
  Google__Protobuf__Empty e = GOOGLE__PROTOBUF__EMPTY__INIT;
  for (int i = 0; i < 3; i++)
    if (perfc_stream_send(s, &e.base) != 0)
      return PERFC_STATUS_CANCELLED;
  return PERFC_STATUS_OK;
}

/* D, a client stream: counts its runs and the messages it read. */
static atomic_int d_runs, d_messages;
static perfc_status_code count_invoke(perfc_ctx *ctx, const void *h, void *ud,
                                      const ProtobufCMessage *req,
                                      ProtobufCMessage *resp, perfc_stream *s) {
  (void)ctx, (void)h, (void)ud, (void)req, (void)resp;
  atomic_fetch_add(&d_runs, 1);
  ProtobufCMessage *m;
  int rc;
  while ((rc = perfc_stream_recv(s, &m)) == 1)
    atomic_fetch_add(&d_messages, 1);
  return rc == 0 ? PERFC_STATUS_OK : PERFC_STATUS_CANCELLED;
}

/* E, a client stream with loop callbacks (h2 only): counts its starts
 * and messages; the half-close finishes it OK (no on_half_close). */
static atomic_int e_starts, e_messages;
static perfc_status_code e_start(perfc_ctx *ctx, perfc_stream *s,
                                 const ProtobufCMessage *req,
                                 ProtobufCMessage *resp, void **state) {
  (void)ctx, (void)s, (void)req, (void)resp, (void)state;
  atomic_fetch_add(&e_starts, 1);
  return PERFC_STATUS_OK;
}
static int e_message(perfc_stream *s, const ProtobufCMessage *msg,
                     void *state) {
  (void)s, (void)msg, (void)state;
  /* A message before the start would be a message lost to the handler. */
  return atomic_load(&e_starts) > 0 ? (atomic_fetch_add(&e_messages, 1), 0)
                                     : PERFC_EINVAL;
}
static const perfc_stream_callbacks e_callbacks = {.on_start = e_start,
                                                   .on_message = e_message};

#define MSG &google__protobuf__empty__descriptor
static const perfc_method_desc methods[] = {
    {.name = "A", .path = "/t.v1.R/A", .kind = PERFC_METHOD_UNARY,
     .input = MSG, .output = MSG, .invoke = ok_invoke},
    {.name = "B", .path = "/t.v1.R/B", .kind = PERFC_METHOD_UNARY,
     .input = MSG, .output = MSG, .invoke = ok_invoke},
    {.name = "C", .path = "/t.v1.R/C", .kind = PERFC_METHOD_SERVER_STREAM,
     .input = MSG, .output = MSG, .invoke = three_invoke},
    {.name = "D", .path = "/t.v1.R/D", .kind = PERFC_METHOD_CLIENT_STREAM,
     .input = MSG, .output = MSG, .invoke = count_invoke},
    {.name = "E", .path = "/t.v1.R/E", .kind = PERFC_METHOD_CLIENT_STREAM,
     .input = MSG, .output = MSG, .invoke = count_invoke},
};
static const perfc_service_desc svc = {
    .name = "t.v1.R", .n_methods = 5, .methods = methods};
static const struct {
  void *a, *b, *c, *d, *e;
} impl = {(void *)1, (void *)1, (void *)1, (void *)1, (void *)1};

/* One replica: its own registry, store, limiter, server and channel. */
typedef struct replica {
  perfc_metrics_registry *reg;
  perfc_ratelimit_redis *store;
  perfc_ratelimit *rl;
  perfc_server *srv;
  perfc_channel *ch;
} replica;

static test_redis redis;
static replica rep[2];
/* perfc_ratelimit_redis_opts.timeout_ms for the next start (0: default). */
static int64_t store_timeout_ms;
/* perfc_redis_opts.backoff_min_ms for the next start (0: default). */
static int64_t store_backoff_ms;
/* perfc_redis_opts.password for the next start (NULL: none). */
static const char *store_password;

static void replica_start(replica *r, const perfc_ratelimit_rule *rules,
                          size_t n) {
  cr_assert_eq(perfc_metrics_registry_new(&r->reg), 0);
  perfc_redis_opts ro;
  perfc_redis_opts_init(&ro);
  ro.port = redis.port;
  ro.registry = r->reg;
  ro.name = "ratelimit";
  ro.backoff_min_ms = store_backoff_ms;
  ro.password = store_password;
  perfc_ratelimit_redis_opts so;
  perfc_ratelimit_redis_opts_init(&so);
  so.redis = &ro;
  so.timeout_ms = store_timeout_ms;
  cr_assert_eq(perfc_ratelimit_redis_new(&r->store, &so), 0);
  perfc_ratelimit_opts o;
  perfc_ratelimit_opts_init(&o);
  o.registry = r->reg;
  o.rules = rules;
  o.rule_count = n;
  o.store = perfc_ratelimit_redis_store(r->store);
  cr_assert_eq(perfc_ratelimit_new(&r->rl, &o), 0, "%s", perfc_last_error());
  int port;
  cr_assert_eq(test_server_new(&r->srv, NULL), 0);
  cr_assert_eq(perfc_server_listen(r->srv, "127.0.0.1:0", &port), 0);
  cr_assert_eq(perfc_server_add_service(r->srv, &svc, &impl, NULL), 0);
  if (test_transport_is_h2())
    cr_assert_eq(perfc_server_set_stream_callbacks(r->srv, "/t.v1.R/E",
                                                   &e_callbacks, NULL),
                 0, "%s", perfc_last_error());
  cr_assert_eq(perfc_ratelimit_attach(r->rl, r->srv), 0);
  cr_assert_eq(perfc_server_start(r->srv), 0);
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  cr_assert_eq(perfc_channel_new(&r->ch, target, NULL), 0);
}

static void start(const perfc_ratelimit_rule *rules, size_t n) {
  cr_assert_eq(tr_start(&redis), 0, "redis-server did not start");
  replica_start(&rep[0], rules, n);
  replica_start(&rep[1], rules, n);
}

static void stop(void) {
  for (int i = 0; i < 2; i++) {
    perfc_channel_free(rep[i].ch);
    perfc_server_free(rep[i].srv);
    perfc_ratelimit_free(rep[i].rl);
    perfc_ratelimit_redis_free(rep[i].store);
    perfc_metrics_registry_free(rep[i].reg);
  }
  memset(rep, 0, sizeof rep);
  store_timeout_ms = 0;
  store_backoff_ms = 0;
  store_password = NULL;
  tr_stop(&redis);
}

/* Whether the last refusal said the local fallback decided it. */
static int last_refusal_local;

/* One call to method `m` on replica `r` with x-api-key `key` (NULL:
 * none). Only OK and RESOURCE_EXHAUSTED are acceptable: the limiter must
 * never fail a call because of Redis. */
static int call(int r, int m, const char *key) {
  perfc_metadata md[] = {{"x-api-key", key, 0}};
  perfc_call_opts o = {.metadata = md,
                       .metadata_count = key ? 1 : 0,
                       .wait_for_ready = 1,
                       .timeout_ms = 10000};
  Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
  ProtobufCMessage *resp = NULL;
  perfc_status st = {0};
  perfc_status_code c = perfc_channel_unary(rep[r].ch, &methods[m], &req.base,
                                            &resp, &o, &st);
  cr_assert(c == PERFC_STATUS_OK || c == PERFC_STATUS_RESOURCE_EXHAUSTED,
            "replica %d: %s %s", r, perfc_status_name(c),
            st.message ? st.message : "");
  if (c != PERFC_STATUS_OK) {
    cr_assert(st.message && strstr(st.message, "global rate limit"),
              "message: %s", st.message ? st.message : "(none)");
    last_refusal_local = strstr(st.message, "this replica's fallback") != NULL;
  }
  perfc_status_reset(&st);
  if (resp)
    protobuf_c_message_free_unpacked(resp, NULL);
  return c == PERFC_STATUS_OK;
}

/* `n` calls alternating between the replicas; admitted per replica in
 * got[0], got[1]; returns the total. */
static int spread(int m, const char *key, int n, int got[2]) {
  got[0] = got[1] = 0;
  for (int i = 0; i < n; i++)
    got[i % 2] += call(i % 2, m, key);
  return got[0] + got[1];
}

static uint64_t decisions(int r, const char *method, const char *path,
                          const char *decision) {
  perfc_metrics_family *f;
  static const char *const names[] = {"grpc_service", "grpc_method", "path",
                                      "decision"};
  perfc_metrics_family_opts mo;
  perfc_metrics_family_opts_init(&mo);
  mo.name = "perfc_ratelimit_shared_decisions_total";
  mo.help = "Decisions of shared (cross-replica) rate limits; path is global "
            "(the store decided) or local (the fallback bucket, the store "
            "failing), decision admitted or refused.";
  mo.label_names = names;
  mo.label_count = 4;
  cr_assert_eq(
      perfc_metrics_family_new(&f, rep[r].reg, PERFC_METRICS_COUNTER, &mo), 0);
  perfc_counter *c;
  const char *values[] = {"t.v1.R", method, path, decision};
  cr_assert_eq(perfc_counter_get(&c, f, values), 0);
  return perfc_counter_value(c);
}

#define SLOW 0.001 /* one token per 1000 s: only the burst counts */

Test(ratelimit_redis, two_replicas_share_one_bucket) {
  perfc_ratelimit_rule r[] = {{.method = "/t.v1.R/A", .rate = SLOW,
                               .burst = 20, .shared = 1}};
  start(r, 1);
  int got[2];
  cr_assert_eq(spread(0, NULL, 60, got), 20, "admitted %d + %d", got[0],
               got[1]);
  /* Alternating calls: both replicas took from the one bucket. */
  cr_assert_eq(got[0], 10);
  cr_assert_eq(got[1], 10);
  uint64_t ga = decisions(0, "A", "global", "admitted") +
                decisions(1, "A", "global", "admitted");
  uint64_t gr = decisions(0, "A", "global", "refused") +
                decisions(1, "A", "global", "refused");
  cr_assert_eq(ga, 20);
  cr_assert_eq(gr, 40);
  cr_assert_eq(decisions(0, "A", "local", "admitted") +
                   decisions(1, "A", "local", "admitted"),
               0);
  /* B has no rule. */
  cr_assert_eq(spread(1, NULL, 30, got), 30);
  stop();
}

Test(ratelimit_redis, per_key_and_per_method_buckets) {
  perfc_ratelimit_rule r[] = {
      {.method = "/t.v1.R/A", .rate = SLOW, .burst = 4, .shared = 1,
       .key_metadata = "x-api-key"},
      {.method = "/t.v1.R/B", .rate = SLOW, .burst = 7, .shared = 1},
  };
  start(r, 2);
  int got[2];
  cr_assert_eq(spread(0, "alice", 12, got), 4);
  cr_assert_eq(spread(0, "bob", 12, got), 4, "bob has his own bucket");
  cr_assert_eq(spread(0, "alice", 4, got), 0, "alice's is still empty");
  cr_assert_eq(spread(0, NULL, 12, got), 4, "no key: the empty key's bucket");
  cr_assert_eq(spread(1, "alice", 20, got), 7, "B: its own rule, unkeyed");
  stop();
}

Test(ratelimit_redis, peer_key_is_the_client_address) {
  /* Both replicas see the same client address (127.0.0.1, two
   * connections with different ports): one bucket. */
  perfc_ratelimit_rule r[] = {{.rate = SLOW, .burst = 6, .shared = 1,
                               .key_metadata = PERFC_RATELIMIT_KEY_PEER}};
  start(r, 1);
  int got[2];
  cr_assert_eq(spread(0, NULL, 10, got), 6);
  cr_assert_eq(spread(1, NULL, 4, got), 0, "the global rule covers B too");
  stop();
}

Test(ratelimit_redis, refill_on_redis_clock) {
  /* 4/s, burst 1: one call, then none (unless 250 ms pass between two
   * calls), then exactly one again after 600 ms (the bucket holds one
   * token at most). */
  perfc_ratelimit_rule r[] = {{.method = "/t.v1.R/A", .rate = 4, .burst = 1,
                               .shared = 1}};
  start(r, 1);
  cr_assert_eq(call(0, 0, NULL), 1);
  cr_assert_eq(call(1, 0, NULL), 0);
  tr_sleep_ms(600);
  cr_assert_eq(call(1, 0, NULL), 1);
  cr_assert_eq(call(0, 0, NULL), 0);
  stop();
}

Test(ratelimit_redis, redis_down_local_fallback_then_global_resumes) {
  perfc_ratelimit_rule r[] = {{.method = "/t.v1.R/A", .rate = SLOW,
                               .burst = 6, .shared = 1, .local_rate = SLOW,
                               .local_burst = 2}};
  start(r, 1);
  int got[2];
  cr_assert_eq(spread(0, NULL, 10, got), 6);
  tr_kill(&redis);
  /* Each replica alone: exactly its local burst, no call failed. */
  cr_assert_eq(spread(0, NULL, 10, got), 4);
  cr_assert_eq(got[0], 2);
  cr_assert_eq(got[1], 2);
  cr_assert(last_refusal_local, "a fallback refusal says so");
  for (int i = 0; i < 2; i++) {
    cr_assert_eq(decisions(i, "A", "local", "admitted"), 2);
    cr_assert_eq(decisions(i, "A", "local", "refused"), 3);
    perfc_ratelimit_redis_stats st;
    perfc_ratelimit_redis_stats_get(rep[i].store, &st);
    cr_assert_eq(st.errors, 5);
    cr_assert_eq(st.script_loads, 1);
  }
  /* Redis back, empty (no scripts, no buckets): after the pool's backoff
   * (1 s at most) the global path decides again, through a second SCRIPT
   * LOAD on NOSCRIPT. */
  cr_assert_eq(tr_restart(&redis), 0);
  tr_sleep_ms(1200);
  cr_assert_eq(spread(0, NULL, 10, got), 6, "admitted %d + %d", got[0],
               got[1]);
  cr_assert_not(last_refusal_local, "Redis decided again");
  for (int i = 0; i < 2; i++) {
    cr_assert_eq(decisions(i, "A", "global", "admitted"), 3 + 3);
    cr_assert_eq(decisions(i, "A", "local", "admitted"), 2);
    /* Scripts are the server's: replica 0 called first and got NOSCRIPT,
     * loaded it again, and replica 1's EVALSHA then found it. */
    perfc_ratelimit_redis_stats st;
    perfc_ratelimit_redis_stats_get(rep[i].store, &st);
    cr_assert_eq(st.script_loads, i == 0 ? 2u : 1u, "replica %d", i);
    cr_assert_eq(st.decisions, 10u);
  }
  stop();
}

Test(ratelimit_redis, stopped_redis_times_out_to_local) {
  perfc_ratelimit_rule r[] = {{.method = "/t.v1.R/A", .rate = SLOW,
                               .burst = 5, .shared = 1, .local_rate = SLOW,
                               .local_burst = 1}};
  start(r, 1);
  cr_assert_eq(call(0, 0, NULL), 1); /* connected, script loaded */
  kill(redis.pid, SIGSTOP);
  /* The connection is open but nothing answers: the 50 ms timeout, then
   * the local bucket (one token) decides. */
  cr_assert_eq(call(0, 0, NULL), 1);
  cr_assert_eq(call(0, 0, NULL), 0);
  kill(redis.pid, SIGCONT);
  cr_assert_eq(decisions(0, "A", "local", "admitted"), 1);
  cr_assert_eq(decisions(0, "A", "local", "refused"), 1);
  cr_assert_eq(decisions(0, "A", "global", "admitted"), 1);
  stop();
}

Test(ratelimit_redis, bad_options_refused) {
  perfc_ratelimit *rl = NULL;
  perfc_ratelimit_rule r[] = {{.rate = 10, .shared = 1}};
  perfc_ratelimit_opts o;
  perfc_ratelimit_opts_init(&o);
  o.rules = r;
  o.rule_count = 1;
  cr_assert_eq(perfc_ratelimit_new(&rl, &o), PERFC_EINVAL);
  cr_assert(strstr(perfc_last_error(), "no store"), "%s", perfc_last_error());
  perfc_ratelimit_redis *st = NULL;
  cr_assert_eq(perfc_ratelimit_redis_new(&st, NULL), 0);
  o.store = perfc_ratelimit_redis_store(st);
  r[0].local_rate = -1;
  cr_assert_eq(perfc_ratelimit_new(&rl, &o), PERFC_EINVAL);
  r[0].local_rate = 0;
  r[0].local_burst = 0.5;
  cr_assert_eq(perfc_ratelimit_new(&rl, &o), PERFC_EINVAL);
  r[0].local_burst = 0;
  r[0].rate = 2e6;
  cr_assert_eq(perfc_ratelimit_new(&rl, &o), PERFC_EINVAL);
  cr_assert(strstr(perfc_last_error(), "microseconds"), "%s",
            perfc_last_error());
  perfc_ratelimit_redis_opts so;
  perfc_ratelimit_redis_opts_init(&so);
  so.timeout_ms = -1;
  perfc_ratelimit_redis *bad = NULL;
  cr_assert_eq(perfc_ratelimit_redis_new(&bad, &so), PERFC_EINVAL);
  perfc_ratelimit_redis_free(st);
}

/* ---- decisions on the loop ------------------------------------------------- */

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t pending(int r) {
  perfc_ratelimit_redis_stats st;
  perfc_ratelimit_redis_stats_get(rep[r].store, &st);
  return st.pending;
}

/* Waits (bounded, 5 s) until replica r has `want` decisions pending. */
static int wait_pending(int r, uint64_t want) {
  for (int i = 0; i < 5000 && pending(r) != want; i++)
    tr_sleep_ms(1);
  return pending(r) == want;
}

/* A call made from another thread (no criterion asserts there). */
typedef struct bg_call {
  pthread_t t;
  int r, m;
  int64_t timeout_ms;
  perfc_status_code code;
  int64_t took_ms;
} bg_call;

static perfc_status_code plain_call(int r, int m, int64_t timeout_ms) {
  perfc_call_opts o = {.wait_for_ready = 1, .timeout_ms = timeout_ms};
  Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
  ProtobufCMessage *resp = NULL;
  perfc_status st = {0};
  perfc_status_code c = perfc_channel_unary(rep[r].ch, &methods[m], &req.base,
                                            &resp, &o, &st);
  perfc_status_reset(&st);
  if (resp)
    protobuf_c_message_free_unpacked(resp, NULL);
  return c;
}

static void *bg_main(void *arg) {
  bg_call *b = arg;
  int64_t t0 = now_ms();
  b->code = plain_call(b->r, b->m, b->timeout_ms);
  b->took_ms = now_ms() - t0;
  return NULL;
}

static void bg_start(bg_call *b, int r, int m, int64_t timeout_ms) {
  b->r = r;
  b->m = m;
  b->timeout_ms = timeout_ms;
  cr_assert_eq(pthread_create(&b->t, NULL, bg_main, b), 0);
}

static const perfc_ratelimit_rule frozen_rule[] = {
    {.method = "/t.v1.R/A", .rate = SLOW, .burst = 5, .shared = 1,
     .local_rate = SLOW, .local_burst = 1}};

Test(ratelimit_redis, frozen_redis_does_not_block_the_loop) {
  if (!test_transport_is_h2())
    cr_skip_test("the C core transport decides blocking, on its poller "
                 "(no loop to free)");
  store_timeout_ms = 1500;
  store_backoff_ms = 5000; /* the backoff check below cannot miss it */
  start(frozen_rule, 1);
  cr_assert_eq(call(0, 0, NULL), 1); /* connected, script loaded */
  kill(redis.pid, SIGSTOP);
  bg_call a;
  bg_start(&a, 0, 0, 10000);
  cr_assert(wait_pending(0, 1), "A's decision never went to Redis");
  /* B has no rule; same channel, same connection, same loop. The loop
   * must not be waiting for Redis: each B answers in far less than the
   * 1.5 s A's decision waits. */
  int64_t t0 = now_ms();
  for (int i = 0; i < 5; i++)
    cr_assert_eq(plain_call(0, 1, 5000), PERFC_STATUS_OK);
  int64_t took = now_ms() - t0;
  cr_assert_lt(took, 500, "5 calls to B took %lld ms while A waited for Redis",
               (long long)took);
  cr_assert_eq(pending(0), 1, "A was still waiting");
  pthread_join(a.t, NULL);
  /* The timeout, then the local bucket (one token) admitted A. */
  cr_assert_eq(a.code, PERFC_STATUS_OK);
  cr_assert_geq(a.took_ms, 1400);
  cr_assert_eq(decisions(0, "A", "local", "admitted"), 1);
  /* The store backs off: the next decision is local at once (refused:
   * the one local token is spent), no 1.5 s wait. */
  t0 = now_ms();
  cr_assert_eq(call(0, 0, NULL), 0);
  cr_assert(last_refusal_local);
  cr_assert_lt(now_ms() - t0, 500);
  kill(redis.pid, SIGCONT);
  perfc_ratelimit_redis_stats st;
  perfc_ratelimit_redis_stats_get(rep[0].store, &st);
  cr_assert_eq(st.errors, 2);
  cr_assert_eq(st.decisions, 1);
  stop();
}

Test(ratelimit_redis, deadline_while_decision_pending) {
  store_timeout_ms = 1000;
  start(frozen_rule, 1);
  cr_assert_eq(call(0, 0, NULL), 1);
  kill(redis.pid, SIGSTOP);
  int64_t t0 = now_ms();
  cr_assert_eq(plain_call(0, 0, 200), PERFC_STATUS_DEADLINE_EXCEEDED);
  int64_t took = now_ms() - t0;
  if (test_transport_is_h2())
    cr_assert_lt(took, 800, "the deadline was answered after %lld ms",
                 (long long)took);
  /* The decision comes back at the timeout and only ends the call. */
  cr_assert(wait_pending(0, 0));
  kill(redis.pid, SIGCONT);
  cr_assert_eq(plain_call(0, 1, 5000), PERFC_STATUS_OK);
  stop();
}

Test(ratelimit_redis, client_reset_while_decision_pending) {
  if (!test_transport_is_h2())
    cr_skip_test("the C core transport decides blocking, on its poller");
  store_timeout_ms = 1000;
  start(frozen_rule, 1);
  cr_assert_eq(call(0, 0, NULL), 1);
  kill(redis.pid, SIGSTOP);
  perfc_call_opts o = {.wait_for_ready = 1, .timeout_ms = 10000};
  Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
  perfc_client_stream *s;
  cr_assert_eq(
      perfc_channel_stream_open(rep[0].ch, &methods[0], &req.base, &o, &s), 0);
  cr_assert(wait_pending(0, 1));
  perfc_client_stream_cancel(s); /* RST_STREAM */
  cr_assert_eq(perfc_client_stream_finish(s, NULL, NULL),
               PERFC_STATUS_CANCELLED);
  perfc_client_stream_free(s);
  cr_assert(wait_pending(0, 0));
  kill(redis.pid, SIGCONT);
  cr_assert_eq(plain_call(0, 1, 5000), PERFC_STATUS_OK);
  stop();
}

Test(ratelimit_redis, shutdown_with_decisions_pending) {
  store_timeout_ms = 1000;
  start(frozen_rule, 1);
  cr_assert_eq(call(0, 0, NULL), 1);
  kill(redis.pid, SIGSTOP);
  bg_call a[3];
  for (int i = 0; i < 3; i++)
    bg_start(&a[i], 0, 0, 10000);
  if (test_transport_is_h2())
    cr_assert(wait_pending(0, 3));
  else
    /* The C core's blocking decision counts nothing pending: the three
     * calls get 300 ms to reach it (its pollers then block in it). */
    tr_sleep_ms(300);
  int64_t t0 = now_ms();
  perfc_server_shutdown(rep[0].srv, 50);
  int64_t took = now_ms() - t0;
  /* The shutdown waits for the decisions (the 1 s timeout), no more. */
  cr_assert_lt(took, 4000, "shutdown took %lld ms", (long long)took);
  for (int i = 0; i < 3; i++)
    pthread_join(a[i].t, NULL);
  cr_assert_eq(pending(0), 0);
  kill(redis.pid, SIGCONT);
  stop();
}

/* ---- streams' decisions on the loop ---------------------------------------- */

/* Opens C (server stream) on replica r; perfc_client_stream_free() it. */
static perfc_client_stream *open_c(int r, int64_t timeout_ms) {
  perfc_call_opts o = {.wait_for_ready = 1, .timeout_ms = timeout_ms};
  Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
  perfc_client_stream *s;
  cr_assert_eq(
      perfc_channel_stream_open(rep[r].ch, &methods[2], &req.base, &o, &s), 0);
  return s;
}

/* Reads C to its end: the status, the messages in *n, the message. */
static perfc_status_code drain_c(perfc_client_stream *s, int *n,
                                 char *msg, size_t msg_len) {
  ProtobufCMessage *m;
  *n = 0;
  while (perfc_client_stream_recv(s, &m) == 1)
    (*n)++;
  perfc_status st = {0};
  perfc_status_code c = perfc_client_stream_finish(s, NULL, &st);
  snprintf(msg, msg_len, "%s", st.message ? st.message : "");
  perfc_status_reset(&st);
  perfc_client_stream_free(s);
  return c;
}

static const perfc_ratelimit_rule stream_rules[] = {
    {.method = "/t.v1.R/C", .rate = SLOW, .burst = 3, .shared = 1,
     .local_rate = SLOW, .local_burst = 1},
    {.method = "/t.v1.R/D", .rate = SLOW, .burst = 2, .shared = 1,
     .local_rate = SLOW, .local_burst = 1},
    {.method = "/t.v1.R/E", .rate = SLOW, .burst = 2, .shared = 1,
     .local_rate = SLOW, .local_burst = 1}};

Test(ratelimit_redis, streams_share_the_bucket_and_are_refused) {
  start(stream_rules, 3);
  char msg[256];
  int n;
  /* C's burst of 3, across both replicas: the fourth stream is refused
   * before its handler runs (no message), whichever path decided. */
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(drain_c(open_c(i % 2, 10000), &n, msg, sizeof msg),
                 PERFC_STATUS_OK, "stream %d: %s", i, msg);
    cr_assert_eq(n, 3);
  }
  cr_assert_eq(drain_c(open_c(1, 10000), &n, msg, sizeof msg),
               PERFC_STATUS_RESOURCE_EXHAUSTED);
  cr_assert_eq(n, 0);
  cr_assert(strstr(msg, "global rate limit"), "message: %s", msg);
  cr_assert_eq(decisions(0, "C", "global", "admitted") +
                   decisions(1, "C", "global", "admitted"),
               3);
  cr_assert_eq(decisions(1, "C", "global", "refused"), 1);
  stop();
}

Test(ratelimit_redis, frozen_redis_does_not_block_the_loop_for_streams) {
  if (!test_transport_is_h2())
    cr_skip_test("the C core transport decides blocking, on its poller");
  store_timeout_ms = 1500;
  store_backoff_ms = 5000;
  start(stream_rules, 3);
  char msg[256];
  int n;
  cr_assert_eq(drain_c(open_c(0, 10000), &n, msg, sizeof msg),
               PERFC_STATUS_OK, "%s", msg); /* connected, script loaded */
  kill(redis.pid, SIGSTOP);
  int64_t t0 = now_ms();
  perfc_client_stream *s = open_c(0, 10000);
  cr_assert(wait_pending(0, 1), "C's decision never went to Redis");
  /* B, on the same connection and loop, is answered while C waits (the
   * blocking decision held the loop for the whole 1.5 s). */
  int64_t b0 = now_ms();
  for (int i = 0; i < 5; i++)
    cr_assert_eq(plain_call(0, 1, 5000), PERFC_STATUS_OK);
  int64_t took = now_ms() - b0;
  cr_assert_lt(took, 500, "5 calls to B took %lld ms while C waited for Redis",
               (long long)took);
  cr_assert_eq(pending(0), 1, "C was still waiting");
  /* The timeout, then the local bucket (one token) admitted C. */
  cr_assert_eq(drain_c(s, &n, msg, sizeof msg), PERFC_STATUS_OK, "%s", msg);
  cr_assert_eq(n, 3);
  cr_assert_geq(now_ms() - t0, 1400);
  cr_assert_eq(decisions(0, "C", "local", "admitted"), 1);
  kill(redis.pid, SIGCONT);
  stop();
}

Test(ratelimit_redis, client_stream_messages_wait_for_the_decision) {
  if (!test_transport_is_h2())
    cr_skip_test("the C core transport decides blocking, on its poller");
  store_timeout_ms = 5000;
  start(stream_rules, 3);
  atomic_store(&d_runs, 0);
  atomic_store(&d_messages, 0);
  kill(redis.pid, SIGSTOP);
  perfc_call_opts o = {.wait_for_ready = 1, .timeout_ms = 10000};
  perfc_client_stream *s;
  cr_assert_eq(perfc_channel_stream_open(rep[0].ch, &methods[3], NULL, &o, &s),
               0);
  cr_assert(wait_pending(0, 1), "D's decision never went to Redis");
  /* Sent while the decision waits: the transport holds them for the
   * handler, which has not run. */
  Google__Protobuf__Empty e = GOOGLE__PROTOBUF__EMPTY__INIT;
  for (int i = 0; i < 5; i++)
    cr_assert_eq(perfc_client_stream_send(s, &e.base), 0);
  cr_assert_eq(perfc_client_stream_close_send(s), 0);
  tr_sleep_ms(100);
  cr_assert_eq(atomic_load(&d_runs), 0, "D's handler ran before its decision");
  /* Redis answers (the global bucket admits): every message arrives. */
  kill(redis.pid, SIGCONT);
  perfc_status st = {0};
  cr_assert_eq(perfc_client_stream_finish(s, NULL, &st), PERFC_STATUS_OK, "%s",
               st.message ? st.message : "");
  perfc_status_reset(&st);
  perfc_client_stream_free(s);
  cr_assert_eq(atomic_load(&d_runs), 1);
  cr_assert_eq(atomic_load(&d_messages), 5);
  cr_assert_eq(decisions(0, "D", "global", "admitted"), 1);
  stop();
}

/* The same with loop callbacks: the messages (or the bare half-close)
 * sent while the decision waits reach the callbacks after on_start, in
 * order, none lost. */
Test(ratelimit_redis, loop_stream_messages_wait_for_the_decision) {
  if (!test_transport_is_h2())
    cr_skip_test("loop callbacks need the h2 transport");
  store_timeout_ms = 5000;
  start(stream_rules, 3);
  atomic_store(&e_starts, 0);
  atomic_store(&e_messages, 0);
  kill(redis.pid, SIGSTOP);
  perfc_call_opts o = {.wait_for_ready = 1, .timeout_ms = 10000};
  perfc_client_stream *s, *bare;
  cr_assert_eq(perfc_channel_stream_open(rep[0].ch, &methods[4], NULL, &o, &s),
               0);
  cr_assert(wait_pending(0, 1), "E's decision never went to Redis");
  Google__Protobuf__Empty e = GOOGLE__PROTOBUF__EMPTY__INIT;
  for (int i = 0; i < 5; i++)
    cr_assert_eq(perfc_client_stream_send(s, &e.base), 0);
  cr_assert_eq(perfc_client_stream_close_send(s), 0);
  /* A second stream that only half-closes while it waits. */
  cr_assert_eq(
      perfc_channel_stream_open(rep[0].ch, &methods[4], NULL, &o, &bare), 0);
  cr_assert(wait_pending(0, 2), "the second E's decision never went out");
  cr_assert_eq(perfc_client_stream_close_send(bare), 0);
  tr_sleep_ms(100);
  cr_assert_eq(atomic_load(&e_starts), 0, "E started before its decision");
  kill(redis.pid, SIGCONT);
  perfc_status st = {0};
  cr_assert_eq(perfc_client_stream_finish(s, NULL, &st), PERFC_STATUS_OK, "%s",
               st.message ? st.message : "");
  perfc_status_reset(&st);
  cr_assert_eq(perfc_client_stream_finish(bare, NULL, &st), PERFC_STATUS_OK,
               "%s", st.message ? st.message : "");
  perfc_status_reset(&st);
  perfc_client_stream_free(s);
  perfc_client_stream_free(bare);
  cr_assert_eq(atomic_load(&e_starts), 2);
  cr_assert_eq(atomic_load(&e_messages), 5);
  cr_assert_eq(decisions(0, "E", "global", "admitted"), 2);
  stop();
}

Test(ratelimit_redis, stream_reset_while_decision_pending) {
  if (!test_transport_is_h2())
    cr_skip_test("the C core transport decides blocking, on its poller");
  store_timeout_ms = 1000;
  start(stream_rules, 3);
  char msg[256];
  int n;
  cr_assert_eq(drain_c(open_c(0, 10000), &n, msg, sizeof msg),
               PERFC_STATUS_OK, "%s", msg);
  kill(redis.pid, SIGSTOP);
  perfc_client_stream *s = open_c(0, 10000);
  cr_assert(wait_pending(0, 1));
  perfc_client_stream_cancel(s); /* RST_STREAM */
  cr_assert_eq(drain_c(s, &n, msg, sizeof msg), PERFC_STATUS_CANCELLED);
  cr_assert_eq(n, 0);
  /* The decision comes back at the timeout and only ends the call. */
  cr_assert(wait_pending(0, 0));
  kill(redis.pid, SIGCONT);
  cr_assert_eq(plain_call(0, 1, 5000), PERFC_STATUS_OK);
  stop();
}

Test(ratelimit_redis, noscript_after_script_flush) {
  perfc_ratelimit_rule r[] = {{.method = "/t.v1.R/A", .rate = SLOW,
                               .burst = 4, .shared = 1}};
  start(r, 1);
  int got[2];
  cr_assert_eq(spread(0, NULL, 2, got), 2);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "redis-cli -p %d SCRIPT FLUSH", redis.port);
  FILE *f = popen(cmd, "r");
  cr_assert_not_null(f);
  char out[64] = "";
  cr_assert_not_null(fgets(out, sizeof out, f));
  pclose(f);
  cr_assert(strncmp(out, "OK", 2) == 0, "SCRIPT FLUSH: %s", out);
  /* Replica 0 meets NOSCRIPT, loads the script again and retries; the
   * bucket survived the flush (2 of 4 taken). */
  cr_assert_eq(spread(0, NULL, 6, got), 2, "admitted %d + %d", got[0], got[1]);
  cr_assert_not(last_refusal_local, "Redis decided");
  perfc_ratelimit_redis_stats st;
  perfc_ratelimit_redis_stats_get(rep[0].store, &st);
  cr_assert_eq(st.script_loads, 2);
  cr_assert_eq(st.errors, 0);
  perfc_ratelimit_redis_stats_get(rep[1].store, &st);
  cr_assert_eq(st.errors, 0);
  cr_assert_eq(decisions(0, "A", "global", "admitted") +
                   decisions(1, "A", "global", "admitted"),
               4);
  stop();
}

Test(ratelimit_redis, password_reaches_the_loops_client) {
  /* The loops' client takes the pool's AUTH: with requirepass, decisions
   * are still Redis's (none fell back). */
  static const char *const extra[] = {"--requirepass", "rl-secret", NULL};
  cr_assert_eq(tr_start_args(&redis, extra), 0, "redis-server did not start");
  store_password = "rl-secret";
  perfc_ratelimit_rule r[] = {{.method = "/t.v1.R/A", .rate = SLOW,
                               .burst = 3, .shared = 1}};
  replica_start(&rep[0], r, 1);
  replica_start(&rep[1], r, 1);
  int got[2];
  cr_assert_eq(spread(0, NULL, 8, got), 3, "admitted %d + %d", got[0], got[1]);
  cr_assert_not(last_refusal_local, "Redis decided");
  for (int i = 0; i < 2; i++) {
    perfc_ratelimit_redis_stats st;
    perfc_ratelimit_redis_stats_get(rep[i].store, &st);
    cr_assert_eq(st.errors, 0, "replica %d", i);
    cr_assert_eq(st.decisions, 4, "replica %d", i);
  }
  stop();
}
