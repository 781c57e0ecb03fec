/*
 * perfc-h2-stream-load — bidi streaming load on nghttp2's client side: S
 * streams to bench.v1.Echo/Stream over C connections, each stream with a
 * window of W messages in flight, all driven by one thread on epoll.
 *
 * Room: bench/tools — a measuring tool, independent of perfc's runtime and
 * of the gRPC C core (raw HTTP/2 through libnghttp2, gRPC framing by hand),
 * so it treats every server alike and costs little per message: the old
 * client (perfc-stream-load, perfc's client on the C core) spent 3-7 µs of
 * its own CPU per message, as much as the servers it measured.
 *
 * Why it is cheap: one thread, no locks, no hand-offs. Each loop iteration
 * reads every ready socket until it is empty (nghttp2_session_mem_recv),
 * which frees window slots as echoes are counted; then every stream with
 * room tops its window up (messages appended to the stream's output, one
 * nghttp2 DATA source per stream), and each connection's frames are
 * gathered (nghttp2_session_mem_send) and leave in one send(). So many
 * messages share each system call both ways, as on the server.
 *
 * Every echo is checked: the request's payload carries the stream's
 * message number in its first 8 bytes (the rest is 'x'), so each echoed
 * message must be byte for byte the request sent in that position: a
 * lost, duplicated, reordered or altered message is counted `bad`. A
 * stream must also end with grpc-status 0 after exactly --count echoes.
 *
 * Usage: perfc-h2-stream-load --target HOST:PORT [--streams S] [--window W]
 *                             [--count N] [--payload BYTES] [--connections C]
 *                             [--burst B] [--max-seconds T]
 * --count is messages per stream (default 100000). --burst B waits until B
 * window slots are free and then writes B messages at once (as grpc-go's
 * writer and perfc-stream-load --burst do); 1 (the default) tops the window
 * up whenever a slot is free. Bounded: the calls carry grpc-timeout and the
 * run stops after --max-seconds (default 120) with an error.
 *
 * Output (one line, the same keys as perfc-stream-load so bench/run-streaming
 * reads either): streams= ... sent= received= bad= failed_streams= seconds=
 * msgs_per_s= client_cpu_s= client_cpu_us_per_msg=. Exit 0 only when every
 * stream received all its echoes intact and ended with status 0.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
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

#define PATH "/bench.v1.Echo/Stream"
/* Output a connection may hold unsent before no more frames are produced
 * for it (the server reads slowly): bounds the client's memory. */
#define OUT_BUDGET (1u << 20)
/* Flow-control windows we grant the server: large, so the client is never
 * the one holding echoes back (1 MiB per stream, 16 MiB per connection,
 * as perfc's server grants clients). */
#define STREAM_WINDOW (1u << 20)
#define CONN_WINDOW (16u << 20)

typedef struct conn conn;

typedef struct stream {
  conn *c;
  int32_t id;
  long count, sent, received, bad;
  /* Request frames queued for nghttp2's data source. */
  uint8_t *out;
  size_t olen, ooff, ocap;
  int deferred, eof_sent;
  /* The echo being reassembled (one frame: prefix + message). */
  uint8_t *rbuf;
  size_t rgot;
  int status;    /* grpc-status from the trailers, -1 until seen */
  int closed;    /* nghttp2 closed the stream */
  uint32_t rst;  /* its error code */
  char msg[128]; /* grpc-message, for the report */
} stream;

struct conn {
  int fd;
  nghttp2_session *ng;
  uint8_t *out;
  size_t olen, ooff, ocap;
  int want_out; /* EPOLLOUT registered */
  int dead;
};

static long g_window = 32, g_burst = 1, g_payload = 64;
static size_t g_frame;      /* 5-byte prefix + encoded EchoRequest */
static size_t g_seq_off;    /* where the message number sits in a frame */
static size_t g_seq_len;    /* its bytes (8, or fewer for tiny payloads) */
static uint8_t *g_template; /* one frame, message number 0 */

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
  void *q = realloc(p, n);
  if (q == NULL) {
    fprintf(stderr, "perfc-h2-stream-load: out of memory\n");
    exit(1);
  }
  return q;
}

