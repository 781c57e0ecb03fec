/*
 * tracing_debug.c — /debug/traces: the latest sampled spans kept in memory,
 * a bounded ring per thread, rendered as the slowest and the failed recent
 * calls with their spans (brpc's rpcz, without a collector).
 *
 * Room: runtime/src/observe. tracing.c records each sampled span as it
 * ends (perfc__tracing_debug_record); metrics_http.c serves the page.
 *
 * Cost: recording copies a fixed-size summary (ids, times, name, status,
 * attributes as text) into the thread's ring under the ring's mutex, which
 * only a render ever contends for. Memory is bounded:
 * PERFC_TRACING_DEBUG_MAX_RINGS rings of `debug_ring_spans` entries, made
 * when a thread first records; threads beyond the bound share rings.
 */
#include "observe/tracing_internal.h"
#include "core/error_internal.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct dbg_span {
  uint8_t trace_id[16], span_id[8], parent_id[8];
  uint8_t has_parent, kind, status;
  int64_t start_unix_ns, end_unix_ns;
  int64_t grpc_code; /* rpc.grpc.status_code; -1 when none */
  char name[64];
  char attrs[224]; /* "k=v k=v ...", cut at the end */
} dbg_span;

struct perfc__dbg_ring {
  pthread_mutex_t mu;
  size_t next, n, cap;
  dbg_span spans[];
};

/* Which ring this thread writes (index + 1; 0 = not chosen yet). The same
 * index serves every tracer: each tracer has its own rings. */
static _Thread_local unsigned tls_ring;
static atomic_uint g_next_ring;

static perfc__dbg_ring *ring_of(perfc_tracer *tr) {
  if (tls_ring == 0)
    tls_ring = atomic_fetch_add(&g_next_ring, 1) % PERFC_TRACING_DEBUG_MAX_RINGS + 1;
  unsigned i = tls_ring - 1;
  perfc__dbg_ring *r = atomic_load_explicit(&tr->dbg_rings[i], memory_order_acquire);
  if (r != NULL)
    return r;
  size_t cap = tr->cfg.debug_ring;
  r = calloc(1, sizeof *r + cap * sizeof(dbg_span));
  if (r == NULL)
    return NULL;
  pthread_mutex_init(&r->mu, NULL);
  r->cap = cap;
  perfc__dbg_ring *expected = NULL;
  if (!atomic_compare_exchange_strong(&tr->dbg_rings[i], &expected, r)) {
    pthread_mutex_destroy(&r->mu);
    free(r);
    return expected; /* a thread sharing the index made it first */
  }
  return r;
}

static void put_attr(char *o, size_t cap, size_t *n, const perfc__attr *a) {
  char v[96];
  if (a->type == PERFC__ATTR_STR)
    snprintf(v, sizeof v, "%s", a->v.s);
  else
    snprintf(v, sizeof v, "%" PRId64, a->v.i);
  int k = snprintf(o + *n, cap - *n, "%s%s=%s", *n ? " " : "", a->key, v);
  if (k > 0)
    *n = *n + (size_t)k < cap ? *n + (size_t)k : cap - 1;
}

void perfc__tracing_debug_record(perfc_tracer *tr, const perfc__qspan *q) {
  perfc__dbg_ring *r = ring_of(tr);
  if (r == NULL)
    return;
  dbg_span d;
  memcpy(d.trace_id, q->trace_id, 16);
  memcpy(d.span_id, q->span_id, 8);
  memcpy(d.parent_id, q->parent_id, 8);
  d.has_parent = q->has_parent;
  d.kind = q->kind;
  d.status = q->status;
  d.start_unix_ns = q->start_unix_ns;
  d.end_unix_ns = q->end_unix_ns;
  d.grpc_code = -1;
  snprintf(d.name, sizeof d.name, "%s", q->name);
  size_t n = 0;
  d.attrs[0] = '\0';
  for (uint32_t i = 0; i < q->nattrs; i++) {
    if (q->attrs[i].type == PERFC__ATTR_INT &&
        strcmp(q->attrs[i].key, "rpc.grpc.status_code") == 0)
      d.grpc_code = q->attrs[i].v.i;
    put_attr(d.attrs, sizeof d.attrs, &n, &q->attrs[i]);
  }
  if (q->status_msg != NULL && n + 1 < sizeof d.attrs)
    snprintf(d.attrs + n, sizeof d.attrs - n, "%serror=\"%s\"", n ? " " : "",
             q->status_msg);
  pthread_mutex_lock(&r->mu);
  r->spans[r->next] = d;
  r->next = (r->next + 1) % r->cap;
  if (r->n < r->cap)
    r->n++;
  pthread_mutex_unlock(&r->mu);
}

