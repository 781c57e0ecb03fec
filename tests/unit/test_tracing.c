/* test_tracing.c — runtime/src/observe/tracing.c and tracing_export.c:
 * W3C trace context parsing, sampling, configuration from options and
 * OTEL_* variables, and spans exported over OTLP/HTTP to a receiver in the
 * test (otlp_receiver.h) for a chain client -> service A -> service B. */
#include <criterion/criterion.h>
#include "test_transport.h" /* test_server_new: both transports */

#include "empty_service.h"
#include "observe/tracing_internal.h"
#include "otlp_receiver.h"
#include "server/server_internal.h"

#include <netinet/in.h>
#include <perfc.h>
#include <perfc/tracing.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *const VALID_TP =
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/* ---- W3C ------------------------------------------------------------------------ */

Test(w3c, traceparent_parses_and_formats_back) {
  perfc_span_context sc;
  cr_assert_eq(perfc_traceparent_parse(VALID_TP, strlen(VALID_TP), &sc), 0);
  cr_assert_eq(sc.trace_id[0], 0x4b);
  cr_assert_eq(sc.trace_id[15], 0x36);
  cr_assert_eq(sc.span_id[7], 0xb7);
  cr_assert_eq(sc.trace_flags, 1);
  cr_assert_eq(sc.remote, 1);
  char out[PERFC_TRACEPARENT_LEN + 1];
  perfc_traceparent_format(&sc, out);
  cr_assert_str_eq(out, VALID_TP);
  /* a future version may append fields after a '-' */
  const char *v2 = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what";
  cr_assert_eq(perfc_traceparent_parse(v2, strlen(v2), &sc), 0);
  cr_assert_eq(sc.trace_flags, 1, "only the sampled bit is kept");
}

/* Every invalid form W3C Trace Context level 1 names. */
static const char *const BAD_TP[] = {
    "",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",   /* short */
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", /* 00 + more */
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* version ff */
    "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* version hex */
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  /* upper case */
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  /* zero trace */
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  /* zero parent */
    "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* delimiter */
    "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
    "00-4bf92f3577b34da6a3ce929d0e0e473z-00f067aa0ba902b7-01",  /* non-hex */
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0z",
    "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", /* no '-' */
    " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
};
#define N_BAD_TP (sizeof BAD_TP / sizeof *BAD_TP)

Test(w3c, every_invalid_traceparent_is_refused) {
  for (size_t i = 0; i < N_BAD_TP; i++) {
    perfc_span_context sc;
    cr_assert_eq(perfc_traceparent_parse(BAD_TP[i], strlen(BAD_TP[i]), &sc),
                 PERFC_EINVAL, "accepted: '%s'", BAD_TP[i]);
  }
}

Test(w3c, tracestate_grammar) {
  const char *ok[] = {"a=1", "a=1,b=2", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
                      " a=1 , b=2 ", "a=1,,b=2", "tenant@vendor=x", "a-b_c*d/e=~!",
                      "0t@v=1"};
  const char *bad[] = {"A=1", "a=1,a=2", "a", "a=", "a=x=y", "1a=1",
                       "a@=1", "@v=1", "a=\x01", "t@V=1"};
  for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
    cr_assert(perfc_tracestate_valid(ok[i], strlen(ok[i])), "refused: %s", ok[i]);
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    cr_assert(!perfc_tracestate_valid(bad[i], strlen(bad[i])), "accepted: %s", bad[i]);
  char many[400] = "";
  for (int i = 0; i < 33; i++)
    snprintf(many + strlen(many), sizeof many - strlen(many), "%sk%d=v", i ? "," : "", i);
  cr_assert(!perfc_tracestate_valid(many, strlen(many)), "33 members accepted");
  many[strlen(many) - 6] = '\0'; /* drop the last member: 32 */
  cr_assert(perfc_tracestate_valid(many, strlen(many)), "32 members refused: %s", many);
  char big[600];
  memset(big, 'v', sizeof big);
  memcpy(big, "a=", 2);
  cr_assert(!perfc_tracestate_valid(big, 513), "over 512 bytes accepted");
}

/* ---- sampling -------------------------------------------------------------------- */

/* The registry a tracer_with() tracer counts into; the tracer borrows it,
 * so tracer_done() frees it after the tracer (make check counts leaks). */
static perfc_metrics_registry *tracer_reg;

static perfc_tracer *tracer_with(perfc_sampler s, double ratio) {
  perfc_tracing_opts o;
  perfc_tracing_opts_init(&o);
  o.ignore_env = true;
  o.sampler = s;
  o.sampler_ratio = ratio;
  o.endpoint = "http://127.0.0.1:9/v1/traces";
  cr_assert_eq(perfc_metrics_registry_new(&tracer_reg), 0);
  o.registry = tracer_reg;
  perfc_tracer *tr;
  cr_assert_eq(perfc_tracing_new(&tr, &o), 0);
  return tr;
}

static void tracer_done(perfc_tracer *tr) {
  perfc_tracing_free(tr);
  perfc_metrics_registry_free(tracer_reg);
  tracer_reg = NULL;
}

