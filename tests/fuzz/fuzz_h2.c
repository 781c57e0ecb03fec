/*
 * fuzz_h2.c — raw bytes into an h2 server connection: the client preface,
 * frames, HPACK, gRPC messages, whatever the input holds.
 *
 * Room: tests/fuzz. A real perfc h2 server (one loop thread, an echo call
 * layer like perfc-h2-echo-server's) listens on loopback once per
 * process; each input is written on a fresh connection, the write side is
 * shut, and the answer is read until the server closes (it does at EOF),
 * so the server has finished with one input before the next starts and a
 * crash is the current input's. The seed corpus (corpus/h2/) holds client
 * byte streams recorded from python3-grpcio and h2load sessions
 * (capture_h2.py) and the adversarial suite's malformed frames.
 */
#include "transport/h2/h2_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct call {
  int stream;
  uint8_t *req;
  size_t len;
} call;

static perfc_status_code f_call(void *d, perfc__h2_stream *s,
                                const perfc__h2_call_info *info, void **c,
                                unsigned *flags, const char **refuse) {
  (void)d;
  (void)s;
  int stream = strcmp(info->path, "/bench.v1.Echo/Stream") == 0;
  if (!stream && strcmp(info->path, "/bench.v1.Echo/Unary") != 0) {
    *refuse = "unknown method";
    return PERFC_STATUS_UNIMPLEMENTED;
  }
  call *x = calloc(1, sizeof *x);
  if (x == NULL)
    return PERFC_STATUS_RESOURCE_EXHAUSTED;
  x->stream = stream;
  *c = x;
  *flags = stream ? 0 : PERFC__H2_CALL_SINGLE_REQUEST;
  /* Compressed replies too, when the client accepts them. */
  perfc__h2_set_send_encoding(s, info->request_encoding);
  return PERFC_STATUS_OK;
}

static int f_message(void *c, perfc__h2_stream *s, const uint8_t *b, size_t n) {
  call *x = c;
  if (x->stream)
    return perfc__h2_send_message(s, b, n, 0) == PERFC_EFULL ? PERFC_EFULL : 0;
  free(x->req);
  x->req = malloc(n ? n : 1);
  if (x->req != NULL) {
    memcpy(x->req, b, n);
    x->len = n;
  }
  return 0;
}

static void f_half_close(void *c, perfc__h2_stream *s) {
  call *x = c;
  if (!x->stream && x->req != NULL)
    perfc__h2_send_message(s, x->req, x->len, 0);
  perfc__h2_md md = {"x-echo", 6, "1", 1};
  perfc__h2_finish(s, PERFC_STATUS_OK, "fine", &md, 1, 0);
}

static void f_writable(void *c, perfc__h2_stream *s) {
  (void)c;
  perfc__h2_resume_recv(s);
}

static void f_close(void *c, perfc__h2_stream *s, perfc__h2_close_reason why) {
  (void)why;
  call *x = c;
  free(x->req);
  free(x);
  perfc__h2_stream_release(s);
}

static perfc__h2_server *srv;
static int port;

static void setup(void) {
  perfc__h2_opts o;
  perfc__h2_opts_init(&o);
  o.loops = 1;
  o.max_recv_message_bytes = 64 * 1024; /* small limits, reached often */
  o.conn_recv_budget_bytes = 256 * 1024;
  o.handshake_timeout_ms = 1000;
  perfc__h2_callbacks cb = {f_call, f_message, f_half_close, f_writable, f_close, NULL, NULL};
  if (perfc__h2_server_new(&srv, &o, &cb, NULL) != 0 ||
      perfc__h2_server_listen(srv, "127.0.0.1:0", NULL, &port) != 0 ||
      perfc__h2_server_start(srv) != 0)
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (srv == NULL)
    setup();
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
    abort();
  /* Write and read together: the server may answer (and stop reading)
   * before it has taken everything. */
  size_t off = 0;
  int wr_open = 1;
  char buf[65536];
  for (int spins = 0; spins < 400; spins++) {
    struct pollfd p = {fd, POLLIN | (wr_open ? POLLOUT : 0), 0};
    if (poll(&p, 1, 10) < 0)
      break;
    if ((p.revents & POLLOUT) && wr_open) {
      ssize_t w = off < size ? send(fd, data + off, size - off,
                                    MSG_NOSIGNAL | MSG_DONTWAIT)
                             : 0;
      if (w > 0)
        off += (size_t)w;
      if (w < 0 || off >= size) {
        shutdown(fd, SHUT_WR);
        wr_open = 0;
      }
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
        break;
    }
  }
  close(fd);
  return 0;
}
