/* test_tls.c — TLS and mutual TLS between a real perfc server and the
 * generated client over loopback, and every bad-file case: each must fail
 * before the server starts, with PERFC_ETLS and a message (returned and
 * logged) naming the file and the problem.
 *
 * Certificates come from tests/tls/make-certs.sh, run once per test binary
 * into a temporary directory (PERFC_MAKE_CERTS is its path). */
#include "test_service.h"

#include "perfc/log.h"
#include "perfc/tls.h"

#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The directory travels in the environment so that test processes forked
 * or spawned by criterion see what the runner created. */
static const char *dir(void) { return getenv("PERFC_TEST_TLS_DIR"); }

static char *path(const char *name) {
  static char buf[8][512];
  static int next;
  char *p = buf[next++ % 8];
  snprintf(p, sizeof buf[0], "%s/%s", dir(), name);
  return p;
}

ReportHook(PRE_ALL)(struct criterion_test_set *set) {
  (void)set;
  static char tmpl[] = "/tmp/perfc-tls-XXXXXX";
  if (mkdtemp(tmpl) == NULL)
    abort();
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "sh '%s' '%s' >/dev/null", PERFC_MAKE_CERTS, tmpl);
  if (system(cmd) != 0) {
    fprintf(stderr, "make-certs.sh failed\n");
    abort();
  }
  setenv("PERFC_TEST_TLS_DIR", tmpl, 1);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats) {
  (void)stats;
  char cmd[600];
  if (dir() != NULL && strncmp(dir(), "/tmp/perfc-tls-", 15) == 0) {
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir());
    if (system(cmd) != 0)
      fprintf(stderr, "could not remove %s\n", dir());
  }
}

#define SVC perfc__test__v1__test_service__perfc_desc

static perfc_server *srv;
static perfc_channel *ch;
static int port;

static void teardown(void) {
  perfc_channel_free(ch);
  perfc_server_free(srv);
  ch = NULL;
  srv = NULL;
}

/* Starts TestService on a TLS port; returns 0 or the error. */
static int start_tls(const perfc_tls_opts *tls) {
  int rc = test_server_new(&srv, NULL);
  if (rc == 0)
    rc = perfc_server_listen_tls(srv, "127.0.0.1:0", tls, &port);
  if (rc == 0)
    rc = perfc__test__v1__test_service__perfc_register(
        srv, &test_service_handlers, NULL);
  if (rc == 0)
    rc = perfc_server_start(srv);
  return rc;
}

static perfc_tls_opts server_opts(perfc_tls_client_auth auth) {
  perfc_tls_opts o;
  perfc_tls_opts_init(&o);
  o.cert_file = path("server.crt");
  o.key_file = path("server.key");
  o.client_auth = auth;
  if (auth != PERFC_TLS_CLIENT_AUTH_NONE)
    o.client_ca_file = path("ca.crt");
  return o;
}

/* One Echo; returns the status code, asserting the payload on OK. */
static perfc_status_code echo(perfc_channel *c, char **msg) {
  Perfc__Test__V1__EchoRequest req = PERFC__TEST__V1__ECHO_REQUEST__INIT;
  req.payload.data = (uint8_t *)"secret";
  req.payload.len = 6;
  Perfc__Test__V1__EchoResponse *resp = NULL;
  perfc_status st = {0};
  /* Generous: a loaded CI machine can take seconds for TLS handshakes, and
   * deadlines are not what these tests check. */
  perfc_call_opts co = {.timeout_ms = 30000};
  perfc_status_code code =
      perfc__test__v1__test_service__echo__call(c, &req, &resp, &co, &st);
  if (code == PERFC_STATUS_OK) {
    cr_assert_eq(resp->payload.len, 6);
    cr_assert_eq(memcmp(resp->payload.data, "secret", 6), 0);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  }
  if (msg != NULL)
    *msg = st.message ? strdup(st.message) : strdup("");
  perfc_status_reset(&st);
  return code;
}

