/* test_timeouts.c — runtime/src/guard/timeouts.c and perfc_ctx_set_deadline_ms():
 * the handler sees the method's timeout when the client set no deadline or
 * a later one, the client's earlier deadline wins, config overrides the
 * proto option, a handler past the timeout answers DEADLINE_EXCEEDED, and a
 * downstream call made on behalf of the call inherits the lowered deadline.
 */
#include <google/protobuf/empty.pb-c.h>
#include "test_transport.h" /* test_server_new: both transports */
#include <perfc.h>

#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static _Atomic int64_t seen_remaining; /* what the last handler saw */
static _Atomic int64_t child_remaining;
static atomic_int wait_runs;     /* how often the Wait handler started */
static atomic_int sleep_started; /* the Sleep handler holds a worker */
static unsigned pool_threads;    /* 0 = the server's default */
static int attach = 1;           /* 0: a server without the interceptor */
static perfc_channel *child_ch;  /* for the Parent method's downstream call */
static const perfc_method_desc methods[6]; /* defined below the handler */

typedef struct handlers {
  perfc_status_code (*fn)(perfc_ctx *, void *);
} handlers;

static perfc_status_code invoke(perfc_ctx *ctx, const void *h, void *ud,
                                const ProtobufCMessage *req,
                                ProtobufCMessage *resp, perfc_stream *s) {
  (void)req;
  (void)resp;
  (void)s;
  (void)h;
  const char *name = perfc_ctx_method_desc(ctx)->name;
  (void)ud;
  if (strcmp(name, "Sleep") == 0) {
    /* Ignores cancellation: the server must still answer DEADLINE_EXCEEDED. */
    atomic_store(&sleep_started, 1);
    usleep(300 * 1000);
    return PERFC_STATUS_OK;
  }
  if (strcmp(name, "Wait") == 0) {
    atomic_fetch_add(&wait_runs, 1);
    /* A well-behaved handler: works until told to stop, then says OK. */
    while (!perfc_ctx_cancelled(ctx))
      usleep(1000);
    return PERFC_STATUS_OK;
  }
  if (strcmp(name, "Parent") == 0) {
    Google__Protobuf__Empty rq = GOOGLE__PROTOBUF__EMPTY__INIT;
    ProtobufCMessage *out = NULL;
    perfc_call_opts o = {.parent = ctx, .no_timeout = true};
    perfc_status_code c =
        perfc_channel_unary(child_ch, &methods[4], &rq.base, &out, &o, NULL);
    if (out != NULL)
      protobuf_c_message_free_unpacked(out, NULL);
    return c;
  }
  int64_t left = perfc_ctx_remaining_ms(ctx);
  if (strcmp(name, "Child") == 0)
    atomic_store(&child_remaining, left);
  else
    atomic_store(&seen_remaining, left);
  return PERFC_STATUS_OK;
}

static perfc_status_code unused(perfc_ctx *c, void *u) {
  (void)c;
  (void)u;
  return PERFC_STATUS_OK;
}

#define MSG &google__protobuf__empty__descriptor
#define M(n, t, e)                                                             \
  {                                                                            \
    .name = n, .path = "/t.v1.T/" n, .kind = PERFC_METHOD_UNARY, .input = MSG, \
    .output = MSG, .invoke = invoke, .timeout_ms = t, .executor = e            \
  }
static const perfc_method_desc methods[6] = {
    M("Timed", 2000, PERFC_EXEC_INLINE), M("Plain", 0, PERFC_EXEC_INLINE),
    M("Sleep", 100, PERFC_EXEC_POOL),    M("Wait", 100, PERFC_EXEC_POOL),
    M("Child", 0, PERFC_EXEC_INLINE),    M("Parent", 1500, PERFC_EXEC_POOL),
};
static const perfc_service_desc svc = {
    .name = "t.v1.T", .n_methods = 6, .methods = methods};
static const handlers impl = {unused};

static perfc_server *srv;
static perfc_channel *ch;
static perfc_timeouts *tm;

static void start(const perfc_timeouts_opts *o) {
  int port;
  cr_assert_eq(perfc_timeouts_new(&tm, o), 0);
  perfc_server_opts so;
  perfc_server_opts_init(&so);
  so.pool_threads = pool_threads;
  cr_assert_eq(test_server_new(&srv, &so), 0);
  cr_assert_eq(perfc_server_listen(srv, "127.0.0.1:0", &port), 0);
  cr_assert_eq(perfc_server_add_service(srv, &svc, &impl, NULL), 0);
  if (attach)
    cr_assert_eq(perfc_timeouts_attach(tm, srv), 0);
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  perfc_channel_opts co;
  perfc_channel_opts_init(&co);
  co.no_default_timeout = true; /* the client sets no deadline unless asked */
  cr_assert_eq(perfc_channel_new(&ch, target, &co), 0);
  /* Before the server starts its workers, which read child_ch. */
  cr_assert_eq(perfc_channel_new(&child_ch, target, &co), 0);
  cr_assert_eq(perfc_server_start(srv), 0);
}

