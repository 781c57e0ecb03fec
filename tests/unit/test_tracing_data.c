/* test_tracing_data.c — tracing through the data layer and the logger:
 * a chain client -> service A -> service B, where B's handler (on the
 * worker pool) reads through perfc_cache (L1, Redis, a PostgreSQL loader),
 * exported to the OTLP receiver of otlp_receiver.h. Checks one trace with
 * the cache, Redis and PostgreSQL spans under B's server span, their
 * semantic-convention attributes, no key or value in any span, and
 * trace_id/span_id on perfc_log lines written inside the call.
 *
 * Starts a private redis-server (redis_server.h) and PostgreSQL cluster
 * (scripts/pg-up), both on loopback. */
#include <criterion/criterion.h>
#include "test_transport.h" /* test_server_new: both transports */

#include "empty_service.h"
#include "otlp_receiver.h"
#include "redis_server.h"

#include <perfc.h>
#include <perfc/tracing.h>
#include <pthread.h>
#include <sys/socket.h>

static char g_pgdir[256];

static const char *src_root(void) {
  static char root[1024];
  const char *env = getenv("PERFC_SOURCE_DIR");
  if (env)
    return env;
  snprintf(root, sizeof root, "%s", __FILE__);
  char *p = strstr(root, "/tests/unit/test_tracing_data.c");
  if (p)
    *p = '\0';
  return root;
}

ReportHook(PRE_ALL)(struct criterion_test_set *set) {
  (void)set;
  snprintf(g_pgdir, sizeof g_pgdir, "/tmp/perfc-test-tpg-XXXXXX");
  char cmd[2048], line[1024], dsn[1024] = "";
  if (!mkdtemp(g_pgdir))
    return;
  snprintf(cmd, sizeof cmd, "%s/scripts/pg-up %s app 2>&1", src_root(), g_pgdir);
  FILE *f = popen(cmd, "r");
  if (!f)
    return;
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\n")] = '\0';
    snprintf(dsn, sizeof dsn, "%s", line);
  }
  if (pclose(f) == 0 && strncmp(dsn, "host=", 5) == 0)
    setenv("PERFC_TEST_PG_DSN", dsn, 1);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats) {
  (void)stats;
  if (g_pgdir[0]) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s/scripts/pg-down --rm %s >/dev/null 2>&1",
             src_root(), g_pgdir);
    if (system(cmd) != 0)
      fprintf(stderr, "test_tracing_data: pg-down failed\n");
  }
}

/* ---- log capture -------------------------------------------------------- */

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char log_lines[8][1024];
static int log_n;

static void sink(perfc_log_level level, const char *msg, void *ud) {
  (void)level;
  (void)ud;
  if (strstr(msg, "tdata:") == NULL)
    return;
  pthread_mutex_lock(&log_mu);
  if (log_n < 8)
    snprintf(log_lines[log_n++], sizeof log_lines[0], "%s", msg);
  pthread_mutex_unlock(&log_mu);
}

/* ---- the chain ----------------------------------------------------------- */

typedef struct dchain {
  otlp_rx *rx;
  perfc_metrics_registry *reg;
  perfc_tracer *tc, *ta, *tb;
  perfc_server *sa, *sb;
  perfc_channel *to_a, *to_b;
  test_redis redis;
  perfc_redis_pool *rp;
  perfc_pg_pool *pg;
  perfc_cache *cache;
} dchain;

static dchain D;

/* The loader: one named statement; its parameter is the secret. */
static int load_user(const char *key, uint8_t **out, size_t *out_len, void *ud) {
  (void)ud;
  perfc_log(PERFC_LOG_INFO, "tdata: loading");
  perfc_pg_param p[] = {perfc_pg_text(strchr(key, ':') + 1)};
  perfc_pg_query q = {.name = "tdata_get_user",
                      .sql = "SELECT 'alice-' || $1::text AS name",
                      .params = p, .nparams = 1, .flags = PERFC_PG_READ | PERFC_PG_ONE};
  perfc_pg_result *r = NULL;
  int rc = perfc_pg_exec(D.pg, &q, &r);
  if (rc != 0)
    return rc;
  const char *name = perfc_pg_result_text(r, 0, 0);
  *out = (uint8_t *)strdup(name ? name : "");
  *out_len = *out ? strlen((char *)*out) : 0;
  perfc_pg_result_free(r);
  return *out ? 0 : PERFC_ENOMEM;
}

