/*
 * tracing_export.c — the batch span processor and the OTLP/HTTP exporter.
 *
 * Room: runtime/src/observe. Spans wait in a bounded lock-free queue; one
 * thread per tracer takes them in batches, builds an
 * ExportTraceServiceRequest with protobuf-c (messages generated at build
 * time from proto/opentelemetry/...), gzips it with zlib and POSTs it with
 * libcurl. Which library does what: libcurl speaks HTTP (connections,
 * keep-alive, TLS, timeouts), zlib compresses, protobuf-c encodes; perfc
 * owns the queue, batching, retry policy and counting.
 *
 * Retries follow the OTLP/HTTP specification: 429, 502, 503 and 504 (and
 * no answer at all) are retried with exponential backoff and jitter, or
 * after the server's Retry-After; any other 4xx/5xx drops the batch.
 */
#include "observe/tracing_internal.h"
#include "core/error_internal.h"
#include "perfc/log.h"
#include "server/server_internal.h"

#include "opentelemetry/proto/collector/trace/v1/trace_service.pb-c.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

typedef Opentelemetry__Proto__Common__V1__KeyValue KeyValue;
typedef Opentelemetry__Proto__Common__V1__AnyValue AnyValue;
typedef Opentelemetry__Proto__Trace__V1__Span Span;
typedef Opentelemetry__Proto__Trace__V1__Span__Event Event;
typedef Opentelemetry__Proto__Trace__V1__Status Status;

#define PERFC_TRACING_VERSION "0.1.0"
/* A receiver's answer is read up to this size (a partial-success message
 * or an error text); more is discarded. */
#define MAX_RESPONSE_BYTES 65536

/* ---- queue ------------------------------------------------------------------------ */

void perfc__tracing_enqueue(perfc_tracer *tr, perfc__qspan *q) {
  size_t pos = atomic_load_explicit(&tr->enq, memory_order_relaxed);
  for (;;) {
    perfc__qcell *c = &tr->cells[pos & tr->mask];
    size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
    intptr_t dif = (intptr_t)seq - (intptr_t)pos;
    if (dif == 0) {
      if (atomic_compare_exchange_weak_explicit(&tr->enq, &pos, pos + 1,
                                                memory_order_relaxed,
                                                memory_order_relaxed)) {
        c->span = q;
        atomic_store_explicit(&c->seq, pos + 1, memory_order_release);
        /* Wake the exporter when a full batch is waiting; otherwise its
         * schedule delay does. */
        size_t deq = atomic_load_explicit(&tr->deq, memory_order_relaxed);
        if (pos + 1 - deq == tr->cfg.max_batch)
          sem_post(&tr->wake);
        return;
      }
    } else if (dif < 0) {
      /* Full: drop and count. The call never waits for the exporter. */
      free(q);
      atomic_fetch_add_explicit(&tr->dropped_full, 1, memory_order_relaxed);
      perfc_counter_inc(tr->m_drop_full);
      return;
    } else {
      pos = atomic_load_explicit(&tr->enq, memory_order_relaxed);
    }
  }
}

static perfc__qspan *dequeue(perfc_tracer *tr) {
  size_t pos = atomic_load_explicit(&tr->deq, memory_order_relaxed);
  perfc__qcell *c = &tr->cells[pos & tr->mask];
  size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
  if ((intptr_t)seq - (intptr_t)(pos + 1) < 0)
    return NULL;
  perfc__qspan *q = c->span;
  atomic_store_explicit(&tr->deq, pos + 1, memory_order_relaxed);
  atomic_store_explicit(&c->seq, pos + tr->mask + 1, memory_order_release);
  return q;
}

/* ---- request building ---------------------------------------------------------- */

static KeyValue *kv_str(perfc_arena *a, const char *k, const char *v) {
  KeyValue *kv = perfc_arena_alloc(a, sizeof *kv);
  AnyValue *av = perfc_arena_alloc(a, sizeof *av);
  if (kv == NULL || av == NULL)
    return NULL;
  opentelemetry__proto__common__v1__key_value__init(kv);
  opentelemetry__proto__common__v1__any_value__init(av);
  kv->key = (char *)k;
  kv->value = av;
  av->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
  av->string_value = (char *)v;
  return kv;
}

