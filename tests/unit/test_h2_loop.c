/*
 * test_h2_loop.c — transport/h2/loop.c: the timer heap, the MPSC queue
 * under four producer threads, and the eventfd wake (one for many posts).
 *
 * Room: tests/unit.
 */
#include "transport/h2/loop_internal.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

/* ---- timers ---------------------------------------------------------------- */

typedef struct tt {
  perfc__h2_timer t;
  int id;
} tt;

static int fired[256];
static int nfired;

static void on_timer(perfc__h2_loop *l, perfc__h2_timer *t) {
  (void)l;
  fired[nfired++] = ((tt *)t)->id;
}

Test(h2_loop, timers_fire_in_deadline_order_and_disarmed_ones_never) {
  perfc__h2_loop *l;
  cr_assert_eq(perfc__h2_loop_new(&l), 0);
  int64_t now = perfc__h2_now_ms();
  tt ts[200];
  nfired = 0;
  srand(7);
  for (int i = 0; i < 200; i++) {
    ts[i].t = (perfc__h2_timer){.cb = on_timer};
    ts[i].id = i;
    /* Deadlines in the past and up to 40 ms ahead, in random order. */
    perfc__h2_timer_arm(l, &ts[i].t, now - 20 + rand() % 60);
  }
  /* Move ten, disarm every third. */
  for (int i = 0; i < 10; i++)
    perfc__h2_timer_arm(l, &ts[i].t, now + 30 - i);
  int armed = 200;
  for (int i = 0; i < 200; i += 3) {
    perfc__h2_timer_disarm(l, &ts[i].t);
    armed--;
  }
  cr_assert_eq(perfc__h2_loop_timers(l), (size_t)armed);
  for (int k = 0; k < 100 && nfired < armed; k++)
    perfc__h2_loop_run_once(l, -1); /* epoll_wait bounded by the next timer */
  cr_assert_eq(nfired, armed);
  cr_assert_eq(perfc__h2_loop_timers(l), 0);
  for (int i = 0; i < nfired; i++) {
    cr_assert_neq(fired[i] % 3, 0, "disarmed timer %d fired", fired[i]);
    if (i > 0)
      cr_assert_leq(ts[fired[i - 1]].t.at_ms, ts[fired[i]].t.at_ms,
                    "out of order at %d", i);
  }
  perfc__h2_loop_free(l);
}

/* ---- the MPSC queue ----------------------------------------------------------- */

#define PRODUCERS 4
#define PER_PRODUCER 50000

typedef struct item {
  perfc__h2_task task;
  int producer, seq;
} item;

static perfc__h2_loop *qloop;
static int last_seq[PRODUCERS];
static long consumed;
static int order_errors;

static void on_item(perfc__h2_loop *l, perfc__h2_task *t) {
  (void)l;
  item *it = (item *)t;
  if (it->seq != last_seq[it->producer] + 1)
    order_errors++;
  last_seq[it->producer] = it->seq;
  consumed++;
}

static void *producer(void *arg) {
  item *items = arg;
  for (int i = 0; i < PER_PRODUCER; i++)
    perfc__h2_loop_post(qloop, &items[i].task, true);
  return NULL;
}

Test(h2_loop, mpsc_queue_four_producers_keeps_each_fifo_and_loses_nothing) {
  cr_assert_eq(perfc__h2_loop_new(&qloop), 0);
  item *items = calloc(PRODUCERS * PER_PRODUCER, sizeof *items);
  for (int p = 0; p < PRODUCERS; p++) {
    last_seq[p] = -1;
    for (int i = 0; i < PER_PRODUCER; i++) {
      item *it = &items[p * PER_PRODUCER + i];
      it->task.run = on_item;
      it->producer = p;
      it->seq = i;
    }
  }
  consumed = 0;
  order_errors = 0;
  pthread_t th[PRODUCERS];
  for (int p = 0; p < PRODUCERS; p++)
    pthread_create(&th[p], NULL, producer, &items[p * PER_PRODUCER]);
  for (int k = 0; k < 100000 && consumed < PRODUCERS * PER_PRODUCER; k++)
    perfc__h2_loop_run_once(qloop, 1000);
  for (int p = 0; p < PRODUCERS; p++)
    pthread_join(th[p], NULL);
  perfc__h2_loop_run_once(qloop, 0);
  cr_assert_eq(consumed, PRODUCERS * PER_PRODUCER);
  cr_assert_eq(order_errors, 0);
  /* Posts share wakes: far fewer eventfd writes than posts. */
  cr_assert_lt(perfc__h2_loop_wakes(qloop), (uint64_t)PRODUCERS * PER_PRODUCER);
  free(items);
  perfc__h2_loop_free(qloop);
}

/* ---- the eventfd wake ------------------------------------------------------------ */

static int ran;
static void on_ran(perfc__h2_loop *l, perfc__h2_task *t) {
  (void)l;
  (void)t;
  ran++;
}

static void *sleeper(void *arg) {
  perfc__h2_loop *l = arg;
  /* Blocks with no timer and no fd ready: only the wake ends it. */
  perfc__h2_loop_run_once(l, 10000);
  return NULL;
}

