/* test_log.c — runtime/src/core/log.c: level filter, sink, logfmt escaping. */
#include <criterion/criterion.h>
#include "test_transport.h" /* test_server_new: both transports */
#include <perfc/log.h>
#include <stdio.h>
#include <string.h>

static char last[2048];
static int calls;

static void sink(perfc_log_level level, const char *msg, void *ud) {
  (void)level;
  (void)ud;
  calls++;
  snprintf(last, sizeof last, "%s", msg);
}

Test(log, filters_by_level_and_escapes) {
  calls = 0;
  perfc_log_set_sink(sink, NULL);
  perfc_log_set_level(PERFC_LOG_WARN);
  perfc_log(PERFC_LOG_INFO, "dropped");
  cr_assert_eq(calls, 0);
  perfc_log(PERFC_LOG_ERROR, "say \"hi\"\nnext");
  cr_assert_eq(calls, 1);
  cr_assert(strstr(last, "level=error") != NULL, "%s", last);
  cr_assert(strstr(last, "msg=\"say \\\"hi\\\"\\nnext\"") != NULL, "%s", last);
  cr_assert(strncmp(last, "ts=", 3) == 0);
  perfc_log_set_sink(NULL, NULL);
  perfc_log_set_level(PERFC_LOG_INFO);
}

Test(log, parse_levels) {
  cr_assert_eq(perfc_log_level_parse("debug"), PERFC_LOG_DEBUG);
  cr_assert_eq(perfc_log_level_parse("WARN"), PERFC_LOG_WARN);
  cr_assert_eq(perfc_log_level_parse("warning"), PERFC_LOG_WARN);
  cr_assert_eq(perfc_log_level_parse("off"), PERFC_LOG_OFF);
  cr_assert_eq(perfc_log_level_parse("loud"), -1);
  cr_assert_eq(perfc_log_level_parse(NULL), -1);
}

Test(log, json_lines_with_fields) {
  calls = 0;
  perfc_log_set_sink(sink, NULL);
  perfc_log_set_format(PERFC_LOG_JSON);
  perfc_log_field f[] = {{"method", "/a.B/C"}, {"note", "tab\there \"q\""}};
  perfc_log_fields(PERFC_LOG_ERROR, f, 2, "done %d", 7);
  cr_assert_eq(calls, 1);
  cr_assert(strncmp(last, "{\"ts\":\"", 7) == 0, "%s", last);
  cr_assert(strstr(last, "\"level\":\"error\",\"msg\":\"done 7\",\"method\":\"/a.B/C\","
                         "\"note\":\"tab\\there \\\"q\\\"\"}") != NULL,
            "%s", last);
  perfc_log_set_format(PERFC_LOG_LOGFMT);
  perfc_log_fields(PERFC_LOG_ERROR, f, 2, "done");
  cr_assert(strstr(last, "msg=\"done\" method=/a.B/C note=\"tab\\there \\\"q\\\"\"") != NULL,
            "%s", last);
  perfc_log_set_sink(NULL, NULL);
}

Test(log, parse_formats) {
  cr_assert_eq(perfc_log_format_parse("json"), PERFC_LOG_JSON);
  cr_assert_eq(perfc_log_format_parse("LOGFMT"), PERFC_LOG_LOGFMT);
  cr_assert_eq(perfc_log_format_parse("xml"), -1);
}

/* ---- bounded records and the per-site rate limit (issue #13, 11) ---- */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "empty_service.h"

/* A sink for many threads: counts records, the longest, and keeps the
 * first record that contains `want` (when set). */
static pthread_mutex_t rec_mu = PTHREAD_MUTEX_INITIALIZER;
static int rec_n, rec_match_n;
static size_t rec_longest;
static const char *rec_want;
static char rec_first[2048], rec_last[2048];

static void rec_sink(perfc_log_level level, const char *msg, void *ud) {
  (void)level;
  (void)ud;
  pthread_mutex_lock(&rec_mu);
  rec_n++;
  if (strlen(msg) > rec_longest)
    rec_longest = strlen(msg);
  if (rec_want == NULL || strstr(msg, rec_want) != NULL) {
    if (rec_match_n++ == 0)
      snprintf(rec_first, sizeof rec_first, "%s", msg);
    snprintf(rec_last, sizeof rec_last, "%s", msg);
  }
  pthread_mutex_unlock(&rec_mu);
}

static void rec_reset(const char *want) {
  pthread_mutex_lock(&rec_mu);
  rec_n = rec_match_n = 0;
  rec_longest = 0;
  rec_want = want;
  rec_first[0] = rec_last[0] = '\0';
  pthread_mutex_unlock(&rec_mu);
  perfc_log_set_sink(rec_sink, NULL);
}

static char big_value[8193];