static size_t varint(uint8_t *p, uint64_t v) {
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

/* The frame of message `seq`: EchoRequest{payload} = field 1, wire type 2;
 * EchoResponse has the same shape, so an echo is the same bytes. */
static void build_template(void) {
  uint8_t hdr[16];
  hdr[0] = 0x0a;
  size_t h = 1 + varint(hdr + 1, (uint64_t)g_payload);
  size_t msg = h + (size_t)g_payload;
  g_frame = 5 + msg;
  g_template = xrealloc(NULL, g_frame);
  g_template[0] = 0;
  g_template[1] = (uint8_t)(msg >> 24);
  g_template[2] = (uint8_t)(msg >> 16);
  g_template[3] = (uint8_t)(msg >> 8);
  g_template[4] = (uint8_t)msg;
  memcpy(g_template + 5, hdr, h);
  memset(g_template + 5 + h, 'x', (size_t)g_payload);
  g_seq_off = 5 + h;
  g_seq_len = g_payload < 8 ? (size_t)g_payload : 8;
}

static void put_seq(uint8_t *frame, uint64_t seq) {
  for (size_t i = 0; i < g_seq_len; i++)
    frame[g_seq_off + i] = (uint8_t)(seq >> (8 * i));
}

/* Whether `frame` is exactly the frame of message `seq`. */
static int frame_ok(const uint8_t *frame, uint64_t seq) {
  for (size_t i = 0; i < g_seq_len; i++)
    if (frame[g_seq_off + i] != (uint8_t)(seq >> (8 * i)))
      return 0;
  return memcmp(frame, g_template, g_seq_off) == 0 &&
         memcmp(frame + g_seq_off + g_seq_len, g_template + g_seq_off + g_seq_len,
                g_frame - g_seq_off - g_seq_len) == 0;
}

/* ---- nghttp2 callbacks ---------------------------------------------------- */

static ssize_t data_read(nghttp2_session *ng, int32_t sid, uint8_t *buf,
                         size_t length, uint32_t *flags,
                         nghttp2_data_source *src, void *user) {
  (void)ng;
  (void)sid;
  (void)user;
  stream *s = src->ptr;
  size_t avail = s->olen - s->ooff;
  if (avail == 0) {
    if (s->sent == s->count) {
      *flags |= NGHTTP2_DATA_FLAG_EOF; /* our half-close */
      s->eof_sent = 1;
      return 0;
    }
    s->deferred = 1;
    return NGHTTP2_ERR_DEFERRED;
  }
  size_t n = avail < length ? avail : length;
  memcpy(buf, s->out + s->ooff, n);
  s->ooff += n;
  if (s->ooff == s->olen) {
    s->ooff = s->olen = 0;
    if (s->sent == s->count) {
      *flags |= NGHTTP2_DATA_FLAG_EOF;
      s->eof_sent = 1;
    }
  }
  return (ssize_t)n;
}

static int on_data(nghttp2_session *ng, uint8_t flags, int32_t sid,
                   const uint8_t *data, size_t len, void *user) {
  (void)flags;
  (void)user;
  stream *s = nghttp2_session_get_stream_user_data(ng, sid);
  if (s == NULL)
    return 0;
  while (len > 0) {
    size_t t = g_frame - s->rgot < len ? g_frame - s->rgot : len;
    memcpy(s->rbuf + s->rgot, data, t);
    s->rgot += t;
    data += t;
    len -= t;
    if (s->rgot == g_frame) {
      if (!frame_ok(s->rbuf, (uint64_t)s->received))
        s->bad++;
      s->received++;
      s->rgot = 0;
    }
  }
  return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f,
                     const uint8_t *name, size_t namelen, const uint8_t *value,
                     size_t valuelen, uint8_t flags, void *user) {
  (void)flags;
  (void)user;
  stream *s = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
  if (s == NULL)
    return 0;
  if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
    char v[16];
    size_t n = valuelen < sizeof v - 1 ? valuelen : sizeof v - 1;
    memcpy(v, value, n);
    v[n] = '\0';
    s->status = atoi(v);
  } else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
    size_t n = valuelen < sizeof s->msg - 1 ? valuelen : sizeof s->msg - 1;
    memcpy(s->msg, value, n);
    s->msg[n] = '\0';
  }
  return 0;
}

static int on_close(nghttp2_session *ng, int32_t sid, uint32_t error_code,
                    void *user) {
  (void)user;
  stream *s = nghttp2_session_get_stream_user_data(ng, sid);
  if (s != NULL) {
    s->closed = 1;
    s->rst = error_code;
  }
  return 0;
}

/* ---- connections ---------------------------------------------------------- */

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

