/*
 * tracing_export.c — the batch span processor and the OTLP/HTTP exporter.
 *
 * Room: runtime/src/observe. Spans wait in a bounded lock-free queue; one
 * thread per tracer takes them in batches, writes an
 * ExportTraceServiceRequest with its own OTLP encoder (below), gzips it
 * with zlib when asked and POSTs it with libcurl. Which library does what:
 * libcurl speaks HTTP (connections, keep-alive, TLS, timeouts), zlib
 * compresses, protobuf-c decodes the receiver's answer (messages generated
 * at build time from proto/opentelemetry/...); perfc owns the encoding,
 * the queue, batching, retry policy and counting.
 *
 * Retries follow the OTLP/HTTP specification: 429, 502, 503 and 504 (and
 * no answer at all) are retried with exponential backoff and jitter, or
 * after the server's Retry-After; any other 4xx/5xx drops the batch.
 */
#include "observe/tracing_internal.h"
#include "core/error_internal.h"
#include "core/thread_internal.h"
#include "perfc/log.h"
#include "server/server_internal.h"

#include "opentelemetry/proto/collector/trace/v1/trace_service.pb-c.h"

#include <curl/curl.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

/* A receiver's answer is read up to this size (a partial-success message
 * or an error text); more is discarded. */
#define MAX_RESPONSE_BYTES 65536

/* The encoder's writers must inline for ob_span's local buffer copy to
 * stay in registers. */
#define OB_INLINE static inline __attribute__((always_inline))

/* ---- queue ------------------------------------------------------------------------ */

static void count_full(perfc_tracer *tr) {
  atomic_fetch_add_explicit(&tr->dropped_full, 1, memory_order_relaxed);
  perfc_counter_inc(tr->m_drop_full);
}

void *perfc__tracing_claim(perfc_tracer *tr, size_t size, size_t *ticket) {
  size_t pos = atomic_load_explicit(&tr->enq, memory_order_relaxed);
  for (;;) {
    perfc__qcell *c = &tr->cells[pos & tr->mask];
    size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
    intptr_t dif = (intptr_t)seq - (intptr_t)pos;
    if (dif == 0) {
      if (atomic_compare_exchange_weak_explicit(&tr->enq, &pos, pos + 1,
                                                memory_order_relaxed,
                                                memory_order_relaxed))
        break;
    } else if (dif < 0) {
      /* Full: drop and count. The call never waits for the exporter. */
      count_full(tr);
      return NULL;
    } else {
      pos = atomic_load_explicit(&tr->enq, memory_order_relaxed);
    }
  }
  /* The cell is ours until published; the exporter gave its buffer back
   * before it made the cell free. */
  perfc__qcell *c = &tr->cells[pos & tr->mask];
  void *mem;
  if (size <= PERFC__QCELL_BYTES) {
    if (c->buf == NULL)
      c->buf = malloc(PERFC__QCELL_BYTES);
    mem = c->buf;
  } else {
    mem = malloc(size);
  }
  *ticket = pos;
  if (mem == NULL) {
    /* The claimed cell still has to be published, empty. */
    perfc__tracing_publish(tr, pos, NULL);
    count_full(tr);
  }
  return mem;
}

void perfc__tracing_publish(perfc_tracer *tr, size_t pos, perfc__qspan *q) {
  perfc__qcell *c = &tr->cells[pos & tr->mask];
  c->span = q;
  atomic_store_explicit(&c->seq, pos + 1, memory_order_release);
  /* Wake the exporter when a full batch is waiting; otherwise its
   * schedule delay does. */
  size_t deq = atomic_load_explicit(&tr->deq, memory_order_relaxed);
  if (pos + 1 - deq == tr->cfg.max_batch)
    sem_post(&tr->wake);
}

/* Takes the next published cell: 1 with its span in *q (NULL for an empty
 * one), 0 when none is ready. The cell stays the exporter's until
 * release_cells(). */
static int dequeue(perfc_tracer *tr, perfc__qspan **q) {
  size_t pos = atomic_load_explicit(&tr->deq, memory_order_relaxed);
  perfc__qcell *c = &tr->cells[pos & tr->mask];
  size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
  if ((intptr_t)seq - (intptr_t)(pos + 1) < 0)
    return 0;
  *q = c->span;
  atomic_store_explicit(&tr->deq, pos + 1, memory_order_relaxed);
  return 1;
}

/* Gives cells [from, to) back to the producers: their spans are encoded
 * (or dropped). A span in a block of its own is freed here. */
static void release_cells(perfc_tracer *tr, size_t from, size_t to) {
  for (size_t pos = from; pos != to; pos++) {
    perfc__qcell *c = &tr->cells[pos & tr->mask];
    if (c->span != NULL && (void *)c->span != c->buf)
      free(c->span);
    c->span = NULL;
    atomic_store_explicit(&c->seq, pos + tr->mask + 1, memory_order_release);
  }
}

/* ---- the OTLP encoder ---------------------------------------------------------- */

