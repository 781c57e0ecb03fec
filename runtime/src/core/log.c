/*
 * log.c — the runtime's logger: level filter, logfmt or JSON lines, and a
 * replaceable sink.
 *
 * Room: runtime/src. Every other module logs through perfc_log() or
 * perfc_log_fields(); nothing in the library writes to stdout/stderr
 * directly. Not on any hot path: the level check is one relaxed atomic load;
 * a record takes a mutex only to read the sink, and is written with one
 * call so lines from different threads never interleave.
 */
#include "perfc/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
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

/* A bounded line builder: appends never overflow, the line is truncated. */
typedef struct line {
  char buf[4096];
  size_t n;
} line;

static void put(line *l, const char *s, size_t len) {
  if (len > sizeof l->buf - 1 - l->n)
    len = sizeof l->buf - 1 - l->n;
  memcpy(l->buf + l->n, s, len);
  l->n += len;
}

static void puts_(line *l, const char *s) { put(l, s, strlen(s)); }

/* Escapes for either format: both need \" \\ and control characters; JSON
 * spells the rest \u00XX, logfmt keeps \n \t \r readable. */
static void put_escaped(line *l, const char *s) {
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    char esc[8];
    switch (*p) {
    case '"':
      puts_(l, "\\\"");
      break;
    case '\\':
      puts_(l, "\\\\");
      break;
    case '\n':
      puts_(l, "\\n");
      break;
    case '\r':
      puts_(l, "\\r");
      break;
    case '\t':
      puts_(l, "\\t");
      break;
    default:
      if (*p < 0x20) {
        snprintf(esc, sizeof esc, "\\u%04x", *p);
        puts_(l, esc);
      } else {
        put(l, (const char *)p, 1);
      }
    }
  }
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

static void emit(perfc_log_level level, const perfc_log_field *fields,
                 size_t n, const char *msg) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  struct tm tm;
  gmtime_r(&tv.tv_sec, &tm);
  char ts[40];
  size_t tn = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(ts + tn, sizeof ts - tn, ".%03ldZ", (long)(tv.tv_usec / 1000));

  line l = {.n = 0};
  int json = perfc_log_get_format() == PERFC_LOG_JSON;
  if (json) {
    puts_(&l, "{\"ts\":\"");
    puts_(&l, ts);
    puts_(&l, "\",\"level\":\"");
    puts_(&l, level_names[level]);
    puts_(&l, "\",\"msg\":\"");
    put_escaped(&l, msg);
    puts_(&l, "\"");
    for (size_t i = 0; i < n; i++) {
      puts_(&l, ",\"");
      put_escaped(&l, fields[i].key);
      puts_(&l, "\":\"");
      put_escaped(&l, fields[i].value ? fields[i].value : "");
      puts_(&l, "\"");
    }
    puts_(&l, "}");
  } else {
    puts_(&l, "ts=");
    puts_(&l, ts);
    puts_(&l, " level=");
    puts_(&l, level_names[level]);
    puts_(&l, " msg=\"");
    put_escaped(&l, msg);
    puts_(&l, "\"");
    for (size_t i = 0; i < n; i++) {
      const char *v = fields[i].value ? fields[i].value : "";
      puts_(&l, " ");
      puts_(&l, fields[i].key);
      puts_(&l, "=");
      if (needs_quotes(v)) {
        puts_(&l, "\"");
        put_escaped(&l, v);
        puts_(&l, "\"");
      } else {
        puts_(&l, v);
      }
    }
  }
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

/* The one path from a printf-style call to a record. */
static void vlog(perfc_log_level level, const perfc_log_field *fields, size_t n,
                 const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));

static void vlog(perfc_log_level level, const perfc_log_field *fields, size_t n,
                 const char *fmt, va_list ap) {
  if (level < perfc_log_get_level() || level >= PERFC_LOG_OFF)
    return;
  char msg[1024];
  vsnprintf(msg, sizeof msg, fmt, ap);
  emit(level, fields, n, msg);
}

void perfc_log(perfc_log_level level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlog(level, NULL, 0, fmt, ap);
  va_end(ap);
}

void perfc_log_fields(perfc_log_level level, const perfc_log_field *fields,
                      size_t n, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlog(level, fields, n, fmt, ap);
  va_end(ap);
}
