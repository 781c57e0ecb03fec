/*
 * grpc_metrics.c — go-grpc-prometheus-compatible server and client
 * interceptors over the metrics registry.
 *
 * Room: runtime/src/observe. Uses perfc/metrics.h and perfc/interceptor.h only.
 *
 * Server: every series of a method (started, 17 handled codes, received,
 * sent, the histogram) is resolved in method_init at server start, so a call
 * costs a few per-thread counter increments, one histogram observation and
 * one clock read — no lookup, no lock, no shared cache line.
 * Client: methods are only known per call, so series are resolved on a
 * method's first call and cached in a lock-free table keyed by the method
 * descriptor's address (generated descriptors are static, so the address is
 * a stable identity).
 */
#include "perfc/grpc_metrics.h"
#include "perfc/http_route.h"
#include "core/error_internal.h"
#include "observe/metrics_internal.h"
#include "perfc/log.h"
#include "perfc/tracing.h"
#include "server/server_internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define CLIENT_CACHE_SLOTS 1024 /* power of two */

typedef struct side_families {
  perfc_metrics_family *started, *handled, *received, *sent, *seconds;
} side_families;

/* The series of one method on one side. */
typedef struct method_series {
  const perfc_method_desc *desc;
  perfc_counter *started, *received, *sent;
  perfc_counter *handled[PERFC_STATUS_COUNT];
  /* The same counters' cell numbers: the server's hooks add inline
   * (perfc__cell_inc), a few ns a call less than perfc_counter_inc. */
  uint32_t started_cell, received_cell, sent_cell;
  uint32_t handled_cell[PERFC_STATUS_COUNT];
  perfc_histogram *seconds; /* NULL when the histogram is off */
  /* Server methods with HTTP routes: calls HTTP/JSON carried, by protocol
   * (perfc_ctx_protocol() - 1) and code; NULL otherwise. */
  perfc_counter *(*http_handled)[PERFC_STATUS_COUNT];
} method_series;

struct perfc_grpc_metrics {
  side_families server, client;
  /* perfc_server_http_handled_total{protocol, grpc_service, grpc_method,
   * grpc_code}: HTTP/JSON calls, which grpc_server_* count as well (they
   * are calls of the method), told apart by protocol. */
  perfc_metrics_family *http_handled;
  perfc_metrics_registry *registry;
  perfc_server_interceptor server_ic;
  perfc_client_interceptor client_ic;
  pthread_mutex_t client_mu; /* serialises inserts into client_cache */
  _Atomic(method_series *) client_cache[CLIENT_CACHE_SLOTS];
};

static const char *grpc_type(perfc_method_kind k) {
  switch (k) {
  case PERFC_METHOD_CLIENT_STREAM:
    return "client_stream";
  case PERFC_METHOD_SERVER_STREAM:
    return "server_stream";
  case PERFC_METHOD_BIDI_STREAM:
    return "bidi_stream";
  default:
    return "unary";
  }
}

void perfc_grpc_metrics_opts_init(perfc_grpc_metrics_opts *o) {
  memset(o, 0, sizeof *o);
}

