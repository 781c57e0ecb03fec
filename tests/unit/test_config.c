/* test_config.c — runtime/src/config/: the YAML loader (load.c), its exact
 * error messages, environment overrides, flags, defaults, the sample
 * service's configuration file, the apply functions (apply.c and the data
 * unit's apply_data.c: values reach the options that build the objects)
 * and the key table (keys.c). Criterion runs each test in its own process,
 * so setenv() in one test cannot leak into another. */
#include "config/config_internal.h"
#include "test_transport.h" /* test_server_new: both transports */
#include "data/redis_internal.h"
#include "redis_server.h"

#include <criterion/criterion.h>
#include <perfc.h>
#include <perfc/gateway.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static perfc_config *load_ok(const char *yaml) {
  perfc_config *cfg = NULL;
  int rc = perfc_config_load_string(&cfg, yaml, strlen(yaml), "svc.yaml");
  cr_assert_eq(rc, 0, "rc %d: %s", rc, perfc_config_last_error());
  cr_assert_not_null(cfg);
  return cfg;
}

static perfc_redis_opts redis_opts(const perfc_config *cfg) {
  perfc_redis_opts o;
  perfc_redis_opts_init(&o);
  cr_assert_eq(perfc_config_apply_redis(cfg, &o), 0);
  return o;
}

static perfc_pg_pool_opts pg_opts(const perfc_config *cfg) {
  perfc_pg_pool_opts o;
  perfc_pg_pool_opts_init(&o);
  o.dsn = "host=code"; /* so an unset postgres.dsn is not an error */
  cr_assert_eq(perfc_config_apply_pg(cfg, &o), 0, "%s", perfc_last_error());
  return o;
}

static perfc_cache_opts cache_opts(const perfc_config *cfg) {
  perfc_cache_opts o;
  perfc_cache_opts_init(&o);
  cr_assert_eq(perfc_config_apply_cache(cfg, &o), 0, "%s", perfc_last_error());
  return o;
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
                           "  busy_poll_us: 50\n"
                           "  memory_budget: 256MiB\n"
                           "  max_metadata_size: 16KiB\n"
                           "tls:\n"
                           "  cert_file: /etc/s/tls.crt\n"
                           "  key_file: /etc/s/tls.key\n"
                           "  client_ca_file: /etc/s/ca.crt\n"
                           "  client_auth: require\n"
                           "metrics:\n"
                           "  listen: \"127.0.0.1:9100\"\n"
                           "  handling_time_histogram: false\n"
                           "  buckets: [0.01, 0.1, 1]\n"
                           "  max_connections: 300\n"
                           "  max_connections_per_ip: 30\n"
                           "  header_timeout: 1500ms\n"
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
  cr_assert_eq(o.max_connection_idle_enabled, 1);
  cr_assert_eq(o.max_connection_age_enabled, 1);
  cr_assert_eq(o.max_connection_age_grace_ms, 0);
  cr_assert_eq(o.shutdown_grace_ms, 7000);
  cr_assert_str_eq(o.compression, "gzip");
  cr_assert_eq(o.tcp_tx_zerocopy, 1);
  cr_assert_eq(o.channelz, 1);
  cr_assert_eq(o.busy_poll_us, 50);
  cr_assert_eq(o.memory_budget_bytes, (size_t)256 << 20);
  cr_assert_eq(o.max_metadata_bytes, (size_t)16 << 10);

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
  cr_assert_eq(m.max_connections, 300);
  cr_assert_eq(m.max_connections_per_ip, 30);
  cr_assert_eq(m.header_timeout_ms, 1500);
  perfc_grpc_metrics_opts g;
  perfc_grpc_metrics_opts_init(&g);
  cr_assert_eq(perfc_config_apply_grpc_metrics(cfg, &g), 0);
  cr_assert(g.disable_handling_time_histogram);
  cr_assert_eq(g.bucket_count, 3);
  cr_assert_float_eq(g.buckets[0], 0.01, 1e-12);
  cr_assert_float_eq(g.buckets[2], 1.0, 1e-12);

  cr_assert_eq(perfc_config_apply_logging(cfg), 0);
  cr_assert_eq(perfc_log_get_level(), PERFC_LOG_WARN);
  cr_assert_eq(perfc_log_get_format(), PERFC_LOG_JSON);
  cr_assert(perfc_config_access_log(cfg));

  perfc_redis_opts r = redis_opts(cfg);
  cr_assert_str_eq(r.host, "cache");
  cr_assert_eq(r.port, 6380);
  cr_assert_eq(r.pool_size, 4);
  cr_assert_eq(r.connect_timeout_ms, 2000);
  cr_assert_eq(r.command_timeout_ms, 50);
  perfc_pg_pool_opts p = pg_opts(cfg);
  cr_assert_str_eq(p.dsn, "host=db dbname=users");
  cr_assert_str_eq(p.replica_dsn, "host=db-ro dbname=users");
  cr_assert_eq(p.max_conns, 20);
  cr_assert_eq(p.connect_timeout_ms, 3000);
  cr_assert(p.no_statement_timeout, "0 in the file: no timeout");
  cr_assert_eq(p.acquire_timeout_ms, 500);
  perfc_cache_opts c = cache_opts(cfg);
  cr_assert_eq(c.l1_max_bytes, 16 * 1024);
  cr_assert_eq(c.no_l1, 0);
  cr_assert_eq(c.l2_ttl_ms, 600000);
  cr_assert_eq(c.negative_ttl_ms, 30000);
  cr_assert_float_eq(c.ttl_jitter, 0.25, 1e-12);
  cr_assert_not(perfc_config_cache_enabled(cfg));
  perfc_config_free(cfg);
}

/* http: (perfc_config_http_enabled, perfc_config_apply_http): off unless
 * set; the keys land in perfc_gateway_opts, the other fields stay. */
