/* test_config.c — runtime/src/config/config.c: the YAML loader, its exact error
 * messages, environment overrides, flags, defaults and the sample service's
 * configuration file. Criterion runs each test in its own process, so
 * setenv() in one test cannot leak into another. */
#include <criterion/criterion.h>
#include <perfc/config.h>
#include <perfc/log.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static perfc_config *load_ok(const char *yaml) {
  perfc_config *cfg = NULL;
  int rc = perfc_config_load_string(&cfg, yaml, strlen(yaml), "svc.yaml");
  cr_assert_eq(rc, 0, "rc %d: %s", rc, perfc_config_last_error());
  cr_assert_not_null(cfg);
  cr_assert_str_empty(perfc_config_last_error());
  return cfg;
}

/* Loading must fail with PERFC_ECONFIG and exactly `want`. */
static void load_fails(const char *yaml, const char *want) {
  perfc_config *cfg = (perfc_config *)1;
  int rc = perfc_config_load_string(&cfg, yaml, strlen(yaml), "svc.yaml");
  cr_assert_eq(rc, PERFC_ECONFIG, "rc %d for:\n%s", rc, yaml);
  cr_assert_null(cfg);
  cr_assert_str_eq(perfc_config_last_error(), want);
}

static const char FULL[] = "server:\n"
                           "  listen: [\"127.0.0.1:7001\", \"[::1]:7002\"]\n"
                           "  threads: 3\n"
                           "  requests_per_method: 16\n"
                           "  default_executor: pool\n"
                           "  pool_threads: 12\n"
                           "  pool_queue: 100\n"
                           "  keepalive_time: 1m30s\n"
                           "  keepalive_timeout: 5s\n"
                           "  keepalive_permit_without_calls: true\n"
                           "  poller_wakeup_preemption: true\n"
                           "  worker_wakeup_preemption: true\n"
                           "  stream_flush_every_send: true\n"
                           "  min_ping_interval: 250ms\n"
                           "  max_concurrent_streams: 77\n"
                           "  max_recv_message_size: 8MiB\n"
                           "  max_send_message_size: unlimited\n"
                           "  max_connection_idle: 2m\n"
                           "  max_connection_age: 1h\n"
                           "  max_connection_age_grace: 0\n"
                           "  shutdown_grace: 7s\n"
                           "  compression: gzip\n"
                           "  tcp_tx_zerocopy: true\n"
                           "  channelz: on\n"
                           "tls:\n"
                           "  cert_file: /etc/s/tls.crt\n"
                           "  key_file: /etc/s/tls.key\n"
                           "  client_ca_file: /etc/s/ca.crt\n"
                           "  client_auth: require\n"
                           "metrics:\n"
                           "  listen: \"127.0.0.1:9100\"\n"
                           "  handling_time_histogram: false\n"
                           "  buckets: [0.01, 0.1, 1]\n"
                           "logging:\n"
                           "  level: warn\n"
                           "  format: json\n"
                           "  access_log: yes\n"
                           "redis:\n"
                           "  address: \"cache:6380\"\n"
                           "  pool_size: 4\n"
                           "  connect_timeout: 2s\n"
                           "  command_timeout: 50ms\n"
                           "postgres:\n"
                           "  dsn: \"host=db dbname=users\"\n"
                           "  replica_dsn: \"host=db-ro dbname=users\"\n"
                           "  pool_size: 20\n"
                           "  connect_timeout: 3s\n"
                           "  statement_timeout: 0\n"
                           "  acquire_timeout: 500ms\n"
                           "cache:\n"
                           "  enabled: false\n"
                           "  l1_max_bytes: 16KiB\n"
                           "  default_ttl: 10m\n"
                           "  negative_ttl: 30s\n"
                           "  jitter_percent: 25\n";