static int make_families(side_families *f, const char *side,
                         const perfc_grpc_metrics_opts *o) {
  static const char *const base[] = {"grpc_type", "grpc_service", "grpc_method"};
  static const char *const with_code[] = {"grpc_type", "grpc_service",
                                          "grpc_method", "grpc_code"};
  /* go-grpc-prometheus's HELP texts, word for word. */
  int server = strcmp(side, "server") == 0;
  struct {
    perfc_metrics_family **out;
    perfc_metrics_type type;
    const char *suffix;
    const char *help;
    int code;
  } defs[] = {
      {&f->started, PERFC_METRICS_COUNTER, "started_total",
       server ? "Total number of RPCs started on the server."
              : "Total number of RPCs started on the client.",
       0},
      {&f->handled, PERFC_METRICS_COUNTER, "handled_total",
       server ? "Total number of RPCs completed on the server, regardless of "
                "success or failure."
              : "Total number of RPCs completed by the client, regardless of "
                "success or failure.",
       1},
      {&f->received, PERFC_METRICS_COUNTER, "msg_received_total",
       server ? "Total number of RPC stream messages received on the server."
              : "Total number of RPC stream messages received by the client.",
       0},
      {&f->sent, PERFC_METRICS_COUNTER, "msg_sent_total",
       server ? "Total number of gRPC stream messages sent by the server."
              : "Total number of gRPC stream messages sent by the client.",
       0},
      {&f->seconds, PERFC_METRICS_HISTOGRAM, "handling_seconds",
       server ? "Histogram of response latency (seconds) of gRPC that had been "
                "application-level handled by the server."
              : "Histogram of response latency (seconds) of the gRPC until it "
                "is finished by the application.",
       0},
  };
  for (size_t i = 0; i < sizeof defs / sizeof *defs; i++) {
    if (defs[i].type == PERFC_METRICS_HISTOGRAM &&
        o->disable_handling_time_histogram) {
      *defs[i].out = NULL;
      continue;
    }
    char name[64];
    snprintf(name, sizeof name, "grpc_%s_%s", side, defs[i].suffix);
    perfc_metrics_family_opts mo;
    perfc_metrics_family_opts_init(&mo);
    mo.name = name;
    mo.help = defs[i].help;
    mo.label_names = defs[i].code ? with_code : base;
    mo.label_count = defs[i].code ? 4 : 3;
    mo.buckets = o->buckets;
    mo.bucket_count = o->bucket_count;
    int rc =
        perfc_metrics_family_new(defs[i].out, o->registry, defs[i].type, &mo);
    if (rc != 0) {
      perfc_log(PERFC_LOG_ERROR, "grpc metrics: cannot register %s: %s", name,
                perfc_strerror(rc));
      return rc;
    }
  }
  return 0;
}

/* Resolves every series of a method; NULL on failure (then the method is
 * simply not counted, and the failure logged once). */
static method_series *resolve(const side_families *f, const char *service,
                              const perfc_method_desc *m) {
  method_series *s = calloc(1, sizeof *s);
  if (s == NULL)
    return NULL;
  s->desc = m;
  const char *labels[4] = {grpc_type(m->kind), service, m->name, NULL};
  int rc = perfc_counter_get(&s->started, f->started, labels);
  if (rc == 0)
    rc = perfc_counter_get(&s->received, f->received, labels);
  if (rc == 0)
    rc = perfc_counter_get(&s->sent, f->sent, labels);
  if (rc == 0 && f->seconds != NULL)
    rc = perfc_histogram_get(&s->seconds, f->seconds, labels);
  /* Every code starts at zero, as go-grpc-prometheus's InitializeMetrics
   * does, so rate() and absent() work before the first error. */
  for (int c = 0; rc == 0 && c < PERFC_STATUS_COUNT; c++) {
    labels[3] = perfc_status_go_name(c);
    rc = perfc_counter_get(&s->handled[c], f->handled, labels);
  }
  if (rc != 0) {
    perfc_log(PERFC_LOG_ERROR, "grpc metrics: cannot resolve series of %s: %s",
              m->path, perfc_strerror(rc));
    free(s);
    return NULL;
  }
  s->started_cell = perfc__counter_cell(s->started);
  s->received_cell = perfc__counter_cell(s->received);
  s->sent_cell = perfc__counter_cell(s->sent);
  for (int c = 0; c < PERFC_STATUS_COUNT; c++)
    s->handled_cell[c] = perfc__counter_cell(s->handled[c]);
  return s;
}

/* `span`: the call's server span when tracing is attached, which makes a
 * sampled call the exemplar of its bucket (asked of the call, not of the
 * thread's current span, so the interceptors' order does not matter). */
