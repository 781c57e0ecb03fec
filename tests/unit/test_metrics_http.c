/*
 * test_metrics_http.c — unit tests for runtime/src/observe/metrics_http.c over a
 * real loopback socket with a plain POSIX client, plus `promtool check
 * metrics` on a real scrape.
 *
 * Room: unit tests (metrics module).
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "perfc/log.h"
#include "perfc/metrics_http.h"
#include "perfc/process_metrics.h"

#define PROMTOOL "/usr/bin/promtool"

/* Sends one HTTP/1.0 request (the server closes after the response) and
 * returns the whole response, malloc'd. */
static char *http(int port, const char *method, const char *path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  cr_assert_geq(fd, 0);
  struct sockaddr_in sa = {0};
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  char req[256];
  int n = snprintf(req, sizeof req, "%s %s HTTP/1.0\r\nHost: localhost\r\n\r\n",
                   method, path);
  cr_assert_eq(write(fd, req, (size_t)n), n);
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  for (;;) {
    if (len + 1 == cap)
      buf = realloc(buf, cap *= 2);
    ssize_t r = read(fd, buf + len, cap - len - 1);
    cr_assert_geq(r, 0);
    if (r == 0)
      break;
    len += (size_t)r;
  }
  buf[len] = '\0';
  close(fd);
  return buf;
}

static int status_of(const char *resp) {
  cr_assert(strncmp(resp, "HTTP/1.", 7) == 0, "%s", resp);
  return atoi(resp + 9);
}

static const char *body_of(const char *resp) {
  const char *b = strstr(resp, "\r\n\r\n");
  cr_assert_not_null(b);
  return b + 4;
}

static int count_fds(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/fd");
  struct dirent *e;
  while ((e = readdir(d)))
    n += e->d_name[0] != '.';
  closedir(d);
  return n - 1;
}

