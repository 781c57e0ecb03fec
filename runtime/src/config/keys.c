/*
 * keys.c — the configuration's key table: one row per key, naming its
 * section and name, how its value is parsed and range-checked, and the
 * option field it fills.
 *
 * Room: runtime/src/config. The loader (load.c) builds libcyaml's schema,
 * the environment variable names, the "expected one of" lists and the
 * parsers' checks from these rows; the apply functions (apply.c,
 * apply_data.c) copy each row's value into its target field. So adding a
 * key that goes straight into an option field is one row here, plus that
 * field in the module's option struct (docs/configuration.md, "Adding a
 * key"). This file includes the modules' headers only for offsetof and
 * sizeof: it calls nothing, so libperfc-config does not link the data unit.
 *
 * Rows of one section stay together (the schema gives each section the
 * run of its rows).
 */
#include "config/config_internal.h"

#include "perfc/cache.h"
#include "perfc/client.h"
#include "perfc/config_data.h"
#include "perfc/gateway.h"
#include "perfc/grpc_metrics.h"
#include "perfc/metrics.h"
#include "perfc/pg.h"
#include "perfc/redis.h"
#include "perfc/server.h"
#include "perfc/tls.h"
#include "perfc/tracing.h"

#include <limits.h>
#include <stddef.h>

#define MS_MAX ((int64_t)INT_MAX) /* grpc channel args are ints */
#define HOUR_MS (3600 * (int64_t)1000)
#define DAY_MS (24 * HOUR_MS)

static const char *const executor_names[] = {"inline", "pool", NULL};
static const char *const transport_names[] = {"core", "h2", NULL};
static const int transport_values[] = {PERFC_TRANSPORT_CORE, PERFC_TRANSPORT_H2};
static const int executor_values[] = {PERFC_EXEC_INLINE, PERFC_EXEC_POOL};
static const char *const compression_names[] = {"identity", "gzip", "deflate",
                                                NULL};
static const char *const client_auth_names[] = {"none", "request", "require",
                                                NULL};
static const int client_auth_values[] = {PERFC_TLS_CLIENT_AUTH_NONE,
                                         PERFC_TLS_CLIENT_AUTH_REQUEST,
                                         PERFC_TLS_CLIENT_AUTH_REQUIRE};
static const char *const level_names[] = {"debug", "info", "warn",
                                          "error", "off",  NULL};
static const char *const format_names[] = {"logfmt", "json", NULL};
/* perfc_channel_opts.lb_policy's names (client.c checks the same). */
static const char *const lb_policy_names[] = {"pick_first", "round_robin",
                                              NULL};
/* OTEL_TRACES_SAMPLER's names, in perfc_sampler's order. */
static const char *const sampler_names[] = {
    "always_on",          "always_off",           "traceidratio",
    "parentbased_always_on", "parentbased_always_off",
    "parentbased_traceidratio", NULL};
static const int sampler_values[] = {
    PERFC_SAMPLER_ALWAYS_ON,
    PERFC_SAMPLER_ALWAYS_OFF,
    PERFC_SAMPLER_TRACEIDRATIO,
    PERFC_SAMPLER_PARENTBASED_ALWAYS_ON,
    PERFC_SAMPLER_PARENTBASED_ALWAYS_OFF,
    PERFC_SAMPLER_PARENTBASED_TRACEIDRATIO};
static const char *const otlp_compression_names[] = {"gzip", "none", NULL};
/* The key says whether the histogram is on; the option is its negation
 * (perfc_grpc_metrics_opts.disable_handling_time_histogram): false → 1. */
static const int histogram_values[] = {1, 0};
static const char *const http_cache_names[] = {"revalidate", "max_age", "off",
                                               NULL};
static const int http_cache_values[] = {PERFC_HTTP_CACHE_REVALIDATE,
                                        PERFC_HTTP_CACHE_MAX_AGE,
                                        PERFC_HTTP_CACHE_OFF};