static void fill_big(void) {
  memset(big_value, 'x', sizeof big_value - 1);
  big_value[sizeof big_value - 1] = '\0';
}

/* 5,000 identical client-caused warnings with an 8 KiB value: exactly the
 * burst of 10 lines gets out, each capped, and the other 4,990 are counted
 * in the counter and in the exported metric. */
Test(log, ratelimit_bounds_5000_identical_warnings) {
  fill_big();
  cr_assert_eq(perfc_log_set_ratelimit(1, 10, 60000), 0);
  rec_reset(NULL);
  for (int i = 0; i < 5000; i++)
    perfc_log_ratelimited(PERFC_LOG_WARN, PERFC_LOG_SITE,
                          "invalid grpc-timeout %s", big_value);
  cr_assert_eq(rec_n, 10);
  cr_assert_eq(perfc_log_suppressed_total(PERFC_LOG_WARN), 4990);
  cr_assert_eq(perfc_log_suppressed_total(PERFC_LOG_ERROR), 0);
  cr_assert_leq(rec_longest, PERFC_LOG_MAX_LINE_BYTES);
  /* 512 bytes of message: 480 shown, the mark, and the other 7,733 of the
   * 8,213 counted. */
  cr_assert(strstr(rec_last, "msg=\"invalid grpc-timeout xxx") != NULL, "%s",
            rec_last);
  cr_assert(strstr(rec_last, "x\xe2\x80\xa6(+7733 bytes)\"") != NULL, "%s",
            rec_last);

  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  cr_assert_eq(perfc_process_metrics_register(reg), 0);
  char *text;
  size_t len;
  cr_assert_eq(perfc_metrics_registry_render(reg, &text, &len), 0);
  cr_assert(strstr(text, "# TYPE perfc_log_suppressed_total counter\n") !=
            NULL);
  cr_assert(strstr(text, "perfc_log_suppressed_total{level=\"warn\"} 4990\n") !=
                NULL,
            "%s", text);
  cr_assert(strstr(text, "perfc_log_suppressed_total{level=\"info\"} 0\n") !=
            NULL);
  free(text);
  perfc_metrics_registry_free(reg);
  perfc_log_set_sink(NULL, NULL);
}

/* After the burst, one record per interval; the first one after a pause
 * says how many were dropped. Other sites keep their own budget. */
Test(log, ratelimit_refills_and_reports_what_it_dropped) {
  cr_assert_eq(perfc_log_set_ratelimit(1, 2, 200), 0);
  rec_reset(NULL);
  for (int i = 0; i < 1000; i++)
    perfc_log_ratelimited(PERFC_LOG_WARN, "site-a", "bad header %d", i);
  cr_assert_eq(rec_n, 2);
  cr_assert(strstr(rec_last, "bad header 1\"") != NULL, "%s", rec_last);
  cr_assert(strstr(rec_last, "suppressed") == NULL, "%s", rec_last);

  perfc_log_ratelimited(PERFC_LOG_ERROR, "site-b", "other site");
  cr_assert_eq(rec_n, 3, "a second site has a budget of its own");

  struct timespec pause = {0, 450 * 1000000L}; /* two intervals and more */
  nanosleep(&pause, NULL);
  perfc_log_ratelimited(PERFC_LOG_WARN, "site-a", "bad header %d", 1000);
  cr_assert_eq(rec_n, 4);
  cr_assert(strstr(rec_last, "msg=\"bad header 1000\" suppressed=998") != NULL,
            "%s", rec_last);
  perfc_log_ratelimited(PERFC_LOG_WARN, "site-a", "bad header %d", 1001);
  cr_assert_eq(rec_n, 5, "the pause refilled two records' worth");
  cr_assert(strstr(rec_last, "suppressed") == NULL, "%s", rec_last);
  cr_assert_eq(perfc_log_suppressed_total(PERFC_LOG_WARN), 998);

  /* JSON carries the count as a field too. */
  perfc_log_set_format(PERFC_LOG_JSON);
  for (int i = 0; i < 5; i++)
    perfc_log_fields_ratelimited(PERFC_LOG_WARN, "site-a", NULL, 0, "j");
  nanosleep(&pause, NULL);
  perfc_log_fields_ratelimited(PERFC_LOG_WARN, "site-a", NULL, 0, "j");
  cr_assert(strstr(rec_last, "\"msg\":\"j\",\"suppressed\":\"5\"}") != NULL,
            "%s", rec_last);
  perfc_log_set_format(PERFC_LOG_LOGFMT);

  /* Off: everything through, nothing counted. */
  cr_assert_eq(perfc_log_set_ratelimit(0, 0, 0), 0);
  rec_reset(NULL);
  for (int i = 0; i < 100; i++)
    perfc_log_ratelimited(PERFC_LOG_WARN, "site-a", "x");
  cr_assert_eq(rec_n, 100);
  cr_assert_eq(perfc_log_suppressed_total(PERFC_LOG_WARN), 1003);
  cr_assert_eq(perfc_log_set_ratelimit(1, 0, 1000), PERFC_EINVAL);
  cr_assert_eq(perfc_log_set_ratelimit(1, 5, 0), PERFC_EINVAL);
  cr_assert_eq(perfc_log_set_ratelimit(1, 1000001, 1000), PERFC_EINVAL);
  cr_assert_eq(perfc_log_set_ratelimit(1, 5, 24 * 3600 * 1000 + 1),
               PERFC_EINVAL);
  perfc_log_set_sink(NULL, NULL);
}

