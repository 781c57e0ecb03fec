/* otlp_receiver.h — an OTLP/HTTP trace receiver for tests: libmicrohttpd
 * on a loopback port, POST /v1/traces bodies gunzipped with zlib and
 * decoded with the protobuf-c messages generated from
 * proto/opentelemetry/ (the exporter's own schema; interop with the real
 * opentelemetry-proto is by field number, copied from it).
 * It can answer with a chosen status (and Retry-After) for the first N
 * requests, or answer slowly. */
#ifndef PERFC_TEST_OTLP_RECEIVER_H
#define PERFC_TEST_OTLP_RECEIVER_H

#include "opentelemetry/proto/collector/trace/v1/trace_service.pb-c.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#define RX_MAX_SPANS 4096

typedef struct rx_span {
  uint8_t trace_id[16], span_id[8], parent_id[8];
  int has_parent;
  char name[128];
  char service[64]; /* the resource's service.name */
  int kind;
  int status;
  char status_msg[64];
  char tracestate[128];
  uint64_t start_ns, end_ns;
  uint32_t flags;
  int64_t grpc_code; /* rpc.grpc.status_code, -1 when absent */
  char rpc_service[64], rpc_method[64], rpc_system[16];
  char peer_addr[64], server_addr[64];
  int64_t server_port;
  size_t n_events;
  uint32_t dropped_events;
  /* every attribute, for the data-layer spans' db.* and perfc.cache.* */
  struct {
    char key[48];
    char sv[64];
    int64_t iv;
  } attrs[16];
  size_t nattrs;
} rx_span;

/* The string value of attribute `key`, or NULL. */
static inline const char *rx_attr(const rx_span *s, const char *key) {
  for (size_t i = 0; i < s->nattrs; i++)
    if (strcmp(s->attrs[i].key, key) == 0)
      return s->attrs[i].sv;
  return NULL;
}

typedef struct otlp_rx {
  struct MHD_Daemon *d;
  int port;
  pthread_mutex_t mu;
  rx_span spans[RX_MAX_SPANS];
  size_t n;
  int requests;      /* POSTs seen */
  int gzip_seen;     /* requests with Content-Encoding: gzip */
  int bad;           /* requests that did not decode */
  int fail_first;    /* answer the first `fail_first` requests with ... */
  int fail_status;   /* ... this status */
  int retry_after_s; /* and this Retry-After (-1 = none) */
  int delay_ms;      /* sleep before answering */
  char last_auth[64];
} otlp_rx;

typedef struct rx_conn {
  char *buf;
  size_t len, cap;
} rx_conn;

static int rx_gunzip(const uint8_t *in, size_t n, uint8_t **out, size_t *outlen) {
  z_stream z;
  memset(&z, 0, sizeof z);
  if (inflateInit2(&z, 15 + 16) != Z_OK)
    return -1;
  size_t cap = n * 8 + 1024;
  uint8_t *buf = malloc(cap);
  z.next_in = (Bytef *)in;
  z.avail_in = (uInt)n;
  int rc;
  do {
    if (z.total_out == cap) {
      cap *= 2;
      buf = realloc(buf, cap);
    }
    z.next_out = buf + z.total_out;
    z.avail_out = (uInt)(cap - z.total_out);
    rc = inflate(&z, Z_NO_FLUSH);
  } while (rc == Z_OK);
  *outlen = z.total_out;
  inflateEnd(&z);
  if (rc != Z_STREAM_END) {
    free(buf);
    return -1;
  }
  *out = buf;
  return 0;
}

static void rx_copy(char *dst, size_t cap, const char *src) {
  snprintf(dst, cap, "%s", src ? src : "");
}

static void rx_store(otlp_rx *rx,
                     Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest *req) {
  for (size_t r = 0; r < req->n_resource_spans; r++) {
    Opentelemetry__Proto__Trace__V1__ResourceSpans *rs = req->resource_spans[r];
    const char *svc = "";
    for (size_t i = 0; rs->resource && i < rs->resource->n_attributes; i++)
      if (strcmp(rs->resource->attributes[i]->key, "service.name") == 0)
        svc = rs->resource->attributes[i]->value->string_value;
    for (size_t k = 0; k < rs->n_scope_spans; k++)
      for (size_t j = 0; j < rs->scope_spans[k]->n_spans; j++) {
        Opentelemetry__Proto__Trace__V1__Span *s = rs->scope_spans[k]->spans[j];
        if (rx->n >= RX_MAX_SPANS)
          return;
        rx_span *o = &rx->spans[rx->n++];
        memset(o, 0, sizeof *o);
        o->grpc_code = -1;
        o->server_port = -1;
        if (s->trace_id.len == 16)
          memcpy(o->trace_id, s->trace_id.data, 16);
        if (s->span_id.len == 8)
          memcpy(o->span_id, s->span_id.data, 8);
        if (s->parent_span_id.len == 8) {
          memcpy(o->parent_id, s->parent_span_id.data, 8);
          o->has_parent = 1;
        }
        rx_copy(o->name, sizeof o->name, s->name);
        rx_copy(o->service, sizeof o->service, svc);
        rx_copy(o->tracestate, sizeof o->tracestate, s->trace_state);
        o->kind = (int)s->kind;
        o->status = s->status ? (int)s->status->code : 0;
        if (s->status)
          rx_copy(o->status_msg, sizeof o->status_msg, s->status->message);
        o->start_ns = s->start_time_unix_nano;
        o->end_ns = s->end_time_unix_nano;
        o->flags = s->flags;
        o->n_events = s->n_events;
        o->dropped_events = s->dropped_events_count;
        for (size_t a = 0; a < s->n_attributes; a++) {
          const char *key = s->attributes[a]->key;
          Opentelemetry__Proto__Common__V1__AnyValue *v = s->attributes[a]->value;
          const char *sv = v->value_case == OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE
                               ? v->string_value : NULL;
          int64_t iv = v->value_case == OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE
                           ? v->int_value : -1;
          if (o->nattrs < 16) {
            rx_copy(o->attrs[o->nattrs].key, sizeof o->attrs[0].key, key);
            rx_copy(o->attrs[o->nattrs].sv, sizeof o->attrs[0].sv, sv);
            o->attrs[o->nattrs].iv = iv;
            o->nattrs++;
          }
          if (strcmp(key, "rpc.grpc.status_code") == 0)
            o->grpc_code = iv;
          else if (strcmp(key, "rpc.service") == 0)
            rx_copy(o->rpc_service, sizeof o->rpc_service, sv);
          else if (strcmp(key, "rpc.method") == 0)
            rx_copy(o->rpc_method, sizeof o->rpc_method, sv);
          else if (strcmp(key, "rpc.system") == 0)
            rx_copy(o->rpc_system, sizeof o->rpc_system, sv);
          else if (strcmp(key, "network.peer.address") == 0)
            rx_copy(o->peer_addr, sizeof o->peer_addr, sv);
          else if (strcmp(key, "server.address") == 0)
            rx_copy(o->server_addr, sizeof o->server_addr, sv);
          else if (strcmp(key, "server.port") == 0)
            o->server_port = iv;
        }
      }
  }
}

