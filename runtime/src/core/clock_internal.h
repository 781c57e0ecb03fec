/*
 * core/clock_internal.h — the monotonic clock every room times calls with.
 *
 * Room: runtime/src/core private header.
 */
#ifndef PERFC_CORE_CLOCK_INTERNAL_H
#define PERFC_CORE_CLOCK_INTERNAL_H

#include <stdint.h>

/* CLOCK_MONOTONIC in nanoseconds (vDSO: no system call). */
int64_t perfc__now_ns(void);

#endif
