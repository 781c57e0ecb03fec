/*
 * log.c — the runtime's logger: level filter, logfmt or JSON lines, and a
 * replaceable sink.
 *
 * Room: runtime/src/core. Every other module logs through perfc_log() or
 * perfc_log_fields(); nothing in the library writes to stdout/stderr
 * directly. Not on any hot path: the level check is one relaxed atomic load;
 * a record takes a mutex only to read the sink, and is written with one
 * call so lines from different threads never interleave. Every record is
 * bounded (message, values, line), and call sites a client can trigger at
 * will log through the per-site rate limit below (perfc_log_ratelimited),
 * so no client can make the log grow faster than a few lines a second per
 * site or make one line long.
 */
#include "perfc/log.h"
#include "perfc/trace_context.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

static atomic_int g_level = -1;  /* -1: not yet read from the environment */
static atomic_int g_format = -1; /* likewise */
static pthread_mutex_t g_sink_mu = PTHREAD_MUTEX_INITIALIZER;
static perfc_log_sink g_sink;
static void *g_sink_data;

static const char *const level_names[] = {"debug", "info", "warn", "error",
                                          "off"};

int perfc_log_level_parse(const char *s) {
  if (s == NULL)
    return -1;
  for (int i = 0; i <= PERFC_LOG_OFF; i++)
    if (strcasecmp(s, level_names[i]) == 0)
      return i;
  if (strcasecmp(s, "warning") == 0)
    return PERFC_LOG_WARN;
  return -1;
}

int perfc_log_format_parse(const char *s) {
  if (s == NULL)
    return -1;
  if (strcasecmp(s, "logfmt") == 0 || strcasecmp(s, "text") == 0)
    return PERFC_LOG_LOGFMT;
  if (strcasecmp(s, "json") == 0)
    return PERFC_LOG_JSON;
  return -1;
}

perfc_log_level perfc_log_get_level(void) {
  int l = atomic_load_explicit(&g_level, memory_order_relaxed);
  if (l < 0) {
    l = perfc_log_level_parse(getenv("PERFC_LOG_LEVEL"));
    if (l < 0)
      l = PERFC_LOG_INFO;
    atomic_store_explicit(&g_level, l, memory_order_relaxed);
  }
  return (perfc_log_level)l;
}

void perfc_log_set_level(perfc_log_level level) {
  atomic_store_explicit(&g_level, (int)level, memory_order_relaxed);
}

perfc_log_format perfc_log_get_format(void) {
  int f = atomic_load_explicit(&g_format, memory_order_relaxed);
  if (f < 0) {
    f = perfc_log_format_parse(getenv("PERFC_LOG_FORMAT"));
    if (f < 0)
      f = PERFC_LOG_LOGFMT;
    atomic_store_explicit(&g_format, f, memory_order_relaxed);
  }
  return (perfc_log_format)f;
}

void perfc_log_set_format(perfc_log_format format) {
  atomic_store_explicit(&g_format, (int)format, memory_order_relaxed);
}

void perfc_log_set_sink(perfc_log_sink sink, void *user_data) {
  pthread_mutex_lock(&g_sink_mu);
  g_sink = sink;
  g_sink_data = user_data;
  pthread_mutex_unlock(&g_sink_mu);
}

/* A bounded line builder: appends never overflow. Record parts are capped
 * below (message, values) so that a line is cut only between parts and
 * stays well formed; `put` truncating is the last resort. */
typedef struct line {
  char buf[PERFC_LOG_MAX_LINE_BYTES + 1];
  size_t n;
} line;

/* Room left, keeping `reserve` bytes for what must close the record. */
static size_t room(const line *l, size_t reserve) {
  size_t cap = sizeof l->buf - 1;
  return l->n + reserve >= cap ? 0 : cap - reserve - l->n;
}

static void put(line *l, const char *s, size_t len) {
  if (len > sizeof l->buf - 1 - l->n)
    len = sizeof l->buf - 1 - l->n;
  memcpy(l->buf + l->n, s, len);
  l->n += len;
}

static void puts_(line *l, const char *s) { put(l, s, strlen(s)); }

/* The escaped form of one input byte, for either format: both need \" \\
 * and control characters; JSON spells the rest \u00XX, logfmt keeps \n \t
 * \r readable. Returns its length. */