Test(sampling, traceidratio_is_within_statistical_bounds_and_deterministic) {
  perfc_tracer *tr = tracer_with(PERFC_SAMPLER_TRACEIDRATIO, 0.25);
  perfc__tracing_seed(42);
  int kept = 0, n = 100000;
  for (int i = 0; i < n; i++) {
    uint8_t id[16];
    perfc__tracing_random(id, 16);
    int d = perfc__tracing_sample(tr, NULL, id);
    cr_assert_eq(d, perfc__tracing_sample(tr, NULL, id), "not deterministic");
    kept += d;
  }
  /* binomial sd = sqrt(n p (1-p)) = 137; 7 sd either side */
  cr_assert(kept > 25000 - 960 && kept < 25000 + 960, "kept %d of %d", kept, n);
  tracer_done(tr);

  tr = tracer_with(PERFC_SAMPLER_TRACEIDRATIO, 0.0);
  uint8_t max[16];
  memset(max, 0, 16);
  max[15] = 1;
  cr_assert_eq(perfc__tracing_sample(tr, NULL, max), 0, "ratio 0 keeps nothing");
  tracer_done(tr);
  tr = tracer_with(PERFC_SAMPLER_TRACEIDRATIO, 1.0);
  memset(max, 0xff, 16);
  cr_assert_eq(perfc__tracing_sample(tr, NULL, max), 1, "ratio 1 keeps all");
  tracer_done(tr);
}

Test(sampling, parent_based_follows_the_sampled_flag) {
  perfc_span_context on = {.trace_flags = 1}, off = {.trace_flags = 0};
  uint8_t id[16] = {1};
  struct {
    perfc_sampler s;
    int root, p_on, p_off;
  } cases[] = {
      {PERFC_SAMPLER_ALWAYS_ON, 1, 1, 1},
      {PERFC_SAMPLER_ALWAYS_OFF, 0, 0, 0},
      {PERFC_SAMPLER_PARENTBASED_ALWAYS_ON, 1, 1, 0},
      {PERFC_SAMPLER_PARENTBASED_ALWAYS_OFF, 0, 1, 0},
      {PERFC_SAMPLER_PARENTBASED_TRACEIDRATIO, 0, 1, 0}, /* ratio 0 */
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    perfc_tracer *tr = tracer_with(cases[i].s, 0.0);
    cr_assert_eq(perfc__tracing_sample(tr, NULL, id), cases[i].root, "case %zu root", i);
    cr_assert_eq(perfc__tracing_sample(tr, &on, id), cases[i].p_on, "case %zu on", i);
    cr_assert_eq(perfc__tracing_sample(tr, &off, id), cases[i].p_off, "case %zu off", i);
    tracer_done(tr);
  }
}

/* ---- configuration ------------------------------------------------------------- */

Test(config, otel_variables_fill_unset_options) {
  setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio", 1);
  setenv("OTEL_TRACES_SAMPLER_ARG", "0.5", 1);
  setenv("OTEL_SERVICE_NAME", "orders", 1);
  setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,team=a%20b", 1);
  setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318", 1);
  setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=s3cr%3Dt", 1);
  perfc_tracer *tr;
  perfc_tracing_opts o;
  perfc_tracing_opts_init(&o);
  cr_assert_eq(perfc_tracing_new(&tr, &o), 0);
  cr_assert_eq(tr->cfg.sampler, PERFC_SAMPLER_PARENTBASED_TRACEIDRATIO);
  cr_assert_float_eq(tr->cfg.ratio, 0.5, 1e-12);
  cr_assert_str_eq(tr->cfg.service_name, "orders");
  cr_assert_str_eq(tr->cfg.endpoint, "http://collector:4318/v1/traces");
  cr_assert_str_eq(tr->cfg.headers, "x-api-key: s3cr=t");
  cr_assert_str_eq(tr->cfg.resource_attrs, "deployment.environment=prod");
  cr_assert_str_eq(tr->cfg.resource_attrs + strlen("deployment.environment=prod") + 1,
                   "team=a b");
  cr_assert_eq(tr->cfg.gzip, 0, "bodies are uncompressed unless asked");
  perfc_tracing_free(tr);
  setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip", 1);
  cr_assert_eq(perfc_tracing_new(&tr, &o), 0);
  cr_assert_eq(tr->cfg.gzip, 1);
  perfc_tracing_free(tr);
  unsetenv("OTEL_EXPORTER_OTLP_COMPRESSION");

  /* an option wins over its variable; the traces endpoint over the base */
  setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://tempo:4318/custom", 1);
  o.service_name = "billing";
  o.sampler = PERFC_SAMPLER_ALWAYS_ON;
  cr_assert_eq(perfc_tracing_new(&tr, &o), 0);
  cr_assert_str_eq(tr->cfg.service_name, "billing");
  cr_assert_eq(tr->cfg.sampler, PERFC_SAMPLER_ALWAYS_ON);
  cr_assert_str_eq(tr->cfg.endpoint, "http://tempo:4318/custom");
  perfc_tracing_free(tr);

  /* a bad variable is ignored with a warning (SDK specification) */
  setenv("OTEL_TRACES_SAMPLER", "sometimes", 1);
  o.sampler = PERFC_SAMPLER_DEFAULT;
  cr_assert_eq(perfc_tracing_new(&tr, &o), 0);
  cr_assert_eq(tr->cfg.sampler, PERFC_SAMPLER_PARENTBASED_ALWAYS_ON);
  perfc_tracing_free(tr);

  /* OTEL_SDK_DISABLED=true: attach adds no interceptor */
  setenv("OTEL_SDK_DISABLED", "true", 1);
  cr_assert_eq(perfc_tracing_new(&tr, &o), 0);
  cr_assert(tr->cfg.disabled);
  perfc_server *srv;
  cr_assert_eq(test_server_new(&srv, NULL), 0);
  cr_assert_eq(perfc_tracing_attach(tr, srv), 0);
  perfc_server_free(srv);
  perfc_tracing_free(tr);
  unsetenv("OTEL_SDK_DISABLED");
}