static void count_end(method_series *s, perfc_status_code code,
                      int64_t elapsed_ns, const perfc_span *span) {
  unsigned c = (unsigned)code < PERFC_STATUS_COUNT ? (unsigned)code
                                                  : PERFC_STATUS_UNKNOWN;
  perfc_counter_inc(s->handled[c]);
  if (s->seconds == NULL)
    return;
  if (perfc_span_recording(span)) {
    perfc_span_context sc;
    perfc_span_get_context(span, &sc);
    perfc_histogram_observe_exemplar(s->seconds, (double)elapsed_ns / 1e9, &sc);
  } else {
    perfc_histogram_observe(s->seconds, (double)elapsed_ns / 1e9);
  }
}

/* ---- server side ------------------------------------------------------------ */

/* The HTTP series of a method that has google.api.http routes; 0, or an
 * error (the method then keeps its gRPC series only). */
static int resolve_http(perfc_grpc_metrics *gm, method_series *s,
                        const perfc_service_desc *svc,
                        const perfc_method_desc *m) {
  size_t index = (size_t)(m - svc->methods);
  int routed = 0;
  for (size_t i = 0; i < svc->n_http_routes && !routed; i++)
    routed = svc->http_routes[i].method_index == index;
  if (!routed || gm->http_handled == NULL)
    return 0;
  s->http_handled = calloc(2, sizeof *s->http_handled);
  if (s->http_handled == NULL)
    return PERFC_ENOMEM;
  static const perfc_protocol protos[2] = {PERFC_PROTOCOL_HTTP1_JSON,
                                           PERFC_PROTOCOL_HTTP2_JSON};
  for (int p = 0; p < 2; p++)
    for (int c = 0; c < PERFC_STATUS_COUNT; c++) {
      const char *labels[4] = {perfc_protocol_name(protos[p]), svc->name,
                               m->name, perfc_status_go_name(c)};
      int rc = perfc_counter_get(&s->http_handled[p][c], gm->http_handled,
                                 labels);
      if (rc != 0) {
        free(s->http_handled);
        s->http_handled = NULL;
        return rc;
      }
    }
  return 0;
}

static void *srv_method_init(void *self, const perfc_service_desc *svc,
                             const perfc_method_desc *m) {
  perfc_grpc_metrics *gm = self;
  method_series *s = resolve(&gm->server, svc->name, m);
  if (s != NULL && resolve_http(gm, s, svc, m) != 0)
    perfc_log(PERFC_LOG_ERROR, "grpc metrics: cannot resolve the HTTP series "
              "of %s", m->path);
  return s;
}

static void srv_method_free(void *self, void *state) {
  (void)self;
  method_series *s = state;
  if (s != NULL)
    free(s->http_handled);
  free(state);
}

static perfc_status_code srv_before(void *self, void *state, perfc_ctx *ctx,
                                    void **call_state) {
  (void)self;
  (void)ctx;
  (void)call_state;
  method_series *s = state;
  if (s != NULL)
    perfc__cell_inc(s->started_cell);
  return PERFC_STATUS_OK;
}

static void srv_message(void *self, void *state, perfc_ctx *ctx,
                        void *call_state, int sent) {
  (void)self;
  (void)ctx;
  (void)call_state;
  method_series *s = state;
  if (s != NULL)
    perfc__cell_inc(sent ? s->sent_cell : s->received_cell);
}

static void srv_after(void *self, void *state, perfc_ctx *ctx, void *call_state,
                      perfc_status_code code) {
  (void)self;
  (void)call_state;
  method_series *s = state;
  if (s == NULL)
    return;
  unsigned c = (unsigned)code < PERFC_STATUS_COUNT ? (unsigned)code
                                                  : PERFC_STATUS_UNKNOWN;
  perfc__cell_inc(s->handled_cell[c]);
  if (s->seconds != NULL) {
    const perfc_span *span = perfc_tracing_ctx_span(ctx);
    int64_t start = perfc_ctx_start_ns(ctx);
    if (perfc_span_recording(span)) {
      /* A sampled call is its bucket's exemplar: timed now. */
      perfc_span_context sc;
      perfc_span_get_context(span, &sc);
      perfc_histogram_observe_exemplar(
          s->seconds, (double)(perfc__now_ns() - start) / 1e9, &sc);
    } else {
      /* From the request's arrival until the answer is ready to leave: on
       * a loop that is the end of its batch, when the answers of every
       * call it served are written, timed by one clock reading for all. */
      perfc__histogram_observe_since(s->seconds, start);
    }
  }
  perfc_protocol p = perfc_ctx_protocol(ctx);
  if ((p == PERFC_PROTOCOL_HTTP1_JSON || p == PERFC_PROTOCOL_HTTP2_JSON) &&
      s->http_handled != NULL)
    perfc_counter_inc(s->http_handled[p - 1][(unsigned)code < PERFC_STATUS_COUNT
                                                 ? (unsigned)code
                                                 : PERFC_STATUS_UNKNOWN]);
}

