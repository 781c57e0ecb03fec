/* test_config_resilience.c — runtime/src/config/config.c's `resilience:` section
 * and perfc_config_apply_resilience(): values parse strictly, and the
 * rate limit it attaches really refuses calls on a live server. */
#include "config/config_internal.h"
#include "test_transport.h" /* test_server_new: both transports */
#include "empty_service.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <perfc/config.h>
#include <perfc/ratelimit.h>
#include <string.h>

static perfc_config *load(const char *yaml) {
  perfc_config *cfg = NULL;
  int rc = perfc_config_load_string(&cfg, yaml, strlen(yaml), "svc.yaml");
  cr_assert_eq(rc, 0, "rc %d: %s", rc, perfc_config_last_error());
  return cfg;
}

/* The section's values as parsed (the apply function turns them into
 * interceptors; the live-server test below checks what those do). */
static int64_t res(const perfc_config *cfg, const char *name) {
  const cfg_value *v = cfg_get(cfg, "resilience", name);
  return v ? v->i : 0;
}

Test(config_resilience, values_and_defaults) {
  perfc_config *cfg = load("server:\n  threads: 1\n");
  cr_assert_eq(res(cfg, "rate_limit"), 0);
  cr_assert_eq(res(cfg, "load_shedding"), 0);
  cr_assert_eq(res(cfg, "default_timeout"), 0);
  cr_assert_not(perfc_config_is_set(cfg, "resilience.rate_limit_key"));
  perfc_config_free(cfg);

  cfg = load("resilience:\n  rate_limit: 500\n  rate_limit_burst: 50\n"
             "  rate_limit_key: x-api-key\n  load_shedding: true\n"
             "  default_timeout: 2s\n");
  cr_assert_eq(res(cfg, "rate_limit"), 500);
  cr_assert_eq(res(cfg, "rate_limit_burst"), 50);
  cr_assert_str_eq(cfg_get(cfg, "resilience", "rate_limit_key")->s,
                   "x-api-key");
  cr_assert_eq(res(cfg, "load_shedding"), 1);
  cr_assert_eq(res(cfg, "default_timeout"), 2000);
  perfc_config_free(cfg);
}

Test(config_resilience, bad_values_name_the_line_and_field) {
  perfc_config *cfg = NULL;
  const char *yaml = "resilience:\n  load_shedding: maybe\n";
  cr_assert_eq(perfc_config_load_string(&cfg, yaml, strlen(yaml), "svc.yaml"),
               PERFC_ECONFIG);
  cr_assert(strstr(perfc_config_last_error(), "svc.yaml:2:") != NULL, "%s",
            perfc_config_last_error());
  cr_assert(strstr(perfc_config_last_error(), "resilience.load_shedding") != NULL,
            "%s", perfc_config_last_error());
  yaml = "resilience:\n  rate_limits: 5\n";
  cr_assert_eq(perfc_config_load_string(&cfg, yaml, strlen(yaml), "svc.yaml"),
               PERFC_ECONFIG, "unknown key");
}

Test(config_resilience, attached_rate_limit_refuses_on_a_live_server) {
  perfc_config *cfg = load("resilience:\n  rate_limit: 1\n  rate_limit_burst: 2\n");
  perfc_server *srv;
  int port;
  cr_assert_eq(test_server_new(&srv, NULL), 0);
  cr_assert_eq(perfc_server_listen(srv, "127.0.0.1:0", &port), 0);
  cr_assert_eq(perfc_server_add_service(srv, &empty_svc, &empty_impl, NULL), 0);
  perfc_config_guards *g = NULL;
  cr_assert_eq(perfc_config_apply_resilience(cfg, srv, &g), 0);
  cr_assert_eq(perfc_server_start(srv), 0);
  perfc_channel *ch;
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  cr_assert_eq(perfc_channel_new(&ch, target, NULL), 0);
  /* A burst of 2 at 1/s: two calls pass, the third in the same instant is
   * refused with RESOURCE_EXHAUSTED. */
  int ok = 0, refused = 0;
  for (int i = 0; i < 3; i++) {
    perfc_status_code c = empty_call(ch, 0);
    ok += c == PERFC_STATUS_OK;
    refused += c == PERFC_STATUS_RESOURCE_EXHAUSTED;
  }
  cr_assert_eq(ok, 2);
  cr_assert_eq(refused, 1);
  perfc_channel_free(ch);
  perfc_server_free(srv);
  perfc_config_guards_free(g);
  perfc_config_free(cfg);
}