/* ExportTraceServiceRequest is written by hand, straight from the queued
 * spans, instead of building protobuf-c messages and packing them: the
 * descriptor-driven packer sizes every nested message once per enclosing
 * level and walks field tables per field, which cost about as much per
 * span as the traced call itself. The body is written back to front into a
 * buffer the exporter keeps: a length-delimited field's length is known
 * the moment its contents are written, so there is no sizing pass and no
 * copy. Fields are written in descending number, repeated ones from last to
 * first, so the result reads in the order protobuf-c packs (ascending
 * field numbers, elements in order); proto3 rules as protobuf-c applies
 * them: a zero scalar, empty string or empty bytes is left out, a present
 * submessage or oneof member is always written. test_tracing_otlp decodes
 * the body with the generated messages and compares it byte for byte with
 * protobuf-c's packing of the same request. */

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };

/* Bytes written so far, counted from the end: stays valid when the buffer
 * grows (growing keeps the written tail at the end). */
OB_INLINE size_t ob_off(const perfc__otlp_buf *b) {
  return (size_t)(b->mem + b->cap - b->p);
}

static int ob_grow(perfc__otlp_buf *b, size_t n) {
  size_t used = ob_off(b);
  size_t cap = b->cap ? b->cap * 2 : 16384;
  while (cap < used + n)
    cap *= 2;
  uint8_t *m = malloc(cap);
  if (m == NULL)
    return -1;
  if (used)
    memcpy(m + cap - used, b->p, used);
  free(b->mem);
  b->mem = m;
  b->cap = cap;
  b->p = m + cap - used;
  return 0;
}

/* Room for `n` more bytes in front of what is written. */
static inline int ob_need(perfc__otlp_buf *b, size_t n) {
  return (size_t)(b->p - b->mem) >= n ? 0 : ob_grow(b, n);
}

/* The callers reserve room first: a varint is at most 10 bytes, a tag 2.
 * Its length first, then its bytes forward: no staging copy. */
OB_INLINE void ob_varint(perfc__otlp_buf *b, uint64_t v) {
  if (v < 0x80) {
    *--b->p = (uint8_t)v;
    return;
  }
  size_t n = 2;
  for (uint64_t x = v >> 14; x; x >>= 7)
    n++;
  b->p -= n;
  uint8_t *o = b->p;
  while (v >= 0x80) {
    *o++ = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  *o = (uint8_t)v;
}

OB_INLINE void ob_tag(perfc__otlp_buf *b, unsigned field, unsigned wt) {
  uint32_t t = field << 3 | wt;
  if (t < 0x80) {
    *--b->p = (uint8_t)t;
  } else {
    ob_varint(b, t);
  }
}

/* A length-delimited field whose contents end `mark` bytes from the end. */
static inline int ob_close(perfc__otlp_buf *b, unsigned field, size_t mark) {
  if (ob_need(b, 12) != 0)
    return -1;
  ob_varint(b, ob_off(b) - mark);
  ob_tag(b, field, WT_LEN);
  return 0;
}

static inline int ob_bytes(perfc__otlp_buf *b, unsigned field, const void *v,
                           size_t n) {
  if (ob_need(b, n + 12) != 0)
    return -1;
  b->p -= n;
  memcpy(b->p, v, n);
  ob_varint(b, n);
  ob_tag(b, field, WT_LEN);
  return 0;
}

/* A proto3 string field: left out when empty. */
static inline int ob_str(perfc__otlp_buf *b, unsigned field, const char *s) {
  size_t n = s ? strlen(s) : 0;
  return n ? ob_bytes(b, field, s, n) : 0;
}

/* Writers that do not check for room: ob_span reserves a bound on the
 * span's parts once (span_tail_bound, span_head_bound, each attribute)
 * and then writes with these. */
OB_INLINE void put_close(perfc__otlp_buf *b, unsigned field, size_t mark) {
  ob_varint(b, ob_off(b) - mark);
  ob_tag(b, field, WT_LEN);
}

OB_INLINE void put_bytes(perfc__otlp_buf *b, unsigned field, const void *v,
                             size_t n) {
  b->p -= n;
  memcpy(b->p, v, n);
  ob_varint(b, n);
  ob_tag(b, field, WT_LEN);
}

OB_INLINE void put_str(perfc__otlp_buf *b, unsigned field, const char *s,
                           size_t n) {
  if (n)
    put_bytes(b, field, s, n);
}

OB_INLINE void put_uint(perfc__otlp_buf *b, unsigned field, uint64_t v) {
  if (v == 0)
    return;
  ob_varint(b, v);
  ob_tag(b, field, WT_VARINT);
}

/* Little-endian stores: one move on x86 and other little-endian hosts
 * (the byte loop cost about 20 instructions per value). */
OB_INLINE void put_le64(uint8_t *o, uint64_t v) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  memcpy(o, &v, 8);
#else
  for (int i = 0; i < 8; i++)
    o[i] = (uint8_t)(v >> (8 * i));
#endif
}

OB_INLINE void put_fixed64(perfc__otlp_buf *b, unsigned field, uint64_t v) {
  if (v == 0)
    return;
  b->p -= 8;
  put_le64(b->p, v);
  ob_tag(b, field, WT_I64);
}

