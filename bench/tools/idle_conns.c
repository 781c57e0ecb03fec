/*
 * idle-conns — opens N plain TCP connections to an HTTP/2 (h2c) server,
 * completes the HTTP/2 connection set-up on each (client preface and
 * SETTINGS, the server's SETTINGS acknowledged and ours acknowledged by
 * it), then holds them all idle. bench/run-idle reads the server's VmRSS
 * before and while they are held: the server's memory per idle connection.
 *
 * Room: bench/tools — a measuring tool, independent of perfc and of gRPC
 * (plain sockets), so it treats every server alike.
 *
 * Usage: idle-conns --target 127.0.0.1:PORT --conns N [--hold SECONDS]
 * Prints "ready N" once all N connections are set up, then holds them until
 * SIGTERM/SIGINT or --hold seconds (default 60, at most 600) pass. Exit 1
 * when a connection could not be set up within 5 s.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/* An empty SETTINGS frame: length 0, type 4, flags 0, stream 0. */
static const uint8_t settings[9] = {0, 0, 0, 4, 0, 0, 0, 0, 0};
static const uint8_t settings_ack[9] = {0, 0, 0, 4, 1, 0, 0, 0, 0};

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static int write_all(int fd, const void *p, size_t n) {
  const uint8_t *b = p;
  while (n > 0) {
    ssize_t w = write(fd, b, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return -1;
    b += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Reads frames until the server's SETTINGS (acked by us) and its ACK of
 * ours have both been seen. Other frames (WINDOW_UPDATE, ...) are skipped. */
static int handshake(int fd) {
  uint8_t buf[16384];
  size_t have = 0;
  int got_settings = 0, got_ack = 0;
  if (write_all(fd, preface, sizeof preface - 1) || write_all(fd, settings, 9))
    return -1;
  while (!(got_settings && got_ack)) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 5000) != 1)
      return -1;
    ssize_t r = read(fd, buf + have, sizeof buf - have);
    if (r <= 0)
      return -1;
    have += (size_t)r;
    size_t off = 0;
    while (have - off >= 9) {
      uint32_t len = (uint32_t)buf[off] << 16 | (uint32_t)buf[off + 1] << 8 |
                     buf[off + 2];
      if (len > sizeof buf - 9)
        return -1;
      if (have - off < 9 + len)
        break;
      uint8_t type = buf[off + 3], flags = buf[off + 4];
      if (type == 4 && (flags & 1))
        got_ack = 1;
      else if (type == 4) {
        got_settings = 1;
        if (write_all(fd, settings_ack, 9))
          return -1;
      } else if (type == 7) {
        return -1; /* GOAWAY */
      }
      off += 9 + len;
    }
    memmove(buf, buf + off, have - off);
    have -= off;
  }
  return 0;
}

int main(int argc, char **argv) {
  const char *target = NULL;
  long conns = 1000, hold = 60;
  for (int i = 1; i + 1 < argc; i += 2) {
    char *end = NULL;
    long v = strtol(argv[i + 1], &end, 10);
    int num = *end == '\0' && v > 0;
    if (!strcmp(argv[i], "--target"))
      target = argv[i + 1];
    else if (!strcmp(argv[i], "--conns") && num && v <= 100000)
      conns = v;
    else if (!strcmp(argv[i], "--hold") && num && v <= 600)
      hold = v;
    else {
      fprintf(stderr, "idle-conns: bad option %s %s\n", argv[i], argv[i + 1]);
      return 2;
    }
  }
  const char *colon = target ? strrchr(target, ':') : NULL;
  if (colon == NULL || argc % 2 == 0) {
    fprintf(stderr, "usage: idle-conns --target HOST:PORT --conns N "
                    "[--hold SECONDS]\n");
    return 2;
  }
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)atoi(colon + 1))};
  char host[64];
  snprintf(host, sizeof host, "%.*s", (int)(colon - target), target);
  if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
    fprintf(stderr, "idle-conns: IPv4 address expected, got '%s'\n", host);
    return 2;
  }
  /* N sockets need N descriptors: take the hard limit. */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur != RLIM_INFINITY && (rlim_t)conns + 16 > rl.rlim_cur) {
      fprintf(stderr, "idle-conns: %ld connections need more than the "
                      "descriptor limit %lu\n", conns, (unsigned long)rl.rlim_cur);
      return 2;
    }
  }
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);
  int *fds = calloc((size_t)conns, sizeof *fds);
  if (fds == NULL)
    return 1;
  for (long i = 0; i < conns; i++) {
    fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (fds[i] < 0 || connect(fds[i], (struct sockaddr *)&sa, sizeof sa) != 0 ||
        handshake(fds[i]) != 0) {
      fprintf(stderr, "idle-conns: connection %ld: set-up failed (%s)\n", i,
              strerror(errno));
      return 1;
    }
  }
  printf("ready %ld\n", conns);
  fflush(stdout);
  /* Hold: nothing is sent; a server closing connections shows as EOF. */
  time_t end = time(NULL) + hold;
  long closed = 0;
  while (!stop && time(NULL) < end)
    sleep(1);
  for (long i = 0; i < conns; i++) {
    char c;
    if (recv(fds[i], &c, 1, MSG_DONTWAIT) == 0)
      closed++;
    close(fds[i]);
  }
  printf("closed_by_server %ld\n", closed);
  return 0;
}