static perfc_channel *client(const char *host, const char *ca, const char *cert,
                             const char *key, const char *override) {
  char target[128];
  snprintf(target, sizeof target, "%s:%d", host, port);
  perfc_tls_channel_opts t;
  perfc_tls_channel_opts_init(&t);
  t.root_ca_file = ca;
  t.cert_file = cert;
  t.key_file = key;
  t.server_name_override = override;
  perfc_channel *c = NULL;
  int rc = perfc_channel_new_tls(&c, target, NULL, &t);
  cr_assert_eq(rc, 0, "%s: %s", perfc_strerror(rc), perfc_tls_last_error());
  return c;
}

TestSuite(tls, .fini = teardown, .timeout = 60);

Test(tls, call_succeeds_over_tls) {
  perfc_tls_opts o = server_opts(PERFC_TLS_CLIENT_AUTH_NONE);
  cr_assert_eq(start_tls(&o), 0, "%s", perfc_tls_last_error());
  cr_assert_str_empty(perfc_tls_last_error());
  ch = client("127.0.0.1", path("ca.crt"), NULL, NULL, NULL);
  cr_assert_eq(echo(ch, NULL), PERFC_STATUS_OK);
  perfc_channel_free(ch);
  ch = client("localhost", path("ca.crt"), NULL, NULL, NULL);
  cr_assert_eq(echo(ch, NULL), PERFC_STATUS_OK);
}

Test(tls, plaintext_and_tls_ports_on_one_server) {
  perfc_tls_opts o = server_opts(PERFC_TLS_CLIENT_AUTH_NONE);
  int plain_port;
  cr_assert_eq(test_server_new(&srv, NULL), 0);
  cr_assert_eq(perfc_server_listen(srv, "127.0.0.1:0", &plain_port), 0);
  cr_assert_eq(perfc_server_listen_tls(srv, "127.0.0.1:0", &o, &port), 0);
  cr_assert_eq(perfc__test__v1__test_service__perfc_register(
                   srv, &test_service_handlers, NULL),
               0);
  cr_assert_eq(perfc_server_start(srv), 0);
  ch = client("127.0.0.1", path("ca.crt"), NULL, NULL, NULL);
  cr_assert_eq(echo(ch, NULL), PERFC_STATUS_OK);
  perfc_channel_free(ch);
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", plain_port);
  cr_assert_eq(perfc_channel_new(&ch, target, NULL), 0);
  cr_assert_eq(echo(ch, NULL), PERFC_STATUS_OK);
}

Test(tls, server_name_override_is_checked) {
  perfc_tls_opts o = server_opts(PERFC_TLS_CLIENT_AUTH_NONE);
  cr_assert_eq(start_tls(&o), 0, "%s", perfc_tls_last_error());
  ch = client("127.0.0.1", path("ca.crt"), NULL, NULL, "localhost");
  cr_assert_eq(echo(ch, NULL), PERFC_STATUS_OK);
  perfc_channel_free(ch);
  /* A name the certificate does not carry must fail the handshake. */
  ch = client("127.0.0.1", path("ca.crt"), NULL, NULL, "evil.example");
  cr_assert_eq(echo(ch, NULL), PERFC_STATUS_UNAVAILABLE);
}

Test(tls, untrusted_server_and_plaintext_client_fail) {
  perfc_tls_opts o = server_opts(PERFC_TLS_CLIENT_AUTH_NONE);
  cr_assert_eq(start_tls(&o), 0, "%s", perfc_tls_last_error());
  ch = client("127.0.0.1", path("other-ca.crt"), NULL, NULL, NULL);
  cr_assert_eq(echo(ch, NULL), PERFC_STATUS_UNAVAILABLE);
  perfc_channel_free(ch);
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  cr_assert_eq(perfc_channel_new(&ch, target, NULL), 0);
  cr_assert_eq(echo(ch, NULL), PERFC_STATUS_UNAVAILABLE);
}