/* ---- client side ------------------------------------------------------------ */

static method_series *client_series(perfc_grpc_metrics *gm,
                                    const perfc_method_desc *m) {
  uintptr_t h = ((uintptr_t)m >> 4) * 0x9E3779B97F4A7C15ull;
  size_t start = (size_t)(h >> 20) & (CLIENT_CACHE_SLOTS - 1);
  for (size_t i = 0; i < CLIENT_CACHE_SLOTS; i++) {
    size_t slot = (start + i) & (CLIENT_CACHE_SLOTS - 1);
    method_series *s =
        atomic_load_explicit(&gm->client_cache[slot], memory_order_acquire);
    if (s == NULL)
      break;
    if (s->desc == m)
      return s;
  }
  /* First call of this method: resolve under the lock, then publish. */
  pthread_mutex_lock(&gm->client_mu);
  method_series *found = NULL;
  for (size_t i = 0; i < CLIENT_CACHE_SLOTS; i++) {
    size_t slot = (start + i) & (CLIENT_CACHE_SLOTS - 1);
    method_series *s =
        atomic_load_explicit(&gm->client_cache[slot], memory_order_relaxed);
    if (s != NULL && s->desc == m) {
      found = s;
      break;
    }
    if (s == NULL) {
      /* The service name is the path's first segment: "/pkg.Svc/M". */
      char service[256];
      const char *p = m->path + (m->path[0] == '/');
      const char *slash = strchr(p, '/');
      size_t n = slash ? (size_t)(slash - p) : strlen(p);
      if (n >= sizeof service)
        n = sizeof service - 1;
      memcpy(service, p, n);
      service[n] = '\0';
      found = resolve(&gm->client, service, m);
      if (found != NULL)
        atomic_store_explicit(&gm->client_cache[slot], found,
                              memory_order_release);
      break;
    }
  }
  pthread_mutex_unlock(&gm->client_mu);
  return found; /* NULL: table full or resolve failed; the call goes uncounted */
}

static perfc_status_code cli_before(void *self, const perfc_method_desc *m,
                                    void **call_state) {
  method_series *s = client_series(self, m);
  *call_state = s;
  if (s != NULL)
    perfc_counter_inc(s->started);
  return PERFC_STATUS_OK;
}

static void cli_message(void *self, const perfc_method_desc *m,
                        void *call_state, int sent) {
  (void)self;
  (void)m;
  method_series *s = call_state;
  if (s != NULL)
    perfc_counter_inc(sent ? s->sent : s->received);
}

static void cli_after(void *self, const perfc_method_desc *m, void *call_state,
                      perfc_status_code code, int64_t elapsed_ns) {
  (void)self;
  (void)m;
  if (call_state != NULL)
    count_end(call_state, code, elapsed_ns, NULL);
}

/* ---- lifecycle -------------------------------------------------------------- */

