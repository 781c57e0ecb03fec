/*
 * perfc-load — a closed-loop unary gRPC load generator that varies the
 * request: a template message with one protobuf field set, per call, from a
 * range or a file of ids, spread over C connections with M streams in
 * flight on each, for N calls or D seconds.
 *
 * Room: bench/tools — a measuring tool, independent of perfc's runtime and
 * of the gRPC C core (raw HTTP/2 through libnghttp2's client side, gRPC
 * framing by hand), like perfc-h2-stream-load (h2_stream_load.c), whose
 * loop it follows: one thread on epoll, each ready socket read until empty,
 * freed stream slots refilled, and each connection's frames gathered into
 * one send().
 *
 * Why not h2load: h2load sends one body for every request, so a cache
 * benchmark of "GetUser from Redis" with concurrent calls asks for one key,
 * and single flight turns concurrent misses into one read: the benchmark
 * would measure the flight, not Redis. perfc-load gives call k the id at
 * position k mod (number of ids), so the calls in flight at any moment ask
 * for distinct ids as long as there are more ids than C x M.
 *
 * The request of call k is the template (a serialized protobuf message,
 * possibly empty) followed by field --field set to id k: protobuf's
 * last-one-wins rule makes it override any value the template has for that
 * field. --type int64 (varint, negative ids as 10 bytes), uint64, sint64
 * (zigzag) or string (the id's text as a length-delimited field; from a
 * file, the line as it is).
 *
 * Each call is checked: grpc-status from the trailers (or a Trailers-Only
 * response) is counted per code; a call that ends with no grpc-status
 * (reset stream, dead connection) counts as `no_status`; an OK call must
 * carry exactly one message (of --expect-len bytes when given; equal to
 * the request message with --check-echo), otherwise it counts as `bad`.
 *
 * Usage: perfc-load --target HOST:PORT --path /pkg.Service/Method
 *          [--template FILE | --template-hex HEX] [--field N]
 *          [--type int64|uint64|sint64|string] [--ids A-B | --ids-file FILE]
 *          [-c CONNS] [-m STREAMS] [-n CALLS | -D SECONDS]
 *          [--expect-len BYTES] [--check-echo] [--call-timeout-ms MS]
 *          [--max-seconds T] [-H 'name: value']...
 * Defaults: -c 1 -m 1 -n 10000, --call-timeout-ms 10000, --max-seconds 120
 * (with -D: D + 30). Bounded: no call is issued after -n or -D, and the run
 * stops after --max-seconds with an error whatever is still in flight.
 * Connections that receive a GOAWAY are replaced once their calls end.
 *
 * Output (one line of key=value): calls= ok= non_ok= no_status= bad=
 * status_<code>=... distinct_ids= seconds= rps= p50_us= p90_us= p99_us=
 * max_us= client_cpu_s= client_cpu_us_per_call= connections= streams=
 * reconnects=. Latency is from submitting the request to the stream's end,
 * percentiles from a histogram of 1.6 % buckets (fixed memory); max is
 * exact. distinct_ids is 0 when more than 2^28 ids are possible (a -D run
 * with a counter and no --ids): they are not tracked.
 * Exit 0 only when every call issued ended OK and intact; 1 otherwise; 2
 * for bad usage.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PROG "perfc-load"
/* Output a connection may hold unsent before no more frames are produced
 * for it: bounds the client's memory when the server reads slowly. */
#define OUT_BUDGET (1u << 20)
/* Windows granted to the server, large so the client never holds replies
 * back (as h2_stream_load.c). */
#define STREAM_WINDOW (1u << 20)
#define CONN_WINDOW (16u << 20)
/* A reply larger than this is counted bad and not kept (unary replies of
 * the services measured are well below). */
#define MAX_REPLY (4u << 20)
/* Distinct ids are tracked in a bitmap up to this many ids. */
#define MAX_TRACKED_IDS (1u << 28)
#define MAX_HEADERS 16

enum id_type { T_INT64, T_UINT64, T_SINT64, T_STRING };

typedef struct conn conn;

/* One call slot: a stream in flight on its connection. */
typedef struct slot {
  conn *c;
  int32_t id;
  int busy;
  uint64_t idx;     /* position in the id list of this call */
  uint8_t *req;     /* gRPC frame of the request */
  size_t rlen, roff;
  uint8_t *rep;     /* reply DATA as received */
  size_t replen, repcap;
  int overflow;     /* reply above MAX_REPLY */
  int status;       /* grpc-status, -1 until seen */
  char msg[128];    /* grpc-message */
  int64_t t0;
} slot;

