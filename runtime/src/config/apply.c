/*
 * apply.c — the loaded configuration into the runtime's modules: server
 * and TLS options, listening, /metrics, the gRPC metrics interceptor, the
 * logger, the resilience interceptors.
 *
 * Room: runtime/src/config; with apply_data.c (Redis, PostgreSQL, cache,
 * compiled into libperfc-data) the only place that knows the modules the
 * configuration feeds. Keys that go straight into an option field are
 * copied by their table row (cfg_apply_rows(), keys.c); only the keys that
 * need more than a copy are named here.
 */
#include "config/config_internal.h"

#include "perfc/gateway.h"
#include "perfc/grpc_metrics.h"
#include "perfc/log.h"
#include "perfc/tracing.h"
#include "perfc/metrics.h"
#include "perfc/resilience.h"
#include "perfc/server.h"
#include "perfc/tls.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

int perfc_config_apply_server(const perfc_config *cfg, perfc_server_opts *o) {
  if (!cfg || !o)
    return PERFC_EINVAL;
  cfg_apply_rows(cfg, T_SERVER, o);
  /* In the file a duration of 0 means "never" (docs/configuration.md);
   * the options say "on" with an explicit field. */
  const cfg_value *v;
  if ((v = cfg_get(cfg, "server", "max_connection_idle")) != NULL) {
    o->max_connection_idle_ms = v->i;
    o->max_connection_idle_enabled = v->i > 0;
  }
  if ((v = cfg_get(cfg, "server", "max_connection_age")) != NULL) {
    o->max_connection_age_ms = v->i;
    o->max_connection_age_enabled = v->i > 0;
  }
  return 0;
}

size_t perfc_config_listen_count(const perfc_config *cfg) {
  if (!cfg)
    return 0;
  size_t i = cfg_find(cfg, "server", "listen");
  return cfg->set[i] ? cfg->raw[i].items_count : 1;
}

const char *perfc_config_listen_at(const perfc_config *cfg, size_t i) {
  if (!cfg || i >= perfc_config_listen_count(cfg))
    return NULL;
  size_t k = cfg_find(cfg, "server", "listen");
  return cfg->set[k] ? cfg->raw[k].items[i] : PERFC_DEFAULT_CONFIG_LISTEN;
}

int perfc_config_tls_enabled(const perfc_config *cfg) {
  const cfg_value *v = cfg ? cfg_get(cfg, "tls", "cert_file") : NULL;
  return v != NULL && v->s[0] != '\0';
}

int perfc_config_apply_tls(const perfc_config *cfg, perfc_tls_opts *o) {
  if (!cfg || !o)
    return PERFC_EINVAL;
  cfg_apply_rows(cfg, T_TLS, o);
  return 0;
}

int perfc_config_listen(const perfc_config *cfg, perfc_server *srv,
                        int *first_port) {
  if (!cfg || !srv)
    return perfc_error_set(PERFC_EINVAL, NULL, -1,
                           "config: perfc_config_listen: NULL argument");
  perfc_tls_opts tls;
  perfc_tls_opts_init(&tls);
  perfc_config_apply_tls(cfg, &tls);
  int with_tls = perfc_config_tls_enabled(cfg);
  for (size_t i = 0; i < perfc_config_listen_count(cfg); i++) {
    const char *addr = perfc_config_listen_at(cfg, i);
    int port = 0;
    int rc = with_tls ? perfc_server_listen_tls(srv, addr, &tls, &port)
                      : perfc_server_listen(srv, addr, &port);
    /* A port that cannot be bound was logged by the server with the
     * address and the reason, and a TLS file's problem by the TLS module
     * (also in perfc_last_error()); anything else is said here. */
    if (rc != 0 && rc != PERFC_EBIND && rc != PERFC_ETLS)
      return perfc_error_set(rc, NULL, -1, "config: cannot listen on %s: %s",
                             addr, perfc_strerror(rc));
    if (rc != 0)
      return rc;
    if (i == 0 && first_port)
      *first_port = port;
  }
  return 0;
}

int perfc_config_metrics_enabled(const perfc_config *cfg) {
  const cfg_value *v = cfg ? cfg_get(cfg, "metrics", "listen") : NULL;
  return cfg && !(v != NULL && strcmp(v->s, "off") == 0);
}