Test(config_resilience, per_method_rules_parse_and_refuse_garbage) {
  perfc_config *cfg = NULL;
  const char *bad[] = {
      "resilience:\n  method_timeouts: [\"/t.v1.Svc/Ping=soon\"]\n",
      "resilience:\n  method_timeouts: [\"t.v1.Svc/Ping=1s\"]\n",
      "resilience:\n  method_rate_limits: [\"/t.v1.Svc/Ping=0\"]\n",
      "resilience:\n  method_rate_limits: [\"/t.v1.Svc/Ping\"]\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    cr_assert_eq(perfc_config_load_string(&cfg, bad[i], strlen(bad[i]), "svc.yaml"),
                 PERFC_ECONFIG, "%s", bad[i]);
    cr_assert(strstr(perfc_config_last_error(), "expected /pkg.Svc/Method=") != NULL,
              "%s", perfc_config_last_error());
    cr_assert(strstr(perfc_config_last_error(), "svc.yaml:2:") != NULL, "%s",
              perfc_config_last_error());
  }
  cfg = load("resilience:\n  method_timeouts: [\"/t.v1.Svc/Ping=250ms\", "
             "\"/t.v1.Svc/=2s\"]\n  method_rate_limits: [\"/t.v1.Svc/Ping=5\"]\n");
  /* The environment replaces a list, comma-separated. */
  cr_assert_eq(perfc_config_set(cfg, "resilience.method_rate_limits",
                                "/t.v1.Svc/Ping=1", "test"),
               0, "%s", perfc_config_last_error());
  cr_assert_neq(perfc_config_set(cfg, "resilience.method_rate_limits",
                                 "/t.v1.Svc/Ping=x", "test"),
                0);
  perfc_config_free(cfg);
}

Test(config_resilience, per_method_rate_limit_applies_to_that_method_only) {
  /* Ping limited to 1/s with the default burst of 1; Up (a stream) untouched. */
  perfc_config *cfg = load("resilience:\n  method_rate_limits: [\"/t.v1.Svc/Ping=1\"]\n");
  perfc_server *srv;
  int port;
  cr_assert_eq(test_server_new(&srv, NULL), 0);
  cr_assert_eq(perfc_server_listen(srv, "127.0.0.1:0", &port), 0);
  cr_assert_eq(perfc_server_add_service(srv, &empty_svc, &empty_impl, NULL), 0);
  perfc_config_guards *g = NULL;
  cr_assert_eq(perfc_config_apply_resilience(cfg, srv, &g), 0);
  cr_assert_eq(perfc_server_start(srv), 0);
  perfc_channel *ch;
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  cr_assert_eq(perfc_channel_new(&ch, target, NULL), 0);
  cr_assert_eq(empty_call(ch, 0), PERFC_STATUS_OK);
  cr_assert_eq(empty_call(ch, 0), PERFC_STATUS_RESOURCE_EXHAUSTED);
  perfc_channel_free(ch);
  perfc_server_free(srv);
  perfc_config_guards_free(g);
  perfc_config_free(cfg);
}

/* A store that answers from a script: records what it was asked, refuses
 * after `admit` calls, or fails (-EIO) when `down`. */
static struct {
  int calls, admit, down;
  int64_t interval_us, tau_us;
  char key[128];
} fake;

/* The store runs on the server's threads and the test reads what it saw:
 * the reply's trip over the socket orders them, but TSan cannot see that. */
static pthread_mutex_t fake_mu = PTHREAD_MUTEX_INITIALIZER;