static void *hammer(void *arg) {
  (void)arg;
  for (int i = 0; i < 5000; i++)
    perfc_log_ratelimited(PERFC_LOG_WARN, "shared-site", "flood %d", i);
  return NULL;
}

/* Four threads on one site: the atomic bucket lets exactly the burst
 * through, and every other record is counted once. */
Test(log, ratelimit_is_exact_across_threads) {
  cr_assert_eq(perfc_log_set_ratelimit(1, 10, 60000), 0);
  rec_reset(NULL);
  pthread_t t[4];
  for (int i = 0; i < 4; i++)
    cr_assert_eq(pthread_create(&t[i], NULL, hammer, NULL), 0);
  for (int i = 0; i < 4; i++)
    pthread_join(t[i], NULL);
  cr_assert_eq(rec_n, 10);
  cr_assert_eq(perfc_log_suppressed_total(PERFC_LOG_WARN), 19990);
  perfc_log_set_sink(NULL, NULL);
}

/* Every record is bounded, rate-limited or not: long field values are cut
 * (never inside a UTF-8 sequence), and fields beyond the line's room are
 * dropped and counted, so a JSON line still closes. */
Test(log, values_and_lines_are_capped) {
  fill_big();
  rec_reset(NULL);
  perfc_log_field f[] = {{"value", big_value}};
  perfc_log_fields(PERFC_LOG_WARN, f, 1, "m");
  /* 128 bytes of value: 96 shown, then the mark for the other 8,096. */
  char want[160];
  snprintf(want, sizeof want, "value=\"%.96s\xe2\x80\xa6(+8096 bytes)\"",
           big_value);
  cr_assert(strstr(rec_last, want) != NULL, "%s", rec_last);

  static char accents[401]; /* 200 x "é" (c3 a9) */
  for (int i = 0; i < 200; i++)
    memcpy(accents + 2 * i, "\xc3\xa9", 2);
  perfc_log_field g[] = {{"v", accents}};
  perfc_log_fields(PERFC_LOG_WARN, g, 1, "m");
  const char *v = strstr(rec_last, "v=\"");
  cr_assert_not_null(v, "%s", rec_last);
  const char *mark = strstr(v, "\xe2\x80\xa6(+");
  cr_assert_not_null(mark);
  cr_assert_eq((mark - (v + 3)) % 2, 0, "cut inside a sequence: %s", rec_last);
  cr_assert_eq(mark - (v + 3), 96);
  cr_assert(strstr(mark, "(+304 bytes)") != NULL, "%s", rec_last);

  perfc_log_set_format(PERFC_LOG_JSON);
  perfc_log_field many[40];
  char keys[40][8];
  for (int i = 0; i < 40; i++) {
    snprintf(keys[i], sizeof keys[i], "k%d", i);
    many[i].key = keys[i];
    many[i].value = big_value;
  }
  perfc_log_fields(PERFC_LOG_WARN, many, 40, "%s", big_value);
  size_t n = strlen(rec_last);
  cr_assert_leq(n, PERFC_LOG_MAX_LINE_BYTES);
  cr_assert_eq(rec_last[n - 1], '}', "%s", rec_last);
  cr_assert(strstr(rec_last, "\"fields_dropped\":\"") != NULL, "%s", rec_last);
  perfc_log_set_format(PERFC_LOG_LOGFMT);
  perfc_log_set_sink(NULL, NULL);
}

/* ---- end to end: the gRPC core's own warning about a bad grpc-timeout,
 * through grpc_util.c's route. A raw HTTP/2 client (preface, SETTINGS, one
 * HEADERS frame per request, HPACK literals) sends an 8,000-byte invalid
 * grpc-timeout; the core logs "Error parsing metadata ... value=...". */

static size_t hpack_int(uint8_t *out, uint8_t first, int prefix_bits,
                        size_t v) {
  size_t max = (1u << prefix_bits) - 1, n = 0;
  if (v < max) {
    out[n++] = (uint8_t)(first | v);
    return n;
  }
  out[n++] = (uint8_t)(first | max);
  v -= max;
  while (v >= 128) {
    out[n++] = (uint8_t)(0x80 | (v & 0x7f));
    v >>= 7;
  }
  out[n++] = (uint8_t)v;
  return n;
}