Test(config, http_section) {
  perfc_config *cfg = load_ok("server:\n  threads: 1\n");
  perfc_gateway_opts g, d;
  perfc_gateway_opts_init(&g);
  perfc_gateway_opts_init(&d);
  cr_assert_not(perfc_config_http_enabled(cfg));
  cr_assert_eq(perfc_config_apply_http(cfg, &g), 0);
  cr_assert_eq(memcmp(&g, &d, sizeof g), 0, "gateway opts changed");
  perfc_config_free(cfg);
  cfg = load_ok("http:\n  enabled: true\n  max_body_size: 64KiB\n"
                "  idle_timeout: 5s\n");
  cr_assert(perfc_config_http_enabled(cfg));
  cr_assert_eq(perfc_config_apply_http(cfg, &g), 0);
  cr_assert_eq(g.max_body_bytes, 65536);
  cr_assert_eq(g.idle_timeout_ms, 5000);
  cr_assert_eq(g.json.max_depth, d.json.max_depth);
  cr_assert_eq(perfc_config_apply_http(NULL, &g), PERFC_EINVAL);
  perfc_config_free(cfg);
  const char *bad = "http:\n  max_body_size: 0\n";
  cfg = NULL;
  cr_assert_neq(perfc_config_load_string(&cfg, bad, strlen(bad), "svc.yaml"), 0);
  cr_assert_null(cfg);
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
  cr_assert_eq(m.max_connections, 0);
  cr_assert_eq(m.max_connections_per_ip, 0);
  cr_assert_eq(m.header_timeout_ms, 0);
  perfc_grpc_metrics_opts g = {0};
  perfc_config_apply_grpc_metrics(cfg, &g);
  cr_assert(!g.disable_handling_time_histogram);
  cr_assert_null(g.buckets);
  cr_assert_not(perfc_config_access_log(cfg));
  /* Nothing set: every data option stays what its *_opts_init() made. */
  perfc_redis_opts r = redis_opts(cfg), rd;
  perfc_redis_opts_init(&rd);
  cr_assert_eq(memcmp(&r, &rd, sizeof r), 0, "redis opts changed");
  perfc_pg_pool_opts p = pg_opts(cfg), pd;
  perfc_pg_pool_opts_init(&pd);
  pd.dsn = "host=code";
  cr_assert_eq(memcmp(&p, &pd, sizeof p), 0, "pg opts changed");
  perfc_cache_opts c = cache_opts(cfg), cd;
  perfc_cache_opts_init(&cd);
  cr_assert_eq(memcmp(&c, &cd, sizeof c), 0, "cache opts changed");
  cr_assert(perfc_config_cache_enabled(cfg));
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
  cfg = load_ok("redis:\n  pool_size: 2\n  async_conns_per_loop: 3\n");
  cr_assert_eq(redis_opts(cfg).pool_size, 2);
  cr_assert_eq(redis_opts(cfg).async_conns_per_loop, 3);
  cr_assert_str_eq(redis_opts(cfg).host, PERFC_DEFAULT_REDIS_HOST);
  cr_assert_eq(redis_opts(cfg).port, PERFC_DEFAULT_REDIS_PORT);
  cr_assert_not(perfc_config_is_set(cfg, "redis.address"));
  cr_assert(perfc_config_is_set(cfg, "redis.pool_size"));
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
  perfc_pg_pool_opts p;
  perfc_pg_pool_opts_init(&p);
  cr_assert_eq(perfc_config_apply_pg(cfg, &p), 0);
  cr_assert_not_null(p.dsn);
  cr_assert_eq(cache_opts(cfg).l2_ttl_ms, 600000);
  perfc_config_free(cfg);
}

/* The Kubernetes overlays' configuration files (examples/user-service/
 * deploy/k8s/overlays/<name>/user-service.yaml, mounted by the Deployment)
 * load with this loader and give the pools the data stores the overlay
 * deploys; deploy/check.sh checks the host names against the manifests. */
static perfc_config *load_overlay(const char *name) {
  char path[512];
  snprintf(path, sizeof path,
           PERFC_SOURCE_DIR "/examples/user-service/deploy/k8s/overlays/%s/"
                            "user-service.yaml",
           name);
  perfc_config *cfg = NULL;
  int rc = perfc_config_load(&cfg, path);
  cr_assert_eq(rc, 0, "%s: %s", name, perfc_config_last_error());
  return cfg;
}

static void assert_overlay_pg_ha(const perfc_config *cfg) {
  perfc_pg_pool_opts p;
  perfc_pg_pool_opts_init(&p);
  cr_assert_eq(perfc_config_apply_pg(cfg, &p), 0);
  cr_assert_str_eq(p.dsn, "host=pg-primary-0.pg-primary,pg-standby-0.pg-standby,"
                          "pg-standby-1.pg-standby dbname=users user=users "
                          "connect_timeout=2");
  cr_assert_str_eq(p.replica_dsn, "host=pg-read,pg-primary-0.pg-primary "
                                  "dbname=users user=users connect_timeout=2");
  cr_assert_eq(p.max_replica_lag_ms, 5000);
  cr_assert_not(p.no_read_your_writes);
}