Test(config, full_file_fills_every_option_struct) {
  perfc_config *cfg = load_ok(FULL);

  cr_assert_eq(perfc_config_listen_count(cfg), 2);
  cr_assert_str_eq(perfc_config_listen_at(cfg, 0), "127.0.0.1:7001");
  cr_assert_str_eq(perfc_config_listen_at(cfg, 1), "[::1]:7002");
  cr_assert_null(perfc_config_listen_at(cfg, 2));

  perfc_server_opts o;
  perfc_server_opts_init(&o);
  cr_assert_eq(perfc_config_apply_server(cfg, &o), 0);
  cr_assert_eq(o.threads, 3);
  cr_assert_eq(o.requests_per_method, 16);
  cr_assert_eq(o.default_executor, PERFC_EXEC_POOL);
  cr_assert_eq(o.pool_threads, 12);
  cr_assert_eq(o.pool_queue, 100);
  cr_assert_eq(o.keepalive_time_ms, 90000);
  cr_assert_eq(o.keepalive_timeout_ms, 5000);
  cr_assert_eq(o.keepalive_permit_without_calls, 1);
  cr_assert_eq(o.poller_wakeup_preemption, 1);
  cr_assert_eq(o.worker_wakeup_preemption, 1);
  cr_assert_eq(o.stream_flush_every_send, 1);
  cr_assert_eq(o.min_ping_interval_ms, 250);
  cr_assert_eq(o.max_concurrent_streams, 77);
  cr_assert_eq(o.max_recv_message_bytes, 8 * 1024 * 1024);
  cr_assert_eq(o.max_send_message_bytes, -1);
  cr_assert_eq(o.max_connection_idle_ms, 120000);
  cr_assert_eq(o.max_connection_age_ms, 3600000);
  cr_assert_eq(o.max_connection_age_grace_ms, 0);
  cr_assert_eq(o.shutdown_grace_ms, 7000);
  cr_assert_str_eq(o.compression, "gzip");
  cr_assert_eq(o.tcp_tx_zerocopy, 1);
  cr_assert_eq(o.channelz, 1);

  perfc_tls_opts t;
  perfc_tls_opts_init(&t);
  cr_assert(perfc_config_tls_enabled(cfg));
  cr_assert_eq(perfc_config_apply_tls(cfg, &t), 0);
  cr_assert_str_eq(t.cert_file, "/etc/s/tls.crt");
  cr_assert_str_eq(t.key_file, "/etc/s/tls.key");
  cr_assert_str_eq(t.client_ca_file, "/etc/s/ca.crt");
  cr_assert_eq(t.client_auth, PERFC_TLS_CLIENT_AUTH_REQUIRE);

  perfc_metrics_http_opts m;
  perfc_metrics_http_opts_init(&m);
  cr_assert(perfc_config_metrics_enabled(cfg));
  cr_assert_eq(perfc_config_apply_metrics_http(cfg, &m), 0);
  cr_assert_str_eq(m.addr, "127.0.0.1:9100");
  perfc_grpc_metrics_opts g;
  perfc_grpc_metrics_opts_init(&g);
  cr_assert_eq(perfc_config_apply_grpc_metrics(cfg, &g), 0);
  cr_assert_eq(g.handling_time_histogram, -1);
  cr_assert_eq(g.bucket_count, 3);
  cr_assert_float_eq(g.buckets[0], 0.01, 1e-12);
  cr_assert_float_eq(g.buckets[2], 1.0, 1e-12);

  cr_assert_eq(perfc_config_apply_logging(cfg), 0);
  cr_assert_eq(perfc_log_get_level(), PERFC_LOG_WARN);
  cr_assert_eq(perfc_log_get_format(), PERFC_LOG_JSON);
  cr_assert(perfc_config_access_log(cfg));

  const perfc_config_redis *r = perfc_config_get_redis(cfg);
  cr_assert_str_eq(r->address, "cache:6380");
  cr_assert_eq(r->pool_size, 4);
  cr_assert_eq(r->connect_timeout_ms, 2000);
  cr_assert_eq(r->command_timeout_ms, 50);
  const perfc_config_postgres *p = perfc_config_get_postgres(cfg);
  cr_assert_str_eq(p->dsn, "host=db dbname=users");
  cr_assert_str_eq(p->replica_dsn, "host=db-ro dbname=users");
  cr_assert_eq(p->pool_size, 20);
  cr_assert_eq(p->connect_timeout_ms, 3000);
  cr_assert_eq(p->statement_timeout_ms, 0);
  cr_assert_eq(p->acquire_timeout_ms, 500);
  const perfc_config_cache *c = perfc_config_get_cache(cfg);
  cr_assert_eq(c->l1_max_bytes, 16 * 1024);
  cr_assert_eq(c->default_ttl_ms, 600000);
  cr_assert_eq(c->negative_ttl_ms, 30000);
  cr_assert_eq(c->jitter_percent, 25);
  cr_assert_eq(c->enabled, 0);
  perfc_config_free(cfg);
}

