/*
 * grpc.c — gRPC over HTTP/2 on an nghttp2 session: request headers checked
 * and turned into a call, length-prefixed messages reassembled across DATA
 * frames (bounded, decompressed with a bounded inflate), responses framed
 * into DATA with status and percent-encoded grpc-message in trailers, and
 * the downward API the call layer answers with (h2_internal.h).
 *
 * Room: runtime/src/transport/h2. Everything here runs on the stream's
 * loop thread except the entry points of the downward API, which copy
 * their arguments into a task posted to that loop when called elsewhere.
 *
 * Spec: grpc/grpc doc/PROTOCOL-HTTP2.md and doc/compression.md.
 */
#include "transport/h2/conn_internal.h"

#include "core/error_internal.h"
#include "perfc/server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ENC_IDENTITY = 0, ENC_GZIP = 1, ENC_DEFLATE = 2, ENC_UNKNOWN = 3 };
static const char *const enc_names[] = {"identity", "gzip", "deflate"};
#define ACCEPT_ENCODING "identity,deflate,gzip"

typedef struct pmsg {
  struct pmsg *next;
  size_t len;
  bool compressed; /* it arrived with the compressed flag */
  uint8_t data[];
} pmsg;

static void stream_unref(perfc__h2_stream *s);
static int finish_local(perfc__h2_stream *s, perfc_status_code code,
                        const char *msg, const perfc__h2_md *md, size_t n);

static perfc__h2_stream *stream_of(perfc__h2_conn *c, int32_t sid) {
  return nghttp2_session_get_stream_user_data(c->ng, sid);
}

static const perfc__h2_opts *opts_of(const perfc__h2_stream *s) {
  return &s->lc->srv->o;
}

static int enc_parse(const char *v, size_t len) {
  for (int i = 0; i < 3; i++)
    if (strlen(enc_names[i]) == len && memcmp(enc_names[i], v, len) == 0)
      return i;
  return ENC_UNKNOWN;
}

/* ---- helpers exposed for tests -------------------------------------------- */

int perfc__h2_parse_timeout(const char *v, size_t len, int64_t *ms) {
  /* "TimeoutValue: 1 to 8 ASCII digits" + one unit character. */
  if (len < 2 || len > 9)
    return PERFC_EPARSE;
  int64_t n = 0;
  for (size_t i = 0; i + 1 < len; i++) {
    if (v[i] < '0' || v[i] > '9')
      return PERFC_EPARSE;
    n = n * 10 + (v[i] - '0');
  }
  switch (v[len - 1]) {
  case 'H': *ms = n * 3600000; break;
  case 'M': *ms = n * 60000; break;
  case 'S': *ms = n * 1000; break;
  case 'm': *ms = n; break;
  case 'u': *ms = (n + 999) / 1000; break;
  case 'n': *ms = (n + 999999) / 1000000; break;
  default: return PERFC_EPARSE;
  }
  return 0;
}

size_t perfc__h2_percent_encode(const char *msg, size_t len, char *out,
                                size_t cap) {
  static const char hex[] = "0123456789ABCDEF";
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)msg[i];
    if (ch >= 0x20 && ch <= 0x7E && ch != '%') {
      if (o < cap)
        out[o] = (char)ch;
      o++;
    } else {
      if (o + 3 <= cap) {
        out[o] = '%';
        out[o + 1] = hex[ch >> 4];
        out[o + 2] = hex[ch & 15];
      }
      o += 3;
    }
  }
  return o;
}

int perfc__h2_inflate(const char *encoding, const uint8_t *in, size_t len,
                      size_t limit, uint8_t **out, size_t *out_len) {
  *out = NULL;
  *out_len = 0;
  int enc = enc_parse(encoding, strlen(encoding));
  if (enc != ENC_GZIP && enc != ENC_DEFLATE)
    return PERFC_EINVAL;
  z_stream z;
  memset(&z, 0, sizeof z);
  if (inflateInit2(&z, enc == ENC_GZIP ? 15 + 16 : 15) != Z_OK)
    return PERFC_ENOMEM;
  /* Grow the output as it fills, never past limit + 1 bytes: one byte
   * more than the limit is how we learn the message is too large without
   * inflating the rest of it. */
  size_t cap = len * 4 < 4096 ? 4096 : len * 4;
  if (cap > limit + 1)
    cap = limit + 1;
  uint8_t *buf = malloc(cap);
  if (buf == NULL) {
    inflateEnd(&z);
    return PERFC_ENOMEM;
  }
  z.next_in = (Bytef *)in;
  z.avail_in = (uInt)len;
  size_t got = 0;
  int rc = PERFC_EPARSE;
  for (;;) {
    z.next_out = buf + got;
    z.avail_out = (uInt)(cap - got);
    int zr = inflate(&z, Z_NO_FLUSH);
    got = cap - z.avail_out;
    if (zr == Z_STREAM_END) {
      rc = got > limit ? PERFC_ETOOBIG : 0;
      break;
    }
    if (zr != Z_OK && zr != Z_BUF_ERROR)
      break;
    if (got > limit) {
      rc = PERFC_ETOOBIG;
      break;
    }
    if (z.avail_out == 0) {
      size_t ncap = cap * 2 > limit + 1 ? limit + 1 : cap * 2;
      uint8_t *nb = realloc(buf, ncap);
      if (nb == NULL) {
        rc = PERFC_ENOMEM;
        break;
      }
      buf = nb;
      cap = ncap;
      continue;
    }
    if (z.avail_in == 0)
      break; /* truncated input */
  }
  inflateEnd(&z);
  if (rc != 0) {
    free(buf);
    return rc;
  }
  *out = buf;
  *out_len = got;
  return 0;
}

/* Base64 (standard or URL alphabet, padding optional) in place; returns
 * the decoded length or -1. */
static long b64_decode(char *s, size_t len) {
  unsigned acc = 0;
  int bits = 0;
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    char ch = s[i];
    int v;
    if (ch >= 'A' && ch <= 'Z') v = ch - 'A';
    else if (ch >= 'a' && ch <= 'z') v = ch - 'a' + 26;
    else if (ch >= '0' && ch <= '9') v = ch - '0' + 52;
    else if (ch == '+' || ch == '-') v = 62;
    else if (ch == '/' || ch == '_') v = 63;
    else if (ch == '=') break;
    else return -1;
    acc = (acc << 6) | (unsigned)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      s[o++] = (char)((acc >> bits) & 0xFF);
    }
  }
  return (long)o;
}