Test(tls, mtls_require_needs_a_client_certificate) {
  perfc_tls_opts o = server_opts(PERFC_TLS_CLIENT_AUTH_REQUIRE);
  cr_assert_eq(start_tls(&o), 0, "%s", perfc_tls_last_error());
  ch = client("127.0.0.1", path("ca.crt"), path("client.crt"),
              path("client.key"), NULL);
  cr_assert_eq(echo(ch, NULL), PERFC_STATUS_OK);
  perfc_channel_free(ch);
  ch = client("127.0.0.1", path("ca.crt"), NULL, NULL, NULL);
  cr_assert_eq(echo(ch, NULL), PERFC_STATUS_UNAVAILABLE);
  perfc_channel_free(ch);
  /* A certificate the client CA did not sign (another CA's self-signed
   * root) is refused like none at all. */
  ch = client("127.0.0.1", path("ca.crt"), path("other-ca.crt"),
              path("other-ca.key"), NULL);
  cr_assert_eq(echo(ch, NULL), PERFC_STATUS_UNAVAILABLE);
  perfc_channel_free(ch);
  /* The server keeps serving good clients after refusing bad ones. */
  ch = client("127.0.0.1", path("ca.crt"), path("client.crt"),
              path("client.key"), NULL);
  cr_assert_eq(echo(ch, NULL), PERFC_STATUS_OK);
}

Test(tls, mtls_request_allows_clients_without_certificate) {
  perfc_tls_opts o = server_opts(PERFC_TLS_CLIENT_AUTH_REQUEST);
  cr_assert_eq(start_tls(&o), 0, "%s", perfc_tls_last_error());
  ch = client("127.0.0.1", path("ca.crt"), NULL, NULL, NULL);
  cr_assert_eq(echo(ch, NULL), PERFC_STATUS_OK);
  perfc_channel_free(ch);
  ch = client("127.0.0.1", path("ca.crt"), path("client.crt"),
              path("client.key"), NULL);
  cr_assert_eq(echo(ch, NULL), PERFC_STATUS_OK);
}

/* ---- bad files ------------------------------------------------------------
 */

static char logged[4096];
static void capture(perfc_log_level level, const char *msg, void *ud) {
  (void)ud;
  if (level == PERFC_LOG_ERROR)
    snprintf(logged, sizeof logged, "%s", msg);
}

/* Expects perfc_server_listen_tls to refuse `o` with PERFC_ETLS (or `want`),
 * a message containing `file` and `problem`, the same in the log, and a
 * server that cannot start because it has no listener. */
static void expect_refused(const perfc_tls_opts *o, int want, const char *file,
                           const char *problem) {
  logged[0] = '\0';
  perfc_log_set_sink(capture, NULL);
  cr_assert_eq(test_server_new(&srv, NULL), 0);
  int rc = perfc_server_listen_tls(srv, "127.0.0.1:0", o, &port);
  perfc_log_set_sink(NULL, NULL);
  const char *e = perfc_tls_last_error();
  cr_assert_eq(rc, want, "rc %d (%s), message: %s", rc, perfc_strerror(rc), e);
  cr_assert(strstr(e, file) != NULL, "message lacks file %s: %s", file, e);
  cr_assert(strstr(e, problem) != NULL, "message lacks \"%s\": %s", problem, e);
  cr_assert(strstr(logged, file) != NULL && strstr(logged, problem) != NULL,
            "log lacks the message: %s", logged);
  cr_assert_eq(perfc__test__v1__test_service__perfc_register(
                   srv, &test_service_handlers, NULL),
               0);
  cr_assert_eq(perfc_server_start(srv), PERFC_ESTATE,
               "a server without its TLS port must not start");
  /* The same checks are available without a server. */
  cr_assert_eq(perfc_tls_check(o), want);
  perfc_server_free(srv);
  srv = NULL;
}

static void write_file(const char *p, const char *text) {
  FILE *f = fopen(p, "w");
  cr_assert_not_null(f);
  fputs(text, f);
  fclose(f);
}