static int fake_take(void *self, const char *key, size_t len,
                     int64_t interval_us, int64_t tau_us) {
  (void)self;
  pthread_mutex_lock(&fake_mu);
  int rc = 0;
  fake.calls++;
  fake.interval_us = interval_us;
  fake.tau_us = tau_us;
  snprintf(fake.key, sizeof fake.key, "%.*s", (int)len, key);
  rc = fake.down ? PERFC_EIO : fake.calls <= fake.admit;
  pthread_mutex_unlock(&fake_mu);
  return rc;
}

Test(config_resilience, shared_rate_limits_go_through_the_store) {
  perfc_config *cfg = load(
      "resilience:\n  rate_limit_shared: true\n"
      "  rate_limit_local_percent: 50\n  rate_limit_redis_timeout: 20ms\n"
      "  method_rate_limits: [\"/t.v1.Svc/Ping=100:4\"]\n");
  cr_assert_eq(res(cfg, "rate_limit_redis_timeout"), 20);
  cr_assert_eq(cfg->rate_rules[0].burst, 4.0);
  perfc_server *srv;
  int port;
  cr_assert_eq(test_server_new(&srv, NULL), 0);
  cr_assert_eq(perfc_server_listen(srv, "127.0.0.1:0", &port), 0);
  cr_assert_eq(perfc_server_add_service(srv, &empty_svc, &empty_impl, NULL), 0);
  perfc_config_guards *g = NULL;
  /* Shared without a store: a clear configuration error. */
  cr_assert_eq(perfc_config_apply_resilience(cfg, srv, &g), PERFC_ECONFIG);
  cr_assert(strstr(perfc_last_error(), "rate_limit_shared") != NULL, "%s",
            perfc_last_error());
  perfc_ratelimit_store store = {.take = fake_take};
  memset(&fake, 0, sizeof fake);
  fake.admit = 1;
  cr_assert_eq(perfc_config_apply_resilience_store(cfg, srv, &store, &g), 0);
  cr_assert_eq(perfc_server_start(srv), 0);
  perfc_channel *ch;
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  cr_assert_eq(perfc_channel_new(&ch, target, NULL), 0);
  cr_assert_eq(empty_call(ch, 0), PERFC_STATUS_OK);
  cr_assert_eq(empty_call(ch, 0), PERFC_STATUS_RESOURCE_EXHAUSTED);
  pthread_mutex_lock(&fake_mu);
  cr_assert_eq(fake.calls, 2);
  cr_assert_eq(fake.interval_us, 10000); /* 100/s */
  cr_assert_eq(fake.tau_us, 40000);      /* burst 4 */
  cr_assert_str_eq(fake.key, "/t.v1.Svc/Ping||");
  /* The store down: the local bucket, 50 % of 100/s with burst 2. */
  fake.down = 1;
  pthread_mutex_unlock(&fake_mu);
  int ok = 0;
  for (int i = 0; i < 4; i++)
    ok += empty_call(ch, 0) == PERFC_STATUS_OK;
  cr_assert_eq(ok, 2);
  perfc_channel_free(ch);
  perfc_server_free(srv);
  perfc_config_guards_free(g);
  perfc_config_free(cfg);
}

Test(config_resilience, rate_with_burst_parses_strictly) {
  perfc_config *cfg = NULL;
  const char *bad[] = {
      "resilience:\n  method_rate_limits: [\"/t.v1.Svc/Ping=5:\"]\n",
      "resilience:\n  method_rate_limits: [\"/t.v1.Svc/Ping=5:0\"]\n",
      "resilience:\n  method_rate_limits: [\"/t.v1.Svc/Ping=5:2x\"]\n",
      "resilience:\n  rate_limit_local_percent: 0\n",
      "resilience:\n  rate_limit_local_percent: 101\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    cr_assert_eq(perfc_config_load_string(&cfg, bad[i], strlen(bad[i]),
                                          "svc.yaml"),
                 PERFC_ECONFIG, "%s", bad[i]);
  cfg = load("resilience:\n  method_rate_limits: [\"/t.v1.Svc/Ping=5:9\"]\n");
  cr_assert_eq(cfg->rate_rules[0].rate, 5.0);
  cr_assert_eq(cfg->rate_rules[0].burst, 9.0);
  perfc_config_free(cfg);
}