struct conn {
  int fd;
  nghttp2_session *ng;
  uint8_t *out;
  size_t olen, ooff, ocap;
  int want_out, dead;
  int inflight;
  slot *slots; /* M of them */
};

/* ---- options and the request template --------------------------------- */

static const char *g_target, *g_path = NULL;
static uint8_t *g_tmpl;
static size_t g_tmpl_len;
static uint32_t g_field = 0; /* 0: no varying field (every body the same) */
static enum id_type g_type = T_INT64;
static int64_t g_lo = 1, g_hi = 1; /* --ids A-B */
static char **g_file_ids;          /* --ids-file lines */
static uint64_t g_nids = 1;
static long g_expect_len = -1;
static int g_check_echo;
static char g_timeout_hdr[32] = "10000m";
static const char *g_hname[MAX_HEADERS], *g_hval[MAX_HEADERS];
static int g_nh;

/* ---- results ------------------------------------------------------------ */

static uint64_t g_issued, g_done, g_ok, g_non_ok, g_no_status, g_bad;
static uint64_t g_codes[17];
/* Latency histogram, log-linear: below 64 ns one bucket per ns, above it
 * 64 buckets per power of two (at most 1/64 = 1.6 % wide), up to 2^40 ns;
 * fixed memory however long the run (-D 3600 at 100k calls/s would need
 * 2.9 GB as an array of samples). */
#define HIST_SUB 64
#define HIST_BUCKETS (HIST_SUB * 36)
static uint64_t g_hist[HIST_BUCKETS];
static uint64_t g_nlat, g_lat_max;
static uint8_t *g_seen; /* bitmap of ids sent */
static char g_first_err[200];

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void *xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (q == NULL) {
    fprintf(stderr, PROG ": out of memory\n");
    exit(1);
  }
  return q;
}

static size_t put_varint(uint8_t *p, uint64_t v) {
  size_t n = 0;
  do {
    p[n] = (uint8_t)(v & 0x7f);
    v >>= 7;
    if (v)
      p[n] |= 0x80;
    n++;
  } while (v);
  return n;
}

/* The message of the call at id position `idx` into `dst` (room: the
 * template plus 16 bytes of tag and varint, or the string's length). */
static size_t build_msg(uint8_t *dst, uint64_t idx) {
  size_t n = 0;
  memcpy(dst, g_tmpl, g_tmpl_len);
  n = g_tmpl_len;
  if (g_field == 0)
    return n;
  int wire = g_type == T_STRING ? 2 : 0;
  n += put_varint(dst + n, ((uint64_t)g_field << 3) | (uint64_t)wire);
  if (g_type == T_STRING) {
    char buf[24];
    const char *s;
    size_t len;
    if (g_file_ids != NULL) {
      s = g_file_ids[idx];
      len = strlen(s);
    } else {
      len = (size_t)snprintf(buf, sizeof buf, "%" PRId64, g_lo + (int64_t)idx);
      s = buf;
    }
    n += put_varint(dst + n, len);
    memcpy(dst + n, s, len);
    return n + len;
  }
  int64_t v = g_file_ids != NULL ? (int64_t)strtoll(g_file_ids[idx], NULL, 10)
                                 : g_lo + (int64_t)idx;
  uint64_t u = g_type == T_SINT64 ? ((uint64_t)v << 1) ^ (uint64_t)(v >> 63)
                                  : (uint64_t)v;
  return n + put_varint(dst + n, u);
}

static size_t max_msg_len(void) {
  size_t most = 16;
  if (g_type == T_STRING) {
    most = 24 + 10;
    for (uint64_t i = 0; g_file_ids != NULL && i < g_nids; i++) {
      size_t l = strlen(g_file_ids[i]) + 16;
      if (l > most)
        most = l;
    }
  }
  return g_tmpl_len + most;
}

/* ---- nghttp2 callbacks --------------------------------------------------- */

static ssize_t data_read(nghttp2_session *ng, int32_t sid, uint8_t *buf,
                         size_t length, uint32_t *flags,
                         nghttp2_data_source *src, void *user) {
  (void)ng;
  (void)sid;
  (void)user;
  slot *s = src->ptr;
  size_t n = s->rlen - s->roff;
  if (n > length)
    n = length;
  memcpy(buf, s->req + s->roff, n);
  s->roff += n;
  if (s->roff == s->rlen)
    *flags |= NGHTTP2_DATA_FLAG_EOF; /* the request's half-close */
  return (ssize_t)n;
}