/* B: a cache read; the key is sent by the caller as x-key. */
static perfc_status_code b_get(perfc_ctx *ctx, void *ud) {
  (void)ud;
  const char *key = perfc_ctx_metadata_get(ctx, "x-key", NULL);
  if (key != NULL && strncmp(key, "fail", 4) == 0)
    return perfc_ctx_error(ctx, PERFC_STATUS_UNAVAILABLE, "asked to fail");
  perfc_log(PERFC_LOG_INFO, "tdata: b handler");
  uint8_t *v = NULL;
  size_t n = 0;
  int rc = perfc_cache_get_or_load(D.cache, key ? key : "user:0", load_user,
                                   NULL, &v, &n);
  free(v);
  return rc == 0 ? PERFC_STATUS_OK
                 : perfc_ctx_error(ctx, PERFC_STATUS_INTERNAL, "cache: %d", rc);
}
static const empty_handlers b_impl = {b_get};
static const perfc_method_desc b_methods[] = {
    {.name = "Get", .path = "/t.v1.B/Get", .kind = PERFC_METHOD_UNARY,
     .input = EMPTY_MSG, .output = EMPTY_MSG, .invoke = empty_invoke,
     .executor = PERFC_EXEC_POOL}};
static const perfc_service_desc b_svc = {.name = "t.v1.B", .n_methods = 1,
                                         .methods = b_methods};

/* A: forwards x-key to B, as the child of its call. */
static perfc_status_code a_get(perfc_ctx *ctx, void *ud) {
  (void)ud;
  const char *key = perfc_ctx_metadata_get(ctx, "x-key", NULL);
  perfc_metadata md[] = {{"x-key", key ? key : "user:0", 0}};
  perfc_call_opts opts = {.metadata = md, .metadata_count = 1, .parent = ctx};
  Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
  ProtobufCMessage *resp = NULL;
  perfc_status_code c = perfc_channel_unary(D.to_b, &b_methods[0], &req.base,
                                            &resp, &opts, NULL);
  if (resp)
    protobuf_c_message_free_unpacked(resp, NULL);
  return c == PERFC_STATUS_OK ? c : perfc_ctx_error(ctx, c, "B failed");
}
static const empty_handlers a_impl = {a_get};
static const perfc_method_desc a_methods[] = {
    {.name = "Get", .path = "/t.v1.A/Get", .kind = PERFC_METHOD_UNARY,
     .input = EMPTY_MSG, .output = EMPTY_MSG, .invoke = empty_invoke}};
static const perfc_service_desc a_svc = {.name = "t.v1.A", .n_methods = 1,
                                         .methods = a_methods};

static perfc_tracer *tracer(const char *name) {
  perfc_tracing_opts o;
  perfc_tracing_opts_init(&o);
  o.debug_traces = strcmp(name, "svc-b") == 0;
  o.debug_ring_spans = 32;
  o.ignore_env = true;
  o.service_name = name;
  o.sampler = PERFC_SAMPLER_PARENTBASED_ALWAYS_ON;
  char url[80];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/traces", D.rx->port);
  o.endpoint = url;
  o.registry = D.reg;
  o.schedule_delay_ms = 100;
  o.shutdown_grace_ms = 2000;
  perfc_tracer *tr;
  cr_assert_eq(perfc_tracing_new(&tr, &o), 0);
  return tr;
}

