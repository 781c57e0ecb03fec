/*
 * test_h2_grpc.c — transport/h2/grpc.c and conn.c: grpc-timeout parsing,
 * percent-encoding, the bounded inflate, and a real server on loopback
 * driven by an nghttp2 client session: messages reassembled across DATA
 * frames, deadlines, client resets, header limits, rapid reset, ping
 * abuse, answers posted from another thread, and send backpressure.
 *
 * Room: tests/unit.
 */
#include "transport/h2/conn_internal.h"
#include "transport/h2/h2_internal.h"
#include "transport/h2/loop_internal.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

/* ---- pure helpers --------------------------------------------------------- */

Test(h2_grpc, grpc_timeout_parsing) {
  struct {
    const char *v;
    int rc;
    int64_t ms;
  } cases[] = {
      {"1S", 0, 1000},       {"100m", 0, 100},     {"1H", 0, 3600000},
      {"2M", 0, 120000},     {"1n", 0, 1},         {"1000000n", 0, 1},
      {"1000001n", 0, 2},    {"5u", 0, 1},         {"99999999S", 0, 99999999000LL},
      {"0m", 0, 0},          {"123456789S", PERFC_EPARSE, 0},
      {"", PERFC_EPARSE, 0}, {"S", PERFC_EPARSE, 0}, {"10x", PERFC_EPARSE, 0},
      {"-1S", PERFC_EPARSE, 0}, {"1.5S", PERFC_EPARSE, 0}, {"10", PERFC_EPARSE, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int64_t ms = -1;
    int rc = perfc__h2_parse_timeout(cases[i].v, strlen(cases[i].v), &ms);
    cr_assert_eq(rc, cases[i].rc, "'%s': rc %d", cases[i].v, rc);
    if (rc == 0)
      cr_assert_eq(ms, cases[i].ms, "'%s': %lld ms", cases[i].v, (long long)ms);
  }
}

Test(h2_grpc, grpc_message_percent_encoding) {
  char out[64];
  size_t n = perfc__h2_percent_encode("plain text", 10, out, sizeof out);
  cr_assert_eq(n, 10);
  cr_assert_eq(memcmp(out, "plain text", 10), 0);
  n = perfc__h2_percent_encode("50%\nd\xc3\xa9j\xc3\xa0", 10, out, sizeof out);
  cr_assert_eq(n, 22);
  cr_assert_eq(memcmp(out, "50%25%0Ad%C3%A9j%C3%A0", 22), 0, "%.*s", (int)n, out);
  /* Too small a buffer: the needed length, nothing written past cap. */
  char small[4] = {'x', 'x', 'x', 'x'};
  n = perfc__h2_percent_encode("a\nb", 3, small, 2);
  cr_assert_eq(n, 5);
  cr_assert_eq(small[2], 'x');
}

static size_t zip(int gzip, const uint8_t *in, size_t len, uint8_t *out,
                  size_t cap) {
  z_stream z = {0};
  deflateInit2(&z, 9, Z_DEFLATED, gzip ? 31 : 15, 8, Z_DEFAULT_STRATEGY);
  z.next_in = (Bytef *)in;
  z.avail_in = (uInt)len;
  z.next_out = out;
  z.avail_out = (uInt)cap;
  cr_assert_eq(deflate(&z, Z_FINISH), Z_STREAM_END);
  size_t n = cap - z.avail_out;
  deflateEnd(&z);
  return n;
}

/* HTTP/JSON compression (#18 item 6): Accept-Encoding per RFC 9110 12.5.3,
 * q-values in thousandths, malformed members skipped. */
Test(h2_grpc, accept_encoding_takes_gzip_by_q_value) {
  static const struct {
    const char *v;
    bool gzip;
  } cases[] = {
      {NULL, false},
      {"", false},
      {"gzip", true},
      {"GZip", true},
      {"x-gzip", true},
      {"identity", false},
      {"deflate, br", false},
      {"*", true},
      {"*;q=0", false},
      {"gzip;q=0", false},
      {"gzip; q=0.000", false},
      {"gzip;q=0.001", true},
      {"gzip;q=1", true},
      {"gzip;q=1.000", true},
      {"gzip;q=1.001", false},  /* malformed: skipped */
      {"gzip;q=0.0001", false}, /* four decimals: malformed */
      {"gzip;q=", false},
      {"gzip;q=.5", false},
      {"gzip;=1", false},
      {"gzip;q", false},
      {"gzip junk", false},
      {"gzip;level=9;q=0.5", true},
      {"gzip;q=0, *", false},    /* named beats * */
      {"*;q=0.5, gzip;q=0", false},
      {"identity;q=0, *;q=0.2", true},
      {"br;q=1.0, gzip;q=0.8, *;q=0.1", true},
      {" \tgzip\t ; q=0.5 ,", true},
      {",,,;;;", false},
      {"gzip;q=0, gzip;q=0.5", true}, /* the best of repeats */
      {"gzipx, xgzip, gzi", false},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
    cr_expect_eq(perfc__h2_accepts_gzip(cases[i].v), cases[i].gzip, "%s",
                 cases[i].v ? cases[i].v : "(null)");
}

/* If-None-Match: weak comparison, "*", lists, the -gzip variant, and
 * anything malformed matches nothing (a full 200 is always safe). */
Test(h2_grpc, if_none_match_compares_weakly_and_refuses_malformed_lists) {
  static const struct {
    const char *v;
    bool match;
  } cases[] = {
      {NULL, false},
      {"", false},
      {"*", true},
      {" * ", true},
      {"*, \"abc\"", false},
      {"\"abc\"", true},
      {"W/\"abc\"", true},
      {"\"abc-gzip\"", true},
      {"W/\"abc-gzip\"", true},
      {"\"abc-gzipx\"", false},
      {"\"abcd\"", false},
      {"\"ab\"", false},
      {"\"x\", \"abc\"", true},
      {"\"x\",\"abc\" ", true},
      {"\"x\" ,, \"abc\"", true},
      {"abc", false},
      {"\"abc", false},
      {"\"abc\" junk", false},
      {"\"x\", abc", false},
      {"W/", false},
      {"w/\"abc\"", false},
      {"\"\"", false},
      {"\"ab c\"", false},
      {"\"abc\", \"un", false},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
    cr_expect_eq(perfc__h2_etag_matches(cases[i].v, "abc"), cases[i].match,
                 "%s", cases[i].v ? cases[i].v : "(null)");
  cr_expect(!perfc__h2_etag_matches("\"abc\"", NULL));
}

Test(h2_grpc, bounded_inflate_stops_at_the_limit) {
  size_t big = 8 << 20;
  uint8_t *zeros = calloc(1, big);
  uint8_t *gz = malloc(1 << 20);
  size_t gzn = zip(1, zeros, big, gz, 1 << 20);
  uint8_t *out;
  size_t outn;
  /* 8 MiB inflated against a 1 MiB limit: refused, not inflated. */
  cr_assert_eq(perfc__h2_inflate("gzip", gz, gzn, 1 << 20, &out, &outn),
               PERFC_ETOOBIG);
  cr_assert_null(out);
  /* Exactly at the limit: accepted; one byte under: refused. */
  cr_assert_eq(perfc__h2_inflate("gzip", gz, gzn, big, &out, &outn), 0);
  cr_assert_eq(outn, big);
  cr_assert_eq(memcmp(out, zeros, big), 0);
  free(out);
  cr_assert_eq(perfc__h2_inflate("gzip", gz, gzn, big - 1, &out, &outn),
               PERFC_ETOOBIG);
  /* deflate (zlib framing) round trip. */
  const char *text = "deflate me, deflate me, deflate me";
  uint8_t dz[256];
  size_t dzn = zip(0, (const uint8_t *)text, strlen(text), dz, sizeof dz);
  cr_assert_eq(perfc__h2_inflate("deflate", dz, dzn, 1024, &out, &outn), 0);
  cr_assert_eq(outn, strlen(text));
  cr_assert_eq(memcmp(out, text, outn), 0);
  free(out);
  /* Corrupt and truncated input; the wrong framing. */
  uint8_t bad[16] = {0x1f, 0x8b, 8, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  cr_assert_eq(perfc__h2_inflate("gzip", bad, sizeof bad, 1024, &out, &outn),
               PERFC_EPARSE);
  cr_assert_eq(perfc__h2_inflate("gzip", gz, gzn / 2, big, &out, &outn),
               PERFC_EPARSE);
  cr_assert_eq(perfc__h2_inflate("deflate", gz, gzn, big, &out, &outn),
               PERFC_EPARSE);
  cr_assert_eq(perfc__h2_inflate("snappy", gz, gzn, big, &out, &outn),
               PERFC_EINVAL);
  free(zeros);
  free(gz);
}

/* ---- a server with a recording call layer ------------------------------------ */

enum { MODE_ECHO, MODE_SILENT, MODE_POOL, MODE_FLOOD, MODE_RELEASE, MODE_TWO };

/* FNV-1a, to compare bytes that went through the transport. */
static uint32_t fnv(uint32_t h, const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    h = (h ^ p[i]) * 16777619u;
  return h;
}
#define FNV0 2166136261u

typedef struct rec {
  pthread_mutex_t mu;
  int mode;
  int calls, closes, reasons[8];
  int64_t deadline_ns;
  int msgs;
  size_t bytes;
  uint8_t last[4096];
  size_t last_len;
  int efull, writable;
  char md_value[64];
  size_t md_len;   /* x-test's whole length */
  uint32_t md_sum; /* and its bytes' fnv */
} rec;

static rec R;

typedef struct call {
  perfc__h2_stream *s;
  uint8_t *req;
  size_t len;
} call;

static perfc_status_code t_on_call(void *d, perfc__h2_stream *s,
                                   const perfc__h2_call_info *info, void **c,
                                   unsigned *flags, const char **refuse) {
  (void)d;
  pthread_mutex_lock(&R.mu);
  R.calls++;
  R.deadline_ns = info->deadline_ns;
  for (size_t i = 0; i < info->md_count; i++)
    if (strcmp(info->md[i].key, "x-test") == 0) {
      snprintf(R.md_value, sizeof R.md_value, "%.*s", (int)info->md[i].value_len,
               info->md[i].value);
      R.md_len = info->md[i].value_len;
      R.md_sum = fnv(FNV0, (const uint8_t *)info->md[i].value,
                     info->md[i].value_len);
    }
  pthread_mutex_unlock(&R.mu);
  if (strcmp(info->path, "/t.T/Missing") == 0) {
    *refuse = "no such method";
    return PERFC_STATUS_UNIMPLEMENTED;
  }
  call *x = calloc(1, sizeof *x);
  x->s = s;
  *c = x;
  *flags = strcmp(info->path, "/t.T/Unary") == 0 ? PERFC__H2_CALL_SINGLE_REQUEST : 0;
  return PERFC_STATUS_OK;
}

static int t_on_message(void *c, perfc__h2_stream *s, const uint8_t *b, size_t n) {
  (void)s;
  call *x = c;
  pthread_mutex_lock(&R.mu);
  R.msgs++;
  R.bytes += n;
  R.last_len = n < sizeof R.last ? n : sizeof R.last;
  memcpy(R.last, b, R.last_len);
  pthread_mutex_unlock(&R.mu);
  if (R.mode == MODE_RELEASE) {
    /* Answer and let go at once, the client still sending: the call
     * layer's hold is dropped before h2 wrote the trailers, and no
     * on_close follows. */
    perfc__h2_send_message(s, b, n, 0);
    perfc__h2_finish(s, PERFC_STATUS_OK, "released", NULL, 0, 0);
    free(x->req);
    free(x);
    perfc__h2_stream_release(s);
    return 0;
  }
  free(x->req);
  x->req = malloc(n ? n : 1);
  memcpy(x->req, b, n);
  x->len = n;
  return 0;
}

static void *pool_answer(void *arg) {
  call *x = arg;
  perfc__h2_md md = {"x-trailer", 9, "yes", 3};
  perfc__h2_send_message(x->s, x->req, x->len, PERFC__H2_SEND_MORE);
  perfc__h2_finish(x->s, PERFC_STATUS_OK, NULL, &md, 1, 0);
  return NULL;
}

static void t_on_half_close(void *c, perfc__h2_stream *s) {
  call *x = c;
  if (R.mode == MODE_ECHO) {
    perfc__h2_send_message(s, x->req, x->len, 0);
    perfc__h2_finish(s, PERFC_STATUS_OK, "done \xe2\x9c\x93", NULL, 0, 0);
  } else if (R.mode == MODE_TWO) {
    /* Two answers queued in one go, the second past the stream's inline
     * room while the first still waits in it, then trailers past theirs. */
    static uint8_t big[1000], tv[200];
    for (size_t i = 0; i < sizeof big; i++)
      big[i] = (uint8_t)(i * 13);
    memset(tv, 't', sizeof tv);
    perfc__h2_md md = {"x-trailer", 9, (const char *)tv, sizeof tv};
    perfc__h2_send_message(s, x->req, x->len, 0);
    perfc__h2_send_message(s, big, sizeof big, 0);
    perfc__h2_finish(s, PERFC_STATUS_OK, NULL, &md, 1, 0);
  } else if (R.mode == MODE_POOL) {
    pthread_t th;
    pthread_create(&th, NULL, pool_answer, x);
    pthread_detach(th);
  } else if (R.mode == MODE_FLOOD) {
    /* Send until the stream says "would block" (the client does not
     * read), then finish when told it may go on. */
    static uint8_t chunk[64 * 1024];
    int rc;
    int n = 0;
    while ((rc = perfc__h2_send_message(s, chunk, sizeof chunk, 0)) == 0 && n < 1000)
      n++;
    pthread_mutex_lock(&R.mu);
    R.efull = rc == PERFC_EFULL ? n : -1;
    pthread_mutex_unlock(&R.mu);
  }
}

static void t_on_writable(void *c, perfc__h2_stream *s) {
  (void)c;
  pthread_mutex_lock(&R.mu);
  int first = R.writable++ == 0;
  pthread_mutex_unlock(&R.mu);
  if (first)
    perfc__h2_finish(s, PERFC_STATUS_OK, NULL, NULL, 0, 0);
}

static void t_on_close(void *c, perfc__h2_stream *s, perfc__h2_close_reason why) {
  call *x = c;
  pthread_mutex_lock(&R.mu);
  R.closes++;
  R.reasons[why]++;
  pthread_mutex_unlock(&R.mu);
  if (R.mode == MODE_POOL) {
    /* the pool thread may still be posting; it only reads x->s/req */
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
  free(x->req);
  free(x);
  perfc__h2_stream_release(s);
}

/* Reads a field of R under its lock: the loop thread writes them while the
 * test polls (a plain read there is a data race; TSan in make check). */
static int rget(const int *field) {
  pthread_mutex_lock(&R.mu);
  int v = *field;
  pthread_mutex_unlock(&R.mu);
  return v;
}

static perfc__h2_server *srv;
static int port;

static void start(int mode, perfc__h2_opts *o) {
  memset(&R, 0, sizeof R);
  pthread_mutex_init(&R.mu, NULL);
  R.mode = mode;
  perfc__h2_opts d;
  perfc__h2_opts_init(&d);
  d.loops = 1;
  perfc__h2_callbacks cb = {t_on_call, t_on_message, t_on_half_close,
                            t_on_writable, t_on_close, NULL, NULL};
  cr_assert_eq(perfc__h2_server_new(&srv, o ? o : &d, &cb, NULL), 0);
  cr_assert_eq(perfc__h2_server_listen(srv, "127.0.0.1:0", NULL, &port), 0);
  cr_assert_eq(perfc__h2_server_start(srv), 0);
}

static void stop(void) {
  perfc__h2_server_free(srv);
  srv = NULL;
}

/* ---- an nghttp2 client --------------------------------------------------------- */

typedef struct res {
  int grpc_status;
  char http[4];
  char grpc_message[128];
  size_t data;
  uint32_t data_sum; /* fnv of the DATA bytes, in order */
  size_t trailer_len; /* x-trailer's */
  int closed;
  uint32_t rst;
} res;

typedef struct cli {
  int fd;
  nghttp2_session *ng;
  res r[1024];
  int goaway;
  uint32_t goaway_code;
  char goaway_dbg[64];
  int eof;
  /* request body source */
  const uint8_t *body;
  size_t body_len, body_off;
  size_t chunk; /* DATA frame size per read callback (one frame each) */
  int no_end;
  int read_paused;
} cli;

static res *res_of(cli *c, int32_t sid) { return &c->r[(sid / 2) % 1024]; }

static ssize_t c_send(nghttp2_session *ng, const uint8_t *d, size_t n, int fl,
                      void *u) {
  (void)ng;
  (void)fl;
  cli *c = u;
  ssize_t w = send(c->fd, d, n, MSG_NOSIGNAL);
  return w < 0 ? NGHTTP2_ERR_CALLBACK_FAILURE : w;
}

static int c_header(nghttp2_session *ng, const nghttp2_frame *f,
                    const uint8_t *name, size_t nl, const uint8_t *value,
                    size_t vl, uint8_t flags, void *u) {
  (void)ng;
  (void)flags;
  res *r = res_of(u, f->hd.stream_id);
  if (nl == 7 && memcmp(name, ":status", 7) == 0)
    snprintf(r->http, sizeof r->http, "%.*s", (int)vl, value);
  else if (nl == 11 && memcmp(name, "grpc-status", 11) == 0)
    r->grpc_status = atoi((const char *)value);
  else if (nl == 12 && memcmp(name, "grpc-message", 12) == 0)
    snprintf(r->grpc_message, sizeof r->grpc_message, "%.*s", (int)vl, value);
  else if (nl == 9 && memcmp(name, "x-trailer", 9) == 0)
    r->trailer_len = vl;
  return 0;
}

static int c_data(nghttp2_session *ng, uint8_t fl, int32_t sid,
                  const uint8_t *d, size_t n, void *u) {
  (void)ng;
  (void)fl;
  res *r = res_of(u, sid);
  if (r->data == 0)
    r->data_sum = FNV0;
  r->data += n;
  r->data_sum = fnv(r->data_sum, d, n);
  return 0;
}

static int c_close(nghttp2_session *ng, int32_t sid, uint32_t err, void *u) {
  (void)ng;
  res *r = res_of(u, sid);
  r->closed = 1;
  r->rst = err;
  return 0;
}

static int c_frame(nghttp2_session *ng, const nghttp2_frame *f, void *u) {
  (void)ng;
  cli *c = u;
  if (f->hd.type == NGHTTP2_GOAWAY) {
    c->goaway = 1;
    c->goaway_code = f->goaway.error_code;
    snprintf(c->goaway_dbg, sizeof c->goaway_dbg, "%.*s",
             (int)f->goaway.opaque_data_len, f->goaway.opaque_data);
  }
  return 0;
}

static ssize_t body_read(nghttp2_session *ng, int32_t sid, uint8_t *buf,
                         size_t len, uint32_t *flags, nghttp2_data_source *src,
                         void *u) {
  (void)ng;
  (void)sid;
  (void)src;
  cli *c = u;
  size_t n = c->body_len - c->body_off;
  if (n > c->chunk)
    n = c->chunk;
  if (n > len)
    n = len;
  memcpy(buf, c->body + c->body_off, n);
  c->body_off += n;
  if (c->body_off == c->body_len && !c->no_end)
    *flags |= NGHTTP2_DATA_FLAG_EOF;
  if (c->body_off == c->body_len && c->no_end && n == 0)
    return NGHTTP2_ERR_DEFERRED;
  return (ssize_t)n;
}

static cli *cli_new(uint32_t window) {
  cli *c = calloc(1, sizeof *c);
  for (int i = 0; i < 1024; i++)
    c->r[i].grpc_status = -1;
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  cr_assert_eq(connect(c->fd, (struct sockaddr *)&a, sizeof a), 0);
  nghttp2_session_callbacks *cb;
  nghttp2_session_callbacks_new(&cb);
  nghttp2_session_callbacks_set_send_callback(cb, c_send);
  nghttp2_session_callbacks_set_on_header_callback(cb, c_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, c_data);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, c_close);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, c_frame);
  nghttp2_session_client_new(&c->ng, cb, c);
  nghttp2_session_callbacks_del(cb);
  nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, window}};
  nghttp2_submit_settings(c->ng, 0, iv, 1);
  c->chunk = 1 << 20;
  return c;
}

static void cli_free(cli *c) {
  nghttp2_session_del(c->ng);
  close(c->fd);
  free(c);
}

/* Sends what is queued and reads for up to `ms`, until `done(c, arg)`. */
static void cli_pump(cli *c, int ms, int (*done)(cli *, int32_t), int32_t arg) {
  int64_t end = perfc__h2_now_ms() + ms;
  uint8_t buf[65536];
  while (perfc__h2_now_ms() < end && !c->eof) {
    nghttp2_session_send(c->ng);
    if (done && done(c, arg))
      return;
    if (c->read_paused) {
      struct timespec ts = {0, 5000000};
      nanosleep(&ts, NULL);
      continue;
    }
    struct pollfd p = {c->fd, POLLIN, 0};
    if (poll(&p, 1, 20) <= 0)
      continue;
    ssize_t n = recv(c->fd, buf, sizeof buf, 0);
    if (n <= 0) {
      c->eof = 1;
      break;
    }
    nghttp2_session_mem_recv(c->ng, buf, (size_t)n);
  }
}

static int stream_closed(cli *c, int32_t sid) { return res_of(c, sid)->closed; }
static int got_goaway(cli *c, int32_t sid) {
  (void)sid;
  return c->goaway || c->eof;
}

static int32_t request(cli *c, const char *path, const char *timeout,
                       const uint8_t *body, size_t len, size_t chunk,
                       size_t extra_hdr) {
  static char big[1 << 16];
  memset(big, 'a', sizeof big);
  nghttp2_nv nv[8];
  int k = 0;
#define H(n, v, vl)                                                              \
  nv[k++] = (nghttp2_nv){(uint8_t *)(n), (uint8_t *)(v), strlen(n), (vl),        \
                         NGHTTP2_NV_FLAG_NONE}
  H(":method", "POST", 4);
  H(":scheme", "http", 4);
  H(":path", path, strlen(path));
  H(":authority", "localhost", 9);
  H("content-type", "application/grpc", 16);
  H("te", "trailers", 8);
  if (timeout)
    H("grpc-timeout", timeout, strlen(timeout));
  if (extra_hdr)
    H("x-test", big, extra_hdr);
#undef H
  c->body = body;
  c->body_len = len;
  c->body_off = 0;
  c->chunk = chunk;
  nghttp2_data_provider prd = {.read_callback = body_read};
  return nghttp2_submit_request(c->ng, NULL, nv, (size_t)k, &prd, NULL);
}

static size_t frame_msgs(uint8_t *out, const uint8_t *msg, size_t len, int count) {
  size_t o = 0;
  for (int i = 0; i < count; i++) {
    out[o] = 0;
    out[o + 1] = (uint8_t)(len >> 24);
    out[o + 2] = (uint8_t)(len >> 16);
    out[o + 3] = (uint8_t)(len >> 8);
    out[o + 4] = (uint8_t)len;
    memcpy(out + o + 5, msg, len);
    o += 5 + len;
  }
  return o;
}

/* ---- the transport end to end ------------------------------------------------- */

Test(h2_grpc, a_message_split_over_many_data_frames_arrives_whole) {
  start(MODE_ECHO, NULL);
  uint8_t msg[3000];
  for (size_t i = 0; i < sizeof msg; i++)
    msg[i] = (uint8_t)(i * 31);
  uint8_t body[3100];
  size_t n = frame_msgs(body, msg, sizeof msg, 1);
  cli *c = cli_new(65535);
  /* 7-byte DATA frames: the prefix itself is split. */
  int32_t sid = request(c, "/t.T/Unary", NULL, body, n, 7, 0);
  cli_pump(c, 5000, stream_closed, sid);
  res *r = res_of(c, sid);
  cr_assert_eq(r->grpc_status, 0);
  cr_assert_eq(R.msgs, 1);
  cr_assert_eq(R.bytes, sizeof msg);
  cr_assert_eq(memcmp(R.last, msg, sizeof msg), 0);
  cr_assert_eq(r->data, n, "echo came back: %zu bytes", r->data);
  cr_assert_str_eq(r->grpc_message, "done %E2%9C%93");
  /* Three messages in one frame on a streaming method: three deliveries. */
  size_t n3 = frame_msgs(body, msg, 1000, 3);
  sid = request(c, "/t.T/Stream", NULL, body, n3, 1 << 20, 0);
  cli_pump(c, 5000, stream_closed, sid);
  cr_assert_eq(R.msgs, 4);
  cr_assert_eq(R.bytes, sizeof msg + 3000);
  cli_free(c);
  stop();
  cr_assert_eq(R.calls, 2);
  cr_assert_eq(R.closes, 2);
  cr_assert_eq(R.reasons[PERFC__H2_CLOSE_DONE], 2);
}

Test(h2_grpc, deadline_passes_deadline_exceeded_and_the_call_layer_is_told) {
  start(MODE_SILENT, NULL);
  cli *c = cli_new(65535);
  uint8_t body[16];
  size_t n = frame_msgs(body, (const uint8_t *)"hi", 2, 1);
  int64_t t0 = perfc__h2_now_ms();
  int32_t sid = request(c, "/t.T/Unary", "100m", body, n, 1 << 20, 0);
  cli_pump(c, 5000, stream_closed, sid);
  res *r = res_of(c, sid);
  cr_assert_eq(r->grpc_status, 4, "status %d", r->grpc_status);
  cr_assert_geq(perfc__h2_now_ms() - t0, 100);
  cr_assert_geq(R.deadline_ns, t0 * 1000000 + 100000000);
  cr_assert_leq(R.deadline_ns, t0 * 1000000 + 1100000000);
  cli_free(c);
  stop();
  cr_assert_eq(R.reasons[PERFC__H2_CLOSE_DEADLINE], 1);
}

Test(h2_grpc, client_reset_cancels_the_call) {
  start(MODE_SILENT, NULL);
  cli *c = cli_new(65535);
  uint8_t body[16];
  size_t n = frame_msgs(body, (const uint8_t *)"hi", 2, 1);
  int32_t sid = request(c, "/t.T/Stream", NULL, body, n, 1 << 20, 0);
  c->no_end = 1;
  cli_pump(c, 300, NULL, 0);
  cr_assert_eq(rget(&R.calls), 1);
  nghttp2_submit_rst_stream(c->ng, 0, sid, NGHTTP2_CANCEL);
  cli_pump(c, 300, NULL, 0);
  for (int i = 0; i < 100 && rget(&R.closes) == 0; i++)
    cli_pump(c, 20, NULL, 0);
  cr_assert_eq(rget(&R.reasons[PERFC__H2_CLOSE_CANCELLED]), 1);
  cli_free(c);
  stop();
}

static int64_t rget64(const int64_t *field) {
  pthread_mutex_lock(&R.mu);
  int64_t v = *field;
  pthread_mutex_unlock(&R.mu);
  return v;
}

/* interop.grpcio's test_bidi_deadline got CANCELLED under load: the
 * deadline came from the rounded-down ms clock (up to 1 ms before the
 * client's), and the trailers were followed by RST_STREAM CANCEL, which a
 * grpc core client whose own deadline has not passed turns into
 * CANCELLED. Twenty 20 ms deadlines on streams the client keeps open
 * (each one lands at a random phase of the ms clock; the rounding showed
 * in about 3 of 4): none may end before the client's deadline, each ends
 * with its trailers and then RST_STREAM NO_ERROR. */
Test(h2_grpc, a_deadline_is_never_before_the_clients_and_ends_with_no_error) {
  start(MODE_SILENT, NULL);
  cli *c = cli_new(65535);
  c->no_end = 1;
  uint8_t body[16];
  size_t n = frame_msgs(body, (const uint8_t *)"hi", 2, 1);
  const int64_t tmo_ns = 20000000;
  for (int i = 0; i < 20; i++) {
    /* Before the request leaves: the client's deadline is at most this
     * plus the timeout. */
    int64_t t0 = perfc__h2_now_ns();
    int32_t sid = request(c, "/t.T/Stream", "20m", body, n, 1 << 20, 0);
    cli_pump(c, 5000, stream_closed, sid);
    int64_t t1 = perfc__h2_now_ns();
    res *r = res_of(c, sid);
    cr_assert_eq(r->grpc_status, 4, "call %d: status %d", i, r->grpc_status);
    cr_assert_eq(r->rst, NGHTTP2_NO_ERROR, "call %d: RST_STREAM %u after the "
                 "trailers", i, r->rst);
    int64_t d = rget64(&R.deadline_ns);
    cr_assert_geq(d, t0 + tmo_ns, "call %d: deadline %lld ns before the "
                  "client's", i, (long long)(t0 + tmo_ns - d));
    cr_assert_geq(t1, t0 + tmo_ns, "call %d: answered %lld ns before the "
                  "client's deadline", i, (long long)(t0 + tmo_ns - t1));
  }
  cli_free(c);
  stop();
  cr_assert_eq(R.reasons[PERFC__H2_CLOSE_DEADLINE], 20);
}

/* A grpc-timeout beyond what int64 nanoseconds hold is no deadline (not
 * an overflowed one in the past). */
Test(h2_grpc, a_timeout_past_int64_ns_is_no_deadline) {
  start(MODE_ECHO, NULL);
  cli *c = cli_new(65535);
  uint8_t body[16];
  size_t n = frame_msgs(body, (const uint8_t *)"hi", 2, 1);
  int32_t sid = request(c, "/t.T/Unary", "99999999H", body, n, 1 << 20, 0);
  cli_pump(c, 5000, stream_closed, sid);
  cr_assert_eq(res_of(c, sid)->grpc_status, 0);
  cr_assert_eq(rget64(&R.deadline_ns), INT64_MAX);
  cli_free(c);
  stop();
}

/* A stream released by its call layer right after its finish, before h2
 * wrote the trailers (the client still sending): the answer goes out
 * whole, then RST_STREAM NO_ERROR; a CANCEL must not overtake it. */
Test(h2_grpc, a_finished_stream_released_early_still_sends_its_trailers) {
  start(MODE_RELEASE, NULL);
  cli *c = cli_new(65535);
  c->no_end = 1;
  uint8_t body[16];
  size_t n = frame_msgs(body, (const uint8_t *)"hi", 2, 1);
  int32_t sid = request(c, "/t.T/Stream", NULL, body, n, 1 << 20, 0);
  cli_pump(c, 5000, stream_closed, sid);
  res *r = res_of(c, sid);
  cr_assert_eq(r->closed, 1);
  cr_assert_eq(r->grpc_status, 0, "status %d (RST_STREAM %u)", r->grpc_status,
               r->rst);
  cr_assert_str_eq(r->grpc_message, "released");
  cr_assert_eq(r->data, n, "the reply: %zu bytes", r->data);
  cr_assert_eq(r->rst, NGHTTP2_NO_ERROR);
  cli_free(c);
  stop();
  cr_assert_eq(R.closes, 0, "released: no on_close");
}

Test(h2_grpc, unknown_method_refused_trailers_only_and_metadata_passed_up) {
  start(MODE_ECHO, NULL);
  cli *c = cli_new(65535);
  int32_t sid = request(c, "/t.T/Missing", NULL, (const uint8_t *)"", 0, 1, 0);
  cli_pump(c, 3000, stream_closed, sid);
  res *r = res_of(c, sid);
  cr_assert_eq(r->grpc_status, 12);
  cr_assert_str_eq(r->http, "200");
  cr_assert_eq(r->data, 0);
  /* A header list over the limit: RESOURCE_EXHAUSTED, nothing passed up. */
  int calls = rget(&R.calls);
  sid = request(c, "/t.T/Unary", NULL, (const uint8_t *)"", 0, 1, 20000);
  cli_pump(c, 3000, stream_closed, sid);
  cr_assert_eq(res_of(c, sid)->grpc_status, 8);
  cr_assert_eq(rget(&R.calls), calls);
  /* Under it: the value arrives. */
  uint8_t body[16];
  size_t n = frame_msgs(body, (const uint8_t *)"x", 1, 1);
  sid = request(c, "/t.T/Unary", NULL, body, n, 1 << 20, 40);
  cli_pump(c, 3000, stream_closed, sid);
  cr_assert_eq(res_of(c, sid)->grpc_status, 0);
  cr_assert_eq(strlen(R.md_value), 40);
  cli_free(c);
  stop();
}

/* A stream's request headers, answers and trailers start in room inside
 * the stream and move to the heap when they outgrow it (grpc.c): what the
 * handler sees and what the client reads must be the same bytes on both
 * sides of that move, and when it happens with bytes already there. */
Test(h2_grpc, buffers_outgrowing_the_streams_room_keep_their_bytes) {
  start(MODE_TWO, NULL);
  cli *c = cli_new(65535);
  static const size_t hdr_sizes[] = {40, 300, 5000};
  for (size_t t = 0; t < sizeof hdr_sizes / sizeof *hdr_sizes; t++) {
    uint8_t msg[100], body[128];
    for (size_t i = 0; i < sizeof msg; i++)
      msg[i] = (uint8_t)(i + t);
    size_t n = frame_msgs(body, msg, sizeof msg, 1);
    int32_t sid = request(c, "/t.T/Unary", NULL, body, n, 1 << 20, hdr_sizes[t]);
    cli_pump(c, 3000, stream_closed, sid);
    res *r = res_of(c, sid);
    cr_assert_eq(r->grpc_status, 0, "x-test of %zu bytes", hdr_sizes[t]);
    /* The headers: the path was found, x-test arrived whole. */
    uint8_t a[5000];
    memset(a, 'a', sizeof a);
    pthread_mutex_lock(&R.mu);
    size_t md_len = R.md_len;
    uint32_t md_sum = R.md_sum;
    pthread_mutex_unlock(&R.mu);
    cr_assert_eq(md_len, hdr_sizes[t]);
    cr_assert_eq(md_sum, fnv(FNV0, a, hdr_sizes[t]));
    /* The answers: the echo (in the room), then 1,000 bytes (past it). */
    uint8_t big[1000], want[105 + 1005];
    for (size_t i = 0; i < sizeof big; i++)
      big[i] = (uint8_t)(i * 13);
    frame_msgs(want, msg, sizeof msg, 1);
    frame_msgs(want + 105, big, sizeof big, 1);
    cr_assert_eq(r->data, sizeof want);
    cr_assert_eq(r->data_sum, fnv(FNV0, want, sizeof want));
    /* The trailers: 200 bytes of x-trailer, past their room. */
    cr_assert_eq(r->trailer_len, 200);
  }
  cli_free(c);
  stop();
}

Test(h2_grpc, answers_posted_from_another_thread) {
  start(MODE_POOL, NULL);
  cli *c = cli_new(65535);
  uint8_t body[64];
  int32_t sids[50];
  for (int i = 0; i < 50; i++) {
    size_t n = frame_msgs(body, (const uint8_t *)"pooled!", 7, 1);
    sids[i] = request(c, "/t.T/Unary", NULL, body, n, 1 << 20, 0);
    cli_pump(c, 50, NULL, 0);
  }
  for (int i = 0; i < 50; i++)
    cli_pump(c, 3000, stream_closed, sids[i]);
  for (int i = 0; i < 50; i++) {
    cr_assert_eq(res_of(c, sids[i])->grpc_status, 0, "call %d", i);
    cr_assert_eq(res_of(c, sids[i])->data, 12);
  }
  cli_free(c);
  stop();
  cr_assert_eq(R.reasons[PERFC__H2_CLOSE_DONE], 50);
}

/* Regression (make check, UBSan): an empty answer posted from another
 * thread reached the loop without a buffer, and send_message_local passed
 * that NULL to memcpy ("null pointer passed as argument 2"). */
Test(h2_grpc, an_empty_answer_posted_from_another_thread) {
  start(MODE_POOL, NULL);
  cli *c = cli_new(65535);
  uint8_t body[8];
  size_t n = frame_msgs(body, (const uint8_t *)"", 0, 1);
  int32_t sid = request(c, "/t.T/Unary", NULL, body, n, 1 << 20, 0);
  cli_pump(c, 3000, stream_closed, sid);
  cr_assert_eq(res_of(c, sid)->grpc_status, 0);
  cr_assert_eq(res_of(c, sid)->data, 5, "one empty message: its 5-byte prefix");
  cli_free(c);
  stop();
  cr_assert_eq(R.reasons[PERFC__H2_CLOSE_DONE], 1);
}

Test(h2_grpc, rapid_reset_ends_the_connection_with_enhance_your_calm) {
  perfc__h2_opts o;
  perfc__h2_opts_init(&o);
  o.loops = 1;
  o.reset_burst = 50;
  o.reset_rate_per_s = 1;
  start(MODE_SILENT, &o);
  cli *c = cli_new(65535);
  uint8_t body[16];
  size_t n = frame_msgs(body, (const uint8_t *)"x", 1, 1);
  for (int i = 0; i < 200 && !c->goaway && !c->eof; i++) {
    int32_t sid = request(c, "/t.T/Unary", NULL, body, n, 1 << 20, 0);
    nghttp2_session_send(c->ng);
    nghttp2_submit_rst_stream(c->ng, 0, sid, NGHTTP2_CANCEL);
    cli_pump(c, 1, NULL, 0);
  }
  cli_pump(c, 2000, got_goaway, 0);
  cr_assert(c->goaway);
  cr_assert_eq(c->goaway_code, NGHTTP2_ENHANCE_YOUR_CALM);
  cr_assert_str_eq(c->goaway_dbg, "too_many_resets");
  perfc__h2_stats st;
  perfc__h2_server_stats(srv, &st);
  cr_assert_eq(st.goaway_rapid_reset, 1);
  cr_assert_leq(st.streams_reset_by_client, 60);
  cli_free(c);
  stop();
}

Test(h2_grpc, ping_flood_gets_too_many_pings) {
  start(MODE_ECHO, NULL);
  cli *c = cli_new(65535);
  for (int i = 0; i < 5; i++) {
    nghttp2_submit_ping(c->ng, 0, NULL);
    cli_pump(c, 20, NULL, 0);
  }
  cli_pump(c, 2000, got_goaway, 0);
  cr_assert(c->goaway);
  cr_assert_eq(c->goaway_code, NGHTTP2_ENHANCE_YOUR_CALM);
  cr_assert_str_eq(c->goaway_dbg, "too_many_pings");
  cli_free(c);
  stop();
}

Test(h2_grpc, a_client_that_never_sends_its_preface_is_dropped) {
  perfc__h2_opts o;
  perfc__h2_opts_init(&o);
  o.loops = 1;
  o.handshake_timeout_ms = 200;
  start(MODE_ECHO, &o);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  cr_assert_eq(send(fd, "PRI * HTTP/2.0\r\n", 16, 0), 16);
  char buf[4096];
  int64_t t0 = perfc__h2_now_ms();
  ssize_t n = 1;
  while (n > 0 && perfc__h2_now_ms() - t0 < 5000) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 100) > 0)
      n = recv(fd, buf, sizeof buf, 0);
  }
  cr_assert_leq(n, 0, "closed by the server");
  perfc__h2_stats st;
  perfc__h2_server_stats(srv, &st);
  cr_assert_eq(st.closed_handshake_timeout, 1);
  close(fd);
  stop();
}

