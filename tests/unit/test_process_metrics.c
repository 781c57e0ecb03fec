/*
 * test_process_metrics.c — unit tests for runtime/src/observe/process_metrics.c:
 * the standard process metrics are present, typed, and plausible against
 * what the test measures itself.
 *
 * Room: unit tests (metrics module).
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "perfc/process_metrics.h"

/* Where the CPU-burning loop writes, so the compiler keeps it. */
static volatile unsigned long burn_sink;

static char *render(perfc_metrics_registry *reg) {
  char *out;
  cr_assert_eq(perfc_metrics_registry_render(reg, &out, NULL), 0);
  return out;
}

/* Value of the sample line that starts with "name " (no labels). */
static double sample(const char *text, const char *name) {
  size_t n = strlen(name);
  for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : p) {
    if (strncmp(p, name, n) == 0 && p[n] == ' ')
      return strtod(p + n + 1, NULL);
  }
  cr_assert_fail("sample %s missing in:\n%s", name, text);
  return 0;
}

Test(process_metrics, registered_and_plausible) {
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  cr_assert_eq(perfc_process_metrics_register(reg), 0);
  cr_assert_eq(perfc_process_metrics_register(reg), PERFC_EEXIST);

  char *t = render(reg);
  cr_assert_not_null(strstr(t, "# TYPE process_cpu_seconds_total counter\n"),
                     "%s", t);
  cr_assert_not_null(strstr(t, "# TYPE process_open_fds gauge\n"));
  cr_assert_not_null(strstr(t, "# HELP process_resident_memory_bytes "
                               "Resident memory size in bytes.\n"));
  cr_assert_not_null(
      strstr(t, "# TYPE perfc_build_info gauge\n"
                "perfc_build_info{version=\"" PERFC_VERSION_STRING "\"} 1\n"),
      "%s", t);

  double rss = sample(t, "process_resident_memory_bytes");
  double vsz = sample(t, "process_virtual_memory_bytes");
  cr_assert_gt(rss, 1 << 20, "rss %f", rss);
  cr_assert_geq(vsz, rss);

  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  cr_assert_eq(sample(t, "process_max_fds"), (double)rl.rlim_cur);

  double start = sample(t, "process_start_time_seconds");
  double now = (double)time(NULL);
  cr_assert(start <= now + 1 && start > now - 600, "start %f now %f", start,
            now);

  /* Open descriptors: opening two more shows up exactly. */
  double fds = sample(t, "process_open_fds");
  cr_assert_gt(fds, 0);
  free(t);
  int a = open("/dev/null", O_RDONLY | O_CLOEXEC);
  int b = open("/dev/null", O_RDONLY | O_CLOEXEC);
  t = render(reg);
  cr_assert_eq(sample(t, "process_open_fds"), fds + 2, "%s", t);
  free(t);
  close(a);
  close(b);

  /* CPU time moves when we burn CPU (clock ticks are 10 ms). */
  t = render(reg);
  double cpu0 = sample(t, "process_cpu_seconds_total");
  free(t);
  struct timespec t0, t1;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t0);
  do {
    for (int i = 0; i < 1000000; i++)
      burn_sink += (unsigned long)i;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t1);
  } while ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec) < 1.5e8);
  t = render(reg);
  double cpu1 = sample(t, "process_cpu_seconds_total");
  free(t);
  cr_assert_gt(cpu1, cpu0 + 0.05, "cpu %f -> %f", cpu0, cpu1);
  perfc_metrics_registry_free(reg);
}