static void up(void) {
  memset(&D, 0, sizeof D);
  const char *dsn = getenv("PERFC_TEST_PG_DSN");
  cr_assert_not_null(dsn, "scripts/pg-up failed");
  cr_assert_eq(tr_start(&D.redis), 0, "redis-server did not start");
  cr_assert_eq(perfc_metrics_registry_new(&D.reg), 0);
  D.rx = rx_start();
  cr_assert_not_null(D.rx);
  D.tc = tracer("client");
  D.ta = tracer("svc-a");
  D.tb = tracer("svc-b");

  perfc_redis_opts ro;
  perfc_redis_opts_init(&ro);
  ro.host = "127.0.0.1";
  ro.port = D.redis.port;
  ro.registry = D.reg;
  cr_assert_eq(perfc_redis_pool_new(&D.rp, &ro), 0);
  perfc_pg_pool_opts po;
  perfc_pg_pool_opts_init(&po);
  po.dsn = dsn;
  po.registry = D.reg;
  cr_assert_eq(perfc_pg_pool_new(&D.pg, &po), 0);
  perfc_cache_opts co;
  perfc_cache_opts_init(&co);
  co.name = "users";
  co.redis = D.rp;
  co.registry = D.reg;
  cr_assert_eq(perfc_cache_new(&D.cache, &co), 0);

  int pa, pb;
  char t[64];
  cr_assert_eq(test_server_new(&D.sb, NULL), 0);
  cr_assert_eq(perfc_server_listen(D.sb, "127.0.0.1:0", &pb), 0);
  cr_assert_eq(perfc_server_add_service(D.sb, &b_svc, &b_impl, NULL), 0);
  cr_assert_eq(perfc_tracing_attach(D.tb, D.sb), 0);
  cr_assert_eq(perfc_server_start(D.sb), 0);
  snprintf(t, sizeof t, "127.0.0.1:%d", pb);
  const perfc_client_interceptor *ia[] = {perfc_tracing_client_interceptor(D.ta)};
  perfc_channel_opts cha = {.interceptors = ia, .interceptor_count = 1};
  cr_assert_eq(perfc_channel_new(&D.to_b, t, &cha), 0);
  cr_assert_eq(test_server_new(&D.sa, NULL), 0);
  cr_assert_eq(perfc_server_listen(D.sa, "127.0.0.1:0", &pa), 0);
  cr_assert_eq(perfc_server_add_service(D.sa, &a_svc, &a_impl, NULL), 0);
  cr_assert_eq(perfc_tracing_attach(D.ta, D.sa), 0);
  cr_assert_eq(perfc_server_start(D.sa), 0);
  snprintf(t, sizeof t, "127.0.0.1:%d", pa);
  const perfc_client_interceptor *ic[] = {perfc_tracing_client_interceptor(D.tc)};
  perfc_channel_opts chc = {.interceptors = ic, .interceptor_count = 1};
  cr_assert_eq(perfc_channel_new(&D.to_a, t, &chc), 0);
}

static void down(void) {
  perfc_channel_free(D.to_a);
  perfc_server_free(D.sa);
  perfc_channel_free(D.to_b);
  perfc_server_free(D.sb);
  perfc_cache_free(D.cache);
  perfc_pg_pool_free(D.pg);
  perfc_redis_pool_free(D.rp);
  perfc_tracing_free(D.tc);
  perfc_tracing_free(D.ta);
  perfc_tracing_free(D.tb);
  rx_stop(D.rx);
  perfc_metrics_registry_free(D.reg);
  tr_stop(&D.redis);
}

static perfc_status_code call_a(const char *key) {
  perfc_metadata md[] = {{"x-key", key, 0}};
  perfc_call_opts opts = {.metadata = md, .metadata_count = 1};
  Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
  ProtobufCMessage *resp = NULL;
  perfc_status_code c = perfc_channel_unary(D.to_a, &a_methods[0], &req.base,
                                            &resp, &opts, NULL);
  if (resp)
    protobuf_c_message_free_unpacked(resp, NULL);
  return c;
}

/* The helpers' other functions serve other tests. */
__attribute__((unused)) static void (*const unused_helpers[])(void) = {
    (void (*)(void))tr_restart, (void (*)(void))rx_count};

static void flush_all(void) {
  cr_assert_eq(perfc_tracing_flush(D.tc, 5000), 0);
  cr_assert_eq(perfc_tracing_flush(D.ta, 5000), 0);
  cr_assert_eq(perfc_tracing_flush(D.tb, 5000), 0);
}

/* The n-th span (0-based) of `trace` named `name` with `kind`, or NULL. */
static const rx_span *span_named(const uint8_t *trace, const char *name,
                                 int kind, int nth) {
  for (size_t i = 0; i < D.rx->n; i++) {
    const rx_span *s = &D.rx->spans[i];
    if (memcmp(s->trace_id, trace, 16) == 0 && strcmp(s->name, name) == 0 &&
        s->kind == kind && nth-- == 0)
      return s;
  }
  return NULL;
}

static int child_of(const rx_span *c, const rx_span *p) {
  return c && p && c->has_parent && memcmp(c->parent_id, p->span_id, 8) == 0 &&
         p->start_ns <= c->start_ns && c->end_ns <= p->end_ns;
}

