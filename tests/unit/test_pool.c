/* test_pool.c — runtime/src/core/pool.c: every job runs exactly once, the bound
 * refuses at once, free drains the queue. */
#include <criterion/criterion.h>
#include <perfc/pool.h>
#include <perfc/trace_context.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

static atomic_int ran;

static void count_job(void *arg) {
  (void)arg;
  atomic_fetch_add(&ran, 1);
}

Test(pool, runs_every_job_once) {
  atomic_store(&ran, 0);
  perfc_pool *p;
  perfc_pool_opts o;
  perfc_pool_opts_init(&o);
  o.threads = 4;
  o.queue_max = 100000;
  cr_assert_eq(perfc_pool_new(&p, &o), 0);
  for (int i = 0; i < 50000; i++)
    cr_assert_eq(perfc_pool_submit(p, count_job, NULL), 0);
  perfc_pool_free(p); /* drains before joining */
  cr_assert_eq(atomic_load(&ran), 50000);
}

static pthread_mutex_t gate = PTHREAD_MUTEX_INITIALIZER;

static void blocked_job(void *arg) {
  (void)arg;
  pthread_mutex_lock(&gate);
  pthread_mutex_unlock(&gate);
  atomic_fetch_add(&ran, 1);
}

Test(pool, full_queue_refuses_immediately) {
  atomic_store(&ran, 0);
  perfc_pool *p;
  perfc_pool_opts o = {.threads = 1, .queue_max = 3};
  cr_assert_eq(perfc_pool_new(&p, &o), 0);
  pthread_mutex_lock(&gate);
  /* One job occupies the worker, three fill the queue. */
  cr_assert_eq(perfc_pool_submit(p, blocked_job, NULL), 0);
  perfc_pool_stats st;
  for (int spin = 0; spin < 1000; spin++) {
    perfc_pool_stats_get(p, &st);
    if (st.busy == 1)
      break;
    usleep(1000);
  }
  cr_assert_eq(st.busy, 1);
  for (int i = 0; i < 3; i++)
    cr_assert_eq(perfc_pool_submit(p, blocked_job, NULL), 0);
  cr_assert_eq(perfc_pool_submit(p, blocked_job, NULL), PERFC_EFULL);
  perfc_pool_stats_get(p, &st);
  cr_assert_eq(st.queued, 3);
  cr_assert_eq(st.rejected, 1);
  pthread_mutex_unlock(&gate);
  perfc_pool_free(p);
  cr_assert_eq(atomic_load(&ran), 4, "the refused job must never run");
}

Test(pool, defaults_and_bad_arguments) {
  perfc_pool_opts o;
  perfc_pool_opts_init(&o);
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  cr_assert_eq(o.threads, (unsigned)cores * PERFC_DEFAULT_POOL_THREADS_PER_CORE);
  cr_assert_eq(o.queue_max, PERFC_DEFAULT_POOL_QUEUE);
  cr_assert_eq(perfc_pool_new(NULL, NULL), PERFC_EINVAL);
  perfc_pool *p;
  cr_assert_eq(perfc_pool_new(&p, NULL), 0);
  cr_assert_eq(perfc_pool_submit(p, NULL, NULL), PERFC_EINVAL);
  perfc_pool_free(p);
  perfc_pool_free(NULL);
}

/* A job reports the scheduling policy of the worker it ran on. */
static void policy_job(void *arg) { atomic_store((atomic_int *)arg, sched_getscheduler(0)); }

/* sched_batch puts the workers under SCHED_BATCH (what the server asks for
 * by default); without it they keep the normal policy. */
Test(pool, sched_batch_sets_the_workers_policy) {
  for (int batch = 0; batch <= 1; batch++) {
    perfc_pool_opts o;
    perfc_pool_opts_init(&o);
    cr_assert_eq(o.sched_batch, 0, "the normal policy is the default");
    o.threads = 2;
    o.sched_batch = batch;
    perfc_pool *p;
    cr_assert_eq(perfc_pool_new(&p, &o), 0);
    for (int i = 0; i < 4; i++) {
      atomic_int got = -1;
      cr_assert_eq(perfc_pool_submit(p, policy_job, &got), 0);
      for (int w = 0; w < 500 && atomic_load(&got) == -1; w++)
        usleep(1000);
      cr_assert_eq(atomic_load(&got), batch ? SCHED_BATCH : SCHED_OTHER,
                   "batch=%d: policy %d", batch, atomic_load(&got));
    }
    perfc_pool_free(p);
  }
}

/* The observer (how the server's metrics follow the pool without core
 * calling the metrics module) hears of every change: its running sums equal
 * the pool's own counts at each step. */
