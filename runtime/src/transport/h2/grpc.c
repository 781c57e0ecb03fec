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
#include <strings.h>

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
/* gRPC-Web (below, "gRPC-Web"). */
static int web_headers_local(perfc__h2_stream *s, const perfc__h2_md *md,
                             size_t n);
static bool web_wrap(perfc__h2_stream *s, size_t from);
static int web_finish_local(perfc__h2_stream *s, perfc_status_code code,
                            const char *msg, const perfc__h2_md *md, size_t n);
static void web_text_body(perfc__h2_stream *s, const uint8_t *data, size_t len);
static inline void grpc_frames(perfc__h2_stream *s, const uint8_t *data,
                               size_t len);

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

/* ---- HTTP content negotiation (exposed for tests) ------------------------- */

static bool ows(char c) { return c == ' ' || c == '\t'; }

/* A qvalue (RFC 9110 12.4.2: "0" ["." 0*3DIGIT] / "1" ["." 0*3("0")]) in
 * thousandths; -1 when malformed. */
static int qvalue(const char *p, size_t n) {
  if (n == 0 || (p[0] != '0' && p[0] != '1'))
    return -1;
  int q = (p[0] - '0') * 1000;
  if (n == 1)
    return q;
  if (p[1] != '.' || n > 5)
    return -1;
  int scale = 100;
  for (size_t i = 2; i < n; i++, scale /= 10) {
    if (p[i] < '0' || p[i] > '9' || (q == 1000 && p[i] != '0'))
      return -1;
    q += (p[i] - '0') * scale;
  }
  return q;
}

bool perfc__h2_accepts_gzip(const char *v) {
  if (v == NULL)
    return false;
  int gz = -1, star = -1; /* thousandths; -1: not named */
  const char *p = v;
  while (*p) {
    const char *end = strchr(p, ',');
    if (end == NULL)
      end = p + strlen(p);
    while (p < end && ows(*p))
      p++;
    const char *c = p;
    while (p < end && *p != ';' && !ows(*p))
      p++;
    size_t clen = (size_t)(p - c);
    int q = 1000;
    /* Parameters: only q counts; a malformed one drops the member. */
    while (q >= 0 && p < end) {
      while (p < end && ows(*p))
        p++;
      if (p == end)
        break;
      if (*p != ';') {
        q = -1;
        break;
      }
      p++;
      while (p < end && ows(*p))
        p++;
      const char *k = p;
      while (p < end && *p != '=' && *p != ';' && !ows(*p))
        p++;
      if (p == end || *p != '=' || p == k) {
        q = -1;
        break;
      }
      bool isq = p - k == 1 && (*k == 'q' || *k == 'Q');
      const char *val = ++p;
      while (p < end && *p != ';' && !ows(*p))
        p++;
      if (isq)
        q = qvalue(val, (size_t)(p - val));
    }
    if (q >= 0) {
      if ((clen == 4 && strncasecmp(c, "gzip", 4) == 0) ||
          (clen == 6 && strncasecmp(c, "x-gzip", 6) == 0))
        gz = gz < 0 || q > gz ? q : gz;
      else if (clen == 1 && *c == '*')
        star = q;
    }
    p = *end ? end + 1 : end;
  }
  return gz >= 0 ? gz > 0 : star > 0;
}

bool perfc__h2_etag_matches(const char *inm, const char *tag) {
  if (inm == NULL || tag == NULL)
    return false;
  size_t tl = strlen(tag);
  const char *p = inm;
  while (ows(*p))
    p++;
  if (*p == '*') {
    p++;
    while (ows(*p))
      p++;
    return *p == '\0';
  }
  bool hit = false;
  for (;;) {
    while (ows(*p) || *p == ',')
      p++;
    if (*p == '\0')
      return hit;
    if (p[0] == 'W' && p[1] == '/')
      p += 2;
    if (*p != '"')
      return false;
    const char *o = ++p;
    /* etagc: %x21 / %x23-7E / obs-text */
    while (*p && *p != '"' && (unsigned char)*p >= 0x21)
      p++;
    if (*p != '"')
      return false;
    size_t ol = (size_t)(p - o);
    if (ol >= tl && memcmp(o, tag, tl) == 0 &&
        (ol == tl || (ol == tl + 5 && memcmp(o + tl, "-gzip", 5) == 0)))
      hit = true;
    p++;
    while (ows(*p))
      p++;
    if (*p != ',' && *p != '\0')
      return false;
  }
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
      if (s->qcap > 65536) /* a large reply's buffer is not kept */
        perfc__h2_q_drop(s);
    }
  }
  if (s->qlen == 0 && s->finish_queued) {
    if (s->http || s->web) {
      /* An HTTP body (gRPC-Web's trailers are in it) ends the stream. */
      *flags |= NGHTTP2_DATA_FLAG_EOF;
    } else {
      *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
      nghttp2_submit_trailer(ng, sid, s->trailer_nv, s->trailer_n);
    }
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
  if (s->headers_sent || s->finish_queued || s->http)
    return PERFC_ESTATE;
  if (s->web)
    return web_headers_local(s, md, n);
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
  if (s->q == NULL && more <= sizeof s->qinl) {
    s->q = s->qinl;
    s->qcap = sizeof s->qinl;
    return true;
  }
  size_t cap = s->qcap > 256 ? s->qcap : 256;
  while (cap < s->qlen + more)
    cap *= 2;
  uint8_t *q = s->q == s->qinl ? malloc(cap) : realloc(s->q, cap);
  if (q == NULL)
    return false;
  if (s->q == s->qinl)
    memcpy(q, s->qinl, s->qlen);
  s->q = q;
  s->qcap = cap;
  return true;
}

/* The response queue's memory goes (it is empty, or the stream ended). */
void perfc__h2_q_drop(perfc__h2_stream *s) {
  if (s->q != s->qinl)
    free(s->q);
  s->q = NULL;
  s->qcap = s->qlen = s->qoff = 0;
}