Test(config, k8s_overlay_files_load) {
  perfc_config *cfg = load_overlay("redis-cluster");
  perfc_redis_opts r = redis_opts(cfg);
  cr_assert_eq(r.n_cluster_nodes, 3);
  cr_assert_str_eq(r.cluster_nodes[0], "redis-cluster-0.redis-cluster:6379");
  cr_assert_str_eq(r.cluster_nodes[2], "redis-cluster-2.redis-cluster:6379");
  cr_assert_eq(r.n_sentinels, 0);
  cr_assert_eq(r.cluster_refresh_ms, 5000);
  perfc_config_free(cfg);

  cfg = load_overlay("redis-sentinel");
  r = redis_opts(cfg);
  cr_assert_eq(r.n_cluster_nodes, 0);
  cr_assert_eq(r.n_sentinels, 3);
  cr_assert_str_eq(r.sentinels[1], "redis-sentinel-1.redis-sentinel:26379");
  cr_assert_str_eq(r.master_name, "mymaster");
  cr_assert_eq(r.wait_replicas, 1);
  cr_assert_eq(r.command_timeout_ms, 400);
  perfc_config_free(cfg);

  cfg = load_overlay("postgres-ha");
  assert_overlay_pg_ha(cfg);
  cr_assert_eq(redis_opts(cfg).n_cluster_nodes, 0);
  perfc_config_free(cfg);

  cfg = load_overlay("ha");
  assert_overlay_pg_ha(cfg);
  cr_assert_eq(redis_opts(cfg).n_cluster_nodes, 3);
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
             "stream_flush_every_send, tcp_tx_zerocopy, channelz, busy_poll_us, transport, memory_budget, "
             "max_metadata_size)");
  load_fails("logging:\n  level: info\nservr:\n  threads: 1\n",
             "config: svc.yaml:3:1: servr: unknown key (expected one of: "
             "server, tls, metrics, logging, tracing, redis, postgres, cache, resilience, "
             "http, client)");
  load_fails("cache:\n  ttl: 1m\n",
             "config: svc.yaml:2:3: cache.ttl: unknown key (expected one of: "
             "enabled, l1_max_bytes, default_ttl, negative_ttl, jitter_percent, "
             "pending_file, async_redis)");
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
  load_fails("server:\n  memory_budget: 1KiB\n",
             "config: svc.yaml:2:18: server.memory_budget: 1KiB is out of "
             "range: must be between 1048576 and 9223372036854775807 bytes");
  load_fails("server:\n  busy_poll_us: 10001\n",
             "config: svc.yaml:2:17: server.busy_poll_us: 10001 is out of range: "
             "must be between 0 and 10000");
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
  load_fails("metrics:\n  max_connections_per_ip: 0\n",
             "config: svc.yaml:2:27: metrics.max_connections_per_ip: 0 is out "
             "of range: must be between 1 and 1048576");
  load_fails("metrics:\n  header_timeout: 0\n",
             "config: svc.yaml:2:19: metrics.header_timeout: 0 is out of "
             "range: must be between 1ms and 1h");
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
  cr_assert_eq(pg_opts(cfg).statement_timeout_ms, 3600000 + 120000 + 3000 + 4);
  cr_assert_eq(cache_opts(cfg).l1_max_bytes, 2000000);
  cr_assert_eq(perfc_config_set(cfg, "cache.l1_max_bytes", "4096", NULL), 0);
  cr_assert_eq(cache_opts(cfg).l1_max_bytes, 4096);
  cr_assert_eq(perfc_config_set(cfg, "cache.l1_max_bytes", "1GiB", NULL), 0);
  cr_assert_eq(cache_opts(cfg).l1_max_bytes, 1u << 30);
  cr_assert_eq(perfc_config_set(cfg, "postgres.statement_timeout", "0", NULL),
               0);
  cr_assert(pg_opts(cfg).no_statement_timeout);
  /* The rule is core/duration.c's, the generator's too: groups add up in
   * any order, as Go reads them. */
  cr_assert_eq(
      perfc_config_set(cfg, "postgres.statement_timeout", "30s1m", NULL), 0);
  cr_assert_eq(pg_opts(cfg).statement_timeout_ms, 90000);
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
  setenv("PERFC_METRICS_MAX_CONNECTIONS_PER_IP", "3", 1);
  setenv("PERFC_METRICS_HEADER_TIMEOUT", "2s", 1);
  perfc_config *cfg = load_ok("server:\n  listen: [\"0.0.0.0:9\"]\n"
                              "  keepalive_time: 1h\n  threads: 2\n"
                              "  channelz: true\n  tcp_tx_zerocopy: yes\n"
                              "postgres:\n  dsn: host=file\n"
                              "cache:\n  enabled: true\n  l1_max_bytes: 1MiB\n");
  cr_assert_eq(perfc_config_listen_count(cfg), 2);
  cr_assert_str_eq(perfc_config_listen_at(cfg, 0), "127.0.0.1:1");
  cr_assert_str_eq(perfc_config_listen_at(cfg, 1), "127.0.0.1:2");
  cr_assert_str_eq(pg_opts(cfg).dsn, "host=env");
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
  perfc_metrics_http_opts m;
  perfc_metrics_http_opts_init(&m);
  perfc_config_apply_metrics_http(cfg, &m);
  cr_assert_eq(m.max_connections_per_ip, 3);
  cr_assert_eq(m.header_timeout_ms, 2000);
  cr_assert_eq(m.max_connections, PERFC_DEFAULT_METRICS_MAX_CONNECTIONS);
  /* The bench's cache modes (bench/run-users) are set this way. */
  cr_assert_not(perfc_config_cache_enabled(cfg));
  cr_assert_eq(cache_opts(cfg).no_l1, 1, "l1_max_bytes 0: no L1");
  perfc_config_free(cfg);

  /* Without a file as well. */
  cr_assert_eq(perfc_config_load(&cfg, NULL), 0);
  cr_assert_str_eq(pg_opts(cfg).dsn, "host=env");
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
  cr_assert_str_eq(redis_opts(cfg).host, "r");
  cr_assert_eq(redis_opts(cfg).port, 1);
  cr_assert_eq(perfc_config_set(cfg, "redis.adress", "r:2", "test"),
               PERFC_ECONFIG);
  cr_assert_str_eq(perfc_config_last_error(),
                   "config: test: unknown key 'redis.adress'");
  cr_assert_eq(perfc_config_set(cfg, "server.listen", "a:1,nope", "test"),
               PERFC_ECONFIG);
  cr_assert_eq(perfc_config_listen_count(cfg), 1);
  cr_assert_str_eq(perfc_config_listen_at(cfg, 0), PERFC_DEFAULT_CONFIG_LISTEN);
  cr_assert_eq(perfc_config_set(cfg, "redis.address", "r:2", "test"), 0);
  cr_assert_eq(redis_opts(cfg).port, 2);
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
  cr_assert_str_eq(pg_opts(cfg).dsn, "host=flag");
  cr_assert_eq(redis_opts(cfg).port, 7);
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
  cr_assert_eq(PERFC_CACHE_MAX_JITTER_PERCENT, 50);
  perfc_cache_opts o;
  perfc_cache_opts_init(&o);
  o.name = "jitter_range";
  o.no_subscribe = 1;
  cr_assert_eq(perfc_config_apply_cache(cfg, &o), 0);
  cr_assert_float_eq(o.ttl_jitter, 0.5, 1e-12);
  perfc_cache *c = NULL;
  cr_assert_eq(perfc_cache_new(&c, &o), 0);
  perfc_cache_free(c);
  o.ttl_jitter = (PERFC_CACHE_MAX_JITTER_PERCENT + 1) / 100.0;
  cr_assert_eq(perfc_cache_new(&c, &o), PERFC_EINVAL);
  perfc_config_free(cfg);
}

/* cache.async_redis: true (default) leaves the cache's async Redis read
 * on; false sets no_async_l2. */
