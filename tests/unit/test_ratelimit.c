/* test_ratelimit.c — runtime/src/guard/ratelimit.c on a real server with a
 * controllable clock: exact admitted/refused counts for a token bucket
 * (burst, refill, cap), per-method and per-service rules, one bucket per
 * API key with LRU eviction, tokens given back when a later rule refuses,
 * the refusal message and the rejected counter. */
#include <google/protobuf/empty.pb-c.h>
#include "test_transport.h" /* test_server_new: both transports */
#include <perfc.h>

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

static _Atomic int64_t fake_now = 1000000000000LL;
static int64_t clock_fn(void *ud) {
  (void)ud;
  return atomic_load(&fake_now);
}
static void advance_ms(int64_t ms) {
  atomic_fetch_add(&fake_now, ms * 1000000);
}

static perfc_status_code ok_invoke(perfc_ctx *ctx, const void *h, void *ud,
                                   const ProtobufCMessage *req,
                                   ProtobufCMessage *resp, perfc_stream *s) {
  (void)ctx, (void)h, (void)ud, (void)req, (void)resp, (void)s;
  return PERFC_STATUS_OK;
}

#define MSG &google__protobuf__empty__descriptor
static const perfc_method_desc methods[] = {
    {.name = "A",
     .path = "/t.v1.R/A",
     .kind = PERFC_METHOD_UNARY,
     .input = MSG,
     .output = MSG,
     .invoke = ok_invoke},
    {.name = "B",
     .path = "/t.v1.R/B",
     .kind = PERFC_METHOD_UNARY,
     .input = MSG,
     .output = MSG,
     .invoke = ok_invoke},
};
static const perfc_service_desc svc = {
    .name = "t.v1.R", .n_methods = 2, .methods = methods};
static const struct {
  void *a, *b;
} impl = {(void *)1, (void *)1}; /* non-NULL: both methods have handlers */

static perfc_metrics_registry *reg;
static perfc_ratelimit *rl;
static perfc_server *srv;
static perfc_channel *ch;

static void start(perfc_ratelimit_rule *rules, size_t n, unsigned max_keys) {
  perfc_ratelimit_opts o;
  perfc_ratelimit_opts_init(&o);
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  o.registry = reg;
  o.rules = rules;
  o.rule_count = n;
  o.max_keys = max_keys;
  o.clock = clock_fn;
  cr_assert_eq(perfc_ratelimit_new(&rl, &o), 0);
  int port;
  cr_assert_eq(test_server_new(&srv, NULL), 0);
  cr_assert_eq(perfc_server_listen(srv, "127.0.0.1:0", &port), 0);
  cr_assert_eq(perfc_server_add_service(srv, &svc, &impl, NULL), 0);
  cr_assert_eq(perfc_ratelimit_attach(rl, srv), 0);
  cr_assert_eq(perfc_server_start(srv), 0);
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  cr_assert_eq(perfc_channel_new(&ch, target, NULL), 0);
}

static void stop(void) {
  perfc_channel_free(ch);
  perfc_server_free(srv);
  perfc_ratelimit_free(rl);
  perfc_metrics_registry_free(reg);
}

/* Calls method `idx` with x-api-key `key` (NULL: none); the status message
 * goes to `msg` when not NULL. */
static perfc_status_code call(int idx, const char *key, char *msg, size_t len) {
  perfc_metadata md[] = {{"x-api-key", key, 0}};
  /* wait_for_ready: a slow first connect (TSan) must not look like a refusal.
   */
  perfc_call_opts o = {
      .metadata = md, .metadata_count = key ? 1 : 0, .wait_for_ready = 1};
  Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
  ProtobufCMessage *resp = NULL;
  perfc_status st = {0};
  perfc_status_code c =
      perfc_channel_unary(ch, &methods[idx], &req.base, &resp, &o, &st);
  if (msg)
    snprintf(msg, len, "%s", st.message ? st.message : "");
  perfc_status_reset(&st);
  if (resp)
    protobuf_c_message_free_unpacked(resp, NULL);
  return c;
}

/* Calls until the first refusal (at most `max`); returns the OK count. The
 * call that stopped it must be a refusal, not a transport failure. */
static int admitted(int idx, const char *key, int max) {
  int n = 0;
  perfc_status_code c = PERFC_STATUS_OK;
  char msg[256] = "";
  while (n < max && (c = call(idx, key, msg, sizeof msg)) == PERFC_STATUS_OK)
    n++;
  cr_assert(n == max || c == PERFC_STATUS_RESOURCE_EXHAUSTED,
            "after %d calls: %s %s", n, perfc_status_name(c), msg);
  return n;
}

