/* test_tracing_otlp.c — runtime/src/observe/tracing_export.c's hand-written
 * OTLP encoder (perfc__otlp_encode) against the generated protobuf-c
 * messages: the body it writes must decode with them to exactly the spans
 * it was given, and must be byte for byte what protobuf-c's packing of the
 * same ExportTraceServiceRequest produces (the reference builder below is
 * the exporter's former protobuf-c code, kept here as the oracle). */
#include <criterion/criterion.h>

#include "observe/tracing_internal.h"
#include "otlp_receiver.h"

#include <perfc/trace_context.h>

#include "opentelemetry/proto/collector/trace/v1/trace_service.pb-c.h"

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef Opentelemetry__Proto__Common__V1__KeyValue KeyValue;
typedef Opentelemetry__Proto__Common__V1__AnyValue AnyValue;
typedef Opentelemetry__Proto__Trace__V1__Span Span;
typedef Opentelemetry__Proto__Trace__V1__Span__Event Event;
typedef Opentelemetry__Proto__Trace__V1__Status Status;
typedef Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest Request;

/* ---- the oracle: protobuf-c messages, packed by protobuf-c ----------------------- */

static KeyValue *kv_str(perfc_arena *a, const char *k, const char *v) {
  KeyValue *kv = perfc_arena_alloc(a, sizeof *kv);
  AnyValue *av = perfc_arena_alloc(a, sizeof *av);
  cr_assert(kv != NULL && av != NULL);
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
  if (at->type == PERFC__ATTR_INT) {
    kv->value->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE;
    kv->value->int_value = at->v.i;
  } else {
    kv->value->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE;
    kv->value->bool_value = at->v.i != 0;
  }
  return kv;
}

static Span *make_span(perfc_arena *a, const perfc__qspan *q) {
  Span *s = perfc_arena_alloc(a, sizeof *s);
  opentelemetry__proto__trace__v1__span__init(s);
  s->trace_id = (ProtobufCBinaryData){16, (uint8_t *)q->trace_id};
  s->span_id = (ProtobufCBinaryData){8, (uint8_t *)q->span_id};
  if (q->has_parent)
    s->parent_span_id = (ProtobufCBinaryData){8, (uint8_t *)q->parent_id};
  if (q->tracestate)
    s->trace_state = (char *)q->tracestate;
  s->flags = q->flags | 0x100u |
             (q->has_parent && q->kind == PERFC_SPAN_SERVER ? 0x200u : 0);
  s->name = (char *)q->name;
  s->kind = (Opentelemetry__Proto__Trace__V1__Span__SpanKind)q->kind;
  s->start_time_unix_nano = (uint64_t)q->start_unix_ns;
  s->end_time_unix_nano = (uint64_t)q->end_unix_ns;
  s->attributes = perfc_arena_alloc(a, (q->nattrs + 1) * sizeof *s->attributes);
  s->events = perfc_arena_alloc(a, (q->nevents + 1) * sizeof *s->events);
  for (uint32_t i = 0; i < q->nattrs; i++)
    s->attributes[s->n_attributes++] = kv_attr(a, &q->attrs[i]);
  s->dropped_attributes_count = q->dropped_attrs;
  for (uint32_t i = 0; i < q->nevents; i++) {
    Event *e = perfc_arena_alloc(a, sizeof *e);
    opentelemetry__proto__trace__v1__span__event__init(e);
    e->time_unix_nano = (uint64_t)q->events[i].time_unix_ns;
    e->name = (char *)q->events[i].name;
    if (q->events[i].msg_type != NULL) {
      e->attributes = perfc_arena_alloc(a, 2 * sizeof *e->attributes);
      perfc__attr id = {.key = "message.id", .type = PERFC__ATTR_INT,
                        .v.i = q->events[i].msg_id};
      e->attributes[0] = kv_str(a, "message.type", q->events[i].msg_type);
      e->attributes[1] = kv_attr(a, &id);
      e->n_attributes = 2;
    }
    s->events[s->n_events++] = e;
  }
  s->dropped_events_count = q->dropped_events;
  Status *st = perfc_arena_alloc(a, sizeof *st);
  opentelemetry__proto__trace__v1__status__init(st);
  st->code = (Opentelemetry__Proto__Trace__V1__Status__StatusCode)q->status;
  if (q->status_msg)
    st->message = (char *)q->status_msg;
  s->status = st;
  return s;
}

