/*
 * tests/build/leak_probe.c — a criterion test whose body leaks on purpose
 * and passes. test_leaks_counted.sh runs it the way make check runs every
 * test and checks that the leak reaches a report file: criterion ignores a
 * worker's LeakSanitizer exit code once the test passed, and a suppression
 * matching criterion's frames once hid every leak in every unit test.
 *
 * Room: tests/build (ASan builds only).
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

/* Written through a volatile pointer and then cleared, so the compiler
 * keeps the allocation and nothing points to it at exit. */
static void *volatile sink;

Test(leak_probe, leaks_77_bytes_and_passes) {
  char *p = malloc(77);
  cr_assert_not_null(p);
  memset(p, 1, 77);
  sink = p;
  sink = NULL;
}
