/* test_compression.c — gzip and deflate per call, as a channel default and
 * as a server default, proved on the wire: the client talks to the server
 * through a byte-counting TCP proxy, and a compressible 1 MiB message must
 * cross it in far fewer bytes than when sent plain. Content must arrive
 * intact either way. */
#include "test_service.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MSG_BYTES (1 << 20)
/* A compressed 1 MiB of the periodic test pattern is a few KiB; anything
 * under this bound could not have crossed uncompressed. */
#define SMALL_BYTES (128 * 1024)

static perfc_server *srv;
static perfc_channel *ch;
static int port;

/* ---- byte-counting proxy ----------------------------------------------------
 */

static int proxy_fd = -1, proxy_port;
static atomic_long up_bytes, down_bytes; /* client->server, server->client */
static atomic_int proxy_stop;
static pthread_t proxy_thread;

typedef struct conn {
  int client, server;
} conn;

static void *forward(void *arg) {
  conn c = *(conn *)arg;
  free(arg);
  char buf[65536];
  struct pollfd p[2] = {{.fd = c.client, .events = POLLIN},
                        {.fd = c.server, .events = POLLIN}};
  while (!atomic_load(&proxy_stop)) {
    if (poll(p, 2, 100) <= 0)
      continue;
    int done = 0;
    for (int i = 0; i < 2 && !done; i++) {
      if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
        continue;
      ssize_t n = read(p[i].fd, buf, sizeof buf);
      if (n <= 0) {
        done = 1;
        break;
      }
      atomic_fetch_add(i == 0 ? &up_bytes : &down_bytes, (long)n);
      for (ssize_t off = 0; off < n;) {
        ssize_t w = write(p[1 - i].fd, buf + off, (size_t)(n - off));
        if (w <= 0) {
          done = 1;
          break;
        }
        off += w;
      }
    }
    if (done)
      break;
  }
  close(c.client);
  close(c.server);
  return NULL;
}

static void *accept_loop(void *arg) {
  (void)arg;
  for (;;) {
    int cfd = accept(proxy_fd, NULL, NULL);
    if (cfd < 0)
      return NULL; /* the listening socket was shut down */
    int sfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(sfd, (struct sockaddr *)&a, sizeof a) != 0) {
      close(cfd);
      close(sfd);
      continue;
    }
    conn *c = malloc(sizeof *c);
    c->client = cfd;
    c->server = sfd;
    pthread_t t;
    pthread_create(&t, NULL, forward, c);
    pthread_detach(t);
  }
}

static void proxy_start(void) {
  proxy_fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  cr_assert_eq(bind(proxy_fd, (struct sockaddr *)&a, sizeof a), 0);
  cr_assert_eq(listen(proxy_fd, 8), 0);
  socklen_t len = sizeof a;
  getsockname(proxy_fd, (struct sockaddr *)&a, &len);
  proxy_port = ntohs(a.sin_port);
  pthread_create(&proxy_thread, NULL, accept_loop, NULL);
}

/* ---- fixtures ---------------------------------------------------------------
 */

static void start(const char *server_compression,
                  const char *channel_compression) {
  perfc_server_opts so;
  perfc_server_opts_init(&so);
  so.compression = server_compression;
  srv = test_server_start(&so, &port);
  cr_assert_not_null(srv);
  proxy_start();
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", proxy_port);
  perfc_channel_opts co;
  perfc_channel_opts_init(&co);
  co.compression = channel_compression;
  cr_assert_eq(perfc_channel_new(&ch, target, &co), 0);
}

static void teardown(void) {
  perfc_channel_free(ch);
  perfc_server_free(srv);
  ch = NULL;
  srv = NULL;
  atomic_store(&proxy_stop, 1);
  if (proxy_fd >= 0) {
    shutdown(proxy_fd, SHUT_RDWR);
    pthread_join(proxy_thread, NULL);
    close(proxy_fd);
    proxy_fd = -1;
  }
}

static uint8_t *pattern(size_t n) {
  uint8_t *b = malloc(n);
  for (size_t i = 0; i < n; i++)
    b[i] = (uint8_t)(i * 7);
  return b;
}

/* Bytes each way for one call; `method` "echo" sends 1 MiB and gets it back,
 * "big" sends a few bytes and gets 1 MiB. Asserts the content. */
