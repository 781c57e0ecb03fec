/*
 * log.c — the runtime's logger: level filter plus a replaceable sink.
 *
 * Room: runtime/src. Every other module logs through perfc_log(); nothing in
 * the library writes to stdout/stderr directly. Not on any hot path: the
 * level check is one relaxed atomic load, and records that pass it take a
 * mutex so lines from different threads never interleave.
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

static atomic_int g_level = -1; /* -1: not yet read from the environment */
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

void perfc_log_set_sink(perfc_log_sink sink, void *user_data) {
  pthread_mutex_lock(&g_sink_mu);
  g_sink = sink;
  g_sink_data = user_data;
  pthread_mutex_unlock(&g_sink_mu);
}

void perfc_log(perfc_log_level level, const char *fmt, ...) {
  if (level < perfc_log_get_level() || level >= PERFC_LOG_OFF)
    return;
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);

  /* logfmt: quote the message, escaping quotes, backslashes and newlines so
   * one record is always one line. */
  char line[2200];
  struct timeval tv;
  gettimeofday(&tv, NULL);
  struct tm tm;
  gmtime_r(&tv.tv_sec, &tm);
  size_t n = strftime(line, sizeof line, "ts=%Y-%m-%dT%H:%M:%S", &tm);
  n += (size_t)snprintf(line + n, sizeof line - n, ".%03ldZ level=%s msg=\"",
                        (long)(tv.tv_usec / 1000), level_names[level]);
  for (const char *p = msg; *p && n < sizeof line - 4; p++) {
    if (*p == '"' || *p == '\\') {
      line[n++] = '\\';
      line[n++] = *p;
    } else if (*p == '\n') {
      line[n++] = '\\';
      line[n++] = 'n';
    } else {
      line[n++] = *p;
    }
  }
  line[n++] = '"';
  line[n] = '\0';

  pthread_mutex_lock(&g_sink_mu);
  if (g_sink != NULL)
    g_sink(level, line, g_sink_data);
  else
    fprintf(stderr, "%s\n", line);
  pthread_mutex_unlock(&g_sink_mu);
}