static void assert_defaults(perfc_config *cfg) {
  cr_assert_eq(perfc_config_listen_count(cfg), 1);
  cr_assert_str_eq(perfc_config_listen_at(cfg, 0), PERFC_DEFAULT_CONFIG_LISTEN);
  perfc_server_opts o, d;
  perfc_server_opts_init(&o);
  perfc_server_opts_init(&d);
  cr_assert_eq(perfc_config_apply_server(cfg, &o), 0);
  cr_assert_eq(memcmp(&o, &d, sizeof o), 0, "server opts changed");
  cr_assert_not(perfc_config_tls_enabled(cfg));
  cr_assert(perfc_config_metrics_enabled(cfg));
  perfc_metrics_http_opts m = {0};
  perfc_config_apply_metrics_http(cfg, &m);
  cr_assert_null(m.addr);
  perfc_grpc_metrics_opts g = {0};
  perfc_config_apply_grpc_metrics(cfg, &g);
  cr_assert_eq(g.handling_time_histogram, 0);
  cr_assert_null(g.buckets);
  cr_assert_not(perfc_config_access_log(cfg));
  const perfc_config_redis *r = perfc_config_get_redis(cfg);
  cr_assert_str_eq(r->address, PERFC_DEFAULT_REDIS_ADDRESS);
  cr_assert_eq(r->pool_size, PERFC_DEFAULT_REDIS_POOL_SIZE);
  cr_assert_eq(r->command_timeout_ms, PERFC_DEFAULT_REDIS_COMMAND_TIMEOUT_MS);
  const perfc_config_postgres *p = perfc_config_get_postgres(cfg);
  cr_assert_null(p->dsn);
  cr_assert_null(p->replica_dsn);
  cr_assert_eq(p->pool_size, PERFC_DEFAULT_POSTGRES_POOL_SIZE);
  cr_assert_eq(p->acquire_timeout_ms,
               PERFC_DEFAULT_POSTGRES_ACQUIRE_TIMEOUT_MS);
  const perfc_config_cache *c = perfc_config_get_cache(cfg);
  cr_assert_eq(c->l1_max_bytes, PERFC_DEFAULT_CACHE_L1_MAX_BYTES);
  cr_assert_eq(c->default_ttl_ms, PERFC_DEFAULT_CACHE_TTL_MS);
  cr_assert_eq(c->negative_ttl_ms, PERFC_DEFAULT_CACHE_NEGATIVE_TTL_MS);
  cr_assert_eq(c->jitter_percent, PERFC_DEFAULT_CACHE_JITTER_PERCENT);
  cr_assert_eq(c->enabled, 1);
}

Test(config, defaults_without_file_empty_file_or_sections) {
  perfc_config *cfg = NULL;
  cr_assert_eq(perfc_config_load(&cfg, NULL), 0);
  assert_defaults(cfg);
  perfc_config_free(cfg);
  cfg = load_ok("");
  assert_defaults(cfg);
  perfc_config_free(cfg);
  cfg = load_ok("# only a comment\n");
  assert_defaults(cfg);
  perfc_config_free(cfg);
  cfg = load_ok("server: {}\nredis: {}\n");
  assert_defaults(cfg);
  perfc_config_free(cfg);
  /* Only the keys given change; the rest of a section keeps defaults. */
  cfg = load_ok("redis:\n  pool_size: 2\n");
  cr_assert_eq(perfc_config_get_redis(cfg)->pool_size, 2);
  cr_assert_str_eq(perfc_config_get_redis(cfg)->address,
                   PERFC_DEFAULT_REDIS_ADDRESS);
  perfc_config_free(cfg);
  perfc_config_free(NULL);
}

Test(config, sample_service_file_loads) {
  perfc_config *cfg = NULL;
  const char *path =
      PERFC_SOURCE_DIR "/examples/user-service/config/user-service.yaml";
  int rc = perfc_config_load(&cfg, path);
  cr_assert_eq(rc, 0, "%s", perfc_config_last_error());
  cr_assert_str_eq(perfc_config_listen_at(cfg, 0), "0.0.0.0:50051");
  perfc_server_opts o;
  perfc_server_opts_init(&o);
  perfc_config_apply_server(cfg, &o);
  cr_assert_eq(o.default_executor, PERFC_EXEC_POOL);
  cr_assert_eq(o.max_connection_age_ms, 30 * 60 * 1000);
  cr_assert_not_null(perfc_config_get_postgres(cfg)->dsn);
  cr_assert_eq(perfc_config_get_cache(cfg)->default_ttl_ms, 600000);
  perfc_config_free(cfg);
}

Test(config, yaml_syntax_errors_name_line_and_column) {
  load_fails("server:\n  threads: 3\n name: [\n",
             "config: svc.yaml:3:2: YAML syntax error: did not find expected "
             "key while parsing a block mapping");
  load_fails("server:\n  threads: \"3\n",
             "config: svc.yaml:3:1: YAML syntax error: found unexpected end "
             "of stream while scanning a quoted scalar");
}