static uint64_t rejected(const char *method, const char *scope) {
  perfc_metrics_family *f;
  static const char *const names[] = {"grpc_service", "grpc_method", "scope"};
  perfc_metrics_family_opts mo;
  perfc_metrics_family_opts_init(&mo);
  mo.name = "perfc_ratelimit_rejected_total";
  mo.help = "Calls refused with RESOURCE_EXHAUSTED by a rate limit; scope "
            "is global, service or method.";
  mo.label_names = names;
  mo.label_count = 3;
  cr_assert_eq(perfc_metrics_family_new(&f, reg, PERFC_METRICS_COUNTER, &mo),
               0);
  perfc_counter *c;
  const char *values[] = {"t.v1.R", method, scope};
  cr_assert_eq(perfc_counter_get(&c, f, values), 0);
  return perfc_counter_value(c);
}

Test(ratelimit, global_bucket_exact_counts) {
  perfc_ratelimit_rule r[] = {{.rate = 10, .burst = 5}};
  start(r, 1, 0);
  char msg[256];
  cr_assert_eq(admitted(0, NULL, 100), 5, "a full bucket admits the burst");
  cr_assert_eq(call(1, NULL, msg, sizeof msg), PERFC_STATUS_RESOURCE_EXHAUSTED,
               "the global bucket is shared by every method");
  cr_assert_str_eq(msg, "rate limit of 10/s (burst 5) shared by all methods "
                        "exceeded for /t.v1.R/B");
  advance_ms(100);
  cr_assert_eq(admitted(0, NULL, 100), 1, "one token per 100 ms at 10/s");
  advance_ms(250);
  cr_assert_eq(admitted(0, NULL, 100), 2, "2.5 tokens: two whole ones");
  advance_ms(10000);
  cr_assert_eq(admitted(1, NULL, 100), 5, "refill stops at the burst");
  cr_assert_eq(rejected("A", "global"), 3);
  cr_assert_eq(rejected("B", "global"), 2);
  stop();
}

Test(ratelimit, per_method_and_per_service_rules) {
  perfc_ratelimit_rule r[] = {
      {.method = "/t.v1.R/A", .rate = 2},  /* burst defaults to 2 */
      {.method = "/t.v1.R/", .rate = 0.5}, /* burst 1, per method */
  };
  start(r, 2, 0);
  char msg[256];
  cr_assert_eq(admitted(0, NULL, 100), 1, "A: the service rule's burst of 1");
  cr_assert_eq(call(0, NULL, msg, sizeof msg), PERFC_STATUS_RESOURCE_EXHAUSTED);
  cr_assert_str_eq(msg, "rate limit of 0.5/s (burst 1) exceeded for /t.v1.R/A");
  cr_assert_eq(admitted(1, NULL, 100), 1, "B has its own service-rule bucket");
  advance_ms(2000);
  cr_assert_eq(admitted(0, NULL, 100), 1);
  /* Each admitted() ends on one refusal, plus the explicit call. */
  cr_assert_eq(rejected("A", "service"), 3);
  cr_assert_eq(rejected("A", "method"), 0);
  cr_assert_eq(rejected("B", "service"), 1);
  stop();
}

Test(ratelimit, refused_call_gives_back_earlier_tokens) {
  perfc_ratelimit_rule r[] = {
      {.rate = 100, .burst = 100},
      {.method = "/t.v1.R/A", .rate = 1, .burst = 1},
  };
  start(r, 2, 0);
  cr_assert_eq(admitted(0, NULL, 100), 1);
  cr_assert_eq(call(0, NULL, NULL, 0), PERFC_STATUS_RESOURCE_EXHAUSTED);
  cr_assert_eq(call(0, NULL, NULL, 0), PERFC_STATUS_RESOURCE_EXHAUSTED);
  /* 100 - 1 (A's admitted call): the refused calls spent nothing. */
  cr_assert_eq(admitted(1, NULL, 200), 99);
  cr_assert_eq(rejected("A", "method"), 3);
  cr_assert_eq(rejected("B", "global"), 1);
  stop();
}

