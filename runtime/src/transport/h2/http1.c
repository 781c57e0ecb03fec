/*
 * http1.c — HTTP/1.1 on the gRPC port (issue #18): a connection whose
 * first bytes are not the HTTP/2 preface is parsed with http-parser
 * (Debian's libhttp-parser, nodejs's parser before llhttp; llhttp is not
 * packaged in Debian 12), and each request becomes a stream of the
 * connection, started, answered and ended by the same code as an HTTP
 * request on an HTTP/2 stream (grpc.c: perfc__h2_grpc_start,
 * perfc__h2_http_*), so the call layer cannot tell them apart but by
 * perfc__h2_call_info.http.
 *
 * Room: runtime/src/transport/h2. Loop thread only, like conn.c.
 *
 * Keep-alive and pipelining: one request is served at a time. When a
 * request was read whole the parser pauses; bytes already read past it
 * (pipelined requests) wait in `rest`, and the socket is not read until
 * the answer was handed to the socket, so answers leave in request order
 * and a client cannot make the server buffer more than one read ahead.
 * Bounds: the request line and headers count against
 * max_header_list_bytes like an HTTP/2 header block (431, then close), a
 * body against http_max_body_bytes (413 on its Content-Length, or once
 * the chunks pass it; then close, the rest is never read), a request
 * must arrive whole within handshake_timeout_ms from its first byte (else
 * the connection is closed, as h2's slow header blocks are; a gRPC-Web
 * client or bidi stream's body is exempt, its silences bounded by the idle
 * timeout), and an idle keep-alive connection is closed after
 * http_idle_timeout_ms. A gRPC-Web stream's messages reach its handler as
 * they are read, and its answers leave before the body ends; while the
 * handler is behind, the socket is not read (perfc__h2_h1_busy).
 */
#include "transport/h2/conn_internal.h"

#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

typedef struct perfc__h1 perfc__h1;

typedef struct buf {
  char *p;
  size_t len, cap;
} buf;

struct perfc__h1 {
  http_parser p;
  perfc__h2_conn *c;
  perfc__h2_stream *cur; /* the request being read or answered */
  bool complete;         /* cur was read whole (the parser paused) */
  bool stop;             /* nothing more is parsed: the connection ends */
  bool field_open;       /* a header name is being read */
  bool too_big;
  bool expect_continue;
  bool eof; /* the client shut its side: answer what was read, then close */
  buf url, fld, val, host;
  size_t head_bytes; /* request line and headers, as h2 counts them */
  uint8_t *rest;     /* read past cur (pipelined): rest[rest_off..rest_len) */
  size_t rest_off, rest_len; /* is not parsed yet */
  int32_t next_id;
};

static bool buf_add(buf *b, const char *p, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 128;
    while (cap < b->len + n + 1)
      cap *= 2;
    char *q = realloc(b->p, cap);
    if (q == NULL)
      return false;
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->len, p, n);
  b->len += n;
  b->p[b->len] = '\0';
  return true;
}

static perfc__h1 *h1_of(http_parser *p) { return p->data; }

/* Counts request-head bytes against the header list limit; past it the
 * request is answered 431 once its head ends. */
static bool count(perfc__h1 *h, size_t n) {
  h->head_bytes += n;
  if (h->head_bytes > h->c->lc->srv->o.max_header_list_bytes)
    h->too_big = true;
  return !h->too_big;
}

static void push_header(perfc__h1 *h) {
  if (h->fld.len == 0 || h->cur == NULL)
    return;
  for (size_t i = 0; i < h->fld.len; i++)
    h->fld.p[i] = (char)((h->fld.p[i] >= 'A' && h->fld.p[i] <= 'Z')
                             ? h->fld.p[i] + 32
                             : h->fld.p[i]);
  const char *v = h->val.p ? h->val.p : "";
  /* Names with ':' would pass for pseudo headers; HTTP/1.1 forbids them
   * and http-parser refuses them, so none reaches here. */
  if (strcmp(h->fld.p, "host") == 0) {
    h->host.len = 0;
    buf_add(&h->host, v, h->val.len);
  } else if (strcmp(h->fld.p, "expect") == 0 &&
             strcasecmp(v, "100-continue") == 0) {
    h->expect_continue = true;
  }
  /* The stream counts it too (name + value + 32, as on h2); either count
   * past the limit answers 431. */
  if (perfc__h2_stream_add_header(h->cur, h->fld.p, h->fld.len, v,
                                  h->val.len) != 0)
    h->too_big = true; /* out of memory: answered like an oversized head */
  h->fld.len = h->val.len = 0;
}

