/*
 * config.c — the configuration loader: YAML file (libcyaml), environment
 * overrides, command-line flags, into the runtime's option structs.
 *
 * Room: runtime/src. Owns the loaded tree until perfc_config_free(); calls
 * nothing in the rest of the runtime except the logger setters in
 * perfc_config_apply_logging().
 *
 * How it is put together, and why:
 * - libcyaml loads the file against a schema in which every leaf is a
 *   string. The schema gives the structure checks for free (unknown keys,
 *   a list or mapping where a value belongs, YAML syntax), while every
 *   value, wherever it came from (file, environment, flag), goes through one
 *   strict parser per kind below. libcyaml's own scalar parsing would accept
 *   "maybe" as false for a bool and could not share code with the
 *   environment path.
 * - libcyaml reports errors only as log lines with a backtrace; log_fn
 *   collects them and cyaml_message() turns them into one message with the
 *   key path and position.
 * - A value that parses as YAML but not as, say, a duration is found after
 *   libcyaml returned, when the position is gone. A second pass over the
 *   same bytes with libyaml's event parser (locate()) records the line and
 *   column of every key and value by path ("server.listen[1]"), so those
 *   messages carry positions too. It runs first, which also reports YAML
 *   syntax errors with libyaml's own position.
 * - A table (KEYS) drives everything per key: env variable names, parsing,
 *   range checks, presence. Adding a key is one schema line and one table
 *   line.
 */
#include "perfc/config.h"
#include "perfc/resilience.h"
#include "perfc/log.h"
#include "core/duration_internal.h"

#include <ctype.h>
#include <cyaml/cyaml.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

/* ---- the raw tree libcyaml fills: every leaf a string ------------------ */

typedef struct raw_server {
  char **listen;
  unsigned listen_count;
  char *threads, *requests_per_method, *default_executor, *pool_threads,
      *pool_queue, *keepalive_time, *keepalive_timeout,
      *keepalive_permit_without_calls, *min_ping_interval,
      *max_concurrent_streams, *max_recv_message_size, *max_send_message_size,
      *max_connection_idle, *max_connection_age, *max_connection_age_grace,
      *shutdown_grace, *compression, *poller_wakeup_preemption,
      *worker_wakeup_preemption, *stream_flush_every_send, *tcp_tx_zerocopy,
      *channelz;
} raw_server;

typedef struct raw_tls {
  char *cert_file, *key_file, *client_ca_file, *client_auth;
} raw_tls;

typedef struct raw_metrics {
  char *listen, *handling_time_histogram;
  char **buckets;
  unsigned buckets_count;
} raw_metrics;

typedef struct raw_logging {
  char *level, *format, *access_log;
} raw_logging;

typedef struct raw_redis {
  char *address, *pool_size, *connect_timeout, *command_timeout;
} raw_redis;

typedef struct raw_postgres {
  char *dsn, *replica_dsn, *pool_size, *connect_timeout, *statement_timeout,
      *acquire_timeout;
} raw_postgres;

typedef struct raw_cache {
  char *enabled, *l1_max_bytes, *default_ttl, *negative_ttl, *jitter_percent;
  char *pending_file;
} raw_cache;

typedef struct raw_resilience {
  char *rate_limit, *rate_limit_burst, *rate_limit_key, *load_shedding,
      *default_timeout;
  char **method_timeouts;
  unsigned method_timeouts_count;
  char **method_rate_limits;
  unsigned method_rate_limits_count;
} raw_resilience;

typedef struct raw_root {
  raw_server server;
  raw_tls tls;
  raw_metrics metrics;
  raw_logging logging;
  raw_redis redis;
  raw_postgres postgres;
  raw_cache cache;
  raw_resilience resilience;
} raw_root;

#define STR_FIELD(name, type, member)                                          \
  CYAML_FIELD_STRING_PTR(name, CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, type, \
                         member, 0, CYAML_UNLIMITED)
#define SECTION(name, member, fields)                                          \
  CYAML_FIELD_MAPPING(name, CYAML_FLAG_OPTIONAL, raw_root, member, fields)

static const cyaml_schema_value_t string_entry = {
    CYAML_VALUE_STRING(CYAML_FLAG_POINTER, char, 0, CYAML_UNLIMITED)};

static const cyaml_schema_field_t server_fields[] = {
    CYAML_FIELD_SEQUENCE("listen", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
                         raw_server, listen, &string_entry, 0, CYAML_UNLIMITED),
    STR_FIELD("threads", raw_server, threads),
    STR_FIELD("requests_per_method", raw_server, requests_per_method),
    STR_FIELD("default_executor", raw_server, default_executor),
    STR_FIELD("pool_threads", raw_server, pool_threads),
    STR_FIELD("pool_queue", raw_server, pool_queue),
    STR_FIELD("keepalive_time", raw_server, keepalive_time),
    STR_FIELD("keepalive_timeout", raw_server, keepalive_timeout),
    STR_FIELD("keepalive_permit_without_calls", raw_server,
              keepalive_permit_without_calls),
    STR_FIELD("min_ping_interval", raw_server, min_ping_interval),
    STR_FIELD("max_concurrent_streams", raw_server, max_concurrent_streams),
    STR_FIELD("max_recv_message_size", raw_server, max_recv_message_size),
    STR_FIELD("max_send_message_size", raw_server, max_send_message_size),
    STR_FIELD("max_connection_idle", raw_server, max_connection_idle),
    STR_FIELD("max_connection_age", raw_server, max_connection_age),
    STR_FIELD("max_connection_age_grace", raw_server, max_connection_age_grace),
    STR_FIELD("shutdown_grace", raw_server, shutdown_grace),
    STR_FIELD("compression", raw_server, compression),
    STR_FIELD("poller_wakeup_preemption", raw_server, poller_wakeup_preemption),
    STR_FIELD("worker_wakeup_preemption", raw_server, worker_wakeup_preemption),
    STR_FIELD("stream_flush_every_send", raw_server, stream_flush_every_send),
    STR_FIELD("tcp_tx_zerocopy", raw_server, tcp_tx_zerocopy),
    STR_FIELD("channelz", raw_server, channelz),
    CYAML_FIELD_END};

static const cyaml_schema_field_t tls_fields[] = {
    STR_FIELD("cert_file", raw_tls, cert_file),
    STR_FIELD("key_file", raw_tls, key_file),
    STR_FIELD("client_ca_file", raw_tls, client_ca_file),
    STR_FIELD("client_auth", raw_tls, client_auth), CYAML_FIELD_END};

static const cyaml_schema_field_t metrics_fields[] = {
    STR_FIELD("listen", raw_metrics, listen),
    STR_FIELD("handling_time_histogram", raw_metrics, handling_time_histogram),
    CYAML_FIELD_SEQUENCE("buckets", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
                         raw_metrics, buckets, &string_entry, 0,
                         CYAML_UNLIMITED),
    CYAML_FIELD_END};

static const cyaml_schema_field_t logging_fields[] = {
    STR_FIELD("level", raw_logging, level),
    STR_FIELD("format", raw_logging, format),
    STR_FIELD("access_log", raw_logging, access_log), CYAML_FIELD_END};

static const cyaml_schema_field_t redis_fields[] = {
    STR_FIELD("address", raw_redis, address),
    STR_FIELD("pool_size", raw_redis, pool_size),
    STR_FIELD("connect_timeout", raw_redis, connect_timeout),
    STR_FIELD("command_timeout", raw_redis, command_timeout), CYAML_FIELD_END};

static const cyaml_schema_field_t postgres_fields[] = {
    STR_FIELD("dsn", raw_postgres, dsn),
    STR_FIELD("replica_dsn", raw_postgres, replica_dsn),
    STR_FIELD("pool_size", raw_postgres, pool_size),
    STR_FIELD("connect_timeout", raw_postgres, connect_timeout),
    STR_FIELD("statement_timeout", raw_postgres, statement_timeout),
    STR_FIELD("acquire_timeout", raw_postgres, acquire_timeout),
    CYAML_FIELD_END};

static const cyaml_schema_field_t cache_fields[] = {
    STR_FIELD("enabled", raw_cache, enabled),
    STR_FIELD("l1_max_bytes", raw_cache, l1_max_bytes),
    STR_FIELD("default_ttl", raw_cache, default_ttl),
    STR_FIELD("negative_ttl", raw_cache, negative_ttl),
    STR_FIELD("jitter_percent", raw_cache, jitter_percent),
    STR_FIELD("pending_file", raw_cache, pending_file), CYAML_FIELD_END};

static const cyaml_schema_field_t resilience_fields[] = {
    STR_FIELD("rate_limit", raw_resilience, rate_limit),
    STR_FIELD("rate_limit_burst", raw_resilience, rate_limit_burst),
    STR_FIELD("rate_limit_key", raw_resilience, rate_limit_key),
    STR_FIELD("load_shedding", raw_resilience, load_shedding),
    STR_FIELD("default_timeout", raw_resilience, default_timeout),
    CYAML_FIELD_SEQUENCE("method_timeouts",
                         CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
                         raw_resilience, method_timeouts, &string_entry, 0,
                         CYAML_UNLIMITED),
    CYAML_FIELD_SEQUENCE("method_rate_limits",
                         CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
                         raw_resilience, method_rate_limits, &string_entry, 0,
                         CYAML_UNLIMITED),
    CYAML_FIELD_END};