Test(config, bad_options_are_refused_with_a_reason) {
  perfc_tracing_opts o;
  perfc_tracer *tr;
  perfc_tracing_opts_init(&o);
  o.ignore_env = true;
  o.endpoint = "collector:4318";
  cr_assert_eq(perfc_tracing_new(&tr, &o), PERFC_EINVAL);
  cr_assert(strstr(perfc_last_error(), "http://") != NULL, "%s", perfc_last_error());
  o.endpoint = NULL;
  o.sampler = PERFC_SAMPLER_TRACEIDRATIO;
  o.sampler_ratio = 1.5;
  cr_assert_eq(perfc_tracing_new(&tr, &o), PERFC_EINVAL);
  o.sampler_ratio = 0.5;
  o.resource_attributes = "novalue";
  cr_assert_eq(perfc_tracing_new(&tr, &o), PERFC_EINVAL);
  o.resource_attributes = NULL;
  o.compression = "zstd";
  cr_assert_eq(perfc_tracing_new(&tr, &o), PERFC_EINVAL);
}

/* ---- end to end: client -> A -> B -------------------------------------------------- */

typedef struct chain {
  otlp_rx *rx;
  perfc_metrics_registry *reg;
  perfc_tracer *tc, *ta, *tb;
  perfc_server *sa, *sb;
  perfc_channel *to_b;  /* A's channel to B, with A's tracer */
  perfc_channel *to_a;  /* the test client's, with its tracer */
  perfc_channel *plain; /* to A, no interceptor: sends raw traceparents */
} chain;

static chain C;
static char b_baggage[256];
static pthread_mutex_t b_mu = PTHREAD_MUTEX_INITIALIZER;

static perfc_status_code b_ping(perfc_ctx *ctx, void *ud) {
  const char *bg = perfc_ctx_metadata_get(ctx, "baggage", NULL);
  pthread_mutex_lock(&b_mu);
  snprintf(b_baggage, sizeof b_baggage, "%s", bg ? bg : "");
  pthread_mutex_unlock(&b_mu);
  return empty_ping(ctx, ud);
}
static const empty_handlers b_impl = {b_ping};

/* A forwards to B as the child of its call, passing x-fail on. */
static perfc_status_code a_ping(perfc_ctx *ctx, void *ud) {
  (void)ud;
  /* x-rename: the handler overwrites one of the attributes the tracer
   * pre-encodes for the method (and adds one of its own). */
  const char *rename = perfc_ctx_metadata_get(ctx, "x-rename", NULL);
  if (rename != NULL) {
    perfc_span *sp = perfc_tracing_ctx_span(ctx);
    perfc_span_set_attr_str(sp, "rpc.method", rename);
    perfc_span_set_attr_str(sp, "app.tag", "t1");
  }
  const char *fail = perfc_ctx_metadata_get(ctx, "x-fail", NULL);
  perfc_metadata md[] = {{"x-fail", fail ? fail : "", 0}};
  perfc_call_opts opts = {.metadata = md, .metadata_count = fail ? 1 : 0,
                          .parent = ctx};
  Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
  ProtobufCMessage *resp = NULL;
  perfc_status_code c =
      perfc_channel_unary(C.to_b, &empty_methods[0], &req.base, &resp, &opts, NULL);
  if (resp)
    protobuf_c_message_free_unpacked(resp, NULL);
  return c == PERFC_STATUS_OK ? c : perfc_ctx_error(ctx, c, "B failed");
}
static const empty_handlers a_impl = {a_ping};
static const perfc_method_desc a_methods[] = {
    {.name = "Ping", .path = "/t.v1.A/Ping", .kind = PERFC_METHOD_UNARY,
     .input = EMPTY_MSG, .output = EMPTY_MSG, .invoke = empty_invoke}};
static const perfc_service_desc a_svc = {.name = "t.v1.A", .n_methods = 1,
                                         .methods = a_methods};

static perfc_tracer *chain_tracer(const char *name, perfc_sampler s, int port,
                                  size_t queue, int64_t delay_ms) {
  perfc_tracing_opts o;
  perfc_tracing_opts_init(&o);
  o.ignore_env = true;
  o.service_name = name;
  o.sampler = s;
  o.sampler_ratio = 1.0;
  char url[80];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/traces", port);
  o.endpoint = url;
  o.headers = "x-api-key=k1";
  /* A gzips its bodies, the others send them plain: the receiver must
   * decode both. */
  if (strcmp(name, "svc-a") == 0)
    o.compression = "gzip";
  o.registry = C.reg;
  o.max_queue_spans = queue;
  o.max_export_batch_spans = queue < 64 ? queue : 64;
  o.schedule_delay_ms = delay_ms;
  o.retry_initial_backoff_ms = 50;
  o.retry_max_backoff_ms = 200;
  o.retry_max_elapsed_ms = 2000;
  o.shutdown_grace_ms = 2000;
  o.export_timeout_ms = 3000;
  perfc_tracer *tr;
  cr_assert_eq(perfc_tracing_new(&tr, &o), 0);
  return tr;
}