/* Gathers what nghttp2 has for `c` into its output and sends it, in one
 * send() when the socket takes it all. Returns -1 when the connection died. */
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

/* Reads until the socket is empty, feeding nghttp2. -1: EOF or error. */
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
      return 0; /* a short read: the socket is empty */
  }
}

/* Tops the stream's window up (with --burst, only once a burst fits). */
static void top_up(stream *s) {
  if (s->closed || s->sent == s->count)
    return;
  long room = g_window - (s->sent - s->received);
  long left = s->count - s->sent;
  long n = room < left ? room : left;
  if (n <= 0 || (n < g_burst && n < left))
    return;
  size_t need = s->olen + (size_t)n * g_frame;
  if (need > s->ocap) {
    if (s->ooff > 0) {
      memmove(s->out, s->out + s->ooff, s->olen - s->ooff);
      s->olen -= s->ooff;
      s->ooff = 0;
      need = s->olen + (size_t)n * g_frame;
    }
    if (need > s->ocap) {
      s->out = xrealloc(s->out, need);
      s->ocap = need;
    }
  }
  for (long k = 0; k < n; k++) {
    uint8_t *f = s->out + s->olen;
    memcpy(f, g_template, g_frame);
    put_seq(f, (uint64_t)s->sent);
    s->olen += g_frame;
    s->sent++;
  }
  if (s->deferred) {
    s->deferred = 0;
    nghttp2_session_resume_data(s->c->ng, s->id);
  }
}

static void usage(void) {
  fprintf(stderr,
          "usage: perfc-h2-stream-load --target HOST:PORT [--streams S] "
          "[--window W] [--count N] [--payload BYTES] [--connections C] "
          "[--burst B] [--max-seconds T]\n");
}

int main(int argc, char **argv) {
  const char *target = NULL;
  long streams = 1, count = 100000, connections = 1, max_seconds = 120;
  for (int i = 1; i < argc; i += 2) {
    if (i + 1 >= argc) {
      usage();
      return 2;
    }
    char *end = NULL;
    long v = strtol(argv[i + 1], &end, 10);
    int num = *end == '\0' && v > 0;
    if (!strcmp(argv[i], "--target"))
      target = argv[i + 1];
    else if (!strcmp(argv[i], "--streams") && num && v <= 4096)
      streams = v;
    else if (!strcmp(argv[i], "--window") && num && v <= 65536)
      g_window = v;
    else if (!strcmp(argv[i], "--count") && num)
      count = v;
    else if (!strcmp(argv[i], "--payload") && num && v <= (1 << 20))
      g_payload = v;
    else if (!strcmp(argv[i], "--connections") && num && v <= 1024)
      connections = v;
    else if (!strcmp(argv[i], "--burst") && num && v <= 65536)
      g_burst = v;
    else if (!strcmp(argv[i], "--max-seconds") && num && v <= 3600)
      max_seconds = v;
    else {
      fprintf(stderr, "perfc-h2-stream-load: bad option %s %s\n", argv[i],
              argv[i + 1]);
      usage();
      return 2;
    }
  }
  if (target == NULL) {
    usage();
    return 2;
  }
  if (g_burst > g_window)
    g_burst = g_window;
  if (connections > streams)
    connections = streams;
  build_template();

  nghttp2_session_callbacks *cbs;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
  nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_close);

  int ep = epoll_create1(EPOLL_CLOEXEC);
  conn *cs = calloc((size_t)connections, sizeof *cs);
  stream *ss = calloc((size_t)streams, sizeof *ss);
  if (ep < 0 || cs == NULL || ss == NULL)
    return 1;
  for (long i = 0; i < connections; i++) {
    conn *c = &cs[i];
    c->fd = dial(target);
    if (c->fd < 0) {
      fprintf(stderr, "perfc-h2-stream-load: cannot connect to %s: %s\n",
              target, strerror(errno));
      return 1;
    }
    if (nghttp2_session_client_new(&c->ng, cbs, c) != 0)
      return 1;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW},
    };
    nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, 2);
    nghttp2_session_set_local_window_size(c->ng, NGHTTP2_FLAG_NONE, 0,
                                          CONN_WINDOW);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
  }

  char authority[300];
  snprintf(authority, sizeof authority, "%s", target);
  char tmo[32];
  snprintf(tmo, sizeof tmo, "%ldS", max_seconds);
