/*
 * tests/harness/criterion/criterion.h — a small criterion-compatible test
 * harness, used ONLY for ThreadSanitizer builds.
 *
 * Why: criterion aborts at start-up under TSan ("Could not initialize
 * inheritable arena", Snaipe/Criterion#274), so `make check`'s TSan pass
 * compiles the same test sources against this header instead (CMake puts
 * tests/harness first on the include path when PERFC_SANITIZE is "thread").
 * It supports the subset of criterion perfc's tests use: Test() and
 * TestSuite() with .init/.fini/.timeout, cr_assert*, cr_expect*,
 * cr_skip_test, cr_log_info, cr_log_error, and PRE_ALL/POST_ALL report hooks.
 * The output ends with criterion's "Synthesis" line so CI reads it the same.
 *
 * Room: test infrastructure; main() is in harness.c beside this directory.
 */
#ifndef PERFC_TEST_HARNESS_CRITERION_H
#define PERFC_TEST_HARNESS_CRITERION_H

#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct criterion_test_extra_data {
  void (*init)(void);
  void (*fini)(void);
  double timeout;
  int disabled;
};

void harness_register(const char *suite, const char *name, void (*fn)(void),
                      struct criterion_test_extra_data extra);
void harness_register_suite(const char *suite,
                            struct criterion_test_extra_data extra);
void harness_fail(const char *file, int line, int fatal, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void harness_skip(void);

/* Empty braces when a test gives no options (GNU C, C23); a default written
 * here would be overwritten by a test's own .timeout (-Woverride-init). */
#define HARNESS_EXTRA(...)                                                     \
  ((struct criterion_test_extra_data){__VA_ARGS__})

#define Test(suite, name, ...)                                                 \
  static void suite##_##name##_impl(void);                                     \
  __attribute__((constructor)) static void suite##_##name##_reg(void) {        \
    harness_register(#suite, #name, suite##_##name##_impl,                     \
                     HARNESS_EXTRA(__VA_ARGS__));                              \
  }                                                                            \
  static void suite##_##name##_impl(void)

#define TestSuite(suite, ...)                                                  \
  __attribute__((constructor)) static void suite##_suite_reg(void) {           \
    harness_register_suite(#suite, HARNESS_EXTRA(__VA_ARGS__));                \
  }

#define HARNESS_CHECK(fatal, cond, ...)                                        \
  do {                                                                         \
    if (!(cond))                                                               \
      harness_fail(__FILE__, __LINE__, fatal, "" __VA_ARGS__);                 \
  } while (0)

#define cr_assert(c, ...) HARNESS_CHECK(1, c, __VA_ARGS__)
#define cr_expect(c, ...) HARNESS_CHECK(0, c, __VA_ARGS__)
#define cr_assert_eq(a, b, ...) HARNESS_CHECK(1, (a) == (b), __VA_ARGS__)
#define cr_expect_eq(a, b, ...) HARNESS_CHECK(0, (a) == (b), __VA_ARGS__)
#define cr_assert_neq(a, b, ...) HARNESS_CHECK(1, (a) != (b), __VA_ARGS__)
#define cr_assert_lt(a, b, ...) HARNESS_CHECK(1, (a) < (b), __VA_ARGS__)
#define cr_assert_leq(a, b, ...) HARNESS_CHECK(1, (a) <= (b), __VA_ARGS__)
#define cr_assert_gt(a, b, ...) HARNESS_CHECK(1, (a) > (b), __VA_ARGS__)
#define cr_assert_geq(a, b, ...) HARNESS_CHECK(1, (a) >= (b), __VA_ARGS__)
#define cr_assert_null(a, ...) HARNESS_CHECK(1, (a) == NULL, __VA_ARGS__)
#define cr_expect_null(a, ...) HARNESS_CHECK(0, (a) == NULL, __VA_ARGS__)
#define cr_expect_not_null(a, ...) HARNESS_CHECK(0, (a) != NULL, __VA_ARGS__)
#define cr_assert_not_null(a, ...) HARNESS_CHECK(1, (a) != NULL, __VA_ARGS__)
#define cr_assert_str_eq(a, b, ...)                                            \
  HARNESS_CHECK(1, strcmp((a), (b)) == 0, __VA_ARGS__)
#define cr_expect_str_eq(a, b, ...)                                            \
  HARNESS_CHECK(0, strcmp((a), (b)) == 0, __VA_ARGS__)
#define cr_assert_float_eq(a, b, eps, ...)                                     \
  HARNESS_CHECK(1, fabs((double)(a) - (double)(b)) <= (eps), __VA_ARGS__)
#define cr_assert_not(c, ...) HARNESS_CHECK(1, !(c), __VA_ARGS__)
#define cr_expect_not(c, ...) HARNESS_CHECK(0, !(c), __VA_ARGS__)
#define cr_assert_arr_eq(a, b, n, ...)                                         \
  HARNESS_CHECK(1, memcmp((a), (b), (n)) == 0, __VA_ARGS__)
#define cr_expect_neq(a, b, ...) HARNESS_CHECK(0, (a) != (b), __VA_ARGS__)
#define cr_assert_str_neq(a, b, ...)                                           \
  HARNESS_CHECK(1, strcmp((a), (b)) != 0, __VA_ARGS__)
#define cr_assert_str_empty(a, ...) HARNESS_CHECK(1, (a)[0] == '\0', __VA_ARGS__)
#define cr_assert_str_not_empty(a, ...)                                        \
  HARNESS_CHECK(1, (a)[0] != '\0', __VA_ARGS__)
#define cr_log_info(...)                                                       \
  do {                                                                         \
    fprintf(stderr, "[----] " __VA_ARGS__);                                    \
    fprintf(stderr, "\n");                                                     \
  } while (0)
#define cr_log_error(...)                                                      \
  do {                                                                         \
    fprintf(stderr, "[ERR ] " __VA_ARGS__);                                    \
    fprintf(stderr, "\n");                                                     \
  } while (0)

/* Report hooks: PRE_ALL runs before the first test, POST_ALL after the
 * last (the suites use them to start and stop servers). The argument
 * structs are opaque here; hooks only receive NULL. */
struct criterion_test_set;
struct criterion_global_stats;
typedef enum { PRE_ALL, POST_ALL } harness_hook_kind;
void harness_register_hook(harness_hook_kind kind, void (*fn)(void *));
#define HARNESS_HOOK_PRE_ALL_ARG struct criterion_test_set
#define HARNESS_HOOK_POST_ALL_ARG struct criterion_global_stats
#define ReportHook(kind) HARNESS_REPORT_HOOK_(kind, __LINE__)
#define HARNESS_REPORT_HOOK_(kind, line) HARNESS_REPORT_HOOK__(kind, line)
#define HARNESS_REPORT_HOOK__(kind, line)                                      \
  static void harness_hook_##line(HARNESS_HOOK_##kind##_ARG *);                \
  static void harness_hook_call_##line(void *p) { harness_hook_##line(p); }    \
  __attribute__((constructor)) static void harness_hook_reg_##line(void) {     \
    harness_register_hook(kind, harness_hook_call_##line);                     \
  }                                                                            \
  static void harness_hook_##line

#define cr_assert_fail(...) harness_fail(__FILE__, __LINE__, 1, "" __VA_ARGS__)
#define cr_skip_test(...)                                                      \
  do {                                                                         \
    fprintf(stderr, "skip: " __VA_ARGS__);                                     \
    fprintf(stderr, "\n");                                                     \
    harness_skip();                                                            \
  } while (0)

#endif
