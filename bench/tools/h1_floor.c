/*
 * h1-floor — the cheapest HTTP/1.1 keep-alive server this machine can run:
 * one thread, one epoll, and for every request it reads a canned answer
 * (the exact bytes another server sent, head and body) is written back.
 * It parses nothing beyond finding each request's blank line, routes
 * nothing, encodes nothing, allocates nothing per request.
 *
 * Why it exists: bench/run-http compares JSON over HTTP/1.1 without
 * pipelining (one request in flight per connection, so one recv() and one
 * send() per request) with gRPC multiplexed (32 calls per read and write).
 * Run under the same load on the same core, this server is the ceiling of
 * that load shape: what the kernel's loopback TCP leaves to any server,
 * perfc's or another's. Its req/s ÷ perfc's gRPC says whether a ratio
 * target is reachable at all; perfc's JSON ÷ its req/s says how much of the
 * ceiling perfc's own work costs.
 *
 * Room: bench/tools — a measuring tool, independent of perfc (plain
 * sockets and epoll), like idle-conns.
 *
 * Usage: h1-floor --listen 127.0.0.1:PORT --answer FILE
 * FILE holds one whole answer (status line, headers, blank line, body), as
 * `curl -s -i --raw` saved it. Prints "listening on 127.0.0.1:PORT" once
 * bound; serves until SIGTERM/SIGINT, then exits 0. A request that is not a
 * body-less GET/HEAD (no blank line within 16 KiB) closes its connection.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

enum { IN_CAP = 16384, MAX_EVENTS = 256, MAX_FDS = 65536 };

typedef struct conn {
  char in[IN_CAP];
  size_t in_len;
  char *out;      /* answers not yet written (malloc, grown on demand) */
  size_t out_len, out_cap;
  int want_out;   /* EPOLLOUT registered */
} conn;

static volatile sig_atomic_t stopping;
static const char *answer;
static size_t answer_len;
static conn *conns[MAX_FDS];

static void on_signal(int sig) { (void)sig; stopping = 1; }

static void die(const char *what) {
  fprintf(stderr, "h1-floor: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void drop(int ep, int fd) {
  conn *c = conns[fd];
  epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
  close(fd);
  if (c) {
    free(c->out);
    free(c);
    conns[fd] = NULL;
  }
}

/* Writes what is pending; registers EPOLLOUT only while something stays. */
static int flush_out(int ep, int fd, conn *c) {
  size_t off = 0;
  while (off < c->out_len) {
    ssize_t n = send(fd, c->out + off, c->out_len - off, MSG_NOSIGNAL);
    if (n > 0) { off += (size_t)n; continue; }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    return -1;
  }
  memmove(c->out, c->out + off, c->out_len - off);
  c->out_len -= off;
  int want = c->out_len > 0;
  if (want != c->want_out) {
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.fd = fd};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) != 0) return -1;
    c->want_out = want;
  }
  return 0;
}

/* Appends one answer per complete request head in c->in. */
static int answer_requests(conn *c) {
  size_t start = 0;
  for (;;) {
    char *end = memmem(c->in + start, c->in_len - start, "\r\n\r\n", 4);
    if (!end) break;
    start = (size_t)(end - c->in) + 4;
    if (c->out_len + answer_len > c->out_cap) {
      size_t cap = c->out_cap ? c->out_cap * 2 : 4096;
      while (cap < c->out_len + answer_len) cap *= 2;
      char *p = realloc(c->out, cap);
      if (!p) return -1;
      c->out = p;
      c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, answer, answer_len);
    c->out_len += answer_len;
  }
  memmove(c->in, c->in + start, c->in_len - start);
  c->in_len -= start;
  return c->in_len == IN_CAP ? -1 : 0;  /* a head larger than the buffer */
}

static void on_readable(int ep, int fd) {
  conn *c = conns[fd];
  ssize_t n = recv(fd, c->in + c->in_len, IN_CAP - c->in_len, 0);
  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) { drop(ep, fd); return; }
  if (n < 0) return;
  c->in_len += (size_t)n;
  if (answer_requests(c) != 0 || flush_out(ep, fd, c) != 0) drop(ep, fd);
}

static void on_accept(int ep, int lfd) {
  for (;;) {
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    if (fd >= MAX_FDS || !(conns[fd] = calloc(1, sizeof(conn)))) { close(fd); continue; }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) drop(ep, fd);
  }
}

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) die(path);
  char *buf = NULL;
  size_t cap = 0, n = 0, r;
  do {
    if (n == cap && !(buf = realloc(buf, cap = cap ? cap * 2 : 4096))) die("realloc");
    r = fread(buf + n, 1, cap - n, f);
    n += r;
  } while (r > 0);
  fclose(f);
  *len = n;
  return buf;
}

int main(int argc, char **argv) {
  const char *listen_at = NULL, *answer_path = NULL;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--listen")) listen_at = argv[i + 1];
    else if (!strcmp(argv[i], "--answer")) answer_path = argv[i + 1];
  }
  if (!listen_at || !answer_path || (argc - 1) % 2) {
    fprintf(stderr, "usage: h1-floor --listen HOST:PORT --answer FILE\n");
    return 2;
  }
  answer = read_file(answer_path, &answer_len);
  if (answer_len == 0 || !memmem(answer, answer_len, "\r\n\r\n", 4)) {
    fprintf(stderr, "h1-floor: %s is not an HTTP answer (no blank line)\n", answer_path);
    return 2;
  }

  char host[64];
  const char *colon = strrchr(listen_at, ':');
  if (!colon || (size_t)(colon - listen_at) >= sizeof host) {
    fprintf(stderr, "h1-floor: --listen wants HOST:PORT\n");
    return 2;
  }
  memcpy(host, listen_at, (size_t)(colon - listen_at));
  host[colon - listen_at] = '\0';
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(colon + 1))};
  if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
    fprintf(stderr, "h1-floor: '%s' is not an IPv4 address\n", host);
    return 2;
  }
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  if (lfd < 0) die("socket");
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0) die("bind");
  if (listen(lfd, 1024) != 0) die("listen");
  socklen_t sl = sizeof sa;
  getsockname(lfd, (struct sockaddr *)&sa, &sl);
  printf("listening on %s:%u\n", host, ntohs(sa.sin_port));
  fflush(stdout);

  struct sigaction act = {.sa_handler = on_signal};
  sigaction(SIGTERM, &act, NULL);
  sigaction(SIGINT, &act, NULL);
  signal(SIGPIPE, SIG_IGN);

  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  struct epoll_event lev = {.events = EPOLLIN, .data.fd = lfd};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) != 0) die("epoll_ctl");
  struct epoll_event evs[MAX_EVENTS];
  while (!stopping) {
    int n = epoll_wait(ep, evs, MAX_EVENTS, 500);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == lfd) { on_accept(ep, lfd); continue; }
      if (!conns[fd]) continue;
      if (evs[i].events & (EPOLLERR | EPOLLHUP)) { drop(ep, fd); continue; }
      if (evs[i].events & EPOLLOUT && flush_out(ep, fd, conns[fd]) != 0) { drop(ep, fd); continue; }
      if (evs[i].events & EPOLLIN) on_readable(ep, fd);
    }
  }
  for (int fd = 0; fd < MAX_FDS; fd++)
    if (conns[fd]) drop(ep, fd);
  close(ep);
  close(lfd);
  free((void *)answer);
  return 0;
}