Test(tls, missing_files) {
  perfc_tls_opts o = server_opts(PERFC_TLS_CLIENT_AUTH_NONE);
  o.cert_file = path("nope.crt");
  expect_refused(&o, PERFC_ETLS, path("nope.crt"), "does not exist");
  o = server_opts(PERFC_TLS_CLIENT_AUTH_NONE);
  o.key_file = path("nope.key");
  expect_refused(&o, PERFC_ETLS, path("nope.key"), "does not exist");
  o = server_opts(PERFC_TLS_CLIENT_AUTH_REQUIRE);
  o.client_ca_file = path("nope-ca.crt");
  expect_refused(&o, PERFC_ETLS, path("nope-ca.crt"), "does not exist");
  o = server_opts(PERFC_TLS_CLIENT_AUTH_NONE);
  o.cert_file = dir();
  expect_refused(&o, PERFC_ETLS, dir(), "is not a regular file");
}

Test(tls, unreadable_file) {
  char *p = path("unreadable.key");
  char cmd[1200];
  snprintf(cmd, sizeof cmd, "cp '%s' '%s'", path("server.key"), p);
  cr_assert_eq(system(cmd), 0);
  cr_assert_eq(chmod(p, 0), 0);
  if (geteuid() == 0) {
    /* Root reads files whatever their mode; this test runs in its own
     * process, so it drops to nobody for the check (the directory must
     * then be searchable by others, the file itself stays mode 000). */
    cr_assert_eq(chmod(dir(), 0711), 0);
    if (setresgid(65534, 65534, 65534) != 0 ||
        setresuid(65534, 65534, 65534) != 0)
      cr_skip_test("cannot drop root privileges");
  }
  perfc_tls_opts o = server_opts(PERFC_TLS_CLIENT_AUTH_NONE);
  o.key_file = p;
  expect_refused(&o, PERFC_ETLS, p, "permission denied");
}

Test(tls, not_pem) {
  perfc_tls_opts o = server_opts(PERFC_TLS_CLIENT_AUTH_NONE);
  o.cert_file = path("garbage.pem");
  expect_refused(&o, PERFC_ETLS, path("garbage.pem"), "not PEM");
  o = server_opts(PERFC_TLS_CLIENT_AUTH_NONE);
  o.key_file = path("garbage.pem");
  expect_refused(&o, PERFC_ETLS, path("garbage.pem"), "not PEM");
  /* A key where the certificate belongs, and the other way round. */
  o = server_opts(PERFC_TLS_CLIENT_AUTH_NONE);
  o.cert_file = path("server.key");
  expect_refused(&o, PERFC_ETLS, path("server.key"),
                 "contains no PEM certificate");
  o = server_opts(PERFC_TLS_CLIENT_AUTH_NONE);
  o.key_file = path("server.crt");
  expect_refused(&o, PERFC_ETLS, path("server.crt"),
                 "contains no PEM private key");
  char *empty = path("empty.pem");
  write_file(empty, "");
  o = server_opts(PERFC_TLS_CLIENT_AUTH_NONE);
  o.cert_file = empty;
  expect_refused(&o, PERFC_ETLS, empty, "is empty");
}

Test(tls, key_does_not_match_certificate) {
  perfc_tls_opts o = server_opts(PERFC_TLS_CLIENT_AUTH_NONE);
  o.key_file = path("other.key");
  expect_refused(&o, PERFC_ETLS, path("other.key"),
                 "private key does not match certificate");
  /* The certificate it was checked against is named too. */
  cr_assert(strstr(perfc_tls_last_error(), path("server.crt")) != NULL);
}

Test(tls, encrypted_key) {
  perfc_tls_opts o = server_opts(PERFC_TLS_CLIENT_AUTH_NONE);
  o.key_file = path("encrypted.key");
  expect_refused(&o, PERFC_ETLS, path("encrypted.key"), "key is encrypted");
}

Test(tls, expired_and_not_yet_valid_certificates) {
  perfc_tls_opts o = server_opts(PERFC_TLS_CLIENT_AUTH_NONE);
  o.cert_file = path("expired.crt");
  o.key_file = path("expired.key");
  expect_refused(&o, PERFC_ETLS, path("expired.crt"),
                 "expired on Jan  2 00:00:00 2020 GMT");
  o.cert_file = path("notyet.crt");
  o.key_file = path("notyet.key");
  expect_refused(&o, PERFC_ETLS, path("notyet.crt"),
                 "not yet valid (valid from Jan  1 00:00:00 2099 GMT)");
}