static const cyaml_schema_field_t root_fields[] = {
    SECTION("server", server, server_fields),
    SECTION("tls", tls, tls_fields),
    SECTION("metrics", metrics, metrics_fields),
    SECTION("logging", logging, logging_fields),
    SECTION("redis", redis, redis_fields),
    SECTION("postgres", postgres, postgres_fields),
    SECTION("cache", cache, cache_fields),
    SECTION("resilience", resilience, resilience_fields),
    CYAML_FIELD_END};

static const cyaml_schema_value_t root_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_POINTER, raw_root, root_fields)};

/* ---- parsed values and the key table ----------------------------------- */

typedef enum kind {
  K_STR,       /* any string (paths, DSNs) */
  K_ADDR,      /* HOST:PORT */
  K_ADDR_OFF,  /* HOST:PORT or "off" */
  K_LIST_ADDR, /* list of HOST:PORT */
  K_UINT,      /* unsigned in [min, max] */
  K_BOOL,      /* true/false */
  K_DURATION,  /* "250ms", "1m30s", stored as int64 ms */
  K_SIZE,      /* "4096", "64MiB", stored as uint64 bytes */
  K_MSGSIZE,   /* a size up to INT_MAX, or "unlimited" (-1) */
  K_ENUM,      /* one of names[], stored as its index */
  K_FLOATS,    /* list of increasing positive numbers */
  K_RULES      /* list of "/pkg.Svc/Method=VALUE" (val_off: which table) */
} kind;

/* Which part of struct perfc_config a parsed value goes to. */
typedef struct values {
  unsigned threads, requests_per_method, pool_threads, pool_queue,
      max_concurrent_streams;
  int default_executor, compression, permit_without_calls, poller_preemption,
      worker_preemption, stream_flush_every_send, tcp_tx_zerocopy, channelz;
  int64_t keepalive_time_ms, keepalive_timeout_ms, min_ping_interval_ms,
      max_connection_idle_ms, max_connection_age_ms,
      max_connection_age_grace_ms, shutdown_grace_ms;
  int max_recv_message_bytes, max_send_message_bytes;
  const char *cert_file, *key_file, *client_ca_file;
  int client_auth;
  const char *metrics_listen;
  int handling_time_histogram;
  int log_level, log_format, access_log;
  perfc_config_redis redis;
  perfc_config_postgres postgres;
  perfc_config_cache cache;
  perfc_config_resilience resilience;
} values;

static const char *const executor_names[] = {"inline", "pool", NULL};
static const char *const compression_names[] = {"identity", "gzip", "deflate",
                                                NULL};
static const char *const client_auth_names[] = {"none", "request", "require",
                                                NULL};
static const char *const level_names[] = {"debug", "info", "warn",
                                          "error", "off",  NULL};
static const char *const format_names[] = {"logfmt", "json", NULL};

typedef struct key_def {
  const char *section;
  const char *name;
  kind k;
  size_t raw_off; /* char * (or char ** for lists) in raw_root */
  size_t cnt_off; /* lists: their unsigned count in raw_root */
  size_t val_off; /* parsed value in values; unused for lists */
  int64_t min, max;
  const char *const *names; /* K_ENUM */
} key_def;

#define MS_MAX ((int64_t)INT_MAX) /* grpc channel args are ints */
#define HOUR_MS (3600 * (int64_t)1000)
#define DAY_MS (24 * HOUR_MS)
#define RAW(sec, f) offsetof(raw_root, sec.f)
#define VAL(f) offsetof(values, f)
#define KEY(sec, f, k, val, min, max, names)                                   \
  { #sec, #f, k, RAW(sec, f), 0, val, min, max, names }

static const key_def KEYS[] = {
    {"server", "listen", K_LIST_ADDR, RAW(server, listen),
     RAW(server, listen_count), 0, 0, 0, NULL},
    KEY(server, threads, K_UINT, VAL(threads), 0, 1024, NULL),
    KEY(server, requests_per_method, K_UINT, VAL(requests_per_method), 1, 4096,
        NULL),
    KEY(server, default_executor, K_ENUM, VAL(default_executor), 0, 0,
        executor_names),
    KEY(server, pool_threads, K_UINT, VAL(pool_threads), 1, 4096, NULL),
    KEY(server, pool_queue, K_UINT, VAL(pool_queue), 1, 1 << 20, NULL),
    KEY(server, keepalive_time, K_DURATION, VAL(keepalive_time_ms), 1, MS_MAX,
        NULL),
    KEY(server, keepalive_timeout, K_DURATION, VAL(keepalive_timeout_ms), 1,
        MS_MAX, NULL),
    KEY(server, keepalive_permit_without_calls, K_BOOL,
        VAL(permit_without_calls), 0, 0, NULL),
    KEY(server, min_ping_interval, K_DURATION, VAL(min_ping_interval_ms), 1,
        MS_MAX, NULL),
    KEY(server, max_concurrent_streams, K_UINT, VAL(max_concurrent_streams), 1,
        INT_MAX, NULL),
    KEY(server, max_recv_message_size, K_MSGSIZE, VAL(max_recv_message_bytes),
        1, INT_MAX, NULL),
    KEY(server, max_send_message_size, K_MSGSIZE, VAL(max_send_message_bytes),
        1, INT_MAX, NULL),
    KEY(server, max_connection_idle, K_DURATION, VAL(max_connection_idle_ms), 0,
        MS_MAX, NULL),
    KEY(server, max_connection_age, K_DURATION, VAL(max_connection_age_ms), 0,
        MS_MAX, NULL),
    KEY(server, max_connection_age_grace, K_DURATION,
        VAL(max_connection_age_grace_ms), 0, MS_MAX, NULL),
    KEY(server, shutdown_grace, K_DURATION, VAL(shutdown_grace_ms), 1, HOUR_MS,
        NULL),
    KEY(server, compression, K_ENUM, VAL(compression), 0, 0, compression_names),
    KEY(server, poller_wakeup_preemption, K_BOOL, VAL(poller_preemption), 0, 0,
        NULL),
    KEY(server, worker_wakeup_preemption, K_BOOL, VAL(worker_preemption), 0, 0,
        NULL),
    KEY(server, stream_flush_every_send, K_BOOL, VAL(stream_flush_every_send),
        0, 0, NULL),
    KEY(server, tcp_tx_zerocopy, K_BOOL, VAL(tcp_tx_zerocopy), 0, 0, NULL),
    KEY(server, channelz, K_BOOL, VAL(channelz), 0, 0, NULL),
    KEY(tls, cert_file, K_STR, VAL(cert_file), 0, 0, NULL),
    KEY(tls, key_file, K_STR, VAL(key_file), 0, 0, NULL),
    KEY(tls, client_ca_file, K_STR, VAL(client_ca_file), 0, 0, NULL),
    KEY(tls, client_auth, K_ENUM, VAL(client_auth), 0, 0, client_auth_names),
    KEY(metrics, listen, K_ADDR_OFF, VAL(metrics_listen), 0, 0, NULL),
    KEY(metrics, handling_time_histogram, K_BOOL, VAL(handling_time_histogram),
        0, 0, NULL),
    {"metrics", "buckets", K_FLOATS, RAW(metrics, buckets),
     RAW(metrics, buckets_count), 0, 0, 0, NULL},
    KEY(logging, level, K_ENUM, VAL(log_level), 0, 0, level_names),
    KEY(logging, format, K_ENUM, VAL(log_format), 0, 0, format_names),
    KEY(logging, access_log, K_BOOL, VAL(access_log), 0, 0, NULL),
    KEY(redis, address, K_ADDR, VAL(redis.address), 0, 0, NULL),
    KEY(redis, pool_size, K_UINT, VAL(redis.pool_size), 1, 1024, NULL),
    KEY(redis, connect_timeout, K_DURATION, VAL(redis.connect_timeout_ms), 1,
        HOUR_MS, NULL),
    KEY(redis, command_timeout, K_DURATION, VAL(redis.command_timeout_ms), 1,
        HOUR_MS, NULL),
    KEY(postgres, dsn, K_STR, VAL(postgres.dsn), 0, 0, NULL),
    KEY(postgres, replica_dsn, K_STR, VAL(postgres.replica_dsn), 0, 0, NULL),
    KEY(postgres, pool_size, K_UINT, VAL(postgres.pool_size), 1, 1024, NULL),
    KEY(postgres, connect_timeout, K_DURATION, VAL(postgres.connect_timeout_ms),
        1, HOUR_MS, NULL),
    KEY(postgres, statement_timeout, K_DURATION,
        VAL(postgres.statement_timeout_ms), 0, DAY_MS, NULL),
    KEY(postgres, acquire_timeout, K_DURATION, VAL(postgres.acquire_timeout_ms),
        1, HOUR_MS, NULL),
    KEY(cache, enabled, K_BOOL, VAL(cache.enabled), 0, 0, NULL),
    KEY(cache, l1_max_bytes, K_SIZE, VAL(cache.l1_max_bytes), 0,
        (int64_t)1 << 40, NULL),
    KEY(cache, default_ttl, K_DURATION, VAL(cache.default_ttl_ms), 1,
        30 * DAY_MS, NULL),
    KEY(cache, negative_ttl, K_DURATION, VAL(cache.negative_ttl_ms), 0, DAY_MS,
        NULL),
    KEY(cache, jitter_percent, K_UINT, VAL(cache.jitter_percent), 0,
        PERFC_CACHE_MAX_JITTER_PERCENT, NULL),
    KEY(cache, pending_file, K_STR, VAL(cache.pending_file), 0, 0, NULL),
    KEY(resilience, rate_limit, K_UINT, VAL(resilience.rate_limit), 0, 10000000,
        NULL),
    KEY(resilience, rate_limit_burst, K_UINT, VAL(resilience.rate_limit_burst),
        0, 10000000, NULL),
    KEY(resilience, rate_limit_key, K_STR, VAL(resilience.rate_limit_key), 0, 0,
        NULL),
    KEY(resilience, load_shedding, K_BOOL, VAL(resilience.load_shedding), 0, 0,
        NULL),
    KEY(resilience, default_timeout, K_DURATION,
        VAL(resilience.default_timeout_ms), 0, DAY_MS, NULL),
    {"resilience", "method_timeouts", K_RULES, RAW(resilience, method_timeouts),
     RAW(resilience, method_timeouts_count), 0, 0, 0, NULL},
    {"resilience", "method_rate_limits", K_RULES,
     RAW(resilience, method_rate_limits),
     RAW(resilience, method_rate_limits_count), 1, 0, 0, NULL},
};
#define NKEYS (sizeof KEYS / sizeof KEYS[0])

/* Where a key's position was seen in the file (1-based; 0 = unknown). */
typedef struct loc {
  char *path;
  int key_line, key_col, val_line, val_col;
} loc;

struct perfc_config {
  raw_root *raw;
  char *name; /* file name for messages */
  loc *locs;  /* from locate() */
  size_t nlocs;
  char *origin[NKEYS]; /* NULL = the file; else "environment X", ... */
  unsigned char set[NKEYS];
  values v;
  double *buckets;
  size_t bucket_count;
  /* Parsed resilience rule lists (method names owned here). */
  perfc_timeout_rule *timeout_rules;
  size_t ntimeout_rules;
  perfc_ratelimit_rule *rate_rules;
  size_t nrate_rules;
};

/* ---- messages ----------------------------------------------------------- */

static _Thread_local char last_error[1024];

const char *perfc_config_last_error(void) { return last_error; }

static void clear_error(void) { last_error[0] = '\0'; }

static int fail(const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

static int fail(const char *fmt, ...) {
  va_list ap;
  int n = snprintf(last_error, sizeof last_error, "config: ");
  va_start(ap, fmt);
  vsnprintf(last_error + n, sizeof last_error - (size_t)n, fmt, ap);
  va_end(ap);
  return PERFC_ECONFIG;
}

static char *xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d)
    memcpy(d, s, n);
  return d;
}

