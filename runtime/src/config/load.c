/*
 * load.c — the configuration loader: YAML file (libcyaml), environment
 * overrides, command-line flags, into the parsed values of a perfc_config.
 * It knows no module: what each key is, how it parses and which option
 * field it fills are rows of the key table (keys.c); turning the values
 * into the modules' options is apply.c's and apply_data.c's.
 *
 * Room: runtime/src/config. Owns the loaded configuration until
 * perfc_config_free(). Calls nothing in the rest of the runtime except the
 * logger (a misspelt environment variable is a WARN) and perfc_error_set().
 *
 * How it is put together, and why:
 * - libcyaml loads the file against a schema built once from the key
 *   table, in which every leaf is a string. The schema gives the structure
 *   checks for free (unknown keys, a list or mapping where a value belongs,
 *   YAML syntax), while every value, wherever it came from (file,
 *   environment, flag), goes through one strict parser per kind below.
 *   libcyaml's own scalar parsing would accept "maybe" as false for a bool
 *   and could not share code with the environment path.
 * - libcyaml reports errors only as log lines with a backtrace; log_fn
 *   collects them and cyaml_message() turns them into one message with the
 *   key path and position.
 * - A value that parses as YAML but not as, say, a duration is found after
 *   libcyaml returned, when the position is gone. A second pass over the
 *   same bytes with libyaml's event parser (locate()) records the line and
 *   column of every key and value by path ("server.listen[1]"), so those
 *   messages carry positions too. It runs first, which also reports YAML
 *   syntax errors with libyaml's own position.
 * - Errors go where every perfc module leaves them: perfc_last_error()
 *   (perfc_error_set() with PERFC_ECONFIG), each message starting
 *   "config: ".
 */
#include "config/config_internal.h"
#include "core/str_internal.h"
#include "perfc/log.h"
#include "core/duration_internal.h"

#include <ctype.h>
#include <cyaml/cyaml.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define KEYS perfc__config_keys
#define NKEYS perfc__config_nkeys
#define MS_MAX ((int64_t)INT_MAX) /* grpc channel args are ints */
#define HOUR_MS (3600 * (int64_t)1000)
#define DAY_MS (24 * HOUR_MS)

/* ---- the schema libcyaml loads against, built from the key table -------- */

/* Sections, in table order; more than the table has today, so a new
 * section is a row too. */
#define MAX_SECTIONS 32

/* The root: one pointer per section, each to an array of NKEYS cfg_raw of
 * which only that section's rows are filled. */
typedef struct raw_root {
  cfg_raw *sec[MAX_SECTIONS];
} raw_root;

static const cyaml_schema_value_t string_entry = {
    CYAML_VALUE_STRING(CYAML_FLAG_POINTER, char, 0, CYAML_UNLIMITED)};
static const cyaml_schema_field_t str_field = CYAML_FIELD_STRING_PTR(
    "", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, cfg_raw, s, 0,
    CYAML_UNLIMITED);
static const cyaml_schema_field_t list_field =
    CYAML_FIELD_SEQUENCE("", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, cfg_raw,
                         items, &string_entry, 0, CYAML_UNLIMITED);

static struct {
  pthread_once_t once;
  int ok;
  size_t nsections;
  const char *section[MAX_SECTIONS];
  cyaml_schema_field_t root_fields[MAX_SECTIONS + 1];
  cyaml_schema_field_t *key_fields; /* NKEYS + nsections (terminators) */
  cyaml_schema_value_t root;
} schema = {.once = PTHREAD_ONCE_INIT};

static int is_list(cfg_kind k) {
  return k == K_LIST_ADDR || k == K_LIST_ORIGIN || k == K_FLOATS ||
         k == K_RULES;
}

/* Section index of table row `ki`. */
static size_t section_of(size_t ki) {
  for (size_t j = 0; j < schema.nsections; j++)
    if (strcmp(schema.section[j], KEYS[ki].section) == 0)
      return j;
  return MAX_SECTIONS;
}