Test(h2_grpc, a_send_past_the_high_water_mark_would_block_until_writable) {
  perfc__h2_opts o;
  perfc__h2_opts_init(&o);
  o.loops = 1;
  o.stream_send_high_water_bytes = 256 * 1024;
  start(MODE_FLOOD, &o);
  cli *c = cli_new(65535); /* the default window: the server stalls fast */
  uint8_t body[16];
  size_t n = frame_msgs(body, (const uint8_t *)"go", 2, 1);
  c->read_paused = 1;
  int32_t sid = request(c, "/t.T/Unary", NULL, body, n, 1 << 20, 0);
  cli_pump(c, 300, NULL, 0);
  /* Queued up to the mark, then "would block": 4 x 64 KiB + 5-byte prefixes. */
  int efull = rget(&R.efull);
  cr_assert_eq(efull, 4, "sends before EFULL: %d", efull);
  cr_assert_eq(rget(&R.writable), 0);
  c->read_paused = 0;
  cli_pump(c, 5000, stream_closed, sid);
  cr_assert_geq(rget(&R.writable), 1);
  cr_assert_eq(res_of(c, sid)->grpc_status, 0);
  cr_assert_eq(res_of(c, sid)->data, 4 * (64 * 1024 + 5));
  cli_free(c);
  stop();
}