static uint8_t *pack_reference(perfc_arena *a, const perfc__tracing_cfg *cfg,
                               perfc__qspan *const *spans, size_t n, size_t *len) {
  Opentelemetry__Proto__Resource__V1__Resource res =
      OPENTELEMETRY__PROTO__RESOURCE__V1__RESOURCE__INIT;
  size_t nres = 4;
  for (const char *p = cfg->resource_attrs; p && *p; p += strlen(p) + 1)
    nres++;
  KeyValue **ra = perfc_arena_alloc(a, nres * sizeof *ra);
  res.attributes = ra;
  ra[res.n_attributes++] = kv_str(a, "service.name", cfg->service_name);
  ra[res.n_attributes++] = kv_str(a, "telemetry.sdk.name", "perfc");
  ra[res.n_attributes++] = kv_str(a, "telemetry.sdk.language", "c");
  ra[res.n_attributes++] = kv_str(a, "telemetry.sdk.version", PERFC_TRACING_VERSION);
  for (const char *p = cfg->resource_attrs; p && *p; p += strlen(p) + 1) {
    const char *eq = strchr(p, '=');
    if (strncmp(p, "service.name=", 13) == 0 || eq == NULL)
      continue;
    ra[res.n_attributes++] =
        kv_str(a, perfc_arena_strndup(a, p, (size_t)(eq - p)), eq + 1);
  }
  Opentelemetry__Proto__Common__V1__InstrumentationScope scope =
      OPENTELEMETRY__PROTO__COMMON__V1__INSTRUMENTATION_SCOPE__INIT;
  scope.name = "perfc";
  scope.version = PERFC_TRACING_VERSION;
  Opentelemetry__Proto__Trace__V1__ScopeSpans ss =
      OPENTELEMETRY__PROTO__TRACE__V1__SCOPE_SPANS__INIT;
  ss.scope = &scope;
  ss.spans = perfc_arena_alloc(a, (n + 1) * sizeof *ss.spans);
  for (size_t i = 0; i < n; i++)
    ss.spans[ss.n_spans++] = make_span(a, spans[i]);
  Opentelemetry__Proto__Trace__V1__ScopeSpans *ssp = &ss;
  Opentelemetry__Proto__Trace__V1__ResourceSpans rs =
      OPENTELEMETRY__PROTO__TRACE__V1__RESOURCE_SPANS__INIT;
  rs.resource = &res;
  rs.n_scope_spans = 1;
  rs.scope_spans = &ssp;
  Opentelemetry__Proto__Trace__V1__ResourceSpans *rsp = &rs;
  Request req = OPENTELEMETRY__PROTO__COLLECTOR__TRACE__V1__EXPORT_TRACE_SERVICE_REQUEST__INIT;
  req.n_resource_spans = 1;
  req.resource_spans = &rsp;
  size_t sz =
      opentelemetry__proto__collector__trace__v1__export_trace_service_request__get_packed_size(&req);
  uint8_t *buf = perfc_arena_alloc(a, sz ? sz : 1);
  *len = opentelemetry__proto__collector__trace__v1__export_trace_service_request__pack(&req, buf);
  cr_assert_eq(*len, sz);
  return buf;
}

/* ---- spans to encode --------------------------------------------------------------- */

static char big[20000]; /* a string whose length takes a 3-byte varint */

static perfc__attr ATTRS[] = {
    {.key = "rpc.system", .type = PERFC__ATTR_STR, .v.s = "grpc"},
    {.key = "rpc.service", .type = PERFC__ATTR_STR, .v.s = "bench.v1.Echo"},
    {.key = "network.peer.port", .type = PERFC__ATTR_INT, .v.i = 54321},
    {.key = "negative", .type = PERFC__ATTR_INT, .v.i = -7},
    {.key = "zero", .type = PERFC__ATTR_INT, .v.i = 0},
    {.key = "max", .type = PERFC__ATTR_INT, .v.i = INT64_MAX},
    {.key = "min", .type = PERFC__ATTR_INT, .v.i = INT64_MIN},
    {.key = "yes", .type = PERFC__ATTR_BOOL, .v.i = 1},
    {.key = "no", .type = PERFC__ATTR_BOOL, .v.i = 0},
    {.key = "empty.value", .type = PERFC__ATTR_STR, .v.s = ""},
    {.key = "", .type = PERFC__ATTR_STR, .v.s = "empty key"},
    {.key = "big", .type = PERFC__ATTR_STR, .v.s = big},
};