/* A literal header field without indexing, new name (RFC 7541 6.2.2). */
static size_t hpack_lit(uint8_t *out, const char *k, const char *v) {
  size_t n = 0, kl = strlen(k), vl = strlen(v);
  out[n++] = 0x00;
  n += hpack_int(out + n, 0, 7, kl);
  memcpy(out + n, k, kl);
  n += kl;
  n += hpack_int(out + n, 0, 7, vl);
  memcpy(out + n, v, vl);
  return n + vl;
}

static void send_all(int fd, const void *p, size_t n) {
  cr_assert_eq(send(fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
}

static void send_bad_timeout(int fd, uint32_t stream, const char *timeout) {
  static uint8_t block[16384];
  size_t n = 0;
  n += hpack_lit(block + n, ":method", "POST");
  n += hpack_lit(block + n, ":scheme", "http");
  n += hpack_lit(block + n, ":path", "/t.v1.Svc/Ping");
  n += hpack_lit(block + n, ":authority", "localhost");
  n += hpack_lit(block + n, "content-type", "application/grpc");
  n += hpack_lit(block + n, "te", "trailers");
  n += hpack_lit(block + n, "grpc-timeout", timeout);
  uint8_t hdr[9] = {(uint8_t)(n >> 16),
                    (uint8_t)(n >> 8),
                    (uint8_t)n,
                    0x01 /* HEADERS */,
                    0x05 /* END_STREAM|END_HEADERS */,
                    (uint8_t)(stream >> 24),
                    (uint8_t)(stream >> 16),
                    (uint8_t)(stream >> 8),
                    (uint8_t)stream};
  send_all(fd, hdr, sizeof hdr);
  send_all(fd, block, n);
}

Test(log, core_warning_about_an_8k_grpc_timeout_is_capped_and_limited) {
  if (test_transport_is_h2())
    cr_skip_test("the C core's own log line about an unparseable grpc-timeout "
                 "(routed through perfc_log); h2 logs nothing per request "
                 "and refuses the 8 KiB header block (max_metadata_bytes)");
  perfc_server *srv;
  int port;
  cr_assert_eq(test_server_new(&srv, NULL), 0);
  cr_assert_eq(perfc_server_listen(srv, "127.0.0.1:0", &port), 0);
  cr_assert_eq(perfc_server_add_service(srv, &empty_svc, &empty_impl, NULL), 0);
  cr_assert_eq(perfc_server_start(srv), 0);
  cr_assert_eq(perfc_log_set_ratelimit(1, 10, 60000), 0);
  rec_reset("grpc-timeout");

  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {0};
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  send_all(fd, preface, sizeof preface - 1);
  static const uint8_t settings[9] = {0, 0, 0, 0x04, 0, 0, 0, 0, 0};
  send_all(fd, settings, sizeof settings);
  static char bad[8001];
  memset(bad, 'x', sizeof bad - 1);
  enum { REQUESTS = 30 };
  for (uint32_t i = 0; i < REQUESTS; i++)
    send_bad_timeout(fd, 1 + 2 * i, bad);

  /* The core parses on its own threads: wait until all 30 are accounted
   * for, as lines or as drops, reading (and dropping) what it answers. */
  struct timeval tv = {0, 100 * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char sink_buf[4096];
  for (int waited = 0; waited < 100; waited++) {
    pthread_mutex_lock(&rec_mu);
    int lines = rec_match_n;
    pthread_mutex_unlock(&rec_mu);
    if (lines + (int)perfc_log_suppressed_total(PERFC_LOG_WARN) >= REQUESTS)
      break;
    (void)!recv(fd, sink_buf, sizeof sink_buf, 0);
  }
  close(fd);
  perfc_server_free(srv);

  cr_assert_eq(rec_match_n, 10, "%d lines", rec_match_n);
  cr_assert_eq(perfc_log_suppressed_total(PERFC_LOG_WARN), REQUESTS - 10);
  cr_assert_leq(rec_longest, PERFC_LOG_MAX_LINE_BYTES);
  /* The value is cut to 128 bytes where the core's message shows it. */
  char want[200];
  snprintf(want, sizeof want,
           "key=grpc-timeout value=%.128s\xe2\x80\xa6(+7872 bytes)\"", bad);
  cr_assert(strstr(rec_first,
                   "level=warn msg=\"grpc: Error parsing metadata") != NULL,
            "%s", rec_first);
  cr_assert(strstr(rec_first, want) != NULL, "%s", rec_first);
  perfc_log_set_sink(NULL, NULL);
}
