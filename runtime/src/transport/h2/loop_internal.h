/*
 * transport/h2/loop_internal.h — one event loop per thread: epoll, timers,
 * a lock-free multi-producer queue with one eventfd wake, and work deferred
 * to the end of an iteration.
 *
 * Room: runtime/src/transport/h2 private header. Everything here runs on
 * the loop's own thread except perfc__h2_loop_post(), perfc__h2_loop_stop()
 * and perfc__h2_loop_wake(), which any thread may call.
 */
#ifndef PERFC_TRANSPORT_H2_LOOP_INTERNAL_H
#define PERFC_TRANSPORT_H2_LOOP_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct perfc__h2_loop perfc__h2_loop;

/* A file descriptor watched by a loop. Embedded in its owner (a listener,
 * a connection); `cb` runs on the loop with the epoll events that fired. */
typedef struct perfc__h2_io perfc__h2_io;
typedef void (*perfc__h2_io_cb)(perfc__h2_loop *l, perfc__h2_io *io,
                                uint32_t events);
struct perfc__h2_io {
  int fd;
  uint32_t events; /* what is registered now */
  perfc__h2_io_cb cb;
};

/* A one-shot timer, embedded in its owner. Arming an armed timer moves it.
 * `cb` runs on the loop once the monotonic clock reaches `at_ms`; it may
 * re-arm its own timer. */
typedef struct perfc__h2_timer perfc__h2_timer;
typedef void (*perfc__h2_timer_cb)(perfc__h2_loop *l, perfc__h2_timer *t);
struct perfc__h2_timer {
  int64_t at_ms;
  size_t idx; /* position in the heap + 1; 0 = not armed */
  perfc__h2_timer_cb cb;
};

/* A unit of work posted from any thread (intrusive: embedded in the
 * poster's allocation, which `run` owns once it is called). */
typedef struct perfc__h2_task perfc__h2_task;
typedef void (*perfc__h2_task_cb)(perfc__h2_loop *l, perfc__h2_task *t);
struct perfc__h2_task {
  _Atomic(perfc__h2_task *) next;
  perfc__h2_task_cb run;
};

/* Work for the end of the current iteration (a connection with output to
 * write). Queued at most once until it runs. */
typedef struct perfc__h2_deferred perfc__h2_deferred;
typedef void (*perfc__h2_deferred_cb)(perfc__h2_loop *l,
                                      perfc__h2_deferred *d);
struct perfc__h2_deferred {
  perfc__h2_deferred *next;
  bool queued;
  perfc__h2_deferred_cb cb;
};

/* Monotonic clock in milliseconds (CLOCK_MONOTONIC), rounded down. */
int64_t perfc__h2_now_ms(void);
/* The same clock in nanoseconds: call deadlines are kept in it, because a
 * deadline taken from the rounded-down ms clock falls up to 1 ms before
 * the client's own (see start_call in grpc.c). */
int64_t perfc__h2_now_ns(void);

/* A new loop (epoll instance, eventfd, empty timer heap). Returns 0,
 * PERFC_ENOMEM or PERFC_EIO. Free with perfc__h2_loop_free() after its
 * thread returned from perfc__h2_loop_run(). */
int perfc__h2_loop_new(perfc__h2_loop **out);
/* Before the loop runs: after a wait that returned events, the next one
 * polls (epoll_wait with no timeout) for up to `ns` before it blocks, so
 * work that comes back within that long finds the thread awake rather
 * than paying an idle CPU's wake-up. 0 (the default) = block at once. */
void perfc__h2_loop_set_busy_poll(perfc__h2_loop *l, int64_t ns);
void perfc__h2_loop_free(perfc__h2_loop *l);

/* epoll registration (level-triggered). Return 0 or PERFC_EIO. */
int perfc__h2_loop_add(perfc__h2_loop *l, perfc__h2_io *io, uint32_t events);
int perfc__h2_loop_mod(perfc__h2_loop *l, perfc__h2_io *io, uint32_t events);
void perfc__h2_loop_del(perfc__h2_loop *l, perfc__h2_io *io);

void perfc__h2_timer_arm(perfc__h2_loop *l, perfc__h2_timer *t, int64_t at_ms);
void perfc__h2_timer_disarm(perfc__h2_loop *l, perfc__h2_timer *t);
static inline bool perfc__h2_timer_armed(const perfc__h2_timer *t) {
  return t->idx != 0;
}
/* Armed timers (for tests and the shutdown check). */
size_t perfc__h2_loop_timers(const perfc__h2_loop *l);

