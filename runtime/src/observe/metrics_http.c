/*
 * metrics_http.c — serves /metrics and /healthz over libmicrohttpd on an
 * address of its own, apart from the gRPC port, as Prometheus exporters do.
 *
 * Room: runtime/src/observe (metrics module). HTTP parsing and connection
 * handling are libmicrohttpd's; this file binds the socket (so it can
 * report the port and a clean PERFC_EBIND), runs MHD's epoll loop on a
 * thread of its own, decides which connections may stay, and answers.
 *
 * Why perfc drives the loop and admits connections itself: with MHD's
 * internal thread, its connection limit and a listen backlog, 129 sockets
 * that each sent half a request (64 accepted, the limit, plus 65 queued in
 * a backlog of 64) locked every scraper out until MHD's 30 s idle timeout
 * closed them, and then handed the freed slots to the next queued ones; a
 * client sending one byte before each timeout could keep them for ever.
 * MHD 0.9.75 has only an idle timeout (reset by every byte) and a per-IP
 * limit that refuses new connections, which locks out a Prometheus on the
 * same address as the attacker (a sidecar, loopback). Here instead:
 *   - every connection gets a deadline for a complete request header,
 *     counted from accept or from its previous response, that trickling
 *     bytes does not extend: past it, the socket is shut down and MHD
 *     reaps it;
 *   - a connection beyond the total or per-IP bound closes the oldest
 *     connection (of that IP, or any) still waiting for its header; only
 *     if there is none (all are being answered) is the newcomer closed. A
 * scraper sends its header at once and is never the one waiting, so holding
 * slots with unfinished requests cannot keep it out, from any address. All of
 * this runs on the one loop thread (MHD's callbacks included), so the
 * connection table needs no lock, and a socket is shut down only while MHD
 * still owns it (it closes descriptors on this thread, after
 * MHD_CONNECTION_NOTIFY_CLOSED removed our record).
 */
#include "perfc/metrics_http.h"
#include "core/thread_internal.h"
#include "perfc/log.h"
#include "perfc/tracing.h"

#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Prometheus' scraper negotiates this exact type for the text format. */
#define CONTENT_TYPE_0_0_4 "text/plain; version=0.0.4; charset=utf-8"
#define CONTENT_TYPE_OPENMETRICS                                               \
  "application/openmetrics-text; version=1.0.0; charset=utf-8"
/* Slack over max_connections in the table (and MHD's own limit):
 * connections already shut down but not yet reaped by MHD still occupy
 * MHD's slots until its next pass. */
#define SLACK_FACTOR 2

enum conn_state {
  C_FREE = 0,   /* table slot unused */
  C_WAITING,    /* waiting for a complete request header */
  C_RESPONDING, /* header complete; MHD is answering */
  C_CLOSING     /* shut down by us; MHD has not reaped it yet */
};

typedef struct conn_rec {
  int state;
  int fd;
  int64_t since_ms;   /* start of the current wait for a header */
  uint64_t since_seq; /* the same as an order: ms ties are common */
  uint8_t ip[16];     /* IPv4 as ::ffff:a.b.c.d, so both families compare */
} conn_rec;