static int got_ping;
static int ping_seen(cli *c, int32_t sid) {
  (void)c;
  (void)sid;
  return got_ping;
}
static int c_frame_ping(nghttp2_session *ng, const nghttp2_frame *f, void *u) {
  if (f->hd.type == NGHTTP2_PING && !(f->hd.flags & NGHTTP2_FLAG_ACK))
    got_ping++;
  return c_frame(ng, f, u);
}

Test(h2_grpc, server_keepalive_pings_an_idle_connection) {
  perfc__h2_opts o;
  perfc__h2_opts_init(&o);
  o.loops = 1;
  o.keepalive_time_ms = 100;
  start(MODE_ECHO, &o);
  cli *c = cli_new(65535);
  nghttp2_session_del(c->ng);
  nghttp2_session_callbacks *cb;
  nghttp2_session_callbacks_new(&cb);
  nghttp2_session_callbacks_set_send_callback(cb, c_send);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, c_frame_ping);
  nghttp2_session_client_new(&c->ng, cb, c);
  nghttp2_session_callbacks_del(cb);
  nghttp2_submit_settings(c->ng, 0, NULL, 0);
  got_ping = 0;
  cli_pump(c, 3000, ping_seen, 0);
  cr_assert_geq(got_ping, 1);
  cr_assert_not(c->goaway); /* the ACK (automatic) keeps it open */
  cli_free(c);
  stop();
}