Test(config, duplicate_keys_and_second_documents_are_errors) {
  load_fails("server:\n  threads: 1\n  threads: 2\n",
             "config: svc.yaml:3:3: server.threads: duplicate key (first at "
             "line 2)");
  load_fails("redis: {}\nserver: {}\nredis: {}\n",
             "config: svc.yaml:3:1: redis: duplicate key (first at line 1)");
  load_fails("server: {}\n---\nserver:\n  threads: 2\n",
             "config: svc.yaml:2:1: a second YAML document; a configuration "
             "file holds one");
  /* The same key in two sections is no duplicate. */
  perfc_config_free(load_ok("metrics:\n  listen: \"a:1\"\nserver:\n  "
                            "listen: [\"b:2\"]\n"));
}

Test(config, unknown_keys_are_errors) {
  load_fails("server:\n  threads: 2\n  thread: 4\n",
             "config: svc.yaml:3:3: server.thread: unknown key (expected one "
             "of: listen, threads, requests_per_method, default_executor, "
             "pool_threads, pool_queue, keepalive_time, keepalive_timeout, "
             "keepalive_permit_without_calls, min_ping_interval, "
             "max_concurrent_streams, max_recv_message_size, "
             "max_send_message_size, max_connection_idle, max_connection_age, "
             "max_connection_age_grace, shutdown_grace, compression, "
             "poller_wakeup_preemption, worker_wakeup_preemption, "
             "stream_flush_every_send, tcp_tx_zerocopy, channelz)");
  load_fails("logging:\n  level: info\nservr:\n  threads: 1\n",
             "config: svc.yaml:3:1: servr: unknown key (expected one of: "
             "server, tls, metrics, logging, redis, postgres, cache, resilience)");
  load_fails("cache:\n  ttl: 1m\n",
             "config: svc.yaml:2:3: cache.ttl: unknown key (expected one of: "
             "enabled, l1_max_bytes, default_ttl, negative_ttl, jitter_percent, "
             "pending_file)");
}

Test(config, wrong_types) {
  load_fails("server:\n  threads: [4]\n",
             "config: svc.yaml:2:12: server.threads: wrong type: expected a "
             "single value, got a list");
  load_fails("server:\n  listen: \"0.0.0.0:1\"\n",
             "config: svc.yaml:2:11: server.listen: wrong type: expected a "
             "list, got a single value");
  load_fails("redis: 1\n", "config: svc.yaml:1:8: redis: wrong type: "
                           "expected a mapping, got a single value");
  load_fails("- a\n", "config: svc.yaml: wrong type: expected a mapping, got "
                      "a list");
}

Test(config, bad_values_name_the_field) {
  load_fails("server:\n  threads: four\n",
             "config: svc.yaml:2:12: server.threads: invalid value 'four': "
             "expected an unsigned integer");
  load_fails("server:\n  threads: -1\n",
             "config: svc.yaml:2:12: server.threads: invalid value '-1': "
             "expected an unsigned integer");
  load_fails("server:\n  keepalive_permit_without_calls: maybe\n",
             "config: svc.yaml:2:35: server.keepalive_permit_without_calls: "
             "invalid value 'maybe': expected true or false");
  load_fails("server:\n  channelz: 2\n",
             "config: svc.yaml:2:13: server.channelz: invalid value '2': "
             "expected true or false");
  load_fails("server:\n  compression: zstd\n",
             "config: svc.yaml:2:16: server.compression: invalid value "
             "'zstd': expected one of identity, gzip, deflate");
  load_fails("server:\n  listen: [\"127.0.0.1:1\", \"localhost\"]\n",
             "config: svc.yaml:2:27: server.listen[1]: invalid value "
             "'localhost': expected HOST:PORT");
  load_fails("metrics:\n  listen: \"0.0.0.0:99999\"\n",
             "config: svc.yaml:2:11: metrics.listen: invalid value "
             "'0.0.0.0:99999': expected HOST:PORT or off");
  load_fails("metrics:\n  buckets: [0.1, 0.05]\n",
             "config: svc.yaml:2:18: metrics.buckets[1]: buckets must be "
             "strictly increasing");
  load_fails("metrics:\n  buckets: [fast]\n",
             "config: svc.yaml:2:13: metrics.buckets[0]: invalid value "
             "'fast': expected a positive number of seconds");
  load_fails("server:\n  listen: []\n",
             "config: svc.yaml:2:11: server.listen: must not be empty");
}