static perfc__event EVENTS[] = {
    {.time_unix_ns = 1796543370592000001, .name = "message", .msg_type = "SENT", .msg_id = 1},
    {.time_unix_ns = 1796543370592000002, .name = "message", .msg_type = "RECEIVED", .msg_id = 300},
    {.time_unix_ns = 1796543370592000003, .name = "plain event"},
    {.time_unix_ns = 0, .name = ""}, /* zero and empty: left out, as proto3 says */
};

/* Span i of a batch: the cases cycle so that every field is present and
 * absent somewhere, with lengths on both sides of the varint steps. */
/* A queued span carries its strings' lengths (the encoder never measures
 * them): filled from the strings here, after `big` is. */
static void set_lengths(void) {
  for (size_t k = 0; k < sizeof ATTRS / sizeof ATTRS[0]; k++) {
    ATTRS[k].klen = (uint32_t)strlen(ATTRS[k].key);
    ATTRS[k].vlen = ATTRS[k].type == PERFC__ATTR_STR ? (uint32_t)strlen(ATTRS[k].v.s) : 0;
  }
  for (size_t k = 0; k < sizeof EVENTS / sizeof EVENTS[0]; k++)
    EVENTS[k].name_len = (uint32_t)strlen(EVENTS[k].name);
}

static perfc__qspan make_q(unsigned i) {
  perfc__qspan q;
  memset(&q, 0, sizeof q);
  set_lengths();
  for (int k = 0; k < 16; k++)
    q.trace_id[k] = (uint8_t)(i * 31 + k + 1);
  for (int k = 0; k < 8; k++) {
    q.span_id[k] = (uint8_t)(i * 17 + k + 2);
    q.parent_id[k] = (uint8_t)(i * 13 + k + 3);
  }
  q.has_parent = i % 3 != 0;
  q.kind = (uint8_t)(1 + i % 5);
  q.status = (uint8_t)(i % 3);
  q.flags = (uint8_t)(i % 2);
  q.start_unix_ns = 1796543370592000000 + (int64_t)i;
  q.end_unix_ns = i % 11 == 5 ? 0 : q.start_unix_ns + 412000;
  static const char *const names[] = {"bench.v1.Echo/Unary", "", "cache.get_or_load",
                                      "a-name-longer-than-one-hundred-and-twenty-seven-bytes-"
                                      "so-that-its-length-takes-two-bytes-of-varint-"
                                      "........................................"};
  q.name = names[i % 4];
  q.status_msg = q.status == 2 ? (i % 2 ? "INTERNAL" : "") : NULL;
  q.tracestate = i % 4 == 1 ? "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7" : i % 4 == 2 ? "" : NULL;
  q.name_len = (uint32_t)strlen(q.name);
  q.status_msg_len = q.status_msg ? (uint32_t)strlen(q.status_msg) : 0;
  q.tracestate_len = q.tracestate ? (uint32_t)strlen(q.tracestate) : 0;
  q.nattrs = i % 7 == 6 ? (uint32_t)(sizeof ATTRS / sizeof ATTRS[0])
                        : (uint32_t)(i % (sizeof ATTRS / sizeof ATTRS[0] - 1));
  q.attrs = ATTRS;
  q.nevents = (uint32_t)(i % 5);
  q.events = EVENTS;
  q.dropped_attrs = i % 6 == 1 ? 3 : 0;
  q.dropped_events = i % 8 == 3 ? 200 : 0;
  return q;
}

static void cfg_init(perfc__tracing_cfg *c, char *service, char *res) {
  memset(c, 0, sizeof *c);
  c->service_name = service;
  c->resource_attrs = res;
}

/* Encodes spans[0..n) both ways; asserts the bytes are equal. */
static void check_equal(perfc__otlp_buf *b, const perfc__tracing_cfg *cfg,
                        perfc__qspan *const *spans, size_t n) {
  perfc_arena *a;
  cr_assert_eq(perfc_arena_new(&a, 64 * 1024), 0);
  size_t rlen;
  uint8_t *ref = pack_reference(a, cfg, spans, n, &rlen);
  const uint8_t *out;
  size_t len;
  cr_assert_eq(perfc__otlp_encode(b, cfg, spans, n, &out, &len), 0);
  cr_assert_eq(len, rlen, "%zu spans: %zu bytes, protobuf-c packs %zu", n, len, rlen);
  if (memcmp(out, ref, len) != 0) {
    size_t k = 0;
    while (out[k] == ref[k])
      k++;
    cr_assert_fail("%zu spans: first difference at byte %zu of %zu (%02x, protobuf-c %02x)",
                   n, k, len, out[k], ref[k]);
  }
  perfc_arena_free(a);
}