Test(h2_loop, a_post_wakes_a_blocked_loop_and_many_posts_share_one_wake) {
  perfc__h2_loop *l;
  cr_assert_eq(perfc__h2_loop_new(&l), 0);
  ran = 0;
  pthread_t th;
  perfc__h2_task t1 = {.run = on_ran};
  pthread_create(&th, NULL, sleeper, l);
  struct timespec ts = {0, 50 * 1000 * 1000};
  nanosleep(&ts, NULL);
  int64_t t0 = perfc__h2_now_ms();
  perfc__h2_loop_post(l, &t1, true);
  pthread_join(th, NULL);
  cr_assert_eq(ran, 1);
  /* Woken by the post, not by the 10 s bound. */
  cr_assert_lt(perfc__h2_now_ms() - t0, 5000);
  cr_assert_eq(perfc__h2_loop_wakes(l), 1);

  /* 1000 posts before the loop runs: one eventfd write. */
  perfc__h2_task many[1000];
  for (int i = 0; i < 1000; i++) {
    many[i].run = on_ran;
    perfc__h2_loop_post(l, &many[i], true);
  }
  cr_assert_eq(perfc__h2_loop_wakes(l), 2);
  perfc__h2_loop_run_once(l, 1000);
  cr_assert_eq(ran, 1001);
  /* Without `wake` nothing is written; the task runs at the next pass. */
  perfc__h2_task quiet = {.run = on_ran};
  perfc__h2_loop_post(l, &quiet, false);
  cr_assert_eq(perfc__h2_loop_wakes(l), 2);
  perfc__h2_loop_run_once(l, 0);
  cr_assert_eq(ran, 1002);
  perfc__h2_loop_free(l);
}

/* ---- deferred work ------------------------------------------------------------------ */

static int deferred_runs;
static void on_deferred(perfc__h2_loop *l, perfc__h2_deferred *d) {
  (void)l;
  (void)d;
  deferred_runs++;
}

Test(h2_loop, deferred_work_runs_once_per_iteration_however_often_queued) {
  perfc__h2_loop *l;
  cr_assert_eq(perfc__h2_loop_new(&l), 0);
  perfc__h2_deferred d = {.cb = on_deferred};
  deferred_runs = 0;
  for (int i = 0; i < 10; i++)
    perfc__h2_loop_defer(l, &d);
  perfc__h2_loop_run_once(l, 1000); /* returns at once: work is pending */
  cr_assert_eq(deferred_runs, 1);
  perfc__h2_loop_run_once(l, 0);
  cr_assert_eq(deferred_runs, 1);
  perfc__h2_loop_free(l);
}

/* ---- busy polling -------------------------------------------------------------------- */

static int64_t thread_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void on_busy_timer(perfc__h2_loop *l, perfc__h2_timer *t) {
  (void)l;
  (void)t;
  ran++;
}

/* perfc_server_opts.busy_poll_us: after a wait that returned events the
 * loop polls for up to the bound, then blocks; an idle loop never spins,
 * and a timer due sooner than the bound cuts the poll short. */
Test(h2_loop, busy_polling_is_bounded_and_stops_when_idle) {
  perfc__h2_loop *l;
  cr_assert_eq(perfc__h2_loop_new(&l), 0);
  perfc__h2_loop_set_busy_poll(l, 20 * 1000000); /* 20 ms */
  ran = 0;
  perfc__h2_task t1 = {.run = on_ran};
  perfc__h2_loop_post(l, &t1, true);
  cr_assert_gt(perfc__h2_loop_run_once(l, 1000), 0); /* the wake: busy */
  cr_assert_eq(ran, 1);

  /* Busy before: this wait polls (CPU spent) for 20 ms, then blocks for
   * the rest of its 300 ms (the wall clock says it did not return early,
   * the CPU clock that it did not spin the whole time). */
  int64_t c0 = thread_cpu_ns(), w0 = perfc__h2_now_ms();
  cr_assert_eq(perfc__h2_loop_run_once(l, 300), 0);
  int64_t cpu = thread_cpu_ns() - c0, wall = perfc__h2_now_ms() - w0;
  cr_assert_geq(wall, 250, "returned after %lld ms", (long long)wall);
  cr_assert_geq(cpu, 2 * 1000000, "polled %lld ns of CPU", (long long)cpu);
  cr_assert_lt(cpu, 150 * 1000000, "spun %lld ns of CPU", (long long)cpu);

  /* Idle before (that wait returned nothing): no poll at all. */
  c0 = thread_cpu_ns();
  cr_assert_eq(perfc__h2_loop_run_once(l, 100), 0);
  cpu = thread_cpu_ns() - c0;
  cr_assert_lt(cpu, 2 * 1000000, "an idle loop spun %lld ns", (long long)cpu);

  /* Busy again, with a timer due in 5 ms: the poll ends at the timer. */
  perfc__h2_loop_post(l, &t1, true);
  perfc__h2_loop_run_once(l, 1000);
  perfc__h2_loop_set_busy_poll(l, 200 * 1000000); /* 200 ms */
  perfc__h2_timer tm = {.cb = on_busy_timer};
  ran = 0;
  w0 = perfc__h2_now_ms();
  perfc__h2_timer_arm(l, &tm, w0 + 5);
  perfc__h2_loop_run_once(l, -1);
  wall = perfc__h2_now_ms() - w0;
  cr_assert_eq(ran, 1);
  cr_assert_lt(wall, 150, "the timer waited %lld ms", (long long)wall);
  perfc__h2_loop_free(l);
}