int perfc_config_apply_metrics_http(const perfc_config *cfg,
                                    perfc_metrics_http_opts *o) {
  if (!cfg || !o)
    return PERFC_EINVAL;
  cfg_apply_rows(cfg, T_METRICS_HTTP, o);
  return 0;
}

int perfc_config_apply_grpc_metrics(const perfc_config *cfg,
                                    perfc_grpc_metrics_opts *o) {
  if (!cfg || !o)
    return PERFC_EINVAL;
  cfg_apply_rows(cfg, T_GRPC_METRICS, o);
  /* A list: the values live in the configuration, not in a field. */
  if (cfg_get(cfg, "metrics", "buckets")) {
    o->buckets = cfg->buckets;
    o->bucket_count = cfg->bucket_count;
  }
  return 0;
}

int perfc_config_apply_logging(const perfc_config *cfg) {
  if (!cfg)
    return PERFC_EINVAL;
  /* The logger is configured by calls, not by an option struct. The
   * tables' order is the enums' (keys.c's level_names, format_names). */
  const cfg_value *v;
  if ((v = cfg_get(cfg, "logging", "level")) != NULL)
    perfc_log_set_level((perfc_log_level)v->i);
  if ((v = cfg_get(cfg, "logging", "format")) != NULL)
    perfc_log_set_format((perfc_log_format)v->i);
  return 0;
}

int perfc_config_access_log(const perfc_config *cfg) {
  const cfg_value *v = cfg ? cfg_get(cfg, "logging", "access_log") : NULL;
  return v != NULL && v->i;
}

int perfc_config_tracing_enabled(const perfc_config *cfg) {
  const cfg_value *v = cfg ? cfg_get(cfg, "tracing", "enabled") : NULL;
  if (v != NULL)
    return v->i != 0;
  const char *off = getenv("OTEL_SDK_DISABLED");
  if (off != NULL && strcasecmp(off, "true") == 0)
    return 0;
  static const char *const asks[] = {"OTEL_TRACES_SAMPLER",
                                     "OTEL_EXPORTER_OTLP_ENDPOINT",
                                     "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"};
  for (size_t i = 0; i < sizeof asks / sizeof asks[0]; i++) {
    const char *e = getenv(asks[i]);
    if (e != NULL && *e)
      return 1;
  }
  return 0;
}

int perfc_config_apply_tracing(const perfc_config *cfg, perfc_tracing_opts *o) {
  if (!cfg || !o)
    return PERFC_EINVAL;
  cfg_apply_rows(cfg, T_TRACING, o);
  /* A sampler set here reads its ratio from here too (the options'
   * default, 100 %, when sample_percent is unset), not from
   * OTEL_TRACES_SAMPLER_ARG. */
  const cfg_value *v = cfg_get(cfg, "tracing", "sample_percent");
  if (v != NULL)
    o->sampler_ratio = (double)v->u / 100.0;
  return 0;
}

int perfc_config_apply_channel(const perfc_config *cfg, perfc_channel_opts *o) {
  if (!cfg || !o)
    return PERFC_EINVAL;
  cfg_apply_rows(cfg, T_CHANNEL, o);
  return 0;
}

int perfc_config_cache_enabled(const perfc_config *cfg) {
  const cfg_value *v = cfg ? cfg_get(cfg, "cache", "enabled") : NULL;
  return cfg != NULL && (v == NULL || v->i);
}

int perfc_config_http_enabled(const perfc_config *cfg) {
  const cfg_value *v = cfg ? cfg_get(cfg, "http", "enabled") : NULL;
  return v != NULL && v->i;
}