static size_t escape_byte(unsigned char c, char out[8]) {
  switch (c) {
  case '"':
    memcpy(out, "\\\"", 2);
    return 2;
  case '\\':
    memcpy(out, "\\\\", 2);
    return 2;
  case '\n':
    memcpy(out, "\\n", 2);
    return 2;
  case '\r':
    memcpy(out, "\\r", 2);
    return 2;
  case '\t':
    memcpy(out, "\\t", 2);
    return 2;
  default:
    if (c < 0x20)
      return (size_t)snprintf(out, 8, "\\u%04x", c);
    out[0] = (char)c;
    return 1;
  }
}

/* Bytes in the UTF-8 sequence a lead byte starts (1 for anything else, so
 * invalid input is copied byte by byte). */
static size_t utf8_len(unsigned char c) {
  return c >= 0xf0 && c < 0xf8 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
}

/* Appends `s` escaped, at most `cap` output bytes of it; what does not fit
 * is replaced by "…(+N bytes)", N counting input bytes (plus `more`, bytes
 * the caller already had to leave out of `s`). A UTF-8 sequence is written
 * whole or not at all. */
#define CUT_MARK_MAX 32 /* "…(+N bytes)" with a 20-digit N */
static void put_escaped_capped_more(line *l, const char *s, size_t cap,
                                    size_t more) {
  const unsigned char *p = (const unsigned char *)s;
  size_t total = strlen(s), used = 0;
  /* When everything fits, no room is kept for the mark. */
  size_t full = 0;
  char esc[8];
  for (size_t i = 0; i < total; i++)
    full += escape_byte(p[i], esc);
  size_t limit = full <= cap && more == 0
                     ? cap
                     : (cap > CUT_MARK_MAX ? cap - CUT_MARK_MAX : 0);
  size_t i = 0;
  while (i < total) {
    size_t k = utf8_len(p[i]), need = 0;
    if (i + k > total)
      k = total - i;
    char seq[32];
    for (size_t j = 0; j < k; j++)
      need += escape_byte(p[i + j], seq + need);
    if (used + need > limit)
      break;
    put(l, seq, need);
    used += need;
    i += k;
  }
  if (i < total || more) {
    char mark[CUT_MARK_MAX + 8];
    int m = snprintf(mark, sizeof mark, "\xe2\x80\xa6(+%zu bytes)",
                     total - i + more);
    put(l, mark, (size_t)m);
  }
}

static void put_escaped_capped(line *l, const char *s, size_t cap) {
  put_escaped_capped_more(l, s, cap, 0);
}

/* logfmt values are bare unless they contain a space, quote, '=' or
 * control character, or are empty. */
static int needs_quotes(const char *s) {
  if (*s == '\0')
    return 1;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++)
    if (*p <= ' ' || *p == '"' || *p == '=' || *p == '\\')
      return 1;
  return 0;
}

/* One field, whole or not at all: returns 0 when it did not fit in the
 * room left before `reserve`. */
static int put_field(line *l, int json, const char *key, const char *v,
                     size_t reserve) {
  line t = {.n = 0};
  if (json) {
    puts_(&t, ",\"");
    put_escaped_capped(&t, key, PERFC_LOG_MAX_VALUE_BYTES);
    puts_(&t, "\":\"");
    put_escaped_capped(&t, v, PERFC_LOG_MAX_VALUE_BYTES);
    puts_(&t, "\"");
  } else {
    puts_(&t, " ");
    put_escaped_capped(&t, key, PERFC_LOG_MAX_VALUE_BYTES);
    puts_(&t, "=");
    if (needs_quotes(v) || strlen(v) > PERFC_LOG_MAX_VALUE_BYTES) {
      puts_(&t, "\"");
      put_escaped_capped(&t, v, PERFC_LOG_MAX_VALUE_BYTES);
      puts_(&t, "\"");
    } else {
      puts_(&t, v);
    }
  }
  if (t.n > room(l, reserve))
    return 0;
  put(l, t.buf, t.n);
  return 1;
}

/* Builds and writes one record. `suppressed` > 0 adds the count of records
 * the rate limit dropped from this record's site since its previous one. */
