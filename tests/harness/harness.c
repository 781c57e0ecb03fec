/*
 * tests/harness/harness.c — runner for the criterion-compatible harness in
 * criterion/criterion.h (TSan builds only; see that header for why).
 *
 * Room: test infrastructure. Each test runs in a forked child, like
 * criterion, so tests cannot see each other's environment or threads.
 */
#include "criterion/criterion.h"

#include <stdarg.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_TESTS 512
#define MAX_SUITES 64

typedef struct test {
  const char *suite, *name;
  void (*fn)(void);
  struct criterion_test_extra_data extra;
} test;

typedef struct suite {
  const char *name;
  struct criterion_test_extra_data extra;
} suite;

static test tests[MAX_TESTS];
static int ntests;
static suite suites[MAX_SUITES];
static int nsuites;
static jmp_buf escape;
static void (*hooks_pre[8])(void *), (*hooks_post[8])(void *);
static int npre, npost;

void harness_register_hook(harness_hook_kind kind, void (*fn)(void *)) {
  if (kind == PRE_ALL && npre < 8)
    hooks_pre[npre++] = fn;
  else if (kind == POST_ALL && npost < 8)
    hooks_post[npost++] = fn;
}
static int failed_now;

void harness_register(const char *s, const char *name, void (*fn)(void),
                      struct criterion_test_extra_data extra) {
  if (ntests == MAX_TESTS) {
    fprintf(stderr, "harness: more than %d tests\n", MAX_TESTS);
    exit(2);
  }
  tests[ntests++] = (test){s, name, fn, extra};
}

void harness_register_suite(const char *s,
                            struct criterion_test_extra_data extra) {
  if (nsuites < MAX_SUITES)
    suites[nsuites++] = (suite){s, extra};
}

void harness_fail(const char *file, int line, int fatal, const char *fmt, ...) {
  fprintf(stderr, "[----] %s:%d: Assertion Failed ", file, line);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n");
  failed_now = 1;
  if (fatal)
    longjmp(escape, 1);
}

void harness_skip(void) { longjmp(escape, 2); }

/* Runs one test in this process: init, body, fini. Returns 0 passed, 1
 * failed, 2 skipped. */
static int run_here(test *t) {
  struct criterion_test_extra_data se = {0};
  for (int k = 0; k < nsuites; k++)
    if (strcmp(suites[k].name, t->suite) == 0)
      se = suites[k].extra;
  void (*init)(void) = t->extra.init ? t->extra.init : se.init;
  void (*fini)(void) = t->extra.fini ? t->extra.fini : se.fini;
  double timeout = t->extra.timeout > 0 ? t->extra.timeout : se.timeout;
  if (timeout > 0)
    alarm((unsigned)timeout + 1); /* a hung test dies by SIGALRM: a crash */
  failed_now = 0;
  int jumped = setjmp(escape);
  if (jumped == 0) {
    if (init)
      init();
    t->fn();
  }
  if (jumped != 2 && fini)
    fini();
  if (jumped == 2)
    return 2;
  return failed_now ? 1 : 0;
}

int main(void) {
  int passed = 0, failed = 0, crashed = 0;
  for (int i = 0; i < npre; i++)
    hooks_pre[i](NULL);
  /* Each test in its own child process, as criterion does: tests may set
   * environment variables, start servers or leave threads behind, and must
   * not see each other's. */
  for (int i = 0; i < ntests; i++) {
    test *t = &tests[i];
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0)
      _exit(run_here(t));
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid) {
      fprintf(stderr, "[FAIL] %s::%s: cannot run (fork)\n", t->suite, t->name);
      failed++;
      continue;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
      passed++;
    } else if (WIFEXITED(status) && WEXITSTATUS(status) == 2) {
      /* skipped */
    } else if (WIFEXITED(status)) {
      failed++;
      fprintf(stderr, "[FAIL] %s::%s\n", t->suite, t->name);
    } else {
      crashed++;
      fprintf(stderr, "[FAIL] %s::%s: CRASH (signal %d)\n", t->suite, t->name,
              WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    }
  }
  for (int i = 0; i < npost; i++)
    hooks_post[i](NULL);
  fprintf(stderr,
          "[====] Synthesis: Tested: %d | Passing: %d | Failing: %d | "
          "Crashing: %d \n",
          passed + failed + crashed, passed, failed + crashed, crashed);
  return failed + crashed ? 1 : 0;
}
