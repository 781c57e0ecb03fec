/*
 * core/clock.c — the monotonic clock (core/clock_internal.h).
 *
 * Room: runtime/src/core. Calls libc only.
 */
#include "core/clock_internal.h"

#include <time.h>

int64_t perfc__now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