Test(h2_grpc, max_connection_age_sends_goaway_and_closes) {
  perfc__h2_opts o;
  perfc__h2_opts_init(&o);
  o.loops = 1;
  o.max_connection_age_enabled = true;
  o.max_connection_age_ms = 200;
  o.max_connection_age_grace_ms = 200;
  start(MODE_ECHO, &o);
  cli *c = cli_new(65535);
  cli_pump(c, 3000, got_goaway, 0);
  cr_assert(c->goaway);
  cr_assert_eq(c->goaway_code, NGHTTP2_NO_ERROR);
  cli_pump(c, 3000, NULL, 0); /* until EOF */
  cr_assert(c->eof);
  cli_free(c);
  stop();
}

Test(h2_grpc, max_connection_idle_sends_goaway) {
  perfc__h2_opts o;
  perfc__h2_opts_init(&o);
  o.loops = 1;
  o.max_connection_idle_enabled = true;
  o.max_connection_idle_ms = 200;
  start(MODE_ECHO, &o);
  cli *c = cli_new(65535);
  cli_pump(c, 3000, got_goaway, 0);
  cr_assert(c->goaway);
  cr_assert_eq(c->goaway_code, NGHTTP2_NO_ERROR);
  cli_free(c);
  stop();
}

/* The idle clock starts at the client's preface, not at the accept: a
 * client slow to start (a loaded machine, a sanitizer build) is not idle
 * before it has said anything; the handshake timeout bounds that time. */