/* ---- receive-budget accounting --------------------------------------------- */

static bool budget_ok(perfc__h2_conn *c) {
  return c->recv_held <= c->lc->srv->o.conn_recv_budget_bytes &&
         atomic_load_explicit(&c->lc->recv_held, memory_order_relaxed) <=
             c->lc->recv_budget;
}

/* Gives the client window back for `n` received bytes, now if the budgets
 * allow, else once they do (perfc__h2_grpc_repay). */
static void take_window(perfc__h2_conn *c, perfc__h2_stream *s, size_t n) {
  if (n == 0)
    return;
  if (s == NULL) {
    nghttp2_session_consume_connection(c->ng, n);
    return;
  }
  if (!s->paused && !s->owing && budget_ok(c)) {
    nghttp2_session_consume(c->ng, s->id, n);
    return;
  }
  s->owed += n;
  if (!s->owing) {
    s->owing = true;
    c->nowed++;
  }
}

void perfc__h2_grpc_repay(perfc__h2_conn *c) {
  for (perfc__h2_stream *s = c->streams; s != NULL && c->nowed > 0; s = s->next) {
    if (!budget_ok(c))
      return;
    if (s->owing && !s->paused) {
      nghttp2_session_consume(c->ng, s->id, s->owed);
      s->owed = 0;
      s->owing = false;
      c->nowed--;
      perfc__h2_conn_defer_flush(c);
    }
  }
}

static void hold(perfc__h2_stream *s, size_t n) {
  s->held += n;
  s->conn->recv_held += n;
  atomic_store_explicit(
      &s->lc->recv_held,
      atomic_load_explicit(&s->lc->recv_held, memory_order_relaxed) + n,
      memory_order_relaxed);
}

static void unhold(perfc__h2_stream *s, size_t n) {
  s->held -= n;
  atomic_store_explicit(
      &s->lc->recv_held,
      atomic_load_explicit(&s->lc->recv_held, memory_order_relaxed) - n,
      memory_order_relaxed);
  if (s->conn != NULL) {
    s->conn->recv_held -= n;
    perfc__h2_conn_recv_released(s->conn);
  }
}

/* Frees the partial message and the queue of held ones. */
static void drop_input(perfc__h2_stream *s) {
  size_t n = 0;
  if (s->msg != NULL) {
    n += s->msg_got;
    free(s->msg);
    s->msg = NULL;
  }
  for (pmsg *m = s->held_msgs, *next; m != NULL; m = next) {
    next = m->next;
    n += m->len;
    free(m);
  }
  s->held_msgs = s->held_tail = NULL;
  s->msg_got = 0;
  s->pfx_got = 0;
  if (n)
    unhold(s, n);
}

/* ---- responses ----------------------------------------------------------- */

static ssize_t data_read(nghttp2_session *ng, int32_t sid, uint8_t *buf,
                         size_t length, uint32_t *flags,
                         nghttp2_data_source *src, void *user) {
  (void)user;
  perfc__h2_stream *s = src->ptr;
  size_t avail = s->qlen - s->qoff;
  if (avail == 0 && !s->finish_queued) {
    s->data_deferred = true;
    return NGHTTP2_ERR_DEFERRED;
  }
  size_t n = avail < length ? avail : length;
  if (n > 0) {
    memcpy(buf, s->q + s->qoff, n);
    s->qoff += n;
    atomic_fetch_sub(&s->pending, n);
    if (s->qoff == s->qlen) {
      s->qoff = s->qlen = 0;
      if (s->qcap > 65536) { /* a large reply's buffer is not kept */
        free(s->q);
        s->q = NULL;
        s->qcap = 0;
      }
    }
  }
  if (s->qlen == 0 && s->finish_queued) {
    *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
    nghttp2_submit_trailer(ng, sid, s->trailer_nv, s->trailer_n);
  }
  size_t hw = opts_of(s)->stream_send_high_water_bytes;
  if (atomic_load(&s->want_writable) &&
      atomic_load(&s->pending) + atomic_load(&s->posted) < hw / 2 &&
      !s->writable_d.queued) {
    /* Not from inside nghttp2's send: the call layer may send again. */
    atomic_fetch_add(&s->refs, 1);
    perfc__h2_loop_defer(s->lc->loop, &s->writable_d);
  }
  return (ssize_t)n;
}

static void writable_cb(perfc__h2_loop *l, perfc__h2_deferred *d) {
  (void)l;
  perfc__h2_stream *s =
      (perfc__h2_stream *)((char *)d - offsetof(perfc__h2_stream, writable_d));
  if (!atomic_load(&s->closed) && s->started &&
      atomic_exchange(&s->want_writable, false))
    s->lc->srv->cb.on_writable(s->call, s);
  stream_unref(s);
}

#define NV(n, v, vl)                                                           \
  ((nghttp2_nv){(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vl),          \
                NGHTTP2_NV_FLAG_NONE})

static int send_headers_local(perfc__h2_stream *s, const perfc__h2_md *md,
                              size_t n) {
  if (s->conn == NULL)
    return PERFC_ESHUTDOWN;
  if (s->headers_sent || s->finish_queued)
    return PERFC_ESTATE;
  nghttp2_nv stack[16];
  nghttp2_nv *nv = n + 4 <= 16 ? stack : malloc((n + 4) * sizeof *nv);
  if (nv == NULL)
    return PERFC_ENOMEM;
  size_t k = 0;
  nv[k++] = NV(":status", "200", 3);
  nv[k++] = NV("content-type", "application/grpc", 16);
  if (s->send_enc != ENC_IDENTITY)
    nv[k++] = NV("grpc-encoding", enc_names[s->send_enc],
                 strlen(enc_names[s->send_enc]));
  nv[k++] = NV("grpc-accept-encoding", ACCEPT_ENCODING, sizeof ACCEPT_ENCODING - 1);
  for (size_t i = 0; i < n; i++)
    nv[k++] = (nghttp2_nv){(uint8_t *)md[i].key, (uint8_t *)md[i].value,
                           md[i].key_len, md[i].value_len, NGHTTP2_NV_FLAG_NONE};
  nghttp2_data_provider prd = {.source.ptr = s, .read_callback = data_read};
  int rv = nghttp2_submit_response(s->conn->ng, s->id, nv, k, &prd);
  if (nv != stack)
    free(nv);
  if (rv != 0)
    return PERFC_ENOMEM;
  s->headers_sent = true;
  perfc__h2_conn_defer_flush(s->conn);
  return 0;
}