Test(tls, bad_ca_files) {
  perfc_tls_opts o = server_opts(PERFC_TLS_CLIENT_AUTH_REQUIRE);
  o.client_ca_file = path("garbage.pem");
  expect_refused(&o, PERFC_ETLS, path("garbage.pem"), "not PEM");
  char *broken = path("broken-ca.crt");
  write_file(broken, "-----BEGIN CERTIFICATE-----\n"
                     "bm90IGEgY2VydGlmaWNhdGU=\n"
                     "-----END CERTIFICATE-----\n");
  o.client_ca_file = broken;
  expect_refused(&o, PERFC_ETLS, broken, "certificate 1 does not parse");
  o.client_ca_file = path("expired.crt");
  expect_refused(&o, PERFC_ETLS, path("expired.crt"),
                 "no certificate in it is valid now");
  o.client_ca_file = NULL;
  expect_refused(&o, PERFC_ETLS, "TLS: client_auth require",
                 "needs a client CA file");
}

Test(tls, bad_channel_files) {
  perfc_tls_channel_opts t;
  perfc_tls_channel_opts_init(&t);
  t.root_ca_file = path("garbage.pem");
  cr_assert_eq(perfc_channel_new_tls(&ch, "127.0.0.1:1", NULL, &t), PERFC_ETLS);
  cr_assert_null(ch);
  cr_assert(strstr(perfc_tls_last_error(), path("garbage.pem")) != NULL);
  cr_assert(strstr(perfc_tls_last_error(), "not PEM") != NULL);

  perfc_tls_channel_opts_init(&t);
  t.root_ca_file = path("ca.crt");
  t.cert_file = path("client.crt");
  cr_assert_eq(perfc_channel_new_tls(&ch, "127.0.0.1:1", NULL, &t), PERFC_ETLS);
  cr_assert(
      strstr(perfc_tls_last_error(), "needs both cert_file and key_file"));

  t.key_file = path("other.key");
  cr_assert_eq(perfc_channel_new_tls(&ch, "127.0.0.1:1", NULL, &t), PERFC_ETLS);
  cr_assert(strstr(perfc_tls_last_error(), "does not match certificate"));

  /* A good configuration works; like every perfc call, its success leaves
   * the thread's last error as it was (perfc_last_error()). */
  t.key_file = path("client.key");
  cr_assert_eq(perfc_channel_new_tls(&ch, "127.0.0.1:1", NULL, &t), 0);
  cr_assert_not_null(ch);
}

Test(tls, null_arguments) {
  cr_assert_eq(perfc_server_listen_tls(NULL, "127.0.0.1:0", NULL, NULL),
               PERFC_EINVAL);
  cr_assert_eq(test_server_new(&srv, NULL), 0);
  cr_assert_eq(perfc_server_listen_tls(srv, "127.0.0.1:0", NULL, NULL),
               PERFC_EINVAL);
  cr_assert_eq(perfc_channel_new_tls(NULL, "x:1", NULL, NULL), PERFC_EINVAL);
  cr_assert_eq(perfc_tls_check(NULL), PERFC_EINVAL);
  /* Checked files on a started server: ESTATE, like perfc_server_listen. */
  perfc_tls_opts o = server_opts(PERFC_TLS_CLIENT_AUTH_NONE);
  cr_assert_eq(perfc_server_listen_tls(srv, "127.0.0.1:0", &o, &port), 0);
  cr_assert_eq(perfc__test__v1__test_service__perfc_register(
                   srv, &test_service_handlers, NULL),
               0);
  cr_assert_eq(perfc_server_start(srv), 0);
  cr_assert_eq(perfc_server_listen_tls(srv, "127.0.0.1:0", &o, NULL),
               PERFC_ESTATE);
}