int perfc_grpc_metrics_new(perfc_grpc_metrics **out,
                           const perfc_grpc_metrics_opts *opts) {
  if (out == NULL)
    return perfc__fail(PERFC_EINVAL, "grpc metrics: NULL out");
  perfc_grpc_metrics_opts o;
  perfc_grpc_metrics_opts_init(&o);
  if (opts != NULL)
    o = *opts;
  perfc_grpc_metrics *gm = calloc(1, sizeof *gm);
  if (gm == NULL)
    return perfc__fail(PERFC_ENOMEM, "grpc metrics: out of memory");
  gm->registry = o.registry;
  int rc = make_families(&gm->server, "server", &o);
  if (rc == 0)
    rc = make_families(&gm->client, "client", &o);
  if (rc == 0) {
    static const char *const names[] = {"protocol", "grpc_service",
                                        "grpc_method", "grpc_code"};
    perfc_metrics_family_opts mo;
    perfc_metrics_family_opts_init(&mo);
    mo.name = "perfc_server_http_handled_total";
    mo.help = "Total number of HTTP/JSON calls (perfc_gateway_attach) "
              "completed on the server, by protocol; grpc_server_* count "
              "them too.";
    mo.label_names = names;
    mo.label_count = 4;
    rc = perfc_metrics_family_new(&gm->http_handled, o.registry,
                                  PERFC_METRICS_COUNTER, &mo);
  }
  if (rc != 0) {
    free(gm);
    return rc;
  }
  pthread_mutex_init(&gm->client_mu, NULL);
  gm->server_ic = (perfc_server_interceptor){
      .name = "grpc_metrics",
      .self = gm,
      .method_init = srv_method_init,
      .method_free = srv_method_free,
      .before = srv_before,
      .on_message = srv_message,
      .after = srv_after,
  };
  gm->client_ic = (perfc_client_interceptor){
      .name = "grpc_metrics",
      .self = gm,
      .before = cli_before,
      .on_message = cli_message,
      .after = cli_after,
  };
  *out = gm;
  return 0;
}

void perfc_grpc_metrics_free(perfc_grpc_metrics *gm) {
  if (gm == NULL)
    return;
  for (size_t i = 0; i < CLIENT_CACHE_SLOTS; i++)
    free(atomic_load(&gm->client_cache[i]));
  pthread_mutex_destroy(&gm->client_mu);
  free(gm);
}

/* ---- server runtime metrics -------------------------------------------------- */

/* Established TCP connections whose local port is one of `ports` (a
 * 0-terminated array), from /proc/net/tcp and tcp6. Read at scrape time:
 * the core reports no connection events, and this keeps no pointer to the
 * server, so the series stays safe after the server is freed. */
static double open_connections(void *user_data) {
  const int *ports = user_data;
  static const char *const files[] = {"/proc/self/net/tcp", "/proc/self/net/tcp6"};
  double n = 0;
  for (size_t f = 0; f < 2; f++) {
    FILE *fp = fopen(files[f], "r");
    if (fp == NULL)
      continue;
    char line[512];
    if (fgets(line, sizeof line, fp) == NULL) { /* header */
      fclose(fp);
      continue;
    }
    while (fgets(line, sizeof line, fp) != NULL) {
      char local[128];
      unsigned state = 0;
      /* "  sl  local_address rem_address   st ..." */
      if (sscanf(line, "%*s %127s %*s %x", local, &state) != 2 || state != 1)
        continue;
      const char *colon = strrchr(local, ':');
      if (colon == NULL)
        continue;
      int port = (int)strtol(colon + 1, NULL, 16);
      for (const int *p = ports; *p != 0; p++)
        if (*p == port) {
          n++;
          break;
        }
    }
    fclose(fp);
  }
  return n;
}

/* The worker pool's series of one server. The pool (core) knows nothing of
 * metrics: it tells its observer, pool_observe(), of each change, and the
 * series follow. Owned by the server (freed in perfc_server_free(), after
 * its pool). */
typedef struct pool_series {
  perfc_grpc_metrics *gm;
  perfc_gauge *queued, *busy;
  perfc_counter *rejected, *started;
} pool_series;

/* Called under the pool's lock; per-thread cells, so no extra sharing. */
static void pool_observe(perfc_pool_event ev, void *user_data) {
  pool_series *ps = user_data;
  switch (ev) {
  case PERFC_POOL_QUEUED:
    perfc_gauge_inc(ps->queued);
    break;
  case PERFC_POOL_STARTED:
    perfc_gauge_dec(ps->queued);
    perfc_gauge_inc(ps->busy);
    perfc_counter_inc(ps->started);
    break;
  case PERFC_POOL_FINISHED:
    perfc_gauge_dec(ps->busy);
    break;
  case PERFC_POOL_REJECTED:
    perfc_counter_inc(ps->rejected);
    break;
  }
}