static bool q_reserve(perfc__h2_stream *s, size_t more) {
  if (s->qlen + more <= s->qcap)
    return true;
  if (s->qoff > 0) {
    memmove(s->q, s->q + s->qoff, s->qlen - s->qoff);
    s->qlen -= s->qoff;
    s->qoff = 0;
    if (s->qlen + more <= s->qcap)
      return true;
  }
  size_t cap = s->qcap ? s->qcap : 256;
  while (cap < s->qlen + more)
    cap *= 2;
  uint8_t *q = realloc(s->q, cap);
  if (q == NULL)
    return false;
  s->q = q;
  s->qcap = cap;
  return true;
}

static void kick_data(perfc__h2_stream *s) {
  if (s->data_deferred) {
    s->data_deferred = false;
    nghttp2_session_resume_data(s->conn->ng, s->id);
  }
  perfc__h2_conn_defer_flush(s->conn);
}

/* Compresses `len` bytes with the loop's reused compressor into q (after a
 * 5-byte prefix reserved by the caller). Returns the compressed length or
 * -1 (then the caller sends the message uncompressed). */
static long compress_into_q(perfc__h2_stream *s, const uint8_t *in, size_t len) {
  perfc__h2_lctx *lc = s->lc;
  z_stream *z = s->send_enc == ENC_GZIP ? &lc->zgzip : &lc->zdeflate;
  bool *ready = s->send_enc == ENC_GZIP ? &lc->zgzip_ready : &lc->zdeflate_ready;
  if (!*ready) {
    memset(z, 0, sizeof *z);
    if (deflateInit2(z, Z_DEFAULT_COMPRESSION, Z_DEFLATED,
                     s->send_enc == ENC_GZIP ? 15 + 16 : 15, 8,
                     Z_DEFAULT_STRATEGY) != Z_OK)
      return -1;
    *ready = true;
  } else {
    deflateReset(z);
  }
  size_t bound = deflateBound(z, len);
  if (!q_reserve(s, 5 + bound))
    return -1;
  z->next_in = (Bytef *)in;
  z->avail_in = (uInt)len;
  z->next_out = s->q + s->qlen + 5;
  z->avail_out = (uInt)bound;
  if (deflate(z, Z_FINISH) != Z_STREAM_END)
    return -1;
  return (long)(bound - z->avail_out);
}

static int send_message_local(perfc__h2_stream *s, const uint8_t *bytes,
                              size_t len, unsigned flags) {
  if (s->conn == NULL)
    return PERFC_ESHUTDOWN;
  if (s->finish_queued)
    return PERFC_ESTATE;
  if (len > opts_of(s)->max_send_message_bytes)
    return PERFC_ETOOBIG;
  if (!s->headers_sent) {
    int rc = send_headers_local(s, NULL, 0);
    if (rc != 0)
      return rc;
  }
  long clen = -1;
  if (s->send_enc != ENC_IDENTITY && !(flags & PERFC__H2_SEND_NO_COMPRESS))
    clen = compress_into_q(s, bytes, len);
  uint8_t *p;
  size_t body;
  if (clen >= 0) {
    p = s->q + s->qlen;
    body = (size_t)clen;
    p[0] = 1;
  } else {
    if (!q_reserve(s, 5 + len))
      return PERFC_ENOMEM;
    p = s->q + s->qlen;
    body = len;
    p[0] = 0;
    /* An empty message may come without a buffer (post() keeps no bytes
     * for len 0), and memcpy's source must not be NULL even for 0 bytes. */
    if (len > 0)
      memcpy(p + 5, bytes, len);
  }
  p[1] = (uint8_t)(body >> 24);
  p[2] = (uint8_t)(body >> 16);
  p[3] = (uint8_t)(body >> 8);
  p[4] = (uint8_t)body;
  s->qlen += 5 + body;
  atomic_fetch_add(&s->pending, 5 + body);
  kick_data(s);
  return 0;
}

/* The finish as trailer fields, copied into one buffer that lives until
 * nghttp2_submit_trailer (which copies them again). */
static int build_trailers(perfc__h2_stream *s, bool with_response_headers,
                          int http_status, perfc_status_code code,
                          const char *msg, const perfc__h2_md *md, size_t n) {
  char codebuf[12];
  int codelen = snprintf(codebuf, sizeof codebuf, "%d", (int)code);
  size_t mlen = msg ? strlen(msg) : 0;
  size_t enc_len = perfc__h2_percent_encode(msg ? msg : "", mlen, NULL, 0);
  size_t bytes = (size_t)codelen + enc_len + 8;
  for (size_t i = 0; i < n; i++)
    bytes += md[i].key_len + md[i].value_len;
  size_t nv_n = n + 2 + (with_response_headers ? 3 : 0);
  char *buf = malloc(nv_n * sizeof(nghttp2_nv) + bytes);
  if (buf == NULL)
    return PERFC_ENOMEM;
  nghttp2_nv *nv = (nghttp2_nv *)buf;
  char *w = buf + nv_n * sizeof(nghttp2_nv);
  size_t k = 0;
  if (with_response_headers) {
    static const char *const st[] = {"200", "415", "405", "431"};
    const char *sv = http_status == 415   ? st[1]
                     : http_status == 405 ? st[2]
                     : http_status == 431 ? st[3]
                                          : st[0];
    nv[k++] = NV(":status", sv, 3);
    nv[k++] = NV("content-type", "application/grpc", 16);
    nv[k++] = NV("grpc-accept-encoding", ACCEPT_ENCODING,
                 sizeof ACCEPT_ENCODING - 1);
  }
  memcpy(w, codebuf, (size_t)codelen);
  nv[k++] = NV("grpc-status", w, (size_t)codelen);
  w += codelen;
  if (mlen > 0) {
    perfc__h2_percent_encode(msg, mlen, w, enc_len);
    nv[k++] = NV("grpc-message", w, enc_len);
    w += enc_len;
  }
  for (size_t i = 0; i < n; i++) {
    memcpy(w, md[i].key, md[i].key_len);
    char *kp = w;
    w += md[i].key_len;
    memcpy(w, md[i].value, md[i].value_len);
    nv[k++] = (nghttp2_nv){(uint8_t *)kp, (uint8_t *)w, md[i].key_len,
                           md[i].value_len, NGHTTP2_NV_FLAG_NONE};
    w += md[i].value_len;
  }
  free(s->trailer_buf);
  s->trailer_buf = buf;
  s->trailer_nv = nv;
  s->trailer_n = k;
  return 0;
}

