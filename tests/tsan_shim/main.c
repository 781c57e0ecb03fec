/*
 * tests/tsan_shim/main.c — runs the tests registered through the shim's
 * Test() macro, in order, in this process. See criterion/criterion.h.
 *
 * Room: test infrastructure. Not built by CMake.
 */
#include "criterion/criterion.h"
struct shim_test shim_tests[128];
int shim_n;
int main(void) {
  for (int i = 0; i < shim_n; i++) {
    fprintf(stderr, "run %s\n", shim_tests[i].name);
    shim_tests[i].fn();
  }
  fprintf(stderr, "all %d passed\n", shim_n);
  return 0;
}