struct perfc_metrics_http {
  struct MHD_Daemon *daemon;
  perfc_metrics_registry *registry;
  perfc_tracer *tracer; /* /debug/traces; NULL = none */
  int port;
  _Atomic int serving;
  /* Loop thread state: touched only on the loop thread once it runs. */
  pthread_t thread;
  int epfd;    /* MHD's epoll descriptor and wake_fd */
  int wake_fd; /* eventfd written by perfc_metrics_http_stop() */
  conn_rec *conns;
  size_t nconns; /* table capacity */
  unsigned max_conns, max_per_ip;
  int64_t header_timeout_ms;
  uint64_t seq; /* counts starts of waits, for since_seq */
};

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The client's address as 16 bytes; other families compare as all-zero. */
static void ip_key(const struct sockaddr *sa, uint8_t out[16]) {
  memset(out, 0, 16);
  if (sa == NULL)
    return;
  if (sa->sa_family == AF_INET) {
    out[10] = out[11] = 0xff;
    memcpy(out + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
  } else if (sa->sa_family == AF_INET6) {
    memcpy(out, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
  }
}

static void close_conn(conn_rec *c) {
  /* MHD sees end of stream (or an error) on its next pass and reaps the
   * connection; NOTIFY_CLOSED then frees the slot. */
  shutdown(c->fd, SHUT_RDWR);
  c->state = C_CLOSING;
}

/* The connection that has waited longest for its header, among those from
 * `ip` (or all when NULL). No minimum wait: a newcomer is admitted whenever
 * some connection is idle or unfinished, because a minimum age would let a
 * client that reconnects faster than that keep every slot young and
 * everybody else out. A scraper's own connection waits only for its first
 * packet; to be chosen here it would have to be older than all the others,
 * i.e. the attacker would have to open the whole per-IP bound of
 * connections within one round trip of the scraper. */
static conn_rec *oldest_waiting(perfc_metrics_http *h, const uint8_t *ip) {
  conn_rec *best = NULL;
  for (size_t i = 0; i < h->nconns; i++) {
    conn_rec *c = &h->conns[i];
    if (c->state != C_WAITING)
      continue;
    if (ip && memcmp(c->ip, ip, 16) != 0)
      continue;
    if (!best || c->since_seq < best->since_seq)
      best = c;
  }
  return best;
}

/* MHD's accept policy: runs on the loop thread for each accepted socket,
 * before MHD sets the connection up. */
static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr,
                                 socklen_t addrlen) {
  perfc_metrics_http *h = cls;
  (void)addrlen;
  uint8_t ip[16];
  ip_key(addr, ip);
  unsigned total = 0, same = 0;
  size_t used = 0;
  for (size_t i = 0; i < h->nconns; i++) {
    const conn_rec *c = &h->conns[i];
    if (c->state == C_FREE)
      continue;
    used++;
    if (c->state == C_CLOSING)
      continue;
    total++;
    same += memcmp(c->ip, ip, 16) == 0;
  }
  if (used >= h->nconns)
    return MHD_NO; /* shut-down connections not reaped yet fill the table */
  if (same >= h->max_per_ip) {
    conn_rec *v = oldest_waiting(h, ip);
    if (!v)
      return MHD_NO;
    close_conn(v);
    total--;
  }
  if (total >= h->max_conns) {
    conn_rec *v = oldest_waiting(h, NULL);
    if (!v)
      return MHD_NO;
    close_conn(v);
  }
  return MHD_YES;
}

static void on_connection(void *cls, struct MHD_Connection *conn,
                          void **socket_context,
                          enum MHD_ConnectionNotificationCode toe) {
  perfc_metrics_http *h = cls;
  if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
    conn_rec *c = *socket_context;
    if (c)
      c->state = C_FREE;
    *socket_context = NULL;
    return;
  }
  const union MHD_ConnectionInfo *fi =
      MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
  const union MHD_ConnectionInfo *ai =
      MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  *socket_context = NULL;
  if (!fi)
    return;
  for (size_t i = 0; i < h->nconns; i++) {
    conn_rec *c = &h->conns[i];
    if (c->state != C_FREE)
      continue;
    c->state = C_WAITING;
    c->fd = fi->connect_fd;
    c->since_ms = now_ms();
    c->since_seq = h->seq++;
    ip_key(ai ? ai->client_addr : NULL, c->ip);
    *socket_context = c;
    return;
  }
  /* on_accept keeps a slot free for every connection it admits. Should
   * that ever not hold, a connection we cannot track must not stay. */
  shutdown(fi->connect_fd, SHUT_RDWR);
}

static conn_rec *rec_of(struct MHD_Connection *conn) {
  const union MHD_ConnectionInfo *i =
      MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
  return i ? i->socket_context : NULL;
}

/* A request ended: a kept-alive connection starts waiting for its next
 * header from now. */
static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode toe) {
  perfc_metrics_http *h = cls;
  (void)req_cls;
  conn_rec *c = rec_of(conn);
  if (c && c->state == C_RESPONDING &&
      toe == MHD_REQUEST_TERMINATED_COMPLETED_OK) {
    c->state = C_WAITING;
    c->since_ms = now_ms();
    c->since_seq = h->seq++;
  }
}

