/*
 * perfc/config.h — a service's configuration: a YAML file, then
 * PERFC_<SECTION>_<KEY> environment variables, then command-line flags, in
 * that order of precedence (later wins), into the runtime's option structs.
 *
 * The file is loaded with libcyaml against a fixed schema, so an unknown
 * key, a list where a value belongs or a YAML syntax error is refused, and
 * every value is then parsed strictly (durations "250ms", "10s", "2m", "1h";
 * sizes "4096", "64KiB", "64MiB"; booleans true/false) and range-checked.
 * Any problem fails with PERFC_ECONFIG and a message that names the source
 * (file:line:column, the environment variable or the flag), the key and the
 * problem; docs/configuration.md ("Configuration file") lists every key,
 * every variable and the message formats.
 *
 * The redis, postgres and cache sections are read and validated now and are
 * consumed by the data-layer modules (Redis pool, PostgreSQL pool,
 * cache-aside) when those land; until then they are plain typed structs here.
 *
 * Room: runtime public headers. A perfc_config is immutable after loading
 * except through perfc_config_set()/perfc_config_apply_flags(); use one from
 * one thread at a time. perfc_config_last_error() is per thread.
 */
#ifndef PERFC_CONFIG_H
#define PERFC_CONFIG_H

#include "perfc/cache.h"
#include "perfc/common.h"
#include "perfc/l1cache.h"
#include "perfc/pg.h"
#include "perfc/redis.h"
#include "perfc/grpc_metrics.h"
#include "perfc/metrics.h"
#include "perfc/metrics_http.h"
#include "perfc/server.h"
#include "perfc/tls.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct perfc_config perfc_config;

/** Address served when neither file, environment nor flag names one: every
 *  IPv4 interface on gRPC's customary port. */
#define PERFC_DEFAULT_CONFIG_LISTEN "0.0.0.0:50051"
/** Redis default: the local server, as redis-cli assumes. */
#define PERFC_DEFAULT_REDIS_ADDRESS "127.0.0.1:6379"
/* Every other data-layer default is the owning module's own constant, so a
 * file that leaves a key out behaves exactly like code that leaves the
 * option zero: redis.h (PERFC_DEFAULT_REDIS_POOL_SIZE,
 * PERFC_DEFAULT_REDIS_CONNECT_TIMEOUT_MS, PERFC_DEFAULT_REDIS_COMMAND_TIMEOUT_MS),
 * pg.h and cache.h/l1cache.h, each with its reason. */
#define PERFC_DEFAULT_POSTGRES_POOL_SIZE PERFC_DEFAULT_PG_MAX_CONNS
#define PERFC_DEFAULT_POSTGRES_CONNECT_TIMEOUT_MS                              \
  (PERFC_DEFAULT_PG_CONNECT_TIMEOUT_S * 1000)
#define PERFC_DEFAULT_POSTGRES_STATEMENT_TIMEOUT_MS                            \
  PERFC_DEFAULT_PG_STATEMENT_TIMEOUT_MS
#define PERFC_DEFAULT_POSTGRES_ACQUIRE_TIMEOUT_MS                              \
  PERFC_DEFAULT_PG_ACQUIRE_TIMEOUT_MS
#define PERFC_DEFAULT_CACHE_L1_MAX_BYTES PERFC_DEFAULT_L1_MAX_BYTES
/** Cache TTL when a method's (perfc.cache) option names none: Redis's. */
#define PERFC_DEFAULT_CACHE_TTL_MS PERFC_DEFAULT_CACHE_L2_TTL_MS
/** TTL jitter in percent: cache.h's fraction. */
#define PERFC_DEFAULT_CACHE_JITTER_PERCENT                                     \
  ((unsigned)(PERFC_DEFAULT_CACHE_TTL_JITTER * 100 + 0.5))
/** cache.jitter_percent's upper bound, the cache's own: loading the file
 *  refuses more, so a value that loads is one perfc_cache_new() takes. */
#define PERFC_CACHE_MAX_JITTER_PERCENT                                         \
  ((unsigned)(PERFC_CACHE_MAX_TTL_JITTER * 100 + 0.5))

/** The `resilience:` section: server-side guards a service turns on from
 *  its file. Besides these scalars it takes two lists of
 *  "/pkg.Svc/Method=VALUE" rules ("/pkg.Svc/" for a whole service):
 *  `method_timeouts` (VALUE a duration, overriding (perfc.method).timeout)
 *  and `method_rate_limits` (VALUE calls per second, one bucket per
 *  method), applied by perfc_config_attach_resilience(). */
typedef struct perfc_config_resilience {
  unsigned rate_limit;        /**< calls/s for all methods; 0 = no limit */
  unsigned rate_limit_burst;  /**< bucket size; 0 = one second's worth */
  const char *rate_limit_key; /**< metadata key giving each value its own
                                   bucket (e.g. "x-api-key"); NULL = one */
  int load_shedding;          /**< adaptive shedding (brpc's auto limiter) */
  int64_t default_timeout_ms; /**< server timeout of methods whose proto
                                   names none; 0 = none */
} perfc_config_resilience;