static void build_schema(void) {
  schema.key_fields = calloc(NKEYS + MAX_SECTIONS, sizeof *schema.key_fields);
  if (!schema.key_fields)
    return;
  size_t f = 0;
  for (size_t i = 0; i < NKEYS;) {
    size_t j = schema.nsections;
    /* A section's rows must be one run, or its schema would miss some. */
    for (size_t s = 0; s < j; s++)
      if (strcmp(schema.section[s], KEYS[i].section) == 0)
        return;
    if (j == MAX_SECTIONS)
      return;
    schema.section[j] = KEYS[i].section;
    schema.nsections++;
    cyaml_schema_field_t *first = &schema.key_fields[f];
    for (; i < NKEYS && strcmp(KEYS[i].section, schema.section[j]) == 0; i++) {
      cyaml_schema_field_t *kf = &schema.key_fields[f++];
      *kf = is_list(KEYS[i].kind) ? list_field : str_field;
      kf->key = KEYS[i].name;
      kf->data_offset += (uint32_t)(i * sizeof(cfg_raw));
      if (is_list(KEYS[i].kind))
        kf->count_offset += (uint32_t)(i * sizeof(cfg_raw));
    }
    f++; /* the zeroed terminator */
    cyaml_schema_field_t *rf = &schema.root_fields[j];
    rf->key = schema.section[j];
    rf->data_offset = (uint32_t)(j * sizeof(cfg_raw *));
    rf->value.type = CYAML_MAPPING;
    rf->value.flags = CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL;
    rf->value.data_size = (uint32_t)(NKEYS * sizeof(cfg_raw));
    rf->value.mapping.fields = first;
  }
  schema.root.type = CYAML_MAPPING;
  schema.root.flags = CYAML_FLAG_POINTER;
  schema.root.data_size = sizeof(raw_root);
  schema.root.mapping.fields = schema.root_fields;
  schema.ok = 1;
}

static int schema_ready(void) {
  pthread_once(&schema.once, build_schema);
  return schema.ok;
}

/* ---- messages ----------------------------------------------------------- */

/* Records "config: <message>" as the thread's last error (perfc/common.h)
 * and returns PERFC_ECONFIG, so each check is one return line. */