/* KeyValue as element `field`, without room checks (see ob_kv). */
OB_INLINE void put_kv(perfc__otlp_buf *b, unsigned field, const char *key,
                          size_t klen, int type, const char *sv, size_t svlen,
                          int64_t iv) {
  size_t kv = ob_off(b);
  if (type == PERFC__ATTR_STR) {
    put_bytes(b, 1, sv, svlen);
  } else {
    ob_varint(b, type == PERFC__ATTR_BOOL ? (uint64_t)(iv != 0) : (uint64_t)iv);
    ob_tag(b, type == PERFC__ATTR_BOOL ? 2 : 3, WT_VARINT);
  }
  put_close(b, 2, kv);
  put_str(b, 1, key, klen);
  put_close(b, field, kv);
}

/* KeyValue{key = 1, value = 2: AnyValue{string_value = 1 | bool_value = 2 |
 * int_value = 3}} as element `field` of its parent. The AnyValue member is
 * a oneof: written even when it is "" or 0. */
static int ob_kv(perfc__otlp_buf *b, unsigned field, const char *key, int type,
                 const char *sv, size_t svlen, int64_t iv) {
  size_t kv = ob_off(b);
  size_t any = kv;
  if (type == PERFC__ATTR_STR) {
    if (ob_bytes(b, 1, sv, svlen) != 0)
      return -1;
  } else {
    if (ob_need(b, 12) != 0)
      return -1;
    ob_varint(b, type == PERFC__ATTR_BOOL ? (uint64_t)(iv != 0) : (uint64_t)iv);
    ob_tag(b, type == PERFC__ATTR_BOOL ? 2 : 3, WT_VARINT);
  }
  if (ob_close(b, 2, any) != 0 || ob_str(b, 1, key) != 0)
    return -1;
  return ob_close(b, field, kv);
}

/* Room for the fields a span writes after its attributes (back to front:
 * flags, status, events), and before them. A tag is at most 2 bytes here,
 * a varint 10, a length 10; a KeyValue has 4 tags, 3 lengths and a value:
 * at most 64 bytes besides its strings; each attribute reserves its own. */
static size_t span_tail_bound(const perfc__qspan *q) {
  size_t n = 64 + (size_t)q->status_msg_len;
  for (uint32_t i = 0; i < q->nevents; i++)
    n += 224 + (size_t)q->events[i].name_len;
  return n;
}

static size_t span_head_bound(const perfc__qspan *q) {
  return 192 + (size_t)q->name_len + q->tracestate_len +
         (q->pre ? q->pre_len : 0) + (q->pre_head ? q->pre_head_len : 0);
}

/* One Span, as element 2 of ScopeSpans: a room check per part (the fields
 * after the attributes, each attribute, the fields before), then
 * unchecked writes with the lengths the span carries (no strlen). */
static int ob_span(perfc__otlp_buf *ob, const perfc__qspan *q) {
  if (ob_need(ob, span_tail_bound(q)) != 0)
    return -1;
  /* The unchecked writes go through a local copy of the buffer's
   * pointers: a byte stored through ob->p may alias *ob, so the compiler
   * reloaded the pointers after every byte; the copy's address never
   * leaves this function, so they stay in registers. Reservations (which
   * may move the buffer) go through ob, and the copy is taken again. */
  perfc__otlp_buf w = *ob, *b = &w;
  size_t span = ob_off(b);
  /* flags = 16: the W3C trace flags, plus "has is_remote" and "is_remote"
   * for the parent, as OTLP 1.1 defines. */
  uint32_t flags = q->flags | 0x100u |
                   (q->has_parent && q->kind == PERFC_SPAN_SERVER ? 0x200u : 0);
  b->p -= 4;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  memcpy(b->p, &flags, 4);
#else
  for (int i = 0; i < 4; i++)
    b->p[i] = (uint8_t)(flags >> (8 * i));
#endif
  ob_tag(b, 16, WT_I32);
  /* status = 15: Status{message = 2, code = 3}, always present */
  size_t st = ob_off(b);
  put_uint(b, 3, q->status);
  put_str(b, 2, q->status_msg, q->status_msg ? q->status_msg_len : 0);
  put_close(b, 15, st);
  put_uint(b, 12, q->dropped_events);
  /* events = 11: Event{time_unix_nano = 1, name = 2, attributes = 3} */
  for (uint32_t i = q->nevents; i-- > 0;) {
    const perfc__event *e = &q->events[i];
    size_t ev = ob_off(b);
    if (e->msg_type != NULL) {
      put_kv(b, 3, "message.id", 10, PERFC__ATTR_INT, NULL, 0, e->msg_id);
      put_kv(b, 3, "message.type", 12, PERFC__ATTR_STR, e->msg_type,
             strlen(e->msg_type), 0);
    }
    put_str(b, 2, e->name, e->name_len);
    put_fixed64(b, 1, (uint64_t)e->time_unix_ns);
    put_close(b, 11, ev);
  }
  put_uint(b, 10, q->dropped_attrs);
  ob->p = w.p;
  uint32_t pre_n = q->pre != NULL && q->pre_n <= q->nattrs ? q->pre_n : 0;
  for (uint32_t i = q->nattrs; i-- > pre_n;) {
    const perfc__attr *a = &q->attrs[i];
    if (ob_need(ob, 64 + (size_t)a->klen + a->vlen) != 0)
      return -1;
    w = *ob;
    put_kv(b, 9, a->key, a->klen, a->type, a->v.s, a->vlen, a->v.i);
    ob->p = w.p;
  }
  if (ob_need(ob, span_head_bound(q)) != 0)
    return -1;
  w = *ob;
  if (pre_n) {
    b->p -= q->pre_len;
    memcpy(b->p, q->pre, q->pre_len);
  }
  put_fixed64(b, 8, (uint64_t)q->end_unix_ns);
  put_fixed64(b, 7, (uint64_t)q->start_unix_ns);
  if (q->pre_head != NULL) {
    b->p -= q->pre_head_len;
    memcpy(b->p, q->pre_head, q->pre_head_len);
  } else {
    put_uint(b, 6, q->kind);
    put_str(b, 5, q->name, q->name_len);
  }
  if (q->has_parent)
    put_bytes(b, 4, q->parent_id, 8);
  put_str(b, 3, q->tracestate, q->tracestate ? q->tracestate_len : 0);
  put_bytes(b, 2, q->span_id, 8);
  put_bytes(b, 1, q->trace_id, 16);
  put_close(b, 2, span);
  ob->p = w.p;
  return 0;
}