/* Trailers-only answer (no message sent): one HEADERS with END_STREAM. */
static int respond_only(perfc__h2_stream *s, int http_status,
                        perfc_status_code code, const char *msg,
                        const perfc__h2_md *md, size_t n) {
  int rc = build_trailers(s, true, http_status, code, msg, md, n);
  if (rc != 0)
    return rc;
  s->finish_queued = true;
  s->trailers_only = true;
  s->recv_done = true;
  if (nghttp2_submit_response(s->conn->ng, s->id, s->trailer_nv, s->trailer_n,
                              NULL) != 0)
    return PERFC_ENOMEM;
  s->headers_sent = true;
  perfc__h2_conn_defer_flush(s->conn);
  return 0;
}

static int finish_local(perfc__h2_stream *s, perfc_status_code code,
                        const char *msg, const perfc__h2_md *md, size_t n) {
  if (s->conn == NULL)
    return PERFC_ESHUTDOWN;
  if (s->finish_queued)
    return PERFC_ESTATE;
  if (!s->headers_sent && s->qlen == 0)
    return respond_only(s, 200, code, msg, md, n);
  int rc = build_trailers(s, false, 200, code, msg, md, n);
  if (rc != 0)
    return rc;
  if (!s->headers_sent && (rc = send_headers_local(s, NULL, 0)) != 0)
    return rc;
  s->finish_queued = true;
  kick_data(s);
  return 0;
}

/* The transport ends a call itself (framing error, limit, deadline). */
static void stream_fail(perfc__h2_stream *s, perfc__h2_close_reason why,
                        perfc_status_code code, const char *msg) {
  s->recv_done = true;
  drop_input(s);
  if (s->finish_queued || s->conn == NULL)
    return;
  if (!s->reason_set) {
    s->reason = why;
    s->reason_set = true;
  }
  if (finish_local(s, code, msg, NULL, 0) != 0)
    nghttp2_submit_rst_stream(s->conn->ng, NGHTTP2_FLAG_NONE, s->id,
                              NGHTTP2_INTERNAL_ERROR);
}

static void deadline_cb(perfc__h2_loop *l, perfc__h2_timer *t) {
  (void)l;
  perfc__h2_stream *s =
      (perfc__h2_stream *)((char *)t - offsetof(perfc__h2_stream, deadline));
  stream_fail(s, PERFC__H2_CLOSE_DEADLINE, PERFC_STATUS_DEADLINE_EXCEEDED,
              "Deadline Exceeded");
}

/* ---- requests: headers ---------------------------------------------------- */

int perfc__h2_grpc_begin_headers(perfc__h2_conn *c, const nghttp2_frame *f) {
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0;
  perfc__h2_stream *s = calloc(1, sizeof *s);
  if (s == NULL)
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  s->id = f->hd.stream_id;
  atomic_init(&s->refs, 1);
  s->conn = c;
  s->lc = c->lc;
  s->deadline.cb = deadline_cb;
  s->writable_d.cb = writable_cb;
  s->accept_mask = 1 << ENC_IDENTITY;
  s->next = c->streams;
  if (c->streams)
    c->streams->prev = s;
  c->streams = s;
  c->nstreams++;
  perfc__h2_count(&c->lc->n.streams_started, 1);
  nghttp2_session_set_stream_user_data(c->ng, s->id, s);
  return 0;
}

int perfc__h2_grpc_header(perfc__h2_conn *c, const nghttp2_frame *f,
                          const uint8_t *name, size_t namelen,
                          const uint8_t *value, size_t valuelen) {
  perfc__h2_stream *s = stream_of(c, f->hd.stream_id);
  if (s == NULL)
    return 0;
  /* RFC 9113's accounting (name + value + 32) against our limit, from the
   * first field of the first block: nothing waits for a SETTINGS ACK. */
  s->hsize += (uint32_t)(namelen + valuelen + 32);
  if (s->hsize > c->lc->srv->o.max_header_list_bytes) {
    s->too_big = true;
    return 0;
  }
  if (f->headers.cat != NGHTTP2_HCAT_REQUEST || s->too_big)
    return 0; /* client trailers: counted, not kept */
  size_t need = namelen + valuelen + 2;
  if (s->hlen + need > s->hcap) {
    size_t cap = s->hcap ? s->hcap : 512;
    while (cap < s->hlen + need)
      cap *= 2;
    char *b = realloc(s->hbuf, cap);
    if (b == NULL)
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    s->hbuf = b;
    s->hcap = (uint32_t)cap;
  }
  memcpy(s->hbuf + s->hlen, name, namelen);
  s->hbuf[s->hlen + namelen] = '\0';
  memcpy(s->hbuf + s->hlen + namelen + 1, value, valuelen);
  s->hbuf[s->hlen + need - 1] = '\0';
  s->hlen += (uint32_t)need;
  s->nhdr++;
  return 0;
}

static bool grpc_content_type(const char *v) {
  if (v == NULL || strncmp(v, "application/grpc", 16) != 0)
    return false;
  return v[16] == '\0' || v[16] == '+' || v[16] == ';';
}

static void half_close(perfc__h2_stream *s);