Test(config, cache_async_redis_sets_no_async_l2) {
  perfc_config *cfg = load_ok("cache:\n  jitter_percent: 5\n");
  cr_assert_not(cache_opts(cfg).no_async_l2);
  perfc_config_free(cfg);
  cfg = load_ok("cache:\n  async_redis: false\n");
  cr_assert(cache_opts(cfg).no_async_l2);
  perfc_config_free(cfg);
  cfg = load_ok("cache:\n  async_redis: true\n");
  cr_assert_not(cache_opts(cfg).no_async_l2);
  perfc_config_free(cfg);
}

/* ---- the key table and the apply functions ----------------------------- */

/* Adding a key is one row in keys.c plus the option field it names: the
 * loader, the environment and the apply function need nothing else. This
 * holds for every row with a target: its value, set through the
 * environment path (perfc_config_set), lands in exactly its field, and
 * nowhere else, when the target's apply function runs. */
static const char *sample_value(const cfg_key *k) {
  switch (k->kind) {
  case K_STR:
    return "/some/path";
  case K_ADDR:
  case K_ADDR_OFF:
    return "10.1.2.3:4567";
  case K_UINT:
    return k->max >= 3 ? "3" : "1";
  case K_BOOL:
    return "true";
  case K_DURATION:
    return "7s";
  case K_SIZE:
  case K_MSGSIZE:
    return k->min > 5 * 1024 ? "3MiB" : "5KiB"; /* inside the row's range */
  case K_ENUM:
  case K_ENUM_NAME:
    return k->names[1];
  default:
    return NULL;
  }
}

static void apply_target(const perfc_config *cfg, cfg_target t, void *o) {
  int rc = 0;
  switch (t) {
  case T_SERVER:
    rc = perfc_config_apply_server(cfg, o);
    break;
  case T_TLS:
    rc = perfc_config_apply_tls(cfg, o);
    break;
  case T_METRICS_HTTP:
    rc = perfc_config_apply_metrics_http(cfg, o);
    break;
  case T_GRPC_METRICS:
    rc = perfc_config_apply_grpc_metrics(cfg, o);
    break;
  case T_REDIS:
    rc = perfc_config_apply_redis(cfg, o);
    break;
  case T_PG:
    rc = perfc_config_apply_pg(cfg, o);
    break;
  case T_CACHE:
    rc = perfc_config_apply_cache(cfg, o);
    break;
  case T_TRACING:
    rc = perfc_config_apply_tracing(cfg, o);
    break;
  case T_GATEWAY:
    rc = perfc_config_apply_http(cfg, o);
    break;
  case T_CHANNEL:
    rc = perfc_config_apply_channel(cfg, o);
    break;
  default:
    cr_assert_fail("row without an apply function");
  }
  cr_assert_eq(rc, 0, "%s", perfc_last_error());
}

Test(config_keys, every_row_reaches_its_field_and_only_it) {
  size_t checked = 0;
  for (size_t i = 0; i < perfc__config_nkeys; i++) {
    const cfg_key *k = &perfc__config_keys[i];
    if (k->target == T_NONE)
      continue;
    char key[128];
    snprintf(key, sizeof key, "%s.%s", k->section, k->name);
    const char *val = sample_value(k);
    cr_assert_not_null(val, "%s: a kind a row cannot copy", key);
    /* Strings are pointers; numbers fit the field (ranges are checked). */
    if (k->kind == K_STR || k->kind == K_ADDR || k->kind == K_ADDR_OFF ||
        k->kind == K_ENUM_NAME)
      cr_assert_eq(k->dst_size, sizeof(char *), "%s", key);
    else
      cr_assert(k->dst_size == 1 || k->dst_size == 2 || k->dst_size == 4 ||
                    k->dst_size == 8,
                "%s: field of %zu bytes", key, k->dst_size);
    if (k->kind == K_UINT || k->kind == K_DURATION || k->kind == K_SIZE ||
        k->kind == K_MSGSIZE)
      cr_assert(k->dst_size == 8 || k->max < ((int64_t)1 << (8 * k->dst_size)),
                "%s: max %lld does not fit %zu bytes", key,
                (long long)k->max, k->dst_size);

    perfc_config *cfg = load_ok("");
    cr_assert_eq(perfc_config_set(cfg, key, val, "test"), 0, "%s: %s", key,
                 perfc_last_error());
    unsigned char before[512], after[512];
    memset(before, 0x5a, sizeof before);
    if (k->target == T_PG) { /* a DSN, or perfc_config_apply_pg() refuses */
      const char *dsn = "host=code";
      memcpy(before + offsetof(perfc_pg_pool_opts, dsn), &dsn, sizeof dsn);
    }
    memcpy(after, before, sizeof after);
    apply_target(cfg, k->target, after);
    cr_assert_neq(memcmp(before + k->dst_off, after + k->dst_off, k->dst_size),
                  0, "%s: field unchanged", key);
    cr_assert_eq(memcmp(before, after, k->dst_off), 0, "%s: bytes before", key);
    cr_assert_eq(memcmp(before + k->dst_off + k->dst_size,
                        after + k->dst_off + k->dst_size,
                        sizeof before - k->dst_off - k->dst_size),
                 0, "%s: bytes after", key);
    perfc_config_free(cfg);
    checked++;
  }
  cr_assert_geq(checked, 30, "only %zu rows with a target", checked);
}

/* The rows of a section are one run (the schema gives a section its run),
 * and every key has one environment variable. */
Test(config_keys, sections_are_runs_and_names_unique) {
  for (size_t i = 0; i < perfc__config_nkeys; i++)
    for (size_t j = i + 1; j < perfc__config_nkeys; j++) {
      const cfg_key *a = &perfc__config_keys[i], *b = &perfc__config_keys[j];
      cr_assert(strcmp(a->section, b->section) != 0 ||
                    strcmp(a->name, b->name) != 0,
                "%s.%s twice", a->section, a->name);
      if (j > i + 1 && strcmp(a->section, b->section) == 0)
        cr_assert_str_eq(perfc__config_keys[j - 1].section, a->section,
                         "section %s is split", a->section);
    }
}