#define HDR(n, v)                                                              \
  {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v),                   \
   NGHTTP2_NV_FLAG_NONE}
  nghttp2_nv nv[] = {
      HDR(":method", "POST"),
      HDR(":scheme", "http"),
      HDR(":path", PATH),
      HDR(":authority", authority),
      HDR("content-type", "application/grpc"),
      HDR("te", "trailers"),
      HDR("grpc-timeout", tmo),
      HDR("user-agent", "perfc-h2-stream-load"),
  };
  double c0 = cpu_seconds();
  int64_t t0 = now_ns();
  int64_t stop_at = t0 + (int64_t)max_seconds * 1000000000;
  for (long i = 0; i < streams; i++) {
    stream *s = &ss[i];
    s->c = &cs[i % connections];
    s->count = count;
    s->status = -1;
    s->rbuf = xrealloc(NULL, g_frame);
    top_up(s); /* the first window (or burst) goes with the headers */
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = data_read};
    s->id = nghttp2_submit_request(s->c->ng, NULL, nv, sizeof nv / sizeof nv[0],
                                   &prd, s);
    if (s->id < 0) {
      fprintf(stderr, "perfc-h2-stream-load: submit: %s\n",
              nghttp2_strerror(s->id));
      return 1;
    }
  }
  long open = streams;
  int timed_out = 0;
  struct epoll_event evs[64];
  for (long i = 0; i < connections; i++)
    if (flush_conn(&cs[i]) != 0)
      cs[i].dead = 1;
  while (open > 0) {
    int64_t now = now_ns();
    if (now >= stop_at) {
      timed_out = 1;
      break;
    }
    int n = epoll_wait(ep, evs, 64, 1000);
    for (int k = 0; k < n; k++) {
      conn *c = evs[k].data.ptr;
      if (c->dead)
        continue;
      if ((evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) && read_conn(c) != 0)
        c->dead = 1;
    }
    /* Echoes counted above freed window slots: refill, then one write per
     * connection for everything produced in this iteration. */
    open = 0;
    for (long i = 0; i < streams; i++) {
      stream *s = &ss[i];
      if (s->c->dead && !s->closed)
        s->closed = 1, s->rst = NGHTTP2_CONNECT_ERROR;
      if (!s->closed) {
        top_up(s);
        open++;
      }
    }
    for (long i = 0; i < connections; i++) {
      conn *c = &cs[i];
      if (c->dead)
        continue;
      if (flush_conn(c) != 0) {
        c->dead = 1;
        continue;
      }
      int want = c->olen > c->ooff;
      if (want != c->want_out) {
        struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0),
                                 .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_out = want;
      }
    }
  }
  int64_t t1 = now_ns();
  double c1 = cpu_seconds();

  long sent = 0, received = 0, bad = 0, failed = 0;
  for (long i = 0; i < streams; i++) {
    stream *s = &ss[i];
    if (!s->closed || s->status != 0 || s->rst != 0 || s->received != count ||
        s->bad != 0) {
      failed++;
      fprintf(stderr,
              "perfc-h2-stream-load: stream %ld: %s, grpc-status %d (%s), "
              "RST code %u, sent %ld received %ld bad %ld\n",
              i, s->closed ? "closed" : "still open", s->status, s->msg,
              s->rst, s->sent, s->received, s->bad);
    }
    sent += s->sent;
    received += s->received;
    bad += s->bad;
    free(s->out);
    free(s->rbuf);
  }
  if (timed_out)
    fprintf(stderr, "perfc-h2-stream-load: stopped after %ld s\n", max_seconds);
  double secs = (double)(t1 - t0) / 1e9;
  double cpu = c1 - c0;
  printf("streams=%ld connections=%ld burst=%ld window=%ld payload=%ld sent=%ld "
         "received=%ld bad=%ld failed_streams=%ld seconds=%.3f "
         "msgs_per_s=%.0f client_cpu_s=%.3f client_cpu_us_per_msg=%.3f\n",
         streams, connections, g_burst, g_window, g_payload, sent, received,
         bad, failed, secs, received / secs, cpu,
         received ? cpu * 1e6 / received : 0.0);
  for (long i = 0; i < connections; i++) {
    nghttp2_session_del(cs[i].ng);
    close(cs[i].fd);
    free(cs[i].out);
  }
  nghttp2_session_callbacks_del(cbs);
  close(ep);
  free(cs);
  free(ss);
  free(g_template);
  return failed == 0 && bad == 0 && !timed_out ? 0 : 1;
}