static void start_call(perfc__h2_conn *c, perfc__h2_stream *s) {
  perfc__h2_server *srv = c->lc->srv;
  if (s->too_big) {
    respond_only(s, 200, PERFC_STATUS_RESOURCE_EXHAUSTED,
                 "request header list larger than the server's limit", NULL, 0);
    return;
  }
  perfc__h2_md stack[32];
  perfc__h2_md *md = s->nhdr <= 32 ? stack : malloc(s->nhdr * sizeof *md);
  if (md == NULL) {
    respond_only(s, 200, PERFC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    return;
  }
  perfc__h2_call_info info = {.authority = "", .deadline_ms = INT64_MAX,
                              .peer = c->peer, .accept_encoding = "",
                              .tls = c->ssl != NULL,
                              .peer_subject = c->peer_subject};
  const char *method = NULL, *ctype = NULL, *timeout = NULL, *enc = NULL;
  size_t nmd = 0;
  bool bad_bin = false;
  char *p = s->hbuf;
  for (uint32_t i = 0; i < s->nhdr; i++) {
    char *k = p;
    size_t kl = strlen(k);
    char *v = k + kl + 1;
    size_t vl = strlen(v);
    p = v + vl + 1;
    if (k[0] == ':') {
      if (strcmp(k, ":method") == 0)
        method = v;
      else if (strcmp(k, ":path") == 0) {
        info.path = v;
        info.path_len = vl;
      } else if (strcmp(k, ":authority") == 0)
        info.authority = v;
      continue;
    }
    if (strcmp(k, "content-type") == 0)
      ctype = v;
    else if (strcmp(k, "grpc-timeout") == 0)
      timeout = v;
    else if (strcmp(k, "grpc-encoding") == 0)
      enc = v;
    else if (strcmp(k, "grpc-accept-encoding") == 0) {
      info.accept_encoding = v;
      for (char *t = v; *t;) {
        while (*t == ' ' || *t == ',')
          t++;
        char *e = t;
        while (*e && *e != ',' && *e != ' ')
          e++;
        int x = enc_parse(t, (size_t)(e - t));
        if (x != ENC_UNKNOWN)
          s->accept_mask |= 1 << x;
        t = e;
      }
    } else if (strcmp(k, "te") != 0) {
      if (kl > 4 && strcmp(k + kl - 4, "-bin") == 0) {
        long d = b64_decode(v, vl);
        if (d < 0)
          bad_bin = true;
        else
          vl = (size_t)d;
      }
      md[nmd++] = (perfc__h2_md){k, kl, v, vl};
    }
  }
  perfc_status_code refuse = PERFC_STATUS_OK;
  const char *why = NULL;
  int http = 200;
  int64_t tmo = 0;
  if (method == NULL || strcmp(method, "POST") != 0) {
    http = 405;
    refuse = PERFC_STATUS_INTERNAL;
    why = "gRPC requires POST";
  } else if (!grpc_content_type(ctype)) {
    /* PROTOCOL-HTTP2.md: an unknown content-type SHOULD get HTTP 415. */
    http = 415;
    refuse = PERFC_STATUS_INTERNAL;
    why = "invalid gRPC request content-type";
  } else if (info.path == NULL || info.path[0] != '/') {
    refuse = PERFC_STATUS_UNIMPLEMENTED;
    why = "malformed method path";
  } else if (timeout != NULL &&
             perfc__h2_parse_timeout(timeout, strlen(timeout), &tmo) != 0) {
    refuse = PERFC_STATUS_INTERNAL;
    why = "malformed grpc-timeout";
  } else if (bad_bin) {
    refuse = PERFC_STATUS_INTERNAL;
    why = "malformed base64 in binary metadata";
  } else if (enc != NULL) {
    s->req_enc = enc_parse(enc, strlen(enc));
    if (s->req_enc == ENC_UNKNOWN) {
      /* compression.md: UNIMPLEMENTED, with what we accept (the header is
       * in every response we send). */
      refuse = PERFC_STATUS_UNIMPLEMENTED;
      why = "grpc-encoding not supported by this server";
    }
  }
  if (refuse != PERFC_STATUS_OK) {
    if (md != stack)
      free(md);
    respond_only(s, http, refuse, why, NULL, 0);
    return;
  }
  if (timeout != NULL)
    info.deadline_ms = perfc__h2_now_ms() + tmo;
  info.request_encoding = enc_names[s->req_enc];
  info.md = md;
  info.md_count = nmd;
  const char *refuse_msg = NULL;
  unsigned flags = 0;
  void *call = NULL;
  perfc_status_code st =
      srv->cb.on_call(srv->data, s, &info, &call, &flags, &refuse_msg);
  if (md != stack)
    free(md);
  /* The headers are not needed any more: an open call keeps nothing of
   * its request headers in the transport. */
  free(s->hbuf);
  s->hbuf = NULL;
  s->hlen = s->hcap = 0;
  if (st != PERFC_STATUS_OK) {
    respond_only(s, 200, st, refuse_msg, NULL, 0);
    return;
  }
  s->started = true;
  s->call = call;
  s->flags = flags;
  atomic_fetch_add(&s->refs, 1);
  if (timeout != NULL)
    perfc__h2_timer_arm(c->lc->loop, &s->deadline, info.deadline_ms);
  /* Now the stream may be answered: a call that starts before its first
   * message (a client or bidi stream) is handed up here. */
  if (srv->cb.on_start != NULL)
    srv->cb.on_start(call, s);
}

/* ---- requests: messages --------------------------------------------------- */

/* Hands one complete message up, or keeps it while delivery is paused. */
static void deliver(perfc__h2_stream *s, const uint8_t *bytes, size_t len,
                    bool compressed) {
  uint8_t *plain = NULL;
  if (compressed) {
    size_t plen;
    int rc = perfc__h2_inflate(enc_names[s->req_enc], bytes, len,
                               opts_of(s)->max_recv_message_bytes, &plain, &plen);
    /* The same words as the core transport's, so a client (and the
     * suites run on both) sees one answer whichever carries the call. */
    if (rc == PERFC_ETOOBIG) {
      char m[128];
      snprintf(m, sizeof m,
               "request message inflates past the %zu-byte "
               "max_recv_message_bytes limit",
               opts_of(s)->max_recv_message_bytes);
      stream_fail(s, PERFC__H2_CLOSE_ERROR, PERFC_STATUS_RESOURCE_EXHAUSTED, m);
      return;
    }
    if (rc != 0) {
      stream_fail(s, PERFC__H2_CLOSE_ERROR, PERFC_STATUS_INTERNAL,
                  s->req_enc == ENC_GZIP
                      ? "compressed request message is corrupt (gzip data "
                        "does not inflate)"
                      : "compressed request message is corrupt (deflate "
                        "data does not inflate)");
      return;
    }
    bytes = plain;
    len = plen;
  }
  s->nmsgs++;
  if (!s->paused && s->held_msgs == NULL) {
    s->msg_compressed = compressed;
    int rc = s->lc->srv->cb.on_message(s->call, s, bytes, len);
    if (rc != PERFC_EFULL) {
      free(plain);
      return;
    }
    s->paused = true;
  }
  pmsg *m = malloc(sizeof *m + len);
  if (m == NULL) {
    free(plain);
    stream_fail(s, PERFC__H2_CLOSE_ERROR, PERFC_STATUS_RESOURCE_EXHAUSTED,
                "out of memory");
    return;
  }
  m->next = NULL;
  m->len = len;
  m->compressed = compressed;
  memcpy(m->data, bytes, len);
  free(plain);
  if (s->held_tail)
    s->held_tail->next = m;
  else
    s->held_msgs = m;
  s->held_tail = m;
  hold(s, len);
}

static bool alive(perfc__h2_stream *s) {
  return s->conn != NULL && !s->recv_done;
}

int perfc__h2_grpc_data(perfc__h2_conn *c, int32_t sid, const uint8_t *data,
                        size_t len) {
  perfc__h2_stream *s = stream_of(c, sid);
  if (s == NULL || !s->started || s->recv_done) {
    take_window(c, s != NULL && s->conn ? s : NULL, len);
    return 0;
  }
  take_window(c, s, len);
  const perfc__h2_opts *o = opts_of(s);
  while (len > 0 && alive(s)) {
    if (s->msg == NULL && s->pfx_got < 5) {
      size_t want = 5u - s->pfx_got;
      size_t t = want < len ? want : len;
      memcpy(s->pfx + s->pfx_got, data, t);
      s->pfx_got = (uint8_t)(s->pfx_got + t);
      data += t;
      len -= t;
      if (s->pfx_got < 5)
        break;
      uint8_t flag = s->pfx[0];
      uint32_t mlen = (uint32_t)s->pfx[1] << 24 | (uint32_t)s->pfx[2] << 16 |
                      (uint32_t)s->pfx[3] << 8 | s->pfx[4];
      if (flag > 1) {
        stream_fail(s, PERFC__H2_CLOSE_ERROR, PERFC_STATUS_INTERNAL,
                    "unknown message flag byte");
        break;
      }
      if (flag == 1 && s->req_enc == ENC_IDENTITY) {
        stream_fail(s, PERFC__H2_CLOSE_ERROR, PERFC_STATUS_INTERNAL,
                    "message has the compressed flag set but the call "
                    "declares no grpc-encoding (absent or identity; gzip "
                    "and deflate are supported)");
        break;
      }
      if ((s->flags & PERFC__H2_CALL_SINGLE_REQUEST) && s->nmsgs >= 1) {
        stream_fail(s, PERFC__H2_CLOSE_ERROR, PERFC_STATUS_INTERNAL,
                    "more than one request message for a unary request");
        break;
      }
      if (mlen > o->max_recv_message_bytes) {
        /* Refused on the length prefix: the body is never buffered. */
        char m[128];
        snprintf(m, sizeof m,
                 "request message of %u bytes is past the %zu-byte "
                 "max_recv_message_bytes limit",
                 mlen, o->max_recv_message_bytes);
        stream_fail(s, PERFC__H2_CLOSE_ERROR, PERFC_STATUS_RESOURCE_EXHAUSTED, m);
        break;
      }
      s->msg_len = mlen;
      s->msg_got = 0;
      if (len >= mlen) {
        /* The whole message is in this chunk: deliver it in place. */
        s->pfx_got = 0;
        deliver(s, data, mlen, flag == 1);
        data += mlen;
        len -= mlen;
        continue;
      }
      s->msg = malloc(mlen ? mlen : 1);
      if (s->msg == NULL) {
        stream_fail(s, PERFC__H2_CLOSE_ERROR, PERFC_STATUS_RESOURCE_EXHAUSTED,
                    "out of memory");
        break;
      }
    }
    size_t t = s->msg_len - s->msg_got < len ? s->msg_len - s->msg_got : len;
    memcpy(s->msg + s->msg_got, data, t);
    s->msg_got += (uint32_t)t;
    hold(s, t);
    data += t;
    len -= t;
    if (s->msg_got == s->msg_len) {
      uint8_t *m = s->msg;
      size_t ml = s->msg_len;
      s->msg = NULL;
      s->msg_got = 0;
      s->pfx_got = 0;
      unhold(s, ml);
      deliver(s, m, ml, s->pfx[0] == 1);
      free(m);
    }
  }
  return 0;
}

static void half_close(perfc__h2_stream *s) {
  s->remote_closed = true;
  if (!alive(s))
    return;
  if (s->msg != NULL || s->pfx_got > 0) {
    stream_fail(s, PERFC__H2_CLOSE_ERROR, PERFC_STATUS_INTERNAL,
                "the stream ended before the length its prefix announced");
    return;
  }
  if (s->held_msgs != NULL)
    return; /* told after the held messages (perfc__h2_resume_recv) */
  if ((s->flags & PERFC__H2_CALL_SINGLE_REQUEST) && s->nmsgs == 0) {
    stream_fail(s, PERFC__H2_CLOSE_ERROR, PERFC_STATUS_INTERNAL,
                "the client sent no request message");
    return;
  }
  s->recv_done = true;
  s->lc->srv->cb.on_half_close(s->call, s);
}

int perfc__h2_grpc_frame_recv(perfc__h2_conn *c, const nghttp2_frame *f) {
  if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA)
    return 0;
  perfc__h2_stream *s = stream_of(c, f->hd.stream_id);
  if (s == NULL || s->conn == NULL)
    return 0;
  if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST)
    start_call(c, s);
  if ((f->hd.flags & NGHTTP2_FLAG_END_STREAM) && s->conn != NULL) {
    if (s->started)
      half_close(s);
    else
      s->remote_closed = true;
  }
  return 0;
}

