/* test_tls.c — the file checks of runtime/src/transport/core/tls.c without a server:
 * chains, bundles, size limits, and that perfc_tls_last_error() is per
 * thread. Server and channel behaviour is in tests/integration/test_tls.c.
 *
 * Certificates come from tests/tls/make-certs.sh, found next to this file,
 * run once per test binary into a temporary directory. */
#include "perfc/tls.h"

#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
  static char tmpl[] = "/tmp/perfc-tls-unit-XXXXXX";
  char script[512];
  snprintf(script, sizeof script, "%s", __FILE__);
  char *slash = strrchr(script, '/');
  if (slash == NULL || mkdtemp(tmpl) == NULL)
    abort();
  snprintf(slash, sizeof script - (size_t)(slash - script),
           "/../tls/make-certs.sh");
  char cmd[1200];
  snprintf(cmd, sizeof cmd, "sh '%s' '%s' >/dev/null", script, tmpl);
  if (system(cmd) != 0)
    abort();
  setenv("PERFC_TEST_TLS_DIR", tmpl, 1);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats) {
  (void)stats;
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir());
  if (strncmp(dir(), "/tmp/perfc-tls-unit-", 20) == 0 && system(cmd) != 0)
    fprintf(stderr, "could not remove %s\n", dir());
}

/* Concatenates files into `out` (a chain or a bundle). */
static char *concat(const char *out, const char *a, const char *b) {
  char *p = path(out);
  char cmd[1800];
  snprintf(cmd, sizeof cmd, "cat '%s' '%s' > '%s'", a, b, p);
  cr_assert_eq(system(cmd), 0);
  return p;
}

static perfc_tls_opts good(void) {
  perfc_tls_opts o;
  perfc_tls_opts_init(&o);
  o.cert_file = path("server.crt");
  o.key_file = path("server.key");
  return o;
}

Test(tls, opts_init_defaults) {
  perfc_tls_opts o;
  memset(&o, 0xff, sizeof o);
  perfc_tls_opts_init(&o);
  cr_assert_null(o.cert_file);
  cr_assert_null(o.client_ca_file);
  cr_assert_eq(o.client_auth, PERFC_TLS_CLIENT_AUTH_NONE);
  perfc_tls_channel_opts c;
  memset(&c, 0xff, sizeof c);
  perfc_tls_channel_opts_init(&c);
  cr_assert_null(c.root_ca_file);
  cr_assert_null(c.server_name_override);
}

/* One error mechanism (perfc/common.h): the failure is in
 * perfc_last_error() with its code, and perfc_tls_last_error() is the same
 * string; a later success leaves it alone, as it does for every module. */
Test(tls, good_files_pass_and_failures_go_to_perfc_last_error) {
  perfc_tls_opts o = good();
  o.key_file = path("other.key");
  cr_assert_eq(perfc_tls_check(&o), PERFC_ETLS);
  cr_assert_not_null(strstr(perfc_last_error(), "does not match"), "%s",
                     perfc_last_error());
  cr_assert_eq(perfc_last_error_detail().code, PERFC_ETLS);
  cr_assert_eq(perfc_tls_last_error(), perfc_last_error());
  o = good();
  cr_assert_eq(perfc_tls_check(&o), 0, "%s", perfc_tls_last_error());
  o.client_auth = PERFC_TLS_CLIENT_AUTH_REQUIRE;
  o.client_ca_file = path("ca.crt");
  cr_assert_eq(perfc_tls_check(&o), 0, "%s", perfc_tls_last_error());
}

Test(tls, chain_is_checked_certificate_by_certificate) {
  perfc_tls_opts o = good();
  o.cert_file = concat("chain.crt", path("server.crt"), path("ca.crt"));
  cr_assert_eq(perfc_tls_check(&o), 0, "%s", perfc_tls_last_error());
  /* The key must match the first (leaf) certificate of the chain. */
  o.cert_file = concat("chain-rev.crt", path("ca.crt"), path("server.crt"));
  cr_assert_eq(perfc_tls_check(&o), PERFC_ETLS);
  cr_assert(strstr(perfc_tls_last_error(), "does not match") != NULL);
  /* An expired certificate anywhere in the chain is named by position. */
  o.cert_file =
      concat("chain-exp.crt", path("server.crt"), path("expired.crt"));
  cr_assert_eq(perfc_tls_check(&o), PERFC_ETLS);
  cr_assert(strstr(perfc_tls_last_error(), "certificate 2 (/CN=localhost) "
                                           "expired on") != NULL,
            "%s", perfc_tls_last_error());
}

Test(tls, ca_bundle_with_one_expired_certificate_is_accepted) {
  perfc_tls_opts o = good();
  o.client_auth = PERFC_TLS_CLIENT_AUTH_REQUIRE;
  o.client_ca_file = concat("bundle.crt", path("expired.crt"), path("ca.crt"));
  cr_assert_eq(perfc_tls_check(&o), 0, "%s", perfc_tls_last_error());
}

Test(tls, key_and_certificate_in_one_file) {
  perfc_tls_opts o = good();
  char *both = concat("both.pem", path("server.key"), path("server.crt"));
  o.cert_file = both;
  o.key_file = both;
  cr_assert_eq(perfc_tls_check(&o), 0, "%s", perfc_tls_last_error());
}

Test(tls, oversized_file_is_refused_without_reading_it) {
  char *big = path("big.pem");
  FILE *f = fopen(big, "w");
  cr_assert_not_null(f);
  cr_assert_eq(fseek(f, 2 * 1024 * 1024, SEEK_SET), 0);
  fputc('x', f);
  fclose(f);
  perfc_tls_opts o = good();
  o.cert_file = big;
  cr_assert_eq(perfc_tls_check(&o), PERFC_ETLS);
  cr_assert(strstr(perfc_tls_last_error(), "too large for a PEM file") != NULL,
            "%s", perfc_tls_last_error());
}

Test(tls, unknown_client_auth_is_einval) {
  perfc_tls_opts o = good();
  o.client_auth = (perfc_tls_client_auth)7;
  cr_assert_eq(perfc_tls_check(&o), PERFC_EINVAL);
  cr_assert(strstr(perfc_tls_last_error(), "client_auth") != NULL);
}

static void *other_thread(void *arg) {
  (void)arg;
  /* A fresh thread starts with no message, whatever the main thread did. */
  int clean = perfc_tls_last_error()[0] == '\0';
  perfc_tls_opts o = good();
  o.cert_file = path("nope-thread.crt");
  perfc_tls_check(&o);
  return (void *)(intptr_t)clean;
}

Test(tls, last_error_is_per_thread) {
  perfc_tls_opts o = good();
  o.cert_file = path("nope-main.crt");
  cr_assert_eq(perfc_tls_check(&o), PERFC_ETLS);
  pthread_t t;
  void *clean;
  cr_assert_eq(pthread_create(&t, NULL, other_thread, NULL), 0);
  pthread_join(t, &clean);
  cr_assert(clean != NULL, "another thread saw this thread's message");
  cr_assert(strstr(perfc_tls_last_error(), "nope-main.crt") != NULL,
            "the other thread's failure replaced ours: %s",
            perfc_tls_last_error());
}