static int on_data(nghttp2_session *ng, uint8_t flags, int32_t sid,
                   const uint8_t *data, size_t len, void *user) {
  (void)flags;
  (void)user;
  slot *s = nghttp2_session_get_stream_user_data(ng, sid);
  if (s == NULL || s->overflow)
    return 0;
  if (s->replen + len > MAX_REPLY) {
    s->overflow = 1;
    return 0;
  }
  if (s->replen + len > s->repcap) {
    size_t cap = s->repcap ? s->repcap : 256;
    while (cap < s->replen + len)
      cap *= 2;
    s->rep = xrealloc(s->rep, cap);
    s->repcap = cap;
  }
  memcpy(s->rep + s->replen, data, len);
  s->replen += len;
  return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f,
                     const uint8_t *name, size_t namelen, const uint8_t *value,
                     size_t valuelen, uint8_t flags, void *user) {
  (void)flags;
  (void)user;
  slot *s = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
  if (s == NULL)
    return 0;
  if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
    int v = 0, okv = valuelen > 0 && valuelen <= 3;
    for (size_t i = 0; okv && i < valuelen; i++) {
      if (!isdigit(value[i]))
        okv = 0;
      else
        v = v * 10 + (value[i] - '0');
    }
    s->status = okv ? v : 2; /* an unreadable status is UNKNOWN */
  } else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
    size_t n = valuelen < sizeof s->msg - 1 ? valuelen : sizeof s->msg - 1;
    memcpy(s->msg, value, n);
    s->msg[n] = '\0';
  }
  return 0;
}

/* Whether the OK reply in `s` is one intact message. */
static int reply_ok(const slot *s) {
  if (s->overflow || s->replen < 5 || s->rep[0] != 0)
    return 0;
  size_t mlen = ((size_t)s->rep[1] << 24) | ((size_t)s->rep[2] << 16) |
                ((size_t)s->rep[3] << 8) | s->rep[4];
  if (s->replen != 5 + mlen)
    return 0;
  if (g_expect_len >= 0 && mlen != (size_t)g_expect_len)
    return 0;
  if (g_check_echo &&
      (mlen != s->rlen - 5 || memcmp(s->rep + 5, s->req + 5, mlen) != 0))
    return 0;
  return 1;
}

static size_t hist_index(uint64_t v) {
  if (v < HIST_SUB)
    return (size_t)v;
  int msb = 63 - __builtin_clzll(v);
  int shift = msb - 6; /* v >> shift is in [64, 128) */
  size_t i = (size_t)(shift + 1) * HIST_SUB + (size_t)((v >> shift) - HIST_SUB);
  return i < HIST_BUCKETS ? i : HIST_BUCKETS - 1;
}

/* The middle of bucket i, in ns. */
static double hist_value(size_t i) {
  if (i < HIST_SUB)
    return (double)i;
  int shift = (int)(i / HIST_SUB) - 1;
  uint64_t lo = (uint64_t)(i % HIST_SUB + HIST_SUB) << shift;
  return (double)lo + (double)((uint64_t)1 << shift) / 2.0;
}

static void record(slot *s, uint32_t error_code) {
  int64_t t = now_ns();
  uint64_t lat = (uint64_t)(t - s->t0);
  g_done++;
  g_hist[hist_index(lat)]++;
  g_nlat++;
  if (lat > g_lat_max)
    g_lat_max = lat;
  if (s->status < 0) {
    g_no_status++;
    if (g_first_err[0] == '\0')
      snprintf(g_first_err, sizeof g_first_err,
               "a call ended without grpc-status (RST code %u)", error_code);
  } else if (s->status == 0) {
    g_codes[0]++;
    if (reply_ok(s)) {
      g_ok++;
    } else {
      g_bad++;
      if (g_first_err[0] == '\0')
        snprintf(g_first_err, sizeof g_first_err,
                 "an OK reply of %zu DATA bytes is not the expected message",
                 s->replen);
    }
  } else {
    g_non_ok++;
    g_codes[s->status <= 16 ? s->status : 2]++;
    if (g_first_err[0] == '\0')
      snprintf(g_first_err, sizeof g_first_err, "grpc-status %d: %s",
               s->status, s->msg);
  }
  s->busy = 0;
  s->c->inflight--;
}

static int on_close(nghttp2_session *ng, int32_t sid, uint32_t error_code,
                    void *user) {
  (void)user;
  slot *s = nghttp2_session_get_stream_user_data(ng, sid);
  if (s != NULL && s->busy)
    record(s, error_code);
  return 0;
}

/* ---- connections ------------------------------------------------------------ */

static nghttp2_session_callbacks *g_cbs;
static int g_ep;
static long g_streams = 1;
static uint64_t g_reconnects;