static void hex(char *o, const uint8_t *b, size_t n) {
  for (size_t i = 0; i < n; i++)
    sprintf(o + 2 * i, "%02x", b[i]);
}

/* No span carries the key's secret part or the loaded value. */
static void assert_nothing_leaks(const char *secret) {
  for (size_t i = 0; i < D.rx->n; i++) {
    const rx_span *s = &D.rx->spans[i];
    cr_assert(strstr(s->name, secret) == NULL, "span name %s", s->name);
    for (size_t a = 0; a < s->nattrs; a++)
      cr_assert(strstr(s->attrs[a].sv, secret) == NULL, "%s=%s leaks",
                s->attrs[a].key, s->attrs[a].sv);
  }
}

Test(data_chain, cache_redis_and_postgres_spans_nest_under_the_server_span,
     .timeout = 120) {
  up();
  perfc_log_set_sink(sink, NULL);
  /* 1st call: L1 and Redis miss, the loader runs its statement. */
  cr_assert_eq(call_a("user:s3cr3t77"), PERFC_STATUS_OK);
  flush_all();
  pthread_mutex_lock(&D.rx->mu);
  const rx_span *c = NULL;
  for (size_t i = 0; i < D.rx->n && !c; i++)
    if (strcmp(D.rx->spans[i].service, "client") == 0)
      c = &D.rx->spans[i];
  cr_assert_not_null(c);
  const uint8_t *tid = c->trace_id;
  const rx_span *as = span_named(tid, "t.v1.A/Get", PERFC_SPAN_SERVER, 0);
  const rx_span *ac = span_named(tid, "t.v1.B/Get", PERFC_SPAN_CLIENT, 0);
  const rx_span *bs = span_named(tid, "t.v1.B/Get", PERFC_SPAN_SERVER, 0);
  const rx_span *cg = span_named(tid, "cache.get_or_load", PERFC_SPAN_INTERNAL, 0);
  const rx_span *ev = span_named(tid, "EVAL", PERFC_SPAN_CLIENT, 0);
  const rx_span *ld = span_named(tid, "cache.load", PERFC_SPAN_INTERNAL, 0);
  const rx_span *sq = span_named(tid, "tdata_get_user", PERFC_SPAN_CLIENT, 0);
  const rx_span *fill = span_named(tid, "EVAL", PERFC_SPAN_CLIENT, 1);
  cr_assert(as && ac && bs && cg && ev && ld && sq && fill,
            "spans: A %p A->B %p B %p cache %p redis %p load %p sql %p fill %p "
            "(%zu received)", (void *)as, (void *)ac, (void *)bs, (void *)cg,
            (void *)ev, (void *)ld, (void *)sq, (void *)fill, D.rx->n);
  cr_assert_eq(D.rx->n, 9, "client, A, A->B, B, cache, 2 x redis, load, sql: %zu",
               D.rx->n);
  cr_assert(child_of(as, c) && child_of(ac, as) && child_of(bs, ac));
  cr_assert(child_of(cg, bs), "the cache span is the B server span's child");
  cr_assert(child_of(ev, cg) && child_of(fill, cg), "redis under the cache");
  cr_assert(child_of(ld, cg), "the load under the cache");
  cr_assert(child_of(sq, ld), "the SQL statement under the load");
  cr_assert_str_eq(rx_attr(cg, "perfc.cache.level"), "load");
  cr_assert_str_eq(rx_attr(cg, "perfc.cache.result"), "found");
  cr_assert_str_eq(rx_attr(cg, "perfc.cache.name"), "users");
  cr_assert_str_eq(rx_attr(ev, "db.system"), "redis");
  cr_assert_str_eq(rx_attr(ev, "db.operation"), "EVAL");
  cr_assert_str_eq(rx_attr(ev, "server.address"), "127.0.0.1");
  cr_assert_str_eq(rx_attr(sq, "db.system"), "postgresql");
  cr_assert_str_eq(rx_attr(sq, "db.operation"), "SELECT");
  cr_assert_str_eq(rx_attr(sq, "db.statement"), "tdata_get_user");
  cr_assert_eq(sq->status, PERFC_SPAN_STATUS_UNSET);
  assert_nothing_leaks("s3cr3t77");

  /* Log lines inside the call carry the trace and the current span:
   * the handler's is B's server span, the loader's the load span. */
  char t_hex[33], b_hex[17], l_hex[17], want[96];
  hex(t_hex, tid, 16);
  hex(b_hex, bs->span_id, 8);
  hex(l_hex, ld->span_id, 8);
  pthread_mutex_unlock(&D.rx->mu);
  perfc_log_set_sink(NULL, NULL);
  cr_assert_eq(log_n, 2, "two tdata lines: %d", log_n);
  snprintf(want, sizeof want, "trace_id=%s span_id=%s", t_hex, b_hex);
  cr_assert(strstr(log_lines[0], "b handler") && strstr(log_lines[0], want),
            "%s lacks %s", log_lines[0], want);
  snprintf(want, sizeof want, "trace_id=%s span_id=%s", t_hex, l_hex);
  cr_assert(strstr(log_lines[1], "loading") && strstr(log_lines[1], want),
            "%s lacks %s", log_lines[1], want);

  /* 2nd call, same key: an L1 hit, one cache span and nothing under it. */
  size_t before = rx_count(D.rx); /* the receiver thread writes n under mu */
  cr_assert_eq(call_a("user:s3cr3t77"), PERFC_STATUS_OK);
  flush_all();
  pthread_mutex_lock(&D.rx->mu);
  cr_assert_eq(D.rx->n - before, 5, "client, A, A->B, B, cache: %zu",
               D.rx->n - before);
  const rx_span *hit = NULL;
  for (size_t i = before; i < D.rx->n; i++)
    if (strcmp(D.rx->spans[i].name, "cache.get_or_load") == 0)
      hit = &D.rx->spans[i];
  cr_assert_not_null(hit);
  cr_assert_str_eq(rx_attr(hit, "perfc.cache.level"), "l1");
  pthread_mutex_unlock(&D.rx->mu);

  /* A log line outside any call has no ids. */
  log_n = 0;
  perfc_log_set_sink(sink, NULL);
  perfc_log(PERFC_LOG_INFO, "tdata: outside");
  perfc_log_set_sink(NULL, NULL);
  cr_assert_eq(log_n, 1);
  cr_assert(strstr(log_lines[0], "trace_id") == NULL, "%s", log_lines[0]);
  down();
}

