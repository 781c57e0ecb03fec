/*
 * process_metrics.c — Prometheus' standard process metrics (the names and
 * meanings client_golang's process collector exports), read from /proc at
 * scrape time, plus perfc_build_info.
 *
 * Room: runtime/src/observe (metrics module). Linux only: /proc is the source.
 */
#include "perfc/log.h"
#include "perfc/process_metrics.h"
#include "observe/metrics_internal.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

enum proc_field {
  PF_CPU_SECONDS,
  PF_RESIDENT_BYTES,
  PF_VIRTUAL_BYTES,
  PF_OPEN_FDS,
  PF_MAX_FDS,
  PF_START_TIME
};

/* The fields of /proc/self/stat we use (proc(5) numbering). */
typedef struct proc_stat {
  unsigned long long utime, stime; /* 14, 15: clock ticks */
  unsigned long long starttime;    /* 22: ticks after boot */
  unsigned long long vsize;        /* 23: bytes */
  long long rss;                   /* 24: pages */
} proc_stat;

static int read_proc_stat(proc_stat *ps) {
  char line[1024];
  FILE *f = fopen("/proc/self/stat", "re");
  if (!f)
    return -1;
  size_t n = fread(line, 1, sizeof line - 1, f);
  fclose(f);
  line[n] = '\0';
  /* Field 2 is the command name in parentheses and may itself contain
   * spaces and ')': the fields we want start after the last ')'. */
  char *p = strrchr(line, ')');
  if (!p)
    return -1;
  /* After ')' come fields 3 (state) onward; skip to field 14. */
  int field = 2;
  char *save = NULL;
  for (char *tok = strtok_r(p + 1, " ", &save); tok;
       tok = strtok_r(NULL, " ", &save)) {
    field++;
    switch (field) {
    case 14:
      ps->utime = strtoull(tok, NULL, 10);
      break;
    case 15:
      ps->stime = strtoull(tok, NULL, 10);
      break;
    case 22:
      ps->starttime = strtoull(tok, NULL, 10);
      break;
    case 23:
      ps->vsize = strtoull(tok, NULL, 10);
      break;
    case 24:
      ps->rss = strtoll(tok, NULL, 10);
      return 0;
    default:
      break;
    }
  }
  return -1;
}

/* Boot time in seconds since the epoch, from /proc/stat's btime line. */
static double boot_time(void) {
  char line[256];
  double bt = NAN;
  FILE *f = fopen("/proc/stat", "re");
  if (!f)
    return NAN;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "btime ", 6) == 0) {
      bt = strtod(line + 6, NULL);
      break;
    }
  }
  fclose(f);
  return bt;
}

static double open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d)
    return NAN;
  double n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.')
      n++;
  closedir(d);
  /* Do not count the descriptor opendir() itself holds. */
  return n > 0 ? n - 1 : 0;
}

/* One callback for all fields: user_data encodes which. A failed read
 * reports NaN rather than a made-up value. */
static double proc_value(void *ud) {
  enum proc_field which = (enum proc_field)(uintptr_t)ud;
  proc_stat ps;
  switch (which) {
  case PF_OPEN_FDS:
    return open_fds();
  case PF_MAX_FDS: {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
      return NAN;
    return rl.rlim_cur == RLIM_INFINITY ? INFINITY : (double)rl.rlim_cur;
  }
  default:
    break;
  }
  if (read_proc_stat(&ps) != 0)
    return NAN;
  double tck = (double)sysconf(_SC_CLK_TCK);
  switch (which) {
  case PF_CPU_SECONDS:
    return (double)(ps.utime + ps.stime) / tck;
  case PF_RESIDENT_BYTES:
    return (double)ps.rss * (double)sysconf(_SC_PAGESIZE);
  case PF_VIRTUAL_BYTES:
    return (double)ps.vsize;
  case PF_START_TIME:
    return boot_time() + (double)ps.starttime / tck;
  default:
    return NAN;
  }
}

/* The logger (core) keeps its drop counts in plain atomics and knows
 * nothing of metrics; they are read here at scrape time, one series per
 * level that can be logged. */
static double log_suppressed_value(void *level) {
  return (double)perfc_log_suppressed_total((perfc_log_level)(uintptr_t)level);
}

static int log_suppressed_register(perfc_metrics_registry *reg) {
  static const char *const ln[] = {"level"};
  static const char *const levels[] = {"debug", "info", "warn", "error"};
  perfc_metrics_family_opts o;
  perfc_metrics_family_opts_init(&o);
  o.name = "perfc_log_suppressed_total";
  o.help = "Log records dropped by the per-call-site rate limit "
           "(perfc_log_ratelimited), by level.";
  o.label_names = ln;
  o.label_count = 1;
  perfc_metrics_family *f;
  int rc = perfc_metrics_family_new(&f, reg, PERFC_METRICS_COUNTER, &o);
  for (uintptr_t i = 0; rc == 0 && i < 4; i++)
    rc = perfc_metrics_family_add_func(f, (const char *const[]){levels[i]},
                               log_suppressed_value, (void *)i, NULL);
  return rc;
}

int perfc_process_metrics_register(perfc_metrics_registry *reg) {
  static const struct {
    const char *name;
    const char *help;
    perfc_metrics_type type;
    enum proc_field field;
  } defs[] = {
      /* Help texts are client_golang's, so dashboards' tooltips match. */
      {"process_cpu_seconds_total",
       "Total user and system CPU time spent in seconds.",
       PERFC_METRICS_COUNTER, PF_CPU_SECONDS},
      {"process_resident_memory_bytes", "Resident memory size in bytes.",
       PERFC_METRICS_GAUGE, PF_RESIDENT_BYTES},
      {"process_virtual_memory_bytes", "Virtual memory size in bytes.",
       PERFC_METRICS_GAUGE, PF_VIRTUAL_BYTES},
      {"process_open_fds", "Number of open file descriptors.",
       PERFC_METRICS_GAUGE, PF_OPEN_FDS},
      {"process_max_fds", "Maximum number of open file descriptors.",
       PERFC_METRICS_GAUGE, PF_MAX_FDS},
      {"process_start_time_seconds",
       "Start time of the process since unix epoch in seconds.",
       PERFC_METRICS_GAUGE, PF_START_TIME},
  };
  for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++) {
    perfc_metrics_family *f;
    int rc = perfc__metrics_family(&f, reg, defs[i].type, defs[i].name,
                                   defs[i].help, NULL, 0);
    if (rc)
      return rc;
    rc = perfc_metrics_family_add_func(f, NULL, proc_value,
                                       (void *)(uintptr_t)defs[i].field, NULL);
    if (rc)
      return rc;
  }

  /* The info-metric idiom: a constant 1 whose labels carry the data, so a
   * query can join the version onto any other series. */
  static const char *const ln[] = {"version"};
  perfc_metrics_family *f;
  int rc = perfc__metrics_family(
      &f, reg, PERFC_METRICS_GAUGE, "perfc_build_info",
      "perfc runtime build information; the value is always 1.", ln, 1);
  if (rc)
    return rc;
  perfc_gauge *g;
  rc = perfc_gauge_get(&g, f, (const char *const[]){PERFC_VERSION_STRING});
  if (rc)
    return rc;
  perfc_gauge_set(g, 1);
  return log_suppressed_register(reg);
}