static int dial(const char *target) {
  char host[256];
  const char *colon = strrchr(target, ':');
  if (colon == NULL || (size_t)(colon - target) >= sizeof host)
    return -1;
  memcpy(host, target, (size_t)(colon - target));
  host[colon - target] = '\0';
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
  if (getaddrinfo(host, colon + 1, &hints, &ai) != 0)
    return -1;
  int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
    close(fd);
    fd = -1;
  }
  freeaddrinfo(ai);
  if (fd < 0)
    return -1;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (fcntl(fd, F_SETFL, O_NONBLOCK) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static int conn_open(conn *c) {
  c->fd = dial(g_target);
  if (c->fd < 0) {
    fprintf(stderr, PROG ": cannot connect to %s: %s\n", g_target,
            strerror(errno));
    return -1;
  }
  if (nghttp2_session_client_new(&c->ng, g_cbs, c) != 0)
    return -1;
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW},
  };
  nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, 2);
  nghttp2_session_set_local_window_size(c->ng, NGHTTP2_FLAG_NONE, 0,
                                        CONN_WINDOW);
  c->dead = 0;
  c->want_out = 0;
  c->olen = c->ooff = 0;
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
  return epoll_ctl(g_ep, EPOLL_CTL_ADD, c->fd, &ev);
}

/* Ends the connection; calls still in flight on it end with no status. */
static void conn_close(conn *c) {
  for (long i = 0; i < g_streams; i++)
    if (c->slots[i].busy)
      record(&c->slots[i], NGHTTP2_CONNECT_ERROR);
  if (c->ng != NULL)
    nghttp2_session_del(c->ng);
  c->ng = NULL;
  if (c->fd >= 0) {
    epoll_ctl(g_ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
  }
  c->fd = -1;
  c->dead = 1;
}

static int flush_conn(conn *c) {
  while (c->olen - c->ooff < OUT_BUDGET) {
    const uint8_t *p;
    ssize_t n = nghttp2_session_mem_send(c->ng, &p);
    if (n < 0)
      return -1;
    if (n == 0)
      break;
    if (c->olen + (size_t)n > c->ocap) {
      if (c->ooff > 0) {
        memmove(c->out, c->out + c->ooff, c->olen - c->ooff);
        c->olen -= c->ooff;
        c->ooff = 0;
      }
      if (c->olen + (size_t)n > c->ocap) {
        size_t cap = c->ocap ? c->ocap : 65536;
        while (cap < c->olen + (size_t)n)
          cap *= 2;
        c->out = xrealloc(c->out, cap);
        c->ocap = cap;
      }
    }
    memcpy(c->out + c->olen, p, (size_t)n);
    c->olen += (size_t)n;
  }
  while (c->ooff < c->olen) {
    ssize_t w = send(c->fd, c->out + c->ooff, c->olen - c->ooff, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN)
        break;
      return -1;
    }
    c->ooff += (size_t)w;
  }
  if (c->ooff == c->olen)
    c->ooff = c->olen = 0;
  return 0;
}

static int read_conn(conn *c) {
  static uint8_t buf[256 * 1024];
  for (;;) {
    ssize_t n = recv(c->fd, buf, sizeof buf, 0);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return errno == EAGAIN ? 0 : -1;
    }
    if (n == 0)
      return -1;
    if (nghttp2_session_mem_recv(c->ng, buf, (size_t)n) < 0)
      return -1;
    if ((size_t)n < sizeof buf)
      return 0;
  }
}

static nghttp2_nv g_nv[8 + MAX_HEADERS];
static size_t g_nnv;

static nghttp2_nv mknv(const char *n, const char *v) {
  nghttp2_nv nv = {(uint8_t *)n, (uint8_t *)v, strlen(n), strlen(v),
                   NGHTTP2_NV_FLAG_NONE};
  return nv;
}

/* Starts the next call on free slot `s`. */
static int submit(slot *s) {
  uint64_t idx = g_issued % g_nids;
  size_t m = build_msg(s->req + 5, idx);
  s->req[0] = 0;
  s->req[1] = (uint8_t)(m >> 24);
  s->req[2] = (uint8_t)(m >> 16);
  s->req[3] = (uint8_t)(m >> 8);
  s->req[4] = (uint8_t)m;
  s->rlen = 5 + m;
  s->roff = 0;
  s->replen = 0;
  s->overflow = 0;
  s->status = -1;
  s->msg[0] = '\0';
  s->idx = idx;
  s->t0 = now_ns();
  nghttp2_data_provider prd = {.source.ptr = s, .read_callback = data_read};
  s->id = nghttp2_submit_request(s->c->ng, NULL, g_nv, g_nnv, &prd, s);
  if (s->id < 0) {
    fprintf(stderr, PROG ": submit: %s\n", nghttp2_strerror(s->id));
    return -1;
  }
  if (g_seen != NULL)
    g_seen[idx >> 3] |= (uint8_t)(1u << (idx & 7));
  s->busy = 1;
  s->c->inflight++;
  g_issued++;
  return 0;
}