static const loc *find_loc(const perfc_config *cfg, const char *path) {
  for (size_t i = 0; i < cfg->nlocs; i++)
    if (strcmp(cfg->locs[i].path, path) == 0)
      return &cfg->locs[i];
  return NULL;
}

/* "FILE:LINE:COL" for a value read from the file, or the origin. */
static void where(const perfc_config *cfg, size_t ki, const char *path,
                  char *buf, size_t n) {
  if (cfg->origin[ki]) {
    snprintf(buf, n, "%s", cfg->origin[ki]);
    return;
  }
  const loc *l = find_loc(cfg, path);
  if (l && l->val_line)
    snprintf(buf, n, "%s:%d:%d", cfg->name, l->val_line, l->val_col);
  else
    snprintf(buf, n, "%s", cfg->name);
}

/* ---- strict value parsers ----------------------------------------------- */

/* Digits only: no sign, no spaces, no hex, and no overflow. */
static int parse_u64(const char *s, const char **end, uint64_t *out) {
  uint64_t v = 0;
  const char *p = s;
  if (!isdigit((unsigned char)*p))
    return -1;
  for (; isdigit((unsigned char)*p); p++) {
    unsigned d = (unsigned)(*p - '0');
    if (v > (UINT64_MAX - d) / 10)
      return -1;
    v = v * 10 + d;
  }
  *end = p;
  *out = v;
  return 0;
}

/* "4096", "4096B", "64KiB", "64MiB", "1GiB", and the decimal "KB", "MB",
 * "GB" (1000-based, as their SI names say). */
static int parse_size(const char *s, uint64_t *out) {
  static const struct {
    const char *u;
    uint64_t mult;
  } units[] = {{"", 1},
               {"B", 1},
               {"KiB", 1024},
               {"MiB", 1024 * 1024},
               {"GiB", 1024 * 1024 * 1024},
               {"KB", 1000},
               {"MB", 1000 * 1000},
               {"GB", 1000 * 1000 * 1000}};
  uint64_t n;
  const char *p;
  if (parse_u64(s, &p, &n) != 0)
    return -1;
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
    if (strcmp(p, units[i].u) == 0) {
      if (n > UINT64_MAX / units[i].mult)
        return -1;
      *out = n * units[i].mult;
      return 0;
    }
  return -1;
}

static int parse_bool(const char *s, int *out) {
  if (!strcmp(s, "true") || !strcmp(s, "yes") || !strcmp(s, "on")) {
    *out = 1;
    return 0;
  }
  if (!strcmp(s, "false") || !strcmp(s, "no") || !strcmp(s, "off")) {
    *out = 0;
    return 0;
  }
  return -1;
}

/* HOST:PORT with a decimal port 0..65535; the host may be empty (all
 * interfaces), a name, an IPv4 address or a bracketed IPv6 address. Whether
 * the host resolves is left to the listener, which reports it then. */
static int check_addr(const char *s) {
  const char *colon = strrchr(s, ':');
  if (!colon || colon[1] == '\0')
    return -1;
  if (s[0] == '[') {
    const char *close = strchr(s, ']');
    if (!close || close + 1 != colon)
      return -1;
  } else if (memchr(s, ':', (size_t)(colon - s))) {
    return -1; /* an unbracketed IPv6 address is ambiguous */
  }
  uint64_t port;
  const char *end;
  if (parse_u64(colon + 1, &end, &port) != 0 || *end || port > 65535)
    return -1;
  for (const char *p = s; p < colon; p++)
    if (isspace((unsigned char)*p))
      return -1;
  return 0;
}

static void fmt_duration(int64_t ms, char *buf, size_t n) {
  if (ms == 0)
    snprintf(buf, n, "0");
  else if (ms % HOUR_MS == 0)
    snprintf(buf, n, "%lldh", (long long)(ms / HOUR_MS));
  else if (ms % 60000 == 0)
    snprintf(buf, n, "%lldm", (long long)(ms / 60000));
  else if (ms % 1000 == 0)
    snprintf(buf, n, "%llds", (long long)(ms / 1000));
  else
    snprintf(buf, n, "%lldms", (long long)ms);
}

static int enum_index(const char *const *names, const char *s) {
  for (int i = 0; names[i]; i++)
    if (strcmp(names[i], s) == 0)
      return i;
  return -1;
}

static void join_names(const char *const *names, char *buf, size_t n) {
  size_t used = 0;
  buf[0] = '\0';
  for (int i = 0; names[i] && used < n; i++)
    used +=
        (size_t)snprintf(buf + used, n - used, "%s%s", i ? ", " : "", names[i]);
}

/* "/pkg.Svc/Method=VALUE" lists: per-method timeouts (VALUE a duration)
 * or rate limits (VALUE calls per second). The method is a full path or a
 * "/pkg.Svc/" prefix, as perfc/resilience.h's rules take it; method names
 * are copied, so the raw strings stay as written (for messages and for
 * re-resolving after a failed override). */
static void free_timeout_rules(perfc_timeout_rule *r, size_t n) {
  for (size_t i = 0; r != NULL && i < n; i++)
    free((char *)r[i].method);
  free(r);
}

static void free_rate_rules(perfc_ratelimit_rule *r, size_t n) {
  for (size_t i = 0; r != NULL && i < n; i++)
    free((char *)r[i].method);
  free(r);
}

static int resolve_rules(perfc_config *cfg, size_t ki, const char *path,
                         char **items, unsigned count) {
  const key_def *k = &KEYS[ki];
  int rates = k->val_off == 1;
  char ipath[160], at[512];
  perfc_timeout_rule *tr = rates ? NULL : calloc(count, sizeof *tr);
  perfc_ratelimit_rule *rr = rates ? calloc(count, sizeof *rr) : NULL;
  if (rates ? !rr : !tr)
    return PERFC_ENOMEM;
  for (unsigned i = 0; i < count; i++) {
    snprintf(ipath, sizeof ipath, "%s[%u]", path, i);
    where(cfg, ki, ipath, at, sizeof at);
    const char *eq = strrchr(items[i], '=');
    int bad = items[i][0] != '/' || eq == NULL || eq == items[i] + 1 ||
              eq[1] == '\0';
    int64_t ms = 0;
    uint64_t rate = 0;
    const char *end = NULL;
    if (!bad)
      bad = rates ? parse_u64(eq + 1, &end, &rate) != 0 || *end != '\0' ||
                        rate == 0 || rate > 10000000
                  : perfc__duration_parse_ms(eq + 1, &ms) != 0 || ms > DAY_MS;
    char *method = bad ? NULL : strndup(items[i], (size_t)(eq - items[i]));
    if (bad || method == NULL) {
      free_timeout_rules(tr, i);
      free_rate_rules(rr, i);
      if (!bad)
        return PERFC_ENOMEM;
      return fail("%s: %s: invalid value '%s': expected /pkg.Svc/Method=%s", at,
                  ipath, items[i], rates ? "CALLS_PER_SECOND" : "DURATION");
    }
    if (rates)
      rr[i] = (perfc_ratelimit_rule){.method = method, .rate = (double)rate};
    else
      tr[i] = (perfc_timeout_rule){.method = method, .timeout_ms = ms};
  }
  if (rates) {
    free_rate_rules(cfg->rate_rules, cfg->nrate_rules);
    cfg->rate_rules = rr;
    cfg->nrate_rules = count;
  } else {
    free_timeout_rules(cfg->timeout_rules, cfg->ntimeout_rules);
    cfg->timeout_rules = tr;
    cfg->ntimeout_rules = count;
  }
  cfg->set[ki] = 1;
  return 0;
}