Test(data_chain, a_failed_statement_marks_its_span_and_an_unsampled_call_makes_none,
     .timeout = 120) {
  up();
  /* Outside a call the data layer makes no span at all. */
  perfc_pg_query bad = {.sql = "SELECT * FROM no_such_table"};
  cr_assert_neq(perfc_pg_exec(D.pg, &bad, NULL), 0);
  flush_all();
  cr_assert_eq(D.rx->n, 0);
  /* Inside a traced span: ERROR with the error's name. */
  perfc_trace_current cur = {.tracer = D.tb};
  memset(cur.sc.trace_id, 0x11, 16);
  memset(cur.sc.span_id, 0x22, 8);
  cur.sc.trace_flags = PERFC_TRACE_FLAG_SAMPLED;
  perfc_trace_current_set(&cur);
  cr_assert_neq(perfc_pg_exec(D.pg, &bad, NULL), 0);
  /* unsampled: no span */
  cur.sc.trace_flags = 0;
  perfc_trace_current_set(&cur);
  cr_assert_null(perfc_tracing_span_start_current("x", PERFC_SPAN_INTERNAL));
  cr_assert_neq(perfc_pg_exec(D.pg, &bad, NULL), 0);
  perfc_trace_current_set(NULL);
  flush_all();
  pthread_mutex_lock(&D.rx->mu);
  cr_assert_eq(D.rx->n, 1, "one statement span: %zu", D.rx->n);
  const rx_span *s = &D.rx->spans[0];
  cr_assert_str_eq(s->name, "SELECT");
  cr_assert_eq(s->status, PERFC_SPAN_STATUS_ERROR);
  cr_assert(s->has_parent && s->parent_id[0] == 0x22);
  cr_assert_null(rx_attr(s, "db.statement"), "no SQL text in an unnamed span");
  pthread_mutex_unlock(&D.rx->mu);
  down();
}