Test(config_apply, redis_address_splits_and_reaches_the_pool) {
  perfc_config *cfg = load_ok("redis:\n  address: \"[::1]:6390\"\n"
                              "  pool_size: 3\n  command_timeout: 1500ms\n");
  perfc_redis_opts o = redis_opts(cfg);
  cr_assert_str_eq(o.host, "::1");
  cr_assert_eq(o.port, 6390);
  perfc_redis_pool *p = NULL;
  cr_assert_eq(perfc_redis_pool_new(&p, &o), 0);
  /* What the pool kept (perfc_redis_pool_new copies the options). */
  const perfc_redis_opts *kept = perfc__redis_pool_opts(p);
  cr_assert_str_eq(kept->host, "::1");
  cr_assert_eq(kept->port, 6390);
  cr_assert_eq(kept->pool_size, 3);
  cr_assert_eq(kept->command_timeout_ms, 1500);
  perfc_redis_pool_free(p);
  perfc_config_free(cfg);
}

Test(config_apply, errors_name_the_key) {
  perfc_config *cfg = load_ok("cache:\n  pending_file: /tmp/x\n");
  perfc_pg_pool_opts po;
  perfc_pg_pool_opts_init(&po);
  cr_assert_eq(perfc_config_apply_pg(cfg, &po), PERFC_ECONFIG);
  cr_assert_str_eq(perfc_last_error(),
                   "config: postgres.dsn is not set: set it in the file, "
                   "PERFC_POSTGRES_DSN or --postgres");
  perfc_cache_opts co;
  perfc_cache_opts_init(&co);
  cr_assert_eq(perfc_config_apply_cache(cfg, &co), PERFC_ECONFIG);
  cr_assert_not_null(strstr(perfc_last_error(), "cache.pending_file needs"),
                     "%s", perfc_last_error());
  cr_assert_eq(perfc_last_error_detail().code, PERFC_ECONFIG);
  /* 0 is no longer a negative TTL: the cache has no "off" for it. */
  perfc_config_free(cfg);
  cfg = NULL;
  const char *y = "cache:\n  negative_ttl: 0\n";
  cr_assert_eq(perfc_config_load_string(&cfg, y, strlen(y), "svc.yaml"),
               PERFC_ECONFIG);
  cr_assert_str_eq(perfc_last_error(),
                   "config: svc.yaml:2:17: cache.negative_ttl: 0 is out of "
                   "range: must be between 1ms and 24h");
}

/* perfc_config_listen() serves every address and reports the first port;
 * a TLS file problem comes back as PERFC_ETLS naming the file. */
Test(config_apply, listen_serves_every_address) {
  perfc_config *cfg =
      load_ok("server:\n  listen: [\"127.0.0.1:0\", \"127.0.0.1:0\"]\n");
  perfc_server *srv = NULL;
  int port = 0;
  cr_assert_eq(test_server_new(&srv, NULL), 0);
  cr_assert_eq(perfc_config_listen(cfg, srv, &port), 0, "%s",
               perfc_last_error());
  cr_assert_gt(port, 0);
  perfc_server_free(srv);
  perfc_config_free(cfg);

  cfg = load_ok("server:\n  listen: [\"127.0.0.1:0\"]\n"
                "tls:\n  cert_file: /nonexistent/c.crt\n"
                "  key_file: /nonexistent/c.key\n");
  cr_assert_eq(test_server_new(&srv, NULL), 0);
  cr_assert_eq(perfc_config_listen(cfg, srv, &port), PERFC_ETLS);
  cr_assert_not_null(strstr(perfc_last_error(), "/nonexistent/c.crt"), "%s",
                     perfc_last_error());
  perfc_server_free(srv);
  perfc_config_free(cfg);
}

static int loads;
static int load_fn(const char *key, uint8_t **out, size_t *out_len,
                   void *ud) {
  (void)key, (void)ud;
  loads++;
  *out = malloc(2);
  memcpy(*out, "v1", 2);
  *out_len = 2;
  return 0;
}

/* cache.l1_max_bytes: 0 reaches the built cache as "no L1": nothing is
 * kept in memory and the second read comes from Redis, not the loader;
 * with an L1 the entry is kept and the second read is an L1 hit. */
static void l1_case(int port, const char *l1, uint64_t want_entries) {
  char yaml[256];
  snprintf(yaml, sizeof yaml,
           "redis:\n  address: \"127.0.0.1:%d\"\ncache:\n  l1_max_bytes: %s\n",
           port, l1);
  perfc_config *cfg = load_ok(yaml);
  perfc_redis_opts ro = redis_opts(cfg);
  ro.name = l1;
  perfc_redis_pool *redis = NULL;
  cr_assert_eq(perfc_redis_pool_new(&redis, &ro), 0);
  perfc_cache_opts co;
  perfc_cache_opts_init(&co);
  co.name = l1;
  co.redis = redis;
  co.no_subscribe = 1; /* one instance: L1 needs no pub/sub to be used */
  cr_assert_eq(perfc_config_apply_cache(cfg, &co), 0);
  perfc_cache *c = NULL;
  cr_assert_eq(perfc_cache_new(&c, &co), 0);
  loads = 0;
  for (int i = 0; i < 2; i++) {
    uint8_t *v = NULL;
    size_t n = 0;
    cr_assert_eq(perfc_cache_get_or_load(c, l1, load_fn, NULL, &v, &n), 0);
    cr_assert_eq(n, 2);
    free(v);
  }
  cr_assert_eq(loads, 1, "%s: the second read was a load", l1);
  perfc_l1cache_stats st;
  perfc_l1cache_stats_get(perfc_cache_l1(c), &st);
  cr_assert_eq(st.entries, want_entries, "%s: L1 entries", l1);
  cr_assert_eq(st.hits, want_entries, "%s: L1 hits", l1);
  perfc_cache_free(c);
  perfc_redis_pool_free(redis);
  perfc_config_free(cfg);
}

Test(config_apply, no_l1_reaches_the_cache, .timeout = 30) {
  test_redis tr;
  (void)tr_restart; /* redis_server.h's; not needed here */
  cr_assert_eq(tr_start(&tr), 0, "redis-server did not start");
  l1_case(tr.port, "0", 0);
  l1_case(tr.port, "64KiB", 1);
  tr_stop(&tr);
}

/* The http: section (#18 items 6, 9) into perfc_gateway_opts; gzip: false
 * turns compression off whatever the level; bad values are refused with
 * the key's name. */