Test(ratelimit, one_bucket_per_api_key) {
  perfc_ratelimit_rule r[] = {
      {.rate = 1, .burst = 2, .key_metadata = "x-api-key"}};
  start(r, 1, 0);
  char msg[256];
  cr_assert_eq(admitted(0, "alice", 100), 2);
  cr_assert_eq(call(0, "alice", msg, sizeof msg),
               PERFC_STATUS_RESOURCE_EXHAUSTED);
  cr_assert(strstr(msg, "per x-api-key") != NULL, "%s", msg);
  cr_assert_eq(admitted(0, "bob", 100), 2, "bob is not limited by alice");
  cr_assert_eq(admitted(1, NULL, 100), 2,
               "calls without a key share one bucket");
  cr_assert_eq(admitted(0, NULL, 100), 0);
  advance_ms(1000);
  cr_assert_eq(admitted(0, "alice", 100), 1);
  stop();
}

Test(ratelimit, least_recently_used_key_is_forgotten) {
  perfc_ratelimit_rule r[] = {
      {.rate = 1, .burst = 1, .key_metadata = "x-api-key"}};
  start(r, 1, 16); /* one key per shard */
  cr_assert_eq(admitted(0, "k0", 10), 1);
  cr_assert_eq(admitted(0, "k0", 10), 0);
  /* 200 other keys pass through every shard, evicting k0. */
  char key[16];
  for (int i = 1; i <= 200; i++) {
    snprintf(key, sizeof key, "k%d", i);
    cr_assert_eq(call(0, key, NULL, 0), PERFC_STATUS_OK, "%s is new", key);
  }
  cr_assert_eq(admitted(0, "k0", 10), 1, "a forgotten key starts full");
  stop();
}

Test(ratelimit, bad_options_refused) {
  perfc_ratelimit *x;
  perfc_ratelimit_opts o;
  perfc_ratelimit_opts_init(&o);
  cr_assert_eq(perfc_ratelimit_new(&x, &o), PERFC_EINVAL, "no rules");
  perfc_ratelimit_rule bad[] = {
      {.rate = 0},
      {.rate = 1, .burst = 0.5},
      {.rate = 1, .method = "t.v1.R/A"},
      {.rate = 1, .key_metadata = "X-Api-Key"},
      {.rate = 1, .key_metadata = ""},
  };
  o.rule_count = 1;
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    o.rules = &bad[i];
    cr_assert_eq(perfc_ratelimit_new(&x, &o), PERFC_EINVAL, "rule %zu", i);
  }
  cr_assert_eq(perfc_ratelimit_attach(NULL, NULL), PERFC_EINVAL);
  perfc_ratelimit_free(NULL);
}

Test(ratelimit, keyed_tokens_given_back_when_a_later_rule_refuses) {
  perfc_ratelimit_rule r[] = {
      {.rate = 1, .burst = 2, .key_metadata = "x-api-key"},
      {.method = "/t.v1.R/A", .rate = 1, .burst = 1},
  };
  start(r, 2, 0);
  cr_assert_eq(call(0, "alice", NULL, 0), PERFC_STATUS_OK);
  cr_assert_eq(call(0, "alice", NULL, 0), PERFC_STATUS_RESOURCE_EXHAUSTED,
               "A's own limit refuses");
  cr_assert_eq(admitted(1, "alice", 10), 1,
               "alice's second token was given back");
  stop();
}

/* Many threads, many keys, a tiny table: eviction and give-back race each
 * other (run under ASan and TSan by scripts/check). */
static void *hammer(void *arg) {
  unsigned seed = (unsigned)(uintptr_t)arg;
  char key[16];
  for (int i = 0; i < 200; i++) {
    seed = seed * 1103515245u + 12345u;
    snprintf(key, sizeof key, "k%u", (seed >> 16) % 64);
    perfc_status_code c = call((int)(seed >> 8) & 1, key, NULL, 0);
    if (c != PERFC_STATUS_OK && c != PERFC_STATUS_RESOURCE_EXHAUSTED)
      return (void *)1;
  }
  return NULL;
}

Test(ratelimit, concurrent_keys_with_eviction) {
  perfc_ratelimit_rule r[] = {
      {.rate = 1e6, .key_metadata = "x-api-key"},
      {.method = "/t.v1.R/A", .rate = 1, .burst = 1},
  };
  start(r, 2, 16);
  pthread_t t[4];
  for (uintptr_t i = 0; i < 4; i++)
    cr_assert_eq(pthread_create(&t[i], NULL, hammer, (void *)(i + 1)), 0);
  for (int i = 0; i < 4; i++) {
    void *rc;
    pthread_join(t[i], &rc);
    cr_assert_null(rc, "every call ends OK or RESOURCE_EXHAUSTED");
  }
  stop();
}