/* ---- options ----------------------------------------------------------------- */

static void usage(void) {
  fprintf(stderr,
          "usage: " PROG " --target HOST:PORT --path /pkg.Service/Method\n"
          "         [--template FILE | --template-hex HEX] [--field N]\n"
          "         [--type int64|uint64|sint64|string] [--ids A-B | --ids-file FILE]\n"
          "         [-c CONNS] [-m STREAMS] [-n CALLS | -D SECONDS]\n"
          "         [--expect-len BYTES] [--check-echo] [--call-timeout-ms MS]\n"
          "         [--max-seconds T] [-H 'name: value']...\n");
}

static int parse_long(const char *s, long lo, long hi, long *out) {
  char *end = NULL;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
    return -1;
  *out = v;
  return 0;
}

static int read_file(const char *path, uint8_t **out, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return -1;
  size_t cap = 4096, n = 0;
  uint8_t *b = xrealloc(NULL, cap);
  for (;;) {
    size_t r = fread(b + n, 1, cap - n, f);
    n += r;
    if (n < cap)
      break;
    if (cap >= (16u << 20)) {
      fclose(f);
      free(b);
      errno = EFBIG;
      return -1;
    }
    cap *= 2;
    b = xrealloc(b, cap);
  }
  int err = ferror(f);
  fclose(f);
  if (err) {
    free(b);
    return -1;
  }
  *out = b;
  *len = n;
  return 0;
}

/* --ids-file: one id per line (blank lines skipped); numeric types need
 * integers. */
static int load_ids(const char *path) {
  uint8_t *b;
  size_t len, cap = 0;
  if (read_file(path, &b, &len) != 0) {
    fprintf(stderr, PROG ": --ids-file %s: %s\n", path, strerror(errno));
    return -1;
  }
  g_nids = 0;
  size_t i = 0;
  unsigned long line = 0;
  while (i < len) {
    size_t j = i;
    while (j < len && b[j] != '\n')
      j++;
    size_t e = j;
    line++;
    if (e > i && b[e - 1] == '\r')
      e--;
    if (e > i) {
      char *s = strndup((const char *)b + i, e - i);
      if (s == NULL)
        return -1;
      if (g_type != T_STRING) {
        char *end;
        errno = 0;
        if (g_type == T_UINT64)
          (void)strtoull(s, &end, 10);
        else
          (void)strtoll(s, &end, 10);
        if (errno != 0 || *end != '\0' || end == s || (g_type == T_UINT64 && s[0] == '-')) {
          fprintf(stderr, PROG ": --ids-file %s:%lu: not an integer: %s\n",
                  path, line, s);
          free(s);
          free(b);
          return -1;
        }
      }
      if (g_nids == cap) {
        cap = cap ? cap * 2 : 1024;
        g_file_ids = xrealloc(g_file_ids, cap * sizeof *g_file_ids);
      }
      g_file_ids[g_nids++] = s;
    }
    i = j + 1;
  }
  free(b);
  if (g_nids == 0) {
    fprintf(stderr, PROG ": --ids-file %s: no ids\n", path);
    return -1;
  }
  return 0;
}

static int parse_hex(const char *h) {
  size_t n = strlen(h);
  if (n % 2 != 0)
    return -1;
  g_tmpl = xrealloc(NULL, n / 2);
  for (size_t i = 0; i < n / 2; i++) {
    unsigned v;
    if (!isxdigit((unsigned char)h[2 * i]) ||
        !isxdigit((unsigned char)h[2 * i + 1]) ||
        sscanf(h + 2 * i, "%2x", &v) != 1)
      return -1;
    g_tmpl[i] = (uint8_t)v;
  }
  g_tmpl_len = n / 2;
  return 0;
}

/* The p-quantile in µs: the bucket holding the call of rank
 * ceil(p x calls), never above the largest latency seen. */
static double pct_us(double p) {
  if (g_nlat == 0)
    return 0;
  uint64_t rank = (uint64_t)(p * (double)g_nlat + 0.999999), seen = 0;
  if (rank < 1)
    rank = 1;
  for (size_t i = 0; i < HIST_BUCKETS; i++) {
    seen += g_hist[i];
    if (seen >= rank) {
      double v = hist_value(i);
      return (v < (double)g_lat_max ? v : (double)g_lat_max) / 1000.0;
    }
  }
  return (double)g_lat_max / 1000.0;
}