static void emit(perfc_log_level level, const perfc_log_field *fields, size_t n,
                 const char *msg, size_t msg_more, uint64_t suppressed) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  struct tm tm;
  gmtime_r(&tv.tv_sec, &tm);
  char ts[40];
  size_t tn = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(ts + tn, sizeof ts - tn, ".%03ldZ", (long)(tv.tv_usec / 1000));

  line l = {.n = 0};
  int json = perfc_log_get_format() == PERFC_LOG_JSON;
  puts_(&l, json ? "{\"ts\":\"" : "ts=");
  puts_(&l, ts);
  puts_(&l, json ? "\",\"level\":\"" : " level=");
  puts_(&l, level_names[level]);
  puts_(&l, json ? "\",\"msg\":\"" : " msg=\"");
  put_escaped_capped_more(&l, msg, PERFC_LOG_MAX_MSG_BYTES, msg_more);
  puts_(&l, "\"");
  /* Kept free for the closing brace and the two counts below. */
  const size_t reserve = 2 * 40;
  size_t dropped = 0;
  for (size_t i = 0; i < n; i++) {
    if (dropped || !put_field(&l, json, fields[i].key,
                              fields[i].value ? fields[i].value : "", reserve))
      dropped++;
  }
  /* A line written inside a traced call names its trace and span, so it
   * leads to the trace and back; fields the caller set win. */
  char tid[33], sid[17];
  int has_ids = 0;
  for (size_t i = 0; i < n && !has_ids; i++)
    has_ids = fields[i].key != NULL && strcmp(fields[i].key, "trace_id") == 0;
  if (!has_ids && perfc_trace_current_ids(tid, sid)) {
    if (dropped || !put_field(&l, json, "trace_id", tid, reserve) ||
        !put_field(&l, json, "span_id", sid, reserve))
      dropped++;
  }
  char num[24];
  if (suppressed) {
    snprintf(num, sizeof num, "%llu", (unsigned long long)suppressed);
    put_field(&l, json, "suppressed", num, 0);
  }
  if (dropped) {
    snprintf(num, sizeof num, "%zu", dropped);
    put_field(&l, json, "fields_dropped", num, 0);
  }
  if (json)
    puts_(&l, "}");
  l.buf[l.n] = '\0';

  /* The sink runs outside the logger's lock: a sink that takes a lock of
   * its own and logs while holding it would otherwise deadlock against
   * this one. One fprintf per record keeps stderr lines whole (stdio locks
   * the stream per call). */
  pthread_mutex_lock(&g_sink_mu);
  perfc_log_sink sink = g_sink;
  void *data = g_sink_data;
  pthread_mutex_unlock(&g_sink_mu);
  if (sink != NULL)
    sink(level, l.buf, data);
  else
    fprintf(stderr, "%s\n", l.buf);
}

/* ---- rate limit per call site ---------------------------------------------
 * A fixed table of slots, each a GCRA token bucket in one atomic word (the
 * "theoretical arrival time" in ms): a record is allowed when pushing that
 * time one interval further keeps it within burst intervals of now. No lock,
 * no allocation; a site finds its slot by hashing its name and probing a
 * few neighbours, claiming a free one with a compare-and-swap. */
#define SITE_SLOTS 512
#define SITE_PROBES 8

typedef struct site_slot {
  _Atomic uint64_t key; /* hash of the site's name; 0 = free */
  _Atomic int64_t tat_ms;
  _Atomic uint64_t suppressed; /* since the site's last record */
} site_slot;

static site_slot g_sites[SITE_SLOTS];
static atomic_int g_rl_enabled = 1;
static _Atomic int64_t g_rl_interval_ms =
    PERFC_DEFAULT_LOG_RATELIMIT_INTERVAL_MS;
static _Atomic int64_t g_rl_burst = PERFC_DEFAULT_LOG_RATELIMIT_BURST;
static _Atomic uint64_t g_suppressed[PERFC_LOG_OFF];

int perfc_log_set_ratelimit(int enabled, unsigned burst, int64_t interval_ms) {
  /* Bounded so that burst x interval cannot overflow the bucket's time. */
  if (enabled && (burst == 0 || burst > 1000000 || interval_ms <= 0 ||
                  interval_ms > 24 * 3600 * 1000))
    return PERFC_EINVAL;
  if (enabled) {
    atomic_store(&g_rl_burst, (int64_t)burst);
    atomic_store(&g_rl_interval_ms, interval_ms);
  }
  for (size_t i = 0; i < SITE_SLOTS; i++) {
    atomic_store(&g_sites[i].tat_ms, 0);
    atomic_store(&g_sites[i].suppressed, 0);
  }
  atomic_store(&g_rl_enabled, enabled ? 1 : 0);
  return 0;
}