static int fail(const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

static int fail(const char *fmt, ...) {
  char msg[PERFC_ERROR_MESSAGE_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return perfc_error_set(PERFC_ECONFIG, NULL, -1, "config: %s", msg);
}

static const cfg_loc *find_loc(const perfc_config *cfg, const char *path) {
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
  const cfg_loc *l = find_loc(cfg, path);
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

/* Sets raw->host and raw->port from a checked HOST:PORT in raw->s. */
static int split_addr(cfg_raw *raw) {
  const char *colon = strrchr(raw->s, ':');
  const char *h = raw->s;
  size_t hl = (size_t)(colon - raw->s);
  if (h[0] == '[') { /* check_addr() made sure "]" ends the host */
    h++;
    hl -= 2;
  }
  char *host = malloc(hl + 1);
  if (!host)
    return PERFC_ENOMEM;
  memcpy(host, h, hl);
  host[hl] = '\0';
  free(raw->host);
  raw->host = host;
  raw->port = atoi(colon + 1);
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
static void free_timeout_rules(perfc_timeouts_rule *r, size_t n) {
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
  const cfg_key *k = &KEYS[ki];
  int rates = k->max == 1; /* keys.c: 1 = rate limits, 0 = timeouts */
  char ipath[160], at[512];
  perfc_timeouts_rule *tr = rates ? NULL : calloc(count, sizeof *tr);
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
    uint64_t rate = 0, burst = 0;
    const char *end = NULL;
    if (!bad)
      bad = rates ? parse_u64(eq + 1, &end, &rate) != 0 || rate == 0 ||
                        rate > 10000000
                  : perfc__duration_parse_ms(eq + 1, &ms) != 0 || ms > DAY_MS;
    /* A rate may carry its burst: "=100:20". */
    if (!bad && rates && *end == ':')
      bad = parse_u64(end + 1, &end, &burst) != 0 || burst == 0 ||
            burst > 10000000;
    if (!bad && rates && *end != '\0')
      bad = 1;
    char *method = bad ? NULL : strndup(items[i], (size_t)(eq - items[i]));
    if (bad || method == NULL) {
      free_timeout_rules(tr, i);
      free_rate_rules(rr, i);
      if (!bad)
        return PERFC_ENOMEM;
      return fail("%s: %s: invalid value '%s': expected /pkg.Svc/Method=%s", at,
                  ipath, items[i],
                  rates ? "CALLS_PER_SECOND or CALLS_PER_SECOND:BURST (1 to "
                          "10000000 each)"
                        : "DURATION");
    }
    if (rates)
      rr[i] = (perfc_ratelimit_rule){
          .method = method, .rate = (double)rate, .burst = (double)burst};
    else
      tr[i] = (perfc_timeouts_rule){
          .method = method, .timeout_ms = ms, .no_timeout = ms == 0};
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

/* Parses key `ki`'s raw string(s) into cfg->val[ki]; on error returns
 * PERFC_ECONFIG with the message set. Lists are checked element by
 * element, each with its own position. */
static int resolve(perfc_config *cfg, size_t ki) {
  const cfg_key *k = &KEYS[ki];
  char path[128], at[512], range[256];
  cfg_raw *raw = &cfg->raw[ki];
  cfg_value *dst = &cfg->val[ki];
  snprintf(path, sizeof path, "%s.%s", k->section, k->name);

  if (is_list(k->kind)) {
    char **items = raw->items;
    unsigned count = raw->items_count;
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
    if (k->kind == K_LIST_ADDR) {
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
    if (k->kind == K_LIST_ORIGIN) {
      /* As a browser sends Origin (RFC 6454): "*", or scheme "://" host
       * with an optional port, no path, no blanks. A typo here would
       * silently refuse every preflight from that page. */
      for (unsigned i = 0; i < count; i++) {
        const char *o = items[i], *sep = strstr(o, "://");
        int bad = sep == NULL || sep == o || sep[3] == '\0' ||
                  strchr(sep + 3, '/') != NULL;
        for (const char *c = o; *c && !bad; c++)
          bad = *c <= ' ' || *c == 0x7f || *c == ',';
        if (strcmp(o, "*") == 0)
          bad = 0;
        if (bad) {
          snprintf(ipath, sizeof ipath, "%s[%u]", path, i);
          where(cfg, ki, ipath, at, sizeof at);
          return fail("%s: %s: invalid value '%s': expected \"*\" or an "
                      "origin as browsers send it (https://app.example or "
                      "http://localhost:8080, no path)",
                      at, ipath, o);
        }
      }
      cfg->set[ki] = 1;
      return 0;
    }
    if (k->kind == K_RULES)
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

  const char *s = raw->s;
  if (!s) {
    cfg->set[ki] = 0;
    return 0;
  }
  where(cfg, ki, path, at, sizeof at);
  switch (k->kind) {
  case K_STR:
    dst->s = s;
    break;
  case K_ADDR:
  case K_ADDR_OFF:
    if (!(k->kind == K_ADDR_OFF && strcmp(s, "off") == 0) && check_addr(s) != 0)
      return fail("%s: %s: invalid value '%s': expected HOST:PORT%s", at, path,
                  s, k->kind == K_ADDR_OFF ? " or off" : "");
    if (k->kind == K_ADDR && split_addr(raw) != 0)
      return PERFC_ENOMEM;
    dst->s = s;
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
    dst->u = n;
    break;
  }
  case K_BOOL: {
    int b;
    if (parse_bool(s, &b) != 0)
      return fail("%s: %s: invalid value '%s': expected true or false", at,
                  path, s);
    dst->i = k->enum_values ? k->enum_values[b] : b;
    break;
  }
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
    dst->i = ms;
    break;
  }
  case K_SIZE:
  case K_MSGSIZE: {
    uint64_t n;
    if (k->kind == K_MSGSIZE && strcmp(s, "unlimited") == 0) {
      dst->i = -1;
      break;
    }
    if (parse_size(s, &n) != 0)
      return fail("%s: %s: invalid size '%s': expected bytes with an optional "
                  "unit B, KiB, MiB, GiB, KB, MB, GB%s",
                  at, path, s, k->kind == K_MSGSIZE ? ", or unlimited" : "");
    if ((int64_t)n < k->min || n > (uint64_t)k->max) {
      snprintf(range, sizeof range, "between %lld and %lld bytes",
               (long long)k->min, (long long)k->max);
      return fail("%s: %s: %s is out of range: must be %s", at, path, s, range);
    }
    dst->u = n;
    break;
  }
  case K_ENUM:
  case K_ENUM_NAME: {
    int i = enum_index(k->names, s);
    if (i < 0) {
      join_names(k->names, range, sizeof range);
      return fail("%s: %s: invalid value '%s': expected one of %s", at, path, s,
                  range);
    }
    if (k->kind == K_ENUM_NAME)
      dst->s = k->names[i];
    else
      dst->i = k->enum_values ? k->enum_values[i] : i;
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
  char at[512];
  size_t cert = find_key("tls", 3, "cert_file");
  size_t key = find_key("tls", 3, "key_file");
  size_t ca = find_key("tls", 3, "client_ca_file");
  size_t auth = find_key("tls", 3, "client_auth");
  int has_cert = cfg->set[cert] && cfg->val[cert].s[0];
  int has_key = cfg->set[key] && cfg->val[key].s[0];
  if (has_cert != has_key) {
    size_t ki = has_cert ? cert : key;
    where(cfg, ki, has_cert ? "tls.cert_file" : "tls.key_file", at, sizeof at);
    return fail("%s: %s: tls.cert_file and tls.key_file must be set together",
                at, has_cert ? "tls.cert_file" : "tls.key_file");
  }
  /* The raw string names the mode as the user wrote it. */
  int needs_client_ca = cfg->set[auth] && strcmp(cfg->raw[auth].s, "none");
  if (needs_client_ca && !(cfg->set[ca] && cfg->val[ca].s[0])) {
    where(cfg, auth, "tls.client_auth", at, sizeof at);
    return fail("%s: tls.client_auth: %s needs tls.client_ca_file", at,
                cfg->raw[auth].s);
  }
  if (needs_client_ca && !has_cert) {
    where(cfg, auth, "tls.client_auth", at, sizeof at);
    return fail("%s: tls.client_auth: %s needs tls.cert_file and "
                "tls.key_file",
                at, cfg->raw[auth].s);
  }
  return 0;
}

/* ---- positions: a libyaml event pass ------------------------------------ */

typedef struct locator {
  yaml_parser_t parser;
  cfg_loc *locs;
  size_t n, cap;
  int nomem;
  /* A problem libyaml accepts but a configuration must not have
   * (duplicate key, second document): the message, without prefix. */
  char problem[400];
} locator;

static cfg_loc *add_loc(locator *lc, const char *path) {
  if (lc->n == lc->cap) {
    size_t cap = lc->cap ? lc->cap * 2 : 32;
    cfg_loc *l = realloc(lc->locs, cap * sizeof *l);
    if (!l) {
      lc->nomem = 1;
      return NULL;
    }
    lc->locs = l;
    lc->cap = cap;
  }
  cfg_loc *l = &lc->locs[lc->n];
  memset(l, 0, sizeof *l);
  if (!(l->path = perfc__strdup(path))) {
    lc->nomem = 1;
    return NULL;
  }
  lc->n++;
  return l;
}

/* Walks one node whose first event is `ev` (consumed by the caller's
 * buffer), recording its position under `path`. Returns 0, or -1 on a
 * syntax error (parser.error set) or out of memory. */
static int walk(locator *lc, yaml_event_t *ev, const char *path, cfg_loc *self) {
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
      cfg_loc *l = add_loc(lc, sub);
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
      cfg_loc *l = add_loc(lc, sub);
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
    const cfg_loc *l = find_loc(cfg, full);
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
    const cfg_loc *l = find_loc(cfg, path);
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

static const cyaml_config_t *cyaml_cfg(cylog *lg, cyaml_config_t *c) {
  memset(c, 0, sizeof *c);
  c->log_fn = cyaml_log_capture;
  c->log_ctx = lg;
  c->log_level = CYAML_LOG_ERROR;
  c->mem_fn = cyaml_mem;
  c->flags = CYAML_CFG_DEFAULT;
  return c;
}

static void free_list(char **items, unsigned n) {
  for (unsigned i = 0; i < n; i++)
    free(items[i]);
  free(items);
}

void perfc_config_free(perfc_config *cfg) {
  if (!cfg)
    return;
  for (size_t i = 0; cfg->raw && i < cfg->nkeys; i++) {
    free(cfg->raw[i].s);
    free(cfg->raw[i].host);
    free_list(cfg->raw[i].items, cfg->raw[i].items_count);
  }
  for (size_t i = 0; cfg->origin && i < cfg->nkeys; i++)
    free(cfg->origin[i]);
  for (size_t i = 0; i < cfg->nlocs; i++)
    free(cfg->locs[i].path);
  free(cfg->locs);
  free(cfg->raw);
  free(cfg->val);
  free(cfg->set);
  free(cfg->origin);
  free(cfg->buckets);
  free_timeout_rules(cfg->timeout_rules, cfg->ntimeout_rules);
  free_rate_rules(cfg->rate_rules, cfg->nrate_rules);
  free(cfg->name);
  free(cfg);
}

/* Splits a comma-separated list into a malloc'd array of malloc'd strings,
 * trimming blanks. */
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
      free_list(items, i);
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

/* Replaces key `ki`'s raw value; on a bad value restores the old one (and
 * keeps the message about the bad one), so a failed set leaves the
 * configuration as it was. Checks between keys (cross_check) are not run
 * here: the environment sets keys one at a time, and tls.cert_file alone
 * would be refused before tls.key_file arrives. */
static int set_key(perfc_config *cfg, size_t ki, const char *value,
                   const char *origin) {
  cfg_raw *raw = &cfg->raw[ki];
  cfg_raw old = *raw;
  cfg_raw neu = {0};
  char *org = perfc__strdup(origin ? origin : "set");
  char *old_origin = cfg->origin[ki];
  int rc = 0;
  if (!org)
    return PERFC_ENOMEM;
  if (is_list(KEYS[ki].kind))
    rc = split_list(value, &neu.items, &neu.items_count);
  else if (!(neu.s = perfc__strdup(value)))
    rc = PERFC_ENOMEM;
  if (rc != 0) {
    free(org);
    return rc;
  }
  *raw = neu;
  cfg->origin[ki] = org;
  if ((rc = resolve(cfg, ki)) != 0) {
    perfc_error_detail d = perfc_last_error_detail();
    char keep[PERFC_ERROR_MESSAGE_MAX];
    snprintf(keep, sizeof keep, "%s", d.message);
    neu = *raw; /* with whatever resolve() attached to it */
    *raw = old;
    cfg->origin[ki] = old_origin;
    resolve(cfg, ki); /* the old value parsed before, so it does again */
    free(neu.s);
    free(neu.host);
    free_list(neu.items, neu.items_count);
    free(org);
    perfc_error_set(d.code, NULL, -1, "%s", keep);
    return rc;
  }
  free(old.s);
  free(old.host);
  free_list(old.items, old.items_count);
  free(old_origin);
  return 0;
}

int perfc_config_set(perfc_config *cfg, const char *key, const char *value,
                     const char *origin) {
  if (!cfg || !key || !value)
    return perfc_error_set(PERFC_EINVAL, NULL, -1,
                           "config: perfc_config_set: NULL argument");
  const char *dot = strchr(key, '.');
  size_t ki = dot ? find_key(key, (size_t)(dot - key), dot + 1) : NKEYS;
  if (ki == NKEYS)
    return fail("%s: unknown key '%s'", origin ? origin : "set", key);
  return set_key(cfg, ki, value, origin);
}

int perfc_config_is_set(const perfc_config *cfg, const char *key) {
  const char *dot = key ? strchr(key, '.') : NULL;
  size_t ki = dot ? find_key(key, (size_t)(dot - key), dot + 1) : NKEYS;
  return cfg && ki < NKEYS && cfg->set[ki];
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

/* Moves the strings libcyaml loaded into cfg->raw (flat, one slot per
 * key), so the environment and flags replace them the same way whether a
 * section was in the file or not; then frees libcyaml's tree. */
static void take_raw(perfc_config *cfg, raw_root *root) {
  for (size_t i = 0; i < NKEYS; i++) {
    size_t j = section_of(i);
    if (j == MAX_SECTIONS || root->sec[j] == NULL)
      continue;
    cfg->raw[i] = root->sec[j][i];
    memset(&root->sec[j][i], 0, sizeof(cfg_raw));
  }
}

static int load(perfc_config **out, const char *buf, size_t len,
                const char *name) {
  cylog lg = {.len = 0};
  cyaml_config_t c;
  int rc = 0;
  if (!schema_ready())
    return PERFC_ENOMEM;
  perfc_config *cfg = calloc(1, sizeof *cfg);
  if (!cfg)
    return PERFC_ENOMEM;
  cfg->keys = KEYS;
  cfg->nkeys = NKEYS;
  cfg->raw = calloc(NKEYS, sizeof *cfg->raw);
  cfg->val = calloc(NKEYS, sizeof *cfg->val);
  cfg->set = calloc(NKEYS, sizeof *cfg->set);
  cfg->origin = calloc(NKEYS, sizeof *cfg->origin);
  cfg->name = perfc__strdup(name);
  if (!cfg->raw || !cfg->val || !cfg->set || !cfg->origin || !cfg->name) {
    rc = PERFC_ENOMEM;
    goto fail;
  }
  if (buf && len) {
    raw_root *root = NULL;
    if ((rc = locate(cfg, (const unsigned char *)buf, len)) != 0)
      goto fail;
    cyaml_err_t err = cyaml_load_data((const uint8_t *)buf, len,
                                      cyaml_cfg(&lg, &c), &schema.root,
                                      (cyaml_data_t **)&root, NULL);
    if (err == CYAML_ERR_OOM) {
      rc = PERFC_ENOMEM;
      goto fail;
    }
    if (err != CYAML_OK) {
      lg.buf[lg.len] = '\0';
      rc = cyaml_message(cfg, &lg, err);
      goto fail;
    }
    /* An empty document loads as NULL: the same as no file. */
    if (root) {
      take_raw(cfg, root);
      cyaml_free(cyaml_cfg(&lg, &c), &schema.root, root, 0);
    }
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
  if (!out || (!yaml && len))
    return perfc_error_set(PERFC_EINVAL, NULL, -1,
                           "config: perfc_config_load_string: NULL argument");
  *out = NULL;
  return load(out, yaml, len, name ? name : "<string>");
}

int perfc_config_load(perfc_config **out, const char *path) {
  if (!out)
    return perfc_error_set(PERFC_EINVAL, NULL, -1,
                           "config: perfc_config_load: NULL argument");
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

/* ---- flags -------------------------------------------------------------- */

/* The flag lines; the first line, naming the program, is added by
 * set_usage(). */
#define USAGE_FLAGS                                                            \
    "[--config FILE] [--listen HOST:PORT]\n"                                   \
    "%*s[--metrics-listen HOST:PORT|off] [--postgres DSN]\n"                   \
    "%*s[--redis HOST:PORT] [--transport core|h2]\n"                            \
    "  --config FILE             YAML configuration (docs/configuration.md)\n" \
    "  --listen HOST:PORT        gRPC address (server.listen), e.g. "          \
    "0.0.0.0:50051\n"                                                          \
    "  --metrics-listen ADDR     /metrics address (metrics.listen), or off\n"  \
    "  --postgres DSN            PostgreSQL conninfo (postgres.dsn)\n"         \
    "  --redis HOST:PORT         Redis address (redis.address)\n"              \
    "  --transport core|h2       server transport (server.transport)\n"       \
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
               {"redis", offsetof(perfc_flags, redis)},
               {"transport", offsetof(perfc_flags, transport)}};
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
      {offsetof(perfc_flags, redis), "redis.address", "flag --redis"},
      {offsetof(perfc_flags, transport), "server.transport",
       "flag --transport"}};
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

