/*
 * tests/harness/harness.c — runner for the criterion-compatible harness in
 * criterion/criterion.h (TSan builds only; see that header for why).
 *
 * Room: test infrastructure.
 */
#include "criterion/criterion.h"

#include <stdarg.h>

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

int main(void) {
  int passed = 0, failed = 0, skipped = 0;
  for (int i = 0; i < ntests; i++) {
    test *t = &tests[i];
    struct criterion_test_extra_data se = {0};
    for (int k = 0; k < nsuites; k++)
      if (strcmp(suites[k].name, t->suite) == 0)
        se = suites[k].extra;
    void (*init)(void) = t->extra.init ? t->extra.init : se.init;
    void (*fini)(void) = t->extra.fini ? t->extra.fini : se.fini;
    failed_now = 0;
    int jumped = setjmp(escape);
    if (jumped == 0) {
      if (init)
        init();
      t->fn();
    }
    if (jumped != 2 && fini)
      fini();
    if (jumped == 2) {
      skipped++;
    } else if (failed_now) {
      failed++;
      fprintf(stderr, "[FAIL] %s::%s\n", t->suite, t->name);
    } else {
      passed++;
    }
  }
  fprintf(stderr,
          "[====] Synthesis: Tested: %d | Passing: %d | Failing: %d | "
          "Crashing: 0 \n",
          passed + failed, passed, failed);
  (void)skipped;
  return failed ? 1 : 0;
}
