/*
 * config/config_internal.h — the loaded configuration as plain data: the
 * key table's row type, the parsed values, and the inline readers that the
 * apply functions use.
 *
 * Room: runtime/src/config. Included by load.c and apply.c (libperfc-config)
 * and by apply_data.c, which is compiled into libperfc-data: a shared
 * library cannot call another unit's hidden perfc__ functions, so
 * everything apply_data.c needs is reachable from the struct itself (the
 * table through cfg->keys) and the readers below are static inline. Nothing
 * here names libcyaml.
 */
#ifndef PERFC_CONFIG_INTERNAL_H
#define PERFC_CONFIG_INTERNAL_H

#include "perfc/config.h"
#include "perfc/resilience.h"

#include <stdint.h>
#include <string.h>

/* How a key's string is parsed, and what its value is. */
typedef enum cfg_kind {
  K_STR,       /* any string (paths, DSNs): s */
  K_ADDR,      /* HOST:PORT: s */
  K_ADDR_OFF,  /* HOST:PORT or "off": s ("off" is never applied) */
  K_LIST_ADDR, /* list of HOST:PORT: the raw items */
  K_LIST_ORIGIN, /* list of CORS origins ("*" or scheme://host[:port]): raw items */
  K_UINT,      /* unsigned in [min, max]: u */
  K_BOOL,      /* true/false: i 0/1, or enum_values[0/1] when given */
  K_DURATION,  /* "250ms", "1m30s": i, milliseconds */
  K_SIZE,      /* "4096", "64MiB": u, bytes */
  K_MSGSIZE,   /* a size up to INT_MAX, or "unlimited": i (-1) */
  K_ENUM,      /* one of names[]: i = enum_values[index] (or the index) */
  K_ENUM_NAME, /* one of names[]: s = the name itself */
  K_FLOATS,    /* list of increasing positive numbers: cfg->buckets */
  K_RULES      /* list of "/pkg.Svc/Method=VALUE": cfg's rule arrays */
} cfg_kind;

/* Which option struct a key's value goes into, when it goes straight into
 * one field: perfc_config_apply_X() copies every row of its target. Keys
 * whose value needs more than a copy (an address split into host and
 * port, a switch that decides whether to build an object at all) are
 * T_NONE and handled by name in their apply function. */
typedef enum cfg_target {
  T_NONE,
  T_SERVER,       /* perfc_server_opts */
  T_TLS,          /* perfc_tls_opts */
  T_METRICS_HTTP, /* perfc_metrics_http_opts */
  T_GRPC_METRICS, /* perfc_grpc_metrics_opts */
  T_REDIS,        /* perfc_redis_opts (apply_data.c) */
  T_PG,           /* perfc_pg_pool_opts (apply_data.c) */
  T_CACHE,        /* perfc_cache_opts (apply_data.c) */
  T_TRACING,      /* perfc_tracing_opts */
  T_GATEWAY,      /* perfc_gateway_opts (header only: no gateway link) */
  T_CHANNEL       /* perfc_channel_opts */
} cfg_target;

/* One configuration key: everything the loader, the environment, the
 * flags and the apply functions need (config/keys.c holds the table). */
typedef struct cfg_key {
  const char *section;
  const char *name;
  cfg_kind kind;
  int64_t min, max;          /* K_UINT, K_DURATION, K_SIZE, K_MSGSIZE */
  const char *const *names;  /* K_ENUM, K_ENUM_NAME: NULL-terminated */
  const int *enum_values;    /* K_ENUM, K_BOOL: stored values; NULL = index */
  cfg_target target;         /* where apply copies the value */
  size_t dst_off;            /* offset of the field in the target struct */
  size_t dst_size;           /* its size in bytes */
} cfg_key;

/* A parsed value; which member holds it follows from the key's kind. */
typedef union cfg_value {
  int64_t i;
  uint64_t u;
  const char *s;
} cfg_value;

