/*
 * perfc/config.h — a service's configuration: a YAML file, then
 * PERFC_<SECTION>_<KEY> environment variables, then command-line flags, in
 * that order of precedence (later wins); then applied to the runtime's
 * option structs and objects.
 *
 * Load: the file is loaded with libcyaml against a fixed schema, so an
 * unknown key, a list where a value belongs or a YAML syntax error is
 * refused, and every value is then parsed strictly (durations "250ms",
 * "10s", "2m", "1h"; sizes "4096", "64KiB", "64MiB"; booleans true/false)
 * and range-checked. Any problem fails with PERFC_ECONFIG and a message in
 * perfc_last_error() that names the source (file:line:column, the
 * environment variable or the flag), the key and the problem;
 * docs/configuration.md ("Configuration file") lists every key, every
 * variable and the message formats.
 *
 * Apply: perfc_config_apply_X() fills module X's options (or builds and
 * attaches its objects) from what the configuration sets, leaving every
 * other field as it was. The ones here are in libperfc-config
 * (perfc::config, pkg-config perfc-config); those for Redis, PostgreSQL
 * and the cache are in perfc/config_data.h and live in libperfc-data, so a
 * service without a data layer links neither hiredis nor libpq.
 *
 * Room: runtime public headers. A perfc_config is immutable after loading
 * except through perfc_config_set()/perfc_config_apply_flags(); use one from
 * one thread at a time.
 */
#ifndef PERFC_CONFIG_H
#define PERFC_CONFIG_H

#include "perfc/common.h"

typedef struct perfc_ratelimit_store perfc_ratelimit_store; /* ratelimit.h */