/** The `redis:` section, read and validated now; consumed by the Redis pool
 *  when it lands. Strings are borrowed from the perfc_config. */
typedef struct perfc_config_redis {
  const char *address;        /**< "HOST:PORT" */
  unsigned pool_size;         /**< connections */
  int64_t connect_timeout_ms; /**< per connection attempt */
  int64_t command_timeout_ms; /**< per command */
} perfc_config_redis;

/** The `postgres:` section, read and validated now; consumed by the
 *  PostgreSQL pool when it lands. Strings are borrowed from the
 *  perfc_config. */
typedef struct perfc_config_postgres {
  const char *dsn;              /**< libpq conninfo or URI; NULL when unset */
  const char *replica_dsn;      /**< read replica; NULL = use `dsn` */
  unsigned pool_size;           /**< connections (per DSN) */
  int64_t connect_timeout_ms;   /**< per connection attempt */
  int64_t statement_timeout_ms; /**< PostgreSQL statement_timeout */
  int64_t acquire_timeout_ms;   /**< waiting for a free pooled connection */
} perfc_config_postgres;

/** The `cache:` section, for the application that builds its perfc_cache
 *  (perfc/cache.h) from it (examples/user-service does). */
typedef struct perfc_config_cache {
  uint64_t l1_max_bytes;   /**< in-process L1 budget; 0 disables L1 */
  int64_t default_ttl_ms;  /**< TTL when a method names none */
  int64_t negative_ttl_ms; /**< TTL of cached "not found" */
  unsigned jitter_percent; /**< 0..PERFC_CACHE_MAX_JITTER_PERCENT (50) */
  /** 0: run without a cache (register with a NULL cache, so every cached
   *  method calls its handler). Default 1. Appended last so the fields
   *  above keep their offsets. */
  int enabled;
  /** perfc_cache_opts.pending_file: where Redis deletes still failing at
   *  shutdown are kept for the next start; NULL or "" = none. Appended
   *  last for the same reason. */
  const char *pending_file;
} perfc_config_cache;

/** Loads `path` (NULL = no file: defaults only), then applies the
 *  PERFC_<SECTION>_<KEY> environment variables. An empty file is the same as
 *  no file. On success `*out` is a new configuration the caller frees with
 *  perfc_config_free(). On failure `*out` is NULL and the message is in
 *  perfc_config_last_error(). Returns 0, PERFC_ECONFIG (unreadable file,
 *  YAML syntax error, unknown key, wrong type, bad value, out of range),
 *  PERFC_EINVAL (`out` NULL) or PERFC_ENOMEM. */
PERFC_API int perfc_config_load(perfc_config **out, const char *path);

/** Like perfc_config_load() with the YAML in memory; `name` (borrowed)
 *  stands for the file name in messages (NULL = "<string>"). `yaml` need not
 *  be NUL-terminated. The environment is applied as well. */
PERFC_API int perfc_config_load_string(perfc_config **out, const char *yaml,
                                       size_t len, const char *name);

/** Sets one key from its string form, as an environment variable would:
 *  `key` is "section.key" ("server.listen", "postgres.dsn"); lists
 *  (server.listen, metrics.buckets) are comma-separated. `origin`
 *  (borrowed; NULL = "set") names the source in error messages, e.g.
 *  "flag --listen". The value is copied and checked at once; checks that
 *  involve two keys (tls.cert_file with tls.key_file, tls.client_auth with
 *  tls.client_ca_file) run only when loading, and perfc_server_listen_tls()
 *  refuses the same mistakes later. Returns 0,
 *  PERFC_ECONFIG (unknown key or bad value; message in
 *  perfc_config_last_error(), configuration unchanged), PERFC_EINVAL or
 *  PERFC_ENOMEM. */
PERFC_API int perfc_config_set(perfc_config *cfg, const char *key,
                               const char *value, const char *origin);

/** Frees the configuration and every string it lent. NULL is a no-op. */
PERFC_API void perfc_config_free(perfc_config *cfg);

/** The message of the last failed perfc_config_* or perfc_flags_* call on
 *  this thread, e.g. "config: svc.yaml:4:12: server.threads: invalid value
 *  'four': expected an unsigned integer". "" after a call that succeeded.
 *  Thread-local and static: borrowed until this thread's next config call;
 *  never NULL. */
PERFC_API const char *perfc_config_last_error(void);

/** Fills the fields of `o` that the configuration sets; the others keep
 *  what `o` held (call perfc_server_opts_init() first). The compression
 *  string is borrowed from `cfg`. Returns 0 or PERFC_EINVAL. */
PERFC_API int perfc_config_apply_server(const perfc_config *cfg,
                                        perfc_server_opts *o);

/** Number of server.listen addresses (at least 1: the default
 *  PERFC_DEFAULT_CONFIG_LISTEN when none is configured). */
PERFC_API size_t perfc_config_listen_count(const perfc_config *cfg);

/** Listen address `i` ("HOST:PORT"), borrowed from `cfg`; NULL when `i` is
 *  out of range. */