static void trailer_drop(perfc__h2_stream *s) {
  if (s->trailer_buf != s->tinl)
    free(s->trailer_buf);
  s->trailer_buf = NULL;
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

static int http_send_local(perfc__h2_stream *s, const uint8_t *bytes,
                           size_t len);

static int send_message_local(perfc__h2_stream *s, const uint8_t *bytes,
                              size_t len, unsigned flags) {
  if (s->conn == NULL)
    return PERFC_ESHUTDOWN;
  if (s->finish_queued)
    return PERFC_ESTATE;
  if (len > opts_of(s)->max_send_message_bytes)
    return PERFC_ETOOBIG;
  if (s->http)
    return http_send_local(s, bytes, len);
  if (!s->headers_sent) {
    int rc = send_headers_local(s, NULL, 0);
    if (rc != 0)
      return rc;
  }
  size_t before = s->qlen;
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
  if (s->web) {
    /* gRPC-Web: the same frame, base64 (text mode) and chunked (HTTP/1.1). */
    if (!web_wrap(s, before))
      return PERFC_ENOMEM;
    atomic_fetch_add(&s->pending, s->qlen - before);
    if (s->h1)
      perfc__h2_h1_kick(s);
    else
      kick_data(s);
    return 0;
  }
  atomic_fetch_add(&s->pending, 5 + body);
  kick_data(s);
  return 0;
}

/* The finish as trailer fields, copied into one buffer that lives until
 * nghttp2_submit_trailer (which copies them again). */
static int build_trailers(perfc__h2_stream *s, bool with_response_headers,
                          int http_status, perfc_status_code code,
                          const char *msg, const perfc__h2_md *md, size_t n) {
  /* The code in decimal by hand: snprintf cost every call ~630
   * instructions (callgrind), 3 % of a whole unary call. */
  char codebuf[12];
  int codelen = 0;
  {
    unsigned v = (unsigned)code, d = 1;
    if ((int)code < 0) {
      codebuf[codelen++] = '-';
      v = 0u - v;
    }
    while (v / d >= 10)
      d *= 10;
    for (; d > 0; d /= 10)
      codebuf[codelen++] = (char)('0' + v / d % 10);
  }
  size_t mlen = msg ? strlen(msg) : 0;
  size_t enc_len = perfc__h2_percent_encode(msg ? msg : "", mlen, NULL, 0);
  size_t bytes = (size_t)codelen + enc_len + 8;
  for (size_t i = 0; i < n; i++)
    bytes += md[i].key_len + md[i].value_len;
  size_t nv_n = n + 2 + (with_response_headers ? 3 : 0);
  size_t need = nv_n * sizeof(nghttp2_nv) + bytes;
  /* The inline room, unless the trailers there are the ones being
   * replaced (never while nghttp2 holds them: it copies them at submit). */
  char *buf = need <= sizeof s->tinl && s->trailer_buf != s->tinl
                  ? s->tinl
                  : malloc(need);
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
  trailer_drop(s);
  s->trailer_buf = buf;
  s->trailer_nv = nv;
  s->trailer_n = k;
  return 0;
}

/* Trailers-only answer (no message sent): one HEADERS with END_STREAM. */
static int respond_only(perfc__h2_stream *s, int http_status,
                        perfc_status_code code, const char *msg,
                        const perfc__h2_md *md, size_t n) {
  if (s->web) {
    s->recv_done = true;
    return web_finish_local(s, code, msg, md, n);
  }
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

static int http_finish_local(perfc__h2_stream *s, perfc_status_code code,
                             const char *msg);

static int finish_local(perfc__h2_stream *s, perfc_status_code code,
                        const char *msg, const perfc__h2_md *md, size_t n) {
  if (s->conn == NULL)
    return PERFC_ESHUTDOWN;
  if (s->finish_queued)
    return PERFC_ESTATE;
  if (s->web)
    return web_finish_local(s, code, msg, md, n);
  if (s->http)
    return http_finish_local(s, code, msg);
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

/* ---- HTTP responses ------------------------------------------------------- */

static const char *reason_phrase(int status) {
  switch (status) {
  case 200: return "OK";
  case 304: return "Not Modified";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 408: return "Request Timeout";
  case 409: return "Conflict";
  case 413: return "Content Too Large";
  case 415: return "Unsupported Media Type";
  case 429: return "Too Many Requests";
  case 431: return "Request Header Fields Too Large";
  case 499: return "Client Closed Request";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  default: return status < 300 ? "OK" : status < 500 ? "Client Error" : "Server Error";
  }
}

/* Appends to s->h1_head; false when out of memory. */
static bool h1_head_add(perfc__h2_stream *s, const char *p, size_t n) {
  /* Grown by doubling from 256 bytes: a head is built from a dozen small
   * pieces, and a realloc per piece cost ~1,500 instructions per answer. */
  if (s->h1_head_len + n + 1 > s->h1_head_cap) {
    size_t cap = s->h1_head_cap ? s->h1_head_cap : 256;
    while (cap < s->h1_head_len + n + 1)
      cap *= 2;
    char *h = realloc(s->h1_head, cap);
    if (h == NULL)
      return false;
    s->h1_head = h;
    s->h1_head_cap = cap;
  }
  memcpy(s->h1_head + s->h1_head_len, p, n);
  s->h1_head_len += n;
  s->h1_head[s->h1_head_len] = '\0';
  return true;
}

/* The end of an HTTP/1.1 head: the connection's fate and the blank line. */
static bool h1_head_close(perfc__h2_stream *s) {
  static const char keep[] = "\r\n", close_[] = "connection: close\r\n\r\n";
  /* A draining connection (shutdown, max_connection_age) closes after
   * this answer: say so. */
  if (s->conn != NULL && s->conn->goaway_sent)
    s->h1_close = true;
  bool ok = s->h1_close ? h1_head_add(s, close_, sizeof close_ - 1)
                        : h1_head_add(s, keep, sizeof keep - 1);
  s->h1_head_ready = ok;
  return ok;
}

/* ---- CORS ---------------------------------------------------------------- */

/* Whether `origin` may call (perfc__h2_cors.origins: exact, or "*"). */
static const char *cors_match(const perfc__h2_cors *c, const char *origin) {
  for (size_t i = 0; i < c->n; i++)
    if (strcmp(c->origins[i], "*") == 0 || strcmp(c->origins[i], origin) == 0)
      return c->origins[i];
  return NULL;
}

/* The CORS headers of an answer to an allowed origin (none otherwise). */
static size_t cors_headers(const perfc__h2_stream *s, perfc__h2_md *out) {
  if (s->cors_origin == NULL)
    return 0;
  const perfc__h2_cors *c = &s->lc->srv->cors;
  size_t k = 0;
  /* "*" answers "*" unless credentials are allowed (then the origin must
   * be named, Fetch standard). */
  const char *o = strcmp(cors_match(c, s->cors_origin), "*") == 0 &&
                          !c->credentials
                      ? "*"
                      : s->cors_origin;
  out[k++] = (perfc__h2_md){"access-control-allow-origin", 27, o, strlen(o)};
  out[k++] = (perfc__h2_md){"vary", 4, "origin", 6};
  if (c->expose != NULL && c->expose[0])
    out[k++] = (perfc__h2_md){"access-control-expose-headers", 29, c->expose,
                              strlen(c->expose)};
  if (c->credentials)
    out[k++] = (perfc__h2_md){"access-control-allow-credentials", 32, "true", 4};
  return k;
}

static const perfc__h2_md *md_find(const perfc__h2_md *md, size_t n,
                                   const char *key) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(md[i].key, key) == 0)
      return &md[i];
  return NULL;
}

/* Remembers an allowed Origin for the answer's CORS headers. */
static void cors_note(perfc__h2_stream *s, const perfc__h2_md *md, size_t n) {
  const perfc__h2_cors *c = &s->lc->srv->cors;
  const perfc__h2_md *o = c->n > 0 ? md_find(md, n, "origin") : NULL;
  if (o != NULL && cors_match(c, o->value) != NULL)
    s->cors_origin = strndup(o->value, o->value_len);
}

static int http_head_local(perfc__h2_stream *s, int status,
                           const char *content_type, const perfc__h2_md *md,
                           size_t n, unsigned flags);
static int http_finish_local(perfc__h2_stream *s, perfc_status_code code,
                             const char *msg);

/* A CORS preflight (OPTIONS with Access-Control-Request-Method), answered
 * here: it never reaches a route or a handler. */
static bool cors_preflight(perfc__h2_stream *s, const char *method,
                           const perfc__h2_md *md, size_t n) {
  const perfc__h2_cors *c = &s->lc->srv->cors;
  if (c->n == 0 || method == NULL || strcmp(method, "OPTIONS") != 0 ||
      md_find(md, n, "origin") == NULL ||
      md_find(md, n, "access-control-request-method") == NULL)
    return false;
  if (s->cors_origin == NULL) {
    perfc__h2_http_fail(s, 403, PERFC_STATUS_PERMISSION_DENIED,
                        "CORS: this origin may not call this server");
    return true;
  }
  const perfc__h2_md *rh = md_find(md, n, "access-control-request-headers");
  const char *allow = c->headers ? c->headers : rh ? rh->value : "";
  char age[24];
  snprintf(age, sizeof age, "%lld", (long long)c->max_age_s);
  perfc__h2_md h[3] = {
      {"access-control-allow-methods", 28, c->methods, strlen(c->methods)},
      {"access-control-max-age", 22, age, strlen(age)},
      {"access-control-allow-headers", 28, allow, strlen(allow)},
  };
  if (http_head_local(s, 204, "text/plain", h, allow[0] ? 3 : 2, 0) != 0 ||
      http_finish_local(s, PERFC_STATUS_OK, NULL) != 0)
    perfc__h2_http_fail(s, 500, PERFC_STATUS_INTERNAL, "out of memory");
  s->recv_done = true;
  return true;
}

static int http_head_local(perfc__h2_stream *s, int status,
                           const char *content_type, const perfc__h2_md *md,
                           size_t n, unsigned flags) {
  if (s->conn == NULL)
    return PERFC_ESHUTDOWN;
  if (!s->http && !s->web)
    return PERFC_EINVAL;
  if (s->headers_sent || s->finish_queued)
    return PERFC_ESTATE;
  if (status < 100 || status > 999)
    status = 500;
  s->http_status = (uint16_t)status;
  /* A whole body gzipped here; a streamed one never is. */
  s->http_gzip = (flags & PERFC__H2_HTTP_GZIP) && !(flags & PERFC__H2_HTTP_STREAM);
  perfc__h2_md cors[4];
  size_t ncors = cors_headers(s, cors);
  /* Three digits by hand: snprintf cost an HTTP/1.1 answer ~1,400
   * instructions (callgrind), a fifth of a JSON GetUser's own work. */
  char st[4] = {(char)('0' + status / 100), (char)('0' + status / 10 % 10),
                (char)('0' + status % 10), '\0'};
  if (!s->h1) {
    nghttp2_nv stack[16];
    nghttp2_nv *nv = n + ncors + 2 <= 16 ? stack
                                         : malloc((n + ncors + 2) * sizeof *nv);
    if (nv == NULL)
      return PERFC_ENOMEM;
    size_t k = 0;
    nv[k++] = NV(":status", st, 3);
    if (content_type != NULL)
      nv[k++] = NV("content-type", content_type, strlen(content_type));
    for (size_t i = 0; i < ncors; i++)
      nv[k++] = (nghttp2_nv){(uint8_t *)cors[i].key, (uint8_t *)cors[i].value,
                             cors[i].key_len, cors[i].value_len,
                             NGHTTP2_NV_FLAG_NONE};
    for (size_t i = 0; i < n; i++)
      nv[k++] = (nghttp2_nv){(uint8_t *)md[i].key, (uint8_t *)md[i].value,
                             md[i].key_len, md[i].value_len,
                             NGHTTP2_NV_FLAG_NONE};
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
  const char *reason = reason_phrase(status);
  if (!h1_head_add(s, "HTTP/1.1 ", 9) || !h1_head_add(s, st, 3) ||
      !h1_head_add(s, " ", 1) || !h1_head_add(s, reason, strlen(reason)) ||
      !h1_head_add(s, "\r\n", 2) ||
      (content_type != NULL &&
       (!h1_head_add(s, "content-type: ", 14) ||
        !h1_head_add(s, content_type, strlen(content_type)) ||
        !h1_head_add(s, "\r\n", 2))))
    return PERFC_ENOMEM;
  for (size_t i = 0; i < ncors; i++)
    if (!h1_head_add(s, cors[i].key, cors[i].key_len) ||
        !h1_head_add(s, ": ", 2) ||
        !h1_head_add(s, cors[i].value, cors[i].value_len) ||
        !h1_head_add(s, "\r\n", 2))
      return PERFC_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    if (!h1_head_add(s, md[i].key, md[i].key_len) || !h1_head_add(s, ": ", 2) ||
        !h1_head_add(s, md[i].value, md[i].value_len) ||
        !h1_head_add(s, "\r\n", 2))
      return PERFC_ENOMEM;
  }
  s->headers_sent = true;
  if (flags & PERFC__H2_HTTP_STREAM) {
    /* The body's length is not known: chunks (a HEAD answer has none). */
    static const char te[] = "transfer-encoding: chunked\r\n";
    s->h1_chunked = !s->http_head_req;
    if ((s->h1_chunked && !h1_head_add(s, te, sizeof te - 1)) ||
        !h1_head_close(s))
      return PERFC_ENOMEM;
    perfc__h2_h1_kick(s);
  }
  return 0;
}

/* A whole unary body, gzipped (RFC 1952) into q by the loop's reused
 * compressor at the server's level: one deflate, no per-answer state. */
static int http_send_gzip(perfc__h2_stream *s, const uint8_t *bytes,
                          size_t len) {
  perfc__h2_lctx *lc = s->lc;
  z_stream *z = &lc->zhttp;
  if (!lc->zhttp_ready) {
    memset(z, 0, sizeof *z);
    if (deflateInit2(z, lc->srv->o.http_gzip_level, Z_DEFLATED, 15 + 16, 8,
                     Z_DEFAULT_STRATEGY) != Z_OK)
      return PERFC_ENOMEM;
    lc->zhttp_ready = true;
  } else {
    deflateReset(z);
  }
  size_t bound = deflateBound(z, (uLong)len);
  if (!q_reserve(s, bound))
    return PERFC_ENOMEM;
  z->next_in = (Bytef *)bytes;
  z->avail_in = (uInt)len;
  z->next_out = s->q + s->qlen;
  z->avail_out = (uInt)bound;
  if (deflate(z, Z_FINISH) != Z_STREAM_END)
    return PERFC_ENOMEM;
  size_t n = bound - z->avail_out;
  s->qlen += n;
  s->http_gzip = false; /* one body */
  atomic_fetch_add(&s->pending, n);
  if (s->h1)
    perfc__h2_h1_kick(s);
  else
    kick_data(s);
  return 0;
}

static int http_send_local(perfc__h2_stream *s, const uint8_t *bytes,
                           size_t len) {
  if (!s->headers_sent)
    return PERFC_ESTATE;
  if (len == 0)
    return 0;
  if (s->http_head_req) {
    /* No body, but its length: HTTP/1.1's Content-Length of a HEAD answer
     * is the GET's (RFC 9110 9.3.2), gzipped when the GET's would be (the
     * head already says Content-Encoding: gzip). The deflate is thrown
     * away; only a HEAD over HTTP/1.1 pays for it (HTTP/2 sends no
     * length). The flush it schedules finds nothing queued. */
    size_t n = len;
    if (s->http_gzip && s->h1) {
      size_t before = s->qlen;
      int rc = http_send_gzip(s, bytes, len);
      if (rc != 0)
        return rc;
      n = s->qlen - before;
      s->qlen = before;
      atomic_fetch_sub(&s->pending, n);
    }
    s->http_head_body_len += n;
    return 0;
  }
  if (s->http_gzip)
    return http_send_gzip(s, bytes, len);
  bool chunk = s->h1 && s->h1_chunked;
  if (!q_reserve(s, len + (chunk ? 24 : 0)))
    return PERFC_ENOMEM;
  size_t before = s->qlen;
  if (chunk)
    s->qlen += (size_t)sprintf((char *)s->q + s->qlen, "%zx\r\n", len);
  memcpy(s->q + s->qlen, bytes, len);
  s->qlen += len;
  if (chunk) {
    memcpy(s->q + s->qlen, "\r\n", 2);
    s->qlen += 2;
  }
  atomic_fetch_add(&s->pending, s->qlen - before);
  if (s->h1)
    perfc__h2_h1_kick(s);
  else
    kick_data(s);
  return 0;
}

/* JSON string contents for `in` into `out` (cap bytes); returns the
 * length needed. */
static size_t json_escape(const char *in, char *out, size_t cap) {
  static const char hex[] = "0123456789abcdef";
  size_t o = 0;
  for (const unsigned char *p = (const unsigned char *)in; *p; p++) {
    char e[7];
    size_t n = 0;
    if (*p == '"' || *p == '\\') {
      e[n++] = '\\';
      e[n++] = (char)*p;
    } else if (*p < 0x20) {
      e[n++] = '\\';
      e[n++] = 'u';
      e[n++] = '0';
      e[n++] = '0';
      e[n++] = hex[*p >> 4];
      e[n++] = hex[*p & 15];
    } else {
      e[n++] = (char)*p;
    }
    for (size_t i = 0; i < n; i++, o++)
      if (o < cap)
        out[o] = e[i];
  }
  return o;
}

static int http_finish_local(perfc__h2_stream *s, perfc_status_code code,
                             const char *msg) {
  if (!s->headers_sent) {
    /* The call layer always sends a head first; a finish without one is
     * an answer nobody formatted. */
    perfc__h2_http_fail(s, 500, code == PERFC_STATUS_OK ? PERFC_STATUS_INTERNAL
                                                        : code,
                        msg ? msg : "the call ended without an answer");
    return 0;
  }
  if (s->h1) {
    if (s->h1_chunked) {
      if (!q_reserve(s, 5))
        return PERFC_ENOMEM;
      memcpy(s->q + s->qlen, "0\r\n\r\n", 5);
      s->qlen += 5;
      atomic_fetch_add(&s->pending, 5);
    } else if (!s->h1_head_ready) {
      /* "content-length: N\r\n" by hand (snprintf: ~800 instructions). */
      char cl[48], digits[24];
      size_t len = s->http_head_req ? s->http_head_body_len : s->qlen - s->qoff;
      size_t nd = 0;
      do {
        digits[nd++] = (char)('0' + len % 10);
        len /= 10;
      } while (len > 0);
      size_t n = 16;
      memcpy(cl, "content-length: ", 16);
      while (nd > 0)
        cl[n++] = digits[--nd];
      cl[n++] = '\r';
      cl[n++] = '\n';
      /* A 204 carries no length (RFC 9110 8.6), nor does a 304 (its
       * length would be the 200's, RFC 9110 8.6). */
      if ((s->http_status != 204 && s->http_status != 304 &&
           !h1_head_add(s, cl, (size_t)n)) ||
          !h1_head_close(s))
        return PERFC_ENOMEM;
    }
    s->finish_queued = true;
    perfc__h2_h1_kick(s);
    return 0;
  }
  s->finish_queued = true;
  kick_data(s);
  return 0;
}

void perfc__h2_http_fail(perfc__h2_stream *s, int status,
                         perfc_status_code code, const char *msg) {
  s->recv_done = true;
  drop_input(s);
  if (s->finish_queued || s->conn == NULL)
    return;
  if (msg == NULL)
    msg = "";
  size_t elen = json_escape(msg, NULL, 0);
  char *body = malloc(elen + 96);
  if (body == NULL) {
    if (s->h1)
      s->conn->closing = true;
    else
      nghttp2_submit_rst_stream(s->conn->ng, NGHTTP2_FLAG_NONE, s->id,
                                NGHTTP2_INTERNAL_ERROR);
    return;
  }
  /* A streamed body that began carries the error as its last line. */
  bool line = s->headers_sent;
  int n = snprintf(body, 40, "%s{\"code\":%d,\"message\":\"",
                   line ? "{\"error\":" : "", (int)code);
  json_escape(msg, body + n, elen);
  n += (int)elen;
  n += snprintf(body + n, 40, "\",\"details\":[]}%s\n", line ? "}" : "");
  if (!s->http && !s->web)
    s->http = s->h1 ? PERFC__H2_PROTO_HTTP1 : PERFC__H2_PROTO_HTTP2;
  if (!line && http_head_local(s, status, "application/json", NULL, 0, 0) != 0) {
    /* No head, no answer (http_finish_local would come back here). */
    free(body);
    if (s->h1)
      s->conn->closing = true;
    else
      nghttp2_submit_rst_stream(s->conn->ng, NGHTTP2_FLAG_NONE, s->id,
                                NGHTTP2_INTERNAL_ERROR);
    s->finish_queued = true;
    return;
  }
  http_send_local(s, (const uint8_t *)body, (size_t)n);
  free(body);
  http_finish_local(s, code, msg);
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
  if (s->http) {
    perfc__h2_http_fail(s,
                        code == PERFC_STATUS_DEADLINE_EXCEEDED     ? 504
                        : code == PERFC_STATUS_RESOURCE_EXHAUSTED ? 503
                                                                  : 500,
                        code, msg);
    return;
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


/* ---- gRPC-Web ---------------------------------------------------------------
 * grpc/grpc doc/PROTOCOL-WEB.md: a gRPC call over any HTTP, the request
 * and response bodies the same length-prefixed frames as gRPC, the
 * trailers a last frame (flag 0x80) holding "name:value\r\n" lines, and
 * in the text mode every body base64. A gRPC-Web call is a gRPC call to
 * the call layer; only its envelope differs, here. */

static const char b64_tab[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t b64_encode(const uint8_t *in, size_t n, char *out) {
  size_t o = 0, i = 0;
  for (; i + 2 < n; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    out[o++] = b64_tab[v >> 18];
    out[o++] = b64_tab[(v >> 12) & 63];
    out[o++] = b64_tab[(v >> 6) & 63];
    out[o++] = b64_tab[v & 63];
  }
  if (i < n) {
    uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);
    out[o++] = b64_tab[v >> 18];
    out[o++] = b64_tab[(v >> 12) & 63];
    out[o++] = i + 1 < n ? b64_tab[(v >> 6) & 63] : '=';
    out[o++] = '=';
  }
  return o;
}

static const char *web_ctype(const perfc__h2_stream *s) {
  return s->web == 2 ? "application/grpc-web-text+proto"
                     : "application/grpc-web+proto";
}

static int web_headers_local(perfc__h2_stream *s, const perfc__h2_md *md,
                             size_t n) {
  perfc__h2_md stack[17];
  perfc__h2_md *all = n + 1 <= 17 ? stack : malloc((n + 1) * sizeof *all);
  if (all == NULL)
    return PERFC_ENOMEM;
  size_t k = 0;
  if (s->send_enc != ENC_IDENTITY)
    all[k++] = (perfc__h2_md){"grpc-encoding", 13, enc_names[s->send_enc],
                              strlen(enc_names[s->send_enc])};
  for (size_t i = 0; i < n; i++)
    all[k++] = md[i];
  /* The body is a stream of frames: chunked on HTTP/1.1. */
  int rc = http_head_local(s, 200, web_ctype(s), all, k, PERFC__H2_HTTP_STREAM);
  if (all != stack)
    free(all);
  return rc;
}

/* The bytes queued from `from` to the end become what the wire carries:
 * base64 (text mode) and an HTTP/1.1 chunk. false when out of memory. */
static bool web_wrap(perfc__h2_stream *s, size_t from) {
  size_t n = s->qlen - from;
  if ((!s->h1 && s->web != 2) || n == 0)
    return true;
  size_t outn = s->web == 2 ? (n + 2) / 3 * 4 : n;
  uint8_t *tmp = malloc(n + outn);
  if (tmp == NULL)
    return false;
  memcpy(tmp, s->q + from, n);
  const uint8_t *out = tmp;
  if (s->web == 2) {
    b64_encode(tmp, n, (char *)tmp + n);
    out = tmp + n;
  }
  s->qlen = from;
  if (!q_reserve(s, outn + 24)) {
    free(tmp);
    return false;
  }
  if (s->h1)
    s->qlen += (size_t)sprintf((char *)s->q + s->qlen, "%zx\r\n", outn);
  memcpy(s->q + s->qlen, out, outn);
  s->qlen += outn;
  if (s->h1) {
    memcpy(s->q + s->qlen, "\r\n", 2);
    s->qlen += 2;
  }
  free(tmp);
  return true;
}

static int web_finish_local(perfc__h2_stream *s, perfc_status_code code,
                            const char *msg, const perfc__h2_md *md, size_t n) {
  if (!s->headers_sent) {
    int rc = web_headers_local(s, NULL, 0);
    if (rc != 0)
      return rc;
  }
  size_t mlen = msg ? strlen(msg) : 0;
  size_t elen = perfc__h2_percent_encode(msg ? msg : "", mlen, NULL, 0);
  size_t need = 5 + 32 + elen + 16 + 5;
  for (size_t i = 0; i < n; i++)
    need += md[i].key_len + md[i].value_len + 3;
  size_t before = s->qlen;
  if (!q_reserve(s, need))
    return PERFC_ENOMEM;
  uint8_t *p = s->q + s->qlen;
  size_t w = 5;
  w += (size_t)sprintf((char *)p + w, "grpc-status:%d\r\n", (int)code);
  if (mlen > 0) {
    memcpy(p + w, "grpc-message:", 13);
    w += 13;
    perfc__h2_percent_encode(msg, mlen, (char *)p + w, elen);
    w += elen;
    memcpy(p + w, "\r\n", 2);
    w += 2;
  }
  for (size_t i = 0; i < n; i++) {
    memcpy(p + w, md[i].key, md[i].key_len);
    w += md[i].key_len;
    p[w++] = ':';
    memcpy(p + w, md[i].value, md[i].value_len);
    w += md[i].value_len;
    memcpy(p + w, "\r\n", 2);
    w += 2;
  }
  size_t body = w - 5;
  p[0] = 0x80; /* the trailers frame */
  p[1] = (uint8_t)(body >> 24);
  p[2] = (uint8_t)(body >> 16);
  p[3] = (uint8_t)(body >> 8);
  p[4] = (uint8_t)body;
  s->qlen += w;
  if (!web_wrap(s, before))
    return PERFC_ENOMEM;
  if (s->h1 && s->h1_chunked) {
    if (!q_reserve(s, 5))
      return PERFC_ENOMEM;
    memcpy(s->q + s->qlen, "0\r\n\r\n", 5);
    s->qlen += 5;
  }
  atomic_fetch_add(&s->pending, s->qlen - before);
  s->finish_queued = true;
  if (s->h1) {
    /* The call is over: what is left of its body is read and dropped, not
     * held for a handler that is gone, and a stream paused for a handler
     * that fell behind has the socket read again (http1.c: busy). */
    s->recv_done = true;
    drop_input(s);
    perfc__h2_h1_kick(s);
  } else {
    kick_data(s);
  }
  return 0;
}

/* Text mode: base64 in, whole quads decoded (a quad may span reads;
 * padding may end any quad, as clients that encode per write send). */
static void web_text_body(perfc__h2_stream *s, const uint8_t *data,
                          size_t len) {
  uint8_t *out = malloc(len / 4 * 3 + 3);
  if (out == NULL) {
    stream_fail(s, PERFC__H2_CLOSE_ERROR, PERFC_STATUS_RESOURCE_EXHAUSTED,
                "out of memory");
    return;
  }
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    uint8_t ch = data[i];
    if (ch == '\r' || ch == '\n' || ch == ' ')
      continue;
    s->b64_pend[s->b64_npend++] = ch;
    if (s->b64_npend < 4)
      continue;
    s->b64_npend = 0;
    char quad[4];
    memcpy(quad, s->b64_pend, 4);
    long d = b64_decode(quad, 4);
    if (d < 0 || (quad[0] == '=' || quad[1] == '=')) {
      free(out);
      stream_fail(s, PERFC__H2_CLOSE_ERROR, PERFC_STATUS_INTERNAL,
                  "gRPC-Web text body is not base64");
      return;
    }
    memcpy(out + o, quad, (size_t)d);
    o += (size_t)d;
  }
  grpc_frames(s, out, o);
  free(out);
}

void perfc__h2_web_body(perfc__h2_stream *s, const uint8_t *data, size_t len) {
  if (s->conn == NULL)
    return;
  /* HTTP/1.1 has no flow control to hold a client back: the body is
   * bounded as an HTTP/JSON one is, also what is read and dropped after
   * the call ended (then the connection closes: http1.c on_body). */
  s->web_body += len;
  if (s->web_body > s->lc->srv->o.http_max_body_bytes) {
    s->h1_close = true;
    if (!s->recv_done && s->started)
      stream_fail(s, PERFC__H2_CLOSE_ERROR, PERFC_STATUS_RESOURCE_EXHAUSTED,
                  "gRPC-Web request body larger than the server's limit");
    return;
  }
  if (s->recv_done || !s->started)
    return;
  if (s->web == 2)
    web_text_body(s, data, len);
  else
    grpc_frames(s, data, len);
}

/* ---- requests: headers ---------------------------------------------------- */

_Static_assert(sizeof(perfc__h2_stream) <= 1032,
               "a stream stays within glibc's per-thread cache");

perfc__h2_stream *perfc__h2_stream_new(perfc__h2_conn *c, int32_t sid) {
  /* malloc and a memset, not calloc: glibc's calloc skips its per-thread
   * cache; the inline buffers at the end need no zeroes. */
  perfc__h2_stream *s = malloc(sizeof *s);
  if (s == NULL)
    return NULL;
  memset(s, 0, offsetof(perfc__h2_stream, hinl));
  s->id = sid;
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
  return s;
}

int perfc__h2_grpc_begin_headers(perfc__h2_conn *c, const nghttp2_frame *f) {
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0;
  perfc__h2_stream *s = perfc__h2_stream_new(c, f->hd.stream_id);
  if (s == NULL)
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  nghttp2_session_set_stream_user_data(c->ng, s->id, s);
  return 0;
}

/* The request headers are not needed any more. */
static void hbuf_drop(perfc__h2_stream *s) {
  if (s->hbuf != s->hinl)
    free(s->hbuf);
  s->hbuf = NULL;
  s->hlen = s->hcap = 0;
}

/* Inline into nghttp2's header callback (9 calls per gRPC call: the
 * out-of-line version cost 27 instructions per header, callgrind); the
 * exported name serves http1.c. */
static inline __attribute__((always_inline)) int
add_header(perfc__h2_stream *s, const char *name, size_t namelen,
           const char *value, size_t valuelen) {
  /* RFC 9113's accounting (name + value + 32) against our limit, from the
   * first field of the first block: nothing waits for a SETTINGS ACK. */
  s->hsize += (uint32_t)(namelen + valuelen + 32);
  if (s->hsize > s->lc->srv->o.max_header_list_bytes)
    s->too_big = true;
  if (s->too_big)
    return 0;
  uint32_t lens[2] = {(uint32_t)namelen, (uint32_t)valuelen};
  size_t need = sizeof lens + namelen + valuelen + 2;
  if (s->hlen + need > s->hcap) {
    if (s->hbuf == NULL && need <= sizeof s->hinl) {
      s->hbuf = s->hinl;
      s->hcap = sizeof s->hinl;
    } else {
      size_t cap = s->hcap > 512 ? s->hcap : 512;
      while (cap < s->hlen + need)
        cap *= 2;
      char *b = s->hbuf == s->hinl ? malloc(cap) : realloc(s->hbuf, cap);
      if (b == NULL)
        return PERFC_ENOMEM;
      if (s->hbuf == s->hinl)
        memcpy(b, s->hinl, s->hlen);
      s->hbuf = b;
      s->hcap = (uint32_t)cap;
    }
  }
  char *w = s->hbuf + s->hlen;
  memcpy(w, lens, sizeof lens);
  w += sizeof lens;
  memcpy(w, name, namelen);
  w[namelen] = '\0';
  memcpy(w + namelen + 1, value, valuelen);
  w[namelen + 1 + valuelen] = '\0';
  s->hlen += (uint32_t)need;
  s->nhdr++;
  return 0;
}

int perfc__h2_stream_add_header(perfc__h2_stream *s, const char *name,
                                size_t namelen, const char *value,
                                size_t valuelen) {
  return add_header(s, name, namelen, value, valuelen);
}

int perfc__h2_grpc_header(perfc__h2_conn *c, const nghttp2_frame *f,
                          const uint8_t *name, size_t namelen,
                          const uint8_t *value, size_t valuelen) {
  perfc__h2_stream *s = stream_of(c, f->hd.stream_id);
  if (s == NULL)
    return 0;
  if (f->headers.cat != NGHTTP2_HCAT_REQUEST) {
    /* client trailers: counted, not kept */
    s->hsize += (uint32_t)(namelen + valuelen + 32);
    if (s->hsize > c->lc->srv->o.max_header_list_bytes)
      s->too_big = true;
    return 0;
  }
  if (add_header(s, (const char *)name, namelen, (const char *)value,
                 valuelen) != 0)
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  return 0;
}

static bool grpc_content_type(const char *v) {
  if (v == NULL || strncmp(v, "application/grpc", 16) != 0)
    return false;
  return v[16] == '\0' || v[16] == '+' || v[16] == ';';
}

static void half_close(perfc__h2_stream *s);

/* The content-type among the headers kept so far (a header list cut at
 * the limit keeps its first fields), or NULL. */
static const char *kept_content_type(const perfc__h2_stream *s) {
  char *p = s->hbuf, *k, *v;
  size_t kl, vl;
  for (uint32_t i = 0; p != NULL && i < s->nhdr; i++) {
    p = perfc__h2_hdr_next(p, &k, &kl, &v, &vl);
    if (kl == 12 && memcmp(k, "content-type", 12) == 0)
      return v;
  }
  return NULL;
}

static void start_http(perfc__h2_conn *c, perfc__h2_stream *s,
                       perfc__h2_call_info *info, const char *method,
                       const char *timeout, bool bad_bin, perfc__h2_md *md,
                       size_t nmd);
static bool alive(perfc__h2_stream *s);

/* gRPC-Web's content types (grpc/grpc doc/PROTOCOL-WEB.md):
 * application/grpc-web[+proto] (binary) and application/grpc-web-text
 * [+proto] (the body base64); 0 for anything else. */
static int web_content_type(const char *v) {
  if (v == NULL || strncmp(v, "application/grpc-web", 20) != 0)
    return 0;
  const char *r = v + 20;
  int mode = 1;
  if (strncmp(r, "-text", 5) == 0) {
    mode = 2;
    r += 5;
  }
  if (strncmp(r, "+proto", 6) == 0)
    r += 6;
  return *r == '\0' || *r == ';' ? mode : 0;
}

/* A gRPC-Web request's headers as metadata: a browser's HTTP headers are
 * not the call's (the gRPC-Web proxies drop them too). Returns the count
 * kept, in place. */
static size_t web_md(perfc__h2_md *md, size_t n) {
  static const char *const drop[] = {
      "host", "connection", "content-length", "transfer-encoding",
      "keep-alive", "expect", "upgrade", "accept", "accept-encoding",
      "accept-language", "origin", "referer", "cookie", "x-grpc-web",
      "x-user-agent", "cache-control", "pragma", "sec-fetch-mode",
      "sec-fetch-site", "sec-fetch-dest", "dnt"};
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    bool keep = true;
    for (size_t j = 0; keep && j < sizeof drop / sizeof *drop; j++)
      keep = strcmp(md[i].key, drop[j]) != 0;
    if (keep)
      md[k++] = md[i];
  }
  return k;
}

/* An HTTP/1.1 request whose Content-Length is past the body limit, read
 * no further: a gRPC-Web one is refused as gRPC-Web (200, the status
 * RESOURCE_EXHAUSTED in a trailers frame, CORS headers for an allowed
 * origin) before any call starts, so a gRPC-Web client reads the same
 * status as when chunks pass the limit. false for any other request (the
 * caller answers HTTP 413). */
bool perfc__h2_web_refuse_body(perfc__h2_stream *s, const char *msg) {
  const char *method = NULL, *ctype = NULL, *origin = NULL;
  char *p = s->hbuf, *k, *v;
  size_t kl, vl;
  for (uint32_t i = 0; p != NULL && i < s->nhdr; i++) {
    p = perfc__h2_hdr_next(p, &k, &kl, &v, &vl);
    if (strcmp(k, ":method") == 0)
      method = v;
    else if (strcmp(k, "content-type") == 0)
      ctype = v;
    else if (strcmp(k, "origin") == 0)
      origin = v;
  }
  int web = method != NULL && strcmp(method, "POST") == 0
                ? web_content_type(ctype)
                : 0;
  if (!web)
    return false;
  s->web = (uint8_t)web;
  s->http = 0;
  if (origin != NULL) {
    perfc__h2_md o = {"origin", 6, origin, strlen(origin)};
    cors_note(s, &o, 1);
  }
  if (respond_only(s, 200, PERFC_STATUS_RESOURCE_EXHAUSTED, msg, NULL, 0) != 0)
    s->conn->closing = true; /* out of memory: no answer, the connection ends */
  return true;
}

static void start_call(perfc__h2_conn *c, perfc__h2_stream *s) {
  perfc__h2_grpc_start(c, s);
}

/* A header name against a literal: the length first, then a memcmp the
 * compiler inlines; a chain of strcmp() was 25 calls per request. */
#define KEY_IS(k, kl, lit)                                                     \
  ((kl) == sizeof(lit) - 1 && memcmp((k), (lit), sizeof(lit) - 1) == 0)

void perfc__h2_grpc_start(perfc__h2_conn *c, perfc__h2_stream *s) {
  perfc__h2_server *srv = c->lc->srv;
  if (s->too_big) {
    if (s->http || s->h1 ||
        (srv->o.http_enabled && !grpc_content_type(kept_content_type(s)))) {
      s->http = s->h1 ? PERFC__H2_PROTO_HTTP1 : PERFC__H2_PROTO_HTTP2;
      s->h1_close = true;
      perfc__h2_http_fail(s, 431, PERFC_STATUS_RESOURCE_EXHAUSTED,
                          "request header list larger than the server's "
                          "limit");
      return;
    }
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
  perfc__h2_call_info info = {.authority = "", .deadline_ns = INT64_MAX,
                              .peer = c->peer, .accept_encoding = "",
                              .tls = c->ssl != NULL,
                              .peer_subject = c->peer_subject};
  const char *method = NULL, *ctype = NULL, *timeout = NULL, *enc = NULL;
  size_t nmd = 0;
  bool bad_bin = false;
  char *p = s->hbuf;
  for (uint32_t i = 0; i < s->nhdr; i++) {
    char *k, *v;
    size_t kl, vl;
    p = perfc__h2_hdr_next(p, &k, &kl, &v, &vl);
    if (k[0] == ':') {
      if (KEY_IS(k, kl, ":method"))
        method = v;
      else if (KEY_IS(k, kl, ":path")) {
        info.path = v;
        info.path_len = vl;
      } else if (KEY_IS(k, kl, ":authority"))
        info.authority = v;
      continue;
    }
    if (KEY_IS(k, kl, "content-type"))
      ctype = v;
    else if (KEY_IS(k, kl, "grpc-timeout"))
      timeout = v;
    else if (KEY_IS(k, kl, "grpc-encoding"))
      enc = v;
    else if (KEY_IS(k, kl, "grpc-accept-encoding")) {
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
    } else if (!KEY_IS(k, kl, "te")) {
      if (kl > 4 && memcmp(k + kl - 4, "-bin", 4) == 0) {
        long d = b64_decode(v, vl);
        if (d < 0)
          bad_bin = true;
        else
          vl = (size_t)d;
      }
      md[nmd++] = (perfc__h2_md){k, kl, v, vl};
    }
  }
  /* HTTP/JSON and gRPC-Web share the port: whatever is not a gRPC request
   * (by method and content-type, the one branch gRPC calls pay) is, when
   * the call layer serves HTTP, gRPC-Web by its content type, else an
   * HTTP/JSON call. */
  if (s->h1 ||
      (srv->o.http_enabled && (method == NULL || strcmp(method, "POST") != 0 ||
                               !grpc_content_type(ctype)))) {
    int web = method != NULL && strcmp(method, "POST") == 0
                  ? web_content_type(ctype)
                  : 0;
    if (web) {
      s->web = (uint8_t)web;
      s->http = 0;
      cors_note(s, md, nmd);
      nmd = web_md(md, nmd);
    } else {
      s->http = s->h1 ? PERFC__H2_PROTO_HTTP1 : PERFC__H2_PROTO_HTTP2;
      start_http(c, s, &info, method, timeout, bad_bin, md, nmd);
      if (md != stack)
        free(md);
      return;
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
  } else if (!s->web && !grpc_content_type(ctype)) {
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
  if (timeout != NULL) {
    /* From the nanosecond clock: the client's deadline is at most the
     * moment it sent the request plus the timeout (grpc rounds the value
     * it sends up), and the request arrived later, so arrival + timeout
     * is never before it. The rounded-down ms clock would lose up to
     * 1 ms, enough for our DEADLINE_EXCEEDED to reach a client whose
     * deadline had not passed yet. A timeout past int64 ns (grpc-timeout
     * allows 99999999H) is no deadline. */
    int64_t now = perfc__h2_now_ns();
    if (tmo < (INT64_MAX - now) / 1000000)
      info.deadline_ns = now + tmo * 1000000;
  }
  info.request_encoding = enc_names[s->req_enc];
  info.web = s->web;
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
  hbuf_drop(s);
  if (st != PERFC_STATUS_OK) {
    respond_only(s, 200, st, refuse_msg, NULL, 0);
    return;
  }
  s->started = true;
  s->call = call;
  s->flags = flags;
  atomic_fetch_add(&s->refs, 1);
  if (info.deadline_ns != INT64_MAX)
    /* The timer heap counts whole ms and fires once the rounded-down ms
     * clock reaches its mark: rounding the mark up keeps the firing at
     * or after the deadline itself. */
    perfc__h2_timer_arm(c->lc->loop, &s->deadline,
                        (info.deadline_ns + 999999) / 1000000);
  /* Now the stream may be answered: a call that starts before its first
   * message (a client or bidi stream) is handed up here. */
  if (srv->cb.on_start != NULL)
    srv->cb.on_start(call, s);
}

/* An HTTP call: its metadata is what an HTTP client means for the call
 * (Authorization, the trace context, Grpc-Metadata-* headers without the
 * prefix, as grpc-gateway passes them); the other headers are HTTP's. */
static bool http_md_keep(perfc__h2_md *e) {
  static const char pfx[] = "grpc-metadata-";
  if (e->key_len > sizeof pfx - 1 &&
      memcmp(e->key, pfx, sizeof pfx - 1) == 0) {
    e->key += sizeof pfx - 1;
    e->key_len -= sizeof pfx - 1;
    return true;
  }
  return strcmp(e->key, "authorization") == 0 ||
         strcmp(e->key, "traceparent") == 0 ||
         strcmp(e->key, "tracestate") == 0 || strcmp(e->key, "baggage") == 0;
}

static void start_http_call(perfc__h2_conn *c, perfc__h2_stream *s,
                            perfc__h2_call_info *info, const char *method,
                            const char *timeout, bool bad_bin,
                            perfc__h2_md *md, size_t k,
                            const char *accept_enc, const char *inm);

/* Every `key` header's value joined with ", " (RFC 9110 5.3: the same
 * field on several lines is one list); malloc'd, NULL when absent (or out
 * of memory: the header is then ignored, which only costs a 200 instead of
 * a 304 or an identity body instead of gzip). */
static char *md_join(const perfc__h2_md *md, size_t n, const char *key) {
  char *out = NULL;
  size_t len = 0;
  for (size_t i = 0; i < n; i++) {
    if (strcmp(md[i].key, key) != 0)
      continue;
    char *o = realloc(out, len + md[i].value_len + 3);
    if (o == NULL) {
      free(out);
      return NULL;
    }
    out = o;
    if (len > 0) {
      memcpy(out + len, ", ", 2);
      len += 2;
    }
    memcpy(out + len, md[i].value, md[i].value_len);
    len += md[i].value_len;
    out[len] = '\0';
  }
  return out;
}

static void start_http(perfc__h2_conn *c, perfc__h2_stream *s,
                       perfc__h2_call_info *info, const char *method,
                       const char *timeout, bool bad_bin, perfc__h2_md *md,
                       size_t nmd) {
  s->http_head_req = method != NULL && strcmp(method, "HEAD") == 0;
  cors_note(s, md, nmd);
  if (cors_preflight(s, method, md, nmd))
    return;
  /* Before the metadata filter drops them: content negotiation and
   * conditional requests are the codec's business (h2_seam.c). */
  char *accept_enc = md_join(md, nmd, "accept-encoding");
  char *inm = md_join(md, nmd, "if-none-match");
  size_t k = 0;
  for (size_t i = 0; i < nmd; i++)
    if (http_md_keep(&md[i]))
      md[k++] = md[i];
  start_http_call(c, s, info, method, timeout, bad_bin, md, k, accept_enc, inm);
  free(accept_enc);
  free(inm);
}

static void start_http_call(perfc__h2_conn *c, perfc__h2_stream *s,
                            perfc__h2_call_info *info, const char *method,
                            const char *timeout, bool bad_bin,
                            perfc__h2_md *md, size_t k,
                            const char *accept_enc, const char *inm) {
  perfc__h2_server *srv = c->lc->srv;
  int64_t tmo = 0;
  if (method == NULL || info->path == NULL || info->path[0] != '/') {
    s->h1_close = true;
    perfc__h2_http_fail(s, 400, PERFC_STATUS_INVALID_ARGUMENT,
                        "malformed request: no method, or a target that does "
                        "not start with '/'");
    return;
  }
  if (timeout != NULL &&
      perfc__h2_parse_timeout(timeout, strlen(timeout), &tmo) != 0) {
    perfc__h2_http_fail(s, 400, PERFC_STATUS_INVALID_ARGUMENT,
                        "malformed grpc-timeout header (1-8 digits and a "
                        "unit of H, M, S, m, u, n)");
    return;
  }
  if (bad_bin) {
    perfc__h2_http_fail(s, 400, PERFC_STATUS_INVALID_ARGUMENT,
                        "malformed base64 in a -bin metadata header");
    return;
  }
  if (timeout != NULL) {
    /* As for gRPC calls: arrival + timeout on the ns clock, never before
     * the client's deadline; past int64 ns is no deadline. */
    int64_t now = perfc__h2_now_ns();
    if (tmo < (INT64_MAX - now) / 1000000)
      info->deadline_ns = now + tmo * 1000000;
  }
  info->http = s->http;
  info->http_method = method;
  info->request_encoding = "identity";
  info->md = md;
  info->md_count = k;
  info->http_accept_encoding = accept_enc;
  info->http_if_none_match = inm;
  const char *refuse_msg = NULL;
  unsigned flags = 0;
  void *call = NULL;
  perfc_status_code st =
      srv->cb.on_call(srv->data, s, info, &call, &flags, &refuse_msg);
  hbuf_drop(s);
  if (st != PERFC_STATUS_OK) {
    perfc__h2_http_fail(s, st == PERFC_STATUS_RESOURCE_EXHAUSTED ? 503 : 500,
                        st, refuse_msg ? refuse_msg : perfc_status_name(st));
    return;
  }
  s->started = true;
  s->call = call;
  s->flags = flags;
  atomic_fetch_add(&s->refs, 1);
  if (info->deadline_ns != INT64_MAX)
    perfc__h2_timer_arm(c->lc->loop, &s->deadline,
                        (info->deadline_ns + 999999) / 1000000);
  if (s->remote_closed)
    perfc__h2_http_request_done(s);
}

void perfc__h2_http_body(perfc__h2_stream *s, const uint8_t *data, size_t len) {
  if (s->recv_done || s->conn == NULL || len == 0)
    return;
  size_t max = s->lc->srv->o.http_max_body_bytes;
  if ((size_t)s->msg_got + len > max) {
    char m[128];
    snprintf(m, sizeof m, "request body larger than the server's %zu-byte "
                          "limit", max);
    s->h1_close = true; /* HTTP/1.1: the rest of the body is never read */
    perfc__h2_http_fail(s, 413, PERFC_STATUS_RESOURCE_EXHAUSTED, m);
    return;
  }
  if ((size_t)s->msg_got + len > s->msg_len) {
    size_t cap = s->msg_len ? s->msg_len : 1024;
    while (cap < (size_t)s->msg_got + len)
      cap *= 2;
    if (cap > max)
      cap = max;
    uint8_t *m = realloc(s->msg, cap);
    if (m == NULL) {
      perfc__h2_http_fail(s, 503, PERFC_STATUS_RESOURCE_EXHAUSTED,
                          "out of memory reading the request body");
      return;
    }
    s->msg = m;
    s->msg_len = (uint32_t)cap;
  }
  memcpy(s->msg + s->msg_got, data, len);
  s->msg_got += (uint32_t)len;
  hold(s, len);
}

void perfc__h2_http_request_done(perfc__h2_stream *s) {
  if (s->web) {
    /* gRPC-Web on HTTP/1.1: the end of the body is the half-close. */
    if (s->started)
      half_close(s);
    else
      s->remote_closed = true;
    return;
  }
  s->remote_closed = true;
  if (!alive(s) || !s->started)
    return;
  s->recv_done = true;
  perfc__h2_callbacks *cb = &s->lc->srv->cb;
  size_t n = s->msg_got;
  cb->on_message(s->call, s, s->msg != NULL ? s->msg : (const uint8_t *)"", n);
  free(s->msg);
  s->msg = NULL;
  s->msg_got = s->msg_len = 0;
  if (n)
    unhold(s, n);
  if (s->conn != NULL && s->started)
    cb->on_half_close(s->call, s);
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
  if (s->http) {
    perfc__h2_http_body(s, data, len);
    return 0;
  }
  if (s->web == 2) {
    web_text_body(s, data, len);
    return 0;
  }
  grpc_frames(s, data, len);
  return 0;
}

/* Length-prefixed messages reassembled from request body bytes (gRPC's,
 * gRPC-Web's once base64-decoded). */
/* always_inline: the gRPC path had this loop inline in grpc_data. */
static inline __attribute__((always_inline)) void
grpc_frames(perfc__h2_stream *s, const uint8_t *data, size_t len) {
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
}

static void half_close(perfc__h2_stream *s) {
  if (s->http) {
    perfc__h2_http_request_done(s);
    return;
  }
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
  /* The answer is complete; a client still sending gets RST_STREAM
   * NO_ERROR ("stop, nothing went wrong"), whatever the status, as grpc
   * core and grpc-go servers do after their trailers. Never CANCEL, not
   * even past a deadline: a grpc core client that reads a RST_STREAM
   * other than NO_ERROR before it handed the trailers to the application
   * replaces their status with the reset's (CANCELLED while its own
   * deadline has not passed), so the DEADLINE_EXCEEDED it was sent
   * would be lost. */
  if (!nghttp2_session_get_stream_remote_close(c->ng, s->id))
    nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, s->id,
                              NGHTTP2_NO_ERROR);
}

/* The transport's side of a stream ends (nghttp2 closed it or the
 * connection is going): on_close upward, buffers freed, our ref dropped. */
void perfc__h2_grpc_stream_end(perfc__h2_conn *c, perfc__h2_stream *s,
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
  perfc__h2_q_drop(s);
  hbuf_drop(s);
  trailer_drop(s);
  if (s->h1_head != NULL || s->cors_origin != NULL) { /* HTTP only */
    free(s->h1_head);
    s->h1_head = NULL;
    s->h1_head_cap = 0;
    free(s->cors_origin);
    s->cors_origin = NULL;
  }
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
  perfc__h2_grpc_stream_end(c, s, why);
  if (c->nowed > 0)
    perfc__h2_grpc_repay(c);
}

void perfc__h2_grpc_conn_gone(perfc__h2_conn *c) {
  while (c->streams != NULL)
    perfc__h2_grpc_stream_end(c, c->streams, PERFC__H2_CLOSE_CONN);
}

static void stream_unref(perfc__h2_stream *s) {
  if (atomic_fetch_sub(&s->refs, 1) != 1)
    return;
  perfc__h2_q_drop(s);
  hbuf_drop(s);
  trailer_drop(s);
  free(s->msg);
  if (s->h1_head != NULL || s->cors_origin != NULL) { /* HTTP only */
    free(s->h1_head);
    free(s->cors_origin);
  }
  free(s);
}

void perfc__h2_grpc_loop_free(perfc__h2_lctx *lc) {
  if (lc->zgzip_ready)
    deflateEnd(&lc->zgzip);
  if (lc->zdeflate_ready)
    deflateEnd(&lc->zdeflate);
  if (lc->zhttp_ready)
    deflateEnd(&lc->zhttp);
  lc->zgzip_ready = lc->zdeflate_ready = lc->zhttp_ready = false;
}

/* ---- the downward API: local or posted ------------------------------------ */

enum { OP_HEADERS, OP_MESSAGE, OP_FINISH, OP_RESUME, OP_RELEASE, OP_ENCODING,
       OP_HTTP_HEAD, OP_WAKE };

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
  if (!s->paused && s->h1)
    perfc__h2_h1_kick(s); /* read the socket again (http1.c: busy) */
  if (!s->paused && s->held_msgs == NULL && s->remote_closed && alive(s))
    half_close(s);
}

static void release_local(perfc__h2_stream *s) {
  if (s->conn != NULL && s->started) {
    /* Abandoned before its end: no on_close will follow. A stream whose
     * finish is queued keeps going: its trailers leave after the DATA
     * before them (then perfc__h2_grpc_frame_sent resets a client still
     * sending with NO_ERROR); a RST_STREAM now would overtake them and
     * the client would see CANCEL instead of the status. Only a stream
     * nobody will finish is cancelled. */
    s->started = false;
    if (s->h1) {
      if (!s->finish_queued)
        s->conn->closing = true; /* its answer will never come */
    } else if (!s->end_stream_sent && !s->finish_queued)
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
  case OP_HTTP_HEAD:
    return http_head_local(s, (int)o->code, o->msg, o->md, o->n, o->flags);
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

void perfc__h2_stream_post(perfc__h2_stream *s, perfc__h2_task *t) {
  perfc__h2_loop_post(s->lc->loop, t, true);
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

int perfc__h2_http_head(perfc__h2_stream *s, int status, const char *content_type,
                        const perfc__h2_md *md, size_t n, unsigned flags) {
  if (atomic_load(&s->closed))
    return PERFC_ESHUTDOWN;
  if (perfc__h2_stream_on_loop(s))
    return http_head_local(s, status, content_type, md, n, flags);
  return post(s, OP_HTTP_HEAD, flags | PERFC__H2_SEND_MORE,
              (perfc_status_code)status, content_type, md, n, NULL, 0);
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
