/*
 * core/clock_internal.h — the monotonic clock every room times calls with,
 * and a loop thread's batch: one clock reading shared by the work that
 * only needs to know when its answers were ready to leave.
 *
 * Room: runtime/src/core private header. The batch is begun and ended by
 * transport/h2/loop.c; observe/metrics.c registers its latency
 * observations on it.
 */
#ifndef PERFC_CORE_CLOCK_INTERNAL_H
#define PERFC_CORE_CLOCK_INTERNAL_H

#include <stdint.h>

/* CLOCK_MONOTONIC in nanoseconds (vDSO: no system call). */
int64_t perfc__now_ns(void);

/* ---- a loop thread's batch ------------------------------------------------
 *
 * An event loop reads many requests per wake-up, answers the ones it can
 * at once, and writes all the answers after that (h2's loop: the
 * connections' flushes run last in each iteration). Between the first
 * read and those writes is the batch. A latency that ends "when the answer
 * was ready to leave" is the same instant for every call answered in the
 * batch: its end, just before the writes. So instead of a clock reading
 * per call (~20 ns of a ~2 µs call), code on a loop registers an end hook
 * and the batch reads the clock once for all of them.
 *
 * Per thread; no locks. A thread outside a batch (a worker, the C core's
 * pollers, a loop's own flushes) is told so and does its work at once. */

/* Begins the calling thread's batch (a loop, after its poll returns). */
void perfc__batch_begin(void);

/* Ends the calling thread's batch (a loop, before it writes): reads the
 * clock once when some hook is registered and runs every hook registered
 * during the batch, in order, with that reading. The thread is out of its
 * batch while the hooks run. */
void perfc__batch_end(void);

/* Registers `fn` to run at the end of the calling thread's batch. Returns
 * 0, or -1 when the thread is in no batch or its few hook slots are full:
 * then the caller does its work now. Registering the same `fn` twice in a
 * batch runs it once. What `fn` will touch must outlive the batch. */
int perfc__batch_at_end(void (*fn)(int64_t now_ns));

#endif