static void chain_up(perfc_sampler sa, int rx_port, size_t queue, int64_t delay) {
  memset(&C, 0, sizeof C);
  cr_assert_eq(perfc_metrics_registry_new(&C.reg), 0);
  if (rx_port == 0) {
    C.rx = rx_start();
    cr_assert_not_null(C.rx);
    rx_port = C.rx->port;
  }
  C.tc = chain_tracer("client", PERFC_SAMPLER_PARENTBASED_ALWAYS_ON, rx_port, queue, delay);
  C.ta = chain_tracer("svc-a", sa, rx_port, queue, delay);
  C.tb = chain_tracer("svc-b", PERFC_SAMPLER_PARENTBASED_ALWAYS_ON, rx_port, queue, delay);
  int pa, pb;
  char t[64];
  cr_assert_eq(test_server_new(&C.sb, NULL), 0);
  cr_assert_eq(perfc_server_listen(C.sb, "127.0.0.1:0", &pb), 0);
  cr_assert_eq(perfc_server_add_service(C.sb, &empty_svc, &b_impl, NULL), 0);
  cr_assert_eq(perfc_tracing_attach(C.tb, C.sb), 0);
  cr_assert_eq(perfc_server_start(C.sb), 0);
  snprintf(t, sizeof t, "127.0.0.1:%d", pb);
  const perfc_client_interceptor *ia[] = {perfc_tracing_client_interceptor(C.ta)};
  perfc_channel_opts co = {.interceptors = ia, .interceptor_count = 1};
  cr_assert_eq(perfc_channel_new(&C.to_b, t, &co), 0);

  cr_assert_eq(test_server_new(&C.sa, NULL), 0);
  cr_assert_eq(perfc_server_listen(C.sa, "127.0.0.1:0", &pa), 0);
  cr_assert_eq(perfc_server_add_service(C.sa, &a_svc, &a_impl, NULL), 0);
  cr_assert_eq(perfc_tracing_attach(C.ta, C.sa), 0);
  cr_assert_eq(perfc_server_start(C.sa), 0);
  snprintf(t, sizeof t, "127.0.0.1:%d", pa);
  const perfc_client_interceptor *ic[] = {perfc_tracing_client_interceptor(C.tc)};
  perfc_channel_opts cc = {.interceptors = ic, .interceptor_count = 1};
  cr_assert_eq(perfc_channel_new(&C.to_a, t, &cc), 0);
  cr_assert_eq(perfc_channel_new(&C.plain, t, NULL), 0);
}

/* Ends every call: the channels and servers go first, since a tracer must
 * outlive every server and channel that uses it (perfc/tracing.h). */
static void chain_stop_calls(void) {
  perfc_channel_free(C.to_a);
  perfc_channel_free(C.plain);
  perfc_server_free(C.sa);
  perfc_channel_free(C.to_b);
  perfc_server_free(C.sb);
  C.to_a = C.plain = C.to_b = NULL;
  C.sa = C.sb = NULL;
}

static void chain_down(void) {
  chain_stop_calls();
  perfc_tracing_free(C.tc);
  perfc_tracing_free(C.ta);
  perfc_tracing_free(C.tb);
  rx_stop(C.rx);
  perfc_metrics_registry_free(C.reg);
}

static void flush_all(void) {
  cr_assert_eq(perfc_tracing_flush(C.tc, 5000), 0);
  cr_assert_eq(perfc_tracing_flush(C.ta, 5000), 0);
  cr_assert_eq(perfc_tracing_flush(C.tb, 5000), 0);
}

static perfc_status_code call_a(perfc_channel *ch, const perfc_metadata *md, size_t n) {
  perfc_call_opts opts = {.metadata = md, .metadata_count = n};
  Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
  ProtobufCMessage *resp = NULL;
  perfc_status_code c = perfc_channel_unary(ch, &a_methods[0], &req.base, &resp, &opts, NULL);
  if (resp)
    protobuf_c_message_free_unpacked(resp, NULL);
  return c;
}

static const rx_span *find(const char *service, int kind, const uint8_t *trace) {
  for (size_t i = 0; i < C.rx->n; i++) {
    const rx_span *s = &C.rx->spans[i];
    if (strcmp(s->service, service) == 0 && s->kind == kind &&
        (trace == NULL || memcmp(s->trace_id, trace, 16) == 0))
      return s;
  }
  return NULL;
}