Test(config, bad_durations_and_sizes) {
  static const char *bad[] = {"10", "10 s", "1.5s", "-1s", "1d", "s",
                              "10S", "1h-", "",    "00",  "1m30"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char yaml[128], want[512];
    snprintf(yaml, sizeof yaml, "redis:\n  command_timeout: \"%s\"\n", bad[i]);
    snprintf(want, sizeof want,
             "config: svc.yaml:2:20: redis.command_timeout: invalid duration "
             "'%s': expected a number with a unit ms, s, m or h, such as "
             "250ms, 10s, 2m, 1h",
             bad[i]);
    load_fails(yaml, want);
  }
  load_fails("server:\n  max_recv_message_size: 4 MiB\n",
             "config: svc.yaml:2:26: server.max_recv_message_size: invalid "
             "size '4 MiB': expected bytes with an optional unit B, KiB, MiB, "
             "GiB, KB, MB, GB, or unlimited");
  load_fails("cache:\n  l1_max_bytes: 1TiB\n",
             "config: svc.yaml:2:17: cache.l1_max_bytes: invalid size '1TiB': "
             "expected bytes with an optional unit B, KiB, MiB, GiB, KB, MB, "
             "GB");
}

Test(config, out_of_range) {
  load_fails("server:\n  threads: 5000\n",
             "config: svc.yaml:2:12: server.threads: 5000 is out of range: "
             "must be between 0 and 1024");
  load_fails("server:\n  shutdown_grace: 0\n",
             "config: svc.yaml:2:19: server.shutdown_grace: 0 is out of "
             "range: must be between 1ms and 1h");
  load_fails("server:\n  max_recv_message_size: 3GiB\n",
             "config: svc.yaml:2:26: server.max_recv_message_size: 3GiB is out "
             "of range: must be between 1 and 2147483647 bytes");
  /* Regression: 51..100 loaded, then perfc_cache_new() refused them with a
   * bare "invalid argument". One range now, the cache's, checked here. */
  load_fails("cache:\n  jitter_percent: 80\n",
             "config: svc.yaml:2:19: cache.jitter_percent: 80 is out of "
             "range: must be between 0 and 50");
  load_fails("cache:\n  jitter_percent: 101\n",
             "config: svc.yaml:2:19: cache.jitter_percent: 101 is out of "
             "range: must be between 0 and 50");
  load_fails("server:\n  keepalive_time: 99999999999999h\n",
             "config: svc.yaml:2:19: server.keepalive_time: invalid duration "
             "'99999999999999h': expected a number with a unit ms, s, m or h, "
             "such as 250ms, 10s, 2m, 1h");
}

Test(config, cross_field_checks) {
  load_fails("tls:\n  cert_file: a.crt\n",
             "config: svc.yaml:2:14: tls.cert_file: tls.cert_file and "
             "tls.key_file must be set together");
  load_fails("tls:\n  cert_file: a.crt\n  key_file: a.key\n  client_auth: "
             "require\n",
             "config: svc.yaml:4:16: tls.client_auth: require needs "
             "tls.client_ca_file");
}

Test(config, accepted_duration_and_size_forms) {
  perfc_config *cfg = load_ok("postgres:\n  statement_timeout: 1h2m3s4ms\n"
                              "cache:\n  l1_max_bytes: 2MB\n");
  cr_assert_eq(perfc_config_get_postgres(cfg)->statement_timeout_ms,
               3600000 + 120000 + 3000 + 4);
  cr_assert_eq(perfc_config_get_cache(cfg)->l1_max_bytes, 2000000);
  cr_assert_eq(perfc_config_set(cfg, "cache.l1_max_bytes", "4096", NULL), 0);
  cr_assert_eq(perfc_config_get_cache(cfg)->l1_max_bytes, 4096);
  cr_assert_eq(perfc_config_set(cfg, "cache.l1_max_bytes", "1GiB", NULL), 0);
  cr_assert_eq(perfc_config_get_cache(cfg)->l1_max_bytes, 1u << 30);
  cr_assert_eq(perfc_config_set(cfg, "postgres.statement_timeout", "0", NULL),
               0);
  cr_assert_eq(perfc_config_get_postgres(cfg)->statement_timeout_ms, 0);
  /* The rule is core/duration.c's, the generator's too: groups add up in
   * any order, as Go reads them. */
  cr_assert_eq(
      perfc_config_set(cfg, "postgres.statement_timeout", "30s1m", NULL), 0);
  cr_assert_eq(perfc_config_get_postgres(cfg)->statement_timeout_ms, 90000);
  perfc_config_free(cfg);
}

Test(config, missing_file) {
  perfc_config *cfg = NULL;
  cr_assert_eq(perfc_config_load(&cfg, "/nonexistent/perfc.yaml"),
               PERFC_ECONFIG);
  cr_assert_null(cfg);
  cr_assert_str_eq(perfc_config_last_error(),
                   "config: /nonexistent/perfc.yaml: cannot open: No such "
                   "file or directory");
  cr_assert_eq(perfc_config_load(NULL, NULL), PERFC_EINVAL);
}

