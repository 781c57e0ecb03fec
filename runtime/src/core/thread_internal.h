/*
 * core/thread_internal.h — starting a set of named worker threads, for the
 * server's pollers and the client's async pollers (one loop, not two).
 *
 * Room: runtime/src/core private header.
 */
#ifndef PERFC_CORE_THREAD_INTERNAL_H
#define PERFC_CORE_THREAD_INTERNAL_H

#include <pthread.h>
#include <signal.h>

typedef struct perfc__thread_spec {
  /* Threads are named "<name><i>" (cut to the kernel's 15 characters). */
  const char *name;
  void *(*main)(void *arg);
  /* Prepares thread i: returns the argument its `main` gets and sets
   * `*thread` to where its pthread_t goes; NULL stops starting more. */
  void *(*setup)(void *user_data, unsigned i, pthread_t **thread);
  /* Undoes setup(i) when the thread could not be created (may be NULL). */
  void (*undo)(void *user_data, unsigned i);
  void *user_data;
} perfc__thread_spec;

/* Starts threads 0..n-1 in order and stops at the first whose setup or
 * creation fails, so the threads started are always 0..k-1. Returns k.
 * The callers treat k < n as "fewer threads" and k == 0 as a failure. */
unsigned perfc__threads_start(const perfc__thread_spec *spec, unsigned n);

/* SIGINT and SIGTERM, the signals perfc_server_run() handles. */
static inline void perfc__stop_signals(sigset_t *set) {
  sigemptyset(set);
  sigaddset(set, SIGINT);
  sigaddset(set, SIGTERM);
}

/* Blocks SIGINT and SIGTERM in the calling thread, so threads it creates
 * until perfc__stop_signals_restore() start with them blocked (a new
 * thread inherits its creator's mask: no window in which it could take
 * one). *old receives the mask to restore. */
static inline void perfc__stop_signals_block(sigset_t *old) {
  sigset_t set;
  perfc__stop_signals(&set);
  pthread_sigmask(SIG_BLOCK, &set, old);
}

static inline void perfc__stop_signals_restore(const sigset_t *old) {
  pthread_sigmask(SIG_SETMASK, old, NULL);
}

/* pthread_create for every thread perfc starts: the thread never takes
 * SIGINT or SIGTERM, so the kernel delivers them to the application's
 * threads (the one in perfc_server_run()), whose handler runs there and
 * whose system calls, not a loop's or a worker's, are the ones
 * interrupted. Inline: libperfc-data uses it too. */
static inline int perfc__thread_create(pthread_t *t, void *(*main)(void *),
                                       void *arg) {
  sigset_t old;
  perfc__stop_signals_block(&old);
  int rc = pthread_create(t, NULL, main, arg);
  perfc__stop_signals_restore(&old);
  return rc;
}

#endif
