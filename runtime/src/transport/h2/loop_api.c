/*
 * transport/h2/loop_api.c — perfc/loop.h: the h2 transport's event loops
 * (loop.c) as a small public API, for code outside libperfc that keeps its
 * own sockets on them (libperfc-data's asynchronous Redis client).
 *
 * Room: runtime/src/transport/h2. Thin wrappers: each public object embeds
 * the loop's intrusive structure and adds the user's callback and data, so
 * the loop itself gains nothing on its hot path. Why public functions and
 * not the perfc__ ones: libperfc-data may call only libperfc's exported
 * API (docs/design.md, "Link units").
 */
#include "perfc/loop.h"
#include "core/error_internal.h"
#include "transport/h2/loop_internal.h"

#include <stddef.h>
#include <stdlib.h>
#include <sys/epoll.h>

struct perfc_loop_io {
  perfc__h2_io io; /* first */
  perfc__h2_loop *l;
  perfc_loop_io_fn fn;
  void *ud;
};

struct perfc_loop_timer {
  perfc__h2_timer t; /* first */
  perfc__h2_loop *l;
  perfc_loop_fn fn;
  void *ud;
};

struct perfc_loop_task {
  perfc__h2_task post;     /* posted from any thread */
  perfc__h2_deferred defer; /* end of the iteration */
  perfc__h2_loop *l;
  atomic_int posted;
  perfc_loop_fn fn;
  void *ud;
};

static perfc__h2_loop *raw(perfc_loop *l) { return (perfc__h2_loop *)l; }

perfc_loop *perfc_loop_current(void) {
  return (perfc_loop *)perfc__h2_loop_current();
}

int64_t perfc_loop_now_ms(void) { return perfc__h2_now_ms(); }

int perfc_loop_new(perfc_loop **out) {
  if (out == NULL)
    return perfc__fail(PERFC_EINVAL, "perfc_loop_new: out is NULL");
  return perfc__h2_loop_new((perfc__h2_loop **)out);
}

void perfc_loop_run(perfc_loop *l) { perfc__h2_loop_run(raw(l)); }
void perfc_loop_stop(perfc_loop *l) { perfc__h2_loop_stop(raw(l)); }
void perfc_loop_free(perfc_loop *l) { perfc__h2_loop_free(raw(l)); }

/* ---- I/O ----------------------------------------------------------------- */

static void io_cb(perfc__h2_loop *l, perfc__h2_io *io, uint32_t ev) {
  (void)l;
  perfc_loop_io *w = (perfc_loop_io *)io;
  unsigned e = 0;
  if (ev & EPOLLIN)
    e |= PERFC_LOOP_READ;
  if (ev & EPOLLOUT)
    e |= PERFC_LOOP_WRITE;
  if (ev & (EPOLLERR | EPOLLHUP))
    e |= PERFC_LOOP_ERROR;
  w->fn(w, e, w->ud);
}

int perfc_loop_io_new(perfc_loop_io **out, perfc_loop *l, int fd,
                      perfc_loop_io_fn fn, void *user_data) {
  *out = NULL;
  if (l == NULL || fd < 0 || fn == NULL)
    return perfc__fail(PERFC_EINVAL, "perfc_loop_io_new: bad argument");
  perfc_loop_io *w = calloc(1, sizeof *w);
  if (w == NULL)
    return perfc__fail(PERFC_ENOMEM, "perfc_loop_io_new: out of memory");
  w->io.fd = fd;
  w->io.cb = io_cb;
  w->l = raw(l);
  w->fn = fn;
  w->ud = user_data;
  /* Registered with no events, so set() is always a MOD. */
  int rc = perfc__h2_loop_add(w->l, &w->io, 0);
  if (rc != 0) {
    free(w);
    return rc;
  }
  *out = w;
  return 0;
}

int perfc_loop_io_set(perfc_loop_io *io, unsigned events) {
  uint32_t ev = 0;
  if (events & PERFC_LOOP_READ)
    ev |= EPOLLIN;
  if (events & PERFC_LOOP_WRITE)
    ev |= EPOLLOUT;
  return perfc__h2_loop_mod(io->l, &io->io, ev);
}