void perfc__h2_grpc_frame_sent(perfc__h2_conn *c, const nghttp2_frame *f) {
  if ((f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) ||
      !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
    return;
  perfc__h2_stream *s = stream_of(c, f->hd.stream_id);
  if (s == NULL)
    return;
  s->end_stream_sent = true;
  /* The answer is complete; a client still sending gets RST_STREAM, as
   * grpc does (NO_ERROR: "stop, nothing went wrong"; CANCEL past a
   * deadline). */
  if (!nghttp2_session_get_stream_remote_close(c->ng, s->id))
    nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, s->id,
                              s->reason == PERFC__H2_CLOSE_DEADLINE
                                  ? NGHTTP2_CANCEL
                                  : NGHTTP2_NO_ERROR);
}

/* The transport's side of a stream ends (nghttp2 closed it or the
 * connection is going): on_close upward, buffers freed, our ref dropped. */
static void stream_end(perfc__h2_conn *c, perfc__h2_stream *s,
                       perfc__h2_close_reason why) {
  if (s->prev)
    s->prev->next = s->next;
  else
    c->streams = s->next;
  if (s->next)
    s->next->prev = s->prev;
  if (--c->nstreams == 0)
    c->idle_since_ms = perfc__h2_now_ms();
  perfc__h2_timer_disarm(c->lc->loop, &s->deadline);
  if (s->owing) {
    if (!c->dead)
      nghttp2_session_consume_connection(c->ng, s->owed);
    s->owing = false;
    c->nowed--;
  }
  drop_input(s);
  s->conn = NULL;
  free(s->q);
  s->q = NULL;
  s->qcap = s->qlen = s->qoff = 0;
  free(s->hbuf);
  s->hbuf = NULL;
  free(s->trailer_buf);
  s->trailer_buf = NULL;
  bool tell = s->started;
  s->started = false;
  atomic_store(&s->closed, true);
  if (tell)
    c->lc->srv->cb.on_close(s->call, s, why);
  stream_unref(s);
}