Test(otlp_encode, every_field_decodes_back_with_protobuf_c) {
  memset(big, 'x', sizeof big - 1);
  perfc__tracing_cfg cfg;
  char svc[] = "users";
  char res[] = "deployment.environment=prod\0service.name=users\0k8s.pod.name=users-7f9\0"
               "=no key\0";
  cfg_init(&cfg, svc, res);
  enum { N = 60 };
  perfc__qspan qs[N];
  perfc__qspan *ptrs[N];
  for (unsigned i = 0; i < N; i++) {
    qs[i] = make_q(i);
    ptrs[i] = &qs[i];
  }
  perfc__otlp_buf b = {0};
  const uint8_t *out;
  size_t len;
  cr_assert_eq(perfc__otlp_encode(&b, &cfg, ptrs, N, &out, &len), 0);
  Request *r = opentelemetry__proto__collector__trace__v1__export_trace_service_request__unpack(
      NULL, len, out);
  cr_assert_not_null(r, "protobuf-c cannot decode the hand-written body");
  cr_assert_eq(r->n_resource_spans, 1);
  Opentelemetry__Proto__Trace__V1__ResourceSpans *rs = r->resource_spans[0];
  /* resource: service.name, telemetry.sdk.*, then the variable's pairs in
   * order, without its service.name and the pair with an empty key keeping
   * its value under key "" */
  static const char *const rk[] = {"service.name", "telemetry.sdk.name",
                                   "telemetry.sdk.language", "telemetry.sdk.version",
                                   "deployment.environment", "k8s.pod.name", ""};
  static const char *const rv[] = {"users", "perfc", "c", PERFC_TRACING_VERSION,
                                   "prod", "users-7f9", "no key"};
  cr_assert_eq(rs->resource->n_attributes, 7);
  for (size_t i = 0; i < 7; i++) {
    cr_assert_str_eq(rs->resource->attributes[i]->key, rk[i]);
    cr_assert_eq(rs->resource->attributes[i]->value->value_case,
                 OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE);
    cr_assert_str_eq(rs->resource->attributes[i]->value->string_value, rv[i]);
  }
  cr_assert_eq(rs->n_scope_spans, 1);
  cr_assert_str_eq(rs->scope_spans[0]->scope->name, "perfc");
  cr_assert_str_eq(rs->scope_spans[0]->scope->version, PERFC_TRACING_VERSION);
  cr_assert_eq(rs->scope_spans[0]->n_spans, N);
  for (unsigned i = 0; i < N; i++) {
    const perfc__qspan *q = &qs[i];
    const Span *s = rs->scope_spans[0]->spans[i];
    cr_assert_eq(s->trace_id.len, 16);
    cr_assert_arr_eq(s->trace_id.data, q->trace_id, 16);
    cr_assert_eq(s->span_id.len, 8);
    cr_assert_arr_eq(s->span_id.data, q->span_id, 8);
    if (q->has_parent) {
      cr_assert_eq(s->parent_span_id.len, 8);
      cr_assert_arr_eq(s->parent_span_id.data, q->parent_id, 8);
    } else {
      cr_assert_eq(s->parent_span_id.len, 0);
    }
    cr_assert_str_eq(s->trace_state, q->tracestate ? q->tracestate : "");
    cr_assert_eq(s->flags, q->flags | 0x100u |
                               (q->has_parent && q->kind == PERFC_SPAN_SERVER ? 0x200u : 0));
    cr_assert_str_eq(s->name, q->name);
    cr_assert_eq((int)s->kind, q->kind);
    cr_assert_eq(s->start_time_unix_nano, (uint64_t)q->start_unix_ns);
    cr_assert_eq(s->end_time_unix_nano, (uint64_t)q->end_unix_ns);
    cr_assert_eq(s->n_attributes, q->nattrs);
    for (uint32_t k = 0; k < q->nattrs; k++) {
      const KeyValue *kv = s->attributes[k];
      cr_assert_str_eq(kv->key, q->attrs[k].key);
      cr_assert_not_null(kv->value);
      switch (q->attrs[k].type) {
      case PERFC__ATTR_STR:
        cr_assert_eq(kv->value->value_case,
                     OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE);
        cr_assert_str_eq(kv->value->string_value, q->attrs[k].v.s);
        break;
      case PERFC__ATTR_INT:
        cr_assert_eq(kv->value->value_case,
                     OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE);
        cr_assert_eq(kv->value->int_value, q->attrs[k].v.i);
        break;
      default:
        cr_assert_eq(kv->value->value_case,
                     OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE);
        cr_assert_eq(kv->value->bool_value, q->attrs[k].v.i != 0);
      }
    }
    cr_assert_eq(s->dropped_attributes_count, q->dropped_attrs);
    cr_assert_eq(s->n_events, q->nevents);
    for (uint32_t k = 0; k < q->nevents; k++) {
      const Event *e = s->events[k];
      cr_assert_eq(e->time_unix_nano, (uint64_t)q->events[k].time_unix_ns);
      cr_assert_str_eq(e->name, q->events[k].name);
      if (q->events[k].msg_type) {
        cr_assert_eq(e->n_attributes, 2);
        cr_assert_str_eq(e->attributes[0]->key, "message.type");
        cr_assert_str_eq(e->attributes[0]->value->string_value, q->events[k].msg_type);
        cr_assert_str_eq(e->attributes[1]->key, "message.id");
        cr_assert_eq(e->attributes[1]->value->int_value, q->events[k].msg_id);
      } else {
        cr_assert_eq(e->n_attributes, 0);
      }
    }
    cr_assert_eq(s->dropped_events_count, q->dropped_events);
    cr_assert_eq(s->n_links, 0);
    cr_assert_not_null(s->status);
    cr_assert_eq((int)s->status->code, q->status);
    cr_assert_str_eq(s->status->message, q->status_msg ? q->status_msg : "");
  }
  opentelemetry__proto__collector__trace__v1__export_trace_service_request__free_unpacked(r, NULL);
  perfc__otlp_buf_free(&b);
}