/* ResourceSpans.resource = 1: Resource{attributes = 1}: service.name, the
 * telemetry.sdk.* attributes, then OTEL_RESOURCE_ATTRIBUTES' pairs in the
 * order given (service.name among them is the one already there). The
 * pairs are written last to first, so their starts are collected first. */
static int ob_resource(perfc__otlp_buf *b, const perfc__tracing_cfg *cfg) {
  size_t n = 0;
  for (const char *p = cfg->resource_attrs; p && *p; p += strlen(p) + 1)
    n++;
  const char **pairs = malloc((n ? n : 1) * sizeof *pairs);
  if (pairs == NULL)
    return -1;
  n = 0;
  for (const char *p = cfg->resource_attrs; p && *p; p += strlen(p) + 1)
    if (strncmp(p, "service.name=", 13) != 0 && strchr(p, '=') != NULL)
      pairs[n++] = p;
  size_t res = ob_off(b);
  int rc = 0;
  for (size_t i = n; i-- > 0 && rc == 0;) {
    const char *eq = strchr(pairs[i], '=');
    size_t kv = ob_off(b);
    /* KeyValue{key, value} with a key that is not NUL-terminated here */
    size_t any = kv;
    rc = ob_bytes(b, 1, eq + 1, strlen(eq + 1));
    if (rc == 0)
      rc = ob_close(b, 2, any);
    if (rc == 0 && eq > pairs[i])
      rc = ob_bytes(b, 1, pairs[i], (size_t)(eq - pairs[i]));
    if (rc == 0)
      rc = ob_close(b, 1, kv);
  }
  free(pairs);
  static const char *const sdk[][2] = {
      {"telemetry.sdk.version", PERFC_TRACING_VERSION},
      {"telemetry.sdk.language", "c"},
      {"telemetry.sdk.name", "perfc"},
  };
  for (size_t i = 0; i < 3 && rc == 0; i++)
    rc = ob_kv(b, 1, sdk[i][0], PERFC__ATTR_STR, sdk[i][1], strlen(sdk[i][1]), 0);
  if (rc == 0)
    rc = ob_kv(b, 1, "service.name", PERFC__ATTR_STR, cfg->service_name,
               strlen(cfg->service_name), 0);
  if (rc == 0)
    rc = ob_close(b, 1, res);
  return rc;
}

int perfc__otlp_encode(perfc__otlp_buf *b, const perfc__tracing_cfg *cfg,
                       perfc__qspan *const *spans, size_t n,
                       const uint8_t **out, size_t *len) {
  if (b->mem == NULL && ob_grow(b, 0) != 0)
    return PERFC_ENOMEM;
  b->p = b->mem + b->cap; /* empty: reuse the whole buffer */
  size_t rs = 0, ss = 0;
  /* ExportTraceServiceRequest{resource_spans = 1: ResourceSpans{resource =
   * 1, scope_spans = 2: ScopeSpans{scope = 1, spans = 2}}} */
  for (size_t i = n; i-- > 0;)
    if (ob_span(b, spans[i]) != 0)
      return PERFC_ENOMEM;
  size_t scope = ob_off(b);
  if (ob_str(b, 2, PERFC_TRACING_VERSION) != 0 || ob_str(b, 1, "perfc") != 0 ||
      ob_close(b, 1, scope) != 0 || ob_close(b, 2, ss) != 0 ||
      ob_resource(b, cfg) != 0 || ob_close(b, 1, rs) != 0)
    return PERFC_ENOMEM;
  *out = b->p;
  *len = ob_off(b);
  return 0;
}

void perfc__otlp_buf_free(perfc__otlp_buf *b) {
  free(b->mem);
  memset(b, 0, sizeof *b);
}