void perfc__tracing_debug_free(perfc_tracer *tr) {
  for (size_t i = 0; i < PERFC_TRACING_DEBUG_MAX_RINGS; i++) {
    perfc__dbg_ring *r = atomic_load(&tr->dbg_rings[i]);
    if (r != NULL) {
      pthread_mutex_destroy(&r->mu);
      free(r);
    }
  }
}

/* ---- rendering ----------------------------------------------------------- */

typedef struct sbuf {
  char *p;
  size_t len, cap;
  int oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void sb_printf(sbuf *b, const char *fmt, ...) {
  if (b->oom)
    return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
      b->oom = 1;
      return;
    }
    if ((size_t)n < b->cap - b->len) {
      b->len += (size_t)n;
      return;
    }
    size_t cap = (b->cap + (size_t)n + 1) * 2;
    char *np = realloc(b->p, cap);
    if (np == NULL) {
      b->oom = 1;
      return;
    }
    b->p = np;
    b->cap = cap;
  }
}

static void hex(char *o, const uint8_t *b, size_t n) {
  static const char hx[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    o[2 * i] = hx[b[i] >> 4];
    o[2 * i + 1] = hx[b[i] & 15];
  }
  o[2 * n] = '\0';
}

static const char *kind_name(int k) {
  static const char *const names[] = {"?",      "INTERNAL", "SERVER",
                                      "CLIENT", "PRODUCER", "CONSUMER"};
  return k >= 1 && k <= 5 ? names[k] : names[0];
}

static double dur_ms(const dbg_span *s) {
  return (double)(s->end_unix_ns - s->start_unix_ns) / 1e6;
}

/* The span and, indented under it, its descendants among `all`. */
static void render_tree(sbuf *b, const dbg_span *all, size_t n, size_t at,
                        int depth, int64_t root_start) {
  const dbg_span *s = &all[at];
  char sid[17];
  hex(sid, s->span_id, 8);
  sb_printf(b, "  %*s%-8s %10.3f ms  +%.3f ms  %s  span=%s%s%s%s\n", depth * 2,
            "", kind_name(s->kind), dur_ms(s),
            (double)(s->start_unix_ns - root_start) / 1e6, s->name,
            sid, s->status == PERFC_SPAN_STATUS_ERROR ? " ERROR" : "",
            s->attrs[0] ? "  " : "", s->attrs);
  if (depth >= 16)
    return; /* ids are random; a cycle cannot happen, but stay bounded */
  /* children, by start time */
  int64_t after = INT64_MIN;
  for (;;) {
    size_t best = n;
    for (size_t i = 0; i < n; i++)
      if (all[i].has_parent &&
          memcmp(all[i].parent_id, s->span_id, 8) == 0 &&
          memcmp(all[i].trace_id, s->trace_id, 16) == 0 &&
          all[i].start_unix_ns > after &&
          (best == n || all[i].start_unix_ns < all[best].start_unix_ns))
        best = i;
    if (best == n)
      return;
    render_tree(b, all, n, best, depth + 1, root_start);
    after = all[best].start_unix_ns;
  }
}

static const dbg_span *g_sort_base; /* qsort has no context argument */

static int by_duration_desc(const void *x, const void *y) {
  double a = dur_ms(&g_sort_base[*(const size_t *)x]);
  double c = dur_ms(&g_sort_base[*(const size_t *)y]);
  return a < c ? 1 : a > c ? -1 : 0;
}

static int by_end_desc(const void *x, const void *y) {
  int64_t a = g_sort_base[*(const size_t *)x].end_unix_ns;
  int64_t c = g_sort_base[*(const size_t *)y].end_unix_ns;
  return a < c ? 1 : a > c ? -1 : 0;
}