/* Parses key `ki`'s raw string(s) into cfg->v; on error returns
 * PERFC_ECONFIG with the message set. Lists are checked element by
 * element, each with its own position. */
static int resolve(perfc_config *cfg, size_t ki) {
  const key_def *k = &KEYS[ki];
  char path[128], at[512], range[96];
  char *rawp = (char *)cfg->raw + k->raw_off;
  snprintf(path, sizeof path, "%s.%s", k->section, k->name);

  if (k->k == K_LIST_ADDR || k->k == K_FLOATS || k->k == K_RULES) {
    char **items = *(char ***)rawp;
    unsigned count = *(unsigned *)((char *)cfg->raw + k->cnt_off);
    /* libcyaml loads "[]" as no list at all; the position map tells an
     * empty list in the file from an absent key. */
    int empty =
        items ? count == 0 : !cfg->origin[ki] && find_loc(cfg, path) != NULL;
    if (!items && !empty) {
      cfg->set[ki] = 0;
      return 0;
    }
    if (empty) {
      where(cfg, ki, path, at, sizeof at);
      return fail("%s: %s: must not be empty", at, path);
    }
    char ipath[160];
    if (k->k == K_LIST_ADDR) {
      for (unsigned i = 0; i < count; i++) {
        snprintf(ipath, sizeof ipath, "%s[%u]", path, i);
        where(cfg, ki, ipath, at, sizeof at);
        if (check_addr(items[i]) != 0)
          return fail("%s: %s: invalid value '%s': expected HOST:PORT", at,
                      ipath, items[i]);
      }
      cfg->set[ki] = 1;
      return 0;
    }
    if (k->k == K_RULES)
      return resolve_rules(cfg, ki, path, items, count);
    double *b = calloc(count, sizeof *b);
    if (!b)
      return PERFC_ENOMEM;
    for (unsigned i = 0; i < count; i++) {
      char *end;
      snprintf(ipath, sizeof ipath, "%s[%u]", path, i);
      where(cfg, ki, ipath, at, sizeof at);
      errno = 0;
      double d = strtod(items[i], &end);
      if (!items[i][0] || *end || errno || !isfinite(d) || d <= 0) {
        free(b);
        return fail("%s: %s: invalid value '%s': expected a positive number "
                    "of seconds",
                    at, ipath, items[i]);
      }
      if (i > 0 && d <= b[i - 1]) {
        free(b);
        return fail("%s: %s: buckets must be strictly increasing", at, ipath);
      }
      b[i] = d;
    }
    free(cfg->buckets);
    cfg->buckets = b;
    cfg->bucket_count = count;
    cfg->set[ki] = 1;
    return 0;
  }

  const char *s = *(char **)rawp;
  if (!s) {
    cfg->set[ki] = 0;
    return 0;
  }
  void *dst = (char *)&cfg->v + k->val_off;
  where(cfg, ki, path, at, sizeof at);
  switch (k->k) {
  case K_STR:
    *(const char **)dst = s;
    break;
  case K_ADDR:
  case K_ADDR_OFF:
    if (!(k->k == K_ADDR_OFF && strcmp(s, "off") == 0) && check_addr(s) != 0)
      return fail("%s: %s: invalid value '%s': expected HOST:PORT%s", at, path,
                  s, k->k == K_ADDR_OFF ? " or off" : "");
    *(const char **)dst = s;
    break;
  case K_UINT: {
    uint64_t n;
    const char *end;
    if (parse_u64(s, &end, &n) != 0 || *end)
      return fail("%s: %s: invalid value '%s': expected an unsigned integer",
                  at, path, s);
    if ((int64_t)n < k->min || n > (uint64_t)k->max)
      return fail("%s: %s: %s is out of range: must be between %lld and %lld",
                  at, path, s, (long long)k->min, (long long)k->max);
    *(unsigned *)dst = (unsigned)n;
    break;
  }
  case K_BOOL:
    if (parse_bool(s, (int *)dst) != 0)
      return fail("%s: %s: invalid value '%s': expected true or false", at,
                  path, s);
    break;
  case K_DURATION: {
    int64_t ms;
    char lo[32], hi[32];
    if (perfc__duration_parse_ms(s, &ms) != 0)
      return fail("%s: %s: invalid duration '%s': expected a number with a "
                  "unit ms, s, m or h, such as 250ms, 10s, 2m, 1h",
                  at, path, s);
    if (ms < k->min || ms > k->max) {
      fmt_duration(k->min, lo, sizeof lo);
      fmt_duration(k->max, hi, sizeof hi);
      if (k->max == MS_MAX)
        snprintf(hi, sizeof hi, "%lldms", (long long)MS_MAX);
      return fail("%s: %s: %s is out of range: must be between %s and %s", at,
                  path, s, lo, hi);
    }
    *(int64_t *)dst = ms;
    break;
  }
  case K_SIZE:
  case K_MSGSIZE: {
    uint64_t n;
    if (k->k == K_MSGSIZE && strcmp(s, "unlimited") == 0) {
      *(int *)dst = -1;
      break;
    }
    if (parse_size(s, &n) != 0)
      return fail("%s: %s: invalid size '%s': expected bytes with an optional "
                  "unit B, KiB, MiB, GiB, KB, MB, GB%s",
                  at, path, s, k->k == K_MSGSIZE ? ", or unlimited" : "");
    if ((int64_t)n < k->min || n > (uint64_t)k->max) {
      snprintf(range, sizeof range, "between %lld and %lld bytes",
               (long long)k->min, (long long)k->max);
      return fail("%s: %s: %s is out of range: must be %s", at, path, s, range);
    }
    if (k->k == K_SIZE)
      *(uint64_t *)dst = n;
    else
      *(int *)dst = (int)n;
    break;
  }
  case K_ENUM: {
    int i = enum_index(k->names, s);
    if (i < 0) {
      join_names(k->names, range, sizeof range);
      return fail("%s: %s: invalid value '%s': expected one of %s", at, path, s,
                  range);
    }
    *(int *)dst = i;
    break;
  }
  default:
    break;
  }
  cfg->set[ki] = 1;
  return 0;
}

static size_t find_key(const char *section, size_t slen, const char *name) {
  for (size_t i = 0; i < NKEYS; i++)
    if (strlen(KEYS[i].section) == slen &&
        strncmp(KEYS[i].section, section, slen) == 0 &&
        strcmp(KEYS[i].name, name) == 0)
      return i;
  return NKEYS;
}

/* Checks that need more than one key. The position is the first key's. */
static int cross_check(perfc_config *cfg) {
  const values *v = &cfg->v;
  char at[512];
  size_t cert = find_key("tls", 3, "cert_file");
  size_t key = find_key("tls", 3, "key_file");
  size_t ca = find_key("tls", 3, "client_ca_file");
  size_t auth = find_key("tls", 3, "client_auth");
  int has_cert = cfg->set[cert] && v->cert_file[0];
  int has_key = cfg->set[key] && v->key_file[0];
  if (has_cert != has_key) {
    size_t ki = has_cert ? cert : key;
    where(cfg, ki, has_cert ? "tls.cert_file" : "tls.key_file", at, sizeof at);
    return fail("%s: %s: tls.cert_file and tls.key_file must be set together",
                at, has_cert ? "tls.cert_file" : "tls.key_file");
  }
  if (cfg->set[auth] && v->client_auth != PERFC_TLS_CLIENT_AUTH_NONE &&
      !(cfg->set[ca] && v->client_ca_file[0])) {
    where(cfg, auth, "tls.client_auth", at, sizeof at);
    return fail("%s: tls.client_auth: %s needs tls.client_ca_file", at,
                client_auth_names[v->client_auth]);
  }
  if (cfg->set[auth] && v->client_auth != PERFC_TLS_CLIENT_AUTH_NONE &&
      !has_cert) {
    where(cfg, auth, "tls.client_auth", at, sizeof at);
    return fail("%s: tls.client_auth: %s needs tls.cert_file and "
                "tls.key_file",
                at, client_auth_names[v->client_auth]);
  }
  return 0;
}

/* ---- positions: a libyaml event pass ------------------------------------ */

typedef struct locator {
  yaml_parser_t parser;
  loc *locs;
  size_t n, cap;
  int nomem;
  /* A problem libyaml accepts but a configuration must not have
   * (duplicate key, second document): the message, without prefix. */
  char problem[400];
} locator;