Test(otlp_encode, bytes_equal_protobuf_c_packing) {
  memset(big, 'x', sizeof big - 1);
  perfc__tracing_cfg cfg;
  char svc[] = "unknown_service";
  char res[] = "a=1\0service.name=x\0noequals\0b=\0";
  cfg_init(&cfg, svc, res);
  enum { N = 600 }; /* more than a batch: the buffer grows several times */
  perfc__qspan *qs = calloc(N, sizeof *qs);
  perfc__qspan **ptrs = calloc(N, sizeof *ptrs);
  cr_assert(qs != NULL && ptrs != NULL);
  for (unsigned i = 0; i < N; i++) {
    qs[i] = make_q(i);
    ptrs[i] = &qs[i];
  }
  perfc__otlp_buf b = {0};
  /* no spans, one span of each shape, then whole batches */
  check_equal(&b, &cfg, ptrs, 0);
  for (unsigned i = 0; i < 84; i++)
    check_equal(&b, &cfg, ptrs + i, 1);
  check_equal(&b, &cfg, ptrs, 100);
  check_equal(&b, &cfg, ptrs, N);
  size_t grown = b.cap;
  /* the buffer is reused: a smaller batch after a large one, same bytes */
  check_equal(&b, &cfg, ptrs + 7, 3);
  cr_assert_eq(b.cap, grown, "a reused buffer does not shrink or grow again");
  /* no resource attributes from the variable at all */
  cfg.resource_attrs = NULL;
  check_equal(&b, &cfg, ptrs, 50);
  perfc__otlp_buf_free(&b);
  free(qs);
  free(ptrs);
}

/* A server span carries its method's first attributes and its name and
 * kind already encoded (qspan.pre, qspan.pre_head, made once per method
 * with perfc__otlp_attrs_encode/perfc__otlp_head_encode): the encoder
 * copies them, and the body must still be byte for byte protobuf-c's
 * packing of the same span, for every count of pre-encoded attributes
 * (0 to all), with and without the head, across buffer growth. */