void perfc__h2_grpc_stream_closed(perfc__h2_conn *c, int32_t sid,
                                  uint32_t error_code) {
  perfc__h2_stream *s = stream_of(c, sid);
  if (s == NULL || s->conn == NULL)
    return;
  nghttp2_session_set_stream_user_data(c->ng, sid, NULL);
  perfc__h2_close_reason why;
  if (s->reason_set)
    why = s->reason;
  else if (s->end_stream_sent)
    why = PERFC__H2_CLOSE_DONE;
  else
    why = error_code != NGHTTP2_NO_ERROR || !s->finish_queued
              ? PERFC__H2_CLOSE_CANCELLED
              : PERFC__H2_CLOSE_DONE;
  stream_end(c, s, why);
  if (c->nowed > 0)
    perfc__h2_grpc_repay(c);
}

void perfc__h2_grpc_conn_gone(perfc__h2_conn *c) {
  while (c->streams != NULL)
    stream_end(c, c->streams, PERFC__H2_CLOSE_CONN);
}

static void stream_unref(perfc__h2_stream *s) {
  if (atomic_fetch_sub(&s->refs, 1) != 1)
    return;
  free(s->q);
  free(s->hbuf);
  free(s->trailer_buf);
  free(s->msg);
  free(s);
}

void perfc__h2_grpc_loop_free(perfc__h2_lctx *lc) {
  if (lc->zgzip_ready)
    deflateEnd(&lc->zgzip);
  if (lc->zdeflate_ready)
    deflateEnd(&lc->zdeflate);
  lc->zgzip_ready = lc->zdeflate_ready = false;
}

/* ---- the downward API: local or posted ------------------------------------ */

enum { OP_HEADERS, OP_MESSAGE, OP_FINISH, OP_RESUME, OP_RELEASE, OP_ENCODING,
       OP_WAKE };

typedef struct op {
  perfc__h2_task task;
  perfc__h2_stream *s;
  int kind;
  unsigned flags;
  perfc_status_code code;
  const char *msg;
  perfc__h2_md *md;
  size_t n;
  const uint8_t *bytes;
  size_t len;
  char data[];
} op;

static void resume_local(perfc__h2_stream *s) {
  if (s->conn == NULL || !s->paused)
    return;
  s->paused = false;
  while (s->held_msgs != NULL && !s->paused && alive(s)) {
    pmsg *m = s->held_msgs;
    s->msg_compressed = m->compressed;
    int rc = s->lc->srv->cb.on_message(s->call, s, m->data, m->len);
    if (rc == PERFC_EFULL) {
      s->paused = true;
      break;
    }
    s->held_msgs = m->next;
    if (s->held_msgs == NULL)
      s->held_tail = NULL;
    size_t n = m->len;
    free(m);
    if (s->conn != NULL)
      unhold(s, n);
  }
  if (s->conn == NULL)
    return;
  if (!s->paused && s->owing)
    perfc__h2_grpc_repay(s->conn);
  if (!s->paused && s->held_msgs == NULL && s->remote_closed && alive(s))
    half_close(s);
}

static void release_local(perfc__h2_stream *s) {
  if (s->conn != NULL && s->started) {
    /* Abandoned before its end: no on_close will follow. */
    s->started = false;
    if (!s->end_stream_sent)
      nghttp2_submit_rst_stream(s->conn->ng, NGHTTP2_FLAG_NONE, s->id,
                                NGHTTP2_CANCEL);
    perfc__h2_conn_defer_flush(s->conn);
  }
  stream_unref(s);
}

static int set_encoding_local(perfc__h2_stream *s, int enc) {
  if (s->headers_sent)
    return PERFC_ESTATE;
  s->send_enc = (s->accept_mask & (1 << enc)) ? enc : ENC_IDENTITY;
  return 0;
}

static int apply(perfc__h2_stream *s, const op *o) {
  switch (o->kind) {
  case OP_HEADERS:
    return send_headers_local(s, o->md, o->n);
  case OP_MESSAGE:
    return send_message_local(s, o->bytes, o->len, o->flags);
  case OP_FINISH:
    return finish_local(s, o->code, o->msg, o->md, o->n);
  case OP_RESUME:
    resume_local(s);
    return 0;
  case OP_ENCODING:
    return set_encoding_local(s, (int)o->code);
  case OP_WAKE:
    if (s->started && s->lc->srv->cb.on_wake != NULL)
      s->lc->srv->cb.on_wake(s->call, s);
    return 0;
  default:
    return 0;
  }
}

static void op_run(perfc__h2_loop *l, perfc__h2_task *t) {
  (void)l;
  op *o = (op *)t;
  perfc__h2_stream *s = o->s;
  if (o->kind == OP_RELEASE) {
    release_local(s);
  } else {
    if (o->kind == OP_MESSAGE)
      atomic_fetch_sub(&s->posted, o->len + 5);
    if (s->conn != NULL)
      apply(s, o);
  }
  stream_unref(s);
  free(o);
}