static void stop(void) {
  /* The server first: joining its workers orders their use of child_ch
   * before the free, in a way ThreadSanitizer can see. */
  perfc_server_free(srv);
  perfc_channel_free(child_ch);
  perfc_channel_free(ch);
  perfc_timeouts_free(tm);
}

static perfc_status_code call(int idx, int64_t timeout_ms,
                              int64_t *elapsed_ms) {
  Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
  ProtobufCMessage *resp = NULL;
  /* timeout_ms < 0 here: a call with no deadline of its own. */
  perfc_call_opts o = {.timeout_ms = timeout_ms < 0 ? 0 : timeout_ms,
                       .no_timeout = timeout_ms < 0,
                       .wait_for_ready = true};
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  perfc_status_code c =
      perfc_channel_unary(ch, &methods[idx], &req.base, &resp, &o, NULL);
  clock_gettime(CLOCK_MONOTONIC, &b);
  if (elapsed_ms)
    *elapsed_ms =
        (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
  if (resp != NULL)
    protobuf_c_message_free_unpacked(resp, NULL);
  return c;
}

Test(timeouts, proto_option_caps_a_missing_deadline) {
  start(NULL);
  cr_assert_eq(call(0, -1, NULL), PERFC_STATUS_OK);
  int64_t left = atomic_load(&seen_remaining);
  /* Up to 2,050: on the C core the handler can see a few ms more than the
   * client sent (its deadline is computed from the core's own rounded
   * clock); 2 of 12 runs saw 2,009 ms. The channel default would be none. */
  cr_assert(left > 1000 && left <= 2050, "Timed saw %lld ms", (long long)left);
  cr_assert_eq(call(1, -1, NULL), PERFC_STATUS_OK);
  cr_assert_eq(atomic_load(&seen_remaining), INT64_MAX,
               "a method without a timeout keeps the client's (none)");
  stop();
}

Test(timeouts, client_deadline_wins_when_earlier_and_is_capped_when_later) {
  start(NULL);
  cr_assert_eq(call(0, 1000, NULL), PERFC_STATUS_OK);
  int64_t left = atomic_load(&seen_remaining);
  /* 1,050, not 1,000: the client's C core encodes its deadline as a
   * grpc-timeout rounded up, so the server can see a few ms more than the
   * client asked (1,009 seen); the method's 2,000 ms is far above either. */
  cr_assert(left <= 1050, "the client's 1000 ms must win, saw %lld",
            (long long)left);
  cr_assert_eq(call(0, 5000, NULL), PERFC_STATUS_OK);
  left = atomic_load(&seen_remaining);
  cr_assert(left <= 2000, "a later client deadline is capped, saw %lld",
            (long long)left);
  stop();
}

Test(timeouts, config_overrides_proto_option) {
  perfc_timeouts_rule rules[] = {
      {.method = "/t.v1.T/Timed", .no_timeout = true},
      {.method = "/t.v1.T/", .timeout_ms = 500}};
  perfc_timeouts_opts o;
  perfc_timeouts_opts_init(&o);
  o.rules = rules;
  o.rule_count = 2;
  o.default_timeout_enabled = true;
  o.default_timeout_ms = 7000;
  start(&o);
  cr_assert_eq(perfc_timeouts_for(tm, &svc, &methods[0]), 0);
  cr_assert_eq(perfc_timeouts_for(tm, &svc, &methods[1]), 500);
  cr_assert_eq(call(0, -1, NULL), PERFC_STATUS_OK);
  cr_assert_eq(atomic_load(&seen_remaining), INT64_MAX,
               "an override with no_timeout removes the proto's timeout");
  cr_assert_eq(call(1, -1, NULL), PERFC_STATUS_OK);
  cr_assert_leq(atomic_load(&seen_remaining), 500);
  stop();
}

Test(timeouts, default_applies_to_methods_without_option) {
  perfc_timeouts_opts o;
  perfc_timeouts_opts_init(&o);
  o.default_timeout_enabled = true;
  o.default_timeout_ms = 7000;
  cr_assert_eq(perfc_timeouts_new(&tm, &o), 0);
  cr_assert_eq(perfc_timeouts_for(tm, &svc, &methods[1]), 7000);
  cr_assert_eq(perfc_timeouts_for(tm, &svc, &methods[0]), 2000,
               "the proto option beats the default");
  perfc_timeouts_free(tm);
}

Test(timeouts, handler_past_timeout_answers_deadline_exceeded) {
  start(NULL);
  int64_t ms;
  cr_assert_eq(call(2, -1, &ms), PERFC_STATUS_DEADLINE_EXCEEDED);
  cr_assert(ms >= 250, "the status comes when the handler returns (%lld ms)",
            (long long)ms);
  /* A handler that watches perfc_ctx_cancelled() stops at the timeout. */
  cr_assert_eq(call(3, -1, &ms), PERFC_STATUS_DEADLINE_EXCEEDED);
  cr_assert(ms >= 90 && ms < 5000, "Wait took %lld ms", (long long)ms);
  stop();
}

Test(timeouts, downstream_call_inherits_lowered_deadline) {
  start(NULL);
  cr_assert_eq(call(5, -1, NULL), PERFC_STATUS_OK);
  int64_t left = atomic_load(&child_remaining);
  cr_assert(left <= 1500, "the child saw %lld ms", (long long)left);
  stop();
}

Test(timeouts, bad_options_refused) {
  perfc_timeouts_rule rel[] = {{.method = "t.v1.T/Timed", .timeout_ms = 10}};
  perfc_timeouts_rule neg[] = {{.method = "/t.v1.T/Timed", .timeout_ms = -1}};
  perfc_timeouts_opts o;
  perfc_timeouts_opts_init(&o);
  o.rule_count = 1;
  o.rules = rel;
  cr_assert_eq(perfc_timeouts_new(&tm, &o), PERFC_EINVAL);
  o.rules = neg;
  cr_assert_eq(perfc_timeouts_new(&tm, &o), PERFC_EINVAL);
  cr_assert_eq(perfc_last_error_detail().index, 0, "the rule's index");
  /* No sentinel: 0 is not "none", and "none" carries no number. */
  perfc_timeouts_rule zero[] = {{.method = "/t.v1.T/Timed", .timeout_ms = 0}};
  perfc_timeouts_rule both[] = {
      {.method = "/t.v1.T/Timed", .timeout_ms = 10, .no_timeout = true}};
  o.rules = zero;
  cr_assert_eq(perfc_timeouts_new(&tm, &o), PERFC_EINVAL);
  cr_assert_not_null(strstr(perfc_last_error(), "no_timeout"), "%s",
                     perfc_last_error());
  o.rules = both;
  cr_assert_eq(perfc_timeouts_new(&tm, &o), PERFC_EINVAL);
  perfc_timeouts_opts_init(&o);
  o.default_timeout_ms = 7000; /* set, but not enabled: refused, not ignored */
  cr_assert_eq(perfc_timeouts_new(&tm, &o), PERFC_EINVAL);
  o.default_timeout_enabled = true;
  o.default_timeout_ms = 0;
  cr_assert_eq(perfc_timeouts_new(&tm, &o), PERFC_EINVAL);
  cr_assert_eq(perfc_timeouts_new(NULL, NULL), PERFC_EINVAL);
  perfc_timeouts_free(NULL);
}

static void ignore(perfc_status_code code, const char *msg,
                   const ProtobufCMessage *resp, void *ud) {
  (void)msg, (void)resp;
  *(perfc_status_code *)ud = code;
}

Test(timeouts, call_waiting_for_a_worker_past_its_timeout_never_runs) {
  pool_threads = 1;
  start(NULL);
  pool_threads = 0;
  /* Sleep holds the only worker for 300 ms; Wait (timeout 100 ms) queues
   * behind it and is past its deadline when the worker frees up. */
  Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
  perfc_call_opts o = {.no_timeout = true, .wait_for_ready = true};
  perfc_status_code sleep_code = -1;
  atomic_store(&sleep_started,
               0); /* the TSan harness runs tests in one process */
  cr_assert_eq(perfc_channel_unary_async(ch, &methods[2], &req.base, &o, ignore,
                                         &sleep_code),
               0);
  while (!atomic_load(&sleep_started))
    usleep(1000); /* Sleep must hold the worker before Wait arrives */
  atomic_store(&wait_runs, 0);
  int64_t ms;
  cr_assert_eq(call(3, -1, &ms), PERFC_STATUS_DEADLINE_EXCEEDED);
  cr_assert_eq(atomic_load(&wait_runs), 0, "the handler never started");
  cr_assert(ms >= 100, "answered when the worker freed up (%lld ms)",
            (long long)ms);
  stop(); /* the server waits for Sleep to end before it is freed */
  cr_assert_eq(sleep_code, PERFC_STATUS_DEADLINE_EXCEEDED);
}

Test(timeouts, client_defaults_to_the_method_timeout) {
  /* No server-side interceptor: the deadline the handler sees is the one
   * the client sent, which for timeout_ms 0 is the method's 2000 ms (not
   * the channel's default, none here). */
  attach = 0;
  start(NULL);
  attach = 1;
  cr_assert_eq(call(0, 0, NULL), PERFC_STATUS_OK);
  int64_t left = atomic_load(&seen_remaining);
  /* Up to 2,050: on the C core the handler can see a few ms more than the
   * client sent (its deadline is computed from the core's own rounded
   * clock); 2 of 12 runs saw 2,009 ms. The channel default would be none. */
  cr_assert(left > 1000 && left <= 2050, "Timed saw %lld ms", (long long)left);
  cr_assert_eq(call(1, 0, NULL), PERFC_STATUS_OK);
  cr_assert_eq(atomic_load(&seen_remaining), INT64_MAX,
               "no method timeout: the channel default (none)");
  cr_assert_eq(call(0, -1, NULL), PERFC_STATUS_OK);
  cr_assert_eq(atomic_load(&seen_remaining), INT64_MAX, "-1 still means none");
  stop();
}