static loc *add_loc(locator *lc, const char *path) {
  if (lc->n == lc->cap) {
    size_t cap = lc->cap ? lc->cap * 2 : 32;
    loc *l = realloc(lc->locs, cap * sizeof *l);
    if (!l) {
      lc->nomem = 1;
      return NULL;
    }
    lc->locs = l;
    lc->cap = cap;
  }
  loc *l = &lc->locs[lc->n];
  memset(l, 0, sizeof *l);
  if (!(l->path = xstrdup(path))) {
    lc->nomem = 1;
    return NULL;
  }
  lc->n++;
  return l;
}

/* Walks one node whose first event is `ev` (consumed by the caller's
 * buffer), recording its position under `path`. Returns 0, or -1 on a
 * syntax error (parser.error set) or out of memory. */
static int walk(locator *lc, yaml_event_t *ev, const char *path, loc *self) {
  int line = (int)ev->start_mark.line + 1, col = (int)ev->start_mark.column + 1;
  if (self) {
    self->val_line = line;
    self->val_col = col;
  }
  if (ev->type == YAML_SEQUENCE_START_EVENT) {
    yaml_event_delete(ev);
    for (unsigned i = 0;; i++) {
      yaml_event_t e;
      if (!yaml_parser_parse(&lc->parser, &e))
        return -1;
      if (e.type == YAML_SEQUENCE_END_EVENT) {
        yaml_event_delete(&e);
        return 0;
      }
      char sub[256];
      snprintf(sub, sizeof sub, "%s[%u]", path, i);
      loc *l = add_loc(lc, sub);
      if (!l) {
        yaml_event_delete(&e);
        return -1;
      }
      if (walk(lc, &e, sub, l) != 0)
        return -1;
    }
  }
  if (ev->type == YAML_MAPPING_START_EVENT) {
    yaml_event_delete(ev);
    for (;;) {
      yaml_event_t k;
      if (!yaml_parser_parse(&lc->parser, &k))
        return -1;
      if (k.type == YAML_MAPPING_END_EVENT) {
        yaml_event_delete(&k);
        return 0;
      }
      char sub[256];
      if (k.type == YAML_SCALAR_EVENT)
        snprintf(sub, sizeof sub, "%s%s%.*s", path, path[0] ? "." : "",
                 (int)k.data.scalar.length, (const char *)k.data.scalar.value);
      else
        snprintf(sub, sizeof sub, "%s%s?", path, path[0] ? "." : "");
      /* YAML forbids duplicate keys but libyaml does not check; libcyaml
       * would, naming the first occurrence. Name the second one. */
      for (size_t i = 0; i < lc->n && k.type == YAML_SCALAR_EVENT; i++)
        if (strcmp(lc->locs[i].path, sub) == 0) {
          snprintf(lc->problem, sizeof lc->problem,
                   "%d:%d: %.200s: duplicate key (first at line %d)",
                   (int)k.start_mark.line + 1, (int)k.start_mark.column + 1,
                   sub, lc->locs[i].key_line);
          yaml_event_delete(&k);
          return -1;
        }
      loc *l = add_loc(lc, sub);
      if (!l) {
        yaml_event_delete(&k);
        return -1;
      }
      l->key_line = (int)k.start_mark.line + 1;
      l->key_col = (int)k.start_mark.column + 1;
      /* A complex key (a list or mapping as key) is walked and dropped;
       * the schema rejects it later with its own message. */
      if (k.type != YAML_SCALAR_EVENT) {
        if (walk(lc, &k, sub, NULL) != 0)
          return -1;
      } else {
        yaml_event_delete(&k);
      }
      yaml_event_t v;
      if (!yaml_parser_parse(&lc->parser, &v))
        return -1;
      /* `l` may have moved when the array grew; find it again by index. */
      size_t idx = lc->n - 1;
      while (strcmp(lc->locs[idx].path, sub) != 0)
        idx--;
      if (walk(lc, &v, sub, &lc->locs[idx]) != 0)
        return -1;
    }
  }
  yaml_event_delete(ev);
  return 0;
}

/* Records positions into cfg->locs; on a YAML syntax error returns
 * PERFC_ECONFIG with libyaml's problem and position. */
static int locate(perfc_config *cfg, const unsigned char *buf, size_t len) {
  locator lc;
  memset(&lc, 0, sizeof lc);
  if (!yaml_parser_initialize(&lc.parser))
    return PERFC_ENOMEM;
  yaml_parser_set_input_string(&lc.parser, buf, len);
  int rc = 0, docs = 0;
  for (;;) {
    yaml_event_t e;
    if (!yaml_parser_parse(&lc.parser, &e)) {
      rc = -1;
      break;
    }
    if (e.type == YAML_STREAM_END_EVENT) {
      yaml_event_delete(&e);
      break;
    }
    /* libcyaml reads the first document and ignores the rest, so settings
     * after a stray "---" would be silently lost. */
    if (e.type == YAML_DOCUMENT_START_EVENT && ++docs > 1) {
      snprintf(lc.problem, sizeof lc.problem,
               "%d:%d: a second YAML document; a configuration file holds "
               "one",
               (int)e.start_mark.line + 1, (int)e.start_mark.column + 1);
      yaml_event_delete(&e);
      rc = -1;
      break;
    }
    if (e.type == YAML_SCALAR_EVENT || e.type == YAML_SEQUENCE_START_EVENT ||
        e.type == YAML_MAPPING_START_EVENT) {
      if (walk(&lc, &e, "", NULL) != 0) {
        rc = -1;
        break;
      }
      continue;
    }
    yaml_event_delete(&e);
  }
  if (rc != 0 && lc.problem[0]) {
    rc = fail("%s:%s", cfg->name, lc.problem);
  } else if (rc != 0 && !lc.nomem && lc.parser.error != YAML_NO_ERROR) {
    const yaml_mark_t *m = &lc.parser.problem_mark;
    if (lc.parser.context)
      rc = fail("%s:%d:%d: YAML syntax error: %s %s", cfg->name,
                (int)m->line + 1, (int)m->column + 1, lc.parser.problem,
                lc.parser.context);
    else
      rc = fail("%s:%d:%d: YAML syntax error: %s", cfg->name, (int)m->line + 1,
                (int)m->column + 1,
                lc.parser.problem ? lc.parser.problem : "invalid input");
  } else if (rc != 0) {
    rc = PERFC_ENOMEM;
  }
  yaml_parser_delete(&lc.parser);
  cfg->locs = lc.locs;
  cfg->nlocs = lc.n;
  return rc;
}

/* ---- libcyaml errors ---------------------------------------------------- */

typedef struct cylog {
  char buf[2048];
  size_t len;
} cylog;

/* libcyaml passes its own printf-style formats; the attribute tells the
 * compiler so (clang's -Wformat-nonliteral). */
static void cyaml_log_capture(cyaml_log_t level, void *ctx, const char *fmt,
                              va_list args)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 3, 0)))
#endif
    ;

static void cyaml_log_capture(cyaml_log_t level, void *ctx, const char *fmt,
                              va_list args) {
  cylog *l = ctx;
  (void)level;
  if (l->len < sizeof l->buf) {
    int n = vsnprintf(l->buf + l->len, sizeof l->buf - l->len, fmt, args);
    if (n > 0)
      l->len += (size_t)n;
    if (l->len >= sizeof l->buf)
      l->len = sizeof l->buf - 1;
  }
}

static const char *event_noun(const char *ev) {
  if (!strncmp(ev, "SCALAR", 6))
    return "a single value";
  if (!strncmp(ev, "SEQUENCE", 8))
    return "a list";
  if (!strncmp(ev, "MAPPING", 7))
    return "a mapping";
  return "something else";
}

static void known_keys(const char *section, char *buf, size_t n) {
  size_t used = 0;
  buf[0] = '\0';
  if (!section[0]) {
    const char *prev = "";
    for (size_t i = 0; i < NKEYS && used < n; i++)
      if (strcmp(KEYS[i].section, prev) != 0) {
        used += (size_t)snprintf(buf + used, n - used, "%s%s", used ? ", " : "",
                                 KEYS[i].section);
        prev = KEYS[i].section;
      }
    return;
  }
  for (size_t i = 0; i < NKEYS && used < n; i++)
    if (strcmp(KEYS[i].section, section) == 0)
      used += (size_t)snprintf(buf + used, n - used, "%s%s", used ? ", " : "",
                               KEYS[i].name);
}

/* Turns libcyaml's log ("Load: Unexpected key: thread", "Load: Backtrace:",
 * "  in mapping field 'server' (line: 2, column: 3)", ...) into one message:
 * FILE:LINE:COL: PATH: PROBLEM. */