Test(otlp_encode, pre_encoded_parts_give_the_same_bytes) {
  memset(big, 'x', sizeof big - 1);
  perfc__tracing_cfg cfg;
  char svc[] = "users";
  char res[] = "a=1\0";
  cfg_init(&cfg, svc, res);
  enum { N = 600 };
  perfc__qspan *qs = calloc(N, sizeof *qs);
  perfc__qspan **ptrs = calloc(N, sizeof *ptrs);
  uint8_t **blobs = calloc(2 * N, sizeof *blobs);
  cr_assert(qs != NULL && ptrs != NULL && blobs != NULL);
  size_t with_pre = 0, with_head = 0;
  for (unsigned i = 0; i < N; i++) {
    qs[i] = make_q(i);
    ptrs[i] = &qs[i];
    uint32_t k = i % 4 == 3 ? qs[i].nattrs : i % (qs[i].nattrs + 1);
    size_t len = 0;
    if (k > 0) {
      blobs[2 * i] = perfc__otlp_attrs_encode(qs[i].attrs, k, &len);
      cr_assert_not_null(blobs[2 * i]);
      qs[i].pre = blobs[2 * i];
      qs[i].pre_len = (uint32_t)len;
      qs[i].pre_n = k;
      with_pre++;
    }
    if (i % 2 == 0) {
      blobs[2 * i + 1] = perfc__otlp_head_encode(qs[i].name, qs[i].name_len,
                                                 qs[i].kind, &len);
      cr_assert_not_null(blobs[2 * i + 1]);
      qs[i].pre_head = blobs[2 * i + 1];
      qs[i].pre_head_len = (uint32_t)len;
      with_head++;
    }
  }
  cr_assert_gt(with_pre, N / 2);
  cr_assert_eq(with_head, N / 2);
  perfc__otlp_buf b = {0};
  for (unsigned i = 0; i < 84; i++)
    check_equal(&b, &cfg, ptrs + i, 1);
  check_equal(&b, &cfg, ptrs, N);
  /* a fresh buffer, so the first spans make it grow mid-span */
  perfc__otlp_buf_free(&b);
  check_equal(&b, &cfg, ptrs + 3, 200);
  perfc__otlp_buf_free(&b);
  for (unsigned i = 0; i < 2 * N; i++)
    free(blobs[i]);
  free(blobs);
  free(qs);
  free(ptrs);
}

/* ---- the queue's cell buffers, end to end ------------------------------------------ */

/* Spans that fit a cell's buffer and spans that need a block of their own,
 * interleaved, through a queue much smaller than their number (every cell
 * is reused several times while the exporter gives buffers back): each
 * span arrives once, whole, with its own values. */
Test(queue, cell_buffers_are_reused_and_large_spans_get_their_own_block, .timeout = 60) {
  otlp_rx *rx = rx_start();
  cr_assert_not_null(rx);
  perfc_tracing_opts o;
  perfc_tracing_opts_init(&o);
  o.ignore_env = true;
  o.sampler = PERFC_SAMPLER_ALWAYS_ON;
  char url[80];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/traces", rx->port);
  o.endpoint = url;
  o.max_queue_spans = 16;
  o.max_export_batch_spans = 8;
  o.schedule_delay_ms = 10;
  perfc_tracer *tr;
  cr_assert_eq(perfc_tracing_new(&tr, &o), 0);
  perfc_trace_current root = {.tracer = tr};
  memset(root.sc.trace_id, 0x11, 16);
  memset(root.sc.span_id, 0x22, 8);
  root.sc.trace_flags = PERFC_TRACE_FLAG_SAMPLED;
  enum { N = 120 };
  char name[1200];
  for (int i = 0; i < N; i++) {
    perfc_trace_current_set(&root);
    int large = i % 3 == 0; /* a 1,100-byte name: over PERFC__QCELL_BYTES */
    memset(name, 'a' + i % 26, sizeof name);
    snprintf(name, 16, "span-%03d-", i);
    name[large ? 1100 : 40] = '\0';
    name[9] = 'a' + i % 26; /* snprintf's NUL */
    perfc_span *sp = perfc_tracing_span_start_current(name, PERFC_SPAN_INTERNAL);
    cr_assert_not_null(sp);
    perfc_span_set_attr_int(sp, "i", i);
    perfc_span_end(sp);
    if (i % 8 == 7) /* the queue of 16 never overflows */
      cr_assert_eq(perfc_tracing_flush(tr, 10000), 0);
  }
  perfc_trace_current_set(NULL);
  cr_assert_eq(perfc_tracing_flush(tr, 10000), 0);
  perfc_tracing_stats st;
  perfc_tracing_stats_get(tr, &st);
  cr_assert_eq(st.spans_exported, N);
  cr_assert_eq(st.dropped_queue_full + st.dropped_export, 0);
  cr_assert_eq(rx_count(rx), N);
  pthread_mutex_lock(&rx->mu);
  cr_assert_eq(rx->bad, 0);
  int seen[N] = {0};
  for (size_t k = 0; k < rx->n; k++) {
    const rx_span *r = &rx->spans[k];
    cr_assert_eq(r->nattrs, 1);
    int64_t i = r->attrs[0].iv;
    cr_assert(i >= 0 && i < N);
    seen[i]++;
    char want[16];
    snprintf(want, sizeof want, "span-%03d-%c", (int)i, 'a' + (int)(i % 26));
    cr_assert_eq(strncmp(r->name, want, strlen(want)), 0, "%s", r->name);
    /* the receiver keeps 127 bytes: a large name fills them with its letter */
    size_t len = strlen(r->name);
    cr_assert_eq(len, i % 3 == 0 ? 127u : 40u, "span %d: %zu", (int)i, len);
    cr_assert_eq(r->name[len - 1], 'a' + i % 26);
    cr_assert_arr_eq(r->parent_id, root.sc.span_id, 8);
  }
  pthread_mutex_unlock(&rx->mu);
  for (int i = 0; i < N; i++)
    cr_assert_eq(seen[i], 1, "span %d arrived %d times", i, seen[i]);
  perfc_tracing_free(tr);
  rx_stop(rx);
}