Test(config, file_errors_name_the_file) {
  char path[] = "/tmp/perfc-config-XXXXXX";
  int fd = mkstemp(path);
  cr_assert(fd >= 0);
  FILE *f = fdopen(fd, "w");
  fputs("server:\n  pool_queue: 0\n", f);
  fclose(f);
  perfc_config *cfg = NULL;
  cr_assert_eq(perfc_config_load(&cfg, path), PERFC_ECONFIG);
  char want[256];
  snprintf(want, sizeof want,
           "config: %s:2:15: server.pool_queue: 0 is out of range: must be "
           "between 1 and 1048576",
           path);
  cr_assert_str_eq(perfc_config_last_error(), want);
  remove(path);
}

Test(config, environment_overrides_the_file) {
  setenv("PERFC_SERVER_LISTEN", "127.0.0.1:1, 127.0.0.1:2", 1);
  setenv("PERFC_POSTGRES_DSN", "host=env", 1);
  setenv("PERFC_SERVER_KEEPALIVE_TIME", "30s", 1);
  setenv("PERFC_METRICS_LISTEN", "off", 1);
  setenv("PERFC_LOGGING_ACCESS_LOG", "true", 1);
  setenv("PERFC_METRICS_BUCKETS", "0.5,1,2", 1);
  setenv("PERFC_SERVER_CHANNELZ", "false", 1);
  setenv("PERFC_CACHE_ENABLED", "off", 1);
  setenv("PERFC_CACHE_L1_MAX_BYTES", "0", 1);
  perfc_config *cfg = load_ok("server:\n  listen: [\"0.0.0.0:9\"]\n"
                              "  keepalive_time: 1h\n  threads: 2\n"
                              "  channelz: true\n  tcp_tx_zerocopy: yes\n"
                              "postgres:\n  dsn: host=file\n"
                              "cache:\n  enabled: true\n  l1_max_bytes: 1MiB\n");
  cr_assert_eq(perfc_config_listen_count(cfg), 2);
  cr_assert_str_eq(perfc_config_listen_at(cfg, 0), "127.0.0.1:1");
  cr_assert_str_eq(perfc_config_listen_at(cfg, 1), "127.0.0.1:2");
  cr_assert_str_eq(perfc_config_get_postgres(cfg)->dsn, "host=env");
  perfc_server_opts o;
  perfc_server_opts_init(&o);
  perfc_config_apply_server(cfg, &o);
  cr_assert_eq(o.keepalive_time_ms, 30000);
  cr_assert_eq(o.threads, 2, "a key the environment leaves alone stays");
  cr_assert_eq(o.channelz, 0, "PERFC_SERVER_CHANNELZ=false wins over the file");
  cr_assert_eq(o.tcp_tx_zerocopy, 1);
  cr_assert_not(perfc_config_metrics_enabled(cfg));
  cr_assert(perfc_config_access_log(cfg));
  perfc_grpc_metrics_opts g = {0};
  perfc_config_apply_grpc_metrics(cfg, &g);
  cr_assert_eq(g.bucket_count, 3);
  /* The bench's cache modes (bench/run-users) are set this way. */
  cr_assert_eq(perfc_config_get_cache(cfg)->enabled, 0);
  cr_assert_eq(perfc_config_get_cache(cfg)->l1_max_bytes, 0);
  perfc_config_free(cfg);

  /* Without a file as well. */
  cr_assert_eq(perfc_config_load(&cfg, NULL), 0);
  cr_assert_str_eq(perfc_config_get_postgres(cfg)->dsn, "host=env");
  perfc_config_free(cfg);
}

Test(config, environment_sets_key_pairs_together) {
  /* Set one at a time, the pair would be refused after the first. */
  setenv("PERFC_TLS_CERT_FILE", "/e/tls.crt", 1);
  setenv("PERFC_TLS_KEY_FILE", "/e/tls.key", 1);
  perfc_config *cfg = load_ok("");
  cr_assert(perfc_config_tls_enabled(cfg));
  perfc_tls_opts t = {0};
  perfc_config_apply_tls(cfg, &t);
  cr_assert_str_eq(t.key_file, "/e/tls.key");
  perfc_config_free(cfg);
  unsetenv("PERFC_TLS_KEY_FILE");
  load_fails("", "config: environment PERFC_TLS_CERT_FILE: tls.cert_file: "
                 "tls.cert_file and tls.key_file must be set together");
}