void perfc_loop_io_free(perfc_loop_io *io) {
  if (io == NULL)
    return;
  perfc__h2_loop_del(io->l, &io->io);
  free(io);
}

/* ---- timers ------------------------------------------------------------------ */

static void timer_cb(perfc__h2_loop *l, perfc__h2_timer *t) {
  (void)l;
  perfc_loop_timer *w = (perfc_loop_timer *)t;
  w->fn(w->ud);
}

int perfc_loop_timer_new(perfc_loop_timer **out, perfc_loop *l,
                         perfc_loop_fn fn, void *user_data) {
  *out = NULL;
  if (l == NULL || fn == NULL)
    return perfc__fail(PERFC_EINVAL, "perfc_loop_timer_new: bad argument");
  perfc_loop_timer *w = calloc(1, sizeof *w);
  if (w == NULL)
    return perfc__fail(PERFC_ENOMEM, "perfc_loop_timer_new: out of memory");
  w->t.cb = timer_cb;
  w->l = raw(l);
  w->fn = fn;
  w->ud = user_data;
  *out = w;
  return 0;
}

void perfc_loop_timer_arm(perfc_loop_timer *t, int64_t at_ms) {
  perfc__h2_timer_arm(t->l, &t->t, at_ms);
}

void perfc_loop_timer_disarm(perfc_loop_timer *t) {
  perfc__h2_timer_disarm(t->l, &t->t);
}

void perfc_loop_timer_free(perfc_loop_timer *t) {
  if (t == NULL)
    return;
  perfc__h2_timer_disarm(t->l, &t->t);
  free(t);
}

/* ---- tasks ------------------------------------------------------------------ */

static void task_posted(perfc__h2_loop *l, perfc__h2_task *p) {
  (void)l;
  perfc_loop_task *t =
      (perfc_loop_task *)((char *)p - offsetof(perfc_loop_task, post));
  /* Cleared before the callback: a post made while it runs (for work it
   * has not seen) queues the task again. */
  atomic_store_explicit(&t->posted, 0, memory_order_release);
  t->fn(t->ud);
}

static void task_deferred(perfc__h2_loop *l, perfc__h2_deferred *d) {
  (void)l;
  perfc_loop_task *t =
      (perfc_loop_task *)((char *)d - offsetof(perfc_loop_task, defer));
  t->fn(t->ud);
}

int perfc_loop_task_new(perfc_loop_task **out, perfc_loop *l, perfc_loop_fn fn,
                        void *user_data) {
  *out = NULL;
  if (l == NULL || fn == NULL)
    return perfc__fail(PERFC_EINVAL, "perfc_loop_task_new: bad argument");
  perfc_loop_task *t = calloc(1, sizeof *t);
  if (t == NULL)
    return perfc__fail(PERFC_ENOMEM, "perfc_loop_task_new: out of memory");
  t->post.run = task_posted;
  t->defer.cb = task_deferred;
  t->l = raw(l);
  atomic_init(&t->posted, 0);
  t->fn = fn;
  t->ud = user_data;
  *out = t;
  return 0;
}

void perfc_loop_task_defer(perfc_loop_task *t) {
  perfc__h2_loop_defer(t->l, &t->defer);
}

void perfc_loop_task_post(perfc_loop_task *t) {
  if (atomic_exchange_explicit(&t->posted, 1, memory_order_acq_rel) == 0)
    perfc__h2_loop_post(t->l, &t->post, true);
}

void perfc_loop_task_free(perfc_loop_task *t) {
  if (t == NULL)
    return;
  perfc__h2_loop_undefer(t->l, &t->defer);
  free(t);
}

/* ---- loop-local values ------------------------------------------------------- */

void *perfc_loop_local_get(perfc_loop *l, const void *key) {
  return perfc__h2_loop_local_get(raw(l), key);
}

int perfc_loop_local_set(perfc_loop *l, const void *key, void *value,
                         perfc_loop_fn on_exit) {
  return perfc__h2_loop_local_set(raw(l), key, value, on_exit);
}

void perfc_loop_local_del(perfc_loop *l, const void *key) {
  perfc__h2_loop_local_del(raw(l), key);
}
