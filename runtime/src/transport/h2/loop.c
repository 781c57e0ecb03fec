/*
 * loop.c — the h2 transport's event loop: epoll, a timer heap that bounds
 * epoll_wait's timeout, an intrusive lock-free MPSC queue woken through one
 * eventfd, and end-of-iteration work.
 *
 * Room: runtime/src/transport/h2. One loop per thread; everything it owns
 * is touched only by that thread, except the queue's producer side.
 *
 * Why these choices:
 * - Level-triggered epoll: a connection that stops reading early (its
 *   output is over its bound, or it read its fair share this iteration) is
 *   reported again next time without bookkeeping; edge-triggered would
 *   need a "read more later" list of our own.
 * - A binary heap of embedded timers: O(log n) arm/disarm with no
 *   allocation, and the earliest deadline bounds epoll_wait. Deadlines are
 *   mostly disarmed before they fire (calls finish first), which a heap
 *   handles as cheaply as a wheel at the connection counts a loop holds.
 * - The queue is Vyukov's intrusive MPSC list: one atomic exchange per
 *   post, no lock, no allocation. A flag (`wake_pending`) makes many posts
 *   cost one eventfd write: the first poster after the loop cleared it
 *   writes, the rest see it set.
 */
#include "transport/h2/loop_internal.h"

#include "core/clock_internal.h"
#include "core/error_internal.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS 256

struct perfc__h2_loop {
  int epfd;
  perfc__h2_io wake_io; /* the eventfd */
  atomic_int wake_pending;
  atomic_bool stop;
  _Atomic uint64_t wakes;
  /* Posts between their push and the end of their wake. The loop may run a
   * posted task (and the call it finishes may end, and its owner free the
   * server) before the posting thread has left perfc__h2_loop_wake(): the
   * loop must not be freed until this is back to 0. Touched only by posts
   * from other threads, never by the loop's own work. */
  atomic_uint posting;

  /* MPSC queue: producers exchange `head`; the loop pops from `tail`. */
  _Atomic(perfc__h2_task *) head;
  perfc__h2_task *tail;
  perfc__h2_task stub;

  perfc__h2_timer **heap;
  size_t nheap, capheap;

  perfc__h2_deferred *deferred; /* LIFO; order does not matter */

  /* Loop-local values of the layers above (perfc/loop.h): looked up by
   * key, their on_exit run when the loop stops. A loop holds a handful. */
  struct loop_local *locals;
  size_t nlocals, caplocals;
  void *user;
  int64_t busy_poll_ns; /* perfc__h2_loop_set_busy_poll */
  bool was_busy;        /* the last wait returned events */
  uint8_t scratch[PERFC__H2_LOOP_SCRATCH];
  perfc__h2_cork cork;
};

void perfc__h2_loop_set_busy_poll(perfc__h2_loop *l, int64_t ns) {
  l->busy_poll_ns = ns > 0 ? ns : 0;
}

struct loop_local {
  const void *key;
  void *value;
  void (*on_exit)(void *value);
};

/* initial-exec: a %fs-relative load, not a __tls_get_addr call (asked ~4
 * times per call); libperfc is linked at start, not dlopen'ed. */
static _Thread_local perfc__h2_loop *current
    __attribute__((tls_model("initial-exec")));

int64_t perfc__h2_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t perfc__h2_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void on_wake(perfc__h2_loop *l, perfc__h2_io *io, uint32_t events) {
  (void)events;
  uint64_t v;
  /* Clear the flag before the drain that follows this I/O pass, so a post
   * that lands after the drain started writes the eventfd again. */
  while (read(io->fd, &v, sizeof v) < 0 && errno == EINTR)
    ;
  atomic_store(&l->wake_pending, 0);
}

int perfc__h2_loop_new(perfc__h2_loop **out) {
  *out = NULL;
  perfc__h2_loop *l = calloc(1, sizeof *l);
  if (l == NULL)
    return perfc__fail(PERFC_ENOMEM, "h2 loop: out of memory");
  l->epfd = epoll_create1(EPOLL_CLOEXEC);
  l->wake_io.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  l->wake_io.cb = on_wake;
  atomic_init(&l->head, &l->stub);
  atomic_init(&l->stub.next, NULL);
  l->tail = &l->stub;
  if (l->epfd < 0 || l->wake_io.fd < 0 ||
      perfc__h2_loop_add(l, &l->wake_io, EPOLLIN) != 0) {
    int e = errno;
    if (l->epfd >= 0)
      close(l->epfd);
    if (l->wake_io.fd >= 0)
      close(l->wake_io.fd);
    free(l);
    return perfc__fail(PERFC_EIO, "h2 loop: epoll/eventfd: %s", strerror(e));
  }
  *out = l;
  return 0;
}