static int on_message_begin(http_parser *p) {
  perfc__h1 *h = h1_of(p);
  perfc__h2_conn *c = h->c;
  h->next_id += 2;
  h->cur = perfc__h2_stream_new(c, h->next_id);
  if (h->cur == NULL)
    return -1;
  h->cur->h1 = true;
  /* HTTP/JSON until its head says gRPC-Web (perfc__h2_grpc_start). */
  h->cur->http = PERFC__H2_PROTO_HTTP1;
  h->complete = h->field_open = h->too_big = h->expect_continue = false;
  h->url.len = h->fld.len = h->val.len = h->host.len = 0;
  h->head_bytes = 0;
  c->in_header_block = true; /* the request must arrive within the timeout */
  c->header_block_ms = c->last_read_ms;
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t n) {
  perfc__h1 *h = h1_of(p);
  if (count(h, n) && !buf_add(&h->url, at, n))
    h->too_big = true;
  return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n) {
  perfc__h1 *h = h1_of(p);
  if (!h->field_open) {
    if (!h->too_big)
      push_header(h);
    h->fld.len = h->val.len = 0;
    h->field_open = true;
    count(h, 32); /* RFC 9113's per-field overhead, as on h2 */
  }
  if (count(h, n) && !buf_add(&h->fld, at, n))
    h->too_big = true;
  return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n) {
  perfc__h1 *h = h1_of(p);
  h->field_open = false;
  if (count(h, n) && !buf_add(&h->val, at, n))
    h->too_big = true;
  return 0;
}

static void stop_after(perfc__h1 *h) {
  h->stop = true;
  h->cur->h1_close = true;
  http_parser_pause(&h->p, 1);
}

static int on_headers_complete(http_parser *p) {
  perfc__h1 *h = h1_of(p);
  perfc__h2_conn *c = h->c;
  perfc__h2_stream *s = h->cur;
  if (!h->too_big && !h->field_open)
    push_header(h);
  /* An HTTP/JSON request unless its content type makes it gRPC-Web
   * (perfc__h2_grpc_start decides); answers before that are HTTP's. */
  s->http = PERFC__H2_PROTO_HTTP1;
  s->h1_close = !http_should_keep_alive(p);
  if (!h->too_big) {
    const char *m = http_method_str((enum http_method)p->method);
    perfc__h2_stream_add_header(s, ":method", 7, m, strlen(m));
    perfc__h2_stream_add_header(s, ":path", 5, h->url.p ? h->url.p : "",
                                h->url.len);
    if (h->host.len > 0)
      perfc__h2_stream_add_header(s, ":authority", 10, h->host.p, h->host.len);
  }
  if (h->too_big || s->too_big) {
    s->too_big = true;
    stop_after(h);
    perfc__h2_grpc_start(c, s); /* answers 431 */
    return 0;
  }
  size_t max = c->lc->srv->o.http_max_body_bytes;
  if ((p->flags & F_CONTENTLENGTH) && p->content_length > max) {
    char m[128];
    snprintf(m, sizeof m,
             "request body of %llu bytes is larger than the server's "
             "%zu-byte limit",
             (unsigned long long)p->content_length, max);
    stop_after(h);
    if (!perfc__h2_web_refuse_body(s, m))
      perfc__h2_http_fail(s, 413, PERFC_STATUS_RESOURCE_EXHAUSTED, m);
    return 0;
  }
  if (h->expect_continue) {
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    if (!perfc__h2_conn_emit(c, (const uint8_t *)cont, sizeof cont - 1))
      c->closing = true;
  }
  perfc__h2_grpc_start(c, s);
  /* A gRPC-Web client or bidi stream's body is its messages, sent when the
   * client likes (lock-step with the answers, for bidi): the bound on a
   * whole request's arrival would cut it at 10 s. Its bytes are bounded by
   * max_body_bytes, its silences by the idle timeout (conn.c: a request
   * in progress whose head is done counts as idle while nothing is read). */
  if (s->web && s->started && !(s->flags & PERFC__H2_CALL_SINGLE_REQUEST)) {
    c->in_header_block = false;
    perfc__h2_conn_timer_at_most(
        c, perfc__h2_now_ms() + c->lc->srv->o.http_idle_timeout_ms);
  }
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t n) {
  perfc__h1 *h = h1_of(p);
  if (h->cur == NULL)
    return 0;
  if (h->cur->web)
    perfc__h2_web_body(h->cur, (const uint8_t *)at, n);
  else
    perfc__h2_http_body(h->cur, (const uint8_t *)at, n);
  if (h->cur->finish_queued && h->cur->h1_close && !h->stop)
    stop_after(h); /* 413 from the chunks: the rest is not read */
  return 0;
}