uint8_t *perfc__otlp_head_encode(const char *name, size_t name_len, int kind,
                                 size_t *len) {
  perfc__otlp_buf b = {0};
  if (ob_grow(&b, 32 + name_len) != 0)
    return NULL;
  put_uint(&b, 6, (uint64_t)kind);
  put_str(&b, 5, name, name_len);
  *len = ob_off(&b);
  uint8_t *out = malloc(*len ? *len : 1);
  if (out != NULL)
    memcpy(out, b.p, *len);
  perfc__otlp_buf_free(&b);
  return out;
}

uint8_t *perfc__otlp_attrs_encode(const perfc__attr *attrs, size_t n,
                                  size_t *len) {
  perfc__otlp_buf b = {0};
  size_t need = 16;
  for (size_t i = 0; i < n; i++)
    need += 64 + (size_t)attrs[i].klen + attrs[i].vlen;
  if (ob_grow(&b, need) != 0)
    return NULL;
  for (size_t i = n; i-- > 0;)
    put_kv(&b, 9, attrs[i].key, attrs[i].klen, attrs[i].type, attrs[i].v.s,
           attrs[i].vlen, attrs[i].v.i);
  *len = ob_off(&b);
  uint8_t *out = malloc(*len ? *len : 1);
  if (out != NULL)
    memcpy(out, b.p, *len);
  perfc__otlp_buf_free(&b);
  return out;
}

/* The exporter's compressor, kept across batches: deflateReset instead of
 * a new deflateInit2 (which allocates about 256 KiB of state) per batch. */
typedef struct gz_ctx {
  z_stream z;
  int ready;
  uint8_t *out;
  size_t cap;
} gz_ctx;

static int gzip_body(gz_ctx *g, const uint8_t *in, size_t n, const uint8_t **out,
                     size_t *outlen) {
  if (!g->ready) {
    memset(&g->z, 0, sizeof g->z);
    /* windowBits 15 + 16: a gzip wrapper, which Content-Encoding: gzip
     * means. Level 1: span batches are repetitive (keys, names, ids'
     * structure) and shrink most of the way at the fastest level; the
     * default level 6 cost about as much CPU per span as the call being
     * traced (callgrind). */
    if (deflateInit2(&g->z, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8,
                     Z_DEFAULT_STRATEGY) != Z_OK)
      return PERFC_ENOMEM;
    g->ready = 1;
  } else if (deflateReset(&g->z) != Z_OK) {
    return PERFC_EIO;
  }
  size_t cap = deflateBound(&g->z, (uLong)n);
  if (cap > g->cap) {
    uint8_t *m = realloc(g->out, cap);
    if (m == NULL)
      return PERFC_ENOMEM;
    g->out = m;
    g->cap = cap;
  }
  g->z.next_in = (Bytef *)in;
  g->z.avail_in = (uInt)n;
  g->z.next_out = g->out;
  g->z.avail_out = (uInt)g->cap;
  if (deflate(&g->z, Z_FINISH) != Z_STREAM_END)
    return PERFC_EIO;
  *out = g->out;
  *outlen = g->z.total_out;
  return 0;
}

static void gz_free(gz_ctx *g) {
  if (g->ready)
    deflateEnd(&g->z);
  free(g->out);
}

/* ---- HTTP ---------------------------------------------------------------------------- */

typedef struct http_answer {
  long status;
  int64_t retry_after_ms; /* -1 when absent */
  char body[MAX_RESPONSE_BYTES];
  size_t body_len;
} http_answer;

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  http_answer *ans = ud;
  size_t len = size * n, room = sizeof ans->body - ans->body_len;
  memcpy(ans->body + ans->body_len, p, len < room ? len : room);
  ans->body_len += len < room ? len : room;
  return len;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
  http_answer *ans = ud;
  size_t len = size * n;
  if (len > 12 && strncasecmp(p, "retry-after:", 12) == 0) {
    char v[64];
    size_t k = len - 12 < sizeof v - 1 ? len - 12 : sizeof v - 1;
    memcpy(v, p + 12, k);
    v[k] = '\0';
    char *s = v;
    while (*s == ' ' || *s == '\t')
      s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' '))
      *--e = '\0';
    char *end;
    long secs = strtol(s, &end, 10);
    if (end != s && *end == '\0' && secs >= 0) {
      ans->retry_after_ms = (int64_t)secs * 1000;
    } else {
      /* An HTTP-date: curl parses the formats RFC 9110 allows. */
      time_t t = curl_getdate(s, NULL);
      if (t != -1) {
        int64_t d = ((int64_t)t - (int64_t)time(NULL)) * 1000;
        ans->retry_after_ms = d > 0 ? d : 0;
      }
    }
  }
  return len;
}

/* One POST. Returns 0 with `ans` filled when the server answered, or
 * PERFC_EIO when it did not (connection refused, timeout). */
static int post(perfc_tracer *tr, const uint8_t *body, size_t len,
                int64_t timeout_ms, http_answer *ans) {
  CURL *h = tr->http; /* URL, headers and method: set once, at start */
  ans->status = 0;
  ans->retry_after_ms = -1;
  ans->body_len = 0;
  curl_easy_setopt(h, CURLOPT_POSTFIELDS, (const char *)body);
  curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(timeout_ms > 0 ? timeout_ms : 1));
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                   (long)(timeout_ms > 0 ? timeout_ms : 1));
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, ans);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, ans);
  CURLcode rc = curl_easy_perform(h);
  atomic_fetch_add_explicit(&tr->requests, 1, memory_order_relaxed);
  if (rc != CURLE_OK) {
    perfc_log_ratelimited(PERFC_LOG_WARN, PERFC_LOG_SITE,
                          "tracing: export to %s failed: %s", tr->cfg.endpoint,
                          curl_easy_strerror(rc));
    return PERFC_EIO;
  }
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &ans->status);
  return 0;
}