#ifdef __cplusplus
extern "C" {
#endif

typedef struct perfc_config perfc_config;

/* The option structs and objects the apply functions fill; their modules'
 * headers (perfc/server.h, perfc/tls.h, perfc/metrics.h,
 * perfc/grpc_metrics.h) define them. */
typedef struct perfc_server perfc_server;
typedef struct perfc_server_opts perfc_server_opts;
typedef struct perfc_tls_opts perfc_tls_opts;
typedef struct perfc_metrics_http_opts perfc_metrics_http_opts;
typedef struct perfc_grpc_metrics_opts perfc_grpc_metrics_opts;
typedef struct perfc_tracing_opts perfc_tracing_opts;
typedef struct perfc_channel_opts perfc_channel_opts;

/** Address served when neither file, environment nor flag names one: every
 *  IPv4 interface on gRPC's customary port. */
#define PERFC_DEFAULT_CONFIG_LISTEN "0.0.0.0:50051"

/* ---- load ---------------------------------------------------------------- */

/** Loads `path` (NULL = no file: defaults only), then applies the
 *  PERFC_<SECTION>_<KEY> environment variables. An empty file is the same as
 *  no file. On success `*out` is a new configuration the caller frees with
 *  perfc_config_free(). On failure `*out` is NULL and the message is in
 *  perfc_last_error(). Returns 0, PERFC_ECONFIG (unreadable file, YAML
 *  syntax error, unknown key, wrong type, bad value, out of range),
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
 *  refuses the same mistakes later. Returns 0, PERFC_ECONFIG (unknown key
 *  or bad value; message in perfc_last_error(), configuration unchanged),
 *  PERFC_EINVAL or PERFC_ENOMEM. */
PERFC_API int perfc_config_set(perfc_config *cfg, const char *key,
                               const char *value, const char *origin);

/** Nonzero when `key` ("section.key") is set by the file, the environment,
 *  a flag or perfc_config_set(); 0 when it is unset (its option keeps the
 *  module's default), unknown, or `cfg` is NULL. */
PERFC_API int perfc_config_is_set(const perfc_config *cfg, const char *key);

/** Frees the configuration and every string it lent. NULL is a no-op. */
PERFC_API void perfc_config_free(perfc_config *cfg);

/** Kept for existing callers: the same as perfc_last_error() (the one
 *  place every module leaves its failure, perfc/common.h); messages of
 *  this module start with "config: ", e.g. "config: svc.yaml:4:12:
 *  server.threads: invalid value 'four': expected an unsigned integer".
 *  Like perfc_last_error(), a successful call does not clear it. */
static inline const char *perfc_config_last_error(void) {
  return perfc_last_error();
}

/* ---- apply (libperfc-config) ------------------------------------------ */

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

/** Listens on every server.listen address (before perfc_server_start()),
 *  with TLS from the tls section when tls.cert_file is set. `first_port`
 *  (may be NULL) receives the port bound for the first address (useful
 *  with port 0). Stops at the first failure: PERFC_EBIND (the server
 *  logged the address and reason), PERFC_ETLS (the file and problem, in
 *  perfc_last_error() and logged), or another code with "config: cannot
 *  listen on ADDR: ..." in perfc_last_error(). */
PERFC_API int perfc_config_listen(const perfc_config *cfg, perfc_server *srv,
                                  int *first_port);

/** Nonzero unless metrics.listen is "off": whether to serve /metrics. */
PERFC_API int perfc_config_metrics_enabled(const perfc_config *cfg);

/** Sets o->addr from metrics.listen (borrowed from `cfg`), and
 *  max_connections, max_connections_per_ip, header_timeout_ms from
 *  metrics.max_connections, .max_connections_per_ip, .header_timeout, each
 *  when configured. Returns 0 or PERFC_EINVAL. */
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

/** Nonzero unless cache.enabled is false: whether the service builds its
 *  cache (perfc_config_apply_cache(), perfc/config_data.h) or runs
 *  without one. */
PERFC_API int perfc_config_cache_enabled(const perfc_config *cfg);

/** Nonzero when http.enabled is true (default false): the service
 *  serves HTTP/JSON and gRPC-Web on its gRPC port with
 *  perfc_gateway_attach() (perfc/gateway.h; h2 transport only). */
PERFC_API int perfc_config_http_enabled(const perfc_config *cfg);

struct perfc_gateway_opts; /* perfc/gateway.h */

/** Fills the perfc_gateway_opts fields the `http:` section sets (call
 *  perfc_gateway_opts_init() first): max_body_size, idle_timeout,
 *  gzip_level, gzip_min_size, cache; http.gzip false sets gzip_level to
 *  PERFC_HTTP_GZIP_OFF; the CORS keys (cors_allowed_origins, _methods,
 *  _headers, cors_expose_headers, cors_max_age, cors_allow_credentials)
 *  fill the cors_* fields with strings borrowed from `cfg` (valid until
 *  perfc_config_free; perfc_gateway_attach copies them). The others keep
 *  their value. libperfc-config
 *  fills the struct only: it does not link libperfc-gateway. Returns 0 or
 *  PERFC_EINVAL. */
PERFC_API int perfc_config_apply_http(const perfc_config *cfg,
                                      struct perfc_gateway_opts *o);

/** Whether to make a tracer: tracing.enabled when the configuration sets
 *  it; otherwise nonzero when an OpenTelemetry variable asks for tracing
 *  (OTEL_TRACES_SAMPLER, OTEL_EXPORTER_OTLP_ENDPOINT or
 *  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT set), unless OTEL_SDK_DISABLED=true. */
PERFC_API int perfc_config_tracing_enabled(const perfc_config *cfg);

/** Fills the perfc_tracing_opts fields the `tracing:` section sets (strings
 *  borrowed from `cfg`); tracing.sample_percent sets sampler_ratio. Fields
 *  left unset keep their value, so OTEL_* variables still fill them in
 *  perfc_tracing_new(). Returns 0 or PERFC_EINVAL. */
PERFC_API int perfc_config_apply_tracing(const perfc_config *cfg,
                                         perfc_tracing_opts *o);

/** Fills the perfc_channel_opts fields the `client:` section sets:
 *  client.lb_policy ("pick_first" or "round_robin"; the string is
 *  borrowed from `cfg`). For the channels a service makes to its
 *  dependencies (dns:/// targets of headless Services; docs/scaling.md).
 *  Returns 0 or PERFC_EINVAL. */
PERFC_API int perfc_config_apply_channel(const perfc_config *cfg,
                                         perfc_channel_opts *o);

typedef struct perfc_config_guards perfc_config_guards;

/** Creates and attaches the interceptors the `resilience:` section asks for
 *  (before perfc_server_start()): per-method timeouts always (they also
 *  apply (perfc.method).timeout, with resilience.default_timeout and
 *  resilience.method_timeouts), a token-bucket rate limit when
 *  resilience.rate_limit > 0 or method_rate_limits has rules, load
 *  shedding when resilience.load_shedding is true. Attach it after the
 *  metrics interceptor so refusals are counted. `*out` owns them; free it
 *  with perfc_config_guards_free() after the server. Returns 0 or an error
 *  of the interceptors' constructors. */
PERFC_API int perfc_config_apply_resilience(const perfc_config *cfg,
                                            perfc_server *srv,
                                            perfc_config_guards **out);

/** perfc_config_apply_resilience() with a store for shared rate limits
 *  (perfc/ratelimit.h; borrowed, must outlive the guards): when
 *  resilience.rate_limit_shared is true every rate-limit rule is shared
 *  through it (the rate and burst are the total of all replicas), and
 *  each replica alone admits resilience.rate_limit_local_percent of them
 *  while the store fails. The Redis store comes from
 *  perfc_config_ratelimit_redis_new() (perfc/config_data.h, libperfc-data).
 *  `store` may be NULL when the key is false; when it is true and `store`
 *  is NULL this returns PERFC_ECONFIG with a message saying so. */
PERFC_API int perfc_config_apply_resilience_store(
    const perfc_config *cfg, perfc_server *srv,
    const perfc_ratelimit_store *store, perfc_config_guards **out);
PERFC_API void perfc_config_guards_free(perfc_config_guards *g);

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
  const char *transport;      /**< --transport core|h2 (server.transport) */
} perfc_flags;

/** Parses argv[1..argc-1] into `f` (zeroed first). Accepts "--flag VALUE"
 *  and "--flag=VALUE". An unknown flag, a positional argument or a missing
 *  value returns PERFC_ECONFIG with a message naming it followed by the
 *  usage text, in perfc_last_error(). Returns 0, PERFC_ECONFIG or
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
