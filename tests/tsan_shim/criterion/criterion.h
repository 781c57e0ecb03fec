/*
 * tests/tsan_shim/criterion/criterion.h — a minimal stand-in for criterion's
 * header, so that unit tests can run under ThreadSanitizer: criterion aborts
 * at start-up under TSan ("Could not initialize inheritable arena",
 * Snaipe/Criterion#274). Tests run in-process and sequentially (criterion
 * forks one process per test); the first failed assertion exits 1.
 *
 * Room: test infrastructure. Not built by CMake. Supports only the macros
 * the metrics suites use. Build a suite with it, against a TSan runtime:
 *
 *   gcc -O1 -g -fsanitize=thread -D_GNU_SOURCE -pthread -I tests/tsan_shim \
 *       -I runtime/include tests/unit/test_metrics.c tests/tsan_shim/main.c \
 *       -L build-tsan/lib -lperfc -lm -Wl,-rpath,$PWD/build-tsan/lib \
 *       -o build-tsan/test_metrics_tsan
 */
#ifndef PERFC_TSAN_SHIM_CRITERION_H
#define PERFC_TSAN_SHIM_CRITERION_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
typedef void (*shim_fn)(void);
struct shim_test {
  const char *name;
  shim_fn fn;
};
extern struct shim_test shim_tests[128];
extern int shim_n;
#define Test(s, n)                                                             \
  static void s##_##n(void);                                                   \
  __attribute__((constructor)) static void reg_##s##_##n(void) {               \
    shim_tests[shim_n++] = (struct shim_test){#s "::" #n, s##_##n};            \
  }                                                                            \
  static void s##_##n(void)
#define SHIM_FAIL(...)                                                         \
  do {                                                                         \
    fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                            \
    fprintf(stderr, "" __VA_ARGS__);                                           \
    fprintf(stderr, "\n");                                                     \
    exit(1);                                                                   \
  } while (0)
#define cr_assert(c, ...)                                                      \
  do {                                                                         \
    if (!(c))                                                                  \
      SHIM_FAIL("failed: " #c " " __VA_ARGS__);                                \
  } while (0)
#define cr_assert_eq(a, b, ...) cr_assert((a) == (b), __VA_ARGS__)
#define cr_assert_neq(a, b, ...) cr_assert((a) != (b), __VA_ARGS__)
#define cr_assert_gt(a, b, ...) cr_assert((a) > (b), __VA_ARGS__)
#define cr_assert_geq(a, b, ...) cr_assert((a) >= (b), __VA_ARGS__)
#define cr_assert_null(a, ...) cr_assert((a) == NULL, __VA_ARGS__)
#define cr_assert_not_null(a, ...) cr_assert((a) != NULL, __VA_ARGS__)
#define cr_assert_str_eq(a, b, ...)                                            \
  cr_assert(strcmp((a), (b)) == 0, __VA_ARGS__)
#define cr_assert_float_eq(a, b, e, ...)                                       \
  cr_assert(fabs((a) - (b)) <= (e), __VA_ARGS__)
#define cr_assert_fail(...) SHIM_FAIL(__VA_ARGS__)
#define cr_skip_test(...)                                                      \
  do {                                                                         \
    fprintf(stderr, "skip: " __VA_ARGS__);                                     \
    fprintf(stderr, "\n");                                                     \
    return;                                                                    \
  } while (0)
#endif
