/*
 * test_clock.c — unit tests for runtime/src/core/clock.c: the monotonic
 * clock and a loop thread's batch (core/clock_internal.h): end hooks run
 * once, at the batch's end, with one clock reading; outside a batch a
 * caller is told to do its work now.
 *
 * Room: unit tests (core).
 */
#include <criterion/criterion.h>
#include <pthread.h>

#include "core/clock_internal.h"

static int64_t g_seen[8];
static int g_runs_a, g_runs_b;

static void hook_a(int64_t now) { g_seen[g_runs_a++ % 8] = now; }
static void hook_b(int64_t now) {
  g_runs_b++;
  /* The batch is over while its hooks run: nothing can join it. */
  cr_assert_eq(perfc__batch_at_end(hook_a), -1);
  g_seen[4] = now;
}

static void reset(void) {
  g_runs_a = g_runs_b = 0;
  for (int i = 0; i < 8; i++)
    g_seen[i] = 0;
}

Test(clock, now_is_monotonic) {
  int64_t a = perfc__now_ns(), b = perfc__now_ns();
  cr_assert_gt(a, 0);
  cr_assert_geq(b, a);
}

Test(clock, outside_a_batch_work_is_done_now) {
  reset();
  cr_assert_eq(perfc__batch_at_end(hook_a), -1);
  perfc__batch_end(); /* no batch: nothing runs */
  cr_assert_eq(g_runs_a, 0);
}

Test(clock, hooks_run_once_at_the_end_with_one_reading) {
  reset();
  perfc__batch_begin();
  cr_assert_eq(perfc__batch_at_end(hook_a), 0);
  cr_assert_eq(perfc__batch_at_end(hook_b), 0);
  cr_assert_eq(perfc__batch_at_end(hook_a), 0); /* again: still once */
  cr_assert_eq(g_runs_a, 0, "a hook ran before the batch's end");
  int64_t before = perfc__now_ns();
  perfc__batch_end();
  int64_t after = perfc__now_ns();
  cr_assert_eq(g_runs_a, 1);
  cr_assert_eq(g_runs_b, 1);
  cr_assert_eq(g_seen[0], g_seen[4], "the hooks saw different readings");
  cr_assert(g_seen[0] >= before && g_seen[0] <= after,
            "the reading %lld is not the batch's end (%lld..%lld)",
            (long long)g_seen[0], (long long)before, (long long)after);
  /* Over: the next registration is refused, and a new batch starts empty. */
  cr_assert_eq(perfc__batch_at_end(hook_a), -1);
  perfc__batch_begin();
  perfc__batch_end();
  cr_assert_eq(g_runs_a, 1);
}

static void h0(int64_t n) { (void)n; }
static void h1(int64_t n) { (void)n; }
static void h2(int64_t n) { (void)n; }
static void h3(int64_t n) { (void)n; }

Test(clock, full_hook_slots_refuse) {
  reset();
  perfc__batch_begin();
  cr_assert_eq(perfc__batch_at_end(h0), 0);
  cr_assert_eq(perfc__batch_at_end(h1), 0);
  cr_assert_eq(perfc__batch_at_end(h2), 0);
  cr_assert_eq(perfc__batch_at_end(h3), 0);
  cr_assert_eq(perfc__batch_at_end(hook_a), -1, "a fifth hook was taken");
  cr_assert_eq(perfc__batch_at_end(h2), 0, "a registered hook was refused");
  perfc__batch_end();
  cr_assert_eq(g_runs_a, 0);
}

static void *other_thread(void *arg) {
  (void)arg;
  /* The batch is the calling thread's: another thread is in none. */
  return (void *)(intptr_t)perfc__batch_at_end(hook_a);
}

Test(clock, the_batch_is_per_thread) {
  reset();
  perfc__batch_begin();
  pthread_t t;
  void *rc;
  cr_assert_eq(pthread_create(&t, NULL, other_thread, NULL), 0);
  pthread_join(t, &rc);
  cr_assert_eq((intptr_t)rc, -1);
  perfc__batch_end();
  cr_assert_eq(g_runs_a, 0);
}