typedef struct {
  atomic_int ev[4]; /* indexed by perfc_pool_event */
} observed;

static void observe(perfc_pool_event ev, void *user_data) {
  observed *ob = user_data;
  cr_assert((unsigned)ev < 4);
  atomic_fetch_add(&ob->ev[ev], 1);
}

Test(pool, observer_sees_every_change) {
  atomic_store(&ran, 0);
  observed ob = {0};
  perfc_pool *p;
  perfc_pool_opts o = {.threads = 1,
                       .queue_max = 2,
                       .observer = observe,
                       .observer_user_data = &ob};
  cr_assert_eq(perfc_pool_new(&p, &o), 0);
  pthread_mutex_lock(&gate);
  cr_assert_eq(perfc_pool_submit(p, blocked_job, NULL), 0);
  for (int spin = 0; spin < 1000 && atomic_load(&ob.ev[PERFC_POOL_STARTED]) < 1;
       spin++)
    usleep(1000);
  cr_assert_eq(perfc_pool_submit(p, blocked_job, NULL), 0);
  cr_assert_eq(perfc_pool_submit(p, blocked_job, NULL), 0);
  cr_assert_eq(perfc_pool_submit(p, blocked_job, NULL), PERFC_EFULL);
  perfc_pool_stats st;
  perfc_pool_stats_get(p, &st);
  int queued = atomic_load(&ob.ev[PERFC_POOL_QUEUED]) -
               atomic_load(&ob.ev[PERFC_POOL_STARTED]);
  int busy = atomic_load(&ob.ev[PERFC_POOL_STARTED]) -
             atomic_load(&ob.ev[PERFC_POOL_FINISHED]);
  cr_assert_eq(st.queued, 2);
  cr_assert_eq(queued, 2, "waiting jobs as the observer counts them");
  cr_assert_eq(st.busy, 1);
  cr_assert_eq(busy, 1, "busy workers as the observer counts them");
  cr_assert_eq(atomic_load(&ob.ev[PERFC_POOL_REJECTED]), 1);
  pthread_mutex_unlock(&gate);
  perfc_pool_free(p);
  cr_assert_eq(atomic_load(&ran), 3);
  cr_assert_eq(atomic_load(&ob.ev[PERFC_POOL_QUEUED]), 3);
  cr_assert_eq(atomic_load(&ob.ev[PERFC_POOL_STARTED]), 3);
  cr_assert_eq(atomic_load(&ob.ev[PERFC_POOL_FINISHED]), 3);
}

/* A refusal leaves its reason in the one error-detail place. */
Test(pool, refusals_leave_a_message) {
  cr_assert_eq(perfc_pool_new(NULL, NULL), PERFC_EINVAL);
  cr_assert_eq(perfc_last_error_detail().code, PERFC_EINVAL);
  cr_assert_not_null(strstr(perfc_last_error(), "pool"), "%s",
                     perfc_last_error());
}

/* The trace context moves with a job: the job runs with its submitter's,
 * the submitter's slot is emptied, and the worker's is empty again after
 * the job (so the next job of an untraced submitter sees none). */
static perfc_trace_current seen[2];
static atomic_int seen_n;

static void trace_job(void *arg) {
  (void)arg;
  int i = atomic_fetch_add(&seen_n, 1);
  if (i < 2)
    perfc_trace_current_get(&seen[i]);
}

Test(pool, trace_context_moves_with_the_job) {
  perfc_pool *p;
  perfc_pool_opts o;
  perfc_pool_opts_init(&o);
  o.threads = 1;
  cr_assert_eq(perfc_pool_new(&p, &o), 0);
  static int tracer_token;
  perfc_trace_current tc = {.tracer = &tracer_token};
  memset(tc.sc.trace_id, 0xab, 16);
  memset(tc.sc.span_id, 0xcd, 8);
  perfc_trace_current_set(&tc);
  cr_assert_eq(perfc_pool_submit(p, trace_job, NULL), 0);
  perfc_trace_current out;
  cr_assert_eq(perfc_trace_current_get(&out), 0, "the submitter's slot is empty");
  cr_assert_eq(perfc_pool_submit(p, trace_job, NULL), 0);
  for (int i = 0; i < 500 && atomic_load(&seen_n) < 2; i++)
    usleep(2000);
  perfc_pool_free(p);
  cr_assert_eq(atomic_load(&seen_n), 2);
  cr_assert_eq(seen[0].tracer, (void *)&tracer_token);
  cr_assert_eq(seen[0].sc.trace_id[15], 0xab);
  cr_assert_eq(seen[0].sc.span_id[0], 0xcd);
  cr_assert_null(seen[1].tracer, "an untraced job sees no context");
}
