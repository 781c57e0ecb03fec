/*
 * metrics_http.c — serves /metrics and /healthz over libmicrohttpd on an
 * address of its own, apart from the gRPC port, as Prometheus exporters do.
 *
 * Room: runtime sources (metrics module). HTTP parsing, connection handling
 * and the polling thread are libmicrohttpd's; this file only binds the
 * socket (so it can report the port and a clean PERFC_EBIND) and answers.
 */
#include "perfc/metrics_http.h"
#include "perfc/log.h"

#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Prometheus' scraper negotiates this exact type for the text format. */
#define CONTENT_TYPE_0_0_4 "text/plain; version=0.0.4; charset=utf-8"
/* Idle keep-alive connections are dropped after this long, so a stuck
 * client cannot pin a slot for ever; Prometheus scrapes far more often. */
#define CONNECTION_TIMEOUT_S 30
/* A scrape endpoint needs few connections; the bound caps memory if
 * something floods it. */
#define CONNECTION_LIMIT 64

struct perfc_metrics_http {
  struct MHD_Daemon *daemon;
  perfc_metrics_registry *registry;
  int port;
  _Atomic int serving;
};

void perfc_metrics_http_opts_init(perfc_metrics_http_opts *o) {
  memset(o, 0, sizeof *o);
  o->addr = PERFC_DEFAULT_METRICS_ADDR;
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
  if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
      strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
    static const char msg[] = "method not allowed\n";
    return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, msg, sizeof msg - 1, 0,
                 text);
  }
  if (strcmp(url, "/metrics") == 0) {
    char *out;
    size_t len;
    if (perfc_metrics_registry_render(h->registry, &out, &len) != 0) {
      static const char msg[] = "out of memory\n";
      return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, msg, sizeof msg - 1, 0,
                   text);
    }
    return reply(conn, MHD_HTTP_OK, out, len, 1, CONTENT_TYPE_0_0_4);
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
    if (opts->addr)
      o.addr = opts->addr;
    o.registry = opts->registry;
  }
  if (!out)
    return PERFC_EINVAL;
  perfc_metrics_http *h = calloc(1, sizeof *h);
  if (!h)
    return PERFC_ENOMEM;
  h->registry = o.registry ? o.registry : perfc_metrics_registry_default();
  atomic_init(&h->serving, 1);
  int fd;
  int rc = listen_on(o.addr, &fd, &h->port);
  if (rc) {
    free(h);
    return rc;
  }
  /* MHD's own polling thread (epoll on Linux) serves every connection; a
   * render takes microseconds, so one thread is plenty for scrapes. No
   * MHD_USE_ERROR_LOG: library code does not print. */
  h->daemon = MHD_start_daemon(
      MHD_USE_AUTO_INTERNAL_THREAD, 0, NULL, NULL, on_request, h,
      MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd, MHD_OPTION_CONNECTION_TIMEOUT,
      (unsigned)CONNECTION_TIMEOUT_S, MHD_OPTION_CONNECTION_LIMIT,
      (unsigned)CONNECTION_LIMIT, MHD_OPTION_END);
  if (!h->daemon) {
    int err = errno;
    close(fd);
    free(h);
    return err == ENOMEM ? PERFC_ENOMEM : PERFC_ETHREAD;
  }
  *out = h;
  return 0;
}

int perfc_metrics_http_port(const perfc_metrics_http *h) { return h->port; }

void perfc_metrics_http_set_serving(perfc_metrics_http *h, int serving) {
  atomic_store_explicit(&h->serving, serving ? 1 : 0, memory_order_relaxed);
}

void perfc_metrics_http_stop(perfc_metrics_http *h) {
  if (!h)
    return;
  /* Joins the polling thread and closes the listening socket we gave it. */
  MHD_stop_daemon(h->daemon);
  free(h);
}