/* A destination: target, offset and size of the field in its struct. */
#define FIELD(t, type, f) t, offsetof(type, f), sizeof(((type *)0)->f)
#define SERVER(f) FIELD(T_SERVER, perfc_server_opts, f)
#define TLS(f) FIELD(T_TLS, perfc_tls_opts, f)
#define METRICS_HTTP(f) FIELD(T_METRICS_HTTP, perfc_metrics_http_opts, f)
#define GRPC_METRICS(f) FIELD(T_GRPC_METRICS, perfc_grpc_metrics_opts, f)
#define REDIS(f) FIELD(T_REDIS, perfc_redis_opts, f)
#define PG(f) FIELD(T_PG, perfc_pg_pool_opts, f)
#define CACHE(f) FIELD(T_CACHE, perfc_cache_opts, f)
#define TRACING(f) FIELD(T_TRACING, perfc_tracing_opts, f)
#define GATEWAY(f) FIELD(T_GATEWAY, perfc_gateway_opts, f)
#define CHANNEL(f) FIELD(T_CHANNEL, perfc_channel_opts, f)
/* Handled by name in its apply function. */
#define CUSTOM T_NONE, 0, 0

/* KEY(section, name, kind, min, max, names, values, destination) */
#define KEY(sec, name, kind, min, max, names, values, ...)                     \
  {#sec, #name, kind, min, max, names, values, __VA_ARGS__}

const cfg_key perfc__config_keys[] = {
    KEY(server, listen, K_LIST_ADDR, 0, 0, NULL, NULL, CUSTOM),
    KEY(server, threads, K_UINT, 0, 1024, NULL, NULL, SERVER(threads)),
    KEY(server, requests_per_method, K_UINT, 1, 4096, NULL, NULL,
        SERVER(requests_per_method)),
    KEY(server, default_executor, K_ENUM, 0, 0, executor_names, executor_values,
        SERVER(default_executor)),
    KEY(server, pool_threads, K_UINT, 1, 4096, NULL, NULL, SERVER(pool_threads)),
    KEY(server, pool_queue, K_UINT, 1, 1 << 20, NULL, NULL, SERVER(pool_queue)),
    KEY(server, keepalive_time, K_DURATION, 1, MS_MAX, NULL, NULL,
        SERVER(keepalive_time_ms)),
    KEY(server, keepalive_timeout, K_DURATION, 1, MS_MAX, NULL, NULL,
        SERVER(keepalive_timeout_ms)),
    KEY(server, keepalive_permit_without_calls, K_BOOL, 0, 0, NULL, NULL,
        SERVER(keepalive_permit_without_calls)),
    KEY(server, min_ping_interval, K_DURATION, 1, MS_MAX, NULL, NULL,
        SERVER(min_ping_interval_ms)),
    KEY(server, max_concurrent_streams, K_UINT, 1, INT_MAX, NULL, NULL,
        SERVER(max_concurrent_streams)),
    KEY(server, max_recv_message_size, K_MSGSIZE, 1, INT_MAX, NULL, NULL,
        SERVER(max_recv_message_bytes)),
    KEY(server, max_send_message_size, K_MSGSIZE, 1, INT_MAX, NULL, NULL,
        SERVER(max_send_message_bytes)),
    /* 0 = never; apply sets the _enabled field with the duration. */
    KEY(server, max_connection_idle, K_DURATION, 0, MS_MAX, NULL, NULL, CUSTOM),
    KEY(server, max_connection_age, K_DURATION, 0, MS_MAX, NULL, NULL, CUSTOM),
    KEY(server, max_connection_age_grace, K_DURATION, 0, MS_MAX, NULL, NULL,
        SERVER(max_connection_age_grace_ms)),
    KEY(server, shutdown_grace, K_DURATION, 1, HOUR_MS, NULL, NULL,
        SERVER(shutdown_grace_ms)),
    KEY(server, compression, K_ENUM_NAME, 0, 0, compression_names, NULL,
        SERVER(compression)),
    KEY(server, poller_wakeup_preemption, K_BOOL, 0, 0, NULL, NULL,
        SERVER(poller_wakeup_preemption)),
    KEY(server, worker_wakeup_preemption, K_BOOL, 0, 0, NULL, NULL,
        SERVER(worker_wakeup_preemption)),
    KEY(server, stream_flush_every_send, K_BOOL, 0, 0, NULL, NULL,
        SERVER(stream_flush_every_send)),
    KEY(server, tcp_tx_zerocopy, K_BOOL, 0, 0, NULL, NULL,
        SERVER(tcp_tx_zerocopy)),
    KEY(server, channelz, K_BOOL, 0, 0, NULL, NULL, SERVER(channelz)),
    KEY(server, busy_poll_us, K_UINT, 0, PERFC_MAX_BUSY_POLL_US, NULL, NULL,
        SERVER(busy_poll_us)),
    KEY(server, transport, K_ENUM, 0, 0, transport_names, transport_values,
        SERVER(transport)),
    KEY(server, memory_budget, K_SIZE, 1 << 20, INT64_MAX, NULL, NULL,
        SERVER(memory_budget_bytes)),
    KEY(server, max_metadata_size, K_SIZE, 1024, INT_MAX, NULL, NULL,
        SERVER(max_metadata_bytes)),
    KEY(tls, cert_file, K_STR, 0, 0, NULL, NULL, TLS(cert_file)),
    KEY(tls, key_file, K_STR, 0, 0, NULL, NULL, TLS(key_file)),
    KEY(tls, client_ca_file, K_STR, 0, 0, NULL, NULL, TLS(client_ca_file)),
    KEY(tls, client_auth, K_ENUM, 0, 0, client_auth_names, client_auth_values,
        TLS(client_auth)),
    KEY(metrics, listen, K_ADDR_OFF, 0, 0, NULL, NULL, METRICS_HTTP(addr)),
    KEY(metrics, handling_time_histogram, K_BOOL, 0, 0, NULL, histogram_values,
        GRPC_METRICS(disable_handling_time_histogram)),
    KEY(metrics, buckets, K_FLOATS, 0, 0, NULL, NULL, CUSTOM),
    KEY(metrics, max_connections, K_UINT, 1, 1 << 20, NULL, NULL,
        METRICS_HTTP(max_connections)),
    KEY(metrics, max_connections_per_ip, K_UINT, 1, 1 << 20, NULL, NULL,
        METRICS_HTTP(max_connections_per_ip)),
    KEY(metrics, header_timeout, K_DURATION, 1, HOUR_MS, NULL, NULL,
        METRICS_HTTP(header_timeout_ms)),
    KEY(logging, level, K_ENUM, 0, 0, level_names, NULL, CUSTOM),
    KEY(logging, format, K_ENUM, 0, 0, format_names, NULL, CUSTOM),
    KEY(logging, access_log, K_BOOL, 0, 0, NULL, NULL, CUSTOM),
    KEY(tracing, enabled, K_BOOL, 0, 0, NULL, NULL, CUSTOM),
    KEY(tracing, service_name, K_STR, 0, 0, NULL, NULL, TRACING(service_name)),
    KEY(tracing, resource_attributes, K_STR, 0, 0, NULL, NULL,
        TRACING(resource_attributes)),
    KEY(tracing, sampler, K_ENUM, 0, 0, sampler_names, sampler_values,
        TRACING(sampler)),
    /* the *traceidratio ratio in percent: a whole number keeps the key in
     * the loader's integer kinds */
    KEY(tracing, sample_percent, K_UINT, 0, 100, NULL, NULL, CUSTOM),
    KEY(tracing, endpoint, K_STR, 0, 0, NULL, NULL, TRACING(endpoint)),
    KEY(tracing, headers, K_STR, 0, 0, NULL, NULL, TRACING(headers)),
    KEY(tracing, compression, K_ENUM_NAME, 0, 0, otlp_compression_names, NULL,
        TRACING(compression)),
    KEY(tracing, max_queue_spans, K_UINT, 1, 1 << 24, NULL, NULL,
        TRACING(max_queue_spans)),
    KEY(tracing, max_export_batch_spans, K_UINT, 1, 1 << 20, NULL, NULL,
        TRACING(max_export_batch_spans)),
    KEY(tracing, schedule_delay, K_DURATION, 1, HOUR_MS, NULL, NULL,
        TRACING(schedule_delay_ms)),
    KEY(tracing, export_timeout, K_DURATION, 1, HOUR_MS, NULL, NULL,
        TRACING(export_timeout_ms)),
    KEY(tracing, shutdown_grace, K_DURATION, 1, HOUR_MS, NULL, NULL,
        TRACING(shutdown_grace_ms)),
    KEY(tracing, debug_traces, K_BOOL, 0, 0, NULL, NULL,
        TRACING(debug_traces)),
    KEY(tracing, debug_traces_spans_per_thread, K_UINT, 1, 1 << 16, NULL, NULL,
        TRACING(debug_ring_spans)),
    KEY(redis, address, K_ADDR, 0, 0, NULL, NULL, CUSTOM),
    KEY(redis, pool_size, K_UINT, 1, 1024, NULL, NULL, REDIS(pool_size)),
    KEY(redis, connect_timeout, K_DURATION, 1, HOUR_MS, NULL, NULL,
        REDIS(connect_timeout_ms)),
    KEY(redis, command_timeout, K_DURATION, 1, HOUR_MS, NULL, NULL,
        REDIS(command_timeout_ms)),
    KEY(redis, acquire_timeout, K_DURATION, 1, HOUR_MS, NULL, NULL,
        REDIS(acquire_timeout_ms)),
    KEY(redis, async_conns_per_loop, K_UINT, 1, 64, NULL, NULL,
        REDIS(async_conns_per_loop)),
    /* Redis Cluster seeds; apply points the options at the raw items. */
    KEY(redis, cluster_nodes, K_LIST_ADDR, 0, 0, NULL, NULL, CUSTOM),
    KEY(redis, cluster_read_replicas, K_BOOL, 0, 0, NULL, NULL,
        REDIS(cluster_read_replicas)),
    KEY(redis, cluster_refresh, K_DURATION, 1, HOUR_MS, NULL, NULL,
        REDIS(cluster_refresh_ms)),
    /* Redis Sentinel: apply_data.c sets the list and its count. */
    KEY(redis, sentinels, K_LIST_ADDR, 0, 0, NULL, NULL, CUSTOM),
    KEY(redis, master_name, K_STR, 0, 0, NULL, NULL, REDIS(master_name)),
    /* Redis AUTH (copied by the pool; never logged). */
    KEY(redis, username, K_STR, 0, 0, NULL, NULL, REDIS(username)),
    KEY(redis, password, K_STR, 0, 0, NULL, NULL, REDIS(password)),
    KEY(redis, sentinel_password, K_STR, 0, 0, NULL, NULL,
        REDIS(sentinel_password)),
    KEY(redis, sentinel_username, K_STR, 0, 0, NULL, NULL,
        REDIS(sentinel_username)),
    KEY(redis, wait_replicas, K_UINT, 0, 64, NULL, NULL, REDIS(wait_replicas)),
    KEY(postgres, dsn, K_STR, 0, 0, NULL, NULL, PG(dsn)),
    KEY(postgres, replica_dsn, K_STR, 0, 0, NULL, NULL, CUSTOM),
    KEY(postgres, pool_size, K_UINT, 1, 1024, NULL, NULL, PG(max_conns)),
    KEY(postgres, connect_timeout, K_DURATION, 1, HOUR_MS, NULL, NULL,
        PG(connect_timeout_ms)),
    KEY(postgres, statement_timeout, K_DURATION, 0, DAY_MS, NULL, NULL, CUSTOM),
    KEY(postgres, acquire_timeout, K_DURATION, 1, HOUR_MS, NULL, NULL,
        PG(acquire_timeout_ms)),
    KEY(postgres, async_conns_per_loop, K_UINT, 1, 64, NULL, NULL,
        PG(async_conns_per_loop)),
    /* 0 = no lag check; apply sets no_replica_lag_check. */
    KEY(postgres, max_replica_lag, K_DURATION, 0, HOUR_MS, NULL, NULL, CUSTOM),
    KEY(postgres, replica_lag_check, K_DURATION, 1, HOUR_MS, NULL, NULL,
        PG(replica_lag_check_ms)),
    KEY(postgres, read_your_writes, K_BOOL, 0, 0, NULL, NULL, CUSTOM),
    KEY(cache, enabled, K_BOOL, 0, 0, NULL, NULL, CUSTOM),
    KEY(cache, l1_max_bytes, K_SIZE, 0, (int64_t)1 << 40, NULL, NULL, CUSTOM),
    KEY(cache, default_ttl, K_DURATION, 1, 30 * DAY_MS, NULL, NULL,
        CACHE(l2_ttl_ms)),
    KEY(cache, negative_ttl, K_DURATION, 1, DAY_MS, NULL, NULL,
        CACHE(negative_ttl_ms)),
    KEY(cache, jitter_percent, K_UINT, 0, PERFC_CACHE_MAX_JITTER_PERCENT, NULL,
        NULL, CUSTOM),
    KEY(cache, pending_file, K_STR, 0, 0, NULL, NULL, CUSTOM),
    KEY(cache, async_redis, K_BOOL, 0, 0, NULL, NULL, CUSTOM),
    KEY(resilience, rate_limit, K_UINT, 0, 10000000, NULL, NULL, CUSTOM),
    KEY(resilience, rate_limit_burst, K_UINT, 0, 10000000, NULL, NULL, CUSTOM),
    KEY(resilience, rate_limit_key, K_STR, 0, 0, NULL, NULL, CUSTOM),
    KEY(resilience, rate_limit_shared, K_BOOL, 0, 0, NULL, NULL, CUSTOM),
    KEY(resilience, rate_limit_local_percent, K_UINT, 1, 100, NULL, NULL,
        CUSTOM),
    KEY(resilience, rate_limit_redis_timeout, K_DURATION, 1, 60000, NULL, NULL,
        CUSTOM),
    KEY(resilience, load_shedding, K_BOOL, 0, 0, NULL, NULL, CUSTOM),
    KEY(resilience, default_timeout, K_DURATION, 0, DAY_MS, NULL, NULL, CUSTOM),
    /* max 1: the list holds rate limits (0: timeouts). */
    KEY(resilience, method_timeouts, K_RULES, 0, 0, NULL, NULL, CUSTOM),
    KEY(resilience, method_rate_limits, K_RULES, 0, 1, NULL, NULL, CUSTOM),
    /* HTTP/JSON, gRPC-Web and HTTP answers on the server's port
     * (perfc_gateway_attach, docs/http-json.md); rows fill
     * perfc_gateway_opts, whose header only is used (no gateway link). */
    KEY(http, enabled, K_BOOL, 0, 0, NULL, NULL, CUSTOM),
    KEY(http, max_body_size, K_SIZE, 1, INT_MAX, NULL, NULL,
        GATEWAY(max_body_bytes)),
    KEY(http, idle_timeout, K_DURATION, 1, DAY_MS, NULL, NULL,
        GATEWAY(idle_timeout_ms)),
    KEY(http, gzip, K_BOOL, 0, 0, NULL, NULL, CUSTOM),
    KEY(http, gzip_level, K_UINT, 1, 9, NULL, NULL, GATEWAY(gzip_level)),
    KEY(http, gzip_min_size, K_SIZE, 1, (int64_t)1 << 31, NULL, NULL,
        GATEWAY(gzip_min_bytes)),
    KEY(http, cache, K_ENUM, 0, 0, http_cache_names, http_cache_values,
        GATEWAY(http_cache)),
    /* CORS (docs/http-json.md, "CORS"): the origins list turns it on. */
    KEY(http, cors_allowed_origins, K_LIST_ORIGIN, 0, 0, NULL, NULL, CUSTOM),
    KEY(http, cors_allowed_methods, K_STR, 0, 0, NULL, NULL,
        GATEWAY(cors_methods)),
    KEY(http, cors_allowed_headers, K_STR, 0, 0, NULL, NULL,
        GATEWAY(cors_headers)),
    KEY(http, cors_expose_headers, K_STR, 0, 0, NULL, NULL,
        GATEWAY(cors_expose_headers)),
    KEY(http, cors_max_age, K_DURATION, 1000, DAY_MS, NULL, NULL,
        GATEWAY(cors_max_age_ms)),
    KEY(http, cors_allow_credentials, K_BOOL, 0, 0, NULL, NULL,
        GATEWAY(cors_allow_credentials)),
    KEY(client, lb_policy, K_ENUM_NAME, 0, 0, lb_policy_names, NULL,
        CHANNEL(lb_policy)),
};

const size_t perfc__config_nkeys =
    sizeof perfc__config_keys / sizeof perfc__config_keys[0];