/* A key's strings as read (file, environment, flag): one string, or a
 * list. Owned by the configuration. For a K_ADDR key, `host` and `port`
 * are its two parts (an IPv6 host without brackets), for modules that take
 * them apart (Redis). */
typedef struct cfg_raw {
  char *s;
  char **items;
  unsigned items_count;
  char *host;
  int port;
} cfg_raw;

/* Where a key's position was seen in the file (1-based; 0 = unknown). */
typedef struct cfg_loc {
  char *path;
  int key_line, key_col, val_line, val_col;
} cfg_loc;

struct perfc_config {
  const cfg_key *keys; /* the table (config/keys.c) */
  size_t nkeys;
  cfg_raw *raw;          /* [nkeys] */
  cfg_value *val;        /* [nkeys] */
  unsigned char *set;    /* [nkeys]: the key was given somewhere */
  char **origin;         /* [nkeys]: NULL = the file; else "environment X" */
  char *name;            /* file name for messages */
  cfg_loc *locs;         /* positions, from the libyaml pass */
  size_t nlocs;
  double *buckets;       /* metrics.buckets */
  size_t bucket_count;
  perfc_timeouts_rule *timeout_rules; /* resilience.method_timeouts */
  size_t ntimeout_rules;
  perfc_ratelimit_rule *rate_rules; /* resilience.method_rate_limits */
  size_t nrate_rules;
};

/* The table, in keys.c (libperfc-config only; the data unit reaches it
 * through cfg->keys). */
extern const cfg_key perfc__config_keys[];
extern const size_t perfc__config_nkeys;

/* Index of "section"."name" in the table, or cfg->nkeys. */
static inline size_t cfg_find(const perfc_config *cfg, const char *section,
                              const char *name) {
  for (size_t i = 0; i < cfg->nkeys; i++)
    if (strcmp(cfg->keys[i].section, section) == 0 &&
        strcmp(cfg->keys[i].name, name) == 0)
      return i;
  return cfg->nkeys;
}

/* The value of a key the configuration sets, or NULL when it is unset
 * (the option it feeds then keeps its own default). */
static inline const cfg_value *cfg_get(const perfc_config *cfg,
                                       const char *section, const char *name) {
  size_t i = cfg_find(cfg, section, name);
  return i < cfg->nkeys && cfg->set[i] ? &cfg->val[i] : NULL;
}

/* Copies every set key whose row targets `t` into `opts` (the target's
 * option struct): strings as borrowed pointers, numbers into a field of
 * the row's size (the key's range keeps the value in the field's range). */
static inline void cfg_apply_rows(const perfc_config *cfg, cfg_target t,
                                  void *opts) {
  for (size_t i = 0; i < cfg->nkeys; i++) {
    const cfg_key *k = &cfg->keys[i];
    if (k->target != t || !cfg->set[i])
      continue;
    char *dst = (char *)opts + k->dst_off;
    const cfg_value *v = &cfg->val[i];
    if (k->kind == K_STR || k->kind == K_ADDR || k->kind == K_ADDR_OFF ||
        k->kind == K_ENUM_NAME) {
      if (k->kind == K_ADDR_OFF && strcmp(v->s, "off") == 0)
        continue;
      memcpy(dst, &v->s, sizeof v->s);
      continue;
    }
    int64_t n = v->i; /* u and i share their bits; ranges are below 2^63 */
    switch (k->dst_size) {
    case 1: {
      int8_t x = (int8_t)n;
      memcpy(dst, &x, 1);
      break;
    }
    case 2: {
      int16_t x = (int16_t)n;
      memcpy(dst, &x, 2);
      break;
    }
    case 4: {
      int32_t x = (int32_t)n;
      memcpy(dst, &x, 4);
      break;
    }
    default:
      memcpy(dst, &n, 8);
      break;
    }
  }
}

#endif /* PERFC_CONFIG_INTERNAL_H */