Test(config, http_section_fills_the_gateway_options) {
  perfc_config *cfg = load_ok("http:\n"
                              "  max_body_size: 1MiB\n"
                              "  idle_timeout: 5s\n"
                              "  gzip_level: 9\n"
                              "  gzip_min_size: 4KiB\n"
                              "  cache: max_age\n");
  perfc_gateway_opts o;
  perfc_gateway_opts_init(&o);
  cr_assert_eq(perfc_config_apply_http(cfg, &o), 0);
  cr_expect_eq(o.max_body_bytes, 1u << 20);
  cr_expect_eq(o.idle_timeout_ms, 5000);
  cr_expect_eq(o.gzip_level, 9);
  cr_expect_eq(o.gzip_min_bytes, 4096);
  cr_expect_eq(o.http_cache, PERFC_HTTP_CACHE_MAX_AGE);
  perfc_config_free(cfg);
  cfg = load_ok("http:\n  gzip: false\n  gzip_level: 3\n  cache: off\n");
  perfc_gateway_opts_init(&o);
  cr_assert_eq(perfc_config_apply_http(cfg, &o), 0);
  cr_expect_eq(o.gzip_level, PERFC_HTTP_GZIP_OFF);
  cr_expect_eq(o.http_cache, PERFC_HTTP_CACHE_OFF);
  cr_expect_eq(o.gzip_min_bytes, PERFC_DEFAULT_HTTP_GZIP_MIN_BYTES);
  perfc_config_free(cfg);
  /* unset: the defaults stay */
  cfg = load_ok("");
  perfc_gateway_opts_init(&o);
  cr_assert_eq(perfc_config_apply_http(cfg, &o), 0);
  cr_expect_eq(o.gzip_level, PERFC_DEFAULT_HTTP_GZIP_LEVEL);
  cr_expect_eq(o.http_cache, PERFC_HTTP_CACHE_REVALIDATE);
  perfc_config_free(cfg);
  cr_expect_eq(perfc_config_apply_http(NULL, &o), PERFC_EINVAL);
  load_fails("http:\n  gzip_level: 10\n",
             "config: svc.yaml:2:15: http.gzip_level: 10 is out of range: "
             "must be between 1 and 9");
  load_fails("http:\n  cache: forever\n",
             "config: svc.yaml:2:10: http.cache: invalid value 'forever': "
             "expected one of revalidate, max_age, off");
}

/* The http: section's CORS keys (#18 item 7) into perfc_gateway_opts:
 * the origins list turns CORS on, each key fills its field, unset keys
 * keep the defaults; an origin with a path or blanks, or an empty list,
 * is refused with its position; the environment's comma list works. */
Test(config, http_cors_keys_fill_the_gateway_options) {
  perfc_config *cfg = load_ok("http:\n"
                              "  cors_allowed_origins: [\"https://app.example\", "
                              "\"http://localhost:8080\"]\n"
                              "  cors_allowed_methods: GET, POST\n"
                              "  cors_allowed_headers: content-type, x-user-agent\n"
                              "  cors_expose_headers: grpc-status\n"
                              "  cors_max_age: 1h\n"
                              "  cors_allow_credentials: true\n");
  perfc_gateway_opts o;
  perfc_gateway_opts_init(&o);
  cr_assert_eq(perfc_config_apply_http(cfg, &o), 0);
  cr_assert_eq(o.cors_origin_count, 2);
  cr_expect_str_eq(o.cors_origins[0], "https://app.example");
  cr_expect_str_eq(o.cors_origins[1], "http://localhost:8080");
  cr_expect_str_eq(o.cors_methods, "GET, POST");
  cr_expect_str_eq(o.cors_headers, "content-type, x-user-agent");
  cr_expect_str_eq(o.cors_expose_headers, "grpc-status");
  cr_expect_eq(o.cors_max_age_ms, 3600000);
  cr_expect(o.cors_allow_credentials);
  perfc_config_free(cfg);
  /* "*" alone; the rest keeps perfc_gateway_opts_init's values */
  cfg = load_ok("http:\n  cors_allowed_origins: [\"*\"]\n");
  perfc_gateway_opts_init(&o);
  cr_assert_eq(perfc_config_apply_http(cfg, &o), 0);
  cr_assert_eq(o.cors_origin_count, 1);
  cr_expect_str_eq(o.cors_origins[0], "*");
  cr_expect_null(o.cors_methods);
  cr_expect_null(o.cors_headers);
  cr_expect_eq(o.cors_max_age_ms, 0);
  cr_expect_not(o.cors_allow_credentials);
  perfc_config_free(cfg);
  /* no key: CORS stays off */
  cfg = load_ok("http:\n  enabled: true\n");
  perfc_gateway_opts_init(&o);
  cr_assert_eq(perfc_config_apply_http(cfg, &o), 0);
  cr_expect_eq(o.cors_origin_count, 0);
  cr_expect_null(o.cors_origins);
  /* the environment: a comma-separated list */
  cr_assert_eq(perfc_config_set(cfg, "http.cors_allowed_origins",
                                "https://a.example, https://b.example:8443",
                                "environment PERFC_HTTP_CORS_ALLOWED_ORIGINS"),
               0, "%s", perfc_config_last_error());
  perfc_gateway_opts_init(&o);
  cr_assert_eq(perfc_config_apply_http(cfg, &o), 0);
  cr_assert_eq(o.cors_origin_count, 2);
  cr_expect_str_eq(o.cors_origins[1], "https://b.example:8443");
  cr_expect_neq(perfc_config_set(cfg, "http.cors_allowed_origins",
                                 "https://a.example/", NULL),
                0);
  perfc_config_free(cfg);
  load_fails("http:\n  cors_allowed_origins: [\"https://ok.example\", "
             "\"https://app.example/path\"]\n",
             "config: svc.yaml:2:48: http.cors_allowed_origins[1]: invalid "
             "value 'https://app.example/path': expected \"*\" or an origin "
             "as browsers send it (https://app.example or "
             "http://localhost:8080, no path)");
  load_fails("http:\n  cors_allowed_origins: [\"app.example\"]\n",
             "config: svc.yaml:2:26: http.cors_allowed_origins[0]: invalid "
             "value 'app.example': expected \"*\" or an origin as browsers "
             "send it (https://app.example or http://localhost:8080, no "
             "path)");
  load_fails("http:\n  cors_allowed_origins: []\n",
             "config: svc.yaml:2:25: http.cors_allowed_origins: must not be "
             "empty");
  load_fails("http:\n  cors_max_age: 100ms\n",
             "config: svc.yaml:2:17: http.cors_max_age: 100ms is out of "
             "range: must be between 1s and 24h");
}