void perfc__h2_loop_free(perfc__h2_loop *l) {
  if (l == NULL)
    return;
  /* A poster still inside perfc__h2_loop_post() after its task ran is a
   * few instructions and one write(2) from done. */
  while (atomic_load_explicit(&l->posting, memory_order_acquire) != 0)
    sched_yield();
  /* A loop that never ran, or got values after it stopped. */
  perfc__h2_loop *prev = current;
  current = l;
  perfc__h2_loop_exit_locals(l);
  current = prev;
  free(l->locals);
  close(l->wake_io.fd);
  close(l->epfd);
  free(l->heap);
  free(l);
}

int perfc__h2_loop_add(perfc__h2_loop *l, perfc__h2_io *io, uint32_t events) {
  struct epoll_event ev = {.events = events, .data.ptr = io};
  if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, io->fd, &ev) != 0)
    return perfc__fail(PERFC_EIO, "h2 loop: epoll add fd %d: %s", io->fd,
                       strerror(errno));
  io->events = events;
  return 0;
}

int perfc__h2_loop_mod(perfc__h2_loop *l, perfc__h2_io *io, uint32_t events) {
  if (io->events == events)
    return 0;
  struct epoll_event ev = {.events = events, .data.ptr = io};
  if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, io->fd, &ev) != 0)
    return perfc__fail(PERFC_EIO, "h2 loop: epoll mod fd %d: %s", io->fd,
                       strerror(errno));
  io->events = events;
  return 0;
}

void perfc__h2_loop_del(perfc__h2_loop *l, perfc__h2_io *io) {
  epoll_ctl(l->epfd, EPOLL_CTL_DEL, io->fd, NULL);
  io->events = 0;
}

/* ---- timers: a min-heap of embedded timers ---------------------------- */

static void heap_set(perfc__h2_loop *l, size_t i, perfc__h2_timer *t) {
  l->heap[i] = t;
  t->idx = i + 1;
}

static void sift_up(perfc__h2_loop *l, size_t i) {
  perfc__h2_timer *t = l->heap[i];
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (l->heap[p]->at_ms <= t->at_ms)
      break;
    heap_set(l, i, l->heap[p]);
    i = p;
  }
  heap_set(l, i, t);
}

static void sift_down(perfc__h2_loop *l, size_t i) {
  perfc__h2_timer *t = l->heap[i];
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= l->nheap)
      break;
    if (c + 1 < l->nheap && l->heap[c + 1]->at_ms < l->heap[c]->at_ms)
      c++;
    if (t->at_ms <= l->heap[c]->at_ms)
      break;
    heap_set(l, i, l->heap[c]);
    i = c;
  }
  heap_set(l, i, t);
}

void perfc__h2_timer_disarm(perfc__h2_loop *l, perfc__h2_timer *t) {
  if (t->idx == 0)
    return;
  size_t i = t->idx - 1;
  t->idx = 0;
  perfc__h2_timer *last = l->heap[--l->nheap];
  if (i == l->nheap)
    return;
  heap_set(l, i, last);
  if (i > 0 && l->heap[(i - 1) / 2]->at_ms > last->at_ms)
    sift_up(l, i);
  else
    sift_down(l, i);
}

void perfc__h2_timer_arm(perfc__h2_loop *l, perfc__h2_timer *t, int64_t at_ms) {
  if (t->idx != 0) {
    int64_t old = t->at_ms;
    t->at_ms = at_ms;
    if (at_ms < old)
      sift_up(l, t->idx - 1);
    else
      sift_down(l, t->idx - 1);
    return;
  }
  if (l->nheap == l->capheap) {
    size_t cap = l->capheap ? l->capheap * 2 : 64;
    perfc__h2_timer **h = realloc(l->heap, cap * sizeof *h);
    if (h == NULL) {
      /* Out of memory: fire at once rather than never; every timer
       * callback re-checks its condition against the clock. */
      t->at_ms = at_ms;
      t->cb(l, t);
      return;
    }
    l->heap = h;
    l->capheap = cap;
  }
  t->at_ms = at_ms;
  l->heap[l->nheap] = t;
  t->idx = ++l->nheap;
  sift_up(l, l->nheap - 1);
}

size_t perfc__h2_loop_timers(const perfc__h2_loop *l) { return l->nheap; }