static void check_chain(const uint8_t *trace, int code) {
  const rx_span *c = find("client", PERFC_SPAN_CLIENT, trace);
  cr_assert_not_null(c, "no client span");
  const rx_span *as = find("svc-a", PERFC_SPAN_SERVER, c->trace_id);
  const rx_span *ac = find("svc-a", PERFC_SPAN_CLIENT, c->trace_id);
  const rx_span *bs = find("svc-b", PERFC_SPAN_SERVER, c->trace_id);
  cr_assert(as && ac && bs, "spans missing: A server %p, A client %p, B server %p",
            (void *)as, (void *)ac, (void *)bs);
  /* parent links: client -> A server -> A's client span -> B server */
  cr_assert_eq(c->has_parent, 0);
  cr_assert(as->has_parent && memcmp(as->parent_id, c->span_id, 8) == 0);
  cr_assert(ac->has_parent && memcmp(ac->parent_id, as->span_id, 8) == 0);
  cr_assert(bs->has_parent && memcmp(bs->parent_id, ac->span_id, 8) == 0);
  /* attributes */
  cr_assert_str_eq(c->name, "t.v1.A/Ping");
  cr_assert_str_eq(bs->name, "t.v1.Svc/Ping");
  cr_assert_str_eq(as->rpc_system, "grpc");
  cr_assert_str_eq(as->rpc_service, "t.v1.A");
  cr_assert_str_eq(as->rpc_method, "Ping");
  cr_assert_str_eq(ac->rpc_service, "t.v1.Svc");
  cr_assert_str_eq(as->peer_addr, "127.0.0.1");
  cr_assert_str_eq(ac->server_addr, "127.0.0.1");
  cr_assert(ac->server_port > 0);
  cr_assert_eq(c->grpc_code, code);
  cr_assert_eq(as->grpc_code, code);
  cr_assert_eq(ac->grpc_code, code);
  cr_assert_eq(bs->grpc_code, code);
  cr_assert(as->start_ns <= ac->start_ns && ac->end_ns <= as->end_ns,
            "A's client span lies inside A's server span");
  cr_assert(c->start_ns > 1600000000ull * 1000000000ull, "unix time");
  /* statuses: client spans fail on any non-OK code; server spans only on
   * the server's own failures */
  int client_st = code == 0 ? PERFC_SPAN_STATUS_UNSET : PERFC_SPAN_STATUS_ERROR;
  int server_st = (code == 0 || code == PERFC_STATUS_NOT_FOUND) ? PERFC_SPAN_STATUS_UNSET
                                                                 : PERFC_SPAN_STATUS_ERROR;
  cr_assert_eq(c->status, client_st);
  cr_assert_eq(ac->status, client_st);
  cr_assert_eq(bs->status, server_st);
  cr_assert_eq(as->status, server_st);
  cr_assert_eq(c->flags & 0xff, 1);
}

Test(chain, one_trace_with_parent_links_attributes_and_statuses, .timeout = 60) {
  chain_up(PERFC_SAMPLER_PARENTBASED_ALWAYS_ON, 0, 256, 100);
  int codes[] = {0, PERFC_STATUS_NOT_FOUND, PERFC_STATUS_INTERNAL};
  for (size_t i = 0; i < 3; i++) {
    char v[8];
    snprintf(v, sizeof v, "%d", codes[i]);
    perfc_metadata md[] = {{"x-fail", v, 0}};
    cr_assert_eq(call_a(C.to_a, md, codes[i] ? 1 : 0), codes[i]);
    flush_all();
    pthread_mutex_lock(&C.rx->mu);
    cr_assert_eq(C.rx->n, 4 * (i + 1), "spans after call %zu: %zu", i, C.rx->n);
    check_chain(C.rx->spans[4 * i].trace_id, codes[i]);
    pthread_mutex_unlock(&C.rx->mu);
  }
  cr_assert_eq(C.rx->bad, 0);
  cr_assert(C.rx->gzip_seen > 0, "A's bodies are gzipped");
  cr_assert(C.rx->gzip_seen < C.rx->requests, "the others' are plain");
  cr_assert_str_eq(C.rx->last_auth, "k1", "OTLP headers sent");
  /* the three traces are distinct */
  cr_assert(memcmp(C.rx->spans[0].trace_id, C.rx->spans[4].trace_id, 16) != 0);
  perfc_tracing_stats st;
  perfc_tracing_stats_get(C.ta, &st);
  cr_assert_eq(st.spans_exported, 6);
  cr_assert_eq(st.dropped_queue_full + st.dropped_export, 0);
  chain_down();
}

/* A server span's rpc.system/rpc.service/rpc.method are encoded once per
 * method and copied into every span; a handler that overwrites one of them
 * gets its value exported, once, and the next call of the method still
 * carries the method's own. */
static size_t count_key(const rx_span *s, const char *key) {
  size_t n = 0;
  for (size_t i = 0; i < s->nattrs; i++)
    n += strcmp(s->attrs[i].key, key) == 0;
  return n;
}

Test(chain, a_handler_overwrites_a_pre_encoded_attribute, .timeout = 60) {
  chain_up(PERFC_SAMPLER_PARENTBASED_ALWAYS_ON, 0, 256, 100);
  perfc_metadata md[] = {{"x-rename", "Renamed", 0}};
  cr_assert_eq(call_a(C.to_a, md, 1), PERFC_STATUS_OK);
  cr_assert_eq(call_a(C.to_a, NULL, 0), PERFC_STATUS_OK);
  flush_all();
  pthread_mutex_lock(&C.rx->mu);
  cr_assert_eq(C.rx->n, 8);
  const rx_span *first = NULL, *second = NULL;
  size_t servers = 0;
  for (size_t i = 0; i < C.rx->n; i++) {
    const rx_span *x = &C.rx->spans[i];
    if (strcmp(x->service, "svc-a") != 0 || x->kind != PERFC_SPAN_SERVER)
      continue;
    servers++;
    if (count_key(x, "app.tag"))
      first = x; /* the call that renamed */
    else
      second = x;
  }
  cr_assert_eq(servers, 2);
  cr_assert(first != NULL && second != NULL);
  cr_assert_str_eq(first->rpc_method, "Renamed");
  cr_assert_eq(count_key(first, "rpc.method"), 1);
  cr_assert_eq(count_key(first, "app.tag"), 1);
  cr_assert_str_eq(first->rpc_service, "t.v1.A");
  cr_assert_str_eq(first->rpc_system, "grpc");
  cr_assert_str_eq(first->name, "t.v1.A/Ping");
  cr_assert_str_eq(second->rpc_method, "Ping");
  cr_assert_eq(count_key(second, "rpc.method"), 1);
  cr_assert_eq(count_key(second, "app.tag"), 0);
  cr_assert_str_eq(second->rpc_service, "t.v1.A");
  cr_assert_eq(C.rx->bad, 0);
  pthread_mutex_unlock(&C.rx->mu);
  chain_down();
}

