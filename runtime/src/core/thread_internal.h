/*
 * core/thread_internal.h — starting a set of named worker threads, for the
 * server's pollers and the client's async pollers (one loop, not two).
 *
 * Room: runtime/src/core private header.
 */
#ifndef PERFC_CORE_THREAD_INTERNAL_H
#define PERFC_CORE_THREAD_INTERNAL_H

#include <pthread.h>

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

#endif