static void run_timers(perfc__h2_loop *l) {
  if (l->nheap == 0)
    return;
  int64_t now = perfc__h2_now_ms();
  while (l->nheap > 0 && l->heap[0]->at_ms <= now) {
    perfc__h2_timer *t = l->heap[0];
    perfc__h2_timer_disarm(l, t);
    t->cb(l, t);
  }
}

/* ---- the MPSC queue -------------------------------------------------- */

static void push(perfc__h2_loop *l, perfc__h2_task *t) {
  atomic_store_explicit(&t->next, NULL, memory_order_relaxed);
  perfc__h2_task *prev =
      atomic_exchange_explicit(&l->head, t, memory_order_acq_rel);
  atomic_store_explicit(&prev->next, t, memory_order_release);
}

/* The next task, or NULL when empty or when a producer is between its
 * exchange and its link (it wakes the loop after linking if needed). */
static perfc__h2_task *pop(perfc__h2_loop *l) {
  perfc__h2_task *tail = l->tail;
  perfc__h2_task *next = atomic_load_explicit(&tail->next, memory_order_acquire);
  if (tail == &l->stub) {
    if (next == NULL)
      return NULL;
    l->tail = next;
    tail = next;
    next = atomic_load_explicit(&next->next, memory_order_acquire);
  }
  if (next != NULL) {
    l->tail = next;
    return tail;
  }
  if (tail != atomic_load_explicit(&l->head, memory_order_acquire))
    return NULL;
  push(l, &l->stub);
  next = atomic_load_explicit(&tail->next, memory_order_acquire);
  if (next != NULL) {
    l->tail = next;
    return tail;
  }
  return NULL;
}

void perfc__h2_loop_wake(perfc__h2_loop *l) {
  if (atomic_exchange(&l->wake_pending, 1) == 0) {
    uint64_t one = 1;
    atomic_fetch_add_explicit(&l->wakes, 1, memory_order_relaxed);
    while (write(l->wake_io.fd, &one, sizeof one) < 0 && errno == EINTR)
      ;
  }
}

void perfc__h2_loop_post(perfc__h2_loop *l, perfc__h2_task *t, bool wake) {
  atomic_fetch_add_explicit(&l->posting, 1, memory_order_relaxed);
  push(l, t);
  if (wake)
    perfc__h2_loop_wake(l);
  atomic_fetch_sub_explicit(&l->posting, 1, memory_order_release);
}

uint64_t perfc__h2_loop_wakes(const perfc__h2_loop *l) {
  return atomic_load_explicit(&((perfc__h2_loop *)l)->wakes,
                              memory_order_relaxed);
}

static void run_tasks(perfc__h2_loop *l) {
  perfc__h2_task *t;
  while ((t = pop(l)) != NULL)
    t->run(l, t);
}

/* ---- deferred work and the iteration ----------------------------------- */

void perfc__h2_loop_defer(perfc__h2_loop *l, perfc__h2_deferred *d) {
  if (d->queued)
    return;
  d->queued = true;
  d->next = l->deferred;
  l->deferred = d;
}

void perfc__h2_loop_undefer(perfc__h2_loop *l, perfc__h2_deferred *d) {
  if (!d->queued)
    return;
  for (perfc__h2_deferred **p = &l->deferred; *p != NULL; p = &(*p)->next)
    if (*p == d) {
      *p = d->next;
      break;
    }
  d->queued = false;
}

static void run_deferred(perfc__h2_loop *l) {
  /* Detach the list first: a callback may defer again (for the next
   * iteration) without making this loop endless. */
  perfc__h2_deferred *d = l->deferred;
  l->deferred = NULL;
  while (d != NULL) {
    perfc__h2_deferred *next = d->next;
    d->queued = false;
    d->cb(l, d);
    d = next;
  }
}