/* GET http://127.0.0.1:port/path; returns the malloc'd response. */
static char *http_get(int port, const char *path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  struct timeval tv = {5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  char req[256];
  int n = snprintf(req, sizeof req,
                   "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path);
  cr_assert_eq(send(fd, req, (size_t)n, 0), n);
  size_t cap = 1 << 20, len = 0;
  char *buf = malloc(cap);
  ssize_t k;
  while (len + 1 < cap && (k = recv(fd, buf + len, cap - 1 - len, 0)) > 0)
    len += (size_t)k;
  buf[len] = '\0';
  close(fd);
  return buf;
}

Test(debug_traces, slowest_and_failed_calls_with_their_spans, .timeout = 120) {
  up();
  perfc_metrics_http_opts ho;
  perfc_metrics_http_opts_init(&ho);
  ho.addr = "127.0.0.1:0";
  ho.registry = D.reg;
  ho.tracer = D.tb;
  perfc_metrics_http *h;
  cr_assert_eq(perfc_metrics_http_start(&h, &ho), 0);
  cr_assert_eq(call_a("user:1"), PERFC_STATUS_OK);  /* loads: the slowest */
  cr_assert_eq(call_a("user:1"), PERFC_STATUS_OK);  /* L1 hit */
  cr_assert_eq(call_a("fail:1"), PERFC_STATUS_UNAVAILABLE);
  char *page = http_get(perfc_metrics_http_port(h), "/debug/traces");
  cr_assert_not_null(strstr(page, "200 OK"), "%s", page);
  char *body = strstr(page, "# perfc /debug/traces, service svc-b");
  cr_assert_not_null(body, "%s", page);
  char *slow = strstr(body, "== slowest 3 ==");
  char *failed = strstr(body, "== failed, latest first: 1 ==");
  cr_assert(slow && failed && slow < failed, "%s", body);
  /* the slowest call first, with its tree: server > cache > redis, load > sql */
  char *first = strstr(slow, "\ntrace ");
  cr_assert_not_null(first);
  char *srv = strstr(first, "SERVER");
  char *cache = strstr(first, "INTERNAL");
  char *sql = strstr(first, "tdata_get_user");
  cr_assert(srv && cache && sql && srv < cache && cache < sql && sql < failed,
            "%s", body);
  cr_assert_not_null(strstr(cache, "perfc.cache.level=load"), "%s", body);
  cr_assert_not_null(strstr(sql, "db.system=postgresql"), "%s", body);
  /* indentation follows the parents: the statement is 3 levels down */
  cr_assert_not_null(strstr(body, "\n        CLIENT"), "%s", body);
  cr_assert_not_null(strstr(failed, "grpc_code=UNAVAILABLE"), "%s", body);
  cr_assert_not_null(strstr(failed, " ERROR"), "%s", body);
  free(page);
  /* a tracer without debug_traces has no page */
  char *out;
  cr_assert_eq(perfc_tracing_debug_render(D.ta, &out, NULL), PERFC_ENOENT);
  perfc_metrics_http_stop(h);
  down();
}

/* Each thread's ring keeps only its latest spans: memory stays bounded. */
Test(debug_traces, rings_are_bounded, .timeout = 60) {
  memset(&D, 0, sizeof D);
  D.rx = rx_start();
  perfc_tracing_opts o;
  perfc_tracing_opts_init(&o);
  o.ignore_env = true;
  o.service_name = "ring";
  o.debug_traces = true;
  o.debug_ring_spans = 16;
  char url[80];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/traces", D.rx->port);
  o.endpoint = url;
  perfc_tracer *tr;
  cr_assert_eq(perfc_tracing_new(&tr, &o), 0);
  perfc_trace_current cur = {.tracer = tr};
  memset(cur.sc.trace_id, 7, 16);
  memset(cur.sc.span_id, 9, 8);
  cur.sc.trace_flags = PERFC_TRACE_FLAG_SAMPLED;
  perfc_trace_current_set(&cur);
  for (int i = 0; i < 100; i++)
    perfc_span_end(perfc_tracing_span_start_current("op", PERFC_SPAN_INTERNAL));
  perfc_trace_current_set(NULL);
  char *out;
  size_t len;
  cr_assert_eq(perfc_tracing_debug_render(tr, &out, &len), 0);
  cr_assert_not_null(strstr(out, ": 16 recent sampled spans in memory (16 per "
                                 "thread)"), "%s", out);
  free(out);
  perfc_tracing_free(tr);
  rx_stop(D.rx);
}