Test(h2_grpc, max_connection_idle_counts_from_the_preface) {
  perfc__h2_opts o;
  perfc__h2_opts_init(&o);
  o.loops = 1;
  o.max_connection_idle_enabled = true;
  o.max_connection_idle_ms = 200;
  start(MODE_ECHO, &o);
  cli *c = cli_new(65535);
  /* Connected, silent for more than the idle limit. */
  struct timespec ts = {0, 600 * 1000000L};
  nanosleep(&ts, NULL);
  uint8_t body[16];
  size_t n = frame_msgs(body, (const uint8_t *)"hi", 2, 1);
  int32_t sid = request(c, "/t.T/Unary", NULL, body, n, 1 << 20, 0);
  cli_pump(c, 5000, stream_closed, sid);
  res *r = res_of(c, sid);
  cr_assert_eq(r->grpc_status, 0, "status %d", r->grpc_status);
  cr_assert_eq(r->data, n);
  cr_assert_not(c->goaway, "GOAWAY before the first request was answered");
  /* Idle after that call: GOAWAY, then the close. */
  cli_pump(c, 5000, NULL, 0);
  cr_assert(c->goaway);
  cr_assert(c->eof);
  cli_free(c);
  stop();
}

/* An idle drain crossing a request on the wire: the client sends its
 * request without having read the server's GOAWAY. The first GOAWAY is
 * only a notice (largest stream id) with a PING; the request, sent before
 * the ACK, is served, and only then the final GOAWAY and the close. */