static int cyaml_message(perfc_config *cfg, cylog *lg, cyaml_err_t err) {
  char *save = NULL, path[256] = "", problem[640] = "", *first = NULL;
  char *fields[16];
  int nfields = 0, line = 0, col = 0;
  for (char *ln = strtok_r(lg->buf, "\n", &save); ln;
       ln = strtok_r(NULL, "\n", &save)) {
    char *q;
    if (!first && strncmp(ln, "Load: ", 6) == 0 &&
        strcmp(ln, "Load: Backtrace:") != 0) {
      first = ln + 6;
      continue;
    }
    if ((q = strstr(ln, "in mapping field '")) != NULL && nfields < 16) {
      char *name = q + 18, *e = strchr(name, '\'');
      if (e)
        *e = '\0';
      fields[nfields++] = name;
      if (e)
        *e = '\0';
      q = e ? e + 1 : name;
    } else {
      q = ln;
    }
    char *lp = strstr(q, "(line: ");
    if (lp && !line)
      sscanf(lp, "(line: %d, column: %d)", &line, &col);
  }
  /* Backtrace lines run innermost first. */
  for (int i = nfields - 1; i >= 0; i--) {
    size_t u = strlen(path);
    snprintf(path + u, sizeof path - u, "%s%s", u ? "." : "", fields[i]);
  }
  if (!first)
    first = (char *)cyaml_strerror(err);

  if (strncmp(first, "Unexpected key: ", 16) == 0) {
    char keys[512], full[320], section[64];
    snprintf(section, sizeof section, "%.63s", path);
    snprintf(full, sizeof full, "%s%s%s", path, path[0] ? "." : "", first + 16);
    known_keys(section, keys, sizeof keys);
    const loc *l = find_loc(cfg, full);
    if (l && l->key_line) {
      line = l->key_line;
      col = l->key_col;
    }
    snprintf(path, sizeof path, "%.250s", full);
    snprintf(problem, sizeof problem, "unknown key (expected one of: %s)",
             keys);
  } else if (strncmp(first, "Expecting ", 10) == 0) {
    char want[32] = "", got[32] = "";
    sscanf(first, "Expecting %31[A-Z_], got event: %31s", want, got);
    const char *w = !strcmp(want, "SEQUENCE")  ? "a list"
                    : !strcmp(want, "MAPPING") ? "a mapping"
                                               : "a single value";
    snprintf(problem, sizeof problem, "wrong type: expected %s, got %s", w,
             event_noun(got));
  } else if (strncmp(first, "libyaml: ", 9) == 0) {
    snprintf(problem, sizeof problem, "YAML syntax error: %s", first + 9);
  } else {
    snprintf(problem, sizeof problem, "%s", first);
  }
  if (!strncmp(first, "Expecting ", 10) && path[0]) {
    const loc *l = find_loc(cfg, path);
    if (l && l->val_line) {
      line = l->val_line;
      col = l->val_col;
    }
  }
  if (line)
    return fail("%s:%d:%d: %s%s%s", cfg->name, line, col, path,
                path[0] ? ": " : "", problem);
  return fail("%s: %s%s%s", cfg->name, path, path[0] ? ": " : "", problem);
}

/* ---- load, set, free ---------------------------------------------------- */

static void set_defaults(values *v) {
  v->redis.pool_size = PERFC_DEFAULT_REDIS_POOL_SIZE;
  v->redis.address = PERFC_DEFAULT_REDIS_ADDRESS;
  v->redis.connect_timeout_ms = PERFC_DEFAULT_REDIS_CONNECT_TIMEOUT_MS;
  v->redis.command_timeout_ms = PERFC_DEFAULT_REDIS_COMMAND_TIMEOUT_MS;
  v->postgres.pool_size = PERFC_DEFAULT_POSTGRES_POOL_SIZE;
  v->postgres.connect_timeout_ms = PERFC_DEFAULT_POSTGRES_CONNECT_TIMEOUT_MS;
  v->postgres.statement_timeout_ms =
      PERFC_DEFAULT_POSTGRES_STATEMENT_TIMEOUT_MS;
  v->postgres.acquire_timeout_ms = PERFC_DEFAULT_POSTGRES_ACQUIRE_TIMEOUT_MS;
  v->cache.enabled = 1;
  v->cache.l1_max_bytes = PERFC_DEFAULT_CACHE_L1_MAX_BYTES;
  v->cache.default_ttl_ms = PERFC_DEFAULT_CACHE_TTL_MS;
  v->cache.negative_ttl_ms = PERFC_DEFAULT_CACHE_NEGATIVE_TTL_MS;
  v->cache.jitter_percent = PERFC_DEFAULT_CACHE_JITTER_PERCENT;
}

static const cyaml_config_t *cyaml_cfg(cylog *lg, cyaml_config_t *c) {
  memset(c, 0, sizeof *c);
  c->log_fn = cyaml_log_capture;
  c->log_ctx = lg;
  c->log_level = CYAML_LOG_ERROR;
  c->mem_fn = cyaml_mem;
  c->flags = CYAML_CFG_DEFAULT;
  return c;
}

void perfc_config_free(perfc_config *cfg) {
  if (!cfg)
    return;
  if (cfg->raw) {
    cylog lg = {.len = 0};
    cyaml_config_t c;
    cyaml_free(cyaml_cfg(&lg, &c), &root_schema, cfg->raw, 0);
  }
  for (size_t i = 0; i < cfg->nlocs; i++)
    free(cfg->locs[i].path);
  free(cfg->locs);
  for (size_t i = 0; i < NKEYS; i++)
    free(cfg->origin[i]);
  free(cfg->buckets);
  free_timeout_rules(cfg->timeout_rules, cfg->ntimeout_rules);
  free_rate_rules(cfg->rate_rules, cfg->nrate_rules);
  free(cfg->name);
  free(cfg);
}

/* Splits a comma-separated list into a malloc'd array of malloc'd strings
 * (what libcyaml's default allocator frees), trimming blanks. */
static int split_list(const char *s, char ***out, unsigned *count) {
  unsigned n = 1;
  for (const char *p = s; *p; p++)
    n += *p == ',';
  char **items = calloc(n, sizeof *items);
  if (!items)
    return PERFC_ENOMEM;
  const char *p = s;
  for (unsigned i = 0; i < n; i++) {
    const char *e = strchr(p, ',');
    if (!e)
      e = p + strlen(p);
    const char *b = p;
    while (b < e && isspace((unsigned char)*b))
      b++;
    const char *t = e;
    while (t > b && isspace((unsigned char)t[-1]))
      t--;
    items[i] = malloc((size_t)(t - b) + 1);
    if (!items[i]) {
      for (unsigned j = 0; j < i; j++)
        free(items[j]);
      free(items);
      return PERFC_ENOMEM;
    }
    memcpy(items[i], b, (size_t)(t - b));
    items[i][t - b] = '\0';
    p = *e ? e + 1 : e;
  }
  *out = items;
  *count = n;
  return 0;
}

static void free_list(char **items, unsigned n) {
  for (unsigned i = 0; i < n; i++)
    free(items[i]);
  free(items);
}

/* Replaces key `ki`'s raw value; on a bad value restores the old one, so a
 * failed set leaves the configuration as it was. Checks between keys
 * (cross_check) are not run here: the environment sets keys one at a time,
 * and tls.cert_file alone would be refused before tls.key_file arrives. */
static int set_key(perfc_config *cfg, size_t ki, const char *value,
                   const char *origin) {
  const key_def *k = &KEYS[ki];
  char *rawp = (char *)cfg->raw + k->raw_off;
  char *org = xstrdup(origin ? origin : "set");
  if (!org)
    return PERFC_ENOMEM;
  char *old_origin = cfg->origin[ki];
  cfg->origin[ki] = org;
  int rc;
  if (k->k == K_LIST_ADDR || k->k == K_FLOATS || k->k == K_RULES) {
    char **items, **old = *(char ***)rawp;
    unsigned n, *cnt = (unsigned *)((char *)cfg->raw + k->cnt_off);
    unsigned old_n = *cnt;
    if ((rc = split_list(value, &items, &n)) != 0) {
      cfg->origin[ki] = old_origin;
      free(org);
      return rc;
    }
    *(char ***)rawp = items;
    *cnt = n;
    if ((rc = resolve(cfg, ki)) != 0) {
      free_list(items, n);
      *(char ***)rawp = old;
      *cnt = old_n;
      cfg->origin[ki] = old_origin;
      free(org);
      resolve(cfg, ki);
      return rc;
    }
    free_list(old, old_n);
  } else {
    char *copy = xstrdup(value), *old = *(char **)rawp;
    if (!copy) {
      cfg->origin[ki] = old_origin;
      free(org);
      return PERFC_ENOMEM;
    }
    *(char **)rawp = copy;
    if ((rc = resolve(cfg, ki)) != 0) {
      char keep[sizeof last_error];
      memcpy(keep, last_error, sizeof keep);
      *(char **)rawp = old;
      free(copy);
      cfg->origin[ki] = old_origin;
      free(org);
      resolve(cfg, ki);
      memcpy(last_error, keep, sizeof keep);
      return rc;
    }
    free(old);
  }
  free(old_origin);
  return 0;
}

int perfc_config_set(perfc_config *cfg, const char *key, const char *value,
                     const char *origin) {
  clear_error();
  if (!cfg || !key || !value)
    return PERFC_EINVAL;
  const char *dot = strchr(key, '.');
  size_t ki = dot ? find_key(key, (size_t)(dot - key), dot + 1) : NKEYS;
  if (ki == NKEYS)
    return fail("%s: unknown key '%s'", origin ? origin : "set", key);
  return set_key(cfg, ki, value, origin);
}

static void env_name(size_t ki, char *name, size_t size) {
  size_t n = (size_t)snprintf(name, size, "PERFC_%s_%s", KEYS[ki].section,
                              KEYS[ki].name);
  for (size_t j = 0; j < n && j < size; j++)
    name[j] = (char)toupper((unsigned char)name[j]);
}