Test(metrics_http, serves_metrics_healthz_404_405) {
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_counter *c;
  cr_assert_eq(perfc_counter_new(&c, reg, "scrape_test_total", "Test."), 0);
  perfc_counter_add(c, 3);

  int fds0 = count_fds();
  perfc_metrics_http_opts o;
  perfc_metrics_http_opts_init(&o);
  o.addr = "127.0.0.1:0";
  o.registry = reg;
  perfc_metrics_http *h;
  cr_assert_eq(perfc_metrics_http_start(&h, &o), 0);
  int port = perfc_metrics_http_port(h);
  cr_assert_gt(port, 0);

  char *r = http(port, "GET", "/metrics");
  cr_assert_eq(status_of(r), 200, "%s", r);
  cr_assert_not_null(
      strcasestr(r,
                 "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
      "%s", r);
  cr_assert_str_eq(body_of(r), "# HELP scrape_test_total Test.\n"
                               "# TYPE scrape_test_total counter\n"
                               "scrape_test_total 3\n");
  free(r);

  r = http(port, "HEAD", "/metrics");
  cr_assert_eq(status_of(r), 200);
  cr_assert_str_eq(body_of(r), "");
  free(r);

  r = http(port, "GET", "/healthz");
  cr_assert_eq(status_of(r), 200);
  cr_assert_str_eq(body_of(r), "ok");
  free(r);

  perfc_metrics_http_set_serving(h, 0);
  r = http(port, "GET", "/healthz");
  cr_assert_eq(status_of(r), 503, "%s", r);
  free(r);
  perfc_metrics_http_set_serving(h, 1);
  r = http(port, "GET", "/healthz");
  cr_assert_eq(status_of(r), 200);
  free(r);

  r = http(port, "GET", "/nope");
  cr_assert_eq(status_of(r), 404);
  free(r);
  r = http(port, "GET", "/metrics/");
  cr_assert_eq(status_of(r), 404);
  free(r);

  r = http(port, "POST", "/metrics");
  cr_assert_eq(status_of(r), 405);
  cr_assert_not_null(strcasestr(r, "Allow: GET, HEAD"), "%s", r);
  free(r);

  perfc_metrics_http_stop(h);
  perfc_metrics_http_stop(NULL);
  cr_assert_eq(count_fds(), fds0, "listening socket or epoll fd leaked");
  perfc_metrics_registry_free(reg);
}

static char bind_logged[1024];
static int bind_nlogged;

static void bind_capture(perfc_log_level level, const char *msg, void *ud) {
  (void)ud;
  if (level >= PERFC_LOG_WARN) {
    bind_nlogged++;
    if (level == PERFC_LOG_ERROR)
      snprintf(bind_logged, sizeof bind_logged, "%s", msg);
  }
}

Test(metrics_http, address_errors) {
  perfc_metrics_http_opts o;
  perfc_metrics_http_opts_init(&o);
  cr_assert_str_eq(o.addr, PERFC_DEFAULT_METRICS_ADDR);
  perfc_metrics_http *h;
  const char *bad[] = {
      "127.0.0.1", "127.0.0.1:", "127.0.0.1:x", "127.0.0.1:70000",
      "::1:80",    "[::1]80",    NULL};
  for (int i = 0; bad[i]; i++) {
    o.addr = bad[i];
    cr_assert_eq(perfc_metrics_http_start(&h, &o), PERFC_EINVAL, "%s", bad[i]);
  }
  o.addr = "no-such-host.invalid:0";
  cr_assert_eq(perfc_metrics_http_start(&h, &o), PERFC_EBIND);

  /* A port already in use. */
  o.addr = "127.0.0.1:0";
  cr_assert_eq(perfc_metrics_http_start(&h, &o), 0);
  char addr[64];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", perfc_metrics_http_port(h));
  perfc_metrics_http *h2;
  o.addr = addr;
  /* Regression: this said nothing; the caller only had "cannot listen on
   * address". One line at ERROR names the address and the reason. */
  char want[256];
  snprintf(want, sizeof want,
           "level=error msg=\"metrics: cannot listen on %s: address already "
           "in use\"",
           addr);
  bind_nlogged = 0;
  perfc_log_set_sink(bind_capture, NULL);
  int busy = perfc_metrics_http_start(&h2, &o);
  perfc_log_set_sink(NULL, NULL);
  cr_assert_eq(busy, PERFC_EBIND);
  cr_assert_eq(bind_nlogged, 1);
  cr_assert_not_null(strstr(bind_logged, want), "%s", bind_logged);
  perfc_metrics_http_stop(h);

  /* IPv6 literal, when the host has IPv6 loopback. */
  o.addr = "[::1]:0";
  int rc = perfc_metrics_http_start(&h, &o);
  cr_assert(rc == 0 || rc == PERFC_EBIND);
  if (rc == 0) {
    cr_assert_gt(perfc_metrics_http_port(h), 0);
    perfc_metrics_http_stop(h);
  }
}

/* Runs promtool on a real scrape of a registry holding every kind of
 * metric, labels needing escapes, and the process metrics. */
Test(metrics_http, promtool_check_metrics_reports_no_problems) {
  if (access(PROMTOOL, X_OK) != 0) {
    cr_skip_test("promtool not found at " PROMTOOL
                 " (apt install prometheus); skipping the lint check");
  }
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  cr_assert_eq(perfc_process_metrics_register(reg), 0);

  const char *ln[] = {"grpc_service", "grpc_method", "grpc_code"};
  perfc_metrics_family_opts o;
  perfc_metrics_family_opts_init(&o);
  o.name = "grpc_server_handled_total";
  o.help = "Total number of RPCs completed on the server, regardless of "
           "success or failure.";
  o.label_names = ln;
  o.label_count = 3;
  perfc_metrics_family *f;
  cr_assert_eq(perfc_metrics_family_new(&f, reg, PERFC_METRICS_COUNTER, &o), 0);
  perfc_counter *c;
  cr_assert_eq(
      perfc_counter_get(&c, f, (const char *[]){"demo.Users", "Get", "OK"}), 0);
  perfc_counter_add(c, 10);
  cr_assert_eq(
      perfc_counter_get(&c, f,
                        (const char *[]){"we\"ird\\svc\nx", "Get", "NotFound"}),
      0);
  perfc_counter_inc(c);

  o.name = "grpc_server_handling_seconds";
  o.help = "Histogram of response latency (seconds) of gRPC that had been "
           "application-level handled by the server.";
  o.label_names = ln;
  o.label_count = 2;
  cr_assert_eq(perfc_metrics_family_new(&f, reg, PERFC_METRICS_HISTOGRAM, &o),
               0);
  perfc_histogram *hist;
  cr_assert_eq(
      perfc_histogram_get(&hist, f, (const char *[]){"demo.Users", "Get"}), 0);
  for (int i = 0; i < 100; i++)
    perfc_histogram_observe(hist, i * 0.001);

  perfc_gauge *g;
  cr_assert_eq(
      perfc_gauge_new(&g, reg, "pool_queue_depth",
                      "Jobs waiting in the worker pool.\nSecond line."),
      0);
  perfc_gauge_set(g, 0.25);

  perfc_metrics_http_opts ho;
  perfc_metrics_http_opts_init(&ho);
  ho.addr = "127.0.0.1:0";
  ho.registry = reg;
  perfc_metrics_http *h;
  cr_assert_eq(perfc_metrics_http_start(&h, &ho), 0);
  char *resp = http(perfc_metrics_http_port(h), "GET", "/metrics");
  cr_assert_eq(status_of(resp), 200);

  char path[] = "/tmp/perfc_promtool_XXXXXX";
  int fd = mkstemp(path);
  cr_assert_geq(fd, 0);
  const char *body = body_of(resp);
  cr_assert_eq(write(fd, body, strlen(body)), (ssize_t)strlen(body));
  close(fd);

  char cmd[256];
  snprintf(cmd, sizeof cmd, PROMTOOL " check metrics < %s 2>&1", path);
  FILE *p = popen(cmd, "r");
  cr_assert_not_null(p);
  char out[4096];
  size_t n = fread(out, 1, sizeof out - 1, p);
  out[n] = '\0';
  int st = pclose(p);
  unlink(path);
  cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
            "promtool failed (%d): %s\n--- scrape ---\n%s", st, out, body);
  cr_assert_str_eq(out, "", "promtool reported problems:\n%s", out);

  free(resp);
  perfc_metrics_http_stop(h);
  perfc_metrics_registry_free(reg);
}