int perfc__h2_loop_run_once(perfc__h2_loop *l, int64_t max_wait_ms) {
  int64_t wait = max_wait_ms;
  if (l->deferred != NULL)
    wait = 0;
  if (l->nheap > 0) {
    int64_t until = l->heap[0]->at_ms - perfc__h2_now_ms();
    if (until < 0)
      until = 0;
    if (wait < 0 || until < wait)
      wait = until;
  }
  if (wait > 60000)
    wait = 60000;
  struct epoll_event ev[MAX_EVENTS];
  int n = 0;
  if (wait != 0 && l->was_busy && l->busy_poll_ns > 0) {
    /* Busy polling: an answer that comes back within busy_poll_ns (a
     * stream's next messages, a data store's reply) finds the thread
     * awake. Bounded by the first timer, and by the option. */
    int64_t start = perfc__h2_now_ns();
    int64_t end = start + l->busy_poll_ns;
    if (wait > 0 && start + wait * 1000000 < end)
      end = start + wait * 1000000;
    int64_t now = start;
    while ((n = epoll_wait(l->epfd, ev, MAX_EVENTS, 0)) == 0 &&
           (now = perfc__h2_now_ns()) < end)
      ;
    if (n == 0 && wait > 0) {
      /* Never below 0: a negative timeout would block with no bound (a
       * thread descheduled while polling can overrun the timer's due). */
      wait -= (now - start) / 1000000;
      if (wait < 0)
        wait = 0;
    }
  }
  if (n == 0)
    n = epoll_wait(l->epfd, ev, MAX_EVENTS, (int)wait);
  l->was_busy = n > 0;
  /* The batch (core/clock_internal.h): what the callbacks answer here is
   * written by the deferred flushes below, so the end of the batch, just
   * before them, is when those answers are ready to leave. */
  perfc__batch_begin();
  for (int i = 0; i < n; i++) {
    perfc__h2_io *io = ev[i].data.ptr;
    io->cb(l, io, ev[i].events);
  }
  run_timers(l);
  run_tasks(l);
  perfc__batch_end();
  run_deferred(l);
  return n < 0 ? 0 : n;
}

void perfc__h2_loop_run(perfc__h2_loop *l) {
  perfc__h2_loop *prev = current;
  current = l;
  while (!atomic_load(&l->stop))
    perfc__h2_loop_run_once(l, -1);
  atomic_store(&l->stop, false);
  /* What the layers above keep on this loop (a data store's connections)
   * ends with it, on its thread: their pending work fails now instead of
   * waiting for a loop that will not run again. */
  perfc__h2_loop_exit_locals(l);
  current = prev;
}

void perfc__h2_loop_stop(perfc__h2_loop *l) {
  atomic_store(&l->stop, true);
  /* Forced: a pending flag from a post does not guarantee the loop is not
   * already past its check of `stop`. */
  uint64_t one = 1;
  while (write(l->wake_io.fd, &one, sizeof one) < 0 && errno == EINTR)
    ;
}

perfc__h2_loop *perfc__h2_loop_current(void) { return current; }
void perfc__h2_loop_set_current(perfc__h2_loop *l) { current = l; }
uint8_t *perfc__h2_loop_scratch(perfc__h2_loop *l) { return l->scratch; }

perfc__h2_cork *perfc__h2_loop_cork(perfc__h2_loop *l) { return &l->cork; }
void *perfc__h2_loop_user(const perfc__h2_loop *l) { return l->user; }
void perfc__h2_loop_set_user(perfc__h2_loop *l, void *user) { l->user = user; }

/* ---- loop-local values ---------------------------------------------------- */

void *perfc__h2_loop_local_get(const perfc__h2_loop *l, const void *key) {
  for (size_t i = 0; i < l->nlocals; i++)
    if (l->locals[i].key == key)
      return l->locals[i].value;
  return NULL;
}

int perfc__h2_loop_local_set(perfc__h2_loop *l, const void *key, void *value,
                             void (*on_exit)(void *value)) {
  for (size_t i = 0; i < l->nlocals; i++)
    if (l->locals[i].key == key) {
      l->locals[i].value = value;
      l->locals[i].on_exit = on_exit;
      return 0;
    }
  if (l->nlocals == l->caplocals) {
    size_t cap = l->caplocals ? l->caplocals * 2 : 4;
    struct loop_local *n = realloc(l->locals, cap * sizeof *n);
    if (n == NULL)
      return perfc__fail(PERFC_ENOMEM, "loop: out of memory");
    l->locals = n;
    l->caplocals = cap;
  }
  l->locals[l->nlocals++] =
      (struct loop_local){.key = key, .value = value, .on_exit = on_exit};
  return 0;
}

void perfc__h2_loop_local_del(perfc__h2_loop *l, const void *key) {
  for (size_t i = 0; i < l->nlocals; i++)
    if (l->locals[i].key == key) {
      l->locals[i] = l->locals[--l->nlocals];
      return;
    }
}

void perfc__h2_loop_exit_locals(perfc__h2_loop *l) {
  /* Taken off the list before its on_exit runs, which may look up or
   * remove other values. */
  while (l->nlocals > 0) {
    struct loop_local v = l->locals[--l->nlocals];
    if (v.on_exit != NULL)
      v.on_exit(v.value);
  }
}