Test(h2_grpc, a_request_crossing_the_idle_goaway_is_served) {
  perfc__h2_opts o;
  perfc__h2_opts_init(&o);
  o.loops = 1;
  o.max_connection_idle_enabled = true;
  o.max_connection_idle_ms = 200;
  start(MODE_ECHO, &o);
  cli *c = cli_new(65535);
  cli_pump(c, 50, NULL, 0); /* the preface and SETTINGS exchanged */
  cr_assert_not(c->goaway);
  /* Not reading while the idle limit passes: the server's GOAWAY waits
   * unread in our socket when the request leaves. */
  struct timespec ts = {0, 800 * 1000000L};
  nanosleep(&ts, NULL);
  uint8_t body[16];
  size_t n = frame_msgs(body, (const uint8_t *)"hi", 2, 1);
  int32_t sid = request(c, "/t.T/Unary", NULL, body, n, 1 << 20, 0);
  cr_assert_geq(sid, 1);
  nghttp2_session_send(c->ng); /* before reading anything */
  cli_pump(c, 5000, stream_closed, sid);
  res *r = res_of(c, sid);
  cr_assert_eq(r->grpc_status, 0, "status %d, RST %u", r->grpc_status, r->rst);
  cr_assert_eq(r->data, n);
  cr_assert(c->goaway);
  cr_assert_eq(c->goaway_code, NGHTTP2_NO_ERROR);
  cli_pump(c, 5000, NULL, 0); /* the final GOAWAY, then EOF */
  cr_assert(c->eof);
  cli_free(c);
  stop();
  cr_assert_eq(R.reasons[PERFC__H2_CLOSE_DONE], 1);
}