/* ---- the exporter thread ------------------------------------------------------------- */

static int64_t mono_ms(void) { return perfc__now_ns() / 1000000; }

/* Waits up to `ms` or until woken (a full batch, a flush, the stop). */
static void nap(perfc_tracer *tr, int64_t ms) {
  if (ms <= 0)
    return;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (ms % 1000) * 1000000;
  if (ts.tv_nsec >= 1000000000) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000;
  }
  while (sem_timedwait(&tr->wake, &ts) != 0 && errno == EINTR)
    ;
}

static void count_drop(perfc_tracer *tr, size_t n, int shutdown) {
  atomic_fetch_add_explicit(&tr->dropped_export, n, memory_order_relaxed);
  perfc_counter_add(shutdown ? tr->m_drop_shutdown : tr->m_drop_export, n);
}

/* Exports one batch, retrying as the specification says, within the
 * retry budget and (when stopping) the shutdown deadline. */
typedef struct exp_bufs {
  perfc__otlp_buf enc;
  gz_ctx gz;
} exp_bufs;

/* Exports spans[0..n), which sit in queue cells [from, to): the cells are
 * given back as soon as the request is encoded, so producers can reuse
 * them while the exporter compresses, posts and retries. */
static void export_batch(perfc_tracer *tr, exp_bufs *xb, perfc__qspan **spans,
                         size_t n, size_t from, size_t to, int64_t deadline_ms) {
  const uint8_t *raw, *body;
  size_t rawlen, len;
  int erc = perfc__otlp_encode(&xb->enc, &tr->cfg, spans, n, &raw, &rawlen);
  release_cells(tr, from, to);
  if (erc != 0) {
    count_drop(tr, n, 0);
    return;
  }
  body = raw;
  len = rawlen;
  if (tr->cfg.gzip && gzip_body(&xb->gz, raw, rawlen, &body, &len) != 0) {
    count_drop(tr, n, 0);
    return;
  }
  int64_t t0 = mono_ms();
  int64_t backoff = tr->cfg.retry_initial_ms;
  http_answer *ans = malloc(sizeof *ans); /* 64 KiB: not on the stack */
  if (ans == NULL) {
    count_drop(tr, n, 0);
    return;
  }
  for (int attempt = 0;; attempt++) {
    int64_t now = mono_ms();
    int64_t limit = tr->cfg.timeout_ms;
    if (deadline_ms > 0 && deadline_ms - now < limit)
      limit = deadline_ms - now;
    if (limit <= 0) {
      count_drop(tr, n, 1);
      break;
    }
    if (attempt > 0)
      atomic_fetch_add_explicit(&tr->retries, 1, memory_order_relaxed);
    int rc = post(tr, body, len, limit, ans);
    if (rc == 0 && ans->status >= 200 && ans->status < 300) {
      size_t rejected = 0;
      Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceResponse *r =
          ans->body_len > 0
              ? opentelemetry__proto__collector__trace__v1__export_trace_service_response__unpack(
                    NULL, ans->body_len, (const uint8_t *)ans->body)
              : NULL;
      if (r != NULL) {
        if (r->partial_success != NULL && r->partial_success->rejected_spans > 0) {
          rejected = (size_t)r->partial_success->rejected_spans;
          if (rejected > n)
            rejected = n;
          perfc_log_ratelimited(PERFC_LOG_WARN, PERFC_LOG_SITE,
                                "tracing: receiver rejected %zu spans: %.200s",
                                rejected, r->partial_success->error_message);
        }
        opentelemetry__proto__collector__trace__v1__export_trace_service_response__free_unpacked(r, NULL);
      }
      atomic_fetch_add_explicit(&tr->exported, n - rejected, memory_order_relaxed);
      perfc_counter_add(tr->m_exported, n - rejected);
      if (rejected)
        count_drop(tr, rejected, 0);
      break;
    }
    int retryable = rc != 0 || ans->status == 429 || ans->status == 502 ||
                    ans->status == 503 || ans->status == 504;
    if (rc == 0 && !retryable) {
      perfc_log_ratelimited(PERFC_LOG_WARN, PERFC_LOG_SITE,
                            "tracing: %s answered %ld; %zu spans dropped: %.200s",
                            tr->cfg.endpoint, ans->status, n,
                            ans->body_len ? "(see receiver)" : "");
      count_drop(tr, n, 0);
      break;
    }
    /* Retry: after Retry-After when given, else the backoff with full
     * jitter in [backoff/2, backoff]. */
    int64_t wait = ans->retry_after_ms >= 0 && rc == 0
                       ? ans->retry_after_ms
                       : backoff / 2 + (int64_t)(perfc__now_ns() % (backoff / 2 + 1));
    backoff = backoff * 2 > tr->cfg.retry_max_ms ? tr->cfg.retry_max_ms : backoff * 2;
    now = mono_ms();
    int64_t budget_end = t0 + tr->cfg.retry_elapsed_ms; /* 0: no_retry */
    if (deadline_ms > 0 && deadline_ms < budget_end)
      budget_end = deadline_ms;
    if (now + wait >= budget_end) {
      count_drop(tr, n, deadline_ms > 0 && budget_end == deadline_ms);
      break;
    }
    /* Sleep through the wait; a stop only shortens it by ending the
     * budget (deadline_ms is set once stopping). */
    int64_t until = now + wait;
    while ((now = mono_ms()) < until) {
      if (atomic_load(&tr->stop) && deadline_ms == 0) {
        /* Stopping began during the wait: retry once more right away
         * within the grace instead of sleeping it away. */
        deadline_ms = now + tr->cfg.grace_ms;
        break;
      }
      nap(tr, until - now);
    }
  }
  free(ans);
}