PERFC_API const char *perfc_config_listen_at(const perfc_config *cfg, size_t i);

/** Nonzero when tls.cert_file is set: every listen address is then served
 *  with TLS (perfc_server_listen_tls()). */
PERFC_API int perfc_config_tls_enabled(const perfc_config *cfg);

/** Fills `o` from the tls section (paths borrowed from `cfg`); fields the
 *  file leaves out keep what `o` held. Returns 0 or PERFC_EINVAL. */
PERFC_API int perfc_config_apply_tls(const perfc_config *cfg,
                                     perfc_tls_opts *o);

/** Nonzero unless metrics.listen is "off": whether to serve /metrics. */
PERFC_API int perfc_config_metrics_enabled(const perfc_config *cfg);

/** Sets o->addr from metrics.listen (borrowed from `cfg`) when configured.
 *  Returns 0 or PERFC_EINVAL. */
PERFC_API int perfc_config_apply_metrics_http(const perfc_config *cfg,
                                              perfc_metrics_http_opts *o);

/** Sets the handling-time histogram switch and buckets (borrowed from
 *  `cfg`) when configured. Returns 0 or PERFC_EINVAL. */
PERFC_API int perfc_config_apply_grpc_metrics(const perfc_config *cfg,
                                              perfc_grpc_metrics_opts *o);

/** Applies logging.level and logging.format to the process-wide logger
 *  (perfc_log_set_level/format) when configured; otherwise the logger keeps
 *  its own defaults (PERFC_LOG_LEVEL, PERFC_LOG_FORMAT). Returns 0 or
 *  PERFC_EINVAL. */
PERFC_API int perfc_config_apply_logging(const perfc_config *cfg);

/** Nonzero when logging.access_log is true (default false): attach
 *  perfc_access_log at INFO. */
PERFC_API int perfc_config_access_log(const perfc_config *cfg);

/** The `resilience:` section (borrowed; defaults when absent). */
PERFC_API const perfc_config_resilience *
perfc_config_get_resilience(const perfc_config *cfg);

typedef struct perfc_config_guards perfc_config_guards;

/** Creates and attaches the interceptors the `resilience:` section asks for
 *  (before perfc_server_start()): per-method timeouts always (they also
 *  apply (perfc.method).timeout), a token-bucket rate limit when
 *  `rate_limit` > 0, load shedding when `load_shedding` is true. Attach it
 *  after the metrics interceptor so refusals are counted. `*out` owns them;
 *  free it with perfc_config_guards_free() after the server. Returns 0 or
 *  an error of the interceptors' constructors. */
PERFC_API int perfc_config_attach_resilience(const perfc_config *cfg,
                                             perfc_server *srv,
                                             perfc_config_guards **out);
PERFC_API void perfc_config_guards_free(perfc_config_guards *g);

/** The redis, postgres and cache sections, defaults filled in. Borrowed:
 *  valid until perfc_config_free(). NULL only when `cfg` is NULL. */
PERFC_API const perfc_config_redis *
perfc_config_get_redis(const perfc_config *cfg);
PERFC_API const perfc_config_postgres *
perfc_config_get_postgres(const perfc_config *cfg);
PERFC_API const perfc_config_cache *
perfc_config_get_cache(const perfc_config *cfg);

/* ---- command-line flags ------------------------------------------------ */

/** The flags a generated main (and examples/user-service) accepts. Each
 *  string is borrowed from argv; NULL when the flag was not given. */
typedef struct perfc_flags {
  const char *config_file;    /**< --config FILE */
  const char *listen;         /**< --listen HOST:PORT (server.listen) */
  const char *metrics_listen; /**< --metrics-listen HOST:PORT|off */
  const char *postgres;       /**< --postgres DSN (postgres.dsn) */
  const char *redis;          /**< --redis HOST:PORT (redis.address) */
  int help;                   /**< -h or --help was given */
} perfc_flags;

/** Parses argv[1..argc-1] into `f` (zeroed first). Accepts "--flag VALUE"
 *  and "--flag=VALUE". An unknown flag, a positional argument or a missing
 *  value returns PERFC_ECONFIG with a message naming it followed by the
 *  usage text, in perfc_config_last_error(). Returns 0, PERFC_ECONFIG or
 *  PERFC_EINVAL. */
PERFC_API int perfc_flags_parse(perfc_flags *f, int argc, char *const *argv);

/** The usage text, ends in a newline. It names the program of the last
 *  perfc_flags_parse() on this thread (argv[0] without its folders; "server"
 *  before any), as in "usage: user-service [--config FILE] ...".
 *  Thread-local: borrowed until this thread's next perfc_flags_parse(). */
PERFC_API const char *perfc_flags_usage(void);

/** Applies the flags that were given over what the file and the
 *  environment set (flags win), with "flag --NAME" as the origin in
 *  messages. --config is not applied here: pass it to perfc_config_load().
 *  Returns what perfc_config_set() returns. */
PERFC_API int perfc_config_apply_flags(perfc_config *cfg, const perfc_flags *f);

#ifdef __cplusplus
}
#endif
#endif /* PERFC_CONFIG_H */