static void render_calls(sbuf *b, const dbg_span *all, size_t n,
                         const size_t *calls, size_t ncalls) {
  for (size_t k = 0; k < ncalls; k++) {
    const dbg_span *c = &all[calls[k]];
    char tid[33];
    hex(tid, c->trace_id, 16);
    sb_printf(b, "trace %s  %.3f ms  %s", tid, dur_ms(c), c->name);
    if (c->grpc_code >= 0)
      sb_printf(b, "  grpc_code=%s",
                perfc_status_name((perfc_status_code)c->grpc_code));
    sb_printf(b, "\n");
    render_tree(b, all, n, calls[k], 0, c->start_unix_ns);
  }
}

static pthread_mutex_t g_sort_mu = PTHREAD_MUTEX_INITIALIZER;

int perfc_tracing_debug_render(perfc_tracer *tr, char **out, size_t *out_len) {
  if (tr == NULL || out == NULL)
    return perfc__fail(PERFC_EINVAL, "tracing: NULL tracer or out");
  if (!tr->cfg.debug)
    return perfc__fail(PERFC_ENOENT,
                       "tracing: debug_traces is off for this tracer");
  size_t total = 0;
  for (size_t i = 0; i < PERFC_TRACING_DEBUG_MAX_RINGS; i++) {
    perfc__dbg_ring *r = atomic_load(&tr->dbg_rings[i]);
    if (r != NULL)
      total += r->cap;
  }
  dbg_span *all = malloc((total ? total : 1) * sizeof *all);
  size_t *calls = malloc((total ? total : 1) * sizeof *calls);
  if (all == NULL || calls == NULL) {
    free(all);
    free(calls);
    return perfc__fail(PERFC_ENOMEM, "tracing: out of memory for /debug/traces");
  }
  size_t n = 0;
  for (size_t i = 0; i < PERFC_TRACING_DEBUG_MAX_RINGS; i++) {
    perfc__dbg_ring *r = atomic_load(&tr->dbg_rings[i]);
    if (r == NULL)
      continue;
    pthread_mutex_lock(&r->mu);
    for (size_t k = 0; k < r->n && n < total; k++)
      all[n++] = r->spans[k];
    pthread_mutex_unlock(&r->mu);
  }
  /* A call: a server span, or a root (a trace that began here). */
  size_t ncalls = 0, nfailed = 0;
  for (size_t i = 0; i < n; i++)
    if (all[i].kind == PERFC_SPAN_SERVER || !all[i].has_parent)
      calls[ncalls++] = i;
  size_t *failed = malloc((ncalls ? ncalls : 1) * sizeof *failed);
  if (failed == NULL) {
    free(all);
    free(calls);
    return perfc__fail(PERFC_ENOMEM, "tracing: out of memory for /debug/traces");
  }
  for (size_t k = 0; k < ncalls; k++) {
    const dbg_span *c = &all[calls[k]];
    if (c->status == PERFC_SPAN_STATUS_ERROR || c->grpc_code > 0)
      failed[nfailed++] = calls[k];
  }
  pthread_mutex_lock(&g_sort_mu);
  g_sort_base = all;
  qsort(calls, ncalls, sizeof *calls, by_duration_desc);
  qsort(failed, nfailed, sizeof *failed, by_end_desc);
  pthread_mutex_unlock(&g_sort_mu);
  size_t show = PERFC_TRACING_DEBUG_LIST_CALLS;
  sbuf b = {0};
  sb_printf(&b,
            "# perfc /debug/traces, service %s: %zu recent sampled spans in "
            "memory (%u per thread), %zu calls\n"
            "# times in ms; +offset from the call's start; attributes as "
            "exported\n\n",
            tr->cfg.service_name, n, tr->cfg.debug_ring, ncalls);
  sb_printf(&b, "== slowest %zu ==\n", ncalls < show ? ncalls : show);
  render_calls(&b, all, n, calls, ncalls < show ? ncalls : show);
  sb_printf(&b, "\n== failed, latest first: %zu ==\n",
            nfailed < show ? nfailed : show);
  render_calls(&b, all, n, failed, nfailed < show ? nfailed : show);
  free(all);
  free(calls);
  free(failed);
  if (b.oom || b.p == NULL) {
    free(b.p);
    return perfc__fail(PERFC_ENOMEM, "tracing: out of memory for /debug/traces");
  }
  *out = b.p;
  if (out_len)
    *out_len = b.len;
  return 0;
}