/* The tracing: section: every key into perfc_tracing_opts (sample_percent
 * as a ratio); tracing.enabled decides, else the OTEL_* variables do. */
Test(config, tracing_section_fills_the_tracer_options) {
  perfc_config *cfg = load_ok("tracing:\n"
                              "  enabled: true\n"
                              "  service_name: users\n"
                              "  sampler: parentbased_traceidratio\n"
                              "  sample_percent: 25\n"
                              "  endpoint: http://otel:4318/v1/traces\n"
                              "  headers: x-api-key=k\n"
                              "  compression: none\n"
                              "  max_queue_spans: 4096\n"
                              "  schedule_delay: 2s\n"
                              "  shutdown_grace: 3s\n"
                              "  debug_traces: true\n"
                              "  debug_traces_spans_per_thread: 64\n");
  perfc_tracing_opts o;
  perfc_tracing_opts_init(&o);
  cr_assert_eq(perfc_config_apply_tracing(cfg, &o), 0);
  cr_assert_eq(perfc_config_tracing_enabled(cfg), 1);
  cr_assert_str_eq(o.service_name, "users");
  cr_assert_eq(o.sampler, PERFC_SAMPLER_PARENTBASED_TRACEIDRATIO);
  cr_assert_float_eq(o.sampler_ratio, 0.25, 1e-9);
  cr_assert_str_eq(o.endpoint, "http://otel:4318/v1/traces");
  cr_assert_str_eq(o.headers, "x-api-key=k");
  cr_assert_str_eq(o.compression, "none");
  cr_assert_eq(o.max_queue_spans, 4096);
  cr_assert_eq(o.schedule_delay_ms, 2000);
  cr_assert_eq(o.shutdown_grace_ms, 3000);
  cr_assert(o.debug_traces);
  cr_assert_eq(o.debug_ring_spans, 64);
  /* what the file leaves out keeps the defaults */
  cr_assert_eq(o.export_timeout_ms, PERFC_DEFAULT_TRACING_EXPORT_TIMEOUT_MS);
  perfc_tracer *tr;
  o.ignore_env = true;
  cr_assert_eq(perfc_tracing_new(&tr, &o), 0, "%s", perfc_last_error());
  perfc_tracing_free(tr);
  perfc_config_free(cfg);

  load_fails("tracing:\n  sampler: sometimes\n",
             "config: svc.yaml:2:12: tracing.sampler: invalid value 'sometimes': "
             "expected one of always_on, always_off, traceidratio, "
             "parentbased_always_on, parentbased_always_off, "
             "parentbased_traceidratio");
  load_fails("tracing:\n  sample_percent: 101\n",
             "config: svc.yaml:2:19: tracing.sample_percent: 101 is out of range: "
             "must be between 0 and 100");

  /* enabled unset: the OTEL_* variables decide */
  cfg = load_ok("");
  unsetenv("OTEL_TRACES_SAMPLER");
  unsetenv("OTEL_EXPORTER_OTLP_ENDPOINT");
  unsetenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
  unsetenv("OTEL_SDK_DISABLED");
  cr_assert_eq(perfc_config_tracing_enabled(cfg), 0);
  setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318", 1);
  cr_assert_eq(perfc_config_tracing_enabled(cfg), 1);
  setenv("OTEL_SDK_DISABLED", "true", 1);
  cr_assert_eq(perfc_config_tracing_enabled(cfg), 0);
  unsetenv("OTEL_SDK_DISABLED");
  cr_assert_eq(perfc_config_set(cfg, "tracing.enabled", "false", "test"), 0);
  cr_assert_eq(perfc_config_tracing_enabled(cfg), 0, "the file wins");
  unsetenv("OTEL_EXPORTER_OTLP_ENDPOINT");
  perfc_config_free(cfg);
}

/* client.lb_policy: the channel option from the file, the environment
 * wins, and only the names perfc_channel_new() takes are accepted. */
Test(config, client_lb_policy) {
  perfc_channel_opts o;
  perfc_channel_opts_init(&o);
  perfc_config *cfg = load_ok("server:\n  threads: 1\n");
  cr_assert_eq(perfc_config_apply_channel(cfg, &o), 0);
  cr_assert_null(o.lb_policy, "unset: the channel's default");
  perfc_config_free(cfg);
  cfg = load_ok("client:\n  lb_policy: round_robin\n");
  cr_assert_eq(perfc_config_apply_channel(cfg, &o), 0);
  cr_assert_str_eq(o.lb_policy, "round_robin");
  perfc_channel *ch = NULL;
  cr_assert_eq(perfc_channel_new(&ch, "dns:///localhost:1", &o), 0);
  perfc_channel_free(ch);
  perfc_config_free(cfg);
  setenv("PERFC_CLIENT_LB_POLICY", "pick_first", 1);
  cfg = load_ok("client:\n  lb_policy: round_robin\n");
  cr_assert_eq(perfc_config_apply_channel(cfg, &o), 0);
  cr_assert_str_eq(o.lb_policy, "pick_first");
  perfc_config_free(cfg);
  unsetenv("PERFC_CLIENT_LB_POLICY");
  const char *bad = "client:\n  lb_policy: random\n";
  cfg = NULL;
  cr_assert_eq(perfc_config_load_string(&cfg, bad, strlen(bad), "svc.yaml"),
               PERFC_ECONFIG);
  cr_assert(strstr(perfc_config_last_error(),
                   "client.lb_policy: invalid value 'random': expected one "
                   "of pick_first, round_robin") != NULL,
            "%s", perfc_config_last_error());
  cr_assert_eq(perfc_config_apply_channel(NULL, &o), PERFC_EINVAL);
}

/* Issue 19 item 3: the replica keys (multi-host DSNs are libpq's syntax,
 * passed through unchanged). */