/* Closes connections past their header deadline; returns the ms until the
 * next deadline, or -1 when no connection is waiting. */
static int64_t sweep(perfc_metrics_http *h) {
  int64_t now = now_ms(), next = -1;
  for (size_t i = 0; i < h->nconns; i++) {
    conn_rec *c = &h->conns[i];
    if (c->state != C_WAITING)
      continue;
    int64_t left = c->since_ms + h->header_timeout_ms - now;
    if (left <= 0)
      close_conn(c);
    else if (next < 0 || left < next)
      next = left;
  }
  return next;
}

static void *loop_main(void *arg) {
  perfc_metrics_http *h = arg;
  for (;;) {
    int64_t wait = sweep(h);
    MHD_UNSIGNED_LONG_LONG mt;
    if (MHD_get_timeout(h->daemon, &mt) == MHD_YES &&
        (wait < 0 || (int64_t)mt < wait))
      wait = mt > INT32_MAX ? INT32_MAX : (int64_t)mt;
    struct epoll_event ev[2];
    int n = epoll_wait(h->epfd, ev, 2, wait < 0 ? -1 : (int)wait);
    for (int i = 0; i < n; i++)
      if (ev[i].data.fd == h->wake_fd)
        return NULL;
    MHD_run(h->daemon);
  }
}

void perfc_metrics_http_opts_init(perfc_metrics_http_opts *o) {
  memset(o, 0, sizeof *o);
  o->addr = PERFC_DEFAULT_METRICS_ADDR;
  o->max_connections = PERFC_DEFAULT_METRICS_MAX_CONNECTIONS;
  o->max_connections_per_ip = PERFC_DEFAULT_METRICS_MAX_CONNECTIONS_PER_IP;
  o->header_timeout_ms = PERFC_DEFAULT_METRICS_HEADER_TIMEOUT_MS;
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status,
                             const char *body, size_t len, int must_free,
                             const char *content_type) {
  struct MHD_Response *r = MHD_create_response_from_buffer(
      len, (void *)body,
      must_free ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
  if (!r) {
    if (must_free)
      free((void *)body);
    return MHD_NO; /* MHD closes the connection */
  }
  if (content_type)
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
  if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
    MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
  enum MHD_Result ret = MHD_queue_response(conn, status, r);
  MHD_destroy_response(r);
  return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls) {
  perfc_metrics_http *h = cls;
  static const char text[] = "text/plain; charset=utf-8";
  /* MHD calls this once the header is complete: the header deadline no
   * longer applies (MHD's idle timeout covers a client that stops
   * reading the answer). */
  conn_rec *c = rec_of(conn);
  if (c && c->state == C_WAITING)
    c->state = C_RESPONDING;
  if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
      strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
    static const char msg[] = "method not allowed\n";
    return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, msg, sizeof msg - 1, 0,
                 text);
  }
  if (strcmp(url, "/metrics") == 0) {
    char *out;
    size_t len;
    /* Prometheus lists OpenMetrics first in its Accept header when it
     * wants exemplars (and always since 2.5); anything else gets 0.0.4. */
    const char *accept =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT);
    int om = accept != NULL && strstr(accept, "application/openmetrics-text");
    int rc = om ? perfc_metrics_registry_render_openmetrics(h->registry, &out, &len)
                : perfc_metrics_registry_render(h->registry, &out, &len);
    if (rc != 0) {
      static const char msg[] = "out of memory\n";
      return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, msg, sizeof msg - 1, 0,
                   text);
    }
    return reply(conn, MHD_HTTP_OK, out, len, 1,
                 om ? CONTENT_TYPE_OPENMETRICS : CONTENT_TYPE_0_0_4);
  }
  if (h->tracer != NULL && strcmp(url, "/debug/traces") == 0) {
    char *out;
    size_t len;
    if (perfc_tracing_debug_render(h->tracer, &out, &len) != 0) {
      static const char msg[] = "cannot render traces\n";
      return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, msg, sizeof msg - 1, 0,
                   text);
    }
    return reply(conn, MHD_HTTP_OK, out, len, 1, text);
  }
  if (strcmp(url, "/healthz") == 0) {
    if (atomic_load_explicit(&h->serving, memory_order_relaxed))
      return reply(conn, MHD_HTTP_OK, "ok", 2, 0, text);
    return reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "not serving", 11, 0,
                 text);
  }
  static const char msg[] = "not found\n";
  return reply(conn, MHD_HTTP_NOT_FOUND, msg, sizeof msg - 1, 0, text);
}