static void call(const char *method, const char *compression, long *up,
                 long *down) {
  uint8_t *want = pattern(MSG_BYTES);
  Perfc__Test__V1__EchoRequest req = PERFC__TEST__V1__ECHO_REQUEST__INIT;
  Perfc__Test__V1__EchoResponse *resp = NULL;
  perfc_status st = {0};
  /* 60 s: sanitizer builds run zlib over 1 MiB many times slower, and the
   * deadline is not what this test checks. */
  perfc_call_opts co = {.compression = compression, .wait_for_ready = 1,
                        .timeout_ms = 60000};
  long up0 = atomic_load(&up_bytes), down0 = atomic_load(&down_bytes);
  perfc_status_code code;
  if (strcmp(method, "echo") == 0) {
    req.payload.data = want;
    req.payload.len = MSG_BYTES;
    code = perfc__test__v1__test_service__echo__call(ch, &req, &resp, &co, &st);
  } else {
    req.response_bytes = MSG_BYTES;
    code = perfc__test__v1__test_service__big__call(ch, &req, &resp, &co, &st);
  }
  cr_assert_eq(code, PERFC_STATUS_OK, "%s", st.message ? st.message : "");
  cr_assert_eq(resp->payload.len, MSG_BYTES);
  cr_assert_eq(memcmp(resp->payload.data, want, MSG_BYTES), 0);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  perfc_status_reset(&st);
  free(want);
  /* The proxy forwards asynchronously; the call has completed, so every
   * byte of it was counted except, at most, trailing control frames. */
  *up = atomic_load(&up_bytes) - up0;
  *down = atomic_load(&down_bytes) - down0;
}

TestSuite(compression, .fini = teardown, .timeout = 60);

Test(compression, per_call_gzip_and_deflate_requests) {
  start(NULL, NULL);
  long up, down;
  call("echo", NULL, &up, &down);
  cr_assert_gt(up, MSG_BYTES, "plain request crossed in %ld bytes", up);
  cr_assert_gt(down, MSG_BYTES);
  call("echo", "gzip", &up, &down);
  cr_assert_lt(up, SMALL_BYTES, "gzip request crossed in %ld bytes", up);
  cr_assert_gt(down, MSG_BYTES, "the server default is no compression");
  call("echo", "deflate", &up, &down);
  cr_assert_lt(up, SMALL_BYTES, "deflate request crossed in %ld bytes", up);
  call("echo", "identity", &up, &down);
  cr_assert_gt(up, MSG_BYTES);
}

Test(compression, channel_default_and_call_override) {
  start(NULL, "gzip");
  long up, down;
  call("echo", NULL, &up, &down);
  cr_assert_lt(up, SMALL_BYTES, "channel default gzip: %ld bytes", up);
  call("echo", "identity", &up, &down);
  cr_assert_gt(up, MSG_BYTES, "identity overrides the channel default");
  call("echo", "deflate", &up, &down);
  cr_assert_lt(up, SMALL_BYTES);
}

Test(compression, server_default_compresses_responses) {
  start("gzip", NULL);
  long up, down;
  call("big", NULL, &up, &down);
  cr_assert_lt(down, SMALL_BYTES, "gzip response crossed in %ld bytes", down);
  call("echo", NULL, &up, &down);
  cr_assert_gt(up, MSG_BYTES);
  cr_assert_lt(down, SMALL_BYTES);
}

Test(compression, server_default_deflate) {
  start("deflate", NULL);
  long up, down;
  call("big", NULL, &up, &down);
  cr_assert_lt(down, SMALL_BYTES, "deflate response crossed in %ld bytes",
               down);
}

Test(compression, unknown_names_are_refused) {
  perfc_server_opts so;
  perfc_server_opts_init(&so);
  so.compression = "brotli";
  perfc_server *s = NULL;
  cr_assert_eq(test_server_new(&s, &so), PERFC_EINVAL);
  cr_assert_null(s);
  perfc_channel_opts co;
  perfc_channel_opts_init(&co);
  co.compression = "lz4";
  perfc_channel *c = NULL;
  cr_assert_eq(perfc_channel_new(&c, "127.0.0.1:1", &co), PERFC_EINVAL);
  cr_assert_null(c);

  start(NULL, NULL);
  Perfc__Test__V1__EchoRequest req = PERFC__TEST__V1__ECHO_REQUEST__INIT;
  Perfc__Test__V1__EchoResponse *resp = NULL;
  perfc_status st = {0};
  perfc_call_opts callo = {.compression = "zstd"};
  cr_assert_eq(
      perfc__test__v1__test_service__echo__call(ch, &req, &resp, &callo, &st),
      PERFC_STATUS_INVALID_ARGUMENT);
  cr_assert(strstr(st.message, "zstd") != NULL, "%s", st.message);
  perfc_status_reset(&st);
}