/* perfc_server_shutdown() waits for the calls in flight once the drain
 * has begun, then frees the worker pool: a stream that began after that
 * wait would run with no pool (a use after free TSan caught in make
 * check). So the drain returns only once every loop sent its GOAWAY, and
 * a request sent after it returns never becomes a call. */
static atomic_int busy_started;

static void busy_task(perfc__h2_loop *l, perfc__h2_task *t) {
  (void)l;
  (void)t;
  atomic_store(&busy_started, 1);
  struct timespec ts = {0, 300 * 1000000L};
  nanosleep(&ts, NULL);
}

Test(h2_grpc, no_stream_begins_once_the_drain_returned) {
  start(MODE_ECHO, NULL);
  cli *c = cli_new(65535);
  uint8_t body[16];
  size_t n = frame_msgs(body, (const uint8_t *)"hi", 2, 1);
  int32_t first = request(c, "/t.T/Unary", NULL, body, n, 1 << 20, 0);
  cli_pump(c, 5000, stream_closed, first);
  cr_assert_eq(res_of(c, first)->grpc_status, 0);
  /* The loop is busy when the drain is asked for: a drain that only
   * posted its task would return before the loop ran it. */
  static perfc__h2_task busy = {.run = busy_task};
  atomic_store(&busy_started, 0);
  perfc__h2_loop_post(srv->lcs[0].loop, &busy, true);
  while (!atomic_load(&busy_started))
    sched_yield();
  perfc__h2_server_drain(srv);
  /* Read after the drain's lock: the loop wrote it before it let go. */
  cr_assert(srv->lcs[0].draining, "the drain returned before its loop ran it");
  int32_t late = request(c, "/t.T/Unary", NULL, body, n, 1 << 20, 0);
  cr_assert_geq(late, 3);
  nghttp2_session_send(c->ng); /* before reading the GOAWAY */
  cli_pump(c, 5000, stream_closed, late);
  cr_assert(c->goaway);
  cr_assert_eq(c->goaway_code, NGHTTP2_NO_ERROR);
  cr_assert(res_of(c, late)->closed, "the late stream was never closed");
  cr_assert_neq(res_of(c, late)->grpc_status, 0, "the late stream was served");
  cr_assert_eq(rget(&R.calls), 1, "%d calls began", rget(&R.calls));
  cli_free(c);
  stop();
}