/* ---- the exporter thread ------------------------------------------------------------- */

static perfc_tracer *queue_tracer(otlp_rx *rx, size_t queue, size_t batch,
                                  int64_t delay_ms, char *url, size_t urlcap) {
  perfc_tracing_opts o;
  perfc_tracing_opts_init(&o);
  o.ignore_env = true;
  o.sampler = PERFC_SAMPLER_ALWAYS_ON;
  snprintf(url, urlcap, "http://127.0.0.1:%d/v1/traces", rx->port);
  o.endpoint = url;
  o.max_queue_spans = queue;
  o.max_export_batch_spans = batch;
  o.schedule_delay_ms = delay_ms;
  perfc_tracer *tr;
  cr_assert_eq(perfc_tracing_new(&tr, &o), 0);
  return tr;
}

/* Ends one INTERNAL span under a fixed sampled parent. */
static void one_span(perfc_tracer *tr, const char *name) {
  perfc_trace_current root = {.tracer = tr};
  memset(root.sc.trace_id, 0x31, 16);
  memset(root.sc.span_id, 0x42, 8);
  root.sc.trace_flags = PERFC_TRACE_FLAG_SAMPLED;
  perfc_trace_current_set(&root);
  perfc_span *sp = perfc_tracing_span_start_current(name, PERFC_SPAN_INTERNAL);
  cr_assert_not_null(sp);
  perfc_span_end(sp);
  perfc_trace_current_set(NULL);
}

/* Between schedules the exporter sends full batches only: 175 spans with a
 * batch of 50 make 3 requests of 50, and the 25 left wait for the next
 * full batch, the schedule or a flush (a full batch used to be followed at
 * once by a request for the few spans that came meanwhile: 22 requests for
 * 6,000 spans of 512-span batches in bench/trace-cost, now 12). */
Test(exporter, sends_full_batches_between_schedules, .timeout = 60) {
  otlp_rx *rx = rx_start();
  cr_assert_not_null(rx);
  char url[80];
  perfc_tracer *tr = queue_tracer(rx, 256, 50, 60000, url, sizeof url);
  for (int i = 0; i < 175; i++)
    one_span(tr, "batched");
  perfc_tracing_stats st;
  for (int k = 0; k < 500; k++) { /* up to 10 s for 3 batches */
    perfc_tracing_stats_get(tr, &st);
    if (st.spans_exported >= 150)
      break;
    usleep(20000);
  }
  usleep(300000); /* time for a request the exporter should not make */
  perfc_tracing_stats_get(tr, &st);
  cr_assert_eq(st.spans_exported, 150, "exported %llu", (unsigned long long)st.spans_exported);
  cr_assert_eq(st.export_requests, 3, "requests %llu", (unsigned long long)st.export_requests);
  cr_assert_eq(rx_count(rx), 150);
  cr_assert_eq(perfc_tracing_flush(tr, 10000), 0);
  perfc_tracing_stats_get(tr, &st);
  cr_assert_eq(st.spans_exported, 175);
  cr_assert_eq(st.export_requests, 4);
  cr_assert_eq(st.dropped_queue_full + st.dropped_export, 0);
  perfc_tracing_free(tr);
  rx_stop(rx);
}