static KeyValue *kv_attr(perfc_arena *a, const perfc__attr *at) {
  if (at->type == PERFC__ATTR_STR)
    return kv_str(a, at->key, at->v.s);
  KeyValue *kv = kv_str(a, at->key, "");
  if (kv == NULL)
    return NULL;
  if (at->type == PERFC__ATTR_INT) {
    kv->value->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE;
    kv->value->int_value = at->v.i;
  } else {
    kv->value->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE;
    kv->value->bool_value = at->v.i != 0;
  }
  return kv;
}

static Span *make_span(perfc_arena *a, perfc__qspan *q) {
  Span *s = perfc_arena_alloc(a, sizeof *s);
  if (s == NULL)
    return NULL;
  opentelemetry__proto__trace__v1__span__init(s);
  s->trace_id = (ProtobufCBinaryData){16, q->trace_id};
  s->span_id = (ProtobufCBinaryData){8, q->span_id};
  if (q->has_parent)
    s->parent_span_id = (ProtobufCBinaryData){8, q->parent_id};
  if (q->tracestate)
    s->trace_state = (char *)q->tracestate;
  /* flags: the W3C trace flags, plus "has is_remote" and "is_remote" for
   * the parent, as OTLP 1.1 defines. */
  s->flags = q->flags | 0x100u | (q->has_parent && q->kind == PERFC_SPAN_SERVER ? 0x200u : 0);
  s->name = (char *)q->name;
  s->kind = (Opentelemetry__Proto__Trace__V1__Span__SpanKind)q->kind;
  s->start_time_unix_nano = (uint64_t)q->start_unix_ns;
  s->end_time_unix_nano = (uint64_t)q->end_unix_ns;
  s->attributes = perfc_arena_alloc(a, (q->nattrs + 1) * sizeof *s->attributes);
  s->events = perfc_arena_alloc(a, (q->nevents + 1) * sizeof *s->events);
  Status *st = perfc_arena_alloc(a, sizeof *st);
  if (s->attributes == NULL || s->events == NULL || st == NULL)
    return NULL;
  for (uint32_t i = 0; i < q->nattrs; i++)
    if ((s->attributes[s->n_attributes] = kv_attr(a, &q->attrs[i])) != NULL)
      s->n_attributes++;
  s->dropped_attributes_count = q->dropped_attrs;
  for (uint32_t i = 0; i < q->nevents; i++) {
    Event *e = perfc_arena_alloc(a, sizeof *e);
    if (e == NULL)
      return NULL;
    opentelemetry__proto__trace__v1__span__event__init(e);
    e->time_unix_nano = (uint64_t)q->events[i].time_unix_ns;
    e->name = (char *)q->events[i].name;
    if (q->events[i].msg_type != NULL) {
      e->attributes = perfc_arena_alloc(a, 2 * sizeof *e->attributes);
      perfc__attr id = {.key = "message.id", .type = PERFC__ATTR_INT,
                        .v.i = q->events[i].msg_id};
      if (e->attributes == NULL ||
          (e->attributes[0] = kv_str(a, "message.type", q->events[i].msg_type)) == NULL ||
          (e->attributes[1] = kv_attr(a, &id)) == NULL)
        return NULL;
      e->n_attributes = 2;
    }
    s->events[s->n_events++] = e;
  }
  s->dropped_events_count = q->dropped_events;
  opentelemetry__proto__trace__v1__status__init(st);
  st->code = (Opentelemetry__Proto__Trace__V1__Status__StatusCode)q->status;
  if (q->status_msg)
    st->message = (char *)q->status_msg;
  s->status = st;
  return s;
}