/* Max age with a call that never ends, and a client that never answers
 * the drain's PING: the close comes max_connection_age_grace after the
 * first GOAWAY, as grpc's does. The grace is armed from the timer's own
 * callback here, which must not re-arm past it. */
Test(h2_grpc, max_connection_age_grace_closes_a_call_that_never_ends) {
  perfc__h2_opts o;
  perfc__h2_opts_init(&o);
  o.loops = 1;
  o.max_connection_age_enabled = true;
  o.max_connection_age_ms = 200;
  o.max_connection_age_grace_ms = 300;
  /* The ACK wait (1 s) is longer than the grace. */
  start(MODE_SILENT, &o);
  cli *c = cli_new(65535);
  nghttp2_session_del(c->ng);
  nghttp2_session_callbacks *cb;
  nghttp2_session_callbacks_new(&cb);
  nghttp2_session_callbacks_set_send_callback(cb, c_send);
  nghttp2_session_callbacks_set_on_header_callback(cb, c_header);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, c_close);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, c_frame);
  nghttp2_option *opt;
  nghttp2_option_new(&opt);
  nghttp2_option_set_no_auto_ping_ack(opt, 1);
  nghttp2_session_client_new2(&c->ng, cb, c, opt);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cb);
  nghttp2_submit_settings(c->ng, 0, NULL, 0);
  uint8_t body[16];
  size_t n = frame_msgs(body, (const uint8_t *)"hi", 2, 1);
  int64_t t0 = perfc__h2_now_ms();
  int32_t sid = request(c, "/t.T/Unary", NULL, body, n, 1 << 20, 0);
  cli_pump(c, 10000, NULL, 0); /* until EOF */
  int64_t took = perfc__h2_now_ms() - t0;
  cr_assert(c->eof, "still open after %lld ms", (long long)took);
  cr_assert(c->goaway);
  /* age (±10 %) + grace = 0.48-0.52 s on an idle machine; the upper
   * bound only says the grace was kept, not missed until the timer's next
   * other check (the ACK wait, 1 s after the notice: 1.2 s). */
  cr_assert_geq(took, 480);
  cr_assert_lt(took, 1100);
  cr_assert_eq(res_of(c, sid)->grpc_status, -1, "the silent call never answered");
  cli_free(c);
  stop();
  cr_assert_eq(R.reasons[PERFC__H2_CLOSE_CONN], 1);
}

Test(h2_grpc, connections_past_max_connections_are_refused_with_goaway) {
  perfc__h2_opts o;
  perfc__h2_opts_init(&o);
  o.loops = 1;
  o.max_connections = 2;
  start(MODE_ECHO, &o);
  cli *a = cli_new(65535), *b = cli_new(65535);
  cli_pump(a, 100, NULL, 0);
  cli_pump(b, 100, NULL, 0);
  cli *c = cli_new(65535);
  cli_pump(c, 3000, got_goaway, 0);
  cr_assert(c->goaway);
  cr_assert_eq(c->goaway_code, NGHTTP2_REFUSED_STREAM);
  cr_assert_str_eq(c->goaway_dbg, "max_connections");
  cr_assert_not(a->goaway);
  perfc__h2_stats st;
  perfc__h2_server_stats(srv, &st);
  cr_assert_eq(st.conns_refused, 1);
  cli_free(c);
  cli_free(a);
  cli_free(b);
  stop();
}