Test(config, bad_environment_value_names_the_variable) {
  setenv("PERFC_SERVER_THREADS", "lots", 1);
  load_fails("", "config: environment PERFC_SERVER_THREADS: server.threads: "
                 "invalid value 'lots': expected an unsigned integer");
  unsetenv("PERFC_SERVER_THREADS");
  setenv("PERFC_REDIS_COMMAND_TIMEOUT", "2", 1);
  load_fails("", "config: environment PERFC_REDIS_COMMAND_TIMEOUT: "
                 "redis.command_timeout: invalid duration '2': expected a "
                 "number with a unit ms, s, m or h, such as 250ms, 10s, 2m, "
                 "1h");
}

static char warned[1024];
static int warnings;

static void capture(perfc_log_level level, const char *msg, void *ud) {
  (void)ud;
  if (level == PERFC_LOG_WARN) {
    warnings++;
    snprintf(warned, sizeof warned, "%s", msg);
  }
}

Test(config, misspelt_environment_variable_is_warned_about) {
  setenv("PERFC_SERVER_THREAD", "4", 1);
  setenv("PERFC_LOG_LEVEL", "info", 1); /* the logger's own: no warning */
  perfc_log_set_sink(capture, NULL);
  perfc_config *cfg = load_ok("");
  perfc_log_set_sink(NULL, NULL);
  cr_assert_eq(warnings, 1);
  cr_assert_not_null(strstr(warned, "config: environment PERFC_SERVER_THREAD "
                                    "is not a configuration key; ignored"),
                     "%s", warned);
  perfc_config_free(cfg);
}

Test(config, set_checks_and_keeps_old_value_on_error) {
  perfc_config *cfg = load_ok("redis:\n  address: \"r:1\"\n");
  cr_assert_eq(perfc_config_set(cfg, "redis.address", "nope", "test"),
               PERFC_ECONFIG);
  cr_assert_str_eq(perfc_config_last_error(),
                   "config: test: redis.address: invalid value 'nope': "
                   "expected HOST:PORT");
  cr_assert_str_eq(perfc_config_get_redis(cfg)->address, "r:1");
  cr_assert_eq(perfc_config_set(cfg, "redis.adress", "r:2", "test"),
               PERFC_ECONFIG);
  cr_assert_str_eq(perfc_config_last_error(),
                   "config: test: unknown key 'redis.adress'");
  cr_assert_eq(perfc_config_set(cfg, "server.listen", "a:1,nope", "test"),
               PERFC_ECONFIG);
  cr_assert_eq(perfc_config_listen_count(cfg), 1);
  cr_assert_str_eq(perfc_config_listen_at(cfg, 0), PERFC_DEFAULT_CONFIG_LISTEN);
  cr_assert_eq(perfc_config_set(cfg, "redis.address", "r:2", "test"), 0);
  cr_assert_str_eq(perfc_config_get_redis(cfg)->address, "r:2");
  cr_assert_str_empty(perfc_config_last_error());
  perfc_config_free(cfg);
}

Test(flags, parse_both_forms) {
  char *argv[] = {"svc",
                  "--config",
                  "/etc/s.yaml",
                  "--listen=127.0.0.1:5",
                  "--metrics-listen",
                  "off",
                  "--postgres",
                  "host=flag",
                  "--redis=r:7",
                  NULL};
  perfc_flags f;
  cr_assert_eq(perfc_flags_parse(&f, 9, argv), 0);
  cr_assert_str_eq(f.config_file, "/etc/s.yaml");
  cr_assert_str_eq(f.listen, "127.0.0.1:5");
  cr_assert_str_eq(f.metrics_listen, "off");
  cr_assert_str_eq(f.postgres, "host=flag");
  cr_assert_str_eq(f.redis, "r:7");
  cr_assert_not(f.help);
}

Test(flags, override_environment_and_file) {
  setenv("PERFC_POSTGRES_DSN", "host=env", 1);
  char *argv[] = {"svc",         "--listen", "127.0.0.1:5", "--postgres",
                  "host=flag",   "--redis",  "r:7",         "--metrics-listen",
                  "127.0.0.1:6", NULL};
  perfc_flags f;
  cr_assert_eq(perfc_flags_parse(&f, 9, argv), 0);
  perfc_config *cfg = load_ok("server:\n  listen: [\"0.0.0.0:1\"]\n");
  cr_assert_eq(perfc_config_apply_flags(cfg, &f), 0);
  cr_assert_eq(perfc_config_listen_count(cfg), 1);
  cr_assert_str_eq(perfc_config_listen_at(cfg, 0), "127.0.0.1:5");
  cr_assert_str_eq(perfc_config_get_postgres(cfg)->dsn, "host=flag");
  cr_assert_str_eq(perfc_config_get_redis(cfg)->address, "r:7");
  perfc_metrics_http_opts m = {0};
  perfc_config_apply_metrics_http(cfg, &m);
  cr_assert_str_eq(m.addr, "127.0.0.1:6");
  perfc_config_free(cfg);
}