/* Copies an operation and posts it to the stream's loop. */
static int post(perfc__h2_stream *s, int kind, unsigned flags,
                perfc_status_code code, const char *msg,
                const perfc__h2_md *md, size_t n, const uint8_t *bytes,
                size_t len) {
  size_t mlen = msg ? strlen(msg) + 1 : 0;
  size_t extra = n * sizeof(perfc__h2_md) + mlen + len;
  for (size_t i = 0; i < n; i++)
    extra += md[i].key_len + md[i].value_len;
  op *o = malloc(sizeof *o + extra);
  if (o == NULL)
    return PERFC_ENOMEM;
  memset(o, 0, sizeof *o);
  o->task.run = op_run;
  o->s = s;
  o->kind = kind;
  o->flags = flags;
  o->code = code;
  char *w = o->data;
  if (n > 0) {
    o->md = (perfc__h2_md *)(void *)w;
    o->n = n;
    w += n * sizeof(perfc__h2_md);
    for (size_t i = 0; i < n; i++) {
      memcpy(w, md[i].key, md[i].key_len);
      o->md[i].key = w;
      o->md[i].key_len = md[i].key_len;
      w += md[i].key_len;
      memcpy(w, md[i].value, md[i].value_len);
      o->md[i].value = w;
      o->md[i].value_len = md[i].value_len;
      w += md[i].value_len;
    }
  }
  if (msg) {
    memcpy(w, msg, mlen);
    o->msg = w;
    w += mlen;
  }
  if (len) {
    memcpy(w, bytes, len);
    o->bytes = (const uint8_t *)w;
  }
  o->len = len;
  atomic_fetch_add(&s->refs, 1);
  perfc__h2_loop_post(s->lc->loop, &o->task, !(flags & PERFC__H2_SEND_MORE));
  return 0;
}

bool perfc__h2_stream_on_loop(const perfc__h2_stream *s) {
  return perfc__h2_loop_current() == s->lc->loop;
}

void *perfc__h2_stream_call(const perfc__h2_stream *s) { return s->call; }

bool perfc__h2_message_compressed(const perfc__h2_stream *s) {
  return s->msg_compressed;
}

int perfc__h2_send_headers(perfc__h2_stream *s, const perfc__h2_md *md,
                           size_t n, unsigned flags) {
  if (atomic_load(&s->closed))
    return PERFC_ESHUTDOWN;
  if (perfc__h2_stream_on_loop(s))
    return send_headers_local(s, md, n);
  return post(s, OP_HEADERS, flags, PERFC_STATUS_OK, NULL, md, n, NULL, 0);
}

int perfc__h2_set_send_encoding(perfc__h2_stream *s, const char *name) {
  int enc = name ? enc_parse(name, strlen(name)) : ENC_IDENTITY;
  if (enc == ENC_UNKNOWN)
    return PERFC_EINVAL;
  if (atomic_load(&s->closed))
    return PERFC_ESHUTDOWN;
  if (perfc__h2_stream_on_loop(s))
    return set_encoding_local(s, enc);
  return post(s, OP_ENCODING, PERFC__H2_SEND_MORE, (perfc_status_code)enc,
              NULL, NULL, 0, NULL, 0);
}

int perfc__h2_send_message(perfc__h2_stream *s, const uint8_t *bytes,
                           size_t len, unsigned flags) {
  if (atomic_load(&s->closed))
    return PERFC_ESHUTDOWN;
  const perfc__h2_opts *o = opts_of(s);
  if (len > o->max_send_message_bytes)
    return PERFC_ETOOBIG;
  size_t hw = o->stream_send_high_water_bytes;
  if (atomic_load(&s->pending) + atomic_load(&s->posted) >= hw) {
    /* Flag first, then look again: the loop either sees the flag when it
     * drains, or we see the drained count here. */
    atomic_store(&s->want_writable, true);
    if (atomic_load(&s->pending) + atomic_load(&s->posted) >= hw)
      return PERFC_EFULL;
  }
  if (perfc__h2_stream_on_loop(s))
    return send_message_local(s, bytes, len, flags);
  atomic_fetch_add(&s->posted, len + 5);
  int rc = post(s, OP_MESSAGE, flags, PERFC_STATUS_OK, NULL, NULL, 0, bytes, len);
  if (rc != 0)
    atomic_fetch_sub(&s->posted, len + 5);
  return rc;
}

int perfc__h2_finish(perfc__h2_stream *s, perfc_status_code code,
                     const char *message, const perfc__h2_md *md, size_t n,
                     unsigned flags) {
  if (atomic_load(&s->closed))
    return PERFC_ESHUTDOWN;
  if (perfc__h2_stream_on_loop(s))
    return finish_local(s, code, message, md, n);
  return post(s, OP_FINISH, flags, code, message, md, n, NULL, 0);
}

void perfc__h2_flush(perfc__h2_stream *s) {
  if (!atomic_load(&s->closed) && !perfc__h2_stream_on_loop(s))
    perfc__h2_loop_wake(s->lc->loop);
}

void perfc__h2_set_deadline(perfc__h2_stream *s, int64_t deadline_ms) {
  if (!perfc__h2_stream_on_loop(s) || s->conn == NULL || !s->started ||
      s->finish_queued)
    return;
  if (perfc__h2_timer_armed(&s->deadline) && s->deadline.at_ms <= deadline_ms)
    return;
  perfc__h2_timer_arm(s->lc->loop, &s->deadline, deadline_ms);
}

void perfc__h2_stream_wake(perfc__h2_stream *s) {
  if (!atomic_load(&s->closed))
    post(s, OP_WAKE, 0, PERFC_STATUS_OK, NULL, NULL, 0, NULL, 0);
}

void perfc__h2_resume_recv(perfc__h2_stream *s) {
  if (atomic_load(&s->closed))
    return;
  if (perfc__h2_stream_on_loop(s))
    resume_local(s);
  else
    post(s, OP_RESUME, 0, PERFC_STATUS_OK, NULL, NULL, 0, NULL, 0);
}

void perfc__h2_stream_release(perfc__h2_stream *s) {
  if (perfc__h2_stream_on_loop(s)) {
    release_local(s);
    return;
  }
  if (atomic_load(&s->closed)) {
    stream_unref(s);
    return;
  }
  /* The stream may still be open: the loop resets it if so. The op's own
   * reference keeps it alive until then; ours is dropped by release_local. */
  if (post(s, OP_RELEASE, 0, PERFC_STATUS_OK, NULL, NULL, 0, NULL, 0) != 0)
    stream_unref(s); /* out of memory: the stream ends with its connection */
}