static int on_message_complete(http_parser *p) {
  perfc__h1 *h = h1_of(p);
  h->c->in_header_block = false;
  h->complete = true;
  /* One request at a time: the next one waits until this one's answer
   * was handed to the socket (perfc__h2_h1_flush). */
  http_parser_pause(p, 1);
  if (h->cur != NULL)
    perfc__h2_http_request_done(h->cur);
  /* An answer that went out before the request ended (a refusal) can
   * finish the request now. */
  perfc__h2_conn_defer_flush(h->c);
  return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

bool perfc__h2_h1_sniff(perfc__h2_conn *c, const uint8_t *p, size_t n) {
  c->sniffing = false;
  size_t k = n < sizeof preface - 1 ? n : sizeof preface - 1;
  if (memcmp(p, preface, k) == 0)
    return false; /* HTTP/2 (or its first bytes): nghttp2 takes it */
  return perfc__h2_h1_begin(c);
}

bool perfc__h2_h1_begin(perfc__h2_conn *c) {
  perfc__h1 *h = calloc(1, sizeof *h);
  if (h == NULL) {
    perfc__h2_conn_close_now(c);
    return false;
  }
  http_parser_init(&h->p, HTTP_REQUEST);
  h->p.data = h;
  h->c = c;
  h->next_id = -1;
  c->h1 = h;
  c->preface_done = true; /* no HTTP/2 preface to wait for */
  return true;
}

bool perfc__h2_h1_unread(const perfc__h2_conn *c) {
  return c->h1 != NULL && c->h1->stop;
}

/* Busy: the socket is not read. Also while a gRPC-Web stream's handler is
 * behind (its queue full, `paused`): HTTP/1.1 has no flow control, so not
 * reading is the back-pressure (TCP holds the client), as a shut window is
 * on HTTP/2; grpc.c's resume kicks the connection to read again, as does
 * the call's end (recv_done: the rest of the body is read and dropped).
 * Without it the messages read meanwhile were held up to max_body_bytes. */
bool perfc__h2_h1_busy(const perfc__h2_conn *c) {
  const perfc__h1 *h = c->h1;
  return h != NULL &&
         ((h->cur != NULL &&
           (h->complete || (h->cur->paused && !h->cur->recv_done))) ||
          h->stop || h->eof);
}

bool perfc__h2_h1_eof(perfc__h2_conn *c) {
  perfc__h1 *h = c->h1;
  h->eof = true;
  /* A half-close after whole requests (`printf ... | nc -N`, a client
   * that shuts its write side) still gets its answers; a request cut
   * short never will. */
  if (h->cur == NULL && h->rest_off == h->rest_len)
    return false;
  if (h->cur != NULL && !h->complete && !h->stop)
    return false;
  perfc__h2_conn_defer_flush(c);
  return true;
}

/* A malformed request: answered 400 (431 for a head past http-parser's
 * own bound) on the request's stream, then the connection closes. */
static void parse_error(perfc__h2_conn *c, enum http_errno e) {
  perfc__h1 *h = c->h1;
  h->stop = true;
  if (h->cur == NULL) {
    h->next_id += 2;
    h->cur = perfc__h2_stream_new(c, h->next_id);
    if (h->cur == NULL) {
      c->closing = true;
      return;
    }
    h->cur->h1 = true;
    h->cur->http = PERFC__H2_PROTO_HTTP1;
  }
  h->complete = true;
  h->cur->h1_close = true;
  c->in_header_block = false;
  char m[160];
  snprintf(m, sizeof m, "malformed HTTP/1.1 request: %s (%s)",
           http_errno_description(e), http_errno_name(e));
  perfc__h2_http_fail(h->cur, e == HPE_HEADER_OVERFLOW ? 431 : 400,
                      e == HPE_HEADER_OVERFLOW ? PERFC_STATUS_RESOURCE_EXHAUSTED
                                               : PERFC_STATUS_INVALID_ARGUMENT,
                      m);
}

static bool keep_rest(perfc__h1 *h, const uint8_t *p, size_t n) {
  if (n == 0)
    return true;
  uint8_t *r = realloc(h->rest, h->rest_len + n);
  if (r == NULL)
    return false;
  memcpy(r + h->rest_len, p, n);
  h->rest = r;
  h->rest_len += n;
  return true;
}

static void drop_rest(perfc__h1 *h) {
  free(h->rest);
  h->rest = NULL;
  h->rest_off = h->rest_len = 0;
}

/* Parses up to the end of one request (on_message_complete pauses the
 * parser there). Returns how many of the n bytes were taken: what follows
 * is the next pipelined request, or n when nothing more is to be read. */
static size_t parse(perfc__h2_conn *c, const uint8_t *p, size_t n) {
  perfc__h1 *h = c->h1;
  size_t done = http_parser_execute(&h->p, &settings, (const char *)p, n);
  enum http_errno e = HTTP_PARSER_ERRNO(&h->p);
  if (e == HPE_PAUSED) {
    http_parser_pause(&h->p, 0);
    return h->stop ? n : done; /* stop: what follows is never read */
  }
  if (e != HPE_OK) {
    parse_error(c, e);
    return n;
  }
  if (h->p.upgrade) {
    /* An Upgrade (h2c, websocket) is not offered: the request was
     * answered as a plain one, and the connection ends after it. */
    if (h->cur != NULL)
      h->cur->h1_close = true;
    else
      c->closing = true; /* answered already */
    h->stop = true;
  }
  return n;
}

bool perfc__h2_h1_feed(perfc__h2_conn *c, const uint8_t *p, size_t n) {
  perfc__h1 *h = c->h1;
  if (h->stop)
    return true;
  if (perfc__h2_h1_busy(c) || h->rest_off < h->rest_len)
    return keep_rest(h, p, n);
  size_t used = parse(c, p, n);
  return keep_rest(h, p + used, n - used);
}

void perfc__h2_h1_kick(perfc__h2_stream *s) {
  if (s->conn != NULL)
    perfc__h2_conn_defer_flush(s->conn);
}

void perfc__h2_h1_flush(perfc__h2_conn *c) {
  perfc__h1 *h = c->h1;
  const perfc__h2_opts *o = &c->lc->srv->o;
  while (!c->dead && h->cur != NULL) {
    perfc__h2_stream *s = h->cur;
    if (h->eof && !h->complete && !h->stop) {
      c->closing = true; /* cut short by the client's EOF */
      return;
    }
    if (s->h1_head_ready && s->h1_head_off < s->h1_head_len) {
      if (!perfc__h2_conn_emit(c, (const uint8_t *)s->h1_head + s->h1_head_off,
                               s->h1_head_len - s->h1_head_off)) {
        perfc__h2_conn_close_now(c);
        return;
      }
      s->h1_head_off = s->h1_head_len;
    }
    if (!s->h1_head_ready)
      return;
    /* The body moves to the socket while the connection's unsent output
     * is under its budget; past it the stream's queue fills and its sender
     * waits (PERFC_EFULL, then on_writable), as on HTTP/2. */
    size_t waiting = c->out_len - c->out_off;
    if (s->qoff < s->qlen && waiting < o->conn_send_budget_bytes) {
      size_t n = s->qlen - s->qoff;
      if (!perfc__h2_conn_emit(c, s->q + s->qoff, n)) {
        perfc__h2_conn_close_now(c);
        return;
      }
      s->qoff = s->qlen = 0;
      atomic_fetch_sub(&s->pending, n);
      if (s->qcap > 65536)
        perfc__h2_q_drop(s);
      if (atomic_load(&s->want_writable) && !s->writable_d.queued &&
          atomic_load(&s->pending) + atomic_load(&s->posted) <
              o->stream_send_high_water_bytes / 2) {
        atomic_fetch_add(&s->refs, 1);
        perfc__h2_loop_defer(c->lc->loop, &s->writable_d);
      }
    }
    if (!s->finish_queued || s->qoff < s->qlen)
      return;
    /* An answer may leave before its request was read whole (a refusal at
     * the head, a 413): the request is over once both are, or when the
     * rest is never to be read. */
    if (!h->complete && !h->stop)
      return;
    /* The answer is with the socket: the request is over. */
    bool close = s->h1_close || c->goaway_sent || h->stop;
    perfc__h2_close_reason why = s->reason_set ? s->reason : PERFC__H2_CLOSE_DONE;
    h->cur = NULL;
    h->complete = false;
    s->end_stream_sent = true;
    perfc__h2_grpc_stream_end(c, s, why);
    if (close) {
      c->closing = true;
      return;
    }
    /* Idle from now until the next request (conn.c's timer closes it). */
    perfc__h2_conn_timer_at_most(c, perfc__h2_now_ms() + o->http_idle_timeout_ms);
    if (h->rest_off < h->rest_len) {
      /* The next pipelined request, parsed where it lies: the buffer is
       * not copied per request (only read again when the socket is,
       * which it is not while a request is being answered). */
      h->rest_off += parse(c, h->rest + h->rest_off, h->rest_len - h->rest_off);
      if (h->stop || h->rest_off == h->rest_len)
        drop_rest(h);
    }
  }
  if (h->eof && h->cur == NULL && !c->dead)
    c->closing = true; /* every request the client sent was answered */
}

void perfc__h2_h1_free(perfc__h2_conn *c) {
  perfc__h1 *h = c->h1;
  if (h == NULL)
    return;
  free(h->url.p);
  free(h->fld.p);
  free(h->val.p);
  free(h->host.p);
  free(h->rest);
  free(h);
  c->h1 = NULL;
}