static enum MHD_Result rx_handle(void *cls, struct MHD_Connection *c,
                                 const char *url, const char *method,
                                 const char *version, const char *data,
                                 size_t *size, void **con_cls) {
  (void)version;
  otlp_rx *rx = cls;
  rx_conn *st = *con_cls;
  if (st == NULL) {
    st = calloc(1, sizeof *st);
    *con_cls = st;
    return MHD_YES;
  }
  if (*size > 0) {
    if (st->len + *size > st->cap) {
      st->cap = (st->len + *size) * 2;
      st->buf = realloc(st->buf, st->cap);
    }
    memcpy(st->buf + st->len, data, *size);
    st->len += *size;
    *size = 0;
    return MHD_YES;
  }
  int status = 200;
  pthread_mutex_lock(&rx->mu);
  int nth = ++rx->requests;
  int delay = rx->delay_ms;
  const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-api-key");
  rx_copy(rx->last_auth, sizeof rx->last_auth, auth);
  pthread_mutex_unlock(&rx->mu);
  if (delay > 0) {
    struct timespec ts = {delay / 1000, (delay % 1000) * 1000000L};
    nanosleep(&ts, NULL);
  }
  if (strcmp(method, "POST") != 0 || strcmp(url, "/v1/traces") != 0) {
    status = 404;
  } else if (nth <= rx->fail_first) {
    status = rx->fail_status;
  } else {
    const char *enc = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Encoding");
    uint8_t *body = (uint8_t *)st->buf;
    size_t len = st->len;
    uint8_t *plain = NULL;
    int gz = enc && strcmp(enc, "gzip") == 0;
    if (gz && rx_gunzip(body, len, &plain, &len) == 0)
      body = plain;
    Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest *req =
        opentelemetry__proto__collector__trace__v1__export_trace_service_request__unpack(
            NULL, len, body);
    pthread_mutex_lock(&rx->mu);
    rx->gzip_seen += gz;
    if (req == NULL) {
      rx->bad++;
      status = 400;
    } else {
      rx_store(rx, req);
    }
    pthread_mutex_unlock(&rx->mu);
    if (req)
      opentelemetry__proto__collector__trace__v1__export_trace_service_request__free_unpacked(req, NULL);
    free(plain);
  }
  struct MHD_Response *r =
      MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
  MHD_add_response_header(r, "Content-Type", "application/x-protobuf");
  if (status != 200 && rx->retry_after_s >= 0) {
    char ra[16];
    snprintf(ra, sizeof ra, "%d", rx->retry_after_s);
    MHD_add_response_header(r, "Retry-After", ra);
  }
  enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
  MHD_destroy_response(r);
  return ret;
}

static void rx_done(void *cls, struct MHD_Connection *c, void **con_cls,
                    enum MHD_RequestTerminationCode toe) {
  (void)cls;
  (void)c;
  (void)toe;
  rx_conn *st = *con_cls;
  if (st) {
    free(st->buf);
    free(st);
  }
  *con_cls = NULL;
}

static otlp_rx *rx_start(void) {
  otlp_rx *rx = calloc(1, sizeof *rx);
  pthread_mutex_init(&rx->mu, NULL);
  rx->retry_after_s = -1;
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  rx->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION,
                           0, NULL, NULL, rx_handle, rx,
                           MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                           MHD_OPTION_NOTIFY_COMPLETED, rx_done, rx,
                           MHD_OPTION_END);
  if (rx->d == NULL) {
    free(rx);
    return NULL;
  }
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(rx->d, MHD_DAEMON_INFO_BIND_PORT);
  rx->port = info->port;
  return rx;
}

static void rx_stop(otlp_rx *rx) {
  if (rx == NULL)
    return;
  MHD_stop_daemon(rx->d);
  pthread_mutex_destroy(&rx->mu);
  free(rx);
}

/* Sets the answer delay while the receiver may be serving (its handler
 * reads delay_ms under mu). */
static inline void rx_set_delay(otlp_rx *rx, int ms) {
  pthread_mutex_lock(&rx->mu);
  rx->delay_ms = ms;
  pthread_mutex_unlock(&rx->mu);
}

static size_t rx_count(otlp_rx *rx) {
  pthread_mutex_lock(&rx->mu);
  size_t n = rx->n;
  pthread_mutex_unlock(&rx->mu);
  return n;
}
#endif