Test(config, postgres_replica_lag_and_read_your_writes) {
  perfc_config *cfg = load_ok(
      "postgres:\n"
      "  dsn: \"host=10.0.0.1,10.0.0.2 port=5432,5432 dbname=users\"\n"
      "  replica_dsn: \"host=10.0.0.2,10.0.0.3 dbname=users\"\n"
      "  max_replica_lag: 2s\n"
      "  replica_lag_check: 250ms\n"
      "  read_your_writes: false\n");
  perfc_pg_pool_opts o = pg_opts(cfg);
  cr_assert_str_eq(o.dsn, "host=10.0.0.1,10.0.0.2 port=5432,5432 dbname=users");
  cr_assert_str_eq(o.replica_dsn, "host=10.0.0.2,10.0.0.3 dbname=users");
  cr_assert_eq(o.max_replica_lag_ms, 2000);
  cr_assert_not(o.no_replica_lag_check);
  cr_assert_eq(o.replica_lag_check_ms, 250);
  cr_assert(o.no_read_your_writes);
  /* 0 turns the lag check off; true is the default. */
  cr_assert_eq(perfc_config_set(cfg, "postgres.max_replica_lag", "0", NULL), 0);
  cr_assert_eq(perfc_config_set(cfg, "postgres.read_your_writes", "true", NULL),
               0);
  o = pg_opts(cfg);
  cr_assert(o.no_replica_lag_check);
  cr_assert_not(o.no_read_your_writes);
  perfc_config_free(cfg);
  /* Defaults without the keys. */
  cfg = load_ok("postgres:\n  dsn: \"host=a\"\n");
  o = pg_opts(cfg);
  cr_assert_eq(o.max_replica_lag_ms, PERFC_DEFAULT_PG_MAX_REPLICA_LAG_MS);
  cr_assert_eq(o.replica_lag_check_ms, PERFC_DEFAULT_PG_REPLICA_LAG_CHECK_MS);
  cr_assert_not(o.no_replica_lag_check);
  cr_assert_not(o.no_read_your_writes);
  perfc_config_free(cfg);
  load_fails("postgres:\n  replica_lag_check: 0\n",
             "config: svc.yaml:2:22: postgres.replica_lag_check: 0 is out of "
             "range: must be between 1ms and 1h");
}

/* Redis Cluster seeds: a list in the file, comma separated in the
 * environment, each checked as HOST:PORT. */
Test(config, redis_cluster_nodes_file_and_environment) {
  perfc_config *cfg =
      load_ok("redis:\n  cluster_nodes: [\"10.0.0.1:7000\", \"10.0.0.2:7001\"]\n"
              "  cluster_read_replicas: true\n  cluster_refresh: 2s\n");
  perfc_redis_opts o = redis_opts(cfg);
  cr_assert_eq(o.n_cluster_nodes, 2);
  cr_assert_str_eq(o.cluster_nodes[0], "10.0.0.1:7000");
  cr_assert_str_eq(o.cluster_nodes[1], "10.0.0.2:7001");
  cr_assert_eq(o.cluster_read_replicas, 1);
  cr_assert_eq(o.cluster_refresh_ms, 2000);
  perfc_config_free(cfg);
  cfg = load_ok("redis:\n  pool_size: 2\n");
  cr_assert_eq(redis_opts(cfg).n_cluster_nodes, 0, "not set: single node");
  perfc_config_free(cfg);
  setenv("PERFC_REDIS_CLUSTER_NODES", "127.0.0.1:1,127.0.0.1:2, 127.0.0.1:3", 1);
  cfg = load_ok("redis:\n  cluster_nodes: [\"10.0.0.1:7000\"]\n");
  o = redis_opts(cfg);
  cr_assert_eq(o.n_cluster_nodes, 3, "the environment wins over the file");
  cr_assert_str_eq(o.cluster_nodes[2], "127.0.0.1:3");
  perfc_config_free(cfg);
  unsetenv("PERFC_REDIS_CLUSTER_NODES");
  load_fails("redis:\n  cluster_nodes: [\"10.0.0.1\"]\n",
             "config: svc.yaml:2:19: redis.cluster_nodes[0]: invalid value "
             "'10.0.0.1': expected HOST:PORT");
}

Test(config, redis_auth_keys_and_environment) {
  perfc_config *cfg = load_ok("redis:\n  username: alice\n"
                              "  password: \"p w#1\"\n"
                              "  sentinel_password: sp\n"
                              "  sentinel_username: sentinel-app\n");
  perfc_redis_opts o = redis_opts(cfg);
  cr_assert_str_eq(o.username, "alice");
  cr_assert_str_eq(o.password, "p w#1");
  cr_assert_str_eq(o.sentinel_password, "sp");
  cr_assert_str_eq(o.sentinel_username, "sentinel-app");
  perfc_config_free(cfg);
  cfg = load_ok("redis:\n  pool_size: 2\n");
  o = redis_opts(cfg);
  cr_assert_null(o.username, "not set: no AUTH");
  cr_assert_null(o.password);
  cr_assert_null(o.sentinel_password);
  cr_assert_null(o.sentinel_username);
  perfc_config_free(cfg);
  setenv("PERFC_REDIS_PASSWORD", "from-env", 1);
  setenv("PERFC_REDIS_USERNAME", "bob", 1);
  setenv("PERFC_REDIS_SENTINEL_PASSWORD", "s-env", 1);
  setenv("PERFC_REDIS_SENTINEL_USERNAME", "s-user-env", 1);
  cfg = load_ok("redis:\n  password: from-file\n"
                "  sentinel_username: s-user-file\n");
  o = redis_opts(cfg);
  cr_assert_str_eq(o.password, "from-env", "the environment wins");
  cr_assert_str_eq(o.username, "bob");
  cr_assert_str_eq(o.sentinel_password, "s-env");
  cr_assert_str_eq(o.sentinel_username, "s-user-env", "the environment wins");
  perfc_config_free(cfg);
  /* Empty in the environment: no AUTH (the pool treats "" as unset). */
  setenv("PERFC_REDIS_PASSWORD", "", 1);
  cfg = load_ok("redis:\n  password: from-file\n");
  cr_assert_str_eq(redis_opts(cfg).password, "");
  perfc_config_free(cfg);
  unsetenv("PERFC_REDIS_PASSWORD");
  unsetenv("PERFC_REDIS_USERNAME");
  unsetenv("PERFC_REDIS_SENTINEL_PASSWORD");
  unsetenv("PERFC_REDIS_SENTINEL_USERNAME");
}