/* Packs a request for spans[0..n); the bytes are in the arena. */
static int build_request(perfc_tracer *tr, perfc_arena *a, perfc__qspan **spans,
                         size_t n, uint8_t **out, size_t *len) {
  Opentelemetry__Proto__Resource__V1__Resource res =
      OPENTELEMETRY__PROTO__RESOURCE__V1__RESOURCE__INIT;
  size_t nres = 4;
  for (const char *p = tr->cfg.resource_attrs; p && *p; p += strlen(p) + 1)
    nres++;
  KeyValue **ra = perfc_arena_alloc(a, nres * sizeof *ra);
  if (ra == NULL)
    return PERFC_ENOMEM;
  res.attributes = ra;
  ra[res.n_attributes++] = kv_str(a, "service.name", tr->cfg.service_name);
  ra[res.n_attributes++] = kv_str(a, "telemetry.sdk.name", "perfc");
  ra[res.n_attributes++] = kv_str(a, "telemetry.sdk.language", "c");
  ra[res.n_attributes++] = kv_str(a, "telemetry.sdk.version", PERFC_TRACING_VERSION);
  for (const char *p = tr->cfg.resource_attrs; p && *p; p += strlen(p) + 1) {
    const char *eq = strchr(p, '=');
    if (strncmp(p, "service.name=", 13) == 0 || eq == NULL)
      continue; /* service.name is already there, from the same source */
    ra[res.n_attributes++] =
        kv_str(a, perfc_arena_strndup(a, p, (size_t)(eq - p)), eq + 1);
  }
  for (size_t i = 0; i < res.n_attributes; i++)
    if (ra[i] == NULL || ra[i]->key == NULL)
      return PERFC_ENOMEM;

  Opentelemetry__Proto__Common__V1__InstrumentationScope scope =
      OPENTELEMETRY__PROTO__COMMON__V1__INSTRUMENTATION_SCOPE__INIT;
  scope.name = "perfc";
  scope.version = PERFC_TRACING_VERSION;
  Opentelemetry__Proto__Trace__V1__ScopeSpans ss =
      OPENTELEMETRY__PROTO__TRACE__V1__SCOPE_SPANS__INIT;
  ss.scope = &scope;
  ss.spans = perfc_arena_alloc(a, n * sizeof *ss.spans);
  if (ss.spans == NULL)
    return PERFC_ENOMEM;
  for (size_t i = 0; i < n; i++)
    if ((ss.spans[ss.n_spans++] = make_span(a, spans[i])) == NULL)
      return PERFC_ENOMEM;
  Opentelemetry__Proto__Trace__V1__ScopeSpans *ssp = &ss;
  Opentelemetry__Proto__Trace__V1__ResourceSpans rs =
      OPENTELEMETRY__PROTO__TRACE__V1__RESOURCE_SPANS__INIT;
  rs.resource = &res;
  rs.n_scope_spans = 1;
  rs.scope_spans = &ssp;
  Opentelemetry__Proto__Trace__V1__ResourceSpans *rsp = &rs;
  Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest req =
      OPENTELEMETRY__PROTO__COLLECTOR__TRACE__V1__EXPORT_TRACE_SERVICE_REQUEST__INIT;
  req.n_resource_spans = 1;
  req.resource_spans = &rsp;
  size_t sz =
      opentelemetry__proto__collector__trace__v1__export_trace_service_request__get_packed_size(&req);
  uint8_t *buf = perfc_arena_alloc(a, sz ? sz : 1);
  if (buf == NULL)
    return PERFC_ENOMEM;
  *len = opentelemetry__proto__collector__trace__v1__export_trace_service_request__pack(&req, buf);
  *out = buf;
  return 0;
}