/* Splits "HOST:PORT" / "[V6]:PORT" into host and port strings. */
static int split_addr(const char *addr, char *host, size_t hostcap, char *port,
                      size_t portcap) {
  const char *h = addr, *hend, *p;
  if (*addr == '[') {
    h = addr + 1;
    hend = strchr(h, ']');
    if (!hend || hend[1] != ':')
      return PERFC_EINVAL;
    p = hend + 2;
  } else {
    hend = strrchr(addr, ':');
    if (!hend || memchr(addr, ':', (size_t)(hend - addr)))
      return PERFC_EINVAL; /* no port, or a bare IPv6 literal */
    p = hend + 1;
  }
  size_t hl = (size_t)(hend - h), pl = strlen(p);
  if (hl >= hostcap || pl == 0 || pl > 5 || pl >= portcap)
    return PERFC_EINVAL;
  for (size_t i = 0; i < pl; i++)
    if (p[i] < '0' || p[i] > '9')
      return PERFC_EINVAL;
  if (atoi(p) > 65535)
    return PERFC_EINVAL;
  memcpy(host, h, hl);
  host[hl] = '\0';
  memcpy(port, p, pl + 1);
  if (strcmp(host, "*") == 0)
    host[0] = '\0';
  return 0;
}

/* Binds and listens ourselves rather than letting MHD do it, so port 0 can
 * be reported and a busy port is a clean PERFC_EBIND. */
static int listen_on(const char *addr, int *fd_out, int *port_out) {
  char host[256], port[8];
  int rc = split_addr(addr, host, sizeof host, port, sizeof port);
  if (rc)
    return rc;
  struct addrinfo hints = {0}, *res = NULL;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  if (host[0] == '\0')
    hints.ai_family = AF_INET; /* "all interfaces": 0.0.0.0 */
  int gai = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
  if (gai != 0) {
    perfc_log(PERFC_LOG_ERROR, "metrics: cannot listen on %s: %s", addr,
              gai_strerror(gai));
    return PERFC_EBIND;
  }
  int fd = -1, err = 0;
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                ai->ai_protocol);
    if (fd < 0) {
      err = errno;
      continue;
    }
    int one = 1;
    /* Restarting the process must not fail on TIME_WAIT leftovers. */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 64) == 0)
      break;
    err = errno;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) {
    /* Said once, here, with the address: the caller only gets PERFC_EBIND. */
    char tmp[128];
    const char *text = strerror_r(err, tmp, sizeof tmp); /* GNU: a string */
    perfc_log(PERFC_LOG_ERROR, "metrics: cannot listen on %s: %c%s", addr,
              text[0] >= 'A' && text[0] <= 'Z' ? text[0] - 'A' + 'a' : text[0],
              text[0] ? text + 1 : "");
    return PERFC_EBIND;
  }
  struct sockaddr_storage ss = {0};
  socklen_t sl = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
    close(fd);
    return PERFC_EBIND;
  }
  *port_out = ss.ss_family == AF_INET6
                  ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                  : ntohs(((struct sockaddr_in *)&ss)->sin_port);
  *fd_out = fd;
  return 0;
}