static void *exporter_main(void *arg) {
  perfc_tracer *tr = arg;
  size_t cap = tr->cfg.max_batch;
  perfc__qspan **batch = calloc(cap, sizeof *batch);
  exp_bufs *xb = calloc(1, sizeof *xb);
  if (batch == NULL || xb == NULL) {
    /* Cannot export: drain forever, counting, so producers never wait. */
    perfc_log(PERFC_LOG_ERROR, "tracing: exporter out of memory; spans are dropped");
  }
  int64_t next = mono_ms() + tr->cfg.delay_ms;
  int64_t deadline = 0;
  for (;;) {
    int stopping = atomic_load(&tr->stop);
    if (stopping && deadline == 0)
      deadline = mono_ms() + tr->cfg.grace_ms;
    pthread_mutex_lock(&tr->mu);
    size_t target = tr->flush_target;
    pthread_mutex_unlock(&tr->mu);
    size_t queued = atomic_load(&tr->enq) - atomic_load(&tr->deq);
    int flushing = atomic_load(&tr->deq) < target;
    if (!stopping && !flushing && queued < tr->cfg.max_batch &&
        mono_ms() < next) {
      nap(tr, next - mono_ms());
      continue;
    }
    /* Export everything queued now, batch by batch. */
    size_t n, taken, have;
    do {
      n = 0;
      taken = 0;
      have = 0;
      size_t from = atomic_load_explicit(&tr->deq, memory_order_relaxed);
      perfc__qspan *q;
      while (taken < cap && dequeue(tr, &q)) {
        taken++;
        have += q != NULL;
        if (q != NULL && batch != NULL)
          batch[n++] = q;
      }
      atomic_fetch_add_explicit(&tr->popped, taken, memory_order_relaxed);
      if (n > 0 && batch != NULL && xb != NULL &&
          !(deadline > 0 && mono_ms() >= deadline)) {
        export_batch(tr, xb, batch, n, from, from + taken, deadline);
      } else {
        /* No memory to export with, or the grace ended. */
        if (have > 0)
          count_drop(tr, have, deadline > 0);
        release_cells(tr, from, from + taken);
      }
      pthread_mutex_lock(&tr->mu);
      tr->done_pos = atomic_load(&tr->deq);
      pthread_cond_broadcast(&tr->cv);
      pthread_mutex_unlock(&tr->mu);
      /* Another batch now only when it is full, or everything must go (a
       * stop, a flush): the few spans that arrived while this one was
       * sent wait for the next full batch or the schedule, instead of
       * costing a request of their own (a POST costs about as much as
       * encoding 150 spans). */
    } while (taken == cap &&
             (stopping || atomic_load(&tr->deq) < target ||
              atomic_load(&tr->enq) - atomic_load(&tr->deq) >= cap));
    next = mono_ms() + tr->cfg.delay_ms;
    if (stopping)
      break;
  }
  /* Whatever is left (the grace ended) is dropped and counted. */
  perfc__qspan *q;
  size_t left = 0, from = atomic_load_explicit(&tr->deq, memory_order_relaxed);
  size_t taken = 0;
  while (dequeue(tr, &q)) {
    taken++;
    left += q != NULL;
  }
  release_cells(tr, from, from + taken);
  if (left)
    count_drop(tr, left, 1);
  pthread_mutex_lock(&tr->mu);
  tr->done_pos = atomic_load(&tr->deq);
  pthread_cond_broadcast(&tr->cv);
  pthread_mutex_unlock(&tr->mu);
  free(batch);
  if (xb != NULL) {
    perfc__otlp_buf_free(&xb->enc);
    gz_free(&xb->gz);
    free(xb);
  }
  return NULL;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

int perfc__tracing_export_start(perfc_tracer *tr) {
  size_t n = 1;
  while (n < tr->cfg.max_queue)
    n <<= 1;
  tr->cells = calloc(n, sizeof *tr->cells);
  if (tr->cells == NULL)
    return PERFC_ENOMEM;
  tr->mask = n - 1;
  /* Every cell's buffer in one block, made here and not on the calls'
   * threads: no malloc on a call's path even while the queue first fills,
   * and the calls' threads' heaps stay as they are without a tracer. Its
   * pages become resident as the queue first cycles through them (a
   * block this size is mmap'ed), as the per-cell buffers did. A queue too
   * large for one block makes its buffers on first use instead. */
  tr->cell_mem = n <= SIZE_MAX / PERFC__QCELL_BYTES
                     ? malloc(n * PERFC__QCELL_BYTES)
                     : NULL;
  for (size_t i = 0; i < n; i++) {
    atomic_init(&tr->cells[i].seq, i);
    if (tr->cell_mem != NULL)
      tr->cells[i].buf = (char *)tr->cell_mem + i * PERFC__QCELL_BYTES;
  }
  pthread_once(&curl_once, curl_init_once);
  tr->http = curl_easy_init();
  if (tr->http == NULL) {
    free(tr->cell_mem);
    free(tr->cells);
    return PERFC_ENOMEM;
  }
  curl_easy_setopt(tr->http, CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
  curl_easy_setopt(tr->http, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
  curl_easy_setopt(tr->http, CURLOPT_USERAGENT, "perfc-otlp/" PERFC_TRACING_VERSION);
  /* What every request has, set once instead of per POST. */
  struct curl_slist *hdrs = NULL, *h;
  int ok = (h = curl_slist_append(hdrs, "Content-Type: application/x-protobuf")) != NULL;
  hdrs = ok ? h : hdrs;
  if (ok && tr->cfg.gzip)
    hdrs = (ok = (h = curl_slist_append(hdrs, "Content-Encoding: gzip")) != NULL) ? h : hdrs;
  /* No "Expect: 100-continue" round trip for bodies over 1 KiB. */
  if (ok)
    hdrs = (ok = (h = curl_slist_append(hdrs, "Expect:")) != NULL) ? h : hdrs;
  for (const char *p = tr->cfg.headers; ok && p && *p; p += strlen(p) + 1)
    hdrs = (ok = (h = curl_slist_append(hdrs, p)) != NULL) ? h : hdrs;
  if (!ok || curl_easy_setopt(tr->http, CURLOPT_URL, tr->cfg.endpoint) != CURLE_OK) {
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(tr->http);
    free(tr->cell_mem);
    free(tr->cells);
    return PERFC_ENOMEM;
  }
  tr->http_hdrs = hdrs;
  curl_easy_setopt(tr->http, CURLOPT_HTTPHEADER, hdrs);
  curl_easy_setopt(tr->http, CURLOPT_POST, 1L);
  sem_init(&tr->wake, 0, 0);
  pthread_mutex_init(&tr->mu, NULL);
  pthread_cond_init(&tr->cv, NULL);
  /* Signals belong to the application's threads (perfc_server_run's, or
   * its own): the exporter starts with all of them blocked, as the h2
   * loops do, so none is delivered to it. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  int crc = pthread_create(&tr->thread, NULL, exporter_main, tr);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (crc == 0)
    pthread_setname_np(tr->thread, "perfc-otlp");
  if (crc != 0) {
    curl_slist_free_all(hdrs);
    tr->http_hdrs = NULL;
    curl_easy_cleanup(tr->http);
    free(tr->cell_mem);
    free(tr->cells);
    sem_destroy(&tr->wake);
    pthread_mutex_destroy(&tr->mu);
    pthread_cond_destroy(&tr->cv);
    return perfc__fail(PERFC_ETHREAD, "tracing: cannot start the exporter thread");
  }
  tr->thread_started = 1;
  return 0;
}

void perfc__tracing_export_stop(perfc_tracer *tr) {
  if (!tr->thread_started)
    return;
  atomic_store(&tr->stop, 1);
  sem_post(&tr->wake);
  pthread_join(tr->thread, NULL);
  curl_easy_cleanup(tr->http);
  curl_slist_free_all(tr->http_hdrs);
  tr->http_hdrs = NULL;
  if (tr->cell_mem == NULL)
    for (size_t i = 0; i <= tr->mask; i++)
      free(tr->cells[i].buf);
  free(tr->cell_mem);
  tr->cell_mem = NULL;
  free(tr->cells);
  sem_destroy(&tr->wake);
  pthread_mutex_destroy(&tr->mu);
  pthread_cond_destroy(&tr->cv);
  tr->thread_started = 0;
}

int perfc_tracing_flush(perfc_tracer *tr, int64_t timeout_ms) {
  if (tr == NULL)
    return PERFC_EINVAL;
  if (!tr->thread_started)
    return 0;
  size_t target = atomic_load(&tr->enq);
  int64_t end = mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
  pthread_mutex_lock(&tr->mu);
  if (target > tr->flush_target)
    tr->flush_target = target;
  sem_post(&tr->wake);
  int rc = 0;
  while (tr->done_pos < target) {
    int64_t left = end - mono_ms();
    if (left <= 0) {
      rc = PERFC_ETIMEDOUT;
      break;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t ms = left < 50 ? left : 50; /* re-post: the exporter may nap */
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&tr->cv, &tr->mu, &ts);
    if (tr->done_pos < target)
      sem_post(&tr->wake);
  }
  pthread_mutex_unlock(&tr->mu);
  return rc;
}