static int gzip_body(perfc_arena *a, const uint8_t *in, size_t n, uint8_t **out,
                     size_t *outlen) {
  z_stream z;
  memset(&z, 0, sizeof z);
  /* windowBits 15 + 16: a gzip wrapper, which Content-Encoding: gzip means.
   * Level 1: span batches are repetitive (keys, names, ids' structure) and
   * shrink most of the way at the fastest level; the default level 6 cost
   * about as much CPU per span as the call being traced (callgrind). */
  if (deflateInit2(&z, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8,
                   Z_DEFAULT_STRATEGY) != Z_OK)
    return PERFC_ENOMEM;
  size_t cap = deflateBound(&z, (uLong)n);
  uint8_t *buf = perfc_arena_alloc(a, cap);
  if (buf == NULL) {
    deflateEnd(&z);
    return PERFC_ENOMEM;
  }
  z.next_in = (Bytef *)in;
  z.avail_in = (uInt)n;
  z.next_out = buf;
  z.avail_out = (uInt)cap;
  int rc = deflate(&z, Z_FINISH);
  deflateEnd(&z);
  if (rc != Z_STREAM_END)
    return PERFC_EIO;
  *out = buf;
  *outlen = z.total_out;
  return 0;
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
  CURL *h = tr->http;
  struct curl_slist *hdrs = NULL;
  hdrs = curl_slist_append(hdrs, "Content-Type: application/x-protobuf");
  if (tr->cfg.gzip)
    hdrs = curl_slist_append(hdrs, "Content-Encoding: gzip");
  /* No "Expect: 100-continue" round trip for bodies over 1 KiB. */
  hdrs = curl_slist_append(hdrs, "Expect:");
  for (const char *p = tr->cfg.headers; p && *p; p += strlen(p) + 1)
    hdrs = curl_slist_append(hdrs, p);
  ans->status = 0;
  ans->retry_after_ms = -1;
  ans->body_len = 0;
  curl_easy_setopt(h, CURLOPT_URL, tr->cfg.endpoint);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
  curl_easy_setopt(h, CURLOPT_POST, 1L);
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
  curl_slist_free_all(hdrs);
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
static void export_batch(perfc_tracer *tr, perfc_arena *a, perfc__qspan **spans,
                         size_t n, int64_t deadline_ms) {
  uint8_t *raw, *body;
  size_t rawlen, len;
  if (build_request(tr, a, spans, n, &raw, &rawlen) != 0) {
    count_drop(tr, n, 0);
    return;
  }
  body = raw;
  len = rawlen;
  if (tr->cfg.gzip && gzip_body(a, raw, rawlen, &body, &len) != 0) {
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
  perfc_arena *a = NULL;
  if (batch == NULL || perfc_arena_new(&a, 64 * 1024) != 0) {
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
    size_t n;
    do {
      n = 0;
      perfc__qspan *q;
      while (n < cap && (q = dequeue(tr)) != NULL)
        batch[n++] = q;
      atomic_fetch_add_explicit(&tr->popped, n, memory_order_relaxed);
      if (n > 0) {
        if (batch != NULL && a != NULL &&
            !(deadline > 0 && mono_ms() >= deadline))
          export_batch(tr, a, batch, n, deadline);
        else
          count_drop(tr, n, deadline > 0);
        for (size_t i = 0; i < n; i++)
          free(batch[i]);
        if (a != NULL)
          perfc_arena_reset(a);
      }
      pthread_mutex_lock(&tr->mu);
      tr->done_pos = atomic_load(&tr->deq);
      pthread_cond_broadcast(&tr->cv);
      pthread_mutex_unlock(&tr->mu);
    } while (n == cap);
    next = mono_ms() + tr->cfg.delay_ms;
    if (stopping)
      break;
  }
  /* Whatever is left (the grace ended) is dropped and counted. */
  perfc__qspan *q;
  size_t left = 0;
  while ((q = dequeue(tr)) != NULL) {
    free(q);
    left++;
  }
  if (left)
    count_drop(tr, left, 1);
  pthread_mutex_lock(&tr->mu);
  tr->done_pos = atomic_load(&tr->deq);
  pthread_cond_broadcast(&tr->cv);
  pthread_mutex_unlock(&tr->mu);
  free(batch);
  perfc_arena_free(a);
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
  for (size_t i = 0; i < n; i++)
    atomic_init(&tr->cells[i].seq, i);
  pthread_once(&curl_once, curl_init_once);
  tr->http = curl_easy_init();
  if (tr->http == NULL) {
    free(tr->cells);
    return PERFC_ENOMEM;
  }
  curl_easy_setopt(tr->http, CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
  curl_easy_setopt(tr->http, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
  curl_easy_setopt(tr->http, CURLOPT_USERAGENT, "perfc-otlp/" PERFC_TRACING_VERSION);
  sem_init(&tr->wake, 0, 0);
  pthread_mutex_init(&tr->mu, NULL);
  pthread_cond_init(&tr->cv, NULL);
  if (pthread_create(&tr->thread, NULL, exporter_main, tr) != 0) {
    curl_easy_cleanup(tr->http);
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