int perfc_metrics_http_start(perfc_metrics_http **out,
                             const perfc_metrics_http_opts *opts) {
  perfc_metrics_http_opts o;
  perfc_metrics_http_opts_init(&o);
  if (opts) {
    perfc_metrics_http_opts d = o;
    o = *opts; /* whole struct, then zero fields back to their defaults */
    if (!o.addr)
      o.addr = d.addr;
    if (o.max_connections == 0)
      o.max_connections = d.max_connections;
    if (o.max_connections_per_ip == 0)
      o.max_connections_per_ip = d.max_connections_per_ip;
    if (o.header_timeout_ms == 0)
      o.header_timeout_ms = d.header_timeout_ms;
  }
  if (!out || o.header_timeout_ms < 0 || o.max_connections > (1u << 20))
    return PERFC_EINVAL;
  if (o.max_connections_per_ip > o.max_connections)
    o.max_connections_per_ip = o.max_connections;
  perfc_metrics_http *h = calloc(1, sizeof *h);
  if (!h)
    return PERFC_ENOMEM;
  h->registry = o.registry ? o.registry : perfc_metrics_registry_default();
  h->tracer = o.tracer;
  atomic_init(&h->serving, 1);
  h->max_conns = o.max_connections;
  h->max_per_ip = o.max_connections_per_ip;
  h->header_timeout_ms = o.header_timeout_ms;
  h->nconns = (size_t)o.max_connections * SLACK_FACTOR;
  h->epfd = h->wake_fd = -1;
  h->conns = calloc(h->nconns, sizeof *h->conns);
  int fd = -1;
  int rc = h->conns ? 0 : PERFC_ENOMEM;
  if (rc == 0)
    rc = listen_on(o.addr, &fd, &h->port);
  if (rc) {
    free(h->conns);
    free(h);
    return rc;
  }
  /* MHD's idle timeout stays as the bound on a response nobody reads (the
   * header deadline above is ours); whole seconds, rounded up. */
  unsigned idle_s = (unsigned)((o.header_timeout_ms + 999) / 1000);
  /* No MHD_USE_ERROR_LOG: library code does not print. MHD's own limit is
   * the table size, above max_connections: admission is on_accept's. */
  h->daemon = MHD_start_daemon(
      MHD_USE_EPOLL, 0, on_accept, h, on_request, h, MHD_OPTION_LISTEN_SOCKET,
      (MHD_socket)fd, MHD_OPTION_CONNECTION_TIMEOUT, idle_s,
      MHD_OPTION_CONNECTION_LIMIT, (unsigned)h->nconns,
      MHD_OPTION_CONNECTION_MEMORY_LIMIT,
      (size_t)PERFC_METRICS_HTTP_CONNECTION_MEMORY,
      MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
      MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_END);
  if (!h->daemon) {
    rc = errno == ENOMEM ? PERFC_ENOMEM : PERFC_ETHREAD;
    close(fd);
    goto fail;
  }
  const union MHD_DaemonInfo *di =
      MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_EPOLL_FD);
  h->epfd = epoll_create1(EPOLL_CLOEXEC);
  h->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  rc = PERFC_ETHREAD;
  if (!di || h->epfd < 0 || h->wake_fd < 0)
    goto fail;
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = di->epoll_fd};
  if (epoll_ctl(h->epfd, EPOLL_CTL_ADD, di->epoll_fd, &ev) != 0)
    goto fail;
  ev.data.fd = h->wake_fd;
  if (epoll_ctl(h->epfd, EPOLL_CTL_ADD, h->wake_fd, &ev) != 0)
    goto fail;
  if (perfc__thread_create(&h->thread, loop_main, h) != 0)
    goto fail;
  *out = h;
  return 0;
fail:
  if (h->daemon)
    MHD_stop_daemon(h->daemon); /* also closes the listening socket */
  if (h->epfd >= 0)
    close(h->epfd);
  if (h->wake_fd >= 0)
    close(h->wake_fd);
  free(h->conns);
  free(h);
  return rc;
}

int perfc_metrics_http_port(const perfc_metrics_http *h) { return h->port; }

void perfc_metrics_http_set_serving(perfc_metrics_http *h, int serving) {
  atomic_store_explicit(&h->serving, serving ? 1 : 0, memory_order_relaxed);
}

void perfc_metrics_http_stop(perfc_metrics_http *h) {
  if (!h)
    return;
  uint64_t one = 1;
  while (write(h->wake_fd, &one, sizeof one) < 0 && errno == EINTR)
    ;
  pthread_join(h->thread, NULL);
  /* Closes every connection (NOTIFY_CLOSED runs here, on this thread, now
   * that the loop has ended) and the listening socket we gave it. */
  MHD_stop_daemon(h->daemon);
  close(h->epfd);
  close(h->wake_fd);
  free(h->conns);
  free(h);
}