Test(flags, bad_flag_value_names_the_flag) {
  char *argv[] = {"svc", "--listen", "nowhere", NULL};
  perfc_flags f;
  cr_assert_eq(perfc_flags_parse(&f, 3, argv), 0);
  perfc_config *cfg = load_ok("");
  cr_assert_eq(perfc_config_apply_flags(cfg, &f), PERFC_ECONFIG);
  cr_assert_str_eq(perfc_config_last_error(),
                   "config: flag --listen: server.listen[0]: invalid value "
                   "'nowhere': expected HOST:PORT");
  perfc_config_free(cfg);
}

Test(flags, errors_carry_the_usage) {
  perfc_flags f;
  char want[2048];
  char *unknown[] = {"svc", "--lisen", "x:1", NULL};
  cr_assert_eq(perfc_flags_parse(&f, 3, unknown), PERFC_ECONFIG);
  snprintf(want, sizeof want, "config: unknown flag '--lisen'\n%s",
           perfc_flags_usage());
  cr_assert_str_eq(perfc_config_last_error(), want);

  char *unknown_eq[] = {"svc", "--port=1", NULL};
  cr_assert_eq(perfc_flags_parse(&f, 2, unknown_eq), PERFC_ECONFIG);
  snprintf(want, sizeof want, "config: unknown flag '--port'\n%s",
           perfc_flags_usage());
  cr_assert_str_eq(perfc_config_last_error(), want);

  char *missing[] = {"svc", "--config", NULL};
  cr_assert_eq(perfc_flags_parse(&f, 2, missing), PERFC_ECONFIG);
  snprintf(want, sizeof want, "config: flag --config needs a value\n%s",
           perfc_flags_usage());
  cr_assert_str_eq(perfc_config_last_error(), want);

  char *positional[] = {"svc", "0.0.0.0:50051", NULL};
  cr_assert_eq(perfc_flags_parse(&f, 2, positional), PERFC_ECONFIG);
  snprintf(want, sizeof want, "config: unexpected argument '0.0.0.0:50051'\n%s",
           perfc_flags_usage());
  cr_assert_str_eq(perfc_config_last_error(), want);

  char *help[] = {"svc", "-h", NULL};
  cr_assert_eq(perfc_flags_parse(&f, 2, help), 0);
  cr_assert(f.help);
  cr_assert_not_null(strstr(perfc_flags_usage(), "--config FILE"));
}

/* Regression: the usage said "usage: SERVER" whatever the program was. */
Test(flags, usage_names_the_program) {
  perfc_flags f;
  char *help[] = {"/opt/svc/bin/greeter", "--help", NULL};
  cr_assert_eq(perfc_flags_parse(&f, 2, help), 0);
  const char *u = perfc_flags_usage();
  cr_assert_eq(strncmp(u, "usage: greeter [--config FILE] [--listen HOST:PORT]\n"
                          "               [--metrics-listen HOST:PORT|off]",
                       strlen("usage: greeter [--config FILE] [--listen "
                              "HOST:PORT]\n               [--metrics-listen "
                              "HOST:PORT|off]")),
               0, "%s", u);
  cr_assert_null(strstr(u, "SERVER"), "%s", u);
  char *bad[] = {"./user-service", "--bogus", NULL};
  cr_assert_eq(perfc_flags_parse(&f, 2, bad), PERFC_ECONFIG);
  cr_assert_not_null(strstr(perfc_config_last_error(),
                            "'--bogus'\nusage: user-service [--config FILE]"),
                     "%s", perfc_config_last_error());
}

/* The largest jitter the file takes is one the cache takes, and one more is
 * refused by both: the two checks are the same range. */
Test(config, cache_jitter_range_is_the_cache_s) {
  perfc_config *cfg = load_ok("cache:\n  jitter_percent: 50\n");
  const perfc_config_cache *cc = perfc_config_get_cache(cfg);
  cr_assert_eq(cc->jitter_percent, 50);
  cr_assert_eq(PERFC_CACHE_MAX_JITTER_PERCENT, 50);
  perfc_cache_opts o;
  perfc_cache_opts_init(&o);
  o.name = "jitter_range";
  o.no_subscribe = 1;
  o.ttl_jitter = cc->jitter_percent / 100.0;
  perfc_cache *c = NULL;
  cr_assert_eq(perfc_cache_new(&c, &o), 0);
  perfc_cache_free(c);
  o.ttl_jitter = (PERFC_CACHE_MAX_JITTER_PERCENT + 1) / 100.0;
  cr_assert_eq(perfc_cache_new(&c, &o), PERFC_EINVAL);
  perfc_config_free(cfg);
}