/* The exporter thread is named perfc-otlp and blocks every signal, so a
 * SIGTERM meant for the application's handler (perfc_server_run's) is
 * never delivered to it; it used to inherit the creating thread's mask. */
Test(exporter, thread_blocks_signals_and_is_named) {
  otlp_rx *rx = rx_start();
  cr_assert_not_null(rx);
  sigset_t none, old;
  sigemptyset(&none);
  pthread_sigmask(SIG_SETMASK, &none, &old); /* nothing blocked here */
  char url[80];
  perfc_tracer *tr = queue_tracer(rx, 16, 8, 5000, url, sizeof url);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  DIR *d = opendir("/proc/self/task");
  cr_assert_not_null(d);
  int found = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    if (de->d_name[0] == '.')
      continue;
    char path[300], comm[32] = "";
    snprintf(path, sizeof path, "/proc/self/task/%s/comm", de->d_name);
    FILE *f = fopen(path, "r");
    if (f == NULL)
      continue;
    if (fgets(comm, sizeof comm, f) == NULL)
      comm[0] = '\0';
    fclose(f);
    if (strncmp(comm, "perfc-otlp", 10) != 0)
      continue;
    found++;
    snprintf(path, sizeof path, "/proc/self/task/%s/status", de->d_name);
    f = fopen(path, "r");
    cr_assert_not_null(f);
    char line[256];
    unsigned long long blk = 0;
    while (fgets(line, sizeof line, f) != NULL)
      if (sscanf(line, "SigBlk: %llx", &blk) == 1)
        break;
    fclose(f);
    cr_assert(blk & (1ull << (SIGTERM - 1)), "SIGTERM not blocked: %llx", blk);
    cr_assert(blk & (1ull << (SIGINT - 1)), "SIGINT not blocked: %llx", blk);
    cr_assert(blk & (1ull << (SIGHUP - 1)), "SIGHUP not blocked: %llx", blk);
  }
  closedir(d);
  cr_assert_eq(found, 1, "threads named perfc-otlp: %d", found);
  perfc_tracing_free(tr);
  rx_stop(rx);
}

/* Span times come from the monotonic clock plus a wall-clock offset read
 * at most once a second per thread: they still match the wall clock, a
 * span's duration is what it lasted, and a span more than a second after
 * the offset was read gets a fresh one. */
static uint64_t wall_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

Test(exporter, span_times_follow_the_wall_clock, .timeout = 60) {
  otlp_rx *rx = rx_start();
  cr_assert_not_null(rx);
  char url[80];
  perfc_tracer *tr = queue_tracer(rx, 16, 8, 5000, url, sizeof url);
  uint64_t before[3], after[3];
  for (int i = 0; i < 3; i++) {
    if (i == 2)
      usleep(1200000); /* past the offset's second */
    before[i] = wall_ns();
    perfc_trace_current root = {.tracer = tr};
    memset(root.sc.trace_id, 0x31, 16);
    memset(root.sc.span_id, 0x42, 8);
    root.sc.trace_flags = PERFC_TRACE_FLAG_SAMPLED;
    perfc_trace_current_set(&root);
    char name[16];
    snprintf(name, sizeof name, "timed-%d", i);
    perfc_span *sp = perfc_tracing_span_start_current(name, PERFC_SPAN_INTERNAL);
    cr_assert_not_null(sp);
    usleep(20000);
    perfc_span_end(sp);
    perfc_trace_current_set(NULL);
    after[i] = wall_ns();
  }
  cr_assert_eq(perfc_tracing_flush(tr, 10000), 0);
  cr_assert_eq(rx_count(rx), 3);
  pthread_mutex_lock(&rx->mu);
  for (size_t k = 0; k < rx->n; k++) {
    const rx_span *r = &rx->spans[k];
    int i = r->name[6] - '0';
    cr_assert(i >= 0 && i < 3);
    /* 1 ms of slack for the clock reads on either side */
    cr_assert(r->start_ns + 1000000 >= before[i], "span %d starts %lld ns early", i,
              (long long)(before[i] - r->start_ns));
    cr_assert(r->end_ns <= after[i] + 1000000, "span %d ends %lld ns late", i,
              (long long)(r->end_ns - after[i]));
    cr_assert(r->end_ns - r->start_ns >= 20000000, "span %d lasted %llu ns", i,
              (unsigned long long)(r->end_ns - r->start_ns));
  }
  pthread_mutex_unlock(&rx->mu);
  perfc_tracing_free(tr);
  rx_stop(rx);
}
