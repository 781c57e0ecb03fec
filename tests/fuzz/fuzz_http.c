/*
 * fuzz_http.c — raw bytes into a perfc server that serves HTTP/JSON and
 * gRPC-Web beside gRPC (perfc_gateway_attach): the listener's protocol
 * sniffing, HTTP/1.1 parsing (http-parser, pipelining, chunks, limits),
 * HTTP/2 requests that are not gRPC, routes, JSON bodies, the gRPC-Web
 * envelope, CORS and the error answers, whatever the input holds.
 *
 * Room: tests/fuzz. The server (gw.proto's gw.v1.Gw with two handlers,
 * the others UNIMPLEMENTED, one loop thread, small limits) starts once per
 * process; each input goes on a fresh connection whose write side is then
 * shut, and the answer is read until the server closes, so a crash is the
 * current input's. Seeds: corpus/http/ (HTTP/1.1 requests of every kind
 * the tests send, pipelined ones, gRPC-Web binary and text, an HTTP/2
 * prior-knowledge request).
 */
#include "gw.perfc.h"

#include "perfc/gateway.h"
#include "perfc/log.h"
#include "perfc/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static perfc_status_code get(perfc_ctx *ctx, const Gw__V1__GetReq *req,
                             Gw__V1__All *resp, void *ud) {
  (void)ud;
  if (req->id < 0)
    return perfc_ctx_error(ctx, PERFC_STATUS_NOT_FOUND, "no %lld",
                           (long long)req->id);
  resp->i64 = req->id;
  resp->str = req->shelf;
  resp->n_r_str = req->n_tags;
  resp->r_str = req->tags;
  return PERFC_STATUS_OK;
}

static perfc_status_code list(perfc_ctx *ctx, const Gw__V1__GetReq *req,
                              Gw__V1__ListResp *resp, void *ud) {
  (void)ctx;
  (void)ud;
  resp->next = req->shelf;
  return PERFC_STATUS_OK;
}

static perfc_server *srv;
static int port;

static void setup(void) {
  static const Gw__V1__Gw_Handlers handlers = {.get = get, .list = list};
  static const char *const origins[] = {"https://app.example"};
  perfc_server_opts o;
  perfc_server_opts_init(&o);
  o.threads = 1;
  o.max_recv_message_bytes = 64 * 1024;
  perfc_gateway_opts go;
  perfc_gateway_opts_init(&go);
  go.max_body_bytes = 64 * 1024;
  go.idle_timeout_ms = 1000;
  go.cors_origins = origins;
  go.cors_origin_count = 1;
  perfc_log_set_level(PERFC_LOG_ERROR);
  if (perfc_server_new(&srv, &o) != 0 ||
      gw__v1__gw__perfc_register(srv, &handlers, NULL) != 0 ||
      perfc_gateway_attach(&go, srv) != 0 ||
      perfc_server_listen(srv, "127.0.0.1:0", &port) != 0 ||
      perfc_server_start(srv) != 0)
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