/* At server start (ports are bound by then): the worker pool's gauges and
 * counter, and the connection gauge, labelled by the first bound port so
 * several servers can share one registry. */
static int register_runtime(perfc_server *srv, void *user_data) {
  pool_series *ps = user_data;
  perfc_grpc_metrics *gm = ps->gm;
  const int *ports;
  size_t nports = perfc__server_ports(srv, &ports);
  char port_label[16];
  snprintf(port_label, sizeof port_label, "%d", nports > 0 ? ports[0] : 0);
  static const char *const label_names[] = {"port"};
  const char *labels[] = {port_label};
  struct {
    const char *name, *help;
    perfc_metrics_type type;
    perfc_metrics_family *fam;
  } defs[] = {
      {"perfc_server_pool_queued", "Calls waiting for a worker.",
       PERFC_METRICS_GAUGE, NULL},
      {"perfc_server_pool_busy_workers", "Workers running a handler.",
       PERFC_METRICS_GAUGE, NULL},
      {"perfc_server_pool_rejected_total",
       "Calls refused with RESOURCE_EXHAUSTED because the worker queue was "
       "full.",
       PERFC_METRICS_COUNTER, NULL},
      {"perfc_server_open_connections",
       "Established TCP connections to the server's ports.",
       PERFC_METRICS_GAUGE, NULL},
      /* Says which calls a worker ran at all: a service whose reads are
       * served on the event loops shows it still while they run. */
      {"perfc_server_pool_started_total",
       "Jobs (handlers, streams) a worker started.", PERFC_METRICS_COUNTER,
       NULL},
  };
  for (size_t i = 0; i < sizeof defs / sizeof *defs; i++) {
    int rc = perfc__metrics_family(&defs[i].fam, gm->registry, defs[i].type,
                                   defs[i].name, defs[i].help, label_names, 1);
    if (rc != 0)
      return rc;
  }
  int rc = perfc_gauge_get(&ps->queued, defs[0].fam, labels);
  if (rc == 0)
    rc = perfc_gauge_get(&ps->busy, defs[1].fam, labels);
  if (rc == 0)
    rc = perfc_counter_get(&ps->rejected, defs[2].fam, labels);
  if (rc == 0)
    rc = perfc_counter_get(&ps->started, defs[4].fam, labels);
  if (rc != 0)
    return rc;
  perfc__server_set_pool_observer(srv, pool_observe, ps);
  int *copy = calloc(nports + 1, sizeof *copy);
  if (copy == NULL)
    return PERFC_ENOMEM;
  memcpy(copy, ports, nports * sizeof *copy);
  rc = perfc_metrics_family_add_func(defs[3].fam, labels, open_connections,
                                     copy, free);
  if (rc != 0)
    free(copy);
  return rc;
}

int perfc_grpc_metrics_attach(perfc_grpc_metrics *gm, perfc_server *srv) {
  if (gm == NULL || srv == NULL)
    return perfc__fail(PERFC_EINVAL,
                       "grpc metrics: attach needs the metrics and a server");
  pool_series *ps = calloc(1, sizeof *ps);
  if (ps == NULL)
    return perfc__fail(PERFC_ENOMEM, "grpc metrics: out of memory");
  ps->gm = gm;
  /* The server owns `ps` from here (a hook with only a destructor). */
  int rc = perfc_server_add_shutdown_hook(srv, NULL, ps, free);
  if (rc != 0) {
    free(ps);
    return rc;
  }
  rc = perfc_server_add_interceptor(srv, &gm->server_ic);
  if (rc == 0)
    rc = perfc_server_add_start_hook(srv, register_runtime, ps);
  return rc;
}

const perfc_client_interceptor *
perfc_grpc_metrics_client_interceptor(perfc_grpc_metrics *gm) {
  return gm ? &gm->client_ic : NULL;
}