/* Any thread: queues `t` for the loop. With `wake` the loop is woken
 * through its eventfd unless a wake is already pending (one write for
 * many posts); without it, `t` runs at the loop's next iteration, so the
 * poster must post a waking task later (a batch's last item wakes). */
void perfc__h2_loop_post(perfc__h2_loop *l, perfc__h2_task *t, bool wake);
/* Any thread: makes the loop's current or next epoll_wait return. */
void perfc__h2_loop_wake(perfc__h2_loop *l);
/* eventfd writes so far (tests assert one wake for many posts). */
uint64_t perfc__h2_loop_wakes(const perfc__h2_loop *l);

/* Loop thread: runs `d` at the end of this iteration (or the next one when
 * called from a deferred callback). */
void perfc__h2_loop_defer(perfc__h2_loop *l, perfc__h2_deferred *d);

/* Loop thread: takes `d` off the end-of-iteration list if it is queued
 * (its owner is about to be freed). */
void perfc__h2_loop_undefer(perfc__h2_loop *l, perfc__h2_deferred *d);

/* Loop-local values (perfc/loop.h's perfc_loop_local_*), loop thread only:
 * one value per key; on_exit(value) runs when perfc__h2_loop_run() returns
 * (or at perfc__h2_loop_free() for values still set), after the value was
 * removed. set returns 0 or PERFC_ENOMEM. */
void *perfc__h2_loop_local_get(const perfc__h2_loop *l, const void *key);
int perfc__h2_loop_local_set(perfc__h2_loop *l, const void *key, void *value,
                             void (*on_exit)(void *value));
void perfc__h2_loop_local_del(perfc__h2_loop *l, const void *key);
void perfc__h2_loop_exit_locals(perfc__h2_loop *l);

/* One iteration: waits up to `max_wait_ms` (-1: until an event or the
 * next timer), dispatches I/O, expired timers, posted tasks, then deferred
 * work. Returns the number of epoll events handled. */
int perfc__h2_loop_run_once(perfc__h2_loop *l, int64_t max_wait_ms);
/* Iterates until perfc__h2_loop_stop(). Marks the calling thread as the
 * loop's thread for its duration. */
void perfc__h2_loop_run(perfc__h2_loop *l);
/* Any thread: the loop returns from perfc__h2_loop_run() after the current
 * iteration. */
void perfc__h2_loop_stop(perfc__h2_loop *l);
/* The loop running on the calling thread, or NULL. */
perfc__h2_loop *perfc__h2_loop_current(void);
/* Sets the calling thread's loop (perfc__h2_loop_run does it; tests that
 * drive a loop by hand call it too). */
void perfc__h2_loop_set_current(perfc__h2_loop *l);

/* A per-loop scratch buffer of PERFC__H2_LOOP_SCRATCH bytes: socket reads
 * land here before nghttp2 sees them, so an idle connection owns no input
 * buffer. Valid on the loop thread only, until the next read. */
#define PERFC__H2_LOOP_SCRATCH (64 * 1024)
uint8_t *perfc__h2_loop_scratch(perfc__h2_loop *l);

/* The loop's output cork (conn.c): while one HTTP/1.1 connection's answers
 * are formatted (a head, its body, then the answers of requests pipelined
 * behind it), their bytes gather here and leave in one write at the end of
 * that connection's flush, instead of one send() per piece. `owner` is the
 * connection being flushed (NULL: none; a nested flush of another
 * connection writes straight through). Loop thread only. */
#define PERFC__H2_LOOP_CORK (64 * 1024)
typedef struct perfc__h2_cork {
  void *owner;
  size_t len;
  uint8_t buf[PERFC__H2_LOOP_CORK];
} perfc__h2_cork;
perfc__h2_cork *perfc__h2_loop_cork(perfc__h2_loop *l);

/* Opaque per-loop slot for the layers above (the connection layer keeps
 * its per-loop state here). */
void *perfc__h2_loop_user(const perfc__h2_loop *l);
void perfc__h2_loop_set_user(perfc__h2_loop *l, void *user);

#endif /* PERFC_TRANSPORT_H2_LOOP_INTERNAL_H */