int main(int argc, char **argv) {
  long conns = 1, calls = -1, duration = -1, max_seconds = -1, v;
  const char *ids = NULL, *ids_file = NULL, *tmpl_file = NULL, *tmpl_hex = NULL;
  enum {
    OPT_TARGET = 256, OPT_PATH, OPT_TEMPLATE, OPT_TEMPLATE_HEX, OPT_FIELD, OPT_TYPE,
    OPT_IDS, OPT_IDS_FILE, OPT_EXPECT_LEN, OPT_CHECK_ECHO, OPT_CALL_TIMEOUT, OPT_MAX_SECONDS
  };
  static const struct option longs[] = {
      {"target", required_argument, NULL, OPT_TARGET},
      {"path", required_argument, NULL, OPT_PATH},
      {"template", required_argument, NULL, OPT_TEMPLATE},
      {"template-hex", required_argument, NULL, OPT_TEMPLATE_HEX},
      {"field", required_argument, NULL, OPT_FIELD},
      {"type", required_argument, NULL, OPT_TYPE},
      {"ids", required_argument, NULL, OPT_IDS},
      {"ids-file", required_argument, NULL, OPT_IDS_FILE},
      {"expect-len", required_argument, NULL, OPT_EXPECT_LEN},
      {"check-echo", no_argument, NULL, OPT_CHECK_ECHO},
      {"call-timeout-ms", required_argument, NULL, OPT_CALL_TIMEOUT},
      {"max-seconds", required_argument, NULL, OPT_MAX_SECONDS},
      {"connections", required_argument, NULL, 'c'},
      {"streams", required_argument, NULL, 'm'},
      {"calls", required_argument, NULL, 'n'},
      {"duration", required_argument, NULL, 'D'},
      {"header", required_argument, NULL, 'H'},
      {NULL, 0, NULL, 0}};
  int o;
  while ((o = getopt_long(argc, argv, "c:m:n:D:H:", longs, NULL)) != -1) {
    int bad = 0;
    switch (o) {
    case OPT_TARGET: g_target = optarg; break;
    case OPT_PATH: g_path = optarg; bad = optarg[0] != '/'; break;
    case OPT_TEMPLATE: tmpl_file = optarg; break;
    case OPT_TEMPLATE_HEX: tmpl_hex = optarg; break;
    case OPT_FIELD:
      bad = parse_long(optarg, 1, 536870911, &v);
      g_field = (uint32_t)v;
      break;
    case OPT_TYPE:
      if (!strcmp(optarg, "int64")) g_type = T_INT64;
      else if (!strcmp(optarg, "uint64")) g_type = T_UINT64;
      else if (!strcmp(optarg, "sint64")) g_type = T_SINT64;
      else if (!strcmp(optarg, "string")) g_type = T_STRING;
      else bad = 1;
      break;
    case OPT_IDS: ids = optarg; break;
    case OPT_IDS_FILE: ids_file = optarg; break;
    case OPT_EXPECT_LEN: bad = parse_long(optarg, 0, MAX_REPLY, &g_expect_len); break;
    case OPT_CHECK_ECHO: g_check_echo = 1; break;
    case OPT_CALL_TIMEOUT:
      bad = parse_long(optarg, 1, 99999999, &v);
      snprintf(g_timeout_hdr, sizeof g_timeout_hdr, "%ldm", v);
      break;
    case OPT_MAX_SECONDS: bad = parse_long(optarg, 1, 86400, &max_seconds); break;
    case 'c': bad = parse_long(optarg, 1, 1024, &conns); break;
    case 'm': bad = parse_long(optarg, 1, 1024, &g_streams); break;
    case 'n': bad = parse_long(optarg, 1, 1000000000L, &calls); break;
    case 'D': bad = parse_long(optarg, 1, 3600, &duration); break;
    case 'H': {
      const char *colon = strchr(optarg + (optarg[0] == ':'), ':');
      if (colon == NULL || g_nh == MAX_HEADERS || colon == optarg) {
        bad = 1;
        break;
      }
      const char *val = colon + 1;
      while (*val == ' ')
        val++;
      char *name = strndup(optarg, (size_t)(colon - optarg));
      for (char *p = name; p && *p; p++)
        *p = (char)tolower((unsigned char)*p);
      g_hname[g_nh] = name;
      g_hval[g_nh++] = val;
      break;
    }
    default: usage(); return 2;
    }
    if (bad) {
      fprintf(stderr, PROG ": bad value for %s: %s\n", argv[optind - 1], optarg);
      usage();
      return 2;
    }
  }
  if (optind != argc || g_target == NULL || g_path == NULL) {
    usage();
    return 2;
  }
  if (calls > 0 && duration > 0) {
    fprintf(stderr, PROG ": -n and -D exclude each other\n");
    return 2;
  }
  if (calls < 0 && duration < 0)
    calls = 10000;
  if (max_seconds < 0)
    max_seconds = duration > 0 ? duration + 30 : 120;
  if ((ids || ids_file) && g_field == 0) {
    fprintf(stderr, PROG ": --ids/--ids-file need --field\n");
    return 2;
  }
  if (ids && ids_file) {
    fprintf(stderr, PROG ": --ids and --ids-file exclude each other\n");
    return 2;
  }
  if (tmpl_file && tmpl_hex) {
    fprintf(stderr, PROG ": --template and --template-hex exclude each other\n");
    return 2;
  }
  if (tmpl_file && read_file(tmpl_file, &g_tmpl, &g_tmpl_len) != 0) {
    fprintf(stderr, PROG ": --template %s: %s\n", tmpl_file, strerror(errno));
    return 2;
  }
  if (tmpl_hex && parse_hex(tmpl_hex) != 0) {
    fprintf(stderr, PROG ": --template-hex: not an even number of hex digits\n");
    return 2;
  }
  if (g_tmpl == NULL)
    g_tmpl = xrealloc(NULL, 1);
  if (ids) {
    char *end;
    errno = 0;
    g_lo = strtoll(ids, &end, 10);
    /* A-B, or a single id; the '-' separator follows the first number. */
    if (errno == 0 && end != ids && *end == '-' && end[1] != '\0') {
      const char *b = end + 1;
      g_hi = strtoll(b, &end, 10);
    } else {
      g_hi = g_lo;
    }
    if (errno != 0 || *end != '\0' || g_hi < g_lo ||
        (g_type == T_UINT64 && g_lo < 0) ||
        (uint64_t)(g_hi - g_lo) >= 1000000000ull) {
      fprintf(stderr, PROG ": --ids %s: want A-B with A <= B, at most 1e9 ids\n", ids);
      return 2;
    }
    g_nids = (uint64_t)(g_hi - g_lo) + 1;
  } else if (ids_file) {
    if (load_ids(ids_file) != 0)
      return 2;
  } else if (g_field != 0) {
    /* A counter: call k sends k + 1. */
    g_lo = 1;
    g_nids = calls > 0 ? (uint64_t)calls : 1000000000ull;
  }
  if (g_nids <= MAX_TRACKED_IDS)
    g_seen = calloc((size_t)((g_nids + 7) / 8), 1);

  g_nv[g_nnv++] = mknv(":method", "POST");
  g_nv[g_nnv++] = mknv(":scheme", "http");
  g_nv[g_nnv++] = mknv(":path", g_path);
  g_nv[g_nnv++] = mknv(":authority", g_target);
  g_nv[g_nnv++] = mknv("content-type", "application/grpc");
  g_nv[g_nnv++] = mknv("te", "trailers");
  g_nv[g_nnv++] = mknv("grpc-timeout", g_timeout_hdr);
  g_nv[g_nnv++] = mknv("user-agent", PROG);
  for (int i = 0; i < g_nh; i++)
    g_nv[g_nnv++] = mknv(g_hname[i], g_hval[i]);

  nghttp2_session_callbacks_new(&g_cbs);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(g_cbs, on_data);
  nghttp2_session_callbacks_set_on_header_callback(g_cbs, on_header);
  nghttp2_session_callbacks_set_on_stream_close_callback(g_cbs, on_close);
  g_ep = epoll_create1(EPOLL_CLOEXEC);
  conn *cs = calloc((size_t)conns, sizeof *cs);
  if (g_ep < 0 || cs == NULL)
    return 1;
  size_t req_cap = 5 + max_msg_len();
  for (long i = 0; i < conns; i++) {
    cs[i].fd = -1;
    cs[i].slots = calloc((size_t)g_streams, sizeof(slot));
    if (cs[i].slots == NULL)
      return 1;
    for (long k = 0; k < g_streams; k++) {
      cs[i].slots[k].c = &cs[i];
      cs[i].slots[k].req = xrealloc(NULL, req_cap);
    }
    if (conn_open(&cs[i]) != 0)
      return 1;
  }

  double c0 = cpu_seconds();
  int64_t t0 = now_ns();
  int64_t stop_at = t0 + (int64_t)max_seconds * 1000000000;
  int64_t issue_until = duration > 0 ? t0 + (int64_t)duration * 1000000000 : INT64_MAX;
  int timed_out = 0, failed_setup = 0;
  struct epoll_event evs[64];
  for (;;) {
    int64_t now = now_ns();
    int more = (calls < 0 || g_issued < (uint64_t)calls) && now < issue_until;
    long inflight = 0, live = 0;
    /* Refill every free slot (closed loop), replace connections the server
     * is draining once their calls are done, then one write each. */
    for (long i = 0; i < conns; i++) {
      conn *c = &cs[i];
      if (!c->dead && c->ng != NULL && more &&
          !nghttp2_session_check_request_allowed(c->ng) && c->inflight == 0) {
        conn_close(c);
        g_reconnects++;
        if (conn_open(c) != 0) {
          failed_setup = 1;
          c->dead = 1;
        }
      }
      if (c->dead)
        continue;
      for (long k = 0; more && k < g_streams; k++) {
        slot *s = &c->slots[k];
        if (s->busy || !nghttp2_session_check_request_allowed(c->ng))
          continue;
        if (submit(s) != 0) {
          conn_close(c);
          break;
        }
        more = (calls < 0 || g_issued < (uint64_t)calls);
      }
      if (c->dead)
        continue;
      if (flush_conn(c) != 0) {
        conn_close(c);
        continue;
      }
      int want = c->olen > c->ooff;
      if (want != c->want_out) {
        struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0),
                                 .data.ptr = c};
        epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_out = want;
      }
      inflight += c->inflight;
      live++;
    }
    if (inflight == 0 && (!more || live == 0))
      break;
    if (now >= stop_at) {
      timed_out = 1;
      break;
    }
    int n = epoll_wait(g_ep, evs, 64, 100);
    for (int k = 0; k < n; k++) {
      conn *c = evs[k].data.ptr;
      if (c->dead)
        continue;
      if ((evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) && read_conn(c) != 0)
        conn_close(c);
    }
  }
  int64_t t1 = now_ns();
  double c1 = cpu_seconds();
  for (long i = 0; i < conns; i++)
    if (!cs[i].dead)
      conn_close(&cs[i]); /* calls still in flight (time out) end here */

  uint64_t distinct = 0;
  if (g_seen != NULL)
    for (uint64_t i = 0; i < (g_nids + 7) / 8; i++)
      distinct += (uint64_t)__builtin_popcount(g_seen[i]);
  double secs = (double)(t1 - t0) / 1e9, cpu = c1 - c0;
  if (timed_out)
    fprintf(stderr, PROG ": stopped after %ld s with calls in flight\n", max_seconds);
  if (g_first_err[0] != '\0')
    fprintf(stderr, PROG ": first failure: %s\n", g_first_err);
  printf("calls=%" PRIu64 " ok=%" PRIu64 " non_ok=%" PRIu64 " no_status=%" PRIu64
         " bad=%" PRIu64,
         g_done, g_ok, g_non_ok, g_no_status, g_bad);
  for (int k = 0; k <= 16; k++)
    if (g_codes[k])
      printf(" status_%d=%" PRIu64, k, g_codes[k]);
  printf(" distinct_ids=%" PRIu64 " seconds=%.3f rps=%.0f p50_us=%.1f p90_us=%.1f"
         " p99_us=%.1f max_us=%.1f client_cpu_s=%.3f client_cpu_us_per_call=%.3f"
         " connections=%ld streams=%ld reconnects=%" PRIu64 "\n",
         g_seen != NULL ? distinct : 0, secs, secs > 0 ? (double)g_done / secs : 0,
         pct_us(0.50), pct_us(0.90), pct_us(0.99),
         (double)g_lat_max / 1000.0, cpu,
         g_done ? cpu * 1e6 / (double)g_done : 0.0, conns, g_streams,
         g_reconnects);
  int ok = !timed_out && !failed_setup && g_ok == g_done && g_done == g_issued &&
           (calls < 0 || g_done == (uint64_t)calls);
  for (long i = 0; i < conns; i++) {
    for (long k = 0; k < g_streams; k++) {
      free(cs[i].slots[k].req);
      free(cs[i].slots[k].rep);
    }
    free(cs[i].slots);
    free(cs[i].out);
  }
  for (uint64_t i = 0; g_file_ids != NULL && i < g_nids; i++)
    free(g_file_ids[i]);
  for (int i = 0; i < g_nh; i++)
    free((char *)g_hname[i]);
  free(g_file_ids);
  free(cs);
  free(g_seen);
  free(g_tmpl);
  nghttp2_session_callbacks_del(g_cbs);
  close(g_ep);
  return ok ? 0 : 1;
}