uint64_t perfc_log_suppressed_total(perfc_log_level level) {
  if ((int)level < 0 || level >= PERFC_LOG_OFF)
    return 0;
  return atomic_load_explicit(&g_suppressed[level], memory_order_relaxed);
}

static uint64_t site_hash(const char *s) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h ? h : 1;
}

static site_slot *site_of(const char *site) {
  uint64_t h = site_hash(site ? site : "");
  size_t i = (size_t)(h % SITE_SLOTS);
  for (int probe = 0; probe < SITE_PROBES; probe++) {
    site_slot *s = &g_sites[(i + (size_t)probe) % SITE_SLOTS];
    uint64_t k = atomic_load_explicit(&s->key, memory_order_acquire);
    if (k == h)
      return s;
    if (k == 0) {
      uint64_t zero = 0;
      if (atomic_compare_exchange_strong(&s->key, &zero, h) || zero == h)
        return s;
    }
  }
  return &g_sites[i]; /* table crowded: share the home slot */
}

static int64_t coarse_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Returns 1 and the site's dropped count when a record may be written. */
static int site_allows(const char *site, perfc_log_level level,
                       uint64_t *suppressed) {
  *suppressed = 0;
  if (!atomic_load_explicit(&g_rl_enabled, memory_order_relaxed))
    return 1;
  site_slot *s = site_of(site);
  int64_t t = atomic_load_explicit(&g_rl_interval_ms, memory_order_relaxed);
  int64_t limit = t * atomic_load_explicit(&g_rl_burst, memory_order_relaxed);
  /* +1 so that a slot's zero means "long ago" even right after boot. */
  int64_t now = coarse_now_ms() + 1;
  int64_t tat = atomic_load_explicit(&s->tat_ms, memory_order_relaxed);
  for (;;) {
    int64_t next = (tat > now ? tat : now) + t;
    if (next - now > limit) {
      atomic_fetch_add_explicit(&s->suppressed, 1, memory_order_relaxed);
      atomic_fetch_add_explicit(&g_suppressed[level], 1, memory_order_relaxed);
      return 0;
    }
    if (atomic_compare_exchange_weak_explicit(
            &s->tat_ms, &tat, next, memory_order_relaxed, memory_order_relaxed))
      break;
  }
  *suppressed =
      atomic_exchange_explicit(&s->suppressed, 0, memory_order_relaxed);
  return 1;
}

/* The one path from a printf-style call to a record. `site` NULL: not
 * rate-limited. */
static void vlog(perfc_log_level level, const char *site,
                 const perfc_log_field *fields, size_t n, const char *fmt,
                 va_list ap) __attribute__((format(printf, 5, 0)));

static void vlog(perfc_log_level level, const char *site,
                 const perfc_log_field *fields, size_t n, const char *fmt,
                 va_list ap) {
  if (level < perfc_log_get_level() || level >= PERFC_LOG_OFF)
    return;
  uint64_t suppressed = 0;
  if (site != NULL && !site_allows(site, level, &suppressed))
    return;
  /* Longer than the message cap, so that the cut mark counts at least the
   * bytes past it that this buffer still holds. */
  char msg[4 * PERFC_LOG_MAX_MSG_BYTES];
  int want = vsnprintf(msg, sizeof msg, fmt, ap);
  size_t more =
      want > (int)sizeof msg - 1 ? (size_t)want - (sizeof msg - 1) : 0;
  emit(level, fields, n, msg, more, suppressed);
}

void perfc_log(perfc_log_level level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlog(level, NULL, NULL, 0, fmt, ap);
  va_end(ap);
}

void perfc_log_fields(perfc_log_level level, const perfc_log_field *fields,
                      size_t n, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlog(level, NULL, fields, n, fmt, ap);
  va_end(ap);
}

void perfc_log_ratelimited(perfc_log_level level, const char *site,
                           const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlog(level, site ? site : "", NULL, 0, fmt, ap);
  va_end(ap);
}

void perfc_log_fields_ratelimited(perfc_log_level level, const char *site,
                                  const perfc_log_field *fields, size_t n,
                                  const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlog(level, site ? site : "", fields, n, fmt, ap);
  va_end(ap);
}
