/*
 * perfc/loop.h — perfc's event loops, for code that keeps its own sockets
 * on them: watch a file descriptor, arm a timer, run work at the end of
 * the loop's iteration or post it from another thread, keep a value per
 * loop.
 *
 * The h2 server transport runs one loop per thread; a handler running
 * inline on it sees its loop as perfc_loop_current(). The asynchronous
 * Redis client (perfc/redis_async.h) keeps its connections on the loop of
 * the thread that issues its commands with exactly these calls; a channel's
 * calls made with perfc_channel_unary_on_loop() (perfc/client.h) complete
 * on the loop that started them. A library
 * that needs a loop where there is none (a pool worker, the C core's
 * pollers) runs one of its own with perfc_loop_new() and perfc_loop_run().
 *
 * Threads: everything here runs on the loop's own thread (the one inside
 * perfc_loop_run()), except perfc_loop_task_post(), perfc_loop_stop(),
 * perfc_loop_now_ms() and perfc_loop_current(), which any thread may call.
 * Callbacks run on the loop's thread; none runs for an object after its
 * _free returned.
 *
 * One iteration: wait for events (bounded by the earliest timer), run I/O
 * callbacks, expired timers, posted tasks, then deferred tasks. Deferred
 * tasks are where output that piled up during the iteration leaves in one
 * write (the h2 transport's connections do that; so does the Redis client).
 *
 * Room: runtime public headers; implemented by transport/h2 (loop.c).
 */
#ifndef PERFC_LOOP_H
#define PERFC_LOOP_H

#include "perfc/common.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct perfc_loop perfc_loop;
typedef struct perfc_loop_io perfc_loop_io;
typedef struct perfc_loop_timer perfc_loop_timer;
typedef struct perfc_loop_task perfc_loop_task;

/** Events of perfc_loop_io_set() and its callback. */
#define PERFC_LOOP_READ 1u
#define PERFC_LOOP_WRITE 2u
/** Reported only: the peer hung up or the socket has an error. */
#define PERFC_LOOP_ERROR 4u

/** A callback with its user data. */
typedef void (*perfc_loop_fn)(void *user_data);
/** An I/O callback: `events` is a mask of PERFC_LOOP_* that are ready. */
typedef void (*perfc_loop_io_fn)(perfc_loop_io *io, unsigned events,
                                 void *user_data);

/** The loop running on the calling thread (inside perfc_loop_run(), or an
 *  h2 server's loop thread), or NULL. Any thread. */
PERFC_API perfc_loop *perfc_loop_current(void);
/** CLOCK_MONOTONIC in milliseconds: the clock of timers. Any thread. */
PERFC_API int64_t perfc_loop_now_ms(void);

/** A new loop of your own. Returns 0, PERFC_ENOMEM or PERFC_EIO. Free with
 *  perfc_loop_free() once no thread runs it. */
PERFC_API int perfc_loop_new(perfc_loop **out);
/** Runs the loop on the calling thread until perfc_loop_stop(). On
 *  return every loop-local value's on_exit has run. */
PERFC_API void perfc_loop_run(perfc_loop *l);
/** Any thread: perfc_loop_run() returns after its current iteration. */
PERFC_API void perfc_loop_stop(perfc_loop *l);
/** Frees a loop made by perfc_loop_new() that no thread runs (on_exit of
 *  values still set runs first). NULL is a no-op. Never an h2 server's. */
PERFC_API void perfc_loop_free(perfc_loop *l);

/** Watches `fd` (borrowed: closing it stays yours, after
 *  perfc_loop_io_free()) on `l`; no events until perfc_loop_io_set().
 *  Returns 0, PERFC_ENOMEM or PERFC_EIO. Loop thread. */
PERFC_API int perfc_loop_io_new(perfc_loop_io **out, perfc_loop *l, int fd,
                                perfc_loop_io_fn fn, void *user_data);
/** Which events to report (PERFC_LOOP_READ | PERFC_LOOP_WRITE, 0 for
 *  none); level-triggered. Returns 0 or PERFC_EIO. */
PERFC_API int perfc_loop_io_set(perfc_loop_io *io, unsigned events);
/** Stops watching and frees. NULL is a no-op. */
PERFC_API void perfc_loop_io_free(perfc_loop_io *io);

/** A one-shot timer on `l`, disarmed. Returns 0 or PERFC_ENOMEM. */
PERFC_API int perfc_loop_timer_new(perfc_loop_timer **out, perfc_loop *l,
                                   perfc_loop_fn fn, void *user_data);
/** Fires once perfc_loop_now_ms() reaches `at_ms` (arming an armed timer
 *  moves it). The callback may re-arm it. */
PERFC_API void perfc_loop_timer_arm(perfc_loop_timer *t, int64_t at_ms);
PERFC_API void perfc_loop_timer_disarm(perfc_loop_timer *t);
/** Disarms and frees. NULL is a no-op. */
PERFC_API void perfc_loop_timer_free(perfc_loop_timer *t);

/** A task for `l`: run at the end of an iteration (defer) or posted from
 *  any thread (post). Returns 0 or PERFC_ENOMEM. */
PERFC_API int perfc_loop_task_new(perfc_loop_task **out, perfc_loop *l,
                                  perfc_loop_fn fn, void *user_data);
/** Loop thread: runs the task at the end of this iteration (the next one
 *  when called from a deferred task). Queued at most once until it runs:
 *  a second call before then does nothing. */
PERFC_API void perfc_loop_task_defer(perfc_loop_task *t);
/** Any thread: runs the task on its loop soon, waking the loop. Queued at
 *  most once until it starts running (a post while it runs queues it
 *  again). A posted task must run before it is freed: free it only once
 *  its loop stopped for good, or from its own callback's loop. */
PERFC_API void perfc_loop_task_post(perfc_loop_task *t);
/** Loop thread (or after the loop stopped): frees a task, taking it off
 *  the end-of-iteration list. NULL is a no-op. */
PERFC_API void perfc_loop_task_free(perfc_loop_task *t);

/** Loop-local values, one per `key` (any address you own): the value set
 *  on this loop, or NULL. Loop thread. */
PERFC_API void *perfc_loop_local_get(perfc_loop *l, const void *key);
/** Sets the value of `key` on `l`; `on_exit(value)`, if not NULL, runs on
 *  the loop's thread when the loop stops (perfc_loop_run() returns; for an
 *  h2 server's loop, when the server stops) after the value was removed,
 *  so pending work can fail instead of waiting for a loop that will not
 *  run again. Returns 0 or PERFC_ENOMEM. Loop thread. */
PERFC_API int perfc_loop_local_set(perfc_loop *l, const void *key,
                                   void *value, perfc_loop_fn on_exit);
/** Removes `key`'s value without running its on_exit. Loop thread. */
PERFC_API void perfc_loop_local_del(perfc_loop *l, const void *key);

#ifdef __cplusplus
}
#endif

#endif /* PERFC_LOOP_H */