/* A misspelt variable (PERFC_SERVER_THREAD) would otherwise be ignored
 * without a word, the environment's version of an unknown key. It is only
 * warned about, not refused: the environment is shared with other programs
 * and with modules that may read PERFC_* names of their own. */
static void warn_unknown_env(void) {
  extern char **environ;
  for (char **e = environ; e && *e; e++) {
    const char *eq = strchr(*e, '=');
    size_t len = eq ? (size_t)(eq - *e) : strlen(*e);
    if (len <= 6 || strncmp(*e, "PERFC_", 6) != 0)
      continue;
    int in_section = 0, known = 0;
    for (size_t i = 0; i < NKEYS && !known; i++) {
      char name[96];
      size_t slen = strlen(KEYS[i].section);
      env_name(i, name, sizeof name);
      if (len > 6 + slen + 1 && strncmp(*e, name, 6 + slen + 1) == 0)
        in_section = 1;
      if (strlen(name) == len && strncmp(*e, name, len) == 0)
        known = 1;
    }
    if (in_section && !known)
      perfc_log(PERFC_LOG_WARN,
                "config: environment %.*s is not a configuration key; "
                "ignored (docs/configuration.md lists them)",
                (int)len, *e);
  }
}

static int apply_env(perfc_config *cfg) {
  warn_unknown_env();
  for (size_t i = 0; i < NKEYS; i++) {
    char name[96], origin[128];
    env_name(i, name, sizeof name);
    const char *val = getenv(name);
    if (!val)
      continue;
    snprintf(origin, sizeof origin, "environment %s", name);
    int rc = set_key(cfg, i, val, origin);
    if (rc != 0)
      return rc;
  }
  return 0;
}

static int load(perfc_config **out, const char *buf, size_t len,
                const char *name) {
  cylog lg = {.len = 0};
  cyaml_config_t c;
  perfc_config *cfg = calloc(1, sizeof *cfg);
  int rc = 0;
  if (!cfg || !(cfg->name = xstrdup(name))) {
    free(cfg);
    return PERFC_ENOMEM;
  }
  set_defaults(&cfg->v);
  if (buf && len) {
    if ((rc = locate(cfg, (const unsigned char *)buf, len)) != 0)
      goto fail;
    cyaml_err_t err =
        cyaml_load_data((const uint8_t *)buf, len, cyaml_cfg(&lg, &c),
                        &root_schema, (cyaml_data_t **)&cfg->raw, NULL);
    if (err == CYAML_ERR_OOM) {
      rc = PERFC_ENOMEM;
      goto fail;
    }
    if (err != CYAML_OK) {
      lg.buf[lg.len] = '\0';
      rc = cyaml_message(cfg, &lg, err);
      goto fail;
    }
  }
  /* An empty document loads as NULL: the same as no file. */
  if (!cfg->raw && !(cfg->raw = calloc(1, sizeof *cfg->raw))) {
    rc = PERFC_ENOMEM;
    goto fail;
  }
  for (size_t i = 0; i < NKEYS; i++)
    if ((rc = resolve(cfg, i)) != 0)
      goto fail;
  if ((rc = apply_env(cfg)) != 0 || (rc = cross_check(cfg)) != 0)
    goto fail;
  *out = cfg;
  return 0;
fail:
  perfc_config_free(cfg);
  return rc;
}

int perfc_config_load_string(perfc_config **out, const char *yaml, size_t len,
                             const char *name) {
  clear_error();
  if (!out || (!yaml && len))
    return PERFC_EINVAL;
  *out = NULL;
  return load(out, yaml, len, name ? name : "<string>");
}

int perfc_config_load(perfc_config **out, const char *path) {
  clear_error();
  if (!out)
    return PERFC_EINVAL;
  *out = NULL;
  if (!path)
    return load(out, NULL, 0, "<defaults>");
  FILE *f = fopen(path, "rb");
  if (!f)
    return fail("%s: cannot open: %s", path, strerror(errno));
  char *buf = NULL;
  size_t len = 0, cap = 0;
  for (;;) {
    if (len == cap) {
      cap = cap ? cap * 2 : 4096;
      if (cap > 16u * 1024 * 1024) {
        free(buf);
        fclose(f);
        return fail("%s: larger than 16 MiB, not a configuration file", path);
      }
      char *nb = realloc(buf, cap);
      if (!nb) {
        free(buf);
        fclose(f);
        return PERFC_ENOMEM;
      }
      buf = nb;
    }
    size_t n = fread(buf + len, 1, cap - len, f);
    len += n;
    if (n == 0)
      break;
  }
  int rerr = ferror(f);
  fclose(f);
  if (rerr) {
    free(buf);
    return fail("%s: cannot read", path);
  }
  int rc = load(out, buf, len, path);
  free(buf);
  return rc;
}

/* ---- into the runtime's option structs ---------------------------------- */

static int is_set(const perfc_config *cfg, const char *section,
                  const char *name) {
  size_t ki = find_key(section, strlen(section), name);
  return ki < NKEYS && cfg->set[ki];
}

int perfc_config_apply_server(const perfc_config *cfg, perfc_server_opts *o) {
  if (!cfg || !o)
    return PERFC_EINVAL;
  const values *v = &cfg->v;
#define COPY(name, dst, expr)                                                  \
  if (is_set(cfg, "server", name))                                             \
  o->dst = (expr)
  COPY("threads", threads, v->threads);
  COPY("requests_per_method", requests_per_method, v->requests_per_method);
  COPY("default_executor", default_executor,
       v->default_executor == 0 ? PERFC_EXEC_INLINE : PERFC_EXEC_POOL);
  COPY("pool_threads", pool_threads, v->pool_threads);
  COPY("pool_queue", pool_queue, v->pool_queue);
  COPY("keepalive_time", keepalive_time_ms, v->keepalive_time_ms);
  COPY("keepalive_timeout", keepalive_timeout_ms, v->keepalive_timeout_ms);
  COPY("keepalive_permit_without_calls", keepalive_permit_without_calls,
       v->permit_without_calls);
  COPY("min_ping_interval", min_ping_interval_ms, v->min_ping_interval_ms);
  COPY("max_concurrent_streams", max_concurrent_streams,
       v->max_concurrent_streams);
  COPY("max_recv_message_size", max_recv_message_bytes,
       v->max_recv_message_bytes);
  COPY("max_send_message_size", max_send_message_bytes,
       v->max_send_message_bytes);
  COPY("max_connection_idle", max_connection_idle_ms,
       v->max_connection_idle_ms);
  COPY("max_connection_age", max_connection_age_ms, v->max_connection_age_ms);
  COPY("max_connection_age_grace", max_connection_age_grace_ms,
       v->max_connection_age_grace_ms);
  COPY("poller_wakeup_preemption", poller_wakeup_preemption,
       v->poller_preemption);
  COPY("worker_wakeup_preemption", worker_wakeup_preemption,
       v->worker_preemption);
  COPY("stream_flush_every_send", stream_flush_every_send,
       v->stream_flush_every_send);
  COPY("shutdown_grace", shutdown_grace_ms, v->shutdown_grace_ms);
  COPY("compression", compression, compression_names[v->compression]);
  COPY("tcp_tx_zerocopy", tcp_tx_zerocopy, v->tcp_tx_zerocopy);
  COPY("channelz", channelz, v->channelz);
#undef COPY
  return 0;
}

size_t perfc_config_listen_count(const perfc_config *cfg) {
  if (!cfg)
    return 0;
  return cfg->raw->server.listen ? cfg->raw->server.listen_count : 1;
}

const char *perfc_config_listen_at(const perfc_config *cfg, size_t i) {
  if (!cfg || i >= perfc_config_listen_count(cfg))
    return NULL;
  return cfg->raw->server.listen ? cfg->raw->server.listen[i]
                                 : PERFC_DEFAULT_CONFIG_LISTEN;
}

int perfc_config_tls_enabled(const perfc_config *cfg) {
  return cfg && is_set(cfg, "tls", "cert_file") && cfg->v.cert_file[0];
}

int perfc_config_apply_tls(const perfc_config *cfg, perfc_tls_opts *o) {
  if (!cfg || !o)
    return PERFC_EINVAL;
  if (is_set(cfg, "tls", "cert_file"))
    o->cert_file = cfg->v.cert_file;
  if (is_set(cfg, "tls", "key_file"))
    o->key_file = cfg->v.key_file;
  if (is_set(cfg, "tls", "client_ca_file"))
    o->client_ca_file = cfg->v.client_ca_file;
  if (is_set(cfg, "tls", "client_auth"))
    o->client_auth = (perfc_tls_client_auth)cfg->v.client_auth;
  return 0;
}

int perfc_config_metrics_enabled(const perfc_config *cfg) {
  return cfg && !(is_set(cfg, "metrics", "listen") &&
                  strcmp(cfg->v.metrics_listen, "off") == 0);
}

int perfc_config_apply_metrics_http(const perfc_config *cfg,
                                    perfc_metrics_http_opts *o) {
  if (!cfg || !o)
    return PERFC_EINVAL;
  if (is_set(cfg, "metrics", "listen") &&
      strcmp(cfg->v.metrics_listen, "off") != 0)
    o->addr = cfg->v.metrics_listen;
  return 0;
}