int perfc_config_apply_http(const perfc_config *cfg,
                            struct perfc_gateway_opts *o) {
  if (!cfg || !o)
    return PERFC_EINVAL;
  cfg_apply_rows(cfg, T_GATEWAY, o);
  const cfg_value *v = cfg_get(cfg, "http", "gzip");
  if (v != NULL && v->i == 0)
    o->gzip_level = PERFC_HTTP_GZIP_OFF;
  /* Borrowed from the configuration; perfc_gateway_attach copies them. */
  size_t k = cfg_find(cfg, "http", "cors_allowed_origins");
  if (cfg->set[k]) {
    o->cors_origins = (const char *const *)cfg->raw[k].items;
    o->cors_origin_count = cfg->raw[k].items_count;
  }
  return 0;
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

/* An unsigned or bool key of the resilience section; 0 when unset. */
static int64_t res_int(const perfc_config *cfg, const char *name) {
  const cfg_value *v = cfg_get(cfg, "resilience", name);
  return v ? v->i : 0;
}

int perfc_config_apply_resilience(const perfc_config *cfg, perfc_server *srv,
                                  perfc_config_guards **out) {
  return perfc_config_apply_resilience_store(cfg, srv, NULL, out);
}

/* resilience.rate_limit_shared: every rule's bucket in the store, each
 * replica falling back to rate_limit_local_percent of it alone. */
static void share_rule(perfc_ratelimit_rule *r, int64_t percent) {
  double burst = r->burst > 0 ? r->burst : (r->rate > 1 ? r->rate : 1);
  double f = (double)percent / 100.0;
  r->shared = 1;
  r->local_rate = r->rate * f;
  r->local_burst = burst * f < 1 ? 1 : burst * f;
}

int perfc_config_apply_resilience_store(const perfc_config *cfg,
                                        perfc_server *srv,
                                        const perfc_ratelimit_store *store,
                                        perfc_config_guards **out) {
  if (cfg == NULL || srv == NULL || out == NULL)
    return PERFC_EINVAL;
  int shared = res_int(cfg, "rate_limit_shared") != 0;
  int64_t percent = res_int(cfg, "rate_limit_local_percent");
  if (percent == 0)
    percent = 100;
  if (shared && store == NULL)
    return perfc_error_set(
        PERFC_ECONFIG, NULL, -1,
        "config: resilience.rate_limit_shared is true but no store was "
        "given: create one with perfc_config_ratelimit_redis_new() "
        "(perfc/config_data.h) and pass it to "
        "perfc_config_apply_resilience_store()");
  int64_t rate = res_int(cfg, "rate_limit");
  const cfg_value *key = cfg_get(cfg, "resilience", "rate_limit_key");
  perfc_config_guards *g = calloc(1, sizeof *g);
  if (g == NULL)
    return PERFC_ENOMEM;
  /* In the order docs/reliability.md recommends after the metrics
   * interceptor: timeouts (never refuse), rate limits (cheap, deterministic
   * refusals), shedding (last: counts only calls that go on to run).
   * Timeouts always: they also apply the (perfc.method).timeout options. */
  perfc_timeouts_opts to;
  perfc_timeouts_opts_init(&to);
  to.default_timeout_ms = res_int(cfg, "default_timeout");
  to.default_timeout_enabled = to.default_timeout_ms > 0; /* 0: none */
  to.rules = cfg->timeout_rules;
  to.rule_count = cfg->ntimeout_rules;
  int rc = perfc_timeouts_new(&g->timeouts, &to);
  if (rc == 0)
    rc = perfc_timeouts_attach(g->timeouts, srv);
  if (rc == 0 && (rate > 0 || cfg->nrate_rules > 0)) {
    /* The global rule first, then the per-method ones: a call must pass
     * every rule that applies to it. */
    size_t n = 0;
    perfc_ratelimit_rule *rules = calloc(cfg->nrate_rules + 1, sizeof *rules);
    if (rules == NULL) {
      perfc_config_guards_free(g);
      return PERFC_ENOMEM;
    }
    if (rate > 0)
      rules[n++] = (perfc_ratelimit_rule){
          .method = NULL,
          .rate = (double)rate,
          .burst = (double)res_int(cfg, "rate_limit_burst"),
          .key_metadata = key ? key->s : NULL};
    for (size_t i = 0; i < cfg->nrate_rules; i++)
      rules[n++] = cfg->rate_rules[i];
    for (size_t i = 0; shared && i < n; i++)
      share_rule(&rules[i], percent);
    perfc_ratelimit_opts ro;
    perfc_ratelimit_opts_init(&ro);
    ro.rules = rules;
    ro.rule_count = n;
    ro.store = store;
    rc = perfc_ratelimit_new(&g->ratelimit, &ro); /* copies the rules */
    free(rules);
    if (rc == 0)
      rc = perfc_ratelimit_attach(g->ratelimit, srv);
  }
  if (rc == 0 && res_int(cfg, "load_shedding")) {
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