Test(chain, incoming_context_tracestate_and_baggage_go_on, .timeout = 60) {
  chain_up(PERFC_SAMPLER_PARENTBASED_ALWAYS_ON, 0, 256, 100);
  perfc_metadata md[] = {{"traceparent", VALID_TP, 0},
                         {"tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7", 0},
                         {"baggage", "userId=alice,isProduction=false", 0}};
  cr_assert_eq(call_a(C.plain, md, 3), PERFC_STATUS_OK);
  flush_all();
  perfc_span_context in;
  perfc_traceparent_parse(VALID_TP, strlen(VALID_TP), &in);
  pthread_mutex_lock(&C.rx->mu);
  cr_assert_eq(C.rx->n, 3);
  const rx_span *as = find("svc-a", PERFC_SPAN_SERVER, in.trace_id);
  const rx_span *bs = find("svc-b", PERFC_SPAN_SERVER, in.trace_id);
  cr_assert(as && bs, "the caller's trace id is continued");
  cr_assert(memcmp(as->parent_id, in.span_id, 8) == 0, "A's parent is the caller");
  cr_assert_str_eq(as->tracestate, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
  cr_assert_str_eq(bs->tracestate, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
  cr_assert_eq(as->flags & 0x300, 0x300, "a remote parent is flagged");
  pthread_mutex_unlock(&C.rx->mu);
  pthread_mutex_lock(&b_mu);
  cr_assert_str_eq(b_baggage, "userId=alice,isProduction=false");
  pthread_mutex_unlock(&b_mu);
  chain_down();
}

Test(chain, bad_traceparent_starts_a_new_trace_and_the_call_succeeds, .timeout = 120) {
  chain_up(PERFC_SAMPLER_PARENTBASED_ALWAYS_ON, 0, 256, 100);
  for (size_t i = 0; i < N_BAD_TP; i++) {
    perfc_metadata md[] = {{"traceparent", BAD_TP[i], 0},
                           {"tracestate", "rojo=1", 0}};
    cr_assert_eq(call_a(C.plain, md, BAD_TP[i][0] ? 2 : 1), PERFC_STATUS_OK,
                 "call with '%s'", BAD_TP[i]);
  }
  flush_all();
  pthread_mutex_lock(&C.rx->mu);
  cr_assert_eq(C.rx->n, 3 * N_BAD_TP);
  size_t roots = 0;
  for (size_t i = 0; i < C.rx->n; i++) {
    const rx_span *s = &C.rx->spans[i];
    if (strcmp(s->service, "svc-a") == 0 && s->kind == PERFC_SPAN_SERVER) {
      roots++;
      cr_assert_eq(s->has_parent, 0, "a new trace has no parent");
      cr_assert_str_eq(s->tracestate, "", "tracestate dropped with a bad traceparent");
      /* Not the invalid header's trace id (its first byte alone would
       * match a random id once in 256 roots). */
      static const uint8_t header_id[16] = {0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3,
                                            0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d,
                                            0x0e, 0x0e, 0x47, 0x36};
      cr_assert_neq(memcmp(s->trace_id, header_id, 16), 0,
                    "not the invalid header's trace id");
      cr_assert_not_null(find("svc-b", PERFC_SPAN_SERVER, s->trace_id), "B continues it");
    }
  }
  cr_assert_eq(roots, N_BAD_TP);
  pthread_mutex_unlock(&C.rx->mu);
  chain_down();
}

static int64_t rx_int_attr(const rx_span *s, const char *key) {
  for (size_t i = 0; i < s->nattrs; i++)
    if (strcmp(s->attrs[i].key, key) == 0)
      return s->attrs[i].iv;
  return -1;
}

/* A queued server span points at its method's strings instead of copying
 * them (the tracer keeps them), and the server hook remembers the last peer
 * it split per thread: spans still queued when their server is freed keep
 * their names, and calls alternating between two connections each get
 * their own peer port. */
Test(chain, queued_spans_outlive_their_server_and_peers_alternate, .timeout = 60) {
  /* a schedule delay longer than the test: the spans wait in the queue */
  chain_up(PERFC_SAMPLER_PARENTBASED_ALWAYS_ON, 0, 256, 60000);
  for (int i = 0; i < 6; i++)
    cr_assert_eq(call_a(i % 2 ? C.plain : C.to_a, NULL, 0), PERFC_STATUS_OK);
  perfc_tracing_stats st;
  perfc_tracing_stats_get(C.ta, &st);
  cr_assert_eq(st.spans_ended, 12, "A's 6 server and 6 client spans ended");
  cr_assert_eq(st.spans_exported, 0, "and are still queued");
  chain_stop_calls(); /* the servers (and their method states) are freed */
  flush_all();
  pthread_mutex_lock(&C.rx->mu);
  int64_t ports[6];
  size_t n = 0;
  for (size_t i = 0; i < C.rx->n; i++) {
    const rx_span *s = &C.rx->spans[i];
    if (strcmp(s->service, "svc-a") != 0 || s->kind != PERFC_SPAN_SERVER)
      continue;
    cr_assert_lt(n, 6);
    cr_assert_str_eq(s->name, "t.v1.A/Ping");
    cr_assert_str_eq(s->rpc_system, "grpc");
    cr_assert_str_eq(s->rpc_service, "t.v1.A");
    cr_assert_str_eq(s->rpc_method, "Ping");
    cr_assert_str_eq(s->peer_addr, "127.0.0.1");
    ports[n++] = rx_int_attr(s, "network.peer.port");
  }
  cr_assert_eq(n, 6, "A's server spans exported: %zu", n);
  cr_assert(ports[0] > 0 && ports[1] > 0 && ports[0] != ports[1],
            "two connections, two ports: %lld %lld", (long long)ports[0],
            (long long)ports[1]);
  for (size_t i = 2; i < 6; i++)
    cr_assert_eq(ports[i], ports[i % 2], "call %zu: port %lld, its connection's %lld",
                 i, (long long)ports[i], (long long)ports[i % 2]);
  pthread_mutex_unlock(&C.rx->mu);
  chain_down();
}

Test(chain, parent_based_sampling_honours_the_sampled_flag, .timeout = 60) {
  chain_up(PERFC_SAMPLER_PARENTBASED_ALWAYS_ON, 0, 256, 100);
  perfc_metadata off[] = {{"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", 0}};
  for (int i = 0; i < 5; i++)
    cr_assert_eq(call_a(C.plain, off, 1), PERFC_STATUS_OK);
  flush_all();
  cr_assert_eq(rx_count(C.rx), 0, "an unsampled parent: nothing recorded in A or B");
  perfc_metadata on[] = {{"traceparent", VALID_TP, 0}};
  cr_assert_eq(call_a(C.plain, on, 1), PERFC_STATUS_OK);
  flush_all();
  cr_assert_eq(rx_count(C.rx), 3);
  chain_down();

  /* always_off in A: nothing from A; B (parent-based) sees A's unsampled
   * flag on the caller's trace and records nothing either */
  chain_up(PERFC_SAMPLER_ALWAYS_OFF, 0, 256, 100);
  for (int i = 0; i < 5; i++)
    cr_assert_eq(call_a(C.plain, on, 1), PERFC_STATUS_OK);
  flush_all();
  cr_assert_eq(rx_count(C.rx), 0);
  chain_down();
}

static int closed_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  bind(fd, (struct sockaddr *)&sa, sizeof sa);
  socklen_t l = sizeof sa;
  getsockname(fd, (struct sockaddr *)&sa, &l);
  close(fd);
  return ntohs(sa.sin_port);
}

static uint64_t metric(perfc_metrics_registry *reg, const char *line_prefix) {
  char *text = NULL;
  size_t len = 0;
  cr_assert_eq(perfc_metrics_registry_render(reg, &text, &len), 0);
  const char *p = strstr(text, line_prefix);
  uint64_t v = p ? strtoull(p + strlen(line_prefix), NULL, 10) : UINT64_MAX;
  free(text);
  return v;
}

Test(export, receiver_down_drops_are_counted_and_calls_go_on, .timeout = 120) {
  chain_up(PERFC_SAMPLER_ALWAYS_ON, closed_port(), 16, 50);
  for (int i = 0; i < 300; i++)
    cr_assert_eq(call_a(C.to_a, NULL, 0), PERFC_STATUS_OK);
  perfc_tracing_stats st;
  perfc_tracing_stats_get(C.ta, &st);
  cr_assert_eq(st.spans_ended, 600);
  cr_assert(st.dropped_queue_full > 0, "a 16-span queue overflowed");
  /* Servers and channels before their tracers (TSan in make check saw
   * server A's thread still enqueueing into ta's queue as it was freed). */
  chain_stop_calls();
  perfc_tracing_free(C.ta);
  perfc_tracing_free(C.tb);
  perfc_tracing_free(C.tc);
  uint64_t full = metric(C.reg, "perfc_tracing_spans_dropped_total{reason=\"queue_full\"} ");
  uint64_t fail = metric(C.reg, "perfc_tracing_spans_dropped_total{reason=\"export_failed\"} ");
  uint64_t shut = metric(C.reg, "perfc_tracing_spans_dropped_total{reason=\"shutdown\"} ");
  uint64_t ok = metric(C.reg, "perfc_tracing_spans_exported_total ");
  /* every sampled span of the three tracers is accounted for */
  cr_assert_eq(ok, 0);
  cr_assert_eq(full + fail + shut, 1200, "full %lu fail %lu shutdown %lu",
               (unsigned long)full, (unsigned long)fail, (unsigned long)shut);
  C.ta = C.tb = C.tc = NULL;
  chain_down();
}

Test(export, slow_receiver_never_slows_a_call, .timeout = 120) {
  chain_up(PERFC_SAMPLER_ALWAYS_ON, 0, 16, 10);
  rx_set_delay(C.rx, 3000); /* each export takes 3 s */
  int64_t worst = 0;
  for (int i = 0; i < 200; i++) {
    int64_t t0 = perfc__now_ns();
    cr_assert_eq(call_a(C.to_a, NULL, 0), PERFC_STATUS_OK);
    int64_t d = perfc__now_ns() - t0;
    if (d > worst)
      worst = d;
  }
  /* A call that waited for an export would take 3 s; none came near. */
  cr_assert_lt(worst, 2000 * 1000000LL, "worst call %lld ms", (long long)(worst / 1000000));
  perfc_tracing_stats st;
  perfc_tracing_stats_get(C.ta, &st);
  cr_assert(st.dropped_queue_full > 0);
  rx_set_delay(C.rx, 0);
  chain_down();
}

static perfc_tracer *one_tracer(int port, int64_t delay_ms, perfc_metrics_registry *reg,
                                int64_t grace_ms) {
  perfc_tracing_opts o;
  perfc_tracing_opts_init(&o);
  o.ignore_env = true;
  o.sampler = PERFC_SAMPLER_ALWAYS_ON;
  char url[80];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/traces", port);
  o.endpoint = url;
  o.registry = reg;
  o.schedule_delay_ms = delay_ms;
  o.retry_initial_backoff_ms = 20;
  o.retry_max_backoff_ms = 40;
  o.retry_max_elapsed_ms = 5000;
  o.shutdown_grace_ms = grace_ms;
  perfc_tracer *tr;
  cr_assert_eq(perfc_tracing_new(&tr, &o), 0);
  return tr;
}

/* Root spans made through the public child-span hook with a sampled
 * parent stand in for calls here. */
static void end_spans(perfc_tracer *tr, int n) {
  perfc_span *root = perfc_tracing_span_start_child(NULL, "x", PERFC_SPAN_INTERNAL);
  cr_assert_null(root);
  /* a client interceptor call makes a root span without a server */
  for (int i = 0; i < n; i++) {
    void *state = NULL;
    perfc_metadata md[4];
    perfc_client_call_info info = {.method = &empty_methods[0], .target = "127.0.0.1:1"};
    const perfc_client_interceptor *ic = perfc_tracing_client_interceptor(tr);
    cr_assert_eq(ic->outgoing_metadata(ic->self, &info, &state, md, 4), 1);
    cr_assert_str_eq(md[0].key, "traceparent");
    perfc_span_context sc;
    cr_assert_eq(perfc_traceparent_parse(md[0].value, strlen(md[0].value), &sc), 0);
    cr_assert_eq(sc.trace_flags, 1);
    ic->after(ic->self, &empty_methods[0], state, PERFC_STATUS_OK, 0);
  }
}

Test(export, retries_503_then_succeeds_and_400_is_not_retried, .timeout = 60) {
  perfc_metrics_registry *reg;
  perfc_metrics_registry_new(&reg);
  otlp_rx *rx = rx_start();
  rx->fail_first = 2;
  rx->fail_status = 503;
  perfc_tracer *tr = one_tracer(rx->port, 60000, reg, 3000);
  end_spans(tr, 5);
  cr_assert_eq(perfc_tracing_flush(tr, 10000), 0);
  perfc_tracing_stats st;
  perfc_tracing_stats_get(tr, &st);
  cr_assert_eq(st.export_requests, 3);
  cr_assert_eq(st.export_retries, 2);
  cr_assert_eq(st.spans_exported, 5);
  cr_assert_eq(rx_count(rx), 5);

  rx->requests = 0;
  rx->fail_first = 5;
  rx->fail_status = 400;
  end_spans(tr, 3);
  cr_assert_eq(perfc_tracing_flush(tr, 10000), 0);
  perfc_tracing_stats_get(tr, &st);
  cr_assert_eq(st.export_requests, 4, "400 is not retried");
  cr_assert_eq(st.dropped_export, 3);
  cr_assert_eq(metric(reg, "perfc_tracing_spans_dropped_total{reason=\"export_failed\"} "), 3);

  /* 429 with Retry-After: 1 waits about a second before the retry */
  rx->requests = 0;
  rx->fail_first = 1;
  rx->fail_status = 429;
  rx->retry_after_s = 1;
  end_spans(tr, 2);
  int64_t t0 = perfc__now_ns();
  cr_assert_eq(perfc_tracing_flush(tr, 10000), 0);
  int64_t waited_ms = (perfc__now_ns() - t0) / 1000000;
  perfc_tracing_stats_get(tr, &st);
  cr_assert_eq(st.spans_exported, 7);
  cr_assert_geq(waited_ms, 900, "Retry-After honoured (%lld ms)", (long long)waited_ms);
  perfc_tracing_free(tr);
  rx_stop(rx);
  perfc_metrics_registry_free(reg);
}

Test(export, shutdown_flushes_what_is_queued_within_the_grace, .timeout = 60) {
  perfc_metrics_registry *reg;
  perfc_metrics_registry_new(&reg);
  otlp_rx *rx = rx_start();
  perfc_tracer *tr = one_tracer(rx->port, 60000, reg, 5000); /* no timer export */
  end_spans(tr, 7);
  cr_assert_eq(rx_count(rx), 0);
  perfc_tracing_free(tr);
  cr_assert_eq(rx_count(rx), 7, "exported at shutdown");

  /* a receiver that never answers in time: free returns after the grace */
  rx_set_delay(rx, 5000);
  tr = one_tracer(rx->port, 60000, reg, 500);
  end_spans(tr, 4);
  int64_t t0 = perfc__now_ns();
  perfc_tracing_free(tr);
  int64_t took_ms = (perfc__now_ns() - t0) / 1000000;
  cr_assert_lt(took_ms, 2000, "free took %lld ms with a 500 ms grace", (long long)took_ms);
  cr_assert_eq(metric(reg, "perfc_tracing_spans_dropped_total{reason=\"shutdown\"} "), 4);
  rx_set_delay(rx, 0);
  rx_stop(rx);
  perfc_metrics_registry_free(reg);
}