int perfc_config_apply_grpc_metrics(const perfc_config *cfg,
                                    perfc_grpc_metrics_opts *o) {
  if (!cfg || !o)
    return PERFC_EINVAL;
  if (is_set(cfg, "metrics", "handling_time_histogram"))
    o->handling_time_histogram = cfg->v.handling_time_histogram ? 1 : -1;
  if (is_set(cfg, "metrics", "buckets")) {
    o->buckets = cfg->buckets;
    o->bucket_count = cfg->bucket_count;
  }
  return 0;
}

int perfc_config_apply_logging(const perfc_config *cfg) {
  if (!cfg)
    return PERFC_EINVAL;
  if (is_set(cfg, "logging", "level"))
    perfc_log_set_level((perfc_log_level)cfg->v.log_level);
  if (is_set(cfg, "logging", "format"))
    perfc_log_set_format((perfc_log_format)cfg->v.log_format);
  return 0;
}

int perfc_config_access_log(const perfc_config *cfg) {
  return cfg && is_set(cfg, "logging", "access_log") && cfg->v.access_log;
}

const perfc_config_redis *perfc_config_get_redis(const perfc_config *cfg) {
  return cfg ? &cfg->v.redis : NULL;
}

const perfc_config_postgres *
perfc_config_get_postgres(const perfc_config *cfg) {
  return cfg ? &cfg->v.postgres : NULL;
}

const perfc_config_resilience *
perfc_config_get_resilience(const perfc_config *cfg) {
  return cfg ? &cfg->v.resilience : NULL;
}

struct perfc_config_guards {
  perfc_timeouts *timeouts;
  perfc_ratelimit *ratelimit;
  perfc_shedding *shedding;
};

void perfc_config_guards_free(perfc_config_guards *g) {
  if (g == NULL)
    return;
  perfc_shedding_free(g->shedding);
  perfc_ratelimit_free(g->ratelimit);
  perfc_timeouts_free(g->timeouts);
  free(g);
}

int perfc_config_attach_resilience(const perfc_config *cfg, perfc_server *srv,
                                   perfc_config_guards **out) {
  if (cfg == NULL || srv == NULL || out == NULL)
    return PERFC_EINVAL;
  const perfc_config_resilience *r = &cfg->v.resilience;
  perfc_config_guards *g = calloc(1, sizeof *g);
  if (g == NULL)
    return PERFC_ENOMEM;
  /* In the order docs/reliability.md recommends after the metrics
   * interceptor: timeouts (never refuse), rate limits (cheap, deterministic
   * refusals), shedding (last: counts only calls that go on to run).
   * Timeouts always: they also apply the (perfc.method).timeout options. */
  perfc_timeouts_opts to;
  perfc_timeouts_opts_init(&to);
  to.default_timeout_ms = r->default_timeout_ms;
  to.rules = cfg->timeout_rules;
  to.rule_count = cfg->ntimeout_rules;
  int rc = perfc_timeouts_new(&g->timeouts, &to);
  if (rc == 0)
    rc = perfc_timeouts_attach(g->timeouts, srv);
  if (rc == 0 && (r->rate_limit > 0 || cfg->nrate_rules > 0)) {
    /* The global rule first, then the per-method ones: a call must pass
     * every rule that applies to it. */
    size_t n = 0;
    perfc_ratelimit_rule *rules =
        calloc(cfg->nrate_rules + 1, sizeof *rules);
    if (rules == NULL) {
      perfc_config_guards_free(g);
      return PERFC_ENOMEM;
    }
    if (r->rate_limit > 0)
      rules[n++] = (perfc_ratelimit_rule){.method = NULL,
                                          .rate = (double)r->rate_limit,
                                          .burst = (double)r->rate_limit_burst,
                                          .key_metadata = r->rate_limit_key};
    for (size_t i = 0; i < cfg->nrate_rules; i++)
      rules[n++] = cfg->rate_rules[i];
    perfc_ratelimit_opts ro;
    perfc_ratelimit_opts_init(&ro);
    ro.rules = rules;
    ro.rule_count = n;
    rc = perfc_ratelimit_new(&g->ratelimit, &ro); /* copies the rules */
    free(rules);
    if (rc == 0)
      rc = perfc_ratelimit_attach(g->ratelimit, srv);
  }
  if (rc == 0 && r->load_shedding) {
    perfc_shedding_opts so;
    perfc_shedding_opts_init(&so);
    rc = perfc_shedding_new(&g->shedding, &so);
    if (rc == 0)
      rc = perfc_shedding_attach(g->shedding, srv);
  }
  if (rc != 0) {
    perfc_config_guards_free(g);
    return rc;
  }
  *out = g;
  return 0;
}

const perfc_config_cache *perfc_config_get_cache(const perfc_config *cfg) {
  return cfg ? &cfg->v.cache : NULL;
}

/* ---- flags -------------------------------------------------------------- */

/* The flag lines; the first line, naming the program, is added by
 * set_usage(). */
#define USAGE_FLAGS                                                            \
    "[--config FILE] [--listen HOST:PORT]\n"                                   \
    "%*s[--metrics-listen HOST:PORT|off] [--postgres DSN]\n"                   \
    "%*s[--redis HOST:PORT]\n"                                                 \
    "  --config FILE             YAML configuration (docs/configuration.md)\n" \
    "  --listen HOST:PORT        gRPC address (server.listen), e.g. "          \
    "0.0.0.0:50051\n"                                                          \
    "  --metrics-listen ADDR     /metrics address (metrics.listen), or off\n"  \
    "  --postgres DSN            PostgreSQL conninfo (postgres.dsn)\n"         \
    "  --redis HOST:PORT         Redis address (redis.address)\n"              \
    "  -h, --help                this text\n"                                  \
    "Precedence: flags > PERFC_<SECTION>_<KEY> environment > file > "          \
    "defaults.\n"

/* Usage text for the program perfc_flags_parse() last saw on this thread
 * (its argv[0] without the folders), so --help and errors name the binary
 * the user ran; "server" before any parse. Thread-local like last_error. */
static _Thread_local char usage_text[1024];

static void set_usage(const char *argv0) {
  const char *prog = argv0 && argv0[0] ? argv0 : "server";
  const char *slash = strrchr(prog, '/');
  if (slash && slash[1])
    prog = slash + 1;
  /* Long names are cut so the text always fits. */
  int len = (int)strnlen(prog, 64);
  int indent = (int)sizeof "usage: " - 1 + len + 1;
  int n = snprintf(usage_text, sizeof usage_text, "usage: %.*s ", len, prog);
  snprintf(usage_text + n, sizeof usage_text - (size_t)n, USAGE_FLAGS, indent,
           "", indent, "");
}

const char *perfc_flags_usage(void) {
  if (usage_text[0] == '\0')
    set_usage(NULL);
  return usage_text;
}

int perfc_flags_parse(perfc_flags *f, int argc, char *const *argv) {
  static const struct {
    const char *name;
    size_t off;
  } flags[] = {{"config", offsetof(perfc_flags, config_file)},
               {"listen", offsetof(perfc_flags, listen)},
               {"metrics-listen", offsetof(perfc_flags, metrics_listen)},
               {"postgres", offsetof(perfc_flags, postgres)},
               {"redis", offsetof(perfc_flags, redis)}};
  clear_error();
  if (!f || argc < 0 || (argc > 0 && !argv))
    return PERFC_EINVAL;
  set_usage(argc > 0 ? argv[0] : NULL);
  memset(f, 0, sizeof *f);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      f->help = 1;
      continue;
    }
    if (strncmp(a, "--", 2) != 0)
      return fail("unexpected argument '%s'\n%s", a, usage_text);
    const char *name = a + 2, *eq = strchr(name, '=');
    size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
    size_t j;
    for (j = 0; j < sizeof flags / sizeof flags[0]; j++)
      if (strlen(flags[j].name) == nlen && !strncmp(flags[j].name, name, nlen))
        break;
    if (j == sizeof flags / sizeof flags[0])
      return fail("unknown flag '%.*s'\n%s", (int)(nlen + 2), a, usage_text);
    const char *val = eq ? eq + 1 : NULL;
    if (!val) {
      if (i + 1 >= argc)
        return fail("flag --%s needs a value\n%s", flags[j].name, usage_text);
      val = argv[++i];
    }
    *(const char **)((char *)f + flags[j].off) = val;
  }
  return 0;
}

int perfc_config_apply_flags(perfc_config *cfg, const perfc_flags *f) {
  static const struct {
    size_t off;
    const char *key, *origin;
  } map[] = {
      {offsetof(perfc_flags, listen), "server.listen", "flag --listen"},
      {offsetof(perfc_flags, metrics_listen), "metrics.listen",
       "flag --metrics-listen"},
      {offsetof(perfc_flags, postgres), "postgres.dsn", "flag --postgres"},
      {offsetof(perfc_flags, redis), "redis.address", "flag --redis"}};
  clear_error();
  if (!cfg || !f)
    return PERFC_EINVAL;
  for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
    const char *val = *(const char *const *)((const char *)f + map[i].off);
    if (!val)
      continue;
    int rc = perfc_config_set(cfg, map[i].key, val, map[i].origin);
    if (rc != 0)
      return rc;
  }
  return 0;
}
